// The step verdict from a list of criteria, table-driven: fail beats inconclusive beats
// wait beats pass; a dry run never changes it; below minRequests built-in figures are
// shown but judged `wait`; extra (Prometheus) criteria join the list.

import { describe, expect, it } from 'vitest';
import type { WindowSummary } from '../../gateway/stats.js';
import type { AnalysisConfig, CriterionResult } from '../state.js';
import { analyze, analyzeShadow, combine, criterionNames } from './analysis.js';

const w = (requests: number, errors: number, p99 = 0.01): WindowSummary => ({ requests, errors, errorRate: requests > 0 ? errors / requests : 0, p99, p50: p99 / 2, rps: requests });
const cfg = (c: Partial<AnalysisConfig> = {}): AnalysisConfig => ({ minRequests: 10, noTrafficPolicy: 'fail', noTrafficIntervals: 3, maxErrorRate: 0.01, ...c });
const crit = (name: string, verdict: CriterionResult['verdict'], dryRun?: boolean): CriterionResult => ({ name, value: 1, bound: 1, op: 'max', unit: 'number', verdict, reason: `${name} ${verdict}`, ...(dryRun ? { dryRun } : {}) });

describe('combine', () => {
  const cases: [string, CriterionResult[], string, string | undefined][] = [
    ['all pass → pass', [crit('a', 'pass'), crit('b', 'pass')], 'pass', undefined],
    ['a fail → fail, its reason', [crit('a', 'pass'), crit('b', 'fail')], 'fail', 'b fail'],
    ['fail beats inconclusive', [crit('a', 'inconclusive'), crit('b', 'fail')], 'fail', 'b fail'],
    ['inconclusive beats wait', [crit('a', 'wait'), crit('b', 'inconclusive')], 'inconclusive', 'b inconclusive'],
    ['wait beats pass', [crit('a', 'pass'), crit('b', 'wait')], 'wait', 'b wait'],
    ['a dry-run fail → pass', [crit('a', 'pass'), crit('b', 'fail', true)], 'pass', undefined],
    ['a dry-run inconclusive → pass', [crit('a', 'inconclusive', true)], 'pass', undefined],
    ['the first failing criterion gives the reason', [crit('a', 'fail'), crit('b', 'fail')], 'fail', 'a fail'],
  ];
  for (const [name, criteria, verdict, reason] of cases) {
    it(name, () => {
      expect(combine(criteria)).toEqual(reason === undefined ? { verdict } : { verdict, reason });
    });
  }
});

describe('analyze', () => {
  it('lists every configured criterion as {name, value, bound, verdict}', () => {
    const r = analyze(cfg({ maxP99Ms: 500 }), 0, { version: 'green', w: w(100, 0, 0.2) }, { version: 'blue', w: w(100, 0, 0.1) });
    expect(r.verdict).toBe('pass');
    expect(r.criteria.map((c) => [c.name, c.value, c.bound, c.verdict])).toEqual([
      ['minRequests', 100, 10, 'pass'],
      ['maxErrorRate', 0, 0.01, 'pass'],
      ['maxP99', 200, 500, 'pass'],
      ['maxErrorRateOverBaseline', 0, 0.01, 'pass'],
      ['maxP99OverBaseline', 100, 500, 'pass'],
    ]);
  });

  it('a failing built-in fails the step unless it is a dry run', () => {
    const bad = { version: 'green', w: w(100, 5) };
    expect(analyze(cfg(), 1, bad).verdict).toBe('fail');
    expect(analyze(cfg(), 1, bad).reason).toBe('error rate of green 5.00% > max 1.00% (5 of 100 requests)');
    const dry = analyze(cfg({ dryRun: ['maxErrorRate'] }), 1, bad);
    expect(dry.verdict).toBe('pass');
    expect(dry.criteria.find((c) => c.name === 'maxErrorRate')).toMatchObject({ verdict: 'fail', dryRun: true, value: 0.05 });
  });

  it('below minRequests the figures are shown but judged wait', () => {
    const r = analyze(cfg(), 0, { version: 'green', w: w(5, 5) });
    expect(r.verdict).toBe('wait');
    expect(r.reason).toBe('green saw 5 requests, fewer than minRequests 10');
    expect(r.criteria.find((c) => c.name === 'maxErrorRate')).toMatchObject({ verdict: 'wait', value: 1 });
  });

  it('extra criteria join the list: a failing one fails even while the built-ins wait; an inconclusive one makes the step inconclusive', () => {
    const few = { version: 'green', w: w(5, 0) };
    expect(analyze(cfg(), 0, few, undefined, [crit('errorRate', 'fail')]).verdict).toBe('fail');
    const inc = analyze(cfg(), 0, { version: 'green', w: w(50, 0) }, undefined, [crit('errorRate', 'inconclusive')]);
    expect(inc.verdict).toBe('inconclusive');
    expect(inc.criteria.at(-1)!.name).toBe('errorRate');
  });

  it('criterionNames: the built-ins, maxMirrorDiffRate and the Prometheus queries (what dryRun may name)', () => {
    expect(criterionNames(cfg({ prometheus: { url: 'http://p', queries: [{ name: 'q1', query: 'up', min: 1 }] } }))).toEqual([
      'minRequests',
      'maxErrorRate',
      'maxP99',
      'maxErrorRateOverBaseline',
      'maxP99OverBaseline',
      'maxMirrorDiffRate',
      'q1',
    ]);
  });
});

describe('analyzeShadow (a 0% step judged on mirror copies: requests = compared, errors = differing)', () => {
  const cases: [string, Partial<AnalysisConfig>, WindowSummary, string, string | undefined][] = [
    ['too few copies → wait', { maxMirrorDiffRate: 0.05 }, w(5, 5), 'wait', '5 mirror copies to green compared, fewer than minRequests 10'],
    ['over the bound → fail', { maxMirrorDiffRate: 0.05 }, w(20, 2), 'fail', 'mirror diff rate of green 10.00% > max 5.00% (2 of 20 copies differed)'],
    ['at the bound → pass', { maxMirrorDiffRate: 0.1 }, w(20, 2), 'pass', undefined],
    ['a dry run never fails', { maxMirrorDiffRate: 0.05, dryRun: ['maxMirrorDiffRate'] }, w(20, 20), 'pass', undefined],
    ['without a bound: enough copies pass', {}, w(20, 20), 'pass', undefined],
  ];
  for (const [name, c, m, verdict, reason] of cases) {
    it(name, () => {
      const r = analyzeShadow(cfg(c), 0, 'green', m);
      expect(r.verdict).toBe(verdict);
      expect(r.reason).toBe(reason);
      expect(r.mirror).toEqual({ version: 'green', compared: m.requests, differing: m.errors, diffRate: m.errors / m.requests });
      expect(r.criteria.map((x) => x.name)).toEqual(c.maxMirrorDiffRate === undefined ? ['minRequests'] : ['minRequests', 'maxMirrorDiffRate']);
    });
  }
});

// Rollout analysis: a list of criteria, each evaluated on its own into
// {name, value, bound, verdict}, then one verdict for the step. The built-in criteria
// judge the target version's figures over the step's window against absolute
// thresholds, then against the baseline version (the target may not be worse than the
// baseline by more than the allowed margin); Prometheus criteria arrive already
// evaluated (control/rollout/prometheus.ts) and join the list.
//
// The step's verdict, in this order: a failing criterion that is not a dry run → fail
// (the reason is that criterion's); else one that could not be evaluated →
// inconclusive (the rollout's inconclusivePolicy decides); else too little data
// (fewer than minRequests, an empty Prometheus result) → wait (the no-traffic policy
// counts these); else pass. A dry-run criterion is evaluated and reported the same way
// and never changes the verdict.
//
// Adding a built-in criterion: one more entry in BUILTINS (name = its config key).

import type { WindowSummary } from '../../gateway/stats.js';
import type { AnalysisConfig, AnalysisResult, CriterionResult } from '../state.js';

const pct = (x: number): string => `${(x * 100).toFixed(2)}%`;
const ms = (s: number): number => Math.round(s * 1e4) / 10;

export interface AnalysisInput {
  cfg: AnalysisConfig;
  target: { version: string; w: WindowSummary };
  baseline?: { version: string; w: WindowSummary };
}

/** A built-in criterion: undefined when its setting is absent (not judged). */
type Builtin = (i: AnalysisInput) => CriterionResult | undefined;

/** Whether the baseline saw enough traffic for a comparison to mean anything. */
const baselineUsable = (i: AnalysisInput): boolean => i.baseline !== undefined && i.baseline.w.requests >= i.cfg.minRequests;

function maxCriterion(name: string, unit: CriterionResult['unit'], value: number, bound: number, reason: string): CriterionResult {
  return value > bound ? { name, value, bound, op: 'max', unit, verdict: 'fail', reason } : { name, value, bound, op: 'max', unit, verdict: 'pass' };
}

/** The built-in criteria, in evaluation order. minRequests first: below it the figures
 * of the others are shown but judged `wait`. */
export const BUILTINS: Record<string, Builtin> = {
  minRequests: ({ cfg, target }) =>
    target.w.requests < cfg.minRequests
      ? { name: 'minRequests', value: target.w.requests, bound: cfg.minRequests, op: 'min', unit: 'count', verdict: 'wait', reason: `${target.version} saw ${target.w.requests} requests, fewer than minRequests ${cfg.minRequests}` }
      : { name: 'minRequests', value: target.w.requests, bound: cfg.minRequests, op: 'min', unit: 'count', verdict: 'pass' },
  maxErrorRate: ({ cfg, target: { version, w } }) =>
    cfg.maxErrorRate === undefined
      ? undefined
      : maxCriterion('maxErrorRate', 'ratio', w.errorRate, cfg.maxErrorRate, `error rate of ${version} ${pct(w.errorRate)} > max ${pct(cfg.maxErrorRate)} (${w.errors} of ${w.requests} requests)`),
  maxP99: ({ cfg, target: { version, w } }) =>
    cfg.maxP99Ms === undefined ? undefined : maxCriterion('maxP99', 'ms', ms(w.p99), cfg.maxP99Ms, `p99 latency of ${version} ${ms(w.p99)}ms > max ${cfg.maxP99Ms}ms`),
  maxErrorRateOverBaseline: (i) => {
    const bound = i.cfg.maxErrorRateOverBaseline ?? i.cfg.maxErrorRate;
    if (bound === undefined || i.baseline === undefined) return undefined;
    const t = i.target.w;
    const b = i.baseline.w;
    if (!baselineUsable(i)) {
      return { name: 'maxErrorRateOverBaseline', value: null, bound, op: 'max', unit: 'ratio', verdict: 'pass', reason: `${i.baseline.version} saw ${b.requests} requests, too few to compare with` };
    }
    return maxCriterion('maxErrorRateOverBaseline', 'ratio', t.errorRate - b.errorRate, bound, `error rate of ${i.target.version} ${pct(t.errorRate)} exceeds ${i.baseline.version}'s ${pct(b.errorRate)} by more than ${pct(bound)}`);
  },
  maxP99OverBaseline: (i) => {
    const bound = i.cfg.maxP99OverBaselineMs ?? i.cfg.maxP99Ms;
    if (bound === undefined || i.baseline === undefined) return undefined;
    const t = i.target.w;
    const b = i.baseline.w;
    if (!baselineUsable(i)) {
      return { name: 'maxP99OverBaseline', value: null, bound, op: 'max', unit: 'ms', verdict: 'pass', reason: `${i.baseline.version} saw ${b.requests} requests, too few to compare with` };
    }
    return maxCriterion('maxP99OverBaseline', 'ms', ms(t.p99 - b.p99), bound, `p99 latency of ${i.target.version} ${ms(t.p99)}ms exceeds ${i.baseline.version}'s ${ms(b.p99)}ms by more than ${bound}ms`);
  },
};

/** Names a rollout's `analysis.dryRun` may list: the built-ins and its Prometheus queries. */
export function criterionNames(cfg: AnalysisConfig): string[] {
  return [...Object.keys(BUILTINS), 'maxMirrorDiffRate', ...(cfg.prometheus?.queries.map((q) => q.name) ?? [])];
}

/** The step's verdict from its criteria (see the top of this file). */
export function combine(criteria: CriterionResult[]): { verdict: AnalysisResult['verdict']; reason?: string } {
  const judged = criteria.filter((c) => c.dryRun !== true);
  const first = (v: CriterionResult['verdict']) => judged.find((c) => c.verdict === v);
  const fail = first('fail');
  if (fail !== undefined) return { verdict: 'fail', reason: fail.reason ?? `${fail.name} failed` };
  const inconclusive = first('inconclusive');
  if (inconclusive !== undefined) return { verdict: 'inconclusive', reason: inconclusive.reason ?? `${inconclusive.name} could not be evaluated` };
  const wait = first('wait');
  if (wait !== undefined) return { verdict: 'wait', reason: wait.reason ?? `${wait.name} has no data yet` };
  return { verdict: 'pass' };
}

/**
 * Evaluates every criterion of a step: the built-ins on the window summaries, then the
 * `extra` ones evaluated elsewhere (Prometheus). Below minRequests the built-in
 * figures are reported but judged `wait` (too little traffic to judge them).
 */
export function analyze(
  cfg: AnalysisConfig,
  step: number,
  target: { version: string; w: WindowSummary },
  baseline?: { version: string; w: WindowSummary },
  extra: CriterionResult[] = [],
): AnalysisResult {
  const input: AnalysisInput = { cfg, target, baseline };
  const dry = new Set(cfg.dryRun ?? []);
  const criteria: CriterionResult[] = [];
  const enough = target.w.requests >= cfg.minRequests;
  for (const fn of Object.values(BUILTINS)) {
    const c = fn(input);
    if (c === undefined) continue;
    if (!enough && c.name !== 'minRequests' && c.verdict !== 'pass') {
      c.verdict = 'wait';
      c.reason = `not judged below minRequests (${c.reason ?? c.name})`;
    }
    criteria.push(c);
  }
  for (const c of extra) criteria.push({ ...c });
  for (const c of criteria) if (dry.has(c.name)) c.dryRun = true;
  const t = target.w;
  const { verdict, reason } = combine(criteria);
  const result: AnalysisResult = {
    step,
    at: new Date().toISOString(),
    verdict,
    criteria,
    target: { version: target.version, requests: t.requests, errorRate: t.errorRate, p99Ms: ms(t.p99) },
    baseline: baseline && {
      version: baseline.version,
      requests: baseline.w.requests,
      errorRate: baseline.w.errorRate,
      p99Ms: ms(baseline.w.p99),
    },
  };
  if (reason !== undefined) result.reason = reason;
  return result;
}

/**
 * A shadow (0%) step: the target serves nothing, so it is judged on the mirror copies of
 * the baseline's requests sent to it: minRequests on the copies compared, and
 * `maxMirrorDiffRate` on the share of them that differed from the served answer or
 * failed. `mirror.requests` counts compared copies, `mirror.errors` the differing ones.
 */
export function analyzeShadow(cfg: AnalysisConfig, step: number, target: string, mirror: WindowSummary): AnalysisResult {
  const diffRate = mirror.requests === 0 ? 0 : mirror.errors / mirror.requests;
  const criteria: CriterionResult[] = [
    mirror.requests < cfg.minRequests
      ? { name: 'minRequests', value: mirror.requests, bound: cfg.minRequests, op: 'min', unit: 'count', verdict: 'wait', reason: `${mirror.requests} mirror copies to ${target} compared, fewer than minRequests ${cfg.minRequests}` }
      : { name: 'minRequests', value: mirror.requests, bound: cfg.minRequests, op: 'min', unit: 'count', verdict: 'pass' },
  ];
  if (cfg.maxMirrorDiffRate !== undefined) {
    const c = maxCriterion('maxMirrorDiffRate', 'ratio', diffRate, cfg.maxMirrorDiffRate, `mirror diff rate of ${target} ${pct(diffRate)} > max ${pct(cfg.maxMirrorDiffRate)} (${mirror.errors} of ${mirror.requests} copies differed)`);
    if (mirror.requests < cfg.minRequests && c.verdict === 'fail') {
      c.verdict = 'wait';
      c.reason = `not judged below minRequests (${c.reason})`;
    }
    if (cfg.dryRun?.includes('maxMirrorDiffRate')) c.dryRun = true;
    criteria.push(c);
  }
  const { verdict, reason } = combine(criteria);
  return {
    step,
    at: new Date().toISOString(),
    verdict,
    criteria,
    target: { version: target, requests: 0, errorRate: 0, p99Ms: 0 },
    mirror: { version: target, compared: mirror.requests, differing: mirror.errors, diffRate },
    ...(reason === undefined ? {} : { reason }),
  };
}

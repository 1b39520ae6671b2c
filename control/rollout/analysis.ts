// Rollout analysis: the target version's figures over the step's window against the
// absolute thresholds, then against the baseline version (the target may not be worse
// than the baseline by more than the allowed margin). Below minRequests the verdict is
// "wait" and the engine applies the no-traffic policy.

import type { WindowSummary } from '../../gateway/stats.js';
import type { AnalysisConfig, AnalysisResult } from '../state.js';

const pct = (x: number): string => `${(x * 100).toFixed(2)}%`;
const ms = (s: number): number => Math.round(s * 1e4) / 10;

export function analyze(
  cfg: AnalysisConfig,
  step: number,
  target: { version: string; w: WindowSummary },
  baseline?: { version: string; w: WindowSummary },
): AnalysisResult {
  const t = target.w;
  const result: AnalysisResult = {
    step,
    at: new Date().toISOString(),
    verdict: 'pass',
    target: { version: target.version, requests: t.requests, errorRate: t.errorRate, p99Ms: ms(t.p99) },
    baseline: baseline && {
      version: baseline.version,
      requests: baseline.w.requests,
      errorRate: baseline.w.errorRate,
      p99Ms: ms(baseline.w.p99),
    },
  };
  const fail = (reason: string): AnalysisResult => ({ ...result, verdict: 'fail', reason });
  if (t.requests < cfg.minRequests) {
    return { ...result, verdict: 'wait', reason: `${target.version} saw ${t.requests} requests, fewer than minRequests ${cfg.minRequests}` };
  }
  if (cfg.maxErrorRate !== undefined && t.errorRate > cfg.maxErrorRate) {
    return fail(`error rate of ${target.version} ${pct(t.errorRate)} > max ${pct(cfg.maxErrorRate)} (${t.errors} of ${t.requests} requests)`);
  }
  if (cfg.maxP99Ms !== undefined && t.p99 * 1000 > cfg.maxP99Ms) {
    return fail(`p99 latency of ${target.version} ${ms(t.p99)}ms > max ${cfg.maxP99Ms}ms`);
  }
  // The baseline comparison needs enough baseline traffic to mean anything.
  if (baseline !== undefined && baseline.w.requests >= cfg.minRequests) {
    const b = baseline.w;
    const maxErr = cfg.maxErrorRateOverBaseline ?? cfg.maxErrorRate;
    if (maxErr !== undefined && t.errorRate > b.errorRate + maxErr) {
      return fail(`error rate of ${target.version} ${pct(t.errorRate)} exceeds ${baseline.version}'s ${pct(b.errorRate)} by more than ${pct(maxErr)}`);
    }
    const maxP99 = cfg.maxP99OverBaselineMs ?? cfg.maxP99Ms;
    if (maxP99 !== undefined && (t.p99 - b.p99) * 1000 > maxP99) {
      return fail(`p99 latency of ${target.version} ${ms(t.p99)}ms exceeds ${baseline.version}'s ${ms(b.p99)}ms by more than ${maxP99}ms`);
    }
  }
  return result;
}

/**
 * A shadow (0%) step: the target serves nothing, so it is judged on the mirror copies of
 * the baseline's requests sent to it — `wait` below minRequests copies compared, `fail`
 * when more than maxMirrorDiffRate of them differed from the served answer or failed.
 * `mirror.requests` counts compared copies, `mirror.errors` the differing ones.
 */
export function analyzeShadow(cfg: AnalysisConfig, step: number, target: string, mirror: WindowSummary): AnalysisResult {
  const diffRate = mirror.requests === 0 ? 0 : mirror.errors / mirror.requests;
  const result: AnalysisResult = {
    step,
    at: new Date().toISOString(),
    verdict: 'pass',
    target: { version: target, requests: 0, errorRate: 0, p99Ms: 0 },
    mirror: { version: target, compared: mirror.requests, differing: mirror.errors, diffRate },
  };
  if (mirror.requests < cfg.minRequests) {
    return { ...result, verdict: 'wait', reason: `${mirror.requests} mirror copies to ${target} compared, fewer than minRequests ${cfg.minRequests}` };
  }
  if (cfg.maxMirrorDiffRate !== undefined && diffRate > cfg.maxMirrorDiffRate) {
    return { ...result, verdict: 'fail', reason: `mirror diff rate of ${target} ${pct(diffRate)} > max ${pct(cfg.maxMirrorDiffRate)} (${mirror.errors} of ${mirror.requests} copies differed)` };
  }
  return result;
}

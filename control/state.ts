import type { MirrorConfig } from '../config/types.js';

// The desired state the control plane owns, as stored: weights per service, the
// rollout of each service, and the audit events. One revision counter for all of it;
// every change increments it.

export type Weights = Record<string, number>;

export interface ControlEvent {
  id: number;
  time: string;
  actor: string;
  service: string | null;
  action: string;
  revision: number;
  detail: Record<string, unknown>;
}

export type RolloutStatus = 'running' | 'paused' | 'awaiting_approval' | 'succeeded' | 'aborted' | 'rolled_back';

/** One Prometheus query judged each interval (see control/rollout/prometheus.ts). */
export interface PrometheusQuery {
  name: string;
  /** PromQL; {{service}}, {{version}} and {{baseline}} are substituted. */
  query: string;
  max?: number;
  min?: number;
  dryRun?: boolean;
}

export interface PrometheusConfig {
  url: string;
  queries: PrometheusQuery[];
}

/** What a rollout does when a criterion could not be evaluated (Prometheus down, a
 * query it refused): `pause` (the default) waits for an operator, `rollback` restores
 * the weights, `continue` judges the step on the other criteria. */
export type InconclusivePolicy = 'pause' | 'rollback' | 'continue';

export type HookPhase = 'pre-rollout' | 'pre-step' | 'post-step' | 'post-rollout' | 'rolled-back';

export interface HookConfig {
  name: string;
  url: string;
  on: HookPhase;
  timeoutMs: number;
  /** HMAC-SHA256 key signing the POST like webhooks (never shown by the API). */
  secret?: string;
  /** Step indexes the hook applies to (pre-step/post-step); every step when absent. */
  steps?: number[];
}

export interface AnalysisConfig {
  /** Fraction, 0.01 = 1%. */
  maxErrorRate?: number;
  maxP99Ms?: number;
  /** How much worse than the baseline the target may be (defaults to the absolute thresholds). */
  maxErrorRateOverBaseline?: number;
  maxP99OverBaselineMs?: number;
  minRequests: number;
  /** What a step does when it saw fewer than minRequests for `noTrafficIntervals` intervals. */
  noTrafficPolicy: 'fail' | 'continue';
  noTrafficIntervals: number;
  /** Fraction, 0.05 = 5%: the most of a shadow step's mirror copies that may differ
   * from the served answers (or fail). Judged at 0% steps. */
  maxMirrorDiffRate?: number;
  /** Names of criteria evaluated and reported but never failing the step. */
  dryRun?: string[];
  prometheus?: PrometheusConfig;
  inconclusivePolicy?: InconclusivePolicy;
}

/**
 * One criterion as judged: `value` is what was measured (null: nothing to measure),
 * `bound` the limit and `op` its direction (`max`: value must not exceed it; `min`:
 * value must reach it). `verdict`: pass | fail | wait (not enough data yet) |
 * inconclusive (could not be evaluated). A dry-run criterion never fails the step.
 */
export interface CriterionResult {
  name: string;
  value: number | null;
  bound: number;
  op: 'max' | 'min';
  /** How value and bound read: ratio (0.01 = 1%), ms, or a plain number. */
  unit: 'ratio' | 'ms' | 'count' | 'number';
  verdict: 'pass' | 'fail' | 'wait' | 'inconclusive';
  dryRun?: boolean;
  /** Why, in words (the failure, the missing data, the error). */
  reason?: string;
}

export interface AnalysisResult {
  step: number;
  at: string;
  verdict: 'pass' | 'fail' | 'wait' | 'inconclusive';
  /** Every criterion, in evaluation order, with its own verdict. */
  criteria: CriterionResult[];
  target: { version: string; requests: number; errorRate: number; p99Ms: number };
  baseline?: { version: string; requests: number; errorRate: number; p99Ms: number };
  reason?: string;
  /** A shadow (0%) step: the mirror copies compared in the window and how many differed. */
  mirror?: { version: string; compared: number; differing: number; diffRate: number };
  /** Fleet store: replicas that died before publishing their share of the window's
   * seconds (the figures are without it). */
  missingReplicas?: string[];
}

export interface RolloutRecord {
  id: string;
  service: string;
  to: string;
  baseline: string | null;
  steps: number[];
  /** Index into steps of the step now applied. */
  step: number;
  intervalMs: number;
  analysis: AnalysisConfig;
  /** The mirror to the target during 0% (shadow) steps. */
  shadow?: MirrorConfig;
  state: RolloutStatus;
  /** Weights before the rollout began; restored on abort and rollback. */
  fromWeights: Weights;
  weights: Weights;
  /** When the current step's analysis window began (ms since epoch). */
  stepStartedAt: number;
  /** Intervals in a row in which the step saw fewer than minRequests. */
  idleIntervals: number;
  /** Fleet store: the last epoch second a passing analysis judged; the next step's
   * window starts right after it, so every published second is judged exactly once. */
  judgedThrough?: number;
  /** Fleet store: the last second of the window that ended in "wait" (too few
   * requests); the next verdict waits for a newer complete second. */
  waitedThrough?: number;
  reason?: string;
  lastAnalysis?: AnalysisResult;
  /** The last analysis of each step, by step index (what `rollout status` prints). */
  stepAnalyses?: Record<string, AnalysisResult>;
  /** Step indexes that wait for an approval before they are entered. */
  approval?: number[];
  /** Step indexes approved so far. */
  approved?: number[];
  hooks?: HookConfig[];
  /** The step `step` is not entered yet: its gates (approval, pre-step hooks) have to
   * pass first, and `weights` are still those of the step before. */
  pending?: boolean;
  /** The pre-rollout hooks passed. */
  preRolloutDone?: boolean;
  /** Every step applied, in order: [step index, percent, time]. */
  history: { step: number; percent: number; at: string }[];
  actor: string;
  startedAt: string;
  endedAt?: string;
  /** `connections.drain`: each weight change of the rollout closes the long-lived
   * connections its lost share represents, over this window. */
  connectionsDrainMs?: number;
}

export interface ServiceState {
  weights: Weights;
  /** Revision of this service's last change. */
  revision: number;
  /** Weights before the last change (what `rollback` restores). */
  previousWeights?: Weights;
  rollout?: RolloutRecord;
  /** The mirror set by the control API (null: stopped); absent: the config's. */
  mirror?: MirrorConfig | null;
}

export interface DesiredState {
  revision: number;
  services: Record<string, ServiceState>;
  events: ControlEvent[];
  nextEventId: number;
}

export const MAX_EVENTS = 1000;

export function emptyState(): DesiredState {
  return { revision: 0, services: {}, events: [], nextEventId: 1 };
}

export function isTerminal(s: RolloutStatus): boolean {
  return s === 'succeeded' || s === 'aborted' || s === 'rolled_back';
}

/** A structural check of a loaded state file: refuses anything that is not one. */
export function isDesiredState(v: unknown): v is DesiredState {
  const o = v as DesiredState;
  return (
    o !== null &&
    typeof o === 'object' &&
    Number.isInteger(o.revision) &&
    typeof o.services === 'object' &&
    o.services !== null &&
    Array.isArray(o.events) &&
    Number.isInteger(o.nextEventId)
  );
}

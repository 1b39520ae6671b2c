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

export type RolloutStatus = 'running' | 'paused' | 'succeeded' | 'aborted' | 'rolled_back';

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
}

export interface AnalysisResult {
  step: number;
  at: string;
  verdict: 'pass' | 'fail' | 'wait';
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
  /** Every step applied, in order: [step index, percent, time]. */
  history: { step: number; percent: number; at: string }[];
  actor: string;
  startedAt: string;
  endedAt?: string;
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

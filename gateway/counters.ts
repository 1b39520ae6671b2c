// Per-version request counters for the Prometheus page, kept in one Float64Array per
// version: a request costs a few array increments, no label hashing, no object
// allocation. gateway/metrics.ts turns them into the exported series (same names,
// labels and buckets) only when /metrics is scraped.

import type { VersionMetricsSink } from './endpoint.js';

/** From 100µs (a loopback hop) to 30 s (the default request timeout). */
export const DURATION_BUCKETS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
export const CODE_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;
export const ERROR_REASONS = ['connect', 'reset', 'timeout', 'protocol', 'tls'] as const;

const NB = DURATION_BUCKETS.length; // + 1 for +Inf

/** Offsets into VersionCounters.v. Histogram buckets are per bucket (not cumulative);
 * the last one is +Inf. */
export const C = {
  classes: 0, // 5
  aborts: 5,
  retries: 6,
  ejections: 7,
  errors: 8, // ERROR_REASONS.length
  duration: 8 + ERROR_REASONS.length, // NB + 1 buckets, then sum, count
  upstream: 8 + ERROR_REASONS.length + NB + 3, // NB + 1 buckets, then sum, count
  // gRPC calls by HTTP status class × grpc-status (0–16), counted here instead of in
  // `classes` so that every call is in exactly one switchyard_requests_total series.
  grpc: 8 + ERROR_REASONS.length + 2 * (NB + 3), // 5 × 17
  size: 8 + ERROR_REASONS.length + 2 * (NB + 3) + 5 * 17,
} as const;

export const GRPC_STATUSES = 17;

/** Bucket index of a duration: the first upper bound it does not exceed. */
function bucketOf(seconds: number): number {
  let i = 0;
  while (i < NB && seconds > DURATION_BUCKETS[i]) i++;
  return i;
}

export class VersionCounters implements VersionMetricsSink {
  readonly v = new Float64Array(C.size);

  constructor(
    readonly service: string,
    readonly version: string,
  ) {}

  request(status: number, seconds: number, retried: number, grpcStatus = -1): void {
    const v = this.v;
    if (status === 499) v[C.aborts]++;
    else {
      let k = ((status / 100) | 0) - 1;
      k = k < 0 ? 0 : k > 4 ? 4 : k;
      if (grpcStatus >= 0 && grpcStatus < GRPC_STATUSES) v[C.grpc + k * GRPC_STATUSES + grpcStatus]++;
      else v[C.classes + k]++;
    }
    v[C.duration + bucketOf(seconds)]++;
    v[C.duration + NB + 1] += seconds;
    v[C.duration + NB + 2]++;
    if (retried > 0) v[C.retries] += retried;
  }

  upstream(seconds: number, failure: string | undefined): void {
    const v = this.v;
    v[C.upstream + bucketOf(seconds)]++;
    v[C.upstream + NB + 1] += seconds;
    v[C.upstream + NB + 2]++;
    if (failure !== undefined) {
      const r = (ERROR_REASONS as readonly string[]).indexOf(failure);
      if (r !== -1) v[C.errors + r]++;
    }
  }

  ejected(): void {
    this.v[C.ejections]++;
  }
}

/** The histogram part of a counters array, for export: cumulative bucket counts
 * (DURATION_BUCKETS, then +Inf), sum and count. */
export function histogramOf(v: Float64Array, offset: number): { cumulative: number[]; sum: number; count: number } {
  const cumulative: number[] = [];
  let acc = 0;
  for (let i = 0; i <= NB; i++) {
    acc += v[offset + i];
    cumulative.push(acc);
  }
  return { cumulative, sum: v[offset + NB + 1], count: v[offset + NB + 2] };
}

// Windowed per-version traffic counters: requests, errors and a latency histogram in
// one-second buckets over a ring of the last RING_SECONDS seconds. Rollout analysis,
// the dashboard and the fleet read windows of it. Recording is O(log buckets) with no
// allocation: a request lands in the current second's bucket.

/** Latency bucket upper bounds in seconds: 50 µs to 60 s on a log scale (×1.5). */
export const LATENCY_BOUNDS: readonly number[] = (() => {
  const out: number[] = [];
  for (let b = 0.00005; b < 60; b *= 1.5) out.push(b);
  out.push(60);
  return out;
})();

export const NB = LATENCY_BOUNDS.length + 1; // the last bucket is +Inf
export const RING_SECONDS = 600;

export interface WindowSummary {
  requests: number;
  /** 5xx answers and gateway errors (502/503/504 made by the gateway). */
  errors: number;
  errorRate: number;
  /** 99th percentile in seconds (upper bound of the bucket it falls in); 0 with no requests. */
  p99: number;
  p50: number;
  /** Requests per second over the window. */
  rps: number;
}

/** Bucket index for a latency, by binary search over LATENCY_BOUNDS. */
function latencyBucket(seconds: number): number {
  let lo = 0;
  let hi = LATENCY_BOUNDS.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (seconds <= LATENCY_BOUNDS[mid]) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

export class WindowCounters {
  private readonly second = new Float64Array(RING_SECONDS); // which epoch second a slot holds
  private readonly requests = new Uint32Array(RING_SECONDS);
  private readonly errors = new Uint32Array(RING_SECONDS);
  private readonly hist = new Uint32Array(RING_SECONDS * NB);
  /** takeDelta: the second it last shipped and that second's counts at the time. */
  private shipped: { sec: number; requests: number; errors: number; hist: Uint32Array } | undefined;

  /** @param error counts as an error (default: a 5xx; a gRPC call by its grpc-status) */
  record(status: number, seconds: number, nowMs = Date.now(), error = status >= 500): void {
    const sec = Math.floor(nowMs / 1000);
    const slot = sec % RING_SECONDS;
    if (this.second[slot] !== sec) {
      this.second[slot] = sec;
      this.requests[slot] = 0;
      this.errors[slot] = 0;
      this.hist.fill(0, slot * NB, slot * NB + NB);
    }
    this.requests[slot]++;
    if (error) this.errors[slot]++;
    this.hist[slot * NB + latencyBucket(seconds)]++;
  }

  /** Adds counts made elsewhere (a data-plane worker's) to second `sec`. */
  add(sec: number, requests: number, errors: number, hist: readonly (readonly [number, number])[]): void {
    const slot = sec % RING_SECONDS;
    if (this.second[slot] !== sec) {
      // Older than what the slot holds now: outside the ring, dropped.
      if (this.second[slot] > sec) return;
      this.second[slot] = sec;
      this.requests[slot] = 0;
      this.errors[slot] = 0;
      this.hist.fill(0, slot * NB, slot * NB + NB);
    }
    this.requests[slot] += requests;
    this.errors[slot] += errors;
    for (const [b, n] of hist) if (b >= 0 && b < NB) this.hist[slot * NB + b] += n;
  }

  /** What was counted since the last call, per second (a worker ships it to the
   * primary). Counts only ever land in the current second, so the seconds from the
   * last call's to now cover everything; the last call's second is shipped minus what
   * it had then. */
  takeDelta(nowMs = Date.now()): { sec: number; requests: number; errors: number; hist: [number, number][] }[] {
    const now = Math.floor(nowMs / 1000);
    const out: { sec: number; requests: number; errors: number; hist: [number, number][] }[] = [];
    const shipped = this.shipped;
    const from = Math.max(shipped?.sec ?? 0, now - RING_SECONDS + 1);
    for (let sec = from; sec <= now; sec++) {
      const slot = sec % RING_SECONDS;
      if (this.second[slot] !== sec) continue;
      const base = shipped !== undefined && shipped.sec === sec ? shipped : undefined;
      const requests = this.requests[slot] - (base?.requests ?? 0);
      if (requests === 0) continue;
      const hist: [number, number][] = [];
      for (let i = 0; i < NB; i++) {
        const n = this.hist[slot * NB + i] - (base?.hist[i] ?? 0);
        if (n > 0) hist.push([i, n]);
      }
      out.push({ sec, requests, errors: this.errors[slot] - (base?.errors ?? 0), hist });
    }
    const slot = now % RING_SECONDS;
    const current = this.second[slot] === now;
    this.shipped = {
      sec: now,
      requests: current ? this.requests[slot] : 0,
      errors: current ? this.errors[slot] : 0,
      hist: current ? this.hist.slice(slot * NB, slot * NB + NB) : new Uint32Array(NB),
    };
    return out;
  }

  /** One second's counts (the fleet publishes completed seconds), or undefined if the
   * ring holds nothing for it. Histogram as sparse [bucket, count] pairs. */
  secondCounts(sec: number): { requests: number; errors: number; hist: [number, number][] } | undefined {
    const slot = sec % RING_SECONDS;
    if (this.second[slot] !== sec || this.requests[slot] === 0) return undefined;
    const hist: [number, number][] = [];
    for (let i = 0; i < NB; i++) {
      const n = this.hist[slot * NB + i];
      if (n > 0) hist.push([i, n]);
    }
    return { requests: this.requests[slot], errors: this.errors[slot], hist };
  }

  /** Sums the window [fromMs, toMs] (whole seconds, both ends included). */
  summary(fromMs: number, toMs = Date.now()): WindowSummary {
    const h = new Float64Array(NB);
    let requests = 0;
    let errors = 0;
    const from = Math.max(Math.floor(fromMs / 1000), Math.floor(toMs / 1000) - RING_SECONDS + 1);
    const to = Math.floor(toMs / 1000);
    for (let sec = from; sec <= to; sec++) {
      const slot = sec % RING_SECONDS;
      if (this.second[slot] !== sec) continue;
      requests += this.requests[slot];
      errors += this.errors[slot];
      for (let i = 0; i < NB; i++) h[i] += this.hist[slot * NB + i];
    }
    return summarize(h, requests, errors, Math.max(1, to - from + 1));
  }
}

/** A window summary from summed counts (local ring or the fleet's published seconds). */
export function summarize(h: Float64Array, requests: number, errors: number, spanSeconds: number): WindowSummary {
  return {
    requests,
    errors,
    errorRate: requests === 0 ? 0 : errors / requests,
    p99: quantile(h, requests, 0.99),
    p50: quantile(h, requests, 0.5),
    rps: requests / Math.max(1, spanSeconds),
  };
}

function quantile(h: Float64Array, total: number, q: number): number {
  if (total === 0) return 0;
  const rank = Math.ceil(total * q);
  let seen = 0;
  for (let i = 0; i < h.length; i++) {
    seen += h[i];
    if (seen >= rank) return i < LATENCY_BOUNDS.length ? LATENCY_BOUNDS[i] : Infinity;
  }
  return Infinity;
}

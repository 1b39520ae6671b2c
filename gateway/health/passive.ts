// Passive outlier detection (Envoy's outlier_detection, simplified): consecutive 5xx
// answers or consecutive gateway errors (connect failure, reset, timeout) eject an
// endpoint for baseEjectionTime × its ejection count, capped at five minutes. At most
// maxEjectionPercent of a version's endpoints are ejected at once, so a version-wide
// failure can never eject the whole pool (rounding down: 50% of 2 is 1, of 1 is 0).
// When active probes are on, an ejected endpoint comes back only after a passing probe.
// With gateway.workers, each worker counts its own consecutive failures and asks the
// primary to eject; the primary applies maxEjectionPercent and sends the ejection to all.

import type { Logger } from 'pino';
import type { Dataplane } from '../dataplane.js';
import type { Endpoint } from '../endpoint.js';
import type { UpstreamFailure } from '../errors.js';

const MAX_EJECTION_MS = 5 * 60_000;

/** In a data-plane worker: an endpoint crossed a threshold; the primary decides (it
 * sees every worker's ejections and the whole pool) and sends the ejection back to all. */
export type EjectionRequest = (e: Endpoint, reason: string) => void;

export class OutlierDetector {
  private readonly timers = new Map<Endpoint, NodeJS.Timeout>();
  private closed = false;

  constructor(
    private readonly dp: Dataplane,
    private readonly log: Logger,
    private readonly delegate?: EjectionRequest,
  ) {}

  /** The primary of `gateway.workers`: a worker asks to eject an endpoint. */
  requestEjection(service: string, version: string, id: string, reason: string): void {
    const e = this.dp.endpointsOf(service, version).find((x) => x.id === id);
    if (e === undefined || e.ejectedUntil !== 0 || e.draining) return;
    const od = this.dp.service(service)?.outlierDetection;
    if (od !== undefined) this.eject(e, od.baseEjectionTimeMs, od.maxEjectionPercent, reason);
  }

  /** One attempt's outcome on an endpoint (called from the request path: keep it cheap). */
  upstreamResult(e: Endpoint, status: number, failure: UpstreamFailure | undefined): void {
    if (failure !== undefined) {
      e.consecutiveGatewayErrors++;
      e.consecutive5xx++;
    } else if (status >= 500) {
      e.consecutive5xx++;
      e.consecutiveGatewayErrors = 0;
    } else {
      e.consecutive5xx = 0;
      e.consecutiveGatewayErrors = 0;
      return;
    }
    if (e.ejectedUntil !== 0 || e.draining) return;
    const od = this.dp.service(e.service)?.outlierDetection;
    if (od === undefined) return;
    const by5xx = od.consecutive5xx > 0 && e.consecutive5xx >= od.consecutive5xx;
    const byGateway = od.consecutiveGatewayErrors > 0 && e.consecutiveGatewayErrors >= od.consecutiveGatewayErrors;
    if (!by5xx && !byGateway) return;
    const reason = by5xx ? 'consecutive5xx' : 'consecutiveGatewayErrors';
    if (this.delegate === undefined) {
      this.eject(e, od.baseEjectionTimeMs, od.maxEjectionPercent, reason);
      return;
    }
    // Counted again from zero: one request per threshold crossing, not one per failure.
    e.consecutive5xx = 0;
    e.consecutiveGatewayErrors = 0;
    this.delegate(e, reason);
  }

  private eject(e: Endpoint, baseMs: number, maxPercent: number, why: string): void {
    // Draining endpoints take no new traffic: they do not count toward the pool.
    const peers = this.dp.endpointsOf(e.service, e.version).filter((p) => !p.draining);
    const ejected = peers.filter((p) => p.ejectedUntil !== 0).length;
    const allowed = Math.floor((peers.length * maxPercent) / 100);
    if (ejected + 1 > allowed) {
      this.log.warn({ service: e.service, version: e.version, endpoint: e.id, ejected, allowed }, 'outlier not ejected: maxEjectionPercent reached');
      return;
    }
    e.ejectionCount++;
    const ms = Math.min(baseMs * e.ejectionCount, MAX_EJECTION_MS);
    e.ejectedUntil = Date.now() + ms;
    e.consecutive5xx = 0;
    e.consecutiveGatewayErrors = 0;
    this.log.warn({ service: e.service, version: e.version, endpoint: e.id, reason: why, ejectedForMs: ms, ejectionCount: e.ejectionCount }, 'endpoint ejected');
    e.stats.metrics?.ejected();
    this.dp.availabilityChanged(e);
    const t = setTimeout(() => this.restore(e), ms);
    t.unref();
    this.timers.set(e, t);
  }

  private restore(e: Endpoint): void {
    this.timers.delete(e);
    if (this.closed) return;
    e.ejectedUntil = 0;
    // With probes on, the endpoint must pass one before it takes traffic again.
    if (this.dp.service(e.service)?.healthCheck.enabled) {
      e.healthy = false;
      e.probePending = true;
    }
    this.log.info({ service: e.service, version: e.version, endpoint: e.id, awaitingProbe: e.probePending }, 'endpoint ejection ended');
    this.dp.availabilityChanged(e);
  }

  close(): void {
    this.closed = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }
}

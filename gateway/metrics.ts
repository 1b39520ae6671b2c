// Prometheus metrics (prom-client) for the admin listener's /metrics.
//
// Hot path: a request only increments plain typed-array counters of its version
// (gateway/counters.ts, created once per version when a snapshot containing it is
// built, kept on its VersionStats): no prom-client call, no label lookup, no
// allocation per request. The per-version series (requests by code class, request and
// upstream duration histograms, retries, upstream errors by reason, ejections, client
// aborts) are custom collectors that read those counters when /metrics is scraped, with
// the same names, labels and buckets prom-client's Counter/Histogram printed. Gauges (in flight,
// weights, endpoint states, per-endpoint in flight, revision, rollout) are read from the
// data plane and the controller when scraped. Labels stay bounded: service, version,
// code class, reason, state, endpoint (gauges only) — never path, client or request id.

import client, { Counter, Gauge, Registry, type MetricValue } from 'prom-client';
import { C, CODE_CLASSES, DURATION_BUCKETS, ERROR_REASONS, GRPC_STATUSES, VersionCounters, histogramOf } from './counters.js';
import { vkey } from '../discovery/provider.js';
import type { Dataplane } from './dataplane.js';
import type { VersionStats } from './endpoint.js';

export { DURATION_BUCKETS };

const STATES = ['healthy', 'unhealthy', 'ejected', 'draining'] as const;
const ROLLOUT_STATES = ['running', 'paused', 'awaiting_approval', 'succeeded', 'aborted', 'rolled_back'] as const;

export interface MetricsSources {
  dataplane: Dataplane;
  /** Fleet-wide state revision. */
  revision(): number;
  /** Rollout per service, if any. */
  rollout(service: string): { state: string; percent: number } | undefined;
  /** Seconds since each discovery provider last delivered. */
  discoveryAge(): Record<string, number>;
  replicas(): number;
  webhooks?(): { delivered: number; failed: number; dropped: number }[];
}

export class Metrics {
  readonly registry = new Registry();
  /** Every version's counters, in the order they were prepared (the export order). */
  private readonly prepared: VersionCounters[] = [];
  /** Counters of the same versions in data-plane workers (gateway.workers), by worker,
   * then service NUL version; added to this process's at scrape time. */
  private readonly remote = new Map<string, Map<string, Float64Array>>();
  readonly configReloads: Counter<'result'>;

  constructor(private readonly src: MetricsSources) {
    const registers = [this.registry];
    client.collectDefaultMetrics({ register: this.registry });
    // prom-client names three gauges *_total, which promtool rejects (a _total suffix
    // means a counter). prom-client also exports nodejs_active_resources{type}, which
    // carries the same information.
    for (const n of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(n);
    // A series family computed from every version's counters when scraped.
    const per = (name: string, help: string, type: 'counter' | 'histogram', fn: (v: Float64Array, labels: { service: string; version: string }, out: MetricValue<string>[]) => void): void =>
      this.registry.registerMetric(
        new CountersMetric(name, help, type, () => {
          const out: MetricValue<string>[] = [];
          for (const c of this.prepared) fn(this.valuesOf(c), { service: c.service, version: c.version }, out);
          return out;
        }) as never,
      );
    per('switchyard_requests_total', 'Requests answered, by service, version and status class (gRPC calls also by grpc_status).', 'counter', (v, l, out) => {
      // 2xx and 5xx from the start (what error-rate alerts divide); the rest once seen.
      CODE_CLASSES.forEach((code, i) => {
        if (v[C.classes + i] > 0 || code === '2xx' || code === '5xx') out.push({ labels: { ...l, code }, value: v[C.classes + i] });
        // gRPC calls: a series per grpc-status seen.
        for (let g = 0; g < GRPC_STATUSES; g++) {
          const n = v[C.grpc + i * GRPC_STATUSES + g];
          if (n > 0) out.push({ labels: { ...l, code, grpc_status: String(g) }, value: n });
        }
      });
    });
    const histogram = (name: string, help: string, offset: number): void =>
      per(name, help, 'histogram', (v, l, out) => {
        const h = histogramOf(v, offset);
        DURATION_BUCKETS.forEach((le, i) => out.push({ metricName: `${name}_bucket`, labels: { le, ...l }, value: h.cumulative[i] } as MetricValue<string>));
        out.push({ metricName: `${name}_bucket`, labels: { le: '+Inf', ...l }, value: h.count } as MetricValue<string>);
        out.push({ metricName: `${name}_sum`, labels: l, value: h.sum } as MetricValue<string>);
        out.push({ metricName: `${name}_count`, labels: l, value: h.count } as MetricValue<string>);
      });
    histogram('switchyard_request_duration_seconds', 'Time from request arrival to the end of the response.', C.duration);
    histogram('switchyard_upstream_request_duration_seconds', 'Duration of each upstream attempt.', C.upstream);
    const single = (name: string, help: string, at: number): void => per(name, help, 'counter', (v, l, out) => out.push({ labels: l, value: v[at] }));
    single('switchyard_retries_total', 'Requests retried on another endpoint after never reaching the first.', C.retries);
    per('switchyard_upstream_errors_total', 'Failed upstream attempts by reason.', 'counter', (v, l, out) =>
      ERROR_REASONS.forEach((reason, i) => out.push({ labels: { ...l, reason }, value: v[C.errors + i] })),
    );
    single('switchyard_outlier_ejections_total', 'Endpoints ejected by passive outlier detection.', C.ejections);
    single('switchyard_client_aborts_total', 'Requests whose client went away before the response ended.', C.aborts);
    this.configReloads = new Counter({ name: 'switchyard_config_reloads_total', help: 'Config reloads by result.', labelNames: ['result'], registers });
    this.configReloads.inc({ result: 'success' }, 0);
    this.configReloads.inc({ result: 'failure' }, 0);

    const dp = src.dataplane;
    // Mirror copies by service, target version and result (gateway/mirror.ts); with
    // gateway.workers, the primary's counts are its workers' sums.
    this.registry.registerMetric(
      new CountersMetric('switchyard_mirror_requests_total', 'Mirror copies by service, target version and result (match, status_diff, body_diff, error, dropped).', 'counter', () => {
        const out: MetricValue<string>[] = [];
        for (const ms of dp.allMirrorStats()) {
          for (const [result, value] of Object.entries(ms.countsByResult())) out.push({ labels: { service: ms.service, version: ms.version, result }, value });
        }
        return out;
      }) as never,
    );
    const versions = (): { service: string; version: string }[] => dp.serviceList.flatMap((s) => s.versions.map((v) => ({ service: s.name, version: v.name })));
    new Gauge({
      name: 'switchyard_inflight_requests',
      help: 'Requests in flight per version.',
      labelNames: ['service', 'version'],
      registers,
      collect() {
        this.reset();
        for (const { service, version } of versions()) this.set({ service, version }, dp.statsOf(service, version).inflight);
      },
    });
    // Connection drains (gateway/conndrain.ts): closed so far, and chosen but still open.
    new Counter({
      name: 'switchyard_connections_drained_total',
      help: 'Long-lived connections (WebSocket, HTTP/2, keep-alive) closed by a connection drain, by the version they were pinned to.',
      labelNames: ['service', 'version'],
      registers,
      collect() {
        this.reset();
        for (const { service, version } of versions()) this.inc({ service, version }, dp.statsOf(service, version).connectionsDrained);
      },
    });
    new Gauge({
      name: 'switchyard_connections_closing',
      help: 'Long-lived connections a connection drain has chosen and that have not closed yet.',
      labelNames: ['service', 'version'],
      registers,
      collect() {
        this.reset();
        for (const { service, version } of versions()) this.set({ service, version }, dp.statsOf(service, version).closing);
      },
    });
    new Gauge({
      name: 'switchyard_version_weight',
      help: 'Desired weight of each version.',
      labelNames: ['service', 'version'],
      registers,
      collect() {
        this.reset();
        for (const s of dp.serviceList) for (const [version, w] of Object.entries(dp.getWeights(s.name))) this.set({ service: s.name, version }, w);
      },
    });
    new Gauge({
      name: 'switchyard_endpoints',
      help: 'Endpoints per version by state.',
      labelNames: ['service', 'version', 'state'],
      registers,
      collect() {
        this.reset();
        for (const { service, version } of versions()) {
          const counts: Record<string, number> = { healthy: 0, unhealthy: 0, ejected: 0, draining: 0 };
          for (const e of dp.endpointsOf(service, version)) counts[e.state]++;
          for (const st of STATES) this.set({ service, version, state: st }, counts[st]);
        }
      },
    });
    new Gauge({
      name: 'switchyard_endpoint_inflight_requests',
      help: 'Requests in flight per endpoint.',
      labelNames: ['service', 'version', 'endpoint'],
      registers,
      collect() {
        this.reset();
        for (const { service, version } of versions()) for (const e of dp.endpointsOf(service, version)) this.set({ service, version, endpoint: e.id }, e.inflight);
      },
    });
    new Gauge({
      name: 'switchyard_state_revision',
      help: 'Revision of the desired state this gateway has applied.',
      registers,
      collect() {
        this.set(src.revision());
      },
    });
    new Gauge({
      name: 'switchyard_rollout_state',
      help: 'Current rollout state per service (1 for the current state).',
      labelNames: ['service', 'state'],
      registers,
      collect() {
        this.reset();
        for (const s of dp.serviceList) {
          const r = src.rollout(s.name);
          if (r === undefined) continue;
          for (const st of ROLLOUT_STATES) this.set({ service: s.name, state: st }, r.state === st ? 1 : 0);
        }
      },
    });
    new Gauge({
      name: 'switchyard_rollout_step_percent',
      help: "Percent of traffic the current rollout step gives its target.",
      labelNames: ['service'],
      registers,
      collect() {
        this.reset();
        for (const s of dp.serviceList) {
          const r = src.rollout(s.name);
          if (r !== undefined) this.set({ service: s.name }, r.percent);
        }
      },
    });
    new Gauge({
      name: 'switchyard_discovery_staleness_seconds',
      help: 'Seconds since each discovery provider last knew its endpoints were current (consul: 0 while its blocking queries are open; static: since the last config load).',
      labelNames: ['provider'],
      registers,
      collect() {
        this.reset();
        for (const [provider, age] of Object.entries(src.discoveryAge())) this.set({ provider }, age);
      },
    });
    new Gauge({
      name: 'switchyard_replicas',
      help: 'Gateway replicas sharing this state (1 without a shared store).',
      registers,
      collect() {
        this.set(src.replicas());
      },
    });
    if (src.webhooks !== undefined) {
      const hooks = src.webhooks;
      new Gauge({
        name: 'switchyard_webhook_deliveries',
        help: 'Webhook deliveries since start by result (delivered, failed after retries, dropped from a full queue).',
        labelNames: ['result'],
        registers,
        collect() {
          const all = hooks();
          this.set({ result: 'delivered' }, all.reduce((n, h) => n + h.delivered, 0));
          this.set({ result: 'failed' }, all.reduce((n, h) => n + h.failed, 0));
          this.set({ result: 'dropped' }, all.reduce((n, h) => n + h.dropped, 0));
        },
      });
    }
  }

  /** Prepares the label children of every version of the current config. */
  prepareAll(): void {
    const dp = this.src.dataplane;
    for (const s of dp.serviceList) for (const v of s.versions) this.prepare(dp.statsOf(s.name, v.name));
  }

  prepare(stats: VersionStats): void {
    if (stats.metrics !== undefined) return;
    const c = new VersionCounters(stats.service, stats.version);
    this.prepared.push(c);
    stats.metrics = c;
  }

  /** Replaces what data-plane worker `worker` has counted so far ([service NUL
   * version, counters] pairs, as its VersionCounters hold them). A worker that exits
   * keeps its last counts: counters never go down. */
  setRemoteCounters(worker: string, counters: readonly (readonly [string, ArrayLike<number>])[]): void {
    let mine = this.remote.get(worker);
    if (mine === undefined) {
      mine = new Map();
      this.remote.set(worker, mine);
    }
    for (const [k, values] of counters) {
      let a = mine.get(k);
      if (a === undefined) {
        a = new Float64Array(C.size);
        mine.set(k, a);
      }
      for (let i = 0; i < C.size && i < values.length; i++) a[i] = values[i];
    }
  }

  private valuesOf(c: VersionCounters): Float64Array {
    if (this.remote.size === 0) return c.v;
    const sum = Float64Array.from(c.v);
    const k = vkey(c.service, c.version);
    for (const mine of this.remote.values()) {
      const a = mine.get(k);
      if (a !== undefined) for (let i = 0; i < sum.length; i++) sum[i] += a[i];
    }
    return sum;
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/** A metric in prom-client's registry whose values are computed when scraped (the
 * interface Registry reads: name, help, type, get(), reset()). */
class CountersMetric {
  readonly aggregator = 'sum';
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'histogram',
    private readonly read: () => MetricValue<string>[],
  ) {}

  async get(): Promise<{ name: string; help: string; type: string; values: MetricValue<string>[]; aggregator: string }> {
    return { name: this.name, help: this.help, type: this.type, values: this.read(), aggregator: 'sum' };
  }

  reset(): void {}
}

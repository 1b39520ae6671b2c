// Prometheus metrics (prom-client) for the admin listener's /metrics.
//
// Hot path: every version's label children (requests by code class, request and
// upstream duration, retries, upstream errors by reason) are created once, when a
// snapshot containing that version is built, and kept on its VersionStats; a request
// only increments prepared children — no label lookup per request. Gauges (in flight,
// weights, endpoint states, per-endpoint in flight, revision, rollout) are read from the
// data plane and the controller when scraped. Labels stay bounded: service, version,
// code class, reason, state, endpoint (gauges only) — never path, client or request id.

import client, { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Dataplane } from './dataplane.js';
import type { VersionMetricsSink, VersionStats } from './endpoint.js';

/** From 100µs (a loopback hop) to 30 s (the default request timeout). */
export const DURATION_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

const CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;
const REASONS = ['connect', 'reset', 'timeout', 'protocol'] as const;
const STATES = ['healthy', 'unhealthy', 'ejected', 'draining'] as const;
const ROLLOUT_STATES = ['running', 'paused', 'succeeded', 'aborted', 'rolled_back'] as const;

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
  private readonly requests: Counter<'service' | 'version' | 'code'>;
  private readonly duration: Histogram<'service' | 'version'>;
  private readonly upstreamDuration: Histogram<'service' | 'version'>;
  private readonly retries: Counter<'service' | 'version'>;
  private readonly upstreamErrors: Counter<'service' | 'version' | 'reason'>;
  private readonly ejections: Counter<'service' | 'version'>;
  private readonly clientAborts: Counter<'service' | 'version'>;
  readonly configReloads: Counter<'result'>;

  constructor(private readonly src: MetricsSources) {
    const registers = [this.registry];
    client.collectDefaultMetrics({ register: this.registry });
    // prom-client names three gauges *_total, which promtool rejects (a _total suffix
    // means a counter). prom-client also exports nodejs_active_resources{type}, which
    // carries the same information.
    for (const n of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(n);
    this.requests = new Counter({ name: 'switchyard_requests_total', help: 'Requests answered, by service, version and status class.', labelNames: ['service', 'version', 'code'], registers });
    this.duration = new Histogram({ name: 'switchyard_request_duration_seconds', help: 'Time from request arrival to the end of the response.', labelNames: ['service', 'version'], buckets: DURATION_BUCKETS, registers });
    this.upstreamDuration = new Histogram({ name: 'switchyard_upstream_request_duration_seconds', help: 'Duration of each upstream attempt.', labelNames: ['service', 'version'], buckets: DURATION_BUCKETS, registers });
    this.retries = new Counter({ name: 'switchyard_retries_total', help: 'Requests retried on another endpoint after never reaching the first.', labelNames: ['service', 'version'], registers });
    this.upstreamErrors = new Counter({ name: 'switchyard_upstream_errors_total', help: 'Failed upstream attempts by reason.', labelNames: ['service', 'version', 'reason'], registers });
    this.ejections = new Counter({ name: 'switchyard_outlier_ejections_total', help: 'Endpoints ejected by passive outlier detection.', labelNames: ['service', 'version'], registers });
    this.clientAborts = new Counter({ name: 'switchyard_client_aborts_total', help: 'Requests whose client went away before the response ended.', labelNames: ['service', 'version'], registers });
    this.configReloads = new Counter({ name: 'switchyard_config_reloads_total', help: 'Config reloads by result.', labelNames: ['result'], registers });
    this.configReloads.inc({ result: 'success' }, 0);
    this.configReloads.inc({ result: 'failure' }, 0);

    const dp = src.dataplane;
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
    const l = { service: stats.service, version: stats.version };
    const byClass = CLASSES.map((code) => this.requests.labels({ ...l, code }));
    const duration = this.duration.labels(l);
    const upstreamDuration = this.upstreamDuration.labels(l);
    const retries = this.retries.labels(l);
    const errors: Record<string, Counter.Internal> = {};
    for (const reason of REASONS) errors[reason] = this.upstreamErrors.labels({ ...l, reason });
    const ejections = this.ejections.labels(l);
    const aborts = this.clientAborts.labels(l);
    // Zero-valued series exist from the start, so rate() works before the first error.
    retries.inc(0);
    ejections.inc(0);
    aborts.inc(0);
    for (const c of Object.values(errors)) c.inc(0);
    const sink: VersionMetricsSink = {
      request(status, seconds, retried) {
        if (status === 499) aborts.inc();
        else byClass[Math.min(4, Math.max(0, Math.floor(status / 100) - 1))].inc();
        duration.observe(seconds);
        if (retried > 0) retries.inc(retried);
      },
      upstream(seconds, failure) {
        upstreamDuration.observe(seconds);
        if (failure !== undefined && failure !== 'client_abort') errors[failure]?.inc();
      },
      ejected() {
        ejections.inc();
      },
    };
    stats.metrics = sink;
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

// Active health checks: an HTTP GET on the service's healthCheck.path to every endpoint
// of every version, every `interval` (±10% jitter so that many gateways do not probe in
// step), each with `timeout`. 200–399 passes. `unhealthyThreshold` consecutive failures
// mark an endpoint unhealthy; `healthyThreshold` consecutive passes mark it healthy
// again. A backend that accepts the connection but never answers fails by timeout, so a
// hung endpoint is out of rotation within about interval × unhealthyThreshold + timeout.
//
// Probes start on a fixed cadence (not after the previous one ends) and the config
// requires timeout ≤ interval, so at most one probe per endpoint is outstanding.
//
// New endpoints: the endpoints present when the gateway starts are assumed healthy and
// probed at once; an endpoint that discovery adds later waits for its first passing
// probe before it takes traffic (probePending), so a rolling replacement never sends
// requests to an instance that is not serving yet. One passing probe is enough there.

import type { Logger } from 'pino';
import { Agent, request } from 'undici';
import type { HealthCheckConfig } from '../../config/types.js';
import type { Dataplane } from '../dataplane.js';
import { tlsConnector, tlsKey, type Endpoint } from '../endpoint.js';
import type { Snapshot } from '../snapshot.js';
import { H2Upstream } from '../h2upstream.js';
import { grpcProbe } from './grpc-probe.js';

interface Probe {
  endpoint: Endpoint;
  timer: NodeJS.Timeout | undefined;
  successes: number;
  failures: number;
  running: boolean;
}

export class ActiveHealthChecker {
  private readonly probes = new Map<Endpoint, Probe>();
  // Probes use their own connections, so they never queue behind user traffic in the
  // endpoint's pool and a saturated pool cannot make a healthy endpoint look hung.
  private readonly agent = new Agent({ connections: 2, keepAliveTimeout: 4000, keepAliveMaxTimeout: 4000 });
  /** HTTPS endpoints are probed over TLS with their version's CA, servername and verify
   * setting: one agent per distinct setting. */
  private readonly tlsAgents = new Map<string, Agent>();
  /** healthCheck.type grpc: each endpoint's own HTTP/2 session for its probes. */
  private readonly h2 = new Map<Endpoint, H2Upstream>();
  private closed = false;

  constructor(
    private readonly dp: Dataplane,
    private readonly log: Logger,
  ) {}

  /** Follows the endpoint set: starts probes for new endpoints, stops removed ones. */
  sync(snap: Snapshot): void {
    if (this.closed) return;
    const seen = new Set<Endpoint>();
    for (const svc of snap.services.values()) {
      const hc = svc.config.healthCheck;
      if (!hc.enabled) continue;
      for (const v of svc.versions) {
        for (const e of v.all) {
          if (e.draining) continue;
          seen.add(e);
          if (!this.probes.has(e)) {
            const p: Probe = { endpoint: e, timer: undefined, successes: 0, failures: 0, running: false };
            this.probes.set(e, p);
            this.schedule(p, 0);
          }
        }
      }
    }
    for (const [e, p] of this.probes) {
      if (seen.has(e)) continue;
      clearTimeout(p.timer);
      this.probes.delete(e);
      void this.h2.get(e)?.destroy();
      this.h2.delete(e);
    }
  }

  private config(e: Endpoint): HealthCheckConfig | undefined {
    const hc = this.dp.service(e.service)?.healthCheck;
    return hc?.enabled ? hc : undefined;
  }

  private schedule(p: Probe, delayMs: number): void {
    p.timer = setTimeout(() => this.run(p), delayMs);
    p.timer.unref();
  }

  private run(p: Probe): void {
    const hc = this.config(p.endpoint);
    if (this.closed || hc === undefined || this.probes.get(p.endpoint) !== p) return;
    this.schedule(p, hc.intervalMs * (0.9 + Math.random() * 0.2));
    if (p.running) return;
    p.running = true;
    void this.probe(p.endpoint, hc).then((ok) => {
      p.running = false;
      if (this.probes.get(p.endpoint) === p) this.record(p, hc, ok);
    });
  }

  private agentFor(e: Endpoint): Agent {
    if (e.tls === undefined) return this.agent;
    const key = tlsKey(e.tls);
    let a = this.tlsAgents.get(key);
    if (a === undefined) {
      a = new Agent({ connections: 2, keepAliveTimeout: 4000, keepAliveMaxTimeout: 4000, connect: tlsConnector(e.tls) });
      this.tlsAgents.set(key, a);
    }
    return a;
  }

  private async probe(e: Endpoint, hc: HealthCheckConfig): Promise<boolean> {
    // The version's hostHeader, so a virtual host behind the endpoint answers.
    const host = this.dp.service(e.service)?.versions.find((v) => v.name === e.version)?.hostHeader;
    if (hc.type === 'grpc') {
      let up = this.h2.get(e);
      if (up === undefined) {
        up = new H2Upstream({ origin: e.address.origin, tls: e.tls, connectTimeoutMs: hc.timeoutMs, idleTimeoutMs: 0, maxSessions: 1 });
        this.h2.set(e, up);
      }
      return grpcProbe(up, host ?? `${e.address.host}:${e.address.port}`, hc.grpcService, hc.timeoutMs);
    }
    try {
      const res = await request(`${e.address.origin}${hc.path}`, {
        dispatcher: this.agentFor(e),
        method: 'GET',
        headers: { 'user-agent': 'switchyard-health-check', ...(host === undefined ? {} : { host }) },
        headersTimeout: hc.timeoutMs,
        bodyTimeout: hc.timeoutMs,
        signal: AbortSignal.timeout(hc.timeoutMs),
      });
      await res.body.dump();
      return res.statusCode >= 200 && res.statusCode < 400;
    } catch {
      return false;
    }
  }

  private record(p: Probe, hc: HealthCheckConfig, ok: boolean): void {
    const e = p.endpoint;
    if (ok) {
      p.successes++;
      p.failures = 0;
      if (!e.healthy && (e.probePending || p.successes >= hc.healthyThreshold)) {
        e.healthy = true;
        e.probePending = false;
        this.log.info({ service: e.service, version: e.version, endpoint: e.id }, 'endpoint healthy');
        this.dp.availabilityChanged(e);
      }
    } else {
      p.failures++;
      p.successes = 0;
      if (e.healthy && p.failures >= hc.unhealthyThreshold) {
        e.healthy = false;
        this.log.warn({ service: e.service, version: e.version, endpoint: e.id, failures: p.failures }, 'endpoint unhealthy');
        this.dp.availabilityChanged(e);
      }
    }
  }

  /** Probe state for status output. */
  probeOf(e: Endpoint): { successes: number; failures: number } | undefined {
    const p = this.probes.get(e);
    return p && { successes: p.successes, failures: p.failures };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.probes.values()) clearTimeout(p.timer);
    this.probes.clear();
    await this.agent.destroy().catch(() => {});
    await Promise.all([...this.tlsAgents.values()].map((a) => a.destroy().catch(() => {})));
    this.tlsAgents.clear();
    await Promise.all([...this.h2.values()].map((u) => u.destroy()));
    this.h2.clear();
  }
}

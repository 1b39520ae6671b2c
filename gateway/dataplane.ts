// The data plane's in-process API: the one object that owns the desired weights, the
// endpoint sets delivered by discovery and the per-endpoint state, and rebuilds the
// route snapshot whenever any of them changes. The control plane calls setWeights,
// drainEndpoint and whenVersionIdle; discovery calls setEndpoints; the server reads
// holder.current. Nothing here knows about HTTP listeners, Fastify, Redis or Consul.

import type { Logger } from 'pino';
import type { Config, EndpointAddress, MirrorConfig, ServiceConfig } from '../config/types.js';
import { MirrorStats } from './mirror.js';
import { Endpoint, VersionStats, tlsKey, upstreamTlsOptions, type PoolOptions } from './endpoint.js';
import { buildSnapshot, SnapshotHolder, type Snapshot } from './snapshot.js';
import { vkey, type EndpointSet } from '../discovery/provider.js';
import type { ConnectionDrainOrder } from './conndrain.js';

export class WeightsError extends Error {
  constructor(readonly code: 'UNKNOWN_SERVICE' | 'UNKNOWN_VERSION' | 'INVALID_WEIGHTS', message: string) {
    super(message);
    this.name = 'WeightsError';
  }
}

type Weights = Record<string, number>;

export interface DataplaneOptions {
  log: Logger;
}

/** An endpoint as the primary of `gateway.workers` sends it to its workers. */
export interface ReplicatedEndpoint {
  address: EndpointAddress;
  healthy: boolean;
  probePending: boolean;
  ejectedUntil: number;
  draining: boolean;
  availableSince: number;
}

/** Everything a data-plane worker needs besides the config: runtime weights, endpoint
 * sets and each endpoint's health, ejection and drain state. */
export interface ReplicatedState {
  weights: [string, Weights][];
  /** Runtime mirrors by service (null: stopped, whatever the config says). */
  mirrors?: [string, MirrorConfig | null][];
  versions: { service: string; version: string; endpoints: ReplicatedEndpoint[] }[];
  /** Recent connection drain orders (each worker applies an order once). */
  drains?: ConnectionDrainOrder[];
}

/** How long an order is kept (and sent to workers) after its window ended. */
const DRAIN_ORDER_KEEP_MS = 60_000;

export class Dataplane {
  readonly holder: SnapshotHolder;
  private services: readonly ServiceConfig[] = [];
  private config!: Config;
  /** Runtime weights (set by the control plane); they win over config weights. */
  private weights = new Map<string, Weights>();
  /** Endpoints by service/version, then by endpoint id. */
  private endpoints = new Map<string, Map<string, Endpoint>>();
  private stats = new Map<string, VersionStats>();
  /** Runtime mirrors (set by the control plane): a config, or null when stopped; a
   * service missing here takes its config's `mirror`. */
  private mirrors = new Map<string, MirrorConfig | null>();
  /** Mirror counters by service and target version (survive swaps and changes). */
  private mirrorStats = new Map<string, MirrorStats>();
  /** Endpoints no longer listed, finishing their in-flight requests. */
  private retiring = new Set<Endpoint>();
  private rebuildQueued = false;
  private closed = false;
  private readonly log: Logger;
  private readonly listeners: ((snap: Snapshot) => void)[] = [];
  /** Connection drain orders applied here, newest last, with when each expires. */
  private drains: { order: ConnectionDrainOrder; until: number }[] = [];
  private readonly drainSeen = new Set<string>();
  private readonly drainListeners: ((order: ConnectionDrainOrder) => void)[] = [];
  /** Set once the first discovery snapshot is in: endpoints added after that wait for
   * a passing probe (when probes are on) before they take traffic. */
  private started = false;

  constructor(opts: DataplaneOptions) {
    this.log = opts.log;
    this.holder = new SnapshotHolder(buildSnapshot({ services: [], weights: this.weights, endpointsOf: () => [], statsOf: () => new VersionStats('', '') }));
  }

  /** Applies a (validated) config: services, routes, versions. Endpoints of versions
   * that disappear are retired (drained), not cut. */
  applyConfig(config: Config): void {
    this.config = config;
    this.services = config.services;
    const live = new Set<string>();
    for (const s of config.services) for (const v of s.versions) live.add(vkey(s.name, v.name));
    for (const [k, eps] of this.endpoints) {
      if (live.has(k)) continue;
      for (const e of eps.values()) this.retire(e);
      this.endpoints.delete(k);
    }
    // A version whose TLS settings changed (CA, servername, verify, hostHeader-derived
    // SNI), or a service whose protocol changed: its endpoints get new pools; the old
    // ones drain what they carry.
    for (const s of config.services) {
      for (const v of s.versions) {
        const eps = this.endpoints.get(vkey(s.name, v.name));
        if (eps === undefined) continue;
        for (const [id, e] of eps) {
          if (tlsKey(e.tls) === tlsKey(upstreamTlsOptions(e.address, v.tls, v.hostHeader)) && e.protocol === s.protocol) continue;
          this.retire(e);
          const next = this.createEndpoint(s.name, v.name, e.address);
          // Same backend, new connections: its health carries over.
          next.healthy = e.healthy;
          next.probePending = e.probePending;
          next.availableSince = e.availableSince;
          eps.set(id, next);
        }
      }
    }
    // Probes turned off by this config: no probe will ever bring an endpoint back, so
    // every endpoint of the service is available again (as without a healthCheck block).
    for (const s of config.services) {
      if (s.healthCheck.enabled) continue;
      for (const v of s.versions) {
        for (const e of this.endpoints.get(vkey(s.name, v.name))?.values() ?? []) {
          if (e.healthy && !e.probePending) continue;
          e.healthy = true;
          e.probePending = false;
          e.availableSince = Date.now();
        }
      }
    }
    for (const [svc, w] of this.weights) {
      const sc = config.services.find((s) => s.name === svc);
      if (sc === undefined) {
        this.weights.delete(svc);
        continue;
      }
      // Runtime weights survive a reload only for versions that still exist.
      const kept: Weights = {};
      for (const v of sc.versions) if (w[v.name] !== undefined) kept[v.name] = w[v.name];
      this.weights.set(svc, kept);
    }
    this.rebuild();
  }

  get serviceList(): readonly ServiceConfig[] {
    return this.services;
  }

  service(name: string): ServiceConfig | undefined {
    return this.services.find((s) => s.name === name);
  }

  /** The effective desired weights of a service (runtime over config). */
  getWeights(service: string): Weights {
    const sc = this.service(service);
    if (sc === undefined) throw new WeightsError('UNKNOWN_SERVICE', `unknown service ${service}`);
    const w = this.weights.get(service);
    const out: Weights = {};
    for (const v of sc.versions) out[v.name] = w?.[v.name] ?? v.weight;
    return out;
  }

  /** Validates and applies new weights. Versions not named keep their weight. */
  setWeights(service: string, next: Weights): Weights {
    const merged = { ...this.getWeights(service), ...this.validateWeights(service, next) };
    this.weights.set(service, merged);
    this.rebuild();
    return merged;
  }

  /** Checks weights for a service without applying them; returns them when valid. */
  validateWeights(service: string, next: Weights): Weights {
    const sc = this.service(service);
    if (sc === undefined) throw new WeightsError('UNKNOWN_SERVICE', `unknown service ${service}`);
    const merged = { ...this.getWeights(service) };
    for (const [name, w] of Object.entries(next)) {
      if (!sc.versions.some((v) => v.name === name)) {
        throw new WeightsError('UNKNOWN_VERSION', `service ${service} has no version ${name}`);
      }
      if (!Number.isInteger(w) || w < 0 || w > 1_000_000) {
        throw new WeightsError('INVALID_WEIGHTS', `weight of ${name} must be an integer from 0 to 1000000`);
      }
      merged[name] = w;
    }
    if (!Object.values(merged).some((w) => w > 0)) {
      throw new WeightsError('INVALID_WEIGHTS', 'at least one version must have a positive weight');
    }
    return next;
  }

  /** The mirror in force for a service: the runtime one, else the config's. */
  mirrorOf(service: string): MirrorConfig | undefined {
    const m = this.mirrors.get(service);
    if (m !== undefined) return m ?? undefined;
    return this.service(service)?.mirror;
  }

  /** Sets (a config), stops (null) or hands back to the config (undefined) a service's mirror. */
  setMirror(service: string, m: MirrorConfig | null | undefined): void {
    const before = this.mirrors.get(service);
    if (m === undefined) this.mirrors.delete(service);
    else this.mirrors.set(service, m);
    if (JSON.stringify(before) !== JSON.stringify(m)) this.rebuild();
  }

  mirrorStatsOf(service: string, version: string): MirrorStats {
    const k = vkey(service, version);
    let s = this.mirrorStats.get(k);
    if (s === undefined) {
      s = new MirrorStats(service, version);
      this.mirrorStats.set(k, s);
    }
    return s;
  }

  /** Every mirror's counters (metrics, worker reports). */
  allMirrorStats(): MirrorStats[] {
    return [...this.mirrorStats.values()];
  }

  /** Discovery delivers full endpoint sets of some versions; one rebuild for all.
   * Sets for services or versions the config does not have are ignored. */
  applyDiscovery(sets: readonly EndpointSet[]): void {
    let changed = false;
    for (const set of sets) {
      if (!this.service(set.service)?.versions.some((v) => v.name === set.version)) continue;
      if (this.setEndpoints(set.service, set.version, set.endpoints)) changed = true;
    }
    if (changed) this.rebuild();
  }

  private setEndpoints(service: string, version: string, addrs: readonly EndpointAddress[]): boolean {
    const k = vkey(service, version);
    let eps = this.endpoints.get(k);
    if (eps === undefined) {
      eps = new Map();
      this.endpoints.set(k, eps);
    }
    let changed = false;
    const want = new Set<string>();
    for (const a of addrs) {
      want.add(a.id);
      if (!eps.has(a.id)) {
        eps.set(a.id, this.createEndpoint(service, version, a));
        changed = true;
      }
    }
    for (const [id, e] of eps) {
      if (want.has(id)) continue;
      eps.delete(id);
      this.retire(e);
      changed = true;
    }
    return changed;
  }

  private createEndpoint(service: string, version: string, a: EndpointAddress): Endpoint {
    const sc = this.service(service);
    const up = this.config.gateway.upstream;
    const vc = sc?.versions.find((v) => v.name === version);
    const opts: PoolOptions = {
      maxConnections: up.maxConnectionsPerEndpoint,
      idleTimeoutMs: up.idleTimeoutMs,
      connectTimeoutMs: sc?.timeouts.connectMs ?? 2000,
      tls: upstreamTlsOptions(a, vc?.tls, vc?.hostHeader),
      protocol: sc?.protocol ?? 'http1',
    };
    const e = new Endpoint(service, version, a, this.statsOf(service, version), opts);
    e.availableSince = Date.now();
    if (this.started && sc?.healthCheck.enabled) {
      e.healthy = false;
      e.probePending = true;
    }
    this.log.debug({ service, version, endpoint: a.id }, 'endpoint added');
    return e;
  }

  /** No new requests to an endpoint; in-flight ones finish, then its pool closes
   * (or is destroyed after the shutdown grace). Returns false for an unknown id. */
  drainEndpoint(service: string, id: string): boolean {
    let found = false;
    for (const [k, eps] of this.endpoints) {
      if (!k.startsWith(`${service}\u0000`)) continue;
      const e = eps.get(id);
      if (e === undefined || e.draining) {
        found ||= e !== undefined;
        continue;
      }
      found = true;
      e.draining = true;
      this.closeWhenIdle(e);
    }
    if (found) this.rebuild();
    return found;
  }

  private retire(e: Endpoint): void {
    e.listed = false;
    if (!e.draining) {
      e.draining = true;
      this.closeWhenIdle(e);
    }
  }

  private closeWhenIdle(e: Endpoint): void {
    this.retiring.add(e);
    // HTTP/2 sessions get their GOAWAY now: the streams they carry finish, no new one
    // starts there (the endpoint takes no new request anyway).
    e.h2?.goAway();
    this.log.info({ service: e.service, version: e.version, endpoint: e.id, inflight: e.inflight }, 'endpoint draining');
    const grace = this.config.shutdown.graceMs;
    const timer = setTimeout(() => {
      this.log.warn({ service: e.service, endpoint: e.id, inflight: e.inflight }, 'endpoint drain grace passed; closing its connections');
      void e.closePool(true);
    }, grace);
    timer.unref();
    void e.whenIdle().then(async () => {
      clearTimeout(timer);
      await e.closePool();
      this.retiring.delete(e);
      this.log.info({ service: e.service, version: e.version, endpoint: e.id }, 'endpoint drained');
    });
  }

  statsOf(service: string, version: string): VersionStats {
    const k = vkey(service, version);
    let s = this.stats.get(k);
    if (s === undefined) {
      s = new VersionStats(service, version);
      this.stats.set(k, s);
    }
    return s;
  }

  /** Resolves when nothing of that version is in flight. */
  whenVersionIdle(service: string, version: string): Promise<void> {
    return this.remoteIdle?.(service, version) ?? this.statsOf(service, version).whenIdle();
  }

  /**
   * Closes the long-lived connections pinned to versions that lost weight (see
   * gateway/conndrain.ts): the listeners (the gateway server, or the worker pool that
   * sends it to its workers) apply the order. An order already applied is ignored.
   */
  drainConnections(order: ConnectionDrainOrder): void {
    if (this.drainSeen.has(order.id)) return;
    const now = Date.now();
    this.drains = this.drains.filter((d) => d.until > now);
    for (const id of [...this.drainSeen]) if (!this.drains.some((d) => d.order.id === id)) this.drainSeen.delete(id);
    this.drainSeen.add(order.id);
    this.drains.push({ order, until: now + order.windowMs + DRAIN_ORDER_KEEP_MS });
    for (const fn of this.drainListeners) fn(order);
  }

  /** Calls fn with every connection drain order applied from now on. */
  onConnectionDrain(fn: (order: ConnectionDrainOrder) => void): void {
    this.drainListeners.push(fn);
  }

  /** Connections chosen by a drain and not closed yet, per service and version. */
  closingByService(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {};
    for (const s of this.services) {
      const o: Record<string, number> = {};
      for (const v of s.versions) o[v.name] = this.statsOf(s.name, v.name).closing;
      out[s.name] = o;
    }
    return out;
  }

  /** Connections closed by drains so far, per service and version (only grows). */
  connectionsDrainedByService(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {};
    for (const s of this.services) {
      const o: Record<string, number> = {};
      for (const v of s.versions) o[v.name] = this.statsOf(s.name, v.name).connectionsDrained;
      out[s.name] = o;
    }
    return out;
  }

  /** Set by the primary of `gateway.workers`: asks every worker (after the state sent
   * before it) and resolves when none has a request of the version in flight. */
  remoteIdle: ((service: string, version: string) => Promise<void>) | undefined;

  /** The state a data-plane worker mirrors (see importState). */
  exportState(): ReplicatedState {
    const versions: ReplicatedState['versions'] = [];
    for (const s of this.services) {
      for (const v of s.versions) {
        const eps = this.endpoints.get(vkey(s.name, v.name));
        if (eps === undefined) continue;
        versions.push({
          service: s.name,
          version: v.name,
          endpoints: [...eps.values()].map((e) => ({
            address: e.address,
            healthy: e.healthy,
            probePending: e.probePending,
            ejectedUntil: e.ejectedUntil,
            draining: e.draining,
            availableSince: e.availableSince,
          })),
        });
      }
    }
    const now = Date.now();
    return { weights: [...this.weights], mirrors: [...this.mirrors], versions, drains: this.drains.filter((d) => d.until > now).map((d) => d.order) };
  }

  /** A worker applies the primary's state (and its config when it changed): the same
   * endpoint sets (new ones get pools, removed ones drain), the primary's health,
   * ejection and drain flags, its runtime weights; then one snapshot. */
  importState(state: ReplicatedState, config?: Config): void {
    if (config !== undefined) this.applyConfig(config);
    this.weights = new Map(state.weights);
    this.mirrors = new Map(state.mirrors ?? []);
    for (const v of state.versions) {
      if (!this.service(v.service)?.versions.some((x) => x.name === v.version)) continue;
      this.setEndpoints(v.service, v.version, v.endpoints.map((e) => e.address));
      const eps = this.endpoints.get(vkey(v.service, v.version));
      for (const r of v.endpoints) {
        const e = eps?.get(r.address.id);
        if (e === undefined) continue;
        e.healthy = r.healthy;
        e.probePending = r.probePending;
        e.ejectedUntil = r.ejectedUntil;
        e.availableSince = r.availableSince;
        if (r.draining && !e.draining) {
          e.draining = true;
          this.closeWhenIdle(e);
        }
      }
    }
    this.rebuild();
    // After the weights: a client that reconnects at once lands on the new version.
    for (const order of state.drains ?? []) this.drainConnections(order);
  }

  /** Every endpoint of a version (listed ones; not the retiring). */
  endpointsOf(service: string, version: string): Endpoint[] {
    const eps = this.endpoints.get(vkey(service, version));
    return eps === undefined ? [] : [...eps.values()];
  }

  /** Listed endpoints and the retiring ones still finishing requests (what in-flight
   * counts are kept on). */
  endpointsWithRetiring(): Endpoint[] {
    return [...this.allEndpoints(), ...this.retiring];
  }

  /** A version's counters by version key, if the snapshot ever had the version. */
  existingStats(key: string): VersionStats | undefined {
    return this.stats.get(key);
  }

  /** Every version's counters, also of versions a reload removed. */
  allStats(): VersionStats[] {
    return [...this.stats.values()];
  }

  allEndpoints(): Endpoint[] {
    const out: Endpoint[] = [];
    for (const eps of this.endpoints.values()) out.push(...eps.values());
    return out;
  }

  /** Health and ejection call this when an endpoint's availability changes. Several
   * changes in one tick are folded into one rebuild. */
  availabilityChanged(e?: Endpoint): void {
    if (e !== undefined && e.available) e.availableSince = Date.now();
    if (this.rebuildQueued) return;
    this.rebuildQueued = true;
    queueMicrotask(() => {
      this.rebuildQueued = false;
      this.rebuild();
    });
  }

  rebuild(): void {
    if (this.closed) return;
    const snap = buildSnapshot({
      services: this.services,
      weights: this.weights,
      endpointsOf: (s, v) => this.endpointsOf(s, v),
      statsOf: (s, v) => this.statsOf(s, v),
      mirrorOf: (s) => this.mirrorOf(s),
      mirrorStatsOf: (s, v) => this.mirrorStatsOf(s, v),
    });
    this.holder.swap(snap);
    for (const fn of this.listeners) fn(snap);
  }

  /** Calls fn after every snapshot swap (health checking follows the endpoint set). */
  subscribe(fn: (snap: Snapshot) => void): void {
    this.listeners.push(fn);
    fn(this.holder.current);
  }

  /** The first discovery snapshot has been applied. */
  markStarted(): void {
    this.started = true;
  }

  /** Total in-flight requests, all services. */
  inflight(): number {
    let n = 0;
    for (const s of this.stats.values()) n += s.inflight;
    return n;
  }

  /** Requests in flight per version of one service. */
  inflightOf(service: string): Record<string, number> {
    const out: Record<string, number> = {};
    for (const v of this.service(service)?.versions ?? []) out[v.name] = this.statsOf(service, v.name).inflight;
    return out;
  }

  /** Counts every request in flight now as cut: called at the moment a shutdown (or a
   * close) is about to end them without an answer. */
  markCut(): void {
    for (const s of this.stats.values()) s.cut += s.inflight;
  }

  /** Requests cut so far per service and version (see VersionStats.cut). */
  cutByService(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {};
    for (const s of this.services) {
      const o: Record<string, number> = {};
      for (const v of s.versions) o[v.name] = this.statsOf(s.name, v.name).cut;
      out[s.name] = o;
    }
    return out;
  }

  /** Requests in flight per service and version (what a fleet replica reports). */
  inflightByService(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {};
    for (const s of this.services) out[s.name] = this.inflightOf(s.name);
    return out;
  }

  /** Closes every pool: gracefully (waiting for in-flight requests), or at once. */
  async close(force = false): Promise<void> {
    this.closed = true;
    const all = [...this.allEndpoints(), ...this.retiring];
    await Promise.all(all.map((e) => e.closePool(force)));
  }
}

// Mutable per-endpoint state. It lives beside the snapshot, keyed by endpoint key, so
// in-flight counts, failure counters, ejection and drain survive every snapshot swap
// (the shape of Caddy's hosts pool). The snapshot only holds references to these.

import { isIP } from 'node:net';
import { buildConnector, type Dispatcher } from 'undici';
import type { EndpointAddress, VersionConfig } from '../config/types.js';
import { WindowCounters } from './stats.js';
import { H2Upstream } from './h2upstream.js';
import { H1Pool } from './h1/pool.js';
import { afterWrites } from './h1/batch.js';

export interface PoolOptions {
  maxConnections: number;
  idleTimeoutMs: number;
  connectTimeoutMs: number;
  /** For an https endpoint: how its TLS connections are made and verified. */
  tls?: UpstreamTlsOptions;
  /** services.NAME.protocol: http1 through the H1Pool, h2c/h2 through HTTP/2 sessions. */
  protocol?: UpstreamProtocol;
}

export type UpstreamProtocol = 'http1' | 'h2c' | 'h2';

/** What an Exchange dispatches a request on: the HTTP/1.1 pool or the HTTP/2 sessions
 * (both take undici's dispatch options and handler). */
export interface UpstreamDispatcher {
  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean;
}

/** tls.connect options of an https upstream (undici's `connect`). */
export interface UpstreamTlsOptions {
  /** PEM CA bundle; the system CAs when absent. */
  ca?: string;
  /** SNI and the name the certificate must carry; the endpoint's host name when absent. */
  servername?: string;
  rejectUnauthorized: boolean;
}

/**
 * The TLS options of an endpoint of a version (undefined for plain http). The name
 * sent as SNI and verified: tls.servername; else the DNS name the endpoint was
 * discovered under; else, for an endpoint given as an IP address, the version's
 * hostHeader (without port); else the endpoint's host name. An IP endpoint with none of
 * these sends no SNI and is verified against its IP address. Never the client's Host.
 */
export function upstreamTlsOptions(address: EndpointAddress, tls: VersionConfig['tls'], hostHeader?: string): UpstreamTlsOptions | undefined {
  if (address.protocol !== 'https') return undefined;
  let servername = tls?.servername ?? address.tlsName;
  if (servername === undefined && isIP(address.host) !== 0 && hostHeader !== undefined && !hostHeader.startsWith('[')) {
    const name = hostHeader.replace(/:\d+$/, '');
    if (isIP(name) === 0) servername = name;
  }
  if (servername === undefined && isIP(address.host) === 0) servername = address.host;
  return {
    ...(tls?.caPem === undefined ? {} : { ca: tls.caPem }),
    ...(servername === undefined ? {} : { servername }),
    rejectUnauthorized: tls?.verify ?? true,
  };
}

/**
 * undici's connector for an https endpoint with the servername pinned (health probes;
 * the H1Pool pins it itself). undici otherwise
 * takes each request's Host header as SNI and verification name (and drops the
 * connection whenever it differs from the last one): a client could choose the name the
 * gateway verifies. Here the endpoint's name is used whatever the request carries.
 */
export function tlsConnector(tls: UpstreamTlsOptions, timeoutMs?: number): buildConnector.connector {
  const { servername, ...rest } = tls;
  const base = buildConnector({ ...rest, ...(timeoutMs === undefined ? {} : { timeout: timeoutMs }) });
  return (opts, cb) => base({ ...opts, servername }, cb);
}

/** A key that changes whenever the TLS options do (a reload re-creates the pools). */
export function tlsKey(o: UpstreamTlsOptions | undefined): string {
  return o === undefined ? '' : JSON.stringify([o.ca ?? '', o.servername ?? '', o.rejectUnauthorized]);
}

/** Per-version counters that outlive snapshots (the control plane waits on them). */
/** Where a version's per-request figures go besides the window (the Prometheus
 * children, prepared once per version when the snapshot is built). */
export interface VersionMetricsSink {
  /** @param grpcStatus the grpc-status of a gRPC call, -1 for other requests */
  request(status: number, seconds: number, retries: number, grpcStatus?: number): void;
  upstream(seconds: number, failure: string | undefined): void;
  ejected(): void;
}

export class VersionStats {
  inflight = 0;
  /** Requests of this version that ended by being cut, not finished: in flight when a
   * shutdown's grace ran out, or on a data-plane worker that died. Only ever grows;
   * `cutover --wait` compares it before and after (a cut request is not drained). */
  cut = 0;
  /** Long-lived connections of this version (WebSocket tunnels, HTTP/2 sessions,
   * keep-alive connections) that a connection drain has chosen and that have not closed
   * yet. `cutover --wait` waits for them as for requests in flight. */
  closing = 0;
  /** Connections a drain closed (moved off this version) so far; only ever grows. */
  connectionsDrained = 0;
  metrics: VersionMetricsSink | undefined;
  /** Requests, errors and latency per second (rollout analysis, dashboard). */
  readonly window = new WindowCounters();
  /** Resolvers waiting for inflight to reach zero. */
  private idleWaiters: (() => void)[] = [];

  constructor(readonly service: string, readonly version: string) {}

  dec(): void {
    this.inflight--;
    if (this.inflight === 0 && this.closing === 0 && this.idleWaiters.length) this.wake();
  }

  /** The count as data-plane workers report it (the primary of `gateway.workers`
   * serves no traffic itself). */
  setInflight(n: number, closing = this.closing): void {
    this.inflight = n;
    this.closing = closing;
    if (n === 0 && closing === 0 && this.idleWaiters.length) this.wake();
  }

  /** A connection chosen by a drain closed. */
  connectionClosed(): void {
    this.closing--;
    this.connectionsDrained++;
    if (this.inflight === 0 && this.closing === 0 && this.idleWaiters.length) this.wake();
  }

  private wake(): void {
    const w = this.idleWaiters;
    this.idleWaiters = [];
    // (Once the last responses' bytes are out: see afterWrites.)
    afterWrites(() => {
      for (const fn of w) fn();
    });
  }

  /** Resolves when nothing of this version is in flight and no connection a drain
   * chose is still open (at once when idle). */
  whenIdle(): Promise<void> {
    if (this.inflight === 0 && this.closing === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}

export type EndpointState = 'healthy' | 'unhealthy' | 'ejected' | 'draining';

export class Endpoint {
  readonly key: string;
  /** Created on first use: ~18 KB of heap each, so 10,000 listed endpoints that take no
   * traffic (an idle version) cost nothing. */
  private poolInstance: H1Pool | undefined;
  private h2Instance: H2Upstream | undefined;
  private readonly poolOptions: PoolOptions;
  readonly protocol: UpstreamProtocol;
  /** TLS options of an https endpoint (health probes and WebSockets use them too). */
  readonly tls: UpstreamTlsOptions | undefined;
  inflight = 0;

  /** Result of active health checks; true until probes say otherwise. */
  healthy = true;
  /** Waiting for its first passing probe (added after start, or back from ejection). */
  probePending = false;
  /** Passive outlier detection. */
  ejectedUntil = 0;
  ejectionCount = 0;
  consecutive5xx = 0;
  consecutiveGatewayErrors = 0;
  /** No new requests; in-flight ones finish. Set by discovery removal or the drain API. */
  draining = false;
  /** When the endpoint last became available (slow start ramps from here). */
  availableSince = 0;
  /** Whether discovery currently lists this endpoint. */
  listed = true;

  private idleWaiters: (() => void)[] = [];

  constructor(
    readonly service: string,
    readonly version: string,
    readonly address: EndpointAddress,
    readonly stats: VersionStats,
    opts: PoolOptions,
  ) {
    this.key = endpointKey(service, version, address.id);
    this.tls = address.protocol === 'https' ? (opts.tls ?? { rejectUnauthorized: true }) : undefined;
    this.poolOptions = opts;
    this.protocol = opts.protocol ?? 'http1';
  }

  get pool(): H1Pool {
    return (this.poolInstance ??= this.createPool());
  }

  /** Where requests go: the HTTP/1.1 pool, or the HTTP/2 sessions (protocol h2c/h2). */
  get dispatcher(): UpstreamDispatcher {
    if (this.protocol === 'http1') return this.pool;
    return (this.h2Instance ??= this.createH2());
  }

  /** The HTTP/2 sessions, if any were opened. */
  get h2(): H2Upstream | undefined {
    return this.h2Instance;
  }

  private createH2(): H2Upstream {
    return new H2Upstream({
      origin: this.address.origin,
      tls: this.tls,
      connectTimeoutMs: this.poolOptions.connectTimeoutMs,
      idleTimeoutMs: this.poolOptions.idleTimeoutMs,
      // A few sessions, each multiplexing up to the peer's stream limit.
      maxSessions: Math.max(1, Math.min(4, this.poolOptions.maxConnections)),
    });
  }

  /** Mirror copies (gateway/mirror.ts) go on connections of their own, in the
   * endpoint's protocol: a hung mirror target holds none of the connections served
   * requests use. Created on first use. */
  private mirrorPoolInstance: H1Pool | undefined;
  private mirrorH2Instance: H2Upstream | undefined;
  get mirrorDispatcher(): UpstreamDispatcher {
    if (this.protocol === 'http1') return (this.mirrorPoolInstance ??= this.createPool());
    return (this.mirrorH2Instance ??= this.createH2());
  }

  /** Closes the pools if any was ever created (destroy cuts open requests). HTTP/2
   * sessions get a GOAWAY (their streams finish) or are cut. */
  async closePool(force = false): Promise<void> {
    // Copies are never waited for: they are cut at once.
    const m = this.mirrorPoolInstance;
    if (m !== undefined) await m.destroy().catch(() => {});
    const mh = this.mirrorH2Instance;
    if (mh !== undefined) await mh.destroy();
    const h = this.h2Instance;
    if (h !== undefined) await (force ? h.destroy() : h.close());
    const p = this.poolInstance;
    if (p === undefined) return;
    await (force ? p.destroy() : p.close()).catch(() => {});
  }

  private createPool(): H1Pool {
    const opts = this.poolOptions;
    // The pool pins the TLS servername to the endpoint's (tls.servername, else its host
    // name): a client's Host header never chooses the name that is verified, and never
    // churns the TLS connections.
    return new H1Pool(this.address.origin, {
      connections: opts.maxConnections,
      idleTimeoutMs: opts.idleTimeoutMs,
      connectTimeoutMs: opts.connectTimeoutMs,
      ...(this.tls === undefined ? {} : { tls: this.tls }),
    });
  }

  get id(): string {
    return this.address.id;
  }

  get ejected(): boolean {
    return this.ejectedUntil !== 0;
  }

  get available(): boolean {
    return this.healthy && this.ejectedUntil === 0 && !this.draining;
  }

  get state(): EndpointState {
    if (this.draining) return 'draining';
    if (this.ejectedUntil !== 0) return 'ejected';
    return this.healthy ? 'healthy' : 'unhealthy';
  }

  begin(): void {
    this.inflight++;
    this.stats.inflight++;
  }

  end(): void {
    this.inflight--;
    this.stats.dec();
    if (this.inflight === 0 && this.idleWaiters.length) this.wake();
  }

  private wake(): void {
    const w = this.idleWaiters;
    this.idleWaiters = [];
    // (Once the last response's bytes are out: see afterWrites.)
    afterWrites(() => {
      for (const fn of w) fn();
    });
  }

  whenIdle(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** The count as data-plane workers report it (see VersionStats.setInflight). */
  setInflight(n: number): void {
    this.inflight = n;
    if (n === 0 && this.idleWaiters.length) this.wake();
  }
}

export function endpointKey(service: string, version: string, id: string): string {
  return `${service}\u0000${version}\u0000${id}`;
}

// The Consul provider: follows `/v1/health/service/:service?passing` for every service
// (and tag) that a version names, with blocking queries, and turns the answers into
// endpoint sets. A service or node in maintenance, or an instance with a critical (or
// warning) check, is not "passing", so it simply leaves the set and the data plane
// drains it (in-flight requests finish).
//
// Stale but safe: while Consul cannot be reached the last snapshot keeps serving; the
// provider retries with jittered exponential backoff and reports how stale it is. One
// more guard: when Consul's index goes backwards (Consul came back with fresh state, or
// a snapshot was restored) and a version that had endpoints is now listed empty, the
// last endpoints are kept for `resetGrace` while services re-register.
//
// Talks to Consul's HTTP API directly with undici (already the data plane's client):
// blocking queries need the X-Consul-Index header of each answer and cancellation by
// AbortSignal, which undici gives as plain request options.
//
// Also here: ConsulRegistration, the gateway registering itself (optional).

import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { isAbsolute, resolve } from 'node:path';
import { Agent, request } from 'undici';
import type { Logger } from 'pino';
import type { Config, ConsulConfig, EndpointAddress, VersionConfig } from '../config/types.js';
import { backoffMs, pause, WatchingProvider, type FollowedVersion, type VersionAnswer, type WantedWatch } from './provider.js';

/** No two queries of one watch start closer than this (a guard against hot loops). */
const MIN_QUERY_GAP_MS = 20;
/** Timeout of a non-blocking query, and of agent writes. */
const REQUEST_TIMEOUT_MS = 10_000;
/** Keep a version's endpoints this long when a Consul reset (index going backwards)
 * lists it empty. */
export const RESET_GRACE_MS = 30_000;

type ConsulSource = Extract<VersionConfig['source'], { kind: 'consul' }>;

/** One passing service instance, reduced to what routing needs. */
export interface ConsulInstance {
  /** Consul service instance id. */
  serviceId: string;
  node: string;
  host: string;
  port: number;
  tags: string[];
  meta: Record<string, string>;
}

export class ConsulError extends Error {
  constructor(message: string, readonly status?: number) {
    super(message);
    this.name = 'ConsulError';
  }
}

/** A minimal client of Consul's HTTP API. */
export class ConsulClient {
  private readonly dispatcher: Agent;

  constructor(readonly cfg: ConsulConfig, baseDir = process.cwd()) {
    let ca: string | undefined;
    if (cfg.ca !== undefined) ca = readFileSync(isAbsolute(cfg.ca) ? cfg.ca : resolve(baseDir, cfg.ca), 'utf8');
    this.dispatcher = new Agent({ connect: ca === undefined ? {} : { ca }, keepAliveTimeout: 30_000, keepAliveMaxTimeout: 60_000 });
  }

  private headers(): Record<string, string> {
    return this.cfg.token ? { 'x-consul-token': this.cfg.token } : {};
  }

  /** One read of the passing instances of a service; blocking when index > 0. */
  async healthService(service: string, opts: { tag?: string; index?: number; signal?: AbortSignal }): Promise<{ index: number; instances: ConsulInstance[] }> {
    const q = new URLSearchParams();
    q.set('passing', '1');
    if (opts.tag !== undefined) q.set('tag', opts.tag);
    if (this.cfg.datacenter !== undefined) q.set('dc', this.cfg.datacenter);
    if (this.cfg.stale) q.set('stale', '');
    const blocking = opts.index !== undefined && opts.index > 0;
    if (blocking) {
      q.set('index', String(opts.index));
      q.set('wait', `${Math.round(this.cfg.waitMs / 1000)}s`);
    }
    // Consul adds up to wait/16 to a blocking query; the margin covers a slow answer.
    const timeout = blocking ? this.cfg.waitMs + this.cfg.waitMs / 16 + 5000 : REQUEST_TIMEOUT_MS;
    const res = await request(`${this.cfg.address}/v1/health/service/${encodeURIComponent(service)}?${q}`, {
      method: 'GET',
      headers: this.headers(),
      dispatcher: this.dispatcher,
      signal: opts.signal,
      headersTimeout: timeout,
      bodyTimeout: REQUEST_TIMEOUT_MS,
    });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new ConsulError(`GET /v1/health/service/${service}: ${res.statusCode} ${text.trim().slice(0, 200)}`, res.statusCode);
    const index = Number(res.headers['x-consul-index']);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new ConsulError(`GET /v1/health/service/${service}: the answer is not JSON`);
    }
    if (!Array.isArray(body)) throw new ConsulError(`GET /v1/health/service/${service}: the answer is not a list`);
    return { index: Number.isFinite(index) ? index : 0, instances: body.map(toInstance).filter((i): i is ConsulInstance => i !== undefined) };
  }

  /** An agent write (PUT); throws on anything but 200. */
  async put(path: string, body?: unknown, signal?: AbortSignal): Promise<void> {
    const res = await request(`${this.cfg.address}${path}`, {
      method: 'PUT',
      headers: { ...this.headers(), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      dispatcher: this.dispatcher,
      signal: signal ?? AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      headersTimeout: REQUEST_TIMEOUT_MS,
      bodyTimeout: REQUEST_TIMEOUT_MS,
    });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new ConsulError(`PUT ${path.split('?')[0]}: ${res.statusCode} ${text.trim().slice(0, 200)}`, res.statusCode);
  }

  /** GET returning the status code only (200/404). */
  async exists(path: string, signal?: AbortSignal): Promise<boolean> {
    const res = await request(`${this.cfg.address}${path}`, {
      method: 'GET',
      headers: this.headers(),
      dispatcher: this.dispatcher,
      signal: signal ?? AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      headersTimeout: REQUEST_TIMEOUT_MS,
      bodyTimeout: REQUEST_TIMEOUT_MS,
    });
    const text = await res.body.text();
    if (res.statusCode === 404) return false;
    if (res.statusCode !== 200) throw new ConsulError(`GET ${path}: ${res.statusCode} ${text.trim().slice(0, 200)}`, res.statusCode);
    return true;
  }

  async close(): Promise<void> {
    await this.dispatcher.destroy().catch(() => {});
  }
}

/* eslint-disable @typescript-eslint/no-explicit-any */
function toInstance(e: any): ConsulInstance | undefined {
  const svc = e?.Service;
  if (svc === undefined || svc === null || typeof svc.ID !== 'string') return undefined;
  const host = String(svc.Address || e?.Node?.Address || '');
  const port = Number(svc.Port);
  if (host === '' || !Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  return {
    serviceId: svc.ID,
    node: String(e?.Node?.Node ?? ''),
    host,
    port,
    tags: Array.isArray(svc.Tags) ? svc.Tags.map(String) : [],
    meta: svc.Meta !== null && typeof svc.Meta === 'object' ? Object.fromEntries(Object.entries(svc.Meta).map(([k, v]) => [k, String(v)])) : {},
  };
}
/* eslint-enable @typescript-eslint/no-explicit-any */

/** The endpoint of an instance; its id (service id + address) is stable across updates. */
export function instanceEndpoint(i: ConsulInstance): EndpointAddress {
  const hostPort = i.host.includes(':') ? `[${i.host}]:${i.port}` : `${i.host}:${i.port}`;
  return { id: `${i.serviceId}@${hostPort}`, protocol: 'http', host: i.host, port: i.port, origin: `http://${hostPort}` };
}

/** The endpoints of a version: instances carrying its tag and every meta pair. */
export function endpointsFor(instances: readonly ConsulInstance[], src: ConsulSource): EndpointAddress[] {
  const byId = new Map<string, EndpointAddress>();
  for (const i of instances) {
    if (src.tag !== undefined && !i.tags.includes(src.tag)) continue;
    if (src.meta !== undefined && !Object.entries(src.meta).every(([k, v]) => i.meta[k] === v)) continue;
    const ep = instanceEndpoint(i);
    byId.set(ep.id, ep);
  }
  return [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

function watchKey(src: ConsulSource): string {
  return src.tag === undefined ? src.service : `${src.service}\u0000${src.tag}`;
}

function signature(instances: readonly ConsulInstance[]): string {
  const norm = instances
    .map((i) => [i.serviceId, i.node, i.host, i.port, [...i.tags].sort(), Object.entries(i.meta).sort()])
    .map((x) => JSON.stringify(x))
    .sort();
  return norm.join('\n');
}

/** Follows one Consul query (a service, optionally one tag) with blocking reads. */
class Watch {
  /** Passing instances from the last good answer (undefined before the first). */
  instances: ConsulInstance[] | undefined;
  sig = '';
  /** Last X-Consul-Index seen. */
  lastIndex = 0;
  /** Errors in a row. */
  errors = 0;
  lastError: string | undefined;
  /** When the current run of failures began (undefined while following). */
  failingSince: number | undefined;
  /** When the last good answer arrived. */
  okAt: number | undefined;
  /** When Consul's index last went backwards. */
  resetAt: number | undefined;
  resets = 0;
  readonly createdAt = Date.now();
  private readonly abort = new AbortController();

  constructor(
    readonly service: string,
    readonly tag: string | undefined,
    private readonly client: ConsulClient,
    private readonly log: Logger,
    private readonly changed: () => void,
  ) {}

  get label(): string {
    return this.tag === undefined ? this.service : `${this.service} (tag ${this.tag})`;
  }

  stop(): void {
    this.abort.abort();
  }

  get answered(): boolean {
    return this.instances !== undefined;
  }

  /** Seconds since this watch last knew its view was current (0 while following). */
  staleness(now: number): number {
    if (this.okAt === undefined) return (now - this.createdAt) / 1000;
    if (this.failingSince === undefined) return 0;
    return (now - this.failingSince) / 1000;
  }

  async run(): Promise<void> {
    const signal = this.abort.signal;
    // The index of the next query: 0 = a non-blocking read of the current state.
    let index = 0;
    let lastStart = 0;
    while (!signal.aborted) {
      const gap = lastStart + MIN_QUERY_GAP_MS - Date.now();
      if (gap > 0 && !(await pause(gap, signal))) return;
      lastStart = Date.now();
      try {
        const r = await this.client.healthService(this.service, { tag: this.tag, index, signal });
        if (signal.aborted) return;
        let next = r.index > 0 ? r.index : 1; // never 0: a 0 index would not block
        if (r.index < this.lastIndex) {
          // Consul's state went back in time (restarted with fresh state, or restored):
          // take this full answer, and re-read without blocking to resync.
          this.resets++;
          this.resetAt = Date.now();
          this.log.warn({ service: this.service, tag: this.tag, index: r.index, previous: this.lastIndex }, 'consul: index went backwards (Consul reset or restored); resyncing');
          next = 0;
        }
        this.lastIndex = r.index;
        index = next;
        if (this.failingSince !== undefined) {
          this.log.info({ service: this.service, tag: this.tag, failedFor: (Date.now() - this.failingSince) / 1000 }, 'consul: reachable again');
        }
        this.errors = 0;
        this.failingSince = undefined;
        this.lastError = undefined;
        this.okAt = Date.now();
        const sig = signature(r.instances);
        if (this.instances === undefined || sig !== this.sig) {
          this.instances = r.instances;
          this.sig = sig;
          this.changed();
        }
      } catch (err) {
        if (signal.aborted) return;
        this.errors++;
        this.lastError = String((err as Error).message ?? err);
        const now = Date.now();
        if (this.failingSince === undefined) {
          this.failingSince = now;
          this.log.warn({ service: this.service, tag: this.tag, err: this.lastError }, 'consul: query failed; the last snapshot keeps serving');
        } else {
          this.log.debug({ service: this.service, tag: this.tag, err: this.lastError, errors: this.errors }, 'consul: query failed again');
        }
        // After a failure, read without blocking: a Consul that came back (perhaps with
        // fresh state) is re-read at once rather than after a whole wait.
        index = 0;
        if (!(await pause(backoffMs(this.errors), signal))) return;
      }
    }
  }
}

export interface ConsulProviderOptions {
  config: Config;
  log: Logger;
  /** Directory a relative discovery.consul.ca is resolved against (the config file's). */
  baseDir?: string;
  /** How long a reset keeps a version's endpoints when Consul lists it empty. */
  resetGraceMs?: number;
}

export interface ConsulStatus {
  address: string;
  ready: boolean;
  stalenessSeconds: number;
  watches: { service: string; tag?: string; index: number; instances: number; errors: number; lastError?: string; resets: number }[];
}

interface ConsulVersion extends FollowedVersion {
  src: ConsulSource;
}

export class ConsulProvider extends WatchingProvider<Watch, ConsulVersion> {
  readonly name = 'consul';
  private config: Config;
  protected readonly log: Logger;
  protected readonly messages = {
    changed: 'consul: endpoints changed',
    held: 'consul: Consul was reset and lists no instance of this version; keeping the last endpoints for now',
    resumed: 'consul: the version is listed again after the reset; the hold ends',
    expired: 'consul: the version stayed unlisted for resetGrace after the reset; it has no endpoints now',
  };
  private readonly baseDir: string;
  private readonly resetGraceMs: number;
  private client: ConsulClient | undefined;
  private clientKey = '';

  constructor(opts: ConsulProviderOptions) {
    super();
    this.config = opts.config;
    this.log = opts.log;
    this.baseDir = opts.baseDir ?? process.cwd();
    this.resetGraceMs = opts.resetGraceMs ?? RESET_GRACE_MS;
  }

  update(config: Config): void {
    this.config = config;
    try {
      this.follow();
    } catch (err) {
      // A CA file that cannot be read: the queries already running keep going.
      this.log.error({ err: String((err as Error).message ?? err) }, 'consul: cannot apply the new discovery.consul settings; still following with the previous ones');
    }
    // Meta filters or versions may have changed with the same queries.
    this.scheduleEmit();
  }

  override async close(): Promise<void> {
    await super.close();
    await this.client?.close();
    this.client = undefined;
  }

  status(): ConsulStatus | undefined {
    const c = this.config.discovery.consul;
    if (c === undefined) return undefined;
    return {
      address: c.address,
      ready: this.ready,
      stalenessSeconds: this.staleness() ?? 0,
      watches: [...this.watches.values()].map((w) => ({
        service: w.service,
        ...(w.tag === undefined ? {} : { tag: w.tag }),
        index: w.lastIndex,
        instances: w.instances?.length ?? 0,
        errors: w.errors,
        ...(w.lastError === undefined ? {} : { lastError: w.lastError }),
        resets: w.resets,
      })),
    };
  }

  protected followed(): ConsulVersion[] {
    const out: ConsulVersion[] = [];
    for (const s of this.config.services) {
      for (const v of s.versions) if (v.source.kind === 'consul') out.push({ service: s.name, version: v.name, key: watchKey(v.source), src: v.source });
    }
    return out;
  }

  /** New connection settings first: every query starts over with the new client (made
   * before the old one goes: a CA file that cannot be read leaves the running queries
   * alone); then the watches follow the config. */
  protected override follow(): void {
    if (this.closed) return;
    const c = this.config.discovery.consul;
    const key = c === undefined ? '' : JSON.stringify([c.address, c.token, c.datacenter, c.ca, c.stale, c.waitMs]);
    if (key !== this.clientKey) {
      const next = c === undefined ? undefined : new ConsulClient(c, this.baseDir);
      this.stopWatches();
      void this.client?.close();
      this.client = next;
      this.clientKey = key;
    }
    super.follow();
  }

  /** One blocking query per Consul service and tag. */
  protected wanted(): Map<string, WantedWatch<Watch>> {
    const want = new Map<string, WantedWatch<Watch>>();
    const client = this.client;
    if (client === undefined) return want;
    for (const { key, src } of this.followed()) want.set(key, { create: () => new Watch(src.service, src.tag, client, this.log, () => this.scheduleEmit()) });
    return want;
  }

  protected answer({ src }: ConsulVersion, w: Watch): VersionAnswer | undefined {
    if (w.instances === undefined) return undefined;
    const endpoints = endpointsFor(w.instances, src);
    return {
      endpoints,
      sig: endpoints.map((e) => e.id).join('\n'),
      // Consul was reset and does not list this version (yet): the last endpoints stay
      // while services re-register, for at most resetGrace.
      ...(w.resetAt === undefined ? {} : { hold: { since: w.resetAt, graceMs: this.resetGraceMs } }),
    };
  }
}

/**
 * The gateway registering itself with the local Consul agent: one service instance with
 * an HTTP check on the admin /ready, so Consul stops listing it as soon as shutdown
 * begins. Registration is retried in the background until it succeeds, and re-done if
 * the agent forgets it (a restarted dev agent); deregistration is the first step of
 * shutdown.
 */
export class ConsulRegistration {
  readonly id: string;
  private readonly client: ConsulClient;
  private readonly abort = new AbortController();
  private registered = false;
  private deregistered = false;
  private readonly body: Record<string, unknown>;

  constructor(
    cfg: ConsulConfig,
    addrs: { gateway: { address: string; port: number }; admin: { address: string; port: number } },
    private readonly log: Logger,
    baseDir?: string,
  ) {
    const reg = cfg.register!;
    this.client = new ConsulClient(cfg, baseDir);
    const wildcard = (h: string): boolean => h === '0.0.0.0' || h === '::' || h === '';
    const port = reg.port ?? addrs.gateway.port;
    const address = reg.address ?? (wildcard(addrs.gateway.address) ? undefined : addrs.gateway.address);
    this.id = reg.id ?? `${reg.name}-${hostname()}-${port}`;
    const adminHost = wildcard(addrs.admin.address) ? '127.0.0.1' : addrs.admin.address;
    const adminUrlHost = adminHost.includes(':') ? `[${adminHost}]` : adminHost;
    this.body = {
      ID: this.id,
      Name: reg.name,
      Tags: reg.tags,
      ...(address === undefined ? {} : { Address: address }),
      Port: port,
      Meta: { gateway: 'switchyard' },
      Check: {
        CheckID: `${this.id}:ready`,
        Name: 'switchyard /ready',
        HTTP: `http://${adminUrlHost}:${addrs.admin.port}/ready`,
        Method: 'GET',
        Interval: `${reg.checkIntervalMs}ms`,
        Timeout: `${reg.checkTimeoutMs}ms`,
      },
    };
  }

  /** Registers now and keeps it registered (in the background) until deregister(). */
  start(): void {
    void this.keep();
  }

  private async keep(): Promise<void> {
    const signal = this.abort.signal;
    let errors = 0;
    while (!signal.aborted) {
      try {
        if (!this.registered || !(await this.client.exists(`/v1/agent/service/${encodeURIComponent(this.id)}`))) {
          if (signal.aborted) return;
          await this.client.put('/v1/agent/service/register', this.body);
          if (signal.aborted) return;
          this.log.info({ id: this.id, name: this.body.Name }, this.registered ? 'consul: registered again (the agent had lost the registration)' : 'consul: registered the gateway');
          this.registered = true;
        }
        errors = 0;
        if (!(await pause(30_000, signal))) return;
      } catch (err) {
        if (signal.aborted) return;
        errors++;
        if (errors === 1) this.log.warn({ id: this.id, err: String((err as Error).message ?? err) }, 'consul: registration failed; retrying');
        if (!(await pause(backoffMs(errors), signal))) return;
      }
    }
  }

  /** Deregisters (bounded by timeoutMs); idempotent; never throws. */
  async deregister(timeoutMs = 2000): Promise<void> {
    if (this.deregistered) return;
    this.deregistered = true;
    this.abort.abort();
    try {
      await this.client.put(`/v1/agent/service/deregister/${encodeURIComponent(this.id)}`, undefined, AbortSignal.timeout(timeoutMs));
      this.log.info({ id: this.id }, 'consul: deregistered the gateway');
    } catch (err) {
      this.log.warn({ id: this.id, err: String((err as Error).message ?? err) }, 'consul: deregistration failed');
    } finally {
      await this.client.close();
    }
  }
}

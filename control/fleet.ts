// The fleet: what replicas sharing one Redis tell each other besides the desired state.
//
// - Registry: every replica writes P:replica:<id> (its addresses, applied revision and
//   per-version in-flight counts) every heartbeatMs with a TTL of ttlMs; GET /v1/replicas
//   lists the live ones, and `wait` calls poll them. A replica that closes leaves a last
//   record marked `gone` (its final in-flight and cut counts) to age out, rather than
//   vanishing: a drain wait must learn that its requests were cut. Each replica also
//   remembers the replicas it has seen (`known`), so a registry that is empty for a
//   moment (Redis restarted empty) is never read as "nobody is serving": a replica counts
//   as dead only once successful scans have missed it for a whole TTL.
// - Traffic counters: every completed second of each version's local window is added
//   into P:stats:<service>:<version>:<epoch second> (HINCRBY, expiring after 15 min), so
//   rollout analysis sees the whole fleet's requests, errors and latency histogram. Each
//   replica's record says up to which second it has published (`published`); analysis
//   reads only seconds every live replica has published (completeThrough).
// - Rollout leases: P:lease:<service> holds "<replica>:<token>" with a TTL; the token is
//   a fleet-wide counter (P:fence), and every state write of the driver is fenced on it,
//   so a driver that lost its lease (paused, partitioned) can never apply a step.
//
// The single-process stores use LocalFleet: one replica, local counters, always leader.

import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Redis } from 'ioredis';
import type { Dataplane } from '../gateway/dataplane.js';
import { NB, summarize, type WindowSummary } from '../gateway/stats.js';

export interface ReplicaInfo {
  id: string;
  addresses: Record<string, string>;
  revision: number;
  /** service → version → requests in flight on this replica. */
  inflight: Record<string, Record<string, number>>;
  startedAt: string;
  at: number;
  /** service → version → requests cut (not finished) on this replica so far; only grows.
   * (Optional: replicas of an older release do not send it.) */
  cut?: Record<string, Record<string, number>>;
  /** service → version → connections a connection drain chose on this replica that are
   * still open (a drain wait waits for them as for requests in flight). */
  closing?: Record<string, Record<string, number>>;
  /** service → version → connections closed by drains on this replica so far. */
  connectionsDrained?: Record<string, Record<string, number>>;
  /** The newest epoch second whose traffic counts this replica has published. */
  published?: number;
  /** Its last record, written as it closed: it serves nothing more. */
  gone?: boolean;
}

export interface Fleet {
  readonly id: string;
  readonly shared: boolean;
  /** The live replicas (this one included). */
  replicas(): Promise<ReplicaInfo[]>;
  /** One scan of the registry: every record, `gone` ones included; updates `known`. */
  observe(): Promise<ReplicaInfo[]>;
  /** The replicas seen live and not proven dead, as last seen (this one included). */
  known(): ReplicaInfo[];
  /** Successful scans have missed the replica for at least a whole registration TTL:
   * its record expired, it has not re-registered, so it is not running. */
  provenDead(id: string): boolean;
  /** The newest second whose traffic every live replica has published (rollout
   * analysis reads no later second), and the replicas proven dead (not closed) whose
   * share of the seconds from `fromSec` on is missing: they died before publishing it. */
  completeThrough(fromSec: number): Promise<{ through: number; missing: string[] }>;
  /** Known replica count (cached by the heartbeat loop). */
  count(): number;
  summary(service: string, version: string, fromMs: number, toMs: number): Promise<WindowSummary>;
  /** Takes or renews the lease of a service's rollout; returns the fence, or undefined. */
  lease(service: string): Promise<{ key: string; token: string } | undefined>;
  release(service: string): Promise<void>;
  close(): Promise<void>;
}

export class LocalFleet implements Fleet {
  readonly id = 'local';
  readonly shared = false;
  constructor(
    private readonly dp: Dataplane,
    private readonly self: () => ReplicaInfo,
  ) {}
  async replicas(): Promise<ReplicaInfo[]> {
    return [this.self()];
  }
  async observe(): Promise<ReplicaInfo[]> {
    return [this.self()];
  }
  known(): ReplicaInfo[] {
    return [this.self()];
  }
  provenDead(): boolean {
    return false;
  }
  /** One process: its own window is complete up to now. */
  async completeThrough(): Promise<{ through: number; missing: string[] }> {
    return { through: Math.floor(Date.now() / 1000), missing: [] };
  }
  count(): number {
    return 1;
  }
  async summary(service: string, version: string, fromMs: number, toMs: number): Promise<WindowSummary> {
    return this.dp.statsOf(service, version).window.summary(fromMs, toMs);
  }
  async lease(): Promise<{ key: string; token: string } | undefined> {
    return { key: '', token: '' };
  }
  async release(): Promise<void> {}
  async close(): Promise<void> {}
}

const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`;

const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

export interface RedisFleetOptions {
  redis: Redis;
  prefix: string;
  dataplane: Dataplane;
  log: Logger;
  /** Addresses and applied revision of this replica. */
  self: () => Omit<ReplicaInfo, 'id' | 'at' | 'inflight' | 'startedAt'>;
  heartbeatMs?: number;
  ttlMs?: number;
  leaseTtlMs?: number;
  /** How long after a second ends its local counts are complete: 0 when this process
   * serves the traffic; with gateway.workers, their reports arrive that much later. */
  settleMs?: number;
}

export class RedisFleet implements Fleet {
  readonly id = randomUUID().slice(0, 8);
  readonly shared = true;
  private readonly startedAt = new Date().toISOString();
  private timer: NodeJS.Timeout | undefined;
  private statsTimer: NodeJS.Timeout | undefined;
  private flushedUpTo = Math.floor(Date.now() / 1000) - 1;
  private liveCount = 1;
  private readonly leases = new Map<string, string>();
  /** Every replica seen in the registry: its last record, and since when successful
   * scans have missed it. */
  private readonly seen = new Map<string, { info: ReplicaInfo; missingSince: number | undefined }>();
  private beats = 0;
  private closed = false;
  readonly heartbeatMs: number;
  readonly ttlMs: number;
  readonly leaseTtlMs: number;

  constructor(private readonly o: RedisFleetOptions) {
    this.heartbeatMs = o.heartbeatMs ?? 200;
    this.ttlMs = o.ttlMs ?? 3000;
    this.leaseTtlMs = o.leaseTtlMs ?? 3000;
  }

  start(): void {
    this.timer = setInterval(() => void this.heartbeat(), this.heartbeatMs);
    this.timer.unref();
    this.statsTimer = setInterval(() => void this.flushStats(), 250);
    this.statsTimer.unref();
    void this.heartbeat();
  }

  info(): ReplicaInfo {
    const dp = this.o.dataplane;
    return {
      id: this.id,
      ...this.o.self(),
      inflight: dp.inflightByService(),
      cut: dp.cutByService(),
      closing: dp.closingByService(),
      connectionsDrained: dp.connectionsDrainedByService(),
      published: this.flushedUpTo,
      startedAt: this.startedAt,
      at: Date.now(),
    };
  }

  /** Publishes this replica now (also called right after a state is applied). */
  async heartbeat(): Promise<void> {
    if (this.closed) return;
    try {
      await this.o.redis.set(`${this.o.prefix}:replica:${this.id}`, JSON.stringify(this.info()), 'PX', this.ttlMs);
      // Keep `known` fresh between drain waits (every fifth beat: a scan walks the keys).
      if (++this.beats % 5 === 0) await this.observe();
    } catch {
      /* Redis down: the registry simply ages out; traffic is not affected. */
    }
  }

  async observe(): Promise<ReplicaInfo[]> {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await this.o.redis.scan(cursor, 'MATCH', `${this.o.prefix}:replica:*`, 'COUNT', 500);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    const values = keys.length === 0 ? [] : await this.o.redis.mget(...keys);
    const out: ReplicaInfo[] = [];
    for (const v of values) if (v !== null) out.push(JSON.parse(v) as ReplicaInfo);
    // This replica's own figures are always the freshest.
    const mine = out.findIndex((r) => r.id === this.id);
    if (mine === -1) out.push(this.info());
    else out[mine] = this.info();
    const now = Date.now();
    const present = new Set<string>();
    for (const r of out) {
      present.add(r.id);
      this.seen.set(r.id, { info: r, missingSince: undefined });
    }
    for (const [id, e] of this.seen) {
      if (present.has(id)) continue;
      e.missingSince ??= now;
      // Long gone: forget it.
      if (now - e.missingSince > 60_000) this.seen.delete(id);
    }
    return out;
  }

  async replicas(): Promise<ReplicaInfo[]> {
    const out = (await this.observe()).filter((r) => r.gone !== true);
    this.liveCount = out.length;
    return out.sort((a, b) => a.id.localeCompare(b.id));
  }

  known(): ReplicaInfo[] {
    const out: ReplicaInfo[] = [];
    for (const [id, e] of this.seen) if (id !== this.id && e.info.gone !== true && !this.provenDead(id)) out.push(e.info);
    out.push(this.info());
    return out;
  }

  provenDead(id: string): boolean {
    if (id === this.id) return false;
    const e = this.seen.get(id);
    return e !== undefined && e.missingSince !== undefined && Date.now() - e.missingSince >= this.ttlMs;
  }

  /**
   * The newest second every live replica has published: the minimum of the `published`
   * marks of the replicas known and not proven dead (this one's own included). A replica
   * without a mark (an older release) does not hold the fleet back; a gone one published
   * its last seconds before it left.
   */
  async completeThrough(fromSec: number): Promise<{ through: number; missing: string[] }> {
    await this.observe();
    let through = this.flushedUpTo;
    // Known replicas, not only those in the registry now: one missing for a moment (Redis
    // restarted empty) still holds the fleet back until it is back or proven dead.
    for (const r of this.known()) if (r.id !== this.id && r.published !== undefined) through = Math.min(through, r.published);
    // A replica that died (not one that closed: it published its last seconds) served
    // traffic it never published; name it when that falls in the window. (Publishing
    // lags a second behind, so one whose mark is a second before the window served in it.)
    const missing: string[] = [];
    for (const [id, e] of this.seen) {
      const p = e.info.published;
      if (e.info.gone !== true && p !== undefined && this.provenDead(id) && p >= fromSec - 2 && p < through) missing.push(id);
    }
    return { through, missing };
  }

  count(): number {
    return this.liveCount;
  }

  /** Adds every completed second not yet published into the fleet counters. */
  private async flushStats(): Promise<void> {
    if (this.closed || this.o.redis.status !== 'ready') return;
    const last = this.lastComplete();
    // After an outage, publish at most the last 60 s (older windows are history by then).
    const from = Math.max(this.flushedUpTo + 1, last - 60);
    if (from > last) return;
    const dp = this.o.dataplane;
    const pipe = this.o.redis.pipeline();
    let n = 0;
    for (let sec = from; sec <= last; sec++) {
      for (const s of dp.serviceList) {
        for (const v of s.versions) {
          const c = dp.statsOf(s.name, v.name).window.secondCounts(sec);
          if (c === undefined) continue;
          const key = `${this.o.prefix}:stats:${s.name}:${v.name}:${sec}`;
          pipe.hincrby(key, 'r', c.requests);
          if (c.errors) pipe.hincrby(key, 'e', c.errors);
          for (const [b, k] of c.hist) pipe.hincrby(key, `b${b}`, k);
          pipe.expire(key, 900);
          n++;
        }
      }
    }
    try {
      if (n > 0) await pipe.exec();
      this.flushedUpTo = last;
    } catch {
      /* retried at the next tick */
    }
  }

  /** The newest second whose counts are all in. */
  private lastComplete(): number {
    return Math.floor((Date.now() - (this.o.settleMs ?? 0)) / 1000) - 1;
  }

  async summary(service: string, version: string, fromMs: number, toMs: number): Promise<WindowSummary> {
    const from = Math.floor(fromMs / 1000);
    // Only completed, published seconds: the current one is still being counted.
    const to = Math.min(Math.floor(toMs / 1000), this.lastComplete());
    const h = new Float64Array(NB);
    let requests = 0;
    let errors = 0;
    if (to >= from) {
      const pipe = this.o.redis.pipeline();
      for (let sec = from; sec <= to; sec++) pipe.hgetall(`${this.o.prefix}:stats:${service}:${version}:${sec}`);
      const res = (await pipe.exec()) ?? [];
      for (const [err, val] of res) {
        if (err || val === null) continue;
        const o = val as Record<string, string>;
        requests += Number(o.r ?? 0);
        errors += Number(o.e ?? 0);
        for (const [k, v] of Object.entries(o)) if (k.startsWith('b')) h[Number(k.slice(1))] += Number(v);
      }
    }
    return summarize(h, requests, errors, Math.max(1, to - from + 1));
  }

  async lease(service: string): Promise<{ key: string; token: string } | undefined> {
    const key = `${this.o.prefix}:lease:${service}`;
    const held = this.leases.get(service);
    try {
      if (held !== undefined) {
        const ok = Number(await this.o.redis.eval(RENEW, 1, key, held, String(this.leaseTtlMs)));
        if (ok === 1) return { key, token: held };
        this.leases.delete(service);
        this.o.log.warn({ service }, 'rollout lease lost');
      }
      const token = `${this.id}:${await this.o.redis.incr(`${this.o.prefix}:fence`)}`;
      const got = await this.o.redis.set(key, token, 'PX', this.leaseTtlMs, 'NX');
      if (got !== 'OK') return undefined;
      this.leases.set(service, token);
      this.o.log.info({ service, token }, 'rollout lease taken: this replica drives the rollout');
      return { key, token };
    } catch {
      // Without Redis nobody can write a step anyway; keep nothing.
      this.leases.delete(service);
      return undefined;
    }
  }

  async release(service: string): Promise<void> {
    const held = this.leases.get(service);
    if (held === undefined) return;
    this.leases.delete(service);
    await this.o.redis.eval(RELEASE, 1, `${this.o.prefix}:lease:${service}`, held).catch(() => {});
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    if (this.statsTimer) clearInterval(this.statsTimer);
    await this.flushStats().catch(() => {});
    for (const s of [...this.leases.keys()]) await this.release(s);
    // A last record instead of none: a drain wait on another replica learns how many of
    // its requests were cut (nothing is in flight any more: what was left was cut when
    // the process closed its listeners). It ages out like any record.
    const last: ReplicaInfo = { ...this.info(), inflight: {}, gone: true };
    await this.o.redis.set(`${this.o.prefix}:replica:${this.id}`, JSON.stringify(last), 'PX', this.ttlMs).catch(() => {});
  }
}

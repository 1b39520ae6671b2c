// The fleet: what replicas sharing one Redis tell each other besides the desired state.
//
// - Registry: every replica writes P:replica:<id> (its addresses, applied revision and
//   per-version in-flight counts) every heartbeatMs with a TTL of ttlMs; GET /v1/replicas
//   lists the live ones, and `wait` calls poll them.
// - Traffic counters: every completed second of each version's local window is added
//   into P:stats:<service>:<version>:<epoch second> (HINCRBY, expiring after 15 min), so
//   rollout analysis sees the whole fleet's requests, errors and latency histogram.
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
}

export interface Fleet {
  readonly id: string;
  readonly shared: boolean;
  replicas(): Promise<ReplicaInfo[]>;
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
  private known = 1;
  private readonly leases = new Map<string, string>();
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
    const inflight = this.o.dataplane.inflightByService();
    return { id: this.id, ...this.o.self(), inflight, startedAt: this.startedAt, at: Date.now() };
  }

  /** Publishes this replica now (also called right after a state is applied). */
  async heartbeat(): Promise<void> {
    if (this.closed) return;
    try {
      await this.o.redis.set(`${this.o.prefix}:replica:${this.id}`, JSON.stringify(this.info()), 'PX', this.ttlMs);
    } catch {
      /* Redis down: the registry simply ages out; traffic is not affected. */
    }
  }

  async replicas(): Promise<ReplicaInfo[]> {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await this.o.redis.scan(cursor, 'MATCH', `${this.o.prefix}:replica:*`, 'COUNT', 500);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    if (keys.length === 0) return [this.info()];
    const values = await this.o.redis.mget(...keys);
    const out: ReplicaInfo[] = [];
    for (const v of values) if (v !== null) out.push(JSON.parse(v) as ReplicaInfo);
    // This replica's own figures are always the freshest.
    const mine = out.findIndex((r) => r.id === this.id);
    if (mine === -1) out.push(this.info());
    else out[mine] = this.info();
    this.known = out.length;
    return out.sort((a, b) => a.id.localeCompare(b.id));
  }

  count(): number {
    return this.known;
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
    await this.o.redis.del(`${this.o.prefix}:replica:${this.id}`).catch(() => {});
  }
}

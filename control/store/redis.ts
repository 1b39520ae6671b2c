// The Redis store: the fleet's one desired state, shared by every gateway replica.
//
// Keys (under state.redis.prefix, default "switchyard"):
//   P:state      the whole DesiredState as JSON (weights, rollouts, events)
//   P:revision   the fleet-wide revision counter
//   P:changes    pub/sub channel: the new revision after every write
// A write is one Lua script: compare the stored revision with the one the writer started
// from, optionally check the writer's rollout lease (fencing), set state and revision,
// publish. Replicas apply whole states, so order is trivially kept: a state is applied
// only when its revision is above the one applied. A replica re-reads the state on every
// (re)connect, on every published revision, and every `checkIntervalMs` as a backstop
// for lost pub/sub messages.
//
// Redis trouble never stops traffic: commands fail fast (no offline queue, a 1 s command
// timeout) and the data plane keeps the last applied state. When Redis comes back empty
// (a restart without persistence), every replica offers its state with a script that
// only writes when the stored revision is lower: the highest revision wins.

import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import { isDesiredState, type DesiredState } from '../state.js';
import { RevisionConflictError, StoreUnavailableError, type Store, type WriteOptions } from './store.js';

const WRITE = `
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[6]) then return {-2, cur} end
if cur ~= tonumber(ARGV[1]) then return {0, cur} end
if ARGV[5] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[5] then return {-1, cur} end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[2])
return {1, tonumber(ARGV[2])}
`;

// A revision without its state (the state key evicted or deleted) counts as no state.
const WRITE_BACK = `
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if cur >= tonumber(ARGV[1]) and redis.call('EXISTS', KEYS[1]) == 1 then return cur end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[1])
return tonumber(ARGV[1])
`;

/** Below the 1 s command timeout, leaving time for the reply to arrive. */
const WRITE_DEADLINE_MS = 700;

export class LeaseLostError extends Error {
  readonly code = 'LEASE_LOST';
}

export interface RedisStoreOptions {
  url: string;
  prefix: string;
  log: Logger;
  checkIntervalMs?: number;
  commandTimeoutMs?: number;
}

export function redisOptions(commandTimeoutMs = 1000): RedisOptions {
  return {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: commandTimeoutMs,
    connectTimeout: 1000,
    // Reconnect forever, quickly: 100 ms, 200 ms … at most 1 s apart.
    retryStrategy: (times: number) => Math.min(times * 100, 1000),
  };
}

export class RedisStore implements Store {
  readonly kind = 'redis';
  readonly redis: Redis;
  private readonly sub: Redis;
  readonly prefix: string;
  private readonly log: Logger;
  private readonly keys: { state: string; revision: string; channel: string };
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private syncing = false;
  /** The controller: what it has applied, and how to hand it a newer state. */
  private local: { revision(): number; state(): DesiredState; apply(s: DesiredState): void } | undefined;
  /** When the last successful exchange with Redis happened. */
  lastOkAt = 0;

  constructor(private readonly opts: RedisStoreOptions) {
    this.prefix = opts.prefix;
    this.log = opts.log;
    this.keys = { state: `${opts.prefix}:state`, revision: `${opts.prefix}:revision`, channel: `${opts.prefix}:changes` };
    this.redis = new Redis(opts.url, redisOptions(opts.commandTimeoutMs));
    // The subscriber queues its SUBSCRIBE until connected and re-subscribes on reconnect.
    this.sub = new Redis(opts.url, { ...redisOptions(opts.commandTimeoutMs), enableOfflineQueue: true, commandTimeout: undefined });
    for (const [name, conn] of [['commands', this.redis], ['subscriber', this.sub]] as const) {
      conn.on('error', (err: Error) => {
        if (!this.closed) this.log.debug({ conn: name, err: err.message }, 'redis error');
      });
    }
    let wasReady = false;
    this.redis.on('ready', () => {
      if (wasReady) this.log.info('redis reconnected; resyncing state');
      wasReady = true;
      void this.sync('reconnect');
    });
    this.redis.on('end', () => undefined);
    this.redis.on('close', () => {
      if (!this.closed && wasReady) this.log.warn('redis connection lost; serving the last applied state');
    });
    this.sub.on('message', (_ch: string, msg: string) => {
      const rev = Number(msg);
      if (this.local !== undefined && rev > this.local.revision()) void this.sync('published');
    });
  }

  private unavailable(err: unknown): StoreUnavailableError {
    return new StoreUnavailableError(`redis store unavailable: ${(err as Error).message}`, { cause: err });
  }

  async connect(): Promise<void> {
    await Promise.allSettled([this.redis.connect(), this.sub.connect()]);
    this.sub.subscribe(this.keys.channel).catch(() => {});
  }

  /** The controller registers itself; from then on newer states are handed to it. */
  attach(local: { revision(): number; state(): DesiredState; apply(s: DesiredState): void }): void {
    this.local = local;
    this.timer = setInterval(() => void this.sync('periodic'), this.opts.checkIntervalMs ?? 1000);
    this.timer.unref();
  }

  async load(): Promise<DesiredState | null> {
    if (this.redis.status === 'wait') await this.connect();
    let text: string | null;
    try {
      text = await this.redis.get(this.keys.state);
    } catch (err) {
      throw this.unavailable(err);
    }
    this.lastOkAt = Date.now();
    if (text === null) return null;
    const parsed: unknown = JSON.parse(text);
    if (!isDesiredState(parsed)) throw new StoreUnavailableError(`${this.keys.state} does not hold a Switchyard state`);
    return parsed;
  }

  async write(expected: number, next: DesiredState, opts: WriteOptions = {}): Promise<void> {
    let r: [number, number];
    try {
      // A write that times out on our side must never be applied later (Redis paused,
      // then resumed with the command still queued): the script refuses to run past a
      // deadline taken from Redis' own clock, shorter than our command timeout.
      const [sec, usec] = await this.redis.time();
      const deadline = Number(sec) * 1000 + Math.floor(Number(usec) / 1000) + WRITE_DEADLINE_MS;
      r = (await this.redis.eval(
        WRITE,
        3,
        this.keys.state,
        this.keys.revision,
        opts.fence?.key ?? `${this.prefix}:lease:-`,
        String(expected),
        String(next.revision),
        JSON.stringify(next),
        this.keys.channel,
        opts.fence?.token ?? '',
        String(deadline),
      )) as [number, number];
    } catch (err) {
      throw this.unavailable(err);
    }
    this.lastOkAt = Date.now();
    if (r[0] === 0) throw new RevisionConflictError(r[1]);
    if (r[0] === -2) throw new StoreUnavailableError('redis ran the write too late (it was stalled); the write was not applied');
    if (r[0] === -1) throw new LeaseLostError('the rollout lease was lost; another replica drives it now');
  }

  /**
   * Brings this replica and Redis together: a newer stored state is applied here; an
   * older or missing one (Redis restarted empty) is replaced by ours if ours is newer.
   */
  async sync(why: string): Promise<void> {
    if (this.local === undefined || this.syncing || this.closed) return;
    this.syncing = true;
    try {
      const [rev, hasState] = await Promise.all([this.redis.get(this.keys.revision), this.redis.exists(this.keys.state)]);
      this.lastOkAt = Date.now();
      // A revision whose state is gone (evicted, deleted) is an emptied Redis too.
      const stored = hasState === 1 ? Number(rev ?? 0) : 0;
      const mine = this.local.revision();
      if (stored > mine) {
        const s = await this.load();
        if (s !== null && s.revision > this.local.revision()) this.local.apply(s);
      } else if (stored < mine) {
        const st = this.local.state();
        const won = Number(await this.redis.eval(WRITE_BACK, 2, this.keys.state, this.keys.revision, String(st.revision), JSON.stringify(st), this.keys.channel));
        if (won === st.revision) this.log.warn({ revision: st.revision, stored, why }, 'redis held an older or no state; wrote ours back');
      }
    } catch (err) {
      this.log.debug({ err: (err as Error).message, why }, 'state sync with redis failed; will retry');
    } finally {
      this.syncing = false;
    }
  }

  get connected(): boolean {
    return this.redis.status === 'ready';
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.sub.disconnect();
    this.redis.disconnect();
  }
}

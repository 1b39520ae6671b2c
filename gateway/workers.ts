// gateway.workers: N > 1 data-plane processes (node:cluster) that share gateway.listen.
//
// The primary keeps everything that decides: config, discovery, active probes, the
// controller and its store, the control API, /metrics, the fleet. It serves no traffic.
// Every change of the data plane's state (config, runtime weights, endpoint sets, health,
// ejection, drain) is sent to every worker as the whole replicated state with a sequence
// number, over the worker's IPC channel — so each worker applies the changes in the
// order the primary made them. A question sent after a change (is this version idle?)
// travels the same channel, so a worker answers it only after it applied the change:
// `cutover --wait` waits for requests the old weights sent, in every worker.
//
// Workers send back, every STATS_INTERVAL_MS and when they exit: their Prometheus
// counters (summed at scrape), the per-second window counts (added to the primary's
// windows: rollout analysis, dashboard, the fleet's stats), and in-flight counts per
// version and endpoint. Passive outlier detection counts failures in each worker; a
// worker whose endpoint crosses a threshold asks the primary, which applies
// maxEjectionPercent across the pool and sends the ejection to all.

import cluster, { type Worker } from 'node:cluster';
import { existsSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { Config } from '../config/types.js';
import { vkey } from '../discovery/provider.js';
import type { Dataplane, ReplicatedState } from './dataplane.js';
import type { OutlierDetector } from './health/passive.js';
import type { Metrics } from './metrics.js';
import type { MirrorDelta } from './mirror.js';

export const STATS_INTERVAL_MS = 100;

/** What a worker counted in one second since its last report. */
export interface SecondDelta {
  sec: number;
  requests: number;
  errors: number;
  hist: [number, number][];
}

/** Primary → worker. */
export type ToWorker =
  | { t: 'state'; seq: number; state: ReplicatedState; config?: Config }
  | { t: 'idle'; id: number; service: string; version: string }
  | { t: 'shutdown'; graceMs: number };

/** Worker → primary. */
export type FromWorker =
  | { t: 'hello' }
  | { t: 'listening'; gateway: AddressInfo; redirect?: AddressInfo }
  | { t: 'fatal'; error: string }
  | { t: 'ack'; seq: number }
  | { t: 'idle'; id: number }
  | { t: 'eject'; service: string; version: string; id: string; reason: string }
  | {
      t: 'stats';
      served: number;
      /** By version key (vkey). */
      counters: [string, number[]][];
      windows: [string, SecondDelta[]][];
      inflight: [string, number][];
      /** By version key: requests cut so far (VersionStats.cut; only ever grows). */
      cut: [string, number][];
      /** By endpoint key (Endpoint.key). */
      endpoints: [string, number][];
      /** By version key: connections a drain chose that are still open. */
      closing?: [string, number][];
      /** By version key: connections drains closed so far (only ever grows). */
      drained?: [string, number][];
      /** Mirror counts, samples and window since the last report, by service and target (vkey). */
      mirrors?: [string, MirrorDelta][];
    };

interface Member {
  worker: Worker;
  /** Has said hello and been sent the state. */
  joined: boolean;
  listening: AddressInfo | undefined;
  acked: number;
  /** The state it had acknowledged when its last stats report was sent (its in-flight
   * counts are of that state or newer); until its first report, the state it joined
   * with (it had served nothing before). */
  reportedAt: number;
  served: number;
  inflight: [string, number][];
  closing: [string, number][];
  /** Its cut counts as last reported (the primary adds what grew). */
  cut: Map<string, number>;
  /** Its drained-connection counts as last reported (the primary adds what grew). */
  drained: Map<string, number>;
  endpoints: [string, number][];
}

export interface WorkerStatus {
  pid: number | undefined;
  listening: boolean;
  /** Sequence number of the last state the worker applied (the primary's is `seq`). */
  applied: number;
  /** Requests it finished since it started. */
  served: number;
  inflight: number;
}

export interface WorkerPoolOptions {
  count: number;
  dataplane: Dataplane;
  outliers: OutlierDetector;
  metrics: Metrics;
  log: Logger;
  /** The config in force (the primary's; sent to a worker whenever it changes). */
  config: () => Config;
  /** The control plane's revision, recorded with each state sent. */
  revision?: () => number;
  /** Called when appliedRevision() grows (the fleet publishes it at once). */
  onApplied?: () => void;
}

/** dist/bin/worker.js next to this file's dist/gateway; from the TypeScript sources
 * (tests running in-process), the built one. */
function workerScript(): string {
  for (const rel of ['../bin/worker.js', '../dist/bin/worker.js']) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(p)) return p;
  }
  throw new Error('gateway.workers: dist/bin/worker.js not found (run npm run build)');
}

export class WorkerPool {
  private readonly members = new Map<number, Member>();
  private seq = 0;
  private sentConfig: Config | undefined;
  private dirty = false;
  private stopping = false;
  private nextQuery = 0;
  private readonly queries = new Map<number, { waiting: Set<number>; resolve: () => void }>();
  private readonly o: WorkerPoolOptions;
  private readonly script: string;
  private restarts: number[] = [];
  /** Set once the first workers listen: from then on, a worker that exits is replaced. */
  private started = false;
  /** [state seq, control revision] of each state sent, oldest first. */
  private sentRevisions: [number, number][] = [];
  private lastApplied = 0;

  constructor(o: WorkerPoolOptions) {
    this.o = o;
    this.script = workerScript();
    o.dataplane.remoteIdle = (service, version) => this.idle(service, version);
    // Every snapshot rebuild means the state may have changed: one message per tick.
    o.dataplane.subscribe(() => this.changed());
    // A connection drain order goes to the workers with the state (each drains its own).
    o.dataplane.onConnectionDrain(() => this.changed());
  }

  get stateSeq(): number {
    return this.seq;
  }

  /** Forks the workers; resolves with the address they share once every one listens. */
  async start(): Promise<{ gateway: AddressInfo; redirect?: AddressInfo }> {
    cluster.setupPrimary({ exec: this.script, args: [], serialization: 'advanced' });
    const first = Array.from({ length: this.o.count }, () => this.fork());
    const all = await Promise.all(first);
    this.started = true;
    return all[0];
  }

  private fork(): Promise<{ gateway: AddressInfo; redirect?: AddressInfo }> {
    const worker = cluster.fork();
    const m: Member = { worker, joined: false, listening: undefined, acked: 0, reportedAt: 0, served: 0, inflight: [], closing: [], cut: new Map(), drained: new Map(), endpoints: [] };
    this.members.set(worker.id, m);
    return new Promise((resolve, reject) => {
      let settled = false;
      worker.on('message', (msg: FromWorker) => {
        if (msg.t === 'listening') {
          m.listening = msg.gateway;
          this.o.log.debug({ worker: worker.id, pid: worker.process.pid }, 'data-plane worker listening');
          if (!settled) {
            settled = true;
            resolve({ gateway: msg.gateway, ...(msg.redirect === undefined ? {} : { redirect: msg.redirect }) });
          }
        } else if (msg.t === 'fatal' && !settled) {
          settled = true;
          reject(new Error(`data-plane worker: ${msg.error}`));
        } else this.onMessage(m, msg);
      });
      worker.on('exit', (code, signal) => {
        // What it still had in flight at its last report ended without an answer (its
        // last report, sent as it exits after a shutdown, has nothing in flight). Counted
        // before the idle queries below resolve, so a drain wait sees the cut.
        for (const [k, n] of m.inflight) {
          const st = this.o.dataplane.existingStats(k);
          if (st !== undefined) st.cut += n;
        }
        m.inflight = [];
        // Its connections closed with it.
        m.closing = [];
        this.members.delete(worker.id);
        for (const [id, q] of this.queries) {
          q.waiting.delete(worker.id);
          if (q.waiting.size === 0) {
            this.queries.delete(id);
            q.resolve();
          }
        }
        this.sumInflight();
        this.checkApplied();
        if (!settled) {
          settled = true;
          reject(new Error(`data-plane worker exited before listening (code ${code}, signal ${signal})`));
        }
        // (a failure of the first workers fails the start instead)
        if (this.stopping || !this.started) return;
        this.o.log.error({ worker: worker.id, pid: worker.process.pid, code, signal }, 'data-plane worker exited; starting another');
        this.respawn();
      });
    });
  }

  /** A worker that died is replaced after a second; after 5 replacements in a minute,
   * the next waits until that minute is over (the remaining workers keep serving; with
   * none listening, /ready answers 503). A replacement that fails is replaced too. */
  private respawn(): void {
    const now = Date.now();
    this.restarts = this.restarts.filter((t) => now - t < 60_000);
    let wait = 1000;
    if (this.restarts.length >= 5) {
      wait = Math.max(1000, 60_000 - (now - this.restarts[0]));
      this.o.log.error({ workers: this.members.size, retryInMs: wait }, 'data-plane workers keep exiting; waiting before starting another');
    }
    setTimeout(() => {
      if (this.stopping) return;
      this.restarts.push(Date.now());
      this.fork().catch((err: Error) => this.o.log.error({ err: err.message }, 'replacement data-plane worker failed'));
    }, wait).unref();
  }

  /** Workers accepting connections now. */
  get listening(): number {
    let n = 0;
    for (const m of this.members.values()) if (m.listening !== undefined && m.worker.isConnected()) n++;
    return n;
  }

  /**
   * The newest control revision every worker has applied and reported on since (so the
   * in-flight counts the primary holds are of that revision or newer): what this
   * replica tells the fleet it has applied.
   */
  appliedRevision(): number {
    const rev = this.o.revision?.() ?? 0;
    let seq = Infinity;
    for (const m of this.members.values()) if (m.joined && m.worker.isConnected()) seq = Math.min(seq, m.reportedAt);
    // (a change not sent yet is applied nowhere)
    if (!this.dirty && (seq === Infinity || seq >= this.seq)) return rev;
    let applied = 0;
    for (const [s, r] of this.sentRevisions) if (s <= seq) applied = r;
    return applied;
  }

  private checkApplied(): void {
    const a = this.appliedRevision();
    if (a > this.lastApplied) {
      this.lastApplied = a;
      this.o.onApplied?.();
    }
    // Entries no worker can still be behind of are dropped (the newest one stays).
    let min = Infinity;
    for (const m of this.members.values()) if (m.joined) min = Math.min(min, m.reportedAt);
    while (this.sentRevisions.length > 1 && this.sentRevisions[1][0] <= min) this.sentRevisions.shift();
  }

  private onMessage(m: Member, msg: FromWorker): void {
    switch (msg.t) {
      case 'hello':
        // The whole state, config included; later changes follow on the same channel.
        this.flush();
        m.joined = true;
        m.reportedAt = this.seq;
        this.send(m, { t: 'state', seq: this.seq, state: this.o.dataplane.exportState(), config: this.o.config() });
        return;
      case 'ack':
        m.acked = msg.seq;
        return;
      case 'idle': {
        const q = this.queries.get(msg.id);
        if (q === undefined) return;
        q.waiting.delete(m.worker.id);
        if (q.waiting.size === 0) {
          this.queries.delete(msg.id);
          q.resolve();
        }
        return;
      }
      case 'eject':
        this.o.outliers.requestEjection(msg.service, msg.version, msg.id, msg.reason);
        return;
      case 'stats':
        this.onStats(m, msg);
        return;
      default:
        return;
    }
  }

  private onStats(m: Member, msg: Extract<FromWorker, { t: 'stats' }>): void {
    const dp = this.o.dataplane;
    m.served = msg.served;
    this.o.metrics.setRemoteCounters(`worker-${m.worker.id}`, msg.counters);
    for (const [k, deltas] of msg.windows) {
      const w = dp.existingStats(k)?.window;
      for (const d of deltas) w?.add(d.sec, d.requests, d.errors, d.hist);
    }
    m.inflight = msg.inflight;
    for (const [k, n] of msg.cut) {
      const grew = n - (m.cut.get(k) ?? 0);
      const st = dp.existingStats(k);
      if (grew > 0 && st !== undefined) st.cut += grew;
      m.cut.set(k, n);
    }
    m.closing = msg.closing ?? [];
    for (const [k, n] of msg.drained ?? []) {
      const grew = n - (m.drained.get(k) ?? 0);
      const st = dp.existingStats(k);
      if (grew > 0 && st !== undefined) st.connectionsDrained += grew;
      m.drained.set(k, n);
    }
    m.endpoints = msg.endpoints;
    for (const [k, d] of msg.mirrors ?? []) {
      const i = k.indexOf('\u0000');
      dp.mirrorStatsOf(k.slice(0, i), k.slice(i + 1)).add(d);
    }
    // The channel is ordered: the acks sent before this report are in.
    m.reportedAt = Math.max(m.reportedAt, m.acked);
    this.sumInflight();
    this.checkApplied();
  }

  /** The primary's in-flight counts are the sum of its workers' last reports. */
  private sumInflight(): void {
    const dp = this.o.dataplane;
    const byVersion = new Map<string, number>();
    const closing = new Map<string, number>();
    const byEndpoint = new Map<string, number>();
    for (const m of this.members.values()) {
      for (const [k, n] of m.inflight) byVersion.set(k, (byVersion.get(k) ?? 0) + n);
      for (const [k, n] of m.closing) closing.set(k, (closing.get(k) ?? 0) + n);
      for (const [k, n] of m.endpoints) byEndpoint.set(k, (byEndpoint.get(k) ?? 0) + n);
    }
    // (the snapshot keeps counters for every version of the config, and they stay after
    // a reload removes one; reports carry only non-zero counts)
    for (const st of dp.allStats()) {
      const k = vkey(st.service, st.version);
      st.setInflight(byVersion.get(k) ?? 0, closing.get(k) ?? 0);
    }
    for (const e of dp.endpointsWithRetiring()) e.setInflight(byEndpoint.get(e.key) ?? 0);
  }

  private changed(): void {
    if (this.dirty) return;
    this.dirty = true;
    queueMicrotask(() => this.flush());
  }

  /** Sends the state now if it changed since the last message. */
  private flush(): void {
    if (!this.dirty) return;
    this.dirty = false;
    this.seq++;
    this.sentRevisions.push([this.seq, this.o.revision?.() ?? 0]);
    const config = this.o.config();
    const msg: ToWorker = { t: 'state', seq: this.seq, state: this.o.dataplane.exportState(), ...(config === this.sentConfig ? {} : { config }) };
    this.sentConfig = config;
    // A worker that joins later is sent the whole state, config included, when it does.
    for (const m of this.members.values()) if (m.joined) this.send(m, msg);
  }

  private send(m: Member, msg: ToWorker): void {
    if (!m.worker.isConnected()) return;
    m.worker.send(msg, undefined, () => {});
  }

  /** Resolves when no worker has a request of the version in flight. Asked after the
   * pending state went out, so each worker answers under the newest weights. */
  idle(service: string, version: string): Promise<void> {
    this.flush();
    const targets = [...this.members.values()].filter((m) => m.joined && m.worker.isConnected());
    if (targets.length === 0) return Promise.resolve();
    const id = ++this.nextQuery;
    return new Promise((resolve) => {
      this.queries.set(id, { waiting: new Set(targets.map((m) => m.worker.id)), resolve });
      for (const m of targets) this.send(m, { t: 'idle', id, service, version });
    });
  }

  status(): WorkerStatus[] {
    return [...this.members.values()].map((m) => ({
      pid: m.worker.process.pid,
      listening: m.listening !== undefined,
      applied: m.acked,
      served: m.served,
      inflight: m.inflight.reduce((n, [, k]) => n + k, 0),
    }));
  }

  /** Graceful: each worker stops accepting, finishes what it has (≤ graceMs), closes
   * its WebSockets and pools, reports its last counts and exits. Resolves when all
   * have exited; one still running graceMs + 5 s later is killed. */
  async shutdown(graceMs: number): Promise<void> {
    this.stopping = true;
    this.flush();
    const live = [...this.members.values()];
    const exited = Promise.all(live.map((m) => new Promise<void>((r) => (m.worker.isDead() ? r() : m.worker.once('exit', () => r())))));
    for (const m of live) this.send(m, { t: 'shutdown', graceMs });
    const timer = setTimeout(() => {
      for (const m of live) if (!m.worker.isDead()) m.worker.process.kill('SIGKILL');
    }, graceMs + 5000);
    await exited;
    clearTimeout(timer);
  }

  /** At once (cuts what is in flight). */
  close(): Promise<void> {
    return this.shutdown(0);
  }
}

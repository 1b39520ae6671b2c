// The controller owns the desired state. Every change runs through one serialized
// chain: clone the state, apply the change to the clone, bump the revision, record the
// event, write the store (compare-and-set on the revision), and only then apply the new
// weights to the data plane and announce the event. A change that throws, or a store
// that refuses the write, leaves both the stored and the running state untouched.
//
// Rollouts are timers on top of the same chain: each interval analyses the target's
// window of the gateway's own counters and advances, waits, or rolls back.

import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Dataplane } from '../gateway/dataplane.js';
import { WeightsError } from '../gateway/dataplane.js';
import { ControlError } from './errors.js';
import {
  emptyState,
  isTerminal,
  MAX_EVENTS,
  type AnalysisConfig,
  type AnalysisResult,
  type ControlEvent,
  type HookConfig,
  type HookPhase,
  type DesiredState,
  type RolloutRecord,
  type ServiceState,
  type Weights,
} from './state.js';
import { RevisionConflictError, StoreUnavailableError, type Store, type WriteOptions } from './store/store.js';
import { LeaseLostError } from './store/redis.js';
import { LocalFleet, type Fleet, type ReplicaInfo } from './fleet.js';
import { baselineOf, stepWeights } from './rollout/plan.js';
import { analyze, analyzeShadow, combine } from './rollout/analysis.js';
import { evaluatePrometheus } from './rollout/prometheus.js';
import { HookRunner, hookPayload, hooksFor } from './rollout/hooks.js';
import type { MirrorConfig } from '../config/types.js';
import { normalizeMirror } from '../config/load.js';
import { drainWait, drainWaitLocal, type DrainAnswer, type LocalDrain } from './drain.js';
import type { ConnectionDrainOrder } from '../gateway/conndrain.js';
import { GOING_AWAY_MS } from '../gateway/tunnel.js';

export interface ControllerOptions {
  dataplane: Dataplane;
  store: Store;
  log: Logger;
  /** Replicas sharing the store; a single local replica by default. */
  fleet?: Fleet;
}

export interface RolloutRequest {
  to: string;
  steps: number[];
  intervalMs: number;
  analysis: AnalysisConfig;
  force?: boolean;
  /** Step indexes that wait for POST …/rollout/approve before they are entered. */
  approval?: number[];
  hooks?: HookConfig[];
  /** If-Match: the service revision the caller last saw. */
  ifMatch?: number;
  /** `connections.drain` (see ConnectionDrainDetail). */
  connectionsDrainMs?: number;
  /** The mirror to the target during 0% (shadow) steps (its `to` is the target). */
  shadow?: MirrorConfig;
}

/** What a weight-changing event carries when it moves long-lived connections: every
 * replica (and every worker) that applies the event closes `shares[version]` of the
 * connections pinned to each version over `drainMs`. */
export interface ConnectionDrainDetail {
  id: string;
  drainMs: number;
  shares: Record<string, number>;
}

/**
 * The share of each version's connections that its lost weight represents: a version
 * whose share of the weights fell from `b` to `a` gives up (b − a) / b of its
 * connections — all of them when it falls to 0. Versions that kept or gained share
 * keep theirs. Reconnecting clients are placed by the new weights.
 */
export function drainShares(before: Weights, after: Weights): Record<string, number> {
  const total = (w: Weights): number => Object.values(w).reduce((n, x) => n + x, 0);
  const tb = total(before);
  const ta = total(after);
  const out: Record<string, number> = {};
  if (tb <= 0 || ta <= 0) return out;
  for (const [v, w] of Object.entries(before)) {
    const b = w / tb;
    const a = (after[v] ?? 0) / ta;
    if (b > 0 && a < b) out[v] = a === 0 ? 1 : (b - a) / b;
  }
  return out;
}

/** The `connections` detail of an event that changes weights from `before` to `after`,
 * when a drain was asked for and some version lost share. */
function connectionsDetail(drainMs: number | undefined, before: Weights, after: Weights): { connections?: ConnectionDrainDetail } {
  if (drainMs === undefined) return {};
  const shares = drainShares(before, after);
  if (Object.keys(shares).length === 0) return {};
  return { connections: { id: randomUUID(), drainMs, shares } };
}

/** How often a connection drain's progress is looked at (for its event). */
const CONNECTION_DRAIN_POLL_MS = 200;

/** Extra time, past its window, that a connection drain's closes are given. */
const CONNECTION_DRAIN_GRACE_MS = GOING_AWAY_MS + 3000;

type Change = {
  service: string | null;
  action: string;
  detail: Record<string, unknown>;
  /** This change moves long-lived connections off the versions that lose weight, over
   * this window (a rollout's changes use the rollout's `connectionsDrainMs`). */
  connectionsDrainMs?: number;
};

const clone = <T>(v: T): T => structuredClone(v);

class StaleTick extends Error {}

/** A notification hook to send once the change that triggered it is written. */
type Note = { on: HookPhase; step: number; extra?: Record<string, unknown> };

/** Whether the rollout's current step has gates to pass before it is entered. */
function gated(ro: RolloutRecord): boolean {
  return needsApproval(ro) || hooksFor(ro, 'pre-step').length > 0 || (!ro.preRolloutDone && hooksFor(ro, 'pre-rollout').length > 0);
}

function needsApproval(ro: RolloutRecord): boolean {
  return (ro.approval ?? []).includes(ro.step) && !(ro.approved ?? []).includes(ro.step);
}

/** Enters the rollout's current step: its weights apply and its analysis window starts. */
function enterStep(ro: RolloutRecord, s: ServiceState, now: number): void {
  delete ro.pending;
  ro.preRolloutDone = true;
  ro.weights = stepWeights(ro.fromWeights, ro.to, ro.steps[ro.step]);
  ro.history.push({ step: ro.step, percent: ro.steps[ro.step], at: new Date(now).toISOString() });
  ro.stepStartedAt = now;
  ro.idleIntervals = 0;
  s.weights = ro.weights;
}

/**
 * Moves the rollout to its current step (already set): waits for an approval, or
 * leaves the step pending for its pre-step hooks (the driver runs them at once), or
 * enters it. A step of 0% is applied even while gated: no user reaches the target,
 * only override-header traffic (the tester lane its hooks test through).
 */
function gateOrEnter(ro: RolloutRecord, s: ServiceState, now: number): 'awaiting_approval' | 'gated' | 'entered' {
  if (!gated(ro)) {
    enterStep(ro, s, now);
    return 'entered';
  }
  ro.pending = true;
  ro.stepStartedAt = now;
  ro.idleIntervals = 0;
  if (ro.steps[ro.step] === 0) {
    ro.weights = stepWeights(ro.fromWeights, ro.to, 0);
    s.weights = ro.weights;
  }
  if (needsApproval(ro)) {
    ro.state = 'awaiting_approval';
    return 'awaiting_approval';
  }
  return 'gated';
}

/** How soon a fleet rollout tick looks again when no second is complete yet. */
const COMPLETE_RETRY_MS = 200;

function weightsError(err: unknown): never {
  if (err instanceof WeightsError) {
    const status = err.code === 'UNKNOWN_SERVICE' ? 404 : 400;
    throw new ControlError(status, err.code, err.message);
  }
  throw err;
}

export class Controller extends EventEmitter {
  private state: DesiredState = emptyState();
  private chain: Promise<unknown> = Promise.resolve();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private closed = false;
  readonly dp: Dataplane;
  readonly store: Store;
  private readonly log: Logger;
  fleet: Fleet;
  /** The fence of each rollout this replica drives. */
  private readonly fences = new Map<string, { key: string; token: string }>();
  private driverTimer: NodeJS.Timeout | undefined;
  private reconciling = false;
  /** Services whose tick is running now (analysis and write are async). */
  private readonly ticking = new Set<string>();
  private reconcileAgain = false;
  private readonly hookRunner: HookRunner;

  constructor(opts: ControllerOptions) {
    super();
    this.setMaxListeners(0);
    this.dp = opts.dataplane;
    this.store = opts.store;
    this.log = opts.log;
    this.hookRunner = new HookRunner(opts.log);
    this.fleet = opts.fleet ?? new LocalFleet(opts.dataplane, () => this.localReplica());
  }

  private localReplica(): ReplicaInfo {
    return { id: 'local', addresses: {}, revision: this.state.revision, inflight: this.dp.inflightByService(), startedAt: '', at: Date.now() };
  }

  /** Loads the stored state (config seeds it when nothing was written), applies its
   * weights, and resumes the rollouts that were running. */
  async start(): Promise<void> {
    let stored: DesiredState | null = null;
    try {
      stored = await this.store.load();
    } catch (err) {
      // A shared store that is down must not keep the gateway from serving: start from
      // the config and let the store's resync bring the fleet's state when it is back.
      if (!(err instanceof StoreUnavailableError) || this.store.kind !== 'redis') throw err;
      this.log.warn({ err: err.message }, 'state store unreachable at start; serving the config weights until it is back');
    }
    if (stored !== null) this.state = stored;
    this.applyStoredWeights();
    for (const [name, s] of Object.entries(this.state.services)) {
      if (s.rollout?.state === 'running' && !this.fleet.shared) {
        // The window counters lived in the old process; the step's analysis starts afresh.
        // (With a fleet store the counters are shared, so the stored window stands.)
        s.rollout.stepStartedAt = Date.now();
        s.rollout.idleIntervals = 0;
        this.log.info({ service: name, step: s.rollout.step, percent: s.rollout.steps[s.rollout.step] }, 'resuming rollout at its stored step');
      }
    }
    const attachable = this.store as Store & { attach?: (l: { revision(): number; state(): DesiredState; apply(s: DesiredState): void }) => void };
    attachable.attach?.({ revision: () => this.state.revision, state: () => this.state, apply: (s) => void this.applyRemote(s) });
    await this.reconcileDrivers();
    this.driverTimer = setInterval(() => void this.reconcileDrivers(), 1000);
    this.driverTimer.unref();
  }

  /** Runs `fn` after every change queued before it: state changes happen one at a time. */
  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn, fn);
    this.chain = p.catch(() => {});
    return p;
  }

  /** A newer state written by another replica (or found in the store at a resync). */
  applyRemote(next: DesiredState): Promise<void> {
    return this.serialized(async () => {
      if (!this.closed) this.adopt(next);
    }).then(() => this.reconcileDrivers());
  }

  /** Reloads the stored state (after a write conflict). Call within the chain. */
  private async resync(): Promise<void> {
    const s = await this.store.load();
    if (s !== null) this.adopt(s);
  }

  /** Takes a stored state that is newer than ours: its weights, and the drains and live
   * events of the changes we had not seen. */
  private adopt(next: DesiredState): void {
    if (next.revision <= this.state.revision) return;
    const lastId = this.state.events.at(-1)?.id ?? 0;
    this.state = next;
    this.applyStoredWeights();
    for (const e of next.events) {
      if (e.id <= lastId) continue;
      this.applyRemoteEvent(e);
      this.emit('remote', e);
    }
    this.log.debug({ revision: next.revision }, 'applied state from the store');
    this.emit('applied', next.revision);
  }

  /**
   * Makes sure each running rollout has exactly one driver: this replica takes or renews
   * the service's lease and runs its timer, or stops its timer when it lost the lease or
   * the rollout is no longer running.
   */
  private async reconcileDrivers(): Promise<void> {
    if (this.closed) return;
    if (this.reconciling) {
      this.reconcileAgain = true;
      return;
    }
    this.reconciling = true;
    try {
      for (const name of Object.keys(this.state.services)) {
        const ro = this.activeRollout(name);
        if (ro === undefined || ro.state !== 'running') {
          this.clearTimer(name);
          if (this.fences.has(name)) {
            this.fences.delete(name);
            await this.fleet.release(name);
          }
          continue;
        }
        const fence = await this.fleet.lease(name);
        if (fence === undefined) {
          this.fences.delete(name);
          this.clearTimer(name);
          continue;
        }
        this.fences.set(name, fence);
        if (!this.timers.has(name) && !this.ticking.has(name)) this.schedule(name);
      }
    } finally {
      this.reconciling = false;
    }
    if (this.reconcileAgain) {
      this.reconcileAgain = false;
      await this.reconcileDrivers();
    }
  }

  /** After a config reload: stored weights win for the versions that still exist. */
  applyStoredWeights(): void {
    for (const [name, s] of Object.entries(this.state.services)) {
      this.applyWeights(name, s.weights);
      this.applyMirror(name, s);
    }
  }

  /**
   * The mirror in force for a service: a rollout's shadow mirror while it is at a 0%
   * step, else the one set through the API (null: stopped), else the config's.
   */
  static effectiveMirror(s: ServiceState | undefined): MirrorConfig | null | undefined {
    const ro = s?.rollout;
    if (ro !== undefined && !isTerminal(ro.state) && ro.steps[ro.step] === 0 && ro.shadow !== undefined) return ro.shadow;
    return s?.mirror;
  }

  private applyMirror(name: string, s: ServiceState | undefined): void {
    if (this.dp.service(name) === undefined) return;
    this.dp.setMirror(name, Controller.effectiveMirror(s));
  }

  /** Applies stored weights to the data plane for the versions the config has now
   * (a reload may have removed one); never throws — the state is already written. */
  private applyWeights(name: string, weights: Weights): void {
    const sc = this.dp.service(name);
    if (sc === undefined) return;
    const w: Weights = {};
    for (const v of sc.versions) if (weights[v.name] !== undefined) w[v.name] = weights[v.name];
    try {
      this.dp.setWeights(name, w);
    } catch (err) {
      this.log.warn({ service: name, err: (err as Error).message }, 'stored weights do not fit the config; the config weights stay');
    }
  }

  /** Drains announced by other replicas of the fleet apply here too. */
  private applyRemoteEvent(e: ControlEvent): void {
    if (e.action === 'endpoint.drained' && e.service !== null && typeof e.detail.endpoint === 'string') {
      this.dp.drainEndpoint(e.service, e.detail.endpoint);
    }
    this.applyConnectionDrain(e);
  }

  /**
   * An event that moves long-lived connections (its `connections` detail): the data
   * plane closes them over the window; when they are closed (or the window and its
   * grace are over), this replica records how many it moved (`connections.drained`).
   */
  private applyConnectionDrain(e: ControlEvent): void {
    const d = e.detail.connections as ConnectionDrainDetail | undefined;
    if (e.service === null || d === undefined || typeof d !== 'object' || typeof d.id !== 'string' || this.dp.service(e.service) === undefined) return;
    const service = e.service;
    const versions = Object.keys(d.shares).filter((v) => this.dp.service(service)!.versions.some((x) => x.name === v));
    const sum = (m: Record<string, Record<string, number>>): number => versions.reduce((n, v) => n + (m[service]?.[v] ?? 0), 0);
    const base = sum(this.dp.connectionsDrainedByService());
    const order: ConnectionDrainOrder = { id: d.id, service, shares: d.shares, windowMs: d.drainMs };
    this.dp.drainConnections(order);
    const deadline = Date.now() + d.drainMs + CONNECTION_DRAIN_GRACE_MS;
    const watch = async (): Promise<void> => {
      // (with gateway.workers the counts come with their reports: wait one first)
      await new Promise((r) => setTimeout(r, CONNECTION_DRAIN_POLL_MS));
      while (!this.closed && sum(this.dp.closingByService()) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, CONNECTION_DRAIN_POLL_MS));
      if (this.closed) return;
      const moved = sum(this.dp.connectionsDrainedByService()) - base;
      const open = sum(this.dp.closingByService());
      if (moved === 0 && open === 0) return;
      await this.record('connection-drain', 'connections.drained', { service, versions, drain: d.id, replica: this.fleet.id, moved, stillOpen: open, trigger: e.action, triggerEvent: e.id });
    };
    watch().catch((err: Error) => this.log.warn({ service, err: err.message }, 'connection drain: could not record how many connections were moved'));
  }

  get revision(): number {
    return this.state.revision;
  }

  snapshot(): DesiredState {
    return this.state;
  }

  serviceState(name: string): ServiceState | undefined {
    return this.state.services[name];
  }

  /** The service's revision: of its last change, 0 while only the config set it. */
  serviceRevision(name: string): number {
    return this.state.services[name]?.revision ?? 0;
  }

  rollout(name: string): RolloutRecord | undefined {
    return this.state.services[name]?.rollout;
  }

  events(since = 0, limit = MAX_EVENTS): ControlEvent[] {
    return this.state.events.filter((e) => e.id > since).slice(0, limit);
  }

  private requireService(name: string): void {
    if (this.dp.service(name) === undefined) throw new ControlError(404, 'UNKNOWN_SERVICE', `unknown service ${name}`);
  }

  private requireVersion(service: string, version: string): void {
    if (!this.dp.service(service)!.versions.some((v) => v.name === version)) {
      throw new ControlError(400, 'UNKNOWN_VERSION', `service ${service} has no version ${version}`);
    }
  }

  private svc(state: DesiredState, name: string): ServiceState {
    let s = state.services[name];
    if (s === undefined) {
      s = { weights: this.dp.getWeights(name), revision: 0 };
      state.services[name] = s;
    }
    return s;
  }

  private activeRollout(name: string): RolloutRecord | undefined {
    const r = this.state.services[name]?.rollout;
    return r !== undefined && !isTerminal(r.state) ? r : undefined;
  }

  private refuseDuringRollout(name: string, what: string): void {
    const r = this.activeRollout(name);
    if (r !== undefined) {
      throw new ControlError(409, 'ROLLOUT_IN_PROGRESS', `cannot ${what} while a rollout of ${name} to ${r.to} is ${r.state}; pause/promote/abort it first`, { rollout: r.id });
    }
  }

  /**
   * The one way to change state. `fn` changes the clone and describes the change; if it
   * throws, nothing happened. Runs strictly one at a time.
   */
  mutate<T>(actor: string, fn: (next: DesiredState) => Change & { result?: T }, opts: WriteOptions = {}): Promise<{ revision: number; event: ControlEvent; result?: T }> {
    const run = async (): Promise<{ revision: number; event: ControlEvent; result?: T }> => {
      // Another replica may have written since we last heard: on a conflict, re-read
      // the stored state and decide again on it (If-Match then sees the new revision).
      for (let attempt = 1; ; attempt++) {
        try {
          return await once();
        } catch (err) {
          if (!(err instanceof ControlError && err.code === 'REVISION_CONFLICT') || attempt >= 5) throw err;
          try {
            await this.resync();
          } catch (e) {
            if (e instanceof StoreUnavailableError) throw new ControlError(503, 'STORE_UNAVAILABLE', e.message);
            throw e;
          }
        }
      }
    };
    const once = async (): Promise<{ revision: number; event: ControlEvent; result?: T }> => {
      if (this.closed) throw new ControlError(503, 'SHUTTING_DOWN', 'the gateway is shutting down');
      const prev = this.state;
      const next = clone(prev);
      const change = fn(next);
      if (change.service !== null) {
        // Weights that changed under a connection drain: the event carries the order.
        const moved = connectionsDetail(this.drainOfChange(prev, next, change), prev.services[change.service]?.weights ?? this.dp.getWeights(change.service), next.services[change.service]?.weights ?? {});
        if (moved.connections !== undefined) change.detail = { ...change.detail, ...moved };
      }
      next.revision = prev.revision + 1;
      if (change.service !== null) this.svc(next, change.service).revision = next.revision;
      const event: ControlEvent = {
        id: next.nextEventId++,
        time: new Date().toISOString(),
        actor,
        service: change.service,
        action: change.action,
        revision: next.revision,
        detail: change.detail,
      };
      next.events.push(event);
      if (next.events.length > MAX_EVENTS) next.events.splice(0, next.events.length - MAX_EVENTS);
      try {
        await this.store.write(prev.revision, next, opts);
      } catch (err) {
        if (err instanceof StoreUnavailableError) throw new ControlError(503, 'STORE_UNAVAILABLE', err.message);
        if (err instanceof LeaseLostError) throw err;
        if (err instanceof RevisionConflictError) throw new ControlError(409, 'REVISION_CONFLICT', err.message);
        throw err;
      }
      this.state = next;
      if (change.service !== null) {
        const w = next.services[change.service]?.weights;
        if (w !== undefined) this.applyWeights(change.service, w);
        this.applyConnectionDrain(event);
        this.applyMirror(change.service, next.services[change.service]);
      }
      this.log.info({ actor, service: change.service, action: change.action, revision: next.revision, detail: change.detail }, 'control change');
      this.emit('event', event);
      this.emit('applied', next.revision);
      return { revision: next.revision, event, result: change.result };
    };
    return this.serialized(run);
  }

  /** The caller saw a newer revision (on another replica) than this one has applied:
   * catch up before judging If-Match. */
  private async catchUp(service: string, ifMatch: number | undefined): Promise<void> {
    if (ifMatch !== undefined && ifMatch > this.serviceRevision(service)) await this.serialized(() => this.resync().catch(() => {}));
  }

  /**
   * If-Match of a write that changes weights (PUT weights, cutover, rollback, rollout
   * start). Called inside mutate's function: it is judged against the state the write
   * is compared-and-set on, so of two replicas writing with the same If-Match one wins
   * and the other, re-deciding on the winner's state after the conflict, gets 412.
   */
  private checkIfMatch(service: string, ifMatch: number | undefined): void {
    if (ifMatch !== undefined && ifMatch !== this.serviceRevision(service)) {
      throw new ControlError(412, 'REVISION_MISMATCH', `If-Match revision ${ifMatch} is stale; service ${service} is at revision ${this.serviceRevision(service)}`, {
        revision: this.serviceRevision(service),
      });
    }
  }

  /** Sets weights (versions not named keep theirs). `ifMatch` is the service revision
   * the caller last saw. */
  async setWeights(actor: string, service: string, weights: Weights, ifMatch?: number): Promise<{ revision: number; weights: Weights }> {
    this.requireService(service);
    await this.catchUp(service, ifMatch);
    const r = await this.mutate(actor, (next) => {
      this.checkIfMatch(service, ifMatch);
      this.refuseDuringRollout(service, 'set weights');
      try {
        this.dp.validateWeights(service, weights);
      } catch (err) {
        weightsError(err);
      }
      const s = this.svc(next, service);
      const before = { ...this.dp.getWeights(service) };
      s.previousWeights = before;
      s.weights = { ...before, ...weights };
      return { service, action: 'weights', detail: { from: before, to: s.weights } };
    });
    return { revision: r.revision, weights: this.dp.getWeights(service) };
  }

  /** Starts or replaces a service's mirror (`null` stops it, whatever the config says). */
  async setMirror(actor: string, service: string, mirror: MirrorConfig | null): Promise<{ revision: number }> {
    this.requireService(service);
    if (mirror !== null) this.requireVersion(service, mirror.to);
    const r = await this.mutate(actor, (next) => {
      const s = this.svc(next, service);
      const before = Controller.effectiveMirror(s) ?? this.dp.service(service)?.mirror ?? null;
      s.mirror = mirror;
      return { service, action: mirror === null ? 'mirror.stopped' : 'mirror.set', detail: { from: before, to: mirror } };
    });
    return { revision: r.revision };
  }

  /** Preflight for cutover and rollout: the target must have a healthy endpoint. */
  private preflight(service: string, to: string, force: boolean | undefined): void {
    const healthy = this.dp.endpointsOf(service, to).filter((e) => e.state === 'healthy').length;
    if (healthy === 0 && !force) {
      throw new ControlError(422, 'TARGET_UNHEALTHY', `version ${to} of ${service} has no healthy endpoint; refusing (use force to override)`);
    }
  }

  async cutover(
    actor: string,
    service: string,
    to: string,
    opts: { force?: boolean; ifMatch?: number; connectionsDrainMs?: number },
  ): Promise<{ revision: number; weights: Weights; from: string[]; connections?: { drainMs: number; shares: Record<string, number> } }> {
    this.requireService(service);
    this.requireVersion(service, to);
    await this.catchUp(service, opts.ifMatch);
    let from: string[] = [];
    const r = await this.mutate(actor, (next) => {
      this.checkIfMatch(service, opts.ifMatch);
      this.refuseDuringRollout(service, 'cut over');
      this.preflight(service, to, opts.force);
      const before = this.dp.getWeights(service);
      from = Object.keys(before).filter((v) => v !== to && before[v] > 0);
      const weights: Weights = {};
      for (const v of Object.keys(before)) weights[v] = v === to ? 100 : 0;
      const s = this.svc(next, service);
      s.previousWeights = before;
      s.weights = weights;
      return { service, action: 'cutover', detail: { to, from: before, weights, force: opts.force === true }, connectionsDrainMs: this.drainMsOf(service, opts.connectionsDrainMs) };
    });
    const d = r.event.detail.connections as ConnectionDrainDetail | undefined;
    return { revision: r.revision, weights: this.dp.getWeights(service), from, ...(d === undefined ? {} : { connections: { drainMs: d.drainMs, shares: d.shares } }) };
  }

  /**
   * Waits until every replica has applied `revision` and has no request of `versions`
   * in flight (see control/drain.ts); `drained` is false when any of them was cut.
   */
  async waitFleetDrained(service: string, versions: string[], revision: number, timeoutMs: number): Promise<DrainAnswer> {
    const local: LocalDrain = {
      waitIdle: (ms) => this.waitDrained(service, versions, ms),
      cut: () => this.dp.cutByService(),
      inflight: () => this.dp.inflightByService(),
      closing: () => this.dp.closingByService(),
      drained: () => this.dp.connectionsDrainedByService(),
    };
    if (!this.fleet.shared) return drainWaitLocal(local, service, versions, timeoutMs);
    return drainWait(this.fleet, local, service, versions, revision, timeoutMs);
  }

  /** In-flight counts per replica (for a drain timeout's answer). */
  async fleetInflight(service: string): Promise<Record<string, Record<string, number>>> {
    const out: Record<string, Record<string, number>> = {};
    for (const r of await this.fleet.replicas().catch(() => [])) out[r.id] = r.inflight[service] ?? {};
    return out;
  }

  /** Resolves true when none of `versions` has a request in flight, false at the deadline. */
  async waitDrained(service: string, versions: string[], timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<boolean>((r) => {
      timer = setTimeout(() => r(false), timeoutMs);
    });
    const idle = Promise.all(versions.map((v) => this.dp.whenVersionIdle(service, v))).then(() => true);
    const ok = await Promise.race([idle, deadline]);
    clearTimeout(timer);
    return ok;
  }

  /** The connection drain of a change: its own, else that of the rollout it starts or
   * is a step of (its first and last steps, promote, abort and roll-back included). */
  private drainOfChange(prev: DesiredState, next: DesiredState, change: Change): number | undefined {
    if (change.connectionsDrainMs !== undefined || change.service === null) return change.connectionsDrainMs;
    const ro = next.services[change.service]?.rollout;
    const was = prev.services[change.service]?.rollout;
    // (a rollout that had already ended drains nothing more)
    if (ro?.connectionsDrainMs === undefined || (was?.id === ro.id && isTerminal(was.state))) return undefined;
    return ro.connectionsDrainMs;
  }

  /** The drain window asked for, else the service's `connections.drain` (undefined:
   * connections stay where they are). */
  private drainMsOf(service: string, asked: number | undefined): number | undefined {
    if (asked !== undefined) return asked > 0 ? asked : undefined;
    const d = this.dp.service(service)?.connections?.drainMs;
    return d === undefined || d <= 0 ? undefined : d;
  }

  async rollback(actor: string, service: string, ifMatch?: number): Promise<{ revision: number; weights: Weights }> {
    this.requireService(service);
    await this.catchUp(service, ifMatch);
    const r = await this.mutate(actor, (next) => {
      this.checkIfMatch(service, ifMatch);
      this.refuseDuringRollout(service, 'roll back');
      const s = this.svc(next, service);
      if (s.previousWeights === undefined) throw new ControlError(409, 'NOTHING_TO_ROLL_BACK', `service ${service} has no earlier weights to restore`);
      try {
        this.dp.validateWeights(service, s.previousWeights);
      } catch (err) {
        weightsError(err);
      }
      const before = this.dp.getWeights(service);
      s.weights = { ...before, ...s.previousWeights };
      s.previousWeights = before;
      return { service, action: 'rollback', detail: { from: before, to: s.weights }, connectionsDrainMs: this.drainMsOf(service, undefined) };
    });
    return { revision: r.revision, weights: this.dp.getWeights(service) };
  }

  async startRollout(actor: string, service: string, req: RolloutRequest): Promise<RolloutRecord> {
    this.requireService(service);
    this.requireVersion(service, req.to);
    const steps = req.steps;
    if (steps.length === 0 || steps.some((s, i) => !Number.isInteger(s) || s < 0 || s > 100 || (i > 0 && s <= steps[i - 1]))) {
      throw new ControlError(400, 'INVALID_STEPS', 'steps must be integers from 0 to 100, strictly increasing (only the first may be 0: the tester lane)');
    }
    if (req.shadow !== undefined && req.shadow.to !== req.to) throw new ControlError(400, 'INVALID_ROLLOUT', 'the shadow mirror goes to the rollout target');
    if (steps[steps.length - 1] !== 100) throw new ControlError(400, 'INVALID_STEPS', 'the last step must be 100');
    for (const [what, list] of [['approval', req.approval], ...(req.hooks ?? []).map((h) => [`hook ${h.name} steps`, h.steps] as const)] as const) {
      const bad = (list ?? []).find((i) => !Number.isInteger(i) || i < 0 || i >= steps.length);
      if (bad !== undefined) throw new ControlError(400, 'INVALID_ROLLOUT', `${what}: ${bad} is not a step index (0 to ${steps.length - 1})`);
    }
    if (this.dp.service(service)!.versions.length < 2) throw new ControlError(400, 'INVALID_ROLLOUT', `service ${service} has only one version`);
    await this.catchUp(service, req.ifMatch);
    const r = await this.mutate(actor, (next) => {
      this.checkIfMatch(service, req.ifMatch);
      this.refuseDuringRollout(service, 'start a rollout');
      this.preflight(service, req.to, req.force);
      const from = this.dp.getWeights(service);
      const weights = { ...from };
      const now = Date.now();
      const rollout: RolloutRecord = {
        id: randomUUID(),
        service,
        to: req.to,
        baseline: baselineOf(from, req.to),
        steps,
        step: 0,
        intervalMs: req.intervalMs,
        analysis: req.analysis,
        ...(steps[0] === 0 && (req.shadow !== undefined || req.analysis.maxMirrorDiffRate !== undefined) ? { shadow: req.shadow ?? this.shadowFor(service, req.to) } : {}),
        state: 'running',
        fromWeights: from,
        weights,
        stepStartedAt: now,
        idleIntervals: 0,
        history: [],
        actor,
        startedAt: new Date(now).toISOString(),
      };
      if (req.approval !== undefined && req.approval.length > 0) rollout.approval = [...new Set(req.approval)].sort((a, b) => a - b);
      if (req.hooks !== undefined && req.hooks.length > 0) rollout.hooks = req.hooks;
      rollout.preRolloutDone = hooksFor(rollout, 'pre-rollout').length === 0;
      const drainMs = this.drainMsOf(service, req.connectionsDrainMs);
      if (drainMs !== undefined) rollout.connectionsDrainMs = drainMs;
      const s = this.svc(next, service);
      s.previousWeights = from;
      s.weights = { ...from };
      s.rollout = rollout;
      const gate = gateOrEnter(rollout, s, now);
      const detail: Record<string, unknown> = { rollout: rollout.id, to: req.to, steps, intervalMs: req.intervalMs, weights: rollout.weights };
      if (gate !== 'entered') detail.gate = gate === 'awaiting_approval' ? 'approval' : 'hooks';
      return { service, action: 'rollout.started', detail, result: rollout };
    });
    await this.reconcileDrivers();
    return r.result!;
  }

  /** The shadow mirror of a rollout that gave none: the service's mirror settings (its
   * ignores, headers…) pointed at the target, copying every eligible request. */
  private shadowFor(service: string, to: string): MirrorConfig {
    const base = this.state.services[service]?.mirror ?? this.dp.service(service)?.mirror;
    return { ...normalizeMirror({ to }, [to], 'mirror', []), ...(base ?? {}), to };
  }

  private requireRollout(next: DesiredState, service: string): RolloutRecord {
    const r = next.services[service]?.rollout;
    if (r === undefined) throw new ControlError(404, 'NO_ROLLOUT', `service ${service} has no rollout`);
    return r;
  }

  /** pause | resume | promote | abort. */
  async steer(actor: string, service: string, action: 'pause' | 'resume' | 'promote' | 'abort'): Promise<RolloutRecord> {
    this.requireService(service);
    const r = await this.mutate(actor, (next) => {
      const ro = this.requireRollout(next, service);
      const s = next.services[service];
      const allowed = action === 'resume' ? ro.state === 'paused' : action === 'pause' ? ro.state === 'running' : !isTerminal(ro.state);
      if (!allowed) throw new ControlError(409, 'ROLLOUT_NOT_ACTIVE', `cannot ${action} a rollout that is ${ro.state}`, { state: ro.state });
      const now = new Date();
      switch (action) {
        case 'pause':
          ro.state = 'paused';
          break;
        case 'resume':
          ro.state = 'running';
          delete ro.reason;
          ro.stepStartedAt = now.getTime();
          ro.idleIntervals = 0;
          // Analysis begins anew after a pause (the operator held the step on purpose).
          delete ro.judgedThrough;
          delete ro.waitedThrough;
          break;
        case 'promote':
          delete ro.pending;
          ro.state = 'succeeded';
          ro.step = ro.steps.length - 1;
          ro.weights = stepWeights(ro.fromWeights, ro.to, 100);
          ro.history.push({ step: ro.step, percent: 100, at: now.toISOString() });
          ro.endedAt = now.toISOString();
          ro.reason = `promoted by ${actor}`;
          s.weights = ro.weights;
          break;
        case 'abort':
          delete ro.pending;
          ro.state = 'aborted';
          ro.weights = { ...ro.fromWeights };
          ro.endedAt = now.toISOString();
          ro.reason = `aborted by ${actor}`;
          s.weights = ro.weights;
          break;
      }
      return { service, action: `rollout.${action === 'abort' ? 'aborted' : action === 'promote' ? 'promoted' : action === 'pause' ? 'paused' : 'resumed'}`, detail: { rollout: ro.id, step: ro.step, weights: ro.weights }, result: ro };
    });
    this.clearTimer(service);
    if (action === 'promote') this.notify(r.result!, [{ on: 'post-rollout', step: r.result!.step }]);
    if (action === 'abort') this.notify(r.result!, [{ on: 'rolled-back', step: r.result!.step }]);
    await this.reconcileDrivers();
    return r.result!;
  }

  /** Approves the step a rollout waits at: it is entered (after its pre-step hooks). */
  async approve(actor: string, service: string): Promise<RolloutRecord> {
    this.requireService(service);
    const r = await this.mutate(actor, (next) => {
      const ro = this.requireRollout(next, service);
      if (ro.state !== 'awaiting_approval') {
        throw new ControlError(409, 'NOT_AWAITING_APPROVAL', `the rollout of ${service} is ${ro.state}, not awaiting an approval`, { state: ro.state });
      }
      const s = next.services[service];
      ro.approved = [...(ro.approved ?? []), ro.step];
      ro.state = 'running';
      const gate = gateOrEnter(ro, s, Date.now());
      // The wait for the approval is not part of the step's window.
      delete ro.judgedThrough;
      delete ro.waitedThrough;
      return { service, action: 'rollout.approved', detail: { rollout: ro.id, step: ro.step, percent: ro.steps[ro.step], weights: ro.weights, entered: gate === 'entered' }, result: ro };
    });
    await this.reconcileDrivers();
    return r.result!;
  }

  /** Sends the notification hooks of changes just written (in the background). */
  private notify(ro: RolloutRecord, notes: Note[]): void {
    for (const n of notes) {
      const hooks = hooksFor(ro, n.on, n.step);
      if (hooks.length === 0) continue;
      const payload = hookPayload(ro, n.on, { step: n.step, percent: ro.steps[n.step], reason: ro.reason ?? null, ...n.extra });
      this.hookRunner.notify(hooks, payload);
    }
  }

  private clearTimer(service: string): void {
    const t = this.timers.get(service);
    if (t !== undefined) clearTimeout(t);
    this.timers.delete(service);
  }

  private schedule(service: string): void {
    this.clearTimer(service);
    const ro = this.activeRollout(service);
    if (ro === undefined || ro.state !== 'running' || this.closed || !this.fences.has(service)) return;
    // A step waiting for minRequests keeps its window (stepStartedAt) growing; its next
    // check is one interval after the previous one, not at once.
    // A pending step's gates (its pre-step hooks) run at once. Analysis intervals count
    // from the step's window, which begins at the first whole second after the step did
    // (see tick): an interval shorter than a second must not end before its window began
    // and be counted as one without traffic.
    const windowStart = Math.ceil(ro.stepStartedAt / 1000) * 1000;
    const wait = ro.pending === true ? 0 : Math.max(0, windowStart + ro.intervalMs * (ro.idleIntervals + 1) - Date.now());
    this.timers.set(service, setTimeout(() => this.runTick(service), wait));
  }

  /** Runs one tick; at most one per service at a time. */
  private runTick(service: string): void {
    this.timers.delete(service);
    if (this.ticking.has(service)) return;
    this.ticking.add(service);
    this.tick(service)
      .catch((err) => {
        this.log.error({ service, err: (err as Error).message }, 'rollout step failed; retrying at the next interval');
        // A store outage must not lose the rollout: try again one interval later.
        const cur = this.activeRollout(service);
        if (cur?.state === 'running' && !this.closed && this.fences.has(service)) {
          this.clearTimer(service);
          this.timers.set(service, setTimeout(() => this.runTick(service), cur.intervalMs));
        }
      })
      .finally(() => this.ticking.delete(service));
  }

  /** One analysis interval of a running rollout (or, for a pending step, its gates). */
  private async tick(service: string): Promise<void> {
    const cur = this.activeRollout(service);
    if (cur === undefined || cur.state !== 'running') return;
    const fence = this.fences.get(service);
    if (fence === undefined) return;
    if (cur.pending === true) return this.runGates(service, cur, fence);
    const now = Date.now();
    // A 0% step (the tester lane) has no user traffic to judge: once its interval is
    // over (and its gates passed) the rollout moves on.
    const judged = cur.steps[cur.step] > 0;
    // …unless it mirrors traffic to the target (a shadow step): then it is judged on the copies.
    const shadow = cur.steps[cur.step] === 0 && cur.shadow !== undefined;
    // Counters are kept per whole second: the window starts at the first second that
    // began after the step did, so nothing from before the step (an earlier rollout's
    // errors in the same second) is judged.
    let from = Math.ceil(cur.stepStartedAt / 1000) * 1000;
    let to = now;
    let through: number | undefined;
    let missing: string[] = [];
    if (this.fleet.shared && judged) {
      // The fleet's counters: only seconds every replica has published (a second read
      // before that would miss the others' share), and none skipped: after a step passed,
      // the next window starts right after the last second judged, not at the clock.
      const first = cur.judgedThrough !== undefined ? cur.judgedThrough + 1 : from / 1000;
      ({ through, missing } = await this.fleet.completeThrough(first));
      if (through < first || (cur.waitedThrough !== undefined && through <= cur.waitedThrough)) {
        // No complete second yet, or none since the last "wait" verdict: look again
        // shortly; an interval that brought no new second is not an idle interval.
        this.clearTimer(service);
        this.timers.set(service, setTimeout(() => this.runTick(service), COMPLETE_RETRY_MS));
        return;
      }
      from = first * 1000;
      to = through * 1000 + 999;
    }
    let result: AnalysisResult | undefined;
    if (shadow) {
      // A shadow step is judged on this process's mirror counters (the copies its data
      // plane, or its workers, sent and compared).
      result = analyzeShadow(cur.analysis, cur.step, cur.to, this.dp.mirrorStatsOf(service, cur.to).window.summary(from, to));
    } else if (judged) {
      const window = (v: string) => this.fleet.summary(service, v, from, to);
      const prom = cur.analysis.prometheus;
      // Prometheus is asked at the same time as the counters are read.
      const extra =
        prom === undefined
          ? []
          : await evaluatePrometheus(prom, { service, version: cur.to, baseline: cur.baseline }, Math.max(1000, Math.min(cur.intervalMs, 10_000)));
      result = analyze(
        cur.analysis,
        cur.step,
        { version: cur.to, w: await window(cur.to) },
        cur.baseline !== null ? { version: cur.baseline, w: await window(cur.baseline) } : undefined,
        extra,
      );
      // Said, not hidden: the window lacks the share of replicas that died unpublished.
      if (missing.length > 0) result.missingReplicas = missing;
    }
    let notes: Note[] = [];
    const applied = this.mutate('rollout', (next) => {
      notes = [];
      const ro = this.requireRollout(next, service);
      // Steered (paused, promoted, aborted) while this interval was being analysed.
      if (ro.id !== cur.id || ro.state !== 'running' || ro.pending === true || ro.step !== cur.step || ro.stepStartedAt !== cur.stepStartedAt || ro.idleIntervals !== cur.idleIntervals) {
        throw new StaleTick();
      }
      const s = next.services[service];
      const at = new Date(now).toISOString();
      const stepName = `step ${ro.step} (${ro.steps[ro.step]}%)`;
      if (result !== undefined) {
        ro.lastAnalysis = result;
        ro.stepAnalyses = { ...ro.stepAnalyses, [String(ro.step)]: result };
      }
      const analysis = result ?? null;
      const rollBack = (reason: string): Change => {
        ro.state = 'rolled_back';
        ro.reason = reason;
        ro.weights = { ...ro.fromWeights };
        ro.endedAt = at;
        s.weights = ro.weights;
        notes.push({ on: 'rolled-back', step: ro.step, extra: { analysis } });
        return { service, action: 'rollout.rolled_back', detail: { rollout: ro.id, step: ro.step, percent: ro.steps[ro.step], reason, analysis, weights: ro.weights } };
      };
      const advance = (): Change => {
        ro.idleIntervals = 0;
        ro.stepStartedAt = now;
        if (through !== undefined) ro.judgedThrough = through;
        delete ro.waitedThrough;
        notes.push({ on: 'post-step', step: ro.step, extra: { analysis } });
        if (ro.step === ro.steps.length - 1) {
          ro.state = 'succeeded';
          ro.endedAt = at;
          ro.reason = `every step passed analysis; ${ro.to} carries 100%`;
          notes.push({ on: 'post-rollout', step: ro.step });
          return { service, action: 'rollout.succeeded', detail: { rollout: ro.id, analysis, weights: ro.weights } };
        }
        ro.step++;
        const gate = gateOrEnter(ro, s, now);
        if (gate === 'entered') return { service, action: 'rollout.step', detail: { rollout: ro.id, step: ro.step, percent: ro.steps[ro.step], analysis, weights: ro.weights } };
        // The step passed; the next one waits for its gates with the weights as they are.
        const action = gate === 'awaiting_approval' ? 'rollout.awaiting_approval' : 'rollout.gated';
        return { service, action, detail: { rollout: ro.id, step: ro.step, percent: ro.steps[ro.step], analysis, weights: ro.weights } };
      };
      if (result === undefined) return advance();
      let verdict = result.verdict;
      if (verdict === 'fail') return rollBack(`analysis failed at ${stepName}: ${result.reason}`);
      if (verdict === 'inconclusive') {
        const policy = ro.analysis.inconclusivePolicy ?? 'pause';
        if (policy === 'rollback') return rollBack(`analysis inconclusive at ${stepName} (inconclusivePolicy rollback): ${result.reason}`);
        if (policy === 'pause') {
          ro.state = 'paused';
          ro.reason = `paused: analysis inconclusive at ${stepName} (inconclusivePolicy pause): ${result.reason}; resume, promote or abort`;
          return { service, action: 'rollout.paused', detail: { rollout: ro.id, step: ro.step, reason: ro.reason, analysis, weights: ro.weights } };
        }
        // continue: the step is judged on the criteria that could be evaluated.
        verdict = combine(result.criteria.filter((c) => c.verdict !== 'inconclusive')).verdict;
      }
      if (verdict === 'pass') return advance();
      ro.idleIntervals++;
      if (through !== undefined) ro.waitedThrough = through;
      if (ro.idleIntervals >= ro.analysis.noTrafficIntervals) {
        if (ro.analysis.noTrafficPolicy === 'continue') return advance();
        return rollBack(`no traffic: ${result.reason} for ${ro.idleIntervals} interval(s)`);
      }
      // Keep the window growing: the step waits for enough requests.
      return { service, action: 'rollout.waiting', detail: { rollout: ro.id, step: ro.step, analysis, idleIntervals: ro.idleIntervals } };
    }, fence.key === '' ? {} : { fence });
    if (!(await this.written(service, applied))) return;
    const ro = this.state.services[service]?.rollout;
    if (ro !== undefined) this.notify(ro, notes);
    this.schedule(service);
  }

  /** Awaits a driver's write; false when it was stale or the lease is gone (handled). */
  private async written(service: string, applied: Promise<unknown>): Promise<boolean> {
    try {
      await applied;
      return true;
    } catch (err) {
      if (err instanceof StaleTick) {
        this.schedule(service);
        return false;
      }
      if (err instanceof LeaseLostError) {
        this.log.warn({ service }, 'rollout lease lost before the step was written; another replica drives it');
        this.fences.delete(service);
        this.clearTimer(service);
        return false;
      }
      throw err;
    }
  }

  /**
   * The gates of a pending step: the pre-rollout hooks (before the first step) and the
   * step's pre-step hooks, one after the other. All answered 2xx → the step is entered;
   * the first that did not → the rollout is rolled back, its reason naming the hook
   * and its answer.
   */
  private async runGates(service: string, cur: RolloutRecord, fence: { key: string; token: string }): Promise<void> {
    const hooks = [...(cur.preRolloutDone === true ? [] : hooksFor(cur, 'pre-rollout')), ...hooksFor(cur, 'pre-step')];
    const outcomes: { hook: string; on: HookPhase; ok: boolean; status?: number; ms: number; answer: string }[] = [];
    const nextWeights = stepWeights(cur.fromWeights, cur.to, cur.steps[cur.step]);
    for (const h of hooks) {
      if (needsApproval(cur)) break;
      const o = await this.hookRunner.gate(h, hookPayload(cur, h.on, { nextWeights }));
      outcomes.push({ ...o, on: h.on });
      if (!o.ok || this.closed) break;
    }
    const failed = outcomes.find((o) => !o.ok);
    let notes: Note[] = [];
    const applied = this.mutate('rollout', (next) => {
      notes = [];
      const ro = this.requireRollout(next, service);
      if (ro.id !== cur.id || ro.state !== 'running' || ro.pending !== true || ro.step !== cur.step) throw new StaleTick();
      const s = next.services[service];
      const now = Date.now();
      if (needsApproval(ro)) {
        ro.state = 'awaiting_approval';
        return { service, action: 'rollout.awaiting_approval', detail: { rollout: ro.id, step: ro.step, percent: ro.steps[ro.step], weights: ro.weights } };
      }
      if (failed !== undefined) {
        const reason = `${failed.on} hook ${failed.hook} ${failed.answer} (before step ${ro.step}, ${ro.steps[ro.step]}%)`;
        delete ro.pending;
        ro.state = 'rolled_back';
        ro.reason = reason;
        ro.weights = { ...ro.fromWeights };
        ro.endedAt = new Date(now).toISOString();
        s.weights = ro.weights;
        notes.push({ on: 'rolled-back', step: ro.step });
        return { service, action: 'rollout.rolled_back', detail: { rollout: ro.id, step: ro.step, percent: ro.steps[ro.step], reason, hooks: outcomes, weights: ro.weights } };
      }
      enterStep(ro, s, now);
      // Time passed at the gate: the step's window starts now, not after the last second judged.
      delete ro.judgedThrough;
      delete ro.waitedThrough;
      return { service, action: 'rollout.step', detail: { rollout: ro.id, step: ro.step, percent: ro.steps[ro.step], weights: ro.weights, hooks: outcomes } };
    }, fence.key === '' ? {} : { fence });
    if (!(await this.written(service, applied))) return;
    const ro = this.state.services[service]?.rollout;
    if (ro !== undefined) this.notify(ro, notes);
    this.schedule(service);
  }

  /** admin: no new requests to the endpoint; in-flight ones finish. */
  async drainEndpoint(actor: string, service: string, id: string): Promise<{ revision: number }> {
    this.requireService(service);
    const found = this.dp.allEndpoints().some((e) => e.service === service && e.id === id && e.listed);
    if (!found) throw new ControlError(404, 'UNKNOWN_ENDPOINT', `service ${service} has no endpoint ${id}`);
    // Recorded first, applied once recorded: a drain answered as failed never happened,
    // and the other replicas of a fleet apply it from the event.
    const r = await this.mutate(actor, () => ({ service, action: 'endpoint.drained', detail: { endpoint: id } }));
    this.dp.drainEndpoint(service, id);
    return { revision: r.revision };
  }

  /** Records a non-weight event (config reload) in the audit log. */
  async record(actor: string, action: string, detail: Record<string, unknown>): Promise<void> {
    await this.mutate(actor, () => ({ service: null, action, detail }));
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.driverTimer) clearInterval(this.driverTimer);
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    await this.chain.catch(() => {});
    await this.hookRunner.close();
    // Hand the rollouts over at once rather than after the lease TTL.
    for (const name of [...this.fences.keys()]) await this.fleet.release(name);
    await this.fleet.close();
    await this.store.close();
  }
}

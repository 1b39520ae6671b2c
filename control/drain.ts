// `cutover --wait`: has the old version drained on every replica of the fleet?
//
// "Drained" means every request of the old versions that was in flight when the switch
// was made has finished, on every replica. Two things make a naive answer wrong:
//
// - The registry can be empty or partial for a moment (Redis restarted empty: replicas
//   re-register within a heartbeat). So the replicas to wait for are those this replica
//   knew when the wait began plus any that appear during it, and a replica leaves the
//   wait only by answering (applied the revision, nothing of the old versions in flight),
//   by its last record (`gone`, written as it closes), or by being proven dead: missing
//   from successful scans for a whole registration TTL. Never by being absent right now.
// - A request cut by a shutdown (grace ran out) or lost with a process that died is not
//   drained, although nothing is in flight afterwards. Every replica counts the requests
//   it cut (VersionStats.cut, published in its record); a dead replica's last in-flight
//   count was cut with it. Any cut during the wait makes the answer `drained: false`
//   with the count.

//
// With a connection drain (`connections.drain`), the long-lived connections it chose
// count like requests in flight: a replica is drained when neither is left, and the
// answer says how many connections were moved.

import type { Fleet, ReplicaInfo } from './fleet.js';

export interface DrainAnswer {
  /** Every request of the old versions finished: none was cut, none is in flight. */
  drained: boolean;
  /** The deadline passed with requests still in flight (or a replica unaccounted for). */
  timedOut: boolean;
  /** Requests of the old versions cut (not finished) during the wait, fleet-wide. */
  cut: number;
  /** Per replica: its old-version requests in flight and cut during the wait, and how
   * it left the wait. */
  replicas: Record<string, { inflight: number; cut: number; connections: number; state: 'drained' | 'draining' | 'gone' | 'dead' }>;
  /** Long-lived connections a connection drain closed during the wait, fleet-wide. */
  connectionsMoved: number;
}

export interface LocalDrain {
  /** Resolves true when this replica (every worker of it) has nothing of the versions
   * in flight, false at the deadline. Exact, unlike its published record. */
  waitIdle(timeoutMs: number): Promise<boolean>;
  /** This replica's cut counts now. */
  cut(): Record<string, Record<string, number>>;
  /** This replica's in-flight counts now. */
  inflight(): Record<string, Record<string, number>>;
  /** Connections a drain chose that are still open, now. */
  closing(): Record<string, Record<string, number>>;
  /** Connections drains closed so far (only grows). */
  drained(): Record<string, Record<string, number>>;
}

const POLL_MS = 50;

export async function drainWait(
  fleet: Fleet,
  local: LocalDrain,
  service: string,
  versions: string[],
  revision: number,
  timeoutMs: number,
): Promise<DrainAnswer> {
  const deadline = Date.now() + timeoutMs;
  const sum = (m: Record<string, Record<string, number>> | undefined): number => versions.reduce((n, v) => n + (m?.[service]?.[v] ?? 0), 0);
  const tracked = new Map<string, { base: number; movedBase: number; last: ReplicaInfo; end?: 'gone' | 'dead' }>();
  const track = (r: ReplicaInfo): void => {
    if (!tracked.has(r.id)) tracked.set(r.id, { base: sum(r.cut), movedBase: sum(r.connectionsDrained), last: r });
  };
  // The replicas known before this scan (their counts as last seen are the baseline),
  // so one that closes right now is still waited for, from its last record.
  for (const r of fleet.known()) track(r);
  const selfBase = sum(local.cut());
  tracked.get(fleet.id)!.base = selfBase;
  tracked.get(fleet.id)!.movedBase = sum(local.drained());

  const answer = (timedOut: boolean): DrainAnswer => {
    const replicas: DrainAnswer['replicas'] = {};
    let cut = 0;
    let moved = 0;
    for (const [id, t] of tracked) {
      const self = id === fleet.id;
      const inflight = sum(self ? local.inflight() : t.last.inflight);
      const connections = t.end === 'dead' ? 0 : sum(self ? local.closing() : t.last.closing);
      // A replica that died took its requests in flight with it.
      const c = (self ? sum(local.cut()) : sum(t.last.cut)) - t.base + (t.end === 'dead' ? inflight : 0);
      cut += c;
      moved += Math.max(0, (self ? sum(local.drained()) : sum(t.last.connectionsDrained)) - t.movedBase);
      replicas[id] = { inflight: t.end === 'dead' ? 0 : inflight, cut: c, connections, state: t.end ?? (inflight === 0 && connections === 0 ? 'drained' : 'draining') };
    }
    return { drained: !timedOut && cut === 0, timedOut, cut, replicas, connectionsMoved: moved };
  };

  for (;;) {
    let settled = true;
    try {
      const records = await fleet.observe();
      const byId = new Map(records.map((r) => [r.id, r]));
      // A replica that appears during the wait (started, or was unseen) is waited for too.
      for (const r of records) if (r.gone !== true) track(r);
      for (const [id, t] of tracked) {
        if (t.end !== undefined) continue;
        const r = byId.get(id);
        if (r !== undefined) {
          t.last = r;
          if (r.gone === true) t.end = 'gone';
          else if (!(r.revision >= revision && sum(r.inflight) === 0 && sum(r.closing) === 0)) settled = false;
        } else if (fleet.provenDead(id)) t.end = 'dead';
        else settled = false; // missing now, maybe re-registering: not an answer
      }
    } catch {
      settled = false; // Redis trouble: keep waiting until the deadline
    }
    if (settled) break;
    if (Date.now() >= deadline) return answer(true);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  // This replica's own answer is exact (with gateway.workers, asked of each worker).
  const idle = await local.waitIdle(Math.max(0, deadline - Date.now()));
  return answer(!idle);
}

/** One process (memory or file store): this replica's exact answer. */
export async function drainWaitLocal(local: LocalDrain, service: string, versions: string[], timeoutMs: number): Promise<DrainAnswer> {
  const sum = (m: Record<string, Record<string, number>>): number => versions.reduce((n, v) => n + (m[service]?.[v] ?? 0), 0);
  const base = sum(local.cut());
  const movedBase = sum(local.drained());
  const idle = await local.waitIdle(timeoutMs);
  const cut = sum(local.cut()) - base;
  const inflight = sum(local.inflight());
  const connections = sum(local.closing());
  return {
    drained: idle && cut === 0,
    timedOut: !idle,
    cut,
    replicas: { local: { inflight, cut, connections, state: inflight === 0 && connections === 0 ? 'drained' : 'draining' } },
    connectionsMoved: sum(local.drained()) - movedBase,
  };
}

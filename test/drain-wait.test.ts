// control/drain.ts against a scripted fleet: which registry readings may end a drain
// wait, and what the answer says. (The suites on real processes are honest-answers and
// faults; this one pins the rules table-style.)

import { describe, expect, it } from 'vitest';
import { drainWait, type LocalDrain } from '../control/drain.js';
import type { Fleet, ReplicaInfo } from '../control/fleet.js';

const rec = (id: string, o: { revision?: number; blue?: number; cut?: number; gone?: boolean; closing?: number; moved?: number } = {}): ReplicaInfo => ({
  id,
  addresses: {},
  revision: o.revision ?? 2,
  inflight: { shop: { blue: o.blue ?? 0, green: 0 } },
  cut: { shop: { blue: o.cut ?? 0, green: 0 } },
  closing: { shop: { blue: o.closing ?? 0, green: 0 } },
  connectionsDrained: { shop: { blue: o.moved ?? 0, green: 0 } },
  startedAt: '',
  at: 0,
  ...(o.gone ? { gone: true } : {}),
});

/** A fleet whose registry scans return `scans` in turn (the last one repeats); an entry
 * that is an Error is a failed scan. `dead` lists ids proven dead from scan `deadFrom`. */
function scripted(scans: (ReplicaInfo[] | Error)[], known: ReplicaInfo[], dead: { id: string; from: number }[] = []): Fleet & { scans: number } {
  let i = 0;
  const f = {
    id: 'self',
    shared: true,
    scans: 0,
    async replicas() {
      return [];
    },
    async observe() {
      const s = scans[Math.min(i, scans.length - 1)];
      i++;
      f.scans = i;
      if (s instanceof Error) throw s;
      return [rec('self'), ...s];
    },
    known: () => [rec('self'), ...known],
    provenDead: (id: string) => dead.some((d) => d.id === id && i > d.from),
    async completeThrough() {
      return { through: 0, missing: [] };
    },
    count: () => 1,
    async summary() {
      throw new Error('unused');
    },
    async lease() {
      return undefined;
    },
    async release() {},
    async close() {},
  };
  return f;
}

const zero = (): Record<string, Record<string, number>> => ({ shop: { blue: 0 } });
const idleLocal: LocalDrain = { waitIdle: async () => true, cut: zero, inflight: zero, closing: zero, drained: zero };

describe('drain wait rules', () => {
  it('an empty registry (Redis restarted empty) is no answer: it waits until the known replica is back and idle', async () => {
    const f = scripted([[], [], [rec('b', { blue: 4 })], [rec('b', { blue: 0 })]], [rec('b', { blue: 4 })]);
    const a = await drainWait(f, idleLocal, 'shop', ['blue'], 2, 5000);
    expect(f.scans).toBe(4);
    expect(a).toMatchObject({ drained: true, timedOut: false, cut: 0 });
  });

  it('a replica that has not applied the revision is not idle, whatever its counts', async () => {
    const f = scripted([[rec('b', { revision: 1 })], [rec('b', { revision: 2 })]], [rec('b')]);
    const a = await drainWait(f, idleLocal, 'shop', ['blue'], 2, 5000);
    expect(f.scans).toBe(2);
    expect(a.drained).toBe(true);
  });

  it('a replica that closed with requests cut: drained false with the count', async () => {
    const f = scripted([[rec('b', { blue: 4 })], [rec('b', { blue: 0, cut: 4, gone: true })]], [rec('b', { blue: 4 })]);
    const a = await drainWait(f, idleLocal, 'shop', ['blue'], 2, 5000);
    expect(a).toMatchObject({ drained: false, timedOut: false, cut: 4, replicas: { b: { state: 'gone', cut: 4 } } });
  });

  it('a replica proven dead took its in-flight requests with it: they count as cut', async () => {
    const f = scripted([[rec('b', { blue: 3 })], []], [rec('b', { blue: 3 })], [{ id: 'b', from: 3 }]);
    const a = await drainWait(f, idleLocal, 'shop', ['blue'], 2, 5000);
    expect(f.scans).toBe(4);
    expect(a).toMatchObject({ drained: false, cut: 3, replicas: { b: { state: 'dead', cut: 3, inflight: 0 } } });
  });

  it('cuts from before the wait are not counted; failed scans are waited through', async () => {
    const f = scripted([new Error('redis down'), [rec('b', { cut: 7 })]], [rec('b', { cut: 7 })]);
    const a = await drainWait(f, idleLocal, 'shop', ['blue'], 2, 5000);
    expect(a).toMatchObject({ drained: true, cut: 0 });
  });

  it('this replica cut requests during the wait (its workers shut down): drained false', async () => {
    let cut = 0;
    const local: LocalDrain = {
      waitIdle: async () => {
        cut = 2;
        return true;
      },
      cut: () => ({ shop: { blue: cut } }),
      inflight: zero,
      closing: zero,
      drained: zero,
    };
    const a = await drainWait(scripted([[]], []), local, 'shop', ['blue'], 2, 5000);
    expect(a).toMatchObject({ drained: false, cut: 2, replicas: { self: { cut: 2 } } });
  });

  it('a replica with no request in flight but connections a drain is still closing is not drained yet; the answer counts the connections moved', async () => {
    const f = scripted(
      [[rec('b', { closing: 3, moved: 5 })], [rec('b', { closing: 1, moved: 7 })], [rec('b', { closing: 0, moved: 8 })]],
      [rec('b', { closing: 3, moved: 5 })],
    );
    const a = await drainWait(f, idleLocal, 'shop', ['blue'], 2, 5000);
    expect(f.scans).toBe(3);
    expect(a).toMatchObject({ drained: true, connectionsMoved: 3, replicas: { b: { state: 'drained', connections: 0 } } });
  });

  it('the deadline with a replica still busy: timed out, not drained', async () => {
    const a = await drainWait(scripted([[rec('b', { blue: 1 })]], [rec('b', { blue: 1 })]), idleLocal, 'shop', ['blue'], 2, 150);
    expect(a).toMatchObject({ drained: false, timedOut: true });
  });
});

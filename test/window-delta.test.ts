// WindowCounters.takeDelta / add: what a data-plane worker ships to its primary and how
// the primary adds it up. Shipping at any moments, across second boundaries, must give
// the primary exactly the worker's counts — nothing lost, nothing twice.

import { describe, expect, it } from 'vitest';
import { WindowCounters } from '../gateway/stats.js';

describe('window deltas (gateway.workers)', () => {
  it('shipped at arbitrary moments, the deltas add up to the same windows', () => {
    const worker = new WindowCounters();
    const primary = new WindowCounters();
    const t0 = 1_800_000_000_000; // a whole second
    let seed = 7;
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    // Requests every 7 ms for 5 s; a shipment every ~100 ms at uneven times.
    let nextShip = t0 + 37;
    let shipments = 0;
    for (let t = t0; t < t0 + 5000; t += 7) {
      const status = rnd() < 0.1 ? 503 : 200;
      worker.record(status, 0.0001 + rnd() * 0.05, t);
      if (t >= nextShip) {
        for (const d of worker.takeDelta(t)) primary.add(d.sec, d.requests, d.errors, d.hist);
        nextShip = t + 60 + Math.floor(rnd() * 80);
        shipments++;
      }
    }
    // The last partial second too.
    for (const d of worker.takeDelta(t0 + 5000)) primary.add(d.sec, d.requests, d.errors, d.hist);
    expect(shipments).toBeGreaterThan(30);
    const end = t0 + 5000;
    for (const [from, to] of [
      [t0, end],
      [t0, t0 + 999],
      [t0 + 1000, t0 + 2999],
      [t0 + 4000, end],
    ]) {
      expect(primary.summary(from, to)).toEqual(worker.summary(from, to));
    }
    expect(primary.summary(t0, end).requests).toBe(Math.ceil(5000 / 7));
    // Nothing new: nothing shipped.
    expect(worker.takeDelta(t0 + 5000)).toEqual([]);
  });

  it('a first shipment carries what was counted before it; a shipment after a quiet gap carries only new seconds', () => {
    const w = new WindowCounters();
    const t0 = 1_800_000_000_000;
    w.record(200, 0.001, t0 + 10);
    w.record(500, 0.002, t0 + 1500);
    const first = w.takeDelta(t0 + 1600);
    expect(first.map((d) => [d.sec, d.requests, d.errors])).toEqual([
      [t0 / 1000, 1, 0],
      [t0 / 1000 + 1, 1, 1],
    ]);
    w.record(200, 0.001, t0 + 1700);
    w.record(200, 0.001, t0 + 9000);
    const second = w.takeDelta(t0 + 9100);
    expect(second.map((d) => [d.sec, d.requests])).toEqual([
      [t0 / 1000 + 1, 1],
      [t0 / 1000 + 9, 1],
    ]);
  });

  it('add never mixes seconds: a slot holding a newer second drops an older one', () => {
    const p = new WindowCounters();
    const t0 = 1_800_000_000_000;
    const sec = t0 / 1000;
    p.add(sec, 3, 1, [[5, 3]]);
    p.add(sec + 600, 2, 0, [[5, 2]]); // the same ring slot, 600 s later
    p.add(sec, 4, 0, [[5, 4]]); // late and out of the ring: dropped
    expect(p.summary((sec + 600) * 1000, (sec + 600) * 1000).requests).toBe(2);
    expect(p.summary(t0, t0).requests).toBe(0);
  });
});

// Slow start in the endpoint picker, exactly: the share a ramping endpoint wins at each
// point of its window, with the clock and the random draws under the test's control
// (Date.now and Math.random replaced for the duration of each case, restored after).
// test/zero-loss.test.ts shows the same ramp end to end through a gateway process.

import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseEndpoint } from '../config/load.js';
import { Endpoint, VersionStats } from './endpoint.js';
import { pickEndpoint, slowStartFactor } from './select.js';
import type { VersionSnapshot } from './snapshot.js';

/** A small seeded generator (mulberry32): the same draws on every run. */
function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WINDOW = 10_000;
const JOINED = 1_000_000;

function version(): { v: VersionSnapshot; old: Endpoint; fresh: Endpoint } {
  const stats = new VersionStats('shop', 'blue');
  const make = (addr: string, since: number): Endpoint => {
    const e = new Endpoint('shop', 'blue', parseEndpoint(addr), stats, { maxConnections: 1, idleTimeoutMs: 1000, connectTimeoutMs: 1000 });
    e.availableSince = since;
    return e;
  };
  const old = make('127.0.0.1:1001', 0);
  const fresh = make('127.0.0.1:1002', JOINED);
  const endpoints = [old, fresh];
  return { v: { name: 'blue', weight: 1, endpoints, all: endpoints, stats, slowStartMs: WINDOW }, old, fresh };
}

/** The fresh endpoint's share of `n` picks at `elapsed` ms into its window. */
function shareAt(elapsed: number, inflight: { old: number; fresh: number }, n = 20_000): number {
  const { v, old, fresh } = version();
  old.inflight = inflight.old;
  fresh.inflight = inflight.fresh;
  vi.spyOn(Date, 'now').mockReturnValue(JOINED + elapsed);
  vi.spyOn(Math, 'random').mockImplementation(seeded(elapsed + 1));
  let won = 0;
  for (let i = 0; i < n; i++) if (pickEndpoint(v) === fresh) won++;
  return won / n;
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('slow start', () => {
  it('the factor is 10% on joining, rises linearly, and is 100% from the end of the window', () => {
    expect(slowStartFactor(JOINED, WINDOW, JOINED)).toBeCloseTo(0.1, 10);
    expect(slowStartFactor(JOINED, WINDOW, JOINED + WINDOW / 2)).toBeCloseTo(0.55, 10);
    expect(slowStartFactor(JOINED, WINDOW, JOINED + WINDOW - 1)).toBeLessThan(1);
    expect(slowStartFactor(JOINED, WINDOW, JOINED + WINDOW)).toBe(1);
    expect(slowStartFactor(JOINED, WINDOW, JOINED + 10 * WINDOW)).toBe(1);
    expect(slowStartFactor(JOINED, WINDOW, JOINED - 5)).toBeCloseTo(0.1, 10); // a clock step back
    expect(slowStartFactor(JOINED, 0, JOINED)).toBe(1);
  });

  it('under even load a ramping endpoint wins factor/2 of the picks: a share that rises linearly across the window', () => {
    const points = [0, 0.25, 0.5, 0.75, 1, 2].map((x) => ({ x, share: shareAt(x * WINDOW, { old: 0, fresh: 0 }) }));
    for (const { x, share } of points) expect(share).toBeCloseTo(slowStartFactor(0, 1, Math.min(x, 1)) / 2, 1);
    for (let i = 1; i < points.length - 1; i++) expect(points[i].share).toBeGreaterThan(points[i - 1].share + 0.05);
    expect(points[5].share).toBeCloseTo(0.5, 1);
  });

  it('a ramping endpoint with fewer requests in flight still wins only its factor', () => {
    // The least loaded of the two choices is thinned like any other: an empty new
    // endpoint does not take every request while it ramps.
    expect(shareAt(0, { old: 3, fresh: 0 })).toBeCloseTo(0.1, 1);
    expect(shareAt(WINDOW / 2, { old: 3, fresh: 0 })).toBeCloseTo(0.55, 1);
    expect(shareAt(WINDOW, { old: 3, fresh: 0 })).toBe(1);
  });

  it('the old endpoint, past its window, is never thinned', () => {
    expect(shareAt(0, { old: 0, fresh: 3 })).toBe(0);
  });
});

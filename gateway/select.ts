// Version and endpoint selection. Everything here is O(versions) or O(1) per request;
// the weight line is prepared when the snapshot is built.

import type { Endpoint } from './endpoint.js';
import type { ServiceSnapshot, VersionSnapshot } from './snapshot.js';

/**
 * Hashes a sticky key to a point in [0, 1).
 * FNV-1a spreads the bytes; the murmur3 finalizer then mixes the high bits, which FNV
 * alone leaves poorly distributed for short, similar keys such as "user-1", "user-2".
 */
export function hashToUnit(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 4294967296;
}

/**
 * Places a point in [0, 1) on the cumulative weight line. Versions keep their config
 * order on the line, so when one version's weight rises the boundaries on both sides of
 * its interval move away from it: a fixed point can only move into the grown version,
 * never out of it. That is why a sticky key never moves back from green to blue while
 * green's weight goes 10 → 50 → 90.
 */
export function versionAt(svc: ServiceSnapshot, unit: number): VersionSnapshot | undefined {
  const line = svc.line;
  const n = line.length;
  if (n === 0) return undefined;
  const x = unit * svc.totalWeight;
  for (let i = 0; i < n - 1; i++) {
    if (x < line[i]) return svc.lineVersions[i];
  }
  return svc.lineVersions[n - 1];
}

/** Reads one cookie's value from a Cookie header without building a map of all of them. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  let i = 0;
  const len = header.length;
  while (i < len) {
    while (i < len && (header.charCodeAt(i) === 32 || header.charCodeAt(i) === 59)) i++;
    const eq = header.indexOf('=', i);
    if (eq === -1) return undefined;
    let end = header.indexOf(';', eq);
    if (end === -1) end = len;
    if (eq - i === name.length && header.startsWith(name, i)) {
      const v = header.slice(eq + 1, end).trim();
      return v === '' ? undefined : v;
    }
    i = end + 1;
  }
  return undefined;
}

/**
 * Least outstanding requests of two random choices ("power of two choices"): nearly
 * as good as scanning every endpoint for the least loaded, at O(1), and without the
 * herd effect of always picking the global minimum.
 *
 * Slow start thins the winner: an endpoint at fraction f of its ramp keeps a win with
 * probability f and otherwise yields to the other choice. Under even load each endpoint
 * wins 1/n of the picks, so a ramping one gets f/n: a share that rises linearly with f.
 */
export function pickEndpoint(v: VersionSnapshot): Endpoint | undefined {
  const eps = v.endpoints;
  const n = eps.length;
  if (n === 0) return undefined;
  if (n === 1) return eps[0];
  const i = (Math.random() * n) | 0;
  let j = (Math.random() * (n - 1)) | 0;
  if (j >= i) j++;
  let a = eps[i];
  let b = eps[j];
  if (b.inflight < a.inflight) {
    const t = a;
    a = b;
    b = t;
  }
  if (v.slowStartMs !== 0 && Math.random() >= slowStartFactor(a.availableSince, v.slowStartMs, Date.now())) return b;
  return a;
}

/** The fraction of a full share an endpoint gets: 10% when it becomes available,
 * rising linearly to 100% at the end of the slow-start window. */
export function slowStartFactor(since: number, windowMs: number, now: number): number {
  if (windowMs === 0) return 1;
  const t = (now - since) / windowMs;
  return t >= 1 ? 1 : 0.1 + 0.9 * Math.max(0, t);
}

// The control API's failed-authentication limiter (control.authRateLimit).
//
// Keyed by client, not by socket address string: an IPv4 address is one client, and so
// is an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack listener reports
// for an IPv4 peer) — the same key as the plain IPv4 address. An IPv6 client is its /64:
// a single host is routinely given a whole /64 and can pick any of its 2^64 source
// addresses, so keying by the full address would give it unlimited fresh attempts.
//
// Memory: two tables. `counting` holds clients with failures but not refused; it is
// bounded by maxClients and evicts its oldest entry when full (a client evicted there
// only loses failures it had not yet been refused for). `refused` holds clients being
// refused and never forgets one before its refusal ends, whatever the bound: an attacker
// who could push a refused key out by failing from other addresses would get fresh
// attempts for it. Each refused entry cost `failures` failed requests from a distinct
// key and leaves when its window ends, so that table is bounded by the attack's own rate.

import { isIPv4, isIPv6 } from 'node:net';

export interface AuthLimit {
  /** Failed authentications per window before the client is refused (0: no limit). */
  failures: number;
  windowMs: number;
  /** Clients remembered in the counting table (refused clients are not counted). */
  maxClients: number;
}

/** The eight 16-bit groups of a valid IPv6 address (zone index dropped, dotted tail read). */
function ipv6Groups(ip: string): number[] {
  let s = ip.toLowerCase();
  const zone = s.indexOf('%');
  if (zone !== -1) s = s.slice(0, zone);
  const lastColon = s.lastIndexOf(':');
  const tail = s.slice(lastColon + 1);
  if (tail.includes('.')) {
    const o = tail.split('.').map(Number);
    s = `${s.slice(0, lastColon + 1)}${((o[0] << 8) | o[1]).toString(16)}:${((o[2] << 8) | o[3]).toString(16)}`;
  }
  const [head, rest] = s.split('::');
  const part = (x: string | undefined): number[] => (x === undefined || x === '' ? [] : x.split(':').map((g) => parseInt(g, 16)));
  const h = part(head);
  if (rest === undefined) return h;
  const t = part(rest);
  return [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
}

/**
 * The limiter's key for a client address: IPv4 as is, IPv4-mapped IPv6 as its IPv4
 * address, other IPv6 as its /64 (`2001:db8:0:1::/64`). Anything else (no address) as is.
 */
export function clientKey(ip: string): string {
  if (isIPv4(ip)) return ip;
  if (!isIPv6(ip)) return ip;
  const g = ipv6Groups(ip);
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `${g[6] >> 8}.${g[6] & 0xff}.${g[7] >> 8}.${g[7] & 0xff}`;
  }
  return `${g.slice(0, 4).map((x) => x.toString(16)).join(':')}::/64`;
}

interface Counting {
  count: number;
  /** When the first failure of the current window happened. */
  since: number;
}

export class AuthLimiter {
  private readonly counting = new Map<string, Counting>();
  /** key → refused until (ms). Insertion order is refusal order, so the oldest ends first. */
  private readonly refused = new Map<string, number>();

  constructor(
    private limit: AuthLimit,
    private readonly now: () => number = Date.now,
  ) {}

  get enabled(): boolean {
    return this.limit.failures > 0;
  }

  get settings(): Readonly<AuthLimit> {
    return this.limit;
  }

  /** A reloaded control.authRateLimit; remembered clients stay. */
  configure(limit: AuthLimit): void {
    this.limit = limit;
  }

  /** Clients remembered: { counting, refused } (tests and status). */
  get size(): { counting: number; refused: number } {
    return { counting: this.counting.size, refused: this.refused.size };
  }

  /** Milliseconds left of this client's refusal; 0 when it is not refused. */
  refusedFor(ip: string): number {
    if (!this.enabled) return 0;
    this.sweep();
    const until = this.refused.get(clientKey(ip));
    return until === undefined ? 0 : Math.max(0, until - this.now());
  }

  /** Counts a presented token that matched none. Returns true when this failure got
   * the client refused (for one window). */
  failed(ip: string): boolean {
    if (!this.enabled) return false;
    const key = clientKey(ip);
    const now = this.now();
    const { failures, windowMs, maxClients } = this.limit;
    const until = this.refused.get(key);
    if (until !== undefined) {
      // Refused clients are not asked for a token (refusedFor first); one whose
      // refusal just ended starts afresh.
      if (until > now) return false;
      this.refused.delete(key);
    }
    let f = this.counting.get(key);
    if (f === undefined || now - f.since >= windowMs) {
      if (f === undefined) {
        // Full: forget the client added longest ago (Map order); it only loses failures
        // it had not been refused for. Refused clients are in the other table.
        while (this.counting.size >= maxClients) this.counting.delete(this.counting.keys().next().value as string);
      }
      f = { count: 0, since: now };
      this.counting.set(key, f);
    }
    f.count++;
    if (f.count < failures) return false;
    this.counting.delete(key);
    this.refused.set(key, now + windowMs);
    return true;
  }

  /** Ends the refusals that are over: from the front, as refusals end in the order they
   * began (a reload that shortens the window only lets some end a little late). */
  private sweep(): void {
    const now = this.now();
    for (const [key, until] of this.refused) {
      if (until > now) break;
      this.refused.delete(key);
    }
  }
}

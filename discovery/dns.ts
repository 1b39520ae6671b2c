// The DNS provider: a version whose source is `dns` takes its endpoints from DNS —
// A/AAAA records of a name plus the configured port (`dns: { name, port }`, e.g. Docker
// Swarm's `tasks.SERVICE` or a Kubernetes headless Service), or SRV records, which give
// the ports (`dns: { srv }`), their targets resolved to addresses.
//
// Each distinct query (resolver + name) is re-resolved every `interval`, and no later
// than the smallest TTL of the answer (with a floor of MIN_TTL_REFRESH_MS, so a TTL of 0
// does not turn into a hot loop). Answers are compared with the previous ones; only a
// change is delivered, at most once per COALESCE_MS (discovery/provider.ts). Addresses that disappear leave the
// set, and the data plane drains them (in-flight requests finish).
//
// Stale but safe: a resolver that fails (timeout, refused, SERVFAIL, unreachable) never
// empties a version — the last good answer keeps serving, the query is retried with
// jittered exponential backoff, and staleness() says how old that answer is. An *empty*
// answer (NXDOMAIN, NODATA, zero records) is a real answer, but during a redeploy a name
// can be empty for a moment: a version that had endpoints keeps them for `emptyGrace`
// (per version) and is emptied only if the name is still empty then.
//
// Uses node:dns's promise Resolver (c-ares) with { ttl: true } — a real DNS query to the
// configured server (or the system's), never getaddrinfo/`/etc/hosts`, and no search
// domains: names should be fully qualified (Swarm's `tasks.X` is answered as is by
// Docker's embedded DNS).

import { Resolver } from 'node:dns/promises';
import type { Logger } from 'pino';
import type { Config, EndpointAddress, VersionConfig } from '../config/types.js';
import { backoffMs, pause, WatchingProvider, type FollowedVersion, type VersionAnswer, type WantedWatch } from './provider.js';

/** At most one snapshot delivery per this many ms (changes of several names coalesce). */
/** A TTL never brings the next query closer than this (TTL 0 answers, dnsmasq's default). */
export const MIN_TTL_REFRESH_MS = 1000;
/** Per-query timeout and attempts of the c-ares resolver (per server). */
const QUERY_TIMEOUT_MS = 1500;
const QUERY_TRIES = 2;

type DnsSource = Extract<VersionConfig['source'], { kind: 'dns' }>;

/** Answer codes that mean "this name has no such records": an empty answer. */
const EMPTY_CODES = new Set(['ENODATA', 'ENOTFOUND']);

/** One address the DNS answer gave: with its port for SRV answers. */
export interface DnsRecord {
  address: string;
  /** From the SRV record; A/AAAA answers take the source's port. */
  port?: number;
  /** The name the address was found under (the A/AAAA name, or the SRV target). */
  name: string;
}

interface Answer {
  records: DnsRecord[];
  /** Smallest TTL in the answer, in seconds (undefined when unknown, e.g. SRV). */
  ttl?: number;
}

function codeOf(err: unknown): string {
  return String((err as { code?: unknown })?.code ?? '');
}

function isEmptyAnswer(err: unknown): boolean {
  return EMPTY_CODES.has(codeOf(err));
}

/** Follows one DNS query: A/AAAA records of a name, or SRV records and their targets. */
class Watch {
  /** The last good answer (undefined before the first). */
  records: DnsRecord[] | undefined;
  sig = '';
  ttl: number | undefined;
  /** Errors in a row. */
  errors = 0;
  lastError: string | undefined;
  /** When the current run of failures began (undefined while answers come). */
  failingSince: number | undefined;
  /** When the last good answer arrived. */
  okAt: number | undefined;
  /** When the current run of empty answers began (undefined while the name has records). */
  emptySince: number | undefined;
  queries = 0;
  /** Re-resolved at least this often (the smallest interval of the versions using it). */
  intervalMs: number;
  readonly createdAt = Date.now();
  private readonly abort = new AbortController();
  private readonly resolver = new Resolver({ timeout: QUERY_TIMEOUT_MS, tries: QUERY_TRIES });
  /** The last good addresses of each family of a name (kept when only one family fails). */
  private readonly families = new Map<string, { v4: DnsRecord[]; v6: DnsRecord[] }>();
  private wake: (() => void) | undefined;

  constructor(
    readonly kind: 'a' | 'srv',
    readonly name: string,
    readonly server: string | undefined,
    intervalMs: number,
    private readonly log: Logger,
    private readonly changed: () => void,
  ) {
    this.intervalMs = intervalMs;
    if (server !== undefined) this.resolver.setServers([server]);
  }

  get label(): string {
    return `${this.kind === 'srv' ? 'SRV ' : ''}${this.name}${this.server === undefined ? '' : ` @${this.server}`}`;
  }

  stop(): void {
    this.abort.abort();
    this.resolver.cancel();
  }

  get answered(): boolean {
    return this.records !== undefined;
  }

  /** The interval shrank (a reload): the next query is not left waiting the old one. */
  setInterval(ms: number): void {
    const shorter = ms < this.intervalMs;
    this.intervalMs = ms;
    if (shorter) this.wake?.();
  }

  /** Seconds since this query last had a current answer (0 while answers come). */
  staleness(now: number): number {
    if (this.okAt === undefined) return (now - this.createdAt) / 1000;
    if (this.failingSince === undefined) return 0;
    return (now - this.okAt) / 1000;
  }

  /** A and AAAA records of a name. An error of one family keeps that family's last
   * addresses; both failing is a failed resolution. */
  private async addresses(name: string): Promise<Answer> {
    const [v4, v6] = await Promise.allSettled([this.resolver.resolve4(name, { ttl: true }), this.resolver.resolve6(name, { ttl: true })]);
    const last = this.families.get(name) ?? { v4: [], v6: [] };
    const fam = (r: PromiseSettledResult<{ address: string; ttl: number }[]>, prev: DnsRecord[]): { recs: DnsRecord[]; ttl?: number; err?: unknown } => {
      if (r.status === 'fulfilled') {
        const ttl = r.value.length ? Math.min(...r.value.map((x) => x.ttl)) : undefined;
        return { recs: r.value.map((x) => ({ address: x.address, name })), ttl };
      }
      if (isEmptyAnswer(r.reason)) return { recs: [] };
      return { recs: prev, err: r.reason };
    };
    const a = fam(v4, last.v4);
    const aaaa = fam(v6, last.v6);
    if (a.err !== undefined && aaaa.err !== undefined) throw a.err;
    if (a.err !== undefined || aaaa.err !== undefined) {
      this.log.debug({ name, err: String((a.err ?? aaaa.err) as Error) }, 'dns: one address family failed; keeping its last addresses');
    }
    this.families.set(name, { v4: a.recs, v6: aaaa.recs });
    const ttls = [a.ttl, aaaa.ttl].filter((t): t is number => t !== undefined);
    return { records: [...a.recs, ...aaaa.recs], ttl: ttls.length ? Math.min(...ttls) : undefined };
  }

  /** SRV records (the lowest priority present: others are backups), targets resolved. */
  private async srv(): Promise<Answer> {
    let srv: { name: string; port: number; priority: number; weight: number }[];
    try {
      srv = await this.resolver.resolveSrv(this.name);
    } catch (err) {
      if (isEmptyAnswer(err)) return { records: [] };
      throw err;
    }
    srv = srv.filter((r) => r.name !== '' && r.name !== '.');
    if (srv.length === 0) return { records: [] };
    const top = Math.min(...srv.map((r) => r.priority));
    srv = srv.filter((r) => r.priority === top);
    const targets = [...new Set(srv.map((r) => r.name))];
    const answers = new Map<string, Answer>();
    await Promise.all(targets.map(async (t) => answers.set(t, await this.addresses(t))));
    for (const name of this.families.keys()) if (!targets.includes(name)) this.families.delete(name);
    const records: DnsRecord[] = [];
    let ttl: number | undefined;
    for (const r of srv) {
      const a = answers.get(r.name)!;
      if (a.ttl !== undefined) ttl = Math.min(ttl ?? Infinity, a.ttl);
      for (const rec of a.records) records.push({ address: rec.address, port: r.port, name: r.name });
    }
    return { records, ttl };
  }

  async run(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      let wait: number;
      try {
        this.queries++;
        const ans = this.kind === 'srv' ? await this.srv() : await this.addresses(this.name);
        if (signal.aborted) return;
        const now = Date.now();
        if (this.failingSince !== undefined) {
          this.log.info({ query: this.label, failedFor: (now - this.failingSince) / 1000 }, 'dns: resolving again');
        }
        this.errors = 0;
        this.failingSince = undefined;
        this.lastError = undefined;
        this.okAt = now;
        this.ttl = ans.ttl;
        if (ans.records.length === 0) this.emptySince ??= now;
        else this.emptySince = undefined;
        const sig = ans.records.map((r) => `${r.address}|${r.port ?? ''}|${r.name}`).sort().join('\n');
        if (this.records === undefined || sig !== this.sig) {
          this.records = ans.records;
          this.sig = sig;
          this.changed();
        }
        wait = ans.ttl === undefined ? this.intervalMs : Math.min(this.intervalMs, Math.max(MIN_TTL_REFRESH_MS, ans.ttl * 1000));
      } catch (err) {
        if (signal.aborted) return;
        this.errors++;
        const code = codeOf(err);
        this.lastError = `${code || 'error'}: ${String((err as Error).message ?? err)}`;
        if (this.failingSince === undefined) {
          this.failingSince = Date.now();
          this.log.warn({ query: this.label, err: this.lastError }, 'dns: resolution failed; the last endpoints keep serving');
        } else {
          this.log.debug({ query: this.label, err: this.lastError, errors: this.errors }, 'dns: resolution failed again');
        }
        wait = Math.min(this.intervalMs, backoffMs(this.errors));
      }
      const ac = new AbortController();
      this.wake = () => ac.abort();
      const onStop = (): void => ac.abort();
      signal.addEventListener('abort', onStop, { once: true });
      await pause(wait, ac.signal);
      signal.removeEventListener('abort', onStop);
      this.wake = undefined;
    }
  }
}

export interface DnsProviderOptions {
  config: Config;
  log: Logger;
}

export interface DnsStatus {
  ready: boolean;
  stalenessSeconds: number;
  queries: { query: string; kind: 'a' | 'srv'; name: string; resolver?: string; records: number; ttl?: number; intervalMs: number; errors: number; lastError?: string; emptyForSeconds?: number; queries: number }[];
  /** Versions whose name answers empty but that keep their endpoints during emptyGrace. */
  held: { service: string; version: string; endpoints: number; untilSeconds: number }[];
}

function watchKey(src: DnsSource): string {
  return JSON.stringify([src.resolver ?? '', src.srv === undefined ? 'a' : 'srv', (src.srv ?? src.name ?? '').toLowerCase()]);
}

/** The endpoints of a version from a DNS answer; ids are host:port (https://host:port
 * with tls), stable while the address stays in DNS. */
export function endpointsFor(records: readonly DnsRecord[], src: DnsSource, https: boolean): EndpointAddress[] {
  const byId = new Map<string, EndpointAddress>();
  for (const r of records) {
    const port = r.port ?? src.port;
    if (port === undefined || port < 1) continue;
    const hostPort = r.address.includes(':') ? `[${r.address}]:${port}` : `${r.address}:${port}`;
    const protocol = https ? 'https' : 'http';
    const id = https ? `https://${hostPort}` : hostPort;
    byId.set(id, { id, protocol, host: r.address, port, origin: `${protocol}://${hostPort}`, ...(https ? { tlsName: r.name.replace(/\.$/, '') } : {}) });
  }
  return [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

interface DnsVersion extends FollowedVersion {
  src: DnsSource;
  https: boolean;
}

export class DnsProvider extends WatchingProvider<Watch, DnsVersion> {
  readonly name = 'dns';
  private config: Config;
  protected readonly log: Logger;
  protected readonly messages = {
    changed: 'dns: endpoints changed',
    held: 'dns: the name answers empty; keeping the last endpoints for emptyGrace',
    resumed: 'dns: the name answers again; the hold ends',
    expired: 'dns: the name stayed empty for emptyGrace; the version has no endpoints now',
  };

  constructor(opts: DnsProviderOptions) {
    super();
    this.config = opts.config;
    this.log = opts.log;
  }

  update(config: Config): void {
    this.config = config;
    this.follow();
    // Ports, tls or versions may have changed with the same queries.
    this.scheduleEmit();
  }

  status(): DnsStatus | undefined {
    if (this.watches.size === 0) return undefined;
    const now = Date.now();
    const held: DnsStatus['held'] = [];
    for (const [k, d] of this.delivered) {
      if (d.heldUntil === undefined) continue;
      const [service, version] = k.split('\u0000');
      held.push({ service, version, endpoints: d.endpoints.length, untilSeconds: Math.max(0, (d.heldUntil - now) / 1000) });
    }
    return {
      ready: this.ready,
      stalenessSeconds: this.staleness() ?? 0,
      queries: [...this.watches.values()].map((w) => ({
        query: w.label,
        kind: w.kind,
        name: w.name,
        ...(w.server === undefined ? {} : { resolver: w.server }),
        records: w.records?.length ?? 0,
        ...(w.ttl === undefined ? {} : { ttl: w.ttl }),
        intervalMs: w.intervalMs,
        errors: w.errors,
        ...(w.lastError === undefined ? {} : { lastError: w.lastError }),
        ...(w.emptySince === undefined ? {} : { emptyForSeconds: (now - w.emptySince) / 1000 }),
        queries: w.queries,
      })),
      held,
    };
  }

  protected followed(): DnsVersion[] {
    const out: DnsVersion[] = [];
    for (const s of this.config.services) {
      for (const v of s.versions) if (v.source.kind === 'dns') out.push({ service: s.name, version: v.name, key: watchKey(v.source), src: v.source, https: v.tls !== undefined });
    }
    return out;
  }

  /** One query per name (and resolver), re-resolved at the smallest interval of the
   * versions using it. */
  protected wanted(): Map<string, WantedWatch<Watch>> {
    const intervals = new Map<string, { src: DnsSource; intervalMs: number }>();
    for (const { key, src } of this.followed()) {
      intervals.set(key, { src, intervalMs: Math.min(intervals.get(key)?.intervalMs ?? Infinity, src.intervalMs) });
    }
    const want = new Map<string, WantedWatch<Watch>>();
    for (const [k, { src, intervalMs }] of intervals) {
      want.set(k, {
        create: () => new Watch(src.srv === undefined ? 'a' : 'srv', (src.srv ?? src.name)!, src.resolver, intervalMs, this.log, () => this.scheduleEmit()),
        refresh: (w) => w.setInterval(intervalMs),
      });
    }
    return want;
  }

  protected answer({ src, https }: DnsVersion, w: Watch): VersionAnswer | undefined {
    if (w.records === undefined) return undefined;
    const endpoints = endpointsFor(w.records, src, https);
    return {
      endpoints,
      sig: endpoints.map((e) => `${e.id}|${e.tlsName ?? ''}`).join('\n'),
      // The name answers empty (a redeploy between old and new tasks?): the last
      // endpoints stay for at most emptyGrace.
      ...(w.emptySince === undefined ? {} : { hold: { since: w.emptySince, graceMs: src.emptyGraceMs } }),
    };
  }

  protected override describe(w: Watch): Record<string, unknown> {
    return { query: w.label };
  }
}

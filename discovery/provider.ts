// A Provider turns some source (static config, Consul, DNS) into endpoint sets and
// streams them (Traefik's Provider.Provide). Each snapshot it delivers is complete for
// the versions it owns; unchanged sets are skipped by the data plane. A provider keeps
// its last good snapshot when its source is down: it never delivers an empty set
// because it could not ask. Discovery never imports gateway/ or control/.

import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { Config, EndpointAddress } from '../config/types.js';

export interface EndpointSet {
  service: string;
  version: string;
  endpoints: EndpointAddress[];
}

export type SnapshotSink = (sets: EndpointSet[]) => void;

export interface Provider {
  readonly name: string;
  /** Starts following the source; resolves once the first snapshot was delivered. */
  start(sink: SnapshotSink): Promise<void>;
  /** The config was reloaded: follow the sources it names now. */
  update(config: Config): void;
  /** Stops following; idempotent. */
  close(): Promise<void>;
  /** Seconds since the provider last knew its endpoints were current (0 while it
   * follows its source); undefined when it follows nothing. Providers without it are
   * measured from their last delivery. */
  staleness?(): number | undefined;
}

/** The delivery window of the watching providers: at most one snapshot per 100 ms. */
export const COALESCE_MS = 100;

/** Coalesced delivery (at most one per window): providers call schedule() whenever a
 * source changed; `run` is called once the window since the last run allows, or after an
 * explicit delay. A pending run that is due later is brought forward. */
export class Coalescer {
  private timer: NodeJS.Timeout | undefined;
  private due = 0;
  /** When `run` last delivered (set by the provider). */
  lastAt = 0;

  constructor(
    private readonly windowMs: number,
    private readonly run: () => void,
  ) {}

  schedule(delayMs?: number): void {
    const now = Date.now();
    const due = now + (delayMs ?? Math.max(0, this.lastAt + this.windowMs - now));
    if (this.timer !== undefined) {
      if (this.due <= due) return;
      clearTimeout(this.timer);
    }
    this.due = due;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.run();
    }, due - now);
    this.timer.unref();
  }

  cancel(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/** One followed query of a watching provider (a Consul blocking query, a DNS name). */
export interface SourceWatch {
  /** Follows the source until stop(). */
  run(): Promise<void>;
  stop(): void;
  /** Seconds since this query last knew its answer was current. */
  staleness(now: number): number;
  /** Whether it has answered at least once. */
  readonly answered: boolean;
}

/** A version a watching provider follows, and the key of the watch answering for it
 * (versions may share a watch). */
export interface FollowedVersion {
  service: string;
  version: string;
  key: string;
}

/** A watch wanted by the config: how to make it, and how an existing one takes new
 * settings (a shorter DNS interval). */
export interface WantedWatch<W> {
  create(): W;
  refresh?(w: W): void;
}

/** What a watch's answer means for one version. */
export interface VersionAnswer {
  endpoints: EndpointAddress[];
  /** Identity of the set: a different one is delivered. */
  sig: string;
  /** The source answers "nothing" in a way that may pass (Consul reset, a name between
   * deployments): since when, and how long the last endpoints are kept meanwhile. */
  hold?: { since: number; graceMs: number };
}

/** Log messages of a provider's deliveries. */
export interface DeliveryMessages {
  changed: string;
  held: string;
  resumed: string;
  expired: string;
}

/** What was last delivered for a version (heldUntil while a hold keeps it). */
export interface Delivered {
  sig: string;
  endpoints: EndpointAddress[];
  heldUntil?: number;
}

/**
 * What the Consul and DNS providers share: their watches by key, kept in step with the
 * config (follow), the coalesced delivery of changed sets only, the hold of a version's
 * last endpoints while its source answers "nothing" for a grace, the first snapshot
 * (start() resolves once every watch answered once), staleness as the oldest watch's,
 * and close. Subclasses say which versions and watches the config wants and what a
 * watch's answer means for a version.
 */
export abstract class WatchingProvider<W extends SourceWatch, F extends FollowedVersion = FollowedVersion> implements Provider {
  abstract readonly name: string;
  protected readonly watches = new Map<string, W>();
  protected readonly delivered = new Map<string, Delivered>();
  protected closed = false;
  private sink: SnapshotSink | undefined;
  private first = false;
  private resolveFirst: (() => void) | undefined;
  private readonly emitter = new Coalescer(COALESCE_MS, () => this.emit());

  protected abstract readonly log: Logger;
  protected abstract readonly messages: DeliveryMessages;

  abstract update(config: Config): void;
  /** The versions the config has this provider follow. */
  protected abstract followed(): F[];
  /** The watches those versions need, by key. */
  protected abstract wanted(): Map<string, WantedWatch<W>>;
  /** What the watch says for the version; undefined before its first answer. */
  protected abstract answer(f: F, w: W): VersionAnswer | undefined;
  /** Fields naming the watch in log lines. */
  protected describe(_w: W): Record<string, unknown> {
    return {};
  }

  /** Starts and stops watches to match the config; forgets versions no longer followed. */
  protected follow(): void {
    if (this.closed) return;
    const want = this.wanted();
    for (const [k, w] of this.watches) {
      if (want.has(k)) continue;
      w.stop();
      this.watches.delete(k);
    }
    for (const [k, spec] of want) {
      const existing = this.watches.get(k);
      if (existing !== undefined) {
        spec.refresh?.(existing);
        continue;
      }
      const w = spec.create();
      this.watches.set(k, w);
      void w.run();
    }
    const live = new Set(this.followed().map((f) => vkey(f.service, f.version)));
    for (const k of this.delivered.keys()) if (!live.has(k)) this.delivered.delete(k);
  }

  /** The changed endpoint sets now, and when to look again (ms) if something is held. */
  private collect(now: number): { sets: EndpointSet[]; recheckMs?: number } {
    const sets: EndpointSet[] = [];
    let recheck: number | undefined;
    for (const f of this.followed()) {
      const w = this.watches.get(f.key);
      const a = w === undefined ? undefined : this.answer(f, w);
      if (w === undefined || a === undefined) continue; // not answered yet: nothing to say
      const { service, version } = f;
      const fields = { service, version, ...this.describe(w) };
      const k = vkey(service, version);
      const prev = this.delivered.get(k);
      if (a.endpoints.length === 0 && prev !== undefined && prev.endpoints.length > 0 && a.hold !== undefined && now - a.hold.since < a.hold.graceMs) {
        const until = a.hold.since + a.hold.graceMs;
        if (prev.heldUntil === undefined) this.log.warn({ ...fields, endpoints: prev.endpoints.length, holdSeconds: (until - now) / 1000 }, this.messages.held);
        this.delivered.set(k, { sig: prev.sig, endpoints: prev.endpoints, heldUntil: until });
        recheck = Math.min(recheck ?? Infinity, until - now);
        continue;
      }
      if (prev !== undefined && prev.sig === a.sig) {
        if (prev.heldUntil !== undefined) {
          this.delivered.set(k, { sig: a.sig, endpoints: prev.endpoints });
          this.log.info(fields, this.messages.resumed);
        }
        continue;
      }
      if (a.endpoints.length === 0 && prev?.heldUntil !== undefined) this.log.warn({ ...fields, graceMs: a.hold?.graceMs }, this.messages.expired);
      this.delivered.set(k, { sig: a.sig, endpoints: a.endpoints });
      sets.push({ service, version, endpoints: a.endpoints });
      this.log.info({ ...fields, endpoints: a.endpoints.map((e) => e.id) }, this.messages.changed);
    }
    return { sets, recheckMs: recheck };
  }

  /** Resolves once every query answered once and the first snapshot is out (at once when
   * nothing is followed). Never rejects; resolves on close too. */
  start(sink: SnapshotSink): Promise<void> {
    this.sink = sink;
    const first = new Promise<void>((r) => (this.resolveFirst = r));
    this.follow();
    this.emit();
    return first;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.emitter.cancel();
    this.stopWatches();
    this.sink = undefined;
    this.resolveFirst?.();
  }

  /** True once the first snapshot was delivered. */
  get ready(): boolean {
    return this.first;
  }

  /** The oldest watch's staleness; undefined when nothing is followed. */
  staleness(): number | undefined {
    if (this.watches.size === 0) return undefined;
    const now = Date.now();
    let s = 0;
    for (const w of this.watches.values()) s = Math.max(s, w.staleness(now));
    return s;
  }

  protected stopWatches(): void {
    for (const w of this.watches.values()) w.stop();
    this.watches.clear();
  }

  /** Schedules a delivery (coalesced), unless closed. */
  protected scheduleEmit(delayMs?: number): void {
    if (!this.closed) this.emitter.schedule(delayMs);
  }

  private emit(): void {
    if (this.closed || this.sink === undefined) return;
    // The first snapshot waits until every query has answered once.
    if (!this.first && [...this.watches.values()].some((w) => !w.answered)) return;
    const now = Date.now();
    const { sets, recheckMs } = this.collect(now);
    this.emitter.lastAt = now;
    if (sets.length > 0 || !this.first) this.sink(sets);
    if (!this.first) {
      this.first = true;
      this.resolveFirst?.();
    }
    if (recheckMs !== undefined) this.scheduleEmit(Math.max(COALESCE_MS, recheckMs + 1));
  }
}

/** Key of a service's version in the providers' maps. */
export function vkey(service: string, version: string): string {
  return `${service}\u0000${version}`;
}

/** Jittered exponential backoff after `errors` failures in a row: 200 ms doubling to 5 s,
 * each wait drawn from the upper half of its step. */
export function backoffMs(errors: number): number {
  const base = Math.min(5000, 200 * 2 ** Math.min(10, errors - 1));
  return base / 2 + Math.random() * (base / 2);
}

/** Sleeps, or resolves early (false) when the signal aborts. */
export async function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  try {
    await delay(ms, undefined, { signal });
    return true;
  } catch {
    return false;
  }
}

// A Provider turns some source (static config, Consul, DNS) into endpoint sets and
// streams them (Traefik's Provider.Provide). Each snapshot it delivers is complete for
// the versions it owns; unchanged sets are skipped by the data plane. A provider keeps
// its last good snapshot when its source is down: it never delivers an empty set
// because it could not ask. Discovery never imports gateway/ or control/.

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

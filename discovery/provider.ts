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

// The static provider: endpoints listed in the config file. It delivers one snapshot at
// start and one on every reload.

import type { Config } from '../config/types.js';
import type { EndpointSet, Provider, SnapshotSink } from './provider.js';

export function staticSets(config: Config): EndpointSet[] {
  const sets: EndpointSet[] = [];
  for (const s of config.services) {
    for (const v of s.versions) {
      if (v.source.kind === 'static') sets.push({ service: s.name, version: v.name, endpoints: [...v.source.endpoints] });
    }
  }
  return sets;
}

export class StaticProvider implements Provider {
  readonly name = 'static';
  private sink: SnapshotSink | undefined;

  constructor(private config: Config) {}

  async start(sink: SnapshotSink): Promise<void> {
    this.sink = sink;
    sink(staticSets(this.config));
  }

  update(config: Config): void {
    this.config = config;
    this.sink?.(staticSets(config));
  }

  async close(): Promise<void> {
    this.sink = undefined;
  }
}

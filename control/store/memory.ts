import type { DesiredState } from '../state.js';
import { RevisionConflictError, type Store } from './store.js';

/** Keeps the state in this process only: gone on restart. */
export class MemoryStore implements Store {
  readonly kind = 'memory';
  private state: DesiredState | null = null;

  async load(): Promise<DesiredState | null> {
    return this.state === null ? null : structuredClone(this.state);
  }

  async write(expected: number, next: DesiredState): Promise<void> {
    const current = this.state?.revision ?? 0;
    if (current !== expected) throw new RevisionConflictError(current);
    this.state = structuredClone(next);
  }

  async close(): Promise<void> {}
}

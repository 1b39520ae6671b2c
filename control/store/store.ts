// A Store keeps the desired state. Writes are whole-state replacements guarded by the
// revision the writer started from (compare-and-set), so two writers can never both win.

import type { DesiredState } from '../state.js';

export class StoreUnavailableError extends Error {
  readonly code = 'STORE_UNAVAILABLE';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreUnavailableError';
  }
}

export class RevisionConflictError extends Error {
  readonly code = 'REVISION_CONFLICT';
  constructor(readonly current: number) {
    super(`the state changed meanwhile (now at revision ${current})`);
    this.name = 'RevisionConflictError';
  }
}

export interface WriteOptions {
  /** Fencing: the write succeeds only while this key still holds this token (a rollout
   * driver's lease in the fleet store; ignored by single-process stores). */
  fence?: { key: string; token: string };
}

export interface Store {
  readonly kind: string;
  /** The stored state, or null when nothing was ever written. */
  load(): Promise<DesiredState | null>;
  /** Writes `next` if the stored revision is still `expected`. */
  write(expected: number, next: DesiredState, opts?: WriteOptions): Promise<void>;
  close(): Promise<void>;
}

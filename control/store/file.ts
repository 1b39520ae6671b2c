// The file store: one JSON file, replaced atomically on every write. The new state is
// written to a temporary file in the same directory, fsynced, renamed over the old one
// (rename is atomic on POSIX), and the directory is fsynced so the rename itself is
// durable. A kill -9 at any point leaves either the old or the new file, never a torn
// one; a leftover temporary file is ignored and removed at the next start.

import { open, readFile, readdir, rename, unlink, mkdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { isDesiredState, type DesiredState } from '../state.js';
import { RevisionConflictError, StoreUnavailableError, type Store } from './store.js';

export class FileStore implements Store {
  readonly kind = 'file';
  private revision = 0;
  private seq = 0;

  constructor(private readonly file: string) {}

  async load(): Promise<DesiredState | null> {
    const dir = dirname(this.file);
    await mkdir(dir, { recursive: true });
    const prefix = `.${basename(this.file)}.tmp-`;
    for (const name of await readdir(dir)) {
      if (name.startsWith(prefix)) await unlink(join(dir, name)).catch(() => {});
    }
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new StoreUnavailableError(`cannot read state file ${this.file}: ${(err as Error).message}`, { cause: err });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new StoreUnavailableError(`state file ${this.file} is not valid JSON: ${(err as Error).message}`, { cause: err });
    }
    if (!isDesiredState(parsed)) throw new StoreUnavailableError(`state file ${this.file} does not hold a Switchyard state`);
    this.revision = parsed.revision;
    return parsed;
  }

  async write(expected: number, next: DesiredState): Promise<void> {
    if (expected !== this.revision) throw new RevisionConflictError(this.revision);
    const dir = dirname(this.file);
    const tmp = join(dir, `.${basename(this.file)}.tmp-${process.pid}-${++this.seq}`);
    try {
      const fh = await open(tmp, 'w', 0o600);
      try {
        await fh.writeFile(JSON.stringify(next));
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, this.file);
      const dh = await open(dir, 'r');
      try {
        await dh.sync();
      } finally {
        await dh.close();
      }
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw new StoreUnavailableError(`cannot write state file ${this.file}: ${(err as Error).message}`, { cause: err });
    }
    this.revision = next.revision;
  }

  async close(): Promise<void> {}
}

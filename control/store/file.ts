// The file store: one JSON file, replaced atomically on every write. The new state is
// written to a temporary file in the same directory, fsynced, renamed over the old one
// (rename is atomic on POSIX), and the directory is fsynced so the rename itself is
// durable. A kill -9 at any point leaves either the old or the new file, never a torn
// one; a leftover temporary file is ignored and removed at the next start.
//
// Two processes may share the file for a moment (an old gateway still draining while
// its replacement starts). Writes therefore take a lock file (`<file>.lock`, created
// exclusively, holding the writer's pid; a lock whose process is gone is broken at once,
// one older than 10 s too) and compare the revision stored in the file itself, not only
// the one this process last saw — so the second writer gets a conflict, re-reads, and
// decides again instead of silently overwriting.

import { link, open, readFile, readdir, rename, unlink, mkdir, stat, writeFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { isDesiredState, type DesiredState } from '../state.js';
import { RevisionConflictError, StoreUnavailableError, type Store } from './store.js';

/** Whether a process with this pid exists (false for anything that is not a pid). */
function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class FileStore implements Store {
  readonly kind = 'file';
  private revision = 0;
  private seq = 0;
  private cleaned = false;
  private readonly lockFile: string;

  constructor(private readonly file: string) {
    this.lockFile = `${file}.lock`;
  }

  /** Takes the write lock; breaks a lock whose owner is gone or that is stale. */
  private async lock(): Promise<void> {
    const deadline = Date.now() + 2000;
    for (;;) {
      // The lock appears with its owner's pid already in it: written to a private
      // file first, then hard-linked into place (link fails if the lock exists).
      const mine = `${this.lockFile}.${process.pid}.${randomUUID()}`;
      try {
        await writeFile(mine, String(process.pid), { mode: 0o600 });
        await link(mine, this.lockFile);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      } finally {
        await unlink(mine).catch(() => {});
      }
      let stale = false;
      try {
        const owner = Number((await readFile(this.lockFile, 'utf8')).trim());
        const age = Date.now() - (await stat(this.lockFile)).mtimeMs;
        stale = age > 10_000;
        if (owner !== process.pid && !alive(owner)) stale = true;
      } catch {
        // Gone meanwhile, or being written: try again.
      }
      if (stale) {
        await unlink(this.lockFile).catch(() => {});
        continue;
      }
      if (Date.now() > deadline) throw new StoreUnavailableError(`state file ${this.file} stays locked by another process (${this.lockFile})`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Removes a lock whose owner process is gone (a writer killed while holding it). */
  private async breakDeadLock(): Promise<void> {
    try {
      const owner = Number((await readFile(this.lockFile, 'utf8')).trim());
      if (!alive(owner)) await unlink(this.lockFile).catch(() => {});
    } catch {
      /* no lock */
    }
  }

  /** The revision stored in the file now (0 when there is none). */
  private async storedRevision(): Promise<number> {
    try {
      const parsed: unknown = JSON.parse(await readFile(this.file, 'utf8'));
      return isDesiredState(parsed) ? parsed.revision : 0;
    } catch {
      return 0;
    }
  }

  async load(): Promise<DesiredState | null> {
    const dir = dirname(this.file);
    await mkdir(dir, { recursive: true });
    // Leftovers of a killed writer are removed once, at start (later another process
    // sharing the file may be writing its own temporary file).
    if (!this.cleaned) {
      this.cleaned = true;
      const prefix = `.${basename(this.file)}.tmp-`;
      const lockPrefix = `${basename(this.lockFile)}.`;
      for (const name of await readdir(dir)) {
        if (name.startsWith(prefix)) await unlink(join(dir, name)).catch(() => {});
        // A private lock file of a writer that is gone.
        if (name.startsWith(lockPrefix) && !alive(Number(name.slice(lockPrefix.length).split('.')[0]))) await unlink(join(dir, name)).catch(() => {});
      }
      await this.breakDeadLock();
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
    const dir = dirname(this.file);
    const tmp = join(dir, `.${basename(this.file)}.tmp-${process.pid}-${++this.seq}`);
    try {
      await this.lock();
    } catch (err) {
      if (err instanceof StoreUnavailableError) throw err;
      throw new StoreUnavailableError(`cannot lock state file ${this.file}: ${(err as Error).message}`, { cause: err });
    }
    try {
      // Another process wrote a newer state: conflict (the controller re-reads and
      // decides again). An older or missing file (deleted by an operator, restored from a
      // backup) is simply replaced by ours, which is newer.
      const stored = await this.storedRevision();
      if (stored > expected) {
        this.revision = stored;
        throw new RevisionConflictError(stored);
      }
      await this.replace(tmp, dir, next);
    } finally {
      await unlink(this.lockFile).catch(() => {});
    }
    this.revision = next.revision;
  }

  private async replace(tmp: string, dir: string, next: DesiredState): Promise<void> {
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
  }

  async close(): Promise<void> {}
}

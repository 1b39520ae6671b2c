// The processes' logger (the gateway and its data-plane workers): JSON lines to stdout.

import pino, { type Logger } from 'pino';

/**
 * The process's logger: JSON lines to stdout, written asynchronously (a slow log reader
 * never blocks the data plane). minLength 1 writes each line at once, as minLength 0
 * would, and makes `flush(cb)` wait for the write in flight — what `flushLog` needs.
 */
export function createLogger(level: string, base: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { pid: process.pid, ...base }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd: 1, sync: false, minLength: 1 }));
}

/**
 * Resolves once the lines logged so far have been written (bounded by `ms`). A process
 * that exits right after logging would otherwise leave a line in an asynchronous write
 * while pino's exit hook writes the later ones synchronously: the last lines came out
 * in the wrong order, or not at all.
 */
export function flushLog(log: Logger, ms: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    try {
      log.flush(() => {
        clearTimeout(timer);
        resolve();
      });
    } catch {
      clearTimeout(timer);
      resolve();
    }
  });
}

// The one surface the request path (server.ts, forward.ts, headers.ts, grpc.ts,
// conndrain.ts) reads a client request and writes its response through, whichever
// protocol carried them: an HTTP/1.1 request of the gateway's own engine
// (gateway/h1/engine.ts), or an HTTP/2 stream's compatibility request and response
// (node:http2). Routing, selection, retries, outlier detection and metrics see only this.

import type { Duplex } from 'node:stream';

/** The client's socket (an HTTP/2 stream's is its session's). */
export type ClientSocket = Duplex & { remoteAddress?: string; localPort?: number; bytesRead?: number };

export interface ClientRequest {
  /** Lower-case names, duplicates combined as node:http does. */
  headers: Record<string, string | string[] | undefined>;
  /** Flat name/value pairs as received (HTTP/2: pseudo-headers included). */
  readonly rawHeaders: string[];
  readonly method?: string;
  readonly url?: string;
  readonly httpVersionMajor: number;
  readonly httpVersionMinor: number;
  readonly socket: ClientSocket;
  /** The whole body was received. */
  readonly complete: boolean;
  readonly readableDidRead: boolean;
  readonly readableEnded: boolean;
  readonly destroyed: boolean;
  /** The next body chunk, or null when none is waiting. */
  read(): Buffer | null;
  on(event: 'readable' | 'end' | 'close', fn: () => void): this;
  once(event: 'readable' | 'end' | 'close', fn: () => void): this;
  off(event: 'readable' | 'end' | 'close', fn: () => void): this;
}

export interface ClientResponse {
  /** Status and flat header pairs; throws on a header that may not be sent. */
  writeHead(status: number, headers: string[]): this;
  write(chunk: Buffer): boolean;
  end(body?: string | Buffer): this;
  destroy(err?: Error): this;
  addTrailers(trailers: Record<string, string>): void;
  writeContinue(): void;
  readonly headersSent: boolean;
  readonly writableEnded: boolean;
  readonly writableFinished: boolean;
  readonly socket: ClientSocket | null;
  on(event: 'close' | 'finish' | 'drain', fn: () => void): this;
  once(event: 'close' | 'finish' | 'drain', fn: () => void): this;
}

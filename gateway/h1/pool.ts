// The HTTP/1.1 connection pool of one upstream endpoint, on plain net/tls sockets.
//
// It takes undici's dispatch interface (the Exchange and the mirror copy are undici
// handlers: onConnect, onResponseStarted, onHeaders, onData, onComplete, onError) so
// the callers do not change, but does the work itself: the request head is built as
// one string and written with the first body chunk, responses are read by the strict
// ResponseReader, and the per-request cost is a request object, two small closures
// (abort and resume, which the handler keeps) and the writes.
//
// Rules: up to `connections` sockets, one request at a time on each (no pipelining),
// requests beyond that wait in FIFO order. A socket goes back to the idle list only
// after its response was read whole and its request written whole, with nothing more
// from the backend; an idle socket that gets bytes or an end is dropped, and is closed
// after min(idleTimeoutMs, the backend's Keep-Alive timeout hint − 1 s). The errors
// carry undici's codes, so gateway/errors.ts maps them exactly as it maps undici's.

import * as net from 'node:net';
import * as tls from 'node:tls';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { UpstreamTlsOptions } from '../endpoint.js';
import { hold } from './batch.js';
import { ResponseReader, type ResponseSink } from './response.js';

export interface H1PoolOptions {
  /** Most sockets open (or opening) at once. */
  connections: number;
  /** Longest an idle socket is kept. */
  idleTimeoutMs: number;
  /** Longest a connect (and TLS handshake) may take. */
  connectTimeoutMs: number;
  /** For an https endpoint: how its TLS connections are made and verified. */
  tls?: UpstreamTlsOptions;
}

/** An error of the pool, with the code undici gives the same failure. */
export class H1PoolError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'H1PoolError';
    this.code = code;
  }
}

const invalidArg = (message: string): H1PoolError => new H1PoolError('UND_ERR_INVALID_ARG', message);

/** The pool's figures, shaped as undici's PoolStats. */
export interface H1PoolStats {
  /** Sockets connected. */
  connected: number;
  /** Connected sockets with no request. */
  free: number;
  /** Requests not yet written: waiting in the queue or for their socket to connect. */
  pending: number;
  /** Requests waiting in the queue. */
  queued: number;
  /** Requests on a connected socket. */
  running: number;
  /** pending + running. */
  size: number;
}

type Handler = Dispatcher.DispatchHandler;

// Methods whose request carries a body by definition: a request of one without a body
// says so with content-length: 0 (as undici does). Others send no framing at all.
const EXPECTS_PAYLOAD = new Set(['PUT', 'POST', 'PATCH', 'QUERY', 'PROPFIND', 'PROPPATCH']);
// Requests the pool sends again by itself, once, when a reused socket turns out closed
// before any byte of the answer (the keep-alive race): the backend cannot have acted on
// a request it never read, and these would be harmless even if it had.
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

// tchar (RFC 9110) and the bytes a header value may hold (undici's headerCharRegex:
// HTAB, visible ASCII and SP, obs-text).
const TOKEN = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TOKEN[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TOKEN[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TOKEN[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TOKEN[c] = 1;

function isToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff || TOKEN[c] === 0) return false;
  }
  return true;
}

function isHeaderValue(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f || c > 0xff) return false;
  }
  return true;
}

/** A Content-Length value: 1 to 15 digits (below 2^53); -1 for anything else. */
function parseLength(s: string): number {
  if (s.length === 0 || s.length > 15) return -1;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const d = s.charCodeAt(i) - 0x30;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

/** A request path as undici sends it: no control characters, no space, nothing above 0xff. */
function isPath(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x21 || c > 0xff) return false;
  }
  return true;
}

const kReq = Symbol('switchyard.h1.request');
const kConn = Symbol('switchyard.h1.conn');
type BodyStream = Readable & { [kReq]?: H1Request };
type PoolSocket = net.Socket & { [kConn]?: Conn };

/** Body kinds. */
const BODY_NONE = 0;
const BODY_BUFFER = 1;
const BODY_STREAM = 2;
const BODY_ITERATOR = 3;

/** One request, from dispatch to its one terminal call. */
class H1Request {
  readonly method: string;
  /** The head without framing headers and without the empty line. */
  readonly head: string;
  readonly bodyKind: number;
  readonly body: unknown;
  /** The request's Content-Length, -1 when it has none. */
  readonly declared: number;
  readonly headersTimeout: number;
  readonly bodyTimeout: number;
  conn: Conn | null = null;
  /** Its handler was told onConnect. */
  connected = false;
  /** Terminal call made (or the request handed over to another socket: see retry). */
  done = false;
  /** A byte of the answer arrived. */
  started = false;
  /** Bytes of the body written so far. */
  bytesWritten = 0;
  /** Any byte of the request was written. */
  written = false;
  /** The request was written whole. */
  bodyDone = false;
  /** The socket must not carry another request after this one. */
  noReuse: boolean;
  /** Sent again once already after the keep-alive race. */
  retried = false;
  readonly abort: (err?: Error) => void;
  readonly resume: () => void;

  constructor(
    readonly pool: H1Pool,
    opts: Dispatcher.DispatchOptions,
    readonly handler: Handler,
  ) {
    const method = opts.method;
    const path = opts.path;
    if (typeof method !== 'string' || !isToken(method)) throw invalidArg('invalid request method');
    if (typeof path !== 'string' || !(path.charCodeAt(0) === 0x2f || path.startsWith('http://') || path.startsWith('https://'))) {
      throw invalidArg('path must be an absolute URL or start with a slash');
    }
    if (!isPath(path)) throw invalidArg('invalid request path');
    if (method === 'CONNECT') throw new H1PoolError('UND_ERR_NOT_SUPPORTED', 'CONNECT is not supported');
    this.method = method;
    let host: string | undefined;
    let declared = -1;
    let fields = '';
    const h = opts.headers;
    if (h != null) {
      if (!Array.isArray(h)) throw invalidArg('headers must be a flat array of names and values');
      for (let i = 0; i < h.length; i += 2) {
        const name = h[i] as unknown;
        const value = h[i + 1] as unknown;
        if (typeof name !== 'string' || !isToken(name)) throw invalidArg('invalid header key');
        if (value === undefined) continue;
        if (typeof value !== 'string') throw invalidArg(`invalid ${name} header`);
        if (!isHeaderValue(value)) throw invalidArg(`invalid ${name} header`);
        const n = name.length;
        // Only names of these lengths are the pool's business (host 4, expect 6,
        // upgrade 7, connection and keep-alive 10, content-length 14,
        // transfer-encoding 17): the others skip the lower-casing.
        if (n === 4 || n === 6 || n === 7 || n === 10 || n === 14 || n === 17) {
          const lower = name.toLowerCase();
          if (lower === 'host') {
            if (host !== undefined) throw invalidArg('duplicate host header');
            host = value;
            continue;
          }
          if (lower === 'content-length') {
            if (declared !== -1) throw invalidArg('duplicate content-length header');
            declared = parseLength(value);
            if (declared === -1) throw invalidArg('invalid content-length header');
            continue;
          }
          if (lower === 'transfer-encoding' || lower === 'keep-alive' || lower === 'upgrade' || lower === 'connection') throw invalidArg(`invalid ${lower} header`);
          if (lower === 'expect') throw new H1PoolError('UND_ERR_NOT_SUPPORTED', 'expect header not supported');
        }
        fields += `${name}: ${value}\r\n`;
      }
    }
    // undici's order: host, connection, then the given fields. A HEAD answer is read
    // without a body whatever it says, so its socket is not trusted with another
    // request (a backend that sends one anyway would poison the next response).
    const head = method === 'HEAD';
    this.noReuse = head;
    this.head = `${method} ${path} HTTP/1.1\r\nhost: ${host ?? pool.hostHeader}\r\nconnection: ${head ? 'close' : 'keep-alive'}\r\n${fields}`;
    this.declared = declared;
    const body = opts.body as unknown;
    if (body == null) this.bodyKind = BODY_NONE;
    else if (typeof body === 'string' || body instanceof Uint8Array) {
      const buf = typeof body === 'string' ? Buffer.from(body) : Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
      if (declared !== -1 && buf.length !== 0 && declared !== buf.length) throw new H1PoolError('UND_ERR_REQ_CONTENT_LENGTH_MISMATCH', 'Request body length does not match content-length header');
      this.body = buf;
      this.bodyKind = buf.length === 0 ? BODY_NONE : BODY_BUFFER;
    } else if (typeof (body as Readable).on === 'function' && typeof (body as Readable).read === 'function') this.bodyKind = BODY_STREAM;
    else if (typeof (body as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function') this.bodyKind = BODY_ITERATOR;
    else throw invalidArg('invalid body');
    if (this.bodyKind !== BODY_BUFFER) this.body = body;
    this.headersTimeout = opts.headersTimeout ?? 300_000;
    this.bodyTimeout = opts.bodyTimeout ?? 300_000;
    this.abort = (err?: Error): void => pool.abortRequest(this, err);
    this.resume = (): void => {
      if (this.conn !== null) this.conn.resumeFor(this);
    };
  }

  /** Whether the pool may send it again on a fresh socket (see IDEMPOTENT). */
  get resendable(): boolean {
    return !this.retried && !this.started && IDEMPOTENT.has(this.method) && (this.bodyKind === BODY_NONE || this.bodyKind === BODY_BUFFER);
  }
}

// Timer phases of a connection.
const T_NONE = 0;
const T_HEADERS = 1;
const T_BODY = 2;

function onConnTimer(c: Conn): void {
  c.timerFired();
}

function onIdleTimer(c: Conn): void {
  c.idleExpired();
}

function onConnectTimeout(c: Conn): void {
  c.connectTimedOut();
}

// Socket listeners, shared by all sockets (the connection hangs off the socket).
function onSocketConnect(this: PoolSocket): void {
  this[kConn]?.connected();
}
function onSocketData(this: PoolSocket, chunk: Buffer): void {
  this[kConn]?.data(chunk);
}
function onSocketEnd(this: PoolSocket): void {
  this[kConn]?.ended();
}
function onSocketError(this: PoolSocket, err: Error): void {
  const c = this[kConn];
  if (c !== undefined && c.error === null) c.error = err;
}
/** The pool's TLS connections resume the last session (one name per pool: the pinned
 * servername), as undici's connector does: a new connection skips the full handshake. */
function onTlsSession(this: PoolSocket, session: Buffer): void {
  const c = this[kConn];
  if (c !== undefined) c.pool.tlsSession = session;
}
function onSocketClose(this: PoolSocket): void {
  this[kConn]?.closed();
}
function onSocketDrain(this: PoolSocket): void {
  this[kConn]?.drained();
}

// Request body stream listeners (the request hangs off the stream while it is written).
function onBodyData(this: BodyStream, chunk: Buffer | string): void {
  const req = this[kReq];
  if (req === undefined || req.done || req.conn === null) return;
  if (!req.conn.writeChunk(req, typeof chunk === 'string' ? Buffer.from(chunk) : chunk)) this.pause();
}
function onBodyEnd(this: BodyStream): void {
  const req = this[kReq];
  if (req === undefined || req.done || req.conn === null) return;
  req.conn.endBody(req);
}
function onBodyError(this: BodyStream, err: Error): void {
  const req = this[kReq];
  if (req === undefined || req.done || req.conn === null) return;
  req.conn.failRequest(req, err);
}
function onBodyClose(this: BodyStream): void {
  // 'close' may come before 'error' for a broken stream: decide a tick later.
  queueMicrotask(() => {
    const req = this[kReq];
    if (req === undefined || req.done || req.conn === null || req.bodyDone) return;
    req.conn.failRequest(req, new H1PoolError('UND_ERR_ABORTED', 'Request aborted'));
  });
}

function detachBody(req: H1Request): void {
  const body = req.body as BodyStream;
  if (body[kReq] !== req) return;
  body[kReq] = undefined;
  body.off('data', onBodyData);
  body.off('end', onBodyEnd);
  body.off('close', onBodyClose);
  // The error listener stays: destroying the stream with an error must not throw.
}

/** The request body of a failed request: a stream is destroyed as undici does (its
 * client cannot finish an upload that goes nowhere); an iterator is told to stop. */
function dropBody(req: H1Request, err: Error | undefined): void {
  if (req.bodyDone || !req.written) {
    if (req.bodyKind === BODY_STREAM) detachBody(req);
    return;
  }
  if (req.bodyKind === BODY_STREAM) {
    detachBody(req);
    (req.body as Readable).destroy(err);
  } else if (req.bodyKind === BODY_ITERATOR) {
    const it = req.body as AsyncIterator<unknown>;
    void it.return?.()?.catch?.(() => {});
  }
}

/** One socket and the request on it. */
class Conn implements ResponseSink {
  readonly socket: PoolSocket;
  readonly reader: ResponseReader;
  req: H1Request | null = null;
  /** The request the socket was opened for (until it connects). */
  first: H1Request | null;
  isConnected = false;
  /** Requests this socket has carried (a reused socket may have been closed by the backend). */
  served = 0;
  error: Error | null = null;
  /** Whether the response just read lets the socket carry another request. */
  private reusable = false;
  /** The response completed during the current push (release after it returns). */
  private completed = false;
  private inData = false;
  private timer: NodeJS.Timeout | null = null;
  private timerMs = 0;
  private phase = T_NONE;
  private idleTimer: NodeJS.Timeout | null = null;
  private idleMs = 0;
  idle = false;
  private connectTimer: NodeJS.Timeout | undefined;
  private drainWaiter: (() => void) | null = null;
  private socketPaused = false;
  isClosed = false;

  constructor(
    readonly pool: H1Pool,
    req: H1Request,
  ) {
    this.first = req;
    this.reader = new ResponseReader(this);
    const o = pool.options;
    const t = o.tls;
    let socket: net.Socket;
    if (t === undefined) {
      socket = net.connect({ host: pool.host, port: pool.port, noDelay: true, keepAlive: true, keepAliveInitialDelay: 60_000 });
      socket.once('connect', onSocketConnect);
    } else {
      // The name sent as SNI and verified is the endpoint's (pinned), never the
      // client's Host; '' sends no SNI and verifies the address itself.
      const servername = t.servername ?? (net.isIP(pool.host) === 0 ? pool.host : undefined);
      socket = tls.connect({
        host: pool.host,
        port: pool.port,
        ...(servername ? { servername } : {}),
        ...(t.ca === undefined ? {} : { ca: t.ca }),
        ...(pool.tlsSession === undefined ? {} : { session: pool.tlsSession }),
        rejectUnauthorized: t.rejectUnauthorized,
        ALPNProtocols: ['http/1.1'],
      });
      socket.on('session', onTlsSession);
      socket.setNoDelay(true);
      socket.setKeepAlive(true, 60_000);
      socket.once('secureConnect', onSocketConnect);
    }
    this.socket = socket as PoolSocket;
    this.socket[kConn] = this;
    socket.on('data', onSocketData);
    socket.on('end', onSocketEnd);
    socket.on('error', onSocketError);
    socket.on('close', onSocketClose);
    socket.on('drain', onSocketDrain);
    if (o.connectTimeoutMs > 0) this.connectTimer = setTimeout(onConnectTimeout, o.connectTimeoutMs, this);
  }

  connectTimedOut(): void {
    this.connectTimer = undefined;
    if (this.isConnected) return;
    this.socket.destroy(new H1PoolError('UND_ERR_CONNECT_TIMEOUT', `Connect Timeout Error (attempted address: ${this.pool.host}:${this.pool.port}, timeout: ${this.pool.options.connectTimeoutMs}ms)`));
  }

  connected(): void {
    if (this.isClosed) return;
    this.isConnected = true;
    if (this.connectTimer !== undefined) clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    const req = this.first;
    this.first = null;
    this.pool.connecting--;
    if (req !== null && !req.done) this.start(req);
    else this.pool.release(this);
  }

  // ---- a request ----

  start(req: H1Request): void {
    this.req = req;
    req.conn = this;
    this.pool.running++;
    this.completed = false;
    this.reusable = false;
    if (this.idleTimer !== null) this.idle = false;
    if (!req.connected) {
      req.connected = true;
      try {
        req.handler.onConnect?.(req.abort);
      } catch (err) {
        this.pool.abortRequest(req, err as Error);
      }
      // Aborted at once: nothing was written, the socket stays good.
      if (req.done) return;
    }
    this.served++;
    this.reader.expect(req.method);
    this.arm(T_HEADERS, req.headersTimeout);
    switch (req.bodyKind) {
      case BODY_NONE:
        hold(this.socket);
        this.socket.write(`${req.head}${EXPECTS_PAYLOAD.has(req.method) ? 'content-length: 0\r\n' : ''}\r\n`, 'latin1');
        req.written = true;
        req.bodyDone = true;
        break;
      case BODY_BUFFER: {
        const body = req.body as Buffer;
        if (!EXPECTS_PAYLOAD.has(req.method)) req.noReuse = true;
        this.writeFramed(`${req.head}content-length: ${body.length}\r\n\r\n`, body, '');
        req.written = true;
        req.bodyDone = true;
        break;
      }
      case BODY_STREAM: {
        const body = req.body as BodyStream;
        body[kReq] = req;
        body.on('data', onBodyData);
        body.on('end', onBodyEnd);
        body.on('close', onBodyClose);
        if (body.listeners('error').indexOf(onBodyError) === -1) body.on('error', onBodyError);
        if (body.readableEnded) {
          // Its end went by already (an empty body read to its end).
          this.endBody(req);
        } else if (body.errored !== null && body.errored !== undefined) {
          this.failRequest(req, body.errored as Error);
        } else body.resume();
        break;
      }
      default:
        void this.pumpIterator(req, req.body as AsyncIterator<unknown>);
    }
  }

  private async pumpIterator(req: H1Request, it: AsyncIterator<unknown>): Promise<void> {
    try {
      for (;;) {
        const r = await it.next();
        if (req.done || req.conn !== this) return;
        if (r.done === true) {
          this.endBody(req);
          return;
        }
        const v = r.value;
        const chunk = Buffer.isBuffer(v) ? v : typeof v === 'string' ? Buffer.from(v) : Buffer.from(v as Uint8Array);
        if (!this.writeChunk(req, chunk)) {
          await new Promise<void>((resolve) => (this.drainWaiter = resolve));
          if (req.done || req.conn !== this) return;
        }
      }
    } catch (err) {
      // A body that throws (CheckedBody's BODY_TOO_LARGE or CLIENT_CLOSED) fails the
      // request with its own error, and the half-sent request dies with the socket.
      if (!req.done && req.conn === this) this.failRequest(req, err as Error);
    }
  }

  /** Writes `prefix`, `chunk` and `suffix` as one write: a single buffer when small,
   * else a corked batch (one writev). Returns false when the socket is full. */
  private writeFramed(prefix: string, chunk: Buffer, suffix: string): boolean {
    const socket = this.socket;
    hold(socket);
    if (chunk.length <= 16384) {
      const pl = prefix.length;
      const out = Buffer.allocUnsafe(pl + chunk.length + suffix.length);
      out.write(prefix, 0, 'latin1');
      chunk.copy(out, pl);
      if (suffix.length !== 0) out.write(suffix, pl + chunk.length, 'latin1');
      return socket.write(out);
    }
    socket.cork();
    socket.write(prefix, 'latin1');
    socket.write(chunk);
    if (suffix.length !== 0) socket.write(suffix, 'latin1');
    socket.uncork();
    return !socket.writableNeedDrain;
  }

  /** A body chunk of a streamed request; false when the socket is full. */
  writeChunk(req: H1Request, chunk: Buffer): boolean {
    const len = chunk.length;
    if (len === 0) return true;
    if (this.socket.destroyed) return false;
    if (req.declared !== -1 && req.bytesWritten + len > req.declared) {
      this.failRequest(req, new H1PoolError('UND_ERR_REQ_CONTENT_LENGTH_MISMATCH', 'Request body length does not match content-length header'));
      return false;
    }
    let prefix = '';
    if (req.bytesWritten === 0) {
      // The head goes out with the first chunk: an upload that fails before its first
      // byte has sent nothing at all.
      if (!EXPECTS_PAYLOAD.has(req.method)) req.noReuse = true;
      prefix = req.declared === -1 ? `${req.head}transfer-encoding: chunked\r\n\r\n` : `${req.head}content-length: ${req.declared}\r\n\r\n`;
      req.written = true;
    }
    req.bytesWritten += len;
    if (req.declared === -1) return this.writeFramed(`${prefix}${len.toString(16)}\r\n`, chunk, '\r\n');
    return this.writeFramed(prefix, chunk, '');
  }

  /** The streamed body ended. */
  endBody(req: H1Request): void {
    if (req.bodyKind === BODY_STREAM) detachBody(req);
    if (req.declared !== -1 && req.bytesWritten !== req.declared) {
      this.failRequest(req, new H1PoolError('UND_ERR_REQ_CONTENT_LENGTH_MISMATCH', 'Request body length does not match content-length header'));
      return;
    }
    hold(this.socket);
    if (req.bytesWritten === 0) {
      this.socket.write(`${req.head}${EXPECTS_PAYLOAD.has(req.method) ? 'content-length: 0\r\n' : ''}\r\n`, 'latin1');
      req.written = true;
    } else if (req.declared === -1) this.socket.write('0\r\n\r\n', 'latin1');
    req.bodyDone = true;
    // The wait for the answer starts when the request is whole.
    if (this.phase === T_HEADERS) this.arm(T_HEADERS, req.headersTimeout);
  }

  drained(): void {
    const req = this.req;
    if (req === null || req.bodyDone) return;
    if (req.bodyKind === BODY_STREAM) (req.body as Readable).resume();
    else if (this.drainWaiter !== null) {
      const w = this.drainWaiter;
      this.drainWaiter = null;
      w();
    }
  }

  // ---- timers ----

  private arm(phase: number, ms: number): void {
    if (ms <= 0) {
      this.phase = T_NONE;
      return;
    }
    this.phase = phase;
    // One timer per socket, refreshed per phase; a change of duration (rare: timeouts
    // are per service) makes a new one.
    if (this.timer === null || this.timerMs !== ms) {
      if (this.timer !== null) clearTimeout(this.timer);
      this.timer = setTimeout(onConnTimer, ms, this);
      this.timer.unref();
      this.timerMs = ms;
    } else this.timer.refresh();
  }

  timerFired(): void {
    const req = this.req;
    if (req === null || req.done || this.phase === T_NONE) return;
    if (this.phase === T_HEADERS) {
      // As undici: while the body is still being written into a socket that takes it,
      // the request is not yet waiting for an answer.
      if (!req.bodyDone && !this.socket.writableNeedDrain) return;
      this.failRequest(req, new H1PoolError('UND_ERR_HEADERS_TIMEOUT', 'Headers Timeout Error'));
    } else {
      // Paused by us (the client is not reading): not the upstream's delay.
      if (this.reader.isPaused) return;
      this.failRequest(req, new H1PoolError('UND_ERR_BODY_TIMEOUT', 'Body Timeout Error'));
    }
  }

  // ---- the response ----

  data(chunk: Buffer): void {
    const req = this.req;
    if (req === null) {
      // Bytes on an idle socket: nobody asked for them; the socket cannot be trusted.
      this.socket.destroy();
      return;
    }
    if (!req.started) {
      req.started = true;
      req.handler.onResponseStarted?.();
      if (req.done) return;
    }
    this.inData = true;
    try {
      this.reader.push(chunk);
    } catch (err) {
      this.inData = false;
      this.failRequest(req, err as Error);
      return;
    }
    this.inData = false;
    this.afterPush();
  }

  private afterPush(): void {
    if (this.completed) {
      this.completed = false;
      this.finishResponse();
      return;
    }
    if (this.req !== null && this.reader.isPaused && !this.socketPaused) {
      this.socketPaused = true;
      this.socket.pause();
    }
  }

  onResponseHead(status: number, rawHeaders: Buffer[], keepAlive: boolean): boolean {
    const req = this.req as H1Request;
    this.reusable = keepAlive;
    this.arm(T_BODY, req.bodyTimeout);
    const h = req.handler;
    const ok = h.onHeaders?.(status, rawHeaders, req.resume, '') ?? true;
    return ok !== false && !req.done;
  }

  onResponseBody(chunk: Buffer): boolean {
    const req = this.req as H1Request;
    if (req.done) return false;
    if (this.phase === T_BODY && this.timer !== null) this.timer.refresh();
    const ok = req.handler.onData?.(chunk) ?? true;
    return ok !== false && !req.done;
  }

  onResponseEnd(trailers: Buffer[] | null): void {
    const req = this.req as H1Request;
    this.phase = T_NONE;
    if (req.done) return;
    req.done = true;
    this.completed = true;
    (req.handler.onComplete as ((t: Buffer[] | null) => void) | undefined)?.(trailers);
  }

  resumeFor(req: H1Request): void {
    if (this.req !== req || req.done) return;
    if (this.phase === T_BODY && this.timer !== null) this.timer.refresh();
    if (this.inData) {
      this.reader.resume();
      return;
    }
    this.inData = true;
    try {
      this.reader.resume();
    } catch (err) {
      this.inData = false;
      this.failRequest(req, err as Error);
      return;
    }
    this.inData = false;
    if (this.completed) {
      this.completed = false;
      this.finishResponse();
      return;
    }
    if (!this.reader.isPaused && this.socketPaused) {
      this.socketPaused = false;
      this.socket.resume();
    }
  }

  /** The response was read whole: the socket goes back to the pool or is closed. */
  private finishResponse(): void {
    const req = this.req as H1Request;
    this.req = null;
    req.conn = null;
    this.pool.running--;
    const hint = this.reader.keepAliveHintMs;
    const keep =
      this.reusable &&
      req.bodyDone &&
      !req.noReuse &&
      this.reader.rest() === null &&
      !this.socket.destroyed &&
      !this.socket.readableEnded &&
      !this.pool.isDestroyed &&
      (hint === -1 || hint > 1000);
    if (!req.bodyDone) {
      // Answered before the upload ended: the rest of it goes nowhere.
      dropBody(req, undefined);
    }
    if (!keep) {
      this.socket.destroy();
      this.pool.pump();
      return;
    }
    if (this.socketPaused) {
      this.socketPaused = false;
      this.socket.resume();
    }
    this.idleMs = hint === -1 ? this.pool.options.idleTimeoutMs : Math.min(this.pool.options.idleTimeoutMs, hint - 1000);
    this.pool.release(this);
  }

  /** Into the idle list: its timer runs. */
  startIdle(): void {
    this.idle = true;
    const ms = this.idleMs > 0 ? this.idleMs : this.pool.options.idleTimeoutMs;
    if (this.idleTimer === null || ms !== this.idleTimerMs) {
      if (this.idleTimer !== null) clearTimeout(this.idleTimer);
      this.idleTimer = setTimeout(onIdleTimer, ms, this);
      this.idleTimer.unref();
      this.idleTimerMs = ms;
    } else this.idleTimer.refresh();
  }

  private idleTimerMs = 0;

  idleExpired(): void {
    if (this.idle && this.req === null) this.socket.destroy();
  }

  /** Whether an idle socket can carry a request now. */
  get usable(): boolean {
    const s = this.socket;
    return !this.isClosed && !s.destroyed && s.readable && !s.readableEnded && s.writable && this.error === null;
  }

  ended(): void {
    const req = this.req;
    if (req === null) return;
    if (this.reader.closeDelimited) {
      this.inData = true;
      try {
        this.reader.eof();
      } finally {
        this.inData = false;
      }
      this.afterPush();
    }
  }

  /** Fails the request on this socket and drops the socket. */
  failRequest(req: H1Request, err: Error): void {
    if (req.done) return;
    req.done = true;
    this.phase = T_NONE;
    if (this.req === req) {
      this.req = null;
      this.pool.running--;
    }
    req.conn = null;
    dropBody(req, err);
    this.socket.destroy();
    req.handler.onError?.(err);
    this.pool.pump();
  }

  /** An abort of the request on this socket. */
  abort(req: H1Request, err: Error): void {
    req.done = true;
    this.phase = T_NONE;
    this.req = null;
    req.conn = null;
    this.pool.running--;
    dropBody(req, undefined);
    // Nothing of it went out: the socket is as good as before.
    if (!req.written && !this.isClosed) this.pool.release(this);
    else this.socket.destroy();
    req.handler.onError?.(err);
    this.pool.pump();
  }

  closed(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    if (this.connectTimer !== undefined) clearTimeout(this.connectTimer);
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    this.phase = T_NONE;
    const pool = this.pool;
    pool.forget(this);
    if (this.drainWaiter !== null) {
      const w = this.drainWaiter;
      this.drainWaiter = null;
      w();
    }
    if (!this.isConnected) {
      pool.connecting--;
      // A session that did not lead to a connection is not offered again.
      if (this.error !== null) pool.tlsSession = undefined;
      const req = this.first;
      this.first = null;
      // A socket that never connected: its request failed to connect (never sent).
      if (req !== null && !req.done) {
        req.done = true;
        req.handler.onError?.(this.error ?? new H1PoolError('UND_ERR_SOCKET', 'closed'));
      }
      pool.pump();
      return;
    }
    const req = this.req;
    if (req !== null && !req.done) {
      // A close-delimited body ends with the close (as with undici, a reset too).
      if (this.reader.closeDelimited && (this.error === null || (this.error as { code?: string }).code === 'ECONNRESET')) {
        this.inData = true;
        try {
          this.reader.eof();
        } finally {
          this.inData = false;
        }
        if (this.completed) {
          this.completed = false;
          this.finishResponse();
        }
        // Paused: it ends when the handler resumes.
        if (req.done || this.reader.closeDelimited) return;
      }
      this.req = null;
      req.conn = null;
      pool.running--;
      // The keep-alive race: a reused socket closed before any byte of the answer. An
      // idempotent request whose body is in memory goes out again on a fresh socket.
      if (this.served > 1 && req.resendable && !pool.isClosing) {
        req.retried = true;
        req.written = false;
        pool.requeue(req);
        return;
      }
      req.done = true;
      dropBody(req, this.error ?? undefined);
      req.handler.onError?.(this.error ?? new H1PoolError('UND_ERR_SOCKET', 'other side closed'));
    }
    pool.pump();
  }
}

/**
 * The HTTP/1.1 pool of one endpoint. `dispatch` takes undici's options and handler;
 * `close` lets what was dispatched finish and then closes the sockets, `destroy` cuts
 * everything; dispatches after either fail with UND_ERR_CLOSED / UND_ERR_DESTROYED.
 */
export class H1Pool {
  readonly options: H1PoolOptions;
  readonly host: string;
  readonly port: number;
  /** The Host of requests that carry none. */
  readonly hostHeader: string;
  /** Idle sockets, most recently used last (taken first: least likely closed by the backend). */
  private readonly idleList: Conn[] = [];
  private readonly all = new Set<Conn>();
  private queue: H1Request[] = [];
  private queueHead = 0;
  connecting = 0;
  running = 0;
  private closing = false;
  private destroyed = false;
  private closeWaiters: (() => void)[] = [];
  /** The last TLS session a connection of this pool got (https endpoints). */
  tlsSession: Buffer | undefined;

  constructor(origin: string | URL, options: H1PoolOptions) {
    const url = typeof origin === 'string' ? new URL(origin) : origin;
    this.options = { ...options, connections: Math.max(1, options.connections) };
    const h = url.hostname;
    this.host = h.startsWith('[') ? h.slice(1, -1) : h;
    this.port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
    this.hostHeader = url.host;
  }

  get closed(): boolean {
    return this.closing;
  }

  get isClosing(): boolean {
    return this.closing;
  }

  get isDestroyed(): boolean {
    return this.destroyed;
  }

  get stats(): H1PoolStats {
    const queued = this.queue.length - this.queueHead;
    const connected = this.all.size - this.connecting;
    // Requests bound to a socket still connecting are pending, not running.
    const pending = queued + this.connecting;
    const running = this.running;
    return { connected, free: this.idleList.length, pending, queued, running, size: pending + running };
  }

  dispatch(opts: Dispatcher.DispatchOptions, handler: Handler): boolean {
    if (this.destroyed || this.closing) {
      handler.onError?.(this.destroyed ? new H1PoolError('UND_ERR_DESTROYED', 'The client is destroyed') : new H1PoolError('UND_ERR_CLOSED', 'The client is closed'));
      return false;
    }
    let req: H1Request;
    try {
      req = new H1Request(this, opts, handler);
    } catch (err) {
      handler.onError?.(err as Error);
      return false;
    }
    this.queue.push(req);
    this.pump();
    return this.queue.length === this.queueHead;
  }

  /** Starts queued requests on idle sockets, or on new ones while under the limit. */
  pump(): void {
    while (this.queueHead < this.queue.length) {
      const req = this.queue[this.queueHead];
      if (req.done) {
        this.shift();
        continue;
      }
      const conn = this.takeIdle();
      if (conn !== undefined) {
        this.shift();
        conn.start(req);
        continue;
      }
      if (this.all.size >= this.options.connections || this.destroyed) break;
      this.shift();
      this.connecting++;
      try {
        this.all.add(new Conn(this, req));
      } catch (err) {
        // Options net/tls refuse outright (a CA that is not PEM): the connect failed.
        this.connecting--;
        req.done = true;
        req.handler.onError?.(err as Error);
      }
    }
    if (this.closing) this.checkClosed();
  }

  private shift(): void {
    this.queue[this.queueHead++] = undefined as unknown as H1Request;
    if (this.queueHead === this.queue.length) {
      this.queue = [];
      this.queueHead = 0;
    } else if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
  }

  private takeIdle(): Conn | undefined {
    const list = this.idleList;
    while (list.length > 0) {
      const c = list.pop() as Conn;
      c.idle = false;
      // Checked at reuse: a socket the backend closed (or wrote to) meanwhile is dropped.
      if (c.usable) return c;
      c.socket.destroy();
    }
    return undefined;
  }

  /** A request sent again after the keep-alive race goes first. */
  requeue(req: H1Request): void {
    if (this.queueHead > 0) this.queue[--this.queueHead] = req;
    else this.queue.unshift(req);
    this.pump();
  }

  /** A connected socket with no request: to the next waiting request, or idle. */
  release(conn: Conn): void {
    if (this.destroyed || (this.closing && this.queueHead === this.queue.length) || !conn.usable) {
      conn.socket.destroy();
      if (this.closing) this.checkClosed();
      return;
    }
    while (this.queueHead < this.queue.length) {
      const req = this.queue[this.queueHead];
      this.shift();
      if (req.done) continue;
      conn.start(req);
      return;
    }
    conn.startIdle();
    this.idleList.push(conn);
  }

  forget(conn: Conn): void {
    this.all.delete(conn);
    const i = this.idleList.indexOf(conn);
    if (i !== -1) this.idleList.splice(i, 1);
    if (this.closing) this.checkClosed();
  }

  abortRequest(req: H1Request, err: Error | undefined): void {
    if (req.done) return;
    const e = err ?? new H1PoolError('UND_ERR_ABORTED', 'Request aborted');
    const conn = req.conn;
    if (conn !== null && conn.req === req) {
      conn.abort(req, e);
      return;
    }
    req.done = true;
    req.handler.onError?.(e);
    this.pump();
  }

  private checkClosed(): void {
    if (this.queueHead < this.queue.length || this.running > 0 || this.connecting > 0) return;
    for (const c of this.idleList) c.socket.destroy();
    if (this.all.size > 0 && this.destroyed) return;
    const w = this.closeWaiters;
    if (w.length === 0) return;
    this.closeWaiters = [];
    for (const fn of w) fn();
  }

  /** Lets dispatched requests finish, then closes every socket. */
  close(): Promise<void> {
    this.closing = true;
    return new Promise<void>((resolve) => {
      this.closeWaiters.push(resolve);
      this.checkClosed();
    });
  }

  /** Fails every request and closes every socket now. */
  destroy(): Promise<void> {
    this.closing = true;
    this.destroyed = true;
    const err = new H1PoolError('UND_ERR_DESTROYED', 'The client is destroyed');
    const queued = this.queue.slice(this.queueHead);
    this.queue = [];
    this.queueHead = 0;
    for (const req of queued) {
      if (req.done) continue;
      req.done = true;
      req.handler.onError?.(err);
    }
    const conns = [...this.all];
    const closes = conns.map((c) => (c.isClosed ? Promise.resolve() : new Promise<void>((resolve) => c.socket.once('close', () => resolve()))));
    for (const c of conns) {
      if (c.error === null) c.error = err;
      c.socket.destroy();
    }
    return Promise.all(closes).then(() => {
      const w = this.closeWaiters;
      this.closeWaiters = [];
      for (const fn of w) fn();
    });
  }
}

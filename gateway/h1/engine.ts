// The client side of the HTTP/1.1 data plane: connections accepted on `net`/`tls`
// sockets, requests read by RequestReader (request.ts), responses framed here. It takes
// the place of node:http's server: no IncomingMessage/ServerResponse streams, no header
// object unless someone asks for one, one write per response head and first chunk.
//
// One request at a time per connection. Pipelined requests wait in the reader and are
// read, in order, once the response before them has been written whole: responses can
// never overtake each other, and a pipelining client cannot make the gateway hold more
// than one request of its in flight (HAProxy serves pipelines the same way).
//
// Timeouts are checked by one sweep per engine (as Node's connectionsCheckingInterval
// did), not by a timer per request:
// - headers: a request head must arrive whole within `headersMs` of its first byte (a
//   new connection's first head within `headersMs` of the accept) → 408, closed;
// - request: the whole request, body included, within `requestMs` of its first byte →
//   408 while nothing was answered yet, else the connection is cut;
// - keep-alive: an idle connection is closed after `keepAliveMs` without a byte.
//
// A connection whose last response said `Connection: close` is closed by a lingering
// close: our FIN first, then whatever the client still sends is read and dropped until
// it closes too (or LINGER_MS pass), so that an unread request body never turns our
// close into a reset that destroys the response before the client has read it.

import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { hold, release } from './batch.js';
import { RequestError, RequestReader, type RequestHead } from './request.js';

export interface H1Limits {
  maxHeaderSize: number;
  /** Header fields the reader accepts (the request path refuses above its own limit). */
  maxHeaderCount: number;
  headersMs: number;
  /** 0 = no limit. */
  requestMs: number;
  keepAliveMs: number;
  /** How long a closing connection's unsent response may go without any byte taken by
   * the client before the connection is cut (gateway.timeouts.send); LINGER_MS when
   * absent or 0. */
  sendMs?: number;
}

/** What the engine hands requests to. */
export interface H1Handlers {
  /** A request to answer (its body, if any, is read from `req`). */
  request(req: H1Request, res: H1Response): void;
  /** A request with `Expect: 100-continue`: the handler decides whether the client may send its body. */
  checkContinue(req: H1Request, res: H1Response): void;
  /** An Upgrade request: the socket is the handler's from now on; `head` is what came after the request head. */
  upgrade(req: H1Request, socket: Socket, head: Buffer): void;
  /** A CONNECT request: the socket is the handler's. */
  connect(req: H1Request, socket: Socket): void;
  /** A request refused before it reached the handlers (malformed, too large, too slow): answered by
   * the handler on the raw socket, which is closed after. `raw` holds the bytes read of it;
   * `req` is the request when its head was read whole (a refusal during its body). */
  refuse(socket: Socket, status: number, code: string, message: string, raw: Buffer | undefined, req?: H1Request): void;
  /** A connection whose first bytes are the HTTP/2 preface (plain listener only). */
  http2?(socket: Socket): void;
}

/** How long a closing connection reads and drops what its client still sends. */
const LINGER_MS = 2000;
/** Request body bytes held for a reader that has not taken them before the socket is paused. */
const BODY_HIGH_WATER = 64 * 1024;
/** Pipelined bytes held while a response is being written before the socket is paused. */
const PIPELINE_HIGH_WATER = 64 * 1024;
/** What a queued body chunk costs against BODY_HIGH_WATER beyond its bytes (a Buffer
 * object and its queue slot), so that a body of tiny chunks cannot queue tens of
 * thousands of objects under a mark meant for 64 KiB. */
const CHUNK_COST = 64;

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

// Connection states.
const IDLE = 0; // between requests (or before the first): no byte of a request read
const HEAD = 1; // a request head is arriving
const BODY = 2; // a request is being served, its body still arriving
const SERVING = 3; // the whole request is in; its response is being written
const LINGER = 4; // our FIN is sent; reading to drop until the client closes
const GONE = 5; // handed over (upgrade, CONNECT, HTTP/2) or closed

export class H1Engine {
  private readonly conns = new Set<H1Conn>();
  private sweepTimer: NodeJS.Timeout | undefined;
  /** Cached value of the Date header, renewed once a second at most. */
  private dateAt = 0;
  private dateValue = '';

  constructor(
    readonly handlers: H1Handlers,
    public limits: H1Limits,
    /** Whether connections may open with the HTTP/2 preface (a plain listener with h2c). */
    private readonly sniffHttp2 = false,
  ) {}

  /** Takes a new connection (plain, or TLS after its handshake). */
  accept(socket: Socket): void {
    if (socket.destroyed) return;
    const c = new H1Conn(this, socket, this.sniffHttp2);
    this.conns.add(c);
    if (this.sweepTimer === undefined) {
      this.sweepTimer = setInterval(() => this.sweep(), Math.max(50, Math.min(1000, this.limits.headersMs)));
      this.sweepTimer.unref();
    }
  }

  /** @internal */
  forget(c: H1Conn): void {
    this.conns.delete(c);
  }

  /** The connections with no request in progress and no byte of a next one read. */
  idleSockets(): Socket[] {
    const out: Socket[] = [];
    for (const c of this.conns) if (c.state === IDLE && c.reader.buffered === 0 && !c.socket.destroyed) out.push(c.socket);
    return out;
  }

  get connections(): number {
    return this.conns.size;
  }

  /** Cuts every connection. */
  closeAll(): void {
    // (What this turn wrote still leaves first, as before write batching.)
    for (const c of this.conns) cut(c.socket);
    this.conns.clear();
    if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
  }

  /** The Date header's value (RFC 9110 IMF-fixdate), cached for a second. */
  date(): string {
    const now = Date.now();
    if (now - this.dateAt >= 1000) {
      this.dateAt = now - (now % 1000);
      this.dateValue = new Date(now).toUTCString();
    }
    return this.dateValue;
  }

  private sweep(): void {
    const now = performance.now();
    const l = this.limits;
    for (const c of this.conns) c.check(now, l);
    if (this.conns.size === 0 && this.sweepTimer !== undefined) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = undefined;
    }
  }
}

function onSocketData(this: Socket & { [kConn]?: H1Conn }, chunk: Buffer): void {
  this[kConn]?.data(chunk);
}
function onSocketEnd(this: Socket & { [kConn]?: H1Conn }): void {
  this[kConn]?.ended();
}
function onSocketClose(this: Socket & { [kConn]?: H1Conn }): void {
  this[kConn]?.closed();
}
function onSocketError(this: Socket): void {
  // 'close' follows; an error on a client socket (a reset) needs no answer.
}
function onSocketDrain(this: Socket & { [kConn]?: H1Conn }): void {
  this[kConn]?.res?.emit('drain');
}
const kConn = Symbol('switchyard.h1engine.conn');

/** @internal One client connection. */
export class H1Conn {
  readonly reader: RequestReader;
  state = IDLE;
  /** When the current state's clock started (performance.now()). */
  private since: number;
  /** When the current request's first byte came. */
  private requestSince = 0;
  req: H1Request | undefined;
  res: H1Response | undefined;
  /** Whether the request in progress must be the connection's last. */
  private last = false;
  private paused = false;
  private sniffing: boolean;
  /** The request in progress has not been read whole and its response is done: its
   * remaining body is read and dropped before the next request. */
  private discarding = false;
  /** Reading the pipeline is suspended (re-entrancy guard for pump). */
  private pumping = false;
  private first = true;
  /** The last bytes received: a refused head's lines the reader has already consumed
   * are still in them (for the client's x-request-id in the refusal). */
  private lastChunk: Buffer | undefined;
  /** In LINGER: the response bytes still unsent at the last sweep (-1: not looked yet). */
  private lingerPending = -1;

  constructor(
    private readonly engine: H1Engine,
    readonly socket: Socket,
    sniff: boolean,
  ) {
    this.reader = new RequestReader({ maxHeaderSize: engine.limits.maxHeaderSize, maxHeaderCount: engine.limits.maxHeaderCount });
    this.since = performance.now();
    this.sniffing = sniff;
    (socket as Socket & { [kConn]?: H1Conn })[kConn] = this;
    socket.setNoDelay(true);
    socket.on('data', onSocketData);
    socket.on('end', onSocketEnd);
    socket.on('close', onSocketClose);
    socket.on('error', onSocketError);
    socket.on('drain', onSocketDrain);
  }

  data(chunk: Buffer): void {
    if (this.state === LINGER) return;
    if (this.sniffing) {
      const seen = this.reader.buffered === 0 ? chunk : Buffer.concat([this.reader.rest(), chunk]);
      const n = Math.min(seen.length, PREFACE.length);
      if (seen.compare(PREFACE, 0, n, 0, n) === 0) {
        if (seen.length < PREFACE.length) {
          this.reader.push(seen);
          return;
        }
        this.handOver();
        this.socket.unshift(seen);
        this.engine.handlers.http2?.(this.socket);
        return;
      }
      this.sniffing = false;
      chunk = seen;
    }
    this.lastChunk = chunk;
    if (this.discarding) this.since = performance.now();
    this.reader.push(chunk);
    this.pump();
    if (!this.paused && (this.state === SERVING || this.state === BODY) && this.reader.buffered > PIPELINE_HIGH_WATER + this.engine.limits.maxHeaderSize) this.pause();
  }

  /** Reads events from the reader as far as the connection's state allows. */
  pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (;;) {
        const st = this.state;
        if (st === IDLE || st === HEAD) {
          if (!this.nextHead()) return;
        } else if (st === BODY) {
          if (!this.nextBody()) return;
        } else return;
      }
    } finally {
      this.pumping = false;
    }
  }

  private nextHead(): boolean {
    let ev;
    try {
      ev = this.reader.next();
    } catch (err) {
      this.refuse(err);
      return false;
    }
    if (ev === undefined) {
      if (this.reader.midRequest && this.state === IDLE) {
        this.state = HEAD;
        this.since = this.requestSince = performance.now();
      }
      return false;
    }
    if (ev.type !== 'head') return false; // (cannot happen: a reader yields a head first)
    const head = ev.head;
    if (this.state === IDLE) this.requestSince = performance.now();
    this.first = false;
    const req = new H1Request(this, head);
    this.req = req;
    const h = this.engine.handlers;
    if (head.method === 'CONNECT') {
      this.handOver();
      h.connect(req, this.socket);
      return false;
    }
    if (head.upgrade) {
      // An upgrade request with a body is refused: where the other protocol would start
      // (after the body, or right after the head) is a question two parties can answer
      // differently, which is what a desync is made of. A WebSocket handshake never has one.
      if (head.contentLength > 0 || head.chunked) {
        this.refuse(new RequestError(400, 'an upgrade request must not carry a body'));
        return false;
      }
      // The body-less end of the upgrade request comes right after its head.
      try {
        this.reader.next();
      } catch {
        // (nothing: the head is what matters)
      }
      const rest = this.reader.rest();
      this.handOver();
      h.upgrade(req, this.socket, rest);
      return false;
    }
    const res = new H1Response(this, req);
    this.res = res;
    this.last = !head.keepAlive;
    this.state = BODY;
    this.since = performance.now();
    if (head.expectContinue && head.minor === 1) h.checkContinue(req, res);
    else h.request(req, res);
    return true;
  }

  private nextBody(): boolean {
    const req = this.req as H1Request;
    if (!this.discarding && req.buffered >= BODY_HIGH_WATER) {
      this.pause();
      return false;
    }
    let ev;
    try {
      ev = this.reader.next();
    } catch (err) {
      this.bodyFailed(err);
      return false;
    }
    if (ev === undefined) return false;
    if (ev.type === 'body') {
      if (!this.discarding) req.push(ev.chunk);
      return true;
    }
    if (ev.type === 'end') {
      this.state = SERVING;
      req.finish();
      if (this.discarding) {
        this.discarding = false;
        this.next();
        return this.state === IDLE;
      }
      return false;
    }
    return false;
  }

  /** The request body taken below the high-water mark: read on. */
  bodyTaken(): void {
    if (this.paused && this.state === BODY) {
      this.resume();
      this.pump();
    }
  }

  private pause(): void {
    this.paused = true;
    this.socket.pause();
  }

  private resume(): void {
    this.paused = false;
    this.socket.resume();
  }

  /** A malformed or over-limit request head (or a pipelined one after a response). */
  private refuse(err: unknown): void {
    // What the reader had not consumed (from the refused line on), then the last bytes
    // received (the refused head's earlier lines, when they came with them).
    const rest = this.reader.rest();
    const raw = this.lastChunk === undefined ? rest : Buffer.concat([rest, this.lastChunk]);
    this.state = GONE;
    this.detach();
    if (err instanceof RequestError) {
      this.engine.handlers.refuse(this.socket, err.status, err.code, err.message, raw);
    } else {
      cut(this.socket);
    }
  }

  /** A malformed chunk (or too much) in the body of a request being served. */
  private bodyFailed(err: unknown): void {
    const res = this.res;
    const req = this.req;
    if (res !== undefined && !res.headersSent && err instanceof RequestError) {
      // The request can never complete: answer now; the exchange sees its client gone.
      this.state = GONE;
      this.detach();
      res.abandon();
      req?.abort();
      this.engine.handlers.refuse(this.socket, err.status, err.code, err.message, undefined, req);
      return;
    }
    cut(this.socket);
  }

  /** The response was written whole. */
  responded(res: H1Response): void {
    if (res !== this.res) return;
    if (this.last || res.closeAfter) {
      this.linger();
      return;
    }
    if (this.state === BODY) {
      // Answered before its body was read whole: the rest is read and dropped (bounded
      // by the request timeout), then the next request is read.
      this.discarding = true;
      this.since = performance.now();
      this.req?.abort();
      if (this.paused) this.resume();
      this.pump();
      return;
    }
    this.next();
  }

  /** Ready for the next request (pipelined ones are already waiting in the reader). */
  private next(): void {
    this.req = undefined;
    this.res = undefined;
    this.state = IDLE;
    this.since = performance.now();
    if (this.paused) this.resume();
    if (this.reader.buffered > 0) this.pump();
  }

  /** Closes after what was written: our FIN, then drop what comes until the client's. */
  private linger(): void {
    this.state = LINGER;
    this.since = performance.now();
    this.lingerPending = -1;
    this.req = undefined;
    this.res = undefined;
    if (this.paused) this.resume();
    this.socket.end();
  }

  /** The socket is someone else's from now on. */
  private handOver(): void {
    this.state = GONE;
    this.detach();
    this.socket.pause();
  }

  private detach(): void {
    const s = this.socket;
    s.off('data', onSocketData);
    s.off('end', onSocketEnd);
    s.off('close', onSocketClose);
    s.off('error', onSocketError);
    s.off('drain', onSocketDrain);
    (s as Socket & { [kConn]?: H1Conn })[kConn] = undefined;
    this.engine.forget(this);
  }

  /** The client sent its FIN. */
  ended(): void {
    if (this.state === LINGER) {
      // Our FIN may still wait behind response bytes the client has not taken: cutting
      // now would drop them (silently, for a close-delimited body). Without half-open
      // the socket ends its side itself and closes once they are out.
      if (this.socket.writableFinished) this.socket.destroy();
      return;
    }
    // (Node's server does the same without httpAllowHalfOpen: a request in progress is
    // abandoned with its client.)
    if (this.state === IDLE && this.reader.buffered === 0) this.socket.end();
    else cut(this.socket);
  }

  closed(): void {
    this.state = GONE;
    this.detach();
    this.req?.abort();
    this.res?.abandon();
  }

  /** The engine's sweep: deadlines. */
  check(now: number, l: H1Limits): void {
    const s = this.socket;
    switch (this.state) {
      case IDLE:
        if (this.first) {
          // A connection that never sent a byte is closed without an answer.
          if (now - this.since >= l.headersMs) s.destroy();
        } else if (now - this.since >= l.keepAliveMs) s.destroy();
        return;
      case HEAD:
        if (now - this.since >= l.headersMs) this.timedOut();
        return;
      case BODY:
        // Dropping the body of an answered request: the client owes nothing more, so a
        // pause longer than the keep-alive deadline closes the connection (there may be
        // no request deadline at all).
        if (this.discarding && now - this.since >= l.keepAliveMs) s.destroy();
        else if (l.requestMs > 0 && now - this.requestSince >= l.requestMs) this.timedOut();
        return;
      case LINGER: {
        // The clock runs from our FIN actually leaving; before that, from the last
        // progress of the response still being flushed (a client that takes nothing for
        // the send timeout is cut, as forward.ts does while the response is in flight).
        if (!s.writableFinished) {
          const pending = s.writableLength;
          if (pending !== this.lingerPending) {
            this.lingerPending = pending;
            this.since = now;
          } else if (now - this.since >= (l.sendMs !== undefined && l.sendMs > 0 ? l.sendMs : LINGER_MS)) s.destroy();
          return;
        }
        if (this.lingerPending !== 0) {
          this.lingerPending = 0;
          this.since = now;
          return;
        }
        if (now - this.since >= LINGER_MS) s.destroy();
        return;
      }
    }
  }

  private timedOut(): void {
    const res = this.res;
    if (res !== undefined && res.headersSent) {
      cut(this.socket);
      return;
    }
    const raw = this.state === HEAD ? this.reader.rest() : undefined;
    const req = this.state === HEAD ? undefined : this.req;
    this.state = GONE;
    this.detach();
    res?.abandon();
    this.req?.abort();
    this.engine.handlers.refuse(this.socket, 408, 'REQUEST_TIMEOUT', 'the request was not received in time', raw, req);
  }

  date(): string {
    return this.engine.date();
  }

  get keepAliveSeconds(): number {
    return Math.max(1, Math.floor(this.engine.limits.keepAliveMs / 1000));
  }
}

// A lazily made header object, shared by every H1Request.
const kHeaders = Symbol('switchyard.h1.headers');

/**
 * The request as the request path reads it: what node:http's IncomingMessage offers
 * that the gateway uses, without being a stream. The body is read with read() and the
 * 'readable' / 'end' / 'close' events, as from a paused Readable.
 */
export class H1Request extends EventEmitter {
  readonly method: string;
  readonly url: string;
  readonly httpVersionMajor = 1;
  readonly httpVersionMinor: number;
  readonly rawHeaders: string[];
  readonly head: RequestHead;
  /** The whole body was received. */
  complete: boolean;
  readableDidRead = false;
  readableEnded = false;
  destroyed = false;
  aborted = false;
  private chunks: Buffer[] = [];
  private bytes = 0;
  private [kHeaders]: Record<string, string | string[] | undefined> | undefined;

  constructor(
    private readonly conn: H1Conn,
    head: RequestHead,
  ) {
    super();
    this.head = head;
    this.method = head.method;
    this.url = head.target;
    this.httpVersionMinor = head.minor;
    this.rawHeaders = head.rawHeaders;
    this.complete = head.contentLength <= 0 && !head.chunked;
    if (this.complete) this.readableEnded = false;
  }

  get socket(): Socket {
    return this.conn.socket;
  }

  /** Node's header object (lower-case names, duplicates combined); made on first use. A
   * handler may set a field (the routing host of HTTP/2 is set this way). */
  get headers(): Record<string, string | string[] | undefined> {
    return (this[kHeaders] ??= this.head.headers as Record<string, string | string[] | undefined>);
  }

  set headers(h: Record<string, string | string[] | undefined>) {
    this[kHeaders] = h;
  }

  /** What the body received and not read yet costs: its bytes plus CHUNK_COST per
   * queued chunk (what BODY_HIGH_WATER is measured against). */
  get buffered(): number {
    return this.bytes;
  }

  /** The next body chunk, or null when none is waiting (then readableEnded tells whether
   * the body is over). */
  read(): Buffer | null {
    const c = this.chunks.shift();
    if (c === undefined) {
      if (this.complete && !this.readableEnded && !this.destroyed) {
        this.readableEnded = true;
        process.nextTick(emitEnd, this);
      }
      return null;
    }
    this.readableDidRead = true;
    this.bytes -= c.length + CHUNK_COST;
    if (this.bytes < BODY_HIGH_WATER) this.conn.bodyTaken();
    return c;
  }

  /** @internal A body chunk from the reader. */
  push(chunk: Buffer): void {
    // A body chunk is a view into a socket read buffer: a small one would keep the whole
    // read buffer alive (a 1-byte chunk behind a 32 KiB chunk extension pins 32 KiB per
    // byte counted), so it is copied out.
    if (chunk.length < chunk.buffer.byteLength >>> 1) chunk = Buffer.from(chunk);
    this.chunks.push(chunk);
    this.bytes += chunk.length + CHUNK_COST;
    this.emit('readable');
  }

  /** @internal The body ended, received whole. */
  finish(): void {
    if (this.complete) return;
    this.complete = true;
    this.emit('readable');
  }

  /** @internal The client is gone (or the request was abandoned). */
  abort(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    if (!this.complete) this.aborted = true;
    this.chunks.length = 0;
    this.bytes = 0;
    this.emit('close');
  }
}

function emitEnd(req: H1Request): void {
  req.emit('end');
}

const STATUS_TEXT: Record<number, string> = {
  100: 'Continue', 101: 'Switching Protocols', 103: 'Early Hints',
  200: 'OK', 201: 'Created', 202: 'Accepted', 203: 'Non-Authoritative Information', 204: 'No Content', 205: 'Reset Content', 206: 'Partial Content',
  300: 'Multiple Choices', 301: 'Moved Permanently', 302: 'Found', 303: 'See Other', 304: 'Not Modified', 307: 'Temporary Redirect', 308: 'Permanent Redirect',
  400: 'Bad Request', 401: 'Unauthorized', 402: 'Payment Required', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 406: 'Not Acceptable',
  407: 'Proxy Authentication Required', 408: 'Request Timeout', 409: 'Conflict', 410: 'Gone', 411: 'Length Required', 412: 'Precondition Failed',
  413: 'Payload Too Large', 414: 'URI Too Long', 415: 'Unsupported Media Type', 416: 'Range Not Satisfiable', 417: 'Expectation Failed', 418: "I'm a Teapot",
  421: 'Misdirected Request', 422: 'Unprocessable Entity', 423: 'Locked', 424: 'Failed Dependency', 425: 'Too Early', 426: 'Upgrade Required',
  428: 'Precondition Required', 429: 'Too Many Requests', 431: 'Request Header Fields Too Large', 451: 'Unavailable For Legal Reasons',
  500: 'Internal Server Error', 501: 'Not Implemented', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout', 505: 'HTTP Version Not Supported',
  507: 'Insufficient Storage', 508: 'Loop Detected', 511: 'Network Authentication Required',
};

/** Reason phrases of the statuses the gateway knows (others get "Unknown"). */
export function reasonPhrase(status: number): string {
  return STATUS_TEXT[status] ?? 'Unknown';
}

// A header value the gateway may send: no CR, LF, NUL or other control but HTAB.
const INVALID_VALUE_RE = /[^\t\x20-\x7e\x80-\xff]/;
const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

// Framing of the response body.
const NONE = 0; // no body (HEAD, 1xx, 204, 304)
const LENGTH = 1; // Content-Length
const CHUNKED = 2;
const UNTIL_CLOSE = 3; // an HTTP/1.0 client and no length: the close ends it

const CHUNK_END = Buffer.from('\r\n', 'latin1');
/** A first body chunk up to this size is copied behind the head into one Buffer: one
 * plain write instead of a corked writev (whose bookkeeping costs more than the copy). */
const JOIN_MAX = 16 * 1024;

function joined(head: string, body: Buffer): Buffer {
  const n = head.length;
  const out = Buffer.allocUnsafe(n + body.length);
  out.write(head, 0, n, 'latin1');
  body.copy(out, n);
  return out;
}
const LAST_CHUNK = '0\r\n\r\n';

/**
 * The response as the request path writes it: node:http ServerResponse's surface that
 * the gateway uses. The head is held by writeHead and goes out with the first body
 * bytes (or the end) in one write.
 */
export class H1Response extends EventEmitter {
  headersSent = false;
  writableEnded = false;
  writableFinished = false;
  statusCode = 200;
  /** This response closes the connection (its own Connection: close, or framing). */
  closeAfter = false;
  private framing = NONE;
  private head: string | undefined;
  private done = false;

  constructor(
    /** @internal */
    readonly conn: H1Conn,
    private readonly req: H1Request,
  ) {
    super();
  }

  get socket(): Socket | null {
    return this.done ? null : this.conn.socket;
  }

  /** `HTTP/1.1 100 Continue`: the client may send its body. */
  writeContinue(): void {
    if (this.headersSent || this.done) return;
    hold(this.conn.socket);
    this.conn.socket.write('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');
  }

  /** Sets the status and headers (flat name/value pairs); the framing headers are the
   * engine's: Content-Length is kept, Transfer-Encoding is replaced by its own. Throws on
   * a header the gateway may not send. */
  writeHead(status: number, headers: readonly string[]): this {
    if (this.headersSent) throw new Error('response head already written');
    let length = -1;
    /** The headers given say Connection: close. */
    let said = false;
    let close = false;
    let hasDate = false;
    let out = `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\n`;
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i];
      const value = headers[i + 1];
      const n = name.length;
      if (n === 17 && name.toLowerCase() === 'transfer-encoding') continue;
      if (!TOKEN_RE.test(name)) throw new TypeError(`invalid header name ${JSON.stringify(name.slice(0, 64))}`);
      if (INVALID_VALUE_RE.test(value)) throw new TypeError(`invalid header value of ${name}`);
      if (n === 14 && name.toLowerCase() === 'content-length') length = Number(value);
      else if (n === 10 && name.toLowerCase() === 'connection') {
        if (/(^|,)\s*close\s*(,|$)/i.test(value)) said = close = true;
        else continue; // (keep-alive and the rest are the engine's to say)
      } else if (n === 4 && name.toLowerCase() === 'date') hasDate = true;
      out += `${name}: ${value}\r\n`;
    }
    const req = this.req;
    const bodiless = req.method === 'HEAD' || status < 200 || status === 204 || status === 304;
    if (bodiless) this.framing = NONE;
    else if (length >= 0) this.framing = LENGTH;
    else if (req.httpVersionMinor === 1) {
      this.framing = CHUNKED;
      out += 'transfer-encoding: chunked\r\n';
    } else {
      this.framing = UNTIL_CLOSE;
      close = true;
    }
    if (!hasDate) out += `date: ${this.conn.date()}\r\n`;
    if (close || !req.head.keepAlive) {
      this.closeAfter = true;
      if (!said) out += 'connection: close\r\n';
    } else if (req.httpVersionMinor === 0) out += `connection: keep-alive\r\nkeep-alive: timeout=${this.conn.keepAliveSeconds}\r\n`;
    else out += `keep-alive: timeout=${this.conn.keepAliveSeconds}\r\n`;
    this.statusCode = status;
    this.head = out + '\r\n';
    this.headersSent = true;
    return this;
  }

  /** Writes body bytes; false when the client's socket is full ('drain' follows). */
  write(chunk: Buffer | string): boolean {
    if (this.done || this.writableEnded) return false;
    if (!this.headersSent) this.writeHead(this.statusCode, []);
    const s = this.conn.socket;
    hold(s);
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    if (this.framing === NONE || b.length === 0) {
      if (this.head !== undefined) return this.flushHead('');
      return !s.writableNeedDrain;
    }
    if (this.framing === CHUNKED) {
      const size = `${b.length.toString(16)}\r\n`;
      s.cork();
      s.write(this.takeHead() + size, 'latin1');
      s.write(b);
      const ok = s.write(CHUNK_END);
      s.uncork();
      return ok;
    }
    const head = this.takeHead();
    if (head === '') return s.write(b);
    if (b.length <= JOIN_MAX) return s.write(joined(head, b));
    s.cork();
    s.write(head, 'latin1');
    const ok = s.write(b);
    s.uncork();
    return ok;
  }

  /** Ends the response (with `body` as its last bytes). */
  end(body?: Buffer | string): this {
    if (this.done || this.writableEnded) return this;
    if (!this.headersSent) this.writeHead(this.statusCode, []);
    if (body !== undefined && body.length > 0) this.write(body);
    this.writableEnded = true;
    const tail = this.framing === CHUNKED ? LAST_CHUNK : '';
    const head = this.takeHead();
    if (head !== '' || tail !== '') {
      hold(this.conn.socket);
      this.conn.socket.write(head + tail, 'latin1');
    }
    this.done = true;
    this.writableFinished = true;
    if (this.framing === UNTIL_CLOSE) this.closeAfter = true;
    // The connection moves on (to a pipelined request, or its close) once the code that
    // ended the response has returned: never inside an upstream pool's callback.
    process.nextTick(responseEnded, this);
    return this;
  }

  /** Trailers are not sent over HTTP/1.1 (none were before); kept for the request path's
   * one surface with HTTP/2. */
  addTrailers(_t: Record<string, string>): void {}

  /** Cuts the connection: the client sees the response end early. */
  destroy(_err?: Error): this {
    if (!this.done) cut(this.conn.socket);
    return this;
  }

  /** @internal The connection closed (or the request was refused) before the end. */
  abandon(): void {
    if (this.done) return;
    this.done = true;
    this.emit('close');
  }

  private takeHead(): string {
    const h = this.head;
    if (h === undefined) return '';
    this.head = undefined;
    return h;
  }

  private flushHead(extra: string): boolean {
    hold(this.conn.socket);
    return this.conn.socket.write(this.takeHead() + extra, 'latin1');
  }
}

/** Cuts a client connection; what this turn wrote to it leaves first (a response cut
 * in the middle reaches the client as far as it got, as before write batching). */
function cut(s: Socket): void {
  release(s);
  s.destroy();
}

function responseEnded(res: H1Response): void {
  res.emit('finish');
  res.emit('close');
  res.conn.responded(res);
}

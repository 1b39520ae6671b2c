// HTTP/2 to an endpoint (services.NAME.protocol h2c or h2): a few node:http2 client
// sessions per endpoint, each carrying many streams.
//
// It takes the same dispatch(options, handler) call as the endpoint's undici Pool and
// drives the same handler (onConnect/onHeaders/onData/onComplete/onError), so an
// Exchange forwards over HTTP/1.1 or HTTP/2 without knowing which.
//
// Sessions: a stream goes on the first open session with a free stream slot (the peer's
// SETTINGS_MAX_CONCURRENT_STREAMS); when every session is full a new one is opened, up
// to `maxSessions`; past that, streams wait in a queue for a slot. A session that gets a
// GOAWAY takes no new stream: the streams it carries finish, new ones go to another
// session. An idle session is PINGed every PING_MS; a PING unanswered by the next one
// closes the session (a peer that vanished without a FIN). A session with no stream for
// `idleTimeoutMs` is closed.
//
// Errors: a stream that never left (connect or TLS failure, a stream the peer refused
// with REFUSED_STREAM or past a GOAWAY's last stream id) is marked `notSent`, so the
// Exchange may send it elsewhere; any other failure carries a `reason` (reset, protocol,
// timeout) so outlier detection counts it against the endpoint.
//
// Bodies stream both ways with flow control: the request body is read one chunk at a
// time and the next is read only when the stream accepted the last (write() → 'drain');
// a response chunk the client cannot take pauses the stream until the handler resumes.

import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import type { Dispatcher } from 'undici';
import type { UpstreamTlsOptions } from './endpoint.js';
import { GatewayError, toGatewayError } from './errors.js';

const { NGHTTP2_REFUSED_STREAM, NGHTTP2_CANCEL, NGHTTP2_NO_ERROR } = http2.constants;

/** Keep-alive PING period of an upstream session. */
const PING_MS = 10_000;
/** Streams assumed free on a session whose peer has not sent its SETTINGS yet. */
const ASSUMED_STREAMS = 100;

// Connection-specific headers HTTP/2 forbids (RFC 9113 §8.2.2); `te` goes only as
// `te: trailers`.
const H2_FORBIDDEN = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host', 'http2-settings']);

export interface H2UpstreamOptions {
  /** http://host:port (h2c, prior knowledge) or https://host:port (h2 via ALPN). */
  origin: string;
  tls?: UpstreamTlsOptions;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  maxSessions: number;
}

interface Session {
  readonly s: ClientHttp2Session;
  streams: number;
  connected: boolean;
  /** The peer's SETTINGS arrived: its stream limit is known. */
  settled: boolean;
  /** No new stream: a GOAWAY came, or we are closing it. */
  retired: boolean;
  /** The last stream id of a GOAWAY the peer sent: streams above it were not processed. */
  goawayLast: number | undefined;
  pingOutstanding: boolean;
  connectTimer: NodeJS.Timeout | undefined;
  idleTimer: NodeJS.Timeout | undefined;
  pingTimer: NodeJS.Timeout | undefined;
}

export class H2Upstream {
  private readonly sessions: Session[] = [];
  private readonly queue: Call[] = [];
  private closing = false;
  private readonly scheme: 'http' | 'https';
  private closedWaiters: (() => void)[] = [];

  constructor(readonly opts: H2UpstreamOptions) {
    this.scheme = opts.origin.startsWith('https:') ? 'https' : 'http';
  }

  /** Open streams on all sessions (what `cutover --wait` and drain count). */
  get openStreams(): number {
    let n = 0;
    for (const s of this.sessions) n += s.streams;
    return n;
  }

  get sessionCount(): number {
    return this.sessions.length;
  }

  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const call = new Call(this, options, handler, this.scheme);
    call.begin();
    return true;
  }

  /** Places a call on a session with a free slot, opening one if allowed; else queues it. */
  place(call: Call): void {
    if (this.closing) {
      call.fail(new GatewayError('UPSTREAM_ERROR', 'upstream HTTP/2 sessions are closing', { reason: 'reset', notSent: true }));
      return;
    }
    const s = this.pick();
    if (s === undefined) {
      this.queue.push(call);
      return;
    }
    this.start(call, s);
  }

  private pick(): Session | undefined {
    let opening = false;
    for (const s of this.sessions) {
      if (s.retired || s.s.destroyed || s.s.closed) continue;
      // Until the peer's SETTINGS say how many streams it takes, calls wait for it
      // (a guess could put more on it than it allows, to wait inside nghttp2).
      if (!s.settled) {
        opening = true;
        continue;
      }
      const max = s.s.remoteSettings.maxConcurrentStreams ?? ASSUMED_STREAMS;
      if (s.streams < max) return s;
    }
    if (opening) return undefined;
    if (this.live() < this.opts.maxSessions) {
      this.open();
      return undefined;
    }
    return undefined;
  }

  private live(): number {
    let n = 0;
    for (const s of this.sessions) if (!s.retired) n++;
    return n;
  }

  private start(call: Call, sess: Session): void {
    let stream: ClientHttp2Stream;
    try {
      stream = sess.s.request(call.headers, { endStream: call.body === null });
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'ERR_HTTP2_INVALID_SESSION' && code !== 'ERR_HTTP2_GOAWAY_SESSION' && code !== 'ERR_HTTP2_OUT_OF_STREAMS') {
        // The request itself is what Node refuses (a header it cannot send): the
        // client's doing — no session retired, nothing blamed on the endpoint.
        call.fail(new GatewayError('BAD_REQUEST', `the request cannot be sent over HTTP/2: ${(err as Error).message}`, { cause: err }));
        return;
      }
      // GOAWAY received or session closed between pick and request: nothing was sent.
      sess.retired = true;
      if (call.attemptsOnSessions++ < 3) this.place(call);
      else call.fail(new GatewayError('UPSTREAM_ERROR', `upstream HTTP/2 session refused the stream: ${(err as Error).message}`, { cause: err, reason: 'reset', notSent: true }));
      return;
    }
    sess.streams++;
    if (sess.idleTimer !== undefined) {
      clearTimeout(sess.idleTimer);
      sess.idleTimer = undefined;
    }
    stream.once('close', () => {
      sess.streams--;
      if (sess.streams === 0 && !sess.retired) this.armIdle(sess);
      if (sess.streams === 0 && sess.retired && !sess.s.closed) sess.s.close();
      this.pump();
    });
    call.attach(stream, sess);
  }

  /** Starts queued calls while slots are free. */
  pump(): void {
    while (this.queue.length > 0) {
      const s = this.pick();
      if (s === undefined) return;
      const call = this.queue.shift() as Call;
      this.start(call, s);
    }
  }

  unqueue(call: Call): void {
    const i = this.queue.indexOf(call);
    if (i !== -1) this.queue.splice(i, 1);
  }

  private open(): Session {
    const o = this.opts;
    const t = o.tls;
    const s = http2.connect(o.origin, {
      ...(t === undefined
        ? {}
        : {
            ...(t.ca === undefined ? {} : { ca: t.ca }),
            // No servername (an IP endpoint with no name): no SNI, verified by IP.
            ...(t.servername === undefined ? {} : { servername: t.servername }),
            rejectUnauthorized: t.rejectUnauthorized,
            ALPNProtocols: ['h2'],
          }),
      settings: { enablePush: false },
      peerMaxConcurrentStreams: ASSUMED_STREAMS,
    });
    const sess: Session = { s, streams: 0, connected: false, settled: false, retired: false, goawayLast: undefined, pingOutstanding: false, connectTimer: undefined, idleTimer: undefined, pingTimer: undefined };
    this.sessions.push(sess);
    if (o.connectTimeoutMs > 0) {
      sess.connectTimer = setTimeout(() => {
        s.destroy(new GatewayError('UPSTREAM_TIMEOUT', 'upstream connect timed out', { reason: 'timeout', notSent: true }));
      }, o.connectTimeoutMs);
    }
    s.once('connect', () => {
      sess.connected = true;
      sess.pingTimer = setInterval(() => this.ping(sess), PING_MS);
      sess.pingTimer.unref();
      this.pump();
    });
    s.on('remoteSettings', () => {
      if (!sess.settled) {
        sess.settled = true;
        clearTimeout(sess.connectTimer);
      }
      this.pump();
    });
    s.on('goaway', (_code: number, lastStreamID: number) => {
      // In-flight streams (up to the GOAWAY's last stream id) finish here; new ones go
      // to another session.
      sess.retired = true;
      sess.goawayLast = Math.min(sess.goawayLast ?? lastStreamID, lastStreamID);
      this.pump();
    });
    // The error reaches each stream (as its own error or as its cause); calls waiting
    // for this session to come up get it below.
    let failure: unknown;
    s.on('error', (err) => {
      failure ??= err;
    });
    s.once('close', () => {
      clearTimeout(sess.connectTimer);
      clearTimeout(sess.idleTimer);
      clearInterval(sess.pingTimer);
      const i = this.sessions.indexOf(sess);
      if (i !== -1) this.sessions.splice(i, 1);
      // A session that never came up: the calls waiting for it never left. They fail
      // (unsent: the Exchange may try another endpoint) rather than dial again here.
      if (!sess.settled && !this.sessions.some((o) => !o.retired)) {
        const ge = connectFailure(failure);
        for (const c of this.queue.splice(0)) c.fail(ge);
      }
      if (this.sessions.length === 0 && this.closedWaiters.length > 0) {
        const w = this.closedWaiters;
        this.closedWaiters = [];
        for (const fn of w) fn();
      }
      this.pump();
    });
    // An idle session does not keep the process alive.
    return sess;
  }

  private armIdle(sess: Session): void {
    const ms = this.opts.idleTimeoutMs;
    if (ms <= 0) return;
    sess.idleTimer = setTimeout(() => {
      if (sess.streams === 0) {
        sess.retired = true;
        sess.s.close();
      }
    }, ms);
    sess.idleTimer.unref();
  }

  private ping(sess: Session): void {
    if (sess.s.destroyed) return;
    if (sess.pingOutstanding) {
      // The last PING went unanswered for a whole period: the peer is gone.
      sess.s.destroy(new GatewayError('UPSTREAM_TIMEOUT', 'upstream HTTP/2 session did not answer PING', { reason: 'timeout' }));
      return;
    }
    sess.pingOutstanding = true;
    try {
      sess.s.ping((err) => {
        if (err === null) sess.pingOutstanding = false;
      });
    } catch {
      // Too many outstanding pings or a closing session: the next period decides.
    }
  }

  /** GOAWAY on every session: streams in flight finish, no new one starts. Resolves
   * when all sessions have closed. */
  close(): Promise<void> {
    this.closing = true;
    for (const c of this.queue.splice(0)) c.fail(new GatewayError('UPSTREAM_ERROR', 'upstream HTTP/2 sessions are closing', { reason: 'reset', notSent: true }));
    for (const s of this.sessions) {
      s.retired = true;
      if (!s.s.closed) s.s.close();
    }
    if (this.sessions.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.closedWaiters.push(resolve));
  }

  /** GOAWAY to the sessions, keeping this upstream usable: new streams open new sessions
   * (what a cutover's connection drain does to sessions pinned to an old version). */
  goAway(): void {
    for (const s of this.sessions) {
      s.retired = true;
      if (s.streams === 0 && !s.s.closed) s.s.close();
    }
  }

  /** Cuts every session and stream at once. */
  destroy(): Promise<void> {
    this.closing = true;
    for (const c of this.queue.splice(0)) c.fail(new GatewayError('UPSTREAM_ERROR', 'upstream HTTP/2 sessions were closed', { reason: 'reset', notSent: true }));
    const p = this.sessions.length === 0 ? Promise.resolve() : new Promise<void>((resolve) => this.closedWaiters.push(resolve));
    for (const s of [...this.sessions]) s.s.destroy();
    return p;
  }
}

/** How a session that never came up failed, for the calls that waited for it. */
function connectFailure(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  if (err === undefined) return new GatewayError('UPSTREAM_ERROR', 'upstream HTTP/2 session closed before it was up', { reason: 'connect', notSent: true });
  const ge = toGatewayError(err, false);
  if (ge.reason !== undefined && ge.notSent) return ge;
  return new GatewayError('UPSTREAM_ERROR', `upstream HTTP/2 connect failed: ${(err as Error).message}`, { cause: err, reason: 'connect', notSent: true });
}

/** The HTTP/2 request headers for the flat HTTP/1.1-style list the Exchange builds. */
function h2Headers(method: string, path: string, scheme: string, flat: readonly string[]): OutgoingHttpHeaders {
  const h: OutgoingHttpHeaders = { ':method': method, ':path': path, ':scheme': scheme };
  for (let i = 0; i < flat.length; i += 2) {
    const lower = flat[i].toLowerCase();
    const value = flat[i + 1];
    if (lower === 'host') {
      h[':authority'] = value;
      continue;
    }
    if (H2_FORBIDDEN.has(lower)) continue;
    if (lower === 'te') {
      if (/\btrailers\b/i.test(value)) h.te = 'trailers';
      continue;
    }
    // A repeated field is folded into one (RFC 9110 §5.3; cookies with "; " as HTTP/2
    // wants): Node refuses arrays for its single-value headers (user-agent, content-type…),
    // and a client's duplicate must not look like a broken upstream session.
    const prev = h[lower];
    h[lower] = prev === undefined ? value : `${String(prev)}${lower === 'cookie' ? '; ' : ', '}${value}`;
  }
  return h;
}

/** Raw header pairs (as undici gives them) from an HTTP/2 header object, pseudo-headers dropped. */
function rawPairs(headers: IncomingHttpHeaders): Buffer[] {
  const out: Buffer[] = [];
  for (const name in headers) {
    if (name.charCodeAt(0) === 58 /* : */) continue;
    const v = headers[name];
    if (v === undefined) continue;
    const nb = Buffer.from(name, 'latin1');
    if (Array.isArray(v)) for (const x of v) out.push(nb, Buffer.from(x, 'latin1'));
    else out.push(nb, Buffer.from(String(v), 'latin1'));
  }
  return out;
}

/** Trailer pairs as undici hands them to onComplete (flat strings). */
function trailerPairs(headers: IncomingHttpHeaders): string[] {
  const out: string[] = [];
  for (const name in headers) {
    if (name.charCodeAt(0) === 58) continue;
    const v = headers[name];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) out.push(name, x);
    else out.push(name, String(v));
  }
  return out;
}

/** One request on one stream. */
class Call {
  readonly headers: OutgoingHttpHeaders;
  readonly body: AsyncIterable<Buffer> | null;
  private stream: ClientHttp2Stream | undefined;
  private session: Session | undefined;
  private done = false;
  private responded = false;
  private err: unknown;
  private trailers: string[] | null = null;
  private headersTimer: NodeJS.Timeout | undefined;
  private bodyTimer: NodeJS.Timeout | undefined;
  private paused = false;
  attemptsOnSessions = 0;

  constructor(
    private readonly up: H2Upstream,
    private readonly o: Dispatcher.DispatchOptions,
    private readonly handler: Dispatcher.DispatchHandler,
    scheme: string,
  ) {
    this.headers = h2Headers(o.method, o.path, scheme, (o.headers ?? []) as string[]);
    this.body = (o.body ?? null) as AsyncIterable<Buffer> | null;
  }

  begin(): void {
    this.handler.onConnect?.((err?: Error) => this.abort(err));
    if (this.done) return;
    this.up.place(this);
  }

  attach(stream: ClientHttp2Stream, sess: Session): void {
    this.stream = stream;
    this.session = sess;
    if (this.done) {
      stream.close(NGHTTP2_CANCEL);
      return;
    }
    const ht = this.o.headersTimeout ?? 0;
    if (ht > 0) this.headersTimer = setTimeout(() => this.timedOut('upstream did not answer in time'), ht);
    stream.on('response', (headers) => this.onResponse(headers));
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('trailers', (headers) => {
      this.trailers = trailerPairs(headers);
    });
    stream.on('end', () => this.onEnd());
    stream.on('error', (err) => {
      this.err ??= err;
    });
    stream.on('close', () => this.onClose());
    // The body is read only once the stream is open on a connected session: a stream
    // that fails before (connect refused, session gone) has read nothing of it, and the
    // Exchange may still send it to another endpoint.
    // (On a connected session the stream is open, with its id, as request() returns.)
    if (this.body !== null) {
      if (stream.id !== undefined) void this.pumpBody(stream);
      else stream.once('ready', () => void this.pumpBody(stream));
    }
  }

  private async pumpBody(stream: ClientHttp2Stream): Promise<void> {
    try {
      // By hand, not for-await: leaving a for-await early would destroy the client's
      // request (and its connection) through the iterator's return().
      const body = this.body as unknown;
      if (typeof body === 'string' || Buffer.isBuffer(body)) {
        stream.end(body);
        return;
      }
      const it = ((body as AsyncIterable<Buffer>)[Symbol.asyncIterator]?.() ?? (body as Iterable<Buffer>)[Symbol.iterator]()) as AsyncIterator<Buffer> | Iterator<Buffer>;
      for (;;) {
        const r = await it.next();
        if (r.done === true) break;
        if (this.done || stream.destroyed) return;
        if (!stream.write(r.value)) await writable(stream);
      }
      if (!this.done && !stream.destroyed && !stream.writableEnded) stream.end();
    } catch (err) {
      // The client's body failed (too large, reset, gone): the upstream request is
      // cut, and the error says why (no reason: not the endpoint's fault).
      this.abort(err as Error);
    }
  }

  private onResponse(headers: IncomingHttpHeaders): void {
    clearTimeout(this.headersTimer);
    this.headersTimer = undefined;
    this.responded = true;
    const status = Number(headers[':status']);
    this.handler.onResponseStarted?.();
    const ok = this.handler.onHeaders?.(status, rawPairs(headers), () => this.resume(), '');
    if (this.done) return;
    if (ok === false) this.pause();
    else this.armBodyTimer();
  }

  private onData(chunk: Buffer): void {
    if (this.done) return;
    const ok = this.handler.onData?.(chunk);
    if (ok === false) this.pause();
    else this.armBodyTimer();
  }

  private pause(): void {
    this.paused = true;
    clearTimeout(this.bodyTimer);
    this.bodyTimer = undefined;
    this.stream?.pause();
  }

  private resume(): void {
    if (!this.paused || this.done) return;
    this.paused = false;
    this.armBodyTimer();
    this.stream?.resume();
  }

  /** undici's bodyTimeout: the longest gap between two response chunks (not while paused by us). */
  private armBodyTimer(): void {
    const bt = this.o.bodyTimeout ?? 0;
    if (bt <= 0) return;
    if (this.bodyTimer !== undefined) this.bodyTimer.refresh();
    else this.bodyTimer = setTimeout(() => this.timedOut('upstream did not answer in time'), bt);
  }

  private onEnd(): void {
    if (this.done) return;
    this.done = true;
    this.clearTimers();
    const s = this.stream as ClientHttp2Stream;
    // The answer is complete; a request body still being sent is not needed any more.
    if (!s.writableEnded) s.close(NGHTTP2_NO_ERROR);
    this.handler.onComplete?.(this.trailers);
  }

  private onClose(): void {
    if (this.done) return;
    const s = this.stream as ClientHttp2Stream;
    this.fail(this.failure(s.rstCode ?? 0));
  }

  /** How an upstream stream that closed without completing failed. */
  private failure(rstCode: number): GatewayError {
    const err = this.err as (Error & { code?: string; cause?: unknown }) | undefined;
    if (err instanceof GatewayError) return err;
    if (err?.cause instanceof GatewayError) return err.cause;
    // The peer did not process the stream (RFC 9113 §8.7) — safe to send elsewhere — only
    // when it reset this stream with REFUSED_STREAM, or the stream is above the last
    // stream id of a GOAWAY. A GOAWAY whose error code happens to be REFUSED_STREAM
    // gives that code to every stream of the session it ends, processed ones too.
    const id = this.stream?.id;
    const last = this.session?.goawayLast;
    const pastGoaway = id !== undefined && last !== undefined && id > last;
    const ownRefusal = rstCode === NGHTTP2_REFUSED_STREAM && err?.code !== 'ERR_HTTP2_SESSION_ERROR';
    if ((ownRefusal || pastGoaway) && !this.responded) {
      return new GatewayError('UPSTREAM_ERROR', ownRefusal ? 'upstream refused the stream (REFUSED_STREAM)' : `upstream's GOAWAY came before the stream (last stream id ${String(last)})`, { cause: err, reason: 'reset', notSent: true });
    }
    if (err !== undefined) {
      const ge = toGatewayError(err.cause ?? err, this.responded);
      // Before the session was up nothing was sent (connect refused, TLS, timeout).
      if (this.session?.connected === false) {
        if (ge.reason !== undefined && ge.notSent) return ge;
        return new GatewayError('UPSTREAM_ERROR', `upstream HTTP/2 connect failed: ${err.message}`, { cause: err, reason: 'connect', notSent: true });
      }
      // On a live session the stream may have been processed: never marked unsent
      // (a socket reset here is no keep-alive race, unlike HTTP/1.1's).
      const code = err.code ?? '';
      const protocol = ge.reason === 'protocol' || code === 'ERR_HTTP2_SESSION_ERROR' || code === 'ERR_HTTP2_INVALID_HEADER_VALUE' || code === 'ERR_HTTP2_ERROR';
      return new GatewayError(ge.code === 'UPSTREAM_TIMEOUT' ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_ERROR', ge.reason !== undefined ? ge.message : `upstream HTTP/2 failed (${code || 'error'}): ${err.message}`, {
        cause: err,
        reason: protocol ? 'protocol' : (ge.reason ?? 'reset'),
      });
    }
    return new GatewayError('UPSTREAM_ERROR', `upstream reset the stream (code ${rstCode})`, { reason: 'reset' });
  }

  private timedOut(message: string): void {
    if (this.done) return;
    this.abort(new GatewayError('UPSTREAM_TIMEOUT', message, { reason: 'timeout' }));
  }

  private abort(err?: Error): void {
    if (this.done) return;
    const s = this.stream;
    this.fail(err === undefined ? new GatewayError('CLIENT_CLOSED', 'request aborted') : err instanceof GatewayError ? err : toGatewayError(err, this.responded));
    if (s !== undefined && !s.destroyed) s.close(NGHTTP2_CANCEL);
  }

  fail(err: GatewayError): void {
    if (this.done) return;
    this.done = true;
    this.clearTimers();
    if (this.stream === undefined) this.up.unqueue(this);
    this.handler.onError?.(err);
  }

  private clearTimers(): void {
    clearTimeout(this.headersTimer);
    clearTimeout(this.bodyTimer);
  }
}

/** Resolves when a stream that refused a write can take more (or is gone). */
function writable(stream: ClientHttp2Stream): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}

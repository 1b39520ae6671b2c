// Forwarding one request to one endpoint through its pool (gateway/h1/pool.ts for
// HTTP/1.1, gateway/h2upstream.ts for HTTP/2).
//
// An Exchange is the dispatch handler for one client request. It implements undici's
// core handler interface (onConnect/onHeaders/onData/onComplete/onError), which both
// upstream pools (gateway/h1/pool.ts, gateway/h2upstream.ts) call natively: no adapter
// object, no header parsing into an object. Bodies stream both ways with backpressure:
//  - request: the pool reads the body chunk by chunk (CheckedBody) and stops reading
//    while its socket is full; the client's connection stops reading when the chunks it
//    has wait unread;
//  - response: onData returns false when the client socket is full, which pauses the
//    upstream reader until the client drains and we call the pool's resume.

import type { ClientRequest, ClientResponse } from './io.js';
import type { Dispatcher } from 'undici';
import { kCloseAfterResponse, type MarkedSocket } from './conndrain.js';
import type { Endpoint } from './endpoint.js';
import { GatewayError, toGatewayError, type UpstreamFailure } from './errors.js';
import { clientResponseHeaders, upstreamRequestHeaders, withHostHeader } from './headers.js';
import type { MirrorCopy } from './mirror.js';
import { pickEndpoint } from './select.js';
import { encodeGrpcMessage, grpcStatusOf, isGrpc, isGrpcStatusHeader, parseGrpcStatus } from './grpc.js';
import type { ServiceSnapshot, VersionSnapshot } from './snapshot.js';

const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'TRACE']);

/** What the exchange needs from the server around it. */
export interface ExchangeHost {
  /** Answers a gateway error (JSON body) unless the response has started. */
  sendError(req: ClientRequest, res: ClientResponse, err: GatewayError, requestId: string): void;
  /** Called once per attempt on an endpoint: its status, or how it failed. */
  upstreamResult(endpoint: Endpoint, status: number, failure: UpstreamFailure | undefined): void;
  /** Called exactly once per exchange when it ends, however it ends. */
  exchangeDone(x: Exchange, status: number): void;
  readonly proto: string;
  /** Set while the gateway shuts down: responses ask the client to close. */
  readonly closing: boolean;
  /** gateway.timeouts.send: longest a response may make no write progress (0 = never). */
  readonly sendTimeoutMs: number;
  /** gateway.timeouts.request: an HTTP/2 request must have arrived whole within this
   * (the HTTP/1.1 engine enforces the same for HTTP/1.1 itself; 0 = never). */
  readonly requestTimeoutMs: number;
}

const kExchange = Symbol('switchyard.exchange');
type WithExchange = ClientResponse & { [kExchange]?: Exchange };

function onClientClose(this: WithExchange): void {
  this[kExchange]?.clientClosed();
}

function onClientDrain(this: WithExchange): void {
  this[kExchange]?.clientDrained();
}

function onSendTimeout(x: Exchange): void {
  x.sendTimedOut();
}

function onRequestTimeout(x: Exchange): void {
  x.requestTimedOut();
}

type H2Request = ClientRequest & { stream: { endAfterHeaders: boolean; rstCode?: number; close(code?: number): void }; aborted: boolean };
type WithExchangeReq = ClientRequest & { [kExchange]?: Exchange };

function onRequestEnd(this: WithExchangeReq): void {
  this[kExchange]?.requestEnded();
}

/** Whether a request body that ended was received whole. A reset HTTP/2 stream (the
 * client's RST_STREAM, or nghttp2's own when DATA disagrees with content-length) ends
 * its body stream as if it were complete: only `aborted` tells them apart. */
function bodyComplete(req: ClientRequest): boolean {
  if (req.httpVersionMajor === 2) return !(req as H2Request).aborted && ((req as H2Request).stream.rstCode ?? 0) === 0;
  return req.complete;
}

export class Exchange implements Dispatcher.DispatchHandler {
  readonly start = performance.now();
  endpoint: Endpoint;
  attempts = 0;
  private abortFn: ((err?: Error) => void) | null = null;
  private resumeFn: (() => void) | null = null;
  private responseStarted = false;
  private done = false;
  private clientGone = false;
  /** The gateway failed the request itself (a refusal, the client's fault, an error of
   * ours): not counted against the endpoint or the version. */
  gatewayFault = false;
  /** The status an exchange cut on the client's side ends with (access log, metrics). */
  private cutStatus = 499;
  private sendTimer: NodeJS.Timeout | undefined;
  private requestTimer: NodeJS.Timeout | undefined;
  readonly hasBody: boolean;
  readonly headers: string[];
  /** A gRPC call (content-type application/grpc*). */
  readonly grpc: boolean;
  /** The call's grpc-status (from the trailers, a trailers-only answer, or the
   * gateway's own error); -1 when none was seen. */
  grpcStatus = -1;
  /** The upstream answered as a gRPC server (content-type application/grpc*, or a
   * grpc-status): only then is a missing grpc-status read from the HTTP status. A
   * client's content-type alone never turns a plain answer into a gRPC error. */
  grpcAnswer = false;
  /** grpc-status and friends of a trailers-only answer, sent as trailers instead (an
   * HTTP/2 response with headers can end only with trailers or an empty DATA frame). */
  private heldTrailers: Record<string, string> | undefined;
  /** The copy of this request for the service's mirror (gateway/mirror.ts), if any: fed
   * the request body as the pool reads it and the response as it streams to the client. */
  mirror: MirrorCopy | undefined;

  constructor(
    readonly host: ExchangeHost,
    readonly req: ClientRequest,
    readonly res: ClientResponse,
    readonly service: ServiceSnapshot,
    /** The version serving the request (changes only by a failover, see retryTarget). */
    public version: VersionSnapshot,
    endpoint: Endpoint,
    readonly requestId: string,
    /** A Set-Cookie value to add to the response (a newly issued sticky key). */
    readonly setCookie: string | undefined,
    /** The override header named the version: never fail over to another one. */
    readonly pinned = false,
  ) {
    this.endpoint = endpoint;
    const h = req.headers;
    this.hasBody =
      (h['content-length'] !== undefined && h['content-length'] !== '0') ||
      h['transfer-encoding'] !== undefined ||
      // HTTP/2 has no Transfer-Encoding: a stream that did not end with its headers has a body.
      (req.httpVersionMajor === 2 && !(req as unknown as { stream: { endAfterHeaders: boolean } }).stream.endAfterHeaders);
    this.headers = upstreamRequestHeaders(req, requestId, host.proto);
    // Only a service spoken to over HTTP/2 carries gRPC (an HTTP/1.1 upstream cannot).
    this.grpc = service.config.protocol !== 'http1' && isGrpc(req);
    // `te: trailers` is hop-by-hop, but gRPC servers require it: kept for HTTP/2 upstreams.
    if (service.config.protocol !== 'http1' && typeof h.te === 'string' && /\btrailers\b/i.test(h.te)) this.headers.push('te', 'trailers');
    (res as WithExchange)[kExchange] = this;
    // `on`, not `once`: a response object serves one request, and once() would wrap the
    // listener in a new closure per request.
    res.on('close', onClientClose);
    // HTTP/2: no server-wide request timer covers a stream; the request must have
    // arrived whole within gateway.timeouts.request, as over HTTP/1.1.
    if (req.httpVersionMajor === 2 && this.hasBody && host.requestTimeoutMs > 0) {
      (req as WithExchangeReq)[kExchange] = this;
      this.requestTimer = setTimeout(onRequestTimeout, host.requestTimeoutMs, this);
      req.on('end', onRequestEnd);
    }
  }

  dispatch(): void {
    this.attempts++;
    this.attemptEnded = false;
    this.attemptStart = this.attempts === 1 ? this.start : performance.now();
    this.endpoint.begin();
    const timeout = this.service.config.timeouts.requestMs;
    this.endpoint.dispatcher.dispatch(
      {
        path: this.req.url as string,
        method: this.req.method as string,
        // A version with a hostHeader (an external HTTPS endpoint) gets its own Host;
        // per attempt, since a failover can change the version.
        headers: this.version.hostHeader === undefined ? this.headers : withHostHeader(this.headers, this.version.hostHeader),
        // A streamed body under a limit goes through CheckedBody, which refuses the chunk
        // that would pass it before writing it: the upstream never gets a whole body
        // over the limit.
        // (the pools take any async iterable as a body; undici's typings name only Readable.)
        // An HTTP/2 body always goes through it too: a reset stream ends like a complete
        // one, and CheckedBody fails the upload instead of finishing it.
        body: this.hasBody ? (this.body() as unknown as Dispatcher.DispatchOptions['body']) : null,
        headersTimeout: timeout,
        bodyTimeout: timeout,
        // We retry ourselves, on another endpoint, only when that is safe.
        idempotent: false,
        blocking: true,
      },
      this,
    );
  }

  /** A gRPC call's request body, read once from the client and kept (up to REPLAY_MAX
   * bytes) so that a call refused before it was processed can be sent again. */
  private replay: ReplayBody | undefined;

  private body(): AsyncIterableIterator<Buffer> {
    // Each attempt of a gRPC call over HTTP/2 reads the one body through a view of its
    // own: what was read already, then on from the client.
    if (this.grpc && this.endpoint.protocol !== 'http1') {
      this.replay ??= new ReplayBody(new CheckedBody(this.req, this.bodyLimit, this.mirror));
      return this.replay.view();
    }
    // Every other body goes through CheckedBody: it reads the request chunk by chunk,
    // holds the limit of a streamed upload, tees a mirrored one, and fails the upload of
    // a body that ended without being received whole.
    return new CheckedBody(this.req, this.bodyLimit, this.mirror);
  }

  // ---- dispatch handler (undici's handler interface) ----

  onConnect(abort: (err?: Error) => void): void {
    this.abortFn = abort;
    if (this.clientGone) abort(new GatewayError('CLIENT_CLOSED', 'client closed the connection'));
  }

  onResponseStarted(): void {
    this.responseStarted = true;
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    // 1xx informational responses (103 Early Hints…) are not forwarded.
    if (statusCode < 200) return true;
    this.resumeFn = resume;
    const res = this.res;
    let headers = clientResponseHeaders(rawHeaders, this.requestId, this.setCookie);
    // (HTTP/2 has no Connection header; its sessions get a GOAWAY at shutdown.)
    // (The same after a connection drain chose this connection: its last response. The
    // request may have let go of its socket by now — a body read to the end — the
    // response has not.)
    if (this.req.httpVersionMajor !== 2 && (this.host.closing || ((this.res.socket ?? this.req.socket) as MarkedSocket | null)?.[kCloseAfterResponse] === true)) headers = withConnectionClose(headers);
    if (this.grpc) {
      for (let i = 0; i < headers.length && !this.grpcAnswer; i += 2) {
        const lower = headers[i].toLowerCase();
        this.grpcAnswer = lower === 'grpc-status' || (lower === 'content-type' && headers[i + 1].startsWith('application/grpc'));
      }
      if (this.req.httpVersionMajor === 2) headers = this.holdGrpcStatus(headers);
    }
    try {
      res.writeHead(statusCode, headers);
    } catch (err) {
      // Node refuses header values it could not send (invalid characters): the
      // upstream sent what HTTP does not allow.
      this.abortFn?.(new GatewayError('UPSTREAM_ERROR', `upstream sent an invalid response header: ${(err as Error).message}`, { cause: err, reason: 'protocol' }));
      return false;
    }
    this.statusCode = statusCode;
    this.mirror?.servedResponse(statusCode, rawHeaders);
    return true;
  }

  statusCode = 0;
  private attemptStart = 0;

  /**
   * The body limit of a streamed upload (chunked, or HTTP/2 without a length;
   * Content-Length bodies are refused up front): enforced by CheckedBody as the pool reads
   * the body, so no listener of ours puts the request in flowing mode.
   */
  bodyLimit = Infinity;

  onData(chunk: Buffer): boolean {
    const ok = this.res.write(chunk);
    // After the client's write: the copy never delays it.
    if (this.mirror !== undefined) this.mirror.servedData(chunk);
    if (!ok) {
      this.res.once('drain', onClientDrain);
      // The pool is paused (its body timer too) until the client drains: our own timer
      // bounds how long a client that does not read holds the upstream request.
      const ms = this.host.sendTimeoutMs;
      if (ms > 0 && this.sendTimer === undefined) this.sendTimer = setTimeout(onSendTimeout, ms, this);
    }
    return ok;
  }

  onComplete(trailers?: (string | Buffer)[] | null): void {
    // Trailers reach an HTTP/2 client (gRPC's grpc-status); an HTTP/1.1 response here
    // is not chunked by us, and its trailers are dropped as before.
    if (this.req.httpVersionMajor === 2 && ((trailers != null && trailers.length > 0) || this.heldTrailers !== undefined)) {
      const t: Record<string, string> = this.heldTrailers ?? {};
      if (trailers != null) for (let i = 0; i < trailers.length; i += 2) t[String(trailers[i]).toLowerCase()] = String(trailers[i + 1]);
      if (this.grpc && t['grpc-status'] !== undefined) this.grpcStatus = parseGrpcStatus(t['grpc-status']);
      try {
        this.res.addTrailers(t);
      } catch {
        // A trailer Node refuses to send (invalid characters): the rest still ends.
      }
    } else if (this.grpc && trailers != null) {
      for (let i = 0; i < trailers.length; i += 2) if (String(trailers[i]).toLowerCase() === 'grpc-status') this.grpcStatus = parseGrpcStatus(String(trailers[i + 1]));
    }
    this.res.end();
    this.mirror?.servedComplete(trailers);
    // UNAVAILABLE is gRPC's 503: it counts toward the endpoint's consecutive 5xx.
    this.endAttempt(this.grpcStatus === 14 ? 503 : this.statusCode, undefined);
    this.finish(this.statusCode);
  }

  /** Takes grpc-status, grpc-message and grpc-status-details-bin out of response
   * headers (a trailers-only answer) to send them as trailers. */
  private holdGrpcStatus(headers: string[]): string[] {
    let found = false;
    for (let i = 0; i < headers.length && !found; i += 2) found = isGrpcStatusHeader(headers[i].toLowerCase());
    if (!found) return headers;
    const out: string[] = [];
    const held: Record<string, string> = (this.heldTrailers = {});
    for (let i = 0; i < headers.length; i += 2) {
      const lower = headers[i].toLowerCase();
      if (!isGrpcStatusHeader(lower)) out.push(headers[i], headers[i + 1]);
      else {
        held[lower] = headers[i + 1];
        if (lower === 'grpc-status') this.grpcStatus = parseGrpcStatus(headers[i + 1]);
      }
    }
    return out;
  }

  onError(err: Error): void {
    if (this.clientGone) {
      // We aborted because the client left (or stopped reading, or was too slow to
      // send): nothing to answer, not the endpoint's fault.
      this.endAttempt(499, undefined);
      this.gatewayFault = true;
      this.finish(this.cutStatus);
      return;
    }
    const ge = toGatewayError(err, this.responseStarted);
    // Only an upstream failure has a reason; anything else was the gateway's or the
    // client's doing and must not count against the endpoint or the version.
    if (ge.reason === undefined) this.gatewayFault = true;
    this.endAttempt(ge.statusCode, ge.reason);
    if (this.res.headersSent && this.grpc && this.req.httpVersionMajor === 2 && !this.res.writableEnded) {
      // A gRPC response that started: its end is told in the trailers (gRPC frames its
      // messages, so a cut message cannot pass for a whole one), as UNAVAILABLE or
      // DEADLINE_EXCEEDED rather than a bare RST_STREAM the client reads as INTERNAL.
      this.grpcStatus = grpcStatusOf(ge);
      this.finish(this.statusCode);
      try {
        this.res.addTrailers({ 'grpc-status': String(this.grpcStatus), 'grpc-message': encodeGrpcMessage(`${ge.code}: ${ge.message}`) });
        this.res.end();
      } catch {
        this.res.destroy(ge);
      }
      return;
    }
    if (this.res.headersSent) {
      // The response has started: the only honest signal left is to cut it short, so
      // the client sees a truncated body rather than a complete-looking one.
      this.finish(this.statusCode);
      this.res.destroy(ge);
      return;
    }
    if (this.canResend(ge)) {
      const next = this.retryTarget();
      if (next !== undefined) {
        this.endpoint = next;
        this.responseStarted = false;
        this.abortFn = null;
        this.dispatch();
        return;
      }
    }
    if (this.grpc) this.grpcStatus = grpcStatusOf(ge);
    this.host.sendError(this.req, this.res, ge, this.requestId);
    this.finish(ge.statusCode);
  }

  // ---- client side ----

  /** The client's response closed. Before the exchange is done that means the client
   * went away (a reset HTTP/2 stream marks its response finished too, so only `done`
   * tells): abort the upstream request. */
  clientClosed(): void {
    if (this.done) return;
    this.cutClient('client closed the connection');
  }

  clientDrained(): void {
    if (this.sendTimer !== undefined) {
      clearTimeout(this.sendTimer);
      this.sendTimer = undefined;
    }
    const r = this.resumeFn;
    if (r !== null) r();
  }

  /** gateway.timeouts.send passed with the client not reading: cut both sides. */
  sendTimedOut(): void {
    this.sendTimer = undefined;
    if (this.done) return;
    this.cutClient(`the client read nothing for ${this.host.sendTimeoutMs} ms (gateway.timeouts.send)`);
    this.res.destroy();
  }

  /** The HTTP/2 request body ended: its deadline no longer applies. */
  requestEnded(): void {
    if (this.requestTimer !== undefined) {
      clearTimeout(this.requestTimer);
      this.requestTimer = undefined;
    }
  }

  /** An HTTP/2 request still not received whole after gateway.timeouts.request: 408
   * when nothing was answered yet, and the stream is closed either way. */
  requestTimedOut(): void {
    this.requestTimer = undefined;
    if (this.done) return;
    const ge = new GatewayError('REQUEST_TIMEOUT', 'the request was not received in time');
    this.clientGone = true;
    this.cutStatus = 408;
    this.gatewayFault = true;
    this.abortFn?.(ge);
    if (!this.res.headersSent) {
      this.host.sendError(this.req, this.res, ge, this.requestId);
      // The rest of the upload is refused (RST_STREAM NO_ERROR after the answer, RFC 9113 §8.1).
      this.res.once('finish', () => (this.req as H2Request).stream.close(0));
    } else this.res.destroy();
    // Ends the exchange now if the pool had not connected yet (onError would not come).
    if (this.abortFn === null) {
      this.endAttempt(499, undefined);
      this.finish(this.cutStatus);
    }
  }

  private cutClient(message: string): void {
    this.clientGone = true;
    // abortFn is null until the pool has connected; onConnect checks clientGone then.
    this.abortFn?.(new GatewayError('CLIENT_CLOSED', message));
  }

  // ---- retry ----

  private failedOver = false;

  /**
   * Whether the request may be sent again at all: it never reached a backend, no byte of
   * its body was read, and a body goes only with an idempotent method. A reset before any
   * response byte may come from a backend that ran the request and then died: only an
   * idempotent request is sent again after one (a refused or timed-out connect never
   * reached anything). How many more times, and where, is retryTarget's business.
   */
  private canResend(ge: GatewayError): boolean {
    if (!ge.notSent) return false;
    const idempotent = IDEMPOTENT.has(this.req.method as string);
    // A gRPC call (a POST with a body) that never left — its body unread, its stream
    // refused or its connection never up — is sent again: over HTTP/2 "not sent" is
    // certain (REFUSED_STREAM, GOAWAY's last stream id), not the HTTP/1.1 keep-alive guess.
    if (this.grpc && this.endpoint.protocol !== 'http1') return !this.hasBody || this.replay === undefined || this.replay.replayable;
    if (this.hasBody && (this.req.readableDidRead || !idempotent)) return false;
    return ge.reason !== 'reset' || idempotent;
  }

  /**
   * Where a request that never reached a backend goes next: another available endpoint
   * of its version while retries remain; else — its whole version failing before
   * detection has caught up — one attempt on an available endpoint of another version
   * (weighted), unless the override header pinned the version. Nothing was processed
   * by the first version, so no request is run twice.
   */
  private retryTarget(): Endpoint | undefined {
    const v = this.version;
    // retries.attempts: 0 turns both the retries and the failover off.
    const n = this.service.config.retries.attempts;
    if (n === 0) return undefined;
    if (this.attempts <= n && !this.failedOver) {
      for (let i = 0; i < 3 && v.endpoints.length > 1; i++) {
        const e = pickEndpoint(v);
        if (e !== undefined && e !== this.endpoint && e.available) return e;
      }
      const e = v.endpoints.find((x) => x !== this.endpoint && x.available);
      if (e !== undefined) return e;
    }
    if (this.failedOver || this.pinned) return undefined;
    const others = this.service.versions.filter((o) => o !== v && o.weight > 0 && o.endpoints.some((x) => x.available));
    const total = others.reduce((n, o) => n + o.weight, 0);
    let r = Math.random() * total;
    for (const o of others) {
      r -= o.weight;
      if (r > 0) continue;
      const e = pickEndpoint(o) ?? o.endpoints.find((x) => x.available);
      if (e === undefined || !e.available) return undefined;
      this.failedOver = true;
      this.version = o;
      return e;
    }
    return undefined;
  }

  private attemptEnded = false;

  private endAttempt(status: number, failure: UpstreamFailure | undefined): void {
    if (this.attemptEnded) return;
    this.attemptEnded = true;
    this.endpoint.end();
    this.version.stats.metrics?.upstream((performance.now() - this.attemptStart) / 1000, failure);
    // A failure of the gateway's or the client's making (no reason, status ≥ 400 from
    // the gateway itself) says nothing about the endpoint.
    if (failure !== undefined || (status !== 499 && !this.gatewayFault)) this.host.upstreamResult(this.endpoint, status, failure);
  }

  private finish(status: number): void {
    if (this.done) return;
    this.done = true;
    // (after a complete answer this does nothing: the copy is being compared)
    this.mirror?.servedFailed();
    if (this.sendTimer !== undefined) clearTimeout(this.sendTimer);
    if (this.requestTimer !== undefined) clearTimeout(this.requestTimer);
    this.host.exchangeDone(this, status);
  }
}

/**
 * A request body read chunk by chunk (read(), never flowing) and refused — by throwing
 * BODY_TOO_LARGE, which fails the upstream request — at the chunk that would take it
 * past `limit`, before that chunk is written. Stopping early leaves the request as it
 * is (a for-await over it would destroy it, and the socket with it, before the 413 is
 * sent). A body that ends without having been received whole (a reset HTTP/2 stream)
 * throws instead of ending: the upstream request is aborted, never completed.
 */
class CheckedBody implements AsyncIterableIterator<Buffer> {
  private bytes = 0;

  /** The request's content-length (-1 without one). */
  private readonly declared: number;

  constructor(
    private readonly req: ClientRequest,
    private readonly limit: number,
    /** A mirror copy that gets each chunk read, and the end. */
    private readonly tee?: MirrorCopy,
  ) {
    const cl = req.headers['content-length'];
    this.declared = cl === undefined ? -1 : Number(cl);
  }

  /** Waits for the end of the body (throws unless it was received whole). */
  private async streamEnd(): Promise<void> {
    const req = this.req;
    while (!req.readableEnded && !req.destroyed) {
      // Nothing more may come (a byte more would break the length: nghttp2 resets), so
      // reading on only consumes END_STREAM.
      if (req.read() !== null) throw new GatewayError('CLIENT_CLOSED', 'request body longer than its content-length');
      await stirred(req);
    }
    if (!req.readableEnded || !bodyComplete(req)) throw new GatewayError('CLIENT_CLOSED', 'the client reset the request before its body was complete');
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<Buffer>> {
    const req = this.req;
    for (;;) {
      const chunk = req.read() as Buffer | null;
      if (chunk !== null) {
        this.bytes += chunk.length;
        if (this.bytes > this.limit) throw new GatewayError('BODY_TOO_LARGE', `request body exceeds ${this.limit} bytes`);
        // HTTP/2 with a content-length: the chunk that completes the length completes
        // the upstream's HTTP/1.1 message, so it waits for END_STREAM; a stream reset
        // after its last byte but before END_STREAM is no request.
        if (this.bytes === this.declared && req.httpVersionMajor === 2) await this.streamEnd();
        this.tee?.requestChunk(chunk);
        return { value: chunk, done: false };
      }
      if (req.readableEnded) {
        if (!bodyComplete(req)) throw new GatewayError('CLIENT_CLOSED', 'the client reset the request before its body was complete');
        this.tee?.requestEnded();
        return { value: undefined, done: true };
      }
      if (req.destroyed) throw new GatewayError('CLIENT_CLOSED', 'client closed the connection');
      await stirred(req);
    }
  }

  async return(): Promise<IteratorResult<Buffer>> {
    return { value: undefined, done: true };
  }
}

/** Most of a gRPC request body kept for sending it again (a unary call's message). */
const REPLAY_MAX = 64 * 1024;

/**
 * A request body read once from the client and given to each attempt through a view of
 * its own: the chunks read so far, then on from the client. Chunks are kept while the
 * body fits in REPLAY_MAX; past that only the newest view reads, and what it has read is
 * dropped. A read in progress belongs to the body, not to the view that asked: a chunk an
 * abandoned attempt was waiting for goes to the next attempt, never with the abandoned
 * one. Only the newest view reads at all; an older one ends at once.
 */
class ReplayBody {
  private readonly chunks: Buffer[] = [];
  /** Index in the whole body of chunks[0] (earlier ones were dropped). */
  private first = 0;
  private bytes = 0;
  private ended = false;
  private failed = false;
  private failure: unknown;
  private pulling: Promise<void> | null = null;
  private views = 0;

  constructor(private readonly inner: CheckedBody) {}

  /** Whether everything read so far is still kept: a new attempt gets the whole body. */
  get replayable(): boolean {
    return this.first === 0 && this.bytes <= REPLAY_MAX;
  }

  view(): AsyncIterableIterator<Buffer> {
    const id = ++this.views;
    let i = this.first;
    const next = async (): Promise<IteratorResult<Buffer>> => {
      for (;;) {
        if (id !== this.views) return { value: undefined, done: true };
        if (i < this.first + this.chunks.length) {
          const chunk = this.chunks[i - this.first];
          i++;
          if (this.bytes > REPLAY_MAX) {
            this.chunks.splice(0, i - this.first);
            this.first = i;
          }
          return { value: chunk, done: false };
        }
        if (this.failed) throw this.failure;
        if (this.ended) return { value: undefined, done: true };
        await this.pull();
      }
    };
    const it: AsyncIterableIterator<Buffer> = {
      next,
      [Symbol.asyncIterator]: () => it,
      return: async () => ({ value: undefined, done: true }),
    };
    return it;
  }

  private pull(): Promise<void> {
    this.pulling ??= this.inner.next().then(
      (r) => {
        this.pulling = null;
        if (r.done === true) this.ended = true;
        else {
          this.chunks.push(r.value);
          this.bytes += r.value.length;
        }
      },
      (err: unknown) => {
        this.pulling = null;
        this.failed = true;
        this.failure = err;
      },
    );
    return this.pulling;
  }
}

/** Resolves when the request body has more to read, ends, or closes. */
function stirred(req: ClientRequest): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = (): void => {
      req.off('readable', done);
      req.off('end', done);
      req.off('close', done);
      resolve();
    };
    req.on('readable', done);
    req.on('end', done);
    req.on('close', done);
  });
}

function withConnectionClose(headers: string[]): string[] {
  headers.push('connection', 'close');
  return headers;
}

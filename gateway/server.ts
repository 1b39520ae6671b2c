// The data-plane listener: matches a request to a service, places it on a version and
// an endpoint, and hands it to an Exchange. Also answers the gateway's own errors,
// proxies WebSocket upgrades, and runs the shutdown sequence.

import { randomUUID } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import http2, { type Http2SecureServer, type Http2Server, type Http2ServerRequest, type Http2ServerResponse, type Http2Session } from 'node:http2';
import type { Duplex } from 'node:stream';
import net, { type Socket, type AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Config } from '../config/types.js';
import { splitHostPort } from '../config/load.js';
import type { Dataplane } from './dataplane.js';
import type { Endpoint } from './endpoint.js';
import { GatewayError, errorBody, isTlsFailure, type GatewayErrorCode, type UpstreamFailure } from './errors.js';
import { Exchange, type ExchangeHost } from './forward.js';
import { MirrorCopy } from './mirror.js';
import { acceptableRequestId, checkRequestHead, upstreamRequestHeaders, withHostHeader } from './headers.js';
import { hashToUnit, pickEndpoint, readCookie, versionAt } from './select.js';
import { matchRoute, type ServiceSnapshot, type VersionSnapshot } from './snapshot.js';
import { TlsCertificates } from './tls.js';
import { grpcStatusOfHttp, isGrpc, sendGrpcError } from './grpc.js';
import { H1Engine, reasonPhrase, type H1Handlers, type H1Limits } from './h1/engine.js';
import type { ClientRequest, ClientResponse } from './io.js';
import { ConnectionDrainer, kCloseAfterResponse, type MarkedSocket } from './conndrain.js';
import { Tunnel } from './tunnel.js';

/** What the server reports; metrics and outlier detection implement it. */
export interface Observer {
  upstreamResult(endpoint: Endpoint, status: number, failure: UpstreamFailure | undefined): void;
}

const noopObserver: Observer = { upstreamResult() {} };

export interface GatewayServerOptions {
  config: Config['gateway'];
  dataplane: Dataplane;
  log: Logger;
  observer?: Observer;
}

interface Selection {
  service: ServiceSnapshot;
  version: VersionSnapshot;
  endpoint: Endpoint;
  setCookie: string | undefined;
  /** Chosen by the override header. */
  pinned: boolean;
}

export class GatewayServer implements ExchangeHost {
  /** The listener: a plain TCP server whose connections go to the HTTP/1.1 engine (or,
   * opening with the HTTP/2 preface, to `h2c`); with gateway.tls, the HTTP/2 server,
   * whose connections that did not choose `h2` by ALPN go to the HTTP/1.1 engine. */
  readonly server: net.Server | Http2SecureServer;
  /** The HTTP/1.1 engine (gateway/h1/engine.ts) of the listener. */
  readonly h1: H1Engine;
  /** x-forwarded-proto upstream. */
  readonly proto: 'http' | 'https';
  /** gateway.tls: the certificates, chosen by SNI, reloadable. */
  readonly tls: TlsCertificates | undefined;
  /** gateway.redirectHttp: plain listener answering 308 to https. */
  readonly redirect: net.Server | undefined;
  private readonly redirectH1: H1Engine | undefined;
  /** Without gateway.tls: the HTTP/2 server that takes the plain listener's connections
   * opening with the HTTP/2 preface (prior knowledge, RFC 9113 §3.3). */
  readonly h2c: Http2Server | undefined;
  private httpsPortSuffix = '';
  /** HTTP/2 sessions, for a graceful GOAWAY at shutdown. */
  private readonly sessions = new Set<Http2Session>();
  /** Open connections per client address (gateway.maxConnectionsPerClient). */
  private readonly perClient = new Map<string, number>();
  private countingClients = false;
  closing = false;
  private readonly dp: Dataplane;
  private readonly log: Logger;
  private readonly observer: Observer;
  private cfg: Config['gateway'];
  private readonly tunnels = new Set<Tunnel>();
  /** Long-lived connections by the version they are pinned to, for connection drains. */
  readonly drainer: ConnectionDrainer;
  /** Upgrade requests sent upstream and not yet answered (count toward maxTunnels). */
  private pendingUpgrades = 0;
  private closed = false;

  constructor(opts: GatewayServerOptions) {
    this.dp = opts.dataplane;
    this.log = opts.log;
    this.observer = opts.observer ?? noopObserver;
    this.cfg = opts.config;
    this.drainer = new ConnectionDrainer(() => this.tunnels, opts.log);
    const dp = opts.dataplane;
    dp.onConnectionDrain((order) => this.drainer.drain(order, (v) => dp.statsOf(order.service, v)));
    const t = opts.config.timeouts;
    const cfg = opts.config;
    const onRequest = (req: ClientRequest, res: ClientResponse): void => this.onRequest(req, res);
    const handlers: H1Handlers = {
      request: onRequest,
      checkContinue: (req, res) => this.onCheckContinue(req, res),
      upgrade: (req, socket, head) => this.onUpgrade(req, socket, head),
      // The gateway is no forward proxy: 405 JSON, never forwarded.
      connect: (_req, socket) => rejectConnect(socket),
      refuse: (socket, status, code, message, raw, req) => this.onRefused(socket, status, code, message, raw, req),
    };
    if (cfg.tls === undefined) {
      this.proto = 'http';
      // HTTP/2 with prior knowledge on the same port: the same limits as over TLS.
      const h2c = http2.createServer(
        {
          maxHeaderListPairs: cfg.maxHeaderCount + 5,
          settings: { maxHeaderListSize: cfg.maxHeaderSize, maxConcurrentStreams: cfg.http2.maxConcurrentStreams },
          maxSessionMemory: 32,
        },
        onRequest as unknown as (req: Http2ServerRequest, res: Http2ServerResponse) => void,
      );
      h2c.on('session', (session: Http2Session) => this.onSession(session));
      h2c.on('checkContinue', (req: ClientRequest, res: ClientResponse) => this.onCheckContinue(req, res));
      h2c.on('connect', (req: ClientRequest, res: ClientResponse) => this.reject(req, res, 'METHOD_NOT_ALLOWED', 'CONNECT is not supported: the gateway is not a forward proxy'));
      this.h2c = h2c;
      // A connection opening with the HTTP/2 preface goes to the HTTP/2 server, with
      // the bytes read put back; HTTP/1.1 clients see no difference (a request line can
      // never start like the preface).
      handlers.http2 = (socket) => h2c.emit('connection', socket);
      this.h1 = new H1Engine(handlers, engineLimits(cfg), true);
      const h1 = this.h1;
      this.server = net.createServer((socket) => h1.accept(socket));
    } else {
      this.proto = 'https';
      this.tls = new TlsCertificates(cfg.tls.certificates, opts.log);
      const server = http2.createSecureServer(
        {
          ...this.tls.serverOptions(),
          // HTTP/2 and HTTP/1.1 on one port, chosen by ALPN; WebSocket stays HTTP/1.1.
          allowHTTP1: true,
          // A TLS handshake is held to the same deadline as request headers.
          handshakeTimeout: t.headersMs,
          // The header limits of HTTP/1.1, for HTTP/2 header blocks: size, and pairs
          // (four more for the pseudo-headers; onRequest answers 431 past the count).
          maxHeaderListPairs: cfg.maxHeaderCount + 5,
          settings: { maxHeaderListSize: cfg.maxHeaderSize, maxConcurrentStreams: cfg.http2.maxConcurrentStreams },
          maxSessionMemory: 32,
        },
        // An HTTP/2 stream comes as the compat request and response, which the request
        // path uses through the surface it shares with the HTTP/1.1 engine (io.ts).
        onRequest as unknown as (req: Http2ServerRequest, res: Http2ServerResponse) => void,
      );
      this.h1 = new H1Engine(handlers, engineLimits(cfg), false);
      const h1 = this.h1;
      // A TLS connection that chose h2 by ALPN goes to node:http2; every other one
      // (http/1.1, or no ALPN) to the HTTP/1.1 engine instead of Node's http code.
      const own = server.listeners('secureConnection') as ((socket: Socket) => void)[];
      server.removeAllListeners('secureConnection');
      server.on('secureConnection', (socket: Socket & { alpnProtocol?: string | false }) => {
        if (socket.alpnProtocol === 'h2') for (const fn of own) fn.call(server, socket);
        else h1.accept(socket);
      });
      this.tls.attach(server);
      server.on('session', (session: Http2Session) => this.onSession(session));
      server.on('tlsClientError', (err: NodeJS.ErrnoException) => this.log.debug({ err: err.code ?? err.message }, 'TLS handshake failed'));
      server.on('checkContinue', (req: ClientRequest, res: ClientResponse) => this.onCheckContinue(req, res));
      // CONNECT over HTTP/2 (an extended CONNECT or a tunnel): 405 JSON, never forwarded.
      server.on('connect', (req: ClientRequest, res: ClientResponse) => this.reject(req, res, 'METHOD_NOT_ALLOWED', 'CONNECT is not supported: the gateway is not a forward proxy'));
      this.server = server;
      if (cfg.redirectHttp !== undefined) {
        const redirect = new H1Engine(
          {
            request: (req, res) => this.onRedirect(req, res),
            checkContinue: (req, res) => this.onRedirect(req, res),
            upgrade: (req, socket) => this.redirectRaw(req, socket),
            connect: (_req, socket) => rejectConnect(socket),
            refuse: (socket, status, code, message, raw, req) => this.onRefused(socket, status, code, message, raw, req),
          },
          engineLimits(cfg),
          false,
        );
        this.redirectH1 = redirect;
        this.redirect = net.createServer((socket) => redirect.accept(socket));
      }
    }
    if (cfg.maxConnectionsPerClient > 0) this.countClients();
  }

  /** Limits that can change on reload (listen address, timeouts and whether TLS is on
   * cannot); with TLS, the certificates are loaded again. */
  reconfigure(cfg: Config['gateway']): void {
    this.cfg = cfg;
    this.h1.limits = engineLimits(cfg);
    if (this.redirectH1 !== undefined) this.redirectH1.limits = engineLimits(cfg);
    if (cfg.maxConnectionsPerClient > 0) this.countClients();
    if (this.tls !== undefined && cfg.tls !== undefined) this.tls.reload(cfg.tls.certificates, 'config reload');
    else if ((this.tls === undefined) !== (cfg.tls === undefined)) this.log.warn('gateway.tls is turned on or off only on restart');
  }

  async listen(): Promise<AddressInfo> {
    const { host, port } = splitHostPort(this.cfg.listen);
    await listenOn(this.server, host, port);
    const addr = this.server.address() as AddressInfo;
    this.httpsPortSuffix = addr.port === 443 ? '' : `:${addr.port}`;
    if (this.redirect !== undefined) {
      const r = splitHostPort(this.cfg.redirectHttp as string);
      try {
        await listenOn(this.redirect, r.host, r.port);
      } catch (err) {
        this.server.close();
        throw err;
      }
    }
    if (this.cfg.tls?.watch === true) this.tls?.watch();
    return addr;
  }

  /** The address of the redirect listener (gateway.redirectHttp), once listening. */
  get redirectAddress(): AddressInfo | undefined {
    return (this.redirect?.address() as AddressInfo | null) ?? undefined;
  }

  // ---- connections ----

  private onSession(session: Http2Session): void {
    this.sessions.add(session);
    session.once('close', () => this.sessions.delete(session));
    // An idle session is closed like an idle keep-alive connection: gracefully
    // (GOAWAY), so a stream still running finishes.
    session.setTimeout(this.cfg.timeouts.keepAliveMs, () => session.close());
    // Slowloris over HTTP/2: a session must bring its first complete request head within
    // timeouts.headers (as an HTTP/1.1 connection must), however many PINGs, SETTINGS or
    // partial frames keep it busy meanwhile.
    const first = setTimeout(() => {
      this.log.debug('HTTP/2 session closed: no request head within gateway.timeouts.headers');
      session.destroy();
    }, this.cfg.timeouts.headersMs);
    first.unref();
    session.once('stream', () => clearTimeout(first));
    session.once('close', () => clearTimeout(first));
    session.on('error', (err: NodeJS.ErrnoException) => this.log.debug({ err: err.code ?? err.message }, 'HTTP/2 session error'));
    if (this.closing) session.close();
  }

  /** gateway.maxConnectionsPerClient: a client address past it has its new connection
   * closed at once (before TLS, before any byte is read). */
  private countClients(): void {
    if (this.countingClients) return;
    this.countingClients = true;
    const onConnection = (socket: Socket): void => {
      const ip = socket.remoteAddress ?? '';
      const n = (this.perClient.get(ip) ?? 0) + 1;
      this.perClient.set(ip, n);
      socket.once('close', () => {
        const m = (this.perClient.get(ip) ?? 1) - 1;
        if (m <= 0) this.perClient.delete(ip);
        else this.perClient.set(ip, m);
      });
      const limit = this.cfg.maxConnectionsPerClient;
      if (limit > 0 && n > limit) {
        this.log.debug({ client: ip, connections: n - 1, limit }, 'connection refused: gateway.maxConnectionsPerClient');
        socket.destroy();
      }
    };
    // Before the listener's own connection handler (the HTTP/1.1 engine, or TLS), so a
    // refused socket is never read from.
    this.server.prependListener('connection', onConnection);
    this.redirect?.prependListener('connection', onConnection);
  }

  /** Open connections of one client address (while a limit is or was configured). */
  connectionsOf(address: string): number {
    return this.perClient.get(address) ?? 0;
  }

  // ---- HTTP → HTTPS redirect (gateway.redirectHttp) ----

  private onRedirect(req: ClientRequest, res: ClientResponse): void {
    const requestId = acceptableRequestId(req.headers['x-request-id']) ?? randomUUID();
    const url = req.url as string;
    const host = req.headers.host as string | undefined;
    const m = host === undefined ? null : REDIRECT_HOST_RE.exec(host);
    if (url.charCodeAt(0) !== 47 || m === null) {
      this.reject(req, res, 'BAD_REQUEST', m === null ? 'a redirect to https needs a valid Host header' : 'the request target must be a path (origin-form)', requestId);
      return;
    }
    res.writeHead(308, ['location', `https://${m[1]}${this.httpsPortSuffix}${url}`, 'content-length', '0', 'x-request-id', requestId, 'connection', 'close']);
    res.end();
  }

  /** An upgrade request on the redirect listener: the same 308 (or 400), written raw. */
  private redirectRaw(req: ClientRequest, socket: Socket): void {
    const requestId = acceptableRequestId(req.headers['x-request-id']) ?? randomUUID();
    const url = req.url as string;
    const host = req.headers.host as string | undefined;
    const m = host === undefined ? null : REDIRECT_HOST_RE.exec(host);
    if (url.charCodeAt(0) !== 47 || m === null) {
      writeRawError(socket, 400, 'BAD_REQUEST', m === null ? 'a redirect to https needs a valid Host header' : 'the request target must be a path (origin-form)', requestId);
      return;
    }
    socket.end(`HTTP/1.1 308 Permanent Redirect\r\nlocation: https://${m[1]}${this.httpsPortSuffix}${url}\r\ncontent-length: 0\r\nx-request-id: ${requestId}\r\nconnection: close\r\n\r\n`);
  }

  // ---- request path ----

  private onCheckContinue(req: ClientRequest, res: ClientResponse): void {
    // Refuse an oversized body before the client sends it.
    const cl = req.headers['content-length'];
    if (cl !== undefined && Number(cl) > this.cfg.maxBodySize) {
      this.reject(req, res, 'BODY_TOO_LARGE', `request body exceeds ${this.cfg.maxBodySize} bytes`);
      return;
    }
    res.writeContinue();
    this.onRequest(req, res);
  }

  private onRequest(req: ClientRequest, res: ClientResponse): void {
    const requestId = acceptableRequestId(req.headers['x-request-id']) ?? randomUUID();
    const url = req.url as string;
    if (url.charCodeAt(0) !== 47 /* / */) {
      this.reject(req, res, 'BAD_REQUEST', 'the request target must be a path (origin-form)', requestId);
      return;
    }
    // Header count, exactly one valid Host (HTTP/2: :authority, and Host agreeing).
    const problem = checkRequestHead(req, this.cfg.maxHeaderCount);
    if (problem !== undefined) {
      this.reject(req, res, problem.code, problem.message, requestId);
      return;
    }
    const cl = req.headers['content-length'];
    if (cl !== undefined && Number(cl) > this.cfg.maxBodySize) {
      this.reject(req, res, 'BODY_TOO_LARGE', `request body exceeds ${this.cfg.maxBodySize} bytes`, requestId);
      return;
    }
    // An expectation other than 100-continue cannot be met by a proxy that does not know
    // it (RFC 9110 §10.1.1): 417, never forwarded.
    const expectation = req.headers.expect;
    if (expectation !== undefined && req.httpVersionMajor === 1 && !(typeof expectation === 'string' && expectation.trim().toLowerCase() === '100-continue')) {
      this.reject(req, res, 'EXPECTATION_FAILED', 'the only expectation the gateway meets is 100-continue', requestId);
      return;
    }
    const sel = this.select(req, res, url, requestId);
    if (sel === undefined) return;
    // Which version this connection now carries (what a connection drain matches on).
    if (req.httpVersionMajor === 2) {
      const stream = (req as unknown as Http2ServerRequest).stream;
      const session = stream?.session;
      if (session !== undefined) this.drainer.h2Request(session, stream, sel.version.stats);
    } else this.drainer.h1Request(req, res, sel.version.stats);
    const x = new Exchange(this, req, res, sel.service, sel.version, sel.endpoint, requestId, sel.setCookie, sel.pinned);
    // Content-Length bodies are checked up front; a chunked (or HTTP/2) body is counted as it streams.
    if (cl === undefined && (req.headers['transfer-encoding'] !== undefined || req.httpVersionMajor === 2)) x.bodyLimit = this.cfg.maxBodySize;
    const mirror = sel.service.mirror;
    if (mirror !== undefined) x.mirror = MirrorCopy.start(mirror, req.method as string, url, x.headers, sel.version, x.hasBody, cl === undefined ? 0 : Number(cl));
    x.dispatch();
    // The served request goes first; a copy with a body is sent once the body is whole.
    if (x.mirror !== undefined && !x.hasBody) x.mirror.send();
  }

  /**
   * Routing rules 1–4. Answers the error itself and returns undefined when the request
   * cannot be placed.
   */
  private select(req: ClientRequest, res: ClientResponse | undefined, url: string, requestId: string): Selection | undefined {
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const host = req.headers.host as string | undefined;
    const service = matchRoute(this.dp.holder.current, host === undefined ? undefined : host.toLowerCase(), path);
    if (service === undefined) return this.failSelect(req, res, requestId, 'NO_ROUTE', `no route for ${host ?? '(no host)'}${path}`);

    let version: VersionSnapshot | undefined;
    let setCookie: string | undefined;
    let pinned = false;
    if (service.overrideHeader !== undefined) {
      const o = req.headers[service.overrideHeader];
      if (typeof o === 'string' && o !== '') {
        version = service.byName.get(o);
        pinned = true;
        if (version === undefined) return this.failSelect(req, res, requestId, 'BAD_REQUEST', `service ${service.name} has no version ${JSON.stringify(o.slice(0, 64))}`);
      }
    }
    if (version === undefined) {
      let key: string | undefined;
      if (service.stickyHeader !== undefined) {
        const h = req.headers[service.stickyHeader];
        if (typeof h === 'string' && h !== '') key = h;
      }
      if (key === undefined && service.stickyCookie !== undefined) {
        key = readCookie(req.headers.cookie as string | undefined, service.stickyCookie);
        if (key === undefined) {
          key = randomUUID();
          setCookie = `${service.stickyCookie}=${key}; Path=/; HttpOnly; SameSite=Lax`;
        }
      }
      version = versionAt(service, key === undefined ? Math.random() : hashToUnit(key));
      if (version === undefined) return this.failSelect(req, res, requestId, 'NO_HEALTHY_UPSTREAM', `service ${service.name} has no available endpoint in any version`);
    }
    const endpoint = pickEndpoint(version);
    if (endpoint === undefined) return this.failSelect(req, res, requestId, 'NO_HEALTHY_UPSTREAM', `version ${version.name} of ${service.name} has no available endpoint`);
    return { service, version, endpoint, setCookie, pinned };
  }

  private failSelect(req: ClientRequest, res: ClientResponse | undefined, requestId: string, code: GatewayErrorCode, message: string): undefined {
    if (res !== undefined) this.reject(req, res, code, message, requestId);
    else this.rejectUpgrade(req, req.socket, code, message, requestId);
    return undefined;
  }

  private reject(req: ClientRequest, res: ClientResponse, code: GatewayErrorCode, message: string, requestId?: string): void {
    this.sendError(req, res, new GatewayError(code, message), requestId ?? acceptableRequestId(req.headers['x-request-id']) ?? randomUUID());
  }

  sendError(req: ClientRequest, res: ClientResponse, err: GatewayError, requestId: string): void {
    if (err.statusCode >= 500) {
      this.log.warn({ reqId: requestId, code: err.code, err: err.cause ?? err.message, url: req.url }, 'gateway error');
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    // A gRPC client reads grpc-status, never a JSON body. (gRPC runs over HTTP/2 only:
    // an HTTP/1.1 request that merely says application/grpc gets the JSON answer, with
    // the connection rules below.)
    if (req.httpVersionMajor === 2 && isGrpc(req)) {
      sendGrpcError(req, res, err, requestId);
      return;
    }
    const body = errorBody(err.code, err.message, requestId);
    const headers = ['content-type', 'application/json', 'content-length', String(Buffer.byteLength(body)), 'x-request-id', requestId];
    // An unread request body (an early 413, an upstream that failed mid-upload) would
    // otherwise have to be read to the end to keep the connection: close it instead.
    // (HTTP/2 has no Connection header: the stream ends, the session stays.)
    if ((this.closing || !req.complete || (req.socket as MarkedSocket | null)?.[kCloseAfterResponse] === true) && req.httpVersionMajor !== 2) headers.push('connection', 'close');
    res.writeHead(err.statusCode, headers);
    res.end(body);
  }

  upstreamResult(endpoint: Endpoint, status: number, failure: UpstreamFailure | undefined): void {
    this.observer.upstreamResult(endpoint, status, failure);
  }

  get sendTimeoutMs(): number {
    return this.cfg.timeouts.sendMs;
  }

  get requestTimeoutMs(): number {
    return this.cfg.timeouts.requestMs;
  }

  exchangeDone(x: Exchange, status: number): void {
    const seconds = (performance.now() - x.start) / 1000;
    // Rollout analysis judges the version on what its endpoints did, never on a request
    // the gateway refused or failed itself (or one its client abandoned).
    // A gRPC call is judged by its grpc-status (services.NAME.grpc.errorStatuses), not
    // by its HTTP 200.
    let grpc = -1;
    if (x.grpc && status !== 499) grpc = x.grpcStatus !== -1 ? x.grpcStatus : x.grpcAnswer ? grpcStatusOfHttp(status) : -1;
    if (!x.gatewayFault) x.version.stats.window.record(status, seconds, undefined, grpc === -1 ? status >= 500 : (x.service.grpcErrorMask & (1 << grpc)) !== 0);
    x.version.stats.metrics?.request(status, seconds, x.attempts - 1, grpc);
    if (this.cfg.accessLog && (status >= 400 || this.cfg.accessLogSample >= 1 || Math.random() < this.cfg.accessLogSample)) {
      this.log.info(
        {
          reqId: x.requestId,
          method: x.req.method,
          url: x.req.url,
          status,
          service: x.service.name,
          version: x.version.name,
          endpoint: x.endpoint.id,
          attempts: x.attempts,
          ms: Math.round(seconds * 1e6) / 1e3,
        },
        'request',
      );
    }
  }

  /** A request the HTTP/1.1 engine refused before it reached the request path: a
   * malformed or oversized head (or body chunk), or one not received in time. Answered
   * with the JSON error on the raw socket, which then closes. */
  private onRefused(socket: Socket, status: number, code: string, message: string, raw: Buffer | undefined, req?: ClientRequest): void {
    if (status !== 408) this.log.debug({ status, err: message }, 'malformed request refused');
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    // The reader's 501 (a method it does not know) and 505 (a version other than 1.0 and
    // 1.1) have codes of their own.
    const c = status === 501 ? 'NOT_IMPLEMENTED' : status === 505 ? 'VERSION_NOT_SUPPORTED' : code;
    // A refusal during the body: the head was read, its id is the request's.
    const id = req !== undefined ? acceptableRequestId(req.headers['x-request-id']) : raw === undefined ? undefined : requestIdOf(raw);
    writeRawError(socket, status, c, message, id ?? randomUUID());
  }

  // ---- WebSocket (and any other Upgrade) ----

  private onUpgrade(req: ClientRequest, socket: Duplex, head: Buffer): void {
    this.drainer.forget(socket);
    const requestId = acceptableRequestId(req.headers['x-request-id']) ?? randomUUID();
    if (this.closing) {
      writeRawError(socket, 503, 'DRAINING', 'the gateway is shutting down', requestId);
      return;
    }
    const url = req.url as string;
    if (url.charCodeAt(0) !== 47) {
      writeRawError(socket, 400, 'BAD_REQUEST', 'the request target must be a path (origin-form)', requestId);
      return;
    }
    // The checks of every request (header count, Host) hold for upgrades too.
    const problem = checkRequestHead(req, this.cfg.maxHeaderCount);
    if (problem !== undefined) {
      const e = new GatewayError(problem.code, problem.message);
      writeRawError(socket, e.statusCode, e.code, e.message, requestId);
      return;
    }
    const up0 = this.cfg.upgrades;
    const protocol = String(req.headers.upgrade ?? '').trim().toLowerCase();
    if (!up0.protocols.includes(protocol)) {
      writeRawError(socket, 400, 'BAD_REQUEST', `upgrade to ${JSON.stringify(protocol.slice(0, 64))} is not enabled (gateway.upgrades.protocols)`, requestId);
      return;
    }
    if (this.tunnels.size + this.pendingUpgrades >= up0.maxTunnels) {
      writeRawError(socket, 503, 'TOO_MANY_TUNNELS', `the gateway holds its limit of ${up0.maxTunnels} tunnels (gateway.upgrades.maxTunnels)`, requestId);
      return;
    }
    const sel = this.select(req, undefined, url, requestId);
    if (sel === undefined) return;
    this.pendingUpgrades++;
    let pending = true;
    const settle = (): void => {
      if (pending) {
        pending = false;
        this.pendingUpgrades--;
      }
    };
    const ep = sel.endpoint;
    const upHeaders = upstreamRequestHeaders(req, requestId, this.proto, true);
    const hostHeader = sel.version.hostHeader;
    // An https endpoint: TLS with its version's CA, servername and verify setting.
    const up = (ep.tls === undefined ? http.request : https.request)({
      // servername '' = no SNI (an IP endpoint without a name): Node would otherwise
      // take the client's Host header.
      ...(ep.tls === undefined ? {} : { ...ep.tls, servername: ep.tls.servername ?? '' }),
      host: ep.address.host,
      port: ep.address.port,
      method: req.method,
      path: url,
      headers: hostHeader === undefined ? upHeaders : withHostHeader(upHeaders, hostHeader),
      setHost: false,
      agent: false,
      timeout: sel.service.config.timeouts.connectMs,
    });
    // Whatever ends the upgrade attempt ends its hold on the cap (a ClientRequest that
    // upgraded never emits 'close').
    up.once('close', settle);
    up.once('upgrade', settle);
    up.once('response', settle);
    up.once('error', settle);
    const fail = (status: number, code: string, message: string): void => {
      up.destroy();
      if (socket.writable) writeRawError(socket, status, code, message, requestId);
      else socket.destroy();
    };
    up.once('timeout', () => fail(504, 'UPSTREAM_TIMEOUT', 'upstream did not answer the upgrade in time'));
    up.once('error', (err) => fail(502, isTlsFailure(err) ? 'UPSTREAM_TLS_ERROR' : 'UPSTREAM_ERROR', `upstream upgrade failed: ${err.message}`));
    up.once('response', (ures) => {
      // The backend refused the upgrade: relay its answer and close.
      const lines = [`HTTP/1.1 ${ures.statusCode} ${ures.statusMessage ?? ''}`];
      for (let i = 0; i < ures.rawHeaders.length; i += 2) {
        const n = ures.rawHeaders[i].toLowerCase();
        if (n === 'connection' || n === 'transfer-encoding' || n === 'keep-alive') continue;
        lines.push(`${ures.rawHeaders[i]}: ${ures.rawHeaders[i + 1]}`);
      }
      lines.push(`x-request-id: ${requestId}`, 'connection: close', '', '');
      socket.write(lines.join('\r\n'));
      ures.pipe(socket);
    });
    up.once('upgrade', (ures, usocket: Socket, uhead: Buffer) => {
      up.setTimeout(0);
      usocket.setTimeout(0);
      // The client left while the upstream was answering: nothing to tunnel.
      if (socket.destroyed || socket.readableEnded) {
        usocket.destroy();
        return;
      }
      const lines = [`HTTP/1.1 ${ures.statusCode} ${ures.statusMessage ?? 'Switching Protocols'}`];
      for (let i = 0; i < ures.rawHeaders.length; i += 2) lines.push(`${ures.rawHeaders[i]}: ${ures.rawHeaders[i + 1]}`);
      lines.push(`x-request-id: ${requestId}`, '', '');
      socket.write(lines.join('\r\n'));
      // Bytes that came with the upgrade (the upstream's first frames after its 101, the
      // client's after its request) are put back to be read first by the tunnel: they
      // pass its frame trackers like any later byte, so a going-away close frame can
      // never land inside a frame that began in them.
      if (uhead.length) usocket.unshift(uhead);
      if (head.length) (socket as Socket).unshift(head);
      const tunnel = new Tunnel(socket, usocket, protocol === 'websocket', sel.version.stats, (t) => {
        this.tunnels.delete(t);
        this.drainer.tunnelClosed(t);
      });
      this.tunnels.add(tunnel);
      // A tunnel with no byte either way for gateway.upgrades.idleTimeout is closed
      // (a WebSocket with 1001 "going away" on both sides first).
      const idleMs = up0.idleTimeoutMs;
      if (idleMs > 0) {
        let idleSince = 0;
        const onIdle = (): void => {
          const now = performance.now();
          // Both sockets' timers fire on their own silence; the tunnel is idle only
          // when both have been silent.
          if (now - idleSince < idleMs - 1) return;
          this.log.debug({ reqId: requestId, idleMs }, 'tunnel closed: idle (gateway.upgrades.idleTimeout)');
          tunnel.goAway();
        };
        const active = (): void => {
          idleSince = performance.now();
        };
        socket.on('data', active);
        usocket.on('data', active);
        active();
        (socket as Socket).setTimeout?.(idleMs, onIdle);
        usocket.setTimeout(idleMs, onIdle);
      }
      tunnel.start();
    });
    socket.on('error', () => up.destroy());
    // A client that leaves before the upstream's 101 must not leave the upstream socket
    // (and a tunnel) behind.
    // (After an upgrade request Node no longer reads the socket for us: a client that
    // hangs up shows as 'end' on a half-open socket, not always as 'close'.)
    const abandon = (): void => void up.destroy();
    socket.once('close', abandon);
    socket.once('end', abandon);
    up.once('upgrade', () => {
      socket.off('close', abandon);
      socket.off('end', abandon);
    });
    up.end();
  }

  private rejectUpgrade(_req: ClientRequest, socket: Duplex, code: GatewayErrorCode, message: string, requestId: string): void {
    const e = new GatewayError(code, message);
    writeRawError(socket, e.statusCode, code, message, requestId);
  }

  // ---- shutdown ----

  /** Stops accepting connections; requests on open connections are still served, each
   * answered with Connection: close; idle keep-alive connections are closed. Resolves
   * when the last connection has closed. */
  stopAccepting(): Promise<void> {
    this.closing = true;
    // The listener stops accepting; its open connections are closed by the quiet sweep
    // below (an idle keep-alive connection may have its client's next request on the
    // wire: it is closed only once seen idle twice).
    const closed = new Promise<void>((resolve) => net.Server.prototype.close.call(this.server, () => resolve()));
    if (this.redirect !== undefined) this.redirect.close();
    // HTTP/2: GOAWAY; streams in flight finish, the client opens no new one here.
    for (const s of this.sessions) s.close();
    this.quietSweep = setInterval(() => this.closeQuietConnections(), QUIET_MS);
    this.quietSweep.unref();
    this.closeQuietConnections();
    void closed.then(() => clearInterval(this.quietSweep));
    return closed;
  }

  private quietSweep: NodeJS.Timeout | undefined;
  /** HTTP/1.1 connections seen idle at the last sweep. */
  private quiet = new Set<Socket>();

  /**
   * During shutdown every response says `Connection: close`, so a keep-alive client's
   * next request is answered and then its connection closes. A connection that was idle
   * at two sweeps QUIET_MS apart served nothing in between (a request would have closed
   * it): its client has gone quiet, and it is closed. One idle only now may be about to
   * carry a request: it gets until the next sweep.
   */
  private closeQuietConnections(): void {
    const next = new Set<Socket>();
    for (const engine of [this.h1, this.redirectH1]) {
      if (engine === undefined) continue;
      for (const socket of engine.idleSockets()) {
        if (this.quiet.has(socket)) socket.destroy();
        else next.add(socket);
      }
    }
    this.quiet = next;
  }

  /** Closes proxied WebSockets with 1001 "going away" on both sides. */
  closeTunnels(): void {
    for (const t of this.tunnels) t.goAway();
  }

  get openTunnels(): number {
    return this.tunnels.size;
  }

  /** Closes every connection at once; idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.closing = true;
    this.tls?.close();
    this.drainer.close();
    clearInterval(this.quietSweep);
    if (this.server.listening) net.Server.prototype.close.call(this.server);
    this.h1.closeAll();
    for (const s of this.sessions) s.destroy();
    if (this.redirect?.listening === true) this.redirect.close();
    this.redirectH1?.closeAll();
    for (const t of this.tunnels) t.destroy();
  }
}

/** How long an HTTP/1.1 connection must stay idle during shutdown before it is closed. */
const QUIET_MS = 250;

/** Writes an error response straight to a socket (no ClientResponse exists for it). */
function writeRawError(socket: Duplex, status: number, code: string, message: string, requestId: string): void {
  const body = errorBody(code, message, requestId);
  socket.end(
    `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\ncontent-type: application/json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${requestId}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** The HTTP/1.1 engine's limits from the gateway's config. */
function engineLimits(cfg: Config['gateway']): H1Limits {
  const t = cfg.timeouts;
  return {
    maxHeaderSize: cfg.maxHeaderSize,
    // One field more than the limit passes the reader, so that the request path's own
    // check answers it (with the client's x-request-id); beyond, the reader refuses.
    maxHeaderCount: cfg.maxHeaderCount + 1,
    headersMs: t.headersMs,
    requestMs: t.requestMs,
    keepAliveMs: t.keepAliveMs,
    sendMs: t.sendMs,
  };
}

function listenOn(server: net.Server | Http2SecureServer, host: string, port: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

// A Host header for the redirect: a DNS name, IPv4 or bracketed IPv6, optional port.
const REDIRECT_HOST_RE = /^([a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?|\[[0-9a-fA-F:.]+\])(?::\d{1,5})?$/;

function rejectConnect(socket: Duplex): void {
  writeRawError(socket, 405, 'METHOD_NOT_ALLOWED', 'CONNECT is not supported: the gateway is not a forward proxy', randomUUID());
}

const RAW_REQUEST_ID_RE = /\r\nx-request-id:[ \t]*([A-Za-z0-9._:/+=-]{1,128})[ \t]*\r\n/i;

/** The client's x-request-id from the bytes of a refused request, when readable. */
function requestIdOf(raw: Buffer): string | undefined {
  const m = RAW_REQUEST_ID_RE.exec(raw.toString('latin1', 0, Math.min(raw.length, 65536)));
  return m === null ? undefined : m[1];
}

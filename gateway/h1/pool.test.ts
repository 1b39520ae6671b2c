import { afterEach, describe, expect, it } from 'vitest';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import type { AddressInfo } from 'node:net';
import type { Dispatcher } from 'undici';
import { H1Pool, type H1PoolOptions } from './pool.js';
import { toGatewayError, GatewayError } from '../errors.js';
import { makeCa } from '../../test/certs.js';
import { waitFor } from '../../test/helpers.js';

/** What a handler saw of one dispatch. */
interface Outcome {
  events: string[];
  status: number;
  headers: string[];
  body: Buffer;
  trailers: string[] | null;
  error: Error | undefined;
  /** onData calls so far. */
  chunks: number;
}

interface Call {
  done: Promise<Outcome>;
  abort(err?: Error): void;
  resume(): void;
  outcome: Outcome;
}

/** Dispatches on `pool` with a recording handler. `pauseData` makes onData return false. */
function call(pool: H1Pool, opts: Partial<Dispatcher.DispatchOptions> & { pauseData?: boolean; onHeaders?: boolean }): Call {
  const outcome: Outcome = { events: [], status: 0, headers: [], body: Buffer.alloc(0), trailers: null, error: undefined, chunks: 0 };
  const parts: Buffer[] = [];
  let abortFn: ((err?: Error) => void) | undefined;
  let resumeFn: (() => void) | undefined;
  let resolve!: (o: Outcome) => void;
  const done = new Promise<Outcome>((r) => (resolve = r));
  const handler: Dispatcher.DispatchHandler = {
    onConnect(abort) {
      outcome.events.push('connect');
      abortFn = abort;
    },
    onResponseStarted() {
      outcome.events.push('started');
    },
    onHeaders(status, raw, resume) {
      outcome.events.push(`headers ${status}`);
      outcome.status = status;
      outcome.headers = raw.map((b) => b.toString('latin1'));
      resumeFn = resume;
      return opts.onHeaders ?? true;
    },
    onData(chunk) {
      parts.push(Buffer.from(chunk));
      outcome.chunks++;
      return opts.pauseData !== true;
    },
    onComplete(trailers) {
      outcome.events.push('complete');
      outcome.trailers = trailers === null ? null : trailers.map(String);
      outcome.body = Buffer.concat(parts);
      resolve(outcome);
    },
    onError(err) {
      outcome.events.push('error');
      outcome.error = err;
      outcome.body = Buffer.concat(parts);
      resolve(outcome);
    },
  };
  pool.dispatch({ path: '/', method: 'GET', headers: [], headersTimeout: 10_000, bodyTimeout: 10_000, ...opts } as Dispatcher.DispatchOptions, handler);
  return {
    done,
    outcome,
    abort: (err) => abortFn?.(err),
    resume: () => resumeFn?.(),
  };
}

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function listen<S extends Server | NetServer>(server: S): Promise<S & { url: string; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  const port = (server.address() as AddressInfo).port;
  return Object.assign(server, { url: `http://127.0.0.1:${port}`, sockets });
}

function http(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<Server & { url: string; sockets: Set<Socket>; connections: number }> {
  const server = createServer(handler) as Server & { connections: number };
  server.connections = 0;
  server.on('connection', () => server.connections++);
  return listen(server);
}

/** A server that answers raw bytes: `answer` gets each request head's bytes and the socket. */
function raw(answer: (socket: Socket, data: Buffer, n: number) => void): Promise<NetServer & { url: string; sockets: Set<Socket> }> {
  let n = 0;
  const server = createNetServer((s) => {
    s.on('data', (d) => answer(s, d, n++));
    s.on('error', () => {});
  });
  return listen(server);
}

function pool(url: string, opts: Partial<H1PoolOptions> = {}): H1Pool {
  const p = new H1Pool(url, { connections: 4, idleTimeoutMs: 30_000, connectTimeoutMs: 5000, ...opts });
  cleanups.push(() => p.destroy());
  return p;
}

describe('H1Pool', () => {
  it('calls the handler in order and reuses a keep-alive socket', async () => {
    const up = await http((req, res) => {
      res.setHeader('x-path', req.url as string);
      res.end('hi');
    });
    const p = pool(up.url);
    for (let i = 0; i < 3; i++) {
      const o = await call(p, { path: `/n${i}` }).done;
      expect(o.events).toEqual(['connect', 'started', 'headers 200', 'complete']);
      expect(o.body.toString()).toBe('hi');
      expect(o.headers).toContain(`/n${i}`);
    }
    expect(up.connections).toBe(1);
    expect(p.stats).toMatchObject({ connected: 1, free: 1, running: 0, pending: 0, queued: 0 });
  });

  it('sends undici\'s framing: none without a body, content-length: 0 for a bodiless POST, chunked for a stream, the length when given', async () => {
    const seen: { method: string; cl?: string; te?: string; host?: string; connection?: string; body: string }[] = [];
    const up = await http((req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (d: Buffer) => parts.push(d));
      req.on('end', () => {
        seen.push({ method: req.method as string, cl: req.headers['content-length'], te: req.headers['transfer-encoding'], host: req.headers.host, connection: req.headers.connection, body: Buffer.concat(parts).toString() });
        res.end();
      });
    });
    const p = pool(up.url);
    await call(p, { method: 'GET' }).done;
    await call(p, { method: 'POST' }).done;
    await call(p, { method: 'POST', body: Readable.from([Buffer.from('ab'), Buffer.from('cd')]) }).done;
    await call(p, { method: 'PUT', headers: ['content-length', '4', 'host', 'x.example'], body: Readable.from([Buffer.from('wxyz')]) }).done;
    await call(p, { method: 'POST', body: Buffer.from('buffered') }).done;
    const host = new URL(up.url).host;
    expect(seen).toEqual([
      { method: 'GET', cl: undefined, te: undefined, host, connection: 'keep-alive', body: '' },
      { method: 'POST', cl: '0', te: undefined, host, connection: 'keep-alive', body: '' },
      { method: 'POST', cl: undefined, te: 'chunked', host, connection: 'keep-alive', body: 'abcd' },
      { method: 'PUT', cl: '4', te: undefined, host: 'x.example', connection: 'keep-alive', body: 'wxyz' },
      { method: 'POST', cl: '8', te: undefined, host, connection: 'keep-alive', body: 'buffered' },
    ]);
  });

  it('refuses a header value with CR, LF or NUL at dispatch (BAD_REQUEST), sending nothing', async () => {
    let requests = 0;
    const up = await http((_req, res) => {
      requests++;
      res.end();
    });
    const p = pool(up.url);
    for (const v of ['a\r\nx-evil: 1', 'a\nb', 'a\u0000b']) {
      const o = await call(p, { headers: ['x-v', v] }).done;
      expect(o.events).toEqual(['error']);
      expect(toGatewayError(o.error, false).code).toBe('BAD_REQUEST');
    }
    expect(requests).toBe(0);
  });

  it('queues FIFO beyond `connections`, one request per socket', async () => {
    const order: string[] = [];
    const held: ServerResponse[] = [];
    const up = await http((req, res) => {
      order.push(req.url as string);
      held.push(res);
    });
    const p = pool(up.url, { connections: 2 });
    const calls = [0, 1, 2, 3, 4].map((i) => call(p, { path: `/${i}` }));
    await waitFor(() => held.length === 2, { message: 'two in flight' });
    expect(p.stats).toMatchObject({ running: 2, queued: 3 });
    while (order.length < 5) {
      const n = held.length;
      held.shift()!.end('x');
      await waitFor(() => held.length >= n || order.length === 5);
    }
    for (const r of held) r.end('x');
    await Promise.all(calls.map((c) => c.done));
    expect(order).toEqual(['/0', '/1', '/2', '/3', '/4']);
    expect(up.connections).toBe(2);
  });

  it('closes an idle socket after the backend\'s Keep-Alive hint minus 1 s, and does not reuse one with a hint of 1 s or less', async () => {
    // The backend hints 2 s and never closes itself: only the hint (not idleTimeoutMs,
    // 30 s here) can make the pool close the socket within the wait.
    let clientEnded = false;
    const up = await raw((s) => {
      s.once('end', () => (clientEnded = true));
      s.write('HTTP/1.1 200 OK\r\nKeep-Alive: timeout=2\r\nContent-Length: 2\r\n\r\nok');
    });
    const p = pool(up.url);
    await call(p, {}).done;
    expect(p.stats.free).toBe(1);
    await waitFor(() => p.stats.connected === 0 && clientEnded, { timeout: 10_000, message: 'idle socket closed by the pool' });

    const up1 = await http((_req, res) => res.end('ok'));
    up1.keepAliveTimeout = 1000;
    const p1 = pool(up1.url);
    await call(p1, {}).done;
    await call(p1, {}).done;
    expect(up1.connections).toBe(2);
  });

  it('skips 1xx answers, passes trailers to onComplete, and does not reuse a socket after HEAD', async () => {
    const up = await raw((s, d) => {
      if (d.toString().startsWith('HEAD')) s.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n');
      else s.write('HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nGrpc-Status: 0\r\n\r\n');
    });
    const p = pool(up.url);
    const o = await call(p, {}).done;
    expect(o.events).toEqual(['connect', 'started', 'headers 200', 'complete']);
    expect(o.body.toString()).toBe('hi');
    expect(o.trailers).toEqual(['Grpc-Status', '0']);
    expect(p.stats.free).toBe(1);
    const h = await call(p, { method: 'HEAD' }).done;
    expect(h.events).toEqual(['connect', 'started', 'headers 200', 'complete']);
    expect(p.stats.free).toBe(0);
  });

  it('never fails an idempotent request on a socket the backend closed while idle (keep-alive race); a POST there fails as reset and not sent', async () => {
    // The backend answers the first request on each socket, then closes the socket as
    // the next request arrives, without a byte of answer.
    const perSocket = new WeakMap<Socket, number>();
    const up = await raw((s) => {
      const n = perSocket.get(s) ?? 0;
      perSocket.set(s, n + 1);
      if (n === 0) s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      else s.destroy();
    });
    const p = pool(up.url);
    expect((await call(p, {}).done).body.toString()).toBe('ok');
    const again = await call(p, {}).done;
    expect(again.error).toBeUndefined();
    expect(again.body.toString()).toBe('ok');

    expect((await call(p, {}).done).error).toBeUndefined();
    const post = await call(p, { method: 'POST', body: Buffer.from('x') }).done;
    const ge = toGatewayError(post.error, post.events.includes('started'));
    expect(ge).toMatchObject({ reason: 'reset', notSent: true });
  });

  it('drops an idle socket that got bytes or an end from the backend', async () => {
    const up = await raw((s, _d, n) => {
      s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      if (n === 0) setImmediate(() => s.write('garbage'));
    });
    const p = pool(up.url);
    await call(p, {}).done;
    await waitFor(() => p.stats.connected === 0, { message: 'socket with stray bytes dropped' });
    expect((await call(p, {}).done).body.toString()).toBe('ok');
  });

  it('does not reuse after Connection: close, an HTTP/1.0 answer or a close-delimited body', async () => {
    const answers = [
      'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na',
      'HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nb',
      'HTTP/1.1 200 OK\r\n\r\nc',
    ];
    let i = 0;
    const up = await raw((s) => {
      const a = answers[i++];
      s.write(a);
      if (a.endsWith('c')) s.end();
    });
    const p = pool(up.url);
    const bodies = [];
    for (let k = 0; k < 3; k++) bodies.push((await call(p, {}).done).body.toString());
    expect(bodies).toEqual(['a', 'b', 'c']);
    await waitFor(() => p.stats.connected === 0, { message: 'no socket kept' });
  });

  it('pauses reading while onData returns false, and resumes on resume()', async () => {
    const MB = 1024 * 1024;
    let serverBlocked = false;
    const up = await http((_req, res) => {
      const chunk = Buffer.alloc(64 * 1024, 1);
      let sent = 0;
      const pump = (): void => {
        while (sent < 16 * MB) {
          sent += chunk.length;
          if (!res.write(chunk)) {
            serverBlocked = true;
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
    });
    const p = pool(up.url);
    const c = call(p, { pauseData: true });
    await waitFor(() => serverBlocked && c.outcome.chunks > 0, { message: 'the backend is held back' });
    // Paused at the first chunk: the socket is no longer read, the backend blocks.
    expect(c.outcome.events).toEqual(['connect', 'started', 'headers 200']);
    expect(c.outcome.chunks).toBe(1);
    let got = 0;
    const h = setInterval(() => c.resume(), 1);
    cleanups.push(() => clearInterval(h));
    const o = await c.done;
    got = o.body.length;
    expect(got).toBe(16 * MB);
  });

  it('writes a streamed body with backpressure (the body is paused while the backend does not read)', async () => {
    let upReq: IncomingMessage | undefined;
    let received = 0;
    const up = await http((req, res) => {
      upReq = req;
      req.pause();
      req.on('data', (d: Buffer) => (received += d.length));
      req.on('end', () => res.end(String(received)));
    });
    const p = pool(up.url);
    const total = 32 * 1024 * 1024;
    let produced = 0;
    const body = new Readable({
      read() {
        if (produced >= total) return void this.push(null);
        produced += 65536;
        this.push(Buffer.alloc(65536, 2));
      },
    });
    const c = call(p, { method: 'POST', body });
    await waitFor(() => upReq !== undefined && body.isPaused(), { message: 'body paused by backpressure' });
    expect(produced).toBeLessThan(total);
    upReq!.resume();
    const o = await c.done;
    expect(o.body.toString()).toBe(String(total));
  });

  it('fails with the body\'s own error when the body iterator throws, and drops the socket', async () => {
    let ended = 0;
    const up = await http((req, res) => {
      req.resume();
      req.on('end', () => {
        ended++;
        res.end();
      });
    });
    const p = pool(up.url);
    const err = new GatewayError('BODY_TOO_LARGE', 'request body exceeds 1 bytes');
    async function* body(): AsyncGenerator<Buffer> {
      yield Buffer.from('a');
      throw err;
    }
    const o = await call(p, { method: 'POST', body: body() as unknown as Readable }).done;
    expect(o.error).toBe(err);
    // The socket is dropped: the upstream sees its connection close, and never a whole
    // request. (The head and the first chunk were written in the same event-loop turn
    // as the throw, so write batching (batch.ts) never let them leave at all.)
    await waitFor(() => p.stats.connected === 0 && up.connections === 1 && up.sockets.size === 0, { message: 'upstream connection cut' });
    expect(ended).toBe(0);
  });

  it('headersTimeout and bodyTimeout end in UPSTREAM_TIMEOUT', async () => {
    const up = await http((req, res) => {
      if (req.url === '/body') {
        res.writeHead(200, { 'content-length': 10 });
        res.write('abc');
      }
    });
    const p = pool(up.url);
    const h = await call(p, { path: '/head', headersTimeout: 200 }).done;
    expect(h.events).toEqual(['connect', 'error']);
    expect(toGatewayError(h.error, false)).toMatchObject({ code: 'UPSTREAM_TIMEOUT', reason: 'timeout' });
    const b = await call(p, { path: '/body', bodyTimeout: 200 }).done;
    expect(b.events).toEqual(['connect', 'started', 'headers 200', 'error']);
    expect(b.body.toString()).toBe('abc');
    expect(toGatewayError(b.error, true)).toMatchObject({ code: 'UPSTREAM_TIMEOUT', reason: 'timeout' });
  });

  it('a body cut short by the backend is a reset; a malformed answer is a protocol failure', async () => {
    const up = await raw((s, d) => {
      if (d.toString().startsWith('GET /cut')) s.end('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc');
      else s.end('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab');
    });
    const p = pool(up.url);
    const cut = await call(p, { path: '/cut' }).done;
    expect(toGatewayError(cut.error, true)).toMatchObject({ reason: 'reset', notSent: false });
    const bad = await call(p, { path: '/bad' }).done;
    expect(toGatewayError(bad.error, true)).toMatchObject({ reason: 'protocol' });
  });

  it('abort(err) cuts the request: onError(err) once, the socket closed', async () => {
    let upClosed = false;
    const up = await http((req, res) => {
      res.writeHead(200);
      res.write('partial');
      req.socket.on('close', () => (upClosed = true));
    });
    const p = pool(up.url);
    const c = call(p, {});
    await waitFor(() => c.outcome.status === 200);
    const err = new GatewayError('CLIENT_CLOSED', 'client closed the connection');
    c.abort(err);
    c.abort(new Error('second'));
    const o = await c.done;
    expect(o.error).toBe(err);
    expect(o.events.filter((e) => e === 'error' || e === 'complete')).toEqual(['error']);
    await waitFor(() => upClosed, { message: 'upstream socket closed' });
  });

  it('close() waits for what is in flight, then closes; destroy() cuts; later dispatches fail', async () => {
    let hold: ServerResponse | undefined;
    const up = await http((_req, res) => (hold = res));
    const p = pool(up.url);
    const c = call(p, {});
    await waitFor(() => hold !== undefined);
    let closed = false;
    const closing = p.close().then(() => (closed = true));
    expect(p.closed).toBe(true);
    const late = await call(p, {}).done;
    expect((late.error as { code?: string }).code).toBe('UND_ERR_CLOSED');
    expect(closed).toBe(false);
    hold!.end('done');
    expect((await c.done).body.toString()).toBe('done');
    await closing;
    await waitFor(() => p.stats.connected === 0);

    hold = undefined;
    const p2 = pool(up.url);
    const c2 = call(p2, {});
    await waitFor(() => hold !== undefined);
    await p2.destroy();
    expect((await c2.done).error).toBeDefined();
    expect(p2.closed).toBe(true);
  });

  it('a refused connect fails as not sent', async () => {
    const up = await http((_req, res) => res.end());
    const url = up.url;
    await new Promise<void>((r) => {
      for (const s of up.sockets) s.destroy();
      up.close(() => r());
    });
    const p = pool(url);
    const o = await call(p, {}).done;
    expect(o.events).toEqual(['error']);
    expect(toGatewayError(o.error, false)).toMatchObject({ reason: 'connect', notSent: true });
  });

  it('a connect (TLS handshake included) that takes longer than connectTimeoutMs fails as UPSTREAM_TIMEOUT, not sent', async () => {
    // Accepts the TCP connection and never answers the TLS hello.
    const up = await raw(() => {});
    const p = pool(up.url.replace('http:', 'https:'), { connectTimeoutMs: 200, tls: { servername: 'upstream.test', rejectUnauthorized: true } });
    const o = await call(p, {}).done;
    expect(o.events).toEqual(['error']);
    expect(toGatewayError(o.error, false)).toMatchObject({ code: 'UPSTREAM_TIMEOUT', reason: 'timeout', notSent: true });
  });

  it('TLS: verifies the pinned servername (SNI) whatever the Host header, with ALPN http/1.1', async () => {
    const ca = makeCa();
    const leaf = ca.issue('up', 'upstream.test', ['upstream.test']);
    const server = createTlsServer({ cert: readFileSync(leaf.cert), key: readFileSync(leaf.key), ALPNProtocols: ['http/1.1'] }, (req, res) => {
      const s = req.socket as TLSSocket;
      if (req.url === '/resumed') {
        // One request per connection: the next one needs a new handshake.
        res.setHeader('connection', 'close');
        return void res.end(String(s.isSessionReused()));
      }
      res.end(`${s.servername} ${s.alpnProtocol} ${req.headers.host}`);
    });
    const up = await listen(server);
    const url = up.url.replace('http:', 'https:');
    const p = pool(url, { tls: { ca: ca.ca, servername: 'upstream.test', rejectUnauthorized: true } });
    const o = await call(p, { headers: ['host', 'evil.example'] }).done;
    expect(o.body.toString()).toBe('upstream.test http/1.1 evil.example');
    // A new connection resumes the pool's TLS session.
    const resumed: string[] = [];
    for (let i = 0; i < 3; i++) resumed.push((await call(p, { path: '/resumed' }).done).body.toString());
    expect(resumed.slice(1)).toEqual(['true', 'true']);

    const wrong = pool(url, { tls: { ca: ca.ca, servername: 'other.test', rejectUnauthorized: true } });
    const w = await call(wrong, {}).done;
    expect(toGatewayError(w.error, false)).toMatchObject({ code: 'UPSTREAM_TLS_ERROR', notSent: true });
  });
});

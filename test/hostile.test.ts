// Hostile clients on the data plane, plain and TLS: request smuggling shapes written
// byte for byte on raw sockets (refused with a JSON 400, the connection closed, and the
// upstream never sees the smuggled request), header and body limits, slowloris, absolute
// form targets, CONNECT, HTTP/0.9, and gateway.maxConnectionsPerClient.

import http from 'node:http';
import http2 from 'node:http2';
import { connect, type Socket } from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shopConfig, startInProcess, startUpstream, waitFor, type InProcessGateway, type Upstream } from './helpers.js';
import { makeCa, type TestCa } from './certs.js';

interface Parsed {
  status: number;
  headers: Record<string, string>;
  body: string;
  json: any;
}

interface Exchange {
  /** Every complete response read, in order. */
  responses: Parsed[];
  /** Bytes after the last complete response (should be none). */
  rest: string;
  /** The connection was closed by the gateway (not by our timeout). */
  closedByPeer: boolean;
  /** ms from connect to close. */
  ms: number;
}

/** Parses as many HTTP/1.1 responses as the bytes hold (Content-Length or chunked). */
function parseResponses(buf: Buffer): { responses: Parsed[]; rest: Buffer } {
  const responses: Parsed[] = [];
  let at = 0;
  for (;;) {
    const end = buf.indexOf('\r\n\r\n', at);
    if (end === -1) break;
    const lines = buf.subarray(at, end).toString('latin1').split('\r\n');
    const status = Number(lines[0].split(' ')[1]);
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      const k = l.slice(0, i).trim().toLowerCase();
      headers[k] = headers[k] === undefined ? l.slice(i + 1).trim() : `${headers[k]}, ${l.slice(i + 1).trim()}`;
    }
    let p = end + 4;
    let body: Buffer;
    if (headers['transfer-encoding'] === 'chunked') {
      const parts: Buffer[] = [];
      for (;;) {
        const le = buf.indexOf('\r\n', p);
        if (le === -1) return { responses, rest: buf.subarray(at) };
        const n = parseInt(buf.subarray(p, le).toString(), 16);
        if (buf.length < le + 2 + n + 2) return { responses, rest: buf.subarray(at) };
        parts.push(buf.subarray(le + 2, le + 2 + n));
        p = le + 2 + n + 2;
        if (n === 0) break;
      }
      body = Buffer.concat(parts);
    } else {
      const n = Number(headers['content-length'] ?? 0);
      if (buf.length < p + n) break;
      body = buf.subarray(p, p + n);
      p += n;
    }
    let json: any;
    try {
      json = JSON.parse(body.toString());
    } catch {
      json = undefined;
    }
    responses.push({ status, headers, body: body.toString(), json });
    at = p;
  }
  return { responses, rest: buf.subarray(at) };
}

/**
 * Opens a connection (plain, or TLS with ALPN http/1.1), writes `chunks` (strings are
 * written one after the other, `gapMs` apart), and reads until the gateway closes the
 * connection or `waitMs` passes.
 */
function exchange(target: { port: number; tls?: { ca: string } }, chunks: string[], opts: { gapMs?: number; waitMs?: number; keepWriting?: () => string | undefined; localAddress?: string } = {}): Promise<Exchange> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const sock: Socket = target.tls
      ? tls.connect({ port: target.port, host: '127.0.0.1', ca: target.tls.ca, servername: 'shop.test', ALPNProtocols: ['http/1.1'] })
      : connect({ port: target.port, host: '127.0.0.1', localAddress: opts.localAddress });
    let buf = Buffer.alloc(0);
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (closedByPeer: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearInterval(trickle);
      sock.destroy();
      const { responses, rest } = parseResponses(buf);
      resolve({ responses, rest: rest.toString('latin1'), closedByPeer, ms: Date.now() - t0 });
    };
    let trickle: NodeJS.Timeout | undefined;
    sock.once(target.tls ? 'secureConnect' : 'connect', async () => {
      for (let i = 0; i < chunks.length && !done; i++) {
        if (i > 0 && opts.gapMs) await new Promise((r) => setTimeout(r, opts.gapMs));
        if (!done && sock.writable) sock.write(chunks[i]);
      }
      if (opts.keepWriting) {
        trickle = setInterval(() => {
          const next = opts.keepWriting!();
          if (next !== undefined && sock.writable) sock.write(next);
        }, opts.gapMs ?? 200);
      }
    });
    sock.on('data', (d: Buffer) => (buf = Buffer.concat([buf, d])));
    sock.on('error', () => finish(true));
    sock.on('end', () => finish(true));
    sock.on('close', () => finish(true));
    timer = setTimeout(() => finish(false), opts.waitMs ?? 3000);
  });
}

/** An upstream that records every request it saw start, and those it saw complete. */
interface CountingUpstream extends Upstream {
  completed: string[];
}

async function countingUpstream(): Promise<CountingUpstream> {
  const completed: string[] = [];
  const up = (await startUpstream('blue', (req, res) => {
    req.resume();
    req.on('end', () => {
      completed.push(`${req.method} ${req.url}`);
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`ok ${req.method} ${req.url}`);
    });
  })) as CountingUpstream;
  up.completed = completed;
  return up;
}

const SMUGGLED = 'GET /smuggled HTTP/1.1\r\nHost: shop.test\r\n\r\n';

// Each shape: the bytes, and whether Node has read a full request head before the
// error (the forwarding may have started; the request must still never complete).
const SHAPES: { name: string; bytes: string; midBody?: boolean }[] = [
  { name: 'Content-Length with Transfer-Encoding (CL.TE)', bytes: `POST /a HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}` },
  { name: 'Transfer-Encoding with Content-Length (TE.CL)', bytes: `POST /a HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\n${SMUGGLED}\r\n0\r\n\r\n` },
  { name: 'duplicate identical Content-Length', bytes: `POST /a HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello` },
  { name: 'conflicting Content-Length', bytes: `POST /a HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\nContent-Length: ${5 + SMUGGLED.length}\r\n\r\nhello${SMUGGLED}` },
  { name: 'Content-Length list "5, 5"', bytes: `POST /a HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5, 5\r\n\r\nhello` },
  { name: 'obs-fold (a folded header line)', bytes: `GET /a HTTP/1.1\r\nHost: shop.test\r\nX-Folded: a\r\n b\r\n\r\n` },
  { name: 'obs-fold hiding Transfer-Encoding', bytes: `POST /a HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\nX-Pad: x\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}` },
  { name: 'invalid chunk size (not hex)', bytes: `POST /a HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n${SMUGGLED}`, midBody: true },
  { name: 'chunk size overflow', bytes: `POST /a HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff5\r\nhello\r\n0\r\n\r\n${SMUGGLED}`, midBody: true },
  { name: 'chunk longer than its size', bytes: `POST /a HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n${SMUGGLED}`, midBody: true },
  { name: 'bare LF line endings', bytes: `GET /a HTTP/1.1\nHost: shop.test\n\n${SMUGGLED}` },
  { name: 'bare LF inside the headers', bytes: `GET /a HTTP/1.1\r\nHost: shop.test\nX-A: b\r\n\r\n${SMUGGLED}` },
  { name: 'bare LF in chunked framing', bytes: `POST /a HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n${SMUGGLED}`, midBody: true },
  { name: 'bare CR', bytes: `GET /a HTTP/1.1\r\nHost: shop.test\rX-A: b\r\n\r\n${SMUGGLED}` },
  { name: 'Transfer-Encoding not ending in chunked', bytes: `POST /a HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n` },
  { name: 'duplicate Transfer-Encoding', bytes: `POST /a HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n${SMUGGLED}` },
  { name: 'Transfer-Encoding: xchunked', bytes: `POST /a HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${SMUGGLED}`, midBody: true },
  { name: 'space before the colon (Transfer-Encoding : chunked)', bytes: `POST /a HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n${SMUGGLED}` },
  { name: 'negative Content-Length', bytes: `POST /a HTTP/1.1\r\nHost: shop.test\r\nContent-Length: -1\r\n\r\n${SMUGGLED}` },
  { name: 'NUL in a header value', bytes: `GET /a HTTP/1.1\r\nHost: shop.test\r\nX-A: a\x00b\r\n\r\n${SMUGGLED}` },
  { name: 'a smuggle pipelined behind a valid request', bytes: `GET /first HTTP/1.1\r\nHost: shop.test\r\n\r\nPOST /a HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}` },
];

function expectJsonError(r: Parsed | undefined, status: number, code: string): void {
  expect(r, 'a response').toBeDefined();
  expect({ status: r!.status, code: r!.json?.error?.code }).toEqual({ status, code });
  expect(r!.headers['content-type']).toBe('application/json');
  expect(r!.headers['x-request-id']).toMatch(/^[A-Za-z0-9._:/+=-]{1,128}$/);
  expect(r!.json.error.requestId).toBe(r!.headers['x-request-id']);
}

describe('hostile clients', () => {
  let ca: TestCa;
  let up: CountingUpstream;
  let g: InProcessGateway;
  let gt: InProcessGateway;
  let plain: { port: number };
  let secure: { port: number; tls: { ca: string } };

  beforeAll(async () => {
    ca = makeCa();
    const cert = ca.issue('shop', 'shop.test', ['shop.test']);
    up = await countingUpstream();
    const gateway = { maxHeaderCount: 20, maxHeaderSize: '4kb', maxBodySize: '1kb', timeouts: { headers: '1s' } };
    g = await startInProcess(shopConfig({ blue: { weight: 100, endpoints: [up.address] } }, {}, { gateway }));
    gt = await startInProcess(shopConfig({ blue: { weight: 100, endpoints: [up.address] } }, {}, { gateway: { ...gateway, tls: { certificates: [{ cert: cert.cert, key: cert.key }], watch: false } } }));
    plain = { port: g.gw.addresses.gateway.port };
    secure = { port: gt.gw.addresses.gateway.port, tls: { ca: ca.ca } };
  });

  afterAll(async () => {
    await g?.close();
    await gt?.close();
    await up?.close();
  });

  describe.each([
    ['plain', () => plain],
    ['TLS', () => secure],
  ] as const)('request smuggling shapes (%s listener)', (_kind, target) => {
    it.each(SHAPES)('$name: 400 JSON, connection closed, the smuggled request never reaches the upstream', async ({ bytes, midBody, name }) => {
      up.seen.length = 0;
      up.completed.length = 0;
      const pipelined = name.startsWith('a smuggle pipelined');
      const x = await exchange(target(), [bytes]);
      expect(x.closedByPeer).toBe(true);
      const last = x.responses[x.responses.length - 1];
      expectJsonError(last, 400, 'BAD_REQUEST');
      expect(last.headers.connection).toBe('close');
      expect(x.responses.length).toBe(pipelined ? 2 : 1);
      if (pipelined) expect(x.responses[0].status).toBe(200);
      expect(x.rest).toBe('');
      // Give a smuggled request every chance to arrive before looking.
      await new Promise((r) => setTimeout(r, 150));
      expect(up.seen.map((s) => s.url)).not.toContain('/smuggled');
      expect(up.completed).toEqual(pipelined ? ['GET /first'] : []);
      // Only a request whose head was valid may have started upstream (and was cut off).
      if (!midBody && !pipelined) expect(up.seen).toHaveLength(0);
    });
  });

  it('a refused request keeps the client x-request-id when it can be read', async () => {
    const x = await exchange(plain, ['POST /a HTTP/1.1\r\nHost: shop.test\r\nX-Request-Id: smuggle-7\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab']);
    expectJsonError(x.responses[0], 400, 'BAD_REQUEST');
    expect(x.responses[0].headers['x-request-id']).toBe('smuggle-7');
  });

  it.each([
    ['plain', () => plain],
    ['TLS', () => secure],
  ] as const)('pipelined requests (%s) are forwarded one at a time and answered in order', async (_kind, target) => {
    up.completed.length = 0;
    const reqs = ['/p1', '/p2', '/p3', '/p4'].map((p) => `GET ${p} HTTP/1.1\r\nHost: shop.test\r\n\r\n`);
    const x = await exchange(target(), [reqs.join('') + 'POST /p5 HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi']);
    expect(x.responses.map((r) => r.body.toString())).toEqual(['ok GET /p1', 'ok GET /p2', 'ok GET /p3', 'ok GET /p4', 'ok POST /p5']);
    expect(up.completed).toEqual(['GET /p1', 'GET /p2', 'GET /p3', 'GET /p4', 'POST /p5']);
    expect(x.closedByPeer).toBe(true);
  });

  it('an Expect other than 100-continue → 417, not forwarded', async () => {
    up.seen.length = 0;
    const x = await exchange(plain, ['POST /a HTTP/1.1\r\nHost: shop.test\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\nhi']);
    expectJsonError(x.responses[0], 417, 'EXPECTATION_FAILED');
    expect(up.seen).toHaveLength(0);
  });

  describe.each([
    ['plain', () => plain],
    ['TLS', () => secure],
  ] as const)('limits (%s listener)', (_kind, target) => {
    it('too many header fields → 431; headers over maxHeaderSize → 431; a body over maxBodySize → 413; none forwarded', async () => {
      up.seen.length = 0;
      const many = Array.from({ length: 25 }, (_, i) => `X-H${i}: v\r\n`).join('');
      expectJsonError((await exchange(target(), [`GET /a HTTP/1.1\r\nHost: shop.test\r\n${many}\r\n`])).responses[0], 431, 'HEADERS_TOO_LARGE');
      expectJsonError((await exchange(target(), [`GET /a HTTP/1.1\r\nHost: shop.test\r\nX-Big: ${'a'.repeat(5000)}\r\n\r\n`])).responses[0], 431, 'HEADERS_TOO_LARGE');
      const big = await exchange(target(), [`POST /a HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 2000\r\n\r\n${'b'.repeat(2000)}`]);
      expectJsonError(big.responses[0], 413, 'BODY_TOO_LARGE');
      expect(up.seen).toHaveLength(0);
      // Chunked over the limit: cut off while streaming, never completed upstream.
      up.completed.length = 0;
      const chunk = 'c'.repeat(600);
      const chunked = await exchange(target(), [`POST /a HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n${chunk}\r\n258\r\n${chunk}\r\n0\r\n\r\n`]);
      expectJsonError(chunked.responses[0], 413, 'BODY_TOO_LARGE');
      expect(up.completed).toEqual([]);
    });

    it('slowloris: headers trickled a byte at a time are cut off after gateway.timeouts.headers (1s) with 408', async () => {
      up.seen.length = 0;
      const x = await exchange(target(), ['GET /a HTTP/1.1\r\nHost: shop.test\r\nX-Slow: '], {
        gapMs: 100,
        waitMs: 6000,
        // One more header byte every 100 ms: never a complete head.
        keepWriting: () => 'a',
      });
      expect(x.closedByPeer).toBe(true);
      expect(x.ms).toBeGreaterThanOrEqual(900);
      expect(x.ms).toBeLessThan(3500);
      expectJsonError(x.responses[0], 408, 'REQUEST_TIMEOUT');
      expect(up.seen).toHaveLength(0);
    });

    it('a connection that sends nothing is closed after the headers timeout', async () => {
      const x = await exchange(target(), [], { waitMs: 6000 });
      expect(x.closedByPeer).toBe(true);
      expect(x.ms).toBeLessThan(3500);
    });

    it('absolute-form and asterisk-form targets and HTTP/0.9 are refused with 400, never forwarded', async () => {
      up.seen.length = 0;
      for (const head of [
        'GET http://evil.test/steal HTTP/1.1\r\nHost: evil.test\r\n\r\n',
        'GET http://shop.test/ HTTP/1.1\r\nHost: shop.test\r\n\r\n',
        'GET https://shop.test:443/x HTTP/1.1\r\nHost: shop.test\r\n\r\n',
        'OPTIONS * HTTP/1.1\r\nHost: shop.test\r\n\r\n',
        'GET /\r\n\r\n',
      ]) {
        const x = await exchange(target(), [head]);
        expectJsonError(x.responses[0], 400, 'BAD_REQUEST');
      }
      expect(up.seen).toHaveLength(0);
    });

    it('an unknown method is refused with 501 and an HTTP version other than 1.0/1.1 with 505, never forwarded', async () => {
      up.seen.length = 0;
      for (const [head, status, code] of [
        ['FROB /a HTTP/1.1\r\nHost: shop.test\r\n\r\n', 501, 'NOT_IMPLEMENTED'],
        ['GET /a HTTP/2.0\r\nHost: shop.test\r\n\r\n', 505, 'VERSION_NOT_SUPPORTED'],
        ['GET /a HTTP/1.2\r\nHost: shop.test\r\n\r\n', 505, 'VERSION_NOT_SUPPORTED'],
      ] as const) {
        const x = await exchange(target(), [head]);
        expectJsonError(x.responses[0], status, code);
        expect(x.closedByPeer).toBe(true);
      }
      // WebDAV and other methods llhttp knows are forwarded like any other.
      const dav = await exchange(target(), ['PROPFIND /dav HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n']);
      expect(dav.responses[0].status).toBe(200);
      expect(up.seen.map((s) => s.url)).toEqual(['/dav']);
    });

    it('CONNECT is refused with 405 JSON and never tunnelled or forwarded', async () => {
      up.seen.length = 0;
      const x = await exchange(target(), [`CONNECT 127.0.0.1:${up.port} HTTP/1.1\r\nHost: 127.0.0.1:${up.port}\r\n\r\nGET /through-tunnel HTTP/1.1\r\nHost: x\r\n\r\n`]);
      expect(x.closedByPeer).toBe(true);
      expectJsonError(x.responses[0], 405, 'METHOD_NOT_ALLOWED');
      expect(x.responses).toHaveLength(1);
      expect(up.seen).toHaveLength(0);
    });
  });

  it('HTTP/2: a body over maxBodySize is refused with 413 JSON (declared, or streamed without a length) and never completes upstream; the session survives', async () => {
    up.seen.length = 0;
    up.completed.length = 0;
    const session = http2.connect(`https://127.0.0.1:${secure.port}`, { ca: ca.ca, servername: 'shop.test' });
    const post = (headers: http2.OutgoingHttpHeaders, chunks: Buffer[]): Promise<{ status: number; json: any }> =>
      new Promise((resolve, reject) => {
        const s = session.request({ ':method': 'POST', ':path': '/upload', ':authority': 'shop.test', ...headers });
        let status = 0;
        let text = '';
        s.on('response', (h) => (status = Number(h[':status'])));
        s.on('data', (d: Buffer) => (text += d.toString()));
        s.on('end', () => {
          let json: any;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status, json });
        });
        s.on('error', reject);
        (async () => {
          for (const c of chunks) {
            if (s.destroyed || s.writableEnded) return;
            s.write(c);
            await new Promise((r) => setTimeout(r, 20));
          }
          if (!s.destroyed) s.end();
        })().catch(() => {});
      });
    try {
      const declared = await post({ 'content-length': '2000' }, [Buffer.alloc(2000, 0x61)]);
      expect(declared.status).toBe(413);
      expect(declared.json.error.code).toBe('BODY_TOO_LARGE');
      const streamed = await post({}, [Buffer.alloc(600, 0x62), Buffer.alloc(600, 0x63), Buffer.alloc(600, 0x64)]);
      expect(streamed.status).toBe(413);
      expect(streamed.json.error.code).toBe('BODY_TOO_LARGE');
      const small = await post({}, [Buffer.alloc(500, 0x65)]);
      expect(small.status).toBe(200);
      await new Promise((r) => setTimeout(r, 150));
      expect(up.completed).toEqual(['POST /upload']);
    } finally {
      session.close();
    }
  });

  it('TLS handshakes held open without a byte are cut after the headers timeout', async () => {
    const t0 = Date.now();
    const closed = await new Promise<boolean>((resolve) => {
      const s = connect(secure.port, '127.0.0.1');
      const timer = setTimeout(() => {
        s.destroy();
        resolve(false);
      }, 6000);
      s.on('close', () => {
        clearTimeout(timer);
        resolve(true);
      });
      s.on('error', () => {});
    });
    expect(closed).toBe(true);
    expect(Date.now() - t0).toBeLessThan(3500);
  });

  it('gateway.maxConnectionsPerClient: connections past the limit are closed at once, unread; other clients are not affected', async () => {
    const lim = await startInProcess(shopConfig({ blue: { weight: 100, endpoints: [up.address] } }, {}, { gateway: { maxConnectionsPerClient: 3 } }));
    const port = lim.gw.addresses.gateway.port;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 3 });
    const ask = (localAddress?: string): Promise<number> =>
      new Promise((resolve, reject) => {
        const req = http.get({ host: '127.0.0.1', port, path: '/held', agent: localAddress ? false : agent, localAddress, headers: { host: 'shop.test' } }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
      });
    try {
      // Three kept-alive connections from 127.0.0.1.
      expect(await Promise.all([ask(), ask(), ask()])).toEqual([200, 200, 200]);
      await waitFor(() => lim.gw.gateway!.connectionsOf('127.0.0.1') === 3);
      up.seen.length = 0;
      // The fourth: closed without a response, its request never read.
      const x = await exchange({ port }, ['GET /fourth HTTP/1.1\r\nHost: shop.test\r\n\r\n']);
      expect(x.closedByPeer).toBe(true);
      expect(x.responses).toHaveLength(0);
      expect(up.seen).toHaveLength(0);
      // Another client address is served meanwhile.
      expect(await ask('127.0.0.2')).toBe(200);
      // Once one of the three closes, a new connection is accepted again.
      agent.destroy();
      await waitFor(() => lim.gw.gateway!.connectionsOf('127.0.0.1') === 0);
      const y = await exchange({ port }, ['GET /again HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n']);
      expect(y.responses[0]?.status).toBe(200);
    } finally {
      agent.destroy();
      await lim.close();
    }
  });
});

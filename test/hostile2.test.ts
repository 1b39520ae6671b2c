// Hostile clients, second round (issue #15), each case on a real gateway process and
// spoken in raw bytes (HTTP/1.1) or raw frames (HTTP/2 over TLS): cancelled and
// mismatched HTTP/2 uploads are never completed upstream and leave nothing in flight;
// requests the gateway refuses never count against an endpoint; HTTP/2 streams obey the
// request timeout; a client that never reads is cut after timeouts.send; Connection can
// strip nothing the gateway owns; Forwarded & co. are not passed as sent; Host and
// :authority are validated; upgrades pass the same checks and are capped; HTTP/2
// pseudo-headers do not count toward maxHeaderCount; and a property test drives random
// HTTP/2 stream lifecycles.

import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2 from 'node:http2';
import { connect, type Socket } from 'node:net';
import fc from 'fast-check';
import { errors as undiciErrors } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCa, type TestCa } from './certs.js';
import { ERR, FRAME, RawH2, frame, hpackEncode } from './h2frames.js';
import { closeServer, shopConfig, startProcess, waitFor, type GatewayProcess } from './helpers.js';
import { toGatewayError } from '../gateway/errors.js';

/** An upstream that accounts for every request: started, completed whole, open now. */
interface ProbeUpstream {
  address: string;
  server: http.Server;
  /** x-id of every request seen. */
  started: string[];
  /** x-id → the body, for requests whose body arrived whole and were answered. */
  completed: Map<string, string>;
  /** Requests whose response has not closed yet. */
  open: number;
  /** Responses to /big that closed before they were finished. */
  bigCut: number;
  /** Headers of the last request per path. */
  lastHeaders: Map<string, http.IncomingHttpHeaders>;
  upgrades: { headers: http.IncomingHttpHeaders; socket: Socket }[];
}

async function probeUpstream(): Promise<ProbeUpstream> {
  const up = { started: [], completed: new Map(), open: 0, bigCut: 0, lastHeaders: new Map(), upgrades: [] } as unknown as ProbeUpstream;
  const server = http.createServer((req: IncomingMessage, res: ServerResponse) => {
    const id = String(req.headers['x-id'] ?? '');
    up.started.push(id);
    up.lastHeaders.set(req.url ?? '', req.headers);
    up.open++;
    res.once('close', () => up.open--);
    if (req.url === '/big') {
      // 64 MB, written as the client side drains (more than every socket buffer between).
      const chunk = Buffer.alloc(64 * 1024, 120);
      let left = 1024;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(chunk.length * left) });
      const pump = (): void => {
        while (left > 0) {
          left--;
          if (!res.write(chunk)) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      res.once('close', () => {
        if (!res.writableFinished) up.bigCut++;
      });
      req.resume();
      pump();
      return;
    }
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      if (!req.complete) return;
      const body = Buffer.concat(parts).toString();
      up.completed.set(id, body);
      const answer = JSON.stringify({ id, bytes: body.length, headers: req.headers });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(answer)) });
      res.end(answer);
    });
  });
  server.on('upgrade', (req: IncomingMessage, socket: Socket) => {
    up.upgrades.push({ headers: req.headers, socket });
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    socket.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  up.server = server;
  up.address = `127.0.0.1:${(server.address() as { port: number }).port}`;
  return up;
}

/** The sum of switchyard_inflight_requests, or of another metric, from /metrics. */
async function metricSum(adminUrl: string, name: string, filter = ''): Promise<number> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  let n = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) || !line.includes(filter)) continue;
    n += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return n;
}

/** Nothing in flight in the gateway, no request open on the upstream. */
async function settled(p: GatewayProcess, up: ProbeUpstream, what: string): Promise<void> {
  await waitFor(async () => up.open === 0 && (await metricSum(p.adminUrl, 'switchyard_inflight_requests')) === 0, { timeout: 10_000, message: `${what}: upstream open ${up.open}` });
}

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Writes raw bytes and reads one response (Content-Length framed) or the close. */
function rawRequest(port: number, bytes: string): Promise<RawResponse | undefined> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1', () => sock.write(bytes));
    let buf = Buffer.alloc(0);
    const done = (): void => {
      sock.destroy();
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) {
        resolve(undefined);
        return;
      }
      const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of lines.slice(1)) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
      resolve({ status: Number(lines[0].split(' ')[1]), headers, body: buf.subarray(end + 4).toString() });
    };
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      const m = /\r\ncontent-length: *(\d+)/i.exec(buf.subarray(0, end).toString('latin1'));
      if (m !== null && buf.length >= end + 4 + Number(m[1])) done();
    });
    sock.on('error', done);
    sock.on('close', done);
  });
}

const REQ = (path: string, headers: string[], id = 'x'): string => `GET ${path} HTTP/1.1\r\n${[...headers, `x-id: ${id}`].join('\r\n')}\r\n\r\n`;

describe('hostile clients, second round (real gateway process)', () => {
  let ca: TestCa;
  let up: ProbeUpstream;
  let pt: GatewayProcess; // TLS: HTTP/2 and HTTP/1.1
  let pp: GatewayProcess; // plain HTTP/1.1
  let tlsPort: number;
  let plainPort: number;

  beforeAll(async () => {
    ca = makeCa();
    const cert = ca.issue('shop', 'shop.test', ['shop.test']);
    up = await probeUpstream();
    const gateway = {
      timeouts: { headers: '1s', request: '1500ms', send: '1s' },
      upgrades: { protocols: ['websocket'], maxTunnels: 2, idleTimeout: '1s' },
    };
    // Outlier detection at a hair trigger: any failure blamed on the endpoint ejects it.
    const service = { outlierDetection: { consecutive5xx: 2, consecutiveGatewayErrors: 2, maxEjectionPercent: 100, baseEjectionTime: '60s' } };
    pt = await startProcess(shopConfig({ blue: { weight: 100, endpoints: [up.address] } }, service, { gateway: { ...gateway, tls: { certificates: [{ cert: cert.cert, key: cert.key }], watch: false } } }));
    pp = await startProcess(shopConfig({ blue: { weight: 100, endpoints: [up.address] } }, service, { gateway }));
    tlsPort = Number(new URL(pt.url).port);
    plainPort = Number(new URL(pp.url).port);
  }, 30_000);

  afterAll(async () => {
    await pt?.stop();
    await pp?.stop();
    for (const u of up?.upgrades ?? []) u.socket.destroy();
    if (up !== undefined) await closeServer(up.server);
  });

  async function endpointState(p: GatewayProcess): Promise<string> {
    const r = (await (await fetch(`${p.controlUrl}/v1/services/shop`)).json()) as { versions: { blue: { endpoints: { state: string }[] } } };
    return r.versions.blue.endpoints[0].state;
  }

  describe('1. HTTP/2 uploads cut short are never run upstream', () => {
    const cases: { name: string; headers: [string, string][]; body: string; end: 'rst' | 'end' }[] = [
      { name: 'no content-length, partial JSON, RST_STREAM(CANCEL) without END_STREAM', headers: [], body: '{"to":"alice","amount":10', end: 'rst' },
      { name: 'content-length 10, 3 bytes, END_STREAM', headers: [['content-length', '10']], body: 'abc', end: 'end' },
      { name: 'content-length 3, 6 bytes, END_STREAM', headers: [['content-length', '3']], body: 'abcdef', end: 'end' },
      { name: 'content-length 0, 3 bytes, END_STREAM', headers: [['content-length', '0']], body: 'abc', end: 'end' },
    ];
    for (const c of cases) {
      it(c.name, async () => {
        const h2 = await RawH2.connect(tlsPort, ca.ca);
        try {
          const id = `cut-${c.name.length}-${c.body.length}`;
          const s = h2.request([[':method', 'POST'], [':scheme', 'https'], [':path', '/pay'], [':authority', 'shop.test'], ['x-id', id], ...c.headers], false);
          h2.data(s, c.body, c.end === 'end');
          if (c.end === 'rst') {
            // The upstream has the request head (streamed), then the client cancels.
            await waitFor(() => up.started.includes(id), { message: 'upstream saw the request start' });
            h2.rst(s, ERR.CANCEL);
          } else {
            // nghttp2 resets the stream (Node 20) or the whole session (GOAWAY, Node 24).
            await h2.until(() => h2.finished(s) || h2.goaway !== undefined || h2.closed, 5000, 'the stream or session to be reset');
          }
          await settled(pt, up, c.name);
          expect(up.completed.has(id), 'the truncated request must never complete upstream').toBe(false);
          // A whole upload still goes through (on the same connection when it survived).
          const next = h2.goaway === undefined && !h2.closed ? h2 : await RawH2.connect(tlsPort, ca.ca);
          try {
            const ok = next.request([[':method', 'POST'], [':scheme', 'https'], [':path', '/pay'], [':authority', 'shop.test'], ['x-id', `${id}-ok`]], false);
            next.data(ok, '{"to":"bob"}', true);
            await next.until(() => next.finished(ok), 5000, 'the complete upload');
            expect(next.streams.get(ok)!.status).toBe(200);
            expect(up.completed.get(`${id}-ok`)).toBe('{"to":"bob"}');
          } finally {
            next.close();
          }
        } finally {
          h2.close();
        }
        expect(await endpointState(pt)).toBe('healthy');
      });
    }

    it('3 connections × 100 streams reset right after HEADERS: nothing left in flight, later requests served', async () => {
      const conns = await Promise.all([0, 1, 2].map(() => RawH2.connect(tlsPort, ca.ca)));
      for (const [k, h2] of conns.entries()) {
        for (let i = 0; i < 100; i++) {
          const s = h2.request([[':method', 'POST'], [':scheme', 'https'], [':path', '/pay'], [':authority', 'shop.test'], ['x-id', `storm-${k}-${i}`]], false);
          h2.rst(s, ERR.CANCEL);
        }
      }
      await settled(pt, up, 'reset storm');
      expect([...up.completed.keys()].filter((k) => k.startsWith('storm-'))).toEqual([]);
      for (const h2 of conns) h2.close();
      // Later requests are served at once: no pool slot is held by the storm.
      const client = http2.connect(pt.url.replace('http:', 'https:'), { ca: ca.ca, servername: 'shop.test' });
      const statuses = await Promise.all(
        Array.from({ length: 50 }, (_, i) => new Promise<number>((resolve, reject) => {
          const r = client.request({ ':path': '/after', ':authority': 'shop.test', 'x-id': `after-${i}` });
          r.on('response', (h) => resolve(Number(h[':status'])));
          r.on('error', reject);
          r.resume();
        })),
      );
      client.close();
      expect(statuses.every((s) => s === 200)).toBe(true);
      expect(await endpointState(pt)).toBe('healthy');
    });
  });

  describe('2. a request the gateway refuses never blames the endpoint', () => {
    it('Host twice → 400, never forwarded; 10 of them eject nothing and count no upstream error', async () => {
      const before = up.started.length;
      for (let i = 0; i < 10; i++) {
        const r = await rawRequest(plainPort, REQ('/', ['Host: shop.test', 'Host: evil.test'], `dup-${i}`));
        expect(r?.status).toBe(400);
        expect(JSON.parse(r!.body).error.code).toBe('BAD_REQUEST');
      }
      expect(up.started.length).toBe(before);
      expect(await metricSum(pp.adminUrl, 'switchyard_upstream_errors_total')).toBe(0);
      expect(await endpointState(pp)).toBe('healthy');
      expect((await rawRequest(plainPort, REQ('/', ['Host: shop.test'], 'after-dup')))?.status).toBe(200);
    });

    it('an error undici raises on the gateway\'s side (an argument it refuses) has no reason: no endpoint or version is blamed', () => {
      const dup = toGatewayError(new undiciErrors.InvalidArgumentError('duplicate host header'), false);
      expect({ status: dup.statusCode, reason: dup.reason }).toEqual({ status: 400, reason: undefined });
      const len = toGatewayError(new undiciErrors.RequestContentLengthMismatchError(), false);
      expect(len.reason).toBeUndefined();
      const aborted = toGatewayError(new undiciErrors.RequestAbortedError(), false);
      expect({ status: aborted.statusCode, reason: aborted.reason }).toEqual({ status: 499, reason: undefined });
      // Upstream failures keep theirs.
      expect(toGatewayError(Object.assign(new Error('x'), { code: 'ECONNREFUSED' }), false).reason).toBe('connect');
      expect(toGatewayError(Object.assign(new Error('bad'), { code: 'HPE_INVALID_CONSTANT' }), true).reason).toBe('protocol');
    });
  });

  describe('3. HTTP/2 streams obey the request timeout', () => {
    it('8 streams that send 1 byte of body and never finish get 408 after timeouts.request and release the upstream', async () => {
      const client = http2.connect(pt.url.replace('http:', 'https:'), { ca: ca.ca, servername: 'shop.test' });
      const t0 = Date.now();
      const statuses = await Promise.all(
        Array.from({ length: 8 }, (_, i) => new Promise<number>((resolve, reject) => {
          const r = client.request({ ':method': 'POST', ':path': '/slow', ':authority': 'shop.test', 'x-id': `slow-${i}` });
          r.write('x');
          r.on('response', (h) => resolve(Number(h[':status'])));
          r.on('error', reject);
          r.resume();
        })),
      );
      const ms = Date.now() - t0;
      client.close();
      expect(statuses).toEqual(Array(8).fill(408));
      expect(ms).toBeGreaterThanOrEqual(1400);
      await settled(pt, up, 'slow streams');
      expect(await endpointState(pt)).toBe('healthy');
    });
  });

  describe('4. a client that never reads', () => {
    it('HTTP/1.1: a 64 MB response to a client that reads nothing is cut after timeouts.send; the upstream is released', async () => {
      const cut0 = up.bigCut;
      const sock = connect(plainPort, '127.0.0.1', () => sock.write(REQ('/big', ['Host: shop.test'], 'big-h1')));
      sock.pause();
      await waitFor(() => up.bigCut > cut0, { timeout: 10_000, message: 'the upstream response was cut' });
      await waitFor(() => sock.destroyed || sock.readableEnded || sock.closed || true);
      sock.destroy();
      await settled(pp, up, 'not reading (h1)');
      expect(await endpointState(pp)).toBe('healthy');
    });

    it('HTTP/2: a stream whose window is never opened is cut after timeouts.send', async () => {
      const cut0 = up.bigCut;
      const h2 = await RawH2.connect(tlsPort, ca.ca);
      const s = h2.request([[':method', 'GET'], [':scheme', 'https'], [':path', '/big'], [':authority', 'shop.test'], ['x-id', 'big-h2']], true);
      h2.stalled.add(s);
      await waitFor(() => up.bigCut > cut0, { timeout: 10_000, message: 'the upstream response was cut' });
      await h2.until(() => h2.finished(s), 5000, 'the stream to be reset');
      h2.close();
      await settled(pt, up, 'not reading (h2)');
    });
  });

  describe('5–6. the gateway owns Host, Connection and the forwarding headers', () => {
    it('Connection naming Host, x-forwarded-* or x-request-id removes none of them; other named headers go', async () => {
      const r = await rawRequest(plainPort, REQ('/conn', ['Host: shop.test', 'Connection: host, x-forwarded-host, x-forwarded-for, x-request-id, x-custom', 'X-Custom: 1', 'X-Request-Id: abc123'], 'conn'));
      expect(r?.status).toBe(200);
      const h = up.lastHeaders.get('/conn')!;
      expect(h.host).toBe('shop.test');
      expect(h['x-forwarded-host']).toBe('shop.test');
      expect(h['x-forwarded-for']).toBe('127.0.0.1');
      expect(h['x-request-id']).toBe('abc123');
      expect(h['x-custom']).toBeUndefined();
    });

    it('Forwarded and x-forwarded-prefix are dropped; X-Real-IP and x-forwarded-port are the gateway\'s', async () => {
      const r = await rawRequest(plainPort, REQ('/fwd', ['Host: shop.test', 'Forwarded: for=203.0.113.1;proto=https;host=evil.test', 'X-Real-IP: 203.0.113.1', 'X-Forwarded-Port: 1', 'X-Forwarded-Prefix: /evil', 'X-Forwarded-Proto: https'], 'fwd'));
      expect(r?.status).toBe(200);
      const h = up.lastHeaders.get('/fwd')!;
      expect(h.forwarded).toBeUndefined();
      expect(h['x-forwarded-prefix']).toBeUndefined();
      expect(h['x-real-ip']).toBe('127.0.0.1');
      expect(h['x-forwarded-port']).toBe(String(plainPort));
      expect(h['x-forwarded-proto']).toBe('http');
    });

    it('an upgrade forwards Connection: upgrade only; Connection cannot strip Host or our headers', async () => {
      const n = up.upgrades.length;
      const sock = connect(plainPort, '127.0.0.1', () =>
        sock.write('GET /ws HTTP/1.1\r\nHost: shop.test\r\nUpgrade: websocket\r\nConnection: Upgrade, host, x-forwarded-for, x-request-id\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'),
      );
      sock.on('error', () => {});
      await waitFor(() => up.upgrades.length > n, { message: 'upgrade reached the upstream' });
      const h = up.upgrades[n].headers;
      sock.destroy();
      // The client left: the gateway closes the upstream side of the tunnel too.
      const upSock = up.upgrades[n].socket;
      await waitFor(() => upSock.destroyed || upSock.readableEnded, { message: 'tunnel torn down' });
      expect(h.host).toBe('shop.test');
      expect(h.connection).toBe('upgrade');
      expect(h['x-forwarded-for']).toBe('127.0.0.1');
      expect(h['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    });
  });

  describe('7. Host and :authority are validated', () => {
    const before = (): number => up.started.length;
    for (const host of ['a b', 'shop.example.com:@evil.com/x?', 'user@shop.test', 'shop.test/x', '']) {
      it(`HTTP/1.1 Host ${JSON.stringify(host)} → 400, not forwarded`, async () => {
        const n = before();
        const r = await rawRequest(plainPort, REQ('/', [`Host: ${host}`], 'badhost'));
        expect(r?.status).toBe(400);
        expect(up.started.length).toBe(n);
      });
    }

    it('HTTP/2 :authority with userinfo → 400; a host header that disagrees with :authority → 400; neither forwarded', async () => {
      const n = before();
      const h2 = await RawH2.connect(tlsPort, ca.ca);
      const a = h2.request([[':method', 'GET'], [':scheme', 'https'], [':path', '/'], [':authority', 'user@shop.test']], true);
      const b = h2.request([[':method', 'GET'], [':scheme', 'https'], [':path', '/'], [':authority', 'shop.test'], ['host', 'evil.test']], true);
      const c = h2.request([[':method', 'GET'], [':scheme', 'https'], [':path', '/'], [':authority', 'shop.test'], ['host', 'SHOP.test']], true);
      await h2.until(() => h2.finished(a) && h2.finished(b) && h2.finished(c), 5000, 'three answers');
      h2.close();
      // nghttp2 may refuse an :authority it finds malformed itself (a stream reset);
      // either way it is never forwarded.
      const sa = h2.streams.get(a)!;
      expect(sa.status === 400 || sa.reset !== undefined).toBe(true);
      expect(h2.streams.get(b)!.status).toBe(400);
      expect(h2.streams.get(c)!.status).toBe(200);
      expect(up.started.length).toBe(n + 1);
    });
  });

  describe('8. upgrades pass the request checks, and are capped', () => {
    const upgrade = (extra: string[], protocol = 'websocket'): string =>
      `GET /ws HTTP/1.1\r\n${[...extra, `Upgrade: ${protocol}`, 'Connection: Upgrade', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='].join('\r\n')}\r\n\r\n`;

    it('150 headers → 431; no Host → 400; Host twice → 400; Upgrade: h2c → 400; none reaches the upstream', async () => {
      const n = up.upgrades.length;
      const many = Array.from({ length: 150 }, (_, i) => `X-H${i}: v`);
      expect((await rawRequest(plainPort, upgrade(['Host: shop.test', ...many])))?.status).toBe(431);
      expect((await rawRequest(plainPort, upgrade([])))?.status).toBe(400);
      expect((await rawRequest(plainPort, upgrade(['Host: shop.test', 'Host: evil.test'])))?.status).toBe(400);
      expect((await rawRequest(plainPort, upgrade(['Host: shop.test'], 'h2c')))?.status).toBe(400);
      expect(up.upgrades.length).toBe(n);
    });

    it('past gateway.upgrades.maxTunnels (2) → 503 TOO_MANY_TUNNELS; an idle tunnel is closed after idleTimeout', async () => {
      const open = (): Promise<{ sock: Socket; head: string }> =>
        new Promise((resolve) => {
          const sock = connect(plainPort, '127.0.0.1', () => sock.write(upgrade(['Host: shop.test'])));
          let buf = '';
          sock.on('error', () => {});
          sock.on('data', (d: Buffer) => {
            buf += d.toString('latin1');
            if (buf.includes('\r\n\r\n')) resolve({ sock, head: buf });
          });
        });
      const a = await open();
      const b = await open();
      expect(a.head).toMatch(/^HTTP\/1\.1 101/);
      expect(b.head).toMatch(/^HTTP\/1\.1 101/);
      const c = await open();
      expect(c.head).toMatch(/^HTTP\/1\.1 503/);
      expect(c.head).toContain('TOO_MANY_TUNNELS');
      c.sock.destroy();
      // Both tunnels sit idle: each is closed (1001 going away, then the socket).
      const closedA = new Promise<Buffer>((resolve) => {
        const got: Buffer[] = [];
        a.sock.on('data', (d: Buffer) => got.push(d));
        a.sock.on('close', () => resolve(Buffer.concat(got)));
      });
      await new Promise<void>((resolve) => b.sock.once('close', () => resolve()));
      const tail = await closedA;
      expect(tail.subarray(-4)).toEqual(Buffer.from([0x88, 0x02, 0x03, 0xe9]));
      // A tunnel holds its slot until its upstream side is gone too (this upstream never
      // answers the close frame: it is cut after the going-away grace); then the cap
      // frees up. Until then a new tunnel is refused with TOO_MANY_TUNNELS, nothing else.
      const refusedMeanwhile: string[] = [];
      const d = await waitFor(
        async () => {
          const o = await open();
          if (/^HTTP\/1\.1 101/.test(o.head)) return o;
          refusedMeanwhile.push(o.head.split('\r\n')[0] + (o.head.includes('TOO_MANY_TUNNELS') ? ' TOO_MANY_TUNNELS' : ''));
          o.sock.destroy();
          return undefined;
        },
        { timeout: 10_000, interval: 100, message: 'the cap frees up once both tunnels are gone' },
      );
      expect(refusedMeanwhile.every((h) => h === 'HTTP/1.1 503 Service Unavailable TOO_MANY_TUNNELS'), refusedMeanwhile.join('\n')).toBe(true);
      d.sock.destroy();
    });
  });

  describe('3b. HTTP/2 slowloris', () => {
    it('a session busy with PINGs but no request is closed after timeouts.headers (1s)', async () => {
      const h2 = await RawH2.connect(tlsPort, ca.ca);
      const t0 = Date.now();
      const ping = setInterval(() => h2.write(frame(FRAME.PING, 0, 0, Buffer.alloc(8))), 200);
      try {
        await h2.until(() => h2.closed, 8000, 'the gateway to close the session');
      } finally {
        clearInterval(ping);
      }
      expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    });

    it('a HEADERS frame without END_HEADERS whose CONTINUATION never comes: the session is closed after timeouts.headers (1s)', async () => {
      const h2 = await RawH2.connect(tlsPort, ca.ca);
      // After the SETTINGS exchange, so that no other frame of ours (an ACK) follows the
      // open header block: that would be a protocol error, closed at once.
      await h2.until(() => h2.settled, 5000, 'the SETTINGS exchange');
      const t0 = Date.now();
      h2.write(frame(FRAME.HEADERS, 0, 1, hpackEncode([[':method', 'GET']])));
      await h2.until(() => h2.closed, 8000, 'the gateway to close the session');
      expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    });
  });

  describe('9. HTTP/2 pseudo-headers do not count toward maxHeaderCount', () => {
    it('97 header fields + 4 pseudo-headers → 200; 101 fields → 431', async () => {
      const h2 = await RawH2.connect(tlsPort, ca.ca);
      const fields = (n: number): [string, string][] => Array.from({ length: n }, (_, i) => [`x-h${i}`, 'v'] as [string, string]);
      const base: [string, string][] = [[':method', 'GET'], [':scheme', 'https'], [':path', '/many'], [':authority', 'shop.test']];
      const a = h2.request([...base, ...fields(97)], true);
      const b = h2.request([...base, ...fields(101)], true);
      await h2.until(() => h2.finished(a) && h2.finished(b), 5000, 'two answers');
      h2.close();
      expect(h2.streams.get(a)!.status).toBe(200);
      expect(h2.streams.get(b)!.status).toBe(431);
    });
  });

  describe('2b. a rollout is judged on its endpoints, never on requests the gateway refused', () => {
    it('30 duplicate-Host requests a second during a rollout: it succeeds (they used to count as green\'s 502s and roll it back)', async () => {
      const blue = await probeUpstream();
      const green = await probeUpstream();
      const p = await startProcess(shopConfig({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } }));
      const port = Number(new URL(p.url).port);
      let stop = false;
      const honest = (async () => {
        while (!stop) await fetch(`${p.url}/honest`).then((r) => r.arrayBuffer());
      })();
      const hostile = (async () => {
        let refused = 0;
        while (!stop) {
          const r = await rawRequest(port, REQ('/', ['Host: shop.test', 'Host: evil.test'], 'dup-rollout'));
          if (r?.status === 400) refused++;
          await new Promise((res) => setTimeout(res, 30));
        }
        return refused;
      })();
      try {
        const start = await fetch(`${p.controlUrl}/v1/services/shop/rollout`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ to: 'green', steps: [50, 100], interval: '1s', analysis: { maxErrorRate: 0.01, minRequests: 5 } }),
        });
        expect(start.status).toBe(202);
        const done = await waitFor(async () => {
          const r = (await (await fetch(`${p.controlUrl}/v1/services/shop/rollout`)).json()) as { state: string; reason?: string };
          return r.state === 'running' ? undefined : r;
        }, { timeout: 20_000, message: 'the rollout ends' });
        stop = true;
        const refused = await hostile;
        await honest;
        expect(refused).toBeGreaterThan(30);
        expect({ state: done.state, reason: done.reason }).toEqual({ state: 'succeeded', reason: done.reason });
        expect(green.started.length).toBeGreaterThan(0);
      } finally {
        stop = true;
        await p.stop();
        await closeServer(blue.server);
        await closeServer(green.server);
      }
    });
  });

  describe('property: random HTTP/2 stream lifecycles', () => {
    type Plan = {
      method: 'GET' | 'POST';
      declared: number | undefined; // content-length sent, if any
      chunks: number[]; // DATA sizes
      end: 'end' | 'rst-before-end' | 'rst-after-end' | 'rst-after-headers';
      stall: boolean; // never open the response window
    };
    const plan: fc.Arbitrary<Plan> = fc.record({
      method: fc.constantFrom('GET' as const, 'POST' as const),
      declared: fc.option(fc.integer({ min: 0, max: 40 }), { nil: undefined }),
      chunks: fc.array(fc.integer({ min: 0, max: 20 }), { maxLength: 3 }),
      end: fc.constantFrom('end' as const, 'rst-before-end' as const, 'rst-after-end' as const, 'rst-after-headers' as const),
      stall: fc.boolean(),
    });

    it('the upstream completes exactly the uploads the client completed; nothing stays in flight', async () => {
      let run = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(plan, { minLength: 1, maxLength: 6 }), async (plans) => {
          run++;
          const h2 = await RawH2.connect(tlsPort, ca.ca);
          const ids: { id: string; stream: number; p: Plan; whole: boolean }[] = [];
          try {
            for (const [i, p] of plans.entries()) {
              const id = `prop-${run}-${i}`;
              const headers: [string, string][] = [[':method', p.method], [':scheme', 'https'], [':path', '/prop'], [':authority', 'shop.test'], ['x-id', id]];
              if (p.declared !== undefined) headers.push(['content-length', String(p.declared)]);
              const sent = p.chunks.reduce((a, b) => a + b, 0);
              const noBody = p.chunks.length === 0 && p.end === 'end';
              const s = h2.request(headers, noBody);
              if (p.stall) h2.stalled.add(s);
              if (p.end === 'rst-after-headers') h2.rst(s);
              else if (!noBody) {
                for (const [k, n] of p.chunks.entries()) h2.data(s, 'y'.repeat(n), p.end !== 'rst-before-end' && k === p.chunks.length - 1);
                if (p.chunks.length === 0 && p.end !== 'rst-before-end') h2.data(s, '', true);
                if (p.end !== 'end') h2.rst(s);
              }
              // Whole: END_STREAM sent, a length (if declared) that matches, no reset.
              const whole = p.end === 'end' && (p.declared === undefined || p.declared === sent);
              ids.push({ id, stream: s, p, whole });
            }
            // Every stream the client left open to the gateway comes to an end.
            // (A length mismatch makes nghttp2 reset the stream, or — Node 24 — end the
            // whole session with GOAWAY.)
            await h2.until(() => h2.closed || h2.goaway !== undefined || ids.every((x) => x.p.end !== 'end' || h2.finished(x.stream) || x.p.stall), 8000, 'answers');
          } finally {
            h2.close();
          }
          await settled(pt, up, `property run ${run}`);
          for (const x of ids) {
            const done = up.completed.has(x.id);
            // Never run: anything not received whole. A reset after END_STREAM (with a
            // length that matched) cancels the answer, not the request: the body was whole
            // when it came, and whether it reached the upstream before the reset did is a
            // race of two frames (often in one packet) — either way is right, but only whole.
            const cancelledAfterWhole = x.p.end === 'rst-after-end' && (x.p.declared === undefined || x.p.declared === x.p.chunks.reduce((a, b) => a + b, 0));
            if (!x.whole && !cancelledAfterWhole) expect(done, `${x.id} ${JSON.stringify(x.p)} must not complete upstream`).toBe(false);
            // Always run: a whole upload whose answer the client read to the end.
            const st = h2.streams.get(x.stream)!;
            if (x.whole && st.ended && st.status === 200) expect(done, `${x.id} ${JSON.stringify(x.p)} answered 200 must have completed`).toBe(true);
            if (done) expect(up.completed.get(x.id)!.length).toBe(x.p.chunks.reduce((a, b) => a + b, 0));
          }
        }),
        { numRuns: 40 },
      );
      expect(await endpointState(pt)).toBe('healthy');
    });
  });
});

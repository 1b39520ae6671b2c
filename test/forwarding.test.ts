// Forwarding (README "Forwarding" and "The gateway's own responses"): streaming
// bodies with bounded memory, client aborts, hop-by-hop headers, forwarded headers and
// request ids, Expect: 100-continue, WebSocket, every gateway error from a real
// situation, retries, and client disconnects during upload. Real loopback upstreams.

import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import WebSocket, { WebSocketServer } from 'ws';
import { load, rssOf, shopConfig, startInProcess, startProcess, startUpstream, waitFor, type Upstream, deadAddress } from './helpers.js';

const MB = 1024 * 1024;

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: any;
}

/** A request through node:http (which, unlike undici, sends any header it is given). */
function raw(
  url: string,
  opts: { method?: string; path?: string; headers?: Record<string, string | string[]>; body?: Buffer | Buffer[]; agent?: http.Agent | false } = {},
): Promise<Reply> {
  const u = new URL(url);
  const body = opts.body === undefined ? [] : Array.isArray(opts.body) ? opts.body : [opts.body];
  const headers = { ...opts.headers };
  const named = Object.keys(headers).map((k) => k.toLowerCase());
  // A body is sent with a Content-Length unless the caller asks for chunked.
  if (body.length && !named.includes('content-length') && !named.includes('transfer-encoding')) {
    headers['content-length'] = String(body.reduce((n, b) => n + b.length, 0));
  }
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: u.hostname, port: u.port, path: opts.path ?? u.pathname + u.search, method: opts.method ?? 'GET', headers, agent: opts.agent ?? false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          let json: any;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      },
    );
    req.on('error', reject);
    for (const b of body) req.write(b);
    req.end();
  });
}

/**
 * Writes a request byte for byte on a fresh socket and reads one response (which must
 * carry a Content-Length): for requests node:http and undici refuse to send.
 */
function rawSocket(url: string, head: string): Promise<Reply> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(u.port), u.hostname, () => sock.write(head));
    let buf = Buffer.alloc(0);
    sock.on('error', reject);
    sock.on('close', () => reject(new Error(`socket closed before a full response: ${buf.toString()}`)));
    sock.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(lines[0].split(' ')[1]);
      const headers: http.IncomingHttpHeaders = {};
      for (const line of lines.slice(1)) {
        const i = line.indexOf(':');
        const name = line.slice(0, i).trim().toLowerCase();
        const value = line.slice(i + 1).trim();
        const prev = headers[name];
        headers[name] = prev === undefined ? value : `${prev}, ${value}`;
      }
      const done = (text: string): void => {
        let json: any;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        sock.removeAllListeners('close');
        sock.destroy();
        resolve({ status, headers, text, json });
      };
      if (headers['content-length'] === undefined) {
        // No length: only a close-delimited body (HTTP/1.0) is expected here.
        if (headers['transfer-encoding'] !== undefined) return reject(new Error(`unexpected ${lines.join(' | ')}`));
        sock.removeAllListeners('close');
        sock.on('close', () => done(buf.subarray(end + 4).toString()));
        return;
      }
      const len = Number(headers['content-length']);
      if (buf.length < end + 4 + len) return;
      done(buf.subarray(end + 4, end + 4 + len).toString());
    });
  });
}

function expectGatewayError(r: Reply, status: number, code: string): void {
  expect(r.status, r.text).toBe(status);
  expect(r.headers['content-type']).toMatch(/^application\/json/);
  expect(r.json?.error?.code, r.text).toBe(code);
  expect(typeof r.json.error.message).toBe('string');
  const id = r.headers['x-request-id'];
  expect(typeof id).toBe('string');
  expect((id as string).length).toBeGreaterThan(0);
  expect(r.json.error.requestId).toBe(id);
}

/** Counts a request body and answers {bytes}. */
function countingHandler(req: IncomingMessage, res: ServerResponse): void {
  let bytes = 0;
  req.on('data', (c: Buffer) => (bytes += c.length));
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ bytes }));
  });
}

function connectionsOf(server: http.Server): Promise<number> {
  return new Promise((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
}

describe('forwarding', () => {
  describe('100 MB bodies through a real gateway process', () => {
    const SIZE = 100 * MB;
    const CHUNK = 64 * 1024;
    let up: Upstream;
    // What the upstream has received of the upload in progress, and written of the download.
    let upstreamGot = 0;
    let upstreamSent = 0;
    beforeAll(async () => {
      up = await startUpstream('big', (req, res) => {
        if (req.url === '/upload') {
          upstreamGot = 0;
          req.on('data', (c: Buffer) => (upstreamGot += c.length));
        }
        if (req.url === '/download') {
          req.resume();
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(SIZE) });
          const chunk = Buffer.alloc(CHUNK, 7);
          let sent = 0;
          upstreamSent = 0;
          const pump = (): void => {
            while (sent < SIZE && !res.destroyed) {
              sent += CHUNK;
              upstreamSent = sent;
              const more = sent < SIZE;
              const ok = more ? res.write(chunk) : (res.end(chunk), true);
              if (!ok) {
                res.once('drain', pump);
                return;
              }
            }
          };
          pump();
          return;
        }
        countingHandler(req, res);
      });
    });
    afterAll(async () => {
      await up?.close();
    });

    it('streams 100 MB up (content-length and chunked) and 100 MB down with exact byte counts, without holding a body, in bounded memory', async () => {
      const p = await startProcess(shopConfig({ blue: { weight: 1, endpoints: [up.address] } }));
      const samples: number[] = [];
      let timer: NodeJS.Timeout | undefined;
      try {
        // Warm up the paths (JIT, pools) before the baseline.
        for (let i = 0; i < 20; i++) {
          const r = await raw(`${p.url}/upload`, { method: 'POST', body: Buffer.alloc(64 * 1024, 1) });
          expect(r.json).toEqual({ bytes: 64 * 1024 });
        }
        const baseline = rssOf(p.pid);
        expect(baseline).toBeGreaterThan(0);
        timer = setInterval(() => {
          try {
            samples.push(rssOf(p.pid));
          } catch {
            /* process gone: the byte-count assertions will say why */
          }
        }, 50);

        // Streamed, not held: the upstream gets the first bytes while the client has sent
        // at most half of the body (and the client the first bytes of a download while the
        // upstream has written at most half).
        let clientSentAtUpstreamStart = -1;
        let upstreamSentAtClientStart = -1;
        const upload = async (chunked: boolean): Promise<Reply> => {
          const u = new URL(`${p.url}/upload`);
          const chunk = Buffer.alloc(CHUNK, 3);
          clientSentAtUpstreamStart = -1;
          const headers: Record<string, string> = chunked ? {} : { 'content-length': String(SIZE) };
          return new Promise<Reply>((resolve, reject) => {
            const req = http.request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers, agent: false }, (res) => {
              let text = '';
              res.setEncoding('utf8');
              res.on('data', (c: string) => (text += c));
              res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: JSON.parse(text) }));
              res.on('error', reject);
            });
            req.on('error', reject);
            pipeline(
              Readable.from(
                (function* () {
                  for (let sent = 0; sent < SIZE; sent += CHUNK) {
                    if (clientSentAtUpstreamStart === -1 && upstreamGot > 0) clientSentAtUpstreamStart = sent;
                    yield chunk;
                  }
                })(),
              ),
              req,
            ).catch(reject);
          });
        };

        const a = await upload(false);
        expect(a.status).toBe(200);
        expect(a.json).toEqual({ bytes: SIZE });
        expect(clientSentAtUpstreamStart, 'bytes the client had sent when the upstream got the first ones').toBeGreaterThan(-1);
        expect(clientSentAtUpstreamStart).toBeLessThan(SIZE / 2);
        const afterFirst = Math.max(...samples, rssOf(p.pid)) - baseline;
        const b = await upload(true);
        expect(b.status).toBe(200);
        expect(b.json).toEqual({ bytes: SIZE });
        expect(clientSentAtUpstreamStart).toBeGreaterThan(-1);
        expect(clientSentAtUpstreamStart).toBeLessThan(SIZE / 2);

        const down = await new Promise<{ status: number; bytes: number; wrong: number }>((resolve, reject) => {
          const u = new URL(`${p.url}/download`);
          http
            .get({ host: u.hostname, port: u.port, path: u.pathname, agent: false }, (res) => {
              let bytes = 0;
              let wrong = 0;
              res.on('data', (c: Buffer) => {
                if (upstreamSentAtClientStart === -1) upstreamSentAtClientStart = upstreamSent;
                bytes += c.length;
                if (c[0] !== 7 || c[c.length - 1] !== 7) wrong++;
              });
              res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, wrong }));
              res.on('error', reject);
            })
            .on('error', reject);
        });
        clearInterval(timer);
        samples.push(rssOf(p.pid));
        expect(down.status).toBe(200);
        expect(down.bytes).toBe(SIZE);
        expect(down.wrong).toBe(0);
        expect(upstreamSentAtClientStart).toBeLessThan(SIZE / 2);

        // Bounded: after the first 100 MB the RSS stays where it got to; 200 MB more
        // through the same process add next to nothing. How far the first transfer takes
        // it depends on the runtime, not on the body: the chunks read from the sockets
        // are dead once written, and V8 collects them when their external memory
        // reaches its limit (about 64 MB) — Node 20 collects sooner, Node 24 lets them
        // reach that limit (+50 and +75 MB measured for 100 MB, +77 MB for 400 MB).
        expect(samples.length).toBeGreaterThan(5);
        const growth = Math.max(...samples) - baseline;
        if (process.env.DEBUG_RSS) console.log(`RSS baseline ${(baseline / MB).toFixed(1)} MB, after the first 100 MB +${(afterFirst / MB).toFixed(1)} MB, after 300 MB +${(growth / MB).toFixed(1)} MB, ${samples.length} samples`);
        expect(growth - afterFirst, `gateway RSS grew by ${(afterFirst / MB).toFixed(1)} MB in the first 100 MB, then by ${((growth - afterFirst) / MB).toFixed(1)} MB in the next 200 MB`).toBeLessThan(24 * MB);
        expect(growth, 'gateway RSS growth stays below one body').toBeLessThan(SIZE);
      } finally {
        clearInterval(timer);
        await p.stop();
      }
    });
  });

  it('100 client aborts mid-response: every upstream response closes within 1 s, and no pool socket leaks', async () => {
    const closes = new Map<string, { at: number; ended: boolean }>();
    const up = await startUpstream('hold', (req, res) => {
      if (req.url === '/ok') {
        res.end('ok');
        return;
      }
      const id = String(req.headers['x-request-id']);
      res.on('close', () => closes.set(id, { at: Date.now(), ended: res.writableEnded }));
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first-chunk');
      // ...and hold: the rest never comes.
    });
    const g = await startInProcess(shopConfig({ blue: { weight: 1, endpoints: [up.address] } }));
    try {
      const abortedAt = new Map<string, number>();
      const u = new URL(g.url);
      const one = (i: number): Promise<void> =>
        new Promise((resolve, reject) => {
          const id = `abort-${i}`;
          const req = http.get({ host: u.hostname, port: u.port, path: '/hold', headers: { 'x-request-id': id }, agent: false }, (res) => {
            expect(res.statusCode).toBe(200);
            expect(res.headers['x-request-id']).toBe(id);
            res.once('data', (c: Buffer) => {
              expect(c.toString()).toContain('first');
              abortedAt.set(id, Date.now());
              req.destroy();
            });
          });
          req.on('close', () => (abortedAt.has(id) ? resolve() : reject(new Error(`${id} closed before its first chunk`))));
          req.on('error', () => {});
        });
      for (let batch = 0; batch < 4; batch++) {
        await Promise.all(Array.from({ length: 25 }, (_, k) => one(batch * 25 + k)));
      }
      expect(abortedAt.size).toBe(100);
      await waitFor(() => closes.size === 100, { timeout: 5000, message: `upstream closes: ${closes.size}/100` });
      const late: string[] = [];
      for (const [id, t] of abortedAt) {
        const c = closes.get(id);
        expect(c, id).toBeDefined();
        expect(c!.ended, `${id} response must not have ended`).toBe(false);
        if (c!.at - t > 1000) late.push(`${id}: ${c!.at - t} ms`);
      }
      expect(late).toEqual([]);

      const ep = g.gw.dataplane.endpointsOf('shop', 'blue')[0];
      // Nothing in flight, queued or running; every socket the pool keeps is idle, and
      // the upstream has no connection beyond those idle ones.
      await waitFor(
        async () => {
          const s = ep.pool.stats;
          const upConns = await connectionsOf(up.server);
          return s.running === 0 && s.pending === 0 && s.queued === 0 && s.connected === s.free && upConns <= s.free;
        },
        { timeout: 5000, message: `pool ${JSON.stringify(ep.pool.stats)}` },
      );
      expect(ep.inflight).toBe(0);
      expect(g.gw.dataplane.inflight()).toBe(0);
      // The pool is still usable.
      const r = await raw(`${g.url}/ok`);
      expect(r.status).toBe(200);
      expect(r.text).toBe('ok');
    } finally {
      await g.close();
      await up.close();
    }
  });

  it('hop-by-hop headers (and those named in Connection) are stripped both ways', async () => {
    const up = await startUpstream('hop', (req, res) => {
      req.resume();
      req.on('end', () => {
        res.setHeader('connection', 'keep-alive, x-resp-hop');
        res.setHeader('x-resp-hop', '1');
        res.setHeader('keep-alive', 'timeout=5, max=7');
        res.setHeader('proxy-authenticate', 'Basic realm="upstream"');
        res.setHeader('proxy-connection', 'keep-alive');
        res.setHeader('x-resp-keep', 'yes');
        res.setHeader('content-type', 'text/plain');
        res.end('hop');
      });
    });
    const g = await startInProcess(shopConfig({ blue: { weight: 1, endpoints: [up.address] } }));
    try {
      const r = await rawSocket(
        g.url,
        [
          'GET /hop HTTP/1.1',
          'Host: shop.example.com',
          'Connection: keep-alive, X-Custom-Hop',
          'X-Custom-Hop: 1',
          'Keep-Alive: timeout=30',
          'TE: gzip, trailers',
          'Proxy-Authorization: Basic Zm9vOmJhcg==',
          'Proxy-Connection: keep-alive',
          'Trailer: x-checksum',
          'Upgrade: h2c',
          'X-Keep: yes',
          '',
          '',
        ].join('\r\n'),
      );
      expect(r.status).toBe(200);
      expect(r.text).toBe('hop');
      expect(up.seen).toHaveLength(1);
      const h = up.seen[0].headers;
      expect(h['x-keep']).toBe('yes');
      for (const name of ['x-custom-hop', 'keep-alive', 'te', 'proxy-authorization', 'proxy-connection', 'trailer', 'upgrade']) {
        expect(h[name], `upstream saw ${name}`).toBeUndefined();
      }
      expect(String(h.connection ?? '').toLowerCase()).not.toContain('x-custom-hop');

      expect(r.headers['x-resp-keep']).toBe('yes');
      for (const name of ['x-resp-hop', 'proxy-authenticate', 'proxy-connection']) {
        expect(r.headers[name], `client saw ${name}`).toBeUndefined();
      }
      // The gateway may send its own Keep-Alive for its own connection, never the upstream's.
      expect(String(r.headers['keep-alive'] ?? '')).not.toContain('max=7');
      expect(String(r.headers.connection ?? '').toLowerCase()).not.toContain('x-resp-hop');
    } finally {
      await g.close();
      await up.close();
    }
  });

  it('sets x-forwarded-for/-proto/-host upstream; keeps or generates x-request-id and echoes it', async () => {
    const up = await startUpstream('fwd', (req, res, u) => {
      req.resume();
      req.on('end', () => {
        // The upstream's own x-request-id must not override the gateway's.
        res.writeHead(200, { 'content-type': 'text/plain', 'x-request-id': 'from-upstream' });
        res.end(String(u.seen.length));
      });
    });
    const g = await startInProcess(shopConfig({ blue: { weight: 1, endpoints: [up.address] } }));
    try {
      const a = await raw(`${g.url}/f`, { headers: { host: 'shop.example.com:8443', 'x-request-id': 'client-id-123', 'x-forwarded-proto': 'https' } });
      expect(a.status).toBe(200);
      const ha = up.seen[0].headers;
      expect(ha['x-forwarded-for']).toBe('127.0.0.1');
      // The gateway's listener is plain HTTP: a client cannot claim otherwise.
      expect(ha['x-forwarded-proto']).toBe('http');
      expect(ha['x-forwarded-host']).toBe('shop.example.com:8443');
      expect(ha.host).toBe('shop.example.com:8443');
      expect(ha['x-request-id']).toBe('client-id-123');
      expect(a.headers['x-request-id']).toBe('client-id-123');

      // An earlier hop's x-forwarded-for is appended to.
      const b = await raw(`${g.url}/f`, { headers: { 'x-forwarded-for': '203.0.113.9' } });
      expect(b.status).toBe(200);
      expect(up.seen[1].headers['x-forwarded-for']).toBe('203.0.113.9, 127.0.0.1');
      expect(up.seen[1].headers['x-forwarded-host']).toBe(new URL(g.url).host);

      // No id from the client: one is generated, the same upstream and in the response.
      const ids = new Set<string>();
      for (let i = 0; i < 5; i++) {
        const c = await raw(`${g.url}/f`);
        const sent = up.seen[2 + i].headers['x-request-id'];
        expect(typeof sent).toBe('string');
        expect((sent as string).length).toBeGreaterThan(0);
        expect(sent).not.toBe('from-upstream');
        expect(c.headers['x-request-id']).toBe(sent);
        ids.add(sent as string);
      }
      expect(ids.size).toBe(5);
    } finally {
      await g.close();
      await up.close();
    }
  });

  it('Expect: 100-continue: the client gets 100 Continue, then the body reaches the upstream', async () => {
    const up = await startUpstream('cont', countingHandler);
    const g = await startInProcess(shopConfig({ blue: { weight: 1, endpoints: [up.address] } }));
    try {
      const body = randomBytes(256 * 1024);
      const u = new URL(g.url);
      let continued = false;
      const r = await new Promise<Reply>((resolve, reject) => {
        const req = http.request(
          { host: u.hostname, port: u.port, path: '/upload', method: 'PUT', agent: false, headers: { expect: '100-continue', 'content-length': String(body.length) } },
          (res) => {
            let text = '';
            res.on('data', (c) => (text += c));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: JSON.parse(text) }));
          },
        );
        req.on('continue', () => {
          continued = true;
          req.end(body);
        });
        req.on('error', reject);
      });
      expect(continued).toBe(true);
      expect(r.status).toBe(200);
      expect(r.json).toEqual({ bytes: body.length });
      expect(up.seen).toHaveLength(1);
      expect(up.seen[0].headers['content-length']).toBe(String(body.length));
    } finally {
      await g.close();
      await up.close();
    }
  });

  describe('WebSocket', () => {
    let up: Upstream;
    let wss: WebSocketServer;
    const serverSockets: WebSocket[] = [];
    const serverCloses: { code: number; reason: string }[] = [];
    const upgradeHeaders: http.IncomingHttpHeaders[] = [];
    beforeAll(async () => {
      up = await startUpstream('ws');
      wss = new WebSocketServer({ server: up.server });
      wss.on('connection', (ws, req) => {
        upgradeHeaders.push(req.headers);
        serverSockets.push(ws);
        ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
        ws.on('close', (code, reason) => serverCloses.push({ code, reason: reason.toString() }));
      });
    });
    afterAll(async () => {
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((r) => wss.close(() => r()));
      await up.close();
    });

    const open = (url: string): Promise<{ ws: WebSocket; res: IncomingMessage }> =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(url);
        let res: IncomingMessage | undefined;
        ws.once('upgrade', (r) => (res = r));
        ws.once('open', () => resolve({ ws, res: res! }));
        ws.once('error', reject);
      });
    const nextMessage = (ws: WebSocket): Promise<{ data: Buffer; isBinary: boolean }> =>
      new Promise((resolve) => ws.once('message', (data: Buffer, isBinary: boolean) => resolve({ data, isBinary })));
    const closed = (ws: WebSocket): Promise<{ code: number; reason: string }> =>
      new Promise((resolve) => ws.once('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() })));

    it('echoes text and binary; a client close reaches the upstream, an upstream close reaches the client', async () => {
      const g = await startInProcess(shopConfig({ blue: { weight: 1, endpoints: [up.address] } }));
      try {
        const wsUrl = `${g.url.replace('http://', 'ws://')}/ws`;
        const { ws, res } = await open(wsUrl);
        expect(typeof res.headers['x-request-id']).toBe('string');
        expect(upgradeHeaders[0]['x-forwarded-for']).toBe('127.0.0.1');
        const m1 = nextMessage(ws);
        ws.send('hello through the gateway');
        const e1 = await m1;
        expect(e1.isBinary).toBe(false);
        expect(e1.data.toString()).toBe('hello through the gateway');
        const bin = randomBytes(200 * 1024);
        const m2 = nextMessage(ws);
        ws.send(bin);
        const e2 = await m2;
        expect(e2.isBinary).toBe(true);
        expect(Buffer.compare(e2.data, bin)).toBe(0);

        // Client-initiated close: the upstream sees the close frame.
        const clientSaw = closed(ws);
        ws.close(1000, 'client bye');
        await waitFor(() => serverCloses.length === 1, { timeout: 5000, message: 'upstream saw close' });
        expect(serverCloses[0]).toEqual({ code: 1000, reason: 'client bye' });
        expect((await clientSaw).code).toBe(1000);

        // Upstream-initiated close: the client sees it.
        const second = await open(wsUrl);
        await waitFor(() => serverSockets.length === 2);
        const m3 = nextMessage(second.ws);
        second.ws.send('ping');
        expect((await m3).data.toString()).toBe('ping');
        const seen = closed(second.ws);
        serverSockets[1].close(4001, 'server bye');
        expect(await seen).toEqual({ code: 4001, reason: 'server bye' });
        await waitFor(() => g.gw.gateway!.openTunnels === 0, { timeout: 5000, message: 'tunnels closed' });
      } finally {
        await g.close();
      }
    });
  });

  describe('gateway errors from real situations', () => {
    it('404 NO_ROUTE for an unknown host or path', async () => {
      const up = await startUpstream('r');
      const g = await startInProcess({
        ...shopConfig({ blue: { weight: 1, endpoints: [up.address] } }),
        services: { shop: { routes: [{ host: 'shop.example.com', path: '/shop' }], versions: { blue: { weight: 1, endpoints: [up.address] } } } },
      });
      try {
        expect((await raw(`${g.url}/shop/x`, { headers: { host: 'shop.example.com' } })).status).toBe(200);
        expectGatewayError(await raw(`${g.url}/shop/x`, { headers: { host: 'other.example.com' } }), 404, 'NO_ROUTE');
        expectGatewayError(await raw(`${g.url}/elsewhere`, { headers: { host: 'shop.example.com' } }), 404, 'NO_ROUTE');
        expect(up.seen).toHaveLength(1);
      } finally {
        await g.close();
        await up.close();
      }
    });

    it('400 BAD_REQUEST (JSON, with x-request-id) for an HTTP/1.1 request without Host', async () => {
      const up = await startUpstream('nohost');
      const g = await startInProcess(shopConfig({ blue: { weight: 1, endpoints: [up.address] } }));
      try {
        const r = await rawSocket(g.url, 'GET / HTTP/1.1\r\nX-Request-Id: no-host-1\r\n\r\n');
        expectGatewayError(r, 400, 'BAD_REQUEST');
        expect(r.headers['x-request-id']).toBe('no-host-1');
        // HTTP/1.0 needs no Host.
        const ok = await rawSocket(g.url, 'GET / HTTP/1.0\r\n\r\n');
        expect(ok.status).toBe(200);
        expect(up.seen).toHaveLength(1);
      } finally {
        await g.close();
        await up.close();
      }
    });

    it('502 UPSTREAM_ERROR when every endpoint is a port nobody listens on (retries cannot save it)', async () => {
      const g = await startInProcess(
        shopConfig(
          { blue: { weight: 1, endpoints: [await deadAddress(), await deadAddress()] } },
          { retries: { attempts: 2 }, outlierDetection: { consecutiveGatewayErrors: 0, consecutive5xx: 0 } },
        ),
      );
      try {
        for (let i = 0; i < 5; i++) expectGatewayError(await raw(`${g.url}/x`), 502, 'UPSTREAM_ERROR');
        const kept = await raw(`${g.url}/x`, { headers: { 'x-request-id': 'err-502' } });
        expectGatewayError(kept, 502, 'UPSTREAM_ERROR');
        expect(kept.headers['x-request-id']).toBe('err-502');
        // Both endpoints were tried.
        for (const e of g.gw.dataplane.endpointsOf('shop', 'blue')) expect(e.consecutiveGatewayErrors).toBeGreaterThan(0);
      } finally {
        await g.close();
      }
    });

    it('504 UPSTREAM_TIMEOUT from an upstream that accepts and never answers', async () => {
      const hung = await startUpstream('hung', () => {});
      const g = await startInProcess(shopConfig({ blue: { weight: 1, endpoints: [hung.address] } }, { timeouts: { request: '300ms' } }));
      try {
        expectGatewayError(await raw(`${g.url}/slow`), 504, 'UPSTREAM_TIMEOUT');
        // A timeout is not retried: the request may have reached the backend.
        expect(hung.seen).toHaveLength(1);
      } finally {
        await g.close();
        await hung.close();
      }
    });

    describe('413 BODY_TOO_LARGE (gateway.maxBodySize 1kb)', () => {
      let up: Upstream;
      let g: Awaited<ReturnType<typeof startInProcess>>;
      beforeAll(async () => {
        up = await startUpstream('small', countingHandler);
        g = await startInProcess(shopConfig({ blue: { weight: 1, endpoints: [up.address] } }, {}, { gateway: { maxBodySize: '1kb' } }));
      });
      afterAll(async () => {
        await g?.close();
        await up?.close();
      });

      it('a body within the limit passes (content-length and chunked)', async () => {
        const a = await raw(`${g.url}/u`, { method: 'POST', body: Buffer.alloc(1024, 1) });
        expect(a.json).toEqual({ bytes: 1024 });
        const b = await raw(`${g.url}/u`, { method: 'POST', headers: { 'transfer-encoding': 'chunked' }, body: [Buffer.alloc(500, 1), Buffer.alloc(524, 2)] });
        expect(b.json).toEqual({ bytes: 1024 });
      });

      it('with content-length: refused before anything reaches the upstream', async () => {
        const before = up.seen.length;
        const r = await raw(`${g.url}/u`, { method: 'POST', headers: { 'content-length': '2048' }, body: Buffer.alloc(2048, 1) });
        expectGatewayError(r, 413, 'BODY_TOO_LARGE');
        expect(up.seen.length).toBe(before);
      });

      it('chunked: cut off once the streamed body passes the limit', async () => {
        for (let i = 0; i < 5; i++) {
          const r = await raw(`${g.url}/u`, {
            method: 'POST',
            headers: { 'transfer-encoding': 'chunked', 'x-request-id': `chunked-${i}` },
            body: [Buffer.alloc(700, 1), Buffer.alloc(700, 2), Buffer.alloc(700, 3)],
          });
          expectGatewayError(r, 413, 'BODY_TOO_LARGE');
          expect(r.headers['x-request-id']).toBe(`chunked-${i}`);
        }
      });

      it('with Expect: 100-continue: refused without a 100 Continue', async () => {
        const u = new URL(g.url);
        let continued = false;
        const r = await new Promise<Reply>((resolve, reject) => {
          const req = http.request(
            { host: u.hostname, port: u.port, path: '/u', method: 'POST', agent: false, headers: { expect: '100-continue', 'content-length': String(10 * MB) } },
            (res) => {
              let text = '';
              res.on('data', (c) => (text += c));
              res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: JSON.parse(text) }));
            },
          );
          req.on('continue', () => (continued = true));
          req.on('error', reject);
          req.flushHeaders();
        });
        expectGatewayError(r, 413, 'BODY_TOO_LARGE');
        expect(continued).toBe(false);
      });
    });

    it('431 HEADERS_TOO_LARGE for a header over gateway.maxHeaderSize, and for too many header fields', async () => {
      const up = await startUpstream('hdr');
      const g = await startInProcess(shopConfig({ blue: { weight: 1, endpoints: [up.address] } }, {}, { gateway: { maxHeaderSize: '2kb', maxHeaderCount: 20 } }));
      try {
        expect((await raw(`${g.url}/h`, { headers: { 'x-small': 'a'.repeat(500) } })).status).toBe(200);
        expectGatewayError(await raw(`${g.url}/h`, { headers: { 'x-big': 'a'.repeat(8 * 1024) } }), 431, 'HEADERS_TOO_LARGE');
        const many: Record<string, string> = {};
        for (let i = 0; i < 30; i++) many[`x-h-${i}`] = String(i);
        // Node keeps only the first fields past the limit: the id goes first.
        const r = await raw(`${g.url}/h`, { headers: { 'x-request-id': 'too-many', ...many } });
        expectGatewayError(r, 431, 'HEADERS_TOO_LARGE');
        expect(r.headers['x-request-id']).toBe('too-many');
        expect(up.seen).toHaveLength(1);
      } finally {
        await g.close();
        await up.close();
      }
    });
  });

  describe('retries', () => {
    it('GETs succeed when one of two endpoints is a dead port (retried on the other)', async () => {
      const live = await startUpstream('live');
      const g = await startInProcess(
        shopConfig(
          { blue: { weight: 1, endpoints: [await deadAddress(), live.address] } },
          // No ejection: every request keeps having a chance to pick the dead endpoint.
          { retries: { attempts: 1 }, outlierDetection: { consecutiveGatewayErrors: 0, consecutive5xx: 0 } },
        ),
      );
      try {
        const r = await load(`${g.url}/r`, { concurrency: 10, count: 300, ok: (s) => s === 200 });
        expect(r.failed, r.errors.join('\n')).toBe(0);
        expect(r.byName.live).toBe(300);
        expect(live.seen).toHaveLength(300);
        const dead = g.gw.dataplane.endpointsOf('shop', 'blue').find((e) => e.id !== live.address)!;
        // The dead endpoint was picked (and failed) along the way: the retries did the work.
        expect(dead.consecutiveGatewayErrors).toBeGreaterThan(0);
      } finally {
        await g.close();
        await live.close();
      }
    });

    it.each([
      ['resets', 502, 'UPSTREAM_ERROR'],
      ['hangs', 504, 'UPSTREAM_TIMEOUT'],
    ] as const)('a POST with a body to an endpoint that %s is not retried', async (kind, status, code) => {
      const bad = (req: IncomingMessage): void => {
        if (kind === 'resets') req.once('data', () => req.socket.destroy());
        else req.resume();
      };
      const a = await startUpstream('a', bad);
      const b = await startUpstream('b', bad);
      const g = await startInProcess(
        shopConfig(
          { blue: { weight: 1, endpoints: [a.address, b.address] } },
          { retries: { attempts: 3 }, timeouts: { request: '300ms' }, outlierDetection: { consecutiveGatewayErrors: 0, consecutive5xx: 0 } },
        ),
      );
      try {
        // With a Content-Length body, then a chunked one.
        for (const chunked of [false, true]) {
          const before = a.seen.length + b.seen.length;
          const headers: Record<string, string> = { 'content-type': 'application/json', ...(chunked ? { 'transfer-encoding': 'chunked' } : {}) };
          const r = await raw(`${g.url}/order`, { method: 'POST', headers, body: Buffer.from(JSON.stringify({ item: 42 })) });
          expectGatewayError(r, status, code);
          expect(a.seen.length + b.seen.length - before, chunked ? 'chunked' : 'content-length').toBe(1);
        }
      } finally {
        await g.close();
        await a.close();
        await b.close();
      }
    });
  });

  it('a client that disconnects during an upload aborts the upstream request', async () => {
    let received = 0;
    const ends: { complete: boolean; aborted: boolean }[] = [];
    const up = await startUpstream('upl', (req, res) => {
      let aborted = false;
      req.on('data', (c: Buffer) => (received += c.length));
      req.on('aborted', () => (aborted = true));
      req.on('close', () => ends.push({ complete: req.complete, aborted }));
      req.on('end', () => res.end('done'));
    });
    const g = await startInProcess(shopConfig({ blue: { weight: 1, endpoints: [up.address] } }));
    try {
      const u = new URL(g.url);
      const req = http.request({ host: u.hostname, port: u.port, path: '/upload', method: 'POST', agent: false, headers: { 'content-length': String(50 * MB) } });
      req.on('error', () => {});
      const chunk = Buffer.alloc(64 * 1024, 5);
      let stopped = false;
      const write = (): void => {
        while (!stopped && req.write(chunk)) {
          /* until backpressure */
        }
        if (!stopped) req.once('drain', write);
      };
      write();
      await waitFor(() => received >= MB, { timeout: 10_000, message: `upstream received ${received}` });
      stopped = true;
      req.destroy();
      await waitFor(() => ends.length === 1, { timeout: 5000, message: 'upstream request closed' });
      expect(ends[0].complete).toBe(false);
      expect(received).toBeLessThan(50 * MB);
      const ep = g.gw.dataplane.endpointsOf('shop', 'blue')[0];
      await waitFor(() => ep.inflight === 0 && ep.pool.stats.running === 0 && ep.pool.stats.pending === 0, {
        timeout: 5000,
        message: `pool ${JSON.stringify(ep.pool.stats)}`,
      });
      expect(g.gw.dataplane.inflight()).toBe(0);
      expect(up.seen).toHaveLength(1);
    } finally {
      await g.close();
      await up.close();
    }
  });
  it('a client that leaves before the upstream answers its upgrade leaves no tunnel or upstream socket behind', async () => {
    const upstreamSockets = new Set<import('node:stream').Duplex>();
    const clients: import('node:net').Socket[] = [];
    let seen = 0;
    const be = http.createServer();
    be.on('upgrade', (req, sock) => {
      seen++;
      upstreamSockets.add(sock);
      const gone = (): void => void upstreamSockets.delete(sock);
      sock.on('close', gone);
      sock.on('end', gone);
      sock.on('error', gone);
      // The client leaves once its upgrade reached the upstream (not after a fixed time,
      // which a loaded gateway may not have forwarded it in), before the answer.
      clients[Number(req.headers['x-client'])]?.destroy();
      setTimeout(() => {
        if (!sock.destroyed) sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      }, 300);
    });
    await new Promise<void>((r) => be.listen(0, '127.0.0.1', r));
    const g = await startInProcess(shopConfig({ blue: { weight: 1, endpoints: [`127.0.0.1:${(be.address() as { port: number }).port}`] } }));
    try {
      for (let i = 0; i < 20; i++) {
        const c = connect((g.gw.addresses.gateway as { port: number }).port, '127.0.0.1', () => {
          c.write(`GET /ws HTTP/1.1\r\nHost: x\r\nX-Client: ${i}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
        });
        c.on('error', () => {});
        clients[i] = c;
      }
      await waitFor(() => seen === 20, { timeout: 5000, message: 'every upgrade reached the upstream' });
      // Every tunnel and upstream socket goes away (the 101s come after the clients left).
      await waitFor(() => g.gw.gateway!.openTunnels === 0 && upstreamSockets.size === 0, { timeout: 5000, message: 'no tunnel or upstream socket left' });
      // And none comes back once the upstreams' late 101s are all in.
      await new Promise((r) => setTimeout(r, 400));
      expect(g.gw.gateway!.openTunnels).toBe(0);
      expect(upstreamSockets.size).toBe(0);
    } finally {
      for (const c of clients) c.destroy();
      await g.close();
      be.close();
      be.closeAllConnections();
    }
  });


});

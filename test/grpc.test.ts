// gRPC and HTTP/2 upstreams (services.NAME.protocol h2c / h2): real @grpc/grpc-js
// servers behind the gateway, real grpc-js clients in front of it — over the plain
// listener (HTTP/2 prior knowledge) and over the TLS listener (ALPN h2).

import { afterEach, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import http from 'node:http';
import http2 from 'node:http2';
import { connect } from 'node:net';
import { request } from 'undici';
import { makeCa } from './certs.js';
import { api, controlTop, TOKENS } from './control-helpers.js';
import { shopConfig, startInProcess, startProcess, waitFor, type InProcessGateway } from './helpers.js';
import { echoClient, grpc, spawnGrpcUpstream, startGrpcUpstream, unary, unaryLoad, type GrpcUpstream, type Reply } from './grpc-helpers.js';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

async function upstream(name: string, opts: Parameters<typeof startGrpcUpstream>[1] = {}): Promise<GrpcUpstream> {
  const up = await startGrpcUpstream(name, opts);
  cleanup.push(() => up.close());
  return up;
}

async function gateway(config: object, files?: Record<string, string>): Promise<InProcessGateway> {
  const gw = await startInProcess(config, { files });
  cleanup.push(() => gw.close());
  return gw;
}

/** A plain HTTP/1.1 upstream answering 200 text/plain. */
async function startUpstreamHttp1(): Promise<{ address: string }> {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.end('plain'));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.push(() => new Promise<void>((r) => {
    server.close(() => r());
    server.closeAllConnections();
  }));
  return { address: `127.0.0.1:${(server.address() as { port: number }).port}` };
}

function client(gw: InProcessGateway, opts: { ca?: string; servername?: string } = {}): ReturnType<typeof echoClient> {
  const c = echoClient(gw.url.replace('http://', ''), opts);
  cleanup.push(() => c.close());
  return c;
}

describe('gRPC unary through the gateway', () => {
  it('splits calls by weight between blue and green over h2c, from a client using HTTP/2 prior knowledge on the plain listener', async () => {
    const blue = await upstream('blue');
    const green = await upstream('green');
    const gw = await gateway(shopConfig({ blue: { weight: 80, endpoints: [blue.address] }, green: { weight: 20, endpoints: [green.address] } }, { protocol: 'h2c' }));
    const c = client(gw);
    const seen: Record<string, number> = {};
    for (let i = 0; i < 400; i++) {
      const r = await unary(c, `hi ${i}`);
      expect(r.code).toBe(0);
      expect(r.reply?.message).toBe(`hi ${i}`);
      seen[r.reply!.server] = (seen[r.reply!.server] ?? 0) + 1;
    }
    // 80/20 of 400: binomial σ = 8; 6σ bounds.
    expect(seen.green).toBeGreaterThan(80 - 48);
    expect(seen.green).toBeLessThan(80 + 48);
    expect(seen.blue + seen.green).toBe(400);
    // HTTP/1.1 on the same port is unaffected: a plain GET goes through (over HTTP/2
    // to the gRPC server, which refuses a non-gRPC content type with 415).
    const res = await request(`${gw.url}/x`, { method: 'GET' });
    expect(res.statusCode).toBe(415);
    expect(res.headers['x-request-id']).toBeDefined();
    await res.body.dump();
  });

  it('splits calls by weight over TLS: client on the TLS listener (ALPN h2), endpoints over h2 with the version\'s CA', async () => {
    const pki = makeCa();
    const upCert = pki.issue('upstream', 'grpc.internal', ['grpc.internal']);
    const gwCert = pki.issue('gateway', 'shop.test', ['shop.test']);
    const blue = await upstream('blue', { tls: { cert: readFileSync(upCert.cert, 'utf8'), key: readFileSync(upCert.key, 'utf8') } });
    const green = await upstream('green', { tls: { cert: readFileSync(upCert.cert, 'utf8'), key: readFileSync(upCert.key, 'utf8') } });
    const tls = { ca: join(pki.dir, 'ca.crt'), servername: 'grpc.internal' };
    const gw = await gateway(
      shopConfig(
        { blue: { weight: 50, endpoints: [`https://${blue.address}`], tls } as never, green: { weight: 50, endpoints: [`https://${green.address}`], tls } as never },
        { protocol: 'h2' },
        { gateway: { listen: '127.0.0.1:0', tls: { certificates: [{ cert: gwCert.cert, key: gwCert.key }], watch: false } } },
      ),
    );
    const c = client(gw, { ca: pki.ca, servername: 'shop.test' });
    const seen: Record<string, number> = {};
    for (let i = 0; i < 200; i++) {
      const r = await unary(c, `tls ${i}`);
      expect(r.code).toBe(0);
      seen[r.reply!.server] = (seen[r.reply!.server] ?? 0) + 1;
    }
    // 50/50 of 200: σ ≈ 7; 6σ bounds.
    expect(seen.blue).toBeGreaterThan(100 - 42);
    expect(seen.green).toBeGreaterThan(100 - 42);
    // Many calls, few sessions: streams are multiplexed.
    const eps = gw.gw.dataplane.endpointsOf('shop', 'blue');
    expect(eps[0].h2?.sessionCount).toBe(1);
  });

  it('a sticky header keeps a caller on one version; the override header reaches green at weight 0', async () => {
    const blue = await upstream('blue');
    const green = await upstream('green');
    const gw = await gateway(
      shopConfig({ blue: { weight: 50, endpoints: [blue.address] }, green: { weight: 50, endpoints: [green.address] } }, { protocol: 'h2c', sticky: { header: 'x-user' }, override: { header: 'x-version' } }),
    );
    const c = client(gw);
    for (const user of ['ann', 'bob', 'cyd', 'dan', 'eve', 'fay']) {
      const first = await unary(c, 'x', { 'x-user': user });
      for (let i = 0; i < 10; i++) expect((await unary(c, 'x', { 'x-user': user })).reply?.server).toBe(first.reply?.server);
    }
    await fetchJson(`${gw.controlUrl}/v1/services/shop/weights`, 'PUT', { weights: { blue: 100, green: 0 } });
    for (let i = 0; i < 20; i++) expect((await unary(c, 'x')).reply?.server).toBe('blue');
    for (let i = 0; i < 5; i++) expect((await unary(c, 'x', { 'x-version': 'green' })).reply?.server).toBe('green');
  });
});

describe('gRPC streaming through the gateway', () => {
  it('server-streams 10,000 messages intact, with headers metadata and trailers; a bidirectional stream keeps order and trailers', async () => {
    const blue = await upstream('blue');
    const gw = await gateway(shopConfig({ blue: { weight: 100, endpoints: [blue.address] } }, { protocol: 'h2c' }));
    const c = client(gw);
    const got: Reply[] = [];
    const { meta, status } = await new Promise<{ meta: grpc.Metadata; status: grpc.StatusObject }>((res, rej) => {
      let meta: grpc.Metadata | undefined;
      const call = c.ServerStream({ count: 10_000, interval_ms: 0 });
      call.on('metadata', (m: grpc.Metadata) => (meta = m));
      call.on('data', (r: Reply) => got.push(r));
      call.on('error', rej);
      call.on('status', (s: grpc.StatusObject) => res({ meta: meta!, status: s }));
    });
    expect(status.code).toBe(0);
    expect(meta.get('x-stream-from')).toEqual(['blue']);
    expect(status.metadata.get('x-sent')).toEqual(['10000']);
    expect(got.length).toBe(10_000);
    expect(got.every((r, i) => r.seq === i && r.message === `m${i}`)).toBe(true);

    const bidi = c.Bidi();
    const echoes: Reply[] = [];
    bidi.on('data', (r: Reply) => echoes.push(r));
    const bstatus = new Promise<grpc.StatusObject>((res) => bidi.on('status', res));
    bidi.on('error', () => {});
    // Interleaved: each answer arrives before the next message is sent.
    for (let i = 0; i < 50; i++) {
      bidi.write({ message: `word${i}` });
      await waitFor(() => echoes.length === i + 1);
    }
    bidi.end();
    const bs = await bstatus;
    expect(bs.code).toBe(0);
    expect(bs.metadata.get('x-count')).toEqual(['50']);
    expect(echoes.map((e) => e.message)).toEqual(Array.from({ length: 50 }, (_, i) => `WORD${i}`));
  });

  it('flow control end to end: a client that stops reading stops the server, whose stream is not buffered by the gateway', async () => {
    const blue = await upstream('blue');
    const gw = await gateway(shopConfig({ blue: { weight: 100, endpoints: [blue.address] } }, { protocol: 'h2c' }));
    const c = client(gw);
    // 20 MB in 20,000 messages of 1 KB.
    const total = 20_000;
    let received = 0;
    const call = c.ServerStream({ count: total, interval_ms: 0, pad: 1000 });
    call.on('error', () => {});
    call.on('data', () => {
      received++;
      if (received === 1000) call.pause();
    });
    // The server is held by backpressure: its writes wait for 'drain' long before the end.
    await waitFor(() => received >= 1000 && blue.streamBlocked, { timeout: 10_000 });
    // What is in flight is bounded by the HTTP/2 windows and socket buffers of the hops
    // (a few MB at most), not by the 20 MB of the stream.
    const sentWhilePaused = blue.streamSent;
    expect(sentWhilePaused).toBeLessThan(total / 4);
    // Reading again lets it run to the end, every message in order.
    call.resume();
    const st = await new Promise<grpc.StatusObject>((res) => call.on('status', res));
    expect(st.code).toBe(0);
    expect(received).toBe(total);
    expect(blue.streamSent).toBe(total);
  });

  it('an upstream that dies mid-stream: the client gets UNAVAILABLE in the trailers after the messages it had, not a reset', async () => {
    const blue = await upstream('blue');
    const gw = await gateway(shopConfig({ blue: { weight: 100, endpoints: [blue.address] } }, { protocol: 'h2c' }));
    const c = client(gw);
    let n = 0;
    const call = c.ServerStream({ count: 1000, interval_ms: 20 });
    call.on('data', () => n++);
    call.on('error', () => {});
    const status = new Promise<grpc.StatusObject>((res) => call.on('status', res));
    await waitFor(() => n >= 5);
    blue.server.forceShutdown();
    const st = await status;
    expect(st.code).toBe(grpc.status.UNAVAILABLE);
    expect(st.details).toMatch(/^UPSTREAM_ERROR: /);
    expect(n).toBeGreaterThanOrEqual(5);
    expect(n).toBeLessThan(1000);
  });

  it('answers its own errors as gRPC errors (HTTP 200, grpc-status, grpc-message) and labels metrics with grpc_status', async () => {
    const blue = await upstream('blue');
    blue.failRate = 1;
    const gw = await gateway(shopConfig({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: ['127.0.0.1:1'] } }, { protocol: 'h2c', override: { header: 'x-version' } }));
    const c = client(gw);
    const r = await unary(c, 'x');
    expect(r.code).toBe(grpc.status.UNAVAILABLE);
    expect(r.details).toBe('blue is failing');
    // Green's endpoint refuses connections: the gateway's error, as gRPC.
    const g = await unary(c, 'x', { 'x-version': 'green' });
    expect(g.code).toBe(grpc.status.UNAVAILABLE);
    expect(g.details).toMatch(/^UPSTREAM_ERROR: upstream connect failed/);
    const metrics = await (await request(`${gw.adminUrl}/metrics`)).body.text();
    expect(metrics).toMatch(/switchyard_requests_total\{service="shop",version="blue",code="2xx",grpc_status="14"\} 1/);
    expect(metrics).toMatch(/switchyard_requests_total\{service="shop",version="green",code="5xx",grpc_status="14"\} 1/);
    blue.failRate = 0;
    expect((await unary(c, 'x')).code).toBe(0);
    const after = await (await request(`${gw.adminUrl}/metrics`)).body.text();
    expect(after).toMatch(/switchyard_requests_total\{service="shop",version="blue",code="2xx",grpc_status="0"\} 1/);
    // The mixed label sets (HTTP requests without grpc_status) still pass promtool.
    const check = await new Promise<{ code: number; out: string }>((res) => {
      const p = execFile('promtool', ['check', 'metrics'], (err, stdout, stderr) => res({ code: err ? 1 : 0, out: stdout + stderr }));
      p.stdin!.end(after);
    });
    expect(check.out.split('\n').filter((l) => /error|invalid/i.test(l))).toEqual([]);
    // The window of the version counts the UNAVAILABLE call as an error, the OK one not.
    expect(gw.gw.dataplane.statsOf('shop', 'blue').window.summary(Date.now() - 60_000)).toMatchObject({ requests: 2, errors: 1 });
  });
});

describe('hostile clients on HTTP/2 upstreams', () => {
  // A plain HTTP/2 (h2c) upstream, not a gRPC server: it answers 200 text/plain with what it saw.
  async function h2cEcho(): Promise<{ address: string; seen: http2.IncomingHttpHeaders[]; sessions: number }> {
    const up = { address: '', seen: [] as http2.IncomingHttpHeaders[], sessions: 0 };
    const server = http2.createServer();
    server.on('session', () => up.sessions++);
    server.on('stream', (stream, headers) => {
      up.seen.push(headers);
      stream.resume();
      stream.on('end', () => {
        stream.respond({ ':status': 200, 'content-type': 'text/plain' });
        stream.end('plain');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    up.address = `127.0.0.1:${(server.address() as { port: number }).port}`;
    cleanup.push(() => new Promise<void>((r) => server.close(() => r())));
    return up;
  }
  // Any failure blamed on the endpoint would eject it at once.
  const hairTrigger = { outlierDetection: { consecutive5xx: 1, consecutiveGatewayErrors: 1, maxEjectionPercent: 100, baseEjectionTime: '60s' } };

  it('a repeated single-value header (two User-Agent) is folded and forwarded: no session retired, nothing blamed on the endpoint', async () => {
    const up = await h2cEcho();
    const gw = await gateway(shopConfig({ blue: { weight: 100, endpoints: [up.address] } }, { protocol: 'h2c', ...hairTrigger }));
    const port = Number(new URL(gw.url).port);
    for (let i = 0; i < 3; i++) {
      const head = await new Promise<string>((resolve, reject) => {
        const sock = connect(port, '127.0.0.1', () => sock.write('GET /ua HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: a\r\nUser-Agent: b\r\nContent-Type: text/plain\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n'));
        let buf = '';
        sock.on('data', (d: Buffer) => (buf += d.toString('latin1')));
        sock.on('end', () => resolve(buf));
        sock.on('error', reject);
      });
      expect(head).toMatch(/^HTTP\/1\.1 200/);
    }
    expect(up.seen).toHaveLength(3);
    expect(up.seen[0]['user-agent']).toBe('a, b');
    expect(up.sessions).toBe(1);
    const ep = gw.gw.dataplane.endpointsOf('shop', 'blue')[0];
    expect(ep.state).toBe('healthy');
    expect(gw.gw.dataplane.statsOf('shop', 'blue').window.summary(Date.now() - 60_000)).toMatchObject({ requests: 3, errors: 0 });
  });

  it("a client's content-type application/grpc alone makes no error: a plain 200 answer counts as a success (HTTP/2 upstream), and an HTTP/1.1 service never reads grpc-status", async () => {
    const up = await h2cEcho();
    const plain = await startUpstreamHttp1();
    const gw = await gateway({
      ...shopConfig({ blue: { weight: 100, endpoints: [up.address] } }, { protocol: 'h2c', ...hairTrigger }),
    });
    const gw1 = await gateway(shopConfig({ blue: { weight: 100, endpoints: [plain.address] } }, hairTrigger));
    for (const g of [gw, gw1]) {
      const session = http2.connect(g.url);
      cleanup.push(() => void session.close());
      for (let i = 0; i < 3; i++) {
        const status = await new Promise<number>((resolve, reject) => {
          const st = session.request({ ':method': 'POST', ':path': '/x', 'content-type': 'application/grpc', te: 'trailers' });
          let code = 0;
          st.on('response', (h) => (code = Number(h[':status'])));
          st.resume();
          st.on('end', () => resolve(code));
          st.on('error', reject);
          st.end(Buffer.from([0, 0, 0, 0, 0]));
        });
        expect(status).toBe(200);
      }
      expect(g.gw.dataplane.statsOf('shop', 'blue').window.summary(Date.now() - 60_000)).toMatchObject({ requests: 3, errors: 0 });
      const metrics = await (await request(`${g.adminUrl}/metrics`)).body.text();
      expect(metrics).not.toMatch(/grpc_status=/);
      expect(g.gw.dataplane.endpointsOf('shop', 'blue')[0].state).toBe('healthy');
    }
  });
});

describe('upstream HTTP/2 sessions', () => {
  it("respects the peer's max concurrent streams: a full session makes the gateway open another; every stream ends whole", async () => {
    const blue = await upstream('blue', { options: { 'grpc.max_concurrent_streams': 2 } });
    const gw = await gateway(shopConfig({ blue: { weight: 100, endpoints: [blue.address] } }, { protocol: 'h2c' }));
    const c = client(gw);
    const streams = Array.from(
      { length: 6 },
      () =>
        new Promise<{ n: number; code: number }>((res) => {
          let n = 0;
          const call = c.ServerStream({ count: 10, interval_ms: 50 });
          call.on('data', () => n++);
          call.on('error', () => {});
          call.on('status', (st: grpc.StatusObject) => res({ n, code: st.code }));
        }),
    );
    await waitFor(() => blue.openStreams === 6, { timeout: 5000 });
    const up = gw.gw.dataplane.endpointsOf('shop', 'blue')[0].h2!;
    expect(up.sessionCount).toBe(3);
    expect(up.openStreams).toBe(6);
    expect(await Promise.all(streams)).toEqual(Array.from({ length: 6 }, () => ({ n: 10, code: 0 })));
  });

  it('an upstream GOAWAY (graceful server shutdown): its open stream finishes, new calls go elsewhere, none fails', async () => {
    const b1 = await upstream('b1');
    const b2 = await upstream('b2');
    const gw = await gateway(shopConfig({ blue: { weight: 100, endpoints: [b1.address, b2.address] } }, { protocol: 'h2c' }));
    const c = client(gw);
    // A stream on b1 (sticky by luck: retry until one lands there).
    let stream: Promise<{ n: number; code: number; server?: string }> | undefined;
    while (stream === undefined) {
      const p = new Promise<{ n: number; code: number; server?: string }>((res) => {
        let n = 0;
        let server: string | undefined;
        const call = c.ServerStream({ count: 30, interval_ms: 50 });
        call.on('data', (r: Reply) => {
          n++;
          server = r.server;
        });
        call.on('error', () => {});
        call.on('status', (st: grpc.StatusObject) => res({ n, code: st.code, server }));
      });
      await waitFor(() => b1.openStreams + b2.openStreams === 1);
      if (b1.openStreams === 1) stream = p;
      else await p;
    }
    const load = unaryLoad(c, 4);
    cleanup.push(() => void load.stop());
    await waitFor(() => load.records.length > 20);
    // grpc-js: GOAWAY to its sessions, then close when their streams are done.
    const shut = new Promise<void>((res) => b1.server.tryShutdown(() => res()));
    const atShutdown = load.records.length;
    await waitFor(() => load.records.length > atShutdown + 100, { timeout: 10_000 });
    expect(await stream).toEqual({ n: 30, code: 0, server: 'b1' });
    await shut;
    const records = await load.stop();
    expect(records.filter((r) => r.code !== 0)).toEqual([]);
    expect(records.slice(-50).every((r) => r.server === 'b2')).toBe(true);
  });
});

describe('gRPC calls refused by an upstream', () => {
  it.each([
    ['before its body arrived', 0],
    ['after its first chunk', 1],
  ])('a stream refused (REFUSED_STREAM) %s is sent again to the other endpoint with its whole body, each chunk read once from the client', async (_, refuseAfter) => {
    // Two plain h2c servers; the first stream either gets is refused (at once, or when
    // its first chunk came), every later one is answered with the bytes it received (as
    // one gRPC-shaped reply with trailers).
    const state = { refused: 0, accepted: 0, received: [] as Buffer[] };
    const addresses: string[] = [];
    for (let n = 0; n < 2; n++) {
      const server = http2.createServer();
      server.on('stream', (stream) => {
        if (state.refused === 0) {
          stream.on('error', () => {}); // a stream closed with an error code emits it
          const refuse = (): void => {
            state.refused++;
            stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
          };
          if (refuseAfter === 0) refuse();
          else stream.once('data', refuse);
          return;
        }
        state.accepted++;
        stream.on('data', (d: Buffer) => state.received.push(d));
        stream.on('end', () => {
          stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
          stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
          stream.end(Buffer.concat(state.received));
        });
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      addresses.push(`127.0.0.1:${(server.address() as { port: number }).port}`);
      cleanup.push(() => new Promise<void>((r) => server.close(() => r())));
    }
    const gw = await gateway(shopConfig({ blue: { weight: 100, endpoints: addresses } }, { protocol: 'h2c' }));
    const session = http2.connect(gw.url);
    cleanup.push(() => void session.close());
    const call = session.request({ ':method': 'POST', ':path': '/echo.Echo/Unary', 'content-type': 'application/grpc', te: 'trailers' });
    const answer = new Promise<{ status: number; body: Buffer; trailers: http2.IncomingHttpHeaders }>((resolve, reject) => {
      let status = 0;
      const body: Buffer[] = [];
      call.on('response', (h) => (status = Number(h[':status'])));
      call.on('data', (d: Buffer) => body.push(d));
      call.on('trailers', (trailers) => call.on('end', () => resolve({ status, body: Buffer.concat(body), trailers })));
      call.on('error', reject);
    });
    const chunks = ['first chunk,', 'second chunk,', 'third chunk'].map((c) => Buffer.from(c));
    let sent = 0;
    for (const [i, c] of chunks.entries()) {
      // The gateway has been refused and sent the call on before the client's next
      // chunk: the second attempt starts with what the first one had read.
      if (i === refuseAfter) await waitFor(() => state.refused === 1 && state.accepted === 1);
      call.write(c);
      sent += c.length;
      if (i >= refuseAfter) await waitFor(() => Buffer.concat(state.received).length === sent, { timeout: 5000 });
    }
    call.end();
    const a = await answer;
    expect(a.status).toBe(200);
    expect(a.trailers['grpc-status']).toBe('0');
    expect(a.body.toString()).toBe('first chunk,second chunk,third chunk');
    expect(state).toMatchObject({ refused: 1, accepted: 1 });
  });
});

describe('gRPC calls cut by an upstream that may have run them', () => {
  it('a GOAWAY whose error code is REFUSED_STREAM, sent after the upstream took the call and its body, is no refusal: the call is not sent again', async () => {
    const state = { first: 0, other: 0 };
    const addresses: string[] = [];
    for (let n = 0; n < 2; n++) {
      const server = http2.createServer();
      server.on('stream', (stream) => {
        stream.on('error', () => {});
        if (state.first === 0) {
          state.first++;
          // The call was taken (its stream id is the GOAWAY's last) and its body read:
          // it may have run. The session ends with error code 7.
          stream.once('data', () => stream.session?.goaway(http2.constants.NGHTTP2_REFUSED_STREAM, stream.id));
          return;
        }
        state.other++;
        stream.resume();
        stream.on('end', () => {
          stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
          stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
          stream.end();
        });
      });
      server.on('session', (session) => session.on('error', () => {}));
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      addresses.push(`127.0.0.1:${(server.address() as { port: number }).port}`);
      cleanup.push(() => new Promise<void>((r) => {
        server.close(() => r());
      }));
    }
    const gw = await gateway(shopConfig({ blue: { weight: 100, endpoints: addresses } }, { protocol: 'h2c' }));
    const session = http2.connect(gw.url);
    cleanup.push(() => void session.close());
    const answer = await new Promise<{ status: number; grpcStatus: string | undefined }>((resolve, reject) => {
      const call = session.request({ ':method': 'POST', ':path': '/echo.Echo/Unary', 'content-type': 'application/grpc', te: 'trailers' });
      let status = 0;
      let grpcStatus: string | undefined;
      call.on('response', (h) => {
        status = Number(h[':status']);
        grpcStatus ??= h['grpc-status'] as string | undefined;
      });
      call.on('trailers', (t) => (grpcStatus = t['grpc-status'] as string | undefined));
      call.resume();
      call.on('end', () => resolve({ status, grpcStatus }));
      call.on('error', reject);
      call.end(Buffer.from([0, 0, 0, 0, 1, 0x2a]));
    });
    expect(state).toEqual({ first: 1, other: 0 });
    expect(answer.status).toBe(200);
    expect(answer.grpcStatus).toBe('14');
  });
});

describe('gRPC shadow traffic', () => {
  it("compares a copy's grpc-status with the served call's: UNAVAILABLE copies of OK calls are status differences, not matches", async () => {
    const blue = await upstream('blue');
    const green = await upstream('green');
    green.failRate = 1;
    const gw = await gateway(
      shopConfig(
        { blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } },
        // compare: false — the replies name their server, so only the outcome is compared.
        { protocol: 'h2c', mirror: { to: 'green', percent: 100, methods: ['POST'], compare: false } },
        controlTop(),
      ),
    );
    const c = client(gw);
    const state = async (n: number): Promise<{ counts: Record<string, number>; samples: { where: string; served: { status: number }; mirror: { status: number } }[] }> =>
      waitFor(async () => {
        const r = await api(gw.controlUrl, 'GET', '/v1/services/shop/mirror', { token: TOKENS.read });
        const counts = r.json.counts as Record<string, number>;
        return counts.match + counts.status_diff + counts.body_diff + counts.error === n ? r.json : undefined;
      });
    for (let i = 0; i < 5; i++) expect((await unary(c, `m${i}`)).code).toBe(0);
    const failing = await state(5);
    expect(failing.counts).toMatchObject({ match: 0, status_diff: 5, body_diff: 0, error: 0 });
    expect(failing.samples[0]).toMatchObject({ where: 'grpc-status 0 vs 14', served: { status: 200 }, mirror: { status: 200 } });
    green.failRate = 0;
    for (let i = 0; i < 5; i++) expect((await unary(c, `m${i}`)).code).toBe(0);
    expect((await state(10)).counts).toMatchObject({ match: 5, status_diff: 5 });
    // The copies never reached the client: blue served every call.
    expect(blue.calls).toBe(10);
  });
});

describe('gRPC health probes', () => {
  it('healthCheck.type grpc calls grpc.health.v1.Health/Check: NOT_SERVING takes an endpoint out, SERVING brings it back', async () => {
    const blue = await upstream('blue', { health: true });
    const gw = await gateway(
      shopConfig({ blue: { weight: 100, endpoints: [blue.address] } }, { protocol: 'h2c', healthCheck: { type: 'grpc', interval: '100ms', timeout: '100ms', unhealthyThreshold: 2, healthyThreshold: 2 } }),
    );
    const e = gw.gw.dataplane.endpointsOf('shop', 'blue')[0];
    const c = client(gw);
    expect((await unary(c, 'x')).code).toBe(0);
    blue.failRate = 1;
    await waitFor(() => e.state === 'unhealthy', { timeout: 5000 });
    const r = await unary(c, 'x');
    expect(r.code).toBe(grpc.status.UNAVAILABLE);
    expect(r.details).toMatch(/^NO_HEALTHY_UPSTREAM/);
    blue.failRate = 0;
    await waitFor(() => e.state === 'healthy', { timeout: 5000 });
    expect((await unary(c, 'x')).code).toBe(0);
  });

  it('refuses a grpc probe on an http1 service, and the HTTP/2 protocol with endpoints of the wrong scheme', async () => {
    const bad = (service: Record<string, unknown>, endpoints = ['127.0.0.1:9']): Promise<unknown> => startInProcess(shopConfig({ blue: { weight: 1, endpoints } }, service));
    await expect(bad({ healthCheck: { type: 'grpc' } })).rejects.toThrow(/healthCheck.type: grpc probes need protocol h2c or h2/);
    await expect(bad({ protocol: 'h2' })).rejects.toThrow(/protocol h2 is HTTP\/2 over TLS and needs https:\/\/ endpoints/);
    await expect(bad({ protocol: 'h2c' }, ['https://127.0.0.1:9'])).rejects.toThrow(/an https:\/\/ endpoint needs protocol h2/);
    await expect(bad({ protocol: 'h3' })).rejects.toThrow(/protocol/);
  });
});

describe('gRPC rollouts, drain and failures', () => {
  it('a rollout to a green failing 20% of calls with UNAVAILABLE is rolled back; a healthy green is rolled out', async () => {
    const blue = await upstream('blue');
    const green = await upstream('green');
    green.failRate = 0.2;
    const gw = await gateway(shopConfig({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } }, { protocol: 'h2c' }));
    const load = unaryLoad(client(gw), 4);
    cleanup.push(() => void load.stop());
    const body = { to: 'green', steps: [50, 100], interval: '1s', analysis: { maxErrorRate: 0.05, minRequests: 20 } };
    await fetchJson(`${gw.controlUrl}/v1/services/shop/rollout`, 'POST', body);
    const bad = await waitFor(async () => {
      const r = await fetchJson(`${gw.controlUrl}/v1/services/shop/rollout`, 'GET');
      return ['rolled_back', 'succeeded'].includes(r.state) ? r : undefined;
    }, { timeout: 20_000 });
    expect(bad.state).toBe('rolled_back');
    expect(bad.reason).toMatch(/error rate of green/);
    expect(bad.weights).toEqual({ blue: 100, green: 0 });

    green.failRate = 0;
    await fetchJson(`${gw.controlUrl}/v1/services/shop/rollout`, 'POST', body);
    const good = await waitFor(async () => {
      const r = await fetchJson(`${gw.controlUrl}/v1/services/shop/rollout`, 'GET');
      return ['rolled_back', 'succeeded'].includes(r.state) && r.id !== bad.id ? r : undefined;
    }, { timeout: 20_000 });
    expect(good.state).toBe('succeeded');
    expect(good.weights).toEqual({ blue: 0, green: 100 });
    const records = await load.stop();
    // Only green's UNAVAILABLE answers failed, none of blue's.
    expect(records.filter((r) => r.code !== 0 && r.code !== grpc.status.UNAVAILABLE)).toEqual([]);
  });

  it('cutover --wait with long server streams open on blue answers only when they have ended', async () => {
    const blue = await upstream('blue');
    const green = await upstream('green');
    const gw = await gateway(shopConfig({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } }, { protocol: 'h2c' }));
    const c = client(gw);
    const ends: number[] = [];
    const streams = [15, 25, 35].map(
      (count) =>
        new Promise<{ n: number; code: number }>((res) => {
          let n = 0;
          const call = c.ServerStream({ count, interval_ms: 60 });
          call.on('data', () => n++);
          call.on('error', () => {});
          call.on('status', (st: grpc.StatusObject) => {
            ends.push(Date.now());
            res({ n, code: st.code });
          });
        }),
    );
    await waitFor(() => blue.openStreams === 3);
    const r = await fetchJson(`${gw.controlUrl}/v1/services/shop/cutover`, 'POST', { to: 'green', wait: true, timeout: '20s' });
    const answered = Date.now();
    expect(r.drained).toBe(true);
    const done = await Promise.all(streams);
    expect(done).toEqual([{ n: 15, code: 0 }, { n: 25, code: 0 }, { n: 35, code: 0 }]);
    // The answer came after the last stream ended (its status reaches the client a
    // moment after the gateway saw the end).
    expect(answered).toBeGreaterThanOrEqual(Math.max(...ends) - 50);
    expect(blue.openStreams).toBe(0);
    expect((await unary(c, 'after')).reply?.server).toBe('green');
  });

  it('kill -9 of one of two green servers under load: failed calls bounded by those in flight, none after ejection', async () => {
    const g1 = await spawnGrpcUpstream('g1');
    const g2 = await spawnGrpcUpstream('g2');
    cleanup.push(() => g1.kill(), () => g2.kill());
    const gw = await gateway(shopConfig({ green: { weight: 100, endpoints: [g1.address, g2.address] } }, { protocol: 'h2c', outlierDetection: { consecutiveGatewayErrors: 2, baseEjectionTime: '30s' } }));
    const concurrency = 8;
    const load = unaryLoad(client(gw), concurrency);
    cleanup.push(() => void load.stop());
    await waitFor(() => load.records.filter((r) => r.server === 'g1').length > 20 && load.records.filter((r) => r.server === 'g2').length > 20);
    await g1.kill();
    const e1 = gw.gw.dataplane.endpointsOf('shop', 'green').find((e) => e.id === g1.address)!;
    await waitFor(() => e1.state === 'ejected', { timeout: 10_000 });
    const ejectedAt = Date.now();
    const before = load.records.length;
    await waitFor(() => load.records.length > before + 200, { timeout: 20_000 });
    const records = await load.stop();
    const failed = records.filter((r) => r.code !== 0);
    expect(failed.length).toBeLessThanOrEqual(concurrency);
    expect(failed.filter((r) => r.start >= ejectedAt)).toEqual([]);
    expect(records.filter((r) => r.start >= ejectedAt).every((r) => r.server === 'g2')).toBe(true);
  });

  it('gateway.workers: 2 — gRPC over prior knowledge and h2c upstreams in the data-plane workers, calls counted by grpc_status', async () => {
    const blue = await upstream('blue');
    const p = await startProcess(shopConfig({ blue: { weight: 100, endpoints: [blue.address] } }, { protocol: 'h2c' }, { gateway: { listen: '127.0.0.1:0', workers: 2 } }));
    cleanup.push(() => void p.stop());
    // Several channels, so that both workers take connections.
    const clients = Array.from({ length: 4 }, () => echoClient(p.url.replace('http://', ''), {}));
    cleanup.push(() => clients.forEach((c) => c.close()));
    const results = await Promise.all(clients.flatMap((c) => Array.from({ length: 25 }, (_, i) => unary(c, `w${i}`))));
    expect(results.filter((r) => r.code !== 0)).toEqual([]);
    await waitFor(async () => /switchyard_requests_total\{service="shop",version="blue",code="2xx",grpc_status="0"\} 100\b/.test(await (await request(`${p.adminUrl}/metrics`)).body.text()), { timeout: 10_000 });
  });

  it('SIGTERM of the gateway under gRPC load: no call fails; a long stream open across the shutdown ends whole', async () => {
    const blue = await upstream('blue');
    const p = await startProcess({ ...shopConfig({ blue: { weight: 100, endpoints: [blue.address] } }, { protocol: 'h2c' }), shutdown: { drainDelay: '1s', grace: '15s' } });
    cleanup.push(() => void p.stop());
    const c = echoClient(p.url.replace('http://', ''));
    cleanup.push(() => c.close());
    const load = unaryLoad(c, 6);
    const stream = new Promise<{ n: number; code: number }>((res) => {
      let n = 0;
      const call = c.ServerStream({ count: 80, interval_ms: 50 });
      call.on('data', () => n++);
      call.on('error', () => {});
      call.on('status', (st: grpc.StatusObject) => res({ n, code: st.code }));
    });
    await waitFor(() => load.records.length > 100 && blue.openStreams === 1);
    p.proc.kill('SIGTERM');
    // As a load balancer would: new calls stop once /ready says the gateway is going.
    await waitFor(async () => (await request(`${p.adminUrl}/ready`)).statusCode === 503, { interval: 20 });
    const records = await load.stop();
    expect(records.filter((r) => r.code !== 0)).toEqual([]);
    expect(await stream).toEqual({ n: 80, code: 0 });
    expect(await p.exited).toBe(0);
  });
});

async function fetchJson(url: string, method: string, body?: unknown): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await request(url, { method: method as 'GET', headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.body.text();
  if (r.statusCode >= 300) throw new Error(`${method} ${url}: ${r.statusCode} ${text}`);
  return text === '' ? undefined : JSON.parse(text);
}

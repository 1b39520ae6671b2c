// TLS termination (gateway.tls): HTTPS and HTTP/2 by ALPN on one port, certificates
// chosen by SNI, reload on SIGHUP and on file change without dropping open connections,
// TLS 1.2 minimum, the HTTP → HTTPS redirect listener, and control.tls. Certificates are
// made by the openssl CLI into a temp dir; upstreams and gateways are real.

import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import tls from 'node:tls';
import { createHash } from 'node:crypto';
import { copyFileSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { shopConfig, startInProcess, startProcess, startUpstream, waitFor, type InProcessGateway, type Upstream } from './helpers.js';
import { makeCa, type TestCa } from './certs.js';

interface Echo {
  name: string;
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawNames: string[];
  bytes: number;
  sha: string;
}

/** Echoes the request (headers, raw header names, body size and digest); /slow?ms=N waits first. */
function echo(req: http.IncomingMessage, res: http.ServerResponse, up: Upstream): void {
  const hash = createHash('sha256');
  let bytes = 0;
  req.on('data', (c: Buffer) => {
    bytes += c.length;
    hash.update(c);
  });
  req.on('end', () => {
    const u = new URL(req.url ?? '/', 'http://x');
    const body = JSON.stringify({
      name: up.name,
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      rawNames: req.rawHeaders.filter((_, i) => i % 2 === 0),
      bytes,
      sha: hash.digest('hex'),
    } satisfies Echo);
    const send = (): void => {
      res.writeHead(200, [
        'Content-Type', 'application/json',
        'Set-Cookie', 'a=1; Path=/',
        'Set-Cookie', 'b=2; Path=/',
        'Keep-Alive', 'timeout=5',
        'X-Upstream', up.name,
      ]);
      res.end(body);
    };
    if (u.pathname === '/slow') setTimeout(send, Number(u.searchParams.get('ms') ?? 1000));
    else send();
  });
}

interface PeerInfo {
  fingerprint: string;
  cn: string;
  san: string;
  alpn: string | false | null;
  protocol: string | null;
}

/** One TLS handshake: what certificate the gateway presents for a server name. */
function peer(port: number, ca: string, servername: string | undefined, extra: tls.ConnectionOptions = {}): Promise<PeerInfo> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ port, host: '127.0.0.1', ca, servername, ALPNProtocols: ['h2', 'http/1.1'], rejectUnauthorized: false, ...extra }, () => {
      const c = s.getPeerCertificate();
      const info = { fingerprint: c.fingerprint256, cn: String(c.subject?.CN ?? ''), san: c.subjectaltname ?? '', alpn: s.alpnProtocol, protocol: s.getProtocol() };
      s.end();
      resolve(info);
    });
    s.on('error', reject);
  });
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  socket: tls.TLSSocket;
}

function get(opts: https.RequestOptions & { body?: Buffer }): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', method: 'GET', ...opts }, (res) => {
      // Taken now: a kept-alive socket is detached from the response once it ends.
      const socket = res.socket as tls.TLSSocket;
      expect(socket).toBeTruthy();
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString(), socket }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

function h2(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Buffer): Promise<{ headers: http2.IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    const s = session.request(headers, { endStream: body === undefined });
    let resHeaders: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    s.on('response', (h) => (resHeaders = h));
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => resolve({ headers: resHeaders, text: Buffer.concat(chunks).toString() }));
    s.on('error', reject);
    if (body !== undefined) s.end(body);
  });
}

describe('TLS termination', () => {
  let ca: TestCa;
  let up: Upstream;
  let certA: ReturnType<TestCa['issue']>;
  let certB: ReturnType<TestCa['issue']>;
  let certC: ReturnType<TestCa['issue']>;
  let ctl: ReturnType<TestCa['issue']>;
  let g: InProcessGateway;
  let port: number;

  /** Certificate files at <name>.crt/.key holding a first pair, and a second pair to
   * rotate in. */
  const rotatingPair = (name: string): { live: { cert: string; key: string }; first: ReturnType<TestCa['issue']>; second: ReturnType<TestCa['issue']> } => {
    const live = { cert: join(ca.dir, `${name}.crt`), key: join(ca.dir, `${name}.key`) };
    const first = ca.issue(`${name}1`, 'shop.test', ['shop.test']);
    const second = ca.issue(`${name}2`, 'shop.test', ['shop.test']);
    copyFileSync(first.cert, live.cert);
    copyFileSync(first.key, live.key);
    return { live, first, second };
  };

  beforeAll(async () => {
    ca = makeCa();
    certA = ca.issue('a', 'shop.test', ['shop.test', 'a.test']);
    certB = ca.issue('b', 'b.test', ['b.test', '*.b.test']);
    certC = ca.issue('c', 'cn-only.test', []);
    ctl = ca.issue('ctl', 'control.test', ['control.test']);
    up = await startUpstream('blue', echo);
    g = await startInProcess(
      shopConfig({ blue: { weight: 100, endpoints: [up.address] } }, {}, {
        gateway: {
          tls: { certificates: [{ cert: certA.cert, key: certA.key }, { cert: certB.cert, key: certB.key }, { cert: certC.cert, key: certC.key }], watch: false },
          redirectHttp: '127.0.0.1:0',
        },
        control: { listen: '127.0.0.1:0', tls: { cert: ctl.cert, key: ctl.key } },
      }),
    );
    port = g.gw.addresses.gateway.port;
  });

  afterAll(async () => {
    await g?.close();
    await up?.close();
  });

  it('serves HTTPS (HTTP/1.1) to the upstream over plain HTTP, with x-forwarded-proto https', async () => {
    up.seen.length = 0;
    const r = await get({ port, path: '/hello?x=1', servername: 'shop.test', ca: ca.ca, agent: false, ALPNProtocols: ['http/1.1'], headers: { host: 'shop.test', 'x-request-id': 'tls-1' } } as https.RequestOptions);
    expect(r.status).toBe(200);
    expect(r.socket.alpnProtocol).toBe('http/1.1');
    expect(r.headers['x-request-id']).toBe('tls-1');
    expect(r.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; Path=/']);
    const e = JSON.parse(r.text) as Echo;
    expect(e.url).toBe('/hello?x=1');
    expect(e.headers['x-forwarded-proto']).toBe('https');
    expect(e.headers.host).toBe('shop.test');
    expect(up.seen).toHaveLength(1);
  });

  it('serves HTTP/2 by ALPN: concurrent streams, a POST body, correct response headers, no pseudo or hop-by-hop headers upstream', async () => {
    up.seen.length = 0;
    const session = http2.connect(`https://127.0.0.1:${port}`, { ca: ca.ca, servername: 'shop.test' });
    try {
      await new Promise<void>((resolve, reject) => {
        session.once('connect', () => resolve());
        session.once('error', reject);
      });
      expect((session.socket as tls.TLSSocket).alpnProtocol).toBe('h2');
      const gets = Array.from({ length: 20 }, (_, i) =>
        h2(session, { ':method': 'GET', ':path': `/stream/${i}`, ':authority': 'shop.test', te: 'trailers', cookie: ['k1=v1', 'k2=v2'], 'x-request-id': `h2-${i}` }),
      );
      const body = Buffer.alloc(1024 * 1024 + 7, 0x61);
      for (let i = 0; i < body.length; i += 997) body[i] = i % 251;
      const post = h2(session, { ':method': 'POST', ':path': '/upload', ':authority': 'shop.test', 'content-type': 'application/octet-stream' }, body);
      const [results, p] = await Promise.all([Promise.all(gets), post]);
      results.forEach((r, i) => {
        expect(r.headers[':status']).toBe(200);
        expect(r.headers['content-type']).toBe('application/json');
        expect(r.headers['x-request-id']).toBe(`h2-${i}`);
        expect(r.headers['x-upstream']).toBe('blue');
        expect(r.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; Path=/']);
        // Connection-specific headers from the upstream must not reach an HTTP/2 client.
        expect(r.headers['keep-alive']).toBeUndefined();
        expect(r.headers.connection).toBeUndefined();
        const e = JSON.parse(r.text) as Echo;
        expect(e.url).toBe(`/stream/${i}`);
        expect(e.method).toBe('GET');
        expect(e.headers.host).toBe('shop.test');
        expect(e.headers['x-forwarded-host']).toBe('shop.test');
        expect(e.headers['x-forwarded-proto']).toBe('https');
        expect(e.headers.cookie).toBe('k1=v1; k2=v2');
        expect(e.rawNames.filter((n) => n.toLowerCase() === 'cookie')).toHaveLength(1);
        expect(e.rawNames.filter((n) => n.startsWith(':'))).toEqual([]);
        expect(e.headers.te).toBeUndefined();
        expect(e.headers['transfer-encoding']).toBeUndefined();
        expect(e.bytes).toBe(0);
      });
      expect(p.headers[':status']).toBe(200);
      const pe = JSON.parse(p.text) as Echo;
      expect(pe.method).toBe('POST');
      expect(pe.bytes).toBe(body.length);
      expect(pe.sha).toBe(createHash('sha256').update(body).digest('hex'));
      expect(pe.rawNames.filter((n) => n.startsWith(':'))).toEqual([]);
      expect(up.seen.length).toBe(21);
    } finally {
      session.close();
    }
  });

  it('HTTP/2 gateway errors are JSON with x-request-id; CONNECT is refused with 405 and never forwarded', async () => {
    up.seen.length = 0;
    const session = http2.connect(`https://127.0.0.1:${port}`, { ca: ca.ca, servername: 'shop.test' });
    try {
      // An asterisk-form target: the gateway's own 400, as JSON, over HTTP/2.
      const r = await h2(session, { ':method': 'OPTIONS', ':path': '*', ':authority': 'shop.test', 'x-request-id': 'h2-err' });
      expect(r.headers[':status']).toBe(400);
      expect(r.headers['content-type']).toBe('application/json');
      expect(r.headers['x-request-id']).toBe('h2-err');
      expect(JSON.parse(r.text).error).toMatchObject({ code: 'BAD_REQUEST', requestId: 'h2-err' });
      // The session is still usable after it.
      const ok = await h2(session, { ':method': 'GET', ':path': '/x', ':authority': 'shop.test' });
      expect(ok.headers[':status']).toBe(200);
      const c = await new Promise<{ status: number; text: string }>((resolve, reject) => {
        const s = session.request({ ':method': 'CONNECT', ':authority': 'evil.test:443' });
        let status = 0;
        const chunks: Buffer[] = [];
        s.on('response', (h) => (status = Number(h[':status'])));
        s.on('data', (d: Buffer) => chunks.push(d));
        s.on('end', () => resolve({ status, text: Buffer.concat(chunks).toString() }));
        s.on('error', reject);
        s.end();
      });
      expect(c.status).toBe(405);
      expect(JSON.parse(c.text).error.code).toBe('METHOD_NOT_ALLOWED');
      expect(up.seen.map((s) => s.url)).toEqual(['/x']);
    } finally {
      session.close();
    }
  });

  it('SNI picks the certificate whose SAN (exact, then wildcard) or CN names the server; the first is the default', async () => {
    const cases: [string | undefined, string][] = [
      ['shop.test', certA.fingerprint],
      ['a.test', certA.fingerprint],
      ['b.test', certB.fingerprint],
      ['api.b.test', certB.fingerprint],
      ['API.B.TEST', certB.fingerprint],
      // A wildcard covers one label only.
      ['x.api.b.test', certA.fingerprint],
      ['cn-only.test', certC.fingerprint],
      ['unknown.test', certA.fingerprint],
      [undefined, certA.fingerprint],
    ];
    for (const [name, fp] of cases) {
      const p = await peer(port, ca.ca, name);
      expect({ name, fp: p.fingerprint }).toEqual({ name, fp });
      expect(p.alpn).toBe('h2');
    }
    // And the chosen certificate verifies for that name against the CA.
    const r = await get({ port, path: '/', servername: 'api.b.test', ca: ca.ca, agent: false, headers: { host: 'api.b.test' } });
    expect(r.status).toBe(200);
    expect(r.socket.getPeerCertificate().subject.CN).toBe('b.test');
  });

  it('refuses TLS 1.1 (a client that a TLS 1.0+ server would accept)', async () => {
    const old: tls.ConnectionOptions = { minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' };
    // The control: the same client handshakes with a server that allows TLS 1.1.
    const lax = tls.createServer({ cert: readFileSync(certA.cert), key: readFileSync(certA.key), minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' }, (s) => s.end());
    await new Promise<void>((r) => lax.listen(0, '127.0.0.1', r));
    try {
      const ok = await peer((lax.address() as { port: number }).port, ca.ca, 'shop.test', old);
      expect(ok.protocol).toBe('TLSv1.1');
    } finally {
      lax.close();
    }
    const err = await peer(port, ca.ca, 'shop.test', old).then(
      () => undefined,
      (e: NodeJS.ErrnoException) => e,
    );
    expect(err?.code).toBe('ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION');
    // TLS 1.2 is accepted.
    expect((await peer(port, ca.ca, 'shop.test', { maxVersion: 'TLSv1.2' })).protocol).toBe('TLSv1.2');
  });

  it('WebSocket over TLS stays HTTP/1.1 (upgrade) and is proxied', async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((r) => wss.once('listening', r));
    wss.on('connection', (ws) => ws.on('message', (m, binary) => ws.send(m, { binary })));
    const wsUp = `127.0.0.1:${(wss.address() as { port: number }).port}`;
    const gw = await startInProcess(
      shopConfig({ blue: { weight: 100, endpoints: [wsUp] } }, {}, { gateway: { tls: { certificates: [{ cert: certA.cert, key: certA.key }] } } }),
    );
    try {
      const ws = new WebSocket(`wss://127.0.0.1:${gw.gw.addresses.gateway.port}/ws`, { ca: ca.ca, servername: 'shop.test', headers: { host: 'shop.test' } } as WebSocket.ClientOptions);
      await new Promise((r, j) => {
        ws.once('open', r);
        ws.once('error', j);
      });
      const got = new Promise<string>((r) => ws.once('message', (m) => r(String(m))));
      ws.send('over tls');
      expect(await got).toBe('over tls');
      ws.close();
    } finally {
      await gw.close();
      wss.close();
    }
  });

  it('the redirect listener answers 308 to https://host/path (with the HTTPS port), never forwarding', async () => {
    up.seen.length = 0;
    const rport = g.gw.addresses.redirect!.port;
    const ask = (headers: Record<string, string>, path = '/a/b?c=d'): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> =>
      new Promise((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port: rport, path, headers, agent: false, setHost: false }, (res) => {
          let text = '';
          res.on('data', (d) => (text += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
        });
        req.on('error', reject);
        req.end();
      });
    const r = await ask({ host: 'shop.test:8081' });
    expect(r.status).toBe(308);
    expect(r.headers.location).toBe(`https://shop.test:${port}/a/b?c=d`);
    expect(r.headers['x-request-id']).toBeTruthy();
    const v6 = await ask({ host: '[::1]' }, '/');
    expect(v6.headers.location).toBe(`https://[::1]:${port}/`);
    // A Host that could not be a host name (header injection, userinfo) is refused.
    const bad = await ask({ host: 'evil.test@shop.test' });
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.text).error.code).toBe('BAD_REQUEST');
    const none = await ask({});
    expect(none.status).toBe(400);
    expect(up.seen).toHaveLength(0);
  });

  it('control.tls: the control API answers over HTTPS only', async () => {
    const cport = g.gw.addresses.control.port;
    const r = await get({ port: cport, path: '/v1/services', servername: 'control.test', ca: ca.ca, agent: false });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.text).services[0].name).toBe('shop');
    expect(r.socket.getPeerCertificate().subject.CN).toBe('control.test');
    const plain = await new Promise<string>((resolve) => {
      const req = http.get({ host: '127.0.0.1', port: cport, path: '/v1/services', agent: false }, (res) => resolve(`status ${res.statusCode}`));
      req.on('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code}`));
    });
    expect(plain).not.toBe('status 200');
  });

  it('reloads certificates when the files change: new handshakes get the new one, an open keep-alive connection and an in-flight request are kept; a bad file is refused', async () => {
    const { live, first, second } = rotatingPair('live');
    const gw = await startInProcess(shopConfig({ blue: { weight: 100, endpoints: [up.address] } }, {}, { gateway: { tls: { certificates: [live] } } }));
    const gport = gw.gw.addresses.gateway.port;
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: ca.ca, servername: 'shop.test' });
    try {
      const r1 = await get({ port: gport, path: '/', agent, headers: { host: 'shop.test' } });
      expect(r1.status).toBe(200);
      const sock = r1.socket;
      expect(sock.getPeerCertificate().fingerprint256).toBe(first.fingerprint);
      // A request in flight on the kept-alive connection while the files change.
      const inflight = get({ port: gport, path: '/slow?ms=1500', agent, headers: { host: 'shop.test' } });
      await new Promise((r) => setTimeout(r, 100));
      copyFileSync(second.key, live.key);
      copyFileSync(second.cert, live.cert);
      await waitFor(async () => (await peer(gport, ca.ca, 'shop.test')).fingerprint === second.fingerprint, { timeout: 5000, message: 'new certificate served' });
      const r2 = await inflight;
      expect(r2.status).toBe(200);
      expect(r2.socket).toBe(sock);
      // The same connection goes on serving with the certificate it was made with.
      const r3 = await get({ port: gport, path: '/', agent, headers: { host: 'shop.test' } });
      expect(r3.status).toBe(200);
      expect(r3.socket).toBe(sock);
      expect(sock.getPeerCertificate().fingerprint256).toBe(first.fingerprint);
      // A key that does not fit the certificate: refused, the running one keeps serving.
      const failures = gw.gw.gateway!.tls!.failures;
      copyFileSync(first.key, live.key);
      await waitFor(() => gw.gw.gateway!.tls!.failures > failures, { timeout: 5000, message: 'the bad pair was refused' });
      expect((await peer(gport, ca.ca, 'shop.test')).fingerprint).toBe(second.fingerprint);
      writeFileSync(live.cert, 'not a certificate\n');
      await waitFor(() => gw.gw.gateway!.tls!.failures > failures + 1, { timeout: 5000, message: 'the garbage file was refused' });
      expect((await peer(gport, ca.ca, 'shop.test')).fingerprint).toBe(second.fingerprint);
      const r4 = await get({ port: gport, path: '/', servername: 'shop.test', ca: ca.ca, agent: false, headers: { host: 'shop.test' } });
      expect(r4.status).toBe(200);
    } finally {
      agent.destroy();
      await gw.close();
    }
  });

  it('reloads certificates on SIGHUP (file watch off) without dropping an open connection; a bad pair is refused and the old one keeps serving', async () => {
    const { live, first, second } = rotatingPair('hup');
    const p = await startProcess(shopConfig({ blue: { weight: 100, endpoints: [up.address] } }, {}, { gateway: { tls: { certificates: [live], watch: false } } }));
    const gport = Number(new URL(p.url).port);
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: ca.ca, servername: 'shop.test' });
    try {
      const r1 = await get({ port: gport, path: '/', agent, headers: { host: 'shop.test' } });
      expect(r1.status).toBe(200);
      const sock = r1.socket;
      const inflight = get({ port: gport, path: '/slow?ms=1500', agent, headers: { host: 'shop.test' } });
      await new Promise((r) => setTimeout(r, 100));
      copyFileSync(second.key, live.key);
      copyFileSync(second.cert, live.cert);
      // No watch: nothing changes until SIGHUP.
      await new Promise((r) => setTimeout(r, 600));
      expect((await peer(gport, ca.ca, 'shop.test')).fingerprint).toBe(first.fingerprint);
      p.proc.kill('SIGHUP');
      await waitFor(async () => (await peer(gport, ca.ca, 'shop.test')).fingerprint === second.fingerprint, { timeout: 5000, message: 'new certificate after SIGHUP' });
      // The log line travels through a pipe: it may come after the new certificate is served.
      await waitFor(() => p.logs.some((l) => l.msg === 'gateway.tls: certificates reloaded' && l.reason === 'config reload'), { message: 'reload logged' });
      const r2 = await inflight;
      expect(r2.status).toBe(200);
      expect(r2.socket).toBe(sock);
      const r3 = await get({ port: gport, path: '/', agent, headers: { host: 'shop.test' } });
      expect(r3.socket).toBe(sock);
      expect(r3.status).toBe(200);
      // A mismatched pair: the whole reload is refused, naming the key path.
      copyFileSync(first.key, live.key);
      p.proc.kill('SIGHUP');
      await waitFor(() => p.logs.some((l) => l.msg === 'config reload refused; the running config stays'), { timeout: 5000 });
      const refused = p.logs.find((l) => l.msg === 'config reload refused; the running config stays') as { problems: string[] };
      expect(refused.problems.join('\n')).toMatch(/^gateway\.tls\.certificates\.0: .*does not fit/m);
      expect((await peer(gport, ca.ca, 'shop.test')).fingerprint).toBe(second.fingerprint);
      expect((await get({ port: gport, path: '/', servername: 'shop.test', ca: ca.ca, agent: false, headers: { host: 'shop.test' } })).status).toBe(200);
      expect(JSON.stringify(p.logs)).not.toContain('PRIVATE KEY');
    } finally {
      agent.destroy();
      await p.stop();
    }
  });
});

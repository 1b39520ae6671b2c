// HTTPS upstreams against real node:https servers with certificates made in the test by
// the openssl CLI (a test CA, a server certificate for api.vendor.test and
// secure.vendor.test — no IP SAN, so the name the gateway verifies matters — and an
// unrelated CA), and a real gateway started in-process.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import type net from 'node:net';
import type { TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import WebSocket, { WebSocketServer } from 'ws';
import { stringify } from 'yaml';
import { ConfigError, loadConfigText } from '../config/load.js';
import { startDnsmasq, stopAllDnsmasq } from './dnsmasq.js';
import { load, shopConfig, startInProcess, startUpstream, waitFor, closeServer, deadAddress, type InProcessGateway } from './helpers.js';

// ---------------------------------------------------------------------------------
// Certificates

interface Pki {
  dir: string;
  ca: string;
  otherCa: string;
  key: string;
  cert: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makePki(): Pki {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-pki-'));
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const caExt = ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'];
  openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=Switchyard Test CA', ...caExt], dir);
  openssl(['req', '-x509', ...ec, '-keyout', 'other-ca.key', '-out', 'other-ca.crt', '-days', '2', '-subj', '/CN=Some Other CA', ...caExt], dir);
  openssl(['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=api.vendor.test'], dir);
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=DNS:api.vendor.test,DNS:secure.vendor.test\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n');
  openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'server.ext'], dir);
  return { dir, ca: join(dir, 'ca.crt'), otherCa: join(dir, 'other-ca.crt'), key: join(dir, 'server.key'), cert: join(dir, 'server.crt') };
}

// ---------------------------------------------------------------------------------
// HTTPS upstreams

interface Seen {
  method: string;
  url: string;
  host: string | undefined;
  xfh: string | undefined;
  sni: string | false | null | undefined;
  encrypted: boolean;
  ua: string | undefined;
}

interface HttpsUp {
  name: string;
  port: number;
  origin: string;
  server: https.Server;
  seen: Seen[];
  /** Status of /healthz (200 unless changed). */
  health: number;
  /** TLS handshakes completed (new connections). */
  handshakes: number;
  close(): Promise<void>;
}

let pki: Pki;

async function httpsUpstream(name: string, host = '127.0.0.1', port = 0): Promise<HttpsUp> {
  const up = { name, seen: [] as Seen[], health: 200, handshakes: 0 } as HttpsUp;
  const server = https.createServer({ key: readFileSync(pki.key), cert: readFileSync(pki.cert) }, (req: IncomingMessage, res) => {
    const sock = req.socket as TLSSocket;
    up.seen.push({ method: req.method ?? '', url: req.url ?? '', host: req.headers.host, xfh: req.headers['x-forwarded-host'] as string | undefined, sni: sock.servername, encrypted: sock.encrypted === true, ua: req.headers['user-agent'] });
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/healthz') {
        res.writeHead(up.health).end();
        return;
      }
      const body = JSON.stringify({ name, host: req.headers.host, sni: sock.servername, echo: Buffer.concat(chunks).toString() });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  // A failed handshake is the client's problem; keep the server quiet about it.
  server.on('tlsClientError', () => {});
  server.on('secureConnection', () => up.handshakes++);
  await new Promise<void>((r) => server.listen(port, host, r));
  up.server = server;
  up.port = (server.address() as net.AddressInfo).port;
  up.origin = `https://${host.includes(':') ? `[${host}]` : host}:${up.port}`;
  up.close = () => closeServer(server);
  cleanups.push(() => up.close());
  return up;
}

// ---------------------------------------------------------------------------------
// The gateway

type Gw = InProcessGateway;

async function startGw(config: Record<string, unknown>, files: Record<string, string> = {}): Promise<Gw> {
  const g = await startInProcess(config, { files });
  cleanups.push(() => g.close());
  return g;
}

async function get(url: string, opts: { headers?: Record<string, string>; method?: string; body?: string } = {}): Promise<{ status: number; body: string; json: any }> {
  const res = await request(url, { method: (opts.method ?? 'GET') as 'GET', headers: opts.headers, body: opts.body });
  const body = await res.body.text();
  let json: any;
  try {
    json = JSON.parse(body);
  } catch {
    json = undefined;
  }
  return { status: res.statusCode, body, json };
}

async function metric(g: Gw, re: RegExp): Promise<number> {
  const m = re.exec((await get(`${g.adminUrl}/metrics`)).body);
  return m ? Number(m[1]) : NaN;
}

const report = (label: string, figures: Record<string, unknown>): void => console.log(`[https] ${label}: ${JSON.stringify(figures)}`);

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await Promise.resolve(fn()).catch(() => {});
});
afterAll(stopAllDnsmasq);

beforeAll(() => {
  pki = makePki();
});

// ---------------------------------------------------------------------------------

describe('https upstream config', () => {
  const problems = (versions: string, baseDir?: string): string[] => {
    try {
      loadConfigText(`services:\n  shop:\n    routes: [{ path: / }]\n    versions:\n${versions}\n`, {}, baseDir);
    } catch (err) {
      return (err as ConfigError).problems;
    }
    return [];
  };

  it('accepts https endpoints with tls and hostHeader; a relative ca resolves against the config file; refuses what cannot work', () => {
    const c = loadConfigText(`services:\n  shop:\n    routes: [{ path: / }]\n    versions:\n      ext: { weight: 1, endpoints: ["https://api.vendor.test:8443"], tls: { ca: ./ca.crt, servername: api.vendor.test }, hostHeader: api.vendor.test }\n`, {}, pki.dir);
    const v = c.services[0].versions[0];
    expect(v.source).toEqual({ kind: 'static', endpoints: [{ id: 'https://api.vendor.test:8443', protocol: 'https', host: 'api.vendor.test', port: 8443, origin: 'https://api.vendor.test:8443' }] });
    expect(v.tls).toEqual({ verify: true, servername: 'api.vendor.test', ca: pki.ca, caPem: readFileSync(pki.ca, 'utf8') });
    expect(v.hostHeader).toBe('api.vendor.test');
    expect(problems('      ext: { weight: 1, endpoints: ["127.0.0.1:80"], tls: { verify: false } }')).toEqual(['services.shop.versions.ext.tls: applies to https:// endpoints and this version lists none']);
    expect(problems('      ext: { weight: 1, endpoints: ["https://x.test:443"], tls: { ca: ./missing.crt } }', pki.dir)).toEqual([`services.shop.versions.ext.tls.ca: cannot read ${join(pki.dir, 'missing.crt')}: ENOENT`]);
    expect(problems('      ext: { weight: 1, endpoints: ["https://x.test:443"], tls: { ca: ./server.key } }', pki.dir)).toEqual([`services.shop.versions.ext.tls.ca: ${join(pki.dir, 'server.key')} holds no PEM certificate`]);
    expect(problems('      ext: { weight: 1, endpoints: ["https://x.test:443"], tls: { servername: 10.0.0.1 } }')).toEqual(['services.shop.versions.ext.tls.servername: must be a DNS name (SNI carries no IP address)']);
    expect(problems('      ext: { weight: 1, endpoints: ["https://x.test:443"], hostHeader: "a b" }')).toEqual(['services.shop.versions.ext.hostHeader: must be a host name or address, optionally with :port']);
    expect(problems('      ext: { weight: 1, endpoints: ["https://x.test:443"], tls: { verify: "no" } }')).toEqual(['services.shop.versions.ext.tls.verify: must be boolean']);
  });
});

describe('https upstreams', () => {
  it('traffic flows over TLS verified against the test CA, with servername as SNI; bodies stream both ways', async () => {
    const up = await httpsUpstream('ext');
    const g = await startGw(shopConfig({ ext: { weight: 1, endpoints: [up.origin], tls: { ca: './ca.crt', servername: 'api.vendor.test' } } as never }), { 'ca.crt': pki.ca });
    const r = await get(`${g.url}/a?b=1`, { headers: { host: 'shop.example.com' } });
    expect(r.status, r.body).toBe(200);
    expect(r.json).toMatchObject({ name: 'ext', sni: 'api.vendor.test', host: 'shop.example.com' });
    expect(up.seen[0]).toMatchObject({ url: '/a?b=1', encrypted: true, sni: 'api.vendor.test', xfh: 'shop.example.com' });
    const post = await get(`${g.url}/echo`, { method: 'POST', body: 'x'.repeat(100_000) });
    expect(post.json.echo.length).toBe(100_000);
    // Clients with different Host headers: the SNI stays the configured name, and the
    // TLS connections are kept alive across them (undici would otherwise take each Host
    // as servername and reconnect whenever it changes).
    const [l1, l2] = await Promise.all([load(g.url, { concurrency: 4, count: 300, headers: { host: 'a.example' } }), load(g.url, { concurrency: 4, count: 300, headers: { host: 'b.example' } })]);
    expect(l1.failed + l2.failed).toBe(0);
    expect(l1.byName.ext + l2.byName.ext).toBe(600);
    expect(new Set(up.seen.map((s) => s.sni))).toEqual(new Set(['api.vendor.test']));
    expect(up.handshakes).toBeLessThanOrEqual(12);
    report('keep-alive over TLS', { requests: up.seen.length, handshakes: up.handshakes });
    const st = await get(`${g.controlUrl}/v1/services/shop`);
    expect(st.json.versions.ext.endpoints[0]).toMatchObject({ id: up.origin, address: up.origin, state: 'healthy' });
  });

  it('a wrong CA, an unverifiable certificate, a plain-HTTP port: 502 UPSTREAM_TLS_ERROR, distinct from a refused connection (UPSTREAM_ERROR); the gateway keeps serving', async () => {
    const up = await httpsUpstream('ext');
    const plain = await startUpstream('plain');
    cleanups.push(() => plain.close());
    const ok = await startUpstream('ok');
    cleanups.push(() => ok.close());
    const closedPort = Number((await deadAddress()).split(':')[1]);
    const versions = {
      ok: { weight: 1, endpoints: [ok.address] },
      wrongca: { weight: 0, endpoints: [up.origin], tls: { ca: pki.otherCa, servername: 'api.vendor.test' } },
      noca: { weight: 0, endpoints: [up.origin], tls: { servername: 'api.vendor.test' } },
      plainport: { weight: 0, endpoints: [`https://${plain.address}`], tls: { verify: false } },
      refused: { weight: 0, endpoints: [`https://127.0.0.1:${closedPort}`], tls: { ca: pki.ca, servername: 'api.vendor.test' } },
    };
    const g = await startGw(shopConfig(versions as never, { override: { header: 'x-v' }, retries: { attempts: 0 }, outlierDetection: { consecutiveGatewayErrors: 0, consecutive5xx: 0 } }));
    const codes: Record<string, string> = {};
    for (const v of ['wrongca', 'noca', 'plainport', 'refused']) {
      const r = await get(g.url, { headers: { 'x-v': v } });
      expect(r.status, v).toBe(502);
      codes[v] = r.json.error.code;
      if (v !== 'refused') expect(r.json.error.message, v).toMatch(/TLS/);
    }
    expect(codes).toEqual({ wrongca: 'UPSTREAM_TLS_ERROR', noca: 'UPSTREAM_TLS_ERROR', plainport: 'UPSTREAM_TLS_ERROR', refused: 'UPSTREAM_ERROR' });
    expect(up.seen.length).toBe(0);
    expect(plain.seen.length).toBe(0);
    // Many in a row under concurrency: still answered, the process still serves.
    const bad = await load(g.url, { concurrency: 8, count: 200, headers: { 'x-v': 'wrongca' }, ok: (s) => s === 502 });
    expect(bad.failed).toBe(0);
    expect((await get(g.url)).json.name).toBe('ok');
    expect((await get(`${g.adminUrl}/live`)).status).toBe(200);
    expect(await metric(g, /^switchyard_upstream_errors_total\{service="shop",version="wrongca",reason="tls"\} (\S+)$/m)).toBe(201);
    expect(await metric(g, /^switchyard_upstream_errors_total\{service="shop",version="refused",reason="connect"\} (\S+)$/m)).toBe(1);
    report('TLS failures', { messages: codes });
  });

  it('verify: false works without a CA (and the same upstream fails verification without it)', async () => {
    const up = await httpsUpstream('ext');
    const g = await startGw(shopConfig({ strict: { weight: 1, endpoints: [up.origin], tls: { servername: 'api.vendor.test' } }, lax: { weight: 0, endpoints: [up.origin], tls: { verify: false } } } as never, { override: { header: 'x-v' }, retries: { attempts: 0 } }));
    const strict = await get(g.url, { headers: { 'x-v': 'strict' } });
    expect(strict.status).toBe(502);
    expect(strict.json.error.code).toBe('UPSTREAM_TLS_ERROR');
    const lax = await get(g.url, { headers: { 'x-v': 'lax' } });
    expect(lax.status).toBe(200);
    expect(lax.json.name).toBe('ext');
    // An IP endpoint without servername or hostHeader sends no SNI.
    expect(up.seen.at(-1)!.sni).toBe(false);
  });

  it('servername is the SNI and the name verified; an IP endpoint without it fails; hostHeader stands in for it', async () => {
    const up = await httpsUpstream('ext');
    const tls = (servername?: string) => ({ ca: pki.ca, ...(servername ? { servername } : {}) });
    const g = await startGw(
      shopConfig(
        {
          right: { weight: 1, endpoints: [up.origin], tls: tls('api.vendor.test') },
          other: { weight: 0, endpoints: [up.origin], tls: tls('secure.vendor.test') },
          wrong: { weight: 0, endpoints: [up.origin], tls: tls('wrong.vendor.test') },
          none: { weight: 0, endpoints: [up.origin], tls: tls() },
          byhost: { weight: 0, endpoints: [up.origin], tls: tls(), hostHeader: 'secure.vendor.test:443' },
        } as never,
        { override: { header: 'x-v' }, retries: { attempts: 0 } },
      ),
    );
    const answers: Record<string, unknown> = {};
    for (const v of ['right', 'other', 'wrong', 'none', 'byhost']) {
      const r = await get(g.url, { headers: { 'x-v': v } });
      answers[v] = r.status === 200 ? r.json.sni : `${r.status} ${r.json.error.code}`;
    }
    expect(answers).toEqual({ right: 'api.vendor.test', other: 'secure.vendor.test', wrong: '502 UPSTREAM_TLS_ERROR', none: '502 UPSTREAM_TLS_ERROR', byhost: 'secure.vendor.test' });
  });

  it('hostHeader reaches the upstream as Host (x-forwarded-host keeps the client’s); other versions keep the client Host', async () => {
    const up = await httpsUpstream('ext');
    const plain = await startUpstream('plain');
    cleanups.push(() => plain.close());
    const g = await startGw(
      shopConfig(
        {
          ext: { weight: 1, endpoints: [up.origin], tls: { ca: pki.ca, servername: 'api.vendor.test' }, hostHeader: 'api.vendor.test' },
          local: { weight: 0, endpoints: [plain.address], hostHeader: 'internal.local:8080' },
          asis: { weight: 0, endpoints: [plain.address] },
        } as never,
        { override: { header: 'x-v' } },
      ),
    );
    const r = await get(`${g.url}/p`, { headers: { host: 'shop.example.com' } });
    expect(r.json.host).toBe('api.vendor.test');
    expect(up.seen.at(-1)).toMatchObject({ host: 'api.vendor.test', xfh: 'shop.example.com' });
    const l = await get(`${g.url}/p`, { headers: { host: 'shop.example.com', 'x-v': 'local' } });
    expect(l.json.headers.host).toBe('internal.local:8080');
    expect(l.json.headers['x-forwarded-host']).toBe('shop.example.com');
    const a = await get(`${g.url}/p`, { headers: { host: 'shop.example.com', 'x-v': 'asis' } });
    expect(a.json.headers.host).toBe('shop.example.com');
    // Only one Host header went upstream.
    expect(plain.seen.every((s) => !String(s.headers.host).includes(','))).toBe(true);
  });

  it('health checks run over HTTPS (with the version’s CA, servername and hostHeader): pass, fail on 500, fail on a wrong CA', async () => {
    const up = await httpsUpstream('ext');
    const hc = { path: '/healthz', interval: '200ms', timeout: '200ms', healthyThreshold: 1, unhealthyThreshold: 2 };
    const g = await startGw(
      shopConfig(
        {
          ext: { weight: 1, endpoints: [up.origin], tls: { ca: pki.ca, servername: 'api.vendor.test' }, hostHeader: 'api.vendor.test' },
          badca: { weight: 0, endpoints: [up.origin], tls: { ca: pki.otherCa, servername: 'api.vendor.test' } },
        } as never,
        { healthCheck: hc },
      ),
    );
    const state = (v: string): string => g.gw.dataplane.endpointsOf('shop', v)[0].state;
    const probes = () => up.seen.filter((s) => s.url === '/healthz');
    await waitFor(() => probes().length >= 3, { timeout: 10_000, message: 'probes arrive over TLS' });
    expect(probes().every((p) => p.encrypted && p.sni === 'api.vendor.test' && p.host === 'api.vendor.test' && p.ua === 'switchyard-health-check')).toBe(true);
    expect(state('ext')).toBe('healthy');
    // The wrong CA: probes fail the handshake (never reach the server) → unhealthy.
    await waitFor(() => state('badca') === 'unhealthy', { timeout: 10_000, message: 'badca unhealthy' });
    expect(state('ext')).toBe('healthy');
    // The upstream answers 500 → unhealthy → 503; 200 again → healthy.
    up.health = 500;
    await waitFor(() => state('ext') === 'unhealthy', { timeout: 10_000, message: 'ext unhealthy on 500' });
    expect((await get(g.url)).status).toBe(503);
    up.health = 200;
    await waitFor(() => state('ext') === 'healthy', { timeout: 10_000, message: 'ext healthy again' });
    expect((await get(g.url)).json.name).toBe('ext');
    expect(state('badca')).toBe('unhealthy');
  });

  it('a reload with a corrected CA gives the endpoints new TLS pools', async () => {
    const up = await httpsUpstream('ext');
    const cfg = (ca: string) => shopConfig({ ext: { weight: 1, endpoints: [up.origin], tls: { ca, servername: 'api.vendor.test' } } } as never, { retries: { attempts: 0 } });
    const g = await startGw(cfg(pki.otherCa));
    expect((await get(g.url)).json.error.code).toBe('UPSTREAM_TLS_ERROR');
    writeFileSync(g.file, stringify(cfg(pki.ca)));
    expect(g.gw.reload()).toEqual([]);
    const r = await get(g.url);
    expect(r.status).toBe(200);
    expect(r.json.name).toBe('ext');
    // An unreadable CA is refused and the running config stays.
    writeFileSync(g.file, stringify(cfg(join(pki.dir, 'nope.crt'))));
    expect(g.gw.reload()[0]).toMatch(/tls\.ca: cannot read .*nope\.crt: ENOENT/);
    expect((await get(g.url)).status).toBe(200);
  });

  it('WebSockets to an HTTPS upstream go over TLS with the hostHeader', async () => {
    const up = await httpsUpstream('ext');
    const wss = new WebSocketServer({ server: up.server });
    let upgradeHost: string | undefined;
    let upgradeSni: string | false | null | undefined;
    wss.on('connection', (ws, req) => {
      upgradeHost = req.headers.host;
      upgradeSni = (req.socket as TLSSocket).servername;
      ws.on('message', (m) => ws.send(`echo:${m.toString()}`));
    });
    cleanups.push(() => new Promise<void>((r) => wss.close(() => r())));
    const g = await startGw(shopConfig({ ext: { weight: 1, endpoints: [up.origin], tls: { ca: pki.ca, servername: 'api.vendor.test' }, hostHeader: 'api.vendor.test' } } as never));
    const ws = new WebSocket(`ws://127.0.0.1:${g.gw.addresses.gateway.port}/ws`);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const reply = new Promise<string>((r) => ws.once('message', (m) => r(m.toString())));
    ws.send('hi');
    expect(await reply).toBe('echo:hi');
    expect(upgradeHost).toBe('api.vendor.test');
    expect(upgradeSni).toBe('api.vendor.test');
    ws.close();
  });

  it('a dns source with tls dials HTTPS and verifies the DNS name (SNI = the name resolved)', async () => {
    const up = await httpsUpstream('ext', '127.0.0.2');
    const dns = await startDnsmasq({ hosts: ['127.0.0.2 secure.vendor.test'] });
    const g = await startGw(shopConfig({ ext: { weight: 1, dns: { name: 'secure.vendor.test', port: up.port, interval: '1s', resolver: dns.server }, tls: { ca: pki.ca } } } as never));
    expect(g.gw.dataplane.endpointsOf('shop', 'ext').map((e) => e.id)).toEqual([`https://127.0.0.2:${up.port}`]);
    const r = await get(g.url);
    expect(r.status).toBe(200);
    expect(r.json.sni).toBe('secure.vendor.test');
  });
});

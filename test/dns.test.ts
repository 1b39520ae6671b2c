// DNS discovery against a real DNS server (dnsmasq, Debian's dnsmasq-base, on a free
// loopback port), real node:http upstreams on extra loopback addresses (127.0.0.2,
// 127.0.0.3 … — A records differ by address, so every upstream of a name listens on the
// same port) and a real gateway started in-process (so the test reads endpoint state and
// logs). dnsmasq re-reads its --addn-hosts file on SIGHUP; SRV records (--srv-host) are
// only read at start, so SRV changes restart it on the same port.
//
// Measured figures are printed ([dns] lines).

import { writeFileSync } from 'node:fs';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { stringify } from 'yaml';
import { ConfigError, loadConfigText } from '../config/load.js';
import { startDnsmasq, stopAllDnsmasq } from './dnsmasq.js';
import { fixedPort, load, shopConfig, startInProcess, startTrackedUpstream, waitFor, type TrackedUpstream, discoveryStaleness, httpGet, type InProcessGateway } from './helpers.js';

// ---------------------------------------------------------------------------------
// Upstreams on extra loopback addresses

type Up = TrackedUpstream;

/** A tracked upstream on host:port (port 0 = any) answering {name} after delayMs,
 * closed after the test. */
async function upstreamAt(name: string, host: string, port = 0, delayMs = 5): Promise<Up> {
  const up = await startTrackedUpstream(name, { host, port, delayMs });
  cleanups.push(() => up.close());
  return up;
}

/** Upstreams with one port on several loopback addresses (what A records need). */
async function samePort(names: string[], hosts: string[], delayMs = 5): Promise<Up[]> {
  for (let attempt = 0; ; attempt++) {
    const port = await fixedPort(hosts[0]);
    const made: Up[] = [];
    try {
      for (let i = 0; i < hosts.length; i++) made.push(await upstreamAt(names[i], hosts[i], port, delayMs));
      return made;
    } catch (err) {
      for (const u of made) await u.close();
      if (attempt > 5) throw err;
    }
  }
}

// ---------------------------------------------------------------------------------
// The gateway

type Gw = InProcessGateway;

function dnsConfig(versions: Record<string, unknown>, service: Record<string, unknown> = {}): Record<string, unknown> {
  return shopConfig(versions as Parameters<typeof shopConfig>[0], { retries: { attempts: 1 }, ...service }, { log: { level: 'info' } });
}

async function startGw(config: Record<string, unknown>): Promise<Gw> {
  const g = await startInProcess(config, { captureLogs: true });
  cleanups.push(() => g.close());
  return g;
}

const ids = (g: Gw, version = 'blue'): string[] => g.gw.dataplane.endpointsOf('shop', version).map((e) => e.id).sort();

const get = httpGet;

const staleness = (g: Gw): Promise<number | undefined> => discoveryStaleness(g.adminUrl, 'dns');

async function dnsStatus(g: Gw): Promise<Record<string, any>> {
  return JSON.parse((await get(`${g.controlUrl}/v1/status`)).body).discovery.dns;
}

const report = (label: string, figures: Record<string, unknown>): void => console.log(`[dns] ${label}: ${JSON.stringify(figures)}`);

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await Promise.resolve(fn()).catch(() => {});
});
afterAll(stopAllDnsmasq);

// ---------------------------------------------------------------------------------

describe('dns config', () => {
  const problems = (versions: string): string[] => {
    try {
      loadConfigText(`services:\n  shop:\n    routes: [{ path: / }]\n    versions:\n${versions}\n`, {});
    } catch (err) {
      return (err as ConfigError).problems;
    }
    return [];
  };

  it('normalizes name and srv sources with defaults, and refuses incomplete or ambiguous ones', () => {
    const c = loadConfigText(
      `services:\n  shop:\n    routes: [{ path: / }]\n    versions:\n      blue: { weight: 1, dns: { name: tasks.shop-blue, port: 8080 } }\n      green: { weight: 0, dns: { srv: _http._tcp.shop-green.default.svc.cluster.local, interval: 2s, resolver: "127.0.0.1:5353", emptyGrace: 10s } }\n`,
      {},
    );
    expect(c.services[0].versions.map((v) => v.source)).toEqual([
      { kind: 'dns', name: 'tasks.shop-blue', srv: undefined, port: 8080, intervalMs: 5000, resolver: undefined, emptyGraceMs: 30_000 },
      { kind: 'dns', name: undefined, srv: '_http._tcp.shop-green.default.svc.cluster.local', port: undefined, intervalMs: 2000, resolver: '127.0.0.1:5353', emptyGraceMs: 10_000 },
    ]);
    expect(problems('      blue: { weight: 1, dns: { name: x.test } }')).toEqual(['services.shop.versions.blue.dns.port: is required with name (A/AAAA records carry no port)']);
    expect(problems('      blue: { weight: 1, dns: { name: x.test, srv: _http._tcp.x.test, port: 80 } }')).toEqual([
      'services.shop.versions.blue.dns: must have exactly one of name (A/AAAA records, with port) or srv (SRV records give the ports)',
      'services.shop.versions.blue.dns.port: not allowed with srv (the SRV records give the ports)',
    ]);
    expect(problems('      blue: { weight: 1, dns: { name: x.test, port: 80, resolver: "dns.example:53" } }')).toEqual(['services.shop.versions.blue.dns.resolver: must be an IP address and port (ip:port or [ipv6]:port) of a DNS server']);
    expect(problems('      blue: { weight: 1, dns: { name: x.test, port: 80, ttl: 5 } }')).toEqual(['services.shop.versions.blue.dns.ttl: unknown key']);
    expect(problems('      blue: { weight: 1, dns: { name: x.test, port: 80 }, endpoints: ["127.0.0.1:1"] }')).toEqual(['services.shop.versions.blue: must have exactly one source of endpoints (endpoints, consul or dns), found endpoints, dns']);
  });
});

describe('dns discovery (A records)', () => {
  it('follows added and removed A records within the TTL (interval 30s, TTL 1s), ids host:port', async () => {
    const [a, b, c] = await samePort(['a', 'b', 'c'], ['127.0.0.2', '127.0.0.3', '127.0.0.4']);
    const P = a.port;
    const dns = await startDnsmasq({ hosts: [`127.0.0.2 blue.shop.test`], ttl: 1 });
    const g = await startGw(dnsConfig({ blue: { weight: 1, dns: { name: 'blue.shop.test', port: P, interval: '30s', resolver: dns.server } } }));
    expect(g.gw.ready()).toBe(true);
    expect(ids(g)).toEqual([`127.0.0.2:${P}`]);
    expect(JSON.parse((await get(g.url)).body).name).toBe('a');

    // Light traffic while records are added: time from the change to the first request
    // reaching the new address.
    let stop = false;
    const traffic = load(g.url, { concurrency: 2, until: () => stop, ratePerWorker: 50 });
    const t0 = Date.now();
    await dns.setHosts([`127.0.0.2 blue.shop.test`, `127.0.0.3 blue.shop.test`, `127.0.0.4 blue.shop.test`]);
    await waitFor(() => b.times.length > 0 && c.times.length > 0, { timeout: 8000, message: 'new addresses take traffic' });
    const added = Math.max(b.times[0], c.times[0]) - t0;
    expect(ids(g)).toEqual([`127.0.0.2:${P}`, `127.0.0.3:${P}`, `127.0.0.4:${P}`]);
    // The endpoint that stayed is the same object (its state survives the update).
    const kept = g.gw.dataplane.endpointsOf('shop', 'blue').find((e) => e.id === `127.0.0.3:${P}`)!;

    const t1 = Date.now();
    await dns.setHosts([`127.0.0.3 blue.shop.test`]);
    await waitFor(() => ids(g).length === 1, { timeout: 8000, message: 'removed addresses leave' });
    const removed = Date.now() - t1;
    expect(ids(g)).toEqual([`127.0.0.3:${P}`]);
    expect(g.gw.dataplane.endpointsOf('shop', 'blue')[0]).toBe(kept);
    const aAfter = a.times.length;
    await sleep(500);
    stop = true;
    const r = await traffic;
    expect(r.failed).toBe(0);
    // Nothing new reached the removed addresses once they left (a request dispatched
    // just before may still arrive within a few ms).
    expect(a.times.filter((t) => t > t1 + removed + 100).length).toBe(0);
    expect(a.times.length - aAfter).toBeLessThanOrEqual(2);
    // TTL 1 s bounds the re-resolution, not the 30 s interval.
    expect(added).toBeLessThan(5000);
    expect(removed).toBeLessThan(5000);
    const st = await dnsStatus(g);
    expect(st.queries[0]).toMatchObject({ kind: 'a', name: 'blue.shop.test', resolver: dns.server, records: 1, ttl: 1, errors: 0 });
    report('follow A records (TTL 1s, interval 30s)', { addedToFirstRequestMs: added, removedMs: removed, requests: r.sent, failed: r.failed });
  });

  it('drains a removed address under load: in-flight requests finish, 0 failed', async () => {
    const [a, b] = await samePort(['a', 'b'], ['127.0.0.2', '127.0.0.3'], 40);
    const P = a.port;
    const dns = await startDnsmasq({ hosts: [`127.0.0.2 drain.shop.test`, `127.0.0.3 drain.shop.test`], ttl: 1 });
    const g = await startGw(dnsConfig({ blue: { weight: 1, dns: { name: 'drain.shop.test', port: P, interval: '300ms', resolver: dns.server } } }));
    expect(ids(g)).toEqual([`127.0.0.2:${P}`, `127.0.0.3:${P}`]);
    let stop = false;
    const traffic = load(g.url, { concurrency: 8, until: () => stop });
    await waitFor(() => a.times.length > 20 && b.times.length > 20, { timeout: 10_000, message: 'both take load' });
    // The drain has real work: a request held by a (sent until one lands there) is in
    // flight when a leaves the DNS answer; it is released only once a is draining.
    const heldAnswers: Promise<{ status: number; body: string }>[] = [];
    while (a.held === 0) {
      heldAnswers.push(get(`${g.url}/held`));
      await waitFor(() => a.held + b.held === heldAnswers.length, { message: 'the held request arrived' });
    }
    const t0 = Date.now();
    await dns.setHosts([`127.0.0.3 drain.shop.test`]);
    const draining = await waitFor(() => g.logs.find((l) => l.msg === 'endpoint draining' && l.endpoint === `127.0.0.2:${P}`), { timeout: 10_000, message: 'a drains' });
    const followMs = draining.time - t0;
    expect(g.logs.some((l) => l.msg === 'endpoint drained' && l.endpoint === `127.0.0.2:${P}`)).toBe(false);
    a.release();
    b.release();
    for (const h of heldAnswers) expect((await h).status).toBe(200);
    await waitFor(() => g.logs.some((l) => l.msg === 'endpoint drained' && l.endpoint === `127.0.0.2:${P}`), { timeout: 10_000, message: 'a drained' });
    const aCount = a.times.length;
    // Gone for good: the old backend can stop now without a single failed request.
    await a.close();
    const bAfter = b.times.length;
    await waitFor(() => b.times.length > bAfter + 50, { message: 'traffic goes on without a' });
    stop = true;
    const r = await traffic;
    expect(r.failed).toBe(0);
    expect(r.statuses[200]).toBe(r.sent);
    expect(a.times.length).toBe(aCount);
    expect(a.times.filter((t) => t > draining.time + 100).length).toBe(0);
    // The drain had real work: requests were in flight on a when it started draining.
    expect(draining.inflight).toBeGreaterThan(0);
    expect(ids(g)).toEqual([`127.0.0.3:${P}`]);
    report('drain under load', { followMs, inflightAtDrain: draining.inflight, requests: r.sent, failed: r.failed, toA: aCount, toB: b.times.length });
  });

  it('resolves AAAA records too (ids [v6]:port)', async () => {
    const [v4, v6] = await samePort(['v4', 'v6'], ['127.0.0.2', '::1']);
    const dns = await startDnsmasq({ hosts: ['127.0.0.2 both.shop.test', '::1 both.shop.test'] });
    const g = await startGw(dnsConfig({ blue: { weight: 1, dns: { name: 'both.shop.test', port: v4.port, interval: '1s', resolver: dns.server } } }));
    expect(ids(g)).toEqual([`127.0.0.2:${v4.port}`, `[::1]:${v6.port}`]);
    const r = await load(g.url, { concurrency: 2, count: 40 });
    expect(r.failed).toBe(0);
    expect(r.byName.v4).toBeGreaterThan(0);
    expect(r.byName.v6).toBeGreaterThan(0);
  });

  it('DNS server down: the last set keeps serving and staleness rises; back: staleness 0 and changes followed', async () => {
    const [a, b] = await samePort(['a', 'b'], ['127.0.0.2', '127.0.0.3']);
    const P = a.port;
    const dns = await startDnsmasq({ hosts: [`127.0.0.2 stale.shop.test`], ttl: 1 });
    const g = await startGw(dnsConfig({ blue: { weight: 1, dns: { name: 'stale.shop.test', port: P, interval: '500ms', resolver: dns.server } } }));
    expect(ids(g)).toEqual([`127.0.0.2:${P}`]);
    await waitFor(async () => (await staleness(g)) === 0, { timeout: 5000, message: 'staleness 0 while resolving' });

    await dns.stop();
    const down = Date.now();
    await waitFor(async () => ((await staleness(g)) ?? 0) > 1.5, { timeout: 10_000, message: 'staleness rises' });
    const s1 = (await staleness(g))!;
    const r = await load(g.url, { concurrency: 4, count: 200 });
    const s2 = (await staleness(g))!;
    expect(r.failed).toBe(0);
    expect(r.byName.a).toBe(200);
    expect(s2).toBeGreaterThan(s1);
    expect(ids(g)).toEqual([`127.0.0.2:${P}`]);
    expect(g.gw.ready()).toBe(true);
    const st = await dnsStatus(g);
    expect(st.queries[0].errors).toBeGreaterThan(0);
    expect(st.queries[0].lastError).toMatch(/ECONNREFUSED|ETIMEOUT|ECONNRESET/);
    expect(g.logs.some((l) => l.msg === 'dns: resolution failed; the last endpoints keep serving')).toBe(true);

    // Back with a changed answer: followed, and staleness returns to 0.
    await dns.start();
    await dns.setHosts([`127.0.0.3 stale.shop.test`]);
    const back = Date.now();
    await waitFor(() => ids(g).length === 1 && ids(g)[0] === `127.0.0.3:${P}`, { timeout: 15_000, message: 'follows after the server returns' });
    const followMs = Date.now() - back;
    expect(await staleness(g)).toBe(0);
    expect(JSON.parse((await get(g.url)).body).name).toBe('b');
    report('DNS server down', { downForMs: back - down, staleness: [s1, s2], servedWhileDown: r.ok, followAfterReturnMs: followMs });
  });
});

describe('dns discovery (reload)', () => {
  it('a reload follows a changed name and port, and a version moved to static endpoints stops its query', async () => {
    const [a, b] = await samePort(['a', 'b'], ['127.0.0.2', '127.0.0.3']);
    const other = await upstreamAt('other', '127.0.0.3');
    const dns = await startDnsmasq({ hosts: ['127.0.0.2 one.shop.test', '127.0.0.3 two.shop.test'] });
    const cfg = (blue: Record<string, unknown>) => dnsConfig({ blue: { weight: 1, ...blue } });
    const g = await startGw(cfg({ dns: { name: 'one.shop.test', port: a.port, interval: '1s', resolver: dns.server } }));
    expect(ids(g)).toEqual([`127.0.0.2:${a.port}`]);
    writeFileSync(g.file, stringify(cfg({ dns: { name: 'two.shop.test', port: b.port, interval: '1s', resolver: dns.server } })));
    expect(g.gw.reload()).toEqual([]);
    await waitFor(() => ids(g).length === 1 && ids(g)[0] === `127.0.0.3:${b.port}`, { timeout: 8000, message: 'new name followed' });
    expect(JSON.parse((await get(g.url)).body).name).toBe('b');
    writeFileSync(g.file, stringify(cfg({ endpoints: [`127.0.0.3:${other.port}`] })));
    expect(g.gw.reload()).toEqual([]);
    await waitFor(() => ids(g).length === 1 && ids(g)[0] === `127.0.0.3:${other.port}`, { timeout: 8000, message: 'static endpoints' });
    expect(JSON.parse((await get(g.url)).body).name).toBe('other');
    expect(JSON.parse((await get(`${g.controlUrl}/v1/status`)).body).discovery?.dns).toBeUndefined();
    expect(await staleness(g)).toBeUndefined();
  });
});

describe('dns discovery (empty answers)', () => {
  it('an empty answer is applied only after emptyGrace; records back within the grace keep the same endpoints', async () => {
    const [a] = await samePort(['a'], ['127.0.0.2']);
    const P = a.port;
    const dns = await startDnsmasq({ hosts: [`127.0.0.2 green.shop.test`], ttl: 1 });
    const g = await startGw(dnsConfig({ green: { weight: 1, dns: { name: 'green.shop.test', port: P, interval: '200ms', emptyGrace: '2s', resolver: dns.server } } }));
    expect(ids(g, 'green')).toEqual([`127.0.0.2:${P}`]);
    const ep = g.gw.dataplane.endpointsOf('shop', 'green')[0];

    // 1. Empty (NXDOMAIN) for less than the grace, then back: nothing changes.
    await dns.setHosts(['127.0.0.9 other.shop.test']);
    await waitFor(async () => (await dnsStatus(g)).held.length === 1, { timeout: 5000, message: 'held' });
    const held = await dnsStatus(g);
    expect(held.queries[0].emptyForSeconds).toBeGreaterThanOrEqual(0);
    expect(held.held[0]).toMatchObject({ service: 'shop', version: 'green', endpoints: 1 });
    expect((await get(g.url)).status).toBe(200);
    await sleep(500);
    await dns.setHosts([`127.0.0.2 green.shop.test`]);
    await waitFor(async () => (await dnsStatus(g)).held.length === 0, { timeout: 5000, message: 'hold ends' });
    expect(g.gw.dataplane.endpointsOf('shop', 'green')[0]).toBe(ep);
    expect(ep.draining).toBe(false);
    expect(g.logs.some((l) => l.msg === 'endpoint draining')).toBe(false);

    // 2. Empty for longer than the grace: served until the grace ends, then emptied.
    await dns.setHosts(['127.0.0.9 other.shop.test']);
    const holding = await waitFor(() => g.logs.filter((l) => l.msg === 'dns: the name answers empty; keeping the last endpoints for emptyGrace')[1], { timeout: 5000, message: 'held again' });
    let stop = false;
    const traffic = load(g.url, { concurrency: 2, until: () => stop, ratePerWorker: 50, ok: () => true });
    // Served while held (a fixed sleep here, then a look at the endpoints, raced the
    // grace's end on a loaded machine): requests reach the held endpoint...
    await waitFor(() => a.times.filter((t) => t > holding.time).length > 10, { timeout: 6000, message: 'traffic on the held endpoint' });
    // ...until the grace is over, and only then is the version emptied.
    const applied = await waitFor(() => g.logs.find((l) => l.msg === 'dns: the name stayed empty for emptyGrace; the version has no endpoints now'), { timeout: 6000, message: 'applied after grace' });
    const servedDuringGrace = a.times.filter((t) => t > holding.time && t <= applied.time).length;
    await waitFor(() => ids(g, 'green').length === 0, { timeout: 2000 });
    await sleep(300);
    stop = true;
    const r = await traffic;
    const heldMs = applied.time - holding.time;
    expect(heldMs).toBeGreaterThanOrEqual(1700);
    expect(heldMs).toBeLessThan(2000 + 2500);
    expect(servedDuringGrace).toBeGreaterThan(10);
    expect(r.statuses[503]).toBeGreaterThan(0);
    const after = await get(g.url);
    expect(after.status).toBe(503);
    expect(JSON.parse(after.body).error.code).toBe('NO_HEALTHY_UPSTREAM');
    report('empty answer', { emptyGraceMs: 2000, heldMs, servedDuringGrace, statuses: r.statuses });
  });
});

describe('dns discovery (SRV records)', () => {
  it('SRV records give the ports (lowest priority only); a changed SRV set is followed', async () => {
    const a = await upstreamAt('a', '127.0.0.2');
    const b = await upstreamAt('b', '127.0.0.3');
    const backup = await upstreamAt('backup', '127.0.0.4');
    const b2 = await upstreamAt('b2', '127.0.0.3');
    const dns = await startDnsmasq({
      hosts: ['127.0.0.2 a.shop.test', '127.0.0.3 b.shop.test', '127.0.0.4 backup.shop.test'],
      srv: [`_http._tcp.shop.test,a.shop.test,${a.port},0,10`, `_http._tcp.shop.test,b.shop.test,${b.port},0,10`, `_http._tcp.shop.test,backup.shop.test,${backup.port},10,10`],
    });
    const g = await startGw(dnsConfig({ blue: { weight: 1, dns: { srv: '_http._tcp.shop.test', interval: '300ms', resolver: dns.server } } }));
    expect(ids(g)).toEqual([`127.0.0.2:${a.port}`, `127.0.0.3:${b.port}`]);
    const r = await load(g.url, { concurrency: 2, count: 60 });
    expect(r.failed).toBe(0);
    expect(r.byName.a).toBeGreaterThan(0);
    expect(r.byName.b).toBeGreaterThan(0);
    expect(backup.times.length).toBe(0);

    // A new SRV set (b moved to another port): dnsmasq reads --srv-host only at start.
    await dns.stop();
    const t0 = Date.now();
    await dns.start([`_http._tcp.shop.test,a.shop.test,${a.port},0,10`, `_http._tcp.shop.test,b.shop.test,${b2.port},0,10`]);
    await waitFor(() => ids(g).includes(`127.0.0.3:${b2.port}`), { timeout: 10_000, message: 'new SRV port followed' });
    const followMs = Date.now() - t0;
    expect(ids(g)).toEqual([`127.0.0.2:${a.port}`, `127.0.0.3:${b2.port}`]);
    const r2 = await load(g.url, { concurrency: 2, count: 60 });
    expect(r2.failed).toBe(0);
    expect(r2.byName.b2).toBeGreaterThan(0);
    expect(r2.byName.b ?? 0).toBe(0);

    // Only the backup left: the lowest priority present is used.
    await dns.stop();
    await dns.start([`_http._tcp.shop.test,backup.shop.test,${backup.port},10,10`]);
    await waitFor(() => ids(g).length === 1 && ids(g)[0] === `127.0.0.4:${backup.port}`, { timeout: 10_000, message: 'backup used when alone' });
    expect(JSON.parse((await get(g.url)).body).name).toBe('backup');
    const st = await dnsStatus(g);
    expect(st.queries[0]).toMatchObject({ kind: 'srv', name: '_http._tcp.shop.test', records: 1 });
    report('SRV', { followAfterRestartMs: followMs });
  });
});

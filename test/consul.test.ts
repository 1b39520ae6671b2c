// Consul discovery against a real Consul agent (1.8.7, `-dev`, on free loopback ports),
// real node:http upstreams and a real gateway (in-process, so tests can read endpoint
// state and logs; a real process for self-registration and SIGTERM).
//
// The agent binary comes from SWITCHYARD_CONSUL_BIN, scripts/ensure-test-deps.sh
// (.tools/consul) or PATH. When
// it is missing this suite FAILS, naming the fix; it never skips silently.
//
// Measured figures are printed ([consul] lines); bounds are the documented ones plus
// slack for a shared 2-core machine.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { ConfigError, loadConfigText } from '../config/load.js';
import { load, shopConfig, startInProcess, startProcess, startTrackedUpstream, waitFor, type GatewayProcess, type Upstream, discoveryStaleness, httpGet, type InProcessGateway } from './helpers.js';
import { agents, consulPut, deregister, fixedPort, maintenance, register, startConsul, type ConsulAgent } from './consul-agent.js';

// ---------------------------------------------------------------------------------
// The Consul agent: test/consul-agent.ts


// ---------------------------------------------------------------------------------
// Upstreams and the gateway

type Gw = InProcessGateway;

type Versions = Record<string, { weight: number; consul?: Record<string, unknown>; endpoints?: string[] }>;

function gatewayConfig(consulUrl: string, versions: Versions, consulExtra: Record<string, unknown> = {}, extraServices: Record<string, unknown> = {}): Record<string, unknown> {
  const c = shopConfig(
    versions as Parameters<typeof shopConfig>[0],
    { override: { header: 'x-switchyard-version' }, retries: { attempts: 1 } },
    { log: { level: 'info' }, discovery: { consul: { address: consulUrl, wait: '10s', ...consulExtra } } },
  );
  return { ...c, services: { ...(c.services as object), ...extraServices } };
}

async function startGw(config: Record<string, unknown>): Promise<Gw> {
  const g = await startInProcess(config, { captureLogs: true });
  cleanups.push(() => g.close());
  return g;
}

const ids = (g: Gw, version: string, service = 'shop'): string[] => g.gw.dataplane.endpointsOf(service, version).map((e) => e.id).sort();

const get = httpGet;

const staleness = (g: Gw): Promise<number | undefined> => discoveryStaleness(g.adminUrl, 'consul');

async function status(g: Gw): Promise<Record<string, any>> {
  return JSON.parse((await get(`${g.controlUrl}/v1/status`)).body);
}

const report = (label: string, figures: Record<string, unknown>): void => console.log(`[consul] ${label}: ${JSON.stringify(figures)}`);

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await Promise.resolve(fn()).catch(() => {});
});
afterAll(async () => {
  for (const a of [...agents]) await a.stop('SIGKILL');
});

function upstream<T extends Upstream>(u: T): T {
  cleanups.push(() => u.close());
  return u;
}

// ---------------------------------------------------------------------------------

describe('consul config', () => {
  const base = (versions: string, discovery = ''): string => `
${discovery}
services:
  shop:
    routes: [{ path: / }]
    versions:
${versions}
`;
  it('accepts consul sources with discovery.consul, and normalizes it', () => {
    const c = loadConfigText(
      base(
        '      blue: { weight: 1, consul: { service: shop, tag: blue } }\n      green: { weight: 0, consul: { service: shop, meta: { version: green } } }',
        'discovery:\n  consul: { address: "http://127.0.0.1:8500/", token: "${CONSUL_TOKEN:-}", datacenter: dc1, stale: true, register: { name: edge, tags: [a] } }',
      ),
      {},
    );
    expect(c.services[0].versions.map((v) => v.source)).toEqual([
      { kind: 'consul', service: 'shop', tag: 'blue', meta: undefined },
      { kind: 'consul', service: 'shop', tag: undefined, meta: { version: 'green' } },
    ]);
    expect(c.discovery.consul).toMatchObject({ address: 'http://127.0.0.1:8500', token: undefined, datacenter: 'dc1', stale: true, waitMs: 30_000, startWithoutSnapshot: false });
    expect(c.discovery.consul!.register).toEqual({ name: 'edge', id: undefined, address: undefined, port: undefined, tags: ['a'], checkIntervalMs: 10_000, checkTimeoutMs: 2000 });
  });

  it('refuses a consul source without discovery.consul, a bad wait, unknown keys, tls on a consul source', () => {
    const problems = (text: string): string[] => {
      try {
        loadConfigText(text, {});
      } catch (err) {
        return (err as ConfigError).problems;
      }
      return [];
    };
    expect(problems(base('      blue: { weight: 1, consul: { service: shop } }'))).toEqual(['services.shop.versions.blue.consul: needs discovery.consul (the Consul agent to ask)']);
    expect(problems(base('      blue: { weight: 1, consul: { service: shop } }', 'discovery:\n  consul: { wait: 20m }'))).toEqual(['discovery.consul.wait: must be from 1s to 10m (Consul caps a blocking query at 10m)']);
    expect(problems(base('      blue: { weight: 1, consul: { service: shop } }', 'discovery:\n  consul: { adress: "http://x:8500" }'))).toEqual(['discovery.consul.adress: unknown key']);
    expect(problems(base('      blue: { weight: 1, consul: { service: shop } }', 'discovery:\n  consul: { register: { tags: [a] } }'))).toEqual(['discovery.consul.register.name: is required']);
    // dns sources are supported now (test/dns.test.ts); tls is not for Consul instances.
    expect(problems(base('      blue: { weight: 1, consul: { service: shop }, tls: { verify: false } }', 'discovery:\n  consul: {}'))).toEqual(['services.shop.versions.blue.tls: Consul instances are dialed over HTTP; tls applies to https:// endpoints and dns sources']);
  });
});

describe('consul discovery (shared agent)', () => {
  let consul: ConsulAgent;
  beforeAll(async () => {
    consul = await startConsul();
  });

  it('routes blue and green instances registered with tags, and with meta, to the right versions', async () => {
    const [b1, b2, g1, mb, mg] = await Promise.all(['b1', 'b2', 'g1', 'mb', 'mg'].map((n) => startTrackedUpstream(n).then(upstream)));
    await register(consul, { ID: 'tags-b1', Name: 'tags', Port: b1.port, Tags: ['blue'] });
    await register(consul, { ID: 'tags-b2', Name: 'tags', Port: b2.port, Tags: ['blue', 'canary'] });
    await register(consul, { ID: 'tags-g1', Name: 'tags', Port: g1.port, Tags: ['green'] });
    await register(consul, { ID: 'meta-b', Name: 'meta', Port: mb.port, Meta: { version: 'blue' } });
    await register(consul, { ID: 'meta-g', Name: 'meta', Port: mg.port, Meta: { version: 'green', zone: 'a' } });

    const g = await startGw(
      gatewayConfig(
        consul.url,
        { blue: { weight: 1, consul: { service: 'tags', tag: 'blue' } }, green: { weight: 1, consul: { service: 'tags', tag: 'green' } } },
        {},
        {
          shopmeta: {
            routes: [{ path: '/meta' }],
            versions: { blue: { weight: 1, consul: { service: 'meta', meta: { version: 'blue' } } }, green: { weight: 1, consul: { service: 'meta', meta: { version: 'green' } } } },
            override: { header: 'x-switchyard-version' },
          },
        },
      ),
    );
    // startGateway resolved with Consul up: the first snapshot is in, ready at once.
    expect((await get(`${g.adminUrl}/ready`)).status).toBe(200);
    expect(ids(g, 'blue')).toEqual([`tags-b1@127.0.0.1:${b1.port}`, `tags-b2@127.0.0.1:${b2.port}`]);
    expect(ids(g, 'green')).toEqual([`tags-g1@127.0.0.1:${g1.port}`]);
    expect(ids(g, 'blue', 'shopmeta')).toEqual([`meta-b@127.0.0.1:${mb.port}`]);
    expect(ids(g, 'green', 'shopmeta')).toEqual([`meta-g@127.0.0.1:${mg.port}`]);

    const names = async (path: string, version: string): Promise<Set<string>> => {
      const seen = new Set<string>();
      for (let i = 0; i < 30; i++) {
        const r = await get(`${g.url}${path}`, { 'x-switchyard-version': version });
        expect(r.status).toBe(200);
        seen.add(JSON.parse(r.body).name);
      }
      return seen;
    };
    expect([...(await names('/', 'blue'))].sort()).toEqual(['b1', 'b2']);
    expect([...(await names('/', 'green'))]).toEqual(['g1']);
    expect([...(await names('/meta', 'blue'))]).toEqual(['mb']);
    expect([...(await names('/meta', 'green'))]).toEqual(['mg']);

    // The control API shows the Consul ids, and /v1/status the provider's state.
    const svc = JSON.parse((await get(`${g.controlUrl}/v1/services/shop`)).body);
    expect(svc.versions.green.endpoints.map((e: { id: string }) => e.id)).toEqual([`tags-g1@127.0.0.1:${g1.port}`]);
    const st = await status(g);
    expect(st.discovery.consul.ready).toBe(true);
    expect(st.discovery.consul.stalenessSeconds).toBe(0);
    expect(st.discovery.consul.watches.length).toBe(3); // tags/blue, tags/green, meta
    expect(await staleness(g)).toBe(0);

    // The admin drain takes a Consul id (URL-encoded).
    const id = `tags-b2@127.0.0.1:${b2.port}`;
    const res = await request(`${g.controlUrl}/v1/services/shop/endpoints/${encodeURIComponent(id)}/drain`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(res.statusCode, await res.body.text()).toBe(200);
    expect(g.gw.dataplane.endpointsOf('shop', 'blue').find((e) => e.id === id)?.state).toBe('draining');
    for (const sid of ['tags-b1', 'tags-b2', 'tags-g1', 'meta-b', 'meta-g']) await deregister(consul, sid);
  });

  it('a new instance registered under load takes traffic within 1 s; a deregistered one drains with 0 failed requests', { timeout: 60_000 }, async () => {
    const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((n) => startTrackedUpstream(n, { delayMs: 15 }).then(upstream)));
    await register(consul, { ID: 'roll-a', Name: 'roll', Port: a.port, Tags: ['blue'] });
    await register(consul, { ID: 'roll-b', Name: 'roll', Port: b.port, Tags: ['blue'] });
    const g = await startGw(gatewayConfig(consul.url, { blue: { weight: 1, consul: { service: 'roll', tag: 'blue' } } }));
    expect(ids(g, 'blue')).toEqual([`roll-a@127.0.0.1:${a.port}`, `roll-b@127.0.0.1:${b.port}`]);
    const endpointB = g.gw.dataplane.endpointsOf('shop', 'blue').find((e) => e.id.startsWith('roll-b@'))!;

    let stop = false;
    const running = load(`${g.url}/`, { concurrency: 8, ratePerWorker: 40, until: () => stop });
    await waitFor(() => a.times.length > 20 && b.times.length > 20, { timeout: 10_000, message: 'traffic on a and b' });

    // A new instance: traffic within 1 s of its registration.
    const t0 = Date.now();
    await register(consul, { ID: 'roll-c', Name: 'roll', Port: c.port, Tags: ['blue'] });
    await waitFor(() => c.times.length > 0, { timeout: 5000, message: 'traffic on the new instance' });
    const firstTrafficMs = c.times[0] - t0;

    // Deregistration under load: a drains; its in-flight requests finish.
    const inflightBefore = a.inflight;
    const t1 = Date.now();
    await deregister(consul, 'roll-a');
    await waitFor(() => g.logs.find((o) => o.msg === 'endpoint drained' && String(o.endpoint).startsWith('roll-a@')), { timeout: 5000, message: 'roll-a drained' });
    const drainedMs = Date.now() - t1;
    const servedAfter = a.times.length;
    await sleep(500);
    expect(a.times.length).toBe(servedAfter); // nothing new after the drain
    stop = true;
    const r = await running;

    report('new instance and deregistration under load', { sent: r.sent, failed: r.failed, firstTrafficMs, drainedMs, inflightAtDeregistration: inflightBefore, byName: r.byName });
    expect(r.failed, r.errors.join('\n')).toBe(0);
    expect(firstTrafficMs).toBeLessThan(1000);
    expect(ids(g, 'blue')).toEqual([`roll-b@127.0.0.1:${b.port}`, `roll-c@127.0.0.1:${c.port}`]);
    // The same Endpoint object (its health, ejection and in-flight state) survived every update.
    expect(g.gw.dataplane.endpointsOf('shop', 'blue').find((e) => e.id.startsWith('roll-b@'))).toBe(endpointB);
    for (const id of ['roll-b', 'roll-c']) await deregister(consul, id);
  });

  it('asks the configured datacenter (with stale reads); an unknown datacenter is an error, not an empty answer', async () => {
    const up = upstream(await startTrackedUpstream('a'));
    await register(consul, { ID: 'dc-a', Name: 'dcsvc', Port: up.port });
    const versions = { blue: { weight: 1, consul: { service: 'dcsvc' } } };
    const g = await startGw(gatewayConfig(consul.url, versions, { datacenter: 'dc1', stale: true }));
    expect(ids(g, 'blue')).toEqual([`dc-a@127.0.0.1:${up.port}`]);
    const g2 = await startGw(gatewayConfig(consul.url, versions, { datacenter: 'elsewhere' }));
    expect((await get(`${g2.adminUrl}/ready`)).status).toBe(503);
    expect((await status(g2)).discovery.consul.watches[0].lastError).toMatch(/datacenter/i);
    await deregister(consul, 'dc-a');
  });

  it('a reload follows the sources the new config names (another tag, a static version turned Consul)', async () => {
    const [a, b, s] = await Promise.all(['a', 'b', 's'].map((n) => startTrackedUpstream(n).then(upstream)));
    await register(consul, { ID: 'rl-a', Name: 'rl', Port: a.port, Tags: ['v1'] });
    await register(consul, { ID: 'rl-b', Name: 'rl', Port: b.port, Tags: ['v2'] });
    const g = await startGw(gatewayConfig(consul.url, { blue: { weight: 1, consul: { service: 'rl', tag: 'v1' } }, green: { weight: 1, endpoints: [s.address] } }));
    expect(ids(g, 'blue')).toEqual([`rl-a@127.0.0.1:${a.port}`]);
    expect(ids(g, 'green')).toEqual([s.address]);
    const next = gatewayConfig(consul.url, { blue: { weight: 1, consul: { service: 'rl', tag: 'v2' } }, green: { weight: 1, consul: { service: 'rl', tag: 'v1' } } });
    writeFileSync(g.file, JSON.stringify(next)); // JSON is YAML
    expect(g.gw.reload()).toEqual([]);
    await waitFor(() => ids(g, 'blue').join() === `rl-b@127.0.0.1:${b.port}` && ids(g, 'green').join() === `rl-a@127.0.0.1:${a.port}`, { timeout: 5000, message: 'sets follow the reloaded config' });
    // The Consul endpoint that moved from blue to green is a new endpoint of green; the
    // static one of green was retired.
    expect((await status(g)).discovery.consul.watches.map((w: { tag: string }) => w.tag).sort()).toEqual(['v1', 'v2']);
    for (const id of ['rl-a', 'rl-b']) await deregister(consul, id);
  });

  it('coalesces a burst of registrations (one rebuild per 100 ms at most) and ignores answers that change nothing', async () => {
    const ups = await Promise.all(Array.from({ length: 20 }, (_, i) => startTrackedUpstream(`u${i}`).then(upstream)));
    await register(consul, { ID: 'burst-0', Name: 'burst', Port: ups[0].port, Meta: { version: 'blue' } });
    const g = await startGw(gatewayConfig(consul.url, { blue: { weight: 1, consul: { service: 'burst', meta: { version: 'blue' } } } }));
    let rebuilds = 0;
    g.gw.dataplane.subscribe(() => rebuilds++);
    rebuilds = 0;
    const changed = (): Record<string, unknown>[] => g.logs.filter((o) => o.msg === 'consul: endpoints changed');
    const before = changed().length;

    // 19 registrations in two bursts, the second once the first was delivered: Consul
    // applies each as a change of the answer, the provider delivers at most one set per
    // 100 ms, so fewer than 19 sets and at least two (a gap to measure).
    const burst = (from: number, to: number) => Promise.all(ups.slice(from, to).map((u, k) => register(consul, { ID: `burst-${from + k}`, Name: 'burst', Port: u.port, Meta: { version: 'blue' } })));
    await burst(1, 11);
    await waitFor(() => changed().length > before, { timeout: 5000, message: 'the first burst delivered' });
    await burst(11, 20);
    await waitFor(() => ids(g, 'blue').length === 20, { timeout: 5000, message: 'all 20 instances in' });
    const deliveries = changed().slice(before);
    const times = deliveries.map((o) => Number(o.time));
    const gaps = times.slice(1).map((t, i) => t - times[i]);
    report('burst of 19 registrations', { deliveries: deliveries.length, gapsMs: gaps, rebuilds });
    expect(deliveries.length).toBeGreaterThanOrEqual(2);
    expect(deliveries.length).toBeLessThan(19);
    for (const gap of gaps) expect(gap).toBeGreaterThanOrEqual(95);

    // An instance the version does not select (other meta) changes Consul's answer but
    // not the version's set: nothing is delivered, nothing rebuilt.
    await sleep(200);
    const n = changed().length;
    const r0 = rebuilds;
    await register(consul, { ID: 'burst-green', Name: 'burst', Port: ups[0].port, Meta: { version: 'green' } });
    // The provider did get the new answer (21 passing instances of the service)...
    await waitFor(async () => (await status(g)).discovery.consul.watches[0].instances === 21, { timeout: 5000, message: 'the answer with the green instance' });
    await sleep(300);
    expect(changed().length).toBe(n);
    expect(rebuilds).toBe(r0);
    for (let i = 0; i < 20; i++) await deregister(consul, `burst-${i}`);
    await deregister(consul, 'burst-green');
  });

  it('service maintenance on drains the instance; off brings it back; 0 failed requests', async () => {
    const [a, b] = await Promise.all(['a', 'b'].map((n) => startTrackedUpstream(n, { delayMs: 10 }).then(upstream)));
    await register(consul, { ID: 'maint-a', Name: 'maint', Port: a.port });
    await register(consul, { ID: 'maint-b', Name: 'maint', Port: b.port });
    const g = await startGw(gatewayConfig(consul.url, { blue: { weight: 1, consul: { service: 'maint' } } }));
    let stop = false;
    const running = load(`${g.url}/`, { concurrency: 6, ratePerWorker: 40, until: () => stop });
    await waitFor(() => a.times.length > 10, { timeout: 10_000, message: 'traffic on a' });

    const t0 = Date.now();
    await maintenance(consul, 'maint-a', true);
    await waitFor(() => g.logs.find((o) => o.msg === 'endpoint drained' && String(o.endpoint).startsWith('maint-a@')), { timeout: 5000, message: 'maint-a drained' });
    const drainedMs = Date.now() - t0;
    const count = a.times.length;
    await sleep(500);
    expect(a.times.length).toBe(count);
    expect(ids(g, 'blue')).toEqual([`maint-b@127.0.0.1:${b.port}`]);

    const t1 = Date.now();
    await maintenance(consul, 'maint-a', false);
    await waitFor(() => a.times.length > count, { timeout: 5000, message: 'maint-a back in rotation' });
    const backMs = a.times[count] - t1;
    stop = true;
    const r = await running;
    report('service maintenance', { sent: r.sent, failed: r.failed, drainedMs, backMs });
    expect(r.failed, r.errors.join('\n')).toBe(0);
    for (const id of ['maint-a', 'maint-b']) await deregister(consul, id);
  });

  it('a TTL check that expires takes the instance out of rotation (and a pass brings it back)', async () => {
    const [a, b] = await Promise.all(['a', 'b'].map((n) => startTrackedUpstream(n, { delayMs: 10 }).then(upstream)));
    await register(consul, { ID: 'ttl-a', Name: 'ttl', Port: a.port, Check: { CheckID: 'ttl-a-check', TTL: '2s', Status: 'passing' } });
    await register(consul, { ID: 'ttl-b', Name: 'ttl', Port: b.port });
    const t0 = Date.now();
    const g = await startGw(gatewayConfig(consul.url, { blue: { weight: 1, consul: { service: 'ttl' } } }));
    expect(ids(g, 'blue')).toHaveLength(2);
    let stop = false;
    const running = load(`${g.url}/`, { concurrency: 4, ratePerWorker: 40, until: () => stop });
    await waitFor(() => ids(g, 'blue').length === 1, { timeout: 10_000, message: 'ttl-a out after its TTL' });
    const outAfterMs = Date.now() - t0;
    expect(ids(g, 'blue')).toEqual([`ttl-b@127.0.0.1:${b.port}`]);
    await consulPut(consul, '/v1/agent/check/pass/ttl-a-check');
    await waitFor(() => ids(g, 'blue').length === 2, { timeout: 5000, message: 'ttl-a back after a pass' });
    stop = true;
    const r = await running;
    report('TTL expiry', { ttl: '2s', outAfterMs, sent: r.sent, failed: r.failed });
    expect(outAfterMs).toBeGreaterThanOrEqual(1900);
    expect(r.failed, r.errors.join('\n')).toBe(0);
    for (const id of ['ttl-a', 'ttl-b']) await deregister(consul, id);
  });
});

describe('consul discovery: Consul down, restarted, reset', () => {
  it('Consul stopped under load: 0 failed requests, staleness rises, still ready; started again (fresh state): follows new registrations', { timeout: 90_000 }, async () => {
    let consul = await startConsul();
    const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((n) => startTrackedUpstream(n, { delayMs: 10 }).then(upstream)));
    // A few writes, so the old agent's index is well past a fresh agent's.
    for (let i = 0; i < 5; i++) await register(consul, { ID: `pad-${i}`, Name: 'pad', Port: 1000 + i });
    await register(consul, { ID: 'down-a', Name: 'down', Port: a.port });
    await register(consul, { ID: 'down-b', Name: 'down', Port: b.port });
    const g = await startGw(gatewayConfig(consul.url, { blue: { weight: 1, consul: { service: 'down' } } }));
    let stop = false;
    const running = load(`${g.url}/`, { concurrency: 6, ratePerWorker: 40, until: () => stop });
    await waitFor(() => a.times.length > 10 && b.times.length > 10, { timeout: 10_000, message: 'traffic' });
    expect(await staleness(g)).toBe(0);

    const killedAt = Date.now();
    await consul.stop('SIGKILL');
    // Staleness grows while Consul is away (waited for, not slept: it is whole seconds
    // since the last answer, so at least 2 s pass here whatever the machine's load).
    await waitFor(async () => ((await staleness(g)) ?? 0) >= 2, { timeout: 15_000, message: 'staleness of 2 s' });
    const stale = await staleness(g);
    const st = await status(g);
    expect((await get(`${g.adminUrl}/ready`)).status).toBe(200);
    expect(stale).toBeGreaterThanOrEqual(2);
    expect(st.discovery.consul.stalenessSeconds).toBeGreaterThanOrEqual(2);
    expect(st.discovery.consul.watches[0].lastError).toBeTruthy();
    const servedWhileDown = { a: a.times.filter((t) => t > killedAt).length, b: b.times.filter((t) => t > killedAt).length };
    expect(servedWhileDown.a).toBeGreaterThan(0);
    expect(servedWhileDown.b).toBeGreaterThan(0);

    // A fresh -dev agent on the same HTTP port: empty at first (the provider holds the
    // last endpoints through the reset), then the instances re-register plus a new one.
    consul = await startConsul(consul.httpPort);
    const restartedAt = Date.now();
    // The provider reconnects (after its backoff) and finds the fresh, empty state: the
    // index went backwards, so it holds the last endpoints instead of emptying the version.
    await waitFor(async () => (await status(g)).discovery.consul.watches[0].resets >= 1, { timeout: 15_000, message: 'the provider saw the reset' });
    const reconnectMs = Date.now() - restartedAt;
    await sleep(300);
    expect(ids(g, 'blue')).toHaveLength(2);
    expect(g.logs.some((o) => o.msg === 'consul: Consul was reset and lists no instance of this version; keeping the last endpoints for now')).toBe(true);
    await register(consul, { ID: 'down-a', Name: 'down', Port: a.port });
    await register(consul, { ID: 'down-b', Name: 'down', Port: b.port });
    const t0 = Date.now();
    await register(consul, { ID: 'down-c', Name: 'down', Port: c.port });
    await waitFor(() => c.times.length > 0, { timeout: 10_000, message: 'the new instance takes traffic' });
    const newTrafficMs = c.times[0] - t0;
    await waitFor(async () => (await staleness(g)) === 0, { timeout: 10_000, message: 'staleness back to 0' });
    stop = true;
    const r = await running;
    const st2 = await status(g);
    report('Consul stopped and restarted under load', { sent: r.sent, failed: r.failed, stalenessWhileDown: stale, servedWhileDown, newTrafficMs, reconnectMs, resets: st2.discovery.consul.watches[0].resets });
    expect(r.failed, r.errors.join('\n')).toBe(0);
    expect(ids(g, 'blue')).toEqual([`down-a@127.0.0.1:${a.port}`, `down-b@127.0.0.1:${b.port}`, `down-c@127.0.0.1:${c.port}`]);
    expect(st2.discovery.consul.watches[0].resets).toBeGreaterThanOrEqual(1);
    await consul.stop('SIGKILL');
  });

  it('index going backwards (a new -dev agent with fresh state on the same port): the provider resets and resyncs', { timeout: 60_000 }, async () => {
    let consul = await startConsul();
    const [a, b, z] = await Promise.all(['a', 'b', 'z'].map((n) => startTrackedUpstream(n).then(upstream)));
    for (let i = 0; i < 5; i++) await register(consul, { ID: `pad-${i}`, Name: 'pad', Port: 1000 + i });
    await register(consul, { ID: 'reset-a', Name: 'reset', Port: a.port });
    await register(consul, { ID: 'reset-b', Name: 'reset', Port: b.port });
    const g = await startGw(gatewayConfig(consul.url, { blue: { weight: 1, consul: { service: 'reset' } } }));
    const before = (await status(g)).discovery.consul.watches[0].index;
    await consul.stop('SIGKILL');
    consul = await startConsul(consul.httpPort);
    // The fresh agent knows a different instance.
    await register(consul, { ID: 'reset-z', Name: 'reset', Port: z.port });
    const t0 = Date.now();
    await waitFor(() => ids(g, 'blue').join() === `reset-z@127.0.0.1:${z.port}`, { timeout: 15_000, message: 'resynced to the fresh agent' });
    const resyncMs = Date.now() - t0;
    const w = (await status(g)).discovery.consul.watches[0];
    report('index backwards', { indexBefore: before, indexAfter: w.index, resets: w.resets, resyncMs });
    expect(w.index).toBeLessThan(before);
    expect(w.resets).toBeGreaterThanOrEqual(1);
    expect(g.logs.some((o) => o.msg === 'consul: index went backwards (Consul reset or restored); resyncing')).toBe(true);
    expect(JSON.parse((await get(`${g.url}/`)).body).name).toBe('z');
    // And it keeps following (blocking queries on the new index).
    await register(consul, { ID: 'reset-a', Name: 'reset', Port: a.port });
    await waitFor(() => ids(g, 'blue').length === 2, { timeout: 5000, message: 'follows the fresh agent' });
    await consul.stop('SIGKILL');
  });

  it('start with Consul down: listeners up, /ready 503 until the first snapshot; startWithoutSnapshot: ready, 503 NO_HEALTHY_UPSTREAM', { timeout: 60_000 }, async () => {
    const port = await fixedPort();
    const up = upstream(await startTrackedUpstream('a'));
    const t0 = Date.now();
    const g = await startGw(gatewayConfig(`http://127.0.0.1:${port}`, { blue: { weight: 1, consul: { service: 'late' } } }));
    const startMs = Date.now() - t0;
    expect((await get(`${g.adminUrl}/ready`)).status).toBe(503);
    const r = await get(`${g.url}/`);
    expect(r.status).toBe(503);
    expect(JSON.parse(r.body).error.code).toBe('NO_HEALTHY_UPSTREAM');
    expect(await staleness(g)).toBeGreaterThan(0);

    const g2 = await startGw(gatewayConfig(`http://127.0.0.1:${port}`, { blue: { weight: 1, consul: { service: 'late' } } }, { startWithoutSnapshot: true }));
    expect((await get(`${g2.adminUrl}/ready`)).status).toBe(200);
    expect(JSON.parse((await get(`${g2.url}/`)).body).error.code).toBe('NO_HEALTHY_UPSTREAM');

    // Consul comes up knowing no instance of "late": its first answer is a snapshot, an
    // empty one. Ready means "discovery answered", not "has endpoints" (README, "Ready"),
    // so the gateway turns ready on it and answers 503 NO_HEALTHY_UPSTREAM until an
    // instance registers. Nothing is registered before ready is seen, so this order is
    // the only one possible.
    const consul = await startConsul(port);
    cleanups.push(() => consul.stop('SIGKILL'));
    const t1 = Date.now();
    await waitFor(async () => (await get(`${g.adminUrl}/ready`)).status === 200, { timeout: 15_000, message: 'ready after Consul came up' });
    const readyMs = Date.now() - t1;
    expect(ids(g, 'blue')).toEqual([]);
    const empty = await get(`${g.url}/`);
    expect(empty.status).toBe(503);
    expect(JSON.parse(empty.body).error.code).toBe('NO_HEALTHY_UPSTREAM');

    // An instance registers: both gateways follow it.
    await register(consul, { ID: 'late-a', Name: 'late', Port: up.port });
    await waitFor(() => ids(g, 'blue').length === 1, { timeout: 15_000, message: 'the registered instance reaches the gateway' });
    expect(JSON.parse((await get(`${g.url}/`)).body).name).toBe('a');
    await waitFor(async () => (await get(`${g2.url}/`)).status === 200, { timeout: 15_000, message: 'startWithoutSnapshot gateway follows too' });
    expect((await get(`${g.adminUrl}/ready`)).status).toBe(200);
    report('start with Consul down', { startGatewayMs: startMs, readyAfterConsulUpMs: readyMs });
    expect(startMs).toBeLessThan(5000);
  });
});

describe('consul over TLS with an ACL token', () => {
  it('verifies Consul with discovery.consul.ca and sends discovery.consul.token', { timeout: 60_000 }, async () => {
    // A throwaway CA and a server certificate for 127.0.0.1 (openssl from ensure-test-deps).
    const dir = mkdtempSync(join(tmpdir(), 'switchyard-consul-tls-'));
    const ssl = (args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
    ssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=switchyard-test-ca']);
    ssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'srv.key', '-out', 'srv.csr', '-subj', '/CN=127.0.0.1']);
    writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
    ssl(['x509', '-req', '-in', 'srv.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'srv.pem', '-days', '2', '-extfile', 'ext.cnf']);
    const httpsPort = await fixedPort();
    const token = 'root-token-switchyard-test';
    const consul = await startConsul(undefined, {
      token,
      args: ['-hcl', `ports { https = ${httpsPort} }`, '-hcl', `cert_file = "${dir}/srv.pem"`, '-hcl', `key_file = "${dir}/srv.key"`, '-hcl', `acl { enabled = true default_policy = "deny" tokens { master = "${token}" agent = "${token}" } }`],
    });
    cleanups.push(() => consul.stop('SIGKILL'));
    const up = upstream(await startTrackedUpstream('a'));
    await register(consul, { ID: 'tls-a', Name: 'tls', Port: up.port });
    const https = `https://127.0.0.1:${httpsPort}`;
    const versions = { blue: { weight: 1, consul: { service: 'tls' } } };
    const ca = join(dir, 'ca.pem');

    const g = await startGw(gatewayConfig(https, versions, { ca, token }));
    expect((await get(`${g.adminUrl}/ready`)).status).toBe(200);
    expect(ids(g, 'blue')).toEqual([`tls-a@127.0.0.1:${up.port}`]);
    expect(JSON.parse((await get(`${g.url}/`)).body).name).toBe('a');

    // Without the token, Consul's default-deny ACL filters every instance out: a real
    // (empty) answer, so a snapshot, but nothing to route to.
    const g2 = await startGw(gatewayConfig(https, versions, { ca }));
    expect(ids(g2, 'blue')).toEqual([]);
    expect((await get(`${g2.url}/`)).status).toBe(503);

    // Without the CA, Consul's certificate is not trusted: no snapshot, not ready, and
    // /v1/status says why.
    const g3 = await startGw(gatewayConfig(https, versions, { token }));
    expect((await get(`${g3.adminUrl}/ready`)).status).toBe(503);
    expect((await status(g3)).discovery.consul.watches[0].lastError).toMatch(/certificate|self.signed|verify/i);
  });
});

describe('consul self-registration', () => {
  let consul: ConsulAgent;
  let p: GatewayProcess | undefined;
  beforeAll(async () => {
    consul = await startConsul();
  });
  afterAll(async () => {
    await p?.stop('SIGKILL');
    await consul?.stop('SIGKILL');
  });

  it('registers with an HTTP check on /ready and deregisters as the first step of shutdown', { timeout: 60_000 }, async () => {
    const up = upstream(await startTrackedUpstream('a'));
    await register(consul, { ID: 'selfreg-a', Name: 'selfreg', Port: up.port });
    const config = gatewayConfig(consul.url, { blue: { weight: 1, consul: { service: 'selfreg' } } }, { register: { name: 'switchyard-gw', tags: ['edge'], checkInterval: '500ms' } });
    p = await startProcess({ ...config, shutdown: { drainDelay: '3s', grace: '5s' } });
    const gwPort = Number(p.url.split(':').pop());
    const passing = async (): Promise<any[]> => (await (await request(`${consul.url}/v1/health/service/switchyard-gw?passing`)).body.json()) as any[];
    const entries = await waitFor(async () => {
      const e = await passing();
      return e.length === 1 ? e : undefined;
    }, { timeout: 15_000, message: 'the gateway registered and its /ready check passing' });
    expect(entries[0].Service.Port).toBe(gwPort);
    expect(entries[0].Service.Tags).toEqual(['edge']);
    const check = entries[0].Checks.find((c: any) => c.ServiceID === entries[0].Service.ID);
    expect(check.Status).toBe('passing');
    expect(check.Type).toBe('http');

    const t0 = Date.now();
    p.proc.kill('SIGTERM');
    await waitFor(async () => {
      const svcs = (await (await request(`${consul.url}/v1/agent/services`)).body.json()) as Record<string, unknown>;
      return !Object.values(svcs).some((s: any) => s.Service === 'switchyard-gw');
    }, { timeout: 5000, interval: 20, message: 'deregistered' });
    const deregisteredMs = Date.now() - t0;
    // Still serving: the drain delay (3 s) has not passed.
    expect(p.proc.exitCode).toBeNull();
    expect((await get(`${p.url}/`)).status).toBe(200);
    expect(await p.exited).toBe(0);
    report('self-registration', { deregisteredAfterSigtermMs: deregisteredMs });
    expect(deregisteredMs).toBeLessThan(1500);
    p = undefined;
  });
});

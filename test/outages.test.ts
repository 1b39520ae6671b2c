// Outages of what the gateway depends on, under load, on real servers:
//  - Redis (state.store redis) flapping — frozen and thawed, killed and restarted empty,
//    several times — under two gateway processes: 0 failed data-plane requests, writes
//    fail fast (503) or succeed, never hang; afterwards the fleet converges.
//  - Consul (a consul source) flapping the same way: 0 failed data-plane requests, the
//    gateway stays ready, and afterwards follows Consul again.

import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { emptyLoadResult, load, shopConfig, startProcess, startUpstream, waitFor, type GatewayProcess, type LoadResult, type Upstream } from './helpers.js';
import { startRedis, type RedisServer } from './redis-server.js';
import { deregister, register, startConsul, type ConsulAgent } from './consul-agent.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

async function call(base: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: Json; ms: number }> {
  const t0 = Date.now();
  const r = await request(`${base}${path}`, {
    method: method as 'GET',
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    headersTimeout: 15_000,
    bodyTimeout: 15_000,
  });
  const text = await r.body.text();
  let json: Json = {};
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: r.statusCode, body: json, ms: Date.now() - t0 };
}

/** An upstream answering its name after a few ms (so requests overlap the outages). */
async function named(name: string): Promise<Upstream & { count: number }> {
  const up = (await startUpstream(name, (req, res, u) => {
    req.resume();
    (u as Upstream & { count: number }).count++;
    setTimeout(() => {
      const body = JSON.stringify({ name: u.name });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    }, 3);
  })) as Upstream & { count: number };
  up.count = 0;
  return up;
}

/** Load goes on until each run has answered more than minEach (a count, waited for). */
async function untilAnswered(progress: LoadResult[], minEach: number): Promise<void> {
  await waitFor(() => progress.every((p) => p.ok + p.failed > minEach), { timeout: 30_000, message: `more than ${minEach} answers per load` });
}

function expectNoFailures(results: LoadResult[], minEach: number): void {
  for (const r of results) {
    expect(r.failed, r.errors.join('\n')).toBe(0);
    expect(r.sent).toBeGreaterThan(minEach);
  }
}

describe('outages under load', () => {
  const procs: GatewayProcess[] = [];
  let redis: RedisServer | undefined;
  let consul: ConsulAgent | undefined;
  const ups: Upstream[] = [];

  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop('SIGKILL')));
    await redis?.stop();
    await consul?.stop('SIGKILL');
    await Promise.all(ups.map((u) => u.close()));
  });

  it('Redis flapping (frozen 3×, killed and restarted empty 2×) under 2 gateway processes: 0 failed requests, writes 200 or a fast 503, the fleet converges after', { timeout: 90_000 }, async () => {
    redis = await startRedis();
    const blue = await named('blue');
    const green = await named('green');
    ups.push(blue, green);
    const config = shopConfig(
      { blue: { weight: 50, endpoints: [blue.address] }, green: { weight: 50, endpoints: [green.address] } },
      {},
      { state: { store: 'redis', redis: { url: redis.url, prefix: 'outage' } } },
    );
    const [a, b] = [await startProcess(config), await startProcess(config)];
    procs.push(a, b);
    await waitFor(async () => (await call(a.controlUrl, 'GET', '/v1/replicas')).body.replicas?.length === 2, { timeout: 10_000, message: 'both replicas registered' });

    let stop = false;
    const progress = [emptyLoadResult(), emptyLoadResult()];
    const loads = [a, b].map((g, i) => load(`${g.url}/`, { concurrency: 4, ratePerWorker: 40, until: () => stop, progress: progress[i] }));
    const writes: { status: number; ms: number; phase: string }[] = [];
    const write = async (phase: string, i: number): Promise<void> => {
      const g = i % 2 === 0 ? a : b;
      const r = await call(g.controlUrl, 'PUT', '/v1/services/shop/weights', { weights: { blue: 50 + (i % 3), green: 50 } });
      writes.push({ status: r.status, ms: r.ms, phase });
    };
    await sleep(500);
    let i = 0;
    for (let round = 0; round < 3; round++) {
      redis.pause();
      await sleep(300);
      await write('frozen', i++);
      await sleep(1200);
      redis.resume();
      await sleep(800);
      await write('thawed', i++);
    }
    for (let round = 0; round < 2; round++) {
      await redis.stop();
      await write('down', i++);
      await sleep(700);
      await redis.restart();
      await sleep(1000);
      await write('back', i++);
    }
    await sleep(500);
    await untilAnswered(progress, 200);
    stop = true;
    const results = await Promise.all(loads);
    expectNoFailures(results, 200);
    // Both versions kept getting traffic from the last applied weights.
    expect(blue.count).toBeGreaterThan(100);
    expect(green.count).toBeGreaterThan(100);
    // A write while Redis is frozen or gone is refused fast, never hangs or half-applies.
    for (const w of writes.filter((x) => x.phase === 'frozen' || x.phase === 'down')) {
      expect(w.status).toBe(503);
      expect(w.ms).toBeLessThan(2500);
    }
    for (const w of writes) expect([200, 503]).toContain(w.status);
    // Afterwards: a write succeeds and both replicas apply the same revision and weights.
    const ok = await waitFor(
      async () => {
        const r = await call(b.controlUrl, 'PUT', '/v1/services/shop/weights', { weights: { blue: 30, green: 70 } });
        return r.status === 200 ? r : undefined;
      },
      { timeout: 15_000, interval: 250, message: 'a write succeeds after the outages' },
    );
    for (const g of [a, b]) {
      await waitFor(async () => {
        const s = (await call(g.controlUrl, 'GET', '/v1/services/shop')).body;
        return s.revision === ok.body.revision && s.weights.green === 70;
      }, { timeout: 10_000, message: 'replica converged' });
    }
    const stored = JSON.parse((await redis.client().get('outage:state'))!);
    expect(stored.services.shop.weights).toEqual({ blue: 30, green: 70 });
    await Promise.all([a, b].map((p) => p.stop('SIGKILL')));
  });

  it('Consul flapping (frozen 3×, killed and restarted with fresh state 2×) under load: 0 failed requests, still ready, follows Consul after', { timeout: 90_000 }, async () => {
    consul = await startConsul();
    const [x, y, z] = [await named('x'), await named('y'), await named('z')];
    ups.push(x, y, z);
    const registerAll = async (agent: ConsulAgent): Promise<void> => {
      await register(agent, { ID: 'flap-x', Name: 'flap', Port: x.port });
      await register(agent, { ID: 'flap-y', Name: 'flap', Port: y.port });
    };
    await registerAll(consul);
    const g = await startProcess({
      gateway: { listen: '127.0.0.1:0' },
      admin: { listen: '127.0.0.1:0' },
      control: { listen: '127.0.0.1:0' },
      state: { store: 'memory' },
      shutdown: { drainDelay: '0s', grace: '5s' },
      discovery: { consul: { address: consul.url, wait: '5s' } },
      services: { shop: { routes: [{ path: '/' }], versions: { blue: { weight: 1, consul: { service: 'flap' } } } } },
    });
    procs.push(g);
    await waitFor(async () => (await call(g.adminUrl, 'GET', '/ready')).status === 200, { timeout: 10_000, message: 'ready' });

    let stop = false;
    const progress = emptyLoadResult();
    const running = load(`${g.url}/`, { concurrency: 6, ratePerWorker: 40, until: () => stop, progress });
    // /ready is polled throughout: stale-but-safe keeps the gateway ready.
    const readiness: number[] = [];
    const poller = (async () => {
      while (!stop) {
        readiness.push((await call(g.adminUrl, 'GET', '/ready')).status);
        await sleep(100);
      }
    })();
    await sleep(500);
    for (let round = 0; round < 3; round++) {
      consul.pause();
      await sleep(2000);
      consul.resume();
      await sleep(1000);
    }
    for (let round = 0; round < 2; round++) {
      const port = consul.httpPort;
      await consul.stop('SIGKILL');
      await sleep(500);
      consul = await startConsul(port);
      await registerAll(consul);
      await sleep(1000);
    }
    // Following Consul again: a new instance takes traffic, a removed one stops.
    await register(consul, { ID: 'flap-z', Name: 'flap', Port: z.port });
    await waitFor(() => z.count > 10, { timeout: 15_000, message: 'the new instance takes traffic' });
    await deregister(consul, 'flap-x');
    await sleep(1500);
    const xAfter = x.count;
    await sleep(1000);
    await untilAnswered([progress], 500);
    stop = true;
    const r = await running;
    await poller;
    expectNoFailures([r], 500);
    expect(x.count).toBe(xAfter);
    expect(y.count).toBeGreaterThan(100);
    expect(readiness.length).toBeGreaterThan(50);
    expect(readiness.filter((s) => s !== 200)).toEqual([]);
    await g.stop('SIGKILL');
  });
});

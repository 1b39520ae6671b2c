// Three real gateway processes sharing one real redis-server act as one.

import { spawn } from 'node:child_process';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import { CLI, emptyLoadResult, failOnHeader, load, shopConfig, startProcess, startUpstream, waitFor, type GatewayProcess, type Upstream } from './helpers.js';
import { startRedis, type RedisServer } from './redis-server.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

async function api(base: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: Json; ms: number }> {
  const t0 = Date.now();
  const r = await request(`${base}${path}`, {
    method: method as 'GET',
    headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.statusCode, body: (await r.body.json()) as Json, ms: Date.now() - t0 };
}

function cli(args: string[], url: string): Promise<{ code: number | null; stdout: string; stderr: string; endedAt: number }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, SWITCHYARD_URL: url }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => resolve({ code, stdout, stderr, endedAt: Date.now() }));
  });
}

describe('fleet: 3 replicas on one redis', () => {
  let redis: RedisServer;
  let blue: Upstream;
  let green: Upstream;
  let gws: GatewayProcess[] = [];
  let prefix = '';
  let n = 0;

  const config = (extra: Json = {}): Json =>
    shopConfig(
      { blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } },
      { override: { header: 'x-switchyard-version' }, ...extra },
      { state: { store: 'redis', redis: { url: redis.url, prefix } }, shutdown: { drainDelay: '0s', grace: '5s' } },
    );

  const startFleet = async (count = 3, extra: Json = {}): Promise<GatewayProcess[]> => {
    prefix = `t${++n}`;
    gws = [];
    // Started together (each is pushed as it comes up, so afterEach stops every one that
    // did even if another failed).
    await Promise.all(Array.from({ length: count }, async () => void gws.push(await startProcess(config(extra)))));
    // Every replica sees the others in the registry.
    await waitFor(async () => (await api(gws[0].controlUrl, 'GET', '/v1/replicas')).body.replicas?.length === count, { timeout: 10_000 });
    return gws;
  };

  const weightsOn = async (g: GatewayProcess): Promise<Json> => (await api(g.controlUrl, 'GET', '/v1/services/shop')).body;

  beforeAll(async () => {
    redis = await startRedis();
    blue = await startUpstream('blue', (req, res, up) => {
      const slow = req.url?.startsWith('/slow');
      req.resume();
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ name: up.name }));
      }, slow ? 2000 : 2);
    });
    green = await startUpstream('green', failOnHeader);
  });

  afterEach(async () => {
    await Promise.all(gws.map((g) => g.stop('SIGKILL')));
    gws = [];
  });

  afterAll(async () => {
    await redis?.stop();
    await blue?.close();
    await green?.close();
  });

  it('a weight change made on one replica is applied on all three', async () => {
    const [a, b, c] = await startFleet();
    for (let i = 1; i <= 10; i++) {
      const w = { blue: 100 - i * 5, green: i * 5 };
      const put = await api(a.controlUrl, 'PUT', '/v1/services/shop/weights', { weights: w });
      expect(put.status).toBe(200);
      for (const g of [b, c]) {
        await waitFor(async () => {
          const s = await weightsOn(g);
          return s.revision === put.body.revision && s.weights.green === w.green;
        }, { timeout: 5000, interval: 5, message: `replica did not apply revision ${put.body.revision}` });
      }
    }
    // Traffic through every replica follows the new weights (green 50 of 100).
    for (const g of [a, b, c]) {
      const r = await load(`${g.url}/`, { concurrency: 4, count: 400 });
      expect(r.failed).toBe(0);
      expect(r.byName.green).toBeGreaterThan(140);
      expect(r.byName.blue).toBeGreaterThan(140);
    }
    // The events are the fleet's: every replica lists the same history.
    const ev = await Promise.all([a, b, c].map(async (g) => (await api(g.controlUrl, 'GET', '/v1/events')).body.events.map((e: Json) => e.id)));
    expect(ev[1]).toEqual(ev[0]);
    expect(ev[2]).toEqual(ev[0]);
    expect(ev[0]).toHaveLength(10);
  });

  it('cutover --wait returns only after every replica applied it and a 2 s request on another replica finished', async () => {
    const [a, , c] = await startFleet();
    // A 2 s request on replica C, on blue.
    let slowDoneAt = 0;
    const slow = request(`${c.url}/slow`).then(async (r) => {
      await r.body.text();
      slowDoneAt = Date.now();
      return r.statusCode;
    });
    await waitFor(async () => (await weightsOn(c)).versions.blue.inflight === 1);
    // Load on every replica meanwhile: nothing may fail.
    let stop = false;
    const loads = gws.map((g) => load(`${g.url}/`, { concurrency: 4, until: () => stop, ratePerWorker: 50 }));
    const res = await cli(['cutover', 'shop', '--to', 'green', '--wait', '--timeout', '20s', '--json'], a.controlUrl);
    stop = true;
    const results = await Promise.all(loads);
    expect(res.code, res.stderr).toBe(0);
    expect(await slow).toBe(200);
    expect(slowDoneAt).toBeGreaterThan(0);
    expect(res.endedAt).toBeGreaterThanOrEqual(slowDoneAt);
    expect(JSON.parse(res.stdout)).toMatchObject({ drained: true, weights: { blue: 0, green: 100 } });
    for (const r of results) expect(r.failed, r.errors.join('\n')).toBe(0);
    for (const g of gws) expect((await weightsOn(g)).weights).toEqual({ blue: 0, green: 100 });
  });

  it('with a replica running gateway.workers: 2, cutover --wait on another replica waits for the slow requests in both of its workers', async () => {
    prefix = `t${++n}`;
    const a = await startProcess(config());
    const cfgB = config();
    (cfgB.gateway as Json).workers = 2;
    const b = await startProcess(cfgB);
    gws = [a, b];
    await waitFor(async () => (await api(a.controlUrl, 'GET', '/v1/replicas')).body.replicas?.length === 2, { timeout: 10_000 });
    // Two 2 s requests on B, on two connections: one in each worker.
    const slowDone: number[] = [];
    const slow = [0, 1].map(async () => {
      const agent = new Agent({ connections: 1 });
      const r = await request(`${b.url}/slow`, { dispatcher: agent });
      await r.body.text();
      slowDone.push(Date.now());
      await agent.close();
      return r.statusCode;
    });
    await waitFor(async () => (await weightsOn(b)).versions.blue.inflight === 2, { message: 'two slow requests in flight on B' });
    const res = await cli(['cutover', 'shop', '--to', 'green', '--wait', '--timeout', '20s', '--json'], a.controlUrl);
    expect(res.code, res.stderr).toBe(0);
    expect(await Promise.all(slow)).toEqual([200, 200]);
    for (const t of slowDone) expect(res.endedAt).toBeGreaterThanOrEqual(t);
    // B's workers route to green; B tells the fleet the revision its workers applied.
    expect(await load(`${b.url}/`, { concurrency: 4, count: 20 }).then((r) => r.byName)).toEqual({ green: 20 });
    const reps = (await api(a.controlUrl, 'GET', '/v1/replicas')).body.replicas as { revision: number }[];
    expect(reps.map((r) => r.revision)).toEqual([JSON.parse(res.stdout).revision, JSON.parse(res.stdout).revision]);
  });

  it('kill -9 of the replica driving a rollout: another continues, no step repeated or skipped', async () => {
    await startFleet();
    const steps = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
    const start = await api(gws[0].controlUrl, 'POST', '/v1/services/shop/rollout', {
      to: 'green',
      steps,
      interval: '500ms',
      analysis: { minRequests: 0, maxErrorRate: 0.5 },
    });
    expect(start.status).toBe(202);
    // Which replica holds the lease?
    const rc = redis.client();
    const holder = await waitFor(async () => (await rc.get(`${prefix}:lease:shop`))?.split(':')[0]);
    const ids = await Promise.all(gws.map(async (g) => (await api(g.controlUrl, 'GET', '/v1/replicas')).body.self as string));
    const driver = gws[ids.indexOf(holder)];
    expect(driver).toBeDefined();
    const survivors = gws.filter((g) => g !== driver);
    await waitFor(async () => (await api(survivors[0].controlUrl, 'GET', '/v1/services/shop/rollout')).body.step >= 2, { timeout: 15_000 });
    await driver.stop('SIGKILL');
    const done = await waitFor(
      async () => {
        const r = (await api(survivors[0].controlUrl, 'GET', '/v1/services/shop/rollout')).body;
        return r.state === 'succeeded' ? r : undefined;
      },
      { timeout: 30_000, interval: 100 },
    );
    expect(done.history.map((h: Json) => h.step)).toEqual(steps.map((_, i) => i));
    expect(done.history.map((h: Json) => h.percent)).toEqual(steps);
    const events = (await api(survivors[1].controlUrl, 'GET', '/v1/events')).body.events as Json[];
    const stepEvents = events.filter((e) => e.action === 'rollout.step').map((e) => e.detail.step);
    expect(stepEvents).toEqual(steps.slice(1).map((_, i) => i + 1));
    // A different replica took over.
    const newHolder = await rc.get(`${prefix}:lease:shop`);
    expect(newHolder === null || !newHolder.startsWith(holder)).toBe(true);
    expect((await weightsOn(survivors[1])).weights).toEqual({ blue: 0, green: 100 });
  });

  it('fleet analysis: errors seen only by a replica that does not drive the rollout roll it back', async () => {
    await startFleet(2);
    // Green fails every request it gets, but only through the non-driving replica.
    const start = await api(gws[0].controlUrl, 'POST', '/v1/services/shop/rollout', {
      to: 'green',
      steps: [50, 100],
      interval: '1500ms',
      analysis: { minRequests: 20, maxErrorRate: 0.05 },
    });
    expect(start.status).toBe(202);
    const rc = redis.client();
    const holder = await waitFor(async () => (await rc.get(`${prefix}:lease:shop`))?.split(':')[0]);
    const ids = await Promise.all(gws.map(async (g) => (await api(g.controlUrl, 'GET', '/v1/replicas')).body.self as string));
    const other = gws[ids.indexOf(holder) === 0 ? 1 : 0];
    let stop = false;
    // 500s come from green's upstream only for requests carrying this header.
    const traffic = load(`${other.url}/`, { concurrency: 4, until: () => stop, ratePerWorker: 40, headers: { 'x-fail': '1' }, ok: () => true });
    const done = await waitFor(
      async () => {
        const r = (await api(gws[0].controlUrl, 'GET', '/v1/services/shop/rollout')).body;
        return r.state !== 'running' ? r : undefined;
      },
      { timeout: 20_000, interval: 100 },
    );
    stop = true;
    await traffic;
    expect(done.state).toBe('rolled_back');
    expect(done.reason).toMatch(/error rate of green/);
    // The verdict counted requests that only the other replica served.
    expect(done.analysis.last.target.requests).toBeGreaterThanOrEqual(20);
  });

  it('an endpoint drain: refused and not applied while Redis is down; once written, applied on every replica', async () => {
    const [a, b] = await startFleet(2);
    const id = encodeURIComponent(blue.address);
    redis.pause();
    try {
      const r = await api(a.controlUrl, 'POST', `/v1/services/shop/endpoints/${id}/drain`);
      expect(r.status).toBe(503);
      expect(r.body.error.code).toBe('STORE_UNAVAILABLE');
    } finally {
      redis.resume();
    }
    for (const g of [a, b]) expect((await weightsOn(g)).versions.blue.endpoints[0].state).toBe('healthy');
    const ok = await waitFor(async () => {
      const r = await api(a.controlUrl, 'POST', `/v1/services/shop/endpoints/${id}/drain`);
      return r.status === 200 ? r : undefined;
    }, { timeout: 10_000, interval: 200 });
    expect(ok.body.draining).toBe(true);
    // The other replica applies it from the fleet's event log.
    await waitFor(async () => (await weightsOn(b)).versions.blue.endpoints[0]?.state !== 'healthy', { timeout: 5000 });
  });

  it('redis paused for 5 s under load: 0 failed requests, writes answer 503 fast, the fleet resyncs after', async () => {
    const [a, b, c] = await startFleet();
    let stop = false;
    const progress = gws.map(() => emptyLoadResult());
    const answered = (): number[] => progress.map((p) => p.ok + p.failed);
    const loads = gws.map((g, i) => load(`${g.url}/`, { concurrency: 4, until: () => stop, ratePerWorker: 50, progress: progress[i] }));
    await waitFor(() => answered().every((n) => n >= 20), { message: 'every replica serves' });
    redis.pause();
    const pausedAt = Date.now();
    const atPause = answered();
    try {
      const w = await api(a.controlUrl, 'PUT', '/v1/services/shop/weights', { weights: { blue: 50, green: 50 } });
      expect(w.status).toBe(503);
      expect(w.body.error.code).toBe('STORE_UNAVAILABLE');
      expect(w.ms).toBeLessThan(2500);
      const w2 = await api(b.controlUrl, 'POST', '/v1/services/shop/cutover', { to: 'green' });
      expect(w2.status).toBe(503);
      while (Date.now() - pausedAt < 5000) await new Promise((r) => setTimeout(r, 100));
      // Traffic went on while Redis was away: 100 answers per replica at least (a count,
      // waited for: a starved machine answers fewer in 5 s).
      await waitFor(() => answered().every((n, i) => n >= atPause[i] + 100), { message: '100 answers per replica with Redis paused' });
    } finally {
      redis.resume();
    }
    stop = true;
    const results = await Promise.all(loads);
    for (const r of results) {
      expect(r.failed, r.errors.join('\n')).toBe(0);
    }
    // Nothing was applied while Redis was down.
    for (const g of gws) expect((await weightsOn(g)).weights).toEqual({ blue: 100, green: 0 });
    // Writes work again and reach every replica.
    const ok = await waitFor(async () => {
      const r = await api(c.controlUrl, 'PUT', '/v1/services/shop/weights', { weights: { blue: 20, green: 80 } });
      return r.status === 200 ? r : undefined;
    }, { timeout: 10_000, interval: 200 });
    for (const g of gws) await waitFor(async () => (await weightsOn(g)).revision === ok.body.revision);
  });

  it('redis restarted empty: the state (weights, rollout, revision) comes back without operator action', async () => {
    const [a, b] = await startFleet();
    expect((await api(a.controlUrl, 'PUT', '/v1/services/shop/weights', { weights: { blue: 70, green: 30 } })).status).toBe(200);
    const ro = await api(b.controlUrl, 'POST', '/v1/services/shop/rollout', { to: 'green', steps: [40, 100], interval: '1h', analysis: { minRequests: 0 } });
    expect(ro.status).toBe(202);
    const pause = await api(b.controlUrl, 'POST', '/v1/services/shop/rollout/pause');
    expect(pause.status).toBe(200);
    // b wrote last, so b has the newest revision; a and c learn it through pub/sub a moment
    // later (reading it from a here could give the one before).
    const before = (await api(b.controlUrl, 'GET', '/v1/services')).body.revision as number;
    for (const g of gws) await waitFor(async () => (await api(g.controlUrl, 'GET', '/v1/services')).body.revision === before, { message: 'every replica applied the pause' });
    const runId = async (c: ReturnType<RedisServer['client']>): Promise<string> => /run_id:(\w+)/.exec(await c.info('server'))![1];
    const oldRun = await runId(redis.client());

    // A new redis-server process without persistence: it starts empty. (Reading the
    // revision here to see 0 would race with the replicas, which may have written back
    // already.)
    await redis.restart();
    const rc = redis.client();
    expect(await runId(rc)).not.toBe(oldRun);
    // The replicas write their state back; the highest revision wins.
    await waitFor(async () => Number(await rc.get(`${prefix}:revision`)) === before, { timeout: 10_000, interval: 100, message: 'the state written back' });
    await waitFor(() => gws.some((g) => g.logs.some((o) => o.msg === 'redis held an older or no state; wrote ours back')), { message: 'a replica logged its write-back' });
    const stored = JSON.parse((await rc.get(`${prefix}:state`))!);
    expect(stored.services.shop.weights).toEqual({ blue: 60, green: 40 });
    expect(stored.services.shop.rollout.state).toBe('paused');
    // And the fleet keeps working on top of it.
    const next = await waitFor(async () => {
      const r = await api(a.controlUrl, 'POST', '/v1/services/shop/rollout/abort');
      return r.status === 200 ? r : undefined;
    }, { timeout: 10_000, interval: 200 });
    expect(next.body.state).toBe('aborted');
    const after = (await api(a.controlUrl, 'GET', '/v1/services')).body.revision as number;
    expect(after).toBe(before + 1);
    for (const g of gws) await waitFor(async () => (await weightsOn(g)).weights.green === 30);

    // Only the state key lost (evicted, deleted), the revision still there: refilled too.
    await rc.del(`${prefix}:state`);
    await waitFor(async () => (await rc.get(`${prefix}:state`)) !== null, { timeout: 10_000, interval: 100, message: 'the lost state key written back' });
    expect(JSON.parse((await rc.get(`${prefix}:state`))!).revision).toBe(after);
  });

  it('two writers with the same If-Match on different replicas: exactly one wins, the other gets 412', async () => {
    const [a, b] = await startFleet();
    for (let round = 0; round < 10; round++) {
      const rev = String((await weightsOn(a)).revision);
      await waitFor(async () => String((await weightsOn(b)).revision) === rev);
      const [r1, r2] = await Promise.all([
        api(a.controlUrl, 'PUT', '/v1/services/shop/weights', { weights: { blue: 90 - round, green: 10 + round } }, { 'if-match': `"${rev}"` }),
        api(b.controlUrl, 'PUT', '/v1/services/shop/weights', { weights: { blue: 10 + round, green: 90 - round } }, { 'if-match': `"${rev}"` }),
      ]);
      expect([r1.status, r2.status].sort()).toEqual([200, 412]);
      const loser = r1.status === 412 ? r1 : r2;
      expect(loser.body.error.code).toBe('REVISION_MISMATCH');
    }
  });
});

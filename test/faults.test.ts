// Fault injection: cutovers and a rollout on a fleet of three real replicas (one with
// gateway.workers: 2) sharing a real redis-server, under steady load, while Redis is
// frozen (SIGSTOP) and restarted empty, a data-plane worker is killed and a replica is
// killed. After each: every answer was true (drained:true only when every old-version
// request finished, upstream, before the answer; drained:false counts exactly the
// requests cut), no request lost beyond those in flight on a killed process, no rollout
// step skipped or repeated, and every replica on one revision at the end.
// Prints one summary line with its figures.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { load, shopConfig, startProcess, startUpstream, waitFor, type GatewayProcess, type LoadResult, type Upstream } from './helpers.js';
import { api, sleep, slowGet, slowHandler } from './control-helpers.js';
import { startRedis, type RedisServer } from './redis-server.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const call = (base: string, method: string, path: string, body?: unknown) => api(base, method, path, { token: null, ...(body === undefined ? {} : { body }) });
const shopOn = async (g: GatewayProcess): Promise<Json> => (await call(g.controlUrl, 'GET', '/v1/services/shop')).json;

describe('fault injection', () => {
  let redis: RedisServer | undefined;
  const ups: Upstream[] = [];
  const gws: GatewayProcess[] = [];

  afterAll(async () => {
    await Promise.all(gws.map((g) => g.stop('SIGKILL')));
    await redis?.stop();
    await Promise.all(ups.map((u) => u.close()));
  });

  it('cutovers and a rollout while Redis freezes and restarts empty, a worker and a replica are killed: every answer true', async () => {
    const t0 = Date.now();
    redis = await startRedis();
    const slow = { blue: slowHandler(), green: slowHandler() };
    // Slow requests that reached each upstream: in flight on the gateway, on that version.
    const arrived = { blue: 0, green: 0 };
    const counting = (v: 'blue' | 'green') => (req: IncomingMessage, res: ServerResponse, up: Upstream) => {
      if (req.url?.startsWith('/slow')) arrived[v]++;
      slow[v].handler(req, res, up);
    };
    const blue = await startUpstream('blue', counting('blue'));
    const green = await startUpstream('green', counting('green'));
    ups.push(blue, green);
    const prefix = 'faults';
    const config = (workers?: number): Json =>
      shopConfig(
        { blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } },
        {},
        { ...(workers ? { gateway: { workers } } : {}), state: { store: 'redis', redis: { url: redis!.url, prefix } } },
      );
    const a = await startProcess(config());
    gws.push(a);
    const b = await startProcess(config(2));
    gws.push(b);
    const c = await startProcess(config());
    gws.push(c);
    await waitFor(async () => (await call(a.controlUrl, 'GET', '/v1/replicas')).json.replicas?.length === 3, { timeout: 10_000 });

    // Steady load through every replica, every request accounted for. A replica's load
    // stops the moment before it is killed, so only what it held in flight can fail.
    let stop = false;
    const alive = new Set([a, b, c]);
    const LOAD_CONCURRENCY = 2;
    const loads = new Map<GatewayProcess, Promise<LoadResult>>();
    for (const g of alive) loads.set(g, load(`${g.url}/`, { concurrency: LOAD_CONCURRENCY, ratePerWorker: 40, until: () => stop || !alive.has(g) }));

    const figures = { cutovers: 0, drainedTrue: 0, drainedFalse: 0, cut: 0, slowRequests: 0 };

    /** `n` slow requests of `version` through `g`, in flight before returning. */
    const slowOn = async (g: GatewayProcess, version: 'blue' | 'green', n: number, ms: number) => {
      const before = arrived[version];
      const reqs = Array.from({ length: n }, () => slowGet(`${g.url}/slow?ms=${ms}`).catch(() => ({ status: 0 })));
      await waitFor(() => arrived[version] === before + n, { message: `${n} slow ${version} requests on a replica` });
      figures.slowRequests += n;
      return reqs;
    };
    const cutover = (to: string) => {
      figures.cutovers++;
      return call(a.controlUrl, 'POST', '/v1/services/shop/cutover', { to, wait: true, timeout: '30s' }).then((r) => ({ ...r, at: Date.now() }));
    };
    const appliedEverywhere = (to: string) => Promise.all([...alive].map((g) => waitFor(async () => (await shopOn(g)).weights[to] === 100, { message: `cutover to ${to} applied` })));
    /** A drained:true answer is true: every old-version request ended upstream before it. */
    const expectDrained = async (r: Json & { at: number }, reqs: Promise<{ status: number }>[], ends: number[], from: number) => {
      expect(r.status, r.text).toBe(200);
      expect(r.json.drained, r.text).toBe(true);
      expect((await Promise.all(reqs)).map((x) => x.status)).toEqual(reqs.map(() => 200));
      expect(ends.length - from).toBe(reqs.length);
      expect(r.at).toBeGreaterThanOrEqual(Math.max(...ends.slice(from)));
      figures.drainedTrue++;
    };
    const storeRestored = async (revision: number) => {
      const rc = redis!.client();
      await waitFor(async () => Number(await rc.get(`${prefix}:revision`)) >= revision, { timeout: 10_000, message: 'state written back to redis' });
      rc.disconnect();
    };

    // 1. Redis frozen during the wait.
    {
      const from = slow.blue.slowEnds.length;
      const reqs = [...(await slowOn(b, 'blue', 2, 2000)), ...(await slowOn(c, 'blue', 2, 2000))];
      const answer = cutover('green');
      await appliedEverywhere('green');
      redis.pause();
      await sleep(1500); // the fault's length, not a synchronisation
      redis.resume();
      await expectDrained(await answer, reqs, slow.blue.slowEnds, from);
    }

    // 2. Redis restarted empty during the wait.
    {
      const from = slow.green.slowEnds.length;
      const reqs = [...(await slowOn(b, 'green', 2, 2000)), ...(await slowOn(c, 'green', 2, 2000))];
      const answer = cutover('blue');
      await appliedEverywhere('blue');
      await redis.restart();
      const r = await answer;
      await expectDrained(r, reqs, slow.green.slowEnds, from);
      await storeRestored(r.json.revision);
    }

    // 3. A data-plane worker of B killed during the wait: the requests it held were cut.
    {
      // Long enough to be in flight when the worker is killed, even on a loaded machine.
      const reqs = await slowOn(b, 'blue', 4, 5000);
      const answer = cutover('green');
      await appliedEverywhere('green');
      // B's workers have applied the switch and reported since (B's own record says so),
      // then a report shows only the slow requests left on blue: a killed worker's cut is
      // what its last report held in flight.
      const rev = (await shopOn(a)).revision as number;
      await waitFor(async () => {
        const r = (await call(b.controlUrl, 'GET', '/v1/replicas')).json;
        return (r.replicas as Json[]).find((x) => x.id === r.self)!.revision >= rev;
      });
      await waitFor(async () => (await shopOn(b)).versions.blue.inflight === 4);
      const procs = (await call(b.controlUrl, 'GET', '/v1/status')).json.workers.processes as { pid: number; inflight: number }[];
      const victim = procs.reduce((x, y) => (y.inflight > x.inflight ? y : x));
      process.kill(victim.pid, 'SIGKILL');
      const r = await answer;
      const lost = (await Promise.all(reqs)).filter((x) => x.status !== 200).length;
      expect(lost).toBeGreaterThan(0);
      expect(r.status, r.text).toBe(200);
      expect(r.json, r.text).toMatchObject({ drained: false, cut: lost });
      figures.drainedFalse++;
      figures.cut += r.json.cut;
      // The pool replaces the worker.
      await waitFor(async () => ((await call(b.controlUrl, 'GET', '/v1/status')).json.workers.processes as unknown[]).length === 2, { timeout: 10_000 });
    }

    // 4. A rollout while Redis freezes, then restarts empty.
    let rolloutSteps: number[] = [];
    {
      const steps = [20, 50, 100];
      const start = await call(a.controlUrl, 'POST', '/v1/services/shop/rollout', { to: 'blue', steps, interval: '500ms', analysis: { minRequests: 10, maxErrorRate: 0.05 } });
      expect(start.status, start.text).toBe(202);
      const id = start.json.id as string;
      await waitFor(async () => (await call(a.controlUrl, 'GET', '/v1/services/shop/rollout')).json.step >= 1, { timeout: 15_000 });
      redis.pause();
      await sleep(1200); // the fault's length
      redis.resume();
      await redis.restart();
      const done = await waitFor(async () => {
        const ro = (await call(b.controlUrl, 'GET', '/v1/services/shop/rollout')).json;
        return ro.state !== undefined && ro.state !== 'running' ? ro : undefined;
      }, { timeout: 30_000, interval: 100 });
      expect(done.state, done.reason).toBe('succeeded');
      expect(done.history.map((h: Json) => h.percent)).toEqual(steps);
      const events = (await call(c.controlUrl, 'GET', '/v1/events')).json.events as Json[];
      rolloutSteps = events.filter((e) => e.action === 'rollout.step' && e.detail.rollout === id).map((e) => e.detail.step as number);
      expect(rolloutSteps).toEqual([1, 2]);
      await storeRestored((await call(a.controlUrl, 'GET', '/v1/services')).json.revision);
    }

    // 5. Replica C killed during the wait: its requests were cut, B's finished.
    {
      const from = slow.blue.slowEnds.length;
      const onB = await slowOn(b, 'blue', 2, 4000);
      const onC = await slowOn(c, 'blue', 2, 4000);
      const answer = cutover('green');
      await appliedEverywhere('green');
      // A dead replica's cut is what its last record held in flight: wait for the record
      // that shows only the slow requests left on blue (it is at most a heartbeat old).
      const cid = (await call(c.controlUrl, 'GET', '/v1/replicas')).json.self as string;
      await waitFor(async () => {
        const reps = (await call(a.controlUrl, 'GET', '/v1/replicas')).json.replicas as Json[];
        const rec = reps.find((x) => x.id === cid);
        return rec !== undefined && rec.inflight.shop.blue === 2;
      });
      alive.delete(c);
      await c.stop('SIGKILL');
      const r = await answer;
      expect((await Promise.all(onB)).map((x) => x.status)).toEqual([200, 200]);
      expect((await Promise.all(onC)).map((x) => x.status)).toEqual([0, 0]);
      expect(r.status, r.text).toBe(200);
      expect(r.json, r.text).toMatchObject({ drained: false, cut: 2 });
      // B's requests had ended upstream before the answer.
      expect(r.at).toBeGreaterThanOrEqual(Math.max(...slow.blue.slowEnds.slice(from)));
      figures.drainedFalse++;
      figures.cut += r.json.cut;
    }

    stop = true;
    const results = new Map<GatewayProcess, LoadResult>();
    for (const [g, p] of loads) results.set(g, await p);
    // Nothing failed through A; through B at most what the killed worker held; through C
    // at most what it held when killed.
    expect(results.get(a)!.failed, results.get(a)!.errors.join('\n')).toBe(0);
    expect(results.get(b)!.failed, results.get(b)!.errors.join('\n')).toBeLessThanOrEqual(LOAD_CONCURRENCY);
    expect(results.get(c)!.failed, results.get(c)!.errors.join('\n')).toBeLessThanOrEqual(LOAD_CONCURRENCY);
    // One revision everywhere.
    const revision = (await call(a.controlUrl, 'GET', '/v1/services')).json.revision as number;
    await waitFor(async () => (await call(b.controlUrl, 'GET', '/v1/services')).json.revision === revision);
    const reps = (await call(b.controlUrl, 'GET', '/v1/replicas')).json.replicas as { revision: number }[];
    expect(reps.map((r) => r.revision)).toEqual([revision, revision]);

    let sent = 0;
    let failed = 0;
    for (const r of results.values()) {
      sent += r.sent;
      failed += r.failed;
    }
    console.log(
      `faults: ${figures.cutovers} cutovers (${figures.drainedTrue} drained:true, ${figures.drainedFalse} drained:false with ${figures.cut} cut = requests lost on killed processes), ` +
        `1 rollout (steps ${rolloutSteps.join(',')} after step 0, each once), ${figures.slowRequests} slow requests, ${sent} load requests, ${failed} failed ` +
        `(A ${results.get(a)!.failed}, B ${results.get(b)!.failed} with a worker killed, C ${results.get(c)!.failed} killed), revision ${revision} on every replica, ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
  }, 90_000);
});

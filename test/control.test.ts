// The control plane end to end: a real `switchyard serve` process, real node:http
// upstreams, real HTTP to the control API, and the CLI run as a child process.
// Covers cutover with drain waiting, drain timeouts and the health preflight, rollouts
// (auto-rollback, success, pause/resume/promote/abort, 409s while one runs, resume
// after a restart with the file store), auth and If-Match, signed webhooks with retry,
// refusal of bad input without a state change, rollback, and the audit log and its
// live stream.

import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { shopConfig, startProcess, startUpstream, waitFor, type GatewayProcess, type Upstream } from './helpers.js';
import { api, controlTop, rollout, runCli, shop, sleep, slowGet, slowHandler, startLoad, TOKENS } from './control-helpers.js';

const W = (w: Record<string, number>) => ({ weights: w });

describe('cutover', () => {
  let blue: Upstream;
  let green: Upstream;
  let gw: GatewayProcess;
  const blueSlow = slowHandler();

  beforeAll(async () => {
    blue = await startUpstream('blue', blueSlow.handler);
    green = await startUpstream('green');
    gw = await startProcess(shopConfig({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } }, {}, controlTop()));
  });
  afterAll(async () => {
    await gw?.stop('SIGTERM');
    await blue?.close();
    await green?.close();
  });

  it('cutover --wait under load: 0 failures, and the CLI returns only after blue’s last in-flight (2 s) request finished', async () => {
    const ld = startLoad(`${gw.url}/`, { concurrency: 10, ratePerWorker: 40 });
    try {
      await waitFor(() => blue.seen.length > 20, { timeout: 15_000, message: 'load reaches blue' });
      const slowP = slowGet(`${gw.url}/slow?ms=2000`);
      await waitFor(() => blue.seen.some((s) => s.url.startsWith('/slow')), { timeout: 15_000, message: 'slow request on blue' });
      const cli = await runCli(['cutover', 'shop', '--to', 'green', '--wait', '--timeout', '30s'], { url: gw.controlUrl });
      const slow = await slowP;
      // Traffic keeps flowing, now to green, for a moment after the cutover.
      const greenBefore = green.seen.length;
      await waitFor(() => green.seen.length > greenBefore + 20, { timeout: 15_000, message: 'green takes the load' });
      const lr = await ld.stop();

      expect(cli.code, `${cli.stdout}\n${cli.stderr}`).toBe(0);
      expect(cli.stdout).toMatch(/drained/);
      expect(slow.status).toBe(200);
      expect(slow.body).toMatchObject({ name: 'blue', slow: true });
      expect(slow.ms).toBeGreaterThanOrEqual(1900);
      expect(blueSlow.slowEnds).toHaveLength(1);
      const slowEnd = blueSlow.slowEnds[0];
      // The CLI was started well before the slow request ended, and exited after it.
      expect(cli.startedAt).toBeLessThan(slowEnd - 500);
      expect(cli.endedAt).toBeGreaterThanOrEqual(slowEnd);

      expect(lr.failed, lr.errors.join('\n')).toBe(0);
      expect(lr.byName.blue ?? 0).toBeGreaterThan(0);
      expect(lr.byName.green ?? 0).toBeGreaterThan(0);
      const s = await shop(gw.controlUrl);
      expect(s.weights).toEqual({ blue: 0, green: 100 });
      expect(s.versions.blue.inflight).toBe(0);
    } finally {
      await ld.stop();
    }
  });

  it('a drain timeout shorter than an in-flight request: API 504 DRAIN_TIMEOUT, CLI exit 4; the request still finishes', async () => {
    expect((await api(gw.controlUrl, 'PUT', '/v1/services/shop/weights', { body: W({ blue: 100, green: 0 }) })).status).toBe(200);
    const before = blueSlow.slowEnds.length;
    const slowSeen = blue.seen.filter((s) => s.url.startsWith('/hold')).length;
    // Held by the upstream until the test releases it: the CLI's start-up time (seconds
    // on a loaded machine) can never outlast it.
    const slowP = slowGet(`${gw.url}/hold?id=drain-timeout`);
    await waitFor(() => blue.seen.filter((s) => s.url.startsWith('/hold')).length > slowSeen, { timeout: 15_000, message: 'held request on blue' });
    await waitFor(async () => (await shop(gw.controlUrl)).versions.blue.inflight > 0, { timeout: 15_000, message: 'slow request in flight' });

    const t0 = Date.now();
    const r = await api(gw.controlUrl, 'POST', '/v1/services/shop/cutover', { body: { to: 'green', wait: true, timeout: '500ms' } });
    const took = Date.now() - t0;
    expect(r.status, r.text).toBe(504);
    expect(r.json.error.code).toBe('DRAIN_TIMEOUT');
    expect(r.json.error.drained).toBe(false);
    expect(r.json.error.inflight.blue).toBeGreaterThan(0);
    expect(took).toBeGreaterThanOrEqual(450);
    expect(took).toBeLessThan(4000);

    // Again through the CLI while the same request is still in flight on blue.
    expect((await api(gw.controlUrl, 'PUT', '/v1/services/shop/weights', { body: W({ blue: 100, green: 0 }) })).status).toBe(200);
    const cli = await runCli(['cutover', 'shop', '--to', 'green', '--wait', '--timeout', '500ms'], { url: gw.controlUrl });
    expect(blueSlow.slowEnds.length, 'the slow request must still be running when the CLI gave up').toBe(before);
    expect(cli.code, `${cli.stdout}\n${cli.stderr}`).toBe(4);
    expect(cli.stderr).toMatch(/504 DRAIN_TIMEOUT/);

    blueSlow.release('drain-timeout');
    const slow = await slowP;
    expect(slow.status).toBe(200);
    expect(slow.body.name).toBe('blue');
    // It ended only now, after the CLI had given up (slowEnds was unchanged then).
    expect(blueSlow.slowEnds.length).toBe(before + 1);
  });
});

describe('cutover preflight: target without a healthy endpoint', () => {
  let blue: Upstream;
  let gw: GatewayProcess;
  let deadAddress: string;

  beforeAll(async () => {
    blue = await startUpstream('blue');
    const dead = await startUpstream('dead');
    deadAddress = dead.address;
    await dead.close();
    gw = await startProcess(
      shopConfig(
        { blue: { weight: 100, endpoints: [blue.address] }, red: { weight: 0, endpoints: [deadAddress] } },
        { healthCheck: { path: '/healthz', interval: '300ms', timeout: '250ms', healthyThreshold: 1, unhealthyThreshold: 2 } },
        controlTop(),
      ),
    );
  });
  afterAll(async () => {
    await gw?.stop('SIGTERM');
    await blue?.close();
  });

  it('422 TARGET_UNHEALTHY without a state change; force cuts over anyway', async () => {
    await waitFor(async () => (await shop(gw.controlUrl)).versions.red.endpoints[0].state === 'unhealthy', { timeout: 15_000, message: 'red endpoint unhealthy' });
    const before = await shop(gw.controlUrl);
    expect(before.versions.blue.endpoints[0].state).toBe('healthy');

    const r = await api(gw.controlUrl, 'POST', '/v1/services/shop/cutover', { body: { to: 'red' } });
    expect(r.status, r.text).toBe(422);
    expect(r.json.error.code).toBe('TARGET_UNHEALTHY');
    const ro = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', { body: { to: 'red', steps: [50, 100], interval: '1s' } });
    expect(ro.status, ro.text).toBe(422);
    expect(ro.json.error.code).toBe('TARGET_UNHEALTHY');
    const cli = await runCli(['cutover', 'shop', '--to', 'red'], { url: gw.controlUrl });
    expect(cli.code).toBe(2);
    expect(cli.stderr).toMatch(/422 TARGET_UNHEALTHY/);

    const mid = await shop(gw.controlUrl);
    expect(mid.revision).toBe(before.revision);
    expect(mid.weights).toEqual({ blue: 100, red: 0 });

    const f = await api(gw.controlUrl, 'POST', '/v1/services/shop/cutover', { body: { to: 'red', force: true } });
    expect(f.status, f.text).toBe(200);
    expect(f.json.weights).toEqual({ blue: 0, red: 100 });
    expect(f.json.revision).toBeGreaterThan(before.revision);
    const after = await shop(gw.controlUrl);
    expect(after.weights).toEqual({ blue: 0, red: 100 });
    const ev = await api(gw.controlUrl, 'GET', `/v1/events`, { token: TOKENS.read });
    const last = ev.json.events.at(-1);
    expect(last).toMatchObject({ action: 'cutover', actor: 'deployer', service: 'shop' });
    expect(last.detail.force).toBe(true);
  });
});

describe('rollouts', () => {
  let blue: Upstream;
  let green: Upstream;
  let gw: GatewayProcess;
  const greenH = slowHandler();

  beforeAll(async () => {
    blue = await startUpstream('blue');
    green = await startUpstream('green', greenH.handler);
    gw = await startProcess(shopConfig({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } }, {}, controlTop()));
  });
  afterAll(async () => {
    await gw?.stop('SIGTERM');
    await blue?.close();
    await green?.close();
  });

  it('a green answering 5% 500s is rolled back: CLI exit 1 naming the error rate, weights restored', async () => {
    const pre = { blue: 97, green: 3 };
    expect((await api(gw.controlUrl, 'PUT', '/v1/services/shop/weights', { body: W(pre) })).status).toBe(200);
    greenH.setFailEvery(20);
    const ld = startLoad(`${gw.url}/`, { concurrency: 8, ratePerWorker: 40 });
    try {
      const cli = await runCli(
        ['rollout', 'shop', '--to', 'green', '--steps', '20,50,100', '--interval', '1s', '--max-error-rate', '1%', '--min-requests', '20', '--wait', '--timeout', '60s'],
        { url: gw.controlUrl },
      );
      expect(cli.code, `${cli.stdout}\n${cli.stderr}`).toBe(1);
      expect(`${cli.stdout}\n${cli.stderr}`).toMatch(/error rate of green \d+\.\d+% > max 1\.00%/);
      expect(cli.stdout).toMatch(/rolled_back/);

      const r = await rollout(gw.controlUrl);
      expect(r.state).toBe('rolled_back');
      expect(r.to).toBe('green');
      expect(r.reason).toMatch(/error rate/);
      expect(r.weights).toEqual(pre);
      expect(r.fromWeights).toEqual(pre);
      expect(r.analysis.last.verdict).toBe('fail');
      expect(r.analysis.last.target.errorRate).toBeGreaterThan(0.01);
      expect(r.analysis.last.target.requests).toBeGreaterThanOrEqual(20);
      const s = await shop(gw.controlUrl);
      expect(s.weights).toEqual(pre);
      const ev = await api(gw.controlUrl, 'GET', '/v1/events', { token: TOKENS.read });
      const rb = ev.json.events.filter((e: { action: string }) => e.action === 'rollout.rolled_back');
      expect(rb).toHaveLength(1);
      expect(rb[0].detail.rollout).toBe(r.id);
      expect(rb[0].actor).toBe('rollout');
      expect(ev.json.events.find((e: { action: string }) => e.action === 'rollout.started').actor).toBe('deployer');
    } finally {
      await ld.stop();
      greenH.setFailEvery(0);
    }
  });

  it('a healthy green: CLI --wait exits 0 with the rollout succeeded and green at 100', async () => {
    expect((await api(gw.controlUrl, 'PUT', '/v1/services/shop/weights', { body: W({ blue: 100, green: 0 }) })).status).toBe(200);
    const ld = startLoad(`${gw.url}/`, { concurrency: 8, ratePerWorker: 40 });
    try {
      const cli = await runCli(
        ['rollout', 'shop', '--to', 'green', '--steps', '20,50,100', '--interval', '1s', '--max-error-rate', '1%', '--min-requests', '10', '--wait', '--timeout', '60s'],
        { url: gw.controlUrl },
      );
      expect(cli.code, `${cli.stdout}\n${cli.stderr}`).toBe(0);
      expect(cli.stdout).toMatch(/succeeded/);
      // Progress on stderr names the steps as they are applied.
      expect(cli.stderr).toMatch(/step 3\/3 \(100%\)/);
      const r = await rollout(gw.controlUrl);
      expect(r.state).toBe('succeeded');
      expect(r.weights).toEqual({ blue: 0, green: 100 });
      expect(r.history.map((h: { percent: number }) => h.percent)).toEqual([20, 50, 100]);
      const s = await shop(gw.controlUrl);
      expect(s.weights).toEqual({ blue: 0, green: 100 });
    } finally {
      await ld.stop();
    }
  });

  it('pause holds the step and weights, resume advances, promote finishes at 100, abort restores; changes during a rollout are 409', async () => {
    expect((await api(gw.controlUrl, 'PUT', '/v1/services/shop/weights', { body: W({ blue: 100, green: 0 }) })).status).toBe(200);
    const ld = startLoad(`${gw.url}/`, { concurrency: 8, ratePerWorker: 40 });
    try {
      const body = { to: 'green', steps: [10, 20, 30, 40, 50, 60, 70, 80, 90, 100], interval: '1s', analysis: { maxErrorRate: 0.01, minRequests: 5 } };
      const start = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', { body });
      expect(start.status, start.text).toBe(202);
      expect(start.json).toMatchObject({ state: 'running', step: 0, percent: 10, weights: { blue: 90, green: 10 } });
      const id = start.json.id;

      // Running: weights, cutover, rollback and a second rollout are refused.
      const busy = async (): Promise<void> => {
        const rev = (await shop(gw.controlUrl)).revision;
        for (const [m, p, b] of [
          ['PUT', '/v1/services/shop/weights', W({ blue: 50, green: 50 })],
          ['POST', '/v1/services/shop/cutover', { to: 'green' }],
          ['POST', '/v1/services/shop/rollout', body],
          ['POST', '/v1/services/shop/rollback', undefined],
        ] as const) {
          const r = await api(gw.controlUrl, m, p, { body: b });
          expect(r.status, `${m} ${p}: ${r.text}`).toBe(409);
          expect(r.json.error.code).toBe('ROLLOUT_IN_PROGRESS');
        }
        expect((await shop(gw.controlUrl)).revision).toBe(rev);
      };
      await busy();

      await waitFor(async () => (await rollout(gw.controlUrl)).step >= 1, { timeout: 15_000, message: 'rollout reaches step 2' });
      const paused = await runCli(['pause', 'shop', '--json'], { url: gw.controlUrl });
      expect(paused.code, paused.stderr).toBe(0);
      const pj = JSON.parse(paused.stdout);
      expect(pj.state).toBe('paused');
      expect(pj.id).toBe(id);
      const step = pj.step;
      const weights = pj.weights;
      expect(weights.green).toBe(body.steps[step]);

      await sleep(2500); // more than two intervals
      const held = await rollout(gw.controlUrl);
      expect(held.state).toBe('paused');
      expect(held.step).toBe(step);
      expect(held.weights).toEqual(weights);
      expect((await shop(gw.controlUrl)).weights).toEqual(weights);
      await busy();
      // A paused rollout cannot be paused again.
      const again = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout/pause');
      expect(again.status).toBe(409);
      expect(again.json.error.code).toBe('ROLLOUT_NOT_ACTIVE');

      const resumed = await runCli(['resume', 'shop', '--json'], { url: gw.controlUrl });
      expect(resumed.code, resumed.stderr).toBe(0);
      expect(JSON.parse(resumed.stdout).state).toBe('running');
      await waitFor(async () => (await rollout(gw.controlUrl)).step > step, { timeout: 15_000, message: 'resumed rollout advances' });
      const running = await rollout(gw.controlUrl);
      expect(running.state).toBe('running');
      expect(running.step).toBeLessThan(body.steps.length - 1);

      const promoted = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout/promote');
      expect(promoted.status, promoted.text).toBe(200);
      expect(promoted.json).toMatchObject({ id, state: 'succeeded', step: body.steps.length - 1, percent: 100, weights: { blue: 0, green: 100 } });
      expect(promoted.json.reason).toMatch(/promoted by deployer/);
      expect((await shop(gw.controlUrl)).weights).toEqual({ blue: 0, green: 100 });
      // Finished: the rollout no longer blocks changes.
      expect((await api(gw.controlUrl, 'PUT', '/v1/services/shop/weights', { body: W({ blue: 100, green: 0 }) })).status).toBe(200);

      const second = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', { body });
      expect(second.status, second.text).toBe(202);
      await waitFor(async () => (await rollout(gw.controlUrl)).step >= 1, { timeout: 15_000, message: 'second rollout advances' });
      const aborted = await runCli(['abort', 'shop', '--json'], { url: gw.controlUrl });
      expect(aborted.code, aborted.stderr).toBe(0);
      const aj = JSON.parse(aborted.stdout);
      expect(aj).toMatchObject({ id: second.json.id, state: 'aborted', weights: { blue: 100, green: 0 } });
      expect((await shop(gw.controlUrl)).weights).toEqual({ blue: 100, green: 0 });
      await sleep(1500);
      const still = await rollout(gw.controlUrl);
      expect(still.state).toBe('aborted');
      expect((await shop(gw.controlUrl)).weights).toEqual({ blue: 100, green: 0 });
      // Steering a finished rollout is refused.
      const late = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout/resume');
      expect(late.status).toBe(409);
    } finally {
      await ld.stop();
    }
  });
});

describe('rollout survives a gateway restart (file store)', () => {
  let blue: Upstream;
  let green: Upstream;
  const procs: GatewayProcess[] = [];

  beforeAll(async () => {
    blue = await startUpstream('blue');
    green = await startUpstream('green');
  });
  afterAll(async () => {
    for (const p of procs) await p.stop('SIGKILL');
    await blue?.close();
    await green?.close();
  });

  it('SIGKILL after step 3 is reached; the new process resumes at the stored step and succeeds', async () => {
    const stateFile = join(mkdtempSync(join(tmpdir(), 'switchyard-state-')), 'state.json');
    const config = shopConfig({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } }, {}, controlTop({}, { state: { store: 'file', file: stateFile } }));
    const p1 = await startProcess(config);
    procs.push(p1);
    const ld1 = startLoad(`${p1.url}/`, { concurrency: 6, ratePerWorker: 40 });
    let id: string;
    try {
      const start = await api(p1.controlUrl, 'POST', '/v1/services/shop/rollout', {
        body: { to: 'green', steps: [10, 25, 50, 75, 100], interval: '1s', analysis: { maxErrorRate: 0.01, minRequests: 5 } },
      });
      expect(start.status, start.text).toBe(202);
      id = start.json.id;
      await waitFor(async () => (await rollout(p1.controlUrl)).step >= 2, { timeout: 20_000, message: 'step 3 (50%) reached' });
    } finally {
      await ld1.stop();
    }
    await p1.stop('SIGKILL');

    const stored = JSON.parse(readFileSync(stateFile, 'utf8'));
    const sr = stored.services.shop.rollout;
    expect(sr.id).toBe(id);
    expect(sr.state).toBe('running');
    expect(sr.step).toBeGreaterThanOrEqual(2);
    expect(sr.step).toBeLessThan(4);

    const p2 = await startProcess(config, p1.file);
    procs.push(p2);
    const r = await rollout(p2.controlUrl);
    expect(r.id).toBe(id);
    expect(r.state).toBe('running');
    expect(r.step).toBeGreaterThanOrEqual(sr.step);
    const s = await shop(p2.controlUrl);
    expect(s.revision).toBeGreaterThanOrEqual(stored.services.shop.revision);
    if (r.step === sr.step) expect(s.weights).toEqual(stored.services.shop.weights);
    expect(s.weights.green).toBeGreaterThanOrEqual(50);
    // The audit log came back with the state.
    const ev = await api(p2.controlUrl, 'GET', '/v1/events', { token: TOKENS.read });
    expect(ev.json.events.some((e: { action: string; detail: { rollout?: string } }) => e.action === 'rollout.started' && e.detail.rollout === id)).toBe(true);

    const ld2 = startLoad(`${p2.url}/`, { concurrency: 6, ratePerWorker: 40 });
    try {
      const done = await waitFor(
        async () => {
          const x = await rollout(p2.controlUrl);
          return x.state !== 'running' ? x : undefined;
        },
        { timeout: 20_000, message: 'rollout finishes after the restart' },
      );
      expect(done.state, done.reason).toBe('succeeded');
      expect(done.id).toBe(id);
      expect(done.weights).toEqual({ blue: 0, green: 100 });
      expect(done.history.map((h: { percent: number }) => h.percent)).toEqual([10, 25, 50, 75, 100]);
    } finally {
      const lr = await ld2.stop();
      expect(lr.failed, lr.errors.join('\n')).toBe(0);
    }
    expect((await shop(p2.controlUrl)).weights).toEqual({ blue: 0, green: 100 });
    expect(await p2.stop('SIGTERM')).toBe(0);
    // The finished state is on disk.
    expect(JSON.parse(readFileSync(stateFile, 'utf8')).services.shop.rollout.state).toBe('succeeded');
  });
});

describe('webhooks', () => {
  let blue: Upstream;
  let green: Upstream;
  let gw: GatewayProcess;
  let receiver: http.Server;
  type Attempt = { id: number; action: string; status: number; at: number; sigOk: boolean; bodyId: number; ts: number };
  const attempts: Attempt[] = [];

  beforeAll(async () => {
    blue = await startUpstream('blue');
    green = await startUpstream('green');
    let first = true;
    receiver = http.createServer((req, res) => {
      let raw = '';
      req.setEncoding('utf8');
      req.on('data', (d: string) => (raw += d));
      req.on('end', () => {
        const sig = String(req.headers['x-switchyard-signature'] ?? '');
        const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(sig);
        let sigOk = false;
        if (m !== null) {
          const want = createHmac('sha256', 's3cret').update(`${m[1]}.${raw}`).digest();
          sigOk = timingSafeEqual(want, Buffer.from(m[2], 'hex'));
        }
        let body: { id?: number; action?: string } = {};
        try {
          body = JSON.parse(raw);
        } catch {
          /* counted as a bad body below */
        }
        // The first delivery attempt ever fails.
        const status = first ? 500 : 200;
        first = false;
        attempts.push({ id: Number(req.headers['x-switchyard-delivery']), action: String(body.action), status, at: Date.now(), sigOk, bodyId: Number(body.id), ts: m ? Number(m[1]) : 0 });
        res.writeHead(status, { 'content-type': 'text/plain' });
        res.end(status === 200 ? 'ok' : 'try again');
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const port = (receiver.address() as AddressInfo).port;
    gw = await startProcess(
      shopConfig(
        { blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } },
        {},
        controlTop({ webhooks: [{ url: `http://127.0.0.1:${port}/hook`, secret: 's3cret', events: ['rollout.*'] }] }),
      ),
    );
  });
  afterAll(async () => {
    await gw?.stop('SIGTERM');
    await blue?.close();
    await green?.close();
    receiver?.closeAllConnections();
    await new Promise<void>((r) => (receiver ? receiver.close(() => r()) : r()));
  });

  it('signed deliveries of rollout.* in order, the failed first attempt retried after ~500ms', async () => {
    // Not a rollout.* event: must never be delivered.
    expect((await api(gw.controlUrl, 'PUT', '/v1/services/shop/weights', { body: W({ blue: 100, green: 0 }) })).status).toBe(200);
    const ld = startLoad(`${gw.url}/`, { concurrency: 6, ratePerWorker: 40 });
    try {
      const start = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', {
        body: { to: 'green', steps: [25, 50, 100], interval: '1s', analysis: { maxErrorRate: 0.01, minRequests: 5 } },
      });
      expect(start.status, start.text).toBe(202);
      await waitFor(async () => (await rollout(gw.controlUrl)).state !== 'running', { timeout: 20_000, message: 'rollout finishes' });
      expect((await rollout(gw.controlUrl)).state).toBe('succeeded');
      await waitFor(() => attempts.some((a) => a.action === 'rollout.succeeded' && a.status === 200), { timeout: 15_000, message: 'rollout.succeeded delivered' });
    } finally {
      await ld.stop();
    }
    // Nothing further arrives for a moment (no duplicate deliveries).
    await sleep(700);

    expect(attempts.length).toBeGreaterThanOrEqual(5);
    const now = Date.now() / 1000;
    for (const a of attempts) {
      expect(a.sigOk, `signature of delivery ${a.id}`).toBe(true);
      expect(a.bodyId).toBe(a.id);
      expect(Math.abs(a.ts - now)).toBeLessThan(120);
      expect(a.action.startsWith('rollout.')).toBe(true);
    }
    // The first attempt (rollout.started) got 500 and was delivered again, once.
    expect(attempts[0]).toMatchObject({ action: 'rollout.started', status: 500 });
    const startedId = attempts[0].id;
    const forStarted = attempts.filter((a) => a.id === startedId);
    expect(forStarted.map((a) => a.status)).toEqual([500, 200]);
    expect(attempts[1].id).toBe(startedId);
    const gap = attempts[1].at - attempts[0].at;
    expect(gap).toBeGreaterThanOrEqual(400);
    expect(gap).toBeLessThan(3000);

    const ok = attempts.filter((a) => a.status === 200);
    for (let i = 1; i < ok.length; i++) expect(ok[i].id).toBeGreaterThan(ok[i - 1].id);
    const actions = ok.map((a) => a.action).filter((a) => a !== 'rollout.waiting');
    expect(actions).toEqual(['rollout.started', 'rollout.step', 'rollout.step', 'rollout.succeeded']);

    // The audit log agrees: every rollout.* event was delivered, and only those.
    const ev = await api(gw.controlUrl, 'GET', '/v1/events', { token: TOKENS.read });
    const want = ev.json.events.filter((e: { action: string }) => e.action.startsWith('rollout.')).map((e: { id: number }) => e.id);
    expect(ok.map((a) => a.id)).toEqual(want);
    const st = await api(gw.controlUrl, 'GET', '/v1/status', { token: TOKENS.read });
    expect(st.json.webhooks[0]).toMatchObject({ delivered: ok.length, failed: 0, pending: 0 });
  });
});

describe('control API: auth, If-Match, bad input, rollback, events', () => {
  let blue: Upstream;
  let blue2: Upstream;
  let green: Upstream;
  let gw: GatewayProcess;

  beforeAll(async () => {
    blue = await startUpstream('blue');
    blue2 = await startUpstream('blue');
    green = await startUpstream('green');
    gw = await startProcess(shopConfig({ blue: { weight: 100, endpoints: [blue.address, blue2.address] }, green: { weight: 0, endpoints: [green.address] } }, {}, controlTop()));
  });
  afterAll(async () => {
    await gw?.stop('SIGTERM');
    await blue?.close();
    await blue2?.close();
    await green?.close();
  });

  it('If-Match: stale → 412 REVISION_MISMATCH, current → 200', async () => {
    const s0 = await api(gw.controlUrl, 'GET', '/v1/services/shop', { token: TOKENS.read });
    expect(s0.status).toBe(200);
    const rev0 = s0.json.revision;
    expect(s0.headers.etag).toBe(`"${rev0}"`);
    const ok = await api(gw.controlUrl, 'PUT', '/v1/services/shop/weights', { body: W({ blue: 80, green: 20 }), headers: { 'if-match': `"${rev0}"` } });
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json.revision).toBeGreaterThan(rev0);
    expect(ok.json.weights).toEqual({ blue: 80, green: 20 });
    expect(ok.headers.etag).toBe(`"${ok.json.revision}"`);

    const stale = await api(gw.controlUrl, 'PUT', '/v1/services/shop/weights', { body: W({ blue: 10, green: 90 }), headers: { 'if-match': `"${rev0}"` } });
    expect(stale.status, stale.text).toBe(412);
    expect(stale.json.error.code).toBe('REVISION_MISMATCH');
    expect(stale.json.error.revision).toBe(ok.json.revision);
    const s1 = await shop(gw.controlUrl);
    expect(s1.weights).toEqual({ blue: 80, green: 20 });
    expect(s1.revision).toBe(ok.json.revision);

    const cur = await api(gw.controlUrl, 'PUT', '/v1/services/shop/weights', { body: W({ blue: 100, green: 0 }), headers: { 'if-match': `"${s1.revision}"` } });
    expect(cur.status, cur.text).toBe(200);
    expect(cur.json.weights).toEqual({ blue: 100, green: 0 });
  });

  it('tokens: 401 without or with a wrong token, 403 without the scope; admin for drain and reload', async () => {
    for (const token of [null, 'not-a-configured-token-at-all']) {
      const r = await api(gw.controlUrl, 'GET', '/v1/services', { token });
      expect(r.status).toBe(401);
      expect(r.json.error.code).toBe('UNAUTHORIZED');
      const w = await api(gw.controlUrl, 'PUT', '/v1/services/shop/weights', { token, body: W({ blue: 1 }) });
      expect(w.status).toBe(401);
    }
    const basic = await api(gw.controlUrl, 'GET', '/v1/services', { token: null, headers: { authorization: `Basic ${Buffer.from(`x:${TOKENS.admin}`).toString('base64')}` } });
    expect(basic.status).toBe(401);

    const rev = (await shop(gw.controlUrl)).revision;
    const read = await api(gw.controlUrl, 'GET', '/v1/services', { token: TOKENS.read });
    expect(read.status).toBe(200);
    expect(read.json.services.map((s: { name: string }) => s.name)).toEqual(['shop']);
    expect((await api(gw.controlUrl, 'GET', '/v1/events', { token: TOKENS.read })).status).toBe(200);
    const rw = await api(gw.controlUrl, 'PUT', '/v1/services/shop/weights', { token: TOKENS.read, body: W({ blue: 1, green: 1 }) });
    expect(rw.status).toBe(403);
    expect(rw.json.error.code).toBe('FORBIDDEN');
    expect((await api(gw.controlUrl, 'POST', '/v1/services/shop/cutover', { token: TOKENS.read, body: { to: 'green' } })).status).toBe(403);

    const s = await shop(gw.controlUrl);
    const epId = s.versions.blue.endpoints[1].id as string;
    const drainPath = `/v1/services/shop/endpoints/${encodeURIComponent(epId)}/drain`;
    const d1 = await api(gw.controlUrl, 'POST', drainPath, { token: TOKENS.deploy });
    expect(d1.status).toBe(403);
    expect(d1.json.error.code).toBe('FORBIDDEN');
    const rl1 = await api(gw.controlUrl, 'POST', '/v1/reload', { token: TOKENS.deploy });
    expect(rl1.status).toBe(403);
    expect((await shop(gw.controlUrl)).revision).toBe(rev);
    expect((await shop(gw.controlUrl)).versions.blue.endpoints[1].state).toBe('healthy');

    const d2 = await api(gw.controlUrl, 'POST', drainPath, { token: TOKENS.admin });
    expect(d2.status, d2.text).toBe(200);
    expect(d2.json).toMatchObject({ endpoint: epId, draining: true });
    const after = await shop(gw.controlUrl);
    expect(after.versions.blue.endpoints[1].state).toBe('draining');
    expect(after.revision).toBeGreaterThan(rev);
    // No new request reaches the drained endpoint.
    const seenBefore = blue2.seen.length;
    for (let i = 0; i < 30; i++) {
      const r = await request(`${gw.url}/`);
      expect(r.statusCode).toBe(200);
      await r.body.dump();
    }
    expect(blue2.seen.length).toBe(seenBefore);
    const unknownEp = await api(gw.controlUrl, 'POST', '/v1/services/shop/endpoints/nope/drain', { token: TOKENS.admin });
    expect(unknownEp.status).toBe(404);

    const rl2 = await api(gw.controlUrl, 'POST', '/v1/reload', { token: TOKENS.admin });
    expect(rl2.status, rl2.text).toBe(200);
    expect(rl2.json.reloaded).toBe(true);
    const ev = (await api(gw.controlUrl, 'GET', '/v1/events', { token: TOKENS.read })).json.events;
    expect(ev.at(-2)).toMatchObject({ action: 'endpoint.drained', actor: 'ops', service: 'shop' });
    expect(ev.at(-1)).toMatchObject({ action: 'config.reloaded', actor: 'ops' });
  });

  it('every bad input is a 4xx JSON error with a code, and the revision does not move', async () => {
    const state = async (): Promise<{ top: number; shop: number; weights: unknown; events: number }> => {
      const l = await api(gw.controlUrl, 'GET', '/v1/services', { token: TOKENS.read });
      const e = await api(gw.controlUrl, 'GET', '/v1/events', { token: TOKENS.read });
      return { top: l.json.revision, shop: l.json.services[0].revision, weights: l.json.services[0].weights, events: e.json.events.length };
    };
    const before = await state();
    const ro = (body: unknown) => ['POST', '/v1/services/shop/rollout', { body }] as const;
    const cases: [string, number, string, string, string, Parameters<typeof api>[3]][] = [
      ['malformed JSON', 400, 'MALFORMED_JSON', 'PUT', '/v1/services/shop/weights', { raw: '{"weights": {"blue": 1' }],
      ['empty JSON body', 400, 'MALFORMED_JSON', 'PUT', '/v1/services/shop/weights', { raw: '' }],
      // JSON only: text/plain is a body a cross-origin page can send without a preflight.
      ['text/plain body', 415, 'UNSUPPORTED_MEDIA_TYPE', 'PUT', '/v1/services/shop/weights', { raw: 'blue=1', headers: { 'content-type': 'text/plain' } }],
      ['unsupported content-type', 415, 'UNSUPPORTED_MEDIA_TYPE', 'PUT', '/v1/services/shop/weights', { raw: 'blue=1', headers: { 'content-type': 'application/x-www-form-urlencoded' } }],
      ['unknown service', 404, 'UNKNOWN_SERVICE', 'PUT', '/v1/services/nope/weights', { body: W({ blue: 1 }) }],
      ['unknown service (cutover)', 404, 'UNKNOWN_SERVICE', 'POST', '/v1/services/nope/cutover', { body: { to: 'green' } }],
      ['unknown version', 400, 'UNKNOWN_VERSION', 'PUT', '/v1/services/shop/weights', { body: W({ purple: 1 }) }],
      ['unknown version (cutover)', 400, 'UNKNOWN_VERSION', 'POST', '/v1/services/shop/cutover', { body: { to: 'purple' } }],
      ['unknown version (rollout)', 400, 'UNKNOWN_VERSION', ...ro({ to: 'purple', steps: [50, 100], interval: '1s' })],
      ['negative weight', 400, 'INVALID_REQUEST', 'PUT', '/v1/services/shop/weights', { body: W({ blue: -1, green: 5 }) }],
      ['all-zero weights', 400, 'INVALID_WEIGHTS', 'PUT', '/v1/services/shop/weights', { body: W({ blue: 0, green: 0 }) }],
      ['non-integer weight', 400, 'INVALID_REQUEST', 'PUT', '/v1/services/shop/weights', { body: W({ blue: 1.5 }) }],
      ['weight as a string', 400, 'INVALID_REQUEST', 'PUT', '/v1/services/shop/weights', { body: W({ blue: '10' } as never) }],
      ['empty weights', 400, 'INVALID_REQUEST', 'PUT', '/v1/services/shop/weights', { body: W({}) }],
      ['unknown body key', 400, 'INVALID_REQUEST', 'PUT', '/v1/services/shop/weights', { body: { weights: { blue: 1 }, extra: true } }],
      ['unknown body key (cutover)', 400, 'INVALID_REQUEST', 'POST', '/v1/services/shop/cutover', { body: { to: 'green', hurry: true } }],
      ['steps not increasing', 400, 'INVALID_STEPS', ...ro({ to: 'green', steps: [50, 20, 100], interval: '1s' })],
      ['steps repeating', 400, 'INVALID_STEPS', ...ro({ to: 'green', steps: [50, 50, 100], interval: '1s' })],
      ['steps not ending at 100', 400, 'INVALID_STEPS', ...ro({ to: 'green', steps: [10, 50], interval: '1s' })],
      ['step above 100', 400, 'INVALID_REQUEST', ...ro({ to: 'green', steps: [50, 150], interval: '1s' })],
      ['interval without a unit', 400, 'INVALID_REQUEST', ...ro({ to: 'green', steps: [50, 100], interval: '30' })],
      ['error rate above 1', 400, 'INVALID_REQUEST', ...ro({ to: 'green', steps: [50, 100], interval: '1s', analysis: { maxErrorRate: 5 } })],
      ['unknown analysis key', 400, 'INVALID_REQUEST', ...ro({ to: 'green', steps: [50, 100], interval: '1s', analysis: { maxErrors: 1 } })],
      ['cutover timeout not a duration', 400, 'INVALID_REQUEST', 'POST', '/v1/services/shop/cutover', { body: { to: 'green', timeout: 'soon' } }],
      ['bad If-Match', 400, 'BAD_REQUEST', 'PUT', '/v1/services/shop/weights', { body: W({ blue: 1 }), headers: { 'if-match': 'yesterday' } }],
      ['no rollout to steer', 404, 'NO_ROLLOUT', 'POST', '/v1/services/shop/rollout/pause', {}],
      ['events since not a number', 400, 'INVALID_REQUEST', 'GET', '/v1/events?since=abc', { token: TOKENS.read }],
      ['missing token', 401, 'UNAUTHORIZED', 'PUT', '/v1/services/shop/weights', { token: null, body: W({ blue: 1 }) }],
      ['wrong token', 401, 'UNAUTHORIZED', 'PUT', '/v1/services/shop/weights', { token: 'wrong-token-wrong-token', body: W({ blue: 1 }) }],
      ['wrong scope', 403, 'FORBIDDEN', 'PUT', '/v1/services/shop/weights', { token: TOKENS.read, body: W({ blue: 1 }) }],
      ['unknown route', 404, 'NOT_FOUND', 'GET', '/v1/nothing-here', {}],
      ['unknown method on a route', 404, 'NOT_FOUND', 'DELETE', '/v1/services/shop', {}],
    ];
    for (const [what, status, code, method, path, opts] of cases) {
      const r = await api(gw.controlUrl, method, path, opts);
      expect(r.status, `${what}: ${r.text}`).toBe(status);
      expect(String(r.headers['content-type']), what).toMatch(/^application\/json/);
      expect(r.json?.error?.code, `${what}: ${r.text}`).toBe(code);
      expect(typeof r.json.error.message, what).toBe('string');
      expect(r.json.error.message.length, what).toBeGreaterThan(0);
    }
    expect(await state()).toEqual(before);
  });

  it('rollback restores the weights before the last change as a new revision; events carry the actor; the event stream follows live', async () => {
    const evBefore = (await api(gw.controlUrl, 'GET', '/v1/events', { token: TOKENS.read })).json.events;
    const since = evBefore.at(-1)?.id ?? 0;

    const a = await api(gw.controlUrl, 'PUT', '/v1/services/shop/weights', { body: W({ blue: 70, green: 30 }) });
    expect(a.status).toBe(200);
    const b = await api(gw.controlUrl, 'PUT', '/v1/services/shop/weights', { token: TOKENS.admin, body: W({ blue: 40, green: 60 }) });
    expect(b.status).toBe(200);
    expect(b.json.revision).toBeGreaterThan(a.json.revision);
    const rb = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollback');
    expect(rb.status, rb.text).toBe(200);
    expect(rb.json.weights).toEqual({ blue: 70, green: 30 });
    expect(rb.json.revision).toBeGreaterThan(b.json.revision);
    const s = await shop(gw.controlUrl);
    expect(s.weights).toEqual({ blue: 70, green: 30 });
    expect(s.revision).toBe(rb.json.revision);
    // The data plane follows: green gets about 30% now.
    let greenN = 0;
    for (let i = 0; i < 200; i++) {
      const r = await request(`${gw.url}/`);
      if ((JSON.parse(await r.body.text()) as { name: string }).name === 'green') greenN++;
    }
    expect(greenN).toBeGreaterThan(30);
    expect(greenN).toBeLessThan(90);

    const ev = await api(gw.controlUrl, 'GET', `/v1/events?since=${since}`, { token: TOKENS.read });
    expect(ev.status).toBe(200);
    const got = ev.json.events;
    expect(got.map((e: { action: string }) => e.action)).toEqual(['weights', 'weights', 'rollback']);
    expect(got.map((e: { actor: string }) => e.actor)).toEqual(['deployer', 'ops', 'deployer']);
    expect(got.map((e: { revision: number }) => e.revision)).toEqual([a.json.revision, b.json.revision, rb.json.revision]);
    for (const e of got) {
      expect(e.id).toBeGreaterThan(since);
      expect(e.service).toBe('shop');
      expect(Number.isNaN(Date.parse(e.time))).toBe(false);
    }
    expect(got[0].detail.to).toEqual({ blue: 70, green: 30 });
    expect(got[2].detail).toMatchObject({ from: { blue: 40, green: 60 }, to: { blue: 70, green: 30 } });
    const lastId = got.at(-1).id;
    expect((await api(gw.controlUrl, 'GET', `/v1/events?since=${lastId}`, { token: TOKENS.read })).json.events).toEqual([]);

    // Live stream: the headers come at once, and a change made after the stream opened
    // arrives on it.
    const t0 = Date.now();
    const res = await request(`${gw.controlUrl}/v1/events?since=${lastId}`, { headers: { authorization: `Bearer ${TOKENS.read}`, accept: 'text/event-stream' } });
    expect(res.statusCode).toBe(200);
    expect(String(res.headers['content-type'])).toMatch(/^text\/event-stream/);
    expect(Date.now() - t0).toBeLessThan(5000);
    let buf = '';
    const seen = (async () => {
      for await (const chunk of res.body) {
        buf += chunk.toString();
        const m = /id: (\d+)\nevent: change\ndata: (.*)\n\n/.exec(buf);
        if (m) return { id: Number(m[1]), event: JSON.parse(m[2]) };
      }
      return undefined;
    })();
    seen.catch(() => {}); // destroyed in finally
    try {
      await sleep(100);
      expect(buf).toBe(''); // nothing newer than lastId yet
      const c = await api(gw.controlUrl, 'PUT', '/v1/services/shop/weights', { token: TOKENS.admin, body: W({ blue: 100, green: 0 }) });
      expect(c.status).toBe(200);
      const live = await Promise.race([seen, sleep(10_000).then(() => 'timeout' as const)]);
      expect(live).not.toBe('timeout');
      const l = live as { id: number; event: { id: number; action: string; actor: string; revision: number; detail: { to: unknown } } };
      expect(l.id).toBeGreaterThan(lastId);
      expect(l.event).toMatchObject({ id: l.id, action: 'weights', actor: 'ops', service: 'shop', revision: c.json.revision });
      expect(l.event.detail.to).toEqual({ blue: 100, green: 0 });
    } finally {
      res.body.destroy();
    }
  });
});

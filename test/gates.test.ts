// Rollout gates end to end, on a real `switchyard serve` process with real node:http
// upstreams and real HTTP hook receivers: readable decisions (every criterion as
// {name, value, bound, verdict}) and dry runs, pre-rollout/pre-step hooks that gate
// (failing, slow, refused), post hooks notified signed and retried, the tester lane of
// a 0% first step, approvals (frozen weights, CLI approve, abort, a restart while
// waiting with the file store), Slack-format webhooks, and the refusal of bad gate
// bodies without a state change.

import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deadAddress, httpGet, shopConfig, startProcess, startUpstream, waitFor, type GatewayProcess, type Upstream } from './helpers.js';
import { api, controlTop, rollout, runCli, slowHandler, startLoad, TOKENS, withLoad } from './control-helpers.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const SECRET = 'hook-s3cret';

interface Call {
  path: string;
  body: Json;
  raw: string;
  /** null: unsigned. */
  sigOk: boolean | null;
  hookHeader: string | undefined;
  at: number;
  status: number;
}

type Answer = { status: number; text?: string } | 'hold';

/** A real HTTP receiver for hooks and webhooks; `route` decides each answer. */
async function startReceiver(route: (path: string, body: Json, calls: Call[]) => Answer | Promise<Answer>): Promise<{ url: string; calls: Call[]; release(): void; close(): Promise<void> }> {
  const calls: Call[] = [];
  const held: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (raw += d));
    req.on('end', () => {
      void (async () => {
        const sig = req.headers['x-switchyard-signature'];
        let sigOk: boolean | null = null;
        if (typeof sig === 'string') {
          const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(sig);
          sigOk = m !== null && timingSafeEqual(createHmac('sha256', SECRET).update(`${m[1]}.${raw}`).digest(), Buffer.from(m[2], 'hex'));
        }
        let body: Json = {};
        try {
          body = JSON.parse(raw) as Json;
        } catch {
          /* recorded as {} */
        }
        const path = req.url ?? '/';
        const a = await route(path, body, calls);
        calls.push({ path, body, raw, sigOk, hookHeader: req.headers['x-switchyard-hook'] as string | undefined, at: Date.now(), status: a === 'hold' ? 0 : a.status });
        if (a === 'hold') {
          held.push(res);
          return;
        }
        res.writeHead(a.status, { 'content-type': 'text/plain' });
        res.end(a.text ?? '');
      })();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    calls,
    release() {
      for (const r of held.splice(0)) r.end();
    },
    async close() {
      for (const r of held.splice(0)) r.destroy();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const criterion = (a: Json, name: string): Json | undefined => (a.criteria as Json[]).find((c) => c.name === name);

async function events(base: string, id: string): Promise<Json[]> {
  const ev = await api(base, 'GET', '/v1/events?limit=1000', { token: TOKENS.read });
  return (ev.json.events as Json[]).filter((e) => e.detail?.rollout === id);
}

async function finished(base: string, timeout = 30_000): Promise<Json> {
  return waitFor(
    async () => {
      const r = await rollout(base);
      return ['succeeded', 'rolled_back', 'aborted'].includes(r.state) ? r : undefined;
    },
    { timeout, message: 'rollout finishes' },
  );
}

describe('rollout gates', () => {
  let blue: Upstream;
  let green: Upstream;
  let gw: GatewayProcess;
  let hooks: Awaited<ReturnType<typeof startReceiver>>;
  let slack: Awaited<ReturnType<typeof startReceiver>>;
  const greenH = slowHandler();
  /** Tester-lane probes made from inside the smoke hook: which version answered. */
  const laneProbes: { header: boolean; name: string; weights: Json }[] = [];
  let notifyAttempts = 0;

  beforeAll(async () => {
    blue = await startUpstream('blue');
    green = await startUpstream('green', greenH.handler);
    hooks = await startReceiver(async (path, body) => {
      if (path === '/gate-fail-at-2') return body.step === 2 ? { status: 503, text: 'smoke test failed: /checkout answered 500' } : { status: 200, text: 'ok' };
      if (path === '/slow' || path.startsWith('/hang/')) return 'hold';
      if (path.startsWith('/not-prometheus/')) return { status: 200, text: '<html>a login page</html>' };
      if (path === '/notify') return ++notifyAttempts === 1 ? { status: 500, text: 'try again' } : { status: 200 };
      if (path === '/lane') {
        // The smoke test of the tester lane: users (no header) and testers (the header).
        for (let i = 0; i < 10; i++) {
          const users = await httpGet(`${gw.url}/`);
          laneProbes.push({ header: false, name: (JSON.parse(users.body) as Json).name, weights: body.weights });
          const testers = await httpGet(`${gw.url}/`, { 'x-switchyard-version': 'green' });
          laneProbes.push({ header: true, name: (JSON.parse(testers.body) as Json).name, weights: body.weights });
        }
        return { status: 200, text: 'smoke ok' };
      }
      return { status: 200 };
    });
    slack = await startReceiver(() => ({ status: 200, text: 'ok' }));
    gw = await startProcess(
      shopConfig(
        { blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } },
        { override: { header: 'x-switchyard-version' } },
        controlTop({ webhooks: [{ url: `${slack.url}/slack`, format: 'slack', events: ['rollout.rolled_back', 'rollout.succeeded'] }] }),
      ),
    );
  });
  afterAll(async () => {
    await gw?.stop('SIGTERM');
    await blue?.close();
    await green?.close();
    await hooks?.close();
    await slack?.close();
  });

  const reset = async (): Promise<void> => {
    const r = await api(gw.controlUrl, 'PUT', '/v1/services/shop/weights', { body: { weights: { blue: 100, green: 0 } } });
    expect(r.status, r.text).toBe(200);
  };

  it('a dry-run criterion that fails does not fail the rollout and is in every analysis event; rollout status prints each step', async () => {
    await reset();
    greenH.setFailEvery(10);
    const ld = startLoad(`${gw.url}/`, { concurrency: 6, ratePerWorker: 40 });
    let r: Json;
    try {
      const start = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', {
        // Both ways of marking a dry run: on the threshold itself, or by name.
        body: { to: 'green', steps: [50, 100], interval: '1s', analysis: { maxErrorRate: { max: 0.01, dryRun: true }, maxP99: '10s', minRequests: 10, dryRun: ['maxErrorRateOverBaseline'] } },
      });
      expect(start.status, start.text).toBe(202);
      expect(start.json.analysis.maxErrorRate).toBe(0.01);
      expect(start.json.analysis.dryRun).toEqual(['maxErrorRateOverBaseline', 'maxErrorRate']);
      r = await finished(gw.controlUrl);
    } finally {
      await ld.stop();
      greenH.setFailEvery(0);
    }
    expect(r.state, r.reason).toBe('succeeded');
    // At step 1 (50%) green answered ~10% 500s: reported as failing, and a dry run.
    const s0 = r.analysis.steps['0'];
    expect(s0.verdict).toBe('pass');
    const er = criterion(s0, 'maxErrorRate')!;
    expect(er).toMatchObject({ name: 'maxErrorRate', bound: 0.01, op: 'max', unit: 'ratio', verdict: 'fail', dryRun: true });
    expect(er.value).toBeGreaterThan(0.01);
    expect(er.reason).toMatch(/error rate of green/);
    expect(criterion(s0, 'maxP99')).toMatchObject({ bound: 10_000, verdict: 'pass' });
    expect(criterion(s0, 'maxP99')!.dryRun).toBeUndefined();
    expect(criterion(s0, 'minRequests')).toMatchObject({ bound: 10, op: 'min', verdict: 'pass' });
    for (const c of s0.criteria as Json[]) expect(Object.keys(c)).toEqual(expect.arrayContaining(['name', 'value', 'bound', 'verdict']));
    // Every analysis event lists the dry-run criterion.
    const withAnalysis = (await events(gw.controlUrl, r.id)).filter((e) => e.detail.analysis);
    expect(withAnalysis.map((e) => e.action)).toContain('rollout.succeeded');
    for (const e of withAnalysis) expect(criterion(e.detail.analysis, 'maxErrorRate')).toMatchObject({ dryRun: true });

    const cli = await runCli(['rollout', 'status', 'shop'], { url: gw.controlUrl, token: TOKENS.read });
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout).toMatch(/step 1\/2 \(50%\): PASS/);
    expect(cli.stdout).toMatch(/step 2\/2 \(100%\): PASS/);
    expect(cli.stdout).toMatch(/CRITERION\s+VALUE\s+BOUND\s+VERDICT/);
    expect(cli.stdout).toMatch(/maxErrorRate\s+\d+\.\d\d%\s+max 1\.00%\s+fail \(dry run\)/);
    expect(cli.stdout).toMatch(/maxP99\s+[\d.]+ms\s+max 10000ms\s+pass/);
    const json = await runCli(['rollout', 'status', 'shop', '--json'], { url: gw.controlUrl, token: TOKENS.read });
    expect(JSON.parse(json.stdout).analysis.steps['0'].criteria.length).toBeGreaterThanOrEqual(4);
  });

  it('a pre-step hook failing at step 2 rolls back naming the hook and its answer; post-step hooks signed and retried; rolled-back notified; Slack text', async () => {
    await reset();
    const before = hooks.calls.length;
    const slackBefore = slack.calls.length;
    const r = await withLoad(`${gw.url}/`, { concurrency: 6, ratePerWorker: 40 }, async () => {
      const start = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', {
        body: {
          to: 'green',
          steps: [10, 30, 60, 100],
          interval: '500ms',
          analysis: { minRequests: 3 },
          hooks: [
            { name: 'smoke', url: `${hooks.url}/gate-fail-at-2`, on: 'pre-step', secret: SECRET },
            { name: 'chat', url: `${hooks.url}/notify`, on: 'post-step', secret: SECRET },
            { name: 'pager', url: `${hooks.url}/rolled-back`, on: 'rolled-back' },
          ],
        },
      });
      expect(start.status, start.text).toBe(202);
      // The secret is never shown back.
      expect(start.text).not.toContain(SECRET);
      expect(start.json.hooks).toContainEqual({ name: 'smoke', url: `${hooks.url}/gate-fail-at-2`, on: 'pre-step', timeout: '10000ms', signed: true });
      return finished(gw.controlUrl);
    });
    expect(r.state).toBe('rolled_back');
    expect(r.reason).toBe('pre-step hook smoke answered 503: smoke test failed: /checkout answered 500 (before step 2, 60%)');
    expect(r.weights).toEqual({ blue: 100, green: 0 });
    // Step 2 (60%) was never entered.
    expect(r.history.map((h: Json) => h.percent)).toEqual([10, 30]);

    const calls = hooks.calls.slice(before);
    const gates = calls.filter((c) => c.path === '/gate-fail-at-2');
    expect(gates.map((c) => c.body.step)).toEqual([0, 1, 2]);
    for (const g of gates) {
      expect(g.sigOk).toBe(true);
      expect(g.hookHeader).toBe('pre-step');
      expect(g.body).toMatchObject({ hook: 'pre-step', service: 'shop', to: 'green', rollout: r.id });
    }
    // Before step 2 the weights were still step 1's; nextWeights says what comes.
    expect(gates[2].body.weights).toEqual({ blue: 70, green: 30 });
    expect(gates[2].body.nextWeights).toEqual({ blue: 40, green: 60 });
    // post-step after steps 0 and 1 passed: the first attempt answered 500 and was retried.
    await waitFor(() => hooks.calls.filter((c) => c.path === '/notify' && c.status === 200).length >= 2, { timeout: 15_000, message: 'post-step notifications delivered' });
    const notes = hooks.calls.filter((c) => c.path === '/notify');
    expect(notes[0].status).toBe(500);
    expect(notes[1].body).toEqual(notes[0].body);
    expect(notes[1].at - notes[0].at).toBeGreaterThanOrEqual(400);
    expect(new Set(notes.filter((c) => c.status === 200).map((c) => c.body.step))).toEqual(new Set([0, 1]));
    for (const n of notes) expect(n.sigOk).toBe(true);
    expect(notes.find((c) => c.body.step === 0)!.body.analysis.verdict).toBe('pass');
    await waitFor(() => hooks.calls.some((c) => c.path === '/rolled-back'), { timeout: 10_000, message: 'rolled-back hook' });
    const rb = hooks.calls.find((c) => c.path === '/rolled-back')!;
    expect(rb.sigOk).toBeNull();
    expect(rb.body).toMatchObject({ hook: 'rolled-back', state: 'rolled_back', weights: { blue: 100, green: 0 }, reason: r.reason });

    const ev = await events(gw.controlUrl, r.id);
    // (rollout.waiting may come between, while a step gathers minRequests.)
    expect(ev.map((e) => e.action).filter((a) => a !== 'rollout.waiting')).toEqual(['rollout.started', 'rollout.step', 'rollout.gated', 'rollout.step', 'rollout.gated', 'rollout.rolled_back']);
    expect(ev[1].detail.hooks[0]).toMatchObject({ hook: 'smoke', ok: true, status: 200 });
    expect(ev.at(-1)!.detail.hooks.at(-1)).toMatchObject({ hook: 'smoke', ok: false, status: 503 });

    // The Slack-format webhook: a sentence with service, step, weights and reason.
    await waitFor(() => slack.calls.length > slackBefore, { timeout: 10_000, message: 'slack webhook' });
    const msg = slack.calls[slackBefore];
    expect(Object.keys(msg.body)).toEqual(['text']);
    expect(msg.body.text).toContain('shop: rollout rolled back');
    expect(msg.body.text).toContain('step 2 (60%)');
    expect(msg.body.text).toContain('weights blue=100 green=0');
    expect(msg.body.text).toContain('reason: pre-step hook smoke answered 503');
  });

  it('a pre-rollout hook that times out or refuses the connection rolls back before any weight moved', async () => {
    for (const [url, answer] of [
      [`${hooks.url}/slow`, /^pre-rollout hook check did not answer within 300ms/],
      [`http://${await deadAddress()}/`, /^pre-rollout hook check refused the connection/],
    ] as const) {
      await reset();
      const t0 = Date.now();
      const start = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', {
        body: { to: 'green', steps: [50, 100], interval: '1s', hooks: [{ name: 'check', url, on: 'pre-rollout', timeout: '300ms' }] },
      });
      expect(start.status, start.text).toBe(202);
      // Gated: the weights stay until the hook answered.
      expect(start.json.weights).toEqual({ blue: 100, green: 0 });
      expect(start.json.pending).toBe(true);
      const r = await finished(gw.controlUrl, 10_000);
      expect(r.state).toBe('rolled_back');
      expect(r.reason).toMatch(answer);
      expect(r.history).toEqual([]);
      expect(r.weights).toEqual({ blue: 100, green: 0 });
      if (url.endsWith('/slow')) expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
      hooks.release();
    }
  });

  it('tester lane: a pre-step hook on a 0% first step sees only override-header traffic on green, then the rollout proceeds', async () => {
    await reset();
    const r = await withLoad(`${gw.url}/`, { concurrency: 6, ratePerWorker: 40 }, async () => {
      const start = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', {
        body: { to: 'green', steps: [0, 50, 100], interval: '500ms', analysis: { minRequests: 3 }, hooks: [{ name: 'smoke', url: `${hooks.url}/lane`, on: 'pre-step', steps: [0] }] },
      });
      expect(start.status, start.text).toBe(202);
      expect(start.json.weights).toEqual({ blue: 100, green: 0 });
      return finished(gw.controlUrl);
    });
    expect(r.state, r.reason).toBe('succeeded');
    expect(laneProbes).toHaveLength(20);
    expect(laneProbes.filter((p) => !p.header).map((p) => p.name)).toEqual(Array(10).fill('blue'));
    expect(laneProbes.filter((p) => p.header).map((p) => p.name)).toEqual(Array(10).fill('green'));
    expect(laneProbes[0].weights).toEqual({ blue: 100, green: 0 });
    expect(r.history.map((h: Json) => h.percent)).toEqual([0, 50, 100]);
    // The 0% step is not analysed; the others are.
    expect(r.analysis.steps['0']).toBeUndefined();
    expect(r.analysis.steps['1'].verdict).toBe('pass');
    const cli = await runCli(['rollout', 'status', 'shop'], { url: gw.controlUrl, token: TOKENS.read });
    expect(cli.stdout).toMatch(/step 1\/3 \(0%\): tester lane, not analysed/);
    // Only the lane's step had the hook.
    expect(hooks.calls.filter((c) => c.path === '/lane').map((c) => c.body.step)).toEqual([0]);
  });

  it('approval: awaiting_approval with frozen weights, approve refused when not waiting, abort still works', async () => {
    await reset();
    const ld = startLoad(`${gw.url}/`, { concurrency: 6, ratePerWorker: 40 });
    try {
      const start = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', { body: { to: 'green', steps: [20, 100], interval: '300ms', approval: [1], analysis: { minRequests: 3 } } });
      expect(start.status, start.text).toBe(202);
      expect((await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout/approve')).json.error.code).toBe('NOT_AWAITING_APPROVAL');
      let last: Json = {};
      const w = await waitFor(async () => {
        const x = (last = await rollout(gw.controlUrl));
        return x.state === 'awaiting_approval' ? x : undefined;
      }, { timeout: 15_000, message: 'awaiting approval' }).catch((e) => {
        throw new Error(`${e}: ${JSON.stringify(last)}`);
      });
      expect(w.step).toBe(1);
      expect(w.awaitingApproval).toBe(1);
      expect(w.weights).toEqual({ blue: 80, green: 20 });
      // Five more intervals' worth of traffic: still waiting, nothing moved.
      const seen = green.seen.length + blue.seen.length;
      await waitFor(() => green.seen.length + blue.seen.length > seen + 150, { timeout: 15_000, message: 'traffic while waiting' });
      const still = await rollout(gw.controlUrl);
      expect(still.state).toBe('awaiting_approval');
      expect(still.weights).toEqual({ blue: 80, green: 20 });
      expect(still.history.map((h: Json) => h.percent)).toEqual([20]);
      const ab = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout/abort');
      expect(ab.status, ab.text).toBe(200);
      expect(ab.json.state).toBe('aborted');
      expect(ab.json.weights).toEqual({ blue: 100, green: 0 });
      const ev = (await events(gw.controlUrl, start.json.id)).map((e) => e.action);
      expect(ev.filter((a) => a !== 'rollout.waiting')).toEqual(['rollout.started', 'rollout.awaiting_approval', 'rollout.aborted']);
    } finally {
      await ld.stop();
    }
  });

  it('an unreachable Prometheus with inconclusivePolicy continue: judged on the built-ins, the query reported inconclusive in every analysis', async () => {
    await reset();
    const r = await withLoad(`${gw.url}/`, { concurrency: 6, ratePerWorker: 40 }, async () => {
      const start = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', {
        body: {
          to: 'green',
          steps: [50, 100],
          interval: '500ms',
          analysis: { maxErrorRate: 0.01, minRequests: 3, inconclusivePolicy: 'continue', prometheus: { url: `http://${await deadAddress()}`, queries: [{ name: 'errorRate', query: 'vector(0)', max: 0.01 }] } },
        },
      });
      expect(start.status, start.text).toBe(202);
      return finished(gw.controlUrl);
    });
    expect(r.state, r.reason).toBe('succeeded');
    for (const step of ['0', '1']) {
      const a = r.analysis.steps[step];
      expect(a.verdict).toBe('inconclusive');
      expect(criterion(a, 'errorRate')).toMatchObject({ verdict: 'inconclusive', value: null, reason: 'Prometheus query errorRate inconclusive: connection refused' });
      expect(criterion(a, 'maxErrorRate')!.verdict).toBe('pass');
    }
  });

  it('a "Prometheus" that hangs or answers something else is inconclusive, never a pass (inconclusivePolicy rollback)', async () => {
    for (const [path, said] of [
      ['/hang', 'no answer within 1000ms'],
      ['/not-prometheus', 'Prometheus answered HTTP 200 that is not JSON: <html>a login page</html>'],
    ] as const) {
      await reset();
      const ld = startLoad(`${gw.url}/`, { concurrency: 4, ratePerWorker: 40 });
      let r: Json;
      try {
        const start = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', {
          body: {
            to: 'green',
            steps: [50, 100],
            interval: '1s',
            analysis: { minRequests: 3, inconclusivePolicy: 'rollback', prometheus: { url: `${hooks.url}${path}`, queries: [{ name: 'errorRate', query: 'vector(0)', max: 0.01 }] } },
          },
        });
        expect(start.status, start.text).toBe(202);
        r = await finished(gw.controlUrl);
      } finally {
        await ld.stop();
        hooks.release();
      }
      expect(r.state).toBe('rolled_back');
      expect(r.reason).toBe(`analysis inconclusive at step 0 (50%) (inconclusivePolicy rollback): Prometheus query errorRate inconclusive: ${said}`);
      expect(r.weights).toEqual({ blue: 100, green: 0 });
    }
  });

  it('bad gate bodies: 400 with a message naming the problem, and nothing changes', async () => {
    await reset();
    const rev = (await api(gw.controlUrl, 'GET', '/v1/services/shop')).json.revision;
    const base = { to: 'green', steps: [20, 100], interval: '1s' };
    const cases: [string, Json, RegExp][] = [
      ['approval index past the last step', { ...base, approval: [2] }, /approval: 2 is not a step index \(0 to 1\)/],
      ['approval not integers', { ...base, approval: ['x'] }, /approval/],
      ['hook without url', { ...base, hooks: [{ name: 'a', on: 'pre-step' }] }, /url/],
      ['hook with an unknown phase', { ...base, hooks: [{ name: 'a', url: 'http://127.0.0.1:1/', on: 'pre-deploy' }] }, /on/],
      ['hook url not http', { ...base, hooks: [{ name: 'a', url: 'ftp://x/', on: 'pre-step' }] }, /url/],
      ['hook timeout too long', { ...base, hooks: [{ name: 'a', url: 'http://127.0.0.1:1/', on: 'pre-step', timeout: '1h' }] }, /timeout must be from 100ms to 10m/],
      ['hook names twice', { ...base, hooks: [{ name: 'a', url: 'http://127.0.0.1:1/', on: 'pre-step' }, { name: 'a', url: 'http://127.0.0.1:1/', on: 'post-step' }] }, /the name a is used twice/],
      ['hook step out of range', { ...base, hooks: [{ name: 'a', url: 'http://127.0.0.1:1/', on: 'pre-step', steps: [5] }] }, /hook a steps: 5 is not a step index/],
      ['query with both bounds', { ...base, analysis: { prometheus: { url: 'http://127.0.0.1:9/', queries: [{ name: 'q', query: 'up', max: 1, min: 0 }] } } }, /give exactly one of max or min/],
      ['query without a bound', { ...base, analysis: { prometheus: { url: 'http://127.0.0.1:9/', queries: [{ name: 'q', query: 'up' }] } } }, /give exactly one of max or min/],
      ['query named like a built-in', { ...base, analysis: { prometheus: { url: 'http://127.0.0.1:9/', queries: [{ name: 'maxP99', query: 'up', max: 1 }] } } }, /the name maxP99 is taken/],
      ['empty query', { ...base, analysis: { prometheus: { url: 'http://127.0.0.1:9/', queries: [{ name: 'q', query: '', max: 1 }] } } }, /query/],
      ['no queries', { ...base, analysis: { prometheus: { url: 'http://127.0.0.1:9/', queries: [] } } }, /queries/],
      ['dryRun of an unknown criterion', { ...base, analysis: { dryRun: ['maxLatency'] } }, /analysis.dryRun: unknown criterion maxLatency/],
      ['a threshold object without max', { ...base, analysis: { maxP99: { dryRun: true } } }, /maxP99/],
      ['a threshold object with a bad dryRun', { ...base, analysis: { maxErrorRate: { max: 0.01, dryRun: 'yes' } } }, /maxErrorRate/],
      ['unknown inconclusivePolicy', { ...base, analysis: { inconclusivePolicy: 'ignore' } }, /inconclusivePolicy/],
      ['a 0 step that is not the first', { ...base, steps: [20, 0, 100] }, /strictly increasing/],
    ];
    for (const [what, body, message] of cases) {
      const r = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', { body });
      expect(r.status, `${what}: ${r.text}`).toBe(400);
      expect(r.json.error.message, what).toMatch(message);
    }
    const after = (await api(gw.controlUrl, 'GET', '/v1/services/shop')).json;
    expect(after.revision).toBe(rev);
    expect(after.weights).toEqual({ blue: 100, green: 0 });
  });
});

describe('approval survives a gateway restart (file store)', () => {
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

  it('SIGKILL while awaiting approval: the new process keeps waiting with the same weights; CLI approve → succeeded', async () => {
    const stateFile = join(mkdtempSync(join(tmpdir(), 'switchyard-state-')), 'state.json');
    const config = shopConfig({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } }, {}, controlTop({}, { state: { store: 'file', file: stateFile } }));
    const p1 = await startProcess(config);
    procs.push(p1);
    const ld1 = startLoad(`${p1.url}/`, { concurrency: 4, ratePerWorker: 40 });
    let id: string;
    try {
      const start = await api(p1.controlUrl, 'POST', '/v1/services/shop/rollout', { body: { to: 'green', steps: [25, 50, 100], interval: '500ms', approval: [2], analysis: { minRequests: 3 } } });
      expect(start.status, start.text).toBe(202);
      id = start.json.id;
      await waitFor(async () => (await rollout(p1.controlUrl)).state === 'awaiting_approval', { timeout: 20_000, message: 'awaiting approval' });
    } finally {
      await ld1.stop();
    }
    const waiting = await rollout(p1.controlUrl);
    expect(waiting.weights).toEqual({ blue: 50, green: 50 });
    const rev = (await api(p1.controlUrl, 'GET', '/v1/services/shop')).json.revision;
    await p1.stop('SIGKILL');

    const p2 = await startProcess(config, p1.file);
    procs.push(p2);
    const ld2 = startLoad(`${p2.url}/`, { concurrency: 4, ratePerWorker: 40 });
    try {
      const r = await rollout(p2.controlUrl);
      expect(r.id).toBe(id);
      expect(r.state).toBe('awaiting_approval');
      expect(r.weights).toEqual({ blue: 50, green: 50 });
      const s = (await api(p2.controlUrl, 'GET', '/v1/services/shop')).json;
      expect(s.weights).toEqual({ blue: 50, green: 50 });
      expect(s.revision).toBe(rev);
      // The data plane serves the stored weights: both versions answer.
      await waitFor(() => green.seen.length > 0 && blue.seen.length > 0);

      const cli = await runCli(['approve', 'shop'], { url: p2.controlUrl });
      expect(cli.code, cli.stderr).toBe(0);
      expect(cli.stdout).toMatch(/running/);
      const done = await finished(p2.controlUrl);
      expect(done.state, done.reason).toBe('succeeded');
      expect(done.approved).toEqual([2]);
      expect(done.history.map((h: Json) => h.percent)).toEqual([25, 50, 100]);
      const ev = await events(p2.controlUrl, id);
      const approved = ev.find((e) => e.action === 'rollout.approved')!;
      expect(approved.actor).toBe('deployer');
      expect(approved.detail).toMatchObject({ step: 2, percent: 100, entered: true });
      // Approving again: nothing waits any more → exit 2 with the code.
      const again = await runCli(['approve', 'shop'], { url: p2.controlUrl });
      expect(again.code).toBe(2);
      expect(again.stderr).toMatch(/409 NOT_AWAITING_APPROVAL/);
    } finally {
      await ld2.stop();
    }
  });
});

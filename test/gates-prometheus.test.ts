// Rollouts judged by a real Prometheus: a real `switchyard serve` process and real
// upstreams, a real Prometheus scraping the gateway's admin /metrics every second. A
// PromQL error-rate query promotes a good green and rolls back a bad one; a query
// Prometheus refuses and a Prometheus killed mid-rollout are `inconclusive`, handled by
// the rollout's inconclusivePolicy (rollback, pause) — never a silent pass.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shopConfig, startProcess, startUpstream, waitFor, type GatewayProcess, type Upstream } from './helpers.js';
import { api, controlTop, rollout, runCli, slowHandler, startLoad, TOKENS } from './control-helpers.js';
import { startPrometheus, type PrometheusServer } from './prometheus-server.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Share of the version's answers that were 5xx over the last 5 s (no 5xx series → 0;
 * no request at all → no data). */
const ERROR_RATE_Q =
  '(sum(rate(switchyard_requests_total{service="{{service}}",version="{{version}}",code="5xx"}[5s])) or vector(0)) / ' +
  'sum(rate(switchyard_requests_total{service="{{service}}",version="{{version}}"}[5s]))';
const RPS = (v: string) => `sum(rate(switchyard_requests_total{service="{{service}}",version="${v}"}[5s]))`;

const criterion = (a: Json, name: string): Json => (a.criteria as Json[]).find((c) => c.name === name)!;

async function finished(base: string, timeout = 40_000): Promise<Json> {
  return waitFor(
    async () => {
      const r = await rollout(base);
      return ['succeeded', 'rolled_back', 'aborted', 'paused'].includes(r.state) ? r : undefined;
    },
    { timeout, message: 'rollout ends (or pauses)' },
  );
}

describe('rollout analysis on a real Prometheus', () => {
  let blue: Upstream;
  let green: Upstream;
  let gw: GatewayProcess;
  let prom: PrometheusServer;
  const greenH = slowHandler();

  beforeAll(async () => {
    blue = await startUpstream('blue');
    green = await startUpstream('green', greenH.handler);
    gw = await startProcess(shopConfig({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } }, {}, controlTop()));
    prom = await startPrometheus([new URL(gw.adminUrl).host]);
  }, 60_000);
  afterAll(async () => {
    await prom?.stop();
    await gw?.stop('SIGTERM');
    await blue?.close();
    await green?.close();
  });

  const reset = async (): Promise<void> => {
    const r = await api(gw.controlUrl, 'PUT', '/v1/services/shop/weights', { body: { weights: { blue: 100, green: 0 } } });
    expect(r.status, r.text).toBe(200);
  };

  const body = (extra: Json = {}, queries: Json[] = []): Json => ({
    to: 'green',
    steps: [20, 50, 100],
    interval: '2s',
    analysis: {
      minRequests: 5,
      prometheus: { url: prom.url, queries: [{ name: 'errorRate', query: ERROR_RATE_Q, max: 0.05 }, ...queries] },
      ...extra,
    },
  });

  it('a good green is promoted on the PromQL error rate; {{baseline}} is substituted; a dry-run query that fails does not hold it', async () => {
    await reset();
    const ld = startLoad(`${gw.url}/`, { concurrency: 6, ratePerWorker: 40 });
    let r: Json;
    try {
      const start = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', {
        body: body({}, [
          { name: 'baselineRps', query: RPS('{{baseline}}'), min: 0 },
          // Green serves more than 1 request/s: past this bound, but only a dry run.
          { name: 'greenRpsTrial', query: RPS('{{version}}'), max: 1, dryRun: true },
        ]),
      });
      expect(start.status, start.text).toBe(202);
      // Prometheus judges: the built-in error-rate default is not added.
      expect(start.json.analysis.maxErrorRate).toBeUndefined();
      r = await finished(gw.controlUrl);
    } finally {
      await ld.stop();
    }
    expect(r.state, r.reason).toBe('succeeded');
    expect(r.weights).toEqual({ blue: 0, green: 100 });
    const s0 = r.analysis.steps['0'];
    expect(criterion(s0, 'errorRate')).toMatchObject({ verdict: 'pass', value: 0, bound: 0.05, op: 'max' });
    const base = criterion(s0, 'baselineRps');
    expect(base.verdict).toBe('pass');
    expect(base.value).toBeGreaterThan(0);
    const trial = criterion(s0, 'greenRpsTrial');
    expect(trial).toMatchObject({ verdict: 'fail', dryRun: true, bound: 1 });
    expect(trial.value).toBeGreaterThan(1);
    expect(trial.reason).toMatch(/^Prometheus query greenRpsTrial = [\d.]+ > max 1$/);
  });

  it('a query Prometheus refuses is inconclusive; with inconclusivePolicy rollback the rollout rolls back naming the query and the error', async () => {
    await reset();
    const ld = startLoad(`${gw.url}/`, { concurrency: 4, ratePerWorker: 40 });
    let r: Json;
    try {
      const start = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', {
        body: body({ inconclusivePolicy: 'rollback' }, [{ name: 'broken', query: 'sum(rate(switchyard_requests_total[5s]', max: 1 }]),
      });
      expect(start.status, start.text).toBe(202);
      r = await finished(gw.controlUrl);
    } finally {
      await ld.stop();
    }
    expect(r.state).toBe('rolled_back');
    expect(r.reason).toMatch(/^analysis inconclusive at step 0 \(20%\) \(inconclusivePolicy rollback\): Prometheus query broken inconclusive: Prometheus answered bad_data: .*parse error/);
    expect(criterion(r.analysis.last, 'broken')).toMatchObject({ verdict: 'inconclusive', value: null });
    expect(r.weights).toEqual({ blue: 100, green: 0 });
  });

  it('a bad green (50% 500s) is rolled back by the PromQL error rate; the reason names the query and its value', async () => {
    await reset();
    greenH.setFailEvery(2);
    const ld = startLoad(`${gw.url}/`, { concurrency: 6, ratePerWorker: 40 });
    let r: Json;
    try {
      const start = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', { body: body() });
      expect(start.status, start.text).toBe(202);
      r = await finished(gw.controlUrl);
    } finally {
      await ld.stop();
      greenH.setFailEvery(0);
    }
    expect(r.state).toBe('rolled_back');
    expect(r.reason).toMatch(/^analysis failed at step 0 \(20%\): Prometheus query errorRate = 0\.\d+ > max 0\.05$/);
    expect(r.weights).toEqual({ blue: 100, green: 0 });
    const c = criterion(r.analysis.last, 'errorRate');
    expect(c.verdict).toBe('fail');
    expect(c.value).toBeGreaterThan(0.1);
    const cli = await runCli(['rollout', 'status', 'shop'], { url: gw.controlUrl, token: TOKENS.read });
    expect(cli.stdout).toMatch(/step 1\/3 \(20%\): FAIL/);
    expect(cli.stdout).toMatch(/errorRate\s+0\.\d+\s+max 0\.05\s+fail/);
  });

  it('Prometheus killed mid-rollout: inconclusive, and the default policy pauses with the weights where they were', async () => {
    await reset();
    // The bad green's errors must have left the 5 s window first.
    await waitFor(
      async () => {
        const a = await prom.query(ERROR_RATE_Q.replaceAll('{{service}}', 'shop').replaceAll('{{version}}', 'green'));
        return a.status === 'success' && a.data!.result.every((s) => !(Number(s.value[1]) > 0));
      },
      { timeout: 20_000, message: 'green error rate back to none' },
    );
    const ld = startLoad(`${gw.url}/`, { concurrency: 6, ratePerWorker: 40 });
    try {
      const start = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', { body: body() });
      expect(start.status, start.text).toBe(202);
      // The first step passed on Prometheus' figures.
      const moved = await waitFor(
        async () => {
          const x = await rollout(gw.controlUrl);
          if (x.state !== 'running') throw new Error(`rollout ${x.state}: ${x.reason}`);
          return x.step >= 1 ? x : undefined;
        },
        { timeout: 30_000, message: 'first step passed' },
      );
      expect(criterion(moved.analysis.steps['0'], 'errorRate').verdict).toBe('pass');
      await prom.kill();
      const r = await finished(gw.controlUrl);
      expect(r.state).toBe('paused');
      expect(r.reason).toMatch(/^paused: analysis inconclusive at step 1 \(50%\) \(inconclusivePolicy pause\): Prometheus query errorRate inconclusive: connection refused; resume, promote or abort$/);
      expect(r.step).toBe(1);
      expect(r.weights).toEqual({ blue: 50, green: 50 });
      expect((await api(gw.controlUrl, 'GET', '/v1/services/shop', { token: TOKENS.read })).json.weights).toEqual({ blue: 50, green: 50 });
      expect(criterion(r.analysis.last, 'errorRate')).toMatchObject({ verdict: 'inconclusive', value: null });
      expect(r.analysis.last.verdict).toBe('inconclusive');
      // The operator decides: abort restores the weights.
      const ab = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout/abort');
      expect(ab.json.state).toBe('aborted');
    } finally {
      await ld.stop();
    }
  });
});

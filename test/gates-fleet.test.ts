// Approvals in a fleet: two real gateway processes on one real redis-server. A rollout
// waiting for an approval has no driver; the replica that drove it up to there is
// killed (-9), and the other replica accepts the approval and drives the rollout to
// its end.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shopConfig, startProcess, startUpstream, waitFor, type GatewayProcess, type Upstream } from './helpers.js';
import { api, controlTop, rollout, runCli } from './control-helpers.js';
import { startRedis, type RedisServer } from './redis-server.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

describe('approval in a 2-replica fleet', () => {
  let redis: RedisServer;
  let blue: Upstream;
  let green: Upstream;
  const gws: GatewayProcess[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    blue = await startUpstream('blue');
    green = await startUpstream('green');
    const config = shopConfig(
      { blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } },
      {},
      controlTop({}, { state: { store: 'redis', redis: { url: redis.url, prefix: 'gates' } } }),
    );
    await Promise.all([0, 1].map(async () => void gws.push(await startProcess(config))));
    await waitFor(async () => (await api(gws[0].controlUrl, 'GET', '/v1/replicas')).json.replicas?.length === 2, { timeout: 10_000 });
  });
  afterAll(async () => {
    await Promise.all(gws.map((g) => g.stop('SIGKILL')));
    await redis?.stop();
    await blue?.close();
    await green?.close();
  });

  it('the driver is killed while the rollout awaits approval; the other replica accepts the approval (CLI) and finishes it', async () => {
    const start = await api(gws[0].controlUrl, 'POST', '/v1/services/shop/rollout', {
      body: { to: 'green', steps: [20, 50, 100], interval: '500ms', approval: [2], analysis: { minRequests: 0, maxErrorRate: 0.5 } },
    });
    expect(start.status, start.text).toBe(202);
    const rc = redis.client();
    const holder = await waitFor(async () => (await rc.get('gates:lease:shop'))?.split(':')[0], { message: 'a driver' });
    const ids = await Promise.all(gws.map(async (g) => (await api(g.controlUrl, 'GET', '/v1/replicas')).json.self as string));
    const driver = gws[ids.indexOf(holder)];
    expect(driver).toBeDefined();
    const other = gws.find((g) => g !== driver)!;
    const waiting = await waitFor(
      async () => {
        const r = await rollout(other.controlUrl);
        return r.state === 'awaiting_approval' ? r : undefined;
      },
      { timeout: 15_000, message: 'awaiting approval, seen on the other replica' },
    );
    expect(waiting.step).toBe(2);
    expect(waiting.weights).toEqual({ blue: 50, green: 50 });
    await driver.stop('SIGKILL');

    // Still waiting on the survivor, with the weights frozen.
    const still = await rollout(other.controlUrl);
    expect(still.state).toBe('awaiting_approval');
    expect((await api(other.controlUrl, 'GET', '/v1/services/shop')).json.weights).toEqual({ blue: 50, green: 50 });

    const cli = await runCli(['approve', 'shop'], { url: other.controlUrl });
    expect(cli.code, cli.stderr).toBe(0);
    const done = await waitFor(
      async () => {
        const r = await rollout(other.controlUrl);
        return r.state === 'succeeded' ? r : undefined;
      },
      { timeout: 30_000, message: 'succeeded after the approval' },
    );
    expect(done.history.map((h: Json) => h.percent)).toEqual([20, 50, 100]);
    expect(done.approved).toEqual([2]);
    expect((await api(other.controlUrl, 'GET', '/v1/services/shop')).json.weights).toEqual({ blue: 0, green: 100 });
    const events = (await api(other.controlUrl, 'GET', '/v1/events')).json.events as Json[];
    const mine = events.filter((e) => e.detail?.rollout === start.json.id).map((e) => e.action);
    expect(mine.filter((a) => a !== 'rollout.waiting')).toEqual(['rollout.started', 'rollout.step', 'rollout.awaiting_approval', 'rollout.approved', 'rollout.succeeded']);
  });
});

// The rollout engine's timing rules, on an in-process gateway with real upstreams:
// a step waiting for minRequests checks once per interval (not in a loop), and the
// no-traffic policy acts after noTrafficIntervals intervals.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { shopConfig, startInProcess, startUpstream, waitFor, type InProcessGateway, type Upstream } from './helpers.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

async function post(base: string, path: string, body: unknown): Promise<{ status: number; body: Json }> {
  const r = await request(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.statusCode, body: (await r.body.json()) as Json };
}

describe('rollout engine timing', () => {
  let blue: Upstream;
  let green: Upstream;
  let g: InProcessGateway;
  beforeAll(async () => {
    blue = await startUpstream('blue');
    green = await startUpstream('green');
    g = await startInProcess(shopConfig({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } }));
  });
  afterAll(async () => {
    await g?.close();
    await blue?.close();
    await green?.close();
  });

  it('no traffic: waits one interval at a time, then rolls back after noTrafficIntervals', async () => {
    const t0 = Date.now();
    const r = await post(g.controlUrl, '/v1/services/shop/rollout', {
      to: 'green',
      steps: [50, 100],
      interval: '400ms',
      analysis: { minRequests: 1_000_000, noTrafficPolicy: 'fail', noTrafficIntervals: 3 },
    });
    expect(r.status).toBe(202);
    const done = await waitFor(
      async () => {
        const s = (await (await request(`${g.controlUrl}/v1/services/shop/rollout`)).body.json()) as Json;
        return s.state === 'rolled_back' ? s : undefined;
      },
      { timeout: 10_000 },
    );
    const elapsed = Date.now() - t0;
    // Three intervals had to pass.
    expect(elapsed).toBeGreaterThanOrEqual(1200);
    expect(done.reason).toMatch(/no traffic/);
    expect(done.weights).toEqual({ blue: 100, green: 0 });
    const events = ((await (await request(`${g.controlUrl}/v1/events`)).body.json()) as Json).events as Json[];
    const actions = events.filter((e) => e.detail?.rollout === r.body.id).map((e) => e.action);
    expect(actions).toEqual(['rollout.started', 'rollout.waiting', 'rollout.waiting', 'rollout.rolled_back']);
  });

  it('no traffic with policy continue: advances after noTrafficIntervals and succeeds', async () => {
    const r = await post(g.controlUrl, '/v1/services/shop/rollout', {
      to: 'green',
      steps: [50, 100],
      interval: '300ms',
      analysis: { minRequests: 1_000_000, noTrafficPolicy: 'continue', noTrafficIntervals: 2 },
    });
    expect(r.status).toBe(202);
    const done = await waitFor(
      async () => {
        const s = (await (await request(`${g.controlUrl}/v1/services/shop/rollout`)).body.json()) as Json;
        return s.state === 'succeeded' ? s : undefined;
      },
      { timeout: 10_000 },
    );
    expect(done.weights).toEqual({ blue: 0, green: 100 });
    const events = ((await (await request(`${g.controlUrl}/v1/events`)).body.json()) as Json).events as Json[];
    const actions = events.filter((e) => e.detail?.rollout === r.body.id).map((e) => e.action);
    expect(actions).toEqual(['rollout.started', 'rollout.waiting', 'rollout.step', 'rollout.waiting', 'rollout.succeeded']);
  });
});

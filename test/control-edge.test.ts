// Edges between the control plane, reloads and the data plane: what a reload removes
// must not leave stored state and the data plane apart, and an endpoint must never stay
// out of rotation for a reason that no longer exists.

import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { stringify } from 'yaml';
import { shopConfig, startInProcess, startUpstream, waitFor, type Upstream } from './helpers.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

async function call(method: string, url: string, body?: unknown): Promise<{ status: number; body: Json }> {
  const r = await request(url, { method: method as 'GET', headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined });
  return { status: r.statusCode, body: (await r.body.json()) as Json };
}

describe('control plane and reloads', () => {
  let blue: Upstream;
  let green: Upstream;
  let canary: Upstream;
  beforeAll(async () => {
    [blue, green, canary] = await Promise.all([startUpstream('blue'), startUpstream('green'), startUpstream('canary')]);
  });
  afterAll(async () => {
    await Promise.all([blue.close(), green.close(), canary.close()]);
  });

  it('a rollout whose pre-rollout weights name a version a reload removed still drives the data plane', async () => {
    const versions = {
      blue: { weight: 90, endpoints: [blue.address] },
      green: { weight: 0, endpoints: [green.address] },
      canary: { weight: 10, endpoints: [canary.address] },
    };
    const g = await startInProcess(shopConfig(versions));
    try {
      const start = await call('POST', `${g.controlUrl}/v1/services/shop/rollout`, { to: 'green', steps: [50, 100], interval: '1h', analysis: { minRequests: 0 } });
      expect(start.status).toBe(202);
      // The canary version goes away.
      const { canary: _gone, ...rest } = versions;
      void _gone;
      writeFileSync(g.file, stringify(shopConfig(rest)));
      expect(g.gw.reload()).toEqual([]);
      const promote = await call('POST', `${g.controlUrl}/v1/services/shop/rollout/promote`);
      expect(promote.status).toBe(200);
      expect(promote.body.state).toBe('succeeded');
      // What the data plane does, not only what is stored.
      expect(g.gw.dataplane.getWeights('shop')).toEqual({ blue: 0, green: 100 });
      const names = new Set<string>();
      for (let i = 0; i < 20; i++) {
        const r = await request(`${g.url}/`);
        names.add(((await r.body.json()) as Json).name);
      }
      expect([...names]).toEqual(['green']);
    } finally {
      await g.close();
    }
  });

  it('probes turned off by a reload: endpoints they had taken out are available again', async () => {
    const failing = await startUpstream('blue-sick', (req, res) => {
      req.resume();
      res.writeHead(req.url === '/healthz' ? 500 : 200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ name: 'blue-sick' }));
    });
    const cfg = (hc: boolean): Record<string, unknown> =>
      shopConfig({ blue: { weight: 1, endpoints: [failing.address] } }, hc ? { healthCheck: { interval: '200ms', timeout: '100ms', unhealthyThreshold: 1 } } : {});
    const g = await startInProcess(cfg(true));
    try {
      await waitFor(() => g.gw.dataplane.endpointsOf('shop', 'blue')[0].state === 'unhealthy', { timeout: 5000 });
      const before = await request(`${g.url}/`);
      await before.body.dump();
      expect(before.statusCode).toBe(503);
      writeFileSync(g.file, stringify(cfg(false)));
      expect(g.gw.reload()).toEqual([]);
      expect(g.gw.dataplane.endpointsOf('shop', 'blue')[0].state).toBe('healthy');
      const after = await request(`${g.url}/`);
      await after.body.dump();
      expect(after.statusCode).toBe(200);
    } finally {
      await g.close();
      await failing.close();
    }
  });
});

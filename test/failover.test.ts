// Version failover: a request that never reached a backend (connect refused) while its
// whole version is down goes to another version once — before any detection has
// caught up — unless the override header pinned the version, its body was sent, or
// retries are off.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { load, shopConfig, startInProcess, startUpstream, type Upstream, deadAddress } from './helpers.js';

describe('version failover for never-sent requests', () => {
  let blue: Upstream;
  let dead1: string;
  let dead2: string;
  beforeAll(async () => {
    blue = await startUpstream('blue');
    dead1 = await deadAddress();
    dead2 = await deadAddress();
  });
  afterAll(async () => {
    await blue.close();
  });

  // No outlier detection and no probes: nothing ever takes green out of rotation.
  const cfg = (retries = 1): Record<string, unknown> =>
    shopConfig(
      { blue: { weight: 50, endpoints: [blue.address] }, green: { weight: 50, endpoints: [dead1, dead2] } },
      { outlierDetection: { consecutive5xx: 0, consecutiveGatewayErrors: 0 }, override: { header: 'x-switchyard-version' }, retries: { attempts: retries } },
    );

  it('whole version down, undetected: every GET succeeds on the other version', async () => {
    const g = await startInProcess(cfg());
    try {
      const r = await load(`${g.url}/`, { concurrency: 10, count: 1000 });
      expect(r.failed, r.errors.join('\n')).toBe(0);
      expect(r.byName.blue).toBe(1000);
      // Green was really chosen about half the time (its endpoints were tried).
      const green = g.gw.dataplane.endpointsOf('shop', 'green');
      expect(green.every((e) => e.state === 'healthy')).toBe(true);
      const text = await (await request(`${g.adminUrl}/metrics`)).body.text();
      const retries = Number(/switchyard_retries_total\{service="shop",version="blue"\} (\d+)/.exec(text)?.[1] ?? 0);
      const connect = Number(/switchyard_upstream_errors_total\{service="shop",version="green",reason="connect"\} (\d+)/.exec(text)?.[1] ?? 0);
      expect(connect).toBeGreaterThan(300);
      expect(retries).toBeGreaterThan(300);
    } finally {
      await g.close();
    }
  });

  it('the override header pins the version: no failover, 502', async () => {
    const g = await startInProcess(cfg());
    try {
      const r = await request(`${g.url}/`, { headers: { 'x-switchyard-version': 'green' } });
      const body = (await r.body.json()) as { error: { code: string } };
      expect(r.statusCode).toBe(502);
      expect(body.error.code).toBe('UPSTREAM_ERROR');
    } finally {
      await g.close();
    }
  });

  it('a POST with a body is never moved; a bodiless POST is', async () => {
    const g = await startInProcess(cfg());
    try {
      let withBody502 = 0;
      let bodiless200 = 0;
      for (let i = 0; i < 60; i++) {
        const a = await request(`${g.url}/`, { method: 'POST', body: 'x=1', headers: { 'content-type': 'text/plain' } });
        await a.body.dump();
        if (a.statusCode === 502) withBody502++;
        else expect(a.statusCode).toBe(200);
        const b = await request(`${g.url}/`, { method: 'POST' });
        await b.body.dump();
        if (b.statusCode === 200) bodiless200++;
      }
      // About half the POSTs with a body chose green and failed; none of the bodiless ones.
      expect(withBody502).toBeGreaterThan(10);
      expect(bodiless200).toBe(60);
    } finally {
      await g.close();
    }
  });

  it('retries.attempts: 0 turns failover off too', async () => {
    const g = await startInProcess(cfg(0));
    try {
      const r = await load(`${g.url}/`, { concurrency: 4, count: 200 });
      expect(r.failed).toBeGreaterThan(40);
      expect(r.statuses[502]).toBe(r.failed);
    } finally {
      await g.close();
    }
  });
});

describe('a reset before any response byte', () => {
  it('is retried for GET, never for a bodiless POST (the backend may have run it)', async () => {
    // Both backends run the request, then reset the connection without answering.
    const runs: string[] = [];
    const crashing = (name: string): Promise<Upstream> =>
      startUpstream(name, (req, res) => {
        runs.push(`${name} ${req.method}`);
        req.resume();
        req.socket.destroy();
        void res;
      });
    const a = await crashing('a');
    const b = await crashing('b');
    const g = await startInProcess(
      shopConfig({ blue: { weight: 1, endpoints: [a.address, b.address] } }, { outlierDetection: { consecutive5xx: 0, consecutiveGatewayErrors: 0 }, retries: { attempts: 1 } }),
    );
    try {
      const post = await request(`${g.url}/orders/1/charge`, { method: 'POST' });
      expect(post.statusCode).toBe(502);
      await post.body.dump();
      expect(runs.filter((r) => r.endsWith('POST'))).toHaveLength(1);
      const get = await request(`${g.url}/orders/1`);
      await get.body.dump();
      expect(get.statusCode).toBe(502);
      // Retried once on the other endpoint.
      expect(runs.filter((r) => r.endsWith('GET'))).toHaveLength(2);
      expect(new Set(runs.filter((r) => r.endsWith('GET')).map((r) => r.split(' ')[0])).size).toBe(2);
    } finally {
      await g.close();
      await a.close();
      await b.close();
    }
  });
});

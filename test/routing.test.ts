// Routing rules (README "How a request is routed"): weights, sticky keys (header and cookie),
// the override header, host + longest-prefix routes, weight changes under load, and
// versions without an available endpoint. Real loopback upstreams, in-process gateways.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import { load, shopConfig, startInProcess, startUpstream, waitFor, type InProcessGateway, type Upstream, deadAddress } from './helpers.js';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any;
}

async function get(url: string, headers: Record<string, string> = {}, dispatcher?: Agent): Promise<Reply> {
  const res = await request(url, { headers, dispatcher });
  const text = await res.body.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.statusCode, headers: res.headers, text, json };
}

/** Runs fn over items with at most `limit` in flight; results in item order. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

function expectGatewayError(r: Reply, status: number, code: string): void {
  expect(r.status, r.text).toBe(status);
  expect(r.headers['content-type']).toMatch(/^application\/json/);
  expect(r.json?.error?.code).toBe(code);
  expect(typeof r.json.error.message).toBe('string');
  const id = r.headers['x-request-id'];
  expect(typeof id).toBe('string');
  expect((id as string).length).toBeGreaterThan(0);
  expect(r.json.error.requestId).toBe(id);
}

/** Only user traffic (health probes hit /healthz). */
const userRequests = (u: Upstream) => u.seen.filter((s) => !s.url.startsWith('/healthz'));

describe('routing', () => {
  let blue: Upstream;
  let green: Upstream;
  let red: Upstream;
  let agent: Agent;
  beforeAll(async () => {
    blue = await startUpstream('blue');
    green = await startUpstream('green');
    red = await startUpstream('red');
    agent = new Agent({ connections: 32 });
  });
  afterAll(async () => {
    await agent.close();
    await Promise.all([blue.close(), green.close(), red.close()]);
  });
  const reset = () => {
    blue.seen.length = 0;
    green.seen.length = 0;
    red.seen.length = 0;
  };

  it('splits 80/20 within ±4 points over 2,000 requests; a weight-0 version receives nothing', async () => {
    reset();
    const g = await startInProcess(
      shopConfig({
        blue: { weight: 80, endpoints: [blue.address] },
        green: { weight: 20, endpoints: [green.address] },
        red: { weight: 0, endpoints: [red.address] },
      }),
    );
    try {
      const r = await load(`${g.url}/w`, { concurrency: 16, count: 2000 });
      expect(r.failed, r.errors.join('\n')).toBe(0);
      expect(r.ok).toBe(2000);
      const b = r.byName.blue ?? 0;
      const gr = r.byName.green ?? 0;
      expect(b + gr).toBe(2000);
      expect(b / 2000).toBeGreaterThanOrEqual(0.76);
      expect(b / 2000).toBeLessThanOrEqual(0.84);
      expect(gr / 2000).toBeGreaterThanOrEqual(0.16);
      expect(gr / 2000).toBeLessThanOrEqual(0.24);
      // What the upstreams saw agrees with what the client got.
      expect(blue.seen.length).toBe(b);
      expect(green.seen.length).toBe(gr);
      expect(red.seen.length).toBe(0);
      expect(r.byName.red ?? 0).toBe(0);
    } finally {
      await g.close();
    }
  });

  describe('sticky', () => {
    it('header keys only ever move blue → green as green rises 10 → 50 → 90, and stay put while weights stand', async () => {
      reset();
      const g = await startInProcess(
        shopConfig(
          { blue: { weight: 90, endpoints: [blue.address] }, green: { weight: 10, endpoints: [green.address] } },
          { sticky: { header: 'x-user-id' } },
        ),
      );
      try {
        const keys = Array.from({ length: 1000 }, (_, i) => `user-${i}`);
        const place = async (): Promise<string[]> =>
          mapLimit(keys, 32, async (k) => {
            const r = await get(`${g.url}/cart`, { 'x-user-id': k }, agent);
            expect(r.status).toBe(200);
            return r.json.name as string;
          });
        const greenShare = (vs: string[]) => vs.filter((v) => v === 'green').length / vs.length;

        const at10 = await place();
        expect(new Set(at10)).toEqual(new Set(['blue', 'green']));
        expect(greenShare(at10)).toBeGreaterThan(0.05);
        expect(greenShare(at10)).toBeLessThan(0.15);
        // Unchanged weights: every key lands where it did.
        expect(await place()).toEqual(at10);

        g.gw.dataplane.setWeights('shop', { blue: 50, green: 50 });
        const at50 = await place();
        expect(greenShare(at50)).toBeGreaterThan(0.44);
        expect(greenShare(at50)).toBeLessThan(0.56);
        expect(await place()).toEqual(at50);

        g.gw.dataplane.setWeights('shop', { blue: 10, green: 90 });
        const at90 = await place();
        expect(greenShare(at90)).toBeGreaterThan(0.85);
        expect(greenShare(at90)).toBeLessThan(0.95);
        expect(await place()).toEqual(at90);

        let greenToBlue = 0;
        let blueToGreen = 0;
        for (let i = 0; i < keys.length; i++) {
          for (const [a, b] of [
            [at10[i], at50[i]],
            [at50[i], at90[i]],
            [at10[i], at90[i]],
          ]) {
            if (a === 'green' && b === 'blue') greenToBlue++;
            if (a === 'blue' && b === 'green') blueToGreen++;
          }
        }
        expect(greenToBlue).toBe(0);
        expect(blueToGreen).toBeGreaterThan(0);
        // Upstreams saw exactly the requests the client got answers for.
        expect(blue.seen.length + green.seen.length).toBe(6000);
      } finally {
        await g.close();
      }
    });

    it('cookie: a request without one gets a set-cookie, and sending it back sticks to the same version', async () => {
      reset();
      const g = await startInProcess(
        shopConfig(
          { blue: { weight: 50, endpoints: [blue.address] }, green: { weight: 50, endpoints: [green.address] } },
          { sticky: { cookie: 'switchyard_shop' } },
        ),
      );
      try {
        const versions = new Set<string>();
        for (let c = 0; c < 20; c++) {
          const first = await get(`${g.url}/`, {}, agent);
          expect(first.status).toBe(200);
          const sc = first.headers['set-cookie'];
          const line = Array.isArray(sc) ? sc.find((s) => s.startsWith('switchyard_shop=')) : sc;
          expect(line, 'set-cookie on a request without the cookie').toMatch(/^switchyard_shop=[^;]+/);
          const cookie = (line as string).split(';')[0];
          const version = first.json.name as string;
          versions.add(version);
          const again = await mapLimit(Array.from({ length: 50 }), 10, async () => {
            const r = await get(`${g.url}/`, { cookie: `other=1; ${cookie}` }, agent);
            expect(r.status).toBe(200);
            // The key is known: no new cookie.
            expect(r.headers['set-cookie']).toBeUndefined();
            return r.json.name as string;
          });
          expect(again).toEqual(Array(50).fill(version));
        }
        // Twenty independent 50/50 keys: both versions turn up (chance of not: 2^-19).
        expect(versions).toEqual(new Set(['blue', 'green']));
      } finally {
        await g.close();
      }
    });
  });

  describe('override header', () => {
    it('reaches the named version even at weight 0; an unknown version is a 400 BAD_REQUEST', async () => {
      reset();
      const g = await startInProcess(
        shopConfig(
          { blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } },
          { override: { header: 'x-switchyard-version' } },
        ),
      );
      try {
        for (let i = 0; i < 20; i++) {
          const r = await get(`${g.url}/o`, { 'x-switchyard-version': 'green' }, agent);
          expect(r.status).toBe(200);
          expect(r.json.name).toBe('green');
        }
        expect(green.seen.length).toBe(20);
        const b = await get(`${g.url}/o`, { 'x-switchyard-version': 'blue' }, agent);
        expect(b.json.name).toBe('blue');
        // Without the header, weight 0 means nothing goes to green.
        const r = await load(`${g.url}/o`, { concurrency: 8, count: 200 });
        expect(r.failed).toBe(0);
        expect(r.byName.blue).toBe(200);
        expect(green.seen.length).toBe(20);

        const before = blue.seen.length + green.seen.length;
        const bad = await get(`${g.url}/o`, { 'x-switchyard-version': 'purple' }, agent);
        expectGatewayError(bad, 400, 'BAD_REQUEST');
        const kept = await get(`${g.url}/o`, { 'x-switchyard-version': 'purple', 'x-request-id': 'override-1' }, agent);
        expectGatewayError(kept, 400, 'BAD_REQUEST');
        expect(kept.headers['x-request-id']).toBe('override-1');
        expect(blue.seen.length + green.seen.length).toBe(before);
      } finally {
        await g.close();
      }
    });
  });

  describe('routes', () => {
    let api: Upstream;
    let apiV2: Upstream;
    let hosted: Upstream;
    let assets: Upstream;
    let g: InProcessGateway;
    beforeAll(async () => {
      assets = await startUpstream('assets');
      api = await startUpstream('api');
      apiV2 = await startUpstream('api-v2');
      hosted = await startUpstream('hosted');
      const svc = (path: Record<string, string>[], up: Upstream) => ({ routes: path, versions: { blue: { weight: 1, endpoints: [up.address] } } });
      g = await startInProcess({
        gateway: { listen: '127.0.0.1:0' },
        admin: { listen: '127.0.0.1:0' },
        state: { store: 'memory' },
        log: { level: 'silent' },
        shutdown: { drainDelay: '0s', grace: '5s' },
        services: {
          api: svc([{ path: '/api' }], api),
          apiv2: svc([{ path: '/api/v2' }], apiV2),
          hosted: svc([{ host: 'shop.example.com', path: '/' }], hosted),
          assets: svc([{ path: '/static/' }], assets),
        },
      });
    });
    afterAll(async () => {
      await g?.close();
      await Promise.all([api?.close(), apiV2?.close(), hosted?.close(), assets?.close()]);
    });

    const cases: [string | undefined, string, string][] = [
      [undefined, '/api', 'api'],
      [undefined, '/api/users?x=1', 'api'],
      // Prefixes match whole path segments (README "How a request is routed").
      [undefined, '/api/', 'api'],
      [undefined, '/api?q', 'api'],
      [undefined, '/api?q=/v2', 'api'],
      [undefined, '/api/v2x', 'api'],
      [undefined, '/api/v2/', 'api-v2'],
      [undefined, '/api/v2?x', 'api-v2'],
      [undefined, '/static/app.js', 'assets'],
      [undefined, '/static/', 'assets'],
      [undefined, '/api/v2', 'api-v2'],
      [undefined, '/api/v2/items/7', 'api-v2'],
      ['other.example.com', '/api/v2/x', 'api-v2'],
      ['other.example.com', '/api/x', 'api'],
      ['shop.example.com', '/', 'hosted'],
      ['shop.example.com', '/cart/1', 'hosted'],
      ['SHOP.Example.com:8080', '/cart', 'hosted'],
    ];
    it.each(cases)('host %s path %s → %s', async (host, path, want) => {
      const r = await get(`${g.url}${path}`, host ? { host } : {}, agent);
      expect(r.status).toBe(200);
      expect(r.json.name).toBe(want);
      expect(r.json.url).toBe(path);
    });

    it('unknown path or host → 404 NO_ROUTE JSON, nothing reaches an upstream', async () => {
      const before = api.seen.length + apiV2.seen.length + hosted.seen.length + assets.seen.length;
      for (const [host, path] of [
        [undefined, '/'],
        [undefined, '/ap'],
        [undefined, '/other/api'],
        // Sharing letters with a prefix is not sharing a segment.
        [undefined, '/apiary'],
        [undefined, '/api-v2/x'],
        [undefined, '/apiv2'],
        // A prefix ending in "/" matches under it only, as it always did.
        [undefined, '/static'],
        [undefined, '/staticx/app.js'],
        ['unknown.example.com', '/'],
        ['shop.example.org', '/cart'],
      ] as [string | undefined, string][]) {
        const r = await get(`${g.url}${path}`, host ? { host } : {}, agent);
        expectGatewayError(r, 404, 'NO_ROUTE');
      }
      const kept = await get(`${g.url}/nowhere`, { 'x-request-id': 'route-404' }, agent);
      expectGatewayError(kept, 404, 'NO_ROUTE');
      expect(kept.headers['x-request-id']).toBe('route-404');
      expect(api.seen.length + apiV2.seen.length + hosted.seen.length + assets.seen.length).toBe(before);
    });
  });

  it('50 random weight changes while 200 concurrent requests run: no request fails', async () => {
    reset();
    const g = await startInProcess(
      shopConfig({
        blue: { weight: 50, endpoints: [blue.address] },
        green: { weight: 50, endpoints: [green.address] },
        red: { weight: 0, endpoints: [red.address] },
      }),
    );
    try {
      let stop = false;
      const running = load(`${g.url}/busy`, { concurrency: 200, count: 30_000, until: () => stop, ok: (s) => s === 200 });
      const applied: Record<string, number>[] = [];
      try {
        for (let i = 0; i < 50; i++) {
          const w: Record<string, number> = {
            blue: Math.floor(Math.random() * 4) * 25,
            green: Math.floor(Math.random() * 4) * 25,
            red: Math.floor(Math.random() * 4) * 25,
          };
          if (w.blue + w.green + w.red === 0) w[['blue', 'green', 'red'][i % 3]] = 10;
          expect(g.gw.dataplane.setWeights('shop', w)).toEqual(w);
          applied.push(w);
          await new Promise((r) => setTimeout(r, 15));
        }
      } finally {
        stop = true;
      }
      const r = await running;
      expect(applied).toHaveLength(50);
      expect(r.failed, r.errors.join('\n')).toBe(0);
      expect(r.sent).toBeGreaterThanOrEqual(200);
      expect(r.ok).toBe(r.sent);
      const served = (r.byName.blue ?? 0) + (r.byName.green ?? 0) + (r.byName.red ?? 0);
      expect(served).toBe(r.sent);
      expect(blue.seen.length + green.seen.length + red.seen.length).toBe(r.sent);
      expect(g.gw.dataplane.inflight()).toBe(0);
    } finally {
      await g.close();
    }
  });

  describe('a version without an available endpoint', () => {
    it('outlier detection: after the dead version is ejected, every request succeeds on the live one', async () => {
      reset();
      const dead = await deadAddress();
      const g = await startInProcess(
        shopConfig(
          { blue: { weight: 50, endpoints: [blue.address] }, green: { weight: 50, endpoints: [dead] } },
          { outlierDetection: { consecutiveGatewayErrors: 1, consecutive5xx: 0, maxEjectionPercent: 100, baseEjectionTime: '60s' } },
        ),
      );
      try {
        const ep = g.gw.dataplane.endpointsOf('shop', 'green')[0];
        expect(ep.available).toBe(true);
        // Traffic finds the dead endpoint; the request that hit it never reached a backend,
        // so it fails over to blue: no client sees an error even before the ejection.
        const seenCodes = new Set<string>();
        await waitFor(
          async () => {
            const r = await get(`${g.url}/probe`, {}, agent);
            if (r.status !== 200) seenCodes.add(`${r.status} ${r.json?.error?.code}`);
            return ep.ejected;
          },
          { timeout: 10_000, interval: 1, message: 'green endpoint ejected' },
        );
        expect([...seenCodes]).toEqual([]);
        reset();
        const r = await load(`${g.url}/after`, { concurrency: 20, count: 1000, ok: (s) => s === 200 });
        expect(r.failed, r.errors.join('\n')).toBe(0);
        expect(r.byName.blue).toBe(1000);
        expect(blue.seen.length).toBe(1000);
        // The desired weights are unchanged: green's share went to blue by availability.
        expect(g.gw.dataplane.getWeights('shop')).toEqual({ blue: 50, green: 50 });
      } finally {
        await g.close();
      }
    });

    it('health checks: the dead version gives its share away; 503 NO_HEALTHY_UPSTREAM only once every version is dead', async () => {
      const live = await startUpstream('live');
      const dead = await deadAddress();
      const g = await startInProcess(
        shopConfig(
          { blue: { weight: 30, endpoints: [live.address] }, green: { weight: 70, endpoints: [dead] } },
          // A dead port fails at once (connection refused); the generous timeout and two
          // failures keep a live endpoint on a loaded machine from looking dead.
          { healthCheck: { path: '/healthz', interval: '300ms', timeout: '300ms', unhealthyThreshold: 2, healthyThreshold: 1 } },
        ),
      );
      try {
        const greenEp = g.gw.dataplane.endpointsOf('shop', 'green')[0];
        const blueEp = g.gw.dataplane.endpointsOf('shop', 'blue')[0];
        await waitFor(() => !greenEp.healthy, { timeout: 10_000, message: 'green unhealthy' });
        expect(blueEp.healthy).toBe(true);
        const r = await load(`${g.url}/share`, { concurrency: 20, count: 1000, ok: (s) => s === 200 });
        expect(r.failed, r.errors.join('\n')).toBe(0);
        expect(r.byName.live).toBe(1000);
        expect(userRequests(live).length).toBe(1000);

        // Now the last live version dies too.
        await live.close();
        await waitFor(() => !blueEp.healthy, { timeout: 10_000, message: 'blue unhealthy' });
        for (let i = 0; i < 5; i++) {
          const e = await get(`${g.url}/share`, {}, agent);
          expectGatewayError(e, 503, 'NO_HEALTHY_UPSTREAM');
        }
      } finally {
        await g.close();
        await live.close();
      }
    });
  });
});

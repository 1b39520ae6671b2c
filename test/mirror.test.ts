// Mirroring (gateway/mirror.ts) with real `switchyard serve` processes and real node:http
// upstreams: blue serves, green gets the copies; differences are found with their JSON
// path or byte offset, ignored paths are ignored, a hung or down green costs the client
// nothing, writes are copied only when listed (and their bodies arrive intact at both),
// copies over the in-flight bound are dropped and counted, the mirror reaches the
// workers of gateway.workers: 2, a rollout's shadow step rolls back on its diff rate, and
// a bad mirror body is refused with nothing changed.

import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { chromium } from 'playwright-core';
import { load, shopConfig, startProcess, startUpstream, waitFor, httpGet, type GatewayProcess, type Upstream } from './helpers.js';
import { api, controlTop, rollout, runCli, TOKENS } from './control-helpers.js';
import { startRedis } from './redis-server.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

interface Backend {
  up: Upstream;
  /** Set: every request is held without an answer (released at close). */
  hang: boolean;
  /** Bodies received by path, as digests. */
  bodies: { path: string; mirror: boolean; sha: string; bytes: number }[];
  held: ServerResponse[];
}

/** blue and green answer the same except on /diff (a nested field), /text (one byte)
 * and /status; /time carries a changing timestamp; POST /echo reports the body. */
async function backend(name: 'blue' | 'green'): Promise<Backend> {
  const b: Backend = { hang: false, bodies: [], held: [] } as unknown as Backend;
  b.up = await startUpstream(name, (req: IncomingMessage, res: ServerResponse) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const body = Buffer.concat(parts);
      const path = (req.url ?? '').split('?')[0];
      b.bodies.push({ path, mirror: req.headers['x-switchyard-mirror'] === '1', sha: sha(body), bytes: body.length });
      if (b.hang) {
        b.held.push(res);
        return;
      }
      const json = (status: number, v: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(v));
      };
      switch (path) {
        case '/diff':
          return json(200, { user: { name: 'ada', plan: { tier: name === 'blue' ? 'gold' : 'silver', seats: 3 } }, ok: true });
        case '/time':
          return json(200, { v: 1, timestamp: `${Date.now()}-${Math.random()}`, requestId: req.headers['x-request-id'] });
        case '/text':
          res.writeHead(200, { 'content-type': 'text/plain' });
          return res.end(name === 'blue' ? 'hello world' : 'hello wOrld');
        case '/status':
          return json(name === 'blue' ? 200 : 404, { name: 'x' });
        case '/echo':
          return json(200, { sha: sha(body), bytes: body.length });
        default:
          return json(200, { same: true, list: [1, 2, 3] });
      }
    });
  });
  return b;
}

let procs: GatewayProcess[] = [];
let backends: Backend[] = [];

afterEach(async () => {
  for (const p of procs) await p.stop();
  procs = [];
  for (const b of backends) {
    for (const r of b.held) r.destroy();
    await b.up.close();
  }
  backends = [];
});

async function setup(mirror?: Record<string, unknown>, gateway: Record<string, unknown> = {}): Promise<{ gw: GatewayProcess; blue: Backend; green: Backend }> {
  const blue = await backend('blue');
  const green = await backend('green');
  backends.push(blue, green);
  const cfg = shopConfig(
    { blue: { weight: 100, endpoints: [blue.up.address] }, green: { weight: 0, endpoints: [green.up.address] } },
    mirror === undefined ? {} : { mirror },
    controlTop({}, { gateway }),
  );
  const gw = await startProcess(cfg);
  procs.push(gw);
  return { gw, blue, green };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function mirrorState(gw: GatewayProcess): Promise<any> {
  const r = await api(gw.controlUrl, 'GET', '/v1/services/shop/mirror', { token: TOKENS.read });
  expect(r.status).toBe(200);
  return r.json;
}

async function get(gw: GatewayProcess, path: string): Promise<{ status: number; body: string }> {
  return httpGet(`${gw.url}${path}`);
}

describe('mirror: comparing blue with green', () => {
  it('finds the differing JSON path and byte offset, matches identical answers, ignores ignored paths; copies carry x-switchyard-mirror', async () => {
    const { gw, blue, green } = await setup({ to: 'green', ignore: ['$.timestamp', '$.requestId'] });
    for (const p of ['/same', '/diff', '/time', '/text', '/status', '/same', '/time']) {
      // A client cannot pass its request off as a copy: its x-switchyard-mirror is dropped.
      const r = await httpGet(`${gw.url}${p}`, { 'x-switchyard-mirror': '1' });
      // The client always gets blue's answer.
      expect(r.status).toBe(200);
      if (p === '/text') expect(r.body).toBe('hello world');
    }
    const m = await waitFor(async () => {
      const s = await mirrorState(gw);
      return s.compared === 7 ? s : undefined;
    });
    expect(m.counts).toEqual({ match: 4, status_diff: 1, body_diff: 2, error: 0, dropped: 0 });
    expect(m.source).toBe('config');
    expect(m.mirror).toMatchObject({ to: 'green', percent: 100, methods: ['GET', 'HEAD'], compare: true, ignore: ['$.timestamp', '$.requestId'] });
    const byPath = Object.fromEntries(m.samples.map((s: { path: string }) => [s.path, s]));
    expect(byPath['/diff']).toMatchObject({ method: 'GET', result: 'body_diff', where: '$.user.plan.tier', served: { version: 'blue', status: 200 }, mirror: { version: 'green', status: 200 } });
    expect(typeof byPath['/diff'].latencyDeltaMs).toBe('number');
    expect(byPath['/text']).toMatchObject({ result: 'body_diff', where: 'byte 7' });
    expect(byPath['/status']).toMatchObject({ result: 'status_diff', served: { status: 200 }, mirror: { status: 404 } });
    expect(byPath['/same']).toBeUndefined();
    expect(byPath['/time']).toBeUndefined();
    // Every copy is marked; blue only ever saw the client's requests.
    expect(green.bodies.length).toBe(7);
    expect(green.bodies.every((b) => b.mirror)).toBe(true);
    expect(blue.bodies.some((b) => b.mirror)).toBe(false);
    // Prometheus: by service, target version and result.
    const metrics = (await httpGet(`${gw.adminUrl}/metrics`)).body;
    expect(metrics).toMatch(/^switchyard_mirror_requests_total\{service="shop",version="green",result="match"\} 4$/m);
    expect(metrics).toMatch(/^switchyard_mirror_requests_total\{service="shop",version="green",result="body_diff"\} 2$/m);
    // The served version's figures know nothing of the copies: green served nothing.
    const live = await api(gw.controlUrl, 'GET', '/v1/live', { token: TOKENS.read });
    expect(live.json.services[0].mirror.counts.status_diff).toBe(1);
  });

  it('without the ignore list the changing field is a difference; DELETE stops the copies', async () => {
    const { gw, green } = await setup();
    expect((await mirrorState(gw)).mirror).toBeNull();
    await get(gw, '/time');
    const put = await api(gw.controlUrl, 'PUT', '/v1/services/shop/mirror', { body: { to: 'green' } });
    expect(put.status).toBe(200);
    expect(put.json.source).toBe('api');
    await get(gw, '/time');
    const m = await waitFor(async () => {
      const s = await mirrorState(gw);
      return s.compared === 1 ? s : undefined;
    });
    // (the copy carries the served request's x-request-id: that field agrees)
    expect(m.samples[0].where).toBe('$.timestamp');
    const del = await api(gw.controlUrl, 'DELETE', '/v1/services/shop/mirror');
    expect(del.status).toBe(200);
    expect(del.json.mirror).toBeNull();
    await get(gw, '/same');
    await get(gw, '/same');
    expect(green.bodies.length).toBe(1);
    const ev = await api(gw.controlUrl, 'GET', '/v1/events', { token: TOKENS.read });
    const actions = (ev.json.events ?? ev.json).map((e: { action: string }) => e.action);
    expect(actions).toContain('mirror.set');
    expect(actions).toContain('mirror.stopped');
  });
});

describe('mirror: never the client’s problem', () => {
  it('a green that hangs adds no client error; its copies time out as errors; over maxInflight they are dropped', async () => {
    const { gw, green } = await setup({ to: 'green', timeout: '300ms', maxInflight: 4 });
    green.hang = true;
    const r = await load(`${gw.url}/same`, { concurrency: 8, count: 200 });
    expect(r.failed).toBe(0);
    expect(r.ok).toBe(200);
    const m = await waitFor(async () => {
      const s = await mirrorState(gw);
      return s.counts.error + s.counts.dropped === 200 ? s : undefined;
    });
    expect(m.counts.match).toBe(0);
    expect(m.counts.error).toBeGreaterThan(0);
    // 8 clients at once against 4 copies in flight: some were not copied.
    expect(m.counts.dropped).toBeGreaterThan(0);
    expect(m.samples.at(-1)).toMatchObject({ result: 'error', mirror: { version: 'green', status: 0 } });
    // The hung copies never made the served version's endpoints look bad.
    const svc = await api(gw.controlUrl, 'GET', '/v1/services/shop', { token: TOKENS.read });
    expect(svc.json.versions.blue.endpoints[0].state).toBe('healthy');
    expect(svc.json.versions.green.endpoints[0].state).toBe('healthy');
  });

  it('a green that is down adds no client error; the copies count as errors', async () => {
    const { gw, green } = await setup({ to: 'green' });
    await green.up.close();
    const r = await load(`${gw.url}/same`, { concurrency: 4, count: 100 });
    expect(r.failed).toBe(0);
    const m = await waitFor(async () => {
      const s = await mirrorState(gw);
      return s.counts.error === 100 ? s : undefined;
    });
    expect(m.samples.at(-1).where).toMatch(/ECONNREFUSED|refused/i);
  });
});

describe('mirror: writes', () => {
  it('POST is not copied unless listed; when listed its body arrives intact at both; a body over maxBodyBytes is dropped', async () => {
    const { gw, blue, green } = await setup({ to: 'green', maxBodyBytes: '200kb' });
    const body = Buffer.alloc(150_000);
    for (let i = 0; i < body.length; i++) body[i] = (i * 7 + 3) & 0xff;
    const post = async (b: Buffer, chunked = false): Promise<number> => {
      const res = await request(`${gw.url}/echo`, {
        method: 'POST',
        // A chunked upload (no content-length) is teed as it streams.
        body: chunked ? Readable.from([b.subarray(0, 1000), b.subarray(1000)]) : b,
        headers: { 'content-type': 'application/octet-stream' },
      });
      const j = (await res.body.json()) as { sha: string };
      expect(j.sha).toBe(sha(b));
      return res.statusCode;
    };
    expect(await post(body)).toBe(200);
    expect(green.bodies.length).toBe(0);

    const put = await api(gw.controlUrl, 'PUT', '/v1/services/shop/mirror', { body: { to: 'green', methods: ['GET', 'POST'], maxBodyBytes: '200kb' } });
    expect(put.status).toBe(200);
    expect(await post(body)).toBe(200);
    expect(await post(body, true)).toBe(200);
    const m = await waitFor(async () => {
      const s = await mirrorState(gw);
      return s.counts.match === 2 ? s : undefined;
    });
    expect(m.counts.body_diff + m.counts.error).toBe(0);
    const copies = green.bodies.filter((b) => b.path === '/echo');
    expect(copies).toHaveLength(2);
    for (const c of copies) expect(c).toMatchObject({ mirror: true, sha: sha(body), bytes: body.length });
    expect(blue.bodies.filter((b) => b.path === '/echo').every((b) => b.sha === sha(body))).toBe(true);

    // Over maxBodyBytes: served as ever, not copied (declared length or streamed).
    const big = Buffer.alloc(300_000, 1);
    expect(await post(big)).toBe(200);
    expect(await post(big, true)).toBe(200);
    await waitFor(async () => (await mirrorState(gw)).counts.dropped === 2);
    expect(green.bodies.filter((b) => b.path === '/echo')).toHaveLength(2);
  });
});

describe('mirror: gateway.workers', () => {
  it('with gateway.workers: 2 a mirror set through the API reaches every worker, and the primary sums their counts', async () => {
    const { gw, green } = await setup(undefined, { workers: 2 });
    const put = await api(gw.controlUrl, 'PUT', '/v1/services/shop/mirror', { body: { to: 'green', ignore: ['$.timestamp', '$.requestId'] } });
    expect(put.status).toBe(200);
    // Each worker applies the state in order; wait until copies flow, then count a batch.
    await waitFor(async () => {
      await get(gw, '/same');
      return (await mirrorState(gw)).compared > 0;
    });
    const r = await load(`${gw.url}/diff`, { concurrency: 8, count: 100 });
    expect(r.failed).toBe(0);
    // (only /diff differs: the warm-up's copies all match)
    const m = await waitFor(async () => {
      const s = await mirrorState(gw);
      return s.counts.body_diff === 100 ? s : undefined;
    });
    expect(m.counts.status_diff + m.counts.error + m.counts.dropped).toBe(0);
    expect(m.samples.at(-1).where).toBe('$.user.plan.tier');
    expect(green.bodies.filter((b) => b.path === '/diff' && b.mirror)).toHaveLength(100);
    const status = await httpGet(`${gw.adminUrl}/metrics`);
    expect(status.body).toMatch(/^switchyard_mirror_requests_total\{service="shop",version="green",result="body_diff"\} 100$/m);
  });
});

describe('mirror: a fleet on redis', () => {
  it('a mirror set on one replica is stored like the weights: the other replica applies it and copies too; DELETE stops both', async () => {
    const redis = await startRedis();
    try {
      const blue = await backend('blue');
      const green = await backend('green');
      backends.push(blue, green);
      const cfg = shopConfig(
        { blue: { weight: 100, endpoints: [blue.up.address] }, green: { weight: 0, endpoints: [green.up.address] } },
        {},
        controlTop({}, { state: { store: 'redis', redis: { url: redis.url, prefix: 'mirror' } } }),
      );
      const a = await startProcess(cfg);
      procs.push(a);
      const b = await startProcess(cfg);
      procs.push(b);
      const put = await api(a.controlUrl, 'PUT', '/v1/services/shop/mirror', { body: { to: 'green', ignore: ['$.timestamp'] } });
      expect(put.status).toBe(200);
      await waitFor(async () => (await mirrorState(b)).source === 'api');
      expect((await mirrorState(b)).mirror).toMatchObject({ to: 'green', ignore: ['$.timestamp'] });
      expect((await get(b, '/diff')).status).toBe(200);
      const m = await waitFor(async () => {
        const s = await mirrorState(b);
        return s.compared === 1 ? s : undefined;
      });
      expect(m.samples[0].where).toBe('$.user.plan.tier');
      // (counts are per replica: a copied nothing)
      expect((await mirrorState(a)).compared).toBe(0);
      expect((await api(b.controlUrl, 'DELETE', '/v1/services/shop/mirror')).status).toBe(200);
      await waitFor(async () => (await mirrorState(a)).mirror === null);
      await get(a, '/diff');
      await get(b, '/diff');
      expect(green.bodies).toHaveLength(1);
    } finally {
      for (const p of procs) await p.stop();
      procs = [];
      await redis.stop();
    }
  });
});

describe('mirror: shadow step of a rollout', () => {
  it.each([1, 2])('gateway.workers: %i — rolls back at the shadow (0 percent) step when more copies differ than maxMirrorDiffRate; green never served a client', async (workers) => {
    const { gw, green } = await setup(undefined, workers > 1 ? { workers } : {});
    const stop = { v: false };
    const traffic = load(`${gw.url}/diff`, { concurrency: 2, until: () => stop.v, ratePerWorker: 50 });
    const start = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', {
      body: { to: 'green', steps: [0, 50, 100], interval: '1s', analysis: { maxMirrorDiffRate: 0.05, minRequests: 10 } },
    });
    expect(start.status).toBe(202);
    expect(start.json).toMatchObject({ percent: 0, weights: { blue: 100, green: 0 }, mirror: { to: 'green' } });
    const ro = await waitFor(async () => {
      const r = await rollout(gw.controlUrl);
      return r.state === 'rolled_back' ? r : undefined;
    });
    stop.v = true;
    const r = await traffic;
    expect(r.failed).toBe(0);
    expect(ro.step).toBe(0);
    expect(ro.reason).toMatch(/mirror diff rate of green 100\.00% > max 5\.00%/);
    expect(ro.analysis.last.mirror).toMatchObject({ version: 'green' });
    expect(ro.analysis.last.mirror.compared).toBeGreaterThanOrEqual(10);
    expect(ro.weights).toEqual({ blue: 100, green: 0 });
    // Every request green saw was a copy; with the rollout over, the mirror is off.
    expect(green.bodies.every((b) => b.mirror)).toBe(true);
    expect((await mirrorState(gw)).mirror).toBeNull();
  });

  it('passes the shadow step when the copies match, then moves real traffic', async () => {
    const { gw } = await setup();
    const stop = { v: false };
    const traffic = load(`${gw.url}/same`, { concurrency: 2, until: () => stop.v, ratePerWorker: 50 });
    const start = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', {
      body: { to: 'green', steps: [0, 50, 100], interval: '1s', analysis: { maxMirrorDiffRate: 0.05, minRequests: 10 }, mirror: { percent: 100 } },
    });
    expect(start.status).toBe(202);
    const ro = await waitFor(async () => {
      const r = await rollout(gw.controlUrl);
      return r.step >= 1 ? r : undefined;
    });
    stop.v = true;
    expect((await traffic).failed).toBe(0);
    expect(ro.history[1]).toMatchObject({ step: 1, percent: 50 });
    expect(ro.state).not.toBe('rolled_back');
  });
});

describe('mirror: bad bodies', () => {
  it('each bad mirror body → 400 with the key named, nothing changed', async () => {
    const { gw } = await setup({ to: 'green', percent: 50 });
    const before = await api(gw.controlUrl, 'GET', '/v1/services/shop', { token: TOKENS.read });
    const cases: [string, unknown, RegExp][] = [
      ['an unknown version', { to: 'purple' }, /no version purple/],
      ['no target', { percent: 10 }, /to/],
      ['percent over 100', { to: 'green', percent: 101 }, /percent/],
      ['an ignore that is no JSON path', { to: 'green', ignore: ['timestamp'] }, /ignore/],
      ['no methods', { to: 'green', methods: [] }, /methods/],
      ['an unknown key', { to: 'green', mirrorAll: true }, /mirrorAll|additional/],
      ['a bad size', { to: 'green', maxBodyBytes: 'lots' }, /maxBodyBytes/],
      ['a bad timeout', { to: 'green', timeout: 'soon' }, /timeout/],
      ['not an object', [], /object/],
    ];
    for (const [name, body, message] of cases) {
      const r = await api(gw.controlUrl, 'PUT', '/v1/services/shop/mirror', { body });
      expect(r.status, name).toBe(400);
      expect(r.json.error.message, name).toMatch(message);
    }
    // A rollout's shadow mirror is checked the same way, and needs a 0% first step.
    const ro = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', { body: { to: 'green', steps: [10, 100], interval: '1s', mirror: { percent: 10 } } });
    expect(ro.status).toBe(400);
    expect(ro.json.error.code).toBe('INVALID_ROLLOUT');
    const ro0 = await api(gw.controlUrl, 'POST', '/v1/services/shop/rollout', { body: { to: 'green', steps: [0, 0, 100], interval: '1s' } });
    expect(ro0.status).toBe(400);
    expect(ro0.json.error.code).toBe('INVALID_STEPS');
    const m = await mirrorState(gw);
    expect(m.mirror).toMatchObject({ to: 'green', percent: 50 });
    expect(m.source).toBe('config');
    const after = await api(gw.controlUrl, 'GET', '/v1/services/shop', { token: TOKENS.read });
    expect(after.json.revision).toBe(before.json.revision);
    expect(after.json.rollout).toBeNull();
  });

  it('a config whose mirror names no version is refused', async () => {
    const blue = await startUpstream('blue');
    try {
      const cfg = shopConfig({ blue: { weight: 100, endpoints: [blue.address] } }, { mirror: { to: 'green' } });
      await expect(startProcess(cfg)).rejects.toThrow(/mirror\.to: the service has no version green/);
    } finally {
      await blue.close();
    }
  });
});

describe('mirror: CLI', () => {
  it('switchyard mirror sets, shows and stops a mirror; a bad one exits 2 with nothing changed', async () => {
    const { gw } = await setup();
    const env = { url: gw.controlUrl };
    const set = await runCli(['mirror', 'shop', '--to', 'green', '--percent', '100', '--ignore', '$.timestamp,$.requestId'], env);
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toContain('shop: mirror 100% of GET,HEAD to green (api)');
    await get(gw, '/diff');
    await waitFor(async () => (await mirrorState(gw)).compared === 1);
    const show = await runCli(['mirror', 'shop'], env);
    expect(show.code).toBe(0);
    expect(show.stdout).toMatch(/GET \/diff\s+body_diff\s+200→200\s+\$\.user\.plan\.tier/);
    const bad = await runCli(['mirror', 'shop', '--to', 'purple'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('no version purple');
    expect((await mirrorState(gw)).mirror.to).toBe('green');
    const stop = await runCli(['mirror', 'shop', '--stop', '--json'], env);
    expect(stop.code).toBe(0);
    expect(JSON.parse(stop.stdout).mirror).toBeNull();
  });
});

describe('mirror: dashboard', () => {
  it('shows the mirror panel: target, counts by result and the differing samples with their JSON path', async () => {
    const { gw } = await setup({ to: 'green', ignore: ['$.timestamp', '$.requestId'] });
    for (const p of ['/same', '/diff', '/time', '/diff']) expect((await get(gw, p)).status).toBe(200);
    await waitFor(async () => (await mirrorState(gw)).compared === 4);
    const browser = await chromium.launch({
      executablePath: process.env.SWITCHYARD_CHROMIUM ?? '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
    });
    try {
      const page = await browser.newPage();
      page.setDefaultTimeout(15_000);
      const problems: string[] = [];
      page.on('pageerror', (e) => problems.push(e.message));
      await page.goto(`${gw.controlUrl}/ui`);
      await page.fill('#token', TOKENS.read);
      await page.click('#connect');
      const panel = page.locator('section.card[data-service="shop"] .mirror');
      await panel.waitFor({ state: 'visible' });
      const line = panel.locator('div').first();
      await waitFor(async () => (await line.textContent())?.includes('to green (config)'));
      expect(await line.textContent()).toBe('100% to green (config) · diff rate 50.00% of 4 · match 2, status_diff 0, body_diff 2, error 0, dropped 0');
      const rows = panel.locator('tr[data-path="/diff"]');
      expect(await rows.count()).toBe(2);
      expect(await rows.first().locator('td').allTextContents()).toEqual([expect.any(String), 'GET /diff', 'body_diff', '200 → 200', '$.user.plan.tier', expect.stringMatching(/ ms$/)]);
      expect(problems).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});

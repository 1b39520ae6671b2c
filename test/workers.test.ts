// gateway.workers: N data-plane processes behind one primary (gateway/workers.ts,
// bin/worker.ts), as real `switchyard serve` processes: every worker serves, and every
// state change reaches every worker in order — weights through the API, a config
// reload, an ejection one worker asked for; cutover --wait waits for the old version's
// requests in all workers; counters, windows and in-flight counts are summed in the
// primary; SIGTERM drains every worker; a killed worker is replaced and gets the state;
// workers never outlive a killed primary.

import { execFile } from 'node:child_process';
import https from 'node:https';
import http2 from 'node:http2';
import { writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import { stringify } from 'yaml';
import { loadConfigText, ConfigError } from '../config/load.js';
import { makeCa } from './certs.js';
import { alive, emptyLoadResult, load, shopConfig, startProcess, startUpstream, waitFor, type GatewayProcess, type Upstream } from './helpers.js';

interface WorkerView {
  pid: number;
  listening: boolean;
  applied: number;
  served: number;
  inflight: number;
}
interface Status {
  inflight: number;
  workers: { stateSeq: number; processes: WorkerView[] };
}

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!().catch(() => {});
});

async function json<T>(url: string, init: { method?: string; body?: unknown } = {}): Promise<{ status: number; body: T }> {
  const res = await request(url, {
    method: (init.method ?? 'GET') as 'GET',
    headers: init.body === undefined ? {} : { 'content-type': 'application/json' },
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  });
  return { status: res.statusCode, body: (await res.body.json()) as T };
}

const status = async (g: GatewayProcess): Promise<Status> => (await json<Status>(`${g.controlUrl}/v1/status`)).body;

/** Every worker has applied the primary's newest state. */
async function synced(g: GatewayProcess, workers = 2): Promise<Status> {
  return waitFor(
    async () => {
      const s = await status(g);
      return s.workers.processes.length === workers && s.workers.processes.every((w) => w.listening && w.applied === s.workers.stateSeq) && s;
    },
    { timeout: 10_000, message: 'every worker applied the newest state' },
  );
}

/** `n` GETs, each on its own connection (the primary deals connections to workers in turn). */
async function fresh(url: string, n: number, path = '/'): Promise<Record<string, number>> {
  const by: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const agent = new Agent({ connections: 1 });
    const res = await request(`${url}${path}`, { dispatcher: agent });
    const body = (await res.body.json()) as { name: string };
    const k = res.statusCode === 200 ? body.name : String(res.statusCode);
    by[k] = (by[k] ?? 0) + 1;
    await agent.close();
  }
  return by;
}

async function start(config: Record<string, unknown>): Promise<GatewayProcess> {
  const g = await startProcess(config);
  cleanup.push(async () => {
    const pids = (await status(g).catch(() => undefined))?.workers.processes.map((w) => w.pid) ?? [];
    await g.stop('SIGKILL');
    // Orphaned workers drain and leave by themselves; make sure they did.
    await waitFor(() => pids.every((p) => !alive(p)), { timeout: 15_000, message: 'workers gone' });
  });
  return g;
}

async function upstreams(...names: string[]): Promise<Upstream[]> {
  const ups = await Promise.all(names.map((n) => startUpstream(n)));
  for (const u of ups) cleanup.push(() => u.close());
  return ups;
}

const withWorkers = (versions: Parameters<typeof shopConfig>[0], service: Record<string, unknown> = {}, top: Record<string, unknown> = {}) =>
  shopConfig(versions, service, { ...top, gateway: { workers: 2, ...((top.gateway as object) ?? {}) } });

describe('gateway.workers', () => {
  it('is validated like every key: an integer from 1 to 64', () => {
    const base = (w: unknown) => stringify({ gateway: { workers: w }, services: { shop: { routes: [{ path: '/' }], versions: { blue: { weight: 1, endpoints: ['127.0.0.1:1'] } } } } });
    expect(loadConfigText(base(4)).gateway.workers).toBe(4);
    expect(loadConfigText(stringify({ services: { shop: { routes: [{ path: '/' }], versions: { blue: { weight: 1, endpoints: ['127.0.0.1:1'] } } } } })).gateway.workers).toBe(1);
    for (const bad of [0, 65, 1.5, 'two']) {
      try {
        loadConfigText(base(bad));
        expect.unreachable(`workers: ${bad} was accepted`);
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        expect((err as ConfigError).problems.join('\n')).toContain('gateway.workers');
      }
    }
  });

  it('every worker serves; a weight change and a config reload reach every worker', async () => {
    const [blue, green] = await upstreams('blue', 'green');
    const config = withWorkers({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } });
    const g = await start(config);
    const s0 = await synced(g);
    expect(s0.workers.processes.map((w) => w.pid)).not.toContain(g.pid);

    expect(await fresh(g.url, 20)).toEqual({ blue: 20 });
    // Both workers took connections.
    const s1 = await waitFor(async () => {
      const s = await status(g);
      return s.workers.processes.reduce((n, w) => n + w.served, 0) === 20 && s;
    });
    for (const w of s1.workers.processes) expect(w.served).toBeGreaterThan(0);

    const put = await json<{ weights: Record<string, number> }>(`${g.controlUrl}/v1/services/shop/weights`, { method: 'PUT', body: { weights: { blue: 0, green: 100 } } });
    expect(put.status).toBe(200);
    const s2 = await synced(g);
    expect(s2.workers.stateSeq).toBeGreaterThan(s0.workers.stateSeq);
    expect(await fresh(g.url, 20)).toEqual({ green: 20 });

    // A reload that renames the route's path: only /v2 is served, by every worker.
    const next = { ...config, log: { level: 'info' }, services: { shop: { routes: [{ path: '/v2' }], versions: { blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } } } } };
    writeFileSync(g.file, stringify(next));
    process.kill(g.pid, 'SIGHUP');
    await waitFor(() => g.logs.some((l) => l.msg === 'config reloaded'), { message: 'reloaded' });
    await synced(g);
    // The runtime weights (green 100) stay over the config's.
    expect(await fresh(g.url, 10, '/v2/x')).toEqual({ green: 10 });
    expect(await fresh(g.url, 6, '/other')).toEqual({ 404: 6 });
  });

  it('cutover --wait returns only after the old version finished its requests in every worker', async () => {
    const slowDone: number[] = [];
    // Requests to blue's /slow are held until the test releases them.
    const held: (() => void)[] = [];
    const blue = await startUpstream('blue', (req, res) => {
      req.resume();
      const answer = (): void => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ name: 'blue' }));
      };
      if (req.url?.startsWith('/slow')) held.push(answer);
      else answer();
    });
    cleanup.push(() => {
      for (const a of held.splice(0)) a();
      return blue.close();
    });
    const [green] = await upstreams('green');
    const g = await start(withWorkers({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } }));
    await synced(g);
    // Held requests on connections of their own until every worker has some in flight
    // (the cluster module places connections: two each is usual, not promised).
    const slow: Promise<number>[] = [];
    const slowRequest = async (): Promise<number> => {
      const agent = new Agent({ connections: 1 });
      const res = await request(`${g.url}/slow`, { dispatcher: agent });
      await res.body.text();
      slowDone.push(Date.now());
      await agent.close();
      return res.statusCode;
    };
    const inflight = async (): Promise<number[]> => (await status(g)).workers.processes.map((w) => w.inflight);
    while (slow.length < 4 || (await inflight()).some((n) => n === 0)) {
      expect(slow.length, 'connections opened to reach both workers').toBeLessThan(16);
      slow.push(slowRequest());
      await waitFor(() => held.length === slow.length, { message: 'slow request at blue' });
      await waitFor(async () => (await inflight()).reduce((a, b) => a + b, 0) === slow.length, { message: 'the workers count it in flight' });
    }
    // Load on both workers through the switch: nothing fails, and once the answer is in,
    // blue gets no request at all (each worker answered after applying the new weights).
    let stop = false;
    const progress = emptyLoadResult();
    const loading = load(g.url, { concurrency: 4, until: () => stop, ratePerWorker: 200, progress });
    await waitFor(() => progress.ok >= 20, { message: 'load running' });
    let answered = 0;
    const cut = json<{ drained: boolean; weights: Record<string, number> }>(`${g.controlUrl}/v1/services/shop/cutover`, { method: 'POST', body: { to: 'green', wait: true, timeout: '20s' } }).then((r) => {
      answered = Date.now();
      return r;
    });
    // The switch is made (new requests reach green) while blue's requests are held: no answer yet.
    await waitFor(() => (progress.byName.green ?? 0) >= 20, { message: 'green serving' });
    expect(answered).toBe(0);
    for (const a of held.splice(0)) a();
    const r = await cut;
    const blueSeen = blue.seen.length;
    const okAtAnswer = progress.ok;
    await waitFor(() => progress.ok >= okAtAnswer + 50, { message: 'load after the answer' });
    stop = true;
    const during = await loading;
    expect(during.failed, during.errors.join('\n')).toBe(0);
    expect(blue.seen.length).toBe(blueSeen);
    expect(r.status).toBe(200);
    expect(r.body.drained).toBe(true);
    expect(await Promise.all(slow)).toEqual(slow.map(() => 200));
    expect(slowDone).toHaveLength(slow.length);
    for (const t of slowDone) expect(t).toBeLessThanOrEqual(answered);
    expect(await fresh(g.url, 8)).toEqual({ green: 8 });
  });

  it('sums the workers’ counters, windows and in-flight counts in the primary (/metrics passes promtool)', async () => {
    const [blue] = await upstreams('blue');
    const g = await start(withWorkers({ blue: { weight: 1, endpoints: [blue.address] } }));
    await synced(g);
    const r = await load(g.url, { concurrency: 8, count: 400 });
    expect(r.failed).toBe(0);
    const text = await waitFor(async () => {
      const t = await (await request(`${g.adminUrl}/metrics`)).body.text();
      return /^switchyard_requests_total\{service="shop",version="blue",code="2xx"\} 400$/m.test(t) && t;
    }, { message: 'requests_total reaches 400' });
    expect(text).toMatch(/^switchyard_request_duration_seconds_count\{service="shop",version="blue"\} 400$/m);
    const check = await new Promise<{ code: number; out: string }>((resolve) => {
      const p = execFile('promtool', ['check', 'metrics'], (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }));
      p.stdin!.end(text);
    });
    expect(check.out).toBe('');
    expect(check.code).toBe(0);
    // The per-second windows (rollout analysis, dashboard) hold every request too.
    const live = await waitFor(async () => {
      const body = (await json<{ services: { versions: Record<string, { rps: number }> }[] }>(`${g.controlUrl}/v1/live`)).body;
      return body.services[0].versions.blue.rps > 0 && body;
    }, { message: 'the live view shows the workers’ traffic' });
    expect(live.services[0].versions.blue.rps).toBeGreaterThan(0);
  });

  it('rollout analysis sees the errors the workers counted: a failing green is rolled back', async () => {
    const [blue] = await upstreams('blue');
    let n = 0;
    const green = await startUpstream('green', (req, res) => {
      req.resume();
      // One in ten answers is a 500 (outlier detection off: the analysis must catch it).
      const status = ++n % 10 === 0 ? 500 : 200;
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ name: 'green' }));
    });
    cleanup.push(() => green.close());
    const g = await start(withWorkers({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } }));
    await synced(g);
    const started = await json(`${g.controlUrl}/v1/services/shop/rollout`, {
      method: 'POST',
      body: { to: 'green', steps: [50, 100], interval: '2s', analysis: { maxErrorRate: 0.02, minRequests: 20 } },
    });
    expect(started.status).toBe(202);
    let state = 'running';
    const loading = load(g.url, { concurrency: 4, until: () => state !== 'running', ratePerWorker: 100, ok: () => true });
    const final = await waitFor(async () => {
      const x = (await json<{ state: string; analysis: { last: { verdict: string; target: { errorRate: number; requests: number } } } }>(`${g.controlUrl}/v1/services/shop/rollout`)).body;
      state = x.state;
      return x.state !== 'running' && x;
    }, { timeout: 15_000, message: 'the rollout ended' });
    expect((await loading).sent).toBeGreaterThan(0);
    expect(final.state).toBe('rolled_back');
    expect(final.analysis.last.verdict).toBe('fail');
    expect(final.analysis.last.target.errorRate).toBeGreaterThan(0.02);
    expect(final.analysis.last.target.requests).toBeGreaterThanOrEqual(20);
    expect((await json<{ weights: Record<string, number> }>(`${g.controlUrl}/v1/services/shop`)).body.weights).toEqual({ blue: 100, green: 0 });
  });

  it('an ejection one worker asks for applies in every worker; maxEjectionPercent is counted over the whole pool', async () => {
    const [good] = await upstreams('good');
    const bad = await startUpstream('bad', (req, res) => {
      req.resume();
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ name: 'bad' }));
    });
    cleanup.push(() => bad.close());
    const g = await start(
      withWorkers({ blue: { weight: 1, endpoints: [good.address, bad.address] } }, { outlierDetection: { consecutive5xx: 3, baseEjectionTime: '30s', maxEjectionPercent: 50 } }),
    );
    await synced(g);
    const r = await load(g.url, { concurrency: 4, count: 200, ok: () => true });
    expect(r.sent).toBe(200);
    const svc = async () => (await json<{ versions: Record<string, { endpoints: { address: string; state: string }[] }> }>(`${g.controlUrl}/v1/services/shop`)).body;
    await waitFor(async () => (await svc()).versions.blue.endpoints.find((e) => e.address.endsWith(`:${bad.port}`))?.state === 'ejected', { message: 'bad endpoint ejected' });
    // maxEjectionPercent 50 of 2: the good one is never ejected, whatever the workers ask.
    expect((await svc()).versions.blue.endpoints.find((e) => e.address.endsWith(`:${good.port}`))?.state).toBe('healthy');
    await synced(g);
    const before = bad.seen.length;
    // At most consecutive5xx per worker (and what was in flight) reached it.
    expect(before).toBeLessThanOrEqual(2 * (3 + 4));
    expect(await fresh(g.url, 20)).toEqual({ good: 20 });
    expect(bad.seen.length).toBe(before);
  });

  it('maxEjectionPercent holds across workers: of two failing endpoints only one is ejected', async () => {
    const failing = await Promise.all(
      ['bad-1', 'bad-2'].map((name) =>
        startUpstream(name, (req, res) => {
          req.resume();
          res.writeHead(500, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ name }));
        }),
      ),
    );
    for (const u of failing) cleanup.push(() => u.close());
    const g = await start(
      withWorkers({ blue: { weight: 1, endpoints: failing.map((u) => u.address) } }, { outlierDetection: { consecutive5xx: 2, baseEjectionTime: '30s', maxEjectionPercent: 50 } }),
    );
    await synced(g);
    // Both workers see both endpoints fail and ask for both ejections.
    const r = await load(g.url, { concurrency: 4, count: 200, ok: () => true });
    expect(r.statuses[500]).toBe(200);
    const states = async () => (await json<{ versions: Record<string, { endpoints: { state: string }[] }> }>(`${g.controlUrl}/v1/services/shop`)).body.versions.blue.endpoints.map((e) => e.state).sort();
    await waitFor(async () => (await states()).includes('ejected'), { message: 'one ejected' });
    await synced(g);
    expect(await states()).toEqual(['ejected', 'healthy']);
    const m = await (await request(`${g.adminUrl}/metrics`)).body.text();
    expect(m).toMatch(/^switchyard_outlier_ejections_total\{service="shop",version="blue"\} 1$/m);
  });

  it('SIGTERM drains every worker: requests in flight in each one finish, then all exit 0', async () => {
    const blue = await startUpstream('blue', (req, res) => {
      req.resume();
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ name: 'blue' }));
      }, 2500);
    });
    cleanup.push(() => blue.close());
    const g = await start(withWorkers({ blue: { weight: 1, endpoints: [blue.address] } }, {}, { shutdown: { drainDelay: '200ms', grace: '10s' } }));
    const pids = (await synced(g)).workers.processes.map((w) => w.pid);
    const inflight = Array.from({ length: 10 }, async () => {
      const agent = new Agent({ connections: 1 });
      try {
        const res = await request(`${g.url}/`, { dispatcher: agent });
        await res.body.text();
        return res.statusCode;
      } finally {
        await agent.close();
      }
    });
    await waitFor(
      async () => {
        const w = (await status(g)).workers.processes;
        return w.every((x) => x.inflight > 0) && w.reduce((n, x) => n + x.inflight, 0) === 10;
      },
      { message: 'ten requests in flight, in both workers' },
    );
    process.kill(g.pid, 'SIGTERM');
    expect(await Promise.all(inflight)).toEqual(Array(10).fill(200));
    expect(await g.exited).toBe(0);
    expect(pids.filter(alive)).toEqual([]);
    expect(g.logs.some((l) => l.msg === 'shutdown: every data-plane worker has exited; exiting')).toBe(true);
  });

  it('a killed worker is replaced; the new one gets the current state before it serves', async () => {
    const [blue, green] = await upstreams('blue', 'green');
    const g = await start(withWorkers({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } }));
    await synced(g);
    expect((await json(`${g.controlUrl}/v1/services/shop/weights`, { method: 'PUT', body: { weights: { blue: 0, green: 100 } } })).status).toBe(200);
    const before = (await synced(g)).workers.processes.map((w) => w.pid);
    expect(await fresh(g.url, 10)).toEqual({ green: 10 });
    const total = async (): Promise<number> => {
      const t = await (await request(`${g.adminUrl}/metrics`)).body.text();
      return Number(/^switchyard_requests_total\{service="shop",version="green",code="2xx"\} (\d+)$/m.exec(t)?.[1] ?? 0);
    };
    await waitFor(async () => (await total()) === 10, { message: 'the 10 requests counted' });
    process.kill(before[0], 'SIGKILL');
    // Meanwhile the other worker serves every connection.
    await waitFor(async () => (await status(g)).workers.processes.length === 1, { message: 'the dead worker is gone' });
    expect(await fresh(g.url, 6)).toEqual({ green: 6 });
    const after = await waitFor(async () => {
      const s = await status(g);
      return s.workers.processes.length === 2 && s.workers.processes.every((w) => w.listening && w.applied === s.workers.stateSeq) && s;
    }, { timeout: 10_000, message: 'a replacement worker applied the state' });
    const pids = after.workers.processes.map((w) => w.pid);
    expect(pids).toContain(before[1]);
    expect(pids).not.toContain(before[0]);
    expect(await fresh(g.url, 20)).toEqual({ green: 20 });
    const s = await waitFor(async () => {
      const x = await status(g);
      return x.workers.processes.every((w) => w.served > 0) && x;
    }, { message: 'the replacement serves' });
    expect(s.workers.processes).toHaveLength(2);
    expect(g.logs.some((l) => l.msg === 'data-plane worker exited; starting another')).toBe(true);
    // The dead worker's counts stay in the totals: 10 + 6 + 20.
    await waitFor(async () => (await total()) === 36, { message: 'every request counted, the dead worker’s too' });
  });

  it('with gateway.tls every worker serves HTTPS and HTTP/2 with the certificate', async () => {
    const ca = makeCa();
    const cert = ca.issue('w', 'shop.test', ['shop.test']);
    const [blue] = await upstreams('blue');
    const g = await start(withWorkers({ blue: { weight: 1, endpoints: [blue.address] } }, {}, { gateway: { tls: { certificates: [{ cert: cert.cert, key: cert.key }], watch: false } } }));
    await synced(g);
    const port = Number(new URL(g.url).port);
    for (let i = 0; i < 6; i++) {
      const body = await new Promise<string>((resolve, reject) => {
        https
          .get({ host: '127.0.0.1', port, path: '/', servername: 'shop.test', ca: ca.ca, agent: false, headers: { host: 'shop.test' } }, (res) => {
            let b = '';
            res.on('data', (d) => (b += d));
            res.on('end', () => resolve(`${res.statusCode} ${JSON.parse(b).name}`));
          })
          .on('error', reject);
      });
      expect(body).toBe('200 blue');
      const h2 = http2.connect(`https://127.0.0.1:${port}`, { ca: ca.ca, servername: 'shop.test' });
      const h2status = await new Promise<number>((resolve, reject) => {
        const st = h2.request({ ':path': '/', ':authority': 'shop.test' });
        st.on('response', (h) => resolve(Number(h[':status'])));
        st.on('error', reject);
        st.resume();
      });
      h2.close();
      expect(h2status).toBe(200);
    }
    const s = await waitFor(async () => {
      const x = await status(g);
      return x.workers.processes.reduce((n, w) => n + w.served, 0) === 12 && x;
    }, { message: '12 requests counted' });
    for (const w of s.workers.processes) expect(w.served).toBeGreaterThan(0);
  });

  it('a killed primary: its workers finish the requests they have, then exit', async () => {
    const blue = await startUpstream('blue', (req, res) => {
      req.resume();
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ name: 'blue' }));
      }, 1500);
    });
    cleanup.push(() => blue.close());
    const g = await start(withWorkers({ blue: { weight: 1, endpoints: [blue.address] } }));
    const pids = (await synced(g)).workers.processes.map((w) => w.pid);
    expect(pids.every(alive)).toBe(true);
    const inflight = [0, 1].map(async () => {
      const agent = new Agent({ connections: 1 });
      try {
        const res = await request(`${g.url}/`, { dispatcher: agent });
        return `${res.statusCode} ${((await res.body.json()) as { name: string }).name}`;
      } finally {
        await agent.close();
      }
    });
    await waitFor(async () => (await status(g)).workers.processes.every((w) => w.inflight === 1), { message: 'one request in flight in each worker' });
    await g.stop('SIGKILL');
    expect(await Promise.all(inflight)).toEqual(['200 blue', '200 blue']);
    await waitFor(() => pids.every((p) => !alive(p)), { timeout: 15_000, message: 'workers exited after their primary died' });
  });
});

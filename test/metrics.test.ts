// /metrics: the live page of a real gateway process, after real traffic (successes,
// upstream errors, an ejection, a retry), must pass the real `promtool check metrics`,
// carry the core metric names listed below, and count what happened.

import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { load, shopConfig, startProcess, startUpstream, waitFor, type GatewayProcess, type Upstream, deadAddress } from './helpers.js';

function promtool(text: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const p = execFile('promtool', ['check', 'metrics'], (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr });
    });
    p.stdin!.end(text);
  });
}

async function metrics(p: GatewayProcess): Promise<string> {
  const r = await request(`${p.adminUrl}/metrics`);
  expect(r.statusCode).toBe(200);
  expect(String(r.headers['content-type'])).toMatch(/^text\/plain/);
  return r.body.text();
}

/** The value of one series, by exact name and label set (label order as printed). */
function value(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

describe('metrics', () => {
  let blue: Upstream;
  let failing: Upstream;
  let green: Upstream;
  let p: GatewayProcess;
  let dead: string;

  beforeAll(async () => {
    blue = await startUpstream('blue');
    failing = await startUpstream('blue-500', (req, res) => {
      req.resume();
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('boom');
    });
    green = await startUpstream('green');
    dead = await deadAddress();
    p = await startProcess(
      shopConfig(
        {
          blue: { weight: 50, endpoints: [blue.address, failing.address] },
          green: { weight: 50, endpoints: [green.address, dead] },
        },
        {
          outlierDetection: { consecutive5xx: 3, consecutiveGatewayErrors: 2, baseEjectionTime: '30s', maxEjectionPercent: 50 },
          override: { header: 'x-switchyard-version' },
        },
      ),
    );
  });

  afterAll(async () => {
    await p?.stop('SIGKILL');
    await Promise.all([blue?.close(), failing?.close(), green?.close()]);
  });

  it('passes promtool before any traffic, with the core series present', async () => {
    const text = await metrics(p);
    const r = await promtool(text);
    expect(r.out).toBe('');
    expect(r.code).toBe(0);
    for (const name of [
      'switchyard_requests_total',
      'switchyard_request_duration_seconds',
      'switchyard_inflight_requests',
      'switchyard_version_weight',
      'switchyard_endpoints',
      'switchyard_outlier_ejections_total',
      'switchyard_state_revision',
      'switchyard_upstream_request_duration_seconds',
      'switchyard_retries_total',
      'switchyard_upstream_errors_total',
      'switchyard_config_reloads_total',
      'switchyard_discovery_staleness_seconds',
      'switchyard_replicas',
      'process_cpu_seconds_total',
    ]) {
      expect(text, name).toContain(`# TYPE ${name} `);
    }
    expect(value(text, 'switchyard_version_weight{service="shop",version="blue"}')).toBe(50);
    expect(value(text, 'switchyard_endpoints{service="shop",version="green",state="healthy"}')).toBe(2);
  });

  it('counts traffic, errors, retries and ejections, and still passes promtool', async () => {
    const r = await load(`${p.url}/`, { concurrency: 4, count: 400, ok: () => true });
    expect(r.sent).toBe(400);
    const text = await metrics(p);
    const check = await promtool(text);
    expect(check.out).toBe('');
    expect(check.code).toBe(0);

    const n = (s: string): number => value(text, s) ?? 0;
    const blue2 = n('switchyard_requests_total{service="shop",version="blue",code="2xx"}');
    const blue5 = n('switchyard_requests_total{service="shop",version="blue",code="5xx"}');
    const green2 = n('switchyard_requests_total{service="shop",version="green",code="2xx"}');
    const green5 = n('switchyard_requests_total{service="shop",version="green",code="5xx"}');
    // Every request is counted exactly once.
    expect(blue2 + blue5 + green2 + green5).toBe(400);
    expect(r.statuses[500] ?? 0).toBe(blue5 + green5);
    // The 500-answering endpoint got ejected after 3 in a row, so only a few 500s reached clients.
    expect(blue5).toBeGreaterThanOrEqual(3);
    expect(n('switchyard_outlier_ejections_total{service="shop",version="blue"}')).toBe(1);
    expect(n('switchyard_endpoints{service="shop",version="blue",state="ejected"}')).toBe(1);
    // Connect failures to the dead green endpoint were retried on the live one.
    expect(n('switchyard_upstream_errors_total{service="shop",version="green",reason="connect"}')).toBeGreaterThanOrEqual(1);
    expect(n('switchyard_retries_total{service="shop",version="green"}')).toBeGreaterThanOrEqual(1);
    expect(green5).toBe(0);
    // Buckets reach below a millisecond.
    expect(text).toContain('switchyard_request_duration_seconds_bucket{le="0.0001",service="shop",version="blue"}');
    expect(n('switchyard_request_duration_seconds_count{service="shop",version="blue"}')).toBe(blue2 + blue5);
  });

  it('shows weights and revision changed through the control API', async () => {
    const put = await request(`${p.controlUrl}/v1/services/shop/weights`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ weights: { blue: 10, green: 90 } }),
    });
    expect(put.statusCode).toBe(200);
    const { revision } = (await put.body.json()) as { revision: number };
    await waitFor(async () => value(await metrics(p), 'switchyard_state_revision') === revision);
    const text = await metrics(p);
    expect(value(text, 'switchyard_version_weight{service="shop",version="green"}')).toBe(90);
    expect((await promtool(text)).code).toBe(0);
  });
});

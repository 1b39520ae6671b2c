// The benchmark code works end to end, so that it cannot rot: a tiny `bench/run.mjs`
// (every peer whose binary is installed, Caddy's too, both sizes, 1 round of 1 s; the fixed-rate
// part; every zero-loss scenario for about a second; the fleet with 5 changes; scale
// with 20 services and 200 idle connections) exits 0, writes every section of
// latest.json, latest.md and latest.svg, and leaves none of its processes running.
// It asserts the harness, never performance: no timing or ratio is checked.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { alive } from '../test/helpers.js';

const ROOT = resolve(import.meta.dirname, '..');
const haveWrk = spawnSync('wrk', ['--version']).error === undefined;
const have = (bin: string): boolean => existsSync(`/usr/sbin/${bin}`) || spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;

interface Results {
  throughput: { medians: Record<string, Record<string, { rps: number; p99Ms: number; proxyCpuUsPerReq: number | null }>>; runs: unknown[]; ratios: Record<string, Record<string, number>>; ratios2w: Record<string, Record<string, number>>; goals: { value: number }[] };
  latency: {
    rate: number;
    peers: Record<string, { p50Ms: number; p99Ms: number; p999Ms: number; requests: number }>;
    addedOverDirect: Record<string, { p99Ms: number }>;
    wrk: { peers: Record<string, { p50Ms: number; p99Ms: number; p999Ms: number; requests: number }>; addedOverDirect: Record<string, { p99Ms: number }> };
  };
  scenarios: { results: { id: string; requests: number; failed: number; error?: string; p99BeforeMs: number; p99DuringMs: number }[] };
  fleet: { propagationMs: { p50: number; p99: number } };
  scale: { snapshot: { buildSnapshotMs: number; heapMiB: number }; routing: { nsPerOp: number }; idle: { opened: number; rssAfterMiB: number } };
  machine: { loadavg: number[]; loadavgEnd: number[] };
}

describe('bench harness', () => {
  it.skipIf(!haveWrk)('a tiny full run (throughput, fixed rate, scenarios, fleet, scale) exits 0 with every section and stops its processes', { timeout: 300_000 }, async () => {
    // Results go to a temporary directory: the committed bench/results stay as they are.
    const out = mkdtempSync(join(tmpdir(), 'switchyard-bench-test-'));
    const proc = spawn(process.execPath, [join(ROOT, 'bench/run.mjs')], {
      cwd: ROOT,
      env: {
        ...process.env,
        BENCH_ROUNDS: '1',
        BENCH_DURATION: '1s',
        BENCH_WARMUP: '0',
        BENCH_CONNECTIONS: '8',
        BENCH_SIZES: 'small,64k',
        BENCH_RATE_DURATION: '1s',
        BENCH_SCENARIO_DURATION: '1s',
        BENCH_CONCURRENCY: '8',
        BENCH_ROLLOUT_INTERVAL_MS: '100',
        BENCH_ROLLOUT_STEPS: '3',
        BENCH_FLEET_CHANGES: '5',
        BENCH_SCALE_SERVICES: '20',
        BENCH_SCALE_CONNECTIONS: '200',
        BENCH_SCALE_ITERATIONS: '10000',
        BENCH_OUT: out,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => proc.kill('SIGKILL'), 280_000);
    const code = await new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
    clearTimeout(timer);
    expect(code, `stdout:\n${stdout}\nstderr:\n${stderr}`).toBe(0);

    const r = JSON.parse(readFileSync(join(out, 'latest.json'), 'utf8')) as Results;
    const peers = ['direct', 'switchyard', 'switchyard-2w', 'fastify', 'http-proxy', 'node-raw', ...(have('nginx') ? ['nginx'] : []), ...(have('haproxy') ? ['haproxy'] : []), ...(have('caddy') ? ['caddy'] : [])];
    for (const combo of ['small/8', '64k/8']) {
      for (const p of peers) {
        const m = r.throughput.medians[combo][p];
        expect(m?.rps, `${combo} ${p}`).toBeGreaterThan(0);
        expect(m.p99Ms, `${combo} ${p}`).toBeGreaterThan(0);
        if (p !== 'direct' && process.platform === 'linux') expect(m.proxyCpuUsPerReq, `${combo} ${p} CPU`).toBeGreaterThan(0);
      }
      for (const p of peers) if (p !== 'switchyard') expect(r.throughput.ratios[combo][p], `${combo} ratio to ${p}`).toBeGreaterThan(0);
      for (const p of peers) if (p !== 'switchyard-2w') expect(r.throughput.ratios2w[combo][p], `${combo} 2 workers' ratio to ${p}`).toBeGreaterThan(0);
    }
    expect(r.throughput.runs).toHaveLength(2 * peers.length);
    expect(r.throughput.goals.length).toBeGreaterThan(0);

    // Fixed rate: every peer measured, percentiles in order, added latency computed.
    expect(r.latency.rate).toBeGreaterThan(0);
    for (const p of peers) {
      const l = r.latency.peers[p];
      expect(l.requests, p).toBeGreaterThan(0);
      expect(l.p50Ms).toBeLessThanOrEqual(l.p99Ms);
      expect(l.p99Ms).toBeLessThanOrEqual(l.p999Ms);
    }
    for (const p of peers) {
      const w = r.latency.wrk.peers[p];
      expect(w.requests, `wrk paced ${p}`).toBeGreaterThan(0);
      expect(w.p50Ms).toBeLessThanOrEqual(w.p99Ms);
      expect(w.p99Ms).toBeLessThanOrEqual(w.p999Ms);
    }
    expect(Number.isFinite(r.latency.wrk.addedOverDirect.switchyard.p99Ms)).toBe(true);
    expect(Number.isFinite(r.latency.addedOverDirect.switchyard.p99Ms)).toBe(true);
    expect(Number.isFinite(r.latency.addedOverDirect['switchyard-2w'].p99Ms)).toBe(true);

    // Every scenario ran (failures are counted, not asserted: that is what zero-loss.test.ts does).
    const ids = r.scenarios.results.map((x) => x.id);
    expect(ids).toEqual(expect.arrayContaining(['cutover', 'rollout', 'rolling', 'kill-9', 'sigterm']));
    for (const x of r.scenarios.results) {
      expect(x.error, `${x.id}: ${x.error}`).toBeUndefined();
      expect(x.requests, x.id).toBeGreaterThan(0);
      expect(Number.isInteger(x.failed), x.id).toBe(true);
      expect(Number.isFinite(x.p99DuringMs), x.id).toBe(true);
    }

    expect(r.fleet.propagationMs.p50).toBeGreaterThan(0);
    expect(r.scale.snapshot.buildSnapshotMs).toBeGreaterThan(0);
    expect(r.scale.routing.nsPerOp).toBeGreaterThan(0);
    expect(r.scale.idle.opened).toBe(200);
    expect(r.machine.loadavgEnd).toHaveLength(3);

    const md = readFileSync(join(out, 'latest.md'), 'utf8');
    for (const heading of ['## Headline figures', '## Throughput', '## Latency at a fixed rate', '## Zero-loss scenarios', '## Fleet', '## Scale']) expect(md).toContain(heading);
    expect(readFileSync(join(out, 'latest.svg'), 'utf8')).toMatch(/^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    // The printed goals are the ones written.
    expect(stdout).toMatch(/Switchyard ≥ 1\.5× @fastify\/http-proxy, req\/s: \d+\.\d\d/);
    // The headline figures close the run, each with a number.
    expect(stdout).toContain('\nheadline figures:');
    const figures = stdout.slice(stdout.indexOf('\nheadline figures:'));
    expect(figures).toMatch(/small\/8: Switchyard ÷ http-proxy forwarder, req\/s: \d+\.\d\d/);
    expect(figures).toMatch(/64k\/8: Switchyard CPU per request: \d+\.\d µs/);
    expect(figures).toMatch(/added p99 at 50% of Switchyard's measured max \(\d+ of \d+ req\/s on small\/8, wrk paced\): -?\d+\.\d{3} ms/);
    expect(figures).toMatch(/200 idle keep-alive clients: Switchyard RSS growth: [+-]?\d+\.\d MiB, -?\d+\.\d KiB per connection/);
    if (have('haproxy')) expect(figures).toMatch(/small\/8: Switchyard ÷ HAProxy \(1 thread\), req\/s: \d+\.\d\d/);
    if (have('caddy')) expect(figures).toMatch(/small\/8: Switchyard ÷ Caddy \(GOMAXPROCS=1\), req\/s: \d+\.\d\d/);
    expect(figures).toMatch(/small\/8: Switchyard ÷ Node raw-socket forwarder \(no HTTP features\), req\/s: \d+\.\d\d/);

    // Every peer process was stopped by the harness.
    const pids = [...stdout.matchAll(/ pid (\d+) /g)].map((x) => Number(x[1]));
    expect(pids.length).toBeGreaterThanOrEqual(peers.length);
    for (const pid of pids) expect(alive(pid), `pid ${pid} still running`).toBe(false);
  });
});

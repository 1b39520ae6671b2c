// The benchmark harness works: a tiny run of bench/run.mjs (1 round of 1 s, no
// scenarios) exits 0, produces three req/s figures above zero, and leaves none of the
// processes it started running. It asserts the harness, never performance.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');
const haveWrk = spawnSync('wrk', ['--version']).error === undefined;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('bench harness', () => {
  it.skipIf(!haveWrk)('a tiny throughput run exits 0 with three figures > 0 and stops its processes', async () => {
    // Results go to a temporary directory: the committed bench/results stay as they are.
    const out = mkdtempSync(join(tmpdir(), 'switchyard-bench-test-'));
    const proc = spawn(process.execPath, [join(ROOT, 'bench/run.mjs')], {
      cwd: ROOT,
      env: { ...process.env, BENCH_ROUNDS: '1', BENCH_DURATION: '1s', BENCH_WARMUP: '0', BENCH_SKIP_SCENARIOS: '1', BENCH_OUT: out },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => proc.kill('SIGKILL'), 50_000);
    const code = await new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
    clearTimeout(timer);

    expect(code, `stdout:\n${stdout}\nstderr:\n${stderr}`).toBe(0);
    const results = JSON.parse(readFileSync(join(out, 'latest.json'), 'utf8'));
    const m = results.throughput.medians;
    for (const target of ['direct', 'switchyard', 'http-proxy']) {
      expect(m[target].rps, target).toBeGreaterThan(0);
      expect(m[target].p99Ms, target).toBeGreaterThan(0);
    }
    expect(results.throughput.runs).toHaveLength(3);
    // CPU per request of the gateway and of the forwarder, from /proc (Linux).
    if (process.platform === 'linux') {
      expect(m.switchyard.proxyCpuUsPerReq).toBeGreaterThan(0);
      expect(m['http-proxy'].proxyCpuUsPerReq).toBeGreaterThan(0);
    }
    expect(results.throughput.ratios.switchyardToHttpProxy).toBeGreaterThan(0);
    expect(results.scenarios).toBeUndefined();
    expect(readFileSync(join(out, 'latest.md'), 'utf8')).toContain('Switchyard / http-proxy');
    // The printed medians are the ones written.
    expect(stdout).toMatch(/Switchyard\/http-proxy\s+\d+\.\d\d/);

    // Upstream, gateway and forwarder were stopped by the harness.
    const pids = [...stdout.matchAll(/pid (\d+)/g)].map((x) => Number(x[1]));
    expect(pids).toHaveLength(3);
    for (const pid of pids) expect(alive(pid), `pid ${pid} still running`).toBe(false);
  });
});

// `switchyard demo` driven as the README's tour drives it: the real CLI on free ports
// (SWITCHYARD_DEMO_PORT / _ADMIN_PORT / _CONTROL_PORT), its built-in client sending the
// default 20 req/s, and `switchyard rollout … --wait` from another process. A healthy
// green reaches `succeeded`; with --green-errors 20% the rollout rolls back by itself.
// Steps and intervals are shorter than the tour's so the suite stays quick.

import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { parseDemoArgs } from '../bin/demo.js';
import { api, runCli } from './control-helpers.js';
import { CLI, fixedPort, waitFor } from './helpers.js';

interface Demo {
  proc: ChildProcess;
  controlUrl: string;
  stderr: () => string;
  exited: Promise<number | null>;
}

const demos: Demo[] = [];

async function startDemo(args: string[]): Promise<Demo> {
  const [port, admin, control] = [await fixedPort(), await fixedPort(), await fixedPort()];
  const proc = spawn(process.execPath, [CLI, 'demo', ...args], {
    env: { ...process.env, SWITCHYARD_DEMO_PORT: String(port), SWITCHYARD_DEMO_ADMIN_PORT: String(admin), SWITCHYARD_DEMO_CONTROL_PORT: String(control) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  const demo: Demo = { proc, controlUrl: `http://127.0.0.1:${control}`, stderr: () => err, exited };
  demos.push(demo);
  // The banner comes once every listener is up.
  await waitFor(() => err.includes('Stop with Ctrl-C') || proc.exitCode !== null, { timeout: 20_000, message: `demo banner: ${out}` });
  expect(proc.exitCode, err).toBe(null);
  expect(err).toContain(`gateway   http://127.0.0.1:${port}`);
  // Green's endpoints pass their first probes before a rollout may target them.
  await waitFor(
    async () => {
      const r = await api(demo.controlUrl, 'GET', '/v1/services/shop', { token: null });
      return r.status === 200 && (r.json.versions.green.endpoints as { state: string }[]).every((e) => e.state === 'healthy');
    },
    { timeout: 20_000, message: 'green healthy' },
  );
  return demo;
}

const tourRollout = (d: Demo) =>
  runCli(['rollout', 'shop', '--to', 'green', '--steps', '50,100', '--interval', '2s', '--min-requests', '5', '--wait', '--json'], { url: d.controlUrl, token: null });

describe('switchyard demo', () => {
  afterAll(async () => {
    for (const d of demos) {
      if (d.proc.exitCode === null) d.proc.kill('SIGTERM');
      await d.exited;
    }
  });

  it('parses its flags: rate, no traffic, green faults, every port', () => {
    expect(parseDemoArgs([], {})).toEqual({ port: 8080, adminPort: 9901, controlPort: 9090, rate: 20, green: { errorRate: 0, latencyMs: 0 } });
    expect(parseDemoArgs(['--rate', '5', '--green-errors', '20%', '--green-latency=300ms', '--port', '1'], { SWITCHYARD_DEMO_ADMIN_PORT: '2', SWITCHYARD_DEMO_CONTROL_PORT: '3' })).toEqual({
      port: 1,
      adminPort: 2,
      controlPort: 3,
      rate: 5,
      green: { errorRate: 0.2, latencyMs: 300 },
    });
    expect(parseDemoArgs(['--no-traffic', '--admin-port', '4', '--control-port', '5', '--green-latency', '1s'], {})).toMatchObject({ rate: 0, adminPort: 4, controlPort: 5, green: { latencyMs: 1000 } });
    expect(() => parseDemoArgs(['--green-errors', '120%'], {})).toThrow(/share/);
    expect(() => parseDemoArgs(['--rate'], {})).toThrow(/needs a value/);
    expect(() => parseDemoArgs(['--colour'], {})).toThrow(/unknown demo flag/);
  });

  it('the tour: a rollout to a good green succeeds; with --green-errors 20% it rolls back by itself', async () => {
    // Both demos at once (each on its own ports): the suite waits for one rollout's time.
    const [good, bad] = await Promise.all([startDemo([]), startDemo(['--green-errors', '20%'])]);
    const [ok, rolledBack] = await Promise.all([tourRollout(good), tourRollout(bad)]);

    expect(ok.code, ok.stderr + ok.stdout).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ state: 'succeeded', weights: { blue: 0, green: 100 } });

    expect(rolledBack.code, rolledBack.stderr + rolledBack.stdout).toBe(1);
    const r = JSON.parse(rolledBack.stdout);
    expect(r.state).toBe('rolled_back');
    expect(r.weights).toEqual({ blue: 100, green: 0 });
    // Rolled back for green's errors, not for want of traffic: the built-in client is sending.
    expect(r.reason).toMatch(/error rate/i);
    expect(bad.stderr()).toContain('green     bad on purpose: 20% errors');
    await waitFor(() => /traffic: \d+ sent in 5s \(blue \d+/.test(good.stderr()), { timeout: 10_000, message: 'traffic summary' });
  });
});

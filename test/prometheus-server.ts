// A real Prometheus server for the gates suites: its own config file, TSDB in a temp
// dir, the web listener on a fixed free loopback port, scraping the given targets every
// second. Killable (by its own pid) to test what a rollout does when it is gone.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { fixedPort, waitFor } from './helpers.js';

export const PROMETHEUS = process.env.SWITCHYARD_PROMETHEUS ?? '/usr/bin/prometheus';

export interface PrometheusServer {
  url: string;
  proc: ChildProcess;
  /** An instant query's answer, as Prometheus gives it. */
  query(q: string): Promise<{ status: string; data?: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] }; error?: string }>;
  kill(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts Prometheus scraping `targets` (host:port, path /metrics) every second and
 * resolves once every target is up in it. */
export async function startPrometheus(targets: string[]): Promise<PrometheusServer> {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-prom-'));
  const config = join(dir, 'prometheus.yml');
  writeFileSync(
    config,
    [
      'global: { scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s }',
      'scrape_configs:',
      '  - job_name: switchyard',
      `    static_configs: [{ targets: [${targets.map((t) => `'${t}'`).join(', ')}] }]`,
      '',
    ].join('\n'),
  );
  const port = await fixedPort();
  const proc = spawn(PROMETHEUS, [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  proc.once('error', (err) => (stderr += `cannot start ${PROMETHEUS} (npm test installs the Debian prometheus package): ${err.message}`));
  const url = `http://127.0.0.1:${port}`;
  const query: PrometheusServer['query'] = async (q) => {
    const res = await request(`${url}/api/v1/query?${new URLSearchParams({ query: q })}`);
    return (await res.body.json()) as Awaited<ReturnType<PrometheusServer['query']>>;
  };
  const kill = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited;
  };
  try {
    await waitFor(
      async () => {
        if (proc.exitCode !== null) throw new Error(`prometheus exited: ${stderr}`);
        const r = await query('up');
        return r.status === 'success' && r.data!.result.length === targets.length && r.data!.result.every((s) => s.value[1] === '1');
      },
      { timeout: 30_000, interval: 200, message: `prometheus up and scraping ${targets.join(', ')} ${stderr}` },
    );
  } catch (err) {
    await kill();
    throw err;
  }
  return {
    url,
    proc,
    query,
    kill,
    async stop() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

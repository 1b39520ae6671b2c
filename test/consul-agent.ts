// A real Consul agent (`consul agent -dev`) on free loopback ports for the suites that
// need one (consul.test.ts, outages.test.ts), and the few agent API calls they make.
//
// The agent binary comes from SWITCHYARD_CONSUL_BIN, scripts/ensure-test-deps.sh
// (.tools/consul) or PATH; when it is missing, startConsul throws naming the fix.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { ROOT, fixedPort, waitFor } from './helpers.js';

export { fixedPort };

export function consulBinary(): string {
  const explicit = process.env.SWITCHYARD_CONSUL_BIN;
  if (explicit !== undefined) {
    if (existsSync(explicit)) return explicit;
    throw new Error(`consul binary not found at SWITCHYARD_CONSUL_BIN=${explicit}`);
  }
  const local = join(ROOT, '.tools/consul/usr/bin/consul');
  if (existsSync(local)) return local;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(join(dir, 'consul'))) return join(dir, 'consul');
  }
  throw new Error('consul binary not found (.tools/consul/usr/bin/consul or PATH): run `bash scripts/ensure-test-deps.sh` (it fetches Consul 1.8.7 from Debian bullseye into .tools/consul); the Consul suite cannot run without it');
}

export interface ConsulAgent {
  proc: ChildProcess;
  /** ACL token the test helpers send (agents started with ACLs on). */
  token?: string;
  pid: number;
  httpPort: number;
  url: string;
  output: () => string;
  /** Stops this agent by its PID (SIGKILL by default: a crash). */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Freezes the agent (SIGSTOP): connections stay open, nothing is answered. */
  pause(): void;
  /** Thaws it (SIGCONT). */
  resume(): void;
}

export const agents = new Set<ConsulAgent>();

/** Starts `consul agent -dev` (fresh, in-memory state) on free ports, or on httpPort. */
/** Starts an agent; on free ports it tries again (fresh ports) if one does not come up,
 * since a port found free a moment ago can be taken by then on a busy machine. */
export async function startConsul(httpPort?: number, opts: { args?: string[]; token?: string } = {}): Promise<ConsulAgent> {
  const tries = httpPort === undefined ? 3 : 1;
  for (let i = 1; ; i++) {
    try {
      return await startConsulOnce(httpPort, opts);
    } catch (err) {
      if (i >= tries) throw err;
    }
  }
}

async function startConsulOnce(httpPort: number | undefined, opts: { args?: string[]; token?: string }): Promise<ConsulAgent> {
  const bin = consulBinary();
  // Consul listens on the ports it is given (and a restart must get its HTTP port back):
  // ports no bind to port 0 is ever handed.
  const port = httpPort ?? (await fixedPort());
  const [lan, wan, server] = [await fixedPort(), await fixedPort(), await fixedPort()];
  const args = ['agent', '-dev', '-bind', '127.0.0.1', '-client', '127.0.0.1', '-http-port', String(port), '-serf-lan-port', String(lan), '-serf-wan-port', String(wan), '-server-port', String(server), '-dns-port', '-1', '-grpc-port', '-1', '-log-level', 'warn', ...(opts.args ?? [])];
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const agent: ConsulAgent = {
    proc,
    token: opts.token,
    pid: proc.pid!,
    httpPort: port,
    url: `http://127.0.0.1:${port}`,
    output: () => out,
    async stop(signal: NodeJS.Signals = 'SIGKILL') {
      agents.delete(agent);
      if (proc.exitCode === null && proc.signalCode === null) {
        // A paused agent would not act on SIGTERM until thawed.
        process.kill(agent.pid, 'SIGCONT');
        process.kill(agent.pid, signal);
      }
      await exited;
    },
    pause() {
      if (proc.exitCode === null && proc.signalCode === null) process.kill(agent.pid, 'SIGSTOP');
    },
    resume() {
      if (proc.exitCode === null && proc.signalCode === null) process.kill(agent.pid, 'SIGCONT');
    },
  };
  agents.add(agent);
  try {
    await waitFor(
      async () => {
        if (proc.exitCode !== null) throw new Error(`consul exited with ${proc.exitCode}: ${out.slice(-2000)}`);
        const headers = opts.token ? { 'x-consul-token': opts.token } : {};
        const leader = await (await request(`${agent.url}/v1/status/leader`, { headers })).body.text();
        if (leader.length <= 2) return false;
        // The agent's node is in the catalog (its services can be passing).
        const nodes = (await (await request(`${agent.url}/v1/catalog/nodes`, { headers })).body.json()) as unknown[];
        return nodes.length > 0;
      },
      { timeout: 20_000, interval: 100, message: `consul agent on port ${port} up` },
    );
  } catch (err) {
    await agent.stop();
    throw new Error(`${(err as Error).message}; agent output: ${out.slice(-1500)}`);
  }
  return agent;
}

export async function consulPut(agent: ConsulAgent, path: string, body?: unknown): Promise<void> {
  const res = await request(`${agent.url}${path}`, { method: 'PUT', headers: agent.token ? { 'x-consul-token': agent.token } : {}, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`PUT ${path}: ${res.statusCode} ${text}`);
}

export interface Instance {
  ID: string;
  Name: string;
  Port: number;
  Tags?: string[];
  Meta?: Record<string, string>;
  Check?: Record<string, unknown>;
}

export const register = (a: ConsulAgent, s: Instance) => consulPut(a, '/v1/agent/service/register', { Address: '127.0.0.1', ...s });
export const deregister = (a: ConsulAgent, id: string) => consulPut(a, `/v1/agent/service/deregister/${id}`);
export const maintenance = (a: ConsulAgent, id: string, enable: boolean) => consulPut(a, `/v1/agent/service/maintenance/${id}?enable=${enable}&reason=test`);

// A real redis-server for the fleet tests: started on a free loopback port without
// persistence, stoppable, restartable on the same port (empty), pausable (SIGSTOP).

import { spawn, type ChildProcess } from 'node:child_process';
import { Redis } from 'ioredis';

import { fixedPort } from './helpers.js';

export { fixedPort };

export interface RedisServer {
  port: number;
  url: string;
  proc: ChildProcess;
  /** A client for the test's own checks. */
  client(): Redis;
  stop(): Promise<void>;
  /** Starts a fresh, empty server on the same port. */
  restart(): Promise<void>;
  pause(): void;
  resume(): void;
}

async function launch(port: number): Promise<ChildProcess> {
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (out.includes('Ready to accept connections')) resolve();
    };
    proc.stdout!.on('data', onData);
    proc.once('exit', (code) => reject(new Error(`redis-server exited with ${code}: ${out}`)));
    proc.once('error', (err) => reject(new Error(`cannot start redis-server (is it installed? npm test installs it): ${err.message}`)));
  });
  return proc;
}

export async function startRedis(): Promise<RedisServer> {
  // redis-server cannot listen on port 0 and say which port it got, and restart() needs
  // the same port back: a port no bind to port 0 is ever handed.
  const port = await fixedPort();
  const clients: Redis[] = [];
  const r: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    proc: await launch(port),
    client() {
      const c = new Redis(this.url, { maxRetriesPerRequest: 1 });
      c.on('error', () => {});
      clients.push(c);
      return c;
    },
    async stop() {
      for (const c of clients.splice(0)) c.disconnect();
      const p = this.proc;
      if (p.exitCode !== null || p.signalCode !== null) return;
      p.kill('SIGCONT');
      p.kill('SIGKILL');
      await new Promise((res) => p.once('exit', res));
    },
    async restart() {
      await this.stop();
      this.proc = await launch(port);
    },
    pause() {
      this.proc.kill('SIGSTOP');
    },
    resume() {
      this.proc.kill('SIGCONT');
    },
  };
  return r;
}

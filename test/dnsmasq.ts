// A real DNS server for the discovery tests: dnsmasq (Debian's dnsmasq-base; npm test
// installs it) on a free loopback port, answering only from files. Stopped and
// restarted by its own PID, on the same port.

import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixedPort, waitFor } from './helpers.js';

export interface Dnsmasq {
  port: number;
  /** host:port for versions.V.dns.resolver */
  server: string;
  pid: number | undefined;
  output(): string;
  /** Rewrites the hosts file ("ADDRESS NAME" lines) and SIGHUPs dnsmasq; resolves once it re-read it. */
  setHosts(lines: string[]): Promise<void>;
  /** Stops dnsmasq (SIGKILL, by its PID). */
  stop(): Promise<void>;
  /** Starts it again on the same port, optionally with new SRV records. */
  start(srv?: string[]): Promise<void>;
}

/** Every dnsmasq started and not stopped for good (stopAllDnsmasq in afterAll). */
const servers = new Set<Dnsmasq>();

export async function stopAllDnsmasq(): Promise<void> {
  for (const s of [...servers]) await s.stop();
  servers.clear();
}

/**
 * dnsmasq answering only from FILES: --addn-hosts (A/AAAA), --srv-host lines (SRV);
 * --local=/test/ makes it answer NXDOMAIN / NODATA for what it does not know (instead
 * of REFUSED), like an authoritative server. ttl = --local-ttl of its answers.
 */
export async function startDnsmasq(opts: { hosts: string[]; srv?: string[]; ttl?: number }): Promise<Dnsmasq> {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-dns-'));
  // dnsmasq drops root to nobody: it must still read the files on SIGHUP.
  chmodSync(dir, 0o755);
  const hostsFile = join(dir, 'hosts');
  const confFile = join(dir, 'dnsmasq.conf');
  writeFileSync(hostsFile, opts.hosts.join('\n') + '\n', { mode: 0o644 });
  // dnsmasq cannot listen on port 0 and say which port it got, and it restarts on the
  // same port: a port no bind to port 0 is ever handed.
  const port = await fixedPort();
  let proc: ChildProcess | undefined;
  let out = '';
  let srv = opts.srv ?? [];
  const reads = (): number => out.split('\n').filter((l) => l.includes(`read ${hostsFile}`)).length;
  const d: Dnsmasq = {
    port,
    server: `127.0.0.1:${port}`,
    get pid() {
      return proc?.pid;
    },
    output: () => out,
    async setHosts(lines) {
      const before = reads();
      writeFileSync(hostsFile, lines.join('\n') + '\n', { mode: 0o644 });
      process.kill(proc!.pid!, 'SIGHUP');
      await waitFor(() => reads() > before, { timeout: 5000, message: 'dnsmasq re-read its hosts file' });
    },
    async stop() {
      const p = proc;
      proc = undefined;
      if (p === undefined || p.exitCode !== null || p.signalCode !== null) return;
      const exited = new Promise<void>((r) => p.once('exit', () => r()));
      process.kill(p.pid!, 'SIGKILL');
      await exited;
    },
    async start(nextSrv) {
      if (nextSrv !== undefined) srv = nextSrv;
      writeFileSync(confFile, srv.map((s) => `srv-host=${s}`).join('\n') + '\n', { mode: 0o644 });
      const before = reads();
      const p = spawn(
        'dnsmasq',
        ['--keep-in-foreground', `--port=${port}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts', `--addn-hosts=${hostsFile}`, `--conf-file=${confFile}`, '--local=/test/', `--local-ttl=${opts.ttl ?? 1}`, '--log-facility=-', '--pid-file'],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      proc = p;
      p.stdout!.on('data', (b: Buffer) => (out += b.toString()));
      p.stderr!.on('data', (b: Buffer) => (out += b.toString()));
      p.once('error', (err) => (out += `spawn error: ${err.message} (is dnsmasq installed? npm test installs dnsmasq-base)\n`));
      await waitFor(
        () => {
          if (p.exitCode !== null) throw new Error(`dnsmasq exited with ${p.exitCode}: ${out}`);
          return reads() > before;
        },
        { timeout: 10_000, message: `dnsmasq up on ${port}: ${out}` },
      );
    },
  };
  await d.start();
  servers.add(d);
  return d;
}


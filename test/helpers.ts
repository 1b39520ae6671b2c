// Shared harness for the suites: real loopback upstreams, a gateway started in-process
// or as a real process, a bounded load generator, and waitFor. No HTTP mocks.

import { spawn, type ChildProcess } from 'node:child_process';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createConnection, createServer as createNetServer, type AddressInfo } from 'node:net';
import { Agent, request } from 'undici';
import { stringify } from 'yaml';
import pino from 'pino';
import { onTestFailed } from 'vitest';
import { startGateway, type RunningGateway } from '../bin/serve.js';

export const ROOT = resolve(import.meta.dirname, '..');
export const CLI = join(ROOT, 'dist/bin/switchyard.js');

export interface Upstream {
  name: string;
  port: number;
  address: string; // 127.0.0.1:port
  server: http.Server;
  /** Requests seen, in order. */
  seen: { method: string; url: string; headers: http.IncomingHttpHeaders }[];
  close(): Promise<void>;
}

export type Handler = (req: IncomingMessage, res: ServerResponse, up: Upstream) => void;

/** Answers JSON {name, method, url, headers} unless given a handler. */
export function defaultHandler(req: IncomingMessage, res: ServerResponse, up: Upstream): void {
  const body = JSON.stringify({ name: up.name, method: req.method, url: req.url, headers: req.headers });
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(body);
  });
}

/** Answers JSON {name}, with 500 when the request carries `x-fail: 1`. */
export function failOnHeader(req: IncomingMessage, res: ServerResponse, up: Upstream): void {
  req.resume();
  const fail = req.headers['x-fail'] === '1';
  res.writeHead(fail ? 500 : 200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ name: up.name }));
}

export async function startUpstream(name: string, handler: Handler = defaultHandler, host = '127.0.0.1', port = 0): Promise<Upstream> {
  const up = { name, seen: [] } as unknown as Upstream;
  const server = http.createServer((req, res) => {
    up.seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    handler(req, res, up);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  up.server = server;
  up.port = (server.address() as AddressInfo).port;
  up.address = `${host}:${up.port}`;
  up.close = () => closeServer(server);
  return up;
}

export interface TrackedUpstream extends Upstream {
  /** Arrival times of requests. */
  times: number[];
  inflight: number;
  /** Requests to /held… that arrived and wait for release(). */
  held: number;
  /** Answers every held request (and those that arrive later). */
  release(): void;
}

/** An upstream answering {name} after delayMs that records when requests arrive and
 * how many it holds. */
export async function startTrackedUpstream(name: string, opts: { delayMs?: number; host?: string; port?: number } = {}): Promise<TrackedUpstream> {
  const delayMs = opts.delayMs ?? 10;
  let t!: TrackedUpstream;
  let released!: () => void;
  const release = new Promise<void>((r) => (released = r));
  const up = await startUpstream(
    name,
    (req, res) => {
      req.resume();
      t.times.push(Date.now());
      t.inflight++;
      const answer = (): void => {
        t.inflight--;
        const body = JSON.stringify({ name });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      };
      if (req.url?.startsWith('/held')) {
        t.held++;
        void release.then(answer);
      } else setTimeout(answer, delayMs);
    },
    opts.host,
    opts.port,
  );
  t = Object.assign(up, { times: [] as number[], inflight: 0, held: 0, release: () => released() });
  return t;
}

export function writeConfig(config: object | string): string {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-test-'));
  const file = join(dir, 'switchyard.yaml');
  writeFileSync(file, typeof config === 'string' ? config : stringify(config));
  return file;
}

/** A minimal config: one service "shop" on every host and path. */
export function shopConfig(versions: Record<string, { weight: number; endpoints: string[] }>, service: Record<string, unknown> = {}, top: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    gateway: { listen: '127.0.0.1:0', ...((top.gateway as object) ?? {}) },
    admin: { listen: '127.0.0.1:0' },
    control: { listen: '127.0.0.1:0' },
    state: { store: 'memory' },
    log: { level: 'silent' },
    shutdown: { drainDelay: '0s', grace: '5s' },
    ...Object.fromEntries(Object.entries(top).filter(([k]) => k !== 'gateway')),
    services: { shop: { routes: [{ path: '/' }], versions, ...service } },
  };
}

export interface InProcessGateway {
  gw: RunningGateway;
  url: string;
  adminUrl: string;
  controlUrl: string;
  file: string;
  /** Log lines, parsed, when started with captureLogs. */
  logs: Record<string, any>[]; // eslint-disable-line @typescript-eslint/no-explicit-any
  close(): Promise<void>;
}

export interface InProcessOptions {
  /** Keep every log line (level SWITCHYARD_TEST_LOG, default debug) in `logs`. */
  captureLogs?: boolean;
  /** Files copied beside the config (name → source path), for relative paths in it. */
  files?: Record<string, string>;
}

export async function startInProcess(config: object | string, opts: InProcessOptions = {}): Promise<InProcessGateway> {
  const file = writeConfig(config);
  for (const [name, from] of Object.entries(opts.files ?? {})) copyFileSync(from, join(dirname(file), name));
  const logs: Record<string, any>[] = []; // eslint-disable-line @typescript-eslint/no-explicit-any
  const log = opts.captureLogs
    ? pino({ level: process.env.SWITCHYARD_TEST_LOG ?? 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line)) })
    : pino({ level: process.env.SWITCHYARD_TEST_LOG ?? 'silent' });
  const gw = await startGateway({ configFile: file, log });
  return {
    gw,
    file,
    logs,
    url: `http://127.0.0.1:${gw.addresses.gateway.port}`,
    adminUrl: `http://127.0.0.1:${gw.addresses.admin.port}`,
    controlUrl: `http://127.0.0.1:${gw.addresses.control.port}`,
    close: () => gw.close(),
  };
}

export interface GatewayProcess {
  proc: ChildProcess;
  pid: number;
  url: string;
  adminUrl: string;
  controlUrl: string;
  file: string;
  /** Every stdout line parsed as JSON (log lines). */
  logs: Record<string, unknown>[];
  stderr: string;
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Runs `switchyard serve` from dist/ as a real process. */
export async function startProcess(config: object | string, file?: string): Promise<GatewayProcess> {
  // The harness finds the ports in the "listening" log line, so the process logs at info.
  file ??= writeConfig(typeof config === 'string' ? config : { ...config, log: { level: 'info' } });
  const proc = spawn(process.execPath, [CLI, 'serve', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: Record<string, unknown>[] = [];
  let stderr = '';
  let buf = '';
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  const listening = new Promise<Record<string, unknown>>((resolveL, rejectL) => {
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          const o = JSON.parse(line);
          logs.push(o);
          if (o.msg === 'listening') resolveL(o);
        } catch {
          /* not a log line */
        }
      }
    });
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    void exited.then((code) => rejectL(new Error(`gateway exited with ${code} before listening: ${stderr}`)));
  });
  const l = await listening;
  // A failed test shows what its gateway said last (a time-out says nothing by itself).
  try {
    onTestFailed(() => {
      const tail = logs.slice(-25).map((o) => JSON.stringify(o)).join('\n');
      console.log(`gateway pid ${proc.pid} (exit ${String(proc.exitCode ?? proc.signalCode)}), last log lines:\n${tail}\nstderr: ${stderr.slice(-2000)}`);
    });
  } catch {
    /* started from a hook, outside a test */
  }
  const port = (s: unknown) => String(s).split(':').pop();
  const gp: GatewayProcess = {
    proc,
    pid: proc.pid!,
    url: `http://127.0.0.1:${port(l.gateway)}`,
    adminUrl: `http://127.0.0.1:${port(l.admin)}`,
    controlUrl: `http://127.0.0.1:${port(l.control)}`,
    file,
    logs,
    get stderr() {
      return stderr;
    },
    exited,
    async stop(signal: NodeJS.Signals = 'SIGKILL') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
  return gp;
}

/** What `waitFor` hands back: its condition's value once truthy. */
export type Truthy<T> = Exclude<T, false | 0 | '' | null | undefined>;

export async function waitFor<T>(cond: () => T | Promise<T>, opts: { timeout?: number; interval?: number; message?: string } = {}): Promise<Truthy<T>> {
  const deadline = Date.now() + (opts.timeout ?? 10_000);
  let last: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v as Truthy<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`waitFor timed out: ${opts.message ?? ''} ${last ? String(last) : ''}`);
    await new Promise((r) => setTimeout(r, opts.interval ?? 20));
  }
}

export interface LoadResult {
  sent: number;
  ok: number;
  failed: number;
  statuses: Record<number, number>;
  errors: string[];
  /** Body "name" field counts when upstreams answer JSON with a name. */
  byName: Record<string, number>;
}

/** One answered request: when it was sent, when its answer was read, who answered. */
export interface LoadSample {
  sent: number;
  done: number;
  name: string | undefined;
}

/**
 * A bounded load generator: `concurrency` workers send requests back to back until
 * `count` requests were sent or `until()` says stop. Counts every outcome.
 */
export const emptyLoadResult = (): LoadResult => ({ sent: 0, ok: 0, failed: 0, statuses: {}, errors: [], byName: {} });

/**
 * Sends GETs (or opts.method) from `concurrency` workers until `count` were sent or
 * `until()` says stop. `progress`, when given, is the result filled as answers come in:
 * a test waits on it ("200 more answers") instead of sleeping while load runs.
 */
export async function load(url: string, opts: { concurrency: number; count?: number; until?: () => boolean; headers?: Record<string, string>; method?: string; ok?: (status: number) => boolean; ratePerWorker?: number; progress?: LoadResult; trace?: LoadSample[] }): Promise<LoadResult> {
  // An answer that never comes is a failed request with its cause, well inside a
  // test's time (undici's own default waits 300 s).
  const agent = new Agent({ connections: opts.concurrency, pipelining: 1, headersTimeout: 30_000, bodyTimeout: 30_000 });
  const r: LoadResult = opts.progress ?? emptyLoadResult();
  const isOk = opts.ok ?? ((s: number) => s < 500);
  const max = opts.count ?? Infinity;
  const gap = opts.ratePerWorker ? 1000 / opts.ratePerWorker : 0;
  const worker = async (): Promise<void> => {
    while (r.sent < max && !(opts.until?.() ?? false)) {
      r.sent++;
      const t0 = Date.now();
      try {
        const res = await request(url, { method: (opts.method ?? 'GET') as 'GET', headers: opts.headers, dispatcher: agent });
        const text = await res.body.text();
        r.statuses[res.statusCode] = (r.statuses[res.statusCode] ?? 0) + 1;
        if (isOk(res.statusCode)) r.ok++;
        else {
          r.failed++;
          if (r.errors.length < 20) r.errors.push(`${res.statusCode} ${text.slice(0, 200)}`);
        }
        let name: string | undefined;
        try {
          const n = JSON.parse(text).name;
          if (typeof n === 'string') name = n;
        } catch {
          /* not JSON */
        }
        if (name !== undefined) r.byName[name] = (r.byName[name] ?? 0) + 1;
        opts.trace?.push({ sent: t0, done: Date.now(), name });
      } catch (err) {
        r.failed++;
        if (r.errors.length < 20) r.errors.push(String((err as Error).message ?? err));
      }
      if (gap) {
        const wait = gap - (Date.now() - t0);
        if (wait > 0) await new Promise((res) => setTimeout(res, wait));
      }
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  await agent.close();
  return r;
}

/** GET with the body as text. */
export async function httpGet(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const res = await request(url, { headers });
  return { status: res.statusCode, body: await res.body.text() };
}

/** A discovery provider's staleness from the admin /metrics page (undefined when absent). */
export async function discoveryStaleness(adminUrl: string, provider: string): Promise<number | undefined> {
  const text = (await httpGet(`${adminUrl}/metrics`)).body;
  const m = new RegExp(`^switchyard_discovery_staleness_seconds\\{provider="${provider}"\\} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

/** Stops a server: no new connections, open ones (keep-alive) cut. */
export function closeServer(server: { close(cb: () => void): unknown; closeAllConnections(): void }): Promise<void> {
  return new Promise<void>((r) => {
    server.close(() => r());
    server.closeAllConnections();
  });
}

/** The kernel's ephemeral range: what a bind to port 0 (and an outgoing connection) is
 * handed. */
function ephemeralRange(): [number, number] {
  try {
    const [lo, hi] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (lo > 0 && hi >= lo) return [lo, hi];
  } catch {
    /* not Linux: the IANA range */
  }
  return [49152, 65535];
}

const handedOut = new Set<number>();

/** Test files run in parallel worker processes (vitest's pool), each with its own
 * `handedOut`: a port probed free by one worker could be taken by another before its
 * server binds it. So each worker draws from its own slice of the range below the
 * ephemeral ports (`VITEST_POOL_ID`, 1…maxWorkers), and two workers never pick the same
 * port. */
const PORT_SLICES = 8;
function fixedPortSlice(): [number, number] {
  const [ephemeralLow] = ephemeralRange();
  const low = 10_000;
  const high = Math.max(low + 8000, ephemeralLow) - 1;
  const pool = Number(process.env.VITEST_POOL_ID);
  if (!Number.isInteger(pool) || pool < 1) return [low, high];
  const size = Math.floor((high - low + 1) / PORT_SLICES);
  const slice = (pool - 1) % PORT_SLICES;
  return [low + slice * size, low + (slice + 1) * size - 1];
}

/**
 * A loopback port for a server that cannot listen on port 0 and tell its port (Redis,
 * Consul, dnsmasq, a config with a fixed listen address), or that must come back on the
 * same port after a restart. It is picked at random below the kernel's ephemeral range,
 * so no bind to port 0 and no outgoing connection, of this suite or of any other
 * process, is ever handed it — not while the server starts, nor while it is down between
 * a stop and a restart (a port freed from the ephemeral range can be taken by any
 * other test's server in that gap). It is free when returned, never returned twice by
 * this process, and the server must bind it at once.
 */
export async function fixedPort(host = '127.0.0.1'): Promise<number> {
  const [low, high] = fixedPortSlice();
  for (let i = 0; i < 200; i++) {
    const port = low + Math.floor(Math.random() * (high - low + 1));
    if (handedOut.has(port)) continue;
    const free = await new Promise<boolean>((resolve) => {
      const s = createNetServer();
      s.once('error', () => resolve(false));
      s.listen(port, host, () => s.close(() => resolve(true)));
    });
    if (free) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`fixedPort: no free port found between ${low} and ${high}`);
}

/** Low ports no test listens on and the kernel never hands out for port 0, so another
 * test's server can never take one while it is meant to be dead (ports 7, 9, 13, 17,
 * 19 and 22 are left out: classic inetd services and ssh). */
const DEAD_PORTS = [1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 14, 15, 16, 18, 20, 21];
let nextDead = 0;

/** host:port of a loopback port nobody listens on (connects are refused); successive
 * calls give different ports. */
export async function deadAddress(): Promise<string> {
  for (let i = 0; i < DEAD_PORTS.length; i++) {
    const port = DEAD_PORTS[nextDead++ % DEAD_PORTS.length];
    const refused = await new Promise<boolean>((resolve) => {
      const sock = createConnection({ host: '127.0.0.1', port });
      sock.once('connect', () => {
        sock.destroy();
        resolve(false);
      });
      sock.once('error', () => resolve(true));
    });
    if (refused) return `127.0.0.1:${port}`;
  }
  throw new Error('deadAddress: every low port tried accepts connections on this machine');
}

/** Whether a process of that id exists (signal 0). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** RSS of a process in bytes, from /proc. */
export function rssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) * 1024 : 0;
}

// Shared pieces of the benchmark scripts: child processes that are always stopped (by
// pid) when the script ends however it ends, free loopback ports, readiness polling,
// wrk runs and their parsing, a bounded load generator, and the results files.

import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, Pool, request } from 'undici';
import { stringify } from 'yaml';
import { toMarkdown, toSvg } from './report.mjs';

export const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(BENCH_DIR, '..');
export const CLI = join(ROOT, 'dist/bin/switchyard.js');
export const RESULTS_DIR = process.env.BENCH_OUT ? resolve(process.env.BENCH_OUT) : join(BENCH_DIR, 'results');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- child processes ----

/** Every child started here, by pid, until it has exited. */
const children = new Map();
let cleanupInstalled = false;

function killAllSync(signal = 'SIGKILL') {
  for (const [pid, c] of children) {
    if (c.exitCode === null && c.signalCode === null) {
      try {
        process.kill(pid, signal);
      } catch {
        /* already gone */
      }
    }
  }
}

function installCleanup() {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  // The last resort: whatever is still running when this process exits is killed.
  process.on('exit', () => killAllSync('SIGKILL'));
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      process.stderr.write(`bench: ${sig}, stopping ${children.size} child process(es)\n`);
      killAllSync('SIGKILL');
      process.exit(130);
    });
  }
}

/**
 * Starts a child process and follows its stdout line by line (JSON lines parsed).
 * @returns {{proc, pid, lines: object[], out: () => string, err: () => string, exited: Promise<{code, signal}>, waitLine(pred, timeoutMs): Promise<object>, stop(signal?, timeoutMs?): Promise<{code, signal}>}}
 */
export function startChild(cmd, args, opts = {}) {
  installCleanup();
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env, cwd: opts.cwd ?? ROOT });
  const lines = [];
  let out = '';
  let err = '';
  let buf = '';
  const waiters = [];
  if (proc.pid !== undefined) children.set(proc.pid, proc);
  const exited = new Promise((r) =>
    proc.once('exit', (code, signal) => {
      children.delete(proc.pid);
      for (const w of waiters.splice(0)) w.reject(new Error(`${opts.label ?? cmd} exited (code ${code}, signal ${signal}) before the expected line; stderr: ${err.slice(-2000)}`));
      r({ code, signal });
    }),
  );
  proc.once('error', (e) => {
    err += String(e);
  });
  proc.stdout.on('data', (d) => {
    const s = d.toString();
    if (opts.keepOutput !== false && out.length < 1_000_000) out += s;
    buf += s;
    let i;
    while ((i = buf.indexOf('\n')) !== -1) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let o;
      try {
        o = JSON.parse(line);
      } catch {
        continue;
      }
      lines.push(o);
      for (let k = waiters.length - 1; k >= 0; k--) {
        if (waiters[k].pred(o)) {
          waiters[k].resolve(o);
          waiters.splice(k, 1);
        }
      }
    }
  });
  proc.stderr.on('data', (d) => {
    if (err.length < 1_000_000) err += d.toString();
  });
  const child = {
    proc,
    pid: proc.pid,
    lines,
    label: opts.label ?? cmd,
    out: () => out,
    err: () => err,
    exited,
    get running() {
      return proc.exitCode === null && proc.signalCode === null;
    },
    waitLine(pred, timeoutMs = 15_000) {
      const found = lines.find(pred);
      if (found) return Promise.resolve(found);
      if (!child.running) return Promise.reject(new Error(`${child.label} is not running; stderr: ${err.slice(-2000)}`));
      return new Promise((resolveW, rejectW) => {
        const w = { pred, resolve: resolveW, reject: rejectW };
        waiters.push(w);
        setTimeout(() => {
          const k = waiters.indexOf(w);
          if (k !== -1) {
            waiters.splice(k, 1);
            rejectW(new Error(`${child.label}: timed out waiting for a line; stderr: ${err.slice(-2000)}`));
          }
        }, timeoutMs).unref();
      });
    },
    /** Sends a signal (default SIGTERM) and waits for exit; SIGKILL after timeoutMs. */
    async stop(signal = 'SIGTERM', timeoutMs = 5000) {
      if (child.running) proc.kill(signal);
      const t = setTimeout(() => {
        if (child.running) proc.kill('SIGKILL');
      }, timeoutMs);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
    signal(sig) {
      if (child.running) proc.kill(sig);
    },
  };
  return child;
}

/** Stops every child still running (SIGTERM, then SIGKILL), by pid. */
export async function stopAll(timeoutMs = 3000) {
  const running = [...children.values()];
  await Promise.all(
    running.map(
      (proc) =>
        new Promise((r) => {
          if (proc.exitCode !== null || proc.signalCode !== null) return r();
          const t = setTimeout(() => {
            try {
              process.kill(proc.pid, 'SIGKILL');
            } catch {
              /* gone */
            }
          }, timeoutMs);
          proc.once('exit', () => {
            clearTimeout(t);
            r();
          });
          try {
            process.kill(proc.pid, 'SIGTERM');
          } catch {
            clearTimeout(t);
            r();
          }
        }),
    ),
  );
}

export function runningChildren() {
  return [...children.keys()];
}

// ---- ports and readiness ----

const handedOut = new Set();

/** A free port on 127.0.0.1 for a server that is given its port (nginx, haproxy, a
 * gateway's config): picked at random below the kernel's ephemeral range, so that no
 * bind to port 0 or outgoing connection of any process (wrk's, the suite's) can be
 * handed it before the server binds it. Never returned twice by this process. */
export async function freePort() {
  let ephemeralLow = 32768;
  try {
    ephemeralLow = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || ephemeralLow;
  } catch {
    /* not Linux */
  }
  const low = 10_000;
  const high = Math.max(low + 1000, ephemeralLow) - 1;
  for (let i = 0; i < 200; i++) {
    const port = low + Math.floor(Math.random() * (high - low + 1));
    if (handedOut.has(port)) continue;
    const free = await new Promise((resolveP) => {
      const s = net.createServer();
      s.once('error', () => resolveP(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolveP(true)));
    });
    if (free) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`freePort: no free port between ${low} and ${high}`);
}

/** Polls url until it answers `status` (default 200). */
export async function waitHttp(url, { status = 200, timeoutMs = 15_000, child } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    if (child && !child.running) throw new Error(`${child.label} exited while waiting for ${url}; stderr: ${child.err().slice(-2000)}; stdout: ${child.out().slice(-2000)}`);
    try {
      const res = await request(url, { headersTimeout: 1000, bodyTimeout: 1000 });
      await res.body.dump();
      if (res.statusCode === status) return;
      last = `status ${res.statusCode}`;
    } catch (e) {
      last = e.message;
    }
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${url} to answer ${status} (last: ${last})`);
}

// ---- the pieces under test ----

/** Starts bench/upstream.mjs; resolves once it listens. */
export async function startUpstream(name, { fail = false, port = 0 } = {}) {
  const args = [join(BENCH_DIR, 'upstream.mjs'), '--name', name, '--port', String(port)];
  if (fail) args.push('--fail');
  const c = startChild(process.execPath, args, { label: `upstream ${name}` });
  const l = await c.waitLine((o) => o.ready === true);
  c.port = l.port;
  c.address = `127.0.0.1:${l.port}`;
  c.url = `http://127.0.0.1:${l.port}`;
  c.name = name;
  return c;
}

/** Starts bench/http-proxy-forwarder.mjs in front of one upstream. */
export async function startForwarder(targetUrl, { maxSockets = 256 } = {}) {
  const c = startChild(process.execPath, [join(BENCH_DIR, 'http-proxy-forwarder.mjs'), '--target', targetUrl, '--max-sockets', String(maxSockets)], { label: 'http-proxy forwarder' });
  const l = await c.waitLine((o) => o.ready === true);
  c.port = l.port;
  c.url = `http://127.0.0.1:${l.port}`;
  return c;
}

/** Starts bench/raw-forwarder.mjs (raw sockets, no HTTP features: the ceiling of one
 * Node process) in front of one upstream address (host:port). */
export async function startRawForwarder(address) {
  const c = startChild(process.execPath, [join(BENCH_DIR, 'raw-forwarder.mjs'), '--target', address], { label: 'raw-socket forwarder' });
  const l = await c.waitLine((o) => o.ready === true);
  c.port = l.port;
  c.url = `http://127.0.0.1:${l.port}`;
  return c;
}

/** A Switchyard config for the benchmarks; `services` is the services map. */
export function gatewayConfig({ port, adminPort, controlPort, level = 'warn', services, shutdown = { drainDelay: '0s', grace: '5s' }, workers = 1 }) {
  return {
    gateway: { listen: `127.0.0.1:${port}`, ...(workers > 1 ? { workers } : {}) },
    admin: { listen: `127.0.0.1:${adminPort}` },
    control: { listen: `127.0.0.1:${controlPort}` },
    state: { store: 'memory' },
    log: { level },
    services,
    shutdown,
  };
}

export function writeYaml(config, file) {
  file ??= join(mkdtempSync(join(os.tmpdir(), 'switchyard-bench-')), 'switchyard.yaml');
  writeFileSync(file, stringify(config));
  return file;
}

/**
 * Starts `switchyard serve` on free loopback ports; resolves when /ready answers 200.
 * @param makeConfig ({port, adminPort, controlPort}) => config object
 * @param opts.nodeArgs node flags before the script (--cpu-prof…)
 */
export async function startGateway(makeConfig, { label = 'switchyard', nodeArgs = [], env, cli = CLI } = {}) {
  const ports = { port: await freePort(), adminPort: await freePort(), controlPort: await freePort() };
  const config = makeConfig(ports);
  const file = writeYaml(config);
  const c = startChild(process.execPath, [...nodeArgs, cli, 'serve', '--config', file], { label, env });
  c.file = file;
  c.config = config;
  c.port = ports.port;
  c.url = `http://127.0.0.1:${ports.port}`;
  c.adminUrl = `http://127.0.0.1:${ports.adminPort}`;
  c.controlUrl = `http://127.0.0.1:${ports.controlPort}`;
  await waitHttp(`${c.adminUrl}/ready`, { child: c });
  /** Rewrites the config file and sends SIGHUP. */
  c.reconfigure = (next) => {
    c.config = next;
    writeYaml(next, file);
    c.signal('SIGHUP');
  };
  return c;
}

/** CPU time (user + system) a process has used, in ms, from /proc; undefined where
 * /proc is not available. Clock ticks are 10 ms on Linux (CLK_TCK 100). */
export function cpuMs(pid) {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) * (1000 / CLK_TCK);
  } catch {
    return undefined;
  }
}
/** CPU ms of a process and its direct children (a gateway's data-plane workers). */
export function treeCpuMs(pid) {
  let total = cpuMs(pid);
  if (total === undefined) return undefined;
  for (const child of childPids(pid)) total += cpuMs(child) ?? 0;
  return total;
}

/** Pids whose parent is `pid` (from /proc; [] where /proc is not available). */
export function childPids(pid) {
  const out = [];
  let entries = [];
  try {
    entries = readdirSync('/proc');
  } catch {
    return out;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const f = readFileSync(`/proc/${e}/stat`, 'utf8').split(') ')[1].split(' ');
      if (Number(f[1]) === pid) out.push(Number(e));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Resident set size of a process in MiB, from /proc/PID/status (VmRSS). */
export function rssMiB(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100;

// ---- wrk ----

export function haveWrk() {
  return spawnSync('wrk', ['--version'], { encoding: 'utf8' }).error === undefined;
}

const UNIT_MS = { us: 1e-3, ms: 1, s: 1e3, m: 60e3, h: 3600e3 };

/** A wrk duration or latency figure ("812.00us", "1.20ms", "2.00s") in milliseconds. */
export function wrkTimeMs(s) {
  const m = /^([\d.]+)(us|ms|s|m|h)$/.exec(s.trim());
  if (!m) return NaN;
  return Number(m[1]) * UNIT_MS[m[2]];
}

/** Parses wrk --latency output. */
export function parseWrk(text) {
  const num = (re) => {
    const m = re.exec(text);
    return m ? Number(m[1]) : NaN;
  };
  const pct = (p) => {
    const m = new RegExp(`^\\s+${p}%\\s+(\\S+)\\s*$`, 'm').exec(text);
    return m ? wrkTimeMs(m[1]) : NaN;
  };
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  return {
    rps: num(/^Requests\/sec:\s+([\d.]+)/m),
    requests: num(/^\s+(\d+) requests in /m),
    p50Ms: pct(50),
    p75Ms: pct(75),
    p90Ms: pct(90),
    p99Ms: pct(99),
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/) || 0,
    socketErrors: sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
  };
}

/** Runs wrk against url; resolves with the parsed figures (and the raw text). */
export async function runWrk(url, { threads = 1, connections = 64, duration = '5s' } = {}) {
  const c = startChild('wrk', [`-t${threads}`, `-c${connections}`, `-d${duration}`, '--latency', url], { label: 'wrk' });
  const { code, signal } = await c.exited;
  if (code !== 0) throw new Error(`wrk exited with ${code ?? signal}: ${c.err()}`);
  const r = parseWrk(c.out());
  if (!(r.rps > 0)) throw new Error(`could not parse wrk output:\n${c.out()}\n${c.err()}`);
  return { ...r, raw: c.out() };
}

/**
 * wrk at about a fixed rate: each of `connections` connections waits a random 0–2×meanDelayMs
 * (whole ms: wrk's timers) before each request, so sends are spread out rather than in
 * lock-step bursts. The rate is about connections × 1000 / (meanDelayMs + latency); the
 * achieved one is returned. Latency percentiles come from wrk's own histogram (µs).
 */
export async function runWrkPaced(url, { connections, meanDelayMs = 5, duration = '5s' }) {
  const dir = mkdtempSync(join(os.tmpdir(), 'switchyard-bench-wrk-'));
  const script = join(dir, 'paced.lua');
  writeFileSync(
    script,
    `math.randomseed(os.time())
function delay() return math.random(0, ${2 * meanDelayMs}) end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("PACED %d %d %d %d %d %d %d\\n", summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max, e.connect + e.read + e.write + e.status + e.timeout))
end
`,
  );
  const c = startChild('wrk', ['-t1', `-c${connections}`, `-d${duration}`, '-s', script, url], { label: 'wrk' });
  const { code, signal } = await c.exited;
  if (code !== 0) throw new Error(`wrk exited with ${code ?? signal}: ${c.err()}`);
  const m = /PACED (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)/.exec(c.out());
  if (!m) throw new Error(`could not parse paced wrk output:\n${c.out()}\n${c.err()}`);
  const [requests, durationUs, p50, p99, p999, max, errors] = m.slice(1).map(Number);
  return { requests, achievedRps: requests / (durationUs / 1e6), p50Ms: p50 / 1000, p99Ms: p99 / 1000, p999Ms: p999 / 1000, maxMs: max / 1000, errors };
}

// ---- in-script load generator (scenarios) ----

/** The p-quantile of an ascending array (NaN when empty). */
export function quantileSorted(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] : NaN;
}

/**
 * A bounded closed-loop load generator: `concurrency` workers send GETs back to back
 * over one undici Agent until `until()` is true or `durationMs` passed. Every outcome
 * counts: a non-2xx answer or a transport error is a failure.
 */
export async function drive(url, { concurrency = 64, durationMs = 5000, until } = {}) {
  const agent = new Agent({ connections: concurrency, pipelining: 1, keepAliveTimeout: 10_000 });
  const lat = [];
  const starts = [];
  const r = { requests: 0, ok: 0, failed: 0, statuses: {}, errors: {}, byUpstream: {} };
  const t0 = performance.now();
  const deadline = t0 + durationMs;
  const worker = async () => {
    while (performance.now() < deadline && !(until?.() ?? false)) {
      const s = performance.now();
      r.requests++;
      try {
        const res = await request(url, { dispatcher: agent, headersTimeout: 15_000, bodyTimeout: 15_000 });
        await res.body.dump();
        r.statuses[res.statusCode] = (r.statuses[res.statusCode] ?? 0) + 1;
        const up = res.headers['x-bench-upstream'];
        if (typeof up === 'string') r.byUpstream[up] = (r.byUpstream[up] ?? 0) + 1;
        if (res.statusCode >= 200 && res.statusCode < 300) r.ok++;
        else r.failed++;
      } catch (e) {
        r.failed++;
        const k = e.code ?? e.message ?? String(e);
        r.errors[k] = (r.errors[k] ?? 0) + 1;
      }
      lat.push(performance.now() - s);
      starts.push(s);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  await agent.close().catch(() => {});
  /** p-quantile of the latencies of the requests `keep(i)` selects. */
  const quantileWhere = (p, keep) => {
    const xs = [];
    for (let i = 0; i < lat.length; i++) if (keep(i)) xs.push(lat[i]);
    return quantileSorted(xs.sort((x, y) => x - y), p);
  };
  /** Of the requests sent between two performance.now() times. */
  const quantileBetween = (p, from = -Infinity, to = Infinity) => quantileWhere(p, (i) => starts[i] >= from && starts[i] < to);
  /** Of the requests in flight at some moment of [from, to): the ones an event can have
   * affected (a SIGTERM's drain stops new sends at once, so "sent during" could be none). */
  const quantileInFlight = (p, from, to) => quantileWhere(p, (i) => starts[i] < to && starts[i] + lat[i] >= from);
  const sorted = [...lat].sort((a, b) => a - b);
  const q = (p) => quantileSorted(sorted, p);
  return { ...r, t0, seconds: elapsed, rps: r.requests / elapsed, p50Ms: q(0.5), p99Ms: q(0.99), maxMs: sorted.length ? sorted[sorted.length - 1] : NaN, quantileBetween, quantileInFlight };
}

/**
 * An open-loop load generator (wrk2-style fixed rate): `rate` GETs per second for
 * `durationMs`, sends scheduled by the clock (a 1 ms timer sends whatever is due), never
 * waiting for earlier answers, over an undici Pool of `connections`. Each request's
 * latency runs from its send to the end of its body (process.hrtime). `lagMs` is how
 * far the generator itself fell behind its schedule at worst.
 */
export async function openLoop(url, { rate, durationMs, connections = 64 }) {
  const u = new URL(url);
  const pool = new Pool(u.origin, { connections, pipelining: 1, keepAliveTimeout: 30_000 });
  const total = Math.max(1, Math.floor((rate * durationMs) / 1000));
  const lat = new Float64Array(total);
  let sent = 0;
  let done = 0;
  let failed = 0;
  let maxLag = 0;
  const statuses = {};
  const t0 = performance.now();
  await new Promise((resolve) => {
    const finishOne = () => {
      done++;
      if (done === total) resolve();
    };
    const tick = () => {
      const now = performance.now();
      const due = Math.min(total, Math.floor(((now - t0) * rate) / 1000) + 1);
      if (due - sent > 1) maxLag = Math.max(maxLag, (due - sent - 1) / (rate / 1000));
      while (sent < due) {
        const i = sent++;
        const start = process.hrtime.bigint();
        pool.request({ path: u.pathname + u.search, method: 'GET', headersTimeout: 10_000, bodyTimeout: 10_000 }).then(
          (res) =>
            res.body.dump().then(() => {
              lat[i] = Number(process.hrtime.bigint() - start) / 1e6;
              statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1;
              if (res.statusCode < 200 || res.statusCode >= 300) failed++;
              finishOne();
            }),
          () => {
            lat[i] = Number(process.hrtime.bigint() - start) / 1e6;
            failed++;
            finishOne();
          },
        );
      }
      if (sent < total) setTimeout(tick, 1);
    };
    tick();
  });
  const seconds = (performance.now() - t0) / 1000;
  await pool.close().catch(() => {});
  const sorted = Array.from(lat).sort((a, b) => a - b);
  const q = (p) => quantileSorted(sorted, p);
  return { requests: total, failed, statuses, achievedRps: total / seconds, seconds, p50Ms: q(0.5), p99Ms: q(0.99), p999Ms: q(0.999), maxMs: sorted[sorted.length - 1], lagMs: maxLag };
}

// ---- statistics and results ----

export function median(xs) {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export const fmt = (n, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : 'n/a');

export const loadavg = () => os.loadavg().map((x) => Math.round(x * 100) / 100);

export function machineInfo() {
  return {
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    loadavg: loadavg(),
    platform: `${os.platform()} ${os.release()}`,
    wrk: spawnSync('wrk', ['--version'], { encoding: 'utf8' }).stdout?.split('\n')[0]?.trim().replace(/ \[.*$/, ''),
  };
}

export function readResults() {
  const f = join(RESULTS_DIR, 'latest.json');
  if (!existsSync(f)) return undefined;
  try {
    return JSON.parse(readFileSync(f, 'utf8'));
  } catch {
    return undefined;
  }
}

/** Writes latest.json, latest.md and (with throughput figures) latest.svg. */
export function writeResults(results) {
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(join(RESULTS_DIR, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(join(RESULTS_DIR, 'latest.md'), toMarkdown(results));
  const svg = toSvg(results);
  if (svg !== undefined) writeFileSync(join(RESULTS_DIR, 'latest.svg'), svg);
  return RESULTS_DIR;
}

export { toMarkdown, toSvg };

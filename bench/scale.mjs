#!/usr/bin/env node
// Scale (`node bench/scale.mjs` after `npm run build`; also run by bench/run.mjs unless
// BENCH_SKIP_SCALE=1):
//  1. a table of BENCH_SCALE_SERVICES services (1000) × BENCH_SCALE_ENDPOINTS endpoints
//     (10, in 2 versions): config parse, Dataplane.applyConfig + the static endpoint
//     sets (every Endpoint and its undici Pool, then the snapshot), buildSnapshot alone
//     (Dataplane.rebuild), heap and RSS growth;
//  2. per-request routing cost on that table: matchRoute + versionAt + pickEndpoint,
//     ns/op, and each part alone;
//  3. RSS of a real gateway process holding BENCH_SCALE_CONNECTIONS (10000) idle
//     keep-alive client connections, opened from here in batches (each sends one
//     request first, so the connection is a real HTTP one), loopback only: VmRSS of
//     the gateway's process (/proc/PID/status) before and after, the growth in MiB and
//     KiB per connection. 0 skips it.
// Merges a "scale" section into bench/results/latest.json.
//
// Needs --expose-gc, and an open-files limit above the connection count: this process
// holds one end of each connection and the gateway (its child) the other. It re-runs
// itself with --expose-gc when that is missing, through `sh -c 'ulimit -n …'` when the
// soft limit is too low and the hard limit allows more (raising the hard limit needs
// root: `ulimit -n 65536` in the shell that runs the bench).

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { ROOT, fmt, gatewayConfig, median, readResults, rssMiB, sleep, startGateway, startUpstream, stopAll, writeResults } from './lib.mjs';

const env = process.env;
const SERVICES = Number(env.BENCH_SCALE_SERVICES ?? 1000) || 1000;
const ENDPOINTS = Math.max(2, Number(env.BENCH_SCALE_ENDPOINTS ?? 10) || 10);
const CONNECTIONS = Number(env.BENCH_SCALE_CONNECTIONS ?? 10_000);
const ITERATIONS = Number(env.BENCH_SCALE_ITERATIONS ?? 2_000_000) || 2_000_000;
// The idle connections plus what else the processes hold (the upstream pool, the
// table's sockets, node's own descriptors).
const FILES_NEEDED = CONNECTIONS + 1024;

/** This process's open-files limits, from /proc (undefined where /proc is missing). */
function nofile() {
  try {
    const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    const n = (x) => (x === 'unlimited' ? Infinity : Number(x));
    return m ? { soft: n(m[1]), hard: n(m[2]) } : undefined;
  } catch {
    return undefined;
  }
}

if (typeof globalThis.gc !== 'function') {
  const args = ['--expose-gc', fileURLToPath(import.meta.url), ...process.argv.slice(2)];
  const lim = nofile();
  const raise = lim && lim.soft < FILES_NEEDED && lim.hard >= FILES_NEEDED;
  // `exec "$0" "$@"`: the arguments go through as they are, never re-parsed by the shell.
  const r = raise
    ? spawnSync('sh', ['-c', `ulimit -n ${FILES_NEEDED} && exec "$0" "$@"`, process.execPath, ...args], { stdio: 'inherit' })
    : spawnSync(process.execPath, args, { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

const dist = (p) => import(join(ROOT, 'dist', p));
const { loadConfigText } = await dist('config/load.js');
const { Dataplane } = await dist('gateway/dataplane.js');
const { staticSets } = await dist('discovery/static.js');
const { matchRoute } = await dist('gateway/snapshot.js');
const { versionAt, pickEndpoint } = await dist('gateway/select.js');

function configText() {
  const half = ENDPOINTS / 2;
  const lines = ['gateway: { listen: "127.0.0.1:0" }', 'state: { store: memory }', 'log: { level: silent }', 'services:'];
  let port = 20000;
  for (let i = 0; i < SERVICES; i++) {
    const eps = (n) => `[${Array.from({ length: n }, () => `"127.0.0.1:${1024 + (port++ % 60000)}"`).join(', ')}]`;
    lines.push(`  svc-${i}:`);
    lines.push(`    routes: [{ host: "svc-${i}.example.com", path: "/" }, { host: "svc-${i}.example.com", path: "/api/v${i % 3}" }]`);
    lines.push(`    versions: { blue: { weight: 90, endpoints: ${eps(Math.ceil(half))} }, green: { weight: 10, endpoints: ${eps(Math.floor(half))} } }`);
  }
  return `${lines.join('\n')}\n`;
}

const silent = { debug() {}, info() {}, warn() {}, error() {}, child() { return silent; } };

function memory() {
  globalThis.gc();
  globalThis.gc();
  const m = process.memoryUsage();
  return { heap: m.heapUsed / 2 ** 20, rss: m.rss / 2 ** 20 };
}

function snapshotPart() {
  const text = configText();
  let t = performance.now();
  const config = loadConfigText(text);
  const parseMs = performance.now() - t;
  const before = memory();
  const dp = new Dataplane({ log: silent });
  t = performance.now();
  dp.applyConfig(config);
  dp.applyDiscovery(staticSets(config));
  const applyConfigMs = performance.now() - t;
  const after = memory();
  const builds = [];
  for (let i = 0; i < 10; i++) {
    t = performance.now();
    dp.rebuild();
    builds.push(performance.now() - t);
  }
  const out = {
    services: SERVICES,
    endpointsPerService: ENDPOINTS,
    versionsPerService: 2,
    parseMs,
    applyConfigMs,
    buildSnapshotMs: median(builds),
    buildRuns: builds.length,
    heapMiB: after.heap - before.heap,
    rssMiB: after.rss - before.rss,
  };
  console.log(
    `scale: ${SERVICES} services × ${ENDPOINTS} endpoints: config parse ${fmt(parseMs, 1)} ms; applyConfig + endpoint sets ${fmt(applyConfigMs, 1)} ms; buildSnapshot median ${fmt(out.buildSnapshotMs, 2)} ms; heap +${fmt(out.heapMiB, 1)} MiB, RSS +${fmt(out.rssMiB, 1)} MiB`,
  );
  return { dp, out };
}

function routingPart(dp) {
  const snap = dp.holder.current;
  const hosts = Array.from({ length: SERVICES }, (_, i) => `svc-${i}.example.com:8080`);
  const paths = ['/', '/api/v1/items/42', '/api/v0', '/static/app.js'];
  const n = ITERATIONS;
  // Warm up every function first (JIT), then time each part and the whole.
  let sink = 0;
  const whole = () => {
    const t = performance.now();
    for (let i = 0; i < n; i++) {
      const svc = matchRoute(snap, hosts[i % hosts.length], paths[i & 3]);
      const v = versionAt(svc, Math.random());
      const e = pickEndpoint(v);
      sink += e.inflight;
    }
    return ((performance.now() - t) * 1e6) / n;
  };
  const svcs = hosts.map((h) => matchRoute(snap, h, '/'));
  const part = (fn) => {
    const t = performance.now();
    for (let i = 0; i < n; i++) sink += fn(i) ? 1 : 0;
    return ((performance.now() - t) * 1e6) / n;
  };
  whole();
  const nsPerOp = whole();
  const matchRouteNs = part((i) => matchRoute(snap, hosts[i % hosts.length], paths[i & 3]));
  const versionAtNs = part((i) => versionAt(svcs[i % svcs.length], Math.random()));
  const versions = svcs.map((s) => s.versions[0]);
  const pickEndpointNs = part((i) => pickEndpoint(versions[i % versions.length]));
  if (sink === -1) console.log(sink);
  const out = { iterations: n, distinctHosts: hosts.length, nsPerOp, matchRouteNs, versionAtNs, pickEndpointNs };
  console.log(`routing: matchRoute + versionAt + pickEndpoint ${fmt(nsPerOp, 0)} ns/op (matchRoute ${fmt(matchRouteNs, 0)}, versionAt ${fmt(versionAtNs, 0)}, pickEndpoint ${fmt(pickEndpointNs, 0)}) over ${SERVICES} hosts`);
  return out;
}

async function idlePart() {
  const lim = nofile();
  if (lim && lim.soft < FILES_NEEDED) {
    console.log(`idle connections: the open-files limit (${lim.soft}, hard ${lim.hard}) is below the ${FILES_NEEDED} that ${CONNECTIONS} connections need: some will fail to open (run \`ulimit -n 65536\` as root first, or lower BENCH_SCALE_CONNECTIONS)`);
  }
  const up = await startUpstream('scale');
  const gw = await startGateway(({ port, adminPort, controlPort }) => {
    const c = gatewayConfig({ port, adminPort, controlPort, level: 'warn', services: { bench: { routes: [{ path: '/' }], versions: { v1: { weight: 1, endpoints: [up.address] } } } } });
    c.gateway.timeouts = { keepAlive: '600s' };
    return c;
  });
  await sleep(500);
  const rssBeforeMiB = rssMiB(gw.pid);
  const sockets = [];
  let opened = 0;
  let failed = 0;
  const one = () =>
    new Promise((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port: gw.port });
      let buf = '';
      let settled = false;
      const done = (ok) => {
        if (settled) return;
        settled = true;
        if (ok) opened++;
        else {
          failed++;
          s.destroy();
        }
        resolve();
      };
      s.setTimeout(20_000, () => done(false));
      s.once('error', () => done(false));
      // A gateway out of file descriptors accepts and closes at once (libuv's EMFILE
      // handling): a clean close with no error, which must count as a failure too.
      s.once('close', () => done(false));
      s.on('data', (d) => {
        buf += d.toString('latin1');
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        const len = Number(/content-length: (\d+)/i.exec(buf)?.[1] ?? 0);
        if (buf.length >= end + 4 + len) {
          s.setTimeout(0);
          s.removeAllListeners('data');
          s.on('error', () => {});
          done(true);
        }
      });
      s.once('connect', () => s.write('GET / HTTP/1.1\r\nHost: scale\r\n\r\n'));
      sockets.push(s);
    });
  const batch = 500;
  for (let i = 0; i < CONNECTIONS; i += batch) await Promise.all(Array.from({ length: Math.min(batch, CONNECTIONS - i) }, one));
  await sleep(1000);
  const rssAfterMiB = rssMiB(gw.pid);
  const stillOpen = sockets.filter((s) => !s.destroyed).length;
  for (const s of sockets) s.destroy();
  await gw.stop('SIGTERM', 10_000);
  await up.stop();
  const out = { connections: CONNECTIONS, opened, failed, stillOpen, rssBeforeMiB, rssAfterMiB };
  const growth = rssAfterMiB - rssBeforeMiB;
  console.log(
    `idle connections: ${opened} opened (${failed} failed, ${stillOpen} still open at the reading); gateway RSS ${fmt(rssBeforeMiB, 1)} → ${fmt(rssAfterMiB, 1)} MiB: ${growth >= 0 ? '+' : ''}${fmt(growth, 1)} MiB, ${fmt((growth * 1024) / Math.max(1, opened), 1)} KiB per connection`,
  );
  return out;
}

let code = 0;
try {
  const { dp, out: snapshot } = snapshotPart();
  const routing = routingPart(dp);
  await dp.close(true);
  const idle = CONNECTIONS > 0 ? await idlePart() : undefined;
  const results = readResults() ?? {};
  results.scale = { date: new Date().toISOString(), snapshot, routing, idle };
  writeResults(results);
} catch (err) {
  console.error(`scale bench failed: ${err?.stack ?? err}`);
  code = 1;
} finally {
  await stopAll();
}
process.exit(code);

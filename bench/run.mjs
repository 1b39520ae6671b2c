#!/usr/bin/env node
// The benchmark (`npm run bench` = build, then this). In order:
//  1. throughput: wrk (keep-alive, --latency) against each peer in front of the same
//     fast upstream (nginx when installed, else bench/upstream.mjs): the upstream
//     directly, Switchyard (one process, and gateway.workers: 2), the http-proxy forwarder,
//     @fastify/http-proxy, NGINX (1 worker), HAProxy (1 thread) and Caddy
//     (GOMAXPROCS=1) as proxies, and the raw-socket Node forwarder (the ceiling of
//     one Node process); small (~100 B) and 64 KB bodies at 32 and 256
//     connections; rounds interleaved with the peer order rotated each round; medians,
//     ratios Switchyard ÷ peer, CPU µs/request of each proxy process (/proc);
//  2. latency at a fixed rate of 50% of Switchyard's median max (small/32): wrk paced
//     by a Lua delay() (µs histogram; the goal is judged on it), then an in-script
//     open-loop generator; p50/p99/p99.9 per peer and added over direct;
//  3. the zero-loss scenarios (bench/scenarios.mjs) unless BENCH_SKIP_SCENARIOS=1;
//  4. fleet propagation (bench/fleet.mjs) unless BENCH_SKIP_FLEET=1;
//  5. scale (bench/scale.mjs, which also measures the gateway's RSS growth with
//     10,000 idle keep-alive clients) unless BENCH_SKIP_SCALE=1;
//  6. the headline figures, gathered from the parts above (report.mjs's
//     headlineFigures): printed last, and at the top of latest.md.
// Writes bench/results/latest.json, latest.md and latest.svg (or under BENCH_OUT).
//
// Environment: BENCH_DURATION (3s), BENCH_ROUNDS (3), BENCH_SIZES (small,64k),
// BENCH_CONNECTIONS (32,256), BENCH_PEERS (all: direct,switchyard,switchyard-2w,
// haproxy,nginx,caddy,fastify,http-proxy,node-raw; peers whose binary is missing are left out
// and named on the first line, "skipped: caddy (not installed)"),
// BENCH_WARMUP (1s, 0 to skip), BENCH_THREADS (wrk threads, 1), BENCH_RATE_DURATION
// (5s, 0 to skip the fixed-rate part), BENCH_SKIP_SCENARIOS, BENCH_SKIP_FLEET,
// BENCH_SKIP_SCALE, BENCH_OUT (results directory); scenarios.mjs, fleet.mjs and
// scale.mjs read their own.
//
// Every process it starts is stopped by pid on exit, on error and on SIGINT/SIGTERM.
// Traffic goes to 127.0.0.1 only.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import {
  BENCH_DIR,
  CLI,
  cpuMs,
  fmt,
  gatewayConfig,
  haveWrk,
  loadavg,
  machineInfo,
  median,
  openLoop,
  readResults,
  runWrk,
  runWrkPaced,
  startForwarder,
  startRawForwarder,
  startGateway,
  startUpstream,
  stopAll,
  treeCpuMs,
  writeResults,
} from './lib.mjs';
import { GOALS, PEER_LABELS, headlineFigures } from './report.mjs';
import {
  CADDY,
  HAPROXY,
  NGINX,
  SIZES,
  caddyVersion,
  haproxyVersion,
  nginxVersion,
  startCaddy,
  startFastifyProxy,
  startHaproxy,
  startNginxProxy,
  startNginxUpstream,
} from './peers.mjs';

const env = process.env;
const list = (v, dflt) => (v ?? dflt).split(',').map((x) => x.trim()).filter(Boolean);
const ALL_PEERS = ['direct', 'switchyard', 'switchyard-2w', 'haproxy', 'nginx', 'caddy', 'fastify', 'http-proxy', 'node-raw'];
const settings = {
  rounds: Math.max(1, Number(env.BENCH_ROUNDS ?? 3) || 3),
  duration: env.BENCH_DURATION ?? '3s',
  sizes: list(env.BENCH_SIZES, 'small,64k').filter((s) => SIZES[s] !== undefined),
  connections: list(env.BENCH_CONNECTIONS, '32,256').map(Number).filter((n) => n > 0),
  peers: list(env.BENCH_PEERS, ALL_PEERS.join(',')),
  threads: Number(env.BENCH_THREADS ?? 1) || 1,
  warmup: env.BENCH_WARMUP ?? '1s',
  rateDuration: env.BENCH_RATE_DURATION ?? '5s',
  upstream: '',
  bodyBytes: {},
  skipped: [],
};
for (const p of settings.peers) if (!ALL_PEERS.includes(p)) throw new Error(`BENCH_PEERS: unknown peer ${p} (known: ${ALL_PEERS.join(', ')})`);
if (!settings.peers.includes('direct')) settings.peers.unshift('direct');
if (!settings.peers.includes('switchyard')) settings.peers.splice(1, 0, 'switchyard');
if (!NGINX && settings.peers.includes('nginx')) settings.skipped.push('nginx (not installed)');
if (!HAPROXY && settings.peers.includes('haproxy')) settings.skipped.push('haproxy (not installed)');
if (!CADDY && settings.peers.includes('caddy')) settings.skipped.push('caddy (not installed)');
settings.peers = settings.peers.filter((p) => (p !== 'nginx' || NGINX) && (p !== 'haproxy' || HAPROXY) && (p !== 'caddy' || CADDY));

const ms = (d) => {
  const m = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(String(d).trim());
  if (!m) throw new Error(`bad duration ${d}`);
  return m[2] === 'ms' ? Number(m[1]) : Number(m[1]) * 1000;
};

async function check(name, url) {
  const res = await request(url);
  const body = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`${name} (${url}) answered ${res.statusCode}: ${body.slice(0, 300)}`);
  return Buffer.byteLength(body);
}

/** Starts the upstream and every peer; returns {upstream, peers: {name: {url, pid, cpu()}}}. */
async function startPeers() {
  const upstream = NGINX ? await startNginxUpstream() : await startUpstream('bench');
  settings.upstream = NGINX ? `nginx ${nginxVersion()} (1 process, static files)` : 'bench/upstream.mjs (node:http)';
  const gw = (workers = 1) =>
    startGateway(({ port, adminPort, controlPort }) =>
      gatewayConfig({
        port,
        adminPort,
        controlPort,
        level: 'warn',
        services: { bench: { routes: [{ path: '/' }], versions: { v1: { weight: 1, endpoints: [upstream.address] } } } },
        shutdown: { drainDelay: '0s', grace: '5s' },
        workers,
      }),
    );
  const peers = {};
  for (const p of settings.peers) {
    let c;
    if (p === 'direct') c = upstream;
    else if (p === 'switchyard') c = await gw();
    else if (p === 'switchyard-2w') c = await gw(2);
    else if (p === 'haproxy') c = await startHaproxy(upstream.address);
    else if (p === 'nginx') c = await startNginxProxy(upstream.address);
    else if (p === 'caddy') c = await startCaddy(upstream.address);
    else if (p === 'fastify') c = await startFastifyProxy(upstream.url);
    else if (p === 'http-proxy') c = await startForwarder(upstream.url, { maxSockets: 256 });
    else if (p === 'node-raw') c = await startRawForwarder(upstream.address);
    // CPU of the process and its children (gateway.workers: the primary and its workers).
    peers[p] = { child: c, url: c.url, pid: c.pid, cpu: p === 'direct' ? () => undefined : () => treeCpuMs(c.pid) };
  }
  for (const [size, s] of Object.entries(SIZES)) {
    if (!settings.sizes.includes(size)) continue;
    for (const [p, x] of Object.entries(peers)) settings.bodyBytes[size] = await check(p, `${x.url}${s.path}`);
  }
  console.log(Object.entries(peers).map(([p, x]) => `${p} pid ${x.pid} ${x.url}`).join(' | '));
  return { upstream, peers };
}

async function throughput({ upstream, peers }) {
  const runs = [];
  const names = Object.keys(peers);
  for (const size of settings.sizes) {
    for (const conns of settings.connections) {
      const path = SIZES[size].path;
      if (settings.warmup !== '0' && settings.warmup !== '0s') {
        for (const p of names) await runWrk(`${peers[p].url}${path}`, { threads: settings.threads, connections: conns, duration: settings.warmup });
      }
      for (let round = 1; round <= settings.rounds; round++) {
        // Interleaved, the order rotated each round: no peer always first or always
        // right after the same neighbour on a machine whose load drifts.
        const order = names.map((_, i) => names[(i + round - 1) % names.length]);
        for (const p of order) {
          const c0 = peers[p].cpu();
          const u0 = cpuMs(upstream.pid);
          // A peer that answers nothing in a run (wedged) is recorded as such, not fatal.
          const r = await runWrk(`${peers[p].url}${path}`, { threads: settings.threads, connections: conns, duration: settings.duration }).catch((err) => ({
            ...{ rps: NaN, requests: 0, p50Ms: NaN, p75Ms: NaN, p90Ms: NaN, p99Ms: NaN, non2xx: 0, socketErrors: 0 },
            error: String(err?.message ?? err).split('\n')[0],
          }));
          const c1 = peers[p].cpu();
          const u1 = cpuMs(upstream.pid);
          const perReq = (a, b) => (a === undefined || b === undefined || !(r.requests > 0) ? null : ((b - a) * 1000) / r.requests);
          const { raw, ...fig } = r;
          const run = { size, connections: conns, round, peer: p, ...fig, proxyCpuUsPerReq: perReq(c0, c1), upstreamCpuUsPerReq: perReq(u0, u1) };
          runs.push(run);
          const cpu = run.proxyCpuUsPerReq === null ? '' : `  CPU ${fmt(run.proxyCpuUsPerReq, 1)} µs/req`;
          if (r.error) console.log(`${size.padEnd(5)} c${String(conns).padEnd(4)} round ${round} ${p.padEnd(13)} FAILED: ${r.error}`);
          else console.log(`${size.padEnd(5)} c${String(conns).padEnd(4)} round ${round} ${p.padEnd(13)} ${fmt(r.rps).padStart(7)} req/s  p50 ${fmt(r.p50Ms, 2)} ms  p99 ${fmt(r.p99Ms, 2)} ms${cpu}${r.non2xx ? `  non-2xx ${r.non2xx}` : ''}${r.socketErrors ? `  socket errors ${r.socketErrors}` : ''}`);
        }
      }
    }
  }
  for (const [p, x] of Object.entries(peers)) if (!x.child.running) throw new Error(`${p} exited during the benchmark: ${x.child.err().slice(-2000)}`);

  const medians = {};
  const ratios = {};
  const ratios2w = {};
  for (const size of settings.sizes) {
    for (const conns of settings.connections) {
      const combo = `${size}/${conns}`;
      medians[combo] = {};
      for (const p of names) {
        const rs = runs.filter((r) => r.size === size && r.connections === conns && r.peer === p);
        medians[combo][p] = {
          rps: median(rs.map((r) => r.rps)),
          p50Ms: median(rs.map((r) => r.p50Ms)),
          p99Ms: median(rs.map((r) => r.p99Ms)),
          proxyCpuUsPerReq: p === 'direct' ? null : median(rs.map((r) => r.proxyCpuUsPerReq ?? NaN)),
          upstreamCpuUsPerReq: median(rs.map((r) => r.upstreamCpuUsPerReq ?? NaN)),
          failedRuns: rs.filter((r) => r.error).length,
          non2xx: rs.reduce((n, r) => n + r.non2xx, 0),
          socketErrors: rs.reduce((n, r) => n + r.socketErrors, 0),
        };
      }
      ratios[combo] = {};
      for (const p of names) if (p !== 'switchyard') ratios[combo][p] = medians[combo].switchyard.rps / medians[combo][p].rps;
      if (medians[combo]['switchyard-2w']) {
        ratios2w[combo] = {};
        for (const p of names) if (p !== 'switchyard-2w') ratios2w[combo][p] = medians[combo]['switchyard-2w'].rps / medians[combo][p].rps;
      }
    }
  }
  const headline = medians['small/32'] ? 'small/32' : Object.keys(medians)[0];
  // Evaluated for one Switchyard process (the comparison the goals name: one core
  // against HAProxy's one thread), and shown for gateway.workers: 2 beside it.
  const goals = GOALS.filter((g) => medians[headline][g.peer]).map((g) => {
    const value = ratios[headline][g.peer];
    const value2w = ratios2w[headline]?.[g.peer];
    return { ...g, value, met: value >= g.goal, ...(value2w === undefined ? {} : { value2w, met2w: value2w >= g.goal }) };
  });

  console.log('\nmedians (req/s, Switchyard ÷ peer):');
  for (const [combo, ps] of Object.entries(medians)) {
    console.log(`  ${combo}`);
    for (const [p, m] of Object.entries(ps)) {
      const cpu = m.proxyCpuUsPerReq === null ? '' : `  CPU ${fmt(m.proxyCpuUsPerReq, 1)} µs/req`;
      const ratio = (p === 'switchyard' ? '' : `  Switchyard/${p} ${fmt(ratios[combo][p], 2)}`) + (ratios2w[combo] && p !== 'switchyard-2w' ? `  2 workers/${p} ${fmt(ratios2w[combo][p], 2)}` : '');
      console.log(`    ${(PEER_LABELS[p] ?? p).padEnd(24)} ${fmt(m.rps).padStart(7)} req/s  p50 ${fmt(m.p50Ms, 2)} ms  p99 ${fmt(m.p99Ms, 2)} ms${cpu}${ratio}`);
    }
  }
  console.log(`goals on ${headline}:`);
  for (const g of goals) console.log(`  ${g.what}: ${fmt(g.value, 2)} ${g.met ? 'met' : 'NOT met'}${g.value2w === undefined ? '' : `; with 2 workers ${fmt(g.value2w, 2)} ${g.met2w ? 'met' : 'NOT met'}`}`);
  return { settings, runs, medians, ratios, ratios2w, headline, goals };
}

async function latency({ peers }, t) {
  const durationMs = ms(settings.rateDuration);
  const basis = t.headline;
  // Half of Switchyard's median max in this same run (the issue's "50% load").
  const maxRps = t.medians[basis].switchyard.rps;
  const rate = Math.max(100, Math.round(maxRps / 2));
  const path = SIZES[basis.split('/')[0]].path;
  const connections = 64;
  // wrk (µs histogram) paced to about `rate`: each connection waits a random 0–10 ms
  // before each request. The goal is judged on this one.
  const meanDelayMs = 5;
  const wrkConnections = Math.max(1, Math.round((rate * (meanDelayMs + 0.25)) / 1000));
  console.log(`\nfixed rate: ${rate} req/s (50% of Switchyard's median max on ${basis}) for ${durationMs / 1000}s per peer; wrk paced (${wrkConnections} connections, random 0–${2 * meanDelayMs} ms before each request)`);
  const paced = {};
  // BENCH_WARMUP=0 skips these warm-up runs too (the harness test does; results then
  // include cold pools and JIT).
  const warm = settings.warmup !== '0' && settings.warmup !== '0s';
  for (const [p, x] of Object.entries(peers)) {
    if (warm) await runWrkPaced(`${x.url}${path}`, { connections: wrkConnections, meanDelayMs, duration: '1s' }); // warm
    const r = await runWrkPaced(`${x.url}${path}`, { connections: wrkConnections, meanDelayMs, duration: `${durationMs / 1000}s` });
    paced[p] = r;
    console.log(`  ${p.padEnd(13)} ${fmt(r.achievedRps).padStart(6)} req/s  errors ${r.errors}  p50 ${fmt(r.p50Ms, 3)} ms  p99 ${fmt(r.p99Ms, 3)} ms  p99.9 ${fmt(r.p999Ms, 3)} ms  max ${fmt(r.maxMs, 1)} ms`);
  }
  const pacedAdded = {};
  for (const [p, r] of Object.entries(paced)) if (p !== 'direct') pacedAdded[p] = { p50Ms: r.p50Ms - paced.direct.p50Ms, p99Ms: r.p99Ms - paced.direct.p99Ms, p999Ms: r.p999Ms - paced.direct.p999Ms };
  console.log(`same rate, in-script open loop (sends on the clock, no coordinated omission; ${connections} connections)`);
  const out = {};
  for (const [p, x] of Object.entries(peers)) {
    if (warm) await openLoop(`${x.url}${path}`, { rate, durationMs: Math.min(1000, durationMs), connections }); // warm the pool
    const r = await openLoop(`${x.url}${path}`, { rate, durationMs, connections });
    out[p] = r;
    console.log(`  ${p.padEnd(13)} ${fmt(r.achievedRps).padStart(6)} req/s  failed ${r.failed}  p50 ${fmt(r.p50Ms, 3)} ms  p99 ${fmt(r.p99Ms, 3)} ms  p99.9 ${fmt(r.p999Ms, 3)} ms  (generator lag ≤ ${fmt(r.lagMs, 1)} ms)`);
  }
  const d = out.direct;
  const addedOverDirect = {};
  for (const [p, r] of Object.entries(out)) if (p !== 'direct') addedOverDirect[p] = { p50Ms: r.p50Ms - d.p50Ms, p99Ms: r.p99Ms - d.p99Ms, p999Ms: r.p999Ms - d.p999Ms };
  const sw = pacedAdded.switchyard;
  const sw2 = pacedAdded['switchyard-2w'];
  const goal = { what: 'p99 added by Switchyard ≤ 1 ms at 50% load', value: sw.p99Ms, met: sw.p99Ms <= 1, ...(sw2 === undefined ? {} : { value2w: sw2.p99Ms, met2w: sw2.p99Ms <= 1 }) };
  const ol = addedOverDirect.switchyard;
  console.log(`  open loop, added over direct by Switchyard: p50 ${fmt(ol.p50Ms, 3)} ms, p99 ${fmt(ol.p99Ms, 3)} ms, p99.9 ${fmt(ol.p999Ms, 3)} ms`);
  console.log(`  wrk paced, added over direct by Switchyard: p50 ${fmt(sw.p50Ms, 3)} ms, p99 ${fmt(sw.p99Ms, 3)} ms, p99.9 ${fmt(sw.p999Ms, 3)} ms`);
  console.log(
    `  added p99 at 50% of Switchyard's measured max (${fmt(rate)} of ${fmt(maxRps)} req/s on ${basis}; wrk paced, Switchyard achieved ${fmt(paced.switchyard.achievedRps)}): ${fmt(sw.p99Ms, 3)} ms — goal ≤ 1 ms ${goal.met ? 'met' : 'NOT met'}`,
  );
  if (sw2 !== undefined) console.log(`  wrk paced, added over direct by Switchyard with 2 workers: p50 ${fmt(sw2.p50Ms, 3)} ms, p99 ${fmt(sw2.p99Ms, 3)} ms, p99.9 ${fmt(sw2.p999Ms, 3)} ms — ${goal.met2w ? 'met' : 'NOT met'}`);
  const peersOut = {};
  for (const [p, r] of Object.entries(out)) peersOut[p] = { achievedRps: r.achievedRps, requests: r.requests, failed: r.failed, p50Ms: r.p50Ms, p99Ms: r.p99Ms, p999Ms: r.p999Ms, maxMs: r.maxMs, generatorLagMs: r.lagMs };
  return { rate, maxRps, basis, path, durationS: durationMs / 1000, connections, peers: peersOut, addedOverDirect, wrk: { connections: wrkConnections, meanDelayMs, peers: paced, addedOverDirect: pacedAdded }, goal };
}

/** Runs another bench script as a child (it merges its section into latest.json). */
function runScript(file) {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [join(BENCH_DIR, file)], { stdio: ['ignore', 'inherit', 'inherit'], env: process.env });
    c.once('exit', (code, signal) => resolve(code ?? signal));
  });
}

async function main() {
  if (!haveWrk()) throw new Error('wrk is not installed (Debian: apt-get install wrk; `npm test` installs it through scripts/ensure-test-deps.sh)');
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
  const results = { date: new Date().toISOString(), machine: { ...machineInfo(), nginx: nginxVersion(), haproxy: haproxyVersion(), caddy: caddyVersion() } };
  const combos = settings.sizes.length * settings.connections.length;
  console.log(
    `switchyard bench: peers ${settings.peers.join(', ')}${settings.skipped.length ? ` (skipped: ${settings.skipped.join(', ')})` : ''}; sizes ${settings.sizes.join(', ')} × connections ${settings.connections.join(', ')}; ${settings.rounds} round(s) × ${settings.duration} (${combos * settings.peers.length * settings.rounds} wrk runs); ${results.machine.cpus} CPU(s), load average ${results.machine.loadavg.join(' ')}`,
  );
  const started = await startPeers();
  results.throughput = await throughput(started);
  writeResults(results);
  if (ms(settings.rateDuration) > 0) {
    results.latency = await latency(started, results.throughput);
    writeResults(results);
  }
  await stopAll();
  let failed = false;
  if (env.BENCH_SKIP_SCENARIOS !== '1') {
    const { runScenarios } = await import('./scenarios.mjs');
    console.log('');
    results.scenarios = await runScenarios();
    failed ||= results.scenarios.results.some((x) => x.error);
    writeResults(results);
  }
  if (env.BENCH_SKIP_FLEET !== '1') {
    console.log('');
    const code = await runScript('fleet.mjs');
    if (code !== 0) {
      console.error(`fleet bench exited with ${code}`);
      failed = true;
    }
  }
  if (env.BENCH_SKIP_SCALE !== '1') {
    console.log('');
    const code = await runScript('scale.mjs');
    if (code !== 0) {
      console.error(`scale bench exited with ${code}`);
      failed = true;
    }
  }
  // fleet.mjs and scale.mjs merged their sections into the file: keep them.
  const merged = readResults() ?? {};
  const final = { ...merged, ...results, fleet: merged.fleet, scale: merged.scale };
  final.machine.loadavgEnd = loadavg();
  const dir = writeResults(final);
  const figures = headlineFigures(final);
  if (figures.length) {
    console.log('\nheadline figures:');
    for (const f of figures) console.log(`  ${f.what}: ${f.text}`);
  }
  console.log(`\nload average at the end ${final.machine.loadavgEnd.join(' ')}`);
  console.log(`results: ${dir}/latest.json, ${dir}/latest.md, ${dir}/latest.svg`);
  if (failed) throw new Error('a part of the benchmark failed (see above)');
}

let code = 0;
try {
  await main();
} catch (err) {
  console.error(`bench failed: ${err?.stack ?? err}`);
  code = 1;
} finally {
  await stopAll();
}
process.exit(code);

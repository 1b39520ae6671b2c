#!/usr/bin/env node
// Profiles the gateway's data plane: runs `switchyard serve` under `node --cpu-prof`
// in front of the bench upstream (nginx when installed), drives it with wrk, stops it
// with SIGTERM (the profile is written on exit) and prints the self-time summary
// (bench/profile-summary.mjs).
//
//   npm run build && node bench/profile.mjs [--duration 10s] [--connections 32] [--path /small]
//
// The .cpuprofile is kept under bench/results/tmp/ (git-ignored).
//
// V8's sampler measures wall time on the main thread: time the process spends off the
// CPU (preempted by the peers it has just woken, on a small machine) is counted to the
// native call it happened in, mostly the socket writes. `--perf` gives the on-CPU view
// instead: Linux `perf record` (cpu-clock) on the gateway process started with
// `--perf-basic-prof-only-functions`, so that JIT-compiled JS is named; it prints the
// shares by object (kernel, node, JIT code, libc), the top symbols, and the CPU µs per
// request. It needs `perf` (Debian: linux-perf) and perf_event_paranoid ≤ 2 for a
// process of one's own.

import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BENCH_DIR, cpuMs, gatewayConfig, runWrk, startGateway, startUpstream, stopAll } from './lib.mjs';
import { NGINX, startNginxUpstream } from './peers.mjs';
import { summarize } from './profile-summary.mjs';
import { arg, hasFlag } from './args.mjs';

const duration = arg('--duration', '10s');
const connections = Number(arg('--connections', '32'));
const path = arg('--path', '/small');
const dir = join(BENCH_DIR, 'results', 'tmp', `profile-${Date.now()}`);
mkdirSync(dir, { recursive: true });

/** `perf report` of one file, sorted by `sort`, as [percent, name] rows. */
function perfRows(file, sort) {
  const r = spawnSync('perf', ['report', '-i', file, '--no-children', '-g', 'none', '--sort', sort, '--stdio'], { encoding: 'utf8', maxBuffer: 256 << 20 });
  if (r.status !== 0) throw new Error(`perf report failed: ${r.stderr.slice(-500)}`);
  const rows = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^\s+([\d.]+)%\s+(.*\S)\s*$/.exec(line);
    if (m) rows.push([Number(m[1]), m[2].replace(/\s+/g, ' ')]);
  }
  return rows;
}

/** The bench upstream and a gateway in front of it, started with `nodeArgs`. */
async function startProfiled(nodeArgs) {
  const up = NGINX ? await startNginxUpstream() : await startUpstream('bench');
  return startGateway(
    ({ port, adminPort, controlPort }) =>
      gatewayConfig({ port, adminPort, controlPort, services: { bench: { routes: [{ path: '/' }], versions: { v1: { weight: 1, endpoints: [up.address] } } } } }),
    { nodeArgs },
  );
}

/** The measured wrk run: prints it, returns the gateway's CPU µs per request. */
async function measure(gw, what) {
  const c0 = cpuMs(gw.pid);
  const r = await runWrk(`${gw.url}${path}`, { connections, duration });
  const us = ((cpuMs(gw.pid) - c0) * 1000) / r.requests;
  console.log(`wrk -c${connections} -d${duration} ${path}: ${Math.round(r.rps)} req/s, p99 ${r.p99Ms} ms, gateway CPU ${us.toFixed(1)} µs/req (${what})`);
  return us;
}

/** The on-CPU profile (see the header): perf record on the gateway under wrk. */
async function perfProfile() {
  if (spawnSync('perf', ['--version']).status !== 0) throw new Error('perf is not installed (Debian: apt-get install linux-perf)');
  const gw = await startProfiled(['--perf-basic-prof-only-functions']);
  await runWrk(`${gw.url}${path}`, { connections, duration: '3s' }); // warm-up: the JIT settles
  const file = join(dir, 'perf.data');
  const rec = spawn('perf', ['record', '-F', '2000', '-e', 'cpu-clock', '-o', file, '-p', String(gw.pid)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let recErr = '';
  rec.stderr.on('data', (d) => (recErr += d));
  // perf attaches within a few ms; the first samples are the wrk run's.
  await new Promise((r) => setTimeout(r, 300));
  const us = await measure(gw, 'perf on');
  rec.kill('SIGINT');
  // (perf ends on SIGINT by re-raising it, after writing its file.)
  const [recCode, recSignal] = await new Promise((res) => rec.once('exit', (c, sig) => res([c, sig])));
  if (recCode !== 0 && recSignal !== 'SIGINT') throw new Error(`perf record failed (${recCode ?? recSignal}): ${recErr.slice(-500)}`);
  console.log(`perf data: ${file}; shares of the gateway's on-CPU samples, and µs per request\n\nby object:`);
  for (const [pct, name] of perfRows(file, 'dso').slice(0, 8)) console.log(`  ${pct.toFixed(1).padStart(5)}%  ${((pct * us) / 100).toFixed(1).padStart(5)} µs  ${name}`);
  console.log('\nby symbol:');
  for (const [pct, name] of perfRows(file, 'sym').slice(0, Number(arg('--top', '40')))) console.log(`  ${pct.toFixed(1).padStart(5)}%  ${((pct * us) / 100).toFixed(2).padStart(5)} µs  ${name}`);
}

/** V8's sampling profile (--cpu-prof), written when the gateway exits. */
async function cpuProfile() {
  const gw = await startProfiled(['--cpu-prof', `--cpu-prof-dir=${dir}`]);
  await runWrk(`${gw.url}${path}`, { connections, duration: '2s' }); // warm-up
  await measure(gw, 'profiler on');
  await gw.stop('SIGTERM', 15_000);
  const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) throw new Error(`no .cpuprofile written in ${dir}`);
  const s = summarize(JSON.parse(readFileSync(join(dir, file), 'utf8')), { top: Number(arg('--top', '40')) });
  console.log(`profile ${join(dir, file)}: ${s.samples} samples, ${s.idleSamples} idle; shares of the busy samples`);
  console.log('\nself time by file:');
  for (const x of s.files.slice(0, 20)) console.log(`  ${x.pctOfBusy.toFixed(1).padStart(5)}%  ${x.name}`);
  console.log('\nself time by function:');
  for (const x of s.functions) console.log(`  ${x.pctOfBusy.toFixed(1).padStart(5)}%  ${x.name}`);
}

let code = 0;
try {
  await (hasFlag('--perf') ? perfProfile() : cpuProfile());
} catch (err) {
  console.error(`profile failed: ${err?.stack ?? err}`);
  code = 1;
} finally {
  await stopAll();
}
process.exit(code);

#!/usr/bin/env node
// Profiles the gateway's data plane: runs `switchyard serve` under `node --cpu-prof`
// in front of the bench upstream (nginx when installed), drives it with wrk, stops it
// with SIGTERM (the profile is written on exit) and prints the self-time summary
// (bench/profile-summary.mjs).
//
//   npm run build && node bench/profile.mjs [--duration 10s] [--connections 32] [--path /small]
//
// The .cpuprofile is kept under bench/results/tmp/ (git-ignored).

import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BENCH_DIR, cpuMs, gatewayConfig, runWrk, startGateway, startUpstream, stopAll } from './lib.mjs';
import { NGINX, startNginxUpstream } from './peers.mjs';
import { summarize } from './profile-summary.mjs';
import { arg } from './args.mjs';

const duration = arg('--duration', '10s');
const connections = Number(arg('--connections', '32'));
const path = arg('--path', '/small');
const dir = join(BENCH_DIR, 'results', 'tmp', `profile-${Date.now()}`);
mkdirSync(dir, { recursive: true });

let code = 0;
try {
  const up = NGINX ? await startNginxUpstream() : await startUpstream('bench');
  const gw = await startGateway(
    ({ port, adminPort, controlPort }) =>
      gatewayConfig({ port, adminPort, controlPort, services: { bench: { routes: [{ path: '/' }], versions: { v1: { weight: 1, endpoints: [up.address] } } } } }),
    { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${dir}`] },
  );
  await runWrk(`${gw.url}${path}`, { connections, duration: '2s' }); // warm-up
  const c0 = cpuMs(gw.pid);
  const r = await runWrk(`${gw.url}${path}`, { connections, duration });
  const c1 = cpuMs(gw.pid);
  console.log(`wrk -c${connections} -d${duration} ${path}: ${Math.round(r.rps)} req/s, p99 ${r.p99Ms} ms, gateway CPU ${(((c1 - c0) * 1000) / r.requests).toFixed(1)} µs/req (profiler on)`);
  await gw.stop('SIGTERM', 15_000);
  const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) throw new Error(`no .cpuprofile written in ${dir}`);
  const s = summarize(JSON.parse(readFileSync(join(dir, file), 'utf8')), { top: Number(arg('--top', '40')) });
  console.log(`profile ${join(dir, file)}: ${s.samples} samples, ${s.idleSamples} idle; shares of the busy samples`);
  console.log('\nself time by file:');
  for (const x of s.files.slice(0, 20)) console.log(`  ${x.pctOfBusy.toFixed(1).padStart(5)}%  ${x.name}`);
  console.log('\nself time by function:');
  for (const x of s.functions) console.log(`  ${x.pctOfBusy.toFixed(1).padStart(5)}%  ${x.name}`);
} catch (err) {
  console.error(`profile failed: ${err?.stack ?? err}`);
  code = 1;
} finally {
  await stopAll();
}
process.exit(code);

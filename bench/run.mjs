#!/usr/bin/env node
// Throughput benchmark (`npm run bench` = build, then this): wrk against the upstream
// directly, against Switchyard and against an http-proxy forwarder, in interleaved
// rounds; then the zero-loss scenarios (bench/scenarios.mjs) unless
// BENCH_SKIP_SCENARIOS=1. Writes bench/results/latest.json and latest.md (or under
// BENCH_OUT).
//
// Environment: BENCH_ROUNDS (3), BENCH_DURATION (5s), BENCH_CONNECTIONS (64),
// BENCH_THREADS (1), BENCH_WARMUP (1s, 0 to skip), BENCH_SKIP_SCENARIOS,
// BENCH_SCENARIO_DURATION (see scenarios.mjs), BENCH_OUT (results directory).
//
// Every process it starts (upstream, gateway, forwarder, wrk) is stopped by pid on
// exit, on error and on SIGINT/SIGTERM. Traffic goes to 127.0.0.1 only.

import { existsSync } from 'node:fs';
import { request } from 'undici';
import {
  CLI,
  cpuMs,
  fmt,
  gatewayConfig,
  haveWrk,
  machineInfo,
  median,
  runWrk,
  startForwarder,
  startGateway,
  startUpstream,
  stopAll,
  writeResults,
} from './lib.mjs';

const env = process.env;
const settings = {
  rounds: Math.max(1, Number(env.BENCH_ROUNDS ?? 3) || 3),
  duration: env.BENCH_DURATION ?? '5s',
  connections: Number(env.BENCH_CONNECTIONS ?? 64) || 64,
  threads: Number(env.BENCH_THREADS ?? 1) || 1,
  warmup: env.BENCH_WARMUP ?? '1s',
  bodyBytes: 0,
};
const TARGETS = ['direct', 'switchyard', 'http-proxy'];

async function checkTarget(name, url) {
  const res = await request(url);
  const body = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`${name} (${url}) answered ${res.statusCode}: ${body.slice(0, 300)}`);
  return Buffer.byteLength(body);
}

async function throughput() {
  if (!haveWrk()) throw new Error('wrk is not installed (Debian: apt-get install wrk; `npm test` installs it through scripts/ensure-test-deps.sh)');
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);

  const upstream = await startUpstream('bench');
  const gateway = await startGateway(({ port, adminPort, controlPort }) =>
    gatewayConfig({
      port,
      adminPort,
      controlPort,
      level: 'warn',
      services: { bench: { routes: [{ path: '/' }], versions: { v1: { weight: 1, endpoints: [upstream.address] } } } },
      shutdown: { drainDelay: '0s', grace: '5s' },
    }),
  );
  const forwarder = await startForwarder(upstream.url, { maxSockets: 256 });
  const urls = { direct: `${upstream.url}/`, switchyard: `${gateway.url}/`, 'http-proxy': `${forwarder.url}/` };
  for (const t of TARGETS) settings.bodyBytes = await checkTarget(t, urls[t]);
  console.log(`upstream pid ${upstream.pid} ${urls.direct} | switchyard pid ${gateway.pid} ${urls.switchyard} | http-proxy pid ${forwarder.pid} ${urls['http-proxy']}`);

  if (settings.warmup !== '0' && settings.warmup !== '0s') {
    for (const t of TARGETS) await runWrk(urls[t], { threads: settings.threads, connections: settings.connections, duration: settings.warmup });
  }

  // The process whose CPU a request through each target costs (the upstream's is measured apart).
  const pids = { switchyard: gateway.pid, 'http-proxy': forwarder.pid };
  const runs = [];
  for (let round = 1; round <= settings.rounds; round++) {
    // Interleaved, with the order rotated each round so that no target always runs
    // first (or right after the same neighbour) on a machine whose load drifts.
    const order = TARGETS.map((_, i) => TARGETS[(i + round - 1) % TARGETS.length]);
    for (const target of order) {
      const proxyPid = pids[target];
      const c0 = proxyPid === undefined ? undefined : cpuMs(proxyPid);
      const u0 = cpuMs(upstream.pid);
      const r = await runWrk(urls[target], { threads: settings.threads, connections: settings.connections, duration: settings.duration });
      const c1 = proxyPid === undefined ? undefined : cpuMs(proxyPid);
      const u1 = cpuMs(upstream.pid);
      const { raw, ...fig } = r;
      const perReq = (a, b) => (a === undefined || b === undefined || !(r.requests > 0) ? null : ((b - a) * 1000) / r.requests);
      const run = { round, target, ...fig, proxyCpuUsPerReq: perReq(c0, c1), upstreamCpuUsPerReq: perReq(u0, u1) };
      runs.push(run);
      const cpu = run.proxyCpuUsPerReq === null ? '' : `  proxy CPU ${fmt(run.proxyCpuUsPerReq, 1)} µs/req`;
      console.log(`round ${round} ${target.padEnd(10)} ${fmt(r.rps).padStart(7)} req/s  p50 ${fmt(r.p50Ms, 2)} ms  p99 ${fmt(r.p99Ms, 2)} ms${cpu}${r.non2xx ? `  non-2xx ${r.non2xx}` : ''}${r.socketErrors ? `  socket errors ${r.socketErrors}` : ''}`);
    }
  }

  // The gateway must still be the process we started (no crash during the runs).
  if (!gateway.running) throw new Error(`the gateway exited during the benchmark: ${gateway.err().slice(-2000)}`);
  const gatewayWarnings = gateway.lines.filter((l) => typeof l.level === 'number' && l.level >= 40).length;

  const medians = {};
  for (const t of TARGETS) {
    const rs = runs.filter((r) => r.target === t);
    medians[t] = {
      rps: median(rs.map((r) => r.rps)),
      p50Ms: median(rs.map((r) => r.p50Ms)),
      p99Ms: median(rs.map((r) => r.p99Ms)),
      proxyCpuUsPerReq: t === 'direct' ? null : median(rs.map((r) => r.proxyCpuUsPerReq ?? NaN)),
      upstreamCpuUsPerReq: median(rs.map((r) => r.upstreamCpuUsPerReq ?? NaN)),
    };
  }
  const ratios = {
    switchyardToDirect: medians.switchyard.rps / medians.direct.rps,
    switchyardToHttpProxy: medians.switchyard.rps / medians['http-proxy'].rps,
    httpProxyCpuToSwitchyardCpu: medians['http-proxy'].proxyCpuUsPerReq / medians.switchyard.proxyCpuUsPerReq,
  };
  console.log('');
  console.log('median over rounds:');
  for (const t of TARGETS) {
    const cpu = medians[t].proxyCpuUsPerReq === null ? '' : `  proxy CPU ${fmt(medians[t].proxyCpuUsPerReq, 1)} µs/req`;
    console.log(`  ${t.padEnd(10)} ${fmt(medians[t].rps).padStart(7)} req/s  p50 ${fmt(medians[t].p50Ms, 2)} ms  p99 ${fmt(medians[t].p99Ms, 2)} ms${cpu}`);
  }
  console.log(`  Switchyard/direct     ${fmt(ratios.switchyardToDirect, 2)}`);
  console.log(`  Switchyard/http-proxy ${fmt(ratios.switchyardToHttpProxy, 2)}  (goal >= 2.00)`);
  console.log(`  CPU per request, http-proxy/Switchyard ${fmt(ratios.httpProxyCpuToSwitchyardCpu, 2)}`);
  if (gatewayWarnings) console.log(`  (the gateway logged ${gatewayWarnings} warning/error line(s))`);

  await Promise.all([forwarder.stop(), gateway.stop(), upstream.stop()]);
  return { settings, runs, medians, ratios, gatewayWarnings };
}

async function main() {
  const results = { date: new Date().toISOString(), machine: machineInfo() };
  console.log(`switchyard bench: ${settings.rounds} round(s) × ${settings.duration}, wrk -t${settings.threads} -c${settings.connections}; ${results.machine.cpus} CPU(s), load average ${results.machine.loadavg.join(' ')}`);
  results.throughput = await throughput();
  const dir = writeResults(results);
  if (env.BENCH_SKIP_SCENARIOS !== '1') {
    const { runScenarios } = await import('./scenarios.mjs');
    console.log('');
    results.scenarios = await runScenarios();
    writeResults(results);
  }
  console.log(`\nresults: ${dir}/latest.json, ${dir}/latest.md`);
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

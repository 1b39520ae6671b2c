#!/usr/bin/env node
// Zero-loss scenarios: operational events under the highest load this machine
// sustains, driven by a bounded in-script load generator (undici Agent, closed loop,
// BENCH_CONCURRENCY workers, default 64, for BENCH_SCENARIO_DURATION, default 5s).
// For each: requests, failed (non-2xx answers and transport errors, target 0), the
// latency impact (p99 of the requests sent before the event vs from its start to 1 s
// after its end), req/s. Events: instant cutover and a 10-step rollout through the
// control API (BENCH_ROLLOUT_INTERVAL_MS, default 300), weight shifts by SIGHUP,
// rolling replacement of every endpoint, kill -9 of an endpoint, an endpoint answering
// 500, a whole version killed, SIGTERM to the gateway; the rollout and the SIGTERM
// again with gateway.workers: 2.
//
//   node bench/scenarios.mjs            (also run by bench/run.mjs unless BENCH_SKIP_SCENARIOS=1)
//   BENCH_SCENARIOS=kill-9,sigterm node bench/scenarios.mjs   (a subset)
//
// Standalone, it replaces the `scenarios` part of bench/results/latest.json and
// rewrites latest.md. Every upstream is its own process (bench/upstream.mjs); every
// process started here is stopped by pid on exit, also on error.

import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { drive, fmt, gatewayConfig, machineInfo, readResults, sleep, startGateway, startUpstream, stopAll, writeResults } from './lib.mjs';

const env = process.env;
const durationMs = parseDurationMs(env.BENCH_SCENARIO_DURATION ?? '5s');
const concurrency = Number(env.BENCH_CONCURRENCY ?? 64) || 64;

function parseDurationMs(s) {
  const m = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(String(s).trim());
  if (!m) throw new Error(`bad duration ${s}`);
  return m[2] === 'ms' ? Number(m[1]) : Number(m[1]) * 1000;
}

// What an operator running zero-downtime deploys would configure (config/schema.ts keys).
const SERVICE_SETTINGS = {
  healthCheck: { path: '/healthz', interval: '500ms', timeout: '250ms', healthyThreshold: 1, unhealthyThreshold: 2 },
  outlierDetection: { consecutive5xx: 3, consecutiveGatewayErrors: 2, baseEjectionTime: '10s', maxEjectionPercent: 50 },
  retries: { attempts: 2 },
  timeouts: { connect: '500ms', request: '10s' },
};
const SHUTDOWN = { drainDelay: '1s', grace: '5s' };
const GATEWAY_SETTINGS = `healthCheck ${JSON.stringify(SERVICE_SETTINGS.healthCheck)}, outlierDetection ${JSON.stringify(SERVICE_SETTINGS.outlierDetection)}, retries ${SERVICE_SETTINGS.retries.attempts}, timeouts ${JSON.stringify(SERVICE_SETTINGS.timeouts)}, shutdown ${JSON.stringify(SHUTDOWN)}`.replace(/"/g, '');

/** A config for service "shop" with the given versions {name: {weight, endpoints}}. */
function shop(versions, ports, extra = {}, workers = 1) {
  return gatewayConfig({
    ...ports,
    workers,
    level: 'info', // the scenarios follow the gateway's log lines (reloads, ejections)
    services: { shop: { routes: [{ path: '/' }], versions, ...SERVICE_SETTINGS, ...extra } },
    shutdown: SHUTDOWN,
  });
}

const logCount = (gw, msg) => gw.lines.filter((l) => l.msg === msg).length;
const waitLog = (gw, msg, n, timeoutMs = 10_000) => gw.waitLine(() => logCount(gw, msg) >= n, timeoutMs);

// ---- the scenarios ----

/** 50 weight changes (config rewrite + SIGHUP) spread over the run. */
async function weightShifts() {
  const blue = await startUpstream('blue-1');
  const green = await startUpstream('green-1');
  let ports;
  const cfg = (b, g) => shop({ blue: { weight: b, endpoints: [blue.address] }, green: { weight: g, endpoints: [green.address] } }, ports);
  const gw = await startGateway((p) => ((ports = p), cfg(100, 0)));
  const changes = 50;
  const event = {};
  const shifter = (async () => {
    const gap = durationMs / (changes + 1);
    for (let i = 1; i <= changes; i++) {
      if (i === 1) event.from = performance.now() + gap;
      await sleep(gap);
      // A sawtooth: green goes 0 → 100 over 10 changes, then back, five times.
      const step = (i % 20) * 10;
      const g = step <= 100 ? step : 200 - step;
      gw.reconfigure(cfg(100 - g, g));
      await waitLog(gw, 'config reloaded', i);
    }
    event.to = performance.now();
  })();
  const r = await drive(`${gw.url}/`, { concurrency, durationMs });
  await shifter;
  const reloads = logCount(gw, 'config reloaded');
  const refused = logCount(gw, 'config reload refused; the running config stays');
  return { r, gw, event, notes: `${reloads} reloads applied, ${refused} refused; by upstream ${JSON.stringify(r.byUpstream)}` };
}

/** Four endpoints replaced one by one: new instance in, old one out (drained), old stopped. */
async function rollingReplacement() {
  const ups = [];
  for (let i = 1; i <= 4; i++) ups.push(await startUpstream(`v1-${i}`));
  let ports;
  let current = [...ups];
  const cfg = (eps) => shop({ v1: { weight: 1, endpoints: eps.map((u) => u.address) } }, ports);
  const gw = await startGateway((p) => ((ports = p), cfg(current)));
  let reloads = 0;
  const steps = [];
  const event = {};
  const roll = (async () => {
    const gap = durationMs / 5;
    for (let i = 0; i < 4; i++) {
      await sleep(gap * 0.5);
      if (i === 0) event.from = performance.now();
      const old = current[0];
      const fresh = await startUpstream(`v2-${i + 1}`);
      // 1. the new instance joins; it takes traffic once a probe passed
      current = [...current, fresh];
      gw.reconfigure(cfg(current));
      await waitLog(gw, 'config reloaded', ++reloads);
      await gw.waitLine((l) => l.msg === 'endpoint healthy' && l.endpoint === fresh.address, 5000).catch(() => {});
      await sleep(gap * 0.2);
      // 2. the old one leaves: no new requests, in-flight ones finish
      current = current.filter((u) => u !== old);
      gw.reconfigure(cfg(current));
      await waitLog(gw, 'config reloaded', ++reloads);
      await gw.waitLine((l) => l.msg === 'endpoint drained' && l.endpoint === old.address, 5000).catch(() => {});
      // 3. then the old process stops
      const st = await old.stop('SIGTERM');
      steps.push(`${old.name}→${fresh.name} (old exit ${st.code ?? st.signal})`);
    }
    event.to = performance.now();
  })();
  const r = await drive(`${gw.url}/`, { concurrency, durationMs });
  await roll;
  return { r, gw, event, notes: `${steps.length} replacements; by upstream ${JSON.stringify(r.byUpstream)}` };
}

/** kill -9 of one of four endpoints a third into the run. */
async function killOne() {
  const ups = [];
  for (let i = 1; i <= 4; i++) ups.push(await startUpstream(`v1-${i}`));
  const gw = await startGateway((p) => shop({ v1: { weight: 1, endpoints: ups.map((u) => u.address) } }, p));
  const event = {};
  const killer = (async () => {
    await sleep(durationMs / 3);
    event.from = event.to = performance.now();
    ups[1].signal('SIGKILL');
  })();
  const r = await drive(`${gw.url}/`, { concurrency, durationMs });
  await killer;
  const ejected = logCount(gw, 'endpoint ejected');
  const unhealthy = logCount(gw, 'endpoint unhealthy');
  return { r, gw, event, notes: `${ups[1].name} killed at ${fmt(durationMs / 3000, 1)}s; ejections ${ejected}, marked unhealthy ${unhealthy}; ${describeFailures(r)}` };
}

/** One of four endpoints starts answering 500 (to requests and probes) a third in. */
async function ejectFailing() {
  const ups = [];
  for (let i = 1; i <= 4; i++) ups.push(await startUpstream(`v1-${i}`));
  const gw = await startGateway((p) => shop({ v1: { weight: 1, endpoints: ups.map((u) => u.address) } }, p));
  const event = {};
  const breaker = (async () => {
    await sleep(durationMs / 3);
    event.from = event.to = performance.now();
    ups[2].signal('SIGUSR2'); // now answers 500
  })();
  const r = await drive(`${gw.url}/`, { concurrency, durationMs });
  await breaker;
  const ejected = logCount(gw, 'endpoint ejected');
  return { r, gw, event, notes: `${ups[2].name} answers 500 from ${fmt(durationMs / 3000, 1)}s; ejections ${ejected}; 500 answers seen by clients: ${r.statuses[500] ?? 0}; ${describeFailures(r)}` };
}

/** Both endpoints of green (weight 50/50 with blue) killed -9 a third into the run. */
async function versionDown() {
  const blue = [await startUpstream('blue-1'), await startUpstream('blue-2')];
  const green = [await startUpstream('green-1'), await startUpstream('green-2')];
  const gw = await startGateway((p) =>
    shop({ blue: { weight: 50, endpoints: blue.map((u) => u.address) }, green: { weight: 50, endpoints: green.map((u) => u.address) } }, p),
  );
  const event = {};
  const killer = (async () => {
    await sleep(durationMs / 3);
    event.from = event.to = performance.now();
    for (const u of green) u.signal('SIGKILL');
  })();
  const r = await drive(`${gw.url}/`, { concurrency, durationMs });
  await killer;
  return {
    r,
    gw,
    event,
    notes: `green (2 endpoints) killed at ${fmt(durationMs / 3000, 1)}s; ejections ${logCount(gw, 'endpoint ejected')}, marked unhealthy ${logCount(gw, 'endpoint unhealthy')}; ${describeFailures(r)}`,
  };
}

/**
 * SIGTERM to the gateway under load. The load generator acts as a load balancer: it
 * polls /ready every 100 ms and stops sending new requests once it says 503 (within
 * the drainDelay); every request it did send must be answered.
 */
async function gatewaySigterm(workers = 1) {
  const up = await startUpstream('v1-1');
  const gw = await startGateway((p) => shop({ v1: { weight: 1, endpoints: [up.address] } }, p, {}, workers));
  let outOfRotation = false;
  let sentSigterm = false;
  const event = {};
  const lb = (async () => {
    await sleep(durationMs / 2);
    event.from = performance.now();
    gw.signal('SIGTERM');
    sentSigterm = true;
    while (!outOfRotation) {
      try {
        const res = await request(`${gw.adminUrl}/ready`, { headersTimeout: 1000 });
        await res.body.dump();
        if (res.statusCode !== 200) outOfRotation = true;
      } catch {
        outOfRotation = true; // the admin listener is gone: out of rotation too
      }
      if (!outOfRotation) await sleep(100);
    }
    event.to = performance.now();
  })();
  const t0 = performance.now();
  const r = await drive(`${gw.url}/`, { concurrency, durationMs: durationMs * 2, until: () => outOfRotation });
  await lb;
  const exit = await gw.exited;
  return {
    r,
    gw,
    event,
    notes: `SIGTERM at ${fmt(durationMs / 2000, 1)}s; load stopped when /ready said 503 (${fmt((performance.now() - t0) / 1000, 1)}s); gateway exit ${exit.code ?? exit.signal}${sentSigterm ? '' : ' (no SIGTERM sent)'}; ${describeFailures(r)}`,
  };
}

/** POST/GET JSON on the control API. */
async function control(gw, method, path, body) {
  const res = await request(`${gw.controlUrl}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.body.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  if (res.statusCode >= 300) throw new Error(`${method} ${path} answered ${res.statusCode}: ${text.slice(0, 300)}`);
  return json;
}

/** blue (2 endpoints) at 100, green (2 endpoints) at 0. */
async function blueGreen(workers = 1) {
  const blue = [await startUpstream('blue-1'), await startUpstream('blue-2')];
  const green = [await startUpstream('green-1'), await startUpstream('green-2')];
  const gw = await startGateway((p) =>
    shop({ blue: { weight: 100, endpoints: blue.map((u) => u.address) }, green: { weight: 0, endpoints: green.map((u) => u.address) } }, p, {}, workers),
  );
  return { blue, green, gw };
}

const share = (r, prefix) => Object.entries(r.byUpstream).reduce((n, [k, v]) => n + (k.startsWith(prefix) ? v : 0), 0);

/** An instant cutover blue → green through the control API a third into the run. */
async function cutover() {
  const { gw } = await blueGreen();
  const event = {};
  let answer;
  const switcher = (async () => {
    await sleep(durationMs / 3);
    event.from = performance.now();
    answer = await control(gw, 'POST', '/v1/services/shop/cutover', { to: 'green' });
    event.to = performance.now();
  })();
  const r = await drive(`${gw.url}/`, { concurrency, durationMs });
  await switcher;
  return { r, gw, event, notes: `POST …/cutover {to: green} at ${fmt(durationMs / 3000, 1)}s answered in ${fmt(event.to - event.from, 1)} ms (revision ${answer?.revision ?? '?'}); blue ${share(r, 'blue')}, green ${share(r, 'green')} requests; ${describeFailures(r)}` };
}

/** A 10-step rollout blue → green (10, 20 … 100 %) through the control API. */
async function rollout(workers = 1) {
  const { gw } = await blueGreen(workers);
  const intervalMs = Math.max(100, Math.round(Number(env.BENCH_ROLLOUT_INTERVAL_MS ?? 300)));
  // BENCH_ROLLOUT_STEPS (10): evenly spaced steps ending at 100 (the harness test runs 3).
  const stepCount = Math.max(1, Math.round(Number(env.BENCH_ROLLOUT_STEPS ?? 10)));
  const steps = Array.from({ length: stepCount }, (_, i) => Math.round(((i + 1) * 100) / stepCount));
  // Analysis judges whole seconds (the counters' grain): a step's window opens at the
  // first whole second after it began, so a step lasts about max(interval, 1 s) + interval.
  const stepMs = Math.max(intervalMs, 1000) + intervalMs;
  const runMs = Math.max(durationMs, steps.length * stepMs + 2000);
  const event = {};
  let final;
  const driver = (async () => {
    await sleep(1000);
    event.from = performance.now();
    await control(gw, 'POST', '/v1/services/shop/rollout', {
      to: 'green',
      steps,
      interval: `${intervalMs}ms`,
      // Short steps: judge what there is, and never roll back for lack of traffic.
      analysis: { maxErrorRate: 0.01, minRequests: 0, noTrafficPolicy: 'continue' },
    });
    const deadline = performance.now() + steps.length * stepMs * 2 + 5000;
    while (performance.now() < deadline) {
      final = await control(gw, 'GET', '/v1/services/shop/rollout');
      if (final.state !== 'running') break;
      await sleep(50);
    }
    event.to = performance.now();
  })();
  const r = await drive(`${gw.url}/`, { concurrency, durationMs: runMs });
  await driver;
  return {
    r,
    gw,
    event,
    notes: `${steps.length} steps every ${intervalMs} ms: ${final?.state ?? '?'}${final?.reason ? ` (${final.reason})` : ''} after ${fmt(((event.to ?? 0) - (event.from ?? 0)) / 1000, 1)}s; blue ${share(r, 'blue')}, green ${share(r, 'green')} requests; ${describeFailures(r)}`,
    failedState: final?.state !== 'succeeded' ? `rollout ended ${final?.state}` : undefined,
  };
}

function describeFailures(r) {
  const parts = [];
  for (const [s, n] of Object.entries(r.statuses)) if (Number(s) >= 300) parts.push(`${n}× ${s}`);
  for (const [e, n] of Object.entries(r.errors)) parts.push(`${n}× ${e}`);
  return parts.length ? `failures: ${parts.join(', ')}` : 'no failures';
}

export const SCENARIOS = [
  { id: 'cutover', name: 'instant cutover blue → green (control API)', run: cutover },
  { id: 'rollout', name: '10-step rollout blue → green (control API)', run: () => rollout() },
  { id: 'weight-shifts', name: 'weight shifts under load (50 × SIGHUP rewrite)', run: weightShifts },
  { id: 'rolling', name: 'rolling replacement of every endpoint (4)', run: rollingReplacement },
  { id: 'kill-9', name: 'kill -9 of 1 of 4 endpoints', run: killOne },
  { id: 'eject-500', name: '1 of 4 endpoints answers 500 (ejection)', run: ejectFailing },
  { id: 'version-down', name: 'whole version down (green 2/2 kill -9, 50/50)', run: versionDown },
  { id: 'sigterm', name: 'gateway SIGTERM under load (drain)', run: () => gatewaySigterm() },
  { id: 'rollout-2w', name: '10-step rollout, gateway.workers: 2', run: () => rollout(2) },
  { id: 'sigterm-2w', name: 'gateway SIGTERM under load, gateway.workers: 2', run: () => gatewaySigterm(2) },
];

export async function runScenarios({ only = env.BENCH_SCENARIOS?.split(',').filter(Boolean) } = {}) {
  const results = [];
  console.log(`scenarios: ${concurrency} concurrent requests, ${durationMs / 1000}s each`);
  console.log(`${'scenario'.padEnd(50)} ${'requests'.padStart(8)} ${'failed'.padStart(7)} ${'p99 before'.padStart(10)} ${'p99 during'.padStart(10)} ${'req/s'.padStart(7)}`);
  for (const s of SCENARIOS) {
    if (only?.length && !only.includes(s.id)) continue;
    let out;
    try {
      const { r, gw, notes, event = {}, failedState } = await s.run();
      if (gw.running) await gw.stop('SIGTERM', 8000);
      // Latency impact: requests sent before the event vs from its start to 1 s after its end.
      // "Before" skips the run's first second at most (connections opening, JIT warm-up).
      const p99BeforeMs = event.from === undefined ? NaN : r.quantileBetween(0.99, r.t0 + Math.min(1000, (event.from - r.t0) / 2), event.from);
      const p99DuringMs = event.from === undefined ? NaN : r.quantileInFlight(0.99, event.from, (event.to ?? event.from) + 1000);
      out = { id: s.id, name: s.name, requests: r.requests, failed: r.failed, p99Ms: r.p99Ms, p50Ms: r.p50Ms, p99BeforeMs, p99DuringMs, rps: r.rps, seconds: r.seconds, statuses: r.statuses, errors: r.errors, notes };
      if (failedState) out.error = failedState;
    } catch (err) {
      out = { id: s.id, name: s.name, requests: 0, failed: NaN, p99Ms: NaN, rps: NaN, error: String(err?.message ?? err), notes: `scenario error: ${String(err?.message ?? err).slice(0, 300)}` };
    } finally {
      await stopAll(); // everything this scenario started
    }
    results.push(out);
    console.log(`${s.name.padEnd(50)} ${String(out.requests).padStart(8)} ${String(out.failed).padStart(7)} ${fmt(out.p99BeforeMs, 1).padStart(10)} ${fmt(out.p99DuringMs, 1).padStart(10)} ${fmt(out.rps).padStart(7)}  ${out.notes}`);
  }
  return { settings: { concurrency, duration: `${durationMs / 1000}s`, gatewaySettings: GATEWAY_SETTINGS }, results };
}

// Standalone: run, then merge into latest.json / latest.md.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  let code = 0;
  try {
    const scenarios = await runScenarios();
    const prev = readResults() ?? { date: new Date().toISOString(), machine: machineInfo() };
    const dir = writeResults({ ...prev, scenarios: { ...scenarios, date: new Date().toISOString() } });
    console.log(`\nresults: ${dir}/latest.json, ${dir}/latest.md`);
    if (scenarios.results.some((x) => x.error)) code = 1;
  } catch (err) {
    console.error(`scenarios failed: ${err?.stack ?? err}`);
    code = 1;
  } finally {
    await stopAll();
  }
  process.exit(code);
}

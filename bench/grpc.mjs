#!/usr/bin/env node
// gRPC and HTTP/2 benchmark (`npm run build && node bench/grpc.mjs`):
//  1. unary gRPC calls per second (Echo of test/fixtures/echo.proto, grpc-js on both
//     ends, the server in its own process answering at once): the server directly,
//     through Switchyard (client → plain listener with HTTP/2 prior knowledge →
//     protocol h2c upstream) and through NGINX `grpc_pass` (1 worker, http2 listener,
//     upstream keepalive). Closed loop: CLIENTS channels × STREAMS calls each in flight.
//  2. h2load (Debian nghttp2-client) against Switchyard's plain listener with HTTP/2
//     prior knowledge, to an HTTP/1.1 upstream (bench/upstream.mjs).
// Writes bench/results/grpc.json and grpc.md (or under BENCH_OUT).
// Environment: BENCH_GRPC_DURATION (5s), BENCH_GRPC_CLIENTS (4), BENCH_GRPC_STREAMS (16),
// BENCH_ROUNDS (3), BENCH_H2LOAD_REQUESTS (50000).
// Every process it starts is stopped by pid on exit. Traffic stays on 127.0.0.1.

import { execFileSync, spawnSync } from 'node:child_process';
import { writeFileSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { BENCH_DIR, RESULTS_DIR, cpuMs, fmt, freePort, gatewayConfig, loadavg, machineInfo, median, startChild, startGateway, startUpstream, stopAll } from './lib.mjs';
import { NGINX, nginxCommon, nginxTemp, nginxVersion, startNginx, tempDir } from './peers.mjs';

const env = process.env;
const DURATION_MS = parseFloat(env.BENCH_GRPC_DURATION ?? '5') * 1000;
const CLIENTS = Number(env.BENCH_GRPC_CLIENTS ?? 4);
const STREAMS = Number(env.BENCH_GRPC_STREAMS ?? 16);
const ROUNDS = Number(env.BENCH_ROUNDS ?? 3);
const H2LOAD_N = Number(env.BENCH_H2LOAD_REQUESTS ?? 50_000);

const PROTO = resolve(BENCH_DIR, '../test/fixtures/echo.proto');
const Echo = grpc.loadPackageDefinition(protoLoader.loadSync(PROTO, { keepCase: true, defaults: true })).switchyard.test.Echo;

async function startGrpcServer() {
  const c = startChild(process.execPath, [resolve(BENCH_DIR, '../test/fixtures/grpc-server.mjs'), 'bench'], { label: 'grpc server', env: { ...env, GRPC_UNARY_DELAY_MS: '0' } });
  const l = await c.waitLine((o) => typeof o.port === 'number');
  c.address = `127.0.0.1:${l.port}`;
  return c;
}

async function startNginxGrpc(upstreamAddr) {
  const dir = tempDir('switchyard-bench-nginx-grpc-');
  const port = await freePort();
  const conf = `${nginxCommon(dir)}http {
${nginxTemp(dir)}  upstream grpcbackend {
    server ${upstreamAddr};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port} http2;
    http2_max_concurrent_streams 1000;
    location / {
      grpc_pass grpc://grpcbackend;
    }
  }
}
`;
  const c = await startNginx('nginx grpc', conf, dir, port);
  c.address = `127.0.0.1:${port}`;
  return c;
}

/** Closed-loop unary calls for DURATION_MS: calls completed per second and failures. */
async function unaryRate(target) {
  const clients = Array.from({ length: CLIENTS }, (_, i) => new Echo(target, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1, 'grpc.channel_id': i }));
  // Warm up: every channel connected.
  await Promise.all(clients.map((c) => new Promise((res, rej) => c.Unary({ message: 'warm' }, (err) => (err ? rej(err) : res())))));
  let ok = 0;
  let failed = 0;
  const end = Date.now() + DURATION_MS;
  const loop = (c) =>
    new Promise((res) => {
      const next = () => {
        if (Date.now() >= end) return res();
        c.Unary({ message: 'hello' }, (err) => {
          if (err) failed++;
          else ok++;
          next();
        });
      };
      next();
    });
  const t0 = Date.now();
  await Promise.all(clients.flatMap((c) => Array.from({ length: STREAMS }, () => loop(c))));
  const secs = (Date.now() - t0) / 1000;
  for (const c of clients) c.close();
  return { rps: ok / secs, failed };
}

function h2load(url) {
  const r = spawnSync('h2load', ['-n', String(H2LOAD_N), '-c', '8', '-m', '16', url], { encoding: 'utf8' });
  if (r.status !== 0) return { error: (r.stderr || r.stdout || '').slice(-500) };
  const m = /finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(r.stdout);
  const st = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(r.stdout);
  return { rps: m ? Number(m[1]) : NaN, succeeded: st ? Number(st[1]) : NaN, failed: st ? Number(st[2]) + Number(st[3]) : NaN };
}

function haveH2load() {
  try {
    execFileSync('h2load', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function main() {
  const results = { at: new Date().toISOString(), loadavgBefore: loadavg(), machine: machineInfo(), settings: { durationMs: DURATION_MS, clients: CLIENTS, streams: STREAMS, rounds: ROUNDS }, unary: {}, h2load: {} };
  const server = await startGrpcServer();
  const gw = await startGateway((p) =>
    gatewayConfig({ ...p, services: { echo: { routes: [{ path: '/' }], protocol: 'h2c', versions: { blue: { weight: 100, endpoints: [server.address] } } } } }),
  );
  const peers = { direct: server.address, switchyard: gw.url.replace('http://', '') };
  let nginx;
  if (NGINX !== undefined) {
    nginx = await startNginxGrpc(server.address);
    peers.nginx = nginx.address;
    results.nginxVersion = nginxVersion();
  }
  const runs = Object.fromEntries(Object.keys(peers).map((k) => [k, []]));
  const cpu = Object.fromEntries(Object.keys(peers).map((k) => [k, []]));
  const proxyPid = { switchyard: gw.proc.pid, nginx: nginx?.proc.pid };
  for (let round = 0; round < ROUNDS; round++) {
    // Peer order rotated each round.
    const names = Object.keys(peers);
    const order = names.slice(round % names.length).concat(names.slice(0, round % names.length));
    for (const name of order) {
      const pid = proxyPid[name];
      const c0 = pid === undefined ? undefined : cpuMs(pid);
      const r = await unaryRate(peers[name]);
      const c1 = pid === undefined ? undefined : cpuMs(pid);
      runs[name].push(r);
      if (c0 !== undefined && c1 !== undefined) cpu[name].push(((c1 - c0) * 1000) / (r.rps * (DURATION_MS / 1000)));
      console.log(`round ${round + 1} ${name}: ${fmt(r.rps)} calls/s, ${r.failed} failed`);
    }
  }
  for (const [name, rs] of Object.entries(runs)) {
    results.unary[name] = { rps: median(rs.map((r) => r.rps)), failed: rs.reduce((n, r) => n + r.failed, 0), cpuUsPerCall: cpu[name].length ? median(cpu[name]) : undefined };
  }
  if (haveH2load()) {
    const up = await startUpstream('h1');
    const gw2 = await startGateway((p) => gatewayConfig({ ...p, services: { shop: { routes: [{ path: '/' }], versions: { blue: { weight: 100, endpoints: [up.address] } } } } }), { label: 'switchyard h2c→h1' });
    results.h2load['switchyard (h2c prior knowledge → HTTP/1.1 upstream)'] = h2load(`${gw2.url}/small`);
  } else results.h2load = { skipped: 'h2load not installed (Debian nghttp2-client)' };
  const md = [
    '# gRPC and HTTP/2 bench',
    '',
    `${results.at}; load average before: ${results.loadavgBefore.join(' ')} (other work on the machine skews every figure) — ${CLIENTS} channels × ${STREAMS} calls in flight, ${DURATION_MS / 1000} s × ${ROUNDS} rounds (median).`,
    '',
    '| unary gRPC | calls/s | failed | proxy CPU µs/call | ÷ direct |',
    '|---|---|---|---|---|',
    ...Object.entries(results.unary).map(([k, v]) => `| ${k} | ${fmt(v.rps)} | ${v.failed} | ${v.cpuUsPerCall === undefined ? '' : fmt(v.cpuUsPerCall)} | ${fmt(v.rps / results.unary.direct.rps, 2)} |`),
    '',
    '| h2load (-c 8 -m 16) | req/s | failed |',
    '|---|---|---|',
    ...Object.entries(results.h2load).map(([k, v]) => `| ${k} | ${typeof v === 'string' ? v : fmt(v.rps)} | ${typeof v === 'string' ? '' : (v.failed ?? v.error ?? '')} |`),
    '',
  ].join('\n');
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(join(RESULTS_DIR, 'grpc.json'), JSON.stringify(results, null, 2) + '\n');
  writeFileSync(join(RESULTS_DIR, 'grpc.md'), md);
  console.log(md);
}

try {
  await main();
} finally {
  await stopAll();
}

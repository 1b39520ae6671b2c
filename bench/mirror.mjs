#!/usr/bin/env node
// What a mirror costs the client: the same fixed-rate load (open loop, GET /small) through
// Switchyard with no mirror, with a mirror of every request to a healthy green, to a green
// that never answers (hung), and to a green that is down (connection refused). Prints
// p50/p99/p99.9 and failures per case, and the mirror's counts by result. It measures;
// it asserts nothing (test/mirror.test.ts checks that no client request fails).
//
//   npm run build && node bench/mirror.mjs [--rate 500] [--seconds 5] [--path /small]
//
// Upstreams are bench/upstream.mjs processes (their CPU is not the gateway's); the hung
// green is a node:http server in this process that reads requests and never answers.

import http from 'node:http';
import { arg } from './args.mjs';
import { fmt, freePort, gatewayConfig, openLoop, startGateway, startUpstream, stopAll } from './lib.mjs';

const rate = Number(arg('--rate', '500'));
const seconds = Number(arg('--seconds', '5'));
const path = arg('--path', '/small');

const blue = await startUpstream('blue');
const green = await startUpstream('green');
const hung = http.createServer((req) => req.resume());
await new Promise((r) => hung.listen(0, '127.0.0.1', r));
const hungAddress = `127.0.0.1:${hung.address().port}`;
// A port nothing listens on.
const downAddress = `127.0.0.1:${await freePort()}`;

const cases = [
  { name: 'no mirror', green: green.address, mirror: undefined },
  { name: 'mirror → healthy green', green: green.address, mirror: { to: 'green', timeout: '2s' } },
  { name: 'mirror → hung green', green: hungAddress, mirror: { to: 'green', timeout: '2s' } },
  { name: 'mirror → down green', green: downAddress, mirror: { to: 'green', timeout: '2s' } },
];

const rows = [];
try {
  for (const c of cases) {
    const gw = await startGateway((p) =>
      gatewayConfig({
        ...p,
        services: {
          shop: {
            routes: [{ path: '/' }],
            versions: { blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [c.green] } },
            ...(c.mirror === undefined ? {} : { mirror: c.mirror }),
          },
        },
      }),
    );
    // Warm the connections, then measure.
    await openLoop(`${gw.url}${path}`, { rate, durationMs: 1000 });
    const r = await openLoop(`${gw.url}${path}`, { rate, durationMs: seconds * 1000 });
    const m = await fetch(`${gw.controlUrl}/v1/services/shop/mirror`).then((x) => x.json());
    rows.push({ case: c.name, requests: r.requests, failed: r.failed, p50Ms: r.p50Ms, p99Ms: r.p99Ms, p999Ms: r.p999Ms, mirror: m.counts });
    await gw.stop();
  }
} finally {
  hung.closeAllConnections();
  hung.close();
  await stopAll();
}

console.log(`\nmirror cost at ${rate} req/s for ${seconds}s (GET ${path}):\n`);
console.log('| case | requests | failed | p50 ms | p99 ms | p99.9 ms | mirror results |');
console.log('|---|---|---|---|---|---|---|');
for (const r of rows) {
  const counts = r.mirror === undefined ? '' : Object.entries(r.mirror).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ');
  console.log(`| ${r.case} | ${r.requests} | ${r.failed} | ${fmt(r.p50Ms, 2)} | ${fmt(r.p99Ms, 2)} | ${fmt(r.p999Ms, 2)} | ${counts} |`);
}

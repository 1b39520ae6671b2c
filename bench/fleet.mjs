#!/usr/bin/env node
// Fleet benchmark (`node bench/fleet.mjs`, after `npm run build`): three gateway
// processes on one redis-server (own process, free port, no persistence).
//  - propagation: 100 weight changes through replica A; for each, the time from sending
//    the PUT until replicas B and C have applied it, observed on their live event
//    streams (GET /v1/events with Accept: text/event-stream); p50/p95/p99/max printed.
//  - cutover --wait: time from POST cutover (wait: true) to its answer, with nothing in
//    flight and with a 1 s request in flight on replica C.
// Merges a "fleet" section into bench/results/latest.json (latest.md is rendered from it).

import http from 'node:http';
import net from 'node:net';
import { request } from 'undici';
import { freePort, fmt, quantileSorted, gatewayConfig, readResults, sleep, startChild, startGateway, stopAll, writeResults } from './lib.mjs';

const CHANGES = Number(process.env.BENCH_FLEET_CHANGES ?? 100) || 100;

async function startRedis() {
  const port = await freePort();
  const c = startChild('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { label: 'redis-server' });
  for (let i = 0; ; i++) {
    const ok = await new Promise((r) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
    if (ok) break;
    if (i > 100) throw new Error('redis-server did not start');
    await sleep(50);
  }
  return { c, url: `redis://127.0.0.1:${port}/0` };
}

/** A small in-process upstream; /delay/<ms> answers after that long. */
async function upstream(name) {
  const server = http.createServer((req, res) => {
    const m = /^\/delay\/(\d+)/.exec(req.url ?? '');
    req.resume();
    setTimeout(() => res.end(JSON.stringify({ name })), m ? Number(m[1]) : 0);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { server, address: `127.0.0.1:${server.address().port}` };
}

async function json(method, url, body) {
  const r = await request(url, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined });
  return { status: r.statusCode, body: await r.body.json() };
}

/** Follows a replica's event stream; calls onEvent(event, receivedAtMs). */
async function follow(controlUrl, onEvent, signal) {
  const res = await request(`${controlUrl}/v1/events`, { headers: { accept: 'text/event-stream' }, signal });
  let buf = '';
  res.body.on('data', (d) => {
    const at = performance.now();
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n\n')) !== -1) {
      const frame = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = frame.split('\n').find((l) => l.startsWith('data: '));
      if (data) onEvent(JSON.parse(data.slice(6)), at);
    }
  });
  res.body.on('error', () => {});
}

const pct = (xs, q) => quantileSorted([...xs].sort((a, b) => a - b), q);

async function main() {
  const redis = await startRedis();
  const blue = await upstream('blue');
  const green = await upstream('green');
  const prefix = `bench${Date.now()}`;
  const gws = [];
  for (let i = 0; i < 3; i++) {
    gws.push(
      await startGateway(({ port, adminPort, controlPort }) => ({
        ...gatewayConfig({
          port,
          adminPort,
          controlPort,
          services: {
            shop: {
              routes: [{ path: '/' }],
              override: { header: 'x-switchyard-version' },
              versions: { blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } },
            },
          },
        }),
        state: { store: 'redis', redis: { url: redis.url, prefix } },
      }), { label: `gateway ${i}` }),
    );
  }
  const [a, b, c] = gws;
  for (const g of gws) g.controlUrl = `http://127.0.0.1:${g.config.control.listen.split(':')[1]}`;
  // Wait until every replica sees the other two.
  for (let i = 0; i < 100; i++) {
    const r = await json('GET', `${a.controlUrl}/v1/replicas`);
    if (r.body.replicas?.length === 3) break;
    await sleep(100);
  }

  const seen = new Map(); // revision -> {sentAt, b, c}
  const ac = new AbortController();
  for (const [name, g] of [['b', b], ['c', c]]) {
    await follow(g.controlUrl, (e, at) => {
      const s = seen.get(e.revision);
      if (s && s[name] === undefined) s[name] = at;
    }, ac.signal);
  }
  await sleep(200);
  const lat = [];
  for (let i = 0; i < CHANGES; i++) {
    const g = 1 + (i % 99);
    const sentAt = performance.now();
    const entry = { sentAt };
    // The revision is known only from the answer; register by the next expected one.
    const cur = (await json('GET', `${a.controlUrl}/v1/services`)).body.revision;
    seen.set(cur + 1, entry);
    entry.sentAt = performance.now();
    const r = await json('PUT', `${a.controlUrl}/v1/services/shop/weights`, { weights: { blue: 100 - g, green: g } });
    if (r.status !== 200) throw new Error(`PUT failed: ${JSON.stringify(r.body)}`);
    const deadline = Date.now() + 5000;
    while ((entry.b === undefined || entry.c === undefined) && Date.now() < deadline) await sleep(1);
    if (entry.b === undefined || entry.c === undefined) throw new Error(`revision ${r.body.revision} not seen on every replica within 5 s`);
    lat.push(Math.max(entry.b, entry.c) - entry.sentAt);
  }
  ac.abort();

  // cutover --wait, idle and with a 1 s request in flight on replica C.
  const cutoverTimes = {};
  await json('PUT', `${a.controlUrl}/v1/services/shop/weights`, { weights: { blue: 100, green: 0 } });
  await sleep(300);
  let t0 = performance.now();
  let r = await json('POST', `${a.controlUrl}/v1/services/shop/cutover`, { to: 'green', wait: true, timeout: '30s' });
  cutoverTimes.idle = performance.now() - t0;
  if (r.status !== 200) throw new Error(`cutover failed: ${JSON.stringify(r.body)}`);
  await json('PUT', `${a.controlUrl}/v1/services/shop/weights`, { weights: { blue: 100, green: 0 } });
  await sleep(300);
  // bench/upstream.mjs answers /delay/<ms> slowly when supported; otherwise this is a normal request.
  const slow = request(`${c.url}/delay/1000`, { headers: { 'x-switchyard-version': 'blue' } }).then((x) => x.body.dump());
  await sleep(100);
  t0 = performance.now();
  r = await json('POST', `${a.controlUrl}/v1/services/shop/cutover`, { to: 'green', wait: true, timeout: '30s' });
  cutoverTimes.inflight = performance.now() - t0;
  await slow;

  const out = {
    changes: CHANGES,
    propagationMs: { p50: pct(lat, 0.5), p95: pct(lat, 0.95), p99: pct(lat, 0.99), max: Math.max(...lat), min: Math.min(...lat) },
    cutoverWaitMs: cutoverTimes,
  };
  console.log(`fleet: ${CHANGES} weight changes through replica A, applied on B and C (PUT sent → event seen on both):`);
  console.log(`  p50 ${fmt(out.propagationMs.p50, 2)} ms  p95 ${fmt(out.propagationMs.p95, 2)} ms  p99 ${fmt(out.propagationMs.p99, 2)} ms  max ${fmt(out.propagationMs.max, 2)} ms`);
  console.log(`  cutover --wait: idle ${fmt(cutoverTimes.idle, 1)} ms; with a 1 s request in flight on another replica ${fmt(cutoverTimes.inflight, 1)} ms`);
  const results = readResults() ?? {};
  results.fleet = out;
  writeResults(results);
  blue.server.close();
  green.server.close();
  return out;
}

main()
  .catch((err) => {
    console.error(`fleet bench failed: ${err.stack ?? err}`);
    process.exitCode = 1;
  })
  .finally(() => stopAll());


#!/usr/bin/env node
// A minimal node:http upstream for the benchmarks, run as its own process so that its
// CPU is never counted against the gateway's.
//
//   node bench/upstream.mjs [--port 0] [--name up] [--fail]
//
// Answers every request with a small fixed body (200, or 500 with --fail; GET /small
// ~100 B, GET /64k 64 KiB) and
// `x-bench-upstream: NAME`. GET /healthz answers the same status. Prints one JSON line
// {"ready":true,"port":N,"pid":P} once listening.
// Signals: SIGUSR2 toggles failing (500) mode; SIGTERM stops gracefully (no new
// connections, in-flight requests answered with Connection: close, then exit 0).

import http from 'node:http';
import { arg, hasFlag } from './args.mjs';

const port = Number(arg('--port', '0'));
const name = arg('--name', 'up');
let failing = hasFlag('--fail');
let stopping = false;

const okBody = Buffer.from(`{"ok":true,"name":${JSON.stringify(name)}}\n`);
// The throughput bench's sizes when nginx is not installed (bench/peers.mjs SIZES).
const smallBody = Buffer.from(`${JSON.stringify({ ok: true, service: 'bench', version: 'v1', note: 'a small JSON answer of about 100 bytes' })}\n`);
const bigBody = Buffer.from(`${'x'.repeat(64 * 1024 - 1)}\n`);
const failBody = Buffer.from(`{"ok":false,"name":${JSON.stringify(name)}}\n`);

const server = http.createServer((req, res) => {
  const body = failing ? failBody : req.url === '/64k' ? bigBody : req.url === '/small' ? smallBody : okBody;
  const headers = { 'content-type': 'application/json', 'content-length': body.length, 'x-bench-upstream': name };
  if (stopping) headers.connection = 'close';
  // Read (and drop) any request body before answering, like a real application.
  if (req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined) {
    res.writeHead(failing ? 500 : 200, headers);
    res.end(body);
    return;
  }
  req.resume();
  req.on('end', () => {
    res.writeHead(failing ? 500 : 200, headers);
    res.end(body);
  });
});
// Above the gateway's upstream idleTimeout (4 s) and http.Agent's, as a real service is.
server.keepAliveTimeout = 65_000;

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ ready: true, port: server.address().port, pid: process.pid, name })}\n`);
});

process.on('SIGUSR2', () => {
  failing = !failing;
  process.stdout.write(`${JSON.stringify({ failing, name })}\n`);
});

process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  // Connections still busy get Connection: close on their response; give up after 5 s.
  setTimeout(() => process.exit(0), 5000).unref();
});

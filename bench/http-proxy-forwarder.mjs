#!/usr/bin/env node
// The baseline for the throughput benchmark: a plain forwarder built on http-proxy
// 1.18.1 (a devDependency, bench-only), the way a Node shop would write one, with a
// keep-alive http.Agent whose socket cap matches Switchyard's default
// gateway.upstream.maxConnectionsPerEndpoint (256). It adds X-Forwarded-* (xfwd) as
// Switchyard does, and answers 502 when the upstream fails.
//
//   node bench/http-proxy-forwarder.mjs --target http://127.0.0.1:PORT [--port 0] [--max-sockets 256]
//
// Listens on loopback only and prints one JSON line {"ready":true,"port":N,"pid":P}.

import http from 'node:http';
import httpProxy from 'http-proxy';
import { arg, loopbackTarget } from './args.mjs';

const target = loopbackTarget('http-proxy-forwarder.mjs --target http://127.0.0.1:PORT [--port 0] [--max-sockets 256]');
const port = Number(arg('--port', '0'));
const maxSockets = Number(arg('--max-sockets', '256'));

const agent = new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets, scheduling: 'lifo' });
const proxy = httpProxy.createProxyServer({ target, agent, xfwd: true });

proxy.on('error', (err, _req, res) => {
  // res is a ServerResponse for web requests (a socket for upgrades, unused here).
  if (res && typeof res.writeHead === 'function' && !res.headersSent) {
    res.writeHead(502, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { code: 'UPSTREAM_ERROR', message: err.message } }));
  } else if (res && typeof res.destroy === 'function') {
    res.destroy();
  }
});

const server = http.createServer((req, res) => proxy.web(req, res));
server.keepAliveTimeout = 65_000;
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ ready: true, port: server.address().port, pid: process.pid, maxSockets })}\n`);
});

process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  agent.destroy();
  setTimeout(() => process.exit(0), 2000).unref();
});

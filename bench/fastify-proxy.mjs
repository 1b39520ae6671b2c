#!/usr/bin/env node
// A bench peer: @fastify/http-proxy 11 (a devDependency, bench-only) on fastify 5, the
// way a Fastify shop would put a reverse proxy in front of one upstream. Its undici
// pool gets the same connection cap as Switchyard's default
// gateway.upstream.maxConnectionsPerEndpoint (256).
//
//   node bench/fastify-proxy.mjs --target http://127.0.0.1:PORT [--port 0] [--connections 256]
//
// Listens on loopback only and prints one JSON line {"ready":true,"port":N,"pid":P}.

import Fastify from 'fastify';
import proxy from '@fastify/http-proxy';
import { arg, loopbackTarget } from './args.mjs';

const target = loopbackTarget('fastify-proxy.mjs --target http://127.0.0.1:PORT [--port 0] [--connections 256]');
const port = Number(arg('--port', '0'));
const connections = Number(arg('--connections', '256'));

const app = Fastify({ logger: false, keepAliveTimeout: 65_000 });
await app.register(proxy, {
  upstream: target.replace(/\/$/, ''),
  undici: { connections, pipelining: 1, keepAliveTimeout: 60_000 },
});
await app.listen({ port, host: '127.0.0.1' });
process.stdout.write(`${JSON.stringify({ ready: true, port: app.server.address().port, pid: process.pid, connections })}\n`);

process.on('SIGTERM', () => {
  setTimeout(() => process.exit(0), 2000).unref();
  app.close().then(
    () => process.exit(0),
    () => process.exit(0),
  );
});

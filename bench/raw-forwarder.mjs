#!/usr/bin/env node
// The ceiling of one Node process as an HTTP/1.1 proxy on this machine: raw `net`
// sockets on both sides and nothing else. A request head is found by its blank line and
// written as it came to a pooled keep-alive upstream socket; the response is framed by
// its Content-Length and written back as it came. No parsing beyond that, no body
// forwarding, no header rewriting, no routing, no timeouts, no retries: it is a measuring
// stick for the bench (what the runtime's event loop and syscalls cost per request), not a
// proxy. It only works in front of an upstream that answers every GET with a
// Content-Length, as the bench's do.
//
//   node bench/raw-forwarder.mjs --target 127.0.0.1:PORT
//
// Prints one JSON line {"ready":true,"port":N,"pid":P} once listening.

import net from 'node:net';
import { arg } from './args.mjs';

const [host, port] = arg('--target', '127.0.0.1:8080').replace(/^http:\/\//, '').split(':');
const idle = [];
const CRLF2 = Buffer.from('\r\n\r\n');
const CL = Buffer.from('\r\ncontent-length:');

/** Content-Length of a response head (case-insensitive name), or -1. */
function lengthOf(buf, end) {
  const lower = buf.toString('latin1', 0, end).toLowerCase();
  const i = lower.indexOf(CL.toString('latin1'));
  if (i === -1) return -1;
  return Number.parseInt(lower.slice(i + CL.length), 10);
}

function upstream() {
  const reused = idle.pop();
  if (reused !== undefined) return reused;
  const u = net.connect(Number(port), host);
  u.setNoDelay(true);
  u.on('error', () => {});
  // An upstream closing a socket (its keep-alive timeout): out of the idle list, and a
  // request caught on it fails its client rather than hanging.
  u.on('close', () => {
    const i = idle.indexOf(u);
    if (i !== -1) idle.splice(i, 1);
    u.client?.destroy();
  });
  return u;
}

const server = net.createServer((client) => {
  client.setNoDelay(true);
  let pending = null;
  let busy = false;
  const next = () => {
    if (busy || pending === null) return;
    const end = pending.indexOf(CRLF2);
    if (end === -1) return;
    const head = pending.subarray(0, end + 4);
    pending = end + 4 === pending.length ? null : pending.subarray(end + 4);
    busy = true;
    const u = upstream();
    let got = null;
    let need = -1;
    const onData = (chunk) => {
      got = got === null ? chunk : Buffer.concat([got, chunk]);
      if (need === -1) {
        const e = got.indexOf(CRLF2);
        if (e === -1) return;
        need = e + 4 + lengthOf(got, e);
      }
      if (got.length < need) return;
      u.off('data', onData);
      u.client = undefined;
      client.write(got.length === need ? got : got.subarray(0, need));
      idle.push(u);
      busy = false;
      next();
    };
    u.client = client;
    u.on('data', onData);
    u.write(head);
  };
  client.on('data', (chunk) => {
    pending = pending === null ? chunk : Buffer.concat([pending, chunk]);
    next();
  });
  client.on('error', () => {});
});

server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ ready: true, port: server.address().port, pid: process.pid }));
});
process.on('SIGTERM', () => process.exit(0));

// A demo backend for deploy/docker-compose.yml: answers JSON naming its version and
// instance, /healthz 200, and registers itself with Consul (service "shop", tagged with
// its version, an HTTP check on /healthz) until it succeeds; on SIGTERM it deregisters
// first, then closes. Plain Node, no dependencies (runs in the stock node image).
//
// Environment: VERSION (blue|green), INSTANCE (unique id), PORT (default 9001),
// CONSUL_HTTP_ADDR (e.g. http://consul:8500; empty = do not register),
// ADVERTISE_ADDRESS (default: this container's first non-internal IPv4 address).

import http from 'node:http';
import os from 'node:os';

const version = process.env.VERSION ?? 'blue';
const instance = process.env.INSTANCE ?? `${version}-${os.hostname()}`;
const port = Number(process.env.PORT ?? 9001);
const consul = (process.env.CONSUL_HTTP_ADDR ?? '').replace(/\/$/, '');

function advertiseAddress() {
  if (process.env.ADVERTISE_ADDRESS) return process.env.ADVERTISE_ADDRESS;
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}
const address = advertiseAddress();

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    return;
  }
  req.resume();
  const body = JSON.stringify({ version, instance, method: req.method, url: req.url, host: req.headers.host });
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});

async function consulPut(path, body) {
  const res = await fetch(`${consul}${path}`, { method: 'PUT', body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(5000) });
  if (!res.ok) throw new Error(`PUT ${path}: ${res.status} ${await res.text()}`);
}

let stopping = false;
async function register() {
  const reg = {
    ID: instance,
    Name: 'shop',
    Tags: [version],
    Address: address,
    Port: port,
    Meta: { version },
    Check: { HTTP: `http://${address}:${port}/healthz`, Interval: '2s', Timeout: '1s', DeregisterCriticalServiceAfter: '1m' },
  };
  for (let wait = 250; !stopping; wait = Math.min(wait * 2, 5000)) {
    try {
      await consulPut('/v1/agent/service/register', reg);
      console.log(JSON.stringify({ msg: 'registered with consul', instance, address, port, version }));
      return;
    } catch (err) {
      console.log(JSON.stringify({ msg: 'consul registration failed; retrying', err: String(err.message ?? err) }));
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

server.listen(port, '0.0.0.0', () => {
  console.log(JSON.stringify({ msg: 'listening', instance, version, port }));
  if (consul) void register();
});

async function shutdown() {
  if (stopping) return;
  stopping = true;
  if (consul) await consulPut(`/v1/agent/service/deregister/${encodeURIComponent(instance)}`).catch(() => {});
  // Give the gateway's next Consul answer time to drain this instance.
  setTimeout(() => server.close(() => process.exit(0)), Number(process.env.STOP_DELAY_MS ?? 2000)).unref();
  setTimeout(() => process.exit(0), 10_000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

// `switchyard demo` (npm start): four demo upstreams on loopback — blue (v1) and green
// (v2), two endpoints each — a gateway in front of them, from a config file the demo
// writes so that it can be edited and re-read with SIGHUP, and a built-in client that
// sends steady traffic through the gateway (so rollouts have something to judge and the
// dashboard moves). Green can be made bad (--green-errors, --green-latency) to watch a
// rollout roll back by itself.

import http from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { startGateway } from './serve.js';

export interface DemoUpstream {
  server: http.Server;
  port: number;
  version: string;
}

/** How a demo version misbehaves: a share of 500s and a delay before each answer. */
export interface Faults {
  errorRate: number;
  latencyMs: number;
}

const NO_FAULTS: Faults = { errorRate: 0, latencyMs: 0 };

/** A small upstream that says which version and endpoint answered. Health probes are
 * always answered at once: a faulty version is up, just bad at its job. */
export function demoUpstream(version: string, index: number, faults: Faults = NO_FAULTS): Promise<DemoUpstream> {
  const server = http.createServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok');
      return;
    }
    const answer = (): void => {
      if (res.destroyed) return;
      const port = (server.address() as AddressInfo).port;
      if (Math.random() < faults.errorRate) {
        res.writeHead(500, { 'content-type': 'application/json', 'x-served-by': `${version}-${index}` });
        res.end(JSON.stringify({ version, endpoint: `127.0.0.1:${port}`, error: 'injected by --green-errors' }) + '\n');
        return;
      }
      const body = JSON.stringify({ version, endpoint: `127.0.0.1:${port}`, instance: index, path: req.url, requestId: req.headers['x-request-id'] });
      res.writeHead(200, { 'content-type': 'application/json', 'x-served-by': `${version}-${index}` });
      res.end(body + '\n');
    };
    if (faults.latencyMs > 0) setTimeout(answer, faults.latencyMs);
    else answer();
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve({ server, version, port: (server.address() as AddressInfo).port }));
  });
}

export interface DemoOptions {
  port: number;
  adminPort: number;
  controlPort: number;
  /** Requests per second of the built-in client; 0 = no traffic. */
  rate: number;
  green: Faults;
}

class DemoUsage extends Error {}

/** "20%" or "0.2" -> 0.2. */
function parseShare(flag: string, v: string): number {
  const m = /^(\d+(?:\.\d+)?)(%?)$/.exec(v);
  const n = m === null ? NaN : Number(m[1]) / (m[2] === '%' ? 100 : 1);
  if (!(n >= 0 && n <= 1)) throw new DemoUsage(`${flag} must be a share such as 20% or 0.2`);
  return n;
}

/** "300ms", "1s" or "300" (ms) -> milliseconds. */
function parseMs(flag: string, v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(v);
  if (m === null) throw new DemoUsage(`${flag} must be a duration such as 300ms or 1s`);
  const n = Number(m[1]) * (m[2] === 's' ? 1000 : 1);
  if (n > 60_000) throw new DemoUsage(`${flag} must be at most 60s`);
  return n;
}

function parsePort(flag: string, v: string | undefined): number | undefined {
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new DemoUsage(`${flag} must be a port from 0 to 65535`);
  return n;
}

/** The demo's flags, over SWITCHYARD_DEMO_PORT, SWITCHYARD_DEMO_ADMIN_PORT and
 * SWITCHYARD_DEMO_CONTROL_PORT, over the defaults (8080, 9901, 9090, 20 req/s). */
export function parseDemoArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): DemoOptions {
  const o: DemoOptions = {
    port: parsePort('SWITCHYARD_DEMO_PORT', env.SWITCHYARD_DEMO_PORT) ?? 8080,
    adminPort: parsePort('SWITCHYARD_DEMO_ADMIN_PORT', env.SWITCHYARD_DEMO_ADMIN_PORT) ?? 9901,
    controlPort: parsePort('SWITCHYARD_DEMO_CONTROL_PORT', env.SWITCHYARD_DEMO_CONTROL_PORT) ?? 9090,
    rate: 20,
    green: { ...NO_FAULTS },
  };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].startsWith('--') && argv[i].includes('=') ? [argv[i].slice(0, argv[i].indexOf('=')), argv[i].slice(argv[i].indexOf('=') + 1)] : [argv[i], undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined || v === '') throw new DemoUsage(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--port': o.port = parsePort(flag, value()) as number; break;
      case '--admin-port': o.adminPort = parsePort(flag, value()) as number; break;
      case '--control-port': o.controlPort = parsePort(flag, value()) as number; break;
      case '--rate': {
        const n = Number(value());
        if (!(Number.isFinite(n) && n >= 0 && n <= 10_000)) throw new DemoUsage('--rate must be a number of requests per second from 0 to 10000');
        o.rate = n;
        break;
      }
      case '--no-traffic': o.rate = 0; break;
      case '--green-errors': o.green.errorRate = parseShare(flag, value()); break;
      case '--green-latency': o.green.latencyMs = parseMs(flag, value()); break;
      default: throw new DemoUsage(`unknown demo flag ${argv[i]}`);
    }
  }
  return o;
}

/**
 * The built-in client: `rate` requests a second to url, spread evenly, over a few
 * keep-alive connections, as anonymous users (no sticky key), so each request is split
 * by the weights. Every 5 seconds it reports what it saw, per version.
 */
export function startTraffic(url: string, rate: number, report: (line: string) => void): { stop(): void } {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  let seen: Record<string, number> = {};
  let errors = 0;
  let sent = 0;
  const one = (): void => {
    sent++;
    const req = http.get(url, { agent }, (res) => {
      const by = String(res.headers['x-served-by'] ?? '').split('-')[0] || 'gateway';
      seen[by] = (seen[by] ?? 0) + 1;
      if ((res.statusCode ?? 0) >= 500) errors++;
      res.resume();
    });
    req.setTimeout(10_000, () => req.destroy());
    req.on('error', () => errors++);
  };
  // One tick every 1000/rate ms (at least 10 ms): several requests per tick above 100/s.
  const tickMs = Math.max(10, 1000 / rate);
  const perTick = rate * (tickMs / 1000);
  let owed = 0;
  const tick = setInterval(() => {
    owed += perTick;
    while (owed >= 1) {
      owed--;
      one();
    }
  }, tickMs);
  const summary = setInterval(() => {
    const parts = Object.entries(seen).sort().map(([v, n]) => `${v} ${n}`);
    report(`traffic: ${sent} sent in 5s (${parts.join(', ') || 'no answers'}; ${errors} errors)`);
    seen = {};
    errors = 0;
    sent = 0;
  }, 5000);
  return {
    stop() {
      clearInterval(tick);
      clearInterval(summary);
      agent.destroy();
    },
  };
}

export async function runDemo(argv: string[]): Promise<void> {
  let opts: DemoOptions;
  try {
    opts = parseDemoArgs(argv);
  } catch (err) {
    if (!(err instanceof DemoUsage)) throw err;
    process.stderr.write(`switchyard demo: ${err.message}\nusage: switchyard demo [--port 8080] [--admin-port 9901] [--control-port 9090] [--rate 20] [--no-traffic] [--green-errors 20%] [--green-latency 300ms]\n`);
    process.exit(2);
  }
  const { port, adminPort, controlPort } = opts;
  const ups = await Promise.all([demoUpstream('blue', 1), demoUpstream('blue', 2), demoUpstream('green', 1, opts.green), demoUpstream('green', 2, opts.green)]);
  const ep = (v: string) => ups.filter((u) => u.version === v).map((u) => `127.0.0.1:${u.port}`);
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-demo-'));
  const file = join(dir, 'switchyard.yaml');
  writeFileSync(
    file,
    `# Written by \`switchyard demo\`. Edit the weights and send SIGHUP to re-read it.
gateway:
  listen: 127.0.0.1:${port}
  # With the built-in traffic on, the demo prints a summary every 5 s instead.
  accessLog: ${opts.rate === 0}
admin:
  listen: 127.0.0.1:${adminPort}
control:
  # loopback and no tokens: the local user may steer it (never expose it like this)
  listen: 127.0.0.1:${controlPort}
state:
  store: memory
services:
  shop:
    routes:
      - { path: / }
    versions:
      blue:
        weight: 100
        endpoints: [${ep('blue').join(', ')}]
      green:
        weight: 0
        endpoints: [${ep('green').join(', ')}]
    sticky: { cookie: switchyard_shop, header: x-user-id }
    override: { header: x-switchyard-version }
    healthCheck: { path: /healthz, interval: 2s, timeout: 1s }
shutdown: { drainDelay: 0s, grace: 5s }
`,
  );
  let traffic: { stop(): void } | undefined;
  const closeUpstreams = (): void => {
    traffic?.stop();
    for (const u of ups) {
      u.server.close();
      u.server.closeAllConnections();
    }
  };
  let gw;
  try {
    gw = await startGateway({
      configFile: file,
      signals: true,
      onExit: (code) => {
        closeUpstreams();
        process.exit(code);
      },
    });
  } catch (err) {
    closeUpstreams();
    throw err;
  }
  const url = `http://127.0.0.1:${gw.addresses.gateway.port}`;
  // The client stops as soon as shutdown starts, so the drain is not kept busy by it.
  const stopTraffic = (): void => traffic?.stop();
  process.on('SIGTERM', stopTraffic);
  process.on('SIGINT', stopTraffic);
  const admin = `http://127.0.0.1:${gw.addresses.admin.port}`;
  const control = `http://127.0.0.1:${gw.addresses.control.port}`;
  const cli = 'node dist/bin/switchyard.js';
  const env = gw.addresses.control.port === 9090 ? '' : `SWITCHYARD_URL=${control} `;
  const faults = [
    opts.green.errorRate > 0 ? `${Math.round(opts.green.errorRate * 1000) / 10}% errors` : '',
    opts.green.latencyMs > 0 ? `+${opts.green.latencyMs}ms latency` : '',
  ].filter(Boolean).join(', ');
  const trafficLine = opts.rate > 0 ? `${opts.rate} req/s from the built-in client (--rate N, --no-traffic)` : 'none (--no-traffic): send your own';
  process.stderr.write(`
Switchyard demo is running.

  gateway   ${url}        (service "shop": blue = 100, green = 0)
  traffic   ${trafficLine}
  green     ${faults === '' ? 'healthy' : `bad on purpose: ${faults}`}
  admin     ${admin}/live  ${admin}/ready
  control   ${control}/v1/services   (no token: loopback only)
  dashboard ${control}/ui             (leave the token empty)
  config    ${file}
  upstreams blue  ${ep('blue').join('  ')}
            green ${ep('green').join('  ')}

Try:
  curl -s ${url}/                                         # blue answers
  curl -s -H 'x-switchyard-version: green' ${url}/        # a tester reaches green at weight 0
  curl -s -H 'x-switchyard-version: purple' ${url}/       # unknown version: 400 JSON
  curl -s -H 'x-user-id: alice' ${url}/                   # sticky: alice keeps her version

Steer it from another terminal (the control API and CLI):
  ${env}${cli} status shop                     # weights, endpoints, health, in flight
  ${env}${cli} weights shop blue=80 green=20   # a canary
  for i in $(seq 20); do curl -s ${url}/ | grep -o '"version":"[a-z]*"'; done | sort | uniq -c
  ${env}${cli} cutover shop --to green --wait  # all to green, returns once blue is drained
  ${env}${cli} rollback shop                   # back to the weights before
  ${env}${cli} rollout shop --to green --steps 10,50,100 --interval 10s --min-requests 5 --wait
                                               # succeeds; with --green-errors 20% it rolls back by itself
                                               # (with --green-latency 300ms, add --max-p99 200ms)
  ${env}${cli} events                          # the audit log

Or edit ${file} and re-read it:  kill -HUP ${process.pid}
  (weights the control API has set win over the file for that service)

Stop with Ctrl-C (a graceful drain; a second Ctrl-C exits at once).
`);
  if (opts.rate > 0) traffic = startTraffic(`${url}/`, opts.rate, (line) => process.stderr.write(`${line}\n`));
}

// `switchyard demo` (npm start): four demo upstreams on loopback — blue (v1) and green
// (v2), two endpoints each — and a gateway in front of them, from a config file the
// demo writes so that it can be edited and re-read with SIGHUP.

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

/** A small upstream that says which version and endpoint answered. */
export function demoUpstream(version: string, index: number): Promise<DemoUpstream> {
  const server = http.createServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok');
      return;
    }
    const port = (server.address() as AddressInfo).port;
    const body = JSON.stringify({ version, endpoint: `127.0.0.1:${port}`, instance: index, path: req.url, requestId: req.headers['x-request-id'] });
    res.writeHead(200, { 'content-type': 'application/json', 'x-served-by': `${version}-${index}` });
    res.end(body + '\n');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve({ server, version, port: (server.address() as AddressInfo).port }));
  });
}

export async function runDemo(argv: string[]): Promise<void> {
  const port = Number(argv[argv.indexOf('--port') + 1] ?? '') || Number(process.env.SWITCHYARD_DEMO_PORT ?? '') || 8080;
  const adminPort = Number(process.env.SWITCHYARD_DEMO_ADMIN_PORT ?? '') || 9901;
  const controlPort = Number(process.env.SWITCHYARD_DEMO_CONTROL_PORT ?? '') || 9090;
  const ups = await Promise.all([demoUpstream('blue', 1), demoUpstream('blue', 2), demoUpstream('green', 1), demoUpstream('green', 2)]);
  const ep = (v: string) => ups.filter((u) => u.version === v).map((u) => `127.0.0.1:${u.port}`);
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-demo-'));
  const file = join(dir, 'switchyard.yaml');
  writeFileSync(
    file,
    `# Written by \`switchyard demo\`. Edit the weights and send SIGHUP to re-read it.
gateway:
  listen: 127.0.0.1:${port}
  accessLog: true
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
  const closeUpstreams = (): void => {
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
  const admin = `http://127.0.0.1:${gw.addresses.admin.port}`;
  const control = `http://127.0.0.1:${gw.addresses.control.port}`;
  const cli = 'node dist/bin/switchyard.js';
  const env = gw.addresses.control.port === 9090 ? '' : `SWITCHYARD_URL=${control} `;
  process.stderr.write(`
Switchyard demo is running.

  gateway   ${url}        (service "shop": blue = 100, green = 0)
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
                                               # (send traffic meanwhile, or it rolls back: no traffic)
  ${env}${cli} events                          # the audit log

Or edit ${file} and re-read it:  kill -HUP ${process.pid}
  (weights the control API has set win over the file for that service)

Stop with Ctrl-C (a graceful drain; a second Ctrl-C exits at once).
`);
}

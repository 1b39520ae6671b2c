// What SECURITY.md promises, checked on real gateway processes: control tokens rotate
// on SIGHUP (add the new one, move clients, remove the old one) without a restart; a
// reload cannot drop every token while the API listens beyond loopback; and the logs —
// access log on, debug level, refused requests, failed logins, reloads — never carry a
// token, a request or response body, a cookie or an Authorization header.

import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { stringify } from 'yaml';
import { shopConfig, startProcess, startUpstream, waitFor, type GatewayProcess, type Upstream } from './helpers.js';

const OLD = 'old-token-5f2b9c1e7a4d8e3f';
const NEW = 'new-token-9a8b7c6d5e4f3a2b';

async function status(base: string, token: string | null, method = 'GET', path = '/v1/services', body?: unknown): Promise<number> {
  const headers: Record<string, string> = token === null ? {} : { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await request(`${base}${path}`, { method: method as 'GET', headers, body: body === undefined ? undefined : JSON.stringify(body) });
  await res.body.text();
  return res.statusCode;
}

describe('security promises', () => {
  const procs: GatewayProcess[] = [];
  const ups: Upstream[] = [];

  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop('SIGKILL')));
    await Promise.all(ups.map((u) => u.close()));
  });

  it('token rotation on SIGHUP: add the new token, roll the clients, remove the old one; names are logged, values never', async () => {
    const up = await startUpstream('blue');
    ups.push(up);
    const cfg = (tokens: { name: string; token: string; scopes: string[] }[]): Record<string, unknown> => ({
      ...shopConfig({ blue: { weight: 1, endpoints: [up.address] } }, {}, { control: { listen: '127.0.0.1:0', tokens } }),
      log: { level: 'info' },
    });
    const g = await startProcess(cfg([{ name: 'ci-2025', token: OLD, scopes: ['read', 'deploy'] }]));
    procs.push(g);
    expect(await status(g.controlUrl, OLD)).toBe(200);
    expect(await status(g.controlUrl, NEW)).toBe(401);

    // 1. Add the new token next to the old one.
    writeFileSync(g.file, stringify(cfg([{ name: 'ci-2025', token: OLD, scopes: ['read', 'deploy'] }, { name: 'ci-2026', token: NEW, scopes: ['read', 'deploy'] }])));
    g.proc.kill('SIGHUP');
    await waitFor(async () => (await status(g.controlUrl, NEW)) === 200, { message: 'the new token works after SIGHUP' });
    expect(await status(g.controlUrl, OLD)).toBe(200);
    // 2. Clients move to the new token (a write with it is recorded under its name).
    expect(await status(g.controlUrl, NEW, 'PUT', '/v1/services/shop/weights', { weights: { blue: 2 } })).toBe(200);
    // 3. Remove the old one.
    writeFileSync(g.file, stringify(cfg([{ name: 'ci-2026', token: NEW, scopes: ['read', 'deploy'] }])));
    g.proc.kill('SIGHUP');
    await waitFor(async () => (await status(g.controlUrl, OLD)) === 401, { message: 'the old token is refused after SIGHUP' });
    expect(await status(g.controlUrl, NEW)).toBe(200);

    // The log line comes through the process's stdout, after the change took effect.
    const changes = await waitFor(() => {
      const c = g.logs.filter((l) => l.msg === 'control tokens changed (names only)');
      return c.length === 2 && c;
    }, { message: 'both token changes logged' });
    expect(changes.map((l) => [l.added, l.removed])).toEqual([
      [['ci-2026'], []],
      [[], ['ci-2025']],
    ]);
    expect(g.logs.some((l) => l.msg === 'control change' && l.actor === 'ci-2026')).toBe(true);
    const all = JSON.stringify(g.logs) + g.stderr;
    expect(all).not.toContain(OLD);
    expect(all).not.toContain(NEW);
  });

  it('a reload cannot leave a non-loopback control API without tokens: the running tokens stay', async () => {
    const up = await startUpstream('blue');
    ups.push(up);
    const base = shopConfig({ blue: { weight: 1, endpoints: [up.address] } });
    const g = await startProcess({ ...base, log: { level: 'info' }, control: { listen: '0.0.0.0:0', tokens: [{ name: 'ops', token: OLD, scopes: ['admin'] }] } });
    procs.push(g);
    expect(await status(g.controlUrl, null)).toBe(401);
    // A config that validates on its own (loopback address, so no token needed) but
    // cannot move the running listener off 0.0.0.0.
    writeFileSync(g.file, stringify({ ...base, log: { level: 'info' }, control: { listen: '127.0.0.1:0' } }));
    g.proc.kill('SIGHUP');
    await waitFor(() => g.logs.some((l) => String(l.msg).startsWith('control.tokens: the reloaded config has no token')), { message: 'the refusal is logged' });
    expect(await status(g.controlUrl, null)).toBe(401);
    expect(await status(g.controlUrl, OLD)).toBe(200);
  });

  it('logs never carry tokens, bodies, cookies or Authorization headers, whatever happens', async () => {
    const SECRETS = {
      bearer: 'dp-bearer-SECRET-7d1c',
      cookie: 'session-SECRET-4e2a',
      setCookie: 'upstream-SECRET-9b3f',
      body: 'request-body-SECRET-1a5e',
      respBody: 'response-body-SECRET-6c0d',
      badToken: 'guess-SECRET-8f7e6d5c4b3a',
      token: 'control-SECRET-0a1b2c3d4e5f',
    };
    const up = await startUpstream('blue', (req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(req.url === '/fail' ? 500 : 200, { 'set-cookie': `sid=${SECRETS.setCookie}`, 'content-type': 'text/plain' });
        res.end(SECRETS.respBody);
      });
    });
    ups.push(up);
    // As YAML text: startProcess would set log.level info on an object config.
    const g = await startProcess(stringify({
      ...shopConfig({ blue: { weight: 1, endpoints: [up.address, '127.0.0.1:1'] } }, { retries: { attempts: 0 } }, { gateway: { accessLog: true, maxBodySize: '1kb' }, control: { listen: '127.0.0.1:0', tokens: [{ name: 'ci', token: SECRETS.token, scopes: ['admin'] }], authRateLimit: { failures: 3, window: '2s' } } }),
      log: { level: 'debug' },
    }));
    procs.push(g);
    const secretHeaders = { authorization: `Bearer ${SECRETS.bearer}`, cookie: `sid=${SECRETS.cookie}`, 'proxy-authorization': `Basic ${SECRETS.bearer}` };
    // Data plane: successes, upstream 500s, a dead endpoint (502, logged as a gateway
    // error), a body over the limit (413), a malformed request (debug log).
    for (let i = 0; i < 20; i++) {
      const r = await request(`${g.url}/${i % 4 === 0 ? 'fail' : 'ok'}`, { method: 'POST', headers: { ...secretHeaders, 'content-type': 'text/plain' }, body: SECRETS.body });
      await r.body.text();
    }
    const big = await request(`${g.url}/big`, { method: 'POST', headers: secretHeaders, body: `${SECRETS.body}${'x'.repeat(2000)}` });
    expect(big.statusCode).toBe(413);
    await big.body.text();
    await new Promise<void>((resolve) => {
      const s = connect(Number(new URL(g.url).port), '127.0.0.1', () => s.write(`POST / HTTP/1.1\r\nHost: a\r\nCookie: sid=${SECRETS.cookie}\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n${SECRETS.body}`));
      s.on('data', () => {});
      s.on('close', () => resolve());
      s.on('error', () => resolve());
    });
    // Control: failed logins (up to the rate limit), a good one, a refused reload.
    for (let i = 0; i < 5; i++) await status(g.controlUrl, SECRETS.badToken);
    await waitFor(async () => (await status(g.controlUrl, SECRETS.token)) === 200, { timeout: 15_000, interval: 500 });
    writeFileSync(g.file, `control:\n  tokens:\n    - { name: ci, token: ${SECRETS.token}, scopes: [nope] }\nservices: {}\n`);
    g.proc.kill('SIGHUP');
    await waitFor(() => g.logs.some((l) => l.msg === 'config reload refused; the running config stays'));
    // The logs were written (access log, gateway errors, refusals) …
    expect(g.logs.filter((l) => l.msg === 'request').length).toBeGreaterThan(10);
    expect(g.logs.some((l) => l.msg === 'gateway error')).toBe(true);
    expect(g.logs.some((l) => l.msg === 'malformed request refused')).toBe(true);
    expect(g.logs.some((l) => String(l.msg).startsWith('control API: too many failed authentications'))).toBe(true);
    // … and none of them carries a secret.
    const all = JSON.stringify(g.logs) + g.stderr;
    for (const [what, secret] of Object.entries(SECRETS)) expect(all.includes(secret), `${what} in the logs`).toBe(false);
    expect(all.toLowerCase()).not.toContain('authorization');
  });
});

// JSON logs of a real gateway process: every line about a request carries its request
// id; access-log sampling keeps errors; the level comes from the config.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { spawn } from 'node:child_process';
import { CLI, shopConfig, startProcess, startUpstream, waitFor, writeConfig, type Upstream, deadAddress, fixedPort } from './helpers.js';

describe('logs', () => {
  let blue: Upstream;
  beforeAll(async () => {
    blue = await startUpstream('blue');
  });
  afterAll(async () => {
    await blue.close();
  });

  it('access log: one JSON line per request with the request id the client saw', async () => {
    const p = await startProcess(shopConfig({ blue: { weight: 1, endpoints: [blue.address] } }, {}, { gateway: { listen: '127.0.0.1:0', accessLog: true } }));
    try {
      const ids: string[] = [];
      for (let i = 0; i < 20; i++) {
        const r = await request(`${p.url}/item/${i}`, { headers: i % 2 ? { 'x-request-id': `client-${i}` } : {} });
        await r.body.dump();
        ids.push(String(r.headers['x-request-id']));
      }
      const lines = await waitFor(() => {
        const l = p.logs.filter((o) => o.msg === 'request');
        return l.length >= 20 ? l : undefined;
      });
      expect(lines.map((l) => l.reqId)).toEqual(ids);
      expect(ids.filter((id) => id.startsWith('client-'))).toHaveLength(10);
      for (const l of lines) {
        expect(l).toMatchObject({ status: 200, service: 'shop', version: 'blue', method: 'GET' });
        expect(typeof l.ms).toBe('number');
      }
    } finally {
      await p.stop('SIGKILL');
    }
  });

  it('sampling 0 drops successful requests but keeps every error, and gateway errors carry the request id', async () => {
    const dead = await deadAddress();
    const p = await startProcess({
      ...shopConfig({ blue: { weight: 1, endpoints: [blue.address] } }, {}, { gateway: { listen: '127.0.0.1:0', accessLog: true, accessLogSample: 0 } }),
      services: {
        shop: { routes: [{ path: '/' }], versions: { blue: { weight: 1, endpoints: [blue.address] } } },
        gone: { routes: [{ path: '/gone' }], versions: { v1: { weight: 1, endpoints: [dead] } }, retries: { attempts: 0 } },
      },
    });
    try {
      for (let i = 0; i < 30; i++) await (await request(`${p.url}/ok`)).body.dump();
      const failed = await request(`${p.url}/gone`, { headers: { 'x-request-id': 'failing-one' } });
      await failed.body.dump();
      expect(failed.statusCode).toBe(502);
      await waitFor(() => p.logs.some((o) => o.msg === 'request' && o.reqId === 'failing-one'));
      const access = p.logs.filter((o) => o.msg === 'request');
      expect(access).toHaveLength(1);
      expect(access[0]).toMatchObject({ status: 502, service: 'gone', reqId: 'failing-one' });
      const gwErr = p.logs.find((o) => o.msg === 'gateway error');
      expect(gwErr?.reqId).toBe('failing-one');
    } finally {
      await p.stop('SIGKILL');
    }
  });

  it('log level from the config: at warn, no info line (not even access lines) is written', async () => {
    const port = await fixedPort();
    const file = writeConfig({
      ...shopConfig({ blue: { weight: 1, endpoints: [blue.address] } }, {}, { gateway: { listen: `127.0.0.1:${port}`, accessLog: true } }),
      log: { level: 'warn' },
    });
    const proc = spawn(process.execPath, [CLI, 'serve', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    try {
      const r = await waitFor(async () => {
        const res = await request(`http://127.0.0.1:${port}/`);
        await res.body.dump();
        return res.statusCode === 200 ? res : undefined;
      });
      expect(r.statusCode).toBe(200);
      for (let i = 0; i < 10; i++) await (await request(`http://127.0.0.1:${port}/`)).body.dump();
      proc.kill('SIGTERM');
      await new Promise((res) => proc.once('exit', res));
      const lines = out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { level: number });
      expect(lines.every((l) => l.level >= 40)).toBe(true);
    } finally {
      if (proc.exitCode === null) proc.kill('SIGKILL');
    }
  });
});

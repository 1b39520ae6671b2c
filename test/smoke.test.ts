import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { load, shopConfig, startInProcess, startProcess, startUpstream, type Upstream } from './helpers.js';

describe('smoke', () => {
  let blue: Upstream;
  let green: Upstream;
  beforeAll(async () => {
    blue = await startUpstream('blue');
    green = await startUpstream('green');
  });
  afterAll(async () => {
    await blue.close();
    await green.close();
  });

  it('in-process gateway routes by weight', async () => {
    const g = await startInProcess(shopConfig({ blue: { weight: 80, endpoints: [blue.address] }, green: { weight: 20, endpoints: [green.address] } }));
    try {
      const r = await load(`${g.url}/`, { concurrency: 16, count: 2000 });
      expect(r.failed).toBe(0);
      const share = (r.byName.blue ?? 0) / 2000;
      expect(share).toBeGreaterThan(0.76);
      expect(share).toBeLessThan(0.84);
    } finally {
      await g.close();
    }
  });

  it('real process serves and exits 0 on SIGTERM', async () => {
    const p = await startProcess(shopConfig({ blue: { weight: 1, endpoints: [blue.address] } }));
    // Which Node ran the gateway: the one vitest runs under (every spawn site uses
    // process.execPath). .ci/run sets SWITCHYARD_TEST_NODE_MAJOR for its Node 24 pass, so
    // a pass that silently ran another Node fails here.
    const node = p.logs.find((o) => o.msg === 'listening')?.node;
    console.log(`gateway process.version = ${String(node)} (vitest on ${process.version}, ${process.execPath})`);
    expect(node).toBe(process.version);
    const major = process.env.SWITCHYARD_TEST_NODE_MAJOR;
    if (major !== undefined && major !== '') expect(String(node).split('.')[0]).toBe(`v${major}`);
    const r = await load(`${p.url}/`, { concurrency: 4, count: 100 });
    expect(r.failed).toBe(0);
    expect(await p.stop('SIGTERM')).toBe(0);
  });
});

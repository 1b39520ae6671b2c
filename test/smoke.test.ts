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
    const r = await load(`${p.url}/`, { concurrency: 4, count: 100 });
    expect(r.failed).toBe(0);
    expect(await p.stop('SIGTERM')).toBe(0);
  });
});

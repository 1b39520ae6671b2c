// The client commands of the CLI as a user or a CI job runs them: a child process
// against a real gateway process, with SWITCHYARD_URL and SWITCHYARD_TOKEN. Exit codes
// (README "The CLI in CI"): 0 done · 1 failed or rolled back · 2 usage error or a request refused as
// invalid · 3 authentication or permission refused · 4 unreachable or --timeout passed.

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shopConfig, startProcess, startUpstream, type GatewayProcess, type Upstream } from './helpers.js';
import { api, controlTop, rollout, runCli, shop, TOKENS } from './control-helpers.js';

describe('switchyard client commands', () => {
  let blue: Upstream;
  let green: Upstream;
  let gw: GatewayProcess;
  let deadUrl: string;
  const cli = (args: string[], token: string | null = TOKENS.deploy) => runCli(args, { url: gw.controlUrl, token });

  beforeAll(async () => {
    blue = await startUpstream('blue');
    green = await startUpstream('green');
    gw = await startProcess(shopConfig({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } }, {}, controlTop()));
    // A port that nothing listens on.
    const s = http.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    deadUrl = `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
    await new Promise<void>((r) => s.close(() => r()));
  });
  afterAll(async () => {
    await gw?.stop('SIGTERM');
    await blue?.close();
    await green?.close();
  });

  it('exit 0 and parseable --json for status, weights, cutover, rollback and events', async () => {
    const st = await cli(['status']);
    expect(st.code, st.stderr).toBe(0);
    expect(st.stdout).toMatch(/^SERVICE\s+REVISION\s+WEIGHTS\s+ROLLOUT/);
    expect(st.stdout).toMatch(/shop\s+0\s+blue=100 green=0/);

    const sj = await cli(['status', 'shop', '--json'], TOKENS.read);
    expect(sj.code, sj.stderr).toBe(0);
    const sv = JSON.parse(sj.stdout);
    expect(sv).toMatchObject({ name: 'shop', weights: { blue: 100, green: 0 }, rollout: null });
    expect(sv.versions.blue.endpoints[0]).toMatchObject({ address: `http://${blue.address}`, state: 'healthy' });

    const all = await cli(['status', '--json'], TOKENS.read);
    expect(all.code).toBe(0);
    expect(JSON.parse(all.stdout).services.map((s: { name: string }) => s.name)).toEqual(['shop']);

    const w = await cli(['weights', 'shop', 'blue=3', 'green=1', '--json']);
    expect(w.code, w.stderr).toBe(0);
    const wj = JSON.parse(w.stdout);
    expect(wj.weights).toEqual({ blue: 3, green: 1 });
    expect((await shop(gw.controlUrl)).weights).toEqual({ blue: 3, green: 1 });
    expect(wj.revision).toBe((await shop(gw.controlUrl)).revision);

    const w2 = await cli(['weights', 'shop', 'blue=1', `--if-match=${wj.revision}`]);
    expect(w2.code, w2.stderr).toBe(0);
    expect(w2.stdout).toMatch(/shop: blue=1 green=1 \(revision \d+\)/);
    // A stale --if-match is refused and changes nothing.
    const stale = await cli(['weights', 'shop', 'blue=7', '--if-match', String(wj.revision)]);
    expect(stale.code).not.toBe(0);
    expect(stale.stderr).toMatch(/412 REVISION_MISMATCH/);
    expect((await shop(gw.controlUrl)).weights).toEqual({ blue: 1, green: 1 });

    const c = await cli(['cutover', 'shop', '--to', 'green', '--json']);
    expect(c.code, c.stderr).toBe(0);
    expect(JSON.parse(c.stdout)).toMatchObject({ weights: { blue: 0, green: 100 } });

    const rb = await cli(['rollback', 'shop', '--json']);
    expect(rb.code, rb.stderr).toBe(0);
    const rbj = JSON.parse(rb.stdout);
    expect(rbj.weights).toEqual({ blue: 1, green: 1 });
    expect((await shop(gw.controlUrl)).weights).toEqual({ blue: 1, green: 1 });

    const ev = await cli(['events', '--json'], TOKENS.read);
    expect(ev.code, ev.stderr).toBe(0);
    const events = JSON.parse(ev.stdout).events as { action: string; actor: string; revision: number }[];
    expect(events.map((e) => e.action)).toEqual(['weights', 'weights', 'cutover', 'rollback']);
    expect(events.every((e) => e.actor === 'deployer')).toBe(true);
    expect(events.at(-1)!.revision).toBe(rbj.revision);
    const plain = await cli(['events', '--since', String(events.length - 1)], TOKENS.read);
    expect(plain.code).toBe(0);
    expect(plain.stdout.trim().split('\n')).toHaveLength(1);
    expect(plain.stdout).toMatch(/\tdeployer\tshop\trollback\t/);
  });

  it('exit 2 on usage errors and on requests the gateway refuses as invalid, changing nothing', async () => {
    const before = await shop(gw.controlUrl);
    const cases: [string[], RegExp][] = [
      [['weights', 'shop', 'blue=1', '--bogus'], /unknown flag --bogus/],
      [['status', '--verbose'], /unknown flag --verbose/],
      [['weights', 'shop'], /weights takes SERVICE VERSION=WEIGHT/],
      [['weights', 'shop', 'blue=-1'], /expected VERSION=WEIGHT/],
      [['cutover', 'shop'], /--to/],
      [['cutover', 'shop', '--to', 'green', '--timeout', 'soon'], /--timeout must be a duration/],
      [['rollout', 'shop', '--to', 'green', '--steps', '5,x,100', '--interval', '1s'], /--steps/],
      [['rollout', 'shop', '--to', 'green', '--steps', '50,100'], /--interval/],
      [['frobnicate'], /unknown command frobnicate/],
      // The gateway says 400.
      [['weights', 'shop', 'purple=1'], /400 UNKNOWN_VERSION/],
      [['weights', 'shop', 'blue=0', 'green=0'], /400 INVALID_WEIGHTS/],
      [['weights', 'nope', 'blue=1'], /404 UNKNOWN_SERVICE/],
      [['rollout', 'shop', '--to', 'green', '--steps', '50,20,100', '--interval', '1s'], /400 INVALID_STEPS/],
      [['rollout', 'shop', '--to', 'green', '--steps', '10,50', '--interval', '1s'], /400 INVALID_STEPS/],
      [['cutover', 'shop', '--to', 'purple'], /400 UNKNOWN_VERSION/],
    ];
    for (const [args, msg] of cases) {
      const r = await cli(args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(msg);
      expect(r.stdout, args.join(' ')).toBe('');
    }
    const after = await shop(gw.controlUrl);
    expect(after.revision).toBe(before.revision);
    expect(after.weights).toEqual(before.weights);
  });

  it('exit 3 without a token, with a wrong one, and without the scope', async () => {
    const before = (await shop(gw.controlUrl)).revision;
    for (const [token, msg] of [
      [null, /401 UNAUTHORIZED/],
      ['a-wrong-token-of-some-length', /401 UNAUTHORIZED/],
      [TOKENS.read, /403 FORBIDDEN/],
    ] as const) {
      const r = await cli(['weights', 'shop', 'blue=5'], token);
      expect(r.code, `${token}: ${r.stderr}`).toBe(3);
      expect(r.stderr).toMatch(msg);
    }
    const s = await cli(['status'], 'a-wrong-token-of-some-length');
    expect(s.code).toBe(3);
    const a = await cli(['abort', 'shop'], TOKENS.read);
    expect(a.code).toBe(3);
    expect((await shop(gw.controlUrl)).revision).toBe(before);
  });

  it('exit 4 when the gateway is unreachable or --timeout passes', async () => {
    for (const args of [['status'], ['weights', 'shop', 'blue=1'], ['events', '--json']]) {
      const r = await runCli(args, { url: deadUrl });
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(4);
      expect(r.stderr).toMatch(/cannot reach the gateway/);
    }
    const bad = await runCli(['status'], { url: 'http://no-such-host.invalid:9' });
    expect(bad.code).toBe(4);

    // No traffic: the first step waits for requests, so --wait hits its --timeout.
    expect((await api(gw.controlUrl, 'PUT', '/v1/services/shop/weights', { body: { weights: { blue: 100, green: 0 } } })).status).toBe(200);
    const r = await cli(['rollout', 'shop', '--to', 'green', '--steps', '50,100', '--interval', '10s', '--wait', '--timeout', '1s']);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toMatch(/timeout/);
    expect(r.endedAt - r.startedAt).toBeLessThan(10_000);
    // The rollout keeps running on the gateway; the CLI stops it.
    expect((await rollout(gw.controlUrl)).state).toBe('running');
    const ab = await cli(['abort', 'shop', '--json']);
    expect(ab.code, ab.stderr).toBe(0);
    expect(JSON.parse(ab.stdout)).toMatchObject({ state: 'aborted', weights: { blue: 100, green: 0 } });
  });

  it('exit 1 when a rollout is rolled back (no traffic with --no-traffic fail)', async () => {
    const r = await cli(['rollout', 'shop', '--to', 'green', '--steps', '50,100', '--interval', '200ms', '--no-traffic', 'fail', '--wait', '--timeout', '30s', '--json']);
    expect(r.code, r.stderr).toBe(1);
    const j = JSON.parse(r.stdout);
    expect(j.state).toBe('rolled_back');
    expect(j.reason).toMatch(/no traffic/);
    expect(r.stderr).toMatch(/rollout rolled_back: no traffic/);
    expect((await shop(gw.controlUrl)).weights).toEqual({ blue: 100, green: 0 });
  });
});

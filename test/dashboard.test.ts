// The live dashboard (GET /ui on the control listener) in real headless Chromium, driven by
// playwright-core, against a real gateway process with tokens configured, real upstreams
// and traffic flowing. Also: the Grafana dashboard JSON parses, its PromQL passes
// `promtool check rules`, and every metric it names is exported on a live /metrics.

import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { request } from 'undici';
import { api as controlApi, type ApiResult } from './control-helpers.js';
import { ROOT, load, shopConfig, startProcess, startUpstream, type GatewayProcess, type LoadResult, type Upstream } from './helpers.js';

// The page's globals, as the functions handed to page.evaluate() see them in Chromium
// (this program is typechecked without the DOM library).
declare const sessionStorage: { getItem(key: string): string | null };
declare const localStorage: Record<string, string>;
interface HTMLElement {
  style: { width: string };
}

const DEPLOY = 'dash-deploy-token-0123456789abcdef';
const READ = 'dash-read-token-0123456789abcdefgh';
const CHROMIUM = process.env.SWITCHYARD_CHROMIUM ?? '/usr/bin/chromium';
const UI_DIR = join(ROOT, 'control/ui');
const WAIT = { timeout: 15_000, intervals: [100, 250, 500] };
const CSP = "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'";

function api(method: string, path: string, body?: unknown, token: string | null = DEPLOY): Promise<ApiResult> {
  return controlApi(gw.controlUrl, method, path, { body, token });
}

/** Answers after a few ms like a real service; green fails every 40th request (500). */
function handler(failEvery: number) {
  let n = 0;
  return (req: IncomingMessage, res: ServerResponse, up: Upstream): void => {
    req.resume();
    const fail = failEvery > 0 && ++n % failEvery === 0;
    setTimeout(() => {
      res.writeHead(fail ? 500 : 200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ name: up.name }));
    }, 1 + Math.floor(Math.random() * 8));
  };
}

let gw: GatewayProcess;
let browser: Browser | undefined;
const ups: Upstream[] = [];
let stopping = false;
let traffic: Promise<LoadResult> | undefined;
/** The deploy-token page shared by the connect, rollout and abort tests. */
let page: Page;
const problems: string[] = [];

async function newPage(): Promise<Page> {
  const ctx = await browser!.newContext({ viewport: { width: 1280, height: 900 } });
  const p = await ctx.newPage();
  // Fail fast when the page is broken (playwright's default is 30 s per action).
  p.setDefaultTimeout(15_000);
  p.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  p.on('console', (m) => {
    if (m.type() === 'error' && !/status of 40[13]/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  return p;
}

async function connect(p: Page, token: string): Promise<void> {
  await p.goto(`${gw.controlUrl}/ui`);
  await p.fill('#token', token);
  await p.click('#connect');
}

const card = (p: Page) => p.locator('section.card[data-service="shop"]');
const cell = (p: Page, version: string, col: string) => card(p).locator(`tr[data-version="${version}"] td.${col}`);

describe('dashboard', () => {
  beforeAll(async () => {
    if (!existsSync(join(ROOT, 'dist/control/ui.js'))) throw new Error('dist/control/ui.js missing: build first (npx tsc -p tsconfig.json)');
    for (const [name, fail] of [['blue-1', 0], ['blue-2', 0], ['green-1', 40], ['green-2', 40]] as const) ups.push(await startUpstream(name, handler(fail)));
    const tokens = [
      { name: 'deployer', token: DEPLOY, scopes: ['read', 'deploy'] },
      { name: 'viewer', token: READ, scopes: ['read'] },
    ];
    gw = await startProcess(
      shopConfig(
        { blue: { weight: 100, endpoints: [ups[0].address, ups[1].address] }, green: { weight: 0, endpoints: [ups[2].address, ups[3].address] } },
        {},
        { control: { listen: '127.0.0.1:0', tokens } },
      ),
    );
    const w = await api('PUT', '/v1/services/shop/weights', { weights: { blue: 90, green: 10 } });
    expect(w.status, w.text).toBe(200);
    traffic = load(gw.url, { concurrency: 4, ratePerWorker: 25, until: () => stopping });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
    });
  });

  afterAll(async () => {
    stopping = true;
    await traffic?.catch(() => undefined);
    await browser?.close().catch(() => undefined);
    await gw?.stop('SIGKILL');
    await Promise.all(ups.map((u) => u.close()));
  });

  it('serves the static page without a token, with a strict CSP, while data calls need one', async () => {
    let total = 0;
    for (const [path, type] of [
      ['/ui', 'text/html'],
      ['/ui/', 'text/html'],
      ['/ui/app.js', 'text/javascript'],
      ['/ui/app.css', 'text/css'],
    ] as const) {
      const r = await api('GET', path, undefined, null);
      expect(r.status, path).toBe(200);
      expect(String(r.headers['content-type']), path).toContain(type);
      expect(r.headers['content-security-policy'], path).toBe(CSP);
      expect(r.headers['x-content-type-options'], path).toBe('nosniff');
      expect(r.headers['cache-control'], path).toBe('no-store');
      if (path !== '/ui/') total += Buffer.byteLength(r.text);
    }
    expect(total).toBeLessThan(25 * 1024);
    // Served exactly as on disk (read once at registration).
    expect((await api('GET', '/ui/app.js', undefined, null)).text).toBe(readFileSync(join(UI_DIR, 'app.js'), 'utf8'));
    // No data without a token.
    const live = await api('GET', '/v1/live', undefined, null);
    expect(live.status).toBe(401);
    expect(live.json.error.code).toBe('UNAUTHORIZED');
    // The assets never interpolate data: no innerHTML/outerHTML/insertAdjacentHTML/document.write.
    expect(readFileSync(join(UI_DIR, 'app.js'), 'utf8')).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
  });

  it('connects with the token: service, weights 90/10, endpoint states and live requests/s', async () => {
    page = await newPage();
    await page.goto(`${gw.controlUrl}/ui`);
    await expect.poll(() => page.title(), WAIT).toBe('Switchyard');
    expect(await page.getAttribute('#token', 'type')).toBe('password');
    await page.fill('#token', DEPLOY);
    await page.click('#connect');

    await expect.poll(() => card(page).count(), WAIT).toBe(1);
    await expect.poll(() => page.textContent('#status'), WAIT).toBe('live');
    await expect.poll(() => cell(page, 'blue', 'weight').textContent(), WAIT).toBe('90');
    expect(await cell(page, 'green', 'weight').textContent()).toBe('10');
    expect(await cell(page, 'blue', 'share').textContent()).toContain('90.0%');
    expect(await cell(page, 'green', 'share').textContent()).toContain('10.0%');
    // The bar widths are the shares (set through CSSOM; the CSP allows no inline style).
    const width = (v: string) => cell(page, v, 'share').locator('.fill').evaluate((e) => (e as HTMLElement).style.width);
    expect(await width('blue')).toBe('90%');
    expect(await width('green')).toBe('10%');

    // Four endpoints, each with its state as text and as a colour class.
    const eps = card(page).locator('li.ep');
    await expect.poll(() => eps.count(), WAIT).toBe(4);
    for (let i = 0; i < 4; i++) {
      expect(await eps.nth(i).getAttribute('data-state')).toBe('healthy');
      expect(await eps.nth(i).locator('.badge').textContent()).toBe('healthy');
      expect(await eps.nth(i).locator('.badge').getAttribute('class')).toContain('st-healthy');
    }
    const ids = await eps.locator('.ep-id').allTextContents();
    for (const u of ups) expect(ids.join(' ')).toContain(String(u.port));

    // Traffic flows: requests/s becomes non-zero and keeps updating (one frame a second).
    await expect.poll(async () => Number(await cell(page, 'blue', 'rps').textContent()), WAIT).toBeGreaterThan(0);
    const p99 = await cell(page, 'blue', 'p99').textContent();
    expect(p99).toMatch(/ ms$/);
    const meta1 = await page.textContent('#meta');
    await expect.poll(() => page.textContent('#meta'), WAIT).not.toBe(meta1);
    expect(await card(page).locator('.rev').textContent()).toMatch(/^revision [1-9]/);
    expect(await card(page).locator('.f-state').textContent()).toBe('none');

    // The token is in sessionStorage only: not in the URL, not in localStorage, not left in the input.
    expect(await page.evaluate(() => sessionStorage.getItem('switchyard.token'))).toBe(DEPLOY);
    expect(await page.evaluate(() => JSON.stringify(localStorage))).not.toContain(DEPLOY);
    expect(page.url()).toBe(`${gw.controlUrl}/ui`);
    expect(page.url()).not.toContain(DEPLOY);
    expect(await page.inputValue('#token')).toBe('');

    // A reload in the same tab reconnects from sessionStorage.
    await page.reload();
    await expect.poll(() => cell(page, 'blue', 'weight').textContent(), WAIT).toBe('90');
    expect(page.url()).not.toContain(DEPLOY);
    expect(problems).toEqual([]);
  });

  it('shows a wrong or missing token as unauthorized and stops retrying', async () => {
    const p = await newPage();
    await connect(p, 'not-the-right-token-0123456789');
    await expect.poll(() => p.textContent('#status'), WAIT).toBe('unauthorized');
    expect(await p.isVisible('#alert')).toBe(true);
    const text = await p.textContent('#alert');
    expect(text).toContain('Unauthorized');
    expect(text).toContain('401 UNAUTHORIZED');
    expect(await card(p).count()).toBe(0);
    // The wrong token is never shown back or put in the URL.
    expect(text).not.toContain('not-the-right-token');
    expect(p.url()).not.toContain('not-the-right-token');

    // An empty token is only good without configured tokens: here it is refused too.
    await p.fill('#token', '');
    await p.click('#connect');
    await expect.poll(() => p.textContent('#alert'), WAIT).toContain('missing bearer token');
    await p.context().close();
  });

  it('with no tokens configured (loopback), an empty token connects', async () => {
    const open = await startProcess(shopConfig({ blue: { weight: 3, endpoints: [ups[0].address] }, green: { weight: 1, endpoints: [ups[2].address] } }));
    try {
      const p = await newPage();
      await p.goto(`${open.controlUrl}/ui`);
      await p.click('#connect');
      await expect.poll(() => card(p).count(), WAIT).toBe(1);
      await expect.poll(() => cell(p, 'blue', 'share').textContent(), WAIT).toContain('75.0%');
      expect(await cell(p, 'green', 'share').textContent()).toContain('25.0%');
      expect(await p.evaluate(() => sessionStorage.getItem('switchyard.token'))).toBe('');
      expect(await p.isVisible('#alert')).toBe(false);
      await p.context().close();
    } finally {
      await open.stop('SIGKILL');
    }
  });

  it('shows a running rollout with its step (screenshot with traffic flowing)', async () => {
    // A long interval: the rollout stays at its first step for the rest of the suite.
    const r = await api('POST', '/v1/services/shop/rollout', { to: 'green', steps: [25, 50, 100], interval: '60s' });
    expect(r.status, r.text).toBe(202);
    expect(r.json.state).toBe('running');

    await expect.poll(() => card(page).getAttribute('data-rollout'), WAIT).toBe('running');
    expect(await card(page).locator('.f-state').textContent()).toBe('running');
    expect(await card(page).locator('.f-step').textContent()).toBe('step 1/3 · 25% to green (baseline blue) · every 60s');
    expect(await card(page).locator('.f-steps .chip.cur').textContent()).toBe('25%');
    expect(await card(page).locator('.f-analysis').textContent()).toBe('none yet');
    expect(await card(page).locator('.f-started').textContent()).toContain('by deployer');
    await expect.poll(() => cell(page, 'green', 'share').textContent(), WAIT).toContain('25.0%');
    expect(await cell(page, 'green', 'weight').textContent()).toBe('25');
    expect(await cell(page, 'blue', 'weight').textContent()).toBe('75');
    expect(await card(page).locator('.act-pause').isEnabled()).toBe(true);
    expect(await card(page).locator('.act-promote').isEnabled()).toBe(true);
    expect(await card(page).locator('.act-abort').isEnabled()).toBe(true);
    expect(await card(page).locator('.act-resume').isEnabled()).toBe(false);
    expect(await card(page).locator('.act-rollback').isEnabled()).toBe(false);
    await expect.poll(async () => Number(await cell(page, 'green', 'rps').textContent()), WAIT).toBeGreaterThan(0);
    // Green fails one request in 40: its error rate shows, flagged above 1%.
    await expect.poll(() => cell(page, 'green', 'err').getAttribute('class'), WAIT).toContain('bad');

    // Let the requests/s trend collect a few seconds before the picture.
    const points = () => cell(page, 'blue', 'trend').locator('polyline').getAttribute('points');
    await expect.poll(async () => String(await points()).split(' ').length, WAIT).toBeGreaterThanOrEqual(8);
    mkdirSync(join(ROOT, 'test-output'), { recursive: true });
    const shot = join(ROOT, 'test-output/dashboard.png');
    await page.setViewportSize({ width: 1280, height: 640 });
    await page.screenshot({ path: shot, fullPage: true });
    await page.setViewportSize({ width: 1280, height: 900 });
    // The README's picture is refreshed on request only, so a test run leaves the tree clean.
    if (process.env.UPDATE_SCREENSHOT === '1') {
      mkdirSync(join(ROOT, 'docs'), { recursive: true });
      copyFileSync(shot, join(ROOT, 'docs/dashboard.png'));
    }
    expect(readFileSync(shot).subarray(1, 4).toString()).toBe('PNG');
  });

  it('shows an API error in the page when a read-only token steers the rollout', async () => {
    const p = await newPage();
    await connect(p, READ);
    await expect.poll(() => card(p).getAttribute('data-rollout'), WAIT).toBe('running');
    await card(p).locator('.act-pause').click();
    const err = card(p).locator('.card-error');
    await expect.poll(() => err.isVisible(), WAIT).toBe(true);
    expect(await err.textContent()).toBe('pause failed: 403 FORBIDDEN: token viewer lacks the deploy scope');
    expect((await api('GET', '/v1/services/shop/rollout')).json.state).toBe('running');
    await p.context().close();
  });

  it('abort: a dismissed confirmation changes nothing; a confirmed one aborts on the server and the page follows', async () => {
    const abort = card(page).locator('.act-abort');
    page.once('dialog', (d) => void d.dismiss());
    await abort.click();
    await new Promise((r) => setTimeout(r, 500));
    expect((await api('GET', '/v1/services/shop/rollout')).json.state).toBe('running');

    page.once('dialog', (d) => {
      expect(d.type()).toBe('confirm');
      void d.accept();
    });
    await abort.click();
    await expect.poll(async () => (await api('GET', '/v1/services/shop/rollout')).json.state, WAIT).toBe('aborted');
    await expect.poll(() => card(page).getAttribute('data-rollout'), WAIT).toBe('aborted');
    expect(await card(page).locator('.f-state').textContent()).toBe('aborted');
    expect(await card(page).locator('.f-reason').textContent()).toBe('aborted by deployer');
    expect(await page.textContent('#notice')).toContain('abort → rollout aborted');
    // The next frames of the stream carry the restored weights.
    await expect.poll(() => cell(page, 'green', 'weight').textContent(), WAIT).toBe('10');
    expect(await cell(page, 'blue', 'weight').textContent()).toBe('90');
    await expect.poll(() => abort.isEnabled(), WAIT).toBe(false);
    expect(await card(page).locator('.act-rollback').isEnabled()).toBe(true);
    expect(problems).toEqual([]);
  });

  it('shows the last analysis and the reason of a rollout the analysis rolled back; rollback works from the page', async () => {
    // Upstreams answer in 1–9 ms: a 1 ms p99 limit fails at the first interval.
    const r = await api('POST', '/v1/services/shop/rollout', { to: 'green', steps: [50, 100], interval: '1s', analysis: { maxP99: '1ms', minRequests: 5 } });
    expect(r.status, r.text).toBe(202);
    await expect.poll(() => card(page).getAttribute('data-rollout'), WAIT).toBe('rolled_back');
    expect(await card(page).locator('.f-state').textContent()).toBe('rolled back');
    expect(await card(page).locator('.f-reason').textContent()).toMatch(/^analysis failed at step 0 \(50%\): p99 latency of green [\d.]+ms > max 1ms$/);
    expect(await card(page).locator('.f-analysis .verdict').textContent()).toBe('fail');
    expect(await card(page).locator('.f-analysis').textContent()).toMatch(/green: \d+ req, errors [\d.]+%, p99 [\d.]+ ms · blue: \d+ req/);
    await expect.poll(() => cell(page, 'green', 'weight').textContent(), WAIT).toBe('10');

    // Rollback: the weights before the last change, as a new revision.
    const before = (await api('GET', '/v1/services/shop')).json.revision;
    page.once('dialog', (d) => void d.accept());
    await card(page).locator('.act-rollback').click();
    await expect.poll(() => page.textContent('#notice'), WAIT).toMatch(/^shop: rolled back to blue=\d+ green=\d+ \(revision \d+\)$/);
    expect((await api('GET', '/v1/services/shop')).json.revision).toBeGreaterThan(before);
    expect(await card(page).locator('.card-error').isVisible()).toBe(false);
    expect(problems).toEqual([]);
  });

  it('approval: the card shows awaiting approval with the last verdict per criterion (dry runs marked); Approve enters the step', async () => {
    // Green fails one request in 40: past a 0.1% error rate, but only as a dry run.
    const r = await api('POST', '/v1/services/shop/rollout', {
      to: 'green',
      steps: [50, 100],
      interval: '1s',
      approval: [1],
      // 80 requests: one of green's two upstreams has passed a 40th (a failure) in them.
      analysis: { maxErrorRate: 0.001, maxP99: '10s', minRequests: 80, noTrafficIntervals: 20, dryRun: ['maxErrorRate', 'maxErrorRateOverBaseline'] },
    });
    expect(r.status, r.text).toBe(202);
    await expect.poll(() => card(page).getAttribute('data-rollout'), { ...WAIT, timeout: 30_000 }).toBe('awaiting_approval');
    expect(await card(page).locator('.f-state').textContent()).toBe('awaiting approval');
    expect(await card(page).locator('.f-step').textContent()).toMatch(/^awaiting approval to enter step 2\/2 · 100% to green/);
    const row = (n: string) => card(page).locator(`.f-criteria tr[data-criterion="${n}"]`);
    expect(await row('maxErrorRate').getAttribute('data-verdict')).toBe('fail');
    expect(await row('maxErrorRate').getAttribute('data-dry-run')).toBe('true');
    expect(await row('maxErrorRate').locator('.cv').textContent()).toBe('fail dry run');
    expect(await row('maxErrorRate').locator('.cbound').textContent()).toBe('≤ 0.10%');
    expect(await row('maxP99').getAttribute('data-verdict')).toBe('pass');
    expect(await row('maxP99').getAttribute('data-dry-run')).toBeNull();
    expect(await row('maxP99').locator('.cbound').textContent()).toBe('≤ 10000 ms');
    expect(await row('minRequests').locator('.cbound').textContent()).toBe('≥ 80');
    const approve = card(page).locator('.act-approve');
    expect(await approve.isEnabled()).toBe(true);
    expect(await card(page).locator('.act-pause').isEnabled()).toBe(false);
    expect(await card(page).locator('.act-abort').isEnabled()).toBe(true);
    // The weights stay at the first step while it waits.
    expect((await api('GET', '/v1/services/shop')).json.weights).toEqual({ blue: 50, green: 50 });

    page.once('dialog', (d) => {
      expect(d.message()).toContain('Approve');
      void d.accept();
    });
    await approve.click();
    await expect.poll(async () => (await api('GET', '/v1/services/shop/rollout')).json.state, { ...WAIT, timeout: 30_000 }).toBe('succeeded');
    const done = (await api('GET', '/v1/services/shop/rollout')).json;
    expect(done.approved).toEqual([1]);
    await expect.poll(() => card(page).getAttribute('data-rollout'), WAIT).toBe('succeeded');
    expect(await approve.isEnabled()).toBe(false);
    await expect.poll(() => cell(page, 'green', 'weight').textContent(), WAIT).toBe('100');
    expect(problems).toEqual([]);
  });

  it('Grafana dashboard: valid JSON, a service variable, PromQL that parses, and only metrics /metrics exports', async () => {
    const file = join(ROOT, 'deploy/grafana/switchyard-dashboard.json');
    const dash = JSON.parse(readFileSync(file, 'utf8'));
    expect(dash.templating.list.map((v: { name: string }) => v.name)).toContain('service');
    const exprs: string[] = [];
    const walk = (ps: { targets?: { expr?: string }[]; panels?: unknown[] }[]): void => {
      for (const p of ps) {
        for (const t of p.targets ?? []) if (t.expr) exprs.push(t.expr);
        walk((p.panels ?? []) as never);
      }
    };
    walk(dash.panels);
    expect(exprs.length).toBeGreaterThan(10);
    const names = new Set(exprs.flatMap((e) => e.match(/switchyard_[a-z_]+/g) ?? []));
    const text = await (await request(`${gw.adminUrl}/metrics`)).body.text();
    const exported = new Set([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].flatMap((m) => (m[2] === 'histogram' ? [m[1], `${m[1]}_bucket`, `${m[1]}_sum`, `${m[1]}_count`] : [m[1]])));
    for (const n of names) expect(exported.has(n), `${n} is not exported on /metrics`).toBe(true);
    for (const n of ['switchyard_requests_total', 'switchyard_request_duration_seconds_bucket', 'switchyard_inflight_requests', 'switchyard_version_weight', 'switchyard_endpoints', 'switchyard_outlier_ejections_total', 'switchyard_upstream_errors_total', 'switchyard_retries_total', 'switchyard_rollout_state', 'switchyard_rollout_step_percent', 'switchyard_state_revision']) {
      expect(names.has(n), `the dashboard does not use ${n}`).toBe(true);
    }
    // Every per-service query is filtered by the template variable.
    for (const e of exprs) if (!e.includes('switchyard_state_revision')) expect(e, e).toContain('service=~"$service"');

    // promtool parses every expression (as recording rules), when it is installed.
    const promtool = await new Promise<boolean>((r) => execFile('promtool', ['--version'], (err) => r(err === null)));
    if (promtool) {
      const dir = mkdtempSync(join(tmpdir(), 'switchyard-grafana-'));
      const rules = join(dir, 'rules.yml');
      const lines = ['groups:', '  - name: dashboard', '    rules:'];
      exprs.forEach((e, i) => lines.push(`      - record: dashboard:expr_${i}`, `        expr: ${JSON.stringify(e.replaceAll('$__rate_interval', '1m').replaceAll('$service', '.*'))}`));
      writeFileSync(rules, `${lines.join('\n')}\n`);
      const out = await new Promise<{ code: number; out: string }>((r) =>
        execFile('promtool', ['check', 'rules', rules], (err, stdout, stderr) => r({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr })),
      );
      expect(out.code, out.out).toBe(0);
    }
  });
});

// Config validation: the loader (every problem as "key.path: message"), `switchyard
// check`, SIGHUP reloads on a real process (a bad file is refused and the running
// config stays), and `switchyard serve` refusing a bad file at start.

import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { ConfigError, loadConfigText } from '../config/load.js';
import { CLI, emptyLoadResult, load, shopConfig, startProcess, startUpstream, waitFor, writeConfig, type Upstream } from './helpers.js';

/** A valid service block, as YAML, indented under `services:`. */
const SHOP = `
  shop:
    routes: [{ path: / }]
    versions:
      blue: { weight: 100, endpoints: [127.0.0.1:9001] }
      green: { weight: 0, endpoints: [127.0.0.1:9002] }
`;

/** A valid config, with extra YAML added at the top level and under services.shop. */
function doc(opts: { top?: string; shop?: string; versions?: string } = {}): string {
  const versions = opts.versions ?? 'blue: { weight: 100, endpoints: [127.0.0.1:9001] }\n      green: { weight: 0, endpoints: [127.0.0.1:9002] }';
  return `gateway:
  listen: 127.0.0.1:8080
state: { store: memory }
${opts.top ?? ''}
services:
  shop:
    routes: [{ path: / }]
    versions:
      ${versions}
${(opts.shop ?? '')
  .split('\n')
  .filter((l) => l.trim() !== '')
  .map((l) => `    ${l}`)
  .join('\n')}
`;
}

/** The ConfigError's problems; fails the test if the text loads. */
function problemsOf(text: string, env: NodeJS.ProcessEnv = {}): string[] {
  let err: unknown;
  try {
    loadConfigText(text, env);
  } catch (e) {
    err = e;
  }
  expect(err, 'the config should have been refused').toBeInstanceOf(ConfigError);
  return (err as ConfigError).problems;
}

describe('config: the loader', () => {
  it('names an unknown key even when a __proto__ key sits inside it (found by fuzz-config, seed 1067870438)', () => {
    const problems = problemsOf('gateway:\n  listen: 127.0.0.1:8080\n  " ":\n    __proto__: false\nservices: {}\n');
    expect(problems).toContain('gateway. : unknown key');
    expect(problems).toContain('gateway. .__proto__: unknown key');
  });

  it('accepts the baseline config (so every refusal below is caused by its one change)', () => {
    const c = loadConfigText(doc(), {});
    expect(c.services.map((s) => s.name)).toEqual(['shop']);
    expect(c.services[0].versions.map((v) => [v.name, v.weight])).toEqual([
      ['blue', 100],
      ['green', 0],
    ]);
    expect(c.gateway.listen).toBe('127.0.0.1:8080');
  });

  // [name, config text, key path the problem must start with]
  const invalid: [string, string, string][] = [
    ['unknown top-level key', doc({ top: 'gatway: { listen: 127.0.0.1:1 }' }), 'gatway: '],
    ['unknown nested key', doc({ top: 'admin: { listen: 127.0.0.1:9901, lisen: 127.0.0.1:1 }' }), 'admin.lisen: '],
    ['unknown key in a version', doc({ versions: 'blue: { weight: 100, endpoints: [127.0.0.1:9001], wieght: 5 }' }), 'services.shop.versions.blue.wieght: '],
    ['wrong type (string for boolean)', doc().replace('listen: 127.0.0.1:8080', 'listen: 127.0.0.1:8080\n  accessLog: "yes"'), 'gateway.accessLog: '],
    ['wrong type (list for map)', doc({ shop: 'retries: [2]' }), 'services.shop.retries: '],
    ['duration with an unknown unit', doc({ top: 'shutdown: { drainDelay: 5 parsecs }' }), 'shutdown.drainDelay: '],
    ['duration without a unit', doc({ top: "shutdown: { grace: '10' }" }), 'shutdown.grace: '],
    ['duration as a bare number', doc({ shop: 'timeouts: { request: 10 }' }), 'services.shop.timeouts.request: '],
    ['listen address without a port', doc({ top: 'admin: { listen: localhost }' }), 'admin.listen: '],
    ['listen port out of range', doc({ top: 'control: { listen: "127.0.0.1:70000" }' }), 'control.listen: '],
    ['endpoint with port 0', doc({ versions: 'blue: { weight: 100, endpoints: [127.0.0.1:9001, "127.0.0.1:0"] }' }), 'services.shop.versions.blue.endpoints.1: '],
    ['endpoint that is not an address', doc({ versions: 'blue: { weight: 100, endpoints: ["ftp://x:21"] }' }), 'services.shop.versions.blue.endpoints.0: '],
    ['duplicate endpoint', doc({ versions: 'blue: { weight: 100, endpoints: [127.0.0.1:9001, 127.0.0.1:9001] }' }), 'services.shop.versions.blue.endpoints.1: '],
    ['negative weight', doc({ versions: 'blue: { weight: -1, endpoints: [127.0.0.1:9001] }\n      green: { weight: 1, endpoints: [127.0.0.1:9002] }' }), 'services.shop.versions.blue.weight: '],
    ['non-integer weight', doc({ versions: 'blue: { weight: 2.5, endpoints: [127.0.0.1:9001] }' }), 'services.shop.versions.blue.weight: '],
    ['weight as a percentage string', doc({ versions: 'blue: { weight: "100%", endpoints: [127.0.0.1:9001] }' }), 'services.shop.versions.blue.weight: '],
    ['all weights zero', doc({ versions: 'blue: { weight: 0, endpoints: [127.0.0.1:9001] }\n      green: { weight: 0, endpoints: [127.0.0.1:9002] }' }), 'services.shop.versions: '],
    ['missing services', 'gateway: { listen: 127.0.0.1:8080 }\n', 'services: '],
    ['missing versions', 'services:\n  shop:\n    routes: [{ path: / }]\n', 'services.shop.versions: '],
    ['empty versions', 'services:\n  shop:\n    routes: [{ path: / }]\n    versions: {}\n', 'services.shop.versions: '],
    ['missing routes', 'services:\n  shop:\n    versions:\n      blue: { weight: 1, endpoints: [127.0.0.1:9001] }\n', 'services.shop.routes: '],
    ['version without a source of endpoints', doc({ versions: 'blue: { weight: 100 }' }), 'services.shop.versions.blue: '],
    ['route path without a leading slash', doc().replace('routes: [{ path: / }]', 'routes: [{ path: shop }]'), 'services.shop.routes.0.path: '],
    ['route path with a query', doc().replace('routes: [{ path: / }]', 'routes: [{ path: "/", host: a.example }, { path: "/x?y=1" }]'), 'services.shop.routes.1.path: '],
    ['bad version name', doc({ versions: '"blue green": { weight: 100, endpoints: [127.0.0.1:9001] }' }), 'services.shop.versions.blue green: '],
    ['healthCheck threshold 0', doc({ shop: 'healthCheck: { path: /healthz, healthyThreshold: 0 }' }), 'services.shop.healthCheck.healthyThreshold: '],
    ['healthCheck threshold not an integer', doc({ shop: 'healthCheck: { unhealthyThreshold: many }' }), 'services.shop.healthCheck.unhealthyThreshold: '],
    ['healthCheck timeout > interval', doc({ shop: 'healthCheck: { interval: 1s, timeout: 1500ms }' }), 'services.shop.healthCheck.timeout: '],
    ['outlierDetection percent > 100', doc({ shop: 'outlierDetection: { maxEjectionPercent: 150 }' }), 'services.shop.outlierDetection.maxEjectionPercent: '],
    ['retries over the limit', doc({ shop: 'retries: { attempts: 9 }' }), 'services.shop.retries.attempts: '],
    ['unknown token scope', doc({ top: 'control:\n  tokens:\n    - { name: ci, token: 0123456789abcdef0123, scopes: [read, root] }' }), 'control.tokens.0.scopes.1: '],
    ['token too short', doc({ top: 'control:\n  tokens:\n    - { name: ci, token: short, scopes: [read] }' }), 'control.tokens.0.token: '],
    ['token without scopes', doc({ top: 'control:\n  tokens:\n    - { name: ci, token: 0123456789abcdef0123 }' }), 'control.tokens.0.scopes: '],
    ['unknown log level', doc({ top: 'log: { level: loud }' }), 'log.level: '],
    ['unknown state store', doc({ top: 'state: { store: disk }' }).replace('state: { store: memory }\n', ''), 'state.store: '],
    ['sticky with neither cookie nor header', doc({ shop: 'sticky: {}' }), 'services.shop.sticky: '],
  ];

  it('covers at least 12 distinct refusals', () => {
    expect(new Set(invalid.map(([name]) => name)).size).toBe(invalid.length);
    expect(invalid.length).toBeGreaterThanOrEqual(12);
  });

  it.each(invalid)('refuses %s', (_name, text, path) => {
    const problems = problemsOf(text);
    // The exact key path starts a line, followed by a message.
    const line = problems.find((p) => p.startsWith(path));
    expect(line, `no problem starts with "${path}" in ${JSON.stringify(problems)}`).toBeDefined();
    expect(line!.length).toBeGreaterThan(path.length);
    // One problem, one line: no embedded newlines.
    for (const p of problems) expect(p).not.toContain('\n');
  });

  it('reports several problems at once, one line per problem', () => {
    const text = `gateway:
  listen: nowhere
  bogus: 1
shutdown: { drainDelay: 5 parsecs }
services:
  shop:
    routes: [{ path: / }]
    versions:
      blue: { weight: -3, endpoints: [127.0.0.1:9001] }
      green: { weight: 1.5, endpoints: [127.0.0.1:9002] }
`;
    const problems = problemsOf(text);
    const expected = ['gateway.listen: ', 'gateway.bogus: ', 'shutdown.drainDelay: ', 'services.shop.versions.blue.weight: ', 'services.shop.versions.green.weight: '];
    for (const path of expected) expect(problems.filter((p) => p.startsWith(path)), path).toHaveLength(1);
    expect(problems).toHaveLength(expected.length);
    expect(new ConfigError(problems).message.split('\n')).toEqual(problems);
  });

  it('reports several semantic problems at once (after the schema passed)', () => {
    const text = `services:
  shop:
    routes: [{ path: / }, { path: / }]
    versions:
      blue: { weight: 0, endpoints: [127.0.0.1:9001, 127.0.0.1:9001] }
    healthCheck: { interval: 1s, timeout: 2s }
`;
    const problems = problemsOf(text);
    expect(problems.some((p) => p.startsWith('services.shop.routes.1: '))).toBe(true);
    expect(problems.some((p) => p.startsWith('services.shop.versions.blue.endpoints.1: '))).toBe(true);
    expect(problems.some((p) => p.startsWith('services.shop.versions: '))).toBe(true);
    expect(problems.some((p) => p.startsWith('services.shop.healthCheck.timeout: '))).toBe(true);
    expect(problems).toHaveLength(4);
  });

  it('interpolates ${VAR} and ${VAR:-default} in values', () => {
    const text = `gateway:
  listen: \${GW_HOST}:\${GW_PORT:-8181}
admin:
  listen: 127.0.0.1:\${ADMIN_PORT:-9911}
control:
  tokens:
    - { name: ci, token: "\${CI_TOKEN}", scopes: [read] }
state: { store: memory }
services:
${SHOP}`;
    const c = loadConfigText(text, { GW_HOST: '127.0.0.2', CI_TOKEN: 'tok-0123456789abcdef', ADMIN_PORT: '9999' });
    expect(c.gateway.listen).toBe('127.0.0.2:8181'); // default used
    expect(c.admin.listen).toBe('127.0.0.1:9999'); // set value wins over the default
    expect(c.control.tokens[0].token).toBe('tok-0123456789abcdef');
    // An empty variable counts as unset for ${VAR:-default}.
    const c2 = loadConfigText(text, { GW_HOST: 'localhost', CI_TOKEN: 'tok-0123456789abcdef', GW_PORT: '' });
    expect(c2.gateway.listen).toBe('localhost:8181');
  });

  it('an interpolated value is still validated', () => {
    const text = `gateway: { listen: "127.0.0.1:\${GW_PORT}" }\nservices:\n${SHOP}`;
    expect(loadConfigText(text, { GW_PORT: '8081' }).gateway.listen).toBe('127.0.0.1:8081');
    expect(problemsOf(text, { GW_PORT: '99999' })).toEqual([expect.stringMatching(/^gateway\.listen: /)]);
  });

  it('a value that is exactly one ${VAR} takes the type the schema expects there', () => {
    const text = [
      'gateway:',
      '  accessLog: ${ACCESS_LOG}',
      'services:',
      '  shop:',
      '    routes: [{ path: / }]',
      '    versions:',
      '      blue:',
      '        weight: ${BLUE_WEIGHT}',
      '        endpoints: ["127.0.0.1:9001"]',
      '      green:',
      '        weight: ${GREEN_WEIGHT:-0}',
      '        endpoints: ["127.0.0.1:9002"]',
      'control:',
      '  tokens:',
      '    - { name: ci, token: "${CI_TOKEN}", scopes: [deploy] }',
      '',
    ].join('\n');
    const c = loadConfigText(text, { ACCESS_LOG: 'true', BLUE_WEIGHT: '90', CI_TOKEN: '12345678901234567890' });
    expect(c.gateway.accessLog).toBe(true);
    expect(c.services[0].versions.map((v) => v.weight)).toEqual([90, 0]);
    // A token made of digits stays a string: the schema wants a string there.
    expect(c.control.tokens[0].token).toBe('12345678901234567890');
    // Text that is not a number is still refused at its key path.
    expect(problemsOf(text, { ACCESS_LOG: 'true', BLUE_WEIGHT: 'ninety', CI_TOKEN: '12345678901234567890' })).toEqual([
      'services.shop.versions.blue.weight: must be integer',
    ]);
    // Part of a string is never converted.
    expect(problemsOf(text.replace('${BLUE_WEIGHT}', '"9${BLUE_WEIGHT}"'), { ACCESS_LOG: 'true', BLUE_WEIGHT: '0', CI_TOKEN: '12345678901234567890' })).toEqual([
      'services.shop.versions.blue.weight: must be integer',
    ]);
  });

  it('interpolation never changes the structure of the document', () => {
    const text = `gateway: { listen: "127.0.0.1:8080" }\nadmin: { listen: "\${ADMIN}" }\nservices:\n${SHOP}`;
    // A value that would be YAML structure if pasted into the text stays one string.
    const problems = problemsOf(text, { ADMIN: '127.0.0.1:1\nbogus: 1' });
    expect(problems).toEqual([expect.stringMatching(/^admin\.listen: /)]);
  });

  it('an unset ${VAR} without default is an error naming the key path', () => {
    const text = `gateway: { listen: 127.0.0.1:8080 }
control:
  tokens:
    - { name: ci, token: "\${SWITCHYARD_TEST_UNSET_TOKEN}", scopes: [read] }
services:
${SHOP}`;
    const problems = problemsOf(text, {});
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^control\.tokens\.0\.token: /);
    expect(problems[0]).toContain('SWITCHYARD_TEST_UNSET_TOKEN');
    // The same text loads once the variable is set.
    expect(loadConfigText(text, { SWITCHYARD_TEST_UNSET_TOKEN: 'abcdefghijklmnop' }).control.tokens[0].token).toBe('abcdefghijklmnop');
  });

  it('names every unset variable, each with its own key path', () => {
    const text = `gateway: { listen: "\${NO_HOST}:8080" }\nadmin: { listen: "127.0.0.1:\${NO_PORT}" }\nservices:\n${SHOP}`;
    const problems = problemsOf(text, {});
    expect(problems).toEqual([expect.stringMatching(/^gateway\.listen: .*NO_HOST/), expect.stringMatching(/^admin\.listen: .*NO_PORT/)]);
  });

  it('refuses YAML that does not parse, and duplicate keys', () => {
    expect(problemsOf('services: [\n')[0]).toMatch(/^\(yaml\): /);
    expect(problemsOf(`services:\n${SHOP}\nservices:\n${SHOP}`)[0]).toMatch(/^\(yaml\): /);
  });
});

// ---- the CLI ----

function runCli(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('config: switchyard check', () => {
  const good = writeConfig(doc());
  const bad = writeConfig(
    doc({ top: 'shutdown: { drainDelay: 5 parsecs }', versions: 'blue: { weight: -1, endpoints: [127.0.0.1:9001] }\n      green: { weight: 1, endpoints: ["127.0.0.1:0"] }' }),
  );

  it('exits 0 on a valid config', () => {
    const r = runCli(['check', '--config', good]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('ok');
  });

  it('accepts --config=FILE too', () => {
    expect(runCli(['check', `--config=${good}`]).status).toBe(0);
  });

  it('exits 1 with one "path: message" line per problem', () => {
    const r = runCli(['check', '--config', bad]);
    expect(r.status).toBe(1);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(3);
    for (const l of lines) expect(l).toMatch(/^[A-Za-z0-9_.-]+: \S/);
    expect(lines.some((l) => l.startsWith('shutdown.drainDelay: '))).toBe(true);
    expect(lines.some((l) => l.startsWith('services.shop.versions.blue.weight: '))).toBe(true);
    expect(lines.some((l) => l.startsWith('services.shop.versions.green.endpoints.0: '))).toBe(true);
  });

  it('interpolates from the environment', () => {
    const f = writeConfig(doc({ top: 'control:\n  tokens:\n    - { name: ci, token: "${SY_CHECK_TOKEN}", scopes: [deploy] }' }));
    const unset = runCli(['check', '--config', f], { SY_CHECK_TOKEN: '' });
    expect(unset.status).toBe(1);
    expect(unset.stdout.trimEnd().split('\n')).toEqual([expect.stringMatching(/^control\.tokens\.0\.token: .*SY_CHECK_TOKEN/)]);
    expect(runCli(['check', '--config', f], { SY_CHECK_TOKEN: 'abcdefghijklmnopqrstuvwxyz' }).status).toBe(0);
  });

  it('exits 1 on a file that cannot be read', () => {
    const r = runCli(['check', '--config', '/nonexistent/switchyard.yaml']);
    expect(r.status).toBe(1);
    expect(r.stdout).toContain('/nonexistent/switchyard.yaml');
  });

  it.each([
    ['no --config', ['check']],
    ['--config without a file', ['check', '--config']],
    ['an unknown flag after --config', ['check', '--config', 'GOOD', '--verbose']],
    ['an unknown flag before --config', ['check', '--strict', '--config', 'GOOD']],
    ['a stray argument', ['check', 'GOOD']],
  ])('exits 2 on a usage error: %s', (_name, args) => {
    const r = runCli(args.map((a) => (a === 'GOOD' ? good : a)));
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/usage/);
    expect(r.stdout).not.toContain('ok');
  });
});

// ---- SIGHUP and start-up on a real process ----

describe('config: reload and start-up of a real process', () => {
  let blue: Upstream;
  let green: Upstream;
  beforeAll(async () => {
    blue = await startUpstream('blue');
    green = await startUpstream('green');
  });
  afterAll(async () => {
    await blue?.close();
    await green?.close();
  });

  const withLogs = (c: Record<string, unknown>) => stringify({ ...c, log: { level: 'info' } });

  it('SIGHUP applies a changed file, refuses an invalid one and keeps serving the old config', async () => {
    const cfg = (b: number, g: number) => withLogs(shopConfig({ blue: { weight: b, endpoints: [blue.address] }, green: { weight: g, endpoints: [green.address] } }));
    const p = await startProcess(cfg(100, 0), writeConfig(cfg(100, 0)));
    try {
      const logCount = (msg: string) => p.logs.filter((l) => l.msg === msg).length;

      let r = await load(`${p.url}/`, { concurrency: 4, count: 200 });
      expect(r.failed).toBe(0);
      expect(r.byName).toEqual({ blue: 200 });

      // 1. weights blue 100 → green 100
      writeFileSync(p.file, cfg(0, 100));
      p.proc.kill('SIGHUP');
      await waitFor(() => logCount('config reloaded') === 1, { message: 'first reload' });
      r = await load(`${p.url}/`, { concurrency: 4, count: 200 });
      expect(r.failed).toBe(0);
      expect(r.byName).toEqual({ green: 200 });

      // 2. an invalid file: refused, with the key path in the log; green keeps serving
      writeFileSync(
        p.file,
        withLogs(shopConfig({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: -5, endpoints: [green.address] } })).replace('shutdown:', 'bogusKey: 1\nshutdown:'),
      );
      p.proc.kill('SIGHUP');
      const refused = await waitFor(() => p.logs.find((l) => l.msg === 'config reload refused; the running config stays'), { message: 'refusal log line' });
      expect(refused.level).toBe(50); // pino "error"
      const problems = refused.problems as string[];
      expect(problems.some((x) => x.startsWith('services.shop.versions.green.weight: '))).toBe(true);
      expect(problems.some((x) => x.startsWith('bogusKey: '))).toBe(true);
      expect(logCount('config reloaded')).toBe(1);
      r = await load(`${p.url}/`, { concurrency: 4, count: 200 });
      expect(r.failed).toBe(0);
      expect(r.statuses).toEqual({ 200: 200 });
      expect(r.byName).toEqual({ green: 200 });
      expect(p.proc.exitCode).toBeNull();

      // 3. a valid file again: applied (back to blue)
      writeFileSync(p.file, cfg(100, 0));
      p.proc.kill('SIGHUP');
      await waitFor(() => logCount('config reloaded') === 2, { message: 'second reload' });
      r = await load(`${p.url}/`, { concurrency: 4, count: 200 });
      expect(r.failed).toBe(0);
      expect(r.byName).toEqual({ blue: 200 });

      // 4. a split after a refusal still splits
      writeFileSync(p.file, cfg(50, 50));
      p.proc.kill('SIGHUP');
      await waitFor(() => logCount('config reloaded') === 3, { message: 'third reload' });
      r = await load(`${p.url}/`, { concurrency: 8, count: 1000 });
      expect(r.failed).toBe(0);
      expect(r.byName.blue).toBeGreaterThan(350);
      expect(r.byName.green).toBeGreaterThan(350);
      expect(await p.stop('SIGTERM')).toBe(0);
    } finally {
      await p.stop('SIGKILL');
    }
  });

  it('SIGHUP while requests are in flight loses none of them', async () => {
    const cfg = (b: number, g: number) => withLogs(shopConfig({ blue: { weight: b, endpoints: [blue.address] }, green: { weight: g, endpoints: [green.address] } }));
    const p = await startProcess(cfg(100, 0), writeConfig(cfg(100, 0)));
    try {
      let stop = false;
      const progress = emptyLoadResult();
      const running = load(`${p.url}/`, { concurrency: 16, until: () => stop, progress });
      // Each reload lands while the load runs: it waits for 40 more answers than the last
      // one (more than the 16 that can be in flight), so every weight flip carries traffic.
      for (let i = 0; i < 10; i++) {
        const answered = progress.ok + progress.failed;
        await waitFor(() => progress.ok + progress.failed >= answered + 40, { message: `traffic before reload ${i}` });
        writeFileSync(p.file, i % 2 === 0 ? cfg(0, 100) : cfg(100, 0));
        p.proc.kill('SIGHUP');
        await waitFor(() => p.logs.filter((l) => l.msg === 'config reloaded').length === i + 1, { message: `reload ${i}` });
      }
      const answered = progress.ok + progress.failed;
      await waitFor(() => progress.ok + progress.failed >= answered + 40, { message: 'traffic after the last reload' });
      stop = true;
      const r = await running;
      expect(r.errors).toEqual([]);
      expect(r.failed).toBe(0);
      expect(r.ok).toBeGreaterThanOrEqual(440);
      expect(r.byName.blue).toBeGreaterThan(0);
      expect(r.byName.green).toBeGreaterThan(0);
    } finally {
      await p.stop('SIGKILL');
    }
  });

  /** Runs `switchyard serve` on a file and waits for it to exit (or kills it). */
  function serve(file: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const proc = spawn(process.execPath, [CLI, 'serve', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => proc.kill('SIGKILL'), 15_000);
      proc.once('exit', (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr });
      });
    });
  }

  it('serve refuses a config with an unknown key at start, naming the key path', async () => {
    const c = shopConfig({ blue: { weight: 1, endpoints: [blue.address] } }) as Record<string, Record<string, unknown>>;
    c.gateway = { ...c.gateway, listn: '127.0.0.1:0' };
    const r = await serve(writeConfig(c));
    expect(r.code).not.toBe(0);
    expect(r.code).not.toBeNull(); // exited by itself, not killed by the timeout
    expect(`${r.stderr}${r.stdout}`).toMatch(/^gateway\.listn: unknown key$/m);
    expect(r.stdout).not.toContain('"listening"');
  });

  it('serve refuses an invalid value at start, one line per problem', async () => {
    const c = shopConfig({ blue: { weight: 0, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } }, { healthCheck: { interval: '1s', timeout: '3s' } });
    const r = await serve(writeConfig(c));
    expect(r.code).toBe(1);
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines).toContainEqual(expect.stringMatching(/^services\.shop\.versions: /));
    expect(lines).toContainEqual(expect.stringMatching(/^services\.shop\.healthCheck\.timeout: /));
  });

  it('serve with an unknown flag is a usage error', async () => {
    const r = spawnSync(process.execPath, [CLI, 'serve', '--config', writeConfig(doc()), '--port', '1'], { encoding: 'utf8', timeout: 15_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('unknown flag --port');
  });
});

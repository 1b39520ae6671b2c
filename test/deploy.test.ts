// The deployment files in deploy/: Kubernetes manifests and the Docker Compose demo.
// Neither Kubernetes nor Docker runs here, so the files are parsed with `yaml` and the
// fields that make them work are checked against each other and against the config
// they carry (which is validated by `switchyard check`, with the environment the
// manifests give it). Then the Compose demo's own parts are run for real without
// Docker: its config (host names pointed at loopback) on two gateway replicas, one
// real redis-server, a real Consul agent, and the demo pools' script registering in it.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { request } from 'undici';
import pino from 'pino';
import { loadConfigFile } from '../config/load.js';
import { parseDuration } from '../config/load.js';
import type { Config } from '../config/types.js';
import { startGateway } from '../bin/serve.js';
import { CLI, ROOT, waitFor, writeConfig } from './helpers.js';
import { fixedPort, startRedis, type RedisServer } from './redis-server.js';
import { startConsul } from './consul-agent.js';

type Json = Record<string, any>;

const K8S = join(ROOT, 'deploy/kubernetes');
const COMPOSE = join(ROOT, 'deploy/docker-compose.yml');

function k8sObjects(): Json[] {
  const out: Json[] = [];
  for (const f of readdirSync(K8S).filter((n) => n.endsWith('.yaml')).sort()) {
    for (const doc of parseAllDocuments(readFileSync(join(K8S, f), 'utf8'))) {
      expect(doc.errors, f).toEqual([]);
      const o = doc.toJS();
      if (o !== null) out.push({ ...o, _file: f });
    }
  }
  return out;
}

function one(objs: Json[], kind: string, name?: string): Json {
  const found = objs.filter((o) => o.kind === kind && (name === undefined || o.metadata?.name === name));
  expect(found.length, `${kind} ${name ?? ''}`).toBe(1);
  return found[0];
}

/** `switchyard check` (the real CLI) and loadConfigFile on a config text with an env. */
function check(text: string, env: Record<string, string>): Config {
  const file = writeConfig(text);
  const res = spawnSyncCli(['check', '--config', file], env);
  expect(res.code, res.out).toBe(0);
  return loadConfigFile(file, env);
}

function spawnSyncCli(args: string[], env: Record<string, string>): { code: number; out: string } {
  try {
    const out = execFileSync(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return { code: 0, out };
  } catch (err) {
    const e = err as { status: number; stdout: string; stderr: string };
    return { code: e.status, out: `${e.stdout}${e.stderr}` };
  }
}

const portOf = (listen: string): number => Number(listen.slice(listen.lastIndexOf(':') + 1));

/** Compose's own interpolation of a value: ${VAR:-default} / ${VAR} from env, $$ → $. */
function composeInterpolate(s: string, env: Record<string, string | undefined>): string {
  return s.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}/g, (all, name: string | undefined, dflt: string | undefined) => {
    if (all === '$$') return '$';
    const v = env[name!];
    return v !== undefined && v !== '' ? v : (dflt ?? '');
  });
}

// ---------------------------------------------------------------------------------

describe('kubernetes manifests', () => {
  const objs = k8sObjects();
  const dep = one(objs, 'Deployment', 'switchyard');
  const pod = dep.spec.template.spec;
  const c = pod.containers.find((x: Json) => x.name === 'switchyard');
  const cm = one(objs, 'ConfigMap');
  const secret = one(objs, 'Secret');
  const configText: string = cm.data['switchyard.yaml'];
  const env = Object.fromEntries(Object.entries(secret.stringData as Record<string, string>));
  const portByName = (p: string | number): number => (typeof p === 'number' ? p : c.ports.find((x: Json) => x.name === p)?.containerPort);

  it('the ConfigMap holds a config that `switchyard check` accepts with the Secret as environment; tokens only as ${VAR}s', () => {
    const config = check(configText, env);
    // No secret in the ConfigMap: every token is a ${VAR} the Secret provides.
    expect(configText).not.toMatch(/token:\s*["']?[A-Za-z0-9_-]{16}/);
    const vars = [...configText.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => m[1]);
    expect(vars.length).toBeGreaterThanOrEqual(2);
    for (const v of vars) {
      const e = c.env.find((x: Json) => x.name === v);
      expect(e, `env ${v}`).toBeDefined();
      expect(e.valueFrom.secretKeyRef.name).toBe(secret.metadata.name);
      expect(Object.keys(secret.stringData)).toContain(e.valueFrom.secretKeyRef.key);
    }
    expect(config.control.tokens.map((t) => t.token)).toEqual([env.SWITCHYARD_CI_TOKEN, env.SWITCHYARD_ADMIN_TOKEN]);
    // Two replicas share one state: the store is Redis (a file or memory store would
    // give each pod its own weights).
    expect(dep.spec.replicas).toBe(2);
    expect(config.state.store).toBe('redis');
  });

  it('probes: readiness GET /ready and liveness GET /live on the admin port of the config', () => {
    const config = check(configText, env);
    const admin = portOf(config.admin.listen);
    expect(c.readinessProbe.httpGet.path).toBe('/ready');
    expect(portByName(c.readinessProbe.httpGet.port)).toBe(admin);
    expect(c.livenessProbe.httpGet.path).toBe('/live');
    expect(portByName(c.livenessProbe.httpGet.port)).toBe(admin);
    // The kubelet reaches the admin listener on the pod IP.
    expect(config.admin.listen.startsWith('0.0.0.0:')).toBe(true);
    // The pod leaves the Service's endpoints within drainDelay (readiness fails at the
    // first probe after SIGTERM), before the gateway stops accepting.
    expect(c.readinessProbe.periodSeconds * c.readinessProbe.failureThreshold).toBeLessThan(config.shutdown.drainDelayMs / 1000);
    expect(portByName('http')).toBe(portOf(config.gateway.listen));
    expect(portByName('control')).toBe(portOf(config.control.listen));
  });

  it('terminationGracePeriodSeconds exceeds shutdown.drainDelay + shutdown.grace', () => {
    const config = check(configText, env);
    const needed = (config.shutdown.drainDelayMs + config.shutdown.graceMs) / 1000;
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(needed);
  });

  it('the config is mounted where --config points, from the ConfigMap', () => {
    const args: string[] = c.args;
    const configPath = args[args.indexOf('--config') + 1];
    expect(args[0]).toBe('serve');
    const mount = c.volumeMounts.find((m: Json) => configPath.startsWith(`${m.mountPath}/`));
    expect(mount).toBeDefined();
    expect(mount.readOnly).toBe(true);
    const vol = pod.volumes.find((v: Json) => v.name === mount.name);
    expect(vol.configMap.name).toBe(cm.metadata.name);
    const item = vol.configMap.items.find((i: Json) => `${mount.mountPath}/${i.path}` === configPath);
    expect(item).toBeDefined();
    expect(Object.keys(cm.data)).toContain(item.key);
  });

  it('runs as non-root with no privilege escalation, all capabilities dropped, read-only root', () => {
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
    expect(c.securityContext.allowPrivilegeEscalation).toBe(false);
    expect(c.securityContext.capabilities.drop).toContain('ALL');
    expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
    // The image's user is node (uid 1000): runAsUser matches it.
    expect(readFileSync(join(ROOT, 'Dockerfile'), 'utf8')).toMatch(/^USER node$/m);
    expect(pod.securityContext.runAsUser).toBe(1000);
  });

  it('Services select the pods and target named container ports; the SRV names in the config are headless Services with a port named http', () => {
    const labels = dep.spec.template.metadata.labels;
    expect(dep.spec.selector.matchLabels).toEqual(labels);
    const services = objs.filter((o) => o.kind === 'Service');
    const gatewayServices = services.filter((s) => Object.entries(s.spec.selector).every(([k, v]) => labels[k] === v));
    expect(gatewayServices.map((s) => s.metadata.name).sort()).toEqual(['switchyard', 'switchyard-control']);
    for (const s of gatewayServices) for (const p of s.spec.ports) expect(portByName(p.targetPort), `${s.metadata.name} ${p.name}`).toBeDefined();
    expect(one(objs, 'Service', 'switchyard').spec.ports[0].targetPort).toBe('http');
    const config = check(configText, env);
    const srvs = config.services.flatMap((s) => s.versions.map((v) => (v.source.kind === 'dns' ? v.source.srv : undefined))).filter((x): x is string => x !== undefined);
    expect(srvs.length).toBe(2);
    for (const srv of srvs) {
      const m = /^_([a-z0-9-]+)\._tcp\.([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local$/.exec(srv);
      expect(m, srv).not.toBeNull();
      const svc = one(objs, 'Service', m![2]);
      expect(svc.spec.clusterIP).toBe('None');
      expect(svc.spec.ports.map((p: Json) => p.name)).toContain(m![1]);
      expect(m![3]).toBe(svc.metadata.namespace ?? 'default');
    }
  });
});

// ---------------------------------------------------------------------------------

describe('docker compose demo (parsed)', () => {
  const compose = parse(readFileSync(COMPOSE, 'utf8'), { merge: true }) as Json;
  const services = compose.services as Record<string, Json>;
  const gateways = Object.entries(services).filter(([, s]) => s.build !== undefined);
  const configOf = (s: Json): string => {
    const ref = s.configs.find((c: Json) => c.target === s.command[s.command.indexOf('--config') + 1]);
    expect(ref).toBeDefined();
    return compose.configs[ref.source].content;
  };
  const gatewayEnv = (s: Json): Record<string, string> => Object.fromEntries(Object.entries(s.environment as Record<string, string>).map(([k, v]) => [k, composeInterpolate(v, {})]));

  it('two gateway replicas built from the repository Dockerfile, one embedded config, distinct host ports', () => {
    expect(gateways.map(([n]) => n)).toEqual(['switchyard-a', 'switchyard-b']);
    for (const [, s] of gateways) {
      expect(existsSync(join(ROOT, 'deploy', s.build.context, s.build.dockerfile))).toBe(true);
      expect(join(ROOT, 'deploy', s.build.context)).toBe(ROOT);
      expect(s.command.slice(0, 1)).toEqual(['serve']);
    }
    expect(configOf(gateways[0][1])).toBe(configOf(gateways[1][1]));
    const hostPorts = gateways.flatMap(([, s]) => s.ports.map((p: string) => p.split(':')[0]));
    expect(new Set(hostPorts).size).toBe(hostPorts.length);
  });

  it('the embedded config passes `switchyard check` with the gateways’ environment: redis store on the compose redis, consul on the compose consul', () => {
    const [, a] = gateways[0];
    const text = composeInterpolate(configOf(a), {});
    expect(text).toContain('${SWITCHYARD_CI_TOKEN}');
    const config = check(text, gatewayEnv(a));
    expect(config.state.store).toBe('redis');
    const redisHost = new URL(config.state.redis.url).hostname;
    expect(services[redisHost]?.image).toMatch(/^redis:/);
    const consulHost = new URL(config.discovery.consul!.address).hostname;
    expect(services[consulHost]?.image).toMatch(/consul/);
    for (const [, s] of gateways) {
      expect(Object.keys(s.depends_on)).toEqual(expect.arrayContaining([redisHost, consulHost]));
      expect(s.depends_on[redisHost].condition).toBe('service_healthy');
      expect(services[redisHost].healthcheck).toBeDefined();
      expect(services[consulHost].healthcheck).toBeDefined();
      // Docker's stop timeout exceeds drainDelay + grace.
      expect(parseDuration(s.stop_grace_period)).toBeGreaterThan(config.shutdown.drainDelayMs + config.shutdown.graceMs);
      expect(s.ports.some((p: string) => p.endsWith(`:${portOf(config.gateway.listen)}`))).toBe(true);
    }
    expect(config.control.tokens.map((t) => t.token)).toEqual(['demo-ci-token-change-me', 'demo-admin-token-change-me']);
  });

  it('blue and green demo pools for every Consul tag the config follows, running deploy/demo-upstream.mjs', () => {
    const config = check(composeInterpolate(configOf(gateways[0][1]), {}), gatewayEnv(gateways[0][1]));
    const tags = config.services[0].versions.map((v) => (v.source.kind === 'consul' ? v.source.tag : undefined));
    expect(tags).toEqual(['blue', 'green']);
    const pools = Object.entries(services).filter(([, s]) => s.environment?.VERSION !== undefined);
    for (const tag of tags) expect(pools.filter(([, s]) => s.environment.VERSION === tag).length, tag).toBeGreaterThanOrEqual(2);
    for (const [name, s] of pools) {
      expect(s.image).toMatch(/^node:/);
      expect(s.environment.INSTANCE).toBe(name);
      expect(s.environment.CONSUL_HTTP_ADDR).toBe(config.discovery.consul!.address);
      const [src, target] = s.volumes[0].split(':');
      expect(existsSync(join(ROOT, 'deploy', src))).toBe(true);
      expect(s.command).toEqual(['node', target]);
    }
  });
});

// ---------------------------------------------------------------------------------
// The Compose demo's parts, run without Docker


const procs: ChildProcess[] = [];
const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await Promise.resolve(fn()).catch(() => {});
});
afterAll(async () => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
});

function run(cmd: string, args: string[], env: Record<string, string> = {}): { proc: ChildProcess; out: () => string; exited: Promise<number | null> } {
  const proc = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(proc);
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  return { proc, out: () => out, exited };
}

describe('docker compose demo (its parts, run without Docker)', () => {
  it('two replicas on the embedded config share one Redis and route to demo pools registered in Consul; a stopped pool deregisters and is drained', async () => {
    const compose = parse(readFileSync(COMPOSE, 'utf8'), { merge: true }) as Json;
    const text = composeInterpolate(compose.configs.switchyard.content, {});
    const env = Object.fromEntries(Object.entries(compose.services['switchyard-a'].environment as Record<string, string>).map(([k, v]) => [k, composeInterpolate(v, {})]));

    const redis: RedisServer = await startRedis();
    cleanups.push(() => redis.stop());
    const consulAgent = await startConsul();
    cleanups.push(() => consulAgent.stop());
    const consulUrl = consulAgent.url;

    // The demo pools: the compose services' environment, addresses on loopback.
    const pools: Record<string, ReturnType<typeof run>> = {};
    const ports: Record<string, number> = {};
    for (const name of ['blue-1', 'green-1']) {
      const s = compose.services[name];
      ports[name] = await fixedPort();
      pools[name] = run(process.execPath, [join(ROOT, 'deploy', s.volumes[0].split(':')[0])], { ...s.environment, PORT: String(ports[name]), CONSUL_HTTP_ADDR: consulUrl, ADVERTISE_ADDRESS: '127.0.0.1', STOP_DELAY_MS: '500' });
      cleanups.push(() => void pools[name].proc.kill('SIGKILL'));
    }

    // The embedded config with the compose host names pointed at the loopback servers.
    const raw = parse(text) as Json;
    raw.gateway.listen = '127.0.0.1:0';
    raw.admin.listen = '127.0.0.1:0';
    raw.control.listen = '127.0.0.1:0';
    raw.state.redis.url = redis.url;
    raw.discovery.consul.address = consulUrl;
    raw.discovery.consul.wait = '5s';
    raw.shutdown = { drainDelay: '0s', grace: '5s' };
    raw.log = { level: 'silent' };
    const dir = mkdtempSync(join(tmpdir(), 'switchyard-compose-'));
    const file = join(dir, 'switchyard.yaml');
    writeFileSync(file, stringify(raw));
    const saved = { ...process.env };
    Object.assign(process.env, env);
    let gws;
    try {
      gws = await Promise.all([0, 1].map(() => startGateway({ configFile: file, log: pino({ level: 'silent' }) })));
    } finally {
      for (const k of Object.keys(env)) if (saved[k] === undefined) delete process.env[k];
    }
    for (const g of gws) cleanups.push(() => g.close());
    const urls = gws.map((g) => `http://127.0.0.1:${g.addresses.gateway.port}`);
    const ids = (i: number, v: string) => gws[i].dataplane.endpointsOf('shop', v).map((e) => e.id);

    // Both pools registered (passing /healthz checks) and followed by both replicas, and
    // available on both: an endpoint discovered after start takes traffic only after its
    // first passing probe (dataplane.createEndpoint), which can come after it is listed.
    const available = (i: number, v: string): boolean => gws[i].dataplane.endpointsOf('shop', v).every((e) => e.available);
    await waitFor(() => [0, 1].every((i) => ids(i, 'blue').length === 1 && ids(i, 'green').length === 1 && available(i, 'blue') && available(i, 'green')), {
      timeout: 30_000,
      interval: 100,
      message: `pools registered and probed: ${pools['blue-1'].out()}`,
    });
    expect(ids(0, 'blue')).toEqual([`blue-1@127.0.0.1:${ports['blue-1']}`]);
    for (const u of urls) {
      const body = JSON.parse(await (await request(u)).body.text());
      expect(body).toMatchObject({ version: 'blue', instance: 'blue-1' });
    }

    // A weight change on replica a reaches replica b through the shared Redis.
    const put = await request(`http://127.0.0.1:${gws[0].addresses.control.port}/v1/services/shop/weights`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${env.SWITCHYARD_CI_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ weights: { blue: 0, green: 100 } }),
    });
    expect(put.statusCode, await put.body.text()).toBe(200);
    await waitFor(() => gws[1].dataplane.getWeights('shop').green === 100, { timeout: 10_000, message: 'replica b applied the weights' });
    expect(JSON.parse(await (await request(urls[1])).body.text()).version).toBe('green');

    // SIGTERM to a pool: it deregisters from Consul first; both replicas drain it.
    pools['green-1'].proc.kill('SIGTERM');
    await waitFor(() => [0, 1].every((i) => ids(i, 'green').length === 0), { timeout: 10_000, message: 'green-1 left' });
    expect(await pools['green-1'].exited).toBe(0);
    expect(pools['green-1'].out()).toContain('registered with consul');
  });
});

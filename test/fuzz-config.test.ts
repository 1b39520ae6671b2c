// Property-based config validation (fast-check): random mutations of a valid config —
// wrong types, unknown keys, deleted required keys, bad durations and sizes, random
// values — and random YAML documents always end in a ConfigError whose every problem is
// one "key.path: message" line naming the key (or "(yaml)" / "(root)"), or in a valid
// config; never another exception, never a stack trace. Over 1,000 cases in all.

import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { ConfigError, loadConfigText } from '../config/load.js';
import type { Config } from '../config/types.js';
import { makeCa } from './certs.js';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

let baseDir = '';
let base: { [k: string]: Json } = {};

/** A valid config touching most keys (a TLS pair made by openssl, files relative to baseDir). */
function baseConfig(): { [k: string]: Json } {
  return {
    gateway: {
      listen: '127.0.0.1:8443',
      accessLog: true,
      accessLogSample: 0.5,
      maxBodySize: '10mb',
      maxHeaderSize: '16kb',
      maxHeaderCount: 100,
      maxConnectionsPerClient: 50,
      timeouts: { headers: '10s', request: '300s', keepAlive: '60s' },
      upstream: { maxConnectionsPerEndpoint: 64, idleTimeout: '4s' },
      tls: { certificates: [{ cert: 'shop.crt', key: 'shop.key' }], watch: true },
      redirectHttp: '127.0.0.1:8081',
    },
    admin: { listen: '127.0.0.1:9901' },
    control: {
      listen: '127.0.0.1:9090',
      tokens: [{ name: 'ci', token: 'a-long-enough-token-123', scopes: ['read', 'deploy'] }],
      webhooks: [{ url: 'https://hooks.example/x', events: ['weights.changed'], secret: 's3cret' }],
      authRateLimit: { failures: 10, window: '10s' },
    },
    state: { store: 'redis', redis: { url: 'redis://127.0.0.1:6379/0', prefix: 'sy' } },
    discovery: { consul: { address: 'http://127.0.0.1:8500', datacenter: 'dc1', stale: true, wait: '30s', register: { name: 'switchyard', tags: ['edge'], checkInterval: '10s' } } },
    log: { level: 'info' },
    services: {
      shop: {
        routes: [{ host: 'shop.example.com', path: '/' }, { path: '/shop' }],
        versions: {
          blue: { weight: 90, endpoints: ['127.0.0.1:9001', '127.0.0.1:9002'] },
          green: { weight: 10, consul: { service: 'shop', tag: 'green', meta: { version: 'green' } } },
        },
        healthCheck: { path: '/healthz', interval: '2s', timeout: '1s', healthyThreshold: 2, unhealthyThreshold: 3 },
        outlierDetection: { consecutive5xx: 5, consecutiveGatewayErrors: 3, baseEjectionTime: '30s', maxEjectionPercent: 50 },
        slowStart: '5s',
        sticky: { cookie: 'sy_shop', header: 'x-user-id' },
        override: { header: 'x-switchyard-version' },
        retries: { attempts: 2 },
        timeouts: { connect: '2s', request: '30s' },
      },
      api: {
        routes: [{ host: 'api.example.com' }],
        versions: { v1: { weight: 1, dns: { name: 'api.internal', port: 8080, interval: '5s' } } },
      },
    },
    shutdown: { drainDelay: '5s', grace: '30s' },
  };
}

// Keys whose values are maps of free names (any key is allowed), and keys whose values
// are maps of free strings (a random string value is valid there).
const FREE_MAPS = [/^services$/, /^services\.[^.]+\.versions$/];
const FREE_STRING_MAPS = [/\.meta$/];
const DURATION_KEYS = /(^|\.)(headers|request|keepAlive|idleTimeout|interval|timeout|baseEjectionTime|slowStart|connect|drainDelay|grace|wait|checkInterval|window)$/;
// Required keys (schema `required`), as path patterns.
const REQUIRED = [/^services$/, /^services\.[^.]+\.(routes|versions)$/, /^control\.tokens\.\d+\.(name|token|scopes)$/, /^control\.webhooks\.\d+\.url$/, /\.consul\.service$/, /\.override\.header$/, /\.register\.name$/, /^gateway\.tls\.certificates$/, /^gateway\.tls\.certificates\.\d+\.(cert|key)$/];

interface Node {
  path: string[];
  value: Json;
}

function nodes(v: Json, path: string[] = []): Node[] {
  const out: Node[] = [{ path, value: v }];
  if (Array.isArray(v)) v.forEach((c, i) => out.push(...nodes(c, [...path, String(i)])));
  else if (v !== null && typeof v === 'object') for (const [k, c] of Object.entries(v)) out.push(...nodes(c, [...path, k]));
  return out;
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

function setAt(root: Json, path: string[], value: Json | undefined): void {
  let o = root as Record<string, Json>;
  for (const k of path.slice(0, -1)) o = o[k] as Record<string, Json>;
  const last = path[path.length - 1];
  if (value === undefined) {
    if (Array.isArray(o)) o.splice(Number(last), 1);
    else delete o[last];
  } else o[last] = value;
}

const matches = (res: RegExp[], p: string): boolean => res.some((r) => r.test(p));

interface Case {
  kind: string;
  text: string;
  /** A problem must name this key path (exactly, as "path: ..."). */
  expectPath?: string;
  /** The config must be refused. */
  mustFail: boolean;
}

// Values of a JSON type other than the one given (never one the schema could coerce).
function otherType(v: Json): fc.Arbitrary<Json> {
  const all: [string, fc.Arbitrary<Json>][] = [
    ['object', fc.dictionary(fc.string({ maxLength: 5 }), fc.integer(), { maxKeys: 2 }) as fc.Arbitrary<Json>],
    ['array', fc.array(fc.integer(), { maxLength: 3 }) as fc.Arbitrary<Json>],
    ['boolean', fc.boolean()],
    ['null', fc.constant(null)],
    ['number', fc.double({ noNaN: true, noDefaultInfinity: true })],
    ['string', fc.string({ maxLength: 10 })],
  ];
  const t = v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
  // A string may be replaced by a number where sizes are allowed (maxBodySize: 5), and
  // a number by a string ("5kb"): keep to types no schema place accepts for both.
  const exclude = new Set([t, t === 'string' ? 'number' : t === 'number' ? 'string' : '']);
  return fc.oneof(...all.filter(([n]) => !exclude.has(n)).map(([, a]) => a));
}

function caseArb(): fc.Arbitrary<Case> {
  const all = nodes(base).filter((n) => n.path.length > 0);
  const objects = all.filter((n) => n.value !== null && typeof n.value === 'object' && !Array.isArray(n.value) && !matches(FREE_STRING_MAPS, n.path.join('.')));
  objects.push({ path: [], value: base });
  const required = all.filter((n) => matches(REQUIRED, n.path.join('.')));
  const durations = all.filter((n) => typeof n.value === 'string' && DURATION_KEYS.test(n.path.join('.')));
  const leaves = all.filter((n) => n.value === null || typeof n.value !== 'object');
  const text = (doc: Json): string => stringify(doc);

  const wrongType = fc
    .constantFrom(...all.filter((n) => !matches(FREE_STRING_MAPS, n.path.slice(0, -1).join('.'))))
    .chain((n) => otherType(n.value).map((v) => ({ n, v })))
    .map(({ n, v }): Case => {
      const doc = clone(base);
      setAt(doc, n.path, v);
      return { kind: 'wrong type', text: text(doc), expectPath: n.path.join('.'), mustFail: true };
    });

  const unknownKey = fc
    .tuple(fc.constantFrom(...objects), fc.string({ minLength: 1, maxLength: 12 }), fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json>)
    .filter(([o, k]) => !(k in (o.value as object)) && k !== '__proto__' && k !== '<<')
    .map(([o, k, v]): Case => {
      const doc = clone(base);
      setAt(doc, [...o.path, k], v);
      const p = [...o.path, k].join('.');
      // Under a free map the new key is a new service or version: refused for what its
      // value lacks, at a path under it.
      return { kind: 'unknown key', text: text(doc), expectPath: matches(FREE_MAPS, o.path.join('.')) ? undefined : p, mustFail: true };
    });

  const deleteRequired = fc.constantFrom(...required).map((n): Case => {
    const doc = clone(base);
    setAt(doc, n.path, undefined);
    return { kind: 'delete required', text: text(doc), expectPath: n.path.join('.'), mustFail: true };
  });

  const deleteAny = fc.constantFrom(...all).map((n): Case => {
    const doc = clone(base);
    setAt(doc, n.path, undefined);
    return { kind: 'delete any', text: text(doc), mustFail: false };
  });

  const badDuration = fc
    .tuple(
      fc.constantFrom(...durations),
      fc.oneof(
        fc.string({ maxLength: 8 }),
        fc.constantFrom('1', '-1s', '1 s', '1sec', '1.s', '.5s', '1d', '1S', '1e3ms', '99999999h', '2147483648ms', ' 1s', '1s ', '0x10s', '1_000ms'),
      ),
    )
    .filter(([, s]) => !/^(\d+(?:\.\d+)?)(ms|s|m|h)$/.test(s) || s === '99999999h' || s === '2147483648ms')
    .map(([n, s]): Case => {
      const doc = clone(base);
      setAt(doc, n.path, s);
      return { kind: 'bad duration', text: text(doc), expectPath: n.path.join('.'), mustFail: true };
    });

  const randomLeaf = fc
    .tuple(fc.constantFrom(...leaves), fc.oneof(fc.string({ maxLength: 20 }), fc.integer(), fc.double(), fc.boolean(), fc.constant(null)) as fc.Arbitrary<Json>)
    .map(([n, v]): Case => {
      const doc = clone(base);
      setAt(doc, n.path, v);
      return { kind: 'random value', text: text(doc), mustFail: false };
    });

  const envVar = fc.tuple(fc.constantFrom(...leaves.filter((n) => typeof n.value === 'string')), fc.stringMatching(/^[A-Z_][A-Z0-9_]{0,8}$/)).map(([n, name]): Case => {
    const doc = clone(base);
    setAt(doc, n.path, `\${SY_FUZZ_UNSET_${name}}`);
    return { kind: 'unset env var', text: text(doc), expectPath: n.path.join('.'), mustFail: true };
  });

  const randomYaml = fc
    .oneof(
      fc.string({ maxLength: 200 }),
      fc.string({ unit: fc.constantFrom(...'abc:- \n\t{}[],&*!|>\'"#%@`?~0123456789.'.split('')), maxLength: 200 }),
      fc.jsonValue({ maxDepth: 4 }).map((v) => stringify(v)),
      fc.constantFrom(
        'a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n',
        '['.repeat(3000) + ']'.repeat(3000),
        '__proto__: { services: {} }\n',
        'services: { __proto__: { routes: [{ path: / }] } }\n',
        'services: !!js/function "function () {}"\n',
        'services: !!binary aGVsbG8=\n',
        'services: {}\nservices: {}\n',
        '%YAML 1.2\n---\nservices: {}\n...\n---\nx: 1\n',
        '\ufeffservices: {}\n',
        'services: {? [a, b] : 1}\n',
      ),
    )
    .map((t): Case => ({ kind: 'random yaml', text: t, mustFail: false }));

  // Random text spliced into the valid document's YAML.
  const spliced = fc.tuple(fc.nat(), fc.string({ maxLength: 20 })).map(([at, junk]): Case => {
    const t = text(base);
    const i = at % (t.length + 1);
    return { kind: 'spliced yaml', text: t.slice(0, i) + junk + t.slice(i), mustFail: false };
  });

  return fc.oneof(
    { arbitrary: wrongType, weight: 3 },
    { arbitrary: unknownKey, weight: 2 },
    { arbitrary: deleteRequired, weight: 2 },
    { arbitrary: deleteAny, weight: 1 },
    { arbitrary: badDuration, weight: 2 },
    { arbitrary: randomLeaf, weight: 2 },
    { arbitrary: envVar, weight: 1 },
    { arbitrary: randomYaml, weight: 2 },
    { arbitrary: spliced, weight: 2 },
  );
}

const PROBLEM_RE = /^(\(yaml\)|\(root\)|[^\n]+?): [^\n]+$/;

/** Loads the text; checks the outcome's shape. Returns 'ok' or 'refused'. */
function check(c: Case): 'ok' | 'refused' {
  let result: Config | undefined;
  let error: unknown;
  try {
    result = loadConfigText(c.text, {}, baseDir);
  } catch (e) {
    error = e;
  }
  if (error === undefined) {
    if (c.mustFail) throw new Error(`${c.kind}: accepted, expected a refusal${c.expectPath ? ` naming ${c.expectPath}` : ''}\n${c.text}`);
    expect(Object.isFrozen(result)).toBe(true);
    expect(Array.isArray(result!.services)).toBe(true);
    return 'ok';
  }
  if (!(error instanceof ConfigError)) throw new Error(`${c.kind}: threw ${(error as Error)?.name}: ${(error as Error)?.message}\n${c.text}`);
  expect(error.problems.length).toBeGreaterThan(0);
  for (const p of error.problems) {
    expect(p, `${c.kind}: a "path: message" line`).toMatch(PROBLEM_RE);
    expect(p).not.toMatch(/\n\s+at |\bat .+\.(js|ts):\d+/);
  }
  if (c.expectPath !== undefined) {
    const named = error.problems.some((p) => p.startsWith(`${c.expectPath}: `));
    if (!named) throw new Error(`${c.kind}: no problem names ${c.expectPath}: ${JSON.stringify(error.problems)}`);
  }
  return 'refused';
}

describe('config fuzzing (fast-check)', () => {
  beforeAll(() => {
    const ca = makeCa();
    ca.issue('shop', 'shop.example.com', ['shop.example.com']);
    baseDir = ca.dir;
    base = baseConfig();
  });

  it('the base config is valid (every refusal below comes from its mutation)', () => {
    const c = loadConfigText(stringify(base), {}, baseDir);
    expect(c.gateway.tls?.certificates).toHaveLength(1);
    expect(c.services.map((s) => s.name)).toEqual(['shop', 'api']);
  });

  it('1,500 mutated or random configs: a ConfigError naming the key path, or a valid config; never a crash', () => {
    const seen: Record<string, Record<string, number>> = {};
    fc.assert(
      fc.property(caseArb(), (c) => {
        const outcome = check(c);
        seen[c.kind] ??= {};
        seen[c.kind][outcome] = (seen[c.kind][outcome] ?? 0) + 1;
      }),
      { numRuns: 1500, seed: Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31) },
    );
    const total = Object.values(seen).reduce((n, o) => n + (o.ok ?? 0) + (o.refused ?? 0), 0);
    expect(total).toBe(1500);
    // Every kind of mutation ran, and most cases were refusals.
    expect(Object.keys(seen).sort()).toEqual(['bad duration', 'delete any', 'delete required', 'random value', 'random yaml', 'spliced yaml', 'unknown key', 'unset env var', 'wrong type']);
    const refused = Object.values(seen).reduce((n, o) => n + (o.refused ?? 0), 0);
    expect(refused).toBeGreaterThan(1000);
  });
});

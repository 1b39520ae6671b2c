// The control API under hostile input, against a real in-process gateway:
//  - property-based (fast-check): random and malformed JSON bodies, wrong content
//    types, random path params and query strings, random headers, missing, garbled and
//    under-scoped tokens, random methods and paths, at every route → always a 4xx JSON
//    error with a code, never a 500, never a change (revision, weights, events);
//  - the 64 KB body limit (413);
//  - the failed-authentication rate limit per client address (429 with retry-after).

import { Readable } from 'node:stream';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import { shopConfig, startInProcess, startUpstream, waitFor, type InProcessGateway, type Upstream } from './helpers.js';
import { api, controlTop, TOKENS } from './control-helpers.js';

type Scope = 'read' | 'deploy' | 'admin';

interface Route {
  method: string;
  /** :name and :id are filled in. */
  path: string;
  scope: Scope;
  /** Takes a JSON body (its schema's required keys, kept out of random objects). */
  bodyKeys?: string[];
}

const ROUTES: Route[] = [
  { method: 'GET', path: '/v1/services', scope: 'read' },
  { method: 'GET', path: '/v1/services/:name', scope: 'read' },
  { method: 'PUT', path: '/v1/services/:name/weights', scope: 'deploy', bodyKeys: ['weights'] },
  { method: 'POST', path: '/v1/services/:name/cutover', scope: 'deploy', bodyKeys: ['to'] },
  { method: 'POST', path: '/v1/services/:name/rollout', scope: 'deploy', bodyKeys: ['to', 'steps', 'interval'] },
  { method: 'GET', path: '/v1/services/:name/rollout', scope: 'read' },
  { method: 'POST', path: '/v1/services/:name/rollout/pause', scope: 'deploy' },
  { method: 'POST', path: '/v1/services/:name/rollout/resume', scope: 'deploy' },
  { method: 'POST', path: '/v1/services/:name/rollout/promote', scope: 'deploy' },
  { method: 'POST', path: '/v1/services/:name/rollout/abort', scope: 'deploy' },
  { method: 'POST', path: '/v1/services/:name/rollback', scope: 'deploy' },
  { method: 'POST', path: '/v1/services/:name/endpoints/:id/drain', scope: 'admin' },
  { method: 'POST', path: '/v1/reload', scope: 'admin' },
  { method: 'GET', path: '/v1/live', scope: 'read' },
  { method: 'GET', path: '/v1/replicas', scope: 'read' },
  { method: 'GET', path: '/v1/status', scope: 'read' },
  { method: 'GET', path: '/v1/events', scope: 'read' },
];

const TOKEN_OF: Record<Scope, string> = { read: TOKENS.read, deploy: TOKENS.deploy, admin: TOKENS.admin };

interface Attack {
  kind: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
}

// Header names and values undici will send (tokens; visible ASCII values).
const headerName = fc.stringMatching(/^[a-z][a-z0-9-]{0,15}$/).filter((n) => !['authorization', 'content-type', 'content-length', 'transfer-encoding', 'host', 'connection', 'expect', 'upgrade', 'accept', 'keep-alive', 'te', 'trailer'].includes(n));
const headerValue = fc.stringMatching(/^[\x21-\x7e][\x20-\x7e]{0,40}$/);
const randomHeaders = fc.dictionary(headerName, headerValue, { maxKeys: 4 });

/** Service names that are not "shop": random text, path tricks, long ones. */
const badName = fc
  .oneof(
    fc.string({ minLength: 1, maxLength: 20 }),
    fc.stringMatching(/^[a-z][a-z0-9_.-]{0,20}$/),
    fc.constantFrom('..', '.', '%', 'shop/../shop', 'shop%00', 'SHOP', 'shop ', ' shop', 'a'.repeat(64), 'a'.repeat(300), '__proto__', 'constructor', 'blue', 'x'.repeat(1000)),
  )
  .filter((n) => n !== 'shop');

/** A body that is not valid JSON. */
const malformedJson = fc.oneof(
  fc.string({ maxLength: 60 }).filter((s) => {
    try {
      JSON.parse(s);
      return false;
    } catch {
      return true;
    }
  }),
  fc.constantFrom('{', '{"weights":', '{"to":"green"', '[1,2', '{"a":1,}', "{'to':'green'}", '{"to":"green"}}', 'nul', 'NaN', '{"x":1e999999}x', '\u0000', '{"to":"gr\u0000een"'),
  fc.uint8Array({ minLength: 1, maxLength: 64 }).map((b) => Buffer.from(b).toString('latin1')).filter((s) => {
    try {
      JSON.parse(s);
      return false;
    } catch {
      return true;
    }
  }),
);

/** Valid JSON that no route's schema accepts (objects never carry the route's keys). */
function wrongJson(keys: string[]): fc.Arbitrary<string> {
  const value = fc.jsonValue({ maxDepth: 3 });
  return fc
    .oneof(
      value.filter((v) => v === null || typeof v !== 'object' || Array.isArray(v)),
      fc.dictionary(fc.string({ maxLength: 8 }).filter((k) => !keys.includes(k) && k !== '__proto__'), value, { maxKeys: 4 }),
      // The right keys with values of the wrong kind.
      fc.tuple(fc.constantFrom(...keys), fc.oneof(fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.string(), { maxLength: 2 }), fc.string({ maxLength: 5 }).filter((s) => !/^[a-z]/.test(s)))).map(([k, v]) => ({ [k]: v })),
      // Keys of the schema with every required one but an unknown extra.
      fc.constant({ weights: { blue: 1 }, extra: true }),
      fc.constant({ weights: { blue: -1 } }),
      fc.constant({ weights: {} }),
      fc.constant({ weights: { 'no such version': 1 } }),
      fc.constant({ weights: { blue: 0, green: 0 } }),
      fc.constant({ to: 'green', steps: [0], interval: '1s' }),
      fc.constant({ to: 'green', steps: [5, 101], interval: '1s' }),
      fc.constant({ to: 'green', steps: [5], interval: '1d' }),
      fc.constant({ to: 'green', steps: [5], interval: '10ms' }),
      fc.constant({ to: 'green', steps: [5], interval: '99999999h' }),
      fc.constant({ to: 'nosuch' }),
      fc.constant({ to: 'green', timeout: 'soon' }),
    )
    .map((v) => JSON.stringify(v));
}

function fill(path: string, name: string, id = '127.0.0.1:1'): string {
  return path.replace(':name', encodeURIComponent(name)).replace(':id', encodeURIComponent(id));
}

function attackArb(): fc.Arbitrary<Attack> {
  const route = fc.constantFrom(...ROUTES);

  // 1. Authentication: no token, garbage, a random bearer token, another scheme, or a
  //    valid token without the route's scope.
  const auth = fc
    .tuple(
      route,
      fc.oneof(
        fc.constant(undefined),
        headerValue,
        fc.string({ minLength: 1, maxLength: 40 }).filter((s) => /^[\x21-\x7e]+$/.test(s)).map((s) => `Bearer ${s}`),
        fc.constantFrom(`Basic ${Buffer.from(`x:${TOKENS.admin}`).toString('base64')}`, `Bearer ${TOKENS.admin}x`, `Bearer ${TOKENS.admin.slice(0, -1)}`, `bearer  ${TOKENS.read.toUpperCase()}`, `Token ${TOKENS.deploy}`, 'Bearer', 'Bearer ', `Bearer ${TOKENS.read} ${TOKENS.admin}`),
        fc.constant('under-scoped'),
      ),
      randomHeaders,
    )
    .filter(([r, a]) => !(a === 'under-scoped' && r.scope === 'read'))
    .map(([r, a, h]): Attack => {
      const headers: Record<string, string> = { ...h };
      if (a === 'under-scoped') headers.authorization = `Bearer ${r.scope === 'admin' ? TOKENS.deploy : TOKENS.read}`;
      else if (a !== undefined) headers.authorization = a;
      return { kind: 'auth', method: r.method, path: fill(r.path, 'shop'), headers };
    });

  // 2. Path params: a service that does not exist (or is not a valid name); an endpoint
  //    id that does not exist.
  const params = fc
    .tuple(fc.constantFrom(...ROUTES.filter((r) => r.path.includes(':name'))), badName, fc.string({ minLength: 1, maxLength: 30 }), randomHeaders)
    .map(([r, name, id, h]): Attack => {
      const drain = r.path.includes(':id');
      // For the drain route, half the time the service exists and the id does not.
      const svc = drain && id.length % 2 === 0 ? 'shop' : name;
      const body = r.bodyKeys !== undefined ? Buffer.from('{}') : undefined;
      return { kind: 'params', method: r.method, path: fill(r.path, svc, id), headers: { ...h, authorization: `Bearer ${TOKEN_OF[r.scope]}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body };
    });

  // 3. Bodies on every POST/PUT route of an existing service with a valid token:
  //    malformed JSON, wrong JSON (body routes), over the limit, wrong content type.
  const writes = ROUTES.filter((r) => r.method !== 'GET');
  const bodies = fc
    .tuple(fc.constantFrom(...writes), fc.nat(), randomHeaders, fc.constantFrom('application/json', 'application/json; charset=utf-8', 'Application/JSON'))
    .chain(([r, pick, h, ct]) => {
      const options: fc.Arbitrary<{ kind: string; body: Buffer; type: string }>[] = [
        malformedJson.map((s) => ({ kind: 'malformed json', body: Buffer.from(s, 'latin1'), type: ct })),
        fc.constant({ kind: 'over 64 KB', body: Buffer.from(JSON.stringify({ weights: { blue: 1 }, pad: 'x'.repeat(70_000) })), type: ct }),
        fc
          .tuple(fc.constantFrom('text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', 'application/octet-stream'), fc.string({ maxLength: 30 }))
          .map(([type, s]) => ({ kind: 'wrong content type', body: Buffer.from(s.length ? s : 'x'), type })),
      ];
      if (r.bodyKeys !== undefined) options.push(wrongJson(r.bodyKeys).map((s) => ({ kind: 'wrong json', body: Buffer.from(s), type: ct })));
      return fc.constantFrom(...options).chain((o) => o).map((o): Attack => {
        const headers: Record<string, string> = { ...h, authorization: `Bearer ${TOKEN_OF[r.scope]}`, 'content-type': o.type };
        // An If-Match that is not a revision, now and then.
        if (r.path.endsWith('/weights') && pick % 3 === 0) headers['if-match'] = `"${pick}x"`;
        return { kind: o.kind, method: r.method, path: fill(r.path, 'shop', 'nope:1'), headers, body: o.body };
      });
    });

  // 4. Query strings on /v1/events that are not what it takes.
  const query = fc
    .tuple(
      fc.oneof(
        fc.string({ maxLength: 12 }).filter((s) => !/^[0-9]{1,15}$/.test(s)).map((s) => `since=${encodeURIComponent(s)}`),
        fc.string({ maxLength: 8 }).filter((s) => !/^[0-9]{1,4}$/.test(s)).map((s) => `limit=${encodeURIComponent(s)}`),
        fc.stringMatching(/^[a-z]{1,8}$/).filter((k) => k !== 'since' && k !== 'limit').map((k) => `${k}=1`),
        fc.constantFrom('since=1&since=2', 'since=9999999999999999', 'since=-1', 'limit=99999', 'since=1e3'),
      ),
      randomHeaders,
    )
    .map(([q, h]): Attack => ({ kind: 'query', method: 'GET', path: `/v1/events?${q}`, headers: { ...h, authorization: `Bearer ${TOKENS.read}` } }));

  // 5. Paths that are no route, with any method a parser accepts.
  const nowhere = fc
    .tuple(
      fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'),
      fc.oneof(
        fc.array(fc.string({ minLength: 1, maxLength: 10 }), { minLength: 1, maxLength: 4 }).map((segs) => `/v1/${segs.map(encodeURIComponent).join('/')}`),
        fc.constantFrom('/', '/v2/services', '/v1', '/v1/', '/v1/services/', '/v1/services/shop/weights/extra', '/v1/services/shop/rollout/explode', '/V1/SERVICES', '/v1//services', '/v1/services/%', '/v1/services/%zz', '/v1/services/%E0%A4%A', '/v1/services/shop/endpoints//drain'),
      ),
      randomHeaders,
    )
    .filter(([m, p]) => !ROUTES.some((r) => r.method === m && new RegExp(`^${r.path.replace(/:name|:id/g, '[^/]+')}$`).test(p)))
    .map(([m, p, h]): Attack => ({ kind: 'no route', method: m, path: p, headers: { ...h, authorization: `Bearer ${TOKENS.admin}` } }));

  return fc.oneof({ arbitrary: auth, weight: 3 }, { arbitrary: params, weight: 3 }, { arbitrary: bodies, weight: 4 }, { arbitrary: query, weight: 1 }, { arbitrary: nowhere, weight: 2 });
}

describe('control API: hostile input', () => {
  let up: Upstream;
  let g: InProcessGateway;
  let agent: Agent;

  beforeAll(async () => {
    up = await startUpstream('blue');
    // The failed-auth limit is off here (every auth case would soon be a 429); it has
    // its own test below.
    g = await startInProcess(shopConfig({ blue: { weight: 90, endpoints: [up.address] }, green: { weight: 10, endpoints: [up.address] } }, {}, controlTop({ authRateLimit: { failures: 0 } })));
    agent = new Agent({ connections: 4 });
  });

  afterAll(async () => {
    await agent?.close();
    await g?.close();
    await up?.close();
  });

  async function state(): Promise<unknown> {
    const s = await api(g.controlUrl, 'GET', '/v1/services', { token: TOKENS.read });
    const e = await api(g.controlUrl, 'GET', '/v1/events', { token: TOKENS.read });
    expect(s.status).toBe(200);
    return { revision: s.json.revision, services: s.json.services, events: e.json.events.length };
  }

  it('1,200 random attacks on every route: always a 4xx JSON error with a code, never a 500, never a change', async () => {
    const before = await state();
    const kinds: Record<string, number> = {};
    const statuses: Record<number, number> = {};
    let n = 0;
    await fc.assert(
      fc.asyncProperty(attackArb(), async (a) => {
        const res = await request(`${g.controlUrl}${a.path}`, { method: a.method as 'GET', headers: a.headers, body: a.body, dispatcher: agent, headersTimeout: 10_000, bodyTimeout: 10_000 });
        const text = await res.body.text();
        const where = `${a.kind}: ${a.method} ${a.path} ${JSON.stringify(a.headers)} ${a.body?.toString('latin1').slice(0, 80) ?? ''} → ${res.statusCode} ${text.slice(0, 200)}`;
        if (res.statusCode < 400 || res.statusCode >= 500) throw new Error(`not a 4xx: ${where}`);
        expect(String(res.headers['content-type']), where).toMatch(/^application\/json/);
        let body: { error?: { code?: unknown; message?: unknown } };
        try {
          body = JSON.parse(text);
        } catch {
          throw new Error(`not JSON: ${where}`);
        }
        if (typeof body.error?.code !== 'string' || !/^[A-Z_]+$/.test(body.error.code) || typeof body.error.message !== 'string') throw new Error(`no error code: ${where}`);
        kinds[a.kind] = (kinds[a.kind] ?? 0) + 1;
        statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1;
        if (++n % 200 === 0) expect(await state(), `after ${n} cases`).toEqual(before);
      }),
      { numRuns: 1200, seed: Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31) },
    );
    expect(n).toBe(1200);
    expect(await state()).toEqual(before);
    // Every family of attack ran, and the answers cover the whole 4xx range used.
    expect(Object.keys(kinds).sort()).toEqual(['auth', 'malformed json', 'no route', 'over 64 KB', 'params', 'query', 'wrong content type', 'wrong json']);
    for (const s of [400, 401, 403, 404, 413, 415]) expect(statuses[s], `some ${s}`).toBeGreaterThan(0);
    // The data plane still serves.
    const d = await request(`${g.url}/after`);
    expect(d.statusCode).toBe(200);
    await d.body.text();
  }, 90_000);

  it('a body over 64 KB is refused with 413 (content-length or chunked); one under it is read and validated', async () => {
    const pad = (n: number): string => JSON.stringify({ weights: { blue: 1 }, pad: 'x'.repeat(n) });
    const big = await api(g.controlUrl, 'PUT', '/v1/services/shop/weights', { raw: pad(65 * 1024) });
    expect(big.status).toBe(413);
    expect(big.json.error.code).toBe('BODY_TOO_LARGE');
    // Chunked: no Content-Length to refuse up front; counted as it arrives.
    const chunks = Readable.from((async function* () {
      for (let i = 0; i < 70; i++) yield Buffer.alloc(1024, 0x20);
    })());
    const res = await request(`${g.controlUrl}/v1/services/shop/weights`, { method: 'PUT', headers: { authorization: `Bearer ${TOKENS.deploy}`, 'content-type': 'application/json' }, body: chunks });
    expect(res.statusCode).toBe(413);
    expect(((await res.body.json()) as { error: { code: string } }).error.code).toBe('BODY_TOO_LARGE');
    // Just under the limit: parsed, then refused by the schema (the unknown key), not by size.
    const under = await api(g.controlUrl, 'PUT', '/v1/services/shop/weights', { raw: pad(63 * 1024) });
    expect(under.status).toBe(400);
    expect(under.json.error.code).toBe('INVALID_REQUEST');
  });
});

describe('control API: failed-authentication rate limit', () => {
  let up: Upstream;
  let g: InProcessGateway;

  beforeAll(async () => {
    up = await startUpstream('blue');
    g = await startInProcess(shopConfig({ blue: { weight: 1, endpoints: [up.address] } }, {}, controlTop({ authRateLimit: { failures: 10, window: '3s' } })));
  });

  afterAll(async () => {
    await g?.close();
    await up?.close();
  });

  /** GET /v1/services from a given local address (127.0.0.x: all loopback on Linux). */
  async function ask(token: string | null, from = '127.0.0.1'): Promise<{ status: number; retryAfter?: string; code?: string }> {
    const agent = new Agent({ localAddress: from });
    try {
      const res = await request(`${g.controlUrl}/v1/services`, { dispatcher: agent, headers: token === null ? {} : { authorization: `Bearer ${token}` }, headersTimeout: 10_000, bodyTimeout: 10_000 });
      const body = (await res.body.json()) as { error?: { code: string } };
      return { status: res.statusCode, retryAfter: res.headers['retry-after'] as string | undefined, code: body.error?.code };
    } finally {
      await agent.close();
    }
  }

  it('10 invalid tokens from one address within the window → 429 RATE_LIMITED with retry-after for that address only, until the window passes', async () => {
    // Successful requests neither count nor are limited.
    for (let i = 0; i < 9; i++) {
      expect((await ask(`wrong-token-${i}-xxxxxxxxxxxx`)).status).toBe(401);
      expect((await ask(TOKENS.read)).status).toBe(200);
    }
    // A missing token is a usage error, not a guess: not counted.
    for (let i = 0; i < 5; i++) expect((await ask(null)).status).toBe(401);
    expect((await ask(TOKENS.read)).status).toBe(200);
    // The tenth guess is still answered 401; from then on the address is refused.
    expect((await ask('wrong-token-9-xxxxxxxxxxxx')).status).toBe(401);
    const limited = await ask('wrong-token-10-xxxxxxxxxxx');
    expect(limited.status).toBe(429);
    expect(limited.code).toBe('RATE_LIMITED');
    expect(Number(limited.retryAfter)).toBeGreaterThanOrEqual(1);
    expect(Number(limited.retryAfter)).toBeLessThanOrEqual(3);
    // Refused whatever it sends, so a right guess is not told apart from a wrong one.
    expect((await ask(TOKENS.admin)).status).toBe(429);
    // Another client address is unaffected, and counts on its own.
    expect((await ask(TOKENS.read, '127.0.0.2')).status).toBe(200);
    expect((await ask('wrong-token-from-2-xxxxxxx', '127.0.0.2')).status).toBe(401);
    expect((await ask(TOKENS.read, '127.0.0.2')).status).toBe(200);
    // The data plane is not behind this limit.
    const d = await request(`${g.url}/`);
    expect(d.statusCode).toBe(200);
    await d.body.text();
    // After the window, the address is served again.
    await waitFor(async () => (await ask(TOKENS.read)).status === 200, { timeout: 6000, interval: 250 });
    expect((await ask('wrong-token-again-xxxxxxxx')).status).toBe(401);
  });
});

describe('control API: requests a browser page could forge', () => {
  let up: Upstream;
  let g: InProcessGateway;

  beforeAll(async () => {
    up = await startUpstream('blue');
    // No tokens (allowed on loopback only): the case where a page is most dangerous.
    g = await startInProcess(shopConfig({ blue: { weight: 90, endpoints: [up.address] }, green: { weight: 10, endpoints: [up.address] } }));
  });

  afterAll(async () => {
    await g?.close();
    await up?.close();
  });

  async function send(method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; code?: string }> {
    const res = await request(`${g.controlUrl}${path}`, { method: method as 'POST', headers, body, headersTimeout: 10_000, bodyTimeout: 10_000 });
    const text = await res.body.text();
    let code: string | undefined;
    try {
      code = JSON.parse(text).error?.code;
    } catch {
      /* not JSON */
    }
    return { status: res.statusCode, code };
  }

  it('a cross-origin POST (simple request: text/plain or no body) changes nothing; a DNS-rebound Host is refused without tokens; same-origin works', async () => {
    const rev = async (): Promise<number> => (await api(g.controlUrl, 'GET', '/v1/services', { token: null })).json.revision;
    const r0 = await rev();
    expect(await send('POST', '/v1/services/shop/rollback', { origin: 'http://evil.example' })).toEqual({ status: 403, code: 'CROSS_ORIGIN' });
    expect(await send('POST', '/v1/services/shop/cutover', { origin: 'null', 'content-type': 'text/plain' }, '{"to":"green","force":true}')).toEqual({ status: 403, code: 'CROSS_ORIGIN' });
    expect(await send('POST', '/v1/reload', { origin: `http://localhost:${new URL(g.controlUrl).port}` })).toEqual({ status: 403, code: 'CROSS_ORIGIN' });
    // text/plain is no longer a body the API reads, whoever sends it.
    expect(await send('POST', '/v1/services/shop/cutover', { 'content-type': 'text/plain' }, '{"to":"green","force":true}')).toEqual({ status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' });
    // DNS rebinding: a page at evil.example resolving to 127.0.0.1 sends its own name.
    expect(await send('GET', '/v1/services', { host: `evil.example:${new URL(g.controlUrl).port}` })).toEqual({ status: 403, code: 'FORBIDDEN_HOST' });
    expect(await send('POST', '/v1/services/shop/rollback', { host: 'evil.example', origin: 'http://evil.example' })).toMatchObject({ status: 403 });
    expect(await rev()).toBe(r0);
    // The dashboard's own requests: same origin.
    const same = await send('PUT', '/v1/services/shop/weights', { origin: g.controlUrl, 'content-type': 'application/json' }, '{"weights":{"blue":80,"green":20}}');
    expect(same.status).toBe(200);
    expect(await rev()).toBe(r0 + 1);
  });
});

// GET /v1/openapi.json: an OpenAPI 3.1 document that a real validator accepts, with
// every route, its scope and its error codes; docs/control-api.md generated from it.

import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Validator } from '@seriousme/openapi-schema-validator';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ajv } from '../config/load.js';
import { controlApiMarkdown, ERROR_CODES, openApiDocument, ROUTE_DOCS } from '../control/openapi.js';
import { ROOT, shopConfig, startProcess, startUpstream, type GatewayProcess, type Upstream } from './helpers.js';
import { api, controlTop } from './control-helpers.js';

describe('OpenAPI document', () => {
  let blue: Upstream;
  let gw: GatewayProcess;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  let doc: any;

  beforeAll(async () => {
    blue = await startUpstream('blue');
    gw = await startProcess(shopConfig({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [blue.address] } }, {}, controlTop()));
    // No token: the document is public.
    const r = await api(gw.controlUrl, 'GET', '/v1/openapi.json', { token: null });
    expect(r.status).toBe(200);
    doc = r.json;
  });
  afterAll(async () => {
    await gw?.stop('SIGTERM');
    await blue?.close();
  });

  it('is valid OpenAPI 3.1 (checked by @seriousme/openapi-schema-validator)', async () => {
    expect(doc.openapi).toBe('3.1.0');
    const v = new Validator();
    const res = await v.validate(doc);
    expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
    expect(res.valid).toBe(true);
    expect(v.version).toBe('3.1');
  });

  it('has every route, with its scope, and the routes\' own body schemas', () => {
    const ops = Object.entries(doc.paths as Record<string, Record<string, { 'x-scope'?: string; security: unknown[] }>>).flatMap(([p, m]) =>
      Object.entries(m).map(([method, op]) => ({ key: `${method.toUpperCase()} ${p.replace(/\{(\w+)\}/g, ':$1')}`, op })),
    );
    expect(ops.map((o) => o.key).sort()).toEqual(Object.keys(ROUTE_DOCS).sort());
    const scope = Object.fromEntries(ops.map((o) => [o.key, o.op['x-scope'] ?? null]));
    expect(scope['GET /v1/services']).toBe('read');
    expect(scope['PUT /v1/services/:name/weights']).toBe('deploy');
    expect(scope['POST /v1/services/:name/rollout/abort']).toBe('deploy');
    expect(scope['PUT /v1/services/:name/mirror']).toBe('deploy');
    expect(scope['GET /v1/services/:name/mirror']).toBe('read');
    expect(scope['POST /v1/reload']).toBe('admin');
    expect(scope['POST /v1/services/:name/endpoints/:id/drain']).toBe('admin');
    expect(scope['GET /v1/openapi.json']).toBe(null);
    for (const o of ops) if (o.op['x-scope'] !== undefined) expect(o.op.security).toContainEqual({ bearer: [] });
    // Every example body in the document (and so in docs/control-api.md's curl lines) is
    // one the route accepts: checked with the API's own validator.
    let examples = 0;
    for (const methods of Object.values(doc.paths as Record<string, Record<string, { requestBody?: { content: Record<string, { schema: object; example?: unknown }> } }>>)) {
      for (const op of Object.values(methods)) {
        const media = op.requestBody?.content['application/json'];
        if (media?.example === undefined) continue;
        examples++;
        const validate = ajv.compile(media.schema);
        expect(validate(media.example), JSON.stringify(validate.errors)).toBe(true);
      }
    }
    expect(examples).toBe(4);
    const body = doc.paths['/v1/services/{name}/rollout'].post.requestBody.content['application/json'].schema;
    expect(body.required).toEqual(['to', 'steps', 'interval']);
    expect(body.properties.analysis.properties.noTrafficPolicy.enum).toEqual(['fail', 'continue']);
  });

  it('names every error code the control API can answer', () => {
    // Every code the sources throw or send is in ERROR_CODES (and so in the document).
    const thrown = new Set<string>();
    for (const dir of ['control', 'control/rollout', 'control/store']) {
      for (const f of readdirSync(join(ROOT, dir)).filter((n) => n.endsWith('.ts') && !n.endsWith('.test.ts'))) {
        const src = readFileSync(join(ROOT, dir, f), 'utf8');
        for (const m of src.matchAll(/ControlError\(\d+, '([A-Z_]+)'/g)) thrown.add(m[1]);
        for (const m of src.matchAll(/code: '([A-Z_]+)'/g)) thrown.add(m[1]);
        for (const m of src.matchAll(/\[\d{3}, '([A-Z_]+)'\]/g)) thrown.add(m[1]);
      }
    }
    expect(thrown.size).toBeGreaterThan(20);
    for (const code of thrown) expect(Object.keys(ERROR_CODES), code).toContain(code);
    const described = JSON.stringify(doc.paths);
    for (const code of Object.keys(ERROR_CODES).filter((c) => !['INSECURE_LISTEN', 'NOT_FOUND', 'UI_UNAVAILABLE'].includes(c))) expect(described, code).toContain(`\`${code}\``);
    const weights = doc.paths['/v1/services/{name}/weights'].put.responses;
    expect(weights['412'].description).toContain('REVISION_MISMATCH');
    expect(weights['401'].description).toContain('UNAUTHORIZED');
  });

  it('docs/control-api.md is what `npm run docs` generates from the document', async () => {
    const generated = controlApiMarkdown(await openApiDocument());
    expect(readFileSync(join(ROOT, 'docs/control-api.md'), 'utf8')).toBe(generated);
    // The live document and the one the docs are made from are the same.
    expect(await openApiDocument()).toEqual(doc);
  });
});

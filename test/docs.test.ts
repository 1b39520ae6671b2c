// The generated config reference: docs/configuration.md must be what `npm run docs`
// writes from the schema, the defaults and config/descriptions.ts, and every key of the
// schema must have a description (so nobody can add a key undocumented). Also
// `switchyard schema` (the loader's schema, documented) and `switchyard --version`.

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { configurationMarkdown, descriptionGaps, documentedSchema, schemaKeys } from '../config/docs.js';
import { configSchema } from '../config/schema.js';
import { CLI, ROOT } from './helpers.js';

describe('docs/configuration.md', () => {
  it('every schema key has a description, and every description names a key', () => {
    const gaps = descriptionGaps();
    expect(gaps.undocumented, 'add a line to config/descriptions.ts for each of these keys').toEqual([]);
    expect(gaps.unknown, 'these descriptions name no key of config/schema.ts').toEqual([]);
  });

  it('is what `npm run docs` generates from the schema (run it after changing the schema, defaults or descriptions)', () => {
    expect(readFileSync(join(ROOT, 'docs/configuration.md'), 'utf8')).toBe(configurationMarkdown());
  });

  it('docs/config.schema.json (the schema the examples point editors at) is `switchyard schema`', () => {
    expect(JSON.parse(readFileSync(join(ROOT, 'docs/config.schema.json'), 'utf8'))).toEqual(documentedSchema());
  });

  it('lists every key, with its default from the defaults object', () => {
    const md = configurationMarkdown();
    for (const { path } of schemaKeys()) expect(md).toContain(path.includes('.') ? `| \`${path}\` |` : `## \`${path}\``);
    expect(md).toMatch(/\| `gateway\.timeouts\.send` \| duration \| `30s` \|/);
    expect(md).toMatch(/\| `services\.NAME\.healthCheck\.interval` \| duration \| `2s` \|/);
    expect(md).toMatch(/\| `gateway\.listen` .* \| restart \|/);
  });
});

describe('switchyard schema and --version', () => {
  it('`switchyard schema` prints the loader\'s schema with descriptions, and it validates like the loader', () => {
    const r = spawnSync(process.execPath, [CLI, 'schema'], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const printed = JSON.parse(r.stdout);
    expect(printed).toEqual(documentedSchema());
    expect(printed.properties.gateway.properties.listen.description).toMatch(/listener/);
    expect(printed.properties.gateway.properties.timeouts.properties.send.default).toBe('30s');
    // Same keys and rules as the loader's schema: strip the annotations and compare.
    const strip = (n: unknown): unknown =>
      Array.isArray(n) ? n.map(strip) : n !== null && typeof n === 'object'
        ? Object.fromEntries(Object.entries(n).filter(([k]) => !['description', 'default', '$schema', 'title'].includes(k)).map(([k, v]) => [k, strip(v)]))
        : n;
    expect(strip(printed)).toEqual(JSON.parse(JSON.stringify(configSchema)));
    // An editor's validator (plain ajv, unknown formats ignored) accepts every example.
    const ajv = new Ajv({ strict: false, allowUnionTypes: true, validateFormats: false });
    const validate = ajv.compile(printed);
    for (const f of ['static.yaml', 'workers.yaml']) {
      expect(validate(parse(readFileSync(join(ROOT, 'examples', f), 'utf8'))), JSON.stringify(validate.errors)).toBe(true);
    }
  });

  it('`switchyard --version` prints the package version', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
    const r = spawnSync(process.execPath, [CLI, '--version'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe(pkg.version);
  });
});

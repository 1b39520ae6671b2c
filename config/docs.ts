// The config reference, made from the schema the loader validates with, the defaults
// object and the descriptions beside them. `switchyard schema` prints documentedSchema();
// `npm run docs` writes configurationMarkdown() to docs/configuration.md, and
// test/docs.test.ts fails when either drifts from the schema.

import { configSchema, FORMAT_MESSAGES } from './schema.js';
import { defaults } from './defaults.js';
import { descriptions, type KeyDoc } from './descriptions.js';

type Node = Record<string, unknown>;

export interface KeyEntry {
  path: string;
  node: Node;
  required: boolean;
}

/** Every key of the schema, depth first in schema order. Maps keyed by any name
 * (services, versions) appear as NAME / VERSION; array items as `key[]`. */
export function schemaKeys(schema: Node = configSchema as unknown as Node): KeyEntry[] {
  const out: KeyEntry[] = [];
  const walk = (node: Node, prefix: string): void => {
    const props = node.properties as Record<string, Node> | undefined;
    const required = new Set((node.required as string[] | undefined) ?? []);
    if (props !== undefined) {
      for (const [k, child] of Object.entries(props)) {
        const path = prefix ? `${prefix}.${k}` : k;
        out.push({ path, node: child, required: required.has(k) });
        walk(child, path);
      }
    }
    const add = node.additionalProperties;
    if (add !== null && typeof add === 'object' && (add as Node).type === 'object') {
      const name = prefix === 'services' ? 'NAME' : prefix.endsWith('.versions') ? 'VERSION' : 'KEY';
      const path = `${prefix}.${name}`;
      out.push({ path, node: add as Node, required: false });
      walk(add as Node, path);
    }
    const items = node.items as Node | undefined;
    if (node.type === 'array' && items?.type === 'object') {
      const path = `${prefix}[]`;
      out.push({ path, node: items, required: false });
      walk(items, path);
    }
  };
  walk(schema, '');
  return out;
}

/** The defaults object keeps service, DNS and Consul defaults under short names. */
function defaultAt(path: string): unknown {
  let p = path;
  p = p.replace(/^services\.NAME\.versions\.VERSION\.dns\./, 'dns.');
  p = p.replace(/^services\.NAME\./, 'service.');
  p = p.replace(/^discovery\.consul\./, 'consul.');
  let node: unknown = defaults;
  for (const k of p.split('.')) {
    if (node === null || typeof node !== 'object' || !(k in node)) return undefined;
    node = (node as Record<string, unknown>)[k];
  }
  return node;
}

function yamlValue(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(yamlValue).join(', ')}]`;
  if (v !== null && typeof v === 'object') return `{ ${Object.entries(v).map(([k, x]) => `${k}: ${yamlValue(x)}`).join(', ')} }`;
  return String(v);
}

function isLeaf(node: Node): boolean {
  return node.type !== 'object' || node.properties === undefined;
}

function typeOf(node: Node): string {
  if (Array.isArray(node.enum)) return `one of ${(node.enum as unknown[]).map((e) => `\`${String(e)}\``).join(', ')}`;
  const fmt = node.format as string | undefined;
  if (fmt === 'duration') return 'duration';
  if (fmt === 'size') return 'size';
  if (fmt === 'listen') return '`host:port`';
  if (fmt === 'endpoint') return 'endpoint';
  const t = [node.type].flat().join(' or ');
  let s = t;
  if (node.type === 'array') {
    const items = node.items as Node | undefined;
    s = items?.type === 'object' ? 'list of objects' : `list of ${items ? typeOf(items) : 'values'}`;
  } else if (node.type === 'object') {
    s = node.properties === undefined ? 'map' : 'object';
  }
  const bounds: string[] = [];
  if (node.minimum !== undefined && node.maximum !== undefined) bounds.push(`${String(node.minimum)}–${String(node.maximum)}`);
  else if (node.minimum !== undefined && t !== 'string or integer') bounds.push(`≥ ${String(node.minimum)}`);
  if (node.minLength === 1) bounds.push('non-empty');
  else if (node.minLength !== undefined) bounds.push(`at least ${String(node.minLength)} characters`);
  return bounds.length ? `${s} (${bounds.join(', ')})` : s;
}

function defaultText(path: string, entry: KeyEntry, doc: KeyDoc): string {
  const v = defaultAt(path);
  if (v !== undefined && (typeof v !== 'object' || Array.isArray(v))) return `\`${yamlValue(v)}\``;
  if (doc.default !== undefined) return /^[\w./[\]-]+$/.test(doc.default) ? `\`${doc.default}\`` : doc.default;
  if (entry.required) return 'required';
  return '—';
}

function exampleText(path: string, entry: KeyEntry, doc: KeyDoc): string {
  if (doc.example !== undefined) return `\`${doc.example}\``;
  const v = defaultAt(path);
  if (v !== undefined && (typeof v !== 'object' || Array.isArray(v))) return `\`${yamlValue(v)}\``;
  if (!isLeaf(entry.node)) return '';
  const n = entry.node;
  if (n.type === 'boolean') return '`true`';
  if (Array.isArray(n.enum)) return `\`${String(n.enum[0])}\``;
  if (n.format === 'duration') return '`10s`';
  if (n.format === 'listen') return '`127.0.0.1:8080`';
  return '';
}

const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

/** Keys of the schema without a description, and descriptions naming no key. */
export function descriptionGaps(): { undocumented: string[]; unknown: string[] } {
  const keys = schemaKeys().map((e) => e.path);
  const set = new Set(keys);
  return {
    undocumented: keys.filter((k) => descriptions[k] === undefined),
    unknown: Object.keys(descriptions).filter((k) => !set.has(k)),
  };
}

/** docs/configuration.md. */
export function configurationMarkdown(): string {
  const lines: string[] = [
    '<!-- Generated by `npm run docs` from config/schema.ts, config/defaults.ts and config/descriptions.ts. Do not edit by hand: test/docs.test.ts fails when this file and the schema drift. -->',
    '',
    '# Configuration reference',
    '',
    'One YAML file, validated by one JSON Schema (`switchyard schema` prints it; `switchyard check --config FILE` validates a file). Unknown keys are errors, and every problem is reported as `key.path: message`.',
    '',
    '- `${VAR}` and `${VAR:-default}` are replaced in string values after parsing (an unset variable without a default is an error); a number or boolean key takes a `${VAR}` that holds one.',
    `- **duration**: ${FORMAT_MESSAGES.duration.replace(/^must be /, '')}.`,
    `- **size**: ${FORMAT_MESSAGES.size.replace(/^must be /, '')}.`,
    '- **endpoint**: `host:port`, `http://host:port` or `https://host:port`.',
    '- Relative file names (certificates, CAs, the state file) are relative to the config file.',
    '- `services.NAME` and `….versions.VERSION` stand for any name of letters, digits, `_`, `.` and `-`; `key[]` is a list and `key[].field` a field of its items.',
    '- **Reload**: `SIGHUP` (or `POST /v1/reload`) re-reads the file; an invalid file is refused and the running config stays. Keys marked *restart* keep their running value until the process restarts. For services, weights set through the control API win over the file.',
    '',
    'Complete files for each setup are in the `examples/` folder at the top of the repository.',
    '',
  ];
  const sections = new Map<string, KeyEntry[]>();
  for (const e of schemaKeys()) {
    const top = e.path.split(/[.[]/)[0];
    if (!sections.has(top)) sections.set(top, []);
    sections.get(top)?.push(e);
  }
  for (const [top, entries] of sections) {
    const topDoc = descriptions[top];
    lines.push(`## \`${top}\``, '');
    if (topDoc) lines.push(topDoc.text, '');
    lines.push('| key | type | default | example | reload | meaning |', '|---|---|---|---|---|---|');
    for (const e of entries) {
      if (e.path === top) continue;
      const doc = descriptions[e.path] ?? { text: '**(undocumented)**', reload: 'sighup' };
      lines.push(`| \`${e.path}\` | ${cell(typeOf(e.node))} | ${cell(defaultText(e.path, e, doc))} | ${cell(exampleText(e.path, e, doc))} | ${doc.reload === 'restart' ? 'restart' : 'SIGHUP'} | ${cell(doc.text)} |`);
    }
    lines.push('');
  }
  return lines.join('\n');
}

/** The loader's schema with each key's description (and default) attached, for editors. */
export function documentedSchema(): Node {
  // A JSON copy, not structuredClone: the schema shares sub-schemas (listen, duration)
  // between keys, and each key needs its own description.
  const copy = JSON.parse(JSON.stringify(configSchema)) as Node;
  const byPath = new Map(schemaKeys(copy).map((e) => [e.path, e.node]));
  for (const [path, node] of byPath) {
    const doc = descriptions[path];
    if (doc === undefined) continue;
    node.description = doc.reload === 'restart' ? `${doc.text} (Takes effect on restart.)` : doc.text;
    const v = defaultAt(path);
    if (v !== undefined && (typeof v !== 'object' || Array.isArray(v))) node.default = v;
  }
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: 'Switchyard configuration',
    ...copy,
  };
}

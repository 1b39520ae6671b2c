// examples/: every file is `switchyard check`-clean, run as a user runs it. The TLS
// example names certificate files that are not shipped (a private key has no place in a
// repository): it is checked in a copy with throwaway certificates next to it, made as
// its header comment tells a user to.

import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeCa } from './certs.js';
import { CLI, ROOT } from './helpers.js';

const dir = join(ROOT, 'examples');
const files = readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort();

function check(file: string, env: Record<string, string> = {}): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [CLI, 'check', '--config', file], { encoding: 'utf8', env: { PATH: process.env.PATH, ...env } });
  return { status: r.status, out: r.stdout + r.stderr };
}

describe('examples/', () => {
  it('has one file per setup', () => {
    expect(files).toEqual(['consul.yaml', 'dns.yaml', 'redis-fleet.yaml', 'static.yaml', 'tls-http2.yaml', 'workers.yaml']);
  });

  it.each(files.filter((f) => f !== 'tls-http2.yaml'))('%s passes switchyard check', (f) => {
    const r = check(join(dir, f));
    expect(r.out).toBe(`${join(dir, f)}: ok\n`);
    expect(r.status).toBe(0);
  });

  it('tls-http2.yaml passes switchyard check with its certificate files beside it', () => {
    const copy = mkdtempSync(join(tmpdir(), 'switchyard-example-'));
    mkdirSync(join(copy, 'certs'));
    copyFileSync(join(dir, 'tls-http2.yaml'), join(copy, 'tls-http2.yaml'));
    const ca = makeCa();
    const leaf = ca.issue('shop', 'shop.example.com', ['shop.example.com']);
    copyFileSync(leaf.cert, join(copy, 'certs/shop.crt'));
    copyFileSync(leaf.key, join(copy, 'certs/shop.key'));
    copyFileSync(join(ca.dir, 'ca.crt'), join(copy, 'certs/internal-ca.pem'));
    const r = check(join(copy, 'tls-http2.yaml'));
    expect(r.out).toBe(`${join(copy, 'tls-http2.yaml')}: ok\n`);
    // Without them, check names each missing file.
    const bare = check(join(dir, 'tls-http2.yaml'));
    expect(bare.status).toBe(1);
    expect(bare.out).toMatch(/gateway\.tls\.certificates\.0: cannot read certificate/);
  });
});

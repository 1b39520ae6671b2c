// The package's own package.json (its version for `switchyard --version` and the
// OpenAPI document). Found by walking up from this module, which sits at config/ in
// the sources and at dist/config/ once built.

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: { name: string; version: string } | undefined;

export function packageInfo(): { name: string; version: string } {
  if (cached !== undefined) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'switchyard' && typeof pkg.version === 'string') return (cached = { name: pkg.name, version: pkg.version });
    }
    const up = dirname(dir);
    if (up === dir) throw new Error('package.json of switchyard not found');
    dir = up;
  }
}

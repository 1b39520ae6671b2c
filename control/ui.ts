// The live dashboard: three static files (control/ui/index.html, app.js, app.css) served
// at GET /ui on the control listener. The assets themselves need no token (they hold no
// data); every data call the page makes carries the operator's bearer token.
//
// The files are read once, at registration. They live next to the sources, not in dist/:
// dist/control/ui.js finds them at ../../control/ui (also /app/dist/control/ui.js →
// /app/control/ui in the Docker image), control/ui.ts run from source at ./ui, and as a
// last resort control/ui under the working directory.

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';

export const UI_CSP = "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'";

const ASSETS: { file: string; paths: string[]; type: string }[] = [
  { file: 'index.html', paths: ['/ui', '/ui/', '/ui/index.html'], type: 'text/html; charset=utf-8' },
  { file: 'app.js', paths: ['/ui/app.js'], type: 'text/javascript; charset=utf-8' },
  { file: 'app.css', paths: ['/ui/app.css'], type: 'text/css; charset=utf-8' },
];

/** The directory holding the dashboard's files, or undefined when none is found. */
export function uiDir(): string | undefined {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [resolve(here, '../../control/ui'), resolve(here, 'ui'), resolve(process.cwd(), 'control/ui')];
  return candidates.find((d) => existsSync(join(d, 'index.html')));
}

export function registerUi(app: FastifyInstance): void {
  const dir = uiDir();
  const headers = {
    'content-security-policy': UI_CSP,
    'x-content-type-options': 'nosniff',
    'cache-control': 'no-store',
    'referrer-policy': 'no-referrer',
    'x-frame-options': 'DENY',
  };
  for (const a of ASSETS) {
    let body: Buffer | undefined;
    try {
      if (dir !== undefined) body = readFileSync(join(dir, a.file));
    } catch {
      body = undefined;
    }
    for (const path of a.paths) {
      // No config.scope: the control API's authentication hook lets these through.
      app.get(path, async (_req, reply) => {
        void reply.headers(headers);
        if (body === undefined) {
          return reply.code(503).send({ error: { code: 'UI_UNAVAILABLE', message: `dashboard asset ${a.file} not found (looked for control/ui next to the build and under the working directory)` } });
        }
        return reply.type(a.type).send(body);
      });
    }
  }
}

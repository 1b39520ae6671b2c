// Helpers for the control-plane suites: real HTTP calls to the control API, the CLI run
// as a child process, a slow-path upstream handler and a background load. No mocks.

import { spawn } from 'node:child_process';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { request } from 'undici';
import { CLI, defaultHandler, load, type LoadResult, type Upstream } from './helpers.js';

/** Bearer tokens (≥ 16 characters) and the control.tokens entries that carry them. */
export const TOKENS = {
  deploy: 'deploy-token-0123456789abcdef',
  read: 'read-token-0123456789abcdefgh',
  admin: 'admin-token-0123456789abcdefg',
} as const;

export const CONTROL_TOKENS = [
  { name: 'deployer', token: TOKENS.deploy, scopes: ['read', 'deploy'] },
  { name: 'reader', token: TOKENS.read, scopes: ['read'] },
  { name: 'ops', token: TOKENS.admin, scopes: ['admin'] },
];

/** `top` overrides for shopConfig: tokens on the control listener (plus extra control keys). */
export function controlTop(extraControl: Record<string, unknown> = {}, top: Record<string, unknown> = {}): Record<string, unknown> {
  return { control: { listen: '127.0.0.1:0', tokens: CONTROL_TOKENS, ...extraControl }, ...top };
}

export interface ApiResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  json: any;
  text: string;
}

/**
 * One control API call. `token` defaults to the deploy token; null sends no
 * Authorization header. `raw` sends a body as is (content-type JSON unless given).
 */
export async function api(
  base: string,
  method: string,
  path: string,
  opts: { body?: unknown; raw?: string; token?: string | null; headers?: Record<string, string> } = {},
): Promise<ApiResult> {
  const headers: Record<string, string> = { ...opts.headers };
  const token = opts.token === undefined ? TOKENS.deploy : opts.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  let body: string | undefined;
  if (opts.raw !== undefined) {
    body = opts.raw;
    headers['content-type'] ??= 'application/json';
  } else if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers['content-type'] = 'application/json';
  }
  const res = await request(`${base}${path}`, { method: method as 'GET', headers, body, headersTimeout: 60_000, bodyTimeout: 60_000 });
  const text = await res.body.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.statusCode, headers: res.headers, json, text };
}

/** GET /v1/services/shop with the read token; throws unless 200. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function shop(base: string): Promise<any> {
  const r = await api(base, 'GET', '/v1/services/shop', { token: TOKENS.read });
  if (r.status !== 200) throw new Error(`GET /v1/services/shop: ${r.status} ${r.text}`);
  return r.json;
}

/** GET /v1/services/shop/rollout with the read token; throws unless 200. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function rollout(base: string): Promise<any> {
  const r = await api(base, 'GET', '/v1/services/shop/rollout', { token: TOKENS.read });
  if (r.status !== 200) throw new Error(`GET /v1/services/shop/rollout: ${r.status} ${r.text}`);
  return r.json;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  startedAt: number;
  endedAt: number;
}

/** Runs `node dist/bin/switchyard.js ARGS` with SWITCHYARD_URL/SWITCHYARD_TOKEN (token
 * null: unset). Killed (by its own pid) after `timeoutMs`. */
export function runCli(args: string[], env: { url: string; token?: string | null }, timeoutMs = 60_000): Promise<CliResult> {
  const e: NodeJS.ProcessEnv = { ...process.env, SWITCHYARD_URL: env.url };
  const token = env.token === undefined ? TOKENS.deploy : env.token;
  if (token === null) delete e.SWITCHYARD_TOKEN;
  else e.SWITCHYARD_TOKEN = token;
  const startedAt = Date.now();
  const child = spawn(process.execPath, [CLI, ...args], { env: e, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) => {
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, startedAt, endedAt: Date.now() });
    });
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * An upstream handler with a slow path: `/slow?ms=N` answers 200 after N ms and records
 * when it ended (just before the last byte is written) in `slowEnds`; everything else
 * goes to the default JSON handler. `failEvery` > 0 answers every n-th other request with
 * 500 (deterministic, counted from the last reset).
 */
export function slowHandler(): {
  handler: (req: IncomingMessage, res: ServerResponse, up: Upstream) => void;
  slowEnds: number[];
  setFailEvery(n: number): void;
  /** Answers the held request `/hold?id=ID` (held until then, however long the test takes). */
  release(id: string): void;
} {
  const slowEnds: number[] = [];
  const held = new Map<string, () => void>();
  let failEvery = 0;
  let count = 0;
  return {
    slowEnds,
    setFailEvery(n: number) {
      failEvery = n;
      count = 0;
    },
    release(id: string) {
      held.get(id)?.();
      held.delete(id);
    },
    handler(req, res, up) {
      const h = /^\/hold\?id=([\w-]+)/.exec(req.url ?? '');
      if (h !== null) {
        req.resume();
        held.set(h[1], () => {
          const body = JSON.stringify({ name: up.name, slow: true });
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
          slowEnds.push(Date.now());
          res.end(body);
        });
        return;
      }
      const m = /^\/slow\?ms=(\d+)/.exec(req.url ?? '');
      if (m !== null) {
        req.resume();
        setTimeout(() => {
          const body = JSON.stringify({ name: up.name, slow: true });
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
          slowEnds.push(Date.now());
          res.end(body);
        }, Number(m[1]));
        return;
      }
      if (failEvery > 0 && ++count % failEvery === 0) {
        req.resume();
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ name: up.name, error: 'deliberate' }));
        return;
      }
      defaultHandler(req, res, up);
    },
  };
}

/** A background load on `url` until stop() (concurrency ≤ 10, paced per worker). */
/** Runs fn while load runs against url; the load stops when fn ends, however it ends. */
export async function withLoad<T>(url: string, opts: Parameters<typeof startLoad>[1], fn: () => Promise<T>): Promise<T> {
  const ld = startLoad(url, opts);
  try {
    return await fn();
  } finally {
    await ld.stop();
  }
}

export function startLoad(url: string, opts: { concurrency?: number; ratePerWorker?: number; headers?: Record<string, string> } = {}): { stop(): Promise<LoadResult> } {
  let stopped = false;
  const p = load(url, { concurrency: opts.concurrency ?? 8, ratePerWorker: opts.ratePerWorker ?? 40, headers: opts.headers, until: () => stopped });
  return {
    stop() {
      stopped = true;
      return p;
    },
  };
}

/** A slow GET through the gateway (its own connection), with when it ended. */
export async function slowGet(url: string): Promise<{ status: number; body: { name?: string; slow?: boolean }; endedAt: number; ms: number }> {
  const t0 = Date.now();
  const res = await request(url, { headersTimeout: 60_000, bodyTimeout: 60_000, reset: true });
  const text = await res.body.text();
  let body = {};
  try {
    body = JSON.parse(text);
  } catch {
    /* keep {} */
  }
  return { status: res.statusCode, body, endedAt: Date.now(), ms: Date.now() - t0 };
}

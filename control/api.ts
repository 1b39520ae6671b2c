// The control API (fastify) on control.listen: the routes README "Control API and CLI" lists.
// Request bodies are validated with the config's own ajv instance and schemas, so a
// weight or a duration means the same thing in the file and on the wire. Every error is
// {"error":{"code","message",...}}; nothing is changed by a request that fails.
//
// Authentication: `Authorization: Bearer TOKEN`. Configured tokens are kept only as
// SHA-256 digests and compared with timingSafeEqual against every digest (no early
// exit), so timing reveals neither a token nor which one matched. Tokens are never
// logged (fastify's own logger is off; our log lines carry the token's name only).
// With no token configured the API accepts anyone, which start() allows only on a
// loopback address; the actor is then "local".

import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { STATUS_CODES } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { ErrorObject } from 'ajv';
import type { Logger } from 'pino';
import { ajv, describeErrors, isLoopbackHost, mirrorBody, normalizeMirror, parseDuration, splitHostPort, type MirrorBody } from '../config/load.js';
import { durationSchema, mirrorSchema, shadowMirrorSchema, weightsSchema } from '../config/schema.js';
import type { Config, MirrorConfig } from '../config/types.js';
import { Controller as ControllerClass } from './controller.js';
import { MIRROR_RESULTS, SAMPLE_RING, type MirrorResult, type MirrorSample } from '../gateway/mirror.js';
import type { Controller } from './controller.js';
import { ControlError } from './errors.js';
import type { AnalysisConfig, HookConfig, HookPhase, InconclusivePolicy, PrometheusConfig, RolloutRecord } from './state.js';
import { criterionNames } from './rollout/analysis.js';
import { registerUi } from './ui.js';
import { registerOpenApi } from './openapi.js';
import { AuthLimiter } from './authlimit.js';
import { LiveFeed } from './live.js';
import { MIN_TLS_VERSION } from '../gateway/tls.js';

export type Scope = 'read' | 'deploy' | 'admin';
const RANK: Record<Scope, number> = { read: 1, deploy: 2, admin: 3 };

export interface ControlApiOptions {
  config: Config['control'];
  controller: Controller;
  log: Logger;
  /** POST /v1/reload: re-reads the config file; returns the problems or []. */
  reload: () => string[];
  /** Extra state shown by GET /v1/status (webhook counters, store kind). */
  info?: () => Record<string, unknown>;
}

export const ANALYSIS_DEFAULTS: AnalysisConfig = {
  maxErrorRate: 0.01,
  minRequests: 20,
  noTrafficPolicy: 'fail',
  noTrafficIntervals: 3,
};

/** The rollout body's `analysis`, as the schema below admits it. */
/** A built-in threshold: its bound, or `{max, dryRun}` to try it without it failing. */
type Threshold<T> = T | { max: T; dryRun?: boolean };

interface AnalysisBody {
  maxErrorRate?: Threshold<number>;
  maxP99?: Threshold<string>;
  maxErrorRateOverBaseline?: Threshold<number>;
  maxP99OverBaseline?: Threshold<string>;
  minRequests?: number;
  noTrafficPolicy?: 'fail' | 'continue';
  noTrafficIntervals?: number;
  maxMirrorDiffRate?: number;
  dryRun?: string[];
  prometheus?: PrometheusConfig;
  inconclusivePolicy?: InconclusivePolicy;
}

interface HookBody {
  name: string;
  url: string;
  on: HookPhase;
  timeout?: string;
  secret?: string;
  steps?: number[];
}

/** The default time a gate hook has to answer. */
const HOOK_TIMEOUT_MS = 10_000;

/** The analysis settings of a rollout: the body's, over the defaults. Without any
 * threshold the error-rate default applies; given only maxP99, only latency is judged. */
function analysisOf(body: AnalysisBody): AnalysisConfig {
  // The object form of a threshold is its bound plus a dry-run mark (kept in dryRun).
  const dryRun = [...(body.dryRun ?? [])];
  const bound = <T extends number | string>(name: string, t: Threshold<T> | undefined): T | undefined => {
    if (t === undefined || typeof t !== 'object') return t;
    if (t.dryRun === true) dryRun.push(name);
    return t.max;
  };
  const a = {
    ...body,
    maxErrorRate: bound('maxErrorRate', body.maxErrorRate),
    maxP99: bound('maxP99', body.maxP99),
    maxErrorRateOverBaseline: bound('maxErrorRateOverBaseline', body.maxErrorRateOverBaseline),
    maxP99OverBaseline: bound('maxP99OverBaseline', body.maxP99OverBaseline),
    dryRun: body.dryRun === undefined && dryRun.length === 0 ? undefined : dryRun,
  };
  const out: AnalysisConfig = {
    minRequests: a.minRequests ?? ANALYSIS_DEFAULTS.minRequests,
    noTrafficPolicy: a.noTrafficPolicy ?? ANALYSIS_DEFAULTS.noTrafficPolicy,
    noTrafficIntervals: a.noTrafficIntervals ?? ANALYSIS_DEFAULTS.noTrafficIntervals,
  };
  const maxErrorRate = a.maxErrorRate ?? (a.maxP99 === undefined ? ANALYSIS_DEFAULTS.maxErrorRate : undefined);
  // Only the settings given are stored (the audit log and GET rollout show what applies).
  if (maxErrorRate !== undefined) out.maxErrorRate = maxErrorRate;
  if (a.maxP99 !== undefined) out.maxP99Ms = parseDuration(a.maxP99);
  if (a.maxErrorRateOverBaseline !== undefined) out.maxErrorRateOverBaseline = a.maxErrorRateOverBaseline;
  if (a.maxP99OverBaseline !== undefined) out.maxP99OverBaselineMs = parseDuration(a.maxP99OverBaseline);
  if (a.maxMirrorDiffRate !== undefined) out.maxMirrorDiffRate = a.maxMirrorDiffRate;
  if (a.prometheus !== undefined) {
    const names = new Set<string>();
    const builtins = new Set(criterionNames({ ...out, prometheus: undefined }));
    for (const q of a.prometheus.queries) {
      if ((q.max === undefined) === (q.min === undefined)) throw new ControlError(400, 'INVALID_ROLLOUT', `analysis.prometheus.queries ${q.name}: give exactly one of max or min`);
      if (names.has(q.name) || builtins.has(q.name)) throw new ControlError(400, 'INVALID_ROLLOUT', `analysis.prometheus.queries: the name ${q.name} is taken (query names are unique and differ from the built-in criteria)`);
      names.add(q.name);
    }
    out.prometheus = a.prometheus;
  }
  // Without any threshold the error-rate default applies — unless Prometheus judges.
  if (a.maxErrorRate === undefined && a.maxP99 === undefined && a.prometheus !== undefined) delete out.maxErrorRate;
  if (a.inconclusivePolicy !== undefined) out.inconclusivePolicy = a.inconclusivePolicy;
  if (a.dryRun !== undefined) {
    const known = criterionNames(out);
    const unknown = a.dryRun.filter((n) => !known.includes(n));
    if (unknown.length > 0) throw new ControlError(400, 'INVALID_ROLLOUT', `analysis.dryRun: unknown criterion ${unknown.join(', ')} (known: ${known.join(', ')})`);
    if (a.dryRun.length > 0) out.dryRun = [...new Set(a.dryRun)];
  }
  return out;
}

function hooksOf(hooks: HookBody[] | undefined): HookConfig[] | undefined {
  if (hooks === undefined) return undefined;
  const names = new Set<string>();
  return hooks.map((h) => {
    if (names.has(h.name)) throw new ControlError(400, 'INVALID_ROLLOUT', `hooks: the name ${h.name} is used twice`);
    names.add(h.name);
    const timeoutMs = h.timeout === undefined ? HOOK_TIMEOUT_MS : parseDuration(h.timeout);
    if (timeoutMs < 100 || timeoutMs > 600_000) throw new ControlError(400, 'INVALID_ROLLOUT', `hooks ${h.name}: timeout must be from 100ms to 10m`);
    if (h.steps !== undefined && (h.on === 'pre-rollout' || h.on === 'post-rollout' || h.on === 'rolled-back')) {
      throw new ControlError(400, 'INVALID_ROLLOUT', `hooks ${h.name}: steps applies to pre-step and post-step hooks only`);
    }
    const out: HookConfig = { name: h.name, url: h.url, on: h.on, timeoutMs };
    if (h.secret !== undefined) out.secret = h.secret;
    if (h.steps !== undefined) out.steps = h.steps;
    return out;
  });
}

/** How long a closing control API waits for `cutover --wait` calls to answer. */
const DRAIN_ANSWER_GRACE_MS = 2000;

/** `If-Match: "<revision>"` of a write that changes weights; undefined without one. */
function ifMatchOf(req: FastifyRequest): number | undefined {
  const im = req.headers['if-match'];
  if (im === undefined) return undefined;
  const m = /^\s*(?:W\/)?"?(\d+)"?\s*$/.exec(String(im));
  if (m === null) throw new ControlError(400, 'BAD_REQUEST', 'If-Match must be a revision such as "12"');
  return Number(m[1]);
}

const wantsStream = (req: FastifyRequest): boolean => String(req.headers.accept ?? '').includes('text/event-stream');

const name = { type: 'string', format: 'name' } as const;

/** `"connections":{"drain":"30s"}` of a cutover or rollout. */
const connectionsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['drain'],
  properties: { drain: durationSchema },
} as const;

/** Longest connection drain window. */
const MAX_CONNECTION_DRAIN_MS = 3_600_000;

/** What a cutover answer says of the connections it moves. */
function connectionsView(c: { drainMs: number; shares: Record<string, number> } | undefined): { connections?: { drain: string; versions: string[] } } {
  return c === undefined ? {} : { connections: { drain: `${c.drainMs}ms`, versions: Object.keys(c.shares) } };
}

/** The drain window of a body's `connections`, checked; undefined without one. */
function connectionsDrainOf(c: { drain: string } | undefined): number | undefined {
  if (c === undefined) return undefined;
  const ms = parseDuration(c.drain);
  if (ms > MAX_CONNECTION_DRAIN_MS) throw new ControlError(400, 'INVALID_REQUEST', 'body.connections.drain: must be at most 1h');
  return ms;
}

/** A built-in threshold's schema: the bound alone, or `{max, dryRun}`. */
const threshold = <S extends object>(bound: S) =>
  ({ anyOf: [bound, { type: 'object', additionalProperties: false, required: ['max'], properties: { max: bound, dryRun: { type: 'boolean' } } }] }) as const;

const schemas = {
  weights: {
    type: 'object',
    additionalProperties: false,
    required: ['weights'],
    properties: { weights: weightsSchema },
  },
  cutover: {
    type: 'object',
    additionalProperties: false,
    required: ['to'],
    properties: { to: name, wait: { type: 'boolean' }, timeout: durationSchema, force: { type: 'boolean' }, connections: connectionsSchema },
  },
  rollout: {
    type: 'object',
    additionalProperties: false,
    required: ['to', 'steps', 'interval'],
    properties: {
      to: name,
      steps: { type: 'array', minItems: 1, maxItems: 101, items: { type: 'integer', minimum: 0, maximum: 100 } },
      interval: durationSchema,
      force: { type: 'boolean' },
      connections: connectionsSchema,
      // With a first step of 0: the mirror to the target during that (shadow) step.
      mirror: shadowMirrorSchema,
      approval: { type: 'array', maxItems: 101, uniqueItems: true, items: { type: 'integer', minimum: 0, maximum: 100 } },
      hooks: {
        type: 'array',
        maxItems: 20,
        items: {
          type: 'object',
          additionalProperties: false,
          required: ['name', 'url', 'on'],
          properties: {
            name,
            url: { type: 'string', pattern: '^https?://[^\\s]+$', maxLength: 2000 },
            on: { enum: ['pre-rollout', 'pre-step', 'post-step', 'post-rollout', 'rolled-back'] },
            timeout: durationSchema,
            secret: { type: 'string', minLength: 1, maxLength: 1000 },
            steps: { type: 'array', minItems: 1, maxItems: 101, uniqueItems: true, items: { type: 'integer', minimum: 0, maximum: 100 } },
          },
        },
      },
      analysis: {
        type: 'object',
        additionalProperties: false,
        properties: {
          maxErrorRate: threshold({ type: 'number', minimum: 0, maximum: 1 }),
          maxP99: threshold(durationSchema),
          maxErrorRateOverBaseline: threshold({ type: 'number', minimum: 0, maximum: 1 }),
          maxP99OverBaseline: threshold(durationSchema),
          minRequests: { type: 'integer', minimum: 0 },
          noTrafficPolicy: { enum: ['fail', 'continue'] },
          noTrafficIntervals: { type: 'integer', minimum: 1, maximum: 1000 },
          maxMirrorDiffRate: { type: 'number', minimum: 0, maximum: 1 },
          dryRun: { type: 'array', maxItems: 100, items: { type: 'string', minLength: 1, maxLength: 100 } },
          inconclusivePolicy: { enum: ['pause', 'rollback', 'continue'] },
          prometheus: {
            type: 'object',
            additionalProperties: false,
            required: ['url', 'queries'],
            properties: {
              url: { type: 'string', pattern: '^https?://[^\\s]+$', maxLength: 2000 },
              queries: {
                type: 'array',
                minItems: 1,
                maxItems: 50,
                items: {
                  type: 'object',
                  additionalProperties: false,
                  required: ['name', 'query'],
                  properties: {
                    name,
                    query: { type: 'string', minLength: 1, maxLength: 8000 },
                    max: { type: 'number' },
                    min: { type: 'number' },
                    dryRun: { type: 'boolean' },
                  },
                },
              },
            },
          },
        },
      },
    },
  },
  mirror: mirrorSchema,
  serviceParams: { type: 'object', properties: { name }, required: ['name'] },
  events: {
    type: 'object',
    additionalProperties: false,
    properties: { since: { type: 'string', pattern: '^[0-9]{1,15}$' }, limit: { type: 'string', pattern: '^[0-9]{1,4}$' } },
  },
} as const;

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

export function rolloutView(r: RolloutRecord | undefined): Record<string, unknown> | null {
  if (r === undefined) return null;
  return {
    id: r.id,
    service: r.service,
    state: r.state,
    to: r.to,
    baseline: r.baseline,
    step: r.step,
    percent: r.steps[r.step],
    steps: r.steps,
    interval: `${r.intervalMs}ms`,
    weights: r.weights,
    fromWeights: r.fromWeights,
    analysis: { ...r.analysis, last: r.lastAnalysis ?? null, steps: r.stepAnalyses ?? {} },
    approval: r.approval ?? [],
    approved: r.approved ?? [],
    awaitingApproval: r.state === 'awaiting_approval' ? r.step : null,
    pending: r.pending === true,
    // A hook's secret is never shown; that it has one is.
    hooks: (r.hooks ?? []).map(({ secret, timeoutMs, ...h }) => ({ ...h, timeout: `${timeoutMs}ms`, signed: secret !== undefined })),
    ...(r.shadow === undefined ? {} : { mirror: mirrorBody(r.shadow) }),
    reason: r.reason ?? null,
    history: r.history,
    actor: r.actor,
    startedAt: r.startedAt,
    endedAt: r.endedAt ?? null,
    connections: r.connectionsDrainMs === undefined ? null : { drain: `${r.connectionsDrainMs}ms` },
  };
}

declare module 'fastify' {
  interface FastifyContextConfig {
    scope?: Scope;
  }
  interface FastifyRequest {
    actor: string;
  }
}

/** The Origin header names the same scheme-less host:port as the Host header. */
function sameOrigin(origin: string, host: string | undefined): boolean {
  if (host === undefined) return false;
  try {
    return new URL(origin).host.toLowerCase() === host.toLowerCase();
  } catch {
    return false;
  }
}

function loopbackHostHeader(host: string | undefined): boolean {
  if (host === undefined) return false;
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:]+)(?::\d+)?$/.exec(host);
  if (m === null) return false;
  const h = m[1].toLowerCase();
  return isLoopbackHost(h.startsWith('[') ? h.slice(1, -1) : h);
}

function tokenDigests(tokens: Config['control']['tokens']): { name: string; digest: Buffer; rank: number }[] {
  return tokens.map((t) => ({ name: t.name, digest: digest(t.token), rank: Math.max(...t.scopes.map((s) => RANK[s])) }));
}

/** control.tls: the PEM contents (the files were checked when the config was loaded). */
function httpsOptions(tls: { cert: string; key: string }): { cert: string; key: string; minVersion: 'TLSv1.2' } {
  return { cert: readFileSync(tls.cert, 'utf8'), key: readFileSync(tls.key, 'utf8'), minVersion: MIN_TLS_VERSION };
}

/**
 * Node's http options for control.timeouts. Node checks these deadlines on a sweep every
 * connectionsCheckingInterval (30 s by default, which would let a 10 s timeout run to
 * 40 s); a sweep every quarter of the shorter timeout (at most each second) keeps them
 * close. A request whose headers or body are not all in by then is answered 408.
 */
function serverTimeouts(t: Config['control']['timeouts']): { headersTimeout: number; requestTimeout: number; connectionsCheckingInterval: number } {
  return {
    headersTimeout: t.headersMs,
    requestTimeout: t.requestMs,
    connectionsCheckingInterval: Math.max(25, Math.min(1000, Math.floor(Math.min(t.headersMs, t.requestMs) / 4))),
  };
}

/**
 * Node's 'clientError': a request cut by control.timeouts (408), headers over the limit
 * (431) or bytes that are not HTTP (400), answered in the API's own error shape when the
 * socket can still take it, then closed.
 */
function clientError(err: Error & { code?: string }, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, code, message] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'REQUEST_TIMEOUT', 'the request (headers and body) was not received within control.timeouts']
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'HEADERS_TOO_LARGE', 'request headers too large']
        : [400, 'BAD_REQUEST', 'malformed HTTP request'];
  const body = JSON.stringify({ error: { code, message } });
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  }
  socket.destroy();
}

export class ControlApi {
  readonly app: FastifyInstance;
  private tokens: { name: string; digest: Buffer; rank: number }[];
  private readonly streams = new Set<FastifyReply>();
  /** Open event streams per actor (token name), for control.maxStreamsPerToken. */
  private readonly streamsOf = new Map<string, number>();
  private maxStreamsPerToken: number;
  private readonly authLimiter: AuthLimiter;
  /** GET /v1/live's figures: computed at most once a second, shared by every stream. */
  readonly live: LiveFeed;
  /** Answers of `cutover --wait` calls in progress (each settles when its response closes). */
  private readonly drainAnswers = new Set<Promise<void>>();
  private bound: string | undefined;

  constructor(private readonly opts: ControlApiOptions) {
    this.tokens = tokenDigests(opts.config.tokens);
    this.authLimiter = new AuthLimiter(opts.config.authRateLimit);
    this.maxStreamsPerToken = opts.config.maxStreamsPerToken;
    this.live = new LiveFeed(() => this.liveView());
    const timeouts = serverTimeouts(opts.config.timeouts);
    const https = opts.config.tls === undefined ? undefined : { ...httpsOptions(opts.config.tls), ...timeouts };
    this.app = Fastify({
      logger: false,
      bodyLimit: 64 * 1024,
      return503OnClosing: true,
      forceCloseConnections: true,
      // A client that sends its headers or body slowly, or stops half-way, is cut
      // (control.timeouts): it must not hold a connection and a parser for ever.
      requestTimeout: timeouts.requestTimeout,
      http: timeouts,
      clientErrorHandler: clientError,
      // A URL fastify cannot decode (%zz) is answered by our error handler too: JSON
      // with a code, like every other error.
      frameworkErrors: (err, req, reply) => this.sendError(err, req, reply),
      ...(https === undefined ? {} : { https }),
    }) as unknown as FastifyInstance;
    this.app.setValidatorCompiler(({ schema }) => ajv.compile(schema));
    // JSON only: fastify would also take text/plain, a body a cross-origin page can send.
    this.app.removeContentTypeParser('text/plain');
    this.app.decorateRequest('actor', '');
    this.app.addHook('onRequest', async (req) => this.authenticate(req));
    this.app.setErrorHandler((err, req, reply) => this.sendError(err, req, reply));
    this.app.setNotFoundHandler((req, reply) => {
      void reply.code(404).send({ error: { code: 'NOT_FOUND', message: `no control endpoint ${req.method} ${req.url.split('?')[0]}` } });
    });
    // The routes go in a plugin registered after @fastify/swagger, which sees them added.
    registerOpenApi(this.app);
    void this.app.register(async (scoped) => this.routes(scoped as unknown as FastifyInstance));
    registerUi(this.app); // GET /ui: the dashboard's static files (no scope: no token needed for them)
  }

  private authenticate(req: FastifyRequest): void {
    const need = req.routeOptions.config?.scope;
    if (need === undefined) return;
    // A browser page from another origin can send a POST (a "simple" one needs no
    // preflight): nothing it sends may change anything. Browsers always name the page's
    // origin on such a request; the dashboard's own requests come from this origin.
    const origin = req.headers.origin;
    if (origin !== undefined && req.method !== 'GET' && req.method !== 'HEAD' && !sameOrigin(origin, req.headers.host)) {
      throw new ControlError(403, 'CROSS_ORIGIN', `a request from the page ${origin.slice(0, 100)} cannot change anything here`);
    }
    if (this.tokens.length === 0) {
      // Without tokens (loopback only), DNS rebinding could let a web page reach the
      // API under its own name: answer only requests addressed to a loopback name.
      if (!loopbackHostHeader(req.headers.host)) {
        throw new ControlError(403, 'FORBIDDEN_HOST', 'without control.tokens the API answers only requests to a loopback host (127.0.0.1, localhost, [::1])');
      }
      req.actor = 'local';
      return;
    }
    // A client past control.authRateLimit (an IPv4 address, or an IPv6 /64) is refused
    // before its token is looked at, whatever it sends: guesses then teach it nothing.
    const refusedMs = this.authLimiter.refusedFor(req.ip);
    if (refusedMs > 0) {
      const retryAfter = Math.max(1, Math.ceil(refusedMs / 1000));
      throw new ControlError(429, 'RATE_LIMITED', `too many failed authentications from ${req.ip}; retry in ${retryAfter}s`, { retryAfter });
    }
    const h = req.headers.authorization;
    const m = typeof h === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(h) : null;
    if (m === null) throw new ControlError(401, 'UNAUTHORIZED', 'missing bearer token (Authorization: Bearer TOKEN)');
    const d = digest(m[1]);
    let found: (typeof this.tokens)[number] | undefined;
    for (const t of this.tokens) {
      // Every digest is compared, whatever matched before.
      if (timingSafeEqual(d, t.digest) && found === undefined) found = t;
    }
    if (found === undefined) {
      if (this.authLimiter.failed(req.ip)) {
        const { failures, windowMs } = this.authLimiter.settings;
        this.opts.log.warn({ client: req.ip, failures, windowMs }, 'control API: too many failed authentications; this client is refused (429) for a while');
      }
      throw new ControlError(401, 'UNAUTHORIZED', 'invalid token');
    }
    if (found.rank < RANK[need]) throw new ControlError(403, 'FORBIDDEN', `token ${found.name} lacks the ${need} scope`);
    req.actor = found.name;
  }

  /** Clients the failed-authentication limiter remembers: { counting, refused }. */
  get authClients(): { counting: number; refused: number } {
    return this.authLimiter.size;
  }

  /**
   * A reloaded config: tokens (rotation without restart), the auth rate limit and the
   * control.tls certificate. Refuses to drop every token while the API listens on a
   * non-loopback address (the running tokens stay).
   */
  reconfigure(control: Config['control']): void {
    this.authLimiter.configure(control.authRateLimit);
    // New streams only: streams already open above a lowered cap run on.
    this.maxStreamsPerToken = control.maxStreamsPerToken;
    // Node reads these on every check; the check interval itself stays as started.
    this.app.server.headersTimeout = control.timeouts.headersMs;
    this.app.server.requestTimeout = control.timeouts.requestMs;
    if (control.tokens.length === 0 && this.tokens.length > 0 && this.bound !== undefined && !isLoopbackHost(this.bound)) {
      this.opts.log.error({ listen: this.bound }, 'control.tokens: the reloaded config has no token but the control API listens on a non-loopback address; the running tokens stay');
    } else {
      const before = new Set(this.tokens.map((t) => t.name));
      this.tokens = tokenDigests(control.tokens);
      const after = new Set(this.tokens.map((t) => t.name));
      const added = [...after].filter((n) => !before.has(n));
      const removed = [...before].filter((n) => !after.has(n));
      if (added.length || removed.length) this.opts.log.info({ added, removed }, 'control tokens changed (names only)');
    }
    if (control.tls !== undefined && this.opts.config.tls !== undefined) {
      try {
        (this.app.server as unknown as { setSecureContext(o: object): void }).setSecureContext(httpsOptions(control.tls));
      } catch (err) {
        this.opts.log.error({ problem: (err as Error).message }, 'control.tls: new certificate refused; the running one keeps serving');
      }
    } else if ((control.tls === undefined) !== (this.opts.config.tls === undefined)) {
      this.opts.log.warn('control.tls is turned on or off only on restart');
    }
  }

  private sendError(err: unknown, req: FastifyRequest, reply: FastifyReply): void {
    if (err instanceof ControlError) {
      if (err.statusCode === 429 && typeof err.extra?.retryAfter === 'number') void reply.header('retry-after', String(err.extra.retryAfter));
      void reply.code(err.statusCode).send({ error: { code: err.code, message: err.message, ...err.extra } });
      return;
    }
    const e = err as Error & { code?: string; statusCode?: number; validation?: ErrorObject[]; validationContext?: string };
    if (e.validation !== undefined) {
      const problems = describeErrors(e.validation).map((p) => `${e.validationContext ?? 'body'}${p.startsWith('(root)') ? p.slice(6) : `.${p}`}`);
      void reply.code(400).send({ error: { code: 'INVALID_REQUEST', message: problems.join('; '), problems } });
      return;
    }
    const map: Record<string, [number, string]> = {
      FST_ERR_CTP_INVALID_JSON_BODY: [400, 'MALFORMED_JSON'],
      FST_ERR_CTP_EMPTY_JSON_BODY: [400, 'MALFORMED_JSON'],
      FST_ERR_CTP_BODY_TOO_LARGE: [413, 'BODY_TOO_LARGE'],
      FST_ERR_CTP_INVALID_MEDIA_TYPE: [415, 'UNSUPPORTED_MEDIA_TYPE'],
      FST_ERR_CTP_INVALID_CONTENT_LENGTH: [400, 'BAD_REQUEST'],
    };
    const known = e.code !== undefined ? map[e.code] : undefined;
    if (known !== undefined) {
      void reply.code(known[0]).send({ error: { code: known[1], message: e.message } });
      return;
    }
    if (e instanceof SyntaxError || (e.statusCode !== undefined && e.statusCode >= 400 && e.statusCode < 500)) {
      void reply.code(e.statusCode ?? 400).send({ error: { code: 'BAD_REQUEST', message: e.message } });
      return;
    }
    this.opts.log.error({ err: e.message, route: req.routeOptions.url }, 'control API error');
    void reply.code(500).send({ error: { code: 'INTERNAL', message: 'internal error' } });
  }

  private serviceView(name: string): Record<string, unknown> {
    const c = this.opts.controller;
    const dp = c.dp;
    const sc = dp.service(name);
    if (sc === undefined) throw new ControlError(404, 'UNKNOWN_SERVICE', `unknown service ${name}`);
    const weights = dp.getWeights(name);
    const versions: Record<string, unknown> = {};
    for (const v of sc.versions) {
      versions[v.name] = {
        weight: weights[v.name],
        inflight: dp.statsOf(name, v.name).inflight,
        // Long-lived connections a connection drain is closing (not closed yet).
        connectionsClosing: dp.statsOf(name, v.name).closing,
        endpoints: dp.endpointsOf(name, v.name).map((e) => ({ id: e.id, address: e.address.origin, state: e.state, inflight: e.inflight })),
      };
    }
    return { name, revision: c.serviceRevision(name), weights, versions, rollout: rolloutView(c.rollout(name)) };
  }

  /** GET …/mirror: the mirror in force, where it comes from, its counts by result
   * (of the current target; of every target once stopped) and the last differing samples. */
  mirrorView(name: string, sampleCount = SAMPLE_RING): Record<string, unknown> {
    const c = this.opts.controller;
    const dp = c.dp;
    const sc = dp.service(name);
    if (sc === undefined) throw new ControlError(404, 'UNKNOWN_SERVICE', `unknown service ${name}`);
    const st = c.serviceState(name);
    const eff = dp.mirrorOf(name);
    const ro = st?.rollout;
    const source =
      eff === undefined ? null : ro !== undefined && ControllerClass.effectiveMirror(st) === ro.shadow && ro.shadow !== undefined ? 'rollout' : st?.mirror !== undefined ? 'api' : 'config';
    const all = dp.allMirrorStats().filter((m) => m.service === name && (eff === undefined || m.version === eff.to));
    const counts = Object.fromEntries(MIRROR_RESULTS.map((r) => [r, 0])) as Record<MirrorResult, number>;
    let latency = 0;
    const samples: MirrorSample[] = [];
    for (const m of all) {
      for (const [r, n] of Object.entries(m.countsByResult())) counts[r as MirrorResult] += n;
      latency += m.latencyDeltaSumMs;
      samples.push(...m.samples);
    }
    samples.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
    const compared = counts.match + counts.status_diff + counts.body_diff + counts.error;
    return {
      service: name,
      mirror: eff === undefined ? null : mirrorBody(eff),
      source,
      counts,
      compared,
      diffRate: compared === 0 ? 0 : (compared - counts.match) / compared,
      avgLatencyDeltaMs: compared === 0 ? 0 : Math.round((latency / compared) * 1000) / 1000,
      samples: samples.slice(-sampleCount),
    };
  }

  /** What the dashboard shows: per version the weight, in flight, requests/s, error
   * rate and p99 over the last 5 complete seconds, and the endpoints with their state. */
  liveView(): Record<string, unknown> {
    const c = this.opts.controller;
    const dp = c.dp;
    const now = Date.now();
    const from = now - 5000;
    const to = now - 1000;
    return {
      time: new Date(now).toISOString(),
      revision: c.revision,
      services: dp.serviceList.map((sc) => {
        const weights = dp.getWeights(sc.name);
        const versions: Record<string, unknown> = {};
        for (const v of sc.versions) {
          const st = dp.statsOf(sc.name, v.name);
          const w = st.window.summary(from, to);
          versions[v.name] = {
            weight: weights[v.name],
            inflight: st.inflight,
            rps: Math.round(w.rps * 10) / 10,
            errorRate: w.errorRate,
            p99Ms: Math.round(w.p99 * 1e4) / 10,
            endpoints: dp.endpointsOf(sc.name, v.name).map((e) => ({ id: e.id, state: e.state, inflight: e.inflight })),
          };
        }
        const mirror = this.mirrorView(sc.name, 5);
        return {
          name: sc.name,
          revision: c.serviceRevision(sc.name),
          weights,
          versions,
          rollout: rolloutView(c.rollout(sc.name)),
          ...(mirror.mirror === null && (mirror.compared as number) === 0 ? {} : { mirror }),
        };
      }),
    };
  }

  private routes(app: FastifyInstance): void {
    const c = this.opts.controller;
    type P = { Params: { name: string } };
    const params = schemas.serviceParams;

    app.get('/v1/services', { config: { scope: 'read' } }, async () => ({
      revision: c.revision,
      services: c.dp.serviceList.map((s) => ({
        name: s.name,
        revision: c.serviceRevision(s.name),
        weights: c.dp.getWeights(s.name),
        rollout: rolloutView(c.rollout(s.name)),
      })),
    }));

    app.get<P>('/v1/services/:name', { config: { scope: 'read' }, schema: { params } }, async (req, reply) => {
      const view = this.serviceView(req.params.name);
      void reply.header('etag', `"${view.revision}"`);
      return view;
    });

    app.get<P>('/v1/services/:name/mirror', { config: { scope: 'read' }, schema: { params } }, async (req) => this.mirrorView(req.params.name));

    app.put<P & { Body: MirrorBody }>('/v1/services/:name/mirror', { config: { scope: 'deploy' }, schema: { params, body: schemas.mirror } }, async (req) => {
      const sc = c.dp.service(req.params.name);
      if (sc === undefined) throw new ControlError(404, 'UNKNOWN_SERVICE', `unknown service ${req.params.name}`);
      const problems: string[] = [];
      const m: MirrorConfig = normalizeMirror(req.body, sc.versions.map((v) => v.name), 'body', problems);
      if (problems.length > 0) throw new ControlError(400, 'INVALID_MIRROR', problems.join('; '));
      const r = await c.setMirror(req.actor, req.params.name, m);
      return { revision: r.revision, ...this.mirrorView(req.params.name) };
    });

    app.delete<P>('/v1/services/:name/mirror', { config: { scope: 'deploy' }, schema: { params } }, async (req) => {
      const r = await c.setMirror(req.actor, req.params.name, null);
      return { revision: r.revision, ...this.mirrorView(req.params.name) };
    });

    app.put<P & { Body: { weights: Record<string, number> } }>(
      '/v1/services/:name/weights',
      { config: { scope: 'deploy' }, schema: { params, body: schemas.weights } },
      async (req, reply) => {
        const r = await c.setWeights(req.actor, req.params.name, req.body.weights, ifMatchOf(req));
        void reply.header('etag', `"${r.revision}"`);
        return r;
      },
    );

    app.post<P & { Body: { to: string; wait?: boolean; timeout?: string; force?: boolean; connections?: { drain: string } } }>(
      '/v1/services/:name/cutover',
      { config: { scope: 'deploy' }, schema: { params, body: schemas.cutover } },
      async (req, reply) => {
        const { name } = req.params;
        const timeoutMs = parseDuration(req.body.timeout ?? '60s');
        const connectionsDrainMs = connectionsDrainOf(req.body.connections);
        // A wait that must end before the connections it waits for are closed could only
        // time out: refused, nothing changed.
        if (req.body.wait === true && connectionsDrainMs !== undefined && connectionsDrainMs >= timeoutMs) {
          throw new ControlError(400, 'INVALID_REQUEST', `body.connections.drain (${req.body.connections!.drain}) must be shorter than the wait's timeout (${req.body.timeout ?? '60s'})`);
        }
        const r = await c.cutover(req.actor, name, req.body.to, { force: req.body.force, ifMatch: ifMatchOf(req), connectionsDrainMs });
        const others = (c.dp.service(name)?.versions ?? []).map((v) => v.name).filter((v) => v !== req.body.to);
        if (req.body.wait !== true) {
          return { revision: r.revision, weights: r.weights, drained: others.every((v) => c.dp.statsOf(name, v).inflight === 0 && c.dp.statsOf(name, v).closing === 0), ...connectionsView(r.connections) };
        }
        // Every live replica must have applied the switch and finished the old version's requests.
        const answered = new Promise<void>((res) => reply.raw.once('close', () => res()));
        this.drainAnswers.add(answered);
        void answered.then(() => this.drainAnswers.delete(answered));
        const d = await c.waitFleetDrained(name, others, r.revision, timeoutMs);
        if (d.timedOut) {
          // (Connections a drain chose and that have not closed yet count on this replica.)
          const closing = Object.fromEntries(others.map((v) => [v, c.dp.statsOf(name, v).closing]));
          const what = Object.values(closing).some((n) => n > 0) ? 'requests in flight or connections closing' : 'requests in flight';
          throw new ControlError(504, 'DRAIN_TIMEOUT', `the old version still had ${what} after ${req.body.timeout ?? '60s'}`, {
            revision: r.revision,
            weights: c.dp.getWeights(name),
            inflight: c.dp.inflightOf(name),
            closing,
            replicas: await c.fleetInflight(name),
            drained: false,
            cut: d.cut,
          });
        }
        // The switch is made either way; requests cut by a shutdown or lost with a process
        // that died were not drained, and the answer says how many.
        const conns = r.connections === undefined ? {} : { connections: { ...connectionsView(r.connections).connections, moved: d.connectionsMoved } };
        if (!d.drained) return { revision: r.revision, weights: r.weights, drained: false, cut: d.cut, replicas: d.replicas, ...conns };
        return { revision: r.revision, weights: r.weights, drained: true, ...conns };
      },
    );

    app.post<P & { Body: { to: string; steps: number[]; interval: string; force?: boolean; analysis?: AnalysisBody; approval?: number[]; hooks?: HookBody[]; connections?: { drain: string }; mirror?: Omit<MirrorBody, 'to'> } }>(
      '/v1/services/:name/rollout',
      { config: { scope: 'deploy' }, schema: { params, body: schemas.rollout } },
      async (req, reply) => {
        const analysis = analysisOf(req.body.analysis ?? {});
        const intervalMs = parseDuration(req.body.interval);
        if (intervalMs < 100) throw new ControlError(400, 'INVALID_REQUEST', 'body.interval: must be at least 100ms');
        let shadow: MirrorConfig | undefined;
        if (req.body.mirror !== undefined) {
          const sc = c.dp.service(req.params.name);
          if (sc === undefined) throw new ControlError(404, 'UNKNOWN_SERVICE', `unknown service ${req.params.name}`);
          if (req.body.steps[0] !== 0) throw new ControlError(400, 'INVALID_ROLLOUT', 'mirror applies to a shadow step: the first step must be 0');
          const problems: string[] = [];
          shadow = normalizeMirror({ ...req.body.mirror, to: req.body.to }, sc.versions.map((v) => v.name), 'mirror', problems);
          if (problems.length > 0) throw new ControlError(400, 'INVALID_ROLLOUT', problems.join('; '));
        }
        const hooks = hooksOf(req.body.hooks);
        const connectionsDrainMs = connectionsDrainOf(req.body.connections);
        const r = await c.startRollout(req.actor, req.params.name, { to: req.body.to, steps: req.body.steps, intervalMs, analysis, force: req.body.force, approval: req.body.approval, hooks, ifMatch: ifMatchOf(req), connectionsDrainMs, shadow });
        void reply.code(202);
        return rolloutView(r);
      },
    );

    app.get<P>('/v1/services/:name/rollout', { config: { scope: 'read' }, schema: { params } }, async (req) => {
      if (c.dp.service(req.params.name) === undefined) throw new ControlError(404, 'UNKNOWN_SERVICE', `unknown service ${req.params.name}`);
      const r = c.rollout(req.params.name);
      if (r === undefined) throw new ControlError(404, 'NO_ROLLOUT', `service ${req.params.name} has no rollout`);
      return rolloutView(r);
    });

    for (const action of ['pause', 'resume', 'promote', 'abort'] as const) {
      app.post<P>(`/v1/services/:name/rollout/${action}`, { config: { scope: 'deploy' }, schema: { params } }, async (req) =>
        rolloutView(await c.steer(req.actor, req.params.name, action)),
      );
    }

    app.post<P>('/v1/services/:name/rollout/approve', { config: { scope: 'deploy' }, schema: { params } }, async (req) => rolloutView(await c.approve(req.actor, req.params.name)));

    app.post<P>('/v1/services/:name/rollback', { config: { scope: 'deploy' }, schema: { params } }, async (req) => c.rollback(req.actor, req.params.name, ifMatchOf(req)));

    app.post<{ Params: { name: string; id: string } }>(
      '/v1/services/:name/endpoints/:id/drain',
      { config: { scope: 'admin' }, schema: { params: { type: 'object', properties: { name, id: { type: 'string', minLength: 1, maxLength: 300 } }, required: ['name', 'id'] } } },
      async (req) => ({ ...(await c.drainEndpoint(req.actor, req.params.name, req.params.id)), endpoint: req.params.id, draining: true }),
    );

    app.post('/v1/reload', { config: { scope: 'admin' } }, async (req) => {
      const problems = this.opts.reload();
      if (problems.length > 0) throw new ControlError(400, 'CONFIG_INVALID', `the config file was refused; the running config stays: ${problems.join('; ')}`, { problems });
      // The new config is in; the audit event is best effort (a store outage must not
      // turn an applied reload into a reported failure).
      let recorded = true;
      try {
        await c.record(req.actor, 'config.reloaded', { source: 'api' });
      } catch (err) {
        recorded = false;
        this.opts.log.warn({ err: (err as Error).message }, 'config reloaded, but the event could not be recorded');
      }
      return { reloaded: true, recorded, revision: c.revision };
    });

    // Live figures: one JSON snapshot, or with Accept: text/event-stream one every second.
    // Either way the figures come from the shared feed: computed at most once a second
    // however many clients ask.
    app.get('/v1/live', { config: { scope: 'read' } }, async (req, reply) => {
      if (!wantsStream(req)) return reply.type('application/json; charset=utf-8').send(this.live.json());
      const raw = this.openStream(req, reply);
      if (raw === undefined) return;
      const unsubscribe = this.live.subscribe((frame) => void raw.write(frame));
      raw.on('close', unsubscribe);
    });

    app.get('/v1/replicas', { config: { scope: 'read' } }, async () => {
      try {
        return { self: c.fleet.id, replicas: await c.fleet.replicas() };
      } catch (err) {
        throw new ControlError(503, 'STORE_UNAVAILABLE', `cannot list replicas: ${(err as Error).message}`);
      }
    });

    app.get('/v1/status', { config: { scope: 'read' } }, async () => ({
      revision: c.revision,
      ...(this.opts.info?.() ?? {}),
      // Open event streams and the live frames computed so far (the work /v1/live costs).
      streams: { open: this.streams.size, live: this.live.streams, liveFrames: this.live.computed },
    }));

    app.get<{ Querystring: { since?: string; limit?: string } }>('/v1/events', { config: { scope: 'read' }, schema: { querystring: schemas.events } }, async (req, reply) => {
      const since = Number(req.query.since ?? 0);
      if (!wantsStream(req)) return { events: c.events(since, Number(req.query.limit ?? 1000)) };
      const raw = this.openStream(req, reply);
      if (raw === undefined) return;
      let last = since;
      const send = (e: { id: number }): void => {
        if (e.id <= last) return;
        last = e.id;
        raw.write(`id: ${e.id}\nevent: change\ndata: ${JSON.stringify(e)}\n\n`);
      };
      for (const e of c.events(since)) send(e);
      const onEvent = (e: { id: number }): void => send(e);
      c.on('event', onEvent);
      // Changes made through other replicas of the fleet.
      c.on('remote', onEvent);
      const beat = setInterval(() => raw.write(': keep-alive\n\n'), 15_000);
      raw.on('close', () => {
        clearInterval(beat);
        c.off('event', onEvent);
        c.off('remote', onEvent);
      });
    });
  }

  /**
   * Takes the response over as a text/event-stream, tracked so close() ends it. A token
   * (an actor: "local" without tokens) holds at most control.maxStreamsPerToken streams
   * at once, events and live together: each one holds a socket, listeners and timers for
   * as long as the client likes. One more is refused with 429 TOO_MANY_STREAMS before
   * anything is written; a stream's slot is freed when its connection closes.
   * Undefined when the client is already gone: its 'close' has passed, so nothing would
   * ever free the slot or remove the stream's listeners.
   */
  private openStream(req: FastifyRequest, reply: FastifyReply): FastifyReply['raw'] | undefined {
    const socket = req.raw.socket as { destroyed?: boolean } | null;
    if (socket === null || socket.destroyed === true || reply.raw.destroyed) {
      reply.hijack();
      return undefined;
    }
    const actor = req.actor;
    const open = this.streamsOf.get(actor) ?? 0;
    if (open >= this.maxStreamsPerToken) {
      throw new ControlError(429, 'TOO_MANY_STREAMS', `${actor} already has ${open} open event streams (control.maxStreamsPerToken ${this.maxStreamsPerToken}); close one first`, { limit: this.maxStreamsPerToken });
    }
    this.streamsOf.set(actor, open + 1);
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    // Send the headers now: the first frame may be a while away, and a client sees no
    // response until headers arrive.
    raw.flushHeaders();
    this.streams.add(reply);
    raw.on('close', () => {
      this.streams.delete(reply);
      const n = (this.streamsOf.get(actor) ?? 1) - 1;
      if (n > 0) this.streamsOf.set(actor, n);
      else this.streamsOf.delete(actor);
    });
    return raw;
  }

  async listen(): Promise<AddressInfo> {
    const { host, port } = splitHostPort(this.opts.config.listen);
    if (this.tokens.length === 0 && !isLoopbackHost(host)) {
      throw new ControlError(500, 'INSECURE_LISTEN', `control.tokens: required when control.listen (${this.opts.config.listen}) is not a loopback address`);
    }
    await this.app.listen({ host, port });
    this.bound = host;
    if (!isLoopbackHost(host) && this.opts.config.tls === undefined) {
      this.opts.log.warn({ listen: this.opts.config.listen }, 'control API on a non-loopback address without control.tls: bearer tokens cross the network in clear text');
    }
    return this.app.server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    this.live.close();
    for (const r of this.streams) r.raw.end();
    this.streams.clear();
    // A drain wait in progress gets to answer before its connection is closed: the data
    // plane is closed by now, so this replica's old-version requests have ended (and
    // those cut are counted) — the caller learns "not drained" instead of losing the
    // connection. Bounded: a fleet wait may still depend on other replicas.
    if (this.drainAnswers.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      const bound = new Promise<void>((r) => (timer = setTimeout(r, DRAIN_ANSWER_GRACE_MS)));
      await Promise.race([Promise.allSettled([...this.drainAnswers]), bound]);
      clearTimeout(timer);
    }
    await this.app.close();
  }
}

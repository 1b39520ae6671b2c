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
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { ErrorObject } from 'ajv';
import type { Logger } from 'pino';
import { ajv, describeErrors, isLoopbackHost, parseDuration, splitHostPort } from '../config/load.js';
import { durationSchema, weightsSchema } from '../config/schema.js';
import type { Config } from '../config/types.js';
import type { Controller } from './controller.js';
import { ControlError } from './errors.js';
import type { AnalysisConfig, RolloutRecord } from './state.js';
import { registerUi } from './ui.js';
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
interface AnalysisBody {
  maxErrorRate?: number;
  maxP99?: string;
  maxErrorRateOverBaseline?: number;
  maxP99OverBaseline?: string;
  minRequests?: number;
  noTrafficPolicy?: 'fail' | 'continue';
  noTrafficIntervals?: number;
}

/** The analysis settings of a rollout: the body's, over the defaults. Without any
 * threshold the error-rate default applies; given only maxP99, only latency is judged. */
function analysisOf(a: AnalysisBody): AnalysisConfig {
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
  return out;
}

const wantsStream = (req: FastifyRequest): boolean => String(req.headers.accept ?? '').includes('text/event-stream');

const name = { type: 'string', format: 'name' } as const;

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
    properties: { to: name, wait: { type: 'boolean' }, timeout: durationSchema, force: { type: 'boolean' } },
  },
  rollout: {
    type: 'object',
    additionalProperties: false,
    required: ['to', 'steps', 'interval'],
    properties: {
      to: name,
      steps: { type: 'array', minItems: 1, maxItems: 100, items: { type: 'integer', minimum: 1, maximum: 100 } },
      interval: durationSchema,
      force: { type: 'boolean' },
      analysis: {
        type: 'object',
        additionalProperties: false,
        properties: {
          maxErrorRate: { type: 'number', minimum: 0, maximum: 1 },
          maxP99: durationSchema,
          maxErrorRateOverBaseline: { type: 'number', minimum: 0, maximum: 1 },
          maxP99OverBaseline: durationSchema,
          minRequests: { type: 'integer', minimum: 0 },
          noTrafficPolicy: { enum: ['fail', 'continue'] },
          noTrafficIntervals: { type: 'integer', minimum: 1, maximum: 1000 },
        },
      },
    },
  },
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
    analysis: { ...r.analysis, last: r.lastAnalysis ?? null },
    reason: r.reason ?? null,
    history: r.history,
    actor: r.actor,
    startedAt: r.startedAt,
    endedAt: r.endedAt ?? null,
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

/** Failed authentications of one client address (control.authRateLimit). */
interface AuthFailures {
  count: number;
  /** When the first failure of the current window happened. */
  since: number;
  /** Refused with 429 until then (0: not refused). */
  blockedUntil: number;
}

export class ControlApi {
  readonly app: FastifyInstance;
  private tokens: { name: string; digest: Buffer; rank: number }[];
  private readonly streams = new Set<FastifyReply>();
  private authLimit: Config['control']['authRateLimit'];
  private readonly authFailures = new Map<string, AuthFailures>();
  private bound: string | undefined;

  constructor(private readonly opts: ControlApiOptions) {
    this.tokens = tokenDigests(opts.config.tokens);
    this.authLimit = opts.config.authRateLimit ?? { failures: 10, windowMs: 10_000 };
    const https = opts.config.tls === undefined ? undefined : httpsOptions(opts.config.tls);
    this.app = Fastify({
      logger: false,
      bodyLimit: 64 * 1024,
      return503OnClosing: true,
      forceCloseConnections: true,
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
    this.routes();
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
    // A client address past control.authRateLimit is refused before its token is
    // looked at, whatever it sends: guesses then teach it nothing.
    const limited = this.authLimit.failures > 0;
    const f = limited ? this.authFailures.get(req.ip) : undefined;
    if (f !== undefined && f.blockedUntil > Date.now()) {
      const retryAfter = Math.max(1, Math.ceil((f.blockedUntil - Date.now()) / 1000));
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
      if (limited) this.authFailed(req.ip);
      throw new ControlError(401, 'UNAUTHORIZED', 'invalid token');
    }
    if (found.rank < RANK[need]) throw new ControlError(403, 'FORBIDDEN', `token ${found.name} lacks the ${need} scope`);
    req.actor = found.name;
  }

  /** Counts a presented token that matched none; the one that reaches the limit refuses
   * the address for a window. */
  private authFailed(ip: string): void {
    const now = Date.now();
    const { failures, windowMs } = this.authLimit;
    let f = this.authFailures.get(ip);
    if (f === undefined || now - f.since >= windowMs) {
      if (this.authFailures.size >= 10_000) this.pruneAuthFailures(now);
      f = { count: 0, since: now, blockedUntil: 0 };
      this.authFailures.set(ip, f);
    }
    f.count++;
    if (f.count >= failures) {
      f.blockedUntil = now + windowMs;
      f.count = 0;
      f.since = f.blockedUntil;
      this.opts.log.warn({ client: ip, failures, windowMs }, 'control API: too many failed authentications; this client is refused (429) for a while');
    }
  }

  private pruneAuthFailures(now: number): void {
    for (const [ip, f] of this.authFailures) if (f.blockedUntil <= now && now - f.since >= this.authLimit.windowMs) this.authFailures.delete(ip);
    // Still full (an attack from very many addresses): forget the oldest half.
    if (this.authFailures.size >= 10_000) {
      let n = 0;
      for (const ip of this.authFailures.keys()) if (n++ < 5_000) this.authFailures.delete(ip);
    }
  }

  /**
   * A reloaded config: tokens (rotation without restart), the auth rate limit and the
   * control.tls certificate. Refuses to drop every token while the API listens on a
   * non-loopback address (the running tokens stay).
   */
  reconfigure(control: Config['control']): void {
    this.authLimit = control.authRateLimit ?? this.authLimit;
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
        endpoints: dp.endpointsOf(name, v.name).map((e) => ({ id: e.id, address: e.address.origin, state: e.state, inflight: e.inflight })),
      };
    }
    return { name, revision: c.serviceRevision(name), weights, versions, rollout: rolloutView(c.rollout(name)) };
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
        return { name: sc.name, revision: c.serviceRevision(sc.name), weights, versions, rollout: rolloutView(c.rollout(sc.name)) };
      }),
    };
  }

  private routes(): void {
    const app = this.app;
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

    app.put<P & { Body: { weights: Record<string, number> } }>(
      '/v1/services/:name/weights',
      { config: { scope: 'deploy' }, schema: { params, body: schemas.weights } },
      async (req, reply) => {
        let ifMatch: number | undefined;
        const im = req.headers['if-match'];
        if (im !== undefined) {
          const m = /^\s*(?:W\/)?"?(\d+)"?\s*$/.exec(String(im));
          if (m === null) throw new ControlError(400, 'BAD_REQUEST', 'If-Match must be a revision such as "12"');
          ifMatch = Number(m[1]);
        }
        const r = await c.setWeights(req.actor, req.params.name, req.body.weights, ifMatch);
        void reply.header('etag', `"${r.revision}"`);
        return r;
      },
    );

    app.post<P & { Body: { to: string; wait?: boolean; timeout?: string; force?: boolean } }>(
      '/v1/services/:name/cutover',
      { config: { scope: 'deploy' }, schema: { params, body: schemas.cutover } },
      async (req) => {
        const { name } = req.params;
        const timeoutMs = parseDuration(req.body.timeout ?? '60s');
        const r = await c.cutover(req.actor, name, req.body.to, { force: req.body.force });
        const others = (c.dp.service(name)?.versions ?? []).map((v) => v.name).filter((v) => v !== req.body.to);
        if (req.body.wait !== true) return { revision: r.revision, weights: r.weights, drained: others.every((v) => c.dp.statsOf(name, v).inflight === 0) };
        // Every live replica must have applied the switch and finished the old version's requests.
        const drained = await c.waitFleetDrained(name, others, r.revision, timeoutMs);
        if (!drained) {
          throw new ControlError(504, 'DRAIN_TIMEOUT', `the old version still had requests in flight after ${req.body.timeout ?? '60s'}`, {
            revision: r.revision,
            weights: c.dp.getWeights(name),
            inflight: c.dp.inflightOf(name),
            replicas: await c.fleetInflight(name),
            drained: false,
          });
        }
        return { revision: r.revision, weights: r.weights, drained: true };
      },
    );

    app.post<P & { Body: { to: string; steps: number[]; interval: string; force?: boolean; analysis?: AnalysisBody } }>(
      '/v1/services/:name/rollout',
      { config: { scope: 'deploy' }, schema: { params, body: schemas.rollout } },
      async (req, reply) => {
        const analysis = analysisOf(req.body.analysis ?? {});
        const intervalMs = parseDuration(req.body.interval);
        if (intervalMs < 100) throw new ControlError(400, 'INVALID_REQUEST', 'body.interval: must be at least 100ms');
        const r = await c.startRollout(req.actor, req.params.name, { to: req.body.to, steps: req.body.steps, intervalMs, analysis, force: req.body.force });
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

    app.post<P>('/v1/services/:name/rollback', { config: { scope: 'deploy' }, schema: { params } }, async (req) => c.rollback(req.actor, req.params.name));

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
    app.get('/v1/live', { config: { scope: 'read' } }, async (req, reply) => {
      if (!wantsStream(req)) return this.liveView();
      const raw = this.openStream(reply);
      const tick = (): void => void raw.write(`event: live\ndata: ${JSON.stringify(this.liveView())}\n\n`);
      tick();
      const timer = setInterval(tick, 1000);
      raw.on('close', () => clearInterval(timer));
    });

    app.get('/v1/replicas', { config: { scope: 'read' } }, async () => {
      try {
        return { self: c.fleet.id, replicas: await c.fleet.replicas() };
      } catch (err) {
        throw new ControlError(503, 'STORE_UNAVAILABLE', `cannot list replicas: ${(err as Error).message}`);
      }
    });

    app.get('/v1/status', { config: { scope: 'read' } }, async () => ({ revision: c.revision, ...(this.opts.info?.() ?? {}) }));

    app.get<{ Querystring: { since?: string; limit?: string } }>('/v1/events', { config: { scope: 'read' }, schema: { querystring: schemas.events } }, async (req, reply) => {
      const since = Number(req.query.since ?? 0);
      if (!wantsStream(req)) return { events: c.events(since, Number(req.query.limit ?? 1000)) };
      const raw = this.openStream(reply);
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

  /** Takes the response over as a text/event-stream, tracked so close() ends it. */
  private openStream(reply: FastifyReply): FastifyReply['raw'] {
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    // Send the headers now: the first frame may be a while away, and a client sees no
    // response until headers arrive.
    raw.flushHeaders();
    this.streams.add(reply);
    raw.on('close', () => this.streams.delete(reply));
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
    for (const r of this.streams) r.raw.end();
    this.streams.clear();
    await this.app.close();
  }
}

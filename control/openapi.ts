// GET /v1/openapi.json: the control API's OpenAPI 3.1 document. @fastify/swagger reads
// each route's own schemas (params, querystring, body) as the route is added; what a
// route schema cannot say (its scope, its error codes, the If-Match header it reads)
// is added here, to the document only, so that the routes' validation and replies are
// exactly what they were. docs/control-api.md is generated from this document.

import swagger from '@fastify/swagger';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { loadConfigText } from '../config/load.js';
import { packageInfo } from '../config/package.js';

/** Every error code the control API answers, its status and what it means. */
export const ERROR_CODES: Record<string, { status: number; meaning: string }> = {
  BAD_REQUEST: { status: 400, meaning: 'Malformed HTTP, an unreadable If-Match, or a request fastify refused.' },
  INVALID_REQUEST: { status: 400, meaning: 'The body, path or query failed validation; `problems` lists each one as `body.key: message`.' },
  MALFORMED_JSON: { status: 400, meaning: 'The body is not JSON (or is empty).' },
  UNKNOWN_VERSION: { status: 400, meaning: 'The service has no version of that name.' },
  INVALID_STEPS: { status: 400, meaning: 'Rollout steps must be integers from 0 to 100, strictly increasing, ending at 100 (only the first may be 0: the tester lane).' },
  INVALID_ROLLOUT: { status: 400, meaning: 'The service has only one version, or a gate is invalid: an approval or hook step index out of range, a hook name used twice, a hook timeout out of 100ms–10m, a Prometheus query with both or neither of max/min or a taken name, an unknown criterion in dryRun.' },
  INVALID_MIRROR: { status: 400, meaning: 'The mirror names a version the service does not have (or is otherwise invalid); `message` says which key.' },
  CONFIG_INVALID: { status: 400, meaning: 'POST /v1/reload: the config file was refused and the running config stays; `problems` lists why.' },
  UNAUTHORIZED: { status: 401, meaning: 'No bearer token, or an invalid one.' },
  FORBIDDEN: { status: 403, meaning: "The token lacks the route's scope." },
  CROSS_ORIGIN: { status: 403, meaning: 'A browser page from another origin tried to change something.' },
  FORBIDDEN_HOST: { status: 403, meaning: 'Without control.tokens, only requests to a loopback host name are answered (DNS rebinding).' },
  NOT_FOUND: { status: 404, meaning: 'No such route.' },
  UNKNOWN_SERVICE: { status: 404, meaning: 'No service of that name.' },
  NO_ROLLOUT: { status: 404, meaning: 'The service has no rollout.' },
  UNKNOWN_ENDPOINT: { status: 404, meaning: 'The service has no endpoint with that id.' },
  REQUEST_TIMEOUT: { status: 408, meaning: 'The request was not received within control.timeouts; the connection is closed.' },
  ROLLOUT_IN_PROGRESS: { status: 409, meaning: 'A rollout of the service is running or paused: pause, promote or abort it first (or use force).' },
  ROLLOUT_NOT_ACTIVE: { status: 409, meaning: 'The rollout is in a state that does not allow this action (`state` says which).' },
  NOT_AWAITING_APPROVAL: { status: 409, meaning: 'POST …/rollout/approve: the rollout is not waiting for an approval (`state` says what it is).' },
  NOTHING_TO_ROLL_BACK: { status: 409, meaning: 'The service has no earlier weights to restore.' },
  REVISION_CONFLICT: { status: 409, meaning: 'Another replica changed the service at the same moment, five times in a row; retry.' },
  REVISION_MISMATCH: { status: 412, meaning: "If-Match names a revision that is not the service's current one." },
  BODY_TOO_LARGE: { status: 413, meaning: 'The body is over 64 KiB.' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, meaning: 'The body is not application/json.' },
  TARGET_UNHEALTHY: { status: 422, meaning: 'The target version has no healthy endpoint (use force to override).' },
  RATE_LIMITED: { status: 429, meaning: 'Too many failed authentications from this client (control.authRateLimit); Retry-After says when to retry.' },
  TOO_MANY_STREAMS: { status: 429, meaning: 'This token already holds control.maxStreamsPerToken event streams.' },
  HEADERS_TOO_LARGE: { status: 431, meaning: 'Request headers too large.' },
  INTERNAL: { status: 500, meaning: 'An unexpected error (logged).' },
  INSECURE_LISTEN: { status: 500, meaning: 'At start: control.listen is not a loopback address and there are no control.tokens (the process refuses to start).' },
  STORE_UNAVAILABLE: { status: 503, meaning: 'The state store (Redis or the file) cannot be written; nothing changed.' },
  UI_UNAVAILABLE: { status: 503, meaning: 'GET /ui: a dashboard file is missing from the installation (not a /v1 route).' },
  SHUTTING_DOWN: { status: 503, meaning: 'The gateway is shutting down.' },
  DRAIN_TIMEOUT: { status: 504, meaning: 'cutover --wait: the old version still had requests in flight, or connections a drain chose still open, at the timeout (the switch itself is done; `closing` counts those connections per version on the replica that answered).' },
};

/** Errors any route can answer, whatever it does. */
const ANY = ['BAD_REQUEST', 'REQUEST_TIMEOUT', 'HEADERS_TOO_LARGE', 'INTERNAL'];
/** Errors of every route that needs a scope. */
const AUTH = ['UNAUTHORIZED', 'FORBIDDEN', 'CROSS_ORIGIN', 'FORBIDDEN_HOST', 'RATE_LIMITED'];
/** Errors of every route with a JSON body. */
const BODY = ['INVALID_REQUEST', 'MALFORMED_JSON', 'BODY_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE'];
/** Errors of every change written to the store. */
const WRITE = ['STORE_UNAVAILABLE', 'SHUTTING_DOWN', 'REVISION_CONFLICT'];
const STEER = ['UNKNOWN_SERVICE', 'NO_ROLLOUT', 'ROLLOUT_NOT_ACTIVE', ...WRITE];

interface RouteDoc {
  summary: string;
  description?: string;
  tag: string;
  /** Codes this route answers beyond ANY, AUTH (when scoped) and INVALID_REQUEST (with params or a query). */
  errors: string[];
  ok: { status: number; description: string };
  /** Also answers as text/event-stream with `Accept: text/event-stream`. */
  stream?: boolean;
  ifMatch?: boolean;
  /** A request body for the docs' curl example (and the body schema's `examples`). */
  example?: Record<string, unknown>;
}

/** One entry per route, keyed `METHOD /url` as fastify names it; a route without one
 * fails test/openapi.test.ts. */
export const ROUTE_DOCS: Record<string, RouteDoc> = {
  'GET /v1/services': { tag: 'services', summary: 'List the services', description: 'Each service with its revision, weights and rollout.', errors: [], ok: { status: 200, description: '`{revision, services: [{name, revision, weights, rollout}]}`' } },
  'GET /v1/services/:name': { tag: 'services', summary: 'One service', description: 'Weights, and per version the endpoints with their state and requests in flight. The ETag is the revision.', errors: ['UNKNOWN_SERVICE'], ok: { status: 200, description: '`{name, revision, weights, versions: {V: {weight, inflight, endpoints}}, rollout}`' } },
  'PUT /v1/services/:name/weights': { tag: 'services', summary: 'Set the weights', description: 'Weights are shares (non-negative integers), one must be positive. With `If-Match: "REVISION"` the change applies only at that revision (412 otherwise).', errors: ['UNKNOWN_SERVICE', 'UNKNOWN_VERSION', 'ROLLOUT_IN_PROGRESS', 'REVISION_MISMATCH', ...BODY, ...WRITE], ok: { status: 200, description: '`{revision, weights}`; the ETag is the new revision.' }, ifMatch: true, example: { weights: { blue: 90, green: 10 } } },
  'POST /v1/services/:name/cutover': { tag: 'services', summary: 'Send all traffic to one version', description: 'With `wait: true` the answer comes once every replica known when the wait began (or that appeared during it) applied it and the other versions have no request in flight there, or 504 DRAIN_TIMEOUT after `timeout` (default 60s). Requests cut by a shutdown are not drained: the answer is then `drained: false` with their count in `cut` (the switch stays applied; the CLI exits 1). With `If-Match: "REVISION"` the change applies only at that revision (412 otherwise). With `connections: {drain: "30s"}` (default: the service\'s `connections.drain`; `"0s"`: none) the long-lived connections pinned to the versions that lost their weight — WebSocket tunnels, HTTP/2 sessions, HTTP/1.1 keep-alive connections — are closed gracefully (WebSocket close 1001 after the frame in progress, HTTP/2 GOAWAY after the open streams, keep-alive after the response in progress), spread over that window on every replica and worker; `wait` then also waits until each of them has closed (an HTTP/2 session: told to go away and none of its streams to those versions open — its streams to other versions may run on), and the answer says how many were `moved`. The drain must be at most 1h and, with `wait`, shorter than `timeout`.', errors: ['UNKNOWN_SERVICE', 'UNKNOWN_VERSION', 'ROLLOUT_IN_PROGRESS', 'TARGET_UNHEALTHY', 'DRAIN_TIMEOUT', 'REVISION_MISMATCH', ...BODY, ...WRITE], ok: { status: 200, description: '`{revision, weights, drained, cut, replicas, connections: {drain, versions, moved}}`' }, ifMatch: true, example: { to: 'green', wait: true, timeout: '60s', connections: { drain: '30s' } } },
  'POST /v1/services/:name/rollback': { tag: 'services', summary: 'Restore the weights before the last change', description: 'With `If-Match: "REVISION"` it applies only at that revision (412 otherwise).', errors: ['UNKNOWN_SERVICE', 'NOTHING_TO_ROLL_BACK', 'ROLLOUT_IN_PROGRESS', 'REVISION_MISMATCH', ...WRITE], ifMatch: true, ok: { status: 200, description: '`{revision, weights}`' } },
  'POST /v1/services/:name/endpoints/:id/drain': { tag: 'services', summary: 'Drain one endpoint', description: 'No new requests; in-flight ones finish.', errors: ['UNKNOWN_SERVICE', 'UNKNOWN_ENDPOINT', ...WRITE], ok: { status: 200, description: '`{endpoint, draining: true, …}`' } },
  'GET /v1/services/:name/mirror': { tag: 'services', summary: 'The mirror and its comparison', description: 'The mirror in force (`source`: api, config, or rollout during a shadow step; null when none), the copies by result (`match`, `status_diff`, `body_diff`, `error`, `dropped`) of its target (of every target once stopped), the diff rate, the mean latency delta, and the last 20 differing samples (method, path, both statuses, the first differing JSON path, `byte N` or `header NAME`, latency delta). With a fleet store, the counts are this replica\'s.', errors: ['UNKNOWN_SERVICE'], ok: { status: 200, description: '`{service, mirror, source, counts, compared, diffRate, avgLatencyDeltaMs, samples}`' } },
  'PUT /v1/services/:name/mirror': { tag: 'services', summary: 'Start or replace the mirror', description: 'Copies `percent` of the requests served by other versions to `to` (only `methods`, GET and HEAD by default: list a write method only when `to` may safely run writes), compares its answers with the served ones and throws them away. The copies never delay or fail the client\'s answer. Stored like the weights: every worker and replica applies it; it wins over the config\'s `mirror`.', errors: ['UNKNOWN_SERVICE', 'INVALID_MIRROR', ...BODY, ...WRITE], ok: { status: 200, description: 'The mirror view (as GET) and the new `revision`.' }, example: { to: 'green', percent: 10, methods: ['GET', 'HEAD'], ignore: ['$.timestamp', '$.requestId'], headers: ['content-type'] } },
  'DELETE /v1/services/:name/mirror': { tag: 'services', summary: 'Stop the mirror', description: 'Also stops a mirror the config starts (until the next PUT).', errors: ['UNKNOWN_SERVICE', ...WRITE], ok: { status: 200, description: 'The mirror view (as GET) and the new `revision`.' } },
  'POST /v1/services/:name/rollout': { tag: 'rollouts', summary: 'Start a progressive rollout', description: 'Moves traffic to `to` in `steps` (percent, ending at 100), one every `interval` (at least 100ms), judging each step by `analysis` (error rate, p99, against thresholds or the baseline version); a failed step, or no traffic for `noTrafficIntervals` with `noTrafficPolicy: fail`, rolls back by itself. Gates (docs/operations.md, "Rollout gates"): `hooks` (pre-rollout and pre-step hooks must answer 2xx in time or the rollout rolls back; post-step, post-rollout and rolled-back hooks are notified), `approval` (step indexes that wait in `awaiting_approval` for POST …/rollout/approve), `analysis.prometheus` (instant PromQL queries with max/min bounds), `analysis.dryRun` (criteria reported but never failing) and `analysis.inconclusivePolicy` (pause, rollback or continue when a criterion cannot be evaluated). A first step of 0 is the tester lane; with `mirror` or `analysis.maxMirrorDiffRate` it is also a shadow step: the target gets a copy of the served requests (`mirror`: the mirror settings, by default the service\'s pointed at the target), and the step is judged on the copies — `minRequests` compared and `maxMirrorDiffRate` (docs/operations.md, "Mirroring"). With `connections: {drain: "30s"}` (default: the service\'s `connections.drain`) every weight change of the rollout (each step, promote, abort, roll-back) closes, over that window, the share of each version\'s long-lived connections that its lost weight represents (all of them when it falls to 0); their clients reconnect where the new weights send them.', errors: ['UNKNOWN_SERVICE', 'UNKNOWN_VERSION', 'INVALID_STEPS', 'INVALID_ROLLOUT', 'ROLLOUT_IN_PROGRESS', 'TARGET_UNHEALTHY', 'REVISION_MISMATCH', ...BODY, ...WRITE], ifMatch: true, ok: { status: 202, description: 'The rollout: `{id, state, to, step, percent, steps, interval, weights, analysis, history, …}`' }, example: { to: 'green', steps: [10, 50, 100], interval: '30s', analysis: { maxErrorRate: 0.01, maxP99: '500ms', minRequests: 20 } } },
  'GET /v1/services/:name/rollout': { tag: 'rollouts', summary: 'The current or last rollout', description: '`state` is one of running, paused, succeeded, rolled_back, aborted.', errors: ['UNKNOWN_SERVICE', 'NO_ROLLOUT'], ok: { status: 200, description: 'The rollout.' } },
  'POST /v1/services/:name/rollout/pause': { tag: 'rollouts', summary: 'Pause the rollout', errors: STEER, ok: { status: 200, description: 'The rollout.' } },
  'POST /v1/services/:name/rollout/resume': { tag: 'rollouts', summary: 'Resume a paused rollout', description: 'The step restarts its window.', errors: STEER, ok: { status: 200, description: 'The rollout.' } },
  'POST /v1/services/:name/rollout/promote': { tag: 'rollouts', summary: 'Jump to 100% (succeeded)', errors: STEER, ok: { status: 200, description: 'The rollout.' } },
  'POST /v1/services/:name/rollout/abort': { tag: 'rollouts', summary: 'Abort: restore the weights before the rollout', errors: STEER, ok: { status: 200, description: 'The rollout.' } },
  'POST /v1/services/:name/rollout/approve': { tag: 'rollouts', summary: 'Approve the step the rollout waits at', description: 'A rollout whose `approval` lists a step waits in state `awaiting_approval` (weights frozen) before entering it; this enters it (after its pre-step hooks). Any replica of a fleet accepts it.', errors: ['UNKNOWN_SERVICE', 'NO_ROLLOUT', 'NOT_AWAITING_APPROVAL', ...WRITE], ok: { status: 200, description: 'The rollout.' } },
  'POST /v1/reload': { tag: 'gateway', summary: 'Re-read the config file', description: 'Like SIGHUP. An invalid file is refused and the running config stays.', errors: ['CONFIG_INVALID', 'UNSUPPORTED_MEDIA_TYPE', 'MALFORMED_JSON'], ok: { status: 200, description: '`{reloaded: true, recorded, revision}`' } },
  'GET /v1/status': { tag: 'gateway', summary: 'Gateway status', description: 'Revision, store kind, webhook counters, open event streams.', errors: [], ok: { status: 200, description: '`{revision, store, webhooks, streams, …}`' } },
  'GET /v1/replicas': { tag: 'gateway', summary: 'The replicas of the fleet', description: 'With a shared store (Redis) every live replica; otherwise this one.', errors: ['STORE_UNAVAILABLE'], ok: { status: 200, description: '`{self, replicas: [...]}`' } },
  'GET /v1/live': { tag: 'events', summary: 'Live figures (the dashboard\'s)', description: 'Per service and version: weight, in flight, requests/s, error rate and p99 over the last 5 complete seconds, and endpoint states. With `Accept: text/event-stream`, one frame a second.', errors: ['TOO_MANY_STREAMS'], ok: { status: 200, description: '`{time, revision, services: [...]}`' }, stream: true },
  'GET /v1/events': { tag: 'events', summary: 'The audit log', description: 'Events after `since` (at most `limit`, default 1000; the last 1,000 are kept). With `Accept: text/event-stream`, the log and then every new event as it happens (`event: change`, `id` = event id).', errors: ['TOO_MANY_STREAMS'], ok: { status: 200, description: '`{events: [{id, time, actor, type, service?, data}]}`' }, stream: true },
  'GET /v1/openapi.json': { tag: 'gateway', summary: 'This OpenAPI document', description: 'Needs no token.', errors: [], ok: { status: 200, description: 'OpenAPI 3.1' } },
};

const errorBody = {
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      properties: { code: { type: 'string' }, message: { type: 'string' }, problems: { type: 'array', items: { type: 'string' } } },
      additionalProperties: true,
    },
  },
} as const;

/** The codes a route can answer, by HTTP status. */
export function routeErrors(key: string, scoped: boolean, validated: boolean): Map<number, string[]> {
  const doc = ROUTE_DOCS[key];
  const codes = new Set([...(scoped ? AUTH : []), ...(validated ? ['INVALID_REQUEST'] : []), ...(doc?.errors ?? []), ...ANY]);
  const byStatus = new Map<number, string[]>();
  for (const code of codes) {
    const s = ERROR_CODES[code].status;
    byStatus.set(s, [...(byStatus.get(s) ?? []), code]);
  }
  return new Map([...byStatus].sort((a, b) => a[0] - b[0]));
}


/** Registers @fastify/swagger and GET /v1/openapi.json. Call before the routes are added,
 * and add them in a plugin registered after this one, so that swagger sees them. */
export function registerOpenApi(app: FastifyInstance): void {
  void app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Switchyard control API',
        version: packageInfo().version,
        description:
          'Steers a Switchyard gateway: weights, cutovers, rollouts, rollbacks, drains, reloads, events. Every error is `{"error": {"code", "message", ...}}`. ' +
          'Authentication: `Authorization: Bearer TOKEN` from control.tokens; each route needs a scope (`x-scope`): read < deploy < admin. Without control.tokens (loopback only) every request acts as "local".',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'A token from control.tokens; its scopes must include the route\'s `x-scope` (read < deploy < admin).' } } },
      tags: [
        { name: 'services', description: 'Weights, cutover, rollback, drain' },
        { name: 'rollouts', description: 'Progressive rollouts with automatic analysis' },
        { name: 'events', description: 'The audit log and live figures' },
        { name: 'gateway', description: 'Status, replicas, reload, this document' },
      ],
    },
    transform: ({ schema, url, route }) => {
      const method = [route.method].flat().find((m) => m !== 'HEAD') ?? 'GET';
      const key = `${method} ${url}`;
      const doc = ROUTE_DOCS[key];
      if (!url.startsWith('/v1/') || doc === undefined) return { schema: { ...(schema ?? {}), hide: true }, url };
      const scope = (route.config as { scope?: string } | undefined)?.scope;
      const s = (schema ?? {}) as Record<string, unknown>;
      const validated = s.params !== undefined || s.querystring !== undefined || s.body !== undefined;
      const response: Record<string, unknown> = {};
      const okSchema = { type: 'object', additionalProperties: true };
      response[String(doc.ok.status)] = doc.stream
        ? { description: doc.ok.description, content: { 'application/json': { schema: okSchema }, 'text/event-stream': { schema: { type: 'string' } } } }
        : { description: doc.ok.description, ...okSchema };
      for (const [status, codes] of routeErrors(key, scope !== undefined, validated)) {
        response[String(status)] = { description: codes.map((c) => `\`${c}\``).join(', '), ...errorBody };
      }
      const out: Record<string, unknown> = {
        ...s,
        summary: doc.summary,
        ...(doc.description !== undefined && { description: doc.description }),
        tags: [doc.tag],
        operationId: `${method.toLowerCase()}${url.replace(/:(\w+)/g, (_m, p: string) => `By${p[0].toUpperCase()}${p.slice(1)}`).replace(/[^A-Za-z0-9]+(.)?/g, (_m, ch?: string) => (ch ?? '').toUpperCase())}`,
        response,
        ...(scope !== undefined ? { security: [{ bearer: [] }, {}], 'x-scope': scope } : { security: [] }),
      };
      if (doc.example !== undefined && s.body !== undefined) out.body = { ...(s.body as Record<string, unknown>), examples: [doc.example] };
      if (doc.ifMatch) out.headers = { type: 'object', properties: { 'if-match': { type: 'string', description: 'Apply only at this revision, e.g. "12"' } } };
      return { schema: out, url };
    },
  });
  void app.register(async (scoped) => {
    // No scope: the document holds no secret and is how a client learns the API.
    scoped.get('/v1/openapi.json', async () => app.swagger());
  });
}

/** The document of a control API with default settings, for docs/control-api.md. */
export async function openApiDocument(): Promise<Record<string, unknown>> {
  const { ControlApi } = await import('./api.js');
  const config = loadConfigText('state: { store: memory }\nservices: {}\n');
  const api = new ControlApi({
    config: config.control,
    controller: {} as never,
    log: pino({ level: 'silent' }),
    reload: () => [],
  });
  await api.app.ready();
  const doc = api.app.swagger() as unknown as Record<string, unknown>;
  await api.app.close();
  return doc;
}

type Obj = Record<string, unknown>;

function schemaSummary(s: Obj | undefined): string {
  if (s === undefined) return '';
  return JSON.stringify(s, null, 2);
}

/** docs/control-api.md, from the OpenAPI document. */
export function controlApiMarkdown(doc: Obj): string {
  const info = doc.info as Obj;
  const lines: string[] = [
    '<!-- Generated by `npm run docs` from the OpenAPI document (GET /v1/openapi.json, control/openapi.ts and the routes in control/api.ts). Do not edit by hand: test/openapi.test.ts fails when this file and the document drift. -->',
    '',
    '# Control API reference',
    '',
    String(info.description),
    '',
    'The machine-readable document is `GET /v1/openapi.json` (OpenAPI 3.1, no token needed). The CLI (`switchyard status|weights|cutover|rollout|…`) calls these routes.',
    '',
    '| method | path | scope | summary |',
    '|---|---|---|---|',
  ];
  const paths = doc.paths as Record<string, Record<string, Obj>>;
  const ops: [string, string, Obj][] = [];
  for (const [path, methods] of Object.entries(paths)) {
    for (const [method, op] of Object.entries(methods)) ops.push([method.toUpperCase(), path, op]);
  }
  for (const [method, path, op] of ops) {
    const anchor = `${method} ${path}`.toLowerCase().replace(/[^a-z0-9 -]/g, '').replace(/ /g, '-');
    lines.push(`| ${method} | [\`${path}\`](#${anchor}) | ${(op['x-scope'] as string | undefined) ?? 'none'} | ${String(op.summary)} |`);
  }
  lines.push('', '## Scopes', '', '`read` < `deploy` < `admin`: a token with a scope may call every route that needs that scope or a lower one. A token is `Authorization: Bearer TOKEN`.', '');
  lines.push('## Error codes', '', 'Every error is `{"error": {"code": "…", "message": "…"}}`, sometimes with more fields (`problems`, `retryAfter`, `state`, `limit`).', '', '| code | status | meaning |', '|---|---|---|');
  for (const [code, e] of Object.entries(ERROR_CODES)) lines.push(`| \`${code}\` | ${e.status} | ${e.meaning} |`);
  lines.push('', '## Routes', '');
  for (const [method, path, op] of ops) {
    lines.push(`### ${method} ${path}`, '', `**${String(op.summary)}**. Scope: ${op['x-scope'] !== undefined ? `\`${String(op['x-scope'])}\`` : 'none (no token needed)'}.`, '');
    if (op.description !== undefined) lines.push(String(op.description), '');
    const params = (op.parameters as Obj[] | undefined) ?? [];
    if (params.length) {
      lines.push('| parameter | in | required | schema |', '|---|---|---|---|');
      for (const p of params) lines.push(`| \`${String(p.name)}\` | ${String(p.in)} | ${p.required === true ? 'yes' : 'no'} | \`${JSON.stringify(p.schema)}\` |`);
      lines.push('');
    }
    const media = ((op.requestBody as Obj | undefined)?.content as Record<string, Obj> | undefined)?.['application/json'];
    const body = media?.schema as Obj | undefined;
    // @fastify/swagger turns the body schema's `examples` into the media type's `example`.
    const example = media?.example ?? (body?.examples as unknown[] | undefined)?.[0];
    const url = `http://127.0.0.1:9090${path.replace('{name}', 'shop').replace('{id}', '127.0.0.1%3A9001')}`;
    const curl = [
      'curl',
      method === 'GET' ? '' : `-X ${method}`,
      op['x-scope'] !== undefined ? '-H "Authorization: Bearer $SWITCHYARD_TOKEN"' : '',
      body !== undefined ? `-H 'content-type: application/json' -d '${JSON.stringify(example ?? {})}'` : method === 'GET' ? '-s' : '',
      url,
    ].filter(Boolean).join(' ');
    lines.push('```sh', curl, '```', '');
    if (body !== undefined) lines.push('Request body (`application/json`):', '', '```json', schemaSummary(body), '```', '');
    lines.push('| status | response |', '|---|---|');
    for (const [status, r] of Object.entries(op.responses as Record<string, Obj>)) lines.push(`| ${status} | ${String(r.description).replace(/\|/g, '\\|')} |`);
    lines.push('');
  }
  return lines.join('\n');
}

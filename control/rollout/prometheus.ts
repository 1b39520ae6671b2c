// Prometheus criteria: each analysis interval, every query of the rollout is run as an
// instant query (GET /api/v1/query) with {{service}}, {{version}} (the target) and
// {{baseline}} substituted, and judged against its bound.
//
// What a query can answer, and how it is judged:
//   - one or more samples: the worst one is the value (the highest against `max`, the
//     lowest against `min`) → pass or fail;
//   - an empty vector, or NaN (0/0 of a rate over no requests) → `wait`: no data yet,
//     counted by the no-traffic policy like a step below minRequests;
//   - Prometheus unreachable, timing out, answering an error (a query it cannot parse)
//     or something that is not a Prometheus answer → `inconclusive`, with the error as
//     the reason; the rollout's inconclusivePolicy decides. Never a silent pass.

import { request } from 'undici';
import type { CriterionResult, PrometheusConfig, PrometheusQuery } from '../state.js';

export interface QueryVars {
  service: string;
  version: string;
  baseline: string | null;
}

export function substitute(query: string, vars: QueryVars): string {
  return query.replace(/\{\{\s*(service|version|baseline)\s*\}\}/g, (_, k: keyof QueryVars) => vars[k] ?? '');
}

const short = (s: string, n = 200): string => (s.length > n ? `${s.slice(0, n)}…` : s);

interface PromAnswer {
  status?: string;
  error?: string;
  errorType?: string;
  data?: { resultType?: string; result?: unknown };
}

/** The sample values of an instant query's answer; throws a readable error otherwise. */
function samples(a: PromAnswer): number[] {
  if (a.status !== 'success') throw new Error(`Prometheus answered ${a.errorType ?? 'an error'}: ${a.error ?? 'no detail'}`);
  const d = a.data;
  if (d === undefined) throw new Error('Prometheus answered without data');
  if (d.resultType === 'scalar') return [Number((d.result as [number, string])[1])];
  if (d.resultType === 'vector') return (d.result as { value: [number, string] }[]).map((r) => Number(r.value[1]));
  throw new Error(`the query returned a ${d.resultType ?? 'unknown'} result; an instant vector or scalar is needed`);
}

async function runQuery(url: string, query: string, timeoutMs: number): Promise<number[]> {
  const u = new URL('api/v1/query', url.endsWith('/') ? url : `${url}/`);
  const body = new URLSearchParams({ query, timeout: `${Math.max(1, Math.floor(timeoutMs / 1000))}s` }).toString();
  const res = await request(u, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
    body,
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.body.text();
  let a: PromAnswer;
  try {
    a = JSON.parse(text) as PromAnswer;
  } catch {
    throw new Error(`Prometheus answered HTTP ${res.statusCode} that is not JSON: ${short(text)}`);
  }
  return samples(a);
}

function describe(err: unknown, timeoutMs: number): string {
  const e = err as Error & { code?: string; cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError' || e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_BODY_TIMEOUT') return `no answer within ${timeoutMs}ms`;
  const code = e.code ?? e.cause?.code;
  if (code === 'ECONNREFUSED') return 'connection refused';
  return short(code !== undefined && !e.message.includes(code) ? `${e.message} (${code})` : e.message);
}

export async function evaluateQuery(cfg: PrometheusConfig, q: PrometheusQuery, vars: QueryVars, timeoutMs: number): Promise<CriterionResult> {
  const op = q.max !== undefined ? 'max' : 'min';
  const bound = (q.max ?? q.min)!;
  const base: Pick<CriterionResult, 'name' | 'bound' | 'op' | 'unit'> = { name: q.name, bound, op, unit: 'number' };
  const out = (c: Omit<CriterionResult, 'name' | 'bound' | 'op' | 'unit'>): CriterionResult => ({ ...base, ...c, ...(q.dryRun === true ? { dryRun: true } : {}) });
  let values: number[];
  try {
    values = await runQuery(cfg.url, substitute(q.query, vars), timeoutMs);
  } catch (err) {
    return out({ value: null, verdict: 'inconclusive', reason: `Prometheus query ${q.name} inconclusive: ${describe(err, timeoutMs)}` });
  }
  const nums = values.filter((v) => !Number.isNaN(v));
  if (nums.length === 0) return out({ value: null, verdict: 'wait', reason: `Prometheus query ${q.name} returned no data` });
  const value = op === 'max' ? Math.max(...nums) : Math.min(...nums);
  const failed = op === 'max' ? value > bound : value < bound;
  if (failed) return out({ value, verdict: 'fail', reason: `Prometheus query ${q.name} = ${value} ${op === 'max' ? '>' : '<'} ${op} ${bound}` });
  return out({ value, verdict: 'pass' });
}

/** Every query of the rollout, run side by side. */
export function evaluatePrometheus(cfg: PrometheusConfig, vars: QueryVars, timeoutMs: number): Promise<CriterionResult[]> {
  return Promise.all(cfg.queries.map((q) => evaluateQuery(cfg, q, vars, timeoutMs)));
}

// Rollout hooks: POSTs of {service, to, step, percent, weights, rollout, hook, state}
// to the rollout's hook URLs, signed like webhooks when the hook has a secret
// (x-switchyard-signature: t=<unix seconds>,v1=<HMAC-SHA256 of "<t>.<body>">).
//
// `pre-rollout` and `pre-step` hooks are gates: one attempt, and anything but a 2xx
// answer within the hook's timeout (an error status, a refused connection, a timeout)
// stops the rollout; the outcome says what the hook answered, for the rollback's reason.
// `post-step`, `post-rollout` and `rolled-back` hooks are notifications: sent in the
// background, retried with exponential backoff, never holding the rollout.

import type { Logger } from 'pino';
import { Agent, request } from 'undici';
import type { HookConfig, HookPhase, RolloutRecord } from '../state.js';
import { signPayload } from '../webhooks.js';

export interface HookOutcome {
  hook: string;
  ok: boolean;
  status?: number;
  ms: number;
  /** What it answered, in words ("answered 503: smoke test failed"). */
  answer: string;
}

export function hookPayload(ro: RolloutRecord, on: HookPhase, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    hook: on,
    service: ro.service,
    to: ro.to,
    baseline: ro.baseline,
    step: ro.step,
    percent: ro.steps[ro.step],
    weights: ro.weights,
    state: ro.state,
    rollout: ro.id,
    ...extra,
  };
}

/** The hooks of `on` that apply to the rollout's current step. */
export function hooksFor(ro: RolloutRecord, on: HookPhase, step = ro.step): HookConfig[] {
  return (ro.hooks ?? []).filter((h) => h.on === on && (h.steps === undefined || h.steps.includes(step)));
}

const short = (s: string, n = 200): string => {
  const t = s.replace(/\s+/g, ' ').trim();
  return t.length > n ? `${t.slice(0, n)}…` : t;
};

export class HookRunner {
  private readonly agent = new Agent({ connections: 4, keepAliveTimeout: 4000 });
  private closed = false;
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly log: Logger,
    private readonly retry = { attempts: 5, backoffMs: 500 },
  ) {}

  private async post(h: HookConfig, body: string, on: HookPhase): Promise<{ status: number; text: string }> {
    const ts = Math.floor(Date.now() / 1000);
    const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'switchyard-hook', 'x-switchyard-hook': on };
    if (h.secret !== undefined) headers['x-switchyard-signature'] = `t=${ts},v1=${signPayload(h.secret, ts, body)}`;
    const res = await request(h.url, {
      method: 'POST',
      headers,
      body,
      dispatcher: this.agent,
      headersTimeout: h.timeoutMs,
      bodyTimeout: h.timeoutMs,
      signal: AbortSignal.timeout(h.timeoutMs),
    });
    const text = await res.body.text();
    return { status: res.statusCode, text };
  }

  /** One gate call: ok only for a 2xx answer within the timeout. */
  async gate(h: HookConfig, payload: Record<string, unknown>): Promise<HookOutcome> {
    const t0 = Date.now();
    const on = payload.hook as HookPhase;
    try {
      const { status, text } = await this.post(h, JSON.stringify(payload), on);
      const ms = Date.now() - t0;
      const ok = status >= 200 && status < 300;
      return { hook: h.name, ok, status, ms, answer: `answered ${status}${text.length > 0 ? `: ${short(text)}` : ''}` };
    } catch (err) {
      const ms = Date.now() - t0;
      const e = err as Error & { code?: string; cause?: { code?: string } };
      const code = e.code ?? e.cause?.code;
      let answer: string;
      if (e.name === 'TimeoutError' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') answer = `did not answer within ${h.timeoutMs}ms`;
      else if (code === 'ECONNREFUSED') answer = 'refused the connection';
      else answer = `failed: ${short(e.message)}${code !== undefined ? ` (${code})` : ''}`;
      return { hook: h.name, ok: false, ms, answer };
    }
  }

  /** Runs the gate hooks one after the other; stops at the first that fails. */
  async gates(hooks: HookConfig[], payload: Record<string, unknown>): Promise<{ ok: boolean; outcomes: HookOutcome[]; failed?: HookOutcome }> {
    const outcomes: HookOutcome[] = [];
    for (const h of hooks) {
      const o = await this.gate(h, payload);
      outcomes.push(o);
      if (!o.ok) return { ok: false, outcomes, failed: o };
    }
    return { ok: true, outcomes };
  }

  /** Sends notifications in the background, each retried until a 2xx or out of attempts. */
  notify(hooks: HookConfig[], payload: Record<string, unknown>): void {
    if (this.closed) return;
    const body = JSON.stringify(payload);
    for (const h of hooks) {
      const p = this.deliver(h, body, payload.hook as HookPhase).finally(() => this.inFlight.delete(p));
      this.inFlight.add(p);
    }
  }

  private async deliver(h: HookConfig, body: string, on: HookPhase): Promise<void> {
    const { attempts, backoffMs } = this.retry;
    for (let attempt = 1; attempt <= attempts && !this.closed; attempt++) {
      try {
        const { status } = await this.post(h, body, on);
        if (status >= 200 && status < 300) return;
        this.log.warn({ hook: h.name, on, status, attempt }, 'rollout hook answered with an error status');
      } catch (err) {
        this.log.warn({ hook: h.name, on, err: (err as Error).message, attempt }, 'rollout hook delivery failed');
      }
      if (attempt < attempts) await new Promise((r) => setTimeout(r, backoffMs * 2 ** (attempt - 1)).unref());
    }
    if (!this.closed) this.log.error({ hook: h.name, on }, 'rollout hook given up after its retries');
  }

  /** Waits a moment for notifications under way, then stops. */
  async close(ms = 1000): Promise<void> {
    if (this.inFlight.size > 0) await Promise.race([Promise.all(this.inFlight), new Promise((r) => setTimeout(r, ms).unref())]);
    this.closed = true;
    await this.agent.close().catch(() => {});
  }
}

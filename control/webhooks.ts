// Webhooks: every control event is POSTed as JSON to the configured receivers whose
// `events` filter matches it. The body is signed with HMAC-SHA256 over
// `<timestamp>.<body>` using the hook's secret:
//   x-switchyard-signature: t=<unix seconds>,v1=<hex digest>
// Each receiver has its own queue, delivered in event order, one at a time, retried
// with exponential backoff. Delivery never blocks the control path: the controller only
// enqueues. Failures are logged and counted; a queue over its bound drops its oldest.
//
// `format: slack` sends people a sentence instead of the event: a Slack-compatible
// `{"text": "..."}` (Slack, Mattermost and Rocket.Chat incoming webhooks take it) naming
// the service, the action, the step, the weights, the analysis verdict and the reason.
// It is signed the same way when a secret is set.

import { createHmac } from 'node:crypto';
import type { Logger } from 'pino';
import { Agent, request } from 'undici';
import type { ControlEvent } from './state.js';

export interface WebhookConfig {
  url: string;
  /** Actions to send ("rollout.rolled_back"), prefixes ending in "*" ("rollout.*"), or
   * empty/absent for every event. */
  events?: string[];
  secret?: string;
  /** `json` (default): the signed event; `slack`: `{"text": ...}` for people. */
  format?: 'json' | 'slack';
}

const fmtWeights = (w: unknown): string =>
  w !== null && typeof w === 'object'
    ? Object.entries(w as Record<string, unknown>)
        .map(([k, v]) => `${k}=${String(v)}`)
        .join(' ')
    : '';

/** The one-message text of an event for a chat channel. */
export function slackText(e: ControlEvent): string {
  const d = e.detail;
  const what = e.action.replace(/^rollout\./, 'rollout ').replace(/_/g, ' ');
  const parts = [`[switchyard] ${e.service ?? 'gateway'}: ${what}`];
  // Step indexes as the API and the reasons give them (0 = the first step).
  if (typeof d.step === 'number') parts.push(`step ${d.step}${typeof d.percent === 'number' ? ` (${d.percent}%)` : ''}`);
  const weights = fmtWeights(d.weights ?? d.to);
  if (weights !== '') parts.push(`weights ${weights}`);
  const analysis = d.analysis as { verdict?: string; reason?: string } | null | undefined;
  if (analysis?.verdict !== undefined) parts.push(`verdict ${analysis.verdict}`);
  const reason = typeof d.reason === 'string' ? d.reason : analysis?.reason;
  if (reason !== undefined) parts.push(`reason: ${reason}`);
  parts.push(`by ${e.actor}`);
  if (e.action === 'rollout.awaiting_approval' && e.service !== null) parts.push(`approve with: switchyard approve ${e.service}`);
  return parts.join(' · ');
}

export interface WebhookOptions {
  attempts?: number;
  backoffMs?: number;
  timeoutMs?: number;
  maxQueue?: number;
}

export function signPayload(secret: string, timestamp: number, body: string): string {
  return createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
}

export function matches(filter: string[] | undefined, action: string): boolean {
  if (filter === undefined || filter.length === 0) return true;
  return filter.some((f) => f === '*' || f === action || (f.endsWith('*') && action.startsWith(f.slice(0, -1))));
}

class Receiver {
  private readonly queue: ControlEvent[] = [];
  private running = false;
  delivered = 0;
  failed = 0;
  dropped = 0;

  constructor(
    readonly cfg: WebhookConfig,
    private readonly owner: Webhooks,
  ) {}

  push(e: ControlEvent): void {
    if (this.queue.length >= this.owner.opts.maxQueue) {
      this.queue.shift();
      this.dropped++;
      this.owner.log.warn({ url: this.cfg.url }, 'webhook queue full; dropped its oldest event');
    }
    this.queue.push(e);
    if (!this.running) void this.run();
  }

  private async run(): Promise<void> {
    this.running = true;
    while (this.queue.length > 0 && !this.owner.closed) {
      const e = this.queue[0];
      await this.deliver(e);
      this.queue.shift();
    }
    this.running = false;
    this.owner.idleCheck();
  }

  get pending(): number {
    return this.queue.length;
  }

  private async deliver(e: ControlEvent): Promise<void> {
    const body = this.cfg.format === 'slack' ? JSON.stringify({ text: slackText(e) }) : JSON.stringify(e);
    const { attempts, backoffMs, timeoutMs } = this.owner.opts;
    for (let attempt = 1; attempt <= attempts && !this.owner.closed; attempt++) {
      const ts = Math.floor(Date.now() / 1000);
      const headers: Record<string, string> = {
        'content-type': 'application/json',
        'user-agent': 'switchyard-webhook',
        'x-switchyard-event': e.action,
        'x-switchyard-delivery': String(e.id),
      };
      if (this.cfg.secret) headers['x-switchyard-signature'] = `t=${ts},v1=${signPayload(this.cfg.secret, ts, body)}`;
      try {
        const res = await request(this.cfg.url, {
          method: 'POST',
          headers,
          body,
          dispatcher: this.owner.agent,
          headersTimeout: timeoutMs,
          bodyTimeout: timeoutMs,
        });
        await res.body.dump();
        if (res.statusCode >= 200 && res.statusCode < 300) {
          this.delivered++;
          return;
        }
        this.owner.log.warn({ url: this.cfg.url, event: e.id, status: res.statusCode, attempt }, 'webhook answered with an error status');
      } catch (err) {
        this.owner.log.warn({ url: this.cfg.url, event: e.id, err: (err as Error).message, attempt }, 'webhook delivery failed');
      }
      if (attempt < attempts) await new Promise((r) => setTimeout(r, backoffMs * 2 ** (attempt - 1)).unref());
    }
    this.failed++;
    this.owner.log.error({ url: this.cfg.url, event: e.id, action: e.action }, 'webhook given up after its retries');
  }
}

export class Webhooks {
  readonly opts: Required<WebhookOptions>;
  readonly agent = new Agent({ connections: 4, keepAliveTimeout: 4000 });
  readonly receivers: Receiver[];
  closed = false;
  private idleWaiters: (() => void)[] = [];

  constructor(
    hooks: WebhookConfig[],
    readonly log: Logger,
    opts: WebhookOptions = {},
  ) {
    this.opts = { attempts: opts.attempts ?? 6, backoffMs: opts.backoffMs ?? 500, timeoutMs: opts.timeoutMs ?? 5000, maxQueue: opts.maxQueue ?? 1000 };
    this.receivers = hooks.map((h) => new Receiver(h, this));
  }

  /** Enqueues; returns at once. */
  publish(e: ControlEvent): void {
    if (this.closed) return;
    for (const r of this.receivers) if (matches(r.cfg.events, e.action)) r.push(e);
  }

  stats(): { url: string; delivered: number; failed: number; dropped: number; pending: number }[] {
    return this.receivers.map((r) => ({ url: r.cfg.url, delivered: r.delivered, failed: r.failed, dropped: r.dropped, pending: r.pending }));
  }

  idleCheck(): void {
    if (this.receivers.every((r) => r.pending === 0)) {
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const fn of w) fn();
    }
  }

  /** Resolves when every queue is empty (or after `ms`). */
  async flush(ms: number): Promise<void> {
    if (this.receivers.every((r) => r.pending === 0)) return;
    await Promise.race([new Promise<void>((r) => this.idleWaiters.push(r)), new Promise((r) => setTimeout(r, ms).unref())]);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.agent.close().catch(() => {});
  }
}

// The CLI's client commands: thin callers of the control API for people and CI jobs.
// They read SWITCHYARD_URL (default http://127.0.0.1:9090) and SWITCHYARD_TOKEN, print a
// human table (or the API's JSON with --json) on stdout, progress on stderr, and exit:
//   0 done · 1 the operation failed or was rolled back · 2 usage error or a request the
//   gateway refused as invalid · 3 authentication or permission refused ·
//   4 gateway unreachable or --timeout passed.

import { request } from 'undici';

export const EXIT = { OK: 0, FAILED: 1, USAGE: 2, AUTH: 3, UNREACHABLE: 4 } as const;

export class CliExit extends Error {
  constructor(
    readonly code: number,
    message: string,
    /** A mistake in the command line itself (worth pointing at the help). */
    readonly usage = code === 2,
  ) {
    super(message);
  }
}

interface Flags {
  positional: string[];
  values: Record<string, string>;
  bools: Set<string>;
}

const BOOL_FLAGS = new Set(['json', 'wait', 'force', 'follow', 'stop']);

function parseFlags(args: string[], allowed: string[]): Flags {
  const f: Flags = { positional: [], values: {}, bools: new Set() };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith('--')) {
      f.positional.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const key = eq === -1 ? a.slice(2) : a.slice(2, eq);
    if (!allowed.includes(key)) throw new CliExit(EXIT.USAGE, `unknown flag --${key}`);
    if (BOOL_FLAGS.has(key)) {
      if (eq !== -1) throw new CliExit(EXIT.USAGE, `--${key} takes no value`);
      f.bools.add(key);
      continue;
    }
    const v = eq === -1 ? args[++i] : a.slice(eq + 1);
    if (v === undefined || v === '' || (eq === -1 && v.startsWith('--'))) throw new CliExit(EXIT.USAGE, `--${key} needs a value`);
    f.values[key] = v;
  }
  return f;
}

/** --if-match REV as the If-Match header of a write that changes weights. */
function ifMatchHeader(f: Flags): Record<string, string> | undefined {
  const v = f.values['if-match'];
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new CliExit(EXIT.USAGE, '--if-match must be a revision number such as 12');
  return { 'if-match': `"${v}"` };
}

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
function durationMs(s: string, flag: string): number {
  const m = DURATION.exec(s);
  if (m === null) throw new CliExit(EXIT.USAGE, `--${flag} must be a duration such as 30s or 10m`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms']!;
}

interface ApiError {
  error?: { code?: string; message?: string; [k: string]: unknown };
}

export class Client {
  readonly base: string;
  constructor(
    base = process.env.SWITCHYARD_URL ?? 'http://127.0.0.1:9090',
    private readonly token = process.env.SWITCHYARD_TOKEN,
  ) {
    this.base = base.replace(/\/+$/, '');
  }

  async call<T = Record<string, unknown>>(method: string, path: string, body?: unknown, opts: { timeoutMs?: number; headers?: Record<string, string> } = {}): Promise<{ status: number; body: T & ApiError }> {
    const headers: Record<string, string> = { accept: 'application/json', ...opts.headers };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res;
    try {
      res = await request(`${this.base}${path}`, {
        method: method as 'GET',
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        headersTimeout: opts.timeoutMs ?? 30_000,
        bodyTimeout: opts.timeoutMs ?? 30_000,
      });
    } catch (err) {
      const e = err as Error & { code?: string };
      if (e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_BODY_TIMEOUT') throw new CliExit(EXIT.UNREACHABLE, `no answer from ${this.base} in time`);
      throw new CliExit(EXIT.UNREACHABLE, `cannot reach the gateway at ${this.base}: ${e.code ?? e.message}`);
    }
    const text = await res.body.text();
    let parsed: T & ApiError;
    try {
      parsed = JSON.parse(text) as T & ApiError;
    } catch {
      throw new CliExit(EXIT.FAILED, `the gateway answered ${res.statusCode} with a body that is not JSON`);
    }
    return { status: res.statusCode, body: parsed };
  }

  /** Throws CliExit for any non-2xx answer, with the exit code README "The CLI in CI" gives it. */
  async ok<T = Record<string, unknown>>(method: string, path: string, body?: unknown, opts?: { timeoutMs?: number; headers?: Record<string, string> }): Promise<T> {
    const r = await this.call<T>(method, path, body, opts);
    if (r.status >= 200 && r.status < 300) return r.body;
    const code = r.body.error?.code ?? 'ERROR';
    const msg = `${r.status} ${code}: ${r.body.error?.message ?? ''}`;
    if (r.status === 401 || r.status === 403) throw new CliExit(EXIT.AUTH, msg);
    if (r.status === 504) throw new CliExit(EXIT.UNREACHABLE, msg);
    if (r.status >= 500) throw new CliExit(EXIT.FAILED, msg);
    // The gateway refused the request as invalid: exit 2, but not a command-line mistake.
    throw new CliExit(EXIT.USAGE, msg, false);
  }
}

type Out = { stdout: (s: string) => void; stderr: (s: string) => void };

const pad = (s: string, n: number): string => (s.length >= n ? s : s + ' '.repeat(n - s.length));

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => pad(c ?? '', widths[i] + 2)).join('').trimEnd()).join('\n') + '\n';
}

interface ServiceView {
  name: string;
  revision: number;
  weights: Record<string, number>;
  versions: Record<string, { weight: number; inflight: number; connectionsClosing?: number; endpoints: { id: string; address: string; state: string; inflight: number }[] }>;
  rollout: RolloutView | null;
}

interface RolloutView {
  state: string;
  to: string;
  step: number;
  percent: number;
  steps: number[];
  weights: Record<string, number>;
  reason: string | null;
  analysis: { last: AnalysisView | null; steps?: Record<string, AnalysisView> };
  history?: { step: number; percent: number; at: string }[];
  approval?: number[];
  awaitingApproval?: number | null;
}

interface CriterionView {
  name: string;
  value: number | null;
  bound: number;
  op: 'max' | 'min';
  unit: string;
  verdict: string;
  dryRun?: boolean;
  reason?: string;
}

interface AnalysisView {
  step: number;
  at: string;
  verdict: string;
  reason?: string;
  criteria?: CriterionView[];
  target: { requests: number; errorRate: number; p99Ms: number };
}

/** A criterion's value or bound as it reads: 1.25% for a ratio, 120ms, a plain number. */
function fmtMeasure(v: number | null, unit: string): string {
  if (v === null) return '-';
  if (unit === 'ratio') return `${(v * 100).toFixed(2)}%`;
  if (unit === 'ms') return `${v}ms`;
  return String(Math.round(v * 1e6) / 1e6);
}

/** `rollout status`: per step entered, its weights and its last analysis, one row per criterion. */
function fmtRolloutStatus(service: string, r: RolloutView): string {
  const parts = [`${service}: rollout ${fmtRollout(r)}\nweights ${fmtWeights(r.weights)}\n`];
  if (r.state === 'awaiting_approval') parts.push(`awaiting approval to enter step ${r.step + 1}/${r.steps.length} (${r.percent}%): switchyard approve ${service}\n`);
  const steps = r.analysis.steps ?? {};
  for (let i = 0; i < r.steps.length; i++) {
    const a = steps[String(i)];
    const entered = r.history?.some((h) => h.step === i) ?? false;
    if (a === undefined && !entered) continue;
    const gate = (r.approval ?? []).includes(i) ? ' [approval]' : '';
    if (a === undefined) {
      parts.push(`\nstep ${i + 1}/${r.steps.length} (${r.steps[i]}%)${gate}: ${r.steps[i] === 0 ? 'tester lane, not analysed' : 'no analysis yet'}\n`);
      continue;
    }
    parts.push(`\nstep ${i + 1}/${r.steps.length} (${r.steps[i]}%)${gate}: ${a.verdict.toUpperCase()} at ${a.at}${a.reason ? ` — ${a.reason}` : ''}\n`);
    const rows = [['CRITERION', 'VALUE', 'BOUND', 'VERDICT', 'NOTE']];
    for (const c of a.criteria ?? []) {
      rows.push([c.name, fmtMeasure(c.value, c.unit), `${c.op} ${fmtMeasure(c.bound, c.unit)}`, c.dryRun ? `${c.verdict} (dry run)` : c.verdict, c.reason ?? '']);
    }
    parts.push(table(rows));
  }
  return parts.join('');
}

function fmtWeights(w: Record<string, number>): string {
  return Object.entries(w)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
}

interface MirrorView {
  mirror: { to: string; percent: number; methods: string[] } | null;
  source: string | null;
  counts: Record<string, number>;
  compared: number;
  diffRate: number;
  avgLatencyDeltaMs: number;
  samples: { at: string; method: string; path: string; result: string; served: { version: string; status: number }; mirror: { version: string; status: number }; where: string; latencyDeltaMs: number }[];
}

function fmtMirror(service: string, r: MirrorView): string {
  const m = r.mirror;
  const head = m === null ? `${service}: no mirror` : `${service}: mirror ${m.percent}% of ${m.methods.join(',')} to ${m.to} (${r.source})`;
  const counts = Object.entries(r.counts)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  const lines = [`${head}\n`, `${counts}  diff rate ${(r.diffRate * 100).toFixed(2)}% of ${r.compared}  latency delta ${r.avgLatencyDeltaMs} ms\n`];
  if (r.samples.length > 0) {
    lines.push(
      table([
        ['TIME', 'REQUEST', 'RESULT', 'STATUS', 'WHERE', 'DELTA'],
        ...r.samples.map((x) => [x.at, `${x.method} ${x.path}`, x.result, `${x.served.status}→${x.mirror.status}`, x.where, `${x.latencyDeltaMs}ms`]),
      ]),
    );
  }
  return lines.join('');
}

/** A percentage (1%) or a fraction (0.01). */
function rate(v: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(%?)$/.exec(v);
  if (m === null) throw new CliExit(EXIT.USAGE, `--${flag} must be a percentage such as 1% or a fraction such as 0.01`);
  return m[2] === '%' ? Number(m[1]) / 100 : Number(m[1]);
}

function fmtRollout(r: RolloutView | null): string {
  if (r === null) return '-';
  return `${r.state} → ${r.to} step ${r.step + 1}/${r.steps.length} (${r.percent}%)${r.reason ? `: ${r.reason}` : ''}`;
}

export async function runClient(cmd: string, args: string[], out: Out = { stdout: (s) => process.stdout.write(s), stderr: (s) => process.stderr.write(s) }): Promise<number> {
  const c = new Client();
  const svcPath = (s: string): string => `/v1/services/${encodeURIComponent(s)}`;
  const need = (f: Flags, n: number, what: string): void => {
    if (f.positional.length !== n) throw new CliExit(EXIT.USAGE, `${cmd} takes ${what}`);
  };
  const print = (f: Flags, json: unknown, human: () => string): void => out.stdout(f.bools.has('json') ? `${JSON.stringify(json, null, 2)}\n` : human());

  switch (cmd) {
    case 'status': {
      const f = parseFlags(args, ['json']);
      if (f.positional.length > 1) throw new CliExit(EXIT.USAGE, 'status takes at most one SERVICE');
      if (f.positional.length === 0) {
        const r = await c.ok<{ revision: number; services: { name: string; revision: number; weights: Record<string, number>; rollout: RolloutView | null }[] }>('GET', '/v1/services');
        print(f, r, () => table([['SERVICE', 'REVISION', 'WEIGHTS', 'ROLLOUT'], ...r.services.map((s) => [s.name, String(s.revision), fmtWeights(s.weights), fmtRollout(s.rollout)])]));
        return EXIT.OK;
      }
      const s = await c.ok<ServiceView>('GET', svcPath(f.positional[0]));
      print(f, s, () => {
        const rows = [['VERSION', 'WEIGHT', 'INFLIGHT', 'ENDPOINT', 'STATE', 'EP-INFLIGHT']];
        for (const [v, d] of Object.entries(s.versions)) {
          if (d.endpoints.length === 0) rows.push([v, String(d.weight), String(d.inflight), '-', '-', '-']);
          d.endpoints.forEach((e, i) => rows.push(i === 0 ? [v, String(d.weight), String(d.inflight), e.id, e.state, String(e.inflight)] : ['', '', '', e.id, e.state, String(e.inflight)]));
        }
        return `service ${s.name}  revision ${s.revision}  rollout ${fmtRollout(s.rollout)}\n${table(rows)}`;
      });
      return EXIT.OK;
    }
    case 'weights': {
      const f = parseFlags(args, ['json', 'if-match']);
      if (f.positional.length < 2) throw new CliExit(EXIT.USAGE, 'weights takes SERVICE VERSION=WEIGHT...');
      const [service, ...pairs] = f.positional;
      const weights: Record<string, number> = {};
      for (const p of pairs) {
        const m = /^([^=]+)=(\d+)$/.exec(p);
        if (m === null) throw new CliExit(EXIT.USAGE, `${p}: expected VERSION=WEIGHT with a non-negative integer weight`);
        weights[m[1]] = Number(m[2]);
      }
      const r = await c.ok<{ revision: number; weights: Record<string, number> }>('PUT', `${svcPath(service)}/weights`, { weights }, { headers: ifMatchHeader(f) });
      print(f, r, () => `${service}: ${fmtWeights(r.weights)} (revision ${r.revision})\n`);
      return EXIT.OK;
    }
    case 'cutover': {
      const f = parseFlags(args, ['json', 'to', 'wait', 'timeout', 'force', 'if-match', 'drain-connections']);
      need(f, 1, 'SERVICE --to VERSION');
      const to = f.values.to;
      if (!to) throw new CliExit(EXIT.USAGE, 'cutover needs --to VERSION');
      const timeout = f.values.timeout ?? '60s';
      const timeoutMs = durationMs(timeout, 'timeout');
      const drainConnections = f.values['drain-connections'];
      if (drainConnections !== undefined) durationMs(drainConnections, 'drain-connections');
      const service = f.positional[0];
      const wait = f.bools.has('wait');
      let done = false;
      let last = '';
      const progress = async (): Promise<void> => {
        while (!done) {
          await new Promise((r) => setTimeout(r, 500));
          if (done) break;
          const s = await c.call<ServiceView>('GET', svcPath(service)).catch(() => undefined);
          if (s === undefined || s.status !== 200) continue;
          const left = Object.entries(s.body.versions)
            .filter(([v, d]) => v !== to && (d.inflight > 0 || (d.connectionsClosing ?? 0) > 0))
            .map(([v, d]) => `${v} ${d.inflight} in flight${(d.connectionsClosing ?? 0) > 0 ? `, ${d.connectionsClosing} connection(s) closing` : ''}`);
          const line = left.length ? `draining: ${left.join(', ')}` : 'draining: nothing left in flight';
          if (line !== last && !done) out.stderr(`${line}\n`);
          last = line;
        }
      };
      if (wait) {
        out.stderr(`cutover ${service} → ${to}; waiting up to ${timeout} for the old version to drain\n`);
        void progress();
      }
      try {
        const r = await c.ok<{ revision: number; weights: Record<string, number>; drained: boolean; cut?: number; connections?: { moved?: number } }>(
          'POST',
          `${svcPath(service)}/cutover`,
          { to, wait, timeout, ...(f.bools.has('force') ? { force: true } : {}), ...(drainConnections === undefined ? {} : { connections: { drain: drainConnections } }) },
          { timeoutMs: timeoutMs + 15_000, headers: ifMatchHeader(f) },
        );
        // The switch happened, but requests of the old version were cut (a shutdown or
        // a killed process ended them), not finished: the drain did not happen.
        if (wait && !r.drained) {
          print(f, r, () => `${service}: ${fmtWeights(r.weights)} (revision ${r.revision}); NOT drained: ${r.cut ?? 0} request(s) of the old version were cut, not finished\n`);
          out.stderr(`drain failed: ${r.cut ?? 0} request(s) of the old version were cut by a shutdown or a process that died\n`);
          return EXIT.FAILED;
        }
        const moved = r.connections?.moved === undefined ? '' : `; ${r.connections.moved} connection(s) moved`;
        print(f, r, () => `${service}: ${fmtWeights(r.weights)} (revision ${r.revision})${wait ? '; old version drained' : ''}${moved}\n`);
        return EXIT.OK;
      } finally {
        done = true;
      }
    }
    case 'rollout': {
      if (args[0] === 'status') {
        const f = parseFlags(args.slice(1), ['json']);
        need(f, 1, 'status SERVICE');
        const r = await c.ok<RolloutView>('GET', `${svcPath(f.positional[0])}/rollout`);
        print(f, r, () => fmtRolloutStatus(f.positional[0], r));
        return EXIT.OK;
      }
      const f = parseFlags(args, ['json', 'to', 'steps', 'interval', 'max-error-rate', 'max-p99', 'min-requests', 'no-traffic', 'approval', 'max-mirror-diff-rate', 'wait', 'timeout', 'force', 'if-match', 'drain-connections']);
      need(f, 1, 'SERVICE --to VERSION --steps 5,25,50,100 --interval 30s');
      const service = f.positional[0];
      const { to, steps, interval } = f.values;
      if (!to || !steps || !interval) throw new CliExit(EXIT.USAGE, 'rollout needs --to, --steps and --interval');
      const stepList = steps.split(',').map((s) => (/^\d+$/.test(s.trim()) ? Number(s.trim()) : NaN));
      if (stepList.some(Number.isNaN)) throw new CliExit(EXIT.USAGE, '--steps must be a comma-separated list of percentages such as 5,25,50,100');
      durationMs(interval, 'interval');
      const analysis: Record<string, unknown> = {};
      const er = f.values['max-error-rate'];
      if (er !== undefined) {
        const m = /^(\d+(?:\.\d+)?)(%?)$/.exec(er);
        if (m === null) throw new CliExit(EXIT.USAGE, '--max-error-rate must be a percentage such as 1% or a fraction such as 0.01');
        analysis.maxErrorRate = m[2] === '%' ? Number(m[1]) / 100 : Number(m[1]);
      }
      const dr = f.values['max-mirror-diff-rate'];
      if (dr !== undefined) analysis.maxMirrorDiffRate = rate(dr, 'max-mirror-diff-rate');
      if (f.values['max-p99'] !== undefined) {
        durationMs(f.values['max-p99'], 'max-p99');
        analysis.maxP99 = f.values['max-p99'];
      }
      if (f.values['min-requests'] !== undefined) {
        if (!/^\d+$/.test(f.values['min-requests'])) throw new CliExit(EXIT.USAGE, '--min-requests must be a non-negative integer');
        analysis.minRequests = Number(f.values['min-requests']);
      }
      if (f.values['no-traffic'] !== undefined) {
        if (!['fail', 'continue'].includes(f.values['no-traffic'])) throw new CliExit(EXIT.USAGE, '--no-traffic must be fail or continue');
        analysis.noTrafficPolicy = f.values['no-traffic'];
      }
      let approval: number[] | undefined;
      if (f.values.approval !== undefined) {
        approval = f.values.approval.split(',').map((s) => (/^\d+$/.test(s.trim()) ? Number(s.trim()) : NaN));
        if (approval.some(Number.isNaN)) throw new CliExit(EXIT.USAGE, '--approval must be a comma-separated list of step indexes (0 = the first step) such as 3');
      }
      const timeoutMs = durationMs(f.values.timeout ?? '10m', 'timeout');
      const started = Date.now();
      let r = await c.ok<RolloutView>('POST', `${svcPath(service)}/rollout`, {
        to,
        steps: stepList,
        interval,
        ...(Object.keys(analysis).length ? { analysis } : {}),
        ...(f.bools.has('force') ? { force: true } : {}),
        ...(approval !== undefined ? { approval } : {}),
        ...(f.values['drain-connections'] === undefined ? {} : { connections: { drain: f.values['drain-connections'] } }),
      }, { headers: ifMatchHeader(f) });
      out.stderr(`rollout ${service} → ${to} started: step 1/${r.steps.length} (${r.percent}%)\n`);
      if (!f.bools.has('wait')) {
        print(f, r, () => `${service}: rollout ${fmtRollout(r)}\n`);
        return EXIT.OK;
      }
      let seen = `${r.state}/${r.step}`;
      let lastVerdict = '';
      while (r.state === 'running' || r.state === 'paused' || r.state === 'awaiting_approval') {
        if (Date.now() - started > timeoutMs) {
          print(f, r, () => `${service}: rollout still ${r.state} at step ${r.step + 1}/${r.steps.length} after --timeout ${f.values.timeout ?? '10m'}\n`);
          out.stderr(`timeout: the rollout keeps running on the gateway; steer it with pause/promote/abort ${service}\n`);
          return EXIT.UNREACHABLE;
        }
        await new Promise((res) => setTimeout(res, 250));
        r = await c.ok<RolloutView>('GET', `${svcPath(service)}/rollout`);
        const key = `${r.state}/${r.step}`;
        const v = r.analysis.last;
        const verdict = v ? `${v.verdict}:${v.reason ?? ''}:${v.target.requests}` : '';
        if (key !== seen && r.state === 'awaiting_approval') out.stderr(`rollout ${service}: awaiting approval to enter step ${r.step + 1}/${r.steps.length} (${r.percent}%): switchyard approve ${service}\n`);
        else if (key !== seen) out.stderr(`rollout ${service}: ${r.state} step ${r.step + 1}/${r.steps.length} (${r.percent}%) weights ${fmtWeights(r.weights)}\n`);
        else if (verdict !== lastVerdict && v !== null && v.verdict === 'wait') out.stderr(`rollout ${service}: waiting: ${v.reason}\n`);
        seen = key;
        lastVerdict = verdict;
      }
      print(f, r, () => `${service}: rollout ${fmtRollout(r)}\n`);
      if (r.state !== 'succeeded') {
        out.stderr(`rollout ${r.state}: ${r.reason ?? ''}\n`);
        return EXIT.FAILED;
      }
      return EXIT.OK;
    }
    case 'mirror': {
      const f = parseFlags(args, ['json', 'to', 'percent', 'methods', 'ignore', 'headers', 'max-body', 'timeout', 'stop']);
      need(f, 1, 'SERVICE [--to VERSION [--percent 10] [--methods GET,HEAD] [--ignore \'$.a,$.b\'] [--headers content-type] [--max-body 256kb] [--timeout 5s] | --stop]');
      const service = f.positional[0];
      const list = (v: string | undefined): string[] | undefined => (v === undefined ? undefined : v.split(',').map((x) => x.trim()).filter((x) => x !== ''));
      let r: MirrorView;
      if (f.bools.has('stop')) r = await c.ok<MirrorView>('DELETE', `${svcPath(service)}/mirror`);
      else if (f.values.to !== undefined) {
        const pc = f.values.percent;
        if (pc !== undefined && !/^\d+(\.\d+)?%?$/.test(pc)) throw new CliExit(EXIT.USAGE, '--percent must be a number from 0 to 100');
        const body: Record<string, unknown> = { to: f.values.to };
        if (pc !== undefined) body.percent = Number(pc.replace('%', ''));
        if (f.values.methods !== undefined) body.methods = list(f.values.methods)!.map((m) => m.toUpperCase());
        if (f.values.ignore !== undefined) body.ignore = list(f.values.ignore);
        if (f.values.headers !== undefined) body.headers = list(f.values.headers);
        if (f.values['max-body'] !== undefined) body.maxBodyBytes = f.values['max-body'];
        if (f.values.timeout !== undefined) body.timeout = f.values.timeout;
        r = await c.ok<MirrorView>('PUT', `${svcPath(service)}/mirror`, body);
      } else {
        if (Object.keys(f.values).length > 0) throw new CliExit(EXIT.USAGE, 'mirror settings need --to VERSION');
        r = await c.ok<MirrorView>('GET', `${svcPath(service)}/mirror`);
      }
      print(f, r, () => fmtMirror(service, r));
      return EXIT.OK;
    }
    case 'approve':
    case 'pause':
    case 'resume':
    case 'promote':
    case 'abort': {
      const f = parseFlags(args, ['json']);
      need(f, 1, 'SERVICE');
      const r = await c.ok<RolloutView>('POST', `${svcPath(f.positional[0])}/rollout/${cmd}`);
      print(f, r, () => `${f.positional[0]}: rollout ${fmtRollout(r)} weights ${fmtWeights(r.weights)}\n`);
      return EXIT.OK;
    }
    case 'rollback': {
      const f = parseFlags(args, ['json', 'if-match']);
      need(f, 1, 'SERVICE');
      const r = await c.ok<{ revision: number; weights: Record<string, number> }>('POST', `${svcPath(f.positional[0])}/rollback`, undefined, { headers: ifMatchHeader(f) });
      print(f, r, () => `${f.positional[0]}: ${fmtWeights(r.weights)} (revision ${r.revision})\n`);
      return EXIT.OK;
    }
    case 'events': {
      const f = parseFlags(args, ['json', 'follow', 'since']);
      need(f, 0, 'no positional arguments');
      let since = Number(f.values.since ?? 0);
      if (!Number.isInteger(since) || since < 0) throw new CliExit(EXIT.USAGE, '--since must be an event id');
      type Ev = { id: number; time: string; actor: string; service: string | null; action: string; revision: number; detail: unknown };
      const line = (e: Ev): string => (f.bools.has('json') ? `${JSON.stringify(e)}\n` : `${e.id}\t${e.time}\t${e.actor}\t${e.service ?? '-'}\t${e.action}\trev ${e.revision}\t${JSON.stringify(e.detail)}\n`);
      const r = await c.ok<{ events: Ev[] }>('GET', `/v1/events?since=${since}`);
      if (!f.bools.has('follow')) {
        out.stdout(f.bools.has('json') ? `${JSON.stringify(r, null, 2)}\n` : r.events.map(line).join(''));
        return EXIT.OK;
      }
      for (const e of r.events) {
        out.stdout(line(e));
        since = e.id;
      }
      // Follow: poll the event list (works through any proxy that buffers streams).
      for (;;) {
        await new Promise((res) => setTimeout(res, 500));
        const n = await c.ok<{ events: Ev[] }>('GET', `/v1/events?since=${since}`);
        for (const e of n.events) {
          out.stdout(line(e));
          since = e.id;
        }
      }
    }
    default:
      throw new CliExit(EXIT.USAGE, `unknown command ${cmd}`);
  }
}

export const CLIENT_COMMANDS = ['status', 'weights', 'cutover', 'rollout', 'approve', 'mirror', 'pause', 'resume', 'promote', 'abort', 'rollback', 'events'];

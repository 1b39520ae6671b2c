// Mirroring (shadow traffic): a share of the requests served by one version is copied
// to another (`mirror.to`), the copy's answer is compared with the served one and then
// thrown away.
//
// The served request never waits for its copy and never sees it fail:
//  - the copy is sent on the target endpoint's own mirror pool (gateway/endpoint.ts),
//    so a hung target holds none of the connections real traffic uses;
//  - copies in flight are bounded per process (maxInflight); over it the request is not
//    copied, only counted as dropped;
//  - a request body is teed chunk by chunk as undici reads it for the served request
//    (CheckedBody in forward.ts) and the copy is sent once it is whole; a body over
//    maxBodyBytes is not copied (dropped);
//  - the served response is teed as it streams to the client (a prefix of at most
//    maxBodyBytes plus a running digest): the client's answer is written first;
//  - the copy has its own deadline; its failures go to its own counters, never to the
//    endpoint's outlier detection or to the served version's (or the target's) window.
//
// Results: match | status_diff (statuses differ: the HTTP status, or a gRPC answer's
// grpc-status, from its trailers or a trailers-only head) | body_diff (same status; a compared
// header or the body differs) | error (the copy failed: connect, reset, timeout, no
// endpoint) | dropped (not copied: over maxInflight or maxBodyBytes).

import { createHash, type Hash } from 'node:crypto';
import type { Dispatcher } from 'undici';
import type { MirrorConfig } from '../config/types.js';
import { GatewayError } from './errors.js';
import { withHostHeader } from './headers.js';
import { pickEndpoint } from './select.js';
import type { VersionSnapshot } from './snapshot.js';
import { WindowCounters } from './stats.js';

export const MIRROR_RESULTS = ['match', 'status_diff', 'body_diff', 'error', 'dropped'] as const;
export type MirrorResult = (typeof MIRROR_RESULTS)[number];
const RESULT_INDEX: Record<MirrorResult, number> = { match: 0, status_diff: 1, body_diff: 2, error: 3, dropped: 4 };

/** How many differing samples each service keeps. */
export const SAMPLE_RING = 20;

/** One copy whose answer differed from the served one (or that failed). */
export interface MirrorSample {
  at: string;
  method: string;
  /** The request path, without its query. */
  path: string;
  result: MirrorResult;
  /** The version that served the client. */
  served: { version: string; status: number };
  /** The mirror target's answer (status 0 when it failed). */
  mirror: { version: string; status: number };
  /** Where they differ first: a JSON path, `byte N`, `header NAME`, or the copy's error. */
  where: string;
  /** Copy's latency minus the served one's, in ms. */
  latencyDeltaMs: number;
}

/** The mirror counts a data-plane worker ships to the primary since its last report. */
export interface MirrorDelta {
  counts: number[];
  samples: MirrorSample[];
  window: { sec: number; requests: number; errors: number; hist: [number, number][] }[];
  latencyDeltaSumMs: number;
}

/**
 * The counters of one service's mirror to one version; kept by the data plane beside
 * the snapshot (they survive every swap). The window counts each compared copy as a
 * request and each one that differed or failed as an error (what `maxMirrorDiffRate`
 * judges).
 */
export class MirrorStats {
  readonly counts = new Float64Array(MIRROR_RESULTS.length);
  readonly samples: MirrorSample[] = [];
  readonly window = new WindowCounters();
  inflight = 0;
  /** Sum of latency deltas over compared copies (avg = sum / compared). */
  latencyDeltaSumMs = 0;
  /** What a worker has not yet shipped (see takeDelta). */
  private sentCounts = new Float64Array(MIRROR_RESULTS.length);
  private sentLatency = 0;
  private unsent: MirrorSample[] = [];

  constructor(
    readonly service: string,
    readonly version: string,
  ) {}

  record(result: MirrorResult, sample: MirrorSample | undefined, latencyDeltaMs: number, mirrorSeconds: number): void {
    this.counts[RESULT_INDEX[result]]++;
    if (result === 'dropped') return;
    this.window.record(result === 'match' ? 200 : 500, mirrorSeconds);
    this.latencyDeltaSumMs += latencyDeltaMs;
    if (sample !== undefined) this.pushSample(sample);
  }

  private pushSample(s: MirrorSample): void {
    this.samples.push(s);
    if (this.samples.length > SAMPLE_RING) this.samples.shift();
    this.unsent.push(s);
    if (this.unsent.length > SAMPLE_RING) this.unsent.shift();
  }

  countsByResult(): Record<MirrorResult, number> {
    const out = {} as Record<MirrorResult, number>;
    for (const r of MIRROR_RESULTS) out[r] = this.counts[RESULT_INDEX[r]];
    return out;
  }

  /** Copies compared (or failed): every result but dropped. */
  get compared(): number {
    return this.counts[0] + this.counts[1] + this.counts[2] + this.counts[3];
  }

  /** A worker's counts since its last report (undefined: nothing new). */
  takeDelta(): MirrorDelta | undefined {
    const counts = Array.from(this.counts, (n, i) => n - this.sentCounts[i]);
    if (counts.every((n) => n === 0)) return undefined;
    this.sentCounts = Float64Array.from(this.counts);
    const d: MirrorDelta = { counts, samples: this.unsent, window: this.window.takeDelta(), latencyDeltaSumMs: this.latencyDeltaSumMs - this.sentLatency };
    this.sentLatency = this.latencyDeltaSumMs;
    this.unsent = [];
    return d;
  }

  /** The primary adds a worker's delta. */
  add(d: MirrorDelta): void {
    for (let i = 0; i < this.counts.length && i < d.counts.length; i++) this.counts[i] += d.counts[i];
    for (const w of d.window) this.window.add(w.sec, w.requests, w.errors, w.hist);
    this.latencyDeltaSumMs += d.latencyDeltaSumMs;
    for (const s of d.samples) {
      this.samples.push(s);
      if (this.samples.length > SAMPLE_RING) this.samples.shift();
    }
  }
}

/** A mirror as the snapshot prepares it: everything a request needs, hoisted. */
export interface MirrorPlan {
  readonly config: MirrorConfig;
  readonly to: VersionSnapshot;
  readonly methods: ReadonlySet<string>;
  /** percent / 100. */
  readonly share: number;
  readonly ignore: readonly (readonly PathSegment[])[];
  readonly stats: MirrorStats;
}

export function buildMirrorPlan(config: MirrorConfig, to: VersionSnapshot, stats: MirrorStats): MirrorPlan {
  return { config, to, methods: new Set(config.methods), share: config.percent / 100, ignore: config.ignore.map(parseJsonPath), stats };
}

// ---- JSON paths ----

/** A property name, an index, or `*` (any property or index). */
export type PathSegment = string | number | typeof ANY;
const ANY = Symbol('any');

/** Parses a path the schema admitted (JSON_PATH_RE). */
export function parseJsonPath(p: string): PathSegment[] {
  const out: PathSegment[] = [];
  const re = /\.([A-Za-z_$][A-Za-z0-9_$-]*)|\.\*|\[(\d+)\]|\[\*\]|\['([^'\\]*)'\]/gy;
  re.lastIndex = 1;
  for (let m = re.exec(p); m !== null; m = re.exec(p)) {
    if (m[1] !== undefined) out.push(m[1]);
    else if (m[2] !== undefined) out.push(Number(m[2]));
    else if (m[3] !== undefined) out.push(m[3]);
    else out.push(ANY);
  }
  return out;
}

/** Removes what `path` names from a parsed JSON value (in place). */
function dropPath(v: unknown, path: readonly PathSegment[], i = 0): void {
  if (v === null || typeof v !== 'object' || i >= path.length) return;
  const seg = path[i];
  const last = i === path.length - 1;
  if (Array.isArray(v)) {
    if (seg === ANY) {
      if (last) v.length = 0;
      else for (const x of v) dropPath(x, path, i + 1);
    } else if (typeof seg === 'number' && seg < v.length) {
      // An ignored element is replaced, not removed: the indexes after it keep meaning.
      if (last) v[seg] = null;
      else dropPath(v[seg], path, i + 1);
    }
    return;
  }
  const o = v as Record<string, unknown>;
  if (seg === ANY) {
    if (last) for (const k of Object.keys(o)) delete o[k];
    else for (const k of Object.keys(o)) dropPath(o[k], path, i + 1);
    return;
  }
  const k = String(seg);
  if (!Object.hasOwn(o, k)) return;
  if (last) delete o[k];
  else dropPath(o[k], path, i + 1);
}

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$-]*$/;
const childPath = (p: string, k: string): string => (IDENT.test(k) ? `${p}.${k}` : `${p}['${k.replace(/'/g, "\\'")}']`);

/** The first path (in sorted key order) where two JSON values differ, or undefined. */
export function firstJsonDiff(a: unknown, b: unknown, path = '$'): string | undefined {
  if (a === b) return undefined;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return path;
  if (Array.isArray(a) !== Array.isArray(b)) return path;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    const n = Math.min(a.length, bb.length);
    for (let i = 0; i < n; i++) {
      const d = firstJsonDiff(a[i], bb[i], `${path}[${i}]`);
      if (d !== undefined) return d;
    }
    return a.length === bb.length ? undefined : `${path}[${n}]`;
  }
  const ao = a as Record<string, unknown>;
  const bo = b as Record<string, unknown>;
  const keys = [...new Set([...Object.keys(ao), ...Object.keys(bo)])].sort();
  for (const k of keys) {
    if (!Object.hasOwn(ao, k) || !Object.hasOwn(bo, k)) return childPath(path, k);
    const d = firstJsonDiff(ao[k], bo[k], childPath(path, k));
    if (d !== undefined) return d;
  }
  return undefined;
}

// ---- one answer, as the comparison sees it ----

/** A response body kept for comparison: a prefix of at most `limit` bytes and a digest
 * of all of it. */
export class BodyTee {
  private readonly parts: Buffer[] = [];
  private kept = 0;
  total = 0;
  private readonly hash: Hash = createHash('sha256');

  constructor(private readonly limit: number) {}

  push(chunk: Buffer): void {
    this.total += chunk.length;
    this.hash.update(chunk);
    if (this.kept < this.limit) {
      const room = this.limit - this.kept;
      const part = chunk.length <= room ? chunk : chunk.subarray(0, room);
      // A copy: undici may reuse the chunk's memory after onData returns.
      this.parts.push(Buffer.from(part));
      this.kept += part.length;
    }
  }

  get truncated(): boolean {
    return this.total > this.limit;
  }

  finish(): { prefix: Buffer; digest: string; total: number; truncated: boolean } {
    return { prefix: Buffer.concat(this.parts), digest: this.hash.digest('hex'), total: this.total, truncated: this.truncated };
  }
}

export interface Answer {
  status: number;
  /** A gRPC answer's grpc-status (trailers, or the head of a trailers-only answer). */
  grpcStatus?: string;
  /** The compared headers' values (lower-case names), joined with ", " when repeated. */
  headers: Map<string, string>;
  body: { prefix: Buffer; digest: string; total: number; truncated: boolean } | undefined;
  contentType: string;
  ms: number;
}

/** The grpc-status in a raw header or trailer list (Buffers or strings), if any. */
export function grpcStatusIn(raw: readonly (Buffer | string)[] | null | undefined): string | undefined {
  if (raw == null) return undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) if (String(raw[i]).toLowerCase() === 'grpc-status') return String(raw[i + 1]).trim();
  return undefined;
}

/** The compared headers of a raw header list, its content type and (a trailers-only
 * gRPC answer) its grpc-status. */
export function pickHeaders(raw: readonly Buffer[], names: readonly string[]): { headers: Map<string, string>; contentType: string; grpcStatus: string | undefined } {
  const headers = new Map<string, string>();
  let contentType = '';
  let grpcStatus: string | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const k = raw[i].toString('latin1').toLowerCase();
    if (k === 'content-type') contentType = raw[i + 1].toString('latin1');
    else if (k === 'grpc-status') grpcStatus = raw[i + 1].toString('latin1').trim();
    if (!names.includes(k)) continue;
    const v = raw[i + 1].toString('latin1');
    const prev = headers.get(k);
    headers.set(k, prev === undefined ? v : `${prev}, ${v}`);
  }
  return { headers, contentType, grpcStatus };
}

function parseJson(buf: Buffer): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(buf.toString('utf8')) };
  } catch {
    return { ok: false };
  }
}

const looksJson = (ct: string, b: Buffer): boolean => /[/+]json\b/i.test(ct) || (b.length > 0 && (b[0] === 0x7b || b[0] === 0x5b));

/** Compares the served answer with the copy's: the result and where they differ first. */
export function compareAnswers(plan: Pick<MirrorPlan, 'config' | 'ignore'>, served: Answer, copy: Answer): { result: MirrorResult; where: string } {
  if (served.status !== copy.status) return { result: 'status_diff', where: 'status' };
  // gRPC answers are all HTTP 200: their outcome is grpc-status.
  if (served.grpcStatus !== copy.grpcStatus) return { result: 'status_diff', where: `grpc-status ${served.grpcStatus ?? '(none)'} vs ${copy.grpcStatus ?? '(none)'}` };
  if (!plan.config.compare) return { result: 'match', where: '' };
  for (const h of plan.config.headers) {
    if (served.headers.get(h) !== copy.headers.get(h)) return { result: 'body_diff', where: `header ${h}` };
  }
  const a = served.body;
  const b = copy.body;
  if (a === undefined || b === undefined) return { result: 'match', where: '' };
  if (a.digest === b.digest && plan.ignore.length === 0) return { result: 'match', where: '' };
  // JSON bodies received whole: compared as values, ignored paths left out.
  if (!a.truncated && !b.truncated && looksJson(served.contentType, a.prefix) && looksJson(copy.contentType, b.prefix)) {
    const ja = parseJson(a.prefix);
    const jb = parseJson(b.prefix);
    if (ja.ok && jb.ok) {
      for (const p of plan.ignore) {
        dropPath(ja.value, p);
        dropPath(jb.value, p);
      }
      const d = firstJsonDiff(ja.value, jb.value);
      return d === undefined ? { result: 'match', where: '' } : { result: 'body_diff', where: d };
    }
  }
  if (a.digest === b.digest) return { result: 'match', where: '' };
  const n = Math.min(a.prefix.length, b.prefix.length);
  let i = 0;
  while (i < n && a.prefix[i] === b.prefix[i]) i++;
  return { result: 'body_diff', where: `byte ${i}` };
}

// ---- one copy ----

const MIRROR_HEADER = 'x-switchyard-mirror';

/**
 * The copy of one served request. The Exchange feeds it the served side (request body
 * chunks, response head, body, end); it sends the copy once the request body is whole,
 * and compares once both answers are in. Every path ends in exactly one `end()`.
 */
export class MirrorCopy implements Dispatcher.DispatchHandler {
  private reqParts: Buffer[] | undefined;
  private reqBytes = 0;
  private bodyDone: boolean;
  private sent = false;
  private ended = false;
  private abortFn: ((err?: Error) => void) | null = null;
  private timer: NodeJS.Timeout | undefined;
  private copyStart = 0;
  private served: Answer | undefined;
  private copy: Answer | undefined;
  private copyError: string | undefined;
  private servedStatus = 0;
  private servedHeaders: ReturnType<typeof pickHeaders> | undefined;
  private servedBody: BodyTee | undefined;
  private copyStatus = 0;
  private copyHeaders: ReturnType<typeof pickHeaders> | undefined;
  private copyBody: BodyTee | undefined;
  private readonly servedStart = performance.now();

  private constructor(
    private readonly plan: MirrorPlan,
    private readonly method: string,
    private readonly url: string,
    private readonly headers: string[],
    private readonly servedVersion: string,
    hasBody: boolean,
  ) {
    this.bodyDone = !hasBody;
    if (hasBody) this.reqParts = [];
    plan.stats.inflight++;
  }

  /**
   * Whether to copy this request, and the copy when so. Counts it as dropped when the
   * mirror is at its in-flight bound or its declared body is over maxBodyBytes.
   */
  static start(plan: MirrorPlan, method: string, url: string, upstreamHeaders: readonly string[], servedVersion: VersionSnapshot, hasBody: boolean, contentLength: number): MirrorCopy | undefined {
    if (servedVersion === plan.to || !plan.methods.has(method)) return undefined;
    if (plan.share < 1 && Math.random() >= plan.share) return undefined;
    const stats = plan.stats;
    if (stats.inflight >= plan.config.maxInflight || contentLength > plan.config.maxBodyBytes) {
      stats.record('dropped', undefined, 0, 0);
      return undefined;
    }
    const headers = [...upstreamHeaders, MIRROR_HEADER, '1'];
    return new MirrorCopy(plan, method, url, headers, servedVersion.name, hasBody);
  }

  get wantsRequestBody(): boolean {
    return this.reqParts !== undefined && !this.ended;
  }

  // ---- the served side (called by the Exchange) ----

  requestChunk(chunk: Buffer): void {
    if (this.reqParts === undefined || this.ended) return;
    this.reqBytes += chunk.length;
    if (this.reqBytes > this.plan.config.maxBodyBytes) {
      this.reqParts = undefined;
      this.end('dropped');
      return;
    }
    this.reqParts.push(Buffer.from(chunk));
  }

  requestEnded(): void {
    if (this.ended || this.bodyDone) return;
    this.bodyDone = true;
    this.send();
  }

  servedResponse(status: number, rawHeaders: readonly Buffer[]): void {
    if (this.ended) return;
    this.servedStatus = status;
    this.servedHeaders = pickHeaders(rawHeaders, this.plan.config.headers);
    if (this.plan.config.compare) this.servedBody = new BodyTee(this.plan.config.maxBodyBytes);
  }

  servedData(chunk: Buffer): void {
    this.servedBody?.push(chunk);
  }

  servedComplete(trailers?: readonly (Buffer | string)[] | null): void {
    if (this.ended || this.servedHeaders === undefined) return;
    // The served upstream answered without reading the whole request body: the copy
    // would not be the same request.
    if (!this.bodyDone) {
      this.end('dropped');
      return;
    }
    const h = this.servedHeaders;
    this.served = { status: this.servedStatus, ...h, grpcStatus: grpcStatusIn(trailers) ?? h.grpcStatus, body: this.servedBody?.finish(), ms: performance.now() - this.servedStart };
    this.maybeCompare();
  }

  /** The served request failed or was cut: nothing to compare with. Not counted. */
  servedFailed(): void {
    if (this.ended || this.served !== undefined) return;
    this.end(undefined);
  }

  /** Sends the copy when the request body (if any) is whole. */
  send(): void {
    if (this.sent || this.ended || !this.bodyDone) return;
    this.sent = true;
    const e = pickEndpoint(this.plan.to) ?? this.plan.to.endpoints.find((x) => x.available);
    if (e === undefined) {
      this.copyError = `version ${this.plan.to.name} has no available endpoint`;
      this.maybeCompare();
      return;
    }
    this.copyStart = performance.now();
    const ms = this.plan.config.timeoutMs;
    this.timer = setTimeout(onCopyTimeout, ms, this);
    const body = this.reqParts === undefined ? null : Buffer.concat(this.reqParts);
    this.reqParts = undefined;
    const headers = this.plan.to.hostHeader === undefined ? this.headers : withHostHeader(this.headers, this.plan.to.hostHeader);
    try {
      e.mirrorDispatcher.dispatch({ path: this.url, method: this.method, headers, body, headersTimeout: ms, bodyTimeout: ms, idempotent: false, blocking: false }, this);
    } catch (err) {
      this.onError(err as Error);
    }
  }

  timedOut(): void {
    this.timer = undefined;
    const err = new GatewayError('UPSTREAM_TIMEOUT', `the copy took longer than ${this.plan.config.timeoutMs} ms`, { reason: 'timeout' });
    this.expired = true;
    if (this.abortFn !== null) this.abortFn(err);
    // Not even connected yet: the copy is over now (onConnect aborts it when it comes).
    else this.onError(err);
  }

  /** The copy's deadline passed. */
  private expired = false;

  // ---- undici handler of the copy ----

  onConnect(abort: (err?: Error) => void): void {
    this.abortFn = abort;
    if (this.ended || this.expired) abort(new GatewayError('CLIENT_CLOSED', 'the copy is over'));
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    void resume;
    if (statusCode < 200) return true;
    this.copyStatus = statusCode;
    this.copyHeaders = pickHeaders(rawHeaders, this.plan.config.headers);
    if (this.plan.config.compare) this.copyBody = new BodyTee(this.plan.config.maxBodyBytes);
    return true;
  }

  onData(chunk: Buffer): boolean {
    this.copyBody?.push(chunk);
    return true;
  }

  onComplete(trailers?: readonly (Buffer | string)[] | null): void {
    this.clearTimer();
    this.abortFn = null;
    if (this.expired) return;
    if (this.copyHeaders === undefined) {
      this.copyError = 'the copy got no response';
    } else {
      this.copy = { status: this.copyStatus, ...this.copyHeaders, grpcStatus: grpcStatusIn(trailers) ?? this.copyHeaders.grpcStatus, body: this.copyBody?.finish(), ms: performance.now() - this.copyStart };
    }
    this.maybeCompare();
  }

  onError(err: Error): void {
    this.clearTimer();
    this.abortFn = null;
    if (this.ended || this.copyError !== undefined) return;
    const code = (err as { code?: string }).code;
    this.copyError = code === undefined ? err.message : `${code}: ${err.message}`;
    this.maybeCompare();
  }

  // ---- the end ----

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private maybeCompare(): void {
    if (this.ended || this.served === undefined) return;
    const s = this.served;
    const now = performance.now();
    if (this.copyError !== undefined) {
      const copyMs = this.copyStart === 0 ? 0 : now - this.copyStart;
      this.end('error', this.copyError, 0, copyMs - s.ms, copyMs);
      return;
    }
    const c = this.copy;
    if (c === undefined) return;
    const { result, where } = compareAnswers(this.plan, s, c);
    this.end(result, where, c.status, c.ms - s.ms, c.ms);
  }

  private end(result: MirrorResult | undefined, where = '', copyStatus = 0, deltaMs = 0, copyMs = 0): void {
    if (this.ended) return;
    this.ended = true;
    this.clearTimer();
    this.reqParts = undefined;
    const stats = this.plan.stats;
    stats.inflight--;
    if (this.sent && this.served === undefined) this.abortFn?.(new GatewayError('CLIENT_CLOSED', 'the served request ended without an answer'));
    if (result === undefined) return;
    const q = this.url.indexOf('?');
    const sample: MirrorSample | undefined =
      result === 'match' || result === 'dropped'
        ? undefined
        : {
            at: new Date().toISOString(),
            method: this.method,
            path: q === -1 ? this.url : this.url.slice(0, q),
            result,
            served: { version: this.servedVersion, status: this.served?.status ?? 0 },
            mirror: { version: this.plan.to.name, status: copyStatus },
            where,
            latencyDeltaMs: Math.round(deltaMs * 1000) / 1000,
          };
    stats.record(result, sample, result === 'dropped' ? 0 : deltaMs, copyMs / 1000);
  }
}

function onCopyTimeout(c: MirrorCopy): void {
  c.timedOut();
}

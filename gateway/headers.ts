// Header rewriting in both directions. Works on raw header arrays (name, value, name,
// value …) so that case, order and duplicates (Set-Cookie) survive the trip.

import type { ClientRequest } from './io.js';

// RFC 9110 §7.6.1 hop-by-hop headers, plus those that are the proxy's own business on
// each connection. `expect` is answered by the gateway itself (100-continue).
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  // Its response-side pair (RFC 2616 §13.5.1): a challenge for the next proxy on the
  // chain, not for the gateway's clients.
  'proxy-authenticate',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'expect',
  'http2-settings',
]);

// Headers the gateway sets itself on the way upstream; a client's are never passed as
// sent. x-forwarded-for keeps the client's chain with the gateway's entry appended (only
// the last entry is the gateway's word); the others are replaced.
const REPLACED_UPSTREAM = new Set(['x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'x-request-id', 'x-forwarded-for', 'x-real-ip']);

// Client headers that would speak for the gateway about the client, the scheme or the
// path, and that the gateway does not set: dropped. (A framework that prefers
// `Forwarded` falls back to the x-forwarded-* set the gateway writes.) A client's
// x-switchyard-mirror too: only the gateway's mirror copies carry it, so an upstream can
// trust it (skip side effects of a copy).
const DROPPED_UPSTREAM = new Set(['forwarded', 'x-forwarded-prefix', 'x-switchyard-mirror']);

// Names a Connection header may never remove: the gateway owns them (or the message's
// framing depends on them). A token naming one is ignored.
const NOT_NAMEABLE = new Set(['host', 'content-length', 'transfer-encoding', 'forwarded', 'x-real-ip', 'x-forwarded-prefix', ...REPLACED_UPSTREAM]);

/** Extra names listed in a Connection header (other than keep-alive/close/upgrade and
 * the names the gateway owns). */
export function connectionTokens(value: string | string[] | undefined): Set<string> | undefined {
  if (value === undefined) return undefined;
  let out: Set<string> | undefined;
  for (const part of String(value).split(',')) {
    const t = part.trim().toLowerCase();
    if (t === '' || t === 'keep-alive' || t === 'close' || t === 'upgrade' || NOT_NAMEABLE.has(t)) continue;
    (out ??= new Set()).add(t);
  }
  return out;
}

export function clientAddress(req: ClientRequest): string {
  const a = req.socket.remoteAddress ?? '';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}

// A Host (or :authority): a DNS name (letters, digits, "-", "_", "."), an IPv4 address
// or a bracketed IPv6 address, and an optional port. No userinfo, path, query, space or
// percent-encoding: such a value is a cache- or link-poisoning attempt, never a name.
const HOST_RE = /^(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$/;

export function validHost(v: string): boolean {
  return v.length <= 255 && HOST_RE.test(v);
}

/** Why a request head is refused before it is routed, or undefined when it is fine. */
export interface HeadProblem {
  code: 'BAD_REQUEST' | 'HEADERS_TOO_LARGE';
  message: string;
}

/**
 * The checks every request head passes before routing, upgrades included (one pass
 * over the raw headers): at most `maxHeaderCount` header fields (HTTP/2 pseudo-headers
 * not counted); exactly one Host, a valid one (HTTP/1.0 may have none); in HTTP/2 a valid
 * :authority, and a Host, when sent too, that names the same authority. On success the
 * routing host is in req.headers.host.
 */
export function checkRequestHead(req: ClientRequest, maxHeaderCount: number): HeadProblem | undefined {
  const raw = req.rawHeaders;
  const h2 = req.httpVersionMajor === 2;
  let fields = 0;
  let hosts = 0;
  let lengths = 0;
  let host: string | undefined;
  let authority: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (h2 && name.charCodeAt(0) === 58 /* : */) {
      if (name === ':authority') authority = raw[i + 1];
      continue;
    }
    fields++;
    if (name.length === 4 && name.toLowerCase() === 'host') {
      hosts++;
      host = raw[i + 1];
    } else if (name.length === 14 && name.toLowerCase() === 'content-length') lengths++;
  }
  if (fields > maxHeaderCount) return { code: 'HEADERS_TOO_LARGE', message: `more than ${maxHeaderCount} header fields` };
  if (hosts > 1) return { code: 'BAD_REQUEST', message: 'more than one Host header' };
  if (lengths > 1) return { code: 'BAD_REQUEST', message: 'more than one Content-Length header' };
  if (h2) {
    if (authority !== undefined) {
      if (!validHost(authority)) return { code: 'BAD_REQUEST', message: 'invalid :authority' };
      if (host !== undefined && host.toLowerCase() !== authority.toLowerCase()) return { code: 'BAD_REQUEST', message: 'Host and :authority disagree' };
      req.headers.host = authority;
      return undefined;
    }
    if (host === undefined) return { code: 'BAD_REQUEST', message: 'an HTTP/2 request must carry :authority' };
  } else if (host === undefined) {
    // Only HTTP/1.0 may come without a Host (HTTP/0.9, which llhttp accepts, has none).
    if (req.httpVersionMajor === 1 && req.httpVersionMinor === 0) return undefined;
    return { code: 'BAD_REQUEST', message: req.httpVersionMajor === 0 ? 'HTTP/0.9 is not supported' : 'an HTTP/1.1 request must carry a Host header' };
  }
  if (!validHost(host)) return { code: 'BAD_REQUEST', message: 'invalid Host header' };
  return undefined;
}

/**
 * Headers for the upstream request: hop-by-hop ones and those named in Connection
 * removed; x-forwarded-for appended to; x-forwarded-proto/-host/-port, x-real-ip and
 * x-request-id set; Forwarded and x-forwarded-prefix dropped.
 * @param upgrade a tunnel handshake: keep Upgrade, and send `Connection: upgrade`
 */
export function upstreamRequestHeaders(req: ClientRequest, requestId: string, proto: string, upgrade = false): string[] {
  if (req.httpVersionMajor === 2) return upstreamRequestHeadersH2(req, requestId, proto);
  const raw = req.rawHeaders;
  const out: string[] = [];
  const named = connectionTokens(req.headers.connection);
  let xff: string | undefined;
  let host: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower)) {
      if (upgrade && lower === 'upgrade') out.push(name, raw[i + 1]);
      continue;
    }
    if (named !== undefined && named.has(lower)) continue;
    if (REPLACED_UPSTREAM.has(lower)) {
      if (lower === 'x-forwarded-for') xff = xff === undefined ? raw[i + 1] : `${xff}, ${raw[i + 1]}`;
      continue;
    }
    if (DROPPED_UPSTREAM.has(lower)) continue;
    if (lower === 'host') host = raw[i + 1];
    out.push(name, raw[i + 1]);
  }
  if (upgrade) out.push('connection', 'upgrade');
  return appendForwarded(out, req, xff, host, proto, requestId);
}

/** The headers the gateway adds for the upstream: x-forwarded-*, x-real-ip and x-request-id. */
function appendForwarded(out: string[], req: ClientRequest, xff: string | undefined, host: string | undefined, proto: string, requestId: string): string[] {
  const client = clientAddress(req);
  out.push('x-forwarded-for', xff === undefined ? client : `${xff}, ${client}`);
  out.push('x-forwarded-proto', proto);
  if (host !== undefined) out.push('x-forwarded-host', host);
  const port = req.socket.localPort;
  if (port !== undefined) out.push('x-forwarded-port', String(port));
  out.push('x-real-ip', client);
  out.push('x-request-id', requestId);
  return out;
}

/**
 * The HTTP/1.1 request headers for an HTTP/2 request: pseudo-headers dropped, Host from
 * :authority (checkRequestHead made them agree), cookie crumbs joined into one Cookie
 * (RFC 9113 §8.2.3), hop-by-hop headers (HTTP/2 forbids them anyway) removed.
 */
function upstreamRequestHeadersH2(req: ClientRequest, requestId: string, proto: string): string[] {
  const raw = req.rawHeaders;
  const out: string[] = [];
  let xff: string | undefined;
  let host: string | undefined;
  let authority: string | undefined;
  let cookie: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    const value = raw[i + 1];
    const lower = name.toLowerCase();
    if (lower.charCodeAt(0) === 58 /* : */) {
      if (lower === ':authority') authority = value;
      continue;
    }
    if (HOP_BY_HOP.has(lower) || DROPPED_UPSTREAM.has(lower)) continue;
    if (REPLACED_UPSTREAM.has(lower)) {
      if (lower === 'x-forwarded-for') xff = xff === undefined ? value : `${xff}, ${value}`;
      continue;
    }
    if (lower === 'cookie') {
      cookie = cookie === undefined ? value : `${cookie}; ${value}`;
      continue;
    }
    if (lower === 'host') host = value;
    out.push(name, value);
  }
  if (host === undefined && authority !== undefined) {
    host = authority;
    out.push('host', authority);
  }
  if (cookie !== undefined) out.push('cookie', cookie);
  return appendForwarded(out, req, xff, host, proto, requestId);
}

/**
 * The same upstream headers with Host replaced by `host` (versions.V.hostHeader), or
 * added when the client sent none; x-forwarded-host keeps the client's. A new array.
 */
export function withHostHeader(headers: readonly string[], host: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i].length === 4 && headers[i].toLowerCase() === 'host') continue;
    out.push(headers[i], headers[i + 1]);
  }
  out.push('host', host);
  return out;
}

/** A response header name as undici hands it over (bytes), with its string forms. */
interface HeaderName {
  readonly bytes: Uint8Array;
  readonly name: string;
  readonly lower: string;
  /** Hop-by-hop, or x-request-id (the gateway sets its own): never forwarded. */
  readonly drop: boolean;
}

// Response header names by length. An upstream sends the same dozen names on every
// response: matching the bytes against these in JS spares a native string conversion
// and a toLowerCase per header. Bounded, so odd names from an upstream cannot grow it.
const namesByLength = new Map<number, HeaderName[]>();
let namesCached = 0;
const NAMES_MAX = 512;
const NAMES_PER_LENGTH_MAX = 16;

function headerName(b: Buffer): HeaderName {
  const n = b.length;
  const list = namesByLength.get(n);
  if (list !== undefined) {
    next: for (let k = 0; k < list.length; k++) {
      const e = list[k].bytes;
      for (let i = 0; i < n; i++) if (e[i] !== b[i]) continue next;
      return list[k];
    }
  }
  const name = b.toString('latin1');
  const lower = name.toLowerCase();
  const entry: HeaderName = { bytes: Uint8Array.from(b), name, lower, drop: HOP_BY_HOP.has(lower) || lower === 'x-request-id' };
  if (namesCached < NAMES_MAX && (list === undefined || list.length < NAMES_PER_LENGTH_MAX)) {
    if (list === undefined) namesByLength.set(n, [entry]);
    else list.push(entry);
    namesCached++;
  }
  return entry;
}

/**
 * Response headers for the client from undici's raw Buffer pairs: hop-by-hop ones and
 * those named in Connection removed; x-request-id set to the gateway's.
 */
export function clientResponseHeaders(raw: Buffer[], requestId: string, setCookie: string | undefined): string[] {
  const out: string[] = [];
  let connection: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const h = headerName(raw[i]);
    if (h.drop) {
      if (h.lower === 'connection') {
        const v = raw[i + 1].toString('latin1');
        connection = connection === undefined ? v : `${connection}, ${v}`;
      }
      continue;
    }
    out.push(h.name, raw[i + 1].toString('latin1'));
  }
  // Rare: Connection names more headers to drop (RFC 9110 §7.6.1).
  const named = connectionTokens(connection);
  if (named !== undefined) {
    for (let i = out.length - 2; i >= 0; i -= 2) if (named.has(out[i].toLowerCase())) out.splice(i, 2);
  }
  out.push('x-request-id', requestId);
  if (setCookie !== undefined) out.push('set-cookie', setCookie);
  return out;
}

const REQUEST_ID_RE = /^[A-Za-z0-9._:/+=-]{1,128}$/;

/** Keeps a client's x-request-id only when it is short and plain: it goes into logs. */
export function acceptableRequestId(v: string | string[] | undefined): string | undefined {
  return typeof v === 'string' && REQUEST_ID_RE.test(v) ? v : undefined;
}

// A strict, incremental HTTP/1.1 request parser (RFC 9112) for the client side of the
// gateway: bytes in through push(), events out through next(), no sockets.
//
// Shape. The reader keeps one Buffer and an offset into it. Bytes of the head are
// scanned by a resumable state machine with one table lookup per byte; a line's strings
// are made once the line is complete (sliced from one latin1 decoding of the head), and
// the line is then consumed, so a push that splits a line copies only that line's bytes.
// Body bytes are handed out as views into the pushed Buffers, never copied. Every refusal
// is a RequestError, and the reader is dead after the first one. Refusals do not depend
// on how the bytes were split: whatever can be judged before a line ends (a method no
// known method starts with, a version of the wrong shape, Content-Length together with
// Transfer-Encoding) is refused as soon as it arrives, as llhttp does.
//
// Connection states, all as llhttp has them: CR and LF before a request line are skipped
// (and not counted against the limits); after a request that does not keep the
// connection alive only CR and LF may follow; after an upgrade request (CONNECT, or
// Connection: upgrade with an Upgrade header) has ended, next() returns undefined for
// good and the caller takes the following bytes with rest(). An upgrade request with a
// body has that body parsed first, like llhttp does; node:http would skip it.
//
// Agreement with llhttp. Everything accepted here is accepted by Node's llhttp with its
// lenient flags off, with the same method, target, version, header pairs and body
// framing; everything llhttp refuses is refused here. test/h1-differential.test.ts checks
// that property on generated and mutated streams. Where this parser is stricter than
// llhttp it is on purpose, for the reasons below, and the differential test names each
// case:
//   - Methods: only the methods Node knows (http.METHODS) are accepted, like llhttp, but
//     PRI (the HTTP/2 preface) and the RTSP methods are refused: the client side speaks
//     HTTP/1.x only. An unknown but well-formed method is a 501, as RFC 9110 §9.1 says.
//   - The request line takes exactly one SP between its parts.
//   - Versions: only HTTP/1.0 and HTTP/1.1. llhttp also takes 0.9 and 2.0 syntax; this
//     gateway cannot speak them, so they get 505 (RFC 9110 §15.6.6).
//   - Targets must be one of the four forms of RFC 9112 §3.2: origin-form ("/…"),
//     absolute-form ("scheme://authority[/…|?…]"), authority-form (only and always for
//     CONNECT) or "*". llhttp's URL parser is looser (e.g. "CONNECT /x" or an empty host).
//     The gateway refuses non-origin targets itself later; accepting their syntax here keeps
//     that decision in one place.
//   - Lengths: Content-Length and chunk sizes above 2^53 − 1 are refused (llhttp stops at
//     2^64 − 1); nothing larger can be counted exactly in a JavaScript number.
//   - Transfer-Encoding: the codings must form a well-formed token list, "chunked" must
//     appear exactly once and last (llhttp takes "chunked, chunked"), and an HTTP/1.0
//     request with Transfer-Encoding is refused (RFC 9112 §6.1 calls its framing faulty).
//   - CONNECT with a body (Content-Length above 0 or Transfer-Encoding) is refused: llhttp
//     ignores such a body and tunnels its bytes, a classic smuggling shape.
//   - Chunk extensions must follow RFC 9112 §7.1.1 exactly: `;name`, `;name=token` or
//     `;name="quoted"`, no whitespace (llhttp also takes an empty value, `;name=`).
//     Extensions are dropped, never forwarded, but a loose grammar here is where two
//     parsers in a chain start to disagree about where a chunk begins.
//   - Content-Length may not be followed by HTAB (llhttp 9.3, in Node 20, refuses it; 9.4,
//     in Node 24, takes it): the reader must hold on both runtimes.
//   - Trailers may not carry Content-Length, Transfer-Encoding, Connection or
//     Proxy-Connection (RFC 9110 §6.5.1; llhttp applies a trailer's Connection: close).
//   - Limits: the head counts every byte of the request line and the header lines up to
//     and including the empty line, where Node counts only the target, names and values;
//     the trailer section has the same byte and count limits as the head. A head with more
//     than maxHeaderCount fields is refused with 431 where Node drops the extra fields.

import {
  AUTHORITY_BYTE,
  ALPHA,
  COLON,
  CR,
  DQUOTE,
  BACKSLASH,
  EQUALS,
  FIELD_BYTE,
  HEX_VALUE,
  LF,
  MAX_LENGTH,
  OWS,
  QDTEXT,
  QUOTED_PAIR_BYTE,
  SEMI,
  SP,
  TARGET_BYTE,
  TCHAR,
  COMMA,
  equalsLower,
  lowerBytes,
  latin1,
  parseDecimalLength,
} from './syntax.js';

export interface RequestLimits {
  /** Bytes of the request line plus header lines, final CRLF included (and likewise for trailers). */
  maxHeaderSize: number;
  /** Header fields in the head (and trailer fields in the trailer section). */
  maxHeaderCount: number;
}

/**
 * A malformed or over-limit request. `status` is the response the gateway owes the
 * client; `code` is stable per status; `reason` names the exact refusal for logs and
 * tests.
 */
export class RequestError extends Error {
  /** 'HEADERS_TOO_LARGE' for 431, 'BAD_REQUEST' for every other status. */
  readonly code: 'HEADERS_TOO_LARGE' | 'BAD_REQUEST';
  /** The specific refusal, e.g. 'INVALID_METHOD', 'DUPLICATE_CONTENT_LENGTH'. */
  readonly reason: string;

  constructor(
    readonly status: 400 | 413 | 431 | 501 | 505,
    message: string,
    reason?: string,
  ) {
    super(message);
    this.name = 'RequestError';
    this.code = status === 431 ? 'HEADERS_TOO_LARGE' : 'BAD_REQUEST';
    this.reason = reason ?? this.code;
  }
}

// Node's http.METHODS (the same list on Node 20 and 24), which are exactly the methods
// llhttp accepts in HTTP mode. Kept as a literal so the parser does not depend on the
// runtime's list changing under it.
const METHODS = new Set([
  'ACL', 'BIND', 'CHECKOUT', 'CONNECT', 'COPY', 'DELETE', 'GET', 'HEAD', 'LINK', 'LOCK',
  'M-SEARCH', 'MERGE', 'MKACTIVITY', 'MKCALENDAR', 'MKCOL', 'MOVE', 'NOTIFY', 'OPTIONS',
  'PATCH', 'POST', 'PROPFIND', 'PROPPATCH', 'PURGE', 'PUT', 'QUERY', 'REBIND', 'REPORT',
  'SEARCH', 'SOURCE', 'SUBSCRIBE', 'TRACE', 'UNBIND', 'UNLINK', 'UNLOCK', 'UNSUBSCRIBE',
]);

/** Every prefix of a known method (itself included), to refuse an unknown one before its end. */
const METHOD_PREFIXES = new Set<string>();
for (const m of METHODS) for (let n = 0; n <= m.length; n++) METHOD_PREFIXES.add(m.slice(0, n));

/** "HTTP/x.y" as bytes; positions 5 and 7 (the digits) are checked separately. */
const VERSION_SHAPE = Buffer.from('HTTP/x.y', 'latin1');

const CONTENT_LENGTH = lowerBytes('content-length');
const TRANSFER_ENCODING = lowerBytes('transfer-encoding');
const CONNECTION = lowerBytes('connection');
const PROXY_CONNECTION = lowerBytes('proxy-connection');
const UPGRADE = lowerBytes('upgrade');
const EXPECT = lowerBytes('expect');
const CHUNKED = lowerBytes('chunked');
const CLOSE = lowerBytes('close');
const KEEP_ALIVE = lowerBytes('keep-alive');
const CONTINUE = lowerBytes('100-continue');

// Headers node:http keeps only the first of (IncomingMessage's matchKnownFields), and
// the one it joins with '; ' instead of ', '.
const DISCARD_DUPLICATES = new Set([
  'age', 'authorization', 'content-length', 'content-type', 'etag', 'expires', 'from', 'host',
  'if-modified-since', 'if-unmodified-since', 'last-modified', 'location', 'max-forwards',
  'proxy-authorization', 'referer', 'retry-after', 'server', 'user-agent',
]);

/** The parsed head of one request. Built by RequestReader; read-only for everyone else. */
export class RequestHead {
  #headers: Record<string, string | string[]> | undefined = undefined;

  constructor(
    readonly method: string,
    readonly target: string,
    readonly minor: 0 | 1,
    readonly rawHeaders: string[],
    readonly contentLength: number,
    readonly chunked: boolean,
    readonly keepAlive: boolean,
    readonly upgrade: boolean,
    readonly expectContinue: boolean,
  ) {}

  /**
   * The headers shaped exactly like node:http IncomingMessage.headers: lowercased names,
   * set-cookie as an array, the discard-duplicates set keeping its first value, cookie
   * joined with '; ' and everything else with ', '. Built on first use, then cached.
   */
  get headers(): Record<string, string | string[]> {
    if (this.#headers !== undefined) return this.#headers;
    // A plain object like Node's, so that code reading either sees the same thing.
    const out: Record<string, string | string[]> = {};
    const raw = this.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i].toLowerCase();
      const value = raw[i + 1];
      const prev = out[name];
      if (name === 'set-cookie') {
        if (prev === undefined) out[name] = [value];
        else (prev as string[]).push(value);
      } else if (DISCARD_DUPLICATES.has(name)) {
        if (prev === undefined) out[name] = value;
      } else if (typeof prev === 'string') {
        out[name] = prev + (name === 'cookie' ? '; ' : ', ') + value;
      } else {
        out[name] = value;
      }
    }
    this.#headers = out;
    return out;
  }
}

export type RequestEvent =
  | { type: 'head'; head: RequestHead }
  | { type: 'body'; chunk: Buffer }
  /** trailers: flat raw pairs for a chunked body ([] when there were none), undefined otherwise. */
  | { type: 'end'; trailers: string[] | undefined };

// Reader states. Head and trailer lines share the field states; `inTrailers` says where
// a finished field goes.
const enum S {
  Start, // before a request: CR and LF are skipped, as llhttp does
  Method,
  Target,
  Version,
  RequestLineLF,
  LineStart, // start of a field line or of the empty line that ends the section
  Name,
  Value,
  FieldLF,
  EndLF,
  Length, // Content-Length body (or none: remaining 0)
  SizeStart, // chunked: first hex digit of a chunk size
  Size,
  ExtStart,
  ExtName,
  ExtValueStart,
  ExtToken,
  ExtQuoted,
  ExtQuotedPair,
  ExtAfterQuoted,
  SizeLF,
  Data,
  DataCR,
  DataLF,
  Closed, // after a request that does not keep the connection alive
  Upgraded, // after an upgrade request: the rest is another protocol
}

const EMPTY = Buffer.alloc(0);

function bad(reason: string, message: string): RequestError {
  return new RequestError(400, message, reason);
}

/** Parses a stream of HTTP/1.x requests. See the file header for what it refuses. */
export class RequestReader {
  private buf: Buffer = EMPTY;
  /** Bytes before pos are consumed; during a head or trailer line, pos is the line's start. */
  private pos = 0;
  /** Where scanning resumes (pos <= scan <= buf.length). */
  private scan = 0;
  private state = S.Start;
  private dead: RequestError | undefined = undefined;
  private inRequest = false;

  // Marks inside the current line (absolute offsets into buf, shifted when buf is rebuilt).
  private m1 = 0;
  private m2 = 0;

  /** Bytes of the current section (head or trailers) in lines already consumed. */
  private sectionBytes = 0;
  private fieldCount = 0;

  // The head being built.
  private method = '';
  private target = '';
  private minor: 0 | 1 = 1;
  private raw: string[] = [];
  private contentLength = -1;
  private sawTE = false;
  private chunkedCount = 0;
  private lastChunked = false;
  private connClose = false;
  private connKeepAlive = false;
  private connUpgrade = false;
  private sawUpgrade = false;
  private expect = false;
  private inTrailers = false;
  private trailers: string[] | undefined = undefined;
  private keepAlive = true;
  private upgrade = false;

  // A latin1 decoding of buf[strBase, strEnd), from which the head's strings are sliced:
  // one native call per head instead of one per name and value (see text()).
  private str = '';
  private strBase = 0;
  private strEnd = -1;

  /** Body bytes still to come (Content-Length body or current chunk). */
  private remaining = 0;

  constructor(private readonly limits: RequestLimits) {}

  /**
   * Appends received bytes. The Buffer is kept, not copied, when everything before it
   * was consumed; otherwise the unconsumed tail (at most one partial line of a head, or
   * unread body bytes) is copied together with it. After a refusal the bytes are dropped.
   */
  push(chunk: Buffer): void {
    if (this.dead !== undefined || chunk.length === 0) return;
    const pos = this.pos;
    if (pos === this.buf.length) {
      this.buf = chunk;
      this.scan -= pos;
    } else {
      this.buf = Buffer.concat([this.buf.subarray(pos), chunk]);
      this.scan -= pos;
      this.m1 -= pos;
      this.m2 -= pos;
    }
    this.pos = 0;
    this.strEnd = -1;
  }

  /**
   * The next event from the bytes so far, or undefined when more bytes are needed (or
   * after an upgrade request ended, when the rest belongs to another protocol). Throws
   * RequestError; after that every call throws the same error.
   */
  next(): RequestEvent | undefined {
    if (this.dead !== undefined) throw this.dead;
    try {
      return this.step();
    } catch (err) {
      if (err instanceof RequestError) this.dead = err;
      throw err;
    }
  }

  /** Hands over the bytes not consumed yet (after an upgrade head); the reader forgets them. */
  rest(): Buffer {
    const out = this.buf.subarray(this.pos);
    this.buf = EMPTY;
    this.pos = 0;
    this.scan = 0;
    this.strEnd = -1;
    return out;
  }

  /** True from the first byte of a request's head (leading CRLFs aside) until its end. */
  get midRequest(): boolean {
    return this.inRequest;
  }

  /** Bytes buffered and not yet consumed. */
  get buffered(): number {
    return this.buf.length - this.pos;
  }

  /**
   * buf[a, b) as a string. Making a string from a Buffer is a native call that costs far
   * more than the bytes it copies, and a head has dozens of names and values; so the head
   * is decoded in one call (a window of at least 2 KiB, which holds most heads whole) and
   * every string is a slice of it, which V8 makes without leaving JavaScript. The window
   * is bounded so that a large body pushed together with its head is not decoded too.
   */
  private text(a: number, b: number): string {
    if (a < this.strBase || b > this.strEnd) {
      const end = Math.min(this.buf.length, a + Math.max(b - a, 2048));
      this.str = latin1(this.buf, a, end);
      this.strBase = a;
      this.strEnd = end;
    }
    return this.str.slice(a - this.strBase, b - this.strBase);
  }

  private step(): RequestEvent | undefined {
    switch (this.state) {
      case S.Length:
        return this.lengthBody();
      case S.Upgraded:
        return undefined;
      case S.Closed:
        return this.closed();
      default:
        if (this.state >= S.SizeStart) return this.chunked();
        return this.section();
    }
  }

  /**
   * Scans the head (request line and fields) or the trailer section. Returns the head
   * event or, for trailers, the end event, or undefined when the section is incomplete.
   */
  private section(): RequestEvent | undefined {
    const buf = this.buf;
    // The tables in locals: a module binding is reloaded on every access in a loop.
    const tchar = TCHAR;
    const fieldByte = FIELD_BYTE;
    const targetByte = TARGET_BYTE;
    // Scanning stops at the section's byte limit, so that a head is judged on the same
    // bytes however it was split: what lies past the limit is never read, only counted.
    const limit = this.pos - this.sectionBytes + this.limits.maxHeaderSize;
    let end = this.state === S.Start ? buf.length : Math.min(buf.length, limit);
    let i = this.scan;
    let st = this.state;
    while (i < end) {
      switch (st) {
        case S.Start: {
          const b = buf[i];
          if (b === CR || b === LF) {
            i++;
            this.pos = i;
            continue;
          }
          this.inRequest = true;
          this.resetHead();
          end = Math.min(buf.length, i + this.limits.maxHeaderSize);
          st = S.Method;
          continue;
        }
        case S.Method: {
          while (i < end && tchar[buf[i]] === 1) i++;
          if (i === end) break;
          if (buf[i] !== SP || i === this.pos) {
            // The same refusal whatever the split: bytes that no known method starts with
            // are a 501 (see the check where a push ends inside the method).
            if (!METHOD_PREFIXES.has(latin1(buf, this.pos, i))) throw new RequestError(501, 'method not implemented', 'UNKNOWN_METHOD');
            throw bad('INVALID_METHOD', 'invalid method');
          }
          this.method = this.methodAt(buf, this.pos, i);
          this.m1 = i;
          i++;
          st = S.Target;
          continue;
        }
        case S.Target: {
          while (i < end && targetByte[buf[i]] === 1) i++;
          if (i === end) break;
          if (buf[i] !== SP || i === this.m1 + 1) {
            // A line end right after the target is an HTTP/0.9 request line.
            if ((buf[i] === CR || buf[i] === LF) && i > this.m1 + 1) throw bad('MISSING_VERSION', 'request line has no HTTP version');
            throw bad('INVALID_TARGET', 'invalid request-target');
          }
          checkTarget(buf, this.method, this.m1 + 1, i);
          this.target = this.text(this.m1 + 1, i);
          this.m2 = i;
          i++;
          st = S.Version;
          continue;
        }
        case S.Version: {
          // "HTTP/x.y" is 8 bytes; stop early on anything longer so that garbage is not
          // scanned up to the head limit.
          const stop = Math.min(end, this.m2 + 10);
          while (i < stop && buf[i] !== CR) i++;
          if (i === end) break;
          if (buf[i] !== CR) throw bad('INVALID_VERSION', 'invalid HTTP version');
          this.version(buf, this.m2, i);
          i++;
          st = S.RequestLineLF;
          continue;
        }
        case S.RequestLineLF: {
          if (buf[i] !== LF) throw bad('BARE_CR', 'CR not followed by LF');
          i++;
          this.lineDone(i);
          st = S.LineStart;
          continue;
        }
        case S.LineStart: {
          const b = buf[i];
          if (tchar[b] === 1) {
            i++;
            st = S.Name;
            continue;
          }
          if (b === CR) {
            i++;
            st = S.EndLF;
            continue;
          }
          if (b === SP || b === 0x09) throw bad('OBS_FOLD', 'line folding or whitespace before a field name');
          if (b === LF) throw bad('BARE_LF', 'LF without CR');
          throw bad('INVALID_HEADER_NAME', 'invalid header name');
        }
        case S.Name: {
          while (i < end && tchar[buf[i]] === 1) i++;
          if (i === end) break;
          if (buf[i] !== COLON) {
            if (buf[i] === SP || buf[i] === 0x09) throw bad('SPACE_BEFORE_COLON', 'whitespace between header name and colon');
            throw bad('INVALID_HEADER_NAME', 'invalid header name');
          }
          this.m1 = i;
          i++;
          st = S.Value;
          continue;
        }
        case S.Value: {
          while (i < end && fieldByte[buf[i]] === 1) i++;
          if (i === end) break;
          if (buf[i] !== CR) {
            if (buf[i] === LF) throw bad('BARE_LF', 'LF without CR');
            throw bad('INVALID_HEADER_VALUE', 'invalid byte in header value');
          }
          this.m2 = i;
          i++;
          st = S.FieldLF;
          continue;
        }
        case S.FieldLF: {
          if (buf[i] !== LF) throw bad('BARE_CR', 'CR not followed by LF');
          i++;
          this.field(buf, this.pos, this.m1, this.m2);
          this.lineDone(i);
          st = S.LineStart;
          continue;
        }
        case S.EndLF: {
          if (buf[i] !== LF) throw bad('BARE_CR', 'CR not followed by LF');
          i++;
          this.lineDone(i);
          this.scan = i;
          if (this.inTrailers) return this.finish(this.trailers ?? []);
          return this.headDone();
        }
        default:
          throw new Error(`unreachable state ${st}`);
      }
      // Only the inner scans reach here, when they ran out of bytes.
      break;
    }
    this.scan = i;
    this.state = st;
    // A push that ends inside the method or the version is checked as far as it goes, so
    // that a request llhttp refuses from its first bytes is refused here too rather than
    // left waiting for a line end that may never come.
    if (st === S.Method && !METHOD_PREFIXES.has(latin1(buf, this.pos, i))) {
      throw new RequestError(501, 'method not implemented', 'UNKNOWN_METHOD');
    }
    if (st === S.Version) {
      for (let v = this.m2 + 1, k = 0; v < i; v++, k++) {
        const b = buf[v];
        if (k === 5 || k === 7 ? b < 0x30 || b > 0x39 : b !== VERSION_SHAPE[k]) throw bad('INVALID_VERSION', 'invalid HTTP version');
      }
    }
    if (st !== S.Start && i < buf.length) {
      throw new RequestError(431, this.inTrailers ? 'trailer section larger than the limit' : 'request head larger than the limit');
    }
    return undefined;
  }

  private resetHead(): void {
    this.sectionBytes = 0;
    this.fieldCount = 0;
    this.raw = [];
    this.contentLength = -1;
    this.sawTE = false;
    this.chunkedCount = 0;
    this.lastChunked = false;
    this.connClose = false;
    this.connKeepAlive = false;
    this.connUpgrade = false;
    this.sawUpgrade = false;
    this.expect = false;
    this.inTrailers = false;
    this.trailers = undefined;
  }

  /** Consumes a finished line ending before `next` and checks the section's byte limit. */
  private lineDone(next: number): void {
    this.sectionBytes += next - this.pos;
    this.pos = next;
    if (this.sectionBytes > this.limits.maxHeaderSize) {
      throw new RequestError(431, this.inTrailers ? 'trailer section larger than the limit' : 'request head larger than the limit');
    }
  }

  /**
   * The method in buf[start, end), refused with 501 unless Node knows it. The common
   * methods are recognised by their bytes so that no string is made for them.
   */
  private methodAt(buf: Buffer, start: number, end: number): string {
    const len = end - start;
    if (len === 3 && buf[start] === 0x47 && buf[start + 1] === 0x45 && buf[start + 2] === 0x54) return 'GET';
    if (len === 4 && buf[start] === 0x50 && buf[start + 1] === 0x4f && buf[start + 2] === 0x53 && buf[start + 3] === 0x54) return 'POST';
    const method = this.text(start, end);
    if (!METHODS.has(method)) throw new RequestError(501, `method ${method} not implemented`, 'UNKNOWN_METHOD');
    return method;
  }

  /** Checks the version of a request line whose method and target were taken already. */
  private version(buf: Buffer, sp2: number, cr: number): void {
    const v = sp2 + 1;
    if (
      cr - v !== 8 ||
      buf[v] !== 0x48 || buf[v + 1] !== 0x54 || buf[v + 2] !== 0x54 || buf[v + 3] !== 0x50 || buf[v + 4] !== 0x2f ||
      buf[v + 6] !== 0x2e || buf[v + 5] < 0x30 || buf[v + 5] > 0x39 || buf[v + 7] < 0x30 || buf[v + 7] > 0x39
    ) {
      throw bad('INVALID_VERSION', 'invalid HTTP version');
    }
    if (buf[v + 5] !== 0x31 || (buf[v + 7] !== 0x30 && buf[v + 7] !== 0x31)) {
      throw new RequestError(505, 'only HTTP/1.0 and HTTP/1.1 are supported', 'UNSUPPORTED_VERSION');
    }
    this.minor = buf[v + 7] === 0x31 ? 1 : 0;
  }

  private field(buf: Buffer, start: number, colon: number, cr: number): void {
    if (++this.fieldCount > this.limits.maxHeaderCount) {
      throw new RequestError(431, this.inTrailers ? 'too many trailer fields' : 'too many header fields');
    }
    let vs = colon + 1;
    let ve = cr;
    while (vs < ve && OWS[buf[vs]] === 1) vs++;
    while (ve > vs && OWS[buf[ve - 1]] === 1) ve--;
    const name = this.text(start, colon);
    const value = vs === ve ? '' : this.text(vs, ve);

    if (this.inTrailers) {
      // Framing and connection fields are refused in trailers: llhttp would apply a
      // trailer's Connection: close to the connection, which a recipient that ignores
      // trailers (as RFC 9110 §6.5.1 allows) would not.
      if (
        equalsLower(buf, start, colon, CONTENT_LENGTH) ||
        equalsLower(buf, start, colon, TRANSFER_ENCODING) ||
        equalsLower(buf, start, colon, CONNECTION) ||
        equalsLower(buf, start, colon, PROXY_CONNECTION)
      ) {
        throw bad('FRAMING_TRAILER', `${name} is not allowed in trailers`);
      }
      (this.trailers ??= []).push(name, value);
      return;
    }
    this.raw.push(name, value);

    // The framing and connection headers, found by length first so most names cost one compare.
    switch (colon - start) {
      case 14:
        if (equalsLower(buf, start, colon, CONTENT_LENGTH)) {
          if (this.contentLength !== -1) throw bad('DUPLICATE_CONTENT_LENGTH', 'more than one Content-Length');
          const n = parseDecimalLength(buf, vs, ve);
          // llhttp 9.3 (Node 20) refuses an HTAB after the digits, 9.4 (Node 24) takes it;
          // the stricter reading holds on both.
          if (n < 0 || hasTab(buf, ve, cr)) throw bad('INVALID_CONTENT_LENGTH', 'invalid Content-Length');
          this.contentLength = n;
          if (this.sawTE) throw bad('CONTENT_LENGTH_WITH_TRANSFER_ENCODING', 'both Content-Length and Transfer-Encoding');
        }
        break;
      case 17:
        if (equalsLower(buf, start, colon, TRANSFER_ENCODING)) {
          // Refused at once, like llhttp, rather than when the head ends.
          if (this.contentLength !== -1) throw bad('CONTENT_LENGTH_WITH_TRANSFER_ENCODING', 'both Content-Length and Transfer-Encoding');
          // llhttp does not take HTAB as whitespace after a final "chunked" and refuses it.
          if (this.transferEncoding(buf, vs, ve) && hasTab(buf, ve, cr)) {
            throw bad('INVALID_TRANSFER_ENCODING', 'HTAB after chunked');
          }
        }
        break;
      case 10:
        if (equalsLower(buf, start, colon, CONNECTION)) this.connection(buf, vs, ve);
        break;
      case 16:
        // llhttp reads Proxy-Connection exactly like Connection (close, keep-alive and
        // upgrade alike), so the reader does too: keepAlive and upgrade must match Node's.
        if (equalsLower(buf, start, colon, PROXY_CONNECTION)) this.connection(buf, vs, ve);
        break;
      case 7:
        // llhttp marks an upgrade only for a non-empty Upgrade value; so does this reader.
        if (vs < ve && equalsLower(buf, start, colon, UPGRADE)) this.sawUpgrade = true;
        break;
      case 6:
        if (equalsLower(buf, start, colon, EXPECT) && equalsLower(buf, vs, ve, CONTINUE)) this.expect = true;
        break;
    }
  }

  /**
   * A Transfer-Encoding list: tokens only, "chunked" once and, over all such headers, last.
   * Returns whether this header's last coding is chunked.
   */
  private transferEncoding(buf: Buffer, start: number, end: number): boolean {
    this.sawTE = true;
    let i = start;
    for (;;) {
      while (i < end && OWS[buf[i]] === 1) i++;
      const s = i;
      while (i < end && TCHAR[buf[i]] === 1) i++;
      const e = i;
      while (i < end && OWS[buf[i]] === 1) i++;
      if (s === e || (i < end && buf[i] !== COMMA)) throw bad('INVALID_TRANSFER_ENCODING', 'invalid Transfer-Encoding');
      const chunked = equalsLower(buf, s, e, CHUNKED);
      if (chunked && ++this.chunkedCount > 1) throw bad('INVALID_TRANSFER_ENCODING', 'chunked applied more than once');
      this.lastChunked = chunked;
      if (i === end) return chunked;
      i++;
    }
  }

  /** Connection options, compared case-insensitively; unknown and malformed elements are ignored like llhttp does. */
  private connection(buf: Buffer, start: number, end: number): void {
    let i = start;
    while (i <= end) {
      let e = i;
      while (e < end && buf[e] !== COMMA) e++;
      let s = i;
      let t = e;
      while (s < t && OWS[buf[s]] === 1) s++;
      while (t > s && OWS[buf[t - 1]] === 1) t--;
      if (equalsLower(buf, s, t, CLOSE)) this.connClose = true;
      else if (equalsLower(buf, s, t, KEEP_ALIVE)) this.connKeepAlive = true;
      else if (equalsLower(buf, s, t, UPGRADE)) this.connUpgrade = true;
      i = e + 1;
    }
  }

  /** Decides the framing once the head is complete and hands the head out. */
  private headDone(): RequestEvent {
    let chunked = false;
    if (this.sawTE) {
      if (this.contentLength !== -1) throw bad('CONTENT_LENGTH_WITH_TRANSFER_ENCODING', 'both Content-Length and Transfer-Encoding');
      if (!this.lastChunked) throw bad('INVALID_TRANSFER_ENCODING', 'chunked must be the last transfer coding');
      if (this.minor === 0) throw bad('TRANSFER_ENCODING_HTTP10', 'Transfer-Encoding in an HTTP/1.0 request');
      chunked = true;
    }
    const connect = this.method === 'CONNECT';
    if (connect && (chunked || this.contentLength > 0)) throw bad('CONNECT_WITH_BODY', 'CONNECT request with a body');
    this.keepAlive = this.minor === 1 ? !this.connClose : this.connKeepAlive;
    this.upgrade = connect || (this.connUpgrade && this.sawUpgrade);
    const head = new RequestHead(
      this.method,
      this.target,
      this.minor,
      this.raw,
      this.contentLength,
      chunked,
      this.keepAlive,
      this.upgrade,
      this.expect,
    );
    if (chunked) {
      this.state = S.SizeStart;
    } else {
      this.state = S.Length;
      this.remaining = this.contentLength > 0 ? this.contentLength : 0;
    }
    return { type: 'head', head };
  }

  private lengthBody(): RequestEvent | undefined {
    if (this.remaining === 0) return this.finish(undefined);
    const avail = this.buf.length - this.pos;
    if (avail === 0) return undefined;
    const n = avail < this.remaining ? avail : this.remaining;
    const chunk = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    this.scan = this.pos;
    this.remaining -= n;
    return { type: 'body', chunk };
  }

  /** Ends the current request and picks the state for the bytes after it. */
  private finish(trailers: string[] | undefined): RequestEvent {
    this.inRequest = false;
    this.inTrailers = false;
    this.state = this.upgrade ? S.Upgraded : this.keepAlive ? S.Start : S.Closed;
    this.scan = this.pos;
    return { type: 'end', trailers };
  }

  /**
   * After a request that closes the connection, llhttp (strict) refuses any byte but CR
   * and LF; so does this reader, so that a caller that keeps reading cannot be handed a
   * request the peer's framing never meant to send.
   */
  private closed(): undefined {
    const buf = this.buf;
    let i = this.pos;
    while (i < buf.length && (buf[i] === CR || buf[i] === LF)) i++;
    this.pos = this.scan = i;
    if (i < buf.length) throw bad('DATA_AFTER_CLOSE', 'data after a request with Connection: close');
    return undefined;
  }

  /** The chunked body: sizes, extensions, data and the trailer section. */
  private chunked(): RequestEvent | undefined {
    const buf = this.buf;
    const end = buf.length;
    let i = this.pos;
    let st = this.state;
    {
      while (i < end) {
        const b = buf[i];
        switch (st) {
          case S.SizeStart: {
            const d = HEX_VALUE[b];
            if (d < 0) throw bad('INVALID_CHUNK_SIZE', 'invalid chunk size');
            this.remaining = d;
            st = S.Size;
            i++;
            continue;
          }
          case S.Size: {
            const d = HEX_VALUE[b];
            if (d >= 0) {
              const n = this.remaining * 16 + d;
              if (n > MAX_LENGTH) throw bad('INVALID_CHUNK_SIZE', 'chunk size too large');
              this.remaining = n;
              i++;
              continue;
            }
            if (b === CR) st = S.SizeLF;
            else if (b === SEMI) st = S.ExtStart;
            else throw bad('INVALID_CHUNK_SIZE', 'invalid chunk size');
            i++;
            continue;
          }
          case S.ExtStart:
            if (TCHAR[b] !== 1) throw bad('INVALID_CHUNK_EXTENSION', 'invalid chunk extension');
            st = S.ExtName;
            i++;
            continue;
          case S.ExtName:
          case S.ExtToken:
            if (TCHAR[b] === 1) {
              i++;
              continue;
            }
            if (b === EQUALS && st === S.ExtName) st = S.ExtValueStart;
            else if (b === SEMI) st = S.ExtStart;
            else if (b === CR) st = S.SizeLF;
            else throw bad('INVALID_CHUNK_EXTENSION', 'invalid chunk extension');
            i++;
            continue;
          case S.ExtValueStart:
            if (b === DQUOTE) st = S.ExtQuoted;
            else if (TCHAR[b] === 1) st = S.ExtToken;
            else throw bad('INVALID_CHUNK_EXTENSION', 'invalid chunk extension');
            i++;
            continue;
          case S.ExtQuoted:
            if (QDTEXT[b] === 1) {
              i++;
              continue;
            }
            if (b === BACKSLASH) st = S.ExtQuotedPair;
            else if (b === DQUOTE) st = S.ExtAfterQuoted;
            else throw bad('INVALID_CHUNK_EXTENSION', 'invalid chunk extension');
            i++;
            continue;
          case S.ExtQuotedPair:
            if (QUOTED_PAIR_BYTE[b] !== 1) throw bad('INVALID_CHUNK_EXTENSION', 'invalid chunk extension');
            st = S.ExtQuoted;
            i++;
            continue;
          case S.ExtAfterQuoted:
            if (b === SEMI) st = S.ExtStart;
            else if (b === CR) st = S.SizeLF;
            else throw bad('INVALID_CHUNK_EXTENSION', 'invalid chunk extension');
            i++;
            continue;
          case S.SizeLF:
            if (b !== LF) throw bad('BARE_CR', 'CR not followed by LF');
            i++;
            if (this.remaining === 0) {
              // The last chunk: the trailer section follows, scanned like a head.
              this.pos = this.scan = i;
              this.state = S.LineStart;
              this.inTrailers = true;
              this.sectionBytes = 0;
              this.fieldCount = 0;
              return this.section();
            }
            st = S.Data;
            continue;
          case S.Data: {
            const avail = end - i;
            const n = avail < this.remaining ? avail : this.remaining;
            const chunk = buf.subarray(i, i + n);
            i += n;
            this.remaining -= n;
            if (this.remaining === 0) st = S.DataCR;
            this.pos = this.scan = i;
            this.state = st;
            return { type: 'body', chunk };
          }
          case S.DataCR:
            if (b !== CR) throw bad('INVALID_CHUNK', 'chunk data not followed by CRLF');
            st = S.DataLF;
            i++;
            continue;
          case S.DataLF:
            if (b !== LF) throw bad('INVALID_CHUNK', 'chunk data not followed by CRLF');
            st = S.SizeStart;
            i++;
            continue;
          default:
            throw new Error(`unreachable state ${st}`);
        }
      }
    }
    // Chunk framing bytes are consumed as they are read: nothing of a size line is kept.
    this.pos = this.scan = i;
    this.state = st;
    return undefined;
  }
}

/**
 * Checks the request-target in buf[start, end) (its bytes were checked while scanning): refused
 * unless it has one of the forms of RFC 9112 §3.2: authority-form for CONNECT and only
 * there, otherwise origin-form, "*" or absolute-form. Checked as soon as the target ends,
 * so that the refusal is the same however the line is split.
 */
function checkTarget(buf: Buffer, method: string, start: number, end: number): void {
  if (method === 'CONNECT') {
    if (!authority(buf, start, end)) throw bad('INVALID_TARGET', 'CONNECT needs an authority-form target');
  } else if (buf[start] === 0x2f /* / */) {
    // origin-form: every byte was checked as the target was scanned.
  } else if (buf[start] === 0x2a /* * */) {
    if (end !== start + 1) throw bad('INVALID_TARGET', 'invalid request-target');
  } else if (!absoluteForm(buf, start, end)) {
    throw bad('INVALID_TARGET', 'invalid request-target');
  }
}

/** Whether buf[start, end) holds an HTAB (used on the trailing OWS of a value, mostly empty). */
function hasTab(buf: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (buf[i] === 0x09) return true;
  return false;
}

/** authority-form for CONNECT: a non-empty run of authority bytes (RFC 9112 §3.2.3). */
function authority(buf: Buffer, start: number, end: number): boolean {
  if (start === end) return false;
  let ats = 0;
  for (let i = start; i < end; i++) {
    const b = buf[i];
    if (AUTHORITY_BYTE[b] !== 1) return false;
    if (b === 0x40 && ++ats > 1) return false;
  }
  return true;
}

/** absolute-form: letters, "://", a non-empty authority, then nothing or a path or query. */
function absoluteForm(buf: Buffer, start: number, end: number): boolean {
  let i = start;
  while (i < end && ALPHA[buf[i]] === 1) i++;
  if (i === start || end - i < 4 || buf[i] !== COLON || buf[i + 1] !== 0x2f || buf[i + 2] !== 0x2f) return false;
  i += 3;
  let a = i;
  while (a < end && buf[a] !== 0x2f && buf[a] !== 0x3f) a++;
  return authority(buf, i, a);
}

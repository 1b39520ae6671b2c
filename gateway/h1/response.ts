// A strict, incremental HTTP/1.x response reader for the upstream pool (gateway/h1/pool.ts).
//
// It reads one response at a time from a connection's bytes, as they arrive, and hands
// the parts to a sink: the final head, the body (de-chunked), the end with its
// trailers. It is strict where a lenient reader would let an upstream smuggle a second
// response into the first: CRLF line ends only, token header names with no whitespace
// before the colon, no obs-fold, no control characters but HTAB in values, a
// Content-Length of digits only and never twice, Transfer-Encoding and Content-Length
// never together. Everything is read from Buffers byte by byte with lookup tables: no
// regular expression, no string split and no string at all but the header Buffers the
// sink asks for.
//
// test/h1-response-differential.test.ts checks it against llhttp in strict mode (Node's
// parser, and undici's): what this reader takes, llhttp takes the same way; what llhttp
// refuses, this reader refuses. It is deliberately stricter than llhttp here (each case
// is a named predicate in that test):
//   - The status line: HTTP/1.0 or HTTP/1.1 only (llhttp also reads 0.9 and 2.0), a
//     status of 100–999 (llhttp reads "099"), a reason phrase of HTAB, SP, VCHAR and
//     obs-text (llhttp takes other control characters and DEL, 9.3 even a bare CR),
//     and no CR or LF before it (llhttp skips empty lines; RFC 9112 allows that only
//     before a request line).
//   - A 101 is refused: the pool never asks for an upgrade.
//   - A 1xx that does not keep the connection (Connection: close, HTTP/1.0 without
//     keep-alive) is refused at once: llhttp refuses every byte after it.
//   - Content-Length of at most 15 digits and chunk sizes of at most 13 hex digits (below
//     2^53; llhttp counts to 2^64), leading zeros included.
//   - HTAB after a Content-Length value (llhttp 9.3, in Node 20, refuses it; 9.4 trims
//     it) or after a Transfer-Encoding value (llhttp reads "chunked<HTAB>" as another
//     coding, so a body to the close, where OWS trimming would read chunked).
//   - An empty Transfer-Encoding (llhttp 9.3, in Node 20, ignores it and frames by what
//     else there is; 9.4 refuses it too).
//   - A Transfer-Encoding line after one ending in chunked, even where the body is not
//     read (HEAD, 204, 304), where llhttp lets it by.
//   - Chunk extensions to RFC 9112 §7.1.1 exactly, so `;name=` with no value, `;=v` with
//     no name and `;;` are refused (llhttp takes them). Whitespace after the chunk size
//     or in an extension is refused by both.
//   - Trailers may not carry Transfer-Encoding, Connection or Proxy-Connection (llhttp
//     refuses only Content-Length there, and applies a Connection: close).
//   - An HTTP/1.0 response with both close and keep-alive in Connection closes (llhttp,
//     for HTTP/1.0, looks only for keep-alive and keeps it).
// A head is parsed in one pass once its end (CRLFCRLF) has arrived, so most faults in a
// head are refused when it ends, where llhttp refuses at the faulty byte; a bare LF or
// bare CR, which could keep the head from ever ending, is refused at once.

import { maxHeaderSize } from 'node:http';
import { CR, FIELD_BYTE as VALUE, HEX_VALUE as HEX, HTAB, LF, QDTEXT, QUOTED_PAIR_BYTE, SP, TCHAR as TOKEN, equalsLower as eqLower } from './syntax.js';

/** A response that is not HTTP, or not the HTTP it announced. The codes are llhttp's
 * (undici's parser), so gateway/errors.ts maps them as before: reason 'protocol'. */
export class ResponseError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'ResponseError';
    this.code = code;
  }
}

/** Where a ResponseReader delivers what it reads. */
export interface ResponseSink {
  /** The final head (never a 1xx). Returning false pauses the reader until resume(). */
  onResponseHead(status: number, rawHeaders: Buffer[], keepAlive: boolean): boolean;
  /** A piece of the body. Returning false pauses the reader until resume(). */
  onResponseBody(chunk: Buffer): boolean;
  /** The response is whole; trailers as Buffer pairs (null when there were none). */
  onResponseEnd(trailers: Buffer[] | null): void;
}

const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');

// The header names the reader itself acts on, lower-case bytes.
const N_CONTENT_LENGTH = Buffer.from('content-length');
const N_TRANSFER_ENCODING = Buffer.from('transfer-encoding');
const N_CONNECTION = Buffer.from('connection');
const N_KEEP_ALIVE = Buffer.from('keep-alive');
const N_PROXY_CONNECTION = Buffer.from('proxy-connection');
const V_CHUNKED = Buffer.from('chunked');
const V_CLOSE = Buffer.from('close');
const V_TIMEOUT = Buffer.from('timeout');

// Reader states.
const IDLE = 0;
const HEAD = 1;
const BODY_LENGTH = 2;
const BODY_CLOSE = 3;
const CHUNK_SIZE = 4;
const CHUNK_SIZE_LF = 6;
const CHUNK_DATA = 7;
const CHUNK_DATA_CR = 8;
const CHUNK_DATA_LF = 9;
const TRAILERS = 10;
const DONE = 11;
// Chunk extensions (RFC 9112 §7.1.1): `;` name [ `=` ( token / quoted-string ) ], no
// whitespace anywhere, as llhttp (strict) reads them.
const EXT_START = 12;
const EXT_NAME = 13;
const EXT_VALUE_START = 14;
const EXT_TOKEN = 15;
const EXT_QUOTED = 16;
const EXT_QUOTED_PAIR = 17;
const EXT_AFTER_QUOTED = 18;

/** Most hex digits of a chunk size: 13 stay below 2^53. */
const MAX_HEX_DIGITS = 13;

/**
 * Reads responses off one connection. Call expect(method) before each response, then
 * push() every chunk the socket gives, and eof() when the socket ends. Errors are
 * thrown (ResponseError). A sink returning false pauses the reader: what it had not
 * read yet is held until resume().
 */
export class ResponseReader {
  private state = IDLE;
  private method = '';
  /** The head read so far, when it came in more than one chunk. */
  private headParts: Buffer[] | null = null;
  private headBytes = 0;
  /** Body bytes still to come (Content-Length), or of the current chunk. */
  private remaining = 0;
  private hexDigits = 0;
  /** Bytes of chunk extensions and trailers so far (bounded like the head). */
  private extraBytes = 0;
  private trailerParts: Buffer[] | null = null;
  private keepAliveFlag = false;
  /** Unread bytes held while paused, or past the end of the response. */
  private held: Buffer | null = null;
  private paused = false;
  private reading = false;
  /** The connection ended while the reader was paused in a close-delimited body. */
  private eofSeen = false;
  /** Any byte of the current response (a 1xx included) has arrived. */
  started = false;
  /** The backend's Keep-Alive timeout hint of the last response in ms, -1 when none. */
  keepAliveHintMs = -1;
  /** The status of the final head of the current response (0 before it). */
  status = 0;

  constructor(
    private readonly sink: ResponseSink,
    /** Most bytes of a response head (and, apart, of its trailers): Node's and undici's
     * limit unless given. */
    private readonly maxHead = maxHeaderSize,
  ) {}

  /** No response is expected or being read. */
  get idle(): boolean {
    return this.state === IDLE;
  }

  /** The response under way is read until the connection closes. */
  get closeDelimited(): boolean {
    return this.state === BODY_CLOSE;
  }

  /** Whether the connection may carry another request after the response just read. */
  get keepAlive(): boolean {
    return this.keepAliveFlag;
  }

  /** Starts reading the response to a request of `method`. */
  expect(method: string): void {
    this.method = method;
    this.state = HEAD;
    this.started = false;
    this.status = 0;
    this.keepAliveFlag = false;
    this.keepAliveHintMs = -1;
    this.headParts = null;
    this.headBytes = 0;
    this.trailerParts = null;
    this.extraBytes = 0;
    this.held = null;
    this.paused = false;
    this.eofSeen = false;
  }

  /** Bytes that came after the end of the last response (null when none). */
  rest(): Buffer | null {
    return this.state === IDLE ? this.held : null;
  }

  /** Drops the reader's state (the connection is gone). */
  reset(): void {
    this.state = IDLE;
    this.held = null;
    this.headParts = null;
    this.trailerParts = null;
    this.paused = false;
  }

  push(buf: Buffer): void {
    if (buf.length === 0) return;
    if (this.state === IDLE) {
      // Bytes nobody asked for: kept for the pool to see (it drops the connection).
      this.held = this.held === null ? buf : Buffer.concat([this.held, buf]);
      return;
    }
    this.started = true;
    if (this.paused) {
      this.held = this.held === null ? buf : Buffer.concat([this.held, buf]);
      return;
    }
    this.run(buf);
  }

  /** Continues after a pause with the bytes held meanwhile. */
  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.reading) return;
    const h = this.held;
    this.held = null;
    if (h !== null) this.run(h);
    if (this.eofSeen && !this.paused && this.state === BODY_CLOSE) this.eof();
  }

  /** Whether a sink paused the reader. */
  get isPaused(): boolean {
    return this.paused;
  }

  /**
   * The connection ended. A close-delimited body ends here (held bytes first). Throws
   * when a response was under way and is not complete; returns whether a response
   * completed.
   */
  eof(): boolean {
    if (this.state === BODY_CLOSE) {
      if (this.paused) {
        // Ends once the sink has taken the bytes held.
        this.eofSeen = true;
        return false;
      }
      this.state = DONE;
      this.keepAliveFlag = false;
      this.finish(null, null, 0);
      return true;
    }
    return false;
  }

  private run(buf: Buffer): void {
    this.reading = true;
    let pos = 0;
    const n = buf.length;
    try {
      while (pos < n) {
        if (this.paused) break;
        switch (this.state) {
          case HEAD:
            pos = this.readHead(buf, pos);
            break;
          case BODY_LENGTH: {
            const take = Math.min(this.remaining, n - pos);
            const chunk = pos === 0 && take === n ? buf : buf.subarray(pos, pos + take);
            pos += take;
            this.remaining -= take;
            if (this.remaining === 0) this.state = DONE;
            if (!this.sink.onResponseBody(chunk)) this.paused = true;
            if (this.state === DONE && !this.paused) {
              this.finish(buf, null, pos);
              return;
            }
            break;
          }
          case BODY_CLOSE: {
            const chunk = pos === 0 ? buf : buf.subarray(pos);
            pos = n;
            if (!this.sink.onResponseBody(chunk)) this.paused = true;
            break;
          }
          case CHUNK_DATA: {
            const take = Math.min(this.remaining, n - pos);
            const chunk = buf.subarray(pos, pos + take);
            pos += take;
            this.remaining -= take;
            if (this.remaining === 0) this.state = CHUNK_DATA_CR;
            if (!this.sink.onResponseBody(chunk)) this.paused = true;
            break;
          }
          case TRAILERS:
            pos = this.readTrailers(buf, pos);
            break;
          case DONE:
            // A paused sink let the last body bytes through; the end follows on resume.
            this.finish(buf, null, pos);
            return;
          case IDLE:
            this.held = this.held === null ? buf.subarray(pos) : Buffer.concat([this.held, buf.subarray(pos)]);
            return;
          default:
            pos = this.readChunkLine(buf, pos);
        }
      }
      if (this.paused) {
        if (this.state === DONE) this.held = pos < n ? buf.subarray(pos) : Buffer.alloc(0);
        else if (pos < n) this.held = buf.subarray(pos);
      } else if (this.state === DONE) this.finish(buf, null, pos);
    } finally {
      this.reading = false;
    }
    // A resume() during a sink call found the reader busy: go on with what is held.
    if (!this.paused && this.held !== null && this.state !== IDLE) {
      const h = this.held;
      this.held = null;
      this.run(h);
    }
  }

  /** Ends the response: the sink is told, the bytes after it kept. */
  private finish(buf: Buffer | null, trailers: Buffer[] | null, pos: number): void {
    this.state = IDLE;
    this.held = buf !== null && pos < buf.length ? buf.subarray(pos) : null;
    this.sink.onResponseEnd(trailers);
  }

  // ---- head ----

  private readHead(buf: Buffer, pos: number): number {
    let head: Buffer;
    let end: number;
    if (this.headParts === null) {
      const at = buf.indexOf(CRLFCRLF, pos);
      if (at === -1) {
        this.checkPartialHead(buf, pos, buf.length);
        this.headParts = [buf.subarray(pos)];
        this.headBytes = buf.length - pos;
        if (this.headBytes > this.maxHead) throw new ResponseError('HPE_HEADER_OVERFLOW', 'response head too large');
        return buf.length;
      }
      head = buf;
      end = at + 4;
      if (end - pos > this.maxHead) throw new ResponseError('HPE_HEADER_OVERFLOW', 'response head too large');
      this.parseHead(head, pos, end);
      return end;
    }
    // The head came in pieces: look for its end across the seam, then join.
    const prev = this.headBytes;
    const joined = Buffer.concat([...this.headParts, buf.subarray(pos)]);
    const at = joined.indexOf(CRLFCRLF, Math.max(0, prev - 3));
    if (at === -1) {
      this.checkPartialHead(joined, Math.max(0, prev - 1), joined.length);
      this.headParts = [joined];
      this.headBytes = joined.length;
      if (this.headBytes > this.maxHead) throw new ResponseError('HPE_HEADER_OVERFLOW', 'response head too large');
      return buf.length;
    }
    end = at + 4;
    if (end > this.maxHead) throw new ResponseError('HPE_HEADER_OVERFLOW', 'response head too large');
    this.headParts = null;
    this.headBytes = 0;
    this.parseHead(joined, 0, end);
    return pos + (end - prev);
  }

  /** An incomplete head with a bare LF or a bare CR is refused at once (as llhttp does),
   * not when the head limit or a timeout is reached: with a bare CR before the empty
   * line ("\r\r\n") the CRLFCRLF we look for may never come. */
  private checkPartialHead(b: Buffer, from: number, to: number): void {
    for (let i = from; i < to; i++) {
      const c = b[i];
      if (c === LF && (i === 0 || b[i - 1] !== CR)) throw new ResponseError('HPE_LF_EXPECTED', 'bare LF in the response head');
      if (c === CR && i + 1 < to && b[i + 1] !== LF) throw new ResponseError('HPE_CR_EXPECTED', 'bare CR in the response head');
    }
  }

  /** Parses the head in b[start, end) (end just past CRLFCRLF) and acts on it. */
  private parseHead(b: Buffer, start: number, end: number): void {
    // Status line: HTTP/1.x SP DDD [SP reason] CRLF
    if (end - start < 14 || b[start] !== 0x48 || b[start + 1] !== 0x54 || b[start + 2] !== 0x54 || b[start + 3] !== 0x50 || b[start + 4] !== 0x2f || b[start + 5] !== 0x31 || b[start + 6] !== 0x2e) {
      throw new ResponseError('HPE_INVALID_CONSTANT', 'expected HTTP/1.x');
    }
    const minor = b[start + 7];
    if (minor !== 0x30 && minor !== 0x31) throw new ResponseError('HPE_INVALID_VERSION', 'unsupported HTTP version');
    if (b[start + 8] !== SP) throw new ResponseError('HPE_INVALID_STATUS', 'invalid status line');
    const d0 = b[start + 9] - 0x30;
    const d1 = b[start + 10] - 0x30;
    const d2 = b[start + 11] - 0x30;
    if (d0 < 1 || d0 > 9 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) throw new ResponseError('HPE_INVALID_STATUS', 'invalid status code');
    const status = d0 * 100 + d1 * 10 + d2;
    let i = start + 12;
    if (b[i] === SP) {
      i++;
      while (b[i] !== CR) {
        if (VALUE[b[i]] === 0) throw new ResponseError('HPE_INVALID_STATUS', 'invalid character in the reason phrase');
        i++;
      }
    }
    if (b[i] !== CR || b[i + 1] !== LF) throw new ResponseError('HPE_INVALID_STATUS', 'invalid status line');
    i += 2;

    const headers: Buffer[] = [];
    let contentLength = -1;
    let chunked = false;
    let te = false;
    let closeToken = false;
    let keepAliveToken = false;
    let hint = -1;
    // Header lines until the empty line at end - 2.
    while (i < end - 2) {
      const nameStart = i;
      while (TOKEN[b[i]] === 1) i++;
      if (i === nameStart) throw new ResponseError('HPE_INVALID_HEADER_TOKEN', b[i] === SP || b[i] === HTAB ? 'obs-fold or whitespace before a header name' : 'invalid header name');
      if (b[i] !== 0x3a) throw new ResponseError('HPE_INVALID_HEADER_TOKEN', 'invalid character in a header name');
      const nameEnd = i;
      i++;
      while (b[i] === SP || b[i] === HTAB) i++;
      const valueStart = i;
      let valueEnd = i;
      while (b[i] !== CR) {
        const c = b[i];
        if (VALUE[c] === 0) throw new ResponseError('HPE_INVALID_HEADER_TOKEN', 'invalid character in a header value');
        i++;
        if (c !== SP && c !== HTAB) valueEnd = i;
      }
      if (b[i + 1] !== LF) throw new ResponseError('HPE_CR_EXPECTED', 'bare CR in the response head');
      i += 2;
      const nameLen = nameEnd - nameStart;
      // Only names of these lengths need a look: content-length (14), transfer-encoding
      // (17), connection and keep-alive (10).
      if (nameLen === 14 && eqLower(b, nameStart, nameEnd, N_CONTENT_LENGTH)) {
        if (contentLength !== -1) throw new ResponseError('HPE_UNEXPECTED_CONTENT_LENGTH', 'duplicate Content-Length');
        contentLength = parseLength(b, valueStart, valueEnd);
        // llhttp 9.3 (Node 20) refuses HTAB after the digits, 9.4 (Node 24) trims it:
        // refused here, so that no upstream's length reads two ways on either runtime.
        for (let k = valueEnd; k < i - 2; k++) if (b[k] === HTAB) throw new ResponseError('HPE_INVALID_CONTENT_LENGTH', 'HTAB after the Content-Length');
      } else if (nameLen === 17 && eqLower(b, nameStart, nameEnd, N_TRANSFER_ENCODING)) {
        // chunked must be the final coding, once: a coding after it, or a second
        // Transfer-Encoding after a chunked one, is refused.
        if (chunked) throw new ResponseError('HPE_INVALID_TRANSFER_ENCODING', 'chunked is not the final transfer coding');
        // llhttp (9.3 and 9.4) reads "chunked<HTAB>" as a coding other than chunked, so
        // the body to the close, where trimming OWS gives chunked: refused, not guessed.
        for (let k = valueEnd; k < i - 2; k++) if (b[k] === HTAB) throw new ResponseError('HPE_INVALID_TRANSFER_ENCODING', 'HTAB after the Transfer-Encoding');
        // An empty one names no coding (RFC 9112 wants one at least): llhttp 9.4 refuses
        // it, 9.3 ignores it.
        if (valueStart === valueEnd) throw new ResponseError('HPE_INVALID_TRANSFER_ENCODING', 'empty Transfer-Encoding');
        te = true;
        chunked = lastTokenIs(b, valueStart, valueEnd, V_CHUNKED);
      } else if (nameLen === 10) {
        if (eqLower(b, nameStart, nameEnd, N_CONNECTION)) {
          if (hasToken(b, valueStart, valueEnd, V_CLOSE)) closeToken = true;
          if (hasToken(b, valueStart, valueEnd, N_KEEP_ALIVE)) keepAliveToken = true;
        } else if (eqLower(b, nameStart, nameEnd, N_KEEP_ALIVE)) {
          const t = keepAliveTimeout(b, valueStart, valueEnd);
          if (t !== -1) hint = t;
        }
      }
      headers.push(b.subarray(nameStart, nameEnd), b.subarray(valueStart, valueEnd));
    }
    if (te && contentLength !== -1) throw new ResponseError('HPE_UNEXPECTED_CONTENT_LENGTH', 'Content-Length with Transfer-Encoding');

    if (status < 200) {
      // 1xx: informational, skipped; the final response follows. 101 was not asked for.
      if (status === 101) throw new ResponseError('HPE_INVALID_STATUS', 'unexpected 101 Switching Protocols');
      // One that does not keep the connection (Connection: close, or HTTP/1.0 without
      // keep-alive) ends it before the final response: llhttp refuses what follows.
      if (closeToken || (minor !== 0x31 && !keepAliveToken)) throw new ResponseError('HPE_CLOSED_CONNECTION', 'a 1xx response closes the connection');
      return;
    }
    this.status = status;
    // HTTP/1.0 keeps the connection only when asked to; HTTP/1.1 unless told to close.
    this.keepAliveFlag = !closeToken && (minor === 0x31 || keepAliveToken);
    this.keepAliveHintMs = hint === -1 ? -1 : hint * 1000;
    if (status === 204 || status === 304 || this.method === 'HEAD') this.state = DONE;
    else if (chunked) {
      this.state = CHUNK_SIZE;
      this.remaining = 0;
      this.hexDigits = 0;
    } else if (te) {
      // A transfer coding other than chunked last: the body runs to the close.
      this.state = BODY_CLOSE;
      this.keepAliveFlag = false;
    } else if (contentLength !== -1) {
      this.remaining = contentLength;
      this.state = contentLength === 0 ? DONE : BODY_LENGTH;
    } else {
      this.state = BODY_CLOSE;
      this.keepAliveFlag = false;
    }
    if (!this.sink.onResponseHead(status, headers, this.keepAliveFlag)) this.paused = true;
  }

  // ---- chunked ----

  /** The chunk-size line, the CRLF after chunk data. */
  private readChunkLine(b: Buffer, pos: number): number {
    const n = b.length;
    while (pos < n) {
      const c = b[pos];
      switch (this.state) {
        case CHUNK_SIZE: {
          const h = HEX[c];
          if (h !== -1) {
            if (++this.hexDigits > MAX_HEX_DIGITS) throw new ResponseError('HPE_INVALID_CHUNK_SIZE', 'chunk size too large');
            this.remaining = this.remaining * 16 + h;
            pos++;
            continue;
          }
          if (this.hexDigits === 0) throw new ResponseError('HPE_INVALID_CHUNK_SIZE', 'invalid chunk size');
          // No whitespace after the size: llhttp refuses "1 ;a" and "1 " too.
          if (c === CR) this.state = CHUNK_SIZE_LF;
          else if (c === 0x3b) this.state = EXT_START;
          else throw new ResponseError('HPE_INVALID_CHUNK_SIZE', 'invalid chunk size');
          pos++;
          continue;
        }
        // Extensions are ignored, but read to the grammar and bounded: a loose grammar
        // is where two parsers in a chain start to disagree about where a chunk begins.
        case EXT_START:
          if (TOKEN[c] !== 1) throw new ResponseError('HPE_INVALID_CHUNK_SIZE', 'invalid chunk extension');
          this.state = EXT_NAME;
          break;
        case EXT_NAME:
        case EXT_TOKEN:
          if (TOKEN[c] === 1) break;
          if (c === 0x3d && this.state === EXT_NAME) this.state = EXT_VALUE_START;
          else if (c === 0x3b) this.state = EXT_START;
          else if (c === CR) this.state = CHUNK_SIZE_LF;
          else throw new ResponseError('HPE_INVALID_CHUNK_SIZE', 'invalid chunk extension');
          break;
        case EXT_VALUE_START:
          if (c === 0x22) this.state = EXT_QUOTED;
          else if (TOKEN[c] === 1) this.state = EXT_TOKEN;
          else throw new ResponseError('HPE_INVALID_CHUNK_SIZE', 'invalid chunk extension');
          break;
        case EXT_QUOTED:
          if (QDTEXT[c] === 1) break;
          if (c === 0x5c) this.state = EXT_QUOTED_PAIR;
          else if (c === 0x22) this.state = EXT_AFTER_QUOTED;
          else throw new ResponseError('HPE_INVALID_CHUNK_SIZE', 'invalid chunk extension');
          break;
        case EXT_QUOTED_PAIR:
          if (QUOTED_PAIR_BYTE[c] !== 1) throw new ResponseError('HPE_INVALID_CHUNK_SIZE', 'invalid chunk extension');
          this.state = EXT_QUOTED;
          break;
        case EXT_AFTER_QUOTED:
          if (c === 0x3b) this.state = EXT_START;
          else if (c === CR) this.state = CHUNK_SIZE_LF;
          else throw new ResponseError('HPE_INVALID_CHUNK_SIZE', 'invalid chunk extension');
          break;
        case CHUNK_SIZE_LF:
          if (c !== LF) throw new ResponseError('HPE_LF_EXPECTED', 'expected LF after the chunk size');
          pos++;
          this.hexDigits = 0;
          if (this.remaining === 0) {
            this.state = TRAILERS;
            return pos;
          }
          this.state = CHUNK_DATA;
          return pos;
        case CHUNK_DATA_CR:
          if (c !== CR) throw new ResponseError('HPE_CR_EXPECTED', 'expected CRLF after chunk data');
          this.state = CHUNK_DATA_LF;
          pos++;
          continue;
        case CHUNK_DATA_LF:
          if (c !== LF) throw new ResponseError('HPE_LF_EXPECTED', 'expected CRLF after chunk data');
          this.state = CHUNK_SIZE;
          this.remaining = 0;
          pos++;
          continue;
        default:
          return pos;
      }
      // An extension byte was read (the cases above that break out of the switch).
      if (++this.extraBytes > this.maxHead) throw new ResponseError('HPE_CHUNK_EXTENSIONS_OVERFLOW', 'chunk extensions too large');
      pos++;
    }
    return pos;
  }

  /** Trailer fields after the last chunk, up to the empty line. */
  private readTrailers(buf: Buffer, pos: number): number {
    const parts = this.trailerParts;
    const joined = parts === null ? (pos === 0 ? buf : buf.subarray(pos)) : Buffer.concat([...parts, buf.subarray(pos)]);
    const prev = parts === null ? 0 : parts.reduce((s, p) => s + p.length, 0);
    // No trailers: the empty line at once (the common case).
    if (joined.length >= 2 && joined[0] === CR && joined[1] === LF) {
      this.trailerParts = null;
      this.state = DONE;
      this.finishChunked(buf, null, pos + 2 - prev);
      return buf.length;
    }
    if (joined.length < 2) {
      this.trailerParts = [joined];
      return buf.length;
    }
    const at = joined.indexOf(CRLFCRLF);
    if (at === -1) {
      this.checkPartialHead(joined, 0, joined.length);
      if (joined.length > this.maxHead) throw new ResponseError('HPE_HEADER_OVERFLOW', 'response trailers too large');
      this.trailerParts = [joined];
      return buf.length;
    }
    const end = at + 4;
    if (end > this.maxHead) throw new ResponseError('HPE_HEADER_OVERFLOW', 'response trailers too large');
    // A copy: the trailers outlive the chunk they came in (the sink may keep them).
    const fields = parseFields(Buffer.from(joined.subarray(0, end)), 0, end - 2);
    const trailers = fields.length === 0 ? null : fields;
    this.trailerParts = null;
    this.state = DONE;
    this.finishChunked(buf, trailers, pos + end - prev);
    return buf.length;
  }

  private finishChunked(buf: Buffer, trailers: Buffer[] | null, next: number): void {
    if (this.paused) {
      // Cannot happen (the sink is not called between the last chunk and here), but a
      // pause must never lose the end.
      this.held = next < buf.length ? buf.subarray(next) : Buffer.alloc(0);
      return;
    }
    this.finish(buf, trailers, next);
  }
}

/** Header fields in b[i, end) (end at the CRLF of the empty line): Buffer pairs. */
function parseFields(b: Buffer, i: number, end: number): Buffer[] {
  const out: Buffer[] = [];
  while (i < end) {
    const nameStart = i;
    while (TOKEN[b[i]] === 1) i++;
    if (i === nameStart || b[i] !== 0x3a) throw new ResponseError('HPE_INVALID_HEADER_TOKEN', 'invalid trailer name');
    const nameEnd = i;
    i++;
    while (b[i] === SP || b[i] === HTAB) i++;
    const valueStart = i;
    let valueEnd = i;
    while (b[i] !== CR) {
      const c = b[i];
      if (VALUE[c] === 0) throw new ResponseError('HPE_INVALID_HEADER_TOKEN', 'invalid character in a trailer value');
      i++;
      if (c !== SP && c !== HTAB) valueEnd = i;
    }
    if (b[i + 1] !== LF) throw new ResponseError('HPE_CR_EXPECTED', 'bare CR in the trailers');
    i += 2;
    // Framing and connection fields have no place in trailers (RFC 9110 §6.5.1): llhttp
    // refuses a Content-Length there and applies a Connection: close, so a trailer could
    // change what the response is after the gateway has forwarded its head.
    const nameLen = nameEnd - nameStart;
    if (nameLen === 14 && eqLower(b, nameStart, nameEnd, N_CONTENT_LENGTH)) throw new ResponseError('HPE_INVALID_CONTENT_LENGTH', 'Content-Length in the trailers');
    if (
      (nameLen === 17 && eqLower(b, nameStart, nameEnd, N_TRANSFER_ENCODING)) ||
      (nameLen === 10 && eqLower(b, nameStart, nameEnd, N_CONNECTION)) ||
      (nameLen === 16 && eqLower(b, nameStart, nameEnd, N_PROXY_CONNECTION))
    ) {
      throw new ResponseError('HPE_INVALID_HEADER_TOKEN', 'a framing field in the trailers');
    }
    out.push(b.subarray(nameStart, nameEnd), b.subarray(valueStart, valueEnd));
  }
  return out;
}

/** A Content-Length value: digits only, at most 15 of them (below 2^53). */
function parseLength(b: Buffer, start: number, end: number): number {
  if (end === start || end - start > 15) throw new ResponseError('HPE_INVALID_CONTENT_LENGTH', 'invalid Content-Length');
  let n = 0;
  for (let i = start; i < end; i++) {
    const d = b[i] - 0x30;
    if (d < 0 || d > 9) throw new ResponseError('HPE_INVALID_CONTENT_LENGTH', 'invalid Content-Length');
    n = n * 10 + d;
  }
  return n;
}

/** Whether the comma-separated list in b[start, end) holds `token` (case-insensitive). */
function hasToken(b: Buffer, start: number, end: number, token: Buffer): boolean {
  let i = start;
  while (i < end) {
    while (i < end && (b[i] === SP || b[i] === HTAB || b[i] === 0x2c)) i++;
    const s = i;
    while (i < end && b[i] !== 0x2c) i++;
    let e = i;
    while (e > s && (b[e - 1] === SP || b[e - 1] === HTAB)) e--;
    if (eqLower(b, s, e, token)) return true;
  }
  return false;
}

/** Whether the last element of the comma-separated list in b[start, end) is `token`. */
function lastTokenIs(b: Buffer, start: number, end: number, token: Buffer): boolean {
  let s = end;
  while (s > start && b[s - 1] !== 0x2c) s--;
  while (s < end && (b[s] === SP || b[s] === HTAB)) s++;
  return eqLower(b, s, end, token);
}

/** `timeout=N` in a Keep-Alive value, in seconds; -1 when absent or invalid. */
function keepAliveTimeout(b: Buffer, start: number, end: number): number {
  let i = start;
  while (i < end) {
    while (i < end && (b[i] === SP || b[i] === HTAB || b[i] === 0x2c)) i++;
    const s = i;
    while (i < end && b[i] !== 0x3d && b[i] !== 0x2c) i++;
    let e = i;
    while (e > s && (b[e - 1] === SP || b[e - 1] === HTAB)) e--;
    if (i < end && b[i] === 0x3d && eqLower(b, s, e, V_TIMEOUT)) {
      i++;
      while (i < end && (b[i] === SP || b[i] === HTAB)) i++;
      let n = 0;
      let digits = 0;
      while (i < end && b[i] >= 0x30 && b[i] <= 0x39 && digits < 9) {
        n = n * 10 + (b[i] - 0x30);
        i++;
        digits++;
      }
      return digits === 0 ? -1 : n;
    }
    while (i < end && b[i] !== 0x2c) i++;
  }
  return -1;
}

// Node's own HTTP/1 parser (llhttp, through the binding node:http uses) as a reference
// for the differential tests of gateway/h1/request.ts and gateway/h1/response.ts.
//
// The binding is reached through the internal module _http_common, which node:http
// itself imports: it works unchanged on Node 20 and 24 and, unlike
// process.binding('http_parser'), prints no deprecation warning. The parser runs with
// lenient flags off (kLenientNone), i.e. what a node:http server does without
// --insecure-http-parser.

import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

interface Binding {
  HTTPParser: {
    new (): NativeParser;
    REQUEST: number;
    RESPONSE: number;
    kOnMessageBegin: number;
    kOnHeaders: number;
    kOnHeadersComplete: number;
    kOnBody: number;
    kOnMessageComplete: number;
    kLenientNone: number;
  };
}
interface NativeParser {
  [callback: number]: unknown;
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | (Error & { code?: string; reason?: string; bytesParsed?: number });
  /** The connection ended: completes a close-delimited body, refuses an unfinished message. */
  finish(): undefined | (Error & { code?: string });
  close(): void;
}

const { HTTPParser } = require('_http_common') as Binding;

// kOnHeadersComplete reports the method as llhttp's llhttp_method number. node:http maps
// it with the binding's allMethods, which _http_common does not export (its `methods` is
// the sorted http.METHODS), so the table is spelled out here; the numbers are llhttp's
// public enum and do not change between releases.
const LLHTTP_METHODS = [
  'DELETE', 'GET', 'HEAD', 'POST', 'PUT', 'CONNECT', 'OPTIONS', 'TRACE', 'COPY', 'LOCK', 'MKCOL',
  'MOVE', 'PROPFIND', 'PROPPATCH', 'SEARCH', 'UNLOCK', 'BIND', 'REBIND', 'UNBIND', 'ACL', 'REPORT',
  'MKACTIVITY', 'CHECKOUT', 'MERGE', 'M-SEARCH', 'NOTIFY', 'SUBSCRIBE', 'UNSUBSCRIBE', 'PATCH',
  'PURGE', 'MKCALENDAR', 'LINK', 'UNLINK', 'SOURCE', 'PRI', 'DESCRIBE', 'ANNOUNCE', 'SETUP', 'PLAY',
  'PAUSE', 'TEARDOWN', 'GET_PARAMETER', 'SET_PARAMETER', 'REDIRECT', 'RECORD', 'FLUSH', 'QUERY',
];

export interface OracleMessage {
  method: string;
  url: string;
  versionMajor: number;
  versionMinor: number;
  rawHeaders: string[];
  body: Buffer;
  upgrade: boolean;
  keepAlive: boolean;
  /** Trailer pairs, if any arrived (llhttp hands them over like late headers). */
  trailers: string[];
}

export interface OracleResult {
  /** Messages llhttp finished, in order. */
  messages: OracleMessage[];
  /** llhttp's error code (e.g. 'HPE_INVALID_METHOD') when it refused the stream. */
  error: string | undefined;
  /** A message had begun and not finished when the input ended (and no error). */
  pending: boolean;
  /**
   * The unfinished message is an upgrade request (so in its body). Node's binding hides
   * llhttp's errors once the upgrade flag is set, so there "pending" may be a refusal.
   */
  pendingUpgrade: boolean;
  /** After an upgrade message: the bytes llhttp left unparsed, which belong to the new protocol. */
  rest: Buffer | undefined;
}

/**
 * Feeds `chunks` to a fresh strict llhttp request parser, one execute() per chunk, and
 * reports what it made of them. `maxHeaderSize` 0 means Node's default (16 KiB).
 */
export function llhttpParse(chunks: Buffer[], maxHeaderSize = 0): OracleResult {
  const parser = new HTTPParser();
  const messages: OracleMessage[] = [];
  let current: OracleMessage | undefined;
  let pendingHeaders: string[] = [];
  let pendingUrl = '';
  let bodyParts: Buffer[] = [];
  let begun = false;
  let upgraded = false;

  parser[HTTPParser.kOnMessageBegin] = () => {
    begun = true;
  };
  // Node flushes headers early (every 32 pairs) and hands trailers over the same way.
  parser[HTTPParser.kOnHeaders] = (headers: string[], url: string) => {
    pendingHeaders.push(...headers);
    pendingUrl += url;
  };
  parser[HTTPParser.kOnHeadersComplete] = (
    versionMajor: number,
    versionMinor: number,
    headers: string[] | undefined,
    method: number,
    url: string | undefined,
    _statusCode: number,
    _statusMessage: string,
    upgrade: boolean,
    shouldKeepAlive: boolean,
  ) => {
    begun = true;
    const rawHeaders = headers ? pendingHeaders.concat(headers) : pendingHeaders;
    current = {
      method: LLHTTP_METHODS[method] ?? `#${method}`,
      url: url ? pendingUrl + url : pendingUrl,
      versionMajor,
      versionMinor,
      rawHeaders,
      body: Buffer.alloc(0),
      upgrade: Boolean(upgrade),
      keepAlive: Boolean(shouldKeepAlive),
      trailers: [],
    };
    pendingHeaders = [];
    pendingUrl = '';
    bodyParts = [];
    return 0;
  };
  // Node 20 passes the body slice itself; older releases passed (buffer, start, length).
  parser[HTTPParser.kOnBody] = (b: Buffer, start?: number, len?: number) => {
    bodyParts.push(Buffer.from(start === undefined ? b : b.subarray(start, start + (len ?? 0))));
  };
  parser[HTTPParser.kOnMessageComplete] = () => {
    if (current === undefined) return;
    current.body = Buffer.concat(bodyParts);
    current.trailers = pendingHeaders;
    pendingHeaders = [];
    // Node's trailer flush repeats the URL; node:http drops it here too.
    pendingUrl = '';
    bodyParts = [];
    messages.push(current);
    if (current.upgrade) upgraded = true;
    current = undefined;
    begun = false;
  };

  parser.initialize(HTTPParser.REQUEST, {}, maxHeaderSize, HTTPParser.kLenientNone);
  let error: string | undefined;
  let rest: Buffer | undefined;
  try {
    for (let c = 0; c < chunks.length; c++) {
      const chunk = chunks[c];
      if (upgraded) {
        rest = Buffer.concat([rest ?? Buffer.alloc(0), chunk]);
        continue;
      }
      const ret = parser.execute(chunk);
      if (typeof ret !== 'number') {
        error = ret.code ?? 'HPE_UNKNOWN';
        break;
      }
      if (upgraded) rest = Buffer.from(chunk.subarray(ret));
      else if (ret < chunk.length) {
        // Node's binding reports no error once llhttp has set its upgrade flag (it
        // returns the bytes parsed instead), so a refusal inside an upgrade request's
        // body shows only as a short count.
        error = 'HPE_SHORT_READ_IN_UPGRADE';
        break;
      }
    }
  } finally {
    parser.close();
  }
  const pending = error === undefined && !upgraded && begun;
  return { messages, error, pending, pendingUpgrade: pending && current?.upgrade === true, rest: upgraded ? (rest ?? Buffer.alloc(0)) : undefined };
}

// ---------------------------------------------------------------------------------------
// Response mode, the reference for gateway/h1/response.ts (undici parses responses with
// the same llhttp, in its own wasm build).

export interface OracleResponse {
  status: number;
  versionMajor: number;
  versionMinor: number;
  rawHeaders: string[];
  body: Buffer;
  /**
   * llhttp's should-keep-alive as onHeadersComplete reports it. For a response to HEAD
   * this is computed before llhttp learns the body is skipped, so a HEAD response without
   * framing headers reads as "until EOF, not kept" although llhttp then goes on reading
   * the connection; `headSkipped` marks those.
   */
  keepAlive: boolean;
  /** onHeadersComplete told llhttp to skip the body because the request was HEAD. */
  headSkipped: boolean;
  trailers: string[];
  /** Bytes of the stream consumed when the message completed (exact when fed byte by byte). */
  end: number;
}

export interface OracleResponseResult {
  /** Every message llhttp finished, 1xx interim responses included, in order. */
  messages: OracleResponse[];
  /** llhttp's error code when it refused the stream (or the EOF: HPE_INVALID_EOF_STATE). */
  error: string | undefined;
  /** Bytes came after a response that does not keep the connection (llhttp refuses them). */
  afterClose: boolean;
  /** A 101 arrived: llhttp stops parsing there (the rest is another protocol). */
  upgraded: boolean;
  /** A message had begun and not finished when the input ended (no EOF given, no error). */
  pending: boolean;
}

/**
 * Feeds `chunks` to a fresh strict llhttp response parser, one execute() per chunk, then
 * signals the end of the connection when `eof`. `methods[i]` is the method of the request
 * the i-th final (non-1xx) response answers; past the list, GET. llhttp cannot know the
 * method, so, as node:http's client does (parserOnIncomingClient), onHeadersComplete
 * returns 1 — skip the body — for a HEAD and for a 1xx; llhttp itself knows that 204 and
 * 304 have no body.
 */
export function llhttpParseResponses(chunks: Buffer[], methods: string[], eof: boolean, maxHeaderSize = 0): OracleResponseResult {
  const parser = new HTTPParser();
  const messages: OracleResponse[] = [];
  let current: OracleResponse | undefined;
  let pendingHeaders: string[] = [];
  let bodyParts: Buffer[] = [];
  let begun = false;
  let finals = 0;
  let consumed = 0;
  let upgraded = false;

  parser[HTTPParser.kOnMessageBegin] = () => {
    begun = true;
  };
  parser[HTTPParser.kOnHeaders] = (headers: string[]) => {
    pendingHeaders.push(...headers);
  };
  parser[HTTPParser.kOnHeadersComplete] = (
    versionMajor: number,
    versionMinor: number,
    headers: string[] | undefined,
    _method: number,
    _url: string | undefined,
    statusCode: number,
    _statusMessage: string,
    upgrade: boolean,
    shouldKeepAlive: boolean,
  ) => {
    begun = true;
    current = {
      status: statusCode,
      versionMajor,
      versionMinor,
      rawHeaders: headers ? pendingHeaders.concat(headers) : pendingHeaders,
      body: Buffer.alloc(0),
      keepAlive: Boolean(shouldKeepAlive),
      headSkipped: false,
      trailers: [],
      end: -1,
    };
    pendingHeaders = [];
    bodyParts = [];
    if (upgrade || statusCode === 101) {
      upgraded = true;
      return 2;
    }
    if (statusCode < 200) return 1;
    const method = methods[finals++] ?? 'GET';
    if (method !== 'HEAD') return 0;
    current.headSkipped = true;
    return 1;
  };
  parser[HTTPParser.kOnBody] = (b: Buffer, start?: number, len?: number) => {
    bodyParts.push(Buffer.from(start === undefined ? b : b.subarray(start, start + (len ?? 0))));
  };
  parser[HTTPParser.kOnMessageComplete] = () => {
    if (current === undefined) return;
    current.body = Buffer.concat(bodyParts);
    current.trailers = pendingHeaders;
    current.end = consumed;
    pendingHeaders = [];
    bodyParts = [];
    messages.push(current);
    current = undefined;
    begun = false;
  };

  parser.initialize(HTTPParser.RESPONSE, {}, maxHeaderSize, HTTPParser.kLenientNone);
  let error: string | undefined;
  try {
    for (const chunk of chunks) {
      consumed += chunk.length;
      const ret = parser.execute(chunk);
      if (typeof ret !== 'number') {
        error = ret.code ?? 'HPE_UNKNOWN';
        break;
      }
      if (upgraded) break;
      if (ret < chunk.length) {
        error = 'HPE_SHORT_READ';
        break;
      }
    }
    if (error === undefined && !upgraded && eof) {
      const ret = parser.finish();
      if (ret !== undefined) error = ret.code ?? 'HPE_UNKNOWN';
    }
  } finally {
    parser.close();
  }
  const last = messages[messages.length - 1];
  const afterClose = error === 'HPE_CLOSED_CONNECTION' && last !== undefined && !last.keepAlive;
  return { messages, error: afterClose ? undefined : error, afterClose, upgraded, pending: error === undefined && !upgraded && !eof && begun };
}

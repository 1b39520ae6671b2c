// Node's own HTTP/1 parser (llhttp, through the binding node:http uses) as a reference
// for the differential test of gateway/h1/request.ts.
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

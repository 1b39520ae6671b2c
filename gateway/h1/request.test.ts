import { describe, expect, it } from 'vitest';
import { RequestError, RequestReader, type RequestHead, type RequestLimits } from './request.js';

const LIMITS: RequestLimits = { maxHeaderSize: 16 * 1024, maxHeaderCount: 100 };

interface Parsed {
  head: RequestHead;
  body: string;
  bodyEvents: number;
  trailers: string[] | undefined;
}

/** Feeds `input` in pieces of `step` bytes and drains events after each; returns messages or the error. */
function parse(input: string, step = Infinity, limits = LIMITS): { messages: Parsed[]; error?: RequestError; reader: RequestReader } {
  const bytes = Buffer.from(input, 'latin1');
  const reader = new RequestReader(limits);
  const messages: Parsed[] = [];
  let current: Parsed | undefined;
  try {
    for (let at = 0; at < bytes.length; at += step) {
      reader.push(bytes.subarray(at, Math.min(bytes.length, at + step)));
      for (let ev = reader.next(); ev !== undefined; ev = reader.next()) {
        if (ev.type === 'head') current = { head: ev.head, body: '', bodyEvents: 0, trailers: undefined };
        else if (ev.type === 'body') {
          current!.body += ev.chunk.toString('latin1');
          current!.bodyEvents++;
        } else {
          current!.trailers = ev.trailers;
          messages.push(current!);
          current = undefined;
        }
      }
    }
  } catch (err) {
    if (!(err instanceof RequestError)) throw err;
    return { messages, error: err, reader };
  }
  return { messages, reader };
}

const CRLF = '\r\n';

describe('RequestReader accepts well-formed requests', () => {
  const cases: Array<{ name: string; input: string; check: (m: Parsed[]) => void }> = [
    {
      name: 'a GET without a body ends right after its head',
      input: 'GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n',
      check: ([m]) => {
        expect(m.head).toMatchObject({ method: 'GET', target: '/a?b=c', minor: 1, contentLength: -1, chunked: false, keepAlive: true, upgrade: false });
        expect(m.head.rawHeaders).toEqual(['Host', 'x']);
        expect(m.body).toBe('');
        expect(m.trailers).toBeUndefined();
      },
    },
    {
      name: 'header values lose leading and trailing OWS but keep inner whitespace',
      input: 'GET / HTTP/1.1\r\nX-A: \t a  b \t\r\nX-B:\r\nX-C:c\r\n\r\n',
      check: ([m]) => expect(m.head.rawHeaders).toEqual(['X-A', 'a  b', 'X-B', '', 'X-C', 'c']),
    },
    {
      name: 'obs-text in a value is kept byte for byte as latin1',
      input: 'GET / HTTP/1.1\r\nX: caf\xe9\r\n\r\n',
      check: ([m]) => expect(m.head.rawHeaders[1]).toBe('caf\xe9'),
    },
    {
      name: 'a Content-Length body is delivered',
      input: 'POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello',
      check: ([m]) => {
        expect(m.head.contentLength).toBe(5);
        expect(m.body).toBe('hello');
      },
    },
    {
      name: 'a chunked body with extensions and trailers is delivered',
      input: 'POST / HTTP/1.1\r\nTransfer-Encoding: gzip, CHUNKED\r\n\r\n3;a=b;c="q\\"x";d\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Sum: 1\r\nX-T:  2 \r\n\r\n',
      check: ([m]) => {
        expect(m.head.chunked).toBe(true);
        expect(m.body).toBe('abc0123456789');
        expect(m.trailers).toEqual(['X-Sum', '1', 'X-T', '2']);
      },
    },
    {
      name: 'a chunked body without trailers ends with an empty trailer list',
      input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      check: ([m]) => expect(m.trailers).toEqual([]),
    },
    {
      name: 'leading empty lines before a request are skipped, as llhttp does',
      input: '\r\n\r\nGET / HTTP/1.1\r\n\r\n',
      check: ([m]) => expect(m.head.target).toBe('/'),
    },
    {
      name: 'pipelined requests come out one after the other',
      input: 'GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 2\r\n\r\nokGET /3 HTTP/1.1\r\n\r\n',
      check: (m) => expect(m.map((x) => [x.head.target, x.body])).toEqual([['/1', ''], ['/2', 'ok'], ['/3', '']]),
    },
    {
      name: 'HTTP/1.0 keeps the connection only with keep-alive',
      input: 'GET /1 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n',
      check: (m) => expect(m.map((x) => [x.head.minor, x.head.keepAlive])).toEqual([[0, true], [0, false]]),
    },
    {
      name: 'HTTP/1.1 closes with the close token among others',
      input: 'GET / HTTP/1.1\r\nConnection: foo, CLOSE\r\n\r\n',
      check: ([m]) => expect(m.head.keepAlive).toBe(false),
    },
    {
      name: 'an upgrade needs both the Connection token and the Upgrade header',
      input: 'GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n',
      check: ([m]) => expect(m.head.upgrade).toBe(true),
    },
    {
      name: 'an Upgrade header alone is no upgrade',
      input: 'GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n',
      check: ([m]) => expect(m.head.upgrade).toBe(false),
    },
    {
      name: 'CONNECT with an authority-form target is an upgrade',
      input: 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n',
      check: ([m]) => expect(m.head).toMatchObject({ method: 'CONNECT', target: 'example.com:443', upgrade: true }),
    },
    {
      name: 'absolute-form and asterisk-form targets are accepted as syntax',
      input: 'GET http://a.example:8080/x?y HTTP/1.1\r\n\r\nOPTIONS * HTTP/1.1\r\n\r\n',
      check: (m) => expect(m.map((x) => x.head.target)).toEqual(['http://a.example:8080/x?y', '*']),
    },
    {
      name: 'Expect: 100-continue is recognised in any case',
      input: 'POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nx',
      check: ([m]) => expect(m.head.expectContinue).toBe(true),
    },
    {
      name: 'Content-Length 0 means no body',
      input: 'POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n\r\n',
      check: (m) => expect(m.map((x) => x.head.contentLength)).toEqual([0, -1]),
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const whole = parse(c.input);
      expect(whole.error).toBeUndefined();
      c.check(whole.messages);
      // The same stream split at every byte gives the same result.
      const bytewise = parse(c.input, 1);
      expect(bytewise.error).toBeUndefined();
      c.check(bytewise.messages);
      expect(bytewise.messages.map((m) => [m.head.rawHeaders, m.body, m.trailers])).toEqual(
        whole.messages.map((m) => [m.head.rawHeaders, m.body, m.trailers]),
      );
    });
  }
});

describe('RequestReader refuses malformed requests', () => {
  const cases: Array<{ name: string; input: string; status: number; reason?: string }> = [
    { name: 'obs-fold', input: 'GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n', status: 400, reason: 'OBS_FOLD' },
    { name: 'a bare LF ending the request line', input: 'GET / HTTP/1.1\nHost: a\r\n\r\n', status: 400 },
    { name: 'a bare LF ending a header line', input: 'GET / HTTP/1.1\r\nHost: a\n\r\n', status: 400, reason: 'BARE_LF' },
    { name: 'a bare CR inside a header line', input: 'GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n', status: 400, reason: 'BARE_CR' },
    { name: 'whitespace before the colon', input: 'GET / HTTP/1.1\r\nHost : a\r\n\r\n', status: 400, reason: 'SPACE_BEFORE_COLON' },
    { name: 'a non-token byte in a name', input: 'GET / HTTP/1.1\r\nHo(st: a\r\n\r\n', status: 400, reason: 'INVALID_HEADER_NAME' },
    { name: 'an empty name', input: 'GET / HTTP/1.1\r\n: a\r\n\r\n', status: 400, reason: 'INVALID_HEADER_NAME' },
    { name: 'a control byte in a value', input: 'GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n', status: 400, reason: 'INVALID_HEADER_VALUE' },
    { name: 'DEL in a value', input: 'GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n', status: 400, reason: 'INVALID_HEADER_VALUE' },
    { name: 'a non-token method', input: 'G(T / HTTP/1.1\r\n\r\n', status: 400, reason: 'INVALID_METHOD' },
    { name: 'an unknown method', input: 'BREW / HTTP/1.1\r\n\r\n', status: 501, reason: 'UNKNOWN_METHOD' },
    { name: 'a lowercase method', input: 'get / HTTP/1.1\r\n\r\n', status: 501 },
    { name: 'the HTTP/2 preface', input: 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', status: 501 },
    { name: 'two spaces before the target', input: 'GET  / HTTP/1.1\r\n\r\n', status: 400 },
    { name: 'an HTTP/0.9 request line', input: 'GET /\r\n\r\n', status: 400, reason: 'MISSING_VERSION' },
    { name: 'an HTTP/0.9 request line ending in a bare LF', input: 'GET /\nHost: a\r\n\r\n', status: 400, reason: 'MISSING_VERSION' },
    { name: 'HTTP/2.0', input: 'GET / HTTP/2.0\r\n\r\n', status: 505 },
    { name: 'HTTP/0.9 with a version', input: 'GET / HTTP/0.9\r\n\r\n', status: 505 },
    { name: 'HTTP/1.2', input: 'GET / HTTP/1.2\r\n\r\n', status: 505 },
    { name: 'a lowercase protocol name', input: 'GET / http/1.1\r\n\r\n', status: 400, reason: 'INVALID_VERSION' },
    { name: 'a two-digit minor version', input: 'GET / HTTP/1.10\r\n\r\n', status: 400, reason: 'INVALID_VERSION' },
    { name: 'a target of another form', input: 'GET foo HTTP/1.1\r\n\r\n', status: 400, reason: 'INVALID_TARGET' },
    { name: 'an absolute-form target without a host', input: 'GET http:///x HTTP/1.1\r\n\r\n', status: 400, reason: 'INVALID_TARGET' },
    { name: 'CONNECT with an origin-form target', input: 'CONNECT /x HTTP/1.1\r\n\r\n', status: 400, reason: 'INVALID_TARGET' },
    { name: 'CONNECT with a body', input: 'CONNECT a:1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc', status: 400, reason: 'CONNECT_WITH_BODY' },
    { name: 'Content-Length with Transfer-Encoding', input: 'POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n', status: 400, reason: 'CONTENT_LENGTH_WITH_TRANSFER_ENCODING' },
    { name: 'duplicate equal Content-Length', input: 'POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc', status: 400, reason: 'DUPLICATE_CONTENT_LENGTH' },
    { name: 'a Content-Length list', input: 'POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc', status: 400, reason: 'INVALID_CONTENT_LENGTH' },
    { name: 'a signed Content-Length', input: 'POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc', status: 400, reason: 'INVALID_CONTENT_LENGTH' },
    { name: 'an empty Content-Length', input: 'POST / HTTP/1.1\r\nContent-Length:\r\n\r\n', status: 400, reason: 'INVALID_CONTENT_LENGTH' },
    { name: 'a Content-Length above 2^53-1', input: 'POST / HTTP/1.1\r\nContent-Length: 9007199254740992\r\n\r\n', status: 400, reason: 'INVALID_CONTENT_LENGTH' },
    { name: 'chunked not last', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n', status: 400, reason: 'INVALID_TRANSFER_ENCODING' },
    { name: 'chunked twice', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n', status: 400, reason: 'INVALID_TRANSFER_ENCODING' },
    { name: 'chunked twice over two headers', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', status: 400 },
    { name: 'a coding that only ends in chunked', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n', status: 400, reason: 'INVALID_TRANSFER_ENCODING' },
    { name: 'an empty Transfer-Encoding element', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: gzip, , chunked\r\n\r\n0\r\n\r\n', status: 400 },
    { name: 'Transfer-Encoding in HTTP/1.0', input: 'POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', status: 400, reason: 'TRANSFER_ENCODING_HTTP10' },
    { name: 'a signed chunk size', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n', status: 400, reason: 'INVALID_CHUNK_SIZE' },
    { name: 'a 0x chunk size', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n', status: 400, reason: 'INVALID_CHUNK_SIZE' },
    { name: 'whitespace after a chunk size', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n', status: 400, reason: 'INVALID_CHUNK_SIZE' },
    { name: 'an overflowing chunk size', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n20000000000000\r\n', status: 400, reason: 'INVALID_CHUNK_SIZE' },
    { name: 'a chunk extension without a name', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;=x\r\nabc\r\n0\r\n\r\n', status: 400, reason: 'INVALID_CHUNK_EXTENSION' },
    { name: 'an unterminated quoted chunk extension', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;a="x\r\nabc\r\n0\r\n\r\n', status: 400, reason: 'INVALID_CHUNK_EXTENSION' },
    { name: 'chunk data longer than its size', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n', status: 400, reason: 'INVALID_CHUNK' },
    { name: 'a bare LF after a chunk size', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n', status: 400 },
    { name: 'obs-fold in trailers', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n', status: 400, reason: 'OBS_FOLD' },
    { name: 'Content-Length in trailers', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 1\r\n\r\n', status: 400, reason: 'FRAMING_TRAILER' },
    { name: 'HTAB after a Content-Length value (llhttp 9.3 refuses it)', input: 'POST / HTTP/1.1\r\nContent-Length: 1\t\r\n\r\nx', status: 400, reason: 'INVALID_CONTENT_LENGTH' },
    { name: 'HTAB after a final chunked', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n', status: 400, reason: 'INVALID_TRANSFER_ENCODING' },
    { name: 'Transfer-Encoding after Content-Length before the head ends', input: 'POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n', status: 400, reason: 'CONTENT_LENGTH_WITH_TRANSFER_ENCODING' },
    { name: 'a method no known method starts with, before its end', input: 'XY', status: 501, reason: 'UNKNOWN_METHOD' },
    { name: 'a version of the wrong shape, before its end', input: 'GET / HTTX', status: 400, reason: 'INVALID_VERSION' },
    { name: 'an empty chunk extension value', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;a=\r\nabc\r\n0\r\n\r\n', status: 400, reason: 'INVALID_CHUNK_EXTENSION' },
    { name: 'Connection in trailers', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nConnection: close\r\n\r\n', status: 400, reason: 'FRAMING_TRAILER' },
    { name: 'data after a request with Proxy-Connection: close (read like Connection, as llhttp does)', input: 'GET / HTTP/1.1\r\nProxy-Connection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n', status: 400, reason: 'DATA_AFTER_CLOSE' },
    { name: 'data after a request with Connection: close', input: 'GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n', status: 400, reason: 'DATA_AFTER_CLOSE' },
  ];
  for (const c of cases) {
    it(`refuses ${c.name}`, () => {
      for (const step of [Infinity, 1, 7]) {
        const r = parse(c.input, step);
        expect(r.error, `split every ${step} bytes`).toBeInstanceOf(RequestError);
        expect(r.error!.status).toBe(c.status);
        expect(r.error!.code).toBe('BAD_REQUEST');
        if (c.reason) expect(r.error!.reason).toBe(c.reason);
      }
    });
  }
});

describe('RequestReader limits', () => {
  const head = (extra: string) => `GET / HTTP/1.1\r\n${extra}\r\n`;
  it('counts the whole head, final CRLF included, against maxHeaderSize', () => {
    const input = head('X: ' + 'a'.repeat(50) + CRLF);
    const size = Buffer.byteLength(input);
    expect(parse(input, Infinity, { maxHeaderSize: size, maxHeaderCount: 10 }).error).toBeUndefined();
    for (const step of [Infinity, 1]) {
      const r = parse(input, step, { maxHeaderSize: size - 1, maxHeaderCount: 10 });
      expect(r.error?.status).toBe(431);
      expect(r.error?.code).toBe('HEADERS_TOO_LARGE');
    }
  });
  it('refuses an endless header line once it passes the limit, without waiting for its end', () => {
    const r = parse('GET / HTTP/1.1\r\nX: ' + 'a'.repeat(200), 16, { maxHeaderSize: 100, maxHeaderCount: 10 });
    expect(r.error?.status).toBe(431);
  });
  it('gives the same refusal however the head is split when it is both too large and malformed', () => {
    const input = 'GET / HTTP/1.1\r\nX: ' + 'a'.repeat(100) + '\x01\r\n\r\n';
    for (const step of [Infinity, 1, 13]) {
      expect(parse(input, step, { maxHeaderSize: 60, maxHeaderCount: 10 }).error?.status, `split every ${step}`).toBe(431);
    }
  });
  it('refuses more than maxHeaderCount fields with 431', () => {
    const three = head('A: 1\r\nB: 2\r\nC: 3\r\n');
    expect(parse(three, Infinity, { maxHeaderSize: 1000, maxHeaderCount: 3 }).error).toBeUndefined();
    expect(parse(three, Infinity, { maxHeaderSize: 1000, maxHeaderCount: 2 }).error?.status).toBe(431);
  });
  it('applies the same limits to trailers', () => {
    const input = 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\nB: 2\r\n\r\n';
    expect(parse(input, Infinity, { maxHeaderSize: 1000, maxHeaderCount: 1 }).error?.status).toBe(431);
  });
  it('does not count leading empty lines', () => {
    const input = '\r\n'.repeat(20) + 'GET / HTTP/1.1\r\n\r\n';
    expect(parse(input, Infinity, { maxHeaderSize: 18, maxHeaderCount: 1 }).error).toBeUndefined();
  });
});

describe('RequestReader streaming', () => {
  it('hands out Content-Length body bytes as soon as they arrive, as views', () => {
    const reader = new RequestReader(LIMITS);
    reader.push(Buffer.from('POST / HTTP/1.1\r\nContent-Length: 6\r\n\r\nab'));
    expect(reader.next()?.type).toBe('head');
    expect(reader.midRequest).toBe(true);
    const first = reader.next();
    expect(first?.type === 'body' && first.chunk.toString()).toBe('ab');
    expect(reader.next()).toBeUndefined();
    const piece = Buffer.from('cdef');
    reader.push(piece);
    const second = reader.next();
    expect(second?.type === 'body' && second.chunk.buffer).toBe(piece.buffer);
    expect(reader.next()).toEqual({ type: 'end', trailers: undefined });
    expect(reader.midRequest).toBe(false);
  });
  it('ends an upgrade head at once and hands the rest over', () => {
    const reader = new RequestReader(LIMITS);
    reader.push(Buffer.from('GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00more', 'latin1'));
    const ev = reader.next();
    expect(ev?.type === 'head' && ev.head.upgrade).toBe(true);
    expect(reader.next()).toEqual({ type: 'end', trailers: undefined });
    expect(reader.next()).toBeUndefined();
    expect(reader.buffered).toBe(6);
    expect(reader.rest().toString('latin1')).toBe('\x81\x00more');
    expect(reader.buffered).toBe(0);
  });
  it('keeps pipelined bytes when the caller stops between requests', () => {
    const reader = new RequestReader(LIMITS);
    reader.push(Buffer.from('GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n'));
    expect(reader.next()?.type).toBe('head');
    expect(reader.next()?.type).toBe('end');
    expect(reader.buffered).toBe(19);
    reader.push(Buffer.from('GET /3 HTTP/1.1\r\n\r\n'));
    const targets: string[] = [];
    for (let ev = reader.next(); ev; ev = reader.next()) if (ev.type === 'head') targets.push(ev.head.target);
    expect(targets).toEqual(['/2', '/3']);
  });
  it('is not mid-request while only leading empty lines have arrived', () => {
    const reader = new RequestReader(LIMITS);
    reader.push(Buffer.from('\r\n\r\n'));
    expect(reader.next()).toBeUndefined();
    expect(reader.midRequest).toBe(false);
    reader.push(Buffer.from('G'));
    expect(reader.next()).toBeUndefined();
    expect(reader.midRequest).toBe(true);
  });
  it('throws the same error on every call after a refusal', () => {
    const reader = new RequestReader(LIMITS);
    reader.push(Buffer.from('GET / HTTP/1.1\r\nHost : a\r\n\r\n'));
    let first: unknown;
    try {
      reader.next();
    } catch (err) {
      first = err;
    }
    expect(first).toBeInstanceOf(RequestError);
    reader.push(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    expect(() => reader.next()).toThrow(first as Error);
  });
});

describe('RequestHead.headers', () => {
  it('combines duplicates like node:http IncomingMessage.headers', () => {
    const { messages } = parse(
      'GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\nSet-Cookie: 1\r\nset-cookie: 2\r\nCookie: x=1\r\nCOOKIE: y=2\r\n' +
        'Accept: a\r\naccept: b\r\nUser-Agent: u1\r\nUser-Agent: u2\r\nX-Custom: 1\r\nx-custom: 2\r\n\r\n',
    );
    expect(messages[0].head.headers).toEqual({
      host: 'a',
      'set-cookie': ['1', '2'],
      cookie: 'x=1; y=2',
      accept: 'a, b',
      'user-agent': 'u1',
      'x-custom': '1, 2',
    });
    expect(messages[0].head.headers).toBe(messages[0].head.headers);
  });
});

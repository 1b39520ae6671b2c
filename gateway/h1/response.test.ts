import { describe, expect, it } from 'vitest';
import { ResponseReader, type ResponseSink } from './response.js';

interface Read {
  status: number;
  headers: string[];
  body: string;
  trailers: string[] | null;
  keepAlive: boolean;
  hintMs: number;
  ended: boolean;
  rest: string;
}

/** A sink that records what the reader hands it, optionally pausing at every call. */
class Recorder implements ResponseSink {
  status = 0;
  headers: string[] = [];
  body: Buffer[] = [];
  trailers: string[] | null = null;
  keepAlive = false;
  ended = false;
  constructor(private readonly pauseEvery = false) {}
  onResponseHead(status: number, raw: Buffer[], keepAlive: boolean): boolean {
    this.status = status;
    this.headers = raw.map((b) => b.toString('latin1'));
    this.keepAlive = keepAlive;
    return !this.pauseEvery;
  }
  onResponseBody(chunk: Buffer): boolean {
    this.body.push(Buffer.from(chunk));
    return !this.pauseEvery;
  }
  onResponseEnd(trailers: Buffer[] | null): void {
    this.trailers = trailers === null ? null : trailers.map((b) => b.toString('latin1'));
    this.ended = true;
  }
}

/** Reads `wire` given in `pieces`, then an EOF when asked. */
function read(method: string, pieces: Buffer[], opts: { eof?: boolean; pause?: boolean } = {}): Read {
  const rec = new Recorder(opts.pause);
  const r = new ResponseReader(rec);
  r.expect(method);
  for (const p of pieces) {
    r.push(p);
    while (r.isPaused) r.resume();
  }
  if (opts.eof === true) {
    r.eof();
    while (r.isPaused) r.resume();
  }
  return { status: rec.status, headers: rec.headers, body: Buffer.concat(rec.body).toString('latin1'), trailers: rec.trailers, keepAlive: r.keepAlive, hintMs: r.keepAliveHintMs, ended: rec.ended, rest: r.rest()?.toString('latin1') ?? '' };
}

/** Every way to cut `wire` in two, and byte by byte. */
function splits(wire: Buffer): Buffer[][] {
  const out: Buffer[][] = [[wire]];
  for (let i = 1; i < wire.length; i++) out.push([wire.subarray(0, i), wire.subarray(i)]);
  out.push([...wire].map((b) => Buffer.from([b])));
  return out;
}

interface Valid {
  name: string;
  method?: string;
  wire: string;
  eof?: boolean;
  want: Partial<Read>;
}

const VALID: Valid[] = [
  {
    name: 'content-length body, keep-alive by default in HTTP/1.1',
    wire: 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello',
    want: { status: 200, headers: ['Content-Length', '5', 'X-A', 'b'], body: 'hello', keepAlive: true, ended: true, trailers: null },
  },
  { name: 'no reason phrase', wire: 'HTTP/1.1 204\r\n\r\n', want: { status: 204, body: '', ended: true } },
  { name: 'empty reason phrase', wire: 'HTTP/1.1 200 \r\ncontent-length: 0\r\n\r\n', want: { status: 200, ended: true } },
  { name: 'value whitespace trimmed, empty value kept', wire: 'HTTP/1.1 200 OK\r\nA: \t x y \t\r\nB:\r\ncontent-length: 0\r\n\r\n', want: { headers: ['A', 'x y', 'B', '', 'content-length', '0'], ended: true } },
  { name: 'obs-text in a value', wire: 'HTTP/1.1 200 OK\r\nA: caf\xe9\r\ncontent-length: 0\r\n\r\n', want: { headers: ['A', 'caf\xe9', 'content-length', '0'] } },
  {
    name: 'chunked with extensions and trailers',
    wire: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n1;x;q="a\\"b"\r\n!\r\n0\r\nGrpc-Status: 0\r\nX-T: v\r\n\r\n',
    want: { body: 'hello!', trailers: ['Grpc-Status', '0', 'X-T', 'v'], ended: true, keepAlive: true },
  },
  { name: 'chunked, upper-case hex, no trailers', wire: 'HTTP/1.1 200 OK\r\ntransfer-encoding: CHUNKED\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n', want: { body: '0123456789', trailers: null, ended: true } },
  { name: 'gzip, chunked: chunked last', wire: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n', want: { body: 'z', ended: true } },
  { name: 'close-delimited body ends at EOF and closes', wire: 'HTTP/1.1 200 OK\r\n\r\nuntil the end', eof: true, want: { body: 'until the end', ended: true, keepAlive: false } },
  { name: 'a transfer coding other than chunked: read to the close', wire: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz', eof: true, want: { body: 'zz', ended: true, keepAlive: false } },
  { name: 'HEAD: no body whatever the length says', method: 'HEAD', wire: 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n', want: { body: '', ended: true } },
  { name: '304 has no body', wire: 'HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n', want: { status: 304, body: '', ended: true } },
  { name: '1xx skipped, the final response read', wire: 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok', want: { status: 201, headers: ['Content-Length', '2'], body: 'ok', ended: true } },
  { name: 'Connection: close', wire: 'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n', want: { keepAlive: false, ended: true } },
  { name: 'Connection token list with close', wire: 'HTTP/1.1 200 OK\r\nConnection: foo, Close\r\nContent-Length: 0\r\n\r\n', want: { keepAlive: false } },
  { name: 'HTTP/1.0 closes by default', wire: 'HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx', want: { keepAlive: false, body: 'x', ended: true } },
  { name: 'HTTP/1.0 with keep-alive', wire: 'HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx', want: { keepAlive: true, ended: true } },
  { name: 'Keep-Alive timeout hint', wire: 'HTTP/1.1 200 OK\r\nKeep-Alive: max=100, timeout=5\r\nContent-Length: 0\r\n\r\n', want: { hintMs: 5000, keepAlive: true } },
  { name: 'bytes after the response are kept as rest', wire: 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxEXTRA', want: { body: 'x', rest: 'EXTRA', ended: true } },
];

interface Invalid {
  name: string;
  wire: string;
  code: string;
}

const INVALID: Invalid[] = [
  { name: 'not HTTP', wire: 'HTTX/1.1 200 OK\r\n\r\n', code: 'HPE_INVALID_CONSTANT' },
  { name: 'HTTP/2.0 status line', wire: 'HTTP/2.0 200 OK\r\n\r\n', code: 'HPE_INVALID_CONSTANT' },
  { name: 'HTTP/1.2', wire: 'HTTP/1.2 200 OK\r\n\r\n', code: 'HPE_INVALID_VERSION' },
  { name: 'two-digit status', wire: 'HTTP/1.1 20 OK\r\n\r\n', code: 'HPE_INVALID_STATUS' },
  { name: 'status with a letter', wire: 'HTTP/1.1 2x0 OK\r\n\r\n', code: 'HPE_INVALID_STATUS' },
  { name: 'control character in the reason', wire: 'HTTP/1.1 200 O\x01K\r\n\r\n', code: 'HPE_INVALID_STATUS' },
  { name: 'bare LF line ends', wire: 'HTTP/1.1 200 OK\nContent-Length: 0\n\n', code: 'HPE_LF_EXPECTED' },
  { name: 'bare CR inside a header', wire: 'HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n', code: 'HPE_CR_EXPECTED' },
  { name: 'whitespace before the colon', wire: 'HTTP/1.1 200 OK\r\nA : b\r\n\r\n', code: 'HPE_INVALID_HEADER_TOKEN' },
  { name: 'obs-fold', wire: 'HTTP/1.1 200 OK\r\nA: b\r\n  c\r\n\r\n', code: 'HPE_INVALID_HEADER_TOKEN' },
  { name: 'no colon', wire: 'HTTP/1.1 200 OK\r\nAb\r\n\r\n', code: 'HPE_INVALID_HEADER_TOKEN' },
  { name: 'empty header name', wire: 'HTTP/1.1 200 OK\r\n: b\r\n\r\n', code: 'HPE_INVALID_HEADER_TOKEN' },
  { name: 'NUL in a value', wire: 'HTTP/1.1 200 OK\r\nA: b\x00\r\n\r\n', code: 'HPE_INVALID_HEADER_TOKEN' },
  { name: 'DEL in a value', wire: 'HTTP/1.1 200 OK\r\nA: b\x7f\r\n\r\n', code: 'HPE_INVALID_HEADER_TOKEN' },
  { name: 'content-length not digits', wire: 'HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n', code: 'HPE_INVALID_CONTENT_LENGTH' },
  { name: 'content-length signed', wire: 'HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n', code: 'HPE_INVALID_CONTENT_LENGTH' },
  { name: 'content-length list', wire: 'HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n', code: 'HPE_INVALID_CONTENT_LENGTH' },
  { name: 'content-length empty', wire: 'HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n', code: 'HPE_INVALID_CONTENT_LENGTH' },
  { name: 'duplicate content-length, even identical', wire: 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nx', code: 'HPE_UNEXPECTED_CONTENT_LENGTH' },
  { name: 'content-length with transfer-encoding', wire: 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n', code: 'HPE_UNEXPECTED_CONTENT_LENGTH' },
  { name: 'chunked not last (two headers)', wire: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n', code: 'HPE_INVALID_TRANSFER_ENCODING' },
  { name: 'bad chunk size', wire: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', code: 'HPE_INVALID_CHUNK_SIZE' },
  { name: 'chunk size too large', wire: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\n', code: 'HPE_INVALID_CHUNK_SIZE' },
  { name: 'chunk without its CRLF', wire: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n', code: 'HPE_CR_EXPECTED' },
  { name: 'chunk size line with bare LF', wire: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n', code: 'HPE_INVALID_CHUNK_SIZE' },
  { name: 'bad trailer', wire: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA b\r\n\r\n', code: 'HPE_INVALID_HEADER_TOKEN' },
  { name: '101 without an upgrade asked', wire: 'HTTP/1.1 101 Switching Protocols\r\n\r\n', code: 'HPE_INVALID_STATUS' },
  // Found by the differential test against llhttp (test/h1-response-differential.test.ts):
  { name: 'bare CR before the empty line (the head could never end)', wire: 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\r\n', code: 'HPE_CR_EXPECTED' },
  { name: 'HTAB after the Content-Length', wire: 'HTTP/1.1 200 OK\r\nContent-Length: 1\t\r\n\r\nx', code: 'HPE_INVALID_CONTENT_LENGTH' },
  { name: 'HTAB after chunked (llhttp reads to the close)', wire: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n', code: 'HPE_INVALID_TRANSFER_ENCODING' },
  { name: 'whitespace after the chunk size', wire: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1 ;x\r\nx\r\n0\r\n\r\n', code: 'HPE_INVALID_CHUNK_SIZE' },
  { name: 'chunk extension name followed by a quoted string', wire: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;a"b"\r\nx\r\n0\r\n\r\n', code: 'HPE_INVALID_CHUNK_SIZE' },
  { name: 'whitespace in a chunk extension', wire: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;a = b\r\nx\r\n0\r\n\r\n', code: 'HPE_INVALID_CHUNK_SIZE' },
  { name: 'text after a quoted chunk extension value', wire: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;a="b"c\r\nx\r\n0\r\n\r\n', code: 'HPE_INVALID_CHUNK_SIZE' },
  { name: 'empty Transfer-Encoding', wire: 'HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\nContent-Length: 1\r\n\r\nx', code: 'HPE_INVALID_TRANSFER_ENCODING' },
  { name: 'chunk extension without a name', wire: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;=a\r\nx\r\n0\r\n\r\n', code: 'HPE_INVALID_CHUNK_SIZE' },
  { name: 'Content-Length in the trailers', wire: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 3\r\n\r\n', code: 'HPE_INVALID_CONTENT_LENGTH' },
  { name: 'Connection in the trailers', wire: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nConnection: close\r\n\r\n', code: 'HPE_INVALID_HEADER_TOKEN' },
  { name: 'a 1xx that closes the connection', wire: 'HTTP/1.1 100 Continue\r\nConnection: close\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n', code: 'HPE_CLOSED_CONNECTION' },
  { name: 'an HTTP/1.0 1xx without keep-alive', wire: 'HTTP/1.0 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n', code: 'HPE_CLOSED_CONNECTION' },
  { name: 'head over the limit', wire: `HTTP/1.1 200 OK\r\nA: ${'x'.repeat(20_000)}\r\n\r\n`, code: 'HPE_HEADER_OVERFLOW' },
];

describe('ResponseReader', () => {
  for (const c of VALID) {
    it(`reads: ${c.name} (whole, split at every byte, byte by byte, pausing at every call)`, () => {
      const wire = Buffer.from(c.wire, 'latin1');
      for (const pieces of splits(wire)) {
        for (const pause of [false, true]) {
          const got = read(c.method ?? 'GET', pieces, { eof: c.eof, pause });
          const want = Object.fromEntries(Object.keys(c.want).map((k) => [k, got[k as keyof Read]]));
          expect(want, `${pieces.length} pieces, pause ${pause}`).toEqual(c.want);
        }
      }
    });
  }

  for (const c of INVALID) {
    it(`refuses: ${c.name}`, () => {
      const wire = Buffer.from(c.wire, 'latin1');
      const ways = wire.length > 2000 ? [[wire], [...wire].map((b) => Buffer.from([b]))] : splits(wire);
      for (const pieces of ways) {
        let code = '';
        try {
          read('GET', pieces, { eof: true });
        } catch (err) {
          code = (err as { code: string }).code;
        }
        expect(code, `${pieces.length} pieces`).toBe(c.code);
      }
    });
  }

  it('an incomplete response is not ended by EOF (the pool fails it)', () => {
    for (const wire of ['HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel', 'HTTP/1.1 200 OK\r\nContent-']) {
      const got = read('GET', [Buffer.from(wire)], { eof: true });
      expect(got.ended, wire).toBe(false);
    }
  });

  it('reads responses one after another on one reader', () => {
    const rec = new Recorder();
    const r = new ResponseReader(rec);
    for (let i = 0; i < 3; i++) {
      r.expect('GET');
      rec.ended = false;
      r.push(Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n${i}`));
      expect(rec.ended).toBe(true);
      expect(r.idle).toBe(true);
      expect(r.rest()).toBe(null);
    }
    expect(Buffer.concat(rec.body).toString()).toBe('012');
  });

  it('holds bytes while paused and gives them on resume, in order', () => {
    const rec = new Recorder(true);
    const r = new ResponseReader(rec);
    r.expect('GET');
    r.push(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab'));
    expect(r.isPaused).toBe(true);
    expect(rec.body.length).toBe(0);
    r.push(Buffer.from('cd'));
    r.push(Buffer.from('ef'));
    while (r.isPaused) r.resume();
    expect(Buffer.concat(rec.body).toString()).toBe('abcdef');
    expect(rec.ended).toBe(true);
  });
});

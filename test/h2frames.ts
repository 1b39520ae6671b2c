// A raw HTTP/2 client for the hostile-client suites: it writes frames byte for byte
// (HEADERS without END_STREAM, DATA that disagrees with content-length, RST_STREAM with
// no END_STREAM before it, windows that never open), which node:http2's client will not
// do, and reads the gateway's frames back.
//
// HPACK: requests are encoded as literals without indexing (no Huffman). The client
// advertises SETTINGS_HEADER_TABLE_SIZE 0, so the gateway's encoder never refers to its
// dynamic table; responses are read for :status only (static index or a literal whose
// value is plain or Huffman-coded digits) and other fields are skipped by their lengths.

import tls from 'node:tls';

export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const FLAG = { END_STREAM: 1, ACK: 1, END_HEADERS: 4 } as const;
export const ERR = { NO_ERROR: 0, PROTOCOL_ERROR: 1, INTERNAL_ERROR: 2, REFUSED_STREAM: 7, CANCEL: 8 } as const;

export interface StreamState {
  status?: number;
  /** END_STREAM received from the gateway (the response is complete). */
  ended: boolean;
  /** RST_STREAM code received from the gateway. */
  reset?: number;
  /** Bytes of response body received. */
  bytes: number;
  body: Buffer[];
}

function hpackInt(n: number, prefixBits: number, first = 0): number[] {
  const max = (1 << prefixBits) - 1;
  if (n < max) return [first | n];
  const out = [first | max];
  n -= max;
  while (n >= 128) {
    out.push((n & 127) | 128);
    n >>= 7;
  }
  out.push(n);
  return out;
}

/** Literal header fields without indexing, new names, plain strings. */
export function hpackEncode(headers: readonly (readonly [string, string])[]): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of headers) {
    const kb = Buffer.from(k, 'latin1');
    const vb = Buffer.from(v, 'latin1');
    parts.push(Buffer.from([0x00]), Buffer.from(hpackInt(kb.length, 7)), kb, Buffer.from(hpackInt(vb.length, 7)), vb);
  }
  return Buffer.concat(parts);
}

export function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

// RFC 7541 Appendix B codes of the ten digits: '0'–'2' are 5 bits (00000–00010),
// '3'–'9' are 6 bits (011001–011111). A status line value needs nothing else.
function huffmanDigits(b: Buffer): string | undefined {
  let bits = '';
  for (const x of b) bits += x.toString(2).padStart(8, '0');
  let out = '';
  let i = 0;
  while (i < bits.length) {
    if (/^1*$/.test(bits.slice(i)) && bits.length - i < 8) break; // EOS padding
    if (bits.startsWith('000', i)) {
      out += String(parseInt(bits.slice(i, i + 5), 2));
      i += 5;
    } else if (bits.startsWith('011', i)) {
      out += String(parseInt(bits.slice(i, i + 6), 2) - 0x19 + 3);
      i += 6;
    } else return undefined;
  }
  return out;
}

const STATIC_STATUS: Record<number, number> = { 8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500 };

/** The :status of a response header block (undefined when it carries none). */
export function statusOf(block: Buffer): number | undefined {
  let p = 0;
  const int = (prefixBits: number): number => {
    const max = (1 << prefixBits) - 1;
    let n = block[p++] & max;
    if (n < max) return n;
    let m = 0;
    for (;;) {
      const b = block[p++];
      n += (b & 127) << m;
      m += 7;
      if ((b & 128) === 0) return n;
    }
  };
  const str = (): { huffman: boolean; bytes: Buffer } => {
    const huffman = (block[p] & 0x80) !== 0;
    const len = int(7);
    const bytes = block.subarray(p, p + len);
    p += len;
    return { huffman, bytes };
  };
  while (p < block.length) {
    const b = block[p];
    if (b & 0x80) {
      const idx = int(7);
      if (STATIC_STATUS[idx] !== undefined) return STATIC_STATUS[idx];
      continue;
    }
    if ((b & 0xe0) === 0x20) {
      int(5); // dynamic table size update
      continue;
    }
    const idx = (b & 0xc0) === 0x40 ? int(6) : int(4);
    if (idx === 0) str();
    const v = str();
    if (idx === 8) {
      const s = v.huffman ? huffmanDigits(v.bytes) : v.bytes.toString('latin1');
      return s === undefined ? undefined : Number(s);
    }
  }
  return undefined;
}

export class RawH2 {
  readonly streams = new Map<number, StreamState>();
  goaway: { lastStream: number; code: number } | undefined;
  closed = false;
  /** The gateway's SETTINGS arrived (and were acknowledged). */
  settled = false;
  private buf: Buffer = Buffer.alloc(0);
  private next = 1;
  private waiters: (() => void)[] = [];
  /** Streams whose receive window is never opened (the client "does not read"). */
  readonly stalled = new Set<number>();
  private headerBlock: { stream: number; parts: Buffer[] } | undefined;

  private constructor(readonly socket: tls.TLSSocket) {
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => {});
  }

  static connect(port: number, ca: string, servername = 'shop.test'): Promise<RawH2> {
    return new Promise((resolve, reject) => {
      const socket = tls.connect({ port, host: '127.0.0.1', ca, servername, ALPNProtocols: ['h2'] });
      socket.once('error', reject);
      socket.once('secureConnect', () => {
        socket.off('error', reject);
        if (socket.alpnProtocol !== 'h2') {
          reject(new Error(`ALPN chose ${String(socket.alpnProtocol)}`));
          return;
        }
        const c = new RawH2(socket);
        // SETTINGS: HEADER_TABLE_SIZE (1) = 0, so responses use no dynamic table.
        const settings = Buffer.alloc(6);
        settings.writeUInt16BE(1, 0);
        settings.writeUInt32BE(0, 2);
        socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), frame(FRAME.SETTINGS, 0, 0, settings)]));
        resolve(c);
      });
    });
  }

  /** Opens a stream: HEADERS with the pseudo-headers first. */
  request(headers: readonly (readonly [string, string])[], endStream: boolean): number {
    const id = this.next;
    this.next += 2;
    this.streams.set(id, { ended: false, bytes: 0, body: [] });
    this.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | (endStream ? FLAG.END_STREAM : 0), id, hpackEncode(headers)));
    return id;
  }

  data(stream: number, bytes: Buffer | string, endStream = false): void {
    this.write(frame(FRAME.DATA, endStream ? FLAG.END_STREAM : 0, stream, Buffer.from(bytes)));
  }

  rst(stream: number, code: number = ERR.CANCEL): void {
    this.write(frame(FRAME.RST_STREAM, 0, stream, u32(code)));
  }

  write(b: Buffer): void {
    if (!this.closed && this.socket.writable) this.socket.write(b);
  }

  close(): void {
    this.socket.destroy();
  }

  /** Resolves once `cond()` holds (checked after every frame read), or rejects after `ms`. */
  async until(cond: () => boolean, ms = 10_000, what = 'condition'): Promise<void> {
    const deadline = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`RawH2: timed out waiting for ${what}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.max(1, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** The stream's response ended (END_STREAM) or was reset. */
  finished(stream: number): boolean {
    const s = this.streams.get(stream);
    return s !== undefined && (s.ended || s.reset !== undefined);
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    while (this.buf.length >= 9) {
      const len = this.buf.readUIntBE(0, 3);
      if (this.buf.length < 9 + len) break;
      const type = this.buf[3];
      const flags = this.buf[4];
      const stream = this.buf.readUInt32BE(5) & 0x7fffffff;
      const payload = this.buf.subarray(9, 9 + len);
      this.buf = this.buf.subarray(9 + len);
      this.onFrame(type, flags, stream, payload);
    }
    this.wake();
  }

  private onFrame(type: number, flags: number, stream: number, payload: Buffer): void {
    const s = this.streams.get(stream);
    switch (type) {
      case FRAME.SETTINGS:
        if ((flags & FLAG.ACK) === 0) {
          this.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
          this.settled = true;
        }
        break;
      case FRAME.PING:
        if ((flags & FLAG.ACK) === 0) this.write(frame(FRAME.PING, FLAG.ACK, 0, payload));
        break;
      case FRAME.GOAWAY:
        this.goaway = { lastStream: payload.readUInt32BE(0) & 0x7fffffff, code: payload.readUInt32BE(4) };
        break;
      case FRAME.HEADERS:
      case FRAME.CONTINUATION: {
        if (type === FRAME.HEADERS) {
          let p = payload;
          if (flags & 0x8) p = p.subarray(1, p.length - p[0]); // PADDED
          if (flags & 0x20) p = p.subarray(5); // PRIORITY
          this.headerBlock = { stream, parts: [p] };
        } else this.headerBlock?.parts.push(payload);
        if (flags & FLAG.END_HEADERS && this.headerBlock !== undefined && s !== undefined) {
          const st = statusOf(Buffer.concat(this.headerBlock.parts));
          // Trailers carry no :status; a 1xx is followed by the final one.
          if (st !== undefined && (s.status === undefined || s.status < 200)) s.status = st;
        }
        if (flags & FLAG.END_STREAM && s !== undefined) s.ended = true;
        break;
      }
      case FRAME.DATA:
        if (s !== undefined) {
          s.bytes += payload.length;
          s.body.push(Buffer.from(payload));
          if (flags & FLAG.END_STREAM) s.ended = true;
        }
        if (payload.length > 0) {
          // Give the connection window back always; the stream's unless it is stalled.
          this.write(frame(FRAME.WINDOW_UPDATE, 0, 0, u32(payload.length)));
          if (!this.stalled.has(stream) && (flags & FLAG.END_STREAM) === 0) this.write(frame(FRAME.WINDOW_UPDATE, 0, stream, u32(payload.length)));
        }
        break;
      case FRAME.RST_STREAM:
        if (s !== undefined) s.reset = payload.readUInt32BE(0);
        break;
      default:
        break;
    }
  }
}

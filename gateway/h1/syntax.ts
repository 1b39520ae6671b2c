// Byte tables and small helpers for the HTTP/1.1 codecs (RFC 9110 and RFC 9112).
//
// The parsers look bytes up in these tables instead of comparing against ranges or
// running regular expressions: one indexed load per byte is the cheapest test a
// JavaScript engine can do, and the tables are shared by the request and the response
// parser so that both accept exactly the same field syntax.

/** Builds a 256-entry table with 1 for every byte that `accept` admits. */
function table(accept: (b: number) => boolean): Uint8Array {
  const t = new Uint8Array(256);
  for (let b = 0; b < 256; b++) if (accept(b)) t[b] = 1;
  return t;
}

const isAlpha = (b: number): boolean => (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a);
const isDigit = (b: number): boolean => b >= 0x30 && b <= 0x39;

export const CR = 0x0d;
export const LF = 0x0a;
export const SP = 0x20;
export const HTAB = 0x09;
export const COLON = 0x3a;
export const SEMI = 0x3b;
export const EQUALS = 0x3d;
export const DQUOTE = 0x22;
export const BACKSLASH = 0x5c;
export const COMMA = 0x2c;

/** tchar (RFC 9110 §5.6.2): the bytes of a token, so of a method and a field name. */
export const TCHAR = table((b) => isAlpha(b) || isDigit(b) || "!#$%&'*+-.^_`|~".includes(String.fromCharCode(b)));

/**
 * Bytes allowed inside a field value: field-vchar (VCHAR / obs-text) plus SP and HTAB
 * (RFC 9110 §5.5). Every other control byte, DEL included, is refused; CR is handled
 * by the line scanner, never as part of a value. obs-text (0x80–0xFF) is accepted
 * because llhttp accepts it and real clients send it; values are decoded as latin1,
 * which keeps those bytes intact for forwarding.
 */
export const FIELD_BYTE = table((b) => b === HTAB || (b >= 0x20 && b !== 0x7f));

/** Optional whitespace (OWS, RFC 9110 §5.6.3). */
export const OWS = table((b) => b === SP || b === HTAB);

/**
 * Bytes of a request-target. Every form of target (RFC 9112 §3.2) is made of visible
 * ASCII, so the request line admits exactly VCHAR here; the form itself is checked once
 * the whole target is known.
 */
export const TARGET_BYTE = table((b) => b >= 0x21 && b <= 0x7e);

/**
 * Bytes of the authority part of an absolute-form or authority-form target: unreserved,
 * sub-delims, ':' and '@' (userinfo and port), '[' and ']' (IP literals) and '%'
 * (percent-encoding) per RFC 3986 §3.2.
 */
export const AUTHORITY_BYTE = table(
  (b) => isAlpha(b) || isDigit(b) || "-._~!$&'()*+,;=:@[]%".includes(String.fromCharCode(b)),
);

/** Letters, the only bytes this parser admits in a URI scheme (see request.ts). */
export const ALPHA = table(isAlpha);

/**
 * qdtext of a quoted-string (RFC 9110 §5.6.4): HTAB, SP, '!', '#'–'[', ']'–'~', obs-text.
 * The double quote and the backslash have their own meaning and are not in the table.
 */
export const QDTEXT = table(
  (b) => b === HTAB || b === SP || b === 0x21 || (b >= 0x23 && b <= 0x5b) || (b >= 0x5d && b <= 0x7e) || b >= 0x80,
);

/** The byte after a backslash in a quoted-pair: HTAB, SP, VCHAR or obs-text. */
export const QUOTED_PAIR_BYTE = table((b) => b === HTAB || (b >= 0x20 && b !== 0x7f));

/** Hex digit values, -1 for every other byte; used for chunk sizes. */
export const HEX_VALUE: Int8Array = (() => {
  const t = new Int8Array(256).fill(-1);
  for (let b = 0x30; b <= 0x39; b++) t[b] = b - 0x30;
  for (let b = 0x41; b <= 0x46; b++) t[b] = b - 0x41 + 10;
  for (let b = 0x61; b <= 0x66; b++) t[b] = b - 0x61 + 10;
  return t;
})();

/** ASCII lowercase of every byte (non-letters map to themselves). */
export const LOWER: Uint8Array = (() => {
  const t = new Uint8Array(256);
  for (let b = 0; b < 256; b++) t[b] = b >= 0x41 && b <= 0x5a ? b | 0x20 : b;
  return t;
})();

/** The largest length this parser takes for a body or a chunk (2^53 − 1, exact in a JS number). */
export const MAX_LENGTH = Number.MAX_SAFE_INTEGER;

/**
 * Whether buf[start, start + lower.length) equals `lower` ignoring ASCII case; `lower`
 * holds lowercase ASCII codes. Used to recognise the framing headers by their bytes, so
 * no name is lowercased as a string on the hot path.
 */
export function equalsLower(buf: Buffer, start: number, end: number, lower: Uint8Array): boolean {
  if (end - start !== lower.length) return false;
  for (let i = 0; i < lower.length; i++) if (LOWER[buf[start + i]] !== lower[i]) return false;
  return true;
}

/** The lowercase ASCII bytes of a constant name, for equalsLower. */
export function lowerBytes(s: string): Uint8Array {
  return Uint8Array.from(Buffer.from(s.toLowerCase(), 'latin1'));
}

/**
 * Parses a decimal Content-Length value held in buf[start, end) (OWS already trimmed).
 * Returns the length, or -1 when the value is empty, holds anything but digits (a sign,
 * a list such as "5, 5", inner whitespace) or exceeds MAX_LENGTH.
 */
export function parseDecimalLength(buf: Buffer, start: number, end: number): number {
  if (start === end) return -1;
  let n = 0;
  for (let i = start; i < end; i++) {
    const d = buf[i] - 0x30;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
    if (n > MAX_LENGTH) return -1;
  }
  return n;
}

// Buffer#toString('latin1', s, e) normalises its arguments and dispatches on the
// encoding name before it reaches the native latin1Slice; the parsers make several
// strings per request, so they call latin1Slice directly where the runtime has it (Node
// 20 and 24 both do) and fall back to toString elsewhere.
interface Latin1Slicer {
  latin1Slice?(start: number, end: number): string;
}
const nativeLatin1 = (Buffer.prototype as unknown as Latin1Slicer).latin1Slice;

/** buf[start, end) as a latin1 string: every byte becomes the char with the same code. */
export const latin1: (buf: Buffer, start: number, end: number) => string =
  typeof nativeLatin1 === 'function'
    ? (buf, start, end) => (buf as unknown as Required<Latin1Slicer>).latin1Slice(start, end)
    : (buf, start, end) => buf.toString('latin1', start, end);

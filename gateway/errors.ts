// One error type for everything the gateway answers itself, with a stable code.
// `toGatewayError` is the single place where an upstream failure becomes 502/503/504,
// and where we decide whether the failure happened before the request reached a backend
// (the only case in which a retry is safe).

export type GatewayErrorCode =
  | 'NO_ROUTE'
  | 'BAD_REQUEST'
  | 'METHOD_NOT_ALLOWED'
  | 'BODY_TOO_LARGE'
  | 'HEADERS_TOO_LARGE'
  | 'UPSTREAM_ERROR'
  | 'UPSTREAM_TLS_ERROR'
  | 'NO_HEALTHY_UPSTREAM'
  | 'DRAINING'
  | 'UPSTREAM_TIMEOUT';

const STATUS: Record<GatewayErrorCode, number> = {
  NO_ROUTE: 404,
  BAD_REQUEST: 400,
  METHOD_NOT_ALLOWED: 405,
  BODY_TOO_LARGE: 413,
  HEADERS_TOO_LARGE: 431,
  UPSTREAM_ERROR: 502,
  UPSTREAM_TLS_ERROR: 502,
  NO_HEALTHY_UPSTREAM: 503,
  DRAINING: 503,
  UPSTREAM_TIMEOUT: 504,
};

/** Why an upstream attempt failed; used for outlier detection and metrics. */
export type UpstreamFailure = 'connect' | 'reset' | 'timeout' | 'protocol' | 'tls';

export class GatewayError extends Error {
  readonly code: GatewayErrorCode;
  readonly statusCode: number;
  /** For upstream failures: which kind, for outlier detection and metrics. */
  readonly reason?: UpstreamFailure;
  /** True when the request certainly never reached a backend, so retrying is safe. */
  readonly notSent: boolean;

  constructor(code: GatewayErrorCode, message: string, opts: { cause?: unknown; reason?: UpstreamFailure; notSent?: boolean } = {}) {
    super(message, { cause: opts.cause });
    this.name = 'GatewayError';
    this.code = code;
    this.statusCode = STATUS[code];
    this.reason = opts.reason;
    this.notSent = opts.notSent ?? false;
  }
}

const CONNECT_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL']);

// OpenSSL / Node TLS failures of an HTTPS upstream: certificate verification
// (UNABLE_TO_VERIFY_LEAF_SIGNATURE, SELF_SIGNED_CERT_IN_CHAIN, CERT_HAS_EXPIRED,
// ERR_TLS_CERT_ALTNAME_INVALID …) and handshake failures (ERR_SSL_WRONG_VERSION_NUMBER
// from a plain-HTTP port, ERR_SSL_TLSV1_ALERT_…, EPROTO). All happen while connecting,
// before any byte of the request is written.
const TLS_CODE_RE = /^(ERR_TLS_|ERR_SSL_|ERR_OSSL_|CERT_|UNABLE_TO_|SELF_SIGNED_|DEPTH_ZERO_|HOSTNAME_MISMATCH|INVALID_CA|INVALID_PURPOSE|PATH_LENGTH_EXCEEDED|EPROTO$)/;

/** True for a certificate or TLS handshake failure (by the error's or its cause's code). */
export function isTlsFailure(err: unknown): boolean {
  const e = err as { code?: unknown; cause?: { code?: unknown } } | undefined;
  return [e?.code, e?.cause?.code].some((c) => typeof c === 'string' && TLS_CODE_RE.test(c));
}

/**
 * Maps an undici / socket error to a GatewayError.
 * @param responseStarted whether any byte of the response had arrived
 * @param reusedSocket whether the failure happened on a socket that had served before
 */
export function toGatewayError(err: unknown, responseStarted: boolean): GatewayError {
  if (err instanceof GatewayError) return err;
  const e = err as { code?: string; message?: string; cause?: { code?: string } };
  const code = e?.code ?? '';
  const causeCode = e?.cause?.code ?? '';
  if (code === 'UND_ERR_CONNECT_TIMEOUT') {
    return new GatewayError('UPSTREAM_TIMEOUT', 'upstream connect timed out', { cause: err, reason: 'timeout', notSent: true });
  }
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return new GatewayError('UPSTREAM_TIMEOUT', 'upstream did not answer in time', { cause: err, reason: 'timeout' });
  }
  if (isTlsFailure(err)) {
    return new GatewayError('UPSTREAM_TLS_ERROR', `upstream TLS failed (${code || causeCode}): ${e?.message ?? ''}`.trimEnd(), { cause: err, reason: 'tls', notSent: true });
  }
  if (CONNECT_CODES.has(code) || CONNECT_CODES.has(causeCode)) {
    return new GatewayError('UPSTREAM_ERROR', `upstream connect failed (${code || causeCode})`, { cause: err, reason: 'connect', notSent: true });
  }
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'UND_ERR_SOCKET' || causeCode === 'ECONNRESET') {
    // A reset before any response byte is the keep-alive race: the backend closed an
    // idle socket just as we reused it. The request did not reach application code.
    return new GatewayError('UPSTREAM_ERROR', 'upstream connection reset', { cause: err, reason: 'reset', notSent: !responseStarted });
  }
  return new GatewayError('UPSTREAM_ERROR', `upstream error: ${e?.message ?? String(err)}`, { cause: err, reason: 'protocol' });
}

/** The JSON body of an error the gateway answers itself. */
export function errorBody(code: string, message: string, requestId: string): string {
  return JSON.stringify({ error: { code, message, requestId } });
}

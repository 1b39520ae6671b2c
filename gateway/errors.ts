// One error type for everything the gateway answers itself, with a stable code.
// `toGatewayError` is the single place where an upstream failure becomes 502/503/504,
// and where we decide whether the failure happened before the request reached a backend
// (the only case in which a retry is safe).

export type GatewayErrorCode =
  | 'NO_ROUTE'
  | 'BAD_REQUEST'
  | 'METHOD_NOT_ALLOWED'
  | 'EXPECTATION_FAILED'
  | 'NOT_IMPLEMENTED'
  | 'VERSION_NOT_SUPPORTED'
  | 'BODY_TOO_LARGE'
  | 'HEADERS_TOO_LARGE'
  | 'UPSTREAM_ERROR'
  | 'UPSTREAM_TLS_ERROR'
  | 'NO_HEALTHY_UPSTREAM'
  | 'DRAINING'
  | 'UPSTREAM_TIMEOUT'
  | 'REQUEST_TIMEOUT'
  | 'TOO_MANY_TUNNELS'
  | 'CLIENT_CLOSED';

const STATUS: Record<GatewayErrorCode, number> = {
  NO_ROUTE: 404,
  BAD_REQUEST: 400,
  METHOD_NOT_ALLOWED: 405,
  EXPECTATION_FAILED: 417,
  NOT_IMPLEMENTED: 501,
  VERSION_NOT_SUPPORTED: 505,
  BODY_TOO_LARGE: 413,
  HEADERS_TOO_LARGE: 431,
  UPSTREAM_ERROR: 502,
  UPSTREAM_TLS_ERROR: 502,
  NO_HEALTHY_UPSTREAM: 503,
  DRAINING: 503,
  UPSTREAM_TIMEOUT: 504,
  REQUEST_TIMEOUT: 408,
  TOO_MANY_TUNNELS: 503,
  // Never sent (the client is gone or not reading): the status of the access log and
  // the metrics, as nginx logs it.
  CLIENT_CLOSED: 499,
};

/** Why an upstream attempt failed; used for outlier detection and metrics. */
export type UpstreamFailure = 'connect' | 'reset' | 'timeout' | 'protocol' | 'tls';

export class GatewayError extends Error {
  readonly code: GatewayErrorCode;
  readonly statusCode: number;
  /** Set for upstream failures only: which kind, for outlier detection and metrics.
   * An error without a reason was raised by the gateway itself (the client's request
   * refused, the client gone or too slow, an argument the gateway could not send): it
   * is never counted against an endpoint or a version. */
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
 * Maps a pool / undici / socket error to a GatewayError (gateway/h1/pool.ts raises its
 * errors with undici's codes, so one table serves both).
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
  if (RESET_CODES.has(code) || RESET_CODES.has(causeCode)) {
    // A reset before any response byte is the keep-alive race: the backend closed an
    // idle socket just as we reused it. The request did not reach application code.
    return new GatewayError('UPSTREAM_ERROR', 'upstream connection reset', { cause: err, reason: 'reset', notSent: !responseStarted });
  }
  if (code.startsWith('HPE_') || UPSTREAM_PROTOCOL_CODES.has(code)) {
    return new GatewayError('UPSTREAM_ERROR', `upstream broke HTTP (${code}): ${e?.message ?? ''}`.trimEnd(), { cause: err, reason: 'protocol' });
  }
  // Everything else was raised inside the gateway, not by the endpoint: undici refusing
  // an argument (a header it will not send), a request body shorter or longer than its
  // length, an abort of ours. The client's request is the cause when undici says so;
  // otherwise it is the gateway's own failure. Neither has a reason: no endpoint or
  // version is blamed for it.
  if (CLIENT_CAUSED_CODES.has(code)) {
    return new GatewayError('BAD_REQUEST', `request refused: ${e?.message ?? code}`, { cause: err });
  }
  if (code === 'UND_ERR_ABORTED') return new GatewayError('CLIENT_CLOSED', 'request aborted', { cause: err });
  return new GatewayError('UPSTREAM_ERROR', `gateway error: ${e?.message ?? String(err)}`, { cause: err });
}

const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'ETIMEDOUT', 'ECONNABORTED']);
// The upstream answered something that is not HTTP, or not the HTTP it announced.
const UPSTREAM_PROTOCOL_CODES = new Set(['UND_ERR_RES_CONTENT_LENGTH_MISMATCH', 'UND_ERR_RES_EXCEEDED_MAX_SIZE', 'UND_ERR_INFO']);
// undici refused the request as given: invalid or duplicate headers, a body whose length
// disagrees with its Content-Length.
const CLIENT_CAUSED_CODES = new Set(['UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED', 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH']);

/** The JSON body of an error the gateway answers itself. */
export function errorBody(code: string, message: string, requestId: string): string {
  return JSON.stringify({ error: { code, message, requestId } });
}

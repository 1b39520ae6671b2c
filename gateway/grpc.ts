// gRPC over the gateway: how a request is recognised as gRPC, how its outcome (the
// grpc-status of its trailers, or of a trailers-only answer) is read, and how an error
// the gateway makes itself is told to a gRPC client (HTTP 200 with grpc-status and
// grpc-message, which is all a gRPC client reads; a JSON body would be a protocol error).

import type { ClientRequest, ClientResponse } from './io.js';
import type { GatewayError } from './errors.js';

/** gRPC status codes used by the gateway itself. */
export const GRPC = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/** A gRPC call (application/grpc, application/grpc+proto …; not gRPC-Web, whose
 * trailers travel in the body and which HTTP/1.1 clients speak). */
export function isGrpc(req: ClientRequest): boolean {
  const ct = req.headers['content-type'];
  return typeof ct === 'string' && ct.startsWith('application/grpc') && !ct.startsWith('application/grpc-web');
}

/** The gRPC status of a gateway error. */
export function grpcStatusOf(err: GatewayError): number {
  switch (err.code) {
    case 'UPSTREAM_TIMEOUT':
    case 'REQUEST_TIMEOUT':
      return GRPC.DEADLINE_EXCEEDED;
    case 'BODY_TOO_LARGE':
    case 'HEADERS_TOO_LARGE':
      return GRPC.RESOURCE_EXHAUSTED;
    case 'NO_ROUTE':
    case 'METHOD_NOT_ALLOWED':
      return GRPC.UNIMPLEMENTED;
    case 'BAD_REQUEST':
      return GRPC.INTERNAL;
    case 'CLIENT_CLOSED':
      return GRPC.CANCELLED;
    default:
      // NO_HEALTHY_UPSTREAM, UPSTREAM_ERROR, UPSTREAM_TLS_ERROR, DRAINING, TOO_MANY_TUNNELS.
      return GRPC.UNAVAILABLE;
  }
}

/** The gRPC status a client derives from an HTTP status when no grpc-status came
 * (the gRPC "HTTP to gRPC status code mapping"). */
export function grpcStatusOfHttp(status: number): number {
  switch (status) {
    case 200:
      // An answer without grpc-status.
      return GRPC.UNKNOWN;
    case 400:
      return GRPC.INTERNAL;
    case 401:
      return GRPC.UNAUTHENTICATED;
    case 403:
      return GRPC.PERMISSION_DENIED;
    case 404:
      return GRPC.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return GRPC.UNAVAILABLE;
    default:
      return GRPC.UNKNOWN;
  }
}

/** A grpc-status header value as a code 0–16, or -1. */
export function parseGrpcStatus(v: string | undefined): number {
  if (v === undefined) return -1;
  const n = Number(v);
  return Number.isInteger(n) && n >= 0 && n <= 16 ? n : -1;
}

/** grpc-message is percent-encoded (gRPC over HTTP/2, "Responses"). */
export function encodeGrpcMessage(m: string): string {
  return m.replace(/[^\x20-\x24\x26-\x7e]/gu, (c) => encodeURIComponent(c)).replace(/%(?![0-9A-F]{2})/g, '%25');
}

/**
 * Answers a gateway error to a gRPC client (an HTTP/2 request): HTTP 200, no message,
 * the status in the trailers (a HEADERS frame, then the trailers: every gRPC client
 * reads it).
 */
export function sendGrpcError(_req: ClientRequest, res: ClientResponse, err: GatewayError, requestId: string): void {
  const code = grpcStatusOf(err);
  const message = encodeGrpcMessage(`${err.code}: ${err.message}`);
  res.writeHead(200, ['content-type', 'application/grpc', 'x-request-id', requestId, 'x-switchyard-error', err.code]);
  res.addTrailers({ 'grpc-status': String(code), 'grpc-message': message });
  res.end();
}

/** Whether a response header carries a gRPC status (moved to the trailers when it came
 * in a trailers-only answer). */
export function isGrpcStatusHeader(lower: string): boolean {
  return lower === 'grpc-status' || lower === 'grpc-message' || lower === 'grpc-status-details-bin';
}

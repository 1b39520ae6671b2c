// The gRPC health checking protocol as an active probe (healthCheck.type grpc):
// a unary call of grpc.health.v1.Health/Check with the configured service name, over
// the probe's own HTTP/2 session to the endpoint (h2c, or h2 with the version's TLS
// options). It passes when the call ends with grpc-status 0 and the answer says
// SERVING (1). The two messages are tiny and fixed, so they are written and read by hand
// rather than through a protobuf library.

import type { Dispatcher } from 'undici';
import { H2Upstream } from '../h2upstream.js';

const SERVING = 1;

/** The length-prefixed gRPC message of a HealthCheckRequest { service }. */
export function healthCheckRequest(service: string): Buffer {
  const name = Buffer.from(service, 'utf8');
  // Field 1 (string): tag 0x0a, varint length, bytes; omitted when empty (proto3).
  const len: number[] = [];
  let n = name.length;
  do {
    len.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n >>>= 7;
  } while (n > 0);
  const msg = name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a, ...len]), name]);
  const frame = Buffer.alloc(5);
  frame.writeUInt32BE(msg.length, 1);
  return Buffer.concat([frame, msg]);
}

/** The ServingStatus of a HealthCheckResponse gRPC message, or -1 when unreadable. */
export function servingStatus(body: Buffer): number {
  if (body.length < 5 || body[0] !== 0) return -1;
  const len = body.readUInt32BE(1);
  if (body.length < 5 + len) return -1;
  // proto3 leaves a zero (UNKNOWN) out: an empty message is status 0.
  let i = 5;
  const end = 5 + len;
  while (i < end) {
    const tag = body[i++];
    if (tag === 0x08) {
      let v = 0;
      let shift = 0;
      while (i < end) {
        const b = body[i++];
        v |= (b & 0x7f) << shift;
        if ((b & 0x80) === 0) return v;
        shift += 7;
      }
      return -1;
    }
    return -1;
  }
  return 0;
}

/** One Health/Check call; resolves true for SERVING with grpc-status 0. */
export function grpcProbe(up: H2Upstream, authority: string, service: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let status = -1;
    let grpcStatus: string | undefined;
    const handler: Dispatcher.DispatchHandler = {
      onConnect() {},
      onHeaders(statusCode: number, raw: Buffer[]) {
        status = statusCode;
        for (let i = 0; i < raw.length; i += 2) if (raw[i].toString('latin1') === 'grpc-status') grpcStatus = raw[i + 1].toString('latin1');
        return true;
      },
      onData(chunk: Buffer) {
        chunks.push(chunk);
        return true;
      },
      onComplete(trailers: string[] | null) {
        if (trailers !== null) for (let i = 0; i < trailers.length; i += 2) if (trailers[i] === 'grpc-status') grpcStatus = trailers[i + 1];
        resolve(status === 200 && grpcStatus === '0' && servingStatus(Buffer.concat(chunks)) === SERVING);
      },
      onError() {
        resolve(false);
      },
    };
    up.dispatch(
      {
        method: 'POST',
        path: '/grpc.health.v1.Health/Check',
        headers: ['host', authority, 'content-type', 'application/grpc', 'te', 'trailers', 'user-agent', 'switchyard-health-check', 'grpc-timeout', `${timeoutMs}m`],
        body: [healthCheckRequest(service)] as unknown as Dispatcher.DispatchOptions['body'],
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      },
      handler,
    );
  });
}

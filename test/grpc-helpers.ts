// Real gRPC peers for the gRPC suites: @grpc/grpc-js servers (the blue and green of a
// service) and clients, on the Echo service of test/fixtures/echo.proto.

import { resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const PROTO = resolve(import.meta.dirname, 'fixtures/echo.proto');
const def = protoLoader.loadSync(PROTO, { keepCase: true, longs: Number, defaults: true });
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const pkg = grpc.loadPackageDefinition(def) as any;
export const EchoService: grpc.ServiceDefinition = pkg.switchyard.test.Echo.service;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const EchoClient = pkg.switchyard.test.Echo as grpc.ServiceClientConstructor;

export interface Reply {
  server: string;
  message: string;
  seq: number;
}

export interface GrpcUpstream {
  name: string;
  server: grpc.Server;
  /** host:port */
  address: string;
  port: number;
  /** Calls received (all methods). */
  calls: number;
  /** Server streams in progress. */
  openStreams: number;
  /** Messages written by server streams, and whether one waits for 'drain' now. */
  streamSent: number;
  streamBlocked: boolean;
  /** Fail this share (0–1) of unary calls with UNAVAILABLE. */
  failRate: number;
  close(): Promise<void>;
}

export interface GrpcUpstreamOptions {
  /** TLS credentials (h2); plain h2c when absent. */
  tls?: { cert: string; key: string };
  port?: number;
  /** Add the standard health service (grpc.health.v1.Health), answering SERVING. */
  health?: boolean;
  /** grpc-js server options (e.g. grpc.max_concurrent_streams). */
  options?: grpc.ServerOptions;
}

/** A real grpc-js server answering the Echo service as `name`. */
export async function startGrpcUpstream(name: string, opts: GrpcUpstreamOptions = {}): Promise<GrpcUpstream> {
  const server = new grpc.Server(opts.options);
  const up: GrpcUpstream = {
    name,
    server,
    address: '',
    port: 0,
    calls: 0,
    openStreams: 0,
    streamSent: 0,
    streamBlocked: false,
    failRate: 0,
    close: () =>
      new Promise<void>((r) => {
        server.forceShutdown();
        r();
      }),
  };
  server.addService(EchoService, {
    Unary(call: grpc.ServerUnaryCall<{ message: string }, Reply>, cb: grpc.sendUnaryData<Reply>) {
      up.calls++;
      if (up.failRate > 0 && Math.random() < up.failRate) {
        cb({ code: grpc.status.UNAVAILABLE, details: `${name} is failing` });
        return;
      }
      const echoed = call.metadata.get('x-echo');
      const trailer = new grpc.Metadata();
      trailer.set('x-served-by', name);
      if (echoed.length > 0) {
        const md = new grpc.Metadata();
        md.set('x-echo', String(echoed[0]));
        call.sendMetadata(md);
      }
      cb(null, { server: name, message: call.request.message, seq: 0 }, trailer);
    },
    ServerStream(call: grpc.ServerWritableStream<{ count: number; interval_ms: number; pad: number }, Reply>) {
      up.calls++;
      up.openStreams++;
      const { count, interval_ms, pad } = call.request;
      const padding = 'x'.repeat(pad);
      let i = 0;
      let ended = false;
      const end = (): void => {
        if (ended) return;
        ended = true;
        up.openStreams--;
      };
      call.on('cancelled', end);
      const md = new grpc.Metadata();
      md.set('x-stream-from', name);
      call.sendMetadata(md);
      const finish = (): void => {
        const t = new grpc.Metadata();
        t.set('x-sent', String(count));
        call.end(t);
        end();
      };
      if (interval_ms > 0) {
        const timer = setInterval(() => {
          if (ended) return clearInterval(timer);
          if (i >= count) {
            clearInterval(timer);
            finish();
            return;
          }
          call.write({ server: name, message: 'tick', seq: i++ });
        }, interval_ms);
        return;
      }
      // As fast as the flow control lets us, never buffering more than the stream takes.
      const pump = (): void => {
        up.streamBlocked = false;
        while (i < count && !ended) {
          up.streamSent++;
          if (!call.write({ server: name, message: pad > 0 ? padding : `m${i}`, seq: i++ })) {
            up.streamBlocked = true;
            call.once('drain', pump);
            return;
          }
        }
        if (!ended) finish();
      };
      pump();
    },
    Bidi(call: grpc.ServerDuplexStream<{ message: string }, Reply>) {
      up.calls++;
      let seq = 0;
      call.on('data', (m: { message: string }) => call.write({ server: name, message: m.message.toUpperCase(), seq: seq++ }));
      call.on('end', () => {
        const t = new grpc.Metadata();
        t.set('x-count', String(seq));
        call.end(t);
      });
    },
  });
  if (opts.health === true) {
    const hdef = protoLoader.loadSync(resolve(import.meta.dirname, 'fixtures/health.proto'), { keepCase: true, defaults: true });
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const hpkg = grpc.loadPackageDefinition(hdef) as any;
    server.addService(hpkg.grpc.health.v1.Health.service, {
      Check(_call: unknown, cb: grpc.sendUnaryData<{ status: number }>) {
        cb(null, { status: up.failRate >= 1 ? 2 : 1 });
      },
    });
  }
  const creds = opts.tls === undefined ? grpc.ServerCredentials.createInsecure() : grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(opts.tls.cert), private_key: Buffer.from(opts.tls.key) }], false);
  const port = await new Promise<number>((res, rej) => server.bindAsync(`127.0.0.1:${opts.port ?? 0}`, creds, (err, p) => (err ? rej(err) : res(p))));
  up.port = port;
  up.address = `127.0.0.1:${port}`;
  return up;
}

/** A grpc-js client of the Echo service. `target` host:port; TLS with a CA (PEM) or plain. */
export function echoClient(target: string, opts: { ca?: string; servername?: string } = {}): grpc.Client & Record<string, any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const creds = opts.ca === undefined ? grpc.credentials.createInsecure() : grpc.credentials.createSsl(Buffer.from(opts.ca));
  const options: grpc.ChannelOptions = opts.servername === undefined ? {} : { 'grpc.ssl_target_name_override': opts.servername, 'grpc.default_authority': opts.servername };
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  return new EchoClient(target, creds, options) as any;
}

/** One unary call: the reply, or the gRPC error (code, details). */
export function unary(client: grpc.Client & Record<string, any>, message: string, md: Record<string, string> = {}): Promise<{ reply?: Reply; code: number; details?: string; trailers?: grpc.Metadata }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const meta = new grpc.Metadata();
  for (const [k, v] of Object.entries(md)) meta.set(k, v);
  return new Promise((res) => {
    let trailers: grpc.Metadata | undefined;
    const call = client.Unary({ message }, meta, { deadline: Date.now() + 20_000 }, (err: grpc.ServiceError | null, reply: Reply) => {
      // 'status' follows the callback in grpc-js; the callback result is enough here.
      if (err) res({ code: err.code, details: err.details, trailers: err.metadata });
      else setImmediate(() => res({ reply, code: 0, trailers }));
    });
    call.on('status', (s: grpc.StatusObject) => {
      trailers = s.metadata;
    });
  });
}

export { grpc };

/** A gRPC Echo server in a child process (so that it can be killed with SIGKILL). */
export async function spawnGrpcUpstream(name: string): Promise<{ address: string; proc: import('node:child_process').ChildProcess; kill(): Promise<void> }> {
  const { spawn } = await import('node:child_process');
  const proc = spawn(process.execPath, [resolve(import.meta.dirname, 'fixtures/grpc-server.mjs'), name], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((res, rej) => {
    let buf = '';
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /\{"port":(\d+)\}/.exec(buf);
      if (m) res(Number(m[1]));
    });
    proc.once('exit', (code) => rej(new Error(`grpc server ${name} exited with ${code}`)));
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  return {
    address: `127.0.0.1:${port}`,
    proc,
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
}

export interface CallRecord {
  start: number;
  end: number;
  code: number;
  server?: string;
  details?: string;
}

/** Unary calls from `concurrency` loops until stop(); every call's outcome recorded. */
export function unaryLoad(client: grpc.Client & Record<string, any>, concurrency: number, md: Record<string, string> = {}): { records: CallRecord[]; inflight: () => number; stop(): Promise<CallRecord[]> } { // eslint-disable-line @typescript-eslint/no-explicit-any
  const records: CallRecord[] = [];
  let stopped = false;
  let inflight = 0;
  const loop = async (): Promise<void> => {
    while (!stopped) {
      const start = Date.now();
      inflight++;
      const r = await unary(client, 'load', md);
      inflight--;
      records.push({ start, end: Date.now(), code: r.code, server: r.reply?.server, ...(r.code === 0 ? {} : { details: r.details }) });
    }
  };
  const loops = Array.from({ length: concurrency }, () => loop());
  return {
    records,
    inflight: () => inflight,
    async stop() {
      stopped = true;
      await Promise.all(loops);
      return records;
    },
  };
}

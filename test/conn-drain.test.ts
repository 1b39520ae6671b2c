// Long-lived connections follow a cutover (SPEC "Long-lived connections on cutover"):
// WebSockets, HTTP/2 sessions and keep-alive connections pinned to the version that lost
// its weight are closed gracefully over `connections.drain`, spread over the window; the
// clients reconnect and land on the new version; `cutover --wait` returns only after
// the last one closed. Real gateway processes, real `ws` servers and clients, real
// HTTP/2 over TLS.

import { createHash } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2 from 'node:http2';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import WebSocket, { WebSocketServer } from 'ws';
import { makeCa, type TestCa } from './certs.js';
import { CLOSE_REPLY_MS, WsFrameTracker } from '../gateway/tunnel.js';
import { drainShares } from '../control/controller.js';
import { api, controlTop, runCli, shop, TOKENS } from './control-helpers.js';
import { shopConfig, startProcess, startUpstream, waitFor, type GatewayProcess, type Upstream } from './helpers.js';
import { startRedis, type RedisServer } from './redis-server.js';

/** A WebSocket upstream: says hello with its name, echoes every numbered message and
 * logs each echo it sent, per client. Plain HTTP requests get {name}. */
interface WsUpstream extends Upstream {
  wss: WebSocketServer;
  /** client id → message numbers this upstream echoed, in order. */
  echoed: Map<string, number[]>;
}

async function wsUpstream(name: string, handler?: (req: IncomingMessage, res: ServerResponse) => void): Promise<WsUpstream> {
  const up = (await startUpstream(name, (req, res) => {
    if (handler !== undefined) return handler(req, res);
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ name }));
  })) as WsUpstream;
  up.echoed = new Map();
  up.wss = new WebSocketServer({ server: up.server });
  up.wss.on('connection', (ws) => {
    ws.send(JSON.stringify({ hello: name }));
    ws.on('message', (data) => {
      const m = JSON.parse(String(data)) as { c: string; n: number };
      let list = up.echoed.get(m.c);
      if (list === undefined) up.echoed.set(m.c, (list = []));
      list.push(m.n);
      ws.send(JSON.stringify({ v: name, c: m.c, n: m.n }));
    });
  });
  const close = up.close;
  up.close = async () => {
    for (const c of up.wss.clients) c.terminate();
    up.wss.close();
    await close();
  };
  return up;
}

/**
 * A client that sends numbered messages and counts one as acknowledged when its echo
 * comes back. When its connection closes it reconnects at once and sends again every
 * message not acknowledged yet (at-least-once), so nothing acknowledged is ever lost.
 */
class Client {
  next = 0;
  readonly pending = new Set<number>();
  /** message number → the version that echoed it (first echo). */
  readonly acked = new Map<number, string>();
  /** Versions it was connected to, in order (from each hello). */
  readonly versions: string[] = [];
  readonly closes: { code: number; at: number }[] = [];
  ws!: WebSocket;
  stopped = false;
  errors: string[] = [];

  constructor(readonly id: string, private readonly url: string) {}

  connect(): void {
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.on('message', (data) => {
      const m = JSON.parse(String(data)) as { hello?: string; v?: string; n?: number };
      if (m.hello !== undefined) {
        this.versions.push(m.hello);
        // A new connection: what was not acknowledged goes again.
        for (const n of [...this.pending].sort((a, b) => a - b)) ws.send(JSON.stringify({ c: this.id, n }));
        return;
      }
      if (!this.acked.has(m.n!)) this.acked.set(m.n!, m.v!);
      this.pending.delete(m.n!);
    });
    ws.on('error', (err) => this.errors.push(err.message));
    ws.on('close', (code) => {
      this.closes.push({ code, at: Date.now() });
      if (!this.stopped) this.connect();
    });
  }

  get version(): string | undefined {
    return this.ws.readyState === WebSocket.OPEN ? this.versions.at(-1) : undefined;
  }

  send(): void {
    if (this.ws.readyState !== WebSocket.OPEN || this.versions.length === 0) return;
    const n = ++this.next;
    this.pending.add(n);
    this.ws.send(JSON.stringify({ c: this.id, n }));
  }

  stop(): void {
    this.stopped = true;
    this.ws.terminate();
  }
}

/** Every client sends one message every `everyMs` until stopped. */
function chatter(clients: Client[], everyMs: number): () => void {
  const t = setInterval(() => {
    for (const c of clients) c.send();
  }, everyMs);
  return () => clearInterval(t);
}

async function metric(adminUrl: string, name: string, labels: string): Promise<number> {
  const text = await (await request(`${adminUrl}/metrics`)).body.text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? NaN : Number(line.split(' ').pop());
}

const wsUrl = (g: GatewayProcess): string => `${g.url.replace('http', 'ws')}/socket`;

/**
 * The WebSocket scenario, on a gateway with `workers` data-plane processes: `n` clients
 * on blue, a cutover to green with `--drain-connections`, and every property the issue
 * asks for.
 */
async function websocketScenario(n: number, drain: string, drainMs: number, workers: number): Promise<void> {
  const blue = await wsUpstream('blue');
  const green = await wsUpstream('green');
  const clients: Client[] = [];
  let stopChatter = (): void => {};
  let g: GatewayProcess | undefined;
  try {
    g = await startProcess(
      shopConfig(
        { blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } },
        {},
        controlTop({}, workers > 1 ? { gateway: { workers } } : {}),
      ),
    );
    for (let i = 0; i < n; i++) {
      const c = new Client(`c${i}`, wsUrl(g));
      clients.push(c);
      c.connect();
    }
    await waitFor(() => clients.every((c) => c.version === 'blue'), { timeout: 20_000, message: 'every client on blue' });
    stopChatter = chatter(clients, 200);
    await waitFor(() => clients.every((c) => c.acked.size > 0), { timeout: 20_000, message: 'every client has an acknowledged message' });

    const cli = await runCli(['cutover', 'shop', '--to', 'green', '--wait', '--drain-connections', drain, '--timeout', '30s', '--json'], { url: g.controlUrl });
    expect(cli.code, cli.stderr).toBe(0);
    const out = JSON.parse(cli.stdout);
    expect(out).toMatchObject({ drained: true, weights: { blue: 0, green: 100 }, connections: { moved: n, versions: ['blue'] } });

    // Every client was closed once, with 1001, and only after the cutover was made.
    const events = (await api(g.controlUrl, 'GET', '/v1/events', { token: TOKENS.read })).json.events as { action: string; time: string; detail: Record<string, unknown> }[];
    const cutover = events.find((e) => e.action === 'cutover')!;
    expect(cutover.detail.connections).toMatchObject({ drainMs, shares: { blue: 1 } });
    const madeAt = Date.parse(cutover.time);
    const closes = clients.map((c) => {
      expect(c.closes.map((x) => x.code), c.id).toEqual([1001]);
      return c.closes[0].at;
    });
    const first = Math.min(...closes);
    const last = Math.max(...closes);
    expect(first).toBeGreaterThanOrEqual(madeAt);
    // Within the window: each close starts in it; the client's close frame follows the
    // upstream's answer to the gateway's, which the gateway awaits at most CLOSE_REPLY_MS.
    expect(last - madeAt).toBeLessThan(drainMs + CLOSE_REPLY_MS);
    // Spread, not at once: they span more than half the window.
    expect(last - first).toBeGreaterThan(drainMs / 2);
    // `--wait` answered only after the last one had closed.
    expect(cli.endedAt).toBeGreaterThanOrEqual(last);

    // Each client reconnected and landed on green.
    await waitFor(() => clients.every((c) => c.version === 'green'), { timeout: 20_000, message: 'every client reconnected to green' });
    expect(clients.every((c) => c.versions.join(',') === 'blue,green')).toBe(true);

    // Nothing acknowledged is lost: once the last resends are answered, every message
    // each client sent is acknowledged, and every echo an upstream sent reached its
    // client (blue's replies made before its close frame all came through).
    await waitFor(() => clients.every((c) => [...c.acked.values()].includes('green')), { timeout: 20_000, message: 'every client acknowledged by green' });
    stopChatter();
    await waitFor(() => clients.every((c) => c.pending.size === 0), { timeout: 20_000, message: 'the last messages acknowledged' });
    for (const c of clients) {
      expect([...c.acked.keys()].sort((a, b) => a - b)).toEqual(Array.from({ length: c.next }, (_, i) => i + 1));
      for (const m of blue.echoed.get(c.id) ?? []) expect(c.acked.get(m), `${c.id} message ${m} echoed by blue`).toBe('blue');
      expect(c.errors).toEqual([]);
    }
    // And green acknowledged only what it echoed (every echo of green reached its client).
    for (const c of clients) for (const m of green.echoed.get(c.id) ?? []) expect(c.acked.has(m)).toBe(true);

    // Counted in the metrics and recorded as an event.
    await waitFor(async () => (await metric(g!.adminUrl, 'switchyard_connections_drained_total', 'service="shop",version="blue"')) === n, { message: 'drained metric' });
    const drainedEvent = await waitFor(async () => {
      const ev = (await api(g!.controlUrl, 'GET', '/v1/events', { token: TOKENS.read })).json.events as { action: string; detail: Record<string, unknown> }[];
      return ev.find((e) => e.action === 'connections.drained');
    });
    expect(drainedEvent.detail).toMatchObject({ service: 'shop', versions: ['blue'], moved: n, stillOpen: 0, trigger: 'cutover' });
  } finally {
    stopChatter();
    for (const c of clients) c.stop();
    await g?.stop('SIGKILL');
    await blue.close();
    await green.close();
  }
}

describe('connection drain on cutover: WebSockets', () => {
  it('200 WebSockets on blue; cutover with --drain-connections 3s: all closed 1001 within the window, spread, each reconnects to green, --wait returns after the last, nothing acknowledged lost', async () => {
    await websocketScenario(200, '3s', 3000, 1);
  }, 90_000);

  it('the same with gateway.workers: 2 (each worker drains its own; the primary counts them)', async () => {
    await websocketScenario(100, '2s', 2000, 2);
  }, 90_000);
});

describe('drainShares: the share of each version\'s connections its lost weight represents', () => {
  it.each([
    ['cutover blue → green', { blue: 100, green: 0 }, { blue: 0, green: 100 }, { blue: 1 }],
    ['a rollout step 100 → 75', { blue: 100, green: 0 }, { blue: 75, green: 25 }, { blue: 0.25 }],
    ['a rollout step 90/10 → 50/50', { blue: 90, green: 10 }, { blue: 50, green: 50 }, { blue: (0.9 - 0.5) / 0.9 }],
    ['a rollback 50/50 → 100/0: green loses all', { blue: 50, green: 50 }, { blue: 100, green: 0 }, { green: 1 }],
    ['shares, not percentages (2:2 → 1:3)', { blue: 2, green: 2 }, { blue: 1, green: 3 }, { blue: 0.5 }],
    ['no version lost share', { blue: 50, green: 50 }, { blue: 5, green: 5 }, {}],
    ['three versions, two lose', { a: 50, b: 30, c: 20 }, { a: 0, b: 20, c: 80 }, { a: 1, b: 1 / 3 }],
  ])('%s', (_name, before, after, want) => {
    const got = drainShares(before, after);
    expect(Object.keys(got).sort()).toEqual(Object.keys(want).sort());
    for (const [v, x] of Object.entries(want)) expect(got[v]).toBeCloseTo(x, 9);
  });
});

describe('connection drain on a rollout', () => {
  it('a rollout with connections.drain moves the WebSockets of the version that lost its weight; the rollout shows its drain', async () => {
    const blue = await wsUpstream('blue');
    const green = await wsUpstream('green');
    const clients: Client[] = [];
    let g: GatewayProcess | undefined;
    try {
      g = await startProcess(shopConfig({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } }, {}, controlTop()));
      for (let i = 0; i < 20; i++) {
        const c = new Client(`c${i}`, wsUrl(g));
        clients.push(c);
        c.connect();
      }
      await waitFor(() => clients.every((c) => c.version === 'blue'), { timeout: 20_000, message: 'every client on blue' });
      const r = await api(g.controlUrl, 'POST', '/v1/services/shop/rollout', {
        body: { to: 'green', steps: [100], interval: '1s', connections: { drain: '500ms' }, analysis: { minRequests: 0, noTrafficPolicy: 'continue' } },
      });
      expect(r.status, r.text).toBe(202);
      expect(r.json.connections).toEqual({ drain: '500ms' });
      await waitFor(() => clients.every((c) => c.closes.length === 1 && c.version === 'green'), { timeout: 20_000, message: 'every client moved to green' });
      expect(clients.every((c) => c.closes[0].code === 1001)).toBe(true);
      const started = ((await api(g.controlUrl, 'GET', '/v1/events', { token: TOKENS.read })).json.events as { action: string; detail: Record<string, unknown> }[]).find((e) => e.action === 'rollout.started')!;
      expect(started.detail.connections).toMatchObject({ drainMs: 500, shares: { blue: 1 } });
    } finally {
      for (const c of clients) c.stop();
      await g?.stop('SIGKILL');
      await blue.close();
      await green.close();
    }
  }, 60_000);
});

describe('connection drain: the service default', () => {
  it('services.shop.connections.drain applies to a cutover that names none; "0s" in the body keeps the connections', async () => {
    const blue = await wsUpstream('blue');
    const green = await wsUpstream('green');
    const clients: Client[] = [];
    let g: GatewayProcess | undefined;
    try {
      g = await startProcess(
        shopConfig({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } }, { connections: { drain: '300ms' } }, controlTop()),
      );
      for (let i = 0; i < 5; i++) {
        const c = new Client(`c${i}`, wsUrl(g));
        clients.push(c);
        c.connect();
      }
      await waitFor(() => clients.every((c) => c.version === 'blue'), { timeout: 20_000, message: 'every client on blue' });
      // Explicitly none: nothing moves, the wait does not wait for them.
      const kept = await api(g.controlUrl, 'POST', '/v1/services/shop/cutover', { body: { to: 'green', wait: true, timeout: '10s', connections: { drain: '0s' } } });
      expect(kept.status, kept.text).toBe(200);
      expect(kept.json.drained).toBe(true);
      expect(kept.json.connections).toBeUndefined();
      expect(clients.every((c) => c.closes.length === 0 && c.version === 'blue')).toBe(true);
      // Back to blue (green's connections: none), then to green with the default.
      expect((await api(g.controlUrl, 'POST', '/v1/services/shop/cutover', { body: { to: 'blue', connections: { drain: '0s' } } })).status).toBe(200);
      const moved = await api(g.controlUrl, 'POST', '/v1/services/shop/cutover', { body: { to: 'green', wait: true, timeout: '10s' } });
      expect(moved.status, moved.text).toBe(200);
      expect(moved.json).toMatchObject({ drained: true, connections: { drain: '300ms', moved: 5 } });
      // The wait ends when the gateway's side of each tunnel is closed; each client reads
      // its close frame in its own time (another process): waited for, then checked.
      await waitFor(() => clients.every((c) => c.closes.length > 0), { message: 'every client saw its close' });
      expect(clients.every((c) => c.closes.length === 1 && c.closes[0].code === 1001)).toBe(true);
    } finally {
      for (const c of clients) c.stop();
      await g?.stop('SIGKILL');
      await blue.close();
      await green.close();
    }
  }, 60_000);
});

describe('connection drain across a fleet', () => {
  let redis: RedisServer | undefined;

  afterAll(async () => {
    await redis?.stop();
  });

  it('two replicas on one redis (one with gateway.workers: 2): each drains its own WebSockets; cutover --wait on one returns after the last on both closed, with the total moved', async () => {
    redis = await startRedis();
    const blue = await wsUpstream('blue');
    const green = await wsUpstream('green');
    const clients: Client[] = [];
    const gws: GatewayProcess[] = [];
    try {
      const config = (workers: number): Record<string, unknown> =>
        shopConfig(
          { blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } },
          {},
          controlTop({}, { state: { store: 'redis', redis: { url: redis!.url, prefix: 'conndrain' } }, ...(workers > 1 ? { gateway: { workers } } : {}) }),
        );
      gws.push(await startProcess(config(1)), await startProcess(config(2)));
      await waitFor(async () => (await api(gws[0].controlUrl, 'GET', '/v1/replicas', { token: TOKENS.read })).json.replicas?.length === 2, { timeout: 10_000, message: 'both replicas registered' });
      const perReplica = 30;
      for (const [r, g] of gws.entries()) {
        for (let i = 0; i < perReplica; i++) {
          const c = new Client(`r${r}c${i}`, wsUrl(g));
          clients.push(c);
          c.connect();
        }
      }
      await waitFor(() => clients.every((c) => c.version === 'blue'), { timeout: 20_000, message: 'every client on blue' });
      const cli = await runCli(['cutover', 'shop', '--to', 'green', '--wait', '--drain-connections', '2s', '--timeout', '30s', '--json'], { url: gws[0].controlUrl });
      expect(cli.code, cli.stderr).toBe(0);
      expect(JSON.parse(cli.stdout)).toMatchObject({ drained: true, connections: { moved: 2 * perReplica } });
      const closes = clients.map((c) => {
        expect(c.closes.map((x) => x.code), c.id).toEqual([1001]);
        return c.closes[0].at;
      });
      expect(cli.endedAt).toBeGreaterThanOrEqual(Math.max(...closes));
      await waitFor(() => clients.every((c) => c.version === 'green'), { timeout: 20_000, message: 'every client reconnected to green' });
      // Each replica recorded how many it moved.
      const drained = await waitFor(async () => {
        const ev = (await api(gws[1].controlUrl, 'GET', '/v1/events', { token: TOKENS.read })).json.events as { action: string; detail: Record<string, unknown> }[];
        const d = ev.filter((e) => e.action === 'connections.drained');
        return d.length === 2 ? d : undefined;
      }, { message: 'a connections.drained event from each replica' });
      expect(drained.map((e) => e.detail.moved)).toEqual([perReplica, perReplica]);
      expect(new Set(drained.map((e) => e.detail.replica)).size).toBe(2);
    } finally {
      for (const c of clients) c.stop();
      await Promise.all(gws.map((g) => g.stop('SIGKILL')));
      await blue.close();
      await green.close();
    }
  }, 90_000);
});

/** A WebSocket frame as the wire carries it (masked when `mask` is given). */
function frame(opcode: number, payload: Buffer, mask?: Buffer): Buffer {
  const len = payload.length;
  const ext = len < 126 ? Buffer.alloc(0) : len < 65536 ? Buffer.alloc(2) : Buffer.alloc(8);
  if (len >= 126 && len < 65536) ext.writeUInt16BE(len);
  else if (len >= 65536) ext.writeBigUInt64BE(BigInt(len));
  const b1 = (mask ? 0x80 : 0) | (len < 126 ? len : len < 65536 ? 126 : 127);
  const body = mask ? Buffer.from(payload.map((x, i) => x ^ mask[i % 4])) : payload;
  return Buffer.concat([Buffer.from([0x80 | opcode, b1]), ext, mask ?? Buffer.alloc(0), body]);
}

describe('WsFrameTracker: frame boundaries of a byte stream, resumable at any byte', () => {
  const frames = [
    frame(1, Buffer.from('hi')),
    frame(2, Buffer.alloc(300, 7), Buffer.from([1, 2, 3, 4])),
    frame(9, Buffer.alloc(0)),
    frame(2, Buffer.alloc(70_000, 1)),
    frame(8, Buffer.from([0x03, 0xe8]), Buffer.from([9, 9, 9, 9])),
    frame(1, Buffer.from('after')),
  ];
  const stream = Buffer.concat(frames);
  const starts: number[] = [];
  frames.reduce((at, f) => (starts.push(at), at + f.length), 0);

  it.each([1, 2, 3, 7, 64, 4096, stream.length])('fed in pieces of %i bytes: at a boundary exactly at each frame start', (size) => {
    const t = new WsFrameTracker();
    const boundaries: number[] = [];
    for (let at = 0; at < stream.length; at += size) {
      const chunk = stream.subarray(at, Math.min(stream.length, at + size));
      // Walk the chunk stopping at every boundary.
      let i = 0;
      while (i < chunk.length) {
        const stop = t.feed(chunk, i, 'boundary');
        if (stop === i) {
          if (boundaries.at(-1) !== at + i) boundaries.push(at + i);
          i = t.feed(chunk.subarray(0, i + 1), i);
        } else i = stop;
      }
    }
    expect(t.atBoundary).toBe(true);
    expect(boundaries).toEqual(starts);
  });

  it('stops before the close frame (and not before any other)', () => {
    for (const size of [1, 5, 1000, stream.length]) {
      const t = new WsFrameTracker();
      let stoppedAt = -1;
      for (let at = 0; at < stream.length && stoppedAt < 0; at += size) {
        const chunk = stream.subarray(at, Math.min(stream.length, at + size));
        const stop = t.feed(chunk, 0, 'close');
        if (stop < chunk.length) stoppedAt = at + stop;
      }
      expect(stoppedAt).toBe(starts[4]);
    }
  });
});

describe('connection drain mid-frame: a WebSocket is never closed inside a message', () => {
  // firstWrite: the message's start goes out in the same write as the 101 (the gateway
  // gets it with the upgrade answer, before the tunnel exists).
  it.each([{ firstWrite: false }, { firstWrite: true }])('the upstream is halfway through a message when the drain comes: the client gets the whole message, then 1001; the upstream gets a masked 1001 at once (message begun with the 101: $firstWrite)', async ({ firstWrite }) => {
    // A WebSocket upstream written by hand, so that it can stop in the middle of a frame.
    const half = 50_000;
    const fromGateway: Buffer[] = [];
    let upSocket: import('node:net').Socket | undefined;
    const blue = await startUpstream('blue');
    blue.server.on('upgrade', (req: IncomingMessage, socket: import('node:net').Socket) => {
      const accept = createHash('sha1').update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
      const answer = Buffer.from(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
      socket.on('data', (d: Buffer) => fromGateway.push(d));
      socket.on('error', () => {});
      // A binary message of 2 × half bytes: its header and the first half only.
      const head = Buffer.from([0x82, 127, 0, 0, 0, 0, 0, 0, 0, 0]);
      head.writeBigUInt64BE(BigInt(2 * half), 2);
      if (firstWrite) socket.write(Buffer.concat([answer, head, Buffer.alloc(half, 0x61)]));
      else {
        socket.write(answer);
        socket.write(Buffer.concat([head, Buffer.alloc(half, 0x61)]));
      }
      upSocket = socket;
    });
    const green = await startUpstream('green');
    let g: GatewayProcess | undefined;
    let client: WebSocket | undefined;
    try {
      g = await startProcess(shopConfig({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } }, {}, controlTop()));
      const received: number[] = [];
      const errors: string[] = [];
      let closeCode = 0;
      client = new WebSocket(wsUrl(g));
      const c = client;
      c.on('error', (e) => errors.push(e.message));
      c.on('message', (d: Buffer) => received.push(d.length));
      c.on('close', (code) => (closeCode = code));
      await new Promise<void>((r) => c.once('open', () => r()));
      await waitFor(() => upSocket !== undefined, { message: 'the upstream is halfway through its message' });
      const r = await api(g.controlUrl, 'POST', '/v1/services/shop/cutover', { body: { to: 'green', connections: { drain: '10ms' } } });
      expect(r.status, r.text).toBe(200);
      // The gateway tells the upstream at once (that direction is between frames): a
      // masked close frame, status 1001.
      const close = await waitFor(() => {
        const b = Buffer.concat(fromGateway);
        return b.length >= 8 ? b : undefined;
      }, { message: 'a close frame at the upstream' });
      expect(close.length).toBe(8);
      expect(close[0]).toBe(0x88);
      expect(close[1]).toBe(0x82);
      expect(((close[6] ^ close[2]) << 8) | (close[7] ^ close[3])).toBe(1001);
      // The client is still open: its close frame cannot go inside the message.
      expect(closeCode).toBe(0);
      expect(received).toEqual([]);
      // The upstream finishes its message and answers the close (with 1000: what the
      // client gets is the gateway's own 1001, never the upstream's frame passed on).
      upSocket!.write(Buffer.alloc(half, 0x61));
      upSocket!.end(Buffer.from([0x88, 0x02, 0x03, 0xe8]));
      await waitFor(() => closeCode !== 0, { message: 'the client closed' });
      expect(received).toEqual([2 * half]);
      expect(closeCode).toBe(1001);
      expect(errors).toEqual([]);
    } finally {
      client?.terminate();
      await g?.stop('SIGKILL');
      upSocket?.destroy();
      await blue.close();
      await green.close();
    }
  }, 60_000);
});

/** GET over an HTTP/2 session to shop.test: the status and the upstream's name. */
function h2get(s: http2.ClientHttp2Session, path: string, headers: http2.OutgoingHttpHeaders = {}): Promise<{ status: number; name: string }> {
  return new Promise((resolve, reject) => {
    const st = s.request({ ':method': 'GET', ':path': path, ':authority': 'shop.test', ...headers });
    let status = 0;
    let body = '';
    st.on('response', (h) => (status = Number(h[':status'])));
    st.on('data', (d: Buffer) => (body += d.toString()));
    st.on('end', () => resolve({ status, name: (JSON.parse(body) as { name: string }).name }));
    st.on('error', reject);
  });
}

describe('connection drain on cutover: HTTP/2 and HTTP/1.1 keep-alive', () => {
  let ca: TestCa;
  let blue: Upstream;
  let green: Upstream;
  let g: GatewayProcess | undefined;
  /** Requests to blue's /slow are held until released. */
  let release: (() => void)[] = [];

  beforeAll(async () => {
    ca = makeCa();
    const handler = (name: string) => (req: IncomingMessage, res: ServerResponse) => {
      req.resume();
      const answer = (): void => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ name }));
      };
      if (req.url === '/slow') release.push(answer);
      else answer();
    };
    blue = await startUpstream('blue', handler('blue'));
    green = await startUpstream('green', handler('green'));
  });

  /** Starts `g` with a TLS listener (blue 100, green 0; `service` merged into the
   * service); returns it and how to open an HTTP/2 session to it. */
  async function tlsGateway(service: Record<string, unknown> = {}): Promise<{ gw: GatewayProcess; connect: () => http2.ClientHttp2Session }> {
    const cert = ca.issue('shop', 'shop.test', ['shop.test']);
    const p = await startProcess(
      shopConfig(
        { blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } },
        service,
        controlTop({}, { gateway: { tls: { certificates: [{ cert: cert.cert, key: cert.key }], watch: false } } }),
      ),
    );
    g = p;
    return { gw: p, connect: () => http2.connect(p.url.replace('http:', 'https:'), { ca: ca.ca, servername: 'shop.test' }) };
  }

  afterEach(async () => {
    for (const r of release) r();
    release = [];
    await g?.stop('SIGKILL');
    g = undefined;
  });

  afterAll(async () => {
    await blue?.close();
    await green?.close();
  });

  it('an HTTP/2 session to blue gets GOAWAY after its stream in flight finished; its next request, on a new session, goes to green', async () => {
    const { gw, connect } = await tlsGateway();
    const s1 = connect();
    try {
      expect((await h2get(s1, '/')).name).toBe('blue');
      let goaway = 0;
      s1.on('goaway', () => (goaway = Date.now()));
      const closed = new Promise<number>((r) => s1.once('close', () => r(Date.now())));
      // A stream in flight on blue when the cutover is made.
      const slow = h2get(s1, '/slow');
      await waitFor(() => release.length === 1, { message: 'slow request at blue' });
      const cut = api(gw.controlUrl, 'POST', '/v1/services/shop/cutover', { body: { to: 'green', wait: true, timeout: '20s', connections: { drain: '1s' } } });
      // The session is told to go away within the window, while its stream still runs.
      await waitFor(() => goaway > 0, { message: 'GOAWAY' });
      // Still waiting for the stream (in flight) and the session (not closed yet).
      const early = await Promise.race([cut.then(() => 'answered'), new Promise((r) => setTimeout(r, 200, 'waiting'))]);
      expect(early).toBe('waiting');
      release.shift()!();
      const r = await slow;
      expect(r).toEqual({ status: 200, name: 'blue' });
      const closedAt = await closed;
      const res = await cut;
      expect(res.status, res.text).toBe(200);
      expect(res.json).toMatchObject({ drained: true, connections: { moved: 1, versions: ['blue'] } });
      expect(Date.now()).toBeGreaterThanOrEqual(closedAt);
      const s2 = connect();
      try {
        expect((await h2get(s2, '/')).name).toBe('green');
      } finally {
        s2.close();
      }
    } finally {
      s1.destroy();
    }
  }, 60_000);

  it('an HTTP/2 session that carried blue and holds a long stream to green: --wait answers once GOAWAY is sent and no blue stream is open; the green stream runs on and ends whole', async () => {
    const { gw, connect } = await tlsGateway({ override: { header: 'x-version' } });
    const s1 = connect();
    try {
      expect(await h2get(s1, '/')).toEqual({ status: 200, name: 'blue' });
      let goaway = false;
      s1.on('goaway', () => (goaway = true));
      // A tester's long request to green on the same session, open across the cutover.
      const long = h2get(s1, '/slow', { 'x-version': 'green' });
      await waitFor(() => release.length === 1, { message: 'slow request at green' });
      const res = await api(gw.controlUrl, 'POST', '/v1/services/shop/cutover', { body: { to: 'green', wait: true, timeout: '10s', connections: { drain: '1s' } } });
      expect(res.status, res.text).toBe(200);
      expect(res.json).toMatchObject({ drained: true, connections: { moved: 1, versions: ['blue'] } });
      // (The GOAWAY was sent before the answer; the client reads it in its own time.)
      await waitFor(() => goaway, { message: 'GOAWAY at the client' });
      expect(s1.destroyed).toBe(false);
      release.shift()!();
      expect(await long).toEqual({ status: 200, name: 'green' });
      expect((await shop(gw.controlUrl)).versions.blue.connectionsClosing).toBe(0);
    } finally {
      s1.destroy();
    }
  }, 60_000);

  it('a chosen HTTP/2 session that the client itself closes (its GOAWAY) before the drain reaches it is moved when the drain does, while its green stream runs on', async () => {
    const { gw, connect } = await tlsGateway({ override: { header: 'x-version' } });
    const s1 = connect();
    try {
      expect(await h2get(s1, '/')).toEqual({ status: 200, name: 'blue' });
      const long = h2get(s1, '/slow', { 'x-version': 'green' });
      await waitFor(() => release.length === 1, { message: 'slow request at green' });
      const cut = api(gw.controlUrl, 'POST', '/v1/services/shop/cutover', { body: { to: 'green', wait: true, timeout: '15s', connections: { drain: '4s' } } });
      await waitFor(async () => (await shop(gw.controlUrl)).versions.blue.connectionsClosing === 1, { message: 'session chosen' });
      s1.goaway(); // the client's own GOAWAY (NO_ERROR): its green stream goes on
      const res = await cut;
      expect(res.status, res.text).toBe(200);
      expect(res.json).toMatchObject({ drained: true, connections: { moved: 1, versions: ['blue'] } });
      release.shift()!();
      expect(await long).toEqual({ status: 200, name: 'green' });
    } finally {
      s1.destroy();
    }
  }, 60_000);

  it('an idle keep-alive connection whose last request went to blue is closed; one busy on blue is closed after its answer (Connection: close), never cut', async () => {
    g = await startProcess(shopConfig({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } }, {}, controlTop()));
    const port = Number(new URL(g.url).port);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
    const get = (path: string): Promise<{ status: number; name: string; connection: string | undefined; socket: unknown }> =>
      new Promise((resolve, reject) => {
        const req = http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve({ status: res.statusCode!, name: (JSON.parse(body) as { name: string }).name, connection: res.headers.connection, socket: req.socket }));
        });
        req.on('error', reject);
      });
    try {
      // Two keep-alive connections on blue: one idle, one holding a slow request.
      const [a, b] = await Promise.all([get('/'), get('/')]);
      expect([a.name, b.name]).toEqual(['blue', 'blue']);
      const idle = a.socket as import('node:net').Socket;
      const idleClosed = new Promise<void>((r) => idle.once('close', () => r()));
      const slow = get('/slow');
      await waitFor(() => release.length === 1, { message: 'slow request at blue' });
      // A short window: both are due within 10 ms; the idle one closes only once seen
      // idle at two sweeps 250 ms apart, so by then the busy one is marked too.
      const res = await api(g.controlUrl, 'POST', '/v1/services/shop/cutover', { body: { to: 'green', connections: { drain: '10ms' } } });
      expect(res.status, res.text).toBe(200);
      expect(res.json.connections).toEqual({ drain: '10ms', versions: ['blue'] });
      await idleClosed;
      // The busy one's request is answered (not cut), and told the connection closes.
      release.shift()!();
      const s = await slow;
      expect(s).toMatchObject({ status: 200, name: 'blue', connection: 'close' });
      expect((await get('/')).name).toBe('green');
      await waitFor(async () => (await shop(g!.controlUrl)).versions.blue.connectionsClosing === 0, { message: 'nothing left closing' });
    } finally {
      agent.destroy();
    }
  }, 60_000);
});

describe('connection drain: bad input changes nothing', () => {
  let g: GatewayProcess;
  let blue: Upstream;
  let green: Upstream;

  beforeAll(async () => {
    blue = await startUpstream('blue');
    green = await startUpstream('green');
    g = await startProcess(shopConfig({ blue: { weight: 100, endpoints: [blue.address] }, green: { weight: 0, endpoints: [green.address] } }, {}, controlTop()));
  });

  afterAll(async () => {
    await g?.stop('SIGKILL');
    await blue?.close();
    await green?.close();
  });

  it.each([
    ['a drain that is not a duration', { to: 'green', connections: { drain: 'soon' } }],
    ['a drain longer than 1h', { to: 'green', connections: { drain: '2h' } }],
    ['connections without drain', { to: 'green', connections: {} }],
    ['an unknown connections key', { to: 'green', connections: { drain: '1s', all: true } }],
    ['a drain not shorter than the wait', { to: 'green', wait: true, timeout: '5s', connections: { drain: '5s' } }],
  ])('cutover with %s: 400, weights and revision unchanged', async (_name, body) => {
    const before = await shop(g.controlUrl);
    const r = await api(g.controlUrl, 'POST', '/v1/services/shop/cutover', { body });
    expect(r.status, r.text).toBe(400);
    const after = await shop(g.controlUrl);
    expect(after.weights).toEqual({ blue: 100, green: 0 });
    expect(after.revision).toBe(before.revision);
  });

  it('a rollout with a bad drain: 400, no rollout', async () => {
    const r = await api(g.controlUrl, 'POST', '/v1/services/shop/rollout', { body: { to: 'green', steps: [100], interval: '1s', connections: { drain: '-1s' } } });
    expect(r.status, r.text).toBe(400);
    expect((await shop(g.controlUrl)).rollout).toBeNull();
  });

  it('the CLI refuses a bad --drain-connections before calling the API (exit 2)', async () => {
    const r = await runCli(['cutover', 'shop', '--to', 'green', '--drain-connections', 'later'], { url: g.controlUrl });
    expect(r.code).toBe(2);
    expect((await shop(g.controlUrl)).weights).toEqual({ blue: 100, green: 0 });
  });
});

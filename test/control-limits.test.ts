// What one client may hold of the control API (SECURITY.md "Control API limits"), against
// a real listening control API (in-process gateway) over raw HTTP:
//  - event streams per token (control.maxStreamsPerToken → 429 TOO_MANY_STREAMS), and
//    /v1/live's figures computed once per tick for every stream, not once per stream;
//  - control.timeouts: a request whose headers or body stall is answered 408 and closed,
//    while other clients are served;
//  - the failed-authentication limiter: keyed by IPv4 address or IPv6 /64 (IPv4-mapped
//    IPv6 as IPv4), and a refused client is never forgotten while refused, however many
//    other clients fail meanwhile.

import http from 'node:http';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import { shopConfig, startInProcess, startUpstream, waitFor, writeConfig, type InProcessGateway, type Upstream } from './helpers.js';
import { loadConfigFile, type ConfigError } from '../config/load.js';
import { api, controlTop, TOKENS } from './control-helpers.js';
import { AuthLimiter, clientKey } from '../control/authlimit.js';

interface Stream {
  status: number;
  /** The JSON body of a refused stream. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  json?: any;
  /** `data:` payloads received so far (live frames are JSON). */
  frames: string[];
  closed: Promise<void>;
  close(): void;
}

/** GET path with Accept: text/event-stream on its own connection; resolves on the status line. */
function openStream(base: string, path: string, token: string): Promise<Stream> {
  const u = new URL(path, base);
  return new Promise((resolve, reject) => {
    const req = http.get({ host: u.hostname, port: u.port, path: u.pathname + u.search, agent: false, headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' } }, (res) => {
      const frames: string[] = [];
      let buf = '';
      const closed = new Promise<void>((r) => res.socket.once('close', () => r()));
      const s: Stream = { status: res.statusCode ?? 0, frames, closed, close: () => req.destroy() };
      res.setEncoding('utf8');
      if (res.statusCode !== 200) {
        res.on('data', (d: string) => (buf += d));
        res.on('end', () => {
          s.json = JSON.parse(buf);
          resolve(s);
        });
        return;
      }
      res.on('data', (d: string) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n\n')) !== -1) {
          const frame = buf.slice(0, i);
          buf = buf.slice(i + 2);
          for (const line of frame.split('\n')) if (line.startsWith('data: ')) frames.push(line.slice(6));
        }
      });
      res.on('error', () => {});
      resolve(s);
    });
    req.on('error', reject);
  });
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function status(g: InProcessGateway): Promise<any> {
  const r = await api(g.controlUrl, 'GET', '/v1/status', { token: TOKENS.read });
  expect(r.status).toBe(200);
  return r.json;
}

describe('control API: event streams per token, and /v1/live work shared', () => {
  let up: Upstream;
  let g: InProcessGateway;
  const open: Stream[] = [];

  beforeAll(async () => {
    up = await startUpstream('blue');
    g = await startInProcess(shopConfig({ blue: { weight: 1, endpoints: [up.address] } }, {}, controlTop({ maxStreamsPerToken: 3 })));
  });

  afterAll(async () => {
    for (const s of open) s.close();
    await g?.close();
    await up?.close();
  });

  it('a token holds at most maxStreamsPerToken streams (events and live together): one more → 429 TOO_MANY_STREAMS JSON; other tokens and plain reads unaffected; closing one frees its slot', async () => {
    const mine = [
      await openStream(g.controlUrl, '/v1/events', TOKENS.read),
      await openStream(g.controlUrl, '/v1/live', TOKENS.read),
      await openStream(g.controlUrl, '/v1/events?since=0', TOKENS.read),
    ];
    open.push(...mine);
    expect(mine.map((s) => s.status)).toEqual([200, 200, 200]);

    for (const path of ['/v1/events', '/v1/live']) {
      const over = await openStream(g.controlUrl, path, TOKENS.read);
      open.push(over);
      expect(over.status, path).toBe(429);
      expect(over.json.error.code).toBe('TOO_MANY_STREAMS');
      expect(typeof over.json.error.message).toBe('string');
      expect(over.json.error.limit).toBe(3);
    }
    // Another token has its own slots.
    const other = await openStream(g.controlUrl, '/v1/events', TOKENS.deploy);
    open.push(other);
    expect(other.status).toBe(200);
    // Plain (non-stream) reads are not streams.
    expect((await api(g.controlUrl, 'GET', '/v1/events', { token: TOKENS.read })).status).toBe(200);
    expect((await api(g.controlUrl, 'GET', '/v1/live', { token: TOKENS.read })).status).toBe(200);
    expect((await status(g)).streams.open).toBe(4);

    // Closing one stream frees its slot once the server sees the connection close.
    mine[0].close();
    await mine[0].closed;
    await waitFor(async () => (await status(g)).streams.open === 3, { message: 'stream slot freed' });
    const again = await openStream(g.controlUrl, '/v1/events', TOKENS.read);
    open.push(again);
    expect(again.status).toBe(200);
    const full = await openStream(g.controlUrl, '/v1/live', TOKENS.read);
    open.push(full);
    expect(full.status).toBe(429);
  });
});

describe('control API: /v1/live figures computed once per tick, shared by every stream', () => {
  let up: Upstream;
  let g: InProcessGateway;
  const open: Stream[] = [];

  beforeAll(async () => {
    up = await startUpstream('blue');
    g = await startInProcess(shopConfig({ blue: { weight: 1, endpoints: [up.address] } }, {}, controlTop({ maxStreamsPerToken: 20 })));
  });

  afterAll(async () => {
    for (const s of open) s.close();
    await g?.close();
    await up?.close();
  });

  it('12 live streams: every stream gets the same frames, and the figures are computed once per frame, not once per stream', async () => {
    const before = (await status(g)).streams.liveFrames as number;
    for (let i = 0; i < 12; i++) open.push(await openStream(g.controlUrl, '/v1/live', TOKENS.read));
    expect(open.every((s) => s.status === 200)).toBe(true);
    // Four frames each beyond the first.
    await waitFor(() => open.every((s) => s.frames.length >= 5), { timeout: 20_000, message: 'five live frames on every stream' });
    for (const s of open) s.close();
    await waitFor(async () => (await status(g)).streams.live === 0, { message: 'live streams closed' });
    const after = (await status(g)).streams.liveFrames as number;

    // Every frame any stream saw is one computation; streams share them.
    const distinct = new Set(open.flatMap((s) => s.frames));
    const received = open.reduce((n, s) => n + s.frames.length, 0);
    expect(received).toBeGreaterThanOrEqual(60);
    // (A tick may compute one more frame while the streams are being closed.)
    expect(after - before).toBeGreaterThanOrEqual(distinct.size);
    expect(after - before).toBeLessThanOrEqual(distinct.size + 1);
    // Computed per tick (about 5–7 while the streams ran), where once per stream and tick would be ≥ 60.
    expect(distinct.size).toBeLessThanOrEqual(12);
    // The streams were fed the same frames: their fifth frames are at most two ticks apart.
    expect(new Set(open.map((s) => s.frames[4])).size).toBeLessThanOrEqual(2);
  });

  it('plain GET /v1/live shares the frame too: 30 reads in a row cost at most one computation per second they span', async () => {
    const before = (await status(g)).streams.liveFrames as number;
    const started = Date.now();
    const times = new Set<string>();
    for (let i = 0; i < 30; i++) {
      const r = await api(g.controlUrl, 'GET', '/v1/live', { token: TOKENS.read });
      expect(r.status).toBe(200);
      expect(r.headers['content-type']).toMatch(/^application\/json/);
      expect(r.json.services[0].name).toBe('shop');
      times.add(r.json.time);
    }
    const spanned = Date.now() - started;
    const after = (await status(g)).streams.liveFrames as number;
    // (The first read may still get the last frame of the streams above.)
    expect(after - before).toBeLessThanOrEqual(Math.floor(spanned / 1000) + 1);
    expect(times.size).toBeLessThanOrEqual(Math.floor(spanned / 1000) + 2);
  });
});

/** A raw connection to the control API; collects what the server sends until it closes. */
function rawConnection(base: string): Promise<{ socket: Socket; received: () => string; closed: Promise<number> }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: u.hostname, port: Number(u.port) }, () => {
      let data = '';
      socket.setEncoding('utf8');
      socket.on('data', (d: string) => (data += d));
      socket.on('error', () => {});
      const closed = new Promise<number>((r) => socket.once('close', () => r(Date.now())));
      resolve({ socket, received: () => data, closed });
    });
    socket.once('error', reject);
  });
}

describe('control API: control.timeouts cut a stalled request', () => {
  let up: Upstream;
  let g: InProcessGateway;

  beforeAll(async () => {
    up = await startUpstream('blue');
    g = await startInProcess(shopConfig({ blue: { weight: 1, endpoints: [up.address] } }, {}, controlTop({ timeouts: { headers: '500ms', request: '1s' } })));
  });

  afterAll(async () => {
    await g?.close();
    await up?.close();
  });

  it('headers and a partial body, then nothing: 408 REQUEST_TIMEOUT and closed within the request timeout (plus the check interval); an honest client is served meanwhile; nothing changed', async () => {
    const c = await rawConnection(g.controlUrl);
    const sent = Date.now();
    c.socket.write(
      `PUT /v1/services/shop/weights HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKENS.deploy}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"weights":{"blue"`,
    );
    // While the stalled request is held, others are answered.
    const honest = await api(g.controlUrl, 'GET', '/v1/services/shop', { token: TOKENS.read });
    expect(honest.status).toBe(200);
    const put = await api(g.controlUrl, 'PUT', '/v1/services/shop/weights', { body: { weights: { blue: 1 } } });
    expect(put.status).toBe(200);
    const revision = put.json.revision;

    const closedAt = await Promise.race([c.closed, new Promise<number>((r) => setTimeout(() => r(-1), 5000))]);
    expect(closedAt, 'the stalled connection was not closed within 5 s').toBeGreaterThan(0);
    // 1 s request timeout, checked every 125 ms (a quarter of the 500 ms headers timeout).
    expect(closedAt - sent).toBeGreaterThanOrEqual(900);
    expect(closedAt - sent).toBeLessThan(2500);
    const text = c.received();
    expect(text).toMatch(/^HTTP\/1\.1 408 /);
    expect(JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)).error.code).toBe('REQUEST_TIMEOUT');
    // The cut request changed nothing.
    expect((await api(g.controlUrl, 'GET', '/v1/services/shop', { token: TOKENS.read })).json.revision).toBe(revision);
  });

  it('headers sent a byte at a time and never finished: 408 and closed within the headers timeout', async () => {
    const c = await rawConnection(g.controlUrl);
    const sent = Date.now();
    c.socket.write('GET /v1/services HTTP/1.1\r\nHost: 127.0.0.1\r\n');
    // Trickle a header line (each byte well inside the timeout): the deadline counts
    // from the first byte, not from the last.
    const trickle = setInterval(() => c.socket.writable && c.socket.write('x'), 100);
    const closedAt = await Promise.race([c.closed, new Promise<number>((r) => setTimeout(() => r(-1), 5000))]);
    clearInterval(trickle);
    expect(closedAt, 'the stalled connection was not closed within 5 s').toBeGreaterThan(0);
    expect(closedAt - sent).toBeGreaterThanOrEqual(400);
    expect(closedAt - sent).toBeLessThan(2000);
    expect(c.received()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('headers over Node\'s 16 KB: 431 HEADERS_TOO_LARGE in the API\'s error shape, closed', async () => {
    const c = await rawConnection(g.controlUrl);
    c.socket.write(`GET /v1/services HTTP/1.1\r\nHost: 127.0.0.1\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`);
    await c.closed;
    const text = c.received();
    expect(text).toMatch(/^HTTP\/1\.1 431 /);
    expect(JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)).error.code).toBe('HEADERS_TOO_LARGE');
  });

  it('the timeouts are validated: headers longer than request is refused', async () => {
    const file = writeConfig(shopConfig({ blue: { weight: 1, endpoints: [up.address] } }, {}, controlTop({ timeouts: { headers: '5s', request: '1s' } })));
    let problems: string[] = [];
    try {
      loadConfigFile(file);
    } catch (err) {
      problems = (err as ConfigError).problems;
    }
    expect(problems).toContain('control.timeouts.headers: must not be longer than control.timeouts.request (the request includes its headers)');
  });
});

describe('failed-authentication limiter: client keys', () => {
  const cases: [string, string][] = [
    ['127.0.0.1', '127.0.0.1'],
    ['203.0.113.7', '203.0.113.7'],
    // A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6: the same client.
    ['::ffff:127.0.0.1', '127.0.0.1'],
    ['::FFFF:203.0.113.7', '203.0.113.7'],
    ['::ffff:cb00:7107', '203.0.113.7'],
    // IPv6: the /64, however the address is written.
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2::/64'],
    ['2001:db8:1:2::ffff', '2001:db8:1:2::/64'],
    ['2001:0DB8:0001:0002:aaaa:bbbb:cccc:dddd', '2001:db8:1:2::/64'],
    ['2001:db8:1:3::1', '2001:db8:1:3::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    ['2001:db8::', '2001:db8:0:0::/64'],
    ['64:ff9b::198.51.100.1', '64:ff9b:0:0::/64'],
  ];
  it.each(cases)('%s → %s', (ip, key) => {
    expect(clientKey(ip)).toBe(key);
  });

  it('failures from two addresses of one IPv6 /64 add up to one refusal for the whole /64; another /64 is untouched', () => {
    const lim = new AuthLimiter({ failures: 4, windowMs: 10_000, maxClients: 100 });
    expect(lim.failed('2001:db8:1:2::a')).toBe(false);
    expect(lim.failed('2001:db8:1:2::b')).toBe(false);
    expect(lim.failed('2001:db8:1:2:ffff::c')).toBe(false);
    expect(lim.failed('2001:db8:1:2::d')).toBe(true);
    expect(lim.refusedFor('2001:db8:1:2:1234:5678:9abc:def0')).toBeGreaterThan(0);
    expect(lim.refusedFor('2001:db8:1:3::a')).toBe(0);
    // IPv4 mapped and plain are one client.
    for (let i = 0; i < 3; i++) lim.failed('::ffff:192.0.2.1');
    expect(lim.failed('192.0.2.1')).toBe(true);
    expect(lim.refusedFor('::ffff:192.0.2.1')).toBeGreaterThan(0);
    expect(lim.refusedFor('192.0.2.2')).toBe(0);
  });

  it('a refused client stays refused while 10× maxClients other clients fail; its refusal ends with its window', () => {
    let now = 1_000_000;
    const lim = new AuthLimiter({ failures: 2, windowMs: 10_000, maxClients: 10 }, () => now);
    lim.failed('198.51.100.1');
    expect(lim.failed('198.51.100.1')).toBe(true);
    for (let i = 0; i < 100; i++) lim.failed(`203.0.113.${i}`);
    expect(lim.size.counting).toBeLessThanOrEqual(10);
    expect(lim.refusedFor('198.51.100.1')).toBe(10_000);
    now += 9_999;
    expect(lim.refusedFor('198.51.100.1')).toBe(1);
    now += 1;
    expect(lim.refusedFor('198.51.100.1')).toBe(0);
    expect(lim.size.refused).toBe(0);
    // Afterwards it starts afresh.
    expect(lim.failed('198.51.100.1')).toBe(false);
  });
});

describe('control API: a refused client is not forgotten while refused (real listener)', () => {
  let up: Upstream;
  let g: InProcessGateway;

  beforeAll(async () => {
    up = await startUpstream('blue');
    // A small table, so that filling it takes a few requests: eviction is what is tested.
    g = await startInProcess(shopConfig({ blue: { weight: 1, endpoints: [up.address] } }, {}, controlTop({ authRateLimit: { failures: 3, window: '30s', maxClients: 4 } })));
  });

  afterAll(async () => {
    await g?.close();
    await up?.close();
  });

  async function ask(token: string, from: string): Promise<number> {
    const agent = new Agent({ localAddress: from });
    try {
      const res = await request(`${g.controlUrl}/v1/services`, { dispatcher: agent, headers: { authorization: `Bearer ${token}` } });
      await res.body.text();
      return res.statusCode;
    } finally {
      await agent.close();
    }
  }

  it('127.0.0.9 refused, then 12 other addresses fail (3× the table): 127.0.0.9 is still refused, even with a valid token; they are too', async () => {
    for (let i = 0; i < 3; i++) expect(await ask(`wrong-token-${i}-xxxxxxxxxxxx`, '127.0.0.9')).toBe(401);
    expect(await ask(TOKENS.read, '127.0.0.9')).toBe(429);
    // Old code: a bounded table evicted its oldest entries, refused or not.
    for (let a = 10; a < 22; a++) {
      for (let i = 0; i < 3; i++) expect(await ask(`wrong-token-${i}-xxxxxxxxxxxx`, `127.0.0.${a}`)).toBe(401);
    }
    expect(await ask(TOKENS.read, '127.0.0.9')).toBe(429);
    expect(await ask(TOKENS.read, '127.0.0.21')).toBe(429);
    expect(await ask(TOKENS.read, '127.0.0.10')).toBe(429);
    // An address that never failed is served.
    expect(await ask(TOKENS.read, '127.0.0.30')).toBe(200);
  });

  it('failures below the limit from many addresses are forgotten oldest first (the table stays bounded)', async () => {
    for (let a = 40; a < 50; a++) expect(await ask('wrong-token-once-xxxxxxxxx', `127.0.0.${a}`)).toBe(401);
    const size = g.gw.api.authClients;
    expect(size.counting).toBeLessThanOrEqual(4);
    expect(size.refused).toBe(13);
  });
});

describe('control API: a refused client outlives a full table (default bound, real listener)', () => {
  let up: Upstream;
  let g: InProcessGateway;

  beforeAll(async () => {
    up = await startUpstream('blue');
    // Only keys that exist on every version: the default table bound (10,000 clients).
    g = await startInProcess(shopConfig({ blue: { weight: 1, endpoints: [up.address] } }, {}, controlTop({ authRateLimit: { failures: 2, window: '60s' } })));
  });

  afterAll(async () => {
    await g?.close();
    await up?.close();
  });

  /** One request from `from` on its own connection; the status. */
  function askFrom(token: string, from: string): Promise<number> {
    const u = new URL(g.controlUrl);
    return new Promise((resolve, reject) => {
      const req = http.get({ host: u.hostname, port: u.port, path: '/v1/services', localAddress: from, agent: false, headers: { authorization: `Bearer ${token}` } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
    });
  }

  it('127.0.0.9 refused, then one failure from each of 10,001 other addresses: 127.0.0.9 is still refused', async () => {
    expect(await askFrom('wrong-token-a-xxxxxxxxxxxx', '127.0.0.9')).toBe(401);
    expect(await askFrom('wrong-token-b-xxxxxxxxxxxx', '127.0.0.9')).toBe(401);
    expect(await askFrom(TOKENS.read, '127.0.0.9')).toBe(429);
    // 10,001 clients, each one failure below the limit: past the table's bound.
    const addresses = Array.from({ length: 10_001 }, (_, i) => `127.1.${i >> 8}.${i & 255}`);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < addresses.length) {
        const from = addresses[next++];
        expect(await askFrom('wrong-token-c-xxxxxxxxxxxx', from)).toBe(401);
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    expect(await askFrom(TOKENS.read, '127.0.0.9')).toBe(429);
    expect(await askFrom('wrong-token-d-xxxxxxxxxxxx', '127.0.0.9')).toBe(429);
    expect(g.gw.api.authClients.counting).toBeLessThanOrEqual(10_000);
  }, 120_000);
});

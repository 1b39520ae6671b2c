// The HTTP/1.1 engine on real loopback sockets: framing, keep-alive, pipelining order,
// 100-continue, body backpressure, timeouts and refusals. (The gateway's behaviour on
// top of it is covered by the suites under test/.)

import net, { type AddressInfo, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { H1Engine, type H1Handlers, type H1Limits, type H1Request, type H1Response } from './engine.js';

const limits: H1Limits = { maxHeaderSize: 16 * 1024, maxHeaderCount: 100, headersMs: 400, requestMs: 2000, keepAliveMs: 2000 };

const servers: net.Server[] = [];
const engines: H1Engine[] = [];

afterEach(async () => {
  for (const e of engines.splice(0)) e.closeAll();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

interface Refusal {
  status: number;
  code: string;
}

async function start(handlers: Partial<H1Handlers>, l: H1Limits = limits): Promise<{ port: number; refusals: Refusal[]; engine: H1Engine }> {
  const refusals: Refusal[] = [];
  const engine = new H1Engine(
    {
      request: handlers.request ?? ((_req, res) => res.writeHead(200, ['content-length', '2']).end('ok')),
      checkContinue:
        handlers.checkContinue ??
        ((req, res) => {
          res.writeContinue();
          (handlers.request as H1Handlers['request'])(req, res);
        }),
      upgrade: handlers.upgrade ?? ((_req, socket) => socket.destroy()),
      connect: handlers.connect ?? ((_req, socket) => socket.end('HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')),
      refuse:
        handlers.refuse ??
        ((socket, status, code) => {
          refusals.push({ status, code });
          socket.end(`HTTP/1.1 ${status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
        }),
    },
    l,
  );
  engines.push(engine);
  const server = net.createServer((s) => engine.accept(s));
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, refusals, engine };
}

/** Sends `data` on a new connection and collects everything until the server closes or `until` matches. */
function exchange(port: number, data: string | Buffer, until?: (got: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    s.on('data', (d) => {
      got += d.toString('latin1');
      if (until?.(got) === true) {
        s.destroy();
        resolve(got);
      }
    });
    s.on('close', () => resolve(got));
    s.on('error', reject);
    s.write(data);
  });
}

/** Reads the body of a request through the engine's read()/readable interface. */
function readBody(req: H1Request): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    const pump = (): void => {
      for (;;) {
        const c = req.read();
        if (c !== null) {
          parts.push(c);
          continue;
        }
        if (req.readableEnded) {
          req.off('readable', pump);
          resolve(Buffer.concat(parts));
        } else if (req.destroyed) reject(new Error('aborted'));
        return;
      }
    };
    req.on('readable', pump);
    req.on('close', pump);
    pump();
  });
}

async function waitUntil(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setImmediate(r));
}

function count(s: string, sub: string): number {
  return s.split(sub).length - 1;
}

describe('H1Engine', () => {
  it('answers with a length-framed response and keeps the connection', async () => {
    const { port } = await start({});
    const got = await exchange(port, 'GET / HTTP/1.1\r\nhost: a\r\n\r\nGET / HTTP/1.1\r\nhost: a\r\n\r\n', (g) => count(g, '\r\n\r\nok') === 2);
    expect(count(got, 'HTTP/1.1 200 OK')).toBe(2);
    expect(got).toMatch(/keep-alive: timeout=2\r\n/);
    expect(got).toMatch(/date: .+ GMT\r\n/);
  });

  it('answers pipelined requests in order, one at a time', async () => {
    let active = 0;
    let most = 0;
    const { port } = await start({
      request: (req, res) => {
        active++;
        most = Math.max(most, active);
        // The first answers last: order must still hold.
        const delay = req.url === '/1' ? 30 : 0;
        setTimeout(() => {
          active--;
          res.writeHead(200, ['content-length', String(req.url?.length)]).end(req.url);
        }, delay);
      },
    });
    const got = await exchange(port, 'GET /1 HTTP/1.1\r\nhost: a\r\n\r\nGET /2 HTTP/1.1\r\nhost: a\r\n\r\nGET /3 HTTP/1.1\r\nhost: a\r\n\r\n', (g) => g.endsWith('/3'));
    expect([...got.matchAll(/\r\n\r\n(\/\d)/g)].map((m) => m[1])).toEqual(['/1', '/2', '/3']);
    expect(most).toBe(1);
  });

  it('frames a response without a length as chunked for HTTP/1.1 and until close for HTTP/1.0', async () => {
    const h: Partial<H1Handlers> = {
      request: (_req, res) => {
        res.writeHead(200, ['x-a', 'b']);
        res.write(Buffer.from('hello '));
        res.end(Buffer.from('world'));
      },
    };
    const { port } = await start(h);
    const one = await exchange(port, 'GET / HTTP/1.1\r\nhost: a\r\n\r\n', (g) => g.endsWith('0\r\n\r\n'));
    expect(one).toMatch(/transfer-encoding: chunked\r\n/);
    expect(one.split('\r\n\r\n')[1]).toBe('6\r\nhello \r\n5\r\nworld\r\n0');
    const ten = await exchange(port, 'GET / HTTP/1.0\r\n\r\n');
    expect(ten).not.toMatch(/transfer-encoding/);
    expect(ten).toMatch(/connection: close\r\n/);
    expect(ten.endsWith('\r\n\r\nhello world')).toBe(true);
  });

  it('keeps an HTTP/1.0 connection only when asked to', async () => {
    const { port } = await start({});
    const got = await exchange(port, 'GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n');
    expect(count(got, 'HTTP/1.1 200 OK')).toBe(2);
    expect(count(got, 'connection: keep-alive')).toBe(1);
    expect(count(got, 'connection: close')).toBe(1);
  });

  it('sends no body for HEAD, 204 and 304', async () => {
    const { port } = await start({
      request: (req, res) => {
        const status = req.url === '/204' ? 204 : req.url === '/304' ? 304 : 200;
        res.writeHead(status, []);
        res.end(Buffer.from('never'));
      },
    });
    const got = await exchange(port, 'HEAD / HTTP/1.1\r\nhost: a\r\n\r\nGET /204 HTTP/1.1\r\nhost: a\r\n\r\nGET /304 HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n');
    expect(got).not.toMatch(/never|transfer-encoding|\r\n0\r\n/);
    expect(count(got, 'HTTP/1.1 ')).toBe(3);
  });

  it('closes after a response to Connection: close, its client reading everything first', async () => {
    const { port } = await start({});
    const got = await exchange(port, 'GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\nGET / HTTP/1.1\r\nhost: a\r\n\r\n');
    expect(count(got, 'HTTP/1.1 200 OK')).toBe(1);
    expect(got).toMatch(/connection: close\r\n/);
  });

  it('streams a request body through read(), a content-length one and a chunked one', async () => {
    const bodies: string[] = [];
    const { port } = await start({
      request: (req, res) => {
        void readBody(req).then((b) => {
          bodies.push(b.toString());
          res.writeHead(200, ['content-length', '0']).end();
        });
      },
    });
    await exchange(port, 'POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhelloPOST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n', (g) => count(g, 'HTTP/1.1 200') === 2);
    expect(bodies).toEqual(['hello', 'abcde']);
  });

  it('sends 100 Continue only when the handler allows the body', async () => {
    let body = '';
    const { port } = await start({
      checkContinue: (req, res) => {
        if (req.url === '/no') {
          res.writeHead(413, ['content-length', '0', 'connection', 'close']).end();
          return;
        }
        res.writeContinue();
        void readBody(req).then((b) => {
          body = b.toString();
          res.writeHead(200, ['content-length', '0']).end();
        });
      },
    });
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    s.on('data', (d) => {
      got += d.toString();
      if (got === 'HTTP/1.1 100 Continue\r\n\r\n') s.write('hi');
    });
    s.write('PUT /yes HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n');
    await waitUntil(() => got.includes('HTTP/1.1 200'));
    s.destroy();
    expect(body).toBe('hi');
    const no = await exchange(port, 'PUT /no HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n');
    expect(no).not.toMatch(/100 Continue/);
    expect(no).toMatch(/^HTTP\/1.1 413/);
  });

  it('stops reading a body nobody takes, and reads on when it is taken', async () => {
    let got!: (v: [H1Request, H1Response]) => void;
    const placed = new Promise<[H1Request, H1Response]>((r) => (got = r));
    const { port } = await start({ request: (q, r) => got([q, r]) });
    const s = net.connect(port, '127.0.0.1');
    // More than loopback's socket buffers hold: the client cannot send it all unless
    // the engine reads on.
    const total = 64 * 1024 * 1024;
    s.write(`POST / HTTP/1.1\r\nhost: a\r\ncontent-length: ${total}\r\n\r\n`);
    s.write(Buffer.alloc(total, 97));
    const [req, res] = await placed;
    await waitUntil(() => req.socket.isPaused());
    // Paused at the high-water mark: at most one socket read past it is held.
    expect(req.buffered).toBeLessThan(64 * 1024 + 256 * 1024);
    expect(s.writableLength).toBeGreaterThan(0);
    const body = await readBody(req);
    expect(body.length).toBe(total);
    res.writeHead(200, ['content-length', '0']).end();
    s.destroy();
  });

  it('refuses a malformed request with the reader status, and one too slow with 408', async () => {
    const { port, refusals } = await start({});
    await exchange(port, 'GET / HTTP/1.1\r\nho st: a\r\n\r\n');
    expect(refusals.at(-1)?.status).toBe(400);
    const slow = await exchange(port, 'GET / HTTP/1.1\r\nhost: a\r\n');
    expect(slow).toMatch(/^HTTP\/1.1 408/);
    expect(refusals.at(-1)?.status).toBe(408);
  });

  it('answers a malformed pipelined request only after the response before it', async () => {
    const { port, refusals } = await start({
      request: (_req, res) => setTimeout(() => res.writeHead(200, ['content-length', '2']).end('ok'), 20),
    });
    const got = await exchange(port, 'GET / HTTP/1.1\r\nhost: a\r\n\r\nGET / HTTP/1.1\r\nbad header\r\n\r\n');
    expect(got.indexOf('HTTP/1.1 200')).toBe(0);
    expect(got).toMatch(/\r\n\r\nokHTTP\/1.1 400/);
    expect(refusals.map((r) => r.status)).toEqual([400]);
  });

  it('closes an idle keep-alive connection after keepAliveMs, and one that never spoke after headersMs', async () => {
    const { port, engine } = await start({}, { ...limits, keepAliveMs: 200, headersMs: 200 });
    const got = await exchange(port, 'GET / HTTP/1.1\r\nhost: a\r\n\r\n');
    expect(count(got, 'HTTP/1.1 200')).toBe(1);
    const silent = await exchange(port, '');
    expect(silent).toBe('');
    await waitUntil(() => engine.connections === 0);
  });

  it('tells the handler when the client leaves mid-request', async () => {
    let closed!: () => void;
    const gone = new Promise<void>((r) => (closed = r));
    let placed!: () => void;
    const inHandler = new Promise<void>((r) => (placed = r));
    const { port } = await start({
      request: (_req, res) => {
        res.once('close', closed);
        placed();
      },
    });
    const s = net.connect(port, '127.0.0.1');
    s.write('GET / HTTP/1.1\r\nhost: a\r\n\r\n');
    await inHandler;
    s.destroy();
    await gone;
  });

  it('hands an upgrade its socket with the bytes that followed the head', async () => {
    let rest = '';
    let url = '';
    const { port } = await start({
      upgrade: (req, socket: Socket, head) => {
        url = req.url;
        rest = head.toString();
        socket.end('HTTP/1.1 101 Switching Protocols\r\n\r\n');
      },
    });
    await exchange(port, 'GET /ws HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nframes');
    expect(url).toBe('/ws');
    expect(rest).toBe('frames');
  });
});

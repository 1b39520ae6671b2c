// HTTP/2 with prior knowledge on the plain listener (RFC 9113 §3.3): a client may open
// a cleartext connection with the HTTP/2 connection preface instead of an HTTP/1.1
// request. Each new connection's first bytes are read: the preface hands the socket to
// an HTTP/2 server, anything else to the HTTP/1.1 server, with the bytes read put back.
// HTTP/1.1 clients see no difference (a request line can never start like the preface).
// A connection that sends nothing is closed after gateway.timeouts.headers, as the
// HTTP/1.1 server would.

import type http from 'node:http';
import type { Http2Server } from 'node:http2';
import type { Socket } from 'node:net';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/**
 * Routes the connections of `h1` between itself and `h2` by their first bytes. Node's
 * own connection handler of `h1` is taken off and called for HTTP/1.1 connections;
 * listeners added before (connection limits) still run first on every connection.
 */
export function acceptPriorKnowledge(h1: http.Server, h2: Http2Server, headersTimeoutMs: number): void {
  const own = h1.listeners('connection') as ((socket: Socket) => void)[];
  h1.removeAllListeners('connection');
  const toHttp1 = (socket: Socket): void => {
    for (const fn of own) fn.call(h1, socket);
  };
  h1.on('connection', (socket: Socket) => {
    if (socket.destroyed) return;
    let buf: Buffer | undefined;
    const timer = setTimeout(() => socket.destroy(), headersTimeoutMs);
    timer.unref();
    const stop = (): void => {
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('close', stop);
      socket.off('error', stop);
    };
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while ((chunk = socket.read() as Buffer | null) !== null) buf = buf === undefined ? chunk : Buffer.concat([buf, chunk]);
      if (buf === undefined) return;
      const n = Math.min(buf.length, PREFACE.length);
      const h2ish = buf.compare(PREFACE, 0, n, 0, n) === 0;
      // A prefix of the preface: wait for the rest.
      if (h2ish && buf.length < PREFACE.length) return;
      stop();
      socket.unshift(buf);
      if (h2ish) h2.emit('connection', socket);
      else toHttp1(socket);
    };
    socket.on('readable', onReadable);
    socket.once('close', stop);
    socket.once('error', stop);
  });
}

// Connection drain: after a cutover or a rollout step, the long-lived connections pinned
// to a version that lost weight are closed gracefully, spread over a window, so that
// their clients reconnect — and land where the new weights send them.
//
// What is pinned to a version:
// - a WebSocket (or other upgrade) tunnel: its upstream is an endpoint of the version;
// - an HTTP/2 session: any of its requests went to the version (it may carry several);
// - an HTTP/1.1 keep-alive connection: its last request went to the version.
//
// How each closes, never cutting a request:
// - a WebSocket finishes the frame in progress each way, then gets a close frame 1001
//   "going away" on both sides (gateway/tunnel.ts);
// - an HTTP/2 session gets a GOAWAY: its open streams finish, the client opens a new
//   session for its next request (it counts as moved once its streams to the drained
//   version have ended, though streams to other versions may still run on it);
// - an HTTP/1.1 connection answers its next response with `Connection: close`, and is
//   closed when it has been seen idle at two sweeps QUIET_MS apart with no request in
//   between (the shutdown's rule: a connection idle only now may have a request on the
//   wire).
//
// Spread: the chosen connections are shuffled, and the i-th of n closes at a random
// moment within the i-th n-th of the window (stratified jitter): evenly spread, never in
// bursts, the last one before the window ends. Each is counted on its version
// (VersionStats.closing) from the moment it is chosen until its socket has closed, which
// is what `cutover --wait` waits for.

import type { Http2Session } from 'node:http2';
import type { ClientRequest, ClientResponse } from './io.js';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { VersionStats } from './endpoint.js';
import type { Tunnel } from './tunnel.js';

/** What the control plane asks of every data-plane process: close `shares[version]`
 * (0..1) of the connections pinned to each version named, over `windowMs`. */
export interface ConnectionDrainOrder {
  /** Unique per order: a process applies an order once, however often it is sent. */
  id: string;
  service: string;
  shares: Record<string, number>;
  windowMs: number;
}

/** Marks an HTTP/1.1 socket whose responses must now say `Connection: close`. */
export const kCloseAfterResponse = Symbol('switchyard.closeAfterResponse');
/** An HTTP/1.1 socket's record (on the socket itself: no lookup per request). */
const kConn = Symbol('switchyard.h1conn');
export type MarkedSocket = Duplex & { [kCloseAfterResponse]?: boolean; [kConn]?: H1Conn };
type TrackedResponse = ClientResponse & { [kConn]?: H1Conn };

/** A response ended (or its connection closed): one request fewer on its connection.
 * (One function for every response, not a closure per request.) */
function onResponseClose(this: TrackedResponse): void {
  const c = this[kConn];
  if (c === undefined) return;
  this[kConn] = undefined;
  c.busy--;
}

/** How long an HTTP/1.1 connection being drained must stay idle before it is closed. */
const QUIET_MS = 250;

interface H1Conn {
  socket: MarkedSocket;
  /** The version its last request went to. */
  last: VersionStats;
  /** Requests started on it so far; requests being answered now. */
  started: number;
  busy: number;
  drainedFrom: VersionStats | undefined;
}

interface H2Conn {
  session: Http2Session;
  versions: Set<VersionStats>;
  /** Streams open now, per version. */
  open: Map<VersionStats, number>;
  drainedFrom: VersionStats | undefined;
  /** A drain sent it GOAWAY: it takes no new stream. */
  goneAway: boolean;
}

/** One chosen connection: how it is closed, and whether it is already closed. */
interface Chosen {
  close(): void;
  open(): boolean;
}

export class ConnectionDrainer {
  private readonly h1 = new Set<H1Conn>();
  private readonly h2 = new Map<Http2Session, H2Conn>();
  /** HTTP/1.1 connections due to close, and whether each was idle at the last sweep
   * (with the request count seen then). */
  private readonly quiet = new Map<H1Conn, string | undefined>();
  private sweep: NodeJS.Timeout | undefined;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly tunnels: () => Iterable<Tunnel>,
    private readonly log: Logger,
  ) {}

  // ---- what the request path tells it ----

  /** An HTTP/1.1 request placed on `version`; returns once it was registered. */
  h1Request(req: ClientRequest, res: ClientResponse, version: VersionStats): void {
    const socket = req.socket as MarkedSocket;
    let conn = socket[kConn];
    if (conn === undefined) {
      const c: H1Conn = { socket, last: version, started: 0, busy: 0, drainedFrom: undefined };
      socket[kConn] = c;
      this.h1.add(c);
      socket.once('close', () => this.h1Closed(c));
      conn = c;
    }
    conn.last = version;
    conn.started++;
    conn.busy++;
    (res as TrackedResponse)[kConn] = conn;
    // (`on`: a response closes once, and once() would wrap the listener per request.)
    res.on('close', onResponseClose);
  }

  /** The socket is a tunnel from now on (an upgrade on a keep-alive connection): it
   * leaves the HTTP/1.1 connections, and a drain reaches it as a tunnel, at a frame
   * boundary, never as an idle keep-alive. */
  forget(socket: Duplex): void {
    const c = (socket as MarkedSocket)[kConn];
    if (c === undefined) return;
    (socket as MarkedSocket)[kConn] = undefined;
    this.h1Closed(c);
  }

  private h1Closed(c: H1Conn): void {
    this.h1.delete(c);
    this.quiet.delete(c);
    this.settle(c);
  }

  /** An HTTP/2 request placed on `version`, on its stream. A session told to go away is
   * moved once no stream of the version it was drained from is open: streams it carries
   * to other versions run on without holding `cutover --wait`. */
  h2Request(session: Http2Session, stream: { once(event: 'close', fn: () => void): unknown }, version: VersionStats): void {
    let c = this.h2.get(session);
    if (c === undefined) {
      c = { session, versions: new Set(), open: new Map(), drainedFrom: undefined, goneAway: false };
      this.h2.set(session, c);
      const conn = c;
      session.once('close', () => {
        this.h2.delete(session);
        this.settle(conn);
      });
    }
    c.versions.add(version);
    c.open.set(version, (c.open.get(version) ?? 0) + 1);
    const conn = c;
    stream.once('close', () => {
      const n = (conn.open.get(version) ?? 1) - 1;
      if (n > 0) conn.open.set(version, n);
      else conn.open.delete(version);
      if (n <= 0 && conn.goneAway && conn.drainedFrom === version) this.settle(conn);
    });
  }

  /** A tunnel that was chosen by a drain has closed. */
  tunnelClosed(t: Tunnel): void {
    this.settle(t);
  }

  /** A connection closed: if a drain chose it, it is moved (and no longer waited for). */
  private settle(c: { drainedFrom: VersionStats | undefined }): void {
    const st = c.drainedFrom;
    if (st === undefined) return;
    c.drainedFrom = undefined;
    st.connectionClosed();
  }

  // ---- the drain ----

  /** Chooses the connections the order names and schedules their closes. Returns how
   * many were chosen. */
  drain(order: ConnectionDrainOrder, statsOf: (version: string) => VersionStats): number {
    const share = new Map<VersionStats, number>();
    for (const [v, s] of Object.entries(order.shares)) if (s > 0) share.set(statsOf(v), Math.min(1, s));
    const pick = (st: VersionStats | undefined): boolean => {
      const s = st === undefined ? undefined : share.get(st);
      return s !== undefined && (s >= 1 || Math.random() < s);
    };
    const chosen: Chosen[] = [];
    const choose = (c: { drainedFrom: VersionStats | undefined }, st: VersionStats, ch: Chosen): void => {
      c.drainedFrom = st;
      st.closing++;
      chosen.push(ch);
    };
    for (const t of this.tunnels()) {
      if (!t.open || t.drainedFrom !== undefined || t.goingAway || !pick(t.stats)) continue;
      choose(t, t.stats, { close: () => t.goAway(), open: () => t.open });
    }
    for (const c of this.h2.values()) {
      if (c.drainedFrom !== undefined || c.goneAway || c.session.closed || c.session.destroyed) continue;
      // Charged to a version it has a stream open to, if it has one: that stream is what
      // it is waited for.
      let st: VersionStats | undefined;
      for (const v of c.versions) if (pick(v) && (st === undefined || !c.open.has(st))) st = v;
      if (st === undefined) continue;
      const from = st;
      // (A session already closing — the client's GOAWAY, say — takes no new stream
      // either: it is moved as soon as its streams to the version have ended.)
      const close = (): void => {
        if (!c.session.closed) c.session.close();
        c.goneAway = true;
        if (!c.open.has(from)) this.settle(c);
      };
      choose(c, st, { close, open: () => !c.session.destroyed });
    }
    for (const c of this.h1) {
      if (c.drainedFrom !== undefined || c.socket.destroyed || !pick(c.last)) continue;
      choose(c, c.last, { close: () => this.closeH1(c), open: () => !c.socket.destroyed && this.h1.has(c) });
    }
    shuffle(chosen);
    const n = chosen.length;
    for (let i = 0; i < n; i++) {
      const ch = chosen[i];
      const at = n === 0 ? 0 : (order.windowMs * (i + Math.random())) / n;
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        if (ch.open()) ch.close();
      }, at);
      timer.unref();
      this.timers.add(timer);
    }
    if (n > 0) this.log.info({ service: order.service, shares: order.shares, connections: n, windowMs: order.windowMs }, 'connection drain: closing connections pinned to versions that lost weight');
    return n;
  }

  /** Its next response is its last; closed once seen quiet. */
  private closeH1(c: H1Conn): void {
    // (A response whose head is not written yet says it too: the Exchange reads the mark
    // when it writes the head.)
    c.socket[kCloseAfterResponse] = true;
    this.quiet.set(c, undefined);
    this.sweep ??= setInterval(() => this.sweepQuiet(), QUIET_MS);
    this.sweep.unref();
    this.sweepQuiet();
  }

  private sweepQuiet(): void {
    for (const [c, seen] of this.quiet) {
      if (c.socket.destroyed) {
        this.quiet.delete(c);
        continue;
      }
      // Quiet means no request placed and no byte read between two sweeps: a request
      // whose head is still arriving has not been placed yet, but its bytes count.
      const mark = `${c.started}:${(c.socket as { bytesRead?: number }).bytesRead ?? 0}`;
      if (c.busy > 0) this.quiet.set(c, undefined);
      else if (seen === mark) {
        this.quiet.delete(c);
        c.socket.destroy();
      } else this.quiet.set(c, mark);
    }
    if (this.quiet.size === 0 && this.sweep !== undefined) {
      clearInterval(this.sweep);
      this.sweep = undefined;
    }
  }

  /** Stops the scheduled closes (the server is closing everything anyway). */
  close(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    if (this.sweep !== undefined) clearInterval(this.sweep);
    this.sweep = undefined;
  }
}

function shuffle<T>(a: T[]): void {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
}

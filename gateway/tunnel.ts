// A tunnel: the two sockets of an upgraded connection (WebSocket), pumped both ways.
//
// A WebSocket tunnel knows where each direction's frames begin and end (it reads the
// frame headers as the bytes pass, never the payloads), so that the gateway can end it
// gracefully at any time — at shutdown, after gateway.upgrades.idleTimeout, or when a
// connection drain moves it off its version: each direction first finishes the frame it
// is in the middle of (a close frame must never land inside another frame), then the
// gateway sends a close frame 1001 "going away" — unmasked to the client (the gateway is
// its server), masked to the upstream (the gateway is its client, RFC 6455 §5.3) — and
// ends the socket. Frames that arrive after that are dropped: their sender has been told
// the connection is going away, and nothing it sends later is acknowledged on it.

import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import type { VersionStats } from './endpoint.js';

/** Close frame, status 1001 "going away", server → client (unmasked). */
export const WS_GOING_AWAY = Buffer.from([0x88, 0x02, 0x03, 0xe9]);

/** Close frame, status 1001 "going away", client → server (masked with a fresh key). */
export function maskedGoingAway(): Buffer {
  const mask = randomBytes(4);
  return Buffer.from([0x88, 0x82, mask[0], mask[1], mask[2], mask[3], 0x03 ^ mask[0], 0xe9 ^ mask[1]]);
}

/** Where WsFrameTracker.feed stops: nowhere, at the next frame boundary, or at the
 * boundary before the next close frame. */
export type StopAt = 'none' | 'boundary' | 'close';

/**
 * Follows the frame structure of one direction of a WebSocket byte stream: a state
 * machine over the header bytes (2 to 14 of them) and a count of the payload bytes left.
 * Resumable at any byte; it never copies a payload.
 */
export class WsFrameTracker {
  /** Header bytes of the frame being read (up to 14). */
  private readonly head = Buffer.alloc(14);
  private headLen = 0;
  /** Payload bytes of the current frame still to come. */
  private remaining = 0;

  /** No frame is partly through: the next byte starts a new frame. */
  get atBoundary(): boolean {
    return this.headLen === 0 && this.remaining === 0;
  }

  /**
   * Reads `chunk` from `from` and returns the offset it stopped at: the end of the
   * chunk, or (per `stop`) the first frame boundary, or the first boundary followed by
   * a close frame (opcode 8) — at `from` itself when it already is one.
   */
  feed(chunk: Buffer, from = 0, stop: StopAt = 'none'): number {
    let i = from;
    const n = chunk.length;
    while (i < n) {
      if (stop !== 'none' && this.atBoundary && (stop === 'boundary' || (chunk[i] & 0x0f) === 0x08)) return i;
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, n - i);
        this.remaining -= take;
        i += take;
        continue;
      }
      // Header bytes.
      this.head[this.headLen++] = chunk[i++];
      const need = headerLength(this.head, this.headLen);
      if (need !== undefined && this.headLen === need) {
        this.remaining = payloadLength(this.head);
        this.headLen = 0;
      }
    }
    return i;
  }
}

/** The full header length once enough of it is known (2 bytes tell it). */
function headerLength(h: Buffer, have: number): number | undefined {
  if (have < 2) return undefined;
  const len7 = h[1] & 0x7f;
  const masked = (h[1] & 0x80) !== 0 ? 4 : 0;
  return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + masked;
}

function payloadLength(h: Buffer): number {
  const len7 = h[1] & 0x7f;
  if (len7 === 126) return h.readUInt16BE(2);
  if (len7 === 127) return Number(h.readBigUInt64BE(2));
  return len7;
}

/** How long a tunnel that is going away waits for a frame in progress to finish and
 * for its peers to close, before its sockets are destroyed. */
export const GOING_AWAY_MS = 5000;

/** How long the upstream has to answer the gateway's close frame (flushing the replies
 * it had queued before it) before the client is sent its close frame anyway; a busy
 * upstream gets time, a silent one does not hold the client. */
export const CLOSE_REPLY_MS = 3000;

/** One direction of a WebSocket tunnel. */
interface Direction {
  src: Duplex;
  dst: Duplex;
  tracker: WsFrameTracker;
  /** Where forwarding is to stop (then `stopped` runs once). */
  stop: StopAt;
  /** Forwarding has stopped: whatever src sends now is read and dropped. */
  stopped: boolean;
  onStop: () => void;
}

export class Tunnel {
  /** Going away: the close frames are on their way (or sent). */
  goingAway = false;
  /** Set by a connection drain: the version it is counted on until it closes. */
  drainedFrom: VersionStats | undefined;
  private closed = false;
  private toUpstream: Direction | undefined;
  private toClient: Direction | undefined;
  private readonly onClosed: (t: Tunnel) => void;

  constructor(
    readonly client: Duplex,
    readonly upstream: Socket,
    readonly websocket: boolean,
    /** The version the upstream belongs to (what a connection drain matches on). */
    readonly stats: VersionStats,
    onClosed: (t: Tunnel) => void,
  ) {
    this.onClosed = onClosed;
  }

  /** Starts moving bytes both ways; either side closing closes the other. */
  start(): void {
    const { client, upstream } = this;
    const teardown = (): void => {
      if (this.closed) return;
      this.closed = true;
      if (this.goingAway) {
        // The close frames may still be in the other socket's buffer: it ends (flushing
        // them) rather than being destroyed; the going-away timer destroys it at the latest.
        endOf(client);
        endOf(upstream);
      } else {
        client.destroy();
        upstream.destroy();
      }
    };
    // The tunnel is gone once both sockets are (what a drain wait counts).
    let open = 2;
    const closed = (): void => {
      teardown();
      if (--open === 0) this.onClosed(this);
    };
    client.once('close', closed);
    upstream.once('close', closed);
    // A side that ends its writing ends the tunnel once the other side has flushed
    // (a WebSocket has no half-close; the client socket is half-open by default and a
    // vanished client would otherwise hold its tunnel until the idle timeout).
    client.once('end', () => endOf(upstream, teardown));
    upstream.once('end', () => endOf(client, teardown));
    client.on('error', teardown);
    upstream.on('error', teardown);
    if (!this.websocket) {
      client.pipe(upstream);
      upstream.pipe(client);
      return;
    }
    // Going away, client → upstream: at the next frame boundary, the gateway's masked
    // close frame goes to the upstream, and the client's later frames are dropped (the
    // client is told to go away next; nothing it sends from now on is answered here).
    this.toUpstream = this.pump(client, upstream, () => {
      if (upstream.writable) upstream.write(maskedGoingAway());
      // The upstream answers with its close frame after what it had queued.
      if (this.toClient !== undefined && this.toClient.stop === 'none') this.toClient.stop = 'close';
      setTimeout(() => this.stopToClient('boundary'), CLOSE_REPLY_MS).unref();
    });
    // Upstream → client: everything the upstream sent before its close frame reaches the
    // client (every reply it made is delivered); then the gateway's own close frame
    // 1001 to the client instead of the upstream's, and both sides end.
    this.toClient = this.pump(upstream, client, () => {
      if (client.writable) client.end(WS_GOING_AWAY);
      endOf(upstream);
    });
    // The client's socket was paused when the HTTP/1.1 engine handed it over (its frames
    // wait in the kernel until the upstream has switched protocols): read on now.
    client.resume();
    upstream.resume();
  }

  /** Like pipe(), with backpressure, reading the frame headers as they pass. */
  private pump(src: Duplex, dst: Duplex, onStop: () => void): Direction {
    const d: Direction = { src, dst, tracker: new WsFrameTracker(), stop: 'none', stopped: false, onStop };
    src.on('data', (chunk: Buffer) => {
      if (d.stopped) return;
      const end = d.tracker.feed(chunk, 0, d.stop);
      if (end > 0 && !dst.write(end === chunk.length ? chunk : chunk.subarray(0, end))) src.pause();
      if (end < chunk.length || (d.stop === 'boundary' && d.tracker.atBoundary)) this.halt(d);
    });
    dst.on('drain', () => src.resume());
    return d;
  }

  private halt(d: Direction): void {
    if (d.stopped) return;
    d.stopped = true;
    // Nothing more is forwarded; keep reading so the peer's close reply is consumed.
    d.src.resume();
    d.onStop();
  }

  private stopToClient(stop: StopAt): void {
    const d = this.toClient;
    if (d === undefined || d.stopped) return;
    d.stop = stop;
    if (d.tracker.atBoundary) this.halt(d);
  }

  /**
   * Ends the tunnel gracefully: a WebSocket with 1001 "going away" on both sides once
   * each direction's current frame is through; any other protocol at once. Idempotent.
   */
  goAway(): void {
    if (this.closed) return;
    if (!this.websocket) {
      this.client.destroy();
      this.upstream.destroy();
      return;
    }
    if (this.goingAway) return;
    this.goingAway = true;
    const d = this.toUpstream!;
    d.stop = 'boundary';
    if (d.tracker.atBoundary) this.halt(d);
    setTimeout(() => this.destroy(), GOING_AWAY_MS).unref();
  }

  /** At once, whatever is in progress. */
  destroy(): void {
    this.client.destroy();
    this.upstream.destroy();
  }

  get open(): boolean {
    return !this.closed;
  }
}

function endOf(s: Duplex, cb?: () => void): void {
  if (s.writableEnded || s.destroyed) {
    cb?.();
    return;
  }
  s.end(cb);
}

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
   * Reads `chunk` from `from`; with `stopAtBoundary`, stops at the first frame boundary
   * it reaches (at once when already at one). Returns the offset it stopped at.
   */
  feed(chunk: Buffer, from = 0, stopAtBoundary = false): number {
    let i = from;
    const n = chunk.length;
    while (i < n) {
      if (stopAtBoundary && this.atBoundary) return i;
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
export const GOING_AWAY_MS = 2000;

/** One direction of a WebSocket tunnel. */
interface Direction {
  src: Duplex;
  dst: Duplex;
  tracker: WsFrameTracker;
  /** The close frame to write to dst once the current frame is through. */
  closeFrame: Buffer;
  /** Going away was asked: stop at the next frame boundary. */
  stopping: boolean;
  /** The close frame is written and dst ended: whatever src sends now is dropped. */
  stopped: boolean;
}

export class Tunnel {
  /** Going away: the close frames are on their way (or sent). */
  goingAway = false;
  /** Set by a connection drain: the version it is counted on until it closes. */
  drainedFrom: VersionStats | undefined;
  private closed = false;
  private readonly dirs: Direction[] = [];
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
      this.onClosed(this);
    };
    client.once('close', teardown);
    upstream.once('close', teardown);
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
    this.pump({ src: client, dst: upstream, tracker: new WsFrameTracker(), closeFrame: maskedGoingAway(), stopping: false, stopped: false });
    this.pump({ src: upstream, dst: client, tracker: new WsFrameTracker(), closeFrame: WS_GOING_AWAY, stopping: false, stopped: false });
  }

  /** Like pipe(), with backpressure, reading the frame headers as they pass. */
  private pump(d: Direction): void {
    this.dirs.push(d);
    d.src.on('data', (chunk: Buffer) => {
      if (d.stopped) return;
      let end = chunk.length;
      if (d.stopping) end = d.tracker.feed(chunk, 0, true);
      else d.tracker.feed(chunk);
      if (end > 0 && !d.dst.write(end === chunk.length ? chunk : chunk.subarray(0, end))) d.src.pause();
      if (d.stopping && d.tracker.atBoundary) this.stop(d);
    });
    d.dst.on('drain', () => d.src.resume());
  }

  /** The direction is at a frame boundary: the close frame, then the end of dst. */
  private stop(d: Direction): void {
    if (d.stopped) return;
    d.stopped = true;
    // Nothing more is forwarded; keep reading so the peer's close reply is consumed.
    d.src.resume();
    if (d.dst.writable) d.dst.end(d.closeFrame);
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
    for (const d of this.dirs) {
      d.stopping = true;
      if (d.tracker.atBoundary) this.stop(d);
    }
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

// GET /v1/live's figures, computed at most once per period and shared.
//
// Computing them walks every service, version and endpoint and summarizes each version's
// stats window; done per stream and per second, N open streams cost N walks a second.
// Here one frame is computed per period whoever asks (a plain GET, a new stream, the
// streams' tick), serialized once, and the same bytes are written to every stream.

/** Slack for timer jitter: a tick firing a little under a period after the last frame
 * still computes a fresh one, so streams never get the same frame twice in a row. */
const JITTER_MS = 25;

export class LiveFeed {
  /** Frames computed so far: the work done, for tests and GET /v1/status. */
  computed = 0;
  private last: { at: number; json: string; sse: string } | undefined;
  private readonly subscribers = new Set<(sse: string) => void>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly compute: () => unknown,
    private readonly periodMs = 1000,
    private readonly now: () => number = Date.now,
  ) {}

  /** The figures as JSON: the last frame while it is under a period old, else a new one. */
  json(): string {
    return this.frame(this.periodMs).json;
  }

  /** Open streams fed by this feed. */
  get streams(): number {
    return this.subscribers.size;
  }

  /**
   * Sends `send` the current frame now and every new frame until the returned function
   * is called. One timer serves every subscriber; it runs only while there is one.
   */
  subscribe(send: (sse: string) => void): () => void {
    this.subscribers.add(send);
    send(this.frame(this.periodMs).sse);
    this.timer ??= setInterval(() => this.tick(), this.periodMs);
    return () => {
      this.subscribers.delete(send);
      if (this.subscribers.size === 0) this.stop();
    };
  }

  close(): void {
    this.subscribers.clear();
    this.stop();
  }

  private stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private tick(): void {
    const { sse } = this.frame(this.periodMs - JITTER_MS);
    for (const send of this.subscribers) send(sse);
  }

  private frame(maxAgeMs: number): { json: string; sse: string } {
    const now = this.now();
    if (this.last === undefined || now - this.last.at >= maxAgeMs) {
      const json = JSON.stringify(this.compute());
      this.last = { at: now, json, sse: `event: live\ndata: ${json}\n\n` };
      this.computed++;
    }
    return this.last;
  }
}

// The admin listener: /live, /ready and /metrics. Kept apart from the data plane so
// that probes and scrapes never compete with (or get routed like) user traffic.

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { splitHostPort } from '../config/load.js';

export interface AdminOptions {
  listen: string;
  /** True once config is loaded and discovery delivered its first snapshot, and until
   * shutdown begins. */
  isReady(): boolean;
  /** Prometheus text, when metrics are wired. */
  metrics?: () => Promise<{ contentType: string; body: string }>;
}

export class AdminServer {
  readonly server: http.Server;
  private closed = false;

  constructor(private readonly opts: AdminOptions) {
    this.server = http.createServer((req, res) => {
      void this.handle(req, res);
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, body: string, type = 'application/json'): void => {
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(405, JSON.stringify({ error: { code: 'METHOD_NOT_ALLOWED', message: 'admin endpoints answer GET' } }));
      return;
    }
    if (path === '/live') return send(200, '{"status":"live"}');
    if (path === '/ready') {
      const ready = this.opts.isReady();
      return send(ready ? 200 : 503, JSON.stringify({ status: ready ? 'ready' : 'not ready' }));
    }
    if (path === '/metrics' && this.opts.metrics !== undefined) {
      try {
        const m = await this.opts.metrics();
        return send(200, m.body, m.contentType);
      } catch (err) {
        return send(500, JSON.stringify({ error: { code: 'METRICS_FAILED', message: String(err) } }));
      }
    }
    send(404, JSON.stringify({ error: { code: 'NOT_FOUND', message: `no admin endpoint ${path}` } }));
  }

  async listen(): Promise<AddressInfo> {
    const { host, port } = splitHostPort(this.opts.listen);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return this.server.address() as AddressInfo;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.server.close();
    this.server.closeAllConnections();
  }
}

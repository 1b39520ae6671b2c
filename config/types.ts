// The normalized, frozen configuration: durations in milliseconds, sizes in bytes,
// every default filled in. Produced by config/load.ts; nothing else builds one.

export interface EndpointAddress {
  /** Stable id: host:port for static endpoints. */
  id: string;
  protocol: 'http' | 'https';
  host: string;
  port: number;
  /** origin as undici wants it: http://host:port */
  origin: string;
}

export interface VersionConfig {
  name: string;
  weight: number;
  source:
    | { kind: 'static'; endpoints: EndpointAddress[] }
    | { kind: 'consul'; service: string; tag?: string; meta?: Record<string, string> }
    | { kind: 'dns'; name?: string; srv?: string; port?: number; intervalMs: number; resolver?: string; emptyGraceMs: number };
  tls?: { servername?: string; ca?: string; verify: boolean };
  hostHeader?: string;
}

export interface RouteConfig {
  host?: string;
  path: string;
}

export interface HealthCheckConfig {
  enabled: boolean;
  path: string;
  intervalMs: number;
  timeoutMs: number;
  healthyThreshold: number;
  unhealthyThreshold: number;
}

export interface OutlierConfig {
  consecutive5xx: number;
  consecutiveGatewayErrors: number;
  baseEjectionTimeMs: number;
  maxEjectionPercent: number;
}

export interface ServiceConfig {
  name: string;
  routes: RouteConfig[];
  versions: VersionConfig[];
  healthCheck: HealthCheckConfig;
  outlierDetection: OutlierConfig;
  slowStartMs: number;
  sticky?: { cookie?: string; header?: string };
  override?: { header: string };
  retries: { attempts: number };
  timeouts: { connectMs: number; requestMs: number };
}

export interface Config {
  gateway: {
    listen: string;
    accessLog: boolean;
    accessLogSample: number;
    maxBodySize: number;
    maxHeaderSize: number;
    maxHeaderCount: number;
    timeouts: { headersMs: number; requestMs: number; keepAliveMs: number };
    upstream: { maxConnectionsPerEndpoint: number; idleTimeoutMs: number };
  };
  admin: { listen: string };
  control: {
    listen: string;
    tokens: { name: string; token: string; scopes: ('read' | 'deploy' | 'admin')[] }[];
    webhooks: { url: string; events?: string[]; secret?: string }[];
  };
  state: { store: 'memory' | 'file' | 'redis'; file: string };
  log: { level: string };
  services: ServiceConfig[];
  shutdown: { drainDelayMs: number; graceMs: number };
}

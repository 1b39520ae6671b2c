// The normalized, frozen configuration: durations in milliseconds, sizes in bytes,
// every default filled in. Produced by config/load.ts; nothing else builds one.

export interface EndpointAddress {
  /** Stable id: host:port for static endpoints; SERVICE_ID@host:port for Consul ones
   * (the Consul service instance id plus its address), so per-endpoint state (health,
   * ejection, in-flight) survives every discovery update. */
  id: string;
  protocol: 'http' | 'https';
  host: string;
  port: number;
  /** origin as undici wants it: http://host:port */
  origin: string;
  /** For an https endpoint dialed by address (DNS discovery): the name it was found
   * under, used for SNI and certificate verification unless tls.servername is set. */
  tlsName?: string;
}

export interface VersionConfig {
  name: string;
  weight: number;
  source:
    | { kind: 'static'; endpoints: EndpointAddress[] }
    | { kind: 'consul'; service: string; tag?: string; meta?: Record<string, string> }
    | { kind: 'dns'; name?: string; srv?: string; port?: number; intervalMs: number; resolver?: string; emptyGraceMs: number };
  /** How https endpoints of this version are dialed. `ca` is the file as resolved
   * (relative to the config file), `caPem` its contents, read when the config is loaded. */
  tls?: { servername?: string; ca?: string; caPem?: string; verify: boolean };
  hostHeader?: string;
}

export interface RouteConfig {
  host?: string;
  path: string;
}

export interface HealthCheckConfig {
  enabled: boolean;
  /** http: GET path; grpc: grpc.health.v1.Health/Check of grpcService. */
  type: 'http' | 'grpc';
  grpcService: string;
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
  /** How endpoints are spoken to: HTTP/1.1, HTTP/2 with prior knowledge, HTTP/2 over TLS. */
  protocol: 'http1' | 'h2c' | 'h2';
  /** gRPC answers: which grpc-status codes count as errors (metrics, rollout analysis). */
  grpc: { errorStatuses: number[] };
  /** Long-lived connections on cutover: the drain window a cutover or rollout uses when
   * it names none (0 = connections stay where they are). */
  connections: { drainMs: number };
  /** services.NAME.mirror: the mirror the config starts (the control API's wins). */
  mirror?: MirrorConfig;
}

/** A mirror, normalized (the config's `mirror` and PUT …/mirror alike); also how it is stored. */
export interface MirrorConfig {
  /** The version that gets the copies. */
  to: string;
  /** Share of the eligible requests copied, 0–100. */
  percent: number;
  /** Upper-case methods copied. */
  methods: string[];
  /** false: only the statuses are compared. */
  compare: boolean;
  /** JSON paths left out of body comparisons. */
  ignore: string[];
  /** Lower-case response headers compared. */
  headers: string[];
  /** Largest body (request and responses) compared whole; a copied upload over it is dropped. */
  maxBodyBytes: number;
  /** Copies in flight at once (per gateway process); more are dropped. */
  maxInflight: number;
  /** A copy's whole time, connect to last byte. */
  timeoutMs: number;
}

/** discovery.consul, normalized. */
export interface ConsulConfig {
  /** http(s)://host:port of a Consul agent's HTTP API. */
  address: string;
  /** ACL token (sent as X-Consul-Token); omitted when empty. */
  token?: string;
  datacenter?: string;
  /** CA bundle (PEM file) to verify an https address; relative to the config file. */
  ca?: string;
  /** Any server may answer (?stale): cheaper, possibly a little behind the leader. */
  stale: boolean;
  /** Longest a blocking query waits for a change (Consul's ?wait). */
  waitMs: number;
  /** Become ready without a first Consul snapshot (Consul versions answer 503 until one). */
  startWithoutSnapshot: boolean;
  /** Register the gateway itself, with an HTTP check on the admin /ready. */
  register?: {
    name: string;
    id?: string;
    address?: string;
    port?: number;
    tags: string[];
    checkIntervalMs: number;
    checkTimeoutMs: number;
  };
}

export interface Config {
  gateway: {
    listen: string;
    accessLog: boolean;
    accessLogSample: number;
    maxBodySize: number;
    maxHeaderSize: number;
    maxHeaderCount: number;
    /** sendMs: a response that makes no write progress to its client for this long is
     * cut and its upstream request released (0 = never). */
    timeouts: { headersMs: number; requestMs: number; keepAliveMs: number; sendMs: number };
    /** HTTP/2 from clients (on the TLS listener). */
    http2: { maxConcurrentStreams: number };
    /** Upgrade requests tunneled to the upstream after its 101: which protocols (lower
     * case), how many tunnels at once (0 = none) and how long one may sit idle. */
    upgrades: { protocols: string[]; maxTunnels: number; idleTimeoutMs: number };
    upstream: { maxConnectionsPerEndpoint: number; idleTimeoutMs: number };
    /** HTTPS (HTTP/2 and HTTP/1.1 by ALPN) on gateway.listen; files resolved against
     * the config file's directory and checked when the config is loaded. */
    tls?: { certificates: { cert: string; key: string }[]; /** reload when the files change */ watch: boolean };
    /** A plain listener answering 308 to https://host/path. */
    redirectHttp?: string;
    /** Open connections one client address may hold; 0 = no limit. */
    maxConnectionsPerClient: number;
    /** Data-plane processes: 1 = the gateway serves traffic itself; N > 1 = N worker
     * processes share gateway.listen and apply every state change the primary makes. */
    workers: number;
  };
  admin: { listen: string };
  control: {
    listen: string;
    /** HTTPS on control.listen. */
    tls?: { cert: string; key: string };
    /** Failed authentications one client address may make per window before it is
     * refused with 429 until the window ends; failures 0 = no limit. */
    authRateLimit: { failures: number; windowMs: number; maxClients: number };
    /** Open event streams (events and live) one token may hold; one more is refused (429). */
    maxStreamsPerToken: number;
    /** Time to receive a request's headers, and the whole request (body included): 408. */
    timeouts: { headersMs: number; requestMs: number };
    tokens: { name: string; token: string; scopes: ('read' | 'deploy' | 'admin')[] }[];
    webhooks: { url: string; events?: string[]; secret?: string; format?: 'json' | 'slack' }[];
  };
  state: { store: 'memory' | 'file' | 'redis'; file: string; redis: { url: string; prefix: string } };
  discovery: { consul?: ConsulConfig };
  log: { level: string };
  services: ServiceConfig[];
  shutdown: { drainDelayMs: number; graceMs: number };
}

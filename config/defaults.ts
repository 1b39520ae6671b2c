// The one defaults object. Each value is documented in README.md ("Configuration").

export const defaults = {
  gateway: {
    listen: '0.0.0.0:8080',
    accessLog: false,
    // Fraction of successful requests logged when accessLog is on; 4xx/5xx are always logged.
    accessLogSample: 1,
    // Bodies are streamed, never buffered, so this is a policy limit, not a memory one.
    maxBodySize: '1gb',
    maxHeaderSize: '16kb',
    maxHeaderCount: 100,
    timeouts: {
      // Time a client has to send all request headers (slowloris protection).
      headers: '10s',
      // Time a client has to send its whole request (0 would disable it).
      request: '300s',
      // How long an idle client keep-alive connection is held open.
      keepAlive: '60s',
      // A response that makes no write progress to its client for this long is cut and
      // its upstream request released (a client that never reads).
      send: '30s',
    },
    http2: {
      // Streams one client connection may have open at once. Below the default upstream
      // pool (256), so one connection can never take a whole endpoint.
      maxConcurrentStreams: 100,
    },
    upgrades: {
      // Only these Upgrade protocols are tunneled; any other upgrade request gets 400.
      protocols: ['websocket'],
      // Tunnels open at once; past it an upgrade gets 503.
      maxTunnels: 10_000,
      // A tunnel with no byte either way for this long is closed.
      idleTimeout: '300s',
    },
    upstream: {
      maxConnectionsPerEndpoint: 256,
      // Below the 5 s keep-alive timeout of Node's http server and most frameworks, so a
      // reused socket is never one the backend is closing at that moment.
      idleTimeout: '4s',
    },
    // Open connections per client address (0 = no limit).
    maxConnectionsPerClient: 0,
    // Data-plane processes (1: the gateway process serves traffic itself).
    workers: 1,
  },
  admin: { listen: '127.0.0.1:9901' },
  control: {
    listen: '127.0.0.1:9090',
    // Failed authentications per client address and window before 429 (0 = no limit).
    // maxClients: client keys (IPv4 addresses, IPv6 /64s) remembered while not refused;
    // a refused one is never forgotten before its refusal ends.
    authRateLimit: { failures: 10, window: '10s', maxClients: 10_000 },
    // Open event streams (GET /v1/events and /v1/live with Accept: text/event-stream)
    // per token (per actor: "local" without tokens); one more is refused with 429.
    maxStreamsPerToken: 8,
    timeouts: {
      // Time a client has to send its request headers, and its whole request (headers
      // and body); past either the connection is answered 408 and closed.
      headers: '10s',
      request: '10s',
    },
  },
  state: { store: 'file', file: './switchyard-state.json', redis: { url: 'redis://127.0.0.1:6379/0', prefix: 'switchyard' } },
  log: { level: 'info' },
  service: {
    healthCheck: {
      path: '/healthz',
      interval: '2s',
      timeout: '1s',
      healthyThreshold: 2,
      unhealthyThreshold: 3,
    },
    outlierDetection: {
      consecutive5xx: 5,
      consecutiveGatewayErrors: 3,
      baseEjectionTime: '30s',
      maxEjectionPercent: 50,
    },
    slowStart: '0s',
    retries: { attempts: 1 },
    timeouts: { connect: '2s', request: '30s' },
    protocol: 'http1',
    // Every gRPC status but OK (0).
    grpcErrorStatuses: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
    connections: { drain: '0s' },
    mirror: { percent: 100, methods: ['GET', 'HEAD'], compare: true, ignore: [], headers: [], maxBodyBytes: '256kb', maxInflight: 100, timeout: '5s' },
  },
  dns: { interval: '5s', emptyGrace: '30s' },
  consul: {
    address: 'http://127.0.0.1:8500',
    // Longest blocking query; also bounds how long a silently dropped connection to
    // Consul can go unnoticed (the request times out a little after it).
    wait: '30s',
    register: { checkInterval: '10s', checkTimeout: '2s' },
  },
  shutdown: { drainDelay: '5s', grace: '30s' },
} as const;

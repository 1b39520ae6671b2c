// One schema for the config file. The control API validates its request bodies with
// the pieces exported here (weightsSchema, durationSchema), so a weight or a duration
// means the same thing wherever it is written.
//
// Formats are named so that validation errors can say what was expected in words
// ("a duration with a unit") instead of echoing a regular expression.

export const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
export const SIZE_RE = /^(\d+)(b|kb|mb|gb)?$/i;
// host:port, where host is an IPv4 address, a bracketed IPv6 address or a DNS name.
export const LISTEN_RE = /^(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?|):(\d{1,5})$/;
export const ENDPOINT_RE = /^(https?:\/\/)?(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?):(\d{1,5})\/?$/;
export const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;
export const HEADER_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
export const COOKIE_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

export const FORMAT_MESSAGES: Record<string, string> = {
  duration: 'must be a duration with a unit, e.g. 500ms, 2s, 1m (at most 596h)',
  size: 'must be a size such as 1024, 64kb, 10mb or 1gb',
  listen: 'must be an address host:port with a port from 0 to 65535',
  endpoint: 'must be an endpoint host:port (or http(s)://host:port) with a port from 1 to 65535',
  name: 'must be a name of letters, digits, "_", "." and "-" (at most 63), starting with a letter or digit',
  header: 'must be an HTTP header name',
  cookie: 'must be a cookie name',
  path: 'must be a path starting with "/"',
};

function portOk(p: string, min: number): boolean {
  const n = Number(p);
  return Number.isInteger(n) && n >= min && n <= 65535;
}

/** The longest duration a timer can hold (Node turns a longer one into 1 ms). */
export const MAX_DURATION_MS = 2 ** 31 - 1;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1e3, m: 60e3, h: 3600e3 };
const SIZE_UNIT: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 };

export const formats = {
  duration: (s: string) => {
    const m = DURATION_RE.exec(s);
    return m !== null && Number(m[1]) * UNIT_MS[m[2]] <= MAX_DURATION_MS;
  },
  size: (s: string) => {
    const m = SIZE_RE.exec(s);
    return m !== null && Number(m[1]) * SIZE_UNIT[(m[2] ?? 'b').toLowerCase()] <= Number.MAX_SAFE_INTEGER;
  },
  listen: (s: string) => {
    const m = LISTEN_RE.exec(s);
    return m !== null && portOk(m[3], 0);
  },
  endpoint: (s: string) => {
    const m = ENDPOINT_RE.exec(s);
    return m !== null && portOk(m[4], 1);
  },
  name: (s: string) => NAME_RE.test(s),
  header: (s: string) => HEADER_RE.test(s),
  cookie: (s: string) => COOKIE_RE.test(s),
  path: (s: string) => s.startsWith('/') && !/[\s?#]/.test(s),
};

const duration = { type: 'string', format: 'duration' } as const;
const size = { type: ['string', 'integer'], format: 'size', minimum: 0 } as const;
const listen = { type: 'string', format: 'listen' } as const;
const obj = (properties: Record<string, unknown>, required: string[] = []) => ({
  type: 'object',
  additionalProperties: false,
  properties,
  required,
});

export const durationSchema = duration;

// A PEM certificate (chain) file and its private key file, relative to the config file.
const certificateFiles = obj({ cert: { type: 'string', minLength: 1 }, key: { type: 'string', minLength: 1 } }, ['cert', 'key']);

// A map of version name -> weight. Weights are shares, not percentages.
export const weightsSchema = {
  type: 'object',
  minProperties: 1,
  propertyNames: { format: 'name' },
  additionalProperties: { type: 'integer', minimum: 0, maximum: 1_000_000 },
} as const;

const endpointList = {
  type: 'array',
  maxItems: 10_000,
  items: { type: 'string', format: 'endpoint' },
} as const;

const versionSchema = obj({
  weight: { type: 'integer', minimum: 0, maximum: 1_000_000 },
  endpoints: endpointList,
  consul: obj({
    service: { type: 'string', minLength: 1 },
    tag: { type: 'string', minLength: 1 },
    meta: { type: 'object', additionalProperties: { type: 'string' } },
  }, ['service']),
  dns: obj({
    name: { type: 'string', minLength: 1 },
    srv: { type: 'string', minLength: 1 },
    port: { type: 'integer', minimum: 1, maximum: 65535 },
    interval: duration,
    resolver: listen,
    emptyGrace: duration,
  }),
  tls: obj({
    servername: { type: 'string', minLength: 1 },
    ca: { type: 'string', minLength: 1 },
    verify: { type: 'boolean' },
  }),
  hostHeader: { type: 'string', minLength: 1 },
});

// A JSON path of a body field a mirror comparison ignores: `$`, then `.name`, `[n]`,
// `[*]` or `.*` segments (`$.timestamp`, `$.items[*].id`, `$['odd key']`).
export const JSON_PATH_RE = /^\$((\.[A-Za-z_$][A-Za-z0-9_$-]*)|(\.\*)|(\[(\d+|\*)\])|(\['[^'\\]*'\]))*$/;

// services.NAME.mirror and the body of PUT /v1/services/NAME/mirror: the same keys,
// the same meaning. The rollout body's `mirror` (its shadow step) is this without `to`.
const mirrorProperties = {
  percent: { type: 'number', minimum: 0, maximum: 100 },
  methods: { type: 'array', minItems: 1, maxItems: 16, uniqueItems: true, items: { type: 'string', pattern: '^[A-Za-z]{1,20}$' } },
  compare: { type: 'boolean' },
  ignore: { type: 'array', maxItems: 100, items: { type: 'string', maxLength: 256, pattern: JSON_PATH_RE.source } },
  headers: { type: 'array', maxItems: 50, items: { type: 'string', format: 'header' } },
  maxBodyBytes: size,
  maxInflight: { type: 'integer', minimum: 1, maximum: 100_000 },
  timeout: duration,
} as const;
export const mirrorSchema = obj({ to: { type: 'string', format: 'name' }, ...mirrorProperties }, ['to']);
export const shadowMirrorSchema = obj({ ...mirrorProperties });

const serviceSchema = obj({
  routes: {
    type: 'array',
    minItems: 1,
    items: obj({
      host: { type: 'string', minLength: 1, maxLength: 253, pattern: '^(\\*\\.)?[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?$' },
      path: { type: 'string', format: 'path' },
    }),
  },
  versions: {
    type: 'object',
    minProperties: 1,
    propertyNames: { format: 'name' },
    additionalProperties: versionSchema,
  },
  healthCheck: obj({
    type: { enum: ['http', 'grpc'] },
    grpcService: { type: 'string', maxLength: 256 },
    path: { type: 'string', format: 'path' },
    interval: duration,
    timeout: duration,
    healthyThreshold: { type: 'integer', minimum: 1, maximum: 100 },
    unhealthyThreshold: { type: 'integer', minimum: 1, maximum: 100 },
    enabled: { type: 'boolean' },
  }),
  outlierDetection: obj({
    consecutive5xx: { type: 'integer', minimum: 0 },
    consecutiveGatewayErrors: { type: 'integer', minimum: 0 },
    baseEjectionTime: duration,
    maxEjectionPercent: { type: 'integer', minimum: 0, maximum: 100 },
  }),
  slowStart: duration,
  sticky: obj({
    cookie: { type: 'string', format: 'cookie' },
    header: { type: 'string', format: 'header' },
  }),
  override: obj({ header: { type: 'string', format: 'header' } }, ['header']),
  retries: obj({ attempts: { type: 'integer', minimum: 0, maximum: 5 } }),
  timeouts: obj({ connect: duration, request: duration }),
  protocol: { enum: ['http1', 'h2c', 'h2'] },
  grpc: obj({
    errorStatuses: { type: 'array', uniqueItems: true, maxItems: 17, items: { type: 'integer', minimum: 0, maximum: 16 } },
  }),
  connections: obj({ drain: duration }),
  mirror: mirrorSchema,
}, ['routes', 'versions']);

export const configSchema = obj({
  gateway: obj({
    listen: listen,
    accessLog: { type: 'boolean' },
    accessLogSample: { type: 'number', minimum: 0, maximum: 1 },
    maxBodySize: size,
    maxHeaderSize: size,
    maxHeaderCount: { type: 'integer', minimum: 1, maximum: 10_000 },
    timeouts: obj({ headers: duration, request: duration, keepAlive: duration, send: duration }),
    http2: obj({ maxConcurrentStreams: { type: 'integer', minimum: 1, maximum: 1000 } }),
    upgrades: obj({
      protocols: {
        type: 'array',
        uniqueItems: true,
        maxItems: 32,
        items: { type: 'string', pattern: '^[!#$%&\'*+.^_`|~0-9A-Za-z-]+(/[!#$%&\'*+.^_`|~0-9A-Za-z-]+)?$' },
      },
      maxTunnels: { type: 'integer', minimum: 0, maximum: 1_000_000 },
      idleTimeout: duration,
    }),
    upstream: obj({
      maxConnectionsPerEndpoint: { type: 'integer', minimum: 1, maximum: 100_000 },
      idleTimeout: duration,
    }),
    tls: obj({
      certificates: {
        type: 'array',
        minItems: 1,
        maxItems: 1000,
        items: certificateFiles,
      },
      watch: { type: 'boolean' },
    }, ['certificates']),
    redirectHttp: listen,
    maxConnectionsPerClient: { type: 'integer', minimum: 0, maximum: 1_000_000 },
    workers: { type: 'integer', minimum: 1, maximum: 64 },
  }),
  admin: obj({ listen }),
  control: obj({
    listen,
    tls: certificateFiles,
    authRateLimit: obj({ failures: { type: 'integer', minimum: 0, maximum: 1_000_000 }, window: duration, maxClients: { type: 'integer', minimum: 1, maximum: 10_000_000 } }),
    maxStreamsPerToken: { type: 'integer', minimum: 1, maximum: 10_000 },
    timeouts: obj({ headers: duration, request: duration }),
    tokens: {
      type: 'array',
      items: obj({
        name: { type: 'string', format: 'name' },
        token: { type: 'string', minLength: 16 },
        scopes: {
          type: 'array',
          minItems: 1,
          uniqueItems: true,
          items: { enum: ['read', 'deploy', 'admin'] },
        },
      }, ['name', 'token', 'scopes']),
    },
    webhooks: {
      type: 'array',
      items: obj({
        url: { type: 'string', pattern: '^https?://' },
        events: { type: 'array', items: { type: 'string' } },
        secret: { type: 'string', minLength: 1 },
        format: { enum: ['json', 'slack'] },
      }, ['url']),
    },
  }),
  state: obj({
    store: { enum: ['memory', 'file', 'redis'] },
    file: { type: 'string', minLength: 1 },
    redis: obj({
      url: { type: 'string', pattern: '^rediss?://' },
      prefix: { type: 'string', minLength: 1 },
    }),
  }),
  discovery: obj({
    consul: obj({
      address: { type: 'string', pattern: '^https?://[^/?#]+/?$' },
      token: { type: 'string' },
      datacenter: { type: 'string' },
      ca: { type: 'string', minLength: 1 },
      stale: { type: 'boolean' },
      wait: duration,
      startWithoutSnapshot: { type: 'boolean' },
      register: obj({
        name: { type: 'string', format: 'name' },
        id: { type: 'string', minLength: 1 },
        address: { type: 'string', minLength: 1 },
        port: { type: 'integer', minimum: 1, maximum: 65535 },
        tags: { type: 'array', items: { type: 'string', minLength: 1 } },
        checkInterval: duration,
        checkTimeout: duration,
      }, ['name']),
    }),
  }),
  log: obj({
    level: { enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] },
  }),
  services: {
    type: 'object',
    propertyNames: { format: 'name' },
    additionalProperties: serviceSchema,
  },
  shutdown: obj({ drainDelay: duration, grace: duration }),
}, ['services']);

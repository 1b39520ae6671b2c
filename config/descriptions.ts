// What each config key means, keyed by its path in the schema (config/schema.ts).
// docs/configuration.md and the schema `switchyard schema` prints are generated from
// this map, the schema and the defaults object; test/docs.test.ts fails when a schema
// key has no entry here, when an entry names no key, or when the checked-in docs drift.
//
// Adding a key to the schema? Add one line here:
//   'gateway.timeouts.example': d('What it does and how it interacts with others.'),
// and `d(text, { reload: 'restart' })` when a SIGHUP does not apply it. Then `npm run docs`.
//
// Paths: `services.NAME` and `….versions.VERSION` stand for any name; `key[]` is an
// array and `key[].field` a field of its items.

/** When a changed value takes effect: on SIGHUP / POST /v1/reload, or only on restart. */
export type Reload = 'sighup' | 'restart';

export interface KeyDoc {
  text: string;
  reload: Reload;
  /** Shown as the default when the defaults object has none for this key (e.g. "off"). */
  default?: string;
  /** A YAML value for the example column; otherwise the default, or one made from the type. */
  example?: string;
}

function d(text: string, opts: Partial<Omit<KeyDoc, 'text'>> = {}): KeyDoc {
  return { text, reload: opts.reload ?? 'sighup', ...(opts.default !== undefined && { default: opts.default }), ...(opts.example !== undefined && { example: opts.example }) };
}
const restart = { reload: 'restart' } as const;

export const descriptions: Record<string, KeyDoc> = {
  gateway: d('The data plane: its listener, limits and timeouts.'),
  'gateway.listen': d('Data-plane listener, `host:port`.', { ...restart, example: '0.0.0.0:8080' }),
  'gateway.accessLog': d('One JSON log line per request (`msg: "request"`, with `reqId`).'),
  'gateway.accessLogSample': d('Fraction of successful requests logged when `accessLog` is on; 4xx and 5xx are always logged.', { example: '0.1' }),
  'gateway.maxBodySize': d('Larger request bodies get 413. Bodies are streamed, never buffered: a policy limit, not a memory one.', { example: '10mb' }),
  'gateway.maxHeaderSize': d('Larger request headers get 431 (at most `1mb`).', { example: '32kb' }),
  'gateway.maxHeaderCount': d('More request headers than this get 431 (HTTP/2 pseudo-headers not counted).'),
  'gateway.timeouts': d('Client-side timeouts of the data plane.'),
  'gateway.timeouts.headers': d('Time a client has to send all request headers (slowloris protection).'),
  'gateway.timeouts.request': d('Time a client has to send its whole request.'),
  'gateway.timeouts.keepAlive': d('An idle client keep-alive connection is closed after this.'),
  'gateway.timeouts.send': d('A response that makes no write progress to its client for this long is cut and its upstream request released (`0s`: never).'),
  'gateway.http2': d('HTTP/2 (with `gateway.tls`).'),
  'gateway.http2.maxConcurrentStreams': d('Streams one HTTP/2 client connection may have open at once; below the upstream pool size, so one connection can never take a whole endpoint.'),
  'gateway.upgrades': d('`Upgrade` requests (WebSocket) tunneled to the upstream after its 101.'),
  'gateway.upgrades.protocols': d('`Upgrade` protocols tunneled; any other upgrade request gets 400.', { example: '[websocket]' }),
  'gateway.upgrades.maxTunnels': d('Tunnels open at once (pending upgrades count); past it 503 `TOO_MANY_TUNNELS`.'),
  'gateway.upgrades.idleTimeout': d('A tunnel with no byte either way for this long is closed (`0s`: never).'),
  'gateway.upstream': d('Connection pools to the endpoints.'),
  'gateway.upstream.maxConnectionsPerEndpoint': d('Cap of each endpoint\'s connection pool.'),
  'gateway.upstream.idleTimeout': d('Idle upstream sockets are closed after this; below the 5 s keep-alive of most servers, so a reused socket is never one the backend is closing.'),
  'gateway.tls': d('HTTPS with HTTP/2 and HTTP/1.1 on `gateway.listen`. Turning it on or off needs a restart; certificates are re-read on SIGHUP.', { default: 'off' }),
  'gateway.tls.certificates': d('Certificate files; chosen by SNI, the first is the default.'),
  'gateway.tls.certificates[]': d('One certificate: `{cert, key}`.'),
  'gateway.tls.certificates[].cert': d('PEM certificate (chain) file, relative to the config file.', { example: 'certs/shop.crt' }),
  'gateway.tls.certificates[].key': d('PEM private key file, relative to the config file.', { example: 'certs/shop.key' }),
  'gateway.tls.watch': d('Reload the certificates 250 ms after their files change (they are reloaded on SIGHUP either way).', { default: 'true' }),
  'gateway.redirectHttp': d('A plain listener answering every request with 308 to `https://host[:port]/path`; needs `gateway.tls`.', { ...restart, default: 'off', example: '0.0.0.0:80' }),
  'gateway.maxConnectionsPerClient': d('Open connections one client address may hold on the data-plane (and redirect) listener; past it new connections are closed at once (per worker). `0`: no limit.'),
  'gateway.workers': d('Data-plane processes (1–64). Above 1, workers share `gateway.listen` and the gateway process keeps the control plane.', { ...restart, example: '4' }),

  admin: d('The admin listener: `/live`, `/ready`, `/metrics`.'),
  'admin.listen': d('Admin listener, `host:port`.', restart),

  control: d('The control API (and dashboard) and its clients.'),
  'control.listen': d('Control API listener, `host:port`. Without tokens it must be a loopback address.', restart),
  'control.tls': d('The control API over HTTPS only. Turning it on or off needs a restart; the certificate is re-read on SIGHUP.', { default: 'off' }),
  'control.tls.cert': d('PEM certificate (chain) file, relative to the config file.', { example: 'certs/control.crt' }),
  'control.tls.key': d('PEM private key file, relative to the config file.', { example: 'certs/control.key' }),
  'control.authRateLimit': d('Refusal of clients presenting invalid tokens.'),
  'control.authRateLimit.failures': d('Invalid tokens one client (an IPv4 address or an IPv6 /64) may present per window; the one that reaches it gets the client refused with 429 for a window (`0`: off).'),
  'control.authRateLimit.window': d('The window of `failures`, and how long a client is refused.'),
  'control.authRateLimit.maxClients': d('Clients with failures below the limit remembered at once (oldest forgotten first); refused clients are kept until their refusal ends.'),
  'control.maxStreamsPerToken': d('Open event streams (`/v1/events`, `/v1/live` with `Accept: text/event-stream`) per token; one more gets 429 `TOO_MANY_STREAMS`. A lowered value applies to new streams.'),
  'control.timeouts': d('Client-side timeouts of the control API; past either the connection is answered 408 and closed.'),
  'control.timeouts.headers': d('Time a control API request has to send its headers (at least 100ms, at most `control.timeouts.request`).'),
  'control.timeouts.request': d('Time a control API request has to send its headers and body.'),
  'control.tokens': d('Bearer tokens; re-read on SIGHUP (rotation without restart, see SECURITY.md).', { default: '[]' }),
  'control.tokens[]': d('One token: `{name, token, scopes}`.'),
  'control.tokens[].name': d('Who acts; recorded as the actor of every event.', { example: 'ci' }),
  'control.tokens[].token': d('The secret (at least 16 characters); use `${VAR}` to keep it out of the file. Kept only as a SHA-256 digest.', { example: '${SWITCHYARD_CI_TOKEN}' }),
  'control.tokens[].scopes': d('`read` < `deploy` (weights, cutover, rollout, rollback) < `admin` (drain, reload).', { example: '[read, deploy]' }),
  'control.webhooks': d('Event notifications, POSTed as JSON.', { ...restart, default: '[]' }),
  'control.webhooks[]': d('One webhook: `{url, events?, secret?, format?}`.', restart),
  'control.webhooks[].format': d('`json`: the event as signed JSON; `slack`: a Slack-compatible `{"text": ...}` message naming the service, action, step, weights, verdict and reason (signed too when a secret is set).', { ...restart, default: 'json', example: 'slack' }),
  'control.webhooks[].url': d('`http://` or `https://` URL.', { ...restart, example: 'https://hooks.example.com/switchyard' }),
  'control.webhooks[].events': d('Event types sent (all when absent).', { ...restart, default: 'all', example: '[rollout.succeeded, rollout.rolled_back]' }),
  'control.webhooks[].secret': d('HMAC-SHA256 key signing each delivery.', { ...restart, example: '${WEBHOOK_SECRET}' }),

  state: d('Where desired state (weights, rollouts, events) is kept.', restart),
  'state.store': d('`memory` (lost on restart), `file` or `redis` (a fleet).', restart),
  'state.file': d('State file with `store: file`, relative to the config file.', restart),
  'state.redis': d('Redis with `store: redis`.', restart),
  'state.redis.url': d('`redis://` or `rediss://` URL.', restart),
  'state.redis.prefix': d('Key prefix; several fleets can share one Redis.', restart),

  discovery: d('Service discovery sources.'),
  'discovery.consul': d('A Consul agent, for versions with `consul:`. A changed address, token, datacenter, CA, `stale` or `wait` restarts the queries.', { default: 'off' }),
  'discovery.consul.address': d('The agent\'s HTTP API (`http://` or `https://`).'),
  'discovery.consul.token': d('ACL token, sent as `X-Consul-Token` (empty: none).', { default: 'none', example: '${CONSUL_HTTP_TOKEN}' }),
  'discovery.consul.datacenter': d('`?dc=` of every query.', { default: "the agent's", example: 'dc1' }),
  'discovery.consul.ca': d('PEM CA file for an `https://` address, relative to the config file.', { default: 'system CAs', example: 'certs/consul-ca.pem' }),
  'discovery.consul.stale': d('`?stale` reads: any Consul server answers.', { default: 'false' }),
  'discovery.consul.wait': d('Longest blocking query (1s–10m); also bounds how long a silently dropped connection goes unnoticed.'),
  'discovery.consul.startWithoutSnapshot': d('Become ready before Consul has answered once.', { default: 'false' }),
  'discovery.consul.register': d('Register the gateway itself in Consul, with a health check on `/ready`.', { ...restart, default: 'off' }),
  'discovery.consul.register.name': d('Consul service name.', { ...restart, example: 'switchyard' }),
  'discovery.consul.register.id': d('Service instance id.', { ...restart, default: 'NAME-HOSTNAME-PORT' }),
  'discovery.consul.register.address': d('Address registered.', { ...restart, default: "the listener's" }),
  'discovery.consul.register.port': d('Port registered.', { ...restart, default: "the listener's" }),
  'discovery.consul.register.tags': d('Tags registered.', { ...restart, default: '[]', example: '[edge]' }),
  'discovery.consul.register.checkInterval': d('Interval of the registered HTTP check.', restart),
  'discovery.consul.register.checkTimeout': d('Timeout of the registered HTTP check.', restart),

  log: d('Logging (JSON on stdout).'),
  'log.level': d('pino level.', { ...restart, example: 'debug' }),

  services: d('The services, by name.'),
  'services.NAME': d('One service: its routes, versions and traffic policies.'),
  'services.NAME.routes': d('Requests this service takes (at least one).', { default: 'required', example: '[{ host: shop.example.com, path: / }]' }),
  'services.NAME.routes[]': d('One route: `{host?, path?}`; the longest matching path wins.'),
  'services.NAME.routes[].host': d('Host name, or `*.domain` for any subdomain.', { default: 'any', example: 'shop.example.com' }),
  'services.NAME.routes[].path': d('Path prefix.', { default: '/', example: '/api' }),
  'services.NAME.versions': d('The versions (pools) of the service, by name (blue, green, …).', { default: 'required' }),
  'services.NAME.versions.VERSION': d('One version: a weight and a source of endpoints (`endpoints`, `consul` or `dns`).'),
  'services.NAME.versions.VERSION.weight': d('A share (not a percentage); one version must have a positive weight. Weights set through the control API win over the file.', { default: '0', example: '100' }),
  'services.NAME.versions.VERSION.endpoints': d('Static endpoints: `host:port`, `http://host:port` or `https://host:port`.', { example: '[10.0.0.1:8080, 10.0.0.2:8080]' }),
  'services.NAME.versions.VERSION.consul': d('The passing instances of a Consul service; needs `discovery.consul`.'),
  'services.NAME.versions.VERSION.consul.service': d('Consul service name.', { example: 'shop' }),
  'services.NAME.versions.VERSION.consul.tag': d('Only instances with this tag.', { example: 'blue' }),
  'services.NAME.versions.VERSION.consul.meta': d('Only instances with these service meta values.', { example: '{ version: v1 }' }),
  'services.NAME.versions.VERSION.dns': d('Endpoints from DNS: A/AAAA records of `name` with `port`, or SRV records of `srv`.'),
  'services.NAME.versions.VERSION.dns.name': d('Name whose A/AAAA records are the endpoints; needs `port`.', { example: 'shop-blue.internal' }),
  'services.NAME.versions.VERSION.dns.srv': d('SRV name (lowest priority only); the records give the ports.', { example: '_http._tcp.shop-blue.internal' }),
  'services.NAME.versions.VERSION.dns.port': d('Port of the endpoints found by `name`.', { example: '8080' }),
  'services.NAME.versions.VERSION.dns.interval': d('Re-resolution period; no later than the answer\'s TTL either (at most once a second).'),
  'services.NAME.versions.VERSION.dns.resolver': d('DNS server `ip:port` (`[v6]:port`).', { default: "the system's", example: '10.0.0.2:53' }),
  'services.NAME.versions.VERSION.dns.emptyGrace': d('An empty answer (NXDOMAIN, NODATA, no records) empties the version only after this.'),
  'services.NAME.versions.VERSION.tls': d('How the version\'s `https://` endpoints are dialed.'),
  'services.NAME.versions.VERSION.tls.servername': d('SNI and the name verified.', { default: "the endpoint's name", example: 'shop.internal' }),
  'services.NAME.versions.VERSION.tls.ca': d('PEM CA file, relative to the config file.', { default: 'system CAs', example: 'certs/internal-ca.pem' }),
  'services.NAME.versions.VERSION.tls.verify': d('`false` accepts any certificate.', { default: 'true' }),
  'services.NAME.versions.VERSION.hostHeader': d('Host sent upstream (requests, probes, WebSockets).', { default: "the client's Host", example: 'shop.internal' }),
  'services.NAME.healthCheck': d('Active health probes; present turns them on.', { default: 'off' }),
  'services.NAME.healthCheck.type': d('`http` (a GET of `path`, 200–399 passes) or `grpc` (the gRPC health checking protocol: `grpc.health.v1.Health/Check` over the service\'s `protocol`, h2c or h2; passes on SERVING).', { default: 'http', example: 'grpc' }),
  'services.NAME.healthCheck.grpcService': d('The service name asked about by a `grpc` probe.', { default: "'' (the whole server)", example: 'shop.v1.Shop' }),
  'services.NAME.healthCheck.path': d('Probe path.'),
  'services.NAME.healthCheck.interval': d('Between probes (±10% jitter).'),
  'services.NAME.healthCheck.timeout': d('Per probe; must not exceed `interval`.'),
  'services.NAME.healthCheck.healthyThreshold': d('Passes in a row to become healthy.'),
  'services.NAME.healthCheck.unhealthyThreshold': d('Failures in a row to become unhealthy.'),
  'services.NAME.healthCheck.enabled': d('`false` keeps the block but turns the probes off.', { default: 'true' }),
  'services.NAME.outlierDetection': d('Passive health: ejecting endpoints that fail live requests.'),
  'services.NAME.outlierDetection.consecutive5xx': d('5xx responses in a row that eject an endpoint (`0`: off).'),
  'services.NAME.outlierDetection.consecutiveGatewayErrors': d('Connect failures, resets or timeouts in a row that eject an endpoint (`0`: off).'),
  'services.NAME.outlierDetection.baseEjectionTime': d('Ejection time, multiplied by the ejection count and capped at 5 minutes.'),
  'services.NAME.outlierDetection.maxEjectionPercent': d('Most of a version\'s endpoints ejected at once, in percent, rounded down.'),
  'services.NAME.slowStart': d('Ramp window of a new endpoint\'s share (10% → 100%).', { example: '30s' }),
  'services.NAME.sticky': d('Sticky sessions: the same key keeps its version. The header wins when both are present.', { default: 'off' }),
  'services.NAME.sticky.cookie': d('Cookie holding the sticky key.', { example: 'switchyard_shop' }),
  'services.NAME.sticky.header': d('Header holding the sticky key.', { example: 'x-user-id' }),
  'services.NAME.override': d('Let a request name its version.', { default: 'off' }),
  'services.NAME.override.header': d('Header naming a version (testers reach green at weight 0).', { example: 'x-switchyard-version' }),
  'services.NAME.protocol': d('How endpoints are spoken to: `http1` (HTTP/1.1), `h2c` (HTTP/2 with prior knowledge over TCP, `http://` endpoints) or `h2` (HTTP/2 over TLS, `https://` endpoints, the version\'s `tls` options). HTTP/2 runs a few sessions per endpoint, each multiplexing up to the peer\'s stream limit (at most `gateway.upstream.maxConnectionsPerEndpoint` sessions, and 4). Needed for gRPC: trailers and streaming pass both ways.', { default: 'http1', example: 'h2c' }),
  'services.NAME.grpc': d('gRPC answers (requests with `content-type: application/grpc*`).'),
  'services.NAME.grpc.errorStatuses': d('`grpc-status` codes counted as errors by rollout analysis and the error rate (HTTP 200 answers notwithstanding). 14 UNAVAILABLE also counts toward `outlierDetection.consecutive5xx`.', { default: 'every code but 0 (OK)', example: '[2, 4, 13, 14]' }),
  'services.NAME.connections': d('Long-lived connections (WebSockets, HTTP/2 sessions, keep-alive connections) when a version loses weight.'),
  'services.NAME.connections.drain': d('Default window over which a cutover, rollback or rollout step closes the long-lived connections pinned to versions that lost weight (WebSocket close 1001, HTTP/2 GOAWAY, idle HTTP/1.1 closed), spread so clients do not reconnect at once. `0s`: they stay until they close by themselves. A cutover or rollout\'s own `connections.drain` wins.', { example: '30s' }),
  'services.NAME.retries': d('Retries of requests that were never sent upstream.'),
  'services.NAME.retries.attempts': d('Retries (0–5).'),
  'services.NAME.timeouts': d('Upstream timeouts.'),
  'services.NAME.timeouts.connect': d('Upstream connect timeout.'),
  'services.NAME.timeouts.request': d('Time to the upstream\'s response headers; past it 504.'),
  'services.NAME.mirror': d('Shadow traffic: copies of requests served by another version are sent to `to` and their answers compared with the served ones, then thrown away (see the operations guide, "Mirroring"). `PUT /v1/services/NAME/mirror` replaces it at run time, `DELETE` stops it.', { default: 'off' }),
  'services.NAME.mirror.to': d('The version that gets the copies (requests it serves itself are not copied).', { example: 'green' }),
  'services.NAME.mirror.percent': d('Share of the eligible requests copied, in percent (fractions allowed).'),
  'services.NAME.mirror.methods': d('Methods copied. Only GET and HEAD unless listed: a copied POST, PUT, PATCH or DELETE runs the write a second time on `to` (its own database?), so list them only when `to` is safe to write to.', { example: '[GET, HEAD]' }),
  'services.NAME.mirror.compare': d('`false`: only the statuses are compared, not headers or bodies (the served body is then not copied).'),
  'services.NAME.mirror.ignore': d('JSON paths left out when JSON bodies are compared (`$.a.b`, `$.items[*].id`, `$.list[0]`).', { example: "['$.timestamp', '$.requestId']" }),
  'services.NAME.mirror.headers': d('Response headers whose values must match.', { example: '[content-type]' }),
  'services.NAME.mirror.maxBodyBytes': d('Bodies are compared whole up to this size (past it by digest, and the offset is the first byte past it); a copied request body over it is not copied (counted as dropped). Memory held by copies is at most about 3 × maxBodyBytes × maxInflight per process.'),
  'services.NAME.mirror.maxInflight': d('Copies in flight at once per gateway process; a request that would exceed it is not copied (counted as dropped).'),
  'services.NAME.mirror.timeout': d('Longest a copy may take, connect to last byte; past it the copy counts as an error. The client never waits for it.'),

  shutdown: d('Graceful shutdown on SIGTERM or SIGINT.'),
  'shutdown.drainDelay': d('`/ready` answers 503 but the gateway still serves, so load balancers stop sending first.'),
  'shutdown.grace': d('Longest wait for in-flight requests (and endpoint drains).'),
};

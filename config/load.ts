// Reads, interpolates, validates and normalizes a config file. Validation runs once,
// reports every problem as "key.path: message", and the result is deep-frozen.

import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, isAbsolute, resolve as resolvePath } from 'node:path';
import { Ajv, type ErrorObject } from 'ajv';
import { parseDocument } from 'yaml';
import { configSchema, formats, FORMAT_MESSAGES, DURATION_RE, SIZE_RE, ENDPOINT_RE } from './schema.js';
import { defaults } from './defaults.js';
import type { Config, EndpointAddress, MirrorConfig, ServiceConfig, VersionConfig } from './types.js';
import { loadCertificate } from '../gateway/tls.js';

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(problems.join('\n'));
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

const ajv = new Ajv({ allErrors: true, strict: false, allowUnionTypes: true });
for (const [name, fn] of Object.entries(formats)) ajv.addFormat(name, { type: 'string', validate: fn });
const validateRaw = ajv.compile(configSchema);

export { ajv };

export function parseDuration(s: string): number {
  const m = DURATION_RE.exec(s);
  if (!m) throw new Error(`invalid duration ${s}`);
  const n = Number(m[1]);
  const unit = m[2];
  return Math.round(unit === 'ms' ? n : unit === 's' ? n * 1e3 : unit === 'm' ? n * 60e3 : n * 3600e3);
}

export function parseSize(s: string | number): number {
  if (typeof s === 'number') return s;
  const m = SIZE_RE.exec(s);
  if (!m) throw new Error(`invalid size ${s}`);
  const mult: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 };
  return Number(m[1]) * mult[(m[2] ?? 'b').toLowerCase()];
}

/** The wire form of a mirror (config file, PUT …/mirror), as the schema admits it. */
export interface MirrorBody {
  to: string;
  percent?: number;
  methods?: string[];
  compare?: boolean;
  ignore?: string[];
  headers?: string[];
  maxBodyBytes?: string | number;
  maxInflight?: number;
  timeout?: string;
}

/** A mirror over the defaults; cross-field problems (an unknown version) go to `problems`. */
export function normalizeMirror(m: MirrorBody, versions: readonly string[], at: string, problems: string[]): MirrorConfig {
  const dm = defaults.service.mirror;
  if (!versions.includes(m.to)) problems.push(`${at}.to: the service has no version ${m.to}`);
  const timeoutMs = parseDuration(m.timeout ?? dm.timeout);
  if (timeoutMs < 1) problems.push(`${at}.timeout: must be at least 1ms`);
  return {
    to: m.to,
    percent: m.percent ?? dm.percent,
    methods: (m.methods ?? dm.methods).map((x) => x.toUpperCase()),
    compare: m.compare ?? dm.compare,
    ignore: [...(m.ignore ?? dm.ignore)],
    headers: (m.headers ?? dm.headers).map((h) => h.toLowerCase()),
    maxBodyBytes: parseSize(m.maxBodyBytes ?? dm.maxBodyBytes),
    maxInflight: m.maxInflight ?? dm.maxInflight,
    timeoutMs,
  };
}

/** The wire form of a stored mirror (GET …/mirror shows what PUT takes). */
export function mirrorBody(m: MirrorConfig): Required<MirrorBody> {
  return { to: m.to, percent: m.percent, methods: m.methods, compare: m.compare, ignore: m.ignore, headers: m.headers, maxBodyBytes: m.maxBodyBytes, maxInflight: m.maxInflight, timeout: `${m.timeoutMs}ms` };
}

export function parseEndpoint(s: string): EndpointAddress {
  const m = ENDPOINT_RE.exec(s);
  if (!m) throw new Error(`invalid endpoint ${s}`);
  const protocol = m[1]?.startsWith('https') ? 'https' : 'http';
  const host = m[2];
  const port = Number(m[4]);
  const hostPort = `${host}:${port}`;
  return {
    id: protocol === 'https' ? `https://${hostPort}` : hostPort,
    protocol,
    host: host.startsWith('[') ? host.slice(1, -1) : host,
    port,
    origin: `${protocol}://${hostPort}`,
  };
}

/** Splits "host:port" into its parts; host may be a bracketed IPv6 address. */
export function splitHostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  let host = s.slice(0, i);
  if (host.startsWith('[')) host = host.slice(1, -1);
  return { host: host === '' ? '0.0.0.0' : host, port: Number(s.slice(i + 1)) };
}

export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function pathOf(instancePath: string, extra?: string): string {
  const parts = instancePath.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  if (extra !== undefined) parts.push(extra);
  // An empty key ("": …) still gets a visible name.
  return parts.length ? parts.map((p) => (p === '' ? '""' : p)).join('.') : '(root)';
}

function describe(e: ErrorObject): string {
  switch (e.keyword) {
    case 'additionalProperties':
      return `${pathOf(e.instancePath, String(e.params.additionalProperty))}: unknown key`;
    case 'required':
      return `${pathOf(e.instancePath, String(e.params.missingProperty))}: is required`;
    case 'format':
      return `${pathOf(e.instancePath)}: ${FORMAT_MESSAGES[String(e.params.format)] ?? e.message}`;
    case 'propertyNames':
      return `${pathOf(e.instancePath, String(e.params.propertyName))}: ${FORMAT_MESSAGES.name}`;
    case 'enum':
      return `${pathOf(e.instancePath)}: must be one of ${(e.params.allowedValues as unknown[]).join(', ')}`;
    case 'type':
      return `${pathOf(e.instancePath)}: must be ${[e.params.type].flat().join(' or ')}`;
    default:
      return `${pathOf(e.instancePath)}: ${e.message}`;
  }
}

/** Formats ajv errors as "path: message" lines; used by the config and the control API. */
export function describeErrors(errors: ErrorObject[] | null | undefined): string[] {
  const out: string[] = [];
  for (const e of errors ?? []) {
    // propertyNames reports once for the name and once for the nested format: keep one.
    if (e.keyword === 'format' && e.propertyName !== undefined) continue;
    const line = describe(e);
    if (!out.includes(line)) out.push(line);
  }
  return out;
}

const ENV_RE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/** Replaces ${VAR} and ${VAR:-default} in every string value, after YAML parsing, so an
 * environment value can never change the structure of the document. */
/** The JSON-schema type the config schema expects at a path (for typed ${VAR}s). */
function schemaTypeAt(path: string[]): string | undefined {
  let node: Record<string, unknown> | undefined = configSchema as unknown as Record<string, unknown>;
  for (const key of path) {
    if (node === undefined) return undefined;
    if (node.type === 'array') node = node.items as Record<string, unknown> | undefined;
    else node = ((node.properties as Record<string, unknown> | undefined)?.[key] ?? node.additionalProperties) as Record<string, unknown> | undefined;
    if (typeof node !== 'object' || node === null) return undefined;
  }
  return typeof node?.type === 'string' ? node.type : undefined;
}

const WHOLE_VAR_RE = /^\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}$/;

function substitute(text: string, env: NodeJS.ProcessEnv, path: string[], problems: string[]): string {
  return text.replace(ENV_RE, (_all, name: string, dflt: string | undefined) => {
    const v = env[name];
    if (v !== undefined && v !== '') return v;
    if (dflt !== undefined) return dflt;
    problems.push(`${path.join('.') || '(root)'}: environment variable ${name} is not set`);
    return '';
  });
}

function interpolate(node: unknown, env: NodeJS.ProcessEnv, path: string[], problems: string[]): unknown {
  if (typeof node === 'string') {
    const text = substitute(node, env, path, problems);
    // `weight: ${BLUE_WEIGHT}`: a value that is exactly one variable takes the type the
    // schema expects there (integer, number, boolean) when its text is one.
    if (text !== node && WHOLE_VAR_RE.test(node)) {
      const type = schemaTypeAt(path);
      if (type === 'boolean' && (text === 'true' || text === 'false')) return text === 'true';
      if ((type === 'integer' || type === 'number') && /^-?\d+(\.\d+)?$/.test(text)) return Number(text);
    }
    return text;
  }
  if (Array.isArray(node)) return node.map((v, i) => interpolate(v, env, [...path, String(i)], problems));
  if (node !== null && typeof node === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(node)) {
      // A YAML key "__proto__" would set the object's prototype here, not a key.
      if (k === '__proto__') {
        problems.push(`${[...path, k].join('.')}: unknown key`);
        continue;
      }
      out[k] = interpolate(v, env, [...path, k], problems);
    }
    return out;
  }
  return node;
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o;
}

// Sources of endpoints that this build can follow. A config naming another is refused
// with a clear message rather than accepted and silently ignored.
const SUPPORTED_SOURCES = new Set(['static', 'consul', 'dns']);

/** @param baseDir the directory relative files (versions.V.tls.ca) are resolved against:
 * the config file's (loadConfigFile), else the working directory. */
export function loadConfigText(text: string, env: NodeJS.ProcessEnv = process.env, baseDir: string = process.cwd()): Config {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length) {
    throw new ConfigError(doc.errors.slice(0, 3).map((e) => `(yaml): ${e.message.split("\n")[0]}`));
  }
  const problems: string[] = [];
  let js: unknown;
  try {
    js = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    // An alias bomb ("Excessive alias count…") and the like.
    throw new ConfigError([`(yaml): ${String((err as Error).message ?? err).split('\n')[0]}`]);
  }
  const raw = interpolate(js ?? {}, env, [], problems);
  if (problems.length) {
    // A `__proto__` key (or a variable that could not be substituted) may sit inside a
    // key that is unknown itself: name that one too, so the outermost mistake is never
    // hidden behind the one found inside it.
    if (!validateRaw(raw)) for (const p of describeErrors(validateRaw.errors)) if (p.endsWith(': unknown key') && !problems.includes(p)) problems.push(p);
    throw new ConfigError(problems);
  }
  if (!validateRaw(raw)) throw new ConfigError(describeErrors(validateRaw.errors));
  return deepFreeze(normalize(raw as RawConfig, baseDir));
}

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([`(file): cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`]);
  }
  return loadConfigText(text, env, dirname(resolvePath(file)));
}

// The raw, schema-valid document. Loosely typed: the schema has already checked it.
/* eslint-disable @typescript-eslint/no-explicit-any */
type RawConfig = Record<string, any>;

// A Host header value: a DNS name or address, optionally with a port.
const HOST_HEADER_RE = /^([a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?|\[[0-9a-fA-F:.]+\])(:\d{1,5})?$/;

/** versions.V.tls and hostHeader, checked and normalized (the CA file is read here, so
 * `switchyard check` and a reload refuse one that cannot be read). */
function upstreamTls(v: any, vp: string, baseDir: string, problems: string[]): Pick<VersionConfig, 'tls' | 'hostHeader'> {
  const out: Pick<VersionConfig, 'tls' | 'hostHeader'> = {};
  if (v.hostHeader !== undefined) {
    if (HOST_HEADER_RE.test(v.hostHeader)) out.hostHeader = v.hostHeader;
    else problems.push(`${vp}.hostHeader: must be a host name or address, optionally with :port`);
  }
  const t = v.tls;
  if (t === undefined) return out;
  const tls: NonNullable<VersionConfig['tls']> = { verify: t.verify ?? true };
  if (t.servername !== undefined) {
    if (isIP(t.servername) === 0 && /^[a-zA-Z0-9*]([a-zA-Z0-9.-]*[a-zA-Z0-9])?$/.test(t.servername)) tls.servername = t.servername;
    else problems.push(`${vp}.tls.servername: must be a DNS name (SNI carries no IP address)`);
  }
  if (t.ca !== undefined) {
    const file = isAbsolute(t.ca) ? t.ca : resolvePath(baseDir, t.ca);
    tls.ca = file;
    try {
      const pem = readFileSync(file, 'utf8');
      if (!pem.includes('-----BEGIN CERTIFICATE-----')) problems.push(`${vp}.tls.ca: ${file} holds no PEM certificate`);
      else tls.caPem = pem;
    } catch (err) {
      problems.push(`${vp}.tls.ca: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  }
  out.tls = tls;
  return out;
}

/** A cert/key pair of files, resolved against the config file's directory and loaded
 * once (readable, a PEM certificate, a key that fits it), so `switchyard check` and a
 * reload refuse a pair the listener could not use. */
function certificateFiles(c: { cert: string; key: string }, p: string, baseDir: string, problems: string[]): { cert: string; key: string } {
  const files = { cert: isAbsolute(c.cert) ? c.cert : resolvePath(baseDir, c.cert), key: isAbsolute(c.key) ? c.key : resolvePath(baseDir, c.key) };
  try {
    loadCertificate(files);
  } catch (err) {
    problems.push(`${p}: ${(err as Error).message}`);
  }
  return files;
}

function normalize(raw: RawConfig, baseDir: string = process.cwd()): Config {
  const problems: string[] = [];
  const g = raw.gateway ?? {};
  const dg = defaults.gateway;
  const services: ServiceConfig[] = [];
  const routeOwners = new Map<string, string>();

  for (const [name, s] of Object.entries<any>(raw.services ?? {})) {
    const p = `services.${name}`;
    const versions: VersionConfig[] = [];
    let total = 0;
    for (const [vname, v] of Object.entries<any>(s.versions)) {
      const vp = `${p}.versions.${vname}`;
      const kinds = ['endpoints', 'consul', 'dns'].filter((k) => v[k] !== undefined);
      if (kinds.length !== 1) {
        problems.push(`${vp}: must have exactly one source of endpoints (endpoints, consul or dns), found ${kinds.length ? kinds.join(', ') : 'none'}`);
        continue;
      }
      if (!SUPPORTED_SOURCES.has(kinds[0] === 'endpoints' ? 'static' : kinds[0])) {
        problems.push(`${vp}.${kinds[0]}: this build cannot discover endpoints through ${kinds[0]} yet; list them under endpoints`);
        continue;
      }
      const weight = v.weight ?? 0;
      total += weight;
      if (kinds[0] === 'consul') {
        // Endpoints come from Consul at run time (discovery/consul.ts).
        const c = v.consul;
        if (raw.discovery?.consul === undefined) problems.push(`${vp}.consul: needs discovery.consul (the Consul agent to ask)`);
        if (v.tls !== undefined) problems.push(`${vp}.tls: Consul instances are dialed over HTTP; tls applies to https:// endpoints and dns sources`);
        const { hostHeader } = upstreamTls({ hostHeader: v.hostHeader }, vp, baseDir, problems);
        versions.push({ name: vname, weight, source: { kind: 'consul', service: c.service, tag: c.tag, meta: c.meta === undefined ? undefined : { ...c.meta } }, ...(hostHeader === undefined ? {} : { hostHeader }) });
        continue;
      }
      if (kinds[0] === 'dns') {
        // Endpoints come from DNS at run time (discovery/dns.ts); with tls, over HTTPS.
        const d = v.dns;
        const dp = `${vp}.dns`;
        if ((d.name === undefined) === (d.srv === undefined)) problems.push(`${dp}: must have exactly one of name (A/AAAA records, with port) or srv (SRV records give the ports)`);
        if (d.name !== undefined && d.port === undefined) problems.push(`${dp}.port: is required with name (A/AAAA records carry no port)`);
        if (d.srv !== undefined && d.port !== undefined) problems.push(`${dp}.port: not allowed with srv (the SRV records give the ports)`);
        if (d.resolver !== undefined) {
          const r = splitHostPort(d.resolver);
          if (isIP(r.host) === 0 || r.port < 1) problems.push(`${dp}.resolver: must be an IP address and port (ip:port or [ipv6]:port) of a DNS server`);
        }
        const intervalMs = parseDuration(d.interval ?? defaults.dns.interval);
        if (intervalMs < 100) problems.push(`${dp}.interval: must be at least 100ms`);
        versions.push({
          name: vname,
          weight,
          source: { kind: 'dns', name: d.name, srv: d.srv, port: d.port, intervalMs, resolver: d.resolver, emptyGraceMs: parseDuration(d.emptyGrace ?? defaults.dns.emptyGrace) },
          ...upstreamTls(v, vp, baseDir, problems),
        });
        continue;
      }
      const endpoints: EndpointAddress[] = [];
      const seen = new Set<string>();
      (v.endpoints as string[]).forEach((e, i) => {
        const ep = parseEndpoint(e);
        if (seen.has(ep.id)) problems.push(`${vp}.endpoints.${i}: duplicate endpoint ${e}`);
        seen.add(ep.id);
        endpoints.push(ep);
      });
      if (v.tls !== undefined && !endpoints.some((e) => e.protocol === 'https')) {
        problems.push(`${vp}.tls: applies to https:// endpoints and this version lists none`);
      }
      versions.push({ name: vname, weight, source: { kind: 'static', endpoints }, ...upstreamTls(v, vp, baseDir, problems) });
    }
    if (versions.length && total === 0) problems.push(`${p}.versions: at least one version must have a positive weight`);

    const routes = (s.routes as any[]).map((r, i) => {
      const host = r.host?.toLowerCase();
      const path = r.path ?? '/';
      const key = `${host ?? '*'}${path}`;
      const owner = routeOwners.get(key);
      if (owner !== undefined) problems.push(`${p}.routes.${i}: route ${host ?? '(any host)'} ${path} is already taken by ${owner}`);
      routeOwners.set(key, `services.${name}.routes.${i}`);
      return { host, path };
    });

    // h2 is HTTP/2 over TLS (https:// endpoints); h2c and http1 dial http:// ones
    // (http1 may mix: each endpoint says).
    const protocol: 'http1' | 'h2c' | 'h2' = s.protocol ?? defaults.service.protocol;
    for (const v of versions) {
      if (protocol === 'http1') continue;
      const vp = `${p}.versions.${v.name}`;
      if (v.source.kind === 'consul' && protocol === 'h2') problems.push(`${vp}.consul: protocol h2 needs https endpoints; Consul instances are dialed over plain TCP (use h2c)`);
      if (v.source.kind === 'static') {
        v.source.endpoints.forEach((e, i) => {
          if (protocol === 'h2' && e.protocol !== 'https') problems.push(`${vp}.endpoints.${i}: protocol h2 is HTTP/2 over TLS and needs https:// endpoints`);
          if (protocol === 'h2c' && e.protocol !== 'http') problems.push(`${vp}.endpoints.${i}: protocol h2c is HTTP/2 over plain TCP; an https:// endpoint needs protocol h2`);
        });
      }
      if (v.source.kind === 'dns' && (protocol === 'h2') !== (v.tls !== undefined)) {
        problems.push(`${vp}.dns: protocol ${protocol} ${protocol === 'h2' ? 'needs' : 'does not take'} a tls block (DNS endpoints are dialed over TLS only with one)`);
      }
    }
    const dh = defaults.service.healthCheck;
    const hc = s.healthCheck ?? {};
    const healthCheck = {
      // Active probes run only when a healthCheck block is configured.
      enabled: s.healthCheck !== undefined && hc.enabled !== false,
      type: (hc.type ?? 'http') as 'http' | 'grpc',
      grpcService: hc.grpcService ?? '',
      path: hc.path ?? dh.path,
      intervalMs: parseDuration(hc.interval ?? dh.interval),
      timeoutMs: parseDuration(hc.timeout ?? dh.timeout),
      healthyThreshold: hc.healthyThreshold ?? dh.healthyThreshold,
      unhealthyThreshold: hc.unhealthyThreshold ?? dh.unhealthyThreshold,
    };
    if (healthCheck.type === 'grpc' && protocol === 'http1') problems.push(`${p}.healthCheck.type: grpc probes need protocol h2c or h2`);
    if (hc.grpcService !== undefined && healthCheck.type !== 'grpc') problems.push(`${p}.healthCheck.grpcService: applies to type grpc only`);
    if (hc.path !== undefined && healthCheck.type === 'grpc') problems.push(`${p}.healthCheck.path: not used by type grpc (it calls /grpc.health.v1.Health/Check)`);
    if (healthCheck.timeoutMs > healthCheck.intervalMs) {
      problems.push(`${p}.healthCheck.timeout: must not be longer than healthCheck.interval`);
    }
    const dod = defaults.service.outlierDetection;
    const od = s.outlierDetection ?? {};
    const timeouts = s.timeouts ?? {};
    const dt = defaults.service.timeouts;
    if (s.sticky !== undefined && s.sticky.cookie === undefined && s.sticky.header === undefined) {
      problems.push(`${p}.sticky: must name a cookie, a header, or both`);
    }
    services.push({
      name,
      routes,
      versions,
      healthCheck,
      outlierDetection: {
        consecutive5xx: od.consecutive5xx ?? dod.consecutive5xx,
        consecutiveGatewayErrors: od.consecutiveGatewayErrors ?? dod.consecutiveGatewayErrors,
        baseEjectionTimeMs: parseDuration(od.baseEjectionTime ?? dod.baseEjectionTime),
        maxEjectionPercent: od.maxEjectionPercent ?? dod.maxEjectionPercent,
      },
      slowStartMs: parseDuration(s.slowStart ?? defaults.service.slowStart),
      sticky: s.sticky ? { cookie: s.sticky.cookie, header: s.sticky.header?.toLowerCase() } : undefined,
      override: s.override ? { header: s.override.header.toLowerCase() } : undefined,
      retries: { attempts: s.retries?.attempts ?? defaults.service.retries.attempts },
      timeouts: {
        connectMs: parseDuration(timeouts.connect ?? dt.connect),
        requestMs: parseDuration(timeouts.request ?? dt.request),
      },
      protocol,
      grpc: { errorStatuses: [...(s.grpc?.errorStatuses ?? defaults.service.grpcErrorStatuses)].sort((a: number, b: number) => a - b) },
      connections: { drainMs: parseDuration(s.connections?.drain ?? defaults.service.connections.drain) },
      ...(s.mirror === undefined ? {} : { mirror: normalizeMirror(s.mirror, versions.map((v) => v.name), `${p}.mirror`, problems) }),
    });
  }

  if (g.maxHeaderSize !== undefined && parseSize(g.maxHeaderSize) > 1024 * 1024) problems.push('gateway.maxHeaderSize: must be at most 1mb');
  const gatewayTls = g.tls === undefined ? undefined : { certificates: (g.tls.certificates as any[]).map((c, i) => certificateFiles(c, `gateway.tls.certificates.${i}`, baseDir, problems)), watch: g.tls.watch ?? true };
  if (g.redirectHttp !== undefined) {
    if (g.tls === undefined) problems.push('gateway.redirectHttp: needs gateway.tls (it redirects to the HTTPS listener)');
    if (g.redirectHttp === (g.listen ?? dg.listen) && splitHostPort(g.redirectHttp).port !== 0) problems.push('gateway.redirectHttp: must differ from gateway.listen');
  }
  const controlTls = raw.control?.tls === undefined ? undefined : certificateFiles(raw.control.tls, 'control.tls', baseDir, problems);
  const consulWait = raw.discovery?.consul?.wait;
  if (consulWait !== undefined && (parseDuration(consulWait) < 1000 || parseDuration(consulWait) > 600_000)) {
    problems.push('discovery.consul.wait: must be from 1s to 10m (Consul caps a blocking query at 10m)');
  }
  const tokens: { name: string; token: string }[] = raw.control?.tokens ?? [];
  tokens.forEach((t, i) => {
    if (tokens.findIndex((o) => o.name === t.name) !== i) problems.push(`control.tokens.${i}.name: duplicate token name ${t.name}`);
    if (tokens.findIndex((o) => o.token === t.token) !== i) problems.push(`control.tokens.${i}.token: the same token is configured twice`);
  });
  const controlListen: string = raw.control?.listen ?? defaults.control.listen;
  // Node refuses a headers timeout longer than the request timeout (the request includes its headers).
  const controlHeadersMs = parseDuration(raw.control?.timeouts?.headers ?? defaults.control.timeouts.headers);
  const controlRequestMs = parseDuration(raw.control?.timeouts?.request ?? defaults.control.timeouts.request);
  if (controlHeadersMs < 100) problems.push('control.timeouts.headers: must be at least 100ms');
  if (controlRequestMs < 100) problems.push('control.timeouts.request: must be at least 100ms');
  if (controlHeadersMs > controlRequestMs) problems.push('control.timeouts.headers: must not be longer than control.timeouts.request (the request includes its headers)');
  if (tokens.length === 0 && !isLoopbackHost(splitHostPort(controlListen).host)) {
    problems.push(`control.tokens: required when control.listen (${controlListen}) is not a loopback address`);
  }

  if (problems.length) throw new ConfigError(problems);

  const t = g.timeouts ?? {};
  const u = g.upstream ?? {};
  const sh = raw.shutdown ?? {};
  return {
    gateway: {
      listen: g.listen ?? dg.listen,
      accessLog: g.accessLog ?? dg.accessLog,
      accessLogSample: g.accessLogSample ?? dg.accessLogSample,
      maxBodySize: parseSize(g.maxBodySize ?? dg.maxBodySize),
      maxHeaderSize: parseSize(g.maxHeaderSize ?? dg.maxHeaderSize),
      maxHeaderCount: g.maxHeaderCount ?? dg.maxHeaderCount,
      timeouts: {
        headersMs: parseDuration(t.headers ?? dg.timeouts.headers),
        requestMs: parseDuration(t.request ?? dg.timeouts.request),
        keepAliveMs: parseDuration(t.keepAlive ?? dg.timeouts.keepAlive),
        sendMs: parseDuration(t.send ?? dg.timeouts.send),
      },
      http2: { maxConcurrentStreams: g.http2?.maxConcurrentStreams ?? dg.http2.maxConcurrentStreams },
      upgrades: {
        protocols: (g.upgrades?.protocols ?? dg.upgrades.protocols).map((p: string) => p.toLowerCase()),
        maxTunnels: g.upgrades?.maxTunnels ?? dg.upgrades.maxTunnels,
        idleTimeoutMs: parseDuration(g.upgrades?.idleTimeout ?? dg.upgrades.idleTimeout),
      },
      upstream: {
        maxConnectionsPerEndpoint: u.maxConnectionsPerEndpoint ?? dg.upstream.maxConnectionsPerEndpoint,
        idleTimeoutMs: parseDuration(u.idleTimeout ?? dg.upstream.idleTimeout),
      },
      ...(gatewayTls === undefined ? {} : { tls: gatewayTls }),
      ...(g.redirectHttp === undefined ? {} : { redirectHttp: g.redirectHttp }),
      maxConnectionsPerClient: g.maxConnectionsPerClient ?? dg.maxConnectionsPerClient,
      workers: g.workers ?? dg.workers,
    },
    admin: { listen: raw.admin?.listen ?? defaults.admin.listen },
    control: {
      listen: raw.control?.listen ?? defaults.control.listen,
      ...(controlTls === undefined ? {} : { tls: controlTls }),
      tokens: raw.control?.tokens ?? [],
      webhooks: raw.control?.webhooks ?? [],
      authRateLimit: {
        failures: raw.control?.authRateLimit?.failures ?? defaults.control.authRateLimit.failures,
        windowMs: parseDuration(raw.control?.authRateLimit?.window ?? defaults.control.authRateLimit.window),
        maxClients: raw.control?.authRateLimit?.maxClients ?? defaults.control.authRateLimit.maxClients,
      },
      maxStreamsPerToken: raw.control?.maxStreamsPerToken ?? defaults.control.maxStreamsPerToken,
      timeouts: { headersMs: controlHeadersMs, requestMs: controlRequestMs },
    },
    state: {
      store: raw.state?.store ?? defaults.state.store,
      file: raw.state?.file ?? defaults.state.file,
      redis: {
        url: raw.state?.redis?.url ?? defaults.state.redis.url,
        prefix: raw.state?.redis?.prefix ?? defaults.state.redis.prefix,
      },
    },
    discovery: { consul: normalizeConsul(raw.discovery?.consul) },
    log: { level: raw.log?.level ?? defaults.log.level },
    services,
    shutdown: {
      drainDelayMs: parseDuration(sh.drainDelay ?? defaults.shutdown.drainDelay),
      graceMs: parseDuration(sh.grace ?? defaults.shutdown.grace),
    },
  };
}

function normalizeConsul(c: any): Config['discovery']['consul'] {
  if (c === undefined) return undefined;
  const d = defaults.consul;
  const r = c.register;
  return {
    address: String(c.address ?? d.address).replace(/\/$/, ''),
    token: c.token ? c.token : undefined,
    datacenter: c.datacenter ? c.datacenter : undefined,
    ca: c.ca,
    stale: c.stale ?? false,
    waitMs: parseDuration(c.wait ?? d.wait),
    startWithoutSnapshot: c.startWithoutSnapshot ?? false,
    register:
      r === undefined
        ? undefined
        : {
            name: r.name,
            id: r.id,
            address: r.address,
            port: r.port,
            tags: r.tags ?? [],
            checkIntervalMs: parseDuration(r.checkInterval ?? d.register.checkInterval),
            checkTimeoutMs: parseDuration(r.checkTimeout ?? d.register.checkTimeout),
          },
  };
}

// The route table: an immutable snapshot, built by one pure function whenever anything
// it depends on changes (config, weights, endpoint sets, endpoint availability), and
// swapped into the holder in one assignment (fabio's SetTable/GetTable). A request reads
// `holder.current` once and keeps what it chose, whatever is swapped in while it runs.

import type { MirrorConfig, ServiceConfig } from '../config/types.js';
import type { Endpoint, VersionStats } from './endpoint.js';
import { buildMirrorPlan, type MirrorPlan, type MirrorStats } from './mirror.js';

export interface VersionSnapshot {
  readonly name: string;
  /** The desired weight (before availability is taken into account). */
  readonly weight: number;
  /** Endpoints that may take new requests: healthy, not ejected, not draining. */
  readonly endpoints: readonly Endpoint[];
  /** Every endpoint of the version, whatever its state. */
  readonly all: readonly Endpoint[];
  readonly stats: VersionStats;
  readonly slowStartMs: number;
  /** The Host header sent upstream instead of the client's (versions.V.hostHeader). */
  readonly hostHeader?: string;
}

export interface ServiceSnapshot {
  readonly name: string;
  readonly config: ServiceConfig;
  readonly versions: readonly VersionSnapshot[];
  readonly byName: ReadonlyMap<string, VersionSnapshot>;
  /** Cumulative weights of the versions that can take traffic, in config order. */
  readonly line: Float64Array;
  readonly lineVersions: readonly VersionSnapshot[];
  readonly totalWeight: number;
  /** Lower-cased header names, hoisted out of the request path. */
  readonly overrideHeader?: string;
  readonly stickyHeader?: string;
  readonly stickyCookie?: string;
  /** Bit n set: grpc-status n counts as an error (services.NAME.grpc.errorStatuses). */
  readonly grpcErrorMask: number;
  /** The mirror in force (gateway/mirror.ts), if any. */
  readonly mirror?: MirrorPlan;
}

interface RouteEntry {
  readonly path: string;
  readonly service: ServiceSnapshot;
}

export interface Snapshot {
  readonly services: ReadonlyMap<string, ServiceSnapshot>;
  readonly exactHosts: ReadonlyMap<string, readonly RouteEntry[]>;
  readonly wildcardHosts: readonly { suffix: string; routes: readonly RouteEntry[] }[];
  readonly anyHost: readonly RouteEntry[];
}

export interface SnapshotInput {
  services: readonly ServiceConfig[];
  /** Desired weights per service; a version missing here takes its config weight. */
  weights: ReadonlyMap<string, Readonly<Record<string, number>>>;
  endpointsOf(service: string, version: string): readonly Endpoint[];
  statsOf(service: string, version: string): VersionStats;
  /** The mirror in force for a service (runtime over config), if any. */
  mirrorOf?(service: string): MirrorConfig | undefined;
  mirrorStatsOf?(service: string, version: string): MirrorStats;
}

function byLongestPath(a: RouteEntry, b: RouteEntry): number {
  return b.path.length - a.path.length;
}

export function buildSnapshot(input: SnapshotInput): Snapshot {
  const services = new Map<string, ServiceSnapshot>();
  const exact = new Map<string, RouteEntry[]>();
  const wild = new Map<string, RouteEntry[]>();
  const anyHost: RouteEntry[] = [];

  for (const sc of input.services) {
    const desired = input.weights.get(sc.name);
    const versions: VersionSnapshot[] = [];
    const byName = new Map<string, VersionSnapshot>();
    const lineVersions: VersionSnapshot[] = [];
    const cumulative: number[] = [];
    let total = 0;
    for (const vc of sc.versions) {
      const all = input.endpointsOf(sc.name, vc.name);
      const weight = desired?.[vc.name] ?? vc.weight;
      const v: VersionSnapshot = {
        name: vc.name,
        weight,
        all,
        endpoints: all.filter((e) => e.available),
        stats: input.statsOf(sc.name, vc.name),
        slowStartMs: sc.slowStartMs,
        hostHeader: vc.hostHeader,
      };
      versions.push(v);
      byName.set(vc.name, v);
      // Routing rule 3: a version with no available endpoint gets no share.
      if (weight > 0 && v.endpoints.length > 0) {
        total += weight;
        cumulative.push(total);
        lineVersions.push(v);
      }
    }
    const svc: ServiceSnapshot = {
      name: sc.name,
      config: sc,
      versions,
      byName,
      line: Float64Array.from(cumulative),
      lineVersions,
      totalWeight: total,
      overrideHeader: sc.override?.header,
      stickyHeader: sc.sticky?.header,
      stickyCookie: sc.sticky?.cookie,
      grpcErrorMask: (sc.grpc?.errorStatuses ?? []).reduce((m, c) => m | (1 << c), 0),
      mirror: mirrorPlan(input, sc.name, byName),
    };
    services.set(sc.name, svc);
    for (const r of sc.routes) {
      const entry = { path: r.path, service: svc };
      if (r.host === undefined) anyHost.push(entry);
      else if (r.host.startsWith('*.')) push(wild, r.host.slice(1), entry);
      else push(exact, r.host, entry);
    }
  }
  for (const list of exact.values()) list.sort(byLongestPath);
  for (const list of wild.values()) list.sort(byLongestPath);
  anyHost.sort(byLongestPath);
  return {
    services,
    exactHosts: exact,
    // Longest suffix first, so a.b.example.com prefers *.b.example.com to *.example.com.
    wildcardHosts: [...wild.entries()]
      .map(([suffix, routes]) => ({ suffix, routes }))
      .sort((a, b) => b.suffix.length - a.suffix.length),
    anyHost,
  };
}

function mirrorPlan(input: SnapshotInput, service: string, byName: ReadonlyMap<string, VersionSnapshot>): MirrorPlan | undefined {
  const m = input.mirrorOf?.(service);
  if (m === undefined || input.mirrorStatsOf === undefined) return undefined;
  const to = byName.get(m.to);
  // (a reload that removed the target turns the mirror off until it is back)
  if (to === undefined || m.percent <= 0) return undefined;
  return buildMirrorPlan(m, to, input.mirrorStatsOf(service, m.to));
}

function push<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const list = m.get(k);
  if (list) list.push(v);
  else m.set(k, [v]);
}

/**
 * Route prefixes match whole path segments: `/api` matches `/api`, `/api/` and `/api/x`
 * but not `/apiary` (a route meant for one application must not catch another's paths
 * that merely share letters). A prefix that ends in `/` (including `/` itself) already
 * ends on a segment boundary and matches every path under it. `path` has no query.
 */
function prefixMatches(prefix: string, path: string): boolean {
  if (!path.startsWith(prefix)) return false;
  return path.length === prefix.length || prefix.charCodeAt(prefix.length - 1) === 47 /* / */ || path.charCodeAt(prefix.length) === 47;
}

function matchPath(routes: readonly RouteEntry[], path: string): ServiceSnapshot | undefined {
  for (let i = 0; i < routes.length; i++) {
    if (prefixMatches(routes[i].path, path)) return routes[i].service;
  }
  return undefined;
}

/**
 * Routing rule 1: exact host (or, failing that, a wildcard host, then routes without a
 * host) plus the longest path prefix that matches on segment boundaries (prefixMatches).
 * @param host the Host header, lower-cased by the caller, port included or not
 */
export function matchRoute(snap: Snapshot, host: string | undefined, path: string): ServiceSnapshot | undefined {
  if (host !== undefined && host !== '') {
    const h = stripPort(host);
    const list = snap.exactHosts.get(h);
    if (list !== undefined) {
      const s = matchPath(list, path);
      if (s !== undefined) return s;
    }
    const wild = snap.wildcardHosts;
    for (let i = 0; i < wild.length; i++) {
      if (h.endsWith(wild[i].suffix)) {
        const s = matchPath(wild[i].routes, path);
        if (s !== undefined) return s;
      }
    }
  }
  return matchPath(snap.anyHost, path);
}

function stripPort(host: string): string {
  if (host.charCodeAt(0) === 91 /* [ */) {
    const end = host.indexOf(']');
    return end === -1 ? host : host.slice(0, end + 1);
  }
  const i = host.indexOf(':');
  return i === -1 ? host : host.slice(0, i);
}

/** One swap point for the current snapshot; injected into the server, never global. */
export class SnapshotHolder {
  current: Snapshot;
  constructor(initial: Snapshot) {
    this.current = initial;
  }
  swap(next: Snapshot): void {
    this.current = next;
  }
}

// A data-plane worker of gateway.workers (see gateway/workers.ts): started by the
// primary with node:cluster, it serves gateway.listen (shared with the other workers)
// from a Dataplane that mirrors the primary's, applying each state message in order.
// It never decides anything: discovery, probes, ejection limits, the control API and
// shutdown come from the primary. Signals sent to the whole process group are ignored:
// the primary runs the shutdown; a worker whose primary is gone drains and exits.

import cluster from 'node:cluster';
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';
import { createLogger, flushLog } from './log.js';
import type { Config } from '../config/types.js';
import { C, VersionCounters } from '../gateway/counters.js';
import { vkey } from '../discovery/provider.js';
import { Dataplane } from '../gateway/dataplane.js';
import type { MirrorDelta } from '../gateway/mirror.js';
import { OutlierDetector } from '../gateway/health/passive.js';
import { GatewayServer } from '../gateway/server.js';
import { STATS_INTERVAL_MS, type FromWorker, type SecondDelta, type ToWorker } from '../gateway/workers.js';

// node:cluster makes a worker exit at once when its IPC channel closes unexpectedly
// (the primary died); this one drains first (the 'disconnect' handler below).
if (cluster.worker !== undefined) cluster.worker.exitedAfterDisconnect = true;

let log: Logger = createLogger('info', { worker: true });
let config: Config | undefined;
let dataplane: Dataplane | undefined;
let gateway: GatewayServer | undefined;
let stopping: Promise<void> | undefined;
const counters: VersionCounters[] = [];
/** Requests + upstream attempts of each version's counters when last sent. */
const sentCounts = new Map<VersionCounters, number>();

function send(msg: FromWorker): Promise<void> {
  return new Promise((resolve) => {
    if (!process.connected || process.send === undefined) return resolve();
    process.send(msg, undefined, {}, () => resolve());
  });
}

/** Counters, window deltas and in-flight and cut counts for the primary. The final
 * reports, sent once a shutdown has cut what was left, have nothing in flight: it is
 * all counted as cut. */
function report(final = false): FromWorker {
  const dp = dataplane!;
  const windows: [string, SecondDelta[]][] = [];
  const inflight: [string, number][] = [];
  const cut: [string, number][] = [];
  const closing: [string, number][] = [];
  const drained: [string, number][] = [];
  const endpoints: [string, number][] = [];
  // Every version's, also of versions a reload removed; in-flight counts only when not
  // zero (absent = 0 to the primary), retiring endpoints included.
  for (const st of dp.allStats()) {
    const k = vkey(st.service, st.version);
    const d = st.window.takeDelta();
    if (d.length > 0) windows.push([k, d]);
    if (st.inflight > 0 && !final) inflight.push([k, st.inflight]);
    if (st.cut > 0) cut.push([k, st.cut]);
    if (st.closing > 0 && !final) closing.push([k, st.closing]);
    if (st.connectionsDrained > 0) drained.push([k, st.connectionsDrained]);
  }
  if (!final) for (const e of dp.endpointsWithRetiring()) if (e.inflight > 0) endpoints.push([e.key, e.inflight]);
  // Requests answered: every status class and the client aborts.
  let served = 0;
  for (const c of counters) for (let i = 0; i <= C.aborts; i++) served += c.v[C.classes + i];
  // Only the versions that counted something since the last report (the primary keeps
  // the rest): a request and an upstream attempt each end in a count.
  const changed: [string, number[]][] = [];
  for (const c of counters) {
    const n = c.v[C.upstream - 1] + c.v[C.size - 1];
    if (sentCounts.get(c) === n) continue;
    sentCounts.set(c, n);
    changed.push([vkey(c.service, c.version), Array.from(c.v)]);
  }
  const mirrors: [string, MirrorDelta][] = [];
  for (const ms of dp.allMirrorStats()) {
    const d = ms.takeDelta();
    if (d !== undefined) mirrors.push([vkey(ms.service, ms.version), d]);
  }
  return {
    t: 'stats',
    served,
    ...(mirrors.length > 0 ? { mirrors } : {}),
    counters: changed,
    windows,
    inflight,
    cut,
    endpoints,
    closing,
    drained,
  };
}

async function start(first: Config, msg: Extract<ToWorker, { t: 'state' }>): Promise<void> {
  try {
    await serve(first, msg);
  } catch (err) {
    await send({ t: 'fatal', error: (err as Error).message });
    process.exit(1);
  }
}

async function serve(first: Config, msg: Extract<ToWorker, { t: 'state' }>): Promise<void> {
  config = first;
  log = createLogger(first.log.level, { worker: true });
  const dp = new Dataplane({ log });
  dataplane = dp;
  dp.importState(msg.state, first);
  // Counters for every version, created once per version (metrics.ts does this in a
  // single-process gateway).
  dp.subscribe(() => {
    for (const s of dp.serviceList) {
      for (const v of s.versions) {
        const st = dp.statsOf(s.name, v.name);
        if (st.metrics !== undefined) continue;
        const c = new VersionCounters(s.name, v.name);
        counters.push(c);
        st.metrics = c;
      }
    }
  });
  const outliers = new OutlierDetector(dp, log, (e, reason) => void send({ t: 'eject', service: e.service, version: e.version, id: e.id, reason }));
  gateway = new GatewayServer({ config: first.gateway, dataplane: dp, log, observer: outliers });
  void send({ t: 'ack', seq: msg.seq });
  const addr = await gateway.listen();
  // Told to stop while the listener was coming up: it closes again at once.
  if (stopping !== undefined) {
    gateway.close();
    return;
  }
  const redirect = gateway.redirectAddress;
  await send({ t: 'listening', gateway: addr, ...(redirect === undefined ? {} : { redirect }) });
  setInterval(() => void send(report()), STATS_INTERVAL_MS).unref();
}

function shutdown(graceMs: number): Promise<void> {
  stopping ??= (async () => {
    const gw = gateway;
    const dp = dataplane;
    if (gw === undefined || dp === undefined) process.exit(0);
    const allClosed = gw.stopAccepting();
    const deadline = Date.now() + graceMs;
    while (dp.inflight() > 0 && Date.now() < deadline) await delay(25);
    const left = dp.inflight();
    if (left > 0) log.warn({ inflight: left, graceMs }, 'worker shutdown: grace passed with requests still in flight; cutting them');
    if (gw.openTunnels > 0) gw.closeTunnels();
    await Promise.race([allClosed, delay(Math.max(100, deadline - Date.now()))]);
    // What is still in flight now is cut, not drained. Reported before the requests end,
    // so the primary knows of the cut before this worker answers an idle question, and
    // as a last report (nothing in flight: it is all counted as cut), so the primary
    // does not count it again when this worker's exit reaches it before its last message.
    dp.markCut();
    void send(report(true));
    gw.close();
    await dp.close(true);
    // The last counts, so the primary's totals include every request this worker served.
    await send(report(true));
    await flushLog(log, 1000);
    process.exit(0);
  })();
  return stopping;
}

process.on('message', (msg: ToWorker) => {
  switch (msg.t) {
    case 'state':
      if (dataplane === undefined) {
        if (msg.config === undefined) return;
        void start(msg.config, msg);
        return;
      }
      if (msg.config !== undefined) {
        config = msg.config;
        dataplane.importState(msg.state, msg.config);
        gateway?.reconfigure(msg.config.gateway);
      } else dataplane.importState(msg.state);
      void send({ t: 'ack', seq: msg.seq });
      return;
    case 'idle':
      // A report first: the primary has this worker's counts (connections a drain moved
      // included) when it learns the version is idle here.
      void (dataplane?.whenVersionIdle(msg.service, msg.version) ?? Promise.resolve())
        .then(() => (dataplane === undefined ? undefined : send(report())))
        .then(() => send({ t: 'idle', id: msg.id }));
      return;
    case 'shutdown':
      void shutdown(msg.graceMs);
      return;
    default:
      return;
  }
});

// The primary is gone (killed): finish what is in flight and leave.
process.on('disconnect', () => void shutdown(config?.shutdown.graceMs ?? 30_000));
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => log.debug({ signal: sig }, 'worker: signals are handled by the primary'));

void send({ t: 'hello' });

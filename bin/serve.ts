// The composition root: the one place that wires config, discovery, the data plane,
// the listeners and the signals together. `switchyard serve` and `switchyard demo` both
// run through here; tests start it in-process or as a real process.

import { setTimeout as delay } from 'node:timers/promises';
import type { AddressInfo } from 'node:net';
import pino, { type Logger } from 'pino';
import { createLogger, flushLog } from './log.js';
import { ConfigError, loadConfigFile } from '../config/load.js';
import type { Config } from '../config/types.js';
import { AdminServer } from '../gateway/admin.js';
import { Dataplane } from '../gateway/dataplane.js';
import { GatewayServer } from '../gateway/server.js';
import { ActiveHealthChecker } from '../gateway/health/active.js';
import { OutlierDetector } from '../gateway/health/passive.js';
import type { Provider } from '../discovery/provider.js';
import { StaticProvider } from '../discovery/static.js';
import { ConsulProvider, ConsulRegistration } from '../discovery/consul.js';
import { DnsProvider } from '../discovery/dns.js';
import { dirname, resolve } from 'node:path';
import { Controller } from '../control/controller.js';
import { ControlApi } from '../control/api.js';
import { Webhooks } from '../control/webhooks.js';
import type { Store } from '../control/store/store.js';
import { MemoryStore } from '../control/store/memory.js';
import { FileStore } from '../control/store/file.js';
import { Metrics } from '../gateway/metrics.js';
import { RedisStore } from '../control/store/redis.js';
import { RedisFleet } from '../control/fleet.js';
import { STATS_INTERVAL_MS, WorkerPool } from '../gateway/workers.js';

export interface RunningGateway {
  config: Config;
  dataplane: Dataplane;
  /** The data-plane listener; undefined with gateway.workers > 1 (the workers serve). */
  gateway: GatewayServer | undefined;
  workers: WorkerPool | undefined;
  admin: AdminServer;
  controller: Controller;
  api: ControlApi;
  metrics: Metrics;
  webhooks: Webhooks;
  log: Logger;
  addresses: { gateway: AddressInfo; admin: AddressInfo; control: AddressInfo; redirect?: AddressInfo };
  /** Re-reads the config file; a config that does not validate is refused and the
   * running one stays. Returns the problems, or [] when the new config is in. */
  reload(): string[];
  /** The graceful shutdown sequence (see README "Shutdown"). */
  shutdown(reason?: string): Promise<void>;
  /** Closes everything at once; idempotent. */
  close(): Promise<void>;
  ready(): boolean;
}

export interface StartOptions {
  configFile: string;
  /** A config already loaded (the demo); otherwise configFile is read. */
  config?: Config;
  log?: Logger;
  /** Install SIGHUP/SIGTERM/SIGINT handlers (the CLI does; in-process tests don't). */
  signals?: boolean;
  /** Called when shutdown has finished (the CLI exits the process). */
  onExit?: (code: number) => void;
}

/** The state store the config names. A relative state.file is relative to the config file. */
export function createStore(config: Config, configFile: string, log?: Logger): Store {
  switch (config.state.store) {
    case 'memory':
      return new MemoryStore();
    case 'file':
      return new FileStore(resolve(dirname(configFile), config.state.file));
    case 'redis':
      return new RedisStore({ url: config.state.redis.url, prefix: config.state.redis.prefix, log: log ?? pino({ level: 'silent' }) });
    default:
      throw new Error(`state.store: ${config.state.store} is not supported by this build`);
  }
}

/** Longest startGateway waits for the first discovery snapshots before listening. */
const FIRST_SNAPSHOT_WAIT_MS = 2000;

export async function startGateway(opts: StartOptions): Promise<RunningGateway> {
  let config = opts.config ?? loadConfigFile(opts.configFile);
  const log = opts.log ?? createLogger(config.log.level);
  let ready = false;
  let shuttingDown: Promise<void> | undefined;
  let closed = false;

  const dataplane = new Dataplane({ log });
  dataplane.applyConfig(config);
  const configDir = dirname(resolve(opts.configFile));
  // Inert until the config names discovery.consul (a reload may add it).
  const consul = new ConsulProvider({ config, log, baseDir: configDir });
  // Inert until a version names a dns source.
  const dns = new DnsProvider({ config, log });
  const providers: Provider[] = [new StaticProvider(config), consul, dns];
  let registration: ConsulRegistration | undefined;
  const outliers = new OutlierDetector(dataplane, log);
  const checker = new ActiveHealthChecker(dataplane, log);
  // gateway.workers > 1: worker processes serve; this one decides (gateway/workers.ts).
  const pooled = config.gateway.workers > 1;
  // Every upstream attempt's outcome goes straight to passive outlier detection.
  const gateway = pooled ? undefined : new GatewayServer({ config: config.gateway, dataplane, log, observer: outliers });
  const store = createStore(config, opts.configFile, log);
  // Filled in once the listeners are bound; the fleet heartbeat reads them.
  const bound: Record<string, string> = {};
  let fleet: RedisFleet | undefined;
  if (store instanceof RedisStore) {
    fleet = new RedisFleet({
      redis: store.redis,
      prefix: store.prefix,
      dataplane,
      log,
      // With workers: the revision every worker has applied and reported on since.
      self: () => ({ addresses: bound, revision: workers?.appliedRevision() ?? controller.revision }),
      // Workers report every STATS_INTERVAL_MS; a second's counts are published once a
      // report late by up to ten intervals is in.
      ...(config.gateway.workers > 1 ? { settleMs: 10 * STATS_INTERVAL_MS } : {}),
    });
  }
  const controller = new Controller({ dataplane, store, log, fleet });
  // Tell the fleet at once when this replica applied a revision (cutover --wait polls it).
  if (fleet !== undefined) controller.on('applied', () => void fleet!.heartbeat());
  const webhooks = new Webhooks(config.control.webhooks, log);
  const discoveredAt: Record<string, number> = {};
  const metrics = new Metrics({
    dataplane,
    revision: () => controller.revision,
    rollout: (s) => {
      const r = controller.rollout(s);
      return r && { state: r.state, percent: r.steps[r.step] };
    },
    discoveryAge: () => {
      const age: Record<string, number> = {};
      for (const p of providers) {
        const s = p.staleness ? p.staleness() : discoveredAt[p.name] === undefined ? undefined : (Date.now() - discoveredAt[p.name]) / 1000;
        if (s !== undefined) age[p.name] = s;
      }
      return age;
    },
    replicas: () => controller.fleet.count(),
    webhooks: () => webhooks.stats(),
  });
  dataplane.subscribe(() => metrics.prepareAll());
  const workers = pooled
    ? new WorkerPool({
        count: config.gateway.workers,
        dataplane,
        outliers,
        metrics,
        log,
        config: () => config,
        revision: () => controller.revision,
        onApplied: () => void fleet?.heartbeat(),
      })
    : undefined;
  // With workers, ready also means at least one of them is accepting connections.
  const serving = (): boolean => ready && !shuttingDown && (workers === undefined || workers.listening > 0);
  const admin = new AdminServer({ listen: config.admin.listen, isReady: serving, metrics: () => metrics.render() });
  controller.on('event', (e) => webhooks.publish(e));
  // reload is defined once the listeners are up; the API calls it through this holder.
  let reloadFn: () => string[] = () => ['the gateway is still starting'];
  const api = new ControlApi({
    config: config.control,
    controller,
    log,
    reload: () => reloadFn(),
    info: () => {
      const discovery = { consul: consul.status(), dns: dns.status() };
      const followed = discovery.consul !== undefined || discovery.dns !== undefined;
      // (undefined members vanish from the JSON answer)
      return {
        store: config.state.store,
        webhooks: webhooks.stats(),
        inflight: dataplane.inflight(),
        ready: serving(),
        ...(followed ? { discovery } : {}),
        ...(workers === undefined ? {} : { workers: { stateSeq: workers.stateSeq, processes: workers.status() } }),
      };
    },
  });

  const cleanup: (() => void)[] = [];
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    for (const fn of cleanup) fn();
    // Whatever this process still has in flight is cut now, not drained (with workers,
    // each worker counts its own and reports it).
    if (gateway !== undefined) dataplane.markCut();
    gateway?.close();
    await workers?.close();
    admin.close();
    await api.close().catch(() => {});
    await controller.close();
    await webhooks.flush(1000);
    await webhooks.close();
    outliers.close();
    await checker.close();
    await registration?.deregister(1000);
    await Promise.all(providers.map((p) => p.close()));
    await dataplane.close(true);
  };

  try {
    const adminAddr = await admin.listen();
    await controller.start();
    const controlAddr = await api.listen();
    // Every provider's first snapshot. One whose source is down (Consul) holds the
    // listeners back FIRST_SNAPSHOT_WAIT_MS at most: they come up and /ready answers 503
    // until it arrives (or at once with discovery.consul.startWithoutSnapshot).
    let snapshotsIn = false;
    let listening = false;
    const firstSnapshots = Promise.all(
      providers.map((p) =>
        p.start((sets) => {
          discoveredAt[p.name] = Date.now();
          dataplane.applyDiscovery(sets);
        }),
      ),
    ).then(() => {
      if (closed) return;
      snapshotsIn = true;
      dataplane.markStarted();
      if (listening && !ready) {
        ready = true;
        log.info('discovery delivered its first snapshot; ready');
      }
    });
    const waited = new AbortController();
    await Promise.race([firstSnapshots, delay(FIRST_SNAPSHOT_WAIT_MS, undefined, { signal: waited.signal }).catch(() => {})]);
    waited.abort();
    if (!snapshotsIn) log.warn({ waitedMs: FIRST_SNAPSHOT_WAIT_MS }, 'discovery has not delivered a first snapshot yet (is Consul or the DNS server reachable?); /ready answers 503 until it does');
    dataplane.subscribe((snap) => checker.sync(snap));
    const pool = await workers?.start();
    const gatewayAddr = pool?.gateway ?? (await gateway!.listen());
    bound.gateway = `${gatewayAddr.address}:${gatewayAddr.port}`;
    bound.admin = `${adminAddr.address}:${adminAddr.port}`;
    bound.control = `${controlAddr.address}:${controlAddr.port}`;
    const redirectAddr = pool === undefined ? gateway!.redirectAddress : pool.redirect;
    if (redirectAddr !== undefined) bound.redirect = `${redirectAddr.address}:${redirectAddr.port}`;
    fleet?.start();
    listening = true;
    ready = snapshotsIn || (config.discovery.consul?.startWithoutSnapshot ?? false);
    if (config.discovery.consul?.register !== undefined) {
      registration = new ConsulRegistration(config.discovery.consul, { gateway: gatewayAddr, admin: adminAddr }, log, configDir);
      registration.start();
    }

    const reload = (): string[] => {
      let next: Config;
      try {
        next = loadConfigFile(opts.configFile);
      } catch (err) {
        const problems = err instanceof ConfigError ? err.problems : [String(err)];
        log.error({ problems }, 'config reload refused; the running config stays');
        metrics.configReloads.inc({ result: 'failure' });
        return problems;
      }
      const fixed = ['gateway.listen', 'admin.listen', 'gateway.workers'].filter((k) => {
        const [a, b] = k.split('.') as ['gateway', 'listen' | 'workers'];
        return next[a][b] !== config[a][b];
      });
      if (fixed.length) log.warn({ keys: fixed }, 'listen addresses change only on restart');
      config = next;
      dataplane.applyConfig(next);
      controller.applyStoredWeights();
      for (const p of providers) p.update(next);
      // (workers get the new config with the state the applyConfig above sent them)
      gateway?.reconfigure(next.gateway);
      api.reconfigure(next.control);
      metrics.configReloads.inc({ result: 'success' });
      log.info({ services: next.services.map((s) => s.name) }, 'config reloaded');
      return [];
    };
    reloadFn = reload;

    const shutdown = (reason = 'shutdown'): Promise<void> => {
      shuttingDown ??= (async () => {
        const { drainDelayMs, graceMs } = config.shutdown;
        log.info({ reason, drainDelayMs }, 'shutdown: /ready now answers 503; still serving during the drain delay');
        // First step: leave Consul, so nothing new is sent here through it.
        await registration?.deregister();
        await delay(drainDelayMs);
        if (gateway === undefined) {
          log.info({ inflight: dataplane.inflight(), workers: workers?.status().length }, 'shutdown: the data-plane workers stop accepting and finish their requests');
          await workers?.shutdown(graceMs);
          await close();
          log.info('shutdown: every data-plane worker has exited; exiting');
          await flushLog(log, 1000);
          opts.onExit?.(0);
          return;
        }
        const allClosed = gateway.stopAccepting();
        log.info({ inflight: dataplane.inflight() }, 'shutdown: stopped accepting; closing idle connections; waiting for in-flight requests');
        const deadline = Date.now() + graceMs;
        while (dataplane.inflight() > 0 && Date.now() < deadline) await delay(25);
        const left = dataplane.inflight();
        if (left > 0) log.warn({ inflight: left, graceMs }, 'shutdown: grace passed with requests still in flight; cutting them');
        else log.info('shutdown: every in-flight request finished');
        if (gateway.openTunnels > 0) {
          log.info({ websockets: gateway.openTunnels }, 'shutdown: closing WebSockets with 1001');
          gateway.closeTunnels();
        }
        // Let the last responses flush: each connection closes itself after a response
        // marked Connection: close. Bounded by what is left of the grace.
        await Promise.race([allClosed, delay(Math.max(100, deadline - Date.now()))]);
        await close();
        log.info('shutdown: upstream pools closed; exiting');
        await flushLog(log, 1000);
        opts.onExit?.(0);
      })();
      return shuttingDown;
    };

    if (opts.signals) {
      const onHup = (): void => {
        if (reload().length > 0) return;
        controller.record('signal', 'config.reloaded', { source: 'SIGHUP' }).catch((err: Error) => {
          log.warn({ err: err.message }, 'config reloaded, but the event could not be recorded');
        });
      };
      let signalled = false;
      const onTerm = (sig: NodeJS.Signals): void => {
        if (signalled) {
          log.warn({ signal: sig }, 'second signal: exiting at once');
          void flushLog(log, 200).then(() => opts.onExit?.(1));
          return;
        }
        signalled = true;
        void shutdown(sig);
      };
      process.on('SIGHUP', onHup);
      process.on('SIGTERM', onTerm);
      process.on('SIGINT', onTerm);
      cleanup.push(() => {
        process.off('SIGHUP', onHup);
        process.off('SIGTERM', onTerm);
        process.off('SIGINT', onTerm);
      });
    }

    // Announced only once the signal handlers are in: a supervisor (or a test) that
    // sends SIGTERM as soon as it reads this line gets the graceful shutdown, not the
    // default action of a signal without a handler.
    log.info(
      {
        gateway: `${gatewayAddr.address}:${gatewayAddr.port}`,
        admin: `${adminAddr.address}:${adminAddr.port}`,
        control: `${controlAddr.address}:${controlAddr.port}`,
        ...(redirectAddr === undefined ? {} : { redirect: bound.redirect }),
        ...(gateway?.tls === undefined ? {} : { tls: gateway.tls.current.describe().map((c) => ({ names: c.names, notAfter: c.notAfter })) }),
        ...(workers === undefined ? {} : { workers: config.gateway.workers }),
        ...(config.control.tls === undefined ? {} : { controlTls: true }),
        store: config.state.store,
        node: process.version,
      },
      'listening',
    );

    return {
      get config() {
        return config;
      },
      dataplane,
      gateway,
      workers,
      admin,
      controller,
      api,
      webhooks,
      metrics,
      log,
      addresses: { gateway: gatewayAddr, admin: adminAddr, control: controlAddr, ...(redirectAddr === undefined ? {} : { redirect: redirectAddr }) },
      reload,
      shutdown,
      close,
      ready: serving,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

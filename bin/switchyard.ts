#!/usr/bin/env node
// CLI dispatch. `serve` and `demo` run a gateway; `check` validates a config; `schema`
// prints the config's JSON Schema.

// Only the client is loaded up front: a client command (what CI jobs run, often many
// times) does not pay for loading the gateway (fastify, ioredis, pino, prom-client …);
// serve, demo, check and schema import what they need when chosen.
import { CLIENT_COMMANDS, CliExit, runClient } from '../control/cli.js';

const USAGE = `usage:
  switchyard serve --config FILE     run a gateway
  switchyard check --config FILE     validate a config (exit 0, or 1 with one line per problem)
  switchyard demo [--port 8080] [--rate 20] [--no-traffic] [--green-errors 20%] [--green-latency 300ms]
                                     a gateway with demo blue and green upstreams on loopback, and steady
                                     traffic through it (ports also from SWITCHYARD_DEMO_PORT, _ADMIN_PORT,
                                     _CONTROL_PORT)
  switchyard schema                  print the config's JSON Schema (for editors)
  switchyard --version               print the version

client commands (SWITCHYARD_URL, default http://127.0.0.1:9090; SWITCHYARD_TOKEN; --json):
  switchyard status [SERVICE]
  switchyard weights SERVICE blue=90 green=10 [--if-match REVISION]
  switchyard cutover SERVICE --to green [--wait] [--timeout 60s] [--force] [--if-match REVISION]
                     [--drain-connections 30s]
                     (--wait exits 1 when requests of the old version were cut, not drained;
                     --drain-connections closes WebSockets, HTTP/2 sessions and keep-alive
                     connections of the old version over that window, and --wait waits for them)
  switchyard rollout SERVICE --to green --steps 5,25,50,100 --interval 30s
                     [--max-error-rate 1%] [--max-p99 500ms] [--min-requests 20]
                     [--no-traffic fail|continue] [--approval 3] [--max-mirror-diff-rate 1%] [--wait]
                     [--timeout 10m] [--force] [--if-match REVISION] [--drain-connections 30s]
                     (--steps 0,…: a first 0% step; with --max-mirror-diff-rate a shadow step judged on mirror copies)
  switchyard rollout status SERVICE   each step's criteria: value, bound, verdict
  switchyard approve SERVICE          enter the step a rollout awaits approval for
  switchyard mirror SERVICE [--to green [--percent 10] [--methods GET,HEAD] [--ignore '$.timestamp,$.id']
                     [--headers content-type] [--max-body 256kb] [--timeout 5s] | --stop]
  switchyard pause|resume|promote|abort SERVICE
  switchyard rollback SERVICE [--if-match REVISION]
  switchyard events [--follow] [--since ID]

exit codes: 0 done; 1 failed or rolled back; 2 usage error or invalid request;
            3 authentication or permission refused; 4 unreachable or --timeout passed
`;

function usage(message?: string): never {
  if (message) process.stderr.write(`switchyard: ${message}\n`);
  process.stderr.write(USAGE);
  process.exit(2);
}

/** `--config FILE` or `--config=FILE`, and nothing else: any other argument is a usage
 * error (exit 2), so a mistyped flag is never silently ignored. */
function configArg(args: string[]): string {
  let file: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--config') {
      const v = args[++i];
      if (v === undefined || v === '' || v.startsWith('--')) usage('--config needs a FILE');
      file = v;
    } else if (a.startsWith('--config=')) {
      file = a.slice('--config='.length);
      if (file === '') usage('--config needs a FILE');
    } else if (a.startsWith('-')) {
      usage(`unknown flag ${a}`);
    } else {
      usage(`unexpected argument ${a}`);
    }
  }
  if (!file) usage('--config FILE is required');
  return file;
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...args] = argv;
  switch (cmd) {
    case 'check': {
      const file = configArg(args);
      const { ConfigError, loadConfigFile } = await import('../config/load.js');
      try {
        loadConfigFile(file);
        process.stdout.write(`${file}: ok\n`);
        process.exit(0);
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        process.stdout.write(err.problems.map((p) => `${p}\n`).join(''));
        process.exit(1);
      }
      break;
    }
    case 'serve': {
      const file = configArg(args);
      const [{ ConfigError }, { startGateway }] = await Promise.all([import('../config/load.js'), import('./serve.js')]);
      try {
        await startGateway({ configFile: file, signals: true, onExit: (code) => process.exit(code) });
      } catch (err) {
        if (err instanceof ConfigError) {
          process.stderr.write(err.problems.map((p) => `${p}\n`).join(''));
          process.exit(1);
        }
        process.stderr.write(`switchyard: ${(err as Error).message}\n`);
        process.exit(1);
      }
      break;
    }
    case 'demo':
      await (await import('./demo.js')).runDemo(args);
      break;
    case 'schema':
      if (args.length > 0) usage(`unexpected argument ${args[0]}`);
      process.stdout.write(`${JSON.stringify((await import('../config/docs.js')).documentedSchema(), null, 2)}\n`);
      break;
    case '--version':
    case '-v':
    case 'version':
      process.stdout.write(`${(await import('../config/package.js')).packageInfo().version}\n`);
      break;
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE);
      break;
    default: {
      // The client commands (status, weights, cutover, …).
      if (!CLIENT_COMMANDS.includes(cmd)) usage(`unknown command ${cmd}`);
      let code: number;
      try {
        code = await runClient(cmd, args);
      } catch (err) {
        if (!(err instanceof CliExit)) throw err;
        process.stderr.write(`switchyard ${cmd}: ${err.message}\n`);
        if (err.usage) process.stderr.write('run switchyard help for usage\n');
        code = err.code;
      }
      // Exit once stdout has flushed; don't wait for idle keep-alive sockets.
      process.stdout.write('', () => process.exit(code));
      break;
    }
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`switchyard: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});

// The throughput peers besides Switchyard, each its own process on a free loopback
// port, started here and stopped by pid (lib.mjs's children registry):
//  - nginx as the fast upstream (small and 64 KB bodies) when /usr/sbin/nginx exists,
//    else bench/upstream.mjs;
//  - nginx (1 worker), HAProxy (1 thread) and Caddy (GOMAXPROCS=1) as reverse proxies;
//  - @fastify/http-proxy (bench/fastify-proxy.mjs) and the http-proxy forwarder.
//
// nginx runs with `master_process off` so that the one pid we follow (CPU from /proc,
// SIGTERM/SIGKILL on exit) is the process that serves: a killed master would leave
// its worker behind. Caddy runs with its admin endpoint off and HOME and the XDG
// directories pointed at its temporary directory, so it writes nothing outside it.
// Every config file, pid file, log and temp path lives in a temporary directory of its
// own.

import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { BENCH_DIR, freePort, startChild, waitHttp } from './lib.mjs';

const which = (name, fallbacks) => {
  for (const p of fallbacks) if (existsSync(p)) return p;
  const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  const out = r.stdout?.trim();
  return out ? out : undefined;
};
export const NGINX = which('nginx', ['/usr/sbin/nginx']);
export const HAPROXY = which('haproxy', ['/usr/sbin/haproxy']);
export const CADDY = which('caddy', ['/usr/bin/caddy']);

export function nginxVersion() {
  if (!NGINX) return undefined;
  return spawnSync(NGINX, ['-v'], { encoding: 'utf8' }).stderr?.trim().replace(/^nginx version: nginx\//, '');
}
export function haproxyVersion() {
  if (!HAPROXY) return undefined;
  return /HAProxy version (\S+)/.exec(spawnSync(HAPROXY, ['-v'], { encoding: 'utf8' }).stdout ?? '')?.[1];
}

export function caddyVersion() {
  if (!CADDY) return undefined;
  return /^v?(\S+)/.exec(spawnSync(CADDY, ['version'], { encoding: 'utf8' }).stdout?.trim() ?? '')?.[1];
}

/** The response bodies every upstream serves: /small (~100 B JSON) and /64k. */
export const SIZES = {
  small: { path: '/small', body: `${JSON.stringify({ ok: true, service: 'bench', version: 'v1', note: 'a small JSON answer of about 100 bytes' })}\n` },
  '64k': { path: '/64k', body: `${'x'.repeat(64 * 1024 - 1)}\n` },
};

export function tempDir(prefix) {
  const dir = mkdtempSync(join(os.tmpdir(), prefix));
  chmodSync(dir, 0o755);
  return dir;
}

export function nginxCommon(dir) {
  for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, d), { recursive: true });
  return `worker_processes 1;
master_process off;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 20000; multi_accept on; }
`;
}

export const nginxTemp = (dir) => `  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 65s;
`;

export async function startNginx(label, conf, dir, port) {
  const file = join(dir, 'nginx.conf');
  writeFileSync(file, conf);
  const c = startChild(NGINX, ['-p', dir, '-c', file], { label });
  c.port = port;
  c.url = `http://127.0.0.1:${port}`;
  c.dir = dir;
  return c;
}

/** nginx (1 process) serving SIZES as static answers: the fast upstream. */
export async function startNginxUpstream() {
  const dir = tempDir('switchyard-bench-nginx-up-');
  const port = await freePort();
  const www = join(dir, 'www');
  mkdirSync(www);
  for (const s of Object.values(SIZES)) writeFileSync(join(www, s.path.slice(1)), s.body);
  chmodSync(www, 0o755);
  const conf = `${nginxCommon(dir)}http {
${nginxTemp(dir)}  default_type application/json;
  sendfile on;
  tcp_nopush on;
  open_file_cache max=100 inactive=60s;
  open_file_cache_valid 60s;
  etag off;
  server {
    listen 127.0.0.1:${port} backlog=4096 reuseport;
    root ${www};
    add_header x-bench-upstream nginx;
    location = /healthz { return 200 '{"ok":true}\\n'; }
    location = / { try_files /small =404; }
  }
}
`;
  const c = await startNginx('nginx upstream', conf, dir, port);
  await waitHttp(`${c.url}/small`, { child: c });
  c.address = `127.0.0.1:${port}`;
  c.name = 'nginx';
  return c;
}

/** nginx (1 process) as a keep-alive reverse proxy in front of upstreamAddr (host:port). */
export async function startNginxProxy(upstreamAddr) {
  const dir = tempDir('switchyard-bench-nginx-proxy-');
  const port = await freePort();
  const conf = `${nginxCommon(dir)}http {
${nginxTemp(dir)}  upstream backend {
    server ${upstreamAddr};
    keepalive 256;
    keepalive_requests 10000000;
    keepalive_timeout 60s;
  }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_buffer_size 16k;
      proxy_buffers 8 16k;
    }
  }
}
`;
  const c = await startNginx('nginx proxy', conf, dir, port);
  await waitHttp(`${c.url}/small`, { child: c });
  return c;
}

/** HAProxy (1 thread, HTTP mode, server connections reused) in front of upstreamAddr. */
export async function startHaproxy(upstreamAddr) {
  const dir = tempDir('switchyard-bench-haproxy-');
  const port = await freePort();
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(
    file,
    `global
  nbthread 1
  maxconn 8000
  pidfile ${dir}/haproxy.pid

defaults
  mode http
  timeout connect 5s
  timeout client 65s
  timeout server 65s
  timeout http-keep-alive 65s
  option http-keep-alive
  option forwardfor
  http-reuse always

frontend fe
  bind 127.0.0.1:${port}
  default_backend be

backend be
  server up ${upstreamAddr} maxconn 256
`,
  );
  const c = startChild(HAPROXY, ['-f', file, '-db'], { label: 'haproxy' });
  c.port = port;
  c.url = `http://127.0.0.1:${port}`;
  c.dir = dir;
  await waitHttp(`${c.url}/small`, { child: c });
  return c;
}

/** bench/fastify-proxy.mjs (@fastify/http-proxy) in front of one upstream. */
export async function startFastifyProxy(targetUrl, { connections = 256 } = {}) {
  const c = startChild(process.execPath, [join(BENCH_DIR, 'fastify-proxy.mjs'), '--target', targetUrl, '--connections', String(connections)], { label: 'fastify proxy' });
  const l = await c.waitLine((o) => o.ready === true);
  c.port = l.port;
  c.url = `http://127.0.0.1:${l.port}`;
  return c;
}

/**
 * Caddy 2 (one Go scheduler thread: GOMAXPROCS=1, the counterpart of HAProxy's one
 * thread and NGINX's one worker) as a reverse proxy in front of upstreamAddr, from a
 * Caddyfile: plain HTTP on 127.0.0.1 only, no access log (Caddy logs requests only
 * with a `log` directive in the site), runtime log at WARN, admin endpoint off (the
 * process is stopped by signal, so nothing needs it), up to 256 idle upstream
 * connections kept (Caddy's default is 32 per host; nginx keeps 256, HAProxy 256).
 */
export async function startCaddy(upstreamAddr) {
  const dir = tempDir('switchyard-bench-caddy-');
  const port = await freePort();
  const file = join(dir, 'Caddyfile');
  writeFileSync(
    file,
    `{
	admin off
	auto_https off
	storage file_system ${dir}/data
	grace_period 1s
	log default {
		output stderr
		level WARN
	}
}

http://:${port} {
	bind 127.0.0.1
	reverse_proxy ${upstreamAddr} {
		transport http {
			keepalive 65s
			keepalive_idle_conns 256
			keepalive_idle_conns_per_host 256
		}
	}
}
`,
  );
  const env = { ...process.env, GOMAXPROCS: '1', HOME: dir, XDG_DATA_HOME: join(dir, 'data'), XDG_CONFIG_HOME: join(dir, 'config') };
  const c = startChild(CADDY, ['run', '--config', file, '--adapter', 'caddyfile'], { label: 'caddy', env, cwd: dir });
  c.port = port;
  c.url = `http://127.0.0.1:${port}`;
  c.dir = dir;
  await waitHttp(`${c.url}/small`, { child: c });
  return c;
}

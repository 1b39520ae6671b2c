// Renders bench/results/latest.json as markdown (latest.md) and as a hand-written SVG
// bar chart of requests per second per peer (latest.svg). Pure functions of the results
// object; every part is optional (a standalone scenarios or scale run fills only its
// own section).

const fmt = (n, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : 'n/a');

export const PEER_LABELS = {
  direct: 'upstream directly',
  switchyard: 'Switchyard',
  'switchyard-2w': 'Switchyard, 2 workers',
  haproxy: 'HAProxy (1 thread)',
  nginx: 'NGINX (1 worker)',
  caddy: 'Caddy (GOMAXPROCS=1)',
  fastify: '@fastify/http-proxy',
  'http-proxy': 'http-proxy forwarder',
  'node-raw': 'Node raw-socket forwarder (no HTTP features)',
};

const label = (p) => PEER_LABELS[p] ?? p;

/** The ratio goals, evaluated on the headline combination (small bodies, 32 connections). */
export const GOALS = [
  { peer: 'haproxy', goal: 0.6, what: 'Switchyard ≥ 0.6× HAProxy (1 thread), req/s' },
  { peer: 'http-proxy', goal: 3, what: 'Switchyard ≥ 3× the http-proxy forwarder, req/s' },
  { peer: 'caddy', goal: 2, what: 'Switchyard ≥ 2× Caddy (GOMAXPROCS=1), req/s' },
  { peer: 'fastify', goal: 1.5, what: 'Switchyard ≥ 1.5× @fastify/http-proxy, req/s' },
];

/**
 * The headline figures, gathered from whichever parts the results hold:
 * Switchyard ÷ HAProxy, ÷ the http-proxy forwarder and ÷ Caddy on small bodies and ÷
 * HAProxy on 64 KB bodies (32 connections, or the first count run when 32 was not),
 * Switchyard's CPU µs per request on both, the p99 it adds at 50% of its measured max
 * (wrk paced), and its RSS growth with idle keep-alive clients (scale.mjs), and
 * Switchyard ÷ the raw-socket forwarder (what one Node process can do at most). Reported
 * here, judged by the reader against the README's targets.
 * @returns {{what: string, value: number, text: string}[]}
 */
export function headlineFigures(r) {
  const out = [];
  const t = r.throughput;
  if (t?.medians) {
    const combo = (size) => (t.medians[`${size}/32`] ? `${size}/32` : Object.keys(t.medians).find((c) => c.startsWith(`${size}/`)));
    const small = combo('small');
    const big = combo('64k');
    const ratio = (c, peer) => {
      const m = t.medians[c];
      if (!m?.switchyard || !m[peer]) return;
      out.push({ what: `${c}: Switchyard ÷ ${label(peer)}, req/s`, value: t.ratios[c][peer], text: `${fmt(t.ratios[c][peer], 2)} (${fmt(m.switchyard.rps)} ÷ ${fmt(m[peer].rps)})` });
    };
    ratio(small, 'haproxy');
    ratio(small, 'http-proxy');
    ratio(small, 'caddy');
    ratio(small, 'node-raw');
    ratio(big, 'haproxy');
    for (const c of [small, big]) {
      const v = t.medians[c]?.switchyard?.proxyCpuUsPerReq;
      if (v !== undefined && v !== null) out.push({ what: `${c}: Switchyard CPU per request`, value: v, text: `${fmt(v, 1)} µs` });
    }
  }
  const l = r.latency;
  const added = l?.wrk?.addedOverDirect?.switchyard;
  if (added) {
    const of = l.maxRps === undefined ? '' : ` of ${fmt(l.maxRps)}`;
    out.push({ what: `added p99 at 50% of Switchyard's measured max (${fmt(l.rate)}${of} req/s on ${l.basis}, wrk paced)`, value: added.p99Ms, text: `${fmt(added.p99Ms, 3)} ms` });
  }
  const idle = r.scale?.idle;
  if (idle) {
    const growth = idle.rssAfterMiB - idle.rssBeforeMiB;
    const failed = idle.failed ? `, ${idle.failed} of ${idle.connections} failed to open` : '';
    out.push({ what: `${idle.opened} idle keep-alive clients: Switchyard RSS growth`, value: growth, text: `${growth >= 0 ? '+' : ''}${fmt(growth, 1)} MiB, ${fmt((growth * 1024) / Math.max(1, idle.opened), 1)} KiB per connection (${fmt(idle.rssBeforeMiB, 1)} → ${fmt(idle.rssAfterMiB, 1)} MiB${failed})` });
  }
  return out;
}

export function machineLine(r) {
  const m = r.machine ?? {};
  const tools = [m.nginx && `nginx ${m.nginx}`, m.haproxy && `HAProxy ${m.haproxy}`, m.caddy && `Caddy ${m.caddy}`, m.wrk].filter(Boolean).join(', ');
  return `Run ${r.date ?? '?'} on ${m.cpus ?? '?'} CPU(s) (${m.cpuModel ?? '?'}), ${m.memGiB ? `${m.memGiB} GiB, ` : ''}${m.platform ?? ''}, Node ${m.node ?? '?'}${tools ? `, ${tools}` : ''}; load average ${m.loadavg?.join(' ') ?? '?'} at start${m.loadavgEnd ? `, ${m.loadavgEnd.join(' ')} at the end` : ''}.`;
}

export function toMarkdown(r) {
  const out = ['# Switchyard benchmark results', ''];
  out.push(machineLine(r));
  out.push('All traffic on 127.0.0.1; every process (upstream, proxies, wrk, the bench itself) shares the same cores, which other work on the machine also uses: figures are noisy; the CPU µs per request of each proxy process is less sensitive to that than req/s.', '');
  const figures = headlineFigures(r);
  if (figures.length) {
    out.push('## Headline figures', '', 'Gathered from the sections below (medians; reported, not judged).', '', '| figure | value |', '|---|---:|');
    for (const f of figures) out.push(`| ${f.what} | ${f.text} |`);
    out.push('');
  }
  const t = r.throughput;
  if (t?.medians) {
    const s = t.settings;
    out.push('## Throughput (wrk, keep-alive)', '');
    out.push(
      `\`wrk -t${s.threads} -c{${s.connections.join(',')}} -d${s.duration} --latency\` on GET /small (${s.bodyBytes?.small ?? '?'} B) and /64k (${s.bodyBytes?.['64k'] ?? '?'} B); ${s.rounds} interleaved round(s) per combination, peer order rotated each round (A B C …, B C … A); ${s.warmup} warm-up per peer; medians. Upstream: ${s.upstream} (own process); every proxy in front of that same upstream. \`CPU µs/req\` = user+system CPU of the proxy process(es) during the run ÷ requests served (from /proc).`,
      '',
    );
    const two = Object.keys(t.ratios2w ?? {}).length > 0;
    out.push(
      `| size | conns | peer | req/s | p50 ms | p99 ms | CPU µs/req | Switchyard ÷ peer |${two ? ' 2 workers ÷ peer |' : ''}`,
      `|---|---:|---|---:|---:|---:|---:|---:|${two ? '---:|' : ''}`,
    );
    for (const [combo, peers] of Object.entries(t.medians)) {
      const [size, conns] = combo.split('/');
      for (const [p, m] of Object.entries(peers)) {
        const ratio = t.ratios?.[combo]?.[p];
        const ratio2 = t.ratios2w?.[combo]?.[p];
        out.push(
          `| ${size} | ${conns} | ${label(p)}${m.failedRuns ? ` (${m.failedRuns} run(s) with no answer)` : ''} | ${fmt(m.rps)} | ${fmt(m.p50Ms, 2)} | ${fmt(m.p99Ms, 2)} | ${fmt(m.proxyCpuUsPerReq, 1)} | ${p === 'switchyard' ? '—' : fmt(ratio, 2)} |${two ? ` ${p === 'switchyard-2w' ? '—' : fmt(ratio2, 2)} |` : ''}`,
        );
      }
    }
    out.push('');
    if (two) out.push('"2 workers" = `gateway.workers: 2`: a primary (control plane) and two data-plane processes sharing the listener; its CPU µs/req counts all three processes. The machine has 2 cores shared with wrk and the upstream.', '');
    if (t.goals?.length) {
      out.push(`Goals, on ${t.headline}:`, '');
      const g2 = t.goals.some((g) => g.value2w !== undefined);
      out.push(`| goal | Switchyard ÷ peer | met |${g2 ? ' 2 workers ÷ peer | met |' : ''}`, `|---|---:|---|${g2 ? '---:|---|' : ''}`);
      for (const g of t.goals) out.push(`| ${g.what} | ${fmt(g.value, 2)} | ${g.met ? 'yes' : 'no'} |${g2 ? ` ${fmt(g.value2w, 2)} | ${g.value2w === undefined ? '—' : g.met2w ? 'yes' : 'no'} |` : ''}`);
      out.push('');
    }
    if (t.runs?.length) {
      out.push('<details><summary>every round</summary>', '');
      out.push('| size | conns | round | peer | req/s | p50 ms | p99 ms | non-2xx | socket errors | CPU µs/req | upstream CPU µs/req |', '|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|');
      for (const x of t.runs) out.push(`| ${x.size} | ${x.connections} | ${x.round} | ${x.peer}${x.error ? ` (${x.error.replace(/\|/g, '/')})` : ''} | ${fmt(x.rps)} | ${fmt(x.p50Ms, 2)} | ${fmt(x.p99Ms, 2)} | ${x.non2xx} | ${x.socketErrors} | ${fmt(x.proxyCpuUsPerReq, 1)} | ${fmt(x.upstreamCpuUsPerReq, 1)} |`);
      out.push('', '</details>', '');
    }
  }
  const l = r.latency;
  if (l?.wrk?.peers) {
    const w = l.wrk;
    out.push('## Latency at a fixed rate (wrk)', '');
    out.push(
      `About ${fmt(l.rate)} req/s (50% of Switchyard's median max on ${l.basis}) of GET ${l.path} for ${l.durationS} s per peer: \`wrk -t1 -c${w.connections}\` with a Lua \`delay()\` of a random 0–${2 * w.meanDelayMs} ms before each request on each connection (sends spread out, not in bursts; wrk's timers are whole milliseconds, so the rate is approximate: the achieved one is shown). Percentiles from wrk's histogram (µs). "added" = the peer's percentile minus the upstream's own. The goal is judged here.`,
      '',
    );
    out.push('| peer | achieved req/s | errors | p50 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms | added p99.9 ms |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const [p, x] of Object.entries(w.peers)) {
      const a = w.addedOverDirect?.[p];
      out.push(`| ${label(p)} | ${fmt(x.achievedRps)} | ${x.errors} | ${fmt(x.p50Ms, 3)} | ${fmt(x.p99Ms, 3)} | ${fmt(x.p999Ms, 3)} | ${a ? fmt(a.p50Ms, 3) : '—'} | ${a ? fmt(a.p99Ms, 3) : '—'} | ${a ? fmt(a.p999Ms, 3) : '—'} |`);
    }
    if (l.goal) out.push('', `Goal: p99 added by Switchyard ≤ 1 ms at 50% load: ${fmt(l.goal.value, 3)} ms (${l.goal.met ? 'met' : 'not met'})${l.goal.value2w === undefined ? '' : `; with 2 workers ${fmt(l.goal.value2w, 3)} ms (${l.goal.met2w ? 'met' : 'not met'})`}.`);
    out.push('');
  }
  if (l?.peers) {
    out.push('## Latency at a fixed rate (open loop)', '');
    out.push(
      `${fmt(l.rate)} req/s (50% of Switchyard's median max on ${l.basis}) of GET ${l.path} for ${l.durationS} s per peer, from an in-script open-loop generator (undici Pool of ${l.connections} connections; sends scheduled by the clock, never waiting for answers; latency of each request from its send to the end of its body, process.hrtime). "added" = the peer's percentile minus the upstream's own.`,
      '',
    );
    out.push('| peer | achieved req/s | failed | p50 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms | added p99.9 ms |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const [p, x] of Object.entries(l.peers)) {
      const a = l.addedOverDirect?.[p];
      out.push(`| ${label(p)} | ${fmt(x.achievedRps)} | ${x.failed} | ${fmt(x.p50Ms, 3)} | ${fmt(x.p99Ms, 3)} | ${fmt(x.p999Ms, 3)} | ${a ? fmt(a.p50Ms, 3) : '—'} | ${a ? fmt(a.p99Ms, 3) : '—'} | ${a ? fmt(a.p999Ms, 3) : '—'} |`);
    }
    if (l.goal && !l.wrk) out.push('', `Goal: p99 added by Switchyard ≤ 1 ms at 50% load: ${fmt(l.goal.value, 3)} ms (${l.goal.met ? 'met' : 'not met'}).`);
    out.push('');
  }
  const s = r.scenarios;
  if (s?.results) {
    out.push('## Zero-loss scenarios (constant load, in-script undici load generator)', '');
    out.push(`${s.settings.mode ?? 'Closed loop'}, ${s.settings.concurrency} concurrent requests for ${s.settings.duration} per scenario; a failure is a non-2xx answer or a transport error. "p99 before" covers the requests sent before the event (after the run's first second at most, the warm-up), "p99 during" those in flight at some moment from the event's start to 1 s after its end. Gateway settings: ${s.settings.gatewaySettings}.`, '');
    out.push('| scenario | requests | failed | p99 before ms | p99 during ms | p99 all ms | req/s | notes |', '|---|---:|---:|---:|---:|---:|---:|---|');
    for (const x of s.results) out.push(`| ${x.name} | ${x.requests} | ${x.failed} | ${fmt(x.p99BeforeMs, 1)} | ${fmt(x.p99DuringMs, 1)} | ${fmt(x.p99Ms, 1)} | ${fmt(x.rps)} | ${(x.notes ?? '').replace(/\|/g, '/')} |`);
    out.push('');
  }
  const f = r.fleet;
  if (f?.propagationMs) {
    out.push('## Fleet (3 gateway processes on one redis-server)', '');
    out.push(`${f.changes} weight changes through replica A; latency from sending the PUT until replicas B and C have applied it (seen on their live event streams):`, '');
    out.push('| p50 ms | p95 ms | p99 ms | max ms |', '|---:|---:|---:|---:|');
    out.push(`| ${fmt(f.propagationMs.p50, 2)} | ${fmt(f.propagationMs.p95, 2)} | ${fmt(f.propagationMs.p99, 2)} | ${fmt(f.propagationMs.max, 2)} |`, '');
    if (f.cutoverWaitMs) out.push(`cutover with wait: ${fmt(f.cutoverWaitMs.idle, 1)} ms with nothing in flight; ${fmt(f.cutoverWaitMs.inflight, 1)} ms with a 1 s request in flight on another replica.`, '');
  }
  const sc = r.scale;
  if (sc) {
    out.push('## Scale', '');
    if (sc.snapshot) {
      const x = sc.snapshot;
      out.push(`${x.services} services × ${x.endpointsPerService} endpoints (${x.versionsPerService} versions each, ${x.services * x.endpointsPerService} endpoints): Dataplane.applyConfig (endpoint objects and pools, then the snapshot) ${fmt(x.applyConfigMs, 1)} ms; buildSnapshot alone median ${fmt(x.buildSnapshotMs, 1)} ms (of ${x.buildRuns}); heap +${fmt(x.heapMiB, 1)} MiB, RSS +${fmt(x.rssMiB, 1)} MiB for the whole table.`, '');
    }
    if (sc.routing) {
      const x = sc.routing;
      out.push(`Routing cost per request on that table (matchRoute + versionAt + pickEndpoint, ${x.iterations} iterations over ${x.distinctHosts} hosts): **${fmt(x.nsPerOp, 0)} ns/op** (matchRoute ${fmt(x.matchRouteNs, 0)}, versionAt ${fmt(x.versionAtNs, 0)}, pickEndpoint ${fmt(x.pickEndpointNs, 0)}).`, '');
    }
    if (sc.idle) {
      const x = sc.idle;
      out.push(`A gateway process holding ${x.connections} idle keep-alive client connections (each made one request first): RSS ${fmt(x.rssBeforeMiB, 1)} MiB → ${fmt(x.rssAfterMiB, 1)} MiB (+${fmt(x.rssAfterMiB - x.rssBeforeMiB, 1)} MiB, ${fmt(((x.rssAfterMiB - x.rssBeforeMiB) * 1024) / Math.max(1, x.opened), 1)} KiB per connection); ${x.opened} opened${x.failed ? `, ${x.failed} failed` : ''}.`, '');
    }
  }
  return `${out.join('\n')}\n`;
}

const COLORS = {
  direct: '#9e9e9e',
  switchyard: '#1565c0',
  'switchyard-2w': '#64b5f6',
  haproxy: '#2e7d32',
  nginx: '#66bb6a',
  caddy: '#00897b',
  fastify: '#ef6c00',
  'http-proxy': '#c62828',
  'node-raw': '#6d4c41',
};

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A grouped bar chart: one group per size/connections combination, one bar per peer. */
export function toSvg(r) {
  const t = r.throughput;
  if (!t?.medians) return undefined;
  const combos = Object.keys(t.medians);
  const peers = [...new Set(combos.flatMap((c) => Object.keys(t.medians[c])))];
  const max = Math.max(1, ...combos.flatMap((c) => Object.values(t.medians[c]).map((m) => m.rps).filter(Number.isFinite)));
  const step = niceStep(max / 5);
  const top = Math.ceil(max / step) * step;
  const bar = 18;
  const gap = 26;
  const groupW = peers.length * bar + gap;
  const left = 70;
  const plotH = 300;
  const topPad = 50;
  const width = Math.max(760, left + combos.length * groupW + 20 + 210);
  const height = topPad + plotH + 70;
  const y = (v) => topPad + plotH - (v / top) * plotH;
  const o = [];
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  o.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  o.push(`<text x="${left}" y="22" font-size="15" font-weight="bold">Requests per second (median of ${t.settings.rounds} interleaved rounds, wrk keep-alive)</text>`);
  o.push(`<text x="${left}" y="40" fill="#555">${esc(`${r.machine?.cpus ?? '?'} CPU(s) ${r.machine?.cpuModel ?? ''}, Node ${r.machine?.node ?? ''}, ${r.date ?? ''}`)}</text>`);
  for (let v = 0; v <= top; v += step) {
    o.push(`<line x1="${left}" x2="${left + combos.length * groupW}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#e0e0e0"/>`);
    o.push(`<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" fill="#555">${v >= 1000 ? `${v / 1000}k` : v}</text>`);
  }
  combos.forEach((c, gi) => {
    const x0 = left + gi * groupW + gap / 2;
    peers.forEach((p, pi) => {
      const m = t.medians[c][p];
      if (!m || !Number.isFinite(m.rps)) return;
      const x = x0 + pi * bar;
      o.push(`<rect x="${x}" y="${y(m.rps).toFixed(1)}" width="${bar - 3}" height="${(topPad + plotH - y(m.rps)).toFixed(1)}" fill="${COLORS[p] ?? '#777'}"><title>${esc(`${label(p)} ${c}: ${Math.round(m.rps)} req/s`)}</title></rect>`);
    });
    const [size, conns] = c.split('/');
    o.push(`<text x="${x0 + (peers.length * bar) / 2}" y="${topPad + plotH + 18}" text-anchor="middle">${esc(size)}</text>`);
    o.push(`<text x="${x0 + (peers.length * bar) / 2}" y="${topPad + plotH + 34}" text-anchor="middle" fill="#555">${esc(conns)} conns</text>`);
  });
  o.push(`<line x1="${left}" x2="${left}" y1="${topPad}" y2="${topPad + plotH}" stroke="#333"/>`);
  o.push(`<line x1="${left}" x2="${left + combos.length * groupW}" y1="${topPad + plotH}" y2="${topPad + plotH}" stroke="#333"/>`);
  const lx = left + combos.length * groupW + 20;
  peers.forEach((p, i) => {
    o.push(`<rect x="${lx}" y="${topPad + i * 20}" width="12" height="12" fill="${COLORS[p] ?? '#777'}"/>`);
    o.push(`<text x="${lx + 18}" y="${topPad + i * 20 + 11}">${esc(label(p))}</text>`);
  });
  o.push('</svg>');
  return `${o.join('\n')}\n`;
}

function niceStep(raw) {
  const p = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

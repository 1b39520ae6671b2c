#!/usr/bin/env node
// Summarizes a V8 .cpuprofile (node --cpu-prof) by self time: the top functions and
// the top files (node internals, undici, prom-client, Switchyard's own…), as a share
// of the sampled time.
//
//   node bench/profile-summary.mjs FILE.cpuprofile [--top 30]
//
// Self time of a node = its sample count × the sampling interval; "(idle)",
// "(program)" and "(garbage collector)" are kept as their own rows.

import { readFileSync } from 'node:fs';

export function summarize(profile, { top = 30 } = {}) {
  const counts = new Map();
  for (const id of profile.samples) counts.set(id, (counts.get(id) ?? 0) + 1);
  const total = profile.samples.length;
  const idle = profile.nodes.filter((n) => n.callFrame.functionName === '(idle)').reduce((a, n) => a + (counts.get(n.id) ?? 0), 0);
  const byFn = new Map();
  const byFile = new Map();
  for (const n of profile.nodes) {
    const c = counts.get(n.id) ?? 0;
    if (c === 0) continue;
    const f = n.callFrame;
    if (f.functionName === '(idle)') continue;
    const file = shortFile(f.url) || f.functionName;
    const fn = `${f.functionName || '(anonymous)'} ${file}${f.url ? `:${f.lineNumber + 1}` : ''}`;
    byFn.set(fn, (byFn.get(fn) ?? 0) + c);
    byFile.set(file, (byFile.get(file) ?? 0) + c);
  }
  const busy = total - idle;
  const rows = (m) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, c]) => ({ name, samples: c, pctOfBusy: busy ? (100 * c) / busy : 0 }));
  return { samples: total, idleSamples: idle, busySamples: busy, functions: rows(byFn), files: rows(byFile) };
}

function shortFile(url) {
  if (!url) return '';
  let u = url.replace(/^file:\/\//, '');
  const nm = u.lastIndexOf('node_modules/');
  if (nm !== -1) return u.slice(nm + 'node_modules/'.length);
  const d = u.indexOf('/dist/');
  if (d !== -1) return u.slice(d + 1);
  if (u.startsWith('node:')) return u;
  return u.split('/').slice(-2).join('/');
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop())) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: profile-summary.mjs FILE.cpuprofile [--top N]\n');
    process.exit(2);
  }
  const i = process.argv.indexOf('--top');
  const top = i === -1 ? 30 : Number(process.argv[i + 1]);
  const s = summarize(JSON.parse(readFileSync(file, 'utf8')), { top });
  console.log(`${s.samples} samples, ${s.idleSamples} idle; shares below are of the ${s.busySamples} busy samples`);
  console.log('\nself time by file:');
  for (const r of s.files) console.log(`  ${r.pctOfBusy.toFixed(1).padStart(5)}%  ${r.name}`);
  console.log('\nself time by function:');
  for (const r of s.functions) console.log(`  ${r.pctOfBusy.toFixed(1).padStart(5)}%  ${r.name}`);
}

// Weights for a rollout step: the target gets `percent` of 100; the other versions
// share the rest in proportion to the weights they had before the rollout (largest
// remainder rounding, so the weights always add up to exactly 100).

import type { Weights } from '../state.js';

export function stepWeights(fromWeights: Weights, to: string, percent: number): Weights {
  const others = Object.keys(fromWeights).filter((v) => v !== to);
  const rest = 100 - percent;
  const out: Weights = { [to]: percent };
  let base = others.reduce((s, v) => s + (fromWeights[v] ?? 0), 0);
  // Nobody else had weight: spread the rest evenly (the target had it all).
  const share = (v: string): number => (base > 0 ? (fromWeights[v] ?? 0) / base : 1 / others.length);
  if (base === 0) base = others.length;
  const exact = others.map((v) => ({ v, x: rest * share(v) }));
  let given = 0;
  for (const e of exact) {
    out[e.v] = Math.floor(e.x);
    given += out[e.v];
  }
  exact.sort((a, b) => b.x - Math.floor(b.x) - (a.x - Math.floor(a.x)));
  for (let i = 0; given < rest && i < exact.length; i++, given++) out[exact[i].v]++;
  return out;
}

/** The version that carried the most traffic before the rollout, other than the target. */
export function baselineOf(fromWeights: Weights, to: string): string | null {
  let best: string | null = null;
  for (const [v, w] of Object.entries(fromWeights)) {
    if (v === to) continue;
    if (best === null || w > (fromWeights[best] ?? 0)) best = v;
  }
  return best;
}

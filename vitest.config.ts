import { defineConfig } from 'vitest/config';

// Suites start real processes and real load on loopback. Two files run at a time: most
// of a file's time is spent waiting for processes, probes and rollout steps, so two
// share a 2-core machine well, and tests assert counts and order, never timings (a test
// waits for its condition; a slower machine only makes it wait longer). Ports a test
// must fix in advance come from fixedPort(), which gives each worker its own range.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'gateway/**/*.test.ts', 'config/**/*.test.ts', 'control/**/*.test.ts', 'discovery/**/*.test.ts', 'bench/**/*.test.ts'],
    fileParallelism: true,
    maxWorkers: 2,
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});

import { defineConfig } from 'vitest/config';

// Suites start real processes and real load on loopback; on a 2-core machine running
// files one at a time keeps load tests from starving each other (tests assert counts
// and order, never timings, but a starved gateway can hit a test's deadline).
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'gateway/**/*.test.ts', 'config/**/*.test.ts', 'control/**/*.test.ts', 'discovery/**/*.test.ts', 'bench/**/*.test.ts'],
    fileParallelism: false,
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});

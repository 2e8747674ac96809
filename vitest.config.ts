import { availableParallelism } from "node:os"
import { defineConfig } from "vitest/config"

// Many tests spend most of their time waiting for child processes (the CLI,
// servers), so at least two test files run at a time (vitest's default, one
// per core but one, is a single file on two cores). The whole suite on two
// cores, with the server, two runs each: 386 and 421 s with two files at a
// time, against 519 and 535 s with one.
const workers = Math.max(2, availableParallelism() - 1)

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    maxWorkers: workers,
    minWorkers: workers,
    globalSetup: ["test/globalSetup.ts"]
  }
})

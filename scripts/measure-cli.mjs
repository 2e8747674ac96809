#!/usr/bin/env node
// Runs the built ragpipe CLI (dist/cli/ragpipe.js) in this process with the
// given arguments and, as the process exits, writes to stderr as one JSON
// line its peak resident set size and the CPU time it used:
// {"maxRssKiB":N,"cpuMs":T,"mainThreadCpuMs":M}. T counts every thread of
// the process (the main thread, worker threads, V8's compiler and garbage
// collector threads), finished ones included; M the main thread alone, or
// null where /proc does not tell it. The benchmarks use it to measure a real
// CLI run.
//
//   node scripts/measure-cli.mjs ingest <dir> [options]
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "dist", "cli", "ragpipe.js")

/** The main thread's CPU time in ms, from Linux's per-thread scheduler statistics (nanoseconds on the CPU). */
const mainThreadCpuMs = () => {
  try {
    const onCpu = Number(fs.readFileSync(`/proc/self/task/${process.pid}/schedstat`, "utf8").split(" ")[0])
    return Number.isFinite(onCpu) ? Math.round(onCpu / 1e6) : null
  } catch {
    return null
  }
}

process.on("exit", () => {
  const usage = process.resourceUsage()
  const cpuMs = Math.round((usage.userCPUTime + usage.systemCPUTime) / 1000)
  process.stderr.write(`${JSON.stringify({ maxRssKiB: usage.maxRSS, cpuMs, mainThreadCpuMs: mainThreadCpuMs() })}\n`)
})
process.argv = [process.argv[0], cli, ...process.argv.slice(2)]
await import(pathToFileURL(cli).href)

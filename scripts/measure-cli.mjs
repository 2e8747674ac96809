#!/usr/bin/env node
// Runs the built ragpipe CLI (dist/cli/ragpipe.js) in this process with the
// given arguments and, as the process exits, writes its peak resident set
// size to stderr as one JSON line: {"maxRssKiB":N}. The benchmarks use it to
// measure a real CLI run's memory.
//
//   node scripts/measure-cli.mjs ingest <dir> [options]
import * as path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "dist", "cli", "ragpipe.js")
process.on("exit", () => {
  process.stderr.write(`${JSON.stringify({ maxRssKiB: process.resourceUsage().maxRSS })}\n`)
})
process.argv = [process.argv[0], cli, ...process.argv.slice(2)]
await import(pathToFileURL(cli).href)

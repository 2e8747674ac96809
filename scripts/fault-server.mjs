#!/usr/bin/env node
/**
 * Runs the fault-injecting OpenAI-compatible embedding server (src/FaultServer.ts)
 * on loopback until SIGINT or SIGTERM.
 *
 *   npm run fault-server -- --port 8080 --seed 1 --error500 0.1 --rate-limit 0.05
 *
 * Prints one JSON line `{"url": "http://127.0.0.1:PORT/v1", "port": PORT}` on
 * stdout once listening (clients append /embeddings to the url). On SIGINT or
 * SIGTERM it closes the server (destroying every open socket, clearing every
 * timer) and prints the final stats as one JSON line. Logs go to stderr.
 * Exit codes: 0 after a clean shutdown, 2 for invalid arguments or options,
 * 1 when the server cannot listen.
 */
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import { parseArgs } from "node:util"
import * as FaultServer from "../dist/FaultServer.js"

const usage = `usage: node scripts/fault-server.mjs [options]

  --port N               port (default 0: a free port)
  --host H               127.0.0.1 (default), ::1 or localhost; loopback only
  --seed S               seed of the fault PRNG (default 0)
  --dimensions D         default vector dimensions (default 384)
  --error500 R           rate of HTTP 500 responses
  --rate-limit R         rate of HTTP 429 responses
  --retry-after N        Retry-After of a 429, in seconds (default 1)
  --reset R              rate of connections reset mid-response
  --hang R               rate of responses held for --hang-ms
  --hang-ms N            how long a hang lasts (default 30000)
  --malformed R          rate of 200 responses with invalid JSON
  --wrong-dimensions R   rate of 200 responses with vectors of dimensions + 1
  --fault-plan LIST      comma-separated outcomes of the first requests (ok,error500,rateLimit,...)
  --latency-ms N         service time of every 200 response, work included (default 0)
  --concurrency N        requests served at once; the rest wait in a FIFO queue (default 256)
  --max-connections N    connections beyond this many are dropped (default 256)
  --max-queued N         requests waiting for a slot at most; beyond, answer 503 (default 1024)
  --max-batch N          most inputs per request (default 2048)
  --max-input-chars N    longest input (default 32768)
  --max-requests N       after this many embeddings requests, answer 503
  --help                 show this help
`

/** flag → [option path, parser] */
const numeric = {
  port: ["port"],
  seed: ["seed"],
  dimensions: ["dimensions"],
  error500: ["faults", "error500"],
  "rate-limit": ["faults", "rateLimit"],
  "retry-after": ["retryAfterSeconds"],
  reset: ["faults", "reset"],
  hang: ["faults", "hang"],
  "hang-ms": ["hangMillis"],
  malformed: ["faults", "malformed"],
  "wrong-dimensions": ["faults", "wrongDimensions"],
  "latency-ms": ["latencyMillis"],
  concurrency: ["concurrency"],
  "max-connections": ["maxConnections"],
  "max-queued": ["maxQueued"],
  "max-batch": ["maxBatch"],
  "max-input-chars": ["maxInputChars"],
  "max-requests": ["maxRequests"]
}

const fail = (message) => {
  process.stderr.write(`fault-server: ${message}\n\n${usage}`)
  process.exit(2)
}

let parsed
try {
  parsed = parseArgs({
    options: {
      ...Object.fromEntries(Object.keys(numeric).map((flag) => [flag, { type: "string" }])),
      host: { type: "string" },
      "fault-plan": { type: "string" },
      help: { type: "boolean" }
    },
    strict: true,
    allowPositionals: false
  }).values
} catch (error) {
  fail(error instanceof Error ? error.message : String(error))
}

if (parsed.help) {
  process.stdout.write(usage)
  process.exit(0)
}

const options = {}
for (const [flag, path] of Object.entries(numeric)) {
  const raw = parsed[flag]
  if (raw === undefined) continue
  const value = Number(raw)
  if (raw.trim() === "" || !Number.isFinite(value)) fail(`--${flag} must be a number (got ${JSON.stringify(raw)})`)
  if (path.length === 1) options[path[0]] = value
  else (options[path[0]] ??= {})[path[1]] = value
}
if (parsed.host !== undefined) options.host = parsed.host
if (parsed["fault-plan"] !== undefined) {
  options.faultPlan = parsed["fault-plan"].split(",").map((s) => s.trim()).filter((s) => s !== "")
}

/** Resolves on the first SIGINT or SIGTERM; removes its listeners when done or interrupted. */
const waitForSignal = Effect.async((resume) => {
  const onSignal = (signal) => {
    cleanup()
    resume(Effect.succeed(signal))
  }
  const cleanup = () => {
    process.off("SIGINT", onSignal)
    process.off("SIGTERM", onSignal)
  }
  process.on("SIGINT", onSignal)
  process.on("SIGTERM", onSignal)
  return Effect.sync(cleanup)
})

const program = Effect.gen(function*() {
  const { server, signal } = yield* Effect.scoped(Effect.gen(function*() {
    const server = yield* FaultServer.start(options)
    process.stdout.write(`${JSON.stringify({ url: server.url, port: server.port })}\n`)
    const signal = yield* waitForSignal
    yield* Effect.logInfo(`fault server: ${signal}, closing`)
    return { server, signal }
  }))
  // the scope is closed: every socket destroyed, every timer cleared
  const stats = yield* server.stats
  process.stdout.write(`${JSON.stringify({ signal, stats })}\n`)
}).pipe(
  Effect.catchTag("FaultServerError", (error) =>
    Effect.sync(() => {
      process.stderr.write(`fault-server: ${error.message}\n`)
      process.exitCode = error.reason === "invalid-options" ? 2 : 1
    })),
  Effect.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger)))
)

Effect.runPromise(program).catch((error) => {
  process.stderr.write(`fault-server: ${error instanceof Error ? error.stack : String(error)}\n`)
  process.exitCode = 1
})

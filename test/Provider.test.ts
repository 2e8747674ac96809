/**
 * The pipeline against a real HTTP provider: the fault-injecting server on
 * loopback, real sockets, real (short) timeouts.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Either from "effect/Either"
import * as Stream from "effect/Stream"
import { spawn } from "node:child_process"
import * as NodeFs from "node:fs"
import * as NodePath from "node:path"
import * as Chunker from "../src/Chunker.js"
import * as Embedder from "../src/Embedder.js"
import * as FaultServer from "../src/FaultServer.js"
import * as Ingest from "../src/Ingest.js"
import * as Loader from "../src/Loader.js"
import * as ResourceLedger from "../src/ResourceLedger.js"
import * as VectorStore from "../src/VectorStore.js"
import { backends, cliPath, doc, openAiFlags, partialDocuments, repoRoot, tempDir } from "./support.js"

const chunker: Chunker.Options = { chunkSize: 400, chunkOverlap: 40 }


/** Make a corpus with the generator; returns its directory. */
const makeCorpus = (dir: string, files: number) =>
  Effect.async<void, Error>((resume) => {
    const child = spawn(process.execPath, [
      NodePath.join(repoRoot, "scripts", "make-corpus.mjs"),
      dir,
      "--files",
      String(files),
      "--seed",
      "5",
      "--force"
    ], { stdio: "ignore" })
    child.on("close", (code) => resume(code === 0 ? Effect.void : Effect.fail(new Error(`make-corpus exited ${code}`))))
  })

/** How many chunks the corpus has, computed independently of the pipeline. */
const countChunks = (root: string) =>
  Loader.walk({ root }).pipe(
    Stream.runFold(0, (n, item) =>
      item._tag === "Right" ? n + Chunker.chunkDocument(item.right, chunker).length : n
    )
  )

const tcpHandles = () => process.getActiveResourcesInfo().filter((r) => r.startsWith("TCP")).length

/** Poll until the server has no open connection (the client closed them all). */
const serverSocketsClosed = (server: FaultServer.FaultServer) =>
  server.stats.pipe(
    Effect.repeat({ until: (s) => s.openSockets === 0, schedule: Schedule.spaced("20 millis") }),
    Effect.timeout("3 seconds")
  )

const openAi = (server: FaultServer.FaultServer) =>
  Embedder.layerOpenAi({ baseUrl: server.url, model: "fault-model", dimensions: 64, maxSockets: 4 })

const backend = backends[0]!

describe("Ingest against an HTTP provider with injected faults", () => {
  it.scopedLive("mixed faults over more than 2,000 chunks: every chunk is stored or recorded, no socket left", () =>
    Effect.gen(function*() {
      const work = yield* tempDir()
      yield* makeCorpus(work, 420)
      const total = yield* countChunks(work).pipe(Effect.provide(ResourceLedger.layer()))
      assert.isAtLeast(total, 2000)
      const baseline = tcpHandles()
      const data = yield* backend.fresh
      const ledger = yield* ResourceLedger.make()

      const { server, summary } = yield* Effect.scoped(Effect.gen(function*() {
        const server = yield* FaultServer.start({
          seed: 17,
          dimensions: 64,
          faults: { error500: 0.1, rateLimit: 0.05, reset: 0.02, hang: 0.01 },
          retryAfterSeconds: 1,
          hangMillis: 20_000
        })
        const summary = yield* Ingest.ingestDirectory({ root: work }, {
          chunker,
          batchSize: 16,
          concurrency: 4,
          retry: { maxRetries: 4, base: "20 millis", cap: "200 millis", jitter: "full", attemptTimeout: "1 second" },
          maxErrorRate: 0.5
        }).pipe(
          Effect.provide(Layer.merge(data(), openAi(server))),
          Effect.provideService(ResourceLedger.ResourceLedger, ledger)
        )
        yield* serverSocketsClosed(server)
        const stats = yield* server.stats
        return { server: stats, summary }
      }))

      assert.strictEqual(summary.outcome, "completed")
      assert.isAbove(server.outcomes.error500, 0)
      assert.isAbove(server.outcomes.rateLimit, 0)
      assert.isAbove(server.outcomes.reset, 0)
      assert.isAbove(server.outcomes.hang, 0)
      assert.strictEqual(server.openSockets, 0)
      // none lost: every chunk is stored or recorded as a failure
      const counted = yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const [row] = yield* sql<{ chunks: number; failures: number }>`
          SELECT (SELECT count(*)::int FROM chunks) AS chunks, (SELECT count(*)::int FROM failures) AS failures`
        assert.deepStrictEqual(yield* partialDocuments, [])
        return row!
      }).pipe(Effect.provide(data()), Effect.provideService(ResourceLedger.ResourceLedger, ledger))
      assert.strictEqual(summary.chunks.written + summary.chunks.failed, total)
      assert.strictEqual(counted.chunks, summary.chunks.written)
      assert.strictEqual(counted.failures, summary.chunks.failed)
      assert.strictEqual((yield* ledger.snapshot).total.open, 0)
      assert.isAtMost(tcpHandles(), baseline)
    }), 180_000)

  it.scopedLive("interrupting the run while requests are in flight aborts them and closes every socket", () =>
    Effect.gen(function*() {
      const work = yield* tempDir()
      yield* makeCorpus(work, 60)
      const baseline = tcpHandles()
      const data = yield* backend.fresh
      const ledger = yield* ResourceLedger.make()
      const stats = yield* Effect.scoped(Effect.gen(function*() {
        const server = yield* FaultServer.start({ dimensions: 64, latencyMillis: 10_000 })
        const fiber = yield* Ingest.ingestDirectory({ root: work }, { chunker, batchSize: 4, concurrency: 4 }).pipe(
          Effect.provide(Layer.merge(data(), openAi(server))),
          Effect.provideService(ResourceLedger.ResourceLedger, ledger),
          Effect.fork
        )
        // wait until four requests are being served, then interrupt
        yield* server.stats.pipe(
          Effect.repeat({ until: (s) => s.inFlight >= 4, schedule: Schedule.spaced("20 millis") }),
          Effect.timeout("20 seconds")
        )
        yield* Fiber.interrupt(fiber)
        yield* serverSocketsClosed(server)
        return yield* server.stats
      }))
      // the run's concurrency (4) was reached and never exceeded
      assert.strictEqual(stats.maxConcurrency, 4)
      assert.strictEqual(stats.openSockets, 0)
      assert.isAtLeast(stats.clientAborts, 4)
      assert.strictEqual((yield* ledger.snapshot).total.open, 0)
      assert.isAtMost(tcpHandles(), baseline)
    }), 60_000)

  it.scopedLive("50% failures: the breaker ends the CLI run with exit 3 and the BreakInfo, every socket closed", () =>
    Effect.gen(function*() {
      const work = yield* tempDir()
      yield* makeCorpus(work, 200)
      const dataDir = yield* tempDir()
      const template = process.env["RAGPIPE_TEST_TEMPLATE"]
      if (template !== undefined) NodeFs.cpSync(NodePath.join(template, "pgdata"), NodePath.join(dataDir, "pgdata"), { recursive: true })
      const result = yield* Effect.scoped(Effect.gen(function*() {
        const server = yield* FaultServer.start({ seed: 3, dimensions: 64, faults: { error500: 0.5 } })
        const run = yield* Effect.async<{ code: number | null; stdout: string; stderr: string }>((resume) => {
          const child = spawn(process.execPath, [
            cliPath,
            "ingest",
            work,
            "--data-dir",
            dataDir,
            ...openAiFlags(server),
            "--timeout",
            "2s",
            "--batch-size",
            "8",
            "--concurrency",
            "3",
            "--json"
          ], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RAGPIPE_API_KEY: "sk-test-secret" } })
          let stdout = ""
          let stderr = ""
          child.stdout.on("data", (d) => (stdout += d))
          child.stderr.on("data", (d) => (stderr += d))
          child.on("close", (code) => resume(Effect.succeed({ code, stdout, stderr })))
        })
        yield* serverSocketsClosed(server)
        return { run, stats: yield* server.stats }
      }))
      assert.strictEqual(result.run.code, 3, result.run.stderr)
      const summary = JSON.parse(result.run.stdout.trim().split("\n").at(-1)!)
      assert.strictEqual(summary.breaker.code, "error-rate")
      assert.isAbove(summary.breaker.errors / summary.breaker.total, 0.2)
      assert.strictEqual(summary.resources.open, 0)
      assert.match(result.run.stderr, /ended by the error-rate breaker/)
      assert.notInclude(result.run.stderr + result.run.stdout, "sk-test-secret")
      assert.strictEqual(result.stats.openSockets, 0)
      assert.isAbove(result.stats.outcomes.error500, 0)
      // --concurrency 3: the server never saw more than 3 requests at once
      assert.isAtMost(result.stats.maxConcurrency, 3)
      assert.isAtLeast(result.stats.maxConcurrency, 1)
    }), 120_000)

  it.scopedLive("a 429 with Retry-After: 1 is honoured: the retry arrives no sooner than 1 s after the 429", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      const server = yield* FaultServer.start({ dimensions: 64, faultPlan: ["rateLimit"], retryAfterSeconds: 1 })
      // without Retry-After the backoff would wait at most 20 ms
      const summary = yield* Ingest.ingestStream(
        Stream.fromIterable([doc("a.txt", "alpha beta gamma delta")].map(Either.right)),
        {
          chunker,
          concurrency: 1,
          retry: {
            maxRetries: 3,
            base: "10 millis",
            cap: "20 millis",
            jitter: "full",
            attemptTimeout: "10 seconds",
            retryAfterCap: "5 seconds"
          }
        }
      ).pipe(Effect.provide(Layer.merge(data(), openAi(server))), Effect.provide(ResourceLedger.layer()))
      assert.strictEqual(summary.chunks.written, 1)
      assert.strictEqual(summary.chunks.failed, 0)
      // the server's own timestamps: when the 429 was sent, when the retry arrived
      const log = yield* server.requests
      assert.deepStrictEqual(log.map((r) => r.outcome), ["rateLimit", "ok"])
      const waited = log[1]!.arrivedAt - log[0]!.endedAt!
      assert.isAtLeast(waited, 990, `the retry came ${waited} ms after the 429`)
    }), 60_000)

  it.scopedLive("a request rejected for one bad input is split until only that input fails", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      const short = Array.from({ length: 7 }, (_, i) => doc(`short-${i}.txt`, `short document number ${i}`))
      const long = doc("long.txt", "Overlong paragraph. ".repeat(45))
      const result = yield* Effect.scoped(Effect.gen(function*() {
        const server = yield* FaultServer.start({ dimensions: 64, maxInputChars: 600 })
        const summary = yield* Ingest.ingestStream(
          Stream.fromIterable([...short.slice(0, 3), long, ...short.slice(3)].map(Either.right)),
          { chunker: { chunkSize: 1000, chunkOverlap: 0 }, batchSize: 8, maxErrorRate: 1 }
        ).pipe(Effect.provide(Layer.merge(data(), openAi(server))), Effect.provide(ResourceLedger.layer()))
        const failures = yield* Effect.flatMap(VectorStore.VectorStore, (store) => store.failures(10)).pipe(
          Effect.provide(data()),
          Effect.provide(ResourceLedger.layer())
        )
        return { summary, failures, stats: yield* server.stats }
      }))
      assert.strictEqual(result.summary.chunks.written, 7)
      assert.strictEqual(result.summary.chunks.failed, 1)
      assert.deepStrictEqual(result.failures.map((f) => [f.path, f.chunkIndex, f.kind, f.attempts]), [
        ["long.txt", 0, "invalid-input", 1]
      ])
      assert.include(result.failures[0]!.message, "input")
      // one request of 8, then halves down to the bad input: 8 → 4+4 → 2+2 → 1+1
      assert.strictEqual(result.stats.outcomes.badRequest, 4)
    }), 60_000)
})

/**
 * The library surface: ports with their layers, composed as a user would.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as CircuitBreaker from "../src/CircuitBreaker.js"
import * as Database from "../src/Database.js"
import * as Embedder from "../src/Embedder.js"
import { EmbedError } from "../src/Errors.js"
import * as Ingest from "../src/Ingest.js"
import * as Loader from "../src/Loader.js"
import * as MemoryVectorStore from "../src/MemoryVectorStore.js"
import * as ResourceLedger from "../src/ResourceLedger.js"
import * as Search from "../src/Search.js"
import { corpusDir, doc, freshDataDir } from "./support.js"

describe("library layers", () => {
  it.live("Loader.layerFromStream feeds Ingest.ingestWith documents that never touched a disk", () =>
    Effect.gen(function*() {
      const summary = yield* Ingest.ingestWith({ root: "(unused)" })
      assert.strictEqual(summary.files.ingested, 2)
      assert.strictEqual(summary.files.skipped, 1)
      const hits = yield* Search.search("otters", { limit: 1 })
      assert.strictEqual(hits[0]?.path, "from-api/otters.txt")
    }).pipe(
      Effect.provide(Layer.mergeAll(
        Loader.layerFromStream(Stream.make(
          doc("from-api/otters.txt", "otters hold hands while sleeping"),
          Either.left({ path: "from-api/blob.bin", reason: "binary" as const, detail: "not text" }),
          Either.right(doc("from-api/beavers.txt", "beavers build dams"))
        )),
        MemoryVectorStore.layer,
        Embedder.layerHashing()
      ))
    ))

  it.live("Embedder.layerScripted fails the calls its script names", () =>
    Effect.gen(function*() {
      const summary = yield* Ingest.ingestStream(
        Stream.make(Either.right(doc("a.txt", "first")), Either.right(doc("b.txt", "second"))),
        { batchSize: 1, concurrency: 1, maxErrorRate: 1, retry: { maxRetries: 0, base: "1 millis", cap: "1 millis", jitter: "none" } }
      )
      assert.strictEqual(summary.chunks.written, 1)
      assert.strictEqual(summary.chunks.failed, 1)
    }).pipe(
      Effect.provide(Layer.mergeAll(
        MemoryVectorStore.layer,
        Embedder.layerScripted({
          fail: (_, call) => call === 2 ? new EmbedError({ reason: "provider", message: "scripted" }) : undefined
        })
      ))
    ))

  it.live("layers from configuration and test layers compose into a run: no resource of the walk leaks", () =>
    Effect.gen(function*() {
      const summary = yield* Ingest.ingestDirectory({ root: corpusDir })
      assert.strictEqual(summary.outcome, "completed")
      assert.strictEqual(summary.files.ingested, summary.files.seen)
      const embedder = yield* Embedder.Embedder
      assert.strictEqual(embedder.dimensions, 32)
      const ledger = yield* ResourceLedger.snapshot
      assert.isAbove(ledger.total.acquired, 0, "the walk went through the ledger")
      assert.strictEqual(ledger.total.open, 0)
      // a breaker from configuration, beside the run
      const breaker = yield* CircuitBreaker.snapshot
      assert.strictEqual(breaker.name, "library")
      assert.strictEqual(breaker.halfOpen.permits, 2)
    }).pipe(
      Effect.provide(Layer.mergeAll(
        MemoryVectorStore.layer,
        Embedder.layerConfig,
        CircuitBreaker.layerConfig(),
        ResourceLedger.layerTest()
      )),
      Effect.withConfigProvider(ConfigProvider.fromMap(
        new Map([
          ["RAGPIPE_EMBEDDER", "hashing"],
          ["RAGPIPE_DIMENSIONS", "32"],
          ["RAGPIPE_CALL_BREAKER_NAME", "library"],
          ["RAGPIPE_CALL_BREAKER_HALF_OPEN_PERMITS", "2"]
        ])
      ))
    ))

  it.scopedLive("Database.layerConfig opens the embedded database named by RAGPIPE_DATA_DIR", () =>
    Effect.gen(function*() {
      const dir = yield* freshDataDir
      const rows = yield* Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ one: number }>`SELECT 1 AS one`).pipe(
        Effect.provide(Database.layerConfig),
        Effect.provide(ResourceLedger.layer()),
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["RAGPIPE_DATA_DIR", dir]])))
      )
      assert.deepStrictEqual(rows, [{ one: 1 }])
      // a blank DATABASE_URL names no server, as on the command line
      const blank = yield* Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ one: number }>`SELECT 1 AS one`).pipe(
        Effect.provide(Database.layerConfig),
        Effect.provide(ResourceLedger.layer()),
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["RAGPIPE_DATA_DIR", dir], ["DATABASE_URL", " "]])))
      )
      assert.deepStrictEqual(blank, [{ one: 1 }])
    }))
})

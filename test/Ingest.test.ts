import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Ref from "effect/Ref"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as fc from "fast-check"
import * as NodeFs from "node:fs"
import * as NodePath from "node:path"
import * as Chunker from "../src/Chunker.js"
import * as CircuitBreaker from "../src/CircuitBreaker.js"
import * as Embedder from "../src/Embedder.js"
import { EmbedError, StoreError } from "../src/Errors.js"
import * as Ingest from "../src/Ingest.js"
import * as Loader from "../src/Loader.js"
import { makeHashingEmbedder } from "../src/internal/hashingEmbedder.js"
import * as MemoryVectorStore from "../src/MemoryVectorStore.js"
import * as ResourceLedger from "../src/ResourceLedger.js"
import * as Retry from "../src/Retry.js"
import * as Search from "../src/Search.js"
import * as VectorStore from "../src/VectorStore.js"
import {
  backends,
  copyCorpus,
  corpusDir,
  corpusQueries,
  doc,
  ledgerLayer,
  partialDocuments,
  storedPaths,
  type StoreLayer,
  tempDir,
  writeFiles
} from "./support.js"

const countFiles = (dir: string): number =>
  NodeFs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).length

const corpusFileCount = countFiles(corpusDir)

/** A 32-dimension hashing embedder whose every second call (counted in `calls`) fails with `error`. */
const everySecondCallFails = (calls: { n: number }, error: EmbedError) => {
  const hashing = makeHashingEmbedder({ dimensions: 32 })
  return Embedder.layerTest({
    ...hashing,
    embedBatch: (texts) => Effect.suspend(() => ++calls.n % 2 === 0 ? Effect.fail(error) : hashing.embedBatch(texts))
  })
}

/** A store of `data` with the hashing embedder (of `dimensions`, or the default) and the ledger. */
const withHashing = (data: () => StoreLayer, dimensions?: number) =>
  Layer.mergeAll(data(), Embedder.layerHashing(dimensions === undefined ? {} : { dimensions })).pipe(
    Layer.provideMerge(ledgerLayer)
  )

/** `effect` with the VectorStore in its context replaced by what `f` makes of it. */
const withStore = (f: (store: VectorStore.Service) => VectorStore.Service) =>
<A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(VectorStore.VectorStore, (store) => Effect.provideService(effect, VectorStore.VectorStore, f(store)))

/** The live clock, reading `millis` ahead; sleeps are real. */
const aheadClock = (millis: number): Clock.Clock => {
  const live = Clock.make()
  const clock: Clock.Clock = Object.create(live)
  return Object.assign(clock, {
    unsafeCurrentTimeMillis: () => live.unsafeCurrentTimeMillis() + millis,
    unsafeCurrentTimeNanos: () => live.unsafeCurrentTimeNanos() + BigInt(millis) * 1_000_000n,
    currentTimeMillis: Effect.sync(() => live.unsafeCurrentTimeMillis() + millis),
    currentTimeNanos: Effect.sync(() => live.unsafeCurrentTimeNanos() + BigInt(millis) * 1_000_000n)
  })
}

/** Three files last changed an hour ago (old enough for their fingerprints to be trusted); that time. */
const writeOldFiles = (work: string): Date => {
  const hourAgo = new Date(Date.now() - 3_600_000)
  writeFiles(work, { "a.md": "# A\n\nalpha text\n", "b.md": "# B\n\nbravo text\n", "c.md": "# C\n\ncharlie\n" })
  for (const name of ["a.md", "b.md", "c.md"]) NodeFs.utimesSync(NodePath.join(work, name), hourAgo, hourAgo)
  return hourAgo
}

/** Files the ledger has seen opened so far. */
const filesRead = Effect.map(ResourceLedger.snapshot, (s) => s.byKind["file"]?.acquired ?? 0)

describe.each(backends)("Ingest on $name", (backend) => {
  it.scopedLive("ingest, search, then incremental runs touch exactly what changed", () =>
    Effect.gen(function*() {
      const work = yield* tempDir()
      const data = yield* backend.fresh
      copyCorpus(work)
      const run = (options?: Ingest.Options) => Ingest.ingestDirectory({ root: work }, options)

      yield* Effect.gen(function*() {
        const first = yield* run()
        assert.strictEqual(first.outcome, "completed")
        assert.strictEqual(first.files.seen, corpusFileCount)
        assert.strictEqual(first.files.ingested, corpusFileCount)
        assert.strictEqual(first.files.skipped, 0)
        assert.isAbove(first.chunks.written, corpusFileCount)

        for (const q of corpusQueries) {
          const hits = yield* Search.search(q.query, { limit: 3 })
          assert.strictEqual(hits[0]?.path, q.expectedPath, `query "${q.query}"`)
          assert.strictEqual(hits[0]?.rank, 1)
        }

        const second = yield* run()
        assert.deepStrictEqual(second.files, {
          seen: corpusFileCount,
          ingested: 0,
          unchanged: corpusFileCount,
          skipped: 0,
          removed: 0
        })
        assert.strictEqual(second.chunks.written, 0)

        // modify one file, delete one, add one
        const [modified, deleted] = [corpusQueries[0]!.expectedPath, corpusQueries[1]!.expectedPath]
        NodeFs.appendFileSync(
          NodePath.join(work, modified),
          "\n\nZebra crossings near the Quillfeather depot are repainted by the zebra crew.\n"
        )
        NodeFs.rmSync(NodePath.join(work, deleted))
        writeFiles(work, { "new/added.md": "# Added\n\nThe quokka inventory ledger lives here.\n" })

        const third = yield* run()
        assert.deepStrictEqual(third.files, {
          seen: corpusFileCount,
          ingested: 2,
          unchanged: corpusFileCount - 2,
          skipped: 0,
          removed: 1
        })
        const paths = yield* storedPaths
        assert.strictEqual(paths.length, corpusFileCount)
        assert.include(paths, "new/added.md")
        assert.notInclude(paths, deleted)
        assert.deepStrictEqual(yield* partialDocuments, [])

        const zebra = yield* Search.search("zebra crossings Quillfeather depot", { limit: 1 })
        assert.strictEqual(zebra[0]?.path, modified)
        const quokka = yield* Search.search("quokka inventory ledger", { limit: 1 })
        assert.strictEqual(quokka[0]?.path, "new/added.md")

        // the modified document's chunks are exactly the chunker's output
        const sql = yield* SqlClient.SqlClient
        const text = NodeFs.readFileSync(NodePath.join(work, modified), "utf8")
        const expected = Chunker.chunkDocument({ path: modified, text, format: "markdown" }, Chunker.defaults)
        const rows = yield* sql<{ id: string }>`
          SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id
          WHERE d.path = ${modified} ORDER BY c.chunk_index`
        assert.deepStrictEqual(rows.map((r) => r.id), expected.map((c) => c.id))

        // new chunker settings re-chunk and re-embed everything
        const rechunked = yield* run({ chunker: { chunkSize: 400, chunkOverlap: 50 } })
        assert.strictEqual(rechunked.files.ingested, corpusFileCount)
        assert.strictEqual(rechunked.files.unchanged, 0)
        assert.isAbove(rechunked.chunks.written, first.chunks.written)
        assert.deepStrictEqual(yield* partialDocuments, [])
      }).pipe(
        Effect.provide(withHashing(data))
      )
    }))

  it.scopedLive("a dimension that differs from the store's is a clear error and changes nothing", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      const source = Stream.make(Either.right(doc("a.txt", "alpha beta gamma")))
      const withDims = (dimensions: number) => withHashing(data, dimensions)
      yield* Ingest.ingestStream(source).pipe(Effect.provide(withDims(64)))
      const error = yield* Ingest.ingestStream(Stream.make(Either.right(doc("b.txt", "delta")))).pipe(
        Effect.provide(withDims(128)),
        Effect.flip
      )
      assert.strictEqual(error._tag, "StoreError")
      assert.strictEqual(error.reason, "dimension-mismatch")
      assert.include(error.message, "--dimensions 64")
      const paths = yield* storedPaths.pipe(Effect.provide(withDims(64)))
      assert.deepStrictEqual(paths, ["a.txt"])
    }))

  /**
   * A fresh store holding a.txt, embedded by the 64-dimension hashing
   * embedder: the store (`data`), and it with that embedder and the ledger
   * (`hashing`).
   */
  const storedAlpha = Effect.gen(function*() {
    const data = yield* backend.fresh
    const hashing = withHashing(data, 64)
    yield* Ingest.ingestStream(Stream.make(Either.right(doc("a.txt", "alpha beta gamma")))).pipe(
      Effect.provide(hashing)
    )
    return { data, hashing }
  })

  it.scopedLive("a search by another model than the store's is refused without embedding the query", () =>
    Effect.gen(function*() {
      const { data, hashing } = yield* storedAlpha
      // same dimensions, another model: its vectors would be compared with the store's as if alike
      const queries: Array<string> = []
      const other = Embedder.layerTest({
        model: "openai:other-model",
        dimensions: 64,
        maxBatchSize: 16,
        embedBatch: (texts) =>
          Effect.sync(() => {
            queries.push(...texts)
            return texts.map(() => new Float32Array(64).fill(0.125))
          })
      })
      const error = yield* Search.search("alpha").pipe(
        Effect.provide(Layer.mergeAll(data(), other).pipe(Layer.provideMerge(ledgerLayer))),
        Effect.flip
      )
      assert.strictEqual(error._tag, "StoreError")
      assert.strictEqual(error.reason, "model-mismatch")
      assert.strictEqual(
        error.message,
        "this store's embeddings were made by model hashing-v1 but the query embedder is openai:other-model: " +
          "vectors of two models cannot be compared; search with --embedder hashing"
      )
      assert.deepStrictEqual(queries, [])
      const hits = yield* Search.search("alpha").pipe(Effect.provide(hashing))
      assert.deepStrictEqual(hits.map((h) => h.path), ["a.txt"])
    }))

  it.scopedLive("two models' documents in one store: a search covers its own model's and says how many it left out", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      const hashing = withHashing(data, 64)
      const other = Layer.mergeAll(
        data(),
        Embedder.layerTest({
          model: "openai:other-model",
          dimensions: 64,
          maxBatchSize: 16,
          embedBatch: (texts) => Effect.succeed(texts.map(() => new Float32Array(64).fill(0.125)))
        })
      ).pipe(Layer.provideMerge(ledgerLayer))
      yield* Ingest.ingestStream(Stream.make(
        Either.right(doc("a.txt", "alpha beta gamma")),
        Either.right(doc("b.txt", "alpha delta"))
      )).pipe(Effect.provide(hashing))
      // an ingest with another model that got as far as one document
      const partial = Stream.make(Either.right(doc("c.txt", "alpha epsilon")))
      yield* Ingest.ingestStream(partial, { removeMissing: false }).pipe(Effect.provide(other))
      const { scope, stats } = yield* Effect.flatMap(
        VectorStore.VectorStore,
        (store) => Effect.all({ stats: store.stats, scope: store.searchScope! })
      ).pipe(Effect.provide(hashing))
      assert.deepStrictEqual(stats.models, { "hashing-v1": 2, "openai:other-model": 1 })
      assert.strictEqual(stats.model, "openai:other-model")
      assert.deepStrictEqual(scope, { hasChunks: true, dimensions: 64, models: stats.models })
      const warnings: Array<string> = []
      const capture = Logger.make(({ logLevel, message }) => {
        if (logLevel._tag === "Warning") warnings.push(String(Array.isArray(message) ? message[0] : message))
      })
      // a store of its own making may offer no searchScope: the search reads stats instead
      const withoutScope = withStore(({ searchScope: _, ...store }) => store)
      const searched = (layer: typeof hashing, scoped = true) =>
        Search.search("alpha", { limit: 10 }).pipe(
          scoped ? (effect) => effect : withoutScope,
          Effect.provide(layer),
          Effect.provide(Logger.replace(Logger.defaultLogger, capture)),
          Effect.map((hits) => hits.map((h) => h.path).sort())
        )
      assert.deepStrictEqual(yield* searched(hashing), ["a.txt", "b.txt"])
      assert.deepStrictEqual(yield* searched(other), ["c.txt"])
      assert.deepStrictEqual(yield* searched(hashing, false), ["a.txt", "b.txt"])
      assert.deepStrictEqual(yield* searched(other, false), ["c.txt"])
      const unfinished = "(an ingest that changed the model has not finished: run it again to finish)"
      const leftOut = [
        "1 of 3 documents are left out of this search: they were embedded by openai:other-model, whose vectors " +
        `cannot be compared with hashing-v1's ${unfinished}`,
        "2 of 3 documents are left out of this search: they were embedded by hashing-v1, whose vectors " +
        `cannot be compared with openai:other-model's ${unfinished}`
      ]
      assert.deepStrictEqual(warnings, [...leftOut, ...leftOut])
      // once the ingest finishes, every document is the new model's and nothing is left out
      yield* Ingest.ingestStream(Stream.make(
        Either.right(doc("a.txt", "alpha beta gamma")),
        Either.right(doc("b.txt", "alpha delta")),
        Either.right(doc("c.txt", "alpha epsilon"))
      )).pipe(Effect.provide(other))
      assert.deepStrictEqual(yield* searched(other), ["a.txt", "b.txt", "c.txt"])
      assert.strictEqual(warnings.length, 4)
    }))

  it.scopedLive("Search.storeScope reads the store's searchScope, not its stats (which count every chunk), or without one its stats; a search given it reads neither", () =>
    Effect.gen(function*() {
      const { hashing: stored } = yield* storedAlpha
      const expected = { hasChunks: true, dimensions: 64, models: { "hashing-v1": 1 } }
      const uncounted = new StoreError({ reason: "query", message: "stats read" })
      // stats that fail: the scope comes from searchScope alone
      const scope = yield* Search.storeScope.pipe(
        withStore((store) => ({ ...store, stats: Effect.fail(uncounted) })),
        Effect.provide(stored)
      )
      assert.deepStrictEqual(scope, expected)
      // a store that offers no searchScope: the same, from its stats
      const fromStats = yield* Search.storeScope.pipe(
        withStore(({ searchScope: _, ...store }) => store),
        Effect.provide(stored)
      )
      assert.deepStrictEqual(fromStats, expected)
      // a search given the scope reads neither
      const hits = yield* Search.search("alpha", { scope }).pipe(
        withStore((store) => ({ ...store, stats: Effect.fail(uncounted), searchScope: Effect.fail(uncounted) })),
        Effect.provide(stored)
      )
      assert.deepStrictEqual(hits.map((h) => h.path), ["a.txt"])
    }))

  it.scopedLive("files whose size, times and inode are unchanged are not read again; a changed one is", () =>
    Effect.gen(function*() {
      const work = yield* tempDir()
      const data = yield* backend.fresh
      const hourAgo = writeOldFiles(work)
      /** a run, and how many files it opened */
      const run = (options?: Ingest.Options) =>
        Effect.gen(function*() {
          const before = yield* filesRead
          const summary = yield* Ingest.ingestDirectory({ root: work }, options)
          return { summary, read: (yield* filesRead) - before }
        })
      // the clock as it will be in a minute: files changed just now are then old enough to be trusted;
      // and as it was a minute ago: then they are not
      const inAMinute = Effect.withClock(aheadClock(60_000))
      const aMinuteAgo = Effect.withClock(aheadClock(-60_000))

      yield* Effect.gen(function*() {
        // just written: their change times are too recent to be trusted, so they are read every time
        assert.strictEqual((yield* aMinuteAgo(run())).read, 3)
        assert.strictEqual((yield* aMinuteAgo(run())).read, 3)

        const first = yield* inAMinute(run())
        assert.strictEqual(first.summary.files.unchanged, 3)
        assert.strictEqual(first.read, 3)

        const second = yield* inAMinute(run())
        assert.deepStrictEqual(second.summary.files, { seen: 3, ingested: 0, unchanged: 3, skipped: 0, removed: 0 })
        assert.strictEqual(second.read, 0, "no file is opened")

        // b: same size and modification time, other content (its change time moves: it is read);
        // c: touched only (read, same content: unchanged)
        NodeFs.writeFileSync(NodePath.join(work, "b.md"), "# B\n\nBRAVO TEXT\n")
        NodeFs.utimesSync(NodePath.join(work, "b.md"), hourAgo, hourAgo)
        const touched = new Date(Date.now() - 1_800_000)
        NodeFs.utimesSync(NodePath.join(work, "c.md"), touched, touched)
        const third = yield* inAMinute(run())
        assert.deepStrictEqual(third.summary.files, { seen: 3, ingested: 1, unchanged: 2, skipped: 0, removed: 0 })
        assert.strictEqual(third.read, 2)
        const hits = yield* Search.search("BRAVO TEXT", { limit: 1 })
        assert.strictEqual(hits[0]?.path, "b.md")
        assert.include(hits[0]!.text, "BRAVO TEXT")

        // both fingerprints were brought up to date: nothing is read
        assert.strictEqual((yield* inAMinute(run())).read, 0)

        // --rehash reads everything, and finds nothing changed
        const rehashed = yield* inAMinute(run({ rehash: true }))
        assert.strictEqual(rehashed.read, 3)
        assert.strictEqual(rehashed.summary.files.unchanged, 3)

        // a file whose times are not in the past gets no fingerprint: it is read on every run
        writeFiles(work, { "d.md": "# D\n\ndelta\n" })
        const later = new Date(Date.now() + 3_600_000)
        NodeFs.utimesSync(NodePath.join(work, "d.md"), later, later)
        assert.strictEqual((yield* inAMinute(run())).read, 1)
        assert.strictEqual((yield* inAMinute(run())).read, 1)
        assert.strictEqual((yield* inAMinute(run())).summary.files.unchanged, 4)

        // other chunker settings: every file is read and re-embedded
        const rechunked = yield* inAMinute(run({ chunker: { chunkSize: 300, chunkOverlap: 0 } }))
        assert.strictEqual(rechunked.read, 4)
        assert.strictEqual(rechunked.summary.files.ingested, 4)
        assert.deepStrictEqual(yield* partialDocuments, [])
      }).pipe(
        Effect.provide(withHashing(data))
      )
    }))

  it.scopedLive("files found unchanged count once: left out by the filesystem loader, or emitted by another", () =>
    Effect.gen(function*() {
      const work = yield* tempDir()
      const data = yield* backend.fresh
      writeOldFiles(work)
      writeFiles(work, { "d.md": "# D\n\ndelta\n" }) // too new to be trusted: read, and found the same
      // a loader of its own that asks the store but emits what it answers, as `unchanged` skips
      const emitting = Layer.effect(
        Loader.Loader,
        Effect.map(ResourceLedger.ResourceLedger, (ledger) => ({
          load: (options: Loader.Options) =>
            Loader.walk(options).pipe(Stream.provideService(ResourceLedger.ResourceLedger, ledger))
        }))
      )
      const run = <E, R>(loader: Layer.Layer<Loader.Loader, E, R>) =>
        Effect.gen(function*() {
          const progress = yield* Ref.make<Ingest.Progress>(Ingest.emptyProgress)
          const summary = yield* Ingest.ingestWith({ root: work }, { progress }).pipe(Effect.provide(loader))
          return { files: summary.files, progress: yield* Ref.get(progress) }
        }).pipe(Effect.withClock(aheadClock(60_000)))
      const expected = {
        files: { seen: 4, ingested: 0, unchanged: 4, skipped: 0, removed: 0 },
        progress: { filesSeen: 4, filesIngested: 0, filesUnchanged: 4, filesSkipped: 0, chunksWritten: 0, chunksFailed: 0 }
      }

      yield* Effect.gen(function*() {
        assert.strictEqual((yield* run(Loader.layer)).files.ingested, 4)
        assert.deepStrictEqual(yield* run(Loader.layer), expected)
        assert.deepStrictEqual(yield* run(emitting), expected)
        assert.deepStrictEqual(yield* run(Loader.layer), expected)
      }).pipe(Effect.provide(withHashing(data)))
    }))

  it.scopedLive("a store with no document complete with the run's settings is not asked about unchanged files", () =>
    Effect.gen(function*() {
      const work = yield* tempDir()
      const data = yield* backend.fresh
      writeOldFiles(work)
      // the store is asked by file (claimUnchanged) or by directory (directoryDigests)
      let claims = 0
      let failCheck = false
      const counted = Layer.effect(
        VectorStore.VectorStore,
        Effect.map(VectorStore.VectorStore, (store): VectorStore.Service => ({
          ...store,
          claimUnchanged: (runId, files, settings) =>
            Effect.zipRight(Effect.sync(() => void claims++), store.claimUnchanged(runId, files, settings)),
          ...(store.directoryDigests === undefined ? {} : {
            directoryDigests: (settings) =>
              Effect.zipRight(Effect.sync(() => void claims++), store.directoryDigests!(settings))
          }),
          hasComplete: (settings) =>
            failCheck
              ? Effect.fail(new StoreError({ reason: "query", message: "the check failed" }))
              : store.hasComplete(settings)
        }))
      ).pipe(Layer.provideMerge(data()))
      /** a run: its file counts, the claims it made and the files it opened */
      const run = (options?: Ingest.Options) =>
        Effect.gen(function*() {
          const [claimsBefore, readBefore] = [claims, yield* filesRead]
          const summary = yield* Ingest.ingestDirectory({ root: work }, options).pipe(
            Effect.withClock(aheadClock(60_000))
          )
          return { files: summary.files, claims: claims - claimsBefore, read: (yield* filesRead) - readBefore }
        })
      const other = { chunker: { chunkSize: 300, chunkOverlap: 0 } }
      const all = (ingested: number, unchanged: number) => ({ seen: 3, ingested, unchanged, skipped: 0, removed: 0 })

      yield* Effect.gen(function*() {
        // empty: every file is read, none is offered to the store
        assert.deepStrictEqual(yield* run(), { files: all(3, 0), claims: 0, read: 3 })
        // the same settings: the files are claimed, none is read
        assert.deepStrictEqual(yield* run(), { files: all(0, 3), claims: 1, read: 0 })
        // other chunker settings: nothing stored with them yet, so nothing is asked
        assert.deepStrictEqual(yield* run(other), { files: all(3, 0), claims: 0, read: 3 })
        assert.deepStrictEqual(yield* run(other), { files: all(0, 3), claims: 1, read: 0 })
        // back to the first settings: every document was rewritten with the others
        assert.deepStrictEqual(yield* run(), { files: all(3, 0), claims: 0, read: 3 })
        // a failed check only means the store is asked
        failCheck = true
        assert.deepStrictEqual(yield* run(), { files: all(0, 3), claims: 1, read: 0 })
        // --rehash asks nothing and reads everything
        assert.deepStrictEqual(yield* run({ rehash: true }), { files: all(0, 3), claims: 0, read: 3 })
      }).pipe(
        Effect.provide(Layer.mergeAll(counted, Embedder.layerHashing()).pipe(Layer.provideMerge(ledgerLayer)))
      )
    }))

  it.scopedLive("unchanged files are kept by removal without their rows being rewritten; a deleted one is removed", () =>
    Effect.gen(function*() {
      const work = yield* tempDir()
      const data = yield* backend.fresh
      const hourAgo = new Date(Date.now() - 3_600_000)
      const names = ["a.md", "b.md", "c.md", "d.md"]
      writeFiles(work, Object.fromEntries(names.map((name) => [name, `# ${name}\n\ntext of ${name}\n`])))
      for (const name of names) NodeFs.utimesSync(NodePath.join(work, name), hourAgo, hourAgo)
      const sql = SqlClient.SqlClient
      /** each document's row version: a rewritten row gets a new one */
      const versions = Effect.flatMap(sql, (sql) =>
        sql<{ path: string; version: string }>`SELECT path, xmin::text AS version FROM documents ORDER BY path`)
      const seenRows = Effect.flatMap(sql, (sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM ragpipe_seen`)
      const keptDigests = Effect.flatMap(sql, (sql) =>
        sql<{ dir: string; total: number }>`SELECT dir, total FROM ragpipe_dir_digests`)
      yield* Effect.gen(function*() {
        const first = yield* Ingest.ingestDirectory({ root: work })
        assert.strictEqual(first.files.ingested, 4)
        const before = yield* versions
        // the run kept the digest of its one directory for the next
        assert.isDefined((yield* VectorStore.VectorStore).keepDirectoryDigests)
        assert.deepStrictEqual(yield* keptDigests, [{ dir: "", total: 4 }])

        const again = yield* Ingest.ingestDirectory({ root: work })
        assert.deepStrictEqual(again.files, { seen: 4, ingested: 0, unchanged: 4, skipped: 0, removed: 0 })
        assert.deepStrictEqual(yield* versions, before, "no document row was rewritten")
        // the directory was found unchanged whole (where the store compares directories): nothing listed by path
        const wholeDirectories = (yield* VectorStore.VectorStore).directoryDigests !== undefined
        assert.strictEqual((yield* seenRows)[0]!.n, wholeDirectories ? 0 : 4)

        // one file deleted: the run removes it and keeps the three it only listed
        NodeFs.rmSync(NodePath.join(work, "c.md"))
        const third = yield* Ingest.ingestDirectory({ root: work })
        assert.deepStrictEqual(third.files, { seen: 3, ingested: 0, unchanged: 3, skipped: 0, removed: 1 })
        assert.strictEqual((yield* seenRows)[0]!.n, 3, "the run listed the three unchanged paths")
        assert.deepStrictEqual(yield* versions, before.filter((v) => v.path !== "c.md"), "no document row was rewritten")
        assert.deepStrictEqual(yield* storedPaths, ["a.md", "b.md", "d.md"])
        assert.deepStrictEqual(yield* partialDocuments, [])
        // the removal dropped the kept digest; the run kept the new one
        assert.deepStrictEqual(yield* keptDigests, [{ dir: "", total: 3 }])
        // the next run starts by dropping the lists of earlier runs
        const fourth = yield* Ingest.ingestDirectory({ root: work })
        assert.strictEqual(fourth.files.removed, 0)
        assert.strictEqual((yield* seenRows)[0]!.n, wholeDirectories ? 0 : 3)
        assert.deepStrictEqual(yield* storedPaths, ["a.md", "b.md", "d.md"])
      }).pipe(
        // a minute from now the files' change times are old enough to be trusted
        Effect.withClock(aheadClock(60_000)),
        Effect.provide(withHashing(data))
      )
    }))

  it.scopedLive("whole directories: an unchanged re-run claims, reads and removes nothing by file; changed ones end as a fresh ingest", () =>
    Effect.gen(function*() {
      const work = yield* tempDir()
      const data = yield* backend.fresh
      const hourAgo = new Date(Date.now() - 3_600_000)
      const files: Record<string, string> = {
        "r.md": "# R\n\nroot file\n",
        "w/1.md": "# W1\n\nwhiskey one\n",
        "w/2.md": "# W2\n\nwhiskey two\n",
        "x/1.md": "# X1\n\nxray one\n",
        "x/2.md": "# X2\n\nxray two\n",
        "x/3.md": "# X3\n\nxray three\n",
        "y/1.md": "# Y1\n\nyankee one\n",
        "y/2.md": "# Y2\n\nyankee two\n",
        "y/z/1.md": "# Z1\n\nzulu one\n"
      }
      const age = () => {
        for (const entry of NodeFs.readdirSync(work, { recursive: true, withFileTypes: true })) {
          if (entry.isFile()) NodeFs.utimesSync(NodePath.join(entry.parentPath, entry.name), hourAgo, hourAgo)
        }
      }
      writeFiles(work, files)
      age()
      const asked = { claimed: 0, removals: 0, directories: [] as Array<string>, failDigests: false }
      const counted = Layer.effect(
        VectorStore.VectorStore,
        Effect.map(VectorStore.VectorStore, (store): VectorStore.Service => ({
          ...store,
          claimUnchanged: (runId, files, settings) =>
            Effect.zipRight(Effect.sync(() => void (asked.claimed += files.length)), store.claimUnchanged(runId, files, settings)),
          removeUnseen: (runId) => Effect.zipRight(Effect.sync(() => void asked.removals++), store.removeUnseen(runId)),
          ...(store.directoryDigests === undefined || store.markDirectoriesSeen === undefined ? {} : {
            directoryDigests: (settings) =>
              asked.failDigests
                ? Effect.fail(new StoreError({ reason: "query", message: "reading stored documents failed" }))
                : store.directoryDigests!(settings),
            markDirectoriesSeen: (runId, directories) =>
              Effect.zipRight(
                Effect.sync(() => void asked.directories.push(...directories)),
                store.markDirectoriesSeen!(runId, directories)
              )
          })
        }))
      ).pipe(Layer.provideMerge(data()))
      const run = Effect.gen(function*() {
        asked.claimed = 0
        asked.removals = 0
        asked.directories = []
        const read = yield* filesRead
        const summary = yield* Ingest.ingestDirectory({ root: work }).pipe(Effect.withClock(aheadClock(60_000)))
        return {
          files: summary.files,
          claimed: asked.claimed,
          removals: asked.removals,
          directories: [...asked.directories].sort(),
          read: (yield* filesRead) - read
        }
      })
      const checksum = Effect.flatMap(VectorStore.VectorStore, (store) => store.checksum)
      /** a run that finds its `seen` files unchanged and asks the store nothing by file */
      const quiet = (seen: number, removed = 0) => ({
        files: { seen, ingested: 0, unchanged: seen, skipped: 0, removed },
        claimed: 0,
        removals: 0,
        directories: [] as Array<string>,
        read: 0
      })

      const [ours, paths] = yield* Effect.gen(function*() {
        assert.isDefined((yield* VectorStore.VectorStore).directoryDigests)
        assert.strictEqual((yield* run).files.ingested, 9)
        assert.deepStrictEqual(yield* run, quiet(9))

        // x gains a file, y/2.md changes, w loses one, y/z goes; the root does not change
        writeFiles(work, { "x/4.md": "# X4\n\nxray four\n", "y/2.md": "# Y2\n\nyankee two, again\n" })
        NodeFs.rmSync(NodePath.join(work, "w", "1.md"))
        NodeFs.rmSync(NodePath.join(work, "y", "z"), { recursive: true })
        const changed = yield* run
        assert.deepStrictEqual(changed, {
          files: { seen: 8, ingested: 2, unchanged: 6, skipped: 0, removed: 2 },
          // every file of the changed directories, one by one (x/4.md and y/2.md are not stored so)
          claimed: 7,
          removals: 1,
          // listed before the removal, which keeps its documents
          directories: [""],
          read: 2
        })
        age()
        assert.deepStrictEqual((yield* run).files, { seen: 8, ingested: 0, unchanged: 8, skipped: 0, removed: 0 })
        // when the digests cannot be read, every file is claimed by itself and the removal runs
        asked.failDigests = true
        assert.deepStrictEqual(yield* run, { ...quiet(8), claimed: 8, removals: 1 })
        // a directory gone, the others unchanged: each of them is seen whole, and its documents removed
        asked.failDigests = false
        NodeFs.rmSync(NodePath.join(work, "w"), { recursive: true })
        assert.deepStrictEqual(yield* run, { ...quiet(7, 1), removals: 1, directories: ["", "x", "y"] })
        assert.deepStrictEqual(yield* partialDocuments, [])
        return [yield* checksum, yield* storedPaths] as const
      }).pipe(Effect.provide(Layer.mergeAll(counted, Embedder.layerHashing()).pipe(Layer.provideMerge(ledgerLayer))))

      assert.deepStrictEqual(paths, ["r.md", "x/1.md", "x/2.md", "x/3.md", "x/4.md", "y/1.md", "y/2.md"])
      // the same as an ingest of these files into a new store
      const fresh = yield* backend.fresh
      const theirs = yield* Effect.zipRight(Ingest.ingestDirectory({ root: work }), checksum).pipe(
        Effect.provide(withHashing(fresh))
      )
      assert.strictEqual(ours, theirs)
    }))

  it.scopedLive("directories found unchanged are listed in groups; a group the store refused is listed again before the removal", () =>
    Effect.gen(function*() {
      const work = yield* tempDir()
      const data = yield* backend.fresh
      const hourAgo = new Date(Date.now() - 3_600_000)
      const names = ["a", "b", "c", "d", "e"].flatMap((d) => [`${d}/1.md`, `${d}/2.md`])
      writeFiles(work, Object.fromEntries(names.map((name) => [name, `# ${name}\n\ntext of ${name}\n`])))
      for (const name of names) NodeFs.utimesSync(NodePath.join(work, name), hourAgo, hourAgo)
      const calls: Array<ReadonlyArray<string>> = []
      const refusing = Layer.effect(
        VectorStore.VectorStore,
        Effect.map(VectorStore.VectorStore, (store): VectorStore.Service => ({
          ...store,
          ...(store.markDirectoriesSeen === undefined ? {} : {
            markDirectoriesSeen: (runId, directories) =>
              Effect.suspend(() => {
                calls.push([...directories])
                return calls.length === 1
                  ? Effect.fail(new StoreError({ reason: "query", message: "marking unchanged documents failed" }))
                  : store.markDirectoriesSeen!(runId, directories)
              })
          })
        }))
      ).pipe(Layer.provideMerge(data()))
      // a minute from now the files' change times are old enough to be trusted
      const ingest = (options?: Ingest.Options) =>
        Ingest.ingestDirectory({ root: work }, options).pipe(Effect.withClock(aheadClock(60_000)))
      yield* Effect.gen(function*() {
        assert.strictEqual((yield* ingest()).files.ingested, 10)
        // e/2.md is gone: the removal runs, and keeps the documents of the directories found unchanged
        NodeFs.rmSync(NodePath.join(work, "e", "2.md"))
        const summary = yield* ingest({ seenFlushSize: 2 })
        assert.deepStrictEqual(summary.files, { seen: 9, ingested: 0, unchanged: 9, skipped: 0, removed: 1 })
        assert.deepStrictEqual(yield* storedPaths, names.filter((name) => name !== "e/2.md"))
        // the first group failed and stayed listed: each later call holds it, until one succeeds
        assert.deepStrictEqual(calls[0]?.length, 2)
        assert.sameMembers([...calls[1]!], [...calls[0]!, ...calls[1]!.slice(2)])
        assert.sameMembers([...new Set(calls.flat())], ["a", "b", "c", "d"])
      }).pipe(Effect.provide(Layer.mergeAll(refusing, Embedder.layerHashing()).pipe(Layer.provideMerge(ledgerLayer))))
    }))

  it.scopedLive("one run at a time: while a run holds the store, another is refused; then runs go on", () =>
    Effect.gen(function*() {
      const work = yield* tempDir()
      const data = yield* backend.fresh
      writeFiles(work, { "a.md": "# A\n\nalpha\n" })
      const beginRun = Effect.flatMap(VectorStore.VectorStore, (store) => store.beginRun)
      // a run that holds the store: its store and its scope stay open
      const held = yield* Scope.make()
      const first = yield* Layer.buildWithScope(data().pipe(Layer.provideMerge(ledgerLayer)), held)
      yield* Scope.extend(beginRun, held).pipe(Effect.provide(first))
      // in this process, on the same store object
      const sameStore = yield* Effect.flip(Effect.scoped(beginRun).pipe(Effect.provide(first)))
      assert.strictEqual(sameStore.reason, "locked")
      // through a store of its own (another connection; embedded, the same directory)
      const other = yield* Effect.flip(
        Effect.scoped(Ingest.ingestDirectory({ root: work })).pipe(
          Effect.provide(withHashing(data))
        )
      )
      assert.strictEqual(other._tag, "StoreError")
      assert.strictEqual((other as StoreError).reason, "locked")
      assert.match(
        (other as StoreError).message,
        backend.name === "PGlite" ? /already open in this process/ : /another ingest is running on this store/
      )
      yield* Scope.close(held, Exit.void)
      const after = yield* Ingest.ingestDirectory({ root: work }).pipe(
        Effect.provide(withHashing(data))
      )
      assert.strictEqual(after.files.ingested, 1)
    }))

  it.scopedLive("a walk that reports an unreadable directory removes nothing; a clean walk does", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      yield* Effect.gen(function*() {
        yield* Ingest.ingestStream(Stream.make(Either.right(doc("a.txt", "one")), Either.right(doc("b.txt", "two"))))
        const failedWalk = yield* Ingest.ingestStream(Stream.make(
          Either.right(doc("a.txt", "one")),
          Either.left({ path: "sub", reason: "unreadable-directory" as const, detail: "permission denied" })
        ))
        assert.strictEqual(failedWalk.walkComplete, false)
        assert.strictEqual(failedWalk.files.removed, 0)
        assert.deepStrictEqual(yield* storedPaths, ["a.txt", "b.txt"])

        // an unreadable file keeps its stored version
        const unreadable = yield* Ingest.ingestStream(Stream.make(
          Either.right(doc("a.txt", "one")),
          Either.left({ path: "b.txt", reason: "unreadable" as const, detail: "EIO" })
        ))
        assert.strictEqual(unreadable.files.removed, 0)
        assert.deepStrictEqual(yield* storedPaths, ["a.txt", "b.txt"])

        const clean = yield* Ingest.ingestStream(Stream.make(Either.right(doc("a.txt", "one"))))
        assert.strictEqual(clean.files.removed, 1)
        assert.deepStrictEqual(yield* storedPaths, ["a.txt"])

        // a source that fails part-way removes nothing either
        const failing = Stream.concat(Stream.make(Either.right(doc("c.txt", "three"))), Stream.fail("disk gone"))
        const exit = yield* Effect.exit(Ingest.ingestStream(failing))
        assert.isTrue(Exit.isFailure(exit))
        assert.include(yield* storedPaths, "a.txt")
        assert.deepStrictEqual(yield* partialDocuments, [])
      }).pipe(
        Effect.provide(withHashing(data))
      )
    }))

  it.scopedLive("a walk that finds no file keeps the stored documents, unless allowEmpty", () =>
    Effect.gen(function*() {
      const work = yield* tempDir()
      const data = yield* backend.fresh
      writeFiles(work, { "a.md": "# A\n\nalpha\n", "sub/b.txt": "beta\n" })
      yield* Effect.gen(function*() {
        assert.strictEqual((yield* Ingest.ingestDirectory({ root: work })).files.ingested, 2)
        // filters that match nothing (an unclosed bracket is a literal "[")
        const filtered = yield* Ingest.ingestDirectory({ root: work, include: ["[z"] })
        assert.deepStrictEqual(filtered.files, { seen: 0, ingested: 0, unchanged: 0, skipped: 0, removed: 0 })
        assert.strictEqual(filtered.kept, 2)
        assert.strictEqual(filtered.outcome, "completed")
        assert.deepStrictEqual(yield* storedPaths, ["a.md", "sub/b.txt"])
        // a directory emptied (or a share not mounted)
        NodeFs.rmSync(NodePath.join(work, "a.md"))
        NodeFs.rmSync(NodePath.join(work, "sub"), { recursive: true })
        const empty = yield* Ingest.ingestDirectory({ root: work })
        assert.deepStrictEqual([empty.files.removed, empty.kept], [0, 2])
        assert.deepStrictEqual(yield* storedPaths, ["a.md", "sub/b.txt"])
        // a file the walk skips is a file found: removal goes on as before
        writeFiles(work, { "blank.txt": "  \n" })
        const skipped = yield* Ingest.ingestDirectory({ root: work })
        assert.deepStrictEqual([skipped.files.skipped, skipped.files.removed, skipped.kept], [1, 2, 0])
        assert.deepStrictEqual(yield* storedPaths, [])
        // allowed: an empty walk empties the store
        writeFiles(work, { "c.md": "gamma\n" })
        assert.strictEqual((yield* Ingest.ingestDirectory({ root: work })).files.ingested, 1)
        NodeFs.rmSync(NodePath.join(work, "c.md"))
        NodeFs.rmSync(NodePath.join(work, "blank.txt"))
        const allowed = yield* Ingest.ingestDirectory({ root: work }, { allowEmpty: true })
        assert.deepStrictEqual([allowed.files.removed, allowed.kept], [1, 0])
        assert.deepStrictEqual(yield* storedPaths, [])
        // an empty walk on an empty store keeps nothing and says so
        const nothing = yield* Ingest.ingestDirectory({ root: work })
        assert.deepStrictEqual([nothing.files.removed, nothing.kept], [0, 0])
      }).pipe(Effect.provide(withHashing(data)))
    }))

  it.scopedLive("a source that yields a path twice stores it once, with the last content", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      yield* Effect.gen(function*() {
        const summary = yield* Ingest.ingestStream(Stream.make(
          Either.right(doc("twice.txt", "first version about otters")),
          Either.right(doc("twice.txt", "second version about beavers"))
        ))
        assert.strictEqual(summary.files.seen, 2)
        assert.deepStrictEqual(yield* storedPaths, ["twice.txt"])
        const hits = yield* Search.search("beavers", { limit: 5 })
        assert.deepStrictEqual(hits.map((h) => h.text), ["second version about beavers"])
        assert.deepStrictEqual(yield* partialDocuments, [])
      }).pipe(
        Effect.provide(withHashing(data))
      )
    }))

  it.scopedLive("a document with more chunks than one statement could bind is written whole", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      // 13,000 chunks × 7 columns would be 91,000 parameters in one multi-row INSERT
      const words = Array.from({ length: 13_000 }, (_, i) => `Sentence number ${i} talks about item${i}.`)
      const big = doc("big.txt", words.join("\n\n"))
      const options: Ingest.Options = { chunker: { chunkSize: 50, chunkOverlap: 0 } }
      yield* Effect.gen(function*() {
        const summary = yield* Ingest.ingestStream(Stream.make(Either.right(big)), options)
        assert.isAtLeast(summary.chunks.written, 13_000)
        const sql = yield* SqlClient.SqlClient
        const [row] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM chunks`
        assert.strictEqual(row!.n, summary.chunks.written)
        assert.deepStrictEqual(yield* partialDocuments, [])
      }).pipe(
        Effect.provide(withHashing(data))
      )
    }))

  it.scopedLive("an embedding failure counts the chunks as failed and keeps the document for the next run", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      const hashing = yield* Effect.provide(Embedder.Embedder, Embedder.layerHashing({ dimensions: 32 }))
      const failing = Embedder.layerTest({
        ...hashing,
        embedBatch: (texts) =>
          texts.some((t) => t.includes("poison"))
            ? Effect.fail(new EmbedError({ reason: "provider", message: "provider refused the batch" }))
            : hashing.embedBatch(texts)
      })
      yield* Effect.gen(function*() {
        const summary = yield* Ingest.ingestStream(Stream.make(
          Either.right(doc("ok.txt", "fine words")),
          Either.right(doc("bad.txt", "poison words"))
        ), { retry: { maxRetries: 1, base: "1 millis", cap: "1 millis", jitter: "none" }, maxErrorRate: 1, batchSize: 1 })
        assert.strictEqual(summary.files.ingested, 1)
        assert.strictEqual(summary.chunks.failed, 1)
        assert.strictEqual(summary.chunks.written, 1)
        // the failing document is stored without the chunk, which is recorded as a failure
        assert.deepStrictEqual(yield* storedPaths, ["bad.txt", "ok.txt"])
        const store = yield* VectorStore.VectorStore
        const failures = yield* store.failures(100)
        assert.deepStrictEqual(failures.map((f) => [f.path, f.chunkIndex, f.kind, f.attempts]), [
          ["bad.txt", 0, "provider", 2]
        ])
        // the next run retries it (the document is not up to date); a success clears the row
        const retried = yield* Ingest.ingestStream(Stream.make(
          Either.right(doc("ok.txt", "fine words")),
          Either.right(doc("bad.txt", "cured words"))
        ), { batchSize: 1 })
        assert.strictEqual(retried.files.unchanged, 1)
        assert.strictEqual(retried.files.ingested, 1)
        assert.deepStrictEqual(yield* store.failures(100), [])
      }).pipe(Effect.provide(Layer.mergeAll(data(), failing).pipe(Layer.provideMerge(ledgerLayer))))
    }))

  it.scopedLive("an embedder failing above the error rate ends the run with a BreakInfo, releasing everything", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      const calls = { n: 0 }
      const flaky = everySecondCallFails(
        calls,
        new EmbedError({ reason: "invalid-input", status: 400, message: "input rejected" })
      )
      const docs = Array.from({ length: 300 }, (_, i) => Either.right(doc(`d${i}.txt`, `document ${i} words`)))
      const ledger = yield* ResourceLedger.make()
      const summary = yield* Effect.gen(function*() {
        yield* Ingest.ingestStream(Stream.make(Either.right(doc("old.txt", "kept"))))
        return yield* Ingest.ingestStream(Stream.fromIterable(docs), {
          maxErrorRate: 0.2,
          minSamples: 20,
          concurrency: 1,
          batchSize: 1
        })
      }).pipe(
        Effect.provide(Layer.merge(data(), flaky)),
        Effect.provideService(ResourceLedger.ResourceLedger, ledger)
      )
      assert.strictEqual(summary.outcome, "broken")
      const breaker = summary.breaker!
      assert.strictEqual(breaker.code, "error-rate")
      assert.strictEqual(breaker.threshold, 0.2)
      assert.strictEqual(breaker.total, 20)
      assert.strictEqual(breaker.errors, 10)
      assert.strictEqual(breaker.ok, 10)
      assert.strictEqual(breaker.lastError, "input rejected")
      assert.isBelow(calls.n, 30, "no embedding after the break")
      assert.strictEqual(summary.files.removed, 0)
      assert.strictEqual(summary.chunks.failed, 10)
      assert.strictEqual((yield* ledger.snapshot).total.open, 0)
      const paths = yield* storedPaths.pipe(
        Effect.provide(data()),
        Effect.provideService(ResourceLedger.ResourceLedger, ledger)
      )
      assert.include(paths, "old.txt")
      // documents with a failed chunk are stored without it, their failure recorded
      assert.strictEqual(paths.length, summary.files.ingested + summary.chunks.failed + 1)
    }))

  it.scopedLive("a break in the middle of documents: every chunk the breaker counted is stored or recorded", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      const flaky = everySecondCallFails(
        { n: 0 },
        new EmbedError({ reason: "http", status: 503, message: "unavailable" })
      )
      // five chunks per document
      const text = (i: number) => Array.from({ length: 5 }, (_, k) => `doc ${i} part ${k} ${"word ".repeat(8)}`).join("\n\n")
      const docs = Array.from({ length: 40 }, (_, i) => Either.right(doc(`d${i}.txt`, text(i))))
      const summary = yield* Ingest.ingestStream(Stream.fromIterable(docs), {
        chunker: { chunkSize: 60, chunkOverlap: 0 },
        maxErrorRate: 0.2,
        minSamples: 12,
        concurrency: 1,
        batchSize: 1,
        retry: { ...Retry.defaultPolicy, maxRetries: 0 }
      }).pipe(Effect.provide(Layer.merge(data(), flaky)), Effect.provide(ledgerLayer))
      assert.strictEqual(summary.outcome, "broken")
      const breaker = summary.breaker!
      assert.strictEqual(breaker.total, 12)
      assert.strictEqual(summary.chunks.written + summary.chunks.failed, breaker.total)
      assert.strictEqual(summary.chunks.failed, breaker.errors)
      const stored = yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const [counts] = yield* sql<{ chunks: number; failures: number; incomplete: number }>`
          SELECT (SELECT count(*)::int FROM chunks) AS chunks, (SELECT count(*)::int FROM failures) AS failures,
                 (SELECT count(*)::int FROM documents WHERE NOT complete) AS incomplete`
        return counts!
      }).pipe(Effect.provide(data()), Effect.provide(ledgerLayer))
      assert.strictEqual(stored.chunks, summary.chunks.written)
      assert.strictEqual(stored.failures, summary.chunks.failed)
      // 12 chunks of 5-chunk documents: the third document was cut short; none of the three is up to date
      assert.strictEqual(stored.incomplete, 3)
      assert.strictEqual(summary.files.ingested, 0)
    }))

  it.scopedLive("a request refused as a whole is not split down to every input", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      let requests = 0
      const refusing = Embedder.layerTest({
        model: "refusing",
        dimensions: 8,
        maxBatchSize: 64,
        embedBatch: () =>
          Effect.suspend(() => {
            requests++
            return Effect.fail(new EmbedError({ reason: "http", status: 400, message: "unknown model 'x'" }))
          })
      })
      const docs = Array.from({ length: 32 }, (_, i) => Either.right(doc(`d${i}.txt`, `document ${i}`)))
      const summary = yield* Ingest.ingestStream(Stream.fromIterable(docs), {
        batchSize: 32,
        maxErrorRate: 1
      }).pipe(Effect.provide(Layer.merge(data(), refusing)), Effect.provide(ledgerLayer))
      assert.strictEqual(summary.chunks.failed, 32)
      // the batch, then its two halves: both fail alike, so no further split (not 63 requests)
      assert.strictEqual(requests, 3)
    }))

  it.scopedLive("transient embedding failures are retried; a fatal one is not, and its document is kept for later", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      const hashing = yield* Effect.provide(Embedder.Embedder, Embedder.layerHashing({ dimensions: 32 }))
      const attempts = new Map<string, number>()
      const embedder = Embedder.layerTest({
        ...hashing,
        embedBatch: (texts) =>
          Effect.suspend(() => {
            const key = texts.join("|")
            const n = (attempts.get(key) ?? 0) + 1
            attempts.set(key, n)
            if (key.includes("flaky") && n <= 2) {
              return Effect.fail(new EmbedError({ reason: "http", status: 503, message: "busy" }))
            }
            if (key.includes("broken")) {
              return Effect.fail(new EmbedError({ reason: "http", status: 400, message: "bad request" }))
            }
            return hashing.embedBatch(texts)
          })
      })
      const summary = yield* Ingest.ingestStream(
        Stream.make(Either.right(doc("flaky.txt", "flaky words")), Either.right(doc("broken.txt", "broken words"))),
        {
          retry: { maxRetries: 3, base: "1 millis", cap: "4 millis", jitter: "none" },
          maxErrorRate: 1,
          batchSize: 1
        }
      ).pipe(Effect.provide(Layer.mergeAll(data(), embedder).pipe(Layer.provideMerge(ledgerLayer))))
      assert.strictEqual(attempts.get("flaky words"), 3)
      assert.strictEqual(attempts.get("broken words"), 1)
      assert.strictEqual(summary.files.ingested, 1)
      assert.strictEqual(summary.chunks.written, 1)
      assert.strictEqual(summary.chunks.failed, 1)
      assert.strictEqual(summary.outcome, "completed")
    }))

  it.scopedLive("an embedding cache answers repeated chunks and reports them as cached", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      const summary = yield* Ingest.ingestStream(
        Stream.make(
          Either.right(doc("a.txt", "the same words in two files")),
          Either.right(doc("b.txt", "the same words in two files")),
          Either.right(doc("c.txt", "different words"))
        ),
        { cache: { maxEntries: 100 }, batchSize: 1, concurrency: 1 }
      ).pipe(Effect.provide(withHashing(data)))
      assert.strictEqual(summary.chunks.written, 3)
      assert.strictEqual(summary.chunks.cached, 1)
    }))

  it.scopedLive("stop: no new documents are read, in-flight ones commit, nothing is removed", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      const stop = yield* Deferred.make<void>()
      const docs = Array.from({ length: 200 }, (_, i) => doc(`d${i}.txt`, `document ${i} words`))
      const source = Stream.fromIterable(docs).pipe(
        Stream.map(Either.right),
        Stream.tap((item) =>
          Either.isRight(item) && item.right.path === "d50.txt" ? Deferred.succeed(stop, undefined) : Effect.void
        )
      )
      yield* Effect.gen(function*() {
        yield* Ingest.ingestStream(Stream.make(Either.right(doc("old.txt", "kept"))))
        const summary = yield* Ingest.ingestStream(source, { stop: Deferred.await(stop), lookupBatchSize: 8 })
        assert.strictEqual(summary.outcome, "stopped")
        assert.isBelow(summary.files.seen, 200)
        assert.strictEqual(summary.files.removed, 0)
        const paths = yield* storedPaths
        assert.include(paths, "old.txt")
        assert.strictEqual(paths.length, summary.files.ingested + 1)
        assert.deepStrictEqual(yield* partialDocuments, [])
      }).pipe(
        Effect.provide(withHashing(data))
      )
    }))

  it.scopedLive("interrupted at random points of any stage: every resource is released, no document is partial", () =>
    Effect.gen(function*() {
      const work = yield* tempDir()
      const data = yield* backend.fresh
      copyCorpus(work)
      const hashing = yield* Effect.provide(Embedder.Embedder, Embedder.layerHashing())
      // One shared store. A run is interrupted when it reaches its k-th step: a
      // lookup, a claim of unchanged files, a stamp, a write (while it is in
      // flight) or an embedding call.
      const interruptAt = (k: number) =>
        Effect.gen(function*() {
          const reached = yield* Deferred.make<void>()
          let steps = 0
          const step = Effect.suspend(() => ++steps === k ? Deferred.succeed(reached, undefined) : Effect.void)
          const embedder = Embedder.layerTest({
            ...hashing,
            embedBatch: (texts) => Effect.zipRight(step, hashing.embedBatch(texts))
          })
          const counted = Layer.effect(
            VectorStore.VectorStore,
            Effect.map(VectorStore.VectorStore, (store): VectorStore.Service => ({
              ...store,
              lookup: (paths) => Effect.zipRight(step, store.lookup(paths)),
              claimUnchanged: (runId, files, settings) =>
                Effect.zipRight(step, store.claimUnchanged(runId, files, settings)),
              markSeen: (runId, paths, fingerprints) => Effect.zipRight(step, store.markSeen(runId, paths, fingerprints)),
              writeDocuments: (writes) => Effect.zipRight(step, store.writeDocuments(writes))
            }))
          ).pipe(Layer.provideMerge(data()))
          const ledger = yield* ResourceLedger.make()
          const run = Ingest.ingestDirectory({ root: work }, {
            chunker: { chunkSize: 300, chunkOverlap: 30 },
            batchSize: 8,
            lookupBatchSize: 8,
            writeGroupChunks: 40
          }).pipe(
            Effect.provide(Layer.merge(counted, embedder)),
            Effect.provideService(ResourceLedger.ResourceLedger, ledger)
          )
          const fiber = yield* Effect.fork(run)
          yield* Effect.raceFirst(Deferred.await(reached), Fiber.await(fiber))
          yield* Fiber.interrupt(fiber)
          const snapshot = yield* ledger.snapshot
          assert.strictEqual(snapshot.total.open, 0, `open after interrupting at step ${k}`)
          assert.isAbove(snapshot.total.acquired, 0)
          const partial = yield* partialDocuments.pipe(
            Effect.provide(data()),
            Effect.provideService(ResourceLedger.ResourceLedger, ledger)
          )
          assert.deepStrictEqual(partial, [], `partial documents after interrupting at step ${k}`)
        })
      yield* Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(fc.integer({ min: 1, max: 120 }), (k) => Effect.runPromise(interruptAt(k))),
          { numRuns: 10, seed: 42 }
        )
      )
    }), 120_000)
})

describe("Ingest with in-memory services", () => {
  it.scoped("--rpm: embedding requests wait for the shared rate limit (TestClock)", () =>
    Effect.gen(function*() {
      const hashing = makeHashingEmbedder({ dimensions: 16 })
      const callTimes: Array<number> = []
      const counting = Embedder.layerTest({
        ...hashing,
        embedBatch: (texts) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) => {
            callTimes.push(now)
            return hashing.embedBatch(texts)
          })
      })
      const docs = Array.from({ length: 5 }, (_, i) => Either.right(doc(`r${i}.txt`, `rate limited document ${i}`)))
      const fiber = yield* Ingest.ingestStream(Stream.fromIterable(docs), {
        batchSize: 1,
        concurrency: 4,
        rpm: 2
      }).pipe(Effect.provide(Layer.merge(MemoryVectorStore.layer, counting)), Effect.fork)
      // simulated time only: 5 s steps until every request was made
      for (let step = 0; step < 30 && callTimes.length < 5; step++) yield* TestClock.adjust("5 seconds")
      const summary = yield* Fiber.join(fiber)
      assert.strictEqual(summary.chunks.written, 5)
      // a bucket of 2 per minute: two at once, then one every 30 s
      assert.deepStrictEqual(callTimes.map((t) => t - callTimes[0]!), [0, 0, 30_000, 60_000, 90_000])
    }))

  it.scoped("an ingest uses the call breaker of its context", () =>
    Effect.gen(function*() {
      let calls = 0
      const counting = Embedder.layerTest({
        ...makeHashingEmbedder({ dimensions: 16 }),
        embedBatch: () =>
          Effect.sync(() => {
            calls++
            return []
          })
      })
      const summary = yield* Ingest.ingestStream(
        Stream.make(Either.right(doc("a.txt", "alpha")), Either.right(doc("b.txt", "bravo"))),
        { maxErrorRate: 1 }
      ).pipe(
        Effect.provide(Layer.mergeAll(MemoryVectorStore.layer, counting, CircuitBreaker.layerTest({ initial: "forced-open" })))
      )
      // the breaker given refused every call: the embedder was never reached
      assert.strictEqual(calls, 0)
      assert.strictEqual(summary.chunks.failed, 2)
      assert.strictEqual(summary.chunks.written, 0)
    }))

  it.effect("a source's own reports of unchanged files keep their documents through removal", () =>
    Effect.gen(function*() {
      const store = yield* VectorStore.VectorStore
      const first = yield* Ingest.ingestStream(
        Stream.make(Either.right(doc("kept.txt", "kept text")), Either.right(doc("gone.txt", "gone text")))
      )
      assert.strictEqual(first.files.ingested, 2)
      // not claimed through the store: the run lists it seen itself
      const second = yield* Ingest.ingestStream(
        Stream.make(Either.left({ path: "kept.txt", reason: "unchanged" as const, detail: "the source says so" }))
      )
      assert.deepStrictEqual(second.files, { seen: 1, ingested: 0, unchanged: 1, skipped: 0, removed: 1 })
      assert.deepStrictEqual([...(yield* store.lookup(["kept.txt", "gone.txt"])).keys()], ["kept.txt"])
    }).pipe(Effect.provide(Layer.merge(MemoryVectorStore.layer, Embedder.layerHashing({ dimensions: 16 })))))

  it.effect("stored documents are looked up only when one may be up to date", () =>
    Effect.gen(function*() {
      const store = yield* MemoryVectorStore.make
      const looked: Array<ReadonlyArray<string>> = []
      const counted = Layer.succeed(VectorStore.VectorStore, {
        ...store,
        lookup: (paths) => Effect.zipRight(Effect.sync(() => void looked.push(paths)), store.lookup(paths))
      })
      const docs = Stream.make(Either.right(doc("a.txt", "alpha text")), Either.right(doc("b.txt", "bravo text")))
      const run = (options: Ingest.Options) =>
        Ingest.ingestStream(docs, options).pipe(
          Effect.provide(Layer.merge(counted, Embedder.layerHashing({ dimensions: 16 })))
        )
      // an empty store: nothing can be up to date, nothing is looked up
      assert.strictEqual((yield* run({})).files.ingested, 2)
      assert.deepStrictEqual(looked, [])
      // stored complete with these settings: looked up, and found unchanged
      assert.strictEqual((yield* run({})).files.unchanged, 2)
      assert.deepStrictEqual(looked, [["a.txt", "b.txt"]])
      // other chunker settings: no stored document is complete with them, all are rewritten unasked
      const rechunked = yield* run({ chunker: { chunkSize: 500, chunkOverlap: 50 } })
      assert.strictEqual(rechunked.files.ingested, 2)
      assert.strictEqual(looked.length, 1)
      // --rehash with the settings they were stored with: looked up, nothing rewritten
      const rehashed = yield* run({ chunker: { chunkSize: 500, chunkOverlap: 50 }, rehash: true })
      assert.deepStrictEqual(rehashed.files, { seen: 2, ingested: 0, unchanged: 2, skipped: 0, removed: 0 })
      assert.strictEqual(looked.length, 2)
    }))
})

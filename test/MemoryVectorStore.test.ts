import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as Chunker from "../src/Chunker.js"
import type { EmbeddedChunk, SourceDocument } from "../src/Domain.js"
import * as Embedder from "../src/Embedder.js"
import { EmbedError } from "../src/Errors.js"
import * as Ingest from "../src/Ingest.js"
import * as MemoryVectorStore from "../src/MemoryVectorStore.js"
import * as Search from "../src/Search.js"
import * as VectorStore from "../src/VectorStore.js"
import { backends, ledgerLayer } from "./support.js"

const doc = (path: string, text: string): SourceDocument => ({
  path,
  text,
  contentHash: Chunker.chunkId(path, 0, text),
  size: Buffer.byteLength(text),
  format: path.endsWith(".md") ? "markdown" : "text"
})

const source = (...docs: ReadonlyArray<SourceDocument>) => Stream.fromIterable(docs.map((d) => Either.right(d)))

const corpus = [
  doc("animals/zebra.md", "# Animals\n\n## Zebras\n\nZebras have black and white stripes and graze on the savanna.\n"),
  doc("fruit/apples.md", "# Fruit\n\nApples grow in orchards; the harvest is pressed into cider in autumn.\n"),
  doc("space/mars.txt", "Mars is the red planet. Its dusty surface is cold, and its two moons are small.\n")
]

const hashing = Embedder.layerHashing()
const inMemory = Layer.merge(MemoryVectorStore.layer, hashing)

/** A hand-made embedded chunk, for the tests that drive the store directly. */
const chunk = (
  path: string,
  index: number,
  text: string,
  vector: ReadonlyArray<number>,
  heading: ReadonlyArray<string> = []
): EmbeddedChunk => ({
  chunk: {
    id: Chunker.chunkId(path, index, text),
    documentPath: path,
    index,
    text,
    headingPath: heading,
    tokenEstimate: Chunker.estimateTokens(text)
  },
  embedding: Float32Array.from(vector)
})

const write = (
  path: string,
  runId: string,
  chunks: ReadonlyArray<EmbeddedChunk>,
  failures: ReadonlyArray<VectorStore.FailureWrite> = []
): VectorStore.DocumentWrite => ({
  document: doc(path, chunks.map((c) => c.chunk.text).join("\n")),
  chunker: "test",
  model: "test-model",
  dimensions: 3,
  chunks,
  failures,
  runId
})

describe("MemoryVectorStore with Ingest", () => {
  it.effect("ingested documents are found by search, with rank, score and heading path", () =>
    Effect.gen(function*() {
      const summary = yield* Ingest.ingestStream(source(...corpus))
      assert.strictEqual(summary.outcome, "completed")
      assert.strictEqual(summary.files.ingested, 3)
      assert.strictEqual(summary.chunks.failed, 0)

      const zebra = yield* Search.search("black and white stripes", { limit: 3 })
      assert.strictEqual(zebra[0]?.path, "animals/zebra.md")
      assert.strictEqual(zebra[0]?.rank, 1)
      assert.strictEqual(zebra[0]?.heading, "Animals > Zebras")
      assert.deepStrictEqual(zebra.map((h) => h.rank), [1, 2, 3])
      assert.isTrue(zebra[0]!.score > zebra[1]!.score)
      assert.strictEqual((yield* Search.search("red planet moons", { limit: 1 }))[0]?.path, "space/mars.txt")
      assert.strictEqual((yield* Search.search("cider orchards", { limit: 1 }))[0]?.path, "fruit/apples.md")

      const store = yield* VectorStore.VectorStore
      const stats = yield* store.stats
      const embedder = yield* Embedder.Embedder
      assert.deepStrictEqual(
        { ...stats, storeBytes: 0 },
        {
          documents: 3,
          chunks: summary.chunks.written,
          dimensions: 384,
          model: embedder.model,
          models: { [embedder.model]: 3 },
          storeBytes: 0
        }
      )
      // the estimate: text bytes + 4 bytes per dimension, per chunk
      const chunks = corpus.flatMap((d) => Chunker.chunkDocument(d, Chunker.defaults))
      assert.strictEqual(
        stats.storeBytes,
        chunks.reduce((n, c) => n + Buffer.byteLength(c.text) + 4 * 384, 0)
      )
    }).pipe(Effect.provide(inMemory)))

  it.effect("an unchanged re-run writes nothing", () =>
    Effect.gen(function*() {
      const writes: Array<number> = []
      const counting = Layer.effect(
        VectorStore.VectorStore,
        Effect.map(MemoryVectorStore.make, (store): VectorStore.Service => ({
          ...store,
          writeDocuments: (batch) =>
            Effect.zipRight(Effect.sync(() => writes.push(batch.length)), store.writeDocuments(batch))
        }))
      )
      yield* Effect.gen(function*() {
        const first = yield* Ingest.ingestStream(source(...corpus))
        assert.strictEqual(first.files.ingested, 3)
        assert.isAbove(writes.length, 0)
        writes.length = 0
        const second = yield* Ingest.ingestStream(source(...corpus))
        assert.deepStrictEqual(second.files, { seen: 3, ingested: 0, unchanged: 3, skipped: 0, removed: 0 })
        assert.strictEqual(second.chunks.written, 0)
        assert.deepStrictEqual(writes, [])
      }).pipe(Effect.provide(Layer.merge(counting, hashing)))
    }))

  it.effect("documents missing from a clean run are removed", () =>
    Effect.gen(function*() {
      const store = yield* VectorStore.VectorStore
      yield* Ingest.ingestStream(source(...corpus))
      // a run that may not remove leaves everything in place
      const kept = yield* Ingest.ingestStream(source(corpus[0]!), { removeMissing: false })
      assert.strictEqual(kept.files.removed, 0)
      assert.strictEqual((yield* store.stats).documents, 3)

      const run = yield* Ingest.ingestStream(source(corpus[0]!, corpus[2]!))
      assert.strictEqual(run.files.removed, 1)
      assert.strictEqual(run.files.unchanged, 2)
      const found = yield* store.lookup(corpus.map((d) => d.path))
      assert.deepStrictEqual([...found.keys()].sort(), ["animals/zebra.md", "space/mars.txt"])
      assert.strictEqual((yield* store.stats).documents, 2)
      const hits = yield* Search.search("apples cider orchards", { limit: 10 })
      assert.notInclude(hits.map((h) => h.path), "fruit/apples.md")
    }).pipe(Effect.provide(inMemory)))

  it.effect("an embedder of other dimensions is refused with dimension-mismatch", () =>
    Effect.gen(function*() {
      const store = yield* MemoryVectorStore.make
      const withStore = Effect.provideService(VectorStore.VectorStore, store)
      const small = yield* Effect.provide(Embedder.Embedder, Embedder.layerHashing({ dimensions: 32 }))
      yield* Ingest.ingestStream(source(...corpus)).pipe(
        withStore,
        Effect.provide(Embedder.layerHashing({ dimensions: 32 }))
      )

      const error = yield* Ingest.ingestStream(source(...corpus)).pipe(withStore, Effect.provide(hashing), Effect.flip)
      assert.strictEqual(error._tag, "StoreError")
      assert.strictEqual(error._tag === "StoreError" ? error.reason : undefined, "dimension-mismatch")
      assert.strictEqual(
        error.message,
        `this store holds 32-dimensional embeddings (model ${small.model}) but the embedder produces 384 ` +
          `dimensions (model ${small.model}); run again with --dimensions 32, or use a new --data-dir to build a ` +
          `separate store with the new setting`
      )
      // the same dimensions are accepted again, and nothing was changed by the refused run
      yield* store.prepare({ model: "other", dimensions: 32 })
      assert.strictEqual((yield* store.stats).documents, 3)
      assert.strictEqual((yield* store.stats).model, "other")
    }))

  it.effect("failed chunks are recorded with their attempts, and cleared once the document is embedded", () =>
    Effect.gen(function*() {
      const hashed = yield* Effect.provide(Embedder.Embedder, Embedder.layerHashing({ dimensions: 64 }))
      const failing = Embedder.layerTest({
        ...hashed,
        embedBatch: (texts) =>
          texts.some((t) => t.includes("poison"))
            ? Effect.fail(new EmbedError({ reason: "http", status: 503, message: "service unavailable" }))
            : hashed.embedBatch(texts)
      })
      const options: Ingest.Options = {
        batchSize: 1,
        retry: { maxRetries: 0, base: "1 millis", cap: "1 millis", jitter: "none" },
        maxErrorRate: 1
      }
      const store = yield* MemoryVectorStore.make
      const run = (...docs: ReadonlyArray<SourceDocument>) =>
        Ingest.ingestStream(source(...docs), options).pipe(
          Effect.provideService(VectorStore.VectorStore, store),
          Effect.provide(failing)
        )
      const ok = doc("ok.txt", "fine words")
      const bad = doc("bad.txt", "poison words")

      const first = yield* run(ok, bad)
      assert.strictEqual(first.files.ingested, 1)
      assert.strictEqual(first.chunks.failed, 1)
      assert.deepStrictEqual(yield* store.failures(100), [{
        path: "bad.txt",
        chunkIndex: 0,
        kind: "http-503",
        message: "service unavailable",
        attempts: 1,
        firstSeen: "1970-01-01T00:00:00Z",
        lastSeen: "1970-01-01T00:00:00Z"
      }])
      assert.strictEqual((yield* store.lookup(["bad.txt"])).get("bad.txt")?.complete, false)

      // an incomplete document is tried again: the attempts add up, first seen stays
      yield* TestClock.adjust("90 seconds")
      const second = yield* run(ok, bad)
      assert.strictEqual(second.files.unchanged, 1)
      assert.strictEqual(second.chunks.failed, 1)
      const [row] = yield* store.failures(100)
      assert.deepStrictEqual(
        [row?.attempts, row?.firstSeen, row?.lastSeen],
        [2, "1970-01-01T00:00:00Z", "1970-01-01T00:01:30Z"]
      )

      const third = yield* run(ok, doc("bad.txt", "cured words"))
      assert.strictEqual(third.files.ingested, 1)
      assert.deepStrictEqual(yield* store.failures(100), [])
      assert.strictEqual((yield* store.lookup(["bad.txt"])).get("bad.txt")?.complete, true)
    }))
})

describe("MemoryVectorStore directly", () => {
  it.scoped("writes are all or nothing, and the last write of a path wins", () =>
    Effect.gen(function*() {
      const store = yield* MemoryVectorStore.make
      yield* store.prepare({ model: "test-model", dimensions: 3 })
      const run = yield* store.beginRun
      yield* store.writeDocuments([
        write("a.txt", run, [chunk("a.txt", 0, "first", [1, 0, 0])]),
        write("a.txt", run, [chunk("a.txt", 0, "second", [0, 1, 0]), chunk("a.txt", 1, "third", [0, 0, 1])])
      ])
      const hits = yield* store.search(new Float32Array([1, 0, 0]), 5)
      assert.deepStrictEqual(hits.map((h) => h.text), ["second", "third"])

      // a vector of the wrong dimension fails the whole call: b.txt is not written either
      const error = yield* store.writeDocuments([
        write("b.txt", run, [chunk("b.txt", 0, "fine", [1, 1, 1])]),
        write("c.txt", run, [chunk("c.txt", 0, "wrong", [1, 1])])
      ]).pipe(Effect.flip)
      assert.strictEqual(error.reason, "query")
      assert.match(error.message, /^writing 2 documents failed: expected 3 dimensions, not 2/)
      assert.strictEqual((yield* store.lookup(["b.txt", "c.txt"])).size, 0)
      assert.strictEqual((yield* store.stats).chunks, 2)
    }))

  it.scoped("search orders by similarity, then path, then chunk index", () =>
    Effect.gen(function*() {
      const store = yield* MemoryVectorStore.make
      yield* store.prepare({ model: "test-model", dimensions: 3 })
      const run = yield* store.beginRun
      yield* store.writeDocuments([
        write("b.txt", run, [chunk("b.txt", 0, "b0", [1, 0, 0]), chunk("b.txt", 1, "b1", [2, 0, 0], ["Top", "Sub"])]),
        write("a.txt", run, [chunk("a.txt", 0, "a0", [0, 1, 0]), chunk("a.txt", 1, "a1", [3, 0, 0])]),
        write("c.txt", run, [chunk("c.txt", 0, "c0", [-1, 0, 0])])
      ])
      const hits = yield* store.search(new Float32Array([1, 0, 0]), 10)
      assert.deepStrictEqual(hits.map((h) => [h.rank, h.path, h.chunkIndex, h.score]), [
        [1, "a.txt", 1, 1],
        [2, "b.txt", 0, 1],
        [3, "b.txt", 1, 1],
        [4, "a.txt", 0, 0],
        [5, "c.txt", 0, -1]
      ])
      assert.strictEqual(hits[2]?.heading, "Top > Sub")
      assert.strictEqual(hits[0]?.heading, "")
      assert.strictEqual((yield* store.search(new Float32Array([1, 0, 0]), 2)).length, 2)
    }))

  it.scoped("failures are listed by path and chunk index, up to the limit; removal drops them with the document", () =>
    Effect.gen(function*() {
      const store = yield* MemoryVectorStore.make
      const firstRun = yield* Scope.make()
      const run = yield* Scope.extend(store.beginRun, firstRun)
      const failure = (chunkIndex: number): VectorStore.FailureWrite => ({
        chunkIndex,
        kind: "timeout",
        message: "slow",
        attempts: 3
      })
      yield* store.writeDocuments([
        write("z.txt", run, [], [failure(2), failure(0)]),
        write("m.txt", run, [], [failure(1)])
      ])
      assert.deepStrictEqual((yield* store.failures(10)).map((f) => [f.path, f.chunkIndex]), [
        ["m.txt", 1],
        ["z.txt", 0],
        ["z.txt", 2]
      ])
      assert.strictEqual((yield* store.failures(2)).length, 2)

      // a second run cannot begin while the first holds the store
      const refused = yield* Effect.flip(Effect.scoped(store.beginRun))
      assert.strictEqual(refused.reason, "locked")
      yield* Scope.close(firstRun, Exit.void)
      const next = yield* store.beginRun
      assert.notStrictEqual(next, run)
      yield* store.markSeen(next, ["m.txt"])
      assert.strictEqual(yield* store.removeUnseen(next), 1)
      assert.deepStrictEqual((yield* store.failures(10)).map((f) => f.path), ["m.txt"])
      assert.strictEqual(yield* store.removeUnseen(next), 0)
    }))

  it.effect("createIndex needs dimensions, then builds once", () =>
    Effect.gen(function*() {
      const store = yield* MemoryVectorStore.make
      assert.strictEqual((yield* Effect.flip(store.createIndex)).reason, "query")
      yield* store.prepare({ model: "m", dimensions: 3 })
      assert.isTrue((yield* store.createIndex).created)
      assert.isFalse((yield* store.createIndex).created)
    }))
})

describe.each(backends)("MemoryVectorStore agrees with the store on $name", (backend) => {
  it.scopedLive("claimUnchanged: files stored completely with that fingerprint and these settings, listed seen; hasComplete", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      const odd = "dir/we\"ird\\ name\n✓ 'quoted'.txt"
      const settings = { chunker: "test", model: "test-model", dimensions: 3 }
      const stored = (path: string, runId: string, fingerprint: string | undefined, failed = false) => {
        const base = write(path, runId, [chunk(path, 0, `text of ${path}`, [1, 0, 0])], [])
        return {
          ...base,
          document: fingerprint === undefined ? base.document : { ...base.document, fingerprint },
          ...(failed ? { failures: [{ chunkIndex: 1, kind: "timeout", message: "slow", attempts: 2 }] } : {})
        }
      }
      const observe = Effect.gen(function*() {
        const store = yield* VectorStore.VectorStore
        yield* store.prepare({ model: "test-model", dimensions: 3 })
        const completeWhenEmpty = yield* store.hasComplete(settings)
        yield* Effect.scoped(Effect.flatMap(store.beginRun, (run) =>
          store.writeDocuments([
            stored("a.txt", run, "fp-a"),
            stored(odd, run, "fp-odd"),
            stored("incomplete.txt", run, "fp-i", true),
            { ...stored("other-chunker.txt", run, "fp-c"), chunker: "other" },
            { ...stored("incomplete-lone.txt", run, "fp-l", true), model: "lone-model" },
            stored("no-fingerprint.txt", run, undefined),
            stored("changed.txt", run, "fp-before")
          ])))
        // some document complete with exactly these settings
        const complete = [
          completeWhenEmpty,
          yield* store.hasComplete(settings),
          yield* store.hasComplete({ ...settings, chunker: "other" }),
          yield* store.hasComplete({ ...settings, model: "lone-model" }),
          yield* store.hasComplete({ ...settings, model: "other" }),
          yield* store.hasComplete({ ...settings, dimensions: 4 })
        ]
        return yield* Effect.scoped(Effect.gen(function*() {
          const run = yield* store.beginRun
          const claim = (files: ReadonlyArray<VectorStore.FileState>, with_ = settings) =>
            Effect.map(store.claimUnchanged(run, files, with_), (paths) => [...paths].sort())
          const otherModel = yield* claim([{ path: "a.txt", fingerprint: "fp-a" }], { ...settings, model: "other" })
          const otherDimensions = yield* claim([{ path: "a.txt", fingerprint: "fp-a" }], { ...settings, dimensions: 4 })
          const none = yield* claim([])
          const claimed = yield* claim([
            { path: "a.txt", fingerprint: "fp-a" },
            { path: odd, fingerprint: "fp-odd" },
            { path: "incomplete.txt", fingerprint: "fp-i" },
            { path: "other-chunker.txt", fingerprint: "fp-c" },
            { path: "no-fingerprint.txt", fingerprint: "fp-n" },
            { path: "changed.txt", fingerprint: "fp-after" },
            { path: "absent.txt", fingerprint: "fp-x" }
          ])
          const removed = yield* store.removeUnseen(run)
          const left = [...(yield* store.lookup([odd, "a.txt", "incomplete.txt", "changed.txt"])).keys()].sort()
          return { complete, otherModel, otherDimensions, none, claimed, removed, left }
        }))
      })
      const memory = yield* observe.pipe(Effect.provide(MemoryVectorStore.layer))
      const postgres = yield* observe.pipe(Effect.provide(data().pipe(Layer.provideMerge(ledgerLayer))))
      assert.deepStrictEqual(memory, {
        complete: [false, true, true, false, false, false],
        otherModel: [],
        otherDimensions: [],
        none: [],
        claimed: ["a.txt", odd].sort(),
        // only what was claimed was seen by the run
        removed: 5,
        left: ["a.txt", odd].sort()
      })
      assert.deepStrictEqual(postgres, memory)
    }))

  it.scopedLive("same runs, same lookups, search results, failures, stats and checksum", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      const hashed = yield* Effect.provide(Embedder.Embedder, Embedder.layerHashing({ dimensions: 48 }))
      const failing = Embedder.layerTest({
        ...hashed,
        embedBatch: (texts) =>
          texts.some((t) => t.includes("poison"))
            ? Effect.fail(new EmbedError({ reason: "http", status: 500, message: "boom" }))
            : hashed.embedBatch(texts)
      })
      const options: Ingest.Options = {
        // one chunk per request: which chunks fail does not depend on timing
        batchSize: 1,
        retry: { maxRetries: 1, base: "1 millis", cap: "1 millis", jitter: "none" },
        maxErrorRate: 1,
        chunker: { chunkSize: 120, chunkOverlap: 20 }
      }
      const long = Array.from({ length: 12 }, (_, i) => `Paragraph ${i} about parcel ${i * 7} and depot ${i % 3}.`)
      const first = [
        ...corpus,
        doc("dup/one.txt", "identical twins share the same text"),
        doc("dup/two.txt", "identical twins share the same text"),
        doc("long.md", `# Long\n\n${long.join("\n\n")}\n\n## Tail\n\npoison pill here\n`),
        doc("empty.txt", "   "),
        // names whose UTF-16 order is not the store's (U+FFFD before U+1F600 in UTF-8)
        doc("names/\uFFFD.txt", "a replacement character"),
        doc("names/\u{1F600}.txt", "an astral name")
      ]
      const second = [...first.filter((d) => d.path !== "fruit/apples.md"), doc("space/mars.txt", "Mars changed.")]

      const observe = Effect.gen(function*() {
        const store = yield* VectorStore.VectorStore
        const runs = []
        for (const docs of [first, second]) {
          const summary = yield* Ingest.ingestStream(source(...docs), options)
          runs.push({ ...summary, durationMs: 0 })
        }
        const hits = yield* Effect.forEach(
          ["identical twins", "parcel depot", "red planet", "zebra"],
          (q) => Search.search(q, { limit: 6 })
        )
        const stats = yield* store.stats
        return {
          runs,
          lookup: [...(yield* store.lookup(first.map((d) => d.path))).values()]
            .sort((a, b) => a.path < b.path ? -1 : 1),
          hits: hits.map((list) => list.map((h) => ({ ...h, score: Math.round(h.score * 1e4) / 1e4 }))),
          failures: (yield* store.failures(100)).map(({ firstSeen: _f, lastSeen: _l, ...rest }) => rest),
          stats: { ...stats, storeBytes: 0 },
          checksum: yield* store.checksum
        }
      })

      const memory = yield* observe.pipe(Effect.provide(Layer.merge(MemoryVectorStore.layer, failing)))
      const postgres = yield* observe.pipe(
        Effect.provide(Layer.merge(data(), failing).pipe(Layer.provideMerge(ledgerLayer)))
      )
      assert.isAbove(memory.failures.length, 0)
      assert.strictEqual(memory.runs[1]?.files.removed, 1)
      assert.deepStrictEqual(memory, postgres)
    }))
})

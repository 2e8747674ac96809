import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { createHash } from "node:crypto"
import type { Embedding } from "../src/Domain.js"
import * as Embedder from "../src/Embedder.js"
import * as EmbeddingCache from "../src/EmbeddingCache.js"
import { EmbedError } from "../src/Errors.js"
import * as LruCache from "../src/LruCache.js"

let nameCounter = 0
const uniqueName = () => `embedding-cache-test-${++nameCounter}`

/** a deterministic vector for a text, distinct per model */
const vectorOf = (text: string, dimensions: number, model = "fake"): Embedding => {
  const digest = createHash("sha256").update(`${model}\0${text}`).digest()
  return Float32Array.from({ length: dimensions }, (_, i) => digest[i % digest.length] / 255)
}

/** let forked fibers run until `check` holds (no real time passes) */
const waitUntil = (check: () => boolean, what: string): Effect.Effect<void> =>
  Effect.gen(function*() {
    for (let i = 0; i < 10_000; i++) {
      if (check()) return
      yield* Effect.yieldNow()
    }
    return yield* Effect.dieMessage(`${what} never happened`)
  })

const waitUntilStats = (
  stats: Effect.Effect<LruCache.Stats>,
  check: (stats: LruCache.Stats) => boolean,
  what: string
): Effect.Effect<void> =>
  Effect.gen(function*() {
    for (let i = 0; i < 10_000; i++) {
      if (check(yield* stats)) return
      yield* Effect.yieldNow()
    }
    return yield* Effect.dieMessage(`${what} never happened`)
  })

interface Fake {
  readonly service: Embedder.Service
  /** the texts of every underlying call, in call order */
  readonly calls: Array<ReadonlyArray<string>>
  readonly interrupted: Array<number>
}

/**
 * A counting fake embedder. `before(call)` runs before call number `call`
 * (0-based) answers: block it on a Deferred, or fail it.
 */
const fakeEmbedder = (
  options: {
    readonly model?: string
    readonly dimensions?: number
    readonly before?: (call: number) => Effect.Effect<void, EmbedError>
    readonly answer?: (texts: ReadonlyArray<string>) => ReadonlyArray<Embedding>
  } = {}
): Fake => {
  const model = options.model ?? "fake"
  const dimensions = options.dimensions ?? 8
  const calls: Array<ReadonlyArray<string>> = []
  const interrupted: Array<number> = []
  const service: Embedder.Service = {
    model,
    dimensions,
    maxBatchSize: 64,
    embedBatch: (texts) =>
      Effect.suspend(() => {
        const call = calls.push([...texts]) - 1
        return (options.before?.(call) ?? Effect.void).pipe(
          Effect.map(() => options.answer?.(texts) ?? texts.map((text) => vectorOf(text, dimensions, model))),
          Effect.onInterrupt(() => Effect.sync(() => interrupted.push(call)))
        )
      })
  }
  return { service, calls, interrupted }
}

const assertVectors = (actual: ReadonlyArray<Embedding>, texts: ReadonlyArray<string>, dimensions = 8) => {
  assert.strictEqual(actual.length, texts.length)
  actual.forEach((vector, i) => assert.deepStrictEqual(vector, vectorOf(texts[i], dimensions), `vector ${i}`))
}

describe("EmbeddingCache", () => {
  it("keys carry the model, the dimensions and the sha256 of the text", () => {
    const hash = createHash("sha256").update("hello", "utf8").digest("hex")
    assert.strictEqual(EmbeddingCache.keyOf("m", 384, "hello"), `m:384:${hash}`)
    const keys = new Set([
      EmbeddingCache.keyOf("m", 384, "hello"),
      EmbeddingCache.keyOf("n", 384, "hello"),
      EmbeddingCache.keyOf("m", 768, "hello"),
      EmbeddingCache.keyOf("m", 384, "hello!")
    ])
    assert.strictEqual(keys.size, 4)
    assert.strictEqual(EmbeddingCache.entrySize(new Float32Array(4), "abc"), 16 + 3)
  })

  it.scoped("a repeated batch makes no underlying call and returns the same vectors", () =>
    Effect.gen(function*() {
      const fake = fakeEmbedder()
      const { embedder, stats } = yield* EmbeddingCache.cached(fake.service, { name: uniqueName() })
      assert.strictEqual(embedder.model, "fake")
      assert.strictEqual(embedder.dimensions, 8)
      assert.strictEqual(embedder.maxBatchSize, 64)
      const texts = ["alpha", "beta", "gamma"]
      const first = yield* embedder.embedBatch(texts)
      const second = yield* embedder.embedBatch(texts)
      assert.deepStrictEqual(fake.calls, [texts])
      assertVectors(first, texts)
      second.forEach((vector, i) => assert.strictEqual(vector, first[i]))
      const s = yield* stats
      assert.strictEqual(s.hits, 3)
      assert.strictEqual(s.misses, 3)
      assert.strictEqual(s.entries, 3)
    }))

  it.scoped("a batch with some hits sends only the misses, in one call, and answers in input order", () =>
    Effect.gen(function*() {
      const fake = fakeEmbedder()
      const { embedder } = yield* EmbeddingCache.cached(fake.service, { name: uniqueName() })
      yield* embedder.embedBatch(["a", "b"])
      const texts = ["c", "a", "d", "b", "e"]
      assertVectors(yield* embedder.embedBatch(texts), texts)
      assert.deepStrictEqual(fake.calls, [["a", "b"], ["c", "d", "e"]])
    }))

  it.scoped("duplicates in a batch are embedded once", () =>
    Effect.gen(function*() {
      const fake = fakeEmbedder()
      const { embedder } = yield* EmbeddingCache.cached(fake.service, { name: uniqueName() })
      const texts = ["x", "y", "x", "x", "z", "y"]
      const vectors = yield* embedder.embedBatch(texts)
      assertVectors(vectors, texts)
      assert.deepStrictEqual(fake.calls, [["x", "y", "z"]])
      assert.strictEqual(vectors[2], vectors[0])
    }))

  it.scoped("vectors that are views into one batch buffer are kept as copies: the cache counts what it holds", () =>
    Effect.gen(function*() {
      const dimensions = 4
      // an embedder answering a batch with views into one shared buffer, as the worker threads do
      const viewing: Embedder.Service = {
        model: "views",
        dimensions,
        maxBatchSize: 16,
        embedBatch: (texts) =>
          Effect.sync(() => {
            const buffer = new Float32Array(texts.length * dimensions)
            texts.forEach((text, i) => buffer.set(vectorOf(text, dimensions), i * dimensions))
            return texts.map((_, i) => buffer.subarray(i * dimensions, (i + 1) * dimensions))
          })
      }
      const { embedder, stats } = yield* EmbeddingCache.cached(viewing, { name: uniqueName() })
      const texts = ["a", "b", "c"]
      const vectors = yield* embedder.embedBatch(texts)
      for (let i = 0; i < texts.length; i++) {
        assert.strictEqual(vectors[i]!.buffer.byteLength, vectors[i]!.byteLength, "owns its buffer")
        assert.deepStrictEqual(Array.from(vectors[i]!), Array.from(vectorOf(texts[i]!, dimensions)))
      }
      const keyLength = EmbeddingCache.keyOf("views", dimensions, "a").length
      assert.strictEqual((yield* stats).bytes, texts.length * (dimensions * 4 + keyLength))
    }))

  it.scoped("an empty batch makes no call", () =>
    Effect.gen(function*() {
      const fake = fakeEmbedder()
      const { embedder } = yield* EmbeddingCache.cached(fake.service, { name: uniqueName() })
      assert.deepStrictEqual(yield* embedder.embedBatch([]), [])
      assert.deepStrictEqual(fake.calls, [])
    }))

  it.scoped("concurrent batches embed the texts they share once", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const fake = fakeEmbedder({ before: (call) => call === 0 ? Deferred.await(gate) : Effect.void })
      const { embedder } = yield* EmbeddingCache.cached(fake.service, { name: uniqueName() })
      const first = yield* Effect.fork(embedder.embedBatch(["a", "b", "c"]))
      yield* waitUntil(() => fake.calls.length === 1, "the first call")
      const second = yield* Effect.fork(embedder.embedBatch(["b", "d", "c"]))
      yield* waitUntil(() => fake.calls.length === 2, "the second call")
      // the second batch sent only what nobody was embedding, and waits for b and c
      assert.deepStrictEqual(fake.calls, [["a", "b", "c"], ["d"]])
      yield* Deferred.succeed(gate, undefined)
      const [v1, v2] = yield* Fiber.join(Fiber.zip(first, second))
      assertVectors(v1, ["a", "b", "c"])
      assertVectors(v2, ["b", "d", "c"])
      assert.strictEqual(v2[0], v1[1])
      assert.strictEqual(fake.calls.length, 2)
    }))

  it.scoped("interrupting the batch that owns the call leaves the waiting batch with a correct result", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const fake = fakeEmbedder({ before: (call) => call === 0 ? Deferred.await(gate) : Effect.void })
      const { embedder } = yield* EmbeddingCache.cached(fake.service, { name: uniqueName() })
      const owner = yield* Effect.fork(embedder.embedBatch(["a", "b"]))
      yield* waitUntil(() => fake.calls.length === 1, "the owner's call")
      const waiter = yield* Effect.fork(embedder.embedBatch(["b", "a", "c"]))
      yield* waitUntil(() => fake.calls.length === 2, "the waiter's call")
      yield* Fiber.interrupt(owner)
      assert.deepStrictEqual(fake.interrupted, [])
      yield* Deferred.succeed(gate, undefined)
      assertVectors(yield* Fiber.join(waiter), ["b", "a", "c"])
      assert.isTrue(Exit.isInterrupted(yield* Fiber.await(owner)))
      assert.deepStrictEqual(fake.calls, [["a", "b"], ["c"]])
      assert.deepStrictEqual(fake.interrupted, [])
      // the owner's call completed and was cached
      assertVectors(yield* embedder.embedBatch(["a", "b"]), ["a", "b"])
      assert.strictEqual(fake.calls.length, 2)
    }))

  it.scoped("interrupting a waiting batch leaves the owner with a correct result", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const fake = fakeEmbedder({ before: (call) => call === 0 ? Deferred.await(gate) : Effect.void })
      const { embedder, stats } = yield* EmbeddingCache.cached(fake.service, { name: uniqueName() })
      const owner = yield* Effect.fork(embedder.embedBatch(["a", "b"]))
      yield* waitUntil(() => fake.calls.length === 1, "the owner's call")
      const waiter = yield* Effect.fork(embedder.embedBatch(["a"]))
      yield* waitUntilStats(stats, (s) => s.misses === 3, "the waiter joined")
      yield* Fiber.interrupt(waiter)
      yield* Deferred.succeed(gate, undefined)
      assertVectors(yield* Fiber.join(owner), ["a", "b"])
      assert.deepStrictEqual(fake.calls, [["a", "b"]])
      assert.deepStrictEqual(fake.interrupted, [])
    }))

  it.scoped("when every batch waiting for a call is interrupted, the call is interrupted and nothing is cached", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const fake = fakeEmbedder({ before: (call) => call === 0 ? Deferred.await(gate) : Effect.void })
      const { embedder, stats } = yield* EmbeddingCache.cached(fake.service, { name: uniqueName() })
      const owner = yield* Effect.fork(embedder.embedBatch(["a", "b"]))
      yield* waitUntil(() => fake.calls.length === 1, "the owner's call")
      yield* Fiber.interrupt(owner)
      assert.deepStrictEqual(fake.interrupted, [0])
      assert.strictEqual((yield* stats).entries, 0)
      assertVectors(yield* embedder.embedBatch(["a", "b"]), ["a", "b"])
      assert.strictEqual(fake.calls.length, 2)
    }))

  it.scoped("an underlying failure fails every batch waiting for it and is not cached", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const failure = new EmbedError({ reason: "http", message: "503 from the provider", status: 503 })
      const fake = fakeEmbedder({
        before: (call) => call === 0 ? Effect.zipRight(Deferred.await(gate), Effect.fail(failure)) : Effect.void
      })
      const { embedder, stats } = yield* EmbeddingCache.cached(fake.service, { name: uniqueName() })
      const first = yield* Effect.fork(Effect.either(embedder.embedBatch(["a", "b"])))
      yield* waitUntil(() => fake.calls.length === 1, "the first call")
      const second = yield* Effect.fork(Effect.either(embedder.embedBatch(["b"])))
      yield* waitUntilStats(stats, (s) => s.misses === 3, "the second batch joined")
      yield* Deferred.succeed(gate, undefined)
      // the very error the embedder failed with (unwrapped from the span annotation), for both batches
      for (const result of [yield* Fiber.join(first), yield* Fiber.join(second)]) {
        assert.isTrue(Either.isLeft(result))
        assert.isTrue(Cause.originalError(Option.getOrUndefined(Either.getLeft(result))) === failure)
      }
      assert.strictEqual((yield* stats).entries, 0)
      // a retry embeds again, and succeeds
      assertVectors(yield* embedder.embedBatch(["a", "b"]), ["a", "b"])
      assert.deepStrictEqual(fake.calls, [["a", "b"], ["a", "b"]])
    }))

  it.scoped("an embedder returning the wrong number of vectors fails with malformed-response", () =>
    Effect.gen(function*() {
      const fake = fakeEmbedder({ answer: () => [] })
      const { embedder, stats } = yield* EmbeddingCache.cached(fake.service, { name: uniqueName() })
      const error = yield* Effect.flip(embedder.embedBatch(["a"]))
      assert.strictEqual(error.reason, "malformed-response")
      assert.strictEqual((yield* stats).entries, 0)
    }))

  it.scoped("one cache shared by embedders of different models or dimensions keeps their vectors apart", () =>
    Effect.gen(function*() {
      const cache = yield* LruCache.make<Embedding>({ maxEntries: 100, name: uniqueName() })
      const m1 = fakeEmbedder({ model: "m1", dimensions: 4 })
      const m2 = fakeEmbedder({ model: "m2", dimensions: 4 })
      const m1wide = fakeEmbedder({ model: "m1", dimensions: 6 })
      const texts = ["same", "texts"]
      for (const fake of [m1, m2, m1wide]) {
        const { embedder } = EmbeddingCache.decorate(fake.service, cache)
        const vectors = yield* embedder.embedBatch(texts)
        vectors.forEach((v, i) => assert.deepStrictEqual(v, vectorOf(texts[i], fake.service.dimensions, fake.service.model)))
        assert.deepStrictEqual(fake.calls, [texts])
      }
      assert.strictEqual((yield* cache.stats).entries, 6)
      assert.strictEqual((yield* cache.keys).filter((key) => key.startsWith("m1:4:")).length, 2)
    }))

  it.scoped("the byte bound holds with many vectors; the most recent stay cached", () =>
    Effect.gen(function*() {
      const dimensions = 16
      const fake = fakeEmbedder({ dimensions })
      const perEntry = dimensions * 4 + EmbeddingCache.keyOf("fake", dimensions, "t").length
      const maxBytes = perEntry * 10
      const { embedder, stats } = yield* EmbeddingCache.cached(fake.service, { maxBytes, name: uniqueName() })
      const texts = Array.from({ length: 100 }, (_, i) => `text number ${i}`)
      for (let i = 0; i < texts.length; i += 10) {
        const batch = texts.slice(i, i + 10)
        assertVectors(yield* embedder.embedBatch(batch), batch, dimensions)
        const s = yield* stats
        assert.isAtMost(s.bytes, maxBytes)
      }
      assert.deepStrictEqual(yield* stats, {
        hits: 0,
        misses: 100,
        evictions: 90,
        rejections: 0,
        entries: 10,
        bytes: maxBytes
      })
      yield* embedder.embedBatch(texts.slice(90))
      assert.strictEqual(fake.calls.length, 10)
      yield* embedder.embedBatch([texts[0]])
      assert.strictEqual(fake.calls.length, 11)
    }))

  it.scoped("the entry bound holds", () =>
    Effect.gen(function*() {
      const fake = fakeEmbedder()
      const { embedder, stats } = yield* EmbeddingCache.cached(fake.service, { maxEntries: 3, name: uniqueName() })
      yield* embedder.embedBatch(["a", "b", "c", "d", "e"])
      const s = yield* stats
      assert.strictEqual(s.entries, 3)
      assert.strictEqual(s.evictions, 2)
    }))

  it.effect("layerCached puts a cache in front of another layer's Embedder and provides its stats", () =>
    Effect.gen(function*() {
      const embedder = yield* Embedder.Embedder
      const { stats } = yield* EmbeddingCache.EmbeddingCacheStats
      const first = yield* embedder.embedBatch(["one", "two"])
      const second = yield* embedder.embedBatch(["two", "one"])
      assert.strictEqual(second[0], first[1])
      assert.strictEqual(second[1], first[0])
      const s = yield* stats
      assert.strictEqual(s.hits, 2)
      assert.strictEqual(s.misses, 2)
    }).pipe(
      Effect.provide(EmbeddingCache.layerCached(Embedder.layerHashing({ dimensions: 32 }), { name: uniqueName() }))
    ))

  it.effect("layer decorates the Embedder in context", () => {
    const fake = fakeEmbedder()
    return Effect.gen(function*() {
      const embedder = yield* Embedder.Embedder
      yield* embedder.embedBatch(["x"])
      yield* embedder.embedBatch(["x"])
      assert.deepStrictEqual(fake.calls, [["x"]])
    }).pipe(
      Effect.provide(EmbeddingCache.layer({ name: uniqueName() }).pipe(Layer.provide(Embedder.layerTest(fake.service))))
    )
  })
})

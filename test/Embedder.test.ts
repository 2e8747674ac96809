import { assert, describe, it } from "@effect/vitest"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import { createHash } from "node:crypto"
import { defaultDimensions, Embedder, layerConfig, layerHashing, layerOpenAiConfig } from "../src/Embedder.js"
import { EmbedError } from "../src/Errors.js"
import { makeHashingEmbedder, model } from "../src/internal/hashingEmbedder.js"
import * as ResourceLedger from "../src/ResourceLedger.js"
import { withEnv } from "./config.js"

const norm = (v: Float32Array): number => {
  let sum = 0
  for (const x of v) sum += x * x
  return Math.sqrt(sum)
}

const cosine = (a: Float32Array, b: Float32Array): number => {
  let dot = 0
  for (let i = 0; i < a.length; i++) dot += a[i] * b[i]
  const n = norm(a) * norm(b)
  return n === 0 ? 0 : dot / n
}

const embedder = makeHashingEmbedder({ dimensions: 256 })
const embed = (...texts: ReadonlyArray<string>): ReadonlyArray<Float32Array> =>
  Effect.runSync(embedder.embedBatch(texts))

const docs = [
  "PostgreSQL stores the vectors in a table with a pgvector column and an HNSW index for nearest neighbour search.",
  "The circuit breaker opens after five consecutive failures of the embedding provider and half-opens after a cooldown.",
  "Bake the bread at two hundred degrees for forty minutes until the crust is golden brown.",
  "Our quarterly revenue grew by twelve percent, driven by subscriptions in the European market."
]

describe("hashing embedder", () => {
  it("describes itself", () => {
    assert.strictEqual(embedder.model, "hashing-v1")
    assert.strictEqual(model, "hashing-v1")
    assert.strictEqual(embedder.dimensions, 256)
    assert.strictEqual(embedder.maxBatchSize, 256)
  })

  it("is deterministic, across calls and across instances", () => {
    const [a] = embed(docs[0])
    const [b] = embed(docs[0])
    const [c] = Effect.runSync(makeHashingEmbedder({ dimensions: 256 }).embedBatch([docs[0]]))
    assert.deepStrictEqual(Array.from(a), Array.from(b))
    assert.deepStrictEqual(Array.from(a), Array.from(c))
    // batching does not change a text's vector
    const batch = embed(...docs)
    assert.deepStrictEqual(Array.from(batch[0]), Array.from(a))
  })

  // hashing-v1 is a stored model: its vectors must never change, or stores
  // would mix two embeddings under one name. Digests of the vectors of these
  // texts, as the first release of the kernel computed them.
  it.each([
    [7, "0689d242276c80e1ed34eb2ed005dfafd85d70c55a3cca6e97ab0bd7f36a9619"],
    [384, "44914573ff1e3656c799e0e6cd0bca115656c01d8807ba7795ab5c1ceb8bff7f"],
    [16000, "1decefbf155bdc04aa1529a1e5d485bcc3acd0a59f0449cdc74af4b6417df99f"]
  ] as const)("hashing-v1 vectors of %d dimensions are the same, bit for bit", (dimensions, expected) => {
    const texts = [
      ...docs,
      "",
      "x",
      "Ünïcödé façade naïve — 𝔘𝔫𝔦𝔠𝔬𝔡𝔢, emoji 😀, CJK 漢字テスト; running stopped nations statement classes flies",
      "the the the and of running running runs ".repeat(40)
    ]
    const digest = createHash("sha256")
    for (const v of Effect.runSync(makeHashingEmbedder({ dimensions }).embedBatch(texts))) {
      digest.update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength))
    }
    assert.strictEqual(digest.digest("hex"), expected)
  })

  it("refuses dimensions its arithmetic cannot hold", () => {
    assert.throws(() => makeHashingEmbedder({ dimensions: 16385 }), /from 1 to 16384/)
    assert.throws(() => makeHashingEmbedder({ dimensions: 0 }), /from 1 to 16384/)
  })

  it.each([1, 2, 7, 64, 384, 1536])("returns Float32Arrays of %d dimensions", (dimensions) => {
    const vectors = Effect.runSync(makeHashingEmbedder({ dimensions }).embedBatch([...docs, "", "x"]))
    assert.strictEqual(vectors.length, docs.length + 2)
    for (const vector of vectors) {
      assert.instanceOf(vector, Float32Array)
      assert.strictEqual(vector.length, dimensions)
      for (const x of vector) assert.isTrue(Number.isFinite(x))
    }
  })

  it("returns one vector per text, in order, and nothing for an empty batch", () => {
    const vectors = embed(docs[2], docs[1])
    assert.deepStrictEqual(Array.from(vectors[0]), Array.from(embed(docs[2])[0]))
    assert.deepStrictEqual(Array.from(vectors[1]), Array.from(embed(docs[1])[0]))
    assert.deepStrictEqual(embed(), [])
  })

  it.each([
    ...docs,
    "word",
    "word word word word",
    "ÜBER naïve café — ﬁnance ①",
    "日本語のテキストです",
    "emoji 😀 𝔸𝔹 text",
    "x".repeat(100_000)
  ])("is L2-normalised: %s", (text) => {
    assert.closeTo(norm(embed(text)[0]), 1, 1e-5)
  })

  it.each(["", "   ", "\n\t", "!!! ??? ... ---", "😀 🎉"])("returns the zero vector for text without tokens: %j", (text) => {
    const [vector] = embed(text)
    assert.strictEqual(vector.length, 256)
    assert.isTrue(vector.every((x) => x === 0))
  })

  it("normalises case and Unicode compatibility forms", () => {
    const [a, b, c] = embed("Hello World", "hello   WORLD!", "ｈｅｌｌｏ ｗｏｒｌｄ")
    assert.deepStrictEqual(Array.from(a), Array.from(b))
    assert.deepStrictEqual(Array.from(a), Array.from(c))
  })

  it("takes word order into account through bigrams", () => {
    const [a, b, c] = embed("new york city", "city york new", "new york city")
    assert.isBelow(cosine(a, b), 0.99)
    assert.isAbove(cosine(a, b), 0.5)
    assert.closeTo(cosine(a, c), 1, 1e-6)
  })

  it("scores similar texts higher than unrelated ones", () => {
    const [base, similar, unrelated] = embed(
      "The embedding provider failed with a timeout, so the circuit breaker opened.",
      "After repeated timeouts from the embedding provider the circuit breaker opens.",
      "Bake the bread at two hundred degrees until the crust is golden."
    )
    const close = cosine(base, similar)
    const far = cosine(base, unrelated)
    assert.isAbove(close, far + 0.2)
    assert.isAbove(close, 0.3)
    assert.isBelow(far, 0.3)
  })

  it("ranks the document containing a distinctive phrase first", () => {
    const vectors = embed(...docs)
    for (const [query, expected] of [
      ["pgvector HNSW index", 0],
      ["circuit breaker cooldown", 1],
      ["golden brown crust", 2],
      ["quarterly revenue", 3]
    ] as const) {
      const [q] = embed(query)
      const scores = vectors.map((v) => cosine(q, v))
      const best = scores.indexOf(Math.max(...scores))
      assert.strictEqual(best, expected, `${query}: ${scores.join(", ")}`)
    }
  })

  it("separates words at exactly the characters that are not letters, digits or marks", () => {
    // every BMP character that normalisation and lowercasing leave as it
    // is: between two letters it joins them into one word, or separates
    // them as a space does
    const wordChar = /^[\p{L}\p{N}\p{M}]$/u
    const small = makeHashingEmbedder({ dimensions: 16 })
    const [spaced] = Effect.runSync(small.embedBatch(["q q"]))
    const wrong: Array<string> = []
    let checked = 0
    for (let code = 0; code < 0x10000; code++) {
      if (code >= 0xd800 && code <= 0xdfff) continue
      const c = String.fromCharCode(code)
      if (c.normalize("NFKC").toLowerCase() !== c) continue
      checked++
      const [v] = Effect.runSync(small.embedBatch([`q${c}q`]))
      const separates = v.every((x, i) => x === spaced[i])
      if (separates === wordChar.test(c)) wrong.push(code.toString(16))
    }
    assert.isAbove(checked, 40_000)
    assert.deepStrictEqual(wrong, [])
  })

  it("conflates simple English inflections", () => {
    const [a, b, c] = embed("certificate rotation", "rotating certificates", "database backups")
    assert.isAbove(cosine(a, b), 0.7)
    assert.isBelow(cosine(a, c), 0.3)
    const [d, e] = embed("the scanner stopped", "scanners stop")
    assert.isAbove(cosine(d, e), 0.7)
  })

  it("lets frequent function words count for little, but not for nothing", () => {
    const [withStopwords, without, only] = embed("the bread of the day", "bread day", "of the")
    assert.isAbove(cosine(withStopwords, without), 0.8)
    assert.closeTo(norm(only), 1, 1e-5)
  })

  it("finds a distinctive phrase among many documents with the same vocabulary", () => {
    const vocabulary = ("service request queue message worker database table index record batch stream buffer " +
      "cache node cluster region network packet route depot parcel vehicle driver shipment label barcode scanner " +
      "sensor report metric alert incident review change release version build test module schema field value " +
      "document file archive backup snapshot replica partition shard log event timer schedule window deadline " +
      "estimate budget forecast capacity load latency error failure retry timeout limit policy rule team the of " +
      "and to a in is that for on with as").split(" ")
    let seed = 12345
    const random = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296
    const documents = Array.from({ length: 200 }, () =>
      Array.from({ length: 30 }, () => vocabulary[Math.floor(random() * vocabulary.length)]).join(" "))
    documents[42] = documents[42].replace(" ", " zeppelin ")
    documents[150] = documents[150].replace(" ", " purple walrus escrow ")
    const sized = makeHashingEmbedder({ dimensions: defaultDimensions })
    const vectors = Effect.runSync(sized.embedBatch(documents))
    const ranking = (query: string) => {
      const [q] = Effect.runSync(sized.embedBatch([query]))
      return vectors.map((v, i) => [cosine(q, v), i] as const).sort((a, b) => b[0] - a[0]).map(([, i]) => i)
    }
    assert.strictEqual(ranking("purple walrus escrow")[0], 150)
    assert.strictEqual(ranking("walrus escrow")[0], 150)
    assert.include(ranking("zeppelin").slice(0, 3), 42)
  })
})

/** The Embedder in the context is the hashing embedder of the default dimensions. */
const providesDefaultHashing = Effect.gen(function*() {
  const service = yield* Embedder
  assert.strictEqual(service.model, "hashing-v1")
  assert.strictEqual(service.dimensions, defaultDimensions)
  const [vector] = yield* service.embedBatch(["hello world"])
  assert.strictEqual(vector.length, defaultDimensions)
  assert.closeTo(norm(vector), 1, 1e-5)
})

describe("layerHashing", () => {
  it.effect("provides the hashing embedder with the default dimensions", () =>
    providesDefaultHashing.pipe(Effect.provide(layerHashing())))

  it.effect("accepts custom dimensions", () =>
    Effect.gen(function*() {
      const service = yield* Embedder
      assert.strictEqual(service.dimensions, 32)
      const vectors = yield* service.embedBatch(["a", "b", ""])
      assert.deepStrictEqual(vectors.map((v) => v.length), [32, 32, 32])
    }).pipe(Effect.provide(layerHashing({ dimensions: 32 }))))

  it.effect.each([0, -1, 1.5, 16001, Number.NaN])("rejects dimensions %d with a config EmbedError", (dimensions) =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Layer.build(layerHashing({ dimensions })).pipe(Effect.scoped))
      assert.isTrue(Exit.isFailure(exit))
      const error = yield* Effect.flip(Embedder.pipe(Effect.provide(layerHashing({ dimensions }))))
      assert.instanceOf(error, EmbedError)
      assert.strictEqual(error._tag, "EmbedError")
      assert.strictEqual(error.reason, "config")
      assert.include(error.message, "dimensions")
    }))
})

describe("hashing embedder on worker threads", () => {
  const texts = Array.from({ length: 300 }, (_, i) => `text number ${i}: naïve café ${"word ".repeat(i % 40)} 𝒜 日本語`)

  it.scoped("gives the very vectors of the calling thread, and ends its workers with its scope", () =>
    Effect.gen(function*() {
      const ledger = yield* ResourceLedger.make()
      const local = yield* makeHashingEmbedder({ dimensions: 64 }).embedBatch(texts)
      const onWorkers = yield* Effect.scoped(
        Effect.gen(function*() {
          const service = Context.get(yield* Layer.build(layerHashing({ dimensions: 64, workers: 2 })), Embedder)
          // a large batch goes to a worker; a small one (a query) stays on this thread
          const vectors = yield* service.embedBatch(texts)
          const [one] = yield* service.embedBatch([texts[7]!])
          assert.deepStrictEqual(Array.from(one!), Array.from(local[7]!))
          const during = yield* ledger.snapshot
          assert.isAtLeast(during.byKind["worker"]?.acquired ?? 0, 1)
          return vectors
        }).pipe(Effect.provideService(ResourceLedger.ResourceLedger, ledger))
      )
      assert.strictEqual(onWorkers.length, texts.length)
      for (let i = 0; i < texts.length; i++) assert.deepStrictEqual(Array.from(onWorkers[i]!), Array.from(local[i]!))
      const after = yield* ledger.snapshot
      assert.strictEqual(after.byKind["worker"]?.open, 0, "every worker was terminated")
    }))

  it.scoped("concurrent batches, and a caller interrupted while it waits, leave the others their answers", () =>
    Effect.gen(function*() {
      const service = Context.get(yield* Layer.build(layerHashing({ dimensions: 32, workers: 1 })), Embedder)
      const local = makeHashingEmbedder({ dimensions: 32 })
      const batches = [texts.slice(0, 100), texts.slice(100, 200), texts.slice(200)]
      // its request is posted, then its caller goes away before the answer
      const interrupted = yield* Effect.fork(service.embedBatch(texts))
      yield* Effect.yieldNow()
      const exit = yield* Fiber.interrupt(interrupted)
      assert.isTrue(Exit.isInterrupted(exit))
      const results = yield* Effect.all(batches.map((b) => service.embedBatch(b)), { concurrency: "unbounded" })
      for (let b = 0; b < batches.length; b++) {
        const expected = yield* local.embedBatch(batches[b]!)
        assert.deepStrictEqual(results[b]!.map((v) => Array.from(v)), expected.map((v) => Array.from(v)))
      }
    }))

  it.effect.each([-1, 1.5, 65])("rejects workers %d with a config EmbedError", (workers) =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Embedder.pipe(Effect.provide(layerHashing({ workers }))))
      assert.strictEqual(error.reason, "config")
      assert.include(error.message, "workers")
    }))
})

describe("layerConfig", () => {
  const described = Effect.map(Embedder, ({ dimensions, maxBatchSize, model }) => ({ model, dimensions, maxBatchSize }))

  it.effect("defaults to the offline hashing embedder", () =>
    providesDefaultHashing.pipe(Effect.provide(layerConfig), withEnv({})))

  it.effect("RAGPIPE_EMBEDDER=hashing with RAGPIPE_DIMENSIONS", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* described, { model: "hashing-v1", dimensions: 64, maxBatchSize: 256 })
    }).pipe(Effect.provide(layerConfig), withEnv({ RAGPIPE_EMBEDDER: "hashing", RAGPIPE_DIMENSIONS: "64" })))

  it.scoped("RAGPIPE_EMBEDDER=openai builds the HTTP provider from the RAGPIPE_* variables, without calling it", () =>
    Effect.gen(function*() {
      const service = yield* Embedder
      assert.deepStrictEqual(
        { model: service.model, dimensions: service.dimensions, maxBatchSize: service.maxBatchSize },
        { model: "openai:nomic-embed-text", dimensions: 768, maxBatchSize: 32 }
      )
    }).pipe(
      Effect.provide(layerConfig),
      withEnv({
        RAGPIPE_EMBEDDER: "openai",
        RAGPIPE_BASE_URL: "http://127.0.0.1:9/v1",
        RAGPIPE_MODEL: "nomic-embed-text",
        RAGPIPE_EMBED_BATCH_SIZE: "32"
      })
    ))

  it.effect.each([
    [{ RAGPIPE_EMBEDDER: "cohere" }, "RAGPIPE_EMBEDDER"],
    [{ RAGPIPE_DIMENSIONS: "many" }, "RAGPIPE_DIMENSIONS"],
    [{ RAGPIPE_DIMENSIONS: "0" }, "dimensions"],
    [{ RAGPIPE_EMBEDDER: "openai", RAGPIPE_MODEL: "my-own-model" }, "RAGPIPE_DIMENSIONS"]
  ] as const)("a bad configuration is a config EmbedError naming it: %j", ([entries, named]) =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Embedder.pipe(Effect.provide(layerConfig), withEnv(entries)))
      assert.instanceOf(error, EmbedError)
      assert.strictEqual(error.reason, "config")
      assert.include(error.message, named)
    }))

  it.effect("layerOpenAiConfig reads the provider's own config, or the one given", () =>
    Effect.gen(function*() {
      const fromEnv = yield* Effect.provide(described, layerOpenAiConfig()).pipe(
        Effect.scoped,
        withEnv({ RAGPIPE_MODEL: "all-minilm", RAGPIPE_BASE_URL: "http://127.0.0.1:9/v1" })
      )
      assert.deepStrictEqual(fromEnv, { model: "openai:all-minilm", dimensions: 384, maxBatchSize: 256 })
      const given = yield* Effect.provide(
        described,
        layerOpenAiConfig(Config.succeed({ baseUrl: "http://127.0.0.1:9/v1", model: "custom", dimensions: 12 }))
      ).pipe(Effect.scoped)
      assert.deepStrictEqual(given, { model: "openai:custom", dimensions: 12, maxBatchSize: 256 })
    }))
})

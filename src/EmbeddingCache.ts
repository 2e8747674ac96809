/**
 * A caching decorator for the Embedder port: texts embedded before (by the
 * same model, at the same dimensions) are answered from a bounded LRU
 * cache, and only the misses reach the underlying embedder, in one call.
 *
 * Concurrent batches share work: a text that another batch is embedding
 * right now is awaited, not embedded again. The underlying call runs in a
 * fiber owned by the cache, so interrupting the batch that started it does
 * not disturb the batches waiting for it; it is interrupted only when every
 * batch waiting for it has gone (see {@link LruCache.LruCache.getOrComputeMany}).
 * A failure of the underlying call fails every batch waiting for it and is
 * not cached: the caller may retry.
 *
 * Cached vectors are shared between the batches that read them: treat the
 * returned `Float32Array`s as read-only.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { hash } from "node:crypto"
import type { Embedding } from "./Domain.js"
import * as Embedder from "./Embedder.js"
import { EmbedError } from "./Errors.js"
import * as LruCache from "./LruCache.js"

/**
 * Bounds and name of an embedding cache, for {@link cached}, {@link layer}
 * and {@link layerCached} (and `Ingest`'s `cache` option). Size it by bytes
 * first: a 1536-dimension vector takes 6 KiB.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** the most vectors kept (default {@link defaultMaxEntries}) */
  readonly maxEntries?: number
  /** the most bytes kept, as measured by {@link entrySize} (default {@link defaultMaxBytes}) */
  readonly maxBytes?: number
  /** the `cache` tag of the cache metrics (default `"embeddings"`) */
  readonly name?: string
}

/**
 * The most vectors a cache keeps unless {@link Options.maxEntries} says
 * otherwise (50,000); whichever of this and {@link defaultMaxBytes} is
 * reached first bounds the cache.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultMaxEntries = 50_000

/**
 * The most bytes a cache keeps unless {@link Options.maxBytes} says
 * otherwise: 256 MiB, as measured by {@link entrySize} (about 43,000
 * vectors of 1536 dimensions).
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultMaxBytes = 256 * 1024 * 1024

/**
 * The cache key of a text: `${model}:${dimensions}:${sha256(text) in hex}`,
 * so one cache can serve several models without mixing their vectors.
 *
 * @since 0.1.0
 * @category keys
 */
export const keyOf = (model: string, dimensions: number, text: string): string =>
  `${model}:${dimensions}:${hash("sha256", text, "hex")}`

/**
 * The vector, owning its buffer: a view into a larger buffer (the hashing
 * embedder's worker threads answer a batch with one buffer) is copied, so
 * that keeping it keeps only its own bytes alive — what {@link entrySize}
 * counts. Every cache of vectors stores them through it.
 *
 * @since 0.1.0
 * @category utils
 */
export const detached = (embedding: Embedding): Embedding =>
  embedding.byteLength === embedding.buffer.byteLength ? embedding : embedding.slice()

/**
 * The approximate size of a cache entry: the vector's bytes plus the key's
 * length (map and object overhead are not counted).
 *
 * @since 0.1.0
 * @category keys
 */
export const entrySize = (embedding: Embedding, key: string): number => embedding.byteLength + key.length

/**
 * A cached embedder and the stats of its cache.
 *
 * @since 0.1.0
 * @category models
 */
export interface Cached {
  readonly embedder: Embedder.Service
  readonly stats: Effect.Effect<LruCache.Stats>
}

/**
 * The stats of the cache in front of the Embedder, as provided by
 * {@link layer} and {@link layerCached}.
 *
 * @since 0.1.0
 * @category tags
 */
export class EmbeddingCacheStats extends Context.Tag("ragpipe/EmbeddingCacheStats")<
  EmbeddingCacheStats,
  { readonly stats: Effect.Effect<LruCache.Stats> }
>() {}

/**
 * Put `embedder` in front of an existing cache, which may be shared with
 * other embedders (keys carry the model and dimensions).
 *
 * `embedBatch(texts)` returns one vector per text, in order: cached texts
 * from the cache, texts another batch is embedding from that batch, and the
 * remaining distinct texts from one call of the underlying `embedBatch`.
 * An empty batch makes no call. An underlying call that returns the wrong
 * number of vectors fails with `EmbedError` (`malformed-response`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const decorate = (embedder: Embedder.Service, cache: LruCache.LruCache<string, Embedding>): Cached => {
  const { dimensions, model } = embedder
  const embedBatch = Effect.fn("EmbeddingCache.embedBatch")(function*(texts: ReadonlyArray<string>) {
    if (texts.length === 0) return []
    const textOf = new Map<string, string>()
    const keys = texts.map((text) => {
      const key = keyOf(model, dimensions, text)
      textOf.set(key, text)
      return key
    })
    return yield* cache.getOrComputeMany(keys, (missing) => {
      const batch = missing.map((key) => textOf.get(key) as string)
      return Effect.filterOrFail(
        Effect.map(embedder.embedBatch(batch), (vectors) => vectors.map(detached)),
        (vectors) => vectors.length === batch.length,
        (vectors) =>
          new EmbedError({
            reason: "malformed-response",
            message: `the embedder "${model}" returned ${vectors.length} vectors for ${batch.length} texts`
          })
      )
    })
  })
  return {
    embedder: { model, dimensions, maxBatchSize: embedder.maxBatchSize, embedBatch },
    stats: cache.stats
  }
}

/**
 * Put `embedder` in front of a new cache that lives as long as the scope.
 * Invalid bounds (not positive integers) are a defect, with a message.
 *
 * @since 0.1.0
 * @category constructors
 */
export const cached = (
  embedder: Embedder.Service,
  options: Options = {}
): Effect.Effect<Cached, never, Scope.Scope> =>
  Effect.map(
    LruCache.make<Embedding>({
      maxEntries: options.maxEntries ?? defaultMaxEntries,
      maxBytes: options.maxBytes ?? defaultMaxBytes,
      sizeOf: entrySize,
      name: options.name ?? "embeddings"
    }),
    (cache) => decorate(embedder, cache)
  )

/**
 * Decorate the Embedder in context: provides a caching Embedder (and its
 * stats) in its place. Compose with the layer of the real embedder:
 * `EmbeddingCache.layer().pipe(Layer.provide(Embedder.layerHashing()))`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<Embedder.Embedder | EmbeddingCacheStats, never, Embedder.Embedder> =>
  Layer.scopedContext(
    Effect.gen(function*() {
      const inner = yield* Embedder.Embedder
      const { embedder, stats } = yield* cached(inner, options)
      return Context.make(Embedder.Embedder, embedder).pipe(Context.add(EmbeddingCacheStats, { stats }))
    })
  )

/**
 * `inner`, with a cache in front of it.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerCached = <E, R>(
  inner: Layer.Layer<Embedder.Embedder, E, R>,
  options: Options = {}
): Layer.Layer<Embedder.Embedder | EmbeddingCacheStats, E, R> => Layer.provide(layer(options), inner)

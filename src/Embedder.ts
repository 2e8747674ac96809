/**
 * The Embedder port: turns batches of texts into vectors. HTTP providers,
 * the offline hashing embedder and test embedders are all layers of this
 * one tag.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type { Embedding } from "./Domain.js"
import { EmbedError } from "./Errors.js"
import { makeHashingEmbedder } from "./internal/hashingEmbedder.js"
import * as OpenAiEmbedder from "./OpenAiEmbedder.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** identifies the model; stored with every document it embedded */
  readonly model: string
  /** length of every vector this embedder returns */
  readonly dimensions: number
  /** largest batch `embedBatch` accepts in one call */
  readonly maxBatchSize: number
  /** embed the texts, returning one vector per text, in order */
  readonly embedBatch: (texts: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<Embedding>, EmbedError>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Embedder extends Context.Tag("ragpipe/Embedder")<Embedder, Service>() {}

/**
 * Default dimensions of the hashing embedder.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultDimensions = 384

/**
 * The offline default: deterministic signed feature hashing of normalised
 * word unigrams and bigrams, L2-normalised. Needs no network and no model.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerHashing = (options: { readonly dimensions?: number } = {}): Layer.Layer<Embedder, EmbedError> =>
  Layer.effect(
    Embedder,
    Effect.suspend(() => {
      const dimensions = options.dimensions ?? defaultDimensions
      if (!Number.isInteger(dimensions) || dimensions < 1 || dimensions > 16000) {
        return Effect.fail(
          new EmbedError({
            reason: "config",
            message: `dimensions must be an integer between 1 and 16000 (got ${dimensions})`
          })
        )
      }
      return Effect.succeed(makeHashingEmbedder({ dimensions }))
    })
  )

/**
 * A test embedder built from a function: handy for scripting failures or
 * counting calls in tests.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerTest = (service: Service): Layer.Layer<Embedder> => Layer.succeed(Embedder, service)

/**
 * A scripted test embedder: the hashing embedder's vectors, failing on
 * demand. `fail` sees each call's texts and its number (from 1) and returns
 * the error to fail that call with, or `undefined` to answer it.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerScripted = (options: {
  readonly dimensions?: number
  readonly fail?: (texts: ReadonlyArray<string>, call: number) => EmbedError | undefined
} = {}): Layer.Layer<Embedder, EmbedError> =>
  Layer.effect(
    Embedder,
    Effect.gen(function*() {
      const hashing = yield* Effect.provide(Embedder, layerHashing(options))
      let calls = 0
      return {
        ...hashing,
        model: "scripted",
        embedBatch: (texts) =>
          Effect.suspend(() => {
            const error = options.fail?.(texts, ++calls)
            return error === undefined ? hashing.embedBatch(texts) : Effect.fail(error)
          })
      }
    })
  )

/**
 * An OpenAI-compatible HTTP provider (OpenAI, Ollama, vLLM, Hugging Face
 * TEI, LM Studio, llama.cpp): one keep-alive connection pool for the
 * layer's lifetime, every socket closed when the layer is released.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerOpenAi = (config: OpenAiEmbedder.Config): Layer.Layer<Embedder, EmbedError> =>
  Layer.scoped(Embedder, OpenAiEmbedder.make(config))

/**
 * {@link layerOpenAi} configured from `RAGPIPE_*` variables (see
 * `OpenAiEmbedder.configFromEnv`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerOpenAiConfig = OpenAiEmbedder.layerConfig

/**
 * The Embedder port: turns batches of texts into vectors. HTTP providers,
 * the offline hashing embedder and test embedders are all layers of this
 * one tag.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as os from "node:os"
import type { Embedding } from "./Domain.js"
import { EmbedError } from "./Errors.js"
import { makeHashingEmbedder } from "./internal/hashingEmbedder.js"
import { makeHashingWorkers } from "./internal/hashingWorkers.js"
import * as OpenAiEmbedder from "./OpenAiEmbedder.js"

/**
 * What an embedder does: embed a batch of texts with one model into vectors
 * of a fixed length. Implement it to plug in your own provider (see
 * {@link layerTest}); the pipeline splits work into batches of at most
 * `maxBatchSize`.
 *
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
 * The Embedder port: the service the ingest and search pipelines embed
 * through. Provide it with {@link layerHashing} (offline), {@link layerOpenAi}
 * (an HTTP provider), {@link layerConfig} (chosen from the environment) or a
 * test layer.
 *
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
 * Worker threads the hashing embedder uses by default: one per core beyond
 * the first (the main thread reads, chunks and writes), at most 4; none on
 * a single core.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultHashingWorkers: number = Math.max(0, Math.min(4, os.availableParallelism() - 1))

/**
 * The offline default: deterministic signed feature hashing of normalised
 * word unigrams and bigrams, L2-normalised. Needs no network and no model.
 *
 * Large batches are embedded on `workers` worker threads (default
 * {@link defaultHashingWorkers}; 0 embeds on the calling thread), which
 * start on the first such batch and are terminated when the layer's scope
 * closes. The vectors do not depend on where they were computed.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerHashing = (
  options: { readonly dimensions?: number; readonly workers?: number } = {}
): Layer.Layer<Embedder, EmbedError> =>
  Layer.scoped(
    Embedder,
    Effect.suspend(() => {
      const dimensions = options.dimensions ?? defaultDimensions
      const workers = options.workers ?? defaultHashingWorkers
      if (!Number.isInteger(dimensions) || dimensions < 1 || dimensions > 16000) {
        return Effect.fail(
          new EmbedError({
            reason: "config",
            message: `dimensions must be an integer between 1 and 16000 (got ${dimensions})`
          })
        )
      }
      if (!Number.isInteger(workers) || workers < 0 || workers > 64) {
        return Effect.fail(
          new EmbedError({
            reason: "config",
            message: `workers must be an integer between 0 and 64 (got ${workers})`
          })
        )
      }
      return workers === 0
        ? Effect.succeed(makeHashingEmbedder({ dimensions }))
        : makeHashingWorkers({ dimensions, workers })
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
 * `OpenAiEmbedder.configFromEnv`), or from the `Config` given.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerOpenAiConfig = (
  config?: Config.Config<OpenAiEmbedder.Config>
): Layer.Layer<Embedder, EmbedError> => OpenAiEmbedder.layerConfig(config)

/**
 * The embedder the CLI would use, chosen from the environment (or any
 * `ConfigProvider`) by the same variables:
 *
 * - `RAGPIPE_EMBEDDER`: `hashing` (the default) or `openai`;
 * - with `hashing`: `RAGPIPE_DIMENSIONS` (default {@link defaultDimensions});
 * - with `openai`: `RAGPIPE_BASE_URL`, `RAGPIPE_MODEL`, `RAGPIPE_DIMENSIONS`,
 *   `RAGPIPE_API_KEY` (or `OPENAI_API_KEY` for `api.openai.com`) and the
 *   other variables of `OpenAiEmbedder.configFromEnv`.
 *
 * Use it to let a deployment switch providers without code changes. A
 * missing or malformed variable fails the layer with an {@link EmbedError}
 * of reason `config` naming it.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig: Layer.Layer<Embedder, EmbedError> = Layer.unwrapEffect(
  Effect.gen(function*() {
    const provider = yield* Config.withDefault(Config.literal("hashing", "openai")("RAGPIPE_EMBEDDER"), "hashing")
    if (provider === "openai") return OpenAiEmbedder.layerConfig()
    const dimensions = yield* Config.withDefault(Config.integer("RAGPIPE_DIMENSIONS"), defaultDimensions)
    return layerHashing({ dimensions })
  }).pipe(
    Effect.mapError((error) =>
      new EmbedError({ reason: "config", message: `invalid embedder configuration: ${String(error)}` })
    )
  )
)

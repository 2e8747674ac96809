/**
 * The search pipeline: embed a query with the store's embedder and return
 * the nearest chunks.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type { SearchHit } from "./Domain.js"
import { Embedder } from "./Embedder.js"
import { type EmbedError, InvalidInput, StoreError } from "./Errors.js"
import { model as hashingModel } from "./internal/hashingEmbedder.js"
import * as Retry from "./Retry.js"
import { type SearchScope, VectorStore } from "./VectorStore.js"

/**
 * How a search runs: the number of hits and the retry policy of the query's
 * embedding request.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** how many hits to return (default 5, at most 1000) */
  readonly limit?: number
  /**
   * Retry policy of the query's embedding: each attempt runs under its
   * `attemptTimeout` and retryable failures are retried as in
   * {@link Retry.retry} (default: one attempt, no timeout).
   */
  readonly retry?: Retry.Policy
  /**
   * The store's {@link storeScope}, when the caller has read it already
   * (to choose the query embedder's dimensions, say): the search then does
   * not read it again.
   */
  readonly scope?: SearchScope
}

/**
 * Default number of hits.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultLimit = 5

/**
 * How to search with the embedder of a store's model, as the command line
 * says it (an OpenAI-compatible model is stored as `openai:<model>`: see
 * `OpenAiEmbedder.modelId`).
 */
const searchWith = (model: string): string => {
  if (model === hashingModel) return "search with --embedder hashing"
  if (model.startsWith("openai:")) {
    return `search with --embedder openai --model ${model.slice("openai:".length)} (and the store's --base-url)`
  }
  return "search with the embedder the store was built with"
}

/**
 * What a search must know of the store in the context: its `searchScope`,
 * which counts no chunk, or where it offers none, the same taken from its
 * `stats`.
 *
 * @since 0.1.0
 * @category utils
 */
export const storeScope: Effect.Effect<SearchScope, StoreError, VectorStore> = Effect.flatMap(
  VectorStore,
  (store) =>
    store.searchScope ?? Effect.map(store.stats, (s): SearchScope => ({
      hasChunks: s.chunks > 0,
      dimensions: s.dimensions,
      models: s.models
    }))
)

/**
 * Search the store for the chunks closest to `query`.
 *
 * Fails with `InvalidInput` for an empty query or a query with no words the
 * embedder can use, with `StoreError` when the store's embeddings were made
 * by another model (reason `model-mismatch`) or have another dimension than
 * the embedder's (`dimension-mismatch`), and with the embedder's last
 * `EmbedError` when embedding the query failed (after the retries of
 * `options.retry`, if given).
 *
 * @since 0.1.0
 * @category pipelines
 */
export const search = Effect.fn("Search.search")(function*(query: string, options: Options = {}) {
  const limit = options.limit ?? defaultLimit
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
    return yield* new InvalidInput({ reason: "option", message: `--limit must be between 1 and 1000 (got ${limit})` })
  }
  if (query.trim().length === 0) {
    return yield* new InvalidInput({ reason: "query", message: "the query is empty; pass the words to search for" })
  }
  const embedder = yield* Embedder
  const store = yield* VectorStore
  const scope = options.scope ?? (yield* storeScope)
  if (!scope.hasChunks) return [] as ReadonlyArray<SearchHit>
  // documents of other models than the query's, the most numerous first
  const others = Object.entries(scope.models)
    .filter(([model]) => model !== embedder.model)
    .sort(([a, m], [b, n]) => n - m || (a < b ? -1 : 1))
  if ((scope.models[embedder.model] ?? 0) === 0 && others.length > 0) {
    const stored = others[0]![0]
    return yield* new StoreError({
      reason: "model-mismatch",
      message: `this store's embeddings were made by model ${stored} but the query embedder is ` +
        `${embedder.model}: vectors of two models cannot be compared; ${searchWith(stored)}`
    })
  }
  if (scope.dimensions !== null && scope.dimensions !== embedder.dimensions) {
    return yield* new StoreError({
      reason: "dimension-mismatch",
      message: `this store holds ${scope.dimensions}-dimensional embeddings but the query embedder produces ` +
        `${embedder.dimensions}; search with --dimensions ${scope.dimensions}`
    })
  }
  const embedQuery = embedder.embedBatch([query])
  const [vector] = yield* (options.retry === undefined ? embedQuery : Retry.retry(embedQuery, options.retry))
  if (vector === undefined || vector.every((x) => x === 0)) {
    return yield* new InvalidInput({
      reason: "query",
      message: `the query "${query}" has no words to search for; use letters or digits`
    })
  }
  if (others.length === 0) return yield* store.search(vector, limit)
  // an ingest that changed the model has not finished: the documents of
  // the query's model are searched, the others left out
  const left = others.reduce((sum, [, n]) => sum + n, 0)
  const all = left + scope.models[embedder.model]!
  yield* Effect.logWarning(
    `${left} of ${all} documents are left out of this search: they were embedded by ` +
      `${others.map(([model]) => model).join(", ")}, whose vectors cannot be compared with ${embedder.model}'s ` +
      `(an ingest that changed the model has not finished: run it again to finish)`
  )
  return yield* store.search(vector, limit, embedder.model)
}) as (
  query: string,
  options?: Options
) => Effect.Effect<ReadonlyArray<SearchHit>, InvalidInput | StoreError | EmbedError, Embedder | VectorStore>

/**
 * ragpipe: a resource-safe RAG embedding pipeline on Effect.
 *
 * @since 0.1.0
 */

/**
 * Splitting documents into chunks.
 *
 * @since 0.1.0
 */
export * as Chunker from "./Chunker.js"

/**
 * Circuit breakers: the call breaker service and the error-rate stream breaker.
 *
 * @since 0.1.0
 */
export * as CircuitBreaker from "./CircuitBreaker.js"

/**
 * SqlClient layers: embedded PGlite.
 *
 * @since 0.1.0
 */
export * as Database from "./Database.js"

/**
 * Domain schemas and types.
 *
 * @since 0.1.0
 */
export * as Domain from "./Domain.js"

/**
 * The Embedder port and its layers.
 *
 * @since 0.1.0
 */
export * as Embedder from "./Embedder.js"

/**
 * Errors crossing the library boundary.
 *
 * @since 0.1.0
 */
export * as Errors from "./Errors.js"

/**
 * The ingest pipeline.
 *
 * @since 0.1.0
 */
export * as Ingest from "./Ingest.js"

/**
 * Lazy directory walking.
 *
 * @since 0.1.0
 */
export * as Loader from "./Loader.js"

/**
 * Managed streams and scoped resources.
 *
 * @since 0.1.0
 */
export * as Resource from "./Resource.js"

/**
 * Resource accounting.
 *
 * @since 0.1.0
 */
export * as ResourceLedger from "./ResourceLedger.js"

/**
 * Retry schedules, Retry-After and error classification.
 *
 * @since 0.1.0
 */
export * as Retry from "./Retry.js"

/**
 * The search pipeline.
 *
 * @since 0.1.0
 */
export * as Search from "./Search.js"

/**
 * The VectorStore port and its PostgreSQL implementation.
 *
 * @since 0.1.0
 */
export * as VectorStore from "./VectorStore.js"

/**
 * A caching Embedder decorator over a bounded LRU.
 *
 * @since 0.1.0
 */
export * as EmbeddingCache from "./EmbeddingCache.js"

/**
 * A fault-injecting OpenAI-compatible embedding server for tests and benchmarks.
 *
 * @since 0.1.0
 */
export * as FaultServer from "./FaultServer.js"

/**
 * A bounded least-recently-used cache with shared computations and metrics.
 *
 * @since 0.1.0
 */
export * as LruCache from "./LruCache.js"

/**
 * The OpenAI-compatible HTTP embedding provider.
 *
 * @since 0.1.0
 */
export * as OpenAiEmbedder from "./OpenAiEmbedder.js"

/**
 * An in-memory VectorStore for tests, examples and small programs.
 *
 * @since 0.1.0
 */
export * as MemoryVectorStore from "./MemoryVectorStore.js"

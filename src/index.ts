/**
 * ragpipe: a resource-safe RAG embedding pipeline on Effect. Each module is
 * exported as a namespace (`import { Ingest, Embedder } from "ragpipe"`);
 * every port is a tag with layers you can swap for your own.
 *
 * @since 0.1.0
 */

/**
 * Splitting documents into chunks: pure functions (markdown by headings,
 * then paragraph, line, sentence, word), with size and overlap options.
 *
 * @since 0.1.0
 */
export * as Chunker from "./Chunker.js"

/**
 * Circuit breakers: the call breaker (`make`, the `Breaker` tag with
 * `layer`, `layerConfig` and `layerTest`) and `breakOnErrorRate`, the
 * error-rate breaker for streams of `Either`.
 *
 * @since 0.1.0
 */
export * as CircuitBreaker from "./CircuitBreaker.js"

/**
 * SqlClient layers for the store: `layerPglite` (the embedded database, for
 * getting started and small corpora), `layerServer` (a PostgreSQL server
 * with pgvector, for production) and `layerConfig` (the server when
 * `DATABASE_URL` is set, else the embedded database in `RAGPIPE_DATA_DIR`).
 *
 * @since 0.1.0
 */
export * as Database from "./Database.js"

/**
 * Domain schemas and types shared by every stage: documents, chunks,
 * embeddings, search hits, reports.
 *
 * @since 0.1.0
 */
export * as Domain from "./Domain.js"

/**
 * The Embedder port and its layers: `layerHashing` (offline default),
 * `layerOpenAi` / `layerOpenAiConfig` (an OpenAI-compatible server),
 * `layerConfig` (chosen by `RAGPIPE_EMBEDDER`), and `layerTest` /
 * `layerScripted` for tests.
 *
 * @since 0.1.0
 */
export * as Embedder from "./Embedder.js"

/**
 * Errors crossing the library boundary, each with a `reason` to match on and
 * a `message` written for a person.
 *
 * @since 0.1.0
 */
export * as Errors from "./Errors.js"

/**
 * The ingest pipeline: `ingestDirectory` walks a folder, `ingestStream`
 * takes any `Stream` of documents, `ingestWith` uses the Loader in context.
 *
 * @since 0.1.0
 */
export * as Ingest from "./Ingest.js"

/**
 * The Loader port: a lazy directory walk (`layer`), or documents from any
 * `Stream` (`layerFromStream`).
 *
 * @since 0.1.0
 */
export * as Loader from "./Loader.js"

/**
 * Managed streams and scoped resources: streams whose resources are
 * released exactly once on every exit path (`managedStream`,
 * `withResourceStream`, `fromReadable`, `fromAsyncIterable`), LIFO
 * acquisition (`nestedManaged`) and `autoClose`.
 *
 * @since 0.1.0
 */
export * as Resource from "./Resource.js"

/**
 * Resource accounting: the ResourceLedger port counting every acquire and
 * release per kind, with `layer` (warns about leftovers), `layerConfig` and
 * `layerTest` (fails on leftovers).
 *
 * @since 0.1.0
 */
export * as ResourceLedger from "./ResourceLedger.js"

/**
 * Retrying: jittered backoff schedules, retry counts and time budgets,
 * `Retry-After`, the retryable / fatal classification of errors, and
 * runners with a timeout per attempt.
 *
 * @since 0.1.0
 */
export * as Retry from "./Retry.js"

/**
 * The search pipeline: embed a query and return the closest chunks.
 *
 * @since 0.1.0
 */
export * as Search from "./Search.js"

/**
 * The VectorStore port and its PostgreSQL implementation (`layer`, over the
 * `SqlClient` from `Database`); see `MemoryVectorStore` for tests.
 *
 * @since 0.1.0
 */
export * as VectorStore from "./VectorStore.js"

/**
 * A caching Embedder decorator over a bounded LRU: put `layer` in front of
 * any Embedder layer so repeated texts are embedded once.
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
 * A bounded least-recently-used cache (by entries and bytes) with shared
 * computations, stats and metrics.
 *
 * @since 0.1.0
 */
export * as LruCache from "./LruCache.js"

/**
 * The OpenAI-compatible HTTP embedding provider (OpenAI, Ollama, vLLM, TEI,
 * LM Studio, llama.cpp): its config, `make` and layers.
 *
 * @since 0.1.0
 */
export * as OpenAiEmbedder from "./OpenAiEmbedder.js"

/**
 * An in-memory VectorStore with the same behaviour as the PostgreSQL one,
 * for tests, examples and small programs.
 *
 * @since 0.1.0
 */
export * as MemoryVectorStore from "./MemoryVectorStore.js"

/**
 * Domain types shared by every stage of the pipeline.
 *
 * Types that cross an edge (CLI arguments, SQL rows, JSON output) are
 * schemas; hot-path values (chunks, embeddings) are plain readonly records
 * whose shape the schemas describe, so the pipeline does not pay for
 * validation it does not need.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * The format a loaded file was read as.
 *
 * @since 0.1.0
 * @category models
 */
export const DocumentFormat = Schema.Literal("markdown", "text", "html", "rst")

/**
 * The type of {@link DocumentFormat}: how a document's text was extracted
 * (`markdown` is split by headings, `html` has had its tags removed).
 *
 * @since 0.1.0
 * @category models
 */
export type DocumentFormat = typeof DocumentFormat.Type

/**
 * A file that was read from disk (or produced by any other source) and is
 * ready to be chunked.
 *
 * `path` is the document's identity in the store: for files it is the path
 * relative to the ingested root, with `/` separators.
 *
 * @since 0.1.0
 * @category models
 */
export const SourceDocument = Schema.Struct({
  path: Schema.String,
  text: Schema.String,
  /** sha256 (hex) of the raw bytes the text was decoded from */
  contentHash: Schema.String,
  /** size in bytes */
  size: Schema.Number,
  format: DocumentFormat,
  /**
   * the file's size, times and inode when it was read (see
   * `Loader.fingerprintOf`): lets a later run skip reading it while they
   * are unchanged. Absent for files modified just before they were read,
   * and for documents that do not come from files.
   */
  fingerprint: Schema.optional(Schema.String)
})

/**
 * The type of {@link SourceDocument}: what a loader produces and
 * `Ingest.ingestStream` consumes. Build one yourself to ingest text that
 * never was a file.
 *
 * @since 0.1.0
 * @category models
 */
export interface SourceDocument extends Schema.Schema.Type<typeof SourceDocument> {}

/**
 * Why the loader passed over a file.
 *
 * @since 0.1.0
 * @category models
 */
export const SkipReason = Schema.Literal(
  "binary",
  "invalid-utf8",
  "empty",
  "too-large",
  "unreadable",
  "symlink-outside-root",
  "symlink-loop",
  "broken-symlink",
  "unreadable-directory",
  "invalid-name",
  "unchanged"
)

/**
 * The type of {@link SkipReason}: match on it to decide which skipped files
 * matter to you (e.g. report `too-large`, ignore `binary`).
 *
 * @since 0.1.0
 * @category models
 */
export type SkipReason = typeof SkipReason.Type

/**
 * A file (or directory) the loader passed over, with the reason.
 *
 * @since 0.1.0
 * @category models
 */
export const SkippedFile = Schema.Struct({
  path: Schema.String,
  reason: SkipReason,
  detail: Schema.String
})

/**
 * The type of {@link SkippedFile}: the `Left` side of a loader's items,
 * listed in the ingest summary.
 *
 * @since 0.1.0
 * @category models
 */
export interface SkippedFile extends Schema.Schema.Type<typeof SkippedFile> {}

/**
 * Stable chunk identifier: a hash of (document path, chunk index, chunk text).
 *
 * @since 0.1.0
 * @category models
 */
export const ChunkId = Schema.String.pipe(Schema.brand("ChunkId"))

/**
 * The type of {@link ChunkId}: a branded string, so a chunk id cannot be
 * mixed up with a path or a hash by accident.
 *
 * @since 0.1.0
 * @category models
 */
export type ChunkId = typeof ChunkId.Type

/**
 * One piece of a document, sized for embedding.
 *
 * @since 0.1.0
 * @category models
 */
export const Chunk = Schema.Struct({
  id: ChunkId,
  documentPath: Schema.String,
  index: Schema.Int,
  text: Schema.String,
  /** markdown heading path, outermost first (empty for text without headings) */
  headingPath: Schema.Array(Schema.String),
  /** approximate number of model tokens */
  tokenEstimate: Schema.Int
})

/**
 * The type of {@link Chunk}: what the chunker produces and the embedder
 * embeds.
 *
 * @since 0.1.0
 * @category models
 */
export interface Chunk extends Schema.Schema.Type<typeof Chunk> {}

/**
 * An embedding vector.
 *
 * @since 0.1.0
 * @category models
 */
export const Embedding = Schema.instanceOf(Float32Array)

/**
 * The type of {@link Embedding}: one vector, as an embedder returns it and
 * the store keeps it. Treat it as read-only once returned: caches share it.
 *
 * @since 0.1.0
 * @category models
 */
export type Embedding = Float32Array

/**
 * A chunk together with its embedding.
 *
 * @since 0.1.0
 * @category models
 */
export interface EmbeddedChunk {
  readonly chunk: Chunk
  readonly embedding: Embedding
}

/**
 * One search result.
 *
 * @since 0.1.0
 * @category models
 */
export const SearchHit = Schema.Struct({
  rank: Schema.Int,
  /** cosine similarity in [-1, 1]; higher is closer */
  score: Schema.Number,
  path: Schema.String,
  chunkIndex: Schema.Int,
  heading: Schema.String,
  text: Schema.String
})

/**
 * The type of {@link SearchHit}: one answer of `Search.search`, best first
 * by `rank`.
 *
 * @since 0.1.0
 * @category models
 */
export interface SearchHit extends Schema.Schema.Type<typeof SearchHit> {}

/**
 * Counters for resources, as reported by the ResourceLedger.
 *
 * @since 0.1.0
 * @category models
 */
export const ResourceCounts = Schema.Struct({
  acquired: Schema.Int,
  released: Schema.Int,
  open: Schema.Int
})

/**
 * The type of {@link ResourceCounts}: acquired, released and still open;
 * `open` is 0 after a clean run.
 *
 * @since 0.1.0
 * @category models
 */
export interface ResourceCounts extends Schema.Schema.Type<typeof ResourceCounts> {}

/**
 * Summary of one ingest run. Its JSON form is the last line `ingest --json`
 * prints.
 *
 * @since 0.1.0
 * @category models
 */
export const IngestReport = Schema.Struct({
  files: Schema.Struct({
    seen: Schema.Int,
    ingested: Schema.Int,
    unchanged: Schema.Int,
    skipped: Schema.Int,
    removed: Schema.Int
  }),
  chunks: Schema.Struct({
    written: Schema.Int,
    failed: Schema.Int,
    cached: Schema.Int
  }),
  resources: ResourceCounts,
  breaker: Schema.NullOr(Schema.Unknown),
  durationMs: Schema.Int,
  /**
   * `completed`: the walk ran to its end (see `walkComplete`); `stopped`: a
   * signal (or the caller's `stop`) ended the run early, so the counts are
   * partial; `broken`: the error-rate breaker ended it (see `breaker`).
   */
  outcome: Schema.Literal("completed", "stopped", "broken"),
  /** false when some directory could not be read: then no document was removed */
  walkComplete: Schema.Boolean,
  /**
   * stored documents kept although the run did not see them: the walk found
   * no file at all, and `--allow-empty` was not given (0 otherwise)
   */
  kept: Schema.Int,
  /** skipped files counted by reason */
  skippedByReason: Schema.Record({ key: Schema.String, value: Schema.Int }),
  /** the first skipped files (at most 1000 in `ingest --json`), with their reasons */
  skippedFiles: Schema.Array(SkippedFile),
  /**
   * With `ingest --index` only: the vector index build (`created` is false
   * when the index existed), or null when it was not built — the run did not
   * complete, or a signal or an error stopped the build.
   */
  index: Schema.optional(Schema.NullOr(Schema.Struct({ created: Schema.Boolean, millis: Schema.Number })))
})

/**
 * The type of {@link IngestReport}: the shape of `ingest --json`'s summary,
 * for programs that read it.
 *
 * @since 0.1.0
 * @category models
 */
export interface IngestReport extends Schema.Schema.Type<typeof IngestReport> {}

/**
 * What the store holds.
 *
 * @since 0.1.0
 * @category models
 */
export const StoreStats = Schema.Struct({
  documents: Schema.Int,
  chunks: Schema.Int,
  dimensions: Schema.NullOr(Schema.Int),
  /** the model of the store's last ingest */
  model: Schema.NullOr(Schema.String),
  /**
   * documents by the model that embedded them: more than one while an
   * ingest with another model has not finished
   */
  models: Schema.Record({ key: Schema.String, value: Schema.Int }),
  /**
   * bytes the store's tables take, with their indexes and TOAST (not the
   * rest of the database they are in); an estimate for an in-memory store
   */
  storeBytes: Schema.Number
})

/**
 * The type of {@link StoreStats}: what `VectorStore.stats` and
 * `ragpipe stats` report.
 *
 * @since 0.1.0
 * @category models
 */
export interface StoreStats extends Schema.Schema.Type<typeof StoreStats> {}

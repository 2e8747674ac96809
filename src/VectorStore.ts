/**
 * The VectorStore port and its PostgreSQL implementation (pgvector), which
 * runs unchanged on the embedded PGlite database and on a real server.
 *
 * @since 0.1.0
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as PgMigrator from "@effect/sql-pg/PgMigrator"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as NodeCrypto from "node:crypto"
import Pg from "pg"
import { from as copyFrom } from "pg-copy-streams"
import { EmbeddedCopy, ServerPool } from "./Database.js"
import type { EmbeddedChunk, Embedding, SearchHit, SourceDocument, StoreStats } from "./Domain.js"
import { StoreError } from "./Errors.js"
import { batches } from "./internal/batch.js"
import { codePointOrderOf } from "./internal/codePointOrder.js"
import {
  chunkCopyFromMemoryStatement,
  type ChunkRow,
  chunkCopyStatement,
  copyHeader,
  copyBatches,
  CopyArena,
  copyTrailer,
  encodeChunkCopy,
  encodeChunkRows
} from "./internal/copyBinary.js"
import { migrations } from "./internal/migrations.js"
import { makeRunFlag, storeBusy } from "./internal/runLock.js"
import { vectorLiteral } from "./internal/vector.js"

/**
 * What the store remembers about a document, to decide whether it changed.
 *
 * @since 0.1.0
 * @category models
 */
export interface StoredDocument {
  readonly path: string
  readonly contentHash: string
  readonly chunker: string
  readonly model: string
  readonly dimensions: number
  /** false when some chunks could not be embedded (see `failures`) */
  readonly complete: boolean
  /** the file's fingerprint when it was stored (`SourceDocument.fingerprint`), if any */
  readonly fingerprint: string | null
}

/**
 * The settings a document is stored with: a stored document is up to date
 * only when they are the run's.
 *
 * @since 0.1.0
 * @category models
 */
export interface DocumentSettings {
  /** the chunker settings key (`Chunker.settingsKey`) */
  readonly chunker: string
  readonly model: string
  readonly dimensions: number
}

/**
 * Whether `stored` was written completely with these settings: then only its
 * content can differ from what a run with them would write.
 *
 * @since 0.1.0
 * @category utils
 */
export const isCompleteWith = (stored: StoredDocument, settings: DocumentSettings): boolean =>
  stored.complete && stored.chunker === settings.chunker && stored.model === settings.model &&
  stored.dimensions === settings.dimensions

/**
 * What a search must know of a store before it embeds its query.
 *
 * @since 0.1.0
 * @category models
 */
export interface SearchScope {
  /** whether the store holds any chunk */
  readonly hasChunks: boolean
  /** the dimensions of the store's embeddings (null before its first ingest) */
  readonly dimensions: number | null
  /** documents by the model that embedded them (as in `StoreStats.models`) */
  readonly models: Readonly<Record<string, number>>
}

/**
 * A file as a run finds it on disk: its path and fingerprint
 * (`SourceDocument.fingerprint`).
 *
 * @since 0.1.0
 * @category models
 */
export interface FileState {
  readonly path: string
  readonly fingerprint: string
}

/**
 * The stored documents as {@link Service.directoryDigests} gives them: how
 * many there are, and for directories whose documents are all stored
 * completely with the run's settings and a fingerprint, one
 * {@link directoryDigest} each.
 *
 * @since 0.1.0
 * @category models
 */
export interface DirectoryDigests {
  /** every document of the store, whatever its directory or state */
  readonly documents: number
  /**
   * by directory: the path up to its last `/` (`""` for paths without
   * one); directories that hold other documents are absent, and a store may
   * leave out others (the largest come first)
   */
  readonly directories: ReadonlyMap<string, { readonly digest: string; readonly documents: number }>
}

/**
 * The digest of a directory's files, equal to the one
 * {@link Service.directoryDigests} gives for the same paths and
 * fingerprints: SHA-256 (hex) of one line per file, in the UTF-8 byte order
 * of the paths, joined by newlines — the path's length in UTF-8 bytes, `:`,
 * the path, the fingerprint.
 *
 * @since 0.1.0
 * @category utils
 */
export const directoryDigest = (files: ReadonlyArray<FileState>): string => {
  const sorted = [...files].sort(codePointOrderOf(files, (file) => file.path))
  // the lines joined, then hashed at once: one call into the hash per
  // directory, not one per file
  const lines = new Array<string>(sorted.length)
  for (let i = 0; i < sorted.length; i++) {
    const file = sorted[i]!
    lines[i] = `${Buffer.byteLength(file.path)}:${file.path}${file.fingerprint}`
  }
  return NodeCrypto.hash("sha256", lines.join("\n"), "hex")
}

/**
 * A chunk that could not be embedded, as recorded with its document.
 *
 * @since 0.1.0
 * @category models
 */
export interface FailureWrite {
  readonly chunkIndex: number
  /** e.g. `http-503`, `timeout`, `invalid-input`, `breaker-open` */
  readonly kind: string
  readonly message: string
  readonly attempts: number
}

/**
 * A row of the `failures` table.
 *
 * @since 0.1.0
 * @category models
 */
export interface FailureRow extends FailureWrite {
  readonly path: string
  readonly firstSeen: string
  readonly lastSeen: string
}

/**
 * Identifies one ingest run; documents seen by the run are stamped with it.
 *
 * @since 0.1.0
 * @category models
 */
export type RunId = string

/**
 * One document with all its embedded chunks, written atomically.
 *
 * @since 0.1.0
 * @category models
 */
export interface DocumentWrite {
  readonly document: SourceDocument
  /** the chunker settings key the chunks were made with */
  readonly chunker: string
  readonly model: string
  readonly dimensions: number
  readonly chunks: ReadonlyArray<EmbeddedChunk>
  /**
   * chunks that could not be embedded: recorded in `failures`; the document
   * is then stored without them and not considered up to date
   */
  readonly failures?: ReadonlyArray<FailureWrite>
  /**
   * false: the chunks are not all there (some never embedded), so the
   * document is not up to date; default: complete unless `failures`
   */
  readonly complete?: boolean
  readonly runId: RunId
}

/**
 * Whether a write leaves its document up to date.
 *
 * @since 0.1.0
 * @category utils
 */
export const isComplete = (write: DocumentWrite): boolean =>
  write.complete !== false && (write.failures ?? []).length === 0

/**
 * The outcome of {@link Service.createIndex}.
 *
 * @since 0.1.0
 * @category models
 */
export interface IndexBuild {
  /** false when the index existed already (nothing was built) */
  readonly created: boolean
  /** time spent, in milliseconds */
  readonly millis: number
}

/**
 * What the pipeline needs from a store: change detection (`lookup`,
 * `claimUnchanged`, `markSeen`), atomic document writes, removal of what a run did not see,
 * search, statistics, failures, a checksum and the vector index. The
 * PostgreSQL store ({@link layer}) and `MemoryVectorStore` implement it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /**
   * Check that the store accepts vectors of this embedder, fixing the
   * store's dimensions on first use. A different dimension is a
   * `StoreError` with reason `dimension-mismatch`.
   */
  readonly prepare: (embedder: { readonly model: string; readonly dimensions: number }) => Effect.Effect<
    void,
    StoreError
  >
  /**
   * Start a run; the returned id stamps every document the run sees. The
   * run holds the store until its scope closes: another run that begins
   * meanwhile — in this process or, on a server, in any other — fails with
   * a `StoreError` of reason `locked`.
   */
  readonly beginRun: Effect.Effect<RunId, StoreError, Scope.Scope>
  /** The stored state of the given paths (absent paths are not in the map). */
  readonly lookup: (paths: ReadonlyArray<string>) => Effect.Effect<ReadonlyMap<string, StoredDocument>, StoreError>
  /**
   * Record documents that are still on disk but need no rewrite as seen by
   * the run, so that `removeUnseen` keeps them (the PostgreSQL store lists
   * them in a table of their own rather than rewriting their rows). With
   * `fingerprints` (one per path; `null` clears it), their stored
   * fingerprints are replaced too: a file whose times changed but whose
   * content did not.
   */
  readonly markSeen: (
    runId: RunId,
    paths: ReadonlyArray<string>,
    fingerprints?: ReadonlyArray<string | null>
  ) => Effect.Effect<void, StoreError>
  /**
   * Of the given files, those stored completely, with this fingerprint and
   * these settings — files that need not be read again — recorded as seen
   * by the run (as `markSeen` records them) in the same step. Returns their
   * paths.
   */
  readonly claimUnchanged: (
    runId: RunId,
    files: ReadonlyArray<FileState>,
    settings: DocumentSettings
  ) => Effect.Effect<ReadonlySet<string>, StoreError>
  /**
   * Whether some document is stored completely with these settings. When
   * none is — an empty store, or every document written with other settings
   * — `claimUnchanged` can claim nothing, and a run does not ask it.
   */
  readonly hasComplete: (settings: DocumentSettings) => Effect.Effect<boolean, StoreError>
  /**
   * The stored documents by directory, to compare whole directories of
   * files with (see {@link DirectoryDigests}): a directory whose files have
   * the digest of its stored documents holds nothing a run must read, and
   * `markDirectoriesSeen` lists it seen at once. Read once a run has begun.
   * Optional, with `markDirectoriesSeen`: a run without them asks
   * `claimUnchanged` about every file.
   */
  readonly directoryDigests?: (settings: DocumentSettings) => Effect.Effect<DirectoryDigests, StoreError>
  /**
   * Record directories as seen by the run: `removeUnseen` keeps every
   * document directly in them (not in the directories below).
   */
  readonly markDirectoriesSeen?: (runId: RunId, directories: ReadonlyArray<string>) => Effect.Effect<void, StoreError>
  /**
   * Keep the digests `directoryDigests` answers with for these settings,
   * computed now, for the next run to read rather than compute; called at
   * the end of a run that completed. A store that keeps them drops them
   * when a document is written or removed. Optional.
   */
  readonly keepDirectoryDigests?: (settings: DocumentSettings) => Effect.Effect<void, StoreError>
  /**
   * Replace documents and their chunks in one transaction: a reader sees
   * all of them, old or new, never a part. When a path occurs more than
   * once, its last write wins.
   */
  readonly writeDocuments: (writes: ReadonlyArray<DocumentWrite>) => Effect.Effect<void, StoreError>
  /** Remove every document the run did not see; returns the removed paths' count. */
  readonly removeUnseen: (runId: RunId) => Effect.Effect<number, StoreError>
  /**
   * Nearest chunks to the query vector by cosine distance, ties by path and
   * chunk index. Exact; once `createIndex` has built the HNSW index, the
   * nearest chunks may be found through it, which is approximate. With
   * `model`, only the chunks of documents embedded by that model, and
   * always exactly: for a store that holds the vectors of two models (an
   * ingest with another model that has not finished), whose distances
   * cannot be compared.
   */
  readonly search: (
    query: Embedding,
    limit: number,
    model?: string
  ) => Effect.Effect<ReadonlyArray<SearchHit>, StoreError>
  /** Counts and settings of the store. */
  readonly stats: Effect.Effect<StoreStats, StoreError>
  /**
   * What a search must know of the store, found without counting its
   * chunks (which `stats` does, reading every one of them). Optional: a
   * search takes it from `stats` where a store does not offer it.
   */
  readonly searchScope?: Effect.Effect<SearchScope, StoreError>
  /** Recorded chunk failures, by path and chunk index (at most `limit`). */
  readonly failures: (limit: number) => Effect.Effect<ReadonlyArray<FailureRow>, StoreError>
  /**
   * A digest of the store's content, equal for equal content on any
   * backend: see {@link makeChecksum}. Reads the chunks in pages from
   * one snapshot, so memory stays bounded whatever the store's size.
   */
  readonly checksum: Effect.Effect<string, StoreError>
  /**
   * Build the HNSW index {@link hnswIndexName} over the embeddings (cosine
   * distance), unless it exists. Writers wait while it is built. Fails when
   * the store has no dimensions yet (nothing was ingested).
   */
  readonly createIndex: Effect.Effect<IndexBuild, StoreError>
}

/**
 * The VectorStore port: provide `VectorStore.layer` (over a `SqlClient` from
 * `Database`), `MemoryVectorStore.layer`, or your own implementation.
 *
 * @since 0.1.0
 * @category tags
 */
export class VectorStore extends Context.Tag("ragpipe/VectorStore")<VectorStore, Service>() {}

/**
 * Rows per INSERT statement. Documents, failures — and chunks where no
 * binary COPY is offered — are inserted through `unnest` over one array
 * parameter per column, so a statement binds at most 11 parameters whatever
 * its row count — far below the protocol's 65,535 limit — and the row count
 * only bounds the size of one message.
 *
 * @since 0.1.0
 * @category constants
 */
export const insertBatchRows = 500

/**
 * Name of the approximate-nearest-neighbour index `createIndex` builds.
 *
 * @since 0.1.0
 * @category constants
 */
export const hnswIndexName = "chunks_embedding_hnsw"

/**
 * One chunk as the checksum sees it: hex sha256 digests of its text (UTF-8)
 * and of its embedding (see {@link embeddingSha256}).
 *
 * @since 0.1.0
 * @category models
 */
export interface ChecksumRow {
  readonly path: string
  readonly chunkIndex: number
  readonly textHash: string
  readonly embeddingHash: string
}

/**
 * An incremental store checksum, as `Service.checksum` computes it. Feed it
 * every chunk ordered by document path in UTF-8 byte order (code point
 * order, `COLLATE "C"` — not JavaScript's UTF-16 order) then chunk index;
 * each chunk adds the record
 *
 *     path NUL chunk_index NUL textHash NUL embeddingHash NUL
 *
 * (chunk index in decimal, hashes in lowercase hex: {@link textSha256},
 * {@link embeddingSha256}) and the digest is the lowercase hex sha256 of all
 * records; an empty store's is sha256 of nothing. Other `Service`
 * implementations use it to produce the same checksum as the PostgreSQL
 * store.
 *
 * @since 0.1.0
 * @category utils
 */
export const makeChecksum = (): {
  readonly add: (row: ChecksumRow) => void
  readonly digest: () => string
} => {
  const hash = NodeCrypto.createHash("sha256")
  return {
    add: (row) => {
      hash.update(`${row.path}\0${row.chunkIndex}\0${row.textHash}\0${row.embeddingHash}\0`, "utf8")
    },
    digest: () => hash.digest("hex")
  }
}

/**
 * Hex sha256 of a chunk's text in UTF-8, as the checksum uses it.
 *
 * @since 0.1.0
 * @category utils
 */
export const textSha256 = (text: string): string => NodeCrypto.hash("sha256", text, "hex")

/**
 * Hex sha256 of an embedding's float32 values in big-endian order, as the
 * checksum uses it (equal to hashing pgvector's binary form without its
 * header).
 *
 * @since 0.1.0
 * @category utils
 */
export const embeddingSha256 = (embedding: ArrayLike<number>): string => {
  const bytes = Buffer.alloc(embedding.length * 4)
  for (let i = 0; i < embedding.length; i++) bytes.writeFloatBE(embedding[i]!, i * 4)
  return NodeCrypto.hash("sha256", bytes, "hex")
}

/**
 * The checksum of chunks given in checksum order (see {@link makeChecksum}).
 *
 * @since 0.1.0
 * @category utils
 */
export const checksumOf = (rows: Iterable<ChecksumRow>): string => {
  const checksum = makeChecksum()
  for (const row of rows) checksum.add(row)
  return checksum.digest()
}

/**
 * At most this many directories in `directoryDigests`, the largest: its
 * answer is held through a run, and a store with more directories is read
 * a file at a time beyond them.
 */
const directoryDigestLimit = 20_000

/** Rows fetched per round trip by `checksum`. */
const checksumPageRows = 1000

/** `maintenance_work_mem` for an index build: a server, and the 32-bit embedded database. */
const indexBuildMemory = { server: "1GB", embedded: "256MB" } as const

const queryError = (what: string) => (error: SqlError) =>
  new StoreError({
    reason: "query",
    message: `${what} failed: ${error.message}${causeDetail(error.cause)}${hintFor(error.cause)}`
  })

/** The run lost its lock on a server store: nothing is removed. */
const lockLost = (cause: Error) =>
  new StoreError({
    reason: "query",
    message: `the connection holding this run's lock on the store was lost (${cause.message}); ` +
      `files deleted from disk were not removed from the store — run again`
  })

/**
 * What to do about a failed statement, when that is clear: one ended by
 * the statement timeout, or one whose connection the server closed (a
 * restart, an administrator ending the session: class 57P, or 08, what
 * `pg` itself says of a lost connection, or the socket reset under a
 * statement that was still sending, as a COPY does).
 */
const hintFor = (cause: unknown): string => {
  if (!(cause instanceof Error)) return ""
  const code = (cause as { code?: unknown }).code
  if (code === readOnlyCode) return readOnlyHint(true)
  if (code === "53100" || /No space left on device/.test(cause.message)) {
    return "; the disk that holds the database is full — the documents written before are kept: free some " +
      "space, then run again to finish"
  }
  if (code === "57014" && /statement timeout/.test(cause.message)) {
    return "; raise --db-statement-timeout (RAGPIPE_DB_STATEMENT_TIMEOUT) or use 0 to disable it"
  }
  if (
    (typeof code === "string" && (code.startsWith("57P") || code.startsWith("08"))) ||
    code === "ECONNRESET" || code === "EPIPE" ||
    /^Connection terminated|has encountered a connection error|was closed and is not queryable/.test(cause.message)
  ) {
    return "; the server closed the connection — the documents written before are kept: run again to finish"
  }
  return ""
}

const causeDetail = (cause: unknown): string =>
  cause instanceof Error && cause.message.length > 0 ? ` (${cause.message})` : ""

/** The server's own error (one with a SQLSTATE `code`) in a chain of causes, if any. */
const serverErrorIn = (error: unknown): (Error & { readonly code: string }) | undefined => {
  for (let e = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (typeof (e as { code?: unknown }).code === "string") return e as Error & { readonly code: string }
  }
  return undefined
}

/** SQLSTATE read_only_sql_transaction: a write where the server takes none. */
const readOnlyCode = "25006"

/** What to do about a refused write: the `stored` clause when a store is there to read. */
const readOnlyHint = (stored: boolean) =>
  "; the server takes no writes here (a standby, or default_transaction_read_only is on for the user or " +
  `the database): point --database-url at one that does${stored ? " — search, stats and failures work here" : ""}`

/** What to do about a privilege the schema's creation lacked (SQLSTATE 42501). */
const privilegeHint = (message: string): string =>
  /extension/.test(message)
    ? "; pgvector's extension can only be created by a superuser: have one run CREATE EXTENSION vector in " +
      "this database (scripts/setup-postgres --create-db NAME does), then run again"
    : /schema/.test(message)
    ? "; the user needs the CREATE privilege on the schema (GRANT CREATE ON SCHEMA public TO <user>), " +
      "or a database of its own (createdb -O <user>)"
    : "; connect as a user that owns the database, or grant this one the privilege"

/** The store's schema could not be created or brought up to date: the migration, the server's reason, what to do. */
const migrationError = (error: { readonly message: string; readonly cause?: unknown }) => {
  const server = serverErrorIn(error.cause)
  const detail = server === undefined ? causeDetail(error.cause) : ` (${server.message})`
  const hint = server?.code === "42501"
    ? privilegeHint(server.message)
    : server?.code === readOnlyCode
    ? readOnlyHint(false)
    : ""
  return new StoreError({
    reason: "migration",
    message: `could not prepare the database schema: ${error.message}${detail}${hint}`
  })
}

/** A document of a write as a row of `upsertDocumentsSql`'s JSON. */
const documentRow = (w: DocumentWrite) => ({
  p: w.document.path,
  h: w.document.contentHash,
  s: w.document.size,
  f: w.document.format,
  c: w.chunker,
  m: w.model,
  d: w.dimensions,
  n: w.chunks.length,
  r: w.runId,
  k: isComplete(w),
  g: w.document.fingerprint ?? null
})

/** How long a ROLLBACK after a failed write may take before the connection is discarded instead. */
const rollbackTimeout = Duration.seconds(10)

// The statements of `writeDocuments`, run on a checked-out `pg` client or
// through the `SqlClient`. The upsert's documents travel as one JSON text,
// one object per document with short keys (see `documentRow`): pg
// serialises an array parameter element by element, escaping and
// concatenating strings, which for 11 arrays of 10,000 documents allocated
// about 25 MiB on the benchmark corpus.
const upsertDocumentsSql = `INSERT INTO documents
    (path, content_hash, size_bytes, format, chunker, model, dimensions, chunk_count, seen_run, complete, fingerprint)
  SELECT p, h, s, f, c, m, d, n, r, k, g
  FROM json_to_recordset($1::json) AS w(p text, h text, s bigint, f text, c text, m text, d int, n int, r bigint,
    k boolean, g text)
  ON CONFLICT (path) DO UPDATE SET
    content_hash = EXCLUDED.content_hash, size_bytes = EXCLUDED.size_bytes, format = EXCLUDED.format,
    chunker = EXCLUDED.chunker, model = EXCLUDED.model, dimensions = EXCLUDED.dimensions,
    chunk_count = EXCLUDED.chunk_count, seen_run = EXCLUDED.seen_run, complete = EXCLUDED.complete,
    fingerprint = EXCLUDED.fingerprint, updated_at = now()
  RETURNING id::text AS id, path, (xmax = 0) AS inserted`

const insertChunksSql = `INSERT INTO chunks (id, document_id, chunk_index, text, heading_path, token_estimate, embedding)
  SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[], $4::text[], $5::jsonb[], $6::int[], $7::vector[])`

const deleteChunksSql = `DELETE FROM chunks WHERE document_id = ANY($1::bigint[])`

const clearFailuresSql = `DELETE FROM failures f WHERE f.document_id = ANY($1::bigint[])
  AND NOT EXISTS (
    SELECT 1 FROM unnest($2::bigint[], $3::int[]) AS n(document_id, chunk_index)
    WHERE n.document_id = f.document_id AND n.chunk_index = f.chunk_index)`

const insertFailuresSql = `INSERT INTO failures (document_id, chunk_index, error_kind, message, attempts)
  SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::int[])
  ON CONFLICT (document_id, chunk_index) DO UPDATE SET
    error_kind = EXCLUDED.error_kind, message = EXCLUDED.message,
    attempts = failures.attempts + EXCLUDED.attempts, last_seen = now()`

const statementError = (cause: unknown) => new SqlError({ cause, message: "Failed to execute statement" })

/** One statement on a checked-out client; interruptible (the caller then discards the client). */
const clientQuery = <R extends Pg.QueryResultRow = Pg.QueryResultRow>(
  client: Pg.PoolClient,
  text: string,
  values?: ReadonlyArray<unknown>
): Effect.Effect<Pg.QueryResult<R>, SqlError> =>
  Effect.tryPromise({
    try: () => client.query<R>(text, values as Array<unknown> | undefined),
    catch: statementError
  })

/**
 * `COPY chunks ... FROM STDIN (FORMAT binary)` of the rows on a checked-out
 * client, honouring the socket's backpressure; succeeds with the row count
 * once the server has confirmed the COPY. The rows are encoded into the
 * arena's buffers when it is free, given back once the server has read them
 * (dropped when the COPY did not complete). Interruptible: the caller then
 * discards the client (closing its connection ends the COPY).
 */
const copyChunks = (
  client: Pg.PoolClient,
  rows: ReadonlyArray<ChunkRow>,
  arena: CopyArena
): Effect.Effect<number, SqlError> =>
  Effect.suspend(() => {
    const lease = arena.lease()
    return copyEncoded(client, rows, lease?.allocate).pipe(
      Effect.onExit((exit) => Effect.sync(() => Exit.isSuccess(exit) ? lease?.done() : lease?.discard()))
    )
  })

const copyEncoded = (
  client: Pg.PoolClient,
  rows: ReadonlyArray<ChunkRow>,
  allocate: ((size: number) => Buffer) | undefined
): Effect.Effect<number, SqlError> =>
  Effect.try({
    try: () => [
      copyHeader,
      ...copyBatches(rows).map((batch) => encodeChunkRows(batch, allocate)),
      copyTrailer
    ],
    catch: (cause) => new SqlError({ cause, message: "Failed to encode rows for COPY" })
  }).pipe(Effect.flatMap((buffers) =>
    Effect.async<number, SqlError>((resume) => {
      let done = false
      let aborted = false
      const stream = client.query(copyFrom(chunkCopyStatement))
      stream.on("error", (cause) => {
        // The server rejected the COPY (the connection is still usable) or the
        // connection failed. Destroying the stream now — while it still holds
        // the connection — stops it writing anything more; a CopyFail it may
        // send is ignored by the server outside of COPY.
        if (!aborted && !stream.destroyed) stream.destroy()
        if (done) return
        done = true
        resume(Effect.fail(statementError(cause)))
      })
      stream.on("finish", () => {
        if (done) return
        done = true
        resume(Effect.succeed(stream.rowCount))
      })
      let next = 0
      const pump = (): void => {
        while (!done && !aborted && !stream.destroyed && next < buffers.length) {
          if (!stream.write(buffers[next++]!)) {
            stream.once("drain", pump)
            return
          }
        }
        if (!done && !aborted && !stream.destroyed && next === buffers.length) {
          next++
          stream.end()
        }
      }
      pump()
      return Effect.sync(() => {
        aborted = true
      })
    })
  ))

/** ROLLBACK; the error when it failed or took too long (the connection is then in an unknown state). */
const rollback = (client: Pg.PoolClient): Effect.Effect<Error | undefined> =>
  Effect.tryPromise(() => client.query("ROLLBACK")).pipe(
    Effect.timeoutFail({ duration: rollbackTimeout, onTimeout: () => new Error("ROLLBACK timed out") }),
    Effect.match({
      onFailure: (error) => error instanceof Error && !(error instanceof Cause.UnknownException)
        ? error
        : new Error("ROLLBACK failed"),
      onSuccess: () => undefined
    })
  )

/**
 * Run `use` in a transaction on a client checked out of the pool. Committed
 * by `use`; on failure rolled back and the client returned (discarded when
 * the rollback fails); on interruption the client is discarded at once —
 * closing its connection ends whatever it was doing and its transaction.
 */
const withPoolTransaction = <A>(
  pool: Pg.Pool,
  use: (client: Pg.PoolClient) => Effect.Effect<A, SqlError>
): Effect.Effect<A, SqlError> =>
  Effect.acquireUseRelease(
    Effect.tryPromise({
      // the listener is added as the client is handed over, before any I/O can come between
      try: () => pool.connect().then((client) => client.on("error", ignoreConnectionError)),
      catch: (cause) => new SqlError({ cause, message: "Failed to acquire connection" })
    }),
    (client) =>
      Effect.gen(function*() {
        yield* clientQuery(client, "BEGIN")
        const result = yield* use(client)
        yield* clientQuery(client, "COMMIT")
        return result
      }),
    (client, exit) => {
      const release = (error?: Error) =>
        Effect.sync(() => {
          client.off("error", ignoreConnectionError)
          client.release(error)
        })
      if (Exit.isSuccess(exit)) return release()
      if (Cause.isInterruptedOnly(exit.cause)) {
        return release(new Error("interrupted during a write; connection discarded"))
      }
      return Effect.flatMap(rollback(client), release)
    }
  )

/**
 * A checked-out client's connection may fail between two statements (the
 * server restarted, or ended the session): `pg` then emits an error event,
 * which without a listener ends the process. The next statement on the
 * client fails and says why, and the failed write discards the client.
 */
const ignoreConnectionError = (): void => {}

/**
 * How the PostgreSQL store is opened.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * Fail with a `StoreError` of reason `missing` instead of creating the
   * store when the database (in its current schema) holds none: for
   * commands that only read, which must not leave tables behind in a
   * database named by mistake. An existing store is still brought up to
   * date. Default false.
   */
  readonly mustExist?: boolean
  /**
   * On a server: open the connection that holds a run's lock (see
   * `beginRun`) while the store is opened, beside the migrations, so that
   * the first run begins without waiting for a new connection. For a
   * process about to ingest; a connection no run took is closed with the
   * layer's scope. Only {@link layerWith} opens it ahead. Default false.
   */
  readonly prepareRun?: boolean
}

/**
 * A run's own connection on a server, beside the pool: it holds the run's
 * lock, and why it was lost, if it was (the server restarted, or ended the
 * session). `connected` settles when the connection is made or has failed.
 */
interface RunConnection {
  readonly client: Pg.Client
  readonly lock: { pid: number; lost: Error | undefined }
  readonly connected: Promise<void>
}

const openRunConnection = (pool: Pg.Pool): RunConnection => {
  const client = new Pg.Client(pool.options)
  const lock: RunConnection["lock"] = { pid: 0, lost: undefined }
  // without a listener, the connection's failure would end the process
  client.on("error", (error) => void (lock.lost ??= error))
  client.on("end", () => void (lock.lost ??= new Error("the connection was closed")))
  const connected = client.connect().then(() => undefined)
  // awaited by the run that takes it; one opened ahead may never be
  connected.catch(() => undefined)
  return { client, lock, connected }
}

const closeRunConnection = (connection: RunConnection): Promise<void> => connection.client.end().catch(() => undefined)

/** A run's number, and whether an earlier run's seen lists are still there. */
const startRunStatement = `SELECT nextval('ragpipe_run_seq')::text AS id,
  EXISTS (SELECT 1 FROM ragpipe_seen) OR EXISTS (SELECT 1 FROM ragpipe_seen_dirs) AS listed`

const dropSeenStatement = "TRUNCATE ragpipe_seen, ragpipe_seen_dirs"

/** The table the migrations are recorded in: its presence is the store's. */
const migrationsTable = "ragpipe_migrations"

/** The store's tables (see `internal/migrations.ts`), whose sizes make its size. */
const storeTables = [
  "documents",
  "chunks",
  "failures",
  "ragpipe_meta",
  "ragpipe_seen",
  "ragpipe_seen_dirs",
  "ragpipe_dir_digests",
  migrationsTable
]

/**
 * Where the store is: its database, the schema its tables are created in
 * (the first of the search path that exists; `null` when none does), and
 * whether that schema holds a store.
 */
interface Location {
  readonly database: string
  /** the first schema of the search path that exists */
  readonly schema: string | null
  readonly searchPath: string
  readonly present: boolean
}

const locate = (sql: SqlClient.SqlClient) =>
  sql<Location>`
    SELECT current_database() AS database, current_schema() AS schema,
      current_setting('search_path') AS "searchPath",
      current_schema() IS NOT NULL
        AND to_regclass(format('%I.%I', current_schema(), ${migrationsTable}::text)) IS NOT NULL AS present`.pipe(
    Effect.map((rows) => rows[0] ?? { database: "", schema: null, searchPath: "", present: false }),
    Effect.mapError(queryError("looking for the store"))
  )

/**
 * A store table's name, qualified with the store's schema: only there may
 * the store be found. Unqualified, a table elsewhere on the search path
 * (a store in `public`, for a store in a schema of its own ahead of it)
 * would be taken for the store's. A schema whose name would need quoting is
 * left to the search path.
 */
const inSchema = (location: Location, table: string): string =>
  location.schema !== null && /^[a-z_][a-z0-9_]*$/.test(location.schema) ? `${location.schema}.${table}` : table

/** The search path names no schema that exists: there is nowhere to look for the store, or to make it. */
const noSchema = (location: Location) =>
  new StoreError({
    reason: "open",
    message: `no schema on the search path (${location.searchPath}) exists in database "${location.database}", ` +
      "so there is nowhere for the store: create the schema, or name one that exists in the search_path " +
      "(the URL's options, or the user's setting)"
  })

/** The store's schema holds no store. */
const storeMissing = (location: Location) =>
  new StoreError({
    reason: "missing",
    message: `there is no ragpipe store in database "${location.database}" ` +
      `(schema "${location.schema ?? "none"}"); run \`ragpipe ingest <dir>\` into it first, ` +
      "or name the database that holds the store"
  })

/**
 * The PostgreSQL implementation over the `SqlClient` in the context, opened
 * with `options`. Runs the migrations when built.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeWith = (
  options: Options = {}
): Effect.Effect<Service, StoreError, SqlClient.SqlClient> => makeIn(options, Option.none())

/** The store, with the scope that holds a run connection opened ahead (`Options.prepareRun`), if any. */
const makeIn = (
  options: Options,
  scope: Option.Option<Scope.Scope>
): Effect.Effect<Service, StoreError, SqlClient.SqlClient> => Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  // chunks are written with a binary COPY: on a server on a client of its
  // pool, on the embedded database from memory
  const serverPool = yield* Effect.serviceOption(ServerPool)
  /** the connection for the next run's lock, opened ahead and not taken yet */
  let runConnectionAhead: RunConnection | undefined
  if (options.prepareRun === true && Option.isSome(serverPool) && Option.isSome(scope)) {
    const pool = serverPool.value
    yield* Effect.acquireRelease(
      Effect.sync(() => void (runConnectionAhead = openRunConnection(pool))),
      () =>
        Effect.promise(() => {
          const untaken = runConnectionAhead
          runConnectionAhead = undefined
          return untaken === undefined ? Promise.resolve() : closeRunConnection(untaken)
        })
    ).pipe(Scope.extend(scope.value))
  }
  const location = yield* locate(sql)
  if (location.schema === null) return yield* noSchema(location)
  if (options.mustExist === true && !location.present) return yield* storeMissing(location)
  const copyArena = new CopyArena()
  const embeddedCopy = yield* Effect.serviceOption(EmbeddedCopy)

  yield* PgMigrator.run({ loader: migrations, table: inSchema(location, migrationsTable) }).pipe(
    Effect.provide(NodeContext.layer),
    // a migration whose statement failed is a defect of the migrator's, holding that failure
    Effect.catchAllDefect((defect) =>
      defect instanceof PgMigrator.MigrationError ? Effect.fail(defect) : Effect.die(defect)
    ),
    Effect.mapError(migrationError)
  )

  /**
   * `sql.withTransaction`, except that a COMMIT or ROLLBACK that fails (a
   * full disk, a lost connection) fails the effect with its error, where
   * `sql.withTransaction` makes it a defect: an error to report, not a bug.
   */
  const transaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | SqlError, R> =>
    Effect.catchSomeDefect(
      sql.withTransaction(effect),
      (defect) => defect instanceof SqlError ? Option.some(Effect.fail(defect)) : Option.none()
    )

  const readMeta = (key: string) =>
    sql<{ value: string }>`SELECT value FROM ragpipe_meta WHERE key = ${key}`.pipe(
      Effect.map((rows) => rows[0]?.value)
    )

  /** Whether a database in this encoding can hold every document's text. */
  const holdsAnyText = (encoding: string) => encoding === "UTF8" || encoding === "SQL_ASCII"

  /** The store's dimensions and model, and the database's encoding. */
  const readSettings = sql<{ value: string | null; model: string | null; encoding: string }>`
    SELECT (SELECT value FROM ragpipe_meta WHERE key = 'dimensions') AS value,
           (SELECT value FROM ragpipe_meta WHERE key = 'model') AS model,
           current_setting('server_encoding') AS encoding`

  const prepareLocked = ({ dimensions, model }: Parameters<Service["prepare"]>[0]) =>
    transaction(Effect.gen(function*() {
      yield* sql`LOCK TABLE ragpipe_meta IN EXCLUSIVE MODE`
      const [meta] = yield* readSettings
      // documents are any Unicode text: a database in an encoding that
      // cannot hold all of it would refuse whole groups of documents
      if (meta !== undefined && !holdsAnyText(meta.encoding)) {
        return yield* new StoreError({
          reason: "open",
          message: `the database's encoding is ${meta.encoding}, which cannot hold every document's text; ` +
            `ragpipe needs a UTF8 database (createdb -E UTF8 -T template0 NAME, or CREATE DATABASE NAME ` +
            `ENCODING 'UTF8' TEMPLATE template0)`
        })
      }
      const stored = meta?.value ?? undefined
      // a store that holds no document yet (a first run that failed early) takes any dimension
      const empty = stored !== undefined && Number(stored) !== dimensions &&
        (yield* sql<{ empty: boolean }>`SELECT NOT EXISTS (SELECT 1 FROM documents) AS empty`)[0]?.empty === true
      if (stored === undefined || empty) {
        yield* sql.unsafe(`ALTER TABLE chunks ALTER COLUMN embedding TYPE vector(${dimensions})`)
        yield* sql`INSERT INTO ragpipe_meta (key, value) VALUES ('dimensions', ${String(dimensions)})
          ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`
      } else if (Number(stored) !== dimensions) {
        const storedModel = (yield* readMeta("model")) ?? "unknown"
        return yield* new StoreError({
          reason: "dimension-mismatch",
          message: `this store holds ${stored}-dimensional embeddings (model ${storedModel}) but the embedder ` +
            `produces ${dimensions} dimensions (model ${model}); run again with --dimensions ${stored}, ` +
            `or use a new --data-dir to build a separate store with the new setting`
        })
      }
      // written only when it changes: a transaction that writes nothing commits without a flush (an
      // upsert whose update is skipped still locks the row, and its commit waits for the log)
      if (meta?.model !== model) {
        yield* sql`INSERT INTO ragpipe_meta (key, value) VALUES ('model', ${model})
          ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`
      }
    }))

  // A store already set for this embedder, in a fit encoding, is read in
  // one statement (as every run after the first finds it); anything to fix
  // or to refuse is looked at again under the table's lock.
  const prepare: Service["prepare"] = (embedder) =>
    Effect.flatMap(readSettings, ([meta]) =>
      meta !== undefined && meta.value === String(embedder.dimensions) && meta.model === embedder.model &&
        holdsAnyText(meta.encoding)
        ? Effect.void
        : prepareLocked(embedder)).pipe(
        Effect.catchTag("SqlError", (e) => Effect.fail(queryError("preparing the store")(e)))
      )

  // One run at a time: in this process by a flag; across processes, on a
  // server, by a session advisory lock (per schema) on a connection of its
  // own, held until the run's scope closes — a killed process's connection
  // takes its lock with it. An embedded store is one process's already (its
  // directory lock).
  const runFlag = makeRunFlag()
  /**
   * The lock connection of the current run on a server: its backend's
   * process id, and why it was lost, if it was (the server restarted, or
   * ended the session). A lost lock lets another run in, so this run must
   * not remove anything: see `removeUnseen`.
   */
  let runLock: { readonly pid: number; lost: Error | undefined } | undefined
  /** The run's connection, connected: the one opened ahead if it is sound, else a new one. */
  const connectForRun = async (pool: Pg.Pool): Promise<RunConnection> => {
    const ahead = runConnectionAhead
    runConnectionAhead = undefined
    if (ahead !== undefined) {
      if (await ahead.connected.then(() => ahead.lock.lost === undefined, () => false)) return ahead
      await closeRunConnection(ahead)
    }
    const fresh = openRunConnection(pool)
    try {
      await fresh.connected
    } catch (cause) {
      await closeRunConnection(fresh)
      throw cause
    }
    return fresh
  }
  /**
   * On a server, the run's lock, and the run's start on the connection that
   * holds it: the pool is left to the other work of a run's beginning (the
   * store's preparation). That connection is made with the pool's
   * connection settings, the search path among them, so its statements find
   * the store's tables as the pool's do (a pgvector schema the pool adds at
   * the path's end holds none of them).
   */
  const serverRun = (pool: Pg.Pool) =>
    Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => {
          const held = await connectForRun(pool)
          try {
            const { rows } = await held.client.query<{ locked: boolean; pid: number }>(
              // the store's schema as the pool sees it, whatever this connection's search path
              "SELECT pg_try_advisory_lock(hashtextextended('ragpipe-run:' || $1, 0)) AS locked, " +
                "pg_backend_pid() AS pid",
              [location.schema]
            )
            if (rows[0]?.locked === true) {
              held.lock.pid = rows[0].pid
              return held
            }
          } catch (cause) {
            await closeRunConnection(held)
            throw cause
          }
          await closeRunConnection(held)
          return undefined
        },
        catch: (cause) => queryError("locking the store for a run")(statementError(cause))
      }),
      (held) =>
        held === undefined ? Effect.void : Effect.promise(() => {
          runLock = undefined
          return closeRunConnection(held)
        })
    ).pipe(Effect.flatMap((held) => {
      if (held === undefined) return Effect.fail(storeBusy("another process"))
      runLock = held.lock
      return Effect.tryPromise({
        try: async () => {
          const { rows } = await held.client.query<{ id: string; listed: boolean }>(startRunStatement)
          if (rows[0]!.listed) await held.client.query(dropSeenStatement)
          return rows[0]!.id
        },
        catch: (cause) => queryError("starting a run")(statementError(cause))
      })
    }))

  // A run's seen list is dropped when the next run begins: removal stays
  // repeatable until then, and the list of a run that never got to its
  // removal (stopped, killed) does not linger. Truncated, not deleted: the
  // run holds the store, no other run has rows there, and deleted rows
  // would stay behind as dead tuples until a vacuum — on a server with
  // autovacuum off, 880,000 of them (64 MB) after 89 runs of 10,000 files;
  // the embedded database, which has no autovacuum worker, grew its table
  // by 740 kB a run. Truncating costs the embedded database about 30 ms a
  // run (medians of five re-runs: 561 against 529 ms), so lists already
  // empty are left alone — after a run that found every directory
  // unchanged, as an unchanged re-run does.
  const beginRun: Service["beginRun"] = Effect.zipRight(
    runFlag.hold,
    Option.match(serverPool, {
      onNone: () =>
        sql.unsafe<{ id: string; listed: boolean }>(startRunStatement).pipe(
          Effect.tap((rows) => rows[0]!.listed ? sql.unsafe(dropSeenStatement) : Effect.void),
          Effect.map((rows) => rows[0]!.id),
          Effect.mapError(queryError("starting a run"))
        ),
      onSome: serverRun
    })
  )

  const lookup: Service["lookup"] = (paths) =>
    paths.length === 0
      ? Effect.succeed(new Map())
      : sql<StoredDocument>`
          SELECT path, content_hash AS "contentHash", chunker, model, dimensions, complete, fingerprint
          FROM documents WHERE path = ANY(${paths as Array<string>}::text[])`.pipe(
          Effect.map((rows) => new Map(rows.map((row) => [row.path, row]))),
          Effect.mapError(queryError("reading stored documents"))
        )

  /**
   * The settings whose kept digests are in the table as this store last
   * read or kept them, when it wrote no document since: a keep for them
   * has nothing to do. (Only ever skips a keep, which cannot leave stale
   * digests behind: at worst a table another writer emptied stays empty,
   * and the next run computes.)
   */
  let keptIntact: string | undefined
  const documentsWritten = Effect.sync(() => void (keptIntact = undefined))
  const settingsKey = (settings: DocumentSettings) => `${settings.chunker}\0${settings.model}\0${settings.dimensions}`

  const markSeen: Service["markSeen"] = (runId, paths, fingerprints) =>
    paths.length === 0 ? Effect.void : (fingerprints === undefined
      ? sql`
      INSERT INTO ragpipe_seen (run_id, path) SELECT ${runId}::bigint, unnest(${paths as Array<string>}::text[])`
      : Effect.zipRight(
        documentsWritten,
        sql`
      UPDATE documents d SET seen_run = ${runId}::bigint, fingerprint = n.fingerprint
      FROM unnest(${paths as Array<string>}::text[], ${fingerprints as Array<string | null>}::text[])
        AS n(path, fingerprint)
      WHERE d.path = n.path`
      )).pipe(
      Effect.asVoid,
      Effect.mapError(queryError("marking unchanged documents"))
    )

  // One statement per group of files: each path is one probe of the path
  // index (OFFSET 0 keeps the planner from flattening the subquery: on a
  // freshly loaded table without statistics it estimated one matching
  // document and scanned all of them for every file, 724 ms for 1,024
  // files against 3 ms), and the matches are listed seen at once. Files and
  // matches travel as one JSON text and one list of indexes, not as arrays
  // of rows.
  const claimUnchanged: Service["claimUnchanged"] = (runId, files, settings) =>
    files.length === 0 ? Effect.succeed(new Set()) : Effect.suspend(() =>
      sql<{ matched: string }>`
        WITH m AS (
            SELECT n.i, d.path
            FROM json_to_recordset(${JSON.stringify(files.map((f, i) => ({ i, p: f.path, f: f.fingerprint })))}::json)
              AS n(i int, p text, f text)
            CROSS JOIN LATERAL (
              SELECT path, fingerprint, chunker, model, dimensions, complete
              FROM documents WHERE path = n.p OFFSET 0) d
            WHERE d.fingerprint = n.f AND d.complete AND d.chunker = ${settings.chunker}
              AND d.model = ${settings.model} AND d.dimensions = ${settings.dimensions}),
          seen AS (INSERT INTO ragpipe_seen (run_id, path) SELECT ${runId}::bigint, path FROM m)
        SELECT coalesce(string_agg(i::text, ','), '') AS matched FROM m`
    ).pipe(
      Effect.map((rows) => {
        const matched = rows[0]?.matched ?? ""
        return new Set(matched === "" ? [] : matched.split(",").map((i) => files[Number(i)]!.path))
      }),
      Effect.mapError(queryError("reading stored documents"))
    )

  /** The directory of a path column: up to its last `/`, `""` for a path without one. */
  const directoryOf = (column: string) =>
    sql.unsafe(
      `CASE WHEN strpos(${column}, '/') = 0 THEN '' ` +
        `ELSE left(${column}, length(${column}) - strpos(reverse(${column}), '/')) END`
    )

  // Each directory's documents as one line per document, in the byte order
  // of their paths (the order `directoryDigest` sorts in), hashed on the
  // server: what crosses the connection is one digest per directory. For
  // the benchmark's 10,000 documents in 283 directories, 13-16 ms through
  // psql on an idle server; 31 ms in the server's log while a run walked.
  const computedDigests = (settings: DocumentSettings) =>
    sql`
          SELECT dir, count(*)::int AS n,
                 encode(sha256(convert_to(string_agg(octet_length(path)::text || ':' || path || fingerprint, E'\n'
                   ORDER BY path COLLATE "C"), 'UTF8')), 'hex') AS digest
          FROM (SELECT ${directoryOf("path")} COLLATE "C" AS dir, path, fingerprint,
                       complete AND fingerprint IS NOT NULL AND chunker = ${settings.chunker}
                         AND model = ${settings.model} AND dimensions = ${settings.dimensions} AS current
                FROM documents) d
          GROUP BY dir
          HAVING bool_and(current)
          ORDER BY count(*) DESC
          LIMIT ${directoryDigestLimit}`

  const keptFor = (settings: DocumentSettings) =>
    sql`chunker = ${settings.chunker} AND model = ${settings.model} AND dimensions = ${settings.dimensions}`

  type DigestRow = { documents: number; directory: string | null; n: number | null; digest: string | null }

  // Those `keepDirectoryDigests` kept, when no write has dropped them since
  // (one read of a few hundred rows); else computed.
  const directoryDigests: NonNullable<Service["directoryDigests"]> = (settings) =>
    Effect.flatMap(
      sql<DigestRow>`
        SELECT total AS documents, dir AS directory, documents AS n, digest
        FROM ragpipe_dir_digests WHERE ${keptFor(settings)}`,
      (kept) =>
        Effect.suspend(() => {
          // none kept: another writer may have dropped them
          keptIntact = kept.length > 0 ? settingsKey(settings) : undefined
          return kept.length > 0 ? Effect.succeed(kept) : sql<DigestRow>`
            WITH g AS (${computedDigests(settings)})
            SELECT t.documents, g.dir AS directory, g.n, g.digest
            FROM (SELECT count(*)::int AS documents FROM documents) t LEFT JOIN g ON true`
        })
    ).pipe(
      Effect.map((rows): DirectoryDigests => ({
        documents: rows[0]?.documents ?? 0,
        directories: new Map(
          rows.flatMap((row) =>
            row.directory === null || row.n === null || row.digest === null
              ? []
              : [[row.directory, { digest: row.digest, documents: row.n }] as const]
          )
        )
      })),
      Effect.mapError(queryError("reading stored documents"))
    )

  // Computed unless kept already for these settings (the one-time filter
  // then skips the computation), replacing those of other settings.
  const keepDirectoryDigests: NonNullable<Service["keepDirectoryDigests"]> = (settings) =>
    keptIntact === settingsKey(settings) ? Effect.void : sql`
      WITH other AS (DELETE FROM ragpipe_dir_digests WHERE NOT (${keptFor(settings)})),
           g AS (${computedDigests(settings)})
      INSERT INTO ragpipe_dir_digests (chunker, model, dimensions, dir, documents, digest, total)
      SELECT ${settings.chunker}, ${settings.model}, ${settings.dimensions}, g.dir, g.n, g.digest,
             (SELECT count(*)::int FROM documents)
      FROM g
      WHERE NOT EXISTS (SELECT 1 FROM ragpipe_dir_digests WHERE ${keptFor(settings)})`.pipe(
      Effect.zipRight(Effect.sync(() => void (keptIntact = settingsKey(settings)))),
      Effect.mapError(queryError("keeping directory digests"))
    )

  const markDirectoriesSeen: NonNullable<Service["markDirectoriesSeen"]> = (runId, directories) =>
    directories.length === 0 ? Effect.void : sql`
      INSERT INTO ragpipe_seen_dirs (run_id, dir) SELECT ${runId}::bigint, unnest(${directories as Array<string>}::text[])`
      .pipe(
        Effect.asVoid,
        Effect.mapError(queryError("marking unchanged documents"))
      )

  const hasComplete: Service["hasComplete"] = (settings) =>
    sql<{ found: boolean }>`
      SELECT EXISTS (
        SELECT 1 FROM documents
        WHERE complete AND chunker = ${settings.chunker} AND model = ${settings.model}
          AND dimensions = ${settings.dimensions}) AS found`.pipe(
      Effect.map((rows) => rows[0]?.found === true),
      Effect.mapError(queryError("reading stored documents"))
    )

  /**
   * The statements of one write, on one connection in one transaction:
   * upsert the documents, replace their chunks (written by `insertChunks`),
   * and bring their failures up to date. `exec` runs one statement.
   */
  const writeAll = (
    exec: (text: string, params: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<unknown>, SqlError>,
    insertChunks: (rows: ReadonlyArray<ChunkRow>) => Effect.Effect<unknown, SqlError>,
    writes: ReadonlyArray<DocumentWrite>
  ) =>
    Effect.gen(function*() {
      const ids = new Map<string, string>()
      const replaced: Array<string> = []
      for (const group of batches(writes, insertBatchRows)) {
        const rows = (yield* exec(upsertDocumentsSql, [JSON.stringify(group.map(documentRow))])) as ReadonlyArray<
          { readonly id: string; readonly path: string; readonly inserted: boolean }
        >
        for (const row of rows) {
          ids.set(row.path, row.id)
          if (!row.inserted) replaced.push(row.id)
        }
      }
      // a document inserted just now has no chunks and no failures yet: only replaced ones are cleared
      if (replaced.length > 0) yield* exec(deleteChunksSql, [replaced])
      const rows = writes.flatMap((w) => {
        const documentId = ids.get(w.document.path)!
        return w.chunks.map(({ chunk, embedding }): ChunkRow => ({
          id: chunk.id,
          documentId,
          chunkIndex: chunk.index,
          text: chunk.text,
          headingPath: chunk.headingPath,
          tokenEstimate: chunk.tokenEstimate,
          embedding
        }))
      })
      if (rows.length > 0) yield* insertChunks(rows)
      const failed = writes.flatMap((w) => {
        const documentId = ids.get(w.document.path)!
        return (w.failures ?? []).map((f) => ({ documentId, ...f }))
      })
      // failures of these documents that are not failing any more are cleared
      if (replaced.length > 0) {
        yield* exec(clearFailuresSql, [replaced, failed.map((f) => f.documentId), failed.map((f) => f.chunkIndex)])
      }
      for (const batch of batches(failed, insertBatchRows)) {
        yield* exec(insertFailuresSql, [
          batch.map((f) => f.documentId),
          batch.map((f) => f.chunkIndex),
          batch.map((f) => f.kind),
          batch.map((f) => f.message),
          batch.map((f) => f.attempts)
        ])
      }
    })

  // Through the SqlClient: chunks by a binary COPY from memory where the
  // database offers one (the embedded database), else by set-based INSERTs
  // of `insertBatchRows` rows, 7 array parameters each.
  const sqlExec = (text: string, params: ReadonlyArray<unknown>) => sql.unsafe(text, params)
  const insertChunksThroughSql = (rows: ReadonlyArray<ChunkRow>) =>
    Option.match(embeddedCopy, {
      onNone: () => insertChunkBatches(rows),
      onSome: (copy) =>
        Effect.suspend(() => copy.copyFrom(chunkCopyFromMemoryStatement, encodeChunkCopy(rows))).pipe(
          Effect.mapError(statementError)
        )
    })
  const insertChunkBatches = (rows: ReadonlyArray<ChunkRow>) =>
    Effect.forEach(batches(rows, insertBatchRows), (batch) =>
      sqlExec(insertChunksSql, [
        batch.map((r) => r.id),
        batch.map((r) => r.documentId),
        batch.map((r) => r.chunkIndex),
        batch.map((r) => r.text),
        batch.map((r) => JSON.stringify(r.headingPath)),
        batch.map((r) => r.tokenEstimate),
        batch.map((r) => vectorLiteral(r.embedding))
      ]), { discard: true })

  const writeDocuments: Service["writeDocuments"] = (all) => {
    // one row per path: the last write of a path wins
    const writes = [...new Map(all.map((w) => [w.document.path, w])).values()]
    if (writes.length === 0) return Effect.void
    const write = Option.isSome(serverPool)
      // on a server: one client of its pool, chunks by binary COPY
      ? withPoolTransaction(serverPool.value, (client) =>
        writeAll(
          (text, params) => Effect.map(clientQuery(client, text, params), (result) => result.rows),
          (rows) => copyChunks(client, rows, copyArena),
          writes
        ))
      : transaction(writeAll(sqlExec, insertChunksThroughSql, writes))
    return Effect.zipRight(documentsWritten, write).pipe(
      Effect.mapError(queryError(
        writes.length === 1 ? `writing ${writes[0]!.document.path}` : `writing ${writes.length} documents`
      ))
    )
  }

  // On a server, only while the run still holds its lock: a run whose lock
  // connection was lost could be sharing the store with another run by now,
  // whose start emptied this run's seen list. The lock is checked in the
  // statement that removes.
  const removeUnseen: Service["removeUnseen"] = (runId) =>
    Effect.suspend(() => {
      keptIntact = undefined
      const lock = runLock
      if (lock?.lost !== undefined) return Effect.fail(lockLost(lock.lost))
      const pid = lock === undefined ? null : lock.pid
      return sql<{ held: boolean; n: number }>`
        WITH held AS (
            SELECT ${pid}::int IS NULL OR EXISTS (
              SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = ${pid}::int) AS ok),
          removed AS (
            DELETE FROM documents d WHERE (SELECT ok FROM held) AND d.seen_run <> ${runId}::bigint
              AND NOT EXISTS (SELECT 1 FROM ragpipe_seen s WHERE s.run_id = ${runId}::bigint AND s.path = d.path)
              AND NOT EXISTS (
                SELECT 1 FROM ragpipe_seen_dirs s WHERE s.run_id = ${runId}::bigint
                  AND s.dir = ${directoryOf("d.path")})
            RETURNING id),
          gone AS (DELETE FROM chunks WHERE document_id IN (SELECT id FROM removed))
        SELECT (SELECT ok FROM held) AS held, count(*)::int AS n FROM removed`.pipe(
        Effect.mapError(queryError("removing deleted documents")),
        Effect.flatMap((rows) =>
          rows[0]?.held === false
            ? Effect.fail(lockLost(lock?.lost ?? new Error("its lock is no longer held")))
            : Effect.succeed(rows[0]?.n ?? 0)
        )
      )
    })

  type HitRow = { path: string; chunkIndex: number; headingPath: ReadonlyArray<string>; text: string; score: number }

  const hasIndex = sql<{ present: boolean }>`SELECT to_regclass(${hnswIndexName}) IS NOT NULL AS present`.pipe(
    Effect.map((rows) => rows[0]?.present === true)
  )

  // Exact: every chunk's distance (of the documents of `model`, when given),
  // ties broken by path and chunk index.
  const exactSearch = (query: Embedding, limit: number, model?: string) =>
    sql<HitRow>`
      SELECT d.path, c.chunk_index AS "chunkIndex", c.heading_path AS "headingPath", c.text,
             1 - (c.embedding <=> q.v) AS score
      FROM chunks c JOIN documents d ON d.id = c.document_id,
           (SELECT ${vectorLiteral(query)}::vector AS v) q
      WHERE ${model === undefined ? sql`true` : sql`d.model = ${model}`}
      ORDER BY c.embedding <=> q.v, d.path, c.chunk_index
      LIMIT ${limit}`

  // With the HNSW index: the planner only uses it for an `ORDER BY distance
  // LIMIT k` with no other sort key, so the nearest `limit` chunks are found
  // first (approximately, through the index when the planner picks it) and
  // only those are sorted with the tie-breakers. The index scan returns at
  // most `hnsw.ef_search` rows, hence the setting.
  const indexedSearch = (query: Embedding, limit: number) =>
    transaction(Effect.zipRight(
      sql.unsafe(`SET LOCAL hnsw.ef_search = ${Math.min(1000, Math.max(40, Math.floor(limit)))}`),
      sql<HitRow>`
        WITH nearest AS MATERIALIZED (
          SELECT c.document_id, c.chunk_index, c.embedding <=> q.v AS distance
          FROM chunks c, (SELECT ${vectorLiteral(query)}::vector AS v) q
          ORDER BY c.embedding <=> q.v
          LIMIT ${limit})
        SELECT d.path, c.chunk_index AS "chunkIndex", c.heading_path AS "headingPath", c.text,
               1 - n.distance AS score
        FROM nearest n JOIN chunks c ON c.document_id = n.document_id AND c.chunk_index = n.chunk_index
          JOIN documents d ON d.id = c.document_id
        ORDER BY n.distance, d.path, c.chunk_index`
    ))

  const search: Service["search"] = (query, limit, model) =>
    (model !== undefined
      ? exactSearch(query, limit, model)
      : Effect.flatMap(hasIndex, (indexed) => indexed ? indexedSearch(query, limit) : exactSearch(query, limit))).pipe(
      Effect.map((rows) =>
        rows.map((row, i): SearchHit => ({
          rank: i + 1,
          score: Number(row.score),
          path: row.path,
          chunkIndex: row.chunkIndex,
          heading: row.headingPath.join(" > "),
          text: row.text
        }))
      ),
      Effect.mapError(queryError("searching"))
    )

  /** `StoreStats.models` as one JSON text, in a statement's select list */
  const documentsByModel = sql.unsafe(`(SELECT coalesce(json_object_agg(model, n), '{}')::text
    FROM (SELECT model, count(*)::int AS n FROM documents GROUP BY model) m)`)

  const stats: Service["stats"] = Effect.gen(function*() {
    // the size of the store's own tables, with their indexes and TOAST, not of the database
    // around them, which may hold anything else
    const tables = sql.unsafe(storeTables.map((t) => `to_regclass('${inSchema(location, t)}')`).join(", "))
    const [counts] = yield* sql<{ chunks: number; models: string; bytes: string }>`
      SELECT (SELECT count(*)::int FROM chunks) AS chunks, ${documentsByModel} AS models,
             (SELECT coalesce(sum(pg_total_relation_size(t)), 0)::text FROM unnest(ARRAY[${tables}]) AS t) AS bytes`
    const dimensions = yield* readMeta("dimensions")
    const model = yield* readMeta("model")
    const models = JSON.parse(counts!.models) as Record<string, number>
    return {
      documents: Object.values(models).reduce((sum, n) => sum + n, 0),
      chunks: counts!.chunks,
      dimensions: dimensions === undefined ? null : Number(dimensions),
      model: model ?? null,
      models,
      storeBytes: Number(counts!.bytes)
    }
  }).pipe(Effect.mapError(queryError("reading store statistics")))

  // The documents are read (by model), the chunks only probed for one: on
  // the benchmark corpus, counting its 53,454 chunks took 19-66 ms, and
  // the count grows with the store, search after search.
  const searchScope: NonNullable<Service["searchScope"]> = Effect.gen(function*() {
    const [scope] = yield* sql<{ hasChunks: boolean; models: string }>`
      SELECT EXISTS (SELECT 1 FROM chunks) AS "hasChunks", ${documentsByModel} AS models`
    const dimensions = yield* readMeta("dimensions")
    return {
      hasChunks: scope!.hasChunks,
      dimensions: dimensions === undefined ? null : Number(dimensions),
      models: JSON.parse(scope!.models) as Record<string, number>
    }
  }).pipe(Effect.mapError(queryError("reading store statistics")))

  const failures: Service["failures"] = (limit) =>
    sql<FailureRow>`
      SELECT d.path, f.chunk_index AS "chunkIndex", f.error_kind AS kind, f.message, f.attempts,
             to_char(f.first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS "firstSeen",
             to_char(f.last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS "lastSeen"
      FROM failures f JOIN documents d ON d.id = f.document_id
      ORDER BY d.path, f.chunk_index
      LIMIT ${limit}`.pipe(Effect.mapError(queryError("reading failures")))

  // A cursor in one transaction: one sort, one snapshot, and pages of
  // `checksumPageRows` rows, whatever the store's size or collation.
  const checksum: Service["checksum"] = transaction(Effect.gen(function*() {
    yield* sql.unsafe(`DECLARE ragpipe_checksum NO SCROLL CURSOR FOR
      SELECT d.path, c.chunk_index AS "chunkIndex",
             encode(sha256(convert_to(c.text, 'UTF8')), 'hex') AS "textHash",
             encode(sha256(substring(vector_send(c.embedding) FROM 5)), 'hex') AS "embeddingHash"
      FROM chunks c JOIN documents d ON d.id = c.document_id
      ORDER BY d.path COLLATE "C", c.chunk_index`)
    const digest = makeChecksum()
    for (;;) {
      const rows = yield* sql.unsafe<ChecksumRow>(`FETCH ${checksumPageRows} FROM ragpipe_checksum`)
      for (const row of rows) digest.add(row)
      if (rows.length < checksumPageRows) break
    }
    yield* sql.unsafe(`CLOSE ragpipe_checksum`)
    return digest.digest()
  })).pipe(Effect.mapError(queryError("computing the checksum")))

  const createIndex: Service["createIndex"] = Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const [column] = yield* sql<{ typmod: number }>`
      SELECT a.atttypmod AS typmod FROM pg_attribute a
      WHERE a.attrelid = to_regclass('chunks') AND a.attname = 'embedding' AND NOT a.attisdropped`
    if (column === undefined || column.typmod < 0) {
      return yield* new StoreError({
        reason: "query",
        message: "nothing to index yet; run ragpipe ingest first (the store has no embeddings, so their " +
          "dimensions are not known)"
      })
    }
    const created = yield* transaction(Effect.gen(function*() {
      const [existing] = yield* sql<{ exists: boolean }>`
        SELECT to_regclass(${hnswIndexName}) IS NOT NULL AS exists`
      if (existing?.exists === true) return false
      const [version] = yield* sql<{ embedded: boolean }>`
        SELECT version() LIKE '%PGlite%' OR version() LIKE '%emscripten%' AS embedded`
      const embedded = version?.embedded === true
      // for this transaction only: the pooled connection keeps its settings
      const memory = embedded ? indexBuildMemory.embedded : indexBuildMemory.server
      yield* sql.unsafe(`SET LOCAL maintenance_work_mem = '${memory}'`)
      yield* sql.unsafe(`SET LOCAL statement_timeout = 0`)
      if (!embedded) {
        // A server notices a vanished client (kill -9) only between statements; during a long build
        // it would go on holding the table's lock. Where the platform supports it (Linux, macOS, BSD),
        // have it look four times a second. In a savepoint, as other platforms refuse the setting.
        yield* transaction(sql.unsafe(`SET LOCAL client_connection_check_interval = 250`)).pipe(
          Effect.ignore
        )
      }
      yield* sql.unsafe(
        `CREATE INDEX IF NOT EXISTS ${hnswIndexName} ON chunks USING hnsw (embedding vector_cosine_ops)`
      )
      return true
    }))
    const end = yield* Clock.currentTimeMillis
    return { created, millis: end - start }
  }).pipe(Effect.catchTag("SqlError", (e) => Effect.fail(queryError("building the vector index")(e))))

  return {
    prepare,
    beginRun,
    lookup,
    claimUnchanged,
    directoryDigests,
    markDirectoriesSeen,
    keepDirectoryDigests,
    hasComplete,
    markSeen,
    writeDocuments,
    removeUnseen,
    search,
    stats,
    searchScope,
    failures,
    checksum,
    createIndex
  }
})

/**
 * The PostgreSQL implementation over the `SqlClient` in the context: creates
 * the store when the database holds none. Runs the migrations when built.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<Service, StoreError, SqlClient.SqlClient> = makeWith()

/**
 * The PostgreSQL store, opened with `options`, as a layer over the
 * `SqlClient` in the context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerWith = (options: Options): Layer.Layer<VectorStore, StoreError, SqlClient.SqlClient> =>
  Layer.scoped(VectorStore, Effect.flatMap(Effect.scope, (scope) => makeIn(options, Option.some(scope))))

/**
 * The PostgreSQL store as a layer over the `SqlClient` in the context
 * (created when the database holds none).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<VectorStore, StoreError, SqlClient.SqlClient> = layerWith({})

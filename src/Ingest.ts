/**
 * The ingest pipeline: one `Stream` from loaded documents to stored,
 * embedded chunks. Unchanged documents are skipped without embedding,
 * changed ones are replaced atomically, and — after a walk that finished
 * cleanly — documents no longer on disk are removed.
 *
 * @since 0.1.0
 */
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import * as Chunker from "./Chunker.js"
import type { Chunk as TextChunk, EmbeddedChunk, SkippedFile, SourceDocument } from "./Domain.js"
import { Embedder } from "./Embedder.js"
import { EmbedError, type LoaderError, type StoreError } from "./Errors.js"
import { batches } from "./internal/batch.js"
import * as Loader from "./Loader.js"
import type { ResourceLedger } from "./ResourceLedger.js"
import { type DocumentWrite, type StoredDocument, VectorStore } from "./VectorStore.js"

/**
 * Live counters of a run, readable while it goes on.
 *
 * @since 0.1.0
 * @category models
 */
export interface Progress {
  readonly filesSeen: number
  readonly filesIngested: number
  readonly filesUnchanged: number
  readonly filesSkipped: number
  readonly chunksWritten: number
  readonly chunksFailed: number
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const emptyProgress: Progress = {
  filesSeen: 0,
  filesIngested: 0,
  filesUnchanged: 0,
  filesSkipped: 0,
  chunksWritten: 0,
  chunksFailed: 0
}

/**
 * How a run ended.
 *
 * - `completed`: the source was exhausted.
 * - `stopped`: `stop` fired; in-flight documents were finished (or rolled
 *   back at the deadline) and nothing more was read.
 *
 * @since 0.1.0
 * @category models
 */
export type Outcome = "completed" | "stopped"

/**
 * The result of a run.
 *
 * @since 0.1.0
 * @category models
 */
export interface Summary {
  readonly files: {
    readonly seen: number
    readonly ingested: number
    readonly unchanged: number
    readonly skipped: number
    readonly removed: number
  }
  readonly chunks: { readonly written: number; readonly failed: number; readonly cached: number }
  readonly breaker: null
  readonly durationMs: number
  readonly outcome: Outcome
  /** false when some directory could not be read: then nothing was removed */
  readonly walkComplete: boolean
  /** the first `maxSkippedListed` skipped files, with reasons */
  readonly skippedFiles: ReadonlyArray<SkippedFile>
  /** count of skipped files per reason */
  readonly skippedByReason: Readonly<Record<string, number>>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** chunk size and overlap (default {@link Chunker.defaults}) */
  readonly chunker?: Chunker.Options
  /** documents chunked, embedded and written at once (default 2) */
  readonly documentConcurrency?: number
  /** documents looked up in the store per query (default 128) */
  readonly lookupBatchSize?: number
  /**
   * When this effect completes the run stops reading new documents; the
   * documents in flight get `stopDeadline` to finish, then are rolled back.
   */
  readonly stop?: Effect.Effect<unknown>
  /** default 5 seconds */
  readonly stopDeadline?: Duration.DurationInput
  /** updated as the run goes on */
  readonly progress?: Ref.Ref<Progress>
  /**
   * Embedded documents are written in groups, one transaction per group: a
   * group closes at this many chunks (default 2000) or after
   * `writeGroupWindow` (default 500 ms), whichever comes first.
   */
  readonly writeGroupChunks?: number
  /** default 500 ms */
  readonly writeGroupWindow?: Duration.DurationInput
  /** how many skipped files the summary lists (default 1000) */
  readonly maxSkippedListed?: number
  /**
   * Remove stored documents the source did not produce (default true). Only
   * ever done when the source completed and reported no unreadable
   * directory.
   */
  readonly removeMissing?: boolean
}

/**
 * An item of an ingest source: a document, or a file passed over.
 *
 * @since 0.1.0
 * @category models
 */
export type SourceItem = Either.Either<SourceDocument, SkippedFile>

/**
 * Skip reasons that leave the stored version of a file in place: the file
 * still exists, it just could not be read this time.
 */
const keepsStoredVersion = (reason: SkippedFile["reason"]): boolean =>
  reason === "unreadable" || reason === "unreadable-directory"

interface Counters {
  seen: number
  ingested: number
  unchanged: number
  skipped: number
  written: number
  failed: number
}

/**
 * Ingest a stream of documents (from disk or from anywhere else) into the
 * store.
 *
 * @since 0.1.0
 * @category pipelines
 */
export const ingestStream = Effect.fn("Ingest.ingestStream")(function*<E, R>(
  source: Stream.Stream<SourceItem, E, R>,
  options: Options = {}
) {
  const embedder = yield* Embedder
  const store = yield* VectorStore
  const chunkerOptions = options.chunker ?? Chunker.defaults
  const chunkerKey = Chunker.settingsKey(chunkerOptions)
  const maxSkippedListed = options.maxSkippedListed ?? 1000
  const start = yield* Clock.currentTimeMillis

  yield* store.prepare(embedder)
  const runId = yield* store.beginRun
  yield* Effect.logInfo("ingest started").pipe(
    Effect.annotateLogs({ run: runId, model: embedder.model, chunker: chunkerKey })
  )

  const counters: Counters = { seen: 0, ingested: 0, unchanged: 0, skipped: 0, written: 0, failed: 0 }
  const skippedFiles: Array<SkippedFile> = []
  const skippedByReason: Record<string, number> = {}
  let walkComplete = true
  let stopped = false

  const publishNow = Effect.suspend(() =>
    options.progress === undefined ? Effect.void : Ref.set(options.progress, {
      filesSeen: counters.seen,
      filesIngested: counters.ingested,
      filesUnchanged: counters.unchanged,
      filesSkipped: counters.skipped,
      chunksWritten: counters.written,
      chunksFailed: counters.failed
    })
  )

  const isUnchanged = (doc: SourceDocument, stored: StoredDocument | undefined): boolean =>
    stored !== undefined &&
    stored.contentHash === doc.contentHash &&
    stored.chunker === chunkerKey &&
    stored.model === embedder.model &&
    stored.dimensions === embedder.dimensions

  /** Look a group of items up in the store; returns the documents to (re)write. */
  const classify = (items: Iterable<SourceItem>) =>
    Effect.gen(function*() {
      const docs: Array<SourceDocument> = []
      const keep: Array<string> = []
      for (const item of items) {
        counters.seen++
        if (Either.isRight(item)) {
          docs.push(item.right)
          continue
        }
        const skipped = item.left
        counters.skipped++
        skippedByReason[skipped.reason] = (skippedByReason[skipped.reason] ?? 0) + 1
        if (skippedFiles.length < maxSkippedListed) skippedFiles.push(skipped)
        if (skipped.reason === "unreadable-directory") walkComplete = false
        if (keepsStoredVersion(skipped.reason)) keep.push(skipped.path)
      }
      const stored = yield* store.lookup(docs.map((d) => d.path))
      const changed: Array<SourceDocument> = []
      for (const doc of docs) {
        if (isUnchanged(doc, stored.get(doc.path))) {
          counters.unchanged++
          keep.push(doc.path)
        } else {
          changed.push(doc)
        }
      }
      yield* store.markSeen(runId, keep)
      yield* publishNow
      return changed
    })

  const embedChunks = (chunks: ReadonlyArray<TextChunk>) =>
    Effect.forEach(
      batches(chunks, embedder.maxBatchSize),
      (batch) =>
        embedder.embedBatch(batch.map((c) => c.text)).pipe(
          Effect.filterOrFail(
            (vectors) =>
              vectors.length === batch.length && vectors.every((v) => v.length === embedder.dimensions),
            () =>
              new EmbedError({
                reason: "malformed-response",
                message: `the embedder ${embedder.model} returned vectors that do not match the request ` +
                  `(expected ${batch.length} of ${embedder.dimensions} dimensions)`
              })
          ),
          Effect.map((vectors) => batch.map((chunk, i): EmbeddedChunk => ({ chunk, embedding: vectors[i]! })))
        )
    ).pipe(Effect.map((parts) => parts.flat()))

  /** Chunk and embed one document; `None` when embedding failed (counted). */
  const embedDocument = (doc: SourceDocument) =>
    Effect.gen(function*() {
      const chunks = Chunker.chunkDocument(doc, chunkerOptions)
      const embedded = yield* Effect.either(embedChunks(chunks))
      if (Either.isRight(embedded)) {
        return Option.some<DocumentWrite>({
          document: doc,
          chunker: chunkerKey,
          model: embedder.model,
          dimensions: embedder.dimensions,
          chunks: embedded.right,
          runId
        })
      }
      // Keep whatever version is stored; the next run tries again.
      counters.failed += chunks.length
      yield* store.markSeen(runId, [doc.path])
      yield* Effect.logWarning(`could not embed ${doc.path}: ${embedded.left.message}`)
      yield* publishNow
      return Option.none<DocumentWrite>()
    })

  /** Write a group of embedded documents in one short transaction. */
  const writeGroup = (group: Chunk.Chunk<DocumentWrite>) =>
    Effect.gen(function*() {
      const writes = Chunk.toReadonlyArray(group)
      yield* store.writeDocuments(writes)
      for (const write of writes) {
        counters.ingested++
        counters.written += write.chunks.length
      }
      yield* publishNow
    })

  const writeGroupCost = options.writeGroupChunks ?? 2000
  const groupWrites = Sink.foldWeighted({
    initial: Chunk.empty<DocumentWrite>(),
    maxCost: writeGroupCost,
    cost: (_, write: DocumentWrite) => write.chunks.length + 1,
    body: (group, write) => Chunk.append(group, write)
  })

  const stopSignal = options.stop === undefined
    ? Option.none<Effect.Effect<void>>()
    : Option.some(Effect.asVoid(options.stop).pipe(Effect.tap(() => Effect.sync(() => void (stopped = true)))))
  const untilStopped = <A, E2, R2>(stream: Stream.Stream<A, E2, R2>) =>
    Option.match(stopSignal, { onNone: () => stream, onSome: (signal) => Stream.interruptWhen(stream, signal) })

  const pipeline = untilStopped(source).pipe(
    Stream.groupedWithin(options.lookupBatchSize ?? 128, Duration.millis(200)),
    Stream.mapEffect(classify),
    Stream.flattenIterables,
    untilStopped,
    Stream.mapEffect(embedDocument, { concurrency: options.documentConcurrency ?? 2 }),
    Stream.filterMap((write) => write),
    Stream.aggregateWithin(groupWrites, Schedule.spaced(options.writeGroupWindow ?? Duration.millis(500))),
    Stream.mapEffect(writeGroup),
    Stream.runDrain
  )

  const deadline = Option.match(stopSignal, {
    onNone: () => pipeline,
    onSome: (signal) =>
      Effect.raceFirst(
        pipeline,
        signal.pipe(Effect.zipRight(Effect.sleep(options.stopDeadline ?? Duration.seconds(5))))
      )
  })
  yield* deadline

  const outcome: Outcome = stopped ? "stopped" : "completed"
  const removed = outcome === "completed" && walkComplete && options.removeMissing !== false
    ? yield* store.removeUnseen(runId)
    : 0
  const end = yield* Clock.currentTimeMillis
  yield* publishNow
  const summary: Summary = {
    files: {
      seen: counters.seen,
      ingested: counters.ingested,
      unchanged: counters.unchanged,
      skipped: counters.skipped,
      removed
    },
    chunks: { written: counters.written, failed: counters.failed, cached: 0 },
    breaker: null,
    durationMs: end - start,
    outcome,
    walkComplete,
    skippedFiles,
    skippedByReason
  }
  return summary
}) as <E, R>(
  source: Stream.Stream<SourceItem, E, R>,
  options?: Options
) => Effect.Effect<Summary, E | StoreError, R | Embedder | VectorStore>

/**
 * Walk a directory and ingest what it holds.
 *
 * @since 0.1.0
 * @category pipelines
 */
export const ingestDirectory = (
  loader: Loader.Options,
  options: Options = {}
): Effect.Effect<Summary, LoaderError | StoreError, Embedder | VectorStore | ResourceLedger> =>
  ingestStream(Loader.walk(loader), options)


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
import * as CircuitBreaker from "./CircuitBreaker.js"
import type { EmbeddedChunk, SkippedFile, SourceDocument } from "./Domain.js"
import { Embedder } from "./Embedder.js"
import { EmbedError, type LoaderError, type StoreError } from "./Errors.js"
import { batches } from "./internal/batch.js"
import * as Loader from "./Loader.js"
import * as Retry from "./Retry.js"
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
 * - `broken`: the error-rate breaker ended the run (see `Summary.breaker`).
 *
 * @since 0.1.0
 * @category models
 */
export type Outcome = "completed" | "stopped" | "broken"

/**
 * A chunk whose embedding failed (after retries), or that the call breaker
 * refused.
 *
 * @since 0.1.0
 * @category models
 */
export interface ChunkFailure {
  readonly path: string
  readonly chunkIndex: number
  readonly error: EmbedError | CircuitBreaker.BreakerOpen
}

/**
 * The error-rate breaker's report, as printed under `"breaker"`.
 *
 * @since 0.1.0
 * @category models
 */
export interface BreakerReport extends CircuitBreaker.BreakInfoJson {
  /** the message of the last chunk failure before the break */
  readonly lastError: string | null
}

/**
 * Defaults of the resilience options.
 *
 * @since 0.1.0
 * @category constants
 */
export const resilienceDefaults = {
  maxErrorRate: 0.2,
  minSamples: 20,
  callBreaker: {
    name: "embedder",
    policy: CircuitBreaker.consecutiveFailures(5),
    isFailure: Retry.isRetryable
  } satisfies CircuitBreaker.Options
} as const

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
  /** the error-rate breaker's report when it ended the run, else null */
  readonly breaker: BreakerReport | null
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
   * The run ends with a `BreakInfo` when the share of failed chunks exceeds
   * this (default 0.2)...
   */
  readonly maxErrorRate?: number
  /** ...once at least this many chunks were seen (default 20)... */
  readonly minSamples?: number
  /** ...over the last this many chunks (default: over the whole run) */
  readonly breakerWindow?: number
  /** retry policy of each embedding call (default {@link Retry.defaultPolicy}) */
  readonly retry?: Retry.Policy
  /**
   * the circuit breaker every embedding call goes through (default: opens
   * after 5 consecutive retryable failures)
   */
  readonly callBreaker?: CircuitBreaker.Options
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

interface ChunkItemOk {
  readonly doc: SourceDocument
  readonly of: number
  readonly embedded: EmbeddedChunk
}

interface ChunkItemFailure {
  readonly doc: SourceDocument
  readonly of: number
  readonly failure: ChunkFailure
}

type ChunkItem = Either.Either<ChunkItemOk, ChunkItemFailure>

interface Regroup {
  doc: SourceDocument | undefined
  readonly ok: Array<EmbeddedChunk>
  firstError: string | undefined
  seen: number
}

const emptyRegroup = (): Regroup => ({ doc: undefined, ok: [], firstError: undefined, seen: 0 })

type DocumentOutcome =
  | { readonly _tag: "Embedded"; readonly doc: SourceDocument; readonly chunks: ReadonlyArray<EmbeddedChunk> }
  | { readonly _tag: "Failed"; readonly doc: SourceDocument; readonly of: number; readonly firstError: string }

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

  // Every embedding call: per-attempt timeout inside the call breaker (so a
  // timeout counts against it), retries outside it (BreakerOpen is never
  // retried).
  const policy = options.retry ?? Retry.defaultPolicy
  const { attemptTimeout, ...retryPolicy } = policy
  const callBreaker = yield* CircuitBreaker.make(options.callBreaker ?? resilienceDefaults.callBreaker)
  const embedOnce = (texts: ReadonlyArray<string>) => {
    const call = embedder.embedBatch(texts)
    return attemptTimeout === undefined ? call : call.pipe(
      Effect.timeoutFail({
        duration: attemptTimeout,
        onTimeout: () => Retry.timeoutError(Duration.decode(attemptTimeout))
      })
    )
  }
  const embedTexts = (texts: ReadonlyArray<string>) =>
    Retry.retry(callBreaker.withBreaker(embedOnce(texts)), retryPolicy).pipe(
      Effect.filterOrFail(
        (vectors) => vectors.length === texts.length && vectors.every((v) => v.length === embedder.dimensions),
        () =>
          new EmbedError({
            reason: "malformed-response",
            message: `the embedder ${embedder.model} returned vectors that do not match the request ` +
              `(expected ${texts.length} of ${embedder.dimensions} dimensions)`
          })
      )
    )

  /** One result per chunk, in order; a failed batch fails each of its chunks. */
  const embedDocument = (doc: SourceDocument) =>
    Effect.gen(function*() {
      const chunks = Chunker.chunkDocument(doc, chunkerOptions)
      const of = chunks.length
      const items: Array<ChunkItem> = []
      for (const batch of batches(chunks, embedder.maxBatchSize)) {
        const result = yield* Effect.either(embedTexts(batch.map((c) => c.text)))
        for (let i = 0; i < batch.length; i++) {
          const chunk = batch[i]!
          items.push(
            Either.isRight(result)
              ? Either.right({ doc, of, embedded: { chunk, embedding: result.right[i]! } })
              : Either.left({ doc, of, failure: { path: doc.path, chunkIndex: chunk.index, error: result.left } })
          )
        }
      }
      return items
    })

  /** A document with no chunks at all is stored as such, right away. */
  const writeEmptyDocument = (doc: SourceDocument) =>
    Effect.gen(function*() {
      yield* store.writeDocuments([{
        document: doc,
        chunker: chunkerKey,
        model: embedder.model,
        dimensions: embedder.dimensions,
        chunks: [],
        runId
      }])
      counters.ingested++
      yield* publishNow
    })

  /** A document some of whose chunks failed: nothing of it is written. */
  const recordFailedDocument = (doc: SourceDocument, of: number, firstError: string) =>
    Effect.gen(function*() {
      // Keep whatever version is stored; the next run tries again.
      counters.failed += of
      yield* store.markSeen(runId, [doc.path])
      yield* Effect.logWarning(`could not embed ${doc.path}: ${firstError}`)
      yield* publishNow
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

  let breakInfo: CircuitBreaker.BreakInfo<ChunkItemFailure> | undefined

  /**
   * Reassemble per-chunk results into documents (a document's chunks arrive
   * together and in order): a document all of whose chunks were embedded
   * becomes a write; one with any failure is recorded as failed.
   */
  const regroup = (
    state: Regroup,
    item: Either.Either<ChunkItemOk, ChunkItemFailure | CircuitBreaker.BreakInfo<ChunkItemFailure>>
  ): readonly [Regroup, Option.Option<DocumentOutcome>] => {
    if (Either.isLeft(item) && CircuitBreaker.isBreakInfo(item.left)) {
      breakInfo = item.left as CircuitBreaker.BreakInfo<ChunkItemFailure>
      return [emptyRegroup(), Option.none()]
    }
    const current = Either.isRight(item) ? item.right : item.left as ChunkItemFailure
    // a new document starts a new group (state objects are private to one fold)
    const group = state.doc === current.doc ? state : { ...emptyRegroup(), doc: current.doc }
    group.seen++
    if (Either.isRight(item)) group.ok.push(item.right.embedded)
    else group.firstError ??= (item.left as ChunkItemFailure).failure.error.message
    if (group.seen < current.of) return [group, Option.none()]
    return [
      emptyRegroup(),
      Option.some(
        group.firstError === undefined
          ? { _tag: "Embedded", doc: current.doc, chunks: group.ok }
          : { _tag: "Failed", doc: current.doc, of: current.of, firstError: group.firstError }
      )
    ]
  }

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
    Stream.tap((doc) => doc.text.trim().length === 0 ? writeEmptyDocument(doc) : Effect.void),
    Stream.filter((doc) => doc.text.trim().length > 0),
    Stream.mapEffect(embedDocument, { concurrency: options.documentConcurrency ?? 2 }),
    Stream.flattenIterables,
    CircuitBreaker.breakOnErrorRate({
      maxRate: options.maxErrorRate ?? resilienceDefaults.maxErrorRate,
      minSamples: options.minSamples ?? resilienceDefaults.minSamples,
      ...(options.breakerWindow === undefined ? {} : { window: options.breakerWindow })
    }),
    Stream.mapAccum(emptyRegroup(), regroup),
    Stream.filterMap((outcome) => outcome),
    Stream.mapEffect((outcome) =>
      outcome._tag === "Failed"
        ? Effect.as(recordFailedDocument(outcome.doc, outcome.of, outcome.firstError), Option.none<DocumentWrite>())
        : Effect.succeed(Option.some<DocumentWrite>({
          document: outcome.doc,
          chunker: chunkerKey,
          model: embedder.model,
          dimensions: embedder.dimensions,
          chunks: outcome.chunks,
          runId
        }))
    ),
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

  const outcome: Outcome = breakInfo !== undefined ? "broken" : stopped ? "stopped" : "completed"
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
    breaker: breakInfo === undefined ? null : {
      ...CircuitBreaker.breakInfoJson(breakInfo),
      lastError: breakInfo.lastError === undefined ? null : breakInfo.lastError.failure.error.message
    },
    durationMs: end - start,
    outcome,
    walkComplete,
    skippedFiles,
    skippedByReason
  }
  return summary
}, Effect.scoped) as <E, R>(
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


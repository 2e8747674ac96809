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
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as RateLimiter from "effect/RateLimiter"
import * as Ref from "effect/Ref"
import * as Stream from "effect/Stream"
import * as Chunker from "./Chunker.js"
import * as CircuitBreaker from "./CircuitBreaker.js"
import type {
  Chunk as TextChunk,
  EmbeddedChunk,
  Embedding,
  IngestReport,
  SkippedFile,
  SourceDocument
} from "./Domain.js"
import { Embedder } from "./Embedder.js"
import * as EmbeddingCache from "./EmbeddingCache.js"
import * as FairScheduler from "./internal/fairScheduler.js"
import { groupWithin } from "./internal/groupWithin.js"
import { EmbedError, type LoaderError, type StoreError } from "./Errors.js"
import * as Loader from "./Loader.js"
import * as LruCache from "./LruCache.js"
import * as Retry from "./Retry.js"
import type { ResourceLedger } from "./ResourceLedger.js"
import {
  directoryDigest,
  type DirectoryDigests,
  type DocumentWrite,
  isCompleteWith,
  type StoredDocument,
  VectorStore
} from "./VectorStore.js"

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
 * The progress of a run that has not started: the initial value of the
 * `Ref` a caller passes as `Options.progress`.
 *
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
export type Outcome = IngestReport["outcome"]

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
  /** embedding calls made for it, retries included */
  readonly attempts: number
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
  /**
   * Stored documents the run did not see and kept all the same: the
   * source produced no file at all (see `allowEmpty`). 0 otherwise.
   */
  readonly kept: number
  /** the first `maxSkippedListed` skipped files, with reasons */
  readonly skippedFiles: ReadonlyArray<SkippedFile>
  /** count of skipped files per reason */
  readonly skippedByReason: Readonly<Record<string, number>>
}

/**
 * How a run chunks, embeds, limits and writes; every field is optional and
 * its default is given with it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** chunk size and overlap (default {@link Chunker.defaults}) */
  readonly chunker?: Chunker.Options
  /** documents looked up in the store per query (default 256) */
  readonly lookupBatchSize?: number
  /**
   * unchanged paths, or directories, listed seen in the store per statement
   * (default 4096)
   */
  readonly seenFlushSize?: number
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
   * `writeGroupWindow` (default 100 ms), whichever comes first. Short
   * windows keep an embedded database from stalling the event loop for
   * long while requests are in flight.
   */
  readonly writeGroupChunks?: number
  /** default 100 ms */
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
  /** chunks per embedding request at most (default: the embedder's `maxBatchSize`) */
  readonly batchSize?: number
  /** estimated tokens per embedding request at most (default 100,000) */
  readonly batchTokens?: number
  /** how long a partly filled batch waits for more chunks (default 50 ms) */
  readonly batchWindow?: Duration.DurationInput
  /** embedding requests in flight at once, shared by the whole run (default 4) */
  readonly concurrency?: number
  /** embedding requests per minute at most, shared by the whole run */
  readonly rpm?: number
  /** estimated tokens per minute at most, shared by the whole run */
  readonly tpm?: number
  /** put an LRU embedding cache in front of the embedder (default: none) */
  readonly cache?: EmbeddingCache.Options
  /** retry policy of each embedding call (default {@link Retry.defaultPolicy}) */
  readonly retry?: Retry.Policy
  /**
   * the circuit breaker every embedding call goes through (default: opens
   * after 5 consecutive retryable failures)
   */
  readonly callBreaker?: CircuitBreaker.Options
  /**
   * Remove stored documents the source did not produce (default true). Only
   * ever done when the source completed, reported no unreadable directory
   * and produced some file (see `allowEmpty`).
   */
  readonly removeMissing?: boolean
  /**
   * Let a run whose source produced no file at all remove every stored
   * document (default false: such a run removes nothing and reports the
   * documents it kept as `kept`). A walk that finds nothing is far more
   * often a wrong or unmounted directory, or filters that match no file,
   * than a corpus deleted on purpose.
   */
  readonly allowEmpty?: boolean
  /**
   * Read and hash every file, even those whose size, times and inode are
   * those stored with their document (default false: such files are not
   * read; see `Loader.Options.unchanged`). Only the filesystem loader
   * ({@link ingestWith}, {@link ingestDirectory}) skips reads.
   */
  readonly rehash?: boolean
}

/**
 * An item of an ingest source: a document, or a file passed over.
 *
 * @since 0.1.0
 * @category models
 */
export type SourceItem = Either.Either<SourceDocument, SkippedFile>

/** Unchanged paths told to the store at once by default (see `VectorStore.Service.markSeen`). */
const defaultSeenFlushSize = 4096

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
  cached: number
}

/** A chunk on its way to the embedder, with the document it belongs to. */
interface PendingChunk {
  readonly doc: SourceDocument
  readonly of: number
  readonly chunk: TextChunk
}

interface ChunkItemOk {
  readonly doc: SourceDocument
  readonly of: number
  readonly embedded: EmbeddedChunk
  /** answered by the embedding cache, not by a call to the embedder */
  readonly cached: boolean
}

interface ChunkItemFailure {
  readonly doc: SourceDocument
  readonly of: number
  readonly failure: ChunkFailure
}

type ChunkItem = Either.Either<ChunkItemOk, ChunkItemFailure>

interface Regroup {
  readonly ok: Array<EmbeddedChunk>
  readonly failures: Array<ChunkFailure>
  seen: number
  cached: number
  readonly of: number
}

interface DocumentOutcome {
  readonly doc: SourceDocument
  readonly chunks: ReadonlyArray<EmbeddedChunk>
  readonly failures: ReadonlyArray<ChunkFailure>
  /** chunks answered by the embedding cache */
  readonly cached: number
  /** chunks never embedded: the error-rate breaker ended the run first */
  readonly missing: number
}

/** A failed embedding call, with the calls it took (retries included). */
class CallFailed extends Data.TaggedError("CallFailed")<{
  readonly error: EmbedError | CircuitBreaker.BreakerOpen
  readonly attempts: number
}> {}

/** Is a split-off part's error the very one its whole batch failed with? Then it is not about one input. */
const sameError = (a: EmbedError | CircuitBreaker.BreakerOpen, b: EmbedError | CircuitBreaker.BreakerOpen): boolean =>
  a._tag === "EmbedError" && b._tag === "EmbedError" && a.reason === b.reason && a.status === b.status &&
  a.message === b.message

/** A short kind for the failures table: `http-503`, `timeout`, `breaker-open`, ... */
const failureKind = (error: EmbedError | CircuitBreaker.BreakerOpen): string =>
  error._tag === "BreakerOpen"
    ? "breaker-open"
    : error.reason === "http" && error.status !== undefined
    ? `http-${error.status}`
    : error.reason

/** Errors meaning "this input is bad": the batch is split to isolate it. */
const isInputRejection = (error: EmbedError | CircuitBreaker.BreakerOpen): boolean =>
  error._tag === "EmbedError" &&
  (error.reason === "invalid-input" ||
    (error.reason === "http" && (error.status === 400 || error.status === 413 || error.status === 422)))

/**
 * Cut chunks into consecutive batches of at most `maxCount` chunks and
 * `maxTokens` estimated tokens (a single larger chunk goes alone).
 */
const toBatches = (
  chunks: ReadonlyArray<PendingChunk>,
  maxCount: number,
  maxTokens: number
): Array<ReadonlyArray<PendingChunk>> => {
  const out: Array<Array<PendingChunk>> = []
  let current: Array<PendingChunk> = []
  let tokens = 0
  for (const item of chunks) {
    const cost = item.chunk.tokenEstimate
    if (current.length > 0 && (current.length >= maxCount || tokens + cost > maxTokens)) {
      out.push(current)
      current = []
      tokens = 0
    }
    current.push(item)
    tokens += cost
  }
  if (current.length > 0) out.push(current)
  return out
}

/** The checks a run offers its source, so that it need not read what the store holds already. */
interface UnchangedChecks {
  readonly unchanged: Loader.Options["unchanged"] | undefined
  readonly unchangedDirectories: Loader.Options["unchangedDirectories"] | undefined
}

/** How the run builds its source, given the store's checks of unchanged files (when it offers them). */
interface SourceOf<E, R> {
  readonly stream: (checks: UnchangedChecks) => Stream.Stream<SourceItem, E, R>
  /** the source leaves out the files the check answers (the run counts them from its answers) */
  readonly omitsUnchanged: boolean
}

const ingestSource = Effect.fn("Ingest.ingest")(function*<E, R>(
  sourceOf: SourceOf<E, R>,
  options: Options
) {
  const embedder = yield* Embedder
  const store = yield* VectorStore
  const chunkerOptions = options.chunker ?? Chunker.defaults
  const chunkerKey = Chunker.settingsKey(chunkerOptions)
  const maxSkippedListed = options.maxSkippedListed ?? 1000
  const seenFlushSize = Math.max(1, options.seenFlushSize ?? defaultSeenFlushSize)
  const start = yield* Clock.currentTimeMillis

  /** What a stored document must have been written with to be up to date. */
  const settings = { chunker: chunkerKey, model: embedder.model, dimensions: embedder.dimensions }

  // Both wait for the store; on a server the run's lock and start take a
  // connection of their own, so the preparation and the question below
  // have the pool meanwhile. The question needs no lock: its answer only
  // decides whether files are offered as unchanged, and each offer is
  // checked under the lock.
  const [anyComplete, runId] = yield* Effect.all([
    Effect.zipRight(
      store.prepare(embedder),
      store.hasComplete(settings).pipe(Effect.orElseSucceed(() => true))
    ),
    store.beginRun
  ], { concurrency: 2 })
  yield* Effect.logInfo("ingest started").pipe(
    Effect.annotateLogs({ run: runId, model: embedder.model, chunker: chunkerKey })
  )

  const counters: Counters = {
    seen: 0,
    ingested: 0,
    unchanged: 0,
    skipped: 0,
    written: 0,
    failed: 0,
    cached: 0
  }
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

  // Offered to the filesystem loader: files whose fingerprint is the stored
  // one are not read at all, and the store lists them seen as it finds them.
  // A failed check only means they are read. A source that leaves the
  // files so found out of its stream (the filesystem loader does) has them
  // counted here, as the answers come: on an unchanged re-run of 10,000
  // files they then cost no step of the pipeline (eight alternating
  // re-runs each against the server, when this came in: 162–181 ms,
  // median 169, against 198–215 ms, median 206, with every file an item).
  // For any other source `claimed` holds the paths so listed until their
  // `unchanged` items come by (a few groups at most). When no document is
  // stored completely with these settings (a first run, or the first after
  // a settings change), no file can be claimed: the loader then neither
  // stats files for it nor waits for its answers, and no stored document
  // can be up to date, so none is looked up either.
  const claimable = options.rehash !== true && anyComplete
  const claimed = new Set<string>()
  const noteClaimed = (paths: Iterable<string>, count: number) =>
    sourceOf.omitsUnchanged
      ? Effect.suspend(() => {
        counters.seen += count
        counters.unchanged += count
        return publishNow
      })
      : Effect.sync(() => {
        for (const path of paths) claimed.add(path)
      })
  const unchanged: Loader.Options["unchanged"] = !claimable ? undefined : (files) =>
    store.claimUnchanged(runId, files, settings).pipe(
      Effect.tap((paths) => noteClaimed(paths, paths.size)),
      Effect.orElseSucceed(() => new Set<string>())
    )

  // Whole directories, where the store offers it: its digest of each
  // directory's documents, read while the walk begins, against the digest
  // of the directory's files. A directory found so is listed seen as a
  // whole (in groups, before the removal), and its files are neither
  // claimed one by one nor read. When every stored document is in such a
  // directory, nothing can be missing and the removal is not run. A failed
  // read only means the files are claimed one by one. (Awaited through a
  // Deferred, once per group of directories the walk asks about: joining
  // the fiber would merge its fiber refs into the walk's each time.)
  const { directoryDigests, markDirectoriesSeen } = store
  const digests = !claimable || directoryDigests === undefined || markDirectoriesSeen === undefined
    ? undefined
    : yield* Effect.tap(Deferred.make<Option.Option<DirectoryDigests>>(), (deferred) =>
      Effect.forkScoped(Effect.flatMap(Effect.option(directoryDigests(settings)), (d) => Deferred.succeed(deferred, d))))
  /** stored documents in the directories found unchanged */
  let documentsInSameDirectories = 0
  let directoriesPending: Array<string> = []
  // A directory stays pending until it is listed: a failed flush is tried
  // again with the next, and the last one's failure fails the run before
  // its removal. A flush lists the pending directories `seenFlushSize` at
  // a time (a group of directories found unchanged may hold more). One
  // flush at a time (the walk asks about several groups at once), so that
  // each drops just what it listed.
  const flushing = yield* Effect.makeSemaphore(1)
  const flushPending: Effect.Effect<void, StoreError> = Effect.suspend(() => {
    const directories = directoriesPending.slice(0, seenFlushSize)
    return directories.length === 0 || markDirectoriesSeen === undefined
      ? Effect.void
      : Effect.flatMap(markDirectoriesSeen(runId, directories), () => {
        directoriesPending = directoriesPending.slice(directories.length)
        return flushPending
      })
  })
  const flushDirectories = flushing.withPermits(1)(flushPending)
  const unchangedDirectories: Loader.Options["unchangedDirectories"] = digests === undefined
    ? undefined
    : (directories) =>
      Effect.flatMap(Deferred.await(digests), (stored) => {
        const same = new Set<string>()
        if (Option.isNone(stored)) return Effect.succeed(same)
        const matched: Array<Loader.ListedDirectory> = []
        let files = 0
        for (const directory of directories) {
          const entry = stored.value.directories.get(directory.path)
          if (entry === undefined || entry.documents !== directory.files.length) continue
          if (directoryDigest(directory.files) !== entry.digest) continue
          same.add(directory.path)
          matched.push(directory)
          directoriesPending.push(directory.path)
          files += directory.files.length
        }
        if (matched.length === 0) return Effect.succeed(same)
        documentsInSameDirectories += files
        const flushed = directoriesPending.length >= seenFlushSize
          ? Effect.orElseSucceed(flushDirectories, () => undefined)
          : Effect.void
        const paths = sourceOf.omitsUnchanged ? [] : matched.flatMap((d) => d.files.map((file) => file.path))
        return Effect.as(Effect.zipRight(flushed, noteClaimed(paths, files)), same)
      })
  /** Whether every document stored when the run began is in a directory found unchanged. */
  const allInSameDirectories = digests === undefined ? Effect.succeed(false) : Effect.map(
    Deferred.await(digests),
    Option.match({ onNone: () => false, onSome: (stored) => stored.documents === documentsInSameDirectories })
  )

  /**
   * A group of items: looked up in the store, empty documents written, the
   * changed ones chunked. Returns their chunks, in document order.
   */
  const prepareGroup = (items: Iterable<SourceItem>) =>
    Effect.flatMap(classify(items), (changed) => {
      const pending: Array<PendingChunk> = []
      const empty: Array<SourceDocument> = []
      for (const doc of changed) {
        if (doc.text.trim().length === 0) {
          empty.push(doc)
          continue
        }
        const chunks = Chunker.chunkDocument(doc, chunkerOptions)
        for (const chunk of chunks) pending.push({ doc, of: chunks.length, chunk })
      }
      return empty.length === 0 ? Effect.succeed(pending) : Effect.as(writeEmptyDocuments(empty), pending)
    })

  // Paths still on disk that need no write, told to the store in large
  // groups: the list only matters to the removal at the end of a run.
  let seenPending: Array<string> = []
  const flushSeen = Effect.suspend(() => {
    const paths = seenPending
    seenPending = []
    return store.markSeen(runId, paths)
  })
  const noteSeen = (paths: ReadonlyArray<string>) => {
    for (const path of paths) seenPending.push(path)
    return seenPending.length >= seenFlushSize ? flushSeen : Effect.void
  }

  /** Look a group of items up in the store; returns the documents to (re)write. */
  const classify = (items: Iterable<SourceItem>) =>
    Effect.gen(function*() {
      const docs: Array<SourceDocument> = []
      // still on disk, no rewrite: stamped seen, fingerprint kept
      const keep: Array<string> = []
      for (const item of items) {
        counters.seen++
        if (Either.isRight(item)) {
          docs.push(item.right)
          continue
        }
        const skipped = item.left
        if (skipped.reason === "unchanged") {
          counters.unchanged++
          // listed seen already, unless some other source reported it
          if (!claimed.delete(skipped.path)) keep.push(skipped.path)
          continue
        }
        counters.skipped++
        skippedByReason[skipped.reason] = (skippedByReason[skipped.reason] ?? 0) + 1
        if (skippedFiles.length < maxSkippedListed) skippedFiles.push(skipped)
        if (skipped.reason === "unreadable-directory") walkComplete = false
        if (keepsStoredVersion(skipped.reason)) keep.push(skipped.path)
      }
      const stored = docs.length === 0 || !anyComplete
        ? new Map<string, StoredDocument>()
        : yield* store.lookup(docs.map((d) => d.path))
      const changed: Array<SourceDocument> = []
      // same content: stamped seen with the file's current fingerprint
      const same: Array<string> = []
      const sameFingerprints: Array<string | null> = []
      for (const doc of docs) {
        const entry = stored.get(doc.path)
        if (entry !== undefined && entry.contentHash === doc.contentHash && isCompleteWith(entry, settings)) {
          counters.unchanged++
          same.push(doc.path)
          sameFingerprints.push(doc.fingerprint ?? null)
        } else {
          changed.push(doc)
        }
      }
      yield* noteSeen(keep)
      yield* store.markSeen(runId, same, sameFingerprints)
      yield* publishNow
      return changed
    })

  // Every embedding request: rate limits, then the call breaker, then the
  // per-attempt timeout (inside the breaker, so a timeout counts against
  // it); retries around all of it (BreakerOpen is never retried). With a
  // cache, only the texts it does not hold are requested — a batch it
  // answers whole costs no request, no rate and no breaker permit.
  const policy = options.retry ?? Retry.defaultPolicy
  const { attemptTimeout, ...retryPolicy } = policy
  const callBreaker = yield* Effect.serviceOption(CircuitBreaker.Breaker).pipe(
    Effect.flatMap(Option.match({
      onNone: () => CircuitBreaker.make(options.callBreaker ?? resilienceDefaults.callBreaker),
      onSome: Effect.succeed
    }))
  )
  const cache = options.cache === undefined ? undefined : yield* LruCache.make<Embedding>({
    maxEntries: options.cache.maxEntries ?? EmbeddingCache.defaultMaxEntries,
    maxBytes: options.cache.maxBytes ?? EmbeddingCache.defaultMaxBytes,
    sizeOf: EmbeddingCache.entrySize,
    name: options.cache.name ?? "embeddings"
  })
  const requestLimit = options.rpm === undefined
    ? undefined
    : yield* RateLimiter.make({ limit: options.rpm, interval: Duration.minutes(1), algorithm: "token-bucket" })
  const tokenLimit = options.tpm === undefined
    ? undefined
    : yield* RateLimiter.make({ limit: options.tpm, interval: Duration.minutes(1), algorithm: "token-bucket" })
  const limited = <A, E2, R2>(tokens: number, effect: Effect.Effect<A, E2, R2>) => {
    const byTokens = tokenLimit === undefined || options.tpm === undefined
      ? effect
      : tokenLimit(RateLimiter.withCost(Math.max(1, Math.min(tokens, options.tpm)))(effect))
    return requestLimit === undefined ? byTokens : requestLimit(byTokens)
  }
  const embedOnce = (texts: ReadonlyArray<string>) => {
    const call = embedder.embedBatch(texts).pipe(
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
    return attemptTimeout === undefined ? call : call.pipe(
      Effect.timeoutFail({
        duration: attemptTimeout,
        onTimeout: () => Retry.timeoutError(Duration.decode(attemptTimeout))
      })
    )
  }

  /** One request, with its retries: the vectors, or the last error and the calls made. */
  const call = (batch: ReadonlyArray<PendingChunk>): Effect.Effect<ReadonlyArray<Embedding>, CallFailed> =>
    Effect.suspend(() => {
      const texts = batch.map((p) => p.chunk.text)
      const tokens = batch.reduce((n, p) => n + p.chunk.tokenEstimate, 0)
      return Effect.flatMap(
        Retry.retryWithAttempts(limited(tokens, callBreaker.withBreaker(embedOnce(texts))), retryPolicy),
        (outcome) =>
          Either.isRight(outcome.result)
            ? Effect.succeed(outcome.result.right)
            : Effect.fail(new CallFailed({ error: outcome.result.left, attempts: outcome.attempts }))
      )
    })

  const succeeded = (batch: ReadonlyArray<PendingChunk>, vectors: ReadonlyArray<Embedding>, cached: (i: number) => boolean) =>
    batch.map((p, i): ChunkItem =>
      Either.right({ doc: p.doc, of: p.of, embedded: { chunk: p.chunk, embedding: vectors[i]! }, cached: cached(i) })
    )

  const failed = (batch: ReadonlyArray<PendingChunk>, failure: CallFailed) =>
    batch.map((p): ChunkItem =>
      Either.left({
        doc: p.doc,
        of: p.of,
        failure: { path: p.doc.path, chunkIndex: p.chunk.index, error: failure.error, attempts: failure.attempts }
      })
    )

  /** One attempt at a batch, through the cache when there is one. */
  const attempt = (batch: ReadonlyArray<PendingChunk>): Effect.Effect<Array<ChunkItem>, CallFailed> => {
    if (cache === undefined) return Effect.map(call(batch), (vectors) => succeeded(batch, vectors, () => false))
    const keys = batch.map((p) => EmbeddingCache.keyOf(embedder.model, embedder.dimensions, p.chunk.text))
    let requested: ReadonlySet<string> = new Set()
    return Effect.map(
      cache.getOrComputeMany(keys, (missing) => {
        requested = new Set(missing)
        const byKey = new Map(batch.map((p, i) => [keys[i]!, p]))
        return Effect.map(call(missing.map((key) => byKey.get(key)!)), (vectors) => vectors.map(EmbeddingCache.detached))
      }),
      (vectors) => succeeded(batch, vectors, (i) => !requested.has(keys[i]!))
    )
  }

  /**
   * A batch rejected for a bad input, split in halves until the bad input
   * is alone, so that only it fails — unless both halves fail with the very
   * error of the whole: then the request, not one input, is at fault (an
   * unknown model, a refused parameter), and splitting further would only
   * multiply failing requests.
   */
  const split = (batch: ReadonlyArray<PendingChunk>, failure: CallFailed): Effect.Effect<Array<ChunkItem>> => {
    const half = Math.ceil(batch.length / 2)
    const left = batch.slice(0, half)
    const right = batch.slice(half)
    return Effect.gen(function*() {
      const first = yield* Effect.either(attempt(left))
      const second = yield* Effect.either(attempt(right))
      if (
        Either.isLeft(first) && Either.isLeft(second) &&
        sameError(first.left.error, failure.error) && sameError(second.left.error, failure.error)
      ) {
        return [...failed(left, first.left), ...failed(right, second.left)]
      }
      return [...(yield* settle(left, first)), ...(yield* settle(right, second))]
    })
  }

  const settle = (
    batch: ReadonlyArray<PendingChunk>,
    result: Either.Either<Array<ChunkItem>, CallFailed>
  ): Effect.Effect<Array<ChunkItem>> =>
    Either.isRight(result)
      ? Effect.succeed(result.right)
      : batch.length > 1 && isInputRejection(result.left.error)
      ? split(batch, result.left)
      : Effect.succeed(failed(batch, result.left))

  /** Embed one batch: one result per chunk, in order. */
  const embedBatch = (batch: ReadonlyArray<PendingChunk>): Effect.Effect<Array<ChunkItem>> =>
    Effect.flatMap(Effect.either(attempt(batch)), (result) => settle(batch, result))

  /** Documents with no chunks at all are stored as such, right away. */
  const writeEmptyDocuments = (docs: ReadonlyArray<SourceDocument>) =>
    Effect.gen(function*() {
      yield* store.writeDocuments(docs.map((doc) => ({
        document: doc,
        chunker: chunkerKey,
        model: embedder.model,
        dimensions: embedder.dimensions,
        chunks: [],
        runId
      })))
      counters.ingested += docs.length
      yield* publishNow
    })

  /** Write a group of embedded documents in one short transaction. */
  const writeGroup = (group: Chunk.Chunk<DocumentOutcome>) =>
    Effect.gen(function*() {
      const outcomes = Chunk.toReadonlyArray(group)
      yield* store.writeDocuments(outcomes.map((outcome): DocumentWrite => ({
        document: outcome.doc,
        chunker: chunkerKey,
        model: embedder.model,
        dimensions: embedder.dimensions,
        chunks: outcome.chunks,
        failures: outcome.failures.map((f) => ({
          chunkIndex: f.chunkIndex,
          kind: failureKind(f.error),
          message: f.error.message,
          attempts: f.attempts
        })),
        ...(outcome.missing > 0 ? { complete: false } : {}),
        runId
      })))
      for (const outcome of outcomes) {
        if (outcome.failures.length === 0 && outcome.missing === 0) counters.ingested++
        counters.written += outcome.chunks.length
        counters.failed += outcome.failures.length
        counters.cached += outcome.cached
      }
      for (const outcome of outcomes) {
        if (outcome.failures.length > 0) {
          yield* Effect.logWarning(
            `${outcome.failures.length} of ${outcome.failures.length + outcome.chunks.length} chunks of ` +
              `${outcome.doc.path} could not be embedded: ${outcome.failures[0]!.error.message}`
          )
        }
        if (outcome.missing > 0) {
          yield* Effect.logWarning(
            `the run ended before ${outcome.missing} chunk(s) of ${outcome.doc.path} were embedded; ` +
              `it is stored incomplete and the next run will redo it`
          )
        }
      }
      yield* publishNow
    })

  let breakInfo: CircuitBreaker.BreakInfo<ChunkItemFailure> | undefined

  /**
   * Reassemble per-chunk results into documents. Batches complete in any
   * order, so partial documents wait in `pending` (bounded by the documents
   * in flight) until all their chunks are in. When the error-rate breaker
   * ends the run, the documents still waiting are written with what they
   * have — every chunk the breaker counted is then stored or recorded — and
   * marked incomplete, so the next run redoes them.
   */
  const pending = new Map<SourceDocument, Regroup>()
  const outcomeOf = (doc: SourceDocument, group: Regroup): DocumentOutcome => ({
    doc,
    chunks: group.ok,
    failures: group.failures,
    cached: group.cached,
    missing: group.of - group.seen
  })
  const regroup = (
    item: Either.Either<ChunkItemOk, ChunkItemFailure | CircuitBreaker.BreakInfo<ChunkItemFailure>>
  ): ReadonlyArray<DocumentOutcome> => {
    if (Either.isLeft(item) && CircuitBreaker.isBreakInfo(item.left)) {
      breakInfo = item.left as CircuitBreaker.BreakInfo<ChunkItemFailure>
      const rest = [...pending].map(([doc, group]) => outcomeOf(doc, group))
      pending.clear()
      return rest
    }
    const current = Either.isRight(item) ? item.right : item.left as ChunkItemFailure
    let group = pending.get(current.doc)
    if (group === undefined) {
      group = { ok: [], failures: [], seen: 0, cached: 0, of: current.of }
      pending.set(current.doc, group)
    }
    group.seen++
    if (Either.isRight(item)) {
      group.ok.push(item.right.embedded)
      if (item.right.cached) group.cached++
    } else {
      group.failures.push((item.left as ChunkItemFailure).failure)
    }
    if (group.seen < group.of) return []
    pending.delete(current.doc)
    return [outcomeOf(current.doc, group)]
  }

  const stopSignal = options.stop === undefined
    ? Option.none<Effect.Effect<void>>()
    : Option.some(Effect.asVoid(options.stop).pipe(Effect.tap(() => Effect.sync(() => void (stopped = true)))))
  const untilStopped = <A, E2, R2>(stream: Stream.Stream<A, E2, R2>) =>
    Option.match(stopSignal, { onNone: () => stream, onSome: (signal) => Stream.interruptWhen(stream, signal) })

  const batchSize = Math.max(1, Math.min(options.batchSize ?? embedder.maxBatchSize, embedder.maxBatchSize))
  const concurrency = options.concurrency ?? 4
  const batchTokens = options.batchTokens ?? 100_000

  // Lookups, empty-document writes and chunking work on whole groups, not
  // on single documents: a stream step costs more than chunking a document.
  const ingestItems = <E2, R2>(items: Stream.Stream<SourceItem, E2, R2>) =>
    items.pipe(
      groupWithin({ maxCost: options.lookupBatchSize ?? 256, window: Duration.millis(200) }),
      Stream.mapEffect(prepareGroup),
      untilStopped,
      // batches across documents and groups, by count and tokens; a partly
      // filled batch waits for more chunks at most `batchWindow`
      Stream.flattenIterables,
      groupWithin({ maxCost: batchSize, window: options.batchWindow ?? Duration.millis(50) }),
      Stream.mapConcat((batch) => toBatches(Chunk.toReadonlyArray(batch), batchSize, batchTokens)),
      // unordered: a slow request never holds back the next ones. When
      // writing is the slower side, one finished batch waits in the buffer and
      // each request slot holds at most its own (Stream.flatMap buffers 16 by
      // default), so that embedded chunks do not pile up in memory: with a
      // buffer of 4, batches of 256 left up to 2,290 embedded chunks waiting.
      Stream.flatMap((batch) => Stream.fromEffect(embedBatch(batch)), { concurrency, bufferSize: 1 }),
      Stream.flattenIterables,
      CircuitBreaker.breakOnErrorRate({
        maxRate: options.maxErrorRate ?? resilienceDefaults.maxErrorRate,
        minSamples: options.minSamples ?? resilienceDefaults.minSamples,
        ...(options.breakerWindow === undefined ? {} : { window: options.breakerWindow })
      }),
      Stream.mapConcat(regroup),
      groupWithin({
        maxCost: options.writeGroupChunks ?? 2000,
        cost: (outcome: DocumentOutcome) => outcome.chunks.length + 1,
        window: options.writeGroupWindow ?? Duration.millis(100)
      }),
      Stream.mapEffect(writeGroup),
      Stream.runDrain
    )
  // The stages after the source are started with its first items: a source
  // that has nothing to read (an unchanged re-run, whose files the loader
  // leaves out) is drained without them. Alternating such re-runs of
  // 10,000 files took a median of 139 ms with them, 131 ms without.
  const pipeline = Effect.scoped(
    Effect.flatMap(Stream.toPull(untilStopped(sourceOf.stream({ unchanged, unchangedDirectories }))), (pull) =>
      Effect.matchEffect(pull, {
        onFailure: Option.match({ onNone: () => Effect.void, onSome: Effect.fail }),
        onSuccess: (first) => ingestItems(Stream.concat(Stream.fromChunk(first), Stream.repeatEffectChunkOption(pull)))
      }))
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
  const removes = outcome === "completed" && walkComplete && options.removeMissing !== false
  // a source that produced nothing leaves the store as it is, unless allowed
  const kept = removes && counters.seen === 0 && options.allowEmpty !== true
    ? (yield* store.stats).documents
    : 0
  const removed = removes && kept === 0 && !(yield* allInSameDirectories)
    ? yield* Effect.zipRight(Effect.zipRight(flushSeen, flushDirectories), store.removeUnseen(runId))
    : 0
  // The digests the next run compares whole directories with, now that the
  // store holds what this run found: kept by the store until a write drops
  // them. A failure only leaves the next run to compute them.
  if (outcome === "completed" && store.keepDirectoryDigests !== undefined) {
    yield* Effect.ignore(store.keepDirectoryDigests(settings))
  }
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
    chunks: { written: counters.written, failed: counters.failed, cached: counters.cached },
    breaker: breakInfo === undefined ? null : {
      ...CircuitBreaker.breakInfoJson(breakInfo),
      lastError: breakInfo.lastError === undefined ? null : breakInfo.lastError.failure.error.message
    },
    durationMs: end - start,
    outcome,
    walkComplete,
    kept,
    skippedFiles,
    skippedByReason
  }
  return summary
}, Effect.scoped, FairScheduler.fairly)

/**
 * Ingest a stream of documents (from disk or from anywhere else) into the
 * store.
 *
 * @since 0.1.0
 * @category pipelines
 */
export const ingestStream = <E, R>(
  source: Stream.Stream<SourceItem, E, R>,
  options: Options = {}
): Effect.Effect<Summary, E | StoreError, R | Embedder | VectorStore> =>
  ingestSource({ stream: () => source, omitsUnchanged: false }, options)

/**
 * Load documents through the {@link Loader.Loader} in the context (the
 * filesystem walk with `Loader.layer`, or any stream with
 * `Loader.layerFromStream`) and ingest them. Files whose fingerprint is the
 * stored one are not read (unless `options.rehash`).
 *
 * @since 0.1.0
 * @category pipelines
 */
export const ingestWith = (
  loader: Loader.Options,
  options: Options = {}
): Effect.Effect<Summary, LoaderError | StoreError, Embedder | VectorStore | Loader.Loader> =>
  Effect.flatMap(Loader.Loader, (service) => {
    const omitsUnchanged = service.omitsUnchanged === true
    return ingestSource({
      stream: ({ unchanged, unchangedDirectories }) =>
        service.load(
          unchanged === undefined ? loader : {
            ...loader,
            unchanged,
            ...(unchangedDirectories === undefined ? {} : { unchangedDirectories }),
            ...(omitsUnchanged ? { omitUnchanged: true } : {})
          }
        ),
      omitsUnchanged
    }, options)
  })

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
  ingestWith(loader, options).pipe(Effect.provide(Loader.layer))

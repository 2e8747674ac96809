/**
 * The `ragpipe` command tree: a thin shell over the library.
 *
 * @internal
 */
import * as Command from "@effect/cli/Command"
import * as Args from "@effect/cli/Args"
import * as Options from "@effect/cli/Options"
import * as Config from "effect/Config"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Chunker from "../Chunker.js"
import * as Database from "../Database.js"
import * as Embedder from "../Embedder.js"
import * as OpenAiEmbedder from "../OpenAiEmbedder.js"
import * as Retry from "../Retry.js"
import type { IngestReport } from "../Domain.js"
import { EmbedError, InvalidInput } from "../Errors.js"
import * as Ingest from "../Ingest.js"
import * as Loader from "../Loader.js"
import * as ResourceLedger from "../ResourceLedger.js"
import * as Search from "../Search.js"
import * as VectorStore from "../VectorStore.js"
import * as Format from "./format.js"

/** The signal that asked the process to stop. */
export type StopSignal = "SIGINT" | "SIGTERM"

/** Exit codes of the CLI. */
export const ExitCode = { ok: 0, failed: 1, usage: 2, breaker: 3, SIGINT: 130, SIGTERM: 143 } as const

/** Completes when the process was asked to stop (first SIGINT/SIGTERM). */
export class Shutdown extends Context.Tag("ragpipe/cli/Shutdown")<Shutdown, {
  readonly requested: Effect.Effect<StopSignal>
}>() {}

/** A shutdown service over a deferred the process's signal handlers complete. */
export const layerShutdown = (deferred: Deferred.Deferred<StopSignal>): Layer.Layer<Shutdown> =>
  Layer.succeed(Shutdown, { requested: Deferred.await(deferred) })

/** The command decided the process's exit code (after printing what it had to). */
export class ExitRequest extends Data.TaggedError("ExitRequest")<{ readonly code: number }> {}

// ---------------------------------------------------------------------------
// options (each also readable from a RAGPIPE_* variable)

const withEnv = <A>(option: Options.Options<A>, config: Config.Config<A>) =>
  Options.withFallbackConfig(option, config)

// The two store options are read without their variables: which store a
// command uses depends on where each came from (see `storeTarget`).
const dataDir = Options.text("data-dir").pipe(
  Options.optional,
  Options.withDescription("directory of the embedded database (env RAGPIPE_DATA_DIR; default .ragpipe)")
)

const integerOption = (name: string, env: string, fallback: number, description: string) =>
  withEnv(Options.integer(name), Config.integer(env)).pipe(
    Options.withDefault(fallback),
    Options.withDescription(`${description} (env ${env}; default ${fallback})`)
  )

const optionalInteger = (name: string, env: string, description: string) =>
  withEnv(Options.integer(name), Config.integer(env)).pipe(
    Options.optional,
    Options.withDescription(`${description} (env ${env})`)
  )

const listOption = (name: string, env: string, description: string) =>
  withEnv(Options.text(name).pipe(Options.repeated), Config.array(Config.string(), env)).pipe(
    Options.withDefault([] as Array<string>),
    Options.withDescription(`${description}; repeatable (env ${env}, comma-separated)`)
  )

/**
 * Boolean flags: the flag, or the variable (true/false, yes/no, on/off, 1/0).
 * A variable with another value is a usage error, as for every other option.
 */
const flag = (name: string, env: string, description: string) =>
  withEnv(Options.boolean(name), Config.boolean(env)).pipe(
    Options.withDescription(`${description} (env ${env}=true)`)
  )

const json = flag("json", "RAGPIPE_JSON", "print machine-readable JSON")

// ---------------------------------------------------------------------------
// helpers

const invalid = (message: string) => new InvalidInput({ reason: "option", message })

const durationOption = (name: string, env: string, fallback: string, description: string) =>
  withEnv(Options.text(name), Config.string(env)).pipe(
    Options.withDefault(fallback),
    Options.withDescription(`${description}, e.g. 30s, 500ms, 10m (env ${env}; default ${fallback})`)
  )

/** The time limit of one embedding request (ingest and search). */
const timeoutOption = withEnv(Options.text("timeout"), Config.string("RAGPIPE_TIMEOUT")).pipe(
  Options.withDefault("60s"),
  Options.withDescription("time limit of one embedding request, e.g. 30s or 500ms (env RAGPIPE_TIMEOUT; default 60s)")
)

/** The retry policy of embedding requests, each attempt limited to `--timeout`. */
const retryPolicy = (timeout: string) =>
  Effect.gen(function*() {
    const parsed = parseDuration(timeout)
    if (Option.isNone(parsed) || Duration.toMillis(parsed.value) <= 0) {
      return yield* invalid(`--timeout must be a positive duration such as 30s or 500ms (got ${timeout})`)
    }
    return { ...Retry.defaultPolicy, attemptTimeout: parsed.value } satisfies Retry.Policy
  })

/** Where the store lives: the embedded database in a directory, or a server. */
const store = {
  dataDir,
  databaseUrl: Options.redacted("database-url").pipe(
    Options.optional,
    Options.withDescription("PostgreSQL server to use instead of the embedded database (env DATABASE_URL)")
  ),
  dbPoolSize: integerOption("db-pool-size", "RAGPIPE_DB_POOL_SIZE", 4, "connections to the server at most"),
  dbConnectTimeout: durationOption("db-connect-timeout", "RAGPIPE_DB_CONNECT_TIMEOUT", "10s", "wait for a server connection"),
  dbIdleTimeout: durationOption("db-idle-timeout", "RAGPIPE_DB_IDLE_TIMEOUT", "30s", "close an idle server connection after"),
  dbStatementTimeout: durationOption(
    "db-statement-timeout",
    "RAGPIPE_DB_STATEMENT_TIMEOUT",
    "10m",
    "the server cancels a statement running longer (0 disables)"
  )
}

interface StoreOptions {
  readonly dataDir: Option.Option<string>
  readonly databaseUrl: Option.Option<Redacted.Redacted>
  readonly dbPoolSize: number
  readonly dbConnectTimeout: string
  readonly dbIdleTimeout: string
  readonly dbStatementTimeout: string
}

/** The store a command uses: a data directory, or a server (with the pool settings). */
type StoreTarget =
  | { readonly _tag: "embedded"; readonly dataDir: string }
  | { readonly _tag: "server"; readonly server: Database.ServerOptions }

const isBlank = (url: Redacted.Redacted): boolean => String(Redacted.value(url)).trim() === ""

/** A variable, or none when it is unset (a string variable cannot be malformed). */
const variable = <A>(config: Config.Config<A>) =>
  Effect.orElseSucceed(Config.option(config), () => Option.none<A>())

/**
 * Which store the options name, checked. What is given on the command line
 * decides: `--data-dir` the embedded database (whatever DATABASE_URL says:
 * a variable set for another program must not overrule it), `--database-url`
 * a server (a blank one names none: the embedded database); both at once
 * are an error. Without either, DATABASE_URL (unless blank) names a server,
 * else RAGPIPE_DATA_DIR or `.ragpipe` the data directory.
 */
const storeTarget = (o: StoreOptions): Effect.Effect<StoreTarget, InvalidInput> =>
  Effect.gen(function*() {
    if (o.dbPoolSize < 1) return yield* invalid(`--db-pool-size must be at least 1 (got ${o.dbPoolSize})`)
    const duration = (name: string, value: string) =>
      Option.match(parseDuration(value), {
        onNone: () => invalid(`${name} must be a duration such as 30s, 500ms or 10m (got ${value})`),
        onSome: Effect.succeed
      })
    const connectTimeout = yield* duration("--db-connect-timeout", o.dbConnectTimeout)
    const idleTimeout = yield* duration("--db-idle-timeout", o.dbIdleTimeout)
    const statementTimeout = yield* duration("--db-statement-timeout", o.dbStatementTimeout)
    const embedded = (dataDir: string): StoreTarget => ({ _tag: "embedded", dataDir })
    const server = (url: Redacted.Redacted): StoreTarget => ({
      _tag: "server",
      server: {
        url: url as Redacted.Redacted<string>,
        poolSize: o.dbPoolSize,
        connectTimeout,
        idleTimeout,
        statementTimeout
      }
    })
    // a blank RAGPIPE_DATA_DIR names none, as a blank DATABASE_URL does
    const envDataDir = Effect.map(variable(Config.string("RAGPIPE_DATA_DIR")), (dir) =>
      embedded(Option.getOrElse(Option.filter(dir, (d) => d.trim() !== ""), () => Database.defaultDataDir)))
    if (Option.isSome(o.dataDir) && o.dataDir.value.trim() === "") {
      return yield* invalid("--data-dir must name a directory (got an empty name)")
    }
    if (Option.isSome(o.dataDir) && Option.isSome(o.databaseUrl) && !isBlank(o.databaseUrl.value)) {
      return yield* invalid(
        "--data-dir and --database-url name two different stores; give one of them " +
          "(--data-dir for the embedded database, --database-url for a PostgreSQL server)"
      )
    }
    if (Option.isSome(o.dataDir)) return embedded(o.dataDir.value)
    if (Option.isSome(o.databaseUrl)) {
      return isBlank(o.databaseUrl.value) ? yield* envDataDir : server(o.databaseUrl.value)
    }
    const envUrl = yield* variable(Config.redacted("DATABASE_URL"))
    return Option.isSome(envUrl) && !isBlank(envUrl.value) ? server(envUrl.value) : yield* envDataDir
  })

/**
 * The store layer of a target. `mustExist` (commands that only read): a
 * missing store is an error, on a server as in a data directory, and
 * nothing is created. Otherwise (the ingest), the connection for the run's
 * lock is opened while the store opens.
 */
const storeLayer = (target: StoreTarget, mustExist: boolean) => {
  const store = VectorStore.layerWith({ mustExist, prepareRun: !mustExist })
  return target._tag === "embedded"
    ? store.pipe(Layer.provide(Database.layerPglite({ dataDir: target.dataDir, mustExist })))
    : store.pipe(Layer.provide(Database.layerServer(target.server)))
}

const storeName = (target: StoreTarget) =>
  target._tag === "embedded" ? target.dataDir : Database.describeUrl(target.server.url)

/** Fail with the exit code of the signal when one arrives before `effect` ends. */
const interruptOnSignal = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Shutdown, (shutdown) =>
    Effect.raceFirst(
      effect,
      Effect.flatMap(shutdown.requested, (signal) => Effect.fail(new ExitRequest({ code: ExitCode[signal] })))
    ))

/** Print live progress to stderr while `effect` runs. */
const withProgress = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  progress: Ref.Ref<Ingest.Progress>,
  enabled: boolean
) => {
  if (!enabled) return effect
  return Effect.scoped(Effect.gen(function*() {
    const start = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
    const render = Effect.gen(function*() {
      const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
      const line = Format.progressLine(yield* Ref.get(progress), now - start)
      process.stderr.write(`\r\x1b[2K${line}`)
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => process.stderr.write("\r\x1b[2K")))
    yield* Effect.forkScoped(Effect.repeat(render, Schedule.spaced("200 millis")))
    return yield* effect
  }))
}

// ---------------------------------------------------------------------------
// ingest

/** The embedding provider, as chosen on the command line. */
export interface ProviderSettings {
  readonly embedder: "hashing" | "openai"
  readonly baseUrl: string
  readonly model: string
  /** undefined: the default of the provider (hashing 384, openai the model's native length) */
  readonly dimensions: number | undefined
  /** embedding requests in flight at once: the provider's socket pool is at least this large */
  readonly concurrency: number
}

const provider = {
  embedder: withEnv(Options.choice("embedder", ["hashing", "openai"]), Config.literal("hashing", "openai")("RAGPIPE_EMBEDDER"))
    .pipe(
      Options.withDefault("hashing" as const),
      Options.withDescription("embedding provider: hashing (offline) or openai (any OpenAI-compatible server) (env RAGPIPE_EMBEDDER)")
    ),
  baseUrl: withEnv(Options.text("base-url"), Config.string("RAGPIPE_BASE_URL")).pipe(
    Options.withDefault(OpenAiEmbedder.defaultBaseUrl),
    Options.withDescription(`provider base URL; /embeddings is appended (env RAGPIPE_BASE_URL; default ${OpenAiEmbedder.defaultBaseUrl})`)
  ),
  model: withEnv(Options.text("model"), Config.string("RAGPIPE_MODEL")).pipe(
    Options.withDefault(OpenAiEmbedder.defaultModel),
    Options.withDescription(`provider model (env RAGPIPE_MODEL; default ${OpenAiEmbedder.defaultModel})`)
  ),
  dimensions: optionalInteger(
    "dimensions",
    "RAGPIPE_DIMENSIONS",
    "embedding dimensions (default: hashing 384, openai the model's native length; search: the store's)"
  )
}

const providerSettings = (o: {
  readonly embedder: "hashing" | "openai"
  readonly baseUrl: string
  readonly model: string
  readonly dimensions: Option.Option<number>
}, concurrency: number): ProviderSettings => ({
  embedder: o.embedder,
  baseUrl: o.baseUrl,
  model: o.model,
  dimensions: Option.getOrUndefined(o.dimensions),
  concurrency
})

/** The embedder layer for the settings. */
export const providerLayer = (settings: ProviderSettings): Layer.Layer<Embedder.Embedder, EmbedError> => {
  if (settings.embedder === "hashing") {
    return Embedder.layerHashing({ dimensions: settings.dimensions ?? Embedder.defaultDimensions })
  }
  return Layer.unwrapEffect(Effect.gen(function*() {
    const dimensions = settings.dimensions ?? OpenAiEmbedder.knownDimensions[settings.model]
    if (dimensions === undefined) {
      return yield* new EmbedError({
        reason: "config",
        message: `the dimensions of model ${settings.model} are not known; pass --dimensions (RAGPIPE_DIMENSIONS)`
      })
    }
    // RAGPIPE_API_KEY, or OPENAI_API_KEY for api.openai.com only: the rule of OpenAiEmbedder.configFromEnv
    const key = yield* OpenAiEmbedder.apiKeyConfig(settings.baseUrl).pipe(
      Effect.mapError((error) =>
        new EmbedError({ reason: "config", message: `cannot read the API key: ${String(error)}` })
      )
    )
    return Embedder.layerOpenAi({
      baseUrl: settings.baseUrl,
      model: settings.model,
      dimensions,
      // one socket per request in flight, so no request waits for a socket while its timeout runs
      maxSockets: Math.max(settings.concurrency, OpenAiEmbedder.defaultMaxSockets),
      ...(Option.isSome(key) ? { apiKey: key.value } : {})
    })
  }))
}

/** What the CLI is built from; tests swap the embedder. */
export interface Dependencies {
  readonly embedder: (settings: ProviderSettings) => Layer.Layer<Embedder.Embedder, EmbedError>
}

const defaultDependencies: Dependencies = { embedder: providerLayer }

/** `30s`, `500ms`, `2m` or a number of seconds. */
const parseDuration = (text: string): Option.Option<Duration.Duration> => {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$/.exec(text)
  if (match === null) return Option.none()
  const value = Number(match[1])
  const unit = match[2] ?? "s"
  return Option.some(
    unit === "ms" ? Duration.millis(value) : unit === "m" ? Duration.minutes(value) : Duration.seconds(value)
  )
}

const ingestCommand = (deps: Dependencies) => Command.make(
  "ingest",
  {
    dir: Args.text({ name: "dir" }).pipe(Args.withDescription("directory to ingest")),
    ...store,
    chunkSize: integerOption("chunk-size", "RAGPIPE_CHUNK_SIZE", Chunker.defaults.chunkSize, "chunk size in characters"),
    chunkOverlap: integerOption(
      "chunk-overlap",
      "RAGPIPE_CHUNK_OVERLAP",
      Chunker.defaults.chunkOverlap,
      "overlap between consecutive chunks in characters"
    ),
    ...provider,
    batchSize: optionalInteger("batch-size", "RAGPIPE_BATCH_SIZE", "chunks per embedding request at most"),
    concurrency: integerOption("concurrency", "RAGPIPE_CONCURRENCY", 4, "embedding requests in flight at once"),
    rpm: optionalInteger("rpm", "RAGPIPE_RPM", "embedding requests per minute at most"),
    tpm: optionalInteger("tpm", "RAGPIPE_TPM", "estimated tokens per minute at most"),
    timeout: timeoutOption,
    include: listOption("include", "RAGPIPE_INCLUDE", "only files whose path matches this glob"),
    exclude: listOption("exclude", "RAGPIPE_EXCLUDE", "skip files and directories matching this glob"),
    extension: listOption("extension", "RAGPIPE_EXTENSION", "also read files with this extension (e.g. .log)"),
    maxFileSize: integerOption(
      "max-file-size",
      "RAGPIPE_MAX_FILE_SIZE",
      Loader.defaultMaxFileBytes,
      "skip files larger than this many bytes"
    ),
    includeHidden: flag("include-hidden", "RAGPIPE_INCLUDE_HIDDEN", "also read hidden files and directories"),
    maxErrorRate: withEnv(Options.float("max-error-rate"), Config.number("RAGPIPE_MAX_ERROR_RATE")).pipe(
      Options.withDefault(Ingest.resilienceDefaults.maxErrorRate),
      Options.withDescription(
        "end the run when more than this share of chunks fail (env RAGPIPE_MAX_ERROR_RATE; default 0.2)"
      )
    ),
    minSamples: integerOption(
      "min-samples",
      "RAGPIPE_MIN_SAMPLES",
      Ingest.resilienceDefaults.minSamples,
      "chunks seen before the error-rate breaker may end the run"
    ),
    breakerWindow: optionalInteger(
      "breaker-window",
      "RAGPIPE_BREAKER_WINDOW",
      "compute the error rate over the last N chunks (default: over the whole run)"
    ),
    json,
    quiet: flag("quiet", "RAGPIPE_QUIET", "no live progress"),
    index: flag("index", "RAGPIPE_INDEX", "build the HNSW vector index after a completed run (see ragpipe index)"),
    rehash: flag(
      "rehash",
      "RAGPIPE_REHASH",
      "read and hash every file, even those whose size, times and inode are unchanged since they were stored"
    ),
    allowEmpty: flag(
      "allow-empty",
      "RAGPIPE_ALLOW_EMPTY",
      "let a run that finds no file remove every stored document (without it, such a run keeps them and exits 1)"
    )
  },
  (o) =>
    Effect.gen(function*() {
      const target = yield* storeTarget(o)
      const chunker: Chunker.Options = { chunkSize: o.chunkSize, chunkOverlap: o.chunkOverlap }
      const checked = Chunker.validateOptions(chunker)
      if (Either.isLeft(checked)) return yield* invalid(checked.left)
      if (o.maxFileSize < 1) return yield* invalid(`--max-file-size must be at least 1 byte (got ${o.maxFileSize})`)
      if (!(o.maxErrorRate >= 0 && o.maxErrorRate <= 1)) {
        return yield* invalid(`--max-error-rate must be between 0 and 1 (got ${o.maxErrorRate})`)
      }
      if (o.minSamples < 1) return yield* invalid(`--min-samples must be at least 1 (got ${o.minSamples})`)
      const retry = yield* retryPolicy(o.timeout)
      if (o.concurrency < 1) return yield* invalid(`--concurrency must be at least 1 (got ${o.concurrency})`)
      for (const [name, value] of [["--batch-size", o.batchSize], ["--rpm", o.rpm], ["--tpm", o.tpm]] as const) {
        if (Option.isSome(value) && value.value < 1) {
          return yield* invalid(`${name} must be at least 1 (got ${value.value})`)
        }
      }
      if (Option.isSome(o.breakerWindow) && o.breakerWindow.value < 1) {
        return yield* invalid(`--breaker-window must be at least 1 (got ${o.breakerWindow.value})`)
      }
      // a directory that cannot be walked is reported before any store is opened (or created)
      yield* Loader.checkRoot(o.dir)
      const asJson = o.json
      const quiet = o.quiet
      const includeHidden = o.includeHidden
      const buildIndex = o.index
      const ledger = yield* ResourceLedger.ResourceLedger
      const shutdown = yield* Shutdown
      const signal = yield* Ref.make<Option.Option<StopSignal>>(Option.none())
      const progress = yield* Ref.make(Ingest.emptyProgress)

      const { index, summary } = yield* Ingest.ingestDirectory(
        {
          root: o.dir,
          include: o.include,
          exclude: o.exclude,
          extensions: o.extension,
          maxFileBytes: o.maxFileSize,
          includeHidden
        },
        {
          chunker,
          progress,
          stop: Effect.tap(shutdown.requested, (s) => Ref.set(signal, Option.some(s))),
          maxErrorRate: o.maxErrorRate,
          minSamples: o.minSamples,
          concurrency: o.concurrency,
          rehash: o.rehash,
          allowEmpty: o.allowEmpty,
          retry,
          ...(o.embedder === "openai" ? { cache: { maxBytes: 64 * 1024 * 1024 } } : {}),
          ...Option.match(o.batchSize, { onNone: () => ({}), onSome: (batchSize) => ({ batchSize }) }),
          ...Option.match(o.rpm, { onNone: () => ({}), onSome: (rpm) => ({ rpm }) }),
          ...Option.match(o.tpm, { onNone: () => ({}), onSome: (tpm) => ({ tpm }) }),
          ...Option.match(o.breakerWindow, { onNone: () => ({}), onSome: (breakerWindow) => ({ breakerWindow }) })
        }
      ).pipe(
        (effect) => withProgress(effect, progress, !quiet && !asJson && process.stderr.isTTY === true),
        // The index is built only after a run that completed. A signal during the build cancels it
        // (the summary is printed, then the signal's exit code); a failed build is reported after the
        // summary, as the documents are stored anyway.
        Effect.flatMap((summary) =>
          buildIndex && summary.outcome === "completed"
            ? VectorStore.VectorStore.pipe(
              Effect.flatMap((store) =>
                Effect.raceFirst(
                  Effect.map(store.createIndex, (build): Format.IndexReport => build),
                  Effect.flatMap(shutdown.requested, (s) => Effect.as(Ref.set(signal, Option.some(s)), null))
                )
              ),
              Effect.either,
              Effect.map((index) => ({ index, summary }))
            )
            : Effect.succeed({ index: Either.right<Format.IndexReport>(null), summary })
        ),
        Effect.provide(Layer.merge(storeLayer(target, false), deps.embedder(providerSettings(o, o.concurrency))))
      )

      const indexReport = Either.getOrNull(index)
      // Every layer above has been released here: the ledger's counts are final.
      const resources = (yield* ledger.snapshot).total
      const report: IngestReport = {
        files: summary.files,
        chunks: summary.chunks,
        resources,
        breaker: summary.breaker,
        durationMs: summary.durationMs,
        outcome: summary.outcome,
        walkComplete: summary.walkComplete,
        kept: summary.kept,
        skippedByReason: summary.skippedByReason,
        skippedFiles: summary.skippedFiles,
        ...(buildIndex ? { index: indexReport } : {})
      }
      yield* Console.log(asJson ? Format.ingestJson(report) : Format.ingestTable(report))
      if (Either.isLeft(index)) return yield* index.left
      if (summary.breaker !== null) {
        yield* Console.error(Format.breakerWords(summary.breaker))
        return yield* new ExitRequest({ code: ExitCode.breaker })
      }
      const stoppedBy = yield* Ref.get(signal)
      if (Option.isSome(stoppedBy)) return yield* new ExitRequest({ code: ExitCode[stoppedBy.value] })
      if (summary.outcome === "completed" && summary.files.seen === 0) {
        const filters = [
          ...o.include.map((glob) => `--include ${Format.shellWord(glob)}`),
          ...o.exclude.map((glob) => `--exclude ${Format.shellWord(glob)}`),
          ...o.extension.map((extension) => `--extension ${Format.shellWord(extension)}`)
        ]
        if (summary.kept === 0) return yield* Console.error(Format.nothingFoundWords(o.dir, filters))
        yield* Console.error(Format.keptWords(summary.kept, o.dir, filters))
        return yield* new ExitRequest({ code: ExitCode.failed })
      }
    })
).pipe(Command.withDescription("walk a directory, chunk and embed its files, and store them"))

// ---------------------------------------------------------------------------
// search

const searchCommand = (deps: Dependencies) => Command.make(
  "search",
  {
    query: Args.text({ name: "query" }).pipe(Args.withDescription("what to search for")),
    ...store,
    limit: integerOption("limit", "RAGPIPE_LIMIT", Search.defaultLimit, "number of results"),
    ...provider,
    timeout: timeoutOption,
    json
  },
  (o) =>
    Effect.gen(function*() {
      const target = yield* storeTarget(o)
      const retry = yield* retryPolicy(o.timeout)
      const hits = yield* Effect.gen(function*() {
        // the store's dimensions, read without counting its chunks (as `stats` does)
        const scope = yield* Search.storeScope
        const settings = providerSettings(o, 1)
        return yield* Search.search(o.query, { limit: o.limit, retry, scope }).pipe(
          Effect.provide(deps.embedder({
            ...settings,
            dimensions: settings.dimensions ?? scope.dimensions ?? undefined
          }))
        )
      }).pipe(Effect.provide(storeLayer(target, true)), interruptOnSignal)
      yield* Console.log(o.json ? JSON.stringify(hits) : Format.searchTable(hits))
    })
).pipe(Command.withDescription("search the store; prints rank, score, path, heading and a snippet"))

// ---------------------------------------------------------------------------
// stats

const statsCommand = Command.make(
  "stats",
  {
    ...store,
    checksum: flag(
      "checksum",
      "RAGPIPE_CHECKSUM",
      "also compute a sha256 digest of the stored chunks and embeddings (equal for equal content on any backend)"
    ),
    json
  },
  (o) =>
    Effect.gen(function*() {
      const target = yield* storeTarget(o)
      const asJson = o.json
      const withChecksum = o.checksum
      const { checksum, stats } = yield* Effect.gen(function*() {
        const store = yield* VectorStore.VectorStore
        const stats = yield* store.stats
        const checksum = withChecksum ? yield* store.checksum : undefined
        return { stats, checksum }
      }).pipe(Effect.provide(storeLayer(target, true)), interruptOnSignal)
      yield* Console.log(
        asJson
          ? JSON.stringify(checksum === undefined ? stats : { ...stats, checksum })
          : Format.statsTable(stats, storeName(target), checksum)
      )
    })
).pipe(Command.withDescription("documents, chunks, dimensions, model and size of the store"))

// ---------------------------------------------------------------------------
// index

const indexCommand = Command.make(
  "index",
  { ...store, json },
  (o) =>
    Effect.gen(function*() {
      const target = yield* storeTarget(o)
      const asJson = o.json
      const build = yield* Effect.flatMap(VectorStore.VectorStore, (store) => store.createIndex).pipe(
        Effect.provide(storeLayer(target, true)),
        interruptOnSignal
      )
      yield* Console.log(asJson ? JSON.stringify(build) : Format.indexTable(build, storeName(target)))
    })
).pipe(Command.withDescription(
  `build the HNSW vector index (${VectorStore.hnswIndexName}, cosine) that speeds up search on large stores`
))

// ---------------------------------------------------------------------------
// failures

const failuresCommand = Command.make(
  "failures",
  {
    ...store,
    limit: integerOption("limit", "RAGPIPE_LIMIT", 1000, "rows to list at most"),
    json
  },
  (o) =>
    Effect.gen(function*() {
      const target = yield* storeTarget(o)
      if (o.limit < 1) return yield* invalid(`--limit must be at least 1 (got ${o.limit})`)
      const asJson = o.json
      const rows = yield* Effect.flatMap(VectorStore.VectorStore, (s) => s.failures(o.limit)).pipe(
        Effect.provide(storeLayer(target, true)),
        interruptOnSignal
      )
      yield* Console.log(asJson ? JSON.stringify(rows) : Format.failuresTable(rows))
    })
).pipe(Command.withDescription("chunks that could not be embedded; the next ingest retries them"))

// ---------------------------------------------------------------------------

/** The root command. */
export const makeCommand = (deps: Dependencies = defaultDependencies) =>
  Command.make("ragpipe").pipe(
    Command.withDescription("resource-safe RAG embedding pipeline into PostgreSQL/pgvector"),
    Command.withSubcommands([
      ingestCommand(deps),
      searchCommand(deps),
      statsCommand,
      indexCommand,
      failuresCommand
    ])
  )

/**
 * `process.argv`-style arguments with `--log-level` moved to right after the
 * command's name. The option is every command's, but is only recognised
 * there or after an argument: after another option (`stats --json
 * --log-level debug`) it was an unknown argument. Nothing after `--` moves.
 */
export const hoistLogLevel = (argv: ReadonlyArray<string>): Array<string> => {
  const command = 2
  if (argv.length <= command + 1 || argv[command]!.startsWith("-")) return [...argv]
  const moved: Array<string> = []
  const rest: Array<string> = []
  let end = false
  for (let i = command + 1; i < argv.length; i++) {
    const arg = argv[i]!
    if (!end && arg === "--") end = true
    if (!end && arg === "--log-level" && i + 1 < argv.length) {
      moved.push(arg, argv[++i]!)
    } else if (!end && arg.startsWith("--log-level=")) {
      moved.push(arg)
    } else {
      rest.push(arg)
    }
  }
  return [...argv.slice(0, command + 1), ...moved, ...rest]
}

/** Run the CLI over `process.argv`-style arguments. */
export const makeRun = (deps: Dependencies = defaultDependencies) => {
  const run = Command.run(makeCommand(deps), { name: "ragpipe", version: "0.1.0" })
  return (argv: ReadonlyArray<string>) => run(hoistLogLevel(argv))
}

/** The CLI as shipped. */
export const run = makeRun()

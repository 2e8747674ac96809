/**
 * The Loader walks a directory lazily and turns the text files in it into
 * {@link SourceDocument}s.
 *
 * The walk is depth-first and incremental: at most one directory handle is
 * open per level of the current path, entries are read in small batches, and
 * files are opened only when the consumer pulls. Every directory and file
 * handle is acquired through the {@link ResourceLedger}, so it is released
 * when its subtree / read is done and also when the consumer stops early,
 * fails or is interrupted.
 *
 * Files that cannot be turned into a document are not errors: they are
 * emitted as `Either.left(SkippedFile)` with a reason. Only problems with the
 * root itself fail the stream with a {@link LoaderError}.
 *
 * Filtering rules:
 *
 * - a file is a candidate when its extension (case-insensitive) is in
 *   {@link defaultExtensions} or `options.extensions`
 * - `.git` and `node_modules` are never entered; other names starting with
 *   `.` are ignored unless `includeHidden` is true
 * - `exclude` globs are matched against the root-relative POSIX path of files
 *   and directories; an excluded directory is not descended into
 * - when `include` globs are given, a file must match at least one of them;
 *   a matching include glob only selects among files with an accepted
 *   extension, EXCEPT that an include glob whose last segment ends in a
 *   literal extension (`*.log`, `logs/app.log`, `*.{log,csv}`) also admits
 *   the files it matches that have that extension (read as `"text"`), while
 *   `logs/**` admits only accepted extensions below `logs/`
 * - a symlink inside the root to a file or directory inside the root is
 *   followed and keeps the link's path (and the link's name decides the
 *   format); directory symlinks that point to a directory on the current
 *   path (an ancestor) are reported as `symlink-loop` and not followed
 *
 * See `src/internal/glob.ts` for the glob syntax.
 *
 * @since 0.1.0
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as nodePath from "node:path"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import type { DocumentFormat, SkippedFile, SkipReason, SourceDocument } from "./Domain.js"
import { LoaderError } from "./Errors.js"
import * as Glob from "./internal/glob.js"
import { htmlToText } from "./internal/html.js"
import * as ResourceLedger from "./ResourceLedger.js"

/**
 * Options of {@link walk}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** the directory to walk */
  readonly root: string
  /**
   * extra extensions to read, added to {@link defaultExtensions}; with or
   * without the leading dot, case-insensitive
   */
  readonly extensions?: ReadonlyArray<string>
  /** globs a file must match (at least one), see the module docs */
  readonly include?: ReadonlyArray<string>
  /** globs of files and directories to leave out */
  readonly exclude?: ReadonlyArray<string>
  /** larger files are skipped as `too-large` (default {@link defaultMaxFileBytes}) */
  readonly maxFileBytes?: number
  /** read names starting with `.` (never `.git` / `node_modules`); default false */
  readonly includeHidden?: boolean
  /** how many files are read at the same time (default 4) */
  readonly readConcurrency?: number
}

/**
 * One item of the walk: a document, or a file that was passed over.
 *
 * @since 0.1.0
 * @category models
 */
export type LoadResult = Either.Either<SourceDocument, SkippedFile>

/**
 * Extensions read by default.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultExtensions: ReadonlyArray<string> = [".md", ".markdown", ".txt", ".rst", ".html", ".htm"]

/**
 * Files larger than this many bytes are skipped by default (10 MiB).
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultMaxFileBytes = 10 * 1024 * 1024

/**
 * Default number of files read concurrently.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultReadConcurrency = 4

/** How many bytes are checked for a NUL byte. */
const binarySniffBytes = 8 * 1024

/** Files are read in groups of `readConcurrency * readAheadFactor`. */
const readAheadFactor = 2

/** How many directory entries are read per pull. */
const dirBatchSize = 128

/**
 * The document format a file extension (with or without dot) is read as.
 *
 * @since 0.1.0
 * @category utils
 */
export const formatOf = (extension: string): DocumentFormat => {
  switch (normalizeExtension(extension)) {
    case ".md":
    case ".markdown":
      return "markdown"
    case ".rst":
      return "rst"
    case ".html":
    case ".htm":
      return "html"
    default:
      return "text"
  }
}

/**
 * One line describing a skipped file, e.g.
 * `big.md: too-large — 12.4 MiB exceeds the 10 MiB limit; raise --max-file-size`.
 *
 * @since 0.1.0
 * @category utils
 */
export const describeSkip = (skipped: SkippedFile): string => `${skipped.path}: ${skipped.reason} — ${skipped.detail}`

/**
 * `1536` → `"1.5 KiB"`, `10485760` → `"10 MiB"`.
 *
 * @since 0.1.0
 * @category utils
 */
export const formatBytes = (bytes: number): string => {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"]
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  const shown = unit === 0 || Number.isInteger(value) ? String(value) : value.toFixed(1)
  return `${shown} ${units[unit]}`
}

// -----------------------------------------------------------------------------
// I/O seam
// -----------------------------------------------------------------------------

/**
 * The part of `fs.Stats` the loader uses.
 *
 * @since 0.1.0
 * @category internal
 */
export interface StatsLike {
  readonly size: number
  isFile(): boolean
  isDirectory?(): boolean
  isFIFO?(): boolean
  isSocket?(): boolean
  isBlockDevice?(): boolean
  isCharacterDevice?(): boolean
}

/**
 * The part of an open file the loader uses.
 *
 * @since 0.1.0
 * @category internal
 */
export interface FileHandleLike {
  readonly stat: () => Promise<StatsLike>
  readonly read: (
    buffer: Uint8Array,
    offset: number,
    length: number,
    position: number
  ) => Promise<{ readonly bytesRead: number }>
  readonly close: () => Promise<void>
}

/**
 * The part of an open directory the loader uses.
 *
 * @since 0.1.0
 * @category internal
 */
export interface DirLike {
  readonly read: () => Promise<fs.Dirent | null>
  readonly close: () => Promise<void>
}

/**
 * How the loader opens files and directories. Only tests replace it (to
 * simulate failures that cannot be produced on a real file system).
 *
 * @since 0.1.0
 * @category internal
 */
export interface LoaderIO {
  readonly openFile: (path: string) => Promise<FileHandleLike>
  readonly openDir: (path: string) => Promise<DirLike>
}

// O_NONBLOCK: opening a FIFO must not block the walk; it is then rejected as
// "not a regular file" after fstat. No effect on regular files.
const openFlags = fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0)

/**
 * The real file system.
 *
 * @since 0.1.0
 * @category internal
 */
export const nodeIO: LoaderIO = {
  openFile: (path) => fs.promises.open(path, openFlags),
  openDir: (path) => fs.promises.opendir(path, { bufferSize: dirBatchSize })
}

// -----------------------------------------------------------------------------
// internals
// -----------------------------------------------------------------------------

type Candidate =
  | { readonly _tag: "File"; readonly path: string; readonly absolute: string; readonly format: DocumentFormat }
  | { readonly _tag: "Skipped"; readonly skipped: SkippedFile }

interface Context {
  readonly io: LoaderIO
  readonly rootReal: string
  readonly rootPrefix: string
  readonly rootDisplay: string
  readonly extensions: ReadonlySet<string>
  readonly include: Glob.Matcher
  readonly exclude: Glob.Matcher
  readonly maxFileBytes: number
  readonly includeHidden: boolean
  readonly readConcurrency: number
}

const normalizeExtension = (extension: string): string => {
  const e = extension.trim().toLowerCase()
  return e.startsWith(".") ? e : "." + e
}

const extensionOfName = (name: string): string => {
  const dot = name.lastIndexOf(".")
  // like path.extname: a leading dot (".bashrc") is not an extension
  return dot > 0 ? name.slice(dot).toLowerCase() : ""
}

const errnoCode = (error: unknown): string | undefined => {
  if (typeof error === "object" && error !== null && "code" in error) {
    const code = (error as { readonly code: unknown }).code
    return typeof code === "string" ? code : undefined
  }
  return undefined
}

const errnoDescriptions: Record<string, string> = {
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EISDIR: "is a directory",
  ENOENT: "no such file",
  ENOTDIR: "a path component is not a directory",
  EIO: "I/O error",
  EMFILE: "too many open files",
  ENFILE: "too many open files in the system",
  ELOOP: "too many levels of symbolic links",
  EBUSY: "resource busy",
  ETIMEDOUT: "timed out",
  EAGAIN: "resource temporarily unavailable"
}

const describeError = (error: unknown): string => {
  const code = errnoCode(error)
  if (code !== undefined) {
    const description = errnoDescriptions[code]
    return description === undefined ? code : `${description} (${code})`
  }
  if (error instanceof Error) return error.message
  return String(error)
}

const skip = (path: string, reason: SkipReason, detail: string): SkippedFile => ({ path, reason, detail })

const skippedCandidate = (path: string, reason: SkipReason, detail: string): Candidate => ({
  _tag: "Skipped",
  skipped: skip(path, reason, detail)
})

const unreadableFor = (path: string, error: unknown, during: string): SkippedFile =>
  errnoCode(error) === "ENOENT"
    ? skip(path, "unreadable", `vanished before it could be read (ENOENT)`)
    : skip(path, "unreadable", `cannot ${during}: ${describeError(error)}`)

const kindOfStats = (st: Omit<StatsLike, "size" | "isFile">): string =>
  st.isFIFO?.() === true
    ? "a FIFO"
    : st.isSocket?.() === true
    ? "a socket"
    : st.isBlockDevice?.() === true || st.isCharacterDevice?.() === true
    ? "a device"
    : st.isDirectory?.() === true
    ? "a directory"
    : "not a regular file"

const notRegular = (path: string, what: string): SkippedFile =>
  skip(path, "unreadable", what === "not a regular file" ? what : `not a regular file (${what})`)

/** The format a file is read as, or undefined when the filters leave it out. */
const accept = (ctx: Context, rel: string, name: string): DocumentFormat | undefined => {
  if (!ctx.exclude.isEmpty && ctx.exclude.matches(rel, false)) return undefined
  const ext = extensionOfName(name)
  const accepted = ext !== "" && ctx.extensions.has(ext)
  if (ctx.include.isEmpty) return accepted ? formatOf(ext) : undefined
  if (accepted) return ctx.include.matches(rel, false) ? formatOf(ext) : undefined
  if (ext === "") return undefined
  for (const glob of ctx.include.matching(rel)) {
    if (glob.literalExtension === ext) return formatOf(ext)
  }
  return undefined
}

const isInsideRoot = (ctx: Context, real: string): boolean => real === ctx.rootReal || real.startsWith(ctx.rootPrefix)

const relativeToRoot = (ctx: Context, real: string): string => {
  const rel = nodePath.relative(ctx.rootReal, real).split(nodePath.sep).join("/")
  return rel === "" ? "." : rel
}

type SymlinkOutcome =
  | { readonly _tag: "Ignore" }
  | { readonly _tag: "Candidate"; readonly candidate: Candidate }
  | { readonly _tag: "Directory"; readonly real: string }

const ignore: SymlinkOutcome = { _tag: "Ignore" }

const readlinkOr = async (path: string): Promise<string> => {
  try {
    return await fs.promises.readlink(path)
  } catch {
    return "?"
  }
}

/** Resolve a symlink found at `abs` (root-relative `rel`). Never throws. */
const resolveSymlink = async (
  ctx: Context,
  abs: string,
  rel: string,
  name: string,
  lineage: ReadonlyArray<string>
): Promise<SymlinkOutcome> => {
  const failed = async (error: unknown): Promise<SymlinkOutcome> => {
    // the target is unknown: report it only when it would be read as a file
    if (accept(ctx, rel, name) === undefined) return ignore
    const code = errnoCode(error)
    if (code === "ENOENT" || code === "ENOTDIR") {
      return {
        _tag: "Candidate",
        candidate: skippedCandidate(rel, "broken-symlink", `points to ${await readlinkOr(abs)}, which does not exist`)
      }
    }
    if (code === "ELOOP") {
      return {
        _tag: "Candidate",
        candidate: skippedCandidate(rel, "symlink-loop", "too many levels of symbolic links (ELOOP); not followed")
      }
    }
    return { _tag: "Candidate", candidate: { _tag: "Skipped", skipped: unreadableFor(rel, error, "resolve symlink") } }
  }
  let real: string
  let st: fs.Stats
  try {
    real = await fs.promises.realpath(abs)
    st = await fs.promises.stat(real)
  } catch (error) {
    return failed(error)
  }
  if (st.isDirectory()) {
    if (!ctx.exclude.isEmpty && ctx.exclude.matches(rel, true)) return ignore
    if (!isInsideRoot(ctx, real)) {
      return {
        _tag: "Candidate",
        candidate: skippedCandidate(rel, "symlink-outside-root", `points to ${real}, outside ${ctx.rootDisplay}; not followed`)
      }
    }
    if (lineage.includes(real)) {
      return {
        _tag: "Candidate",
        candidate: skippedCandidate(
          rel,
          "symlink-loop",
          `points to ${relativeToRoot(ctx, real)}, a directory that contains it; not followed`
        )
      }
    }
    return { _tag: "Directory", real }
  }
  const format = accept(ctx, rel, name)
  if (format === undefined) return ignore
  if (!isInsideRoot(ctx, real)) {
    return {
      _tag: "Candidate",
      candidate: skippedCandidate(rel, "symlink-outside-root", `points to ${real}, outside ${ctx.rootDisplay}; not followed`)
    }
  }
  if (!st.isFile()) return { _tag: "Candidate", candidate: { _tag: "Skipped", skipped: notRegular(rel, kindOfStats(st)) } }
  return { _tag: "Candidate", candidate: { _tag: "File", path: rel, absolute: real, format } }
}

const symlinkStream = (
  ctx: Context,
  abs: string,
  rel: string,
  name: string,
  lineage: ReadonlyArray<string>
): Stream.Stream<Candidate, LoaderError, ResourceLedger.ResourceLedger> =>
  Stream.unwrap(
    Effect.map(Effect.promise(() => resolveSymlink(ctx, abs, rel, name, lineage)), (outcome) => {
      switch (outcome._tag) {
        case "Ignore":
          return Stream.empty
        case "Candidate":
          return Stream.succeed(outcome.candidate)
        case "Directory":
          return dirStream(ctx, outcome.real, rel, lineage)
      }
    })
  )

const readBatch = async (dir: DirLike): Promise<Array<fs.Dirent>> => {
  const entries: Array<fs.Dirent> = []
  while (entries.length < dirBatchSize) {
    const entry = await dir.read()
    if (entry === null) break
    entries.push(entry)
  }
  return entries
}

/**
 * The candidates below the directory whose real path is `abs` (root-relative
 * `rel`, `""` for the root). `ancestors` are the real paths of the
 * directories above it on the current path.
 */
const dirStream = (
  ctx: Context,
  abs: string,
  rel: string,
  ancestors: ReadonlyArray<string>
): Stream.Stream<Candidate, LoaderError, ResourceLedger.ResourceLedger> =>
  Stream.unwrapScoped(
    Effect.map(
      Effect.either(
        ResourceLedger.acquireRelease(
          "dir",
          Effect.tryPromise({ try: () => ctx.io.openDir(abs), catch: (error) => error }),
          (dir) => Effect.promise(() => dir.close()),
          rel === "" ? "." : rel
        )
      ),
      (opened): Stream.Stream<Candidate, LoaderError, ResourceLedger.ResourceLedger> => {
        if (Either.isLeft(opened)) {
          return rel === ""
            ? Stream.fail(
              new LoaderError({
                reason: "root-unreadable",
                path: ctx.rootDisplay,
                message: `cannot open directory ${ctx.rootDisplay}: ${
                  describeError(opened.left)
                } — check its permissions`
              })
            )
            : Stream.succeed(
              skippedCandidate(rel, "unreadable-directory", `cannot open directory: ${describeError(opened.left)}`)
            )
        }
        const dir = opened.right
        const lineage = [...ancestors, abs]
        let finished = false

        const classify = (entries: ReadonlyArray<fs.Dirent>) => {
          const streams: Array<Stream.Stream<Candidate, LoaderError, ResourceLedger.ResourceLedger>> = []
          let pending: Array<Candidate> = []
          const flush = () => {
            if (pending.length > 0) {
              streams.push(Stream.fromIterable(pending))
              pending = []
            }
          }
          for (const entry of entries) {
            const name = entry.name
            if (name === ".git" || name === "node_modules") continue
            if (!ctx.includeHidden && name.startsWith(".")) continue
            const childRel = rel === "" ? name : `${rel}/${name}`
            const childAbs = nodePath.join(abs, name)
            if (entry.isFile()) {
              const format = accept(ctx, childRel, name)
              if (format !== undefined) pending.push({ _tag: "File", path: childRel, absolute: childAbs, format })
            } else if (entry.isDirectory()) {
              if (!ctx.exclude.isEmpty && ctx.exclude.matches(childRel, true)) continue
              flush()
              streams.push(dirStream(ctx, childAbs, childRel, lineage))
            } else if (entry.isSymbolicLink()) {
              flush()
              streams.push(symlinkStream(ctx, childAbs, childRel, name, lineage))
            } else if (accept(ctx, childRel, name) !== undefined) {
              pending.push({ _tag: "Skipped", skipped: notRegular(childRel, kindOfStats(entry)) })
            }
          }
          flush()
          return streams.length === 1 ? streams[0]! : Stream.concatAll(Chunk.unsafeFromArray(streams))
        }

        const next: Effect.Effect<
          Stream.Stream<Candidate, LoaderError, ResourceLedger.ResourceLedger>,
          Option.Option<never>
        > = Effect.suspend(() => {
          if (finished) return Effect.fail(Option.none())
          return Effect.flatMap(
            Effect.either(Effect.tryPromise({ try: () => readBatch(dir), catch: (error) => error })),
            (read) => {
              if (Either.isLeft(read)) {
                finished = true
                return Effect.succeed(
                  rel === ""
                    ? Stream.fail(
                      new LoaderError({
                        reason: "walk-failed",
                        path: ctx.rootDisplay,
                        message: `reading directory ${ctx.rootDisplay} failed: ${describeError(read.left)}`
                      })
                    )
                    : Stream.succeed(
                      skippedCandidate(
                        rel,
                        "unreadable-directory",
                        `reading the directory failed: ${describeError(read.left)}`
                      )
                    )
                )
              }
              if (read.right.length < dirBatchSize) finished = true
              if (read.right.length === 0) return Effect.fail(Option.none())
              return Effect.succeed(classify(read.right))
            }
          )
        })

        return Stream.flatten(Stream.repeatEffectOption(next))
      }
    )
  )

const utf8 = new TextDecoder("utf-8", { fatal: true })

type ReadOutcome =
  | { readonly _tag: "Bytes"; readonly bytes: Uint8Array }
  | { readonly _tag: "Skipped"; readonly skipped: SkippedFile }

/** stat + read an open file. Never throws. */
const readOpen = async (ctx: Context, path: string, handle: FileHandleLike): Promise<ReadOutcome> => {
  let size: number
  try {
    const st = await handle.stat()
    if (!st.isFile()) return { _tag: "Skipped", skipped: notRegular(path, kindOfStats(st)) }
    size = st.size
  } catch (error) {
    return { _tag: "Skipped", skipped: unreadableFor(path, error, "stat") }
  }
  if (size > ctx.maxFileBytes) {
    return {
      _tag: "Skipped",
      skipped: skip(
        path,
        "too-large",
        `${formatBytes(size)} exceeds the ${formatBytes(ctx.maxFileBytes)} limit; raise --max-file-size`
      )
    }
  }
  if (size === 0) return { _tag: "Skipped", skipped: skip(path, "empty", "the file is empty (0 bytes)") }
  const buffer = new Uint8Array(size)
  let offset = 0
  try {
    while (offset < size) {
      const { bytesRead } = await handle.read(buffer, offset, size - offset, offset)
      if (bytesRead === 0) break
      offset += bytesRead
    }
  } catch (error) {
    return { _tag: "Skipped", skipped: unreadableFor(path, error, "read") }
  }
  return { _tag: "Bytes", bytes: offset < size ? buffer.subarray(0, offset) : buffer }
}

const toResult = (candidate: Candidate & { readonly _tag: "File" }, bytes: Uint8Array): LoadResult => {
  const path = candidate.path
  if (bytes.length === 0) return Either.left(skip(path, "empty", "the file is empty (0 bytes)"))
  const sniff = bytes.length > binarySniffBytes ? bytes.subarray(0, binarySniffBytes) : bytes
  if (sniff.indexOf(0) !== -1) {
    return Either.left(skip(path, "binary", "contains a NUL byte in its first 8 KiB; looks like a binary file"))
  }
  let text: string
  try {
    // the decoder drops a leading UTF-8 BOM (ignoreBOM defaults to false)
    text = utf8.decode(bytes)
  } catch {
    return Either.left(skip(path, "invalid-utf8", "not valid UTF-8; convert it to UTF-8 to ingest it"))
  }
  if (candidate.format === "html") {
    text = htmlToText(text)
    if (text.trim().length === 0) {
      return Either.left(skip(path, "empty", "no text left after removing the HTML markup"))
    }
  } else if (text.trim().length === 0) {
    return Either.left(skip(path, "empty", "contains only whitespace"))
  }
  return Either.right({
    path,
    text,
    contentHash: createHash("sha256").update(bytes).digest("hex"),
    size: bytes.length,
    format: candidate.format
  })
}

const load = (ctx: Context) => (candidate: Candidate): Effect.Effect<LoadResult, never, ResourceLedger.ResourceLedger> => {
  if (candidate._tag === "Skipped") return Effect.succeed(Either.left(candidate.skipped))
  return Effect.scoped(
    Effect.flatMap(
      Effect.either(
        ResourceLedger.acquireRelease(
          "file",
          Effect.tryPromise({ try: () => ctx.io.openFile(candidate.absolute), catch: (error) => error }),
          (handle) => Effect.promise(() => handle.close()),
          candidate.path
        )
      ),
      (opened) =>
        Either.isLeft(opened)
          ? Effect.succeed(Either.left(unreadableFor(candidate.path, opened.left, "open")))
          : Effect.map(
            Effect.promise(() => readOpen(ctx, candidate.path, opened.right)),
            (outcome): LoadResult =>
              outcome._tag === "Skipped" ? Either.left(outcome.skipped) : toResult(candidate, outcome.bytes)
          )
    )
  )
}

const resolveRoot = (root: string): Effect.Effect<{ readonly real: string; readonly display: string }, LoaderError> =>
  Effect.tryPromise({
    try: async () => {
      const display = root === "" ? "." : root
      let real: string
      try {
        real = await fs.promises.realpath(nodePath.resolve(root))
      } catch (error) {
        const code = errnoCode(error)
        if (code === "ENOENT" || code === "ENOTDIR") {
          throw new LoaderError({
            reason: "root-not-found",
            path: display,
            message: `no such directory: ${display} — check the path`
          })
        }
        throw new LoaderError({
          reason: "root-unreadable",
          path: display,
          message: `cannot resolve ${display}: ${describeError(error)} — check its permissions`
        })
      }
      const st = await fs.promises.stat(real)
      if (!st.isDirectory()) {
        throw new LoaderError({
          reason: "root-not-a-directory",
          path: display,
          message: `${display} is not a directory — pass the directory that contains the documents`
        })
      }
      return { real, display }
    },
    catch: (error) =>
      error instanceof LoaderError ? error : new LoaderError({
        reason: "root-unreadable",
        path: root,
        message: `cannot read ${root}: ${describeError(error)}`
      })
  })

const positiveInt = (value: number | undefined, fallback: number): number =>
  value !== undefined && Number.isFinite(value) && value >= 1 ? Math.floor(value) : fallback

/**
 * {@link walk} with a replaceable I/O layer; for tests.
 *
 * @since 0.1.0
 * @category internal
 */
export const walkWith = (
  options: Options,
  io: LoaderIO
): Stream.Stream<LoadResult, LoaderError, ResourceLedger.ResourceLedger> =>
  Stream.unwrap(
    Effect.map(resolveRoot(options.root), (root) => {
      const ctx: Context = {
        io,
        rootReal: root.real,
        rootPrefix: root.real.endsWith(nodePath.sep) ? root.real : root.real + nodePath.sep,
        rootDisplay: root.display,
        extensions: new Set(
          [...defaultExtensions, ...(options.extensions ?? [])]
            .filter((e) => e.trim().replace(/^\./, "").length > 0)
            .map(normalizeExtension)
        ),
        include: Glob.matcher(options.include),
        exclude: Glob.matcher(options.exclude),
        maxFileBytes: options.maxFileBytes !== undefined && Number.isFinite(options.maxFileBytes) &&
            options.maxFileBytes >= 0
          ? options.maxFileBytes
          : defaultMaxFileBytes,
        includeHidden: options.includeHidden === true,
        readConcurrency: positiveInt(options.readConcurrency, defaultReadConcurrency)
      }
      const candidates = dirStream(ctx, root.real, "", [])
      if (ctx.readConcurrency === 1) return Stream.mapEffect(candidates, load(ctx))
      // Reads run in small groups: Stream.mapEffect's concurrent mode costs
      // far more per element than a file read, Effect.forEach over a chunk
      // does not. Groups stay small so an early stop opens few files.
      return candidates.pipe(
        Stream.rechunk(ctx.readConcurrency * readAheadFactor),
        Stream.mapChunksEffect((group) =>
          Effect.map(
            Effect.forEach(group, load(ctx), { concurrency: ctx.readConcurrency }),
            Chunk.unsafeFromArray
          )
        )
      )
    })
  )

/**
 * Walk `options.root` lazily, depth-first, emitting one {@link LoadResult}
 * per candidate file: `Right(document)` or `Left(skipped)`.
 *
 * Skip reasons: `binary` (NUL byte in the first 8 KiB), `invalid-utf8`,
 * `empty` (0 bytes, only whitespace, or no text after removing HTML markup),
 * `too-large` (size above `maxFileBytes`, checked before reading),
 * `unreadable` (open/stat/read failed, the file vanished, or it is not a
 * regular file), `symlink-outside-root`, `symlink-loop` (a directory symlink
 * to a directory on the current path, or ELOOP), `broken-symlink`,
 * `unreadable-directory`. Symlinks inside the root are followed.
 *
 * Fails with a {@link LoaderError} only when the root does not exist, is not
 * a directory, or cannot be read.
 *
 * @since 0.1.0
 * @category constructors
 */
export const walk = (options: Options): Stream.Stream<LoadResult, LoaderError, ResourceLedger.ResourceLedger> =>
  walkWith(options, nodeIO)

/**
 * The Loader port: where an ingest gets its documents. The filesystem walk
 * is one implementation; {@link layerFromStream} serves documents from any
 * `Stream` (a database, an API, a test fixture).
 *
 * @since 0.1.0
 * @category tags
 */
export class Loader extends Context.Tag("ragpipe/Loader")<Loader, {
  /** The documents (and skipped files) under `options.root`, lazily. */
  readonly load: (options: Options) => Stream.Stream<LoadResult, LoaderError>
}>() {}

/**
 * The filesystem loader ({@link walk}), recording its handles in the ledger.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Loader, never, ResourceLedger.ResourceLedger> = Layer.effect(
  Loader,
  Effect.map(ResourceLedger.ResourceLedger, (ledger) => ({
    load: (options) => walk(options).pipe(Stream.provideService(ResourceLedger.ResourceLedger, ledger))
  }))
)

/**
 * A loader that ignores the root and serves the given documents: plain
 * documents, or `Either`s whose `Left`s are files passed over.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFromStream = (
  documents: Stream.Stream<SourceDocument | LoadResult, LoaderError>
): Layer.Layer<Loader> =>
  Layer.succeed(Loader, {
    load: () =>
      Stream.map(documents, (item): LoadResult => Either.isEither(item) ? item : Either.right(item))
  })

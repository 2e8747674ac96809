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
import { hash } from "node:crypto"
import * as fs from "node:fs"
import * as nodePath from "node:path"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import { identity } from "effect/Function"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import type { DocumentFormat, SkippedFile, SkipReason, SourceDocument } from "./Domain.js"
import { LoaderError } from "./Errors.js"
import * as Glob from "./internal/glob.js"
import { htmlToText } from "./internal/html.js"
import * as NativeFs from "./internal/nativeFs.js"
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
  /**
   * Which files need not be read: called with groups of candidate files and
   * their {@link FileFingerprint}s before any of them is opened, it answers
   * the paths whose content the caller already holds (typically: the store
   * has a document with that fingerprint). Those files are emitted as
   * `Left` with reason `unchanged` and never opened. Files whose
   * fingerprint cannot be trusted (modified in the last
   * {@link racyWindowMillis}) are not offered. It must not fail: answer the
   * empty set when in doubt, and the files are read.
   */
  readonly unchanged?: (files: ReadonlyArray<FileFingerprint>) => Effect.Effect<ReadonlySet<string>>
  /**
   * With {@link unchanged}: the files it answers are left out of the stream
   * instead of emitted as `unchanged` skips — for a caller that counts them
   * from its answers (the ingest does, with the filesystem loader). Default
   * false. A {@link Loader} tells whether it honours this by
   * `omitsUnchanged`.
   */
  readonly omitUnchanged?: boolean
  /**
   * With {@link unchanged}: which whole directories need not be read. Once
   * directories are listed, this is asked about them, several at once (those
   * listed since it was last asked): for each, its path relative to the
   * root (`""` for the root itself) and every candidate file directly in
   * it with its fingerprint — a directory is asked about when each of
   * those files has a fingerprint that can be trusted and there are at
   * most {@link directoryCheckLimit} of them. It answers the paths of the
   * directories whose files the caller holds exactly, with these
   * fingerprints, and no other: their files are then all `unchanged` (left
   * out, with {@link omitUnchanged}), neither offered to `unchanged` nor
   * opened. The files of the other directories are offered to `unchanged`
   * one by one. With it, a directory's files are held until its listing
   * ends: they come after those of the directories below it. It must not
   * fail: answer the empty set when in doubt.
   */
  readonly unchangedDirectories?: (directories: ReadonlyArray<ListedDirectory>) => Effect.Effect<ReadonlySet<string>>
}

/**
 * A listed directory as offered to {@link Options.unchangedDirectories}: its
 * path relative to the root (`""` for the root) and its candidate files.
 *
 * @since 0.1.0
 * @category models
 */
export interface ListedDirectory {
  readonly path: string
  readonly files: ReadonlyArray<FileFingerprint>
}

/**
 * A candidate file's path (relative to the root) and fingerprint, as offered
 * to {@link Options.unchanged}.
 *
 * @since 0.1.0
 * @category models
 */
export interface FileFingerprint {
  readonly path: string
  readonly fingerprint: string
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
 * How many files are read per pull: an early stop opens at most this many
 * files beyond what it consumed. Each pull costs the consumer a stream step
 * (and, with a stop signal, a race against it), so smaller groups cost more
 * per file: with 8 the ingest of 10,000 small files took about 9% longer.
 *
 * @since 0.1.0
 * @category constants
 */
export const readAhead = 64

/**
 * A file modified less than this long before it is read gets no
 * fingerprint: a later change within the same timestamp tick (2 s on FAT,
 * 1 s on some others) could otherwise go unnoticed.
 *
 * @since 0.1.0
 * @category constants
 */
export const racyWindowMillis = 2000

/** Candidates offered to `Options.unchanged` per call. */
const unchangedGroup = 1024

/**
 * A directory with more candidate files than this is not offered to
 * `Options.unchangedDirectories`: the walk holds a directory's files until
 * its listing ends, and no more than this many.
 *
 * @since 0.1.0
 * @category constants
 */
export const directoryCheckLimit = 4096

/** Files larger than this are read in slices, yielding to other fibers in between. */
const readSliceBytes = 1024 * 1024

/**
 * The fingerprint of a file: size, modification and change times and inode.
 * Any write changes the change time (which no tool can set back), so an equal
 * fingerprint means equal content unless the file was written within the
 * timestamp granularity of the previous write — see {@link racyWindowMillis}.
 *
 * @since 0.1.0
 * @category utils
 */
export const fingerprintOf = (st: FingerprintStats): string => `v1:${st.size}:${st.mtimeMs}:${st.ctimeMs}:${st.ino}`

/**
 * The part of `fs.Stats` a fingerprint is made of.
 *
 * @since 0.1.0
 * @category models
 */
export interface FingerprintStats {
  readonly size: number
  readonly mtimeMs: number
  readonly ctimeMs: number
  readonly ino: number
}

/** The fingerprint, unless the file changed too recently for it to be trusted. */
const trustedFingerprint = (st: StatsLike, nowMillis: number): string | undefined =>
  st.mtimeMs !== undefined && st.ctimeMs !== undefined && st.ino !== undefined &&
    st.mtimeMs <= nowMillis - racyWindowMillis && st.ctimeMs <= nowMillis - racyWindowMillis
    ? fingerprintOf(st as FingerprintStats)
    : undefined

/** How many directory entries are read per pull. */
const dirBatchSize = 128

/**
 * A directory of at most this size (its `st_size`) is listed whole: a few
 * thousand entries at most on ext4 (4 KiB blocks of entries), xfs, btrfs
 * (twice the length of its names) and tmpfs (20 bytes an entry).
 */
const wholeListingBytes = 64 * 1024

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
  readonly mtimeMs?: number
  readonly ctimeMs?: number
  readonly ino?: number
  isFile(): boolean
  isDirectory?(): boolean
  isFIFO?(): boolean
  isSocket?(): boolean
  isBlockDevice?(): boolean
  isCharacterDevice?(): boolean
}

/**
 * The part of an open file the loader uses. Synchronous: a small file is
 * read in a few microseconds, far less than a round trip through the
 * thread pool; large files are read in slices with yields in between.
 * Methods throw `errno` errors.
 *
 * @since 0.1.0
 * @category internal
 */
export interface FileHandleLike {
  readonly stat: () => StatsLike
  /** reads into `buffer[offset, offset + length)` from `position`; returns the bytes read */
  readonly read: (buffer: Uint8Array, offset: number, length: number, position: number) => number
  readonly close: () => void
}

/**
 * The part of an open directory the loader uses. Synchronous, like file
 * reads: entries come in buffered batches, so a read rarely reaches the
 * system at all. Methods throw `errno` errors.
 *
 * @since 0.1.0
 * @category internal
 */
export interface DirLike {
  /** the next entry, or null at the end */
  readonly read: () => DirEntryLike | null
  readonly close: () => void
}

/**
 * A directory entry: its name and type, as `fs.Dirent` tells them (an
 * `fs.Dirent` is one).
 *
 * @since 0.1.0
 * @category internal
 */
export type DirEntryLike = NativeFs.DirentLike

/**
 * How the loader opens files and directories. Only tests replace it (to
 * simulate failures that cannot be produced on a real file system).
 *
 * @since 0.1.0
 * @category internal
 */
export interface LoaderIO {
  /** opens a file for reading (throws `errno` errors); must not block on a FIFO */
  readonly openFile: (path: string) => FileHandleLike
  /** the file's stats, following symlinks (throws `errno` errors) */
  readonly stat: (path: string) => StatsLike
  /** opens a directory for listing (throws `errno` errors) */
  readonly openDir: (path: string) => DirLike
  /**
   * The stats of many files at once, following symlinks, in order:
   * undefined where a stat failed. Optional: without it, {@link stat} is
   * called for each.
   */
  readonly statMany?: (paths: ReadonlyArray<string>) => ReadonlyArray<StatsLike | undefined>
}

// O_NONBLOCK: opening a FIFO must not block the walk; it is then rejected as
// "not a regular file" after fstat. No effect on regular files.
const openFlags = fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0)

/** A directory listed whole, read from memory. */
const listedDir = (entries: ReadonlyArray<DirEntryLike>): DirLike => {
  let next = 0
  return { read: () => entries[next++] ?? null, close: () => undefined }
}

/** A directory read in batches through a handle. */
const dirHandle = (path: string): DirLike => {
  const dir = fs.opendirSync(path, { bufferSize: dirBatchSize })
  return { read: () => dir.readSync(), close: () => dir.closeSync() }
}

/**
 * The real file system through `node:fs` alone: what {@link nodeIO} is
 * where the native addon is not built.
 *
 * @since 0.1.0
 * @category internal
 */
export const fsIO: LoaderIO = {
  openFile: (path) => {
    const fd = fs.openSync(path, openFlags)
    return {
      stat: () => fs.fstatSync(fd),
      read: (buffer, offset, length, position) => fs.readSync(fd, buffer, offset, length, position),
      close: () => fs.closeSync(fd)
    }
  },
  stat: (path) => fs.statSync(path),
  openDir: (path) => {
    // A directory whose size says it is small is listed whole, in one call;
    // a larger one, or one whose size says nothing (0), is read in batches
    // through a handle, so that no listing is held whole. A handle costs
    // more: on an unchanged re-run of 10,000 files in 289 directories
    // (alternating runs, 15 each) a median of 104 ms with a handle for
    // every directory, 97 ms with the small ones listed whole.
    const size = fs.statSync(path).size
    return size > 0 && size <= wholeListingBytes
      ? listedDir(fs.readdirSync(path, { withFileTypes: true }))
      : dirHandle(path)
  }
}

/** {@link fsIO}, with directories listed and files stat'ed through the addon. */
const withNative = (native: NativeFs.NativeFs): LoaderIO => ({
  ...fsIO,
  openDir: (path) => {
    // the size is checked and the directory listed in one call
    const entries = native.listDirectory(path, wholeListingBytes)
    return entries !== undefined ? listedDir(entries) : dirHandle(path)
  },
  statMany: native.statMany
})

/**
 * The real file system: {@link fsIO}, with directories listed and files
 * stat'ed through the native addon where it is built (see
 * `internal/nativeFs.ts`), with the same results.
 *
 * @since 0.1.0
 * @category internal
 */
export const nodeIO: LoaderIO = NativeFs.native === undefined ? fsIO : withNative(NativeFs.native)

// -----------------------------------------------------------------------------
// internals
// -----------------------------------------------------------------------------

type Candidate =
  | { readonly _tag: "File"; readonly path: string; readonly absolute: string; readonly format: DocumentFormat }
  | { readonly _tag: "Skipped"; readonly skipped: SkippedFile }

/** A listed directory's candidate files, held to be checked whole (`Options.unchangedDirectories`). */
interface DirectoryCandidate {
  readonly _tag: "Directory"
  readonly path: string
  readonly files: ReadonlyArray<FileCandidate>
}

/** What the walk lists: candidates, and directories whose files it held. */
type Listed = Candidate | DirectoryCandidate

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
  readonly ledger: ResourceLedger.Service
  /** the walk's buffer for small files, grown as needed (see {@link loadSmall}) */
  scratch: Buffer
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

const readBatch = (dir: DirLike): Array<DirEntryLike> => {
  const entries: Array<DirEntryLike> = []
  while (entries.length < dirBatchSize) {
    const entry = dir.read()
    if (entry === null) break
    entries.push(entry)
  }
  return entries
}

/** A directory being listed: its handle (on the walk's stack of open directories) and its current batch of entries. */
interface Frame {
  readonly rel: string
  /** the real paths of this directory and of those above it */
  readonly lineage: ReadonlyArray<string>
  readonly dir: DirLike
  entries: ReadonlyArray<DirEntryLike>
  next: number
  /** the listing has returned its last batch */
  listed: boolean
  /** the directory's files so far, while the walk holds them (see `Pulls.holdDirectories`) */
  held: Array<FileCandidate> | undefined
}

/** At most this many candidates per pull of {@link candidatesOf}, by default. */
const candidatesPerPull = 256

/** How {@link candidatesOf} sizes its pulls. */
interface Pulls {
  /** at most this many candidates per pull */
  readonly size: number
  /**
   * a pull goes on into and out of directories: for a consumer that takes
   * whole groups anyway (the check of unchanged files), where a pull per
   * directory only cost stream steps — on an unchanged re-run of 10,000
   * files in 289 directories, 493 pulls where 11 do
   */
  readonly acrossDirectories: boolean
  /**
   * a directory's files are held until its listing ends, then listed as
   * one `Directory` (up to {@link directoryCheckLimit} of them; beyond, they
   * are listed as they come); a pull counts each of its files
   */
  readonly holdDirectories?: boolean
}

/**
 * A directory's entry as a path: the directory's real path and the entry's
 * name (which holds no separator), without `path.join`'s normalisation —
 * the walk's most frequent call.
 */
const childPath = (dir: string, name: string): string =>
  dir.endsWith(nodePath.sep) ? dir + name : dir + nodePath.sep + name

/**
 * Whether `abs`, a listed entry's path, names it. A name that is not valid
 * UTF-8 is listed with U+FFFD in place of its bad bytes, and no entry has
 * that name (unless one is really called so).
 */
const namesEntry = (ctx: Context, abs: string): boolean => {
  try {
    ctx.io.stat(abs)
    return true
  } catch (error) {
    return errnoCode(error) !== "ENOENT"
  }
}

/** An entry whose name is not valid UTF-8: it cannot be opened, nor stored under a name of its own. */
const invalidName = (rel: string, kind: "file" | "directory"): Candidate =>
  skippedCandidate(
    rel,
    "invalid-name",
    `the ${kind}'s name is not valid UTF-8 (its bad bytes show as \uFFFD)` +
      (kind === "directory" ? ", so nothing under it is read" : "") +
      `; rename it to UTF-8 to ingest it (convmv converts names from another encoding)`
  )

/**
 * The candidates below the root, depth first, in listing order. One pull
 * lists on until it has `pulls.size` candidates, the walk would enter or
 * leave a directory (unless `pulls.acrossDirectories`), or the walk ends.
 * With `pulls.holdDirectories`, a directory's files come as one `Directory`
 * when its listing ends.
 * The open directories form a stack in the ledger, in the stream's scope:
 * entering and leaving a directory are synchronous calls, and an early end
 * closes the directories still open innermost first.
 */
const candidatesOf = (
  ctx: Context,
  pulls: Pulls = { size: candidatesPerPull, acrossDirectories: false }
): Stream.Stream<Listed, LoaderError> =>
  Stream.unwrapScoped(Effect.map(ctx.ledger.stack<DirLike>("dir", (dir) => dir.close()), (dirs) => {
    const stack: Array<Frame> = []
    let started = false
    let failure: LoaderError | undefined
    let out: Array<Listed> = []
    /** the files in `out` (a held directory counts each of its files) */
    let outSize = 0

    const put = (listed: Listed) => {
      out.push(listed)
      outSize += listed._tag === "Directory" ? listed.files.length : 1
    }

    /** A candidate of the directory `frame`: held with its directory's files, or listed. */
    const place = (frame: Frame, candidate: Candidate) => {
      const held = frame.held
      if (held === undefined || candidate._tag !== "File") return put(candidate)
      held.push(candidate)
      if (held.length <= directoryCheckLimit) return
      // too many to hold: this directory's files are listed as they come
      frame.held = undefined
      for (const file of held) put(file)
    }

    /**
     * Open a directory and push it, or record why it cannot be listed; the
     * error when the root itself cannot be opened.
     */
    const enter = (abs: string, rel: string, above: ReadonlyArray<string>): LoaderError | undefined => {
      let dir: DirLike
      try {
        dir = dirs.push(() => ctx.io.openDir(abs), rel === "" ? "." : rel)
      } catch (error) {
        if (rel === "") {
          return new LoaderError({
            reason: "root-unreadable",
            path: ctx.rootDisplay,
            message: `cannot open directory ${ctx.rootDisplay}: ${describeError(error)} — check its permissions`
          })
        }
        put(skippedCandidate(rel, "unreadable-directory", `cannot open directory: ${describeError(error)}`))
        return undefined
      }
      const held = pulls.holdDirectories === true ? [] : undefined
      stack.push({ rel, lineage: [...above, abs], dir, entries: [], next: 0, listed: false, held })
      return undefined
    }

    const emit = (): Chunk.Chunk<Listed> => {
      const chunk = Chunk.unsafeFromArray(out)
      out = []
      outSize = 0
      return chunk
    }

    const step = (): Effect.Effect<Chunk.Chunk<Listed>, Option.Option<LoaderError>> => {
      while (outSize < pulls.size) {
        const top = stack[stack.length - 1]
        if (top === undefined) {
          if (!started) {
            started = true
            const rootError = enter(ctx.rootReal, "", [])
            if (rootError !== undefined) return Effect.fail(Option.some(rootError))
            continue
          }
          break
        }
        if (top.next < top.entries.length) {
          const entry = top.entries[top.next]!
          const name = entry.name
          const descends = entry.isDirectory() || entry.isSymbolicLink()
          // a pull ends where the walk enters or leaves a directory (unless
          // it spans them): what a consumer takes first opens no directory
          // it does not need
          if (descends && out.length > 0 && !pulls.acrossDirectories) break
          top.next++
          if (name === ".git" || name === "node_modules") continue
          if (!ctx.includeHidden && name.startsWith(".")) continue
          const rel = top.rel === "" ? name : `${top.rel}/${name}`
          const abs = childPath(top.lineage[top.lineage.length - 1]!, name)
          const unnamed = name.includes("\uFFFD") && !namesEntry(ctx, abs)
          if (entry.isFile()) {
            const format = accept(ctx, rel, name)
            if (format !== undefined) {
              place(top, unnamed ? invalidName(rel, "file") : { _tag: "File", path: rel, absolute: abs, format })
            }
          } else if (entry.isDirectory()) {
            if (!ctx.exclude.isEmpty && ctx.exclude.matches(rel, true)) continue
            if (unnamed) put(invalidName(rel, "directory"))
            else enter(abs, rel, top.lineage)
          } else if (unnamed) {
            if (accept(ctx, rel, name) !== undefined) put(invalidName(rel, "file"))
          } else if (entry.isSymbolicLink()) {
            return Effect.flatMap(
              Effect.promise(() => resolveSymlink(ctx, abs, rel, name, top.lineage)),
              (outcome): Effect.Effect<Chunk.Chunk<Listed>, Option.Option<LoaderError>> => {
                switch (outcome._tag) {
                  case "Ignore":
                    break
                  case "Candidate":
                    place(top, outcome.candidate)
                    break
                  case "Directory":
                    enter(outcome.real, rel, top.lineage)
                    break
                }
                return step()
              }
            )
          } else if (accept(ctx, rel, name) !== undefined) {
            put({ _tag: "Skipped", skipped: notRegular(rel, kindOfStats(entry)) })
          }
          continue
        }
        if (!top.listed) {
          try {
            top.entries = readBatch(top.dir)
          } catch (error) {
            top.entries = []
            top.listed = true
            // not listed whole: its files so far are offered one by one
            if (top.held !== undefined) {
              for (const file of top.held) put(file)
              top.held = undefined
            }
            if (top.rel === "") {
              failure = new LoaderError({
                reason: "walk-failed",
                path: ctx.rootDisplay,
                message: `reading directory ${ctx.rootDisplay} failed: ${describeError(error)}`
              })
            } else {
              put(
                skippedCandidate(top.rel, "unreadable-directory", `reading the directory failed: ${describeError(error)}`)
              )
            }
          }
          top.next = 0
          if (top.entries.length < dirBatchSize) top.listed = true
          continue
        }
        if (out.length > 0 && !pulls.acrossDirectories) break
        // listed: closed now, before the walk goes on
        stack.pop()
        dirs.pop()
        if (top.held !== undefined && top.held.length > 0) put({ _tag: "Directory", path: top.rel, files: top.held })
      }
      if (out.length > 0) return Effect.succeed(emit())
      return Effect.fail(failure === undefined ? Option.none() : Option.some(failure))
    }

    return Stream.repeatEffectChunkOption(Effect.suspend(step))
  }))

const utf8 = new TextDecoder("utf-8", { fatal: true })

/** Why an opened file is not read, from its stats: not a regular file, too large, or empty. */
const checkStats = (ctx: Context, path: string, st: StatsLike): LoadResult | undefined => {
  if (!st.isFile()) return Either.left(notRegular(path, kindOfStats(st)))
  if (st.size > ctx.maxFileBytes) {
    return Either.left(skip(
      path,
      "too-large",
      `${formatBytes(st.size)} exceeds the ${formatBytes(ctx.maxFileBytes)} limit; raise --max-file-size`
    ))
  }
  if (st.size === 0) return Either.left(skip(path, "empty", "the file is empty (0 bytes)"))
  return undefined
}

/** The candidate's bytes: stat, size checks, then the read; a `SkippedFile` when any of it fails. Throws nothing. */
const readOpen = (
  ctx: Context,
  candidate: FileCandidate,
  handle: FileHandleLike,
  nowMillis: number
): Effect.Effect<LoadResult> => {
  const path = candidate.path
  let st: StatsLike
  try {
    st = handle.stat()
  } catch (error) {
    return Effect.succeed(Either.left(unreadableFor(path, error, "stat")))
  }
  const checked = checkStats(ctx, path, st)
  if (checked !== undefined) return Effect.succeed(checked)
  const size = st.size
  const fingerprint = trustedFingerprint(st, nowMillis)
  const buffer = Buffer.allocUnsafe(size)
  let offset = 0
  /** one slice; true when the read is over (end of file, or the buffer is full) */
  const slice = (): boolean => {
    const bytesRead = handle.read(buffer, offset, Math.min(size - offset, readSliceBytes), offset)
    offset += bytesRead
    return bytesRead === 0 || offset >= size
  }
  const finish = (): LoadResult => toResult(candidate, offset < size ? buffer.subarray(0, offset) : buffer, fingerprint)
  try {
    if (slice()) return Effect.succeed(finish())
  } catch (error) {
    return Effect.succeed(Either.left(unreadableFor(path, error, "read")))
  }
  // a large file: one slice per step, letting other fibers run in between
  const rest: Effect.Effect<LoadResult> = Effect.suspend(() => {
    try {
      return slice() ? Effect.succeed(finish()) : Effect.zipRight(Effect.yieldNow(), rest)
    } catch (error) {
      return Effect.succeed(Either.left(unreadableFor(path, error, "read")))
    }
  })
  return Effect.zipRight(Effect.yieldNow(), rest)
}

const toResult = (candidate: FileCandidate, bytes: Buffer, fingerprint: string | undefined): LoadResult => {
  const path = candidate.path
  if (bytes.length === 0) return Either.left(skip(path, "empty", "the file is empty (0 bytes)"))
  if (bytes.indexOf(0) !== -1) {
    return Either.left(skip(path, "binary", "contains a NUL byte; looks like a binary file"))
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
  const document: Mutable<SourceDocument> = {
    path,
    text,
    contentHash: hash("sha256", bytes, "hex"),
    size: bytes.length,
    format: candidate.format
  }
  if (fingerprint !== undefined) document.fingerprint = fingerprint
  return Either.right(document)
}

type Mutable<A> = { -readonly [K in keyof A]: A[K] }

type FileCandidate = Candidate & { readonly _tag: "File" }

/**
 * Open, stat, read and close a file of at most one slice in one
 * synchronous step, through the ledger: the handle never outlives the
 * call. `undefined` when the file is larger (see {@link loadLarge}). Never
 * throws.
 */
const loadSmall = (ctx: Context, candidate: FileCandidate, nowMillis: number): LoadResult | undefined => {
  const path = candidate.path
  let handle: FileHandleLike | undefined
  try {
    return ctx.ledger.useSync("file", () => (handle = ctx.io.openFile(candidate.absolute)), (opened) => {
      let st: StatsLike
      try {
        st = opened.stat()
      } catch (error) {
        return Either.left(unreadableFor(path, error, "stat"))
      }
      const checked = checkStats(ctx, path, st)
      if (checked !== undefined) return checked
      if (st.size > readSliceBytes) return undefined
      // read into the walk's buffer: nothing keeps the bytes once the text
      // is decoded and hashed, and a buffer per file only made garbage
      if (ctx.scratch.length < st.size) ctx.scratch = Buffer.allocUnsafe(Math.max(st.size, ctx.scratch.length * 2))
      const buffer = ctx.scratch.subarray(0, st.size)
      let offset = 0
      try {
        while (offset < st.size) {
          const bytesRead = opened.read(buffer, offset, st.size - offset, offset)
          if (bytesRead === 0) break
          offset += bytesRead
        }
      } catch (error) {
        return Either.left(unreadableFor(path, error, "read"))
      }
      return toResult(
        candidate,
        offset < st.size ? buffer.subarray(0, offset) : buffer,
        trustedFingerprint(st, nowMillis)
      )
    }, (opened) => opened.close(), path)
  } catch (error) {
    // the open failed (the stat and the reads are caught above), or
    // something after them did
    return Either.left(unreadableFor(path, error, handle === undefined ? "open" : "read"))
  }
}

/** Open, read (slice by slice, yielding in between) and close a large candidate through the ledger; never fails. */
const loadLarge = (ctx: Context, candidate: FileCandidate, nowMillis: number): Effect.Effect<LoadResult> =>
  Effect.catchAll(
    ctx.ledger.acquireUseRelease(
      "file",
      Effect.try({ try: () => ctx.io.openFile(candidate.absolute), catch: (error) => error }),
      (handle) => readOpen(ctx, candidate, handle, nowMillis),
      (handle) => Effect.sync(() => handle.close()),
      candidate.path
    ),
    (error) => Effect.succeed(Either.left(unreadableFor(candidate.path, error, "open")))
  )

/**
 * Split a chunk of candidates into groups of at most {@link readAhead}
 * files to read; candidates already skipped cost nothing and ride along.
 */
const readGroups = (candidates: Chunk.Chunk<Candidate>): Chunk.Chunk<ReadonlyArray<Candidate>> => {
  const groups: Array<ReadonlyArray<Candidate>> = []
  let group: Array<Candidate> = []
  let files = 0
  for (const candidate of candidates) {
    if (candidate._tag === "File" && files === readAhead) {
      groups.push(group)
      group = []
      files = 0
    }
    group.push(candidate)
    if (candidate._tag === "File") files++
  }
  if (group.length > 0) groups.push(group)
  return Chunk.unsafeFromArray(groups)
}

/**
 * Read a group of candidates one after the other (the reads are
 * synchronous), then let other fibers run: a stop or an interruption is
 * noticed between groups.
 */
const loadGroup = (ctx: Context) => (group: ReadonlyArray<Candidate>): Effect.Effect<ReadonlyArray<LoadResult>> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    const results: Array<LoadResult> = new Array(group.length)
    const large: Array<number> = []
    for (let i = 0; i < group.length; i++) {
      const candidate = group[i]!
      if (candidate._tag === "Skipped") {
        results[i] = Either.left(candidate.skipped)
        continue
      }
      const result = loadSmall(ctx, candidate, now)
      if (result === undefined) large.push(i)
      else results[i] = result
    }
    const done = Effect.zipLeft(Effect.succeed(results), Effect.yieldNow())
    return large.length === 0 ? done : Effect.zipRight(
      Effect.forEach(large, (i) =>
        Effect.map(loadLarge(ctx, group[i] as FileCandidate, now), (result) => {
          results[i] = result
        }), { discard: true }),
      done
    )
  })

/** The stats of `files`, in order: undefined where a stat failed. */
const statsOf = (ctx: Context, files: ReadonlyArray<FileCandidate>): ReadonlyArray<StatsLike | undefined> => {
  if (ctx.io.statMany !== undefined) return ctx.io.statMany(files.map((file) => file.absolute))
  return files.map((file) => {
    try {
      return ctx.io.stat(file.absolute)
    } catch {
      return undefined
    }
  })
}

/** The fingerprint `unchanged` is offered for a file with these stats, if the file can be offered. */
const offerable = (
  ctx: Context,
  file: FileCandidate,
  st: StatsLike | undefined,
  now: number
): FileFingerprint | undefined => {
  if (st === undefined || !st.isFile() || st.size > ctx.maxFileBytes) return undefined
  const fingerprint = trustedFingerprint(st, now)
  return fingerprint === undefined ? undefined : { path: file.path, fingerprint }
}

const unchangedSkip = (path: string): Candidate =>
  skippedCandidate(path, "unchanged", "unchanged since it was stored (same size, times and inode)")

/** The candidates of a listed group, held directories' files in their place. */
const flattenListed = (group: Chunk.Chunk<Listed>): Chunk.Chunk<Candidate> => {
  if (!Chunk.some(group, (listed) => listed._tag === "Directory")) return group as Chunk.Chunk<Candidate>
  const candidates: Array<Candidate> = []
  for (const listed of group) {
    if (listed._tag === "Directory") candidates.push(...listed.files)
    else candidates.push(listed)
  }
  return Chunk.unsafeFromArray(candidates)
}

/**
 * A group of candidates as {@link filterUnchanged} leaves it: settled, or
 * waiting for the answers of `Options.unchanged` (the effect gives them).
 */
type Filtered = Either.Either<Chunk.Chunk<Candidate>, Effect.Effect<Chunk.Chunk<Candidate>>>

/**
 * Ask about a group of listed candidates: the held directories whose files
 * can all be offered go to `unchangedDirectories`, in one call; the group's
 * other files, those of the held directories it does not confirm among
 * them, go to `unchanged` (at most {@link unchangedGroup} per call) — left
 * to the returned effect, so that the walk can go on meanwhile (see
 * {@link settleInOrder}). The files confirmed either way become
 * `unchanged` skips (or, with `omit`, leave the group), the others stay
 * candidates. Files whose stat fails or that changed too recently are not
 * offered (they are read, and the read reports what is wrong).
 */
const filterUnchanged = (
  ctx: Context,
  unchanged: NonNullable<Options["unchanged"]>,
  unchangedDirectories: Options["unchangedDirectories"],
  omit: boolean
) =>
(group: Chunk.Chunk<Listed>): Effect.Effect<Filtered> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    const offered: Array<FileFingerprint> = []
    /** held directories to ask about whole, with their files' fingerprints */
    const whole: Array<ListedDirectory> = []
    // the group's files are stat'ed at once, in the order they are offered
    const files: Array<FileCandidate> = []
    for (const listed of group) {
      if (listed._tag === "File") files.push(listed)
      else if (listed._tag === "Directory") for (const file of listed.files) files.push(file)
    }
    const stats = statsOf(ctx, files)
    let next = 0
    for (const listed of group) {
      if (listed._tag === "Skipped") continue
      if (listed._tag === "File") {
        const print = offerable(ctx, listed, stats[next++], now)
        if (print !== undefined) offered.push(print)
        continue
      }
      const prints: Array<FileFingerprint> = []
      for (const file of listed.files) {
        const print = offerable(ctx, file, stats[next++], now)
        if (print !== undefined) prints.push(print)
      }
      if (unchangedDirectories !== undefined && prints.length === listed.files.length) {
        whole.push({ path: listed.path, files: prints })
      } else {
        for (const print of prints) offered.push(print)
      }
    }
    if (offered.length === 0 && whole.length === 0) return Effect.succeed(Either.right(flattenListed(group)))
    const sameDirectories = whole.length === 0 ? Effect.succeed(new Set<string>()) : unchangedDirectories!(whole)
    return Effect.map(sameDirectories, (same): Filtered => {
      for (const directory of whole) {
        if (!same.has(directory.path)) for (const print of directory.files) offered.push(print)
      }
      const settle = (known: ReadonlySet<string>): Chunk.Chunk<Candidate> => {
        if (known.size === 0 && same.size === 0) return flattenListed(group)
        const candidates: Array<Candidate> = []
        const add = (file: FileCandidate, isSame: boolean) => {
          if (!isSame) candidates.push(file)
          else if (!omit) candidates.push(unchangedSkip(file.path))
        }
        for (const listed of group) {
          if (listed._tag === "Skipped") candidates.push(listed)
          else if (listed._tag === "File") add(listed, known.has(listed.path))
          else {
            const sameDirectory = same.has(listed.path)
            for (const file of listed.files) add(file, sameDirectory || known.has(file.path))
          }
        }
        return Chunk.unsafeFromArray(candidates)
      }
      if (offered.length === 0) return Either.right(settle(new Set()))
      return Either.left(Effect.gen(function*() {
        const known = new Set<string>()
        for (let i = 0; i < offered.length; i += unchangedGroup) {
          for (const path of yield* unchanged(offered.slice(i, i + unchangedGroup))) known.add(path)
        }
        return settle(known)
      }))
    })
  })

/**
 * The groups {@link filterUnchanged} leaves, in order, settled. A group
 * waiting for `unchanged` is asked about on a fiber of its own (in the
 * stream's scope), and the walk lists and stats the next groups meanwhile;
 * at most `ahead` groups wait to come out (settled ones behind one still
 * asked about, or asked about), so at most `ahead` are asked about at
 * once, and the walk is never further ahead than that. A settled group
 * comes at once when none waits before it: where nothing is asked (an
 * unchanged re-run whose directories are all found whole) this starts no
 * fiber. Against the server, alternating unchanged re-runs of 10,000 files
 * in 289 directories (14 each) took a median of 90 ms with
 * `Stream.mapEffect` and a concurrency of 2, 78 ms with this; with the same
 * files in one directory, too large to be held, so asked about file by
 * file (10 each), 153 ms and 149 ms.
 */
const settleInOrder = (ahead: number) =>
<E, R>(self: Stream.Stream<Filtered, E, R>): Stream.Stream<Chunk.Chunk<Candidate>, E, R> =>
  Stream.unwrapScoped(Effect.map(Effect.scope, (scope) => {
    type Waiting =
      | { readonly _tag: "Settled"; readonly candidates: Chunk.Chunk<Candidate> }
      | { readonly _tag: "Asked"; readonly fiber: Fiber.RuntimeFiber<Chunk.Chunk<Candidate>> }
    const waiting: Array<Waiting> = []
    /** the groups that can come out, in order, waiting for answers until at most `limit` groups wait */
    const release = (limit: number): Effect.Effect<Array<Chunk.Chunk<Candidate>>> =>
      Effect.gen(function*() {
        const out: Array<Chunk.Chunk<Candidate>> = []
        while (waiting.length > 0) {
          const head = waiting[0]!
          if (head._tag === "Settled") out.push(head.candidates)
          else if (waiting.length > limit) out.push(yield* Fiber.join(head.fiber))
          else break
          waiting.shift()
        }
        return out
      })
    return self.pipe(
      Stream.mapEffect((filtered) => {
        if (Either.isRight(filtered)) {
          if (waiting.length === 0) return Effect.succeed([filtered.right])
          waiting.push({ _tag: "Settled", candidates: filtered.right })
          return release(ahead)
        }
        return Effect.flatMap(release(ahead - 1), (out) =>
          Effect.flatMap(Effect.forkIn(filtered.left, scope), (fiber) => {
            waiting.push({ _tag: "Asked", fiber })
            // it sends its question before the walk goes on
            return Effect.as(Effect.yieldNow(), out)
          }))
      }),
      Stream.concat(Stream.fromEffect(Effect.suspend(() => release(0)))),
      Stream.flattenIterables
    )
  }))

/**
 * Check that `root` is a directory the walk can start from: the
 * {@link LoaderError} {@link walk} would fail with, before anything else is
 * done (a CLI checks it before opening a store).
 *
 * @since 0.1.0
 * @category utils
 */
export const checkRoot = (root: string): Effect.Effect<void, LoaderError> => Effect.asVoid(resolveRoot(root))

// Synchronous, as the walk's own listing and stat calls are: two system
// calls, where their promise forms cost the walk's start two turns of the
// thread pool.
const resolveRoot = (root: string): Effect.Effect<{ readonly real: string; readonly display: string }, LoaderError> =>
  Effect.try({
    try: () => {
      const display = root === "" ? "." : root
      let real: string
      try {
        real = fs.realpathSync.native(nodePath.resolve(root))
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
      if (!fs.statSync(real).isDirectory()) {
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
    Effect.map(Effect.zip(resolveRoot(options.root), ResourceLedger.ResourceLedger), ([root, ledger]) => {
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
        ledger,
        scratch: Buffer.allocUnsafe(64 * 1024)
      }
      const unchanged = options.unchanged
      const unchangedDirectories = unchanged === undefined ? undefined : options.unchangedDirectories
      // the next groups are listed and stat'ed while the store answers
      // about this one (in order)
      const toRead: Stream.Stream<Candidate, LoaderError> = unchanged === undefined
        ? Stream.mapChunks(candidatesOf(ctx), flattenListed)
        : candidatesOf(ctx, {
          size: unchangedGroup,
          acrossDirectories: true,
          holdDirectories: unchangedDirectories !== undefined
        }).pipe(
          // a group: `unchangedGroup` candidates, or, where directories
          // are held, a pull (`unchangedGroup` files, more with a large
          // directory)
          unchangedDirectories === undefined ? Stream.rechunk(unchangedGroup) : identity,
          Stream.chunks,
          Stream.mapEffect(filterUnchanged(ctx, unchanged, unchangedDirectories, options.omitUnchanged === true)),
          settleInOrder(2),
          Stream.flattenChunks
        )
      // Reads run in groups of at most `readAhead` files, one after the
      // other: a group costs one step of the stream, and an early stop
      // opens at most one group's files beyond what it consumed.
      return toRead.pipe(
        Stream.mapChunks(readGroups),
        Stream.mapEffect(loadGroup(ctx)),
        Stream.flattenIterables
      )
    })
  )

/**
 * Walk `options.root` lazily, depth-first, emitting one {@link LoadResult}
 * per candidate file: `Right(document)` or `Left(skipped)`.
 *
 * Skip reasons: `binary` (a NUL byte), `invalid-utf8`,
 * `empty` (0 bytes, only whitespace, or no text after removing HTML markup),
 * `too-large` (size above `maxFileBytes`, checked before reading),
 * `unreadable` (open/stat/read failed, the file vanished, or it is not a
 * regular file), `symlink-outside-root`, `symlink-loop` (a directory symlink
 * to a directory on the current path, or ELOOP), `broken-symlink`,
 * `unreadable-directory`, `invalid-name` (a file or directory whose name
 * is not valid UTF-8: it cannot be opened, nor stored, under the name the
 * listing gives it; it does not count as an unreadable directory), and
 * `unchanged` (not read: see {@link Options.unchanged}). Symlinks inside the
 * root are followed.
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
  /**
   * `load` honours {@link Options.omitUnchanged}: files its `unchanged`
   * check answers are then not emitted. A loader without it emits them (or
   * does not ask), and an ingest counts what it emits.
   */
  readonly omitsUnchanged?: boolean
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
    load: (options) => walk(options).pipe(Stream.provideService(ResourceLedger.ResourceLedger, ledger)),
    omitsUnchanged: true
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

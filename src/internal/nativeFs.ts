/**
 * File system calls through the optional native addon
 * (src/native/ragpipe_fs.c, built into dist/native by
 * scripts/build-native.mjs): the stats of many files in one call, and a
 * directory's listing in one call. An unchanged re-run lists every
 * directory and stats every file it walks, and reads none: with
 * `fs.statSync`, one call and one `fs.Stats` (four `Date`s) per file, and
 * `fs.readdirSync`, that was most of its time. Measured when this came in,
 * against the server, 15 alternating unchanged re-runs of 10,000 files in
 * 283 directories: the `ingest` step took 67–101 ms (median 73) with the
 * addon, 99–155 ms (median 121) without it.
 *
 * {@link native} is undefined where the addon is not built or does not
 * load (no C compiler, another platform): the walk then uses `fs`, with
 * the same results.
 *
 * @internal
 */
import { createRequire } from "node:module"
import { fileURLToPath } from "node:url"

/** The part of a file's stats the walk reads, as `fs.Stats` gives it. */
export interface NativeStats {
  readonly mode: number
  readonly size: number
  readonly ino: number
  readonly mtimeMs: number
  readonly ctimeMs: number
  isFile(): boolean
  isDirectory(): boolean
}

/** A directory entry, as `fs.Dirent` tells its type. */
export interface DirentLike {
  readonly name: string
  isFile(): boolean
  isDirectory(): boolean
  isSymbolicLink(): boolean
  isFIFO(): boolean
  isSocket(): boolean
  isCharacterDevice(): boolean
  isBlockDevice(): boolean
}

interface Binding {
  readonly statMany: (paths: ReadonlyArray<string>, out: Float64Array) => void
  readonly listDirectory: (path: string, wholeBytes: number) => readonly [string, Uint8Array] | undefined
}

/** Numbers per path in the addon's output (see ragpipe_fs.c). */
const fields = 8

/**
 * Where the build puts the addon, relative to this module: from
 * dist/internal (the library) and dist/cli (the CLI's bundle), then from
 * src/internal (the sources, as the tests run them).
 */
const locations = ["../native/ragpipe_fs.node", "../../dist/native/ragpipe_fs.node"]

const load = (): Binding | undefined => {
  const require = createRequire(import.meta.url)
  for (const location of locations) {
    try {
      const binding = require(fileURLToPath(new URL(location, import.meta.url))) as Partial<Binding>
      if (typeof binding.statMany === "function" && typeof binding.listDirectory === "function") {
        return binding as Binding
      }
    } catch {
      // not built here, or not loadable on this platform: try the next
    }
  }
  return undefined
}

class Stats implements NativeStats {
  constructor(
    readonly mode: number,
    readonly size: number,
    readonly ino: number,
    readonly mtimeMs: number,
    readonly ctimeMs: number
  ) {}
  isFile(): boolean {
    return (this.mode & 0o170000) === 0o100000
  }
  isDirectory(): boolean {
    return (this.mode & 0o170000) === 0o040000
  }
}

/** The addon's entry types (see ragpipe_fs.c). */
const enum EntryType {
  Unknown = 0,
  File = 1,
  Directory = 2,
  Symlink = 3,
  Fifo = 4,
  Socket = 5,
  CharacterDevice = 6,
  BlockDevice = 7
}

class Dirent implements DirentLike {
  constructor(readonly name: string, private readonly type: number) {}
  isFile(): boolean {
    return this.type === EntryType.File
  }
  isDirectory(): boolean {
    return this.type === EntryType.Directory
  }
  isSymbolicLink(): boolean {
    return this.type === EntryType.Symlink
  }
  isFIFO(): boolean {
    return this.type === EntryType.Fifo
  }
  isSocket(): boolean {
    return this.type === EntryType.Socket
  }
  isCharacterDevice(): boolean {
    return this.type === EntryType.CharacterDevice
  }
  isBlockDevice(): boolean {
    return this.type === EntryType.BlockDevice
  }
}

// as Node computes fs.Stats' times from the seconds and nanoseconds
const millis = (seconds: number, nanoseconds: number): number => seconds * 1e3 + nanoseconds / 1e6

const statManyOf = (binding: Binding) => {
  let out = new Float64Array(0)
  return (paths: ReadonlyArray<string>): Array<NativeStats | undefined> => {
    if (out.length < paths.length * fields) out = new Float64Array(paths.length * fields)
    binding.statMany(paths, out)
    const stats = new Array<NativeStats | undefined>(paths.length)
    for (let i = 0, o = 0; i < paths.length; i++, o += fields) {
      stats[i] = out[o] !== 0 ? undefined : new Stats(
        out[o + 1]!,
        out[o + 2]!,
        out[o + 3]!,
        millis(out[o + 4]!, out[o + 5]!),
        millis(out[o + 6]!, out[o + 7]!)
      )
    }
    return stats
  }
}

const listDirectoryOf = (binding: Binding) => (path: string, wholeBytes: number): Array<DirentLike> | undefined => {
  const listed = binding.listDirectory(path, wholeBytes)
  if (listed === undefined) return undefined
  const [joined, types] = listed
  const entries = new Array<DirentLike>(types.length)
  let start = 0
  for (let i = 0; i < types.length; i++) {
    const end = joined.indexOf("/", start)
    entries[i] = new Dirent(joined.slice(start, end), types[i]!)
    start = end + 1
  }
  return entries
}

/** The addon's calls. */
export interface NativeFs {
  /**
   * The stats of `paths` (following symlinks), in order: undefined for a
   * path whose stat failed.
   */
  readonly statMany: (paths: ReadonlyArray<string>) => Array<NativeStats | undefined>
  /**
   * The entries of the directory `path` (without `.` and `..`), in the
   * order `fs.readdirSync` gives them, with their types; undefined, and
   * nothing listed, when its size (`st_size`) is 0 or above `wholeBytes`.
   * Throws errors with Node's `code`s ("EACCES", "ENOENT", ...).
   */
  readonly listDirectory: (path: string, wholeBytes: number) => Array<DirentLike> | undefined
}

const binding = load()

/** The addon's calls; undefined where it is not built or does not load. */
export const native: NativeFs | undefined = binding === undefined
  ? undefined
  : { statMany: statManyOf(binding), listDirectory: listDirectoryOf(binding) }

/**
 * The stats of many files in one call, through the optional native addon
 * (src/native/ragpipe_fs.c, built into dist/native by
 * scripts/build-native.mjs). An unchanged re-run stats every file it walks
 * and reads none: with `fs.statSync`, one call and one `fs.Stats` (four
 * `Date`s) per file, that was most of its time. Measured when this came
 * in, against the server, 8 alternating unchanged re-runs of 10,000 files
 * each: the `ingest` step took 70–89 ms (median 72) with the addon, 88–100
 * ms (median 96) without.
 *
 * {@link statMany} is undefined where the addon is not built or does not
 * load (no C compiler, another platform): the walk then stats files one by
 * one, with the same results.
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

interface Binding {
  readonly statMany: (paths: ReadonlyArray<string>, out: Float64Array) => void
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
      if (typeof binding.statMany === "function") return binding as Binding
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

// as Node computes fs.Stats' times from the seconds and nanoseconds
const millis = (seconds: number, nanoseconds: number): number => seconds * 1e3 + nanoseconds / 1e6

const make = (binding: Binding) => {
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

const binding = load()

/**
 * The stats of `paths` (following symlinks), in order: undefined for a
 * path whose stat failed. Undefined itself where the addon is not there.
 */
export const statMany: ((paths: ReadonlyArray<string>) => Array<NativeStats | undefined>) | undefined =
  binding === undefined ? undefined : make(binding)

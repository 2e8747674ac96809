/**
 * The CLI bundle with V8's code cache.
 *
 * Node compiles an ES module from its source on every start, and the CLI
 * bundle is about 1.4 MB of it. Run as a CommonJS script through `vm`
 * instead, it can be compiled from a code cache: the bytecode of the
 * functions that ran while the bundle loaded, which V8 deserialises
 * instead of compiling. `npm run build` makes the cache (see
 * scripts/bundle-cli.mjs) next to the bundle, as `<bundle>.cache`: the
 * SHA-256 digest of the bundle it was made from, then V8's data.
 *
 * V8 takes a cache only if it was made by the same V8 with the same flags;
 * it compares the source's length, not its text, so the digest guards
 * against a bundle changed since. A cache that is missing, made for
 * another bundle or refused by V8 costs nothing but the compilation it
 * would have saved.
 *
 * @internal
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"
import * as vm from "node:vm"

const digestBytes = 32

/** A hash computing the digest a cache is keyed by. */
const newDigest = () => createHash("sha256")

/** The digest a cache is keyed by. */
export const digestOf = (source: Uint8Array): Buffer => newDigest().update(source).digest()

/** V8's data in `cache` if it was made for a source with `digest`, else undefined. */
export const fittingData = (cache: Buffer | undefined, digest: Buffer): Buffer | undefined =>
  cache !== undefined && cache.length > digestBytes && cache.subarray(0, digestBytes).equals(digest)
    ? cache.subarray(digestBytes)
    : undefined

/** The file the cache of `file` is kept in. */
export const cacheFileOf = (file: string): string => `${file}.cache`

/** Buffers kept for the life of the process: see {@link compile}. */
const kept: Array<Buffer> = []

const readIfThere = (file: string): Buffer | undefined => {
  try {
    return fs.readFileSync(file)
  } catch {
    return undefined
  }
}

/** How much of the bundle is read at a time. */
const pieceBytes = 64 * 1024

/** The text of `file` (ASCII only), read a piece at a time, and its {@link digestOf}. */
const readSource = (file: string): { readonly text: string; readonly digest: Buffer } => {
  const fd = fs.openSync(file, "r")
  try {
    const piece = Buffer.allocUnsafe(pieceBytes)
    const hash = newDigest()
    const parts: Array<string> = []
    for (let n = fs.readSync(fd, piece, 0, pieceBytes, null); n > 0; n = fs.readSync(fd, piece, 0, pieceBytes, null)) {
      hash.update(piece.subarray(0, n))
      parts.push(piece.toString("latin1", 0, n))
    }
    return { text: parts.join(""), digest: hash.digest() }
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * `file` (a CommonJS module, ASCII only) as a script, with its cache when one fits.
 *
 * glibc serves a large allocation (128 KiB and more) with a mapping of its
 * own, and when such a mapping larger than the threshold is freed, it
 * raises the threshold to its size, and the one for giving memory back to
 * the system to twice that, for the rest of the process: allocations below
 * it then come from, and stay in, its heaps. The bundle read whole (1.4 MB)
 * and its cache (1 MB), freed once the bundle had loaded, did that at every
 * start, so the bundle is read a piece at a time and the cache is kept; the
 * store's COPY buffers are kept small for the same reason (see
 * copyBufferBytes in internal/copyBinary.ts).
 * Since, the largest such mappings an ingest frees are of about 380 KiB
 * (the hashing embedder's output for a batch, the optimizing compiler's
 * work areas), against 2.1 MiB before. Measured when this came in (5
 * alternating runs each, against the server): peak RSS of 122–128 against
 * 128–133 MiB on the 1,000-file corpus and 141–145 against 147–152 MiB on
 * the 10,000-file one, in 1,657–1,793 against 1,691–1,865 ms.
 */
const compile = (file: string) => {
  const { digest, text } = readSource(file)
  const cache = readIfThere(cacheFileOf(file))
  if (cache !== undefined) kept.push(cache)
  const cachedData = fittingData(cache, digest)
  // wrapped as Node's own loader wraps a CommonJS module
  const wrapped = `(function (exports, require, module, __filename, __dirname) { ${text}\n});`
  const script = new vm.Script(wrapped, {
    filename: file,
    importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
    ...(cachedData !== undefined ? { cachedData } : {})
  })
  return { script, digest, cached: cachedData !== undefined && !script.cachedDataRejected }
}

/** A module run by {@link runCommonJs}. */
export interface Loaded {
  /** whether it was compiled from its cache */
  readonly cached: boolean
  /** writes its cache, with what has been compiled so far */
  readonly writeCache: () => void
}

/** Runs the CommonJS module `file`, compiled from its cache when one fits. */
export const runCommonJs = (file: string): Loaded => {
  const { cached, digest, script } = compile(file)
  const module = { exports: {} }
  const run = script.runInThisContext() as (...args: ReadonlyArray<unknown>) => void
  run.call(module.exports, module.exports, createRequire(file), module, file, path.dirname(file))
  return {
    cached,
    writeCache: () => fs.writeFileSync(cacheFileOf(file), Buffer.concat([digest, script.createCachedData()]))
  }
}

/** Whether `file` would be compiled from its cache in this process (nothing is run). */
export const cacheFits = (file: string): boolean => compile(file).cached

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

/** The digest a cache is keyed by. */
export const digestOf = (source: Uint8Array): Buffer => createHash("sha256").update(source).digest()

/** V8's data in `cache` if it was made for a source with `digest`, else undefined. */
export const fittingData = (cache: Buffer | undefined, digest: Buffer): Buffer | undefined =>
  cache !== undefined && cache.length > digestBytes && cache.subarray(0, digestBytes).equals(digest)
    ? cache.subarray(digestBytes)
    : undefined

/** The file the cache of `file` is kept in. */
export const cacheFileOf = (file: string): string => `${file}.cache`

const readIfThere = (file: string): Buffer | undefined => {
  try {
    return fs.readFileSync(file)
  } catch {
    return undefined
  }
}

/** `file` (a CommonJS module, ASCII only) as a script, with its cache when one fits. */
const compile = (file: string) => {
  const source = fs.readFileSync(file)
  const digest = digestOf(source)
  const cachedData = fittingData(readIfThere(cacheFileOf(file)), digest)
  // wrapped as Node's own loader wraps a CommonJS module
  const wrapped = `(function (exports, require, module, __filename, __dirname) { ${source.toString("latin1")}\n});`
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

/**
 * The CLI bundle's code cache (src/cli/codeCache.ts). Modules are run in
 * new processes: V8 takes or refuses a cache as a process starts with it.
 */
import { assert, describe, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import { afterAll, beforeAll } from "vitest"
import { digestOf, fittingData } from "../src/cli/codeCache.js"
import { repoRoot } from "./support.js"

/** The built module, as the executable loads it. */
const codeCacheModule = NodePath.join(repoRoot, "dist", "cli", "codeCache.js")

let scratch = ""
beforeAll(() => {
  scratch = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "ragpipe-code-cache-"))
})
afterAll(() => NodeFs.rmSync(scratch, { recursive: true, force: true }))

/** Runs `file` with runCommonJs in a new process (writing its cache after, with `write`): what it printed, and whether it was compiled from its cache. */
const runInNewProcess = (file: string, write = false): { readonly printed: string; readonly cached: boolean } => {
  const program = `
    import { runCommonJs } from ${JSON.stringify(codeCacheModule)}
    const loaded = runCommonJs(${JSON.stringify(file)})
    if (${write}) loaded.writeCache()
    console.log("CACHED " + loaded.cached)
  `
  const run = spawnSync(process.execPath, ["--input-type=module", "-e", program], { encoding: "utf8", timeout: 30_000 })
  assert.strictEqual(run.status, 0, run.stderr)
  const lines = run.stdout.trim().split("\n")
  const last = lines.pop()!
  assert.match(last, /^CACHED (true|false)$/)
  return { printed: lines.join("\n"), cached: last === "CACHED true" }
}

/** A CommonJS module whose top level runs a function (so the cache holds compiled code) and prints `word`. */
const moduleSource = (word: string) =>
  `const path = require("node:path")
function greet(name) { return name + " from " + path.basename(__filename) }
console.log(greet(${JSON.stringify(word)}), module.exports === exports)
`

describe("codeCache", () => {
  it("a cache is used only for the source whose digest it holds", () => {
    const data = Buffer.from("v8 data")
    const digest = digestOf(Buffer.from("source A"))
    const cache = Buffer.concat([digest, data])
    assert.deepStrictEqual(fittingData(cache, digest), data)
    assert.isUndefined(fittingData(cache, digestOf(Buffer.from("source B"))))
    assert.isUndefined(fittingData(digest, digest)) // a digest and nothing after it
    assert.isUndefined(fittingData(cache.subarray(0, 10), digest))
    assert.isUndefined(fittingData(undefined, digest))
  })

  it("a module runs as CommonJS, and from the cache it wrote once it has one", () => {
    const file = NodePath.join(scratch, "greet.cjs")
    NodeFs.writeFileSync(file, moduleSource("alpha"))
    const first = runInNewProcess(file, true)
    assert.deepStrictEqual(first, { printed: "alpha from greet.cjs true", cached: false })
    assert.isTrue(NodeFs.existsSync(`${file}.cache`))
    assert.deepStrictEqual(runInNewProcess(file), { printed: "alpha from greet.cjs true", cached: true })
  })

  it("a module changed since its cache was made runs as it is now, even at the same length", () => {
    const file = NodePath.join(scratch, "changed.cjs")
    NodeFs.writeFileSync(file, moduleSource("alpha"))
    runInNewProcess(file, true)
    NodeFs.writeFileSync(file, moduleSource("omega")) // V8 itself compares only the length
    assert.deepStrictEqual(runInNewProcess(file), { printed: "omega from changed.cjs true", cached: false })
    NodeFs.writeFileSync(`${file}.cache`, "not a cache")
    assert.deepStrictEqual(runInNewProcess(file), { printed: "omega from changed.cjs true", cached: false })
  })

  it("a module longer than the pieces it is read in runs whole, and its cache is keyed by the digest of all its bytes", () => {
    const file = NodePath.join(scratch, "long.cjs")
    // several pieces of 64 KiB and a part of one, a statement across each boundary
    const filler = Array.from({ length: 9000 }, (_, i) => `total += ${i % 97}; // line ${i}`).join("\n")
    const source = `let total = 0\n${filler}\nconsole.log("total " + total)\n`
    NodeFs.writeFileSync(file, source)
    assert.isAbove(source.length, 3 * 64 * 1024)
    const expected = Array.from({ length: 9000 }, (_, i) => i % 97).reduce((a, b) => a + b, 0)
    assert.deepStrictEqual(runInNewProcess(file, true), { printed: `total ${expected}`, cached: false })
    const cache = NodeFs.readFileSync(`${file}.cache`)
    assert.isTrue(cache.subarray(0, 32).equals(digestOf(NodeFs.readFileSync(file))))
    assert.deepStrictEqual(runInNewProcess(file), { printed: `total ${expected}`, cached: true })
  })

  it("the built CLI's cache is taken by a new process", () => {
    const check = `
      import { cacheFits } from ${JSON.stringify(codeCacheModule)}
      console.log(cacheFits(${JSON.stringify(NodePath.join(repoRoot, "dist", "cli", "bundle.cjs"))}))
    `
    const run = spawnSync(process.execPath, ["--input-type=module", "-e", check], { encoding: "utf8", timeout: 30_000 })
    assert.strictEqual(run.status, 0, run.stderr)
    assert.strictEqual(run.stdout.trim(), "true")
  })
})

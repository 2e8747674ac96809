import { describe, expect, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import { spawnSync } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import {
  compilerFlags,
  heapFlags,
  heapGrowingPercent,
  interruptBudget,
  markingTriggerPercent,
  semiSpaceGrowthFactor,
  storeKindOf
} from "../src/cli/heap.js"

/** The built module, as the executable loads it. */
const heapModule = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "dist", "cli", "heap.js")

const server = ["--heap-growing-percent=40"]
const embedded = ["--heap-growing-percent=50"]
const young = "--semi-space-growth-factor=16"
const triggers = ["--incremental-marking-soft-trigger=80", "--incremental-marking-hard-trigger=90"]
const alongside = [young, ...triggers]

/**
 * The lines of V8's trace (`trace`: --trace-gc, --trace-opt) that hold
 * `needle`, in a process that runs `workload`, with tuneHeap applied first
 * ("tuned") or not, and `nodeArgs` given to node.
 */
const traceLines = (
  trace: string,
  workload: string,
  mode: "tuned" | "default",
  needle: string,
  nodeArgs: ReadonlyArray<string> = []
): number => {
  const program = `
    import { tuneHeap } from ${JSON.stringify(heapModule)}
    if (process.argv[1] === "tuned" && tuneHeap() !== undefined) process.exit(3)
    ${workload}
  `
  const run = spawnSync(process.execPath, [...nodeArgs, trace, "--input-type=module", "-e", program, mode], {
    encoding: "utf8",
    env: { ...process.env, RAGPIPE_HEAP_GROWING_PERCENT: "" },
    timeout: 60_000
  })
  expect(run.status).toBe(0)
  return run.stdout.split("\n").filter((line) => line.includes(needle)).length
}

/** The collections of `kind` (as V8's own trace names them): see {@link traceLines}. */
const collections = (
  workload: string,
  mode: "tuned" | "default",
  kind: string,
  nodeArgs: ReadonlyArray<string> = []
): number => traceLines("--trace-gc", workload, mode, kind, nodeArgs)

describe("heap setting of the executable", () => {
  it("sets a growing factor of 1.4 for a server, 1.5 for the embedded database, a young generation growing by 16, and marking triggers, unless told otherwise", () => {
    expect(heapGrowingPercent).toEqual({ server: 40, embedded: 50 })
    expect(semiSpaceGrowthFactor).toBe(16)
    expect(markingTriggerPercent).toEqual({ soft: 80, hard: 90 })
    expect(heapFlags([], undefined, "server")).toEqual(Either.right([...server, ...alongside]))
    expect(heapFlags([], undefined, "embedded")).toEqual(Either.right([...embedded, ...alongside]))
    expect(heapFlags(["--enable-source-maps", "--max-old-space-size=4096"], " ", "server")).toEqual(
      Either.right([...server, ...alongside])
    )
    // a similar flag is not this one
    expect(heapFlags(["--heap-growing-percentage=5"], undefined, "embedded")).toEqual(
      Either.right([...embedded, ...alongside])
    )
  })

  it("a run names a server by --database-url or, without --data-dir, DATABASE_URL", () => {
    expect(storeKindOf(["ingest", "docs", "--database-url", "postgres://h/db"], undefined)).toBe("server")
    expect(storeKindOf(["ingest", "docs", "--database-url=postgres://h/db"], undefined)).toBe("server")
    expect(storeKindOf(["ingest", "docs"], "postgres://h/db")).toBe("server")
    expect(storeKindOf(["ingest", "docs"], " ")).toBe("embedded")
    expect(storeKindOf(["ingest", "docs", "--data-dir", "x"], undefined)).toBe("embedded")
    // --data-dir on the command line wins over DATABASE_URL, as it does for the store
    expect(storeKindOf(["ingest", "docs", "--data-dir", "x"], "postgres://h/db")).toBe("embedded")
    expect(storeKindOf(["ingest", "docs", "--data-dir=x"], "postgres://h/db")).toBe("embedded")
    // a blank --database-url names none, and overrides DATABASE_URL, as it does for the store
    expect(storeKindOf(["ingest", "docs", "--database-url", " "], "postgres://h/db")).toBe("embedded")
    expect(storeKindOf(["ingest", "docs", "--database-url="], "postgres://h/db")).toBe("embedded")
    // an option that only starts alike is not this one
    expect(storeKindOf(["ingest", "--database-urls"], undefined)).toBe("embedded")
  })

  it("RAGPIPE_HEAP_GROWING_PERCENT sets another value; 0 leaves V8's own heuristics", () => {
    expect(heapFlags([], "20", "server")).toEqual(Either.right(["--heap-growing-percent=20", ...alongside]))
    expect(heapFlags([], " 300 ", "embedded")).toEqual(Either.right(["--heap-growing-percent=300", ...alongside]))
    expect(heapFlags([], "0", "server")).toEqual(Either.right([]))
  })

  it("a flag given to node itself wins, in any spelling", () => {
    expect(heapFlags(["--heap-growing-percent=10"], "20", "server")).toEqual(Either.right(alongside))
    expect(heapFlags(["--heap_growing_percent=10"], undefined, "embedded")).toEqual(Either.right(alongside))
    expect(heapFlags(["--heap-growing_percent=10"], undefined, "server")).toEqual(Either.right(alongside))
    expect(heapFlags(["--semi_space_growth_factor=4"], undefined, "server")).toEqual(
      Either.right([...server, ...triggers])
    )
    expect(heapFlags(["--heap-growing-percent=10", "--semi-space-growth-factor=4"], "20", "server")).toEqual(
      Either.right(triggers)
    )
    // either trigger replaces V8's rule for both: given one, the executable sets neither
    expect(heapFlags(["--incremental-marking-soft-trigger=0"], undefined, "server")).toEqual(
      Either.right([...server, young])
    )
    expect(heapFlags(["--incremental_marking_hard_trigger=95"], undefined, "embedded")).toEqual(
      Either.right([...embedded, young])
    )
  })

  it("a malformed variable is an error that says what is allowed", () => {
    for (const bad of ["-5", "1.5", "lots", "1001", "20%"]) {
      const result = heapFlags([], bad, "server")
      expect(Either.isLeft(result)).toBe(true)
      expect(Either.getLeft(result)).toEqual(
        Option.some(
          `RAGPIPE_HEAP_GROWING_PERCENT must be a whole number from 0 to 1000 (got "${bad}"); ` +
            `0 leaves the heap to V8's own heuristics`
        )
      )
    }
  })

  it("tuneHeap reaches V8: a run with it collects the old generation more often", () => {
    // A working set of about 30 MB, replaced piece by piece.
    const workload = `
      const live = new Array(3000)
      for (let i = 0; i < 36000; i++) live[i % live.length] = new Array(1250).fill(i)`
    expect(collections(workload, "tuned", "Mark-Compact")).toBeGreaterThan(
      collections(workload, "default", "Mark-Compact")
    )
  })

  it("tuneHeap reaches V8: the young generation grows at once, so short-lived garbage costs fewer scavenges", () => {
    // Small arrays, each replaced after 4,000 more, from a young generation at its start size.
    const workload = `
      const live = new Array(4000)
      for (let i = 0; i < 400000; i++) live[i % live.length] = new Array(64).fill(i)`
    expect(collections(workload, "tuned", "Scavenge")).toBeLessThan(collections(workload, "default", "Scavenge"))
  })

  it("tuneHeap reaches V8: before the first full collection, a process that has loaded its modules makes garbage without one", () => {
    // About 14 MB that stays in the old generation (arrays too large for the
    // young one), as loaded modules do, then a short run of garbage with a
    // little kept for a while: V8's own rule (what node's
    // --incremental-marking-soft-trigger=0 leaves) marks as soon as the young
    // generation has grown, and collects everything once.
    const workload = `
      const kept = []
      for (let i = 0; i < 90; i++) kept.push(new Array(40000).fill(i))
      const window = new Array(2000)
      for (let i = 0; i < 600000; i++) window[i % window.length] = { i, text: "t" + i, list: [i] }
      globalThis.kept = kept`
    expect(collections(workload, "tuned", "Mark-Compact")).toBe(0)
    expect(collections(workload, "tuned", "Mark-Compact", ["--incremental-marking-soft-trigger=0"])).toBe(1)
  })

  it("sets an interrupt budget eight times V8's, unless node was given one, in any spelling", () => {
    expect(interruptBudget).toBe(8 * 67_584)
    expect(compilerFlags([])).toEqual([`--interrupt-budget=${interruptBudget}`])
    expect(compilerFlags(["--max-old-space-size=4096", "--heap-growing-percent=10"])).toEqual([
      `--interrupt-budget=${interruptBudget}`
    ])
    // a similar flag is not this one
    expect(compilerFlags(["--interrupt-budget-for-feedback-allocation=100"])).toEqual([
      `--interrupt-budget=${interruptBudget}`
    ])
    expect(compilerFlags(["--interrupt-budget=1000"])).toEqual([])
    expect(compilerFlags(["--interrupt_budget=1000"])).toEqual([])
  })

  it("tuneHeap reaches V8: functions that run a while, but not for long, are not optimised", () => {
    // 40 functions, each run 600 times over a short loop: past V8's budget
    // several times over, short of eight times it.
    const workload = `
      const fns = []
      for (let k = 0; k < 40; k++) {
        fns.push(new Function("x", "let s = " + k + "; for (let i = 0; i < 20; i++) s = (s * 31 + x + i) | 0; return s"))
      }
      let t = 0
      for (let r = 0; r < 600; r++) for (const f of fns) t = (t + f(r)) | 0
      globalThis.t = t`
    // V8 marks a function for optimisation as its budget runs out (a
    // compilation may not end before the process does)
    const optimised = (mode: "tuned" | "default", nodeArgs: ReadonlyArray<string> = []) =>
      traceLines("--trace-opt", workload, mode, "for optimization to", nodeArgs)
    expect(optimised("default")).toBeGreaterThanOrEqual(40)
    expect(optimised("tuned")).toBeLessThan(10)
    // V8's budget given to node wins
    expect(optimised("tuned", ["--interrupt-budget=67584"])).toBeGreaterThanOrEqual(40)
  })

  it("afterFirstFullCollection runs once, after the first full collection and not after a scavenge", () => {
    const program = `
      import { afterFirstFullCollection } from ${JSON.stringify(heapModule)}
      const events = []
      const settle = () => new Promise((resolve) => setTimeout(resolve, 50))
      afterFirstFullCollection(() => events.push("after"))
      // young garbage only: scavenges
      const junk = new Array(100)
      for (let i = 0; i < 200000; i++) junk[i % 100] = { i, text: "t" + i }
      await settle()
      events.push("scavenged")
      globalThis.gc()
      await settle()
      events.push("collected")
      globalThis.gc()
      await settle()
      console.log(JSON.stringify(events))
    `
    const run = spawnSync(process.execPath, ["--expose-gc", "--trace-gc", "--input-type=module", "-e", program], {
      encoding: "utf8",
      timeout: 60_000
    })
    expect(run.status).toBe(0)
    const lines = run.stdout.trim().split("\n")
    // the scavenges came before the first full collection
    const firstFull = lines.findIndex((line) => line.includes("Mark-Compact"))
    expect(lines.slice(0, firstFull).some((line) => line.includes("Scavenge"))).toBe(true)
    expect(JSON.parse(lines.at(-1)!)).toEqual(["scavenged", "after", "collected"])
  })
})

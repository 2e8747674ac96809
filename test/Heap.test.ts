import { describe, expect, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import { spawnSync } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { heapFlags, heapGrowingPercent, semiSpaceGrowthFactor, storeKindOf } from "../src/cli/heap.js"

/** The built module, as the executable loads it. */
const heapModule = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "dist", "cli", "heap.js")

const server = ["--heap-growing-percent=40"]
const embedded = ["--heap-growing-percent=50"]
const young = "--semi-space-growth-factor=16"

/**
 * The collections of `kind` (as V8's own trace names them) in a process
 * that runs `workload`, with tuneHeap applied first ("tuned") or not.
 */
const collections = (workload: string, mode: "tuned" | "default", kind: string): number => {
  const program = `
    import { tuneHeap } from ${JSON.stringify(heapModule)}
    if (process.argv[1] === "tuned" && tuneHeap() !== undefined) process.exit(3)
    ${workload}
  `
  const run = spawnSync(process.execPath, ["--trace-gc", "--input-type=module", "-e", program, mode], {
    encoding: "utf8",
    env: { ...process.env, RAGPIPE_HEAP_GROWING_PERCENT: "" },
    timeout: 60_000
  })
  expect(run.status).toBe(0)
  return run.stdout.split("\n").filter((line) => line.includes(kind)).length
}

describe("heap setting of the executable", () => {
  it("sets a growing factor of 1.4 for a server, 1.5 for the embedded database, and a young generation growing by 16, unless told otherwise", () => {
    expect(heapGrowingPercent).toEqual({ server: 40, embedded: 50 })
    expect(semiSpaceGrowthFactor).toBe(16)
    expect(heapFlags([], undefined, "server")).toEqual(Either.right([...server, young]))
    expect(heapFlags([], undefined, "embedded")).toEqual(Either.right([...embedded, young]))
    expect(heapFlags(["--enable-source-maps", "--max-old-space-size=4096"], " ", "server")).toEqual(
      Either.right([...server, young])
    )
    // a similar flag is not this one
    expect(heapFlags(["--heap-growing-percentage=5"], undefined, "embedded")).toEqual(
      Either.right([...embedded, young])
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
    expect(heapFlags([], "20", "server")).toEqual(Either.right(["--heap-growing-percent=20", young]))
    expect(heapFlags([], " 300 ", "embedded")).toEqual(Either.right(["--heap-growing-percent=300", young]))
    expect(heapFlags([], "0", "server")).toEqual(Either.right([]))
  })

  it("a flag given to node itself wins, in any spelling", () => {
    expect(heapFlags(["--heap-growing-percent=10"], "20", "server")).toEqual(Either.right([young]))
    expect(heapFlags(["--heap_growing_percent=10"], undefined, "embedded")).toEqual(Either.right([young]))
    expect(heapFlags(["--heap-growing_percent=10"], undefined, "server")).toEqual(Either.right([young]))
    expect(heapFlags(["--semi_space_growth_factor=4"], undefined, "server")).toEqual(Either.right(server))
    expect(heapFlags(["--heap-growing-percent=10", "--semi-space-growth-factor=4"], "20", "server")).toEqual(
      Either.right([])
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
})

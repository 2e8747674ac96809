/**
 * The CLI as a user meets it: the built executable in a child process.
 * (`npm test` builds dist/ first.)
 */
import { assert, describe, it } from "@effect/vitest"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import { vi } from "vitest"
import { ExitRequest, layerShutdown, makeRun, type ProviderSettings, type StopSignal } from "../src/cli/Cli.js"
import * as Embedder from "../src/Embedder.js"
import { EmbedError } from "../src/Errors.js"
import * as ResourceLedger from "../src/ResourceLedger.js"
import { type ChildProcess, spawn } from "node:child_process"
import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import { afterAll, beforeAll } from "vitest"
import { copyCorpus, corpusDir, corpusQueries, repoRoot } from "./support.js"

const main = NodePath.join(repoRoot, "dist", "cli", "main.js")

interface Result {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

let scratch = ""
beforeAll(() => {
  scratch = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "ragpipe-cli-"))
})
afterAll(() => NodeFs.rmSync(scratch, { recursive: true, force: true }))

/** A new data directory, from the template store when there is one. */
const dataDir = (name: string): string => {
  const dir = NodePath.join(scratch, name)
  const template = process.env["RAGPIPE_TEST_TEMPLATE"]
  if (template !== undefined) {
    NodeFs.cpSync(NodePath.join(template, "pgdata"), NodePath.join(dir, "pgdata"), { recursive: true })
  }
  return dir
}

const cleanEnv = (): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("RAGPIPE_")) env[k] = v
  return env
}

/** Run the CLI in a child process (asynchronously: the test worker must stay responsive). */
const run = (file: string, args: ReadonlyArray<string>, env: NodeJS.ProcessEnv): Promise<Result> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [file, ...args], {
      cwd: scratch,
      env: { ...cleanEnv(), ...env },
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 180_000
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    child.on("error", reject)
    child.on("close", (code) => resolve({ code, stdout, stderr }))
  })

const ragpipe = (args: ReadonlyArray<string>, env: NodeJS.ProcessEnv = {}): Promise<Result> => run(main, args, env)

const lastJson = (stdout: string): any => JSON.parse(stdout.trim().split("\n").at(-1)!)

const assertNoStack = (text: string) => assert.notMatch(text, /\n\s+at .+:\d+:\d+/)

const countFiles = (dir: string): number =>
  NodeFs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).length

describe("ragpipe CLI", () => {
  it("ingest --json, search --json and stats --json over the example corpus", async () => {
    const data = dataDir("main")
    const files = countFiles(corpusDir)
    const ingest = await ragpipe(["ingest", corpusDir, "--data-dir", data, "--json"])
    assert.strictEqual(ingest.code, 0, ingest.stderr)
    const summary = lastJson(ingest.stdout)
    assert.deepStrictEqual(Object.keys(summary).slice(0, 5), ["files", "chunks", "resources", "breaker", "durationMs"])
    assert.deepStrictEqual(summary.files, { seen: files, ingested: files, unchanged: 0, skipped: 0, removed: 0 })
    assert.isAbove(summary.chunks.written, files)
    assert.strictEqual(summary.chunks.failed, 0)
    assert.strictEqual(summary.resources.open, 0)
    assert.strictEqual(summary.resources.acquired, summary.resources.released)
    assert.isNull(summary.breaker)

    const demo = corpusQueries.find((q) => q.demo === true)!
    const search = await ragpipe(["search", demo.query, "--data-dir", data, "--json", "--limit", "3"])
    assert.strictEqual(search.code, 0, search.stderr)
    const hits = JSON.parse(search.stdout)
    assert.strictEqual(hits.length, 3)
    assert.deepStrictEqual(Object.keys(hits[0]).sort(), ["chunkIndex", "heading", "path", "rank", "score", "text"])
    assert.strictEqual(hits[0].path, demo.expectedPath)
    assert.strictEqual(hits[0].rank, 1)

    const table = await ragpipe(["search", demo.query], { RAGPIPE_DATA_DIR: data })
    assert.strictEqual(table.code, 0, table.stderr)
    assert.include(table.stdout, `1. `)
    assert.include(table.stdout, demo.expectedPath)

    const stats = await ragpipe(["stats", "--json", "--data-dir", data])
    assert.strictEqual(stats.code, 0, stats.stderr)
    const s = JSON.parse(stats.stdout)
    assert.strictEqual(s.documents, files)
    assert.strictEqual(s.chunks, summary.chunks.written)
    assert.strictEqual(s.dimensions, 384)
    assert.isAbove(s.storeBytes, 0)

    const again = await ragpipe(["ingest", corpusDir, "--json"], { RAGPIPE_DATA_DIR: data, RAGPIPE_QUIET: "true" })
    assert.strictEqual(again.code, 0, again.stderr)
    const second = lastJson(again.stdout)
    assert.strictEqual(second.files.unchanged, files)
    assert.strictEqual(second.chunks.written, 0)

    const readable = await ragpipe(["ingest", corpusDir, "--data-dir", data])
    assert.strictEqual(readable.code, 0, readable.stderr)
    assert.match(readable.stdout, /files unchanged\s+\d+/)
    assert.match(readable.stdout, /0 open/)
  })

  it("bad input: one clear message, no stack trace, exit 1; usage errors exit 2", async () => {
    const missing = await ragpipe(["ingest", NodePath.join(scratch, "nope"), "--data-dir", NodePath.join(scratch, "d1")])
    assert.strictEqual(missing.code, 1)
    assert.match(missing.stderr, /nope/)
    assertNoStack(missing.stderr)

    const noStore = await ragpipe(["search", "anything", "--data-dir", NodePath.join(scratch, "empty")])
    assert.strictEqual(noStore.code, 1)
    assert.match(noStore.stderr, /no ragpipe store/)
    assert.match(noStore.stderr, /ragpipe ingest/)
    assertNoStack(noStore.stderr)
    assert.isFalse(NodeFs.existsSync(NodePath.join(scratch, "empty", "pgdata")))

    const overlap = await ragpipe(["ingest", corpusDir, "--chunk-size", "500", "--chunk-overlap", "400"])
    assert.strictEqual(overlap.code, 1)
    assert.match(overlap.stderr, /chunk-overlap/)
    assertNoStack(overlap.stderr)

    const notANumber = await ragpipe(["ingest", corpusDir, "--chunk-size", "big"])
    assert.strictEqual(notANumber.code, 2)

    const unknown = await ragpipe(["frobnicate"])
    assert.strictEqual(unknown.code, 2)

    const badDuration = await ragpipe(["stats", "--db-statement-timeout", "soon"])
    assert.strictEqual(badDuration.code, 1)
    assert.match(badDuration.stderr, /--db-statement-timeout must be a duration/)
    assertNoStack(badDuration.stderr)

    const badTimeout = await ragpipe(["ingest", corpusDir, "--timeout", "forever"])
    assert.strictEqual(badTimeout.code, 1)
    assert.match(badTimeout.stderr, /--timeout must be a positive duration/)

    const badEnv = await ragpipe(["ingest", corpusDir], { RAGPIPE_CHUNK_SIZE: "ten" })
    assert.notStrictEqual(badEnv.code, 0)
    assertNoStack(badEnv.stderr)
  })

  it("a different --dimensions than the store's is refused with what to do", async () => {
    const data = dataDir("dims")
    const work = NodePath.join(scratch, "dims-corpus")
    NodeFs.mkdirSync(work)
    NodeFs.writeFileSync(NodePath.join(work, "a.md"), "# A\n\nSome words about aardvarks.\n")
    assert.strictEqual((await ragpipe(["ingest", work, "--data-dir", data, "--dimensions", "64"])).code, 0)
    const other = await ragpipe(["ingest", work, "--data-dir", data, "--dimensions", "128"])
    assert.strictEqual(other.code, 1)
    assert.match(other.stderr, /--dimensions 64/)
    assertNoStack(other.stderr)
    const search = await ragpipe(["search", "aardvarks", "--data-dir", data, "--json"])
    assert.strictEqual(search.code, 0, search.stderr)
    assert.strictEqual(JSON.parse(search.stdout)[0].path, "a.md")
  })

  for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    it(`${signal} mid-ingest: exits ${code} promptly with a partial summary and nothing open`, async () => {
      const work = NodePath.join(scratch, `big-${signal}`)
      const made = await run(NodePath.join(repoRoot, "scripts", "make-corpus.mjs"), [
        work,
        "--files",
        "2500",
        "--seed",
        "7"
      ], {})
      assert.strictEqual(made.code, 0, made.stderr)
      copyCorpus(NodePath.join(work, "corpus"))
      const data = dataDir(`data-${signal}`)
      const child: ChildProcess = spawn(process.execPath, [main, "ingest", work, "--data-dir", data, "--json"], {
        cwd: scratch,
        env: { ...cleanEnv(), RAGPIPE_LOG_LEVEL: "Info" },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let stdout = ""
      let stderr = ""
      child.stdout!.on("data", (d) => (stdout += d))
      const started = new Promise<void>((resolve) =>
        child.stderr!.on("data", (d) => {
          stderr += d
          if (stderr.includes("ingest started")) resolve()
        })
      )
      const exited = new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)))
      await started
      // let it write some documents first
      await new Promise((resolve) => setTimeout(resolve, 300))
      child.kill(signal)
      const exitCode = await exited
      assert.strictEqual(exitCode, code, stderr)
      const summary = lastJson(stdout)
      assert.strictEqual(summary.resources.open, 0)
      assert.isBelow(summary.files.seen, 2500 + countFiles(corpusDir))
      assert.strictEqual(summary.files.removed, 0)
      assertNoStack(stderr)

      // the store holds whole documents only, and a re-run completes the job
      const rerun = await ragpipe(["ingest", work, "--data-dir", data, "--json"])
      assert.strictEqual(rerun.code, 0, rerun.stderr)
      const done = lastJson(rerun.stdout)
      assert.strictEqual(done.files.ingested + done.files.unchanged, 2500 + countFiles(corpusDir))
      assert.isAtLeast(done.files.unchanged, summary.files.ingested)
    }, 240_000)
  }

  it("an ingest whose embedder fails above --max-error-rate exits 3 with the BreakInfo and nothing open", async () => {
    const data = dataDir("breaker")
    const work = NodePath.join(scratch, "breaker-corpus")
    NodeFs.mkdirSync(work)
    for (let i = 0; i < 60; i++) NodeFs.writeFileSync(NodePath.join(work, `doc-${i}.md`), `# Doc ${i}\n\nWords ${i}.\n`)
    let calls = 0
    const failing = (settings: ProviderSettings) =>
      Layer.effect(
        Embedder.Embedder,
        Effect.map(Effect.provide(Embedder.Embedder, Embedder.layerHashing({ dimensions: settings.dimensions ?? 384 })), (hashing) => ({
          ...hashing,
          embedBatch: (texts: ReadonlyArray<string>) =>
            Effect.suspend(() =>
              ++calls % 2 === 0
                ? Effect.fail(
                  new EmbedError({ reason: "http", status: 422, message: "the provider rejected the input" })
                )
                : hashing.embedBatch(texts)
            )
        }))
      )
    const out: Array<string> = []
    const err: Array<string> = []
    const log = vi.spyOn(console, "log").mockImplementation((...args) => void out.push(args.join(" ")))
    const error = vi.spyOn(console, "error").mockImplementation((...args) => void err.push(args.join(" ")))
    try {
      const ledger = ResourceLedger.layer()
      const exit = await Effect.runPromiseExit(
        makeRun({ embedder: failing })([
          "node",
          "ragpipe",
          "ingest",
          work,
          "--data-dir",
          data,
          "--json",
          "--max-error-rate",
          "0.2",
          "--min-samples",
          "10",
          "--batch-size",
          "1",
          "--concurrency",
          "1"
        ]).pipe(
          Effect.provide(
            Layer.mergeAll(NodeContext.layer, ledger, layerShutdown(Effect.runSync(Deferred.make<StopSignal>())))
          )
        )
      )
      assert.isTrue(Exit.isFailure(exit))
      const failure = Exit.isFailure(exit) ? exit.cause : undefined
      const request = failure !== undefined && failure._tag === "Fail" ? failure.error : undefined
      assert.instanceOf(request, ExitRequest)
      assert.strictEqual((request as ExitRequest).code, 3)
      const summary = JSON.parse(out.at(-1)!)
      assert.deepStrictEqual(Object.keys(summary.breaker).sort(), [
        "code",
        "errors",
        "lastError",
        "ok",
        "reason",
        "threshold",
        "total"
      ])
      assert.strictEqual(summary.breaker.code, "error-rate")
      assert.strictEqual(summary.breaker.total, 10)
      assert.strictEqual(summary.breaker.errors, 5)
      assert.strictEqual(summary.resources.open, 0)
      assert.strictEqual(summary.files.removed, 0)
      assert.match(err.join("\n"), /error-rate breaker/)
      assert.match(err.join("\n"), /the provider rejected the input/)
    } finally {
      log.mockRestore()
      error.mockRestore()
    }
  })
})

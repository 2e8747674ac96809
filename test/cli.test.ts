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
import {
  ExitRequest,
  hoistLogLevel,
  layerShutdown,
  makeRun,
  type ProviderSettings,
  type StopSignal
} from "../src/cli/Cli.js"
import * as Embedder from "../src/Embedder.js"
import { EmbedError } from "../src/Errors.js"
import * as FaultServer from "../src/FaultServer.js"
import * as ResourceLedger from "../src/ResourceLedger.js"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import { afterAll, beforeAll } from "vitest"
import {
  cliPath,
  closedPort,
  copyCorpus,
  corpusDir,
  corpusQueries,
  createDatabase,
  fakePostgres,
  openAiFlags,
  repoRoot,
  tempDir,
  testDatabaseUrl,
  withClient
} from "./support.js"


interface Result {
  readonly code: number | null
  /** the signal that ended the process, if one did */
  readonly signal: NodeJS.Signals | null
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
const run = (
  file: string,
  args: ReadonlyArray<string>,
  env: NodeJS.ProcessEnv,
  timeoutMillis = 180_000
): Promise<Result> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [file, ...args], {
      cwd: scratch,
      env: { ...cleanEnv(), ...env },
      stdio: ["ignore", "pipe", "pipe"],
      timeout: timeoutMillis
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    child.on("error", reject)
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }))
  })

const ragpipe = (args: ReadonlyArray<string>, env: NodeJS.ProcessEnv = {}): Promise<Result> => run(cliPath, args, env)

/** {@link ragpipe}, killed (SIGTERM) if it has not exited within `millis`. */
const ragpipeWithin = (args: ReadonlyArray<string>, env: NodeJS.ProcessEnv, millis: number): Promise<Result> =>
  run(cliPath, args, env, millis)

const lastJson = (stdout: string): any => JSON.parse(stdout.trim().split("\n").at(-1)!)

/** {@link ragpipe} as an Effect, for tests that run a fault server in a scope. */
const ragpipeE = (args: ReadonlyArray<string>, env: NodeJS.ProcessEnv = {}) => Effect.promise(() => ragpipe(args, env))

/** A small corpus: `short-<i>.txt` files and one `long.txt` whose single chunk is 900 characters long. */
const providerCorpus = (name: string): string => {
  const work = NodePath.join(scratch, name)
  NodeFs.mkdirSync(work)
  for (let i = 0; i < 5; i++) {
    NodeFs.writeFileSync(NodePath.join(work, `short-${i}.txt`), `short document number ${i} about ${["otters", "herons", "voles", "newts", "stoats"][i]}\n`)
  }
  NodeFs.writeFileSync(NodePath.join(work, "long.txt"), "Overlong paragraph. ".repeat(45))
  return work
}

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
    assert.strictEqual(summary.outcome, "completed")
    assert.isTrue(summary.walkComplete)
    assert.deepStrictEqual(summary.skippedByReason, {})
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

    // an empty --data-dir is refused; a blank RAGPIPE_DATA_DIR names none, as if it were unset
    const emptyDataDir = await ragpipe(["stats", "--data-dir", ""])
    assert.strictEqual(emptyDataDir.code, 1)
    assert.strictEqual(emptyDataDir.stderr.trim(), "ragpipe: --data-dir must name a directory (got an empty name)")
    const unset = await ragpipe(["stats", "--json"])
    for (const blank of ["", " "]) {
      const blankVariable = await ragpipe(["stats", "--json"], { RAGPIPE_DATA_DIR: blank })
      assert.deepStrictEqual(blankVariable, unset)
    }

    // a data directory that is a file, or lies below one
    const file = NodePath.join(scratch, "a-file")
    NodeFs.writeFileSync(file, "not a directory")
    for (const dir of [file, NodePath.join(file, "store")]) {
      const notADir = await ragpipe(["ingest", corpusDir, "--data-dir", dir])
      assert.strictEqual(notADir.code, 1)
      assert.strictEqual(
        notADir.stderr.trim(),
        `ragpipe: cannot use the data directory ${dir}: ${file} is a file, not a directory; ` +
          "point --data-dir (RAGPIPE_DATA_DIR) at a directory (a new one is created)"
      )
    }

    // a file system that refuses the directory although its parent exists (Linux's /proc): Node's own
    // recursive mkdir spins there for ever
    if (process.platform === "linux") {
      const refused = await ragpipeWithin(["ingest", corpusDir, "--data-dir", "/proc/ragpipe/store"], {}, 30_000)
      assert.strictEqual(refused.code, 1, refused.stderr)
      assert.strictEqual(
        refused.stderr.trim(),
        "ragpipe: cannot use the data directory /proc/ragpipe/store: ENOENT: no such file or directory, " +
          "mkdir '/proc/ragpipe'"
      )
    }

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

    const badSearchTimeout = await ragpipe(["search", "anything", "--timeout", "0s"])
    assert.strictEqual(badSearchTimeout.code, 1)
    assert.match(badSearchTimeout.stderr, /--timeout must be a positive duration/)
    const badSearchTimeoutEnv = await ragpipe(["search", "anything"], { RAGPIPE_TIMEOUT: "soon" })
    assert.strictEqual(badSearchTimeoutEnv.code, 1)
    assert.match(badSearchTimeoutEnv.stderr, /--timeout must be a positive duration .*got soon/)
  })

  it("--log-level is taken wherever it is written among a command's options", async () => {
    const argv = (...args: Array<string>) => ["node", "ragpipe", ...args]
    assert.deepStrictEqual(
      hoistLogLevel(argv("stats", "--json", "--log-level", "debug", "--data-dir", "d")),
      argv("stats", "--log-level", "debug", "--json", "--data-dir", "d")
    )
    assert.deepStrictEqual(
      hoistLogLevel(argv("search", "q", "--log-level=info", "--", "--log-level", "x")),
      argv("search", "--log-level=info", "q", "--", "--log-level", "x")
    )
    for (const unchanged of [argv("--log-level", "all", "stats"), argv("stats"), argv("stats", "--json", "--log-level")]) {
      assert.deepStrictEqual(hoistLogLevel(unchanged), unchanged)
    }
    const data = dataDir("log-level")
    const ingest = await ragpipe(["ingest", "--json", "--log-level", "debug", corpusDir, "--data-dir", data])
    assert.strictEqual(ingest.code, 0, ingest.stderr)
    assert.match(ingest.stderr, /level=DEBUG/)
    const stats = await ragpipe(["stats", "--data-dir", data, "--json", "--log-level", "debug"])
    assert.strictEqual(stats.code, 0, stats.stderr)
    assert.match(stats.stderr, /level=DEBUG/)
    assert.strictEqual(lastJson(stats.stdout).documents, lastJson(ingest.stdout).files.ingested)
  })

  it("a boolean variable with an invalid value is a usage error naming it; valid spellings work", async () => {
    const cases: ReadonlyArray<readonly [ReadonlyArray<string>, string]> = [
      [["stats"], "RAGPIPE_JSON"],
      [["stats"], "RAGPIPE_CHECKSUM"],
      [["ingest", corpusDir], "RAGPIPE_QUIET"],
      [["ingest", corpusDir], "RAGPIPE_INCLUDE_HIDDEN"],
      [["ingest", corpusDir], "RAGPIPE_INDEX"]
    ]
    const data = NodePath.join(scratch, "never-created")
    for (const [args, variable] of cases) {
      const result = await ragpipe([...args, "--data-dir", data], { [variable]: "maybe" })
      assert.strictEqual(result.code, 2, `${variable}: ${result.stderr}`)
      assert.include(result.stderr, variable)
      assert.include(result.stderr, "maybe")
      assertNoStack(result.stderr)
    }
    const level = await ragpipe(["stats", "--data-dir", data], { RAGPIPE_LOG_LEVEL: "loud" })
    assert.strictEqual(level.code, 2, level.stderr)
    assert.match(level.stderr, /RAGPIPE_LOG_LEVEL must be one of .*warn.* \(got "loud"\)/)
    assertNoStack(level.stderr)
    const heap = await ragpipe(["stats", "--data-dir", data], { RAGPIPE_HEAP_GROWING_PERCENT: "lots" })
    assert.strictEqual(heap.code, 2, heap.stderr)
    assert.match(heap.stderr, /RAGPIPE_HEAP_GROWING_PERCENT must be a whole number from 0 to 1000 \(got "lots"\)/)
    assertNoStack(heap.stderr)
    assert.isFalse(NodeFs.existsSync(data))
    // a directory that is not there: refused before any store is created
    const missing = await ragpipe(["ingest", NodePath.join(scratch, "no-such-dir"), "--data-dir", data])
    assert.strictEqual(missing.code, 1, missing.stderr)
    assert.match(missing.stderr, /no such directory/)
    assert.isFalse(NodeFs.existsSync(data), "no store is created for a run that cannot start")
    // the flag itself wins over the variable
    const flagged = await ragpipe(["stats", "--json", "--data-dir", data], { RAGPIPE_JSON: "maybe" })
    assert.strictEqual(flagged.code, 1, flagged.stderr)
    assert.match(flagged.stderr, /no ragpipe store/)

    const store = dataDir("booleans")
    const work = NodePath.join(scratch, "booleans-corpus")
    NodeFs.mkdirSync(work)
    NodeFs.writeFileSync(NodePath.join(work, "a.md"), "# A\n\nSome words about aardvarks.\n")
    assert.strictEqual((await ragpipe(["ingest", work, "--data-dir", store], { RAGPIPE_QUIET: "1" })).code, 0)
    const yes = await ragpipe(["stats", "--data-dir", store], { RAGPIPE_JSON: "yes", RAGPIPE_CHECKSUM: "on" })
    assert.strictEqual(yes.code, 0, yes.stderr)
    const stats = JSON.parse(yes.stdout)
    assert.strictEqual(stats.documents, 1)
    assert.isString(stats.checksum)
    const no = await ragpipe(["stats", "--data-dir", store], { RAGPIPE_JSON: "false" })
    assert.strictEqual(no.code, 0, no.stderr)
    assert.match(no.stdout, /documents\s+1/)
  })

  it.scopedLive("ragpipe failures and failures --json list the chunks a provider rejected", () =>
    Effect.gen(function*() {
      const server = yield* FaultServer.start({ dimensions: 64, maxInputChars: 600 })
      const work = providerCorpus("failures-corpus")
      const data = dataDir("failures")
      const ingest = yield* ragpipeE([
        "ingest",
        work,
        "--data-dir",
        data,
        ...openAiFlags(server),
        "--chunk-size",
        "1000",
        "--chunk-overlap",
        "0",
        "--max-error-rate",
        "1",
        "--json"
      ])
      assert.strictEqual(ingest.code, 0, ingest.stderr)
      const summary = lastJson(ingest.stdout)
      assert.strictEqual(summary.chunks.written, 5)
      assert.strictEqual(summary.chunks.failed, 1)

      const table = yield* ragpipeE(["failures", "--data-dir", data])
      assert.strictEqual(table.code, 0, table.stderr)
      assert.match(table.stdout, /^long\.txt#0 {2}invalid-input {2}1 attempt\(s\), last \S+\n {3}.*HTTP 400.*input/)
      assert.strictEqual(table.stdout.trim().split("\n").length, 2)

      const json = yield* ragpipeE(["failures", "--json"], { RAGPIPE_DATA_DIR: data })
      assert.strictEqual(json.code, 0, json.stderr)
      const rows = JSON.parse(json.stdout)
      assert.strictEqual(rows.length, 1)
      assert.deepStrictEqual(Object.keys(rows[0]).sort(), [
        "attempts",
        "chunkIndex",
        "firstSeen",
        "kind",
        "lastSeen",
        "message",
        "path"
      ])
      assert.deepStrictEqual([rows[0].path, rows[0].chunkIndex, rows[0].kind, rows[0].attempts], [
        "long.txt",
        0,
        "invalid-input",
        1
      ])
      assert.include(rows[0].message, "input")

      const limited = yield* ragpipeE(["failures", "--json", "--limit", "0", "--data-dir", data])
      assert.strictEqual(limited.code, 1)
      assert.match(limited.stderr, /--limit must be at least 1/)

      const clean = dataDir("failures-none")
      assert.strictEqual((yield* ragpipeE(["ingest", work, "--data-dir", clean, "--quiet"])).code, 0)
      const none = yield* ragpipeE(["failures", "--data-dir", clean])
      assert.strictEqual(none.code, 0, none.stderr)
      assert.strictEqual(none.stdout.trim(), "No failures recorded.")
      assert.deepStrictEqual(JSON.parse((yield* ragpipeE(["failures", "--json", "--data-dir", clean])).stdout), [])
    }), 120_000)

  it.scopedLive("search --embedder openai: the query's request has --timeout and retries; other models are refused", () =>
    Effect.gen(function*() {
      const work = providerCorpus("search-corpus")
      const data = dataDir("search-openai")
      const ingestServer = yield* FaultServer.start({ dimensions: 64 })
      const ingest = yield* ragpipeE(["ingest", work, "--data-dir", data, ...openAiFlags(ingestServer), "--quiet"])
      assert.strictEqual(ingest.code, 0, ingest.stderr)

      // the default embedder, at the store's dimensions, or another model: refused, saying what to search with
      const requests = (yield* ingestServer.requests).length
      const hashing = yield* ragpipeE(["search", "herons", "--data-dir", data])
      assert.strictEqual(hashing.code, 1, hashing.stderr)
      assert.strictEqual(
        hashing.stderr.trim(),
        "ragpipe: this store's embeddings were made by model openai:fault-model but the query embedder is " +
          "hashing-v1: vectors of two models cannot be compared; " +
          "search with --embedder openai --model fault-model (and the store's --base-url)"
      )
      const m2 = openAiFlags(ingestServer).map((flag) => flag === "fault-model" ? "m2" : flag)
      const otherModel = yield* ragpipeE(["search", "herons", "--data-dir", data, ...m2])
      assert.strictEqual(otherModel.code, 1, otherModel.stderr)
      assert.match(otherModel.stderr, /made by model openai:fault-model but the query embedder is openai:m2: /)
      assert.strictEqual((yield* ingestServer.requests).length, requests, "a refused search sent a request")

      // the first request hangs far longer than the test may run: only the timeout and a retry get an answer
      const server = yield* FaultServer.start({ dimensions: 64, faultPlan: ["hang"], hangMillis: 600_000 })
      const search = yield* ragpipeE([
        "search",
        "herons",
        "--data-dir",
        data,
        ...openAiFlags(server),
        "--timeout",
        "1s",
        "--json"
      ])
      assert.strictEqual(search.code, 0, search.stderr)
      const hits = JSON.parse(search.stdout)
      assert.strictEqual(hits[0].path, "short-1.txt")
      const log = yield* server.requests
      assert.deepStrictEqual(log.map((r) => [r.outcome, r.model, r.inputs]), [
        ["hang", "fault-model", 1],
        ["ok", "fault-model", 1]
      ])
      // abandoned by the 1 s timeout, not by the default of 60 s (the client's clock starts before the server's)
      assert.isBelow(log[0]!.endedAt! - log[0]!.arrivedAt, 20_000)
      assert.strictEqual((yield* server.stats).clientAborts, 1)

      // RAGPIPE_TIMEOUT is read by search too
      const viaEnv = yield* FaultServer.start({ dimensions: 64, faultPlan: ["hang"], hangMillis: 600_000 })
      const envSearch = yield* ragpipeE(["search", "otters", "--data-dir", data, ...openAiFlags(viaEnv), "--json"], {
        RAGPIPE_TIMEOUT: "1s"
      })
      assert.strictEqual(envSearch.code, 0, envSearch.stderr)
      assert.strictEqual(JSON.parse(envSearch.stdout)[0].path, "short-0.txt")
      assert.deepStrictEqual((yield* viaEnv.requests).map((r) => r.outcome), ["hang", "ok"])
    }), 120_000)

  it.scopedLive("provider options come from RAGPIPE_* variables, as the server sees them", () =>
    Effect.gen(function*() {
      const server = yield* FaultServer.start({
        dimensions: 64,
        latencyMillis: 150,
        faultPlan: ["hang"],
        hangMillis: 600_000
      })
      const data = dataDir("provider-env")
      const ingest = yield* ragpipeE(["ingest", corpusDir, "--data-dir", data, "--json"], {
        RAGPIPE_EMBEDDER: "openai",
        RAGPIPE_BASE_URL: server.url,
        RAGPIPE_MODEL: "env-model",
        RAGPIPE_DIMENSIONS: "64",
        RAGPIPE_BATCH_SIZE: "3",
        RAGPIPE_CONCURRENCY: "12",
        // short enough to tell from the default (60s), long enough for the embedded database's pauses
        RAGPIPE_TIMEOUT: "5s"
      })
      assert.strictEqual(ingest.code, 0, ingest.stderr)
      const summary = lastJson(ingest.stdout)
      assert.strictEqual(summary.chunks.failed, 0)
      const log = yield* server.requests
      const stats = yield* server.stats
      // RAGPIPE_EMBEDDER, RAGPIPE_BASE_URL and RAGPIPE_MODEL: every chunk was embedded by the server, with that model
      assert.strictEqual(stats.outcomes.ok, log.length - 1)
      assert.deepStrictEqual([...new Set(log.map((r) => r.model))], ["env-model"])
      const embedded = log.filter((r) => r.outcome === "ok").reduce((n, r) => n + r.inputs!, 0)
      assert.strictEqual(embedded, summary.chunks.written)
      // RAGPIPE_BATCH_SIZE: no request had more than 3 inputs
      assert.strictEqual(Math.max(...log.map((r) => r.inputs!)), 3)
      // RAGPIPE_CONCURRENCY: 12 requests at once, never more (and the socket pool did not hold any back)
      assert.strictEqual(stats.maxConcurrency, 12)
      // RAGPIPE_TIMEOUT: the hanging first request was abandoned after about 5 s (not 60 s), then retried
      const hung = log.find((r) => r.outcome === "hang")!
      assert.isBelow(hung.endedAt! - hung.arrivedAt, 30_000)
      assert.strictEqual(stats.clientAborts, 1)
    }), 120_000)

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

  it("a timer a library leaves behind does not keep the process from ending", async () => {
    // as an embedded database that failed to start leaves one
    const leak = NodePath.join(scratch, "leak.cjs")
    NodeFs.writeFileSync(leak, "setInterval(() => {}, 10_000)\n")
    const env = { NODE_OPTIONS: `--require ${leak}` }
    const exits = await Promise.all([
      ragpipeWithin(["stats", "--data-dir", NodePath.join(scratch, "no-store-here")], env, 30_000),
      ragpipeWithin(["--version"], env, 30_000)
    ])
    assert.deepStrictEqual(exits.map((r) => [r.code, r.signal]), [[1, null], [0, null]], exits.map((r) => r.stderr).join("\n"))
    assert.match(exits[0]!.stderr, /^ragpipe: there is no ragpipe store in /)
    assert.match(exits[1]!.stdout, /\d+\.\d+\.\d+/)
  })

  it("starting does not load Node's fetch implementation, and leaves no global navigator behind", async () => {
    // pg constructs a fetch Response as it loads unless there is a navigator (see src/cli/ragpipe.ts)
    const probe = NodePath.join(scratch, "fetch-probe.cjs")
    NodeFs.writeFileSync(
      probe,
      `const wrapped = [], touched = []
for (const name of ["fetch", "Request", "Response", "Headers", "FormData"]) {
  const d = Object.getOwnPropertyDescriptor(globalThis, name)
  if (d === undefined || d.get === undefined || !d.configurable) continue
  wrapped.push(name)
  Object.defineProperty(globalThis, name, { ...d, get() { touched.push(name); return d.get.call(this) } })
}
const before = "navigator" in globalThis
process.on("exit", () => process.stderr.write("PROBE " + JSON.stringify({ wrapped, touched, before, after: "navigator" in globalThis }) + "\\n"))
`
    )
    const probed = (result: Result) => {
      const line = result.stderr.split("\n").find((l) => l.startsWith("PROBE "))
      assert.isDefined(line, result.stderr)
      return JSON.parse(line!.slice("PROBE ".length))
    }
    const env = { NODE_OPTIONS: `--require ${probe}` }
    const work = NodePath.join(scratch, "fetch-probe-corpus")
    NodeFs.mkdirSync(work, { recursive: true })
    NodeFs.writeFileSync(NodePath.join(work, "a.md"), "# Aardvarks\n\nThey dig.\n")
    const runs = await Promise.all([
      ragpipe(["--version"], env),
      ragpipe(["ingest", work, "--data-dir", dataDir("fetch-probe"), "--quiet"], env)
    ])
    for (const result of runs) {
      assert.strictEqual(result.code, 0, result.stderr)
      const seen = probed(result)
      assert.isNotEmpty(seen.wrapped) // the probe watched something
      assert.deepStrictEqual(seen.touched, [])
      assert.strictEqual(seen.after, seen.before)
    }
  })

  it("a run that finds no file keeps the stored documents and exits 1 saying why; --allow-empty removes them", async () => {
    const data = dataDir("empty-walk")
    const work = providerCorpus("empty-walk-corpus")
    assert.strictEqual((await ragpipe(["ingest", work, "--data-dir", data, "--quiet"])).code, 0)
    const documents = async () => {
      const stats = await ragpipe(["stats", "--data-dir", data, "--json"])
      assert.strictEqual(stats.code, 0, stats.stderr)
      return JSON.parse(stats.stdout).documents
    }
    assert.strictEqual(await documents(), 6)
    const none = await ragpipe(["ingest", work, "--data-dir", data, "--include", "[z", "--json"])
    assert.strictEqual(none.code, 1, none.stderr)
    assert.deepStrictEqual(none.stderr.trim().split("\n"), [
      `ragpipe: no file to ingest was found in ${work} with --include '[z', so the 6 documents stored by ` +
      `earlier runs were kept. Check the directory and the filters; if it is meant to be empty, run again ` +
      `with --allow-empty to remove them.`
    ])
    const summary = lastJson(none.stdout)
    assert.deepStrictEqual([summary.outcome, summary.files.seen, summary.files.removed, summary.kept], ["completed", 0, 0, 6])
    assert.strictEqual(await documents(), 6)
    const allowed = await ragpipe(["ingest", work, "--data-dir", data, "--include", "[z", "--allow-empty", "--json"])
    assert.strictEqual(allowed.code, 0, allowed.stderr)
    assert.deepStrictEqual([lastJson(allowed.stdout).files.removed, lastJson(allowed.stdout).kept], [6, 0])
    assert.strictEqual(await documents(), 0)
    // nothing stored and nothing found: nothing is at stake, but it is said
    const nothing = await ragpipe(["ingest", work, "--data-dir", data, "--include", "[z", "--quiet"])
    assert.strictEqual(nothing.code, 0, nothing.stderr)
    assert.deepStrictEqual(nothing.stderr.trim().split("\n"), [
      `ragpipe: no file to ingest was found in ${work} with --include '[z', so nothing was stored. Check the ` +
      "directory and the filters: the files read are those ending in .md .markdown .txt .rst .html .htm and in " +
      "the --extension ones."
    ])
    const found = await ragpipe(["ingest", work, "--data-dir", data, "--quiet"])
    assert.deepStrictEqual([found.code, found.stderr], [0, ""])
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
      const child: ChildProcess = spawn(process.execPath, [cliPath, "ingest", work, "--data-dir", data, "--json"], {
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
      const signalled = performance.now()
      child.kill(signal)
      const exitCode = await exited
      const exitMillis = performance.now() - signalled
      assert.strictEqual(exitCode, code, stderr)
      // documents in flight get 5 s to commit; the whole stop stays well inside a generous bound
      assert.isBelow(exitMillis, 10_000, `exited ${Math.round(exitMillis)} ms after ${signal}`)
      const summary = lastJson(stdout)
      assert.strictEqual(summary.outcome, "stopped")
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
      assert.strictEqual(summary.outcome, "broken")
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

/** A password no output may show. */
const password = "pw-Cli7-never-shown"

/** The options naming the database at `databaseUrl`, with the password (and a URL `options` parameter, if given). */
const storeAt = (databaseUrl: string, options?: string): ReadonlyArray<string> => {
  const url = new URL(databaseUrl)
  url.password = password
  if (options !== undefined) url.searchParams.set("options", options)
  return ["--database-url", url.toString()]
}

/** Exit 1, one line on stderr that matches `expected`, no stack trace, and the password nowhere. */
const assertStoreRefused = (result: Result, expected: RegExp) => {
  assert.strictEqual(result.code, 1, result.stderr)
  assert.match(result.stderr, expected)
  assert.strictEqual(result.stderr.trim().split("\n").length, 1, result.stderr)
  assertNoStack(result.stderr)
  assert.notInclude(result.stdout + result.stderr, password)
}

describe("ragpipe CLI against a PostgreSQL server it cannot use", () => {
  it("a URL that is not a PostgreSQL one, and a server that is not there: exit 1, what is wrong, no password", async () => {
    const notPostgres = await ragpipe(["stats", "--database-url", `mysql://alice:${password}@127.0.0.1/docs`])
    assertStoreRefused(notPostgres, /^ragpipe: the database URL \(--database-url \/ DATABASE_URL\) is a mysql:\/\/ URL/)
    // a blank DATABASE_URL names no server: the embedded store is used
    const blank = await ragpipe(["stats", "--data-dir", NodePath.join(scratch, "blank-url")], { DATABASE_URL: " " })
    assertStoreRefused(blank, /^ragpipe: there is no ragpipe store in .*blank-url/)
    const port = await closedPort()
    const absent = await ragpipe(["ingest", corpusDir], { DATABASE_URL: `postgres://alice:${password}@127.0.0.1:${port}/docs` })
    assertStoreRefused(
      absent,
      new RegExp(`^ragpipe: cannot reach the PostgreSQL server at alice@127\\.0\\.0\\.1:${port}/docs \\(ECONNREFUSED\\)`)
    )
  })

  it("--data-dir on the command line wins over DATABASE_URL; --data-dir with --database-url is refused", async () => {
    const port = await closedPort()
    const elsewhere = { DATABASE_URL: `postgres://alice:${password}@127.0.0.1:${port}/docs` }
    const data = NodePath.join(scratch, "explicit-data-dir")
    // the variable names a server that is not there: only the data directory can make these work
    const ingest = await ragpipe(["ingest", corpusDir, "--data-dir", data, "--json"], elsewhere)
    assert.strictEqual(ingest.code, 0, ingest.stderr)
    assert.isTrue(NodeFs.existsSync(NodePath.join(data, "pgdata", "PG_VERSION")))
    const stats = await ragpipe(["stats", "--data-dir", data, "--json"], elsewhere)
    assert.strictEqual(stats.code, 0, stats.stderr)
    assert.strictEqual(lastJson(stats.stdout).documents, lastJson(ingest.stdout).files.ingested)
    // without --data-dir the variable decides
    assertStoreRefused(await ragpipe(["stats"], elsewhere), /^ragpipe: cannot reach the PostgreSQL server at alice@/)
    // both on the command line
    const both = await ragpipe(["stats", "--data-dir", data, "--database-url", elsewhere.DATABASE_URL])
    assertStoreRefused(both, /^ragpipe: --data-dir and --database-url name two different stores; give one of them/)
  })

  it.scopedLive("a server without pgvector: exit 1, says how to install it, no password", () =>
    Effect.gen(function*() {
      const fake = yield* fakePostgres("no-pgvector")
      const url = `postgres://alice:${password}@127.0.0.1:${fake.port}/docs`
      for (const args of [["ingest", corpusDir, "--database-url", url], ["search", "otters", "--database-url", url]]) {
        assertStoreRefused(
          yield* ragpipeE(args),
          /has no pgvector extension; install pgvector on the server \(on Debian, scripts\/setup-postgres/
        )
      }
      assert.strictEqual(fake.accepted(), 2)
    }))

  it.scopedLive("sslmode as psql reads it; a server without TLS, or a certificate not verified: what to do", () =>
    Effect.gen(function*() {
      // a self-signed certificate for 127.0.0.1, made for this test
      const dir = yield* tempDir("ragpipe-tls-")
      const key = NodePath.join(dir, "key.pem")
      const cert = NodePath.join(dir, "cert.pem")
      execFileSync("openssl", [
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert
      ], { stdio: "ignore" })
      const tls = yield* fakePostgres("no-pgvector", {
        key: NodeFs.readFileSync(key, "utf8"),
        cert: NodeFs.readFileSync(cert, "utf8")
      })
      const plain = yield* fakePostgres("no-pgvector")
      const url = (port: number, query: string) => `postgres://alice:${password}@127.0.0.1:${port}/docs?${query}`
      const search = (port: number, query: string) =>
        ragpipeE(["search", "otters", "--database-url", url(port, query)])
      const noPgvector = /^ragpipe: the PostgreSQL server at alice@127\.0\.0\.1:\d+\/docs has no pgvector extension/

      // require: encrypted, the certificate not verified (as with libpq), and no warning about it
      assertStoreRefused(yield* search(tls.port, "sslmode=require"), noPgvector)
      // verify-full: verified against the named authority, or refused with what to do
      assertStoreRefused(yield* search(tls.port, `sslmode=verify-full&sslrootcert=${cert}`), noPgvector)
      assertStoreRefused(
        yield* search(tls.port, "sslmode=verify-full"),
        /could not be verified \(DEPTH_ZERO_SELF_SIGNED_CERT: .*\); name the authority .* sslrootcert=/
      )
      // prefer: TLS where the server offers it
      assertStoreRefused(yield* search(tls.port, "sslmode=prefer"), noPgvector)
      assert.strictEqual(tls.accepted(), 4)
      assert.strictEqual(tls.secured(), 4)
      // a server that answers a TLS request with no: refused, but with prefer connected to without TLS
      assertStoreRefused(
        yield* search(plain.port, "sslmode=require"),
        /does not accept TLS connections, which the URL's sslmode asks for; remove sslmode from --database-url/
      )
      assertStoreRefused(yield* search(plain.port, "sslmode=prefer"), noPgvector)
      assert.strictEqual(plain.accepted(), 3)
      assert.strictEqual(plain.secured(), 0)
    }))
})

const server = testDatabaseUrl === undefined || testDatabaseUrl === "" ? undefined : testDatabaseUrl

describe.skipIf(server === undefined)("ragpipe CLI on the PostgreSQL server (runs when RAGPIPE_TEST_DATABASE_URL is set)", () => {
  it("refused credentials exit 1; with a password in the URL, no command shows it, at any log level", async () => {
    const unknown = new URL(server!)
    unknown.username = "ragpipe_no_such_user"
    unknown.password = password
    assertStoreRefused(
      await ragpipe(["ingest", corpusDir, "--database-url", unknown.toString()]),
      /rejected the credentials \(role "ragpipe_no_such_user" does not exist\); check the user and password/
    )

    const db = await createDatabase(server!, "cli")
    try {
      // the test server trusts its clients: the password is sent nowhere, but it is in the URL
      const url = new URL(db.url)
      url.password = password
      const store = ["--database-url", url.toString()]
      const outputs: Array<string> = []
      for (
        const [command, ...rest] of [
          ["ingest", corpusDir, ...store],
          ["ingest", corpusDir, ...store, "--json", "--index"],
          ["search", corpusQueries[0]!.query, ...store],
          ["stats", ...store, "--checksum"],
          ["index", ...store],
          ["failures", ...store]
        ]
      ) {
        const args = [command!, "--log-level", "all", ...rest]
        const result = await ragpipe(args)
        assert.strictEqual(result.code, 0, `${args.join(" ")}: ${result.stderr}`)
        outputs.push(result.stdout, result.stderr)
      }
      const everything = outputs.join("\n")
      assert.include(everything, `${url.username}@${url.hostname}:${url.port || "5432"}/${db.name}`)
      assert.match(everything, /level=DEBUG/)
      assert.notInclude(everything, password)
    } finally {
      await db.drop()
    }
  }, 120_000)

  it("a user without the privileges the store needs, or without a connection: exit 1, which, what to do", async () => {
    const role = `ragpipe_plain_${process.pid}_${Math.random().toString(36).slice(2, 8)}`
    const owned = `${role}_owned`
    await withClient(server!, (c) => c.query(`CREATE ROLE ${role} LOGIN`))
    // a database the user owns, without the extension; and one it does not own, with it
    await withClient(server!, (c) => c.query(`CREATE DATABASE ${owned} OWNER ${role}`))
    const foreign = await createDatabase(server!, "foreign")
    try {
      const as = (database: string) => {
        const url = new URL(server!)
        url.username = role
        url.password = password
        url.pathname = `/${database}`
        return url.toString()
      }
      const noExtension = await ragpipe(["ingest", corpusDir, "--database-url", as(owned)])
      assertStoreRefused(noExtension, /^ragpipe: could not prepare the database schema: /)
      assert.include(
        noExtension.stderr,
        `(permission denied to create extension "vector"); pgvector's extension can only be created by a superuser: ` +
          "have one run CREATE EXTENSION vector in this database"
      )
      const noCreate = await ragpipe(["ingest", corpusDir, "--database-url", as(foreign.name)])
      assertStoreRefused(noCreate, /^ragpipe: could not prepare the database schema: /)
      assert.include(
        noCreate.stderr,
        "(permission denied for schema public); the user needs the CREATE privilege on the schema " +
          "(GRANT CREATE ON SCHEMA public TO <user>)"
      )
      // a role allowed no connection: the server's reason, and what to change
      await withClient(server!, (c) => c.query(`ALTER ROLE ${role} CONNECTION LIMIT 0`))
      const noSlot = await ragpipe(["stats", "--database-url", as(owned)])
      assertStoreRefused(
        noSlot,
        new RegExp(`has no connection left for ragpipe \\(too many connections for role "${role}"\\); lower `)
      )
    } finally {
      await foreign.drop()
      await withClient(server!, (c) => c.query(`DROP DATABASE IF EXISTS ${owned} WITH (FORCE)`))
      await withClient(server!, (c) => c.query(`DROP ROLE IF EXISTS ${role}`))
    }
  }, 120_000)

  it("pgvector in a schema of its own, off the search path: ingest, index, search and stats work", async () => {
    const db = await createDatabase(server!, "extschema", {
      setup: ["CREATE SCHEMA extensions", "CREATE EXTENSION vector SCHEMA extensions"]
    })
    try {
      const store = storeAt(db.url)
      for (const args of [["ingest", corpusDir], ["index"], ["search", "otters"], ["stats", "--checksum"]]) {
        const result = await ragpipe([...args, ...store])
        assert.strictEqual(result.code, 0, `${args.join(" ")}: ${result.stderr}`)
        assertNoStack(result.stderr)
      }
      const search = await ragpipe(["search", "otters", ...store, "--json"])
      assert.isAbove(lastJson(search.stdout).length, 0)
      // the store's tables are in public, the extension stayed where it was
      const where = await withClient(db.url, (c) =>
        c.query<{ chunks: string; vector: string }>(
          "SELECT (SELECT relnamespace::regnamespace::text FROM pg_class WHERE relname = 'chunks') AS chunks, " +
            "(SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector') AS vector"
        ))
      assert.deepStrictEqual(where.rows[0], { chunks: "public", vector: "extensions" })
    } finally {
      await db.drop()
    }
  }, 120_000)

  it("a database in an encoding that cannot hold every text: ingest exits 1 before writing, and says so", async () => {
    const db = await createDatabase(server!, "latin1", {
      create: "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    })
    try {
      const result = await ragpipe(["ingest", corpusDir, ...storeAt(db.url)])
      assertStoreRefused(
        result,
        new RegExp(
          "^ragpipe: the database's encoding is LATIN1, which cannot hold every document's text; " +
            "ragpipe needs a UTF8 database \\(createdb -E UTF8 -T template0 NAME"
        )
      )
      const documents = await withClient(db.url, (c) =>
        c.query<{ n: number }>("SELECT count(*)::int AS n FROM documents"))
      assert.strictEqual(documents.rows[0]!.n, 0)
    } finally {
      await db.drop()
    }
  }, 120_000)

  it("a search path in the URL's options: the store goes to its schema; one naming no schema that exists is refused", async () => {
    const db = await createDatabase(server!, "searchpath")
    try {
      const store = storeAt(db.url, "-c search_path=ragpipe_docs")
      const tables = () =>
        withClient(db.url, (c) =>
          c.query<{ schema: string; n: number }>(
            "SELECT relnamespace::regnamespace::text AS schema, count(*)::int AS n FROM pg_class " +
              "WHERE relkind = 'r' AND relname LIKE 'ragpipe%' GROUP BY 1"
          )).then((r) => r.rows)
      const refusal = new RegExp(
        `^ragpipe: no schema on the search path \\(ragpipe_docs\\) exists in database "${db.name}", ` +
          "so there is nowhere for the store: create the schema"
      )
      assertStoreRefused(await ragpipe(["ingest", corpusDir, ...store]), refusal)
      assertStoreRefused(await ragpipe(["stats", ...store]), refusal)
      assert.deepStrictEqual(await tables(), [])
      // pgvector is in public, off this search path: found all the same
      await withClient(db.url, (c) => c.query("CREATE SCHEMA ragpipe_docs"))
      const ingest = await ragpipe(["ingest", corpusDir, ...store])
      assert.strictEqual(ingest.code, 0, ingest.stderr)
      assert.deepStrictEqual((await tables()).map((t) => t.schema), ["ragpipe_docs"])
      const search = await ragpipe(["search", "otters", ...store, "--json"])
      assert.strictEqual(search.code, 0, search.stderr)
      assert.isAbove(lastJson(search.stdout).length, 0)
    } finally {
      await db.drop()
    }
  }, 120_000)

  it("a database that takes no writes: ingest exits 1 saying so, with or without a store; reading works", async () => {
    const fresh = await createDatabase(server!, "readonly")
    const stored = await createDatabase(server!, "readonly")
    try {
      assert.strictEqual((await ragpipe(["ingest", corpusDir, ...storeAt(stored.url)])).code, 0)
      for (const db of [fresh, stored]) {
        await withClient(server!, (c) => c.query(`ALTER DATABASE ${db.name} SET default_transaction_read_only = on`))
      }
      const hint = "the server takes no writes here (a standby, or default_transaction_read_only is on for the " +
        "user or the database): point --database-url at one that does"
      const noSchema = await ragpipe(["ingest", corpusDir, ...storeAt(fresh.url)])
      assertStoreRefused(noSchema, /^ragpipe: could not prepare the database schema: .*in a read-only transaction\); /)
      assert.include(noSchema.stderr, hint)
      assert.notInclude(noSchema.stderr, "search, stats and failures work here")
      const noWrite = await ragpipe(["ingest", corpusDir, ...storeAt(stored.url)])
      // the store is as this model left it, so preparing it writes nothing: the run's first write is refused
      assertStoreRefused(noWrite, /^ragpipe: starting a run failed: .*in a read-only transaction\); /)
      assert.include(noWrite.stderr, `${hint} — search, stats and failures work here`)
      const stats = await ragpipe(["stats", ...storeAt(stored.url), "--json"])
      assert.strictEqual(stats.code, 0, stats.stderr)
      assert.isAbove(lastJson(stats.stdout).documents, 0)
    } finally {
      await fresh.drop()
      await stored.drop()
    }
  }, 120_000)

  it("the commands that only read refuse a database without a store, and create nothing in it", async () => {
    const db = await createDatabase(server!, "nostore")
    try {
      const store = storeAt(db.url)
      const relations = () =>
        withClient(db.url, (c) =>
          c.query<{ n: number }>(
            "SELECT count(*)::int AS n FROM pg_class " +
              "WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'S')"
          )).then((r) => r.rows[0]!.n)
      const readers = [["search", "otters"], ["stats", "--checksum"], ["index"], ["failures"]]
      const refusal = new RegExp(
        `^ragpipe: there is no ragpipe store in database "${db.name}" \\(schema "public"\\); ` +
          "run `ragpipe ingest <dir>` into it first"
      )
      for (const args of readers) assertStoreRefused(await ragpipe([...args, ...store]), refusal)
      assert.strictEqual(await relations(), 0)
      // ingest creates the store; the same commands then read it
      assert.strictEqual((await ragpipe(["ingest", corpusDir, ...store])).code, 0)
      assert.isAbove(await relations(), 0)
      const stats = await ragpipe(["stats", ...store, "--json"])
      assert.strictEqual(stats.code, 0, stats.stderr)
      assert.isAbove(lastJson(stats.stdout).documents, 0)
    } finally {
      await db.drop()
    }
  }, 120_000)
})

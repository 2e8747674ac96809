/**
 * Runs every example in scripts/examples as a child process, the way a
 * reader would (`node scripts/examples/<name>.mjs` from the repository
 * root), and checks its exit code and the lines it prints.
 *
 * The examples import the built package (`dist/`, through the package's own
 * name): `npm test` runs `npm run build` first; when running vitest alone,
 * build before.
 */
import { assert, describe, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import * as NodePath from "node:path"
import { repoRoot } from "./support.js"

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
  readonly lines: ReadonlyArray<string>
}

/** Run an example asynchronously (a blocked worker would time out vitest's RPC). */
const runExample = (name: string, timeoutMs = 20_000): Promise<Run> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [NodePath.join("scripts", "examples", name)], {
      cwd: repoRoot,
      env: { ...process.env, NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (data: string) => void (stdout += data))
    child.stderr.setEncoding("utf8").on("data", (data: string) => void (stderr += data))
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`${name} did not finish within ${timeoutMs} ms\n${stdout}\n${stderr}`))
    }, timeoutMs)
    child.on("error", (error) => {
      clearTimeout(timer)
      reject(error)
    })
    child.on("close", (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr, lines: stdout.split("\n").filter((l) => l.length > 0) })
    })
  })

const expectSuccess = (run: Run) =>
  assert.strictEqual(run.code, 0, `exit code ${run.code}\n${run.stdout}\n${run.stderr}`)

describe("examples", () => {
  it("custom-embedder.mjs ingests with a home-made embedder and finds the right document", async () => {
    const run = await runExample("custom-embedder.mjs")
    expectSuccess(run)
    assert.include(run.lines, "ingested 4 files, 4 chunks")
    assert.match(run.lines[1] ?? "", /^ {2}#1 space\/mars\.md \(score 0\.\d{3}\)$/)
    assert.strictEqual(run.lines.at(-1), "top hit: space/mars.md")
  }, 30_000)

  it("breakers.mjs shows the call breaker's transitions and the stream breaker's BreakInfo", async () => {
    const run = await runExample("breakers.mjs")
    expectSuccess(run)
    assert.deepStrictEqual(run.lines.slice(0, run.lines.indexOf("stream breaker:")), [
      "call breaker:",
      "attempt 1: service down (call 1)",
      "attempt 2: service down (call 2)",
      "    state: closed -> open",
      "attempt 3: rejected (open)",
      "attempt 4: service down (call 3)",
      "    state: open -> half-open",
      "    state: half-open -> open",
      "attempt 5: ok (call 4)",
      "    state: open -> half-open",
      "    state: half-open -> closed",
      "attempt 6: ok (call 5)",
      "calls 5, failures 3, rejections 1, openings 2"
    ])
    assert.deepStrictEqual(run.lines.slice(run.lines.indexOf("stream breaker:") + 1, -1), [
      "item: ok a",
      "item: ok b",
      "item: error e1",
      "item: ok c",
      "item: error e2",
      "item: error e3"
    ])
    const last = run.lines.at(-1) ?? ""
    assert.isTrue(last.startsWith("break: "), last)
    assert.deepStrictEqual(JSON.parse(last.slice("break: ".length)), {
      code: "error-rate",
      reason: "error rate 0.50 exceeded 0.40 after 3 of 6 items failed",
      ok: 3,
      errors: 3,
      total: 6,
      threshold: 0.4
    })
  }, 30_000)

  it("shared-sql.mjs ingests and queries through one SqlClient, then removes its data directory", async () => {
    const run = await runExample("shared-sql.mjs")
    expectSuccess(run)
    assert.deepStrictEqual(run.lines.slice(0, 4), [
      "ingested 38 documents, 321 chunks",
      "document design/address-normalization.md: 10 chunks",
      "document design/customs-archive.md: 9 chunks",
      "document design/eta-prediction.md: 10 chunks"
    ])
    assert.match(run.lines[4] ?? "", /^bookmark guides\/glossary\.md \(for new hires\): 12 chunks, \d+ characters$/)
    assert.match(
      run.lines[5] ?? "",
      /^bookmark ops\/pelican-failover\.md \(read before on-call\): 10 chunks, \d+ characters$/
    )
    assert.strictEqual(run.lines.at(-1), "data directory removed: true")
  }, 30_000)

  it("testclock.mjs runs retries, a breaker and two ingest runs on simulated time, in little real time", async () => {
    const run = await runExample("testclock.mjs")
    expectSuccess(run)
    assert.deepStrictEqual(run.lines.slice(0, 11), [
      "retry: at t=2000 ms the attempts so far ran at 0, 1000 ms",
      "retry: attempts at 0, 1000, 3000, 7000 ms (waits of 1 s, 2 s, 4 s), result \"answer\"",
      "breaker: t=10000 ms open, a call is rejected; retry at 40000 ms",
      "breaker: t=40000 ms probe ran while half-open, now closed",
      "simulated time at the end: 40000 ms",
      // the ingest pipeline's own retries, backing off on the TestClock
      "ingest: embedder calls at 0 ms (503), 1000 ms (503), 3000 ms (ok) (waits of 1 s, 2 s)",
      "ingest: completed, 3 of 3 documents, 3 chunks written, 0 failed",
      // its call breaker: opened by the first document, refusing the next two, closed by the probe at 30 s
      "outage: embedder calls at 0 ms (503), 1000 ms (503), 30000 ms (ok), 40000 ms (ok)",
      "outage: failed: outage/a.txt (http-503, 2 attempt(s)); outage/b.txt (breaker-open, 1 attempt(s)); " +
      "outage/c.txt (breaker-open, 1 attempt(s))",
      "outage: breaker went open 1x, half-open 1x, closed 1x",
      "outage: completed, 2 of 5 documents, 2 chunks written, 3 failed"
    ])
    const simulated = /^simulated time after the ingest runs: (\d+) ms$/.exec(run.lines[11] ?? "")
    assert.isNotNull(simulated, run.stdout)
    // the second run alone spans 40 s of documents arriving
    assert.isAtLeast(Number(simulated![1]), 40_000 + 3_000 + 40_000)
    const real = /^real time elapsed: (\d+) ms/.exec(run.lines[12] ?? "")
    assert.isNotNull(real, run.stdout)
    // 80+ simulated seconds; a loaded machine may be slow, but never that slow
    assert.isBelow(Number(real![1]), 5_000)
    assert.strictEqual(run.lines.length, 13, run.stdout)
  }, 30_000)
})

import { assert, describe, it } from "@effect/vitest"
import * as Format from "../src/cli/format.js"

describe("CLI formatting", () => {
  it.each([
    [[["a", "1"], ["longer key", "12345"]] as const, "a               1\nlonger key  12345"],
    [[["files", "0"]] as const, "files  0"]
  ])("table %#", (rows, expected) => {
    assert.strictEqual(Format.table(rows), expected)
  })

  it.each([
    [100, 1000, "100.0"],
    [3, 2000, "1.5"],
    [5, 0, "-"]
  ])("rate(%d, %d) = %s", (count, millis, expected) => {
    assert.strictEqual(Format.rate(count, millis), expected)
  })

  it("the breaker in words names the rate, the counts, the limit and the last error", () => {
    const words = Format.breakerWords({
      reason: "error rate 0.40 exceeded 0.20 after 8 of 20 items failed",
      ok: 12,
      errors: 8,
      total: 20,
      threshold: 0.2,
      lastError: "HTTP 503"
    })
    assert.include(words, "error-rate breaker")
    assert.include(words, "8 of 20 chunks failed (12 succeeded; the limit is 20%)")
    assert.include(words, "Last error: HTTP 503.")
  })

  it("search results print rank, score, path, chunk, heading and a one-line snippet", () => {
    const text = Format.searchTable([
      { rank: 1, score: 0.5, path: "a.md", chunkIndex: 2, heading: "A > B", text: "line one\nline  two" }
    ])
    assert.strictEqual(text, "1. 0.500  a.md#2  [A > B]\n   line one line two")
    assert.strictEqual(Format.searchTable([]), "No results.")
  })

  it("the failures table lists each failed chunk", () => {
    assert.strictEqual(Format.failuresTable([]), "No failures recorded.")
    const text = Format.failuresTable([
      { path: "x.txt", chunkIndex: 0, kind: "http-503", message: "busy", attempts: 5, lastSeen: "2026-01-01T00:00:00Z" }
    ])
    assert.strictEqual(text, "x.txt#0  http-503  5 attempt(s), last 2026-01-01T00:00:00Z\n   busy")
  })
})

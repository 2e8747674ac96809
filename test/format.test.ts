import { assert, describe, it } from "@effect/vitest"
import * as Schema from "effect/Schema"
import * as Format from "../src/cli/format.js"
import { IngestReport } from "../src/Domain.js"

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

  const progress = (filesSeen: number, filesIngested: number, filesUnchanged: number, filesSkipped: number, chunksWritten: number) => ({
    filesSeen,
    filesIngested,
    filesUnchanged,
    filesSkipped,
    chunksWritten
  })

  it.each([
    [progress(0, 0, 0, 0, 0), 0, "files 0 (ingested 0, unchanged 0, skipped 0) · chunks 0 · - chunks/s"],
    [progress(0, 0, 0, 0, 0), 1500, "files 0 (ingested 0, unchanged 0, skipped 0) · chunks 0 · 0.0 chunks/s"],
    [progress(38, 30, 5, 3, 321), 2000, "files 38 (ingested 30, unchanged 5, skipped 3) · chunks 321 · 160.5 chunks/s"],
    [progress(7, 0, 7, 0, 0), 250, "files 7 (ingested 0, unchanged 7, skipped 0) · chunks 0 · 0.0 chunks/s"],
    [progress(1, 1, 0, 0, 1), 3000, "files 1 (ingested 1, unchanged 0, skipped 0) · chunks 1 · 0.3 chunks/s"],
    [
      progress(120_000, 119_000, 900, 100, 1_234_567),
      600_000,
      "files 120000 (ingested 119000, unchanged 900, skipped 100) · chunks 1234567 · 2057.6 chunks/s"
    ]
  ])("progressLine %#", (p, elapsed, expected) => {
    const line = Format.progressLine(p, elapsed)
    assert.strictEqual(line, expected)
    assert.notInclude(line, "\n")
  })

  const report = (overrides: Partial<IngestReport> = {}): IngestReport => ({
    files: { seen: 40, ingested: 30, unchanged: 6, skipped: 4, removed: 0 },
    chunks: { written: 300, failed: 0, cached: 0 },
    resources: { acquired: 50, released: 50, open: 0 },
    breaker: null,
    durationMs: 1500,
    outcome: "completed",
    walkComplete: true,
    kept: 0,
    skippedByReason: { binary: 3, "too-large": 1 },
    skippedFiles: [
      { path: "a.bin", reason: "binary", detail: "a NUL byte at offset 12" },
      { path: "big.md", reason: "too-large", detail: "11 MiB exceeds the 10 MiB limit; raise --max-file-size" }
    ],
    ...overrides
  })

  it("the ingest JSON says how the run ended and decodes as an IngestReport", () => {
    for (const outcome of ["completed", "stopped", "broken"] as const) {
      const json = JSON.parse(Format.ingestJson(report({ outcome, walkComplete: outcome !== "stopped" })))
      assert.deepStrictEqual(Object.keys(json), [
        "files",
        "chunks",
        "resources",
        "breaker",
        "durationMs",
        "outcome",
        "walkComplete",
        "kept",
        "skippedByReason",
        "skippedFiles"
      ])
      assert.strictEqual(json.outcome, outcome)
      assert.strictEqual(json.walkComplete, outcome !== "stopped")
      assert.deepStrictEqual(Schema.decodeUnknownSync(IngestReport)(json), report({ outcome, walkComplete: outcome !== "stopped" }))
    }
    for (const index of [null, { created: true, millis: 1234 }]) {
      const json = JSON.parse(Format.ingestJson(report({ index })))
      assert.deepStrictEqual(json.index, index)
      assert.deepStrictEqual(Schema.decodeUnknownSync(IngestReport)(json), report({ index }))
    }
    assert.include(Format.ingestTable(report({ index: { created: true, millis: 1234 } })), "vector index")
    assert.notInclude(Format.ingestTable(report()), "vector index")
    assert.throws(() => Schema.decodeUnknownSync(IngestReport)({ ...report(), outcome: "finished" }))
  })

  it("the ingest table heads an interrupted run's summary as partial and says when nothing was removed", () => {
    const complete = Format.ingestTable(report())
    assert.notInclude(complete, "interrupted")
    assert.notInclude(complete, "could not be read")
    assert.include(complete, "skipped: binary 3, too-large 1")
    assert.include(complete, "  a.bin: binary (a NUL byte at offset 12)")
    const stopped = Format.ingestTable(report({ outcome: "stopped" }))
    assert.isTrue(stopped.startsWith("Ingest interrupted: partial summary\n\n"), stopped)
    assert.notInclude(Format.ingestTable(report({ outcome: "broken" })), "interrupted")
    assert.include(
      Format.ingestTable(report({ walkComplete: false })),
      "Some directories could not be read, so no stored document was removed in this run."
    )
    assert.notInclude(complete, "were kept")
    assert.include(
      Format.ingestTable(report({ files: { ...report().files, seen: 0 }, kept: 1200 })),
      "\n\nNo file was found, so the 1200 stored documents were kept."
    )
  })

  it("a run that found no file says where, with which filters, and how to empty the store", () => {
    assert.strictEqual(
      Format.keptWords(3, "docs", []),
      "ragpipe: no file to ingest was found in docs, so the 3 documents stored by earlier runs were kept. " +
        "Check the directory; if it is meant to be empty, run again with --allow-empty to remove them."
    )
    assert.strictEqual(
      Format.nothingFoundWords("docs", []),
      "ragpipe: no file to ingest was found in docs, so nothing was stored. Check the directory: the files read " +
        "are those ending in .md .markdown .txt .rst .html .htm and in the --extension ones."
    )
    assert.include(Format.nothingFoundWords("docs", ["--exclude x"]), "in docs with --exclude x, so nothing was")
    const filtered = Format.keptWords(3, "docs", ["--include '[z'", "--extension rst"])
    assert.include(filtered, "found in docs with --include '[z' --extension rst, so the 3 documents")
    assert.include(filtered, "Check the directory and the filters;")
  })

  it("shell words are quoted only where a shell would change them", () => {
    assert.deepStrictEqual(
      ["*.md", "docs/a-b_c.txt", ".rst", "[z", "it's", "a b", ""].map(Format.shellWord),
      ["'*.md'", "docs/a-b_c.txt", ".rst", "'[z'", "'it'\\''s'", "'a b'", "''"]
    )
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

  it("store statistics: documents by model, unless they are all the last ingest's model", () => {
    const stats = { documents: 3, chunks: 9, dimensions: 64, model: "openai:m2", storeBytes: 2048 }
    const one = Format.statsTable({ ...stats, models: { "openai:m2": 3 } }, "/data")
    assert.notInclude(one, "by model")
    assert.match(one, /\nmodel +openai:m2\n/)
    const two = Format.statsTable({ ...stats, models: { "openai:m2": 1, "hashing-v1": 2 } }, "/data")
    assert.match(two, /\ndocuments by model  +hashing-v1 2, openai:m2 1\n/)
    // an ingest with openai:m2 that wrote no document: the documents are all another model's
    const none = Format.statsTable({ ...stats, models: { "hashing-v1": 3 } }, "/data")
    assert.match(none, /\ndocuments by model  +hashing-v1 3\n/)
  })

  it("the failures table lists each failed chunk", () => {
    assert.strictEqual(Format.failuresTable([]), "No failures recorded.")
    const text = Format.failuresTable([
      { path: "x.txt", chunkIndex: 0, kind: "http-503", message: "busy", attempts: 5, lastSeen: "2026-01-01T00:00:00Z" }
    ])
    assert.strictEqual(text, "x.txt#0  http-503  5 attempt(s), last 2026-01-01T00:00:00Z\n   busy")
  })

  it("control and bidirectional characters from names and texts are printed as escapes", () => {
    assert.strictEqual(
      Format.printable("a\nb\tc\rd\u001b[31mred\u007f\u0085\u202eevil.txt\u2066x\u2069 née ✓ \\"),
      "a\\nb\\tc\\rd\\x1b[31mred\\x7f\\x85\\u202eevil.txt\\u2066x\\u2069 née ✓ \\"
    )
    const hit = { rank: 1, score: 0.5, chunkIndex: 0 }
    assert.strictEqual(
      Format.searchTable([{ ...hit, path: "a\nb.txt", heading: "\u001b]0;title\u0007", text: "x\u001b[2Jy" }]),
      "1. 0.500  a\\nb.txt#0  [\\x1b]0;title\\x07]\n   x\\x1b[2Jy"
    )
    const skipped = Format.ingestTable(report({
      skippedByReason: { unreadable: 1 },
      skippedFiles: [{ path: "x\u001b[1m.md", reason: "unreadable", detail: "points to /a\nb" }]
    }))
    assert.include(skipped, "  x\\x1b[1m.md: unreadable (points to /a\\nb)")
    assert.strictEqual(
      Format.failuresTable([
        { path: "f\u202e.txt", chunkIndex: 1, kind: "http-400", message: "bad\u0000", attempts: 1, lastSeen: "t" }
      ]),
      "f\\u202e.txt#1  http-400  1 attempt(s), last t\n   bad\\x00"
    )
    assert.include(Format.keptWords(1, "dir\nname", []), "found in dir\\nname,")
  })
})

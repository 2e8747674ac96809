/**
 * Pure formatting of CLI output: summaries, tables, progress lines.
 *
 * @internal
 */
import type { IngestReport, SearchHit, StoreStats } from "../Domain.js"
import { defaultExtensions, formatBytes } from "../Loader.js"

/** What `createIndex` reported (null: not built: the run did not complete, or a signal or error stopped it). */
export type IndexReport = NonNullable<IngestReport["index"]> | null

/**
 * The JSON summary `ingest --json` prints as its last line; `"index"` is
 * present with `--index` only.
 */
export const ingestJson = (report: IngestReport): string =>
  JSON.stringify({
    files: report.files,
    chunks: report.chunks,
    resources: report.resources,
    breaker: report.breaker,
    durationMs: report.durationMs,
    outcome: report.outcome,
    walkComplete: report.walkComplete,
    kept: report.kept,
    skippedByReason: report.skippedByReason,
    skippedFiles: report.skippedFiles,
    ...(report.index === undefined ? {} : { index: report.index })
  })

const namedEscapes: Readonly<Record<string, string>> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" }

/**
 * Text from the file system or the documents as a terminal may show it:
 * control characters (C0, DEL, C1) and the bidirectional controls that
 * reorder what follows them are written as escapes (`\n`, `\x1b`,
 * `\u202e`), so that a file name or a chunk can neither break a line of the
 * output, nor drive the terminal, nor disguise what it says.
 */
export const printable = (text: string): string =>
  text.replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => {
    const code = c.charCodeAt(0)
    return namedEscapes[c] ?? (code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16)}`)
  })

const pad = (s: string, n: number) => s + " ".repeat(Math.max(0, n - s.length))
const padLeft = (s: string, n: number) => " ".repeat(Math.max(0, n - s.length)) + s

/** Two-column table with right-aligned values. */
export const table = (rows: ReadonlyArray<readonly [string, string]>): string => {
  const w1 = Math.max(...rows.map(([k]) => k.length))
  const w2 = Math.max(...rows.map(([, v]) => v.length))
  return rows.map(([k, v]) => `${pad(k, w1)}  ${padLeft(v, w2)}`).join("\n")
}

/** Chunks per second, to one decimal. */
export const rate = (count: number, millis: number): string =>
  millis <= 0 ? "-" : (count / (millis / 1000)).toFixed(1)


/** The readable form of an ingest summary. */
export const ingestTable = (report: IngestReport): string => {
  const lines: Array<string> = []
  if (report.outcome === "stopped") lines.push("Ingest interrupted: partial summary", "")
  const index = report.index
  lines.push(
    table([
      ["files seen", String(report.files.seen)],
      ["files ingested", String(report.files.ingested)],
      ["files unchanged", String(report.files.unchanged)],
      ["files skipped", String(report.files.skipped)],
      ["files removed", String(report.files.removed)],
      ["chunks written", String(report.chunks.written)],
      ["chunks failed", String(report.chunks.failed)],
      ["chunks cached", String(report.chunks.cached)],
      ["chunks/s", rate(report.chunks.written, report.durationMs)],
      ["duration", `${(report.durationMs / 1000).toFixed(2)} s`],
      [
        "resources",
        `${report.resources.acquired} acquired, ${report.resources.released} released, ${report.resources.open} open`
      ],
      ...(index === undefined ? [] : [["vector index", indexWords(index)] as const])
    ])
  )
  const reasons = Object.entries(report.skippedByReason)
  if (reasons.length > 0) {
    lines.push("", "skipped: " + reasons.map(([reason, n]) => `${reason} ${n}`).join(", "))
    for (const file of report.skippedFiles.slice(0, 20)) {
      lines.push(`  ${printable(file.path)}: ${file.reason} (${printable(file.detail)})`)
    }
    if (report.files.skipped > 20) lines.push(`  ... and ${report.files.skipped - 20} more (see --json)`)
  }
  if (!report.walkComplete) {
    lines.push("", "Some directories could not be read, so no stored document was removed in this run.")
  }
  if (report.kept > 0) lines.push("", `No file was found, so the ${report.kept} stored documents were kept.`)
  return lines.join("\n")
}

/** One progress line (no newline). */
export const progressLine = (p: {
  readonly filesSeen: number
  readonly filesIngested: number
  readonly filesUnchanged: number
  readonly filesSkipped: number
  readonly chunksWritten: number
}, elapsedMillis: number): string =>
  `files ${p.filesSeen} (ingested ${p.filesIngested}, unchanged ${p.filesUnchanged}, skipped ${p.filesSkipped})` +
  ` · chunks ${p.chunksWritten} · ${rate(p.chunksWritten, elapsedMillis)} chunks/s`

const oneLine = (text: string, max: number): string => {
  const flat = text.replace(/\s+/g, " ").trim()
  return flat.length <= max ? flat : flat.slice(0, max - 1) + "…"
}

/** The readable form of search hits. */
export const searchTable = (hits: ReadonlyArray<SearchHit>): string =>
  hits.length === 0
    ? "No results."
    : hits.map((hit) =>
      `${hit.rank}. ${hit.score.toFixed(3)}  ${printable(hit.path)}#${hit.chunkIndex}` +
      (hit.heading.length > 0 ? `  [${printable(hit.heading)}]` : "") +
      `\n   ${printable(oneLine(hit.text, 160))}`
    ).join("\n")

/** The readable form of store statistics, with the checksum when computed. */
export const statsTable = (stats: StoreStats, dataDir: string, checksum?: string): string =>
  table([
    ["store", dataDir],
    ["documents", String(stats.documents)],
    ["chunks", String(stats.chunks)],
    ["dimensions", stats.dimensions === null ? "-" : String(stats.dimensions)],
    ["model", stats.model ?? "-"],
    // while an ingest that changed the model has not finished (or wrote nothing)
    ...(Object.keys(stats.models).some((model) => model !== stats.model)
      ? [[
        "documents by model",
        Object.entries(stats.models).sort(([a], [b]) => (a < b ? -1 : 1)).map(([m, n]) => `${m} ${n}`).join(", ")
      ] as const]
      : []),
    ["store size", formatBytes(stats.storeBytes)],
    ...(checksum === undefined ? [] : [["checksum", checksum] as const])
  ])

/** What happened to the vector index, in words. */
export const indexWords = (index: IndexReport): string =>
  index === null
    ? "not built"
    : index.created
    ? `built in ${(index.millis / 1000).toFixed(2)} s`
    : "already present"

/** The readable form of `ragpipe index`'s result. */
export const indexTable = (index: NonNullable<IndexReport>, store: string): string =>
  table([
    ["store", store],
    ["vector index", indexWords(index)]
  ])

/** A word as a POSIX shell takes it back: as it is when that is safe, else in single quotes. */
export const shellWord = (word: string): string =>
  /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`

/**
 * Why a run that found no file kept the store's documents, and what to do;
 * `filters` are the walk's options as given (`--include '*.md'`), if any.
 */
export const keptWords = (kept: number, dir: string, filters: ReadonlyArray<string>): string =>
  `${noFileIn(dir, filters)}, so the ${kept} documents stored by earlier runs were kept. Check the directory` +
  (filters.length === 0 ? "" : " and the filters") +
  `; if it is meant to be empty, run again with --allow-empty to remove them.`

/** What a run that found no file, in a store that held none either, says: nothing is at stake, but it is a surprise. */
export const nothingFoundWords = (dir: string, filters: ReadonlyArray<string>): string =>
  `${noFileIn(dir, filters)}, so nothing was stored. Check the directory` +
  (filters.length === 0 ? "" : " and the filters") +
  `: the files read are those ending in ${defaultExtensions.join(" ")} and in the --extension ones.`

const noFileIn = (dir: string, filters: ReadonlyArray<string>): string =>
  `ragpipe: no file to ingest was found in ${printable(dir)}` +
  (filters.length === 0 ? "" : ` with ${filters.join(" ")}`)

/** The error-rate breaker's report, in words. */
export const breakerWords = (breaker: {
  readonly reason: string
  readonly ok: number
  readonly errors: number
  readonly total: number
  readonly threshold: number
  readonly lastError: string | null
}): string =>
  `ragpipe: the run was ended by the error-rate breaker: ${breaker.reason}. ` +
  `${breaker.errors} of ${breaker.total} chunks failed (${breaker.ok} succeeded; the limit is ` +
  `${(breaker.threshold * 100).toFixed(0)}%).` +
  (breaker.lastError === null ? "" : ` Last error: ${breaker.lastError}.`) +
  ` Documents written before the break are kept; fix the cause and run again to finish.`

/** The readable form of the failures table. */
export const failuresTable = (rows: ReadonlyArray<{
  readonly path: string
  readonly chunkIndex: number
  readonly kind: string
  readonly message: string
  readonly attempts: number
  readonly lastSeen: string
}>): string =>
  rows.length === 0
    ? "No failures recorded."
    : rows.map((r) =>
      `${printable(r.path)}#${r.chunkIndex}  ${r.kind}  ${r.attempts} attempt(s), last ${r.lastSeen}\n   ` +
      printable(oneLine(r.message, 160))
    ).join("\n")

/**
 * An in-memory VectorStore: plain `Map`s, no database. Meant for tests,
 * examples and small programs; it keeps the PostgreSQL store's semantics —
 * dimensions fixed on first use, atomic document replacement (last write of
 * a path wins), failures upserted with their attempts added, removal of the
 * documents a run did not see, exact cosine search with the same tie order,
 * the same `checksum` for the same content — so code written against one
 * runs unchanged on the other.
 *
 * Everything lives in the process and is gone when the store is dropped.
 * Search is always exact (a scan over every chunk); `createIndex` only
 * records that it was asked for. Paths sort in code point order, as the
 * embedded database (collation "C") sorts them. `stats.storeBytes` is an
 * estimate: the chunks' UTF-8 text bytes plus 4 bytes per vector component.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as NodeCrypto from "node:crypto"
import type { EmbeddedChunk, SearchHit, SourceDocument } from "./Domain.js"
import { StoreError } from "./Errors.js"
import { compareCodePoints } from "./internal/codePointOrder.js"
import { makeRunFlag } from "./internal/runLock.js"
import {
  type DocumentWrite,
  type FailureRow,
  type IndexBuild,
  type Service,
  type StoredDocument,
  isComplete,
  isCompleteWith,
  VectorStore
} from "./VectorStore.js"

/** A stored chunk, with its embedding's norm computed once at write time. */
interface ChunkEntry {
  readonly embedded: EmbeddedChunk
  readonly norm: number
}

/** A row of the `documents` table, with its chunks. */
interface DocumentEntry extends StoredDocument {
  readonly size: number
  readonly format: SourceDocument["format"]
  readonly seenRun: string
  readonly chunks: ReadonlyArray<ChunkEntry>
}

/** A row of the `failures` table, keyed by path and chunk index. */
interface FailureEntry {
  readonly chunkIndex: number
  readonly kind: string
  readonly message: string
  readonly attempts: number
  readonly firstSeen: string
  readonly lastSeen: string
}

const queryError = (what: string, detail: string) =>
  new StoreError({ reason: "query", message: `${what} failed: ${detail}` })

const normOf = (v: Float32Array): number => {
  let sum = 0
  for (let i = 0; i < v.length; i++) sum += v[i]! * v[i]!
  return Math.sqrt(sum)
}

/**
 * Cosine similarity as pgvector computes it (`1 - (a <=> b)`): clamped to
 * [-1, 1], NaN when either vector is all zeros.
 */
const cosine = (a: Float32Array, aNorm: number, b: Float32Array, bNorm: number): number => {
  let dot = 0
  for (let i = 0; i < a.length; i++) dot += a[i]! * b[i]!
  const similarity = dot / (aNorm * bNorm)
  return Number.isNaN(similarity) ? NaN : Math.max(-1, Math.min(1, similarity))
}

/** The `YYYY-MM-DDTHH:MM:SSZ` form the PostgreSQL store prints timestamps in. */
const isoSeconds = (millis: number): string => new Date(millis).toISOString().replace(/\.\d{3}Z$/, "Z")

const utf8Bytes = (text: string): number => Buffer.byteLength(text, "utf8")

const sha256Hex = (data: string | Uint8Array): string => NodeCrypto.hash("sha256", data, "hex")

/** The float32 values in big-endian byte order: pgvector's binary form without its header. */
const embeddingBytes = (v: Float32Array): Uint8Array => {
  const bytes = new Uint8Array(v.length * 4)
  const view = new DataView(bytes.buffer)
  // + 0 turns -0 into 0, as the text form the PostgreSQL store sends does
  for (let i = 0; i < v.length; i++) view.setFloat32(i * 4, v[i]! + 0, false)
  return bytes
}

/**
 * Build an empty in-memory store. Each call makes a new, independent store.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<Service> = Effect.sync(() => {
  const documents = new Map<string, DocumentEntry>()
  /** failures by path, then by chunk index */
  const failureRows = new Map<string, Map<number, FailureEntry>>()
  let dimensions: number | undefined
  let model: string | undefined
  let lastRun = 0

  const prepare: Service["prepare"] = (embedder) =>
    Effect.suspend(() => {
      if (dimensions === undefined || documents.size === 0) {
        dimensions = embedder.dimensions
      } else if (dimensions !== embedder.dimensions) {
        return Effect.fail(
          new StoreError({
            reason: "dimension-mismatch",
            message: `this store holds ${dimensions}-dimensional embeddings (model ${model ?? "unknown"}) but the ` +
              `embedder produces ${embedder.dimensions} dimensions (model ${embedder.model}); run again with ` +
              `--dimensions ${dimensions}, or use a new --data-dir to build a separate store with the new setting`
          })
        )
      }
      model = embedder.model
      return Effect.void
    })

  const runFlag = makeRunFlag()
  const beginRun: Service["beginRun"] = Effect.zipRight(runFlag.hold, Effect.sync(() => String(++lastRun)))

  const lookup: Service["lookup"] = (paths) =>
    Effect.sync(() => {
      const found = new Map<string, StoredDocument>()
      for (const path of paths) {
        const entry = documents.get(path)
        if (entry !== undefined) {
          found.set(path, {
            path: entry.path,
            contentHash: entry.contentHash,
            chunker: entry.chunker,
            model: entry.model,
            dimensions: entry.dimensions,
            complete: entry.complete,
            fingerprint: entry.fingerprint
          })
        }
      }
      return found
    })

  const claimUnchanged: Service["claimUnchanged"] = (runId, files, settings) =>
    Effect.sync(() => {
      const claimed = new Set<string>()
      for (const { fingerprint, path } of files) {
        const entry = documents.get(path)
        if (entry === undefined || entry.fingerprint !== fingerprint || !isCompleteWith(entry, settings)) continue
        documents.set(path, { ...entry, seenRun: runId })
        claimed.add(path)
      }
      return claimed
    })

  const hasComplete: Service["hasComplete"] = (settings) =>
    Effect.sync(() => {
      for (const entry of documents.values()) {
        if (isCompleteWith(entry, settings)) return true
      }
      return false
    })

  const markSeen: Service["markSeen"] = (runId, paths, fingerprints) =>
    Effect.sync(() => {
      paths.forEach((path, i) => {
        const entry = documents.get(path)
        if (entry === undefined) return
        documents.set(
          path,
          fingerprints === undefined
            ? { ...entry, seenRun: runId }
            : { ...entry, seenRun: runId, fingerprint: fingerprints[i] ?? null }
        )
      })
    })

  /**
   * What the database's constraints would refuse: a vector of another
   * dimension than the store's, a chunk index or a failure's chunk index
   * used twice in one document.
   */
  const violation = (writes: ReadonlyArray<DocumentWrite>): string | undefined => {
    for (const w of writes) {
      const indexes = new Set<number>()
      for (const { chunk, embedding } of w.chunks) {
        if (dimensions !== undefined && embedding.length !== dimensions) {
          return `expected ${dimensions} dimensions, not ${embedding.length} ` +
            `(chunk ${chunk.index} of ${w.document.path})`
        }
        if (!embedding.every(Number.isFinite)) {
          return `NaN or infinite value not allowed in vector (chunk ${chunk.index} of ${w.document.path})`
        }
        if (indexes.has(chunk.index)) return `duplicate chunk index ${chunk.index} in ${w.document.path}`
        indexes.add(chunk.index)
      }
      const failed = new Set<number>()
      for (const f of w.failures ?? []) {
        if (failed.has(f.chunkIndex)) {
          return `failure of chunk ${f.chunkIndex} of ${w.document.path} recorded twice in one write`
        }
        failed.add(f.chunkIndex)
      }
    }
    return undefined
  }

  const writeDocuments: Service["writeDocuments"] = (all) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.suspend(() => {
        // one write per path: the last write of a path wins
        const writes = [...new Map(all.map((w) => [w.document.path, w])).values()]
        if (writes.length === 0) return Effect.void
        const what = writes.length === 1 ? `writing ${writes[0]!.document.path}` : `writing ${writes.length} documents`
        // check everything first, then apply everything: all of the call or nothing
        const problem = violation(writes)
        if (problem !== undefined) return Effect.fail(queryError(what, problem))
        const stamp = isoSeconds(now)
        for (const w of writes) {
          const path = w.document.path
          const failures = w.failures ?? []
          documents.set(path, {
            path,
            contentHash: w.document.contentHash,
            size: w.document.size,
            format: w.document.format,
            chunker: w.chunker,
            model: w.model,
            dimensions: w.dimensions,
            complete: isComplete(w),
            fingerprint: w.document.fingerprint ?? null,
            seenRun: w.runId,
            chunks: w.chunks.map((embedded) => ({ embedded, norm: normOf(embedded.embedding) }))
          })
          // failures not failing any more are cleared; the others are upserted with their attempts added
          const before = failureRows.get(path)
          const after = new Map<number, FailureEntry>()
          for (const f of failures) {
            const previous = before?.get(f.chunkIndex)
            after.set(f.chunkIndex, {
              chunkIndex: f.chunkIndex,
              kind: f.kind,
              message: f.message,
              attempts: (previous?.attempts ?? 0) + f.attempts,
              firstSeen: previous?.firstSeen ?? stamp,
              lastSeen: stamp
            })
          }
          if (after.size === 0) failureRows.delete(path)
          else failureRows.set(path, after)
        }
        return Effect.void
      }))

  const removeUnseen: Service["removeUnseen"] = (runId) =>
    Effect.sync(() => {
      let removed = 0
      for (const [path, entry] of documents) {
        if (entry.seenRun !== runId) {
          documents.delete(path)
          failureRows.delete(path)
          removed++
        }
      }
      return removed
    })

  const search: Service["search"] = (query, limit, model) =>
    Effect.suspend(() => {
      if (!Number.isFinite(limit) || limit < 0) {
        return Effect.fail(queryError("searching", `LIMIT must be a non-negative number (got ${limit})`))
      }
      const queryNorm = normOf(query)
      const scored: Array<{ readonly path: string; readonly entry: ChunkEntry; readonly score: number }> = []
      for (const [path, doc] of documents) {
        if (model !== undefined && doc.model !== model) continue
        for (const entry of doc.chunks) {
          const length = entry.embedded.embedding.length
          if (length !== query.length) {
            return Effect.fail(queryError("searching", `different vector dimensions ${length} and ${query.length}`))
          }
          scored.push({ path, entry, score: cosine(entry.embedded.embedding, entry.norm, query, queryNorm) })
        }
      }
      // closest first (NaN, from a zero vector, last), then by path and chunk index
      scored.sort((a, b) => {
        const an = Number.isNaN(a.score)
        const bn = Number.isNaN(b.score)
        if (an !== bn) return an ? 1 : -1
        if (!an && a.score !== b.score) return b.score - a.score
        return compareCodePoints(a.path, b.path) || a.entry.embedded.chunk.index - b.entry.embedded.chunk.index
      })
      return Effect.succeed(
        scored.slice(0, Math.floor(limit)).map(({ entry, path, score }, i): SearchHit => ({
          rank: i + 1,
          score,
          path,
          chunkIndex: entry.embedded.chunk.index,
          heading: entry.embedded.chunk.headingPath.join(" > "),
          text: entry.embedded.chunk.text
        }))
      )
    })

  const stats: Service["stats"] = Effect.sync(() => {
    let chunks = 0
    let storeBytes = 0
    const models: Record<string, number> = {}
    for (const doc of documents.values()) {
      models[doc.model] = (models[doc.model] ?? 0) + 1
      for (const { embedded } of doc.chunks) {
        chunks++
        storeBytes += utf8Bytes(embedded.chunk.text) + 4 * embedded.embedding.length
      }
    }
    return {
      documents: documents.size,
      chunks,
      dimensions: dimensions ?? null,
      model: model ?? null,
      models,
      storeBytes
    }
  })

  const failures: Service["failures"] = (limit) =>
    Effect.sync(() => {
      const rows: Array<FailureRow> = []
      for (const [path, byIndex] of failureRows) {
        for (const f of byIndex.values()) {
          rows.push({
            path,
            chunkIndex: f.chunkIndex,
            kind: f.kind,
            message: f.message,
            attempts: f.attempts,
            firstSeen: f.firstSeen,
            lastSeen: f.lastSeen
          })
        }
      }
      rows.sort((a, b) => compareCodePoints(a.path, b.path) || a.chunkIndex - b.chunkIndex)
      return rows.slice(0, Math.max(0, Math.floor(limit)))
    })

  // same records, same order, same digest as the PostgreSQL store (see `VectorStore.checksumAlgorithm`)
  const checksum: Service["checksum"] = Effect.sync(() => {
    const hash = NodeCrypto.createHash("sha256")
    const paths = [...documents.keys()].sort(compareCodePoints)
    for (const path of paths) {
      const chunks = [...documents.get(path)!.chunks].sort((a, b) =>
        a.embedded.chunk.index - b.embedded.chunk.index
      )
      for (const { embedded } of chunks) {
        hash.update(
          `${path}\0${embedded.chunk.index}\0${sha256Hex(Buffer.from(embedded.chunk.text, "utf8"))}\0` +
            `${sha256Hex(embeddingBytes(embedded.embedding))}\0`,
          "utf8"
        )
      }
    }
    return hash.digest("hex")
  })

  // search is always an exact scan here: the "index" is a flag, so that
  // `created` answers as the PostgreSQL store's does
  let indexed = false
  const createIndex: Service["createIndex"] = Effect.suspend(() => {
    if (dimensions === undefined) {
      return Effect.fail(
        new StoreError({
          reason: "query",
          message: "nothing to index yet; run ragpipe ingest first (the store has no embeddings, so their " +
            "dimensions are not known)"
        })
      )
    }
    const created = !indexed
    indexed = true
    return Effect.succeed<IndexBuild>({ created, millis: 0 })
  })

  return {
    prepare,
    beginRun,
    lookup,
    claimUnchanged,
    hasComplete,
    markSeen,
    writeDocuments,
    removeUnseen,
    search,
    stats,
    searchScope: Effect.map(stats, (s) => ({ hasChunks: s.chunks > 0, dimensions: s.dimensions, models: s.models })),
    failures,
    checksum,
    createIndex
  }
})

/**
 * A fresh, empty in-memory store as a layer: each build of the layer is a
 * store of its own.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<VectorStore> = Layer.effect(VectorStore, make)

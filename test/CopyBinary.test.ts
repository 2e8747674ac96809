/**
 * Chunks written with a binary COPY on a PostgreSQL server: the encoder,
 * the store's COPY write path against the embedded database's, and a failed
 * write's rollback. Needs RAGPIPE_TEST_DATABASE_URL.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import Pg from "pg"
import * as Database from "../src/Database.js"
import type { ChunkId, EmbeddedChunk } from "../src/Domain.js"
import { type ChunkRow, CopyArena, copyBatches, encodeChunkCopy, encodeChunkRows } from "../src/internal/copyBinary.js"
import * as VectorStore from "../src/VectorStore.js"
import { backends, doc, ledgerLayer, partialDocuments, testDatabaseUrl } from "./support.js"

const url = testDatabaseUrl ?? ""
const server = backends.find((b) => b.name === "PostgreSQL server")
const pglite = backends.find((b) => b.name === "PGlite")!

const dimensions = 8

/** Deterministic pseudo-random embeddings. */
const embeddingFor = (seed: number): Float32Array => {
  let x = (seed * 2654435761) >>> 0
  const v = new Float32Array(dimensions)
  for (let i = 0; i < dimensions; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    v[i] = (x / 2 ** 32 - 0.5) * 2
  }
  return v
}

const chunksOf = (path: string, texts: ReadonlyArray<string>, seed: number, ids?: ReadonlyArray<string>) =>
  texts.map((text, index): EmbeddedChunk => ({
    chunk: {
      id: (ids?.[index] ?? `${path}#${index}`) as ChunkId,
      documentPath: path,
      index,
      text,
      headingPath: index % 2 === 0 ? [] : ["Title", `Section "${index}" — ü`],
      tokenEstimate: Math.ceil(text.length / 4)
    },
    embedding: embeddingFor(seed * 100 + index)
  }))

const write = (
  path: string,
  texts: ReadonlyArray<string>,
  seed: number,
  runId = "1",
  extra: Partial<VectorStore.DocumentWrite> = {}
): VectorStore.DocumentWrite => ({
  document: doc(path, texts.join("\n")),
  chunker: "test",
  model: "test-model",
  dimensions,
  chunks: chunksOf(path, texts, seed),
  runId,
  ...extra
})

describe("binary COPY encoding", () => {
  it("writes each vector component as a big-endian float4, from a Float32Array view or a plain array", () => {
    const backing = new Float32Array(3 + dimensions)
    const view = backing.subarray(3)
    view.set(embeddingFor(7))
    const row = (embedding: Float32Array | ReadonlyArray<number>): ChunkRow => ({
      id: "c",
      documentId: "1",
      chunkIndex: 0,
      text: "t",
      headingPath: [],
      tokenEstimate: 1,
      embedding
    })
    for (const embedding of [view, Array.from(view)]) {
      const bytes = encodeChunkCopy([row(embedding)])
      // the vector is the last field of the row, followed by the 2-byte trailer
      const vector = bytes.subarray(bytes.length - 2 - 4 * dimensions, bytes.length - 2)
      for (let i = 0; i < dimensions; i++) assert.strictEqual(vector.readFloatBE(4 * i), view[i])
      assert.strictEqual(bytes.readInt16BE(bytes.length - 2 - 4 * dimensions - 4), dimensions)
    }
  })
})

describe("COPY arena", () => {
  const rows = (count: number, seed: number): Array<ChunkRow> =>
    chunksOf(`doc-${seed}.md`, Array.from({ length: count }, (_, i) => `text ${seed}/${i} `.repeat(20)), seed).map((c) => ({
      id: c.chunk.id,
      documentId: String(seed),
      chunkIndex: c.chunk.index,
      text: c.chunk.text,
      headingPath: c.chunk.headingPath,
      tokenEstimate: c.chunk.tokenEstimate,
      embedding: c.embedding
    }))

  it("encodes the same bytes into its buffers as into fresh ones", () => {
    const arena = new CopyArena(16, 1 << 20)
    for (const seed of [1, 2, 3]) {
      const lease = arena.lease()!
      const fresh = encodeChunkRows(rows(5 + seed, seed))
      const reused = encodeChunkRows(rows(5 + seed, seed), lease.allocate)
      assert.isTrue(reused.equals(fresh))
      lease.done()
    }
  })

  it("a buffer is handed out again only after done; a discarded lease's buffers are never reused", () => {
    const arena = new CopyArena(8192, 1 << 20)
    const first = arena.lease()!
    const a = first.allocate(100)
    const b = first.allocate(10)
    // held by a COPY: no second lease
    assert.isUndefined(arena.lease())
    first.done()
    const second = arena.lease()!
    const a2 = second.allocate(80)
    const b2 = second.allocate(64)
    assert.strictEqual(a2.buffer, a.buffer)
    assert.strictEqual(a2.byteOffset, a.byteOffset)
    assert.strictEqual(a2.length, 80)
    assert.strictEqual(b2.buffer, b.buffer)
    // larger than what is held: a new buffer, kept in its place
    const c = second.allocate(50_000)
    second.discard()
    // discarded: the bytes may still be queued on a socket, so nothing is reused
    assert.strictEqual(arena.retained, 0)
    const third = arena.lease()!
    const a3 = third.allocate(80)
    assert.notStrictEqual(a3.buffer, a.buffer)
    assert.notStrictEqual(third.allocate(50_000).buffer, c.buffer)
    third.done()
    // settling twice changes nothing
    third.discard()
    assert.isAbove(arena.retained, 0)
  })

  it("batches rows by their encoded size: in order, none empty, each within the bound unless one row exceeds it", () => {
    const all = rows(200, 4)
    const rowBytes = encodeChunkRows(all.slice(0, 1)).length
    const maxBytes = 10 * rowBytes
    const batched = copyBatches(all, maxBytes)
    assert.deepStrictEqual(batched.flat(), all)
    assert.isAbove(batched.length, 1)
    for (const batch of batched) {
      assert.isAbove(batch.length, 0)
      assert.isAtMost(encodeChunkRows(batch).length, maxBytes)
    }
    // the batches encode to the same COPY stream as the rows in one buffer
    assert.isTrue(Buffer.concat(batched.map((batch) => encodeChunkRows(batch))).equals(encodeChunkRows(all)))
    // a row larger than the bound is a batch of its own
    const long = { ...all[0]!, text: "x".repeat(4 * maxBytes) }
    const around = copyBatches([all[1]!, long, all[2]!], maxBytes)
    assert.deepStrictEqual(around.map((batch) => batch.length), [1, 1, 1])
    assert.deepStrictEqual(copyBatches([], maxBytes), [])
  })

  it("keeps no more than its retention limit in all", () => {
    const arena = new CopyArena(16, 1000)
    const lease = arena.lease()!
    lease.allocate(500)
    lease.allocate(5000)
    lease.allocate(400)
    lease.allocate(400)
    lease.done()
    assert.strictEqual(arena.retained, 900)
    // a larger first buffer replaces the one held, within the limit
    const next = arena.lease()!
    next.allocate(600)
    next.done()
    assert.strictEqual(arena.retained, 1000)
  })
})

describe.skipIf(server === undefined)("binary COPY on the PostgreSQL server (runs when RAGPIPE_TEST_DATABASE_URL is set)", () => {
  it.live("the encoder round-trips every column through COPY ... FROM STDIN (FORMAT binary)", () =>
    Effect.promise(async () => {
      const { from: copyFrom } = await import("pg-copy-streams")
      const client = new Pg.Client({ connectionString: url })
      await client.connect()
      try {
        await client.query("CREATE EXTENSION IF NOT EXISTS vector")
        await client.query(`CREATE TEMP TABLE chunks (
          id text PRIMARY KEY, document_id bigint NOT NULL, chunk_index integer NOT NULL, text text NOT NULL,
          heading_path jsonb NOT NULL, token_estimate integer NOT NULL, embedding vector NOT NULL)`)
        const rows: Array<ChunkRow> = [
          {
            id: "a#0",
            documentId: "1",
            chunkIndex: 0,
            text: "plain",
            headingPath: [],
            tokenEstimate: 2,
            embedding: new Float32Array([0.1, -0, 1e-30, 3.4e38, -1.5, 0])
          },
          {
            id: "ü\u{1F600}#1",
            documentId: "9007199254740993",
            chunkIndex: 2147483647,
            text: "ünïcödé \u{1F600} \"quoted\" \\ back\nslash\ttab",
            headingPath: ["A \"b\"", "ç \u{1F600}", "\\"],
            tokenEstimate: 0,
            embedding: Float32Array.from({ length: 384 }, (_, i) => Math.sin(i) * 1000)
          },
          {
            id: "",
            documentId: "-5",
            chunkIndex: -1,
            text: "",
            headingPath: ["x"],
            tokenEstimate: 123456,
            embedding: [1, 2, 3]
          }
        ]
        const stream = client.query(copyFrom(
          "COPY chunks (id, document_id, chunk_index, text, heading_path, token_estimate, embedding) " +
            "FROM STDIN (FORMAT binary)"
        ))
        await new Promise<void>((resolve, reject) => {
          stream.on("error", reject)
          stream.on("finish", resolve)
          stream.end(encodeChunkCopy(rows))
        })
        assert.strictEqual(stream.rowCount, rows.length)
        const back = await client.query<{
          id: string
          document_id: string
          chunk_index: number
          text: string
          heading_path: Array<string>
          heading_text: string
          token_estimate: number
          embedding: string
        }>(
          `SELECT id, document_id::text, chunk_index, text, heading_path, heading_path::text AS heading_text,
                  token_estimate, embedding::text AS embedding
           FROM chunks ORDER BY chunk_index DESC`
        )
        const byId = new Map(back.rows.map((r) => [r.id, r]))
        for (const row of rows) {
          const got = byId.get(row.id)!
          assert.isDefined(got, row.id)
          assert.strictEqual(got.document_id, row.documentId)
          assert.strictEqual(got.chunk_index, row.chunkIndex)
          assert.strictEqual(got.text, row.text)
          assert.deepStrictEqual(got.heading_path, [...row.headingPath])
          assert.deepStrictEqual(JSON.parse(got.heading_text), [...row.headingPath])
          assert.strictEqual(got.token_estimate, row.tokenEstimate)
          const values = got.embedding.slice(1, -1).split(",").map(Number)
          assert.deepStrictEqual(
            values.map((x) => Math.fround(x)),
            Array.from(row.embedding, (x) => Math.fround(x))
          )
        }
        // bit-exact: vector_send of the stored vector is the encoded one
        const exact = await client.query<{ ok: boolean }>(
          `SELECT bool_and(embedding = $1::vector) AS ok FROM chunks WHERE id = 'a#0'`,
          ["[0.100000001,0,1.00000002e-30,3.39999995e+38,-1.5,0]"]
        )
        assert.isTrue(exact.rows[0]!.ok)
      } finally {
        await client.end()
      }
    }))

  it.scopedLive("writeDocuments by COPY leaves the same store as the embedded database's INSERTs", () =>
    Effect.gen(function*() {
      const steps: ReadonlyArray<ReadonlyArray<VectorStore.DocumentWrite>> = [
        [
          write("b.txt", ["bee one", "bee two", "bee three"], 1),
          write("a.md", Array.from({ length: 1200 }, (_, i) => `alpha chunk ${i} ünï`), 2, "1", {
            failures: [{ chunkIndex: 1200, kind: "http-503", message: "unavailable", attempts: 3 }]
          }),
          write("empty.txt", [], 3)
        ],
        // a.md rewritten with fewer chunks and its failure cleared; b.txt twice (last wins)
        [
          write("a.md", ["alpha again"], 4, "2"),
          write("b.txt", ["old"], 5, "2"),
          write("b.txt", ["bee new", "bee newer"], 6, "2", {
            failures: [{ chunkIndex: 2, kind: "timeout", message: "slow", attempts: 1 }]
          })
        ]
      ]
      const run = (layer: Effect.Effect.Success<typeof pglite.fresh>) =>
        Effect.gen(function*() {
          const store = yield* VectorStore.VectorStore
          yield* store.prepare({ model: "test-model", dimensions })
          for (const step of steps) yield* store.writeDocuments(step)
          return {
            checksum: yield* store.checksum,
            lookup: [...(yield* store.lookup(["a.md", "b.txt", "empty.txt"])).entries()].sort(),
            failures: (yield* store.failures(100)).map(({ firstSeen: _f, lastSeen: _l, ...f }) => f),
            stats: yield* store.stats,
            partial: yield* partialDocuments,
            hits: yield* store.search(embeddingFor(601), 5),
            copy: Option.isSome(yield* Effect.serviceOption(Database.ServerPool))
          }
        }).pipe(Effect.provide(layer().pipe(Layer.provideMerge(ledgerLayer))))

      const embedded = yield* run(yield* pglite.fresh)
      const onServer = yield* run(yield* server!.fresh)
      assert.isFalse(embedded.copy)
      assert.isTrue(onServer.copy)
      assert.strictEqual(onServer.checksum, embedded.checksum)
      assert.deepStrictEqual(onServer.lookup, embedded.lookup)
      assert.deepStrictEqual(onServer.failures, embedded.failures)
      assert.strictEqual(onServer.stats.chunks, 3)
      assert.strictEqual(onServer.stats.chunks, embedded.stats.chunks)
      assert.deepStrictEqual(onServer.partial, [])
      assert.deepStrictEqual(
        onServer.hits.map((h) => [h.path, h.chunkIndex, h.heading, h.text]),
        embedded.hits.map((h) => [h.path, h.chunkIndex, h.heading, h.text])
      )
    }))

  it.scopedLive("a write failing inside the COPY rolls back everything and returns its connection", () =>
    Effect.gen(function*() {
      const fresh = yield* server!.fresh
      yield* Effect.gen(function*() {
        const store = yield* VectorStore.VectorStore
        const sql = yield* SqlClient.SqlClient
        const pool = Option.getOrThrow(yield* Effect.serviceOption(Database.ServerPool))
        yield* store.prepare({ model: "test-model", dimensions })
        yield* store.writeDocuments([write("keep.txt", ["kept one", "kept two"], 1)])
        const before = yield* store.checksum

        const texts = Array.from({ length: 3000 }, (_, i) => `chunk ${i}`)
        // a duplicate chunk index late in the COPY
        const bad: VectorStore.DocumentWrite = {
          ...write("dup.txt", texts, 2, "2"),
          chunks: chunksOf("dup.txt", texts, 2).map((c, i) => i === 2500 ? { ...c, chunk: { ...c.chunk, index: 0 } } : c)
        }
        const error = yield* Effect.flip(
          store.writeDocuments([write("keep.txt", ["replaced"], 3, "2"), write("new.txt", ["new"], 4, "2"), bad])
        )
        assert.strictEqual(error._tag, "StoreError")
        assert.strictEqual(error.reason, "query")
        assert.match(error.message, /^writing 3 documents failed: .*duplicate key/)

        // nothing of the failed write is visible; the store still works
        assert.strictEqual(yield* store.checksum, before)
        assert.deepStrictEqual([...(yield* store.lookup(["keep.txt", "new.txt", "dup.txt"])).keys()], ["keep.txt"])
        assert.deepStrictEqual(yield* partialDocuments, [])

        // no client left checked out, no transaction left open
        assert.strictEqual(pool.idleCount, pool.totalCount)
        assert.strictEqual(pool.waitingCount, 0)
        yield* Effect.sleep("600 millis")
        const open = yield* sql<{ n: number }>`
          SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE application_name = 'ragpipe' AND state LIKE 'idle in transaction%'
            AND state_change < now() - interval '500 milliseconds'`
        assert.strictEqual(open[0]!.n, 0)

        yield* store.writeDocuments([write("new.txt", ["new"], 4, "3")])
        assert.deepStrictEqual([...(yield* store.lookup(["keep.txt", "new.txt"])).keys()].sort(), [
          "keep.txt",
          "new.txt"
        ])
      }).pipe(Effect.provide(fresh().pipe(Layer.provideMerge(ledgerLayer))))
    }))

  it.scopedLive("an interrupted write leaves no client checked out and no transaction open", () =>
    Effect.gen(function*() {
      const fresh = yield* server!.fresh
      yield* Effect.gen(function*() {
        const store = yield* VectorStore.VectorStore
        const sql = yield* SqlClient.SqlClient
        const pool = Option.getOrThrow(yield* Effect.serviceOption(Database.ServerPool))
        yield* store.prepare({ model: "test-model", dimensions })
        const texts = Array.from({ length: 20000 }, (_, i) => `chunk ${i} `.repeat(20))
        for (const delay of [0, 5, 20, 60]) {
          yield* store.writeDocuments([write(`big${delay}.txt`, texts, delay, "1")]).pipe(
            Effect.timeout(`${delay} millis`),
            Effect.ignore
          )
        }
        // a discarded connection's backend ends at once; give it a moment to leave pg_stat_activity
        yield* Effect.sleep("600 millis")
        assert.strictEqual(pool.idleCount, pool.totalCount)
        const open = yield* sql<{ n: number }>`
          SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE application_name = 'ragpipe' AND state LIKE 'idle in transaction%'
            AND state_change < now() - interval '500 milliseconds'`
        assert.strictEqual(open[0]!.n, 0)
        assert.deepStrictEqual(yield* partialDocuments, [])
        // the store still works
        yield* store.writeDocuments([write("after.txt", ["after"], 9, "2")])
        assert.isTrue((yield* store.lookup(["after.txt"])).has("after.txt"))
      }).pipe(Effect.provide(fresh().pipe(Layer.provideMerge(ledgerLayer))))
    }))
})

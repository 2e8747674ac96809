/**
 * The HNSW vector index (`createIndex`, `ragpipe index`, `ingest --index`)
 * and the store checksum (`checksum`, `stats --checksum`), on every backend.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { spawn } from "node:child_process"
import * as NodePath from "node:path"
import * as Embedder from "../src/Embedder.js"
import * as Ingest from "../src/Ingest.js"
import * as Search from "../src/Search.js"
import * as VectorStore from "../src/VectorStore.js"
import { vectorLiteral } from "../src/internal/vector.js"
import { backends, cliPath, copyCorpus, corpusDir, corpusQueries, doc, ledgerLayer, tempDir } from "./support.js"

/** The index's row in `pg_indexes`, in the store's schema. */
const indexDefinition = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<{ indexdef: string }>`
    SELECT indexdef FROM pg_indexes
    WHERE schemaname = current_schema() AND tablename = 'chunks' AND indexname = ${VectorStore.hnswIndexName}`
  return rows[0]?.indexdef
})

/** Run `effect` on one connection with sequential scans discouraged (to see the index used on a tiny table). */
const withoutSeqScan = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql.withTransaction(Effect.zipRight(sql`SET LOCAL enable_seqscan = off`, effect)))

const queries = corpusQueries.slice(0, 8)

describe.each(backends)("vector index on $name", (backend) => {
  it.scopedLive("createIndex: a clear error on an empty store; built once; search unchanged; the planner uses it", () =>
    Effect.gen(function*() {
      const work = yield* tempDir()
      copyCorpus(work)
      const data = yield* backend.fresh
      yield* Effect.gen(function*() {
        const store = yield* VectorStore.VectorStore
        const sql = yield* SqlClient.SqlClient

        const empty = yield* Effect.flip(store.createIndex)
        assert.strictEqual(empty._tag, "StoreError")
        assert.match(empty.message, /nothing to index yet; run ragpipe ingest first/)
        assert.isUndefined(yield* indexDefinition)

        yield* Ingest.ingestDirectory({ root: work })
        const search = Effect.forEach(queries, (q) => Search.search(q.query, { limit: 5 }))
        const before = yield* search
        const checksumBefore = yield* store.checksum

        const first = yield* store.createIndex
        assert.isTrue(first.created)
        assert.isAtLeast(first.millis, 0)
        const definition = yield* indexDefinition
        assert.isDefined(definition)
        assert.match(definition!, /USING hnsw \(embedding vector_cosine_ops\)/)

        const second = yield* store.createIndex
        assert.isFalse(second.created)

        // same hits, ranks and scores: on this small table the planner scans
        const after = yield* search
        assert.deepStrictEqual(after, before)
        // through the index (approximate, but exact on a graph this small)
        const forced = yield* withoutSeqScan(search)
        const places = (all: ReadonlyArray<ReadonlyArray<{ path: string; chunkIndex: number }>>) =>
          all.map((hits) => hits.map((h) => `${h.path}#${h.chunkIndex}`))
        assert.deepStrictEqual(places(forced), places(before))
        for (const [i, hits] of forced.entries()) {
          for (const [j, hit] of hits.entries()) assert.closeTo(hit.score, before[i]![j]!.score, 1e-6)
        }
        assert.strictEqual(yield* store.checksum, checksumBefore)

        // a nearest-neighbour query is answered by an index scan
        const embedder = yield* Embedder.Embedder
        const [vector] = yield* embedder.embedBatch([queries[0]!.query])
        const plan = yield* withoutSeqScan(sql<{ "QUERY PLAN": string }>`
          EXPLAIN (COSTS OFF) SELECT id FROM chunks ORDER BY embedding <=> ${vectorLiteral(vector!)}::vector LIMIT 5`)
        const text = plan.map((row) => row["QUERY PLAN"]).join("\n")
        assert.match(text, new RegExp(`Index Scan using ${VectorStore.hnswIndexName} on chunks`), text)
      }).pipe(Effect.provide(Layer.mergeAll(data(), Embedder.layerHashing()).pipe(Layer.provideMerge(ledgerLayer))))
    }), 60_000)

  it.scopedLive("checksum: the documented algorithm, over paths in byte order, whatever was written when", () =>
    Effect.gen(function*() {
      const texts: Record<string, string> = {
        "b/z.txt": "zebra crossing near the depot",
        "a.txt": "alpha beta gamma. ".repeat(120),
        "\uFF21.txt": "a fullwidth letter sorts before an emoji by code point, after it in UTF-16",
        "\u{1F600}.txt": "grinning face",
        "é.txt": "accented file name, ünïcödé text",
        "Z.txt": "upper case sorts before lower case in byte order"
      }
      const fresh = yield* backend.fresh
      const provide = Effect.provide(
        Layer.mergeAll(fresh(), Embedder.layerHashing()).pipe(Layer.provideMerge(ledgerLayer))
      )
      const checksumOf = (paths: ReadonlyArray<string>) =>
        Ingest.ingestStream(Stream.fromIterable(paths.map((p) => Either.right(doc(p, texts[p]!))))).pipe(
          Effect.zipRight(Effect.flatMap(VectorStore.VectorStore, (store) => store.checksum))
        )

      const emptyChecksum = yield* Effect.flatMap(VectorStore.VectorStore, (store) => store.checksum).pipe(provide)
      assert.strictEqual(emptyChecksum, VectorStore.checksumOf([]))

      const paths = Object.keys(texts)
      const forward = yield* checksumOf(paths).pipe(provide)

      // recompute it from the rows, in JavaScript
      const expected = yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const rows = yield* sql<{ path: string; chunkIndex: number; text: string; embedding: string }>`
          SELECT d.path, c.chunk_index AS "chunkIndex", c.text, c.embedding::text AS embedding
          FROM chunks c JOIN documents d ON d.id = c.document_id`
        assert.isAbove(rows.length, paths.length)
        const sorted = [...rows].sort((a, b) =>
          Buffer.compare(Buffer.from(a.path, "utf8"), Buffer.from(b.path, "utf8")) || a.chunkIndex - b.chunkIndex
        )
        assert.strictEqual(sorted[0]!.path, "Z.txt")
        assert.deepStrictEqual(sorted.map((r) => r.path).filter((p) => p.length <= 6).slice(-2), [
          "\uFF21.txt",
          "\u{1F600}.txt"
        ])
        return VectorStore.checksumOf(sorted.map((r) => ({
          path: r.path,
          chunkIndex: r.chunkIndex,
          textHash: VectorStore.textSha256(r.text),
          embeddingHash: VectorStore.embeddingSha256(JSON.parse(r.embedding) as Array<number>)
        })))
      }).pipe(provide)
      assert.strictEqual(forward, expected)
      assert.notStrictEqual(forward, emptyChecksum)

      // the same content written in another order, into another store: the same checksum
      const other = yield* backend.fresh
      const backward = yield* checksumOf([...paths].reverse()).pipe(
        Effect.provide(Layer.mergeAll(other(), Embedder.layerHashing()).pipe(Layer.provideMerge(ledgerLayer)))
      )
      assert.strictEqual(backward, forward)

      // and any change of content changes it
      texts["b/z.txt"] = "zebra crossing near the depot!"
      const changed = yield* checksumOf(["b/z.txt"]).pipe(provide)
      assert.notStrictEqual(changed, forward)
    }), 60_000)
})

describe("ragpipe index, ingest --index, stats --checksum", () => {
  const ragpipe = (args: ReadonlyArray<string>, cwd: string) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const env: NodeJS.ProcessEnv = {}
      for (const [k, v] of Object.entries(process.env)) {
        if (!k.startsWith("RAGPIPE_") && k !== "DATABASE_URL") env[k] = v
      }
      const child = spawn(process.execPath, [cliPath, ...args], { cwd, env, stdio: ["ignore", "pipe", "pipe"] })
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (d) => (stdout += d))
      child.stderr.on("data", (d) => (stderr += d))
      child.on("error", reject)
      child.on("close", (code) => resolve({ code, stdout, stderr }))
    })

  it.scopedLive("over the example corpus", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("ragpipe-index-cli-")
      const data = NodePath.join(dir, "store")
      const run = (args: ReadonlyArray<string>) => Effect.promise(() => ragpipe(args, dir))

      const none = yield* run(["index", "--data-dir", data])
      assert.strictEqual(none.code, 1)
      assert.match(none.stderr, /no ragpipe store/)

      const ingest = yield* run(["ingest", corpusDir, "--data-dir", data, "--index", "--json"])
      assert.strictEqual(ingest.code, 0, ingest.stderr)
      const summary = JSON.parse(ingest.stdout.trim().split("\n").at(-1)!)
      assert.isTrue(summary.index.created)
      assert.isAtLeast(summary.index.millis, 0)

      const again = yield* run(["index", "--data-dir", data, "--json"])
      assert.strictEqual(again.code, 0, again.stderr)
      assert.isFalse(JSON.parse(again.stdout).created)

      const unchanged = yield* run(["ingest", corpusDir, "--data-dir", data, "--index"])
      assert.strictEqual(unchanged.code, 0, unchanged.stderr)
      assert.match(unchanged.stdout, /vector index\s+already present/)

      const stats = yield* run(["stats", "--data-dir", data, "--checksum", "--json"])
      assert.strictEqual(stats.code, 0, stats.stderr)
      const s = JSON.parse(stats.stdout)
      assert.match(s.checksum, /^[0-9a-f]{64}$/)
      const readable = yield* run(["stats", "--data-dir", data, "--checksum"])
      assert.include(readable.stdout, s.checksum)
      assert.match(readable.stdout, /^checksum\s+[0-9a-f]{64}$/m)
      const plain = yield* run(["stats", "--data-dir", data, "--json"])
      assert.notProperty(JSON.parse(plain.stdout), "checksum")
    }), 60_000)
})

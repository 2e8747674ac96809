/**
 * Opening the PostgreSQL store: `VectorStore.layer` creates it in a database
 * that holds none; `layerWith({ mustExist: true })`, for commands that only
 * read, refuses such a database and leaves nothing in it. And the size its
 * `stats` report. On PGlite always, on the server when
 * RAGPIPE_TEST_DATABASE_URL is set.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Chunker from "../src/Chunker.js"
import * as Database from "../src/Database.js"
import type { SourceDocument } from "../src/Domain.js"
import * as Embedder from "../src/Embedder.js"
import { StoreError } from "../src/Errors.js"
import * as Ingest from "../src/Ingest.js"
import * as ResourceLedger from "../src/ResourceLedger.js"
import * as VectorStore from "../src/VectorStore.js"
import {
  backends,
  doc,
  ledgerLayer,
  scopedDatabase,
  storedPaths,
  type StoreLayer,
  tempDir,
  testDatabaseUrl,
  withClient
} from "./support.js"

type SqlLayer = Layer.Layer<SqlClient.SqlClient, StoreError, ResourceLedger.ResourceLedger>

/** A backend's store with a hashing embedder of `dimensions`, and a ledger. */
const withHashing = (data: () => StoreLayer, dimensions: number) =>
  Layer.mergeAll(data(), Embedder.layerHashing({ dimensions })).pipe(Layer.provideMerge(ledgerLayer))

/** Tables and sequences in the current schema. */
const relations = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql<{ n: number }>`
    SELECT count(*)::int AS n FROM pg_class
    WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'S')`).pipe(
    Effect.map((rows) => rows[0]!.n)
  )

/** Build `layer` in a scope of its own, run `use` on it, close the scope. */
const withLayer = <ROut, A, E, R>(
  layer: Layer.Layer<ROut, StoreError, ResourceLedger.ResourceLedger>,
  use: Effect.Effect<A, E, R>
) => Effect.scoped(Effect.flatMap(Layer.build(layer), (context) => Effect.provide(use, context)))

/**
 * Over a database that holds no store (`database`: the one `sqlLayer`
 * opens): refused with reason `missing` when it must exist, nothing
 * created; created by `layer`; then opened when it must exist.
 */
const refusedThenCreated = (sqlLayer: SqlLayer, database: RegExp) =>
  Effect.gen(function*() {
    const open = (options: VectorStore.Options) => VectorStore.layerWith(options).pipe(Layer.provideMerge(sqlLayer))
    const stats = Effect.flatMap(VectorStore.VectorStore, (store) => store.stats)

    assert.strictEqual(yield* withLayer(sqlLayer, relations), 0)
    const refused = yield* Effect.flip(withLayer(open({ mustExist: true }), stats))
    assert.instanceOf(refused, StoreError)
    assert.strictEqual(refused.reason, "missing")
    assert.match(refused.message, /^there is no ragpipe store in database "[^"]+" \(schema "public"\); /)
    assert.match(refused.message, database)
    assert.include(refused.message, "run `ragpipe ingest <dir>` into it first")
    assert.strictEqual(yield* withLayer(sqlLayer, relations), 0, "the refused open created relations")

    const created = yield* withLayer(VectorStore.layer.pipe(Layer.provideMerge(sqlLayer)), stats)
    assert.strictEqual(created.documents, 0)
    const reopened = yield* withLayer(open({ mustExist: true }), Effect.zip(stats, relations))
    assert.strictEqual(reopened[0].documents, 0)
    assert.isAbove(reopened[1], 0)
  }).pipe(Effect.provide(ResourceLedger.layer()))

describe("VectorStore.layerWith({ mustExist: true })", () => {
  it.scopedLive("on PGlite: a database without a store is refused and left empty; an existing store opens", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("ragpipe-nostore-")
      yield* refusedThenCreated(Database.layerPglite({ dataDir: dir }), /database "\w+"/)
    }), 60_000)

  it.scopedLive.skipIf(testDatabaseUrl === undefined || testDatabaseUrl === "")(
    "on the PostgreSQL server (runs when RAGPIPE_TEST_DATABASE_URL is set): the same",
    () =>
      Effect.gen(function*() {
        const db = yield* scopedDatabase(testDatabaseUrl!, "nostore")
        yield* refusedThenCreated(
          Database.layerServer({ url: Redacted.make(db.url), poolSize: 2 }),
          new RegExp(`database "${db.name}"`)
        )
      }),
    60_000
  )
})

describe.each(backends)("VectorStore.stats on $name", (backend) => {
  it.scopedLive("storeBytes: the store's own tables, not the rest of the database", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      yield* Effect.gen(function*() {
        const store = yield* VectorStore.VectorStore
        const sql = yield* SqlClient.SqlClient
        const empty = (yield* store.stats).storeBytes
        assert.isAbove(empty, 0)
        // two megabytes of something else beside the store
        yield* sql`CREATE TABLE unrelated AS SELECT g, repeat(md5(g::text), 32) AS t FROM generate_series(1, 2000) g`
        const [other] = yield* sql<{ bytes: string }>`SELECT pg_total_relation_size('unrelated')::text AS bytes`
        assert.isAbove(Number(other!.bytes), 2_000_000)
        assert.strictEqual((yield* store.stats).storeBytes, empty)
        // a hundred documents of the store's own
        const docs = Array.from({ length: 100 }, (_, i) => doc(`d${i}.txt`, `document ${i} `.repeat(200)))
        yield* Ingest.ingestStream(Stream.fromIterable(docs.map(Either.right)))
        const filled = yield* store.stats
        assert.strictEqual(filled.documents, 100)
        assert.isAbove(filled.storeBytes, empty)
      }).pipe(Effect.provide(withHashing(data, 64)))
    }))
})

describe.each(backends)("VectorStore directories on $name", (backend) => {
  const settings = { chunker: "test", model: "test-model", dimensions: 3 }
  /** a one-chunk document of `path` with `fingerprint` (none when undefined) */
  const stored = (path: string, runId: string, fingerprint: string | undefined): VectorStore.DocumentWrite => {
    const text = `text of ${path}`
    return {
      document: { ...doc(path, text), ...(fingerprint === undefined ? {} : { fingerprint }) },
      ...settings,
      chunks: [{
        chunk: {
          id: Chunker.chunkId(path, 0, text),
          documentPath: path,
          index: 0,
          text,
          headingPath: [],
          tokenEstimate: Chunker.estimateTokens(text)
        },
        embedding: new Float32Array([1, 0, 0])
      }],
      failures: [],
      runId
    }
  }

  it.scopedLive("directoryDigests: one digest per directory whose documents are all up to date, as directoryDigest makes it; markDirectoriesSeen keeps a directory's own documents", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      // names whose UTF-16 order is not their UTF-8 order (U+FFFD sorts after U+1F600 in UTF-16, before it in
      // UTF-8), a newline, and prefixes of each other
      const upToDate: Record<string, string> = {
        "top.txt": "v1:1:2:3:4",
        "d/x.txt": "v1:5:6:7:8",
        "d/y.txt": "v1:5:6:7:9",
        "d/e/z.txt": "v1:1:1:1:1",
        "u/\uFFFD.txt": "v1:10:1:1:1",
        "u/\u{1F600}.txt": "v1:11:1:1:1",
        "u/é.txt": "v1:12:1:1:1",
        "u/e.txt": "v1:13:1:1:1",
        "u/e.txt.txt": "v1:14:1:1:1",
        "u/a\nb.txt": "v1:15:1:1:1"
      }
      const byDirectory = (paths: ReadonlyArray<string>) => {
        const directories = new Map<string, Array<VectorStore.FileState>>()
        for (const path of paths) {
          const slash = path.lastIndexOf("/")
          const directory = slash < 0 ? "" : path.slice(0, slash)
          directories.set(directory, [...(directories.get(directory) ?? []), { path, fingerprint: upToDate[path]! }])
        }
        return directories
      }
      yield* Effect.gen(function*() {
        const store = yield* VectorStore.VectorStore
        assert.isDefined(store.directoryDigests)
        assert.isDefined(store.markDirectoriesSeen)
        yield* store.prepare({ model: "test-model", dimensions: 3 })
        yield* Effect.scoped(Effect.flatMap(store.beginRun, (run) =>
          store.writeDocuments([
            ...Object.entries(upToDate).map(([path, fingerprint]) => stored(path, run, fingerprint)),
            // a directory with one document that is not up to date is left out
            stored("mixed/ok.txt", run, "v1:1:1:1:1"),
            { ...stored("mixed/other.txt", run, "v1:1:1:1:1"), chunker: "other" },
            stored("unprinted/n.txt", run, undefined),
            {
              ...stored("failed/f.txt", run, "v1:1:1:1:1"),
              failures: [{ chunkIndex: 1, kind: "timeout", message: "slow", attempts: 1 }]
            }
          ])))
        const digests = yield* store.directoryDigests!(settings)
        assert.strictEqual(digests.documents, Object.keys(upToDate).length + 4)
        const expected = byDirectory(Object.keys(upToDate))
        assert.deepStrictEqual([...digests.directories.keys()].sort(), [...expected.keys()].sort())
        for (const [directory, files] of expected) {
          assert.deepStrictEqual(digests.directories.get(directory), {
            digest: VectorStore.directoryDigest(files),
            documents: files.length
          }, `directory "${directory}"`)
        }
        // in any order; another fingerprint or one file fewer is another digest
        const u = expected.get("u")!
        assert.strictEqual(VectorStore.directoryDigest([...u].reverse()), VectorStore.directoryDigest(u))
        assert.notStrictEqual(
          VectorStore.directoryDigest(u.map((f, i) => i === 0 ? { ...f, fingerprint: "v1:10:1:1:2" } : f)),
          VectorStore.directoryDigest(u)
        )
        assert.notStrictEqual(VectorStore.directoryDigest(u.slice(1)), VectorStore.directoryDigest(u))
        // other settings: only the directory whose documents were all written with them
        const other = yield* store.directoryDigests!({ ...settings, chunker: "other" })
        assert.deepStrictEqual([...other.directories.keys()], [])
        assert.strictEqual(other.documents, digests.documents)

        // a run that saw "d" whole and "u/e.txt" by itself keeps those, not what is below "d"
        const left = yield* Effect.scoped(Effect.gen(function*() {
          const run = yield* store.beginRun
          yield* store.markDirectoriesSeen!(run, ["d"])
          yield* store.claimUnchanged(run, [{ path: "u/e.txt", fingerprint: upToDate["u/e.txt"]! }], settings)
          return yield* store.removeUnseen(run)
        }))
        assert.strictEqual(left, digests.documents - 3)
        assert.deepStrictEqual(yield* storedPaths, ["d/x.txt", "d/y.txt", "u/e.txt"])
        // the next run begins without the lists of the last
        const again = yield* Effect.scoped(Effect.flatMap(store.beginRun, store.removeUnseen))
        assert.strictEqual(again, 3)
      }).pipe(Effect.provide(data().pipe(Layer.provideMerge(ledgerLayer))))
    }))

  it.scopedLive("keepDirectoryDigests: directoryDigests answers with the kept digests until a statement writes, re-fingerprints or removes documents", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      yield* Effect.gen(function*() {
        const store = yield* VectorStore.VectorStore
        const sql = yield* SqlClient.SqlClient
        assert.isDefined(store.keepDirectoryDigests)
        const kept = Effect.map(
          sql<{ chunker: string; n: number }>`
            SELECT chunker, count(*)::int AS n FROM ragpipe_dir_digests GROUP BY chunker ORDER BY chunker`,
          (rows) => rows.map((row) => [row.chunker, row.n])
        )
        const digests = (of = settings) =>
          Effect.map(store.directoryDigests!(of), (d) => ({ documents: d.documents, directories: [...d.directories] }))
        const inRun = <A, E>(f: (run: string) => Effect.Effect<A, E>) => Effect.scoped(Effect.flatMap(store.beginRun, f))
        yield* store.prepare({ model: "test-model", dimensions: 3 })
        yield* inRun((run) =>
          store.writeDocuments([
            stored("d/x.txt", run, "v1:1:1:1:1"),
            stored("d/y.txt", run, "v1:1:1:1:2"),
            stored("e/z.txt", run, "v1:1:1:1:3")
          ])
        )
        const computed = yield* digests()
        assert.deepStrictEqual(computed.directories.map(([directory]) => directory).sort(), ["d", "e"])
        assert.deepStrictEqual(yield* kept, [])
        yield* store.keepDirectoryDigests!(settings)
        assert.deepStrictEqual(yield* kept, [["test", 2]])
        assert.deepStrictEqual(yield* digests(), computed)
        // read, not computed again: a kept digest changed by hand is what comes back
        yield* sql`UPDATE ragpipe_dir_digests SET digest = 'by hand' WHERE dir = 'e'`
        assert.strictEqual(new Map((yield* digests()).directories).get("e")?.digest, "by hand")
        // kept already: a second keep computes nothing
        yield* store.keepDirectoryDigests!(settings)
        assert.strictEqual(new Map((yield* digests()).directories).get("e")?.digest, "by hand")

        // a document written again with the same fingerprint but a failed chunk: dropped, and "d" is
        // no longer whole
        yield* inRun((run) =>
          store.writeDocuments([{
            ...stored("d/x.txt", run, "v1:1:1:1:1"),
            failures: [{ chunkIndex: 1, kind: "timeout", message: "slow", attempts: 1 }]
          }])
        )
        assert.deepStrictEqual(yield* kept, [])
        assert.deepStrictEqual((yield* digests()).directories.map(([directory]) => directory), ["e"])

        // a new fingerprint for a document: dropped
        yield* store.keepDirectoryDigests!(settings)
        assert.deepStrictEqual(yield* kept, [["test", 1]])
        yield* inRun((run) => store.markSeen(run, ["e/z.txt"], ["v1:1:1:1:4"]))
        assert.deepStrictEqual(yield* kept, [])
        assert.strictEqual(
          new Map((yield* digests()).directories).get("e")?.digest,
          VectorStore.directoryDigest([{ path: "e/z.txt", fingerprint: "v1:1:1:1:4" }])
        )

        // kept for other settings, those of the last keep replace them
        yield* store.keepDirectoryDigests!(settings)
        yield* store.keepDirectoryDigests!({ ...settings, chunker: "other" })
        assert.deepStrictEqual(yield* kept, [])
        yield* store.keepDirectoryDigests!(settings)
        assert.deepStrictEqual(yield* kept, [["test", 1]])

        // documents removed: dropped
        assert.strictEqual(yield* inRun(store.removeUnseen), 3)
        assert.deepStrictEqual(yield* kept, [])
        assert.deepStrictEqual(yield* digests(), { documents: 0, directories: [] })
      }).pipe(Effect.provide(data().pipe(Layer.provideMerge(ledgerLayer))))
    }))
})

describe.each(backends)("VectorStore writes on $name", (backend) => {
  it.scopedLive("a write that fails at COMMIT (a full disk) fails with what happened; earlier writes stay", () =>
    Effect.gen(function*() {
      const data = yield* backend.fresh
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const ingest = (...docs: ReadonlyArray<SourceDocument>) =>
          Ingest.ingestStream(Stream.fromIterable(docs.map(Either.right)), { removeMissing: false })
        yield* ingest(doc("a.txt", "alpha"))
        // checked when the transaction commits, as a write to a full disk fails then
        yield* sql.unsafe(`CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
          RAISE EXCEPTION 'could not write to file "pg_wal/xlogtemp.42": No space left on device'
            USING ERRCODE = '53100';
          END $$`)
        yield* sql.unsafe(`CREATE CONSTRAINT TRIGGER disk_full AFTER INSERT ON documents
          DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.path = 'full.txt') EXECUTE FUNCTION disk_full()`)
        const failed = yield* Effect.flip(ingest(doc("b.txt", "beta"), doc("full.txt", "gamma")))
        assert.instanceOf(failed, StoreError)
        assert.strictEqual(failed.reason, "query")
        assert.match(failed.message, /^writing 2 documents failed: .*No space left on device/)
        assert.include(
          failed.message,
          "; the disk that holds the database is full — the documents written before are kept: free some space, " +
            "then run again to finish"
        )
        assert.deepStrictEqual(yield* storedPaths, ["a.txt"])
        yield* ingest(doc("b.txt", "beta"))
        assert.deepStrictEqual(yield* storedPaths, ["a.txt", "b.txt"])
      }).pipe(Effect.provide(withHashing(data, 16)))
    }))
})

describe.skipIf(testDatabaseUrl === undefined || testDatabaseUrl === "")(
  "VectorStore in a schema of its own (runs when RAGPIPE_TEST_DATABASE_URL is set)",
  () => {
    it.scopedLive("beside a store in public: refused when it must exist, then created and filled apart from it", () =>
      Effect.gen(function*() {
        const db = yield* scopedDatabase(testDatabaseUrl!, "schemas")
        const server = (schema?: string) =>
          Database.layerServer({
            url: Redacted.make(db.url),
            poolSize: 2,
            ...(schema === undefined ? {} : { schema })
          })
        const run = (sqlLayer: SqlLayer, options: VectorStore.Options, path?: string) =>
          Effect.gen(function*() {
            if (path !== undefined) yield* Ingest.ingestStream(Stream.make(Either.right(doc(path, `text of ${path}`))))
            return yield* Effect.flatMap(VectorStore.VectorStore, (store) => store.stats)
          }).pipe(
            Effect.provide(
              Layer.mergeAll(VectorStore.layerWith(options), Embedder.layerHashing({ dimensions: 64 })).pipe(
                Layer.provideMerge(sqlLayer),
                Layer.provideMerge(ledgerLayer)
              )
            )
          )
        assert.strictEqual((yield* run(server(), {}, "public.txt")).documents, 1)
        const refused = yield* Effect.flip(run(server("second"), { mustExist: true }))
        assert.strictEqual(refused.reason, "missing")
        assert.include(refused.message, `(schema "second")`)
        assert.strictEqual((yield* run(server("second"), {}, "second.txt")).documents, 1)
        assert.strictEqual((yield* run(server("second"), { mustExist: true })).documents, 1)
        assert.strictEqual((yield* run(server(), { mustExist: true })).documents, 1)
        const paths = (schema: string) =>
          Effect.promise(() =>
            withClient(db.url, (c) => c.query<{ path: string }>(`SELECT path FROM ${schema}.documents ORDER BY path`))
          ).pipe(Effect.map((r) => r.rows.map((row) => row.path)))
        assert.deepStrictEqual(yield* paths("public"), ["public.txt"])
        assert.deepStrictEqual(yield* paths("second"), ["second.txt"])
      }), 60_000)
  }
)

describe.skipIf(testDatabaseUrl === undefined || testDatabaseUrl === "")(
  "VectorStore.layerWith({ prepareRun: true }) on the PostgreSQL server (runs when RAGPIPE_TEST_DATABASE_URL is set)",
  () => {
    it.scopedLive("the run's connection opens with the store; the run locks on it; one no run took closes with the layer", () =>
      Effect.gen(function*() {
        const db = yield* scopedDatabase(testDatabaseUrl!, "ahead")
        const query = <A extends object>(text: string) =>
          Effect.promise(() => withClient(db.url, (c) => c.query<A>(text))).pipe(Effect.map((r) => r.rows))
        /** the `ragpipe` backends in the database, once there are `n` of them (within 2 s) */
        const backendsWhen = (n: number) =>
          Effect.gen(function*() {
            for (let i = 0;; i++) {
              const pids = (yield* query<{ pid: number }>(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'ragpipe' AND datname = current_database()"
              )).map((row) => row.pid)
              if (pids.length === n || i === 200) return pids
              yield* Effect.sleep("10 millis")
            }
          })
        /** the backend holding the run's lock (the database's one advisory lock) */
        const lockHolder = query<{ pid: number }>(
          "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted " +
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).pipe(Effect.map((rows) => {
          assert.strictEqual(rows.length, 1)
          return rows[0]!.pid
        }))
        const poolPid = Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`)
          .pipe(Effect.map((rows) => rows[0]!.pid))
        const beginRun = Effect.flatMap(VectorStore.VectorStore, (store) => store.beginRun)
        /** the store opened in a scope of its own: its pool's backend, and the scope */
        const open = (options: VectorStore.Options) =>
          Effect.gen(function*() {
            const scope = yield* Scope.make()
            const context = yield* Layer.buildWithScope(
              VectorStore.layerWith(options).pipe(
                Layer.provideMerge(Database.layerServer({ url: Redacted.make(db.url), poolSize: 2 })),
                Layer.provideMerge(ledgerLayer)
              ),
              scope
            )
            return { scope, context, pool: yield* Effect.provide(poolPid, context) }
          })

        // opened and closed without a run: both connections go with the layer
        const unused = yield* open({ prepareRun: true })
        const both = yield* backendsWhen(2)
        assert.strictEqual(both.length, 2)
        assert.include(both, unused.pool)
        yield* Scope.close(unused.scope, Exit.void)
        assert.deepStrictEqual(yield* backendsWhen(0), [])

        // a run locks on the connection opened ahead: no third one
        const ahead = yield* open({ prepareRun: true })
        const before = yield* backendsWhen(2)
        assert.strictEqual(before.length, 2)
        assert.include(before, ahead.pool)
        yield* Scope.extend(Effect.provide(beginRun, ahead.context), ahead.scope)
        const holder = yield* lockHolder
        assert.include(before.filter((pid) => pid !== ahead.pool), holder)
        assert.sameMembers(yield* backendsWhen(2), before)
        yield* Scope.close(ahead.scope, Exit.void)
        assert.deepStrictEqual(yield* backendsWhen(0), [])

        // without the option, the run connects when it begins
        const plain = yield* open({})
        assert.deepStrictEqual(yield* backendsWhen(1), [plain.pool])
        yield* Scope.extend(Effect.provide(beginRun, plain.context), plain.scope)
        const plainHolder = yield* lockHolder
        assert.notStrictEqual(plainHolder, plain.pool)
        assert.sameMembers(yield* backendsWhen(2), [plain.pool, plainHolder])
        yield* Scope.close(plain.scope, Exit.void)
        assert.deepStrictEqual(yield* backendsWhen(0), [])

        // a connection opened ahead that the server ended meanwhile: the run opens another
        const ended = yield* open({ prepareRun: true })
        const [gone] = (yield* backendsWhen(2)).filter((pid) => pid !== ended.pool)
        yield* query(`SELECT pg_terminate_backend(${gone})`)
        assert.deepStrictEqual(yield* backendsWhen(1), [ended.pool])
        yield* Scope.extend(Effect.provide(beginRun, ended.context), ended.scope)
        const endedHolder = yield* lockHolder
        assert.notStrictEqual(endedHolder, gone)
        assert.notStrictEqual(endedHolder, ended.pool)
        yield* Scope.close(ended.scope, Exit.void)
        assert.deepStrictEqual(yield* backendsWhen(0), [])
      }), 60_000)
  }
)

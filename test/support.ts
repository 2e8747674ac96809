/**
 * Shared helpers for the integration tests.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import Pg from "pg"
import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import { fileURLToPath } from "node:url"
import * as Chunker from "../src/Chunker.js"
import * as Database from "../src/Database.js"
import type { SourceDocument } from "../src/Domain.js"
import type * as FaultServer from "../src/FaultServer.js"
import * as ResourceLedger from "../src/ResourceLedger.js"
import * as VectorStore from "../src/VectorStore.js"

export const repoRoot = NodePath.resolve(NodePath.dirname(fileURLToPath(import.meta.url)), "..")
export const corpusDir = NodePath.join(repoRoot, "test", "fixtures", "corpus")

export interface CorpusQuery {
  readonly query: string
  readonly expectedPath: string
  readonly demo?: boolean
}

export const corpusQueries: ReadonlyArray<CorpusQuery> = JSON.parse(
  NodeFs.readFileSync(NodePath.join(repoRoot, "test", "fixtures", "corpus-queries.json"), "utf8")
)

/** A fresh temporary directory, removed when the scope closes. */
export const tempDir = (prefix = "ragpipe-test-") =>
  Effect.acquireRelease(
    Effect.sync(() => NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), prefix))),
    (dir) => Effect.sync(() => NodeFs.rmSync(dir, { recursive: true, force: true }))
  )

/**
 * A fresh temporary data directory holding an initialised, empty store
 * (a copy of the template the global setup built).
 */
export const freshDataDir = Effect.tap(tempDir("ragpipe-data-"), (dir) =>
  Effect.sync(() => {
    const template = process.env["RAGPIPE_TEST_TEMPLATE"]
    if (template !== undefined) {
      NodeFs.cpSync(NodePath.join(template, "pgdata"), NodePath.join(dir, "pgdata"), { recursive: true })
    }
  }))

/** A test store: the store and its SqlClient. */
export type StoreLayer = Layer.Layer<
  VectorStore.VectorStore | SqlClient.SqlClient,
  import("../src/Errors.js").StoreError,
  ResourceLedger.ResourceLedger
>

/**
 * A place for a fresh, empty store on one backend, released with the scope;
 * `open()` builds a layer over it (callable more than once: each build opens
 * the same store again).
 */
export interface Backend {
  readonly name: string
  readonly fresh: Effect.Effect<() => StoreLayer, never, import("effect/Scope").Scope>
}

const pglite: Backend = {
  name: "PGlite",
  fresh: Effect.map(freshDataDir, (dir) => () => storeLayer(dir))
}

/** The real server, when RAGPIPE_TEST_DATABASE_URL names one: each store is a schema of its own. */
const server = (url: string): Backend => ({
  name: "PostgreSQL server",
  fresh: Effect.acquireRelease(
    Effect.sync(() => `t_${process.pid}_${Math.random().toString(36).slice(2, 10)}`),
    (schema) =>
      Effect.promise(async () => {
        const client = new Pg.Client({ connectionString: url })
        await client.connect()
        try {
          await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
        } finally {
          await client.end()
        }
      })
  ).pipe(
    Effect.map((schema) => () =>
      VectorStore.layer.pipe(
        Layer.provideMerge(Database.layerServer({ url: Redacted.make(url), schema, poolSize: 4 }))
      )
    )
  )
})

export const testDatabaseUrl = process.env["RAGPIPE_TEST_DATABASE_URL"]

/** The backends store tests run on: PGlite always, the server when configured. */
export const backends: ReadonlyArray<Backend> = testDatabaseUrl === undefined || testDatabaseUrl === ""
  ? [pglite]
  : [pglite, server(testDatabaseUrl)]

if (backends.length === 1) {
  console.info("store tests run on PGlite only: set RAGPIPE_TEST_DATABASE_URL to run them on a PostgreSQL server too")
}

/** Copy the example corpus into `dir`. */
export const copyCorpus = (dir: string) => NodeFs.cpSync(corpusDir, dir, { recursive: true })

/** A source document built in memory (its content hash is derived from path and text). */
export const doc = (path: string, text: string): SourceDocument => ({
  path,
  text,
  contentHash: Chunker.chunkId(path, 0, text),
  size: text.length,
  format: "text"
})

/** Write `files` (relative path → content) under `dir`. */
export const writeFiles = (dir: string, files: Readonly<Record<string, string>>) => {
  for (const [path, content] of Object.entries(files)) {
    const full = NodePath.join(dir, path)
    NodeFs.mkdirSync(NodePath.dirname(full), { recursive: true })
    NodeFs.writeFileSync(full, content)
  }
}

/** Store + SqlClient over an embedded database in `dataDir`. */
export const storeLayer = (dataDir: string) =>
  VectorStore.layer.pipe(Layer.provideMerge(Database.layerPglite({ dataDir })))

/** Every stored document has exactly the chunks its row announces (no partial document). */
export const partialDocuments = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  return yield* sql<{ path: string; expected: number; actual: number }>`
    SELECT d.path, d.chunk_count AS expected, count(c.id)::int AS actual
    FROM documents d LEFT JOIN chunks c ON c.document_id = d.id
    GROUP BY d.id HAVING count(c.id) <> d.chunk_count`
})

export const storedPaths = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<{ path: string }>`SELECT path FROM documents ORDER BY path`
  return rows.map((r) => r.path)
})

export const ledgerLayer = ResourceLedger.layer()

/** The flags that point the CLI at a fault server. */
export const openAiFlags = (server: FaultServer.FaultServer) => [
  "--embedder",
  "openai",
  "--base-url",
  server.url,
  "--model",
  "fault-model",
  "--dimensions",
  "64"
]

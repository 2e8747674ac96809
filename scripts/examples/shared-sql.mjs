// ragpipe inside a larger program: one embedded PostgreSQL database (PGlite),
// one `SqlClient`, shared by the ingest pipeline and by the program's own
// queries — which can read ragpipe's tables (`documents`, `chunks`) and join
// them with tables of its own. The layer graph is built once; the database
// is closed, then its temporary directory removed, when the program ends.
//
//   npm run build && node scripts/examples/shared-sql.mjs
import { SqlClient } from "@effect/sql"
import { Effect, Layer, Logger, LogLevel } from "effect"
import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import { fileURLToPath } from "node:url"
import { Database, Embedder, Ingest, ResourceLedger, VectorStore } from "ragpipe"

const corpus = fileURLToPath(new URL("../../test/fixtures/corpus", import.meta.url))

// The layer graph: the store over the SqlClient, and the SqlClient itself kept
// in the output (provideMerge) so our own code can use the very same client.
const appLayer = (dataDir) =>
  Layer.mergeAll(
    VectorStore.layer.pipe(Layer.provideMerge(Database.layerPglite({ dataDir }))),
    Embedder.layerHashing()
  ).pipe(Layer.provideMerge(ResourceLedger.layer())) // the database's resources are accounted in the ledger

const app = Effect.gen(function*() {
  const summary = yield* Ingest.ingestDirectory({ root: corpus })
  console.log(`ingested ${summary.files.ingested} documents, ${summary.chunks.written} chunks`)

  const sql = yield* SqlClient.SqlClient
  const docs = yield* sql`SELECT path, chunk_count FROM documents ORDER BY path LIMIT 3`
  for (const row of docs) console.log(`document ${row.path}: ${row.chunk_count} chunks`)

  // a table of our own, next to ragpipe's, joined with them
  yield* sql`CREATE TABLE bookmarks (path text PRIMARY KEY, note text NOT NULL)`
  yield* sql`INSERT INTO bookmarks ${sql.insert([
    { path: "ops/pelican-failover.md", note: "read before on-call" },
    { path: "guides/glossary.md", note: "for new hires" }
  ])}`
  const joined = yield* sql`
    SELECT b.path, b.note, count(c.id)::int AS chunks, sum(length(c.text))::int AS characters
    FROM bookmarks b JOIN documents d ON d.path = b.path JOIN chunks c ON c.document_id = d.id
    GROUP BY b.path, b.note ORDER BY b.path`
  for (const row of joined) {
    console.log(`bookmark ${row.path} (${row.note}): ${row.chunks} chunks, ${row.characters} characters`)
  }
})

// A temporary data directory, removed when the scope closes — after the
// layer (and so the database) has been released, since it was acquired first.
const tempDir = Effect.acquireRelease(
  Effect.sync(() => NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "ragpipe-shared-sql-"))),
  (dir) => Effect.sync(() => NodeFs.rmSync(dir, { recursive: true, force: true }))
)

let dataDir = ""
const program = Effect.gen(function*() {
  dataDir = yield* tempDir
  yield* app.pipe(Effect.provide(appLayer(dataDir)))
}).pipe(Effect.scoped)

await Effect.runPromise(program.pipe(Logger.withMinimumLogLevel(LogLevel.Warning)))
console.log(`data directory removed: ${!NodeFs.existsSync(dataDir)}`)

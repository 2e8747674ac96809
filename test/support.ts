/**
 * Shared helpers for the integration tests.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import Pg from "pg"
import * as NodeFs from "node:fs"
import * as NodeNet from "node:net"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import * as NodeTls from "node:tls"
import { fileURLToPath } from "node:url"
import * as Chunker from "../src/Chunker.js"
import * as Database from "../src/Database.js"
import type { SourceDocument } from "../src/Domain.js"
import type * as FaultServer from "../src/FaultServer.js"
import * as ResourceLedger from "../src/ResourceLedger.js"
import * as VectorStore from "../src/VectorStore.js"

export const repoRoot = NodePath.resolve(NodePath.dirname(fileURLToPath(import.meta.url)), "..")
export const corpusDir = NodePath.join(repoRoot, "test", "fixtures", "corpus")
/** The package's bin: the CLI bundled into one file (`npm test` builds it first). */
export const cliPath = NodePath.join(repoRoot, "dist", "cli", "ragpipe.js")

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

/** Connect a client to `url`, run `f`, disconnect. */
export const withClient = async <A>(url: string, f: (client: Pg.Client) => Promise<A>): Promise<A> => {
  const client = new Pg.Client({ connectionString: url })
  await client.connect()
  try {
    return await f(client)
  } finally {
    await client.end()
  }
}

/**
 * A database of its own on the server, named after `purpose`, with pgvector
 * in public — or created with `options.create` after its name (an encoding,
 * say) and prepared with `options.setup`'s statements instead; returns its
 * URL and a function dropping it.
 */
export const createDatabase = async (
  base: string,
  purpose: string,
  options: { readonly create?: string; readonly setup?: ReadonlyArray<string> } = {}
): Promise<{ name: string; url: string; drop: () => Promise<void> }> => {
  const name = `ragpipe_${purpose}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`
  await withClient(base, (c) => c.query(`CREATE DATABASE ${name} ${options.create ?? ""}`))
  const url = new URL(base)
  url.pathname = `/${name}`
  await withClient(url.toString(), async (c) => {
    for (const statement of options.setup ?? ["CREATE EXTENSION IF NOT EXISTS vector"]) await c.query(statement)
  })
  return {
    name,
    url: url.toString(),
    drop: () => withClient(base, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => {})
  }
}

/**
 * A database of its own on the server at `base` for the scope (see
 * {@link createDatabase}), dropped when the scope closes.
 */
export const scopedDatabase = (base: string, purpose: string) =>
  Effect.acquireRelease(
    Effect.promise(() => createDatabase(base, purpose)),
    (db) => Effect.promise(db.drop)
  )

/** A port on the loopback interface that nothing listens on (it was free a moment ago). */
export const closedPort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = NodeNet.createServer()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as NodeNet.AddressInfo
      server.close(() => resolve(port))
    })
  })

/** A loopback stand-in for a PostgreSQL server: see {@link fakePostgres}. */
export interface FakePostgres {
  readonly port: number
  /** connections accepted so far */
  readonly accepted: () => number
  /** connections the client has not closed yet */
  readonly open: () => number
  /** the simple queries received, in order */
  readonly queries: ReadonlyArray<string>
  /** the user each connection's startup message named (undefined: none), in order */
  readonly users: ReadonlyArray<string | undefined>
  /** connections on which TLS was accepted */
  readonly secured: () => number
}

const message = (type: string, body: Buffer): Buffer => {
  const head = Buffer.alloc(5)
  head.write(type, 0, "latin1")
  head.writeInt32BE(body.length + 4, 1)
  return Buffer.concat([head, body])
}

const int32 = (n: number) => {
  const b = Buffer.alloc(4)
  b.writeInt32BE(n)
  return b
}

const cstring = (text: string) => Buffer.from(`${text}\0`, "utf8")

const readyForQuery = message("Z", Buffer.from("I"))

/** The answer to a simple query: one int4 column, `rows` rows holding 1. */
const answer = (rows: number): Buffer => {
  // name, table oid, column number, type oid (int4), type size, type modifier, text format
  const field = Buffer.concat([
    cstring("x"),
    int32(0),
    Buffer.from([0, 0]),
    int32(23),
    Buffer.from([0, 4]),
    int32(-1),
    Buffer.from([0, 0])
  ])
  const rowDescription = message("T", Buffer.concat([Buffer.from([0, 1]), field]))
  const dataRow = message("D", Buffer.concat([Buffer.from([0, 1]), int32(1), Buffer.from("1")]))
  return Buffer.concat([
    rowDescription,
    ...Array.from({ length: rows }, () => dataRow),
    message("C", cstring(`SELECT ${rows}`)),
    readyForQuery
  ])
}

/**
 * A loopback server speaking just enough of PostgreSQL's wire protocol for a
 * client to connect and send simple queries, in one of two ways:
 * - `no-pgvector`: any user is let in without a password, and every query
 *   is answered with one row holding 1, except one that reads
 *   `pg_available_extensions`, answered with no row: a server without
 *   pgvector;
 * - `silent`: connections are accepted and never answered;
 * - `mariadb`: a connection is greeted as MariaDB greets one;
 * - `hang-up`: a connection is closed on the client's first message.
 * A client's request for TLS is refused, unless `tls` gives the key and
 * certificate to accept it with. Closed, with every connection, when the
 * scope closes.
 */
export const fakePostgres = (
  mode: "no-pgvector" | "silent" | "mariadb" | "hang-up",
  tls?: { readonly key: string; readonly cert: string }
): Effect.Effect<FakePostgres, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<{ readonly fake: FakePostgres; readonly server: NodeNet.Server; readonly sockets: Set<NodeNet.Socket> }>(
      (resume) => {
        const sockets = new Set<NodeNet.Socket>()
        const queries: Array<string> = []
        const users: Array<string | undefined> = []
        let accepted = 0
        let secured = 0
        const server = NodeNet.createServer((socket) => {
          accepted++
          sockets.add(socket)
          socket.on("close", () => sockets.delete(socket))
          socket.on("error", () => {})
          if (mode === "silent") {
            socket.resume() // read and drop what comes, so that the client's close is seen
            return
          }
          if (mode === "mariadb") {
            // a handshake packet: 3 bytes of length, a sequence number, protocol 10, the version
            const body = Buffer.concat([Buffer.from([10]), Buffer.from("5.5.5-10.11.19-MariaDB\0"), Buffer.alloc(70)])
            socket.write(Buffer.concat([Buffer.from([body.length, 0, 0, 0]), body]))
            socket.resume()
            return
          }
          if (mode === "hang-up") {
            socket.once("data", () => socket.destroy())
            return
          }
          let pending = Buffer.alloc(0)
          let started = false
          // the connection: the socket, or the TLS session over it once one is accepted
          let conn: NodeNet.Socket | NodeTls.TLSSocket = socket
          const onData = (data: Buffer) => {
            pending = Buffer.concat([pending, data])
            for (;;) {
              if (!started) {
                if (pending.length < 8) return
                const length = pending.readInt32BE(0)
                if (pending.length < length) return
                const code = pending.readInt32BE(4)
                const startup = pending.subarray(8, length)
                pending = pending.subarray(length)
                if (code === 80877103 && tls !== undefined) {
                  secured++
                  socket.write("S")
                  socket.off("data", onData)
                  conn = new NodeTls.TLSSocket(socket, { isServer: true, key: tls.key, cert: tls.cert })
                  conn.on("error", () => {})
                  conn.on("data", onData)
                  return
                }
                if (code === 80877103) {
                  socket.write("N") // no TLS
                  continue
                }
                started = true
                // the startup parameters: name and value, each ending with a NUL, then a NUL
                const words = startup.toString("utf8").split("\0")
                const userAt = words.findIndex((word, i) => i % 2 === 0 && word === "user")
                users.push(userAt >= 0 ? words[userAt + 1] : undefined)
                conn.write(Buffer.concat([
                  message("R", int32(0)),
                  message("K", Buffer.concat([int32(4242), int32(1)])),
                  readyForQuery
                ]))
                continue
              }
              if (pending.length < 5) return
              const type = String.fromCharCode(pending[0]!)
              const length = pending.readInt32BE(1)
              if (pending.length < length + 1) return
              const body = pending.subarray(5, length + 1)
              pending = pending.subarray(length + 1)
              if (type === "X") {
                conn.end()
                return
              }
              if (type === "Q") {
                const query = body.subarray(0, body.length - 1).toString("utf8")
                queries.push(query)
                conn.write(answer(query.includes("pg_available_extensions") ? 0 : 1))
              } else if (type === "S") {
                conn.write(Buffer.concat([
                  message(
                    "E",
                    Buffer.concat([
                      cstring("SERROR"),
                      cstring("C0A000"),
                      cstring("Mfake server: simple queries only"),
                      Buffer.from([0])
                    ])
                  ),
                  readyForQuery
                ]))
              }
            }
          }
          socket.on("data", onData)
        })
        server.listen(0, "127.0.0.1", () => {
          const { port } = server.address() as NodeNet.AddressInfo
          resume(Effect.succeed({
            fake: { port, accepted: () => accepted, open: () => sockets.size, queries, users, secured: () => secured },
            server,
            sockets
          }))
        })
      }
    ),
    ({ server, sockets }) =>
      Effect.async<void>((resume) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map(({ fake }) => fake))

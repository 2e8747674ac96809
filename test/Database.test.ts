/**
 * The PostgreSQL server connection: what a user sees when it cannot be
 * made (a loopback stand-in plays a server without pgvector and one that
 * never answers), and, on the real server, the pool's bound and the
 * cancellation of an interrupted statement. The server tests run when
 * RAGPIPE_TEST_DATABASE_URL is set.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import { fileURLToPath } from "node:url"
import Pg from "pg"
import * as Database from "../src/Database.js"
import { StoreError } from "../src/Errors.js"
import * as ResourceLedger from "../src/ResourceLedger.js"
import * as VectorStore from "../src/VectorStore.js"
import { closedPort, fakePostgres, scopedDatabase, testDatabaseUrl } from "./support.js"

const password = "pw-Zq81-never-shown"

/**
 * Build the server layer for `url` in a scope of its own and close it; the
 * `StoreError` it failed with, and the ledger's count of resources left
 * open.
 */
const openFailure = (url: string, options: Partial<Database.ServerOptions> = {}) =>
  Effect.gen(function*() {
    const ledger = yield* ResourceLedger.ResourceLedger
    const scope = yield* Scope.make()
    const exit = yield* Layer.buildWithScope(
      Database.layerServer({ url: Redacted.make(url), connectTimeout: Duration.seconds(5), ...options }),
      scope
    ).pipe(Effect.exit)
    yield* Scope.close(scope, exit)
    assert.isTrue(Exit.isFailure(exit), `opening ${url} succeeded`)
    const error = Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined
    assert.instanceOf(error, StoreError)
    assert.strictEqual(error!.reason, "open")
    assert.notInclude(error!.message, password)
    return { message: error!.message, open: (yield* ledger.snapshot).total.open }
  }).pipe(Effect.provide(ResourceLedger.layer()))

describe("Database.checkUrl and describeUrl", () => {
  it("accept postgres:// URLs (socket directories too), describe them without the password, say what is wrong with the rest", () => {
    const cases: ReadonlyArray<readonly [string, string]> = [
      [`postgres://alice:${password}@db.example:6543/docs`, "alice@db.example:6543/docs"],
      [`postgresql://alice:${password}@127.0.0.1/docs`, "alice@127.0.0.1:5432/docs"],
      [`POSTGRES://alice:${password}@localhost:5432`, "alice@localhost:5432"],
      [`postgres://alice:${password}@/docs?host=/var/run/postgresql`, "alice@/var/run/postgresql:5432/docs"],
      [`postgres://alice:${password}@%2Fvar%2Frun%2Fpostgresql/docs`, "alice@/var/run/postgresql:5432/docs"],
      ["postgres:///docs", "localhost:5432/docs"],
      [`postgres://al%40ice:${password}@h/d%C3%BCcs`, "al@ice@h:5432/dücs"]
    ]
    for (const [url, described] of cases) {
      assert.isUndefined(Database.checkUrl(Redacted.make(url)), url)
      assert.strictEqual(Database.describeUrl(Redacted.make(url)), described)
    }
    const bad: ReadonlyArray<readonly [string, RegExp]> = [
      [`alice:${password}@db.example/docs`, /is not a URL; expected postgres:\/\/user:password@host:port\/database/],
      ["not a url", /is not a URL/],
      [`mysql://alice:${password}@db.example/docs`, /is a mysql:\/\/ URL, not a PostgreSQL one/],
      [`https://alice:${password}@db.example/docs`, /is a https:\/\/ URL/],
      [`postgres://alice:${password}@db.example:port/docs`, /cannot be parsed: check its host and port/],
      // special characters of a password not percent-encoded
      [`postgres://alice:${password}/x@db.example/docs`, /cannot be parsed: .* percent-encoded \(# as %23, @ as %40/],
      [`postgres://alice:${password}#x@db.example/docs`, /cannot be parsed: .* percent-encoded \(# as %23, @ as %40/],
      [`postgres://alice:${password}@x#y@db.example/docs`, /has a '#' in it, which ends the URL there: write special/]
    ]
    for (const [url, expected] of bad) {
      const problem = Database.checkUrl(Redacted.make(url))
      assert.match(problem ?? "", expected, url)
      assert.match(problem!, /--database-url \/ DATABASE_URL/)
      assert.notInclude(problem!, password)
      assert.strictEqual(Database.describeUrl(Redacted.make(url)), "(unparsable URL)")
    }
  })

  it("check the TLS parameters: a known sslmode, an authority for verify-ca, files that can be read", () => {
    const base = `postgres://alice:${password}@db.example/docs`
    for (const query of ["sslmode=require", "sslmode=prefer", "sslmode=verify-full", "sslmode=disable"]) {
      assert.isUndefined(Database.checkUrl(Redacted.make(`${base}?${query}`)), query)
    }
    const readable = fileURLToPath(import.meta.url)
    assert.isUndefined(Database.checkUrl(Redacted.make(`${base}?sslmode=verify-ca&sslrootcert=${readable}`)))
    const bad: ReadonlyArray<readonly [string, string]> = [
      ["sslmode=required", `the database URL's sslmode is "required"; use one of disable, allow, prefer, require, `],
      ["sslmode=verify-ca", "the database URL's sslmode=verify-ca needs sslrootcert=/path/to/ca.pem"],
      [
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        "sslrootcert names /nonexistent/ca.pem, which cannot be read (ENOENT)"
      ],
      ["sslcert=/nonexistent/client.pem", "sslcert names /nonexistent/client.pem, which cannot be read (ENOENT)"]
    ]
    for (const [query, expected] of bad) {
      const problem = Database.checkUrl(Redacted.make(`${base}?${query}`))
      assert.include(problem ?? "", expected, query)
      assert.notInclude(problem!, password)
      // still described: the URL itself is well formed
      assert.strictEqual(Database.describeUrl(Redacted.make(`${base}?${query}`)), "alice@db.example:5432/docs")
    }
  })
})

describe("Database: an embedded database that does not open", () => {
  it("on a nearly full disk: says how much is free and to free some, not to move the store away", () => {
    const cause = new Error("PGlite failed to initialize properly")
    assert.strictEqual(
      Database.pgliteOpenFailure("/data/db", cause, 4.5 * 1024 * 1024),
      "cannot open the embedded database in /data/db: the disk that holds it has only 4.5 MiB free " +
        "(PGlite failed to initialize properly); free some space and run again — the store is kept as it is"
    )
    const damaged = "cannot open the embedded database in /data/db: PGlite failed to initialize properly; " +
      "if the directory was written by another program or is damaged, move it away and run again"
    assert.strictEqual(Database.pgliteOpenFailure("/data/db", cause, 20 * 1024 ** 3), damaged)
    // the free space of the disk that holds the directory, or of its closest existing parent
    const free = NodeFs.statfsSync(NodeOs.tmpdir())
    const roomy = free.bavail * free.bsize >= 64 * 1024 * 1024
    for (const dir of [NodeOs.tmpdir(), NodePath.join(NodeOs.tmpdir(), "no", "such", "dir")]) {
      const message = Database.pgliteOpenFailure(dir, cause)
      if (roomy) assert.notInclude(message, "MiB free", message)
      else assert.include(message, "MiB free", message)
    }
  })
})

describe("Database.layerServer: a server it cannot use", () => {
  it.live("a URL that is not a PostgreSQL one fails before any connection is tried", () =>
    Effect.gen(function*() {
      const { message, open } = yield* openFailure(`mysql://alice:${password}@127.0.0.1:3306/docs`)
      assert.match(message, /is a mysql:\/\/ URL, not a PostgreSQL one/)
      assert.strictEqual(open, 0)
    }))

  it.live("nothing listening: says it cannot reach the server, and where", () =>
    Effect.gen(function*() {
      const port = yield* Effect.promise(closedPort)
      const { message, open } = yield* openFailure(`postgres://alice:${password}@127.0.0.1:${port}/docs`)
      assert.strictEqual(
        message,
        `cannot reach the PostgreSQL server at alice@127.0.0.1:${port}/docs (ECONNREFUSED); ` +
          "check that it is running and that --database-url / DATABASE_URL is right"
      )
      assert.strictEqual(open, 0)
    }))

  it.scopedLive("something else than PostgreSQL at the address: says so, and to check the host and port", () =>
    Effect.gen(function*() {
      const answers = [
        ["mariadb", /\((Received unexpected \w+ message from backend\.?|received invalid response: \w+)\)/],
        ["hang-up", /\((Connection terminated unexpectedly|ECONNRESET)\)/]
      ] as const
      for (const [mode, why] of answers) {
        const fake = yield* fakePostgres(mode)
        const { message, open } = yield* openFailure(`postgres://alice:${password}@127.0.0.1:${fake.port}/docs`)
        assert.match(
          message,
          new RegExp(`^the server at alice@127\\.0\\.0\\.1:${fake.port}/docs did not answer as a PostgreSQL server does `)
        )
        assert.match(message, why, message)
        assert.match(message, /; check the host and port in --database-url \/ DATABASE_URL$/)
        assert.notInclude(message, password)
        assert.strictEqual(open, 0)
      }
    }))

  it.scopedLive("a server that never answers: fails after the connect timeout, its connection closed", () =>
    Effect.gen(function*() {
      const fake = yield* fakePostgres("silent")
      const { message, open } = yield* openFailure(`postgres://alice:${password}@127.0.0.1:${fake.port}/docs`, {
        connectTimeout: Duration.millis(300)
      })
      assert.match(message, new RegExp(`^cannot reach the PostgreSQL server at alice@127\\.0\\.0\\.1:${fake.port}/docs`))
      assert.match(message, /did not answer within 300 ms/)
      assert.strictEqual(fake.accepted(), 1)
      assert.strictEqual(open, 0)
      // the client gave up on the socket
      for (let i = 0; i < 100 && fake.open() > 0; i++) yield* Effect.sleep("10 millis")
      assert.strictEqual(fake.open(), 0)
    }))

  it.scopedLive("a URL without a user connects as PGUSER, else as the system's user, as psql does", () =>
    Effect.gen(function*() {
      const fake = yield* fakePostgres("no-pgvector")
      const saved = process.env["PGUSER"]
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          if (saved === undefined) delete process.env["PGUSER"]
          else process.env["PGUSER"] = saved
        })
      )
      const system = NodeOs.userInfo().username
      delete process.env["PGUSER"]
      // each open connects once: the server lacks pgvector, so it fails after its first query
      yield* openFailure(`postgres://127.0.0.1:${fake.port}/docs`)
      yield* openFailure(`postgres://127.0.0.1:${fake.port}/docs?`)
      yield* openFailure(`postgres://127.0.0.1:${fake.port}/docs?application_name=x`)
      process.env["PGUSER"] = " "
      yield* openFailure(`postgres://127.0.0.1:${fake.port}/docs`)
      process.env["PGUSER"] = "carol"
      yield* openFailure(`postgres://127.0.0.1:${fake.port}/docs`)
      // named in the URL: that user, whatever PGUSER says
      yield* openFailure(`postgres://bob@127.0.0.1:${fake.port}/docs`)
      yield* openFailure(`postgres://127.0.0.1:${fake.port}/docs?user=dave`)
      assert.deepStrictEqual(fake.users, [system, system, system, system, "carol", "bob", "dave"])
    }))

  it.scopedLive("a server without pgvector: says so and how to install it, and closes its connections", () =>
    Effect.gen(function*() {
      const fake = yield* fakePostgres("no-pgvector")
      const { message, open } = yield* openFailure(`postgres://alice:${password}@127.0.0.1:${fake.port}/docs`)
      assert.strictEqual(
        message,
        `the PostgreSQL server at alice@127.0.0.1:${fake.port}/docs has no pgvector extension; install pgvector ` +
          "on the server (on Debian, scripts/setup-postgres builds and installs it), then run again"
      )
      assert.isTrue(fake.queries.some((q) => q.includes("pg_available_extensions")), fake.queries.join("\n"))
      assert.strictEqual(open, 0)
      for (let i = 0; i < 100 && fake.open() > 0; i++) yield* Effect.sleep("10 millis")
      assert.strictEqual(fake.open(), 0)
    }))
})

const server = testDatabaseUrl === undefined || testDatabaseUrl === "" ? undefined : testDatabaseUrl

/** The URL of `base` with another user, password or database. */
const variant = (base: string, change: { user?: string; password?: string; database?: string }) => {
  const url = new URL(base)
  if (change.user !== undefined) url.username = change.user
  if (change.password !== undefined) url.password = change.password
  if (change.database !== undefined) url.pathname = `/${change.database}`
  return url.toString()
}

/** A plain client beside the pool, to watch what the pool's connections do. */
const monitor = Effect.acquireRelease(
  Effect.promise(async () => {
    const client = new Pg.Client({ connectionString: server! })
    await client.connect()
    return client
  }),
  (client) => Effect.promise(() => client.end())
)

/** The `ragpipe` backends connected to `database`, and how many of them run a statement matching `like`. */
const backends = (client: Pg.Client, database: string, like = "%") =>
  Effect.promise(() =>
    client.query<{ connected: number; running: number }>(
      `SELECT count(*)::int AS connected,
              count(*) FILTER (WHERE state = 'active' AND query LIKE $2)::int AS running
       FROM pg_stat_activity WHERE application_name = 'ragpipe' AND datname = $1`,
      [database, like]
    )
  ).pipe(Effect.map((r) => r.rows[0]!))

describe.skipIf(server === undefined)("Database.layerServer on the PostgreSQL server (runs when RAGPIPE_TEST_DATABASE_URL is set)", () => {
  it.live("a user the server does not know: says the credentials were refused, never the password", () =>
    Effect.gen(function*() {
      const url = variant(server!, { user: "ragpipe_no_such_user", password })
      const { message, open } = yield* openFailure(url)
      assert.match(message, /^the PostgreSQL server at ragpipe_no_such_user@.+ rejected the credentials /)
      assert.include(
        message,
        `(role "ragpipe_no_such_user" does not exist); check the user and password in --database-url / DATABASE_URL`
      )
      assert.strictEqual(open, 0)
    }))

  it.live("a database that does not exist: says which, and how to create it", () =>
    Effect.gen(function*() {
      const url = variant(server!, { password, database: "ragpipe_no_such_database" })
      const { message, open } = yield* openFailure(url)
      assert.match(message, /^the database in .+\/ragpipe_no_such_database does not exist /)
      assert.include(
        message,
        `(database "ragpipe_no_such_database" does not exist); create it (createdb) or fix --database-url`
      )
      assert.strictEqual(open, 0)
    }))

  it.scopedLive("the pool never holds more connections than its size, and closes them all with its scope", () =>
    Effect.gen(function*() {
      const db = yield* scopedDatabase(server!, "pool")
      const watch = yield* monitor
      const poolSize = 3
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(
        Database.layerServer({ url: Redacted.make(db.url), poolSize }).pipe(Layer.provide(ResourceLedger.layer())),
        scope
      )
      const sql = yield* Effect.provide(SqlClient.SqlClient, context)
      const pool = yield* Effect.provide(Database.ServerPool, context)
      // twelve statements at once, each a while on the server
      const work = yield* Effect.forEach(
        Array.from({ length: 12 }, (_, i) => i),
        (i) => sql`SELECT pg_sleep(0.15), ${i}::int AS i`,
        { concurrency: "unbounded", discard: true }
      ).pipe(Effect.fork)
      let peakConnected = 0
      let peakRunning = 0
      let peakPool = 0
      while (work.unsafePoll() === null) {
        const seen = yield* backends(watch, db.name, "SELECT pg_sleep%")
        peakConnected = Math.max(peakConnected, seen.connected)
        peakRunning = Math.max(peakRunning, seen.running)
        peakPool = Math.max(peakPool, pool.totalCount)
        yield* Effect.sleep("10 millis")
      }
      yield* Fiber.join(work)
      assert.strictEqual(peakPool, poolSize)
      assert.strictEqual(peakConnected, poolSize)
      assert.strictEqual(peakRunning, poolSize)
      yield* Scope.close(scope, Exit.void)
      let left = yield* backends(watch, db.name)
      for (let i = 0; i < 100 && left.connected > 0; i++) {
        yield* Effect.sleep("10 millis")
        left = yield* backends(watch, db.name)
      }
      assert.strictEqual(left.connected, 0)
    }))

  it.scopedLive("server settings in the URL's options are added to the pool's own, not put in their place", () =>
    Effect.gen(function*() {
      const db = yield* scopedDatabase(server!, "options")
      /** work_mem and client_connection_check_interval on a connection of a pool opened with `url` */
      const settings = (url: string) =>
        Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(
            Database.layerServer({ url: Redacted.make(url) }).pipe(Layer.provide(ResourceLedger.layer()))
          )
          const sql = yield* Effect.provide(SqlClient.SqlClient, context)
          const rows = yield* sql<{ workMem: string; check: string }>`
            SELECT current_setting('work_mem') AS "workMem",
                   current_setting('client_connection_check_interval') AS "check"`
          return rows[0]
        }))
      const withQuery = (query: string) => `${db.url}${db.url.includes("?") ? "&" : "?"}${query}`
      // the pool's own: the server notices a vanished client within 250 ms
      assert.strictEqual((yield* settings(db.url))?.check, "250ms")
      assert.deepStrictEqual(yield* settings(withQuery("options=-c%20work_mem%3D8MB")), { workMem: "8MB", check: "250ms" })
      // among other parameters; a setting the URL names itself wins
      const named = "options=-c%20work_mem%3D9MB%20-c%20client_connection_check_interval%3D1000"
      assert.deepStrictEqual(
        yield* settings(withQuery(`application_name=x&${named}&connect_timeout=5`)),
        { workMem: "9MB", check: "1s" }
      )
    }))

  it.scopedLive("an idle connection is closed after the idle timeout; the next statement opens another", () =>
    Effect.gen(function*() {
      const db = yield* scopedDatabase(server!, "idle")
      const watch = yield* monitor
      const context = yield* Layer.build(
        Database.layerServer({ url: Redacted.make(db.url), idleTimeout: Duration.millis(200) }).pipe(
          Layer.provide(ResourceLedger.layer())
        )
      )
      const sql = yield* Effect.provide(SqlClient.SqlClient, context)
      yield* sql`SELECT 1`
      assert.strictEqual((yield* backends(watch, db.name)).connected, 1)
      let left = 1
      for (let i = 0; i < 200 && left > 0; i++) {
        yield* Effect.sleep("10 millis")
        left = (yield* backends(watch, db.name)).connected
      }
      assert.strictEqual(left, 0, "the idle connection stayed open")
      assert.deepStrictEqual((yield* sql<{ one: number }>`SELECT 1 AS one`).map((r) => r.one), [1])
    }))

  it.scopedLive("a statement whose fiber is interrupted is cancelled on the server, and the pool goes on", () =>
    Effect.gen(function*() {
      const db = yield* scopedDatabase(server!, "cancel")
      const watch = yield* monitor
      const context = yield* Layer.build(
        Database.layerServer({ url: Redacted.make(db.url), poolSize: 1 }).pipe(Layer.provide(ResourceLedger.layer()))
      )
      const sql = yield* Effect.provide(SqlClient.SqlClient, context)
      const sleeper = yield* Effect.fork(sql`SELECT pg_sleep(30)`)
      let seen = yield* backends(watch, db.name, "SELECT pg_sleep(30)")
      for (let i = 0; i < 500 && seen.running === 0; i++) {
        yield* Effect.sleep("10 millis")
        seen = yield* backends(watch, db.name, "SELECT pg_sleep(30)")
      }
      assert.strictEqual(seen.running, 1, "the statement never started")
      const interruptedAt = performance.now()
      yield* Fiber.interrupt(sleeper)
      for (let i = 0; i < 200 && seen.running > 0; i++) {
        yield* Effect.sleep("10 millis")
        seen = yield* backends(watch, db.name, "SELECT pg_sleep(30)")
      }
      assert.strictEqual(seen.running, 0, "the statement still runs on the server")
      assert.isBelow(performance.now() - interruptedAt, 2000)
      // its connection is back in the pool of one, and usable
      const rows = yield* sql<{ one: number }>`SELECT 1 AS one`
      assert.deepStrictEqual(rows.map((r) => r.one), [1])
    }))

  it.scopedLive("a statement past the statement timeout is ended by the server, and the error says what to raise", () =>
    Effect.gen(function*() {
      const db = yield* scopedDatabase(server!, "timeout")
      const context = yield* Layer.build(
        VectorStore.layer.pipe(
          Layer.provideMerge(Database.layerServer({ url: Redacted.make(db.url), statementTimeout: Duration.millis(200) })),
          Layer.provide(ResourceLedger.layer())
        )
      )
      const sql = yield* Effect.provide(SqlClient.SqlClient, context)
      const store = yield* Effect.provide(VectorStore.VectorStore, context)
      const error = yield* Effect.flip(sql`SELECT pg_sleep(20)`)
      const cause = error.cause as { code?: string; message?: string }
      assert.strictEqual(cause.code, "57014")
      assert.match(cause.message ?? "", /canceling statement due to statement timeout/)
      // a store statement made slow on the server: every row listed seen waits half a second
      yield* sql.unsafe(`CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql
        AS $$ BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$`)
      yield* sql.unsafe("CREATE TRIGGER slow_row BEFORE INSERT ON ragpipe_seen FOR EACH ROW EXECUTE FUNCTION slow_row()")
      const refused = yield* Effect.flip(store.markSeen("1", ["a.txt"]))
      assert.instanceOf(refused, StoreError)
      assert.match(refused.message, /^marking unchanged documents failed: .*canceling statement due to statement timeout/)
      assert.isTrue(
        refused.message.endsWith("; raise --db-statement-timeout (RAGPIPE_DB_STATEMENT_TIMEOUT) or use 0 to disable it"),
        refused.message
      )
    }))
})

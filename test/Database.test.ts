/**
 * The PostgreSQL server connection, on the real server: the cancellation
 * of an interrupted statement. Runs when RAGPIPE_TEST_DATABASE_URL is set.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import Pg from "pg"
import * as Database from "../src/Database.js"
import * as ResourceLedger from "../src/ResourceLedger.js"
import { createDatabase, testDatabaseUrl } from "./support.js"

const server = testDatabaseUrl === undefined || testDatabaseUrl === "" ? undefined : testDatabaseUrl

/** A database of its own for the scope, dropped when it closes. */
const scopedDatabase = (purpose: string) =>
  Effect.acquireRelease(
    Effect.promise(() => createDatabase(server!, purpose)),
    (db) => Effect.promise(db.drop)
  )

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
  it.scopedLive("a statement whose fiber is interrupted is cancelled on the server, and the pool goes on", () =>
    Effect.gen(function*() {
      const db = yield* scopedDatabase("cancel")
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
})

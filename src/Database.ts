/**
 * SqlClient layers. The embedded default is PGlite (PostgreSQL compiled to
 * WebAssembly) with pgvector, whose data lives in a directory; every
 * resource it needs — the directory lock, the PGlite instance and the pg
 * pool in front of it — is acquired in the layer's scope and released in
 * reverse order.
 *
 * @since 0.1.0
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import * as PgClient from "@effect/sql-pg/PgClient"
import type { PGlite } from "@electric-sql/pglite"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import Pg from "pg"
import { StoreError } from "./Errors.js"
import { cancelOutsidePool } from "./internal/pgCancel.js"
import { ResourceLedger } from "./ResourceLedger.js"

/**
 * Where the embedded store lives by default: `.ragpipe/` in the current
 * directory.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultDataDir = ".ragpipe"

/**
 * Where the embedded database keeps its data, and whether it may create a
 * new store there.
 *
 * @since 0.1.0
 * @category models
 */
export interface PgliteOptions {
  /** directory holding the embedded database (created when missing) */
  readonly dataDir: string
  /**
   * fail (`StoreError` of reason `missing`) instead of creating a new
   * database when there is none (default false)
   */
  readonly mustExist?: boolean
}

const causeMessage = (cause: unknown): string =>
  cause instanceof Error ? cause.message : typeof cause === "string" ? cause : "unknown error"

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

/**
 * `probe` of `path`, or of the closest directory above it for which it does
 * not throw (the first that exists); undefined when it throws for all.
 */
const atClosest = <A>(path: string, probe: (existing: string) => A): A | undefined => {
  for (let p = path; ; p = NodePath.dirname(p)) {
    try {
      return probe(p)
    } catch {
      if (NodePath.dirname(p) === p) return undefined
    }
  }
}

/** `path`, or the part of it on the way, that exists and is not a directory; undefined when none is. */
const notADirectory = (path: string): string | undefined =>
  atClosest(path, (p) => NodeFs.statSync(p).isDirectory() ? undefined : p)

/**
 * `mkdir -p`, a level at a time. Node's recursive `mkdirSync` spins for
 * ever where a file system refuses a directory with ENOENT although its
 * parent exists (`--data-dir /proc/x` kept a core busy until killed).
 */
const makeDirectory = (path: string): void => {
  try {
    NodeFs.mkdirSync(path)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === "EEXIST" && NodeFs.statSync(path).isDirectory()) return
    const parent = NodePath.dirname(path)
    if (code !== "ENOENT" || parent === path) throw error
    makeDirectory(parent)
    NodeFs.mkdirSync(path)
  }
}

/**
 * Take an exclusive lock on a data directory, so that two processes never
 * open the same embedded database. A lock left by a process that no longer
 * runs is taken over.
 *
 * @internal
 */
const lockDataDir = (dataDir: string) => {
  const lockPath = NodePath.join(dataDir, "ragpipe.lock")
  const take = Effect.try({
    try: () => {
      // a lock file naming this process is one this process holds — unless
      // it is not in `heldHere`: then a dead process with the same pid left it
      if (heldHere.has(lockPath)) {
        throw new StoreError({
          reason: "locked",
          message: `the data directory ${dataDir} is already open in this process; ` +
            `share one store layer instead of opening the directory twice`
        })
      }
      makeDirectory(dataDir)
      for (let attempt = 0; attempt < 2; attempt++) {
        try {
          NodeFs.writeFileSync(lockPath, String(process.pid), { flag: "wx" })
          heldHere.add(lockPath)
          return lockPath
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error
          const holder = Number.parseInt(NodeFs.readFileSync(lockPath, "utf8"), 10)
          if (Number.isInteger(holder) && holder !== process.pid && isAlive(holder)) {
            throw new StoreError({
              reason: "locked",
              message: `the data directory ${dataDir} is in use by another ragpipe process (pid ${holder}); ` +
                `wait for it to finish, or use another --data-dir`
            })
          }
          NodeFs.rmSync(lockPath, { force: true })
        }
      }
      throw new Error(`could not create ${lockPath}`)
    },
    catch: (error) =>
      error instanceof StoreError ? error : new StoreError({
        reason: "open",
        message: Option.match(Option.fromNullable(notADirectory(dataDir)), {
          onNone: () => `cannot use the data directory ${dataDir}: ${causeMessage(error)}`,
          onSome: (file) =>
            `cannot use the data directory ${dataDir}: ${file} is a file, not a directory; ` +
            `point --data-dir (RAGPIPE_DATA_DIR) at a directory (a new one is created)`
        })
      })
  })
  return Effect.flatMap(ResourceLedger, (ledger) =>
    ledger.acquireRelease(
      "lock",
      take,
      (path) =>
        Effect.sync(() => {
          heldHere.delete(path)
          NodeFs.rmSync(path, { force: true })
        }),
      lockPath
    ))
}

/** The lock files of the data directories this process has open. */
const heldHere = new Set<string>()

/** The modules of the embedded database. */
interface PgliteModules {
  readonly PGlite: typeof import("@electric-sql/pglite").PGlite
  readonly vector: typeof import("@electric-sql/pglite-pgvector").vector
  readonly createPgConfig: typeof import("@electric-sql/pglite/node-postgres").createPgConfig
}

let pgliteModules: Promise<PgliteModules> | undefined

/**
 * PGlite and its pgvector extension, loaded (once) when an embedded store
 * is first opened: a run against a server does not load them.
 */
const loadPglite = (): Promise<PgliteModules> =>
  pgliteModules ??= Promise.all([
    import("@electric-sql/pglite"),
    import("@electric-sql/pglite-pgvector"),
    import("@electric-sql/pglite/node-postgres")
  ]).then(([pglite, pgvector, nodePostgres]) => ({
    PGlite: pglite.PGlite,
    vector: pgvector.vector,
    createPgConfig: nodePostgres.createPgConfig
  }))

/**
 * Below this much free space, an embedded database that fails to start is
 * taken to lack room: it writes to its directory as it starts (a database
 * whose disk filled up during a run could not start with 4.4 MiB left).
 */
const pgliteStartBytes = 64 * 1024 * 1024

/**
 * Why an embedded database in `dataDir` did not open, and what to do.
 *
 * @internal
 */
export const pgliteOpenFailure = (dataDir: string, cause: unknown, free = freeBytes(dataDir)): string =>
  free !== undefined && free < pgliteStartBytes
    ? `cannot open the embedded database in ${dataDir}: the disk that holds it has only ` +
      `${(free / 1024 / 1024).toFixed(1)} MiB free (${causeMessage(cause)}); free some space and run ` +
      `again — the store is kept as it is`
    : `cannot open the embedded database in ${dataDir}: ${causeMessage(cause)}; ` +
      `if the directory was written by another program or is damaged, move it away and run again`

/** Free space, in bytes, for this user on the file system that holds `path` (or its closest existing parent). */
const freeBytes = (path: string): number | undefined =>
  atClosest(path, (dir) => {
    const stats = NodeFs.statfsSync(dir)
    return stats.bavail * stats.bsize
  })

/**
 * Open PGlite with pgvector in `dataDir` (scoped: closed when the scope
 * closes). The first open of a new directory initialises the database.
 *
 * @since 0.1.0
 * @category constructors
 */
export const openPglite = (options: PgliteOptions) =>
  Effect.gen(function*() {
    const ledger = yield* ResourceLedger
    const dataDir = NodePath.resolve(options.dataDir)
    if (options.mustExist === true && !NodeFs.existsSync(NodePath.join(dataDir, "pgdata", "PG_VERSION"))) {
      return yield* new StoreError({
        reason: "missing",
        message: `there is no ragpipe store in ${dataDir}; run \`ragpipe ingest <dir>\` first, ` +
          `or point --data-dir (RAGPIPE_DATA_DIR) at an existing store`
      })
    }
    yield* lockDataDir(dataDir)
    return yield* ledger.acquireRelease(
      "pglite",
      Effect.tryPromise({
        try: () =>
          loadPglite().then(({ PGlite, vector }) =>
            PGlite.create(NodePath.join(dataDir, "pgdata"), { extensions: { vector } })
          ),
        catch: (cause) => new StoreError({ reason: "open", message: pgliteOpenFailure(dataDir, cause) })
      }),
      (pglite) => Effect.promise(() => pglite.close()).pipe(Effect.orDie),
      dataDir
    )
  })

/**
 * What the embedded database offers beyond its `SqlClient`: a binary `COPY`
 * from memory (`COPY ... FROM '/dev/blob'`), run in the session of the
 * `SqlClient` — inside the transaction it has open. The PostgreSQL store
 * writes chunks with it, as it writes them with `COPY ... FROM STDIN` on a
 * server ({@link ServerPool}).
 *
 * @since 0.1.0
 * @category tags
 */
export class EmbeddedCopy extends Context.Tag("ragpipe/EmbeddedCopy")<EmbeddedCopy, {
  /** run `statement` (a `COPY ... FROM '/dev/blob'`) over `data` */
  readonly copyFrom: (statement: string, data: Uint8Array) => Effect.Effect<void, unknown>
}>() {}

/**
 * A `SqlClient` (and `PgClient`) over an embedded PGlite database with
 * pgvector. Same SQL, same driver (node-postgres) as a real server; binary
 * `COPY` through {@link EmbeddedCopy}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerPglite = (
  options: PgliteOptions
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient | EmbeddedCopy, StoreError, ResourceLedger> =>
  Layer.scopedContext(
    Effect.gen(function*() {
      const ledger = yield* ResourceLedger
      const pglite: PGlite = yield* openPglite(options)
      const { createPgConfig } = yield* Effect.promise(loadPglite)
      const client = yield* PgClient.fromPool({
        acquire: ledger.acquireRelease(
          "pg-pool",
          Effect.sync(() => new Pg.Pool({ ...createPgConfig(pglite), max: 1 })),
          (pool) => Effect.promise(() => pool.end()),
          "pglite"
        ),
        applicationName: "ragpipe"
      }).pipe(
        Effect.mapError((error) =>
          new StoreError({ reason: "open", message: `cannot connect to the embedded database: ${error.message}` })
        )
      )
      const copy: EmbeddedCopy["Type"] = {
        copyFrom: (statement, data) =>
          Effect.tryPromise({
            try: () => pglite.query(statement, [], { blob: new Blob([data]) }),
            catch: (cause) => cause
          }).pipe(Effect.asVoid)
      }
      return Context.make(PgClient.PgClient, client).pipe(
        Context.add(SqlClient.SqlClient, client),
        Context.add(EmbeddedCopy, copy)
      )
    })
  ).pipe(Layer.provide(Reactivity.layer))

/**
 * Settings of a PostgreSQL server connection pool.
 *
 * @since 0.1.0
 * @category models
 */
export interface ServerOptions {
  /** `postgres://user:password@host:port/database`; redacted everywhere it could be shown */
  readonly url: Redacted.Redacted<string>
  /** most connections open at once (default 4) */
  readonly poolSize?: number
  /** how long to wait for a connection (default 10 s) */
  readonly connectTimeout?: Duration.DurationInput
  /** an idle connection is closed after this long (default 30 s) */
  readonly idleTimeout?: Duration.DurationInput
  /** the server cancels a statement running longer than this (default 10 minutes; 0 disables) */
  readonly statementTimeout?: Duration.DurationInput
  /**
   * schema to create and use ahead of `public`: a store of its own beside
   * others in the same database (the store is looked for there only)
   */
  readonly schema?: string
}

/** What a connection URL should look like, for messages. */
const urlForm = "postgres://user:password@host:port/database"

/**
 * A connection URL parsed as `pg` reads it, or why it cannot be: the scheme
 * must be `postgres` or `postgresql`; the host may be left out (`pg`
 * then connects to localhost, or to the socket directory a `host`
 * parameter names) or be a socket directory written with `%2F`.
 */
const parseUrl = (url: Redacted.Redacted<string>): URL | string => {
  const text = Redacted.value(url).trim()
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text)
  if (scheme === null) return `the database URL (--database-url / DATABASE_URL) is not a URL; expected ${urlForm}`
  const name = scheme[1]!.toLowerCase()
  if (name !== "postgres" && name !== "postgresql") {
    return `the database URL (--database-url / DATABASE_URL) is a ${name}:// URL, not a PostgreSQL one; expected ${urlForm}`
  }
  // WHATWG URLs need a host where pg does not (postgres://user@/db?host=/run/postgresql)
  const withHost = text.replace(/^([^:]+:\/\/(?:[^@/?#]*@)?)(?=[/?#]|$)/, "$1localhost")
  let parsed: URL
  try {
    parsed = new URL(withHost)
  } catch {
    return `the database URL (--database-url / DATABASE_URL) cannot be parsed: check its host and port (a number) ` +
      `and ${encodingHint}; expected ${urlForm}`
  }
  // a '#' starts a fragment, which a connection URL never has: it was meant as part of a password
  if (parsed.hash !== "") {
    return `the database URL (--database-url / DATABASE_URL) has a '#' in it, which ends the URL there: ` +
      encodingHint
  }
  return parsed
}

const encodingHint = "write special characters in the user name and password percent-encoded " +
  "(# as %23, @ as %40, / as %2F, ? as %3F, : as %3A)"

const sslModes = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full", "no-verify"]

/** What is wrong with the URL's TLS parameters: an unknown sslmode, a file that cannot be read. */
const tlsProblem = (params: URLSearchParams): string | undefined => {
  const mode = params.get("sslmode")
  if (mode !== null && !sslModes.includes(mode)) {
    return `the database URL's sslmode is "${mode}"; use one of ${sslModes.slice(0, 6).join(", ")}`
  }
  if (mode === "verify-ca" && !params.has("sslrootcert") && params.get("uselibpqcompat") !== "false") {
    return "the database URL's sslmode=verify-ca needs sslrootcert=/path/to/ca.pem, the authority to check the " +
      "server's certificate against (or use sslmode=verify-full)"
  }
  for (const name of ["sslrootcert", "sslcert", "sslkey"]) {
    const file = params.get(name)
    if (file === null) continue
    try {
      NodeFs.accessSync(file, NodeFs.constants.R_OK)
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      return `the database URL's ${name} names ${file}, which cannot be read (${code ?? causeMessage(error)})`
    }
  }
  return undefined
}

/**
 * What is wrong with a connection URL, or `undefined` when `pg` can use it.
 * The message never repeats the URL, which may hold a password.
 *
 * @since 0.1.0
 * @category utils
 */
export const checkUrl = (url: Redacted.Redacted<string>): string | undefined => {
  const parsed = parseUrl(url)
  return typeof parsed === "string" ? parsed : tlsProblem(parsed.searchParams)
}

/**
 * The URLs `pg` is given, in the order to try them: `sslmode` keeps the
 * meaning it has for libpq (psql, and most other clients). `require`
 * encrypts without verifying the server's certificate (with `sslrootcert`,
 * it verifies as `verify-ca` does), `verify-ca` checks it against
 * `sslrootcert`, `verify-full` also checks the host name, `disable` turns
 * TLS off; with `prefer` or `allow`, a server that does not offer TLS is
 * connected to without it (the second URL). Left to itself, `pg` 8 takes
 * every mode but `disable` for `verify-full` and warns about it on every
 * start. `pg`'s own `no-verify`, and a URL that sets `uselibpqcompat`
 * itself, are taken as they are.
 */
const connectionUrls = (url: string): readonly [string, ...Array<string>] => {
  const parsed = parseUrl(Redacted.make(url))
  if (typeof parsed === "string") return [url]
  const params = parsed.searchParams
  const mode = params.get("sslmode")
  if (mode === null || mode === "no-verify" || params.has("uselibpqcompat")) return [url]
  const text = url.trim()
  const withMode = (next: string) => text.replace(/([?&])sslmode=[^&]*/g, `$1sslmode=${next}`)
  const compat = (u: string) => `${u}&uselibpqcompat=true`
  return mode === "prefer" || mode === "allow"
    ? [compat(withMode("prefer")), withMode("disable")]
    : [compat(text)]
}

/**
 * The URL with the user named, as psql names it: when neither the URL
 * (`user@` or a `user` parameter) nor PGUSER names one, the operating
 * system's user. pg takes the USER variable instead, and without it (a
 * service, a container, cron) sends an empty user name, which the server
 * refuses ("no PostgreSQL user name specified in startup packet").
 */
const withUser = (url: string, pgUser: string | undefined): string => {
  const parsed = parseUrl(Redacted.make(url))
  if (typeof parsed === "string" || parsed.username !== "" || parsed.searchParams.has("user")) return url
  if (pgUser !== undefined && pgUser.trim() !== "") return url
  let name: string
  try {
    name = NodeOs.userInfo().username
  } catch {
    return url
  }
  const text = url.trim()
  const separator = text.endsWith("?") || text.endsWith("&") ? "" : parsed.search === "" ? "?" : "&"
  return `${text}${separator}user=${encodeURIComponent(name)}`
}

/**
 * The URL without its `options` parameter, and that parameter's value (the
 * server settings the connection asks for, `-c name=value ...`). pg lets
 * the URL's `options` replace the pool's own, which would drop the settings
 * the pool asks for (see {@link layerServer}): they are joined instead.
 */
const splitOptions = (url: string): { readonly url: string; readonly options: string | undefined } => {
  const parsed = parseUrl(Redacted.make(url))
  if (typeof parsed === "string" || !parsed.searchParams.has("options")) return { url, options: undefined }
  const options = parsed.searchParams.getAll("options").join(" ")
  const text = url.trim()
  const query = text.indexOf("?")
  const kept = text.slice(query + 1).split("&").filter((pair) => pair.split("=", 1)[0] !== "options")
  return { url: kept.length === 0 ? text.slice(0, query) : `${text.slice(0, query + 1)}${kept.join("&")}`, options }
}

/** The connection failed because the server does not offer TLS. */
const isTlsRefused = (cause: unknown): boolean =>
  cause instanceof Error && /does not support SSL/.test(cause.message)

/**
 * Where a connection URL points, without its password: safe to print.
 * A socket directory (given as the host, `%2F`-encoded, or as a `host`
 * parameter) is shown as the host.
 *
 * @since 0.1.0
 * @category utils
 */
export const describeUrl = (url: Redacted.Redacted<string>): string => {
  const parsed = parseUrl(url)
  if (typeof parsed === "string") return "(unparsable URL)"
  const decode = (part: string) => {
    try {
      return decodeURIComponent(part)
    } catch {
      return part
    }
  }
  const user = parsed.username.length > 0 ? `${decode(parsed.username)}@` : ""
  const host = parsed.searchParams.get("host") ?? decode(parsed.hostname)
  return `${user}${host}:${parsed.port.length > 0 ? parsed.port : "5432"}${decode(parsed.pathname)}`
}

const pgCode = (cause: unknown): string | undefined =>
  typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string"
    ? cause.code
    : undefined

/** Node's codes for a server certificate that failed verification. */
const tlsVerificationCodes = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_UNTRUSTED",
  "ERR_TLS_CERT_ALTNAME_INVALID"
])

/**
 * One clear message for each way a server connection can fail; `timeoutMillis`
 * is the connect timeout, named when the pool reports that it ran out.
 */
const connectError = (where: string, timeoutMillis: number) => (cause: unknown): StoreError => {
  const code = pgCode(cause)
  const detail = causeMessage(cause)
  if (code === undefined && /due to connection timeout/.test(detail)) {
    const limit = timeoutMillis < 1000 ? `${timeoutMillis} ms` : `${timeoutMillis / 1000} s`
    return new StoreError({
      reason: "open",
      message: `cannot reach the PostgreSQL server at ${where}: it did not answer within ${limit}; ` +
        `check that it is running and that --database-url / DATABASE_URL is right, or raise --db-connect-timeout`
    })
  }
  if (code === "28P01" || code === "28000") {
    return new StoreError({
      reason: "open",
      message: `the PostgreSQL server at ${where} rejected the credentials (${detail}); ` +
        `check the user and password in --database-url / DATABASE_URL`
    })
  }
  if (code === "57014") {
    return new StoreError({
      reason: "open",
      message: `the PostgreSQL server at ${where} cancelled a statement (${detail}); ` +
        `raise --db-statement-timeout (RAGPIPE_DB_STATEMENT_TIMEOUT) or use 0 to disable it`
    })
  }
  if (isTlsRefused(cause)) {
    return new StoreError({
      reason: "open",
      message: `the PostgreSQL server at ${where} does not accept TLS connections, which the URL's sslmode asks ` +
        `for; remove sslmode from --database-url / DATABASE_URL (or use sslmode=disable), or enable ssl on the server`
    })
  }
  if (code !== undefined && tlsVerificationCodes.has(code)) {
    return new StoreError({
      reason: "open",
      message: `the PostgreSQL server at ${where} presented a TLS certificate that could not be verified ` +
        `(${code}: ${detail}); name the authority that signed it with sslrootcert=/path/to/ca.pem in the URL, ` +
        `or use sslmode=require to encrypt without verifying it`
    })
  }
  if (code === "53300") {
    return new StoreError({
      reason: "open",
      message: `the PostgreSQL server at ${where} has no connection left for ragpipe (${detail}); ` +
        `lower --db-pool-size, close other clients, or raise the server's max_connections or the role's ` +
        `connection limit`
    })
  }
  if (code === "3D000") {
    return new StoreError({
      reason: "open",
      message: `the database in ${where} does not exist (${detail}); create it (createdb) or fix --database-url`
    })
  }
  // something listens there that is not PostgreSQL: it answers in another
  // protocol (MariaDB: "unexpected copyData message"), or hangs up on the
  // startup message (RabbitMQ, NATS)
  const hungUp = !(cause instanceof Pg.DatabaseError) &&
    (/Connection terminated unexpectedly/.test(detail) || code === "ECONNRESET")
  if (/unexpected \w+ message from backend|received invalid response/i.test(detail) || hungUp) {
    return new StoreError({
      reason: "open",
      message: `the server at ${where} did not answer as a PostgreSQL server does (${code ?? detail}); ` +
        `check the host and port in --database-url / DATABASE_URL`
    })
  }
  // the server's own refusal says what it refused; a socket error's code says enough
  const why = cause instanceof Pg.DatabaseError ? `${detail}, SQLSTATE ${code}` : code ?? detail
  return new StoreError({
    reason: "open",
    message: `cannot reach the PostgreSQL server at ${where} (${why}); ` +
      `check that it is running and that --database-url / DATABASE_URL is right`
  })
}

/**
 * The `pg.Pool` behind {@link layerServer}'s `SqlClient`, for work the
 * `SqlClient` cannot do — the PostgreSQL store writes chunks with
 * `COPY ... FROM STDIN` on a client checked out of it. Only a server has
 * one: the embedded database's layer does not provide it. A client checked
 * out of it must be released, with an error when its connection may be in
 * an unknown state (the pool then discards it).
 *
 * @since 0.1.0
 * @category tags
 */
export class ServerPool extends Context.Tag("ragpipe/ServerPool")<ServerPool, Pg.Pool>() {}

const isSchemaName = (name: string) => /^[a-z_][a-z0-9_]{0,62}$/.test(name)

/**
 * A `SqlClient` (and `PgClient`) over a PostgreSQL server with pgvector.
 * The pool is acquired in the layer's scope and ended (every connection
 * closed) when it closes; connections identify themselves as
 * `application_name = ragpipe`. A server that cannot be reached, refuses the
 * credentials or lacks pgvector fails with one `StoreError` saying which.
 * The pool itself is provided as {@link ServerPool}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerServer = (
  options: ServerOptions
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient | ServerPool, StoreError, ResourceLedger> =>
  Layer.scopedContext(
    Effect.gen(function*() {
      const ledger = yield* ResourceLedger
      const problem = checkUrl(options.url)
      if (problem !== undefined) return yield* new StoreError({ reason: "open", message: problem })
      const where = describeUrl(options.url)
      if (options.schema !== undefined && !isSchemaName(options.schema)) {
        return yield* new StoreError({ reason: "open", message: `invalid schema name ${options.schema}` })
      }
      const statementTimeout = Duration.toMillis(options.statementTimeout ?? Duration.minutes(10))
      const connectTimeout = Duration.toMillis(options.connectTimeout ?? Duration.seconds(10))
      const failedToConnect = connectError(where, connectTimeout)
      const given = splitOptions(withUser(Redacted.value(options.url), process.env["PGUSER"]))
      const makePool = (connectionString: string) =>
        new Pg.Pool({
          connectionString,
          max: options.poolSize ?? 4,
          connectionTimeoutMillis: connectTimeout,
          idleTimeoutMillis: Duration.toMillis(options.idleTimeout ?? Duration.seconds(30)),
          application_name: "ragpipe",
          ...(statementTimeout > 0 ? { statement_timeout: statementTimeout } : {}),
          // the server notices a vanished client within a quarter of a second even mid-statement
          // (unless the URL's options say otherwise); the store's schema comes first in the path
          options: `-c client_connection_check_interval=250` +
            (given.options === undefined ? "" : ` ${given.options}`) +
            (options.schema === undefined ? "" : ` -c search_path=${options.schema},public`)
        })
      /** A pool for `url` whose first connection worked (else ended, failing with the connection's error). */
      const openPool = (url: string) =>
        Effect.sync(() => makePool(url)).pipe(
          Effect.tap((pool) =>
            Effect.sync(() => {
              pool.on("error", () => {})
              cancelOutsidePool(pool)
            })
          ),
          Effect.tap((pool) =>
            Effect.tryPromise({
              try: () => pool.query("SELECT 1"),
              catch: (cause) => cause
            }).pipe(Effect.tapError(() => Effect.promise(() => pool.end())))
          )
        )
      const [first, ...fallbacks] = connectionUrls(given.url)
      const pool = yield* ledger.acquireRelease(
        "pg-pool",
        fallbacks.reduce(
          (opened, next) => Effect.catchIf(opened, isTlsRefused, () => openPool(next)),
          openPool(first)
        ).pipe(Effect.mapError(failedToConnect)),
        (pool) => Effect.promise(() => pool.end()),
        where
      )
      // whether the server has pgvector and, if it is installed, whether its
      // schema is on the connection's search path
      const available = yield* Effect.tryPromise({
        try: () =>
          pool.query<{ schema: string | null; visible: boolean | null; placed: boolean }>(
            `SELECT n.nspname AS schema, n.nspname = ANY (current_schemas(false)) AS visible,
               current_schema() IS NOT NULL AS placed
             FROM pg_available_extensions a
             LEFT JOIN pg_extension e ON e.extname = a.name
             LEFT JOIN pg_namespace n ON n.oid = e.extnamespace
             WHERE a.name = 'vector'`
          ),
        catch: failedToConnect
      })
      if (available.rowCount === 0) {
        return yield* new StoreError({
          reason: "open",
          message: `the PostgreSQL server at ${where} has no pgvector extension; install pgvector on the server ` +
            `(on Debian, scripts/setup-postgres builds and installs it), then run again`
        })
      }
      // pgvector installed in a schema of its own (CREATE EXTENSION vector
      // SCHEMA extensions) that the search path leaves out: its type,
      // operators and index methods are found through the path, so that
      // schema is added at its end on every connection — unless no schema
      // on the path exists: it would then become the store's (the store
      // says there is none instead)
      const vectorSchema = available.rows[0]?.schema ?? null
      if (vectorSchema !== null && available.rows[0]?.visible === false && available.rows[0]?.placed === true) {
        const extend = "SELECT set_config('search_path', current_setting('search_path') || ', ' || quote_ident($1), false)"
        pool.on("connect", (connection) => void connection.query(extend, [vectorSchema]).catch(() => {}))
        // the pool's one connection so far
        yield* Effect.tryPromise({ try: () => pool.query(extend, [vectorSchema]), catch: failedToConnect })
      }
      if (options.schema !== undefined) {
        yield* Effect.tryPromise({
          try: () => pool.query(`CREATE SCHEMA IF NOT EXISTS ${options.schema}`),
          catch: failedToConnect
        })
      }
      const client = yield* PgClient.fromPool({ acquire: Effect.succeed(pool), applicationName: "ragpipe" }).pipe(
        Effect.mapError((error) => failedToConnect(error.cause))
      )
      return Context.make(PgClient.PgClient, client).pipe(
        Context.add(SqlClient.SqlClient, client),
        Context.add(ServerPool, pool)
      )
    })
  ).pipe(Layer.provide(Reactivity.layer))

/**
 * The store's database from configuration: `DATABASE_URL` selects a
 * PostgreSQL server (pool size `RAGPIPE_DB_POOL_SIZE`, default 4); otherwise
 * the embedded database in `RAGPIPE_DATA_DIR` (default `.ragpipe`). A blank
 * variable counts as unset, as on the command line.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig: Layer.Layer<
  PgClient.PgClient | SqlClient.SqlClient,
  StoreError | ConfigError.ConfigError,
  ResourceLedger
> = Layer.unwrapEffect(
  Effect.gen(function*() {
    const url = Option.filter(
      yield* Config.option(Config.redacted("DATABASE_URL")),
      (u) => Redacted.value(u).trim() !== ""
    )
    if (Option.isSome(url)) {
      const poolSize = yield* Config.integer("RAGPIPE_DB_POOL_SIZE").pipe(Config.withDefault(4))
      return layerServer({ url: url.value as Redacted.Redacted<string>, poolSize }) as Layer.Layer<
        PgClient.PgClient | SqlClient.SqlClient,
        StoreError,
        ResourceLedger
      >
    }
    const dataDir = Option.getOrElse(
      Option.filter(yield* Config.option(Config.string("RAGPIPE_DATA_DIR")), (dir) => dir.trim() !== ""),
      () => defaultDataDir
    )
    return layerPglite({ dataDir }) as Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, StoreError, ResourceLedger>
  })
)

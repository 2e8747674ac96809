/**
 * Cancelling a running statement without taking a pooled connection.
 *
 * `@effect/sql-pg` cancels the statement of an interrupted fiber by running
 * `SELECT pg_cancel_backend(pid)` through the pool. That query needs a free
 * connection of its own: when every connection is busy — a pool of one, or
 * an ingest using all of them — it waits, and the statement runs on (a
 * `pg_sleep(30)` on a pool of one was still running 2 s after its fiber was
 * interrupted). PostgreSQL's cancel request needs no session: a new socket
 * carries the backend's process id and secret key (16 bytes), and the
 * server closes it. {@link cancelOutsidePool} answers those queries with
 * one.
 *
 * @internal
 */
import * as NodeNet from "node:net"
import type Pg from "pg"

/** What a cancel request needs to know of the connection whose statement it cancels. */
export interface CancelTarget {
  readonly host: string
  readonly port: number
  readonly processID: number
  readonly secretKey: number
}

/** PostgreSQL's CancelRequest code (1234 in the high 16 bits, 5678 in the low). */
const cancelRequestCode = 80877102

/**
 * Send PostgreSQL's cancel request for `target`'s running statement, on a
 * socket of its own: resolves once the server has closed it. A host that is
 * a directory is the server's socket directory.
 */
export const sendCancelRequest = (target: CancelTarget, timeoutMillis = 5000): Promise<void> =>
  new Promise((resolve, reject) => {
    const socket = target.host.startsWith("/")
      ? NodeNet.connect(`${target.host}/.s.PGSQL.${target.port}`)
      : NodeNet.connect(target.port, target.host)
    const request = Buffer.alloc(16)
    request.writeInt32BE(16, 0)
    request.writeInt32BE(cancelRequestCode, 4)
    request.writeInt32BE(target.processID, 8)
    request.writeInt32BE(target.secretKey, 12)
    let failure: Error | undefined
    socket.setTimeout(timeoutMillis, () => socket.destroy(new Error(`no answer within ${timeoutMillis} ms`)))
    socket.once("connect", () => socket.end(request))
    socket.on("error", (error) => (failure = error))
    socket.once("close", () => (failure === undefined ? resolve() : reject(failure)))
  })

/** The statement `@effect/sql-pg` cancels with. */
const cancelStatement = /^SELECT pg_cancel_backend\((\d+)\)$/

/** A pooled client's process id and secret key, which `pg` keeps but does not declare. */
const keyOf = (client: Pg.PoolClient): { readonly processID: number; readonly secretKey: number } | undefined => {
  const { processID, secretKey } = client as unknown as { processID?: unknown; secretKey?: unknown }
  return typeof processID === "number" && typeof secretKey === "number" ? { processID, secretKey } : undefined
}

type Callback = (error: Error | null) => void

/**
 * Make `pool` answer `SELECT pg_cancel_backend(pid)` for one of its own
 * connections with a cancel request ({@link sendCancelRequest}) instead of
 * a query on a pooled connection. Any other query, and a cancel for a
 * process that is not one of the pool's connections, goes to the pool as
 * before. Best effort, like the query it replaces: a failed request is
 * passed to the callback.
 */
export const cancelOutsidePool = (pool: Pg.Pool): void => {
  const connections = new Map<number, Pg.PoolClient>()
  pool.on("connect", (client) => {
    const key = keyOf(client)
    if (key !== undefined) connections.set(key.processID, client)
  })
  pool.on("remove", (client) => {
    const key = keyOf(client)
    if (key !== undefined && connections.get(key.processID) === client) connections.delete(key.processID)
  })
  const query = pool.query.bind(pool) as (...args: ReadonlyArray<unknown>) => unknown
  const cancelling = (...args: ReadonlyArray<unknown>): unknown => {
    const [text, callback] = args
    const match = typeof text === "string" && typeof callback === "function" ? cancelStatement.exec(text) : null
    const client = match === null ? undefined : connections.get(Number(match[1]))
    const key = client === undefined ? undefined : keyOf(client)
    if (client === undefined || key === undefined) return query(...args)
    sendCancelRequest({ host: client.host, port: client.port, ...key }).then(
      () => (callback as Callback)(null),
      (error: Error) => (callback as Callback)(error)
    )
    return undefined
  }
  Object.defineProperty(pool, "query", { value: cancelling, writable: true, configurable: true })
}

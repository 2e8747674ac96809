import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Logger from "effect/Logger"
import * as NodeNet from "node:net"
import * as FaultServer from "../src/FaultServer.js"
import { makeHashingEmbedder } from "../src/internal/hashingEmbedder.js"

// -----------------------------------------------------------------------------
// helpers
// -----------------------------------------------------------------------------

interface Reply {
  readonly status: number
  readonly headers: Headers
  readonly text: string
}

/** POST `body` (JSON-encoded unless a string) to `<url>/embeddings`; rejects like fetch does. */
const postRaw = (url: string, body: unknown, signal?: AbortSignal): Promise<Reply> =>
  fetch(`${url}/embeddings`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
    ...(signal === undefined ? {} : { signal })
  }).then(async (res) => ({ status: res.status, headers: res.headers, text: await res.text() }))

const post = (url: string, body: unknown): Effect.Effect<Reply> => Effect.promise(() => postRaw(url, body))

/** Settles with the error instead of rejecting. */
const postSettled = (url: string, body: unknown, signal?: AbortSignal): Promise<Reply | Error> =>
  postRaw(url, body, signal).catch((error: unknown) => error instanceof Error ? error : new Error(String(error)))

const errorText = (error: Error): string => {
  const cause = (error as { cause?: unknown }).cause
  return `${error.name}: ${error.message} ${cause instanceof Error ? `${cause.name}: ${cause.message}` : ""}`
}

interface EmbeddingResponse {
  readonly object: string
  readonly data: ReadonlyArray<{ readonly object: string; readonly index: number; readonly embedding: unknown }>
  readonly model: string
  readonly usage: { readonly prompt_tokens: number; readonly total_tokens: number }
}

interface ErrorResponse {
  readonly error: { readonly message: string; readonly type: string; readonly param: string | null; readonly code: string }
}

const hashing = (dimensions: number, texts: ReadonlyArray<string>): ReadonlyArray<Float32Array> =>
  Effect.runSync(makeHashingEmbedder({ dimensions }).embedBatch(texts))

const decodeBase64 = (s: string): Float32Array => {
  const bytes = Buffer.from(s, "base64")
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const out = new Float32Array(bytes.byteLength / 4)
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true)
  return out
}

const texts = [
  "PostgreSQL stores the vectors in a table with a pgvector column.",
  "The circuit breaker opens after five consecutive failures.",
  "Bake the bread at two hundred degrees for forty minutes."
]

/** What a client sees, classified the way a client would (the header is only needed to tell a hang). */
const observe = async (url: string, dimensions: number): Promise<FaultServer.FaultKind | "ok"> => {
  const reply = await postSettled(url, { model: "m", input: ["alpha beta"] })
  if (reply instanceof Error) return "reset"
  if (reply.status === 500) return "error500"
  if (reply.status === 429) return "rateLimit"
  assert.strictEqual(reply.status, 200)
  let body: EmbeddingResponse
  try {
    body = JSON.parse(reply.text)
  } catch {
    return "malformed"
  }
  if ((body.data[0].embedding as ReadonlyArray<number>).length === dimensions + 1) return "wrongDimensions"
  return reply.headers.get("x-fault-outcome") === "hang" ? "hang" : "ok"
}

const handleCounts = () => {
  const info = process.getActiveResourcesInfo()
  const count = (name: string) => info.filter((x) => x === name).length
  return { servers: count("TCPServerWrap"), sockets: count("TCPSocketWrap"), timeouts: count("Timeout") }
}

/** Poll (real time) until `check` holds, for at most `millis`. */
const eventually = (check: () => boolean, millis = 2000): Effect.Effect<boolean> =>
  Effect.promise(async () => {
    const deadline = Date.now() + millis
    while (!check()) {
      if (Date.now() > deadline) return false
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    return true
  })


// -----------------------------------------------------------------------------
// tests
// -----------------------------------------------------------------------------

describe("FaultServer", () => {
  it.scopedLive("serves OpenAI-shaped responses with the hashing embedder's vectors", () =>
    Effect.gen(function*() {
      const server = yield* FaultServer.start({ dimensions: 64 })
      assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/v1$/)
      assert.isTrue(server.url.endsWith(`:${server.port}/v1`))

      const reply = yield* post(server.url, { model: "text-embedding-3-small", input: texts })
      assert.strictEqual(reply.status, 200)
      assert.strictEqual(reply.headers.get("content-type"), "application/json")
      const body: EmbeddingResponse = JSON.parse(reply.text)
      assert.strictEqual(body.object, "list")
      assert.strictEqual(body.model, "text-embedding-3-small")
      assert.strictEqual(body.data.length, 3)
      assert.isTrue(body.usage.prompt_tokens > 0)
      assert.strictEqual(body.usage.total_tokens, body.usage.prompt_tokens)
      const expected = hashing(64, texts)
      body.data.forEach((item, i) => {
        assert.strictEqual(item.object, "embedding")
        assert.strictEqual(item.index, i)
        assert.deepStrictEqual(Float32Array.from(item.embedding as ReadonlyArray<number>), expected[i])
      })

      // a single string, on the path without /v1
      const single = yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${server.port}/embeddings`, {
          method: "POST",
          body: JSON.stringify({ model: "m", input: texts[1] })
        }).then((res) => res.json() as Promise<EmbeddingResponse>)
      )
      assert.deepStrictEqual(Float32Array.from(single.data[0].embedding as ReadonlyArray<number>), expected[1])

      // GET /health, 404s
      const health = yield* Effect.promise(() => fetch(`http://127.0.0.1:${server.port}/health`))
      assert.strictEqual(health.status, 200)
      yield* Effect.promise(() => health.text())
      for (const [method, path] of [["GET", "/v1/embeddings"], ["POST", "/v1/chat/completions"], ["GET", "/"]]) {
        const res = yield* Effect.promise(() => fetch(`http://127.0.0.1:${server.port}${path}`, { method }))
        assert.strictEqual(res.status, 404, `${method} ${path}`)
        const error: ErrorResponse = yield* Effect.promise(() => res.json() as Promise<ErrorResponse>)
        assert.strictEqual(error.error.type, "invalid_request_error")
      }

      const stats = yield* server.stats
      assert.strictEqual(stats.outcomes.ok, 2)
      assert.strictEqual(stats.outcomes.health, 1)
      assert.strictEqual(stats.outcomes.notFound, 3)
      assert.strictEqual(stats.requests, 6)
    }))

  it.scopedLive("honours `dimensions` and base64 encoding", () =>
    Effect.gen(function*() {
      const server = yield* FaultServer.start()
      const byDefault: EmbeddingResponse = JSON.parse((yield* post(server.url, { model: "m", input: texts[0] })).text)
      assert.strictEqual((byDefault.data[0].embedding as ReadonlyArray<number>).length, 384)

      const floats: EmbeddingResponse = JSON.parse(
        (yield* post(server.url, { model: "m", input: texts, dimensions: 256 })).text
      )
      const expected = hashing(256, texts)
      const base64: EmbeddingResponse = JSON.parse(
        (yield* post(server.url, { model: "m", input: texts, dimensions: 256, encoding_format: "base64" })).text
      )
      base64.data.forEach((item, i) => {
        assert.strictEqual(typeof item.embedding, "string")
        const decoded = decodeBase64(item.embedding as string)
        assert.deepStrictEqual(decoded, expected[i])
        assert.deepStrictEqual(decoded, Float32Array.from(floats.data[i].embedding as ReadonlyArray<number>))
      })
    }))

  it.scopedLive("injects a 500 with an error body", () =>
    Effect.gen(function*() {
      const server = yield* FaultServer.start({ faultPlan: ["error500", "ok"] })
      const reply = yield* post(server.url, { model: "m", input: "x" })
      assert.strictEqual(reply.status, 500)
      const body: ErrorResponse = JSON.parse(reply.text)
      assert.strictEqual(body.error.type, "server_error")
      assert.isString(body.error.message)
      assert.strictEqual(reply.headers.get("x-fault-outcome"), "error500")
      assert.strictEqual((yield* post(server.url, { model: "m", input: "x" })).status, 200)
    }))

  it.scopedLive("injects a 429 with Retry-After", () =>
    Effect.gen(function*() {
      const server = yield* FaultServer.start({ faultPlan: ["rateLimit"], retryAfterSeconds: 7 })
      const reply = yield* post(server.url, { model: "m", input: "x" })
      assert.strictEqual(reply.status, 429)
      assert.strictEqual(reply.headers.get("retry-after"), "7")
      const body: ErrorResponse = JSON.parse(reply.text)
      assert.strictEqual(body.error.code, "rate_limit_exceeded")
    }))

  it.scopedLive("injects malformed JSON and wrong dimensions", () =>
    Effect.gen(function*() {
      const server = yield* FaultServer.start({ dimensions: 32, faultPlan: ["malformed", "wrongDimensions"] })
      const malformed = yield* post(server.url, { model: "m", input: "x" })
      assert.strictEqual(malformed.status, 200)
      assert.throws(() => JSON.parse(malformed.text))

      const wrong: EmbeddingResponse = JSON.parse((yield* post(server.url, { model: "m", input: ["a b", "c"] })).text)
      for (const item of wrong.data) assert.strictEqual((item.embedding as ReadonlyArray<number>).length, 33)

      const stats = yield* server.stats
      assert.strictEqual(stats.outcomes.malformed, 1)
      assert.strictEqual(stats.outcomes.wrongDimensions, 1)
    }))

  it.scopedLive("injects a connection reset mid-response", () =>
    Effect.gen(function*() {
      const server = yield* FaultServer.start({ faultPlan: ["reset", "ok"] })
      const reply = yield* Effect.promise(() => postSettled(server.url, { model: "m", input: "x" }))
      assert.instanceOf(reply, Error)
      assert.match(errorText(reply as Error), /terminated|ECONNRESET|socket hang up|other side closed|fetch failed/)
      // the server keeps serving
      assert.strictEqual((yield* post(server.url, { model: "m", input: "x" })).status, 200)
      const stats = yield* server.stats
      assert.strictEqual(stats.outcomes.reset, 1)
      assert.strictEqual(stats.clientAborts, 0)
    }))

  it.live("hangs until the client gives up, and closing the server leaves nothing behind", () =>
    Effect.gen(function*() {
      const before = handleCounts()
      let stillHanging: Promise<Reply | Error> | undefined
      const stats = yield* Effect.scoped(Effect.gen(function*() {
        const server = yield* FaultServer.start({ faultPlan: ["hang", "hang"], hangMillis: 30_000 })
        // the client aborts after 200 ms
        const controller = new AbortController()
        const abort = setTimeout(() => controller.abort(), 200)
        const started = Date.now()
        const aborted = yield* Effect.promise(() => postSettled(server.url, { model: "m", input: "x" }, controller.signal))
        clearTimeout(abort)
        assert.instanceOf(aborted, Error)
        assert.strictEqual((aborted as Error).name, "AbortError")
        assert.isAtLeast(Date.now() - started, 190)
        // the server notices and drops the hang's timer
        assert.isTrue(yield* eventually(() => Effect.runSync(server.stats).inFlight === 0))
        assert.strictEqual((yield* server.stats).pendingTimers, 0)
        assert.strictEqual((yield* server.stats).clientAborts, 1)

        // a second hang is still waiting when the scope closes
        stillHanging = postSettled(server.url, { model: "m", input: "x" })
        assert.isTrue(yield* eventually(() => Effect.runSync(server.stats).pendingTimers === 1))
        return server.stats
      }))
      const closedStats = yield* stats
      assert.strictEqual(closedStats.openSockets, 0)
      assert.strictEqual(closedStats.pendingTimers, 0)
      assert.strictEqual(closedStats.outcomes.hang, 2)
      assert.strictEqual(closedStats.clientAborts, 1) // the close itself is not a client abort
      const last = yield* Effect.promise(() => stillHanging!)
      assert.instanceOf(last, Error)
      assert.match(errorText(last as Error), /terminated|ECONNRESET|socket hang up|other side closed|fetch failed/)
      // no TCP handle and no timer more than before the test (client sockets close asynchronously)
      const settled = yield* eventually(() => {
        const now = handleCounts()
        return now.servers <= before.servers && now.sockets <= before.sockets && now.timeouts <= before.timeouts
      })
      assert.isTrue(settled, JSON.stringify({ before, after: handleCounts() }))
    }))

  it.live("after the scope closes the port refuses connections and no handles are left", () =>
    Effect.gen(function*() {
      const before = handleCounts()
      const server = yield* Effect.scoped(Effect.gen(function*() {
        const server = yield* FaultServer.start({ latencyMillis: 20 })
        const replies = yield* Effect.all(
          Array.from({ length: 4 }, () => post(server.url, { model: "m", input: texts })),
          { concurrency: "unbounded" }
        )
        for (const reply of replies) assert.strictEqual(reply.status, 200)
        assert.isAtLeast((yield* server.stats).openSockets, 1)
        return server
      }))
      // the release waited for the server and its sockets to close
      const afterClose = handleCounts()
      assert.isAtMost(afterClose.servers, before.servers)
      const stats = yield* server.stats
      assert.strictEqual(stats.openSockets, 0)
      assert.strictEqual(stats.pendingTimers, 0)

      const refused = yield* Effect.promise(() => postSettled(server.url, { model: "m", input: "x" }))
      assert.instanceOf(refused, Error)
      assert.match(errorText(refused as Error), /ECONNREFUSED/)

      const settled = yield* eventually(() => {
        const now = handleCounts()
        return now.servers <= before.servers && now.sockets <= before.sockets && now.timeouts <= before.timeouts
      })
      assert.isTrue(settled, JSON.stringify({ before, after: handleCounts() }))
    }))

  it.live("seeded rates are deterministic and match the configured rates", () =>
    Effect.gen(function*() {
      const dimensions = 16
      const options: FaultServer.Options = {
        seed: 42,
        dimensions,
        hangMillis: 5,
        faults: { error500: 0.1, rateLimit: 0.05, hang: 0.02, reset: 0.03, malformed: 0.05, wrongDimensions: 0.05 }
      }
      const run = (n: number, overrides: FaultServer.Options = {}) =>
        Effect.scoped(Effect.gen(function*() {
          const server = yield* FaultServer.start({ ...options, ...overrides })
          const seen: Array<FaultServer.FaultKind | "ok"> = []
          for (let i = 0; i < n; i++) seen.push(yield* Effect.promise(() => observe(server.url, dimensions)))
          const stats = yield* server.stats
          return { seen, stats }
        }))

      const n = 500
      const first = yield* run(n)
      // what the client saw is exactly the predicted sequence
      assert.deepStrictEqual(first.seen, FaultServer.faultSequence(options, n))
      // and the server counted the same
      const tally = (kind: FaultServer.FaultKind | "ok") => first.seen.filter((x) => x === kind).length
      for (const kind of [...FaultServer.faultKinds, "ok"] as const) {
        assert.strictEqual(first.stats.outcomes[kind], tally(kind), kind)
      }
      // observed rates are close to the configured ones
      for (const kind of FaultServer.faultKinds) {
        const rate = options.faults![kind]!
        assert.approximately(tally(kind) / n, rate, 0.04, kind)
      }
      assert.approximately(tally("ok") / n, 0.7, 0.06)

      // same seed → same sequence; another seed → another one
      const again = yield* run(100)
      assert.deepStrictEqual(again.seen, first.seen.slice(0, 100))
      const other = yield* run(100, { seed: 7 })
      assert.notDeepEqual(other.seen, first.seen.slice(0, 100))

      // a plan is applied first; the PRNG still advances once per request
      const planned = FaultServer.faultSequence({ ...options, faultPlan: ["reset", "ok"] }, 10)
      assert.deepStrictEqual(planned, ["reset", "ok", ...FaultServer.faultSequence(options, 10).slice(2)])
    }))

  it.scopedLive("answers 400 with an OpenAI-style error for invalid requests", () =>
    Effect.gen(function*() {
      const server = yield* FaultServer.start({ maxBatch: 3, maxInputChars: 50 })
      const expect400 = (body: unknown, param: string | null, pattern?: RegExp) =>
        Effect.gen(function*() {
          const reply = yield* post(server.url, body)
          assert.strictEqual(reply.status, 400, reply.text)
          const error: ErrorResponse = JSON.parse(reply.text)
          assert.strictEqual(error.error.type, "invalid_request_error")
          assert.strictEqual(error.error.param, param)
          assert.isString(error.error.code)
          if (pattern !== undefined) assert.match(error.error.message, pattern)
        })

      yield* expect400("{not json", null, /JSON/)
      yield* expect400({ model: "m" }, "input")
      yield* expect400({ model: "m", input: [] }, "input")
      yield* expect400({ model: "m", input: ["a", "b", "c", "d"] }, "input", /maximum of 3/)
      yield* expect400({ model: "m", input: ["a", 3] }, "input[1]")
      yield* expect400({ input: "a" }, "model")
      yield* expect400({ model: "m", input: "a", dimensions: 0 }, "dimensions")
      yield* expect400({ model: "m", input: "a", encoding_format: "int8" }, "encoding_format")
      // a too-long input and the reject marker name the offending index
      yield* expect400({ model: "m", input: ["short", "fine", "x".repeat(51)] }, "input[2]", /index 2/)
      yield* expect400({ model: "m", input: ["ok", `bad ${FaultServer.rejectMarker} input`, "ok"] }, "input[1]", /index 1/)
      yield* expect400({ model: "m", input: FaultServer.rejectMarker }, "input[0]", /index 0/)

      // exactly at the limits is fine
      const ok = yield* post(server.url, { model: "m", input: ["x".repeat(50), "b", "c"] })
      assert.strictEqual(ok.status, 200)
      assert.strictEqual((yield* server.stats).outcomes.badRequest, 11)
    }))

  it.live("caps concurrency with a FIFO queue", () =>
    Effect.gen(function*() {
      const burst = (concurrency: number | undefined) =>
        Effect.scoped(Effect.gen(function*() {
          const server = yield* FaultServer.start({
            latencyMillis: 100,
            ...(concurrency === undefined ? {} : { concurrency })
          })
          const started = Date.now()
          const replies = yield* Effect.all(
            Array.from({ length: 6 }, (_, i) => post(server.url, { model: "m", input: `text ${i}` })),
            { concurrency: "unbounded" }
          )
          const elapsed = Date.now() - started
          for (const reply of replies) assert.strictEqual(reply.status, 200)
          return { stats: yield* server.stats, elapsed }
        }))
      const capped = yield* burst(2)
      assert.strictEqual(capped.stats.maxConcurrency, 2)
      assert.strictEqual(capped.stats.outcomes.ok, 6)
      assert.isAtLeast(capped.elapsed, 290) // three waves of 100 ms
      const uncapped = yield* burst(undefined)
      assert.isAbove(uncapped.stats.maxConcurrency, 2)
    }))

  it.scopedLive("drops connections beyond maxConnections", () =>
    Effect.gen(function*() {
      const server = yield* FaultServer.start({ maxConnections: 1, faultPlan: ["hang"], hangMillis: 300 })
      const holding = postSettled(server.url, { model: "m", input: "x" })
      assert.isTrue(yield* eventually(() => Effect.runSync(server.stats).inFlight === 1))
      const dropped = yield* Effect.promise(() => postSettled(server.url, { model: "m", input: "y" }))
      assert.instanceOf(dropped, Error)
      const held = yield* Effect.promise(() => holding)
      assert.notInstanceOf(held, Error)
      assert.strictEqual((held as Reply).status, 200)
      assert.strictEqual((yield* server.stats).droppedConnections, 1)
    }))

  it.scopedLive("is bounded by default: 256 connections, 256 served at once, 1024 waiting", () =>
    Effect.gen(function*() {
      assert.strictEqual(FaultServer.defaults.maxConnections, 256)
      assert.strictEqual(FaultServer.defaults.concurrency, 256)
      assert.strictEqual(FaultServer.defaults.maxQueued, 1024)
      assert.strictEqual(FaultServer.defaults.requestLogSize, 1000)
      const server = yield* FaultServer.start()
      // idle raw connections up to the default cap are accepted; the next one is dropped
      const clients: Array<NodeNet.Socket> = []
      yield* Effect.addFinalizer(() => Effect.sync(() => clients.forEach((socket) => socket.destroy())))
      const connect = () => {
        const socket = NodeNet.connect(server.port, "127.0.0.1")
        socket.on("error", () => {})
        clients.push(socket)
      }
      for (let i = 0; i < 256; i++) connect()
      assert.isTrue(yield* eventually(() => Effect.runSync(server.stats).openSockets === 256, 5000))
      connect()
      assert.isTrue(yield* eventually(() => Effect.runSync(server.stats).droppedConnections === 1, 5000))
      assert.strictEqual((yield* server.stats).openSockets, 256)
    }))

  it.scopedLive("answers 503 server_busy when maxQueued requests already wait, without drawing a fault", () =>
    Effect.gen(function*() {
      const server = yield* FaultServer.start({
        concurrency: 1,
        maxQueued: 2,
        faultPlan: ["hang", "ok", "ok", "error500"],
        hangMillis: 300
      })
      // one served (hanging), two waiting
      const held = [0, 1, 2].map((i) => postSettled(server.url, { model: "m", input: `held ${i}` }))
      assert.isTrue(yield* eventually(() => {
        const stats = Effect.runSync(server.stats)
        return stats.inFlight === 1 && stats.queued === 2
      }))
      assert.strictEqual((yield* server.stats).waiting, 2)
      const refused = yield* post(server.url, { model: "m", input: "one too many" })
      assert.strictEqual(refused.status, 503)
      assert.strictEqual(refused.headers.get("x-fault-outcome"), "busy")
      assert.strictEqual((JSON.parse(refused.text) as ErrorResponse).error.code, "server_busy")
      // the held requests are all served once the hang ends
      const replies = yield* Effect.promise(() => Promise.all(held))
      for (const reply of replies) assert.strictEqual((reply as Reply).status, 200)
      // the refused request drew no fault: the next one gets the plan's fourth entry
      assert.strictEqual((yield* post(server.url, { model: "m", input: "after" })).status, 500)
      const stats = yield* server.stats
      assert.strictEqual(stats.outcomes.busy, 1)
      assert.strictEqual(stats.waiting, 0)
      assert.strictEqual(stats.maxConcurrency, 1)
    }))

  it.scopedLive("keeps a bounded log of requests: arrival, end, outcome, model and inputs", () =>
    Effect.gen(function*() {
      const server = yield* FaultServer.start({ requestLogSize: 3, faultPlan: ["ok", "rateLimit", "ok", "ok"] })
      yield* post(server.url, { model: "first", input: ["a", "b"] })
      yield* post(server.url, { model: "second", input: "c" })
      yield* post(server.url, { model: "third", input: ["d", "e", "f"] })
      yield* post(server.url, { input: "no model" })
      const log = yield* server.requests
      assert.deepStrictEqual(
        log.map((r) => [r.seq, r.outcome, r.model, r.inputs]),
        [[2, "rateLimit", "second", 1], [3, "ok", "third", 3], [4, "badRequest", null, null]]
      )
      for (const r of log) {
        assert.isNotNull(r.endedAt)
        assert.isAtLeast(r.endedAt!, r.arrivedAt)
      }
      for (let i = 1; i < log.length; i++) assert.isAtLeast(log[i]!.arrivedAt, log[i - 1]!.endedAt!)
      const none = yield* FaultServer.start({ requestLogSize: 0 })
      yield* post(none.url, { model: "m", input: "x" })
      assert.deepStrictEqual(yield* none.requests, [])
    }))

  const logs: Array<string> = []
  const capture = Logger.make(({ logLevel, message }) => {
    logs.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
  })

  it.scopedLive("answers 503 after maxRequests", () =>
    Effect.gen(function*() {
      const server = yield* FaultServer.start({ maxRequests: 2 })
      assert.strictEqual((yield* post(server.url, { model: "m", input: "a" })).status, 200)
      assert.strictEqual((yield* post(server.url, { model: "m", input: "b" })).status, 200)
      const over = yield* post(server.url, { model: "m", input: "c" })
      assert.strictEqual(over.status, 503)
      assert.strictEqual((JSON.parse(over.text) as ErrorResponse).error.code, "max_requests_exceeded")
      assert.strictEqual((yield* post(server.url, { model: "m", input: "d" })).status, 503)
      assert.strictEqual((yield* server.stats).outcomes.overLimit, 2)
      // logged once, through the Effect logger of the scope that started the server
      assert.strictEqual(logs.length, 1)
      assert.match(logs[0], /WARN.*maxRequests \(2\)/)
    }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, capture))))

  it.scoped("refuses non-loopback hosts and invalid options", () =>
    Effect.gen(function*() {
      const invalid: ReadonlyArray<FaultServer.Options> = [
        { host: "0.0.0.0" as unknown as "127.0.0.1" },
        { faults: { error500: 0.7, reset: 0.5 } },
        { faults: { error500: -0.1 } },
        { faultPlan: ["ok", "explode" as unknown as "ok"] },
        { dimensions: 0 },
        { port: 70000 },
        { maxQueued: 0 },
        { maxConnections: 0 },
        { requestLogSize: -1 }
      ]
      for (const options of invalid) {
        const exit = yield* Effect.exit(FaultServer.start(options))
        assert.isTrue(Exit.isFailure(exit), JSON.stringify(options))
        if (Exit.isFailure(exit)) {
          const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
          assert.instanceOf(error, FaultServer.FaultServerError)
          assert.strictEqual(error!.reason, "invalid-options")
        }
      }
      const host = yield* Effect.flip(FaultServer.start({ host: "0.0.0.0" as unknown as "127.0.0.1" }))
      assert.match(host.message, /loopback/)
    }))

  it.scopedLive("fails with a listen error when the port is taken", () =>
    Effect.gen(function*() {
      const first = yield* FaultServer.start()
      const error = yield* Effect.flip(FaultServer.start({ port: first.port }))
      assert.strictEqual(error.reason, "listen")
      assert.match(error.message, /EADDRINUSE/)
    }))
})

/**
 * The OpenAI-compatible embedder against a small scripted HTTP server on
 * 127.0.0.1: real sockets, every scenario bounded in time.
 *
 * The scenario is the first path segment of the base URL:
 * `http://127.0.0.1:<port>/<scenario>/v1` → `POST /<scenario>/v1/embeddings`.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import * as Http from "node:http"
import type * as Net from "node:net"
import * as NodeUtil from "node:util"
import { Embedder } from "../src/Embedder.js"
import { EmbedError } from "../src/Errors.js"
import * as OpenAiEmbedder from "../src/OpenAiEmbedder.js"
import * as ResourceLedger from "../src/ResourceLedger.js"
import * as Retry from "../src/Retry.js"

// ---------------------------------------------------------------------------
// the scripted server
// ---------------------------------------------------------------------------

const KEY = "test-key"
const DIMS = 4

interface Recorded {
  readonly path: string
  readonly headers: Http.IncomingHttpHeaders
  readonly body: { readonly model?: unknown; readonly input: ReadonlyArray<string>; readonly [k: string]: unknown }
}

interface TestServer {
  readonly port: number
  readonly baseUrl: (scenario: string) => string
  readonly requests: Array<Recorded>
  /** TCP connections accepted so far */
  connections: number
  /** server-side sockets currently open */
  readonly open: Set<Net.Socket>
  /** responses whose connection closed before the server answered (client aborts) */
  aborted: number
  /** resolves when `aborted` reaches n */
  readonly abortedAtLeast: (n: number) => Promise<void>
}

/** the vector the server returns for input text `t<n>` (or, for other texts, for position n) */
const vectorFor = (n: number, dims: number): Array<number> => Array.from({ length: dims }, (_, j) => n + j)

const numberOf = (text: string, position: number): number => {
  const m = /^t(\d+)$/.exec(text)
  return m === null ? position : Number(m[1])
}

const float32Base64 = (values: ReadonlyArray<number>): string => {
  const view = new DataView(new ArrayBuffer(values.length * 4))
  values.forEach((x, i) => view.setFloat32(i * 4, x, true))
  return Buffer.from(view.buffer).toString("base64")
}

const json = (res: Http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
  const text = typeof body === "string" ? body : JSON.stringify(body)
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text), ...headers })
  res.end(text)
}

const openAiError = (message: string, type = "invalid_request_error") => ({ error: { message, type, code: null } })

const respond = (
  scenario: string,
  req: Http.IncomingMessage,
  res: Http.ServerResponse,
  body: Recorded["body"]
) => {
  const input = body.input
  const dims = typeof body["dimensions"] === "number" ? body["dimensions"] : DIMS
  const items = input.map((text, index) => ({
    object: "embedding",
    index,
    embedding: vectorFor(numberOf(text, index), dims)
  }))
  const list = (data: ReadonlyArray<unknown>) => ({
    object: "list",
    data,
    model: body.model,
    usage: { prompt_tokens: 1, total_tokens: 1 }
  })
  switch (scenario) {
    case "ok":
      return json(res, 200, list(items))
    case "slow":
      return setTimeout(() => json(res, 200, list(items)), 20)
    case "shuffled":
      return json(res, 200, list([...items].reverse()))
    case "fewer":
      return json(res, 200, list(items.slice(0, -1)))
    case "duplicate":
      return json(res, 200, list(items.map((item) => ({ ...item, index: 0 }))))
    case "out-of-range":
      return json(res, 200, list(items.map((item) => ({ ...item, index: item.index + 1 }))))
    case "wrong-dims":
      return json(res, 200, list(items.map((item) => ({ ...item, embedding: [...item.embedding, 0] }))))
    case "null-entry":
      return json(res, 200, list(items.map((item) => ({ ...item, embedding: [null, ...item.embedding.slice(1)] }))))
    case "string-index":
      return json(res, 200, list(items.map((item) => ({ ...item, index: String(item.index) }))))
    case "json-infinity":
      // 1e999 is valid JSON that parses to Infinity
      return json(res, 200, JSON.stringify(list(items)).replace(/"embedding":\[\d+/g, "\"embedding\":[1e999"))
    case "float32-overflow":
      // finite as a double, Infinity as a float32
      return json(res, 200, list(items.map((item) => ({ ...item, embedding: [1e39, ...item.embedding.slice(1)] }))))
    case "base64":
      return json(
        res,
        200,
        list(items.map((item) => ({ ...item, embedding: float32Base64(item.embedding.map((x) => x + 0.1)) })))
      )
    case "base64-infinity":
      return json(
        res,
        200,
        list(items.map((item) => ({ ...item, embedding: float32Base64([Infinity, ...item.embedding.slice(1)]) })))
      )
    case "base64-garbage":
      return json(res, 200, list(items.map((item) => ({ ...item, embedding: "not base64!" }))))
    case "invalid-json":
      return json(res, 200, "{\"data\": [")
    case "html":
      res.writeHead(200, { "content-type": "text/html" })
      return res.end("<html><body>proxy login</body></html>")
    case "huge":
      // whitespace is valid JSON padding; 2 MiB is over the limit for a small batch (1 MiB + 64 B per float)
      return json(res, 200, " ".repeat(2 * 1024 * 1024) + JSON.stringify(list(items)))
    case "redirect":
      res.writeHead(301, { location: "https://example.invalid/v2/embeddings" })
      return res.end()
    case "no-data":
      return json(res, 200, { object: "list" })
    case "500":
      return json(res, 500, openAiError("The server had an error while processing your request.", "server_error"))
    case "503-plain":
      res.writeHead(503, { "content-type": "text/plain" })
      return res.end("upstream unavailable")
    case "429":
      return json(res, 429, openAiError("Rate limit reached for requests", "requests"), { "retry-after": "2" })
    case "400":
      return json(res, 400, openAiError("This model's maximum context length is 8192 tokens."))
    case "413":
      return json(res, 413, { error: "payload too large" })
    case "422":
      return json(res, 422, { detail: "input must not be empty" })
    case "404":
      return json(res, 404, openAiError("The model `nope` does not exist"))
    case "long-error":
      return json(res, 500, openAiError("x".repeat(1000)))
    case "echo-key":
      // a careless server quoting the credentials back
      return json(res, 401, openAiError(`Incorrect API key provided: ${req.headers.authorization}. key=${KEY}`))
    case "echo-key-retry-after":
      // the credentials echoed in a header the client keeps on its error
      return json(res, 429, openAiError("Rate limit reached for requests", "requests"), {
        "retry-after": `${req.headers.authorization} ${KEY}`
      })
    case "echo-key-at-cut":
      // the key straddles the point where a quoted message is cut short
      return json(res, 500, openAiError(`${"x".repeat(195)}${KEY} and more`, "server_error"))
    case "reset-after-headers":
      res.writeHead(200, { "content-type": "application/json", "content-length": "1000" })
      res.write("{\"object\":\"list\",\"data\":[")
      return setTimeout(() => res.socket?.destroy(), 10)
    case "reset-before-headers":
      return req.socket.destroy()
    case "hang":
      return undefined
    default:
      return json(res, 404, openAiError(`unknown scenario ${scenario}`))
  }
}

const startServer: Effect.Effect<TestServer, never, Scope.Scope> = Effect.acquireRelease(
  Effect.async<{ server: Http.Server; state: TestServer }>((resume) => {
    const waiters: Array<{ n: number; resolve: () => void }> = []
    let port = 0
    const state: TestServer = {
      get port() {
        return port
      },
      baseUrl: (scenario) => `http://127.0.0.1:${port}/${scenario}/v1`,
      requests: [],
      connections: 0,
      open: new Set(),
      aborted: 0,
      abortedAtLeast: (n) =>
        state.aborted >= n ? Promise.resolve() : new Promise((resolve) => waiters.push({ n, resolve }))
    }
    const server = Http.createServer((req, res) => {
      const chunks: Array<Buffer> = []
      req.on("data", (chunk: Buffer) => chunks.push(chunk))
      req.on("end", () => {
        const scenario = (req.url ?? "/").split("/")[1] ?? ""
        const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Recorded["body"]
        state.requests.push({ path: req.url ?? "", headers: req.headers, body })
        res.on("close", () => {
          if (!res.writableEnded) {
            state.aborted++
            for (const w of waiters.splice(0)) {
              if (state.aborted >= w.n) w.resolve()
              else waiters.push(w)
            }
          }
        })
        respond(scenario, req, res, body)
      })
    })
    // long enough that the server never closes an idle connection during a test: only the client does
    server.keepAliveTimeout = 60_000
    server.on("connection", (socket: Net.Socket) => {
      state.connections++
      state.open.add(socket)
      socket.on("close", () => state.open.delete(socket))
    })
    server.listen(0, "127.0.0.1", () => {
      port = (server.address() as Net.AddressInfo).port
      resume(Effect.succeed({ server, state }))
    })
  }),
  ({ server }) =>
    Effect.async<void>((resume) => {
      server.closeAllConnections()
      server.close(() => resume(Effect.void))
    })
).pipe(Effect.map(({ state }) => state))

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

const texts = (n: number): Array<string> => Array.from({ length: n }, (_, i) => `t${i}`)

const config = (server: TestServer, scenario: string, extra: Partial<OpenAiEmbedder.Config> = {}): OpenAiEmbedder.Config => ({
  baseUrl: server.baseUrl(scenario),
  model: "text-embedding-3-small",
  dimensions: DIMS,
  apiKey: Redacted.make(KEY),
  ...extra
})

const embedderFor = (server: TestServer, scenario: string, extra: Partial<OpenAiEmbedder.Config> = {}) =>
  OpenAiEmbedder.make(config(server, scenario, extra))

/** the typed failure of an effect; a defect or a success fails the test */
const failureOf = <A>(effect: Effect.Effect<A, EmbedError>) =>
  Effect.map(Effect.exit(effect), (exit) => {
    if (Exit.isSuccess(exit)) return assert.fail("expected a failure, got a success")
    const failure = Cause.failureOption(exit.cause)
    if (Option.isNone(failure)) return assert.fail(`expected a typed failure, got ${Cause.pretty(exit.cause)}`)
    assert.instanceOf(failure.value, EmbedError)
    return failure.value
  })

const callFailure = (server: TestServer, scenario: string, extra: Partial<OpenAiEmbedder.Config> = {}, n = 3) =>
  Effect.flatMap(embedderFor(server, scenario, extra), (embedder) => failureOf(embedder.embedBatch(texts(n))))

const asArrays = (vectors: ReadonlyArray<Float32Array>) => vectors.map((v) => Array.from(v))

const tcpSockets = (): number => process.getActiveResourcesInfo().filter((r) => r === "TCPSocketWrap").length

/** poll a condition while the event loop closes handles (bounded: ~2 s) */
const eventually = (condition: () => boolean, what: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200; i++) {
      if (condition()) return
      yield* Effect.sleep("10 millis")
    }
    assert.fail(`timed out waiting for: ${what}`)
  })

/** the TCPSocketWrap count once it has not changed for 50 ms (bounded: ~2 s) */
const settledTcpSockets = Effect.gen(function*() {
  let last = tcpSockets()
  let stable = 0
  for (let i = 0; i < 200 && stable < 5; i++) {
    yield* Effect.sleep("10 millis")
    const now = tcpSockets()
    stable = now === last ? stable + 1 : 0
    last = now
  }
  return last
})

const assertNoKey = (text: string, where: string) => {
  assert.isFalse(text.includes(KEY), `the API key appears in ${where}: ${text}`)
}

// ---------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------

describe("OpenAiEmbedder", () => {
  describe("success", () => {
    it.scopedLive("embeds a batch: Float32Arrays in input order, the request as the protocol wants it", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        const embedder = yield* embedderFor(server, "ok")
        assert.strictEqual(embedder.model, "openai:text-embedding-3-small")
        assert.strictEqual(embedder.dimensions, DIMS)
        assert.strictEqual(embedder.maxBatchSize, 256)
        const vectors = yield* embedder.embedBatch(["t0", "t1", "t2"])
        assert.strictEqual(vectors.length, 3)
        for (const v of vectors) assert.instanceOf(v, Float32Array)
        assert.deepStrictEqual(asArrays(vectors), [[0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5]])
        assert.strictEqual(server.requests.length, 1)
        const [request] = server.requests
        assert.strictEqual(request.path, "/ok/v1/embeddings")
        assert.deepStrictEqual(request.body, {
          model: "text-embedding-3-small",
          input: ["t0", "t1", "t2"],
          dimensions: DIMS,
          encoding_format: "base64"
        })
        assert.strictEqual(request.headers.authorization, `Bearer ${KEY}`)
        assert.match(String(request.headers["content-type"]), /^application\/json/)
      }))

    it.scopedLive("sends no dimensions and no Authorization when not configured; custom headers are sent", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        const embedder = yield* OpenAiEmbedder.make({
          baseUrl: `${server.baseUrl("ok")}/`,
          model: "nomic-embed-text",
          dimensions: DIMS,
          headers: { "x-tenant": "acme" }
        })
        assert.strictEqual(embedder.model, "openai:nomic-embed-text")
        const vectors = yield* embedder.embedBatch(["t7"])
        assert.deepStrictEqual(asArrays(vectors), [[7, 8, 9, 10]])
        const [request] = server.requests
        assert.strictEqual(request.path, "/ok/v1/embeddings")
        assert.notProperty(request.body, "dimensions")
        assert.isUndefined(request.headers.authorization)
        assert.strictEqual(request.headers["x-tenant"], "acme")
      }))

    it.scopedLive("reorders the response by index", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        const embedder = yield* embedderFor(server, "shuffled")
        const vectors = yield* embedder.embedBatch(["t5", "t1", "t9", "t0"])
        assert.deepStrictEqual(asArrays(vectors).map((v) => v[0]), [5, 1, 9, 0])
      }))

    it.scopedLive("decodes base64 little-endian float32 vectors", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        const embedder = yield* embedderFor(server, "base64", { encodingFormat: "base64" })
        const vectors = yield* embedder.embedBatch(["t0", "t3"])
        assert.strictEqual(server.requests[0].body["encoding_format"], "base64")
        assert.deepStrictEqual(asArrays(vectors), [
          [0.1, 1.1, 2.1, 3.1].map(Math.fround),
          [3.1, 4.1, 5.1, 6.1].map(Math.fround)
        ])
        assert.deepStrictEqual(
          Array.from(OpenAiEmbedder.decodeBase64Float32(float32Base64([1.5, -2, 0])) ?? []),
          [1.5, -2, 0]
        )
        assert.isUndefined(OpenAiEmbedder.decodeBase64Float32("AAA"))
      }))

    it.scopedLive("splits a call larger than maxBatchSize into sequential requests; an empty call sends nothing", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        const embedder = yield* embedderFor(server, "shuffled", { maxBatchSize: 3 })
        assert.deepStrictEqual(yield* embedder.embedBatch([]), [])
        assert.strictEqual(server.requests.length, 0)
        const vectors = yield* embedder.embedBatch(texts(7))
        assert.deepStrictEqual(server.requests.map((r) => r.body.input.length), [3, 3, 1])
        assert.deepStrictEqual(asArrays(vectors).map((v) => v[0]), [0, 1, 2, 3, 4, 5, 6])
      }))
  })

  describe("malformed responses", () => {
    const cases: ReadonlyArray<readonly [string, EmbedError["reason"], RegExp]> = [
      ["fewer", "malformed-response", /2 embeddings for 3 inputs/],
      ["duplicate", "malformed-response", /index 0 appears more than once/],
      ["out-of-range", "malformed-response", /index 3 is out of range/],
      ["wrong-dims", "dimension-mismatch", /returned 5-dimensional vectors .* expected 4/],
      ["null-entry", "malformed-response", /NumberArray/],
      ["string-index", "malformed-response", /index/],
      ["json-infinity", "malformed-response", /non-finite value at position 0/],
      ["float32-overflow", "malformed-response", /non-finite value at position 0/],
      ["base64-infinity", "malformed-response", /non-finite value at position 0/],
      ["base64-garbage", "malformed-response", /not base64/],
      ["invalid-json", "malformed-response", /not JSON/],
      ["html", "malformed-response", /not JSON/],
      ["no-data", "malformed-response", /data/],
      ["huge", "malformed-response", /larger than \d+ bytes/]
    ]
    for (const [scenario, reason, message] of cases) {
      it.scopedLive(`${scenario} → ${reason}`, () =>
        Effect.gen(function*() {
          const server = yield* startServer
          const error = yield* callFailure(server, scenario)
          assert.strictEqual(error.reason, reason)
          assert.match(error.message, message)
          assert.isUndefined(error.status)
          assert.isFalse(Retry.isRetryable(error))
        }))
    }
  })

  describe("HTTP errors", () => {
    it.scopedLive("500 → http with status, the provider's message quoted; retryable", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        const error = yield* callFailure(server, "500")
        assert.strictEqual(error.reason, "http")
        assert.strictEqual(error.status, 500)
        assert.isUndefined(error.retryAfter)
        assert.strictEqual(
          error.message,
          "embedding request failed with HTTP 500: The server had an error while processing your request."
        )
        assert.isTrue(Retry.isRetryable(error))
        const plain = yield* callFailure(server, "503-plain")
        assert.strictEqual(plain.status, 503)
        assert.strictEqual(plain.message, "embedding request failed with HTTP 503: upstream unavailable")
      }))

    it.scopedLive("429 → http with status 429 and retryAfter as sent", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        const error = yield* callFailure(server, "429")
        assert.strictEqual(error.reason, "http")
        assert.strictEqual(error.status, 429)
        assert.strictEqual(error.retryAfter, "2")
        assert.match(error.message, /HTTP 429: Rate limit reached/)
        assert.strictEqual(Retry.retryAfterOf(error), "2")
        assert.isTrue(Retry.isRetryable(error))
      }))

    it.scopedLive("400 / 413 / 422 → invalid-input with status; not retryable", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        for (const [scenario, quote] of [["400", "maximum context length"], ["413", "payload too large"], ["422", "must not be empty"]]) {
          const error = yield* callFailure(server, scenario)
          assert.strictEqual(error.reason, "invalid-input")
          assert.strictEqual(error.status, Number(scenario))
          assert.include(error.message, `HTTP ${scenario}: `)
          assert.include(error.message, quote)
          assert.isFalse(Retry.isRetryable(error))
        }
      }))

    it.scopedLive("404 and 301 → http with a hint; a long message is truncated to 200 characters", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        const notFound = yield* callFailure(server, "404")
        assert.strictEqual(notFound.reason, "http")
        assert.strictEqual(notFound.status, 404)
        assert.include(notFound.message, "RAGPIPE_BASE_URL")
        const redirect = yield* callFailure(server, "redirect")
        assert.strictEqual(redirect.reason, "http")
        assert.strictEqual(redirect.status, 301)
        assert.include(redirect.message, "redirected to https://example.invalid/v2/embeddings")
        const long = yield* callFailure(server, "long-error")
        const quoted = long.message.slice("embedding request failed with HTTP 500: ".length)
        assert.isAtMost(quoted.length, 200)
        assert.match(quoted, /^x+…$/)
      }))
  })

  describe("transport", () => {
    it.scopedLive("a reset after the headers → connection", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        const error = yield* callFailure(server, "reset-after-headers")
        assert.strictEqual(error.reason, "connection")
        assert.match(error.message, /while reading the response/)
        assert.isTrue(Retry.isRetryable(error))
      }))

    it.scopedLive("a reset before the headers → connection, naming the code", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        const error = yield* callFailure(server, "reset-before-headers")
        assert.strictEqual(error.reason, "connection")
        assert.match(error.message, /socket hang up|ECONNRESET/)
      }))

    it.scopedLive("a refused connection → connection with ECONNREFUSED", () =>
      Effect.gen(function*() {
        const port = yield* Effect.scoped(Effect.map(startServer, (s) => s.port))
        const embedder = yield* OpenAiEmbedder.make({
          baseUrl: `http://127.0.0.1:${port}/v1`,
          model: "m",
          dimensions: DIMS,
          apiKey: Redacted.make(KEY)
        })
        const error = yield* failureOf(embedder.embedBatch(["t0"]))
        assert.strictEqual(error.reason, "connection")
        assert.include(error.message, "ECONNREFUSED")
        assert.include(error.message, `http://127.0.0.1:${port}/v1/embeddings`)
        assertNoKey(error.message, "the message")
      }))

    it.scopedLive("a timeout aborts the request: the server sees the connection close", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        const embedder = yield* embedderFor(server, "hang")
        const result = yield* embedder.embedBatch(["t0"]).pipe(Effect.timeout("200 millis"), Effect.exit)
        assert.isTrue(Exit.isFailure(result))
        yield* Effect.promise(() => server.abortedAtLeast(1)).pipe(Effect.timeout("2 seconds"))
        assert.strictEqual(server.aborted, 1)
        yield* eventually(() => server.open.size === 0, "the aborted connection to close")
      }))

    it.scopedLive("Fiber.interrupt aborts the request", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        const embedder = yield* embedderFor(server, "hang")
        const fiber = yield* Effect.fork(embedder.embedBatch(["t0", "t1"]))
        yield* eventually(() => server.requests.length === 1, "the request to arrive")
        yield* Fiber.interrupt(fiber)
        yield* Effect.promise(() => server.abortedAtLeast(1)).pipe(Effect.timeout("2 seconds"))
        // the embedder still works afterwards
        const ok = yield* OpenAiEmbedder.make(config(server, "ok"))
        assert.strictEqual((yield* ok.embedBatch(["t0"])).length, 1)
      }))
  })

  describe("sockets", () => {
    it.scopedLive("keep-alive: 20 sequential calls reuse one socket", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        const embedder = yield* embedderFor(server, "ok", { maxSockets: 2 })
        for (let i = 0; i < 20; i++) yield* embedder.embedBatch(["t0", "t1"])
        assert.strictEqual(server.requests.length, 20)
        assert.isAtMost(server.connections, 2)
        assert.strictEqual(server.connections, 1)
      }))

    it.scopedLive("concurrent calls open at most maxSockets sockets", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        const embedder = yield* embedderFor(server, "slow", { maxSockets: 3 })
        const results = yield* Effect.forEach(texts(20), (t) => embedder.embedBatch([t]), { concurrency: 20 })
        assert.deepStrictEqual(results.map((r) => r[0][0]), texts(20).map((_, i) => i))
        assert.isAtMost(server.connections, 3)
      }))

    it.scopedLive("closing the scope closes every client socket", () =>
      Effect.gen(function*() {
        // sockets of earlier tests may still be closing: wait for the count to settle
        const before = yield* settledTcpSockets
        yield* Effect.scoped(Effect.gen(function*() {
          const server = yield* startServer
          yield* Effect.scoped(Effect.gen(function*() {
            const embedder = yield* embedderFor(server, "slow", { maxSockets: 4 })
            yield* Effect.forEach(texts(8), (t) => embedder.embedBatch([t]), { concurrency: 8 })
            assert.isAbove(server.open.size, 0)
            // Node lists only ref'd handles: idle keep-alive client sockets are unref'd, so the count
            // shows the server ends, which close only when the client closes its end
            assert.isAtLeast(tcpSockets(), before + server.open.size)
          }))
          // the server never closes idle connections on its own (keepAliveTimeout 60 s): the client did
          yield* eventually(() => server.open.size === 0, "the client to close its keep-alive sockets")
        }))
        yield* eventually(() => tcpSockets() <= before, "TCPSocketWrap handles to return to the baseline")
        assert.isAtMost(tcpSockets(), before)
      }))

    it.scopedLive("a call after the scope closed fails with reason config and opens nothing", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        const embedder = yield* Effect.scoped(embedderFor(server, "ok"))
        const error = yield* failureOf(embedder.embedBatch(["t0"]))
        assert.strictEqual(error.reason, "config")
        assert.strictEqual(server.connections, 0)
      }))

    it.scopedLive("the agent is recorded in the ResourceLedger when there is one", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        const ledger = yield* ResourceLedger.make()
        yield* Effect.scoped(
          Effect.gen(function*() {
            const embedder = yield* Embedder
            yield* embedder.embedBatch(["t0"])
            const open = yield* ledger.snapshot
            assert.deepStrictEqual(open.byKind["http-agent"], { acquired: 1, released: 0, open: 1 })
            assert.strictEqual(open.open[0].label, `http://127.0.0.1:${server.port}/ok/v1/embeddings`)
          }).pipe(
            Effect.provide(
              OpenAiEmbedder.layer(config(server, "ok")).pipe(
                Layer.provide(Layer.succeed(ResourceLedger.ResourceLedger, ledger))
              )
            )
          )
        )
        const after = yield* ledger.snapshot
        assert.deepStrictEqual(after.byKind["http-agent"], { acquired: 1, released: 1, open: 0 })
      }))
  })

  describe("the API key", () => {
    it.scopedLive("never appears in errors, their string or JSON forms, logs, or the service", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        const lines: Array<string> = []
        const capture = Logger.make((options) => {
          lines.push(
            NodeUtil.inspect(options.message, { depth: 10 }),
            NodeUtil.inspect(options.annotations, { depth: 10 }),
            Cause.pretty(options.cause),
            JSON.stringify([...options.spans].map((s) => s.label))
          )
        })
        const port = yield* Effect.scoped(Effect.map(startServer, (s) => s.port))
        const program = Effect.gen(function*() {
          const errors: Array<EmbedError> = []
          for (const scenario of ["echo-key", "500", "400", "429", "wrong-dims", "invalid-json", "reset-after-headers"]) {
            errors.push(yield* callFailure(server, scenario))
          }
          const refused = yield* OpenAiEmbedder.make({ ...config(server, "x"), baseUrl: `http://127.0.0.1:${port}/v1` })
          errors.push(yield* failureOf(refused.embedBatch(["t0"])))
          const hanging = yield* embedderFor(server, "hang")
          yield* Effect.exit(Effect.timeout(hanging.embedBatch(["t0"]), "100 millis"))
          const ok = yield* embedderFor(server, "ok")
          yield* ok.embedBatch(["t0"])
          yield* Effect.logDebug("service", ok)
          return { errors, ok }
        })
        const { errors, ok } = yield* program.pipe(
          Effect.provide(Logger.replace(Logger.defaultLogger, capture)),
          Logger.withMinimumLogLevel(LogLevel.All)
        )
        const echoed = errors[0]
        assert.strictEqual(echoed.status, 401)
        assert.include(echoed.message, "<redacted>")
        assert.include(echoed.message, "RAGPIPE_API_KEY")
        assert.isTrue(server.requests.every((r) => r.headers.authorization === `Bearer ${KEY}`))
        for (const error of errors) {
          assertNoKey(error.message, "a message")
          assertNoKey(String(error), "String(error)")
          assertNoKey(JSON.stringify(error), "JSON.stringify(error)")
          assertNoKey(NodeUtil.inspect(error, { depth: 10 }), "util.inspect(error)")
          assertNoKey(Cause.pretty(Cause.fail(error)), "Cause.pretty")
        }
        assert.isTrue(lines.some((line) => line.includes("embedding response")), "debug lines were captured")
        for (const line of lines) assertNoKey(line, "a log line")
        assertNoKey(JSON.stringify(ok), "the service")
        assertNoKey(String(config(server, "ok").apiKey), "the redacted config")
        assertNoKey(NodeUtil.inspect(config(server, "ok"), { depth: 10 }), "the config")
      }))
  })

  describe("the API key in echoed headers and cut messages", () => {
    it.scopedLive("a Retry-After header echoing the key is scrubbed before it is kept on the error", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        const error = yield* callFailure(server, "echo-key-retry-after")
        assert.strictEqual(error.status, 429)
        assert.isString(error.retryAfter)
        assertNoKey(error.retryAfter!, "retryAfter")
        assert.strictEqual(error.retryAfter, "Bearer <redacted> <redacted>")
        assertNoKey(JSON.stringify(error), "JSON.stringify(error)")
        assertNoKey(NodeUtil.inspect(error, { depth: 10 }), "util.inspect(error)")
      }))

    it.scopedLive("a key cut in two by the 200-character quote limit leaves no part of it behind", () =>
      Effect.gen(function*() {
        const server = yield* startServer
        const error = yield* callFailure(server, "echo-key-at-cut")
        assert.strictEqual(error.status, 500)
        assert.include(error.message, "x".repeat(195))
        assert.notInclude(error.message, KEY.slice(0, 4))
      }))
  })

  describe("configuration", () => {
    const load = (env: Record<string, string>) =>
      Effect.withConfigProvider(OpenAiEmbedder.configFromEnv, ConfigProvider.fromMap(new Map(Object.entries(env))))

    it.effect("configFromEnv: OpenAI defaults", () =>
      Effect.gen(function*() {
        const c = yield* load({})
        assert.strictEqual(c.baseUrl, "https://api.openai.com/v1")
        assert.strictEqual(c.model, "text-embedding-3-small")
        assert.strictEqual(c.dimensions, 1536)
        assert.strictEqual(c.sendDimensions, true)
        assert.strictEqual(c.maxBatchSize, 256)
        assert.strictEqual(c.maxSockets, 8)
        assert.strictEqual(c.encodingFormat, "base64")
        assert.isUndefined(c.apiKey)
        const withKey = yield* load({ OPENAI_API_KEY: "sk-openai" })
        assert.strictEqual(Redacted.value(withKey.apiKey!), "sk-openai")
        const both = yield* load({ OPENAI_API_KEY: "sk-openai", RAGPIPE_API_KEY: "sk-ragpipe" })
        assert.strictEqual(Redacted.value(both.apiKey!), "sk-ragpipe")
        const empty = yield* load({ RAGPIPE_API_KEY: "  " })
        assert.isUndefined(empty.apiKey)
      }))

    it.effect("configFromEnv: a local server gets RAGPIPE_API_KEY but never OPENAI_API_KEY", () =>
      Effect.gen(function*() {
        const c = yield* load({
          RAGPIPE_BASE_URL: "http://localhost:11434/v1",
          RAGPIPE_MODEL: "nomic-embed-text",
          OPENAI_API_KEY: "sk-openai",
          RAGPIPE_EMBED_BATCH_SIZE: "32",
          RAGPIPE_MAX_SOCKETS: "2",
          RAGPIPE_ENCODING_FORMAT: "base64"
        })
        assert.strictEqual(c.dimensions, 768)
        assert.strictEqual(c.sendDimensions, false)
        assert.isUndefined(c.apiKey)
        assert.strictEqual(c.maxBatchSize, 32)
        assert.strictEqual(c.maxSockets, 2)
        assert.strictEqual(c.encodingFormat, "base64")
        const keyed = yield* load({
          RAGPIPE_BASE_URL: "http://localhost:8080/v1",
          RAGPIPE_API_KEY: "local",
          RAGPIPE_MODEL: "bge",
          RAGPIPE_DIMENSIONS: "1024",
          RAGPIPE_SEND_DIMENSIONS: "true"
        })
        assert.strictEqual(Redacted.value(keyed.apiKey!), "local")
        assert.strictEqual(keyed.dimensions, 1024)
        assert.strictEqual(keyed.sendDimensions, true)
        const unknown = yield* Effect.flip(load({ RAGPIPE_MODEL: "bge" }))
        assert.include(String(unknown), "RAGPIPE_DIMENSIONS")
      }))

    it.effect("apiKeyConfig: the key configFromEnv would use; a blank RAGPIPE_API_KEY does not hide OPENAI_API_KEY", () =>
      Effect.gen(function*() {
        const key = (baseUrl: string, env: Record<string, string>) =>
          Effect.withConfigProvider(
            Effect.map(OpenAiEmbedder.apiKeyConfig(baseUrl), Option.map(Redacted.value)),
            ConfigProvider.fromMap(new Map(Object.entries(env)))
          )
        const openAi = "https://api.openai.com/v1"
        const local = "http://127.0.0.1:8080/v1"
        assert.deepStrictEqual(yield* key(openAi, { RAGPIPE_API_KEY: "", OPENAI_API_KEY: "sk-openai" }), Option.some("sk-openai"))
        assert.deepStrictEqual(yield* key(openAi, { RAGPIPE_API_KEY: " ", OPENAI_API_KEY: "sk-openai" }), Option.some("sk-openai"))
        assert.deepStrictEqual(yield* key(openAi, { RAGPIPE_API_KEY: "sk-r", OPENAI_API_KEY: "sk-openai" }), Option.some("sk-r"))
        assert.deepStrictEqual(yield* key(local, { RAGPIPE_API_KEY: "", OPENAI_API_KEY: "sk-openai" }), Option.none())
        assert.deepStrictEqual(yield* key(local, { RAGPIPE_API_KEY: "sk-r" }), Option.some("sk-r"))
        assert.deepStrictEqual(yield* key("not a url", { OPENAI_API_KEY: "sk-openai" }), Option.none())
        // configFromEnv picks the same key
        const viaConfig = yield* Effect.withConfigProvider(
          OpenAiEmbedder.configFromEnv,
          ConfigProvider.fromMap(new Map([["RAGPIPE_API_KEY", ""], ["OPENAI_API_KEY", "sk-openai"]]))
        )
        assert.strictEqual(Redacted.value(viaConfig.apiKey!), "sk-openai")
      }))

    it.scopedLive("layerConfig turns a configuration error into EmbedError config", () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(
          Effect.provide(Embedder, OpenAiEmbedder.layerConfig()).pipe(
            Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["RAGPIPE_MODEL", "bge"]])))
          )
        )
        assert.strictEqual(error.reason, "config")
        assert.include(error.message, "RAGPIPE_DIMENSIONS")
      }))

    it.scopedLive("make rejects an invalid config with reason config, without echoing secrets", () =>
      Effect.gen(function*() {
        const base: OpenAiEmbedder.Config = { baseUrl: "http://127.0.0.1:1/v1", model: "m", dimensions: 4 }
        const bad: ReadonlyArray<readonly [Partial<OpenAiEmbedder.Config>, RegExp]> = [
          [{ baseUrl: "not a url" }, /not a valid URL/],
          [{ baseUrl: "ftp://example.com/v1" }, /http:\/\/ or https:\/\//],
          [{ model: " " }, /model/],
          [{ dimensions: 0 }, /dimensions/],
          [{ dimensions: 1.5 }, /dimensions/],
          [{ maxBatchSize: 0 }, /maxBatchSize/],
          [{ maxSockets: -1 }, /maxSockets/],
          [{ apiKey: Redacted.make(`${KEY}\n`) }, /API key/],
          [{ headers: { "x-secret": `${KEY}\r\nx-evil: 1` } }, /header x-secret/],
          [{ headers: { "bad header": "v" } }, /header name/],
          [{ baseUrl: "https://api.openai.com/v1" }, /^api\.openai\.com answers no request without an API key: /],
          [{ baseUrl: "https://api.openai.com/v1", apiKey: Redacted.make(" ") }, /without an API key/]
        ]
        for (const [patch, message] of bad) {
          const error = yield* Effect.flip(OpenAiEmbedder.make({ ...base, ...patch }))
          assert.strictEqual(error.reason, "config")
          assert.match(error.message, message)
          assertNoKey(error.message, "a config error")
        }
        // OpenAI's own API with a key, or an authorization header of the caller's own: accepted
        const openAi = { ...base, baseUrl: "https://api.openai.com/v1" }
        yield* OpenAiEmbedder.make({ ...openAi, apiKey: Redacted.make("sk-test") })
        yield* OpenAiEmbedder.make({ ...openAi, headers: { Authorization: "Bearer sk-test" } })
      }))

    it.effect("sendDimensions defaults to true only for text-embedding-3 models", () =>
      Effect.sync(() => {
        assert.isTrue(OpenAiEmbedder.defaultSendDimensions("text-embedding-3-large"))
        assert.isFalse(OpenAiEmbedder.defaultSendDimensions("text-embedding-ada-002"))
      }))
  })
})

/**
 * A fault-injecting, OpenAI-compatible embedding server on loopback, for
 * tests and benchmarks of HTTP embedding clients.
 *
 * `POST /v1/embeddings` (or `/embeddings`) takes the OpenAI request body
 * `{ model, input: string | string[], dimensions?, encoding_format? }` and
 * answers with the OpenAI response shape. The vectors are those of the
 * offline hashing embedder (`hashing-v1`) for the same texts and dimensions,
 * so search results computed through the server stay meaningful. With
 * `encoding_format: "base64"` each vector is its little-endian float32 bytes
 * in base64, as OpenAI sends it. `GET /health` answers 200; every other
 * method or path answers 404.
 *
 * Invalid requests get a 400 with an OpenAI-style error body
 * `{ error: { message, type: "invalid_request_error", param, code } }`: a
 * body that is not JSON, a missing or empty `input`, more than `maxBatch`
 * inputs, a bad `dimensions` or `encoding_format`. An input longer than
 * `maxInputChars`, or containing {@link rejectMarker}, is refused with a 400
 * whose `message` and `param` name its index (`input[3]`), so that a client
 * can split the batch to isolate it; only the first offending input is named.
 *
 * Faults. Each embeddings request draws one outcome (a {@link FaultKind} or
 * `"ok"`) when its headers arrive: entry `i` of `faultPlan` for the `i`-th
 * request while the plan lasts, then a draw from the `faults` rates with a
 * seeded PRNG (mulberry32). The PRNG advances exactly once per embeddings
 * request not refused with a 503 (see the bounds below), in arrival order,
 * plan or not, so a run is reproducible from its
 * seed when requests are sent one after another; concurrent requests may
 * arrive in a different order from run to run, which permutes the outcomes
 * among them (the sequence of outcomes by arrival stays the same).
 * {@link faultSequence} computes that sequence without a server.
 *
 * - `error500`: 500 with an error body (`type: "server_error"`).
 * - `rateLimit`: 429 with `Retry-After: <retryAfterSeconds>` and an error body.
 * - `hang`: the response is held for `hangMillis` (default 30 s, slower than
 *   any sane client timeout), then the request is served as `ok`. Closing the
 *   server, or the client going away, cancels the wait.
 * - `reset`: the status line, the headers (announcing a longer
 *   `Content-Length`) and part of the body are written, then the socket is
 *   destroyed: the client sees the connection die mid-response.
 * - `malformed`: 200 with a body that is not valid JSON.
 * - `wrongDimensions`: 200 with vectors of the requested dimension + 1.
 *
 * The injected faults `error500`, `rateLimit`, `reset` and `malformed` do not
 * look at the request body (like a failing proxy in front of the model);
 * `ok`, `hang` and `wrongDimensions` validate it, and an invalid body gets its
 * 400 instead. Every embeddings response carries an `x-fault-outcome` header
 * naming the outcome, which clients can ignore and tests can read.
 *
 * Load shaping. `latencyMillis` is the service time of every 200 response
 * (`ok`, `malformed`, `wrongDimensions`, and `hang` after its wait): it is
 * sent that long after serving it began, the embedding work included, so
 * that C requests at a time of B inputs take exactly the time C × B / L
 * predicts; error responses are immediate. `concurrency` caps the requests being served at once (default
 * 256): requests beyond the cap wait, after their body has been read, in a
 * FIFO queue; a hanging request holds its slot.
 *
 * Bounds. Everything the server holds is bounded by default, so a runaway
 * client cannot exhaust it: `maxConnections` (default 256) makes Node drop
 * connections beyond it as soon as they are accepted; `maxQueued` (default
 * 1024) bounds the requests waiting for a slot (their body being read or
 * queued), and a request arriving when that many wait gets a 503
 * (`server_busy`) without drawing a fault; `maxBodyBytes` bounds each body;
 * `requestLogSize` (default 1000) bounds the request log, which keeps the
 * most recent requests. After `maxRequests` embeddings requests (default: no
 * bound), every further one gets a 503 without drawing a fault (the first
 * such refusal is logged as a warning), which bounds a runaway test.
 *
 * The request log records, for each embeddings request, when it arrived and
 * ended (in `Clock` milliseconds of the scope that started the server), how
 * it was answered, and the model and number of inputs it asked for: tests
 * read batch sizes, model names and the spacing of retries from it.
 *
 * Timers: the server is an IO adapter built directly on `node:http`, and its
 * delays (`hangMillis`, `latencyMillis`) are plain `setTimeout`s, each
 * tracked and cleared when its request ends or the server closes.
 *
 * @since 0.1.0
 */
import type * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as NodeHttp from "node:http"
import type * as NodeNet from "node:net"
import { defaultDimensions } from "./Embedder.js"
import type { Service as EmbedderService } from "./Embedder.js"
import { makeHashingEmbedder } from "./internal/hashingEmbedder.js"

// -----------------------------------------------------------------------------
// models
// -----------------------------------------------------------------------------

/**
 * A fault the server can inject into an embeddings request.
 *
 * @since 0.1.0
 * @category models
 */
export type FaultKind = "error500" | "rateLimit" | "hang" | "reset" | "malformed" | "wrongDimensions"

/**
 * Every fault kind, in the order their rates are stacked when drawing: with
 * rates `r1, r2, ...` a draw `u` in [0, 1) picks the first kind whose
 * cumulative rate exceeds `u`, and `"ok"` when none does.
 *
 * @since 0.1.0
 * @category constants
 */
export const faultKinds: ReadonlyArray<FaultKind> = [
  "error500",
  "rateLimit",
  "hang",
  "reset",
  "malformed",
  "wrongDimensions"
]

/**
 * How the server answered a request; every request is counted under exactly
 * one outcome (a `hang` counts as `hang`, whatever it answers afterwards).
 *
 * - a {@link FaultKind} or `"ok"`: an embeddings request served that way
 * - `"badRequest"`: a 400 (or 413 for an oversized body)
 * - `"overLimit"`: a 503 after `maxRequests`
 * - `"busy"`: a 503 because `maxQueued` requests were already waiting
 * - `"notFound"`: a 404
 * - `"health"`: `GET /health`
 *
 * @since 0.1.0
 * @category models
 */
export type Outcome = FaultKind | "ok" | "badRequest" | "overLimit" | "busy" | "notFound" | "health"

/**
 * How the fault server behaves: its vectors, latency, limits, and the share
 * (or the exact sequence) of each fault it injects. Every field is optional.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** port to listen on; 0 (the default) picks a free port */
  readonly port?: number
  /** loopback address to listen on (default `"127.0.0.1"`); any other host is refused */
  readonly host?: "127.0.0.1" | "::1" | "localhost"
  /** seed of the fault PRNG, an integer (default 0; taken modulo 2^32) */
  readonly seed?: number
  /** dimensions of the vectors when a request names none (default 384) */
  readonly dimensions?: number
  /** rate of each fault, each in [0, 1], summing to at most 1 (default: no faults) */
  readonly faults?: Partial<Record<FaultKind, number>>
  /** outcomes of the first requests, in arrival order; later requests draw from `faults` */
  readonly faultPlan?: ReadonlyArray<FaultKind | "ok">
  /** value of the `Retry-After` header of a `rateLimit` 429, in seconds (default 1) */
  readonly retryAfterSeconds?: number
  /** how long a `hang` holds its response (default 30 000 ms) */
  readonly hangMillis?: number
  /** fixed delay before every 200 response (default 0) */
  readonly latencyMillis?: number
  /** how many requests are served at once; the others wait in a FIFO queue (default 256) */
  readonly concurrency?: number
  /** connections beyond this many are dropped as soon as they are accepted (default 256) */
  readonly maxConnections?: number
  /**
   * requests waiting for a slot (body being read, or queued) at most; a request
   * arriving when this many wait gets a 503 (default 1024)
   */
  readonly maxQueued?: number
  /** embeddings requests kept in the request log, the most recent ones (default 1000; 0 keeps none) */
  readonly requestLogSize?: number
  /** most inputs in one request (default 2048, as OpenAI) */
  readonly maxBatch?: number
  /** longest input, in UTF-16 code units (default 32 768) */
  readonly maxInputChars?: number
  /** largest request body, in bytes; larger ones get a 413 (default 64 MiB) */
  readonly maxBodyBytes?: number
  /** embeddings requests served before every further one gets a 503 (default: no bound) */
  readonly maxRequests?: number
}

/**
 * A point-in-time view of the server.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  /** HTTP requests received, on any path */
  readonly requests: number
  /** requests by outcome; a request is counted once its response is chosen */
  readonly outcomes: Readonly<Record<Outcome, number>>
  /**
   * requests whose client went away before their response was complete
   * (injected resets and connections destroyed by closing the server excluded)
   */
  readonly clientAborts: number
  /** requests being served now (at most `concurrency`) */
  readonly inFlight: number
  /** requests waiting for a slot now, their body read (in the FIFO queue) */
  readonly queued: number
  /** requests waiting for a slot now, counted against `maxQueued`: bodies being read plus `queued` */
  readonly waiting: number
  /** the most requests ever served at once */
  readonly maxConcurrency: number
  /** connections accepted so far */
  readonly connections: number
  /** connections dropped because of `maxConnections` */
  readonly droppedConnections: number
  /** connections open now */
  readonly openSockets: number
  /** delay timers (hang, latency) pending now */
  readonly pendingTimers: number
}

/**
 * One embeddings request in the request log.
 *
 * @since 0.1.0
 * @category models
 */
export interface RequestRecord {
  /** arrival order among embeddings requests, from 1 */
  readonly seq: number
  /** when its headers arrived, in `Clock` milliseconds */
  readonly arrivedAt: number
  /** when its response was complete or its connection closed, in `Clock` milliseconds; null while open */
  readonly endedAt: number | null
  /** how it was answered; null while undecided */
  readonly outcome: Outcome | null
  /** the `model` of its body; null when the body was not read or is not a valid request */
  readonly model: string | null
  /** the number of inputs of its body; null when the body was not read or is not a valid request */
  readonly inputs: number | null
}

/**
 * A running server.
 *
 * @since 0.1.0
 * @category models
 */
export interface FaultServer {
  /**
   * Base URL including `/v1`, e.g. `http://127.0.0.1:41234/v1`, like
   * OpenAI's `https://api.openai.com/v1`: clients append `/embeddings`.
   */
  readonly url: string
  readonly port: number
  /** the current counters */
  readonly stats: Effect.Effect<Stats>
  /** the request log: the most recent embeddings requests (at most `requestLogSize`), oldest first */
  readonly requests: Effect.Effect<ReadonlyArray<RequestRecord>>
}

/**
 * The server could not start: invalid options, or listening failed.
 *
 * @since 0.1.0
 * @category errors
 */
export class FaultServerError extends Schema.TaggedError<FaultServerError>()("FaultServerError", {
  reason: Schema.Literal("invalid-options", "listen"),
  message: Schema.String
}) {}

// -----------------------------------------------------------------------------
// constants
// -----------------------------------------------------------------------------

/**
 * An input containing this marker is refused with a 400 naming its index.
 *
 * @since 0.1.0
 * @category constants
 */
export const rejectMarker = "\u0000REJECT"

/**
 * Default options of {@link start}.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaults = {
  host: "127.0.0.1",
  seed: 0,
  dimensions: defaultDimensions,
  retryAfterSeconds: 1,
  hangMillis: 30_000,
  latencyMillis: 0,
  maxBatch: 2048,
  maxInputChars: 32_768,
  maxBodyBytes: 64 * 1024 * 1024,
  concurrency: 256,
  maxConnections: 256,
  maxQueued: 1024,
  requestLogSize: 1000
} as const

const maxDimensions = 16_000
const maxTimerMillis = 2_147_483_647
const loopbackHosts: ReadonlyArray<string> = ["127.0.0.1", "::1", "localhost"]

// -----------------------------------------------------------------------------
// fault drawing
// -----------------------------------------------------------------------------

/** mulberry32: a small, fast, well-mixed 32-bit PRNG; returns a draw in [0, 1). */
const mulberry32 = (seed: number): () => number => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const makeDrawer = (
  options: Pick<Options, "seed" | "faults" | "faultPlan">
): () => FaultKind | "ok" => {
  const random = mulberry32(options.seed ?? defaults.seed)
  const rates = options.faults ?? {}
  const plan = options.faultPlan ?? []
  let index = 0
  return () => {
    const u = random()
    const i = index++
    if (i < plan.length) return plan[i]
    let cumulative = 0
    for (const kind of faultKinds) {
      cumulative += rates[kind] ?? 0
      if (u < cumulative) return kind
    }
    return "ok"
  }
}

/**
 * The outcomes the first `count` embeddings requests of a server with these
 * options draw, in arrival order: a test or benchmark can predict exactly
 * what a sequential client will see.
 *
 * @since 0.1.0
 * @category utils
 */
export const faultSequence = (
  options: Pick<Options, "seed" | "faults" | "faultPlan">,
  count: number
): ReadonlyArray<FaultKind | "ok"> => {
  const draw = makeDrawer(options)
  const out: Array<FaultKind | "ok"> = []
  for (let i = 0; i < count; i++) out.push(draw())
  return out
}

// -----------------------------------------------------------------------------
// options
// -----------------------------------------------------------------------------

interface Resolved {
  readonly port: number
  readonly host: string
  readonly dimensions: number
  readonly retryAfterSeconds: number
  readonly hangMillis: number
  readonly latencyMillis: number
  readonly concurrency: number
  readonly maxConnections: number
  readonly maxQueued: number
  readonly requestLogSize: number
  readonly maxBatch: number
  readonly maxInputChars: number
  readonly maxBodyBytes: number
  readonly maxRequests: number
}

const isIntIn = (value: number, min: number, max: number): boolean =>
  Number.isInteger(value) && value >= min && value <= max

const validate = (options: Options): Resolved | string => {
  const host: unknown = options.host ?? defaults.host
  if (typeof host !== "string" || !loopbackHosts.includes(host)) {
    return `host must be one of ${loopbackHosts.join(", ")} (loopback only; got ${String(host)})`
  }
  const port = options.port ?? 0
  if (!isIntIn(port, 0, 65535)) return `port must be an integer between 0 and 65535 (got ${port})`
  const seed = options.seed ?? defaults.seed
  if (!Number.isSafeInteger(seed)) return `seed must be an integer (got ${seed})`
  const dimensions = options.dimensions ?? defaults.dimensions
  if (!isIntIn(dimensions, 1, maxDimensions)) {
    return `dimensions must be an integer between 1 and ${maxDimensions} (got ${dimensions})`
  }
  let sum = 0
  for (const [kind, rate] of Object.entries(options.faults ?? {})) {
    if (!(faultKinds as ReadonlyArray<string>).includes(kind)) {
      return `unknown fault "${kind}" (known: ${faultKinds.join(", ")})`
    }
    if (rate === undefined) continue
    if (typeof rate !== "number" || !(rate >= 0 && rate <= 1)) {
      return `the rate of ${kind} must be a number between 0 and 1 (got ${String(rate)})`
    }
    sum += rate
  }
  if (sum > 1 + 1e-9) return `fault rates must sum to at most 1 (got ${sum})`
  for (const [i, entry] of (options.faultPlan ?? []).entries()) {
    if (entry !== "ok" && !faultKinds.includes(entry)) {
      return `faultPlan[${i}] must be "ok" or one of ${faultKinds.join(", ")} (got ${String(entry)})`
    }
  }
  const retryAfterSeconds = options.retryAfterSeconds ?? defaults.retryAfterSeconds
  if (!isIntIn(retryAfterSeconds, 0, 86_400)) {
    return `retryAfterSeconds must be an integer between 0 and 86400 (got ${retryAfterSeconds})`
  }
  const hangMillis = options.hangMillis ?? defaults.hangMillis
  if (!isIntIn(hangMillis, 0, maxTimerMillis)) return `hangMillis must be a non-negative integer (got ${hangMillis})`
  const latencyMillis = options.latencyMillis ?? defaults.latencyMillis
  if (!isIntIn(latencyMillis, 0, maxTimerMillis)) {
    return `latencyMillis must be a non-negative integer (got ${latencyMillis})`
  }
  const concurrency = options.concurrency ?? defaults.concurrency
  if (!isIntIn(concurrency, 1, Number.MAX_SAFE_INTEGER)) {
    return `concurrency must be a positive integer (got ${concurrency})`
  }
  const maxConnections = options.maxConnections ?? defaults.maxConnections
  if (!isIntIn(maxConnections, 1, Number.MAX_SAFE_INTEGER)) {
    return `maxConnections must be a positive integer (got ${maxConnections})`
  }
  const maxQueued = options.maxQueued ?? defaults.maxQueued
  if (!isIntIn(maxQueued, 1, Number.MAX_SAFE_INTEGER)) {
    return `maxQueued must be a positive integer (got ${maxQueued})`
  }
  const requestLogSize = options.requestLogSize ?? defaults.requestLogSize
  if (!isIntIn(requestLogSize, 0, 1_000_000)) {
    return `requestLogSize must be an integer between 0 and 1000000 (got ${requestLogSize})`
  }
  const maxBatch = options.maxBatch ?? defaults.maxBatch
  if (!isIntIn(maxBatch, 1, Number.MAX_SAFE_INTEGER)) return `maxBatch must be a positive integer (got ${maxBatch})`
  const maxInputChars = options.maxInputChars ?? defaults.maxInputChars
  if (!isIntIn(maxInputChars, 1, Number.MAX_SAFE_INTEGER)) {
    return `maxInputChars must be a positive integer (got ${maxInputChars})`
  }
  const maxBodyBytes = options.maxBodyBytes ?? defaults.maxBodyBytes
  if (!isIntIn(maxBodyBytes, 1, 2 ** 31)) return `maxBodyBytes must be a positive integer (got ${maxBodyBytes})`
  const maxRequests = options.maxRequests ?? Number.MAX_SAFE_INTEGER
  if (!isIntIn(maxRequests, 0, Number.MAX_SAFE_INTEGER)) {
    return `maxRequests must be a non-negative integer (got ${maxRequests})`
  }
  return {
    port,
    host,
    dimensions,
    retryAfterSeconds,
    hangMillis,
    latencyMillis,
    concurrency,
    maxConnections,
    maxQueued,
    requestLogSize,
    maxBatch,
    maxInputChars,
    maxBodyBytes,
    maxRequests
  }
}

// -----------------------------------------------------------------------------
// request parsing and responses
// -----------------------------------------------------------------------------

interface ApiError {
  readonly status: number
  readonly message: string
  readonly type: string
  readonly param: string | null
  readonly code: string | null
}

interface EmbeddingsRequest {
  readonly model: string
  readonly inputs: ReadonlyArray<string>
  readonly dimensions: number
  readonly base64: boolean
}

const invalid = (message: string, param: string | null, code: string | null): ApiError => ({
  status: 400,
  message,
  type: "invalid_request_error",
  param,
  code
})

const parseRequest = (body: string, config: Resolved): EmbeddingsRequest | ApiError => {
  let json: unknown
  try {
    json = JSON.parse(body)
  } catch {
    return invalid("The request body is not valid JSON.", null, "invalid_json")
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return invalid("The request body must be a JSON object.", null, "invalid_json")
  }
  const fields = json as Record<string, unknown>
  const model = fields["model"]
  if (typeof model !== "string" || model.length === 0) {
    return invalid("'model' is required and must be a non-empty string.", "model", "missing_required_parameter")
  }
  const input = fields["input"]
  let inputs: ReadonlyArray<string>
  if (typeof input === "string") {
    inputs = [input]
  } else if (Array.isArray(input)) {
    if (input.length === 0) return invalid("'input' must not be an empty array.", "input", "invalid_value")
    const index = input.findIndex((x) => typeof x !== "string")
    if (index !== -1) {
      return invalid(`'input[${index}]' must be a string (index ${index}).`, `input[${index}]`, "invalid_type")
    }
    inputs = input as ReadonlyArray<string>
  } else if (input === undefined) {
    return invalid("'input' is required.", "input", "missing_required_parameter")
  } else {
    return invalid("'input' must be a string or an array of strings.", "input", "invalid_type")
  }
  if (inputs.length > config.maxBatch) {
    return invalid(
      `'input' has ${inputs.length} items, more than the maximum of ${config.maxBatch}.`,
      "input",
      "too_many_inputs"
    )
  }
  const dimensions = fields["dimensions"] ?? config.dimensions
  if (typeof dimensions !== "number" || !isIntIn(dimensions, 1, maxDimensions)) {
    return invalid(
      `'dimensions' must be an integer between 1 and ${maxDimensions}.`,
      "dimensions",
      "invalid_value"
    )
  }
  const format = fields["encoding_format"] ?? "float"
  if (format !== "float" && format !== "base64") {
    return invalid("'encoding_format' must be \"float\" or \"base64\".", "encoding_format", "invalid_value")
  }
  for (let i = 0; i < inputs.length; i++) {
    const text = inputs[i]
    if (text.length > config.maxInputChars) {
      return invalid(
        `'input[${i}]' (index ${i}) is too long: ${text.length} characters, more than the maximum of ` +
          `${config.maxInputChars}.`,
        `input[${i}]`,
        "input_too_long"
      )
    }
    if (text.includes(rejectMarker)) {
      return invalid(`'input[${i}]' (index ${i}) was rejected by the provider.`, `input[${i}]`, "input_rejected")
    }
  }
  return { model, inputs, dimensions, base64: format === "base64" }
}

const isApiError = (x: EmbeddingsRequest | ApiError): x is ApiError => "status" in x

const errorBody = (error: ApiError): string =>
  JSON.stringify({ error: { message: error.message, type: error.type, param: error.param, code: error.code } })

/** Little-endian float32 bytes, base64 (what OpenAI sends for `encoding_format: "base64"`). */
const toBase64 = (vector: Float32Array): string => {
  const bytes = new Uint8Array(vector.length * 4)
  const view = new DataView(bytes.buffer)
  for (let i = 0; i < vector.length; i++) view.setFloat32(i * 4, vector[i], true)
  return Buffer.from(bytes).toString("base64")
}

/** The start of a well-formed response, cut off: what `malformed` and `reset` send. */
const truncatedBody = "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":[0.0123,-0.0456,"

// -----------------------------------------------------------------------------
// the server
// -----------------------------------------------------------------------------

interface MutableRecord {
  seq: number
  arrivedAt: number
  endedAt: number | null
  outcome: Outcome | null
  model: string | null
  inputs: number | null
}

interface Pending {
  readonly res: NodeHttp.ServerResponse
  readonly fault: FaultKind | "ok"
  readonly record: MutableRecord
  /** the body, parsed once it has been read */
  request: EmbeddingsRequest | ApiError | undefined
  state: "reading" | "queued" | "serving" | "closed"
  timer: ReturnType<typeof setTimeout> | undefined
  outcome: Outcome | undefined
  reset: boolean
}

/**
 * Start a server on loopback. It listens until the scope closes; closing
 * stops accepting connections, clears every pending timer, destroys every
 * open socket and waits until the server and its sockets are closed.
 *
 * Fails with a {@link FaultServerError} when an option is invalid (including
 * a non-loopback `host`) or the server cannot listen (e.g. the port is taken).
 *
 * @since 0.1.0
 * @category constructors
 */
export const start = (options: Options = {}): Effect.Effect<FaultServer, FaultServerError, Scope.Scope> =>
  Effect.gen(function*() {
    const config = validate(options)
    if (typeof config === "string") {
      return yield* Effect.fail(new FaultServerError({ reason: "invalid-options", message: config }))
    }
    const runtime = yield* Effect.runtime<never>()
    const clock: Clock.Clock = yield* Effect.clock
    const draw = makeDrawer(options)

    const outcomes: Record<Outcome, number> = {
      ok: 0,
      error500: 0,
      rateLimit: 0,
      hang: 0,
      reset: 0,
      malformed: 0,
      wrongDimensions: 0,
      badRequest: 0,
      overLimit: 0,
      busy: 0,
      notFound: 0,
      health: 0
    }
    let requests = 0
    let embeddingsRequests = 0
    let clientAborts = 0
    let inFlight = 0
    /** requests reading their body or queued: what `maxQueued` bounds */
    let waiting = 0
    let maxConcurrency = 0
    let connections = 0
    let droppedConnections = 0
    let closing = false
    let warnedOverLimit = false
    const sockets = new Set<NodeNet.Socket>()
    const timers = new Set<ReturnType<typeof setTimeout>>()
    const queue: Array<Pending> = []
    const embedders = new Map<number, EmbedderService>()
    const log: Array<MutableRecord> = []

    const record = (): MutableRecord => {
      const entry: MutableRecord = {
        seq: embeddingsRequests,
        arrivedAt: clock.unsafeCurrentTimeMillis(),
        endedAt: null,
        outcome: null,
        model: null,
        inputs: null
      }
      if (config.requestLogSize > 0) {
        log.push(entry)
        if (log.length > config.requestLogSize) log.shift()
      }
      return entry
    }

    const embedderFor = (dimensions: number): EmbedderService => {
      let embedder = embedders.get(dimensions)
      if (embedder === undefined) {
        if (embedders.size >= 16) embedders.clear()
        embedder = makeHashingEmbedder({ dimensions })
        embedders.set(dimensions, embedder)
      }
      return embedder
    }

    const count = (pending: Pending, outcome: Outcome): void => {
      if (pending.outcome !== undefined) return
      pending.outcome = outcome
      pending.record.outcome = outcome
      outcomes[outcome]++
    }

    const send = (
      res: NodeHttp.ServerResponse,
      status: number,
      body: string,
      headers: Readonly<Record<string, string>> = {}
    ): void => {
      if (res.headersSent || res.destroyed) return
      res.writeHead(status, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(body),
        ...headers
      })
      res.end(body)
    }

    const sendError = (pending: Pending, outcome: Outcome, error: ApiError, headers = {}): void => {
      count(pending, outcome)
      send(pending.res, error.status, errorBody(error), { "x-fault-outcome": outcome, ...headers })
    }

    /** Run `f` after `millis`, unless the request or the server closes first. */
    const later = (pending: Pending, millis: number, f: () => void): void => {
      if (millis <= 0) return f()
      const timer = setTimeout(() => {
        timers.delete(timer)
        pending.timer = undefined
        if (pending.state !== "closed") f()
      }, millis)
      timers.add(timer)
      pending.timer = timer
    }

    const serveEmbeddings = (pending: Pending, extraDimensions: number): void => {
      const request = pending.request
      if (request === undefined) return
      if (isApiError(request)) return sendError(pending, "badRequest", request)
      const started = performance.now()
      const embedder = embedderFor(request.dimensions + extraDimensions)
      const vectors = Effect.runSync(embedder.embedBatch(request.inputs))
      let tokens = 0
      for (const text of request.inputs) tokens += Math.ceil(text.length / 4)
      const body = JSON.stringify({
        object: "list",
        data: vectors.map((vector, index) => ({
          object: "embedding",
          index,
          embedding: request.base64 ? toBase64(vector) : Array.from(vector)
        })),
        model: request.model,
        usage: { prompt_tokens: tokens, total_tokens: tokens }
      })
      const outcome = extraDimensions === 0 ? "ok" : "wrongDimensions"
      // the work above is part of the latency, not added to it
      later(pending, Math.round(config.latencyMillis - (performance.now() - started)), () => {
        count(pending, outcome)
        send(pending.res, 200, body, { "x-fault-outcome": pending.outcome ?? outcome })
      })
    }

    const serve = (pending: Pending): void => {
      const { res } = pending
      switch (pending.fault) {
        case "ok":
          return serveEmbeddings(pending, 0)
        case "wrongDimensions":
          return serveEmbeddings(pending, 1)
        case "hang":
          count(pending, "hang")
          return later(pending, config.hangMillis, () => serveEmbeddings(pending, 0))
        case "error500":
          return sendError(pending, "error500", {
            status: 500,
            message: "The server had an error while processing your request (injected fault).",
            type: "server_error",
            param: null,
            code: "injected_error500"
          })
        case "rateLimit":
          return sendError(pending, "rateLimit", {
            status: 429,
            message: "Rate limit reached for requests (injected fault).",
            type: "requests",
            param: null,
            code: "rate_limit_exceeded"
          }, { "retry-after": String(config.retryAfterSeconds) })
        case "malformed":
          return later(pending, config.latencyMillis, () => {
            count(pending, "malformed")
            send(res, 200, truncatedBody, { "x-fault-outcome": "malformed" })
          })
        case "reset": {
          count(pending, "reset")
          pending.reset = true
          res.writeHead(200, {
            "content-type": "application/json",
            "content-length": truncatedBody.length + 4096,
            "x-fault-outcome": "reset"
          })
          res.write(truncatedBody, () => res.socket?.destroy())
          return
        }
      }
    }

    const admit = (): void => {
      while (!closing && inFlight < config.concurrency && queue.length > 0) {
        const pending = queue.shift()!
        pending.state = "serving"
        waiting--
        inFlight++
        if (inFlight > maxConcurrency) maxConcurrency = inFlight
        serve(pending)
      }
    }

    const onClose = (pending: Pending): void => {
      const previous = pending.state
      if (previous === "closed") return
      pending.state = "closed"
      if (pending.timer !== undefined) {
        clearTimeout(pending.timer)
        timers.delete(pending.timer)
        pending.timer = undefined
      }
      if (!pending.res.writableFinished && !pending.reset && !closing) clientAborts++
      if (previous === "reading") {
        waiting--
      } else if (previous === "queued") {
        waiting--
        const index = queue.indexOf(pending)
        if (index !== -1) queue.splice(index, 1)
      } else if (previous === "serving") {
        inFlight--
        admit()
      }
    }

    const onEmbeddings = (req: NodeHttp.IncomingMessage, res: NodeHttp.ServerResponse): void => {
      embeddingsRequests++
      const entry = record()
      res.on("close", () => {
        if (entry.endedAt === null) entry.endedAt = clock.unsafeCurrentTimeMillis()
      })
      if (embeddingsRequests > config.maxRequests) {
        outcomes.overLimit++
        entry.outcome = "overLimit"
        if (!warnedOverLimit) {
          warnedOverLimit = true
          Runtime.runSync(runtime)(
            Effect.logWarning(
              `fault server: more than maxRequests (${config.maxRequests}) embeddings requests; answering 503`
            )
          )
        }
        send(
          res,
          503,
          errorBody({
            status: 503,
            message: `The server is over its request bound (maxRequests = ${config.maxRequests}).`,
            type: "server_error",
            param: null,
            code: "max_requests_exceeded"
          }),
          { "x-fault-outcome": "overLimit" }
        )
        return
      }
      if (waiting >= config.maxQueued) {
        outcomes.busy++
        entry.outcome = "busy"
        send(
          res,
          503,
          errorBody({
            status: 503,
            message: `The server is busy: ${config.maxQueued} requests are already waiting (maxQueued).`,
            type: "server_error",
            param: null,
            code: "server_busy"
          }),
          { "x-fault-outcome": "busy" }
        )
        return
      }
      waiting++
      const pending: Pending = {
        res,
        fault: draw(),
        record: entry,
        request: undefined,
        state: "reading",
        timer: undefined,
        outcome: undefined,
        reset: false
      }
      res.on("close", () => onClose(pending))
      const chunks: Array<Buffer> = []
      let size = 0
      let tooLarge = false
      req.on("data", (chunk: Buffer) => {
        if (tooLarge) return
        size += chunk.length
        if (size > config.maxBodyBytes) {
          tooLarge = true
          chunks.length = 0
          sendError(pending, "badRequest", {
            status: 413,
            message: `The request body is larger than ${config.maxBodyBytes} bytes.`,
            type: "invalid_request_error",
            param: null,
            code: "request_too_large"
          }, { connection: "close" })
          return
        }
        chunks.push(chunk)
      })
      req.on("end", () => {
        if (tooLarge || pending.state !== "reading") return
        const request = parseRequest(Buffer.concat(chunks).toString("utf8"), config)
        chunks.length = 0
        pending.request = request
        if (!isApiError(request)) {
          entry.model = request.model
          entry.inputs = request.inputs.length
        }
        pending.state = "queued"
        queue.push(pending)
        admit()
      })
      req.on("error", () => {
        // the connection died while the body was being read; `close` cleans up
      })
    }

    const onRequest = (req: NodeHttp.IncomingMessage, res: NodeHttp.ServerResponse): void => {
      requests++
      if (closing) {
        res.destroy()
        return
      }
      const url = req.url ?? "/"
      const query = url.indexOf("?")
      const path = query === -1 ? url : url.slice(0, query)
      if (req.method === "POST" && (path === "/embeddings" || path === "/v1/embeddings")) {
        return onEmbeddings(req, res)
      }
      if (req.method === "GET" && path === "/health") {
        outcomes.health++
        return send(res, 200, JSON.stringify({ status: "ok" }))
      }
      outcomes.notFound++
      send(
        res,
        404,
        errorBody({
          status: 404,
          message: `Unknown request URL: ${req.method ?? "?"} ${path}.`,
          type: "invalid_request_error",
          param: null,
          code: "unknown_url"
        })
      )
    }

    const server = yield* Effect.acquireRelease(
      Effect.async<NodeHttp.Server, FaultServerError>((resume) => {
        const server = NodeHttp.createServer(onRequest)
        server.maxConnections = config.maxConnections
        server.on("connection", (socket: NodeNet.Socket) => {
          connections++
          if (closing) {
            socket.destroy()
            return
          }
          sockets.add(socket)
          socket.on("close", () => sockets.delete(socket))
        })
        server.on("drop", () => {
          droppedConnections++
        })
        server.on("clientError", (_error, socket) => {
          socket.destroy()
        })
        const onListenError = (error: Error) => {
          resume(
            Effect.fail(
              new FaultServerError({
                reason: "listen",
                message: `cannot listen on ${config.host}:${config.port}: ${error.message}`
              })
            )
          )
        }
        server.once("error", onListenError)
        server.listen({ port: config.port, host: config.host }, () => {
          server.off("error", onListenError)
          resume(Effect.succeed(server))
        })
      }),
      (server) =>
        Effect.async<void>((resume) => {
          closing = true
          for (const timer of timers) clearTimeout(timer)
          timers.clear()
          queue.length = 0
          server.close(() => {
            // let libuv run the close callbacks of the handles before reporting closed
            setImmediate(() => setImmediate(() => resume(Effect.void)))
          })
          for (const socket of sockets) socket.destroy()
        })
    )

    const address = server.address() as NodeNet.AddressInfo
    const hostInUrl = address.family === "IPv6" || address.address.includes(":")
      ? `[${address.address}]`
      : address.address

    const stats = Effect.sync((): Stats => ({
      requests,
      outcomes: { ...outcomes },
      clientAborts,
      inFlight,
      queued: queue.length,
      waiting,
      maxConcurrency,
      connections,
      droppedConnections,
      openSockets: sockets.size,
      pendingTimers: timers.size
    }))

    const requestLog = Effect.sync((): ReadonlyArray<RequestRecord> => log.map((entry) => ({ ...entry })))

    return { url: `http://${hostInUrl}:${address.port}/v1`, port: address.port, stats, requests: requestLog }
  })

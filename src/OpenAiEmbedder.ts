/**
 * An embedding provider speaking the OpenAI embeddings protocol, which
 * OpenAI, Ollama, vLLM, Hugging Face TEI, LM Studio and llama.cpp all serve:
 * `POST {baseUrl}/embeddings` with `{ model, input, dimensions?, encoding_format }`
 * answered by `{ data: [{ index, embedding }] }`.
 *
 * Requests go through `@effect/platform`'s `HttpClient` over Node's
 * `http`/`https` with one keep-alive agent per embedder. The agent lives in
 * the scope the embedder is built in: when that scope closes the agent is
 * destroyed, which closes every socket it holds, idle or busy. Interrupting a
 * call (a timeout, Ctrl-C) aborts its HTTP request.
 *
 * The embedder does not retry, time out or rate-limit: the pipeline wraps
 * every call with a timeout, a retry policy and a circuit breaker, and reads
 * the `reason`, `status` and `retryAfter` of the {@link EmbedError}s raised
 * here to decide (see `Retry.classify`).
 *
 * The API key is kept `Redacted` and unwrapped only to set the
 * `Authorization` header; it never appears in an error, a log line or the
 * description of the service. Messages quoted from the server are scrubbed
 * of it too, in case the server echoes it back.
 *
 * @since 0.1.0
 */
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as Headers from "@effect/platform/Headers"
import type * as HttpClientError from "@effect/platform/HttpClientError"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as HttpIncomingMessage from "@effect/platform/HttpIncomingMessage"
import * as EffectConfig from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Http from "node:http"
import * as Https from "node:https"
import type { Embedding } from "./Domain.js"
import { Embedder, type Service } from "./Embedder.js"
import { EmbedError } from "./Errors.js"
import { ResourceLedger } from "./ResourceLedger.js"

// ---------------------------------------------------------------------------
// configuration
// ---------------------------------------------------------------------------

/**
 * How to reach an OpenAI-compatible embeddings endpoint.
 *
 * @since 0.1.0
 * @category models
 */
export interface Config {
  /** the API root, e.g. `https://api.openai.com/v1` or `http://localhost:11434/v1`; `/embeddings` is appended */
  readonly baseUrl: string
  /** the model as the server names it, e.g. `text-embedding-3-small`, `nomic-embed-text` */
  readonly model: string
  /**
   * The length every returned vector must have. Sent to the server as
   * `dimensions` only when {@link Config.sendDimensions} is true: most local
   * servers reject or ignore the field, and only models trained for it
   * (OpenAI's `text-embedding-3-*`) can shorten their vectors.
   */
  readonly dimensions: number
  /** send `dimensions` in the request (default: true for `text-embedding-3*` models, false otherwise) */
  readonly sendDimensions?: boolean | undefined
  /** sent as `Authorization: Bearer <key>`; local servers usually need none */
  readonly apiKey?: Redacted.Redacted<string> | undefined
  /** the most texts sent in one request (default 256); larger calls are split, see {@link make} */
  readonly maxBatchSize?: number | undefined
  /** the most sockets open to the server at once (default 8); further requests queue */
  readonly maxSockets?: number | undefined
  /**
   * how the server should encode vectors (default `"base64"`, as OpenAI's
   * own SDK asks: about 4× smaller on the wire and several times cheaper to
   * decode than JSON numbers); `"float"` for a server that refuses base64.
   * A server that ignores the setting and answers with numbers is read too.
   */
  readonly encodingFormat?: "float" | "base64" | undefined
  /**
   * Extra request headers (e.g. `api-key` for Azure, an `OpenAI-Organization`).
   * Their values are treated as secrets: redacted from traces, scrubbed from
   * messages.
   */
  readonly headers?: Readonly<Record<string, string>> | undefined
}

/**
 * The OpenAI API root, the default `baseUrl`.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultBaseUrl = "https://api.openai.com/v1"

/**
 * The default model: OpenAI's `text-embedding-3-small` (1536 dimensions natively).
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultModel = "text-embedding-3-small"

/**
 * The default `maxBatchSize` (OpenAI accepts up to 2048 inputs per request;
 * 256 keeps requests and responses to a few megabytes).
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultMaxBatchSize = 256

/**
 * The default `maxSockets` of the keep-alive agent.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultMaxSockets = 8

/**
 * Native vector lengths of well-known models, used by {@link configFromEnv}
 * when `RAGPIPE_DIMENSIONS` is not set.
 *
 * @since 0.1.0
 * @category constants
 */
export const knownDimensions: Readonly<Record<string, number>> = {
  "text-embedding-3-small": 1536,
  "text-embedding-3-large": 3072,
  "text-embedding-ada-002": 1536,
  "nomic-embed-text": 768,
  "mxbai-embed-large": 1024,
  "all-minilm": 384
}

/**
 * Whether `dimensions` is sent by default for a model: true for OpenAI's
 * `text-embedding-3*` models, which can shorten their vectors on request.
 *
 * @since 0.1.0
 * @category configuration
 */
export const defaultSendDimensions = (model: string): boolean => /^text-embedding-3/.test(model)

/**
 * The `model` the embedder reports (and the store records with every
 * document): the configured model prefixed with `openai:`, for the protocol,
 * so it never collides with the offline `hashing-v1`. The base URL is not
 * part of it: the same model served from another address produces the same
 * vectors.
 *
 * @since 0.1.0
 * @category configuration
 */
export const modelId = (config: Pick<Config, "model">): string => `openai:${config.model}`

const isOpenAiHost = (baseUrl: string): boolean => {
  try {
    return new URL(baseUrl).hostname === "api.openai.com"
  } catch {
    return false
  }
}

const optionalSecret = (name: string) =>
  EffectConfig.option(EffectConfig.redacted(name)).pipe(
    EffectConfig.map(Option.filter((secret) => Redacted.value(secret).trim() !== ""))
  )

/** RAGPIPE_API_KEY, else OPENAI_API_KEY when the base URL is OpenAI's own; blank keys count as none */
const chooseApiKey = (
  baseUrl: string,
  ragpipeKey: Option.Option<Redacted.Redacted<string>>,
  openAiKey: Option.Option<Redacted.Redacted<string>>
): Option.Option<Redacted.Redacted<string>> =>
  Option.orElse(ragpipeKey, () => isOpenAiHost(baseUrl) ? openAiKey : Option.none())

/**
 * The API key {@link configFromEnv} would use for `baseUrl`:
 * `RAGPIPE_API_KEY`, else `OPENAI_API_KEY` but only when `baseUrl` is on
 * `api.openai.com`, else none. A blank variable counts as unset, so an empty
 * `RAGPIPE_API_KEY` does not hide `OPENAI_API_KEY`.
 *
 * @since 0.1.0
 * @category configuration
 */
export const apiKeyConfig = (baseUrl: string): EffectConfig.Config<Option.Option<Redacted.Redacted<string>>> =>
  EffectConfig.all({
    ragpipeKey: optionalSecret("RAGPIPE_API_KEY"),
    openAiKey: optionalSecret("OPENAI_API_KEY")
  }).pipe(EffectConfig.map(({ openAiKey, ragpipeKey }) => chooseApiKey(baseUrl, ragpipeKey, openAiKey)))

/**
 * Reads a {@link Config} from the environment (or any `ConfigProvider`):
 *
 * | variable                  | default                                   |
 * | ------------------------- | ----------------------------------------- |
 * | `RAGPIPE_BASE_URL`        | `https://api.openai.com/v1`               |
 * | `RAGPIPE_MODEL`           | `text-embedding-3-small`                  |
 * | `RAGPIPE_DIMENSIONS`      | the model's native length from {@link knownDimensions} (1536 for the default model); required for other models |
 * | `RAGPIPE_API_KEY`         | `OPENAI_API_KEY`, but only when the base URL is `api.openai.com`; else none |
 * | `RAGPIPE_SEND_DIMENSIONS` | {@link defaultSendDimensions}             |
 * | `RAGPIPE_EMBED_BATCH_SIZE`| 256                                       |
 * | `RAGPIPE_MAX_SOCKETS`     | 8                                         |
 * | `RAGPIPE_ENCODING_FORMAT` | `base64` (or `float`)                     |
 *
 * `RAGPIPE_DIMENSIONS` is shared with the offline hashing embedder, whose
 * default is 384: with this provider, leave it unset to get the model's
 * native length. `OPENAI_API_KEY` is never sent to another host, so a
 * local server cannot receive your OpenAI key by accident. An empty key
 * counts as no key.
 *
 * @since 0.1.0
 * @category configuration
 */
export const configFromEnv: EffectConfig.Config<Config> = EffectConfig.all({
  baseUrl: EffectConfig.withDefault(EffectConfig.nonEmptyString("RAGPIPE_BASE_URL"), defaultBaseUrl),
  model: EffectConfig.withDefault(EffectConfig.nonEmptyString("RAGPIPE_MODEL"), defaultModel),
  dimensions: EffectConfig.option(EffectConfig.integer("RAGPIPE_DIMENSIONS")),
  sendDimensions: EffectConfig.option(EffectConfig.boolean("RAGPIPE_SEND_DIMENSIONS")),
  ragpipeKey: optionalSecret("RAGPIPE_API_KEY"),
  openAiKey: optionalSecret("OPENAI_API_KEY"),
  maxBatchSize: EffectConfig.withDefault(EffectConfig.integer("RAGPIPE_EMBED_BATCH_SIZE"), defaultMaxBatchSize),
  maxSockets: EffectConfig.withDefault(EffectConfig.integer("RAGPIPE_MAX_SOCKETS"), defaultMaxSockets),
  encodingFormat: EffectConfig.withDefault(
    EffectConfig.literal("float", "base64")("RAGPIPE_ENCODING_FORMAT"),
    "base64" as const
  )
}).pipe(
  EffectConfig.mapOrFail((raw) => {
    const dimensions = Option.orElse(raw.dimensions, () => Option.fromNullable(knownDimensions[raw.model]))
    if (Option.isNone(dimensions)) {
      return Either.left(
        ConfigError.MissingData(
          ["RAGPIPE_DIMENSIONS"],
          `the vector length of model ${raw.model} is not known: set RAGPIPE_DIMENSIONS to it ` +
            `(the length of the vectors the server returns)`
        )
      )
    }
    const apiKey = chooseApiKey(raw.baseUrl, raw.ragpipeKey, raw.openAiKey)
    const config: Config = {
      baseUrl: raw.baseUrl,
      model: raw.model,
      dimensions: dimensions.value,
      sendDimensions: Option.getOrElse(raw.sendDimensions, () => defaultSendDimensions(raw.model)),
      apiKey: Option.getOrUndefined(apiKey),
      maxBatchSize: raw.maxBatchSize,
      maxSockets: raw.maxSockets,
      encodingFormat: raw.encodingFormat
    }
    return Either.right(config)
  })
)

// ---------------------------------------------------------------------------
// the response
// ---------------------------------------------------------------------------

/** an array of numbers, checked with one loop (a per-element schema would cost ~10× more on 400k floats) */
const NumberArray = Schema.declare(
  (u: unknown): u is ReadonlyArray<number> => {
    if (!Array.isArray(u)) return false
    for (let i = 0; i < u.length; i++) if (typeof u[i] !== "number") return false
    return true
  },
  { identifier: "NumberArray", description: "an array of numbers" }
)

/**
 * One embedding in a response: `embedding` is an array of numbers
 * (`encoding_format: "float"`) or base64 of little-endian float32s
 * (`"base64"`). Either is accepted whatever was asked for, since some
 * servers ignore `encoding_format`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const EmbeddingItem = Schema.Struct({
  index: Schema.Int.pipe(Schema.nonNegative()),
  embedding: Schema.Union(NumberArray, Schema.String)
})

/**
 * The body of a successful response. Other fields (`object`, `usage`, ...)
 * are ignored.
 *
 * @since 0.1.0
 * @category schemas
 */
export const EmbeddingsResponse = Schema.Struct({
  data: Schema.Array(EmbeddingItem),
  model: Schema.optional(Schema.String)
})

const decodeResponse = Schema.decodeUnknownEither(EmbeddingsResponse, { errors: "first" })

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/

/**
 * Decode base64 of little-endian float32s, as `encoding_format: "base64"`
 * returns them. `undefined` when the text is not base64 of a whole number of
 * float32s.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeBase64Float32 = (base64: string): Float32Array | undefined => {
  if (!BASE64.test(base64)) return undefined
  const bytes = Buffer.from(base64, "base64")
  if (bytes.length % 4 !== 0) return undefined
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const out = new Float32Array(bytes.length / 4)
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true)
  return out
}

// ---------------------------------------------------------------------------
// messages
// ---------------------------------------------------------------------------

/** how much of a server's error message is quoted */
const MAX_QUOTE = 200

const field = (value: unknown, key: string): unknown =>
  typeof value === "object" && value !== null ? (value as Record<string, unknown>)[key] : undefined

const oneLine = (text: string): string => text.replace(/[\u0000-\u001f\u007f]+/g, " ").replace(/\s+/g, " ").trim()

const truncate = (text: string, max: number): string => text.length <= max ? text : `${text.slice(0, max - 1)}…`

/**
 * the human-readable part of an error body: OpenAI `{error:{message}}`,
 * `{error:"..."}` (Ollama, TEI), `{message}` (vLLM), `{detail}`, or the text
 */
const providerMessage = (body: string): string => {
  let json: unknown
  try {
    json = JSON.parse(body)
  } catch {
    return truncate(oneLine(body), MAX_QUOTE)
  }
  const error = field(json, "error")
  const candidates = [field(error, "message"), error, field(json, "message"), field(json, "detail")]
  for (const candidate of candidates) {
    if (typeof candidate === "string" && candidate.trim() !== "") return truncate(oneLine(candidate), MAX_QUOTE)
  }
  return truncate(oneLine(body), MAX_QUOTE)
}

/** `code` and message of a Node / undici transport error, following `cause` and AggregateError */
const transportDetail = (cause: unknown): string => {
  let current: unknown = cause
  for (let depth = 0; depth < 4 && typeof current === "object" && current !== null; depth++) {
    const code = field(current, "code")
    let message = field(current, "message")
    const errors = field(current, "errors")
    if ((typeof message !== "string" || message === "") && Array.isArray(errors) && errors.length > 0) {
      message = field(errors[0], "message")
    }
    if (typeof message === "string" && message !== "") {
      return typeof code === "string" && !message.includes(code) ? `${message} (${code})` : message
    }
    if (typeof code === "string") return code
    current = field(current, "cause")
  }
  return "unknown transport error"
}

const statusHint = (status: number, location: string | undefined): string => {
  if (status === 401 || status === 403) return "; check the API key (RAGPIPE_API_KEY)"
  if (status === 404) {
    return "; check the base URL (RAGPIPE_BASE_URL, usually ending in /v1) and the model name (RAGPIPE_MODEL)"
  }
  if (status >= 300 && status < 400) {
    return `; the server redirected${location === undefined ? "" : ` to ${truncate(oneLine(location), MAX_QUOTE)}`}, ` +
      `set RAGPIPE_BASE_URL to the final address`
  }
  return ""
}

// ---------------------------------------------------------------------------
// the embedder
// ---------------------------------------------------------------------------

const configError = (message: string) => new EmbedError({ reason: "config", message })

interface Resolved {
  readonly url: URL
  /** the endpoint as shown in messages: no credentials, no query */
  readonly display: string
  readonly model: string
  readonly dimensions: number
  readonly sendDimensions: boolean
  readonly maxBatchSize: number
  readonly maxSockets: number
  readonly encodingFormat: "float" | "base64"
  readonly headers: Readonly<Record<string, string>>
  readonly apiKey: Redacted.Redacted<string> | undefined
  /** strings that must never appear in a message */
  readonly secrets: ReadonlyArray<string>
}

const isPositiveInt = (n: unknown): n is number => typeof n === "number" && Number.isInteger(n) && n >= 1

const resolve = (config: Config): Either.Either<Resolved, EmbedError> => {
  let url: URL
  try {
    url = new URL(config.baseUrl)
  } catch {
    return Either.left(configError(`the base URL is not a valid URL; set RAGPIPE_BASE_URL to e.g. ${defaultBaseUrl}`))
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return Either.left(configError(`the base URL must start with http:// or https:// (got ${url.protocol})`))
  }
  url.pathname = `${url.pathname.replace(/\/+$/, "")}/embeddings`
  const display = `${url.protocol}//${url.host}${url.pathname}`
  if (config.model.trim() === "") return Either.left(configError("the model name is empty; set RAGPIPE_MODEL"))
  if (!isPositiveInt(config.dimensions) || config.dimensions > 16000) {
    return Either.left(
      configError(`dimensions must be an integer between 1 and 16000 (got ${String(config.dimensions)})`)
    )
  }
  const maxBatchSize = config.maxBatchSize ?? defaultMaxBatchSize
  if (!isPositiveInt(maxBatchSize)) {
    return Either.left(configError(`maxBatchSize must be a positive integer (got ${String(maxBatchSize)})`))
  }
  const maxSockets = config.maxSockets ?? defaultMaxSockets
  if (!isPositiveInt(maxSockets)) {
    return Either.left(configError(`maxSockets must be a positive integer (got ${String(maxSockets)})`))
  }
  const encodingFormat = config.encodingFormat ?? "base64"
  if (encodingFormat !== "float" && encodingFormat !== "base64") {
    return Either.left(configError(`encodingFormat must be "float" or "base64" (got ${String(encodingFormat)})`))
  }
  const headers = config.headers ?? {}
  const secrets: Array<string> = []
  for (const [name, value] of Object.entries(headers)) {
    try {
      Http.validateHeaderName(name)
    } catch {
      return Either.left(configError(`the header name ${JSON.stringify(truncate(name, 60))} is not valid`))
    }
    try {
      Http.validateHeaderValue(name, value)
    } catch {
      return Either.left(configError(`the value of header ${name} has characters not allowed in an HTTP header`))
    }
    if (value.length >= 4) secrets.push(value)
  }
  if (config.apiKey !== undefined) {
    const key = Redacted.value(config.apiKey)
    try {
      Http.validateHeaderValue("authorization", `Bearer ${key}`)
    } catch {
      return Either.left(
        configError("the API key has characters not allowed in an HTTP header (a trailing newline?)")
      )
    }
    if (key !== "") secrets.push(key)
  }
  const keyless = config.apiKey === undefined || Redacted.value(config.apiKey).trim() === ""
  const authorized = Object.keys(headers).some((name) => name.toLowerCase() === "authorization")
  if (keyless && !authorized && isOpenAiHost(config.baseUrl)) {
    return Either.left(
      configError(
        "api.openai.com answers no request without an API key: set OPENAI_API_KEY (or RAGPIPE_API_KEY), " +
          "or point --base-url (RAGPIPE_BASE_URL) at a server that needs none"
      )
    )
  }
  // longest first, so a secret containing another is scrubbed whole
  secrets.sort((a, b) => b.length - a.length)
  return Either.right({
    url,
    display,
    model: config.model,
    dimensions: config.dimensions,
    sendDimensions: config.sendDimensions ?? defaultSendDimensions(config.model),
    maxBatchSize,
    maxSockets,
    encodingFormat,
    headers,
    apiKey: config.apiKey,
    secrets
  })
}

/** the keep-alive agents, acquired in the current scope (through the ResourceLedger when there is one) */
const acquireAgent = (maxSockets: number, label: string) => {
  const options: Https.AgentOptions = { keepAlive: true, maxSockets, maxTotalSockets: maxSockets }
  const acquire = Effect.sync((): NodeHttpClient.HttpAgent => ({
    [NodeHttpClient.HttpAgentTypeId]: NodeHttpClient.HttpAgentTypeId,
    http: new Http.Agent(options),
    https: new Https.Agent(options)
  }))
  // destroy() closes every socket of the agent, idle or in use
  const release = (agent: NodeHttpClient.HttpAgent) =>
    Effect.sync(() => {
      agent.http.destroy()
      agent.https.destroy()
    })
  return Effect.flatMap(
    Effect.serviceOption(ResourceLedger),
    Option.match({
      onNone: () => Effect.acquireRelease(acquire, release),
      onSome: (ledger) => ledger.acquireRelease("http-agent", acquire, release, label)
    })
  )
}

/** bytes allowed for a response of `count` vectors: ~64 bytes per float (JSON with whitespace), plus 1 MiB */
const maxResponseBytes = (count: number, dimensions: number): number => count * dimensions * 64 + 1024 * 1024

/**
 * Build an OpenAI-compatible embedder whose keep-alive agent lives in the
 * current scope.
 *
 * - `model` is {@link modelId} (`openai:<model>`), `dimensions` is
 *   `config.dimensions`, `maxBatchSize` is `config.maxBatchSize` (256).
 * - `embedBatch` sends one request per `maxBatchSize` texts: a longer call
 *   is split and the pieces are sent one after another (the pipeline never
 *   sends more than `maxBatchSize`, so it sees one request per call). An
 *   empty call sends nothing.
 * - Vectors come back as `Float32Array`s in input order (the response is
 *   reordered by `index`), each checked to have exactly `dimensions` finite
 *   entries.
 * - Failures are {@link EmbedError}s, never defects: `http` (with `status`
 *   and `retryAfter`) for a status ≥ 300 other than 400/413/422, which are
 *   `invalid-input` (with `status`); `connection` for transport failures;
 *   `malformed-response` for a body that is not the expected JSON, has the
 *   wrong count or indexes, or non-finite numbers; `dimension-mismatch` for
 *   vectors of another length; `config` for an invalid config, and for a call
 *   made after the scope closed.
 * - Interrupting a call aborts its request; closing the scope destroys the
 *   agent and with it every socket.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (config: Config): Effect.Effect<Service, EmbedError, Scope.Scope> =>
  Effect.gen(function*() {
    const resolved = yield* resolve(config)
    const id = modelId(config)
    const scrub = (text: string): string => {
      let out = text
      for (const secret of resolved.secrets) out = out.split(secret).join("<redacted>")
      return out
    }
    // every text taken from the server or the config is scrubbed before it is stored on an error
    const fail = (fields: ConstructorParameters<typeof EmbedError>[0]) =>
      new EmbedError({
        ...fields,
        message: scrub(fields.message),
        ...(fields.retryAfter === undefined ? {} : { retryAfter: scrub(fields.retryAfter) })
      })

    let closed = false
    const agent = yield* acquireAgent(resolved.maxSockets, resolved.display)
    yield* Effect.addFinalizer(() => Effect.sync(() => void (closed = true)))
    const client = yield* Effect.provideService(NodeHttpClient.make, NodeHttpClient.HttpAgent, agent)

    const redactedNames = Object.keys(resolved.headers)
    const baseRequest = HttpClientRequest.post(resolved.url).pipe(
      HttpClientRequest.acceptJson,
      HttpClientRequest.setHeaders(resolved.headers)
    )

    const transportFailure = (detail: string, during: string) =>
      fail({
        reason: "connection",
        message: `embedding request to ${resolved.display} failed ${during}: ${detail}; ` +
          `check RAGPIPE_BASE_URL and that the server is running`
      })

    const requestFailure = (error: HttpClientError.HttpClientError): EmbedError =>
      error._tag === "RequestError" && error.reason === "InvalidUrl"
        ? fail({ reason: "config", message: `the embeddings URL ${resolved.display} is not valid` })
        : transportFailure(transportDetail(error.cause), "before a response arrived")

    const statusFailure = (status: number, headers: Headers.Headers, body: string): EmbedError => {
      // scrubbed before they are shortened, so a secret cut in two by the truncation is still removed
      const detail = body.trim() === "" ? "" : `: ${providerMessage(scrub(body))}`
      const retryAfter = Option.getOrUndefined(Headers.get(headers, "retry-after"))
      const location = Option.getOrUndefined(Headers.get(headers, "location"))
      const invalidInput = status === 400 || status === 413 || status === 422
      return fail({
        reason: invalidInput ? "invalid-input" : "http",
        status,
        ...(retryAfter === undefined ? {} : { retryAfter: truncate(oneLine(scrub(retryAfter)), MAX_QUOTE) }),
        message: `embedding request failed with HTTP ${status}${detail}${statusHint(status, location === undefined ? undefined : scrub(location))}`
      })
    }

    const malformed = (detail: string) =>
      fail({
        reason: "malformed-response",
        message: `the embedding server at ${resolved.display} sent an unexpected response: ${detail}`
      })

    const toVectors = (body: string, count: number): Either.Either<ReadonlyArray<Embedding>, EmbedError> => {
      let json: unknown
      try {
        json = JSON.parse(body)
      } catch {
        return Either.left(malformed(`the body is not JSON (starts with ${JSON.stringify(truncate(body, 60))})`))
      }
      const decoded = decodeResponse(json)
      if (Either.isLeft(decoded)) {
        return Either.left(
          malformed(truncate(oneLine(ParseResult.TreeFormatter.formatErrorSync(decoded.left)), MAX_QUOTE))
        )
      }
      const data = decoded.right.data
      if (data.length !== count) {
        return Either.left(malformed(`${data.length} embeddings for ${count} inputs`))
      }
      const vectors = new Array<Embedding | undefined>(count)
      for (const item of data) {
        if (item.index >= count) {
          return Either.left(malformed(`index ${item.index} is out of range for ${count} inputs`))
        }
        if (vectors[item.index] !== undefined) {
          return Either.left(malformed(`index ${item.index} appears more than once`))
        }
        let vector: Float32Array
        if (typeof item.embedding === "string") {
          const decodedVector = decodeBase64Float32(item.embedding)
          if (decodedVector === undefined) {
            return Either.left(malformed(`the embedding at index ${item.index} is not base64 of float32 values`))
          }
          vector = decodedVector
        } else {
          vector = Float32Array.from(item.embedding)
        }
        if (vector.length !== resolved.dimensions) {
          return Either.left(fail({
            reason: "dimension-mismatch",
            message: `the embedding server returned ${vector.length}-dimensional vectors for model ` +
              `${resolved.model}, expected ${resolved.dimensions}; set the dimensions (RAGPIPE_DIMENSIONS) ` +
              `to ${vector.length}` +
              (resolved.sendDimensions ? "" : ", or send them to a model that can shorten its vectors")
          }))
        }
        for (let i = 0; i < vector.length; i++) {
          if (!Number.isFinite(vector[i])) {
            return Either.left(
              malformed(`the embedding at index ${item.index} has a non-finite value at position ${i}`)
            )
          }
        }
        vectors[item.index] = vector
      }
      // count matches and every index is unique and in range, so every slot is filled
      return Either.right(vectors as Array<Embedding>)
    }

    const embedOne = (texts: ReadonlyArray<string>) =>
      Effect.gen(function*() {
        if (closed) {
          return yield* fail({
            reason: "config",
            message: "this embedder's scope has closed: its connections are gone; build a new embedder"
          })
        }
        let request = HttpClientRequest.bodyUnsafeJson(baseRequest, {
          model: resolved.model,
          input: texts,
          ...(resolved.sendDimensions ? { dimensions: resolved.dimensions } : {}),
          encoding_format: resolved.encodingFormat
        })
        if (resolved.apiKey !== undefined) {
          request = HttpClientRequest.setHeader(request, "authorization", `Bearer ${Redacted.value(resolved.apiKey)}`)
        }
        const response = yield* Effect.mapError(client.execute(request), requestFailure)
        const limit = maxResponseBytes(texts.length, resolved.dimensions)
        const ok = response.status >= 200 && response.status < 300
        const body = yield* response.text.pipe(
          HttpIncomingMessage.withMaxBodySize(Option.some(limit)),
          Effect.catchAll((error) => {
            if (!ok) return Effect.succeed("")
            return Effect.fail(
              field(error.cause, "message") === "maxBytes exceeded"
                ? malformed(`the body is larger than ${limit} bytes`)
                : transportFailure(transportDetail(error.cause), `while reading the response (HTTP ${response.status})`)
            )
          })
        )
        yield* Effect.logDebug("embedding response").pipe(
          Effect.annotateLogs({ status: response.status, inputs: texts.length, bytes: body.length })
        )
        if (!ok) return yield* statusFailure(response.status, response.headers, body)
        return yield* toVectors(body, texts.length)
      }).pipe(Effect.locallyWith(Headers.currentRedactedNames, (names) => [...names, ...redactedNames]))

    const embedBatch = Effect.fn("OpenAiEmbedder.embedBatch")(
      function*(texts: ReadonlyArray<string>) {
        if (texts.length === 0) return []
        if (texts.length <= resolved.maxBatchSize) return yield* embedOne(texts)
        const out: Array<Embedding> = []
        for (let start = 0; start < texts.length; start += resolved.maxBatchSize) {
          const vectors = yield* embedOne(texts.slice(start, start + resolved.maxBatchSize))
          for (const vector of vectors) out.push(vector)
        }
        return out
      },
      Effect.annotateLogs({ model: id })
    )

    const service: Service = {
      model: id,
      dimensions: resolved.dimensions,
      maxBatchSize: resolved.maxBatchSize,
      embedBatch: (texts) => embedBatch(texts)
    }
    return service
  })

/**
 * The {@link Embedder} layer of {@link make}: the agent and its sockets live
 * as long as the layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (config: Config): Layer.Layer<Embedder, EmbedError> => Layer.scoped(Embedder, make(config))

/**
 * The {@link Embedder} layer reading its {@link Config} from a `Config`
 * (default {@link configFromEnv}); a configuration error becomes an
 * {@link EmbedError} with reason `config`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: EffectConfig.Config<Config> = configFromEnv
): Layer.Layer<Embedder, EmbedError> =>
  Layer.scoped(
    Embedder,
    Effect.flatMap(
      Effect.mapError(config, (error) => configError(`invalid embedding provider configuration: ${String(error)}`)),
      make
    )
  )

// Testing time-based code without waiting: under `TestContext`, `Clock`
// and every sleep follow the `TestClock`, which only moves when told to
// (`TestClock.adjust`). A retry policy with 1 s, 2 s, 4 s backoff, a circuit
// breaker that stays open 30 s, and two whole ingest runs against a provider
// that is down for a while run here without any real waiting: 85 simulated
// seconds take a fraction of that in real time.
//
//   npm run build && node scripts/examples/testclock.mjs
import {
  Clock,
  Effect,
  Either,
  Fiber,
  Layer,
  Logger,
  LogLevel,
  Metric,
  Option,
  Schedule,
  Stream,
  TestClock,
  TestContext
} from "effect"
import { createHash } from "node:crypto"
import { CircuitBreaker, Embedder, Errors, Ingest, MemoryVectorStore, Retry, VectorStore } from "ragpipe"

const now = Clock.currentTimeMillis // simulated: starts at 0

// 1. Retries: a call failing 3 times with a retryable error, then answering.
const retries = Effect.gen(function*() {
  const attemptsAt = []
  const flaky = Effect.gen(function*() {
    attemptsAt.push(yield* now)
    if (attemptsAt.length <= 3) {
      return yield* new Errors.EmbedError({ reason: "connection", message: "connection reset" })
    }
    return "answer"
  })
  const policy = { maxRetries: 3, base: "1 second", cap: "10 seconds", jitter: "none" }
  // fork it: it sleeps between attempts, and only we can move the clock
  const fiber = yield* Effect.fork(Retry.retry(flaky, policy))
  // every sleep that falls due runs, in order, at its own simulated time
  yield* TestClock.adjust("2 seconds")
  console.log(`retry: at t=${yield* now} ms the attempts so far ran at ${attemptsAt.join(", ")} ms`)
  yield* TestClock.adjust("8 seconds")
  const result = yield* Fiber.join(fiber)
  console.log(`retry: attempts at ${attemptsAt.join(", ")} ms (waits of 1 s, 2 s, 4 s), result "${result}"`)
})

// 2. A breaker opening after 3 failures, half-open 30 s later, closed by a successful probe.
const breaker = Effect.gen(function*() {
  const breaker = yield* CircuitBreaker.make({
    name: "api",
    policy: CircuitBreaker.consecutiveFailures(3),
    openDuration: Schedule.spaced("30 seconds")
  })
  for (let i = 0; i < 3; i++) yield* Effect.either(breaker.withBreaker(Effect.fail("down")))
  const rejected = yield* Effect.either(breaker.withBreaker(Effect.succeed("never runs")))
  const retryAt = Either.isLeft(rejected) ? rejected.left.retryAt : undefined
  console.log(`breaker: t=${yield* now} ms ${yield* breaker.state}, a call is rejected; retry at ${retryAt} ms`)

  yield* TestClock.adjust("30 seconds")
  // the next call is the probe: while it runs the breaker is half-open
  const during = yield* breaker.withBreaker(breaker.state)
  console.log(`breaker: t=${yield* now} ms probe ran while ${during}, now ${yield* breaker.state}`)
})

// 3 and 4. Whole ingest runs: documents from an in-memory Stream, the
// in-memory store, and an embedder whose provider is down for a while.

/** a document that never was a file */
const document = (path, text) => ({
  path,
  text,
  contentHash: createHash("sha256").update(text).digest("hex"),
  size: Buffer.byteLength(text),
  format: "text"
})

/**
 * An Embedder layer over the offline hashing embedder whose provider answers
 * HTTP 503 while the simulated clock is before `downUntil`; every call is
 * logged with its time and outcome.
 */
const flakyEmbedder = (downUntil, calls) =>
  Layer.effect(
    Embedder.Embedder,
    Effect.gen(function*() {
      const hashing = yield* Effect.provide(Embedder.Embedder, Embedder.layerHashing({ dimensions: 64 }))
      return {
        ...hashing,
        model: "flaky-hashing",
        embedBatch: (texts) =>
          Effect.gen(function*() {
            const at = yield* now
            const down = at < downUntil
            calls.push({ at, outcome: down ? "503" : "ok" })
            if (down) {
              return yield* new Errors.EmbedError({ reason: "http", status: 503, message: "service unavailable" })
            }
            return yield* hashing.embedBatch(texts)
          })
      }
    })
  )

/** `0 ms (503), 1000 ms (ok)`: the calls' times from `start`, with their outcomes */
const describeCalls = (calls, start) => calls.map(({ at, outcome }) => `${at - start} ms (${outcome})`).join(", ")

/**
 * Run `effect` in a fiber and move the TestClock forward one `step` at a
 * time until it is done: every backoff, breaker delay and batching window
 * inside falls due on simulated time.
 */
const onTestClock = (effect, step = "5 seconds") =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(effect)
    while (Option.isNone(yield* Fiber.poll(fiber))) yield* TestClock.adjust(step)
    return yield* Fiber.join(fiber)
  })

/** the store's failures table, one `path (kind, attempts)` per failed chunk */
const failures = Effect.map(
  Effect.flatMap(VectorStore.VectorStore, (store) => store.failures(100)),
  (rows) => rows.map((row) => `${row.path} (${row.kind}, ${row.attempts} attempt(s))`).join("; ") || "none"
)

// 3. Ingest while the provider is down for the first 3 s: the batch is
// retried with backoff (1 s, then 2 s) and every document gets in.
const ingestWithRetries = Effect.gen(function*() {
  const start = yield* now
  const calls = []
  const docs = Stream.make(
    document("notes/otters.txt", "Otters hold hands while they sleep so they do not drift apart."),
    document("notes/beavers.txt", "Beavers build dams of branches and mud across small streams."),
    document("notes/herons.txt", "Herons stand still in shallow water and strike at passing fish.")
  ).pipe(Stream.map(Either.right))
  const summary = yield* onTestClock(
    Ingest.ingestStream(docs, {
      retry: { maxRetries: 4, base: "1 second", cap: "10 seconds", jitter: "none" }
    })
  ).pipe(Effect.provide(Layer.merge(MemoryVectorStore.layer, flakyEmbedder(start + 3_000, calls))))
  console.log(`ingest: embedder calls at ${describeCalls(calls, start)} (waits of 1 s, 2 s)`)
  console.log(
    `ingest: ${summary.outcome}, ${summary.files.ingested} of ${summary.files.seen} documents, ` +
      `${summary.chunks.written} chunks written, ${summary.chunks.failed} failed`
  )
})

// 4. Ingest through a longer outage (15 s), one document every 10 s, through a
// call breaker that opens after 2 failures and stays open 25 s. The first
// document fails after its retry, which opens the breaker; the breaker then
// refuses the next two documents without calling the provider; the fourth is
// the half-open probe, finds the provider back and closes the breaker.
const ingestThroughOutage = Effect.gen(function*() {
  const start = yield* now
  const calls = []
  const names = ["a", "b", "c", "d", "e"]
  const docs = Stream.fromIterable(names).pipe(
    Stream.zipWithIndex,
    Stream.mapEffect(([name, i]) =>
      Effect.as(
        i === 0 ? Effect.void : Effect.sleep("10 seconds"),
        Either.right(document(`outage/${name}.txt`, `Document ${name} arrives ${i * 10} seconds into the run.`))
      )
    )
  )
  const [summary, failed] = yield* Effect.gen(function*() {
    const summary = yield* onTestClock(
      Ingest.ingestStream(docs, {
        lookupBatchSize: 1, // classify each document as it arrives
        batchSize: 1,
        concurrency: 1,
        maxErrorRate: 1, // keep going whatever fails: this run is about the call breaker
        retry: { maxRetries: 1, base: "1 second", cap: "1 second", jitter: "none" },
        callBreaker: {
          name: "example-embedder",
          policy: CircuitBreaker.consecutiveFailures(2),
          openDuration: Schedule.spaced("25 seconds"),
          isFailure: Retry.isRetryable
        }
      })
    )
    return [summary, yield* failures]
  }).pipe(Effect.provide(Layer.merge(MemoryVectorStore.layer, flakyEmbedder(start + 15_000, calls))))
  console.log(`outage: embedder calls at ${describeCalls(calls, start)}`)
  console.log(`outage: failed: ${failed}`)
  const transitions = []
  for (const to of ["open", "half-open", "closed"]) {
    const counter = CircuitBreaker.stateChangesTotal.pipe(
      Metric.tagged("breaker", "example-embedder"),
      Metric.tagged("to", to)
    )
    transitions.push(`${to} ${(yield* Metric.value(counter)).count}x`)
  }
  console.log(`outage: breaker went ${transitions.join(", ")}`)
  console.log(
    `outage: ${summary.outcome}, ${summary.files.ingested} of ${summary.files.seen} documents, ` +
      `${summary.chunks.written} chunks written, ${summary.chunks.failed} failed`
  )
})

const program = Effect.gen(function*() {
  yield* retries
  yield* Effect.scoped(breaker) // a breaker lives in a scope
  console.log(`simulated time at the end: ${yield* now} ms`)
  // the pipeline logs its start and each failed document: keep this output to what we print
  yield* Effect.all([ingestWithRetries, ingestThroughOutage]).pipe(Logger.withMinimumLogLevel(LogLevel.None))
  console.log(`simulated time after the ingest runs: ${yield* now} ms`)
})

const realStart = performance.now()
await Effect.runPromise(program.pipe(Effect.provide(TestContext.TestContext)))
const realMillis = Math.round(performance.now() - realStart)
console.log(`real time elapsed: ${realMillis} ms (under 1 s: ${realMillis < 1000})`)

// Testing time-based code without waiting: under `TestContext`, `Clock`
// and every sleep follow the `TestClock`, which only moves when told to
// (`TestClock.adjust`). A retry policy with 1 s, 2 s, 4 s backoff and a
// circuit breaker that stays open 30 s both run here in a few milliseconds.
//
//   npm run build && node scripts/examples/testclock.mjs
import { Clock, Effect, Either, Fiber, Schedule, TestClock, TestContext } from "effect"
import { CircuitBreaker, Errors, Retry } from "ragpipe"

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

const program = Effect.gen(function*() {
  yield* retries
  yield* Effect.scoped(breaker) // a breaker lives in a scope
  console.log(`simulated time at the end: ${yield* now} ms`)
})

const realStart = performance.now()
await Effect.runPromise(program.pipe(Effect.provide(TestContext.TestContext)))
const realMillis = Math.round(performance.now() - realStart)
console.log(`real time elapsed: ${realMillis} ms (under 1 s: ${realMillis < 1000})`)

// Circuit breakers on your own code: (1) the call breaker `CircuitBreaker.make`
// in front of a flaky effect — it opens after failures, rejects calls while
// open, probes when half-open and closes again; (2) the stream breaker
// `CircuitBreaker.breakOnErrorRate`, which cuts a stream of `Either` results
// once too many of them are errors and ends it with a `BreakInfo`.
//
//   npm run build && node scripts/examples/breakers.mjs
import { Effect, Either, Fiber, Schedule, Stream } from "effect"
import { CircuitBreaker } from "ragpipe"

// A dependency that fails its first 3 calls, then recovers.
let calls = 0
const flaky = Effect.suspend(() => {
  calls++
  return calls <= 3 ? Effect.fail(new Error(`service down (call ${calls})`)) : Effect.succeed(`ok (call ${calls})`)
})

const callBreaker = Effect.gen(function*() {
  const breaker = yield* CircuitBreaker.make({
    name: "flaky-service",
    policy: CircuitBreaker.consecutiveFailures(2), // open after 2 failures in a row
    openDuration: Schedule.spaced("100 millis") // stay open 100 ms each time
  })
  // every transition is published on `changes`: a background fiber prints them
  const watcher = yield* Effect.fork(Stream.runForEach(breaker.changes, (change) =>
    Effect.sync(() => console.log(`    state: ${change.from} -> ${change.to}`))))
  yield* Effect.yieldNow() // let the watcher subscribe before the first call

  // Expected: 2 failures open it; attempt 3 is rejected; after the open time,
  // attempt 4 is a probe that fails (open again); attempt 5's probe succeeds (closed).
  for (let attempt = 1; attempt <= 6; attempt++) {
    // a rejected call fails with BreakerOpen and never reaches `flaky`
    const result = yield* Effect.either(breaker.withBreaker(flaky))
    console.log(Either.match(result, {
      onRight: (value) => `attempt ${attempt}: ${value}`,
      onLeft: (error) =>
        `attempt ${attempt}: ${error._tag === "BreakerOpen" ? `rejected (${error.reason})` : error.message}`
    }))
    yield* Effect.yieldNow() // let the watcher print the transitions this attempt caused
    if (attempt === 3 || attempt === 4) yield* Effect.sleep("120 millis") // wait until it lets a probe through
  }
  const { totals } = yield* breaker.snapshot
  console.log(
    `calls ${totals.calls}, failures ${totals.failures}, rejections ${totals.rejections}, openings ${totals.openings}`
  )
  yield* Fiber.interrupt(watcher)
})

// A stream of outcomes: Right for a success, Left for an error.
const outcomes = Stream.make(
  Either.right("a"), Either.right("b"), Either.left("e1"), Either.right("c"),
  Either.left("e2"), Either.left("e3"), Either.right("d"), Either.right("e")
)

const streamBreaker = Effect.gen(function*() {
  const items = yield* outcomes.pipe(
    // trip when more than 40% of the items are errors, once 4 items were seen
    CircuitBreaker.breakOnErrorRate({ maxRate: 0.4, minSamples: 4 }),
    Stream.runCollect
  )
  for (const item of items) {
    if (Either.isLeft(item) && CircuitBreaker.isBreakInfo(item.left)) {
      // the last element: why the stream was cut ("d" and "e" were never read)
      console.log(`break: ${JSON.stringify(CircuitBreaker.breakInfoJson(item.left))}`)
    } else {
      console.log(`item: ${Either.isRight(item) ? `ok ${item.right}` : `error ${item.left}`}`)
    }
  }
})

console.log("call breaker:")
// `make` needs a Scope: it owns the PubSub behind `changes`
await Effect.runPromise(Effect.scoped(callBreaker))
console.log("stream breaker:")
await Effect.runPromise(streamBreaker)

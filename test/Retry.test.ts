import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as fc from "effect/FastCheck"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as Intervals from "effect/ScheduleIntervals"
import * as TestClock from "effect/TestClock"
import { EmbedError, InvalidInput, StoreError } from "../src/Errors.js"
import * as Retry from "../src/Retry.js"

/**
 * Step a schedule by hand: the first attempt starts at `start`, every attempt
 * takes `attemptMillis` before failing with the next input, and the next
 * attempt starts when the schedule's delay has passed. Returns the delays
 * until the schedule stops (or the inputs run out), checking that each step's
 * output is the delay it applied.
 */
const stepDelays = <In>(
  schedule: Schedule.Schedule<Duration.Duration, In>,
  inputs: ReadonlyArray<In>,
  options: { readonly start?: number; readonly attemptMillis?: number } = {}
): Effect.Effect<ReadonlyArray<number>> =>
  Effect.gen(function*() {
    let now = options.start ?? 0
    let state: unknown = schedule.initial
    const delays: Array<number> = []
    for (const input of inputs) {
      now += options.attemptMillis ?? 0
      const [next, output, decision] = yield* schedule.step(now, input, state)
      if (ScheduleDecision.isDone(decision)) break
      const delay = Intervals.start(decision.intervals) - now
      assert.strictEqual(Duration.toMillis(output), delay, "a step's output is the delay it applies")
      delays.push(delay)
      state = next
      now += delay
    }
    return delays
  })

const times = <A>(n: number, value: A): ReadonlyArray<A> => Array.from({ length: n }, () => value)

const seeded = <A, E>(seed: number, effect: Effect.Effect<A, E>) => Effect.withRandom(effect, Random.make(seed))

const http = (status: number, retryAfter?: string) =>
  new EmbedError({
    reason: "http",
    status,
    message: `provider answered ${status}`,
    ...(retryAfter === undefined ? {} : { retryAfter })
  })

/** a stand-in for CircuitBreaker's BreakerOpen, recognised by tag only */
class BreakerOpen extends Data.TaggedError("BreakerOpen")<{ readonly message: string }> {}

const nodeError = (code: string) => Object.assign(new Error(`socket: ${code}`), { code })

/** an effect that fails with `errors` in turn, then succeeds with "ok"; counts its runs */
const scripted = <E>(errors: ReadonlyArray<E>) => {
  let runs = 0
  const effect = Effect.suspend(() => {
    const error = errors[runs++]
    return error === undefined ? Effect.succeed("ok") : Effect.fail(error)
  })
  return { effect, runs: () => runs }
}

const nonePolicy: Retry.Policy = { maxRetries: 4, base: "100 millis", cap: "1 second", jitter: "none" }

describe("Retry", () => {
  describe("schedules", () => {
    it.effect("exponential doubles from base and is capped", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(
          yield* stepDelays(Retry.exponential({ base: "100 millis", cap: "500 millis" }), times(5, undefined)),
          [100, 200, 400, 500, 500]
        )
        assert.deepStrictEqual(
          yield* stepDelays(Retry.exponential({ base: "100 millis", factor: 3 }), times(4, undefined)),
          [100, 300, 900, 2700]
        )
      }))

    it.effect("full jitter gives an exact sequence for a seed", () =>
      Effect.gen(function*() {
        const schedule = Retry.exponentialFullJitter({ base: "100 millis", cap: "1 second" })
        const first = yield* seeded(42, stepDelays(schedule, times(6, undefined)))
        assert.deepStrictEqual(first, [53, 149, 63, 260, 586, 322])
        assert.deepStrictEqual(yield* seeded(42, stepDelays(schedule, times(6, undefined))), first)
      }))

    it.prop(
      "full jitter: retry n waits a whole number of ms in [0, min(cap, base * 2^n)]",
      [fc.integer(), fc.integer({ min: 1, max: 5_000 }), fc.integer({ min: 1, max: 60_000 })],
      ([seed, base, cap]) => {
        const delays = Effect.runSync(
          seeded(seed, stepDelays(Retry.exponentialFullJitter({ base, cap }), times(12, undefined)))
        )
        assert.strictEqual(delays.length, 12)
        delays.forEach((delay, n) => {
          assert.isTrue(Number.isInteger(delay))
          assert.isTrue(delay >= 0 && delay <= Math.min(cap, base * 2 ** n), `retry ${n} waited ${delay}`)
        })
      },
      { fastCheck: { numRuns: 200 } }
    )

    it.effect("decorrelated jitter gives an exact sequence for a seed", () =>
      Effect.gen(function*() {
        const schedule = Retry.decorrelatedJitter({ base: "100 millis", cap: "1 second" })
        const first = yield* seeded(42, stepDelays(schedule, times(6, undefined)))
        assert.deepStrictEqual(first, [220, 465, 406, 261, 128, 229])
        assert.deepStrictEqual(yield* seeded(42, stepDelays(schedule, times(6, undefined))), first)
      }))

    it.prop(
      "decorrelated jitter: each sleep is in [min(base, cap), min(cap, 3 * previous sleep)]",
      [fc.integer(), fc.integer({ min: 1, max: 5_000 }), fc.integer({ min: 1, max: 60_000 })],
      ([seed, base, cap]) => {
        const delays = Effect.runSync(
          seeded(seed, stepDelays(Retry.decorrelatedJitter({ base, cap }), times(12, undefined)))
        )
        assert.strictEqual(delays.length, 12)
        let previous = base
        for (const delay of delays) {
          assert.isTrue(Number.isInteger(delay))
          assert.isTrue(delay >= Math.min(base, cap), `${delay} below base ${base}`)
          assert.isTrue(delay <= Math.min(cap, 3 * previous), `${delay} above min(${cap}, 3 * ${previous})`)
          previous = delay
        }
      },
      { fastCheck: { numRuns: 200 } }
    )

    it.effect("withCap clamps every delay", () =>
      Effect.gen(function*() {
        const schedule = Retry.exponential({ base: "100 millis" }).pipe(Retry.withCap("250 millis"))
        assert.deepStrictEqual(yield* stepDelays(schedule, times(4, undefined)), [100, 200, 250, 250])
        // on any schedule, whatever its own output
        assert.deepStrictEqual(
          yield* stepDelays(Retry.withCap(Schedule.spaced("2 seconds"), "1 second"), times(2, undefined)),
          [1000, 1000]
        )
      }))

    it.effect("maxRetries(n) allows exactly n retries", () =>
      Effect.gen(function*() {
        const base = Retry.exponential({ base: "100 millis" })
        assert.deepStrictEqual(yield* stepDelays(Retry.maxRetries(base, 3), times(10, undefined)), [100, 200, 400])
        assert.deepStrictEqual(yield* stepDelays(Retry.maxRetries(base, 0), times(10, undefined)), [])
        // with Effect.retry: n retries means n + 1 runs
        const { effect, runs } = scripted(times(10, http(503)))
        const exit = yield* Effect.either(Effect.retry(effect, Retry.maxRetries(Schedule.forever, 3)))
        assert.isTrue(Either.isLeft(exit))
        assert.strictEqual(runs(), 4)
      }))

    it.effect("withBudget stops once elapsed + next delay would exceed the budget", () =>
      Effect.gen(function*() {
        const base = Retry.exponential({ base: "100 millis" })
        // steps at t = 0, 100, 300, 700: 0+100, 100+200, 300+400 = 700 (still allowed), 700+800 > 700
        assert.deepStrictEqual(
          yield* stepDelays(Retry.withBudget(base, "700 millis"), times(10, undefined)),
          [100, 200, 400]
        )
        assert.deepStrictEqual(
          yield* stepDelays(Retry.withBudget(base, "699 millis"), times(10, undefined)),
          [100, 200]
        )
        // measured from when the first attempt started (t = 1000), each attempt taking 250 ms:
        // first failure at 1250: 250 + 100 = 350; second at 1600: 600 + 200 > 700
        assert.deepStrictEqual(
          yield* stepDelays(
            base.pipe(Retry.withBudget("700 millis", { since: 1_000 })),
            times(10, undefined),
            { start: 1_000, attemptMillis: 250 }
          ),
          [100]
        )
        // not told when the first attempt began, the schedule measures from its first step (t = 1250):
        // 0 + 100, 350 + 200 = 550, 800 + 400 > 700
        assert.deepStrictEqual(
          yield* stepDelays(Retry.withBudget(base, "700 millis"), times(10, undefined), {
            start: 1_000,
            attemptMillis: 250
          }),
          [100, 200]
        )
      }))
  })

  describe("Retry-After", () => {
    const t0 = Date.UTC(2015, 9, 21, 7, 28, 0) // Wed, 21 Oct 2015 07:28:00 GMT

    it("parseRetryAfter reads delta-seconds and HTTP dates", () => {
      const cases: ReadonlyArray<readonly [string, number | undefined]> = [
        ["120", 120_000],
        ["0", 0],
        [" 5 ", 5_000],
        ["Wed, 21 Oct 2015 07:28:30 GMT", 30_000],
        ["Wed, 21 Oct 2015 07:27:00 GMT", 0], // in the past
        ["Wednesday, 21-Oct-15 07:29:00 GMT", 60_000], // RFC 850
        ["Wed Oct 21 07:28:10 2015", 10_000], // asctime, read as UTC
        ["Wed Oct  1 07:28:00 2015", 0],
        ["2015-10-21T07:28:05Z", 5_000],
        ["-1", undefined],
        ["1.5", undefined],
        ["", undefined],
        ["soon", undefined],
        ["Wed, 31 Feb 2015 07:28:00 GMT", undefined],
        ["Wed, 21 Oct 2015 25:28:00 GMT", undefined],
        ["21 Oct 2015", undefined]
      ]
      for (const [header, expected] of cases) {
        const parsed = Retry.parseRetryAfter(header, t0)
        assert.deepStrictEqual(Option.map(parsed, Duration.toMillis), Option.fromNullable(expected), JSON.stringify(header))
      }
    })

    const schedule = Retry.retryAfterAware(Retry.exponential({ base: "100 millis" }), { cap: "1 minute" })

    it.effect("a Retry-After replaces the computed delay and is capped", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(
          yield* stepDelays(schedule, [
            http(503),
            http(429, "3"),
            http(503),
            http(429, "3600"),
            http(429, "soon"),
            http(429, "0")
          ]),
          [100, 3_000, 400, 60_000, 1_600, 0]
        )
      }))

    it.effect("a custom extractor finds the header elsewhere; the inner schedule still limits retries", () =>
      Effect.gen(function*() {
        const custom = Retry.retryAfterAware(Retry.maxRetries(Retry.exponential({ base: "100 millis" }), 2), {
          cap: "10 seconds",
          retryAfter: (error: { readonly headers: Readonly<Record<string, string>> }) => error.headers["retry-after"]
        })
        assert.deepStrictEqual(
          yield* stepDelays(custom, [{ headers: { "retry-after": "7" } }, { headers: {} }, { headers: {} }]),
          [7_000, 200]
        )
      }))

    it.effect("an HTTP-date Retry-After is measured from the Clock's current time", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(t0)
        const { effect, runs } = scripted([http(503, "Wed, 21 Oct 2015 07:28:30 GMT")])
        const fiber = yield* Effect.fork(Effect.retry(effect, schedule))
        yield* TestClock.adjust("29999 millis")
        assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
        yield* TestClock.adjust("1 millis")
        assert.strictEqual(yield* Fiber.join(fiber), "ok")
        assert.strictEqual(runs(), 2)
        assert.strictEqual((yield* Clock.currentTimeMillis) - t0, 30_000)
      }))
  })

  describe("classify", () => {
    const cases: ReadonlyArray<readonly [string, unknown, Retry.ErrorClass]> = [
      ["EmbedError timeout", new EmbedError({ reason: "timeout", message: "slow" }), "retryable"],
      ["EmbedError connection", new EmbedError({ reason: "connection", message: "reset" }), "retryable"],
      ["EmbedError http 408", http(408), "retryable"],
      ["EmbedError http 429", http(429), "retryable"],
      ["EmbedError http 500", http(500), "retryable"],
      ["EmbedError http 502", http(502), "retryable"],
      ["EmbedError http 503", http(503), "retryable"],
      ["EmbedError http 599", http(599), "retryable"],
      ["EmbedError http 400", http(400), "fatal"],
      ["EmbedError http 401", http(401), "fatal"],
      ["EmbedError http 403", http(403), "fatal"],
      ["EmbedError http 404", http(404), "fatal"],
      ["EmbedError http 413", http(413), "fatal"],
      ["EmbedError http 422", http(422), "fatal"],
      ["EmbedError http without status", new EmbedError({ reason: "http", message: "?" }), "fatal"],
      ["EmbedError provider without status", new EmbedError({ reason: "provider", message: "overloaded" }), "retryable"],
      ["EmbedError provider 503", new EmbedError({ reason: "provider", status: 503, message: "x" }), "retryable"],
      ["EmbedError provider 400", new EmbedError({ reason: "provider", status: 400, message: "x" }), "fatal"],
      ["EmbedError malformed-response", new EmbedError({ reason: "malformed-response", message: "x" }), "fatal"],
      [
        "EmbedError malformed-response with 503",
        new EmbedError({ reason: "malformed-response", status: 503, message: "x" }),
        "fatal"
      ],
      ["EmbedError dimension-mismatch", new EmbedError({ reason: "dimension-mismatch", message: "x" }), "fatal"],
      ["EmbedError invalid-input", new EmbedError({ reason: "invalid-input", message: "x" }), "fatal"],
      ["EmbedError config", new EmbedError({ reason: "config", message: "x" }), "fatal"],
      ["TimeoutException", new Cause.TimeoutException(), "retryable"],
      ["BreakerOpen", new BreakerOpen({ message: "open" }), "fatal"],
      ["BreakerOpen-tagged object with a 503", { _tag: "BreakerOpen", status: 503 }, "fatal"],
      ["InvalidInput", new InvalidInput({ reason: "option", message: "x" }), "fatal"],
      ["StoreError", new StoreError({ reason: "query", message: "x" }), "fatal"],
      ["ECONNRESET", nodeError("ECONNRESET"), "retryable"],
      ["ECONNREFUSED", nodeError("ECONNREFUSED"), "retryable"],
      ["EPIPE", nodeError("EPIPE"), "retryable"],
      ["ETIMEDOUT", nodeError("ETIMEDOUT"), "retryable"],
      ["EAI_AGAIN", nodeError("EAI_AGAIN"), "retryable"],
      ["ENOTFOUND", nodeError("ENOTFOUND"), "fatal"],
      ["EACCES", nodeError("EACCES"), "fatal"],
      [
        "fetch failed caused by ECONNREFUSED",
        new TypeError("fetch failed", { cause: nodeError("ECONNREFUSED") }),
        "retryable"
      ],
      ["AbortSignal.timeout's TimeoutError", Object.assign(new Error("timed out"), { name: "TimeoutError" }), "retryable"],
      ["plain object with status 503", { status: 503 }, "retryable"],
      ["plain object with statusCode 429", { statusCode: 429 }, "retryable"],
      ["plain object with status 404", { status: 404 }, "fatal"],
      ["platform transport RequestError", { _tag: "RequestError", reason: "Transport" }, "retryable"],
      ["platform encode RequestError", { _tag: "RequestError", reason: "Encode" }, "fatal"],
      ["platform ResponseError 502", { _tag: "ResponseError", reason: "StatusCode", response: { status: 502 } }, "retryable"],
      ["platform ResponseError decode", { _tag: "ResponseError", reason: "Decode", response: { status: 200 } }, "fatal"],
      ["plain Error", new Error("boom"), "fatal"],
      ["string", "boom", "fatal"],
      ["undefined", undefined, "fatal"],
      ["null", null, "fatal"]
    ]
    it("sorts errors into retryable and fatal", () => {
      for (const [name, error, expected] of cases) {
        assert.strictEqual(Retry.classify(error), expected, name)
        assert.strictEqual(Retry.isRetryable(error), expected === "retryable", name)
      }
    })

    it("stops following a cause chain that never ends", () => {
      const cyclic: { cause?: unknown } = {}
      cyclic.cause = cyclic
      assert.strictEqual(Retry.classify(cyclic), "fatal")
    })
  })

  describe("retry", () => {
    it.effect("retries 503s and succeeds after exactly the backoff delays", () =>
      Effect.gen(function*() {
        const { effect, runs } = scripted([http(503), http(503)])
        const fiber = yield* Effect.fork(Retry.retryWithAttempts(effect, nonePolicy))
        yield* TestClock.adjust("299 millis") // 100 + 200
        assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
        yield* TestClock.adjust("1 millis")
        const outcome = yield* Fiber.join(fiber)
        assert.deepStrictEqual(outcome.result, Either.right("ok"))
        assert.strictEqual(outcome.attempts, 3)
        assert.strictEqual(runs(), 3)
        assert.strictEqual(yield* Clock.currentTimeMillis, 300)
      }))

    it.effect("is pipeable and returns the value", () =>
      Effect.gen(function*() {
        const { effect } = scripted([http(500)])
        const fiber = yield* Effect.fork(effect.pipe(Retry.retry(nonePolicy)))
        yield* TestClock.adjust("100 millis")
        assert.strictEqual(yield* Fiber.join(fiber), "ok")
      }))

    it.effect("does not retry fatal errors", () =>
      Effect.gen(function*() {
        const fatal: ReadonlyArray<object> = [
          http(400),
          new EmbedError({ reason: "malformed-response", message: "not JSON" }),
          new EmbedError({ reason: "dimension-mismatch", message: "768 != 1536" }),
          new BreakerOpen({ message: "breaker open" }),
          { _tag: "BreakerOpen" }
        ]
        for (const error of fatal) {
          const { effect, runs } = scripted([error, error])
          const outcome = yield* Retry.retryWithAttempts(effect, nonePolicy)
          assert.deepStrictEqual(outcome.result, Either.left(error))
          assert.strictEqual(outcome.attempts, 1)
          assert.strictEqual(runs(), 1)
        }
        assert.strictEqual(yield* Clock.currentTimeMillis, 0)
      }))

    it.effect("honours a 429's Retry-After, capped at retryAfterCap", () =>
      Effect.gen(function*() {
        const policy: Retry.Policy = { ...nonePolicy, retryAfterCap: "1 minute" }
        const honoured = scripted([http(429, "3")])
        const fiber = yield* Effect.fork(Retry.retry(honoured.effect, policy))
        yield* TestClock.adjust("2999 millis")
        assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
        yield* TestClock.adjust("1 millis")
        assert.strictEqual(yield* Fiber.join(fiber), "ok")

        const capped = scripted([http(429, "3600")])
        const start = yield* Clock.currentTimeMillis
        const cappedFiber = yield* Effect.fork(Retry.retry(capped.effect, policy))
        yield* TestClock.adjust("59999 millis")
        assert.isTrue(Option.isNone(yield* Fiber.poll(cappedFiber)))
        yield* TestClock.adjust("1 millis")
        assert.strictEqual(yield* Fiber.join(cappedFiber), "ok")
        assert.strictEqual((yield* Clock.currentTimeMillis) - start, 60_000)
      }))

    it.effect("an invalid Retry-After falls back to the computed delay", () =>
      Effect.gen(function*() {
        const { effect } = scripted([http(503, "later, maybe")])
        const fiber = yield* Effect.fork(Retry.retry(effect, nonePolicy))
        yield* TestClock.adjust("100 millis")
        assert.strictEqual(yield* Fiber.join(fiber), "ok")
        assert.strictEqual(yield* Clock.currentTimeMillis, 100)
      }))

    it.effect("interrupts an attempt that runs past attemptTimeout, then retries it", () =>
      Effect.gen(function*() {
        let runs = 0
        let interrupted = 0
        const effect = Effect.suspend(() =>
          ++runs === 1
            ? Effect.never.pipe(Effect.onInterrupt(() => Effect.sync(() => void interrupted++)))
            : Effect.succeed("ok")
        )
        const fiber = yield* Effect.fork(
          Retry.retryWithAttempts(effect, { ...nonePolicy, attemptTimeout: "1 second" })
        )
        yield* TestClock.adjust("1 second")
        assert.strictEqual(interrupted, 1, "the timed-out attempt was interrupted")
        assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
        yield* TestClock.adjust("100 millis")
        const outcome = yield* Fiber.join(fiber)
        assert.deepStrictEqual(outcome.result, Either.right("ok"))
        assert.strictEqual(outcome.attempts, 2)
        assert.strictEqual(yield* Clock.currentTimeMillis, 1_100)
      }))

    it.effect("a timeout that keeps happening ends as an EmbedError with reason timeout", () =>
      Effect.gen(function*() {
        let interrupted = 0
        const hang = Effect.never.pipe(Effect.onInterrupt(() => Effect.sync(() => void interrupted++)))
        const fiber = yield* Effect.fork(
          Retry.retryWithAttempts(hang, { ...nonePolicy, maxRetries: 1, attemptTimeout: "1 second" })
        )
        yield* TestClock.adjust("2100 millis") // 1 s + 100 ms + 1 s
        const outcome = yield* Fiber.join(fiber)
        assert.strictEqual(outcome.attempts, 2)
        assert.strictEqual(interrupted, 2)
        assert.isTrue(Either.isLeft(outcome.result))
        const error = Either.getLeft(outcome.result).pipe(Option.getOrThrow)
        assert.instanceOf(error, EmbedError)
        assert.strictEqual(error.reason, "timeout")
        assert.include(error.message, "1s")

        // a custom timeout error
        class Slow extends Data.TaggedError("Slow")<{ readonly after: number }> {}
        const custom = yield* Effect.fork(
          Effect.either(
            Retry.retry(hang, { ...nonePolicy, maxRetries: 0, attemptTimeout: "1 second" }, {
              onTimeout: (after) => new Slow({ after: Duration.toMillis(after) })
            })
          )
        )
        yield* TestClock.adjust("1 second")
        assert.deepStrictEqual(yield* Fiber.join(custom), Either.left(new Slow({ after: 1_000 })))
      }))

    it.effect("returns the last error when retries run out", () =>
      Effect.gen(function*() {
        const errors = [1, 2, 3, 4].map((n) => new EmbedError({ reason: "http", status: 503, message: `failure ${n}` }))
        const { effect } = scripted(errors)
        const fiber = yield* Effect.fork(Retry.retryWithAttempts(effect, { ...nonePolicy, maxRetries: 2 }))
        yield* TestClock.adjust("300 millis")
        const outcome = yield* Fiber.join(fiber)
        assert.strictEqual(outcome.attempts, 3)
        assert.deepStrictEqual(outcome.result, Either.left(errors[2]))
      }))

    it.effect("stops when the budget, counted from the first attempt, would be exceeded", () =>
      Effect.gen(function*() {
        // every attempt takes 200 ms then fails with a 503
        let runs = 0
        const slow = Effect.sleep("200 millis").pipe(
          Effect.zipRight(Effect.suspend(() => {
            runs++
            return Effect.fail(http(503))
          }))
        )
        const fiber = yield* Effect.fork(Retry.retryWithAttempts(slow, { ...nonePolicy, budget: "500 millis" }))
        // t=200 fail: 200 + 100 <= 500, retry at 300; t=500 fail: 500 + 200 > 500, stop
        yield* TestClock.adjust("1 second")
        const outcome = yield* Fiber.join(fiber)
        assert.strictEqual(outcome.attempts, 2)
        assert.strictEqual(runs, 2)
        assert.isTrue(Either.isLeft(outcome.result))
      }))

    it.effect("a custom isRetryable decides, except that BreakerOpen is never retried", () =>
      Effect.gen(function*() {
        const retryEverything = { isRetryable: () => true }
        const badRequest = scripted([http(400)])
        const fiber = yield* Effect.fork(Retry.retryWithAttempts(badRequest.effect, nonePolicy, retryEverything))
        yield* TestClock.adjust("100 millis")
        assert.strictEqual((yield* Fiber.join(fiber)).attempts, 2)

        const open = scripted([new BreakerOpen({ message: "open" })])
        const outcome = yield* Retry.retryWithAttempts(open.effect, nonePolicy, retryEverything)
        assert.strictEqual(outcome.attempts, 1)
      }))

    it.effect("jittered policies are deterministic under a seeded Random", () =>
      Effect.gen(function*() {
        const policy: Retry.Policy = { ...nonePolicy, jitter: "full", cap: "1 second" }
        const run = Effect.gen(function*() {
          const start = yield* Clock.currentTimeMillis
          const { effect } = scripted([http(503), http(503)])
          const fiber = yield* Effect.fork(Retry.retry(effect, policy).pipe(Effect.zipRight(Clock.currentTimeMillis)))
          yield* TestClock.adjust("1 second")
          return (yield* Fiber.join(fiber)) - start
        })
        // full jitter from 100 ms with seed 42 waits 53 then 149 ms (as in the schedule test above)
        assert.strictEqual(yield* seeded(42, run), 53 + 149)
        assert.strictEqual(yield* seeded(42, run), 53 + 149)
        assert.deepStrictEqual(yield* seeded(42, stepDelays(Retry.schedule(policy), [http(503), http(503)])), [53, 149])
      }))

    it("defaultPolicy", () => {
      assert.strictEqual(Retry.defaultPolicy.maxRetries, 4)
      assert.strictEqual(Retry.defaultPolicy.jitter, "full")
      assert.strictEqual(Duration.toMillis(Duration.decode(Retry.defaultPolicy.base)), 500)
    })
  })
})

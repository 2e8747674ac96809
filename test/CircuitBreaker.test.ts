import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as fc from "effect/FastCheck"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as CircuitBreaker from "../src/CircuitBreaker.js"
import { failsNaming, withEnv } from "./config.js"

/** let every forked fiber run until it blocks (TestClock waits for them to suspend) */
const settle = TestClock.adjust(0)

const ok = Effect.succeed("ok")
const boom = Effect.fail("boom")

/** run one call through the breaker and return its outcome as an Either */
const call = <A, E>(breaker: CircuitBreaker.CircuitBreaker, effect: Effect.Effect<A, E>) =>
  Effect.either(breaker.withBreaker(effect))

/** the BreakerOpen a call was rejected with, or a test failure */
const rejected = <A, E>(result: Either.Either<A, E | CircuitBreaker.BreakerOpen>): CircuitBreaker.BreakerOpen => {
  if (Either.isLeft(result) && result.left instanceof CircuitBreaker.BreakerOpen) return result.left
  assert.fail(`expected a BreakerOpen rejection, got ${String(result)}`)
}

const times = (n: number, effect: Effect.Effect<unknown, unknown>) => Effect.repeatN(Effect.ignore(effect), n - 1)

/** a breaker tripped by `threshold` consecutive failures, at the current time */
const tripped = (options: Omit<CircuitBreaker.Options, "policy"> & { readonly threshold?: number }) =>
  Effect.gen(function*() {
    const threshold = options.threshold ?? 1
    const breaker = yield* CircuitBreaker.make({ ...options, policy: CircuitBreaker.consecutiveFailures(threshold) })
    yield* times(threshold, breaker.withBreaker(boom))
    assert.strictEqual(yield* breaker.state, "open")
    return breaker
  })

const counter = (metric: Metric.Metric.Counter<number>, name: string, to?: CircuitBreaker.State) =>
  Effect.map(
    Metric.value(
      to === undefined
        ? Metric.tagged(metric, "breaker", name)
        : metric.pipe(Metric.tagged("breaker", name), Metric.tagged("to", to))
    ),
    (state) => state.count
  )

describe("CircuitBreaker", () => {
  it.scoped("opens after N consecutive failures (and not before; a success in between resets the count)", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({
        name: "consecutive",
        policy: CircuitBreaker.consecutiveFailures(3)
      })
      yield* call(breaker, boom)
      yield* call(breaker, boom)
      assert.strictEqual(yield* breaker.state, "closed")
      assert.deepStrictEqual(yield* call(breaker, ok), Either.right("ok"))
      assert.strictEqual((yield* breaker.snapshot).consecutiveFailures, 0)
      yield* call(breaker, boom)
      yield* call(breaker, boom)
      assert.strictEqual(yield* breaker.state, "closed")
      assert.deepStrictEqual(yield* call(breaker, boom), Either.left("boom"))
      assert.strictEqual(yield* breaker.state, "open")
    }))

  it.scoped("stays closed below the minimum number of calls, then opens once it is reached with the rate exceeded", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({
        name: "minimum-calls",
        policy: CircuitBreaker.failureRateCount({ window: 10, minimumCalls: 4, rate: 0.5 })
      })
      yield* times(3, breaker.withBreaker(boom))
      assert.strictEqual(yield* breaker.state, "closed", "3 of 3 failed, but fewer than 4 calls")
      yield* call(breaker, ok)
      assert.strictEqual(yield* breaker.state, "open", "3 of 4 failed: 75% >= 50%")
    }))

  it.scoped("failure rate over the last N calls: old outcomes slide out of the window", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({
        name: "sliding-count",
        policy: CircuitBreaker.failureRateCount({ window: 4, minimumCalls: 4, rate: 0.75 })
      })
      yield* times(2, breaker.withBreaker(boom))
      yield* times(4, breaker.withBreaker(ok))
      // both failures have slid out
      assert.deepStrictEqual((yield* breaker.snapshot).window, { calls: 4, failures: 0 })
      yield* times(2, breaker.withBreaker(boom))
      assert.deepStrictEqual((yield* breaker.snapshot).window, { calls: 4, failures: 2 })
      assert.strictEqual(yield* breaker.state, "closed")
      yield* call(breaker, boom)
      // 3 of the last 4 failed (over all calls it would be 5 of 9, below 75%)
      assert.strictEqual(yield* breaker.state, "open")
    }))

  it.scoped("time-window buckets expire old failures", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({
        name: "time-buckets",
        policy: CircuitBreaker.failureRateTime({ window: "10 seconds", buckets: 10, minimumThroughput: 3, rate: 0.7 })
      })
      // failures 5 s apart are in the same 10 s window
      yield* times(2, breaker.withBreaker(boom))
      yield* TestClock.adjust("5 seconds")
      assert.deepStrictEqual((yield* breaker.snapshot).window, { calls: 2, failures: 2 })
      yield* call(breaker, boom)
      assert.strictEqual(yield* breaker.state, "open", "3 of 3 within 10 s")
      yield* breaker.reset

      yield* times(2, breaker.withBreaker(boom))
      yield* TestClock.adjust("5 seconds")
      yield* call(breaker, ok)
      assert.deepStrictEqual((yield* breaker.snapshot).window, { calls: 3, failures: 2 })
      assert.strictEqual(yield* breaker.state, "closed", "2 of 3: below 70%")
      yield* TestClock.adjust("5500 millis")
      // the bucket holding the failures has expired, the success's has not
      assert.deepStrictEqual((yield* breaker.snapshot).window, { calls: 1, failures: 0 })
      yield* times(2, breaker.withBreaker(boom))
      // 2 of 3 in the window; counting the expired failures it would be 4 of 5, and trip
      assert.deepStrictEqual((yield* breaker.snapshot).window, { calls: 3, failures: 2 })
      assert.strictEqual(yield* breaker.state, "closed")
    }))

  it.scoped("minimum throughput for the time-window policy", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({
        name: "throughput",
        policy: CircuitBreaker.failureRateTime({ window: "10 seconds", buckets: 5, minimumThroughput: 5, rate: 0.5 })
      })
      for (let i = 0; i < 4; i++) {
        yield* call(breaker, boom)
        yield* TestClock.adjust("1 second")
      }
      assert.strictEqual(yield* breaker.state, "closed", "4 failures, below a throughput of 5")
      yield* call(breaker, boom)
      assert.strictEqual(yield* breaker.state, "open")
    }))

  it.scoped("the rejection names the last failure before the breaker opened: a message, a defect, at most 300 characters", () =>
    Effect.gen(function*() {
      const failures: ReadonlyArray<readonly [Effect.Effect<never, unknown>, string]> = [
        [Effect.fail(new Error("getaddrinfo ENOTFOUND api.example.com")), "getaddrinfo ENOTFOUND api.example.com"],
        [Effect.die(new Error("a bug")), "a bug"],
        [Effect.fail("x".repeat(400)), `${"x".repeat(299)}…`]
      ]
      for (const [failure, last] of failures) {
        const breaker = yield* CircuitBreaker.make({ name: "b", policy: CircuitBreaker.consecutiveFailures(2) })
        yield* call(breaker, boom)
        yield* Effect.exit(breaker.withBreaker(failure))
        const error = rejected(yield* call(breaker, ok))
        assert.strictEqual(
          error.message.split(" (the last: ")[1],
          `${last}); retry after ${new Date(error.retryAt!).toISOString()}`
        )
      }
    }))

  it.scoped("while open, calls are rejected at once with BreakerOpen carrying retryAt; the effect is not run", () =>
    Effect.gen(function*() {
      yield* TestClock.adjust("5 seconds")
      const breaker = yield* tripped({ name: "embedder", threshold: 2 })
      const ran = yield* Ref.make(0)
      const effect = Ref.update(ran, (n) => n + 1)
      const error = rejected(yield* call(breaker, effect))
      assert.strictEqual(error._tag, "BreakerOpen")
      assert.strictEqual(error.reason, "open")
      assert.strictEqual(error.breaker, "embedder")
      assert.strictEqual(error.retryAt, 6_000)
      assert.strictEqual(
        error.message,
        "circuit breaker \"embedder\" is open after 2 consecutive failures (the last: boom); retry after " +
          "1970-01-01T00:00:06.000Z"
      )
      yield* TestClock.adjust("999 millis")
      assert.strictEqual(rejected(yield* call(breaker, effect)).retryAt, 6_000)
      assert.strictEqual(yield* Ref.get(ran), 0)
      yield* TestClock.adjust("1 millis")
      assert.isTrue(Either.isRight(yield* call(breaker, effect)))
      assert.strictEqual(yield* Ref.get(ran), 1)
    }))

  it.scoped("half-open admits exactly k probes and rejects the rest", () =>
    Effect.gen(function*() {
      const breaker = yield* tripped({ name: "permits", halfOpenPermits: 3 })
      yield* TestClock.adjust("1 second")
      const gate = yield* Deferred.make<string>()
      const started = yield* Ref.make(0)
      const probe = Effect.zipRight(Ref.update(started, (n) => n + 1), Deferred.await(gate))
      const fibers = yield* Effect.forEach(
        Array.from({ length: 5 }, () => probe),
        (effect) => Effect.fork(call(breaker, effect)),
        { concurrency: "unbounded" }
      )
      yield* settle
      assert.strictEqual(yield* Ref.get(started), 3)
      const snapshot = yield* breaker.snapshot
      assert.strictEqual(snapshot.state, "half-open")
      assert.deepStrictEqual(snapshot.halfOpen, { permits: 3, inFlight: 3, succeeded: 0 })
      const done = yield* Effect.forEach(fibers, Fiber.poll)
      const rejections = done.filter(Option.isSome).map((exit) => Exit.getOrElse(exit.value, () => assert.fail("died")))
      assert.strictEqual(rejections.length, 2)
      for (const r of rejections) {
        const error = rejected(r)
        assert.strictEqual(error.reason, "half-open-full")
        // no probe deadline: one more of the last open durations (1 s) from the rejection at 1 s
        assert.strictEqual(error.retryAt, 2_000)
        assert.include(error.message, "retry after 1970-01-01T00:00:02.000Z")
      }

      yield* Deferred.succeed(gate, "probed")
      const results = yield* Effect.forEach(fibers, Fiber.join)
      assert.strictEqual(results.filter(Either.isRight).length, 3)
      assert.strictEqual(yield* breaker.state, "closed")
    }))

  it.scoped("half-open-full: retryAt is when the earliest running probe reaches its deadline", () =>
    Effect.gen(function*() {
      const breaker = yield* tripped({ name: "full-deadline", halfOpenPermits: 2, probeDeadline: "5 seconds" })
      yield* TestClock.adjust("1 second")
      const first = yield* Effect.fork(call(breaker, Effect.never))
      yield* settle
      yield* TestClock.adjust("2 seconds")
      const second = yield* Effect.fork(call(breaker, Effect.never))
      yield* settle
      assert.deepStrictEqual((yield* breaker.snapshot).halfOpen, { permits: 2, inFlight: 2, succeeded: 0 })
      yield* TestClock.adjust("1 second")
      const error = rejected(yield* call(breaker, ok))
      assert.strictEqual(error.reason, "half-open-full")
      assert.strictEqual(error.retryAt, 1_000 + 5_000, "the first probe (started at 1 s) is decided by 6 s")

      // the first probe is interrupted: the earliest running probe is now the second one
      yield* Fiber.interrupt(first)
      const third = yield* Effect.fork(call(breaker, Effect.never))
      yield* settle
      assert.strictEqual(rejected(yield* call(breaker, ok)).retryAt, 3_000 + 5_000)
      yield* Fiber.interrupt(second)
      yield* Fiber.interrupt(third)
      assert.strictEqual((yield* breaker.snapshot).halfOpen.inFlight, 0)
    }))

  it.scoped("a probe past its deadline after the breaker moved on may be retried at once", () =>
    Effect.gen(function*() {
      const breaker = yield* tripped({ name: "late-probe", probeDeadline: "5 seconds" })
      yield* TestClock.adjust("1 second")
      const probe = yield* Effect.fork(call(breaker, Effect.never))
      yield* settle
      yield* TestClock.adjust("2 seconds")
      yield* breaker.reset
      yield* TestClock.adjust("3 seconds")
      const error = rejected(yield* Fiber.join(probe))
      assert.strictEqual(error.reason, "open")
      assert.strictEqual(error.retryAt, 6_000)
      assert.include(error.message, "the breaker is closed now")
      assert.strictEqual(yield* breaker.state, "closed")
      assert.deepStrictEqual(yield* call(breaker, ok), Either.right("ok"))
    }))

  it.scoped("probe success closes, and the open-duration schedule resets", () =>
    Effect.gen(function*() {
      const breaker = yield* tripped({ name: "probe-success" })
      assert.deepStrictEqual((yield* breaker.snapshot).retryAt, Option.some(1_000))
      yield* TestClock.adjust("1 second")
      yield* call(breaker, boom) // probe fails: open for 2 s
      assert.deepStrictEqual((yield* breaker.snapshot).retryAt, Option.some(3_000))
      yield* TestClock.adjust("2 seconds")
      assert.deepStrictEqual(yield* call(breaker, ok), Either.right("ok"))
      const closed = yield* breaker.snapshot
      assert.strictEqual(closed.state, "closed")
      assert.strictEqual(closed.openings, 0)
      assert.deepStrictEqual(closed.retryAt, Option.none())
      // the next opening starts from the first delay again
      yield* call(breaker, boom)
      assert.deepStrictEqual((yield* breaker.snapshot).retryAt, Option.some(3_000 + 1_000))
    }))

  it.scoped("probe failure re-opens with the next, longer open duration (1 s, 2 s, 4 s, capped)", () =>
    Effect.gen(function*() {
      const breaker = yield* tripped({
        name: "backoff",
        openDuration: Schedule.exponential("1 second").pipe(Schedule.union(Schedule.spaced("5 seconds")))
      })
      const retryAt = Effect.map(breaker.snapshot, (s) => Option.getOrThrow(s.retryAt))
      assert.strictEqual(yield* retryAt, 1_000)
      yield* TestClock.adjust("1 second")
      yield* call(breaker, boom)
      assert.strictEqual(yield* retryAt, 1_000 + 2_000)
      yield* TestClock.adjust("2 seconds")
      yield* call(breaker, boom)
      assert.strictEqual(yield* retryAt, 3_000 + 4_000)
      yield* TestClock.adjust("4 seconds")
      yield* call(breaker, boom)
      assert.strictEqual(yield* retryAt, 7_000 + 5_000, "8 s capped at 5 s")
      assert.strictEqual((yield* breaker.snapshot).openings, 4)
      assert.strictEqual(rejected(yield* call(breaker, ok)).retryAt, 12_000)
    }))

  it.scoped("an interrupted probe frees its permit and the breaker recovers", () =>
    Effect.gen(function*() {
      const breaker = yield* tripped({ name: "interrupted-probe" })
      yield* TestClock.adjust("1 second")
      const probe = yield* Effect.fork(call(breaker, Effect.never))
      yield* settle
      const full = rejected(yield* call(breaker, ok))
      assert.strictEqual(full.reason, "half-open-full")
      assert.strictEqual(full.retryAt, 1_000 + 1_000)
      yield* Fiber.interrupt(probe)
      const after = yield* breaker.snapshot
      assert.strictEqual(after.state, "half-open")
      assert.deepStrictEqual(after.halfOpen, { permits: 1, inFlight: 0, succeeded: 0 })
      assert.strictEqual(after.totals.failures, 1, "the interruption is not a failure")
      assert.deepStrictEqual(yield* call(breaker, ok), Either.right("ok"))
      assert.strictEqual(yield* breaker.state, "closed")
    }))

  it.scoped("a probe past its deadline counts as a failure and is interrupted", () =>
    Effect.gen(function*() {
      const breaker = yield* tripped({ name: "deadline", probeDeadline: "5 seconds" })
      yield* TestClock.adjust("1 second")
      const interrupted = yield* Ref.make(false)
      const probe = yield* Effect.fork(
        call(breaker, Effect.onInterrupt(Effect.never, () => Ref.set(interrupted, true)))
      )
      yield* TestClock.adjust("4999 millis")
      assert.strictEqual(yield* breaker.state, "half-open")
      yield* TestClock.adjust("1 millis")
      const error = rejected(yield* Fiber.join(probe))
      assert.strictEqual(error.reason, "open")
      assert.strictEqual(error.retryAt, 6_000 + 2_000)
      assert.include(error.message, "ran past its 5s deadline")
      assert.isTrue(yield* Ref.get(interrupted))
      const snapshot = yield* breaker.snapshot
      assert.strictEqual(snapshot.state, "open")
      assert.strictEqual(snapshot.halfOpen.inFlight, 0)
      assert.strictEqual(snapshot.totals.failures, 2)
    }))

  it.scoped("slow calls above the threshold count as failures", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({
        name: "slow",
        policy: CircuitBreaker.consecutiveFailures(2),
        slowCallThreshold: "2 seconds"
      })
      const slowCall = (millis: number) =>
        Effect.gen(function*() {
          const fiber = yield* Effect.fork(call(breaker, Effect.as(Effect.sleep(millis), `after ${millis}`)))
          yield* TestClock.adjust(millis)
          return yield* Fiber.join(fiber)
        })
      assert.deepStrictEqual(yield* slowCall(3_000), Either.right("after 3000"), "the value is still returned")
      assert.strictEqual((yield* breaker.snapshot).consecutiveFailures, 1)
      yield* slowCall(2_000) // at the threshold: not slow
      assert.strictEqual((yield* breaker.snapshot).consecutiveFailures, 0)
      yield* slowCall(2_001)
      yield* slowCall(2_500)
      assert.strictEqual(yield* breaker.state, "open")
    }))

  it.scoped("isFailure: errors it rejects pass through without tripping", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({
        name: "is-failure",
        policy: CircuitBreaker.consecutiveFailures(2),
        isFailure: (error) => typeof error === "object" && error !== null && "status" in error && error.status === 503
      })
      for (let i = 0; i < 5; i++) {
        assert.deepStrictEqual(yield* call(breaker, Effect.fail({ status: 400 })), Either.left({ status: 400 }))
      }
      assert.strictEqual(yield* breaker.state, "closed")
      yield* call(breaker, Effect.fail({ status: 503 }))
      yield* call(breaker, Effect.fail({ status: 400 })) // resets the count: the dependency answered
      yield* call(breaker, Effect.fail({ status: 503 }))
      assert.strictEqual(yield* breaker.state, "closed")
      yield* call(breaker, Effect.fail({ status: 503 }))
      assert.strictEqual(yield* breaker.state, "open")
      const totals = (yield* breaker.snapshot).totals
      assert.strictEqual(totals.failures, 3)
      assert.strictEqual(totals.successes, 6)
    }))

  it.scoped("forced-open rejects everything until reset; disabled passes everything and records nothing", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({ name: "forced", policy: CircuitBreaker.consecutiveFailures(1) })
      const ran = yield* Ref.make(0)
      const effect = Ref.updateAndGet(ran, (n) => n + 1)
      yield* breaker.forceOpen
      assert.strictEqual(yield* breaker.state, "forced-open")
      const error = rejected(yield* call(breaker, effect))
      assert.strictEqual(error.reason, "forced-open")
      assert.isUndefined(error.retryAt)
      yield* TestClock.adjust("1 hour")
      assert.strictEqual(rejected(yield* call(breaker, effect)).reason, "forced-open")
      assert.strictEqual(yield* Ref.get(ran), 0)
      yield* breaker.reset
      assert.deepStrictEqual(yield* call(breaker, effect), Either.right(1))

      yield* breaker.disable
      for (let i = 0; i < 10; i++) assert.deepStrictEqual(yield* call(breaker, boom), Either.left("boom"))
      assert.deepStrictEqual(yield* call(breaker, effect), Either.right(2))
      const snapshot = yield* breaker.snapshot
      assert.strictEqual(snapshot.state, "disabled")
      assert.deepStrictEqual(snapshot.window, { calls: 1, failures: 0 }, "only the call made while closed")
      assert.deepStrictEqual(snapshot.totals, { calls: 1, successes: 1, failures: 0, rejections: 0, openings: 0 })
      yield* breaker.reset
      const cleared = yield* breaker.snapshot
      assert.strictEqual(cleared.state, "closed")
      assert.deepStrictEqual(cleared.totals, { calls: 0, successes: 0, failures: 0, rejections: 0, openings: 0 })
    }))

  it.scoped("waitForProbes: a call during half-open waits for the probe, then proceeds or fails", () =>
    Effect.gen(function*() {
      const scenario = (name: string, probeSucceeds: boolean) =>
        Effect.gen(function*() {
          const breaker = yield* tripped({ name, waitForProbes: true })
          yield* TestClock.adjust("1 second")
          const gate = yield* Deferred.make<string, string>()
          const probe = yield* Effect.fork(call(breaker, Deferred.await(gate)))
          yield* settle
          const ran = yield* Ref.make(false)
          const waiter = yield* Effect.fork(call(breaker, Effect.as(Ref.set(ran, true), "waited")))
          yield* settle
          assert.isTrue(Option.isNone(yield* Fiber.poll(waiter)), "the waiter is waiting")
          assert.isFalse(yield* Ref.get(ran))
          yield* probeSucceeds ? Deferred.succeed(gate, "probe") : Deferred.fail(gate, "boom")
          assert.deepStrictEqual(yield* Fiber.join(probe), probeSucceeds ? Either.right("probe") : Either.left("boom"))
          return { breaker, waiter: yield* Fiber.join(waiter), ran: yield* Ref.get(ran) }
        })

      const closed = yield* scenario("wait-success", true)
      assert.deepStrictEqual(closed.waiter, Either.right("waited"))
      assert.isTrue(closed.ran)
      assert.strictEqual(yield* closed.breaker.state, "closed")

      const reopened = yield* scenario("wait-failure", false)
      const error = rejected(reopened.waiter)
      assert.strictEqual(error.reason, "open")
      assert.strictEqual(error.retryAt, 2_000 + 2_000)
      assert.isFalse(reopened.ran)
      assert.strictEqual(yield* reopened.breaker.state, "open")
    }))

  it.scoped("waitForProbes: a waiter takes the permit of an interrupted probe", () =>
    Effect.gen(function*() {
      const breaker = yield* tripped({ name: "wait-interrupted", waitForProbes: true })
      yield* TestClock.adjust("1 second")
      const probe = yield* Effect.fork(call(breaker, Effect.never))
      yield* settle
      const waiter = yield* Effect.fork(call(breaker, ok))
      yield* settle
      assert.isTrue(Option.isNone(yield* Fiber.poll(waiter)))
      yield* Fiber.interrupt(probe)
      yield* settle
      const done = yield* Fiber.poll(waiter)
      assert.isTrue(Option.isSome(done), "the waiter was woken, not left waiting")
      assert.deepStrictEqual(yield* Fiber.join(waiter), Either.right("ok"))
      assert.strictEqual(yield* breaker.state, "closed")
    }))

  it.scoped("a defect in a probe releases the permit and counts as a failure", () =>
    Effect.gen(function*() {
      const breaker = yield* tripped({ name: "defect" })
      yield* TestClock.adjust("1 second")
      const exit = yield* Effect.exit(breaker.withBreaker(Effect.die("kaboom")))
      assert.isTrue(Exit.isFailure(exit) && Exit.causeOption(exit).pipe(Option.exists((c) => c._tag === "Die")))
      const snapshot = yield* breaker.snapshot
      assert.strictEqual(snapshot.state, "open")
      assert.strictEqual(snapshot.halfOpen.inFlight, 0)
      assert.deepStrictEqual(snapshot.retryAt, Option.some(1_000 + 2_000))
      assert.strictEqual(snapshot.totals.failures, 2)
      yield* TestClock.adjust("2 seconds")
      assert.deepStrictEqual(yield* call(breaker, ok), Either.right("ok"))
      assert.strictEqual(yield* breaker.state, "closed")
    }))

  it.scoped("metrics count calls, failures, rejections and state changes; changes reports each transition", () =>
    Effect.gen(function*() {
      const name = "metrics-and-changes"
      const breaker = yield* CircuitBreaker.make({ name, policy: CircuitBreaker.consecutiveFailures(2) })
      const changes = yield* Effect.fork(Stream.runCollect(Stream.take(breaker.changes, 4)))
      yield* settle

      yield* call(breaker, ok)
      yield* call(breaker, boom)
      yield* call(breaker, boom) // closed -> open at 0
      yield* call(breaker, ok) // rejected
      yield* TestClock.adjust("1 second")
      yield* call(breaker, ok) // open -> half-open -> closed at 1000
      yield* breaker.forceOpen // closed -> forced-open at 1000
      yield* call(breaker, ok) // rejected
      yield* breaker.forceOpen // no change

      assert.deepStrictEqual(Chunk.toReadonlyArray(yield* Fiber.join(changes)), [
        { breaker: name, from: "closed", to: "open", at: 0 },
        { breaker: name, from: "open", to: "half-open", at: 1_000 },
        { breaker: name, from: "half-open", to: "closed", at: 1_000 },
        { breaker: name, from: "closed", to: "forced-open", at: 1_000 }
      ])
      assert.strictEqual(yield* counter(CircuitBreaker.callsTotal, name), 4)
      assert.strictEqual(yield* counter(CircuitBreaker.failuresTotal, name), 2)
      assert.strictEqual(yield* counter(CircuitBreaker.rejectionsTotal, name), 2)
      for (const to of ["open", "half-open", "closed", "forced-open"] as const) {
        assert.strictEqual(yield* counter(CircuitBreaker.stateChangesTotal, name, to), 1, to)
      }
      assert.strictEqual(yield* counter(CircuitBreaker.stateChangesTotal, name, "disabled"), 0)
      const gauge = yield* Metric.value(Metric.tagged(CircuitBreaker.stateGauge, "breaker", name))
      assert.strictEqual(gauge.value, CircuitBreaker.stateCode["forced-open"])
    }))

  it.scoped("snapshot reflects state and window", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({
        name: "snapshot",
        policy: CircuitBreaker.failureRateCount({ window: 5, rate: 0.6 })
      })
      yield* call(breaker, boom)
      yield* call(breaker, boom)
      yield* call(breaker, ok)
      assert.deepStrictEqual(yield* breaker.snapshot, {
        name: "snapshot",
        state: "closed",
        window: { calls: 3, failures: 2 },
        consecutiveFailures: 0,
        openings: 0,
        retryAt: Option.none(),
        halfOpen: { permits: 1, inFlight: 0, succeeded: 0 },
        totals: { calls: 3, successes: 1, failures: 2, rejections: 0, openings: 0 }
      })
      yield* call(breaker, boom)
      yield* call(breaker, boom) // 4 of 5: 80% >= 60%
      yield* call(breaker, ok) // rejected
      assert.deepStrictEqual(yield* breaker.snapshot, {
        name: "snapshot",
        state: "open",
        window: { calls: 0, failures: 0 },
        consecutiveFailures: 2,
        openings: 1,
        retryAt: Option.some(1_000),
        halfOpen: { permits: 1, inFlight: 0, succeeded: 0 },
        totals: { calls: 5, successes: 1, failures: 4, rejections: 1, openings: 1 }
      })
    }))

  it.scoped("layer provides the Breaker service", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.Breaker
      assert.strictEqual(breaker.name, "from-layer")
      assert.deepStrictEqual(yield* call(breaker, ok), Either.right("ok"))
    }).pipe(
      Effect.provide(CircuitBreaker.layer({ name: "from-layer", policy: CircuitBreaker.consecutiveFailures(1) }))
    ))

  describe("layerConfig", () => {
    it.scoped("reads the policy, open durations and permits from RAGPIPE_CALL_BREAKER_* variables", () =>
      Effect.gen(function*() {
        const breaker = yield* CircuitBreaker.Breaker
        assert.strictEqual(breaker.name, "from-env")
        assert.strictEqual((yield* breaker.snapshot).halfOpen.permits, 2)
        yield* call(breaker, ok)
        yield* call(breaker, ok)
        yield* call(breaker, boom)
        assert.strictEqual(yield* breaker.state, "closed", "3 calls: below the 4 of the window")
        yield* call(breaker, boom)
        assert.strictEqual(yield* breaker.state, "open", "2 of 4 failed: 50%")
        assert.deepStrictEqual((yield* breaker.snapshot).retryAt, Option.some(2_000))
        yield* TestClock.adjust("2 seconds")
        yield* call(breaker, boom) // the probe fails: the next opening is 4 s, capped at 3 s
        assert.deepStrictEqual((yield* breaker.snapshot).retryAt, Option.some(2_000 + 3_000))
      }).pipe(
        Effect.provide(CircuitBreaker.layerConfig()),
        withEnv({
          RAGPIPE_CALL_BREAKER_NAME: "from-env",
          RAGPIPE_CALL_BREAKER_POLICY: "rate-count",
          RAGPIPE_CALL_BREAKER_WINDOW_CALLS: "4",
          RAGPIPE_CALL_BREAKER_RATE: "0.5",
          RAGPIPE_CALL_BREAKER_OPEN_DURATION: "2 seconds",
          RAGPIPE_CALL_BREAKER_MAX_OPEN_DURATION: "3 seconds",
          RAGPIPE_CALL_BREAKER_HALF_OPEN_PERMITS: "2"
        })
      ))

    it.effect("defaults: 5 consecutive failures, 1 probe, openings of 1 s doubling up to 60 s", () =>
      Effect.gen(function*() {
        const options = yield* CircuitBreaker.configFromEnv()
        assert.strictEqual(options.name, "circuit-breaker")
        assert.deepStrictEqual(options.policy, CircuitBreaker.consecutiveFailures(5))
        assert.strictEqual(options.halfOpenPermits, 1)
        assert.strictEqual(options.waitForProbes, false)
        assert.isUndefined(options.probeDeadline)
        assert.isUndefined(options.slowCallThreshold)
      }).pipe(withEnv({})))

    it.effect("rate-time with a custom prefix, a probe deadline and a slow-call threshold", () =>
      Effect.gen(function*() {
        const options = yield* CircuitBreaker.configFromEnv("EMBED_BREAKER")
        assert.deepStrictEqual(
          options.policy,
          CircuitBreaker.failureRateTime({ window: "30 seconds", buckets: 6, minimumThroughput: 3, rate: 0.25 })
        )
        assert.deepStrictEqual(options.probeDeadline, Duration.seconds(5))
        assert.deepStrictEqual(options.slowCallThreshold, Duration.millis(800))
        assert.strictEqual(options.waitForProbes, true)
      }).pipe(withEnv({
        EMBED_BREAKER_POLICY: "rate-time",
        EMBED_BREAKER_WINDOW: "30 seconds",
        EMBED_BREAKER_BUCKETS: "6",
        EMBED_BREAKER_MINIMUM_CALLS: "3",
        EMBED_BREAKER_RATE: "0.25",
        EMBED_BREAKER_PROBE_DEADLINE: "5 seconds",
        EMBED_BREAKER_SLOW_CALL_THRESHOLD: "800 millis",
        EMBED_BREAKER_WAIT_FOR_PROBES: "true"
      })))

    it.effect.each([
      [{ RAGPIPE_CALL_BREAKER_POLICY: "rate-time", RAGPIPE_CALL_BREAKER_RATE: "1.5" }, "RAGPIPE_CALL_BREAKER_RATE"],
      [{ RAGPIPE_CALL_BREAKER_THRESHOLD: "0" }, "RAGPIPE_CALL_BREAKER_THRESHOLD"],
      [
        { RAGPIPE_CALL_BREAKER_POLICY: "rate-count", RAGPIPE_CALL_BREAKER_MINIMUM_CALLS: "30" },
        "RAGPIPE_CALL_BREAKER_MINIMUM_CALLS"
      ],
      [{ RAGPIPE_CALL_BREAKER_HALF_OPEN_PERMITS: "0" }, "RAGPIPE_CALL_BREAKER_HALF_OPEN_PERMITS"],
      [{ RAGPIPE_CALL_BREAKER_OPEN_DURATION: "0 millis" }, "RAGPIPE_CALL_BREAKER_OPEN_DURATION"],
      [{ RAGPIPE_CALL_BREAKER_POLICY: "sometimes" }, "RAGPIPE_CALL_BREAKER_POLICY"]
    ] as const)("a value the breaker refuses is a ConfigError naming %j", ([entries, variable]) =>
      failsNaming(Effect.provide(CircuitBreaker.Breaker, CircuitBreaker.layerConfig()).pipe(withEnv(entries)), variable))

    it.scoped("isFailure is added by mapping the config", () =>
      Effect.gen(function*() {
        const breaker = yield* CircuitBreaker.Breaker
        yield* call(breaker, Effect.fail("client error"))
        assert.strictEqual(yield* breaker.state, "closed")
        yield* call(breaker, Effect.fail("server error"))
        assert.strictEqual(yield* breaker.state, "open")
      }).pipe(
        Effect.provide(CircuitBreaker.layerConfig(
          Config.map(CircuitBreaker.configFromEnv(), (options) => ({
            ...options,
            isFailure: (error: unknown) => error === "server error"
          }))
        )),
        withEnv({ RAGPIPE_CALL_BREAKER_THRESHOLD: "1" })
      ))
  })

  describe("layerTest", () => {
    it.effect("opens on the first failure and half-opens 1 s later; snapshot shows what it saw", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(yield* Effect.either(CircuitBreaker.withBreaker(boom)), Either.left("boom"))
        const opened = yield* CircuitBreaker.snapshot
        assert.strictEqual(opened.name, "test-breaker")
        assert.strictEqual(opened.state, "open")
        assert.deepStrictEqual(opened.retryAt, Option.some(1_000))
        assert.strictEqual(rejected(yield* Effect.either(CircuitBreaker.withBreaker(ok))).retryAt, 1_000)
        yield* TestClock.adjust("1 second")
        yield* Effect.either(CircuitBreaker.withBreaker(boom)) // the probe fails: open 1 s again, no growth
        assert.deepStrictEqual((yield* CircuitBreaker.snapshot).retryAt, Option.some(2_000))
        yield* TestClock.adjust("1 second")
        assert.deepStrictEqual(yield* Effect.either(CircuitBreaker.withBreaker(ok)), Either.right("ok"))
        assert.deepStrictEqual((yield* CircuitBreaker.snapshot).totals, {
          calls: 3,
          successes: 1,
          failures: 2,
          rejections: 1,
          openings: 2
        })
      }).pipe(Effect.provide(CircuitBreaker.layerTest())))

    it.effect("initial: forced-open refuses every call; disabled lets every call pass", () =>
      Effect.gen(function*() {
        const refused = yield* Effect.either(CircuitBreaker.withBreaker(ok)).pipe(
          Effect.provide(CircuitBreaker.layerTest({ initial: "forced-open", name: "refuses" }))
        )
        assert.strictEqual(rejected(refused).reason, "forced-open")
        assert.strictEqual(rejected(refused).breaker, "refuses")
        const passes = Effect.gen(function*() {
          for (let i = 0; i < 3; i++) yield* Effect.either(CircuitBreaker.withBreaker(boom))
          return yield* CircuitBreaker.snapshot
        }).pipe(Effect.provide(CircuitBreaker.layerTest({ initial: "disabled" })))
        const snapshot = yield* passes
        assert.strictEqual(snapshot.state, "disabled")
        assert.strictEqual(snapshot.totals.failures, 0)
      }))

    it.effect("takes any breaker option, e.g. a policy", () =>
      Effect.gen(function*() {
        yield* Effect.either(CircuitBreaker.withBreaker(boom))
        assert.strictEqual((yield* CircuitBreaker.snapshot).state, "closed")
        yield* Effect.either(CircuitBreaker.withBreaker(boom))
        assert.strictEqual((yield* CircuitBreaker.snapshot).state, "open")
      }).pipe(
        Effect.provide(CircuitBreaker.layerTest({ policy: CircuitBreaker.consecutiveFailures(2) }))
      ))
  })

  type Step =
    | { readonly _tag: "success" }
    | { readonly _tag: "failure" }
    | { readonly _tag: "block" }
    | { readonly _tag: "release"; readonly succeed: boolean }
    | { readonly _tag: "interrupt"; readonly index: number }
    | { readonly _tag: "tick"; readonly millis: number }

  const step: fc.Arbitrary<Step> = fc.oneof(
    fc.constant({ _tag: "success" } as const),
    fc.constant({ _tag: "failure" } as const),
    fc.constant({ _tag: "block" } as const),
    fc.boolean().map((succeed) => ({ _tag: "release", succeed } as const)),
    fc.nat(10).map((index) => ({ _tag: "interrupt", index } as const)),
    fc.integer({ min: 0, max: 3_000 }).map((millis) => ({ _tag: "tick", millis } as const))
  )

  it.effect.prop(
    "property: after any success/failure/interrupt sequence, a call is admitted once retryAt has passed",
    {
      steps: fc.array(step, { maxLength: 40 }),
      threshold: fc.integer({ min: 1, max: 3 }),
      permits: fc.integer({ min: 1, max: 3 })
    },
    ({ permits, steps, threshold }) =>
      Effect.scoped(Effect.gen(function*() {
        const breaker = yield* CircuitBreaker.make({
          name: "property",
          policy: CircuitBreaker.consecutiveFailures(threshold),
          halfOpenPermits: permits
        })
        let gate = yield* Deferred.make<void, string>()
        const pending: Array<Fiber.RuntimeFiber<Either.Either<unknown, unknown>>> = []
        /** when each pending call was made */
        const madeAt: Array<number> = []
        const start = (effect: Effect.Effect<unknown, unknown>) =>
          Effect.gen(function*() {
            madeAt.push(yield* Clock.currentTimeMillis)
            pending.push(yield* Effect.fork(call(breaker, effect)))
          })
        for (const s of steps) {
          switch (s._tag) {
            case "success":
              yield* start(ok)
              break
            case "failure":
              yield* start(boom)
              break
            case "block":
              yield* start(Deferred.await(gate))
              break
            case "release":
              yield* s.succeed ? Deferred.succeed(gate, undefined) : Deferred.fail(gate, "boom")
              gate = yield* Deferred.make<void, string>()
              break
            case "interrupt": {
              const fiber = pending[s.index % Math.max(1, pending.length)]
              if (fiber !== undefined) yield* Fiber.interrupt(fiber)
              break
            }
            case "tick":
              yield* TestClock.adjust(s.millis)
              break
          }
          // let the forked calls run until they block (cheaper than TestClock's settling, which polls in real time)
          yield* Effect.yieldNow()
          const { halfOpen } = yield* breaker.snapshot
          assert.isAtMost(halfOpen.inFlight, permits)
          assert.isAtMost(halfOpen.inFlight + halfOpen.succeeded, permits)
        }
        yield* Fiber.interruptAll(pending)
        assert.strictEqual((yield* breaker.snapshot).halfOpen.inFlight, 0)
        // every rejection says when to try again, and that is never before the call was made
        for (const [i, fiber] of pending.entries()) {
          const exit = yield* Fiber.await(fiber)
          const error = Exit.isSuccess(exit) && Either.isLeft(exit.value) ? exit.value.left : undefined
          if (error instanceof CircuitBreaker.BreakerOpen) {
            const retryAt = error.retryAt
            assert.isDefined(retryAt)
            assert.isAtLeast(retryAt!, madeAt[i]!)
          }
        }
        yield* TestClock.adjust("10 minutes")
        assert.deepStrictEqual(yield* call(breaker, ok), Either.right("ok"))
      })),
    { fastCheck: { numRuns: 120 } }
  )
})

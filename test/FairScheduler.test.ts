import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as FairScheduler from "../src/internal/fairScheduler.js"

/** Keep the thread for `millis`. */
const spin = (millis: number) => {
  const end = performance.now() + millis
  while (performance.now() < end) {
    // busy
  }
}

/**
 * `n` steps of a fiber, each after giving way to the scheduler and taking
 * `millis` of work; counts into `steps`.
 */
const busy = (n: number, steps: { n: number }, millis = 0) =>
  Effect.forEach(
    Array.from({ length: n }),
    () =>
      Effect.zipRight(
        Effect.yieldNow(),
        Effect.sync(() => {
          spin(millis)
          steps.n++
        })
      ),
    { discard: true }
  )

/** The steps taken when the event loop next has a turn (-1 until it has had one). */
const stepsAtNextTurn = (steps: { n: number }): () => number => {
  let at = -1
  setImmediate(() => {
    at = steps.n
  })
  return () => at
}

describe("fair scheduler", () => {
  it.live("busy fibers let an event-loop callback in once the quantum has passed", () =>
    Effect.gen(function*() {
      const steps = { n: 0 }
      // queued before the fibers start; each of their steps takes twice the quantum
      const ranAfter = stepsAtNextTurn(steps)
      const millis = 2 * FairScheduler.quantumMillis
      yield* Effect.withScheduler(
        Effect.all([busy(30, steps, millis), busy(30, steps, millis)], { concurrency: "unbounded", discard: true }),
        FairScheduler.make()
      )
      assert.strictEqual(steps.n, 60)
      assert.isAtLeast(ranAfter(), 0)
      // one drain (a step of each fiber) at most
      assert.isAtMost(ranAfter(), 2, `the callback waited for ${ranAfter()} steps`)
    }))

  it.live("cheap steps run on in microtasks within the quantum", () =>
    Effect.gen(function*() {
      const steps = { n: 0 }
      const ranAfter = stepsAtNextTurn(steps)
      // a long quantum: 200 cheap steps take far less
      const atEnd = yield* Effect.withScheduler(
        Effect.zipRight(busy(200, steps), Effect.sync(ranAfter)),
        FairScheduler.make(10_000)
      )
      assert.strictEqual(steps.n, 200)
      assert.strictEqual(atEnd, -1, "the event loop had no turn while the fiber ran")
    }))

  it.live("runs many fibers to completion, and interrupts them", () =>
    Effect.gen(function*() {
      const steps = { n: 0 }
      const sums = yield* Effect.withScheduler(
        Effect.forEach(
          Array.from({ length: 50 }, (_, i) => i),
          (i) => Effect.as(busy(20, steps), i * 2),
          { concurrency: "unbounded" }
        ),
        FairScheduler.make()
      )
      assert.deepStrictEqual(sums, Array.from({ length: 50 }, (_, i) => i * 2))
      assert.strictEqual(steps.n, 1000)

      const endless = { n: 0 }
      const fiber = yield* Effect.fork(Effect.withScheduler(Effect.forever(busy(1, endless)), FairScheduler.make()))
      const turns = (n: number) =>
        Effect.forEach(Array.from({ length: n }), () => Effect.promise(() => new Promise((resume) => setImmediate(resume))), {
          discard: true
        })
      while (endless.n < 100) yield* turns(1)
      yield* Fiber.interrupt(fiber)
      const stoppedAt = endless.n
      // the event loop goes round; the interrupted fiber takes no more steps
      yield* turns(20)
      assert.strictEqual(endless.n, stoppedAt)
    }))

  it.live("fairly: its own scheduler with the live clock", () =>
    Effect.gen(function*() {
      const outside = yield* FiberRef.get(FiberRef.currentScheduler)
      const inside = yield* FairScheduler.fairly(FiberRef.get(FiberRef.currentScheduler))
      assert.notStrictEqual(inside, outside)
    }))

  it.effect("fairly: the fiber's scheduler under a TestClock", () =>
    Effect.gen(function*() {
      const outside = yield* FiberRef.get(FiberRef.currentScheduler)
      const inside = yield* FairScheduler.fairly(FiberRef.get(FiberRef.currentScheduler))
      assert.strictEqual(inside, outside)
    }))
})

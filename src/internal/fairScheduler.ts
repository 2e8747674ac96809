/**
 * A scheduler that lets the event loop in.
 *
 * Effect's default scheduler runs fiber work in microtasks and yields to the
 * event loop only after a long chain of them; since each fiber has its own
 * chain, a pipeline of fibers handing work to each other can keep the event
 * loop out for hundreds of milliseconds. Socket reads then wait: a database
 * answer or an HTTP response sits unread while the pipeline chunks text, and
 * a request's timeout can fire although the answer had arrived long before.
 *
 * This scheduler keeps one queue for all the fibers it runs and drains it
 * in microtasks until {@link quantumMillis} have passed since the event
 * loop last had a turn; the next drain then goes through `setImmediate`,
 * after the event loop has polled for I/O. It reads `performance.now()`,
 * not the Effect `Clock`, so `TestClock` does not change it.
 *
 * Measured on the 53,454-chunk benchmark corpus (medians of five
 * alternating runs). Before, every 16th drain went through `setImmediate`,
 * however long the drains took: a write's statements then waited for the
 * pipeline's work — a BEGIN took 6.5 ms on average from its sending to its
 * answer being read (2.2–3.5 ms with the quantum) — and peak RSS on the
 * server was 192 MiB. With every drain through `setImmediate` it was
 * 184 MiB, but runs on the embedded database took 2,940 ms against
 * 2,770 ms: there is no socket to wait for, only the cost of the extra
 * turns. With the quantum: 184 MiB on the server and 2,740 ms embedded.
 *
 * @internal
 */
import type * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Scheduler from "effect/Scheduler"

/**
 * How long the queue is drained in microtasks before the event loop gets a
 * turn.
 *
 * @internal
 */
export const quantumMillis = 0.5

/**
 * A fair scheduler: see the module documentation.
 *
 * @internal
 */
export const make = (quantum: number = quantumMillis): Scheduler.Scheduler => {
  const tasks = new Scheduler.PriorityBuckets()
  let running = false
  /** when the event loop last had a turn (as far as this scheduler knows) */
  let turn = performance.now()

  const drain = (): void => {
    const buckets = tasks.buckets
    tasks.buckets = []
    for (const [, toRun] of buckets) {
      for (let i = 0; i < toRun.length; i++) toRun[i]!()
    }
    if (tasks.buckets.length === 0) running = false
    else next()
  }

  const afterTurn = (): void => {
    turn = performance.now()
    drain()
  }

  const next = (): void => {
    if (performance.now() - turn >= quantum) setImmediate(afterTurn)
    else queueMicrotask(drain)
  }

  return Scheduler.make((task, priority) => {
    tasks.scheduleTask(task, priority)
    if (!running) {
      running = true
      next()
    }
  })
}

/** A `TestClock` (its interface beyond `Clock`): simulated time. */
const isTestClock = (clock: Clock.Clock): boolean => "adjust" in clock && "sleeps" in clock

/**
 * Run `effect` on a fair scheduler of its own — unless the clock is a
 * `TestClock`. Simulated time has no I/O to let in, and `TestClock.adjust`
 * moves time once every fiber looks suspended: a fiber whose next step
 * waits here for the event loop's turn looks suspended too, so time would
 * move before it has taken that step (an `--rpm` test that advances time in
 * 5 s steps saw its second request 5 s late in 6 runs of 8).
 *
 * @internal
 */
export const fairly = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.clockWith((clock) => isTestClock(clock) ? effect : Effect.withScheduler(effect, make()))

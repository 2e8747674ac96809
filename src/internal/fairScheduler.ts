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
 * This scheduler keeps one queue for all the fibers it runs, and every
 * `drainsPerTurn`-th drain of it goes through `setImmediate`, after the
 * event loop has polled for I/O. It counts drains, not time, so it behaves
 * the same under `TestClock`.
 *
 * @internal
 */
import * as Scheduler from "effect/Scheduler"

/**
 * A fair scheduler: see the module documentation.
 *
 * @internal
 */
export const make = (drainsPerTurn = 16): Scheduler.Scheduler => {
  const tasks = new Scheduler.PriorityBuckets()
  let running = false
  let drains = 0

  const drain = (): void => {
    const buckets = tasks.buckets
    tasks.buckets = []
    for (const [, toRun] of buckets) {
      for (let i = 0; i < toRun.length; i++) toRun[i]!()
    }
    if (tasks.buckets.length === 0) running = false
    else next()
  }

  const next = (): void => {
    if (++drains % drainsPerTurn === 0) setImmediate(drain)
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

import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as fc from "effect/FastCheck"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Ref from "effect/Ref"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { type GroupOptions, groupWithin } from "../src/internal/groupWithin.js"

const sizes = (groups: Chunk.Chunk<Chunk.Chunk<unknown>>) => Chunk.toReadonlyArray(groups).map(Chunk.size)
const values = <A>(groups: Chunk.Chunk<Chunk.Chunk<A>>) => Chunk.toReadonlyArray(groups).map(Chunk.toReadonlyArray)

/** `items` cut into chunks of the given sizes (cycled), as a stream */
const chunked = (items: ReadonlyArray<number>, cuts: ReadonlyArray<number>) => {
  const chunks: Array<Chunk.Chunk<number>> = []
  let at = 0
  for (let i = 0; at < items.length; i++) {
    const n = cuts[i % cuts.length]!
    chunks.push(Chunk.unsafeFromArray(items.slice(at, at + n)))
    at += n
  }
  return Stream.fromChunks(...chunks)
}

/** `groupWithin` over `source` on a fiber of its own; each group goes to `out` as it is emitted */
const forkGroups = (source: Stream.Stream<number>, options: GroupOptions<number>) =>
  Effect.gen(function*() {
    const out = yield* Queue.unbounded<ReadonlyArray<number>>()
    const fiber = yield* groupWithin(options)(source).pipe(
      Stream.runForEach((group) => Queue.offer(out, Chunk.toReadonlyArray(group))),
      Effect.fork
    )
    return { out, fiber }
  })

/**
 * `groupWithin` over `source` into a consumer that is busy for `busy` per
 * group, the TestClock moved by `tick` until the stream ends: each group,
 * with the time it was handed over.
 */
const throughSlowConsumer = (
  source: Stream.Stream<number>,
  options: GroupOptions<number>,
  busy: Duration.DurationInput,
  tick: Duration.DurationInput
) =>
  Effect.gen(function*() {
    const received: Array<readonly [ReadonlyArray<number>, number]> = []
    const fiber = yield* groupWithin(options)(source).pipe(
      Stream.runForEach((group) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.zipRight(
            Effect.sync(() => void received.push([Chunk.toReadonlyArray(group), now])),
            Effect.sleep(busy)
          ))
      ),
      Effect.fork
    )
    for (let i = 0; i < 300 && Option.isNone(yield* Fiber.poll(fiber)); i++) yield* TestClock.adjust(tick)
    yield* Fiber.join(fiber)
    return received
  })

describe("groupWithin", () => {
  it.effect("a stream that never waits: full groups in order, the rest at the end — what Stream.grouped gives", () =>
    Effect.gen(function*() {
      const items = Array.from({ length: 1000 }, (_, i) => i)
      const groups = yield* Stream.runCollect(
        groupWithin<number>({ maxCost: 256, window: Duration.millis(200) })(chunked(items, [1024]))
      )
      assert.deepStrictEqual(sizes(groups), [256, 256, 256, 232])
      assert.deepStrictEqual(values(groups).flat(), items)
    }))

  it.effect.prop(
    "the same groups as Stream.grouped for any chunking of the input",
    [
      fc.array(fc.integer(), { maxLength: 300 }),
      fc.array(fc.integer({ min: 1, max: 70 }), { minLength: 1, maxLength: 8 }),
      fc.integer({ min: 1, max: 40 })
    ],
    ([items, cuts, size]) =>
      Effect.gen(function*() {
        const ours = yield* Stream.runCollect(
          groupWithin<number>({ maxCost: size, window: Duration.seconds(1) })(chunked(items, cuts))
        )
        const reference = yield* Stream.runCollect(Stream.grouped(Stream.fromIterable(items), size))
        assert.deepStrictEqual(values(ours), values(reference))
      })
  )

  it.effect("by cost: a group closes before the element that would overflow it; a costlier element goes alone", () =>
    Effect.gen(function*() {
      const groups = yield* Stream.runCollect(
        groupWithin<number>({ maxCost: 10, cost: (n) => n, window: Duration.millis(100) })(
          chunked([3, 3, 3, 3, 25, 4, 6, 1, 9], [2, 5, 2])
        )
      )
      assert.deepStrictEqual(values(groups), [[3, 3, 3], [3], [25], [4, 6], [1, 9]])
    }))

  it.effect("a partial group is emitted once its first element has waited the window, and the stream goes on", () =>
    Effect.gen(function*() {
      const more = yield* Deferred.make<void>()
      const source = Stream.concat(
        Stream.make(1, 2, 3),
        Stream.concat(Stream.fromEffect(Effect.as(Deferred.await(more), 4)), Stream.make(5))
      )
      const { fiber, out } = yield* forkGroups(source, { maxCost: 10, window: Duration.millis(200) })
      yield* TestClock.adjust(Duration.millis(199))
      assert.strictEqual(yield* Queue.size(out), 0)
      yield* TestClock.adjust(Duration.millis(1))
      assert.deepStrictEqual(yield* Queue.take(out), [1, 2, 3])
      // the pull left waiting is the next one's: nothing is lost or read twice
      yield* Deferred.succeed(more, undefined)
      yield* Fiber.join(fiber)
      assert.deepStrictEqual(yield* Queue.takeAll(out).pipe(Effect.map(Chunk.toReadonlyArray)), [[4, 5]])
    }))

  it.effect("the window counts from the group's first element, not from the last one", () =>
    Effect.gen(function*() {
      // one element every 80 ms: a window reset by each element would never close the group
      const source = Stream.repeatEffect(Effect.zipRight(Effect.sleep(Duration.millis(80)), Effect.succeed(1)))
      const { fiber, out } = yield* forkGroups(source, { maxCost: 100, window: Duration.millis(200) })
      // elements at 80, 160, 240, ...: the first group closes at 80 + 200
      yield* TestClock.adjust(Duration.millis(279))
      assert.strictEqual(yield* Queue.size(out), 0)
      yield* TestClock.adjust(Duration.millis(1))
      assert.deepStrictEqual(yield* Queue.take(out), [1, 1, 1])
      yield* Fiber.interrupt(fiber)
    }))

  it.effect("the source runs ahead of a slow consumer: the next chunk is pulled while a group is handled", () =>
    Effect.gen(function*() {
      // a document every 10 s, a consumer that takes 10 s per group
      const source = Stream.make(1, 2, 3).pipe(
        Stream.mapEffect((n) => Effect.as(n === 1 ? Effect.void : Effect.sleep(Duration.seconds(10)), n))
      )
      const received = yield* throughSlowConsumer(
        source,
        { maxCost: 1, window: Duration.millis(100) },
        Duration.seconds(10),
        Duration.seconds(10)
      )
      // pulled one at a time after each group, they would arrive at 0, 20 and 40 s
      assert.deepStrictEqual(received, [[[1], 0], [[2], 10_000], [[3], 20_000]])
    }))

  it.effect("a busy consumer gets full groups: what arrives while it works fills the open group, past the window", () =>
    Effect.gen(function*() {
      // an element every 10 ms; a consumer that takes 100 ms per group
      const source = Stream.iterate(1, (n) => n + 1).pipe(
        Stream.tap(() => Effect.sleep(Duration.millis(10))),
        Stream.take(45)
      )
      const received = yield* throughSlowConsumer(
        source,
        { maxCost: 10, window: Duration.millis(25) },
        Duration.millis(100),
        Duration.millis(10)
      )
      const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)
      assert.deepStrictEqual(received, [
        // the consumer is idle: the group goes when its first element (at 10 ms) has waited 25 ms
        [range(1, 3), 35],
        // elements 4–13 arrived while it worked: one full group, handed over as soon as it asks
        [range(4, 13), 135],
        [range(14, 23), 235],
        [range(24, 33), 335],
        [range(34, 43), 435],
        // the end of the stream closes the last partial group
        [range(44, 45), 535]
      ])
    }))

  it.effect("elements buffered when the stream fails are emitted before the failure", () =>
    Effect.gen(function*() {
      const seen: Array<ReadonlyArray<number>> = []
      const exit = yield* groupWithin<number>({ maxCost: 4, window: Duration.seconds(1) })(
        Stream.concat(chunked([1, 2, 3, 4, 5, 6], [6]), Stream.fail("read failed"))
      ).pipe(
        Stream.runForEach((group) => Effect.sync(() => void seen.push(Chunk.toReadonlyArray(group)))),
        Effect.exit
      )
      assert.deepStrictEqual(seen, [[1, 2, 3, 4], [5, 6]])
      assert.deepStrictEqual(exit, Exit.fail("read failed"))
    }))

  it.effect("an early end interrupts the pull left waiting, and the source's finalizers run", () =>
    Effect.gen(function*() {
      const released = yield* Ref.make(false)
      const source = Stream.concat(
        Stream.make(1, 2),
        Stream.acquireRelease(Effect.void, () => Ref.set(released, true)).pipe(Stream.flatMap(() => Stream.never))
      )
      const fiber = yield* groupWithin<number>({ maxCost: 10, window: Duration.millis(50) })(source).pipe(
        Stream.take(1),
        Stream.runCollect,
        Effect.fork
      )
      yield* TestClock.adjust(Duration.millis(50))
      const taken = yield* Fiber.join(fiber)
      assert.deepStrictEqual(values(taken), [[1, 2]])
      assert.isTrue(yield* Ref.get(released))
    }))
})

import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as fc from "effect/FastCheck"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import type { YieldWrap } from "effect/Utils"
import * as Resource from "../src/Resource.js"
import {
  BreakInfo,
  breakInfoJson,
  breakOnErrorRate,
  isBreakInfo,
  type RateOptions
} from "../src/internal/streamBreaker.js"

type Item = Either.Either<number, string>
type Out = Either.Either<number, string | BreakInfo<string>>

// ---------------------------------------------------------------------------
// Reference: the trip point, recomputed naively from the definition.
// ---------------------------------------------------------------------------

interface Expected {
  readonly tripIndex: number
  readonly ok: number
  readonly errors: number
  readonly total: number
  readonly lastError: string | undefined
}

const reference = (items: ReadonlyArray<Item>, options: RateOptions): Expected | undefined => {
  const minSamples = options.minSamples ?? 1
  for (let i = 0; i < items.length; i++) {
    const seen = i + 1
    const from = options.window === undefined ? 0 : Math.max(0, seen - options.window)
    const considered = items.slice(from, seen)
    const errors = considered.filter(Either.isLeft).length
    const total = considered.length
    if (seen >= minSamples && errors / total > options.maxRate) {
      let lastError: string | undefined
      for (const item of items.slice(0, seen)) if (Either.isLeft(item)) lastError = item.left
      return { tripIndex: i, ok: total - errors, errors, total, lastError }
    }
  }
  return undefined
}

/** what the breaker must emit: the items up to the trip, then a break marker */
const expectedShape = (items: ReadonlyArray<Item>, expected: Expected | undefined): ReadonlyArray<Item | "break"> =>
  expected === undefined ? items : [...items.slice(0, expected.tripIndex + 1), "break"]

const shape = (out: ReadonlyArray<Out>): ReadonlyArray<Item | "break"> =>
  out.map((o) => (Either.isLeft(o) && isBreakInfo(o.left) ? "break" : (o as Item)))

const assertBreakInfo = (info: BreakInfo<string>, expected: Expected, options: RateOptions) => {
  assert.strictEqual(info.code, "error-rate")
  assert.strictEqual(info.ok, expected.ok)
  assert.strictEqual(info.errors, expected.errors)
  assert.strictEqual(info.total, expected.total)
  assert.strictEqual(info.threshold, options.maxRate)
  assert.strictEqual(info.lastError, expected.lastError)
  assert.strictEqual(info.mode, options.window === undefined ? "cumulative" : "window")
  assert.strictEqual(info.window, options.window)
  assert.isTrue(info.errors / info.total > info.threshold)
}

const lastBreak = (out: ReadonlyArray<Out>): BreakInfo<string> | undefined => {
  const last = out[out.length - 1]
  return last !== undefined && Either.isLeft(last) && isBreakInfo(last.left) ? last.left : undefined
}

// ---------------------------------------------------------------------------
// Harness: upstreams that produce one element per pull and record events.
// ---------------------------------------------------------------------------

interface Probe {
  readonly log: Array<string>
  /** elements the upstream produced */
  produced: number
  opened: number
  closed: number
}

const makeProbe = (): Probe => ({ log: [], produced: 0, opened: 0, closed: 0 })

type Ending = "end" | "fail"
type Wrapper = "ensuring" | "acquireRelease" | "managedStream"

/** one element per pull, then the end (or a failure with "boom") */
const elements = (items: ReadonlyArray<Item>, probe: Probe, ending: Ending): Stream.Stream<Item, string> =>
  Stream.repeatEffectOption(
    Effect.suspend(() => {
      if (probe.produced >= items.length) {
        return Effect.fail(ending === "end" ? Option.none() : Option.some("boom"))
      }
      const index = probe.produced++
      probe.log.push(`produce ${index}`)
      return Effect.succeed(items[index])
    })
  )

const open = (probe: Probe) =>
  Effect.sync(() => {
    probe.opened++
    probe.log.push("upstream opened")
  })

const close = (probe: Probe) =>
  Effect.sync(() => {
    probe.closed++
    probe.log.push("upstream closed")
  })

/** the same elements, holding a resource released in one of three ways */
const upstream = (
  items: ReadonlyArray<Item>,
  probe: Probe,
  ending: Ending,
  wrapper: Wrapper
): Stream.Stream<Item, string> => {
  switch (wrapper) {
    case "ensuring":
      return Stream.ensuring(elements(items, probe, ending), close(probe))
    case "acquireRelease":
      return Stream.flatMap(Stream.acquireRelease(open(probe), () => close(probe)), () => elements(items, probe, ending))
    case "managedStream":
      return Resource.managedStream(open(probe), () => elements(items, probe, ending), () => close(probe))
  }
}

/**
 * Pull a stream by hand, logging each element as the consumer receives it
 * ("see <i>", or "break" for the BreakInfo) and the moment it observes the
 * end ("end") or the failure ("fail <e>").
 */
const consume = (stream: Stream.Stream<Out, string>, probe: Probe) =>
  Effect.scoped(
    Effect.gen(function*() {
      const pull = yield* Stream.toPull(stream)
      const out: Array<Out> = []
      while (true) {
        const next = yield* Effect.either(pull)
        if (Either.isLeft(next)) {
          if (Option.isNone(next.left)) {
            probe.log.push("end")
            return Exit.succeed(out)
          }
          probe.log.push(`fail ${next.left.value}`)
          return Exit.fail({ out, error: next.left.value })
        }
        for (const o of next.right) {
          probe.log.push(Either.isLeft(o) && isBreakInfo(o.left) ? "break" : `see ${out.length}`)
          out.push(o)
        }
      }
    })
  )

// ---------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------

const itemArb: fc.Arbitrary<Item> = fc.oneof(
  fc.integer({ min: -1000, max: 1000 }).map((n): Item => Either.right(n)),
  fc.string({ maxLength: 3 }).map((s): Item => Either.left(s))
)

const itemsArb = fc.array(itemArb, { maxLength: 60 })

const optionsArb: fc.Arbitrary<RateOptions> = fc
  .record({
    maxRate: fc.oneof(
      fc.constantFrom(0, 0.1, 0.2, 0.25, 1 / 3, 0.5, 2 / 3, 1),
      fc.double({ min: 0, max: 1, noNaN: true })
    ),
    minSamples: fc.integer({ min: 1, max: 10 }),
    window: fc.option(fc.integer({ min: 1, max: 20 }), { nil: undefined })
  })
  .map(({ maxRate, minSamples, window }): RateOptions =>
    window === undefined ? { maxRate, minSamples } : { maxRate, minSamples, window }
  )

const wrapperArb = fc.constantFrom<Wrapper>("ensuring", "acquireRelease", "managedStream")

// ---------------------------------------------------------------------------
// Properties (the streams involved are synchronous, so each case runs with
// Effect.runSync: a test runtime per case would dominate the run time)
// ---------------------------------------------------------------------------

const runSync = <E>(body: () => Generator<YieldWrap<Effect.Effect<unknown, E>>, void>): void =>
  Effect.runSync(Effect.gen(body))

describe("breakOnErrorRate (properties)", () => {
  it.prop(
    "emits the prefix through the trip point and one BreakInfo, releasing the upstream first and pulling nothing more",
    { items: itemsArb, options: optionsArb, wrapper: wrapperArb, ending: fc.constantFrom<Ending>("end", "fail") },
    ({ ending, items, options, wrapper }) =>
      runSync(function*() {
        const probe = makeProbe()
        const expected = reference(items, options)
        const result = yield* consume(breakOnErrorRate(upstream(items, probe, ending, wrapper), options), probe)
        const stopAt = expected === undefined ? items.length : expected.tripIndex + 1

        // nothing was produced after the tripping element
        assert.strictEqual(probe.produced, stopAt)
        // the resource was released exactly once (acquired once where it is acquired)
        assert.strictEqual(probe.closed, 1)
        assert.strictEqual(probe.opened, wrapper === "ensuring" ? 0 : 1)

        const out = Exit.isSuccess(result) ? result.value : result.cause.pipe(Cause.failureOption, Option.getOrThrow).out
        assert.deepStrictEqual(shape(out), expectedShape(items, expected))
        if (expected !== undefined) {
          const info = lastBreak(out)
          assert.isDefined(info)
          assertBreakInfo(info!, expected, options)
          // a trip wins over a later upstream failure, which is never reached
          assert.isTrue(Exit.isSuccess(result))
        } else if (ending === "fail") {
          assert.isTrue(Exit.isFailure(result))
        } else {
          assert.isTrue(Exit.isSuccess(result))
        }

        // event order: each element is produced then seen; the upstream is
        // closed before the BreakInfo and before the end (or failure) is seen
        const expectedLog = [
          ...(wrapper === "ensuring" ? [] : ["upstream opened"]),
          ...Array.from({ length: stopAt }, (_, i) => [`produce ${i}`, `see ${i}`]).flat(),
          "upstream closed",
          ...(expected !== undefined ? ["break", "end"] : ending === "end" ? ["end"] : ["fail boom"])
        ]
        assert.deepStrictEqual(probe.log, expectedLog)
      }),
    { fastCheck: { numRuns: 300 } }
  )

  it.prop(
    "stops in the middle of a multi-element chunk and pulls no further chunk",
    { items: itemsArb, options: optionsArb, chunkSize: fc.integer({ min: 1, max: 8 }) },
    ({ chunkSize, items, options }) =>
      runSync(function*() {
        let chunksPulled = 0
        let closed = 0
        let offset = 0
        const chunked = Stream.ensuring(
          Stream.repeatEffectChunkOption(
            Effect.suspend(() => {
              if (offset >= items.length) return Effect.fail(Option.none())
              chunksPulled++
              const chunk = Chunk.unsafeFromArray(items.slice(offset, offset + chunkSize))
              offset += chunkSize
              return Effect.succeed(chunk)
            })
          ),
          Effect.sync(() => {
            closed++
          })
        )
        const expected = reference(items, options)
        const chunks = yield* Stream.runCollect(Stream.chunks(breakOnErrorRate(chunked, options)))
        const out = Chunk.toReadonlyArray(Chunk.flatten(chunks))
        assert.deepStrictEqual(shape(out), expectedShape(items, expected))
        assert.strictEqual(closed, 1)
        assert.strictEqual(
          chunksPulled,
          expected === undefined ? Math.ceil(items.length / chunkSize) : Math.floor(expected.tripIndex / chunkSize) + 1
        )
        if (expected !== undefined) {
          assertBreakInfo(lastBreak(out)!, expected, options)
          // the BreakInfo comes alone, in a chunk of its own
          assert.strictEqual(Chunk.size(Chunk.unsafeLast(chunks)), 1)
        }
      }),
    { fastCheck: { numRuns: 300 } }
  )

  it.prop(
    "a consumer that stops early (Stream.take) releases the upstream once and pulls only what it took",
    { items: itemsArb, options: optionsArb, take: fc.integer({ min: 1, max: 64 }), wrapper: wrapperArb },
    ({ items, options, take, wrapper }) =>
      runSync(function*() {
        const probe = makeProbe()
        const expected = reference(items, options)
        const full = expectedShape(items, expected)
        const out = yield* Stream.runCollect(
          Stream.take(breakOnErrorRate(upstream(items, probe, "end", wrapper), options), take)
        )
        assert.deepStrictEqual(shape(Chunk.toReadonlyArray(out)), full.slice(0, take))
        const stopAt = expected === undefined ? items.length : expected.tripIndex + 1
        assert.strictEqual(probe.produced, Math.min(take, stopAt))
        assert.strictEqual(probe.closed, 1)
        assert.strictEqual(probe.opened, wrapper === "ensuring" ? 0 : 1)
      }),
    { fastCheck: { numRuns: 300 } }
  )

  it.prop(
    "data-first and data-last forms agree",
    { items: itemsArb, options: optionsArb },
    ({ items, options }) => {
      const source = Stream.fromIterable(items)
      const a = Effect.runSync(Stream.runCollect(breakOnErrorRate(source, options)))
      const b = Effect.runSync(Stream.runCollect(source.pipe(breakOnErrorRate(options))))
      assert.deepStrictEqual(shape(Chunk.toReadonlyArray(a)), shape(Chunk.toReadonlyArray(b)))
    },
    { fastCheck: { numRuns: 50 } }
  )
})

// ---------------------------------------------------------------------------
// Examples
// ---------------------------------------------------------------------------

const ok = (n: number): Item => Either.right(n)
const bad = (n: number): Item => Either.left(`bad ${n}`)

const collect = (items: ReadonlyArray<Item>, options: RateOptions) =>
  Effect.map(
    Stream.runCollect(breakOnErrorRate(Stream.fromIterable(items), options)),
    (out) => Chunk.toReadonlyArray(out)
  )

describe("breakOnErrorRate (examples)", () => {
  it.effect("the seed's scenario: max rate 0.2 over a stream that turns 50% bad trips at item 33", () =>
    Effect.gen(function*() {
      // 20 good items, then alternately bad and good
      const items = Array.from({ length: 200 }, (_, i) => (i < 20 || i % 2 === 1 ? ok(i) : bad(i)))
      const probe = makeProbe()
      const result = yield* consume(breakOnErrorRate(upstream(items, probe, "end", "ensuring"), { maxRate: 0.2 }), probe)
      assert.isTrue(Exit.isSuccess(result))
      const out = Exit.isSuccess(result) ? result.value : []
      // 6/31 = 0.19 and 6/32 = 0.19 pass; 7/33 = 0.21 trips
      assert.strictEqual(out.length, 34)
      assert.deepStrictEqual(out.slice(0, 33), items.slice(0, 33))
      assert.strictEqual(probe.produced, 33)
      const info = lastBreak(out)!
      assert.deepStrictEqual(breakInfoJson(info), {
        code: "error-rate",
        reason: "error rate 0.21 exceeded 0.20 after 7 of 33 items failed",
        ok: 26,
        errors: 7,
        total: 33,
        threshold: 0.2
      })
      assert.strictEqual(info.lastError, "bad 32")
      assert.strictEqual(info.mode, "cumulative")
      assert.isFalse("window" in info)
      assert.deepStrictEqual(probe.log.slice(-4), ["see 32", "upstream closed", "break", "end"])
    }))

  it.effect("the rate must be strictly greater than maxRate", () =>
    Effect.gen(function*() {
      // 1 of 2 = 0.5 does not exceed 0.5; 2 of 3 does
      const out = yield* collect([bad(0), ok(1), bad(2), ok(3)], { maxRate: 0.5, minSamples: 2 })
      assert.deepStrictEqual(shape(out), [bad(0), ok(1), bad(2), "break"])
      assert.strictEqual(lastBreak(out)!.reason, "error rate 0.67 exceeded 0.50 after 2 of 3 items failed")
      // maxRate 1 never trips, maxRate 0 trips on the first error
      const all = [bad(0), bad(1)]
      assert.deepStrictEqual(shape(yield* collect(all, { maxRate: 1 })), all)
      assert.deepStrictEqual(shape(yield* collect([ok(0), bad(1), ok(2)], { maxRate: 0 })), [ok(0), bad(1), "break"])
    }))

  it.effect("minSamples holds the breaker until enough items were seen", () =>
    Effect.gen(function*() {
      const items = [bad(0), bad(1), ok(2), ok(3), ok(4)]
      assert.deepStrictEqual(shape(yield* collect(items, { maxRate: 0.3 })), [bad(0), "break"])
      // after 4 items: 2 of 4 = 0.5 > 0.3
      assert.deepStrictEqual(shape(yield* collect(items, { maxRate: 0.3, minSamples: 4 })), [...items.slice(0, 4), "break"])
      // after 5 items: 2 of 5 = 0.4 > 0.3, reported on the item that reached minSamples
      const info = lastBreak(yield* collect(items, { maxRate: 0.3, minSamples: 5 }))!
      assert.deepStrictEqual([info.ok, info.errors, info.total, info.lastError], [3, 2, 5, "bad 1"])
    }))

  it.effect("window mode forgets old errors", () =>
    Effect.gen(function*() {
      // 3 early errors, 8 good items, then one more error
      const items = [bad(0), bad(1), bad(2), ...Array.from({ length: 8 }, (_, i) => ok(3 + i)), bad(11), ok(12)]
      const options = { maxRate: 0.3, minSamples: 10 }
      // cumulative: 3/10 and 3/11 pass, 4/12 = 0.33 trips on the late error
      assert.deepStrictEqual(shape(yield* collect(items, options)), [...items.slice(0, 12), "break"])
      // window of 5: the early errors are out of the window, 1/5 = 0.2 passes
      assert.deepStrictEqual(shape(yield* collect(items, { ...options, window: 5 })), items)
    }))

  it.effect("window mode catches a recent burst the cumulative rate hides", () =>
    Effect.gen(function*() {
      const items = [...Array.from({ length: 100 }, (_, i) => ok(i)), bad(100), bad(101), bad(102), ok(103)]
      assert.deepStrictEqual(shape(yield* collect(items, { maxRate: 0.3 })), items)
      const out = yield* collect(items, { maxRate: 0.3, window: 5 })
      // 2/5 = 0.4 > 0.3 on the second error
      assert.deepStrictEqual(shape(out), [...items.slice(0, 102), "break"])
      const info = lastBreak(out)!
      assert.deepStrictEqual([info.ok, info.errors, info.total, info.window, info.mode], [3, 2, 5, 5, "window"])
      assert.strictEqual(info.reason, "error rate 0.40 exceeded 0.30 with 2 of the last 5 items failed (102 items seen)")
    }))

  it.effect("an upstream failure propagates unchanged, with no BreakInfo, after releasing the upstream", () =>
    Effect.gen(function*() {
      const probe = makeProbe()
      const items = [ok(0), bad(1), ok(2)]
      const exit = yield* Effect.exit(
        Stream.runCollect(breakOnErrorRate(upstream(items, probe, "fail", "acquireRelease"), { maxRate: 0.5 }))
      )
      assert.isTrue(Exit.isFailure(exit))
      assert.strictEqual(Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined, "boom")
      assert.strictEqual(probe.closed, 1)

      // a defect is not turned into a failure either
      const died = yield* Effect.exit(
        Stream.runCollect(breakOnErrorRate(Stream.concat(Stream.make(ok(0)), Stream.die("defect")), { maxRate: 0.5 }))
      )
      assert.isTrue(Exit.isFailure(died) && Cause.isDie(died.cause))
    }))

  it.effect("a trip in the middle of a later chunk keeps every element when the output is collected", () =>
    Effect.gen(function*() {
      // the cut chunk is a copy: a Chunk.take slice can be dropped by a later
      // concatenation in effect 3.22 (Effect-TS/effect#7616)
      const chunks = Stream.fromChunks(Chunk.make(ok(0), ok(1), ok(2)), Chunk.make(bad(3), ok(4)))
      const out = yield* Stream.runCollect(breakOnErrorRate(chunks, { maxRate: 0, minSamples: 4 }))
      assert.deepStrictEqual(shape(Chunk.toReadonlyArray(out)), [ok(0), ok(1), ok(2), bad(3), "break"])
    }))

  it.effect("an upstream that ends without tripping is passed through with nothing added", () =>
    Effect.gen(function*() {
      const items = [ok(0), bad(1), ok(2), ok(3)]
      assert.deepStrictEqual(yield* collect(items, { maxRate: 0.5 }), items)
      assert.deepStrictEqual(yield* collect([], { maxRate: 0 }), [])
    }))

  it.effect("interrupting the consumer mid-stream releases the upstream once", () =>
    Effect.gen(function*() {
      const probe = makeProbe()
      const reached = yield* Deferred.make<void>()
      const hanging = Stream.concat(
        elements([ok(0), ok(1), bad(2)], probe, "end"),
        Stream.fromEffect(Effect.zipRight(Deferred.succeed(reached, undefined), Effect.never))
      )
      const source = Resource.managedStream(open(probe), () => hanging, () => close(probe))
      const fiber = yield* Effect.fork(Stream.runDrain(breakOnErrorRate(source, { maxRate: 0.5 })))
      yield* Deferred.await(reached)
      assert.strictEqual(probe.closed, 0)
      yield* Fiber.interrupt(fiber)
      assert.strictEqual(probe.opened, 1)
      assert.strictEqual(probe.closed, 1)
    }))

  it.effect("the upstream is not run before the stream is", () =>
    Effect.gen(function*() {
      const probe = makeProbe()
      const stream = breakOnErrorRate(upstream([bad(0)], probe, "end", "acquireRelease"), { maxRate: 0 })
      assert.deepStrictEqual(probe.log, [])
      yield* Stream.runDrain(stream)
      assert.deepStrictEqual(probe.log, ["upstream opened", "produce 0", "upstream closed"])
      // each run acquires and releases its own resource
      yield* Stream.runDrain(stream)
      assert.strictEqual(probe.opened, 2)
      assert.strictEqual(probe.closed, 2)
    }))

  it("breakInfoJson has exactly the keys code, reason, ok, errors, total, threshold", () => {
    const info = new BreakInfo<Error>({
      code: "error-rate",
      reason: "error rate 0.60 exceeded 0.20 with 3 of the last 5 items failed (9 items seen)",
      lastError: new Error("not serialisable"),
      ok: 2,
      errors: 3,
      total: 5,
      threshold: 0.2,
      mode: "window",
      window: 5
    })
    const json = breakInfoJson(info)
    assert.deepStrictEqual(Object.keys(json).sort(), ["code", "errors", "ok", "reason", "threshold", "total"])
    assert.deepStrictEqual(JSON.parse(JSON.stringify({ breaker: json })), {
      breaker: { code: "error-rate", reason: info.reason, ok: 2, errors: 3, total: 5, threshold: 0.2 }
    })
    assert.isTrue(isBreakInfo(info))
    assert.isFalse(isBreakInfo({ _tag: "BreakInfo" }))
    assert.strictEqual(info._tag, "BreakInfo")
  })

  it("rejects invalid options", () => {
    const source = Stream.make(ok(0))
    for (
      const options of [
        { maxRate: -0.1 },
        { maxRate: 1.5 },
        { maxRate: Number.NaN },
        { maxRate: 0.2, minSamples: 0 },
        { maxRate: 0.2, minSamples: 1.5 },
        { maxRate: 0.2, window: 0 },
        { maxRate: 0.2, window: Number.POSITIVE_INFINITY }
      ]
    ) {
      assert.throws(() => breakOnErrorRate(source, options), RangeError)
      assert.throws(() => source.pipe(breakOnErrorRate(options)), RangeError)
    }
  })
})

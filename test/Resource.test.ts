import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as fc from "effect/FastCheck"
import * as Fiber from "effect/Fiber"
import * as Ref from "effect/Ref"
import * as Stream from "effect/Stream"
import { Readable } from "node:stream"
import * as Resource from "../src/Resource.js"
import * as ResourceLedger from "../src/ResourceLedger.js"

// ---------------------------------------------------------------------------
// Harness: one "subject" per stream helper, each producing a stream of the
// given items whose resource bumps `acquired` / `released` counters.
// ---------------------------------------------------------------------------

interface Counters {
  acquired: number
  released: number
}

type Behaviour =
  /** emit every item, then end */
  | { readonly _tag: "complete" }
  /** emit the first `at` items, then fail with "producer" */
  | { readonly _tag: "fail"; readonly at: number }
  /** emit the first `at` items, signal `reached`, then block until released */
  | { readonly _tag: "hang"; readonly at: number; readonly reached: Deferred.Deferred<void> }

interface Subject {
  readonly name: string
  /** the resource is acquired when the stream is built (it wraps an open resource) */
  readonly eager: boolean
  /** the items emitted before a producer failure are exactly the prefix (no read-ahead loss) */
  readonly exactPrefix: boolean
  readonly make: <A>(items: ReadonlyArray<A>, behaviour: Behaviour, counters: Counters) => Stream.Stream<A, string>
}

const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error))

/** a pure Effect source following `behaviour` */
const pureSource = <A>(items: ReadonlyArray<A>, behaviour: Behaviour): Stream.Stream<A, string> => {
  switch (behaviour._tag) {
    case "complete":
      return Stream.fromIterable(items)
    case "fail":
      return Stream.concat(Stream.fromIterable(items.slice(0, behaviour.at)), Stream.fail("producer"))
    case "hang":
      return Stream.concat(
        Stream.fromIterable(items.slice(0, behaviour.at)),
        Stream.fromEffect(Effect.zipRight(Deferred.succeed(behaviour.reached, undefined), Effect.never))
      )
  }
}

const withResourceStreamSubject: Subject = {
  name: "withResourceStream",
  eager: true,
  exactPrefix: true,
  make: (items, behaviour, counters) => {
    counters.acquired++ // the resource already exists when the stream is wrapped
    return Resource.withResourceStream(
      pureSource(items, behaviour),
      Effect.sync(() => void counters.released++)
    )
  }
}

const managedStreamSubject: Subject = {
  name: "managedStream",
  eager: false,
  exactPrefix: true,
  make: (items, behaviour, counters) =>
    Resource.managedStream(
      Effect.sync(() => ++counters.acquired),
      () => pureSource(items, behaviour),
      () => Effect.sync(() => void counters.released++)
    )
}

const fromReadableSubject: Subject = {
  name: "fromReadable",
  eager: false,
  exactPrefix: false,
  make: <A>(items: ReadonlyArray<A>, behaviour: Behaviour, counters: Counters) =>
    Resource.fromReadable<string, A>(
      () => {
        counters.acquired++
        let i = 0
        return new Readable({
          objectMode: true,
          read() {
            if (behaviour._tag === "fail" && i === behaviour.at) {
              this.destroy(new Error("producer"))
            } else if (behaviour._tag === "hang" && i === behaviour.at) {
              Deferred.unsafeDone(behaviour.reached, Exit.void) // and never push again
            } else if (i >= items.length) {
              this.push(null)
            } else {
              this.push(items[i++])
            }
          },
          destroy(error, callback) {
            counters.released++
            callback(error)
          }
        })
      },
      messageOf
    )
}

/** resolves never, rejects when `signal` aborts */
const untilAborted = (signal: AbortSignal): Promise<never> =>
  new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason)
    else signal.addEventListener("abort", () => reject(signal.reason), { once: true })
  })

const fromAsyncIterableSubject: Subject = {
  name: "fromAsyncIterable",
  eager: false,
  exactPrefix: true,
  make: <A>(items: ReadonlyArray<A>, behaviour: Behaviour, counters: Counters) =>
    Resource.fromAsyncIterable<A, string>(async function*(signal) {
      counters.acquired++
      try {
        for (let i = 0;; i++) {
          if (behaviour._tag === "fail" && i === behaviour.at) throw new Error("producer")
          if (behaviour._tag === "hang" && i === behaviour.at) {
            Deferred.unsafeDone(behaviour.reached, Exit.void)
            await untilAborted(signal)
          }
          if (i >= items.length) return
          yield items[i]!
        }
      } finally {
        counters.released++
      }
    }, messageOf)
}

const subjects: ReadonlyArray<Subject> = [
  withResourceStreamSubject,
  managedStreamSubject,
  fromReadableSubject,
  fromAsyncIterableSubject
]

const newCounters = (): Counters => ({ acquired: 0, released: 0 })

const isPrefixOf = <A>(prefix: ReadonlyArray<A>, of: ReadonlyArray<A>): boolean =>
  prefix.length <= of.length && prefix.every((a, i) => a === of[i])

const items = fc.array(fc.integer({ min: -1000, max: 1000 }), { maxLength: 16 })
const nonEmptyItems = fc.array(fc.integer({ min: -1000, max: 1000 }), { minLength: 1, maxLength: 16 })
const position = fc.nat(40)

/** every law runs 60 times */
const runs = { fastCheck: { numRuns: 60 } }

/** run `stream`, appending every element it emits to `seen` */
const drain = <A, E>(stream: Stream.Stream<A, E>, seen: Array<A>) =>
  Stream.runForEach(stream, (a) => Effect.sync(() => void seen.push(a)))

// ---------------------------------------------------------------------------
// The laws, for every helper that wraps a stream
// ---------------------------------------------------------------------------

for (const subject of subjects) {
  describe(`${subject.name} laws`, () => {
    it.effect.prop("equivalence and cleanup on normal end", { items }, ({ items }) =>
      Effect.gen(function*() {
        const counters = newCounters()
        const out = yield* Stream.runCollect(subject.make(items, { _tag: "complete" }, counters))
        assert.deepStrictEqual(Chunk.toReadonlyArray(out), items)
        assert.deepStrictEqual(counters, { acquired: 1, released: 1 })
      }), runs)

    it.effect.prop("cleanup on consumer failure (mapEffect fails at k)", { items: nonEmptyItems, k: position }, (
      { items, k }
    ) =>
      Effect.gen(function*() {
        const at = k % items.length
        const counters = newCounters()
        const seen: Array<number> = []
        const result = yield* subject.make(items, { _tag: "complete" }, counters).pipe(
          Stream.zipWithIndex,
          Stream.mapEffect(([x, i]) => (i === at ? Effect.fail("consumer" as const) : Effect.succeed(x))),
          (s) => drain(s, seen),
          Effect.either
        )
        assert.deepStrictEqual(result, Either.left("consumer"))
        assert.deepStrictEqual(seen, items.slice(0, at))
        assert.deepStrictEqual(counters, { acquired: 1, released: 1 })
      }), runs)

    it.effect.prop("cleanup on consumer failure (runForEach fails at k)", { items: nonEmptyItems, k: position }, (
      { items, k }
    ) =>
      Effect.gen(function*() {
        const at = k % items.length
        const counters = newCounters()
        let index = 0
        const result = yield* Stream.runForEach(
          subject.make(items, { _tag: "complete" }, counters),
          () => (index++ === at ? Effect.fail("consumer" as const) : Effect.void)
        ).pipe(Effect.either)
        assert.deepStrictEqual(result, Either.left("consumer"))
        assert.strictEqual(index, at + 1)
        assert.deepStrictEqual(counters, { acquired: 1, released: 1 })
      }), runs)

    it.effect.prop("cleanup on producer failure at k", { items, k: position }, ({ items, k }) =>
      Effect.gen(function*() {
        const at = k % (items.length + 1)
        const counters = newCounters()
        const seen: Array<number> = []
        const result = yield* drain(subject.make(items, { _tag: "fail", at }, counters), seen).pipe(Effect.either)
        assert.deepStrictEqual(result, Either.left("producer"))
        if (subject.exactPrefix) assert.deepStrictEqual(seen, items.slice(0, at))
        else assert.isTrue(isPrefixOf(seen, items.slice(0, at)))
        assert.deepStrictEqual(counters, { acquired: 1, released: 1 })
      }), runs)

    it.effect.prop("cleanup on early termination (take k)", { items, k: position }, ({ items, k }) =>
      Effect.gen(function*() {
        const n = 1 + (k % (items.length + 2)) // 1 .. length + 2
        const counters = newCounters()
        const out = yield* Stream.runCollect(Stream.take(subject.make(items, { _tag: "complete" }, counters), n))
        assert.deepStrictEqual(Chunk.toReadonlyArray(out), items.slice(0, n))
        assert.deepStrictEqual(counters, { acquired: 1, released: 1 })
      }), runs)

    it.effect.prop(
      "cleanup on break: short-circuit at the first Left",
      { items: fc.array(fc.integer({ min: -3, max: 3 }), { maxLength: 16 }) },
      ({ items }) =>
        Effect.gen(function*() {
          const results = items.map((x) => (x === 0 ? Either.left("ZERO") : Either.right(x)))
          const counters = newCounters()
          const out = yield* subject.make(results, { _tag: "complete" }, counters).pipe(
            Stream.takeWhile(Either.isRight),
            Stream.map(Either.getOrThrow),
            Stream.runCollect
          )
          const firstZero = items.indexOf(0)
          assert.deepStrictEqual(Chunk.toReadonlyArray(out), firstZero < 0 ? items : items.slice(0, firstZero))
          assert.deepStrictEqual(counters, { acquired: 1, released: 1 })
        }),
      runs
    )

    it.effect.prop("cleanup on interruption while the producer is blocked", { items, k: position }, ({ items, k }) =>
      Effect.gen(function*() {
        const at = k % (items.length + 1)
        const reached = yield* Deferred.make<void>()
        const counters = newCounters()
        const seen: Array<number> = []
        const fiber = yield* Effect.fork(drain(subject.make(items, { _tag: "hang", at, reached }, counters), seen))
        yield* Deferred.await(reached)
        const exit = yield* Fiber.interrupt(fiber)
        assert.isTrue(Exit.isInterrupted(exit))
        assert.isTrue(isPrefixOf(seen, items.slice(0, at)))
        assert.deepStrictEqual(counters, { acquired: 1, released: 1 })
      }), runs)

    it.effect.prop("cleanup on interruption while the consumer is blocked", { items: nonEmptyItems, k: position }, (
      { items, k }
    ) =>
      Effect.gen(function*() {
        const at = k % items.length
        const reached = yield* Deferred.make<void>()
        const counters = newCounters()
        let index = 0
        const fiber = yield* Effect.fork(
          Stream.runForEach(
            subject.make(items, { _tag: "complete" }, counters),
            () => (index++ === at ? Effect.zipRight(Deferred.succeed(reached, undefined), Effect.never) : Effect.void)
          )
        )
        yield* Deferred.await(reached)
        const exit = yield* Fiber.interrupt(fiber)
        assert.isTrue(Exit.isInterrupted(exit))
        assert.strictEqual(index, at + 1)
        assert.deepStrictEqual(counters, { acquired: 1, released: 1 })
      }), runs)

    it.effect.prop("lazy entry: building the stream or its run effect acquires nothing", { items }, ({ items }) =>
      Effect.gen(function*() {
        const counters = newCounters()
        const stream = subject.make(items, { _tag: "complete" }, counters)
        const run = Stream.runCollect(Stream.map(stream, (x) => x + 1))
        assert.deepStrictEqual(counters, { acquired: subject.eager ? 1 : 0, released: 0 })
        const out = yield* run
        assert.deepStrictEqual(Chunk.toReadonlyArray(out), items.map((x) => x + 1))
        assert.deepStrictEqual(counters, { acquired: 1, released: 1 })
      }), runs)
  })
}

// ---------------------------------------------------------------------------
// Every helper nested inside a managed stream is released before it
// ---------------------------------------------------------------------------

describe("nested inside managedStream", () => {
  for (const subject of subjects) {
    it.effect.prop(`${subject.name} is released before the outer resource`, {
      items,
      k: position,
      ending: fc.constantFrom("complete", "producer-fail", "take", "consumer-fail")
    }, ({ ending, items, k }) =>
      Effect.gen(function*() {
        const inner = newCounters()
        const innerReleasedWhenOuterReleased: Array<number> = []
        const at = k % (items.length + 1)
        const stream = Resource.managedStream(
          Effect.void,
          () => subject.make(items, ending === "producer-fail" ? { _tag: "fail", at } : { _tag: "complete" }, inner),
          () => Effect.sync(() => void innerReleasedWhenOuterReleased.push(inner.released))
        )
        yield* Effect.exit(
          ending === "take"
            ? Stream.runDrain(Stream.take(stream, 1))
            : ending === "consumer-fail"
            ? Stream.runForEach(stream, () => Effect.fail("consumer"))
            : Stream.runDrain(stream)
        )
        assert.deepStrictEqual(innerReleasedWhenOuterReleased, [1])
        assert.deepStrictEqual(inner, { acquired: 1, released: 1 })
      }), runs)
  }
})

// ---------------------------------------------------------------------------
// Helper-specific behaviour
// ---------------------------------------------------------------------------

describe("withResourceStream", () => {
  it.effect("is pipeable and closes once per run", () =>
    Effect.gen(function*() {
      let closed = 0
      const stream = Stream.make(1, 2, 3).pipe(Resource.withResourceStream(Effect.sync(() => void closed++)))
      assert.strictEqual(closed, 0)
      assert.deepStrictEqual(Chunk.toReadonlyArray(yield* Stream.runCollect(stream)), [1, 2, 3])
      assert.strictEqual(closed, 1)
      yield* Stream.runDrain(Stream.take(stream, 1))
      assert.strictEqual(closed, 2)
    }))
})

describe("managedStream", () => {
  const exitOf = (ending: "complete" | "take" | "producer-fail" | "interrupt") =>
    Effect.gen(function*() {
      const exits: Array<Exit.Exit<unknown, unknown>> = []
      const reached = yield* Deferred.make<void>()
      const stream = Resource.managedStream(
        Effect.succeed("conn"),
        () =>
          ending === "producer-fail"
            ? Stream.concat(Stream.make(1), Stream.fail("boom"))
            : ending === "interrupt"
            ? Stream.fromEffect(Effect.zipRight(Deferred.succeed(reached, undefined), Effect.never))
            : Stream.make(1, 2, 3),
        (_, exit) => Effect.sync(() => void exits.push(exit))
      )
      const run = ending === "take" ? Stream.runDrain(Stream.take(stream, 1)) : Stream.runDrain(stream)
      if (ending === "interrupt") {
        const fiber = yield* Effect.fork(run)
        yield* Deferred.await(reached)
        yield* Fiber.interrupt(fiber)
      } else {
        yield* Effect.exit(run)
      }
      assert.strictEqual(exits.length, 1)
      return exits[0]!
    })

  it.effect("release receives the exit of the run", () =>
    Effect.gen(function*() {
      assert.isTrue(Exit.isSuccess(yield* exitOf("complete")))
      assert.isTrue(Exit.isSuccess(yield* exitOf("take")))
      const failed = yield* exitOf("producer-fail")
      assert.isTrue(Exit.isFailure(failed) && Cause.failureOption(failed.cause)._tag === "Some")
      const interrupted = yield* exitOf("interrupt")
      assert.isTrue(Exit.isInterrupted(interrupted))
    }))

  it.effect("a failing acquire fails the stream and releases nothing", () =>
    Effect.gen(function*() {
      let released = 0
      const result = yield* Resource.managedStream(
        Effect.fail("no connection" as const),
        () => Stream.make(1),
        () => Effect.sync(() => void released++)
      ).pipe(Stream.runCollect, Effect.either)
      assert.deepStrictEqual(result, Either.left("no connection"))
      assert.strictEqual(released, 0)
    }))

  type Ending = "complete" | "take" | "consumer-fail" | "producer-fail" | "interrupt"
  const endings = fc.constantFrom<Ending>("complete", "take", "consumer-fail", "producer-fail", "interrupt")

  /** run `stream` so that it ends the way `ending` says */
  const runEnding = (
    stream: (tail: Stream.Stream<never, string>) => Stream.Stream<number, string>,
    ending: Ending
  ) =>
    Effect.gen(function*() {
      const reached = yield* Deferred.make<void>()
      const tail: Stream.Stream<never, string> = ending === "producer-fail"
        ? Stream.fail("producer")
        : ending === "interrupt"
        ? Stream.fromEffect(Effect.zipRight(Deferred.succeed(reached, undefined), Effect.never))
        : Stream.empty
      const s = stream(tail)
      switch (ending) {
        case "complete":
        case "producer-fail":
          return yield* Effect.exit(Stream.runDrain(s))
        case "take":
          return yield* Effect.exit(Stream.runDrain(Stream.take(s, 1)))
        case "consumer-fail":
          return yield* Effect.exit(Stream.runForEach(s, () => Effect.fail("consumer")))
        case "interrupt": {
          const fiber = yield* Effect.fork(Stream.runDrain(s))
          yield* Deferred.await(reached)
          return yield* Fiber.interrupt(fiber)
        }
      }
    })

  it.effect.prop("nested managed streams release inner before outer", { ending: endings }, ({ ending }) =>
    Effect.gen(function*() {
      const log = yield* Ref.make<ReadonlyArray<string>>([])
      const note = (event: string) => Ref.update(log, (events) => [...events, event])
      const exit = yield* runEnding(
        (tail) =>
          Resource.managedStream(
            note("acquire outer"),
            () =>
              Resource.managedStream(
                note("acquire inner"),
                () => Stream.concat(Stream.make(1, 2), tail),
                () => note("release inner")
              ),
            () => note("release outer")
          ),
        ending
      )
      assert.strictEqual(Exit.isSuccess(exit), ending === "complete" || ending === "take")
      assert.deepStrictEqual(yield* Ref.get(log), [
        "acquire outer",
        "acquire inner",
        "release inner",
        "release outer"
      ])
    }), runs)

  it.effect.prop(
    "a managed stream per element releases each inner resource before the next and before the outer",
    { n: fc.integer({ min: 1, max: 6 }), ending: endings },
    ({ ending, n }) =>
      Effect.gen(function*() {
        const log = yield* Ref.make<ReadonlyArray<string>>([])
        const note = (event: string) => Ref.update(log, (events) => [...events, event])
        yield* runEnding(
          (tail) =>
            Resource.managedStream(
              note("+outer"),
              () =>
                Stream.concat(
                  Stream.flatMap(
                    Stream.range(1, n),
                    (i) => Resource.managedStream(note(`+${i}`), () => Stream.make(i), () => note(`-${i}`))
                  ),
                  tail
                ),
              () => note("-outer")
            ),
          ending
        )
        const inner = ending === "take" ? 1 : n
        const expected = ["+outer"]
        for (let i = 1; i <= inner; i++) expected.push(`+${i}`, `-${i}`)
        expected.push("-outer")
        // a consumer failing on the first element stops inside the first inner stream
        assert.deepStrictEqual(
          yield* Ref.get(log),
          ending === "consumer-fail" ? ["+outer", "+1", "-1", "-outer"] : expected
        )
      }),
    runs
  )

  it.effect.prop("managedStreamTracked records the resource in the ledger on every ending", { ending: endings }, (
    { ending }
  ) =>
    Effect.gen(function*() {
      const ledger = yield* ResourceLedger.make()
      yield* runEnding(
        (tail) =>
          Resource.managedStreamTracked(
            "connection",
            Effect.succeed({ id: 7 }),
            () => Stream.concat(Stream.make(1, 2), tail),
            () => Effect.void,
            (conn) => `conn-${conn.id}`
          ).pipe(Stream.provideService(ResourceLedger.ResourceLedger, ledger)),
        ending
      )
      const snapshot = yield* ledger.snapshot
      assert.deepStrictEqual(snapshot.byKind["connection"], { acquired: 1, released: 1, open: 0 })
      assert.deepStrictEqual(snapshot.open, [])
      assert.deepStrictEqual(snapshot.releaseOrder.map((r) => r.label), ["conn-7"])
    }), runs)

  it.effect("managedStreamTracked is lazy", () =>
    Effect.gen(function*() {
      const ledger = yield* ResourceLedger.make()
      const stream = Resource.managedStreamTracked("file", Effect.succeed(1), Stream.make, () => Effect.void).pipe(
        Stream.provideService(ResourceLedger.ResourceLedger, ledger)
      )
      const run = Stream.runCollect(stream)
      assert.strictEqual((yield* ledger.snapshot).total.acquired, 0)
      assert.deepStrictEqual(Chunk.toReadonlyArray(yield* run), [1])
      assert.deepStrictEqual((yield* ledger.snapshot).total, { acquired: 1, released: 1, open: 0 })
    }))
})

// ---------------------------------------------------------------------------
// nestedManaged
// ---------------------------------------------------------------------------

describe("nestedManaged", () => {
  const size = fc.integer({ min: 1, max: 8 })

  const makeResources = (log: Ref.Ref<ReadonlyArray<string>>, n: number) =>
    Array.from({ length: n }, (_, i) =>
      Effect.acquireRelease(
        Effect.as(Ref.update(log, (events) => [...events, `+${i}`]), i),
        () => Ref.update(log, (events) => [...events, `-${i}`])
      ))

  const expectedLog = (acquired: number) => [
    ...Array.from({ length: acquired }, (_, i) => `+${i}`),
    ...Array.from({ length: acquired }, (_, i) => `-${acquired - 1 - i}`)
  ]

  it.effect.prop("releases in reverse acquisition order on success", { n: size }, ({ n }) =>
    Effect.gen(function*() {
      const log = yield* Ref.make<ReadonlyArray<string>>([])
      const values = yield* Effect.scoped(Resource.nestedManaged(makeResources(log, n)))
      assert.deepStrictEqual(values, Array.from({ length: n }, (_, i) => i))
      assert.deepStrictEqual(yield* Ref.get(log), expectedLog(n))
    }), runs)

  it.effect.prop("releases in reverse order when the body fails", { n: size }, ({ n }) =>
    Effect.gen(function*() {
      const log = yield* Ref.make<ReadonlyArray<string>>([])
      const result = yield* Effect.scoped(
        Effect.zipRight(Resource.nestedManaged(makeResources(log, n)), Effect.fail("body"))
      ).pipe(Effect.either)
      assert.deepStrictEqual(result, Either.left("body"))
      assert.deepStrictEqual(yield* Ref.get(log), expectedLog(n))
    }), runs)

  it.effect.prop("when the k-th acquire fails, releases the first k-1 in reverse order", {
    n: size,
    k: position
  }, ({ k, n }) =>
    Effect.gen(function*() {
      const failAt = k % n
      const log = yield* Ref.make<ReadonlyArray<string>>([])
      const resources = makeResources(log, n).map((r, i) => (i === failAt ? Effect.fail(`acquire ${i}`) : r))
      const result = yield* Effect.scoped(Resource.nestedManaged(resources)).pipe(Effect.either)
      assert.deepStrictEqual(result, Either.left(`acquire ${failAt}`))
      assert.deepStrictEqual(yield* Ref.get(log), expectedLog(failAt))
    }), runs)

  it.effect.prop("releases in reverse order when interrupted in the body", { n: size }, ({ n }) =>
    Effect.gen(function*() {
      const log = yield* Ref.make<ReadonlyArray<string>>([])
      const reached = yield* Deferred.make<void>()
      const fiber = yield* Effect.fork(
        Effect.scoped(
          Resource.nestedManaged(makeResources(log, n)).pipe(
            Effect.zipRight(Deferred.succeed(reached, undefined)),
            Effect.zipRight(Effect.never)
          )
        )
      )
      yield* Deferred.await(reached)
      assert.isTrue(Exit.isInterrupted(yield* Fiber.interrupt(fiber)))
      assert.deepStrictEqual(yield* Ref.get(log), expectedLog(n))
    }), runs)

  it.effect.prop("releases the first k in reverse order when interrupted during the k-th acquire", {
    n: size,
    k: position
  }, ({ k, n }) =>
    Effect.gen(function*() {
      const blockAt = k % n
      const log = yield* Ref.make<ReadonlyArray<string>>([])
      const reached = yield* Deferred.make<void>()
      const resources = makeResources(log, n).map((r, i) =>
        i === blockAt ? Effect.zipRight(Deferred.succeed(reached, undefined), Effect.never) : r
      )
      const fiber = yield* Effect.fork(Effect.scoped(Resource.nestedManaged(resources)))
      yield* Deferred.await(reached)
      assert.isTrue(Exit.isInterrupted(yield* Fiber.interrupt(fiber)))
      assert.deepStrictEqual(yield* Ref.get(log), expectedLog(blockAt))
    }), runs)

  it.effect.prop("stays LIFO inside a scope whose finalizers run in parallel", { n: size }, ({ n }) =>
    Effect.gen(function*() {
      const log = yield* Ref.make<ReadonlyArray<string>>([])
      // release i yields i times first: run in parallel, release 0 would log first
      const resources = Array.from({ length: n }, (_, i) =>
        Effect.acquireRelease(
          Effect.as(Ref.update(log, (events) => [...events, `+${i}`]), i),
          () =>
            Effect.zipRight(
              Effect.forEach(Array.from({ length: i }), () => Effect.yieldNow()),
              Ref.update(log, (events) => [...events, `-${i}`])
            )
        ))
      yield* Effect.scoped(Effect.parallelFinalizers(Resource.nestedManaged(resources)))
      assert.deepStrictEqual(yield* Ref.get(log), expectedLog(n))
    }), runs)

  it.effect("keeps the tuple's element types", () =>
    Effect.gen(function*() {
      const [a, b, c] = yield* Resource.nestedManaged([
        Effect.succeed(1),
        Effect.acquireRelease(Effect.succeed("two"), () => Effect.void),
        Effect.succeed({ three: true })
      ])
      const typed: [number, string, { three: boolean }] = [a, b, c]
      assert.deepStrictEqual(typed, [1, "two", { three: true }])
    }).pipe(Effect.scoped))
})

// ---------------------------------------------------------------------------
// fromReadable / fromAsyncIterable specifics
// ---------------------------------------------------------------------------

describe("fromReadable", () => {
  it.effect.prop("a byte stream decodes to the text it was built from", {
    parts: fc.array(fc.string({ maxLength: 12 }), { maxLength: 10 })
  }, ({ parts }) =>
    Effect.gen(function*() {
      let readable: Readable | undefined
      const out = yield* Resource.fromReadable<string>(() => {
        readable = Readable.from(parts.map((p) => Buffer.from(p)), { objectMode: false })
        return readable
      }, messageOf).pipe(Stream.decodeText(), Stream.mkString)
      assert.strictEqual(out, parts.join(""))
      assert.isTrue(readable !== undefined && readable.destroyed)
    }), runs)

  it.effect("a throwing factory fails through onError", () =>
    Effect.gen(function*() {
      const result = yield* Resource.fromReadable(() => {
        throw new Error("cannot open")
      }, messageOf).pipe(Stream.runCollect, Effect.either)
      assert.deepStrictEqual(result, Either.left("cannot open"))
    }))

  it.effect("a readable that errored before the run fails the stream", () =>
    Effect.gen(function*() {
      const readable = new Readable({ read() {} })
      readable.on("error", () => {}) // the error is emitted on the next tick
      readable.destroy(new Error("gone"))
      const result = yield* Resource.fromReadable(() => readable, messageOf).pipe(Stream.runCollect, Effect.either)
      assert.deepStrictEqual(result, Either.left("gone"))
    }))

  it.effect("a readable destroyed by someone else fails the stream instead of hanging", () =>
    Effect.gen(function*() {
      const pulled = yield* Deferred.make<void>()
      const readable = new Readable({
        objectMode: true,
        read() {
          Deferred.unsafeDone(pulled, Exit.void) // and never push
        }
      })
      const fiber = yield* Effect.fork(
        Resource.fromReadable(() => readable, messageOf).pipe(Stream.runCollect, Effect.either)
      )
      yield* Deferred.await(pulled)
      readable.destroy()
      const result = yield* Fiber.join(fiber)
      assert.deepStrictEqual(result, Either.left("the readable was closed before it ended"))
    }))

  it.effect("early termination destroys the readable and closes the generator behind it", () =>
    Effect.gen(function*() {
      const closed = yield* Deferred.make<void>()
      let readable: Readable | undefined
      let produced = 0
      const out = yield* Resource.fromReadable<string, number>(() => {
        // refills synchronously: reading "until read() returns null" never stops
        readable = Readable.from((function*() {
          try {
            for (; produced < 100_000; produced++) yield produced
          } finally {
            Deferred.unsafeDone(closed, Exit.void)
          }
        })())
        return readable
      }, messageOf).pipe(Stream.take(3), Stream.runCollect)
      assert.deepStrictEqual(Chunk.toReadonlyArray(out), [0, 1, 2])
      assert.isBelow(produced, 1_000) // read in bounded batches
      assert.isTrue(readable?.destroyed)
      yield* Deferred.await(closed) // Node closes the generator asynchronously
    }))
})

describe("fromAsyncIterable", () => {
  it.effect("a throwing factory fails through onError", () =>
    Effect.gen(function*() {
      const result = yield* Resource.fromAsyncIterable(() => {
        throw new Error("cannot open")
      }, messageOf).pipe(Stream.runCollect, Effect.either)
      assert.deepStrictEqual(result, Either.left("cannot open"))
    }))

  it.effect("the finally block has run when take completes", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      const out = yield* Resource.fromAsyncIterable(async function*() {
        try {
          for (let i = 0;; i++) yield i
        } finally {
          await Promise.resolve()
          events.push("finally")
        }
      }, messageOf).pipe(Stream.take(2), Stream.runCollect)
      events.push("after run")
      assert.deepStrictEqual(Chunk.toReadonlyArray(out), [0, 1])
      assert.deepStrictEqual(events, ["finally", "after run"])
    }))

  it.effect("aborts the signal when the run ends", () =>
    Effect.gen(function*() {
      let seen: AbortSignal | undefined
      yield* Resource.fromAsyncIterable(async function*(signal) {
        seen = signal
        yield 1
      }, messageOf).pipe(Stream.runDrain)
      assert.isTrue(seen?.aborted)
    }))

  it.effect("a finally that throws does not mask the run's result", () =>
    Effect.gen(function*() {
      const out = yield* Resource.fromAsyncIterable(async function*() {
        try {
          yield 1
          yield 2
        } finally {
          // eslint-disable-next-line no-unsafe-finally
          throw new Error("close failed")
        }
      }, messageOf).pipe(Stream.take(1), Stream.runCollect, Effect.exit)
      assert.deepStrictEqual(Chunk.toReadonlyArray(yield* out), [1])
    }))
})

// ---------------------------------------------------------------------------
// autoClose
// ---------------------------------------------------------------------------

describe("autoClose", () => {
  it.effect("sync close runs when the scope closes, not before", () =>
    Effect.gen(function*() {
      let closed = 0
      const obj = { close: () => void closed++ }
      const got = yield* Effect.scoped(
        Effect.tap(Resource.autoClose(obj), () => Effect.sync(() => assert.strictEqual(closed, 0)))
      )
      assert.strictEqual(got, obj)
      assert.strictEqual(closed, 1)
    }))

  it.effect("async close is awaited", () =>
    Effect.gen(function*() {
      let closed = 0
      yield* Effect.scoped(Resource.autoClose({
        close: async () => {
          await Promise.resolve()
          await Promise.resolve()
          closed++
        }
      }))
      assert.strictEqual(closed, 1)
    }))

  it.effect("Symbol.asyncDispose is preferred over close", () =>
    Effect.gen(function*() {
      const calls: Array<string> = []
      yield* Effect.scoped(Resource.autoClose({
        [Symbol.asyncDispose]: async () => {
          await Promise.resolve()
          calls.push("asyncDispose")
        },
        close: () => void calls.push("close")
      }))
      assert.deepStrictEqual(calls, ["asyncDispose"])
    }))

  it.effect("Symbol.dispose, end and destroy are used when that is what there is", () =>
    Effect.gen(function*() {
      const calls: Array<string> = []
      yield* Effect.scoped(Resource.autoClose({ [Symbol.dispose]: () => void calls.push("dispose") }))
      yield* Effect.scoped(
        Resource.autoClose({ end: () => void calls.push("end"), destroy: () => void calls.push("not me") })
      )
      yield* Effect.scoped(Resource.autoClose({ destroy: () => void calls.push("destroy") }))
      assert.deepStrictEqual(calls, ["dispose", "end", "destroy"])
    }))

  it.effect("objects with nothing to close are returned as-is", () =>
    Effect.gen(function*() {
      const obj = { name: "plain", closed: false }
      assert.strictEqual(yield* Effect.scoped(Resource.autoClose(obj)), obj)
      assert.deepStrictEqual(obj, { name: "plain", closed: false })
      assert.strictEqual(yield* Effect.scoped(Resource.autoClose(42)), 42)
      assert.strictEqual(yield* Effect.scoped(Resource.autoClose(null)), null)
    }))

  it.effect("closes on failure and on interruption", () =>
    Effect.gen(function*() {
      let closed = 0
      const obj = { close: () => void closed++ }
      const failed = yield* Effect.scoped(Effect.zipRight(Resource.autoClose(obj), Effect.fail("boom"))).pipe(
        Effect.either
      )
      assert.deepStrictEqual(failed, Either.left("boom"))
      assert.strictEqual(closed, 1)

      const reached = yield* Deferred.make<void>()
      const fiber = yield* Effect.fork(
        Effect.scoped(
          Resource.autoClose(obj).pipe(
            Effect.zipRight(Deferred.succeed(reached, undefined)),
            Effect.zipRight(Effect.never)
          )
        )
      )
      yield* Deferred.await(reached)
      assert.isTrue(Exit.isInterrupted(yield* Fiber.interrupt(fiber)))
      assert.strictEqual(closed, 2)
    }))

  it.effect("a close that throws or rejects does not fail the scope", () =>
    Effect.gen(function*() {
      const calls: Array<string> = []
      const exit = yield* Effect.scoped(
        Effect.zipRight(
          Resource.autoClose({
            close: () => {
              calls.push("sync")
              throw new Error("sync close failed")
            }
          }),
          Resource.autoClose({
            close: () => {
              calls.push("async")
              return Promise.reject(new Error("async close failed"))
            }
          })
        )
      ).pipe(Effect.asVoid, Effect.exit)
      assert.deepStrictEqual(exit, Exit.void)
      assert.deepStrictEqual(calls, ["async", "sync"])
    }))

  it.effect.prop("several objects in one scope close in reverse order", { n: fc.integer({ min: 1, max: 8 }) }, ({ n }) =>
    Effect.gen(function*() {
      const closed: Array<number> = []
      yield* Effect.scoped(
        Effect.forEach(
          Array.from({ length: n }, (_, i) => i),
          (i) => Resource.autoClose({ close: () => void closed.push(i) })
        )
      )
      assert.deepStrictEqual(closed, Array.from({ length: n }, (_, i) => n - 1 - i))
    }), runs)

  type CloserKind = "asyncDispose" | "dispose" | "close" | "closeAsync" | "end" | "destroy"
  type Ending = "success" | "failure" | "defect" | "interruption"

  /** an object releasable by `kind`, calling `onClose` then (when `throws`) throwing or rejecting */
  const closeable = (kind: CloserKind, throws: boolean, onClose: () => void): Resource.Closeable => {
    const sync = () => {
      onClose()
      if (throws) throw new Error("close failed")
    }
    const async = async () => {
      await Promise.resolve()
      onClose()
      if (throws) throw new Error("close failed")
    }
    switch (kind) {
      case "asyncDispose":
        return { [Symbol.asyncDispose]: async }
      case "dispose":
        return { [Symbol.dispose]: sync }
      case "close":
        return { close: sync }
      case "closeAsync":
        return { close: async }
      case "end":
        return { end: sync }
      case "destroy":
        return { destroy: sync }
    }
  }

  const objects = fc.array(
    fc.record({
      kind: fc.constantFrom<CloserKind>("asyncDispose", "dispose", "close", "closeAsync", "end", "destroy"),
      throws: fc.boolean()
    }),
    { minLength: 1, maxLength: 6 }
  )
  const ending = fc.constantFrom<Ending>("success", "failure", "defect", "interruption")

  it.effect.prop(
    "closes every object exactly once, after the body and in reverse order, however the scope ends",
    { objects, ending },
    ({ ending, objects }) =>
      Effect.gen(function*() {
        const closed: Array<number> = []
        let closedDuringBody: ReadonlyArray<number> | undefined
        const reached = yield* Deferred.make<void>()
        const body = Effect.gen(function*() {
          yield* Effect.forEach(objects, ({ kind, throws }, i) =>
            Resource.autoClose(closeable(kind, throws, () => void closed.push(i))))
          closedDuringBody = [...closed]
          switch (ending) {
            case "success":
              return "done"
            case "failure":
              return yield* Effect.fail("boom")
            case "defect":
              return yield* Effect.die("kaboom")
            case "interruption":
              yield* Deferred.succeed(reached, undefined)
              return yield* Effect.never
          }
        })
        const fiber = yield* Effect.fork(Effect.scoped(body))
        if (ending === "interruption") {
          yield* Deferred.await(reached)
          yield* Fiber.interrupt(fiber)
        }
        const exit = yield* Fiber.await(fiber)
        // a close that throws or rejects is logged; the scope ends as the body did
        switch (ending) {
          case "success":
            assert.deepStrictEqual(exit, Exit.succeed("done"))
            break
          case "failure":
            assert.deepStrictEqual(exit, Exit.fail("boom"))
            break
          case "defect":
            assert.deepStrictEqual(exit, Exit.die("kaboom"))
            break
          case "interruption":
            assert.isTrue(Exit.isInterrupted(exit))
            break
        }
        assert.deepStrictEqual(closedDuringBody, [])
        assert.deepStrictEqual(closed, objects.map((_, i) => objects.length - 1 - i))
        // nothing closes a second time later
        yield* Effect.yieldNow()
        yield* Effect.promise(() => Promise.resolve())
        assert.strictEqual(closed.length, objects.length)
      }),
    runs
  )

  it.effect.prop(
    "closes exactly once when the scope is interrupted while acquiring, and never closes what it did not register",
    { objects, at: position },
    ({ at, objects }) =>
      Effect.gen(function*() {
        const stopAt = at % objects.length
        const closed: Array<number> = []
        const reached = yield* Deferred.make<void>()
        const fiber = yield* Effect.fork(Effect.scoped(
          Effect.forEach(objects, ({ kind, throws }, i) =>
            i === stopAt
              ? Effect.zipRight(Deferred.succeed(reached, undefined), Effect.never)
              : Resource.autoClose(closeable(kind, throws, () => void closed.push(i))))
        ))
        yield* Deferred.await(reached)
        assert.isTrue(Exit.isInterrupted(yield* Fiber.interrupt(fiber)))
        assert.deepStrictEqual(closed, Array.from({ length: stopAt }, (_, i) => stopAt - 1 - i))
      }),
    runs
  )

  it.effect("a Node readable is destroyed", () =>
    Effect.gen(function*() {
      const readable = new Readable({ read() {} })
      yield* Effect.scoped(Resource.autoClose(readable))
      assert.isTrue(readable.destroyed)
    }))
})

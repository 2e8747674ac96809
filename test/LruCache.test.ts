import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as fc from "effect/FastCheck"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as LruCache from "../src/LruCache.js"

let nameCounter = 0
/** metrics are global: every test gets its own cache name */
const uniqueName = (label: string) => `lru-test-${label}-${++nameCounter}`

/** let forked fibers run until `check` holds (no real time passes) */
const waitUntil = (check: Effect.Effect<boolean>, what = "condition"): Effect.Effect<void> =>
  Effect.gen(function*() {
    for (let i = 0; i < 10_000; i++) {
      if (yield* check) return
      yield* Effect.yieldNow()
    }
    return yield* Effect.dieMessage(`${what} never held`)
  })

const metricValues = (name: string) =>
  Effect.gen(function*() {
    const tag = <M extends Metric.Metric<any, any, any>>(metric: M) => Metric.tagged(metric, "cache", name)
    return {
      hits: (yield* Metric.value(tag(LruCache.hitsTotal))).count,
      misses: (yield* Metric.value(tag(LruCache.missesTotal))).count,
      evictions: (yield* Metric.value(tag(LruCache.evictionsTotal))).count,
      rejections: (yield* Metric.value(tag(LruCache.rejectionsTotal))).count,
      entries: (yield* Metric.value(tag(LruCache.entriesGauge))).value,
      bytes: (yield* Metric.value(tag(LruCache.bytesGauge))).value
    }
  })

class Boom {
  readonly _tag = "Boom"
  constructor(readonly attempt: number) {}
}

describe("LruCache", () => {
  describe("eviction", () => {
    it.scoped("evicts the least recently used entry; a touched entry survives", () =>
      Effect.gen(function*() {
        const cache = yield* LruCache.make<number>({ maxEntries: 3, name: uniqueName("order") })
        yield* cache.set("a", 1)
        yield* cache.set("b", 2)
        yield* cache.set("c", 3)
        assert.deepStrictEqual(yield* cache.keys, ["c", "b", "a"])
        assert.deepStrictEqual(yield* cache.get("a"), Option.some(1)) // a is now the most recent
        assert.deepStrictEqual(yield* cache.keys, ["a", "c", "b"])
        yield* cache.set("d", 4) // evicts b, the least recently used (insertion order would evict a)
        assert.deepStrictEqual(yield* cache.keys, ["d", "a", "c"])
        assert.isTrue(Option.isNone(yield* cache.get("b")))
        yield* cache.set("c", 30) // replacing a value touches it and evicts nothing
        assert.deepStrictEqual(yield* cache.keys, ["c", "d", "a"])
        yield* cache.set("e", 5)
        assert.deepStrictEqual(yield* cache.keys, ["e", "c", "d"])
        assert.deepStrictEqual(yield* cache.get("c"), Option.some(30))
        assert.deepStrictEqual(yield* cache.getOrCompute("d", Effect.die("d is cached")), 4)
        assert.deepStrictEqual(yield* cache.keys, ["d", "c", "e"])
        assert.isTrue(yield* cache.delete("c"))
        assert.isFalse(yield* cache.delete("c"))
        assert.deepStrictEqual(yield* cache.keys, ["d", "e"])
        const stats = yield* cache.stats
        assert.strictEqual(stats.evictions, 2)
        assert.strictEqual(stats.entries, 2)
      }))

    it.scoped("never holds more than maxEntries", () =>
      Effect.gen(function*() {
        const cache = yield* LruCache.make<number>({ maxEntries: 2, name: uniqueName("entries") })
        for (let i = 0; i < 5; i++) yield* cache.set(`k${i}`, i)
        assert.deepStrictEqual(yield* cache.keys, ["k4", "k3"])
        const stats = yield* cache.stats
        assert.strictEqual(stats.entries, 2)
        assert.strictEqual(stats.evictions, 3)
      }))

    it.scoped("evicts several small entries to make room for a big one and refuses one bigger than maxBytes", () =>
      Effect.gen(function*() {
        const cache = yield* LruCache.make<string>({
          maxEntries: 100,
          maxBytes: 10,
          sizeOf: (value) => value.length,
          name: uniqueName("bytes")
        })
        yield* cache.set("a", "aaa")
        yield* cache.set("b", "bbb")
        yield* cache.set("c", "ccc")
        assert.strictEqual((yield* cache.stats).bytes, 9)
        yield* cache.set("d", "ddddddd") // 9 + 7 = 16: a and b go, leaving 10
        assert.deepStrictEqual(yield* cache.keys, ["d", "c"])
        assert.deepStrictEqual(yield* cache.stats, {
          hits: 0,
          misses: 0,
          evictions: 2,
          rejections: 0,
          entries: 2,
          bytes: 10
        })
        yield* cache.set("e", "e".repeat(11)) // larger than maxBytes: not stored, nothing evicted
        assert.deepStrictEqual(yield* cache.keys, ["d", "c"])
        assert.isTrue(Option.isNone(yield* cache.get("e")))
        // a too-big replacement removes the stale value instead of serving it
        yield* cache.set("c", "c".repeat(20))
        assert.deepStrictEqual(yield* cache.keys, ["d"])
        assert.deepStrictEqual(yield* cache.stats, {
          hits: 0,
          misses: 1,
          evictions: 2,
          rejections: 2,
          entries: 1,
          bytes: 7
        })
        // a computed value that is too big is returned but not stored
        assert.strictEqual(yield* cache.getOrCompute("f", Effect.succeed("f".repeat(12))), "f".repeat(12))
        assert.deepStrictEqual(yield* cache.keys, ["d"])
        assert.strictEqual((yield* cache.stats).rejections, 3)
      }))

    it.scoped("a value of exactly maxBytes fits, alone", () =>
      Effect.gen(function*() {
        const cache = yield* LruCache.make<string>({
          maxEntries: 10,
          maxBytes: 4,
          sizeOf: (value) => value.length,
          name: uniqueName("exact")
        })
        yield* cache.set("a", "a")
        yield* cache.set("b", "bbbb")
        assert.deepStrictEqual(yield* cache.keys, ["b"])
        assert.deepStrictEqual(yield* cache.stats, {
          hits: 0,
          misses: 0,
          evictions: 1,
          rejections: 0,
          entries: 1,
          bytes: 4
        })
      }))
  })

  describe("stats and metrics", () => {
    it.scoped("stats and metrics agree, exactly", () =>
      Effect.gen(function*() {
        const name = uniqueName("metrics")
        const cache = yield* LruCache.make<string>({
          maxEntries: 2,
          maxBytes: 8,
          sizeOf: (value, key) => value.length + key.length,
          name
        })
        assert.deepStrictEqual(yield* metricValues(name), {
          hits: 0,
          misses: 0,
          evictions: 0,
          rejections: 0,
          entries: 0,
          bytes: 0
        })
        yield* cache.set("a", "xx") // 3
        yield* cache.set("b", "yy") // 3
        yield* cache.get("a") // hit
        yield* cache.get("z") // miss
        yield* cache.set("c", "zz") // evicts b
        yield* cache.set("d", "x".repeat(10)) // rejected
        yield* cache.getOrCompute("a", Effect.succeed("never")) // hit
        yield* cache.getOrCompute("e", Effect.succeed("e")) // miss, stored (2), evicts c
        yield* cache.getOrComputeMany(["a", "e", "f", "f"], (missing) => Effect.succeed(missing.map(() => "w")))
        // a, e hits; f one miss (duplicates count once); f stored (2) evicts a (LRU after a, e touched: a older)
        const expected = { hits: 4, misses: 3, evictions: 3, rejections: 1, entries: 2, bytes: 4 }
        assert.deepStrictEqual(yield* cache.stats, expected)
        assert.deepStrictEqual(yield* metricValues(name), expected)
        assert.deepStrictEqual(yield* cache.keys, ["f", "e"])
        yield* cache.clear
        assert.deepStrictEqual(yield* metricValues(name), { ...expected, entries: 0, bytes: 0 })
        assert.deepStrictEqual(yield* cache.stats, { ...expected, entries: 0, bytes: 0 })
      }))

    it.effect("closing the scope empties the cache and zeroes its gauges", () =>
      Effect.gen(function*() {
        const name = uniqueName("close")
        const scope = yield* Scope.make()
        const cache = yield* Scope.extend(LruCache.make<number>({ maxEntries: 5, name }), scope)
        yield* cache.set("a", 1)
        assert.strictEqual((yield* metricValues(name)).entries, 1)
        yield* Scope.close(scope, Exit.void)
        assert.strictEqual((yield* metricValues(name)).entries, 0)
        assert.strictEqual((yield* cache.stats).entries, 0)
      }))

    it.effect("invalid options die with a message naming the option", () =>
      Effect.gen(function*() {
        const cases: ReadonlyArray<readonly [LruCache.Options<string>, string]> = [
          [{ maxEntries: 0 }, "maxEntries must be a positive integer (got 0)"],
          [{ maxEntries: 1.5 }, "maxEntries must be a positive integer (got 1.5)"],
          [{ maxEntries: 1, maxBytes: -1, sizeOf: () => 1 }, "maxBytes must be a positive integer (got -1)"],
          [{ maxEntries: 1, maxBytes: 10 }, "maxBytes needs a sizeOf function to measure entries"]
        ]
        for (const [options, message] of cases) {
          const exit = yield* Effect.exit(Effect.scoped(LruCache.make({ ...options, name: "bad" })))
          assert.isTrue(Exit.isFailure(exit))
          if (Exit.isFailure(exit)) {
            const defect = Cause.squash(exit.cause)
            assert.instanceOf(defect, Error)
            assert.strictEqual((defect as Error).message, `LruCache "bad": ${message}`)
          }
        }
      }))

    it.scoped("a sizeOf returning a negative size is a defect of the set", () =>
      Effect.gen(function*() {
        const cache = yield* LruCache.make<number>({ maxEntries: 2, sizeOf: (n) => n, name: uniqueName("size") })
        const exit = yield* Effect.exit(cache.set("a", -1))
        assert.isTrue(Exit.isFailure(exit) && Cause.isDie(exit.cause))
        assert.deepStrictEqual(yield* cache.keys, [])
      }))
  })

  describe("getOrCompute", () => {
    it.scoped("10 concurrent callers share one computation", () =>
      Effect.gen(function*() {
        const cache = yield* LruCache.make<string>({ maxEntries: 10, name: uniqueName("share") })
        const gate = yield* Deferred.make<void>()
        let computations = 0
        const compute = Effect.sync(() => ++computations).pipe(
          Effect.zipRight(Deferred.await(gate)),
          Effect.as("value")
        )
        const fibers = yield* Effect.forEach(
          Array.from({ length: 10 }, () => cache.getOrCompute("k", compute)),
          Effect.fork
        )
        yield* waitUntil(Effect.map(cache.stats, (s) => s.misses === 10 && computations === 1), "10 misses")
        yield* Deferred.succeed(gate, undefined)
        const values = yield* Fiber.joinAll(fibers)
        assert.deepStrictEqual(values, Array.from({ length: 10 }, () => "value"))
        assert.strictEqual(computations, 1)
        assert.deepStrictEqual(yield* cache.get("k"), Option.some("value"))
        assert.strictEqual(yield* cache.getOrCompute("k", Effect.die("cached")), "value")
        assert.strictEqual(computations, 1)
      }))

    it.scoped("a failure reaches every waiter, is not cached, and the next call computes again", () =>
      Effect.gen(function*() {
        const cache = yield* LruCache.make<string>({ maxEntries: 10, name: uniqueName("fail") })
        const gate = yield* Deferred.make<void>()
        let computations = 0
        const compute = Effect.suspend(() => {
          const attempt = ++computations
          return attempt === 1
            ? Deferred.await(gate).pipe(Effect.zipRight(Effect.fail(new Boom(attempt))))
            : Effect.succeed(`ok ${attempt}`)
        })
        const fibers = yield* Effect.forEach(
          Array.from({ length: 5 }, () => Effect.either(cache.getOrCompute("k", compute))),
          Effect.fork
        )
        yield* waitUntil(Effect.map(cache.stats, (s) => s.misses === 5), "5 misses")
        yield* Deferred.succeed(gate, undefined)
        const results = yield* Fiber.joinAll(fibers)
        for (const result of results) {
          assert.isTrue(result._tag === "Left" && result.left instanceof Boom && result.left.attempt === 1)
        }
        assert.strictEqual(computations, 1)
        assert.deepStrictEqual(yield* cache.keys, [])
        assert.strictEqual(yield* cache.getOrCompute("k", compute), "ok 2")
        assert.strictEqual(computations, 2)
        assert.deepStrictEqual(yield* cache.get("k"), Option.some("ok 2"))
      }))

    it.scoped("a defect (even a throw in compute) reaches every waiter and is not cached", () =>
      Effect.gen(function*() {
        const cache = yield* LruCache.make<string>({ maxEntries: 10, name: uniqueName("defect") })
        const exit = yield* Effect.exit(
          cache.getOrComputeMany(["a"], (): Effect.Effect<ReadonlyArray<string>> => {
            throw new Error("thrown")
          })
        )
        assert.isTrue(Exit.isFailure(exit) && Cause.isDie(exit.cause))
        const wrongCount = yield* Effect.exit(cache.getOrComputeMany(["a", "b"], () => Effect.succeed(["only one"])))
        assert.isTrue(Exit.isFailure(wrongCount) && Cause.isDie(wrongCount.cause))
        assert.deepStrictEqual(yield* cache.keys, [])
      }))

    it.scoped("interrupting waiters, the starter first, does not disturb the others", () =>
      Effect.gen(function*() {
        const cache = yield* LruCache.make<string>({ maxEntries: 10, name: uniqueName("interrupt") })
        const gate = yield* Deferred.make<void>()
        let computations = 0
        let interrupted = false
        const compute = Effect.sync(() => ++computations).pipe(
          Effect.zipRight(Deferred.await(gate)),
          Effect.as("value"),
          Effect.onInterrupt(() =>
            Effect.sync(() => {
              interrupted = true
            })
          )
        )
        const starter = yield* Effect.fork(cache.getOrCompute("k", compute))
        yield* waitUntil(Effect.sync(() => computations === 1), "computation started")
        const second = yield* Effect.fork(cache.getOrCompute("k", compute))
        const third = yield* Effect.fork(cache.getOrCompute("k", compute))
        yield* waitUntil(Effect.map(cache.stats, (s) => s.misses === 3), "3 misses")
        yield* Fiber.interrupt(starter)
        yield* Fiber.interrupt(second)
        assert.isFalse(interrupted)
        yield* Deferred.succeed(gate, undefined)
        assert.strictEqual(yield* Fiber.join(third), "value")
        assert.isTrue(Exit.isInterrupted(yield* Fiber.await(starter)))
        assert.strictEqual(computations, 1)
        assert.isFalse(interrupted)
        assert.deepStrictEqual(yield* cache.get("k"), Option.some("value"))
      }))

    it.scoped("interrupting a joiner does not disturb the starter", () =>
      Effect.gen(function*() {
        const cache = yield* LruCache.make<string>({ maxEntries: 10, name: uniqueName("joiner") })
        const gate = yield* Deferred.make<void>()
        const compute = Effect.as(Deferred.await(gate), "value")
        const starter = yield* Effect.fork(cache.getOrCompute("k", compute))
        const joiner = yield* Effect.fork(cache.getOrCompute("k", compute))
        yield* waitUntil(Effect.map(cache.stats, (s) => s.misses === 2), "2 misses")
        yield* Fiber.interrupt(joiner)
        yield* Deferred.succeed(gate, undefined)
        assert.strictEqual(yield* Fiber.join(starter), "value")
      }))

    it.scoped("when every waiter has gone the computation is interrupted and nothing is stored", () =>
      Effect.gen(function*() {
        const cache = yield* LruCache.make<string>({ maxEntries: 10, name: uniqueName("abandon") })
        const gate = yield* Deferred.make<void>()
        let computations = 0
        let interrupted = 0
        const compute = Effect.sync(() => ++computations).pipe(
          Effect.zipRight(Deferred.await(gate)),
          Effect.as("value"),
          Effect.onInterrupt(() =>
            Effect.sync(() => {
              interrupted++
            })
          )
        )
        const first = yield* Effect.fork(cache.getOrCompute("k", compute))
        const second = yield* Effect.fork(cache.getOrCompute("k", compute))
        yield* waitUntil(Effect.map(cache.stats, (s) => s.misses === 2 && computations === 1), "both waiting")
        yield* Fiber.interrupt(first)
        assert.strictEqual(interrupted, 0)
        yield* Fiber.interrupt(second) // returns once the computation has been interrupted
        assert.strictEqual(interrupted, 1)
        assert.deepStrictEqual(yield* cache.keys, [])
        // a new lookup starts a new computation
        yield* Deferred.succeed(gate, undefined)
        assert.strictEqual(yield* cache.getOrCompute("k", compute), "value")
        assert.strictEqual(computations, 2)
      }))

    it.effect("closing the cache's scope interrupts computations in flight", () =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const cache = yield* Scope.extend(LruCache.make<string>({ maxEntries: 10, name: uniqueName("scope") }), scope)
        let started = false
        let interrupted = false
        const waiter = yield* Effect.fork(
          cache.getOrCompute(
            "k",
            Effect.sync(() => {
              started = true
            }).pipe(
              Effect.zipRight(Effect.never),
              Effect.onInterrupt(() =>
                Effect.sync(() => {
                  interrupted = true
                })
              )
            )
          )
        )
        yield* waitUntil(Effect.sync(() => started), "computation started")
        yield* Scope.close(scope, Exit.void)
        assert.isTrue(interrupted)
        assert.isTrue(Exit.isInterrupted(yield* Fiber.await(waiter)))
      }))

    it.scoped("set during a computation wins: the computed value reaches its waiters but is not stored", () =>
      Effect.gen(function*() {
        const cache = yield* LruCache.make<string>({ maxEntries: 10, name: uniqueName("detach") })
        const gate = yield* Deferred.make<void>()
        const waiter = yield* Effect.fork(cache.getOrCompute("k", Effect.as(Deferred.await(gate), "computed")))
        yield* waitUntil(Effect.map(cache.stats, (s) => s.misses === 1), "1 miss")
        yield* cache.set("k", "explicit")
        yield* Deferred.succeed(gate, undefined)
        assert.strictEqual(yield* Fiber.join(waiter), "computed")
        assert.deepStrictEqual(yield* cache.get("k"), Option.some("explicit"))
      }))
  })

  describe("getOrComputeMany", () => {
    it.scoped("computes the distinct misses in one call, joins computations in flight, keeps input order", () =>
      Effect.gen(function*() {
        const cache = yield* LruCache.make<string>({ maxEntries: 100, name: uniqueName("many") })
        const calls: Array<ReadonlyArray<string>> = []
        const gate = yield* Deferred.make<void>()
        const compute = (missing: ReadonlyArray<string>) =>
          Effect.sync(() => calls.push(missing)).pipe(
            Effect.zipRight(calls.length === 0 ? Deferred.await(gate) : Effect.void),
            Effect.as(missing.map((key) => key.toUpperCase()))
          )
        yield* cache.set("a", "cached a")
        const first = yield* Effect.fork(cache.getOrComputeMany(["b", "a", "c", "b"], compute))
        yield* waitUntil(Effect.sync(() => calls.length === 1), "first call")
        const second = yield* Effect.fork(cache.getOrComputeMany(["d", "c", "a", "d"], compute))
        yield* waitUntil(Effect.sync(() => calls.length === 2), "second call")
        assert.deepStrictEqual(calls, [["b", "c"], ["d"]])
        yield* Deferred.succeed(gate, undefined)
        assert.deepStrictEqual(yield* Fiber.join(first), ["B", "cached a", "C", "B"])
        assert.deepStrictEqual(yield* Fiber.join(second), ["D", "C", "cached a", "D"])
        assert.strictEqual(calls.length, 2)
        assert.deepStrictEqual([...(yield* cache.keys)].sort(), ["a", "b", "c", "d"])
      }))
  })

  describe("model", () => {
    type Op =
      | { readonly op: "get"; readonly key: string }
      | { readonly op: "set"; readonly key: string; readonly size: number }
      | { readonly op: "delete"; readonly key: string }
      | { readonly op: "compute"; readonly key: string; readonly size: number }

    const key = fc.constantFrom("a", "b", "c", "d", "e", "f")
    const size = fc.integer({ min: 0, max: 12 })
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.record({ op: fc.constant("get" as const), key }),
      fc.record({ op: fc.constant("set" as const), key, size }),
      fc.record({ op: fc.constant("delete" as const), key }),
      fc.record({ op: fc.constant("compute" as const), key, size })
    )

    /** a deliberately naive LRU: an array, most recently used first */
    class Model {
      entries: Array<{ key: string; size: number }> = []
      hits = 0
      misses = 0
      evictions = 0
      rejections = 0
      constructor(readonly maxEntries: number, readonly maxBytes: number | undefined) {}
      bytes() {
        return this.entries.reduce((n, e) => n + e.size, 0)
      }
      lookup(key: string): number | undefined {
        const i = this.entries.findIndex((e) => e.key === key)
        if (i < 0) {
          this.misses++
          return undefined
        }
        this.hits++
        const [entry] = this.entries.splice(i, 1)
        this.entries.unshift(entry)
        return entry.size
      }
      remove(key: string) {
        const before = this.entries.length
        this.entries = this.entries.filter((e) => e.key !== key)
        return this.entries.length < before
      }
      set(key: string, size: number) {
        this.remove(key)
        if (this.maxBytes !== undefined && size > this.maxBytes) {
          this.rejections++
          return
        }
        this.entries.unshift({ key, size })
        while (
          this.entries.length > this.maxEntries || (this.maxBytes !== undefined && this.bytes() > this.maxBytes)
        ) {
          this.entries.pop()
          this.evictions++
        }
      }
    }

    it.effect.prop(
      "behaves like a reference LRU over random operations",
      [fc.integer({ min: 1, max: 4 }), fc.option(fc.integer({ min: 1, max: 20 }), { nil: undefined }), fc.array(op, {
        maxLength: 60
      })],
      ([maxEntries, maxBytes, ops]) =>
        Effect.scoped(Effect.gen(function*() {
          const cache = yield* LruCache.make<number>({
            maxEntries,
            ...(maxBytes === undefined ? {} : { maxBytes }),
            sizeOf: (value) => value,
            name: uniqueName("model")
          })
          const model = new Model(maxEntries, maxBytes)
          for (const o of ops) {
            switch (o.op) {
              case "get": {
                const expected = model.lookup(o.key)
                assert.deepStrictEqual(yield* cache.get(o.key), Option.fromNullable(expected))
                break
              }
              case "set": {
                model.set(o.key, o.size)
                yield* cache.set(o.key, o.size)
                break
              }
              case "delete": {
                assert.strictEqual(yield* cache.delete(o.key), model.remove(o.key))
                break
              }
              case "compute": {
                const cached = model.lookup(o.key)
                if (cached === undefined) model.set(o.key, o.size)
                assert.strictEqual(yield* cache.getOrCompute(o.key, Effect.succeed(o.size)), cached ?? o.size)
                break
              }
            }
            assert.deepStrictEqual(yield* cache.keys, model.entries.map((e) => e.key))
          }
          assert.deepStrictEqual(yield* cache.stats, {
            hits: model.hits,
            misses: model.misses,
            evictions: model.evictions,
            rejections: model.rejections,
            entries: model.entries.length,
            bytes: model.bytes()
          })
        })),
      { fastCheck: { numRuns: 100 } }
    )
  })
})

import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as fc from "effect/FastCheck"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import * as Runtime from "effect/Runtime"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as ResourceLedger from "../src/ResourceLedger.js"
import { failsNaming, withEnv } from "./config.js"

const noop = () => Effect.void

/** acquire a resource of `kind` labelled `label` into the current scope */
const track = (ledger: ResourceLedger.Service, kind: string, label: string) =>
  ledger.acquireRelease(kind, Effect.succeed(label), noop, label)

interface LogLine {
  readonly level: string
  readonly message: string
}

/** a logger that records every line, provided in place of the default one */
const captureLogs = () => {
  const lines: Array<LogLine> = []
  const logger = Logger.make(({ logLevel, message }) => {
    const parts = Array.isArray(message) ? message : [message]
    lines.push({ level: logLevel.label, message: parts.map(String).join(" ") })
  })
  return { lines, layer: Logger.replace(Logger.defaultLogger, logger) }
}

describe("ResourceLedger", () => {
  it.effect("counts acquisitions and releases per kind", () =>
    Effect.gen(function*() {
      const ledger = yield* ResourceLedger.make()
      yield* Effect.scoped(
        Effect.gen(function*() {
          yield* track(ledger, "file", "a.md")
          yield* track(ledger, "file", "b.md")
          yield* track(ledger, "connection", "pg")
          const during = yield* ledger.snapshot
          assert.deepStrictEqual(during.byKind, {
            file: { acquired: 2, released: 0, open: 2 },
            connection: { acquired: 1, released: 0, open: 1 }
          })
          assert.deepStrictEqual(during.total, { acquired: 3, released: 0, open: 3 })
        })
      )
      yield* Effect.scoped(track(ledger, "file", "c.md"))
      const after = yield* ledger.snapshot
      assert.deepStrictEqual(after.byKind, {
        file: { acquired: 3, released: 3, open: 0 },
        connection: { acquired: 1, released: 1, open: 0 }
      })
      assert.deepStrictEqual(after.total, { acquired: 4, released: 4, open: 0 })
      assert.strictEqual(after.releaseFailures, 0)
    }))

  it.effect("acquireUseRelease releases after success, failure, defect and interruption, and records each", () =>
    Effect.gen(function*() {
      const ledger = yield* ResourceLedger.make()
      const released: Array<string> = []
      const run = <B, E>(label: string, use: (a: string) => Effect.Effect<B, E>) =>
        ledger.acquireUseRelease(
          "file",
          Effect.succeed(label),
          (a) =>
            Effect.flatMap(ledger.snapshot, (s) => {
              // open while in use
              assert.deepStrictEqual(s.open.map((r) => r.label), [a])
              return use(a)
            }),
          (a, exit) => Effect.sync(() => void released.push(`${a}:${exit._tag}`)),
          label
        )
      assert.strictEqual(yield* run("ok.md", (a) => Effect.succeed(a.length)), 5)
      const failed = yield* Effect.either(run("bad.md", () => Effect.fail("boom")))
      assert.isTrue(Either.isLeft(failed) && failed.left === "boom")
      const died = yield* Effect.exit(run("die.md", () => Effect.die("defect")))
      assert.isTrue(Exit.isFailure(died))
      const started = yield* Deferred.make<void>()
      const fiber = yield* Effect.fork(run("hang.md", () => Effect.zipRight(Deferred.succeed(started, void 0), Effect.never)))
      yield* Deferred.await(started)
      yield* Fiber.interrupt(fiber)
      assert.deepStrictEqual(released, ["ok.md:Success", "bad.md:Failure", "die.md:Failure", "hang.md:Failure"])
      const after = yield* ledger.snapshot
      assert.deepStrictEqual(after.byKind, { file: { acquired: 4, released: 4, open: 0 } })
      assert.deepStrictEqual(after.releaseOrder.map((r) => r.label), ["ok.md", "bad.md", "die.md", "hang.md"])
    }))

  it.effect("useSync releases in a finally: after a result, a throw in use, and records a failing release", () =>
    Effect.gen(function*() {
      const ledger = yield* ResourceLedger.make()
      const released: Array<string> = []
      const release = (a: string) => void released.push(a)
      const value = ledger.useSync("file", () => "a.md", (a) => {
        // open while in use
        assert.deepStrictEqual(Effect.runSync(ledger.snapshot).open.map((r) => r.label), ["a.md"])
        return a.length
      }, release, "a.md")
      assert.strictEqual(value, 4)
      assert.throws(() =>
        ledger.useSync("file", () => "b.md", () => {
          throw new Error("read failed")
        }, release, "b.md"), "read failed")
      // an acquire that throws acquired nothing: nothing to release
      assert.throws(() =>
        ledger.useSync("file", (): string => {
          throw new Error("ENOENT")
        }, () => 0, release, "c.md"), "ENOENT")
      const failing = ledger.useSync("file", () => "d.md", () => "ok", () => {
        throw new Error("EBADF")
      }, "d.md")
      assert.strictEqual(failing, "ok")
      assert.deepStrictEqual(released, ["a.md", "b.md"])
      const after = yield* ledger.snapshot
      assert.deepStrictEqual(after.byKind, { file: { acquired: 3, released: 3, open: 0 } })
      assert.deepStrictEqual(after.releaseOrder.map((r) => r.label), ["a.md", "b.md", "d.md"])
      assert.strictEqual(after.releaseFailures, 1)
    }))

  it.effect("stack: push and pop are counted; what is left is released top first when the scope closes, on every exit", () =>
    Effect.gen(function*() {
      const ledger = yield* ResourceLedger.make()
      const released: Array<string> = []
      const labels = (s: ResourceLedger.Snapshot) => s.open.map((r) => r.label)

      // a normal end: pushed a, b, c; popped c; a and b left to the scope
      yield* Effect.scoped(Effect.gen(function*() {
        const dirs = yield* ledger.stack<string>("dir", (d) => void released.push(d))
        for (const d of ["a", "b", "c"]) assert.strictEqual(dirs.push(() => d, d), d)
        assert.strictEqual(dirs.size(), 3)
        assert.deepStrictEqual(labels(yield* ledger.snapshot), ["a", "b", "c"])
        dirs.pop()
        assert.deepStrictEqual(released, ["c"])
        // an acquire that throws acquired nothing
        assert.throws(() =>
          dirs.push((): string => {
            throw new Error("EACCES")
          }, "x"), "EACCES")
        assert.strictEqual(dirs.size(), 2)
      }))
      assert.deepStrictEqual(released, ["c", "b", "a"])

      // a failure, then an interruption, with resources left on the stack
      const fill = (names: ReadonlyArray<string>) =>
        Effect.flatMap(ledger.stack<string>("dir", (d) => void released.push(d)), (dirs) =>
          Effect.sync(() => {
            for (const d of names) dirs.push(() => d, d)
          }))
      released.length = 0
      const failed = yield* Effect.exit(Effect.scoped(Effect.zipRight(fill(["d", "e"]), Effect.fail("boom"))))
      assert.isTrue(Exit.isFailure(failed))
      assert.deepStrictEqual(released, ["e", "d"])
      released.length = 0
      const filled = yield* Deferred.make<void>()
      const fiber = yield* Effect.fork(
        Effect.scoped(Effect.zipRight(fill(["f", "g"]), Effect.zipRight(Deferred.succeed(filled, undefined), Effect.never)))
      )
      yield* Deferred.await(filled)
      yield* Fiber.interrupt(fiber)
      assert.deepStrictEqual(released, ["g", "f"])

      // a release that throws is counted, and the rest are still released
      yield* Effect.scoped(Effect.gen(function*() {
        const dirs = yield* ledger.stack<string>("dir", (d) => {
          if (d === "bad") throw new Error("EBADF")
          released.push(d)
        })
        dirs.push(() => "h", "h")
        dirs.push(() => "bad", "bad")
      }))
      const after = yield* ledger.snapshot
      assert.deepStrictEqual(after.byKind, { dir: { acquired: 9, released: 9, open: 0 } })
      assert.deepStrictEqual(after.releaseOrder.map((r) => r.label), ["c", "b", "a", "e", "d", "g", "f", "bad", "h"])
      assert.strictEqual(after.releaseFailures, 1)
    }))

  it.effect("useSync: a release slower than the threshold is recorded (the ledger's clock)", () =>
    Effect.gen(function*() {
      // a clock that only moves when told to
      let now = 1_000
      const clock: Clock.Clock = Object.assign(Object.create(Clock.make()), {
        unsafeCurrentTimeMillis: () => now,
        currentTimeMillis: Effect.sync(() => now)
      })
      const ledger = yield* Effect.withClock(ResourceLedger.make({ slowReleaseMillis: 100 }), clock)
      ledger.useSync("file", () => "slow.md", () => undefined, () => void (now += 250), "slow.md")
      ledger.useSync("file", () => "fast.md", () => undefined, () => void (now += 50), "fast.md")
      assert.deepStrictEqual((yield* ledger.snapshot).slowReleases.map((r) => [r.label, r.millis]), [["slow.md", 250]])
    }))

  it.effect("open lists the resources not yet released, with their labels", () =>
    Effect.gen(function*() {
      const ledger = yield* ResourceLedger.make()
      const outer = yield* Scope.make()
      yield* ledger.acquireRelease("connection", Effect.succeed({ port: 5432 }), noop, (c) => `port-${c.port}`).pipe(
        Scope.extend(outer)
      )
      yield* Effect.scoped(
        Effect.gen(function*() {
          yield* ledger.acquireRelease("file", Effect.succeed(1), noop)
          const open = (yield* ledger.snapshot).open
          assert.deepStrictEqual(open.map((r) => [r.kind, r.label]), [["connection", "port-5432"], ["file", "file"]])
          assert.strictEqual(new Set(open.map((r) => r.id)).size, 2)
        })
      )
      assert.deepStrictEqual((yield* ledger.snapshot).open.map((r) => r.label), ["port-5432"])
      yield* Scope.close(outer, Exit.void)
      assert.deepStrictEqual((yield* ledger.snapshot).open, [])
    }))

  it.effect("a failed acquisition records nothing", () =>
    Effect.gen(function*() {
      const ledger = yield* ResourceLedger.make()
      const result = yield* Effect.scoped(ledger.acquireRelease("file", Effect.fail("missing"), noop)).pipe(
        Effect.either
      )
      assert.deepStrictEqual(result, Either.left("missing"))
      const snapshot = yield* ledger.snapshot
      assert.deepStrictEqual(snapshot.total, { acquired: 0, released: 0, open: 0 })
      assert.deepStrictEqual(snapshot.open, [])
    }))

  it.effect("records releases of nested acquisitions in one scope last-in first-out", () =>
    Effect.flatMap(Effect.runtime<never>(), (runtime) =>
      Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(
            fc.array(fc.constantFrom("file", "connection", "gpu"), { minLength: 1, maxLength: 8 }),
            fc.boolean(),
            (kinds, fail) =>
              Runtime.runPromise(runtime)(Effect.gen(function*() {
                const ledger = yield* ResourceLedger.make()
                const labels = kinds.map((kind, i) => `${kind}-${i}`)
                const result = yield* Effect.scoped(
                  Effect.zipRight(
                    Effect.forEach(labels, (label, i) => track(ledger, kinds[i]!, label)),
                    fail ? Effect.fail("body failed") : Effect.void
                  )
                ).pipe(Effect.either)
                assert.strictEqual(Either.isLeft(result), fail)
                const snapshot = yield* ledger.snapshot
                assert.deepStrictEqual(snapshot.releaseOrder.map((r) => r.label), [...labels].reverse())
                assert.deepStrictEqual(snapshot.open, [])
              }))
          ),
          { numRuns: 60 }
        )
      )))

  it.effect("records a release even when it fails, and counts the failure", () =>
    Effect.gen(function*() {
      const ledger = yield* ResourceLedger.make()
      const exit = yield* Effect.scoped(
        Effect.gen(function*() {
          yield* ledger.acquireRelease("socket", Effect.succeed(1), () => Effect.die(new Error("close failed")), "s1")
          yield* ledger.acquireRelease("socket", Effect.succeed(2), noop, "s2")
        })
      ).pipe(Effect.exit)
      assert.isTrue(Exit.isSuccess(exit)) // the failed release is absorbed by the ledger
      const snapshot = yield* ledger.snapshot
      assert.strictEqual(snapshot.releaseFailures, 1)
      assert.deepStrictEqual(snapshot.byKind["socket"], { acquired: 2, released: 2, open: 0 })
      assert.deepStrictEqual(snapshot.releaseOrder.map((r) => r.label), ["s2", "s1"])
    }))

  it.effect("passes the scope's exit to the release", () =>
    Effect.gen(function*() {
      const ledger = yield* ResourceLedger.make()
      const exits: Array<Exit.Exit<unknown, unknown>> = []
      yield* Effect.scoped(
        Effect.zipRight(
          ledger.acquireRelease("file", Effect.succeed(1), (_, exit) => Effect.sync(() => void exits.push(exit))),
          Effect.fail("boom")
        )
      ).pipe(Effect.ignore)
      assert.strictEqual(exits.length, 1)
      assert.deepStrictEqual(exits[0], Exit.fail("boom"))
    }))

  it.effect("flags releases slower than the threshold, measured on the Clock", () =>
    Effect.gen(function*() {
      const ledger = yield* ResourceLedger.make()
      const sleepy = (kind: string, label: string, millis: number) =>
        Effect.gen(function*() {
          const sleeping = yield* Deferred.make<void>()
          const fiber = yield* Effect.fork(
            Effect.scoped(
              ledger.acquireRelease(
                kind,
                Effect.void,
                () => Effect.zipRight(Deferred.succeed(sleeping, undefined), Effect.sleep(millis)),
                label
              )
            )
          )
          yield* Deferred.await(sleeping)
          yield* TestClock.adjust(millis)
          yield* Fiber.join(fiber)
        })
      yield* sleepy("connection", "slow", 600)
      yield* sleepy("connection", "fast", 400)
      yield* sleepy("file", "borderline", 500) // not slower than 500 ms
      const snapshot = yield* ledger.snapshot
      assert.deepStrictEqual(
        snapshot.slowReleases.map(({ kind, label, millis }) => ({ kind, label, millis })),
        [{ kind: "connection", label: "slow", millis: 600 }]
      )
      assert.deepStrictEqual(snapshot.byKind["connection"], { acquired: 2, released: 2, open: 0 })
    }))

  it.effect("honours a custom slow-release threshold", () =>
    Effect.gen(function*() {
      const ledger = yield* ResourceLedger.make({ slowReleaseMillis: 100 })
      const fiber = yield* Effect.fork(
        Effect.scoped(ledger.acquireRelease("gpu", Effect.void, () => Effect.sleep(150), "ctx"))
      )
      // wait until the release is asleep on the test clock
      while ((yield* TestClock.sleeps()).length === 0) yield* Effect.yieldNow()
      yield* TestClock.adjust(150)
      yield* Fiber.join(fiber)
      assert.deepStrictEqual((yield* ledger.snapshot).slowReleases.map((r) => [r.label, r.millis]), [["ctx", 150]])
    }))

  it.effect("bounds the release history by historyLimit", () =>
    Effect.gen(function*() {
      const ledger = yield* ResourceLedger.make({ historyLimit: 3 })
      for (let i = 0; i < 5; i++) yield* Effect.scoped(track(ledger, "file", `f${i}`))
      const snapshot = yield* ledger.snapshot
      assert.deepStrictEqual(snapshot.releaseOrder.map((r) => r.label), ["f2", "f3", "f4"])
      assert.deepStrictEqual(snapshot.total, { acquired: 5, released: 5, open: 0 })
      // the history keeps rolling, oldest first, past any number of wraps
      for (let i = 5; i < 11; i++) yield* Effect.scoped(track(ledger, "file", `f${i}`))
      assert.deepStrictEqual((yield* ledger.snapshot).releaseOrder.map((r) => r.label), ["f8", "f9", "f10"])
    }))

  describe("layer", () => {
    it.effect("warns, naming them, about resources still open when its scope closes", () =>
      Effect.gen(function*() {
        const logs = captureLogs()
        const outer = yield* Scope.make()
        yield* Effect.gen(function*() {
          yield* ResourceLedger.acquireRelease("socket", Effect.succeed(1), noop, "s1").pipe(Scope.extend(outer))
          yield* ResourceLedger.acquireRelease("gpu", Effect.succeed(2), noop, "ctx").pipe(Scope.extend(outer))
          yield* Effect.scoped(ResourceLedger.acquireRelease("file", Effect.succeed(3), noop, "done.md"))
          assert.strictEqual((yield* ResourceLedger.snapshot).total.open, 2)
          assert.deepStrictEqual(logs.lines, [])
        }).pipe(Effect.provide(ResourceLedger.layer()), Effect.provide(logs.layer))
        assert.strictEqual(logs.lines.length, 1)
        const [line] = logs.lines
        assert.strictEqual(line!.level, "WARN")
        assert.include(line!.message, "2 resource(s) still open")
        assert.include(line!.message, "socket:s1")
        assert.include(line!.message, "gpu:ctx")
        assert.notInclude(line!.message, "done.md")
        yield* Scope.close(outer, Exit.void)
      }))

    it.effect("does not warn when everything was released", () =>
      Effect.gen(function*() {
        const logs = captureLogs()
        const snapshot = yield* Effect.gen(function*() {
          yield* Effect.scoped(
            Effect.zipRight(
              ResourceLedger.acquireRelease("socket", Effect.succeed(1), noop),
              ResourceLedger.acquireRelease("file", Effect.succeed(2), noop)
            )
          )
          return yield* ResourceLedger.snapshot
        }).pipe(Effect.provide(ResourceLedger.layer()), Effect.provide(logs.layer))
        assert.deepStrictEqual(snapshot.total, { acquired: 2, released: 2, open: 0 })
        assert.deepStrictEqual(logs.lines, [])
      }))

    it.effect("the capturing logger does see warnings (guard for the test above)", () =>
      Effect.gen(function*() {
        const logs = captureLogs()
        yield* Effect.logWarning("hello").pipe(Effect.provide(logs.layer))
        assert.deepStrictEqual(logs.lines, [{ level: "WARN", message: "hello" }])
      }))
  })

  describe("layerTest", () => {
    it.effect("dies, naming every leftover, when resources are still open as its scope closes", () =>
      Effect.gen(function*() {
        const outer = yield* Scope.make()
        const exit = yield* Effect.exit(
          Effect.gen(function*() {
            yield* ResourceLedger.acquireRelease("socket", Effect.succeed(1), noop, "s1").pipe(Scope.extend(outer))
            yield* ResourceLedger.acquireRelease("gpu", Effect.succeed(2), noop, "ctx").pipe(Scope.extend(outer))
            yield* Effect.scoped(ResourceLedger.acquireRelease("file", Effect.succeed(3), noop, "done.md"))
            return "the body succeeded"
          }).pipe(Effect.provide(ResourceLedger.layerTest()))
        )
        assert.isTrue(Exit.isFailure(exit))
        if (Exit.isFailure(exit)) {
          const defects = Chunk.toReadonlyArray(Cause.defects(exit.cause))
          assert.strictEqual(defects.length, 1)
          const message = String((defects[0] as Error).message)
          assert.include(message, "2 resource(s) still open")
          assert.include(message, "(acquired 3, released 1)")
          assert.include(message, "socket:s1")
          assert.include(message, "gpu:ctx")
          assert.notInclude(message, "done.md")
        }
        yield* Scope.close(outer, Exit.void)
      }))

    it.effect("passes the body's result through when everything was released", () =>
      Effect.gen(function*() {
        const result = yield* Effect.gen(function*() {
          yield* Effect.scoped(ResourceLedger.acquireRelease("socket", Effect.succeed(1), noop))
          yield* ResourceLedger.acquireUseRelease("file", Effect.succeed(2), Effect.succeed, noop)
          return (yield* ResourceLedger.snapshot).total
        }).pipe(Effect.provide(ResourceLedger.layerTest()))
        assert.deepStrictEqual(result, { acquired: 2, released: 2, open: 0 })
      }))

    it.effect("a leak adds to the body's own failure instead of hiding it", () =>
      Effect.gen(function*() {
        const outer = yield* Scope.make()
        const exit = yield* Effect.exit(
          Effect.gen(function*() {
            yield* ResourceLedger.acquireRelease("socket", Effect.succeed(1), noop, "leaked").pipe(Scope.extend(outer))
            return yield* Effect.fail("body failed")
          }).pipe(Effect.provide(ResourceLedger.layerTest()))
        )
        assert.isTrue(Exit.isFailure(exit))
        if (Exit.isFailure(exit)) {
          assert.deepStrictEqual(Chunk.toReadonlyArray(Cause.failures(exit.cause)), ["body failed"])
          assert.include(Cause.pretty(exit.cause), "socket:leaked")
        }
        yield* Scope.close(outer, Exit.void)
      }))

    it.effect("takes the ledger options", () =>
      Effect.gen(function*() {
        const snapshot = yield* Effect.gen(function*() {
          for (let i = 0; i < 4; i++) {
            yield* Effect.scoped(ResourceLedger.acquireRelease("file", Effect.succeed(i), noop, `f${i}`))
          }
          return yield* ResourceLedger.snapshot
        }).pipe(Effect.provide(ResourceLedger.layerTest({ historyLimit: 2 })))
        assert.deepStrictEqual(snapshot.releaseOrder.map((r) => r.label), ["f2", "f3"])
      }))
  })

  describe("layerConfig", () => {
    it.effect("reads the history limit and slow-release threshold from RAGPIPE_LEDGER_*", () =>
      Effect.gen(function*() {
        const snapshot = yield* Effect.gen(function*() {
          const ledger = yield* ResourceLedger.ResourceLedger
          for (let i = 0; i < 3; i++) {
            const release = () => TestClock.adjust(`${100 + i * 100} millis`)
            yield* Effect.scoped(ledger.acquireRelease("conn", Effect.succeed(i), release, `c${i}`))
          }
          return yield* ledger.snapshot
        }).pipe(
          Effect.provide(ResourceLedger.layerConfig()),
          withEnv({ RAGPIPE_LEDGER_HISTORY_LIMIT: "2", RAGPIPE_LEDGER_SLOW_RELEASE: "150 millis" })
        )
        assert.deepStrictEqual(snapshot.releaseOrder.map((r) => r.label), ["c1", "c2"])
        assert.deepStrictEqual(snapshot.slowReleases.map((r) => [r.label, r.millis]), [["c1", 200], ["c2", 300]])
      }))

    it.effect("defaults to 1024 events and 500 ms", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(yield* ResourceLedger.configFromEnv, { historyLimit: 1024, slowReleaseMillis: 500 })
      }).pipe(withEnv({})))

    it.effect.each([
      [{ RAGPIPE_LEDGER_HISTORY_LIMIT: "0" }, "RAGPIPE_LEDGER_HISTORY_LIMIT"],
      [{ RAGPIPE_LEDGER_HISTORY_LIMIT: "many" }, "RAGPIPE_LEDGER_HISTORY_LIMIT"],
      [{ RAGPIPE_LEDGER_SLOW_RELEASE: "soon" }, "RAGPIPE_LEDGER_SLOW_RELEASE"]
    ] as const)("an invalid value is a ConfigError naming %j", ([entries, variable]) =>
      failsNaming(Effect.provide(ResourceLedger.snapshot, ResourceLedger.layerConfig()).pipe(withEnv(entries)), variable))
  })
})

/**
 * The ResourceLedger records every resource the pipeline acquires and
 * releases, per kind, with the order of releases, so a run (or a test) can
 * prove that nothing is left open and that nested resources were released
 * last-in first-out.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type { ResourceCounts } from "./Domain.js"

/**
 * A resource as the ledger knows it.
 *
 * @since 0.1.0
 * @category models
 */
export interface TrackedResource {
  readonly id: number
  readonly kind: string
  readonly label: string
}

/**
 * A release that took longer than the ledger's slow-release threshold.
 *
 * @since 0.1.0
 * @category models
 */
export interface SlowRelease extends TrackedResource {
  readonly millis: number
}

/**
 * A point-in-time view of the ledger.
 *
 * @since 0.1.0
 * @category models
 */
export interface Snapshot {
  readonly total: ResourceCounts
  readonly byKind: Readonly<Record<string, ResourceCounts>>
  /** the most recent releases, oldest first (bounded by `historyLimit`) */
  readonly releaseOrder: ReadonlyArray<TrackedResource>
  /** resources acquired and not yet released */
  readonly open: ReadonlyArray<TrackedResource>
  /** releases that failed (the resource still counts as released) */
  readonly releaseFailures: number
  /** the most recent slow releases (bounded by `historyLimit`) */
  readonly slowReleases: ReadonlyArray<SlowRelease>
}

/**
 * How much history a ledger keeps and what counts as a slow release; pass
 * to {@link make}, {@link layer} or {@link layerTest}, or read from the
 * environment with {@link configFromEnv}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** how many release events and slow releases are kept (default 1024) */
  readonly historyLimit?: number
  /** a release slower than this is recorded as slow (default 500 ms) */
  readonly slowReleaseMillis?: number
}

/**
 * What a ledger offers: acquire resources through it (scoped, or
 * acquire-use-release on a hot path) so every acquisition and release is
 * counted, and read the counts with `snapshot`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /**
   * Acquire a resource in the current scope and record it. The release runs
   * when the scope closes, on every exit path, and is recorded even if it
   * fails.
   */
  readonly acquireRelease: <A, E, R>(
    kind: string,
    acquire: Effect.Effect<A, E, R>,
    release: (a: A, exit: Exit.Exit<unknown, unknown>) => Effect.Effect<unknown>,
    label?: string | ((a: A) => string)
  ) => Effect.Effect<A, E, R | Scope.Scope>
  /**
   * Acquire a resource, use it, release it: the same accounting as
   * {@link Service.acquireRelease} without a `Scope`, for short-lived
   * resources on a hot path (one file read). The release runs on every exit
   * path of `use`, interruption included.
   */
  readonly acquireUseRelease: <A, E, R, B, E2, R2>(
    kind: string,
    acquire: Effect.Effect<A, E, R>,
    use: (a: A) => Effect.Effect<B, E2, R2>,
    release: (a: A, exit: Exit.Exit<unknown, unknown>) => Effect.Effect<unknown>,
    label?: string | ((a: A) => string)
  ) => Effect.Effect<B, E | E2, R | R2>
  /**
   * Acquire, use and release a resource within one synchronous step, with
   * the same accounting: for a resource that never outlives the call (a
   * small file opened, read and closed by synchronous calls). No fiber can
   * be interrupted in between, and `release` runs in a `finally`, so the
   * resource cannot leak. What `acquire` or `use` throws is rethrown after
   * the release; a `release` that throws counts as a release failure. Call
   * it from inside an effect (`Effect.sync`, `Effect.try`).
   */
  readonly useSync: <A, B>(
    kind: string,
    acquire: () => A,
    use: (a: A) => B,
    release: (a: A) => void,
    label?: string
  ) => B
  /**
   * A stack of resources of one kind in the current scope, pushed and
   * popped by synchronous calls with the same accounting: for resources
   * that nest and are acquired and released many at a time on a hot path
   * (a walk's open directories). `pop` releases the top one; whatever is
   * still on the stack when the scope closes is released then, on every
   * exit path, top first. Call `push` and `pop` from inside an effect.
   */
  readonly stack: <A>(kind: string, release: (a: A) => void) => Effect.Effect<ResourceStack<A>, never, Scope.Scope>
  /** The current counters, open resources and release history. */
  readonly snapshot: Effect.Effect<Snapshot>
}

/**
 * Resources acquired and released in last-in, first-out order through a
 * ledger: see {@link Service.stack}.
 *
 * @since 0.1.0
 * @category models
 */
export interface ResourceStack<A> {
  /**
   * Acquire a resource (`acquire` runs now; what it throws is rethrown and
   * nothing is recorded), record it and put it on top.
   */
  readonly push: (acquire: () => A, label?: string) => A
  /**
   * Release the resource on top and record the release (a `release` that
   * throws counts as a release failure). Nothing happens on an empty stack.
   */
  readonly pop: () => void
  /** how many resources are on the stack */
  readonly size: () => number
}

/**
 * The ResourceLedger port: the ledger every resource of a run is acquired
 * through. Provide it with {@link layer} in programs, {@link layerConfig}
 * when its options come from the environment, and {@link layerTest} in
 * tests that must fail on a leak.
 *
 * @since 0.1.0
 * @category tags
 */
export class ResourceLedger extends Context.Tag("ragpipe/ResourceLedger")<ResourceLedger, Service>() {}

/** The last `limit` items pushed, oldest first: a ring, so a push costs the same however full it is. */
class History<A> {
  private readonly items: Array<A> = []
  private next = 0
  constructor(private readonly limit: number) {}
  push(item: A): void {
    if (this.items.length < this.limit) {
      this.items.push(item)
      return
    }
    this.items[this.next] = item
    this.next = (this.next + 1) % this.limit
  }
  toArray(): Array<A> {
    return [...this.items.slice(this.next), ...this.items.slice(0, this.next)]
  }
}

/**
 * Build a ledger. It is not tied to a scope: see {@link layer} for the
 * scoped version that reports leftovers.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Service> =>
  Effect.map(Effect.clock, (clock) => {
    const historyLimit = Math.max(1, options.historyLimit ?? 1024)
    const slowMillis = options.slowReleaseMillis ?? 500
    let nextId = 0
    let releaseFailures = 0
    const byKind = new Map<string, { acquired: number; released: number }>()
    const open = new Map<number, TrackedResource>()
    const releaseOrder = new History<TrackedResource>(historyLimit)
    const slowReleases = new History<SlowRelease>(historyLimit)

    const counts = (kind: string) => {
      let entry = byKind.get(kind)
      if (entry === undefined) {
        entry = { acquired: 0, released: 0 }
        byKind.set(kind, entry)
      }
      return entry
    }

    const record = <A>(kind: string, label: string | ((a: A) => string) | undefined) => (a: A) => {
      const id = ++nextId
      const name = label === undefined ? kind : typeof label === "string" ? label : label(a)
      open.set(id, { id, kind, label: name })
      counts(kind).acquired++
      return [a, id] as const
    }

    const releaseRecorded = <A>(
      kind: string,
      release: (a: A, exit: Exit.Exit<unknown, unknown>) => Effect.Effect<unknown>
    ) =>
    ([a, id]: readonly [A, number], exit: Exit.Exit<unknown, unknown>) =>
      Effect.flatMap(Clock.currentTimeMillis, (start) =>
        release(a, exit).pipe(
          Effect.catchAllCause((cause) =>
            Effect.zipRight(
              Effect.sync(() => void releaseFailures++),
              Effect.logWarning(`releasing ${kind} failed`, cause)
            )
          ),
          Effect.zipRight(Clock.currentTimeMillis),
          Effect.map((end) => recordRelease(kind, id, end - start))
        ))

    const recordRelease = (kind: string, id: number, millis: number): void => {
      const tracked = open.get(id)
      if (tracked === undefined) return
      open.delete(id)
      counts(kind).released++
      releaseOrder.push(tracked)
      if (millis > slowMillis) slowReleases.push({ ...tracked, millis })
    }

    const acquireRelease: Service["acquireRelease"] = (kind, acquire, release, label) =>
      Effect.acquireRelease(Effect.map(acquire, record(kind, label)), releaseRecorded(kind, release)).pipe(
        Effect.map(([a]) => a)
      )

    const acquireUseRelease: Service["acquireUseRelease"] = (kind, acquire, use, release, label) =>
      Effect.acquireUseRelease(
        Effect.map(acquire, record(kind, label)),
        ([a]) => use(a),
        releaseRecorded(kind, release)
      )

    /** Release `a` now and record it; a `release` that throws counts as a release failure. */
    const releaseSync = <A>(kind: string, a: A, id: number, release: (a: A) => void): void => {
      const start = clock.unsafeCurrentTimeMillis()
      try {
        release(a)
      } catch {
        releaseFailures++
      }
      recordRelease(kind, id, clock.unsafeCurrentTimeMillis() - start)
    }

    const useSync: Service["useSync"] = (kind, acquire, use, release, label) => {
      const a = acquire()
      const [, id] = record(kind, label)(a)
      try {
        return use(a)
      } finally {
        releaseSync(kind, a, id, release)
      }
    }

    const stack: Service["stack"] = <A>(kind: string, release: (a: A) => void) =>
      Effect.acquireRelease(
        Effect.sync((): ResourceStack<A> => {
          const held: Array<readonly [A, number]> = []
          return {
            push: (acquire, label) => {
              const entry = record<A>(kind, label)(acquire())
              held.push(entry)
              return entry[0]
            },
            pop: () => {
              const top = held.pop()
              if (top !== undefined) releaseSync(kind, top[0], top[1], release)
            },
            size: () => held.length
          }
        }),
        (resources) =>
          Effect.sync(() => {
            while (resources.size() > 0) resources.pop()
          })
      )

    const snapshot = Effect.sync((): Snapshot => {
      let acquired = 0
      let released = 0
      const kinds: Record<string, ResourceCounts> = {}
      for (const [kind, c] of byKind) {
        acquired += c.acquired
        released += c.released
        kinds[kind] = { acquired: c.acquired, released: c.released, open: c.acquired - c.released }
      }
      return {
        total: { acquired, released, open: acquired - released },
        byKind: kinds,
        releaseOrder: releaseOrder.toArray(),
        open: [...open.values()],
        releaseFailures,
        slowReleases: slowReleases.toArray()
      }
    })

    return { acquireRelease, acquireUseRelease, useSync, stack, snapshot }
  })

/** `kind:label` of each resource, for messages */
const describeOpen = (open: ReadonlyArray<TrackedResource>): string =>
  open.map((r) => `${r.kind}:${r.label}`).join(", ")

/** A ledger whose scope, when it closes with resources still open, runs `onLeftovers`. */
const layerReporting = (
  options: Options,
  onLeftovers: (snapshot: Snapshot) => Effect.Effect<void>
): Layer.Layer<ResourceLedger> =>
  Layer.scoped(
    ResourceLedger,
    Effect.tap(make(options), (ledger) =>
      Effect.addFinalizer(() =>
        Effect.flatMap(ledger.snapshot, (s) => s.open.length === 0 ? Effect.void : onLeftovers(s))
      ))
  )

/**
 * A ledger whose scope, when it closes, logs a warning naming every resource
 * still open at that moment. The one to use in programs: a leftover is
 * reported, never fatal.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<ResourceLedger> =>
  layerReporting(options, (s) =>
    Effect.logWarning(`${s.open.length} resource(s) still open when the ledger closed: ${describeOpen(s.open)}`))

/**
 * Reads ledger {@link Options} from the environment (or any
 * `ConfigProvider`):
 *
 * | variable                       | meaning                                                 | default      |
 * | ------------------------------ | ------------------------------------------------------- | ------------ |
 * | `RAGPIPE_LEDGER_HISTORY_LIMIT` | release events and slow releases kept (an integer >= 1) | 1024         |
 * | `RAGPIPE_LEDGER_SLOW_RELEASE`  | a release slower than this is recorded as slow          | `500 millis` |
 *
 * The threshold is a duration as Effect reads them (`250 millis`,
 * `2 seconds`).
 *
 * @since 0.1.0
 * @category configuration
 */
export const configFromEnv: Config.Config<Options> = Config.all({
  historyLimit: Config.withDefault(Config.integer("RAGPIPE_LEDGER_HISTORY_LIMIT"), 1024),
  slowRelease: Config.withDefault(Config.duration("RAGPIPE_LEDGER_SLOW_RELEASE"), Duration.millis(500))
}).pipe(
  Config.mapOrFail(({ historyLimit, slowRelease }) => {
    if (historyLimit < 1) {
      return Either.left(ConfigError.InvalidData(["RAGPIPE_LEDGER_HISTORY_LIMIT"], "must be an integer of at least 1"))
    }
    if (!Duration.isFinite(slowRelease)) {
      return Either.left(ConfigError.InvalidData(["RAGPIPE_LEDGER_SLOW_RELEASE"], "must be a finite duration"))
    }
    return Either.right({ historyLimit, slowReleaseMillis: Duration.toMillis(slowRelease) })
  })
)

/**
 * {@link layer} with its options read from configuration (default
 * {@link configFromEnv}: `RAGPIPE_LEDGER_HISTORY_LIMIT`,
 * `RAGPIPE_LEDGER_SLOW_RELEASE`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config<Options> = configFromEnv
): Layer.Layer<ResourceLedger, ConfigError.ConfigError> => Layer.unwrapEffect(Effect.map(config, layer))

/**
 * A ledger for tests: when its scope closes with resources still open, it
 * dies with a message naming each leftover (`kind:label`), so a leak fails
 * the test that caused it instead of printing a warning nobody reads.
 * Provide it around the code under test (`Effect.provide`, or
 * `layer(ResourceLedger.layerTest())` in `@effect/vitest`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerTest = (options: Options = {}): Layer.Layer<ResourceLedger> =>
  layerReporting(options, (s) =>
    Effect.dieMessage(
      `ResourceLedger.layerTest: ${s.open.length} resource(s) still open when the ledger's scope closed ` +
        `(acquired ${s.total.acquired}, released ${s.total.released}): ${describeOpen(s.open)}`
    ))

/**
 * Acquire a resource through the ledger in the context.
 *
 * @since 0.1.0
 * @category combinators
 */
export const acquireRelease = <A, E, R>(
  kind: string,
  acquire: Effect.Effect<A, E, R>,
  release: (a: A, exit: Exit.Exit<unknown, unknown>) => Effect.Effect<unknown>,
  label?: string | ((a: A) => string)
): Effect.Effect<A, E, R | Scope.Scope | ResourceLedger> =>
  Effect.flatMap(ResourceLedger, (ledger) => ledger.acquireRelease(kind, acquire, release, label))

/**
 * Acquire, use and release a resource through the ledger in the context,
 * without a `Scope` (see `Service.acquireUseRelease`).
 *
 * @since 0.1.0
 * @category combinators
 */
export const acquireUseRelease = <A, E, R, B, E2, R2>(
  kind: string,
  acquire: Effect.Effect<A, E, R>,
  use: (a: A) => Effect.Effect<B, E2, R2>,
  release: (a: A, exit: Exit.Exit<unknown, unknown>) => Effect.Effect<unknown>,
  label?: string | ((a: A) => string)
): Effect.Effect<B, E | E2, R | R2 | ResourceLedger> =>
  Effect.flatMap(ResourceLedger, (ledger) => ledger.acquireUseRelease(kind, acquire, use, release, label))

/**
 * The current snapshot of the ledger in the context.
 *
 * @since 0.1.0
 * @category accessors
 */
export const snapshot: Effect.Effect<Snapshot, never, ResourceLedger> = Effect.flatMap(
  ResourceLedger,
  (ledger) => ledger.snapshot
)

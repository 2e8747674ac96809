/**
 * A bounded, true least-recently-used cache with stats and metrics.
 *
 * Effect's own `Cache` evicts in first-insertion order; this one evicts the
 * entry that was used least recently, by entry count and (optionally) by an
 * estimate of the bytes the values hold. Lookups that miss can compute the
 * value through the cache, and concurrent misses for the same key share one
 * computation.
 *
 * Recency is kept in a `Map` (its iteration order is insertion order, and a
 * touched entry is deleted and re-inserted), so `get`, `set` and each
 * eviction are O(1). All bookkeeping happens in synchronous steps, so
 * concurrent fibers always see a consistent cache and the metrics always
 * agree with `stats`.
 *
 * @since 0.1.0
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as FiberRef from "effect/FiberRef"
import * as Metric from "effect/Metric"
import type * as MetricLabel from "effect/MetricLabel"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"

/**
 * Bounds of a cache made with {@link make}: a number of entries, and
 * optionally a number of bytes with the function that measures an entry.
 * The least recently used entries are evicted until both hold.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<V> {
  /** the most entries the cache holds (a positive integer) */
  readonly maxEntries: number
  /**
   * the most bytes the values may hold, as measured by `sizeOf` (a positive
   * integer; `sizeOf` is required when this is set)
   */
  readonly maxBytes?: number
  /**
   * the size in bytes of one entry (a finite number >= 0). Without it every
   * entry counts as 0 bytes.
   */
  readonly sizeOf?: (value: V, key: string) => number
  /** the `cache` tag of the metrics (default `"lru-cache"`) */
  readonly name?: string
}

/**
 * Counters and current size of a cache.
 *
 * - `hits` / `misses`: lookups by `get`, `getOrCompute` and
 *   `getOrComputeMany` (one per distinct key of a call). A lookup that joins
 *   a computation already in flight is a miss.
 * - `evictions`: entries removed to make room (never `delete`, `clear`, or
 *   the replacement of a key's value by `set`).
 * - `rejections`: values not stored because they alone are larger than
 *   `maxBytes`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  readonly hits: number
  readonly misses: number
  readonly evictions: number
  readonly rejections: number
  readonly entries: number
  readonly bytes: number
}

/**
 * A bounded least-recently-used cache, made with {@link make}. Use it to
 * keep the results of an expensive computation (an embedding, a lookup)
 * with memory bounded, and `getOrCompute` / `getOrComputeMany` to share
 * computations between concurrent callers.
 *
 * @since 0.1.0
 * @category models
 */
export interface LruCache<K extends string, V> {
  /** the cached value, marking the entry most recently used */
  readonly get: (key: K) => Effect.Effect<Option.Option<V>>
  /**
   * store a value as the most recently used entry, evicting least recently
   * used entries until both bounds hold. A value larger than `maxBytes` is
   * not stored (it counts as a rejection) and removes the key's old value.
   * A computation in flight for the key will not overwrite this value.
   */
  readonly set: (key: K, value: V) => Effect.Effect<void>
  /**
   * the cached value, or the result of `compute`, which is then stored.
   * Concurrent misses for one key share one computation: see
   * {@link getOrComputeMany} for failure and interruption semantics.
   */
  readonly getOrCompute: <E, R>(key: K, compute: Effect.Effect<V, E, R>) => Effect.Effect<V, E, R>
  /**
   * The batched form of `getOrCompute`: the values of `keys`, in order.
   * Keys that are cached are hits; keys that another caller is already
   * computing are awaited; all the other (distinct) keys are passed to ONE
   * call of `compute`, which must return one value per key, in order (a
   * wrong count is a defect).
   *
   * - The computation runs in a fiber owned by the cache, so interrupting
   *   the caller that started it does not disturb the other callers waiting
   *   for it. When every caller waiting for a computation has gone
   *   (interrupted, or failed on another key), it is interrupted: nobody
   *   wants its result, and it is not stored.
   * - A failure (or defect) is not cached: it fails every caller waiting
   *   for the computation, and the next lookup computes again. Callers that
   *   share a key should pass equivalent computations: a caller that joins a
   *   computation receives its failure as its own `E`.
   * - `set`, `delete` and `clear` detach the computations in flight for
   *   their keys: their waiters still get the result, but it is not stored
   *   and new lookups start afresh.
   * - Closing the cache's scope interrupts every computation (and so its
   *   waiters).
   */
  readonly getOrComputeMany: <E, R>(
    keys: ReadonlyArray<K>,
    compute: (missing: ReadonlyArray<K>) => Effect.Effect<ReadonlyArray<V>, E, R>
  ) => Effect.Effect<ReadonlyArray<V>, E, R>
  /** remove an entry; `true` if there was one */
  readonly delete: (key: K) => Effect.Effect<boolean>
  /** remove every entry (hit, miss, eviction and rejection counts stay) */
  readonly clear: Effect.Effect<void>
  readonly stats: Effect.Effect<Stats>
  /** the cached keys, most recently used first */
  readonly keys: Effect.Effect<ReadonlyArray<K>>
}

/**
 * Lookups that found their key, tagged `cache`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const hitsTotal: Metric.Metric.Counter<number> = Metric.counter("ragpipe_cache_hits_total", {
  description: "cache lookups that found their key",
  incremental: true
})

/**
 * Lookups that did not find their key, tagged `cache`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const missesTotal: Metric.Metric.Counter<number> = Metric.counter("ragpipe_cache_misses_total", {
  description: "cache lookups that did not find their key",
  incremental: true
})

/**
 * Entries removed to make room, tagged `cache`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const evictionsTotal: Metric.Metric.Counter<number> = Metric.counter("ragpipe_cache_evictions_total", {
  description: "least recently used cache entries evicted to make room",
  incremental: true
})

/**
 * Values not stored because they alone exceed `maxBytes`, tagged `cache`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const rejectionsTotal: Metric.Metric.Counter<number> = Metric.counter("ragpipe_cache_rejections_total", {
  description: "values not cached because they alone exceed the byte bound",
  incremental: true
})

/**
 * Entries currently cached, tagged `cache`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const entriesGauge: Metric.Metric.Gauge<number> = Metric.gauge("ragpipe_cache_entries", {
  description: "entries currently cached"
})

/**
 * Bytes the cached entries hold (as measured by `sizeOf`), tagged `cache`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const bytesGauge: Metric.Metric.Gauge<number> = Metric.gauge("ragpipe_cache_bytes", {
  description: "bytes the cached entries hold, as estimated by the cache's sizeOf"
})

const isPositiveInteger = (n: number): boolean => Number.isSafeInteger(n) && n > 0

const invalid = <V>(options: Options<V>): string | undefined => {
  if (!isPositiveInteger(options.maxEntries)) {
    return `maxEntries must be a positive integer (got ${options.maxEntries})`
  }
  if (options.maxBytes !== undefined) {
    if (!isPositiveInteger(options.maxBytes)) {
      return `maxBytes must be a positive integer (got ${options.maxBytes})`
    }
    if (options.sizeOf === undefined) {
      return "maxBytes needs a sizeOf function to measure entries"
    }
  }
  return undefined
}

interface Entry<V> {
  readonly value: V
  readonly size: number
}

/** one running computation of one or more keys */
interface Flight<V> {
  readonly keys: ReadonlyArray<string>
  readonly deferred: Deferred.Deferred<ReadonlyMap<string, V>, unknown>
  /** callers currently awaiting `deferred` */
  waiters: number
  /** completed, or abandoned by its last waiter */
  finished: boolean
  fiber: Fiber.RuntimeFiber<unknown, unknown> | undefined
}

/**
 * A new, empty cache. Computations started by `getOrCompute` run in fibers
 * of the surrounding scope; closing it interrupts them and empties the cache.
 *
 * Invalid options (a `maxEntries` or `maxBytes` that is not a positive
 * integer, `maxBytes` without `sizeOf`) are a programming error: the effect
 * dies with a message naming the option. A `sizeOf` that returns a negative
 * or non-finite number is a defect of the call that stored the value.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <V, K extends string = string>(
  options: Options<V>
): Effect.Effect<LruCache<K, V>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const name = options.name ?? "lru-cache"
    const problem = invalid(options)
    if (problem !== undefined) {
      return yield* Effect.dieMessage(`LruCache "${name}": ${problem}`)
    }
    const { maxBytes, maxEntries, sizeOf } = options
    const scope = yield* Effect.scope

    const hitsMetric = Metric.tagged(hitsTotal, "cache", name)
    const missesMetric = Metric.tagged(missesTotal, "cache", name)
    const evictionsMetric = Metric.tagged(evictionsTotal, "cache", name)
    const rejectionsMetric = Metric.tagged(rejectionsTotal, "cache", name)
    const entriesMetric = Metric.tagged(entriesGauge, "cache", name)
    const bytesMetric = Metric.tagged(bytesGauge, "cache", name)

    /** insertion order is recency: least recently used first */
    const entries = new Map<string, Entry<V>>()
    const inFlight = new Map<string, Flight<V>>()
    let bytes = 0
    let hits = 0
    let misses = 0
    let evictions = 0
    let rejections = 0

    type Labels = ReadonlyArray<MetricLabel.MetricLabel>

    /** run `f` as one synchronous step, with the fiber's metric labels */
    const atomically = <A>(f: (labels: Labels) => A): Effect.Effect<A> =>
      Effect.withFiberRuntime<A>((fiber) => Effect.succeed(f(fiber.getFiberRef(FiberRef.currentMetricLabels))))

    const countLookups = (hit: number, miss: number, labels: Labels): void => {
      hits += hit
      misses += miss
      if (hit > 0) hitsMetric.unsafeUpdate(hit, labels)
      if (miss > 0) missesMetric.unsafeUpdate(miss, labels)
    }

    const updateGauges = (labels: Labels): void => {
      entriesMetric.unsafeUpdate(entries.size, labels)
      bytesMetric.unsafeUpdate(bytes, labels)
    }

    const measure = (value: V, key: string): number => {
      if (sizeOf === undefined) return 0
      const size = sizeOf(value, key)
      if (!Number.isFinite(size) || size < 0) {
        throw new Error(`LruCache "${name}": sizeOf returned ${size} for key ${JSON.stringify(key)}`)
      }
      return size
    }

    const touch = (key: string, entry: Entry<V>): void => {
      entries.delete(key)
      entries.set(key, entry)
    }

    const remove = (key: string): boolean => {
      const entry = entries.get(key)
      if (entry === undefined) return false
      entries.delete(key)
      bytes -= entry.size
      return true
    }

    /** store without touching gauges; the caller updates them once */
    const store = (key: string, value: V, size: number, labels: Labels): void => {
      remove(key)
      if (maxBytes !== undefined && size > maxBytes) {
        rejections++
        rejectionsMetric.unsafeUpdate(1, labels)
        return
      }
      entries.set(key, { value, size })
      bytes += size
      let evicted = 0
      // the new entry is the most recent and fits alone, so it is never evicted here
      while (entries.size > maxEntries || (maxBytes !== undefined && bytes > maxBytes)) {
        const oldest = entries.keys().next()
        if (oldest.done === true) break
        remove(oldest.value)
        evicted++
      }
      if (evicted > 0) {
        evictions += evicted
        evictionsMetric.unsafeUpdate(evicted, labels)
      }
    }

    /** results of `flight` are no longer stored; new lookups start afresh */
    const detach = (flight: Flight<V>): void => {
      for (const key of flight.keys) {
        if (inFlight.get(key) === flight) inFlight.delete(key)
      }
    }

    const settle = (
      flight: Flight<V>,
      exit: Exit.Exit<readonly [ReadonlyArray<V>, ReadonlyArray<number>], unknown>
    ): Effect.Effect<void> =>
      atomically((labels) => {
        flight.finished = true
        if (Exit.isSuccess(exit)) {
          const [values, sizes] = exit.value
          const results = new Map<string, V>()
          flight.keys.forEach((key, i) => {
            results.set(key, values[i])
            if (inFlight.get(key) === flight) {
              inFlight.delete(key)
              store(key, values[i], sizes[i], labels)
            }
          })
          updateGauges(labels)
          Deferred.unsafeDone(flight.deferred, Exit.succeed(results))
        } else {
          detach(flight)
          Deferred.unsafeDone(flight.deferred, Exit.failCause(exit.cause))
        }
      })

    /** the callers of `flights` stop waiting; interrupt computations nobody awaits */
    const leave = (flights: ReadonlyArray<Flight<V>>): Effect.Effect<void> =>
      Effect.suspend(() => {
        const abandoned: Array<Fiber.RuntimeFiber<unknown, unknown>> = []
        for (const flight of flights) {
          flight.waiters--
          if (flight.waiters === 0 && !flight.finished) {
            flight.finished = true
            detach(flight)
            if (flight.fiber !== undefined) abandoned.push(flight.fiber)
          }
        }
        return abandoned.length === 0 ? Effect.void : Effect.forEach(abandoned, Fiber.interrupt, { discard: true })
      })

    const start = <E, R>(
      flight: Flight<V>,
      compute: Effect.Effect<ReadonlyArray<V>, E, R>
    ): Effect.Effect<void, never, R> =>
      Effect.interruptible(compute).pipe(
        Effect.flatMap((values) =>
          values.length === flight.keys.length
            ? Effect.sync(() => [values, values.map((value, i) => measure(value, flight.keys[i]))] as const)
            : Effect.dieMessage(
              `LruCache "${name}": a computation of ${flight.keys.length} keys returned ${values.length} values`
            )
        ),
        Effect.onExit((exit) => settle(flight, exit)),
        Effect.forkIn(scope),
        Effect.flatMap((fiber) =>
          Effect.sync(() => {
            flight.fiber = fiber
          })
        )
      )

    const getOrComputeMany = <E, R>(
      keys: ReadonlyArray<K>,
      compute: (missing: ReadonlyArray<K>) => Effect.Effect<ReadonlyArray<V>, E, R>
    ): Effect.Effect<ReadonlyArray<V>, E, R> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.withFiberRuntime<ReadonlyArray<V>, E, R>((fiber) => {
          const found = new Map<string, V>()
          const awaited = new Set<Flight<V>>()
          const missing: Array<K> = []
          let hit = 0
          let miss = 0
          for (const key of new Set(keys)) {
            const entry = entries.get(key)
            if (entry !== undefined) {
              touch(key, entry)
              found.set(key, entry.value)
              hit++
              continue
            }
            miss++
            const flight = inFlight.get(key)
            if (flight !== undefined) awaited.add(flight)
            else missing.push(key)
          }
          countLookups(hit, miss, fiber.getFiberRef(FiberRef.currentMetricLabels))
          let started: Effect.Effect<void, never, R> = Effect.void
          if (missing.length > 0) {
            const flight: Flight<V> = {
              keys: missing,
              deferred: Deferred.unsafeMake<ReadonlyMap<string, V>, unknown>(FiberId.none),
              waiters: 0,
              finished: false,
              fiber: undefined
            }
            for (const key of missing) inFlight.set(key, flight)
            awaited.add(flight)
            // compute is called in the forked fiber: even a throw settles the flight
            started = start(flight, Effect.suspend(() => compute(missing)))
          }
          if (awaited.size === 0) return Effect.succeed(keys.map((key) => found.get(key) as V))
          const flights = Array.from(awaited)
          for (const flight of flights) flight.waiters++
          const wait = Effect.forEach(flights, (flight) =>
            Effect.map(Deferred.await(flight.deferred), (results) => {
              for (const [key, value] of results) found.set(key, value)
            }), { discard: true }) as Effect.Effect<void, E>
          return started.pipe(
            Effect.zipRight(restore(wait)),
            Effect.ensuring(leave(flights)),
            Effect.map(() => keys.map((key) => found.get(key) as V))
          )
        })
      )

    const cache: LruCache<K, V> = {
      get: (key) =>
        atomically((labels) => {
          const entry = entries.get(key)
          if (entry === undefined) {
            countLookups(0, 1, labels)
            return Option.none()
          }
          touch(key, entry)
          countLookups(1, 0, labels)
          return Option.some(entry.value)
        }),
      set: (key, value) =>
        Effect.flatMap(Effect.sync(() => measure(value, key)), (size) =>
          atomically((labels) => {
            inFlight.delete(key)
            store(key, value, size, labels)
            updateGauges(labels)
          })),
      getOrCompute: (key, compute) =>
        Effect.map(getOrComputeMany([key], () => Effect.map(compute, (value) => [value])), (values) => values[0]),
      getOrComputeMany,
      delete: (key) =>
        atomically((labels) => {
          inFlight.delete(key)
          const removed = remove(key)
          updateGauges(labels)
          return removed
        }),
      clear: atomically((labels) => {
        inFlight.clear()
        entries.clear()
        bytes = 0
        updateGauges(labels)
      }),
      stats: Effect.sync(() => ({ hits, misses, evictions, rejections, entries: entries.size, bytes })),
      keys: Effect.sync(() => Array.from(entries.keys()).reverse() as Array<K>)
    }

    yield* atomically(updateGauges)
    // runs after the scope has interrupted the computations forked into it
    yield* Effect.addFinalizer(() => cache.clear)
    return cache
  })

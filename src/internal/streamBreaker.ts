/**
 * A circuit breaker for streams of outcomes: it passes `Either` items
 * through unchanged and, as soon as the error rate exceeds a threshold,
 * stops reading the upstream, releases it, and ends the stream with one
 * final `Left(BreakInfo)` describing why.
 *
 * The upstream is released before the `BreakInfo` is emitted, so a consumer
 * that reacts to the break (reports it, stops, starts something else) never
 * does so while the upstream's resources (a connection, a file handle) are
 * still open.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import { dual } from "effect/Function"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"

/**
 * The fields of a {@link BreakInfo}.
 *
 * @since 0.1.0
 * @category models
 */
export interface BreakInfoFields<E> {
  /** why the breaker tripped; the only rule so far is the error rate */
  readonly code: "error-rate"
  /** a sentence for people, e.g. "error rate 0.31 exceeded 0.20 after 52 of 168 items failed" */
  readonly reason: string
  /** the most recent error seen before the trip */
  readonly lastError: E | undefined
  /** successes among the items the rate was computed over */
  readonly ok: number
  /** errors among the items the rate was computed over */
  readonly errors: number
  /**
   * the items the rate was computed over (`ok + errors`): every item seen
   * in cumulative mode, the last `window` items (or fewer) in window mode
   */
  readonly total: number
  /** the `maxRate` the error rate exceeded */
  readonly threshold: number
  /** whether the rate was cumulative from the start or over a sliding window */
  readonly mode: "cumulative" | "window"
  /** the size of the sliding window (window mode only) */
  readonly window?: number
}

/**
 * Why a stream was cut by a circuit breaker. It is emitted once, as the
 * last element of the stream (`Either.left(breakInfo)`), after the item that
 * tripped the breaker.
 *
 * `errors / total` is the error rate that exceeded `threshold`.
 *
 * @since 0.1.0
 * @category models
 */
export class BreakInfo<E> extends Data.TaggedClass("BreakInfo")<BreakInfoFields<E>> {}

/**
 * Whether a value is a {@link BreakInfo}: use it to tell the breaker's final
 * element from the errors of the items themselves.
 *
 * @since 0.1.0
 * @category guards
 */
export const isBreakInfo = (u: unknown): u is BreakInfo<unknown> => u instanceof BreakInfo

/**
 * The plain, serialisable part of a {@link BreakInfo}, as the CLI prints it.
 *
 * @since 0.1.0
 * @category models
 */
export interface BreakInfoJson {
  readonly code: "error-rate"
  readonly reason: string
  readonly ok: number
  readonly errors: number
  readonly total: number
  readonly threshold: number
}

/**
 * The plain form of a {@link BreakInfo}: exactly the keys `code`, `reason`,
 * `ok`, `errors`, `total` and `threshold` (the last error, which may not be
 * serialisable, is left out).
 *
 * @since 0.1.0
 * @category conversions
 */
export const breakInfoJson = <E>(info: BreakInfo<E>): BreakInfoJson => ({
  code: info.code,
  reason: info.reason,
  ok: info.ok,
  errors: info.errors,
  total: info.total,
  threshold: info.threshold
})

/**
 * Options for {@link breakOnErrorRate}.
 *
 * @since 0.1.0
 * @category models
 */
export interface RateOptions {
  /**
   * the highest tolerated error rate, in `[0, 1]`: the breaker trips when
   * the rate is strictly greater (`0` trips on the first error, `1` never
   * trips)
   */
  readonly maxRate: number
  /**
   * the breaker cannot trip before this many items were seen in all (a
   * positive integer, default 1), so a few early errors do not cut a run
   */
  readonly minSamples?: number
  /**
   * when set (a positive integer), the rate is computed over the last
   * `window` items only, so old errors are forgotten; otherwise it is
   * cumulative from the first item
   */
  readonly window?: number
}

const isPositiveInteger = (n: unknown): n is number => typeof n === "number" && Number.isSafeInteger(n) && n > 0

const validate = (options: RateOptions): void => {
  const { maxRate, minSamples, window } = options
  if (typeof maxRate !== "number" || !(maxRate >= 0 && maxRate <= 1)) {
    throw new RangeError(`breakOnErrorRate: maxRate must be a number in [0, 1], got ${String(maxRate)}`)
  }
  if (minSamples !== undefined && !isPositiveInteger(minSamples)) {
    throw new RangeError(`breakOnErrorRate: minSamples must be a positive integer, got ${String(minSamples)}`)
  }
  if (window !== undefined && !isPositiveInteger(window)) {
    throw new RangeError(`breakOnErrorRate: window must be a positive integer, got ${String(window)}`)
  }
}

/** a rate and a threshold with enough digits to tell them apart (2 to 6) */
const formatRates = (rate: number, threshold: number): readonly [string, string] => {
  let digits = 2
  while (digits < 6 && rate.toFixed(digits) === threshold.toFixed(digits)) digits++
  return [rate.toFixed(digits), threshold.toFixed(digits)]
}

/**
 * The breaker's counters: plain numbers in cumulative mode, plus a ring of
 * the last `window` outcomes in window mode, so memory is constant.
 */
interface Tally<E> {
  /** records one item; returns the BreakInfo if the breaker trips on it */
  readonly record: (item: Either.Either<unknown, E>) => BreakInfo<E> | undefined
}

const makeTally = <E>(options: RateOptions): Tally<E> => {
  const maxRate = options.maxRate
  const minSamples = options.minSamples ?? 1
  const window = options.window
  // 1 marks an error; only allocated in window mode
  const ring = window === undefined ? undefined : new Uint8Array(window)
  let position = 0
  let seen = 0
  let errors = 0
  let lastError: E | undefined = undefined
  return {
    record: (item) => {
      seen++
      let failed = 0
      if (Either.isLeft(item)) {
        failed = 1
        lastError = item.left
      }
      if (ring === undefined) {
        errors += failed
      } else {
        // the slot holds the outcome leaving the window (0 while it fills)
        errors += failed - ring[position]
        ring[position] = failed
        position = (position + 1) % ring.length
      }
      const total = window === undefined ? seen : Math.min(seen, window)
      const rate = errors / total
      if (seen < minSamples || !(rate > maxRate)) return undefined
      const [shownRate, shownThreshold] = formatRates(rate, maxRate)
      const common = {
        code: "error-rate",
        lastError,
        ok: total - errors,
        errors,
        total,
        threshold: maxRate
      } as const
      return window === undefined
        ? new BreakInfo<E>({
          ...common,
          mode: "cumulative",
          reason: `error rate ${shownRate} exceeded ${shownThreshold} after ${errors} of ${total} items failed`
        })
        : new BreakInfo<E>({
          ...common,
          mode: "window",
          window,
          reason: `error rate ${shownRate} exceeded ${shownThreshold} with ${errors} of the last ${total} items ` +
            `failed (${seen} items seen)`
        })
    }
  }
}

const breakOnErrorRateImpl = <A, E, E2, R>(
  self: Stream.Stream<Either.Either<A, E>, E2, R>,
  options: RateOptions
): Stream.Stream<Either.Either<A, E | BreakInfo<E>>, E2, R> =>
  Stream.suspend(() => {
    type Out = Chunk.Chunk<Either.Either<A, E | BreakInfo<E>>>
    // the upstream runs in a scope of its own, so it can be closed before
    // the BreakInfo is emitted; the ensuringWith below closes it on every
    // other exit path (failure, early stop, interruption)
    let scope: Scope.CloseableScope | undefined
    const closeUpstream = (exit: Exit.Exit<unknown, unknown>): Effect.Effect<void> =>
      Effect.uninterruptible(Effect.suspend(() => {
        const open = scope
        scope = undefined
        return open === undefined ? Effect.void : Scope.close(open, exit)
      }))
    const pulls = Effect.flatMap(Scope.make(), (s) => {
      scope = s
      return Scope.extend(Stream.toPull(self), s)
    })
    return Stream.ensuringWith(
      Stream.unwrap(Effect.map(pulls, (upstream) => {
        const tally = makeTally<E>(options)
        // set when an item tripped the breaker: emitted on the next pull
        let pending: BreakInfo<E> | undefined
        let finished = false
        const end: Effect.Effect<never, Option.Option<E2>> = Effect.fail(Option.none())
        const pull: Effect.Effect<Out, Option.Option<E2>, R> = Effect.suspend(() => {
          if (finished) return end
          if (pending !== undefined) {
            const info = pending
            pending = undefined
            finished = true
            // the upstream is never pulled again: release it, then report
            return Effect.as(closeUpstream(Exit.void), Chunk.of(Either.left(info)))
          }
          return Effect.matchCauseEffect(upstream, {
            onFailure: (cause) => {
              const failure = Cause.flipCauseOption(cause)
              finished = true
              // the upstream ended (None) or failed: release it before the
              // consumer sees the end or the failure, which goes on unchanged
              return Option.isNone(failure)
                ? Effect.zipRight(closeUpstream(Exit.void), end)
                : Effect.zipRight(closeUpstream(Exit.failCause(failure.value)), Effect.failCause(cause))
            },
            onSuccess: (chunk): Effect.Effect<Out> => {
              // element by element, so the stream stops right after the
              // tripping item even in the middle of a chunk
              let index = 0
              for (const item of chunk) {
                const info = tally.record(item)
                if (info !== undefined) {
                  pending = info
                  return Effect.succeed(
                    index === chunk.length - 1
                      ? chunk
                      // a copy, not Chunk.take: in effect 3.22 a sliced chunk can lose
                      // its elements when concatenated (Effect-TS/effect#7616)
                      : Chunk.unsafeFromArray(Chunk.toReadonlyArray(chunk).slice(0, index + 1))
                  )
                }
                index++
              }
              return Effect.succeed(chunk)
            }
          })
        })
        return Stream.repeatEffectChunkOption(pull)
      })),
      closeUpstream
    )
  })

/**
 * Cut a stream of outcomes when too many of them are errors (`Left`).
 *
 * Items pass through unchanged, in order. After each item, once at least
 * `minSamples` items were seen, the error rate — `errors / total`, over all
 * items so far or over the last `window` items — is compared with
 * `maxRate`: if it is strictly greater, that item is still emitted, the
 * upstream is released, and the stream ends with exactly one
 * `Either.left(BreakInfo)`.
 *
 * - After the trip the upstream is never pulled again: items are examined
 *   one by one, so the output stops right after the tripping item even when
 *   it arrives in the middle of a chunk.
 * - The upstream's finalizers have all run, once, before the `BreakInfo` is
 *   emitted, and on every other way the run ends (exhaustion, failure, early
 *   stop downstream, interruption) before the stream's end is observed.
 * - Memory is constant: counters, plus a ring of `window` outcomes in
 *   window mode.
 * - An upstream that ends without tripping the breaker is passed through
 *   unchanged; an upstream failure propagates unchanged, with no
 *   `BreakInfo`.
 *
 * Throws a `RangeError` when called with invalid options (`maxRate` outside
 * `[0, 1]`, `minSamples` or `window` not a positive integer).
 *
 * @example
 * ```ts
 * import * as Either from "effect/Either"
 * import * as Stream from "effect/Stream"
 * import { CircuitBreaker } from "ragpipe"
 *
 * const outcomes = Stream.make(Either.right(1), Either.left("bad"), Either.left("bad"), Either.right(4))
 * // the rate is 1/2 after the second item (not above 0.5) and 2/3 after the
 * // third: Right(1), Left("bad"), Left("bad"), Left(BreakInfo); Right(4) is never read
 * const cut = outcomes.pipe(CircuitBreaker.breakOnErrorRate({ maxRate: 0.5, minSamples: 2 }))
 * ```
 *
 * @since 0.1.0
 * @category combinators
 */
export const breakOnErrorRate: {
  (options: RateOptions): <A, E, E2, R>(
    self: Stream.Stream<Either.Either<A, E>, E2, R>
  ) => Stream.Stream<Either.Either<A, E | BreakInfo<E>>, E2, R>
  <A, E, E2, R>(
    self: Stream.Stream<Either.Either<A, E>, E2, R>,
    options: RateOptions
  ): Stream.Stream<Either.Either<A, E | BreakInfo<E>>, E2, R>
} = dual(2, <A, E, E2, R>(
  self: Stream.Stream<Either.Either<A, E>, E2, R>,
  options: RateOptions
): Stream.Stream<Either.Either<A, E | BreakInfo<E>>, E2, R> => {
  validate(options)
  return breakOnErrorRateImpl(self, options)
})

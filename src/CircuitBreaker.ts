/**
 * A circuit breaker for Effect 3. It watches the outcomes of the calls made
 * through it and, when a trip policy says the dependency is failing, stops
 * calling it for a while (open), then lets a few probe calls through
 * (half-open) to decide whether to resume (closed) or wait longer (open
 * again, with the next delay of the open-duration `Schedule`).
 *
 * All timing goes through `Clock`, `Schedule` and the fiber runtime, so every
 * behaviour can be driven with `TestClock`. Nothing is forked in the
 * background: an open breaker turns half-open lazily, on the first call at or
 * after its `retryAt`.
 *
 * Every permit a half-open probe takes is returned on every exit path —
 * success, failure, defect and interruption — so the breaker can never be left
 * half-open with no permit free and no probe running.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as ScheduleIntervals from "effect/ScheduleIntervals"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SynchronizedRef from "effect/SynchronizedRef"

/**
 * The stream breaker: `breakOnErrorRate` passes a stream of `Either` items
 * through and, once the error rate crosses a limit, releases the upstream and
 * ends the stream with one `Left(BreakInfo)`. It lives in
 * `internal/streamBreaker.ts`; this module is its public home.
 *
 * @since 0.1.0
 * @category stream
 */
export {
  BreakInfo,
  type BreakInfoFields,
  type BreakInfoJson,
  breakInfoJson,
  breakOnErrorRate,
  isBreakInfo,
  type RateOptions
} from "./internal/streamBreaker.js"

// ---------------------------------------------------------------------------
// models
// ---------------------------------------------------------------------------

/**
 * Where a breaker is:
 *
 * - `closed`: calls run and their outcomes are recorded;
 * - `open`: calls fail at once with {@link BreakerOpen} until `retryAt`;
 * - `half-open`: a limited number of probe calls run to decide what is next;
 * - `forced-open`: an operator opened it ({@link CircuitBreaker.forceOpen});
 *   it stays open until {@link CircuitBreaker.reset};
 * - `disabled`: an operator disabled it; every call passes, nothing is
 *   recorded, until {@link CircuitBreaker.reset}.
 *
 * @since 0.1.0
 * @category models
 */
export type State = "closed" | "open" | "half-open" | "forced-open" | "disabled"

/**
 * One transition, published on {@link CircuitBreaker.changes}. `at` is epoch
 * millis from `Clock`.
 *
 * @since 0.1.0
 * @category models
 */
export interface StateChange {
  readonly breaker: string
  readonly from: State
  readonly to: State
  readonly at: number
}

/**
 * A call was refused because the breaker is open, forced open, or half-open
 * with every probe permit taken. Match on `reason`; honour `retryAt` (epoch
 * millis from `Clock`) before calling again:
 *
 * - `open`: when the breaker lets the next call through as a probe;
 * - `half-open-full`: when the earliest running probe reaches its
 *   `probeDeadline` (by then it has been decided), or, without a deadline,
 *   one more of the last open durations from the rejection;
 * - `forced-open`: absent, since only `reset` ends it.
 *
 * @since 0.1.0
 * @category errors
 */
export class BreakerOpen extends Schema.TaggedError<BreakerOpen>()("BreakerOpen", {
  reason: Schema.Literal("open", "half-open-full", "forced-open"),
  breaker: Schema.String,
  /** epoch millis from `Clock` at which a call may be tried again (absent only for `forced-open`) */
  retryAt: Schema.optional(Schema.Number),
  message: Schema.String
}) {}

// ---------------------------------------------------------------------------
// trip policies
// ---------------------------------------------------------------------------

/**
 * Trip after `threshold` failures in a row; a success resets the count.
 *
 * @since 0.1.0
 * @category policies
 */
export interface ConsecutiveFailures {
  readonly _tag: "ConsecutiveFailures"
  readonly threshold: number
}

/**
 * Trip when, over the last `window` call outcomes, `failures / calls >= rate`
 * and at least `minimumCalls` outcomes have been recorded.
 *
 * @since 0.1.0
 * @category policies
 */
export interface FailureRateCount {
  readonly _tag: "FailureRateCount"
  readonly window: number
  readonly minimumCalls: number
  readonly rate: number
}

/**
 * Trip when, over the last `window` of time (split into `buckets` slices by
 * `Clock`; a whole slice expires at once), `failures / calls >= rate` and at
 * least `minimumThroughput` calls have been recorded.
 *
 * @since 0.1.0
 * @category policies
 */
export interface FailureRateTime {
  readonly _tag: "FailureRateTime"
  readonly window: Duration.Duration
  readonly buckets: number
  readonly minimumThroughput: number
  readonly rate: number
}

/**
 * When a closed breaker opens.
 *
 * @since 0.1.0
 * @category policies
 */
export type Policy = ConsecutiveFailures | FailureRateCount | FailureRateTime

/**
 * Trip after `threshold` consecutive failures.
 *
 * @since 0.1.0
 * @category policies
 */
export const consecutiveFailures = (threshold: number): Policy => ({ _tag: "ConsecutiveFailures", threshold })

/**
 * Trip on the failure rate of the last `window` calls, once `minimumCalls`
 * were recorded (default: `window`).
 *
 * @since 0.1.0
 * @category policies
 */
export const failureRateCount = (options: {
  readonly window: number
  readonly minimumCalls?: number
  readonly rate: number
}): Policy => ({
  _tag: "FailureRateCount",
  window: options.window,
  minimumCalls: options.minimumCalls ?? options.window,
  rate: options.rate
})

/**
 * Trip on the failure rate of the calls made in the last `window` of time,
 * kept in `buckets` slices (default 10), once `minimumThroughput` calls were
 * recorded (default 1).
 *
 * @since 0.1.0
 * @category policies
 */
export const failureRateTime = (options: {
  readonly window: Duration.DurationInput
  readonly buckets?: number
  readonly minimumThroughput?: number
  readonly rate: number
}): Policy => ({
  _tag: "FailureRateTime",
  window: Duration.decode(options.window),
  buckets: options.buckets ?? 10,
  minimumThroughput: options.minimumThroughput ?? 1,
  rate: options.rate
})

// ---------------------------------------------------------------------------
// options, service, snapshot
// ---------------------------------------------------------------------------

/**
 * How a breaker behaves. Only `policy` is required.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** used in errors, metrics (`breaker` tag) and state changes (default "circuit-breaker") */
  readonly name?: string
  /** when a closed breaker opens */
  readonly policy: Policy
  /**
   * How long each opening lasts. Each consecutive opening steps the schedule
   * once (its input is the opening's ordinal, 1 for the first) and uses the
   * delay it decides; closing (or `reset`) starts it over. When the schedule
   * ends, its last delay is reused (1 s if it never gave one). Only the delay
   * is used, not the output. Default: exponential from 1 s, capped at 60 s.
   *
   * The schedule is stepped directly (`schedule.step(now, ...)` with `now`
   * from `Clock`, its state kept with the breaker's) rather than through
   * `Schedule.driver`, whose `next` sleeps out the delay: jittered and
   * custom schedules work, and nothing sleeps.
   */
  readonly openDuration?: Schedule.Schedule<unknown, number>
  /** how many probes run in half-open, and must all succeed to close (default 1) */
  readonly halfOpenPermits?: number
  /**
   * `false` (default): calls beyond the permits during half-open fail at once
   * with `BreakerOpen` "half-open-full". `true`: they wait until the probes
   * decide (or a permit is returned), then run or fail with `BreakerOpen`.
   * Calls while open always fail at once.
   */
  readonly waitForProbes?: boolean
  /** a probe still running after this is interrupted and counts as a failure */
  readonly probeDeadline?: Duration.DurationInput
  /** a successful call slower than this counts as a failure (its value is still returned) */
  readonly slowCallThreshold?: Duration.DurationInput
  /**
   * Which typed errors count against the breaker (default: all). An error it
   * rejects still propagates to the caller but counts as a success: the
   * dependency answered. Defects always count as failures.
   */
  readonly isFailure?: (error: unknown) => boolean
}

/**
 * Outcome counts since the breaker was made or last reset.
 *
 * @since 0.1.0
 * @category models
 */
export interface Totals {
  /** calls the breaker let through (closed calls and probes) */
  readonly calls: number
  readonly successes: number
  readonly failures: number
  /** calls refused with `BreakerOpen` */
  readonly rejections: number
  /** times the breaker opened (not counting `forceOpen`) */
  readonly openings: number
}

/**
 * A point-in-time view of a breaker.
 *
 * @since 0.1.0
 * @category models
 */
export interface Snapshot {
  readonly name: string
  readonly state: State
  /**
   * The outcomes the policy currently looks at: the last N calls, the calls
   * in the live time buckets, or (consecutive-failures policy) the calls
   * since the breaker last closed.
   */
  readonly window: { readonly calls: number; readonly failures: number }
  readonly consecutiveFailures: number
  /** consecutive openings since the breaker last closed: how far the open-duration schedule has stepped */
  readonly openings: number
  /** when an open breaker lets the next call through as a probe */
  readonly retryAt: Option.Option<number>
  readonly halfOpen: {
    readonly permits: number
    /** probes running now */
    readonly inFlight: number
    /** probes of this half-open period that succeeded */
    readonly succeeded: number
  }
  readonly totals: Totals
}

/**
 * A circuit breaker.
 *
 * @since 0.1.0
 * @category models
 */
export interface CircuitBreaker {
  readonly name: string
  /** Run `effect` through the breaker, or fail with `BreakerOpen` without running it. */
  readonly withBreaker: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | BreakerOpen, R>
  readonly state: Effect.Effect<State>
  readonly snapshot: Effect.Effect<Snapshot>
  /** Every transition from the moment the stream is run on, for every subscriber. */
  readonly changes: Stream.Stream<StateChange>
  /** Open until `reset`, rejecting every call with reason "forced-open". */
  readonly forceOpen: Effect.Effect<void>
  /** Let every call pass and record nothing, until `reset`. */
  readonly disable: Effect.Effect<void>
  /** Back to closed with every counter, window and the open-duration schedule cleared. */
  readonly reset: Effect.Effect<void>
}

/**
 * The breaker as a service, for programs that share one.
 *
 * @since 0.1.0
 * @category tags
 */
export class Breaker extends Context.Tag("ragpipe/CircuitBreaker")<Breaker, CircuitBreaker>() {}

// ---------------------------------------------------------------------------
// metrics
// ---------------------------------------------------------------------------

/**
 * Calls a breaker let through, tagged `breaker`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const callsTotal: Metric.Metric.Counter<number> = Metric.counter("ragpipe_breaker_calls_total", {
  description: "calls a circuit breaker let through",
  incremental: true
})

/**
 * Calls that counted as failures (errors, defects, slow calls, late probes),
 * tagged `breaker`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const failuresTotal: Metric.Metric.Counter<number> = Metric.counter("ragpipe_breaker_failures_total", {
  description: "calls that counted as failures against a circuit breaker",
  incremental: true
})

/**
 * Calls refused with `BreakerOpen`, tagged `breaker`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const rejectionsTotal: Metric.Metric.Counter<number> = Metric.counter("ragpipe_breaker_rejections_total", {
  description: "calls a circuit breaker refused",
  incremental: true
})

/**
 * Transitions, tagged `breaker` and `to` (the new state).
 *
 * @since 0.1.0
 * @category metrics
 */
export const stateChangesTotal: Metric.Metric.Counter<number> = Metric.counter(
  "ragpipe_breaker_state_changes_total",
  { description: "circuit breaker state transitions", incremental: true }
)

/**
 * The current state as a number (see {@link stateCode}), tagged `breaker`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const stateGauge: Metric.Metric.Gauge<number> = Metric.gauge("ragpipe_breaker_state", {
  description: "circuit breaker state: 0 closed, 1 half-open, 2 open, 3 forced-open, 4 disabled"
})

/**
 * The value {@link stateGauge} reports for each state.
 *
 * @since 0.1.0
 * @category metrics
 */
export const stateCode: Readonly<Record<State, number>> = {
  closed: 0,
  "half-open": 1,
  open: 2,
  "forced-open": 3,
  disabled: 4
}

// ---------------------------------------------------------------------------
// internals
// ---------------------------------------------------------------------------

interface Bucket {
  readonly key: number
  readonly calls: number
  readonly failures: number
}

type Window =
  | { readonly _tag: "Consecutive"; readonly calls: number; readonly failures: number }
  /** `true` marks a failure; oldest first */
  | { readonly _tag: "Count"; readonly outcomes: ReadonlyArray<boolean> }
  | { readonly _tag: "Time"; readonly buckets: ReadonlyArray<Bucket> }

interface Core {
  readonly state: State
  /** bumped on every transition: outcomes of calls admitted in an earlier epoch are not applied */
  readonly epoch: number
  readonly window: Window
  readonly consecutiveFailures: number
  readonly openings: number
  readonly scheduleState: unknown
  readonly lastDelay: number
  readonly retryAt: number | undefined
  /** why the breaker is open, for `BreakerOpen.message` */
  readonly openReason: string
  /** the last failure recorded, in words ("" before any), for `BreakerOpen.message` */
  readonly lastFailure: string
  readonly inFlight: number
  /** `Clock` millis at which each running probe started (one entry per probe in flight) */
  readonly probeStarts: ReadonlyArray<number>
  readonly succeeded: number
  /** completed (and replaced) on every transition and returned permit, waking `waitForProbes` callers */
  readonly signal: Deferred.Deferred<void>
  readonly totals: Totals
}

type Outcome =
  | { readonly _tag: "Success" }
  /** `what`: the failure in words, for `BreakerOpen.message` */
  | { readonly _tag: "Failure"; readonly deadline: boolean; readonly what: string }
  | { readonly _tag: "Interrupted" }

interface Ticket {
  readonly epoch: number
  readonly probe: boolean
  readonly start: number
}

type Decision =
  | { readonly _tag: "Pass" }
  | { readonly _tag: "Reject"; readonly error: BreakerOpen }
  | { readonly _tag: "Wait"; readonly signal: Deferred.Deferred<void> }
  | { readonly _tag: "Run"; readonly ticket: Ticket }

/** A failure in words: its message (the first 300 characters), or the value itself. */
const describe = (failure: unknown): string => {
  const text = typeof failure === "object" && failure !== null && "message" in failure &&
      typeof failure.message === "string"
    ? failure.message
    : String(failure)
  return text.length > 300 ? `${text.slice(0, 299)}…` : text
}

/** `values` without one occurrence of `value` */
const withoutOne = (values: ReadonlyArray<number>, value: number): ReadonlyArray<number> => {
  const at = values.indexOf(value)
  return at < 0 ? values : [...values.slice(0, at), ...values.slice(at + 1)]
}

const emptyTotals: Totals = { calls: 0, successes: 0, failures: 0, rejections: 0, openings: 0 }

const emptyWindow = (policy: Policy): Window => {
  switch (policy._tag) {
    case "ConsecutiveFailures":
      return { _tag: "Consecutive", calls: 0, failures: 0 }
    case "FailureRateCount":
      return { _tag: "Count", outcomes: [] }
    case "FailureRateTime":
      return { _tag: "Time", buckets: [] }
  }
}

const bucketMillis = (policy: FailureRateTime): number =>
  Math.max(1, Duration.toMillis(policy.window) / policy.buckets)

/** drop the buckets that have slid out of the window at `now` */
const liveBuckets = (policy: FailureRateTime, buckets: ReadonlyArray<Bucket>, now: number): ReadonlyArray<Bucket> => {
  const current = Math.floor(now / bucketMillis(policy))
  return buckets.filter((b) => b.key > current - policy.buckets)
}

const windowCounts = (policy: Policy, window: Window, now: number): { calls: number; failures: number } => {
  switch (window._tag) {
    case "Consecutive":
      return { calls: window.calls, failures: window.failures }
    case "Count":
      return { calls: window.outcomes.length, failures: window.outcomes.filter((f) => f).length }
    case "Time": {
      const live = policy._tag === "FailureRateTime" ? liveBuckets(policy, window.buckets, now) : window.buckets
      let calls = 0
      let failures = 0
      for (const b of live) {
        calls += b.calls
        failures += b.failures
      }
      return { calls, failures }
    }
  }
}

const recordInWindow = (policy: Policy, window: Window, failed: boolean, now: number): Window => {
  switch (window._tag) {
    case "Consecutive":
      return { _tag: "Consecutive", calls: window.calls + 1, failures: window.failures + (failed ? 1 : 0) }
    case "Count": {
      const size = policy._tag === "FailureRateCount" ? policy.window : Infinity
      const outcomes = [...window.outcomes, failed]
      return { _tag: "Count", outcomes: outcomes.length > size ? outcomes.slice(outcomes.length - size) : outcomes }
    }
    case "Time": {
      if (policy._tag !== "FailureRateTime") return window
      const key = Math.floor(now / bucketMillis(policy))
      const live = liveBuckets(policy, window.buckets, now)
      const last = live[live.length - 1]
      const add = failed ? 1 : 0
      return {
        _tag: "Time",
        buckets: last !== undefined && last.key === key
          ? [...live.slice(0, -1), { key, calls: last.calls + 1, failures: last.failures + add }]
          : [...live, { key, calls: 1, failures: add }]
      }
    }
  }
}

/** the reason to open, if the policy trips on this core's window */
const tripReason = (policy: Policy, core: Core, now: number): string | undefined => {
  switch (policy._tag) {
    case "ConsecutiveFailures":
      return core.consecutiveFailures >= policy.threshold
        ? `after ${core.consecutiveFailures} consecutive failures`
        : undefined
    case "FailureRateCount": {
      const { calls, failures } = windowCounts(policy, core.window, now)
      return calls >= policy.minimumCalls && calls > 0 && failures / calls >= policy.rate
        ? `after ${failures} of the last ${calls} calls failed`
        : undefined
    }
    case "FailureRateTime": {
      const { calls, failures } = windowCounts(policy, core.window, now)
      return calls >= policy.minimumThroughput && calls > 0 && failures / calls >= policy.rate
        ? `after ${failures} of ${calls} calls in the last ${Duration.format(policy.window)} failed`
        : undefined
    }
  }
}

/** an option a breaker refuses: which one (as named by `configFromEnv`'s variables) and why */
interface Problem {
  readonly variable:
    | "HALF_OPEN_PERMITS"
    | "THRESHOLD"
    | "WINDOW_CALLS"
    | "WINDOW"
    | "MINIMUM_CALLS"
    | "BUCKETS"
    | "RATE"
  readonly message: string
}

const invalid = (options: Options, permits: number): Problem | undefined => {
  const p = options.policy
  const rateOk = (rate: number) => rate > 0 && rate <= 1
  const problem = (variable: Problem["variable"], message: string): Problem => ({ variable, message })
  if (!Number.isInteger(permits) || permits < 1) {
    return problem("HALF_OPEN_PERMITS", "halfOpenPermits must be a positive integer")
  }
  switch (p._tag) {
    case "ConsecutiveFailures":
      return Number.isInteger(p.threshold) && p.threshold >= 1
        ? undefined
        : problem("THRESHOLD", "consecutiveFailures threshold must be a positive integer")
    case "FailureRateCount":
      if (!Number.isInteger(p.window) || p.window < 1) {
        return problem("WINDOW_CALLS", "failureRateCount window must be a positive integer")
      }
      if (!Number.isInteger(p.minimumCalls) || p.minimumCalls < 1 || p.minimumCalls > p.window) {
        return problem(
          "MINIMUM_CALLS",
          "failureRateCount minimumCalls must be an integer between 1 and the window size"
        )
      }
      return rateOk(p.rate) ? undefined : problem("RATE", "failureRateCount rate must be in (0, 1]")
    case "FailureRateTime":
      if (!(Duration.toMillis(p.window) > 0) || !Duration.isFinite(p.window)) {
        return problem("WINDOW", "failureRateTime window must be a positive, finite duration")
      }
      if (!Number.isInteger(p.buckets) || p.buckets < 1) {
        return problem("BUCKETS", "failureRateTime buckets must be a positive integer")
      }
      if (!Number.isInteger(p.minimumThroughput) || p.minimumThroughput < 1) {
        return problem("MINIMUM_CALLS", "failureRateTime minimumThroughput must be a positive integer")
      }
      return rateOk(p.rate) ? undefined : problem("RATE", "failureRateTime rate must be in (0, 1]")
  }
}

/**
 * The default open duration: 1 s, 2 s, 4 s, ... capped at 60 s.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaultOpenDuration: Schedule.Schedule<Duration.Duration> = Schedule.exponential("1 second").pipe(
  Schedule.modifyDelay((_, delay) => Duration.min(delay, Duration.seconds(60)))
)

// ---------------------------------------------------------------------------
// constructors
// ---------------------------------------------------------------------------

/**
 * Make a breaker. The scope owns the `PubSub` behind `changes`: closing it
 * ends every `changes` stream. Invalid options (a non-positive threshold, a
 * rate outside (0, 1], ...) are defects.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<CircuitBreaker, never, Scope.Scope> =>
  Effect.gen(function*() {
    const name = options.name ?? "circuit-breaker"
    const policy = options.policy
    const permits = options.halfOpenPermits ?? 1
    const problem = invalid(options, permits)
    if (problem !== undefined) {
      return yield* Effect.dieMessage(`circuit breaker "${name}": ${problem.message}`)
    }
    const schedule = options.openDuration ?? defaultOpenDuration
    const waitForProbes = options.waitForProbes ?? false
    const probeDeadline = options.probeDeadline === undefined ? undefined : Duration.decode(options.probeDeadline)
    const probeDeadlineMillis = probeDeadline === undefined ? undefined : Duration.toMillis(probeDeadline)
    const slowMillis = options.slowCallThreshold === undefined
      ? undefined
      : Duration.toMillis(Duration.decode(options.slowCallThreshold))
    const isFailure = options.isFailure ?? (() => true)

    const calls = Metric.tagged(callsTotal, "breaker", name)
    const failures = Metric.tagged(failuresTotal, "breaker", name)
    const rejections = Metric.tagged(rejectionsTotal, "breaker", name)
    const gauge = Metric.tagged(stateGauge, "breaker", name)
    const changesByState = {} as Record<State, Metric.Metric.Counter<number>>
    for (const s of Object.keys(stateCode) as Array<State>) {
      changesByState[s] = stateChangesTotal.pipe(Metric.tagged("breaker", name), Metric.tagged("to", s))
    }

    const pubsub = yield* Effect.acquireRelease(PubSub.unbounded<StateChange>(), PubSub.shutdown)

    const fresh = (signal: Deferred.Deferred<void>): Core => ({
      state: "closed",
      epoch: 0,
      window: emptyWindow(policy),
      consecutiveFailures: 0,
      openings: 0,
      scheduleState: schedule.initial,
      lastDelay: 1000,
      retryAt: undefined,
      openReason: "",
      lastFailure: "",
      inFlight: 0,
      probeStarts: [],
      succeeded: 0,
      signal,
      totals: emptyTotals
    })
    const ref = yield* SynchronizedRef.make(fresh(yield* Deferred.make<void>()))
    yield* Metric.set(gauge, stateCode.closed)

    /** run `f` atomically against the current core; never interrupted half-way */
    const transact = <A>(f: (core: Core, now: number) => Effect.Effect<readonly [A, Core]>): Effect.Effect<A> =>
      Effect.uninterruptible(
        SynchronizedRef.modifyEffect(ref, (core) => Effect.flatMap(Clock.currentTimeMillis, (now) => f(core, now)))
      )

    /** replace the wake-up signal, waking every waiting caller */
    const wake = (core: Core): Effect.Effect<Core> =>
      Effect.flatMap(Deferred.make<void>(), (signal) =>
        Effect.as(Deferred.succeed(core.signal, undefined), { ...core, signal }))

    /** move to `to`, publishing the change; `patch` applies the new state's fields */
    const transition = (core: Core, to: State, now: number, patch: Partial<Core>): Effect.Effect<Core> =>
      Effect.gen(function*() {
        const next = yield* wake({
          ...core,
          ...patch,
          state: to,
          epoch: core.epoch + 1,
          inFlight: 0,
          probeStarts: [],
          succeeded: 0
        })
        if (core.state !== to) {
          yield* PubSub.publish(pubsub, { breaker: name, from: core.state, to, at: now })
          yield* Metric.increment(changesByState[to])
          yield* Metric.set(gauge, stateCode[to])
        }
        return next
      })

    /** open with the next delay of the open-duration schedule */
    const open = (core: Core, now: number, reason: string): Effect.Effect<Core> =>
      Effect.gen(function*() {
        const ordinal = core.openings + 1
        const [scheduleState, , decision] = yield* schedule.step(now, ordinal, core.scheduleState)
        const delay = ScheduleDecision.isDone(decision)
          ? core.lastDelay
          : Math.max(0, ScheduleIntervals.start(decision.intervals) - now)
        return yield* transition(core, "open", now, {
          scheduleState,
          lastDelay: delay,
          openings: ordinal,
          retryAt: now + delay,
          openReason: reason,
          window: emptyWindow(policy),
          totals: { ...core.totals, openings: core.totals.openings + 1 }
        })
      })

    const close = (core: Core, now: number): Effect.Effect<Core> =>
      transition(core, "closed", now, {
        window: emptyWindow(policy),
        consecutiveFailures: 0,
        openings: 0,
        scheduleState: schedule.initial,
        retryAt: undefined
      })

    /**
     * When a call refused during half-open may be tried again: when the
     * earliest running probe reaches its deadline (it is decided by then at
     * the latest), or, without a `probeDeadline`, after one more of the last
     * open durations.
     */
    const halfOpenRetryAt = (core: Core, now: number): number =>
      probeDeadlineMillis !== undefined && core.probeStarts.length > 0
        ? Math.max(now, Math.min(...core.probeStarts) + probeDeadlineMillis)
        : now + core.lastDelay

    const rejection = (core: Core, now: number): BreakerOpen => {
      switch (core.state) {
        case "forced-open":
          return new BreakerOpen({
            reason: "forced-open",
            breaker: name,
            message: `circuit breaker "${name}" is forced open; reset it to allow calls`
          })
        case "half-open": {
          const retryAt = halfOpenRetryAt(core, now)
          return new BreakerOpen({
            reason: "half-open-full",
            breaker: name,
            retryAt,
            message: `circuit breaker "${name}" is half-open and its ${permits} probe permit(s) are taken; ` +
              `retry after ${new Date(retryAt).toISOString()}`
          })
        }
        default: {
          const retryAt = core.retryAt ?? 0
          return new BreakerOpen({
            reason: "open",
            breaker: name,
            retryAt,
            message: `circuit breaker "${name}" is open ${core.openReason}` +
              (core.lastFailure === "" ? "" : ` (the last: ${core.lastFailure})`) +
              `; retry after ${new Date(retryAt).toISOString()}`
          })
        }
      }
    }

    const reject = (core: Core, now: number): Effect.Effect<readonly [Decision, Core]> =>
      Effect.as(Metric.increment(rejections), [
        { _tag: "Reject", error: rejection(core, now) },
        { ...core, totals: { ...core.totals, rejections: core.totals.rejections + 1 } }
      ] as const)

    const admit = (core: Core, now: number, probe: boolean): Effect.Effect<readonly [Decision, Core]> =>
      Effect.as(Metric.increment(calls), [
        { _tag: "Run", ticket: { epoch: core.epoch, probe, start: now } },
        {
          ...core,
          inFlight: probe ? core.inFlight + 1 : core.inFlight,
          probeStarts: probe ? [...core.probeStarts, now] : core.probeStarts,
          totals: { ...core.totals, calls: core.totals.calls + 1 }
        }
      ] as const)

    const decide = (core: Core, now: number): Effect.Effect<readonly [Decision, Core]> => {
      switch (core.state) {
        case "disabled":
          return Effect.succeed([{ _tag: "Pass" }, core] as const)
        case "forced-open":
          return reject(core, now)
        case "closed":
          return admit(core, now, false)
        case "open":
          return now >= (core.retryAt ?? 0)
            ? Effect.flatMap(transition(core, "half-open", now, {}), (half) => decide(half, now))
            : reject(core, now)
        case "half-open":
          if (core.inFlight + core.succeeded < permits) return admit(core, now, true)
          return waitForProbes
            ? Effect.succeed([{ _tag: "Wait", signal: core.signal }, core] as const)
            : reject(core, now)
      }
    }

    /** apply one outcome; returns the core as it is afterwards */
    const record = (ticket: Ticket, outcome: Outcome): Effect.Effect<Core> =>
      transact((before, now) =>
        Effect.gen(function*() {
          let core = before
          if (outcome._tag === "Failure") {
            yield* Metric.increment(failures)
            core = {
              ...core,
              lastFailure: outcome.what,
              totals: { ...core.totals, failures: core.totals.failures + 1 }
            }
          } else if (outcome._tag === "Success") {
            core = { ...core, totals: { ...core.totals, successes: core.totals.successes + 1 } }
          }
          // a call admitted before the last transition: its permit and its outcome belong to a period that is over
          if (ticket.epoch !== core.epoch || outcome._tag === "Interrupted" && !ticket.probe) {
            return [core, core] as const
          }
          if (ticket.probe) {
            core = { ...core, inFlight: core.inFlight - 1, probeStarts: withoutOne(core.probeStarts, ticket.start) }
            switch (outcome._tag) {
              case "Interrupted":
                // the permit goes back unused: wake a waiting caller to take it
                core = yield* wake(core)
                break
              case "Success":
                core = { ...core, succeeded: core.succeeded + 1, consecutiveFailures: 0 }
                if (core.succeeded >= permits) core = yield* close(core, now)
                break
              case "Failure":
                core = yield* open(
                  { ...core, consecutiveFailures: core.consecutiveFailures + 1 },
                  now,
                  outcome.deadline
                    ? `after a half-open probe ran past its ${Duration.format(probeDeadline ?? Duration.zero)} deadline`
                    : "after a half-open probe failed"
                )
                break
            }
            return [core, core] as const
          }
          const failed = outcome._tag === "Failure"
          core = {
            ...core,
            window: recordInWindow(policy, core.window, failed, now),
            consecutiveFailures: failed ? core.consecutiveFailures + 1 : 0
          }
          const reason = failed || policy._tag !== "ConsecutiveFailures" ? tripReason(policy, core, now) : undefined
          if (reason !== undefined) core = yield* open(core, now, reason)
          return [core, core] as const
        })
      )

    const classify = <A, E>(exit: Exit.Exit<Option.Option<A>, E>, elapsed: number): Outcome => {
      if (Exit.isSuccess(exit)) {
        if (Option.isNone(exit.value)) {
          return { _tag: "Failure", deadline: true, what: "a probe ran past its deadline" }
        }
        return slowMillis !== undefined && elapsed > slowMillis
          ? { _tag: "Failure", deadline: false, what: `a call took ${elapsed} ms, more than ${slowMillis} ms` }
          : { _tag: "Success" }
      }
      const cause = exit.cause
      if (Cause.isDie(cause)) return { _tag: "Failure", deadline: false, what: describe(Cause.squash(cause)) }
      const errors = Chunk.toReadonlyArray(Cause.failures(cause))
      if (errors.length > 0) {
        for (const error of errors) {
          if (isFailure(error)) return { _tag: "Failure", deadline: false, what: describe(error) }
        }
        return { _tag: "Success" }
      }
      return { _tag: "Interrupted" }
    }

    /**
     * Run an admitted call (inside `withBreaker`'s uninterruptible region,
     * `restore` making the call itself interruptible). Its outcome is recorded
     * on every exit path, so a probe's permit always goes back.
     */
    const run = <A, E, R>(
      ticket: Ticket,
      effect: Effect.Effect<A, E, R>,
      restore: <AX, EX, RX>(effect: Effect.Effect<AX, EX, RX>) => Effect.Effect<AX, EX, RX>
    ): Effect.Effect<A, E | BreakerOpen, R> =>
      Effect.gen(function*() {
        const guarded: Effect.Effect<Option.Option<A>, E, R> = ticket.probe && probeDeadline !== undefined
          ? Effect.timeoutOption(effect, probeDeadline)
          : Effect.asSome(effect)
        const exit = yield* Effect.exit(restore(guarded))
        const end = yield* Clock.currentTimeMillis
        const after = yield* record(ticket, classify(exit, end - ticket.start))
        if (Exit.isFailure(exit)) return yield* Effect.failCause(exit.cause)
        if (Option.isSome(exit.value)) return exit.value.value
        // the probe ran past its deadline: its caller gets the rejection it caused
        const full = after.state === "half-open" && after.inFlight + after.succeeded >= permits
        return yield* Effect.fail(
          after.state === "open" || after.state === "forced-open" || full
            ? rejection(after, end)
            // the breaker moved on while the probe ran (reset, disabled, a new half-open period): a call may go now
            : new BreakerOpen({
              reason: "open",
              breaker: name,
              retryAt: end,
              message: `circuit breaker "${name}": the probe ran past its deadline; the breaker is ${after.state} ` +
                "now, so the call may be tried again at once"
            })
        )
      })

    const withBreaker = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | BreakerOpen, R> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(transact(decide), (decision): Effect.Effect<A, E | BreakerOpen, R> => {
          switch (decision._tag) {
            case "Pass":
              return restore(effect)
            case "Reject":
              return Effect.fail(decision.error)
            case "Wait":
              // wait interruptibly, then ask again (with a fresh mask, so the call stays interruptible)
              return restore(Effect.zipRight(Deferred.await(decision.signal), Effect.suspend(() => withBreaker(effect))))
            case "Run":
              return run(decision.ticket, effect, restore)
          }
        })
      )

    const snapshot = Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.map(SynchronizedRef.get(ref), (core): Snapshot => ({
        name,
        state: core.state,
        window: windowCounts(policy, core.window, now),
        consecutiveFailures: core.consecutiveFailures,
        openings: core.openings,
        retryAt: core.state === "open" ? Option.fromNullable(core.retryAt) : Option.none(),
        halfOpen: { permits, inFlight: core.inFlight, succeeded: core.succeeded },
        totals: core.totals
      })))

    const force = (to: "forced-open" | "disabled") =>
      transact((core, now) =>
        core.state === to
          ? Effect.succeed([undefined, core] as const)
          : Effect.map(transition(core, to, now, { retryAt: undefined }), (next) => [undefined, next] as const)
      )

    const reset = transact((core, now) =>
      Effect.map(
        transition(core, "closed", now, {
          ...fresh(core.signal),
          totals: emptyTotals
        }),
        (next) => [undefined, next] as const
      )
    )

    return {
      name,
      withBreaker,
      state: Effect.map(SynchronizedRef.get(ref), (core) => core.state),
      snapshot,
      changes: Stream.fromPubSub(pubsub),
      forceOpen: force("forced-open"),
      disable: force("disabled"),
      reset
    } satisfies CircuitBreaker
  })

/**
 * A layer providing one {@link Breaker}, released with the layer's scope.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Breaker> => Layer.scoped(Breaker, make(options))

// ---------------------------------------------------------------------------
// configuration and test layers
// ---------------------------------------------------------------------------

/**
 * The prefix of the variables {@link configFromEnv} reads unless told
 * otherwise: `RAGPIPE_CALL_BREAKER` (distinct from the CLI's
 * `RAGPIPE_BREAKER_WINDOW`, which sizes the error-rate stream breaker).
 *
 * @since 0.1.0
 * @category configuration
 */
export const defaultConfigPrefix = "RAGPIPE_CALL_BREAKER"

/**
 * Reads breaker {@link Options} from the environment (or any
 * `ConfigProvider`). With the default prefix `P` = `RAGPIPE_CALL_BREAKER`:
 *
 * | variable                  | meaning                                               | default            |
 * | ------------------------- | ----------------------------------------------------- | ------------------ |
 * | `P_NAME`                  | the breaker's name (errors, metrics, state changes)   | `circuit-breaker`  |
 * | `P_POLICY`                | `consecutive`, `rate-count` or `rate-time`            | `consecutive`      |
 * | `P_THRESHOLD`             | `consecutive`: failures in a row that open it         | 5                  |
 * | `P_RATE`                  | rate policies: failure share in (0, 1] that opens it  | 0.5                |
 * | `P_WINDOW_CALLS`          | `rate-count`: the last N calls looked at              | 20                 |
 * | `P_WINDOW`                | `rate-time`: the span of time looked at               | `1 minute`         |
 * | `P_BUCKETS`               | `rate-time`: slices the window is kept in             | 10                 |
 * | `P_MINIMUM_CALLS`         | rate policies: calls needed before it may open        | `rate-count`: `P_WINDOW_CALLS`; `rate-time`: 1 |
 * | `P_OPEN_DURATION`         | how long the first opening lasts; doubles per opening | `1 second`         |
 * | `P_MAX_OPEN_DURATION`     | the longest opening                                   | `60 seconds`       |
 * | `P_HALF_OPEN_PERMITS`     | probes in half-open, all of which must succeed        | 1                  |
 * | `P_WAIT_FOR_PROBES`       | `true`: calls in half-open wait for the probes        | `false`            |
 * | `P_PROBE_DEADLINE`        | a probe running longer counts as a failure            | none               |
 * | `P_SLOW_CALL_THRESHOLD`   | a success slower than this counts as a failure       | none               |
 *
 * Durations are written as Effect reads them: `500 millis`, `30 seconds`,
 * `2 minutes`. Values the breaker would refuse (a rate outside (0, 1], a
 * zero threshold, ...) are configuration errors naming the variable.
 * `isFailure` cannot come from configuration: add it with `Config.map`.
 *
 * @since 0.1.0
 * @category configuration
 */
export const configFromEnv = (prefix: string = defaultConfigPrefix): Config.Config<Options> => {
  const v = (suffix: string) => `${prefix}_${suffix}`
  const optionalDuration = (suffix: string) => Config.option(Config.duration(v(suffix)))
  return Config.all({
    name: Config.withDefault(Config.nonEmptyString(v("NAME")), "circuit-breaker"),
    policy: Config.withDefault(
      Config.literal("consecutive", "rate-count", "rate-time")(v("POLICY")),
      "consecutive" as const
    ),
    threshold: Config.withDefault(Config.integer(v("THRESHOLD")), 5),
    rate: Config.withDefault(Config.number(v("RATE")), 0.5),
    windowCalls: Config.withDefault(Config.integer(v("WINDOW_CALLS")), 20),
    window: Config.withDefault(Config.duration(v("WINDOW")), Duration.minutes(1)),
    buckets: Config.withDefault(Config.integer(v("BUCKETS")), 10),
    minimumCalls: Config.option(Config.integer(v("MINIMUM_CALLS"))),
    openDuration: Config.withDefault(Config.duration(v("OPEN_DURATION")), Duration.seconds(1)),
    maxOpenDuration: Config.withDefault(Config.duration(v("MAX_OPEN_DURATION")), Duration.seconds(60)),
    halfOpenPermits: Config.withDefault(Config.integer(v("HALF_OPEN_PERMITS")), 1),
    waitForProbes: Config.withDefault(Config.boolean(v("WAIT_FOR_PROBES")), false),
    probeDeadline: optionalDuration("PROBE_DEADLINE"),
    slowCallThreshold: optionalDuration("SLOW_CALL_THRESHOLD")
  }).pipe(
    Config.mapOrFail((raw) => {
      const positive = (d: Duration.Duration) => Duration.isFinite(d) && Duration.toMillis(d) > 0
      if (!positive(raw.openDuration)) {
        return Either.left(ConfigError.InvalidData([v("OPEN_DURATION")], "must be a positive, finite duration"))
      }
      if (!positive(raw.maxOpenDuration) || Duration.lessThan(raw.maxOpenDuration, raw.openDuration)) {
        return Either.left(
          ConfigError.InvalidData([v("MAX_OPEN_DURATION")], "must be a finite duration no shorter than OPEN_DURATION")
        )
      }
      const minimum = Option.getOrUndefined(raw.minimumCalls)
      const policy: Policy = raw.policy === "consecutive"
        ? consecutiveFailures(raw.threshold)
        : raw.policy === "rate-count"
        ? failureRateCount({
          window: raw.windowCalls,
          rate: raw.rate,
          ...(minimum === undefined ? {} : { minimumCalls: minimum })
        })
        : failureRateTime({
          window: raw.window,
          buckets: raw.buckets,
          rate: raw.rate,
          ...(minimum === undefined ? {} : { minimumThroughput: minimum })
        })
      const cap = raw.maxOpenDuration
      const options: Options = {
        name: raw.name,
        policy,
        openDuration: Schedule.exponential(raw.openDuration).pipe(
          Schedule.modifyDelay((_, delay) => Duration.min(delay, cap))
        ),
        halfOpenPermits: raw.halfOpenPermits,
        waitForProbes: raw.waitForProbes,
        ...Option.match(raw.probeDeadline, { onNone: () => ({}), onSome: (probeDeadline) => ({ probeDeadline }) }),
        ...Option.match(raw.slowCallThreshold, {
          onNone: () => ({}),
          onSome: (slowCallThreshold) => ({ slowCallThreshold })
        })
      }
      const problem = invalid(options, raw.halfOpenPermits)
      if (problem !== undefined) {
        return Either.left(ConfigError.InvalidData([v(problem.variable)], problem.message))
      }
      return Either.right(options)
    })
  )
}

/**
 * A layer providing one {@link Breaker} whose options come from
 * configuration (default: {@link configFromEnv} with the
 * `RAGPIPE_CALL_BREAKER_*` variables). Use it to let operators tune a
 * breaker without a rebuild; to classify errors, map the config:
 * `layerConfig(Config.map(configFromEnv(), (o) => ({ ...o, isFailure })))`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config<Options> = configFromEnv()
): Layer.Layer<Breaker, ConfigError.ConfigError> => Layer.unwrapEffect(Effect.map(config, layer))

/**
 * Options of {@link layerTest}: any breaker option, plus the state the
 * breaker starts in.
 *
 * @since 0.1.0
 * @category models
 */
export interface TestOptions extends Partial<Options> {
  /** `forced-open` rejects every call from the start, `disabled` lets every call pass (default `closed`) */
  readonly initial?: "closed" | "forced-open" | "disabled"
}

/**
 * A {@link Breaker} for tests. Unless told otherwise it is named
 * `test-breaker`, opens on the first failure and stays open exactly 1 s each
 * time (no growth), so one failing call plus `TestClock.adjust("1 second")`
 * walks it through open and half-open. `initial: "forced-open"` tests how a
 * program copes with a breaker that refuses everything. Read what it saw
 * with {@link snapshot}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerTest = (options: TestOptions = {}): Layer.Layer<Breaker> => {
  const { initial = "closed", ...rest } = options
  return Layer.scoped(
    Breaker,
    Effect.tap(
      make({
        ...rest,
        name: rest.name ?? "test-breaker",
        policy: rest.policy ?? consecutiveFailures(1),
        openDuration: rest.openDuration ?? Schedule.spaced(Duration.seconds(1))
      }),
      (breaker) =>
        initial === "forced-open" ? breaker.forceOpen : initial === "disabled" ? breaker.disable : Effect.void
    )
  )
}

/**
 * Run `effect` through the {@link Breaker} in the context.
 *
 * @since 0.1.0
 * @category accessors
 */
export const withBreaker = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | BreakerOpen, R | Breaker> =>
  Effect.flatMap(Breaker, (breaker) => breaker.withBreaker(effect))

/**
 * The snapshot of the {@link Breaker} in the context: its state, window and
 * totals. Handy in tests to assert on what the breaker saw.
 *
 * @since 0.1.0
 * @category accessors
 */
export const snapshot: Effect.Effect<Snapshot, never, Breaker> = Effect.flatMap(Breaker, (breaker) => breaker.snapshot)

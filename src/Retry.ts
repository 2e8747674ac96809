/**
 * Retrying calls to an embedding provider: backoff schedules (exponential,
 * AWS-style "full" and "decorrelated" jitter), caps, retry counts and time
 * budgets, `Retry-After` support, one classification of errors into
 * retryable and fatal, and a runner that puts a timeout on every attempt.
 *
 * Every schedule here outputs the delay it applies before the next attempt,
 * reads time only from the `Clock` its driver passes in and draws randomness
 * only from Effect's `Random` service, so `TestClock` and a seeded `Random`
 * (`Effect.withRandom(Random.make(seed))`) make them fully deterministic.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { dual } from "effect/Function"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as Interval from "effect/ScheduleInterval"
import * as Intervals from "effect/ScheduleIntervals"
import { EmbedError } from "./Errors.js"

// ---------------------------------------------------------------------------
// internal helpers
// ---------------------------------------------------------------------------

/** the largest delay a schedule here will produce, so no interval becomes Infinity or NaN */
const MAX_DELAY_MILLIS = Number.MAX_SAFE_INTEGER

const clampMillis = (millis: number): number =>
  Number.isNaN(millis) ? 0 : Math.min(MAX_DELAY_MILLIS, Math.max(0, millis))

const toMillis = (input: Duration.DurationInput): number => clampMillis(Duration.toMillis(Duration.decode(input)))

type Step<S> = readonly [S, Duration.Duration, ScheduleDecision.ScheduleDecision]

const stop = <S>(state: S): Step<S> => [state, Duration.zero, ScheduleDecision.done]

const continueAfter = <S>(state: S, now: number, millis: number): Step<S> => {
  const delay = clampMillis(millis)
  return [state, Duration.millis(delay), ScheduleDecision.continueWith(Interval.after(now + delay))]
}

/** the delay, in milliseconds from `now`, that a continuing decision asks for */
const delayOf = (now: number, decision: ScheduleDecision.Continue): number =>
  clampMillis(Intervals.start(decision.intervals) - now)

/** replace the delay of every continuing step; the output becomes the new delay */
const mapDelay = <Out, In, R>(
  self: Schedule.Schedule<Out, In, R>,
  f: (delayMillis: number, input: In, now: number) => number
): Schedule.Schedule<Duration.Duration, In, R> =>
  Schedule.makeWithState(self.initial, (now, input: In, state) =>
    Effect.map(self.step(now, input, state), ([next, , decision]) =>
      ScheduleDecision.isDone(decision) ? stop(next) : continueAfter(next, now, f(delayOf(now, decision), input, now))
    ))

const field = (value: unknown, key: string): unknown =>
  typeof value === "object" && value !== null ? (value as Record<string, unknown>)[key] : undefined

const isBreakerOpen = (error: unknown): boolean => field(error, "_tag") === "BreakerOpen"

// ---------------------------------------------------------------------------
// schedules
// ---------------------------------------------------------------------------

/**
 * Options of the exponential schedules.
 *
 * @since 0.1.0
 * @category models
 */
export interface ExponentialOptions {
  /** the delay before the first retry (before jitter) */
  readonly base: Duration.DurationInput
  /** no delay exceeds this (default: unbounded) */
  readonly cap?: Duration.DurationInput
  /** growth per retry (default 2) */
  readonly factor?: number
}

const exponentialCeiling = (options: ExponentialOptions): (n: number) => number => {
  const base = toMillis(options.base)
  const cap = options.cap === undefined ? MAX_DELAY_MILLIS : toMillis(options.cap)
  const factor = options.factor ?? 2
  return (n) => clampMillis(Math.min(cap, base * Math.pow(factor, n)))
}

/**
 * Exponential backoff without jitter: retry `n` (counting from 0) waits
 * `min(cap, base * factor^n)`. Deterministic, so meant for tests and for
 * callers that add their own spreading; prefer {@link exponentialFullJitter}
 * against a shared provider. Recurs forever: bound it with {@link maxRetries}
 * or {@link withBudget}.
 *
 * @since 0.1.0
 * @category schedules
 */
export const exponential = (options: ExponentialOptions): Schedule.Schedule<Duration.Duration, unknown> => {
  const ceiling = exponentialCeiling(options)
  return Schedule.makeWithState(0, (now, _: unknown, n: number) => Effect.succeed(continueAfter(n + 1, now, ceiling(n))))
}

/**
 * Exponential backoff with AWS "full jitter": retry `n` (counting from 0)
 * waits a uniformly random whole number of milliseconds in
 * `[0, min(cap, base * factor^n)]`, drawn from the `Random` service. Spreads
 * the retries of many clients so they do not hit the provider in lockstep.
 * Recurs forever.
 *
 * @since 0.1.0
 * @category schedules
 */
export const exponentialFullJitter = (options: ExponentialOptions): Schedule.Schedule<Duration.Duration, unknown> => {
  const ceiling = exponentialCeiling(options)
  return Schedule.makeWithState(0, (now, _: unknown, n: number) =>
    Effect.map(
      Random.nextIntBetween(0, Math.floor(ceiling(n)) + 1),
      (millis) => continueAfter(n + 1, now, millis)
    ))
}

/**
 * AWS "decorrelated jitter": `sleep = min(cap, random(base, previousSleep * 3))`,
 * with the previous sleep starting at `base`. Each delay is a whole number of
 * milliseconds drawn from the `Random` service; it never falls below
 * `min(base, cap)`. Recurs forever.
 *
 * @since 0.1.0
 * @category schedules
 */
export const decorrelatedJitter = (options: {
  readonly base: Duration.DurationInput
  readonly cap: Duration.DurationInput
}): Schedule.Schedule<Duration.Duration, unknown> => {
  const base = toMillis(options.base)
  const cap = toMillis(options.cap)
  const low = Math.ceil(base)
  return Schedule.makeWithState(base, (now, _: unknown, previous: number) => {
    const high = Math.max(low, Math.floor(clampMillis(previous * 3)))
    return Effect.map(Random.nextIntBetween(low, high + 1), (drawn) => {
      const sleep = Math.min(cap, drawn)
      return continueAfter(sleep, now, sleep)
    })
  })
}

/**
 * Clamp every delay of a schedule to at most `cap`. The output becomes the
 * delay applied.
 *
 * @since 0.1.0
 * @category combinators
 */
export const withCap: {
  (cap: Duration.DurationInput): <Out, In, R>(self: Schedule.Schedule<Out, In, R>) => Schedule.Schedule<Duration.Duration, In, R>
  <Out, In, R>(self: Schedule.Schedule<Out, In, R>, cap: Duration.DurationInput): Schedule.Schedule<Duration.Duration, In, R>
} = dual(
  2,
  <Out, In, R>(self: Schedule.Schedule<Out, In, R>, cap: Duration.DurationInput): Schedule.Schedule<Duration.Duration, In, R> => {
    const capMillis = toMillis(cap)
    return mapDelay(self, (delay) => Math.min(delay, capMillis))
  }
)

/**
 * Allow at most `n` retries: the schedule stops at its `n + 1`-th step. The
 * first try is not a retry, so with `Effect.retry` the effect runs at most
 * `n + 1` times in all; `maxRetries(0)` never retries. The output becomes the
 * delay applied.
 *
 * @since 0.1.0
 * @category combinators
 */
export const maxRetries: {
  (n: number): <Out, In, R>(self: Schedule.Schedule<Out, In, R>) => Schedule.Schedule<Duration.Duration, In, R>
  <Out, In, R>(self: Schedule.Schedule<Out, In, R>, n: number): Schedule.Schedule<Duration.Duration, In, R>
} = dual(
  2,
  <Out, In, R>(self: Schedule.Schedule<Out, In, R>, n: number): Schedule.Schedule<Duration.Duration, In, R> => {
    const limit = Number.isNaN(n) ? 0 : Math.max(0, Math.floor(n))
    return Schedule.makeWithState(
      [self.initial, 0] as readonly [unknown, number],
      (now, input: In, [inner, count]) =>
        count >= limit
          ? Effect.succeed(stop([inner, count] as const))
          : Effect.map(self.step(now, input, inner), ([next, , decision]) =>
            ScheduleDecision.isDone(decision)
              ? stop([next, count + 1] as const)
              : continueAfter([next, count + 1] as const, now, delayOf(now, decision)))
    )
  }
)

/**
 * Options of {@link withBudget}.
 *
 * @since 0.1.0
 * @category models
 */
export interface BudgetOptions {
  /**
   * When the first attempt started, in `Clock` milliseconds. Without it the
   * budget is measured from the schedule's first step, i.e. from the moment
   * the first attempt failed (the schedule cannot see earlier than that).
   */
  readonly since?: number
}

/**
 * Stop retrying once the time elapsed since the first attempt plus the next
 * delay would exceed `budget` (elapsed + delay equal to the budget still
 * retries). Time is the `now` the schedule's driver reads from `Clock`. The
 * output becomes the delay applied.
 *
 * @since 0.1.0
 * @category combinators
 */
export const withBudget: {
  (budget: Duration.DurationInput, options?: BudgetOptions): <Out, In, R>(
    self: Schedule.Schedule<Out, In, R>
  ) => Schedule.Schedule<Duration.Duration, In, R>
  <Out, In, R>(
    self: Schedule.Schedule<Out, In, R>,
    budget: Duration.DurationInput,
    options?: BudgetOptions
  ): Schedule.Schedule<Duration.Duration, In, R>
} = dual(
  (args) => Schedule.isSchedule(args[0]),
  <Out, In, R>(
    self: Schedule.Schedule<Out, In, R>,
    budget: Duration.DurationInput,
    options?: BudgetOptions
  ): Schedule.Schedule<Duration.Duration, In, R> => {
    const budgetMillis = toMillis(budget)
    return Schedule.makeWithState(
      [self.initial, options?.since] as readonly [unknown, number | undefined],
      (now, input: In, [inner, since]) => {
        const origin = since ?? now
        return Effect.map(self.step(now, input, inner), ([next, , decision]) => {
          if (ScheduleDecision.isDone(decision)) return stop([next, origin] as const)
          const delay = delayOf(now, decision)
          return now - origin + delay > budgetMillis
            ? stop([next, origin] as const)
            : continueAfter([next, origin] as const, now, delay)
        })
      }
    )
  }
)

/**
 * Stop at once, without stepping the inner schedule, when the input error is
 * not retryable. Errors tagged `BreakerOpen` always stop, whatever the
 * predicate says: retrying into an open breaker only burns the budget. The
 * output becomes the delay applied.
 *
 * @since 0.1.0
 * @category combinators
 */
export const whileRetryable: {
  <E>(predicate?: (error: E) => boolean): <Out, In, R>(
    self: Schedule.Schedule<Out, In, R>
  ) => Schedule.Schedule<Duration.Duration, In & E, R>
  <Out, In, R, E = In>(
    self: Schedule.Schedule<Out, In, R>,
    predicate?: (error: E) => boolean
  ): Schedule.Schedule<Duration.Duration, In & E, R>
} = dual(
  (args) => Schedule.isSchedule(args[0]),
  <Out, In, R, E>(
    self: Schedule.Schedule<Out, In, R>,
    predicate: (error: E) => boolean = isRetryable
  ): Schedule.Schedule<Duration.Duration, In & E, R> =>
    Schedule.makeWithState(self.initial, (now, input: In & E, state) =>
      isBreakerOpen(input) || !predicate(input)
        ? Effect.succeed(stop(state))
        : Effect.map(self.step(now, input, state), ([next, , decision]) =>
          ScheduleDecision.isDone(decision) ? stop(next) : continueAfter(next, now, delayOf(now, decision))))
)

// ---------------------------------------------------------------------------
// Retry-After
// ---------------------------------------------------------------------------

const MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
const MONTH = "(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
const TIME = "(\\d{2}):(\\d{2}):(\\d{2})"
/** IMF-fixdate, the preferred form: `Sun, 06 Nov 1994 08:49:37 GMT` */
const IMF_FIXDATE = new RegExp(`^(?:mon|tue|wed|thu|fri|sat|sun), (\\d{2}) ${MONTH} (\\d{4}) ${TIME} gmt$`, "i")
/** obsolete RFC 850 form: `Sunday, 06-Nov-94 08:49:37 GMT` */
const RFC_850 = new RegExp(
  `^(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday), (\\d{2})-${MONTH}-(\\d{2}) ${TIME} gmt$`,
  "i"
)
/** obsolete asctime form, read as UTC: `Sun Nov  6 08:49:37 1994` */
const ASCTIME = new RegExp(`^(?:mon|tue|wed|thu|fri|sat|sun) ${MONTH} ( \\d|\\d{2}) ${TIME} (\\d{4})$`, "i")
/** any other date string with an explicit zone, e.g. ISO 8601 `2015-10-21T07:28:00Z` */
const EXPLICIT_ZONE = /\d{4}.*(?:gmt|utc|z|[+-]\d{2}:?\d{2})$/i

const utc = (
  year: number,
  month: string,
  day: number,
  hours: number,
  minutes: number,
  seconds: number
): number | undefined => {
  const monthIndex = MONTHS.indexOf(month.toLowerCase())
  if (monthIndex < 0 || hours > 23 || minutes > 59 || seconds > 60) return undefined
  const millis = Date.UTC(year, monthIndex, day, hours, minutes, seconds)
  const check = new Date(millis)
  // rejects days that Date.UTC would roll over, such as 31 Feb
  return check.getUTCDate() === day && check.getUTCMonth() === monthIndex ? millis : undefined
}

const parseHttpDate = (header: string, nowMillis: number): number | undefined => {
  let m = IMF_FIXDATE.exec(header)
  if (m !== null) return utc(Number(m[3]), m[2]!, Number(m[1]), Number(m[4]), Number(m[5]), Number(m[6]))
  m = RFC_850.exec(header)
  if (m !== null) {
    // RFC 9110 §5.6.7: a two-digit year more than 50 years in the future is in the past century
    const nowYear = new Date(nowMillis).getUTCFullYear()
    let year = Math.floor(nowYear / 100) * 100 + Number(m[3])
    if (year > nowYear + 50) year -= 100
    return utc(year, m[2]!, Number(m[1]), Number(m[4]), Number(m[5]), Number(m[6]))
  }
  m = ASCTIME.exec(header)
  if (m !== null) return utc(Number(m[7]), m[1]!, Number(m[2]!.trim()), Number(m[3]), Number(m[4]), Number(m[5]))
  if (EXPLICIT_ZONE.test(header)) {
    const parsed = Date.parse(header)
    return Number.isFinite(parsed) ? parsed : undefined
  }
  return undefined
}

/**
 * Read a `Retry-After` header: delta-seconds (`"120"`, a non-negative
 * integer) or an HTTP date (`"Wed, 21 Oct 2015 07:28:00 GMT"`; the obsolete
 * RFC 850 and asctime forms and dates with an explicit zone are accepted
 * too), measured from `nowMillis` (take it from `Clock`). Anything else is
 * `None`; a date in the past is a zero delay.
 *
 * @since 0.1.0
 * @category retry-after
 */
export const parseRetryAfter = (header: string, nowMillis: number): Option.Option<Duration.Duration> => {
  const value = header.trim()
  if (/^\d+$/.test(value)) return Option.some(Duration.millis(clampMillis(Number(value) * 1000)))
  const date = parseHttpDate(value, nowMillis)
  return date === undefined ? Option.none() : Option.some(Duration.millis(clampMillis(date - nowMillis)))
}

/**
 * The default Retry-After extractor: the error's `retryAfter` field when the
 * error is an object with a string there (as {@link EmbedError} has).
 *
 * @since 0.1.0
 * @category retry-after
 */
export const retryAfterOf = (error: unknown): string | undefined => {
  const value = field(error, "retryAfter")
  return typeof value === "string" ? value : undefined
}

/**
 * Options of {@link retryAfterAware}.
 *
 * @since 0.1.0
 * @category models
 */
export interface RetryAfterOptions<E> {
  /** a Retry-After delay longer than this is shortened to it */
  readonly cap: Duration.DurationInput
  /** where to find the header on an error (default {@link retryAfterOf}) */
  readonly retryAfter?: ((error: E) => string | undefined) | undefined
}

/**
 * A schedule over errors that honours `Retry-After`: when the failing error
 * carries a valid header, its delay (clamped to `cap`) replaces the delay the
 * inner schedule computed; otherwise the inner delay stands. The inner
 * schedule still decides whether to retry at all (so retry limits hold). The
 * output becomes the delay applied.
 *
 * @since 0.1.0
 * @category retry-after
 */
export const retryAfterAware: {
  <E>(options: RetryAfterOptions<E>): <Out, In, R>(
    self: Schedule.Schedule<Out, In, R>
  ) => Schedule.Schedule<Duration.Duration, In & E, R>
  <Out, In, R, E = In>(
    self: Schedule.Schedule<Out, In, R>,
    options: RetryAfterOptions<E>
  ): Schedule.Schedule<Duration.Duration, In & E, R>
} = dual(
  2,
  <Out, In, R, E>(
    self: Schedule.Schedule<Out, In, R>,
    options: RetryAfterOptions<E>
  ): Schedule.Schedule<Duration.Duration, In & E, R> => {
    const cap = toMillis(options.cap)
    const extract: (error: E) => string | undefined = options.retryAfter ?? retryAfterOf
    return mapDelay(self as Schedule.Schedule<Out, In & E, R>, (computed, error, now) => {
      const header = extract(error)
      if (header === undefined) return computed
      return Option.match(parseRetryAfter(header, now), {
        onNone: () => computed,
        onSome: (delay) => Math.min(cap, Duration.toMillis(delay))
      })
    })
  }
)

// ---------------------------------------------------------------------------
// classification
// ---------------------------------------------------------------------------

/**
 * Whether a failure is worth retrying.
 *
 * @since 0.1.0
 * @category classification
 */
export type ErrorClass = "retryable" | "fatal"

/** Node / undici error codes of transient network failures */
const RETRYABLE_CODES: ReadonlySet<string> = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "ENETUNREACH",
  "EHOSTUNREACH",
  "ENETDOWN",
  "UND_ERR_SOCKET",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT"
])

const FATAL_TAGS: ReadonlySet<string> = new Set(["BreakerOpen", "InvalidInput", "StoreError", "LoaderError"])

/** how many `cause` links {@link classify} follows (also guards against cycles) */
const MAX_CAUSE_DEPTH = 5

/** 408, 429 and 5xx are retryable; any other HTTP status is fatal; a non-status is undefined */
const classifyStatus = (status: unknown): ErrorClass | undefined => {
  if (typeof status !== "number" || !Number.isInteger(status) || status < 100 || status > 599) return undefined
  return status === 408 || status === 429 || status >= 500 ? "retryable" : "fatal"
}

const classifyEmbedError = (error: unknown): ErrorClass => {
  const status = classifyStatus(field(error, "status"))
  switch (field(error, "reason")) {
    case "timeout":
    case "connection":
      return "retryable"
    case "http":
      return status ?? "fatal"
    case "provider":
      return status ?? "retryable"
    default:
      // malformed-response, dimension-mismatch, invalid-input, config: retrying cannot help
      return "fatal"
  }
}

const classifyAt = (error: unknown, depth: number): ErrorClass => {
  if (typeof error !== "object" || error === null) return "fatal"
  const tag = field(error, "_tag")
  if (typeof tag === "string") {
    if (FATAL_TAGS.has(tag)) return "fatal"
    switch (tag) {
      case "EmbedError":
        return classifyEmbedError(error)
      case "TimeoutException":
        return "retryable"
      // @effect/platform HttpClientError
      case "RequestError":
        return field(error, "reason") === "Transport" ? "retryable" : "fatal"
      case "ResponseError":
        return field(error, "reason") === "StatusCode"
          ? classifyStatus(field(field(error, "response"), "status")) ?? "fatal"
          : "fatal"
    }
  }
  const byStatus = classifyStatus(field(error, "status") ?? field(error, "statusCode"))
  if (byStatus !== undefined) return byStatus
  const code = field(error, "code")
  if (typeof code === "string" && RETRYABLE_CODES.has(code)) return "retryable"
  if (field(error, "name") === "TimeoutError") return "retryable"
  const cause = field(error, "cause")
  return cause !== undefined && depth < MAX_CAUSE_DEPTH ? classifyAt(cause, depth + 1) : "fatal"
}

/**
 * Sort a failure into retryable or fatal.
 *
 * Retryable: timeouts (`EmbedError` reason `"timeout"`, Effect's
 * `TimeoutException`, an error named `TimeoutError` as from
 * `AbortSignal.timeout`); HTTP 408, 429 and 5xx (from `status`, `statusCode`
 * or a platform `ResponseError`); connection failures (`EmbedError` reason
 * `"connection"`, a platform transport `RequestError`, Node/undici codes
 * such as `ECONNRESET`, `ECONNREFUSED`, `EPIPE`, `ETIMEDOUT`, `EAI_AGAIN`);
 * `EmbedError` reason `"provider"` with a retryable status or with none (a
 * provider-side failure is presumed transient; the retry limit bounds the
 * cost of being wrong).
 *
 * Fatal: any other HTTP status, including `EmbedError` reason `"http"`
 * without a status; `EmbedError` reasons `"malformed-response"`,
 * `"dimension-mismatch"`, `"invalid-input"` and `"config"` whatever their
 * status; anything tagged `BreakerOpen`, `InvalidInput`, `StoreError` or
 * `LoaderError`. An error not recognised by tag, status or code is looked up
 * through its `cause` chain (a few links deep, as for `fetch failed` errors
 * or `UnknownException`) and is otherwise fatal: retrying what we do not
 * understand hides bugs and wastes the provider's quota.
 *
 * @since 0.1.0
 * @category classification
 */
export const classify = (error: unknown): ErrorClass => classifyAt(error, 0)

/**
 * `classify(error) === "retryable"`.
 *
 * @since 0.1.0
 * @category classification
 */
export const isRetryable = (error: unknown): boolean => classify(error) === "retryable"

// ---------------------------------------------------------------------------
// policy and runner
// ---------------------------------------------------------------------------

/**
 * How to retry a call.
 *
 * @since 0.1.0
 * @category models
 */
export interface Policy {
  /** retries after the first try; the call runs at most `maxRetries + 1` times */
  readonly maxRetries: number
  /** the backoff's first delay (before jitter) */
  readonly base: Duration.DurationInput
  /** no computed backoff delay exceeds this */
  readonly cap: Duration.DurationInput
  /** stop retrying when elapsed time since the first attempt plus the next delay would exceed this */
  readonly budget?: Duration.DurationInput
  /** `"full"`: {@link exponentialFullJitter}; `"decorrelated"`: {@link decorrelatedJitter}; `"none"`: {@link exponential} */
  readonly jitter: "full" | "decorrelated" | "none"
  /** each attempt is interrupted after this long (default: no timeout) */
  readonly attemptTimeout?: Duration.DurationInput
  /** a Retry-After delay longer than this is shortened to it (default: `cap`) */
  readonly retryAfterCap?: Duration.DurationInput
}

/**
 * 4 retries (5 attempts), full jitter from 500 ms capped at 30 s, Retry-After
 * honoured up to 60 s, each attempt interrupted after 60 s, no overall budget.
 *
 * @since 0.1.0
 * @category policies
 */
export const defaultPolicy: Policy = {
  maxRetries: 4,
  base: Duration.millis(500),
  cap: Duration.seconds(30),
  jitter: "full",
  attemptTimeout: Duration.seconds(60),
  retryAfterCap: Duration.seconds(60)
}

/**
 * Options of {@link schedule}.
 *
 * @since 0.1.0
 * @category models
 */
export interface ScheduleOptions<E> {
  /** which errors to retry (default {@link isRetryable}); `BreakerOpen` is never retried */
  readonly isRetryable?: ((error: E) => boolean) | undefined
  /** where to find a Retry-After header on an error (default {@link retryAfterOf}) */
  readonly retryAfter?: ((error: E) => string | undefined) | undefined
  /** `Clock` millis when the first attempt started, for the budget (see {@link BudgetOptions}) */
  readonly since?: number | undefined
}

const backoff = (policy: Policy): Schedule.Schedule<Duration.Duration, unknown> => {
  switch (policy.jitter) {
    case "full":
      return exponentialFullJitter({ base: policy.base, cap: policy.cap })
    case "decorrelated":
      return decorrelatedJitter({ base: policy.base, cap: policy.cap })
    case "none":
      return exponential({ base: policy.base, cap: policy.cap })
  }
}

/**
 * The schedule over errors that a policy describes, ready for `Effect.retry`:
 * it stops at once on an error that is not retryable, allows at most
 * `maxRetries` retries, waits the jittered backoff or the error's
 * Retry-After (capped at `retryAfterCap`), and stops when the budget would
 * be exceeded (Retry-After delays count against the budget too). Outputs the
 * delay applied.
 *
 * @since 0.1.0
 * @category policies
 */
export const schedule = <E = unknown>(
  policy: Policy,
  options: ScheduleOptions<E> = {}
): Schedule.Schedule<Duration.Duration, E> => {
  const limited = retryAfterAware(maxRetries(backoff(policy), policy.maxRetries), {
    cap: policy.retryAfterCap ?? policy.cap,
    retryAfter: options.retryAfter ?? retryAfterOf
  })
  const budgeted = policy.budget === undefined
    ? limited
    : withBudget(limited, policy.budget, options.since === undefined ? {} : { since: options.since })
  return whileRetryable(budgeted, options.isRetryable ?? isRetryable)
}

/**
 * Options of {@link retry}.
 *
 * @since 0.1.0
 * @category models
 */
export interface RetryOptions<E, E2> {
  /** the error an attempt that ran past `attemptTimeout` fails with (default: an `EmbedError` with reason `"timeout"`) */
  readonly onTimeout?: ((timeout: Duration.Duration) => E2) | undefined
  /** which errors to retry (default {@link isRetryable}); `BreakerOpen` is never retried */
  readonly isRetryable?: ((error: E | E2) => boolean) | undefined
  /** where to find a Retry-After header on an error (default {@link retryAfterOf}) */
  readonly retryAfter?: ((error: E | E2) => string | undefined) | undefined
}

/**
 * What a retried call came to, with the number of attempts it took (the first
 * try included).
 *
 * @since 0.1.0
 * @category models
 */
export interface Outcome<A, E> {
  readonly attempts: number
  readonly result: Either.Either<A, E>
}

/**
 * The error an attempt fails with when it runs past the policy's
 * `attemptTimeout`, unless `onTimeout` says otherwise.
 *
 * @since 0.1.0
 * @category errors
 */
export const timeoutError = (timeout: Duration.Duration): EmbedError =>
  new EmbedError({
    reason: "timeout",
    message: `the embedding provider did not answer within ${Duration.format(timeout)}, so the request was ` +
      `abandoned; if the provider is slow rather than stuck, raise the attempt timeout`
  })

const withAttemptTimeout = <A, E, R, E2>(
  self: Effect.Effect<A, E, R>,
  policy: Policy,
  onTimeout: (timeout: Duration.Duration) => E2
): Effect.Effect<A, E | E2, R> => {
  if (policy.attemptTimeout === undefined) return self
  const timeout = Duration.decode(policy.attemptTimeout)
  return Effect.timeoutFail(self, { duration: timeout, onTimeout: () => onTimeout(timeout) })
}

const runRetries = <A, E, R, E2>(
  self: Effect.Effect<A, E, R>,
  policy: Policy,
  options: RetryOptions<E, E2>
): Effect.Effect<Outcome<A, E | E2>, never, R> =>
  Effect.flatMap(Clock.currentTimeMillis, (since) => {
    let attempts = 0
    const onTimeout = options.onTimeout ?? (timeoutError as unknown as (timeout: Duration.Duration) => E2)
    const attempt = Effect.suspend(() => {
      attempts++
      return withAttemptTimeout(self, policy, onTimeout)
    })
    const policySchedule = schedule<E | E2>(policy, {
      since,
      isRetryable: options.isRetryable,
      retryAfter: options.retryAfter
    })
    return Effect.map(Effect.either(Effect.retry(attempt, policySchedule)), (result) => ({ attempts, result }))
  })

/**
 * Run an effect under a retry policy. Each attempt runs under
 * `attemptTimeout` and is interrupted when it runs out (interruption is what
 * aborts an in-flight HTTP request); the timeout becomes an `EmbedError`
 * with reason `"timeout"` (or `onTimeout`'s error) and is retried like any
 * retryable error. Retryable errors are retried with {@link schedule};
 * fatal ones and `BreakerOpen` fail at once; when retries run out the last
 * error is returned.
 *
 * @since 0.1.0
 * @category runners
 */
export const retry: {
  <E2 = EmbedError>(policy: Policy, options?: RetryOptions<unknown, E2>): <A, E, R>(
    self: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | E2, R>
  <A, E, R, E2 = EmbedError>(
    self: Effect.Effect<A, E, R>,
    policy: Policy,
    options?: RetryOptions<E, E2>
  ): Effect.Effect<A, E | E2, R>
} = dual(
  (args) => Effect.isEffect(args[0]),
  <A, E, R, E2>(
    self: Effect.Effect<A, E, R>,
    policy: Policy,
    options: RetryOptions<E, E2> = {}
  ): Effect.Effect<A, E | E2, R> => Effect.flatMap(runRetries(self, policy, options), ({ result }) =>
      Either.isRight(result) ? Effect.succeed(result.right) : Effect.fail(result.left))
)

/**
 * {@link retry}, reporting how many attempts were made (the first try
 * included) along with the result, whether it succeeded or not. Interruption
 * and defects still propagate.
 *
 * @since 0.1.0
 * @category runners
 */
export const retryWithAttempts: {
  <E2 = EmbedError>(policy: Policy, options?: RetryOptions<unknown, E2>): <A, E, R>(
    self: Effect.Effect<A, E, R>
  ) => Effect.Effect<Outcome<A, E | E2>, never, R>
  <A, E, R, E2 = EmbedError>(
    self: Effect.Effect<A, E, R>,
    policy: Policy,
    options?: RetryOptions<E, E2>
  ): Effect.Effect<Outcome<A, E | E2>, never, R>
} = dual(
  (args) => Effect.isEffect(args[0]),
  <A, E, R, E2>(
    self: Effect.Effect<A, E, R>,
    policy: Policy,
    options: RetryOptions<E, E2> = {}
  ): Effect.Effect<Outcome<A, E | E2>, never, R> => runRetries(self, policy, options)
)

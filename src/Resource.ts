/**
 * Managed streams: every resource a stream holds (a connection, a file
 * handle, an async generator, a Node readable) is released exactly once per
 * run, on every way the run can end — the source is exhausted, the consumer
 * fails, the producer fails, the consumer stops early (`Stream.take`,
 * `Stream.takeWhile`, a circuit breaker) or the fiber is interrupted.
 *
 * Acquisition is lazy: building a stream acquires nothing; running it does.
 * Nested resources are released last-in first-out.
 *
 * @since 0.1.0
 */
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import { dual } from "effect/Function"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { Readable } from "node:stream"
import * as ResourceLedger from "./ResourceLedger.js"

/**
 * Attach a finalizer to an existing stream: `close` runs exactly once each
 * time the stream is run, however the run ends (exhaustion, failure on
 * either side, early termination, interruption).
 *
 * The stream wraps a resource that is already open, so `close` only runs if
 * the stream is run; for a resource that should be opened when the stream
 * starts, use {@link managedStream}.
 *
 * @since 0.1.0
 * @category combinators
 */
export const withResourceStream: {
  (close: Effect.Effect<unknown>): <A, E, R>(self: Stream.Stream<A, E, R>) => Stream.Stream<A, E, R>
  <A, E, R>(self: Stream.Stream<A, E, R>, close: Effect.Effect<unknown>): Stream.Stream<A, E, R>
} = dual(
  2,
  <A, E, R>(self: Stream.Stream<A, E, R>, close: Effect.Effect<unknown>): Stream.Stream<A, E, R> =>
    Stream.ensuring(self, close)
)

/**
 * A stream that uses a scoped resource: `resource` runs (in a scope of its
 * own) when the stream is first pulled, never when it is built, and its
 * scope closes exactly once when the run ends, on every exit path, with the
 * exit of the run.
 *
 * Unlike `Stream.unwrapScoped` and `Stream.acquireRelease`, resources of
 * nested streams are released innermost first on every exit path: with
 * those, a failure raised by an inner stream's producer closes the outer
 * resource before the inner one (effect 3.22). Here the scope is closed by a
 * `Stream.ensuringWith` finalizer, and those unwind in order.
 *
 * @since 0.1.0
 * @category constructors
 */
export const scopedStream = <RA, EA, RR, A, E, R>(
  resource: Effect.Effect<RA, EA, RR>,
  use: (resource: RA) => Stream.Stream<A, E, R>
): Stream.Stream<A, E | EA, R | Exclude<RR, Scope.Scope>> =>
  Stream.suspend(() => {
    // the finalizer is installed before the resource is acquired, so no
    // interruption can fall between the acquisition and its release
    let scope: Scope.CloseableScope | undefined
    return Stream.ensuringWith(
      Stream.unwrap(
        Effect.flatMap(Scope.make(), (s) => {
          scope = s
          return Effect.map(Scope.extend(resource, s), use)
        })
      ),
      (exit) => (scope === undefined ? Effect.void : Scope.close(scope, exit))
    )
  })

/**
 * A stream over a resource that is acquired when the stream is first pulled
 * (never when it is built) and released exactly once when the run ends, on
 * every exit path. `release` receives the exit of the run. Nested managed
 * streams release innermost first (see {@link scopedStream}).
 *
 * @since 0.1.0
 * @category constructors
 */
export const managedStream = <A, E, R, RA, EA, RR>(
  acquire: Effect.Effect<RA, EA, RR>,
  use: (resource: RA) => Stream.Stream<A, E, R>,
  release: (resource: RA, exit: Exit.Exit<unknown, unknown>) => Effect.Effect<unknown>
): Stream.Stream<A, E | EA, R | RR> => scopedStream(Effect.acquireRelease(acquire, release), use)

/**
 * {@link managedStream} recorded in the {@link ResourceLedger.ResourceLedger}
 * under `kind` (and `label`), so the run's report can prove the resource was
 * released.
 *
 * @since 0.1.0
 * @category constructors
 */
export const managedStreamTracked = <A, E, R, RA, EA, RR>(
  kind: string,
  acquire: Effect.Effect<RA, EA, RR>,
  use: (resource: RA) => Stream.Stream<A, E, R>,
  release: (resource: RA, exit: Exit.Exit<unknown, unknown>) => Effect.Effect<unknown>,
  label?: string | ((resource: RA) => string)
): Stream.Stream<A, E | EA, R | RR | ResourceLedger.ResourceLedger> =>
  scopedStream(ResourceLedger.acquireRelease(kind, acquire, release, label), use)

/**
 * The values of a tuple of effects, element by element.
 *
 * @since 0.1.0
 * @category models
 */
export type Successes<T extends ReadonlyArray<Effect.Effect<unknown, unknown, unknown>>> = {
  -readonly [K in keyof T]: Effect.Effect.Success<T[K]>
}

/**
 * Acquire several scoped resources in order into the current scope and
 * return their values as a tuple. They are released in reverse order
 * (last-in first-out) when the scope closes, whatever the strategy of the
 * enclosing scope; if the k-th acquisition fails or is interrupted, the
 * first k-1 resources are released, in reverse order.
 *
 * @since 0.1.0
 * @category combinators
 */
export const nestedManaged = <const T extends ReadonlyArray<Effect.Effect<unknown, unknown, unknown>>>(
  resources: T
): Effect.Effect<
  Successes<T>,
  Effect.Effect.Error<T[number]>,
  Effect.Effect.Context<T[number]> | Scope.Scope
> =>
  // forEach runs them in order; its result type forgets the tuple's shape
  Effect.sequentialFinalizers(Effect.forEach(resources, (resource) => resource)) as Effect.Effect<never, never, never>

/**
 * Options for {@link fromReadable}.
 *
 * @since 0.1.0
 * @category models
 */
export interface FromReadableOptions {
  /** the size passed to `readable.read(size)`; Node decides by default */
  readonly chunkSize?: number
  /** at most this many reads are batched into one chunk of the stream (default 64) */
  readonly maxChunkItems?: number
}

type AnyReadable = Readable | NodeJS.ReadableStream

const destroyReadable = (readable: AnyReadable): Effect.Effect<void> =>
  Effect.sync(() => {
    const r = readable as { readonly destroyed?: unknown; readonly destroy?: unknown }
    if (r.destroyed !== true && typeof r.destroy === "function") {
      ;(readable as Readable).destroy()
    }
  })

/**
 * The elements of an open readable, read in bounded batches. The listeners
 * live in the current scope.
 */
const readAll = <A, E>(
  readable: AnyReadable,
  onError: (error: unknown) => E,
  options: FromReadableOptions | undefined
): Effect.Effect<Stream.Stream<A, E>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const maxItems = Math.max(1, options?.maxChunkItems ?? 64)
    const size = options?.chunkSize
    const latch = yield* Effect.makeLatch(false)
    const premature = () => onError(new Error("the readable was closed before it ended"))
    // set once the readable can produce nothing more: the stream's end (None) or its error
    let done: Option.Option<Option.Option<E>> = Option.none()
    const state = readable as Partial<Pick<Readable, "errored" | "readableEnded" | "destroyed">>
    if (state.errored) done = Option.some(Option.some(onError(state.errored)))
    else if (state.readableEnded === true) done = Option.some(Option.none())
    else if (state.destroyed === true) done = Option.some(Option.some(premature()))
    else if (!readable.readable) done = Option.some(Option.none())
    const wake = () => latch.unsafeOpen()
    const finish = (end: Option.Option<E>) => {
      if (Option.isNone(done)) done = Option.some(end)
      latch.unsafeOpen()
    }
    const onEnd = () => finish(Option.none())
    const onErr = (error: unknown) => finish(Option.some(onError(error)))
    const onClose = () => finish(Option.some(premature()))
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        readable.on("readable", wake).on("end", onEnd).on("error", onErr).on("close", onClose)
      }),
      () =>
        Effect.sync(() => {
          readable.off("readable", wake).off("end", onEnd).off("error", onErr).off("close", onClose)
        })
    )
    type Pull = Effect.Effect<Chunk.Chunk<A>, Option.Option<E>>
    const pull: Pull = Effect.suspend(function loop(): Pull {
      // closed before reading, so an event fired from inside read() is not lost
      latch.unsafeClose()
      const batch: Array<A> = []
      while (batch.length < maxItems) {
        const item: unknown = size === undefined ? readable.read() : readable.read(size)
        if (item === null) break
        batch.push(item as A)
      }
      if (batch.length > 0) return Effect.succeed(Chunk.unsafeFromArray(batch))
      if (Option.isSome(done)) return Effect.fail(done.value)
      return Effect.zipRight(latch.await, Effect.suspend(loop))
    })
    return Stream.repeatEffectChunkOption(pull)
  })

/**
 * A Node readable as a stream. `factory` is called when the stream is first
 * pulled, and the readable is destroyed when the run ends, on every exit
 * path (early termination and interruption included). Errors emitted by the
 * readable, or thrown by `factory`, go through `onError`; a readable
 * destroyed by someone else before it ended fails the stream too.
 *
 * Reads are batched up to `maxChunkItems` per chunk, so a readable that
 * refills synchronously (`Readable.from` over an endless generator) still
 * yields to the consumer — `NodeStream.fromReadable` from
 * `@effect/platform-node` drains such a readable in one unbounded loop.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromReadable = <E, A = Uint8Array>(
  factory: () => AnyReadable,
  onError: (error: unknown) => E,
  options?: FromReadableOptions
): Stream.Stream<A, E> =>
  scopedStream(
    Effect.flatMap(
      Effect.acquireRelease(Effect.try({ try: factory, catch: onError }), destroyReadable),
      (readable) => readAll<A, E>(readable, onError, options)
    ),
    (stream) => stream
  )

/**
 * Run a foreign clean-up function, logging (never propagating) a throw or a
 * rejection, so a failing close never masks the outcome of the run.
 */
const quietly = (what: string, close: () => unknown): Effect.Effect<void> =>
  Effect.tryPromise(async () => {
    await close()
  }).pipe(
    Effect.catchAll((error) => Effect.logWarning(`${what} failed`, error.error))
  )

/**
 * An async iterable as a stream. `factory` is called when the stream is
 * first pulled. When the run ends for any reason, the signal passed to
 * `factory` is aborted and the iterator's `return()` is called and awaited,
 * so the `finally` blocks of an async generator run before the stream's run
 * completes. Errors thrown by `factory` or by the iterator go through
 * `onError`.
 *
 * An async generator can only run its `finally` once its pending `await`
 * settles: a generator blocked on an operation that ignores the signal
 * delays the release (and an interruption) until that operation settles.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromAsyncIterable = <A, E>(
  factory: (signal: AbortSignal) => AsyncIterable<A>,
  onError: (error: unknown) => E
): Stream.Stream<A, E> =>
  scopedStream(
    Effect.map(
      Effect.acquireRelease(
        Effect.try({
          try: () => {
            const controller = new AbortController()
            return { controller, iterator: factory(controller.signal)[Symbol.asyncIterator]() }
          },
          catch: onError
        }),
        ({ controller, iterator }) =>
          Effect.zipRight(
            Effect.sync(() => controller.abort()),
            quietly("closing an async iterator", () => iterator.return?.())
          )
      ),
      ({ iterator }) =>
        Stream.repeatEffectOption(
          Effect.flatMap(
            Effect.tryPromise({ try: () => iterator.next(), catch: (error) => Option.some(onError(error)) }),
            (result) => result.done === true ? Effect.fail(Option.none()) : Effect.succeed(result.value)
          )
        )
    ),
    (stream) => stream
  )

/**
 * The ways {@link autoClose} knows to release an object, in order of
 * preference.
 *
 * @since 0.1.0
 * @category models
 */
export type Closeable =
  | { [Symbol.asyncDispose](): PromiseLike<void> }
  | { [Symbol.dispose](): void }
  | { close(): unknown }
  | { end(): unknown }
  | { destroy(): unknown }

const closerOf = (obj: unknown): readonly [string, () => unknown] | undefined => {
  if ((typeof obj !== "object" && typeof obj !== "function") || obj === null) return undefined
  const o = obj as Record<PropertyKey, unknown>
  for (const key of [Symbol.asyncDispose, Symbol.dispose, "close", "end", "destroy"] as const) {
    const method = o[key]
    if (typeof method === "function") return [String(key), () => method.call(obj)]
  }
  return undefined
}

/**
 * Register an object in the current scope so it is released when the scope
 * closes (on success, failure or interruption). The first method it has
 * among `[Symbol.asyncDispose]`, `[Symbol.dispose]`, `close`, `end` and
 * `destroy` (see {@link Closeable}) is chosen when `autoClose` is called,
 * and at release it is called and awaited if it returns a promise; a failure
 * is logged, not propagated. Objects with none of these are returned as-is.
 *
 * @since 0.1.0
 * @category constructors
 */
export const autoClose = <A>(obj: A): Effect.Effect<A, never, Scope.Scope> => {
  const closer = closerOf(obj)
  if (closer === undefined) return Effect.succeed(obj)
  const [name, close] = closer
  return Effect.acquireRelease(Effect.succeed(obj), () => quietly(`auto-close (${name})`, close))
}

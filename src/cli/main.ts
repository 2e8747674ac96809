/**
 * The `ragpipe` executable's program (ragpipe.ts loads it): builds the one
 * MainLive layer, turns SIGINT/SIGTERM into a graceful stop, and maps the
 * outcome to an exit code. Errors are printed as one message, never as a stack trace.
 *
 * @internal
 */
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as ResourceLedger from "../ResourceLedger.js"
import { ExitCode, ExitRequest, layerShutdown, run, type StopSignal } from "./Cli.js"
import { tuneHeap } from "./heap.js"

const stopRequested = Effect.runSync(Deferred.make<StopSignal>())
let received: StopSignal | undefined

const onSignal = (signal: StopSignal) => () => {
  if (received !== undefined) {
    // A second signal: stop now.
    process.stderr.write(`\nragpipe: ${signal} again, exiting immediately\n`)
    process.exit(ExitCode[signal])
  }
  received = signal
  if (process.stderr.isTTY) process.stderr.write(`\nragpipe: ${signal} received, stopping (again to force)\n`)
  Effect.runSync(Deferred.succeed(stopRequested, signal))
}
const onSigint = onSignal("SIGINT")
const onSigterm = onSignal("SIGTERM")
process.on("SIGINT", onSigint)
process.on("SIGTERM", onSigterm)

/** Log levels by the names a person may write (any case). */
const logLevels: Record<string, LogLevel.LogLevel> = {
  all: LogLevel.All,
  trace: LogLevel.Trace,
  debug: LogLevel.Debug,
  info: LogLevel.Info,
  warn: LogLevel.Warning,
  warning: LogLevel.Warning,
  error: LogLevel.Error,
  fatal: LogLevel.Fatal,
  none: LogLevel.None,
  off: LogLevel.None
}

/** A usage error in the environment: its message, then exit code 2. */
const usageError = (message: string) =>
  Effect.zipRight(
    Effect.sync(() => process.stderr.write(`ragpipe: ${message}\n`)),
    Effect.fail(new ExitRequest({ code: ExitCode.usage }))
  )

/** RAGPIPE_LOG_LEVEL (default warn); a malformed value is a usage error, reported like any other variable's. */
const minimumLogLevel = Effect.flatMap(
  Effect.orDie(Config.option(Config.string("RAGPIPE_LOG_LEVEL"))),
  (raw) => {
    if (Option.isNone(raw)) return Effect.succeed(LogLevel.Warning)
    const level = logLevels[raw.value.trim().toLowerCase()]
    if (level !== undefined) return Effect.succeed(level)
    return usageError(`RAGPIPE_LOG_LEVEL must be one of ${Object.keys(logLevels).join(", ")} (got "${raw.value}")`)
  }
)

/** The V8 settings (see heap.ts); a malformed RAGPIPE_HEAP_GROWING_PERCENT is a usage error. */
const heapSetting = Effect.suspend(() => {
  const problem = tuneHeap()
  return problem === undefined ? Effect.void : usageError(problem)
})

const MainLive = Layer.mergeAll(
  NodeContext.layer,
  ResourceLedger.layer(),
  layerShutdown(stopRequested),
  Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger)),
  Layer.unwrapEffect(Effect.map(minimumLogLevel, Logger.minimumLogLevel)),
  Layer.effectDiscard(heapSetting)
)

const messageOf = (error: unknown): string =>
  typeof error === "object" && error !== null && "message" in error && typeof error.message === "string"
    ? error.message
    : String(error)

const exitCodeOf = (exit: Exit.Exit<unknown, unknown>): number => {
  if (Exit.isSuccess(exit)) return ExitCode.ok
  const failure = Cause.failureOption(exit.cause)
  if (Option.isSome(failure)) {
    const error = failure.value
    if (error instanceof ExitRequest) return error.code
    if (ValidationError.isValidationError(error)) return ExitCode.usage
    process.stderr.write(`ragpipe: ${messageOf(error)}\n`)
    return ExitCode.failed
  }
  if (Cause.isInterruptedOnly(exit.cause)) return received === undefined ? ExitCode.failed : ExitCode[received]
  const defect = Cause.squash(exit.cause)
  process.stderr.write(`ragpipe: unexpected error: ${messageOf(defect)}\n`)
  if (process.env["RAGPIPE_DEBUG"] !== undefined) process.stderr.write(`${Cause.pretty(exit.cause)}\n`)
  return ExitCode.failed
}

/** Exit once what was written to stdout and stderr has gone out (a write's callback follows those before it). */
const exitWhenWritten = (): void => {
  process.stdout.write("", () => process.stderr.write("", () => process.exit()))
}

Effect.runPromiseExit(run(process.argv).pipe(Effect.provide(MainLive))).then((exit) => {
  process.off("SIGINT", onSigint)
  process.off("SIGTERM", onSigterm)
  process.exitCode = exitCodeOf(exit)
  // Every resource of the command is released by now: nothing is left to
  // wait for but its output. Without an explicit exit, something a library
  // left behind would keep the process alive: an embedded database that
  // failed to start keeps a timer going, and the process waited for ever.
  exitWhenWritten()
})

/**
 * The V8 settings of the `ragpipe` process: its heap, and when it optimises
 * code.
 *
 * An ingest keeps a bounded working set (documents, chunks and vectors in
 * flight) and produces garbage at a high rate. With its default heap growing
 * factor V8 lets the old generation grow well past that working set between
 * full collections, so peak memory rose with the length of a run. On the
 * benchmark's 53,454-chunk corpus (server store, four runs each, measured
 * when this setting came in): 239–247 MiB by default, 182–188 MiB with a
 * factor of 1.5, 175–177 MiB with 1.2. The runs took 3.8–5.5 s, 4.1–4.7 s
 * and 4.2–5.4 s: 1.2 collected so often that it cost time, 1.5 did not.
 * Once the pipeline held fewer chunks in flight, 1.4 took no more time than
 * 1.5 on the server (medians of five alternating runs: 2,201 and 2,180 ms)
 * for 179 MiB against 185 MiB, and 191 against 199 MiB on a corpus ten
 * times larger. With the embedded database, whose own memory (about 800
 * MiB) is most of the process's, 1.4 saved nothing worth having and took
 * 10% longer (3,368 against 3,040 ms): a run that names a server (by
 * `--database-url` or DATABASE_URL) gets 1.4, any other 1.5.
 *
 * The young generation starts small (1 MiB a semi-space) and V8 doubles it
 * as objects survive, up to 16 MiB: a short run ended before it had grown.
 * An unchanged re-run of 10,000 files (a process of about 0.3 s) made 12
 * scavenges and a full collection; with a growth factor of 16, which takes
 * the young generation to its full size at its first growth, 5 scavenges
 * and none. The executable sets that factor for every run.
 *
 * V8 starts marking the old generation (incremental marking, ahead of a
 * full collection) once the space left below the old generation's limit is
 * no larger than the young generation. Before the first full collection
 * that limit is the old generation's size plus 8 MiB, so with the young
 * generation at its full 16 MiB the rule held as soon as it had grown, and
 * the modules an ingest loads are most of that size (about 15 MiB): every
 * unchanged re-run of 10,000 files made a full collection of little more
 * than what the process had just loaded, 7–9 ms and 4 ms of marking steps
 * in a run of about 100 ms. Until the first full collection the executable
 * has marking start when the old generation reaches 80% of its limit (at
 * once, without waiting for a task, from 90%); after it, the limit comes
 * from the growing factor and V8's own rule applies again. Such a re-run
 * makes no full collection. Measured when this came in, on the
 * 10,000-file corpus against the server, against V8's rule throughout:
 * 15 alternating re-runs, medians of 83 ms (79–95) against 95 ms
 * (91–102); 6 alternating first runs, 1,616–1,803 ms against
 * 1,638–1,846 ms, with a peak RSS of 155–160 MiB against 155–157 MiB.
 * Keeping the triggers for the whole run made first runs faster
 * (1,644–1,718 ms against 1,725–1,870 ms, 5 each), as it collects less
 * often, but took about 10 MiB more (166–168 MiB).
 *
 * V8 optimises a function (with TurboFan, on background threads) once it
 * has run for an "interrupt budget" of bytecode. With V8's budget a first
 * ingest of the 10,000-file corpus into a server made 418 optimised
 * compilations, which took 1,063–1,147 ms of CPU (as `--trace-opt` times
 * them) in runs of 1.8 s: on a machine of two cores, time taken from the
 * main thread, the embedding worker and the server. The executable sets a
 * budget eight times V8's ({@link interruptBudget}), so that only the
 * functions that keep running are optimised: 205–216 compilations, 401–405
 * ms. Measured when this came in, 6 alternating rounds against V8's
 * budget, server store, medians: first run of the 10,000-file corpus
 * 1,720.5 ms against 1,754.5 ms, 2,624.5 against 2,727.5 ms of CPU, peak
 * RSS 142 against 145.5 MiB; of the 1,000-file corpus 325.5 against 366.5
 * ms, 616 against 730.5 ms of CPU, 123.5 against 128 MiB; unchanged
 * re-runs of the 10,000 files (12 each) 83 ms (81–86) against 94.5 ms
 * (78–105), 269.5 against 322 ms of CPU. On the embedded database first
 * runs took as long (2,996–3,150 against 2,903–3,136 ms, 7 each), and a
 * `search` as long (medians of 8, 207 ms each).
 *
 * The settings are the process's, so they are made by the executable only,
 * never by the library. RAGPIPE_HEAP_GROWING_PERCENT sets another growing
 * factor (0: V8's own heuristics, for the young generation and marking
 * too, but not the interrupt budget); a flag given to node itself wins
 * over each of them. (Node accepts none of these flags in NODE_OPTIONS.)
 *
 * @internal
 */
import * as Either from "effect/Either"
import { constants as perfConstants, PerformanceObserver } from "node:perf_hooks"
import * as v8 from "node:v8"

/** The heap growing factor the executable sets by default, by store: 1 + this / 100. */
export const heapGrowingPercent = { server: 40, embedded: 50 } as const

/** The factor the young generation grows by, set by the executable (V8's own: 2). */
export const semiSpaceGrowthFactor = 16

/**
 * Until the first full collection: the share of the old generation's
 * limit, in percent, at which marking starts in a task (`soft`), and at
 * which it starts at once (`hard`).
 */
export const markingTriggerPercent = { soft: 80, hard: 90 } as const

/**
 * The interrupt budget the executable sets: eight times V8's own (67,584
 * bytes of bytecode run before a function is considered for optimisation).
 */
export const interruptBudget = 8 * 67_584

/** Runs `f` once, after the first full collection of the heap (a major GC) from now on. */
export const afterFirstFullCollection = (f: () => void): void => {
  const observer = new PerformanceObserver((list) => {
    const major = list.getEntries().some((entry) => {
      const detail = (entry as { readonly detail?: unknown }).detail
      return typeof detail === "object" && detail !== null && "kind" in detail &&
        detail.kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR
    })
    if (!major) return
    observer.disconnect()
    f()
  })
  observer.observe({ entryTypes: ["gc"] })
}

/** The store a command line writes to, as far as the heap setting is concerned. */
export type StoreKind = keyof typeof heapGrowingPercent

/** The value given to `option` (`--option value` or `--option=value`), if it is given. */
const valueOf = (args: ReadonlyArray<string>, option: string): string | undefined => {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === option) return args[i + 1] ?? ""
    if (args[i]!.startsWith(`${option}=`)) return args[i]!.slice(option.length + 1)
  }
  return undefined
}

/**
 * `server` when the arguments or the environment name a PostgreSQL server,
 * else `embedded`, as the command picks its store: `--database-url` names
 * one (a blank one none), `--data-dir` the embedded database whatever
 * DATABASE_URL says, and without either DATABASE_URL decides.
 */
export const storeKindOf = (args: ReadonlyArray<string>, databaseUrl: string | undefined): StoreKind => {
  const urlOption = valueOf(args, "--database-url")
  if (urlOption !== undefined) return urlOption.trim() !== "" ? "server" : "embedded"
  if (valueOf(args, "--data-dir") !== undefined) return "embedded"
  return databaseUrl !== undefined && databaseUrl.trim() !== "" ? "server" : "embedded"
}

const flagName = "--heap-growing-percent"
const youngFlagName = "--semi-space-growth-factor"
const softTriggerFlagName = "--incremental-marking-soft-trigger"
const hardTriggerFlagName = "--incremental-marking-hard-trigger"
const budgetFlagName = "--interrupt-budget"

/** V8 takes a flag's words joined by "-" or "_" (`--heap_growing_percent=20`). */
const mentionsFlag = (args: ReadonlyArray<string>, flag: string): boolean =>
  args.some((arg) => arg.split("=", 1)[0]!.replaceAll("_", "-") === flag)

/**
 * The V8 flags to set, given node's own arguments (`process.execArgv`) and
 * RAGPIPE_HEAP_GROWING_PERCENT, or what is wrong with the variable.
 */
export const heapFlags = (
  execArgv: ReadonlyArray<string>,
  variable: string | undefined,
  store: StoreKind
): Either.Either<ReadonlyArray<string>, string> => {
  const alongside: Array<string> = []
  if (!mentionsFlag(execArgv, youngFlagName)) alongside.push(`${youngFlagName}=${semiSpaceGrowthFactor}`)
  // either trigger given to node replaces V8's own rule: then neither is set here
  if (!mentionsFlag(execArgv, softTriggerFlagName) && !mentionsFlag(execArgv, hardTriggerFlagName)) {
    alongside.push(
      `${softTriggerFlagName}=${markingTriggerPercent.soft}`,
      `${hardTriggerFlagName}=${markingTriggerPercent.hard}`
    )
  }
  if (mentionsFlag(execArgv, flagName)) return Either.right(alongside)
  if (variable === undefined || variable.trim() === "") {
    return Either.right([`${flagName}=${heapGrowingPercent[store]}`, ...alongside])
  }
  const value = variable.trim()
  if (!/^\d{1,4}$/.test(value) || Number(value) > 1000) {
    return Either.left(
      `RAGPIPE_HEAP_GROWING_PERCENT must be a whole number from 0 to 1000 (got "${variable}"); ` +
        `0 leaves the heap to V8's own heuristics`
    )
  }
  return Either.right(Number(value) === 0 ? [] : [`${flagName}=${Number(value)}`, ...alongside])
}

/** The compiler flags to set, given node's own arguments: the interrupt budget, unless node was given one. */
export const compilerFlags = (execArgv: ReadonlyArray<string>): ReadonlyArray<string> =>
  mentionsFlag(execArgv, budgetFlagName) ? [] : [`${budgetFlagName}=${interruptBudget}`]

/**
 * Applies {@link heapFlags} and {@link compilerFlags} to this process; the
 * error message when the variable is malformed (then nothing is applied).
 */
export const tuneHeap = (): string | undefined =>
  Either.match(
    heapFlags(
      process.execArgv,
      process.env["RAGPIPE_HEAP_GROWING_PERCENT"],
      storeKindOf(process.argv.slice(2), process.env["DATABASE_URL"])
    ),
    {
      onLeft: (message) => message,
      onRight: (flags) => {
        for (const flag of [...flags, ...compilerFlags(process.execArgv)]) v8.setFlagsFromString(flag)
        if (flags.some((flag) => flag.startsWith(`${softTriggerFlagName}=`))) {
          afterFirstFullCollection(() => {
            v8.setFlagsFromString(`${softTriggerFlagName}=0`)
            v8.setFlagsFromString(`${hardTriggerFlagName}=0`)
          })
        }
        return undefined
      }
    }
  )

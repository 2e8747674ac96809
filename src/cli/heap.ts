/**
 * The V8 heap setting of the `ragpipe` process.
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
 * The settings are the process's, so they are made by the executable only,
 * never by the library. RAGPIPE_HEAP_GROWING_PERCENT sets another growing
 * factor (0: V8's own heuristics, for the young generation too); a flag
 * given to node itself wins over both. (Node accepts neither flag in
 * NODE_OPTIONS.)
 *
 * @internal
 */
import * as Either from "effect/Either"
import * as v8 from "node:v8"

/** The heap growing factor the executable sets by default, by store: 1 + this / 100. */
export const heapGrowingPercent = { server: 40, embedded: 50 } as const

/** The factor the young generation grows by, set by the executable (V8's own: 2). */
export const semiSpaceGrowthFactor = 16

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
  const young = mentionsFlag(execArgv, youngFlagName) ? [] : [`${youngFlagName}=${semiSpaceGrowthFactor}`]
  if (mentionsFlag(execArgv, flagName)) return Either.right(young)
  if (variable === undefined || variable.trim() === "") {
    return Either.right([`${flagName}=${heapGrowingPercent[store]}`, ...young])
  }
  const value = variable.trim()
  if (!/^\d{1,4}$/.test(value) || Number(value) > 1000) {
    return Either.left(
      `RAGPIPE_HEAP_GROWING_PERCENT must be a whole number from 0 to 1000 (got "${variable}"); ` +
        `0 leaves the heap to V8's own heuristics`
    )
  }
  return Either.right(Number(value) === 0 ? [] : [`${flagName}=${Number(value)}`, ...young])
}

/** Applies {@link heapFlags} to this process; the error message when the variable is malformed. */
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
        for (const flag of flags) v8.setFlagsFromString(flag)
        return undefined
      }
    }
  )

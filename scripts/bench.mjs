#!/usr/bin/env node
// Benchmarks (not tests): `npm run bench` builds first, then runs each case,
// prints what it measured and how it compares with its target, and ends
// with a JSON summary as the last line.
//
//   node scripts/bench.mjs [--files N] [--only provider|ingest] [--repeat R]
//        [--latency MS] [--concurrency C] [--batch B] [--large-files M]
//
// provider: the fault server (its own process) with zero faults, a fixed
//   latency L (its service time per request) and a concurrency cap C; an
//   ingest of N/5 files with batch B and concurrency C. The physical
//   ceiling is C × B / L chunks/s; target: at least 90% of it, start-up and
//   the last write included.
// ingest: the hashing embedder through the real CLI (`ragpipe ingest`, each
//   run in a process of its own), on a generated corpus of N files (default
//   10,000: about 53,000 chunks) and on one of N/10 files. Per store: chunks/s
//   and peak RSS of the first run, an unchanged re-run, and on the server the
//   raw binary COPY rate of the same rows into a table of the same shape, as
//   the physical reference. Targets (server): ≥ 20,000 chunks/s; peak RSS
//   ≤ 200 MiB, and flat (within ±15%) when the benchmark's corpus grows
//   tenfold, to M files (default 10 × N; 0 skips that run, and the check);
//   the unchanged re-run ≥ 20× faster than the first run. The growth from
//   the N/10-file corpus, a tenth of the benchmark's, is printed too, with
//   no target: so short a run ends before the process has reached the
//   memory it keeps for the rest of a longer one. Each of these runs is
//   repeated R times (default 3, each first run into an empty store): the
//   figures are medians, with the range of the R runs next to them. With
//   each store's first runs, the CPU time they used: the ragpipe process's
//   (all its threads, and its main thread alone) and, when the server runs
//   on this machine, the server's, against the process's wall-clock time —
//   how many of the machine's cores the run kept busy.
//
// Each case runs on the embedded PGlite store, and on a PostgreSQL server
// when one answers (RAGPIPE_BENCH_DATABASE_URL, DATABASE_URL, or the local
// postgres://postgres@127.0.0.1:5432/postgres) and offers pgvector; every
// server run uses a database of its own, dropped afterwards.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { execFileSync, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const { values } = parseArgs({
  options: {
    files: { type: "string", default: "10000" },
    only: { type: "string" },
    latency: { type: "string", default: "200" },
    concurrency: { type: "string", default: "4" },
    batch: { type: "string", default: "32" },
    repeat: { type: "string", default: "3" },
    "large-files": { type: "string" }
  }
})

const { Effect, Layer, Redacted, Stream, Either } = await import("effect")
const { default: Pg } = await import("pg")
const { from: copyFrom } = await import("pg-copy-streams")
const { Chunker, Database, Embedder, Ingest, Loader, ResourceLedger, VectorStore } = await import(
  path.join(root, "dist", "index.js")
)
const { makeHashingEmbedder } = await import(path.join(root, "dist", "internal", "hashingEmbedder.js"))
const { encodeChunkRows, copyHeader, copyTrailer } = await import(path.join(root, "dist", "internal", "copyBinary.js"))

const targets = { serverChunksPerSecond: 20_000, peakRssMiB: 200, rssFlatness: 0.15, rerunSpeedup: 20, providerRatio: 0.9 }

/** The server to benchmark against too: configured, or the local one when it answers and has pgvector. */
const findServer = async () => {
  const url = process.env.RAGPIPE_BENCH_DATABASE_URL ?? process.env.DATABASE_URL ??
    "postgres://postgres@127.0.0.1:5432/postgres"
  const client = new Pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 })
  try {
    await client.connect()
    const r = await client.query("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
    return r.rowCount === 1 ? url : undefined
  } catch {
    return undefined
  } finally {
    await client.end().catch(() => {})
  }
}
const serverUrl = await findServer()

/** Run one statement on the server's maintenance connection. */
const admin = async (statement) => {
  const client = new Pg.Client({ connectionString: serverUrl })
  await client.connect()
  try {
    return await client.query(statement)
  } finally {
    await client.end()
  }
}
const databases = []
/** A fresh database on the server; its URL. */
const freshDatabase = async () => {
  const name = `ragpipe_bench_${process.pid}_${databases.length + 1}`
  databases.push(name)
  await admin(`CREATE DATABASE ${name}`)
  const url = new URL(serverUrl)
  url.pathname = `/${name}`
  return url.toString()
}
const dropDatabase = (name) => admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
const dropDatabases = async () => {
  for (const name of databases) await dropDatabase(name).catch(() => {})
}

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "ragpipe-bench-"))
const makeCorpus = (dir, files) =>
  execFileSync(process.execPath, [path.join(root, "scripts", "make-corpus.mjs"), dir, "--files", String(files), "--seed", "1"])
const files = Number(values.files)
const corpus = path.join(scratch, "corpus")
const smallCorpus = path.join(scratch, "corpus-small")
const providerCorpus = path.join(scratch, "corpus-provider")
makeCorpus(corpus, files)
makeCorpus(smallCorpus, Math.max(1, Math.round(files / 10)))
makeCorpus(providerCorpus, Math.max(1, Math.round(files / 5)))
const largeFiles = values["large-files"] === undefined ? 10 * files : Number(values["large-files"])
/** The corpus ten times the benchmark's, made when the server case first needs it. */
const largeCorpus = path.join(scratch, "corpus-large")

/** Start scripts/fault-server.mjs; resolves once it listens. */
const startFaultServer = (args) =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(root, "scripts", "fault-server.mjs"), "--port", "0", ...args], {
      stdio: ["ignore", "pipe", "inherit"]
    })
    let out = ""
    const onData = (data) => {
      out += data
      const line = out.split("\n")[0]
      if (out.includes("\n")) {
        child.stdout.off("data", onData)
        const { url } = JSON.parse(line)
        resolve({
          url,
          stop: () => new Promise((done) => {
            child.once("close", done)
            child.kill("SIGTERM")
          })
        })
      }
    }
    child.stdout.on("data", onData)
    child.once("error", reject)
    child.once("close", (code) => reject(new Error(`fault server exited with ${code}`)))
  })

/**
 * `ragpipe ingest` in a process of its own: its JSON summary, peak RSS, CPU
 * time (see scripts/measure-cli.mjs) and wall-clock time; with `serverCpu`,
 * the CPU time the server's processes used meanwhile.
 */
const cliIngest = (dir, storeArgs, serverCpu) =>
  new Promise((resolve, reject) => {
    const serverBefore = serverCpu?.()
    const start = performance.now()
    const child = spawn(
      process.execPath,
      [path.join(root, "scripts", "measure-cli.mjs"), "ingest", dir, ...storeArgs, "--json"],
      { stdio: ["ignore", "pipe", "pipe"] }
    )
    let out = ""
    let err = ""
    child.stdout.on("data", (d) => (out += d))
    child.stderr.on("data", (d) => (err += d))
    child.once("error", reject)
    child.once("close", (code) => {
      const wallMs = Math.round(performance.now() - start)
      const serverAfter = serverCpu?.()
      const lastLine = (text) => text.trim().split("\n").filter((l) => l.startsWith("{")).at(-1)
      if (code !== 0) return reject(new Error(`ragpipe ingest exited with ${code}: ${err.trim()}`))
      const summary = JSON.parse(lastLine(out))
      const { maxRssKiB, cpuMs, mainThreadCpuMs } = JSON.parse(lastLine(err))
      resolve({
        summary,
        peakRssMiB: Math.round(maxRssKiB / 1024),
        cpu: {
          ragpipeMs: cpuMs,
          mainThreadMs: mainThreadCpuMs,
          serverMs: serverBefore === undefined || serverAfter === undefined ? null : serverAfter - serverBefore,
          wallMs
        }
      })
    })
  })

/**
 * When the server runs on this machine (its backends are visible in /proc):
 * a function returning the CPU time, in ms, used so far by the postmaster
 * and its processes — the live ones, and the backends that have exited
 * (counted in the postmaster's children's times once it has reaped them).
 * Undefined elsewhere.
 */
const localServerCpu = async (url) => {
  /** The fields of /proc/<pid>/stat after the command name: [state, ppid, ...]. */
  const statOf = (pid) => {
    try {
      const text = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
      return text.slice(text.lastIndexOf(")") + 2).split(" ")
    } catch {
      return undefined
    }
  }
  const isPostgres = (pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "postgres"
    } catch {
      return false
    }
  }
  const client = new Pg.Client({ connectionString: url })
  let postmaster
  try {
    await client.connect()
    // read while the connection, and so its backend, is open
    const backend = (await client.query("SELECT pg_backend_pid() AS pid")).rows[0].pid
    if (isPostgres(backend)) postmaster = statOf(backend)?.[1]
  } catch {
    return undefined
  } finally {
    await client.end().catch(() => {})
  }
  if (postmaster === undefined || !isPostgres(postmaster)) return undefined
  // utime, stime, cutime and cstime are the stat fields 14–17, in ticks of
  // USER_HZ (100 per second on Linux)
  const ticks = (fields, withChildren) =>
    Number(fields[11]) + Number(fields[12]) + (withChildren ? Number(fields[13]) + Number(fields[14]) : 0)
  return () => {
    let total = 0
    for (const entry of fs.readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue
      const fields = statOf(entry)
      if (fields === undefined) continue
      if (entry === postmaster) total += ticks(fields, true)
      else if (fields[1] === postmaster) total += ticks(fields, false)
    }
    return total * 10
  }
}

const rate = (chunks, ms) => Math.round(chunks / (ms / 1000))
const verdict = (ok) => (ok ? "meets" : "MISSES")
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}
/** [min, max] */
const rangeOf = (values) => [Math.min(...values), Math.max(...values)]
/** "median unit (min–max over R runs)" */
const spread = (values, unit, format = String) =>
  values.length === 1
    ? `${format(values[0])}${unit}`
    : `${format(median(values))}${unit} (${rangeOf(values).map(format).join("–")} over ${values.length} runs)`

/** The rows an ingest of `dir` writes, chunked and embedded as the pipeline does. */
const rowsOf = async (dir) => {
  const docs = await Effect.runPromise(
    Stream.runCollect(Loader.walk({ root: dir })).pipe(Effect.provide(ResourceLedger.layer()))
  )
  const embedder = makeHashingEmbedder({ dimensions: 384 })
  const rows = []
  let documentId = 0
  for (const item of docs) {
    if (Either.isLeft(item)) continue
    documentId++
    const chunks = Chunker.chunkDocument(item.right, Chunker.defaults)
    const vectors = Effect.runSync(embedder.embedBatch(chunks.map((c) => c.text)))
    chunks.forEach((c, i) =>
      rows.push({
        id: c.id,
        documentId: String(documentId),
        chunkIndex: c.index,
        text: c.text,
        headingPath: c.headingPath,
        tokenEstimate: c.tokenEstimate,
        embedding: vectors[i]
      })
    )
  }
  return rows
}

/** Binary COPY of `rows` into a table shaped like `chunks`, 2,000 rows per transaction; rows/s (encoding included). */
const rawCopyRate = async (url, rows) => {
  const client = new Pg.Client({ connectionString: url })
  await client.connect()
  try {
    await client.query(`CREATE TABLE raw_chunks (LIKE chunks INCLUDING ALL) WITH (toast_tuple_target = 8160)`)
    const copy = (part) =>
      new Promise((resolve, reject) => {
        const stream = client.query(copyFrom(
          "COPY raw_chunks (id, document_id, chunk_index, text, heading_path, token_estimate, embedding) " +
            "FROM STDIN (FORMAT binary)"
        ))
        stream.on("error", reject)
        stream.on("finish", resolve)
        stream.write(copyHeader)
        for (let i = 0; i < part.length; i += 1000) stream.write(encodeChunkRows(part.slice(i, i + 1000)))
        stream.end(copyTrailer)
      })
    const start = performance.now()
    for (let i = 0; i < rows.length; i += 2000) {
      await client.query("BEGIN")
      await copy(rows.slice(i, i + 2000))
      await client.query("COMMIT")
    }
    return rate(rows.length, performance.now() - start)
  } finally {
    await client.query("DROP TABLE IF EXISTS raw_chunks").catch(() => {})
    await client.end()
  }
}

/** The server's CPU time so far, when it runs on this machine. */
const serverCpu = serverUrl === undefined ? undefined : await localServerCpu(serverUrl)

const results = {}
const chunker = { chunkSize: 1000, chunkOverlap: 200 }
const stores = [
  ...(serverUrl === undefined ? [] : [{
    name: "server",
    cpu: serverCpu,
    library: async () => {
      const url = await freshDatabase()
      return VectorStore.layer.pipe(Layer.provide(Database.layerServer({ url: Redacted.make(url) })))
    },
    cli: async () => {
      const url = await freshDatabase()
      return { url, args: ["--database-url", url] }
    }
  }]),
  {
    name: "PGlite",
    library: async () =>
      VectorStore.layer.pipe(Layer.provide(Database.layerPglite({ dataDir: fs.mkdtempSync(path.join(scratch, "db-")) }))),
    cli: async () => ({ args: ["--data-dir", fs.mkdtempSync(path.join(scratch, "db-"))] })
  }
]

try {
  for (const store of stores) {
    if (values.only === undefined || values.only === "provider") {
      const L = Number(values.latency)
      const C = Number(values.concurrency)
      const B = Number(values.batch)
      // the provider runs in a process of its own, as a real one would
      const server = await startFaultServer(["--dimensions", "384", "--latency-ms", String(L), "--concurrency", String(C)])
      let summary
      try {
        const embedder = Embedder.layerOpenAi({ baseUrl: server.url, model: "bench", dimensions: 384, maxSockets: C })
        summary = await Effect.runPromise(
          Ingest.ingestDirectory({ root: providerCorpus }, { chunker, batchSize: B, concurrency: C, batchWindow: "20 millis" })
            .pipe(Effect.provide(Layer.merge(await store.library(), embedder)), Effect.provide(ResourceLedger.layer()))
        )
      } finally {
        await server.stop()
      }
      const chunksPerSecond = rate(summary.chunks.written, summary.durationMs)
      const ceiling = (C * B) / (L / 1000)
      const ratio = Number((chunksPerSecond / ceiling).toFixed(3))
      results[`provider-${store.name}`] = { chunks: summary.chunks.written, durationMs: summary.durationMs, chunksPerSecond, ceiling, ratio }
      console.log(
        `provider → ${store.name}: ${summary.chunks.written} chunks in ${summary.durationMs} ms = ${chunksPerSecond} ` +
          `chunks/s; ceiling C×B/L = ${C}×${B}/${L}ms = ${ceiling} chunks/s; ratio ${ratio} ` +
          `(${verdict(ratio >= targets.providerRatio)} ≥ ${targets.providerRatio})`
      )
    }

    if (values.only === undefined || values.only === "ingest") {
      const repeat = Math.max(1, Number(values.repeat))
      const smalls = []
      const firsts = []
      const reruns = []
      let target
      for (let i = 0; i < repeat; i++) {
        smalls.push(await cliIngest(smallCorpus, (await store.cli()).args))
        target = await store.cli()
        firsts.push(await cliIngest(corpus, target.args, store.cpu))
        reruns.push(await cliIngest(corpus, target.args))
      }
      const first = firsts[0]
      const rates = firsts.map((r) => rate(r.summary.chunks.written, r.summary.durationMs))
      const durations = firsts.map((r) => r.summary.durationMs)
      const peaks = firsts.map((r) => r.peakRssMiB)
      const smallPeaks = smalls.map((r) => r.peakRssMiB)
      const rerunDurations = reruns.map((r) => r.summary.durationMs)
      const speedups = firsts.map((r, i) =>
        Number((r.summary.durationMs / Math.max(1, reruns[i].summary.durationMs)).toFixed(1))
      )
      // the same, timed as a user times a command: the whole process, from its start to its exit
      const processSpeedups = firsts.map((r, i) => Number((r.cpu.wallMs / Math.max(1, reruns[i].cpu.wallMs)).toFixed(1)))
      const chunksPerSecond = median(rates)
      const cpuOf = (key) => firsts.every((r) => r.cpu[key] !== null) ? median(firsts.map((r) => r.cpu[key])) : null
      const cpu = {
        ragpipeMs: cpuOf("ragpipeMs"),
        mainThreadMs: cpuOf("mainThreadMs"),
        serverMs: cpuOf("serverMs"),
        wallMs: cpuOf("wallMs")
      }
      cpu.coresBusy = Number(((cpu.ragpipeMs + (cpu.serverMs ?? 0)) / cpu.wallMs).toFixed(2))
      const peakRssMiB = median(peaks)
      const smallPeakRssMiB = median(smallPeaks)
      const rssGrowth = Number((peakRssMiB / smallPeakRssMiB - 1).toFixed(3))
      const speedup = Number(median(speedups).toFixed(2))
      const entry = {
        runs: repeat,
        files: first.summary.files.ingested,
        chunks: first.summary.chunks.written,
        durationMs: median(durations),
        chunksPerSecond,
        chunksPerSecondRange: rangeOf(rates),
        peakRssMiB,
        peakRssMiBRange: rangeOf(peaks),
        small: {
          chunks: smalls[0].summary.chunks.written,
          chunksPerSecond: median(smalls.map((r) => rate(r.summary.chunks.written, r.summary.durationMs))),
          peakRssMiB: smallPeakRssMiB,
          peakRssMiBRange: rangeOf(smallPeaks)
        },
        rssGrowth,
        rerun: {
          unchanged: reruns[0].summary.files.unchanged,
          durationMs: median(rerunDurations),
          durationMsRange: rangeOf(rerunDurations),
          peakRssMiB: median(reruns.map((r) => r.peakRssMiB)),
          processMs: median(reruns.map((r) => r.cpu.wallMs)),
          processMsRange: rangeOf(reruns.map((r) => r.cpu.wallMs))
        },
        rerunSpeedup: speedup,
        rerunSpeedupRange: rangeOf(speedups),
        rerunProcessSpeedup: median(processSpeedups),
        cpu
      }
      const thousands = (n) => Math.round(n).toLocaleString("en-US")
      console.log(
        `ingest → ${store.name}: ${entry.files} files, ${entry.chunks} chunks in ${spread(durations, " ms", thousands)} = ` +
          `${spread(rates, " chunks/s", thousands)}` +
          (store.name === "server"
            ? ` (${verdict(chunksPerSecond >= targets.serverChunksPerSecond)} ≥ ${targets.serverChunksPerSecond})`
            : "")
      )
      // what bounds the run: the CPU the machine had, or waiting
      console.log(
        `  CPU of a first run (medians): ragpipe ${thousands(cpu.ragpipeMs)} ms` +
          (cpu.mainThreadMs === null ? "" : ` (main thread ${thousands(cpu.mainThreadMs)} ms)`) +
          (cpu.serverMs === null ? "" : `, server ${thousands(cpu.serverMs)} ms`) +
          ` in a process of ${thousands(cpu.wallMs)} ms: ${cpu.coresBusy} of ${os.availableParallelism()} cores busy` +
          (store.name === "server" && cpu.serverMs === null ? " (the server's own CPU is not counted: not on this machine)" : "")
      )
      console.log(
        `  peak RSS ${spread(peaks, " MiB")} for ${entry.chunks} chunks, ${spread(smallPeaks, " MiB")} for ` +
          `${entry.small.chunks}: ${rssGrowth >= 0 ? "+" : ""}${(rssGrowth * 100).toFixed(1)}% (medians)` +
          (store.name === "server"
            ? ` (${verdict(peakRssMiB <= targets.peakRssMiB)} ≤ ${targets.peakRssMiB} MiB; ` +
              (largeFiles > 0
                ? `±${targets.rssFlatness * 100}% is checked as the corpus grows ${Number((largeFiles / files).toFixed(1))}× below)`
                : `±${targets.rssFlatness * 100}% not checked: --large-files 0)`)
            : "")
      )
      console.log(
        `  unchanged re-run: ${entry.rerun.unchanged} files in ${spread(rerunDurations, " ms")}, ` +
          `${spread(speedups, "×", (x) => String(Number(x.toFixed(2))))} faster than the first run` +
          (store.name === "server" ? ` (${verdict(speedup >= targets.rerunSpeedup)} ≥ ${targets.rerunSpeedup}×)` : "")
      )
      console.log(
        `    as whole processes, start to exit: ${spread(reruns.map((r) => r.cpu.wallMs), " ms", thousands)} against ` +
          `${spread(firsts.map((r) => r.cpu.wallMs), " ms", thousands)} for the first run, ` +
          `${spread(processSpeedups, "×", (x) => String(Number(x.toFixed(2))))} faster`
      )
      if (store.name === "server") {
        const rows = await rowsOf(corpus)
        const copyRate = await rawCopyRate(target.url, rows)
        entry.rawCopyRowsPerSecond = copyRate
        entry.ratioToRawCopy = Number((chunksPerSecond / copyRate).toFixed(3))
        console.log(
          `  raw binary COPY of the same ${rows.length} rows (encoding included, 2,000 per transaction): ` +
            `${copyRate} rows/s; the ingest (median) runs at ${entry.ratioToRawCopy} of it`
        )
        if (largeFiles > 0) {
          if (!fs.existsSync(largeCorpus)) makeCorpus(largeCorpus, largeFiles)
          const larges = []
          for (let i = 0; i < repeat; i++) {
            const large = await store.cli()
            larges.push(await cliIngest(largeCorpus, large.args))
            // each of these stores holds about 1.3 GiB: dropped at once
            await dropDatabase(new URL(large.url).pathname.slice(1))
          }
          const largePeaks = larges.map((r) => r.peakRssMiB)
          const largeRates = larges.map((r) => rate(r.summary.chunks.written, r.summary.durationMs))
          const largePeak = median(largePeaks)
          const growth = Number((largePeak / peakRssMiB - 1).toFixed(3))
          entry.large = {
            files: larges[0].summary.files.ingested,
            chunks: larges[0].summary.chunks.written,
            chunksPerSecond: median(largeRates),
            peakRssMiB: largePeak,
            peakRssMiBRange: rangeOf(largePeaks),
            rssGrowth: growth
          }
          console.log(
            `  ${Number((largeFiles / files).toFixed(1))}× the corpus: ${entry.large.files} files, ` +
              `${entry.large.chunks} chunks at ` +
              `${spread(largeRates, " chunks/s", thousands)}; peak RSS ${spread(largePeaks, " MiB")}: ` +
              `${growth >= 0 ? "+" : ""}${(growth * 100).toFixed(1)}% against the ${entry.chunks}-chunk corpus (medians) ` +
              `(${verdict(largePeak <= targets.peakRssMiB)} ≤ ${targets.peakRssMiB} MiB; ` +
              `${verdict(Math.abs(growth) <= targets.rssFlatness)} ±${targets.rssFlatness * 100}%)`
          )
        }
      }
      results[`ingest-${store.name}`] = entry
    }
  }
} finally {
  fs.rmSync(scratch, { recursive: true, force: true })
  if (serverUrl !== undefined) await dropDatabases()
}
console.log(JSON.stringify(results))

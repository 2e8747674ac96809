#!/usr/bin/env node
// Benchmarks (not tests): `npm run bench` builds first, then runs each case
// and prints one line per case plus a JSON summary as the last line.
//
//   node scripts/bench.mjs [--files N] [--only provider|embedded]
//
// provider: the fault server with zero faults, a fixed latency L and a
//   concurrency cap C; ingest with batch B and concurrency C. The physical
//   ceiling is C × B / L chunks/s; the ratio to it is printed.
// embedded: the hashing embedder into the embedded PGlite store: chunks/s
//   and the process's peak RSS.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { execFileSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const { values } = parseArgs({
  options: {
    files: { type: "string", default: "600" },
    only: { type: "string" },
    latency: { type: "string", default: "200" },
    concurrency: { type: "string", default: "4" },
    batch: { type: "string", default: "32" }
  }
})

const { Effect, Layer, Stream } = await import("effect")
const { Database, Embedder, FaultServer, Ingest, ResourceLedger, VectorStore } = await import(
  path.join(root, "dist", "index.js")
)

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "ragpipe-bench-"))
const corpus = path.join(scratch, "corpus")
execFileSync(process.execPath, [path.join(root, "scripts", "make-corpus.mjs"), corpus, "--files", values.files, "--seed", "1"])

const results = {}
const chunker = { chunkSize: 1000, chunkOverlap: 200 }

const { Redacted } = await import("effect")
const serverUrl = process.env.RAGPIPE_BENCH_DATABASE_URL ?? process.env.DATABASE_URL
let schemas = 0
/** A fresh store: a schema on the server when one is configured, else an embedded database. */
const storeLayer = (dir) =>
  serverUrl === undefined
    ? VectorStore.layer.pipe(Layer.provide(Database.layerPglite({ dataDir: dir })))
    : VectorStore.layer.pipe(Layer.provide(Database.layerServer({
      url: Redacted.make(serverUrl),
      schema: `bench_${process.pid}_${++schemas}`
    })))
const dropSchemas = async () => {
  if (serverUrl === undefined) return
  const { default: Pg } = await import("pg")
  const client = new Pg.Client({ connectionString: serverUrl })
  await client.connect()
  for (let i = 1; i <= schemas; i++) await client.query(`DROP SCHEMA IF EXISTS bench_${process.pid}_${i} CASCADE`)
  await client.end()
}

const runIngest = (layers, options) =>
  Effect.runPromise(
    Ingest.ingestDirectory({ root: corpus }, { chunker, ...options }).pipe(
      Effect.provide(layers),
      Effect.provide(ResourceLedger.layer())
    )
  )

try {
  if (values.only === undefined || values.only === "provider") {
    const L = Number(values.latency)
    const C = Number(values.concurrency)
    const B = Number(values.batch)
    const summary = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const server = yield* FaultServer.start({ dimensions: 384, latencyMillis: L, concurrency: C })
      const embedder = Embedder.layerOpenAi({ baseUrl: server.url, model: "bench", dimensions: 384, maxSockets: C })
      return yield* Effect.promise(() =>
        runIngest(Layer.merge(storeLayer(path.join(scratch, "provider-store")), embedder), {
          batchSize: B,
          concurrency: C,
          batchWindow: "20 millis"
        })
      )
    })))
    const rate = summary.chunks.written / (summary.durationMs / 1000)
    const ceiling = (C * B) / (L / 1000)
    results.provider = {
      chunks: summary.chunks.written,
      durationMs: summary.durationMs,
      chunksPerSecond: Math.round(rate),
      ceiling,
      ratio: Number((rate / ceiling).toFixed(3))
    }
    console.log(
      `provider: ${summary.chunks.written} chunks in ${summary.durationMs} ms = ${rate.toFixed(0)} chunks/s; ` +
        `ceiling C×B/L = ${C}×${B}/${L}ms = ${ceiling.toFixed(0)} chunks/s; ratio ${(rate / ceiling).toFixed(3)}`
    )
  }

  if (values.only === undefined || values.only === "embedded") {
    const summary = await runIngest(
      Layer.merge(storeLayer(path.join(scratch, "embedded-store")), Embedder.layerHashing()),
      {}
    )
    const rate = summary.chunks.written / (summary.durationMs / 1000)
    results.embedded = {
      files: summary.files.ingested,
      chunks: summary.chunks.written,
      durationMs: summary.durationMs,
      chunksPerSecond: Math.round(rate),
      peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024)
    }
    console.log(
      `hashing → ${serverUrl === undefined ? "PGlite" : "server"}: ${summary.files.ingested} files, ${summary.chunks.written} chunks in ` +
        `${summary.durationMs} ms = ${rate.toFixed(0)} chunks/s; peak RSS ${results.embedded.peakRssMiB} MiB`
    )
  }
} finally {
  fs.rmSync(scratch, { recursive: true, force: true })
  await dropSchemas()
}
console.log(JSON.stringify(results))

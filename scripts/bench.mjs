#!/usr/bin/env node
// Benchmarks (not tests): `npm run bench` builds first, then runs each case
// and prints one line per case plus a JSON summary as the last line.
//
//   node scripts/bench.mjs [--files N] [--only provider|hashing]
//        [--latency MS] [--concurrency C] [--batch B]
//
// provider: the fault server with zero faults, a fixed latency L and a
//   concurrency cap C; ingest with batch B and concurrency C. The physical
//   ceiling is C × B / L chunks/s; the ratio to it is printed.
// hashing: the hashing embedder into the store: chunks/s and the process's
//   peak RSS.
// Each case runs on the embedded PGlite store, and also on a PostgreSQL
// server when one answers (RAGPIPE_BENCH_DATABASE_URL, DATABASE_URL, or the
// local postgres://postgres@127.0.0.1:5432/postgres) and offers pgvector;
// server runs use a schema of their own, dropped afterwards.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { execFileSync, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const { values } = parseArgs({
  options: {
    files: { type: "string", default: "1500" },
    only: { type: "string" },
    latency: { type: "string", default: "200" },
    concurrency: { type: "string", default: "4" },
    batch: { type: "string", default: "32" }
  }
})

const { Effect, Layer, Redacted } = await import("effect")
const { default: Pg } = await import("pg")
const { Database, Embedder, Ingest, ResourceLedger, VectorStore } = await import(
  path.join(root, "dist", "index.js")
)

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
let schemas = 0
const stores = [
  { name: "PGlite", layer: (dir) => VectorStore.layer.pipe(Layer.provide(Database.layerPglite({ dataDir: dir }))) },
  ...(serverUrl === undefined ? [] : [{
    name: "server",
    layer: () =>
      VectorStore.layer.pipe(Layer.provide(Database.layerServer({
        url: Redacted.make(serverUrl),
        schema: `bench_${process.pid}_${++schemas}`
      })))
  }])
]
const dropSchemas = async () => {
  if (serverUrl === undefined) return
  const client = new Pg.Client({ connectionString: serverUrl })
  await client.connect()
  for (let i = 1; i <= schemas; i++) await client.query(`DROP SCHEMA IF EXISTS bench_${process.pid}_${i} CASCADE`)
  await client.end()
}

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "ragpipe-bench-"))
const corpus = path.join(scratch, "corpus")
execFileSync(process.execPath, [path.join(root, "scripts", "make-corpus.mjs"), corpus, "--files", values.files, "--seed", "1"])

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

const results = {}
const chunker = { chunkSize: 1000, chunkOverlap: 200 }

const runIngest = (layers, options) =>
  Effect.runPromise(
    Ingest.ingestDirectory({ root: corpus }, { chunker, ...options }).pipe(
      Effect.provide(layers),
      Effect.provide(ResourceLedger.layer())
    )
  )

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
        summary = await runIngest(Layer.merge(store.layer(path.join(scratch, `provider-${store.name}`)), embedder), {
          batchSize: B,
          concurrency: C,
          batchWindow: "20 millis"
        })
      } finally {
        await server.stop()
      }
      const rate = summary.chunks.written / (summary.durationMs / 1000)
      const ceiling = (C * B) / (L / 1000)
      results[`provider-${store.name}`] = {
        chunks: summary.chunks.written,
        durationMs: summary.durationMs,
        chunksPerSecond: Math.round(rate),
        ceiling,
        ratio: Number((rate / ceiling).toFixed(3))
      }
      console.log(
        `provider → ${store.name}: ${summary.chunks.written} chunks in ${summary.durationMs} ms = ` +
          `${rate.toFixed(0)} chunks/s; ceiling C×B/L = ${C}×${B}/${L}ms = ${ceiling.toFixed(0)} chunks/s; ` +
          `ratio ${(rate / ceiling).toFixed(3)}`
      )
    }

    if (values.only === undefined || values.only === "hashing") {
      const summary = await runIngest(
        Layer.merge(store.layer(path.join(scratch, `hashing-${store.name}`)), Embedder.layerHashing()),
        {}
      )
      const rate = summary.chunks.written / (summary.durationMs / 1000)
      const peakRssMiB = Math.round(process.resourceUsage().maxRSS / 1024)
      results[`hashing-${store.name}`] = {
        files: summary.files.ingested,
        chunks: summary.chunks.written,
        durationMs: summary.durationMs,
        chunksPerSecond: Math.round(rate),
        peakRssMiB
      }
      console.log(
        `hashing → ${store.name}: ${summary.files.ingested} files, ${summary.chunks.written} chunks in ` +
          `${summary.durationMs} ms = ${rate.toFixed(0)} chunks/s; peak RSS of the process so far ${peakRssMiB} MiB`
      )
    }
  }
} finally {
  fs.rmSync(scratch, { recursive: true, force: true })
  await dropSchemas()
}
console.log(JSON.stringify(results))

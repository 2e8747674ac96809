// Bring your own embedder: a plain function from text to vector becomes an
// Embedder layer with `Embedder.layerTest`, and the whole pipeline — ingest,
// then search — runs on it, with the in-memory store (no database).
//
//   npm run build && node scripts/examples/custom-embedder.mjs
import { Effect, Layer, Logger, LogLevel } from "effect"
import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import { Embedder, Ingest, MemoryVectorStore, ResourceLedger, Search } from "ragpipe"

// Our "model": a bag of words hashed into 64 slots, then scaled to length 1
// (cosine similarity only looks at directions). Words of 1-2 letters are dropped.
const dimensions = 64
const embedText = (text) => {
  const vector = new Float32Array(dimensions)
  for (const word of text.toLowerCase().match(/[a-z]{3,}/g) ?? []) {
    let hash = 7
    for (const c of word) hash = (hash * 31 + c.charCodeAt(0)) >>> 0
    vector[hash % dimensions] += 1
  }
  const norm = Math.hypot(...vector) || 1
  return vector.map((x) => x / norm)
}

// The Embedder service: a model name (stored with every document), the vector
// length, the largest batch accepted, and a batch function returning an Effect.
const BagOfWords = Embedder.layerTest({
  model: "bag-of-words-64",
  dimensions,
  maxBatchSize: 16,
  embedBatch: (texts) => Effect.succeed(texts.map(embedText))
})

// A small corpus in a temporary directory, removed when the program's scope closes.
const corpus = Effect.acquireRelease(
  Effect.sync(() => {
    const root = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "ragpipe-example-"))
    const files = {
      "animals/zebra.md": "# Zebras\n\nZebras are African horses with black and white stripes.\n",
      "space/mars.md": "# Mars\n\nMars is the red planet: a cold planet with a thin atmosphere.\n",
      "kitchen/bread.txt": "Bread needs flour, water, salt and yeast. Knead the dough, then bake it.\n",
      "tools/hammer.txt": "A hammer drives nails into wood. Hold it near the end of its handle.\n"
    }
    for (const [path, text] of Object.entries(files)) {
      NodeFs.mkdirSync(NodePath.join(root, NodePath.dirname(path)), { recursive: true })
      NodeFs.writeFileSync(NodePath.join(root, path), text)
    }
    return root
  }),
  (root) => Effect.sync(() => NodeFs.rmSync(root, { recursive: true, force: true }))
)

const program = Effect.gen(function*() {
  const root = yield* corpus
  const summary = yield* Ingest.ingestDirectory({ root })
  console.log(`ingested ${summary.files.ingested} files, ${summary.chunks.written} chunks`)

  const hits = yield* Search.search("which planet is red?", { limit: 3 })
  for (const hit of hits) console.log(`  #${hit.rank} ${hit.path} (score ${hit.score.toFixed(3)})`)
  console.log(`top hit: ${hits[0].path}`)
})

// One layer for the whole program: ingest and search see the same store.
// (Providing the store twice would build two separate, empty stores.)
const AppLayer = Layer.mergeAll(MemoryVectorStore.layer, BagOfWords, ResourceLedger.layer())

await Effect.runPromise(program.pipe(
  Effect.scoped,
  Effect.provide(AppLayer),
  // the library logs its progress at Info level; show warnings and errors only
  Logger.withMinimumLogLevel(LogLevel.Warning)
))

/**
 * The hashing embedder on worker threads. Embedding is pure CPU work; on a
 * machine with a spare core, running it beside the main thread (which reads
 * files, chunks and writes to the store) roughly doubles what one ingest can
 * push through.
 *
 * The workers run {@link hashingKernel} — its source text, as it is
 * self-contained — and answer each batch with one transferred buffer. They
 * start on the first batch large enough to be worth the round trip (a search
 * query is embedded on the calling thread and never starts one), belong to
 * the scope the embedder was built in, and are terminated when it closes. A
 * fiber interrupted while waiting simply drops the answer.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import { Worker } from "node:worker_threads"
import type { Service } from "../Embedder.js"
import { EmbedError } from "../Errors.js"
import { ResourceLedger } from "../ResourceLedger.js"
import { hashingKernel, kernelSettings, makeHashingEmbedder, maxBatchSize, model } from "./hashingEmbedder.js"

/** Batches smaller than this are embedded on the calling thread. */
const minWorkerBatch = 16

interface Request {
  readonly count: number
  readonly resume: (effect: Effect.Effect<ReadonlyArray<Float32Array>, EmbedError>) => void
}

interface Slot {
  readonly worker: Worker
  readonly pending: Map<number, Request>
  /** texts sent and not yet answered */
  load: number
  alive: boolean
}

/** The worker's program: the kernel's source, then a message loop. */
const workerSource = `"use strict";
const { parentPort, workerData } = require("node:worker_threads");
const embed = (${hashingKernel.toString()})(workerData);
const dimensions = workerData.dimensions;
parentPort.on("message", (request) => {
  try {
    const out = new Float32Array(request.texts.length * dimensions);
    for (let i = 0; i < request.texts.length; i++) embed(request.texts[i], out, i * dimensions);
    parentPort.postMessage({ id: request.id, buffer: out.buffer }, [out.buffer]);
  } catch (error) {
    parentPort.postMessage({ id: request.id, error: String(error && error.stack || error) });
  }
});
`

/**
 * One vector per text: views into the batch's buffer, which lives as long as
 * any of them (caches keep copies: `EmbeddingCache.detached`).
 */
const split = (buffer: ArrayBuffer, count: number, dimensions: number): ReadonlyArray<Float32Array> => {
  const vectors = new Array<Float32Array>(count)
  for (let i = 0; i < count; i++) vectors[i] = new Float32Array(buffer, i * dimensions * 4, dimensions)
  return vectors
}

/**
 * The workers' heap limits: a worker holds one batch of texts and its
 * vectors at a time, and no more heap than that needs.
 */
const resourceLimits = { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 128 }

const workerFailed = (detail: string) =>
  new EmbedError({ reason: "provider", message: `the hashing embedder's worker thread failed: ${detail}` })

/**
 * The hashing embedder with `workers` worker threads (at least 1), living in
 * the current scope.
 *
 * @internal
 */
export const makeHashingWorkers = (options: {
  readonly dimensions: number
  readonly workers: number
}): Effect.Effect<Service, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { dimensions } = options
    const scope = yield* Effect.scope
    const ledger = yield* Effect.serviceOption(ResourceLedger)
    const local = makeHashingEmbedder({ dimensions })
    const slots: Array<Slot> = []
    let nextId = 0
    let closed = false

    const failAll = (slot: Slot, error: EmbedError) => {
      slot.alive = false
      const requests = [...slot.pending.values()]
      slot.pending.clear()
      slot.load = 0
      for (const request of requests) request.resume(Effect.fail(error))
    }

    const spawn = (index: number): Slot => {
      const worker = new Worker(workerSource, { eval: true, workerData: kernelSettings(dimensions), resourceLimits })
      const slot: Slot = { worker, pending: new Map(), load: 0, alive: true }
      worker.on("message", (message: { id: number; buffer?: ArrayBuffer; error?: string }) => {
        const request = slot.pending.get(message.id)
        if (request === undefined) return // its fiber was interrupted
        slot.pending.delete(message.id)
        slot.load -= request.count
        request.resume(
          message.buffer === undefined
            ? Effect.fail(workerFailed(message.error ?? "no answer"))
            : Effect.succeed(split(message.buffer, request.count, dimensions))
        )
      })
      worker.on("error", (error) => failAll(slot, workerFailed(error.message)))
      worker.on("exit", (code) => {
        if (slot.alive) failAll(slot, workerFailed(`it exited with code ${code}`))
      })
      slots[index] = slot
      return slot
    }

    const terminate = (slot: Slot) =>
      Effect.promise(() => {
        slot.alive = false
        return slot.worker.terminate()
      })

    /** The least loaded live worker, (re)starting workers as needed; in the embedder's scope. */
    const pick: Effect.Effect<Slot> = Effect.suspend(() => {
      let best: Slot | undefined
      const starts: Array<Effect.Effect<Slot, never, Scope.Scope>> = []
      for (let i = 0; i < options.workers; i++) {
        const slot = slots[i]
        if (slot === undefined || !slot.alive) {
          const index = i
          const acquire = Effect.sync(() => spawn(index))
          starts.push(
            Option.match(ledger, {
              onNone: () => Effect.acquireRelease(acquire, terminate),
              onSome: (l) => l.acquireRelease("worker", acquire, terminate, `hashing-worker-${index}`)
            })
          )
        } else if (best === undefined || slot.load < best.load) {
          best = slot
        }
      }
      if (starts.length === 0) return Effect.succeed(best!)
      return Effect.map(Effect.all(starts).pipe(Scope.extend(scope)), (started) => {
        for (const slot of started) if (best === undefined || slot.load < best.load) best = slot
        return best!
      })
    })

    yield* Effect.addFinalizer(() => Effect.sync(() => void (closed = true)))

    const embedBatch: Service["embedBatch"] = (texts) =>
      texts.length < minWorkerBatch || closed
        ? local.embedBatch(texts)
        : Effect.flatMap(pick, (slot) =>
          Effect.async<ReadonlyArray<Float32Array>, EmbedError>((resume) => {
            const id = ++nextId
            slot.pending.set(id, { count: texts.length, resume })
            slot.load += texts.length
            slot.worker.postMessage({ id, texts })
            return Effect.sync(() => {
              if (slot.pending.delete(id)) slot.load -= texts.length
            })
          }))

    return { model, dimensions, maxBatchSize, embedBatch }
  })

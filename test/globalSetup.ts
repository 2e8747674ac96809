/**
 * Builds one embedded store with the schema applied, once per test run.
 * Tests copy it instead of initialising a new database each time
 * (initialising takes seconds; copying a fraction of that).
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import * as Database from "../src/Database.js"
import * as ResourceLedger from "../src/ResourceLedger.js"
import * as VectorStore from "../src/VectorStore.js"

export default async function setup(): Promise<() => void> {
  const template = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "ragpipe-template-"))
  await Effect.runPromise(
    Effect.asVoid(VectorStore.VectorStore).pipe(
      Effect.provide(
        VectorStore.layer.pipe(
          Layer.provide(Database.layerPglite({ dataDir: template })),
          Layer.provide(ResourceLedger.layer())
        )
      )
    )
  )
  process.env["RAGPIPE_TEST_TEMPLATE"] = template
  return () => NodeFs.rmSync(template, { recursive: true, force: true })
}

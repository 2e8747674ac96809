#!/usr/bin/env node
/**
 * The `ragpipe` executable (dist/cli/ragpipe.js): loads `pg`, then runs the
 * CLI itself (main.ts and everything it imports, which scripts/bundle-cli.mjs
 * bundles into dist/cli/bundle.cjs), compiled from its code cache when one
 * fits (see codeCache.ts). With RAGPIPE_BUILD_CODE_CACHE=1 (the build sets
 * it) it writes that cache once the bundle has loaded.
 *
 * pg 8 decides as it loads whether it runs in a Cloudflare Worker. Where
 * there is no global `navigator` (Node 20 has none; Node 21 and later
 * define one) it constructs a fetch `Response` to find out, which makes
 * Node load and compile its own fetch implementation, which the CLI never
 * uses. Measured on the machine this came in on: loading pg in a new
 * process took 62–95 ms (median 67) and 32–45 ms (median 36) with a
 * `navigator`, 6 runs each; `ragpipe --version` ended 353 ms (334–414)
 * after its process started, against 365 ms (349–401) with pg loaded
 * without one, 20 alternating runs each. So pg is loaded first,
 * with a `navigator` that names Node as later versions do, which is taken
 * away as soon as pg has loaded: no other module sees it (the embedded
 * database, for one, takes its locale from `navigator.language` when
 * there is one).
 *
 * @internal
 */
import { createRequire } from "node:module"
import { fileURLToPath } from "node:url"
import { runCommonJs } from "./codeCache.js"

const lent = !("navigator" in globalThis)
if (lent) {
  Object.defineProperty(globalThis, "navigator", {
    configurable: true,
    value: { userAgent: `Node.js/${process.versions.node.split(".")[0]}` }
  })
}
try {
  createRequire(import.meta.url)("pg")
} finally {
  if (lent) delete (globalThis as { navigator?: unknown }).navigator
}
const loaded = runCommonJs(fileURLToPath(new URL("./bundle.cjs", import.meta.url)))
if (process.env["RAGPIPE_BUILD_CODE_CACHE"] === "1") loaded.writeCache()

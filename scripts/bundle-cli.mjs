#!/usr/bin/env node
// Bundles the compiled CLI (dist/cli/main.js, from `tsc`) into one
// CommonJS file, dist/cli/bundle.cjs, which the package's bin,
// dist/cli/ragpipe.js (from src/cli/ragpipe.ts), runs once it has loaded pg;
// then makes the bundle's V8 code cache, dist/cli/bundle.cjs.cache (see
// src/cli/codeCache.ts), by running the bin once (`--version`), and checks
// that a new process takes it. `npm run build` runs it after tsc.
//
// Node loads an ES module graph file by file: effect and the @effect
// packages are several hundred modules, and loading them was most of a
// short command's time (README.md, "Development", has the figures). The
// library entry (dist/index.js) stays unbundled: a program that imports
// ragpipe uses its own copy of effect.
//
// Left out of the bundle, and loaded from node_modules at run time: the
// package's own dependencies other than effect and @effect/* (pg and its
// copy streams, PGlite and its extension), which load native code, WASM or
// files next to their modules.
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { build } from "esbuild"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8"))
const bundled = (name) => name === "effect" || name.startsWith("@effect/") || name.startsWith("@types/")
const external = Object.keys(pkg.dependencies)
  .filter((name) => !bundled(name))
  .flatMap((name) => [name, `${name}/*`])

const entry = path.join(root, "dist", "cli", "main.js")
if (!fs.existsSync(entry)) {
  console.error(`bundle-cli: ${path.relative(root, entry)} is missing: run tsc first (npm run build does)`)
  process.exit(1)
}

const outfile = path.join(root, "dist", "cli", "bundle.cjs")
await build({
  entryPoints: [entry],
  outfile,
  bundle: true,
  platform: "node",
  format: "cjs",
  target: "node20",
  // esbuild's default, set because the bin reads the bundle as Latin-1 (the fastest way to a string)
  charset: "ascii",
  // import() of PGlite becomes require() of its CommonJS build: on Node 20
  // a script compiled from a code cache cannot import() ("A dynamic import
  // callback was not specified")
  supported: { "dynamic-import": false },
  external,
  // modules that find files next to their own (internal/nativeFs.ts, the
  // native addon in dist/native) see the bundle's location
  define: { "import.meta.url": "__bundleUrl" },
  banner: { js: `var __bundleUrl = require("node:url").pathToFileURL(__filename).href;` },
  logLevel: "warning"
})

const bin = path.join(root, "dist", "cli", "ragpipe.js")
fs.chmodSync(bin, 0o755)
const { cacheFileOf } = await import(path.join(root, "dist", "cli", "codeCache.js"))
fs.rmSync(cacheFileOf(outfile), { force: true })
execFileSync(process.execPath, [bin, "--version"], {
  env: { ...process.env, RAGPIPE_BUILD_CODE_CACHE: "1" },
  stdio: ["ignore", "ignore", "inherit"]
})
// V8 refuses a cache made with other flags than the process's: check in a new process
const check = `import { cacheFits } from ${JSON.stringify(path.join(root, "dist", "cli", "codeCache.js"))}\n` +
  `process.exit(cacheFits(${JSON.stringify(outfile)}) ? 0 : 1)`
try {
  execFileSync(process.execPath, ["--input-type=module", "-e", check], { stdio: "inherit" })
} catch {
  console.error(`bundle-cli: a new process refuses the code cache made for ${path.relative(root, outfile)}, so it would never be used`)
  process.exit(1)
}

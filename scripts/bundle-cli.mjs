#!/usr/bin/env node
// Bundles the compiled CLI (dist/cli/main.js, from `tsc`) into one file,
// dist/cli/bundle.js, which the package's bin, dist/cli/ragpipe.js (from
// src/cli/ragpipe.ts), loads once it has loaded pg. `npm run build` runs it
// after tsc.
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

await build({
  entryPoints: [entry],
  outfile: path.join(root, "dist", "cli", "bundle.js"),
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  external,
  // CommonJS modules inside the bundle call `require` for the external
  // packages (pg-cursor requires pg): give the module one
  banner: { js: `import { createRequire as __ragpipeRequire } from "node:module";\nconst require = __ragpipeRequire(import.meta.url);` },
  logLevel: "warning"
})
fs.chmodSync(path.join(root, "dist", "cli", "ragpipe.js"), 0o755)

#!/usr/bin/env node
// Builds the optional native addon src/native/ragpipe_fs.c into
// dist/native/ragpipe_fs.node with the system's C compiler ($CC, or cc)
// and the Node-API headers of the node-api-headers package; `npm run build`
// runs it. Node-API is ABI-stable, so one build serves every Node version
// from 20 on. The addon makes the walk's stats and listings cheaper (see
// src/internal/nativeFs.ts); without it the walk uses fs.statSync and
// fs.readdirSync, so a machine without a compiler (or Windows) gets a note
// here and a working, slower build, not a failed one.
//
// After compiling, a new process loads the addon and compares what it
// reports with fs.statSync and fs.readdirSync; one that disagrees is
// removed.
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const source = path.join(root, "src", "native", "ragpipe_fs.c")
const outDir = path.join(root, "dist", "native")
const out = path.join(outDir, "ragpipe_fs.node")

const skip = (why) => {
  fs.rmSync(out, { force: true })
  console.error(`build-native: ${path.relative(root, out)} not built: ${why}; the walk uses node:fs instead`)
  process.exit(0)
}

if (process.platform === "win32") skip("no build for Windows")

let includeDir
try {
  includeDir = createRequire(import.meta.url)("node-api-headers").include_dir
} catch {
  skip("the node-api-headers package is not installed (npm install)")
}

const compiler = process.env.CC ?? "cc"
const flags = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared", "-fvisibility=hidden", "-pthread"]
// Node-API's symbols come from the node executable that loads the addon
if (process.platform === "darwin") flags.push("-undefined", "dynamic_lookup")
fs.mkdirSync(outDir, { recursive: true })
const partial = `${out}.${process.pid}.tmp`
try {
  execFileSync(compiler, [...flags, "-I", includeDir, "-o", partial, source], { stdio: ["ignore", "ignore", "pipe"] })
} catch (error) {
  fs.rmSync(partial, { force: true })
  const said = String(error?.stderr ?? "").trim().split("\n").slice(0, 5).join(" / ")
  skip(
    error?.code === "ENOENT"
      ? `no C compiler (${compiler}) found`
      : `${compiler} failed (exit code ${error?.status ?? "?"})${said === "" ? "" : `: ${said}`}`
  )
}
fs.renameSync(partial, out)

// the same stats from the addon and from fs.statSync, in a new process
const check = `
import * as fs from "node:fs"
import { createRequire } from "node:module"
const { statMany, listDirectory } = createRequire(import.meta.url)(${JSON.stringify(out)})
const paths = [${JSON.stringify(source)}, ${JSON.stringify(root)}, ${JSON.stringify(path.join(root, "no-such-file"))}]
const fields = new Float64Array(8 * paths.length)
statMany(paths, fields)
for (let i = 0; i < 2; i++) {
  const st = fs.statSync(paths[i])
  const f = fields.subarray(8 * i, 8 * i + 8)
  const same = f[0] === 0 && f[1] === st.mode && f[2] === st.size && f[3] === st.ino &&
    f[4] * 1e3 + f[5] / 1e6 === st.mtimeMs && f[6] * 1e3 + f[7] / 1e6 === st.ctimeMs
  if (!same) throw new Error("stats of " + paths[i] + " differ from fs.statSync's")
}
if (fields[16] === 0) throw new Error("the stat of a missing file did not fail")
const listed = listDirectory(${JSON.stringify(path.join(root, "src"))}, 1 << 30)
const names = fs.readdirSync(${JSON.stringify(path.join(root, "src"))}).map((name) => name + "/").join("")
if (listed === undefined || listed[0] !== names) throw new Error("the listing of src differs from fs.readdirSync's")
`
try {
  execFileSync(process.execPath, ["--input-type=module", "-e", check], { stdio: ["ignore", "ignore", "pipe"] })
} catch (error) {
  skip(`the built addon does not agree with fs.statSync: ${String(error?.stderr ?? error).trim().split("\n").slice(0, 5).join(" / ")}`)
}

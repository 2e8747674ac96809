/**
 * The published package as a user meets it: `npm pack` the built package,
 * install the tarball into a fresh project outside the repository, compile a
 * consumer program there with that project's own strict `tsc`, and run it.
 *
 * Needs dist/ (`npm test` builds it first) and the npm registry (the consumer
 * project installs the tarball's dependencies). Set RAGPIPE_CONSUMER_KEEP=1
 * to keep the temporary project for debugging.
 */
import { spawn } from "node:child_process"
import * as NodeFs from "node:fs"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "vitest"
import { corpusDir, corpusQueries, createDatabase, repoRoot, testDatabaseUrl } from "./support.js"

interface Result {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

const show = (what: string, r: Result): string =>
  `${what} exited with ${r.code ?? r.signal}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`

/**
 * The environment of the child processes: without the variables `npm run` /
 * `npx` set for the repository (`npm_config_local_prefix` would point the
 * consumer's npm at the repository).
 */
const childEnv = (): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (
      k.startsWith("npm_package_") || k.startsWith("npm_lifecycle_") || k.startsWith("RAGPIPE_") ||
      k === "npm_config_local_prefix" || k === "npm_config_call" || k === "npm_command" || k === "INIT_CWD"
    ) continue
    env[k] = v
  }
  env["NO_COLOR"] = "1"
  return env
}

/** Run a command asynchronously (the test worker must stay responsive); never rejects on a non-zero exit. */
const run = (command: string, args: ReadonlyArray<string>, cwd: string, timeout = 180_000): Promise<Result> =>
  new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: childEnv(), stdio: ["ignore", "pipe", "pipe"], timeout })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s))
    child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s))
    child.on("error", reject)
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }))
  })

/** `npx --no -- <args>` in the consumer project: its own binaries, never a download */
const npx = (args: ReadonlyArray<string>): Promise<Result> => run("npx", ["--no", "--", ...args], project)

const stripAnsi = (s: string): string => s.replace(/\x1b\[[0-9;]*m/g, "")

const pkg = JSON.parse(NodeFs.readFileSync(NodePath.join(repoRoot, "package.json"), "utf8")) as {
  readonly version: string
  readonly dependencies: Record<string, string>
  readonly devDependencies: Record<string, string>
}

let scratch = ""
let project = ""
let tarball = ""
let packedFiles: ReadonlyArray<string> = []

beforeAll(async () => {
  for (const entry of ["dist/index.js", "dist/index.d.ts", "dist/cli/ragpipe.js"]) {
    if (!NodeFs.existsSync(NodePath.join(repoRoot, entry))) {
      throw new Error(`${entry} is missing: run \`npm run build\` first (\`npm test\` does)`)
    }
  }
  scratch = NodeFs.mkdtempSync(NodePath.join(NodeOs.tmpdir(), "ragpipe-consumer-"))
  const packDir = NodePath.join(scratch, "pack")
  project = NodePath.join(scratch, "project")
  NodeFs.mkdirSync(packDir)
  NodeFs.mkdirSync(project)

  // the built dist/ as it is: `prepare` (a rebuild) is not run here
  const packed = await run("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", packDir], repoRoot)
  assert.strictEqual(packed.code, 0, show("npm pack", packed))
  const [info] = JSON.parse(packed.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>
  tarball = NodePath.join(packDir, info.filename)
  packedFiles = info.files.map((f) => f.path)
  assert.isTrue(NodeFs.existsSync(tarball), `no tarball at ${tarball}`)

  NodeFs.writeFileSync(
    NodePath.join(project, "package.json"),
    JSON.stringify({ name: "ragpipe-consumer", type: "module", private: true }, null, 2)
  )
  const installed = await run("npm", [
    "install",
    "--no-audit",
    "--no-fund",
    "--prefer-offline",
    tarball,
    `typescript@${pkg.devDependencies["typescript"]}`,
    "@types/node@20",
    `effect@${pkg.dependencies["effect"]}`
  ], project)
  assert.strictEqual(installed.code, 0, show("npm install", installed))

  const compilerOptions = {
    target: "ES2022",
    lib: ["ES2022"],
    module: "NodeNext",
    moduleResolution: "NodeNext",
    types: ["node"],
    strict: true,
    exactOptionalPropertyTypes: true,
    noUncheckedIndexedAccess: true,
    noUnusedLocals: true,
    // the declarations of some dependencies (pglite, @effect/sql-pg) do not
    // check on their own; ragpipe's are checked by tsconfig.libcheck.json
    skipLibCheck: true,
    noEmit: false,
    rootDir: ".",
    outDir: "dist"
  }
  NodeFs.writeFileSync(
    NodePath.join(project, "tsconfig.json"),
    JSON.stringify({ compilerOptions, include: ["main.ts"] }, null, 2)
  )
  NodeFs.copyFileSync(NodePath.join(repoRoot, "test", "consumer", "main.ts.template"), NodePath.join(project, "main.ts"))
  NodeFs.writeFileSync(
    NodePath.join(project, "tsconfig.libcheck.json"),
    JSON.stringify({ compilerOptions: { ...compilerOptions, skipLibCheck: false, noEmit: true }, include: ["main.ts"] }, null, 2)
  )
  // a deep import, which the `exports` map must refuse to types and to node alike
  NodeFs.writeFileSync(
    NodePath.join(project, "tsconfig.deep.json"),
    JSON.stringify({ compilerOptions: { ...compilerOptions, noEmit: true }, include: ["deep.ts"] }, null, 2)
  )
  NodeFs.writeFileSync(
    NodePath.join(project, "deep.ts"),
    `import * as Vector from "ragpipe/internal/vector.js"\nconsole.log(Vector)\n`
  )
}, 240_000)

afterAll(() => {
  if (scratch === "") return
  if (process.env["RAGPIPE_CONSUMER_KEEP"] === "1") {
    console.log(`consumer project kept in ${scratch}`)
    return
  }
  NodeFs.rmSync(scratch, { recursive: true, force: true })
})

describe("the packed package", () => {
  it("holds the built entry points, the bin and the sources, and no tests", () => {
    for (const file of ["package.json", "README.md", "dist/index.js", "dist/index.d.ts", "dist/cli/ragpipe.js"]) {
      assert.include(packedFiles, file, `${file} is not in the tarball`)
    }
    assert.isTrue(packedFiles.some((f) => f.startsWith("src/")), "no sources in the tarball")
    assert.deepStrictEqual(packedFiles.filter((f) => f.startsWith("test/") || f.startsWith("node_modules/")), [])
  })

  it("compiles a strict consumer against the installed types and runs it", async () => {
    const tsc = await npx(["tsc", "-p", "tsconfig.json"])
    assert.strictEqual(tsc.code, 0, show("tsc", tsc))
    // with skipLibCheck off, no error may come from ragpipe's own declarations
    const libcheck = await npx(["tsc", "-p", "tsconfig.libcheck.json"])
    const own = (libcheck.stdout + libcheck.stderr).split("\n").filter((l) => l.includes("node_modules/ragpipe/"))
    assert.deepStrictEqual(own, [], show("tsc -p tsconfig.libcheck.json", libcheck))

    const dataDir = NodePath.join(scratch, "store")
    const main = await run(process.execPath, [NodePath.join("dist", "main.js"), dataDir], project, 120_000)
    assert.strictEqual(main.code, 0, show("node dist/main.js", main))
    const line = main.stdout.split("\n").find((l) => l.startsWith("RESULT "))
    assert.isDefined(line, show("node dist/main.js (no RESULT line)", main))
    const result = JSON.parse(line!.slice("RESULT ".length)) as {
      topHit: string | null
      summary: {
        outcome: string
        files: { seen: number; ingested: number }
        chunks: { written: number; failed: number }
        breaker: unknown
      }
      breakCode: string | null
      breakerItems: number
      cache: { answer: number; cached: number | null }
      retryable: boolean
    }
    const context = show("node dist/main.js", main)
    assert.strictEqual(result.topHit, "guides/certificates.md", context)
    assert.strictEqual(result.summary.outcome, "completed", context)
    assert.strictEqual(result.summary.files.seen, 3, context)
    assert.strictEqual(result.summary.files.ingested, 3, context)
    assert.isAtLeast(result.summary.chunks.written, 3, context)
    assert.strictEqual(result.summary.chunks.failed, 0, context)
    assert.isNull(result.summary.breaker, context)
    assert.strictEqual(result.breakCode, "error-rate", context)
    assert.strictEqual(result.breakerItems, 4, context)
    assert.deepStrictEqual(result.cache, { answer: 42, cached: 42 }, context)
  }, 180_000)

  it("refuses deep imports: internal modules are not exported", async () => {
    const probe = (specifier: string): Promise<Result> =>
      run(process.execPath, [
        "--input-type=module",
        "-e",
        `import(${JSON.stringify(specifier)}).then(() => console.log("IMPORTED"), (e) => console.log(e.code))`
      ], project)
    for (const specifier of ["ragpipe/internal/vector.js", "ragpipe/dist/internal/vector.js", "ragpipe/dist/index.js"]) {
      const r = await probe(specifier)
      assert.strictEqual(r.stdout.trim(), "ERR_PACKAGE_PATH_NOT_EXPORTED", show(`import("${specifier}")`, r))
    }
    const publicEntry = await probe("ragpipe")
    assert.strictEqual(publicEntry.stdout.trim(), "IMPORTED", show(`import("ragpipe")`, publicEntry))

    const tsc = await npx(["tsc", "-p", "tsconfig.deep.json"])
    assert.notStrictEqual(tsc.code, 0, show("tsc -p tsconfig.deep.json", tsc))
    assert.match(tsc.stdout, /TS2307.*ragpipe\/internal\/vector\.js/, show("tsc -p tsconfig.deep.json", tsc))
  }, 120_000)

  it("installs the ragpipe executable", async () => {
    const help = await npx(["ragpipe", "--help"])
    assert.strictEqual(help.code, 0, show("npx ragpipe --help", help))
    const text = stripAnsi(help.stdout)
    assert.include(text, `ragpipe ${pkg.version}`, show("npx ragpipe --help", help))
    assert.match(text, /- ingest /, show("npx ragpipe --help", help))
    assert.match(text, /- search /, show("npx ragpipe --help", help))
  }, 120_000)

  it("the installed executable ingests and searches, embedded and on the server", async () => {
    // the bin is a bundle: its store drivers (PGlite, pg) load from the consumer's node_modules
    const docs = NodePath.join(scratch, "docs")
    NodeFs.cpSync(corpusDir, docs, { recursive: true })
    const files = NodeFs.readdirSync(docs, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).length
    const demo = corpusQueries.find((q) => q.demo === true)!
    const ingestAndSearch = async (store: ReadonlyArray<string>, what: string) => {
      const ingest = await npx(["ragpipe", "ingest", docs, ...store, "--json"])
      assert.strictEqual(ingest.code, 0, show(`npx ragpipe ingest (${what})`, ingest))
      const summary = JSON.parse(ingest.stdout) as { outcome: string; files: { ingested: number } }
      assert.strictEqual(summary.outcome, "completed", show(`npx ragpipe ingest (${what})`, ingest))
      assert.strictEqual(summary.files.ingested, files, show(`npx ragpipe ingest (${what})`, ingest))
      const search = await npx(["ragpipe", "search", demo.query, ...store, "--json", "--limit", "3"])
      assert.strictEqual(search.code, 0, show(`npx ragpipe search (${what})`, search))
      const hits = JSON.parse(search.stdout) as ReadonlyArray<{ path: string }>
      assert.strictEqual(hits[0]?.path, demo.expectedPath, show(`npx ragpipe search (${what})`, search))
    }
    await ingestAndSearch(["--data-dir", NodePath.join(scratch, "cli-store")], "PGlite")
    if (testDatabaseUrl !== undefined && testDatabaseUrl !== "") {
      const db = await createDatabase(testDatabaseUrl, "consumer")
      try {
        await ingestAndSearch(["--database-url", db.url], "server")
      } finally {
        await db.drop()
      }
    }
  }, 240_000)
})

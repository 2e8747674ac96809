import { assert, describe, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as NativeFs from "../src/internal/nativeFs.js"
import * as Loader from "../src/Loader.js"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const addon = path.join(root, "dist", "native", "ragpipe_fs.node")

/** Whether the C compiler the build uses answers here. */
const hasCompiler = process.platform !== "win32" &&
  spawnSync(process.env["CC"] ?? "cc", ["--version"], { stdio: "ignore" }).status === 0

const withTemp = <A>(body: (dir: string) => A): A => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ragpipe-native-"))
  try {
    return body(dir)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

const statOrUndefined = (p: string): fs.Stats | undefined => {
  try {
    return fs.statSync(p)
  } catch {
    return undefined
  }
}

describe.skipIf(!hasCompiler)("native file system calls", () => {
  it("is built and loaded where a C compiler is available", () => {
    assert.isTrue(fs.existsSync(addon), `${addon} is missing: npm run build builds it`)
    assert.isDefined(NativeFs.native)
    // the walk uses it
    assert.notStrictEqual(Loader.nodeIO, Loader.fsIO)
    assert.strictEqual(Loader.nodeIO.statMany, NativeFs.native!.statMany)
  })

  it("reports what fs.statSync reports, following symlinks; undefined where the stat fails", () =>
    withTemp((dir) => {
      const statMany = NativeFs.native!.statMany
      const file = (rel: string, content: string) => {
        const full = path.join(dir, rel)
        fs.mkdirSync(path.dirname(full), { recursive: true })
        fs.writeFileSync(full, content)
        return full
      }
      const plain = file("a.md", "hello")
      const timed = file("sub/b.txt", "x".repeat(70_000))
      // times with fractions of a millisecond, as file systems keep them
      fs.utimesSync(timed, 1_700_000_000.123456, 1_600_000_000.987654)
      const named = file("ünï cödé ✓/文档 🙂.md", "unicode names")
      const empty = file("empty.md", "")
      const link = path.join(dir, "link.md")
      fs.symlinkSync(plain, link)
      const dirLink = path.join(dir, "dir-link")
      fs.symlinkSync(path.join(dir, "sub"), dirLink)
      const broken = path.join(dir, "broken.md")
      fs.symlinkSync(path.join(dir, "nowhere.md"), broken)
      const paths = [
        plain,
        timed,
        named,
        empty,
        link,
        dirLink,
        path.join(dir, "sub"),
        broken,
        path.join(dir, "missing.md"),
        path.join(plain, "not-a-directory.md"),
        path.join(dir, "nul\0.md"),
        path.join(dir, "x".repeat(5000))
      ]
      const stats = statMany(paths)
      assert.strictEqual(stats.length, paths.length)
      paths.forEach((p, i) => {
        const got = stats[i]
        const expected = statOrUndefined(p)
        if (expected === undefined) {
          assert.isUndefined(got, p)
          return
        }
        assert.isDefined(got, p)
        assert.deepStrictEqual(
          [got!.mode, got!.size, got!.ino, got!.mtimeMs, got!.ctimeMs, got!.isFile(), got!.isDirectory()],
          [expected.mode, expected.size, expected.ino, expected.mtimeMs, expected.ctimeMs, expected.isFile(), expected.isDirectory()],
          p
        )
        if (expected.isFile()) assert.strictEqual(Loader.fingerprintOf(got!), Loader.fingerprintOf(expected))
      })
      // the ones that fail are those the system refuses, and those never passed to it
      assert.deepStrictEqual(
        stats.map((s) => s === undefined),
        [false, false, false, false, false, false, false, true, true, true, true, true]
      )
    }))

  it("answers batches of any size, each on its own", () =>
    withTemp((dir) => {
      const statMany = NativeFs.native!.statMany
      const paths = Array.from({ length: 1500 }, (_, i) => {
        const p = path.join(dir, `f${i}.md`)
        fs.writeFileSync(p, "y".repeat(i))
        return p
      })
      // failures among them, in a batch large enough to be stat'ed by two threads
      const mixed = paths.map((p, i) => i % 7 === 3 ? path.join(dir, `gone-${i}`) : i % 11 === 5 ? `${p}\0` : p)
      assert.deepStrictEqual(statMany([]), [])
      for (const batch of [paths.slice(0, 3), paths, mixed, paths.slice(7, 9), [paths[1]!, path.join(dir, "gone"), paths[0]!]]) {
        const sizes = statMany(batch).map((s) => s?.size)
        assert.deepStrictEqual(sizes, batch.map((p) => statOrUndefined(p)?.size))
      }
    }))

  it("lists a directory as fs.readdirSync does: the same names, order and types", () =>
    withTemp((dir) => {
      const listDirectory = NativeFs.native!.listDirectory
      const names = ["b.md", "a.md", "B.md", "_x", "ünï", "文档 🙂.md", "z".repeat(200), ".hidden", "10.txt", "9.txt"]
      for (const name of names) fs.writeFileSync(path.join(dir, name), name)
      fs.mkdirSync(path.join(dir, "sub"))
      fs.symlinkSync(path.join(dir, "a.md"), path.join(dir, "link"))
      fs.symlinkSync(path.join(dir, "nowhere"), path.join(dir, "broken"))
      fs.symlinkSync(path.join(dir, "sub"), path.join(dir, "dir-link"))
      const fifo = spawnSync("mkfifo", [path.join(dir, "pipe")]).status === 0
      // a name that is not valid UTF-8
      fs.writeFileSync(Buffer.concat([Buffer.from(dir + path.sep), Buffer.from([0x62, 0xff, 0x2e, 0x6d, 0x64])]), "bad")
      const kinds = (e: NativeFs.DirentLike) =>
        [
          e.isFile(),
          e.isDirectory(),
          e.isSymbolicLink(),
          e.isFIFO(),
          e.isSocket(),
          e.isCharacterDevice(),
          e.isBlockDevice()
        ].map((k) => (k ? 1 : 0)).join("")
      const expected = fs.readdirSync(dir, { withFileTypes: true }).map((e) => [e.name, kinds(e)])
      const listed = listDirectory(dir, 64 * 1024)
      assert.isDefined(listed)
      assert.deepStrictEqual(listed!.map((e) => [e.name, kinds(e)]), expected)
      assert.strictEqual(listed!.length, names.length + 5 + (fifo ? 1 : 0))
      assert.include(listed!.map((e) => e.name), "b\uFFFD.md")
    }))

  it("leaves a directory larger than the bound, or an empty-sized one, unlisted; fails as fs does", () =>
    withTemp((dir) => {
      const listDirectory = NativeFs.native!.listDirectory
      fs.writeFileSync(path.join(dir, "file.md"), "x")
      const size = fs.statSync(dir).size
      assert.isAbove(size, 0)
      assert.isDefined(listDirectory(dir, size))
      assert.isUndefined(listDirectory(dir, size - 1))
      const failure = (p: string) => {
        try {
          listDirectory(p, 64 * 1024)
        } catch (error) {
          return error as NodeJS.ErrnoException
        }
        return assert.fail(`listing ${p} did not fail`)
      }
      const missing = failure(path.join(dir, "missing"))
      assert.instanceOf(missing, Error)
      assert.strictEqual(missing.code, "ENOENT")
      assert.include(missing.message, path.join(dir, "missing"))
      assert.strictEqual(failure(path.join(dir, "file.md")).code, "ENOTDIR")
      assert.strictEqual(failure(path.join(dir, "nul\0")).code, "EINVAL")
      assert.strictEqual(failure(path.join(dir, "x".repeat(5000))).code, "ENAMETOOLONG")
    }))

  it("refuses arguments of the wrong kind with a TypeError or RangeError, not a crash", () => {
    const binding = createRequire(import.meta.url)(addon) as {
      readonly statMany: (...args: ReadonlyArray<unknown>) => unknown
      readonly listDirectory: (...args: ReadonlyArray<unknown>) => unknown
    }
    assert.throws(() => binding.listDirectory(root), TypeError, /two arguments/)
    assert.throws(() => binding.listDirectory(1, 2), TypeError, /path must be a string/)
    assert.throws(() => binding.listDirectory(root, "2"), TypeError, /wholeBytes must be a number/)
    assert.throws(() => binding.statMany(), TypeError, /two arguments/)
    assert.throws(() => binding.statMany("a", new Float64Array(8)), TypeError, /array of strings/)
    assert.throws(() => binding.statMany([1], new Float64Array(8)), TypeError, /array of strings/)
    assert.throws(() => binding.statMany(["a"], new Float32Array(8)), TypeError, /Float64Array/)
    assert.throws(() => binding.statMany(["a"], [0, 0, 0, 0, 0, 0, 0, 0]), TypeError, /Float64Array/)
    assert.throws(() => binding.statMany(["a", "b"], new Float64Array(15)), RangeError, /8 numbers per path/)
    const out = new Float64Array(8).fill(-1)
    assert.isUndefined(binding.statMany([root], out))
    assert.strictEqual(out[0], 0)
    assert.strictEqual(out[2], fs.statSync(root).size)
  })
})

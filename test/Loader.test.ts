import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { SkippedFile, SourceDocument } from "../src/Domain.js"
import type { LoaderError } from "../src/Errors.js"
import * as Glob from "../src/internal/glob.js"
import { decodeEntities, htmlToText } from "../src/internal/html.js"
import * as Loader from "../src/Loader.js"
import * as ResourceLedger from "../src/ResourceLedger.js"

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

const makeTemp = (): string => fs.mkdtempSync(path.join(os.tmpdir(), "ragpipe-loader-"))

/** Undo `chmod 000` below `dir` so it can be removed. */
const restorePermissions = (dir: string): void => {
  try {
    fs.chmodSync(dir, 0o755)
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name)
      if (entry.isDirectory()) restorePermissions(full)
      else if (entry.isFile()) fs.chmodSync(full, 0o644)
    }
  } catch {
    // best effort
  }
}

/** A fresh temporary directory, removed when the scope closes. */
const tempDir: Effect.Effect<string, never, Scope.Scope> = Effect.acquireRelease(
  Effect.sync(makeTemp),
  (dir) =>
    Effect.sync(() => {
      restorePermissions(dir)
      fs.rmSync(dir, { recursive: true, force: true })
    })
)

type Content = string | Uint8Array

/** Write `files` (relative path → content) under `dir`. */
const write = (dir: string, files: Readonly<Record<string, Content>>): void => {
  for (const [rel, content] of Object.entries(files)) {
    const full = path.join(dir, rel)
    fs.mkdirSync(path.dirname(full), { recursive: true })
    fs.writeFileSync(full, content)
  }
}

const symlink = (dir: string, rel: string, target: string): void => {
  const full = path.join(dir, rel)
  fs.mkdirSync(path.dirname(full), { recursive: true })
  fs.symlinkSync(target, full)
}

interface Collected {
  readonly docs: ReadonlyArray<SourceDocument>
  readonly skipped: ReadonlyArray<SkippedFile>
  readonly docPaths: ReadonlyArray<string>
  readonly skippedByPath: Readonly<Record<string, SkippedFile>>
}

const byPath = <A extends { readonly path: string }>(items: ReadonlyArray<A>): Array<A> =>
  [...items].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))

const collectResults = (results: Iterable<Loader.LoadResult>): Collected => {
  const docs: Array<SourceDocument> = []
  const skipped: Array<SkippedFile> = []
  for (const r of results) {
    if (Either.isRight(r)) docs.push(r.right)
    else skipped.push(r.left)
  }
  const skippedByPath: Record<string, SkippedFile> = {}
  for (const s of skipped) skippedByPath[s.path] = s
  return { docs: byPath(docs), skipped: byPath(skipped), docPaths: byPath(docs).map((d) => d.path), skippedByPath }
}

const collect = (options: Loader.Options) =>
  Effect.map(Stream.runCollect(Loader.walk(options)), (chunk) => collectResults(Chunk.toReadonlyArray(chunk)))

const collectWith = (options: Loader.Options, io: Loader.LoaderIO) =>
  Effect.map(Stream.runCollect(Loader.walkWith(options, io)), (chunk) => collectResults(Chunk.toReadonlyArray(chunk)))

const sha256 = (data: Content): string => createHash("sha256").update(data).digest("hex")

/** Run a test body with a fresh temp dir and a fresh ledger. */
const withDir = <A, E>(
  body: (dir: string) => Effect.Effect<A, E, ResourceLedger.ResourceLedger | Scope.Scope>
): Effect.Effect<A, E, Scope.Scope> =>
  Effect.flatMap(tempDir, (dir) => Effect.provide(body(dir), ResourceLedger.layer()))

const assertAllReleased = Effect.gen(function*() {
  const snapshot = yield* ResourceLedger.snapshot
  assert.strictEqual(snapshot.total.open, 0, `still open: ${snapshot.open.map((r) => `${r.kind}:${r.label}`).join(", ")}`)
  assert.strictEqual(snapshot.total.acquired, snapshot.total.released)
  return snapshot
})

const counts = (snapshot: ResourceLedger.Snapshot, kind: string) =>
  snapshot.byKind[kind] ?? { acquired: 0, released: 0, open: 0 }

/** Can `chmod 000` stop this process from reading a file? (not as root) */
const chmodBlocksReads: boolean = (() => {
  if (process.platform === "win32") return false
  const dir = makeTemp()
  try {
    const file = path.join(dir, "probe")
    fs.writeFileSync(file, "x")
    fs.chmodSync(file, 0)
    try {
      fs.closeSync(fs.openSync(file, "r"))
      return false
    } catch {
      return true
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})()

const canMkfifo: boolean = (() => {
  if (process.platform === "win32") return false
  const dir = makeTemp()
  try {
    return spawnSync("mkfifo", [path.join(dir, "probe")]).status === 0
  } catch {
    return false
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})()

const errno = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`${code}: simulated`), { code })

// ---------------------------------------------------------------------------
// glob
// ---------------------------------------------------------------------------

describe("glob", () => {
  const m = (pattern: string, p: string, isDirectory = false) => Glob.matcher([pattern]).matches(p, isDirectory)

  it("a pattern without / matches the basename at any depth", () => {
    assert.isTrue(m("*.md", "a.md"))
    assert.isTrue(m("*.md", "docs/x/a.md"))
    assert.isFalse(m("*.md", "docs/a.txt"))
    assert.isTrue(m("drafts", "a/b/drafts", true))
    assert.isFalse(m("drafts", "a/drafts-old", true))
  })

  it("patterns with / are anchored at the root", () => {
    assert.isTrue(m("docs/*.md", "docs/a.md"))
    assert.isFalse(m("docs/*.md", "docs/x/a.md"))
    assert.isFalse(m("docs/*.md", "x/docs/a.md"))
    assert.isTrue(m("/a.md", "a.md"))
    assert.isFalse(m("/a.md", "x/a.md"))
    assert.isTrue(m("./a.md", "a.md"))
  })

  it("** matches zero or more segments", () => {
    assert.isTrue(m("**/*.md", "a.md"))
    assert.isTrue(m("**/*.md", "x/y/a.md"))
    assert.isTrue(m("docs/**", "docs", true))
    assert.isTrue(m("docs/**", "docs/a.md"))
    assert.isTrue(m("docs/**", "docs/x/y/a.md"))
    assert.isFalse(m("docs/**", "docsx/a.md"))
    assert.isTrue(m("docs/**/*.md", "docs/a.md"))
    assert.isTrue(m("docs/**/*.md", "docs/x/y/a.md"))
    assert.isFalse(m("docs/**/*.md", "docs/x/y/a.txt"))
    assert.isTrue(m("**", "anything/at/all"))
  })

  it("supports ?, [...], [!...], {a,b} and escapes", () => {
    assert.isTrue(m("file?.txt", "file1.txt"))
    assert.isFalse(m("file?.txt", "file10.txt"))
    assert.isFalse(m("a?b", "a/b"))
    assert.isTrue(m("[ab].md", "x/a.md"))
    assert.isFalse(m("[ab].md", "c.md"))
    assert.isTrue(m("[a-c]x.md", "bx.md"))
    assert.isTrue(m("[!a]x.md", "bx.md"))
    assert.isFalse(m("[!a]x.md", "ax.md"))
    assert.isTrue(m("*.{md,txt}", "a/b.txt"))
    assert.isTrue(m("{docs,guides}/*.md", "guides/a.md"))
    assert.isFalse(m("{docs,guides}/*.md", "other/a.md"))
    assert.isTrue(m("a{b,c{d,e}}.md", "ace.md"))
    assert.isTrue(m("\\*.md", "*.md"))
    assert.isFalse(m("\\*.md", "a.md"))
    assert.isTrue(m("a+(b).md", "a+(b).md"))
  })

  it("a trailing / matches directories only", () => {
    assert.isTrue(m("build/", "x/build", true))
    assert.isFalse(m("build/", "x/build", false))
  })

  it("records the literal extension of each alternative", () => {
    const ext = (p: string) => Glob.compile(p).map((g) => g.literalExtension)
    assert.deepStrictEqual(ext("**/*.log"), [".log"])
    assert.deepStrictEqual(ext("*.{log,CSV}"), [".log", ".csv"])
    assert.deepStrictEqual(ext("logs/**"), [undefined])
    assert.deepStrictEqual(ext("*.[lL]og"), [undefined])
    assert.deepStrictEqual(ext("*.*"), [undefined])
  })
})

// ---------------------------------------------------------------------------
// html
// ---------------------------------------------------------------------------

describe("htmlToText", () => {
  it("drops scripts, styles, noscript, templates and comments", () => {
    const text = htmlToText(
      `<!DOCTYPE html><html><head><title>T</title><style>p { color: red }</style>
       <script type="text/javascript">var x = "<p>not text</p>";</script></head>
       <body><!-- a comment --><noscript>enable js</noscript><template><p>tpl</p></template>
       <p>Visible</p><SCRIPT>alert(1)</SCRIPT></body></html>`
    )
    assert.strictEqual(text, "T\n\nVisible")
  })

  it("turns blocks into paragraphs and lines, collapses whitespace", () => {
    const text = htmlToText(
      `<h1>Title</h1>
       <p>First   paragraph
          continues <b>bold</b> <i>and</i>  more.</p>
       <div>A div</div><div>Another</div>
       <ul><li>one</li><li>two</li></ul>
       <p>line<br>break</p>
       <table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>`
    )
    assert.strictEqual(
      text,
      "Title\n\nFirst paragraph continues bold and more.\n\nA div\nAnother\n\none\ntwo\n\nline\nbreak\n\na b\nc d"
    )
  })

  it("keeps whitespace inside <pre>", () => {
    const text = htmlToText(`<p>code:</p><pre>
  if (a &lt; b) {
    go()
  }</pre><p>after</p>`)
    assert.strictEqual(text, "code:\n\n  if (a < b) {\n    go()\n  }\n\nafter")
  })

  it("decodes entities", () => {
    assert.strictEqual(
      decodeEntities("&amp; &lt; &gt; &quot; &#39; &apos; &#123; &#x1F600; &copy; &unknown; &#0;"),
      "& < > \" ' ' { 😀 © &unknown; \uFFFD"
    )
    assert.strictEqual(htmlToText("<p>a&nbsp;&nbsp;b &amp;&lt;tag&gt;</p>"), "a b &<tag>")
  })

  it("returns an empty string for markup without text", () => {
    assert.strictEqual(htmlToText("<html><head><script>x()</script></head><body> <!-- c --> </body></html>"), "")
  })
})

// ---------------------------------------------------------------------------
// Loader.walk
// ---------------------------------------------------------------------------

describe("Loader.walk", () => {
  it.scoped("reads every default extension with the right format, hash, size and path", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        const files: Record<string, string> = {
          "a.md": "# A\n\ntext a\n",
          "b.markdown": "# B\n",
          "c.txt": "plain c",
          "d.rst": "Title\n=====\n",
          "e.html": "<p>hello <b>e</b></p>",
          "f.htm": "<div>f</div>",
          "sub/deeper/g.md": "g",
          "README": "no extension",
          "image.png": "not text either",
          "data.json": "{}"
        }
        write(dir, files)
        const result = yield* collect({ root: dir })
        assert.deepStrictEqual(result.docPaths, [
          "a.md",
          "b.markdown",
          "c.txt",
          "d.rst",
          "e.html",
          "f.htm",
          "sub/deeper/g.md"
        ])
        assert.deepStrictEqual(result.skipped, [])
        const formats = Object.fromEntries(result.docs.map((d) => [d.path, d.format]))
        assert.deepStrictEqual(formats, {
          "a.md": "markdown",
          "b.markdown": "markdown",
          "c.txt": "text",
          "d.rst": "rst",
          "e.html": "html",
          "f.htm": "html",
          "sub/deeper/g.md": "markdown"
        })
        for (const doc of result.docs) {
          const raw = files[doc.path]!
          assert.strictEqual(doc.contentHash, sha256(raw))
          assert.strictEqual(doc.size, Buffer.byteLength(raw))
          if (doc.format !== "html") assert.strictEqual(doc.text, raw)
        }
        assert.strictEqual(result.docs.find((d) => d.path === "e.html")!.text, "hello e")
        yield* assertAllReleased
      })
    ))

  it.scoped("files of every size in one walk: each document has exactly its own text, size and hash", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        // sizes around the walk's read buffer (64 KiB, doubled as needed) and the
        // 1 MiB slice, in an order where a small file follows a larger one
        const sizes = [70_000, 3, 5_000, 200_000, 17, 65_536, 1_048_576, 1_048_577, 2_500_000, 40, 140_000, 1]
        const files: Record<string, string> = {}
        sizes.forEach((size, i) => {
          const line = `file ${i} of ${size} bytes; `
          files[`f${String(i).padStart(2, "0")}.txt`] = line.repeat(Math.ceil(size / line.length)).slice(0, size)
        })
        write(dir, files)
        const result = yield* collect({ root: dir })
        assert.deepStrictEqual(result.skipped, [])
        assert.deepStrictEqual(result.docPaths, Object.keys(files).sort())
        for (const doc of result.docs) {
          const expected = files[doc.path]!
          assert.strictEqual(doc.size, expected.length, doc.path)
          assert.strictEqual(doc.contentHash, sha256(expected), doc.path)
          assert.isTrue(doc.text === expected, `${doc.path}: text differs`)
        }
        yield* assertAllReleased
      })
    ))

  it.scoped("strips a UTF-8 BOM but hashes the raw bytes", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        const raw = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from("# Héllo\n")])
        write(dir, { "bom.md": raw })
        const { docs } = yield* collect({ root: dir })
        assert.strictEqual(docs.length, 1)
        assert.strictEqual(docs[0]!.text, "# Héllo\n")
        assert.strictEqual(docs[0]!.size, raw.length)
        assert.strictEqual(docs[0]!.contentHash, sha256(raw))
      })
    ))

  it.scoped("converts HTML to text", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        write(dir, {
          "page.html": `<html><head><style>body{}</style><script>let a = 1 < 2</script></head>
<body><h1>Guide &amp; Notes</h1><p>Use &lt;code&gt; &quot;carefully&quot; &#8212; it&#x27;s fine.</p>
<!-- hidden --><ul><li>one</li><li>two</li></ul></body></html>`
        })
        const { docs } = yield* collect({ root: dir })
        assert.strictEqual(docs[0]!.format, "html")
        assert.strictEqual(docs[0]!.text, "Guide & Notes\n\nUse <code> \"carefully\" — it's fine.\n\none\ntwo")
      })
    ))

  it.scoped("adds user extensions (with or without dot, any case) to the defaults", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        write(dir, { "a.log": "log", "b.csv": "x,y", "C.LOG": "upper", "README.MD": "# readme", "d.md": "d", "e.ts": "ts" })
        const defaults = yield* collect({ root: dir })
        assert.deepStrictEqual(defaults.docPaths, ["README.MD", "d.md"])
        assert.strictEqual(defaults.docs[0]!.format, "markdown")
        const extended = yield* collect({ root: dir, extensions: ["log", ".CSV"] })
        assert.deepStrictEqual(extended.docPaths, ["C.LOG", "README.MD", "a.log", "b.csv", "d.md"])
        assert.deepStrictEqual(
          extended.docs.map((d) => d.format),
          ["text", "markdown", "text", "text", "markdown"]
        )
      })
    ))

  it.scoped("exclude globs: basename patterns, ** and excluded directories are not descended into", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        write(dir, {
          "keep.md": "k",
          "notes.txt": "t",
          "docs/a.md": "a",
          "docs/b.txt": "b",
          "drafts/x.md": "x",
          "drafts/deep/y.md": "y",
          "nested/drafts/z.md": "z",
          "nested/ok.md": "ok",
          "archive/2020/old.md": "old",
          "archive/keep.md": "keep"
        })
        const r1 = yield* collect({ root: dir, exclude: ["*.txt", "drafts/**"] })
        assert.deepStrictEqual(r1.docPaths, [
          "archive/2020/old.md",
          "archive/keep.md",
          "docs/a.md",
          "keep.md",
          "nested/drafts/z.md",
          "nested/ok.md"
        ])
        // drafts/ and drafts/deep/ were never opened
        const s1 = yield* assertAllReleased
        const opened = (yield* ResourceLedger.snapshot).releaseOrder.filter((r) => r.kind === "dir").map((r) => r.label)
        assert.isFalse(opened.some((label) => label.startsWith("drafts")), opened.join(","))
        assert.strictEqual(counts(s1, "dir").acquired, 6) // ., docs, nested, nested/drafts, archive, archive/2020

        // a basename pattern excludes the directory at any depth
        const r2 = yield* collect({ root: dir, exclude: ["drafts", "archive/*/"] })
        assert.deepStrictEqual(r2.docPaths, ["archive/keep.md", "docs/a.md", "docs/b.txt", "keep.md", "nested/ok.md", "notes.txt"])
      })
    ))

  it.scoped("include globs restrict the files; a literal extension in an include admits that extension", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        write(dir, {
          "top.md": "t",
          "docs/a.md": "a",
          "docs/sub/b.txt": "b",
          "docs/sub/c.log": "c",
          "logs/app.log": "log",
          "logs/readme.md": "r",
          "logs/data.bin": "bin"
        })
        const r1 = yield* collect({ root: dir, include: ["docs/**"] })
        assert.deepStrictEqual(r1.docPaths, ["docs/a.md", "docs/sub/b.txt"])
        const r2 = yield* collect({ root: dir, include: ["*.md"] })
        assert.deepStrictEqual(r2.docPaths, ["docs/a.md", "logs/readme.md", "top.md"])
        // `**/*.log` names the extension: .log files are admitted (as text)
        const r3 = yield* collect({ root: dir, include: ["**/*.log"] })
        assert.deepStrictEqual(r3.docPaths, ["docs/sub/c.log", "logs/app.log"])
        assert.deepStrictEqual(r3.docs.map((d) => d.format), ["text", "text"])
        // `logs/**` does not name an extension: only accepted extensions
        const r4 = yield* collect({ root: dir, include: ["logs/**"] })
        assert.deepStrictEqual(r4.docPaths, ["logs/readme.md"])
        // include and exclude together
        const r5 = yield* collect({ root: dir, include: ["**/*.{md,log}"], exclude: ["logs"] })
        assert.deepStrictEqual(r5.docPaths, ["docs/a.md", "docs/sub/c.log", "top.md"])
      })
    ))

  it.scoped(".git, node_modules and hidden entries are skipped unless includeHidden (never .git / node_modules)", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        write(dir, {
          "visible.md": "v",
          ".secret.md": "s",
          ".hidden/inner.md": "h",
          ".git/HEAD.md": "g",
          "node_modules/pkg/readme.md": "n",
          "sub/.git/x.md": "g2",
          "sub/node_modules/y.md": "n2",
          "sub/ok.md": "ok"
        })
        const r1 = yield* collect({ root: dir })
        assert.deepStrictEqual(r1.docPaths, ["sub/ok.md", "visible.md"])
        const r2 = yield* collect({ root: dir, includeHidden: true })
        assert.deepStrictEqual(r2.docPaths, [".hidden/inner.md", ".secret.md", "sub/ok.md", "visible.md"])
      })
    ))

  it.scoped("skips binary, invalid UTF-8, empty, whitespace-only, markup-only and too-large files", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        write(dir, {
          "ok.md": "fine",
          "binary.md": Buffer.from([0x23, 0x20, 0x00, 0x01, 0x02]),
          "late-nul.txt": Buffer.concat([Buffer.alloc(9000, 0x61), Buffer.from([0])]),
          "latin1.txt": Buffer.from([0x63, 0x61, 0x66, 0xe9]),
          "empty.md": "",
          "blank.txt": "  \n\t \r\n",
          "markup.html": "<html><script>x()</script><!-- nothing --><p> </p></html>",
          "big.md": "x".repeat(2048),
          "limit.md": "y".repeat(1024)
        })
        const r = yield* collect({ root: dir, maxFileBytes: 1024 })
        assert.deepStrictEqual(r.docPaths, ["limit.md", "ok.md"])
        const reasons = Object.fromEntries(r.skipped.map((s) => [s.path, s.reason]))
        assert.deepStrictEqual(reasons, {
          "binary.md": "binary",
          "latin1.txt": "invalid-utf8",
          "empty.md": "empty",
          "blank.txt": "empty",
          "markup.html": "empty",
          "big.md": "too-large",
          "late-nul.txt": "too-large"
        })
        assert.strictEqual(r.skippedByPath["big.md"]!.detail, "2 KiB exceeds the 1 KiB limit; raise --max-file-size")
        for (const s of r.skipped) assert.isTrue(s.detail.length > 0)

        // a NUL byte anywhere makes a file binary, not only near its start
        const r2 = yield* collect({ root: dir, include: ["late-nul.txt"] })
        assert.deepStrictEqual(r2.docPaths, [])
        assert.strictEqual(r2.skippedByPath["late-nul.txt"]!.reason, "binary")
        yield* assertAllReleased
      })
    ))

  it.scoped("formats sizes in the too-large detail", () =>
    Effect.sync(() => {
      assert.strictEqual(Loader.formatBytes(Math.round(12.4 * 1024 * 1024)), "12.4 MiB")
      assert.strictEqual(Loader.formatBytes(Loader.defaultMaxFileBytes), "10 MiB")
      assert.strictEqual(Loader.formatBytes(512), "512 B")
      assert.strictEqual(
        Loader.describeSkip({ path: "a.md", reason: "empty", detail: "contains only whitespace" }),
        "a.md: empty — contains only whitespace"
      )
    }))

  it.scoped("a too-large file is never opened for reading beyond its stat", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        write(dir, { "big.md": "z".repeat(5000) })
        let reads = 0
        const io: Loader.LoaderIO = {
          ...Loader.nodeIO,
          openFile: (p) => {
            const handle = Loader.nodeIO.openFile(p)
            return {
              stat: () => handle.stat(),
              read: (...args) => {
                reads++
                return handle.read(...args)
              },
              close: () => handle.close()
            }
          }
        }
        const r = yield* collectWith({ root: dir, maxFileBytes: 100 }, io)
        assert.strictEqual(r.skippedByPath["big.md"]!.reason, "too-large")
        assert.strictEqual(reads, 0)
        yield* assertAllReleased
      })
    ))

  it.scoped("symlinks: followed inside the root, skipped when broken, outside the root or looping", () =>
    Effect.gen(function*() {
      const outside = yield* tempDir
      write(outside, { "secret.md": "outside", "dir/x.md": "outside dir" })
      return yield* withDir((dir) =>
        Effect.gen(function*() {
          write(dir, { "real.md": "real", "sub/g.md": "g", "a/b/c.md": "c", "x/keep.md": "x", "y/keep.md": "y" })
          symlink(dir, "link.md", "real.md")
          symlink(dir, "linked", "sub")
          symlink(dir, "broken.md", "missing.md")
          symlink(dir, "broken-other.png", "missing.png") // not a candidate: silently ignored
          symlink(dir, "outside.md", path.join(outside, "secret.md"))
          symlink(dir, "outside-dir", path.join(outside, "dir"))
          symlink(dir, "a/b/up", "../..") // → the root: an ancestor
          symlink(dir, "a/self", ".") // → a itself
          symlink(dir, "x/to-y", "../y") // x → y → x: terminates
          symlink(dir, "y/to-x", "../x")
          symlink(dir, "self.md", "self.md") // ELOOP
          const r = yield* collect({ root: dir })
          assert.deepStrictEqual(r.docPaths, [
            "a/b/c.md",
            "link.md",
            "linked/g.md",
            "real.md",
            "sub/g.md",
            "x/keep.md",
            "x/to-y/keep.md",
            "y/keep.md",
            "y/to-x/keep.md"
          ])
          assert.strictEqual(r.docs.find((d) => d.path === "link.md")!.text, "real")
          const reasons = Object.fromEntries(r.skipped.map((s) => [s.path, s.reason]))
          assert.deepStrictEqual(reasons, {
            "broken.md": "broken-symlink",
            "outside.md": "symlink-outside-root",
            "outside-dir": "symlink-outside-root",
            "a/b/up": "symlink-loop",
            "a/self": "symlink-loop",
            "x/to-y/to-x": "symlink-loop",
            "y/to-x/to-y": "symlink-loop",
            "self.md": "symlink-loop"
          })
          assert.include(r.skippedByPath["broken.md"]!.detail, "missing.md")
          yield* assertAllReleased
        })
      )
    }))

  it.scoped("a root that is a symlink to a directory is walked", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        write(dir, { "real/a.md": "a" })
        symlink(dir, "alias", "real")
        const r = yield* collect({ root: path.join(dir, "alias") })
        assert.deepStrictEqual(r.docPaths, ["a.md"])
      })
    ))

  it.scoped("root errors are LoaderErrors with a reason", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        write(dir, { "file.md": "x" })
        const missing = path.join(dir, "nope")
        const e1 = yield* Effect.flip(collect({ root: missing }))
        assert.strictEqual(e1._tag, "LoaderError")
        assert.strictEqual(e1.reason, "root-not-found")
        assert.strictEqual(e1.message, `no such directory: ${missing} — check the path`)
        const e2 = yield* Effect.flip(collect({ root: path.join(dir, "file.md") }))
        assert.strictEqual(e2.reason, "root-not-a-directory")
        const e3 = yield* Effect.flip(collect({ root: path.join(dir, "file.md", "below") }))
        assert.strictEqual(e3.reason, "root-not-found")
        const e4 = yield* Effect.flip(
          collectWith({ root: dir }, {
            ...Loader.nodeIO,
            openDir: () => {
              throw errno("EACCES")
            }
          })
        )
        assert.strictEqual(e4.reason, "root-unreadable")
        assert.include(e4.message, "permission denied")
        yield* assertAllReleased
      })
    ))

  it.scoped.skipIf(!canMkfifo)("unreadable: a FIFO is not opened for reading (does not hang; runs where mkfifo exists)", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        write(dir, { "ok.md": "ok" })
        assert.strictEqual(spawnSync("mkfifo", [path.join(dir, "pipe.md")]).status, 0)
        const r = yield* collect({ root: dir })
        assert.deepStrictEqual(r.docPaths, ["ok.md"])
        assert.strictEqual(r.skippedByPath["pipe.md"]!.reason, "unreadable")
        assert.include(r.skippedByPath["pipe.md"]!.detail, "FIFO")
        yield* assertAllReleased
      })
    ))

  it.scoped.skipIf(!canMkfifo)("unreadable: a symlink to a FIFO (runs where mkfifo exists)", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        assert.strictEqual(spawnSync("mkfifo", [path.join(dir, "fifo")]).status, 0)
        symlink(dir, "via-link.md", "fifo")
        const r = yield* collect({ root: dir })
        assert.strictEqual(r.skippedByPath["via-link.md"]!.reason, "unreadable")
      })
    ))

  it.scoped("a name that is not valid UTF-8 is skipped as invalid-name; one really holding U+FFFD is read", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        write(dir, { "ok.md": "ok", "real\uFFFD.md": "a name with the replacement character itself" })
        // Latin-1 names, as an old archive unpacks them: "café.md", "déjà/in.md" and "café.bin"
        const bytes = (part: string | ReadonlyArray<number>) =>
          typeof part === "string" ? Buffer.from(part) : Buffer.from(part)
        const raw = (...parts: ReadonlyArray<string | ReadonlyArray<number>>) =>
          Buffer.concat([Buffer.from(`${dir}/`), ...parts.map(bytes)])
        fs.writeFileSync(raw("caf", [0xe9], ".md"), "latin-1 name")
        fs.writeFileSync(raw("caf", [0xe9], ".bin"), "not a document by its extension")
        fs.mkdirSync(raw("d", [0xe9], "j", [0xe0]))
        fs.writeFileSync(raw("d", [0xe9], "j", [0xe0], "/in.md"), "inside")
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            fs.rmSync(raw("caf", [0xe9], ".md"))
            fs.rmSync(raw("caf", [0xe9], ".bin"))
            fs.rmSync(raw("d", [0xe9], "j", [0xe0]), { recursive: true })
          })
        )
        for (const options of [{ root: dir }, { root: dir, unchanged: () => Effect.succeed(new Set<string>()) }]) {
          const r = yield* collect(options)
          assert.deepStrictEqual(r.docPaths, ["ok.md", "real\uFFFD.md"])
          assert.deepStrictEqual(r.skipped.map((s) => [s.path, s.reason]), [
            ["caf\uFFFD.md", "invalid-name"],
            ["d\uFFFDj\uFFFD", "invalid-name"]
          ])
          assert.include(r.skippedByPath["caf\uFFFD.md"]!.detail, "the file's name is not valid UTF-8")
          assert.include(r.skippedByPath["d\uFFFDj\uFFFD"]!.detail, "so nothing under it is read; rename it to UTF-8")
          yield* assertAllReleased
        }
      })
    ))

  it.scoped.skipIf(!chmodBlocksReads)("unreadable: chmod 000 file and directory (runs when permissions apply: not as root)", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        write(dir, { "ok.md": "ok", "locked.md": "secret", "closed/inner.md": "inner" })
        fs.chmodSync(path.join(dir, "locked.md"), 0)
        fs.chmodSync(path.join(dir, "closed"), 0)
        const r = yield* collect({ root: dir })
        assert.deepStrictEqual(r.docPaths, ["ok.md"])
        assert.strictEqual(r.skippedByPath["locked.md"]!.reason, "unreadable")
        assert.include(r.skippedByPath["locked.md"]!.detail, "EACCES")
        assert.strictEqual(r.skippedByPath["closed"]!.reason, "unreadable-directory")
        yield* assertAllReleased
      })
    ))

  it.scoped("unreadable: open failures (simulated EACCES) and unopenable subdirectories", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        write(dir, { "ok.md": "ok", "locked.md": "secret", "closed/inner.md": "inner", "open/fine.md": "f" })
        const io: Loader.LoaderIO = {
          ...Loader.nodeIO,
          openFile: (p) => {
            if (path.basename(p) === "locked.md") throw errno("EACCES")
            return Loader.nodeIO.openFile(p)
          },
          openDir: (p) => {
            if (path.basename(p) === "closed") throw errno("EACCES")
            return Loader.nodeIO.openDir(p)
          }
        }
        const r = yield* collectWith({ root: dir }, io)
        assert.deepStrictEqual(r.docPaths, ["ok.md", "open/fine.md"])
        assert.deepStrictEqual(r.skippedByPath["locked.md"], {
          path: "locked.md",
          reason: "unreadable",
          detail: "cannot open: permission denied (EACCES)"
        })
        assert.deepStrictEqual(r.skippedByPath["closed"], {
          path: "closed",
          reason: "unreadable-directory",
          detail: "cannot open directory: permission denied (EACCES)"
        })
        yield* assertAllReleased
      })
    ))

  it.scoped("unreadable: files that vanish between listing and reading", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        write(dir, { "a.md": "a", "b.md": "b", "c.md": "c" })
        // the directory was listed already; the first open deletes everything not yet read
        let opened = 0
        const io: Loader.LoaderIO = {
          ...Loader.nodeIO,
          openFile: (p) => {
            if (opened++ === 0) {
              for (const name of ["a.md", "b.md", "c.md"]) {
                if (name !== path.basename(p)) fs.rmSync(path.join(dir, name))
              }
            }
            return Loader.nodeIO.openFile(p)
          }
        }
        const results = yield* Stream.runCollect(Loader.walkWith({ root: dir }, io))
        const r = collectResults(results)
        assert.strictEqual(r.docs.length, 1)
        assert.strictEqual(r.skipped.length, 2)
        for (const s of r.skipped) {
          assert.strictEqual(s.reason, "unreadable")
          assert.include(s.detail, "ENOENT")
        }
        yield* assertAllReleased
      })
    ))

  it.scoped("a read that fails midway is skipped as unreadable and its handle is released", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        write(dir, { "ok.md": "ok", "flaky.md": "flaky content" })
        let closed = 0
        const io: Loader.LoaderIO = {
          ...Loader.nodeIO,
          openFile: (p) => {
            const handle = Loader.nodeIO.openFile(p)
            if (path.basename(p) !== "flaky.md") return handle
            return {
              stat: () => handle.stat(),
              read: () => {
                throw errno("EIO")
              },
              close: () => {
                closed++
                return handle.close()
              }
            }
          }
        }
        const r = yield* collectWith({ root: dir }, io)
        assert.deepStrictEqual(r.docPaths, ["ok.md"])
        assert.deepStrictEqual(r.skippedByPath["flaky.md"], {
          path: "flaky.md",
          reason: "unreadable",
          detail: "cannot read: I/O error (EIO)"
        })
        assert.strictEqual(closed, 1)
        const snapshot = yield* assertAllReleased
        assert.deepStrictEqual(counts(snapshot, "file"), { acquired: 2, released: 2, open: 0 })
      })
    ))

  it.scoped("a directory that fails while being listed: Left for a subdirectory, LoaderError for the root", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        write(dir, { "ok.md": "ok", "sub/a.md": "a" })
        const failingDir = (p: string): Loader.DirLike => {
          const d = Loader.nodeIO.openDir(p)
          return {
            read: () => {
              throw errno("EIO")
            },
            close: () => d.close()
          }
        }
        const sub = yield* collectWith({ root: dir }, {
          ...Loader.nodeIO,
          openDir: (p) => path.basename(p) === "sub" ? failingDir(p) : Loader.nodeIO.openDir(p)
        })
        assert.deepStrictEqual(sub.docPaths, ["ok.md"])
        assert.strictEqual(sub.skippedByPath["sub"]!.reason, "unreadable-directory")
        const root = yield* Effect.flip(collectWith({ root: dir }, { ...Loader.nodeIO, openDir: failingDir }))
        assert.strictEqual(root.reason, "walk-failed")
        yield* assertAllReleased
      })
    ))

  // -------------------------------------------------------------------------
  // laziness and resource safety
  // -------------------------------------------------------------------------

  const manyFiles = (dir: string, n: number, perDir = n) => {
    const files: Record<string, string> = {}
    for (let i = 0; i < n; i++) {
      const sub = perDir >= n ? "" : `d${Math.floor(i / perDir)}/`
      files[`${sub}f${String(i).padStart(4, "0")}.md`] = `file ${i}`
    }
    write(dir, files)
  }

  it.scoped("is lazy: taking 2 items of 500 files opens only a few files", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        manyFiles(dir, 500)
        const taken = yield* Stream.runCollect(Stream.take(Loader.walk({ root: dir }), 2))
        assert.strictEqual(Chunk.size(taken), 2)
        const snapshot = yield* assertAllReleased
        const files = counts(snapshot, "file").acquired
        assert.isAtLeast(files, 2)
        assert.isAtMost(files, Loader.readAhead)
        assert.strictEqual(counts(snapshot, "dir").acquired, 1)
      })
    ))

  it.scoped("is lazy across directories: taking 3 items opens only the first directories", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        manyFiles(dir, 500, 50) // d0 … d9, 50 files each
        const taken = yield* Stream.runCollect(Stream.take(Loader.walk({ root: dir }), 3))
        assert.strictEqual(Chunk.size(taken), 3)
        const snapshot = yield* assertAllReleased
        assert.isAtMost(counts(snapshot, "dir").acquired, 3)
        assert.isAtMost(counts(snapshot, "file").acquired, Loader.readAhead)
      })
    ))

  it.scoped("unchanged check: files of many directories in one group; answered files are skipped, or left out", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        manyFiles(dir, 1500, 40) // d0 … d37
        // a minute on: the files' fingerprints can be trusted
        yield* TestClock.setTime(Date.now() + 60_000)
        const groups: Array<ReadonlyArray<Loader.FileFingerprint>> = []
        // the check knows the files with an even number
        const unchanged = (files: ReadonlyArray<Loader.FileFingerprint>) =>
          Effect.sync(() => {
            groups.push(files)
            return new Set(files.filter((f) => Number(f.path.slice(-7, -3)) % 2 === 0).map((f) => f.path))
          })
        const even = (p: string) => Number(p.slice(-7, -3)) % 2 === 0

        const skipping = yield* collect({ root: dir, unchanged })
        // groups of 1,024 files whatever the directories: every file offered once
        assert.deepStrictEqual(groups.map((g) => g.length), [1024, 476])
        assert.strictEqual(new Set(groups.flat().map((f) => f.path)).size, 1500)
        for (const f of groups.flat()) {
          const st = fs.statSync(path.join(dir, f.path))
          assert.strictEqual(f.fingerprint, Loader.fingerprintOf(st))
        }
        assert.strictEqual(skipping.docs.length, 750)
        assert.isTrue(skipping.docPaths.every((p) => !even(p)))
        assert.strictEqual(skipping.skipped.length, 750)
        assert.isTrue(skipping.skipped.every((s) => s.reason === "unchanged" && even(s.path)))

        groups.length = 0
        const omitting = yield* collect({ root: dir, unchanged, omitUnchanged: true })
        assert.deepStrictEqual(groups.map((g) => g.length), [1024, 476])
        assert.deepStrictEqual(omitting.docPaths, skipping.docPaths)
        assert.deepStrictEqual(omitting.skipped, [])
        const snapshot = yield* assertAllReleased
        // the answered files were never opened: 750 of the two walks together
        assert.strictEqual(counts(snapshot, "file").acquired, 1500)
      })
    ))

  it.scoped("unchanged check: the next groups are listed and stat'ed while one is asked about, two asked at most, in order", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        manyFiles(dir, 2500, 50) // d0 … d49: three groups of 1,024 files or fewer
        yield* TestClock.setTime(Date.now() + 60_000)
        const asked: Array<ReadonlyArray<Loader.FileFingerprint>> = []
        const answers: Array<Deferred.Deferred<void>> = []
        // each question waits for its answer; the check knows no file
        const unchanged = (files: ReadonlyArray<Loader.FileFingerprint>) =>
          Effect.flatMap(Deferred.make<void>(), (answer) => {
            asked.push(files)
            answers.push(answer)
            return Effect.as(Deferred.await(answer), new Set<string>())
          })
        const settle = Effect.gen(function*() {
          for (let i = 0; i < 200; i++) yield* Effect.yieldNow()
        })
        const walking = yield* Effect.fork(collect({ root: dir, unchanged }))
        yield* settle
        // the second group was listed and stat'ed while the first waits; no third question
        assert.strictEqual(asked.length, 2)
        yield* Deferred.succeed(answers[0]!, undefined)
        yield* settle
        assert.strictEqual(asked.length, 3)
        for (const answer of answers.slice(1)) yield* Deferred.succeed(answer, undefined)
        while (asked.length < 3) {
          yield* settle
          for (const answer of answers) yield* Deferred.succeed(answer, undefined)
        }
        const walked = yield* Fiber.join(walking)
        assert.deepStrictEqual(asked.map((files) => files.length), [1024, 1024, 452])
        // every file read once, in the order of the questions
        assert.deepStrictEqual(walked.docPaths, asked.flat().map((file) => file.path))
        yield* assertAllReleased
      })
    ))

  it.scoped("unchanged directories: while a group is asked about file by file, the walk lists at most two groups more", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        manyFiles(dir, 4000, 20) // d000 … d199: four groups of held directories
        yield* TestClock.setTime(Date.now() + 60_000)
        // one file of d0 changed too recently: d0's other files are asked about one by one
        const later = new Date(Date.now() + 600_000)
        fs.utimesSync(path.join(dir, "d0", "f0000.md"), later, later)
        const answer = yield* Deferred.make<void>()
        let asked = 0
        const listed: Array<number> = []
        const walking = yield* Effect.fork(collect({
          root: dir,
          omitUnchanged: true,
          unchanged: (files) =>
            Effect.suspend(() => {
              asked++
              return Effect.as(Deferred.await(answer), new Set(files.map((file) => file.path)))
            }),
          // every whole directory is the stored one
          unchangedDirectories: (directories) =>
            Effect.sync(() => {
              listed.push(directories.length)
              return new Set(directories.map((directory) => directory.path))
            })
        }))
        for (let i = 0; i < 300; i++) yield* Effect.yieldNow()
        // the group holding d0, and two more
        assert.strictEqual(asked, 1)
        assert.strictEqual(listed.length, 3)
        yield* Deferred.succeed(answer, undefined)
        const walked = yield* Fiber.join(walking)
        assert.strictEqual(listed.length, 4)
        assert.strictEqual(listed.reduce((a, b) => a + b, 0), 199)
        // only the file too new to be offered is read
        assert.deepStrictEqual(walked.docPaths, ["d0/f0000.md"])
        yield* assertAllReleased
      })
    ))

  it.scoped("unchanged check: interrupting the walk while groups are asked about interrupts the questions and releases every handle", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        manyFiles(dir, 2500, 50)
        yield* TestClock.setTime(Date.now() + 60_000)
        let asked = 0
        let interrupted = 0
        // questions that are never answered
        const unchanged = () =>
          Effect.suspend(() => {
            asked++
            return Effect.onInterrupt(Effect.never, () => Effect.sync(() => void interrupted++))
          })
        const walking = yield* Effect.fork(collect({ root: dir, unchanged }))
        while (asked < 2) yield* Effect.yieldNow()
        yield* Fiber.interrupt(walking)
        assert.strictEqual(asked, 2)
        assert.strictEqual(interrupted, 2)
        const snapshot = yield* assertAllReleased
        assert.isAbove(counts(snapshot, "dir").acquired, 0)
        assert.strictEqual(counts(snapshot, "file").acquired, 0)
      })
    ))

  it.scoped("unchanged directories: each listed directory is asked about whole, after those below it; its answer covers all its files", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        write(dir, {
          "a.md": "root a",
          "b.txt": "root b",
          "image.bin": "not a candidate",
          "sub/x.md": "sub x",
          "sub/y.md": "sub y",
          "sub/deep/z.md": "deep z",
          "other/w.md": "other w"
        })
        fs.mkdirSync(path.join(dir, "void"))
        symlink(dir, "sub/link.md", path.join(dir, "other", "w.md"))
        yield* TestClock.setTime(Date.now() + 60_000)
        const asked: Array<readonly [string, ReadonlyArray<Loader.FileFingerprint>]> = []
        let calls = 0
        const offered: Array<string> = []
        const options = (same: ReadonlySet<string>): Loader.Options => ({
          root: dir,
          unchanged: (files) =>
            Effect.sync(() => {
              offered.push(...files.map((f) => f.path))
              return new Set<string>()
            }),
          unchangedDirectories: (directories) =>
            Effect.sync(() => {
              calls++
              for (const directory of directories) asked.push([directory.path, directory.files])
              return new Set(directories.map((directory) => directory.path).filter((path) => same.has(path)))
            })
        })
        const same = new Set(["", "sub"])

        const skipping = yield* collect(options(same))
        // a directory is asked once listed, so after the directories below it; one without candidates is not
        const order = asked.map(([directory]) => directory)
        assert.sameMembers(order, ["", "sub", "sub/deep", "other"])
        // listed within one group, they are asked about in one call
        assert.strictEqual(calls, 1)
        assert.isBelow(order.indexOf("sub/deep"), order.indexOf("sub"))
        assert.strictEqual(order.at(-1), "")
        const files = Object.fromEntries(asked.map(([directory, files]) => [directory, files.map((f) => f.path).sort()]))
        assert.deepStrictEqual(files, {
          "": ["a.md", "b.txt"],
          "sub": ["sub/link.md", "sub/x.md", "sub/y.md"],
          "sub/deep": ["sub/deep/z.md"],
          "other": ["other/w.md"]
        })
        for (const [, prints] of asked) {
          for (const print of prints) {
            assert.strictEqual(print.fingerprint, Loader.fingerprintOf(fs.statSync(path.join(dir, print.path))))
          }
        }
        // the files of the directories not found unchanged are offered one by one
        assert.sameMembers(offered, ["sub/deep/z.md", "other/w.md"])
        assert.deepStrictEqual(skipping.docPaths, ["other/w.md", "sub/deep/z.md"])
        assert.deepStrictEqual(
          byPath(skipping.skipped).map((s) => [s.path, s.reason]),
          [["a.md", "unchanged"], ["b.txt", "unchanged"], ["sub/link.md", "unchanged"], ["sub/x.md", "unchanged"], [
            "sub/y.md",
            "unchanged"
          ]]
        )

        // left out with omitUnchanged; none of their files is opened
        const before = counts(yield* assertAllReleased, "file").acquired
        const omitting = yield* collect({ ...options(same), omitUnchanged: true })
        assert.deepStrictEqual(omitting.docPaths, ["other/w.md", "sub/deep/z.md"])
        assert.deepStrictEqual(omitting.skipped, [])
        assert.strictEqual(counts(yield* assertAllReleased, "file").acquired - before, 2)

        // without unchanged, unchangedDirectories is not asked: every file is read
        asked.length = 0
        const { unchanged: _, ...withoutUnchanged } = options(same)
        const all = yield* collect(withoutUnchanged)
        assert.strictEqual(asked.length, 0)
        assert.strictEqual(all.docPaths.length, 7)
      })
    ))

  it.scoped("unchanged directories: a directory with a file too new to be trusted, or with too many files, is not asked", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        write(dir, { "fresh/a.md": "a", "fresh/b.md": "b", "steady/c.md": "c" })
        const files: Record<string, string> = {}
        for (let i = 0; i <= Loader.directoryCheckLimit; i++) files[`many/f${i}.md`] = `file ${i}`
        write(dir, files)
        yield* TestClock.setTime(Date.now() + 60_000)
        // changed "just now", as far as the walk can tell
        const future = new Date(Date.now() + 60_000)
        fs.utimesSync(path.join(dir, "fresh", "b.md"), future, future)
        const asked: Array<string> = []
        let offered = 0
        const result = yield* collect({
          root: dir,
          unchanged: (prints) =>
            Effect.sync(() => {
              offered += prints.length
              return new Set(prints.map((f) => f.path))
            }),
          unchangedDirectories: (directories) =>
            Effect.sync(() => {
              asked.push(...directories.map((directory) => directory.path))
              return new Set(directories.map((directory) => directory.path))
            }),
          omitUnchanged: true
        })
        assert.deepStrictEqual(asked, ["steady"])
        // the files that can be trusted are offered one by one: the fresh one is read
        assert.strictEqual(offered, 1 + Loader.directoryCheckLimit + 1)
        assert.deepStrictEqual(result.docPaths, ["fresh/b.md"])
      })
    ))

  it.scoped("unchanged check: files stat'ed together (statMany) or one by one are offered alike; one whose stat fails is read", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        write(dir, { "a.md": "a", "sub/b.md": "b", "sub/c.txt": "c", "sub/deep/d.md": "d", "e.rst": "e" })
        symlink(dir, "sub/link.md", path.join(dir, "a.md"))
        yield* TestClock.setTime(Date.now() + 60_000)
        const oneByOne = Loader.fsIO
        const batches: Array<ReadonlyArray<string>> = []
        const together: Loader.LoaderIO = {
          ...oneByOne,
          statMany: (paths) => {
            batches.push(paths)
            // c.txt's stat fails
            return paths.map((p) => p.endsWith("c.txt") ? undefined : fs.statSync(p))
          }
        }
        const run = (io: Loader.LoaderIO) =>
          Effect.gen(function*() {
            const offered: Array<Loader.FileFingerprint> = []
            const result = yield* collectWith({
              root: dir,
              unchanged: (files) =>
                Effect.sync(() => {
                  offered.push(...files)
                  return new Set(files.map((f) => f.path))
                })
            }, io)
            return { offered: byPath(offered), result }
          })
        const single = yield* run(oneByOne)
        const batched = yield* run(together)
        // one group: every candidate in one call (the link by its target's path)
        assert.strictEqual(batches.length, 1)
        assert.sameMembers(batches[0]!.map((p) => path.relative(dir, p)), [
          "a.md",
          "a.md",
          "e.rst",
          path.join("sub", "b.md"),
          path.join("sub", "c.txt"),
          path.join("sub", "deep", "d.md")
        ])
        const expected = ["a.md", "e.rst", "sub/b.md", "sub/c.txt", "sub/deep/d.md", "sub/link.md"].map((rel) => ({
          path: rel,
          fingerprint: Loader.fingerprintOf(fs.statSync(path.join(dir, rel)))
        }))
        assert.deepStrictEqual(single.offered, expected)
        assert.deepStrictEqual(batched.offered, expected.filter((f) => f.path !== "sub/c.txt"))
        assert.deepStrictEqual(single.result.docPaths, [])
        assert.deepStrictEqual(batched.result.docPaths, ["sub/c.txt"])
        assert.deepStrictEqual(byPath(batched.result.skipped).map((s) => s.path), [
          "a.md",
          "e.rst",
          "sub/b.md",
          "sub/deep/d.md",
          "sub/link.md"
        ])
      })
    ))

  it.scoped("nodeIO (with the native addon where it is built) and fsIO walk alike: the same results in the same order", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        const files: Record<string, Content> = {
          "a.md": "# A\n\nalpha",
          "B.txt": "bravo",
          "sub/c.rst": "charlie",
          "sub/deep/d.html": "<p>delta</p>",
          "sub/empty.md": "",
          "bin.md": new Uint8Array([0x61, 0x00, 0x62]),
          "image.png": "not a candidate",
          ".hidden/e.md": "echo",
          "ünï/文档 🙂.md": "unicode"
        }
        for (let i = 0; i < 300; i++) files[`many/f${String(i).padStart(3, "0")}.md`] = `file ${i}`
        write(dir, files)
        symlink(dir, "sub/link.md", path.join(dir, "a.md"))
        symlink(dir, "sub/up", dir)
        symlink(dir, "broken.md", path.join(dir, "nowhere.md"))
        fs.writeFileSync(Buffer.concat([Buffer.from(path.join(dir, "sub") + path.sep), Buffer.from([0x62, 0xff, 0x2e, 0x6d, 0x64])]), "bad name")
        yield* TestClock.setTime(Date.now() + 60_000)
        const run = (io: Loader.LoaderIO, options: Partial<Loader.Options>) =>
          Effect.gen(function*() {
            const offered: Array<string> = []
            const results = yield* Stream.runCollect(Loader.walkWith({
              root: dir,
              unchanged: (prints) =>
                Effect.sync(() => {
                  offered.push(...prints.map((f) => `${f.path} ${f.fingerprint}`))
                  return new Set(prints.filter((f) => f.path.startsWith("many/")).map((f) => f.path))
                }),
              ...options
            }, io))
            const items = Chunk.toReadonlyArray(results).map((r) =>
              Either.isRight(r) ? `doc ${r.right.path} ${r.right.fingerprint ?? ""}` : `skip ${r.left.path} ${r.left.reason}`
            )
            return { items, offered }
          })
        for (const options of [{}, { includeHidden: true, exclude: ["sub/deep/**"] }]) {
          const native = yield* run(Loader.nodeIO, options)
          const plain = yield* run(Loader.fsIO, options)
          assert.deepStrictEqual(native, plain)
          assert.isAbove(native.items.length, 300)
          assert.isAbove(native.offered.length, 300)
        }
        yield* assertAllReleased
      })
    ))

  it.scoped("nodeIO and fsIO list a small directory whole and a large one through a handle, every entry either way", () =>
    withDir((dir) =>
      Effect.sync(() => {
        const names = (count: number, length: number) =>
          Array.from({ length: count }, (_, i) => `${String(i).padStart(6, "0")}-${"x".repeat(length)}.md`)
        const listed = (path: string, io: Loader.LoaderIO) => {
          const handle = io.openDir(path)
          const entries: Array<string> = []
          for (let entry = handle.read(); entry !== null; entry = handle.read()) entries.push(entry.name)
          handle.close()
          return entries.sort()
        }
        const small = names(3, 8)
        const large = names(4000, 60)
        write(dir, Object.fromEntries([...small.map((n) => [`small/${n}`, "s"]), ...large.map((n) => [`large/${n}`, "l"])]))
        // on this filesystem, as large as the walk reads through a handle
        assert.isAbove(fs.statSync(path.join(dir, "large")).size, 64 * 1024)
        for (const io of [Loader.nodeIO, Loader.fsIO]) {
          assert.deepStrictEqual(listed(path.join(dir, "small"), io), small)
          assert.deepStrictEqual(listed(path.join(dir, "large"), io), large)
        }
      })
    ))

  it.scoped("keeps at most one directory open per level and releases children before parents", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        // a tree of depth 4 with 3 subdirectories and 2 files per directory
        const files: Record<string, string> = {}
        const build = (prefix: string, depth: number) => {
          files[`${prefix}a.md`] = "a"
          files[`${prefix}b.md`] = "b"
          if (depth === 0) return
          for (const child of ["x", "y", "z"]) build(`${prefix}${child}/`, depth - 1)
        }
        build("", 4)
        write(dir, files)
        let maxOpenDirs = 0
        const count = yield* Loader.walk({ root: dir }).pipe(
          Stream.tap(() =>
            Effect.map(ResourceLedger.snapshot, (s) => {
              maxOpenDirs = Math.max(maxOpenDirs, counts(s, "dir").open)
            })
          ),
          Stream.runCount
        )
        assert.strictEqual(count, Object.keys(files).length)
        assert.isAtMost(maxOpenDirs, 5) // root + 4 levels
        assert.isAtLeast(maxOpenDirs, 2)
        const snapshot = yield* assertAllReleased
        const releasedDirs = snapshot.releaseOrder.filter((r) => r.kind === "dir").map((r) => r.label)
        assert.strictEqual(releasedDirs.length, 1 + 3 + 9 + 27 + 81)
        // a directory is released only after everything below it
        releasedDirs.forEach((label, i) => {
          const later = releasedDirs.slice(i + 1)
          if (label !== ".") assert.isFalse(later.some((l) => l.startsWith(label + "/")), label)
        })
        assert.strictEqual(releasedDirs[releasedDirs.length - 1], ".")
      })
    ))

  it.scoped("early termination mid-tree releases every handle", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        manyFiles(dir, 300, 20)
        write(dir, { "d3/deeper/deepest/z.md": "z" })
        for (const n of [1, 7, 25, 61, 150]) {
          const taken = yield* Stream.runCollect(Stream.take(Loader.walk({ root: dir }), n))
          assert.strictEqual(Chunk.size(taken), n)
          yield* assertAllReleased
        }
      })
    ))

  it.scoped("a failing consumer releases every handle", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        manyFiles(dir, 200, 20)
        let seen = 0
        const error = yield* Effect.flip(
          Loader.walk({ root: dir }).pipe(
            Stream.runForEach(() => (++seen === 37 ? Effect.fail("consumer failed" as const) : Effect.void))
          )
        )
        assert.strictEqual(error, "consumer failed")
        const snapshot = yield* assertAllReleased
        assert.isAbove(counts(snapshot, "file").acquired, 0)
        assert.isBelow(counts(snapshot, "file").acquired, 200)
      })
    ))

  it.scoped("a failing downstream stage (mapEffect) releases every handle", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        manyFiles(dir, 100, 10)
        const exit = yield* Loader.walk({ root: dir }).pipe(
          Stream.zipWithIndex,
          Stream.mapEffect(([r, i]) => (i === 15 ? Effect.die(new Error("boom")) : Effect.succeed(r))),
          Stream.runDrain,
          Effect.exit
        )
        assert.isTrue(Exit.isFailure(exit))
        yield* assertAllReleased
      })
    ))

  it.scoped("interrupting a fiber mid-walk releases every handle", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        manyFiles(dir, 200, 10)
        write(dir, { "d0/a/b/c/deep.md": "deep" })
        const reached = yield* Deferred.make<void>()
        let seen = 0
        const fiber = yield* Loader.walk({ root: dir }).pipe(
          Stream.runForEach(() =>
            ++seen === 12 ? Effect.zipRight(Deferred.succeed(reached, undefined), Effect.never) : Effect.void
          ),
          Effect.fork
        )
        yield* Deferred.await(reached)
        const during = yield* ResourceLedger.snapshot
        assert.isAbove(counts(during, "dir").open, 0) // mid-walk: directories are open
        yield* Fiber.interrupt(fiber)
        yield* assertAllReleased
      })
    ))

  it.scoped("Stream.interruptWhen mid-walk releases every handle", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        manyFiles(dir, 200, 10)
        const stop = yield* Deferred.make<void>()
        let seen = 0
        const results = yield* Loader.walk({ root: dir }).pipe(
          Stream.tap(() => (++seen === 20 ? Deferred.succeed(stop, undefined) : Effect.void)),
          Stream.interruptWhen(Deferred.await(stop)),
          Stream.runCollect
        )
        assert.isBelow(Chunk.size(results), 200)
        yield* assertAllReleased
      })
    ))

  it.scoped("a LoaderError during the walk releases every handle", () =>
    withDir((dir) =>
      Effect.gen(function*() {
        manyFiles(dir, 300)
        // the root listing fails after its first batch of entries
        let batches = 0
        const io: Loader.LoaderIO = {
          ...Loader.nodeIO,
          openDir: (p) => {
            const d = Loader.nodeIO.openDir(p)
            let reads = 0
            return {
              read: () => {
                if (++reads > 150) {
                  batches++
                  throw errno("EIO")
                }
                return d.read()
              },
              close: () => d.close()
            }
          }
        }
        const error: LoaderError = yield* Effect.flip(Stream.runDrain(Loader.walkWith({ root: dir }, io)))
        assert.strictEqual(error.reason, "walk-failed")
        assert.strictEqual(batches, 1)
        yield* assertAllReleased
      })
    ))
})

import { assert, describe, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as fc from "effect/FastCheck"
import * as Chunker from "../src/Chunker.js"
import type { DocumentFormat } from "../src/Domain.js"

const opts = (chunkSize: number, chunkOverlap: number): Chunker.Options => ({ chunkSize, chunkOverlap })

/** Checks the invariants every result of chunkText must satisfy. */
const assertWellFormed = (text: string, chunks: ReadonlyArray<Chunker.TextChunk>, options: Chunker.Options): void => {
  let previous: Chunker.TextChunk | undefined
  for (const chunk of chunks) {
    assert.isAbove(chunk.text.length, 0, "empty chunk")
    assert.isAtMost(chunk.text.length, options.chunkSize, "chunk longer than chunkSize")
    assert.strictEqual(chunk.text, chunk.text.trim(), "chunk not trimmed")
    assert.strictEqual(chunk.text, text.slice(chunk.start, chunk.end), "offsets do not match text")
    if (previous !== undefined) {
      assert.isAbove(chunk.start, previous.start, "chunks out of order")
      assert.isAbove(chunk.end, previous.end, "chunks out of order")
      assert.isAtMost(previous.end - chunk.start, options.chunkOverlap, "overlap larger than chunkOverlap")
    }
    previous = chunk
  }
  // every non-whitespace character is inside some chunk
  let c = 0
  for (let i = 0; i < text.length; i++) {
    if (/\s/.test(text[i])) continue
    while (c < chunks.length && chunks[c].end <= i) c++
    // asserted only when it fails: a text of megabytes would otherwise make millions of assertions
    if (!(c < chunks.length && chunks[c].start <= i)) assert.fail(`character ${i} (${JSON.stringify(text[i])}) lost`)
  }
}

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

const sentence = (i: number, word = "word") => `Sentence ${i} has the ${word} number ${i} in it.`

describe("Chunker", () => {
  describe("chunkText", () => {
    it("returns one trimmed chunk for a short text", () => {
      const text = "  Hello, world.\n\nSecond paragraph.  \n"
      const chunks = Chunker.chunkText(text, Chunker.defaults)
      assert.deepStrictEqual(chunks, [{ text: "Hello, world.\n\nSecond paragraph.", start: 2, end: 34 }])
    })

    it("a text's chunks do not depend on the texts chunked before it, however long", () => {
      const paragraphs = Array.from({ length: 40 }, (_, i) => sentence(i).repeat(1 + (i % 5)))
      const text = paragraphs.join("\n\n")
      const options = opts(300, 60)
      const alone = Chunker.chunkText(text, options)
      // 100,000 paragraphs: far more atoms than the chunker keeps room for between texts
      const huge = Array.from({ length: 100_000 }, (_, i) => `p${i}.`).join("\n\n")
      assert.isAbove(Chunker.chunkText(huge, options).length, 1000)
      assert.deepStrictEqual(Chunker.chunkText(text, options), alone)
      // and after a text of a few atoms
      assert.strictEqual(Chunker.chunkText("one.\n\ntwo.", opts(4, 0)).length, 2)
      assert.deepStrictEqual(Chunker.chunkText(text, options), alone)
      assertWellFormed(text, alone, options)
    })

    it.each(["", " ", "\n\n\t  \r\n", "\u00a0\u3000"])("returns no chunk for blank text %j", (text) => {
      assert.deepStrictEqual(Chunker.chunkText(text, Chunker.defaults), [])
    })

    it("merges paragraphs greedily up to chunkSize and cuts between them", () => {
      const paragraphs = Array.from({ length: 12 }, (_, i) => `Paragraph ${i} talks about topic ${i} at length.`)
      const text = paragraphs.join("\n\n")
      const options = opts(200, 0)
      const chunks = Chunker.chunkText(text, options)
      assertWellFormed(text, chunks, options)
      assert.isBelow(chunks.length, paragraphs.length)
      assert.isAbove(chunks.length, 1)
      for (const chunk of chunks) {
        // whole paragraphs only
        for (const part of chunk.text.split("\n\n")) assert.include(paragraphs, part)
        assert.isAbove(chunk.text.split("\n\n").length, 1)
      }
      assert.deepStrictEqual(chunks.flatMap((chunk) => chunk.text.split("\n\n")), paragraphs)
    })

    it("splits a long paragraph at sentence ends", () => {
      const sentences = Array.from({ length: 30 }, (_, i) => sentence(i))
      const text = sentences.join(" ")
      const options = opts(150, 0)
      const chunks = Chunker.chunkText(text, options)
      assertWellFormed(text, chunks, options)
      assert.isAbove(chunks.length, 5)
      for (const chunk of chunks) {
        assert.isTrue(chunk.text.startsWith("Sentence "), chunk.text)
        assert.isTrue(chunk.text.endsWith("in it."), chunk.text)
      }
    })

    it("splits at lines before sentences", () => {
      const lines = Array.from({ length: 20 }, (_, i) => `- item ${i}: some text. More text`)
      const text = lines.join("\n")
      const options = opts(120, 0)
      const chunks = Chunker.chunkText(text, options)
      assertWellFormed(text, chunks, options)
      for (const chunk of chunks) {
        for (const line of chunk.text.split("\n")) assert.include(lines, line)
      }
    })

    it("splits a long sentence at words", () => {
      const words = Array.from({ length: 200 }, (_, i) => `w${i}`)
      const text = words.join(" ")
      const options = opts(60, 0)
      const chunks = Chunker.chunkText(text, options)
      assertWellFormed(text, chunks, options)
      assert.deepStrictEqual(chunks.flatMap((chunk) => chunk.text.split(" ")), words)
      for (const chunk of chunks.slice(0, -1)) assert.isAbove(chunk.text.length, 50)
    })

    it.each([
      { length: 250, size: 100, overlap: 0, expected: [100, 100, 50] },
      { length: 100, size: 100, overlap: 0, expected: [100] },
      { length: 101, size: 100, overlap: 10, expected: [90, 21] }
    ])("hard-cuts a long word ($length chars, size $size, overlap $overlap)", ({ expected, length, overlap, size }) => {
      const text = "x".repeat(length)
      const options = opts(size, overlap)
      const chunks = Chunker.chunkText(text, options)
      assertWellFormed(text, chunks, options)
      assert.deepStrictEqual(chunks.map((chunk) => chunk.text.length), expected)
    })

    it("overlaps hard-cut pieces of a long word", () => {
      const text = Array.from({ length: 300 }, (_, i) => String.fromCharCode(97 + (i % 26))).join("")
      const options = opts(100, 20)
      const chunks = Chunker.chunkText(text, options)
      assertWellFormed(text, chunks, options)
      for (let i = 1; i < chunks.length; i++) assert.strictEqual(chunks[i - 1].end - chunks[i].start, 20)
    })

    it("never cuts a surrogate pair in two", () => {
      const text = "😀".repeat(120) + " " + "𝔸b".repeat(80)
      for (const [size, overlap] of [[51, 0], [51, 25], [60, 7], [101, 33]]) {
        const options = opts(size, overlap)
        const chunks = Chunker.chunkText(text, options)
        assertWellFormed(text, chunks, options)
        for (const chunk of chunks) assert.isFalse(loneSurrogate.test(chunk.text), chunk.text)
      }
    })

    it("overlaps consecutive chunks by about chunkOverlap, at word starts", () => {
      const text = Array.from({ length: 60 }, (_, i) => sentence(i)).join(" ")
      const options = opts(300, 60)
      const chunks = Chunker.chunkText(text, options)
      assertWellFormed(text, chunks, options)
      assert.isAbove(chunks.length, 5)
      for (let i = 1; i < chunks.length; i++) {
        const overlap = chunks[i - 1].end - chunks[i].start
        assert.isAbove(overlap, 40, "overlap too small")
        assert.isAtMost(overlap, 60)
        // the overlap is the previous chunk's tail and starts a word
        assert.isTrue(chunks[i - 1].text.endsWith(text.slice(chunks[i].start, chunks[i - 1].end)))
        assert.match(text[chunks[i].start - 1], /\s/)
      }
    })

    it("respects chunkSize with CRLF line endings and odd whitespace", () => {
      const text = Array.from({ length: 40 }, (_, i) => `Line ${i}\tof\u00a0text.\r\n${i % 5 === 0 ? "\r\n" : ""}`).join("")
      const options = opts(80, 20)
      assertWellFormed(text, Chunker.chunkText(text, options), options)
    })

    it("splits a text of several megabytes", () => {
      const text = Array.from({ length: 25_000 }, (_, i) =>
        Array.from({ length: 5 }, (_, j) => sentence(i * 5 + j, "token")).join(i % 3 === 0 ? "\n" : " ")).join("\n\n")
      assert.isAbove(text.length, 5_000_000)
      const chunks = Chunker.chunkText(text, Chunker.defaults)
      assert.isAbove(chunks.length, 5000)
      assertWellFormed(text, chunks, Chunker.defaults)
    })
  })

  describe("chunkDocument", () => {
    const markdown = [
      "Preamble before any heading.",
      "",
      "# Guide",
      "",
      "Welcome to the guide.",
      "",
      "## Install",
      "",
      "### Linux",
      "",
      "```sh",
      "# this is a comment, not a heading",
      "apt install thing",
      "```",
      "",
      "~~~",
      "## nor is this",
      "~~~",
      "",
      "### macOS ###",
      "",
      "brew install thing",
      "",
      "## Usage",
      "",
      "Run it.",
      "",
      "Configuration",
      "-------------",
      "",
      "Set options.",
      "",
      "#### Deep",
      "",
      "Deep text.",
      "",
      "# Appendix",
      "",
      "#hashtag is not a heading",
      "",
      "Other Title",
      "===========",
      "",
      "Setext body."
    ].join("\n")

    const chunkMd = (text: string, options: Chunker.Options = Chunker.defaults) =>
      Chunker.chunkDocument({ path: "docs/guide.md", text, format: "markdown" }, options)

    it("tracks heading paths, popping levels and ignoring fenced code", () => {
      const chunks = chunkMd(markdown, opts(1000, 0))
      assert.deepStrictEqual(
        chunks.map((chunk) => [chunk.headingPath, chunk.text.split("\n")[0]]),
        [
          [[], "Preamble before any heading."],
          [["Guide"], "# Guide"],
          [["Guide", "Install", "Linux"], "## Install"],
          [["Guide", "Install", "macOS"], "### macOS ###"],
          [["Guide", "Usage"], "## Usage"],
          [["Guide", "Configuration"], "Configuration"],
          [["Guide", "Configuration", "Deep"], "#### Deep"],
          [["Appendix"], "# Appendix"],
          [["Other Title"], "Other Title"]
        ]
      )
      // heading lines are part of the text; fenced code stays with its section
      assert.include(chunks[2].text, "### Linux")
      assert.include(chunks[2].text, "# this is a comment, not a heading")
      assert.include(chunks[2].text, "## nor is this")
      assert.include(chunks[7].text, "#hashtag is not a heading")
    })

    it("sets index, id, documentPath and tokenEstimate", () => {
      const chunks = chunkMd(markdown, opts(100, 20))
      assert.isAbove(chunks.length, 9)
      chunks.forEach((chunk, index) => {
        assert.strictEqual(chunk.index, index)
        assert.strictEqual(chunk.documentPath, "docs/guide.md")
        assert.strictEqual(chunk.id, Chunker.chunkId("docs/guide.md", index, chunk.text))
        assert.strictEqual(chunk.tokenEstimate, Chunker.estimateTokens(chunk.text))
        assert.isAtMost(chunk.text.length, 100)
      })
    })

    it("keeps the heading path on every chunk of a long section", () => {
      const body = Array.from({ length: 40 }, (_, i) => sentence(i)).join(" ")
      const chunks = chunkMd(`# A\n\n## B\n\n${body}\n\n# C\n\ntail`, opts(200, 40))
      assert.isAbove(chunks.length, 4)
      assert.deepStrictEqual(chunks[0].headingPath, ["A", "B"])
      assert.isTrue(chunks[0].text.startsWith("# A\n\n## B"))
      for (const chunk of chunks.slice(0, -1)) assert.deepStrictEqual(chunk.headingPath, ["A", "B"])
      assert.deepStrictEqual(chunks[chunks.length - 1].headingPath, ["C"])
    })

    it("starts every section with a new chunk and carries no overlap across sections", () => {
      const body = (word: string) => Array.from({ length: 12 }, (_, i) => `${word} sentence ${i} is here.`).join(" ")
      const text = `# One\n\n${body("alpha")}\n\n## Two\n\n${body("beta")}\n\n## Tiny\n\ngamma.\n\n# Three\n\n${body("delta")}`
      const chunks = chunkMd(text, opts(120, 40))
      const firsts = chunks.filter((chunk) => chunk.text.startsWith("#"))
      assert.deepStrictEqual(firsts.map((chunk) => chunk.text.split("\n")[0]), ["# One", "## Two", "## Tiny", "# Three"])
      assert.deepStrictEqual(chunks.find((chunk) => chunk.text.startsWith("## Tiny"))?.text, "## Tiny\n\ngamma.")
      for (const chunk of chunks) {
        const words = new Set(chunk.text.match(/alpha|beta|gamma|delta/g))
        assert.strictEqual(words.size, 1, chunk.text)
      }
      // within a section, chunks do overlap
      const alpha = chunks.filter((chunk) => chunk.text.includes("alpha"))
      assert.isAbove(alpha.length, 2)
      for (let i = 1; i < alpha.length; i++) {
        const head = alpha[i].text.slice(0, 10)
        assert.include(alpha[i - 1].text, head)
      }
    })

    it.each<{ name: string; text: string; expected: ReadonlyArray<ReadonlyArray<string>> }>([
      { name: "levels skipped and popped", text: "# A\nx\n### B\ny\n## C\nz\n#### D\nw", expected: [["A"], ["A", "B"], ["A", "C"], ["A", "C", "D"]] },
      { name: "siblings", text: "## A\nx\n## B\ny", expected: [["A"], ["B"]] },
      { name: "up to 3 spaces of indent", text: "   # A\nx\n    # not\ny", expected: [["A"]] },
      { name: "seven hashes is not a heading", text: "####### A\nx", expected: [[]] },
      { name: "closing hashes and emphasis", text: "# *A* #\nx\n## B#\ny", expected: [["*A*"], ["*A*", "B#"]] },
      { name: "empty heading", text: "# A\nx\n##\ny", expected: [["A"], ["A"]] },
      { name: "unclosed fence hides the rest", text: "# A\nx\n```\n# B\ny", expected: [["A"]] },
      { name: "longer closing fence", text: "````\n```\n# no\n````\n# A\nx", expected: [[], ["A"]] },
      { name: "inline code span is not a fence", text: "```js``` is code\n# A\nx", expected: [[], ["A"]] },
      { name: "thematic break is not setext", text: "para\n\n---\n\ntext", expected: [[]] },
      { name: "list item is not setext", text: "- item\n---\n\ntext", expected: [[]] },
      { name: "CRLF", text: "# A\r\nx\r\n## B\r\ny\r\n", expected: [["A"], ["A", "B"]] }
    ])("markdown headings: $name", ({ expected, text }) => {
      assert.deepStrictEqual(chunkMd(text, opts(50, 0)).map((chunk) => chunk.headingPath), expected)
    })

    it("handles reStructuredText titles, levels by order of appearance", () => {
      const rst = [
        "=======",
        " Title",
        "=======",
        "",
        "Intro.",
        "",
        "Part A",
        "------",
        "",
        "Text a.",
        "",
        "Sub",
        "~~~",
        "",
        "Text sub.",
        "",
        "Part B",
        "------",
        "",
        "Text b."
      ].join("\n")
      const chunks = Chunker.chunkDocument({ path: "a.rst", text: rst, format: "rst" }, opts(50, 0))
      assert.deepStrictEqual(chunks.map((chunk) => chunk.headingPath), [
        ["Title"],
        ["Title", "Part A"],
        ["Title", "Part A", "Sub"],
        ["Title", "Part B"]
      ])
      assert.isTrue(chunks[1].text.startsWith("Part A\n------"))
    })

    it.each<DocumentFormat>(["text", "html"])("has no headings for %s", (format) => {
      const chunks = Chunker.chunkDocument({ path: "a", text: "# A\n\nbody\n\nB\n===\n\nmore", format }, opts(50, 0))
      assert.isAbove(chunks.length, 0)
      for (const chunk of chunks) assert.deepStrictEqual(chunk.headingPath, [])
    })

    it("returns no chunks for a blank document", () => {
      assert.deepStrictEqual(Chunker.chunkDocument({ path: "a.md", text: "\n \n", format: "markdown" }, Chunker.defaults), [])
    })
  })

  describe("chunkId", () => {
    it("is stable and 32 hex characters", () => {
      const id = Chunker.chunkId("a/b.md", 3, "some text")
      assert.strictEqual(id, Chunker.chunkId("a/b.md", 3, "some text"))
      assert.match(id, /^[0-9a-f]{32}$/)
    })

    it.each([
      ["path", ["a/c.md", 3, "some text"]],
      ["index", ["a/b.md", 4, "some text"]],
      ["text", ["a/b.md", 3, "some text."]],
      ["path/text boundary", ["a/b.m", 3, "dsome text"]],
      ["index/text boundary", ["a/b.md", 31, "some text"]]
    ] as const)("changes when the %s changes", (_, [path, index, text]) => {
      assert.notStrictEqual(Chunker.chunkId(path, index, text), Chunker.chunkId("a/b.md", 3, "some text"))
    })

    it("is the same for the same document on every run", () => {
      const doc = { path: "x.md", text: "# T\n\n" + "Alpha beta gamma. ".repeat(200), format: "markdown" as const }
      const first = Chunker.chunkDocument(doc, opts(300, 50)).map((chunk) => chunk.id)
      const second = Chunker.chunkDocument(doc, opts(300, 50)).map((chunk) => chunk.id)
      assert.deepStrictEqual(first, second)
      assert.strictEqual(new Set(first).size, first.length)
    })
  })

  describe("settingsKey", () => {
    it("encodes the algorithm version and the options", () => {
      assert.strictEqual(Chunker.settingsKey(Chunker.defaults), "recursive-v1:size=1000:overlap=200")
      assert.isTrue(Chunker.settingsKey(Chunker.defaults).startsWith(Chunker.algorithmVersion))
    })

    it("differs when the options differ", () => {
      const keys = [opts(1000, 200), opts(1000, 0), opts(500, 200), opts(100, 0), opts(1000, 20)].map(Chunker.settingsKey)
      assert.strictEqual(new Set(keys).size, keys.length)
    })
  })

  describe("validateOptions", () => {
    it.each([opts(1000, 200), opts(50, 0), opts(50, 24), opts(100_000, 49_999), opts(500, 249)])(
      "accepts %j",
      (options) => {
        assert.deepStrictEqual(Chunker.validateOptions(options), Either.right(options))
      }
    )

    it.each<[Chunker.Options, string]>([
      [opts(500, 300), "--chunk-overlap (300) must be smaller than half of --chunk-size (500)"],
      [opts(500, 250), "--chunk-overlap (250) must be smaller than half of --chunk-size (500)"],
      [opts(49, 0), "--chunk-size must be an integer between 50 and 100000 characters (got 49)"],
      [opts(100_001, 0), "--chunk-size must be an integer between 50 and 100000 characters (got 100001)"],
      [opts(100.5, 0), "--chunk-size must be an integer between 50 and 100000 characters (got 100.5)"],
      [opts(Number.NaN, 0), "--chunk-size must be an integer between 50 and 100000 characters (got NaN)"],
      [opts(1000, -1), "--chunk-overlap must be an integer >= 0 characters (got -1)"],
      [opts(1000, 1.5), "--chunk-overlap must be an integer >= 0 characters (got 1.5)"]
    ])("rejects %j", (options, message) => {
      const result = Chunker.validateOptions(options)
      assert.isTrue(Either.isLeft(result))
      if (Either.isLeft(result)) assert.isTrue(result.left.startsWith(message), result.left)
    })
  })

  describe("estimateTokens", () => {
    it.each<[string, number]>([
      ["", 0],
      ["hello", 2],
      ["hello world", 3],
      ["The quick brown fox jumps over the lazy dog.", 12],
      ["x".repeat(400), 100],
      ["日本語のテキスト", 9]
    ])("estimates %j as %d", (text, expected) => {
      assert.strictEqual(Chunker.estimateTokens(text), expected)
    })

    it("is roughly 4/3 tokens per English word", () => {
      const text = Array.from({ length: 300 }, (_, i) => sentence(i)).join(" ")
      const words = text.split(/\s+/).length
      const tokens = Chunker.estimateTokens(text)
      assert.isTrue(Number.isInteger(tokens))
      assert.isAtLeast(tokens, words)
      assert.isAtMost(tokens, words * 2)
    })
  })

  describe("properties", () => {
    const piece = fc.oneof(
      { arbitrary: fc.constantFrom("alpha", "beta", "Gamma", "δέλτα", "e", "😀x", "42", "end.", "stop!", "ask?"), weight: 10 },
      { arbitrary: fc.constantFrom(" ", " ", "  ", "\n", "\n\n", "\r\n", "\t", " \n \n "), weight: 8 },
      { arbitrary: fc.string({ minLength: 1, maxLength: 12 }), weight: 2 },
      { arbitrary: fc.string({ minLength: 40, maxLength: 300 }), weight: 1 },
      { arbitrary: fc.constantFrom("#", "## ", "```", "===", "---"), weight: 1 }
    )
    const text = fc.array(piece, { maxLength: 400 }).map((pieces) => pieces.join(""))
    const options = fc.integer({ min: Chunker.minChunkSize, max: 400 }).chain((chunkSize) =>
      fc.record({
        chunkSize: fc.constant(chunkSize),
        chunkOverlap: fc.integer({ min: 0, max: Math.ceil(chunkSize / 2) - 1 })
      })
    )

    it.prop("chunkText: bounded, non-empty, lossless, ordered", { text, options }, ({ options, text }) => {
      assert.isTrue(Either.isRight(Chunker.validateOptions(options)))
      assertWellFormed(text, Chunker.chunkText(text, options), options)
    }, { fastCheck: { numRuns: 300 } })

    it.prop("chunkText: deterministic", { text, options }, ({ options, text }) => {
      assert.deepStrictEqual(Chunker.chunkText(text, options), Chunker.chunkText(text, options))
    })

    it.prop(
      "chunkDocument: every word of the document occurs in some chunk",
      { text, options, format: fc.constantFrom<DocumentFormat>("markdown", "rst", "text", "html") },
      ({ format, options, text }) => {
        const chunks = Chunker.chunkDocument({ path: "p", text, format }, options)
        const joined = chunks.map((chunk) => chunk.text).join("\u0000")
        for (const word of text.split(/\s+/)) {
          if (word.length > 0 && word.length <= options.chunkSize && !loneSurrogate.test(word)) {
            assert.include(joined, word)
          }
        }
        chunks.forEach((chunk, index) => {
          assert.strictEqual(chunk.index, index)
          assert.isAbove(chunk.text.trim().length, 0)
          assert.isAtMost(chunk.text.length, options.chunkSize)
        })
        assert.deepStrictEqual(Chunker.chunkDocument({ path: "p", text, format }, options), chunks)
      },
      { fastCheck: { numRuns: 200 } }
    )
  })
})

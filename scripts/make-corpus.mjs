#!/usr/bin/env node
// Generates a large synthetic corpus of markdown and text files for scale
// checks and benchmarks. Plain ESM JavaScript, node: built-ins only.
//
//   node scripts/make-corpus.mjs <outDir> [--files N] [--seed S]
//        [--min-words A] [--max-words B] [--depth D] [--text-every K]
//        [--needle "some phrase" --needle-file K]... [--force]
//
// Output is deterministic for a given set of options: the same seed always
// produces byte-identical files at the same paths (needles change only the
// files they are planted in).
//
// Every file i (0-based, in generation order) contains the sentence
// `marker phrase zq<i in base36>x marker`, so searching for e.g.
// "zq3fx marker" finds exactly file 123 (123 is "3f" in base 36) - reliably
// for markdown files, see the usage text. Measured with the default
// 384-dimension hashing embedder and 1,000-character chunks, the file ranks
// first for about 99.7% of indexes in a 1,000-file corpus and 98.5% in a
// 10,000-file one (distinct tokens start sharing hash buckets); querying
// the whole sentence "marker phrase zq3fx marker" does slightly better.
// Files are written one at a time; nothing but the current file is held in
// memory.
//
// On success the last (and only) line on stdout is
//   {"files":N,"bytes":B,"dir":"/absolute/outDir"}
import * as fs from "node:fs"
import * as path from "node:path"
import { parseArgs } from "node:util"

const usage = `usage: node scripts/make-corpus.mjs <outDir> [options]

Generates N files of deterministic pseudo-English prose (markdown with
headings and lists, optionally mixed with plain .txt files) spread over
nested subdirectories of <outDir>, 20 to 50 files per directory.

options:
  --files N          number of files to generate (default 1000)
  --seed S           PRNG seed, an integer or any string (default 1)
  --min-words A      fewest words of prose per file (default 150)
  --max-words B      most words of prose per file (default 600)
  --depth D          directory nesting depth, 0 = flat (default 3)
  --text-every K     every Kth file (indexes K-1, 2K-1, ...) is a plain .txt
                     file, the rest markdown; 0 = markdown only (default 0)
  --needle PHRASE    plant PHRASE in the file given by the matching
  --needle-file K    --needle-file (0-based file index); repeatable in pairs
  --force            allow writing into a non-empty <outDir>
  -h, --help         show this help

Files are numbered 0..N-1 and named doc-<i zero-padded>.md (or .txt). File i
contains the unique marker "marker phrase zq<i in base36>x marker"; in
markdown files it is a short section of its own, so searching for
"zq<i in base36>x marker" ranks that file first. Plain-text files have no
sections, so their marker shares a full-size chunk and ranks less reliably.
A needle is planted as a section "## Planted note" of its own; a needle's
file is always markdown.
Prints {"files":N,"bytes":B,"dir":"..."} as one JSON line when done.`

const fail = (message) => {
  process.stderr.write(`make-corpus: ${message}\n\n${usage}\n`)
  process.exit(2)
}

// -----------------------------------------------------------------------------
// arguments
// -----------------------------------------------------------------------------

let parsed
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: {
      files: { type: "string" },
      seed: { type: "string" },
      "min-words": { type: "string" },
      "max-words": { type: "string" },
      depth: { type: "string" },
      "text-every": { type: "string" },
      needle: { type: "string", multiple: true },
      "needle-file": { type: "string", multiple: true },
      force: { type: "boolean" },
      help: { type: "boolean", short: "h" }
    }
  })
} catch (error) {
  fail(error instanceof Error ? error.message : String(error))
}
const { values, positionals } = parsed
if (values.help) {
  process.stdout.write(`${usage}\n`)
  process.exit(0)
}
if (positionals.length !== 1) fail("expected exactly one output directory")

const intOption = (name, fallback, min, max) => {
  const raw = values[name]
  if (raw === undefined) return fallback
  if (!/^\d+$/.test(raw.trim())) fail(`--${name} must be a non-negative integer (got ${JSON.stringify(raw)})`)
  const n = Number(raw)
  if (n < min || n > max) fail(`--${name} must be between ${min} and ${max} (got ${n})`)
  return n
}

const fileCount = intOption("files", 1000, 1, 10_000_000)
const minWords = intOption("min-words", 150, 1, 1_000_000)
const maxWords = intOption("max-words", Math.max(600, minWords), 1, 1_000_000)
const depth = intOption("depth", 3, 0, 12)
const textEvery = intOption("text-every", 0, 0, 10_000_000)
if (maxWords < minWords) fail(`--max-words (${maxWords}) is smaller than --min-words (${minWords})`)

/** FNV-1a of a string, for non-numeric seeds. */
const hashString = (s) => {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193)
  return h >>> 0
}
const seedText = values.seed ?? "1"
const seed = /^\d+$/.test(seedText) ? Number(BigInt(seedText) % 4294967296n) : hashString(seedText)

const needleTexts = values.needle ?? []
const needleFiles = values["needle-file"] ?? []
if (needleTexts.length !== needleFiles.length) fail("every --needle needs a matching --needle-file (and vice versa)")
/** file index -> phrases to plant there */
const needles = new Map()
needleTexts.forEach((text, n) => {
  const raw = needleFiles[n]
  if (!/^\d+$/.test(raw)) fail(`--needle-file must be a file index (got ${JSON.stringify(raw)})`)
  const k = Number(raw)
  if (k >= fileCount) fail(`--needle-file ${k} is out of range: files are numbered 0..${fileCount - 1}`)
  if (text.trim().length === 0) fail("--needle must not be empty")
  const list = needles.get(k) ?? []
  list.push(text.replace(/\s+/g, " ").trim())
  needles.set(k, list)
})

const outDir = path.resolve(positionals[0])
try {
  const stat = fs.statSync(outDir)
  if (!stat.isDirectory()) fail(`${outDir} exists and is not a directory`)
  if (!values.force && fs.readdirSync(outDir).length > 0) fail(`${outDir} is not empty (use --force to write into it anyway)`)
} catch (error) {
  if (error?.code !== "ENOENT") throw error
}
fs.mkdirSync(outDir, { recursive: true })

// -----------------------------------------------------------------------------
// deterministic randomness
// -----------------------------------------------------------------------------

/** mulberry32: a small, fast 32-bit PRNG; returns floats in [0, 1). */
const mulberry32 = (a) => () => {
  a = (a + 0x6d2b79f5) | 0
  let t = Math.imul(a ^ (a >>> 15), 1 | a)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

const random = mulberry32(seed)
const int = (lo, hi) => lo + Math.floor(random() * (hi - lo + 1))
const pick = (list) => list[Math.floor(random() * list.length)]

// -----------------------------------------------------------------------------
// vocabulary
// -----------------------------------------------------------------------------

const split = (s) => s.trim().split(/\s+/)

// Weighted towards function words so the prose has a natural word
// distribution; none of these contain "zq", so markers stay unique.
const functionWords = split(`
  the the the the of of of and and and to to to a a a in in is is that that
  it for for on on with with as as was be by by this are at from or an not
  which but have has had can will would should each when where then than
  their its our all any some more most other into over under after before
  between during while because about`)

const nouns = split(`
  system service request response queue message worker database table index
  record batch stream buffer cache node cluster region network packet route
  depot parcel vehicle driver shipment label barcode scanner sensor device
  report metric dashboard alert incident review change release version build
  deployment test module library function method interface schema field value
  document file folder archive backup snapshot replica partition shard log
  event timer schedule window deadline estimate budget forecast capacity load
  latency throughput error failure retry timeout limit threshold policy rule
  team engineer operator customer merchant account invoice order payment
  warehouse dock door belt shelf pallet container trailer manifest contract
  storage memory process thread connection session token key secret certificate
  question answer decision option tradeoff proposal plan meeting note summary
  morning evening season quarter week month year minute hour second moment`)

const verbs = split(`
  handles processes stores returns sends receives updates checks validates
  reads writes moves copies measures reports tracks records filters sorts
  groups merges splits builds deploys releases tests reviews approves rejects
  retries delays schedules assigns balances drains fills clears resets starts
  stops pauses resumes creates deletes renames replaces improves reduces
  increases supports requires allows prevents explains describes covers shows`)

const adjectives = split(`
  new old large small fast slow quiet busy early late simple complex stable
  noisy careful rough final initial primary secondary local remote central
  shared private public internal external daily weekly monthly nightly hourly
  partial complete missing duplicate stale fresh cold warm hot safe risky
  manual automatic default optional critical minor major normal unusual
  common rare steady sudden gradual clear vague short long narrow wide`)

const adverbs = split(`
  quickly slowly carefully usually rarely often sometimes always never
  eventually immediately gradually quietly safely roughly mostly partly`)

const connectors = ["However,", "Meanwhile,", "Therefore,", "Afterwards,", "In practice,", "Usually,", "As a rule,", "For now,", "In short,", "Later,"]

const headingWords = [...nouns, ...adjectives]

// -----------------------------------------------------------------------------
// prose
// -----------------------------------------------------------------------------

const capitalize = (s) => s.charAt(0).toUpperCase() + s.slice(1)

/** One sentence of roughly `target` words; returns [text, wordCount]. */
const sentence = (target) => {
  const words = []
  if (random() < 0.12) words.push(...pick(connectors).split(" "))
  while (words.length < target) {
    const r = random()
    if (r < 0.34) words.push(pick(functionWords))
    else if (r < 0.62) words.push(pick(nouns))
    else if (r < 0.8) words.push(pick(adjectives))
    else if (r < 0.95) words.push(pick(verbs))
    else words.push(pick(adverbs))
    if (words.length > 4 && words.length < target - 2 && random() < 0.05) words[words.length - 1] += ","
  }
  const text = capitalize(words.join(" ")).replace(/,$/, "") + (random() < 0.06 ? "?" : ".")
  return [text, words.length]
}

/** A paragraph of about `target` words, wrapped at ~76 columns. */
const paragraph = (target) => {
  const sentences = []
  let count = 0
  while (count < target) {
    const [text, n] = sentence(Math.min(int(6, 18), Math.max(3, target - count)))
    sentences.push(text)
    count += n
  }
  return [wrap(sentences.join(" ")), count]
}

const wrap = (text) => {
  const lines = []
  let line = ""
  for (const word of text.split(" ")) {
    if (line.length > 0 && line.length + 1 + word.length > 76) {
      lines.push(line)
      line = word
    } else {
      line = line.length > 0 ? `${line} ${word}` : word
    }
  }
  if (line.length > 0) lines.push(line)
  return lines.join("\n")
}

const headingText = () => {
  const n = int(2, 5)
  const words = []
  for (let i = 0; i < n; i++) words.push(pick(headingWords))
  return capitalize(words.join(" "))
}

const listBlock = () => {
  const items = []
  const n = int(2, 5)
  for (let i = 0; i < n; i++) items.push(`- ${sentence(int(4, 10))[0]}`)
  return [items.join("\n"), n * 7]
}

/**
 * Builds file `index`: blocks of text, joined with blank lines.
 *
 * The opening is the same in every file apart from the file's own token
 * (`zq<index in base 36>x`): a title and the marker sentence. In markdown
 * the body starts with a heading, so the opening is a section - and hence a
 * chunk - of its own, of identical size in every file; that is what lets a
 * search for "zq3fx marker" rank file 123 first even with a small hashing
 * embedder and 100,000 files. A planted needle likewise gets a section of
 * its own, inserted in front of the section heading nearest the middle.
 */
const buildFile = (index, markdown) => {
  const id = `zq${index.toString(36)}x`
  const target = int(minWords, maxWords)
  const blocks = [markdown ? `# Document ${id}` : `Document ${id}`, `marker phrase ${id} marker.`]
  const headings = []
  let words = 0
  let level = 2
  while (words < target) {
    if (markdown && (blocks.length === 2 || random() < 0.22)) {
      // the first section is a ##; later ones move up or down a level,
      // staying within ## .. ####
      if (blocks.length > 2) level = Math.max(2, Math.min(4, level + (random() < 0.5 ? 1 : -1) * (random() < 0.6 ? 1 : 0)))
      headings.push(blocks.length)
      blocks.push(`${"#".repeat(level)} ${headingText()}`)
    }
    if (markdown && random() < 0.12) {
      const [list, n] = listBlock()
      blocks.push(list)
      words += n
    } else {
      const [para, n] = paragraph(Math.min(int(25, 90), Math.max(1, target - words)))
      blocks.push(para)
      words += n
    }
  }
  const planted = needles.get(index)
  if (planted !== undefined) {
    // needle files are always markdown, so `headings` is never empty
    const middle = blocks.length / 2
    let at = headings[0]
    for (const h of headings) if (Math.abs(h - middle) < Math.abs(at - middle)) at = h
    blocks.splice(at, 0, "## Planted note", ...planted.map((p) => wrap(/[.!?]$/.test(p) ? p : `${p}.`)))
  }
  return blocks.join("\n\n") + "\n"
}

// -----------------------------------------------------------------------------
// layout
// -----------------------------------------------------------------------------

// Directories hold 20..50 files each. Leaf directory j is named by the
// base-`branching` digits of j, one path component per level, so the tree
// is `depth` levels deep; leaves whose last digit is 0 put their files in
// the parent directory instead, so files appear at several depths.
const levelNames = ["area", "topic", "batch", "set", "group", "part"]
const maxLeaves = Math.ceil(fileCount / 20)
const branching = depth === 0 ? 1 : Math.max(2, Math.ceil(Math.pow(maxLeaves, 1 / depth) - 1e-9))
const digitWidth = String(Math.max(1, branching - 1)).length

const leafDir = (leaf) => {
  if (depth === 0) return ""
  const digits = []
  let rest = leaf
  for (let level = 0; level < depth; level++) {
    digits.push(rest % branching)
    rest = Math.floor(rest / branching)
  }
  digits.reverse()
  const parts = digits.map((d, level) => `${levelNames[level % levelNames.length]}-${String(d).padStart(digitWidth, "0")}`)
  if (depth > 1 && digits[depth - 1] === 0) parts.pop()
  return parts.join("/")
}

const nameWidth = String(fileCount - 1).length

// -----------------------------------------------------------------------------
// generation
// -----------------------------------------------------------------------------

let bytes = 0
let leaf = -1
let leftInDir = 0
let dir = outDir
for (let i = 0; i < fileCount; i++) {
  if (leftInDir === 0) {
    leaf++
    leftInDir = int(20, 50)
    dir = path.join(outDir, leafDir(leaf))
    fs.mkdirSync(dir, { recursive: true })
  }
  leftInDir--
  const markdown = textEvery === 0 || (i + 1) % textEvery !== 0 || needles.has(i)
  const content = buildFile(i, markdown)
  const name = `doc-${String(i).padStart(nameWidth, "0")}.${markdown ? "md" : "txt"}`
  const data = Buffer.from(content, "utf8")
  // one synchronous write per file: measured faster than overlapping
  // asynchronous writes, and only the current file is ever in memory
  fs.writeFileSync(path.join(dir, name), data)
  bytes += data.length
}

process.stdout.write(`${JSON.stringify({ files: fileCount, bytes, dir: outDir })}\n`)

/**
 * Splits documents into chunks sized for embedding.
 *
 * The splitter is recursive: text is cut at the strongest boundary that
 * makes the pieces small enough (paragraph, then line, then sentence, then
 * word, and finally a hard character cut), and the pieces are then merged
 * greedily back into chunks of at most `chunkSize` characters. Consecutive
 * chunks overlap by up to `chunkOverlap` characters taken from the tail of
 * the previous chunk, starting at a word boundary.
 *
 * Markdown documents are first cut into sections at their headings, so that
 * every chunk knows the heading path it belongs to; reStructuredText titles
 * are recognised the same way. Every section starts a new chunk, and no
 * overlap is carried from one section into the next.
 *
 * Everything here is pure and synchronous. Sizes are measured in UTF-16 code
 * units (JavaScript string length); a surrogate pair is never cut in two.
 *
 * @since 0.1.0
 */
import { hash } from "node:crypto"
import * as Either from "effect/Either"
import type { Chunk, ChunkId, DocumentFormat } from "./Domain.js"

// -----------------------------------------------------------------------------
// options
// -----------------------------------------------------------------------------

/**
 * Chunking settings, in characters.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** largest chunk, in characters */
  readonly chunkSize: number
  /** how many characters of the previous chunk's tail a chunk repeats */
  readonly chunkOverlap: number
}

/**
 * Default chunking settings.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaults: Options = { chunkSize: 1000, chunkOverlap: 200 }

/**
 * Smallest accepted `chunkSize`.
 *
 * @since 0.1.0
 * @category constants
 */
export const minChunkSize = 50

/**
 * Largest accepted `chunkSize`.
 *
 * @since 0.1.0
 * @category constants
 */
export const maxChunkSize = 100_000

/**
 * Version of the chunking algorithm. It is part of {@link settingsKey}, so
 * bumping it when the algorithm changes makes every stored document be
 * re-chunked.
 *
 * @since 0.1.0
 * @category constants
 */
export const algorithmVersion = "recursive-v1"

/**
 * Checks chunking settings. The Left is a message for a person, naming the
 * CLI options (`--chunk-size`, `--chunk-overlap`) and the accepted bounds:
 * `chunkSize` an integer in [50, 100000], `chunkOverlap` an integer >= 0
 * and smaller than half of `chunkSize`.
 *
 * @since 0.1.0
 * @category validation
 */
export const validateOptions = (options: Options): Either.Either<Options, string> => {
  const { chunkOverlap, chunkSize } = options
  if (!Number.isInteger(chunkSize) || chunkSize < minChunkSize || chunkSize > maxChunkSize) {
    return Either.left(
      `--chunk-size must be an integer between ${minChunkSize} and ${maxChunkSize} characters (got ${chunkSize})`
    )
  }
  if (!Number.isInteger(chunkOverlap) || chunkOverlap < 0) {
    return Either.left(`--chunk-overlap must be an integer >= 0 characters (got ${chunkOverlap})`)
  }
  if (chunkOverlap * 2 >= chunkSize) {
    return Either.left(
      `--chunk-overlap (${chunkOverlap}) must be smaller than half of --chunk-size (${chunkSize}); ` +
        `use at most ${Math.ceil(chunkSize / 2) - 1}`
    )
  }
  return Either.right({ chunkSize, chunkOverlap })
}

/**
 * A string identifying the chunking algorithm and its settings, e.g.
 * `"recursive-v1:size=1000:overlap=200"`. It is stored with each document so
 * that a change of settings (or of the algorithm) triggers re-chunking.
 *
 * @since 0.1.0
 * @category utils
 */
export const settingsKey = (options: Options): string =>
  `${algorithmVersion}:size=${options.chunkSize}:overlap=${options.chunkOverlap}`

// -----------------------------------------------------------------------------
// small utilities
// -----------------------------------------------------------------------------

/** Exactly the characters JavaScript's `\s` and `String.prototype.trim` treat as whitespace. */
const isWs = (c: number): boolean =>
  c === 32 || (c >= 9 && c <= 13) || (c > 127 && isUnicodeWs(c))

const isUnicodeWs = (c: number): boolean =>
  c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 ||
  c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff

const isHighSurrogate = (c: number): boolean => c >= 0xd800 && c <= 0xdbff
const isLowSurrogate = (c: number): boolean => c >= 0xdc00 && c <= 0xdfff

/** Is `i` between the two halves of a surrogate pair? */
const splitsPair = (text: string, i: number): boolean =>
  i > 0 && i < text.length && isLowSurrogate(text.charCodeAt(i)) && isHighSurrogate(text.charCodeAt(i - 1))

/**
 * Approximate number of model tokens in `text`, for sizing and reporting.
 *
 * Heuristic: the larger of `round(words * 4 / 3 + cjk)` and
 * `ceil(length / 4)`, where `words` counts whitespace-separated runs and
 * `cjk` counts CJK ideographs, kana and hangul (about one token each).
 * English prose averages ~0.75 words per token; code and punctuation-dense
 * text is better served by ~4 characters per token. Always an integer; 0 for
 * the empty string.
 *
 * @since 0.1.0
 * @category utils
 */
export const estimateTokens = (text: string): number => estimateTokensIn(text, 0, text.length)

/**
 * {@link estimateTokens} of `text.slice(start, end)`, read in place: a chunk
 * is counted in its document's text (one flat string) rather than through
 * the slice that refers to it, which is slower to read character by
 * character.
 */
const estimateTokensIn = (text: string, start: number, end: number): number => {
  const length = end - start
  if (length === 0) return 0
  let words = 0
  let cjk = 0
  let inWord = false
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i)
    if (isWs(c)) {
      inWord = false
    } else {
      if (!inWord) {
        words++
        inWord = true
      }
      if (c >= 0x3040 && (c <= 0x30ff || (c >= 0x3400 && c <= 0x9fff) || (c >= 0xac00 && c <= 0xd7af))) cjk++
    }
  }
  return Math.max(Math.round((words * 4) / 3 + cjk), Math.ceil(length / 4))
}

/**
 * Stable chunk identifier: sha256 over an unambiguous encoding of
 * (path, index, text) — a version tag, the path's length, the path, the
 * index and the text, NUL separated — as 32 hex characters (128 bits).
 *
 * @since 0.1.0
 * @category utils
 */
export const chunkId = (path: string, index: number, text: string): ChunkId =>
  hash("sha256", `ragpipe-chunk-v1\0${path.length}\0${path}\0${index}\0${text}`, "hex").slice(0, 32) as ChunkId

// -----------------------------------------------------------------------------
// the recursive splitter
// -----------------------------------------------------------------------------

/**
 * A chunk of a text: `text === input.slice(start, end)`.
 *
 * @since 0.1.0
 * @category models
 */
export interface TextChunk {
  readonly text: string
  readonly start: number
  readonly end: number
}

/** Boundary strengths; lower is stronger. */
const SECTION = -1
const PARAGRAPH = 0
const LINE = 1
const SENTENCE = 2
const WORD = 3
const HARD = 4

/**
 * Atoms are the smallest units the merger works with: trimmed, non-empty
 * ranges of the text, in order, each at most `maxAtom` long, with the
 * strength of the boundary in front of them. Stored in growable typed arrays.
 */
class Atoms {
  start: Int32Array = new Int32Array(256)
  end: Int32Array = new Int32Array(256)
  before: Int32Array = new Int32Array(256)
  size = 0

  /** Empty, for the next range; arrays grown past `keep` atoms by a very long text are given back. */
  reset(keep: number): this {
    this.size = 0
    if (this.start.length > keep) {
      this.start = new Int32Array(256)
      this.end = new Int32Array(256)
      this.before = new Int32Array(256)
    }
    return this
  }

  push(start: number, end: number, before: number): void {
    if (this.size === this.start.length) {
      const capacity = this.size * 2
      const grow = (from: Int32Array): Int32Array => {
        const to = new Int32Array(capacity)
        to.set(from)
        return to
      }
      this.start = grow(this.start)
      this.end = grow(this.end)
      this.before = grow(this.before)
    }
    this.start[this.size] = start
    this.end[this.size] = end
    this.before[this.size] = before
    this.size++
  }
}

/**
 * The atoms of the range being chunked. Chunking a range is synchronous and
 * never nested, so one set of arrays serves every range (three typed arrays
 * per range were 30,000 allocations outside the heap for 10,000 files).
 */
const scratchAtoms = new Atoms()

/** Atoms whose arrays are kept between ranges (12 bytes each). */
const keptAtoms = 65536

const isClosing = (c: number): boolean =>
  c === 0x29 || c === 0x5d || c === 0x22 || c === 0x27 || c === 0x2019 || c === 0x201d || c === 0xbb || c === 0x2a ||
  c === 0x5f || c === 0x60

const isSentencePunct = (c: number): boolean => c === 0x2e || c === 0x21 || c === 0x3f || c === 0x2026

/** Does the whitespace run starting at `runStart` follow the end of a sentence? */
const endsSentence = (text: string, runStart: number, lowerBound: number): boolean => {
  let j = runStart - 1
  // allow a few closing quotes / brackets / emphasis markers: `end." Next`
  for (let k = 0; k < 3 && j > lowerBound && isClosing(text.charCodeAt(j)); k++) j--
  return j >= lowerBound && isSentencePunct(text.charCodeAt(j))
}

/**
 * Splits the trimmed, non-empty range [start, end) into atoms, cutting at
 * boundaries of strength <= level and recursing into pieces that are still
 * too long with the next level.
 */
const splitRange = (
  text: string,
  start: number,
  end: number,
  level: number,
  before: number,
  maxAtom: number,
  size: number,
  atoms: Atoms
): void => {
  if (end - start <= maxAtom) {
    atoms.push(start, end, before)
    return
  }
  if (level >= HARD) {
    // a single word: keep it whole when it fits into a chunk (the merger then
    // shortens the overlap in front of it), otherwise cut it into pieces
    if (end - start <= size) {
      atoms.push(start, end, before)
      return
    }
    let pos = start
    let first = true
    while (end - pos > maxAtom) {
      let cut = pos + maxAtom
      if (splitsPair(text, cut) && cut - 1 > pos) cut--
      atoms.push(pos, cut, first ? before : HARD)
      first = false
      pos = cut
    }
    atoms.push(pos, end, first ? before : HARD)
    return
  }
  let pieceStart = start
  let pieceBefore = before
  const piece = (pieceEnd: number, next: number, strength: number): void => {
    if (pieceEnd - pieceStart <= maxAtom) atoms.push(pieceStart, pieceEnd, pieceBefore)
    else splitRange(text, pieceStart, pieceEnd, level + 1, pieceBefore, maxAtom, size, atoms)
    pieceStart = next
    pieceBefore = strength
  }
  if (level < SENTENCE) {
    // only whitespace runs holding a line feed matter: jump from one to the next
    let i = start
    for (let q = text.indexOf("\n", i); q !== -1 && q < end; q = text.indexOf("\n", i)) {
      let runStart = q
      while (runStart > i && isWs(text.charCodeAt(runStart - 1))) runStart--
      let j = q + 1
      let newlines = 1
      for (let c = text.charCodeAt(j); j < end && isWs(c); c = text.charCodeAt(++j)) {
        if (c === 10) newlines++
      }
      const strength = newlines >= 2 ? PARAGRAPH : LINE
      if (strength <= level) piece(runStart, j, strength)
      i = j
    }
  } else {
    let i = start
    while (i < end) {
      if (!isWs(text.charCodeAt(i))) {
        i++
        continue
      }
      const runStart = i
      while (i < end && isWs(text.charCodeAt(i))) i++
      // runs with a line feed were handled by the line level
      const strength = level === WORD || !endsSentence(text, runStart, pieceStart) ? WORD : SENTENCE
      if (strength <= level) piece(runStart, i, strength)
    }
  }
  splitRange(text, pieceStart, end, level + 1, pieceBefore, maxAtom, size, atoms)
}

/**
 * Where the next chunk should start so that it repeats the tail of the
 * previous chunk: the first word start in [lo, hi), or, inside a word that was
 * hard-cut, the first character in [lo, hi) (not splitting a surrogate pair).
 * -1 when there is none.
 */
const overlapStart = (text: string, lo: number, hi: number, midWord: boolean): number => {
  for (let q = lo; q < hi; q++) {
    if (!isWs(text.charCodeAt(q)) && (q === 0 || isWs(text.charCodeAt(q - 1)))) return q
  }
  if (midWord) {
    for (let q = lo; q < hi; q++) {
      if (!isWs(text.charCodeAt(q)) && !splitsPair(text, q)) return q
    }
  }
  return -1
}

/**
 * Chunks the range [from, to) of `text`, appending to `out`.
 *
 * `sections` (ascending offsets) are section starts: the strongest
 * boundaries. A chunk never crosses one, and no overlap is carried across
 * one.
 */
const chunkRange = (
  text: string,
  from: number,
  to: number,
  size: number,
  overlap: number,
  sections: ReadonlyArray<number>,
  out: Array<TextChunk>
): void => {
  // trim the range
  while (from < to && isWs(text.charCodeAt(from))) from++
  while (to > from && isWs(text.charCodeAt(to - 1))) to--
  if (from >= to) return
  let hasSections = false
  for (const at of sections) {
    if (at > from && at < to) {
      hasSections = true
      break
    }
  }
  if (to - from <= size && !hasSections) {
    out.push({ text: text.slice(from, to), start: from, end: to })
    return
  }
  // atoms are small enough that any atom fits into a chunk together with a
  // full overlap (except whole words, which are kept whole when they fit)
  const maxAtom = size - overlap
  const atoms = scratchAtoms.reset(keptAtoms)
  if (hasSections) {
    let pieceStart = from
    const piece = (pieceEnd: number): void => {
      let s = pieceStart
      let e = pieceEnd
      while (s < e && isWs(text.charCodeAt(s))) s++
      while (e > s && isWs(text.charCodeAt(e - 1))) e--
      if (s < e) splitRange(text, s, e, PARAGRAPH, SECTION, maxAtom, size, atoms)
    }
    for (const at of sections) {
      if (at <= from || at >= to) continue
      piece(at)
      pieceStart = at
    }
    piece(to)
  } else {
    splitRange(text, from, to, PARAGRAPH, PARAGRAPH, maxAtom, size, atoms)
  }
  const aStart = atoms.start
  const aEnd = atoms.end
  const aBefore = atoms.before
  const n = atoms.size
  // a chunk may end early at a stronger boundary, as long as it stays at
  // least half full; it always ends before a section start
  const minFill = Math.ceil(size / 2)
  let i = 0
  let chunkStart = aStart[0]
  while (i < n) {
    let j = i
    while (j + 1 < n && aEnd[j + 1] - chunkStart <= size && aBefore[j + 1] !== SECTION) j++
    if (j + 1 < n && j > i && aBefore[j + 1] !== SECTION) {
      let best = j
      let bestStrength = aBefore[j + 1]
      for (let k = j - 1; k >= i && bestStrength > PARAGRAPH; k--) {
        if (aEnd[k] - chunkStart < minFill) break
        if (aBefore[k + 1] < bestStrength) {
          best = k
          bestStrength = aBefore[k + 1]
        }
      }
      j = best
    }
    const chunkEnd = aEnd[j]
    out.push({ text: text.slice(chunkStart, chunkEnd), start: chunkStart, end: chunkEnd })
    if (j + 1 >= n) break
    const next = j + 1
    let nextStart = aStart[next]
    if (overlap > 0 && aBefore[next] !== SECTION) {
      const lo = Math.max(chunkEnd - overlap, aEnd[next] - size, chunkStart + 1)
      if (lo < chunkEnd) {
        const p = overlapStart(text, lo, chunkEnd, aBefore[next] === HARD)
        if (p >= 0) nextStart = p
      }
    }
    chunkStart = nextStart
    i = next
  }
}

const normalizeSizes = (options: Options): readonly [size: number, overlap: number] => {
  const size = Math.max(1, Math.floor(options.chunkSize) || 1)
  const overlap = Math.min(Math.max(0, Math.floor(options.chunkOverlap) || 0), Math.floor((size - 1) / 2))
  return [size, overlap]
}

/**
 * Splits a text into chunks of at most `chunkSize` characters.
 *
 * Separators are tried in order: paragraph (blank line), line (`\n`; `\r\n`
 * works, a lone `\r` is plain whitespace), sentence end
 * (`.`, `!`, `?` or `…` — optionally followed by closing quotes or brackets —
 * then whitespace), word (whitespace), and finally a hard character cut.
 * Pieces are merged greedily; a chunk may end early (when at least half
 * full) to end at a stronger boundary. Consecutive chunks overlap by at most
 * `chunkOverlap` characters, taken from the tail of the previous chunk and
 * starting at a word boundary (inside hard-cut words: at any character).
 *
 * Guarantees: every chunk is non-empty, trimmed, at most `chunkSize` long
 * and equal to `text.slice(start, end)`; chunks are in order; every
 * non-whitespace character of `text` is inside at least one chunk.
 *
 * `options` should have passed {@link validateOptions}; other values are
 * clamped into a usable range rather than rejected.
 *
 * @since 0.1.0
 * @category chunking
 */
export const chunkText = (text: string, options: Options): ReadonlyArray<TextChunk> => {
  const [size, overlap] = normalizeSizes(options)
  const out: Array<TextChunk> = []
  chunkRange(text, 0, text.length, size, overlap, [], out)
  return out
}

// -----------------------------------------------------------------------------
// headings
// -----------------------------------------------------------------------------

interface Heading {
  /** where the heading's section starts (the heading's first line) */
  readonly at: number
  /** just after the heading's last line */
  readonly bodyStart: number
  readonly level: number
  readonly title: string
}

const SPACE = 32
const TAB = 9

const isBlankRange = (text: string, from: number, to: number): boolean => {
  for (let i = from; i < to; i++) if (!isWs(text.charCodeAt(i))) return false
  return true
}

/** Index of the end of the line starting at `pos` (position of `\n`, or text length). */
const lineEnd = (text: string, pos: number): number => {
  const nl = text.indexOf("\n", pos)
  return nl === -1 ? text.length : nl
}

/** [from, to) without a trailing `\r`. */
const contentEnd = (text: string, from: number, to: number): number =>
  to > from && text.charCodeAt(to - 1) === 13 ? to - 1 : to

const leadingSpaces = (text: string, from: number, to: number, max: number): number => {
  let n = 0
  while (from + n < to && n <= max && text.charCodeAt(from + n) === SPACE) n++
  return n
}

/** Is [from, to) one character repeated at least `min` times, then optional spaces/tabs? */
const repeatedRun = (text: string, from: number, to: number, min: number): number => {
  if (from >= to) return 0
  const c = text.charCodeAt(from)
  let i = from
  while (i < to && text.charCodeAt(i) === c) i++
  const run = i - from
  while (i < to && (text.charCodeAt(i) === SPACE || text.charCodeAt(i) === TAB)) i++
  return i === to && run >= min ? run : 0
}

const trimmedSlice = (text: string, from: number, to: number): string => {
  while (from < to && isWs(text.charCodeAt(from))) from++
  while (to > from && isWs(text.charCodeAt(to - 1))) to--
  return text.slice(from, to)
}

/** Parses an ATX heading on [p, end) where text[p] === "#"; undefined when it is not one. */
const atxHeading = (text: string, p: number, end: number): { level: number; title: string } | undefined => {
  let q = p
  while (q < end && text.charCodeAt(q) === 0x23) q++
  const level = q - p
  if (level > 6) return undefined
  if (q < end && text.charCodeAt(q) !== SPACE && text.charCodeAt(q) !== TAB) return undefined
  let cs = q
  let ce = end
  while (cs < ce && isWs(text.charCodeAt(cs))) cs++
  while (ce > cs && isWs(text.charCodeAt(ce - 1))) ce--
  // optional closing sequence: `## Title ##`
  let k = ce
  while (k > cs && text.charCodeAt(k - 1) === 0x23) k--
  if (k === cs) {
    ce = cs
  } else if (k < ce && (text.charCodeAt(k - 1) === SPACE || text.charCodeAt(k - 1) === TAB)) {
    ce = k
    while (ce > cs && isWs(text.charCodeAt(ce - 1))) ce--
  }
  return { level, title: text.slice(cs, ce) }
}

/** Could the line [from, to) be the only line of a paragraph turned into a setext heading? */
const couldBeSetextTitle = (text: string, from: number, to: number): boolean => {
  const ind = leadingSpaces(text, from, to, 3)
  if (ind > 3) return false
  const p = from + ind
  const c = text.charCodeAt(p)
  // list items and block quotes do not take a setext underline
  if (c === 0x3e) return false
  if ((c === 0x2d || c === 0x2a || c === 0x2b) && (p + 1 >= to || text.charCodeAt(p + 1) === SPACE)) return false
  let d = p
  while (d < to && text.charCodeAt(d) >= 0x30 && text.charCodeAt(d) <= 0x39) d++
  if (d > p && d < to && (text.charCodeAt(d) === 0x2e || text.charCodeAt(d) === 0x29)) return false
  return true
}

/** Markdown headings (ATX and single-line setext), skipping fenced code blocks. */
const markdownHeadings = (text: string): Array<Heading> => {
  const headings: Array<Heading> = []
  const length = text.length
  let fenceChar = 0
  let fenceLength = 0
  // the previous line, when it is a plain paragraph line that could take a setext underline
  let titleStart = -1
  let titleEnd = -1
  // whether the line before the current one ended a block (blank, heading, fence, start)
  let prevBreaksBlock = true
  let pos = 0
  while (pos <= length) {
    const le = lineEnd(text, pos)
    const next = le + 1
    const end = contentEnd(text, pos, le)
    const ind = leadingSpaces(text, pos, end, 3)
    const p = pos + ind
    const c = p < end ? text.charCodeAt(p) : -1
    let candidate = false
    let breaksBlock = false
    if (fenceChar !== 0) {
      if (ind <= 3 && c === fenceChar && repeatedRun(text, p, end, fenceLength) > 0) fenceChar = 0
      breaksBlock = true
    } else if (isBlankRange(text, pos, end)) {
      breaksBlock = true
    } else if (ind > 3) {
      // indented code (or a continuation line): never a heading
    } else if (c === 0x60 || c === 0x7e) {
      let q = p
      while (q < end && text.charCodeAt(q) === c) q++
      const run = q - p
      if (run >= 3 && !(c === 0x60 && text.indexOf("`", q) !== -1 && text.indexOf("`", q) < end)) {
        fenceChar = c
        fenceLength = run
        breaksBlock = true
      } else {
        candidate = true
      }
    } else if (c === 0x23) {
      const h = atxHeading(text, p, end)
      if (h !== undefined) {
        headings.push({ at: pos, bodyStart: Math.min(next, length), level: h.level, title: h.title })
        breaksBlock = true
      } else {
        candidate = true
      }
    } else if ((c === 0x3d || c === 0x2d) && titleStart >= 0 && repeatedRun(text, p, end, 1) > 0) {
      headings.push({
        at: titleStart,
        bodyStart: Math.min(next, length),
        level: c === 0x3d ? 1 : 2,
        title: trimmedSlice(text, titleStart, titleEnd)
      })
      breaksBlock = true
    } else if ((c === 0x2d || c === 0x2a || c === 0x5f) && repeatedRun(text, p, end, 3) > 0) {
      // thematic break
      breaksBlock = true
    } else {
      candidate = true
    }
    if (candidate && prevBreaksBlock && couldBeSetextTitle(text, pos, end)) {
      titleStart = pos
      titleEnd = end
    } else {
      titleStart = -1
    }
    prevBreaksBlock = breaksBlock
    pos = next
  }
  return headings
}

/** reStructuredText adornment characters. */
const RST_ADORNMENT = "=-~^\"'`#*+:._<>!$%&(),/;?@[\\]{|}"

const isRstAdornment = (text: string, from: number, to: number): boolean =>
  to - from >= 2 && RST_ADORNMENT.includes(text[from]) && repeatedRun(text, from, to, 2) > 0

/** reStructuredText section titles: underlined, optionally overlined; levels by order of first appearance. */
const rstHeadings = (text: string): Array<Heading> => {
  const headings: Array<Heading> = []
  const styles = new Map<string, number>()
  const length = text.length
  // the last three lines: [start, contentEnd)
  let s2 = -1
  let e2 = -1 // line before the previous line
  let s1 = -1
  let e1 = -1 // previous line
  let pos = 0
  while (pos <= length) {
    const le = lineEnd(text, pos)
    const end = contentEnd(text, pos, le)
    let used = false
    if (s1 >= 0 && isRstAdornment(text, pos, end)) {
      const title = trimmedSlice(text, s1, e1)
      const underline = end - pos
      const adornment = text.charCodeAt(pos)
      const overlined = s2 >= 0 && e2 - s2 === underline && text.startsWith(text.slice(pos, end), s2)
      const blankBefore = s2 < 0 || isBlankRange(text, s2, e2)
      if (
        title.length > 0 &&
        !isRstAdornment(text, s1, e1) &&
        // an underlined title starts in the first column; an overlined one may be inset
        (overlined || (blankBefore && !isWs(text.charCodeAt(s1)))) &&
        (underline >= title.length || underline >= 3)
      ) {
        const style = `${overlined ? "o" : "u"}${String.fromCharCode(adornment)}`
        let level = styles.get(style)
        if (level === undefined) {
          level = styles.size + 1
          styles.set(style, level)
        }
        headings.push({ at: overlined ? s2 : s1, bodyStart: Math.min(le + 1, length), level, title })
        used = true
      }
    }
    if (used) {
      // a title's underline cannot start another title
      s2 = -1
      e2 = -1
      s1 = -1
      e1 = -1
    } else {
      s2 = s1
      e2 = e1
      s1 = pos
      e1 = end
    }
    pos = le + 1
  }
  return headings
}

// -----------------------------------------------------------------------------
// documents
// -----------------------------------------------------------------------------

/**
 * Chunks a document. For `markdown`, the document is cut into sections at
 * ATX headings (`#` .. `######`, ignoring lines inside ``` / ~~~ fences) and
 * single-line setext headings (`Title` over `===` / `---`); for `rst`, at
 * underlined (optionally overlined) section titles. Each section — which
 * includes its heading line, so headings are searchable — is chunked with
 * {@link chunkText}, and its chunks carry the heading path, outermost first.
 * A section holding nothing but its heading is merged into the following
 * section. `text` and `html` documents have no headings.
 *
 * Chunk indexes run 0..n-1 over the whole document, and every chunk's `id`
 * is {@link chunkId}`(path, index, text)`.
 *
 * @since 0.1.0
 * @category chunking
 */
export const chunkDocument = (
  doc: { readonly path: string; readonly text: string; readonly format: DocumentFormat },
  options: Options
): ReadonlyArray<Chunk> => {
  const { format, path, text } = doc
  const [size, overlap] = normalizeSizes(options)
  const headings = format === "markdown" ? markdownHeadings(text) : format === "rst" ? rstHeadings(text) : []
  // every section starts a new chunk, except that a section holding nothing
  // but its heading is not a boundary for the section after it
  const sectionStarts: Array<number> = []
  for (let h = 0; h < headings.length; h++) {
    if (h === 0 || !isBlankRange(text, headings[h - 1].bodyStart, headings[h].at)) sectionStarts.push(headings[h].at)
  }
  const pieces: Array<TextChunk> = []
  chunkRange(text, 0, text.length, size, overlap, sectionStarts, pieces)

  // heading paths: a chunk belongs to the section its last character is in
  const paths: Array<ReadonlyArray<string>> = new Array(pieces.length)
  const stack: Array<Heading> = []
  let current: ReadonlyArray<string> = []
  let h = 0
  for (let k = 0; k < pieces.length; k++) {
    while (h < headings.length && headings[h].at < pieces[k].end) {
      const heading = headings[h++]
      while (stack.length > 0 && stack[stack.length - 1].level >= heading.level) stack.pop()
      stack.push(heading)
      const headingPath: Array<string> = []
      for (const entry of stack) if (entry.title.length > 0) headingPath.push(entry.title)
      current = headingPath
    }
    paths[k] = current
  }

  const chunks: Array<Chunk> = new Array(pieces.length)
  for (let index = 0; index < pieces.length; index++) {
    const chunkText = pieces[index].text
    chunks[index] = {
      id: chunkId(path, index, chunkText),
      documentPath: path,
      index,
      text: chunkText,
      headingPath: paths[index],
      tokenEstimate: estimateTokensIn(text, pieces[index].start, pieces[index].end)
    }
  }
  return chunks
}

/**
 * The offline hashing embedder: deterministic signed feature hashing.
 *
 * A text is normalised (Unicode NFKC, then lowercased) and split into word
 * tokens: maximal runs of letters, digits and combining marks
 * (`\p{L}\p{N}\p{M}`; marks are kept so that words of scripts such as
 * Devanagari are not torn apart). Tokens made only of ASCII letters get a
 * light English suffix stripping (plurals, `-ing`, `-ed`, `-ation`, `-ment`,
 * final `-e`), so that "certificates" matches "certificate" and "rotation"
 * matches "rotate". The features are every token (unigram) and every pair of
 * adjacent tokens (bigram).
 *
 * Each token is hashed with 32-bit FNV-1a over its UTF-16 code units,
 * finished with the murmur3 `fmix32` avalanche step; a bigram's hash is
 * derived from its two token hashes, so no string is built per bigram.
 *
 * Multi-probe: each feature is added to {@link probes} (8) buckets, each
 * derived from the feature hash by another `fmix32` round, with its own
 * sign (+1 / -1) so that collisions cancel out in expectation. The expected
 * dot products are those of single-bucket hashing, but the collision noise
 * is a sum of many small terms instead of a few large ones: a query's rare
 * word can no longer be outscored by a chunk that merely happens to put a
 * frequent word in the same bucket. On a 3000-file synthetic corpus (384
 * dimensions) this took single-word needle queries from 1/10 to 10/10 top-1.
 *
 * Weights: term frequency is sublinear, `1 + ln(tf)`, so a repeated word
 * does not swamp the vector; bigrams weigh {@link bigramWeight} (0.5) of a
 * unigram, adding phrase information without drowning single-word matches;
 * about 90 very frequent English function words weigh {@link stopwordWeight}
 * (0.25), so that sharing "the" and "of" does not make texts look alike.
 * The vector is L2-normalised; a text without any token yields the zero
 * vector.
 *
 * Changing anything here changes the vectors: bump {@link model}.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type { Service } from "../Embedder.js"

/**
 * Model identifier of the hashing embedder; stored with every document it
 * embedded.
 *
 * @since 0.1.0
 * @category constants
 */
export const model = "hashing-v1"

/**
 * Weight of a bigram feature relative to a unigram.
 *
 * @since 0.1.0
 * @category constants
 */
export const bigramWeight = 0.5

/**
 * Weight of a very frequent English function word ("the", "of", "is", ...)
 * relative to other words; a bigram weighs the smaller of its two words'
 * weights times {@link bigramWeight}.
 *
 * @since 0.1.0
 * @category constants
 */
export const stopwordWeight = 0.25

/**
 * How many buckets each feature is added to (each with its own sign).
 *
 * @since 0.1.0
 * @category constants
 */
export const probes = 8

/**
 * Largest batch `embedBatch` is meant to receive.
 *
 * @since 0.1.0
 * @category constants
 */
export const maxBatchSize = 256

/**
 * What the kernel needs from the module's settings.
 *
 * @internal
 */
export interface KernelSettings {
  readonly dimensions: number
  readonly probes: number
  readonly bigramWeight: number
  readonly stopwordWeight: number
}

/**
 * The embedding function, self-contained: it refers to nothing outside its
 * own body, so that its source text can also be run in a worker thread (see
 * `hashingWorkers.ts`). Returns `embed(text, out, offset)`, which writes the
 * text's vector into `out[offset, offset + dimensions)`. Not reentrant: one
 * kernel per thread.
 *
 * @internal
 */
export function hashingKernel(settings: KernelSettings): (text: string, out: Float32Array, offset: number) => void {
  const dimensions = settings.dimensions
  // the bucket arithmetic below stays exact in 32-bit integers up to 2^14 dimensions
  if (!Number.isInteger(dimensions) || dimensions < 1 || dimensions > 16384) {
    throw new RangeError(`hashingKernel: dimensions must be an integer from 1 to 16384, got ${dimensions}`)
  }
  const probeCount = settings.probes
  const bigramWeightSetting = settings.bigramWeight
  const stopwordWeightSetting = settings.stopwordWeight

  // -----------------------------------------------------------------------------
  // character classes
  // -----------------------------------------------------------------------------

  const NOT_WORD = 0
  const WORD = 1
  const HIGH_SURROGATE = 2

  const wordCharRegex = /[\p{L}\p{N}\p{M}]/u

  let bmpTable: Uint8Array | undefined

  /**
   * Class of every BMP code unit: NOT_WORD, WORD or HIGH_SURROGATE. Built
   * once, lazily, by one pass of a global regex over all BMP characters
   * (the surrogates left out, so that character `i` of the string is code
   * unit `i` below them and `i + 0x800` above) that matches runs of word
   * characters: a few hundred matches where one per character made about
   * 51,000.
   */
  const charTable = (): Uint8Array => {
    if (bmpTable !== undefined) return bmpTable
    const table = new Uint8Array(0x10000)
    const units = new Uint16Array(0x10000 - 0x800)
    for (let i = 0; i < units.length; i++) units[i] = i < 0xd800 ? i : i + 0x800
    const all = new TextDecoder("utf-16le").decode(units)
    const runs = /[\p{L}\p{N}\p{M}]+/gu
    for (let m = runs.exec(all); m !== null; m = runs.exec(all)) {
      const start = m.index
      const end = runs.lastIndex
      if (start < 0xd800) table.fill(WORD, start, Math.min(end, 0xd800))
      if (end > 0xd800) table.fill(WORD, Math.max(start, 0xd800) + 0x800, end + 0x800)
    }
    for (let c = 0xd800; c <= 0xdbff; c++) table[c] = HIGH_SURROGATE
    bmpTable = table
    return table
  }

  const astralCache = new Map<number, boolean>()

  const isAstralWordChar = (codePoint: number): boolean => {
    let result = astralCache.get(codePoint)
    if (result === undefined) {
      result = wordCharRegex.test(String.fromCodePoint(codePoint))
      if (astralCache.size < 65536) astralCache.set(codePoint, result)
    }
    return result
  }

  // -----------------------------------------------------------------------------
  // hashing
  // -----------------------------------------------------------------------------

  // eslint-disable-next-line no-control-regex
  const asciiOnly = /^[\x00-\x7f]*$/

  const FNV_OFFSET = 0x811c9dc5
  const FNV_PRIME = 0x01000193

  /** murmur3 finaliser: full avalanche of a 32-bit value (returned as a signed int32, which V8 keeps unboxed). */
  const fmix32 = (h: number): number => {
    h ^= h >>> 16
    h = Math.imul(h, 0x85ebca6b)
    h ^= h >>> 13
    h = Math.imul(h, 0xc2b2ae35)
    h ^= h >>> 16
    return h | 0
  }

  /** Order-sensitive combination of two token hashes into a bigram hash. */
  const bigramHash = (a: number, b: number): number => fmix32((Math.imul(a ^ 0x27d4eb2f, 0x9e3779b1) + b) | 0)

  const UNIGRAM = 0
  const BIGRAM = 1

  // -----------------------------------------------------------------------------
  // feature counting: open addressing, reused across texts
  // -----------------------------------------------------------------------------

  class FeatureCounts {
    capacity = 1024
    mask = this.capacity - 1
    keys = new Int32Array(this.capacity)
    kinds = new Uint8Array(this.capacity)
    /** the feature's weight before term-frequency scaling */
    weights = new Float64Array(this.capacity)
    counts = new Int32Array(this.capacity)
    stamps = new Int32Array(this.capacity)
    /** the occupied slots, in insertion order */
    used = new Int32Array(this.capacity)
    size = 0
    generation = 1

    reset(): void {
      this.size = 0
      if (this.generation === 0x7fffffff) {
        this.stamps.fill(0)
        this.generation = 1
      } else {
        this.generation++
      }
    }

    add(key: number, kind: number, weight: number): void {
      if (this.size * 2 >= this.capacity) this.grow()
      this.insert(key, kind, weight, 1)
    }

    private insert(key: number, kind: number, weight: number, count: number): void {
      const { generation, keys, kinds, mask, stamps } = this
      let slot = (key ^ kind) & mask
      while (stamps[slot] === generation) {
        if (keys[slot] === key && kinds[slot] === kind) {
          this.counts[slot] += count
          return
        }
        slot = (slot + 1) & mask
      }
      stamps[slot] = generation
      keys[slot] = key
      kinds[slot] = kind
      this.weights[slot] = weight
      this.counts[slot] = count
      this.used[this.size++] = slot
    }

    private grow(): void {
      const { counts, keys, kinds, size, used, weights } = this
      this.capacity *= 2
      this.mask = this.capacity - 1
      this.keys = new Int32Array(this.capacity)
      this.kinds = new Uint8Array(this.capacity)
      this.weights = new Float64Array(this.capacity)
      this.counts = new Int32Array(this.capacity)
      this.stamps = new Int32Array(this.capacity)
      this.used = new Int32Array(this.capacity)
      this.size = 0
      this.generation = 1
      for (let i = 0; i < size; i++) {
        const slot = used[i]
        this.insert(keys[slot], kinds[slot], weights[slot], counts[slot])
      }
    }
  }

  // -----------------------------------------------------------------------------
  // embedding
  // -----------------------------------------------------------------------------

  /** Does s[start, end) end with `suffix`? */
  const endsWith = (s: string, start: number, end: number, suffix: string): boolean => {
    const n = suffix.length
    if (end - start < n) return false
    for (let i = 0; i < n; i++) if (s.charCodeAt(end - n + i) !== suffix.charCodeAt(i)) return false
    return true
  }

  /**
   * Light English suffix stripping for a token of ASCII letters s[start, end):
   * plurals (`-s`, `-es`, `-ies` → `-y`), then `-ing` / `-ed` (undoubling a
   * final consonant), `-ation` → `-at`, `-ment`, then a final `-e`, each only
   * when enough of the word is left. "certificates", "certificate" →
   * "certificat"; "rotate", "rotated", "rotating", "rotation" → "rotat";
   * "stopped", "stops" → "stop". Returns `(newEnd << 1) | appendY`.
   */
  const stem = (s: string, start: number, end: number): number => {
    if (end - start <= 3) return end << 1
    if (endsWith(s, start, end, "sses")) {
      end -= 2
    } else if (end - start > 4 && endsWith(s, start, end, "ies")) {
      return ((end - 3) << 1) | 1
    } else if (
      s.charCodeAt(end - 1) === 0x73 && !endsWith(s, start, end, "ss") && !endsWith(s, start, end, "us") &&
      !endsWith(s, start, end, "is")
    ) {
      end -= 1
    }
    const n = end - start
    if ((n > 5 && endsWith(s, start, end, "ing")) || (n > 4 && endsWith(s, start, end, "ed"))) {
      end -= s.charCodeAt(end - 1) === 0x67 ? 3 : 2
      // "stopped" -> "stop", "running" -> "run"
      const last = s.charCodeAt(end - 1)
      if (
        end - start > 3 && last === s.charCodeAt(end - 2) && last !== 0x6c && last !== 0x73 && last !== 0x7a &&
        last !== 0x61 && last !== 0x65 && last !== 0x69 && last !== 0x6f && last !== 0x75
      ) end -= 1
    } else if (n > 7 && endsWith(s, start, end, "ation")) {
      end -= 3
    } else if (n > 7 && endsWith(s, start, end, "ment")) {
      end -= 4
    }
    if (end - start > 3 && s.charCodeAt(end - 1) === 0x65) end -= 1
    return end << 1
  }

  /** FNV-1a of s[start, end), plus a "y" when appendY. */
  const hashRange = (s: string, start: number, end: number, appendY: boolean): number => {
    let h = FNV_OFFSET
    for (let i = start; i < end; i++) h = Math.imul(h ^ s.charCodeAt(i), FNV_PRIME)
    if (appendY) h = Math.imul(h ^ 0x79, FNV_PRIME)
    return h
  }

  /**
   * Very frequent English function words. They are kept (a query made only of
   * them still matches), but weigh {@link stopwordWeight} of a normal word, so
   * that two unrelated texts do not look alike just because both use "the".
   */
  const stopwords = (
    "a about after all also am an and any are as at be been being but by can could did do does for from had has " +
    "have he her here him his how i if in into is it its may me might must my no nor not of on only or our out " +
    "over she should so some such than that the their them then there these they this those to too under up us " +
    "very was we were what when where which while who whom why will with would you your"
  ).split(" ")

  const maxStopwordLength = stopwords.reduce((max, word) => Math.max(max, word.length), 0)

  const fnv = (word: string): number => hashRange(word, 0, word.length, false)

  /** FNV-1a hashes of the stopwords, in an open-addressing table. */
  const stopwordTable = (() => {
    const table = new Int32Array(512)
    const used = new Uint8Array(512)
    for (const word of stopwords) {
      const h = fnv(word)
      let slot = fmix32(h) & 511
      while (used[slot] === 1) slot = (slot + 1) & 511
      used[slot] = 1
      table[slot] = h
    }
    return { table, used }
  })()

  /** Is the (unfinished FNV-1a) token hash that of a stopword? */
  const isStopword = (h: number): boolean => {
    const { table, used } = stopwordTable
    let slot = fmix32(h) & 511
    while (used[slot] === 1) {
      if (table[slot] === h) return true
      slot = (slot + 1) & 511
    }
    return false
  }

  const embedOne = (text: string, out: Float32Array, offset: number): void => {
    const table = charTable()
    // NFKC leaves ASCII unchanged; skipping it there saves a third of the time
    const s = (asciiOnly.test(text) ? text : text.normalize("NFKC")).toLowerCase()
    const length = s.length
    features.reset()
    let h = FNV_OFFSET
    let tokenStart = -1
    let letters = true
    let previous = 0
    let previousWeight = 1
    let hasPrevious = false
    // position `length` acts as a separator, ending the last token
    for (let i = 0; i <= length; i++) {
      const c = i < length ? s.charCodeAt(i) : 0x20
      let cls = table[c]
      let low = -1
      if (cls === HIGH_SURROGATE) {
        const next = i + 1 < length ? s.charCodeAt(i + 1) : 0
        if (next >= 0xdc00 && next <= 0xdfff) {
          low = next
          cls = isAstralWordChar(((c - 0xd800) << 10) + (next - 0xdc00) + 0x10000) ? WORD : NOT_WORD
        } else {
          cls = NOT_WORD
        }
      }
      if (cls === WORD) {
        if (tokenStart < 0) {
          tokenStart = i
          letters = true
          h = FNV_OFFSET
        }
        h = Math.imul(h ^ c, FNV_PRIME)
        if (c < 0x61 || c > 0x7a) letters = false
        if (low !== -1) h = Math.imul(h ^ low, FNV_PRIME)
      } else if (tokenStart >= 0) {
        // end of a token: s[tokenStart, i)
        let weight = 1
        if (letters) {
          if (i - tokenStart <= maxStopwordLength && isStopword(h)) weight = stopwordWeightSetting
          else if (i - tokenStart > 3) {
            const stemmed = stem(s, tokenStart, i)
            if (stemmed !== i << 1) h = hashRange(s, tokenStart, stemmed >> 1, (stemmed & 1) === 1)
          }
        }
        const token = fmix32(h)
        features.add(token, UNIGRAM, weight)
        if (hasPrevious) features.add(bigramHash(previous, token), BIGRAM, bigramWeightSetting * Math.min(weight, previousWeight))
        previous = token
        previousWeight = weight
        hasPrevious = true
        tokenStart = -1
      }
      if (low !== -1) i++
    }

    out.fill(0, offset, offset + dimensions)
    if (features.size === 0) return
    accumulator.fill(0)
    const { counts, keys, size, used, weights } = features
    for (let i = 0; i < size; i++) {
      const slot = used[i]
      const key = keys[slot]
      const count = counts[slot]
      const weight = count === 1 ? weights[slot] : weights[slot] * (1 + Math.log(count))
      for (let probe = 1; probe <= probeCount; probe++) {
        const g = fmix32(key + Math.imul(probe, 0x9e3779b9))
        // Bucket from the high bits: floor(g × dimensions / 2^32) (multiply-shift
        // range reduction), in 32-bit integer steps — g's halves times
        // `dimensions` (< 2^14) stay below 2^31, and carrying the low
        // half's product down loses nothing to the floor. Sign from the
        // lowest bit, without a branch (it is random: a branch would be
        // mispredicted half the time).
        const bucket = ((g >>> 16) * dimensions + (((g & 0xffff) * dimensions) >>> 16)) >>> 16
        accumulator[bucket] += weight * (1 - ((g & 1) << 1))
      }
    }
    let sumOfSquares = 0
    for (let d = 0; d < dimensions; d++) sumOfSquares += accumulator[d] * accumulator[d]
    if (sumOfSquares === 0) return
    const scale = 1 / Math.sqrt(sumOfSquares)
    for (let d = 0; d < dimensions; d++) out[offset + d] = accumulator[d] * scale
  }

  const features = new FeatureCounts()
  const accumulator = new Float64Array(dimensions)
  return embedOne
}

/**
 * The kernel settings of the embedder of `dimensions` dimensions.
 *
 * @internal
 */
export const kernelSettings = (dimensions: number): KernelSettings => ({
  dimensions,
  probes,
  bigramWeight,
  stopwordWeight
})

/**
 * Builds the hashing embedder. `dimensions` must be a positive integer (the
 * layer in `Embedder.ts` validates it). Embedding never fails.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeHashingEmbedder = (options: { readonly dimensions: number }): Service => {
  const dimensions = options.dimensions
  const kernel = hashingKernel(kernelSettings(dimensions))
  const embed = (text: string): Float32Array => {
    const vector = new Float32Array(dimensions)
    kernel(text, vector, 0)
    return vector
  }
  return {
    model,
    dimensions,
    maxBatchSize,
    embedBatch: (texts) => Effect.sync(() => texts.map(embed))
  }
}

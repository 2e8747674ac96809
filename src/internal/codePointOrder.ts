/**
 * Code point order, which is the byte order of the UTF-8 forms: how
 * PostgreSQL sorts text under collation "C". It is JavaScript's UTF-16
 * order but where a surrogate (half of a code point above U+FFFF) meets a
 * code unit from U+E000 to U+FFFF, which UTF-16 puts first.
 *
 * @internal
 */
export const compareCodePoints = (a: string, b: string): number => {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i)
    const y = b.charCodeAt(i)
    if (x === y) continue
    const xSurrogate = x >= 0xD800 && x <= 0xDFFF
    const ySurrogate = y >= 0xD800 && y <= 0xDFFF
    if (xSurrogate !== ySurrogate && (xSurrogate ? y : x) >= 0xE000) return xSurrogate ? 1 : -1
    return x - y
  }
  return a.length - b.length
}

const fromD800 = /[\uD800-\uFFFF]/

/**
 * A comparison of `key`s in code point order for sorting `items`: UTF-16
 * order, native and faster, when no key holds a code unit from U+D800 up
 * (then the two orders agree).
 *
 * @internal
 */
export const codePointOrderOf = <A>(
  items: ReadonlyArray<A>,
  key: (item: A) => string
): (a: A, b: A) => number =>
  items.some((item) => fromD800.test(key(item)))
    ? (a, b) => compareCodePoints(key(a), key(b))
    : (a, b) => {
      const x = key(a)
      const y = key(b)
      return x < y ? -1 : x > y ? 1 : 0
    }

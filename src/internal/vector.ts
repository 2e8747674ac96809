/**
 * pgvector's text form of a vector: `[x1,x2,...]`. Each float32 component is
 * printed as the shortest decimal of its double value, which pgvector parses
 * back to the same float32.
 *
 * @internal
 */
export const vectorLiteral = (v: Float32Array | ReadonlyArray<number>): string => {
  let out = "["
  for (let i = 0; i < v.length; i++) {
    if (i > 0) out += ","
    out += v[i]
  }
  return out + "]"
}

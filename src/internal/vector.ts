/**
 * pgvector's text form of a vector: `[x1,x2,...]`. Each float32 component is
 * printed with 9 significant digits — enough for pgvector to parse back the
 * very same float32, and about half the text of a double's shortest form.
 *
 * @internal
 */
export const vectorLiteral = (v: Float32Array | ReadonlyArray<number>): string => {
  let out = "["
  for (let i = 0; i < v.length; i++) {
    const x = v[i]!
    if (i > 0) out += ","
    out += x === 0 ? "0" : x.toPrecision(9)
  }
  return out + "]"
}

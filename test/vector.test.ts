import { assert, describe, it } from "@effect/vitest"
import * as fc from "effect/FastCheck"
import { vectorLiteral } from "../src/internal/vector.js"

const parse = (literal: string): Float32Array =>
  literal === "[]" ? new Float32Array(0) : Float32Array.from(literal.slice(1, -1).split(",").map(Number))

describe("vectorLiteral", () => {
  it("prints pgvector's text form", () => {
    assert.strictEqual(vectorLiteral(new Float32Array([0, 1, -0.5])), "[0,1.00000000,-0.500000000]")
    assert.strictEqual(vectorLiteral([]), "[]")
  })

  it.prop("every float32 component parses back to the same float32", [fc.array(fc.float({ noNaN: true, noDefaultInfinity: true }), { maxLength: 64 })], ([values]) => {
    const vector = Float32Array.from(values)
    assert.deepStrictEqual(parse(vectorLiteral(vector)), vector.map((x) => x === 0 ? 0 : x))
  })
})

/**
 * Configuration helpers shared by the tests of `layerConfig`s.
 */
import { assert } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"

/** Run an effect with its configuration read from `entries` instead of the environment. */
export const withEnv = (entries: Record<string, string>) =>
  Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(entries))))

/** `effect` fails, and its error names `variable`. */
export const failsNaming = <A, E, R>(effect: Effect.Effect<A, E, R>, variable: string): Effect.Effect<void, never, R> =>
  Effect.map(Effect.either(effect), (result) => {
    assert.isTrue(Either.isLeft(result))
    if (Either.isLeft(result)) assert.include(String(result.left), variable)
  })

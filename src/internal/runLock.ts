import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { StoreError } from "../Errors.js"

/**
 * The error of a run that finds another one running on its store.
 *
 * @internal
 */
export const storeBusy = (where: string): StoreError =>
  new StoreError({
    reason: "locked",
    message: `another ingest is running on this store (${where}): one run at a time removes what its walk did ` +
      `not see, so two would undo each other; wait for the other to finish, or stop it`
  })

/**
 * A store's in-process run lock: `hold` fails with {@link storeBusy} while
 * another scope holds it, and lets go when its scope closes.
 *
 * @internal
 */
export const makeRunFlag = (): { readonly hold: Effect.Effect<void, StoreError, Scope.Scope> } => {
  let running = false
  return {
    hold: Effect.acquireRelease(
      Effect.suspend(() => running ? Effect.fail(storeBusy("in this process")) : Effect.sync(() => void (running = true))),
      () => Effect.sync(() => void (running = false))
    )
  }
}

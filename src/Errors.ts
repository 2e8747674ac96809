/**
 * Errors that cross the library / CLI boundary. Each carries a `reason`
 * literal a program can match on and a `message` written for a person: what
 * was wrong and what to do about it.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * The directory to ingest could not be walked.
 *
 * @since 0.1.0
 * @category errors
 */
export class LoaderError extends Schema.TaggedError<LoaderError>()("LoaderError", {
  reason: Schema.Literal("root-not-found", "root-not-a-directory", "root-unreadable", "walk-failed"),
  path: Schema.String,
  message: Schema.String
}) {}

/**
 * An embedding provider could not produce embeddings for a batch.
 *
 * @since 0.1.0
 * @category errors
 */
export class EmbedError extends Schema.TaggedError<EmbedError>()("EmbedError", {
  reason: Schema.Literal(
    "timeout",
    "http",
    "connection",
    "malformed-response",
    "dimension-mismatch",
    "invalid-input",
    "config",
    "provider"
  ),
  message: Schema.String,
  /** HTTP status, when the provider answered with one */
  status: Schema.optional(Schema.Int),
  /** the provider's Retry-After header as sent (delta-seconds or an HTTP date) */
  retryAfter: Schema.optional(Schema.String)
}) {}

/**
 * The vector store failed or refused an operation.
 *
 * @since 0.1.0
 * @category errors
 */
export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", {
  reason: Schema.Literal("open", "missing", "migration", "query", "dimension-mismatch", "model-mismatch", "locked"),
  message: Schema.String
}) {}

/**
 * A user-supplied option or argument was invalid.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidInput extends Schema.TaggedError<InvalidInput>()("InvalidInput", {
  reason: Schema.Literal("option", "argument", "query"),
  message: Schema.String
}) {}

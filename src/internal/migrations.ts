import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

/**
 * The store's schema, in order. The embedding column starts without a
 * dimension; the first ingest fixes it (see VectorStore.prepare), because the
 * dimension belongs to the embedder, not to the schema.
 *
 * @internal
 */
export const migrations = Migrator.fromRecord({
  "1_create_store": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE EXTENSION IF NOT EXISTS vector`
    yield* sql`CREATE TABLE IF NOT EXISTS ragpipe_meta (
      key text PRIMARY KEY,
      value text NOT NULL
    )`
    yield* sql`CREATE SEQUENCE IF NOT EXISTS ragpipe_run_seq`
    yield* sql`CREATE TABLE documents (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      path text NOT NULL UNIQUE,
      content_hash text NOT NULL,
      size_bytes bigint NOT NULL,
      format text NOT NULL,
      chunker text NOT NULL,
      model text NOT NULL,
      dimensions integer NOT NULL,
      chunk_count integer NOT NULL,
      seen_run bigint NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    )`
    yield* sql`CREATE INDEX documents_seen_run_idx ON documents (seen_run)`
    yield* sql`CREATE TABLE chunks (
      id text PRIMARY KEY,
      document_id bigint NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
      chunk_index integer NOT NULL,
      text text NOT NULL,
      heading_path jsonb NOT NULL,
      token_estimate integer NOT NULL,
      embedding vector NOT NULL,
      UNIQUE (document_id, chunk_index)
    )`
  }),
  "2_failures": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    // a document written with some chunks missing is not up to date
    yield* sql`ALTER TABLE documents ADD COLUMN complete boolean NOT NULL DEFAULT true`
    yield* sql`CREATE TABLE failures (
      document_id bigint NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
      chunk_index integer NOT NULL,
      error_kind text NOT NULL,
      message text NOT NULL,
      attempts integer NOT NULL,
      first_seen timestamptz NOT NULL DEFAULT now(),
      last_seen timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (document_id, chunk_index)
    )`
  }),
  "3_fingerprints_and_inline_rows": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    // the file's size, times and inode when stored: an unchanged file is not read again
    yield* sql`ALTER TABLE documents ADD COLUMN fingerprint text`
    // removal scans every row anyway (seen_run <> the run); without the
    // index, stamping a document seen is a heap-only update
    yield* sql`DROP INDEX IF EXISTS documents_seen_run_idx`
    // A chunk row (text plus a 384-d vector) is ~2.5 KB: above the default
    // 2 KB threshold PostgreSQL would compress its text and move its vector
    // to the TOAST table, one more insert per row. Kept inline up to a page.
    yield* sql`ALTER TABLE chunks SET (toast_tuple_target = 8160)`
    // One index per chunk row instead of two, and no per-row foreign-key
    // check: together they halve the cost of writing a chunk. Chunks are
    // only ever written and removed with their document, in its transaction
    // (removing a document removes its chunks in the same statement), and a
    // chunk id is a hash of (path, index, text), unique by construction.
    yield* sql`ALTER TABLE chunks DROP CONSTRAINT IF EXISTS chunks_document_id_fkey`
    yield* sql`ALTER TABLE chunks DROP CONSTRAINT IF EXISTS chunks_pkey`
    yield* sql`ALTER TABLE chunks DROP CONSTRAINT IF EXISTS chunks_document_id_chunk_index_key`
    yield* sql`ALTER TABLE chunks ADD PRIMARY KEY (document_id, chunk_index)`
  }),
  "4_seen_list": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    // The paths a run found unchanged, appended as it walks: removal keeps
    // what the run wrote or listed here. Stamping every unchanged document
    // instead rewrote its row (a new tuple and its WAL) on every run.
    // Unlogged: the list only matters while its run is alive, and a server
    // crash ends the run anyway.
    yield* sql`CREATE UNLOGGED TABLE ragpipe_seen (run_id bigint NOT NULL, path text NOT NULL)`
  }),
  "5_seen_directories": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    // Directories a run found unchanged whole: removal keeps every document
    // directly in them. Unlogged, as the seen list.
    yield* sql`CREATE UNLOGGED TABLE ragpipe_seen_dirs (run_id bigint NOT NULL, dir text NOT NULL)`
  }),
  "6_kept_directory_digests": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    // The directory digests of the documents, as a run computed them at
    // its end, for the next run to read instead of computing them while it
    // walks. Any statement that writes documents drops them, in its own
    // transaction, whatever wrote it: kept digests are never stale. The
    // function keeps the schema it was created in. Unlogged: a server
    // crash empties the table, and digests are computed again.
    yield* sql`CREATE UNLOGGED TABLE ragpipe_dir_digests (
      chunker text NOT NULL,
      model text NOT NULL,
      dimensions integer NOT NULL,
      dir text NOT NULL,
      documents integer NOT NULL,
      digest text NOT NULL,
      total integer NOT NULL
    )`
    yield* sql`CREATE FUNCTION ragpipe_drop_dir_digests() RETURNS trigger LANGUAGE plpgsql
      SET search_path FROM CURRENT AS $$ BEGIN DELETE FROM ragpipe_dir_digests; RETURN NULL; END $$`
    yield* sql`CREATE TRIGGER documents_drop_dir_digests
      AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON documents
      FOR EACH STATEMENT EXECUTE FUNCTION ragpipe_drop_dir_digests()`
  })
})

/**
 * Encoding of chunk rows in PostgreSQL's binary COPY format, for
 *
 *     COPY chunks (id, document_id, chunk_index, text, heading_path, token_estimate, embedding)
 *     FROM STDIN (FORMAT binary)
 *
 * A COPY stream is {@link copyHeader}, any number of {@link encodeChunkRows}
 * buffers, then {@link copyTrailer}.
 *
 * @internal
 */

/**
 * One row of the `chunks` table.
 *
 * @internal
 */
export interface ChunkRow {
  readonly id: string
  /** a bigint, in decimal */
  readonly documentId: string
  readonly chunkIndex: number
  readonly text: string
  readonly headingPath: ReadonlyArray<string>
  readonly tokenEstimate: number
  readonly embedding: Float32Array | ReadonlyArray<number>
}

/**
 * The columns, in the order {@link encodeChunkRows} writes them.
 *
 * @internal
 */
export const chunkCopyColumns = "id, document_id, chunk_index, text, heading_path, token_estimate, embedding"

/**
 * The statement the encoded rows are meant for.
 *
 * @internal
 */
export const chunkCopyStatement = `COPY chunks (${chunkCopyColumns}) FROM STDIN (FORMAT binary)`

/**
 * The same for the embedded database, which reads the stream from memory.
 *
 * @internal
 */
export const chunkCopyFromMemoryStatement = `COPY chunks (${chunkCopyColumns}) FROM '/dev/blob' (FORMAT binary)`

const fieldCount = 7

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

/**
 * Signature `PGCOPY\n\377\r\n\0`, flags (0: no OIDs) and an empty header
 * extension.
 *
 * @internal
 */
export const copyHeader: Buffer = Buffer.concat([
  Buffer.from([0x50, 0x47, 0x43, 0x4f, 0x50, 0x59, 0x0a, 0xff, 0x0d, 0x0a, 0x00]),
  Buffer.alloc(8)
])

/**
 * The file trailer: a field count of -1.
 *
 * @internal
 */
export const copyTrailer: Buffer = Buffer.from([0xff, 0xff])

/**
 * Rows in binary COPY tuple format, in one Buffer. Field by field: id
 * `text` (UTF-8), document_id `int8`, chunk_index `int4`, text `text`,
 * heading_path `jsonb` (version byte 1, then the JSON text), token_estimate
 * `int4`, embedding pgvector `vector` (int16 dimensions, int16 0, then each
 * component as a big-endian float4).
 *
 * @internal
 */
export const encodeChunkRows = (
  rows: ReadonlyArray<ChunkRow>,
  allocate: (size: number) => Buffer = Buffer.allocUnsafe
): Buffer => {
  const headings = new Array<string>(rows.length)
  let size = 0
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r]!
    const dimensions = row.embedding.length
    if (dimensions > 0x7fff) throw new RangeError(`a vector of ${dimensions} dimensions cannot be encoded`)
    const heading = JSON.stringify(row.headingPath)
    headings[r] = heading
    size += 2 + // field count
      4 + Buffer.byteLength(row.id, "utf8") +
      4 + 8 +
      4 + 4 +
      4 + Buffer.byteLength(row.text, "utf8") +
      4 + 1 + Buffer.byteLength(heading, "utf8") +
      4 + 4 +
      4 + 4 + 4 * dimensions
  }
  const buf = allocate(size)
  let o = 0
  const writeText = (text: string) => {
    const length = buf.write(text, o + 4, "utf8")
    buf.writeInt32BE(length, o)
    o += 4 + length
  }
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r]!
    o = buf.writeInt16BE(fieldCount, o)
    writeText(row.id)
    o = buf.writeInt32BE(8, o)
    o = buf.writeBigInt64BE(BigInt(row.documentId), o)
    o = buf.writeInt32BE(4, o)
    o = buf.writeInt32BE(row.chunkIndex, o)
    writeText(row.text)
    const heading = headings[r]!
    const headingLength = buf.write(heading, o + 5, "utf8")
    o = buf.writeInt32BE(headingLength + 1, o)
    o = buf.writeUInt8(1, o)
    o += headingLength
    o = buf.writeInt32BE(4, o)
    o = buf.writeInt32BE(row.tokenEstimate, o)
    const embedding = row.embedding
    const dimensions = embedding.length
    o = buf.writeInt32BE(4 + 4 * dimensions, o)
    o = buf.writeInt16BE(dimensions, o)
    o = buf.writeInt16BE(0, o)
    if (littleEndian) {
      // the float32 values in host order, then one byte swap over all of them
      const floats = embedding instanceof Float32Array ? embedding : Float32Array.from(embedding)
      const bytes = new Uint8Array(floats.buffer, floats.byteOffset, floats.byteLength)
      buf.set(bytes, o)
      buf.subarray(o, o + bytes.byteLength).swap32()
      o += bytes.byteLength
    } else {
      for (let i = 0; i < dimensions; i++) o = buf.writeFloatBE(embedding[i]!, o)
    }
  }
  if (o !== size) throw new Error(`binary COPY encoding wrote ${o} bytes, expected ${size}`)
  return buf
}

/**
 * The size of a {@link CopyArena}'s buffers, and the most bytes of rows
 * {@link copyBatches} puts in one by default (about 75 rows of 1,000
 * characters and 384 dimensions), a quarter below it so that a batch whose
 * estimate falls short still fits: only a batch of mostly non-ASCII text
 * outgrows its buffer and replaces it. The buffers are kept from one COPY
 * to the next, so the COPY path frees no large allocation, which would
 * make glibc keep freed memory from then on (see src/cli/codeCache.ts).
 *
 * @internal
 */
const copyBufferBytes = 256 * 1024
const copyBatchBytes = (copyBufferBytes / 4) * 3

/**
 * The rows in runs of about `maxBytes` encoded at most, each of one row at
 * least, for one Buffer each. The size is estimated from the texts' lengths
 * in UTF-16 units (their UTF-8 length for ASCII, up to three times that
 * otherwise), so that batching costs no encoding.
 *
 * @internal
 */
export const copyBatches = (
  rows: ReadonlyArray<ChunkRow>,
  maxBytes = copyBatchBytes
): Array<ReadonlyArray<ChunkRow>> => {
  const out: Array<ReadonlyArray<ChunkRow>> = []
  let start = 0
  let bytes = 0
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i]!
    // the fixed fields, the id and a short heading path take about 100 bytes
    const estimate = 100 + row.text.length + 4 * row.embedding.length
    if (i > start && bytes + estimate > maxBytes) {
      out.push(rows.slice(start, i))
      start = i
      bytes = 0
    }
    bytes += estimate
  }
  if (start < rows.length) out.push(rows.slice(start))
  return out
}

/**
 * One COPY's use of a {@link CopyArena}: `allocate` hands out its buffers in
 * turn; `done` once the server has confirmed the COPY (it has read every
 * byte, so they may be overwritten); `discard` when the COPY failed or was
 * abandoned (its bytes may still sit in a socket's queue: the buffers are
 * dropped, never reused).
 *
 * @internal
 */
export interface CopyLease {
  readonly allocate: (size: number) => Buffer
  readonly done: () => void
  readonly discard: () => void
}

/**
 * Buffers for encoding COPY data, reused from one COPY to the next: encoding
 * a write group into fresh buffers made megabytes of garbage per group,
 * outside the JavaScript heap, that only a full collection returns. One
 * COPY holds the arena at a time; another one meanwhile gets no lease and
 * allocates. At most `retainBytes` are kept in all: a buffer beyond that is
 * used once.
 *
 * @internal
 */
export class CopyArena {
  private buffers: Array<Buffer> = []
  private leased = false
  constructor(
    private readonly minBytes = copyBufferBytes,
    private readonly retainBytes = 16 * 1024 * 1024
  ) {}

  /** The arena for one COPY, or undefined while another COPY holds it. */
  lease(): CopyLease | undefined {
    if (this.leased) return undefined
    this.leased = true
    let next = 0
    let settled = false
    const settle = (keep: boolean) => {
      if (settled) return
      settled = true
      if (!keep) this.buffers = []
      this.leased = false
    }
    return {
      allocate: (size) => {
        const index = next++
        const held = this.buffers[index]
        if (held !== undefined && held.length >= size) return held.subarray(0, size)
        const fresh = Buffer.allocUnsafeSlow(Math.max(size, this.minBytes))
        if (this.retained - (held?.length ?? 0) + fresh.length <= this.retainBytes) this.buffers[index] = fresh
        return fresh.subarray(0, size)
      },
      done: () => settle(true),
      discard: () => settle(false)
    }
  }

  /** Bytes held for reuse. */
  get retained(): number {
    return this.buffers.reduce((n, b) => n + b.length, 0)
  }
}

/**
 * A complete binary COPY stream of the rows (header, rows, trailer).
 *
 * @internal
 */
export const encodeChunkCopy = (rows: ReadonlyArray<ChunkRow>): Buffer =>
  Buffer.concat([copyHeader, encodeChunkRows(rows), copyTrailer])

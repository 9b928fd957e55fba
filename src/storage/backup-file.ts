// The backup file (`rbkv snapshot save`, the Snapshot RPC): a consistent image of one member's
// state machine, wrapped so that the file says what it is and proves it is whole.
//
// Why a wrapper around the FSM image (fsm-snapshot.ts) rather than the image alone: the image
// knows its applied index and checks each record, but a file on an operator's disk must also say
// which cluster it came from, when, and in which formats, and be refused as a whole (truncated,
// damaged, foreign) before a restore writes a single byte. The image is reused verbatim, so the
// restore path checks every record exactly as InstallSnapshot does.
//
// Layout (integers little-endian; u64 = two u32, low word first):
//   header   [magic "RBKVBKUP"][u32 backup format version = 1][u32 FSM image format version]
//            [u64 version = the image's applied index][u64 created at, ms since the epoch]
//            [u16 C][cluster id, C bytes utf-8][u16 N][node id of the member that served it, N bytes]
//            [u32 CRC-32 of the header's bytes before it]
//   image    the FSM image of fsm-snapshot.ts: its own header (magic "RBKVSNAP", format, applied
//            index), records [u8 table][u32 keyLen][u32 valueLen][key][value] whose values end with
//            the stored CRC-32 of key ‖ value, and its trailer (record count, sha256 of the image)
//   trailer  [magic "RBKVBEND"][u64 image record count][u64 image byte count]
//            [sha256 of every byte of the file before these 32]
// The trailer has a fixed size, so a reader of a stream of unknown length holds back the last
// BACKUP_TRAILER_BYTES bytes and hands everything between header and trailer to the image parser,
// which knows where the image ends. The SnapshotChunk messages of the Snapshot RPC, concatenated in
// order, are exactly this file.

import { createHash } from "node:crypto";
import { type ImageSummary, SNAP_VERSION, readImage } from "./fsm-snapshot.ts";
import { type SnapshotImage } from "./fsm.ts";
import { getU64LE, putU64LE } from "./fsm-format.ts";

export const BACKUP_FORMAT_VERSION = 1;
const HEADER_MAGIC = Buffer.from("RBKVBKUP");
const TRAILER_MAGIC = Buffer.from("RBKVBEND");
const HEADER_FIXED = 8 + 4 + 4 + 8 + 8; // up to the cluster id's length
const SHA256_BYTES = 32;
export const BACKUP_TRAILER_BYTES = 8 + 8 + 8 + SHA256_BYTES;
/** Longest cluster or node id a header may carry (ids are short; this bounds a damaged length). */
const MAX_ID_BYTES = 4096;

/** A backup file (or stream) that is not a whole, intact rbkv backup; the message says where and why. */
export class BackupFileError extends Error {
  constructor(
    readonly source: string,
    /** Byte offset in the file where the problem was found (null: the file as a whole). */
    readonly offset: number | null,
    readonly detail: string,
  ) {
    super(`${source}: ${offset === null ? "" : `at byte ${offset}: `}${detail}`);
    this.name = "BackupFileError";
  }
}

export interface BackupHeader {
  formatVersion: number;
  imageFormat: number;
  clusterId: string;
  /** The store's version the image is at (its applied index). */
  version: number;
  createdAtMs: number;
  /** The member that served the image (its applied state, which may lag the leader's). */
  nodeId: string;
}

export interface BackupSummary {
  header: BackupHeader;
  image: ImageSummary;
  /** Bytes of the whole file. */
  fileBytes: number;
}

/** Consumes the image part of a backup (verify only, or restore into a store) and says what it held. */
export type ImageConsumer = (image: AsyncIterable<Uint8Array>, imageOffset: number) => Promise<ImageSummary>;

export function encodeBackupHeader(h: { clusterId: string; version: number; createdAtMs: number; nodeId: string }): Buffer {
  const cluster = Buffer.from(h.clusterId, "utf8");
  const node = Buffer.from(h.nodeId, "utf8");
  if (cluster.length > MAX_ID_BYTES || node.length > MAX_ID_BYTES) throw new BackupFileError("backup header", null, "cluster or node id too long");
  const out = Buffer.alloc(HEADER_FIXED + 2 + cluster.length + 2 + node.length + 4);
  HEADER_MAGIC.copy(out, 0);
  out.writeUInt32LE(BACKUP_FORMAT_VERSION, 8);
  out.writeUInt32LE(SNAP_VERSION, 12);
  putU64LE(out, 16, h.version);
  putU64LE(out, 24, Math.floor(h.createdAtMs));
  let at = HEADER_FIXED;
  out.writeUInt16LE(cluster.length, at);
  cluster.copy(out, at + 2);
  at += 2 + cluster.length;
  out.writeUInt16LE(node.length, at);
  node.copy(out, at + 2);
  at += 2 + node.length;
  out.writeUInt32LE(Bun.hash.crc32(out.subarray(0, at)), at);
  return out;
}

/**
 * The backup file's bytes for `image`: the header, the image's chunks as they are produced (never
 * more than one in hand), the trailer. Abandoning the generator (return()) abandons the image,
 * which releases its read transaction.
 */
export async function* backupChunks(meta: { clusterId: string; nodeId: string; createdAtMs: number }, image: SnapshotImage): AsyncGenerator<Uint8Array> {
  const hash = createHash("sha256");
  const header = encodeBackupHeader({ ...meta, version: image.appliedIndex });
  hash.update(header);
  yield header;
  let imageBytes = 0;
  for await (const chunk of image.chunks) {
    hash.update(chunk);
    imageBytes += chunk.byteLength;
    yield chunk;
  }
  const totals = image.totals();
  if (totals === null || totals.bytes !== imageBytes) {
    throw new BackupFileError("backup stream", null, `the image ended without its totals (${imageBytes} bytes streamed)`);
  }
  const trailer = Buffer.alloc(BACKUP_TRAILER_BYTES);
  TRAILER_MAGIC.copy(trailer, 0);
  putU64LE(trailer, 8, totals.records);
  putU64LE(trailer, 16, imageBytes);
  hash.update(trailer.subarray(0, BACKUP_TRAILER_BYTES - SHA256_BYTES));
  hash.digest().copy(trailer, BACKUP_TRAILER_BYTES - SHA256_BYTES);
  yield trailer;
}

/**
 * Splits a byte stream into its body (delivered in order, hashed) and its last `tailBytes` bytes
 * (held back until the stream ends), holding at most one source chunk plus the tail.
 */
class TailSplitter {
  private pending: Buffer = Buffer.alloc(0);
  private ended = false;
  /** Body bytes delivered so far. */
  delivered = 0;
  readonly hash = createHash("sha256");

  constructor(
    private readonly source: AsyncIterator<Uint8Array>,
    private readonly tailBytes: number,
  ) {}

  /** Pulls until more than the tail is pending or the source ended; false if no body byte is left. */
  private async pull(): Promise<boolean> {
    while (!this.ended && this.pending.length <= this.tailBytes) {
      const r = await this.source.next();
      if (r.done) {
        this.ended = true;
        break;
      }
      const chunk = Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
      this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    }
    return this.pending.length > this.tailBytes;
  }

  /** The first n bytes of the stream as it is known so far, tail included (to recognise a foreign file). */
  async peek(n: number): Promise<Buffer> {
    while (!this.ended && this.pending.length < n) {
      const r = await this.source.next();
      if (r.done) this.ended = true;
      else this.pending = Buffer.concat([this.pending, Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength)]);
    }
    return this.pending.subarray(0, Math.min(n, this.pending.length));
  }

  /** The next body bytes (at most max), or null once only the tail is left. */
  async next(max = Number.MAX_SAFE_INTEGER): Promise<Buffer | null> {
    if (!(await this.pull())) return null;
    const n = Math.min(max, this.pending.length - this.tailBytes);
    const out = this.pending.subarray(0, n);
    this.pending = this.pending.subarray(n);
    this.hash.update(out);
    this.delivered += n;
    return out;
  }

  /** Exactly n body bytes, or null if the body ends first. */
  async exact(n: number): Promise<Buffer | null> {
    const parts: Buffer[] = [];
    let have = 0;
    while (have < n) {
      const b = await this.next(n - have);
      if (b === null) return null;
      parts.push(b);
      have += b.length;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  }

  /** What is left once the body is consumed: the tail (shorter than tailBytes if the stream was). */
  async tail(): Promise<Buffer> {
    await this.pull();
    return this.pending;
  }

  async close(): Promise<void> {
    await this.source.return?.();
  }
}

async function readHeader(s: TailSplitter, name: string): Promise<BackupHeader> {
  const refuse = (offset: number | null, why: string) => new BackupFileError(name, offset, why);
  const magic = await s.peek(HEADER_MAGIC.length);
  if (magic.length === 0) throw refuse(null, "empty file, not an rbkv backup");
  if (!magic.equals(HEADER_MAGIC)) throw refuse(null, "not an rbkv backup file (it does not start with the rbkv backup magic)");
  const fixed = await s.exact(HEADER_FIXED + 2);
  if (fixed === null) throw refuse(null, "truncated: the file ends inside its header");
  const formatVersion = fixed.readUInt32LE(8);
  if (formatVersion !== BACKUP_FORMAT_VERSION) throw refuse(8, `unsupported backup format version ${formatVersion} (this rbkv reads version ${BACKUP_FORMAT_VERSION})`);
  const clusterLen = fixed.readUInt16LE(HEADER_FIXED);
  if (clusterLen > MAX_ID_BYTES) throw refuse(HEADER_FIXED, `damaged header: cluster id length ${clusterLen}`);
  const cluster = await s.exact(clusterLen + 2);
  if (cluster === null) throw refuse(null, "truncated: the file ends inside its header");
  const nodeLen = cluster.readUInt16LE(clusterLen);
  if (nodeLen > MAX_ID_BYTES) throw refuse(HEADER_FIXED + 2 + clusterLen, `damaged header: node id length ${nodeLen}`);
  const node = await s.exact(nodeLen + 4);
  if (node === null) throw refuse(null, "truncated: the file ends inside its header");
  const crc = node.readUInt32LE(nodeLen);
  const body = Buffer.concat([fixed, cluster, node.subarray(0, nodeLen)]);
  if (Bun.hash.crc32(body) !== crc) throw refuse(0, "damaged header: checksum mismatch");
  const imageFormat = fixed.readUInt32LE(12);
  if (imageFormat !== SNAP_VERSION) throw refuse(12, `unsupported state machine image format ${imageFormat} (this rbkv reads format ${SNAP_VERSION})`);
  const version = getU64LE(fixed, 16);
  const createdAtMs = getU64LE(fixed, 24);
  if (!Number.isSafeInteger(version) || !Number.isSafeInteger(createdAtMs)) throw refuse(16, "damaged header: version or creation time out of range");
  return {
    formatVersion,
    imageFormat,
    clusterId: cluster.subarray(0, clusterLen).toString("utf8"),
    version,
    createdAtMs,
    nodeId: node.subarray(0, nodeLen).toString("utf8"),
  };
}

/**
 * Reads a whole backup from `source` (a file's or a Snapshot stream's bytes): checks the header,
 * hands the image to `consume` (which parses and checks every record), then checks the trailer:
 * the record and byte counts and the sha256 over the whole file. Throws BackupFileError (or the
 * image parser's KvStoreError) naming `name` and the byte where the file went wrong. Memory: one
 * source chunk and the tail at a time, plus what `consume` keeps.
 */
export async function readBackup(source: AsyncIterable<Uint8Array>, name: string, consume: ImageConsumer): Promise<BackupSummary> {
  const s = new TailSplitter(source[Symbol.asyncIterator](), BACKUP_TRAILER_BYTES);
  let finished = false;
  try {
    const header = await readHeader(s, name);
    const imageOffset = s.delivered;
    const imageStart = imageOffset;
    const body: AsyncIterable<Uint8Array> = {
      [Symbol.asyncIterator]: () => ({
        next: async (): Promise<IteratorResult<Uint8Array>> => {
          const b = await s.next(1 << 20);
          return b === null ? { done: true, value: undefined } : { done: false, value: b };
        },
      }),
    };
    const image = await consume(body, imageOffset);
    // The image parser stops at the image's own end and refuses anything after it: what is left
    // now is the trailer and nothing else.
    const imageBytes = s.delivered - imageStart;
    const tail = await s.tail();
    const trailerAt = s.delivered;
    if (tail.length < BACKUP_TRAILER_BYTES) throw new BackupFileError(name, trailerAt, "truncated: the file ends inside its trailer");
    if (!tail.subarray(0, TRAILER_MAGIC.length).equals(TRAILER_MAGIC)) throw new BackupFileError(name, trailerAt, "damaged or truncated: no trailer after the image");
    s.hash.update(tail.subarray(0, BACKUP_TRAILER_BYTES - SHA256_BYTES));
    const digest = s.hash.digest();
    if (!digest.equals(tail.subarray(BACKUP_TRAILER_BYTES - SHA256_BYTES))) throw new BackupFileError(name, null, "damaged: the checksum of the whole file does not match its trailer");
    const records = getU64LE(tail, 8);
    const declaredBytes = getU64LE(tail, 16);
    if (records !== image.records) throw new BackupFileError(name, trailerAt + 8, `damaged: the trailer counts ${records} records, the image holds ${image.records}`);
    if (declaredBytes !== imageBytes) throw new BackupFileError(name, trailerAt + 16, `damaged: the trailer counts ${declaredBytes} image bytes, the file holds ${imageBytes}`);
    if (image.applied !== header.version) throw new BackupFileError(name, 16, `damaged: the header says version ${header.version}, the image is at ${image.applied}`);
    finished = true;
    return { header, image, fileBytes: trailerAt + BACKUP_TRAILER_BYTES };
  } finally {
    if (!finished) await s.close().catch(() => undefined);
  }
}

/** Reads and checks a whole backup, writing nothing anywhere. */
export function verifyBackup(source: AsyncIterable<Uint8Array>, name: string): Promise<BackupSummary> {
  return readBackup(source, name, (image, offset) => readImage(image[Symbol.asyncIterator](), name, null, offset));
}

// The snapshot image of the state machine (version 3): streamed from one read transaction,
// restored into a staging environment with every record checked. fsm.ts owns the orchestration
// (the staging file, the swap); this module owns the bytes.
//
// Image:
//   header   [magic "RBKVSNAP"][u32 version = 3][u64 applied]
//   records  [u8 tag][u32 keyLen][u32 valueLen][key][value]   tags ascending, keys ascending per tag
//   trailer  [u8 0xFE][u64 record count][sha256 of everything before the digest]
// Tags: 1 latest, 2 history, 3 meta (only "clock" and "compacted"), 4 changes, 5 sessions,
// 6 session-results, 7 proposals. Values are the stored records, checksum included: each is
// checked as it is read (a damaged record ends the stream with KvCorruptionError instead of
// spreading to a peer) and again, with its structure, by the restoring side (the sha256 over the
// stream proves only that the sender's bytes arrived, not that they were intact on its disk).
// Rebuilt on restore rather than sent: `expiry` (from latest), `session-expiry` (from sessions),
// meta "format" and "applied". The meta tag comes before `changes` so that the compacted version
// is known when the changes records are checked.
//
// Neither side ever holds the image: the sender reads SNAP_PAGE records per cursor call and
// yields chunks of about chunkBytes; the receiver writes batches of RESTORE_BATCH_* to the
// staging file as it goes.

import { createHash } from "node:crypto";
import { type Db, type DbName, type Env, type LmdbTxn, TXN_FLAGS, dbStats } from "./fsm-env.ts";
import {
  KvCorruptionError,
  KvStoreError,
  META_APPLIED,
  META_CLOCK,
  META_COMPACTED,
  META_FORMAT,
  appliedRecord,
  checkChange,
  checkProposal,
  checkRecord,
  checkSession,
  checkSessionResult,
  describeRecord,
  expiryKey,
  expiryValue,
  formatRecord,
  getU64BE,
  getU64LE,
  parseMeta64,
  parseSession,
  putU64LE,
  recExpireAt,
  recFullKey,
  recVersion,
  sessionExpiresAt,
  sessionExpiryKey,
  sessionExpiryValue,
  u8view,
} from "./fsm-format.ts";
import { CRC_BYTES, crcSeed, recordIntact } from "./record-checksum.ts";

const SNAP_MAGIC = Buffer.from("RBKVSNAP");
export const SNAP_VERSION = 3; // 3: create versions, changes, sessions, proposals (FSM format 3)
const SNAP_HEADER = 8 + 4 + 8;
const TAG_END = 0xfe;
const SNAP_PAGE = 512; // entries read per range call while streaming
const RESTORE_BATCH_BYTES = 8 << 20;
const RESTORE_BATCH_RECORDS = 20_000;
const MAX_SNAPSHOT_RECORD = 64 << 20;

/** The databases in the image, by tag (1-based position). */
const TAGGED: readonly DbName[] = ["latest", "history", "meta", "changes", "sessions", "session-results", "proposals"];
const STREAMED_META = [META_CLOCK, META_COMPACTED]; // in key order

function errMsg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The streamed meta records present in `txn`, checked. */
function metaRecords(file: string, db: Db, txn: LmdbTxn): { key: Uint8Array; value: Uint8Array }[] {
  const out: { key: Uint8Array; value: Uint8Array }[] = [];
  for (const key of STREAMED_META) {
    const value = db.get(key, { transaction: txn as never }) as Uint8Array | undefined;
    if (value === undefined) continue;
    if (!recordIntact(value, crcSeed(key))) throw new KvCorruptionError(file, describeRecord("meta", key), "checksum mismatch");
    out.push({ key, value });
  }
  return out;
}

/** How many records and bytes a streamed image held (known once its last chunk is produced). */
export interface ImageTotals {
  records: number;
  bytes: number;
}

/**
 * The image of `env` as seen by `txn` (whose applied index is `applied`), in chunks of about
 * `target` bytes. `release` runs once the stream ends, fails or is abandoned; `done` gets the
 * totals just before the last chunk is yielded.
 */
export async function* imageChunks(
  file: string,
  env: Env,
  txn: LmdbTxn,
  applied: number,
  target: number,
  release: () => void,
  done?: (totals: ImageTotals) => void,
): AsyncGenerator<Uint8Array> {
  const hash = createHash("sha256");
  let parts: Buffer[] = [];
  let size = 0;
  let total = 0;
  const push = (b: Buffer) => {
    hash.update(b);
    parts.push(b);
    size += b.length;
    total += b.length;
  };
  const emit = (): Buffer => {
    const out = Buffer.concat(parts, size);
    parts = [];
    size = 0;
    return out;
  };
  try {
    const header = Buffer.alloc(SNAP_HEADER);
    SNAP_MAGIC.copy(header, 0);
    header.writeUInt32LE(SNAP_VERSION, 8);
    putU64LE(header, 12, applied);
    push(header);
    let count = 0;
    const record = (tag: number, key: Uint8Array, value: Uint8Array) => {
      const h = Buffer.allocUnsafe(9);
      h[0] = tag;
      h.writeUInt32LE(key.length, 1);
      h.writeUInt32LE(value.length, 5);
      push(h);
      push(u8view(key));
      push(u8view(value));
      count++;
    };
    for (let t = 0; t < TAGGED.length; t++) {
      const name = TAGGED[t];
      if (name === "meta") {
        for (const { key, value } of metaRecords(file, env.meta, txn)) record(t + 1, key, value);
        continue;
      }
      // A page per cursor, and no yield while a cursor is open: a chunk boundary closes the
      // range, and the next one starts after the last key sent.
      let after: Buffer | undefined;
      for (;;) {
        let n = 0;
        let full = false;
        for (const { key, value } of env[name].getRange({ start: after, exclusiveStart: after !== undefined, limit: SNAP_PAGE, transaction: txn as never })) {
          if (!recordIntact(value, crcSeed(key))) throw new KvCorruptionError(file, describeRecord(name, key), "checksum mismatch");
          record(t + 1, key, value);
          n++;
          after = u8view(key);
          if (size >= target) {
            full = true;
            break;
          }
        }
        if (full) yield emit();
        else if (n < SNAP_PAGE) break;
      }
    }
    const trailer = Buffer.allocUnsafe(9);
    trailer[0] = TAG_END;
    putU64LE(trailer, 1, count);
    push(trailer);
    const digest = hash.digest();
    parts.push(digest);
    size += digest.length;
    total += digest.length;
    done?.({ records: count, bytes: total });
    yield emit();
  } catch (e) {
    if (e instanceof KvStoreError) throw e;
    throw new KvStoreError(`snapshot of ${file} failed: ${errMsg(e)}`, { cause: e });
  } finally {
    release();
  }
}

/** Reads the stream as a byte source, hashing everything consumed through take(). */
class StreamReader {
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;
  private pending: Buffer[] = []; // chunks received but not yet joined into buf
  private pendingBytes = 0;
  consumed = 0;
  readonly hash = createHash("sha256");
  private ended = false;
  constructor(private readonly it: AsyncIterator<Uint8Array>) {}
  available(): number {
    return this.buf.length - this.pos;
  }
  /** Makes at least n bytes available; false if the stream ended first. */
  async fill(n: number): Promise<boolean> {
    while (this.available() + this.pendingBytes < n) {
      if (this.ended) return false;
      const r = await this.it.next();
      if (r.done) {
        this.ended = true;
        return false;
      }
      const chunk = r.value;
      if (!(chunk instanceof Uint8Array)) throw new KvStoreError("snapshot stream yielded a non-binary chunk");
      this.pending.push(u8view(chunk));
      this.pendingBytes += chunk.length;
    }
    if (this.available() < n) {
      // Join once per need, not once per chunk, so a large record split into many small chunks is linear.
      this.buf = Buffer.concat([this.buf.subarray(this.pos), ...this.pending]);
      this.pos = 0;
      this.pending = [];
      this.pendingBytes = 0;
    }
    return true;
  }
  /** Takes n available bytes (call fill first); hashed unless raw. */
  take(n: number, raw = false): Buffer {
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    this.consumed += n;
    if (!raw) this.hash.update(out);
    return out;
  }
  async atEnd(): Promise<boolean> {
    return !(await this.fill(1));
  }
}

/** What is wrong with a streamed record, or null (the image's applied index and compacted version given). */
function problemOf(name: DbName, key: Buffer, value: Buffer, applied: number, compacted: number): string | null {
  switch (name) {
    case "latest":
    case "history":
      return checkRecord(name, key, value, applied);
    case "meta": {
      if (!STREAMED_META.some((m) => m.equals(key))) return "unexpected meta record";
      if (value.length !== 8 + CRC_BYTES || !recordIntact(value, crcSeed(key))) return "checksum mismatch";
      const n = getU64LE(value, 0);
      if (!Number.isSafeInteger(n) || (key.equals(META_COMPACTED) && n > applied)) return `meta value ${n} out of range`;
      return null;
    }
    case "changes":
      return checkChange(key, value, applied, compacted);
    case "sessions":
      return checkSession(key, value, applied);
    case "session-results":
      return checkSessionResult(key, value, applied);
    case "proposals":
      return checkProposal(key, value, applied);
    default:
      return "unexpected database";
  }
}

/** What a parsed image holds. */
export interface ImageSummary {
  /** The applied index (the store's version) the image is at. */
  applied: number;
  /** Records in the image (the trailer's count, checked). */
  records: number;
  /** Records per database (latest = the live keys). */
  perDb: Map<DbName, number>;
  /** Bytes of the image, header to digest. */
  bytes: number;
}

/** Receives each checked record of an image, in stream order. */
export type ImageSink = (name: DbName, key: Buffer, value: Buffer) => void;

/**
 * Parses and checks a whole image: the header, every record (its checksum and structure, as a
 * restore checks it), the order of tables and keys, the trailer's count and the sha256 over the
 * stream, and that nothing follows. Each record goes to `sink` as soon as it is checked (the sink
 * must therefore not make anything durable that the final checks could still refuse). `where`
 * starts every message ("restore into F", "backup file F"); `baseOffset` is where the image
 * starts in the enclosing stream, so that byte positions in messages are the file's.
 */
export async function readImage(it: AsyncIterator<Uint8Array>, where: string, sink: ImageSink | null, baseOffset = 0): Promise<ImageSummary> {
  const r = new StreamReader(it);
  const fail = (why: string) => new KvStoreError(`${where}: corrupt or truncated snapshot stream at byte ${baseOffset + r.consumed}: ${why}`);
  if (!(await r.fill(SNAP_HEADER))) throw fail("stream ended inside the header");
  const header = r.take(SNAP_HEADER);
  if (!header.subarray(0, 8).equals(SNAP_MAGIC)) throw fail("bad magic (not an rbkv FSM snapshot)");
  const version = header.readUInt32LE(8);
  if (version !== SNAP_VERSION) throw fail(`unsupported snapshot format version ${version} (this rbkv reads version ${SNAP_VERSION})`);
  const applied = getU64LE(header, 12);
  if (!Number.isSafeInteger(applied)) throw fail(`bad applied index`);

  const perDb = new Map<DbName, number>();
  let count = 0;
  let lastTag = 1;
  let prevKey: Buffer | null = null;
  let compacted = 0;
  for (;;) {
    if (!(r.available() >= 1 || (await r.fill(1)))) throw fail("stream ended before the trailer");
    const tag = r.take(1)[0];
    if (tag === TAG_END) break;
    if (tag < 1 || tag > TAGGED.length) throw fail(`unknown record tag ${tag}`);
    if (tag < lastTag) throw fail("tables out of order");
    if (tag !== lastTag) prevKey = null;
    lastTag = tag;
    const name = TAGGED[tag - 1];
    if (!(r.available() >= 8 || (await r.fill(8)))) throw fail("stream ended inside a record header");
    const lens = r.take(8);
    const klen = lens.readUInt32LE(0);
    const vlen = lens.readUInt32LE(4);
    if (klen === 0 || klen > 4096 || vlen > MAX_SNAPSHOT_RECORD) throw fail(`implausible record sizes (key ${klen}, value ${vlen})`);
    if (!(r.available() >= klen + vlen || (await r.fill(klen + vlen)))) throw fail("stream ended inside a record");
    // Copy: the reader's buffer is reused/concatenated; a sink's batches outlive it.
    const key = Buffer.from(r.take(klen));
    const value = Buffer.from(r.take(vlen));
    if (prevKey && Buffer.compare(prevKey, key) >= 0) throw fail("keys out of order");
    prevKey = key;
    const problem = problemOf(name, key, value, applied, compacted);
    if (problem) throw fail(`${problem} in ${describeRecord(name, key)}`);
    if (name === "meta" && key.equals(META_COMPACTED)) compacted = parseMeta64(where, META_COMPACTED, value);
    sink?.(name, key, value);
    perDb.set(name, (perDb.get(name) ?? 0) + 1);
    count++;
  }
  if (!(await r.fill(8))) throw fail("stream ended inside the trailer");
  const declared = getU64LE(r.take(8), 0);
  const digest = r.hash.digest();
  if (!(await r.fill(32))) throw fail("stream ended inside the checksum");
  const sent = r.take(32, true);
  if (!digest.equals(sent)) throw fail("checksum mismatch");
  if (declared !== count) throw fail(`record count mismatch: trailer says ${declared}, stream had ${count}`);
  if (!(await r.atEnd())) throw fail("trailing data after the trailer");
  return { applied, records: count, perDb, bytes: r.consumed };
}

/**
 * Parses and verifies the stream while writing it into the (empty) staging environment `env`;
 * returns what the image held. `where` names the target in messages; `baseOffset` is where the
 * image starts in the enclosing stream (byte positions in messages).
 */
export async function writeImage(it: AsyncIterator<Uint8Array>, env: Env, where: string, tmp: string, baseOffset = 0): Promise<ImageSummary> {
  type Rec = { name: DbName; key: Buffer; value: Buffer };
  let batch: Rec[] = [];
  let batchBytes = 0;
  const flush = () => {
    if (batch.length === 0) return;
    const recs = batch;
    batch = [];
    batchBytes = 0;
    env.root.transactionSync(() => {
      for (const rec of recs) {
        env[rec.name].putSync(rec.key, rec.value, { append: true });
        if (rec.name === "latest") {
          const exp = recExpireAt(rec.value);
          if (exp !== 0) {
            const ek = expiryKey(exp, rec.key);
            env.expiry.putSync(ek, expiryValue(ek, recVersion(rec.value), rec.key, recFullKey(rec.value) ?? rec.key));
          }
        } else if (rec.name === "sessions") {
          const ek = sessionExpiryKey(sessionExpiresAt(parseSession(rec.value)), getU64BE(rec.key, 0));
          env["session-expiry"].putSync(ek, sessionExpiryValue(ek));
        }
      }
    }, TXN_FLAGS);
  };
  // The staging file is not the store until fsm.ts swaps it in, which it does only once the
  // whole stream has been checked: writing batches before the trailer is checked is safe.
  const summary = await readImage(
    it,
    `restore into ${where}`,
    (name, key, value) => {
      batch.push({ name, key, value });
      batchBytes += key.length + value.length;
      if (batchBytes >= RESTORE_BATCH_BYTES || batch.length >= RESTORE_BATCH_RECORDS) flush();
    },
    baseOffset,
  );
  const { applied, perDb } = summary;
  flush();
  env.root.transactionSync(() => {
    env.meta.putSync(META_FORMAT, formatRecord());
    env.meta.putSync(META_APPLIED, appliedRecord(applied));
  }, TXN_FLAGS);
  for (const name of TAGGED) {
    const stored = dbStats(env[name]).entryCount - (name === "meta" ? 2 : 0);
    const sent = perDb.get(name) ?? 0;
    if (stored !== sent) throw new KvStoreError(`restore into ${where}: staging file ${tmp} holds ${stored} ${name} records, stream had ${sent}`);
  }
  return summary;
}

// The Raft log's records on disk (layout in the header of raft-log-store.ts): sealing them with
// their checksum, opening (checking) them, and checking a whole log file when it is opened.

import * as lmdbModule from "lmdb";
import { type Entry, type EntryType, type HardState } from "../raft/messages.ts";
import { LmdbFileError } from "./lmdb-file.ts";
import { LmdbFileWalker } from "./lmdb-walk.ts";
import { CRC_BYTES, crcSeed, recordIntact, sealRecord } from "./record-checksum.ts";

export class LogStoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "LogStoreError";
  }
}

export const LOG_FORMAT_VERSION = 2;
const FORMAT_NAME = "rbkv-log\x00";
export const META_KEYS = ["format", "hard", "snap", "compacted", "peers", "cluster", "joined", "removed", "node-id"] as const;
export type MetaKey = (typeof META_KEYS)[number];
const enc = new TextEncoder();
const SEEDS = Object.fromEntries(META_KEYS.map((k) => [k, crcSeed(enc.encode(k))])) as Record<MetaKey, number>;
const ENTRY_HEADER = 9;

// lmdb-js decodes its ordered-binary keys with this export, which its typings leave out.
const bufferToKeyValue = (lmdbModule as unknown as { bufferToKeyValue?: (key: Uint8Array) => unknown }).bufferToKeyValue;

// ── entries ───────────────────────────────────────────────────────────────────────────────────
const seedBytes = new Uint8Array(8);
const seedView = new DataView(seedBytes.buffer);

/** The checksum seed of the entry at `index`: the CRC of the index as a little-endian f64. */
export function entrySeed(index: number): number {
  seedView.setFloat64(0, index, true);
  return Bun.hash.crc32(seedBytes);
}

/** [type u8][term f64 LE][data][crc]: the value stored under the entry's index. */
export function encodeEntryValue(e: Entry): Uint8Array {
  const out = new Uint8Array(ENTRY_HEADER + e.data.byteLength + CRC_BYTES);
  out[0] = e.type;
  new DataView(out.buffer).setFloat64(1, e.term, true);
  out.set(e.data, ENTRY_HEADER);
  sealRecord(out, entrySeed(e.index));
  return out;
}

function checkEntry(file: string, index: number, v: Uint8Array): void {
  if (v.byteLength < ENTRY_HEADER + CRC_BYTES) throw new LogStoreError(`${file}: corrupted: log entry ${index} is ${v.byteLength} bytes, shorter than its header`);
  if (!recordIntact(v, entrySeed(index))) throw new LogStoreError(`${file}: corrupted: checksum mismatch in log entry ${index}`);
}

/** The entry stored as `v` under `index`, checked; LogStoreError naming the file if it is damaged. */
export function decodeEntry(file: string, index: number, v: Uint8Array): Entry {
  checkEntry(file, index, v);
  const term = new DataView(v.buffer, v.byteOffset, v.byteLength).getFloat64(1, true);
  return { index, term, type: v[0] as EntryType, data: v.slice(ENTRY_HEADER, v.byteLength - CRC_BYTES) };
}

/** The term of the entry stored as `v` under `index`, checked like decodeEntry. */
export function entryTerm(file: string, index: number, v: Uint8Array): number {
  checkEntry(file, index, v);
  return new DataView(v.buffer, v.byteOffset, v.byteLength).getFloat64(1, true);
}

// ── meta ──────────────────────────────────────────────────────────────────────────────────────
/** `body` followed by its checksum under meta key `key`. */
export function sealMeta(key: MetaKey, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(body.byteLength + CRC_BYTES);
  out.set(body);
  sealRecord(out, SEEDS[key]);
  return out;
}

/** The body of meta record `key`, checked; LogStoreError naming the file if it is damaged. */
export function openMeta(file: string, key: MetaKey, v: Uint8Array): Uint8Array {
  if (!recordIntact(v, SEEDS[key])) throw new LogStoreError(`${file}: corrupted: checksum mismatch in meta record "${key}"`);
  return v.subarray(0, v.byteLength - CRC_BYTES);
}

export function encodeHardState(hs: HardState): Uint8Array {
  const vote = enc.encode(hs.vote);
  const out = new Uint8Array(16 + vote.byteLength + CRC_BYTES);
  const dv = new DataView(out.buffer);
  dv.setFloat64(0, hs.term, true);
  dv.setFloat64(8, hs.commit, true);
  out.set(vote, 16);
  sealRecord(out, SEEDS.hard);
  return out;
}

export function formatRecord(): Uint8Array {
  const name = enc.encode(FORMAT_NAME);
  const body = new Uint8Array(name.byteLength + 1);
  body.set(name);
  body[name.byteLength] = LOG_FORMAT_VERSION;
  return sealMeta("format", body);
}

/**
 * Throws unless `v` (the "format" record, undefined if absent) is this format's marker. A log
 * without one that holds anything was written by format version 1 (before checksums).
 */
export function checkLogFormat(file: string, v: Uint8Array | undefined, holdsRecords: boolean): void {
  if (v === undefined) {
    if (!holdsRecords) return;
    throw new LogStoreError(`${file}: Raft log format version 1 (written by an older rbkv, without record checksums); this rbkv reads format version ${LOG_FORMAT_VERSION} only, refusing to open it`);
  }
  const name = enc.encode(FORMAT_NAME);
  const b = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (b.byteLength <= name.byteLength || !b.subarray(0, name.byteLength).equals(name)) {
    throw new LogStoreError(`${file}: unknown Raft log format marker ${JSON.stringify(b.toString("latin1"))}`);
  }
  const version = b[name.byteLength];
  if (version !== LOG_FORMAT_VERSION) {
    throw new LogStoreError(`${file}: Raft log format version ${version}${version > LOG_FORMAT_VERSION ? " (written by a newer rbkv)" : ""}; this rbkv reads format version ${LOG_FORMAT_VERSION} only, refusing to open it`);
  }
  if (b.byteLength !== name.byteLength + 1 + CRC_BYTES) throw new LogStoreError(`${file}: corrupted: malformed meta record "format"`);
  openMeta(file, "format", v);
}

// ── the whole file, at open ───────────────────────────────────────────────────────────────────
export interface LogVerification {
  entries: number;
  records: number;
  ms: number;
}

/**
 * Checks `file`, just opened by LMDB at transaction `txnId` and not yet iterated: every page
 * (lmdb-walk.ts: a cursor meeting a damaged page aborts the process), the format marker, every
 * meta record's and every entry's checksum, and that entry indexes are consecutive. The log is
 * bounded by compaction, so this is cheap. Throws LogStoreError naming the file.
 */
export function verifyLogFile(file: string, txnId: number): LogVerification {
  const t0 = performance.now();
  let walker: LmdbFileWalker;
  try {
    walker = LmdbFileWalker.open(file, txnId);
  } catch (e) {
    throw asLogError(file, e);
  }
  try {
    walker.checkFreeList();
    const { dbs, plain } = walker.databases();
    const foreign = [...dbs.keys()].filter((n) => n !== "entries" && n !== "meta");
    if (plain > 0 || foreign.length > 0) throw new LogStoreError(`${file} is an LMDB file but not an rbkv Raft log (databases: ${[...dbs.keys()].join(", ")}); refusing to use it`);
    const meta = new Map<string, Uint8Array>();
    const metaDb = dbs.get("meta");
    if (metaDb) walker.walk("meta", metaDb, (k, v) => void meta.set(new TextDecoder().decode(k), Uint8Array.from(v)));
    const entriesDb = dbs.get("entries");
    checkLogFormat(file, meta.get("format"), meta.size > 0 || (entriesDb?.entries ?? 0) > 0);
    for (const [key, v] of meta) {
      if (!(META_KEYS as readonly string[]).includes(key)) throw new LogStoreError(`${file}: corrupted: unknown meta record ${JSON.stringify(key)}`);
      openMeta(file, key as MetaKey, v);
    }
    let entries = 0;
    let prev = -1;
    if (entriesDb) {
      if (!bufferToKeyValue) throw new LogStoreError(`${file}: cannot decode entry indexes (lmdb-js lacks bufferToKeyValue)`);
      walker.walk("entries", entriesDb, (k, v) => {
        const index = bufferToKeyValue(k);
        if (typeof index !== "number" || !Number.isSafeInteger(index) || index < 1) throw new LogStoreError(`${file}: corrupted: a log entry is stored under a key that is not an index (${Buffer.from(k).toString("hex")})`);
        if (prev !== -1 && index !== prev + 1) throw new LogStoreError(`${file}: corrupted: log entry ${prev + 1} is missing (next stored is ${index})`);
        prev = index;
        checkEntry(file, index, v);
        entries++;
      });
    }
    return { entries, records: entries + meta.size, ms: performance.now() - t0 };
  } catch (e) {
    throw asLogError(file, e);
  } finally {
    walker.close();
  }
}

function asLogError(file: string, e: unknown): LogStoreError {
  if (e instanceof LogStoreError) return e;
  if (e instanceof LmdbFileError) return new LogStoreError(e.message, { cause: e });
  return new LogStoreError(`${file}: verification failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
}

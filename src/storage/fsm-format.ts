// The binary layout of the FSM's records (documented in the header of fsm.ts), their checksums and
// the checks that a stored or streamed record is well-formed. Shared by the store (fsm.ts) and the
// verification of the whole file at open (fsm-verify.ts).

import { createHash } from "node:crypto";
import { decodeApplyResult } from "./apply-result.ts";
import { CRC_BYTES, crcSeed, recordIntact, sealRecord } from "./record-checksum.ts";

export class KvStoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "KvStoreError";
  }
}

/**
 * A stored record failed its checksum or structure check: the file is damaged. Thrown instead of
 * returning the record (never serve wrong bytes); the API maps it to DATA_LOSS.
 */
export class KvCorruptionError extends KvStoreError {
  constructor(
    readonly file: string,
    /** Which record, e.g. `latest record for key "a"`. */
    readonly record: string,
    readonly detail: string,
  ) {
    super(`${file}: corrupted: ${detail} in ${record}`);
    this.name = "KvCorruptionError";
  }
}

/** A read at a version (or changes after one) below the compacted version: that history is gone. */
export class VersionCompactedError extends KvStoreError {
  constructor(
    readonly requested: number,
    /** The oldest version still readable (KvStore.compactedVersion). */
    readonly compacted: number,
  ) {
    super(`version ${requested} is compacted: the oldest version kept is ${compacted}`);
    this.name = "VersionCompactedError";
  }
}

/** A read at a version above the applied index: this replica has not got there (yet). */
export class VersionFutureError extends KvStoreError {
  constructor(
    readonly requested: number,
    readonly applied: number,
  ) {
    super(`version ${requested} is in the future: this node has applied up to version ${applied}`);
    this.name = "VersionFutureError";
  }
}

// ── constants ─────────────────────────────────────────────────────────────────────────────────
export const INLINE_KEY_MAX = 480;
const HASH_LEN = 32;
export const HASHED_KEY_LEN = INLINE_KEY_MAX + HASH_LEN;
export const REC_HEADER = 29;
const FLAG_FULL_KEY = 1;
export const KIND_PUT = 0;
export const KIND_TOMB = 1;
export const FORMAT_VERSION = 3;
const FORMAT_NAME = Buffer.from("rbkv-fsm\x00");
export const META_FORMAT = Buffer.from("format");
export const META_APPLIED = Buffer.from("applied");
export const META_COMPACTED = Buffer.from("compacted");
export const META_CLOCK = Buffer.from("clock");
const META_FORMAT_SEED = crcSeed(META_FORMAT);
const META_APPLIED_SEED = crcSeed(META_APPLIED);
/** What each older format version lacks, for the refusal message. */
const OLDER_FORMATS: Record<number, string> = {
  1: "without record checksums",
  2: "without create versions, the changes index, sessions and proposal dedupe",
};

// ── small binary helpers ──────────────────────────────────────────────────────────────────────
// Byte arithmetic rather than DataView: in Bun, touching `.buffer` of a typed array materialises an
// ArrayBuffer, which showed up as the top cost of apply in a profile.
export function u8view(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}
export function getU32LE(b: Uint8Array, off: number): number {
  return (b[off] | (b[off + 1] << 8) | (b[off + 2] << 16) | (b[off + 3] << 24)) >>> 0;
}
function putU32LE(b: Uint8Array, off: number, v: number): void {
  b[off] = v & 0xff;
  b[off + 1] = (v >>> 8) & 0xff;
  b[off + 2] = (v >>> 16) & 0xff;
  b[off + 3] = (v >>> 24) & 0xff;
}
function getU32BE(b: Uint8Array, off: number): number {
  return ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
}
function putU32BE(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >>> 24) & 0xff;
  b[off + 1] = (v >>> 16) & 0xff;
  b[off + 2] = (v >>> 8) & 0xff;
  b[off + 3] = v & 0xff;
}
export function getU64LE(b: Uint8Array, off: number): number {
  return getU32LE(b, off) + getU32LE(b, off + 4) * 0x1_0000_0000;
}
export function putU64LE(b: Uint8Array, off: number, v: number): void {
  putU32LE(b, off, v >>> 0);
  putU32LE(b, off + 4, Math.floor(v / 0x1_0000_0000));
}
export function putU64BE(b: Uint8Array, off: number, v: number): void {
  putU32BE(b, off, Math.floor(v / 0x1_0000_0000));
  putU32BE(b, off + 4, v >>> 0);
}
export function getU64BE(b: Uint8Array, off: number): number {
  return getU32BE(b, off) * 0x1_0000_0000 + getU32BE(b, off + 4);
}

// ── keys ──────────────────────────────────────────────────────────────────────────────────────
/** The LMDB key of a user key (see the header of fsm.ts). */
export function storageKey(key: Uint8Array): Uint8Array {
  if (key.length <= INLINE_KEY_MAX) return key;
  const out = Buffer.allocUnsafe(HASHED_KEY_LEN);
  out.set(key.subarray(0, INLINE_KEY_MAX), 0);
  out.set(createHash("sha256").update(key).digest(), INLINE_KEY_MAX);
  return out;
}
export const isHashed = (skey: Uint8Array): boolean => skey.length > INLINE_KEY_MAX;

/** Order-preserving, prefix-free escaping: 00 → 00 FF, terminated by 00 00. `extra` bytes reserved at the end. */
export function escapeKey(skey: Uint8Array, extra: number): Buffer {
  let zeros = 0;
  for (let i = 0; i < skey.length; i++) if (skey[i] === 0) zeros++;
  const out = Buffer.allocUnsafe(skey.length + zeros + 2 + extra);
  let p = 0;
  for (let i = 0; i < skey.length; i++) {
    const c = skey[i];
    out[p++] = c;
    if (c === 0) out[p++] = 0xff;
  }
  out[p++] = 0;
  out[p++] = 0;
  return out;
}
export function historyKey(skey: Uint8Array, version: number, kind: number): Buffer {
  const out = escapeKey(skey, 9);
  const p = out.length - 9;
  putU64BE(out, p, version);
  out[p + 8] = kind;
  return out;
}
/** Parses a history key: the storage key, version and kind, or null if malformed. */
export function parseHistoryKey(hk: Uint8Array): { skey: Buffer; version: number; kind: number } | null {
  const bytes: number[] = [];
  let i = 0;
  for (;;) {
    if (i + 1 >= hk.length) return null;
    const c = hk[i];
    if (c !== 0) {
      bytes.push(c);
      i++;
    } else if (hk[i + 1] === 0xff) {
      bytes.push(0);
      i += 2;
    } else if (hk[i + 1] === 0) {
      i += 2;
      break;
    } else return null;
  }
  if (hk.length - i !== 9) return null;
  return { skey: Buffer.from(bytes), version: getU64BE(hk, i), kind: hk[i + 8] };
}
export function expiryKey(expireAt: number, skey: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(8 + skey.length);
  putU64BE(out, 0, expireAt);
  out.set(skey, 8);
  return out;
}
/** The expiry index's value under `ek`: [le64 version][full key if the storage key is hashed][crc]. */
export function expiryValue(ek: Uint8Array, version: number, skey: Uint8Array, key: Uint8Array): Buffer {
  const full = isHashed(skey);
  const out = Buffer.allocUnsafe(8 + (full ? key.length : 0) + CRC_BYTES);
  putU64LE(out, 0, version);
  if (full) out.set(key, 8);
  sealRecord(out, crcSeed(ek));
  return out;
}
/** The version and full key of an expiry value (checked with checkExpiry or recordIntact first). */
export function parseExpiryValue(ek: Uint8Array, v: Uint8Array): { key: Uint8Array; version: number } {
  const skey = ek.subarray(8);
  return { key: isHashed(skey) ? v.subarray(8, v.length - CRC_BYTES) : skey, version: getU64LE(v, 0) };
}

// ── records of `latest` and `history` ─────────────────────────────────────────────────────────
/** A sealed record for the LMDB key whose CRC seed is `seed` (crcSeed of skey or of the history key). */
export function encodeRecord(
  seed: number,
  skey: Uint8Array,
  key: Uint8Array,
  value: Uint8Array,
  meta: number,
  version: number,
  expireAt: number,
  createVersion: number,
): Buffer {
  const full = isHashed(skey);
  const out = Buffer.allocUnsafe(REC_HEADER + (full ? 4 + key.length : 0) + value.length + CRC_BYTES);
  out[0] = full ? FLAG_FULL_KEY : 0;
  putU32LE(out, 1, meta >>> 0);
  putU64LE(out, 5, version);
  putU64LE(out, 13, expireAt);
  putU64LE(out, 21, createVersion);
  let p = REC_HEADER;
  if (full) {
    putU32LE(out, p, key.length);
    out.set(key, p + 4);
    p += 4 + key.length;
  }
  out.set(value, p);
  sealRecord(out, seed);
  return out;
}
export const recVersion = (r: Uint8Array): number => getU64LE(r, 5);
export const recExpireAt = (r: Uint8Array): number => getU64LE(r, 13);
export const recCreate = (r: Uint8Array): number => getU64LE(r, 21);
export function recMeta(r: Uint8Array): number {
  return getU32LE(r, 1);
}
/** Offset of the value (after the optional full key), or -1 if the record is malformed. */
export function recValueOffset(r: Uint8Array): number {
  if (r.length < REC_HEADER + CRC_BYTES) return -1;
  if (r[0] === 0) return REC_HEADER;
  if (r[0] !== FLAG_FULL_KEY || r.length < REC_HEADER + 4 + CRC_BYTES) return -1;
  const n = getU32LE(r, REC_HEADER);
  return REC_HEADER + 4 + n <= r.length - CRC_BYTES ? REC_HEADER + 4 + n : -1;
}
/** The value bytes of a record whose value starts at `off` (the checksum follows them). */
export function recValue(r: Uint8Array, off: number): Uint8Array {
  return r.subarray(off, r.length - CRC_BYTES);
}
export function recFullKey(r: Uint8Array): Uint8Array | null {
  if (r[0] !== FLAG_FULL_KEY) return null;
  const n = getU32LE(r, REC_HEADER);
  return r.subarray(REC_HEADER + 4, REC_HEADER + 4 + n);
}

/**
 * Copies `rec` (intact under its old key) into `into` sealed for the key whose seed is given: a
 * record moving from `latest` to `history` keeps its bytes but not its checksum, which covers the key.
 */
export function resealInto(rec: Uint8Array, into: Buffer, seed: number): Buffer {
  const out = into.length === rec.length ? into : into.subarray(0, rec.length);
  out.set(rec);
  sealRecord(out, seed);
  return out;
}

// ── meta ──────────────────────────────────────────────────────────────────────────────────────
/** The "format" meta value: "rbkv-fsm\0", the format version (u8), crc. */
export function formatRecord(): Buffer {
  const out = Buffer.alloc(FORMAT_NAME.length + 1 + CRC_BYTES);
  FORMAT_NAME.copy(out, 0);
  out[FORMAT_NAME.length] = FORMAT_VERSION;
  sealRecord(out, META_FORMAT_SEED);
  return out;
}
/** The "applied" meta value: le64(index), crc. */
export function appliedRecord(index: number): Buffer {
  const out = Buffer.allocUnsafe(8 + CRC_BYTES);
  putU64LE(out, 0, index);
  sealRecord(out, META_APPLIED_SEED);
  return out;
}

/** Throws KvStoreError unless `marker` is the current format's marker (an older version is named as such). */
export function checkFormatMarker(file: string, marker: Uint8Array | undefined): void {
  const m = marker ? u8view(marker) : undefined;
  if (m && m.length > FORMAT_NAME.length && m.subarray(0, FORMAT_NAME.length).equals(FORMAT_NAME)) {
    const version = m[FORMAT_NAME.length];
    if (version !== FORMAT_VERSION) {
      const why = version < FORMAT_VERSION ? ` (written by an older rbkv, ${OLDER_FORMATS[version] ?? "in an older layout"})` : " (written by a newer rbkv)";
      throw new KvStoreError(`${file}: FSM format version ${version}${why}; this rbkv reads format version ${FORMAT_VERSION} only, refusing to open it`);
    }
    if (m.length !== FORMAT_NAME.length + 1 + CRC_BYTES || !recordIntact(m, META_FORMAT_SEED)) {
      throw new KvCorruptionError(file, 'meta record "format"', "checksum mismatch");
    }
    return;
  }
  throw new KvStoreError(
    `${file}: unknown FSM format marker ${m ? JSON.stringify(m.toString("latin1")) : "(none)"}; expected ${JSON.stringify(formatRecord().subarray(0, FORMAT_NAME.length + 1).toString("latin1"))}`,
  );
}

/** The applied index stored in the "applied" meta value; KvCorruptionError if it is damaged. */
export function parseApplied(file: string, v: Uint8Array | undefined): number {
  if (!v || v.length !== 8 + CRC_BYTES) throw new KvStoreError(`${file}: applied index is missing or malformed`);
  if (!recordIntact(v, META_APPLIED_SEED)) throw new KvCorruptionError(file, 'meta record "applied"', "checksum mismatch");
  return getU64LE(v, 0);
}

// ── checks ────────────────────────────────────────────────────────────────────────────────────
/** A key for an error message: quoted text if it prints, else hex; long keys are cut. */
export function printableKey(key: Uint8Array): string {
  const b = u8view(key);
  const cut = b.length > 64;
  const head = b.subarray(0, 64);
  let printable = true;
  for (const c of head) if (c < 0x20 || c > 0x7e) printable = false;
  const shown = printable ? JSON.stringify(head.toString("latin1")) : `0x${head.toString("hex")}`;
  return cut ? `${shown}… (${b.length} bytes)` : shown;
}

/** Where a record lives, for messages: `latest record for key "a"`, `history record for key "a" at version 7`. */
export function describeRecord(db: string, key: Uint8Array): string {
  if (db === "history") {
    const hk = parseHistoryKey(key);
    if (hk) return `history record for key ${printableKey(hk.skey)} at version ${hk.version}`;
  }
  if (db === "expiry" && key.length > 8) return `expiry record for key ${printableKey(key.subarray(8))} at ${getU64BE(key, 0)}`;
  if (db === "meta") return `meta record ${printableKey(key)}`;
  if (db === "changes" && key.length > 8) return `changes record for key ${printableKey(key.subarray(8))} at version ${getU64BE(key, 0)}`;
  if (db === "sessions" && key.length === 8) return `sessions record for session ${getU64BE(key, 0)}`;
  if (db === "session-results" && key.length === 16) return `session-results record for session ${getU64BE(key, 0)} seq ${getU64BE(key, 8)}`;
  if (db === "session-expiry" && key.length === 16) return `session-expiry record for session ${getU64BE(key, 8)} at ${getU64BE(key, 0)}`;
  if (db === "proposals") return `proposals record for origin ${u8view(key).toString("hex")}`;
  return `${db} record for key ${printableKey(key)}`;
}

function checkStorageKey(skey: Uint8Array, full: Uint8Array | null): string | null {
  if (skey.length === 0 || skey.length > HASHED_KEY_LEN || (isHashed(skey) && skey.length !== HASHED_KEY_LEN)) return "bad key length";
  if (isHashed(skey) !== (full !== null)) return "record key does not match its storage key";
  if (full && !u8view(storageKey(full)).equals(u8view(skey))) return "record key does not match its storage key";
  return null;
}

/**
 * What is wrong with a `latest` or `history` record stored under `key`, or null if it is intact
 * and well-formed with a version in 1..applied.
 */
export function checkRecord(db: "latest" | "history", key: Uint8Array, value: Uint8Array, applied: number): string | null {
  if (!recordIntact(value, crcSeed(key))) return "checksum mismatch";
  if (recValueOffset(value) < 0) return "malformed record";
  const ver = recVersion(value);
  if (!Number.isSafeInteger(ver) || ver < 1 || ver > applied) return `record version ${ver} outside 1..${applied}`;
  if (!Number.isSafeInteger(recExpireAt(value))) return "bad expireAt";
  let skey: Uint8Array = key;
  let tomb = false;
  if (db === "history") {
    const hk = parseHistoryKey(key);
    if (!hk || (hk.kind !== KIND_PUT && hk.kind !== KIND_TOMB) || hk.version !== ver) return "malformed history key";
    skey = hk.skey;
    tomb = hk.kind === KIND_TOMB;
  }
  const create = recCreate(value);
  if (tomb ? create !== 0 : !Number.isSafeInteger(create) || create < 1 || create > ver) return `bad create version ${create} (version ${ver})`;
  return checkStorageKey(skey, recFullKey(value));
}

/** What is wrong with an expiry index record, or null. */
export function checkExpiry(key: Uint8Array, value: Uint8Array, applied: number): string | null {
  if (!recordIntact(value, crcSeed(key))) return "checksum mismatch";
  if (key.length < 9 || value.length < 8 + CRC_BYTES) return "malformed expiry record";
  const skey = key.subarray(8);
  const full = isHashed(skey) ? value.subarray(8, value.length - CRC_BYTES) : null;
  if (!isHashed(skey) && value.length !== 8 + CRC_BYTES) return "malformed expiry record";
  const ver = getU64LE(value, 0);
  if (!Number.isSafeInteger(ver) || ver < 1 || ver > applied) return `expiry version ${ver} outside 1..${applied}`;
  return checkStorageKey(skey, full);
}

// ── the changes index ─────────────────────────────────────────────────────────────────────────
export const CHANGE_PUT = 0;
export const CHANGE_DELETE = 1;
/** be64(version) ‖ skey: events in (version, storage key) order. */
export function changeKey(version: number, skey: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(8 + skey.length);
  putU64BE(out, 0, version);
  out.set(skey, 8);
  return out;
}
/** [u8 kind][crc]: the event's data is the record of (skey, version) in latest/history. */
export function changeValue(ck: Uint8Array, kind: number): Buffer {
  const out = Buffer.allocUnsafe(1 + CRC_BYTES);
  out[0] = kind;
  sealRecord(out, crcSeed(ck));
  return out;
}
/** What is wrong with a changes record, or null. Versions at or below `compacted` are gone. */
export function checkChange(key: Uint8Array, value: Uint8Array, applied: number, compacted: number): string | null {
  if (!recordIntact(value, crcSeed(key))) return "checksum mismatch";
  if (key.length < 9 || value.length !== 1 + CRC_BYTES || (value[0] !== CHANGE_PUT && value[0] !== CHANGE_DELETE)) return "malformed changes record";
  const ver = getU64BE(key, 0);
  if (ver <= compacted || ver > applied) return `change version ${ver} outside ${compacted + 1}..${applied}`;
  const skey = key.subarray(8);
  if (skey.length > HASHED_KEY_LEN || (isHashed(skey) && skey.length !== HASHED_KEY_LEN)) return "bad key length";
  return null;
}

// ── f64 fields (sessions, proposals): the command codec's number encoding ────────────────────
const f64 = new Float64Array(1);
const f64Bytes = new Uint8Array(f64.buffer);
const littleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
function putF64(out: Uint8Array, p: number, v: number): void {
  f64[0] = v;
  for (let i = 0; i < 8; i++) out[p + i] = f64Bytes[littleEndian ? i : 7 - i];
}
function getF64(d: Uint8Array, p: number): number {
  for (let i = 0; i < 8; i++) f64Bytes[littleEndian ? i : 7 - i] = d[p + i];
  return f64[0];
}
const isCount = (n: number): boolean => Number.isSafeInteger(n) && n >= 0;

// ── sessions ──────────────────────────────────────────────────────────────────────────────────
export interface SessionState {
  ttlMs: number;
  /** The clock (meta "clock") when the session was opened or last used. */
  lastActiveMs: number;
  /** Highest seq applied under it (0: none). */
  highSeq: number;
}
export function sessionKey(id: number): Buffer {
  const out = Buffer.allocUnsafe(8);
  putU64BE(out, 0, id);
  return out;
}
/** [f64 ttlMs][f64 lastActiveMs][f64 highSeq][crc]. */
export function sessionValue(sk: Uint8Array, s: SessionState): Buffer {
  const out = Buffer.allocUnsafe(24 + CRC_BYTES);
  putF64(out, 0, s.ttlMs);
  putF64(out, 8, s.lastActiveMs);
  putF64(out, 16, s.highSeq);
  sealRecord(out, crcSeed(sk));
  return out;
}
/** The fields of a session record (checked first). */
export function parseSession(v: Uint8Array): SessionState {
  return { ttlMs: getF64(v, 0), lastActiveMs: getF64(v, 8), highSeq: getF64(v, 16) };
}
export function checkSession(key: Uint8Array, value: Uint8Array, applied: number): string | null {
  if (!recordIntact(value, crcSeed(key))) return "checksum mismatch";
  if (key.length !== 8 || value.length !== 24 + CRC_BYTES) return "malformed sessions record";
  const id = getU64BE(key, 0);
  if (id < 1 || id > applied) return `session id ${id} outside 1..${applied}`;
  const s = parseSession(value);
  if (!isCount(s.ttlMs) || !isCount(s.lastActiveMs) || !isCount(s.highSeq)) return "malformed sessions record";
  return null;
}
/** When a session expires: idle for its ttl (clamped to a safe integer). */
export function sessionExpiresAt(s: SessionState): number {
  return Math.min(Number.MAX_SAFE_INTEGER, s.lastActiveMs + s.ttlMs);
}
/** be64(id) ‖ be64(seq). */
export function sessionResultKey(id: number, seq: number): Buffer {
  const out = Buffer.allocUnsafe(16);
  putU64BE(out, 0, id);
  putU64BE(out, 8, seq);
  return out;
}
/** An encoded ApplyResult followed by its crc. */
export function sessionResultValue(rk: Uint8Array, encoded: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(encoded.length + CRC_BYTES);
  out.set(encoded, 0);
  sealRecord(out, crcSeed(rk));
  return out;
}
/** Checksum, structure, and that the stored result decodes. */
export function checkSessionResult(key: Uint8Array, value: Uint8Array, applied: number): string | null {
  if (!recordIntact(value, crcSeed(key))) return "checksum mismatch";
  if (key.length !== 16 || value.length < 1 + CRC_BYTES) return "malformed session-results record";
  const id = getU64BE(key, 0);
  if (id < 1 || id > applied) return `session id ${id} outside 1..${applied}`;
  try {
    decodeApplyResult(value.subarray(0, value.length - CRC_BYTES));
  } catch (e) {
    return `undecodable result (${e instanceof Error ? e.message : String(e)})`;
  }
  return null;
}
/** be64(expiresAtMs) ‖ be64(id): sessions by expiry time, oldest first. The value is just a crc. */
export function sessionExpiryKey(expiresAtMs: number, id: number): Buffer {
  const out = Buffer.allocUnsafe(16);
  putU64BE(out, 0, expiresAtMs);
  putU64BE(out, 8, id);
  return out;
}
export function sessionExpiryValue(ek: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(CRC_BYTES);
  sealRecord(out, crcSeed(ek));
  return out;
}
export function checkSessionExpiry(key: Uint8Array, value: Uint8Array, applied: number): string | null {
  if (!recordIntact(value, crcSeed(key))) return "checksum mismatch";
  if (key.length !== 16 || value.length !== CRC_BYTES) return "malformed session-expiry record";
  const id = getU64BE(key, 8);
  if (id < 1 || id > applied) return `session id ${id} outside 1..${applied}`;
  return null;
}

// ── proposal dedupe ───────────────────────────────────────────────────────────────────────────
export const ORIGIN_LEN = 8;
/** [f64 high][u32 mask][f64 lastIndex][crc] under the origin's 8 bytes. */
export function proposalValue(origin: Uint8Array, high: number, mask: number, lastIndex: number): Buffer {
  const out = Buffer.allocUnsafe(20 + CRC_BYTES);
  putF64(out, 0, high);
  putU32LE(out, 8, mask >>> 0);
  putF64(out, 12, lastIndex);
  sealRecord(out, crcSeed(origin));
  return out;
}
export function parseProposal(v: Uint8Array): { high: number; mask: number; lastIndex: number } {
  return { high: getF64(v, 0), mask: getU32LE(v, 8), lastIndex: getF64(v, 12) };
}
export function checkProposal(key: Uint8Array, value: Uint8Array, applied: number): string | null {
  if (!recordIntact(value, crcSeed(key))) return "checksum mismatch";
  if (key.length !== ORIGIN_LEN || value.length !== 20 + CRC_BYTES) return "malformed proposals record";
  const p = parseProposal(value);
  if (!isCount(p.high) || p.high < 1 || !isCount(p.lastIndex) || p.lastIndex > applied) return "malformed proposals record";
  return null;
}

// ── meta "compacted" and "clock": le64 ‖ crc like "applied" ───────────────────────────────────
export function meta64Record(key: Uint8Array, n: number): Buffer {
  const out = Buffer.allocUnsafe(8 + CRC_BYTES);
  putU64LE(out, 0, n);
  sealRecord(out, crcSeed(key));
  return out;
}
/** The number in a le64 meta record (0 when absent); KvCorruptionError if it is damaged. */
export function parseMeta64(file: string, key: Uint8Array, v: Uint8Array | undefined): number {
  if (v === undefined) return 0;
  if (v.length !== 8 + CRC_BYTES || !recordIntact(v, crcSeed(key))) throw new KvCorruptionError(file, describeRecord("meta", key), "checksum mismatch");
  const n = getU64LE(v, 0);
  if (!Number.isSafeInteger(n)) throw new KvCorruptionError(file, describeRecord("meta", key), "malformed meta record");
  return n;
}

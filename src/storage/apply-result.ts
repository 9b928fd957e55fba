// What applying a command produced, beyond its events: the answer the proposer's client gets.
// Kept in the state machine for commands under a session, so that a retry of an applied
// (session, seq) gets the same answer without applying again (exactly-once, SPEC §3b); hence
// the binary codec (encodeApplyResult / decodeApplyResult), deterministic and checked like
// every stored record.

import { ByteReader, putF64, putU32 } from "./byte-reader.ts";
import { type KvRecord } from "./fsm.ts";

export interface RangeResult {
  kvs: KvRecord[];
  /** More keys follow in the range after the last one returned (limit or byte budget). */
  more: boolean;
  /** Keys in the whole range at `version`. */
  count: number;
  /** The version of the store the range was read at. */
  version: number;
}

export type TxnOpResult =
  | { type: "put"; version: number }
  | { type: "delete"; deleted: number }
  | ({ type: "range" } & RangeResult);

/** Why a command was applied as a no-op; deterministic, so every replica agrees. */
export type ApplyErrorCode =
  /** The session is not in the table: never opened, closed, or expired (idle past its ttl). */
  | "session-unknown"
  /** seq is more than SESSION_WINDOW below the session's highest seq: its result is gone. */
  | "session-seq-too-old"
  /** The session table is full (MAX_SESSIONS). */
  | "session-limit"
  /** Compact to a version above the one being applied. */
  | "compact-future"
  /** Compact to a version at or below the compacted version. */
  | "compact-old"
  /** A txn writes one key twice (or puts a key inside one of its delete ranges). */
  | "txn-conflict";

export type ApplyResult =
  /** A Put or Delete under a session. */
  | { kind: "write"; version: number }
  | { kind: "txn"; succeeded: boolean; version: number; results: TxnOpResult[] }
  | { kind: "session-opened"; sessionId: number; ttlMs: number }
  | { kind: "session-closed"; sessionId: number }
  | { kind: "compacted"; compacted: number }
  | { kind: "error"; code: ApplyErrorCode; message: string };

// ── Binary codec ─────────────────────────────────────────────────────────────────────────────
// Layout (all integers little-endian; numbers that can exceed 2^32 as f64, as in command.ts):
//   [u8 format = 1][u8 tag] then, by tag:
//   write          (1): [f64 version]
//   txn            (2): [u8 succeeded][f64 version][u32 nResults]{result}
//   session-opened (3): [f64 sessionId][f64 ttlMs]
//   session-closed (4): [f64 sessionId]
//   compacted      (5): [f64 compacted]
//   error          (6): [u8 code][u32 messageLen][message, UTF-8]
//                       code 1 session-unknown / 2 session-seq-too-old / 3 session-limit /
//                       4 compact-future / 5 compact-old / 6 txn-conflict
//   result: [u8 type] then 1 put: [f64 version] / 2 delete: [f64 deleted] / 3 range: {range}
//   range:  [u8 more][f64 count][f64 version][u32 nKvs]{kv}
//   kv:     [u32 keyLen][key][u32 valueLen][value][u32 meta][f64 version][f64 createVersion]
//           [f64 expireAt]
// Deterministic (a pure function of the result: every replica stores the same bytes) and
// canonical: decoding is total (any malformed input throws ApplyResultDecodeError, nothing else;
// counts are bounded by the bytes left before anything is read; bool bytes are 0/1, enums in
// range, numbers non-negative safe integers, the message valid UTF-8 with no trailing bytes), so
// whatever decodes re-encodes to exactly its input. The leading format byte versions the layout
// for a future change. Integrity (a CRC) is the store's business, not this codec's.
// A message that is not well-formed UTF-16 (a lone surrogate) is encoded with U+FFFD in its place,
// as TextEncoder does; messages are the state machine's own text, so this does not arise.
// decodeApplyResult copies keys and values out of its input: the input is typically a buffer that
// LMDB reuses for the next read.

export const APPLY_RESULT_FORMAT = 1;

export class ApplyResultDecodeError extends Error {
  override name = "ApplyResultDecodeError";
}

const TAG_WRITE = 1;
const TAG_TXN = 2;
const TAG_SESSION_OPENED = 3;
const TAG_SESSION_CLOSED = 4;
const TAG_COMPACTED = 5;
const TAG_ERROR = 6;

const OP_PUT = 1;
const OP_DELETE = 2;
const OP_RANGE = 3;

/** Wire code of an error = index in this table + 1 (0 is never valid). */
const ERROR_CODES: readonly ApplyErrorCode[] = [
  "session-unknown",
  "session-seq-too-old",
  "session-limit",
  "compact-future",
  "compact-old",
  "txn-conflict",
];

const MIN_RESULT_SIZE = 1 + 8;
const MIN_KV_SIZE = 4 + 4 + 4 + 8 + 8 + 8;

const utf8Encoder = new TextEncoder();
// fatal: invalid UTF-8 is an error, not U+FFFD (which would re-encode differently); ignoreBOM:
// keep a leading U+FEFF in the string rather than strip it, for the same reason.
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function checkSafe(what: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`apply result ${what} must be a non-negative safe integer, got ${n}`);
}
function checkBytes(what: string, b: Uint8Array): void {
  if (!(b instanceof Uint8Array)) throw new TypeError(`apply result ${what} must be a Uint8Array`);
}
function checkBool(what: string, b: boolean): void {
  if (typeof b !== "boolean") throw new TypeError(`apply result ${what} must be a boolean`);
}

function rangeSize(r: RangeResult): number {
  checkBool("range more", r.more);
  checkSafe("range count", r.count);
  checkSafe("range version", r.version);
  if (!Array.isArray(r.kvs)) throw new TypeError("apply result range kvs must be an array");
  let n = 1 + 8 + 8 + 4;
  for (const kv of r.kvs) {
    checkBytes("kv key", kv.key);
    checkBytes("kv value", kv.value);
    if (!Number.isInteger(kv.meta) || kv.meta < 0 || kv.meta > 0xffffffff) throw new RangeError(`apply result kv meta must be a u32, got ${kv.meta}`);
    checkSafe("kv version", kv.version);
    checkSafe("kv createVersion", kv.createVersion);
    checkSafe("kv expireAt", kv.expireAt);
    n += MIN_KV_SIZE + kv.key.length + kv.value.length;
  }
  return n;
}

/** Validates `r` (a caller bug throws RangeError/TypeError) and returns its encoded size. */
function resultSize(r: ApplyResult, message: Uint8Array | null): number {
  switch (r.kind) {
    case "write":
      checkSafe("version", r.version);
      return 2 + 8;
    case "txn": {
      checkBool("succeeded", r.succeeded);
      checkSafe("version", r.version);
      if (!Array.isArray(r.results)) throw new TypeError("apply result txn results must be an array");
      let n = 2 + 1 + 8 + 4;
      for (const op of r.results) {
        switch (op.type) {
          case "put":
            checkSafe("put version", op.version);
            n += 1 + 8;
            break;
          case "delete":
            checkSafe("delete count", op.deleted);
            n += 1 + 8;
            break;
          case "range":
            n += 1 + rangeSize(op);
            break;
          default:
            throw new RangeError(`unknown txn op result type ${(op as { type: unknown }).type}`);
        }
      }
      return n;
    }
    case "session-opened":
      checkSafe("sessionId", r.sessionId);
      checkSafe("ttlMs", r.ttlMs);
      return 2 + 8 + 8;
    case "session-closed":
      checkSafe("sessionId", r.sessionId);
      return 2 + 8;
    case "compacted":
      checkSafe("compacted", r.compacted);
      return 2 + 8;
    case "error":
      if (!ERROR_CODES.includes(r.code)) throw new RangeError(`unknown apply error code ${r.code}`);
      return 2 + 1 + 4 + (message as Uint8Array).length;
    default:
      throw new RangeError(`unknown apply result kind ${(r as { kind: unknown }).kind}`);
  }
}

/** Encodes an apply result (see the layout above). Throws RangeError/TypeError on an invalid one. */
export function encodeApplyResult(r: ApplyResult): Uint8Array {
  let message: Uint8Array | null = null;
  if (r.kind === "error") {
    if (typeof r.message !== "string") throw new TypeError("apply result error message must be a string");
    message = utf8Encoder.encode(r.message);
  }
  const out = new Uint8Array(resultSize(r, message));
  let p = 0;
  const u8 = (v: number): void => {
    out[p++] = v;
  };
  const u32 = (v: number): void => {
    putU32(out, p, v);
    p += 4;
  };
  const f64 = (v: number): void => {
    putF64(out, p, v);
    p += 8;
  };
  const bytes = (b: Uint8Array): void => {
    u32(b.length);
    out.set(b, p);
    p += b.length;
  };
  u8(APPLY_RESULT_FORMAT);
  switch (r.kind) {
    case "write":
      u8(TAG_WRITE);
      f64(r.version);
      break;
    case "txn":
      u8(TAG_TXN);
      u8(r.succeeded ? 1 : 0);
      f64(r.version);
      u32(r.results.length);
      for (const op of r.results) {
        switch (op.type) {
          case "put":
            u8(OP_PUT);
            f64(op.version);
            break;
          case "delete":
            u8(OP_DELETE);
            f64(op.deleted);
            break;
          case "range":
            u8(OP_RANGE);
            u8(op.more ? 1 : 0);
            f64(op.count);
            f64(op.version);
            u32(op.kvs.length);
            for (const kv of op.kvs) {
              bytes(kv.key);
              bytes(kv.value);
              u32(kv.meta);
              f64(kv.version);
              f64(kv.createVersion);
              f64(kv.expireAt);
            }
            break;
        }
      }
      break;
    case "session-opened":
      u8(TAG_SESSION_OPENED);
      f64(r.sessionId);
      f64(r.ttlMs);
      break;
    case "session-closed":
      u8(TAG_SESSION_CLOSED);
      f64(r.sessionId);
      break;
    case "compacted":
      u8(TAG_COMPACTED);
      f64(r.compacted);
      break;
    case "error":
      u8(TAG_ERROR);
      u8(ERROR_CODES.indexOf(r.code) + 1);
      bytes(message as Uint8Array);
      break;
  }
  return out;
}

/** The apply result codec's ByteReader: it throws ApplyResultDecodeError. */
class ResultReader extends ByteReader {
  constructor(data: Uint8Array) {
    super(data, 2);
  }
  fail(detail: string): never {
    throw new ApplyResultDecodeError(`apply result (${this.data.length} bytes): ${detail}`);
  }
  protected truncated(n: number, what: string): never {
    this.fail(`truncated: need ${n} byte(s) for ${what} at offset ${this.p}, have ${this.data.length - this.p}`);
  }
  protected trailing(): never {
    this.fail(`${this.data.length - this.p} trailing byte(s) after offset ${this.p}`);
  }
  range(what: string): RangeResult {
    const more = this.bool(`${what} more`);
    const count = this.safeInt(`${what} count`);
    const version = this.safeInt(`${what} version`);
    const n = this.count(`${what} kv count`, MIN_KV_SIZE);
    const kvs: KvRecord[] = [];
    for (let i = 0; i < n; i++) {
      const key = this.bytesCopy(`${what} kv ${i} key`);
      const value = this.bytesCopy(`${what} kv ${i} value`);
      const meta = this.u32(`${what} kv ${i} meta`);
      const kvVersion = this.safeInt(`${what} kv ${i} version`);
      const createVersion = this.safeInt(`${what} kv ${i} createVersion`);
      const expireAt = this.safeInt(`${what} kv ${i} expireAt`);
      kvs.push({ key, value, meta, version: kvVersion, createVersion, expireAt });
    }
    return { kvs, more, count, version };
  }
}

function decodeUtf8(b: Uint8Array): string {
  try {
    return utf8Decoder.decode(b);
  } catch {
    throw new ApplyResultDecodeError(`apply result: error message is not valid UTF-8 (${b.length} bytes)`);
  }
}

/** Decodes an apply result; throws ApplyResultDecodeError (and nothing else) on malformed input. */
export function decodeApplyResult(b: Uint8Array): ApplyResult {
  if (!(b instanceof Uint8Array)) throw new ApplyResultDecodeError("apply result data is not a Uint8Array");
  if (b.length < 2) throw new ApplyResultDecodeError(`apply result too short: ${b.length} byte(s), need at least 2`);
  if (b[0] !== APPLY_RESULT_FORMAT) throw new ApplyResultDecodeError(`unknown apply result format ${b[0]} (expected ${APPLY_RESULT_FORMAT})`);
  const r: ResultReader = new ResultReader(b);
  let out: ApplyResult;
  switch (b[1]) {
    case TAG_WRITE:
      out = { kind: "write", version: r.safeInt("version") };
      break;
    case TAG_TXN: {
      const succeeded = r.bool("succeeded");
      const version = r.safeInt("version");
      const n = r.count("result count", MIN_RESULT_SIZE);
      const results: TxnOpResult[] = [];
      for (let i = 0; i < n; i++) {
        const at = r.p;
        const type = r.u8(`result ${i} type`);
        switch (type) {
          case OP_PUT:
            results.push({ type: "put", version: r.safeInt(`result ${i} version`) });
            break;
          case OP_DELETE:
            results.push({ type: "delete", deleted: r.safeInt(`result ${i} deleted`) });
            break;
          case OP_RANGE:
            results.push({ type: "range", ...r.range(`result ${i}`) });
            break;
          default:
            r.fail(`result ${i} has unknown type ${type} at offset ${at}`);
        }
      }
      out = { kind: "txn", succeeded, version, results };
      break;
    }
    case TAG_SESSION_OPENED: {
      const sessionId = r.safeInt("sessionId");
      const ttlMs = r.safeInt("ttlMs");
      out = { kind: "session-opened", sessionId, ttlMs };
      break;
    }
    case TAG_SESSION_CLOSED:
      out = { kind: "session-closed", sessionId: r.safeInt("sessionId") };
      break;
    case TAG_COMPACTED:
      out = { kind: "compacted", compacted: r.safeInt("compacted") };
      break;
    case TAG_ERROR: {
      const c = r.u8("error code");
      if (c < 1 || c > ERROR_CODES.length) r.fail(`unknown error code ${c} at offset 2`);
      const bytes = r.bytes("error message"); // a view: decoded to a string right away
      out = { kind: "error", code: ERROR_CODES[c - 1], message: decodeUtf8(bytes) };
      break;
    }
    default:
      throw new ApplyResultDecodeError(`unknown apply result tag ${b[1]} (format ${APPLY_RESULT_FORMAT}, ${b.length} bytes)`);
  }
  r.end();
  return out;
}

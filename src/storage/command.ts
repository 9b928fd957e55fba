// The binary encoding of a client write carried in a Raft log entry's data (hot path: no JSON).
//
// Layout (all integers little-endian):
//   [u8 format = 1][u8 kind] then, by kind:
//   Put          (1): [u32 meta][f64 expireAt][u32 keyLen][key][u32 valueLen][value]
//   Delete       (2): [u32 keyLen][key]
//   ExpireKey    (3): [f64 version][u32 keyLen][key]
//   Txn          (4): [f64 nowMs][u32 nCompares]{compare}[u32 nSuccess]{op}[u32 nFailure]{op}
//   Compact      (5): [f64 version]
//   SessionOpen  (6): [f64 nowMs][f64 ttlMs]
//   SessionClose (7): [f64 nowMs][f64 sessionId]
//   InSession    (8): [f64 sessionId][f64 seq][f64 nowMs][u32 innerLen][inner command]
//                     (the inner command is a whole encoding, format byte included, of a Put,
//                     Delete or Txn: never another InSession)
// Txn parts:
//   compare: [u8 target][u8 op][u32 keyLen][key][f64 version][u32 valueLen][value][u8 exists]
//            target 0 version / 1 create / 2 value / 3 exists; op 0 "=" / 1 ">" / 2 "<" / 3 "!="
//            (the proto's enum numbers); every field is present whatever the target, so the
//            layout has no branches; exists is 0 or 1 and allows op "=" / "!=" only.
//   op:      [u8 type] then
//            1 put:    [u32 meta][f64 expireAt][u32 keyLen][key][u32 valueLen][value]
//            2 delete: [u32 keyLen][key][u8 hasEnd][u32 endLen][end]
//            3 range:  [u32 keyLen][key][u8 hasEnd][u32 endLen][end][f64 limit]
//                      [u8 flags: bit0 reverse, bit1 keysOnly, bit2 countOnly; others 0]
//            hasEnd 0 means end = null (no upper bound) and then endLen must be 0; hasEnd 1 with
//            endLen 0 is an (empty) range ending at the empty key, a different value.
//            A range's key may be empty (the lower bound of everything); put and compare keys
//            may not. A range's limit is >= 1 (the server resolves "0 = default" before).
// Numbers that can exceed 2^32 (expireAt/nowMs in ms since the epoch, versions = log indexes,
// session ids, seqs, counts) are stored as IEEE-754 doubles: exact for every integer up to 2^53,
// which is also the limit of a JS number. Decoding checks that they are non-negative safe
// integers. Every field is length-delimited and the total length must match exactly, so
// truncation and trailing garbage are both detected.
//
// Decoding is total; any input that is not exactly an encoding this encoder could produce throws
// CommandDecodeError, never another exception. Counts are checked against the bytes left (each
// element has a minimum encoded size) before any element is read, so a corrupt count cannot make
// the decoder allocate or loop beyond the input's size. Flag/enum bytes outside their range are
// errors too, so a decoded command re-encodes to exactly its input bytes.
//
// decodeCommand returns keys/values as zero-copy views (subarray) of the input: they alias the
// entry's data, which the caller must not mutate while they are in use.

import { ByteReader, putF64, putU32 } from "./byte-reader.ts";

export const enum CommandKind {
  Put = 1,
  Delete = 2,
  ExpireKey = 3,
  Txn = 4,
  Compact = 5,
  SessionOpen = 6,
  SessionClose = 7,
  InSession = 8,
}

/** A Txn compare (proto Compare). A missing (or expired at nowMs) key has version 0 and create 0. */
export interface TxnCompare {
  target: "version" | "create" | "value" | "exists";
  op: "=" | "!=" | "<" | ">";
  key: Uint8Array;
  /** For "version" and "create". */
  version: number;
  /** For "value" (a missing key never compares true). */
  value: Uint8Array;
  /** For "exists" (op "=" or "!=" only). */
  exists: boolean;
}

/**
 * A key range: [key, end). `end` null = no upper bound. A single key is [key, key ‖ 0x00), so
 * every range is a plain interval.
 */
export interface KeyRange {
  key: Uint8Array;
  end: Uint8Array | null;
}

export type TxnOp =
  | { type: "put"; key: Uint8Array; value: Uint8Array; meta: number; expireAt: number }
  | ({ type: "delete" } & KeyRange)
  | ({ type: "range"; limit: number; reverse: boolean; keysOnly: boolean; countOnly: boolean } & KeyRange);

export type Command =
  | { kind: CommandKind.Put; key: Uint8Array; value: Uint8Array; meta: number /* u32 */; expireAt: number /* ms since epoch, 0 = never */ }
  | { kind: CommandKind.Delete; key: Uint8Array }
  // Issued by the leader's TTL reaper: delete `key` only if its latest version is still `version`.
  | { kind: CommandKind.ExpireKey; key: Uint8Array; version: number }
  // Stamped by the leader: nowMs is its clock (TTL checks in compares, session expiry).
  | { kind: CommandKind.Txn; nowMs: number; compares: TxnCompare[]; success: TxnOp[]; failure: TxnOp[] }
  | { kind: CommandKind.Compact; version: number }
  | { kind: CommandKind.SessionOpen; nowMs: number; ttlMs: number }
  | { kind: CommandKind.SessionClose; nowMs: number; sessionId: number }
  // A Put, Delete or Txn under a client session (exactly-once): `inner` is never InSession.
  | { kind: CommandKind.InSession; sessionId: number; seq: number; nowMs: number; inner: Command };

export class CommandDecodeError extends Error {
  override name = "CommandDecodeError";
}

export const COMMAND_FORMAT = 1;

function checkU32(what: string, n: number): void {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`command ${what} must be a u32, got ${n}`);
}

function checkSafe(what: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`command ${what} must be a non-negative safe integer, got ${n}`);
}

function checkBytes(what: string, b: Uint8Array): void {
  if (!(b instanceof Uint8Array)) throw new TypeError(`command ${what} must be a Uint8Array`);
}

function checkKey(key: Uint8Array): void {
  checkBytes("key", key);
  if (key.length === 0) throw new RangeError("command key must not be empty");
}

function checkBool(what: string, b: boolean): void {
  if (typeof b !== "boolean") throw new TypeError(`command ${what} must be a boolean`);
}

// Wire bytes of the Txn enums: the index in these tables (the proto's enum numbers).
const TARGETS: readonly TxnCompare["target"][] = ["version", "create", "value", "exists"];
const COMPARE_OPS: readonly TxnCompare["op"][] = ["=", ">", "<", "!="];
const TARGET_EXISTS = 3;
const OP_EQUAL = 0;
const OP_NOT_EQUAL = 3;

const OP_PUT = 1;
const OP_DELETE = 2;
const OP_RANGE = 3;

const FLAG_REVERSE = 1;
const FLAG_KEYS_ONLY = 2;
const FLAG_COUNT_ONLY = 4;
const FLAGS_KNOWN = FLAG_REVERSE | FLAG_KEYS_ONLY | FLAG_COUNT_ONLY;

// The smallest encodings, which bound a count by the bytes left before any element is read.
/** A compare with a 1-byte key and an empty value. */
const MIN_COMPARE_SIZE = 1 + 1 + 4 + 1 + 8 + 4 + 1;
/** A delete of [empty key, no end): the smallest op. */
const MIN_OP_SIZE = 1 + 4 + 1 + 4;

/** Validates `c` (a caller bug throws RangeError/TypeError) and returns its encoded size. */
function commandSize(c: Command, nested: boolean): number {
  switch (c.kind) {
    case CommandKind.Put:
      checkKey(c.key);
      checkBytes("value", c.value);
      checkU32("meta", c.meta);
      checkSafe("expireAt", c.expireAt);
      return 2 + 4 + 8 + 4 + c.key.length + 4 + c.value.length;
    case CommandKind.Delete:
      checkKey(c.key);
      return 2 + 4 + c.key.length;
    case CommandKind.ExpireKey:
      checkKey(c.key);
      checkSafe("version", c.version);
      if (c.version === 0) throw new RangeError("command version must be >= 1");
      return 2 + 8 + 4 + c.key.length;
    case CommandKind.Txn: {
      checkSafe("nowMs", c.nowMs);
      if (!Array.isArray(c.compares) || !Array.isArray(c.success) || !Array.isArray(c.failure)) {
        throw new TypeError("command txn compares/success/failure must be arrays");
      }
      let n = 2 + 8 + 4 + 4 + 4;
      for (const cmp of c.compares) n += compareSize(cmp);
      for (const op of c.success) n += opSize(op);
      for (const op of c.failure) n += opSize(op);
      return n;
    }
    case CommandKind.Compact:
      checkSafe("version", c.version);
      return 2 + 8;
    case CommandKind.SessionOpen:
      checkSafe("nowMs", c.nowMs);
      checkSafe("ttlMs", c.ttlMs);
      return 2 + 8 + 8;
    case CommandKind.SessionClose:
      checkSafe("nowMs", c.nowMs);
      checkSafe("sessionId", c.sessionId);
      return 2 + 8 + 8;
    case CommandKind.InSession: {
      if (nested) throw new RangeError("an InSession command cannot be nested in another");
      checkSafe("sessionId", c.sessionId);
      checkSafe("seq", c.seq);
      checkSafe("nowMs", c.nowMs);
      const k = c.inner?.kind;
      if (k !== CommandKind.Put && k !== CommandKind.Delete && k !== CommandKind.Txn) {
        throw new RangeError(`an InSession command's inner command must be a Put, Delete or Txn, got kind ${k}`);
      }
      return 2 + 8 + 8 + 8 + 4 + commandSize(c.inner, true);
    }
    default:
      throw new RangeError(`unknown command kind ${(c as { kind: unknown }).kind}`);
  }
}

function compareSize(c: TxnCompare): number {
  const t = TARGETS.indexOf(c.target);
  if (t < 0) throw new RangeError(`command compare target must be one of ${TARGETS.join(", ")}, got ${c.target}`);
  const o = COMPARE_OPS.indexOf(c.op);
  if (o < 0) throw new RangeError(`command compare op must be one of ${COMPARE_OPS.join(" ")}, got ${c.op}`);
  if (t === TARGET_EXISTS && o !== OP_EQUAL && o !== OP_NOT_EQUAL) {
    throw new RangeError(`command compare on "exists" allows op "=" or "!=" only, got ${c.op}`);
  }
  checkKey(c.key);
  checkSafe("compare version", c.version);
  checkBytes("compare value", c.value);
  checkBool("compare exists", c.exists);
  return 1 + 1 + 4 + c.key.length + 8 + 4 + c.value.length + 1;
}

function rangeSize(r: KeyRange): number {
  checkBytes("range key", r.key);
  if (r.end !== null) checkBytes("range end", r.end);
  return 4 + r.key.length + 1 + 4 + (r.end === null ? 0 : r.end.length);
}

function opSize(op: TxnOp): number {
  switch (op.type) {
    case "put":
      checkKey(op.key);
      checkBytes("value", op.value);
      checkU32("meta", op.meta);
      checkSafe("expireAt", op.expireAt);
      return 1 + 4 + 8 + 4 + op.key.length + 4 + op.value.length;
    case "delete":
      return 1 + rangeSize(op);
    case "range":
      checkSafe("range limit", op.limit);
      if (op.limit === 0) throw new RangeError("command range limit must be >= 1");
      checkBool("range reverse", op.reverse);
      checkBool("range keysOnly", op.keysOnly);
      checkBool("range countOnly", op.countOnly);
      return 1 + rangeSize(op) + 8 + 1;
    default:
      throw new RangeError(`unknown txn op type ${(op as { type: unknown }).type}`);
  }
}

/** Writes into a buffer of the exact size commandSize computed (so no bounds checks). */
class Writer {
  p = 0;
  constructor(readonly out: Uint8Array) {}
  u8(v: number): void {
    this.out[this.p++] = v;
  }
  u32(v: number): void {
    putU32(this.out, this.p, v);
    this.p += 4;
  }
  f64(v: number): void {
    putF64(this.out, this.p, v);
    this.p += 8;
  }
  /** [u32 length][bytes] */
  bytes(b: Uint8Array): void {
    this.u32(b.length);
    this.out.set(b, this.p);
    this.p += b.length;
  }
  range(r: KeyRange): void {
    this.bytes(r.key);
    if (r.end === null) {
      this.u8(0);
      this.u32(0);
    } else {
      this.u8(1);
      this.bytes(r.end);
    }
  }
}

function writeCommand(w: Writer, c: Command): void {
  w.u8(COMMAND_FORMAT);
  w.u8(c.kind);
  switch (c.kind) {
    case CommandKind.Put:
      w.u32(c.meta);
      w.f64(c.expireAt);
      w.bytes(c.key);
      w.bytes(c.value);
      return;
    case CommandKind.Delete:
      w.bytes(c.key);
      return;
    case CommandKind.ExpireKey:
      w.f64(c.version);
      w.bytes(c.key);
      return;
    case CommandKind.Txn:
      w.f64(c.nowMs);
      w.u32(c.compares.length);
      for (const cmp of c.compares) {
        w.u8(TARGETS.indexOf(cmp.target));
        w.u8(COMPARE_OPS.indexOf(cmp.op));
        w.bytes(cmp.key);
        w.f64(cmp.version);
        w.bytes(cmp.value);
        w.u8(cmp.exists ? 1 : 0);
      }
      writeOps(w, c.success);
      writeOps(w, c.failure);
      return;
    case CommandKind.Compact:
      w.f64(c.version);
      return;
    case CommandKind.SessionOpen:
      w.f64(c.nowMs);
      w.f64(c.ttlMs);
      return;
    case CommandKind.SessionClose:
      w.f64(c.nowMs);
      w.f64(c.sessionId);
      return;
    case CommandKind.InSession: {
      w.f64(c.sessionId);
      w.f64(c.seq);
      w.f64(c.nowMs);
      const lenAt = w.p;
      w.u32(0);
      writeCommand(w, c.inner);
      putU32(w.out, lenAt, w.p - lenAt - 4);
      return;
    }
  }
}

function writeOps(w: Writer, ops: TxnOp[]): void {
  w.u32(ops.length);
  for (const op of ops) {
    switch (op.type) {
      case "put":
        w.u8(OP_PUT);
        w.u32(op.meta);
        w.f64(op.expireAt);
        w.bytes(op.key);
        w.bytes(op.value);
        break;
      case "delete":
        w.u8(OP_DELETE);
        w.range(op);
        break;
      case "range":
        w.u8(OP_RANGE);
        w.range(op);
        w.f64(op.limit);
        w.u8((op.reverse ? FLAG_REVERSE : 0) | (op.keysOnly ? FLAG_KEYS_ONLY : 0) | (op.countOnly ? FLAG_COUNT_ONLY : 0));
        break;
    }
  }
}

/** Encodes a command. Throws RangeError/TypeError on an invalid command (a caller bug). */
export function encodeCommand(c: Command): Uint8Array {
  // Validate everything (and size it) before allocating, so a bad command writes nothing.
  const w = new Writer(new Uint8Array(commandSize(c, false)));
  writeCommand(w, c);
  return w.out;
}

/** The command codec's ByteReader: it throws CommandDecodeError, its messages naming the kind. */
class Reader extends ByteReader {
  constructor(
    data: Uint8Array,
    private readonly kind: string,
  ) {
    super(data, 2);
  }
  fail(detail: string): never {
    throw new CommandDecodeError(`${this.kind} command: ${detail}`);
  }
  protected truncated(n: number, what: string): never {
    throw new CommandDecodeError(
      `truncated ${this.kind} command: need ${n} byte(s) for ${what} at offset ${this.p}, have ${this.data.length - this.p} (total ${this.data.length})`,
    );
  }
  protected trailing(): never {
    throw new CommandDecodeError(`${this.kind} command has ${this.data.length - this.p} trailing byte(s) after offset ${this.p}`);
  }
  key(): Uint8Array {
    const k = this.bytes("key");
    if (k.length === 0) throw new CommandDecodeError(`${this.kind} command has an empty key`);
    return k;
  }
  range(what: string): KeyRange {
    const key = this.bytes(`${what} key`);
    const hasEnd = this.bool(`${what} hasEnd`);
    const at = this.p;
    const end = this.bytes(`${what} end`);
    if (!hasEnd && end.length !== 0) {
      this.fail(`${what} has no end but an end of ${end.length} byte(s) at offset ${at}`);
    }
    return { key, end: hasEnd ? end : null };
  }
  compare(i: number): TxnCompare {
    const what = `compare ${i}`;
    const at = this.p;
    const t = this.u8(`${what} target`);
    if (t >= TARGETS.length) this.fail(`${what} has unknown target ${t} at offset ${at}`);
    const o = this.u8(`${what} op`);
    if (o >= COMPARE_OPS.length) this.fail(`${what} has unknown op ${o} at offset ${at + 1}`);
    if (t === TARGET_EXISTS && o !== OP_EQUAL && o !== OP_NOT_EQUAL) {
      this.fail(`${what} on "exists" has op ${COMPARE_OPS[o]} (only = and != are allowed)`);
    }
    const key = this.key();
    const version = this.safeInt(`${what} version`);
    const value = this.bytes(`${what} value`);
    const exists = this.bool(`${what} exists`);
    return { target: TARGETS[t], op: COMPARE_OPS[o], key, version, value, exists };
  }
  ops(branch: string): TxnOp[] {
    const n = this.count(`${branch} op count`, MIN_OP_SIZE);
    const ops: TxnOp[] = [];
    for (let i = 0; i < n; i++) {
      const what = `${branch} op ${i}`;
      const at = this.p;
      const type = this.u8(`${what} type`);
      switch (type) {
        case OP_PUT: {
          const meta = this.u32(`${what} meta`);
          const expireAt = this.safeInt(`${what} expireAt`);
          const key = this.key();
          const value = this.bytes(`${what} value`);
          ops.push({ type: "put", key, value, meta, expireAt });
          break;
        }
        case OP_DELETE:
          ops.push({ type: "delete", ...this.range(what) });
          break;
        case OP_RANGE: {
          const r = this.range(what);
          const limit = this.safeInt(`${what} limit`);
          if (limit === 0) this.fail(`${what} has limit 0`);
          const flagsAt = this.p;
          const flags = this.u8(`${what} flags`);
          if ((flags & ~FLAGS_KNOWN) !== 0) {
            this.fail(`${what} has unknown flag bits 0x${flags.toString(16)} at offset ${flagsAt}`);
          }
          ops.push({
            type: "range",
            key: r.key,
            end: r.end,
            limit,
            reverse: (flags & FLAG_REVERSE) !== 0,
            keysOnly: (flags & FLAG_KEYS_ONLY) !== 0,
            countOnly: (flags & FLAG_COUNT_ONLY) !== 0,
          });
          break;
        }
        default:
          this.fail(`${what} has unknown type ${type} at offset ${at}`);
      }
    }
    return ops;
  }
}

/** Decodes a command; throws CommandDecodeError (and nothing else) on any malformed input. */
export function decodeCommand(data: Uint8Array): Command {
  return decode(data, false);
}

function decode(data: Uint8Array, nested: boolean): Command {
  if (!(data instanceof Uint8Array)) throw new CommandDecodeError("command data is not a Uint8Array");
  if (data.length < 2) throw new CommandDecodeError(`command too short: ${data.length} byte(s), need at least 2`);
  if (data[0] !== COMMAND_FORMAT) throw new CommandDecodeError(`unknown command format ${data[0]} (expected ${COMMAND_FORMAT})`);
  const kind = data[1];
  switch (kind) {
    case CommandKind.Put: {
      const r = new Reader(data, "Put");
      const meta = r.u32("meta");
      const expireAt = r.safeInt("expireAt");
      const key = r.key();
      const value = r.bytes("value");
      r.end();
      return { kind: CommandKind.Put, key, value, meta, expireAt };
    }
    case CommandKind.Delete: {
      const r = new Reader(data, "Delete");
      const key = r.key();
      r.end();
      return { kind: CommandKind.Delete, key };
    }
    case CommandKind.ExpireKey: {
      const r = new Reader(data, "ExpireKey");
      const version = r.safeInt("version");
      if (version === 0) throw new CommandDecodeError("ExpireKey command has version 0");
      const key = r.key();
      r.end();
      return { kind: CommandKind.ExpireKey, key, version };
    }
    case CommandKind.Txn:
      return decodeTxn(data);
    case CommandKind.Compact: {
      const r = new Reader(data, "Compact");
      const version = r.safeInt("version");
      r.end();
      return { kind: CommandKind.Compact, version };
    }
    case CommandKind.SessionOpen: {
      const r = new Reader(data, "SessionOpen");
      const nowMs = r.safeInt("nowMs");
      const ttlMs = r.safeInt("ttlMs");
      r.end();
      return { kind: CommandKind.SessionOpen, nowMs, ttlMs };
    }
    case CommandKind.SessionClose: {
      const r = new Reader(data, "SessionClose");
      const nowMs = r.safeInt("nowMs");
      const sessionId = r.safeInt("sessionId");
      r.end();
      return { kind: CommandKind.SessionClose, nowMs, sessionId };
    }
    case CommandKind.InSession:
      if (nested) throw new CommandDecodeError("an InSession command cannot be nested in another");
      return decodeInSession(data);
    default:
      throw new CommandDecodeError(`unknown command kind ${kind} (format ${COMMAND_FORMAT}, ${data.length} bytes)`);
  }
}

// The long kinds are out of line so that decode() stays small for the hot Put/Delete path.
function decodeTxn(data: Uint8Array): Command {
  const r = new Reader(data, "Txn");
  const nowMs = r.safeInt("nowMs");
  const n = r.count("compare count", MIN_COMPARE_SIZE);
  const compares: TxnCompare[] = [];
  for (let i = 0; i < n; i++) compares.push(r.compare(i));
  const success = r.ops("success");
  const failure = r.ops("failure");
  r.end();
  return { kind: CommandKind.Txn, nowMs, compares, success, failure };
}

function decodeInSession(data: Uint8Array): Command {
  const r = new Reader(data, "InSession");
  const sessionId = r.safeInt("sessionId");
  const seq = r.safeInt("seq");
  const nowMs = r.safeInt("nowMs");
  const innerBytes = r.bytes("inner command");
  r.end();
  let inner: Command;
  try {
    inner = decode(innerBytes, true);
  } catch (e) {
    if (e instanceof CommandDecodeError) throw new CommandDecodeError(`InSession command's inner command: ${e.message}`);
    throw e;
  }
  if (inner.kind !== CommandKind.Put && inner.kind !== CommandKind.Delete && inner.kind !== CommandKind.Txn) {
    throw new CommandDecodeError(`InSession command's inner command has kind ${inner.kind} (only Put, Delete and Txn are allowed)`);
  }
  return { kind: CommandKind.InSession, sessionId, seq, nowMs, inner };
}

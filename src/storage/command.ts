// The binary encoding of a client write carried in a Raft log entry's data (hot path: no JSON).
//
// Layout (all integers little-endian):
//   [u8 format = 1][u8 kind] then, by kind:
//   Put        (1): [u32 meta][f64 expireAt][u32 keyLen][key][u32 valueLen][value]
//   Delete     (2): [u32 keyLen][key]
//   ExpireKey  (3): [f64 version][u32 keyLen][key]
// Numbers that can exceed 2^32 (expireAt in ms since the epoch, versions = log indexes) are stored
// as IEEE-754 doubles: exact for every integer up to 2^53, which is also the limit of a JS number.
// Decoding checks that they are non-negative safe integers. Every field is length-delimited and
// the total length must match exactly, so truncation and trailing garbage are both detected.
//
// decodeCommand returns key/value as zero-copy views (subarray) of the input: they alias the
// entry's data, which the caller must not mutate while they are in use.

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

// Byte arithmetic and a scratch f64 instead of DataView: in Bun, touching `.buffer` of a typed
// array materialises an ArrayBuffer, which is costly on this hot path.
const f64 = new Float64Array(1);
const f64Bytes = new Uint8Array(f64.buffer);
const littleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

function putU32(out: Uint8Array, p: number, v: number): void {
  out[p] = v & 0xff;
  out[p + 1] = (v >>> 8) & 0xff;
  out[p + 2] = (v >>> 16) & 0xff;
  out[p + 3] = (v >>> 24) & 0xff;
}
function getU32(d: Uint8Array, p: number): number {
  return (d[p] | (d[p + 1] << 8) | (d[p + 2] << 16) | (d[p + 3] << 24)) >>> 0;
}
function putF64(out: Uint8Array, p: number, v: number): void {
  f64[0] = v;
  for (let i = 0; i < 8; i++) out[p + i] = f64Bytes[littleEndian ? i : 7 - i];
}
function getF64(d: Uint8Array, p: number): number {
  for (let i = 0; i < 8; i++) f64Bytes[littleEndian ? i : 7 - i] = d[p + i];
  return f64[0];
}

function checkU32(what: string, n: number): void {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`command ${what} must be a u32, got ${n}`);
}

function checkSafe(what: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`command ${what} must be a non-negative safe integer, got ${n}`);
}

function checkKey(key: Uint8Array): void {
  if (!(key instanceof Uint8Array)) throw new TypeError("command key must be a Uint8Array");
  if (key.length === 0) throw new RangeError("command key must not be empty");
}

/** Encodes a command. Throws RangeError/TypeError on an invalid command (a caller bug). */
export function encodeCommand(c: Command): Uint8Array {
  if (!("key" in c)) throw new RangeError(`command kind ${c.kind} has no encoder yet`);
  checkKey(c.key);
  let out: Uint8Array;
  let p = 2;
  switch (c.kind) {
    case CommandKind.Put: {
      if (!(c.value instanceof Uint8Array)) throw new TypeError("command value must be a Uint8Array");
      checkU32("meta", c.meta);
      checkSafe("expireAt", c.expireAt);
      out = new Uint8Array(2 + 4 + 8 + 4 + c.key.length + 4 + c.value.length);
      putU32(out, p, c.meta);
      p += 4;
      putF64(out, p, c.expireAt);
      p += 8;
      putU32(out, p, c.key.length);
      p += 4;
      out.set(c.key, p);
      p += c.key.length;
      putU32(out, p, c.value.length);
      p += 4;
      out.set(c.value, p);
      break;
    }
    case CommandKind.Delete: {
      out = new Uint8Array(2 + 4 + c.key.length);
      putU32(out, p, c.key.length);
      p += 4;
      out.set(c.key, p);
      break;
    }
    case CommandKind.ExpireKey: {
      checkSafe("version", c.version);
      if (c.version === 0) throw new RangeError("command version must be >= 1");
      out = new Uint8Array(2 + 8 + 4 + c.key.length);
      putF64(out, p, c.version);
      p += 8;
      putU32(out, p, c.key.length);
      p += 4;
      out.set(c.key, p);
      break;
    }
    default:
      throw new RangeError(`unknown command kind ${(c as { kind: unknown }).kind}`);
  }
  out[0] = COMMAND_FORMAT;
  out[1] = c.kind;
  return out;
}

class Reader {
  p = 2;
  constructor(
    private readonly data: Uint8Array,
    private readonly kind: string,
  ) {}
  private need(n: number, what: string): void {
    if (this.data.length - this.p < n) {
      throw new CommandDecodeError(
        `truncated ${this.kind} command: need ${n} byte(s) for ${what} at offset ${this.p}, have ${this.data.length - this.p} (total ${this.data.length})`,
      );
    }
  }
  u32(what: string): number {
    this.need(4, what);
    const v = getU32(this.data, this.p);
    this.p += 4;
    return v;
  }
  safeInt(what: string): number {
    this.need(8, what);
    const v = getF64(this.data, this.p);
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new CommandDecodeError(`${this.kind} command: ${what} at offset ${this.p} is not a non-negative safe integer (${v})`);
    }
    this.p += 8;
    return v;
  }
  bytes(what: string): Uint8Array {
    const n = this.u32(`${what} length`);
    this.need(n, what);
    const v = this.data.subarray(this.p, this.p + n);
    this.p += n;
    return v;
  }
  key(): Uint8Array {
    const k = this.bytes("key");
    if (k.length === 0) throw new CommandDecodeError(`${this.kind} command has an empty key`);
    return k;
  }
  end(): void {
    if (this.p !== this.data.length) {
      throw new CommandDecodeError(`${this.kind} command has ${this.data.length - this.p} trailing byte(s) after offset ${this.p}`);
    }
  }
}

/** Decodes a command; throws CommandDecodeError (and nothing else) on any malformed input. */
export function decodeCommand(data: Uint8Array): Command {
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
    default:
      throw new CommandDecodeError(`unknown command kind ${kind} (format ${COMMAND_FORMAT}, ${data.length} bytes)`);
  }
}

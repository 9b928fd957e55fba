// Hand-written proto3 codec for the messages of proto/rbkv.proto (package rbdkv).
//
// No reflection, no descriptors, no JSON: each message has a size function, a write function
// and a decode function. Encoding sizes the message first and writes it into one buffer of
// exactly that size, in ascending field order with proto3 default values omitted, which is
// byte for byte what protoc/C++ produces (checked against protoc in test/unit/pb.test.ts).
//
// Conventions
// - Field names are the proto3 JSON names (lowerCamelCase): watcher_id -> watcherId.
// - Decoded messages are total: every scalar field is present (default when absent on the
//   wire); a sub-message field is `undefined` when absent. Encoders take `Init<X>`, where every
//   field may be omitted (= default) and maps may be given as a Map or a plain object.
// - bytes fields decode to Uint8Array VIEWS into the input buffer (no copy). gRPC hands each
//   message to the deserializer in a buffer of its own, so this is safe there; copy a field
//   (`.slice()`) before keeping it if you own a buffer that you will reuse.
// - uint64/int64 fields are JS numbers. Values beyond Number.MAX_SAFE_INTEGER (2^53-1) in
//   magnitude are refused: PbEncodeError when encoding, PbDecodeError when decoding.
// - Enums are open (proto3): unknown values decode as their number. The constant objects
//   OpType, ReadConsistency and EventType name the known values.
// - Decoding never throws anything but PbDecodeError: lengths are checked against the bytes
//   that remain before anything is allocated, unknown fields of every wire type (groups
//   included) are skipped, a field repeated on the wire follows proto3 (last scalar wins,
//   sub-messages merge, repeated fields append), and invalid UTF-8 in a string is an error.
// - Packed encoding does not arise: the only repeated fields are bytes and messages.

// ---------------------------------------------------------------------------------------------
// Enums

/** rbdkv.OpType */
export const OpType = { CmdUnknown: 0, Get: 1, Put: 2, Delete: 3 } as const;
/** rbdkv.ReadConsistency (RCUnknown is served as Linearizable) */
export const ReadConsistency = { RCUnknown: 0, Serializable: 1, Linearizable: 2 } as const;
/** rbdkv.Event.EventType */
export const EventType = { EventUnknown: 0, Put: 1, Delete: 2 } as const;

// ---------------------------------------------------------------------------------------------
// Messages

/** google.protobuf.Duration */
export interface Duration {
  seconds: number; // int64
  nanos: number; // int32
}

export interface KV {
  key: Uint8Array;
  version: number; // uint64
  value: Uint8Array;
  meta: number; // uint32
  ttl: Duration | undefined;
}

export interface Command {
  op: number; // OpType
  rc: number; // ReadConsistency
  kv: KV | undefined;
}

export interface CommandResponse {
  key: Uint8Array;
  value: Uint8Array;
  meta: number; // uint32
  version: number; // uint64
}

export interface WatchRequest {
  watcherId: string;
  prefixes: Uint8Array[];
  eventCapacity: number; // uint64
  leaderRequired: boolean;
}

/** rbdkv.Event (named PbEvent so as not to clash with the DOM's Event). */
export interface PbEvent {
  type: number; // EventType
  key: Uint8Array;
  value: Uint8Array;
  meta: number; // uint32
  version: number; // uint64
  expireAt: number; // int64, Unix time in milliseconds; 0 = no expiry
  watcherId: string;
}

export interface WatchResponse {
  watcherId: string;
  event: PbEvent | undefined;
}

export interface LeaderRequest {}

export interface LeaderInfoResponse {
  leaderAddr: string;
  leaderId: string;
  term: number; // uint64
}

export interface WithSize {
  exactSize: boolean;
  withKeyCount: boolean;
}

export interface ClusterStatsRequest {
  withRaft: boolean;
  withFsm: WithSize | undefined;
}

export interface RaftMeta {
  meta: Map<string, string>;
}

export interface StorageStats {
  lsmSize: number; // int64
  vlogSize: number; // int64
  keysCount: number; // int64
}

export interface Peer {
  id: string;
  isLearner: boolean;
  isLeader: boolean;
  isLocal: boolean;
  raft: RaftMeta | undefined;
  fsm: StorageStats | undefined;
}

export interface ClusterStatsResponse {
  peers: Peer[];
}

export interface JoinRequest {
  id: string;
  addr: string;
  /** rbkv extension (field 3): the joiner's gRPC address; "" = use id. */
  grpcAddr: string;
}

export interface JoinResponse {
  leaderInfo: LeaderInfoResponse | undefined;
  /** rbkv extension (field 2): index of the configuration entry that added the node. */
  joinedAt: number;
}

/** rbkv extension. */
export interface RemoveMemberRequest {
  id: string;
}

export interface RemoveMemberResponse {
  leaderInfo: LeaderInfoResponse | undefined;
}

/** What an encoder accepts: every field may be omitted (= its default); maps may be objects. */
export type Init<T> = T extends Uint8Array
  ? Uint8Array
  : T extends Map<infer K, infer V>
    ? ReadonlyMap<K, V> | { readonly [key: string]: V }
    : T extends readonly (infer E)[]
      ? readonly Init<E>[]
      : T extends object
        ? { readonly [P in keyof T]?: Init<T[P]> }
        : T;

export type DurationInit = Init<Duration>;
export type KVInit = Init<KV>;
export type CommandInit = Init<Command>;
export type CommandResponseInit = Init<CommandResponse>;
export type WatchRequestInit = Init<WatchRequest>;
export type PbEventInit = Init<PbEvent>;
export type WatchResponseInit = Init<WatchResponse>;
export type LeaderRequestInit = Init<LeaderRequest>;
export type LeaderInfoResponseInit = Init<LeaderInfoResponse>;
export type WithSizeInit = Init<WithSize>;
export type ClusterStatsRequestInit = Init<ClusterStatsRequest>;
export type RaftMetaInit = Init<RaftMeta>;
export type StorageStatsInit = Init<StorageStats>;
export type PeerInit = Init<Peer>;
export type ClusterStatsResponseInit = Init<ClusterStatsResponse>;
export type JoinRequestInit = Init<JoinRequest>;
export type JoinResponseInit = Init<JoinResponse>;
export type RemoveMemberRequestInit = Init<RemoveMemberRequest>;
export type RemoveMemberResponseInit = Init<RemoveMemberResponse>;

// ---------------------------------------------------------------------------------------------
// Errors

/** The bytes are not a valid encoding of the message. The only error a decoder throws. */
export class PbDecodeError extends Error {
  /** Byte offset in the input at which the problem was found. */
  readonly offset: number;
  constructor(detail: string, offset: number, options?: { cause?: unknown }) {
    super(`protobuf decode: ${detail} at byte ${offset}`, options);
    this.name = "PbDecodeError";
    this.offset = offset;
  }
}

/** The message cannot be encoded (a value of the wrong type or out of its field's range). */
export class PbEncodeError extends Error {
  constructor(detail: string) {
    super(`protobuf encode: ${detail}`);
    this.name = "PbEncodeError";
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers for callers

/** A Duration of `ms` milliseconds (ms: a safe integer, may be negative). */
export function durationFromMs(ms: number): Duration {
  if (!Number.isSafeInteger(ms)) throw new PbEncodeError(`duration ${ms} ms is not a safe integer`);
  const seconds = Math.trunc(ms / 1000);
  const nanos = (ms - seconds * 1000) * 1_000_000;
  return { seconds: seconds === 0 ? 0 : seconds, nanos: nanos === 0 ? 0 : nanos }; // no -0
}

/** Milliseconds in a Duration, truncated toward zero. */
export function durationToMs(d: Duration): number {
  return d.seconds * 1000 + Math.trunc(d.nanos / 1_000_000);
}

// ---------------------------------------------------------------------------------------------
// Wire primitives: decoding

const TWO_32 = 4294967296;
const MAX_HI_SAFE = 0x1fffff; // high 32 bits of 2^53 - 1
const EMPTY = new Uint8Array(0);
const MAX_GROUP_DEPTH = 64;

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

class Reader {
  /** Current position. */
  p = 0;
  /** End of the message being decoded (nested messages narrow it). */
  e: number;
  constructor(readonly b: Uint8Array) {
    this.e = b.length;
  }
}

// High 32 bits of the varint last read by readVarint64 (the low 32 bits are its return value).
let hi32 = 0;

function truncated(r: Reader): PbDecodeError {
  return new PbDecodeError("truncated message", r.p);
}

/** Reads a varint of up to 10 bytes; returns its low 32 bits (unsigned) and leaves the high 32 in hi32. */
function readVarint64(r: Reader): number {
  const b = r.b;
  const e = r.e;
  let p = r.p;
  if (p >= e) throw truncated(r);
  let byte = b[p++];
  if (byte < 0x80) {
    r.p = p;
    hi32 = 0;
    return byte;
  }
  let lo = byte & 0x7f;
  for (let shift = 7; shift < 28; shift += 7) {
    if (p >= e) throw truncated(r);
    byte = b[p++];
    lo |= (byte & 0x7f) << shift;
    if (byte < 0x80) {
      r.p = p;
      hi32 = 0;
      return lo >>> 0;
    }
  }
  if (p >= e) throw truncated(r);
  byte = b[p++];
  lo = (lo | ((byte & 0x0f) << 28)) >>> 0;
  let hi = (byte & 0x7f) >> 4;
  if (byte < 0x80) {
    r.p = p;
    hi32 = hi;
    return lo;
  }
  for (let shift = 3; shift < 32; shift += 7) {
    if (p >= e) throw truncated(r);
    byte = b[p++];
    hi |= (byte & 0x7f) << shift; // bits past 64 are dropped, as protobuf does
    if (byte < 0x80) {
      r.p = p;
      hi32 = hi >>> 0;
      return lo;
    }
  }
  throw new PbDecodeError("varint longer than 10 bytes", r.p);
}

function readTag(r: Reader): number {
  const p = r.p;
  if (p < r.e) {
    const byte = r.b[p];
    if (byte < 0x80) {
      r.p = p + 1;
      return byte;
    }
  }
  const start = r.p;
  const tag = readVarint64(r);
  if (hi32 !== 0) throw new PbDecodeError("tag out of range", start);
  return tag;
}

/** A length prefix, checked against the bytes left in the current message. */
function readLength(r: Reader): number {
  const start = r.p;
  const len = readVarint64(r);
  if (hi32 !== 0 || len > r.e - r.p) {
    throw new PbDecodeError(`length ${hi32 * TWO_32 + len} overruns the ${r.e - r.p} bytes left`, start);
  }
  return len;
}

function readBytes(r: Reader): Uint8Array {
  const len = readLength(r);
  if (len === 0) return EMPTY;
  const p = r.p;
  r.p = p + len;
  return r.b.subarray(p, p + len);
}

function readString(r: Reader): string {
  const len = readLength(r);
  const b = r.b;
  const p = r.p;
  const end = p + len;
  if (len <= 64) {
    let s = "";
    let i = p;
    for (; i < end; i++) {
      const c = b[i];
      if (c >= 0x80) break;
      s += String.fromCharCode(c);
    }
    if (i === end) {
      r.p = end;
      return s;
    }
  }
  let s: string;
  try {
    s = utf8.decode(b.subarray(p, end));
  } catch (err) {
    throw new PbDecodeError("string field is not valid UTF-8", p, { cause: err });
  }
  r.p = end;
  return s;
}

function readUint64(r: Reader): number {
  const start = r.p;
  const lo = readVarint64(r);
  if (hi32 > MAX_HI_SAFE) throw new PbDecodeError("uint64 value exceeds 2^53-1", start);
  return hi32 * TWO_32 + lo;
}

function readInt64(r: Reader): number {
  const start = r.p;
  let lo = readVarint64(r);
  let hi = hi32;
  if ((hi & 0x80000000) === 0) {
    if (hi > MAX_HI_SAFE) throw new PbDecodeError("int64 value exceeds 2^53-1", start);
    return hi * TWO_32 + lo;
  }
  // Negative: the magnitude is the two's complement.
  lo = (~lo + 1) >>> 0;
  hi = (~hi + (lo === 0 ? 1 : 0)) >>> 0;
  if (hi > MAX_HI_SAFE) throw new PbDecodeError("int64 value below -(2^53-1)", start);
  return -(hi * TWO_32 + lo);
}

function readUint32(r: Reader): number {
  return readVarint64(r); // the low 32 bits, as protobuf's uint32 does with a longer varint
}

function readInt32(r: Reader): number {
  return readVarint64(r) | 0;
}

function readBool(r: Reader): boolean {
  const lo = readVarint64(r);
  return lo !== 0 || hi32 !== 0;
}

/** Skips the field whose tag has just been read (an unknown field, or a known one with an unexpected wire type). */
function skipField(r: Reader, tag: number, depth: number): void {
  const at = r.p;
  const field = tag >>> 3;
  if (field === 0) throw new PbDecodeError("field number 0", at);
  switch (tag & 7) {
    case 0: // varint
      readVarint64(r);
      return;
    case 1: // fixed64
      if (r.e - r.p < 8) throw truncated(r);
      r.p += 8;
      return;
    case 2: {
      // length-delimited
      const len = readLength(r);
      r.p += len;
      return;
    }
    case 3: {
      // start group: skip to the matching end group
      if (depth >= MAX_GROUP_DEPTH) throw new PbDecodeError("groups nested too deep", at);
      for (;;) {
        if (r.p >= r.e) throw new PbDecodeError("unterminated group", r.p);
        const t = readTag(r);
        if ((t & 7) === 4) {
          if (t >>> 3 !== field) throw new PbDecodeError("mismatched end group", r.p);
          return;
        }
        skipField(r, t, depth + 1);
      }
    }
    case 4:
      throw new PbDecodeError("end group without start group", at);
    case 5: // fixed32
      if (r.e - r.p < 4) throw truncated(r);
      r.p += 4;
      return;
    default:
      throw new PbDecodeError(`invalid wire type ${tag & 7}`, at);
  }
}

/** Decodes a length-delimited sub-message into `m` (merging, as protobuf does). */
function readMessage<T>(r: Reader, m: T, decode: (r: Reader, m: T) => void): T {
  const len = readLength(r);
  const outer = r.e;
  r.e = r.p + len;
  decode(r, m);
  r.e = outer;
  return m;
}

function decodeTop<T>(bytes: Uint8Array, m: T, decode: (r: Reader, m: T) => void): T {
  if (!(bytes instanceof Uint8Array)) throw new PbDecodeError("input is not a Uint8Array", 0);
  const r = new Reader(bytes);
  try {
    decode(r, m);
  } catch (err) {
    if (err instanceof PbDecodeError) throw err;
    throw new PbDecodeError(`unexpected ${String(err)}`, r.p, { cause: err });
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
// Wire primitives: encoding

class Writer {
  p = 0;
  constructor(readonly b: Buffer) {}
}

function varintSize(n: number): number {
  // n: a non-negative safe integer
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : n < 0x800000000 ? 5 : n < 0x40000000000 ? 6 : n < 0x2000000000000 ? 7 : 8;
}

/** Size of a signed (int32/int64/enum) varint: negatives take 10 bytes. */
function signedSize(n: number): number {
  return n < 0 ? 10 : varintSize(n);
}

function writeVarint(w: Writer, n: number): void {
  const b = w.b;
  let p = w.p;
  while (n > 0x7fffffff) {
    b[p++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  while (n > 0x7f) {
    b[p++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  b[p++] = n;
  w.p = p;
}

/** int32/int64/enum: negatives as the 10-byte varint of their 64-bit two's complement. */
function writeSigned(w: Writer, n: number): void {
  if (n >= 0) {
    writeVarint(w, n);
    return;
  }
  const m = -n;
  let lo = m % TWO_32;
  let hi = (m - lo) / TWO_32;
  lo = (~lo + 1) >>> 0;
  hi = (~hi + (lo === 0 ? 1 : 0)) >>> 0;
  const b = w.b;
  let p = w.p;
  while (hi !== 0 || lo > 0x7f) {
    b[p++] = (lo & 0x7f) | 0x80;
    lo = ((lo >>> 7) | (hi << 25)) >>> 0;
    hi >>>= 7;
  }
  b[p++] = lo;
  w.p = p;
}

function writeBytes(w: Writer, v: Uint8Array): void {
  writeVarint(w, v.length);
  w.b.set(v, w.p);
  w.p += v.length;
}

function utf8Length(s: string): number {
  const n = s.length;
  let len = n;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) len += 1;
    else if ((c & 0xfc00) === 0xd800 && i + 1 < n && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      len += 2; // a surrogate pair: 2 UTF-16 units, 4 bytes
      i++;
    } else len += 2; // 3 bytes (a lone surrogate becomes U+FFFD, as TextEncoder does)
  }
  return len;
}

function writeString(w: Writer, s: string, byteLen: number): void {
  writeVarint(w, byteLen);
  const b = w.b;
  let p = w.p;
  const n = s.length;
  if (byteLen === n) {
    for (let i = 0; i < n; i++) b[p++] = s.charCodeAt(i);
  } else {
    for (let i = 0; i < n; i++) {
      let c = s.charCodeAt(i);
      if (c < 0x80) {
        b[p++] = c;
      } else if (c < 0x800) {
        b[p++] = 0xc0 | (c >> 6);
        b[p++] = 0x80 | (c & 0x3f);
      } else if ((c & 0xfc00) === 0xd800 && i + 1 < n && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
        c = 0x10000 + ((c & 0x3ff) << 10) + (s.charCodeAt(++i) & 0x3ff);
        b[p++] = 0xf0 | (c >> 18);
        b[p++] = 0x80 | ((c >> 12) & 0x3f);
        b[p++] = 0x80 | ((c >> 6) & 0x3f);
        b[p++] = 0x80 | (c & 0x3f);
      } else {
        if ((c & 0xf800) === 0xd800) c = 0xfffd; // lone surrogate
        b[p++] = 0xe0 | (c >> 12);
        b[p++] = 0x80 | ((c >> 6) & 0x3f);
        b[p++] = 0x80 | (c & 0x3f);
      }
    }
  }
  w.p = p;
}

// Field value checks, run while sizing (the write pass trusts them). `undefined`/`null` = default.

function u64(v: number | undefined, field: string): number {
  if (v == null) return 0;
  if (!Number.isSafeInteger(v) || v < 0) throw new PbEncodeError(`${field} = ${String(v)} is not a uint64 in [0, 2^53-1]`);
  return v;
}

function i64(v: number | undefined, field: string): number {
  if (v == null) return 0;
  if (!Number.isSafeInteger(v)) throw new PbEncodeError(`${field} = ${String(v)} is not an int64 in [-(2^53-1), 2^53-1]`);
  return v;
}

function u32(v: number | undefined, field: string): number {
  if (v == null) return 0;
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new PbEncodeError(`${field} = ${String(v)} is not a uint32`);
  return v;
}

function i32(v: number | undefined, field: string): number {
  if (v == null) return 0;
  if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) throw new PbEncodeError(`${field} = ${String(v)} is not an int32`);
  return v;
}

/** Size of a bytes field with its tag (1-byte tags only here), 0 when empty. */
function bytesField(v: Uint8Array | undefined, field: string): number {
  if (v == null) return 0;
  if (!(v instanceof Uint8Array)) throw new PbEncodeError(`${field} is not a Uint8Array`);
  const n = v.length;
  return n === 0 ? 0 : 1 + varintSize(n) + n;
}

function str(v: string | undefined, field: string): string {
  if (v == null) return "";
  if (typeof v !== "string") throw new PbEncodeError(`${field} is not a string`);
  return v;
}

/** Size of a string field with its tag, 0 when empty. */
function stringField(v: string | undefined, field: string): number {
  const s = str(v, field);
  if (s.length === 0) return 0;
  const n = utf8Length(s);
  return 1 + varintSize(n) + n;
}

/** Size of a length-delimited field holding `n` bytes, with its 1-byte tag. */
function lenField(n: number): number {
  return 1 + varintSize(n) + n;
}

function encodeTop<M>(m: M, size: (m: M) => number, write: (w: Writer, m: M) => void): Buffer {
  if (m === null || typeof m !== "object") throw new PbEncodeError("message is not an object");
  const n = size(m);
  const w = new Writer(Buffer.allocUnsafe(n));
  write(w, m);
  if (w.p !== n) throw new PbEncodeError(`message changed while being encoded (${w.p} of ${n} bytes)`);
  return w.b;
}

// Writing a field whose value was checked while sizing: these skip defaults like the size pass.

function wBytes(w: Writer, tag: number, v: Uint8Array | undefined): void {
  if (v != null && v.length !== 0) {
    w.b[w.p++] = tag;
    writeBytes(w, v);
  }
}

function wString(w: Writer, tag: number, v: string | undefined): void {
  if (v != null && v.length !== 0) {
    w.b[w.p++] = tag;
    writeString(w, v, utf8Length(v));
  }
}

function wUnsigned(w: Writer, tag: number, v: number | undefined): void {
  if (v != null && v !== 0) {
    w.b[w.p++] = tag;
    writeVarint(w, v);
  }
}

function wSigned(w: Writer, tag: number, v: number | undefined): void {
  if (v != null && v !== 0) {
    w.b[w.p++] = tag;
    writeSigned(w, v);
  }
}

function wBool(w: Writer, tag: number, v: boolean | undefined): void {
  if (v) {
    w.b[w.p++] = tag;
    w.b[w.p++] = 1;
  }
}

/** Size of an unsigned varint field with its tag, 0 when default. */
const uField = (v: number): number => (v === 0 ? 0 : 1 + varintSize(v));
/** Size of a signed varint field with its tag, 0 when default. */
const sField = (v: number): number => (v === 0 ? 0 : 1 + signedSize(v));

// ---------------------------------------------------------------------------------------------
// google.protobuf.Duration { int64 seconds = 1; int32 nanos = 2; }

function sizeDuration(m: DurationInit): number {
  return sField(i64(m.seconds, "Duration.seconds")) + sField(i32(m.nanos, "Duration.nanos"));
}
function writeDuration(w: Writer, m: DurationInit): void {
  wSigned(w, 0x08, m.seconds);
  wSigned(w, 0x10, m.nanos);
}
function newDuration(): Duration {
  return { seconds: 0, nanos: 0 };
}
function readDuration(r: Reader, m: Duration): void {
  while (r.p < r.e) {
    const tag = readTag(r);
    switch (tag) {
      case 0x08:
        m.seconds = readInt64(r);
        break;
      case 0x10:
        m.nanos = readInt32(r);
        break;
      default:
        skipField(r, tag, 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// KV { bytes key = 1; uint64 version = 2; bytes value = 3; uint32 meta = 4; Duration ttl = 5; }

function sizeKV(m: KVInit): number {
  let n =
    bytesField(m.key, "KV.key") +
    uField(u64(m.version, "KV.version")) +
    bytesField(m.value, "KV.value") +
    uField(u32(m.meta, "KV.meta"));
  if (m.ttl != null) n += lenField(sizeDuration(m.ttl));
  return n;
}
function writeKV(w: Writer, m: KVInit): void {
  wBytes(w, 0x0a, m.key);
  wUnsigned(w, 0x10, m.version);
  wBytes(w, 0x1a, m.value);
  wUnsigned(w, 0x20, m.meta);
  if (m.ttl != null) {
    w.b[w.p++] = 0x2a;
    writeVarint(w, sizeDuration(m.ttl));
    writeDuration(w, m.ttl);
  }
}
function newKV(): KV {
  return { key: EMPTY, version: 0, value: EMPTY, meta: 0, ttl: undefined };
}
function readKV(r: Reader, m: KV): void {
  while (r.p < r.e) {
    const tag = readTag(r);
    switch (tag) {
      case 0x0a:
        m.key = readBytes(r);
        break;
      case 0x10:
        m.version = readUint64(r);
        break;
      case 0x1a:
        m.value = readBytes(r);
        break;
      case 0x20:
        m.meta = readUint32(r);
        break;
      case 0x2a:
        m.ttl = readMessage(r, m.ttl ?? newDuration(), readDuration);
        break;
      default:
        skipField(r, tag, 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Command { OpType op = 1; ReadConsistency rc = 2; KV kv = 3; }

function sizeCommand(m: CommandInit): number {
  let n = sField(i32(m.op, "Command.op")) + sField(i32(m.rc, "Command.rc"));
  if (m.kv != null) n += lenField(sizeKV(m.kv));
  return n;
}
function writeCommand(w: Writer, m: CommandInit): void {
  wSigned(w, 0x08, m.op);
  wSigned(w, 0x10, m.rc);
  if (m.kv != null) {
    w.b[w.p++] = 0x1a;
    writeVarint(w, sizeKV(m.kv));
    writeKV(w, m.kv);
  }
}
function newCommand(): Command {
  return { op: 0, rc: 0, kv: undefined };
}
function readCommand(r: Reader, m: Command): void {
  while (r.p < r.e) {
    const tag = readTag(r);
    switch (tag) {
      case 0x08:
        m.op = readInt32(r);
        break;
      case 0x10:
        m.rc = readInt32(r);
        break;
      case 0x1a:
        m.kv = readMessage(r, m.kv ?? newKV(), readKV);
        break;
      default:
        skipField(r, tag, 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// CommandResponse { bytes key = 1; bytes value = 2; uint32 meta = 3; uint64 version = 4; }

function sizeCommandResponse(m: CommandResponseInit): number {
  return (
    bytesField(m.key, "CommandResponse.key") +
    bytesField(m.value, "CommandResponse.value") +
    uField(u32(m.meta, "CommandResponse.meta")) +
    uField(u64(m.version, "CommandResponse.version"))
  );
}
function writeCommandResponse(w: Writer, m: CommandResponseInit): void {
  wBytes(w, 0x0a, m.key);
  wBytes(w, 0x12, m.value);
  wUnsigned(w, 0x18, m.meta);
  wUnsigned(w, 0x20, m.version);
}
function newCommandResponse(): CommandResponse {
  return { key: EMPTY, value: EMPTY, meta: 0, version: 0 };
}
function readCommandResponse(r: Reader, m: CommandResponse): void {
  while (r.p < r.e) {
    const tag = readTag(r);
    switch (tag) {
      case 0x0a:
        m.key = readBytes(r);
        break;
      case 0x12:
        m.value = readBytes(r);
        break;
      case 0x18:
        m.meta = readUint32(r);
        break;
      case 0x20:
        m.version = readUint64(r);
        break;
      default:
        skipField(r, tag, 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// WatchRequest { string watcher_id = 1; repeated bytes prefixes = 2; uint64 event_capacity = 3;
//                bool leader_required = 4; }

function sizeWatchRequest(m: WatchRequestInit): number {
  let n = stringField(m.watcherId, "WatchRequest.watcherId");
  const prefixes = m.prefixes;
  if (prefixes != null) {
    if (!Array.isArray(prefixes)) throw new PbEncodeError("WatchRequest.prefixes is not an array");
    for (const p of prefixes) {
      if (!(p instanceof Uint8Array)) throw new PbEncodeError("WatchRequest.prefixes element is not a Uint8Array");
      n += lenField(p.length); // repeated: empty elements are written too
    }
  }
  n += uField(u64(m.eventCapacity, "WatchRequest.eventCapacity"));
  if (m.leaderRequired) n += 2;
  return n;
}
function writeWatchRequest(w: Writer, m: WatchRequestInit): void {
  wString(w, 0x0a, m.watcherId);
  if (m.prefixes != null) {
    for (const p of m.prefixes) {
      w.b[w.p++] = 0x12;
      writeBytes(w, p);
    }
  }
  wUnsigned(w, 0x18, m.eventCapacity);
  wBool(w, 0x20, m.leaderRequired);
}
function newWatchRequest(): WatchRequest {
  return { watcherId: "", prefixes: [], eventCapacity: 0, leaderRequired: false };
}
function readWatchRequest(r: Reader, m: WatchRequest): void {
  while (r.p < r.e) {
    const tag = readTag(r);
    switch (tag) {
      case 0x0a:
        m.watcherId = readString(r);
        break;
      case 0x12:
        m.prefixes.push(readBytes(r));
        break;
      case 0x18:
        m.eventCapacity = readUint64(r);
        break;
      case 0x20:
        m.leaderRequired = readBool(r);
        break;
      default:
        skipField(r, tag, 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Event { EventType type = 1; bytes key = 2; bytes value = 3; uint32 meta = 4; uint64 version = 5;
//         int64 expire_at = 6; string watcher_id = 7; }

function sizePbEvent(m: PbEventInit): number {
  return (
    sField(i32(m.type, "Event.type")) +
    bytesField(m.key, "Event.key") +
    bytesField(m.value, "Event.value") +
    uField(u32(m.meta, "Event.meta")) +
    uField(u64(m.version, "Event.version")) +
    sField(i64(m.expireAt, "Event.expireAt")) +
    stringField(m.watcherId, "Event.watcherId")
  );
}
function writePbEvent(w: Writer, m: PbEventInit): void {
  wSigned(w, 0x08, m.type);
  wBytes(w, 0x12, m.key);
  wBytes(w, 0x1a, m.value);
  wUnsigned(w, 0x20, m.meta);
  wUnsigned(w, 0x28, m.version);
  wSigned(w, 0x30, m.expireAt);
  wString(w, 0x3a, m.watcherId);
}
function newPbEvent(): PbEvent {
  return { type: 0, key: EMPTY, value: EMPTY, meta: 0, version: 0, expireAt: 0, watcherId: "" };
}
function readPbEvent(r: Reader, m: PbEvent): void {
  while (r.p < r.e) {
    const tag = readTag(r);
    switch (tag) {
      case 0x08:
        m.type = readInt32(r);
        break;
      case 0x12:
        m.key = readBytes(r);
        break;
      case 0x1a:
        m.value = readBytes(r);
        break;
      case 0x20:
        m.meta = readUint32(r);
        break;
      case 0x28:
        m.version = readUint64(r);
        break;
      case 0x30:
        m.expireAt = readInt64(r);
        break;
      case 0x3a:
        m.watcherId = readString(r);
        break;
      default:
        skipField(r, tag, 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// WatchResponse { string watcher_id = 1; Event event = 2; }

function sizeWatchResponse(m: WatchResponseInit): number {
  let n = stringField(m.watcherId, "WatchResponse.watcherId");
  if (m.event != null) n += lenField(sizePbEvent(m.event));
  return n;
}
function writeWatchResponse(w: Writer, m: WatchResponseInit): void {
  wString(w, 0x0a, m.watcherId);
  if (m.event != null) {
    w.b[w.p++] = 0x12;
    writeVarint(w, sizePbEvent(m.event));
    writePbEvent(w, m.event);
  }
}
function newWatchResponse(): WatchResponse {
  return { watcherId: "", event: undefined };
}
function readWatchResponse(r: Reader, m: WatchResponse): void {
  while (r.p < r.e) {
    const tag = readTag(r);
    switch (tag) {
      case 0x0a:
        m.watcherId = readString(r);
        break;
      case 0x12:
        m.event = readMessage(r, m.event ?? newPbEvent(), readPbEvent);
        break;
      default:
        skipField(r, tag, 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// LeaderRequest {}

function sizeLeaderRequest(_m: LeaderRequestInit): number {
  return 0;
}
function writeLeaderRequest(_w: Writer, _m: LeaderRequestInit): void {}
function readLeaderRequest(r: Reader, _m: LeaderRequest): void {
  while (r.p < r.e) skipField(r, readTag(r), 0);
}

// ---------------------------------------------------------------------------------------------
// LeaderInfoResponse { string leader_addr = 1; string leader_id = 2; uint64 term = 3; }

function sizeLeaderInfoResponse(m: LeaderInfoResponseInit): number {
  return (
    stringField(m.leaderAddr, "LeaderInfoResponse.leaderAddr") +
    stringField(m.leaderId, "LeaderInfoResponse.leaderId") +
    uField(u64(m.term, "LeaderInfoResponse.term"))
  );
}
function writeLeaderInfoResponse(w: Writer, m: LeaderInfoResponseInit): void {
  wString(w, 0x0a, m.leaderAddr);
  wString(w, 0x12, m.leaderId);
  wUnsigned(w, 0x18, m.term);
}
function newLeaderInfoResponse(): LeaderInfoResponse {
  return { leaderAddr: "", leaderId: "", term: 0 };
}
function readLeaderInfoResponse(r: Reader, m: LeaderInfoResponse): void {
  while (r.p < r.e) {
    const tag = readTag(r);
    switch (tag) {
      case 0x0a:
        m.leaderAddr = readString(r);
        break;
      case 0x12:
        m.leaderId = readString(r);
        break;
      case 0x18:
        m.term = readUint64(r);
        break;
      default:
        skipField(r, tag, 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// WithSize { bool exact_size = 1; bool with_key_count = 2; }

function sizeWithSize(m: WithSizeInit): number {
  return (m.exactSize ? 2 : 0) + (m.withKeyCount ? 2 : 0);
}
function writeWithSize(w: Writer, m: WithSizeInit): void {
  wBool(w, 0x08, m.exactSize);
  wBool(w, 0x10, m.withKeyCount);
}
function newWithSize(): WithSize {
  return { exactSize: false, withKeyCount: false };
}
function readWithSize(r: Reader, m: WithSize): void {
  while (r.p < r.e) {
    const tag = readTag(r);
    switch (tag) {
      case 0x08:
        m.exactSize = readBool(r);
        break;
      case 0x10:
        m.withKeyCount = readBool(r);
        break;
      default:
        skipField(r, tag, 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ClusterStatsRequest { bool with_raft = 1; WithSize with_fsm = 2; }

function sizeClusterStatsRequest(m: ClusterStatsRequestInit): number {
  let n = m.withRaft ? 2 : 0;
  if (m.withFsm != null) n += lenField(sizeWithSize(m.withFsm));
  return n;
}
function writeClusterStatsRequest(w: Writer, m: ClusterStatsRequestInit): void {
  wBool(w, 0x08, m.withRaft);
  if (m.withFsm != null) {
    w.b[w.p++] = 0x12;
    writeVarint(w, sizeWithSize(m.withFsm));
    writeWithSize(w, m.withFsm);
  }
}
function newClusterStatsRequest(): ClusterStatsRequest {
  return { withRaft: false, withFsm: undefined };
}
function readClusterStatsRequest(r: Reader, m: ClusterStatsRequest): void {
  while (r.p < r.e) {
    const tag = readTag(r);
    switch (tag) {
      case 0x08:
        m.withRaft = readBool(r);
        break;
      case 0x12:
        m.withFsm = readMessage(r, m.withFsm ?? newWithSize(), readWithSize);
        break;
      default:
        skipField(r, tag, 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// RaftMeta { map<string, string> meta = 5; }
// A map field is a repeated entry message { string key = 1; string value = 2; }. Entries are
// written in the map's iteration order, each with both key and value even when empty (as
// protoc does); on decoding, a later entry for the same key wins.

type StringMapInit = ReadonlyMap<string, string> | { readonly [key: string]: string };

function mapEntries(v: StringMapInit | undefined, field: string): Iterable<readonly [string, string]> {
  if (v == null) return [];
  if (v instanceof Map) return v;
  if (typeof v !== "object") throw new PbEncodeError(`${field} is not a Map or an object`);
  return Object.entries(v as { readonly [key: string]: string });
}

function mapEntrySize(k: string, v: string, field: string): number {
  if (typeof k !== "string" || typeof v !== "string") throw new PbEncodeError(`${field} has a non-string key or value`);
  const kl = utf8Length(k);
  const vl = utf8Length(v);
  return 2 + varintSize(kl) + kl + varintSize(vl) + vl;
}

function sizeRaftMeta(m: RaftMetaInit): number {
  let n = 0;
  for (const [k, v] of mapEntries(m.meta, "RaftMeta.meta")) n += lenField(mapEntrySize(k, v, "RaftMeta.meta"));
  return n;
}
function writeRaftMeta(w: Writer, m: RaftMetaInit): void {
  for (const [k, v] of mapEntries(m.meta, "RaftMeta.meta")) {
    const kl = utf8Length(k);
    const vl = utf8Length(v);
    w.b[w.p++] = 0x2a;
    writeVarint(w, 2 + varintSize(kl) + kl + varintSize(vl) + vl);
    w.b[w.p++] = 0x0a;
    writeString(w, k, kl);
    w.b[w.p++] = 0x12;
    writeString(w, v, vl);
  }
}
function newRaftMeta(): RaftMeta {
  return { meta: new Map() };
}
function readStringMapEntry(r: Reader, into: Map<string, string>): void {
  const len = readLength(r);
  const outer = r.e;
  r.e = r.p + len;
  let k = "";
  let v = "";
  while (r.p < r.e) {
    const tag = readTag(r);
    switch (tag) {
      case 0x0a:
        k = readString(r);
        break;
      case 0x12:
        v = readString(r);
        break;
      default:
        skipField(r, tag, 0);
    }
  }
  r.e = outer;
  into.set(k, v);
}
function readRaftMeta(r: Reader, m: RaftMeta): void {
  while (r.p < r.e) {
    const tag = readTag(r);
    if (tag === 0x2a) readStringMapEntry(r, m.meta);
    else skipField(r, tag, 0);
  }
}

// ---------------------------------------------------------------------------------------------
// StorageStats { int64 lsm_size = 1; int64 vlog_size = 2; int64 keys_count = 3; }

function sizeStorageStats(m: StorageStatsInit): number {
  return (
    sField(i64(m.lsmSize, "StorageStats.lsmSize")) +
    sField(i64(m.vlogSize, "StorageStats.vlogSize")) +
    sField(i64(m.keysCount, "StorageStats.keysCount"))
  );
}
function writeStorageStats(w: Writer, m: StorageStatsInit): void {
  wSigned(w, 0x08, m.lsmSize);
  wSigned(w, 0x10, m.vlogSize);
  wSigned(w, 0x18, m.keysCount);
}
function newStorageStats(): StorageStats {
  return { lsmSize: 0, vlogSize: 0, keysCount: 0 };
}
function readStorageStats(r: Reader, m: StorageStats): void {
  while (r.p < r.e) {
    const tag = readTag(r);
    switch (tag) {
      case 0x08:
        m.lsmSize = readInt64(r);
        break;
      case 0x10:
        m.vlogSize = readInt64(r);
        break;
      case 0x18:
        m.keysCount = readInt64(r);
        break;
      default:
        skipField(r, tag, 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Peer { string id = 1; bool is_learner = 2; bool is_leader = 3; bool is_local = 4;
//        RaftMeta raft = 5; StorageStats fsm = 6; }

function sizePeer(m: PeerInit): number {
  let n = stringField(m.id, "Peer.id") + (m.isLearner ? 2 : 0) + (m.isLeader ? 2 : 0) + (m.isLocal ? 2 : 0);
  if (m.raft != null) n += lenField(sizeRaftMeta(m.raft));
  if (m.fsm != null) n += lenField(sizeStorageStats(m.fsm));
  return n;
}
function writePeer(w: Writer, m: PeerInit): void {
  wString(w, 0x0a, m.id);
  wBool(w, 0x10, m.isLearner);
  wBool(w, 0x18, m.isLeader);
  wBool(w, 0x20, m.isLocal);
  if (m.raft != null) {
    w.b[w.p++] = 0x2a;
    writeVarint(w, sizeRaftMeta(m.raft));
    writeRaftMeta(w, m.raft);
  }
  if (m.fsm != null) {
    w.b[w.p++] = 0x32;
    writeVarint(w, sizeStorageStats(m.fsm));
    writeStorageStats(w, m.fsm);
  }
}
function newPeer(): Peer {
  return { id: "", isLearner: false, isLeader: false, isLocal: false, raft: undefined, fsm: undefined };
}
function readPeer(r: Reader, m: Peer): void {
  while (r.p < r.e) {
    const tag = readTag(r);
    switch (tag) {
      case 0x0a:
        m.id = readString(r);
        break;
      case 0x10:
        m.isLearner = readBool(r);
        break;
      case 0x18:
        m.isLeader = readBool(r);
        break;
      case 0x20:
        m.isLocal = readBool(r);
        break;
      case 0x2a:
        m.raft = readMessage(r, m.raft ?? newRaftMeta(), readRaftMeta);
        break;
      case 0x32:
        m.fsm = readMessage(r, m.fsm ?? newStorageStats(), readStorageStats);
        break;
      default:
        skipField(r, tag, 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ClusterStatsResponse { repeated Peer peers = 1; }

function sizeClusterStatsResponse(m: ClusterStatsResponseInit): number {
  let n = 0;
  const peers = m.peers;
  if (peers != null) {
    if (!Array.isArray(peers)) throw new PbEncodeError("ClusterStatsResponse.peers is not an array");
    for (const p of peers) {
      if (p === null || typeof p !== "object") throw new PbEncodeError("ClusterStatsResponse.peers element is not an object");
      n += lenField(sizePeer(p));
    }
  }
  return n;
}
function writeClusterStatsResponse(w: Writer, m: ClusterStatsResponseInit): void {
  if (m.peers != null) {
    for (const p of m.peers) {
      w.b[w.p++] = 0x0a;
      writeVarint(w, sizePeer(p));
      writePeer(w, p);
    }
  }
}
function newClusterStatsResponse(): ClusterStatsResponse {
  return { peers: [] };
}
function readClusterStatsResponse(r: Reader, m: ClusterStatsResponse): void {
  while (r.p < r.e) {
    const tag = readTag(r);
    if (tag === 0x0a) m.peers.push(readMessage(r, newPeer(), readPeer));
    else skipField(r, tag, 0);
  }
}

// ---------------------------------------------------------------------------------------------
// JoinRequest { string id = 1; string addr = 2; string grpc_addr = 3 (rbkv extension); }

function sizeJoinRequest(m: JoinRequestInit): number {
  return stringField(m.id, "JoinRequest.id") + stringField(m.addr, "JoinRequest.addr") + stringField(m.grpcAddr, "JoinRequest.grpcAddr");
}
function writeJoinRequest(w: Writer, m: JoinRequestInit): void {
  wString(w, 0x0a, m.id);
  wString(w, 0x12, m.addr);
  wString(w, 0x1a, m.grpcAddr);
}
function newJoinRequest(): JoinRequest {
  return { id: "", addr: "", grpcAddr: "" };
}
function readJoinRequest(r: Reader, m: JoinRequest): void {
  while (r.p < r.e) {
    const tag = readTag(r);
    switch (tag) {
      case 0x0a:
        m.id = readString(r);
        break;
      case 0x12:
        m.addr = readString(r);
        break;
      case 0x1a:
        m.grpcAddr = readString(r);
        break;
      default:
        skipField(r, tag, 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// JoinResponse { LeaderInfoResponse leader_info = 1; uint64 joined_at = 2 (rbkv extension); }

function sizeJoinResponse(m: JoinResponseInit): number {
  return sizeRemoveMemberResponse(m) + uField(u64(m.joinedAt, "JoinResponse.joinedAt"));
}
function writeJoinResponse(w: Writer, m: JoinResponseInit): void {
  writeRemoveMemberResponse(w, m);
  wUnsigned(w, 0x10, m.joinedAt);
}
function newJoinResponse(): JoinResponse {
  return { leaderInfo: undefined, joinedAt: 0 };
}
function readJoinResponse(r: Reader, m: JoinResponse): void {
  while (r.p < r.e) {
    const tag = readTag(r);
    if (tag === 0x0a) m.leaderInfo = readMessage(r, m.leaderInfo ?? newLeaderInfoResponse(), readLeaderInfoResponse);
    else if (tag === 0x10) m.joinedAt = readUint64(r);
    else skipField(r, tag, 0);
  }
}

// ---------------------------------------------------------------------------------------------
// RemoveMemberRequest { string id = 1; }   RemoveMemberResponse { LeaderInfoResponse leader_info = 1; }
// (rbkv extensions)

function sizeRemoveMemberRequest(m: RemoveMemberRequestInit): number {
  return stringField(m.id, "RemoveMemberRequest.id");
}
function writeRemoveMemberRequest(w: Writer, m: RemoveMemberRequestInit): void {
  wString(w, 0x0a, m.id);
}
function readRemoveMemberRequest(r: Reader, m: RemoveMemberRequest): void {
  while (r.p < r.e) {
    const tag = readTag(r);
    if (tag === 0x0a) m.id = readString(r);
    else skipField(r, tag, 0);
  }
}
function sizeRemoveMemberResponse(m: RemoveMemberResponseInit): number {
  return m.leaderInfo != null ? lenField(sizeLeaderInfoResponse(m.leaderInfo)) : 0;
}
function writeRemoveMemberResponse(w: Writer, m: RemoveMemberResponseInit): void {
  if (m.leaderInfo != null) {
    w.b[w.p++] = 0x0a;
    writeVarint(w, sizeLeaderInfoResponse(m.leaderInfo));
    writeLeaderInfoResponse(w, m.leaderInfo);
  }
}
function readRemoveMemberResponse(r: Reader, m: RemoveMemberResponse): void {
  while (r.p < r.e) {
    const tag = readTag(r);
    if (tag === 0x0a) m.leaderInfo = readMessage(r, m.leaderInfo ?? newLeaderInfoResponse(), readLeaderInfoResponse);
    else skipField(r, tag, 0);
  }
}

// ---------------------------------------------------------------------------------------------
// Public encoders and decoders. Encoders return a Buffer (a Uint8Array) of exactly the
// message's size; it is what gRPC's serializers must return.

export const encodeDuration = (m: DurationInit): Buffer => encodeTop(m, sizeDuration, writeDuration);
export const decodeDuration = (b: Uint8Array): Duration => decodeTop(b, newDuration(), readDuration);

export const encodeKV = (m: KVInit): Buffer => encodeTop(m, sizeKV, writeKV);
export const decodeKV = (b: Uint8Array): KV => decodeTop(b, newKV(), readKV);

export const encodeCommand = (m: CommandInit): Buffer => encodeTop(m, sizeCommand, writeCommand);
export const decodeCommand = (b: Uint8Array): Command => decodeTop(b, newCommand(), readCommand);

export const encodeCommandResponse = (m: CommandResponseInit): Buffer => encodeTop(m, sizeCommandResponse, writeCommandResponse);
export const decodeCommandResponse = (b: Uint8Array): CommandResponse => decodeTop(b, newCommandResponse(), readCommandResponse);

export const encodeWatchRequest = (m: WatchRequestInit): Buffer => encodeTop(m, sizeWatchRequest, writeWatchRequest);
export const decodeWatchRequest = (b: Uint8Array): WatchRequest => decodeTop(b, newWatchRequest(), readWatchRequest);

export const encodePbEvent = (m: PbEventInit): Buffer => encodeTop(m, sizePbEvent, writePbEvent);
export const decodePbEvent = (b: Uint8Array): PbEvent => decodeTop(b, newPbEvent(), readPbEvent);

export const encodeWatchResponse = (m: WatchResponseInit): Buffer => encodeTop(m, sizeWatchResponse, writeWatchResponse);
export const decodeWatchResponse = (b: Uint8Array): WatchResponse => decodeTop(b, newWatchResponse(), readWatchResponse);

export const encodeLeaderRequest = (m: LeaderRequestInit): Buffer => encodeTop(m, sizeLeaderRequest, writeLeaderRequest);
export const decodeLeaderRequest = (b: Uint8Array): LeaderRequest => decodeTop<LeaderRequest>(b, {}, readLeaderRequest);

export const encodeLeaderInfoResponse = (m: LeaderInfoResponseInit): Buffer => encodeTop(m, sizeLeaderInfoResponse, writeLeaderInfoResponse);
export const decodeLeaderInfoResponse = (b: Uint8Array): LeaderInfoResponse => decodeTop(b, newLeaderInfoResponse(), readLeaderInfoResponse);

export const encodeWithSize = (m: WithSizeInit): Buffer => encodeTop(m, sizeWithSize, writeWithSize);
export const decodeWithSize = (b: Uint8Array): WithSize => decodeTop(b, newWithSize(), readWithSize);

export const encodeClusterStatsRequest = (m: ClusterStatsRequestInit): Buffer => encodeTop(m, sizeClusterStatsRequest, writeClusterStatsRequest);
export const decodeClusterStatsRequest = (b: Uint8Array): ClusterStatsRequest => decodeTop(b, newClusterStatsRequest(), readClusterStatsRequest);

export const encodeRaftMeta = (m: RaftMetaInit): Buffer => encodeTop(m, sizeRaftMeta, writeRaftMeta);
export const decodeRaftMeta = (b: Uint8Array): RaftMeta => decodeTop(b, newRaftMeta(), readRaftMeta);

export const encodeStorageStats = (m: StorageStatsInit): Buffer => encodeTop(m, sizeStorageStats, writeStorageStats);
export const decodeStorageStats = (b: Uint8Array): StorageStats => decodeTop(b, newStorageStats(), readStorageStats);

export const encodePeer = (m: PeerInit): Buffer => encodeTop(m, sizePeer, writePeer);
export const decodePeer = (b: Uint8Array): Peer => decodeTop(b, newPeer(), readPeer);

export const encodeClusterStatsResponse = (m: ClusterStatsResponseInit): Buffer => encodeTop(m, sizeClusterStatsResponse, writeClusterStatsResponse);
export const decodeClusterStatsResponse = (b: Uint8Array): ClusterStatsResponse => decodeTop(b, newClusterStatsResponse(), readClusterStatsResponse);

export const encodeJoinRequest = (m: JoinRequestInit): Buffer => encodeTop(m, sizeJoinRequest, writeJoinRequest);
export const decodeJoinRequest = (b: Uint8Array): JoinRequest => decodeTop(b, newJoinRequest(), readJoinRequest);

export const encodeJoinResponse = (m: JoinResponseInit): Buffer => encodeTop(m, sizeJoinResponse, writeJoinResponse);
export const decodeJoinResponse = (b: Uint8Array): JoinResponse => decodeTop(b, newJoinResponse(), readJoinResponse);

export const encodeRemoveMemberRequest = (m: RemoveMemberRequestInit): Buffer => encodeTop(m, sizeRemoveMemberRequest, writeRemoveMemberRequest);
export const decodeRemoveMemberRequest = (b: Uint8Array): RemoveMemberRequest => decodeTop<RemoveMemberRequest>(b, { id: "" }, readRemoveMemberRequest);

export const encodeRemoveMemberResponse = (m: RemoveMemberResponseInit): Buffer => encodeTop(m, sizeRemoveMemberResponse, writeRemoveMemberResponse);
export const decodeRemoveMemberResponse = (b: Uint8Array): RemoveMemberResponse => decodeTop<RemoveMemberResponse>(b, { leaderInfo: undefined }, readRemoveMemberResponse);

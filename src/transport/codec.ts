// Binary encoding of Raft messages for the peer transport. Hot path: AppendEntries with many
// entries, so encoding writes straight into one reusable, grown buffer (no JSON, no per-field
// allocation) and decoding copies all of a message's payload bytes (entry data, snapshot data)
// with ONE allocation. Decoding validates every length against the bytes actually present and
// throws CodecError on anything malformed; it never allocates more than the input's size.
//
// Message layout (all integers are unsigned LEB128 varints holding safe integers, except where
// noted; strings are varint byte length + UTF-8):
//
//   u8 type (1..12) | u8 flags (bit0 reject, bit1 snapshot present)
//   str from | str to
//   term | logTerm | index | commit | rejectHint | context
//   entryCount, then per entry: term | index | u8 type (0..1) | dataLength | data
//   if snapshot: meta.index | meta.term | voterCount, str voters... | learnerCount, str learners...
//                | dataLength | data

import { type Entry, EntryType, type Message, MessageType, type Snapshot } from "../raft/messages.ts";

export class CodecError extends Error {
  constructor(detail: string) {
    super(`malformed transport payload: ${detail}`);
    this.name = "CodecError";
  }
}

/** Node ids, cluster ids and similar strings are bounded so a length can never be absurd. */
export const MAX_STRING_BYTES = 1024;

const FLAG_REJECT = 1;
const FLAG_SNAPSHOT = 2;
const KNOWN_FLAGS = FLAG_REJECT | FLAG_SNAPSHOT;
const MIN_MSG_TYPE = MessageType.App;
const MAX_MSG_TYPE = MessageType.Prop;

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const EMPTY = new Uint8Array(0);

// Encoded forms of the strings we send over and over (node ids): bounded cache.
const encodedStrings = new Map<string, Uint8Array>();
const ENCODED_CACHE_MAX = 512;

function utf8(s: string): Uint8Array {
  let b = encodedStrings.get(s);
  if (b === undefined) {
    b = textEncoder.encode(s);
    if (b.byteLength > MAX_STRING_BYTES) throw new CodecError(`string of ${b.byteLength} bytes exceeds ${MAX_STRING_BYTES}`);
    if (encodedStrings.size >= ENCODED_CACHE_MAX) encodedStrings.clear();
    encodedStrings.set(s, b);
  }
  return b;
}

/** A growable byte buffer that encoders append to; reuse one across calls (reset()). */
export class Writer {
  buf: Uint8Array;
  pos = 0;

  constructor(initialCapacity = 64 * 1024) {
    this.buf = new Uint8Array(Math.max(16, initialCapacity));
  }

  reset(): void {
    this.pos = 0;
  }

  /** The bytes written so far (a view, valid until the next write or reset). */
  view(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }

  /** Drops a large buffer after a burst so one huge message does not pin memory forever. */
  shrink(maxKeep: number, to: number): void {
    if (this.pos === 0 && this.buf.byteLength > maxKeep) this.buf = new Uint8Array(to);
  }

  ensure(n: number): void {
    const need = this.pos + n;
    if (need <= this.buf.byteLength) return;
    let cap = this.buf.byteLength * 2;
    while (cap < need) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }

  u8(v: number): void {
    this.ensure(1);
    this.buf[this.pos++] = v;
  }

  u32(v: number): void {
    this.ensure(4);
    const b = this.buf;
    const p = this.pos;
    b[p] = v >>> 24;
    b[p + 1] = v >>> 16;
    b[p + 2] = v >>> 8;
    b[p + 3] = v;
    this.pos = p + 4;
  }

  /** Unsigned LEB128 of a non-negative safe integer (at most 8 bytes). */
  varint(v: number): void {
    this.ensure(8);
    const b = this.buf;
    let p = this.pos;
    if ((v >>> 0) === v) {
      while (v >= 0x80) {
        b[p++] = (v & 0x7f) | 0x80;
        v >>>= 7;
      }
      b[p++] = v;
    } else {
      if (!Number.isSafeInteger(v) || v < 0) throw new CodecError(`cannot encode ${v}: not a non-negative safe integer`);
      while (v >= 0x80) {
        b[p++] = (v % 128) | 0x80;
        v = Math.floor(v / 128);
      }
      b[p++] = v;
    }
    this.pos = p;
  }

  bytes(data: Uint8Array): void {
    this.ensure(data.byteLength);
    this.buf.set(data, this.pos);
    this.pos += data.byteLength;
  }

  /** Length-prefixed bytes. */
  blob(data: Uint8Array): void {
    this.varint(data.byteLength);
    this.bytes(data);
  }

  str(s: string): void {
    this.blob(utf8(s));
  }
}

// Decoded strings: the same few node ids arrive in every message, so remember the last few
// byte sequences and hand back the same string without decoding.
const STR_CACHE = 8;
const strCacheBytes: Uint8Array[] = [];
const strCacheValues: string[] = [];
let strCacheNext = 0;

/** A bounds-checked cursor over a byte range. Every read throws CodecError past the end. */
export class Reader {
  pos: number;

  constructor(
    readonly buf: Uint8Array,
    start = 0,
    readonly end = buf.byteLength,
  ) {
    if (start < 0 || end > buf.byteLength || start > end) throw new CodecError(`bad range ${start}..${end} of ${buf.byteLength} bytes`);
    this.pos = start;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  u8(): number {
    if (this.pos >= this.end) throw new CodecError("truncated (u8)");
    return this.buf[this.pos++]!;
  }

  u32(): number {
    const p = this.pos;
    if (p + 4 > this.end) throw new CodecError("truncated (u32)");
    const b = this.buf;
    this.pos = p + 4;
    return ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;
  }

  varint(): number {
    const b = this.buf;
    const end = this.end;
    let p = this.pos;
    if (p >= end) throw new CodecError("truncated (varint)");
    let byte = b[p++]!;
    if (byte < 0x80) {
      this.pos = p;
      return byte;
    }
    let v = byte & 0x7f;
    let mul = 0x80;
    for (let i = 1; i < 8; i++) {
      if (p >= end) throw new CodecError("truncated (varint)");
      byte = b[p++]!;
      if (i === 7 && byte > 0x0f) throw new CodecError("varint exceeds 2^53");
      v += (byte & 0x7f) * mul;
      if (byte < 0x80) {
        this.pos = p;
        return v;
      }
      mul *= 0x80;
    }
    throw new CodecError("varint longer than 8 bytes");
  }

  /** Reads a length for `unit`-byte (at least) items and checks they can fit in what is left. */
  count(minItemBytes: number, what: string): number {
    const n = this.varint();
    if (n * minItemBytes > this.end - this.pos) throw new CodecError(`${what} count ${n} overruns the ${this.end - this.pos} bytes left`);
    return n;
  }

  /** A view of the next n bytes (not a copy). */
  view(n: number): Uint8Array {
    if (n > this.end - this.pos) throw new CodecError(`length ${n} overruns the ${this.end - this.pos} bytes left`);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  blobView(): Uint8Array {
    return this.view(this.varint());
  }

  str(): string {
    const n = this.varint();
    if (n > MAX_STRING_BYTES) throw new CodecError(`string length ${n} exceeds ${MAX_STRING_BYTES}`);
    if (n > this.end - this.pos) throw new CodecError(`string length ${n} overruns the ${this.end - this.pos} bytes left`);
    const b = this.buf;
    const p = this.pos;
    this.pos = p + n;
    if (n === 0) return "";
    search: for (let c = 0; c < strCacheBytes.length; c++) {
      const cached = strCacheBytes[c]!;
      if (cached.byteLength !== n) continue;
      for (let i = 0; i < n; i++) if (cached[i] !== b[p + i]) continue search;
      return strCacheValues[c]!;
    }
    const bytes = b.slice(p, p + n);
    let s: string;
    try {
      s = textDecoder.decode(bytes);
    } catch {
      throw new CodecError("string is not valid UTF-8");
    }
    if (n <= 64) {
      strCacheBytes[strCacheNext] = bytes;
      strCacheValues[strCacheNext] = s;
      strCacheNext = (strCacheNext + 1) % STR_CACHE;
    }
    return s;
  }

  expectEnd(what: string): void {
    if (this.pos !== this.end) throw new CodecError(`${this.end - this.pos} trailing bytes after ${what}`);
  }
}

/** Appends the encoding of `m` to `w`. On error (an unencodable field) `w.pos` is unspecified: callers roll back. */
export function encodeMessage(w: Writer, m: Message): void {
  const t = m.type;
  if (!(t >= MIN_MSG_TYPE && t <= MAX_MSG_TYPE)) throw new CodecError(`cannot encode message type ${t}`);
  w.u8(t);
  w.u8((m.reject ? FLAG_REJECT : 0) | (m.snapshot !== null ? FLAG_SNAPSHOT : 0));
  w.str(m.from);
  w.str(m.to);
  w.varint(m.term);
  w.varint(m.logTerm);
  w.varint(m.index);
  w.varint(m.commit);
  w.varint(m.rejectHint);
  w.varint(m.context);
  const ents = m.entries;
  const n = ents.length;
  w.varint(n);
  for (let i = 0; i < n; i++) {
    const e = ents[i]!;
    const d = e.data;
    const dlen = d.byteLength;
    const et = e.type;
    if (et !== EntryType.Normal && et !== EntryType.ConfChange) throw new CodecError(`cannot encode entry type ${et}`);
    // One capacity check per entry (worst case 8 + 8 + 1 + 8 header bytes), header written
    // inline for the common small values.
    w.ensure(25 + dlen);
    const term = e.term;
    let index = e.index;
    const b = w.buf;
    let p = w.pos;
    if ((term >>> 0) === term && term < 0x80) b[p++] = term;
    else {
      w.pos = p;
      w.varint(term);
      p = w.pos;
    }
    if ((index >>> 0) === index) {
      while (index >= 0x80) {
        b[p++] = (index & 0x7f) | 0x80;
        index >>>= 7;
      }
      b[p++] = index;
    } else {
      w.pos = p;
      w.varint(index);
      p = w.pos;
    }
    b[p++] = et;
    if (dlen < 0x80) b[p++] = dlen;
    else {
      w.pos = p;
      w.varint(dlen);
      p = w.pos;
    }
    if (dlen > 0) b.set(d, p);
    w.pos = p + dlen;
  }
  const s = m.snapshot;
  if (s !== null) {
    w.varint(s.meta.index);
    w.varint(s.meta.term);
    const voters = s.meta.conf.voters;
    w.varint(voters.length);
    for (const v of voters) w.str(v);
    const learners = s.meta.conf.learners;
    w.varint(learners.length);
    for (const l of learners) w.str(l);
    w.blob(s.data);
  }
}

/** Convenience (tests, cold paths): the encoding of one message as its own array. */
export function encodeMessageToBytes(m: Message): Uint8Array {
  const w = new Writer(256);
  encodeMessage(w, m);
  return w.buf.slice(0, w.pos);
}

/** A cheap upper-bound-ish estimate of a message's encoded size, for queue accounting. */
export function estimateMessageSize(m: Message): number {
  let size = 64 + m.from.length * 3 + m.to.length * 3;
  const ents = m.entries;
  for (let i = 0; i < ents.length; i++) size += ents[i]!.data.byteLength + 26;
  const s = m.snapshot;
  if (s !== null) size += 32 + s.data.byteLength + (s.meta.conf.voters.length + s.meta.conf.learners.length) * 32;
  return size;
}

/**
 * Decodes one message occupying exactly bytes[start, end). The result shares no memory with
 * `bytes` (entry and snapshot data are copied, all of them into one allocation), so the
 * caller may reuse its buffer.
 */
export function decodeMessage(bytes: Uint8Array, start = 0, end = bytes.byteLength): Message {
  const r = new Reader(bytes, start, end);
  return readMessage(r);
}

export function readMessage(r: Reader): Message {
  const type = r.u8();
  if (type < MIN_MSG_TYPE || type > MAX_MSG_TYPE) throw new CodecError(`unknown message type ${type}`);
  const flags = r.u8();
  if ((flags & ~KNOWN_FLAGS) !== 0) throw new CodecError(`unknown flags 0x${flags.toString(16)}`);
  const from = r.str();
  const to = r.str();
  const term = r.varint();
  const logTerm = r.varint();
  const index = r.varint();
  const commit = r.varint();
  const rejectHint = r.varint();
  const context = r.varint();
  // Each entry takes at least 4 bytes (term, index, type, length).
  const n = r.count(4, "entry");
  const entries: Entry[] = [];
  let snapshot: Snapshot | null = null;
  if (n > 0 || (flags & FLAG_SNAPSHOT) !== 0) {
    // Copy the rest of the message once; entries and snapshot data become views into it.
    const copy = r.buf.slice(r.pos, r.end);
    const base = r.pos;
    const cr = new Reader(copy);
    for (let i = 0; i < n; i++) {
      const eTerm = cr.varint();
      const eIndex = cr.varint();
      const eType = cr.u8();
      if (eType !== EntryType.Normal && eType !== EntryType.ConfChange) throw new CodecError(`unknown entry type ${eType}`);
      const len = cr.varint();
      const data = len === 0 ? EMPTY : cr.view(len);
      entries.push({ term: eTerm, index: eIndex, type: eType as EntryType, data });
    }
    if ((flags & FLAG_SNAPSHOT) !== 0) {
      const sIndex = cr.varint();
      const sTerm = cr.varint();
      const nv = cr.count(1, "voter");
      const voters: string[] = [];
      for (let i = 0; i < nv; i++) voters.push(cr.str());
      const nl = cr.count(1, "learner");
      const learners: string[] = [];
      for (let i = 0; i < nl; i++) learners.push(cr.str());
      const dlen = cr.varint();
      const data = dlen === 0 ? EMPTY : cr.view(dlen);
      snapshot = { meta: { index: sIndex, term: sTerm, conf: { voters, learners } }, data };
    }
    cr.expectEnd("message");
    r.pos = base + cr.pos;
  } else {
    r.expectEnd("message");
  }
  return {
    type: type as MessageType,
    from,
    to,
    term,
    logTerm,
    index,
    entries,
    commit,
    reject: (flags & FLAG_REJECT) !== 0,
    rejectHint,
    snapshot,
    context,
  };
}

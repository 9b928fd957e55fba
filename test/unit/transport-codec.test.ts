// The peer transport's binary message codec and its length-prefixed framing: round trips of
// every message type, and hostile input (truncation, random bytes, mutations, absurd lengths)
// that must end in a typed error — never another exception, never a huge allocation.

import { describe, expect, test } from "bun:test";
import { type Entry, EntryType, type Message, MessageType, message } from "../../src/raft/messages.ts";
import { CodecError, MAX_STRING_BYTES, Reader, Writer, decodeMessage, encodeMessage, encodeMessageToBytes } from "../../src/transport/codec.ts";
import { FRAME_HEADER_BYTES, FrameError, FrameParser, beginFrame, endFrame, writeFrame } from "../../src/transport/frame.ts";
import { Prng } from "../sim/prng.ts";

const enc = new TextEncoder();

const ALL_TYPES: MessageType[] = [
  MessageType.App,
  MessageType.AppResp,
  MessageType.Vote,
  MessageType.VoteResp,
  MessageType.PreVote,
  MessageType.PreVoteResp,
  MessageType.Heartbeat,
  MessageType.HeartbeatResp,
  MessageType.Snap,
  MessageType.ReadIndex,
  MessageType.ReadIndexResp,
  MessageType.TimeoutNow,
  MessageType.Prop,
];

function entries(from: number, n: number, term: number, size: number): Entry[] {
  const out: Entry[] = [];
  for (let i = 0; i < n; i++) {
    const data = new Uint8Array(size + (i % 3));
    for (let j = 0; j < data.length; j++) data[j] = (i * 31 + j) & 0xff;
    out.push({ term, index: from + i, type: i === 1 ? EntryType.ConfChange : EntryType.Normal, data });
  }
  return out;
}

/** A message of type t with every field set to something non-default. */
function fullMessage(t: MessageType, seed: number): Message {
  const m = message(t, "nöde-α", "节点-2 🚀", 7 + seed);
  m.logTerm = 6 + seed;
  m.index = 1_000_000 + seed;
  m.commit = 999_999;
  m.reject = seed % 2 === 0;
  m.rejectHint = 12345;
  m.context = Number.MAX_SAFE_INTEGER - seed;
  if (t === MessageType.App) {
    m.entries = [...entries(1_000_001, 5, 7, 256), { term: 7, index: 1_000_006, type: EntryType.Normal, data: new Uint8Array(0) }];
  }
  if (t === MessageType.Snap) {
    m.snapshot = {
      meta: { index: 2 ** 40, term: 3, conf: { voters: ["a", "ünï", "ノード"], learners: ["learner-🦀"] } },
      data: enc.encode("descriptor: snapshot-42"),
    };
  }
  return m;
}

describe("message codec", () => {
  test("every message type round-trips with all fields, entries, snapshot meta and unicode ids", () => {
    for (const t of ALL_TYPES) {
      for (let seed = 0; seed < 3; seed++) {
        const m = fullMessage(t, seed);
        const bytes = encodeMessageToBytes(m);
        const back = decodeMessage(bytes);
        expect(back).toEqual(m);
        expect(back.type).toBe(t);
        expect(back.from).toBe("nöde-α");
        expect(back.to).toBe("节点-2 🚀");
      }
    }
  });

  test("defaults round-trip, and a snapshot with empty data and no learners", () => {
    const m = message(MessageType.Heartbeat, "a", "b", 0);
    expect(decodeMessage(encodeMessageToBytes(m))).toEqual(m);
    const s = message(MessageType.Snap, "a", "b", 1);
    s.snapshot = { meta: { index: 0, term: 0, conf: { voters: [], learners: [] } }, data: new Uint8Array(0) };
    expect(decodeMessage(encodeMessageToBytes(s))).toEqual(s);
    const empty = message(MessageType.App, "", "", 0);
    expect(decodeMessage(encodeMessageToBytes(empty))).toEqual(empty);
  });

  test("integers at varint boundaries round-trip", () => {
    const values = [0, 1, 127, 128, 255, 16383, 16384, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 49, 2 ** 52 + 7, Number.MAX_SAFE_INTEGER];
    for (const v of values) {
      const m = message(MessageType.App, "a", "b", v);
      m.index = v;
      m.commit = v;
      m.entries = [{ term: v, index: v, type: EntryType.Normal, data: new Uint8Array([1]) }];
      expect(decodeMessage(encodeMessageToBytes(m))).toEqual(m);
    }
  });

  test("unencodable numbers and types throw CodecError", () => {
    for (const bad of [-1, 1.5, Number.MAX_SAFE_INTEGER + 1, Number.NaN, Number.POSITIVE_INFINITY]) {
      const m = message(MessageType.App, "a", "b", bad);
      expect(() => encodeMessageToBytes(m)).toThrow(CodecError);
    }
    for (const bad of [-1, 0.5, 2 ** 53]) {
      const withEntry = message(MessageType.App, "a", "b", 1);
      withEntry.entries = [{ term: bad, index: 1, type: EntryType.Normal, data: new Uint8Array(1) }];
      expect(() => encodeMessageToBytes(withEntry)).toThrow(CodecError);
      withEntry.entries = [{ term: 1, index: bad, type: EntryType.Normal, data: new Uint8Array(1) }];
      expect(() => encodeMessageToBytes(withEntry)).toThrow(CodecError);
      const snap = message(MessageType.Snap, "a", "b", 1);
      snap.snapshot = { meta: { index: bad, term: 1, conf: { voters: [], learners: [] } }, data: new Uint8Array(0) };
      expect(() => encodeMessageToBytes(snap)).toThrow(CodecError);
    }
    expect(() => encodeMessageToBytes(message(99 as MessageType, "a", "b", 1))).toThrow(CodecError);
    const e = message(MessageType.App, "a", "b", 1);
    e.entries = [{ term: 1, index: 1, type: 7 as EntryType, data: new Uint8Array(0) }];
    expect(() => encodeMessageToBytes(e)).toThrow(CodecError);
    expect(() => encodeMessageToBytes(message(MessageType.App, "x".repeat(MAX_STRING_BYTES + 1), "b", 1))).toThrow(CodecError);
  });

  test("a decoded message shares no memory with the input buffer", () => {
    const m = fullMessage(MessageType.App, 1);
    const bytes = encodeMessageToBytes(m);
    const back = decodeMessage(bytes);
    bytes.fill(0xee);
    expect(back).toEqual(m);
  });

  test("decodes a message in the middle of a larger buffer, and many messages into one reused writer", () => {
    const w = new Writer(16); // forces growth
    const msgs = ALL_TYPES.map((t, i) => fullMessage(t, i));
    const offsets: [number, number][] = [];
    for (const m of msgs) {
      const start = w.pos;
      encodeMessage(w, m);
      offsets.push([start, w.pos]);
    }
    const buf = w.view();
    msgs.forEach((m, i) => expect(decodeMessage(buf, offsets[i]![0], offsets[i]![1])).toEqual(m));
  });

  test("every truncation of a valid encoding throws CodecError", () => {
    for (const t of [MessageType.App, MessageType.Snap, MessageType.Vote]) {
      const bytes = encodeMessageToBytes(fullMessage(t, 0));
      for (let n = 0; n < bytes.length; n++) {
        expect(() => decodeMessage(bytes.subarray(0, n))).toThrow(CodecError);
      }
      // ...and a trailing byte is rejected too.
      const longer = new Uint8Array(bytes.length + 1);
      longer.set(bytes);
      expect(() => decodeMessage(longer)).toThrow(CodecError);
    }
  });

  test("absurd counts and lengths are refused without allocating them", () => {
    // type App, flags 0, from "", to "", six zero integers, then an entry count of 2^49.
    const w = new Writer(64);
    w.u8(MessageType.App);
    w.u8(0);
    w.str("");
    w.str("");
    for (let i = 0; i < 6; i++) w.varint(0);
    w.varint(2 ** 49);
    expect(() => decodeMessage(w.view())).toThrow(CodecError);
    // One entry whose data length claims 2^50 bytes.
    const w2 = new Writer(64);
    w2.u8(MessageType.App);
    w2.u8(0);
    w2.str("a");
    w2.str("b");
    for (let i = 0; i < 6; i++) w2.varint(1);
    w2.varint(1);
    w2.varint(1);
    w2.varint(1);
    w2.u8(EntryType.Normal);
    w2.varint(2 ** 50);
    w2.bytes(new Uint8Array(8));
    expect(() => decodeMessage(w2.view())).toThrow(CodecError);
    // A string length beyond the limit, a varint beyond 2^53, an unknown flag, invalid UTF-8.
    expect(() => decodeMessage(new Uint8Array([1, 0, 0x81, 0x80, 0x01]))).toThrow(CodecError);
    expect(() => decodeMessage(new Uint8Array([1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]))).toThrow(CodecError);
    expect(() => decodeMessage(new Uint8Array([1, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).toThrow(CodecError);
    expect(() => decodeMessage(new Uint8Array([1, 0, 2, 0xc3, 0x28, 0, 0, 0, 0, 0, 0, 0, 0]))).toThrow(CodecError);
    expect(() => decodeMessage(new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).toThrow(CodecError);
    expect(() => decodeMessage(new Uint8Array([MessageType.Prop + 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).toThrow(CodecError);
  });

  test("fuzz: random bytes decode or throw CodecError, never anything else", () => {
    const rng = new Prng(0xc0dec);
    let decoded = 0;
    for (let iter = 0; iter < 5000; iter++) {
      const n = rng.int(0, 96);
      const b = new Uint8Array(n);
      for (let i = 0; i < n; i++) b[i] = rng.int(0, 255);
      // Bias towards plausible prefixes so the fuzzer gets past the first checks.
      if (n > 2 && rng.chance(0.7)) {
        b[0] = rng.int(1, 12);
        b[1] = rng.int(0, 3);
      }
      try {
        const m = decodeMessage(b);
        decoded++;
        expect(m.type >= 1 && m.type <= 12).toBe(true);
      } catch (e) {
        if (!(e instanceof CodecError)) throw new Error(`iteration ${iter}: ${String(e)} for ${Array.from(b).join(",")}`);
      }
    }
    expect(decoded).toBeGreaterThanOrEqual(0);
  });

  test("fuzz: mutated valid encodings decode or throw CodecError, never anything else", () => {
    const rng = new Prng(0xfeed);
    const seeds = ALL_TYPES.map((t, i) => encodeMessageToBytes(fullMessage(t, i)));
    let rejected = 0;
    for (let iter = 0; iter < 5000; iter++) {
      const base = rng.pick(seeds);
      let b = base.slice();
      const edits = rng.int(1, 4);
      for (let k = 0; k < edits; k++) {
        const op = rng.int(0, 3);
        if (op === 0 && b.length > 0) b[rng.int(0, b.length - 1)] = rng.int(0, 255);
        else if (op === 1 && b.length > 0) b = b.subarray(0, rng.int(0, b.length - 1)).slice();
        else if (op === 2) {
          const at = rng.int(0, b.length);
          const c = new Uint8Array(b.length + 1);
          c.set(b.subarray(0, at));
          c[at] = rng.int(0, 255);
          c.set(b.subarray(at), at + 1);
          b = c;
        } else if (b.length > 0) b[rng.int(0, b.length - 1)] ^= 1 << rng.int(0, 7);
      }
      try {
        decodeMessage(b);
      } catch (e) {
        if (!(e instanceof CodecError)) throw new Error(`iteration ${iter}: ${String(e)}`);
        rejected++;
      }
    }
    expect(rejected).toBeGreaterThan(1000);
  });

  test("Reader rejects a range outside its buffer", () => {
    expect(() => new Reader(new Uint8Array(4), 3, 9)).toThrow(CodecError);
    expect(() => decodeMessage(new Uint8Array(4), 2, 1)).toThrow(CodecError);
  });
});

describe("framing", () => {
  function framesOf(payloads: { type: number; bytes: Uint8Array }[]): Uint8Array {
    const w = new Writer(8);
    for (const p of payloads) writeFrame(w, p.type, p.bytes, 1 << 20);
    return w.buf.slice(0, w.pos);
  }

  function collect(parser: FrameParser, chunks: Uint8Array[]): { type: number; bytes: number[] }[] {
    const out: { type: number; bytes: number[] }[] = [];
    for (const c of chunks) parser.push(c, (type, payload) => void out.push({ type, bytes: Array.from(payload) }));
    return out;
  }

  const payloads = [
    { type: 4, bytes: new Uint8Array([1, 2, 3]) },
    { type: 6, bytes: new Uint8Array(0) },
    { type: 7, bytes: new Uint8Array(3000).map((_, i) => i & 0xff) },
    { type: 4, bytes: new Uint8Array([9]) },
  ];
  const expected = payloads.map((p) => ({ type: p.type, bytes: Array.from(p.bytes) }));

  test("frames survive arbitrary chunking: whole, byte by byte, and random splits", () => {
    const stream = framesOf(payloads);
    expect(collect(new FrameParser(1 << 20), [stream])).toEqual(expected);
    const bytes: Uint8Array[] = [];
    for (let i = 0; i < stream.length; i++) bytes.push(stream.subarray(i, i + 1));
    expect(collect(new FrameParser(1 << 20), bytes)).toEqual(expected);
    const rng = new Prng(42);
    for (let iter = 0; iter < 300; iter++) {
      const chunks: Uint8Array[] = [];
      let at = 0;
      while (at < stream.length) {
        const n = rng.int(1, 700);
        chunks.push(stream.slice(at, at + n));
        at += n;
      }
      const parser = new FrameParser(1 << 20);
      expect(collect(parser, chunks)).toEqual(expected);
      expect(parser.buffered).toBe(0);
    }
  });

  test("a partial frame is never delivered", () => {
    const stream = framesOf([{ type: 4, bytes: new Uint8Array(100).fill(5) }]);
    const parser = new FrameParser(1 << 20);
    const seen: number[] = [];
    parser.push(stream.subarray(0, stream.length - 1), (t) => void seen.push(t));
    expect(seen).toEqual([]);
    expect(parser.buffered).toBe(stream.length - 1);
    parser.push(stream.subarray(stream.length - 1), (t) => void seen.push(t));
    expect(seen).toEqual([4]);
  });

  test("an oversized frame is refused at its header, before its body is buffered", () => {
    const parser = new FrameParser(1024);
    const header = new Uint8Array([0x7f, 0xff, 0xff, 0xff, 4]);
    expect(() => parser.push(header, () => {})).toThrow(FrameError);
    expect(parser.buffered).toBe(0);
    expect(parser.isStopped).toBe(true);
    // An HTTP request read as a frame header: "GET " is a 1.2 GB length.
    const http = new FrameParser(4096);
    expect(() => http.push(enc.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), () => {})).toThrow(FrameError);
  });

  test("the writer refuses to finish a frame over the maximum and rolls it back", () => {
    const w = new Writer(16);
    const at = beginFrame(w, 4);
    w.bytes(new Uint8Array(100));
    expect(() => endFrame(w, at, 99)).toThrow(FrameError);
    expect(w.pos).toBe(at);
    const ok = beginFrame(w, 4);
    w.bytes(new Uint8Array(99));
    endFrame(w, ok, 99);
    expect(w.pos).toBe(99 + FRAME_HEADER_BYTES);
  });

  test("returning false from the handler stops the parser", () => {
    const stream = framesOf(payloads);
    const parser = new FrameParser(1 << 20);
    const seen: number[] = [];
    parser.push(stream, (t) => {
      seen.push(t);
      return false;
    });
    parser.push(stream, (t) => void seen.push(t));
    expect(seen).toEqual([4]);
  });

  test("fuzz: random byte streams yield frames or FrameError only", () => {
    const rng = new Prng(7);
    for (let iter = 0; iter < 2000; iter++) {
      const parser = new FrameParser(rng.int(0, 2048));
      const n = rng.int(0, 200);
      const b = new Uint8Array(n);
      for (let i = 0; i < n; i++) b[i] = rng.chance(0.5) ? 0 : rng.int(0, 255);
      try {
        let at = 0;
        while (at < n) {
          const k = rng.int(1, 50);
          parser.push(b.subarray(at, at + k), () => {});
          at += k;
        }
      } catch (e) {
        if (!(e instanceof FrameError)) throw e;
      }
      expect(parser.buffered).toBeLessThanOrEqual(n);
    }
  });
});

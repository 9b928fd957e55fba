// The log-entry command codec (src/storage/command.ts): every byte of it is replicated and stored,
// so the encodings of the kinds that existed before issue 8 are pinned to fixed vectors (taken from
// the encoder before the new kinds were added), and decoding must be total.

import { describe, expect, test } from "bun:test";
import { type Command, CommandDecodeError, CommandKind, decodeCommand, encodeCommand, type TxnCompare, type TxnOp } from "../../src/storage/command.ts";

const s = (x: string): Uint8Array => new TextEncoder().encode(x);
const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const unhex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, "hex"));

// Written from the pre-issue-8 encoder (commit 060f8fb): these must never change, or entries
// already in a log would decode differently.
const PINNED: [string, Command, string][] = [
  ["put", { kind: CommandKind.Put, key: s("k"), value: s("v"), meta: 7, expireAt: 0 }, "0101070000000000000000000000010000006b0100000076"],
  [
    "put, empty value, u32-max meta, real expireAt",
    { kind: CommandKind.Put, key: s("key"), value: new Uint8Array(0), meta: 0xffffffff, expireAt: 1700000000123 },
    "0101ffffffff00b08756febc7842030000006b657900000000",
  ],
  [
    "put, max safe expireAt",
    { kind: CommandKind.Put, key: s("a/b"), value: s("hello"), meta: 0x01020304, expireAt: Number.MAX_SAFE_INTEGER },
    "010104030201ffffffffffff3f4303000000612f620500000068656c6c6f",
  ],
  ["delete", { kind: CommandKind.Delete, key: s("abc") }, "010203000000616263"],
  ["delete, binary key", { kind: CommandKind.Delete, key: new Uint8Array([0, 0xff, 0x80]) }, "01020300000000ff80"],
  ["expire", { kind: CommandKind.ExpireKey, key: s("ttl"), version: 1 }, "0103000000000000f03f0300000074746c"],
  ["expire, max safe version", { kind: CommandKind.ExpireKey, key: s("x"), version: Number.MAX_SAFE_INTEGER }, "0103ffffffffffff3f430100000078"],
  ["expire, version > 2^32", { kind: CommandKind.ExpireKey, key: s("x"), version: 2 ** 32 + 5 }, "0103000050000000f0410100000078"],
];

describe("pre-issue-8 kinds are byte-identical", () => {
  for (const [name, c, h] of PINNED) {
    test(name, () => {
      expect(hex(encodeCommand(c))).toBe(h);
      expect(decodeCommand(unhex(h))).toEqual(c);
    });
  }
});

// ── Helpers ──────────────────────────────────────────────────────────────────────────────────

/** An independent little-endian builder (DataView), to check the encoder against the layout. */
class Bytes {
  private readonly parts: number[] = [];
  u8(v: number): this {
    this.parts.push(v & 0xff);
    return this;
  }
  u32(v: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, true);
    this.parts.push(...b);
    return this;
  }
  f64(v: number): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, v, true);
    this.parts.push(...b);
    return this;
  }
  raw(b: Uint8Array): this {
    this.parts.push(...b);
    return this;
  }
  /** [u32 len][bytes] */
  lp(b: Uint8Array): this {
    return this.u32(b.length).raw(b);
  }
  done(): Uint8Array {
    return new Uint8Array(this.parts);
  }
}

function expectDecodeError(data: Uint8Array, message?: RegExp): CommandDecodeError {
  let err: unknown;
  try {
    decodeCommand(data);
  } catch (e) {
    err = e;
  }
  if (!(err instanceof CommandDecodeError)) throw new Error(`expected CommandDecodeError for ${hex(data)}, got ${String(err)}`);
  if (message) expect(err.message).toMatch(message);
  return err;
}

function roundTrip(c: Command): Uint8Array {
  const b = encodeCommand(c);
  expect(decodeCommand(b)).toEqual(c);
  expect(hex(encodeCommand(decodeCommand(b)))).toBe(hex(b));
  return b;
}

/** mulberry32: a small seeded PRNG so that a fuzz failure is reproducible. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const MAX = Number.MAX_SAFE_INTEGER;
const longKey = new Uint8Array(5000).map((_, i) => (i * 31) & 0xff);

// ── The new kinds: layout and round trips ─────────────────────────────────────────────────────

describe("Txn", () => {
  const txn: Command = {
    kind: CommandKind.Txn,
    nowMs: 1700000000123,
    compares: [
      { target: "version", op: ">", key: s("a"), version: 5, value: new Uint8Array(0), exists: false },
      { target: "create", op: "<", key: s("b"), version: MAX, value: new Uint8Array(0), exists: false },
      { target: "value", op: "!=", key: s("c"), version: 0, value: s("vv"), exists: false },
      { target: "exists", op: "=", key: s("d"), version: 0, value: new Uint8Array(0), exists: true },
    ],
    success: [
      { type: "put", key: s("k"), value: s("v"), meta: 9, expireAt: 42 },
      { type: "delete", key: s("x"), end: s("y") },
      { type: "range", key: s("p"), end: null, limit: 10, reverse: true, keysOnly: false, countOnly: true },
    ],
    failure: [{ type: "delete", key: s("z"), end: null }],
  };

  test("encodes exactly the documented layout", () => {
    const want = new Bytes()
      .u8(1)
      .u8(4)
      .f64(1700000000123)
      .u32(4)
      .u8(0).u8(1).lp(s("a")).f64(5).lp(new Uint8Array(0)).u8(0)
      .u8(1).u8(2).lp(s("b")).f64(MAX).lp(new Uint8Array(0)).u8(0)
      .u8(2).u8(3).lp(s("c")).f64(0).lp(s("vv")).u8(0)
      .u8(3).u8(0).lp(s("d")).f64(0).lp(new Uint8Array(0)).u8(1)
      .u32(3)
      .u8(1).u32(9).f64(42).lp(s("k")).lp(s("v"))
      .u8(2).lp(s("x")).u8(1).lp(s("y"))
      .u8(3).lp(s("p")).u8(0).u32(0).f64(10).u8(0b101)
      .u32(1)
      .u8(2).lp(s("z")).u8(0).u32(0)
      .done();
    expect(hex(encodeCommand(txn))).toBe(hex(want));
    expect(decodeCommand(want)).toEqual(txn);
  });

  test("round trips: empty txn, empty branches, every flag combination, end null vs empty", () => {
    roundTrip({ kind: CommandKind.Txn, nowMs: 0, compares: [], success: [], failure: [] });
    roundTrip({ kind: CommandKind.Txn, nowMs: MAX, compares: [], success: [], failure: txn.kind === CommandKind.Txn ? txn.success : [] });
    for (let f = 0; f < 8; f++) {
      for (const end of [null, new Uint8Array(0), s("\x00"), longKey]) {
        roundTrip({
          kind: CommandKind.Txn,
          nowMs: 1,
          compares: [],
          success: [{ type: "range", key: new Uint8Array(0), end, limit: MAX, reverse: (f & 1) !== 0, keysOnly: (f & 2) !== 0, countOnly: (f & 4) !== 0 }],
          failure: [{ type: "delete", key: new Uint8Array(0), end }],
        });
      }
    }
    // null and empty end are different commands with different bytes.
    const a = encodeCommand({ kind: CommandKind.Txn, nowMs: 1, compares: [], success: [{ type: "delete", key: s("a"), end: null }], failure: [] });
    const b = encodeCommand({ kind: CommandKind.Txn, nowMs: 1, compares: [], success: [{ type: "delete", key: s("a"), end: new Uint8Array(0) }], failure: [] });
    expect(hex(a)).not.toBe(hex(b));
    const da = decodeCommand(a);
    const db = decodeCommand(b);
    if (da.kind !== CommandKind.Txn || db.kind !== CommandKind.Txn || da.success[0].type !== "delete" || db.success[0].type !== "delete") throw new Error("kind");
    expect(da.success[0].end).toBeNull();
    expect(db.success[0].end).toEqual(new Uint8Array(0));
  });

  test("round trips: long keys and values, empty put value, max numbers", () => {
    roundTrip({
      kind: CommandKind.Txn,
      nowMs: MAX,
      compares: [{ target: "value", op: "=", key: longKey, version: MAX, value: longKey, exists: false }],
      success: [{ type: "put", key: longKey, value: new Uint8Array(0), meta: 0xffffffff, expireAt: MAX }],
      failure: [{ type: "put", key: s("k"), value: new Uint8Array(70000), meta: 0, expireAt: 0 }],
    });
  });

  test("decoded keys and values are zero-copy views of the input", () => {
    const b = encodeCommand(txn);
    const d = decodeCommand(b);
    if (d.kind !== CommandKind.Txn || d.success[0].type !== "put") throw new Error("kind");
    expect(d.compares[0].key.buffer).toBe(b.buffer);
    expect(d.success[0].value.buffer).toBe(b.buffer);
  });
});

describe("Compact, SessionOpen, SessionClose", () => {
  test("layouts", () => {
    expect(hex(encodeCommand({ kind: CommandKind.Compact, version: 77 }))).toBe(hex(new Bytes().u8(1).u8(5).f64(77).done()));
    expect(hex(encodeCommand({ kind: CommandKind.SessionOpen, nowMs: 1000, ttlMs: 300000 }))).toBe(hex(new Bytes().u8(1).u8(6).f64(1000).f64(300000).done()));
    expect(hex(encodeCommand({ kind: CommandKind.SessionClose, nowMs: 1000, sessionId: 12 }))).toBe(hex(new Bytes().u8(1).u8(7).f64(1000).f64(12).done()));
  });
  test("round trips at 0, 2^32 and MAX_SAFE_INTEGER", () => {
    for (const v of [0, 1, 2 ** 32, MAX]) {
      roundTrip({ kind: CommandKind.Compact, version: v });
      roundTrip({ kind: CommandKind.SessionOpen, nowMs: v, ttlMs: MAX - v });
      roundTrip({ kind: CommandKind.SessionClose, nowMs: MAX - v, sessionId: v });
    }
  });
});

describe("InSession", () => {
  const put: Command = { kind: CommandKind.Put, key: s("k"), value: s("v"), meta: 1, expireAt: 0 };
  test("layout: the inner command is a whole encoding, length-prefixed", () => {
    const inner = encodeCommand(put);
    const want = new Bytes().u8(1).u8(8).f64(3).f64(4).f64(5).lp(inner).done();
    const c: Command = { kind: CommandKind.InSession, sessionId: 3, seq: 4, nowMs: 5, inner: put };
    expect(hex(encodeCommand(c))).toBe(hex(want));
    expect(decodeCommand(want)).toEqual(c);
  });
  test("round trips with Put, Delete and Txn inside", () => {
    for (const inner of [
      put,
      { kind: CommandKind.Delete, key: longKey } as Command,
      { kind: CommandKind.Txn, nowMs: 9, compares: [], success: [], failure: [{ type: "delete", key: s("a"), end: null }] } as Command,
    ]) {
      roundTrip({ kind: CommandKind.InSession, sessionId: MAX, seq: 0, nowMs: MAX, inner });
    }
  });
  test("the encoder refuses a nested InSession or another inner kind", () => {
    const nested: Command = { kind: CommandKind.InSession, sessionId: 1, seq: 1, nowMs: 1, inner: put };
    expect(() => encodeCommand({ kind: CommandKind.InSession, sessionId: 1, seq: 2, nowMs: 1, inner: nested })).toThrow(RangeError);
    for (const inner of [
      { kind: CommandKind.ExpireKey, key: s("k"), version: 1 },
      { kind: CommandKind.Compact, version: 1 },
      { kind: CommandKind.SessionOpen, nowMs: 1, ttlMs: 1 },
      { kind: CommandKind.SessionClose, nowMs: 1, sessionId: 1 },
    ] as Command[]) {
      expect(() => encodeCommand({ kind: CommandKind.InSession, sessionId: 1, seq: 2, nowMs: 1, inner })).toThrow(RangeError);
    }
  });
  test("the decoder refuses a nested InSession and other inner kinds", () => {
    const okInner = encodeCommand(put);
    const nestedInner = new Bytes().u8(1).u8(8).f64(1).f64(1).f64(1).lp(okInner).done();
    expectDecodeError(new Bytes().u8(1).u8(8).f64(1).f64(2).f64(1).lp(nestedInner).done(), /nested/);
    for (const inner of [
      encodeCommand({ kind: CommandKind.ExpireKey, key: s("k"), version: 1 }),
      encodeCommand({ kind: CommandKind.Compact, version: 1 }),
      encodeCommand({ kind: CommandKind.SessionOpen, nowMs: 1, ttlMs: 1 }),
      encodeCommand({ kind: CommandKind.SessionClose, nowMs: 1, sessionId: 1 }),
    ]) {
      expectDecodeError(new Bytes().u8(1).u8(8).f64(1).f64(2).f64(1).lp(inner).done(), /only Put, Delete and Txn/);
    }
    // A malformed inner command (its own trailing byte) and one cut short by the outer length.
    expectDecodeError(new Bytes().u8(1).u8(8).f64(1).f64(2).f64(1).lp(new Bytes().raw(okInner).u8(0).done()).done(), /inner command.*trailing/);
    expectDecodeError(new Bytes().u8(1).u8(8).f64(1).f64(2).f64(1).u32(okInner.length - 1).raw(okInner.subarray(0, -1)).done(), /inner command.*truncated/);
    // Bytes after the inner command.
    expectDecodeError(new Bytes().u8(1).u8(8).f64(1).f64(2).f64(1).lp(okInner).u8(0).done(), /trailing/);
  });
});

// ── Malformed inputs, one per check ───────────────────────────────────────────────────────────

describe("decoding rejects", () => {
  const hdr = (): Bytes => new Bytes().u8(1).u8(4).f64(1);
  const goodCompare = (b: Bytes): Bytes => b.u8(0).u8(0).lp(s("k")).f64(1).lp(new Uint8Array(0)).u8(0);

  test("anything that is not a command header", () => {
    expectDecodeError(new Uint8Array(0));
    expectDecodeError(new Uint8Array([1]));
    expectDecodeError(new Uint8Array([2, 1]), /format/);
    expectDecodeError(new Uint8Array([1, 0]), /kind/);
    expectDecodeError(new Uint8Array([1, 9]), /kind/);
    expectDecodeError(new Uint8Array([1, 255]), /kind/);
    expect(() => decodeCommand("x" as unknown as Uint8Array)).toThrow(CommandDecodeError);
  });

  test("every truncation and every trailing byte of every kind", () => {
    const samples: Command[] = [
      ...PINNED.map(([, c]) => c),
      {
        kind: CommandKind.Txn,
        nowMs: 5,
        compares: [{ target: "value", op: "=", key: s("k"), version: 0, value: s("v"), exists: false }],
        success: [
          { type: "put", key: s("k"), value: s("v"), meta: 1, expireAt: 2 },
          { type: "range", key: s("a"), end: s("b"), limit: 1, reverse: false, keysOnly: true, countOnly: false },
        ],
        failure: [{ type: "delete", key: s("k"), end: null }],
      },
      { kind: CommandKind.Compact, version: 3 },
      { kind: CommandKind.SessionOpen, nowMs: 3, ttlMs: 4 },
      { kind: CommandKind.SessionClose, nowMs: 3, sessionId: 4 },
      { kind: CommandKind.InSession, sessionId: 1, seq: 2, nowMs: 3, inner: { kind: CommandKind.Delete, key: s("k") } },
    ];
    for (const c of samples) {
      const b = encodeCommand(c);
      for (let n = 0; n < b.length; n++) expectDecodeError(b.subarray(0, n));
      expectDecodeError(new Bytes().raw(b).u8(0).done(), /trailing/);
      expectDecodeError(new Bytes().raw(b).raw(b).done(), /trailing/);
    }
  });

  test("numbers that are not non-negative safe integers", () => {
    for (const bad of [-1, 0.5, 2 ** 53, NaN, Infinity, -Infinity, 1e300]) {
      expectDecodeError(new Bytes().u8(1).u8(5).f64(bad).done(), /safe integer/);
      expectDecodeError(new Bytes().u8(1).u8(6).f64(1).f64(bad).done(), /safe integer/);
      expectDecodeError(new Bytes().u8(1).u8(7).f64(bad).f64(1).done(), /safe integer/);
      expectDecodeError(new Bytes().u8(1).u8(8).f64(1).f64(bad).f64(1).lp(encodeCommand({ kind: CommandKind.Delete, key: s("k") })).done(), /safe integer/);
      expectDecodeError(hdr().u32(1).u8(0).u8(0).lp(s("k")).f64(bad).lp(new Uint8Array(0)).u8(0).u32(0).u32(0).done(), /safe integer/);
      expectDecodeError(hdr().u32(0).u32(1).u8(3).lp(s("a")).u8(0).u32(0).f64(bad).u8(0).u32(0).done(), /safe integer/);
    }
  });

  test("counts larger than the bytes left, before reading any element", () => {
    for (const n of [0xffffffff, 0x80000000, 1000]) {
      expectDecodeError(hdr().u32(n).done(), /cannot fit/);
      expectDecodeError(goodCompare(hdr().u32(1)).u32(n).u32(0).done(), /cannot fit/);
      expectDecodeError(hdr().u32(0).u32(0).u32(n).done(), /cannot fit/);
    }
    // A count that fits by size but whose elements run out is a truncation, not a crash.
    expectDecodeError(hdr().u32(0).u32(2).u8(2).lp(s("aaaaaaaaaa")).u8(0).u32(0).u8(2).u32(5).raw(s("ab")).done(), /truncated/);
  });

  test("byte lengths larger than the bytes left", () => {
    expectDecodeError(new Bytes().u8(1).u8(2).u32(0xffffffff).u8(0x61).done(), /truncated/);
    expectDecodeError(hdr().u32(0).u32(1).u8(2).u32(0xfffffff0).raw(new Uint8Array(10)).done(), /truncated/);
  });

  test("enum, flag and bool bytes out of range", () => {
    const cmp = (t: number, o: number, exists: number): Uint8Array =>
      hdr().u32(1).u8(t).u8(o).lp(s("k")).f64(0).lp(new Uint8Array(0)).u8(exists).u32(0).u32(0).done();
    expect(decodeCommand(cmp(3, 3, 1)).kind).toBe(CommandKind.Txn);
    expectDecodeError(cmp(4, 0, 0), /target/);
    expectDecodeError(cmp(255, 0, 0), /target/);
    expectDecodeError(cmp(0, 4, 0), /op/);
    expectDecodeError(cmp(0, 0, 2), /exists/);
    expectDecodeError(cmp(3, 1, 1), /"exists"/);
    expectDecodeError(cmp(3, 2, 1), /"exists"/);
    const op = (type: number): Uint8Array => hdr().u32(0).u32(1).u8(type).lp(s("a")).u8(0).u32(0).u32(0).done();
    expectDecodeError(op(0), /type/);
    expectDecodeError(op(4), /type/);
    const range = (hasEnd: number, flags: number, limit = 1): Uint8Array =>
      hdr().u32(0).u32(1).u8(3).lp(s("a")).u8(hasEnd).u32(0).f64(limit).u8(flags).u32(0).done();
    expect(decodeCommand(range(0, 7)).kind).toBe(CommandKind.Txn);
    expect(decodeCommand(range(1, 0)).kind).toBe(CommandKind.Txn);
    expectDecodeError(range(2, 0), /hasEnd/);
    expectDecodeError(range(0, 8), /flag/);
    expectDecodeError(range(0, 0x80), /flag/);
    expectDecodeError(range(0, 0, 0), /limit 0/);
  });

  test("an end without hasEnd, and empty put/compare keys", () => {
    expectDecodeError(hdr().u32(0).u32(1).u8(2).lp(s("a")).u8(0).lp(s("b")).u32(0).done(), /no end but an end of 1/);
    expectDecodeError(hdr().u32(0).u32(1).u8(3).lp(s("a")).u8(0).lp(s("b")).f64(1).u8(0).u32(0).done(), /no end but an end of 1/);
    expectDecodeError(hdr().u32(0).u32(1).u8(1).u32(0).f64(0).lp(new Uint8Array(0)).lp(s("v")).u32(0).done(), /empty key/);
    expectDecodeError(hdr().u32(1).u8(0).u8(0).lp(new Uint8Array(0)).f64(0).lp(new Uint8Array(0)).u8(0).u32(0).u32(0).done(), /empty key/);
  });
});

describe("encoding rejects invalid commands (a caller bug)", () => {
  const t = (c: Partial<Command> & Record<string, unknown>): Command => ({ kind: CommandKind.Txn, nowMs: 1, compares: [], success: [], failure: [], ...c }) as Command;
  const cmp = { target: "version", op: "=", key: s("k"), version: 0, value: new Uint8Array(0), exists: false };
  test.each([
    ["nowMs -1", t({ nowMs: -1 })],
    ["nowMs 2^53", t({ nowMs: 2 ** 53 })],
    ["unknown target", t({ compares: [{ ...cmp, target: "mod" }] })],
    ["unknown compare op", t({ compares: [{ ...cmp, op: ">=" }] })],
    ["exists with <", t({ compares: [{ ...cmp, target: "exists", op: "<" }] })],
    ["empty compare key", t({ compares: [{ ...cmp, key: new Uint8Array(0) }] })],
    ["empty put key", t({ success: [{ type: "put", key: new Uint8Array(0), value: s("v"), meta: 0, expireAt: 0 }] })],
    ["meta 2^32", t({ success: [{ type: "put", key: s("k"), value: s("v"), meta: 2 ** 32, expireAt: 0 }] })],
    ["range limit 0", t({ failure: [{ type: "range", key: s("k"), end: null, limit: 0, reverse: false, keysOnly: false, countOnly: false }] })],
    ["unknown op type", t({ failure: [{ type: "get", key: s("k"), end: null }] })],
    ["end not bytes", t({ failure: [{ type: "delete", key: s("k"), end: "z" }] })],
    ["compact -1", { kind: CommandKind.Compact, version: -1 } as Command],
    ["ttl NaN", { kind: CommandKind.SessionOpen, nowMs: 1, ttlMs: NaN } as Command],
    ["session 0.5", { kind: CommandKind.SessionClose, nowMs: 1, sessionId: 0.5 } as Command],
    ["unknown kind", { kind: 9 } as unknown as Command],
  ])("%s", (_, c) => {
    expect(() => encodeCommand(c)).toThrow();
    let err: unknown;
    try {
      encodeCommand(c);
    } catch (e) {
      err = e;
    }
    expect(err instanceof RangeError || err instanceof TypeError).toBe(true);
  });
});

// ── Fuzz ──────────────────────────────────────────────────────────────────────────────────────

function randomCommand(r: () => number, allowSession = true): Command {
  const int = (n: number): number => Math.floor(r() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  const num = (): number => pick([0, 1, 2, 255, 2 ** 32 - 1, 2 ** 32, MAX, int(1e6), Math.floor(r() * MAX)]);
  const bytes = (min: number): Uint8Array => {
    const n = min + pick([0, 0, 1, 2, 3, 8, 40, 300]);
    return new Uint8Array(n).map(() => int(256));
  };
  const end = (): Uint8Array | null => (r() < 0.4 ? null : bytes(0));
  const compare = (): TxnCompare => {
    const target = pick(["version", "create", "value", "exists"] as const);
    const op = target === "exists" ? pick(["=", "!="] as const) : pick(["=", "!=", "<", ">"] as const);
    return { target, op, key: bytes(1), version: num(), value: bytes(0), exists: r() < 0.5 };
  };
  const op = (): TxnOp => {
    switch (int(3)) {
      case 0:
        return { type: "put", key: bytes(1), value: bytes(0), meta: pick([0, 1, 0xffffffff, int(2 ** 32)]), expireAt: num() };
      case 1:
        return { type: "delete", key: bytes(0), end: end() };
      default:
        return { type: "range", key: bytes(0), end: end(), limit: Math.max(1, num()), reverse: r() < 0.5, keysOnly: r() < 0.5, countOnly: r() < 0.5 };
    }
  };
  const list = <T>(f: () => T): T[] => Array.from({ length: pick([0, 0, 1, 2, 5]) }, f);
  const txn = (): Command => ({ kind: CommandKind.Txn, nowMs: num(), compares: list(compare), success: list(op), failure: list(op) });
  switch (int(allowSession ? 8 : 3) + 1) {
    case 1:
      return { kind: CommandKind.Put, key: bytes(1), value: bytes(0), meta: int(2 ** 32), expireAt: num() };
    case 2:
      return { kind: CommandKind.Delete, key: bytes(1) };
    case 3:
      return txn();
    case 4:
      return { kind: CommandKind.ExpireKey, key: bytes(1), version: Math.max(1, num()) };
    case 5:
      return { kind: CommandKind.Compact, version: num() };
    case 6:
      return { kind: CommandKind.SessionOpen, nowMs: num(), ttlMs: num() };
    case 7:
      return { kind: CommandKind.SessionClose, nowMs: num(), sessionId: num() };
    default:
      return { kind: CommandKind.InSession, sessionId: num(), seq: num(), nowMs: num(), inner: randomCommand(r, false) };
  }
}

/** Decoding `b` either throws CommandDecodeError or yields a command that re-encodes to `b`. */
function checkTotal(b: Uint8Array): boolean {
  let c: Command;
  try {
    c = decodeCommand(b);
  } catch (e) {
    if (!(e instanceof CommandDecodeError)) throw new Error(`decoding ${hex(b)} threw ${String(e)}`);
    return false;
  }
  const again = encodeCommand(c);
  if (hex(again) !== hex(b)) throw new Error(`decoded ${hex(b)} re-encodes to ${hex(again)}`);
  return true;
}

describe("fuzz", () => {
  test("random commands round trip; their truncations, bit flips and splices only ever throw CommandDecodeError or re-encode identically", () => {
    const r = rng(0x5eed);
    let decodedMutants = 0;
    for (let i = 0; i < 2500; i++) {
      const c = randomCommand(r);
      const b = roundTrip(c);
      const cuts = b.length <= 120 ? Array.from({ length: b.length }, (_, n) => n) : Array.from({ length: 40 }, () => Math.floor(r() * b.length));
      for (const n of cuts) expect(checkTotal(b.subarray(0, n))).toBe(false);
      for (let k = 0; k < 30; k++) {
        const m = b.slice();
        const pos = Math.floor(r() * m.length);
        switch (k % 5) {
          case 0:
            m[pos] ^= 1 << Math.floor(r() * 8);
            break;
          case 1:
            m[pos] = Math.floor(r() * 256);
            break;
          case 2:
            m[pos] = r() < 0.5 ? 0xff : 0; // 0xff in a count's high byte: a huge count
            break;
          case 3: {
            // a random 4-byte value (length or count) at a random place
            const v = Math.floor(r() * 2 ** 32);
            for (let j = 0; j < 4 && pos + j < m.length; j++) m[pos + j] = (v >>> (8 * j)) & 0xff;
            break;
          }
          default: {
            // delete or insert a byte
            const spliced = r() < 0.5 ? new Bytes().raw(m.subarray(0, pos)).raw(m.subarray(pos + 1)).done() : new Bytes().raw(m.subarray(0, pos)).u8(Math.floor(r() * 256)).raw(m.subarray(pos)).done();
            if (checkTotal(spliced)) decodedMutants++;
            continue;
          }
        }
        if (checkTotal(m)) decodedMutants++;
      }
    }
    // Some mutants (e.g. a flipped value byte) are valid commands; the property holds for them too.
    expect(decodedMutants).toBeGreaterThan(0);
  }, 60_000); // ~2.5 s alone; CI runs it beside other suites on 2 cores

  test("random byte strings behind a valid header only ever throw CommandDecodeError or re-encode identically", () => {
    const r = rng(42);
    for (let i = 0; i < 20000; i++) {
      const n = Math.floor(r() * 64);
      const b = new Uint8Array(n + 2).map(() => Math.floor(r() * 256));
      b[0] = 1;
      b[1] = 1 + Math.floor(r() * 8);
      // Small counts and lengths, so that the decoder gets past the first field often.
      for (let j = 2; j < b.length; j++) if (r() < 0.5) b[j] = Math.floor(r() * 4);
      checkTotal(b);
    }
  });
});

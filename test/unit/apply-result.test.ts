// The ApplyResult codec (src/storage/apply-result.ts): these bytes are stored in the state machine
// per session request, so a retried request gets exactly the stored answer. The encoding must be
// deterministic and its decoding total (any malformed input -> ApplyResultDecodeError only).

import { describe, expect, test } from "bun:test";
import {
  type ApplyErrorCode,
  type ApplyResult,
  ApplyResultDecodeError,
  type RangeResult,
  type TxnOpResult,
  decodeApplyResult,
  encodeApplyResult,
} from "../../src/storage/apply-result.ts";
import { type KvRecord } from "../../src/storage/fsm.ts";

const s = (x: string): Uint8Array => new TextEncoder().encode(x);
const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const MAX = Number.MAX_SAFE_INTEGER;

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
  lp(b: Uint8Array): this {
    return this.u32(b.length).raw(b);
  }
  done(): Uint8Array {
    return new Uint8Array(this.parts);
  }
}

function expectDecodeError(b: Uint8Array, message?: RegExp): void {
  let err: unknown;
  try {
    decodeApplyResult(b);
  } catch (e) {
    err = e;
  }
  if (!(err instanceof ApplyResultDecodeError)) throw new Error(`expected ApplyResultDecodeError for ${hex(b)}, got ${String(err)}`);
  if (message) expect(err.message).toMatch(message);
}

function roundTrip(r: ApplyResult): Uint8Array {
  const b = encodeApplyResult(r);
  expect(decodeApplyResult(b)).toEqual(r);
  expect(hex(encodeApplyResult(decodeApplyResult(b)))).toBe(hex(b));
  // Deterministic: the same value always gives the same bytes.
  expect(hex(encodeApplyResult(structuredClone(r)))).toBe(hex(b));
  return b;
}

const CODES: ApplyErrorCode[] = ["session-unknown", "session-seq-too-old", "session-limit", "compact-future", "compact-old", "txn-conflict"];
const kv = (k: string, v: string, n: number): KvRecord => ({ key: s(k), value: s(v), meta: n, version: n + 1, createVersion: n, expireAt: n * 1000 });

describe("layout", () => {
  test("every kind encodes exactly the documented bytes", () => {
    const cases: [ApplyResult, Uint8Array][] = [
      [{ kind: "write", version: 7 }, new Bytes().u8(1).u8(1).f64(7).done()],
      [{ kind: "session-opened", sessionId: 12, ttlMs: 300000 }, new Bytes().u8(1).u8(3).f64(12).f64(300000).done()],
      [{ kind: "session-closed", sessionId: 12 }, new Bytes().u8(1).u8(4).f64(12).done()],
      [{ kind: "compacted", compacted: MAX }, new Bytes().u8(1).u8(5).f64(MAX).done()],
      ...CODES.map((code, i): [ApplyResult, Uint8Array] => [{ kind: "error", code, message: "nö" }, new Bytes().u8(1).u8(6).u8(i + 1).lp(s("nö")).done()]),
      [
        {
          kind: "txn",
          succeeded: true,
          version: 40,
          results: [
            { type: "put", version: 40 },
            { type: "delete", deleted: 3 },
            { type: "range", kvs: [{ key: s("k"), value: s("vv"), meta: 5, version: 6, createVersion: 2, expireAt: 9 }], more: true, count: 11, version: 39 },
          ],
        },
        new Bytes()
          .u8(1).u8(2).u8(1).f64(40).u32(3)
          .u8(1).f64(40)
          .u8(2).f64(3)
          .u8(3).u8(1).f64(11).f64(39).u32(1).lp(s("k")).lp(s("vv")).u32(5).f64(6).f64(2).f64(9)
          .done(),
      ],
    ];
    for (const [r, want] of cases) {
      expect(hex(encodeApplyResult(r))).toBe(hex(want));
      expect(decodeApplyResult(want)).toEqual(r);
    }
  });
});

describe("round trips", () => {
  test("edge cases", () => {
    roundTrip({ kind: "write", version: 0 });
    roundTrip({ kind: "write", version: MAX });
    roundTrip({ kind: "txn", succeeded: false, version: 1, results: [] });
    roundTrip({ kind: "txn", succeeded: true, version: MAX, results: [{ type: "range", kvs: [], more: false, count: 0, version: 0 }] });
    const long = new Uint8Array(5000).map((_, i) => i & 0xff);
    roundTrip({
      kind: "txn",
      succeeded: true,
      version: 2 ** 32 + 1,
      results: [
        { type: "range", kvs: [{ key: long, value: new Uint8Array(0), meta: 0xffffffff, version: MAX, createVersion: MAX, expireAt: MAX }, kv("a", "", 0)], more: false, count: MAX, version: MAX },
        { type: "delete", deleted: 0 },
      ],
    });
    roundTrip({ kind: "session-opened", sessionId: MAX, ttlMs: 0 });
    roundTrip({ kind: "session-closed", sessionId: 0 });
    roundTrip({ kind: "compacted", compacted: 0 });
    for (const message of ["", "x".repeat(70000), "\ufeffleading BOM kept", "emoji 🙂 and NUL \0", "ça"]) {
      for (const code of CODES) roundTrip({ kind: "error", code, message });
    }
  });

  test("decoded keys and values are copies: the input buffer may be reused", () => {
    const b = encodeApplyResult({ kind: "txn", succeeded: true, version: 1, results: [{ type: "range", kvs: [kv("key", "value", 1)], more: false, count: 1, version: 1 }] });
    const d = decodeApplyResult(b);
    b.fill(0);
    expect(d).toEqual({ kind: "txn", succeeded: true, version: 1, results: [{ type: "range", kvs: [kv("key", "value", 1)], more: false, count: 1, version: 1 }] });
  });
});

describe("decoding rejects", () => {
  test("headers", () => {
    expectDecodeError(new Uint8Array(0));
    expectDecodeError(new Uint8Array([1]));
    expectDecodeError(new Uint8Array([0, 1]), /format/);
    expectDecodeError(new Uint8Array([2, 1]), /format/);
    expectDecodeError(new Uint8Array([1, 0]), /tag/);
    expectDecodeError(new Uint8Array([1, 7]), /tag/);
    expect(() => decodeApplyResult([1, 1] as unknown as Uint8Array)).toThrow(ApplyResultDecodeError);
  });

  test("every truncation and trailing bytes of every kind", () => {
    const samples: ApplyResult[] = [
      { kind: "write", version: 3 },
      { kind: "txn", succeeded: true, version: 3, results: [{ type: "put", version: 3 }, { type: "delete", deleted: 1 }, { type: "range", kvs: [kv("a", "b", 1), kv("c", "", 2)], more: true, count: 4, version: 3 }] },
      { kind: "session-opened", sessionId: 1, ttlMs: 2 },
      { kind: "session-closed", sessionId: 1 },
      { kind: "compacted", compacted: 1 },
      { kind: "error", code: "txn-conflict", message: "key k is put twice" },
    ];
    for (const r of samples) {
      const b = encodeApplyResult(r);
      for (let n = 0; n < b.length; n++) expectDecodeError(b.subarray(0, n));
      expectDecodeError(new Bytes().raw(b).u8(0).done(), /trailing/);
    }
  });

  test("numbers, bools, enums, counts and UTF-8", () => {
    for (const bad of [-1, 0.5, 2 ** 53, NaN, Infinity]) {
      expectDecodeError(new Bytes().u8(1).u8(1).f64(bad).done(), /safe integer/);
      expectDecodeError(new Bytes().u8(1).u8(2).u8(0).f64(1).u32(1).u8(2).f64(bad).done(), /safe integer/);
      expectDecodeError(new Bytes().u8(1).u8(2).u8(0).f64(1).u32(1).u8(3).u8(0).f64(0).f64(0).u32(1).lp(s("k")).lp(s("v")).u32(0).f64(0).f64(bad).f64(0).done(), /safe integer/);
    }
    expectDecodeError(new Bytes().u8(1).u8(2).u8(2).f64(1).u32(0).done(), /succeeded/);
    expectDecodeError(new Bytes().u8(1).u8(2).u8(1).f64(1).u32(1).u8(3).u8(2).f64(0).f64(0).u32(0).done(), /more/);
    expectDecodeError(new Bytes().u8(1).u8(2).u8(1).f64(1).u32(1).u8(0).f64(0).done(), /type/);
    expectDecodeError(new Bytes().u8(1).u8(2).u8(1).f64(1).u32(1).u8(4).f64(0).done(), /type/);
    expectDecodeError(new Bytes().u8(1).u8(6).u8(0).lp(s("m")).done(), /error code/);
    expectDecodeError(new Bytes().u8(1).u8(6).u8(7).lp(s("m")).done(), /error code/);
    expectDecodeError(new Bytes().u8(1).u8(6).u8(1).lp(new Uint8Array([0xc3, 0x28])).done(), /UTF-8/);
    expectDecodeError(new Bytes().u8(1).u8(6).u8(1).lp(new Uint8Array([0xed, 0xa0, 0x80])).done(), /UTF-8/); // a surrogate
    expectDecodeError(new Bytes().u8(1).u8(6).u8(1).u32(0xffffffff).done(), /truncated/);
    for (const n of [0xffffffff, 1000]) {
      expectDecodeError(new Bytes().u8(1).u8(2).u8(1).f64(1).u32(n).done(), /cannot fit/);
      expectDecodeError(new Bytes().u8(1).u8(2).u8(1).f64(1).u32(1).u8(3).u8(0).f64(0).f64(0).u32(n).done(), /cannot fit/);
    }
  });
});

describe("encoding rejects invalid results (a caller bug)", () => {
  test.each([
    ["unknown kind", { kind: "nope" }],
    ["negative version", { kind: "write", version: -1 }],
    ["unknown error code", { kind: "error", code: "oops", message: "" }],
    ["message not a string", { kind: "error", code: "txn-conflict", message: 5 }],
    ["fractional count", { kind: "txn", succeeded: true, version: 1, results: [{ type: "range", kvs: [], more: false, count: 0.5, version: 1 }] }],
    ["meta too large", { kind: "txn", succeeded: true, version: 1, results: [{ type: "range", kvs: [{ ...kv("k", "v", 1), meta: 2 ** 32 }], more: false, count: 1, version: 1 }] }],
    ["unknown op result", { kind: "txn", succeeded: true, version: 1, results: [{ type: "get" }] }],
  ])("%s", (_, r) => {
    let err: unknown;
    try {
      encodeApplyResult(r as unknown as ApplyResult);
    } catch (e) {
      err = e;
    }
    expect(err instanceof RangeError || err instanceof TypeError).toBe(true);
  });
});

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

function randomResult(r: () => number): ApplyResult {
  const int = (n: number): number => Math.floor(r() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  const num = (): number => pick([0, 1, 2 ** 32 - 1, 2 ** 32, MAX, int(1e6), Math.floor(r() * MAX)]);
  const bytes = (): Uint8Array => new Uint8Array(pick([0, 1, 3, 20, 300])).map(() => int(256));
  const range = (): RangeResult => ({
    kvs: Array.from({ length: pick([0, 1, 3]) }, () => ({ key: bytes(), value: bytes(), meta: int(2 ** 32), version: num(), createVersion: num(), expireAt: num() })),
    more: r() < 0.5,
    count: num(),
    version: num(),
  });
  const op = (): TxnOpResult => pick([() => ({ type: "put", version: num() }) as const, () => ({ type: "delete", deleted: num() }) as const, () => ({ type: "range", ...range() }) as const])();
  switch (int(6)) {
    case 0:
      return { kind: "write", version: num() };
    case 1:
      return { kind: "txn", succeeded: r() < 0.5, version: num(), results: Array.from({ length: pick([0, 1, 2, 4]) }, op) };
    case 2:
      return { kind: "session-opened", sessionId: num(), ttlMs: num() };
    case 3:
      return { kind: "session-closed", sessionId: num() };
    case 4:
      return { kind: "compacted", compacted: num() };
    default:
      return { kind: "error", code: pick(CODES), message: pick(["", "session 5 is unknown", "ü🙂", "\ufeff"]) };
  }
}

function checkTotal(b: Uint8Array): boolean {
  let d: ApplyResult;
  try {
    d = decodeApplyResult(b);
  } catch (e) {
    if (!(e instanceof ApplyResultDecodeError)) throw new Error(`decoding ${hex(b)} threw ${String(e)}`);
    return false;
  }
  const again = encodeApplyResult(d);
  if (hex(again) !== hex(b)) throw new Error(`decoded ${hex(b)} re-encodes to ${hex(again)}`);
  return true;
}

describe("fuzz", () => {
  test("random results round trip; mutations only ever throw ApplyResultDecodeError or re-encode identically", () => {
    const r = rng(0xa991);
    let decodedMutants = 0;
    for (let i = 0; i < 2500; i++) {
      const b = roundTrip(randomResult(r));
      const cuts = b.length <= 120 ? Array.from({ length: b.length }, (_, n) => n) : Array.from({ length: 40 }, () => Math.floor(r() * b.length));
      for (const n of cuts) expect(checkTotal(b.subarray(0, n))).toBe(false);
      for (let k = 0; k < 30; k++) {
        const m = b.slice();
        const pos = Math.floor(r() * m.length);
        switch (k % 4) {
          case 0:
            m[pos] ^= 1 << Math.floor(r() * 8);
            break;
          case 1:
            m[pos] = Math.floor(r() * 256);
            break;
          case 2: {
            const v = Math.floor(r() * 2 ** 32);
            for (let j = 0; j < 4 && pos + j < m.length; j++) m[pos + j] = (v >>> (8 * j)) & 0xff;
            break;
          }
          default: {
            const spliced = r() < 0.5 ? new Bytes().raw(m.subarray(0, pos)).raw(m.subarray(pos + 1)).done() : new Bytes().raw(m.subarray(0, pos)).u8(Math.floor(r() * 256)).raw(m.subarray(pos)).done();
            if (checkTotal(spliced)) decodedMutants++;
            continue;
          }
        }
        if (checkTotal(m)) decodedMutants++;
      }
    }
    expect(decodedMutants).toBeGreaterThan(0);
  }, 60_000); // seconds of work: CI runs it beside other suites on 2 cores

  test("random byte strings behind a valid header", () => {
    const r = rng(7);
    for (let i = 0; i < 20000; i++) {
      const b = new Uint8Array(2 + Math.floor(r() * 48)).map(() => (r() < 0.5 ? Math.floor(r() * 4) : Math.floor(r() * 256)));
      b[0] = 1;
      b[1] = 1 + Math.floor(r() * 6);
      checkTotal(b);
    }
  });
});

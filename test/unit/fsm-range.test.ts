// Range and changes() against a model, and compaction (Compact and versionKeepNum).

import { describe, expect, test } from "bun:test";
import { type Command, CommandKind, type KeyRange, type TxnOp } from "../../src/storage/command.ts";
import { type ApplyOutcome, type KvStore, VersionCompactedError, VersionFutureError } from "../../src/storage/fsm.ts";
import { Prng } from "../sim/prng.ts";
import { Model, b, cmp, entry, ev, hex, inRange, openStore, put, rec, txn } from "./fsm-helpers.ts";

const L = (s: string): Uint8Array => Buffer.from(s, "latin1");
const P = "x".repeat(480); // the inline limit: longer keys are hashed
const POOL = [
  "\0", // the smallest key: lmdb-js's reverse scans stop before it unless told otherwise
  "\0\0",
  "a",
  "a\0",
  "a\0\0",
  "a\0b",
  "ab",
  "b",
  "b\0",
  "c",
  "x".repeat(479),
  P,
  `${P}\0`,
  `${P}a`,
  `${P}ab`,
  `${P}b`,
  `${P}${"a".repeat(300)}`,
  `${P}${"b".repeat(3000)}`,
  `${"x".repeat(479)}y${"q".repeat(50)}`,
  "y",
].map(L);

function randomKey(rng: Prng): Uint8Array {
  return POOL[rng.int(0, POOL.length - 1)];
}
function randomValue(rng: Prng): Uint8Array {
  const n = rng.float() < 0.1 ? rng.int(500, 2000) : rng.int(0, 30);
  const v = new Uint8Array(n);
  for (let i = 0; i < n; i++) v[i] = rng.int(0, 255);
  return v;
}
function randomBound(rng: Prng): Uint8Array {
  const k = randomKey(rng);
  const r = rng.float();
  if (r < 0.2) return Buffer.concat([Buffer.from(k), Buffer.from([0])]);
  if (r < 0.35) return k.subarray(0, rng.int(0, k.length));
  if (r < 0.45) return Buffer.concat([Buffer.from(k), Buffer.from([rng.int(0, 255)])]);
  return k;
}
function randomRange(rng: Prng): KeyRange {
  const key = rng.float() < 0.1 ? new Uint8Array(0) : randomBound(rng);
  if (rng.float() < 0.2) return { key, end: null };
  let end = randomBound(rng);
  if (rng.float() < 0.8 && cmp(end, key) < 0) end = Buffer.concat([Buffer.from(key), Buffer.from(end)]);
  return { key, end };
}
const conflicted = (ops: TxnOp[]): boolean => {
  const puts = ops.filter((o) => o.type === "put").map((o) => hex(o.key));
  if (new Set(puts).size !== puts.length) return true;
  return ops.some((d) => d.type === "delete" && ops.some((p) => p.type === "put" && inRange(p.key, d)));
};

/** Random puts, deletes and txns of puts / delete ranges, applied to the store and the model. */
function drive(st: KvStore, m: Model, rng: Prng, n: number, start: number, live: ApplyOutcome[]): number {
  let index = start;
  for (let i = 0; i < n; i++) {
    index++;
    const r = rng.float();
    let c: Command;
    if (r < 0.55) c = put(randomKey(rng), randomValue(rng), rng.int(0, 9), rng.float() < 0.15 ? rng.int(1, 3) * 1000 : 0);
    else if (r < 0.75) c = { kind: CommandKind.Delete, key: randomKey(rng) };
    else {
      const ops: TxnOp[] = [];
      for (let j = rng.int(1, 5); j > 0; j--) {
        if (rng.float() < 0.7) ops.push({ type: "put", key: randomKey(rng), value: randomValue(rng), meta: 1, expireAt: rng.float() < 0.2 ? 2000 : 0 });
        else ops.push({ type: "delete", ...randomRange(rng) });
      }
      c = txn(rng.int(0, 3000), ops);
    }
    const [o] = st.applyEntries([entry(index, c)]);
    live.push(o);
    if (c.kind === CommandKind.Txn && conflicted(c.success)) {
      expect(o.result).toMatchObject({ kind: "error", code: "txn-conflict" });
      expect(o.events).toEqual([]);
    } else m.apply(index, c);
  }
  return index;
}

function checkRanges(st: KvStore, m: Model, rng: Prng, n: number, minVersion: number): void {
  for (let i = 0; i < n; i++) {
    const r = randomRange(rng);
    const q = {
      ...r,
      limit: rng.float() < 0.3 ? rng.int(1, 3) : 1000,
      reverse: rng.float() < 0.4,
      keysOnly: rng.float() < 0.2,
      countOnly: rng.float() < 0.1,
      maxBytes: rng.float() < 0.2 ? rng.int(1, 3000) : 1 << 30,
      atVersion: rng.float() < 0.4 ? 0 : rng.int(Math.max(1, minVersion), st.appliedIndex),
      nowMs: rng.int(0, 3500),
    };
    const got = st.range(q);
    const want = m.range({ ...q, atVersion: q.atVersion === 0 ? Number.MAX_SAFE_INTEGER : q.atVersion });
    const shown = { kvs: got.kvs.map(rec), more: got.more, count: got.count };
    expect([i, shown]).toEqual([i, { kvs: want.kvs, more: want.more, count: want.count }]);
    expect(got.version).toBe(q.atVersion === 0 ? st.appliedIndex : q.atVersion);
  }
}

describe("range", () => {
  test("random puts, deletes and txns vs a model: ranges with limit, reverse, keysOnly, countOnly, maxBytes, at a version, TTL, long keys, 0x00 bytes", () => {
    const rng = new Prng(2024);
    const st = openStore();
    const m = new Model();
    let index = 0;
    const live: ApplyOutcome[] = [];
    for (let round = 0; round < 6; round++) {
      index = drive(st, m, rng, 60, index, live);
      checkRanges(st, m, rng, 150, 1);
      // Point reads agree too, with create versions.
      for (const k of POOL) {
        const v = rng.int(1, index);
        expect([hex(k).slice(0, 16), rec(st.get(k, v, 1500))]).toEqual([hex(k).slice(0, 16), m.get(k, v, 1500)]);
      }
    }
  });

  test("bounds: [key, end) exact for long keys sharing 480 bytes; results in user-key order; version and errors", () => {
    const st = openStore();
    const keys = [`${P}b`, `${P}a`, `${P}ab`, `${P}`, `${P}\0`, "a"].map(L);
    st.applyEntries(keys.map((k, i) => entry(i + 1, put(k, `v${i}`))));
    const sorted = [...keys].sort(cmp).map(hex);
    const all = st.range({ key: new Uint8Array(0), end: null, limit: 100, reverse: false, atVersion: 0, keysOnly: true, countOnly: false, nowMs: 0, maxBytes: 1 << 20 });
    expect(all.kvs.map((k) => hex(k.key))).toEqual(sorted);
    expect([all.count, all.more, all.version]).toEqual([6, false, 6]);
    const mid = st.range({ key: L(`${P}a`), end: L(`${P}b`), limit: 100, reverse: true, atVersion: 0, keysOnly: false, countOnly: false, nowMs: 0, maxBytes: 1 << 20 });
    expect(mid.kvs.map((k) => hex(k.key))).toEqual([`${P}ab`, `${P}a`].map((s) => hex(L(s))));
    const q = { key: b("a"), end: null, limit: 1, reverse: false, atVersion: 0, keysOnly: false, countOnly: false, nowMs: 0, maxBytes: 1 };
    expect(() => st.range({ ...q, atVersion: 7 })).toThrow(VersionFutureError);
    const paged = st.range(q);
    expect([paged.kvs.length, paged.more, paged.count]).toEqual([1, true, 6]);
  });
});

describe("changes", () => {
  test("every event exactly once, in (version, key) order, the same as the live stream; prefixes; limits never cut a version", () => {
    const rng = new Prng(77);
    const st = openStore();
    const m = new Model();
    const live: ApplyOutcome[] = [];
    const index = drive(st, m, rng, 400, 0, live);
    const stream = live.flatMap((o) => o.events.map(ev));
    expect(stream).toEqual(m.events);
    expect(st.changes(0, index, [], 1_000_000).map(ev)).toEqual(stream);
    // Paging with small limits, resuming after the last version seen, gives the same sequence.
    for (const limit of [1, 2, 3, 7]) {
      const got: ReturnType<typeof ev>[] = [];
      let after = 0;
      for (;;) {
        const page = st.changes(after, index, [], limit);
        if (page.length === 0) break;
        expect(page.length).toBeLessThanOrEqual(limit);
        const last = page[page.length - 1].version;
        got.push(...page.map(ev));
        after = last; // a version cut in two (it alone has more than `limit`) is skipped the rest of

      }
      expect(got.length).toBeLessThanOrEqual(stream.length);
      // Versions whose events fit in the limit come whole and in order.
      const fit = (v: number) => live[v - 1].events.length <= limit;
      expect(got.filter((e) => fit(e.version))).toEqual(stream.filter((e) => fit(e.version)));
    }
    // Prefixes (including a long one that only hashed keys match) and a window (after, through].
    for (const prefixes of [[b("a")], [b("a\0")], [L(`${P}a`)], [b("b"), b("c")], [L("x")]]) {
      const want = stream.filter((e) => e.version > 50 && e.version <= 300 && prefixes.some((p) => Buffer.from(e.key, "hex").subarray(0, p.length).equals(Buffer.from(p))));
      expect(st.changes(50, 300, prefixes, 1_000_000).map(ev)).toEqual(want);
    }
    expect(st.changes(index, index + 10, [], 10)).toEqual([]);
    expect(st.changes(10, 5, [], 10)).toEqual([]);
  });
});

describe("compaction", () => {
  test("Compact: reads below refused, reads at or above unchanged vs the model, changes after it complete; errors for future and old", () => {
    const rng = new Prng(99);
    const st = openStore();
    const m = new Model();
    const live: ApplyOutcome[] = [];
    let index = drive(st, m, rng, 300, 0, live);
    const C = 150;
    index++;
    const [o] = st.applyEntries([entry(index, { kind: CommandKind.Compact, version: C })]);
    expect(o.result).toEqual({ kind: "compacted", compacted: C });
    live.push(o);
    expect(st.compactedVersion).toBe(C);
    expect(() => st.get(POOL[0], C - 1, 0)).toThrow(VersionCompactedError);
    expect(() => st.range({ key: b("a"), end: null, limit: 10, reverse: false, atVersion: 1, keysOnly: false, countOnly: false, nowMs: 0, maxBytes: 100 })).toThrow(
      "version 1 is compacted: the oldest version kept is 150",
    );
    expect(() => st.changes(C - 1, index, [], 10)).toThrow(VersionCompactedError);
    try {
      st.changes(3, index, [], 10);
    } catch (e) {
      expect(e).toBeInstanceOf(VersionCompactedError);
      expect([(e as VersionCompactedError).requested, (e as VersionCompactedError).compacted]).toEqual([3, C]);
    }
    for (let v = C; v <= index; v += 7) for (const k of POOL) expect(rec(st.get(k, v, 1500))).toEqual(m.get(k, v, 1500));
    checkRanges(st, m, rng, 200, C);
    const stream = live.flatMap((x) => x.events.map(ev));
    expect(st.changes(C, index, [], 1_000_000).map(ev)).toEqual(stream.filter((e) => e.version > C));
    // Compacting removed history: fewer versions stored than written.
    const stored = POOL.reduce((n, k) => n + st.versions(k).length, 0);
    expect(stored).toBeLessThan(m.events.length);
    // Errors: above the current version, at or below the compacted one; nothing changes.
    const [future, old] = st.applyEntries([entry(index + 1, { kind: CommandKind.Compact, version: index + 5 }), entry(index + 2, { kind: CommandKind.Compact, version: C })]);
    expect(future.result).toMatchObject({ kind: "error", code: "compact-future" });
    expect(old.result).toMatchObject({ kind: "error", code: "compact-old" });
    expect(st.compactedVersion).toBe(C);
    // More writes and a second compaction keep everything consistent.
    index = drive(st, m, rng, 100, index + 2, live);
    st.applyEntries([entry(index + 1, { kind: CommandKind.Compact, version: index })]);
    index++;
    for (const k of POOL) expect(rec(st.get(k, index - 1, 0))).toEqual(m.get(k, index - 1, 0));
    checkRanges(st, m, rng, 100, index - 1);
    expect(st.changes(index - 1, index, [], 100)).toEqual([]);
  });

  test("a key deleted at or below C leaves nothing; a tombstone above C keeps its delete event", () => {
    const st = openStore();
    st.applyEntries([entry(1, put("k", "1")), entry(2, put("k", "2")), entry(3, { kind: CommandKind.Delete, key: b("k") }), entry(4, put("j", "1")), entry(5, { kind: CommandKind.Delete, key: b("j") })]);
    st.applyEntries([entry(6, { kind: CommandKind.Compact, version: 4 })]);
    expect(st.versions(b("k"))).toEqual([]);
    expect(st.versions(b("j"))).toEqual([
      { version: 4, deleted: false },
      { version: 5, deleted: true },
    ]);
    expect(st.get(b("j"), 4, 0)?.version).toBe(4);
    expect(st.changes(4, 6, [], 10).map((e) => [e.type, e.version])).toEqual([["delete", 5]]);
  });

  test("versionKeepNum: events after the compacted version stay complete", () => {
    const st = openStore(undefined, 2);
    const live: ApplyOutcome[] = [];
    const rng = new Prng(5);
    const m = new Model();
    const index = drive(st, m, rng, 300, 0, live);
    const c = st.compactedVersion;
    expect(c).toBeGreaterThan(0);
    const stream = live.flatMap((x) => x.events.map(ev));
    expect(st.changes(c, index, [], 1_000_000).map(ev)).toEqual(stream.filter((e) => e.version > c));
    for (const k of POOL) for (let v = c; v <= index; v += 13) expect(rec(st.get(k, v, 0))).toEqual(m.get(k, v, 0));
  });
});

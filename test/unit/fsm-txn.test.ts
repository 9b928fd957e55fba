// Txn semantics: compares, branches, ops, conflicts, one version, create_version.

import { describe, expect, test } from "bun:test";
import { CommandKind, type TxnCompare, type TxnOp } from "../../src/storage/command.ts";
import { type ApplyOutcome, type KvStore } from "../../src/storage/fsm.ts";
import { b, del, entry, hex, one, openStore, put, rec, txn } from "./fsm-helpers.ts";

const cmpOf = (key: string, target: TxnCompare["target"], op: TxnCompare["op"], x: { version?: number; value?: string; exists?: boolean }): TxnCompare => ({
  key: b(key),
  target,
  op,
  version: x.version ?? 0,
  value: b(x.value ?? ""),
  exists: x.exists ?? false,
});
const putOp = (key: string, value: string, expireAt = 0): TxnOp => ({ type: "put", key: b(key), value: b(value), meta: 5, expireAt });
const delOp = (key: string, end: string | null = null): TxnOp => (end === null ? { type: "delete", ...one(b(key)) } : { type: "delete", key: b(key), end: b(end) });
const rangeOp = (key: string, end: string | null, limit = 100): TxnOp => ({ type: "range", key: b(key), end: end === null ? null : b(end), limit, reverse: false, keysOnly: false, countOnly: false });

/** k: created at 1, rewritten at 2 (value "c"); t: written at 3, expires at 5000. */
function setup(): { st: KvStore; next: () => number } {
  const st = openStore();
  st.applyEntries([entry(1, put("k", "b")), entry(2, put("k", "c")), entry(3, put("t", "x", 0, 5000))]);
  let i = 3;
  return { st, next: () => ++i };
}
function run(st: KvStore, index: number, c: Parameters<typeof entry>[1]): ApplyOutcome {
  return st.applyEntries([entry(index, c)])[0];
}
const succeeded = (o: ApplyOutcome): boolean => {
  if (o.result?.kind !== "txn") throw new Error(`not a txn result: ${JSON.stringify(o.result)}`);
  return o.result.succeeded;
};

describe("txn", () => {
  test("compares of every target and op, on live, missing and expired keys", () => {
    const { st, next } = setup();
    const cases: [TxnCompare, number, boolean][] = [
      [cmpOf("k", "version", "=", { version: 2 }), 0, true],
      [cmpOf("k", "version", "=", { version: 1 }), 0, false],
      [cmpOf("k", "version", ">", { version: 1 }), 0, true],
      [cmpOf("k", "version", ">", { version: 2 }), 0, false],
      [cmpOf("k", "version", "<", { version: 3 }), 0, true],
      [cmpOf("k", "version", "<", { version: 2 }), 0, false],
      [cmpOf("k", "version", "!=", { version: 2 }), 0, false],
      [cmpOf("k", "version", "!=", { version: 7 }), 0, true],
      [cmpOf("k", "create", "=", { version: 1 }), 0, true],
      [cmpOf("k", "create", ">", { version: 0 }), 0, true],
      [cmpOf("k", "create", "<", { version: 1 }), 0, false],
      [cmpOf("k", "create", "!=", { version: 1 }), 0, false],
      [cmpOf("k", "value", "=", { value: "c" }), 0, true],
      [cmpOf("k", "value", "=", { value: "b" }), 0, false],
      [cmpOf("k", "value", ">", { value: "b" }), 0, true],
      [cmpOf("k", "value", "<", { value: "d" }), 0, true],
      [cmpOf("k", "value", "<", { value: "c" }), 0, false],
      [cmpOf("k", "value", "!=", { value: "c" }), 0, false],
      [cmpOf("k", "exists", "=", { exists: true }), 0, true],
      [cmpOf("k", "exists", "!=", { exists: true }), 0, false],
      [cmpOf("k", "exists", "=", { exists: false }), 0, false],
      // A missing key: version 0, create 0, no value (never true), does not exist.
      [cmpOf("nope", "version", "=", { version: 0 }), 0, true],
      [cmpOf("nope", "create", "=", { version: 0 }), 0, true],
      [cmpOf("nope", "version", "<", { version: 1 }), 0, true],
      [cmpOf("nope", "value", "=", { value: "" }), 0, false],
      [cmpOf("nope", "value", "!=", { value: "x" }), 0, false],
      [cmpOf("nope", "exists", "=", { exists: false }), 0, true],
      [cmpOf("nope", "exists", "!=", { exists: true }), 0, true],
      // An expired key (at the txn's nowMs) is missing; just before, it is there.
      [cmpOf("t", "exists", "=", { exists: true }), 4999, true],
      [cmpOf("t", "version", "=", { version: 3 }), 4999, true],
      [cmpOf("t", "exists", "=", { exists: false }), 5000, true],
      [cmpOf("t", "version", "=", { version: 0 }), 5000, true],
      [cmpOf("t", "value", "=", { value: "x" }), 5000, false],
    ];
    for (const [c, now, want] of cases) expect([c.key.toString(), c.target, c.op, now, succeeded(run(st, next(), txn(now, [], [c])))]).toEqual([c.key.toString(), c.target, c.op, now, want]);
    // Several compares: all must hold.
    expect(succeeded(run(st, next(), txn(0, [], [cmpOf("k", "version", "=", { version: 2 }), cmpOf("nope", "exists", "=", { exists: false })])))).toBe(true);
    expect(succeeded(run(st, next(), txn(0, [], [cmpOf("k", "version", "=", { version: 2 }), cmpOf("nope", "exists", "=", { exists: true })])))).toBe(false);
    // Nothing was written by any of these.
    expect(st.changes(3, st.appliedIndex, [], 100)).toEqual([]);
  });

  test("branch choice: success or failure ops run in order with one result each, all writes at the txn's version", () => {
    const { st, next } = setup();
    const i = next();
    const o = run(st, i, txn(0, [putOp("s1", "yes"), delOp("k")], [cmpOf("k", "value", "=", { value: "c" })], [putOp("f1", "no")]));
    expect(o.result).toEqual({ kind: "txn", succeeded: true, version: i, results: [{ type: "put", version: i }, { type: "delete", deleted: 1 }] });
    expect(o.version).toBe(i);
    expect([st.get(b("s1"), 0, 0)?.version, st.get(b("k"), 0, 0), st.get(b("f1"), 0, 0)]).toEqual([i, null, null]);
    const j = next();
    const f = run(st, j, txn(0, [putOp("s2", "yes")], [cmpOf("k", "exists", "=", { exists: true })], [putOp("f2", "no"), putOp("f3", "no")]));
    expect(f.result).toEqual({ kind: "txn", succeeded: false, version: j, results: [{ type: "put", version: j }, { type: "put", version: j }] });
    expect([st.get(b("s2"), 0, 0), st.get(b("f2"), 0, 0)?.version, st.get(b("f3"), 0, 0)?.version]).toEqual([null, j, j]);
    // Events: one per write, all at the txn's version, in key order whatever the op order.
    const m = next();
    const z = run(st, m, txn(0, [putOp("zz", "1"), putOp("aa", "2"), delOp("f2"), putOp("mm", "3")]));
    expect(z.events.map((e) => [e.type, Buffer.from(e.key).toString(), e.version])).toEqual([
      ["put", "aa", m],
      ["delete", "f2", m],
      ["put", "mm", m],
      ["put", "zz", m],
    ]);
    expect(st.changes(m - 1, m, [], 100).map((e) => Buffer.from(e.key).toString())).toEqual(["aa", "f2", "mm", "zz"]);
  });

  test("a range op sees the txn's earlier writes (and deletes); delete ranges count and skip expired keys", () => {
    const { st, next } = setup();
    st.applyEntries([entry(next(), put("r/1", "one")), entry(next(), put("r/2", "two", 0, 100)), entry(next(), put("r/3", "three"))]);
    const i = next();
    const o = run(st, i, txn(200, [delOp("r/3"), putOp("r/0", "zero"), rangeOp("r/", "r0")]));
    if (o.result?.kind !== "txn") throw new Error("no txn result");
    const r1 = o.result.results[2];
    // r/2 expired at 200: invisible to the range; r/3 is deleted by the first op, r/0 put by the second.
    expect(r1).toMatchObject({ type: "range", more: false, count: 2, version: i });
    expect(r1.type === "range" && r1.kvs.map((kv) => [Buffer.from(kv.key).toString(), Buffer.from(kv.value).toString(), kv.version])).toEqual([
      ["r/0", "zero", i],
      ["r/1", "one", 4],
    ]);
    expect(o.events.map((e) => [e.type, Buffer.from(e.key).toString()])).toEqual([
      ["put", "r/0"],
      ["delete", "r/3"],
    ]);
    const j = next();
    const d = run(st, j, txn(200, [delOp("r/", "r0"), rangeOp("r/", "r0")]));
    if (d.result?.kind !== "txn") throw new Error("no txn result");
    // The delete range leaves the expired r/2 to the TTL reaper (whose ExpireKey reports the expiry).
    expect(d.result.results[0]).toEqual({ type: "delete", deleted: 2 });
    expect(d.result.results[1]).toMatchObject({ type: "range", kvs: [], count: 0, more: false });
    expect(st.get(b("r/2"), 0, 0)?.value).toEqual(b("two"));
    expect(d.events.map((e) => [e.type, Buffer.from(e.key).toString(), e.version])).toEqual([
      ["delete", "r/0", j],
      ["delete", "r/1", j],
    ]);
  });

  test("txn-conflict: a key put twice or put inside a delete range of the branch; nothing written", () => {
    const { st, next } = setup();
    const conflicts: TxnOp[][] = [
      [putOp("a", "1"), putOp("a", "2")],
      [putOp("k", "1"), delOp("k")],
      [delOp("j", "l"), putOp("k", "1")],
      [delOp("a", null), putOp("zzz", "1")].map((o) => (o.type === "delete" ? { ...o, end: null } : o)),
    ];
    for (const ops of conflicts) {
      const i = next();
      const o = run(st, i, txn(0, ops));
      expect(o.result).toMatchObject({ kind: "error", code: "txn-conflict" });
      expect(o.events).toEqual([]);
    }
    expect(st.get(b("k"), 0, 0)?.value).toEqual(b("c"));
    expect(st.get(b("a"), 0, 0)).toBeNull();
    expect(st.changes(3, st.appliedIndex, [], 100)).toEqual([]);
    // Only the chosen branch is checked; overlapping deletes are fine.
    const ok = run(st, next(), txn(0, [delOp("k"), delOp("a", "z")], [cmpOf("k", "exists", "=", { exists: true })], [putOp("x", "1"), putOp("x", "2")]));
    expect(ok.result).toMatchObject({ kind: "txn", succeeded: true, results: [{ deleted: 1 }, { deleted: 1 }] });
  });

  test("create_version: kept across rewrites, new after a delete; a txn treats a key expired at its time as new, a plain put cannot", () => {
    const { st, next } = setup();
    expect(rec(st.get(b("k"), 0, 0))?.create).toBe(1);
    expect(rec(st.get(b("k"), 1, 0))?.create).toBe(1);
    const d = next();
    st.applyEntries([entry(d, del("k"))]);
    const p = next();
    st.applyEntries([entry(p, put("k", "again"))]);
    expect(st.get(b("k"), 0, 0)?.createVersion).toBe(p);
    const t = next();
    run(st, t, txn(0, [putOp("k", "txn")]));
    expect(st.get(b("k"), 0, 0)?.createVersion).toBe(p);
    // "t" expires at 5000: a txn at 6000 recreates it; a plain put keeps its create version.
    const x = next();
    run(st, x, txn(6000, [putOp("t", "new")]));
    expect(st.get(b("t"), 0, 0)?.createVersion).toBe(x);
    const y = next();
    st.applyEntries([entry(y, put("t2", "v", 0, 10)), entry(y + 1, put("t2", "v2"))]);
    expect(st.get(b("t2"), 0, 0)?.createVersion).toBe(y);
    // The range results carry create versions too.
    const r = st.range({ key: b("k"), end: b("l"), limit: 10, reverse: false, atVersion: 0, keysOnly: false, countOnly: false, nowMs: 0, maxBytes: 1000 });
    expect(r.kvs.map((kv) => [hex(kv.key), kv.createVersion])).toEqual([[hex(b("k")), p]]);
    expect(CommandKind.Txn).toBe(4);
  });
});

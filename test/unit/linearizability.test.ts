import { describe, expect, test } from "bun:test";
import {
  checkLinearizable,
  type CheckResult,
  type HistoryOp,
  type KvOp,
} from "../sim/linearizability.ts";

// ---------------------------------------------------------------------------
// Hand-written history helpers
// ---------------------------------------------------------------------------

class H {
  private nextId = 1;
  readonly ops: HistoryOp[] = [];

  put(key: string, value: string, invoke: number, complete: number | null, client = 0): HistoryOp {
    return this.add({ kind: "put", key, value }, invoke, complete, null, client);
  }

  del(key: string, invoke: number, complete: number | null, client = 0): HistoryOp {
    return this.add({ kind: "delete", key }, invoke, complete, null, client);
  }

  get(
    key: string,
    result: string | null,
    invoke: number,
    complete: number | null,
    client = 0,
  ): HistoryOp {
    return this.add({ kind: "get", key }, invoke, complete, result, client);
  }

  check(opts?: { maxStates?: number }): CheckResult {
    return checkLinearizable(this.ops, opts);
  }

  private add(
    op: KvOp,
    invoke: number,
    complete: number | null,
    result: string | null,
    client: number,
  ): HistoryOp {
    const h: HistoryOp = { id: this.nextId++, client, op, invoke, complete, result };
    this.ops.push(h);
    return h;
  }
}

function expectOk(r: CheckResult): void {
  expect(r).toEqual({ ok: true });
}

function expectRejected(r: CheckResult, key: string): void {
  expect(r.ok).toBe(false);
  expect(r.timedOut).toBeUndefined();
  expect(r.key).toBe(key);
  expect(typeof r.explanation).toBe("string");
  expect((r.explanation ?? "").length).toBeGreaterThan(0);
}

// ---------------------------------------------------------------------------
// Random linearizable history generator
// ---------------------------------------------------------------------------

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface GenOptions {
  seed: number;
  ops: number;
  keys: number;
  clients: number;
  /** Probability that an op times out (complete = null). */
  timeoutRate: number;
  /** When set, put values are drawn from this many distinct values instead of being unique. */
  valueDomain?: number;
}

/**
 * Simulates a real register per key: each op gets a random interval and a
 * linearization point inside it (timed-out writes take effect at a random
 * point after invoke, possibly after the timeout, or never); results are then
 * computed by applying ops in linearization-point order.
 */
function generateHistory(o: GenOptions): HistoryOp[] {
  const rnd = mulberry32(o.seed);
  const int = (n: number): number => Math.floor(rnd() * n);
  const clientFree: number[] = new Array<number>(o.clients).fill(0);
  const recs: { h: HistoryOp; lin: number | null }[] = [];

  for (let i = 0; i < o.ops; i++) {
    // Next op is issued by the client that becomes free first.
    let c = 0;
    for (let j = 1; j < o.clients; j++) if (clientFree[j] < clientFree[c]) c = j;
    const invoke = clientFree[c] + int(3);
    const complete = invoke + 1 + int(10);
    const key = `k${int(o.keys)}`;
    const r = rnd();
    const value = o.valueDomain === undefined ? `v${i}` : `v${int(o.valueDomain)}`;
    const op: KvOp =
      r < 0.45 ? { kind: "put", key, value } : r < 0.55 ? { kind: "delete", key } : { kind: "get", key };
    const timedOut = rnd() < o.timeoutRate;
    let lin: number | null = invoke + rnd() * (complete - invoke);
    if (timedOut) {
      if (op.kind === "get" || rnd() < 0.5) lin = null;
      else lin = invoke + rnd() * (complete - invoke) * 4;
    }
    recs.push({
      h: { id: i, client: c, op, invoke, complete: timedOut ? null : complete, result: null },
      lin,
    });
    clientFree[c] = complete;
  }

  const applied = recs.filter((r) => r.lin !== null);
  applied.sort((a, b) => (a.lin ?? 0) - (b.lin ?? 0) || a.h.id - b.h.id);
  const reg = new Map<string, string>();
  for (const { h } of applied) {
    switch (h.op.kind) {
      case "put":
        reg.set(h.op.key, h.op.value);
        break;
      case "delete":
        reg.delete(h.op.key);
        break;
      case "get":
        h.result = reg.get(h.op.key) ?? null;
        break;
    }
  }
  return recs.map((r) => r.h);
}

function cloneHistory(history: HistoryOp[]): HistoryOp[] {
  return history.map((h) => ({ ...h, op: { ...h.op } }));
}

function completedGets(history: HistoryOp[]): HistoryOp[] {
  return history.filter((h) => h.op.kind === "get" && h.complete !== null);
}

function putValue(h: HistoryOp): string | null {
  return h.op.kind === "put" ? h.op.value : null;
}

// ---------------------------------------------------------------------------
// Accepting
// ---------------------------------------------------------------------------

describe("checkLinearizable accepts", () => {
  test("empty history", () => {
    expectOk(checkLinearizable([]));
  });

  test("sequential put/get", () => {
    const h = new H();
    h.get("a", null, 0, 1);
    h.put("a", "v1", 2, 3);
    h.get("a", "v1", 4, 5);
    h.put("a", "v2", 6, 7);
    h.get("a", "v2", 8, 9);
    expectOk(h.check());
  });

  test("concurrent put and get: get may see the old value", () => {
    const h = new H();
    h.put("a", "v1", 0, 1);
    h.put("a", "v2", 2, 10, 1);
    h.get("a", "v1", 3, 5, 2);
    expectOk(h.check());
  });

  test("concurrent put and get: get may see the new value", () => {
    const h = new H();
    h.put("a", "v1", 0, 1);
    h.put("a", "v2", 2, 10, 1);
    h.get("a", "v2", 3, 5, 2);
    expectOk(h.check());
  });

  test("concurrent put and get on an initially absent key: null or the value", () => {
    const a = new H();
    a.put("a", "v1", 0, 10, 1);
    a.get("a", null, 1, 2, 2);
    a.get("a", "v1", 3, 4, 2);
    expectOk(a.check());
  });

  test("equal times are concurrent (complete == invoke is not real-time ordered)", () => {
    const h = new H();
    h.put("a", "v1", 0, 5, 1);
    h.get("a", null, 5, 6, 2); // may linearize before the put
    const g = new H();
    g.get("a", "v1", 0, 5, 2); // may linearize after a put invoked at 5
    g.put("a", "v1", 5, 6, 1);
    expectOk(h.check());
    expectOk(g.check());
  });

  test("a timed-out put whose value is later read", () => {
    const h = new H();
    h.put("a", "v0", 0, 1);
    h.put("a", "v1", 2, null, 1);
    h.get("a", "v0", 3, 4, 2);
    h.get("a", "v1", 50, 51, 2);
    h.get("a", "v1", 60, 61, 2);
    expectOk(h.check());
  });

  test("a timed-out put may take effect long after its timeout", () => {
    const h = new H();
    h.put("a", "v1", 0, null, 1);
    h.put("a", "v2", 10, 11, 2);
    h.get("a", "v2", 12, 13, 2);
    h.get("a", "v1", 20, 21, 2); // the delayed put landed after v2
    expectOk(h.check());
  });

  test("a timed-out put never observed", () => {
    const h = new H();
    h.put("a", "v1", 0, 1);
    h.put("a", "v2", 2, null, 1);
    h.get("a", "v1", 10, 11, 2);
    h.get("a", "v1", 20, 21, 2);
    h.put("a", "v3", 30, 31, 2);
    h.get("a", "v3", 40, 41, 2);
    expectOk(h.check());
  });

  test("a timed-out delete may or may not take effect", () => {
    const took = new H();
    took.put("a", "v1", 0, 1);
    took.del("a", 2, null, 1);
    took.get("a", null, 10, 11, 2);
    expectOk(took.check());
    const never = new H();
    never.put("a", "v1", 0, 1);
    never.del("a", 2, null, 1);
    never.get("a", "v1", 10, 11, 2);
    expectOk(never.check());
  });

  test("timed-out gets are ignored, whatever their recorded result", () => {
    const h = new H();
    h.put("a", "v1", 0, 1);
    h.get("a", "garbage", 2, null, 1);
    h.get("a", "v1", 3, 4, 2);
    expectOk(h.check());
  });

  test("delete then get null", () => {
    const h = new H();
    h.put("a", "v1", 0, 1);
    h.del("a", 2, 3);
    h.get("a", null, 4, 5);
    h.put("a", "v2", 6, 7);
    h.get("a", "v2", 8, 9);
    expectOk(h.check());
  });

  test("independent keys", () => {
    const h = new H();
    h.put("a", "1", 0, 10, 1);
    h.put("b", "2", 0, 10, 2);
    h.get("a", "1", 11, 12, 3);
    h.get("b", "2", 11, 12, 3);
    h.get("b", null, 1, 2, 4); // b still absent while its put is in flight
    h.del("a", 13, 14, 1);
    h.get("a", null, 15, 16, 3);
    h.get("b", "2", 15, 16, 4);
    expectOk(h.check());
  });

  test("overlapping puts may be reordered: v2 then v1", () => {
    const h = new H();
    h.put("a", "v1", 0, 20, 1);
    h.put("a", "v2", 0, 20, 2);
    h.get("a", "v2", 4, 5, 3);
    h.get("a", "v1", 6, 7, 3);
    expectOk(h.check());
  });

  test("repeated values written by several puts", () => {
    const h = new H();
    h.put("a", "x", 0, 1);
    h.put("a", "y", 2, 3);
    h.put("a", "x", 4, 10, 1);
    h.get("a", "y", 5, 6, 2);
    h.get("a", "x", 7, 8, 2);
    h.get("a", "x", 11, 12, 2);
    expectOk(h.check());
  });
});

// ---------------------------------------------------------------------------
// Rejecting
// ---------------------------------------------------------------------------

describe("checkLinearizable rejects", () => {
  test("stale read: null after a completed put", () => {
    const h = new H();
    h.put("a", "v1", 0, 1);
    h.get("a", null, 2, 3, 1);
    expectRejected(h.check(), "a");
  });

  test("stale read: older value after a completed overwrite", () => {
    const h = new H();
    h.put("a", "v1", 0, 1);
    h.put("a", "v2", 2, 3);
    h.get("a", "v1", 4, 5, 1);
    expectRejected(h.check(), "a");
  });

  test("read of a value never written", () => {
    const h = new H();
    h.put("a", "v1", 0, 1);
    const bad = h.get("a", "nope", 2, 3, 1);
    const r = h.check();
    expectRejected(r, "a");
    expect(r.explanation).toContain(`#${bad.id}`);
  });

  test("read of a value written only to another key", () => {
    const h = new H();
    h.put("b", "v1", 0, 1);
    h.get("a", "v1", 2, 3, 1);
    expectRejected(h.check(), "a");
  });

  test("v2 read, then a later read of v1 that v2 overwrote strictly before", () => {
    const h = new H();
    h.put("a", "v1", 0, 1);
    h.put("a", "v2", 2, 3);
    h.get("a", "v2", 4, 5, 1);
    const bad = h.get("a", "v1", 6, 7, 2);
    const r = h.check();
    expectRejected(r, "a");
    expect(r.explanation).toContain(`#${bad.id}`);
  });

  test("v2 read, then v1, even while v2's put is still in flight", () => {
    const h = new H();
    h.put("a", "v1", 0, 1);
    h.put("a", "v2", 2, 20, 3);
    h.get("a", "v2", 4, 5, 1);
    h.get("a", "v1", 6, 7, 2);
    expectRejected(h.check(), "a");
  });

  test("lost write: completed put, later non-concurrent get returns null", () => {
    const h = new H();
    h.get("a", null, 0, 1);
    h.put("a", "v1", 2, 3, 1);
    h.get("a", null, 5, 6, 2);
    expectRejected(h.check(), "a");
  });

  test("lost write is explained by a concurrent delete (control) but not a finished one that preceded the put", () => {
    const ok = new H();
    ok.put("a", "v1", 2, 3, 1);
    ok.del("a", 2, 10, 3);
    ok.get("a", null, 5, 6, 2);
    expectOk(ok.check());
    const bad = new H();
    bad.del("a", 0, 1, 3);
    bad.put("a", "v1", 2, 3, 1);
    bad.get("a", null, 5, 6, 2);
    expectRejected(bad.check(), "a");
  });

  test("get returns a value whose put was invoked only after the get completed", () => {
    const h = new H();
    const bad = h.get("a", "v1", 0, 5, 1);
    h.put("a", "v1", 6, 7, 2);
    const r = h.check();
    expectRejected(r, "a");
    expect(r.explanation).toContain(`#${bad.id}`);
  });

  test("a timed-out put that was observed cannot be un-observed", () => {
    const h = new H();
    h.put("a", "v1", 0, 1);
    h.put("a", "v2", 2, null, 1);
    h.get("a", "v2", 10, 11, 2);
    h.get("a", "v1", 20, 21, 2);
    expectRejected(h.check(), "a");
  });

  test("get after delete returning the deleted value", () => {
    const h = new H();
    h.put("a", "v1", 0, 1);
    h.del("a", 2, 3);
    h.get("a", "v1", 4, 5);
    expectRejected(h.check(), "a");
  });

  test("reports the offending key among several keys", () => {
    const h = new H();
    h.put("a", "1", 0, 1);
    h.get("a", "1", 2, 3);
    h.put("b", "1", 0, 1);
    h.put("b", "2", 2, 3);
    h.get("b", "1", 4, 5);
    h.put("c", "1", 0, 1);
    h.get("c", "1", 2, 3);
    expectRejected(h.check(), "b");
  });

  test("explanation names the blocked op and its times", () => {
    const h = new H();
    h.put("a", "v1", 0, 1);
    h.put("a", "v2", 2, 3);
    h.get("a", "v2", 4, 5, 1);
    h.get("a", "v1", 16, 17, 7);
    const r = h.check();
    expectRejected(r, "a");
    const e = r.explanation ?? "";
    expect(e).toContain("#4");
    expect(e).toContain("client 7");
    expect(e).toContain("16");
    expect(e).toContain("17");
    expect(e).toContain('"v1"');
  });
});

// ---------------------------------------------------------------------------
// Budget
// ---------------------------------------------------------------------------

describe("checkLinearizable budget", () => {
  // 12 fully concurrent puts, then a get that cannot be explained: proving the
  // rejection requires exploring many (subset, value) states.
  function hardHistory(): H {
    const h = new H();
    for (let i = 0; i < 12; i++) h.put("a", `v${i}`, 0, 100, i);
    h.get("a", "v3", 0, 100, 20);
    h.get("a", null, 200, 201, 21);
    return h;
  }

  test("gives up with ok + timedOut when maxStates is exhausted", () => {
    expect(hardHistory().check({ maxStates: 1000 })).toEqual({ ok: true, timedOut: true });
  });

  test("with the default budget the same history is rejected", () => {
    expectRejected(hardHistory().check(), "a");
  });
});

// ---------------------------------------------------------------------------
// Randomized
// ---------------------------------------------------------------------------

describe("checkLinearizable on generated histories", () => {
  const seeds = Array.from({ length: 25 }, (_, i) => 1000 + i);

  test("accepts generated linearizable histories", () => {
    for (const seed of seeds) {
      const history = generateHistory({ seed, ops: 300, keys: 3, clients: 5, timeoutRate: 0.05 });
      const r = checkLinearizable(history);
      if (!r.ok || r.timedOut) throw new Error(`seed ${seed}: ${JSON.stringify(r)}`);
    }
  });

  test("accepts generated histories with a small value domain", () => {
    for (const seed of seeds) {
      const history = generateHistory({
        seed,
        ops: 300,
        keys: 3,
        clients: 5,
        timeoutRate: 0.05,
        valueDomain: 3,
      });
      const r = checkLinearizable(history);
      if (!r.ok || r.timedOut) throw new Error(`seed ${seed}: ${JSON.stringify(r)}`);
    }
  });

  test("rejects when one get is corrupted to a never-written value", () => {
    for (const seed of seeds) {
      const history = cloneHistory(
        generateHistory({ seed, ops: 300, keys: 3, clients: 5, timeoutRate: 0.05 }),
      );
      const rnd = mulberry32(seed ^ 0xabcdef);
      const gets = completedGets(history);
      const victim = gets[Math.floor(rnd() * gets.length)];
      victim.result = "impossible-value";
      const r = checkLinearizable(history);
      expect(r.ok).toBe(false);
      expect(r.key).toBe(victim.op.key);
      expect(r.explanation ?? "").toContain(`#${victim.id}`);
    }
  });

  test("rejects when one get is corrupted to a value from the future", () => {
    let corrupted = 0;
    for (const seed of seeds) {
      const history = cloneHistory(
        generateHistory({ seed, ops: 300, keys: 3, clients: 5, timeoutRate: 0.05 }),
      );
      const rnd = mulberry32(seed ^ 0x1234);
      const candidates: { get: HistoryOp; value: string }[] = [];
      for (const g of completedGets(history)) {
        const gc = g.complete ?? 0;
        for (const p of history) {
          const v = putValue(p);
          if (v !== null && p.op.key === g.op.key && p.invoke > gc) {
            candidates.push({ get: g, value: v });
            break;
          }
        }
      }
      if (candidates.length === 0) continue;
      const c = candidates[Math.floor(rnd() * candidates.length)];
      c.get.result = c.value;
      corrupted++;
      const r = checkLinearizable(history);
      if (r.ok) throw new Error(`seed ${seed}: corruption of #${c.get.id} not detected`);
      expect(r.key).toBe(c.get.op.key);
    }
    expect(corrupted).toBeGreaterThan(seeds.length / 2);
  });

  test("rejects when one get is corrupted to a value overwritten strictly before it", () => {
    let corrupted = 0;
    for (const seed of seeds) {
      const history = cloneHistory(
        generateHistory({ seed, ops: 300, keys: 3, clients: 5, timeoutRate: 0.05 }),
      );
      const rnd = mulberry32(seed ^ 0x5678);
      // Unique values: v1 is written only by p1; p1 < p2 < g in real time, so
      // p2 (a put or delete) definitely overwrote v1 before g.
      const candidates: { get: HistoryOp; value: string }[] = [];
      const writes = history.filter((h) => h.op.kind !== "get" && h.complete !== null);
      for (const g of completedGets(history)) {
        for (const p1 of writes) {
          const v1 = putValue(p1);
          if (v1 === null || p1.op.key !== g.op.key || v1 === g.result) continue;
          const p1c = p1.complete ?? 0;
          const overwritten = writes.some(
            (p2) =>
              p2.op.key === g.op.key &&
              p2.invoke > p1c &&
              (p2.complete ?? Infinity) < g.invoke,
          );
          if (overwritten) {
            candidates.push({ get: g, value: v1 });
            break;
          }
        }
      }
      if (candidates.length === 0) continue;
      const c = candidates[Math.floor(rnd() * candidates.length)];
      c.get.result = c.value;
      corrupted++;
      const r = checkLinearizable(history);
      if (r.ok) throw new Error(`seed ${seed}: corruption of #${c.get.id} not detected`);
      expect(r.key).toBe(c.get.op.key);
    }
    expect(corrupted).toBeGreaterThan(seeds.length / 2);
  });
});

// ---------------------------------------------------------------------------
// Performance
// ---------------------------------------------------------------------------

describe("checkLinearizable performance", () => {
  test("2000 ops, 5 keys, 5 clients is checked quickly without timing out", () => {
    const history = generateHistory({
      seed: 42,
      ops: 2000,
      keys: 5,
      clients: 5,
      timeoutRate: 0.02,
    });
    const start = performance.now();
    const r = checkLinearizable(history);
    const elapsed = performance.now() - start;
    expect(r).toEqual({ ok: true });
    expect(elapsed).toBeLessThan(1000);
  });

  test("2000 ops with repeated values is checked without timing out", () => {
    const history = generateHistory({
      seed: 7,
      ops: 2000,
      keys: 5,
      clients: 5,
      timeoutRate: 0.02,
      valueDomain: 4,
    });
    const start = performance.now();
    const r = checkLinearizable(history);
    const elapsed = performance.now() - start;
    expect(r).toEqual({ ok: true });
    expect(elapsed).toBeLessThan(1000);
  });
});

// End-to-end: Range against a model of the key space, paging at one version while writes go on,
// and the request limits of the new RPCs (INVALID_ARGUMENT naming the limit, the node serving on).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import type { Compare, KeyValue, RangeResponse, RequestOp, WatchResponse } from "../../src/server/gen/rbkv.ts";
import type { RbdkvClient, RangeRequestInit } from "../../src/server/grpc-service.ts";
import {
  Clients,
  Compare_Result,
  Compare_Target,
  EventType,
  ReadConsistency,
  after,
  code,
  compare,
  compareBytes,
  deadline,
  del,
  get,
  hex,
  message,
  prefixEnd,
  prng,
  put,
  seedFromEnv,
} from "./api-helpers.ts";
import { TestCluster, dec, enc, eventually, sleep } from "./harness.ts";

// Limits set on the command line so that the test does not depend on the defaults.
const MAX_TXN_OPS = 16;
const MAX_RANGE_LIMIT = 200;
const MAX_REQUEST_BYTES = 256 * 1024;

interface Rec {
  key: Uint8Array;
  value: Uint8Array;
  meta: number;
  version: number;
  createVersion: number;
}

/** The key space as a user can know it from the answers to its writes. */
class Model {
  readonly recs = new Map<string, Rec>();

  put(key: Uint8Array, value: Uint8Array, meta: number, version: number): void {
    const old = this.recs.get(hex(key));
    this.recs.set(hex(key), { key, value, meta, version, createVersion: old ? old.createVersion : version });
  }

  delete(key: Uint8Array): boolean {
    return this.recs.delete(hex(key));
  }

  clone(): Model {
    const m = new Model();
    for (const [k, r] of this.recs) m.recs.set(k, { ...r });
    return m;
  }

  /** The answer Range must give for [key, end) (end null = no bound). */
  expect(q: { key: Uint8Array; end: Uint8Array | null; limit: number; reverse: boolean; keysOnly: boolean; countOnly: boolean }): { kvs: string[]; count: number; more: boolean } {
    const inRange = [...this.recs.values()].filter((r) => compareBytes(r.key, q.key) >= 0 && (q.end === null || compareBytes(r.key, q.end) < 0)).sort((a, b) => compareBytes(a.key, b.key));
    if (q.reverse) inRange.reverse();
    const limit = q.limit === 0 ? MAX_RANGE_LIMIT : q.limit;
    const page = q.countOnly ? [] : inRange.slice(0, limit);
    return {
      kvs: page.map((r) => show({ key: r.key, value: q.keysOnly ? new Uint8Array(0) : r.value, meta: r.meta, version: r.version, createVersion: r.createVersion, expireAt: 0 })),
      count: inRange.length,
      more: q.countOnly ? false : inRange.length > limit,
    };
  }
}

function show(kv: KeyValue): string {
  return `${hex(kv.key)}=${hex(kv.value)} m${kv.meta} v${kv.version} c${kv.createVersion} x${kv.expireAt}`;
}

const b = (...parts: (string | number[])[]): Uint8Array => {
  const out: number[] = [];
  for (const p of parts) {
    if (typeof p === "string") out.push(...enc(p));
    else out.push(...p);
  }
  return new Uint8Array(out);
};

describe("Range", () => {
  let c: TestCluster;
  let cl: Clients;

  beforeAll(async () => {
    c = await TestCluster.create(3, ["--election-timeout=600", `--max-txn-ops=${MAX_TXN_OPS}`, `--max-range-limit=${MAX_RANGE_LIMIT}`, `--max-request-bytes=${MAX_REQUEST_BYTES}`]);
    await c.startSeedStyle();
    cl = new Clients(c);
  }, 60_000);

  afterAll(async () => {
    cl?.close();
    if (c) await c.destroy();
  });

  test("reverse, limit, keys_only, count_only, prefix and range_end agree with a model, at the latest and at an older version", async () => {
    const rnd = prng(seedFromEnv("RANGE_SEED"));
    const leader = await c.leader();
    const w = cl.of(leader);
    const model = new Model();
    // Bytes that sort at the edges: 0x00 (the "\0" of range_end), 0xff (prefix ends), '/'.
    const alphabet = [0x00, 0x01, 0x2f, 0x30, 0x61, 0x62, 0x7a, 0x7f, 0xfe, 0xff];
    const keys = new Map<string, Uint8Array>();
    const addKey = (k: Uint8Array): void => void keys.set(hex(k), k);
    for (const k of [b("m/"), b("m/", [0]), b("m/", [0, 0]), b("m/a", [0], "b"), b("m/", [0xff]), b("m/", [0xff, 0xff]), b("l"), b("m"), b("m."), b("m0"), b("n"), b([0]), b([0xff, 0xff])]) addKey(k);
    // Long keys (beyond the 480 bytes stored inline: the store hashes their tail), sharing
    // long prefixes and differing at the end, at the edges of the byte range.
    const long = "m/L".padEnd(600, "q");
    for (const tail of [[], [0], [0, 0], [1], [0x61], [0xfe], [0xff], [0xff, 0xff]]) addKey(b(long, tail));
    addKey(b(long.slice(0, 479)));
    addKey(b(long.slice(0, 480)));
    addKey(b(long.slice(0, 481)));
    addKey(b(long.slice(0, 480), [0]));
    while (keys.size < 320) {
      const len = rnd.int(0, 6);
      addKey(b("m/", Array.from({ length: len }, () => rnd.pick(alphabet))));
    }
    const all = [...keys.values()];

    // Write them: txns of several puts (one version for several keys) and single puts.
    const writeTxn = async (ops: RequestOp[]): Promise<number> => {
      const r = await w.txnAsync({ success: ops }, deadline(10_000));
      expect(r.succeeded).toBe(true);
      return r.version;
    };
    for (let i = 0; i < all.length; ) {
      const n = rnd.int(1, MAX_TXN_OPS);
      const batch = all.slice(i, i + n).map((k) => ({ k, v: b(`v${rnd.int(0, 1e6)}`, [0, rnd.int(0, 255)]), meta: rnd.int(0, 3) }));
      i += n;
      if (batch.length === 1 && rnd.float() < 0.5) {
        const { k, v, meta } = batch[0]!;
        const r = await w.executeAsync({ op: 2, kv: { key: k, value: v, meta } }, deadline(10_000));
        model.put(k, v, meta, r.version);
      } else {
        const version = await writeTxn(batch.map(({ k, v, meta }) => put(k, v, meta)));
        for (const { k, v, meta } of batch) model.put(k, v, meta, version);
      }
    }
    // Overwrites (version moves, create_version stays), deletes, and re-creations.
    const churn = async (): Promise<void> => {
      for (let n = 0; n < 60; n++) {
        const k = rnd.pick(all);
        const roll = rnd.float();
        if (roll < 0.5) {
          const v = b(`o${n}`);
          const r = await w.executeAsync({ op: 2, kv: { key: k, value: v } }, deadline(10_000));
          model.put(k, v, 0, r.version);
        } else if (roll < 0.85) {
          const existed = model.delete(k);
          if (existed) await w.executeAsync({ op: 3, kv: { key: k } }, deadline(10_000));
        } else {
          // A delete of a range in a txn: reports how many keys it deleted.
          // [lo, hi) over a few neighbouring keys of the pool.
          const sorted = [...all].sort(compareBytes);
          const at = rnd.int(0, sorted.length - 2);
          const lo = sorted[at]!;
          const hi = sorted[Math.min(sorted.length - 1, at + rnd.int(1, 4))]!;
          const before = [...model.recs.values()].filter((r) => compareBytes(r.key, lo) >= 0 && compareBytes(r.key, hi) < 0);
          const r = await w.txnAsync({ success: [del(lo, hi)] }, deadline(10_000));
          expect(r.responses[0]!.result).toEqual({ $case: "delete", value: { deleted: before.length } });
          for (const x of before) model.delete(x.key);
        }
      }
    };
    // "\0", the smallest key there is, exists at both versions read below (a put after each churn).
    const putZero = async (v: string): Promise<void> => {
      const r = await w.executeAsync({ op: 2, kv: { key: b([0]), value: b(v) } }, deadline(10_000));
      model.put(b([0]), b(v), 0, r.version);
    };
    await churn();
    await putZero("zero-1");
    const v1 = (await w.executeAsync({ op: 2, kv: { key: b("m/", [0x61, 0]), value: b("at-v1") } }, deadline(10_000))).version;
    model.put(b("m/", [0x61, 0]), b("at-v1"), 0, v1);
    const atV1 = model.clone();
    await churn();
    await putZero("zero-2");
    const v2 = (await w.executeAsync({ op: 2, kv: { key: b("m/"), value: b("at-v2") } }, deadline(10_000))).version;
    model.put(b("m/"), b("at-v2"), 0, v2);
    expect(model.recs.size).toBeGreaterThan(150);

    // Random queries, each on a random node; expected answers from the model at that version.
    const failures: string[] = [];
    let checked = 0;
    const run = async (req: RangeRequestInit & { key: Uint8Array }, end: Uint8Array | null, m: Model, label: string): Promise<void> => {
      const node = rnd.int(0, 2);
      const got: RangeResponse = await cl.of(node).rangeAsync(req, deadline(10_000));
      const want = m.expect({ key: req.key, end, limit: req.limit ?? 0, reverse: req.reverse ?? false, keysOnly: req.keysOnly ?? false, countOnly: req.countOnly ?? false });
      const g = { kvs: got.kvs.map(show), count: got.count, more: req.countOnly ? false : got.more };
      checked++;
      if (JSON.stringify(g) !== JSON.stringify(want)) failures.push(`${label} on node${node + 1}: ${JSON.stringify(req, (_, x) => (x instanceof Uint8Array ? hex(x) : x))}\n  want ${JSON.stringify(want)}\n  got  ${JSON.stringify(g)}`);
      const wantVersion = req.version ? req.version : v2;
      if (req.version ? got.version !== wantVersion : got.version < wantVersion) failures.push(`${label}: read at version ${got.version}, expected ${req.version ? "" : ">= "}${wantVersion}`);
    };

    // Fixed cases first: the edges a model-less test would miss.
    const mPrefixEnd = prefixEnd(b("m/"));
    expect(hex(mPrefixEnd!)).toBe(hex(b("m0")));
    for (const [m, version] of [[model, 0], [atV1, v1]] as const) {
      const rc = version === 0 ? ReadConsistency.Linearizable : ReadConsistency.Serializable;
      await run({ key: b("m/"), prefix: true, version, rc }, mPrefixEnd, m, "prefix m/");
      await run({ key: b("m/"), prefix: true, reverse: true, limit: 5, version, rc }, mPrefixEnd, m, "prefix m/ reverse limit 5");
      await run({ key: b("m/"), prefix: true, countOnly: true, version, rc }, mPrefixEnd, m, "prefix m/ count_only");
      await run({ key: b("m/"), prefix: true, keysOnly: true, limit: 17, version, rc }, mPrefixEnd, m, "prefix m/ keys_only");
      await run({ key: b("m/", [0]), rangeEnd: b("m/", [0, 1]), version, rc }, b("m/", [0, 1]), m, "[m/\\0, m/\\0\\1)");
      await run({ key: b("m/", [0]), version, rc }, after(b("m/", [0])), m, "the single key m/\\0");
      await run({ key: b("m/a", [0], "b"), version, rc }, after(b("m/a", [0], "b")), m, "the single key m/a\\0b");
      await run({ key: b("m/", [0xff]), prefix: true, version, rc }, prefixEnd(b("m/", [0xff])), m, "prefix m/\\xff");
      await run({ key: b([0xff]), prefix: true, version, rc }, null, m, "prefix \\xff (no upper bound)");
      await run({ key: b("m"), rangeEnd: b([0]), limit: 50, version, rc }, null, m, "[m, \\0): every key from m on");
      await run({ key: b([0]), rangeEnd: b([0]), countOnly: true, version, rc }, null, m, "everything, count_only");
      await run({ key: b("m/zzz-missing"), version, rc }, after(b("m/zzz-missing")), m, "a missing single key");
      // The smallest key there is, "\0", read backwards (found: lmdb-js's reverse scan skips it).
      await run({ key: b([0]), reverse: true, version, rc }, after(b([0])), m, "the single key \\0, reverse");
      await run({ key: b([0]), rangeEnd: b("m"), reverse: true, version, rc }, b("m"), m, "[\\0, m) reverse");
      await run({ key: b([0]), rangeEnd: b([0]), reverse: true, countOnly: true, version, rc }, null, m, "everything, reverse, count_only");
      await run({ key: b("m/"), prefix: true, limit: MAX_RANGE_LIMIT, version, rc }, mPrefixEnd, m, "limit = the max");
    }
    // Bounds inside the long keys: exact, whatever the store keeps of them.
    for (const [m, version] of [[model, 0], [atV1, v1]] as const) {
      for (const [lo, hi] of [[b(long), b(long, [0x61])], [b(long, [0]), b(long, [0xff])], [b(long.slice(0, 480)), b(long, [1])], [b(long.slice(0, 479)), b(long.slice(0, 481))]] as const) {
        await run({ key: lo, rangeEnd: hi, version }, hi, m, `long [${lo.length}B, ${hi.length}B)`);
        await run({ key: lo, rangeEnd: hi, version, reverse: true, limit: 2 }, hi, m, `long [${lo.length}B, ${hi.length}B) reverse limit 2`);
      }
      await run({ key: b(long), prefix: true, version }, prefixEnd(b(long)), m, "prefix: a 600-byte key");
      await run({ key: b(long, [0xff]), prefix: true, version, reverse: true }, prefixEnd(b(long, [0xff])), m, "prefix: a 600-byte key ending in 0xff");
    }
    // Then random ones.
    for (let n = 0; n < 160; n++) {
      const m = rnd.float() < 0.3 ? atV1 : model;
      const version = m === atV1 ? v1 : 0;
      const rc = rnd.pick([ReadConsistency.Serializable, ReadConsistency.Linearizable, ReadConsistency.RCUnknown]);
      const limit = rnd.pick([0, 1, 2, 7, rnd.int(1, 40), MAX_RANGE_LIMIT]);
      const opts = { limit, reverse: rnd.float() < 0.4, keysOnly: rnd.float() < 0.25, countOnly: rnd.float() < 0.15, version, rc };
      const shape = rnd.int(0, 3);
      if (shape === 0) {
        const p = rnd.pick(all).slice(0, rnd.int(1, 4));
        await run({ key: p, prefix: true, ...opts }, prefixEnd(p), m, `random prefix #${n}`);
      } else if (shape === 1) {
        let [lo, hi] = [rnd.pick(all), rnd.pick(all)];
        if (compareBytes(lo, hi) === 0) continue;
        if (compareBytes(lo, hi) > 0) [lo, hi] = [hi, lo];
        await run({ key: lo, rangeEnd: hi, ...opts }, hi, m, `random [lo, hi) #${n}`);
      } else if (shape === 2) {
        const lo = rnd.pick(all);
        await run({ key: lo, rangeEnd: b([0]), ...opts }, null, m, `random [lo, \\0) #${n}`);
      } else {
        const k = rnd.pick(all);
        await run({ key: k, ...opts }, after(k), m, `random single key #${n}`);
      }
    }
    if (failures.length > 0) console.log(`range model: ${failures.length} mismatches: ${failures.map((f) => f.split(" on node")[0]).join("; ")}`);
    expect(failures.slice(0, 5)).toEqual([]);
    expect(checked).toBeGreaterThan(150);
  }, 60_000);

  test("a reverse Range includes the key \"\\0\" (the smallest key) at the latest and at an older version", async () => {
    const leader = await c.leader();
    const x = cl.of(leader);
    const zero = new Uint8Array([0]);
    const v1 = (await x.executeAsync({ op: 2, kv: { key: zero, value: enc("one") } }, deadline(5000))).version;
    const v2 = (await x.executeAsync({ op: 2, kv: { key: zero, value: enc("two") } }, deadline(5000))).version;
    await x.executeAsync({ op: 2, kv: { key: enc("zz-after"), value: enc("z") } }, deadline(5000)); // so that v2 is an older version
    const read = async (version: number, reverse: boolean): Promise<string> => {
      const r = await x.rangeAsync({ key: zero, reverse, version, rc: ReadConsistency.Linearizable }, deadline(5000));
      return `${r.count}:${r.kvs.map((kv) => `${dec(kv.value)}@${kv.version}`).join(",")}`;
    };
    const got: Record<string, string> = {};
    for (const [label, version] of [["latest", 0], ["v1", v1], ["v2", v2]] as const) {
      for (const reverse of [false, true]) got[`${label} ${reverse ? "reverse" : "forward"}`] = await read(version, reverse);
    }
    expect(got).toEqual({
      "latest forward": `1:two@${v2}`,
      "latest reverse": `1:two@${v2}`,
      "v1 forward": `1:one@${v1}`,
      "v1 reverse": `1:one@${v1}`,
      "v2 forward": `1:two@${v2}`,
      "v2 reverse": `1:two@${v2}`,
    });
    // Clean up so that the model test's key space is its own.
    await x.executeAsync({ op: 3, kv: { key: enc("zz-after") } }, deadline(5000));
  });

  test("paging with limit 7 at the first page's version stays consistent while the same keys are rewritten", async () => {
    const leader = await c.leader();
    const keys = Array.from({ length: 50 }, (_, i) => `p/${String(i).padStart(2, "0")}`);
    for (let i = 0; i < keys.length; i += MAX_TXN_OPS) {
      await cl.of(leader).txnAsync({ success: keys.slice(i, i + MAX_TXN_OPS).map((k) => put(k, "init")) }, deadline(10_000));
    }
    let stop = false;
    let writes = 0;
    const writer = (async () => {
      const rnd = prng(7);
      for (let n = 0; !stop; n++) {
        const k = rnd.pick(keys);
        const node = (leader + 1 + (n % 2)) % 3; // through the followers
        try {
          if (rnd.float() < 0.2) await cl.of(node).executeAsync({ op: 3, kv: { key: enc(k) } }, deadline(5000));
          else await cl.of(node).executeAsync({ op: 2, kv: { key: enc(k), value: enc(`w${n}`) } }, deadline(5000));
          writes++;
        } catch {}
      }
    })();

    const pEnd = prefixEnd(enc("p/"))!;
    const pages = async (client: (n: number) => RbdkvClient, reverse: boolean): Promise<{ kvs: KeyValue[]; version: number; pages: number; writesDuring: number }> => {
      const w0 = writes;
      const first = await client(0).rangeAsync({ key: enc("p/"), prefix: true, limit: 7, reverse, rc: ReadConsistency.Linearizable }, deadline(5000));
      const version = first.version;
      const kvs = [...first.kvs];
      let more = first.more;
      let n = 1;
      while (more) {
        await sleep(40); // let the writer change the keys between pages
        const last = kvs[kvs.length - 1]!.key;
        const page = await client(n).rangeAsync(
          reverse ? { key: enc("p/"), rangeEnd: last, limit: 7, reverse, version, rc: ReadConsistency.Linearizable } : { key: after(last), rangeEnd: pEnd, limit: 7, version, rc: ReadConsistency.Linearizable },
          deadline(5000),
        );
        expect(page.version).toBe(version);
        expect(page.count).toBeLessThanOrEqual(first.count);
        expect(page.kvs.length).toBeLessThanOrEqual(7);
        kvs.push(...page.kvs);
        more = page.more;
        n++;
      }
      return { kvs, version, pages: n, writesDuring: writes - w0 };
    };

    try {
      await sleep(200);
      for (const reverse of [false, true, false]) {
        // Each page from another node (all of them read at the first page's version).
        const got = await pages((n) => cl.of((leader + n) % 3), reverse);
        const whole = await cl.of(leader).rangeAsync({ key: enc("p/"), prefix: true, version: got.version }, deadline(5000));
        const want = reverse ? [...whole.kvs].reverse() : whole.kvs;
        expect(got.kvs.map(show)).toEqual(want.map(show));
        expect(got.kvs.length).toBe(whole.count);
        expect(got.pages).toBeGreaterThanOrEqual(Math.ceil(whole.count / 7));
        // The writer did change these keys meanwhile: the latest state is another one.
        expect(got.writesDuring).toBeGreaterThan(5);
        const latest = await cl.of(leader).rangeAsync({ key: enc("p/"), prefix: true }, deadline(5000));
        expect(latest.version).toBeGreaterThan(got.version);
        expect(latest.kvs.map(show)).not.toEqual(whole.kvs.map(show));
      }
    } finally {
      stop = true;
      await writer;
    }
  }, 60_000);
});

describe("limits and bad requests", () => {
  let c: TestCluster;
  let cl: Clients;

  beforeAll(async () => {
    c = await TestCluster.create(3, ["--election-timeout=600", `--max-txn-ops=${MAX_TXN_OPS}`, `--max-range-limit=${MAX_RANGE_LIMIT}`, `--max-request-bytes=${MAX_REQUEST_BYTES}`]);
    await c.startSeedStyle();
    cl = new Clients(c);
  }, 60_000);

  afterAll(async () => {
    cl?.close();
    if (c) await c.destroy();
  });

  /** The error of a call that must fail. */
  async function refusal(p: Promise<unknown>): Promise<{ code: grpc.status | undefined; message: string }> {
    try {
      await p;
    } catch (err) {
      return { code: (err as grpc.ServiceError).code, message: message(err) };
    }
    return { code: grpc.status.OK, message: "(answered OK)" };
  }

  async function stillServes(i: number, tag: string): Promise<void> {
    const r = await cl.of(i).executeAsync({ op: 2, kv: { key: enc(`alive/${tag}`), value: enc("yes") } }, deadline(5000));
    expect(r.version).toBeGreaterThan(0);
    const g = await cl.of(i).rangeAsync({ key: enc(`alive/${tag}`) }, deadline(5000));
    expect(g.kvs.map((kv) => [Buffer.from(kv.key).toString(), Buffer.from(kv.value).toString()])).toEqual([[`alive/${tag}`, "yes"]]);
  }

  test("a Txn with more ops than --max-txn-ops: INVALID_ARGUMENT naming the limit, nothing written", async () => {
    for (const i of [0, 1, 2]) {
      const ops = Array.from({ length: MAX_TXN_OPS + 1 }, (_, k) => put(`many/${i}/${k}`, "x"));
      const e = await refusal(cl.of(i).txnAsync({ success: ops }, deadline(5000)));
      expect(e.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(e.message).toContain(String(MAX_TXN_OPS));
      const cmp = Array.from({ length: MAX_TXN_OPS + 1 }, (_, k) => ({ key: enc(`many/${k}`), version: 0 }));
      const e2 = await refusal(cl.of(i).txnAsync({ compare: cmp, success: [put(`many/${i}/c`, "x")] }, deadline(5000)));
      expect(e2.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(e2.message).toContain(String(MAX_TXN_OPS));
      const none = await cl.of(i).rangeAsync({ key: enc(`many/${i}/`), prefix: true, countOnly: true }, deadline(5000));
      expect(none.count).toBe(0);
      // Exactly the limit is fine.
      const ok = await cl.of(i).txnAsync({ success: ops.slice(0, MAX_TXN_OPS) }, deadline(5000));
      expect(ok.succeeded).toBe(true);
      expect((await cl.of(i).rangeAsync({ key: enc(`many/${i}/`), prefix: true, countOnly: true }, deadline(5000))).count).toBe(MAX_TXN_OPS);
      await stillServes(i, `txn-ops-${i}`);
    }
  }, 30_000);

  test("a Range with a limit above --max-range-limit: INVALID_ARGUMENT naming the limit; limit 0 pages at the max", async () => {
    const leader = await c.leader();
    for (let k = 0; k < MAX_RANGE_LIMIT + 20; k += MAX_TXN_OPS) {
      await cl.of(leader).txnAsync({ success: Array.from({ length: MAX_TXN_OPS }, (_, j) => put(`lim/${String(k + j).padStart(4, "0")}`, "v")) }, deadline(5000));
    }
    for (const i of [0, 1, 2]) {
      const e = await refusal(cl.of(i).rangeAsync({ key: enc("lim/"), prefix: true, limit: MAX_RANGE_LIMIT + 1 }, deadline(5000)));
      expect(e.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(e.message).toContain(String(MAX_RANGE_LIMIT));
      const e2 = await refusal(cl.of(i).rangeAsync({ key: enc("lim/"), prefix: true, limit: 1e12 }, deadline(5000)));
      expect(e2.code).toBe(grpc.status.INVALID_ARGUMENT);
      const dflt = await cl.of(i).rangeAsync({ key: enc("lim/"), prefix: true }, deadline(5000));
      expect(dflt.kvs.length).toBe(MAX_RANGE_LIMIT);
      expect(dflt.more).toBe(true);
      expect(dflt.count).toBeGreaterThan(MAX_RANGE_LIMIT);
      // A range op inside a txn is held to the same limit.
      const e3 = await refusal(cl.of(i).txnAsync({ success: [{ op: { $case: "range", value: { key: enc("lim/"), prefix: true, limit: MAX_RANGE_LIMIT + 1 } } }] }, deadline(5000)));
      expect(e3.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(e3.message).toContain(String(MAX_RANGE_LIMIT));
      await stillServes(i, `range-limit-${i}`);
    }
  }, 30_000);

  test("a request carrying more than --max-request-bytes: INVALID_ARGUMENT naming the limit, nothing written", async () => {
    // Each value is well under --max-value-size; together they are over the request budget.
    const value = "b".repeat(Math.ceil(MAX_REQUEST_BYTES / 4));
    for (const i of [0, 1, 2]) {
      const ops = Array.from({ length: 5 }, (_, k) => put(`big/${i}/${k}`, value));
      const e = await refusal(cl.of(i).txnAsync({ success: ops }, deadline(10_000)));
      expect(e.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(e.message).toContain(String(MAX_REQUEST_BYTES));
      expect((await cl.of(i).rangeAsync({ key: enc(`big/${i}/`), prefix: true, countOnly: true }, deadline(5000))).count).toBe(0);
      // A value over --max-value-size, in a txn and in a Put.
      const huge = "h".repeat((1 << 20) + 1);
      const e2 = await refusal(cl.of(i).txnAsync({ success: [put(`big/${i}/huge`, huge)] }, deadline(10_000)));
      expect(e2.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(e2.message).toContain(String(1 << 20));
      const e3 = await refusal(cl.of(i).executeAsync({ op: 2, kv: { key: enc(`big/${i}/huge`), value: enc(huge) } }, deadline(10_000)));
      expect(e3.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(e3.message).toContain(String(1 << 20));
      await stillServes(i, `bytes-${i}`);
    }
  }, 30_000);

  test("malformed Range / Txn / Compact requests are refused with a clear code and the node serves on", async () => {
    const i = 1;
    const x = cl.of(i);
    const refusals: [string, () => Promise<unknown>, grpc.status[]][] = [
      ["range_end before key", () => x.rangeAsync({ key: enc("b"), rangeEnd: enc("a") }, deadline(5000)), [grpc.status.INVALID_ARGUMENT]],
      ["prefix with range_end", () => x.rangeAsync({ key: enc("a"), rangeEnd: enc("b"), prefix: true }, deadline(5000)), [grpc.status.INVALID_ARGUMENT]],
      ["empty single key", () => x.rangeAsync({ key: new Uint8Array(0) }, deadline(5000)), [grpc.status.INVALID_ARGUMENT]],
      // The server waits for a version it has not applied (as min_version), up to the deadline.
      ["a version in the future", () => x.rangeAsync({ key: enc("a"), version: 1e12 }, deadline(1000)), [grpc.status.OUT_OF_RANGE, grpc.status.DEADLINE_EXCEEDED]],
      ["a txn putting one key twice", () => x.txnAsync({ success: [put("twice", "1"), put("twice", "2")] }, deadline(5000)), [grpc.status.INVALID_ARGUMENT]],
      ["a txn op with no operation", () => x.txnAsync({ success: [{ op: undefined }] }, deadline(5000)), [grpc.status.INVALID_ARGUMENT]],
      ["a compare with an unknown target", () => x.txnAsync({ compare: [{ key: enc("a"), target: 9 as 0 }], success: [] }, deadline(5000)), [grpc.status.INVALID_ARGUMENT]],
      ["compact in the future", () => x.compactAsync({ version: 1e12 }, deadline(5000)), [grpc.status.OUT_OF_RANGE, grpc.status.INVALID_ARGUMENT]],
    ];
    const got: string[] = [];
    for (const [what, call, want] of refusals) {
      const e = await refusal(call());
      if (e.code === undefined || !want.includes(e.code)) got.push(`${what}: want ${want.map((w) => grpc.status[w]).join("/")}, got ${grpc.status[e.code ?? -1] ?? e.code} (${e.message})`);
    }
    expect(got).toEqual([]);
    expect((await cl.of(i).rangeAsync({ key: enc("twice") }, deadline(5000))).kvs).toEqual([]);
    await stillServes(i, "malformed");
  }, 30_000);
});

describe("Txn semantics", () => {
  let c: TestCluster;
  let cl: Clients;

  beforeAll(async () => {
    c = await TestCluster.create(3, ["--election-timeout=600"]);
    await c.startSeedStyle();
    cl = new Clients(c);
  }, 60_000);

  afterAll(async () => {
    cl?.close();
    if (c) await c.destroy();
  });

  test("every compare target and operator, on a present and a missing key, picks the branch the proto documents", async () => {
    const leader = await c.leader();
    const x = cl.of((leader + 1) % 3); // through a follower: the txn is forwarded
    const v1 = (await x.txnAsync({ success: [put("cmp/k", "b")] }, deadline(5000))).version;
    const v2 = (await x.txnAsync({ success: [put("cmp/k", "bb")] }, deadline(5000))).version;
    expect(v2).toBeGreaterThan(v1);
    const { EQUAL, GREATER, LESS, NOT_EQUAL } = Compare_Result;
    const { VERSION, CREATE_VERSION, VALUE, EXISTS } = Compare_Target;
    const cases: [string, Compare[], boolean][] = [
      ["VERSION = current", [compare("cmp/k", VERSION, EQUAL, { version: v2 })], true],
      ["VERSION = older", [compare("cmp/k", VERSION, EQUAL, { version: v1 })], false],
      ["VERSION > older", [compare("cmp/k", VERSION, GREATER, { version: v1 })], true],
      ["VERSION < current", [compare("cmp/k", VERSION, LESS, { version: v2 })], false],
      ["VERSION < current+1", [compare("cmp/k", VERSION, LESS, { version: v2 + 1 })], true],
      ["VERSION != current", [compare("cmp/k", VERSION, NOT_EQUAL, { version: v2 })], false],
      ["CREATE_VERSION = first write", [compare("cmp/k", CREATE_VERSION, EQUAL, { version: v1 })], true],
      ["CREATE_VERSION = second write", [compare("cmp/k", CREATE_VERSION, EQUAL, { version: v2 })], false],
      ["CREATE_VERSION < second write", [compare("cmp/k", CREATE_VERSION, LESS, { version: v2 })], true],
      ["VALUE = bb", [compare("cmp/k", VALUE, EQUAL, { value: "bb" })], true],
      ["VALUE > ba", [compare("cmp/k", VALUE, GREATER, { value: "ba" })], true],
      ["VALUE > bb", [compare("cmp/k", VALUE, GREATER, { value: "bb" })], false],
      ["VALUE < bc", [compare("cmp/k", VALUE, LESS, { value: "bc" })], true],
      ["VALUE < b (a prefix sorts first)", [compare("cmp/k", VALUE, LESS, { value: "b" })], false],
      ["VALUE != bb", [compare("cmp/k", VALUE, NOT_EQUAL, { value: "bb" })], false],
      ["EXISTS = true", [compare("cmp/k", EXISTS, EQUAL, { exists: true })], true],
      ["EXISTS = false", [compare("cmp/k", EXISTS, EQUAL, { exists: false })], false],
      ["EXISTS != true", [compare("cmp/k", EXISTS, NOT_EQUAL, { exists: true })], false],
      ["missing: VERSION = 0", [compare("cmp/none", VERSION, EQUAL, { version: 0 })], true],
      ["missing: VERSION > 0", [compare("cmp/none", VERSION, GREATER, { version: 0 })], false],
      ["missing: CREATE_VERSION = 0", [compare("cmp/none", CREATE_VERSION, EQUAL, { version: 0 })], true],
      ["missing: VALUE = empty (never true)", [compare("cmp/none", VALUE, EQUAL, { value: "" })], false],
      ["missing: VALUE != x (never true)", [compare("cmp/none", VALUE, NOT_EQUAL, { value: "x" })], false],
      ["missing: VALUE < z (never true)", [compare("cmp/none", VALUE, LESS, { value: "z" })], false],
      ["missing: EXISTS = false", [compare("cmp/none", EXISTS, EQUAL, { exists: false })], true],
      ["missing: EXISTS = true", [compare("cmp/none", EXISTS, EQUAL, { exists: true })], false],
      ["all hold", [compare("cmp/k", VERSION, EQUAL, { version: v2 }), compare("cmp/none", EXISTS, EQUAL, { exists: false })], true],
      ["one of them fails", [compare("cmp/k", VERSION, EQUAL, { version: v2 }), compare("cmp/none", EXISTS, EQUAL, { exists: true })], false],
      ["no compares", [], true],
    ];
    const wrong: string[] = [];
    for (const [n, [what, cmps, want]] of cases.entries()) {
      const r = await x.txnAsync({ compare: cmps, success: [put(`cmp/out/${n}`, "success")], failure: [put(`cmp/out/${n}`, "failure"), get("cmp/k")] }, deadline(5000));
      const out = await x.rangeAsync({ key: enc(`cmp/out/${n}`), rc: ReadConsistency.Linearizable }, deadline(5000));
      const branch = out.kvs.length === 1 ? dec(out.kvs[0]!.value) : "(none)";
      if (r.succeeded !== want || branch !== (want ? "success" : "failure") || r.responses.length !== (want ? 1 : 2)) {
        wrong.push(`${what}: succeeded=${r.succeeded} (want ${want}), branch ${branch}, ${r.responses.length} responses`);
      }
    }
    expect(wrong).toEqual([]);
    // The two compare targets that take only = and != refuse the others.
    const bad = await x.txnAsync({ compare: [compare("cmp/k", EXISTS, GREATER, { exists: true })], success: [] }, deadline(5000)).then(
      () => "OK",
      (err) => grpc.status[code(err) ?? -1],
    );
    expect(bad).toBe("INVALID_ARGUMENT");
  }, 30_000);

  test("ops run in order at one version: a range sees the earlier puts, a delete counts what it removed, a watch sees one version", async () => {
    const leader = await c.leader();
    const x = cl.of(leader);
    await x.txnAsync({ success: [put("ops/a", "old"), put("ops/b", "1"), put("ops/c", "2"), put("ops/d", "3")] }, deadline(5000));
    const events: WatchResponse[] = [];
    const base = (await x.rangeAsync({ key: enc("ops/"), prefix: true, countOnly: true }, deadline(5000))).version;
    const s = x.watch({ watcherId: "ops", prefixes: [enc("ops/")], startVersion: base });
    s.on("data", (r: WatchResponse) => events.push(r));
    s.on("error", () => {});
    const r = await x.txnAsync(
      {
        success: [put("ops/a", "new", 7), get("ops/a"), del("ops/b", "ops/d"), { op: { $case: "range", value: { key: enc("ops/"), prefix: true, countOnly: true } } }, put("ops/e", "5"), del("ops/zzz")],
      },
      deadline(5000),
    );
    expect(r.succeeded).toBe(true);
    const v = r.version;
    const shape = r.responses.map((o) => {
      const res = o.result!;
      if (res.$case === "put") return `put@${res.value.version}`;
      if (res.$case === "delete") return `deleted ${res.value.deleted}`;
      return `range ${res.value.kvs.map((kv) => `${dec(kv.key)}=${dec(kv.value)} m${kv.meta} @${kv.version}`).join(",")} count ${res.value.count}`;
    });
    expect(shape).toEqual([`put@${v}`, `range ops/a=new m7 @${v} count 1`, "deleted 2", "range  count 2", `put@${v}`, "deleted 0"]);
    const after = await x.rangeAsync({ key: enc("ops/"), prefix: true }, deadline(5000));
    expect(after.kvs.map((kv) => `${dec(kv.key)}=${dec(kv.value)}@${kv.version}`)).toEqual([`ops/a=new@${v}`, "ops/d=3@" + after.kvs.find((kv) => dec(kv.key) === "ops/d")!.version, `ops/e=5@${v}`]);
    await eventually("the txn's events", async () => events.length >= 4, 5000);
    await sleep(200);
    s.cancel();
    expect(events.map((e) => `${e.event!.type}:${dec(e.event!.key)}@${e.event!.version}`)).toEqual([
      `${EventType.Put}:ops/a@${v}`,
      `${EventType.Delete}:ops/b@${v}`,
      `${EventType.Delete}:ops/c@${v}`,
      `${EventType.Put}:ops/e@${v}`,
    ]);
  }, 30_000);

  test("a put with a ttl inside a txn: expire_at is stamped, and the key expires on every node", async () => {
    const leader = await c.leader();
    const t0 = Date.now();
    const r = await cl.of(leader).txnAsync({ success: [{ op: { $case: "put", value: { key: enc("ttl/t"), value: enc("short"), ttl: { seconds: 1, nanos: 0 } } } }] }, deadline(5000));
    const kv = (await cl.of(leader).rangeAsync({ key: enc("ttl/t") }, deadline(5000))).kvs[0]!;
    expect(kv.version).toBe(r.version);
    expect(kv.expireAt).toBeGreaterThanOrEqual(t0 + 1000 - 50);
    expect(kv.expireAt).toBeLessThanOrEqual(Date.now() + 1000 + 50);
    await sleep(1500);
    for (let i = 0; i < 3; i++) {
      await eventually(`ttl/t gone on node${i + 1}`, async () => (await cl.of(i).rangeAsync({ key: enc("ttl/t"), rc: ReadConsistency.Serializable }, deadline(2000))).kvs.length === 0, 5000);
    }
  }, 30_000);
});

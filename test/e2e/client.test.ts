// End-to-end: the client library (src/client) against real ./rbkv clusters. Discovery from one
// endpoint, writes through a follower's endpoint, exactly-once writes across a leader killed with
// SIGKILL mid-stream, range pages at one version while a member dies, and the txn builder.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { Client, ClientError, compare, op } from "../../src/client/index.ts";
import { TestCluster, eventually, sleep } from "./harness.ts";

describe("client library", () => {
  let c: TestCluster;
  const clients: Client[] = [];

  async function connect(endpoints: string[], timeoutMs = 15_000): Promise<Client> {
    const cl = await Client.connect({ endpoints, timeoutMs, attemptTimeoutMs: 2000 });
    clients.push(cl);
    return cl;
  }

  /** Restarts every killed node and waits until all serve again. */
  async function heal(): Promise<void> {
    for (let i = 0; i < c.nodes.length; i++) {
      if (!c.nodes[i]!.running) {
        c.nodes[i]!.start();
        await c.waitServing(i, 30_000);
      }
    }
  }

  beforeAll(async () => {
    c = await TestCluster.create(3, ["--election-timeout=600"]);
    await c.startSeedStyle();
  }, 60_000);

  afterAll(async () => {
    for (const cl of clients) await cl.close();
    if (c) await c.destroy();
  });

  test("discovers every member from one endpoint; writes through a follower's endpoint reach the leader", async () => {
    const leader = await c.leader();
    const follower = (leader + 1) % 3;
    const cl = await connect([c.nodes[follower]!.spec.grpcAddr]);
    expect([...cl.members].sort()).toEqual(c.nodes.map((n) => n.spec.grpcAddr).sort());
    const w = await cl.put("disc/k", "v1", { meta: 3 });
    expect(w.version).toBeGreaterThan(0);
    expect(cl.leader).toBe(c.nodes[leader]!.spec.grpcAddr);
    // Seen by a plain seed-style client on the leader, at the version the client was told.
    const raw = await c.kv(leader).get("disc/k");
    expect(new TextDecoder().decode(raw.value)).toBe("v1");
    expect(raw.version).toBe(w.version);
    const got = await cl.get("disc/k");
    expect(got?.valueText).toBe("v1");
    expect(got?.meta).toBe(3);
    expect(got?.version).toBe(w.version);
    // Serializable reads on any member see the client's own write (min_version).
    for (let i = 0; i < 6; i++) expect((await cl.get("disc/k", { serializable: true }))?.version).toBe(w.version);
    expect(await cl.get("disc/missing")).toBeNull();
    const old = await cl.get("disc/k", { version: w.version - 1 });
    expect(old).toBeNull();
    const d = await cl.delete("disc/k");
    expect(d.version).toBeGreaterThan(w.version);
    expect(await cl.get("disc/k")).toBeNull();
    expect((await cl.get("disc/k", { version: w.version }))?.valueText).toBe("v1");
  }, 30_000);

  test("errors carry the gRPC code and the server's message", async () => {
    const cl = await connect([c.nodes[0]!.spec.grpcAddr]);
    const err = await cl.put("", "x").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClientError);
    expect((err as ClientError).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((err as ClientError).details.length).toBeGreaterThan(0);
  });

  test("txn builder: compares, then / else branches, results per operation", async () => {
    const cl = await connect([c.nodes[1]!.spec.grpcAddr]);
    const created = await cl.txn().if(compare.missing("tx/k")).then(op.put("tx/k", "first"), op.get("tx/k")).else(op.get("tx/k")).commit();
    expect(created.succeeded).toBe(true);
    expect(created.results.length).toBe(2);
    expect(created.results[0]).toEqual({ type: "put", version: created.version });
    const r1 = created.results[1]!;
    expect(r1.type === "get" && r1.kvs[0]!.valueText).toBe("first");

    const again = await cl.txn().if(compare.missing("tx/k")).then(op.put("tx/k", "second")).else(op.get("tx/k")).commit();
    expect(again.succeeded).toBe(false);
    const r2 = again.results[0]!;
    expect(r2.type).toBe("get");
    expect(r2.type === "get" && r2.kvs.map((kv) => [kv.valueText, kv.version])).toEqual([["first", created.version]]);

    // Compare-and-swap on the version; a stale version fails and writes nothing.
    const cas = await cl.txn().if(compare.version("tx/k", "=", created.version), compare.value("tx/k", "=", "first")).then(op.put("tx/k", "swapped")).commit();
    expect(cas.succeeded).toBe(true);
    const stale = await cl.txn().if(compare.version("tx/k", "=", created.version)).then(op.put("tx/k", "lost")).commit();
    expect(stale.succeeded).toBe(false);
    expect(stale.results).toEqual([]);
    expect((await cl.get("tx/k"))?.valueText).toBe("swapped");
    const gt = await cl.txn().if(compare.createVersion("tx/k", "<", cas.version), compare.version("tx/k", ">", created.version), compare.exists("tx/k")).then(op.delete("tx/k")).commit();
    expect(gt.succeeded).toBe(true);
    expect(gt.results).toEqual([{ type: "delete", deleted: 1 }]);
    expect(await cl.get("tx/k")).toBeNull();
    expect(() => compare.version("k", "<=" as "<", 1)).toThrow(TypeError);
  }, 30_000);

  test("range pages share one version while a member is killed mid-iteration", async () => {
    const cl = await connect([c.nodes[0]!.spec.grpcAddr]);
    const keys = Array.from({ length: 40 }, (_, i) => `rg/${String(i).padStart(3, "0")}`);
    for (const k of keys) await cl.put(k, `v-${k}`);
    const leader = await c.leader();
    const seen: string[] = [];
    const versions = new Set<number>();
    let pages = 0;
    for await (const page of cl.range("rg/", { pageSize: 4 })) {
      pages++;
      versions.add(page.version);
      expect(page.count).toBe(40);
      for (const kv of page.kvs) {
        expect(kv.valueText).toBe(`v-${kv.keyText}`);
        seen.push(kv.keyText);
      }
      if (pages === 2) {
        // Writes after the pinned version must not appear; the leader dies under the iteration.
        await cl.put("rg/000", "changed");
        await cl.put("rg/zzz", "new");
        await c.nodes[leader]!.kill9();
      }
    }
    expect(seen).toEqual(keys);
    expect(versions.size).toBe(1);
    expect(pages).toBe(10);
    // A new iteration reads the new version: both writes are there.
    const after = await cl.rangeAll("rg/");
    expect(after.kvs.length).toBe(41);
    expect(after.kvs[0]!.valueText).toBe("changed");
    expect(after.version).toBeGreaterThan([...versions][0]!);
    await heal();
  }, 90_000);

  test("leader killed with SIGKILL during a stream of writes: every write acknowledged, each applied exactly once", async () => {
    const cl = await connect([c.nodes[0]!.spec.grpcAddr], 20_000);
    await cl.put("fo/ctr", "0");
    const acked: { key: string; version: number }[] = [];
    let increments = 0;
    let stop = false;
    const errors: unknown[] = [];

    // Writers of fresh keys: a second apply of any of them would give it a second version.
    const putter = async (w: number): Promise<void> => {
      for (let i = 0; !stop; i++) {
        const key = `fo/w${w}/${i}`;
        try {
          acked.push({ key, version: (await cl.put(key, `v${i}`)).version });
        } catch (err) {
          errors.push(err);
          return;
        }
      }
    };
    // A counter bumped by compare-and-swap: a retried txn applied twice would fail its compare
    // the second time and answer succeeded=false for an increment that happened.
    const counter = async (): Promise<void> => {
      let expected = 0;
      let version = (await cl.get("fo/ctr"))!.version;
      while (!stop) {
        try {
          const r = await cl.txn().if(compare.version("fo/ctr", "=", version)).then(op.put("fo/ctr", String(expected + 1))).else(op.get("fo/ctr")).commit();
          if (!r.succeeded) {
            const got = r.results[0];
            errors.push(new Error(`counter compare failed: expected ${expected} at version ${version}, found ${got?.type === "get" ? got.kvs.map((k) => `${k.valueText}@${k.version}`).join() : "?"}`));
            return;
          }
          expected++;
          increments++;
          version = r.version;
        } catch (err) {
          errors.push(err);
          return;
        }
      }
    };
    const running = [putter(0), putter(1), putter(2), counter()];
    await sleep(700);
    const before = acked.length;
    const leader = await c.leader();
    await c.nodes[leader]!.kill9();
    const killedAt = acked.length;
    // Keep writing until plenty were acknowledged after the failover.
    const deadline = Date.now() + 30_000;
    while (acked.length < killedAt + 60 && Date.now() < deadline && errors.length === 0) await sleep(100);
    stop = true;
    await Promise.all(running);
    expect(errors.map(String)).toEqual([]);
    expect(before).toBeGreaterThan(0);
    expect(acked.length).toBeGreaterThanOrEqual(killedAt + 60);
    expect(cl.leader).not.toBe(c.nodes[leader]!.spec.grpcAddr);

    const { kvs } = await cl.rangeAll("fo/w");
    const byKey = new Map(kvs.map((kv) => [kv.keyText, kv]));
    for (const a of acked) {
      const kv = byKey.get(a.key);
      expect(kv === undefined ? `${a.key} missing` : `${a.key}@${kv.version}/${kv.createVersion}`).toBe(`${a.key}@${a.version}/${a.version}`);
    }
    const ctr = await cl.get("fo/ctr");
    expect(ctr?.valueText).toBe(String(increments));
    await heal();
  }, 120_000);

  test("watch resumes across killed members: every write delivered once, in order", async () => {
    const writer = await connect([c.nodes[0]!.spec.grpcAddr], 20_000);
    const watcher = await connect([c.nodes[1]!.spec.grpcAddr], 20_000);
    const start = (await writer.put("wa/start", "0")).version;
    const expected: string[] = [];
    let stop = false;
    const errors: unknown[] = [];
    const writes = (async () => {
      for (let i = 0; !stop; i++) {
        try {
          if (i % 5 === 4) {
            const r = await writer.txn().then(op.put(`wa/t${i}/a`, "x"), op.put(`wa/t${i}/b`, "y")).commit();
            expected.push(`${r.version}:wa/t${i}/a`, `${r.version}:wa/t${i}/b`);
          } else {
            const r = await writer.put(`wa/k${i}`, `v${i}`);
            expected.push(`${r.version}:wa/k${i}`);
          }
        } catch (err) {
          errors.push(err);
          return;
        }
      }
    })();
    const got: string[] = [];
    const watching = (async () => {
      for await (const e of watcher.watch("wa/", { startVersion: start, idleTimeoutMs: 3000 })) {
        got.push(`${e.version}:${e.keyText}`);
      }
    })();
    // Every member dies once under the watch (restarted before the next), so the member it
    // streams from dies at least once.
    for (let i = 0; i < 3; i++) {
      await sleep(600);
      await c.nodes[i]!.kill9();
      await sleep(600);
      await heal();
    }
    await sleep(500);
    stop = true;
    await writes;
    await eventually("the watch to catch up", async () => got.length >= expected.length, 30_000).catch((err: Error) => {
      const i = got.findIndex((g, j) => g !== expected[j]);
      throw new Error(`${err.message}: got ${got.length} of ${expected.length} events; first difference at ${i}: got ${got[i]}, expected ${expected[i]}; last got ${got.at(-1)}`);
    });
    // Closing the client ends the iteration; a moment first, so that a duplicate would show.
    await sleep(500);
    await watcher.close();
    await watching;
    expect(errors.map(String)).toEqual([]);
    expect(expected.length).toBeGreaterThan(20);
    expect(got).toEqual(expected);
  }, 180_000);

  test("watch from a compacted version calls onReset, then goes on from the current version", async () => {
    const cl = await connect([c.nodes[0]!.spec.grpcAddr]);
    const old = (await cl.put("wr/a", "1")).version;
    const mid = (await cl.put("wr/a", "2")).version;
    await cl.put("wr/a", "3");
    await c.kv(await c.leader()).client.compactAsync({ version: mid }, { deadline: Date.now() + 5000 });
    // Without onReset the iteration ends with the OUT_OF_RANGE error.
    const err = await (async () => {
      for await (const e of cl.watch("wr/", { startVersion: old - 1 })) void e;
    })().catch((x: unknown) => x);
    expect(err).toBeInstanceOf(ClientError);
    expect((err as ClientError).code).toBe(grpc.status.OUT_OF_RANGE);

    const resets: { from: number; to: number; code: number }[] = [];
    const got: string[] = [];
    const it = cl.watch("wr/", { startVersion: old - 1, onReset: (r) => void resets.push({ from: r.from, to: r.to, code: r.error.code }) });
    const next = it.next();
    await eventually("the reset", async () => resets.length === 1);
    const w = await cl.put("wr/b", "after");
    const first = await next;
    got.push(`${first.value?.version}:${first.value?.keyText}:${first.value?.valueText}`);
    await it.return();
    expect(resets).toEqual([{ from: old - 1, to: resets[0]!.to, code: grpc.status.OUT_OF_RANGE }]);
    expect(resets[0]!.to).toBeGreaterThanOrEqual(mid);
    expect(resets[0]!.to).toBeLessThan(w.version);
    expect(got).toEqual([`${w.version}:wr/b:after`]);
  }, 30_000);
});

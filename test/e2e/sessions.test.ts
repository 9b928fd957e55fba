// End-to-end: exactly-once writes through client sessions. A client retries the same
// (session_id, seq) after the leader died mid-request, on another node, until it answers: the
// write is applied once and the retry gets the original answer. Checked with a counter
// incremented by Txn (read it, compare its VERSION, put counter+1, under the session) — without
// deduplication the retry would fail its compare and report succeeded=false for a write that
// did happen — and with a plain Put under the session, whose key would get a second version.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { OpType, type TxnResponse } from "../../src/server/gen/rbkv.ts";
import type { RbdkvClient, TxnRequestInit } from "../../src/server/grpc-service.ts";
import { AnswerSwallowingProxy, Clients, ReadConsistency, code, deadline, fastClient, hostPort, message, onAnyNode, put, versionIs } from "./api-helpers.ts";
import { TestCluster, dec, enc, eventually, sleep } from "./harness.ts";

async function failure(p: Promise<unknown>): Promise<{ code: grpc.status | undefined; message: string }> {
  try {
    const r = await p;
    return { code: grpc.status.OK, message: `answered ${JSON.stringify(r)}` };
  } catch (err) {
    return { code: code(err), message: message(err) };
  }
}

describe("exactly-once writes with sessions", () => {
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

  const key = (kv: { key: Uint8Array; value: Uint8Array; version: number; createVersion: number }) => ({ key: dec(kv.key), value: dec(kv.value), version: kv.version, create: kv.createVersion });

  async function read(k: string): Promise<{ key: string; value: string; version: number; create: number } | null> {
    const r = await onAnyNode(cl, `read ${k}`, (x) => x.rangeAsync({ key: enc(k), rc: ReadConsistency.Linearizable }, deadline(3000)));
    return r.kvs.length === 0 ? null : key(r.kvs[0]!);
  }

  test("a retry of an acknowledged (session, seq) returns the same answer and applies nothing", async () => {
    const leader = await c.leader();
    const s = await cl.of(leader).openSessionAsync({ ttl: { seconds: 60, nanos: 0 } }, deadline(5000));
    expect(s.sessionId).toBeGreaterThan(0);
    const sid = s.sessionId;
    const f1 = (leader + 1) % 3;
    const f2 = (leader + 2) % 3;

    const p1 = await cl.of(f1).executeAsync({ op: OpType.Put, kv: { key: enc("eo/a"), value: enc("1") }, sessionId: sid, seq: 1 }, deadline(5000));
    expect(p1.version).toBeGreaterThan(sid);
    // The same seq again, through another node, even with another value: the stored answer.
    const r1 = await cl.of(f2).executeAsync({ op: OpType.Put, kv: { key: enc("eo/a"), value: enc("1") }, sessionId: sid, seq: 1 }, deadline(5000));
    expect(r1.version).toBe(p1.version);
    const r1b = await cl.of(leader).executeAsync({ op: OpType.Put, kv: { key: enc("eo/a"), value: enc("changed") }, sessionId: sid, seq: 1 }, deadline(5000));
    expect(r1b.version).toBe(p1.version);
    expect(await read("eo/a")).toEqual({ key: "eo/a", value: "1", version: p1.version, create: p1.version });

    // A Txn under the session: the retry is succeeded=true at the same version, not a failed compare.
    const t: TxnRequestInit = { compare: [versionIs("eo/a", p1.version)], success: [put("eo/a", "2")], sessionId: sid, seq: 2 };
    const t1 = await cl.of(f1).txnAsync(t, deadline(5000));
    expect(t1.succeeded).toBe(true);
    const t2 = await cl.of(f2).txnAsync(t, deadline(5000));
    expect({ succeeded: t2.succeeded, version: t2.version, responses: t2.responses }).toEqual({ succeeded: true, version: t1.version, responses: t1.responses });
    expect(await read("eo/a")).toEqual({ key: "eo/a", value: "2", version: t1.version, create: p1.version });

    // A txn whose compare failed is an answer too: its retry reports the same failure, even
    // though the compare would hold now.
    const tf: TxnRequestInit = { compare: [versionIs("eo/a", p1.version)], success: [put("eo/a", "3")], failure: [put("eo/failed", "f")], sessionId: sid, seq: 3 };
    const tf1 = await cl.of(leader).txnAsync(tf, deadline(5000));
    expect(tf1.succeeded).toBe(false);
    const tf2 = await cl.of(f1).txnAsync(tf, deadline(5000));
    expect({ succeeded: tf2.succeeded, version: tf2.version }).toEqual({ succeeded: false, version: tf1.version });
    expect((await read("eo/failed"))?.version).toBe(tf1.version);

    // A delete under the session.
    const d1 = await cl.of(f2).executeAsync({ op: OpType.Delete, kv: { key: enc("eo/failed") }, sessionId: sid, seq: 4 }, deadline(5000));
    await cl.of(leader).executeAsync({ op: OpType.Put, kv: { key: enc("eo/failed"), value: enc("back") } }, deadline(5000));
    const d2 = await cl.of(f1).executeAsync({ op: OpType.Delete, kv: { key: enc("eo/failed") }, sessionId: sid, seq: 4 }, deadline(5000));
    expect(d2.version).toBe(d1.version);
    expect((await read("eo/failed"))?.value).toBe("back"); // the retry deleted nothing

    // Seqs need not arrive in order: an older, unseen seq still applies (once).
    const p6 = await cl.of(leader).executeAsync({ op: OpType.Put, kv: { key: enc("eo/six"), value: enc("6") }, sessionId: sid, seq: 6 }, deadline(5000));
    const p5 = await cl.of(leader).executeAsync({ op: OpType.Put, kv: { key: enc("eo/five"), value: enc("5") }, sessionId: sid, seq: 5 }, deadline(5000));
    expect(p5.version).toBeGreaterThan(p6.version);
    expect((await read("eo/five"))?.value).toBe("5");
    expect((await read("eo/six"))?.value).toBe("6");
    await cl.of(leader).closeSessionAsync({ sessionId: sid }, deadline(5000));
  });

  test("an unknown, closed or expired session answers FAILED_PRECONDITION and writes nothing", async () => {
    const leader = await c.leader();
    const f = (leader + 1) % 3;
    const unknown = 987_654_321;
    const e1 = await failure(cl.of(f).executeAsync({ op: OpType.Put, kv: { key: enc("nos/a"), value: enc("x") }, sessionId: unknown, seq: 1 }, deadline(5000)));
    expect(e1.code).toBe(grpc.status.FAILED_PRECONDITION);
    const e2 = await failure(cl.of(leader).txnAsync({ success: [put("nos/b", "x")], sessionId: unknown, seq: 1 }, deadline(5000)));
    expect(e2.code).toBe(grpc.status.FAILED_PRECONDITION);
    const e3 = await failure(cl.of(leader).closeSessionAsync({ sessionId: unknown }, deadline(5000)));
    expect(e3.code).toBe(grpc.status.FAILED_PRECONDITION);

    // Closed.
    const s = (await cl.of(f).openSessionAsync({ ttl: { seconds: 60, nanos: 0 } }, deadline(5000))).sessionId;
    await cl.of(f).executeAsync({ op: OpType.Put, kv: { key: enc("nos/c"), value: enc("1") }, sessionId: s, seq: 1 }, deadline(5000));
    await cl.of(f).closeSessionAsync({ sessionId: s }, deadline(5000));
    const e4 = await failure(cl.of(leader).executeAsync({ op: OpType.Put, kv: { key: enc("nos/d"), value: enc("x") }, sessionId: s, seq: 2 }, deadline(5000)));
    expect(e4.code).toBe(grpc.status.FAILED_PRECONDITION);
    // Even the retry of an applied seq: the session is gone, so is its memory. Never a second apply.
    const e5 = await failure(cl.of(leader).executeAsync({ op: OpType.Put, kv: { key: enc("nos/c"), value: enc("1") }, sessionId: s, seq: 1 }, deadline(5000)));
    expect(e5.code).toBe(grpc.status.FAILED_PRECONDITION);

    // Expired: idle longer than its ttl (by the leader's clock stamped into the log).
    const x = (await cl.of(leader).openSessionAsync({ ttl: { seconds: 1, nanos: 0 } }, deadline(5000))).sessionId;
    const ok = await cl.of(leader).executeAsync({ op: OpType.Put, kv: { key: enc("nos/e"), value: enc("1") }, sessionId: x, seq: 1 }, deadline(5000));
    expect(ok.version).toBeGreaterThan(0);
    await sleep(2200);
    const e6 = await failure(cl.of(f).executeAsync({ op: OpType.Put, kv: { key: enc("nos/f"), value: enc("x") }, sessionId: x, seq: 2 }, deadline(5000)));
    expect(e6.code).toBe(grpc.status.FAILED_PRECONDITION);
    const e7 = await failure(cl.of(f).txnAsync({ success: [put("nos/g", "x")], sessionId: x, seq: 3 }, deadline(5000)));
    expect(e7.code).toBe(grpc.status.FAILED_PRECONDITION);

    for (const k of ["nos/a", "nos/b", "nos/d", "nos/f", "nos/g"]) expect(await read(k)).toBeNull();
    expect((await read("nos/c"))?.version).toBe((await read("nos/c"))?.create); // written once
  }, 30_000);

  test("the same (session, seq) sent to every node at once applies once; a seq older than the window is refused", async () => {
    const leader = await c.leader();
    const sid = (await cl.of(leader).openSessionAsync({ ttl: { seconds: 60, nanos: 0 } }, deadline(5000))).sessionId;
    // Five copies of one request in flight together, through all three nodes.
    const copies = await Promise.all(
      Array.from({ length: 5 }, (_, k) => cl.of(k % 3).executeAsync({ op: OpType.Put, kv: { key: enc("dup/k"), value: enc(`copy${k}`) }, sessionId: sid, seq: 1 }, deadline(5000))),
    );
    expect(new Set(copies.map((r) => r.version)).size).toBe(1);
    const kv = (await read("dup/k"))!;
    expect({ version: kv.version, create: kv.create }).toEqual({ version: copies[0]!.version, create: copies[0]!.version });
    const txnCopies = await Promise.all(Array.from({ length: 5 }, (_, k) => cl.of(k % 3).txnAsync({ success: [put(`dup/t`, `copy${k}`)], sessionId: sid, seq: 2 }, deadline(5000))));
    expect(new Set(txnCopies.map((r) => `${r.succeeded}@${r.version}`)).size).toBe(1);
    const t = (await read("dup/t"))!;
    expect({ version: t.version, create: t.create }).toEqual({ version: txnCopies[0]!.version, create: txnCopies[0]!.version });

    // Move the session's highest seq far ahead (each seq once), then retry seq 1: it cannot be
    // told from a new request any more, so it must be refused, never applied again.
    const N = 300;
    for (let q = 3; q <= N; q += 50) {
      await Promise.all(Array.from({ length: Math.min(50, N - q + 1) }, (_, j) => cl.of(leader).executeAsync({ op: OpType.Put, kv: { key: enc(`dup/s/${q + j}`), value: enc("x") }, sessionId: sid, seq: q + j }, deadline(10_000))));
    }
    const old = await failure(cl.of(leader).executeAsync({ op: OpType.Put, kv: { key: enc("dup/k"), value: enc("again") }, sessionId: sid, seq: 1 }, deadline(5000)));
    expect(old.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(await read("dup/k")).toEqual(kv);
    // A recent one is still remembered.
    const recent = await cl.of(leader).executeAsync({ op: OpType.Put, kv: { key: enc(`dup/s/${N}`), value: enc("x") }, sessionId: sid, seq: N }, deadline(5000));
    expect(recent.version).toBe((await read(`dup/s/${N}`))!.version);
  }, 30_000);

  /**
   * One increment of the counter under (sid, seq): the request that reads it and the Txn that
   * moves it from n to n+1 if nobody else did.
   */
  async function incrementRequest(sid: number, seq: number): Promise<{ req: TxnRequestInit; n: number; version: number }> {
    const cur = (await read("ctr"))!;
    const n = Number(cur.value);
    return { req: { compare: [versionIs("ctr", cur.version)], success: [put("ctr", String(n + 1))], sessionId: sid, seq }, n, version: cur.version };
  }

  /** Retries `req` on the running nodes until one answers. */
  async function retryUntilAnswered(req: TxnRequestInit, avoid: number): Promise<{ r: TxnResponse; attempts: number }> {
    let attempts = 0;
    const r = await onAnyNode(
      cl,
      "the retry",
      (x, i) => {
        attempts++;
        if (i === avoid) throw Object.assign(new Error("the dead node"), { code: grpc.status.UNAVAILABLE });
        return x.txnAsync(req, deadline(3000));
      },
      30_000,
    );
    return { r, attempts };
  }

  test("the leader dies after applying, before answering: the retry elsewhere gets the same answer and the counter moves once", async () => {
    await cl.of(await c.leader()).executeAsync({ op: OpType.Put, kv: { key: enc("ctr"), value: enc("0") } }, deadline(5000));
    const sid = (await onAnyNode(cl, "open", (x) => x.openSessionAsync({ ttl: { seconds: 120, nanos: 0 } }, deadline(5000)))).sessionId;
    let seq = 0;
    let increments = 0;

    // Round 1, deterministic: the answer is swallowed on its way back, the leader applied the
    // txn (visible through another node), then the leader is SIGKILLed.
    {
      const leader = await c.leader();
      const proxy = new AnswerSwallowingProxy(hostPort(c.nodes[leader]!.spec.grpcAddr));
      const via: RbdkvClient = fastClient(await proxy.start());
      try {
        await via.leaderInfoAsync({}, deadline(3000)); // the connection is up
        const { req, n } = await incrementRequest(sid, ++seq);
        increments++;
        const putSeq = ++seq;
        const onceKey = `once/${putSeq}`;
        proxy.swallowAnswers = true;
        const first = failure(via.txnAsync(req, deadline(30_000)));
        const firstPut = failure(via.executeAsync({ op: OpType.Put, kv: { key: enc(onceKey), value: enc("v") }, sessionId: sid, seq: putSeq }, deadline(30_000)));
        // Applied (a linearizable read through another node sees it) but not answered.
        const applied = await eventually("the increment applied", async () => {
          const r = await cl.of((leader + 1) % 3).rangeAsync({ key: enc("ctr"), rc: ReadConsistency.Linearizable }, deadline(2000));
          return r.kvs.length === 1 && dec(r.kvs[0]!.value) === String(n + 1) ? r.kvs[0]! : false;
        }, 10_000, 20);
        const putApplied = await eventually("the put applied", async () => (await read(onceKey)) ?? false, 10_000, 20);
        await c.nodes[leader]!.kill9();
        const lost = await first;
        expect(lost.code).not.toBe(grpc.status.OK); // the client never got the answer
        expect((await firstPut).code).not.toBe(grpc.status.OK);

        const { r } = await retryUntilAnswered(req, leader);
        expect({ succeeded: r.succeeded, version: r.version }).toEqual({ succeeded: true, version: applied.version });
        expect(await read("ctr")).toEqual({ key: "ctr", value: String(n + 1), version: applied.version, create: applied.createVersion });
        const pr = await onAnyNode(cl, "put retry", (x, i) => {
          if (i === leader) throw Object.assign(new Error("dead"), { code: grpc.status.UNAVAILABLE });
          return x.executeAsync({ op: OpType.Put, kv: { key: enc(onceKey), value: enc("v") }, sessionId: sid, seq: putSeq }, deadline(3000));
        });
        expect(pr.version).toBe(putApplied.version);
        expect(await read(onceKey)).toEqual({ key: onceKey, value: "v", version: putApplied.version, create: putApplied.version });
      } finally {
        via.close();
        await proxy.stop();
        c.nodes[leader]!.start();
        await c.waitServing(leader);
      }
    }

    // Rounds 2-4, as a client sees it: send to the leader, SIGKILL it right after, retry on
    // another node until it answers. Applied or not before the kill, the counter moves by one.
    const outcomes: string[] = [];
    for (const delayMs of [0, 3, 8]) {
      const leader = await c.leader();
      const { req, n, version } = await incrementRequest(sid, ++seq);
      increments++;
      const first = failure(cl.of(leader).txnAsync(req, deadline(10_000)));
      await sleep(delayMs);
      await c.nodes[leader]!.kill9();
      const f = await first;
      const { r, attempts } = await retryUntilAnswered(req, leader);
      expect(r.succeeded).toBe(true);
      const now = (await read("ctr"))!;
      expect({ value: now.value, version: now.version }).toEqual({ value: String(n + 1), version: r.version });
      expect(r.version).toBeGreaterThan(version);
      if (f.code === grpc.status.OK) expect(f.message).toContain(`"version":${r.version}`);
      outcomes.push(`kill after ${delayMs}ms: first ${f.code === grpc.status.OK ? "answered" : grpc.status[f.code ?? -1]}, retry answered after ${attempts} attempts at ${r.version}`);
      c.nodes[leader]!.start();
      await c.waitServing(leader);
    }
    console.log(`exactly-once: ${outcomes.join("; ")}`);

    // Every retry again, now that all are answered: the same versions, the counter unchanged.
    const final = (await read("ctr"))!;
    expect(final.value).toBe(String(increments));
    const again = await cl.of(0).txnAsync({ ...(await incrementRequest(sid, seq)).req, compare: [versionIs("ctr", 1)] }, deadline(5000));
    expect({ succeeded: again.succeeded, version: again.version }).toEqual({ succeeded: true, version: final.version });
    expect((await read("ctr"))!.value).toBe(String(increments));

    // Session state survives a restart of the whole cluster (it is in the log and the snapshots).
    for (const node of c.nodes) await node.kill9();
    for (const node of c.nodes) node.start();
    await c.leader(20_000);
    const afterRestart = await onAnyNode(cl, "retry after restart", (x) => x.txnAsync({ compare: [versionIs("ctr", 1)], success: [put("ctr", "999")], sessionId: sid, seq }, deadline(3000)), 30_000);
    expect({ succeeded: afterRestart.succeeded, version: afterRestart.version }).toEqual({ succeeded: true, version: final.version });
    expect((await read("ctr"))!).toEqual(final);
    const next = await incrementRequest(sid, ++seq);
    const fresh = await onAnyNode(cl, "a new seq", (x) => x.txnAsync(next.req, deadline(3000)));
    expect(fresh.succeeded).toBe(true);
    expect((await read("ctr"))!.value).toBe(String(increments + 1));
  }, 90_000);
});

// The client library (src/client) against an in-process fake cluster (client-fake.ts): discovery
// from one endpoint, redirects to the leader, retries of one (session, seq), session reopening,
// typed errors, range paging at one version, and the small pure helpers.

import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { Client, ClientError, TxnBuilder, WriteOutcomeUnknownError, compare, op, prefixEnd, toBytes } from "../../src/client/index.ts";
import { backoffDelay } from "../../src/client/backoff.ts";
import { leaderHintOf } from "../../src/client/leader-hint.ts";
import { notLeaderStatus } from "../../src/server/errors.ts";
import { Status } from "../../src/server/gen/google/rpc/status.ts";
import { LeaderInfoResponse, OpType, ReadConsistency } from "../../src/server/gen/rbkv.ts";
import { FakeCluster } from "./client-fake.ts";

describe("client helpers", () => {
  test("prefixEnd increments the last byte below 0xff and drops what follows", () => {
    expect([...prefixEnd(toBytes("ab"))]).toEqual([0x61, 0x63]);
    expect([...prefixEnd(new Uint8Array([0x61, 0xff, 0xff]))]).toEqual([0x62]);
    expect([...prefixEnd(new Uint8Array([0xff]))]).toEqual([0]);
    expect([...prefixEnd(new Uint8Array(0))]).toEqual([0]);
  });

  test("backoff is full jitter below a doubling, capped ceiling", () => {
    const opts = { baseMs: 10, maxMs: 100 };
    expect(backoffDelay(0, opts, () => 0.999)).toBe(9);
    expect(backoffDelay(2, opts, () => 0.999)).toBe(39);
    expect(backoffDelay(20, opts, () => 0.999)).toBe(99);
    expect(backoffDelay(3, opts, () => 0)).toBe(0);
  });

  test("the leader hint is read from rbkv metadata and from grpc-status-details-bin alone", () => {
    const full = notLeaderStatus(grpc.status.FAILED_PRECONDITION, "x", { leaderAddr: "10.0.0.1:9501", leaderId: "n1", term: 2 });
    expect(leaderHintOf(full.metadata)).toEqual({ addr: "10.0.0.1:9501", id: "n1" });
    const onlyDetails = new grpc.Metadata();
    const info = LeaderInfoResponse.encode({ leaderAddr: "[::1]:9502", leaderId: "n2", term: 3 }).finish();
    onlyDetails.set(
      "grpc-status-details-bin",
      Buffer.from(Status.encode({ code: 9, message: "x", details: [{ typeUrl: "type.googleapis.com/rbdkv.LeaderInfoResponse", value: info }] }).finish()),
    );
    expect(leaderHintOf(onlyDetails)).toEqual({ addr: "[::1]:9502", id: "n2" });
    const none = notLeaderStatus(grpc.status.UNAVAILABLE, "x", { leaderAddr: "", leaderId: "", term: 2 });
    expect(leaderHintOf(none.metadata)).toBeNull();
    const garbage = new grpc.Metadata();
    garbage.set("grpc-status-details-bin", Buffer.from([0xff, 0xff, 0xff]));
    expect(leaderHintOf(garbage)).toBeNull();
  });

  test("the txn builder refuses what is not a compare or an operation, and awaiting it is an error, not a hang", async () => {
    const b = new TxnBuilder(async () => ({ succeeded: true, version: 1, results: [] }));
    expect(() => b.then({} as never)).toThrow(TypeError);
    expect(() => b.if({ key: "x" } as never)).toThrow(TypeError);
    const err = await (async () => await (b as unknown as Promise<unknown>))().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TypeError);
    expect((err as Error).message).toContain("commit()");
    const parts: unknown[] = [];
    await new TxnBuilder(async (p) => (parts.push(p), { succeeded: true, version: 1, results: [] })).if(compare.exists("a")).then(op.put("a", "b")).else(op.get("a"), op.delete("a")).commit();
    expect(parts).toEqual([
      {
        compare: [compare.exists("a")],
        success: [op.put("a", "b")],
        failure: [op.get("a"), op.delete("a")],
      },
    ]);
  });

  test("connect refuses bad endpoints and options with INVALID_ARGUMENT", async () => {
    const e1 = await Client.connect({ endpoints: [] }).catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(ClientError);
    expect((e1 as ClientError).code).toBe(grpc.status.INVALID_ARGUMENT);
    const e2 = await Client.connect({ endpoints: ["::1:9501"] }).catch((e: unknown) => e);
    expect((e2 as ClientError).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((e2 as ClientError).message).toContain("needs brackets");
    const e3 = await Client.connect({ endpoints: ["127.0.0.1:1"], timeoutMs: -5 }).catch((e: unknown) => e);
    expect((e3 as ClientError).code).toBe(grpc.status.INVALID_ARGUMENT);
  });

  test("connect to nothing that answers fails within its timeout with DEADLINE_EXCEEDED", async () => {
    const started = Date.now();
    const err = await Client.connect({ endpoints: ["127.0.0.1:1"], timeoutMs: 800, attemptTimeoutMs: 200 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClientError);
    expect((err as ClientError).code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect((err as ClientError).message).toContain("UNAVAILABLE");
    expect(Date.now() - started).toBeLessThan(3000);
  });
});

describe("client against a fake cluster", () => {
  let fake: FakeCluster;
  const clients: Client[] = [];
  async function connect(endpoint: string): Promise<Client> {
    const c = await Client.connect({ endpoints: [endpoint], timeoutMs: 3000, attemptTimeoutMs: 1000, backoff: { baseMs: 5, maxMs: 20 } });
    clients.push(c);
    return c;
  }

  beforeAll(async () => {
    fake = await FakeCluster.start(3);
  });
  afterAll(() => fake.stop());
  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close();
    fake.faults.length = 0;
    fake.rangeDown.clear();
    fake.calls.length = 0;
    fake.leader = 0;
  });

  test("discovers every member from one endpoint and finds the leader", async () => {
    fake.leader = 1;
    const c = await connect(fake.addrs[2]!);
    expect([...c.members].sort()).toEqual([...fake.addrs].sort());
    await c.put("d/k", "v");
    expect(c.leader).toBe(fake.addrs[1]!);
    // The write went to the leader only.
    expect(fake.calls.filter((x) => x.op === OpType.Put).map((x) => x.member)).toEqual([1]);
  });

  test("a redirect to a new leader is followed, and the write applied once", async () => {
    const c = await connect(fake.addrs[0]!);
    await c.put("r/a", "1");
    expect(c.leader).toBe(fake.addrs[0]!);
    fake.leader = 2; // the old leader now answers FAILED_PRECONDITION pointing at member 2
    const before = fake.applied;
    const w = await c.put("r/a", "2");
    expect(fake.applied).toBe(before + 1);
    expect(c.leader).toBe(fake.addrs[2]!);
    expect(fake.value("r/a")).toBe("2");
    expect(w.version).toBe(fake.version);
    expect(fake.calls.filter((x) => x.op === OpType.Put).map((x) => x.member)).toEqual([0, 0, 2]);
  });

  test("a lost answer is retried with the same session and seq, and applied once", async () => {
    const c = await connect(fake.addrs[0]!);
    fake.faults.push({ kind: "apply-then-fail", code: grpc.status.UNAVAILABLE, details: "connection dropped" });
    const before = fake.applied;
    const w = await c.put("x/once", "v");
    expect(fake.applied).toBe(before + 1);
    const puts = fake.calls.filter((x) => x.op === OpType.Put);
    expect(puts.length).toBe(2);
    expect(puts[0]!.sessionId).toBeGreaterThan(0);
    expect(puts[1]).toEqual(puts[0]!);
    expect(w.version).toBe(fake.version);
    // The next write takes the next seq of the same session.
    await c.put("x/next", "v");
    const last = fake.calls.filter((x) => x.op === OpType.Put).at(-1)!;
    expect(last.sessionId).toBe(puts[0]!.sessionId);
    expect(last.seq).toBe(puts[0]!.seq + 1);
  });

  test("a forgotten session is reopened when no attempt can have applied the write", async () => {
    const c = await connect(fake.addrs[0]!);
    await c.put("s/a", "1");
    const opened = fake.opened;
    fake.forgetSessions = true;
    await c.put("s/a", "2");
    expect(fake.opened).toBe(opened + 1);
    expect(fake.value("s/a")).toBe("2");
  });

  test("a forgotten session after an ambiguous attempt is WriteOutcomeUnknownError, not a second apply", async () => {
    const c = await connect(fake.addrs[0]!);
    await c.put("s/b", "1");
    // Applied, the answer lost, and the session gone before the retry arrives.
    fake.faults.push({ kind: "apply-then-expire", code: grpc.status.UNAVAILABLE });
    const before = fake.applied;
    const err = await c.put("s/b", "2").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WriteOutcomeUnknownError);
    expect((err as ClientError).code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(fake.applied).toBe(before + 1);
  });

  test("get answers null for a missing key and a ClientError with the server's code otherwise", async () => {
    const c = await connect(fake.addrs[0]!);
    expect(await c.get("nope")).toBeNull();
    await c.put("g/k", "hello", { meta: 7 });
    const e = await c.get("g/k");
    expect(e?.valueText).toBe("hello");
    expect(e?.meta).toBe(7);
    fake.faults.push({ kind: "fail-before-apply", code: grpc.status.INVALID_ARGUMENT, details: "value is too big" });
    const err = await c.put("g/k", "x").catch((x: unknown) => x);
    expect(err).toBeInstanceOf(ClientError);
    expect((err as ClientError).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((err as ClientError).codeName).toBe("INVALID_ARGUMENT");
    expect((err as ClientError).details).toBe("value is too big");
  });

  test("serializable reads are spread over members and carry the client's last written version", async () => {
    const c = await connect(fake.addrs[0]!);
    const w = await c.put("sr/k", "v");
    fake.calls.length = 0;
    for (let i = 0; i < 6; i++) expect((await c.get("sr/k", { serializable: true }))?.valueText).toBe("v");
    const gets = fake.calls.filter((x) => x.op === OpType.Get);
    expect(new Set(gets.map((g) => g.member)).size).toBe(3);
    expect(w.version).toBe(c.lastWrittenVersion);
  });

  test("range pages are read at the first page's version, and a dead member's page is asked elsewhere", async () => {
    const c = await connect(fake.addrs[0]!);
    for (let i = 0; i < 7; i++) await c.put(`pg/${i}`, `v${i}`);
    const pinned = fake.version;
    fake.ranges.length = 0;
    const seen: string[] = [];
    const versions = new Set<number>();
    let pages = 0;
    for await (const page of c.range("pg/", { pageSize: 3 })) {
      pages++;
      versions.add(page.version);
      seen.push(...page.kvs.map((kv) => kv.keyText));
      if (pages === 1) {
        await c.put("pg/9", "late"); // after the pinned version: must not show up
        fake.rangeDown.add(1); // one member dies mid-iteration
      }
    }
    expect(seen).toEqual(["pg/0", "pg/1", "pg/2", "pg/3", "pg/4", "pg/5", "pg/6"]);
    expect([...versions]).toEqual([pinned]);
    const [first, ...rest] = fake.ranges;
    expect(first!.req.rc).toBe(ReadConsistency.Linearizable);
    expect(first!.req.version).toBe(0);
    for (const r of rest) expect(r.req.version).toBe(pinned);
    // A page did hit the dead member and was asked again elsewhere.
    expect(rest.some((r) => r.member === 1)).toBe(true);
  });
});

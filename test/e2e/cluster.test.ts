// End-to-end: real ./rbkv processes on loopback, talking gRPC, killed with SIGKILL and
// restarted. These assert what a user relies on: the seed's cluster recipe, no lost
// acknowledged write, WAL replay, snapshot catch-up, watches, TTLs and versions.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { Status } from "../../src/server/gen/google/rpc/status.ts";
import { Event_EventType as EventType, LeaderInfoResponse, type OpType, type WatchResponse } from "../../src/server/gen/rbkv.ts";
import { Kv, TestCluster, dec, enc, eventually, sleep } from "./harness.ts";

describe("a three-node cluster formed the seed's way", () => {
  let c: TestCluster;

  beforeAll(async () => {
    c = await TestCluster.create(3, ["--snapshot-threshold=200", "--trailing-logs=20", "--election-timeout=600"], "localhost");
    await c.startSeedStyle();
  }, 60_000);

  afterAll(async () => {
    if (c) await c.destroy();
  });

  test("a write through one node is read linearizably through another", async () => {
    const put = await c.kv(0).put("greeting", "hello");
    expect(put.version).toBeGreaterThan(0);
    expect(await c.kv(2).value("greeting")).toBe("hello");
    expect(await c.kv(1).value("greeting")).toBe("hello");
  });

  test("followers forward writes to the leader", async () => {
    const leader = await c.leader();
    const follower = (leader + 1) % 3;
    const put = await c.kv(follower).put("via-follower", "ok");
    expect(put.version).toBeGreaterThan(0);
    expect(await c.kv(leader).value("via-follower")).toBe("ok");
  });

  test("LeaderInfo and ClusterStats describe the cluster", async () => {
    const leader = await c.leader();
    const info = await c.kv(1).client.leaderInfoAsync({});
    expect(info.leaderAddr).toBe(c.nodes[leader]!.spec.grpcAddr);
    expect(info.term).toBeGreaterThan(0);
    const st = await c.kv(0).client.clusterStatsAsync({ withRaft: true, withFsm: { withKeyCount: true } });
    expect(st.peers.length).toBe(3);
    expect(st.peers.filter((p) => p.isLeader).length).toBe(1);
    const local = st.peers.find((p) => p.isLocal)!;
    expect(local.id).toBe(c.nodes[0]!.spec.grpcAddr);
    expect(local.fsm?.keysCount).toBeGreaterThan(0);
    expect(local.raft?.meta.get("commit_index")).toBeDefined();
  });

  test("versions: every write is a new version; reads at an old version see the old value", async () => {
    const v1 = (await c.kv(0).put("ver", "one")).version;
    const v2 = (await c.kv(0).put("ver", "two")).version;
    const vd = (await c.kv(0).del("ver")).version;
    expect(v2).toBeGreaterThan(v1);
    expect(vd).toBeGreaterThan(v2);
    expect(await c.kv(1).value("ver", { version: v1 })).toBe("one");
    expect(await c.kv(1).value("ver", { version: v2 })).toBe("two");
    expect(await c.kv(1).value("ver")).toBeNull();
    expect(await c.kv(1).value("ver", { version: v1 - 1 })).toBeNull();
  });

  test("NOT_FOUND and INVALID_ARGUMENT", async () => {
    const kv = c.kv(0);
    await expect(kv.get("never-written")).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    await expect(kv.put("", "x")).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(kv.put("k".repeat(4097), "x")).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(kv.put("big", "v".repeat((1 << 20) + 1))).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(kv.client.executeAsync({ op: 7 as OpType, kv: { key: enc("x") } })).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    // The server is still fine.
    await kv.put("after-bad-input", "fine");
    expect(await kv.value("after-bad-input")).toBe("fine");
  });

  test("meta is stored with the value", async () => {
    await c.kv(0).put("with-meta", "m", { meta: 7 });
    expect((await c.kv(2).get("with-meta")).meta).toBe(7);
  });

  test("a watch sees every write under its prefix, in order", async () => {
    const events: WatchResponse[] = [];
    const stream = c.kv(1).client.watch({ watcherId: "w-order", prefixes: [enc("w/")], eventCapacity: 1000 });
    stream.on("data", (r: WatchResponse) => events.push(r));
    stream.on("error", () => {});
    await sleep(300);
    const versions: number[] = [];
    for (let i = 0; i < 50; i++) versions.push((await c.kv(i % 3).put(`w/${i}`, `v${i}`)).version);
    await c.kv(0).put("other/ignored", "x");
    await c.kv(0).del("w/3");
    await eventually("all watch events", async () => events.length >= 51, 10_000);
    stream.cancel();
    expect(events.slice(0, 50).map((e) => dec(e.event!.key))).toEqual(versions.map((_, i) => `w/${i}`));
    expect(events.slice(0, 50).map((e) => e.event!.version)).toEqual(versions);
    expect(events[50]!.event!.type).toBe(EventType.Delete);
    expect(events.every((e) => e.watcherId === "w-order")).toBe(true);
  });

  test("a duplicate watcher id is refused with ALREADY_EXISTS", async () => {
    const a = c.kv(0).client.watch({ watcherId: "dup", prefixes: [] });
    a.on("error", () => {});
    a.on("data", () => {});
    await sleep(200);
    const err = await new Promise<grpc.ServiceError>((resolve) => {
      const b = c.kv(0).client.watch({ watcherId: "dup", prefixes: [] });
      b.on("data", () => {});
      b.on("error", resolve);
    });
    expect(err.code).toBe(grpc.status.ALREADY_EXISTS);
    a.cancel();
  });

  test("Watch with leader_required on a follower: FAILED_PRECONDITION with the seed's LeaderInfoResponse in the error details", async () => {
    const leader = await c.leader();
    const follower = (leader + 1) % 3;
    const err = await new Promise<grpc.ServiceError>((resolve) => {
      const w = c.kv(follower).client.watch({ watcherId: "leader-only", leaderRequired: true });
      w.on("data", () => {});
      w.on("error", resolve);
    });
    expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
    // As a seed (Go) client reads it: status.FromError(err).Details()[0] is a LeaderInfoResponse.
    const status = Status.decode(err.metadata.get("grpc-status-details-bin")[0] as Buffer);
    expect(status.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(status.details.map((d) => d.typeUrl)).toEqual(["type.googleapis.com/rbdkv.LeaderInfoResponse"]);
    const info = LeaderInfoResponse.decode(status.details[0]!.value);
    expect(info.leaderAddr).toBe(c.nodes[leader]!.spec.grpcAddr);
    expect(info.term).toBeGreaterThan(0);
  });

  test("a TTL expires the key on every node, and watchers see the delete", async () => {
    const events: WatchResponse[] = [];
    const stream = c.kv(2).client.watch({ watcherId: "ttl", prefixes: [enc("ttl/")] });
    stream.on("data", (r: WatchResponse) => events.push(r));
    stream.on("error", () => {});
    await sleep(200);
    await c.kv(0).put("ttl/a", "short", { ttlMs: 800 });
    expect(await c.kv(1).value("ttl/a")).toBe("short");
    await sleep(1000);
    for (let i = 0; i < 3; i++) expect(await c.kv(i).value("ttl/a", { serializable: true })).toBeNull();
    await eventually("the expiry's delete event", async () => events.some((e) => e.event!.type === EventType.Delete && dec(e.event!.key) === "ttl/a"), 5000);
    stream.cancel();
  });

  test("all three restart without --join-addr, in reverse order, and keep the data", async () => {
    await c.kv(0).put("durable", "yes");
    for (const n of c.nodes) expect(await n.stop("SIGTERM")).toBe(0);
    for (const n of [...c.nodes].reverse()) n.start();
    await c.leader(20_000);
    expect(await c.kv(1).value("durable")).toBe("yes");
    expect(await c.kv(2).value("greeting")).toBe("hello");
  }, 60_000);
});

describe("failures", () => {
  let c: TestCluster;

  beforeAll(async () => {
    c = await TestCluster.create(3, ["--snapshot-threshold=100", "--trailing-logs=10", "--election-timeout=600"]);
    await c.startSeedStyle();
  }, 60_000);

  afterAll(async () => {
    if (c) await c.destroy();
  });

  test("SIGKILL of the leader under write load: a new leader soon, no acknowledged write lost", async () => {
    const leader = await c.leader();
    const others = [0, 1, 2].filter((i) => i !== leader);
    const acked = new Map<string, string>();
    let stop = false;
    const writers = [0, 1, 2, 3].map(async (w) => {
      for (let i = 0; !stop; i++) {
        const key = `load/${w}/${i}`;
        try {
          await c.kv(others[i % 2]!).put(key, `v${i}`, { deadlineMs: 3000 });
          acked.set(key, `v${i}`);
        } catch {
          await sleep(20);
        }
      }
    });
    await sleep(700);
    await c.nodes[leader]!.kill9();
    const killedAt = Date.now();
    const newLeader = await c.leader(10_000);
    expect(newLeader).not.toBe(leader);
    expect(Date.now() - killedAt).toBeLessThan(10_000);
    await sleep(700);
    stop = true;
    await Promise.all(writers);
    expect(acked.size).toBeGreaterThan(20);
    for (const [k, v] of acked) expect(await c.kv(newLeader).value(k)).toBe(v);
    c.nodes[leader]!.start();
    await c.waitServing(leader);
  }, 60_000);

  test("SIGKILL right after acknowledged writes: the restarted node replays its log and serves them locally", async () => {
    const victim = ((await c.leader()) + 1) % 3;
    const keys: string[] = [];
    for (let i = 0; i < 30; i++) {
      await c.kv(victim).put(`replay/${i}`, `r${i}`);
      keys.push(`replay/${i}`);
    }
    await c.nodes[victim]!.kill9();
    c.nodes[victim]!.start();
    await c.waitServing(victim);
    for (const [i, k] of keys.entries()) {
      expect(await eventually(`${k} on the restarted node`, async () => c.kv(victim).value(k, { serializable: true }), 10_000)).toBe(`r${i}`);
    }
  }, 60_000);

  test("a node that was down while the log was compacted catches up through a snapshot", async () => {
    const leader = await c.leader();
    const victim = (leader + 2) % 3;
    await c.nodes[victim]!.stop();
    for (let i = 0; i < 400; i++) await c.kv(leader).put(`snap/${i}`, `s${i}`);
    const st = await c.kv(leader).client.clusterStatsAsync({ withRaft: true });
    const first = Number(st.peers.find((p) => p.isLocal)!.raft!.meta.get("first_log_index"));
    expect(first).toBeGreaterThan(300); // compacted: the victim cannot be sent entries alone
    c.nodes[victim]!.start();
    await c.waitServing(victim);
    expect(await eventually("snapshot catch-up", async () => c.kv(victim).value("snap/399", { serializable: true }), 20_000)).toBe("s399");
    expect(await c.kv(victim).value("snap/0", { serializable: true })).toBe("s0");
    expect(await c.nodes[victim]!.logs()).toMatch(/installed a state machine image/);
  }, 90_000);
});

describe("a node on its embedded defaults", () => {
  test("`rbkv` with no flags serves a one-node cluster on 127.0.0.1:9501 with data in ./rbkv-data", async () => {
    const { mkdtempSync, existsSync, rmSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const { BINARY } = await import("./harness.ts");
    const cwd = mkdtempSync(join(tmpdir(), "rbkv-default-"));
    const p = Bun.spawn([BINARY], { cwd, stdout: "ignore", stderr: "ignore" });
    const kv = new Kv("127.0.0.1:9501");
    try {
      await eventually("the default node", async () => (await kv.put("k", "v", { deadlineMs: 1000 })).version > 0, 15_000);
      expect(await kv.value("k")).toBe("v");
      expect(existsSync(join(cwd, "rbkv-data"))).toBe(true);
    } finally {
      kv.close();
      p.kill("SIGTERM");
      expect(await p.exited).toBe(0);
      rmSync(cwd, { recursive: true, force: true });
    }
  }, 30_000);
});


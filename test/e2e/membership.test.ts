// End-to-end: removing members with the RemoveMember RPC (an rbkv extension). A removed node
// stops on its own, refuses to start again on its old data, and can be added back once its
// directories are emptied. Writes go on through the remaining members.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import type { RemoveMemberResponse } from "../../src/server/gen/rbkv.ts";
import { TestCluster, eventually, grpcCode } from "./harness.ts";

/** Empties a node's data directory but keeps its process log (the harness writes it there). */
function wipeData(dir: string): void {
  for (const f of readdirSync(dir)) if (!f.endsWith(".log")) rmSync(join(dir, f), { recursive: true, force: true });
}

/** RemoveMember as a client would call it: UNAVAILABLE (e.g. a leader elected moments ago) is retried. */
async function remove(c: TestCluster, via: number, id: string): Promise<RemoveMemberResponse> {
  return eventually(`the removal of ${id}`, async () => {
    try {
      return await c.kv(via).client.removeMemberAsync({ id }, { deadline: Date.now() + 15_000 });
    } catch (err) {
      if (grpcCode(err) === grpc.status.UNAVAILABLE) return false;
      throw err;
    }
  });
}

async function voterIds(c: TestCluster, via: number): Promise<string[]> {
  const st = await c.kv(via).client.clusterStatsAsync({ withRaft: true }, { deadline: Date.now() + 2000 });
  return st.peers
    .filter((p) => !p.isLearner)
    .map((p) => p.id)
    .sort();
}

describe("removing members", () => {
  let c: TestCluster;

  beforeAll(async () => {
    c = await TestCluster.create(3, ["--election-timeout=600", "--snapshot-threshold=100", "--trailing-logs=10"]);
    await c.startSeedStyle();
  }, 60_000);

  afterAll(async () => {
    if (c) await c.destroy();
  });

  test("bad requests: no id, a stranger", async () => {
    expect(grpcCode(await c.kv(0).client.removeMemberAsync({}).catch((e: unknown) => e))).toBe(grpc.status.INVALID_ARGUMENT);
    const err = await c.kv(1).client.removeMemberAsync({ id: "127.0.0.1:1" }).catch((e: unknown) => e);
    expect(grpcCode(err)).toBe(grpc.status.NOT_FOUND);
    expect((err as grpc.ServiceError).details).toContain("not a member");
  });

  test("a follower removed through another follower stops, refuses its old data, and rejoins once emptied", async () => {
    for (let i = 0; i < 50; i++) await c.kv(0).put(`before/${i}`, `v${i}`);
    const leader = await c.leader();
    const [victim, via] = [0, 1, 2].filter((i) => i !== leader) as [number, number];
    const victimId = c.nodes[victim]!.spec.grpcAddr;
    const res = await remove(c, via, victimId);
    expect(res.leaderInfo?.leaderAddr).toBe(c.nodes[leader]!.spec.grpcAddr);

    // The removed process stops by itself, cleanly, and says why.
    const code = await c.nodes[victim]!.proc!.exited;
    expect(code).toBe(0);
    expect(await c.nodes[victim]!.logs()).toContain("was removed from the cluster");
    expect(await voterIds(c, leader)).toEqual([c.nodes[leader]!.spec.grpcAddr, c.nodes[via]!.spec.grpcAddr].sort());

    // The two remaining voters go on (a majority of two is both).
    for (let i = 0; i < 50; i++) await c.kv(via).put(`after/${i}`, `w${i}`);
    expect(await c.kv(leader).value("after/49")).toBe("w49");

    // Restarting on the old data is refused, naming the marker file.
    c.nodes[victim]!.start();
    expect(await c.nodes[victim]!.proc!.exited).not.toBe(0);
    const log = await c.nodes[victim]!.logs();
    expect(log).toContain(join(c.nodes[victim]!.spec.dir, "REMOVED"));
    expect(log).toContain("--join-addr");

    // Emptied and joined again (same id): it catches up, becomes a voter and serves everything.
    wipeData(c.nodes[victim]!.spec.dir);
    c.nodes[victim]!.start({ join: c.nodes[via]!.spec.grpcAddr });
    await c.waitVoters(3);
    await eventually("the rejoined node to serve old and new writes", async () => (await c.kv(victim).value("before/0", { serializable: true })) === "v0" && (await c.kv(victim).value("after/49", { serializable: true })) === "w49");
    expect(await c.kv(victim).value("after/10")).toBe("w10");
    // It knows where it joined, so it ignores the log's history of its earlier self's removal.
    expect(await c.nodes[victim]!.logs()).toMatch(/joined cluster .* at index [1-9]\d*/);
  }, 90_000);

  test("removing the leader: it hands over, stops, and the others elect a new leader and keep the data", async () => {
    const leader = await c.leader();
    const leaderId = c.nodes[leader]!.spec.grpcAddr;
    await c.kv(leader).put("leader-removal", "before");
    await remove(c, leader, leaderId);
    expect(await c.nodes[leader]!.proc!.exited).toBe(0);
    const rest = [0, 1, 2].filter((i) => i !== leader);
    const next = await c.leader();
    expect(rest).toContain(next);
    expect(await voterIds(c, next)).toEqual(rest.map((i) => c.nodes[i]!.spec.grpcAddr).sort());
    await c.kv(rest[0]!).put("leader-removal", "after");
    expect(await c.kv(rest[1]!).value("leader-removal")).toBe("after");
    // Removing the last voter but one leaves one; the last one cannot be removed.
    await remove(c, rest[0]!, c.nodes[rest[1]!]!.spec.grpcAddr);
    expect(await c.nodes[rest[1]!]!.proc!.exited).toBe(0);
    const last = await c.kv(rest[0]!).client.removeMemberAsync({ id: c.nodes[rest[0]!]!.spec.grpcAddr }).catch((e: unknown) => e);
    expect(grpcCode(last)).toBe(grpc.status.FAILED_PRECONDITION);
    expect(await c.kv(rest[0]!).value("leader-removal")).toBe("after");
  }, 90_000);

  test("a member removed while it was down is told so when it comes back (even after the others restarted), and stops", async () => {
    // The cluster is node `solo` alone now; add the other two back first.
    const solo = await c.leader();
    const others = [0, 1, 2].filter((i) => i !== solo);
    for (const i of others) {
      wipeData(c.nodes[i]!.spec.dir);
      c.nodes[i]!.start({ join: c.nodes[solo]!.spec.grpcAddr });
    }
    await c.waitVoters(3);
    const leader = await c.leader();
    const away = [0, 1, 2].find((i) => i !== leader)!;
    await c.nodes[away]!.kill9();
    await remove(c, leader, c.nodes[away]!.spec.grpcAddr);
    for (let i = 0; i < 20; i++) await c.kv(leader).put(`while-away/${i}`, "x");
    // The others restart: they must still remember whom they removed.
    for (const i of [0, 1, 2].filter((j) => j !== away)) {
      expect(await c.nodes[i]!.stop()).toBe(0);
      c.nodes[i]!.start();
    }
    await c.leader();
    // It comes back on its old data, still believing it is a member: the others refuse it.
    c.nodes[away]!.start();
    const code = await Promise.race([c.nodes[away]!.proc!.exited, Bun.sleep(20_000).then(() => "still running")]);
    expect(code).toBe(0);
    expect(await c.nodes[away]!.logs()).toMatch(/was removed from the cluster at log index \d+ \(told by/);
    wipeData(c.nodes[away]!.spec.dir);
    c.nodes[away]!.start({ join: c.nodes[leader]!.spec.grpcAddr });
    await c.waitVoters(3);
  }, 120_000);

  test("a removal that would leave no working majority is refused, naming the member that is down", async () => {
    const leader = await c.leader();
    const [down, other] = [0, 1, 2].filter((i) => i !== leader) as [number, number];
    await c.nodes[down]!.kill9();
    await Bun.sleep(2000); // a few election timeouts: the leader notices that it hears nothing
    const err = await c.kv(leader).client.removeMemberAsync({ id: c.nodes[other]!.spec.grpcAddr }).catch((e: unknown) => e);
    expect(grpcCode(err)).toBe(grpc.status.UNAVAILABLE);
    expect((err as grpc.ServiceError).details).toContain(`would leave 2 voters of which only 1 answer the leader (not answering: ${c.nodes[down]!.spec.grpcAddr})`);
    expect(await voterIds(c, leader)).toHaveLength(3);
    // Removing the member that is down is fine: the two that remain both answer.
    await remove(c, leader, c.nodes[down]!.spec.grpcAddr);
    expect(await voterIds(c, leader)).toEqual([c.nodes[leader]!.spec.grpcAddr, c.nodes[other]!.spec.grpcAddr].sort());
  }, 60_000);
});

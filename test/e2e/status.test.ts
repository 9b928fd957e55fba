// End-to-end: the Status RPC on every member of a 3-node cluster. Each node answers for itself
// (no forwarding) with values that agree with what was written and with the other members: one
// leader that all name, one term, applied indexes that reach the last write, key counts that
// follow puts and deletes, the compacted version, and non-zero file sizes.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { OpType, type StatusResponse } from "../../src/server/gen/rbkv.ts";
import { VERSION } from "../../src/version.ts";
import { Clients, deadline } from "./api-helpers.ts";
import { TestCluster, enc, eventually } from "./harness.ts";

describe("Status", () => {
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

  const statuses = (): Promise<StatusResponse[]> => Promise.all([0, 1, 2].map((i) => cl.of(i).statusAsync({}, deadline(3000))));

  /** Waits until every node has applied `version` and holds `keys` keys; returns their statuses. */
  async function settled(version: number, keys: number): Promise<StatusResponse[]> {
    return eventually(`every node at version ${version} with ${keys} keys`, async () => {
      const all = await statuses();
      return all.every((s) => s.appliedIndex >= version && s.keyCount === keys) ? all : null;
    });
  }

  test("every member describes itself, consistently with the others and with what was written", async () => {
    const leader = await c.leader();
    const l = cl.of(leader);
    let last = 0;
    for (let i = 0; i < 50; i++) last = (await l.executeAsync({ op: OpType.Put, kv: { key: enc(`st/${i}`), value: enc(`value ${i}`) } }, deadline(5000))).version;
    for (let i = 0; i < 10; i++) last = (await l.executeAsync({ op: OpType.Put, kv: { key: enc(`st/${i}`), value: enc("again") } }, deadline(5000))).version;
    const all = await settled(last, 50);

    const clusterIds = new Set(all.map((s) => s.clusterId));
    expect(clusterIds.size).toBe(1);
    expect([...clusterIds][0]!).not.toBe("");
    expect(all.filter((s) => s.state === "leader").map((s) => s.id)).toEqual([c.nodes[leader]!.spec.grpcAddr]);
    expect(all.filter((s) => s.state === "follower").length).toBe(2);
    for (let i = 0; i < 3; i++) {
      const s = all[i]!;
      const spec = c.nodes[i]!.spec;
      // The node asked answers, not the leader.
      expect(s.id).toBe(spec.grpcAddr);
      expect(s.grpcAddr).toBe(spec.grpcAddr);
      expect(s.raftAddr).toBe(spec.raftAddr);
      expect(s.serverVersion).toBe(VERSION);
      expect(s.isLearner).toBe(false);
      expect(s.leaderInfo?.leaderId).toBe(c.nodes[leader]!.spec.grpcAddr);
      expect(s.leaderInfo?.leaderAddr).toBe(c.nodes[leader]!.spec.grpcAddr);
      expect(s.leaderInfo?.term).toBe(s.term);
      expect(s.term).toBe(all[leader]!.term);
      expect(s.term).toBeGreaterThan(0);
      // Indexes in their order: first <= applied <= commit <= last; the store's version is the applied index.
      expect(s.logFirstIndex).toBeGreaterThanOrEqual(1);
      expect(s.logFirstIndex).toBeLessThanOrEqual(s.appliedIndex + 1);
      expect(s.appliedIndex).toBeGreaterThanOrEqual(last);
      expect(s.commitIndex).toBeGreaterThanOrEqual(s.appliedIndex);
      expect(s.logLastIndex).toBeGreaterThanOrEqual(s.commitIndex);
      expect(s.version).toBe(s.appliedIndex);
      expect(s.compactedVersion).toBe(0);
      expect(s.keyCount).toBe(50);
      expect(s.logDbSize).toBeGreaterThan(0);
      expect(s.kvDbSize).toBeGreaterThan(0);
      expect(s.kvDataSize).toBeGreaterThan(0);
      expect(s.kvDataSize).toBeLessThanOrEqual(s.kvDbSize);
    }
  }, 60_000);

  test("key counts follow deletes, and the compacted version follows a Compact, on every member", async () => {
    const l = cl.of(await c.leader());
    let last = 0;
    for (let i = 40; i < 50; i++) last = (await l.executeAsync({ op: OpType.Delete, kv: { key: enc(`st/${i}`) } }, deadline(5000))).version;
    await settled(last, 40);
    const compacted = (await l.compactAsync({ version: last }, deadline(5000))).compacted;
    expect(compacted).toBe(last);
    const after = await eventually("every node to apply the compaction", async () => {
      const all = await statuses();
      return all.every((s) => s.compactedVersion === compacted) ? all : null;
    });
    for (const s of after) {
      expect(s.keyCount).toBe(40);
      expect(s.appliedIndex).toBeGreaterThan(compacted);
    }
  }, 60_000);

  test("a member answers for itself without a quorum: a leader cut off from the others reports that it stepped down", async () => {
    const leader = await c.leader();
    const others = [0, 1, 2].filter((i) => i !== leader);
    for (const i of others) await c.nodes[i]!.stop();
    try {
      // Status needs no round trip: the lone member answers at once, then (CheckQuorum) says it leads no more.
      const alone = await eventually("the cut-off leader to step down", async () => {
        const s = await cl.of(leader).statusAsync({}, deadline(1000));
        return s.state !== "leader" && s.leaderInfo?.leaderId === "" ? s : null;
      });
      expect(alone.id).toBe(c.nodes[leader]!.spec.grpcAddr);
      expect(alone.keyCount).toBe(40);
    } finally {
      for (const i of others) c.nodes[i]!.start();
    }
    await c.leader(30_000);
    const all = await eventually("all three to name one leader again", async () => {
      const st = await statuses();
      const ids = new Set(st.map((s) => s.leaderInfo?.leaderId));
      return ids.size === 1 && !ids.has("") && st.filter((s) => s.state === "leader").length === 1 ? st : null;
    }, 30_000);
    expect(new Set(all.map((s) => s.term)).size).toBe(1);
  }, 90_000);
});

// End-to-end: a three-node cluster on IPv6 loopback ([::1]), as an operator would start it:
// every flag in the bracketed form, the joins (one through a follower, which passes the Join to
// the leader over gRPC), writes and reads through a follower, SIGKILL and restart.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type RbdkvClient } from "../../src/server/grpc-service.ts";
import { OpType, ReadConsistency } from "../../src/server/gen/rbkv.ts";
import { fastClient } from "./api-helpers.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TestCluster, dec, enc, eventually, freePort, runBinary } from "./harness.ts";

describe("IPv6 flags", () => {
  test("an address that is not host:port or [ipv6]:port is refused with one line naming the flag and the fix", async () => {
    const dir = mkdtempSync(join(tmpdir(), "rbkv-v6flags-"));
    try {
      const cases: [string[], string][] = [
        [[`--grpc-addr=::1:${await freePort()}`], "--grpc-addr must be host:port or [ipv6]:port, got \"::1:"],
        [["--raft-addr=[::1]"], `--raft-addr must be host:port or [ipv6]:port, got "[::1]": the port is missing`],
        [["--join-addr=[::1:9501"], `--join-addr must be host:port or [ipv6]:port, got "[::1:9501": the IPv6 address has no closing bracket`],
        [["--raft-advertise-addr=[fe80::zz]:9601"], `--raft-advertise-addr must be host:port or [ipv6]:port, got "[fe80::zz]:9601": "fe80::zz" in brackets is not an IPv6 address`],
      ];
      for (const [flags, message] of cases) {
        const defaults = [`--grpc-addr=[::1]:${await freePort()}`, `--raft-addr=[::1]:${await freePort()}`].filter((d) => !flags.some((f) => f.split("=")[0] === d.split("=")[0]));
        const args = [`--log-dir=${dir}`, `--kv-dir=${dir}`, ...defaults, ...flags];
        const r = await runBinary(args);
        expect(r.code).toBe(2);
        const lines = r.stderr.trim().split("\n");
        expect(lines.length).toBe(1);
        expect(lines[0]).toStartWith(`rbkv: ${message}`);
      }
      const bare = await runBinary([`--log-dir=${dir}`, `--kv-dir=${dir}`, "--grpc-addr=::1:9501"]);
      expect(bare.stderr.trim()).toBe('rbkv: --grpc-addr must be host:port or [ipv6]:port, got "::1:9501": an IPv6 address needs brackets: [::1]:9501');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("a three-node cluster on [::1]", () => {
  let c: TestCluster;
  const clients: RbdkvClient[] = [];
  const client = (i: number): RbdkvClient => (clients[i] ??= fastClient(c.nodes[i]!.spec.grpcAddr));

  const put = (i: number, key: string, value: string) =>
    client(i).executeAsync({ op: OpType.Put, kv: { key: enc(key), value: enc(value) } }, { deadline: Date.now() + 10_000 });
  const get = async (i: number, key: string, rc: ReadConsistency = ReadConsistency.Linearizable): Promise<string> =>
    dec((await client(i).executeAsync({ op: OpType.Get, rc, kv: { key: enc(key) } }, { deadline: Date.now() + 10_000 })).value);

  beforeAll(async () => {
    c = await TestCluster.create(3, ["--election-timeout=600"], "[::1]");
    for (const n of c.nodes) expect(n.spec.grpcAddr).toMatch(/^\[::1\]:\d+$/);
    c.nodes[0]!.start();
    await c.waitServing(0);
    c.nodes[1]!.start({ join: c.nodes[0]!.spec.grpcAddr });
    await c.waitVoters(2);
    // Through node 2, a follower: it forwards the Join to the leader's bracketed gRPC address.
    c.nodes[2]!.start({ join: c.nodes[1]!.spec.grpcAddr });
    await c.waitVoters(3);
  }, 60_000);

  afterAll(async () => {
    for (const cl of clients) cl?.close();
    if (c) await c.destroy();
  });

  test("every member lists the others' bracketed addresses, and one leader", async () => {
    for (let i = 0; i < 3; i++) {
      const st = await client(i).clusterStatsAsync({ withRaft: true }, { deadline: Date.now() + 5000 });
      const byId = new Map(st.peers.map((p) => [p.id, p]));
      for (const n of c.nodes) {
        const p = byId.get(n.spec.grpcAddr);
        expect(p).toBeDefined();
        expect(p!.raft?.meta.get("grpc_addr")).toBe(n.spec.grpcAddr);
        expect(p!.raft?.meta.get("raft_addr")).toBe(n.spec.raftAddr);
        expect(p!.isLearner).toBe(false);
      }
      expect(st.peers.filter((p) => p.isLeader).length).toBe(1);
    }
    const leader = await c.leader();
    const info = await client((leader + 1) % 3).leaderInfoAsync({});
    expect(info.leaderAddr).toBe(c.nodes[leader]!.spec.grpcAddr);
  });

  test("a follower forwards writes and serves linearizable reads", async () => {
    const leader = await c.leader();
    const follower = (leader + 1) % 3;
    const w = await put(follower, "v6/through-follower", "forwarded");
    expect(w.version).toBeGreaterThan(0);
    expect(await get(follower, "v6/through-follower")).toBe("forwarded");
    expect(await get(leader, "v6/through-follower")).toBe("forwarded");
    expect(await get((leader + 2) % 3, "v6/through-follower")).toBe("forwarded");
  });

  test("a member killed with SIGKILL restarts on [::1] with its data and catches up", async () => {
    const leader = await c.leader();
    const victim = (leader + 1) % 3;
    for (let k = 0; k < 20; k++) await put(victim, `v6/before/${k}`, `b${k}`);
    await c.nodes[victim]!.kill9();
    // The other two still commit.
    const survivor = (leader + 2) % 3;
    for (let k = 0; k < 20; k++) await put(survivor, `v6/during/${k}`, `d${k}`);
    c.nodes[victim]!.start();
    await eventually("the restarted member to hold every write", async () => {
      for (let k = 0; k < 20; k++) {
        if ((await get(victim, `v6/before/${k}`, ReadConsistency.Serializable)) !== `b${k}`) return false;
        if ((await get(victim, `v6/during/${k}`, ReadConsistency.Serializable)) !== `d${k}`) return false;
      }
      return true;
    }, 30_000);
    // It takes part again: a write through it, read everywhere.
    await put(victim, "v6/after-restart", "yes");
    for (let i = 0; i < 3; i++) expect(await get(i, "v6/after-restart")).toBe("yes");
    expect(await c.nodes[victim]!.logs()).not.toContain("ENOTFOUND");
  }, 60_000);

  test("the leader killed with SIGKILL: a new leader on [::1], and the old one rejoins", async () => {
    const leader = await c.leader();
    await put(leader, "v6/old-leader", "1");
    await c.nodes[leader]!.kill9();
    const next = await c.leader(20_000);
    expect(next).not.toBe(leader);
    await put((next + 1) % 3 === leader ? (next + 2) % 3 : (next + 1) % 3, "v6/new-leader", "2");
    c.nodes[leader]!.start();
    await eventually("the old leader to catch up", async () => (await get(leader, "v6/new-leader", ReadConsistency.Serializable)) === "2", 30_000);
    expect(await get(leader, "v6/old-leader")).toBe("1");
  }, 60_000);
});

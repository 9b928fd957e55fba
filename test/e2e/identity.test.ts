// End-to-end: a data directory knows its node id and is locked by the process that runs on it.
// (a) a one-node cluster restarted at another --grpc-addr (another default id) is refused with
//     one line; under its stored id (--node-id) at new addresses it serves its data there;
// (b) a member of a three-node cluster moved to new gRPC and Raft ports under its id: every
//     member dials it there, it takes new writes, and it leads (forwarding to it works);
// (c) a second ./rbkv on a running node's directories is refused naming the holder's pid; a node
//     killed with SIGKILL restarts at once.

import { afterAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type RbdkvClient } from "../../src/server/grpc-service.ts";
import { OpType, ReadConsistency } from "../../src/server/gen/rbkv.ts";
import { fastClient } from "./api-helpers.ts";
import { RbkvProcess, TestCluster, dec, enc, eventually, freePort, requireBinary, runBinary } from "./harness.ts";

requireBinary();
const root = mkdtempSync(join(tmpdir(), "rbkv-identity-"));
const clients = new Map<string, RbdkvClient>();
afterAll(() => {
  for (const c of clients.values()) c.close();
  rmSync(root, { recursive: true, force: true });
});

function client(addr: string): RbdkvClient {
  let c = clients.get(addr);
  if (!c) {
    c = fastClient(addr);
    clients.set(addr, c);
  }
  return c;
}

const put = (addr: string, key: string, value: string) =>
  client(addr).executeAsync({ op: OpType.Put, kv: { key: enc(key), value: enc(value) } }, { deadline: Date.now() + 10_000 });

async function get(addr: string, key: string, rc: ReadConsistency = ReadConsistency.Linearizable): Promise<string> {
  return dec((await client(addr).executeAsync({ op: OpType.Get, rc, kv: { key: enc(key) } }, { deadline: Date.now() + 10_000 })).value);
}

/** Every member's view of `id`'s addresses (ClusterStats raft_addr / grpc_addr). */
async function addressesSeenBy(addr: string, id: string): Promise<{ raft: string; grpc: string } | null> {
  const st = await client(addr).clusterStatsAsync({ withRaft: true }, { deadline: Date.now() + 3000 });
  const p = st.peers.find((x) => x.id === id);
  return p ? { raft: p.raft?.meta.get("raft_addr") ?? "", grpc: p.raft?.meta.get("grpc_addr") ?? "" } : null;
}

/** Digests of the data files (not LMDB's lock files nor ours), to show nothing was written. */
function dataDigest(dir: string): string {
  const h = createHash("sha256");
  for (const f of ["raft-log.mdb", "kv/fsm.mdb"]) h.update(readFileSync(join(dir, f)));
  return h.digest("hex");
}

async function addr(): Promise<string> {
  return `127.0.0.1:${await freePort()}`;
}

describe("(a) a one-node cluster moved to new addresses", () => {
  test("another default id is refused with one line; --node-id=<stored> serves the data at the new addresses", async () => {
    const dir = join(root, "single");
    const first = new RbkvProcess({ name: "first", grpcAddr: await addr(), raftAddr: await addr(), dir, extra: [] });
    first.start();
    await eventually("the node to lead", async () => (await client(first.spec.grpcAddr).leaderInfoAsync({})).leaderId === first.spec.grpcAddr);
    await put(first.spec.grpcAddr, "moved/key", "kept");
    expect(await first.stop()).toBe(0);
    const before = dataDigest(dir);

    const grpcAddr = await addr();
    const raftAddr = await addr();
    const refused = await runBinary([`--grpc-addr=${grpcAddr}`, `--raft-addr=${raftAddr}`, `--log-dir=${dir}`, `--kv-dir=${dir}`]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr.trim().split("\n")).toEqual([
      `rbkv: --log-dir ${dir} holds the data of node ${first.spec.grpcAddr}, not of ${grpcAddr} (the node id, which defaults to --grpc-addr): ` +
        `to start node ${first.spec.grpcAddr} on this data at new addresses, pass --node-id=${first.spec.grpcAddr}`,
    ]);
    expect(dataDigest(dir)).toBe(before);

    const moved = new RbkvProcess({ name: "moved", grpcAddr, raftAddr, dir, extra: [`--node-id=${first.spec.grpcAddr}`] });
    moved.start();
    try {
      const id = first.spec.grpcAddr;
      expect(await eventually("the data at the new address", async () => (await get(grpcAddr, "moved/key", ReadConsistency.Serializable)) === "kept")).toBe(true);
      await eventually("LeaderInfo to name the new address", async () => {
        const info = await client(grpcAddr).leaderInfoAsync({});
        return info.leaderId === id && info.leaderAddr === grpcAddr;
      });
      expect(await addressesSeenBy(grpcAddr, id)).toEqual({ raft: raftAddr, grpc: grpcAddr });
      const st = await client(grpcAddr).clusterStatsAsync({ withRaft: true });
      expect(st.peers.length).toBe(1);
      expect(st.peers[0]!.isLocal && st.peers[0]!.isLeader).toBe(true);
      // Status: the same id, the new addresses, itself as leader at its new address.
      const status = await client(grpcAddr).statusAsync({});
      expect(status).toMatchObject({ id, grpcAddr, raftAddr, state: "leader" });
      expect(status.leaderInfo).toMatchObject({ leaderId: id, leaderAddr: grpcAddr });
      await put(grpcAddr, "moved/after", "new");
      expect(await get(grpcAddr, "moved/after")).toBe("new");
      expect(await get(grpcAddr, "moved/key")).toBe("kept");
      expect(await moved.logs()).toContain(`MemberUpdate through ${grpcAddr} done`);

      // Started the same way again: the cluster already has these addresses, nothing to update.
      expect(await moved.stop()).toBe(0);
      const again = new RbkvProcess({ name: "again", grpcAddr, raftAddr, dir, extra: [`--node-id=${id}`] });
      again.start();
      try {
        expect(await eventually("the data after a second restart", async () => (await get(grpcAddr, "moved/after")) === "new")).toBe(true);
        expect((await client(grpcAddr).leaderInfoAsync({})).leaderAddr).toBe(grpcAddr);
      } finally {
        await again.stop();
      }
      expect(await again.logs()).not.toContain("MemberUpdate");
    } finally {
      await moved.kill9();
    }
  }, 60_000);
});

describe("(b) a member of a three-node cluster moved to new ports", () => {
  let c: TestCluster;
  afterAll(async () => {
    if (c) await c.destroy();
  });

  test("every member dials it at its new addresses; it takes writes and leads", async () => {
    c = await TestCluster.create(3, ["--election-timeout=600"]);
    await c.startSeedStyle();
    const leader = await c.leader();
    const m = (leader + 1) % 3;
    const old = c.nodes[m]!;
    const id = old.spec.grpcAddr;
    await put(c.nodes[leader]!.spec.grpcAddr, "three/before", "1");
    expect(await old.stop()).toBe(0);
    // Writes it missed while down.
    await put(c.nodes[leader]!.spec.grpcAddr, "three/while-down", "2");

    const moved = new RbkvProcess({ name: "moved", grpcAddr: await addr(), raftAddr: await addr(), dir: old.spec.dir, extra: ["--election-timeout=600", `--node-id=${id}`] });
    c.nodes[m] = moved;
    moved.start();
    const want = { raft: moved.spec.raftAddr, grpc: moved.spec.grpcAddr };
    await eventually(
      "every member to have the new addresses",
      async () => {
        for (const n of c.nodes) {
          const seen = await addressesSeenBy(n.spec.grpcAddr, id);
          if (seen?.raft !== want.raft || seen.grpc !== want.grpc) return false;
        }
        return true;
      },
      30_000,
    );
    // It receives what it missed and what comes next, over its new Raft address.
    const later = await put(c.nodes[leader]!.spec.grpcAddr, "three/after-move", "3");
    await eventually("the moved member to apply new writes", async () => (await get(moved.spec.grpcAddr, "three/after-move", ReadConsistency.Serializable)) === "3", 15_000);
    expect(await get(moved.spec.grpcAddr, "three/while-down", ReadConsistency.Serializable)).toBe("2");
    expect(await get(moved.spec.grpcAddr, "three/before")).toBe("1");
    expect(later.version).toBeGreaterThan(0);
    expect(await moved.logs()).toContain("MemberUpdate through");

    // Leadership to the moved member; the others pass writes and reads to it.
    await client(c.nodes[leader]!.spec.grpcAddr).transferLeadershipAsync({ to: id }, { deadline: Date.now() + 15_000 });
    await eventually("the moved member to lead", async () => {
      for (const n of c.nodes) {
        const info = await client(n.spec.grpcAddr).leaderInfoAsync({});
        if (info.leaderId !== id || info.leaderAddr !== moved.spec.grpcAddr) return false;
      }
      return true;
    });
    const other = (m + 1) % 3;
    await put(c.nodes[other]!.spec.grpcAddr, "three/forwarded-to-moved", "4");
    expect(await get(moved.spec.grpcAddr, "three/forwarded-to-moved")).toBe("4");
    expect(await get(c.nodes[(m + 2) % 3]!.spec.grpcAddr, "three/forwarded-to-moved")).toBe("4");

    // The moved leader killed: the others elect one of themselves and it rejoins at its new ports.
    await moved.kill9();
    await put(c.nodes[other]!.spec.grpcAddr, "three/after-kill", "5").catch(async () => {
      await eventually("a new leader", async () => (await client(c.nodes[other]!.spec.grpcAddr).leaderInfoAsync({})).leaderId !== id);
      return put(c.nodes[other]!.spec.grpcAddr, "three/after-kill", "5");
    });
    moved.start();
    await eventually("the moved member back with every write", async () => (await get(moved.spec.grpcAddr, "three/after-kill", ReadConsistency.Serializable)) === "5", 20_000);
  }, 120_000);
});

describe("(c) one process per data directory", () => {
  test("a second ./rbkv on a running node's directories is refused naming the holder's pid; SIGKILL leaves no stale lock", async () => {
    const dir = join(root, "locked");
    const node = new RbkvProcess({ name: "holder", grpcAddr: await addr(), raftAddr: await addr(), dir, extra: [] });
    node.start();
    try {
      await eventually("the node to lead", async () => (await client(node.spec.grpcAddr).leaderInfoAsync({})).leaderId !== "");
      await put(node.spec.grpcAddr, "locked/key", "v");
      const pid = node.proc!.pid;
      const lockFile = join(dir, "rbkv.lock");
      expect(readFileSync(lockFile, "utf8")).toBe(`${pid}\n`);
      const refusal = `rbkv: --log-dir ${dir} is in use by another process (pid ${pid}, holding ${lockFile}): two processes must not share a data directory; stop that one first`;
      // Under the same id (the unsafe case: one identity, one log, two voters) and under another.
      for (const extra of [[`--node-id=${node.spec.grpcAddr}`], []]) {
        const r = await runBinary([`--grpc-addr=${await addr()}`, `--raft-addr=${await addr()}`, `--log-dir=${dir}`, `--kv-dir=${dir}`, ...extra]);
        expect(r.code).not.toBe(0);
        expect(r.stderr.trim().split("\n")).toEqual([refusal]);
      }
      // Only the kv directory shared.
      const other = join(root, "other-log");
      const r = await runBinary([`--grpc-addr=${await addr()}`, `--raft-addr=${await addr()}`, `--log-dir=${other}`, `--kv-dir=${dir}`]);
      expect(r.code).not.toBe(0);
      expect(r.stderr.trim()).toBe(`rbkv: --kv-dir ${dir} is in use by another process (pid ${pid}, holding ${lockFile}): two processes must not share a data directory; stop that one first`);
      // The holder noticed nothing: its lock file, its data, its service.
      expect(readFileSync(lockFile, "utf8")).toBe(`${pid}\n`);
      expect(await get(node.spec.grpcAddr, "locked/key")).toBe("v");
      expect(await node.logs()).not.toMatch(/WARN|ERROR/);

      await node.kill9();
      node.start();
      expect(await eventually("the restarted node to serve its data", async () => (await get(node.spec.grpcAddr, "locked/key")) === "v", 10_000)).toBe(true);
      expect(readFileSync(lockFile, "utf8")).toBe(`${node.proc!.pid}\n`);
    } finally {
      await node.kill9();
    }
  }, 60_000);
});

// End-to-end: backups. `rbkv snapshot save` from a follower and from the leader of a 3-node
// cluster under concurrent writes; `rbkv snapshot restore` into a new directory; the restored
// node starts as a new one-node cluster holding exactly the data of the image's version (every
// key, value, meta, version, create_version and TTL, the compacted version, the sessions), and
// writes there get versions above the image's. Damaged, truncated and foreign files, and
// non-empty targets, are refused with one line and leave nothing behind; a Snapshot stream that
// its caller cancels midway leaves the server healthy.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { type KeyValue, OpType, type SnapshotChunk } from "../../src/server/gen/rbkv.ts";
import type { RbdkvClient } from "../../src/server/grpc-service.ts";
import { Clients, ReadConsistency, code, deadline, del, fastClient, put, rangeAll, rangeReq } from "./api-helpers.ts";
import { RbkvProcess, TestCluster, enc, eventually, freePort, runBinary, sleep } from "./harness.ts";

const SAVED = /^saved snapshot at version (\d+): (\d+) keys, (\d+) bytes, from (\S+) of cluster (\S+), to (.+)\n$/;
const RESTORED = /^restored snapshot at version (\d+) \((\d+) keys, from cluster (\S+)\) into (\S+) as new cluster (\S+); start it with: rbkv .+\n$/;

interface Saved {
  version: number;
  keys: number;
  bytes: number;
  from: string;
  cluster: string;
}

async function save(file: string, endpoint: string): Promise<Saved> {
  const r = await runBinary(["snapshot", "save", file, "--endpoints", endpoint], { timeoutMs: 60_000 });
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  const m = SAVED.exec(r.stdout);
  expect(m, r.stdout).not.toBeNull();
  return { version: Number(m![1]), keys: Number(m![2]), bytes: Number(m![3]), from: m![4]!, cluster: m![5]! };
}

/** A refused command: non-zero, exactly one `rbkv: ` line on stderr, nothing on stdout. */
function expectRefused(r: { code: number; stdout: string; stderr: string }, why: RegExp): void {
  expect(r.code).not.toBe(0);
  expect(r.stdout).toBe("");
  const lines = r.stderr.split("\n").filter((l) => l !== "");
  expect(lines.length, r.stderr).toBe(1);
  expect(lines[0]!).toMatch(/^rbkv: /);
  expect(lines[0]!).toMatch(why);
}

const row = (kv: KeyValue) => ({
  key: Buffer.from(kv.key).toString(),
  value: Buffer.from(kv.value).toString("hex"),
  meta: kv.meta,
  version: kv.version,
  create: kv.createVersion,
  expireAt: kv.expireAt,
});

describe("snapshot save and restore", () => {
  let c: TestCluster;
  let cl: Clients;
  const restored: RbkvProcess[] = [];
  const files: { file: string; saved: Saved; node: number }[] = [];
  let sessionId = 0;
  let sessionPutVersion = 0;
  let compactedAt = 0;

  beforeAll(async () => {
    c = await TestCluster.create(3, ["--election-timeout=600"]);
    await c.startSeedStyle();
    cl = new Clients(c);
  }, 60_000);

  afterAll(async () => {
    for (const p of restored) await p.kill9();
    cl?.close();
    if (c) await c.destroy();
  });

  async function leaderClient(): Promise<RbdkvClient> {
    return cl.of(await c.leader());
  }

  test("saves from a follower and from the leader under writes; each restores into a new cluster with exactly the image's data", async () => {
    let l = await leaderClient();
    // History to carry over: overwrites (create_version < version), meta, deletes, a txn, a TTL,
    // a session's stored answer, and a compaction.
    for (let i = 0; i < 60; i++) await l.executeAsync({ op: OpType.Put, kv: { key: enc(`s/k${i % 40}`), value: enc(`v${i}`), meta: i % 5 } }, deadline(5000));
    for (let i = 0; i < 10; i++) await l.executeAsync({ op: OpType.Delete, kv: { key: enc(`s/k${i * 3}`) } }, deadline(5000));
    const t = await l.txnAsync({ compare: [], success: [put("s/t1", "one", 7), put("s/t2", "two"), del("s/k1")], failure: [] }, deadline(5000));
    expect(t.succeeded).toBe(true);
    const ttl = await l.executeAsync({ op: OpType.Put, kv: { key: enc("s/ttl"), value: enc("expires in an hour"), ttl: { seconds: 3600, nanos: 0 } } }, deadline(5000));
    const s = await l.openSessionAsync({ ttl: { seconds: 3600, nanos: 0 } }, deadline(5000));
    sessionId = s.sessionId;
    sessionPutVersion = (await l.executeAsync({ op: OpType.Put, kv: { key: enc("s/session"), value: enc("once") }, sessionId, seq: 1 }, deadline(5000))).version;
    compactedAt = (await l.compactAsync({ version: ttl.version }, deadline(5000))).compacted;
    expect(compactedAt).toBe(ttl.version);

    // Writers keep going while both backups are taken.
    let writing = true;
    let written = 0;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        try {
          await l.executeAsync({ op: OpType.Put, kv: { key: enc(`s/bg/${i % 50}`), value: enc(`bg${i}`), meta: i % 3 } }, deadline(5000));
          if (i % 7 === 0) await l.executeAsync({ op: OpType.Delete, kv: { key: enc(`s/bg/${(i + 25) % 50}`) } }, deadline(5000));
          written++;
        } catch {
          l = await leaderClient();
        }
      }
    })();
    await eventually("the writers to get going", async () => written > 20);
    const leader = await c.leader();
    const follower = (leader + 1) % 3;
    const fromFollower = join(c.root, "follower.rbkvsnap");
    const fromLeader = join(c.root, "leader.rbkvsnap");
    const [sf, sl] = await Promise.all([save(fromFollower, c.nodes[follower]!.spec.grpcAddr), save(fromLeader, c.nodes[leader]!.spec.grpcAddr)]);
    await sleep(200);
    writing = false;
    await writer;
    expect(sf.from).toBe(c.nodes[follower]!.spec.grpcAddr);
    expect(sl.from).toBe(c.nodes[leader]!.spec.grpcAddr);
    expect(sf.cluster).toBe(sl.cluster);
    for (const [saved, file] of [
      [sf, fromFollower],
      [sl, fromLeader],
    ] as const) {
      expect(saved.version).toBeGreaterThan(sessionPutVersion);
      expect(saved.bytes).toBe(readFileSync(file).length);
      expect(existsSync(`${file}.part`)).toBe(false);
    }
    files.push({ file: fromFollower, saved: sf, node: follower }, { file: fromLeader, saved: sl, node: leader });
    const sourceStatus = await cl.of(leader).statusAsync({}, deadline(3000));

    for (const { file, saved, node } of files) {
      // The source as of the image's version (MVCC), read on the member that served it.
      const want = await rangeAll(cl.of(node), "s/", { version: saved.version, rc: ReadConsistency.Serializable });
      expect(want.kvs.length).toBe(saved.keys);
      expect(want.kvs.some((kv) => Buffer.from(kv.key).toString() === "s/ttl" && kv.expireAt > Date.now())).toBe(true);
      expect(want.kvs.some((kv) => kv.createVersion < kv.version)).toBe(true);

      const dir = join(c.root, `restored-${restored.length}`);
      const grpcAddr = `127.0.0.1:${await freePort()}`;
      const raftAddr = `127.0.0.1:${await freePort()}`;
      const r = await runBinary(["snapshot", "restore", file, "--data-dir", dir, "--grpc-addr", grpcAddr, "--raft-addr", raftAddr], { timeoutMs: 60_000 });
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      const m = RESTORED.exec(r.stdout);
      expect(m, r.stdout).not.toBeNull();
      expect(Number(m![1])).toBe(saved.version);
      expect(Number(m![2])).toBe(saved.keys);
      // Nothing but the data directory was left beside it.
      expect(readdirSync(c.root).filter((f) => f.includes(".restore-"))).toEqual([]);

      const p = new RbkvProcess({ name: "restored", grpcAddr, raftAddr, dir, extra: ["--election-timeout=600"] });
      restored.push(p);
      p.start();
      const rc = fastClient(grpcAddr);
      try {
        const st = await eventually("the restored node to lead", async () => {
          const x = await rc.statusAsync({}, deadline(1000));
          return x.state === "leader" ? x : null;
        });
        expect(st.clusterId).not.toBe(sourceStatus.clusterId);
        expect(st.clusterId).not.toBe("");
        expect(st.id).toBe(grpcAddr);
        expect(st.compactedVersion).toBe(compactedAt);
        expect(st.logFirstIndex).toBe(saved.version + 1);
        expect(st.keyCount).toBe(saved.keys);

        // Exactly the image's data: at its version, and as the latest state.
        const atImage = await rangeAll(rc, "s/", { version: saved.version });
        expect(atImage.kvs.map(row)).toEqual(want.kvs.map(row));
        const latest = await rangeAll(rc, "s/");
        expect(latest.kvs.map(row)).toEqual(want.kvs.map(row));
        // Below the compacted version, history is gone there as well.
        try {
          await rc.rangeAsync(rangeReq({ key: enc("s/"), rangeEnd: enc("s0"), version: compactedAt - 1 }), deadline(3000));
          throw new Error("a read below the compacted version answered");
        } catch (err) {
          expect(code(err)).toBe(grpc.status.OUT_OF_RANGE);
        }
        // The session came along: its retry gets the stored answer and applies nothing.
        const retry = await rc.executeAsync({ op: OpType.Put, kv: { key: enc("s/session"), value: enc("twice") }, sessionId, seq: 1 }, deadline(5000));
        expect(retry.version).toBe(sessionPutVersion);
        const sess = await rc.rangeAsync(rangeReq({ key: enc("s/session") }), deadline(3000));
        expect(sess.kvs.map(row)).toEqual(want.kvs.filter((kv) => Buffer.from(kv.key).toString() === "s/session").map(row));
        // New writes come after every restored version.
        const w = await rc.executeAsync({ op: OpType.Put, kv: { key: enc("s/after-restore"), value: enc("new") } }, deadline(5000));
        expect(w.version).toBeGreaterThan(saved.version);
        const w2 = await rc.txnAsync({ compare: [], success: [put("s/k2", "changed")], failure: [] }, deadline(5000));
        expect(w2.version).toBeGreaterThan(w.version);
      } finally {
        rc.close();
        await p.stop();
      }
    }
  }, 180_000);

  test("a truncated, a damaged and a foreign file are refused with one line and leave the target absent or empty", async () => {
    expect(files.length).toBeGreaterThan(0);
    const good = readFileSync(files[0]!.file);
    const bad: [string, Buffer, RegExp][] = [
      ["truncated", good.subarray(0, Math.floor(good.length / 2)), /truncated/],
      ["truncated-trailer", good.subarray(0, good.length - 10), /truncated|trailer/],
      ["bit-flipped", Buffer.from(good), /corrupt|damaged|checksum/],
      ["header-flipped", Buffer.from(good), /damaged header/],
      ["foreign", Buffer.from("this is not a backup\n".repeat(100)), /not an rbkv backup/],
      ["empty", Buffer.alloc(0), /empty file/],
    ];
    bad[2]![1][Math.floor(good.length / 2)] ^= 0x04;
    bad[3]![1][20] ^= 0x01;
    for (const [name, bytes, why] of bad) {
      const file = join(c.root, `${name}.rbkvsnap`);
      writeFileSync(file, bytes);
      const absent = join(c.root, `target-${name}`);
      expectRefused(await runBinary(["snapshot", "restore", file, "--data-dir", absent]), why);
      expect(existsSync(absent)).toBe(false);
      const empty = join(c.root, `empty-target-${name}`);
      mkdirSync(empty);
      expectRefused(await runBinary(["snapshot", "restore", file, "--data-dir", empty]), why);
      expect(readdirSync(empty)).toEqual([]);
    }
    expect(readdirSync(c.root).filter((f) => f.includes(".restore-"))).toEqual([]);
  }, 60_000);

  test("a restore into a non-empty directory is refused and changes nothing there", async () => {
    const dir = join(c.root, "occupied");
    mkdirSync(dir);
    writeFileSync(join(dir, "keep.txt"), "mine");
    expectRefused(await runBinary(["snapshot", "restore", files[0]!.file, "--data-dir", dir]), /not empty/);
    expect(readdirSync(dir)).toEqual(["keep.txt"]);
    expect(readFileSync(join(dir, "keep.txt"), "utf8")).toBe("mine");
    // A running node's directory is not empty either.
    expectRefused(await runBinary(["snapshot", "restore", files[0]!.file, "--data-dir", c.nodes[0]!.spec.dir]), /not empty/);
  }, 30_000);

  test("usage errors and an unreachable endpoint are one line, and save leaves no file", async () => {
    const out = join(c.root, "never.rbkvsnap");
    expectRefused(await runBinary(["snapshot", "save"]), /needs the backup FILE/);
    expectRefused(await runBinary(["snapshot", "save", out, "--bogus"]), /unknown option --bogus/);
    expectRefused(await runBinary(["snapshot", "save", out, "--endpoints", "a:1,b:2"]), /exactly one endpoint/);
    expectRefused(await runBinary(["snapshot", "restore", files[0]!.file]), /--data-dir is required/);
    expectRefused(await runBinary(["snapshot", "frobnicate"]), /unknown action/);
    const port = await freePort();
    expectRefused(await runBinary(["snapshot", "save", out, "--endpoints", `127.0.0.1:${port}`]), /cannot reach/);
    expect(existsSync(out)).toBe(false);
    expect(existsSync(`${out}.part`)).toBe(false);
  }, 30_000);

  test("a Snapshot stream cancelled midway leaves the server healthy", async () => {
    const l = await leaderClient();
    // Enough data that the image spans many chunks and cannot sit in the socket buffers.
    const big = "x".repeat(256 << 10);
    for (let i = 0; i < 96; i++) await l.executeAsync({ op: OpType.Put, kv: { key: enc(`big/${i}`), value: enc(big) } }, deadline(10_000));
    const leader = await c.leader();
    const node = (leader + 2) % 3;
    const client = fastClient(c.nodes[node]!.spec.grpcAddr);
    try {
      for (let round = 0; round < 3; round++) {
        const call = client.snapshot({});
        const first = await new Promise<SnapshotChunk>((resolve, reject) => {
          call.once("data", (chunk: SnapshotChunk) => {
            call.pause();
            resolve(chunk);
          });
          call.once("error", reject);
        });
        expect(first.version).toBeGreaterThan(0);
        // The server is now blocked on this caller (it reads nothing): then the caller goes away.
        await sleep(300);
        call.on("error", () => {});
        call.cancel();
      }
      await eventually("the server to notice the cancelled streams", async () => {
        const log = await c.nodes[node]!.logs();
        return (log.match(/the caller ended the snapshot stream/g) ?? []).length >= 3;
      });
      // Still serving reads, writes and status, and a whole backup from the same member.
      const st = await client.statusAsync({}, deadline(3000));
      expect(st.appliedIndex).toBeGreaterThan(0);
      const w = await client.executeAsync({ op: OpType.Put, kv: { key: enc("after-cancel"), value: enc("ok") } }, deadline(5000));
      const g = await client.executeAsync({ op: OpType.Get, rc: ReadConsistency.Linearizable, kv: { key: enc("after-cancel") } }, deadline(5000));
      expect(g.version).toBe(w.version);
      // Every chunk of a whole stream carries the image's version.
      const versions = new Set<number>();
      let bytes = 0;
      for await (const chunk of client.snapshot({}) as AsyncIterable<SnapshotChunk>) {
        versions.add(chunk.version);
        bytes += chunk.data.byteLength;
      }
      expect(versions.size).toBe(1);
      expect([...versions][0]!).toBeGreaterThanOrEqual(w.version);
      expect(bytes).toBeGreaterThan(96 * (256 << 10));
      const saved = await save(join(c.root, "after-cancel.rbkvsnap"), c.nodes[node]!.spec.grpcAddr);
      expect(saved.version).toBeGreaterThanOrEqual(w.version);
    } finally {
      client.close();
    }
  }, 90_000);
});

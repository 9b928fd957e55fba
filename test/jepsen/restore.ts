// The restore check, at the end of the durability phase (after healing): while writers keep
// putting unique keys, a random node streams a Snapshot; the file is restored with
// `rbkv snapshot restore FILE --data-dir D --node-id ... --grpc-addr ... --raft-addr ...` into a
// new one-node cluster, which is started on D. Its every key must equal the source cluster's Range
// at the snapshot's version (SnapshotChunk.version), every acknowledged write at or below that
// version must be there and none after it; the new cluster has a cluster id of its own, one member
// (itself, the leader, a voter), and takes writes. A truncated copy of the file must be refused.

import { closeSync, copyFileSync, existsSync, openSync, readdirSync, statSync, truncateSync, writeSync } from "node:fs";
import { join } from "node:path";
import { RbkvProcess, dec, freePort, runBinary, sleep } from "../e2e/harness.ts";
import { ReadConsistency } from "../../src/server/gen/rbkv.ts";
import type { Prng } from "../sim/prng.ts";
import type { CheckResult } from "./checks.ts";
import { NodeClient, codeName } from "./client.ts";
import type { JepsenCluster } from "./cluster.ts";
import { type RangeEntry, checkRestore } from "./restore-check.ts";
import { type RunCtx, type SetAttempt, SetWorkload } from "./workloads.ts";

const RANGE_PAGE = 1000;
const EVERY_KEY = { key: new Uint8Array(0), rangeEnd: new Uint8Array([0]) };

/** Every key of a node, paged at one version (`version` 0 = the version of the first page). */
export async function rangeAll(c: NodeClient, version: number, deadlineMs = 10_000): Promise<{ version: number; kvs: RangeEntry[] }> {
  const out: RangeEntry[] = [];
  let from = EVERY_KEY.key;
  let at = version;
  for (;;) {
    const r = await c.client.rangeAsync({ key: from, rangeEnd: EVERY_KEY.rangeEnd, version: at, rc: ReadConsistency.Serializable, limit: RANGE_PAGE }, { deadline: Date.now() + deadlineMs });
    if (at === 0) at = r.version;
    for (const kv of r.kvs) out.push({ key: dec(kv.key), value: dec(kv.value), meta: kv.meta, version: kv.version, createVersion: kv.createVersion, expireAt: kv.expireAt });
    if (!r.more || r.kvs.length === 0) break;
    const last = r.kvs[r.kvs.length - 1]!.key;
    from = new Uint8Array(last.byteLength + 1);
    from.set(last); // the key right after the last one
  }
  return { version: at, kvs: out };
}

/** Streams node i's Snapshot into `file`; returns the version every chunk names. */
async function saveSnapshot(cluster: JepsenCluster, i: number, file: string, timeoutMs: number): Promise<{ version: number; bytes: number; chunks: number }> {
  const fd = openSync(file, "w");
  try {
    return await new Promise((resolve, reject) => {
      const versions = new Set<number>();
      let bytes = 0;
      let chunks = 0;
      const call = cluster.clients[i]!.client.snapshot({}, { deadline: Date.now() + timeoutMs });
      call.on("data", (c: { data: Uint8Array; version: number }) => {
        versions.add(c.version);
        writeSync(fd, c.data);
        bytes += c.data.byteLength;
        chunks++;
      });
      call.on("error", (e: Error & { code?: number; details?: string }) => reject(new Error(`Snapshot from node${i + 1} failed after ${chunks} chunks: ${codeName(e.code ?? 2)}: ${e.details ?? e.message}`)));
      call.on("end", () => {
        if (versions.size !== 1) reject(new Error(`Snapshot from node${i + 1}: ${chunks} chunks naming ${versions.size === 0 ? "no version" : `versions ${[...versions].join(", ")}`}, not one`));
        else resolve({ version: [...versions][0]!, bytes, chunks });
      });
    });
  } finally {
    closeSync(fd);
  }
}

function fail(name: string, detail: string): CheckResult {
  return { name, ok: false, detail };
}

export async function runRestoreCheck(
  cluster: JepsenCluster,
  ctx: RunCtx,
  rng: Prng,
  opts: { root: string; attempts: SetAttempt[]; writers: number; progress?: (s: string) => void; note?: (s: string) => void },
): Promise<{ checks: CheckResult[]; workload: SetWorkload }> {
  const checks: CheckResult[] = [];
  const source = rng.int(0, cluster.size - 1);
  const writerRngs = Array.from({ length: opts.writers }, () => rng.fork());
  const leadMs = rng.int(100, 600);
  const file = join(opts.root, "backup.rbkvsnap");
  // Writers go on while the image streams: the image must be exactly the store at its version.
  ctx.deadline = Number.MAX_SAFE_INTEGER;
  const burst = new SetWorkload(ctx, writerRngs, "snap");
  const writing = burst.run();
  let saved: { version: number; bytes: number; chunks: number } | null = null;
  try {
    await sleep(leadMs);
    opts.progress?.(`durability: Snapshot from node${source + 1} under writes`);
    saved = await saveSnapshot(cluster, source, file, 120_000);
    opts.note?.(`Snapshot from node${source + 1}: ${saved.bytes} bytes in ${saved.chunks} chunks at version ${saved.version}`);
  } catch (err) {
    checks.push(fail("restore: Snapshot", (err as Error).message));
  } finally {
    await sleep(rng.int(50, 300));
    ctx.deadline = 0;
    await writing;
  }
  if (!saved) return { checks, workload: burst };
  checks.push({ name: "restore: Snapshot", ok: true, detail: `node${source + 1} streamed ${saved.bytes} bytes in ${saved.chunks} chunks, every chunk at version ${saved.version}, under ${opts.writers} writers` });

  const grpcAddr = `127.0.0.1:${await freePort()}`;
  const raftAddr = `127.0.0.1:${await freePort()}`;
  const dir = join(opts.root, "restored");

  // A damaged file is refused before anything is written.
  const cut = join(opts.root, "backup-truncated.rbkvsnap");
  copyFileSync(file, cut);
  truncateSync(cut, Math.floor(saved.bytes / 2));
  const cutDir = join(opts.root, "restored-from-truncated");
  const bad = await runBinary(["snapshot", "restore", cut, "--data-dir", cutDir, "--node-id", grpcAddr, "--grpc-addr", grpcAddr, "--raft-addr", raftAddr], { timeoutMs: 60_000 });
  const leftOver = existsSync(cutDir) ? readdirSync(cutDir) : [];
  checks.push(
    bad.code !== 0 && bad.stderr.trim() !== "" && leftOver.length === 0
      ? { name: "restore: a truncated file is refused", ok: true, detail: `exit ${bad.code}: ${bad.stderr.trim().split("\n")[0]!.slice(0, 200)}` }
      : fail("restore: a truncated file is refused", `exit ${bad.code}, stderr ${JSON.stringify(bad.stderr.slice(0, 200))}, left in ${cutDir}: ${leftOver.join(", ") || "nothing"}`),
  );

  const restoreRun = await runBinary(["snapshot", "restore", file, "--data-dir", dir, "--node-id", grpcAddr, "--grpc-addr", grpcAddr, "--raft-addr", raftAddr], { timeoutMs: 120_000 });
  if (restoreRun.code !== 0) {
    checks.push(fail("restore: rbkv snapshot restore", `exit ${restoreRun.code}: ${(restoreRun.stderr || restoreRun.stdout).slice(0, 400)}`));
    return { checks, workload: burst };
  }
  const proc = new RbkvProcess({ name: "restored", grpcAddr, raftAddr, dir, extra: [`--election-timeout=${cluster.opts.electionMs}`, `--heartbeat-interval=${cluster.opts.heartbeatMs}`] });
  cluster.extraProcesses.push(proc);
  proc.start();
  const client = new NodeClient(grpcAddr);
  try {
    let served = "";
    for (let k = 0; k < 150 && served === ""; k++) {
      try {
        const info = await client.client.leaderInfoAsync({}, { deadline: Date.now() + 1000 });
        if (info.leaderId === grpcAddr) served = `leader ${info.leaderId} at term ${info.term}`;
      } catch {
        // not up yet
      }
      if (served === "") {
        if (!proc.running) break;
        await sleep(200);
      }
    }
    if (served === "") {
      checks.push(fail("restore: the restored node starts", `${proc.running ? "no leader within 30 s" : `exited ${proc.exitCode}`}: ${(await proc.logs()).split("\n").slice(-5).join(" | ")}`));
      return { checks, workload: burst };
    }
    checks.push({ name: "restore: the restored node starts", ok: true, detail: `restored ${statSync(file).size} bytes into ${dir}; ${served}` });

    const attempts = [...opts.attempts, ...burst.attempts];
    opts.progress?.(`durability: comparing every key of the restored cluster with node${source + 1} at version ${saved.version}`);
    const srcRead = await rangeAll(cluster.clients[source]!, saved.version);
    const dstRead = await rangeAll(client, 0);
    checks.push(...checkRestore({ version: saved.version, source: srcRead.kvs, restored: dstRead.kvs, attempts }));

    // A new cluster: its own id, one member (itself, the leader, a voter), and it takes writes.
    const problems: string[] = [];
    try {
      const [srcStatus, dstStatus, list] = await Promise.all([cluster.status(source), client.client.statusAsync({}, { deadline: Date.now() + 3000 }), client.client.memberListAsync({}, { deadline: Date.now() + 3000 })]);
      if (!dstStatus.clusterId || dstStatus.clusterId === srcStatus.clusterId) problems.push(`cluster id ${JSON.stringify(dstStatus.clusterId)} (the source's is ${JSON.stringify(srcStatus.clusterId)})`);
      if (dstStatus.id !== grpcAddr) problems.push(`its Status names id ${dstStatus.id}, not ${grpcAddr}`);
      if (dstStatus.version < saved.version) problems.push(`its store is at version ${dstStatus.version}, below the snapshot's ${saved.version}`);
      const m = list.members;
      if (m.length !== 1 || m[0]!.id !== grpcAddr || m[0]!.isLearner || !m[0]!.isLeader) problems.push(`MemberList: ${JSON.stringify(m.map((x) => ({ id: x.id, learner: x.isLearner, leader: x.isLeader })))}`);
    } catch (err) {
      problems.push(`Status/MemberList: ${(err as Error).message}`);
    }
    const w = await client.put("restored/after", "x", 5000);
    if (!w.ok) problems.push(`a write failed: ${codeName(w.code)}: ${w.details}`);
    else if (w.value.version <= saved.version) problems.push(`a write got version ${w.value.version}, not above the snapshot's ${saved.version}`);
    else {
      const r = await client.get("restored/after", 5000);
      if (!r.ok || r.value.value !== "x") problems.push(`the write does not read back: ${JSON.stringify(r)}`);
    }
    checks.push(
      problems.length === 0
        ? { name: "restore: a new one-node cluster", ok: true, detail: "a cluster id of its own, one member (itself, leader, voter), takes writes above the snapshot's version" }
        : fail("restore: a new one-node cluster", problems.join("; ")),
    );
    const code = await proc.stop("SIGTERM");
    if (code !== 0) checks.push(fail("restore: the restored node stops cleanly", `exited ${code} on SIGTERM`));
  } finally {
    client.close();
    await proc.kill9();
  }
  return { checks, workload: burst };
}

// Durability: SIGKILLs of random nodes (sometimes the leader) in the middle of write bursts, each
// node restarted at once; then every node SIGKILLed together, mid-burst, and the whole cluster
// restarted. Every acknowledged write must be there on every node, every node must open its
// files and serve, and all nodes must hold the same data. Then (unless disabled) the restore
// check (restore.ts): a Snapshot under writes restored into a new one-node cluster, compared key
// by key with the source at the snapshot's version.

import { sleep } from "../e2e/harness.ts";
import type { Prng } from "../sim/prng.ts";
import { type CheckResult, checkAgreement, checkSet } from "./checks.ts";
import type { JepsenCluster } from "./cluster.ts";
import { readFinalState } from "./final-state.ts";
import { runRestoreCheck } from "./restore.ts";
import { type FaultRecord, shuffle } from "./nemesis.ts";
import { type RunCtx, SetWorkload } from "./workloads.ts";

export interface DurabilityResult {
  checks: CheckResult[];
  faults: FaultRecord[];
  kills: number;
  workload: SetWorkload;
  /** The writers that ran while the restore check's Snapshot streamed. */
  snapshotWorkload?: SetWorkload;
}

export async function runDurability(
  cluster: JepsenCluster,
  ctx: RunCtx,
  rng: Prng,
  opts: { kills: number; clients: number; recoveryTimeoutMs: number; restore: boolean; progress?: (s: string) => void; onFault?: (f: FaultRecord) => void },
): Promise<DurabilityResult> {
  const t0 = Date.now();
  const faults: FaultRecord[] = [];
  const checks: CheckResult[] = [];
  const note = (kind: string, detail: string): void => {
    const f = { t: Date.now() - t0, kind, detail };
    faults.push(f);
    opts.onFault?.(f);
  };
  const writerRngs = Array.from({ length: opts.clients }, () => rng.fork());
  const killRng = rng.fork();
  const restoreRng = rng.fork();
  ctx.deadline = Number.MAX_SAFE_INTEGER;
  const set = new SetWorkload(ctx, writerRngs, "d");
  const writers = set.run();
  let kills = 0;
  const n = cluster.size;
  const notBack: string[] = [];
  try {
    for (let k = 0; k < opts.kills; k++) {
      const wait = killRng.int(100, 500);
      const preferLeader = killRng.chance(0.3);
      const random = killRng.int(0, n - 1);
      const second = n >= 5 && killRng.chance(0.25) ? killRng.int(0, n - 1) : -1;
      const downMs = killRng.int(0, 400);
      await sleep(wait);
      const l = await cluster.leader();
      const first = preferLeader && l !== null ? l : random;
      const leader = first === l;
      const victims = second >= 0 && second !== first ? [first, second] : [first];
      const before = set.attempts.filter((a) => a.status === "ok").length;
      for (const v of victims) await cluster.kill(v);
      kills += victims.length;
      note("kill", `#${k + 1}: SIGKILL ${victims.map((v) => `node${v + 1}`).join(" + ")}${leader ? " (the leader)" : ""} with ${before} writes acknowledged so far; restart after ${downMs} ms`);
      await sleep(downMs);
      for (const v of victims) cluster.restart(v);
      for (const v of victims) {
        try {
          await cluster.waitServing(v, 30_000);
        } catch (err) {
          notBack.push(`node${v + 1} after kill #${k + 1}: ${(err as Error).message}`);
          cluster.restart(v);
        }
      }
      if ((k + 1) % 10 === 0) opts.progress?.(`durability: ${k + 1}/${opts.kills} kills, ${set.attempts.filter((a) => a.status === "ok").length} writes acknowledged`);
    }
    // The whole cluster dies at once, mid-burst.
    await sleep(killRng.int(100, 400));
    const order = shuffle(killRng, [...Array(n).keys()]);
    for (const i of order) await cluster.kill(i);
    kills += n;
    note("kill-all", `SIGKILL every node mid-burst (${set.attempts.filter((a) => a.status === "ok").length} writes acknowledged), then restart all`);
  } finally {
    ctx.deadline = 0;
    await writers;
  }
  for (const i of [...Array(n).keys()]) cluster.restart(i);
  checks.push(
    notBack.length === 0
      ? { name: "durability: nodes come back", ok: true, detail: `every node served again after each of ${kills} kills` }
      : { name: "durability: nodes come back", ok: false, detail: notBack.slice(0, 3).join("; ") },
  );
  try {
    await cluster.waitRecovered(opts.recoveryTimeoutMs);
  } catch (err) {
    checks.push({ name: "durability: recovery after full restart", ok: false, detail: (err as Error).message });
    return { checks, faults, kills, workload: set };
  }
  checks.push({ name: "durability: recovery after full restart", ok: true, detail: "every node opened its files, one leader, all caught up" });
  const keys = [...ctx.attempted].sort();
  const { reads, keyCounts } = await readFinalState(cluster, keys);
  checks.push(checkSet(set.attempts, reads, "durability: acknowledged writes"));
  checks.push(checkAgreement(keys, reads, keyCounts));
  if (opts.restore) {
    const r = await runRestoreCheck(cluster, ctx, restoreRng, {
      root: cluster.opts.root,
      attempts: set.attempts,
      writers: 2,
      progress: opts.progress,
      note: (s) => note("snapshot", s),
    });
    checks.push(...r.checks);
    return { checks, faults, kills, workload: set, snapshotWorkload: r.workload };
  }
  return { checks, faults, kills, workload: set };
}

// Reading what every node holds at the end: serializable reads of every key written, per node,
// after the cluster caught up; plus the log scan for crashes the process survived.

import { sleep } from "../e2e/harness.ts";
import type { FinalReads, FinalValue } from "./checks.ts";
import { codeName } from "./client.ts";
import type { JepsenCluster } from "./cluster.ts";
import type { CheckResult } from "./checks.ts";

const READ_CONCURRENCY = 32;

export async function readFinalState(cluster: JepsenCluster, keys: string[]): Promise<{ reads: FinalReads; keyCounts: number[] }> {
  const reads: FinalReads = [];
  const keyCounts: number[] = [];
  for (let i = 0; i < cluster.size; i++) {
    const m = new Map<string, FinalValue | null>();
    const kv = cluster.clients[i]!;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < keys.length) {
        const k = keys[next++]!;
        let last = "";
        for (let attempt = 0; ; attempt++) {
          const r = await kv.get(k, 5000, true);
          if (r.ok) {
            m.set(k, r.value.value === null ? null : { value: r.value.value, version: r.value.version });
            break;
          }
          last = `${codeName(r.code)}: ${r.details}`;
          if (attempt >= 5) throw new Error(`node${i + 1}: cannot read ${k} after the run: ${last}`);
          await sleep(200);
        }
      }
    };
    await Promise.all(Array.from({ length: READ_CONCURRENCY }, worker));
    reads.push(m);
    keyCounts.push((await cluster.raftState(i, 5000)).keys);
  }
  return { reads, keyCounts };
}

/** Lines that mean the process hit something it did not expect, whatever it did next. */
const BAD_LOG = /fatal|uncaught exception|unhandled rejection|segfault|SIGBUS|panic|corrupt|internal error/i;

export async function checkLogs(cluster: JepsenCluster, allow: RegExp[] = []): Promise<CheckResult> {
  const found: string[] = [];
  for (let i = 0; i < cluster.size; i++) {
    const text = await cluster.logs(i);
    for (const line of text.split("\n")) {
      if (!BAD_LOG.test(line)) continue;
      if (allow.some((a) => a.test(line))) continue;
      found.push(`node${i + 1}: ${line.slice(0, 300)}`);
    }
  }
  if (found.length > 0) return { name: "node logs", ok: false, detail: `${found.length} alarming line(s), e.g. ${found.slice(0, 3).join(" | ")}` };
  return { name: "node logs", ok: true, detail: "no fatal/uncaught/corrupt lines in any node log" };
}

export function checkCrashes(cluster: JepsenCluster, extra: string[] = []): CheckResult {
  const c = cluster.crashes.map((x) => `node${x.node + 1} exited with code ${x.code} at +${x.at} ms without being asked`);
  const all = [...c, ...extra];
  if (all.length > 0) return { name: "no crashes", ok: false, detail: all.join("; ") };
  return { name: "no crashes", ok: true, detail: "no node exited unless killed; every SIGTERM exited 0" };
}

// Damaged data files on one member of a live cluster (issue 4: "a truncated or corrupted data
// file makes the node refuse to start with a clear error naming the file — never serve wrong
// data"). A follower is stopped cleanly, its files saved, one file damaged, and the node started:
// it must either exit non-zero naming the damaged file, or come up and serve exactly what the
// other members serve. Its files are then restored and it must rejoin.
//
//   truncate-fsm       kv/fsm.mdb cut to half its size
//   truncate-log       raft-log.mdb cut to half its size
//   flip-value-byte    one byte changed inside a stored value in kv/fsm.mdb (structure intact)
//   zero-fsm-page      the 4 KiB page of kv/fsm.mdb holding a stored value overwritten with zeros

import { copyFileSync, existsSync, readFileSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { sleep } from "../e2e/harness.ts";
import type { Prng } from "../sim/prng.ts";
import type { CheckResult } from "./checks.ts";
import { codeName } from "./client.ts";
import type { JepsenCluster } from "./cluster.ts";
import type { RunCtx } from "./workloads.ts";

export const DAMAGES = ["truncate-fsm", "truncate-log", "flip-value-byte", "zero-fsm-page"] as const;
export type DamageKind = (typeof DAMAGES)[number];

const KEYS = 400;

function value(i: number): string {
  return `DMG-${String(i).padStart(5, "0")}-abcdefghijklmnopqrstuvwxyz`;
}

export async function runDamage(cluster: JepsenCluster, ctx: RunCtx, rng: Prng, kinds: readonly DamageKind[] = DAMAGES, progress?: (s: string) => void): Promise<CheckResult[]> {
  const checks: CheckResult[] = [];
  const n = cluster.size;
  for (let i = 0; i < KEYS; i++) {
    const key = `dmg/${i}`;
    ctx.attempted.add(key);
    const r = await cluster.clients[i % n]!.put(key, value(i), 10_000);
    if (!r.ok) {
      checks.push({ name: "damage: setup", ok: false, detail: `put ${key}: ${codeName(r.code)} ${r.details}` });
      return checks;
    }
  }
  await cluster.waitRecovered(30_000);
  for (const kind of kinds) {
    const leader = await cluster.leader();
    const victim = [...Array(n).keys()].filter((i) => i !== leader)[rng.int(0, n - 2)]!;
    const name = `node${victim + 1}`;
    progress?.(`damage: ${kind} on ${name}`);
    const dir = cluster.nodes[victim]!.spec.dir;
    const fsm = join(dir, "kv", "fsm.mdb");
    const log = join(dir, "raft-log.mdb");
    const code = await cluster.terminate(victim);
    if (code !== 0) checks.push({ name: `damage ${kind}: clean stop`, ok: false, detail: `${name} exited ${code} on SIGTERM` });
    for (const f of [fsm, log]) copyFileSync(f, `${f}.jepsen-saved`);
    const target = kind === "truncate-log" ? log : fsm;
    let what: string;
    if (kind === "truncate-fsm" || kind === "truncate-log") {
      truncateSync(target, Math.floor(statSync(target).size / 2));
      what = `${target} truncated to half`;
    } else if (kind === "flip-value-byte") {
      const buf = readFileSync(target);
      const k = rng.int(0, KEYS - 1);
      const needle = Buffer.from(value(k));
      let at = buf.indexOf(needle);
      let copies = 0;
      while (at >= 0) {
        buf[at + 12] = buf[at + 12]! ^ 0x20;
        copies++;
        at = buf.indexOf(needle, at + 1);
      }
      writeFileSync(target, buf);
      what = `one byte of the value of dmg/${k} changed in ${target} (${copies} copies)`;
    } else {
      // The page that holds a live value (a leaf of the data tree), not a free one.
      const buf = readFileSync(target);
      const pages = Math.floor(buf.byteLength / 4096);
      const k = rng.int(0, KEYS - 1);
      const at = buf.lastIndexOf(Buffer.from(value(k)));
      const page = at >= 0 ? Math.floor(at / 4096) : Math.floor(pages / 2);
      buf.fill(0, page * 4096, (page + 1) * 4096);
      writeFileSync(target, buf);
      what = `page ${page} of ${pages} (holding the value of dmg/${k}) zeroed in ${target}`;
    }
    const logBefore = (await cluster.logs(victim)).length;
    const crashesBefore = cluster.crashes.length;
    cluster.restart(victim);
    // Refused (exited) or serving: whichever comes first.
    const deadline = Date.now() + 20_000;
    let serving = false;
    while (Date.now() < deadline && cluster.isRunning(victim) && !serving) {
      try {
        const info = await cluster.clients[victim]!.client.leaderInfoAsync({}, { deadline: Date.now() + 500 });
        serving = info.leaderId !== "";
      } catch {
        // not yet
      }
      if (!serving) await sleep(100);
    }
    await sleep(200);
    const exited = !cluster.isRunning(victim);
    // An exit here is what we asked for: not a crash of the run.
    cluster.crashes.splice(crashesBefore);
    const out = (await cluster.logs(victim)).slice(logBefore);
    const base = target.slice(target.lastIndexOf("/") + 1);
    if (exited) {
      const named = out.includes(base);
      const exitCode = cluster.nodes[victim]!.exitCode;
      const line = out.split("\n").find((l) => l.includes(base)) ?? out.split("\n").filter((l) => l.trim()).at(-1) ?? "";
      const ok = named && exitCode !== null && exitCode !== 0 && exitCode < 128;
      checks.push({
        name: `damage ${kind}`,
        ok,
        detail: `${what}: ${name} refused to start (exit ${exitCode})${named ? "" : `, WITHOUT naming ${base}`}${exitCode !== null && exitCode >= 128 ? " (killed by a signal: a crash, not a refusal)" : ""}: ${line.slice(0, 200)}`,
      });
    } else if (!serving) {
      checks.push({ name: `damage ${kind}`, ok: false, detail: `${what}: ${name} neither refused to start nor served within 20 s` });
      await cluster.kill(victim);
    } else {
      // It runs: it must serve exactly what the others serve.
      await cluster.waitRecovered(30_000).catch(() => null);
      const wrong: string[] = []; // a value that is not the one written, or NOT_FOUND
      const errors: string[] = []; // an error instead of the value
      let firstWrong = -1;
      for (let i = 0; i < KEYS; i++) {
        const r = await cluster.clients[victim]!.get(`dmg/${i}`, 5000, true);
        if (!r.ok) errors.push(`dmg/${i} -> ${codeName(r.code)}: ${r.details.slice(0, 80)}`);
        else if (r.value.value !== value(i)) {
          if (firstWrong < 0) firstWrong = i;
          wrong.push(`dmg/${i} -> ${JSON.stringify(r.value.value)}`);
        }
      }
      const lin = firstWrong >= 0 ? await cluster.clients[victim]!.get(`dmg/${firstWrong}`, 5000) : null;
      const parts: string[] = [];
      if (wrong.length > 0) {
        parts.push(
          `SERVES WRONG DATA for ${wrong.length} key(s): ${wrong.slice(0, 3).join(", ")} (expected ${JSON.stringify(value(firstWrong))})${lin?.ok ? `; even a linearizable read through it returns ${JSON.stringify(lin.value.value)}` : ""}`,
        );
      }
      if (errors.length > 0) parts.push(`answers errors instead of ${errors.length} key(s), e.g. ${errors[0]}`);
      checks.push({
        name: `damage ${kind}`,
        ok: wrong.length === 0 && errors.length === 0,
        detail: parts.length === 0 ? `${what}: ${name} started and serves all ${KEYS} keys correctly` : `${what}: ${name} started (did not refuse the file) and ${parts.join("; ")}`,
      });
      await cluster.terminate(victim);
    }
    // Put the node back as it was and let it rejoin.
    for (const f of [fsm, log]) if (existsSync(`${f}.jepsen-saved`)) copyFileSync(`${f}.jepsen-saved`, f);
    cluster.restart(victim);
    try {
      await cluster.waitRecovered(30_000);
    } catch (err) {
      checks.push({ name: `damage ${kind}: rejoin after restore`, ok: false, detail: (err as Error).message });
      return checks;
    }
  }
  return checks;
}

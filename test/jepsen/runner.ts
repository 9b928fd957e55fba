// One Jepsen run: phases on fresh clusters, each ending with checks, then one verdict.
//
//   nemesis     (when --time > 0 and a workload is chosen) workloads under the seeded faults,
//               heal, wait for recovery, check
//   bad-input   (unless disabled) attacks on live servers, then check they serve and lost nothing
//   durability  (when --durability-kills > 0) SIGKILLs mid-burst, a full restart, then check
//   damage      (opt-in, --damage) damaged data files on a follower: refuse or serve right data
//
// Results go to <results>/<timestamp>-seed<S>/: history.jsonl, faults.log, report.txt and the
// node logs of every phase (<phase>/nodeN.log).

import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Prng } from "../sim/prng.ts";
import { runBadInput } from "./badinput.ts";
import { BankWorkload, DEFAULT_BANK } from "./bank.ts";
import { checkBank } from "./bank-check.ts";
import { type CheckResult, checkAgreement, checkRegister, checkSet, checkWatch } from "./checks.ts";
import { codeName } from "./client.ts";
import { JepsenCluster } from "./cluster.ts";
import { DAMAGES, type DamageKind, runDamage } from "./damage.ts";
import { runDurability } from "./durability.ts";
import { checkCrashes, checkLogs, readFinalState } from "./final-state.ts";
import { DEFAULT_NEMESES, type FaultRecord, Nemesis, type NemesisKind } from "./nemesis.ts";
import { type MemberNemesis, type MemberStep, outcomesTable } from "./member-nemesis.ts";
import { type Latencies, RegisterWorkload, type RunCtx, SetWorkload, WATCH_PREFIX, WatchWorkload } from "./workloads.ts";
import { WR_PREFIX, WatchResumeWorkload } from "./watch-resume.ts";
import { checkWatchResume } from "./watch-resume-check.ts";

export const WORKLOADS = ["register", "set", "watch", "bank", "watch-resume"] as const;
export type WorkloadKind = (typeof WORKLOADS)[number];

export interface JepsenOptions {
  nodes: number;
  timeSec: number;
  nemesis: NemesisKind[];
  /** Which steps the member nemesis cycles through (default all). */
  memberSteps?: MemberStep[];
  workloads: WorkloadKind[];
  seed: number;
  durabilityKills: number;
  /** At the end of the durability phase: Snapshot, restore into a new cluster, compare. */
  restoreCheck: boolean;
  badInput: boolean;
  /** Damaged data files on a follower (opt-in: it fails until records are checksummed). */
  damage: boolean;
  /** Which damages (default all). */
  damageKinds?: DamageKind[];
  /** Parent of the results folder (default ./jepsen-results). */
  resultsRoot: string;
  /** Exact results folder (overrides resultsRoot). */
  resultsDir?: string;
  electionMs: number;
  heartbeatMs: number;
  /** Flags for every node beyond the addresses and timing. */
  nodeArgs: string[];
  /** Concurrent clients per workload. */
  clients: number;
  opTimeoutMs: number;
  recoveryTimeoutMs: number;
  keepData: boolean;
  /** Keep a failed phase's data directories (default true). */
  keepFailedData?: boolean;
  progress?: (line: string) => void;
}

/** Node flags that make snapshots and InstallSnapshot happen within a short run. */
export const DEFAULT_NODE_ARGS = ["--snapshot-threshold=1000", "--trailing-logs=200"];

export function defaultOptions(): JepsenOptions {
  return {
    nodes: 3,
    timeSec: 30,
    nemesis: [...DEFAULT_NEMESES],
    workloads: [...WORKLOADS],
    seed: Math.floor(Math.random() * 1e9),
    durabilityKills: 100,
    restoreCheck: true,
    badInput: true,
    damage: false,
    resultsRoot: "jepsen-results",
    electionMs: 500,
    heartbeatMs: 50,
    nodeArgs: DEFAULT_NODE_ARGS,
    clients: 0,
    opTimeoutMs: 3000,
    recoveryTimeoutMs: 60_000,
    keepData: false,
  };
}

export interface PhaseSummary {
  name: string;
  checks: CheckResult[];
  ops: Record<string, { ok: number; fail: number; unknown: number }>;
  latencies: Latencies;
  faults: FaultRecord[];
  faultCounts: Record<string, number>;
  /** Nodes that exited non-zero on a SIGTERM during the phase. */
  shutdownErrors: string[];
  /** Extra tables for report.txt (e.g. the member nemesis's answers per action). */
  tables: { title: string; lines: string[] }[];
  ms: number;
}

export interface JepsenResult {
  pass: boolean;
  line: string;
  dir: string;
  phases: PhaseSummary[];
  ops: number;
  faults: number;
  failures: CheckResult[];
}

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

class Recorder {
  private buf: string[] = [];
  constructor(private readonly path: string) {
    writeFileSync(path, "");
  }
  line(o: object): void {
    this.buf.push(JSON.stringify(o));
    if (this.buf.length >= 2000) this.flush();
  }
  flush(): void {
    if (this.buf.length === 0) return;
    appendFileSync(this.path, this.buf.join("\n") + "\n");
    this.buf = [];
  }
}

function countOps(ops: Record<string, { ok: number; fail: number; unknown: number }>, name: string, status: "ok" | "fail" | "unknown", n = 1): void {
  const o = (ops[name] ??= { ok: 0, fail: 0, unknown: 0 });
  o[status] += n;
}

function mergeLatencies(into: Latencies, from: Latencies): void {
  for (const [k, v] of Object.entries(from)) (into[k] ??= []).push(...v);
}

export async function runJepsen(o: JepsenOptions): Promise<JepsenResult> {
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const dir = resolve(o.resultsDir ?? join(o.resultsRoot, `${stamp}-seed${o.seed}`));
  mkdirSync(dir, { recursive: true });
  const rec = new Recorder(join(dir, "history.jsonl"));
  const faultsPath = join(dir, "faults.log");
  writeFileSync(faultsPath, "");
  const faultLine = (phase: string, s: string): void => appendFileSync(faultsPath, `${new Date().toISOString()} [${phase}] ${s}\n`);
  const progress = (s: string): void => o.progress?.(s);
  const master = new Prng(o.seed);
  const phaseRngs = { nemesis: master.fork(), badInput: master.fork(), durability: master.fork(), damage: master.fork() };
  const clients = o.clients > 0 ? o.clients : o.nodes >= 5 ? 8 : 5;
  const phases: PhaseSummary[] = [];

  const withCluster = async (name: string, body: (c: JepsenCluster, ctx: RunCtx, summary: PhaseSummary) => Promise<void>): Promise<PhaseSummary> => {
    const t0 = Date.now();
    const summary: PhaseSummary = { name, checks: [], ops: {}, latencies: {}, faults: [], faultCounts: {}, shutdownErrors: [], tables: [], ms: 0 };
    phases.push(summary);
    const root = mkdtempSync(join(tmpdir(), `rbkv-jepsen-${name}-`));
    progress(`${name}: starting ${o.nodes} nodes in ${root}`);
    const cluster = await JepsenCluster.create({
      nodes: o.nodes,
      root,
      electionMs: o.electionMs,
      heartbeatMs: o.heartbeatMs,
      extraArgs: o.nodeArgs,
      log: (l) => faultLine(name, l),
    });
    activeClusters.add(cluster);
    const ctx: RunCtx = { cluster, deadline: 0, opTimeoutMs: o.opTimeoutMs, attempted: new Set(), record: (line) => rec.line({ phase: name, ...line }) };
    try {
      await cluster.start(60_000, name === "nemesis" && o.nemesis.includes("join") ? [o.nodes - 1] : []);
      await body(cluster, ctx, summary);
      // The damage phase makes nodes refuse damaged files on purpose: those lines are expected.
      summary.checks.push(await checkLogs(cluster, name === "damage" ? [/fsm\.mdb|raft-log\.mdb|index points to a 00 page|MDB_CORRUPTED/] : []));
      const codes = await cluster.shutdown();
      const bad = codes.map((c, i) => (c !== null && c !== 0 ? `node${i + 1} exited ${c} on SIGTERM at the end` : "")).filter((s) => s);
      summary.checks.push(checkCrashes(cluster, [...bad, ...summary.shutdownErrors]));
    } catch (err) {
      summary.checks.push({ name: `${name}: harness`, ok: false, detail: (err as Error).stack?.split("\n").slice(0, 3).join(" ") ?? String(err) });
      summary.checks.push(checkCrashes(cluster));
    } finally {
      rec.flush();
      await cluster.destroy();
      activeClusters.delete(cluster);
      cluster.copyLogs(join(dir, name));
      const failed = summary.checks.some((c) => !c.ok);
      if (!o.keepData && (!failed || o.keepFailedData === false)) rmSync(root, { recursive: true, force: true });
      else progress(`${name}: data kept in ${root}`);
      summary.ms = Date.now() - t0;
    }
    return summary;
  };

  if (o.timeSec > 0 && o.workloads.length > 0) {
    await withCluster("nemesis", async (cluster, ctx, summary) => {
      const rng = phaseRngs.nemesis;
      const nemesisRng = rng.fork();
      const regRngs = Array.from({ length: clients }, () => rng.fork());
      const setRngs = Array.from({ length: Math.max(2, Math.ceil(clients / 2)) }, () => rng.fork());
      const watchRngs = Array.from({ length: 2 }, () => rng.fork());
      // Forked after the older workloads' generators, so that their choices for a seed stay put.
      const bankRngs = Array.from({ length: clients }, () => rng.fork());
      const bankReaderRngs = Array.from({ length: DEFAULT_BANK.readers }, () => rng.fork());
      const wrWriterRngs = Array.from({ length: 2 }, () => rng.fork());
      const wrWatcherRngs = Array.from({ length: o.nodes >= 5 ? 3 : 2 }, () => rng.fork());
      const wrCompactorRng = rng.fork();
      const nemesis = new Nemesis(cluster, nemesisRng, o.nemesis, {
        electionMs: o.electionMs,
        memberSteps: o.memberSteps,
        log: (f) => {
          faultLine("nemesis", `+${f.t}ms ${f.kind}: ${f.detail}`);
          progress(`nemesis +${(f.t / 1000).toFixed(1)}s ${f.kind}: ${f.detail}`);
        },
      });
      const register = o.workloads.includes("register") ? new RegisterWorkload(ctx, regRngs, { keys: 4, opsPerKey: 150 }) : null;
      const set = o.workloads.includes("set") ? new SetWorkload(ctx, setRngs) : null;
      const watch = o.workloads.includes("watch") ? new WatchWorkload(ctx, watchRngs) : null;
      const bank = o.workloads.includes("bank") ? new BankWorkload(ctx, bankRngs, bankReaderRngs) : null;
      const wr = o.workloads.includes("watch-resume") ? new WatchResumeWorkload(ctx, wrWriterRngs, wrWatcherRngs, wrCompactorRng) : null;
      watch?.startWatchers();
      // Both before any fault: the accounts, and the version the resuming watchers start from.
      await bank?.setup();
      await wr?.start();
      ctx.deadline = Date.now() + o.timeSec * 1000;
      progress(`nemesis: running ${o.workloads.join(",")} for ${o.timeSec}s under ${o.nemesis.join(",") || "no faults"}`);
      await Promise.all([nemesis.run(ctx.deadline), register?.run(), set?.run(), watch?.runWriters(), bank?.run(), wr?.run()]);
      summary.faults = nemesis.faults;
      summary.faultCounts = nemesis.counts;
      summary.shutdownErrors = nemesis.shutdownErrors;
      if (o.nemesis.includes("member")) {
        const m = nemesis.members;
        summary.tables.push({ title: "member steps run", lines: [`  ${Object.entries(m.steps).map(([k, v]) => `${k}=${v}`).join(" ") || "none"}`] });
        summary.tables.push({ title: "member nemesis answers (action: answer=count)", lines: outcomesTable(m.outcomes) });
        summary.checks.push(checkMemberSteps(m));
      }
      faultLine("nemesis", "heal: partitions removed, paused nodes resumed, dead nodes restarted");
      progress("nemesis: healing, waiting for recovery");
      cluster.healAll();
      let recovered = true;
      try {
        const r = await cluster.waitRecovered(o.recoveryTimeoutMs);
        summary.checks.push({ name: "recovery", ok: true, detail: `leader node${r.leader + 1}, every node applied ${r.commit}` });
      } catch (err) {
        recovered = false;
        summary.checks.push({ name: "recovery", ok: false, detail: (err as Error).message });
      }
      if (register) {
        for (const h of register.history) countOps(summary.ops, `register-${h.op.kind}`, h.complete === null ? "unknown" : "ok");
        mergeLatencies(summary.latencies, register.latencies);
        progress(`nemesis: checking ${register.history.length} register ops`);
        summary.checks.push(checkRegister(register.history));
      }
      if (set) {
        for (const a of set.attempts) countOps(summary.ops, "set-put", a.status);
        mergeLatencies(summary.latencies, set.latencies);
      }
      if (watch) {
        for (const w of watch.writes) countOps(summary.ops, `watch-${w.type}`, w.status);
        mergeLatencies(summary.latencies, watch.latencies);
      }
      if (bank) {
        for (const t of bank.transfers) countOps(summary.ops, "bank-xfer", t.status === "succeeded" ? "ok" : t.status === "unknown" ? "unknown" : "fail");
        countOps(summary.ops, "bank-read", "ok", bank.reads.length);
        countOps(summary.ops, "bank-read", "fail", bank.failedReads.length);
        mergeLatencies(summary.latencies, bank.latencies);
      }
      if (wr) {
        for (const w of wr.writes) countOps(summary.ops, "wr-put", w.status);
        for (const c of wr.compactions) countOps(summary.ops, "wr-compact", c.status);
        mergeLatencies(summary.latencies, wr.latencies);
      }
      if (!recovered) {
        await watch?.stopWatchers();
        await wr?.stop();
        return;
      }
      // The healed cluster takes a write through every node.
      const noWrite: string[] = [];
      for (let i = 0; i < cluster.size; i++) {
        const key = `final/${i}`;
        ctx.attempted.add(key);
        let ok = false;
        let last = "";
        for (let attempt = 0; attempt < 10 && !ok; attempt++) {
          const r = await cluster.clients[i]!.put(key, "final", 5000);
          ok = r.ok;
          if (!r.ok) {
            last = `${codeName(r.code)}: ${r.details}`;
            await Bun.sleep(300);
          }
        }
        if (!ok) noWrite.push(`node${i + 1}: ${last}`);
      }
      summary.checks.push({ name: "healed cluster serves", ok: noWrite.length === 0, detail: noWrite.length === 0 ? "a write through every node succeeded" : noWrite.join("; ") });
      if (watch) {
        const live = await watch.verifyLiveStreams(() => cluster.clients[0]!);
        summary.checks.push({ name: "watch streams live after healing", ok: live.ok, detail: live.detail });
        await watch.stopWatchers();
      }
      if (wr) {
        const live = await wr.verifyLive();
        summary.checks.push({ name: "watch-resume watchers live after healing", ok: live.ok, detail: live.detail });
        await wr.stop();
        countOps(summary.ops, "wr-segment", "ok", wr.segments.length);
      }
      await cluster.waitRecovered(o.recoveryTimeoutMs);
      const keys = [...ctx.attempted].sort();
      progress(`nemesis: reading ${keys.length} keys on every node`);
      const { reads, keyCounts } = await readFinalState(cluster, keys);
      if (set) summary.checks.push(checkSet(set.attempts, reads));
      if (watch) summary.checks.push(checkWatch(watch.segments, watch.writes, WATCH_PREFIX));
      if (bank) {
        progress("nemesis: reading the bank on every node");
        const final = await bank.readFinal();
        summary.checks.push(...checkBank({ setup: bank.setupResult!, transfers: bank.transfers, reads: bank.reads, final }));
      }
      if (wr) summary.checks.push(checkWatchResume({ prefix: WR_PREFIX, writes: wr.writes, segments: wr.segments, watchers: wr.watchers, compactions: wr.compactions, final: reads, implicitCompaction: o.nodeArgs.some((a) => /^--version-keep-num(=|$)/.test(a) && !/=0$/.test(a)) }));
      summary.checks.push(checkAgreement(keys, reads, keyCounts));
    });
  }

  if (o.badInput) {
    await withCluster("bad-input", async (cluster, ctx, summary) => {
      const checks = await runBadInput(cluster, ctx, phaseRngs.badInput, progress);
      summary.checks.push(...checks);
      await cluster.waitRecovered(o.recoveryTimeoutMs);
      const keys = [...ctx.attempted].sort();
      const { reads, keyCounts } = await readFinalState(cluster, keys);
      summary.checks.push(checkAgreement(keys, reads, keyCounts));
    });
  }

  if (o.durabilityKills > 0) {
    await withCluster("durability", async (cluster, ctx, summary) => {
      const r = await runDurability(cluster, ctx, phaseRngs.durability, {
        kills: o.durabilityKills,
        clients: Math.max(4, clients),
        recoveryTimeoutMs: o.recoveryTimeoutMs,
        restore: o.restoreCheck,
        progress,
        onFault: (f) => faultLine("durability", `+${f.t}ms ${f.kind}: ${f.detail}`),
      });
      summary.checks.push(...r.checks);
      summary.faults = r.faults;
      summary.faultCounts = { kill: r.kills };
      for (const a of r.workload.attempts) countOps(summary.ops, "durability-put", a.status);
      mergeLatencies(summary.latencies, r.workload.latencies);
      if (r.snapshotWorkload) {
        for (const a of r.snapshotWorkload.attempts) countOps(summary.ops, "snapshot-put", a.status);
        mergeLatencies(summary.latencies, r.snapshotWorkload.latencies);
      }
    });
  }

  if (o.damage) {
    await withCluster("damage", async (cluster, ctx, summary) => {
      const kinds = o.damageKinds ?? [...DAMAGES];
      summary.checks.push(...(await runDamage(cluster, ctx, phaseRngs.damage, kinds, progress)));
      await cluster.waitRecovered(o.recoveryTimeoutMs);
      const keys = [...ctx.attempted].sort();
      const { reads, keyCounts } = await readFinalState(cluster, keys);
      summary.checks.push(checkAgreement(keys, reads, keyCounts));
      summary.faultCounts = { damage: kinds.length };
    });
  }

  rec.flush();
  const failures = phases.flatMap((p) => p.checks.filter((c) => !c.ok).map((c) => ({ ...c, name: `${p.name}: ${c.name}` })));
  const ops = phases.reduce((s, p) => s + Object.values(p.ops).reduce((a, x) => a + x.ok + x.fail + x.unknown, 0), 0);
  const faults = phases.reduce((s, p) => s + Object.values(p.faultCounts).reduce((a, b) => a + b, 0), 0);
  const pass = failures.length === 0 && phases.length > 0;
  const parts = [`nodes=${o.nodes}`, `phases=${phases.map((p) => p.name).join(",") || "none"}`];
  if (phases.some((p) => p.name === "nemesis")) parts.push(`time=${o.timeSec}s`, `workload=${o.workloads.join(",")}`, `nemesis=${o.nemesis.join(",") || "none"}`);
  if (phases.some((p) => p.name === "durability")) parts.push(`durability-kills=${o.durabilityKills}${o.restoreCheck ? "+restore" : ""}`);
  parts.push(`ops=${ops}`, `faults=${faults}`, `seed=${o.seed}`);
  const desc = parts.join(" ");
  const line = pass
    ? `jepsen: PASS ${desc}`
    : `jepsen: FAIL ${desc}: ${failures.length === 0 ? "nothing ran" : `${failures[0]!.name}: ${failures[0]!.detail.slice(0, 400)}`}${failures.length > 1 ? ` (+${failures.length - 1} more failed checks)` : ""} — results in ${dir}`;
  writeFileSync(join(dir, "report.txt"), report(o, phases, line));
  return { pass, line, dir, phases, ops, faults, failures };
}

function report(o: JepsenOptions, phases: PhaseSummary[], line: string): string {
  const out: string[] = [];
  out.push(line, "");
  out.push(`options: ${JSON.stringify({ ...o, progress: undefined })}`, "");
  for (const p of phases) {
    out.push(`== phase ${p.name} (${(p.ms / 1000).toFixed(1)} s)`);
    const fc = Object.entries(p.faultCounts);
    out.push(`faults: ${fc.length === 0 ? "none" : fc.map(([k, v]) => `${k}=${v}`).join(" ")}`);
    for (const f of p.faults) out.push(`  +${(f.t / 1000).toFixed(2)}s ${f.kind}: ${f.detail}`);
    out.push("ops (ok / failed / unknown outcome):");
    for (const [k, v] of Object.entries(p.ops)) out.push(`  ${k.padEnd(18)} ${v.ok} / ${v.fail} / ${v.unknown}`);
    out.push("latencies of successful ops (ms):");
    for (const [k, v] of Object.entries(p.latencies)) out.push(`  ${k.padEnd(18)} n=${v.length} p50=${percentile(v, 50).toFixed(1)} p99=${percentile(v, 99).toFixed(1)} max=${percentile(v, 100).toFixed(1)}`);
    for (const t of p.tables) out.push(`${t.title}:`, ...t.lines);
    out.push("checks:");
    for (const c of p.checks) out.push(`  [${c.ok ? "PASS" : "FAIL"}] ${c.name}: ${c.detail}`);
    out.push("");
  }
  return out.join("\n");
}

/** The member nemesis kept every promise: no unexpected answer, hang, or broken step. */
export function checkMemberSteps(m: MemberNemesis): CheckResult {
  const steps = Object.entries(m.steps).map(([k, v]) => `${k}=${v}`).join(" ") || "none";
  const answers = Object.values(m.outcomes).reduce((a, by) => a + Object.values(by).reduce((x, y) => x + y, 0), 0);
  if (m.problems.length > 0) return { name: "member steps", ok: false, detail: `${m.problems.length} problem(s): ${m.problems.slice(0, 3).join(" | ")} (steps ${steps})` };
  return { name: "member steps", ok: true, detail: `steps ${steps}; ${answers} membership answers, each OK or a legitimate refusal (table above)` };
}

/** Clusters still running (for the CLI's signal handlers). */
export const activeClusters = new Set<JepsenCluster>();

// The bank checker: pure functions over what the bank workload recorded (bank.ts) and what every
// node holds at the end, unit-tested in jepsen.test.ts with histories that must be rejected.
//
//   bank invariant      every read is a complete picture of the accounts at ONE version (every
//                       page at the version of the first, an at-version read at the version
//                       asked), with every account, no negative balance, summing to the total
//   bank reads          every read equals the state that the applied transfers (the xfer keys
//                       found at the end, each at its txn's version) produce at the read's
//                       version, balance and version of every account; a linearizable read is
//                       at least as new as every transfer acknowledged before it started; a read
//                       with min_version is at least that new
//   bank exactly-once   on every node at the end: the xfer keys are exactly the transfers that
//                       were applied — every transfer answered "succeeded" has its key, written
//                       once (create_version = version = the txn's version), no transfer answered
//                       "compare failed" or failed definitely has one, no key without a transfer;
//                       unknown outcomes may go either way. The balances are the initial ones plus
//                       every applied transfer, once; no two acknowledged txns share a version.

import type { CheckResult } from "./checks.ts";
import { type BankFinal, type BankRead, type BankSetup, type BankTransfer, acctKey, parseXferValue } from "./bank.ts";

export interface BankHistory {
  setup: BankSetup;
  transfers: BankTransfer[];
  reads: BankRead[];
  final: BankFinal[];
}

interface Applied {
  xfer: string;
  from: number;
  to: number;
  amount: number;
  version: number;
}

/** The accounts after every applied transfer with version <= v (by binary search). */
class StateAt {
  private readonly versions: number[] = [];
  private readonly balances: number[][] = [];
  private readonly acctVersions: number[][] = [];

  constructor(setup: BankSetup, applied: Applied[]) {
    let bal = [...setup.initial];
    let ver = setup.initial.map(() => setup.version);
    this.versions.push(setup.version);
    this.balances.push(bal);
    this.acctVersions.push(ver);
    for (const a of [...applied].sort((x, y) => x.version - y.version)) {
      bal = [...bal];
      ver = [...ver];
      bal[a.from] = bal[a.from]! - a.amount;
      bal[a.to] = bal[a.to]! + a.amount;
      ver[a.from] = a.version;
      ver[a.to] = a.version;
      this.versions.push(a.version);
      this.balances.push(bal);
      this.acctVersions.push(ver);
    }
  }

  /** null: before the setup. */
  at(v: number): { balances: number[]; versions: number[] } | null {
    let lo = 0;
    let hi = this.versions.length - 1;
    if (v < this.versions[0]!) return null;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.versions[mid]! <= v) lo = mid;
      else hi = mid - 1;
    }
    return { balances: this.balances[lo]!, versions: this.acctVersions[lo]! };
  }

  get final(): { balances: number[]; versions: number[] } {
    return { balances: this.balances.at(-1)!, versions: this.acctVersions.at(-1)! };
  }
}

function describeRead(r: BankRead): string {
  return `${r.kind} read by ${r.reader} on node${r.node + 1} at version ${r.pageVersions.join("/")}${r.atVersion ? ` (asked ${r.atVersion})` : ""}${r.minVersion ? ` (min_version ${r.minVersion})` : ""}`;
}

function fmtAccounts(bal: number[], ver: number[]): string {
  return bal.map((b, i) => `${i}=${b}@${ver[i]}`).join(" ");
}

function fail(name: string, problems: string[], summary: string): CheckResult {
  return { name, ok: false, detail: `${problems.length} problem(s), e.g. ${problems.slice(0, 4).join("; ")} — ${summary}` };
}

export function checkBank(h: BankHistory): CheckResult[] {
  const n = h.setup.initial.length;
  const total = h.setup.initial.reduce((a, b) => a + b, 0);
  const accounts = Array.from({ length: n }, (_, i) => acctKey(i));
  const results: CheckResult[] = [];

  // ---- the invariant -------------------------------------------------------------------------
  {
    const problems: string[] = [];
    for (const r of h.reads) {
      const v0 = r.pageVersions[0]!;
      if (r.pageVersions.some((v) => v !== v0)) problems.push(`${describeRead(r)}: its pages were read at different versions`);
      if (r.atVersion > 0 && v0 !== r.atVersion) problems.push(`${describeRead(r)}: asked for version ${r.atVersion}, answered at ${v0}`);
      const keys = r.kvs.map((k) => k.key);
      if (v0 < h.setup.version) {
        // The store before the accounts were written (a serializable read may be that stale:
        // e.g. a member emptied and added back, serving before it caught up): no account.
        if (keys.length > 0 || r.count !== 0) problems.push(`${describeRead(r)}: holds [${keys.join(",")}] (count ${r.count}) at a version before the accounts were written at ${h.setup.version}`);
        continue;
      }
      if (keys.length !== n || keys.some((k, i) => k !== accounts[i])) {
        problems.push(`${describeRead(r)}: holds ${keys.length} keys [${keys.join(",")}], not the ${n} accounts in order`);
        continue;
      }
      if (r.count !== n) problems.push(`${describeRead(r)}: count ${r.count}, there are ${n} accounts`);
      const bal = r.kvs.map((k) => Number(k.value));
      const sum = bal.reduce((a, b) => a + b, 0);
      if (bal.some((b) => !Number.isInteger(b) || b < 0)) problems.push(`${describeRead(r)}: balances ${r.kvs.map((k) => k.value).join(",")}`);
      else if (sum !== total) problems.push(`${describeRead(r)}: balances sum to ${sum}, not ${total} (${r.kvs.map((k, i) => `${i}=${k.value}@${k.version}`).join(" ")})`);
    }
    const kinds = new Map<string, number>();
    for (const r of h.reads) kinds.set(r.kind, (kinds.get(r.kind) ?? 0) + 1);
    const early = h.reads.filter((r) => r.pageVersions[0]! < h.setup.version).length;
    const summary = `${h.reads.length} reads (${[...kinds].map(([k, c]) => `${c} ${k}`).join(", ")})${early ? `, ${early} of them (serializable) at a version before the accounts existed, empty` : ""}, total ${total} over ${n} accounts`;
    results.push(problems.length > 0 ? fail("bank invariant", problems, summary) : { name: "bank invariant", ok: true, detail: `${summary}: every read complete, at one version, summing to ${total}` });
  }

  // ---- what was applied (the xfer keys on the first node; the others must agree) ----------------
  const byXfer = new Map<string, BankTransfer>();
  for (const t of h.transfers) byXfer.set(t.xfer, t);
  const appliedOn = h.final.map((f) => {
    const m = new Map<string, { value: string; version: number; createVersion: number }>();
    for (const kv of f.kvs) if (!accounts.includes(kv.key)) m.set(kv.key, kv);
    return m;
  });
  const applied: Applied[] = [];
  const exactly: string[] = [];
  if (appliedOn.length > 0) {
    for (const [key, kv] of appliedOn[0]!) {
      const p = parseXferValue(kv.value);
      const t = byXfer.get(key);
      if (!p) {
        exactly.push(`node1 holds ${key}=${JSON.stringify(kv.value)}, not a transfer`);
        continue;
      }
      if (!t) exactly.push(`node1 holds ${key}=${kv.value}@${kv.version}, a transfer nobody sent`);
      else if (t.from !== p.from || t.to !== p.to || t.amount !== p.amount) exactly.push(`node1 holds ${key}=${kv.value}, but that transfer was ${t.from}>${t.to}:${t.amount}`);
      applied.push({ xfer: key, ...p, version: kv.version });
    }
  }
  const state = new StateAt(h.setup, applied);

  // ---- reads against the applied transfers -----------------------------------------------------
  {
    const problems: string[] = [];
    const acked = h.transfers.filter((t) => t.status === "succeeded" && t.complete !== null).sort((a, b) => a.complete! - b.complete!);
    // prefixMax[i]: the newest version among the first i+1 acknowledgements
    const prefixMax: number[] = [];
    for (const t of acked) prefixMax.push(Math.max(prefixMax.at(-1) ?? 0, t.version));
    const newestAckedBefore = (time: number): { version: number; t: BankTransfer | null } => {
      let lo = 0;
      let hi = acked.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (acked[mid]!.complete! < time) lo = mid + 1;
        else hi = mid;
      }
      if (lo === 0) return { version: 0, t: null };
      const v = prefixMax[lo - 1]!;
      return { version: v, t: acked.slice(0, lo).find((t) => t.version === v) ?? null };
    };
    for (const r of h.reads) {
      const v = r.pageVersions[0]!;
      const want = state.at(v); // null before the setup: the invariant check saw it is empty
      if (want && r.kvs.length === n) {
        const bal = r.kvs.map((k) => Number(k.value));
        const ver = r.kvs.map((k) => k.version);
        if (bal.some((b, i) => b !== want.balances[i]) || ver.some((x, i) => x !== want.versions[i])) {
          problems.push(`${describeRead(r)}: read ${fmtAccounts(bal, ver)}, but the applied transfers give ${fmtAccounts(want.balances, want.versions)} at that version`);
        }
      }
      if (r.kind === "linearizable") {
        const before = newestAckedBefore(r.invoke);
        if (before.version > v) problems.push(`stale ${describeRead(r)}: transfer ${before.t?.xfer} was acknowledged at version ${before.version} before the read started`);
      }
      if (r.minVersion > 0 && v < r.minVersion) problems.push(`${describeRead(r)}: older than its min_version`);
    }
    const summary = `${h.reads.length} reads checked against ${applied.length} applied transfers`;
    results.push(problems.length > 0 ? fail("bank reads", problems, summary) : { name: "bank reads", ok: true, detail: `${summary}: every read is the state at its version; linearizable reads not stale` });
  }

  // ---- exactly once ----------------------------------------------------------------------------
  {
    const problems = [...exactly];
    // The same problem on several nodes is one line naming them all.
    const perNode = new Map<string, string[]>();
    const onNode = (what: string, where: string): void => {
      const l = perNode.get(what);
      if (l) l.push(where);
      else perNode.set(what, [where]);
    };
    const counts: Record<string, number> = { succeeded: 0, "compare-failed": 0, failed: 0, unknown: 0 };
    let unknownApplied = 0;
    let retried = 0;
    let answeredAfterRetry = 0;
    let afterIndeterminate = 0;
    let succeededAfterIndeterminate = 0;
    const versions = new Map<number, string>();
    for (const t of h.transfers) {
      counts[t.status] = (counts[t.status] ?? 0) + 1;
      if (t.retries.length > 0) {
        retried++;
        if (t.status === "succeeded" || t.status === "compare-failed") answeredAfterRetry++;
        if (t.indeterminate > 0 && (t.status === "succeeded" || t.status === "compare-failed")) {
          afterIndeterminate++;
          if (t.status === "succeeded") succeededAfterIndeterminate++;
        }
      }
      if (t.status === "succeeded") {
        const prev = versions.get(t.version);
        if (prev !== undefined) problems.push(`transfers ${prev} and ${t.xfer} were both acknowledged at version ${t.version}`);
        versions.set(t.version, t.xfer);
      }
      appliedOn.forEach((m, i) => {
        const kv = m.get(t.xfer);
        const where = `node${i + 1}`;
        if (t.status === "succeeded") {
          if (!kv) onNode(`transfer ${t.xfer} (${t.from}>${t.to}:${t.amount}) answered "succeeded" at version ${t.version}${t.retries.length ? ` after ${t.retries.length} retries` : ""}, but its key is missing on`, where);
          else if (kv.version !== t.version) onNode(`transfer ${t.xfer} answered "succeeded" at version ${t.version}, but its key is at version ${kv.version} on`, where);
        } else if (t.status === "compare-failed" || t.status === "failed") {
          if (kv) onNode(`transfer ${t.xfer} answered ${t.status === "failed" ? `failed (${t.detail})` : `"compare failed" at version ${t.version}`}${t.retries.length ? ` after ${t.retries.length} retries (${t.retries.slice(0, 2).join(", ")})` : ""}, but it was applied: its key is at version ${kv.version} on`, where);
        }
        if (kv && kv.createVersion !== kv.version) onNode(`${t.xfer} was written more than once (created at ${kv.createVersion}, last written at ${kv.version}) on`, where);
      });
      if (t.status === "unknown" && appliedOn[0]?.has(t.xfer)) unknownApplied++;
    }
    for (const [what, nodes] of perNode) problems.push(`${what} ${nodes.join(", ")}`);
    // Every node: the same xfer keys, and the balances the applied transfers give.
    const want = state.final;
    h.final.forEach((f, i) => {
      const where = `node${i + 1}`;
      if (i > 0) {
        const a = [...appliedOn[0]!.keys()].sort().join(",");
        const b = [...appliedOn[i]!.keys()].sort().join(",");
        if (a !== b) problems.push(`${where} holds other xfer keys than node1 (${appliedOn[i]!.size} vs ${appliedOn[0]!.size})`);
      }
      const acct = accounts.map((k) => f.kvs.find((kv) => kv.key === k));
      if (acct.some((a) => !a)) {
        problems.push(`${where} misses accounts at the end: ${accounts.filter((_, j) => !acct[j]).join(",")}`);
        return;
      }
      const bal = acct.map((a) => Number(a!.value));
      const ver = acct.map((a) => a!.version);
      if (bal.some((b, j) => b !== want.balances[j]) || ver.some((v, j) => v !== want.versions[j])) {
        problems.push(`${where} ends with ${fmtAccounts(bal, ver)}, but the initial balances plus the ${applied.length} applied transfers give ${fmtAccounts(want.balances, want.versions)}`);
      }
    });
    const summary = `${h.transfers.length} transfers: ${counts.succeeded} succeeded, ${counts["compare-failed"]} compare failed, ${counts.failed} failed, ${counts.unknown} unknown (${unknownApplied} applied); ${retried} retried with the same (session, seq), ${answeredAfterRetry} of them answered (${afterIndeterminate} after an attempt that may have applied, ${succeededAfterIndeterminate} of those "succeeded"); ${applied.length} applied`;
    results.push(
      problems.length > 0
        ? fail("bank exactly-once", problems, summary)
        : { name: "bank exactly-once", ok: true, detail: `${summary}; on all ${h.final.length} nodes the xfer keys are exactly the applied transfers, each once, and the balances add up` },
    );
  }
  return results;
}

// The checkers. Pure functions over what the workloads recorded and what the nodes hold at the
// end, so that each can be unit-tested with a history that must be rejected.

import { checkLinearizable } from "../sim/linearizability.ts";
import type { RegisterOp, SetAttempt, WatchSegment, WatchWrite } from "./workloads.ts";

export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
}

/** What one node holds for a key at the end (null = NOT_FOUND). */
export interface FinalValue {
  value: string;
  version: number;
}

/** Per node: key -> final value (serializable reads after catch-up). */
export type FinalReads = Map<string, FinalValue | null>[];

export function checkRegister(history: RegisterOp[], maxStates?: number): CheckResult {
  const started = Date.now();
  const r = checkLinearizable(history, maxStates ? { maxStates } : undefined);
  const keys = new Set(history.map((h) => h.op.key)).size;
  const unknown = history.filter((h) => h.complete === null && h.op.kind !== "get").length;
  const took = Date.now() - started;
  if (!r.ok) return { name: "register linearizable", ok: false, detail: `key ${r.key}: ${r.explanation}` };
  return {
    name: "register linearizable",
    ok: true,
    detail: `${history.length} ops on ${keys} keys (${unknown} writes of unknown outcome) ${r.timedOut ? "UNPROVEN: the search hit its state budget" : "linearizable"} (checked in ${took} ms)`,
  };
}

function show(v: FinalValue | null | undefined): string {
  if (v === undefined) return "<not read>";
  if (v === null) return "<absent>";
  return `${JSON.stringify(v.value)}@${v.version}`;
}

/**
 * The set: every acknowledged put is on every node with its value (and version); every put that
 * certainly failed is on no node; a put of unknown outcome may be anywhere, but the nodes agree
 * (checkAgreement).
 */
export function checkSet(attempts: SetAttempt[], reads: FinalReads, name = "set"): CheckResult {
  const problems: string[] = [];
  let acked = 0;
  let failed = 0;
  let unknown = 0;
  let unknownPresent = 0;
  for (const a of attempts) {
    if (a.status === "ok") acked++;
    else if (a.status === "fail") failed++;
    else unknown++;
    let presentSomewhere = false;
    reads.forEach((r, i) => {
      const v = r.get(a.key);
      if (v) presentSomewhere = true;
      if (a.status === "ok") {
        if (!v) problems.push(`acknowledged key ${a.key} (version ${a.version}) is missing on node${i + 1} (${show(v)})`);
        else if (v.value !== a.value || v.version !== a.version) problems.push(`acknowledged key ${a.key}=${JSON.stringify(a.value)}@${a.version} reads ${show(v)} on node${i + 1}`);
      } else if (a.status === "fail") {
        if (v) problems.push(`key ${a.key} whose put failed definitely (${a.code}) is present on node${i + 1}: ${show(v)}`);
      } else if (v && v.value !== a.value) {
        problems.push(`key ${a.key} (unknown outcome) reads ${show(v)} on node${i + 1}, a value never written`);
      }
    });
    if (a.status === "unknown" && presentSomewhere) unknownPresent++;
  }
  const counts = `${attempts.length} puts: ${acked} acknowledged, ${failed} failed, ${unknown} unknown (${unknownPresent} of them took effect)`;
  if (problems.length > 0) {
    return { name, ok: false, detail: `${problems.length} problem(s), e.g. ${problems.slice(0, 5).join("; ")} — ${counts}` };
  }
  return { name, ok: true, detail: `${counts}; every acknowledged key on all ${reads.length} nodes` };
}

/**
 * Every node holds the same value and version for every key anyone wrote, and no node holds a key
 * nobody wrote (its live key count equals the number of written keys it holds).
 */
export function checkAgreement(keys: string[], reads: FinalReads, keyCounts: number[]): CheckResult {
  const problems: string[] = [];
  for (const k of keys) {
    const vals = reads.map((r) => show(r.get(k)));
    if (vals.some((v) => v !== vals[0])) problems.push(`${k}: ${vals.map((v, i) => `node${i + 1}=${v}`).join(" ")}`);
  }
  reads.forEach((r, i) => {
    let present = 0;
    for (const k of keys) if (r.get(k)) present++;
    const kc = keyCounts[i]!;
    if (kc !== present) problems.push(`node${i + 1} holds ${kc} live keys but ${present} of the ${keys.length} keys written${kc > present ? ": it holds keys nobody wrote" : ""}`);
  });
  if (problems.length > 0) return { name: "nodes agree", ok: false, detail: `${problems.length} disagreement(s), e.g. ${problems.slice(0, 5).join("; ")}` };
  return { name: "nodes agree", ok: true, detail: `${reads.length} nodes agree on all ${keys.length} keys written; no other key exists` };
}

/**
 * Watch streams. The committed writes under the prefix are the union of every event any stream
 * delivered and every acknowledged put (an acknowledged delete of an absent key produces no event).
 * Each stream must deliver versions strictly increasing (no duplicate, no reordering), agree with
 * every other observation of the same version, and — between its first and last event — deliver
 * every committed write under the prefix: a stream may end with an error, never skip silently.
 */
export function checkWatch(segments: WatchSegment[], writes: WatchWrite[], prefix: string): CheckResult {
  const problems: string[] = [];
  const truth = new Map<number, { key: string; type: string; value: string; seenBy: string }>();
  const note = (version: number, e: { key: string; type: string; value: string }, by: string): void => {
    const t = truth.get(version);
    if (!t) {
      truth.set(version, { ...e, seenBy: by });
      return;
    }
    if (t.key !== e.key || t.type !== e.type || t.value !== e.value) {
      problems.push(`version ${version} is ${e.type} ${e.key}=${JSON.stringify(e.value)} for ${by} but ${t.type} ${t.key}=${JSON.stringify(t.value)} for ${t.seenBy}`);
    }
  };
  for (const w of writes) if (w.status === "ok" && w.type === "put") note(w.version, w, "the writer's acknowledgement");
  for (const s of segments) for (const e of s.events) note(e.version, e, `watcher ${s.watcherId} (node${s.node + 1})`);
  for (const w of writes) {
    if (w.status === "ok" && w.type === "delete") {
      const t = truth.get(w.version);
      if (t && (t.key !== w.key || t.type !== "delete")) problems.push(`acknowledged delete of ${w.key} at version ${w.version} but that version is ${t.type} ${t.key} for ${t.seenBy}`);
    }
  }
  const versions = [...truth.keys()].sort((a, b) => a - b);
  let events = 0;
  let gaps = 0;
  for (const s of segments) {
    events += s.events.length;
    const seen = new Set<number>();
    let prev = -1;
    for (const e of s.events) {
      if (!e.key.startsWith(prefix)) problems.push(`watcher ${s.watcherId} (node${s.node + 1}) delivered ${e.key}, outside its prefix ${prefix}`);
      if (seen.has(e.version)) problems.push(`watcher ${s.watcherId} (node${s.node + 1}) delivered version ${e.version} twice`);
      else if (e.version < prev) problems.push(`watcher ${s.watcherId} (node${s.node + 1}) delivered version ${e.version} after ${prev}`);
      seen.add(e.version);
      prev = Math.max(prev, e.version);
    }
    if (s.events.length < 1) continue;
    const first = s.events[0]!.version;
    const last = prev;
    const missing: number[] = [];
    for (const v of versions) {
      if (v <= first) continue;
      if (v > last) break;
      if (!seen.has(v)) missing.push(v);
    }
    if (missing.length > 0) {
      gaps++;
      const t = truth.get(missing[0]!)!;
      problems.push(
        `silent gap: watcher ${s.watcherId} (node${s.node + 1}, ended ${s.end ?? "open"}) delivered ${first}..${last} but skipped ${missing.length} committed write(s) in between, first ${missing[0]} (${t.type} ${t.key}, seen by ${t.seenBy})${missing.length > 1 ? `, last ${missing.at(-1)}` : ""}`,
      );
    }
  }
  const summary = `${segments.length} streams, ${events} events, ${truth.size} committed writes under ${prefix}`;
  if (problems.length > 0) return { name: "watch", ok: false, detail: `${problems.length} problem(s) (${gaps} streams with gaps), e.g. ${problems.slice(0, 4).join("; ")} — ${summary}` };
  return { name: "watch", ok: true, detail: `${summary}; every stream in order, without gaps or duplicates` };
}

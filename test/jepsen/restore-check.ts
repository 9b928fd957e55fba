// The restore check's comparison (pure, unit-tested in jepsen.test.ts): a snapshot taken at
// version V and restored into a new one-node cluster must hold exactly what the source cluster's
// Range at V holds — every key with its value, meta, version, create_version and expiry, no key
// more — and every acknowledged write at or below V, none above it and none that certainly failed.

import type { CheckResult } from "./checks.ts";
import type { SetAttempt } from "./workloads.ts";

/** One key as a Range answers it (key and value decoded as UTF-8: the workloads write text). */
export interface RangeEntry {
  key: string;
  value: string;
  meta: number;
  version: number;
  createVersion: number;
  expireAt: number;
}

export interface RestoreHistory {
  /** SnapshotChunk.version: the store's version the image is at. */
  version: number;
  /** The source cluster's Range of every key at `version`. */
  source: RangeEntry[];
  /** The restored cluster's Range of every key (nothing written to it before). */
  restored: RangeEntry[];
  /** Every put the workloads attempted on the source cluster (unique keys, never overwritten). */
  attempts: SetAttempt[];
}

function show(e: RangeEntry | undefined): string {
  if (!e) return "<absent>";
  return `${JSON.stringify(e.value)}@${e.version} (created ${e.createVersion}, meta ${e.meta}, expires ${e.expireAt})`;
}

function same(a: RangeEntry, b: RangeEntry): boolean {
  return a.value === b.value && a.version === b.version && a.createVersion === b.createVersion && a.meta === b.meta && a.expireAt === b.expireAt;
}

export function checkRestore(h: RestoreHistory): CheckResult[] {
  const src = new Map(h.source.map((e) => [e.key, e]));
  const dst = new Map(h.restored.map((e) => [e.key, e]));
  const diff: string[] = [];
  for (const [k, e] of src) {
    const r = dst.get(k);
    if (!r || !same(e, r)) diff.push(`${k}: source at ${h.version} ${show(e)}, restored ${show(r)}`);
  }
  for (const [k, r] of dst) if (!src.has(k)) diff.push(`${k}: not in the source at ${h.version}, restored ${show(r)}`);
  for (const e of h.source) if (e.version > h.version) diff.push(`${e.key}: the source's Range at ${h.version} answered version ${e.version}`);
  const compare: CheckResult =
    diff.length === 0
      ? { name: "restore: every key as the source at the snapshot's version", ok: true, detail: `${h.source.length} keys identical (value, meta, version, create_version, expiry) at version ${h.version}, no other key` }
      : { name: "restore: every key as the source at the snapshot's version", ok: false, detail: `${diff.length} difference(s) at version ${h.version}: ${diff.slice(0, 4).join("; ")}` };

  const lost: string[] = [];
  let acked = 0;
  let after = 0;
  for (const a of h.attempts) {
    const r = dst.get(a.key);
    if (a.status === "ok") {
      acked++;
      if (a.version <= h.version) {
        if (!r || r.value !== a.value || r.version !== a.version) lost.push(`acknowledged put ${a.key}=${JSON.stringify(a.value)}@${a.version} (≤ ${h.version}): restored ${show(r)}`);
      } else {
        after++;
        if (r) lost.push(`acknowledged put ${a.key}@${a.version} is after the snapshot's version ${h.version} but restored as ${show(r)}`);
      }
    } else if (a.status === "fail" && r) {
      lost.push(`put ${a.key} certainly failed (${a.code ?? "?"}) but is restored as ${show(r)}`);
    }
  }
  const writes: CheckResult =
    lost.length === 0
      ? { name: "restore: acknowledged writes", ok: true, detail: `${acked - after} acknowledged puts at or below version ${h.version} restored with their value and version; ${after} acknowledged after it absent` }
      : { name: "restore: acknowledged writes", ok: false, detail: `${lost.length} problem(s): ${lost.slice(0, 4).join("; ")}` };
  return [compare, writes];
}

// The watch-resume checker: a pure function over what the watch-resume workload recorded
// (watch-resume.ts) and the final state, unit-tested in jepsen.test.ts with histories that must be
// rejected.
//
// The committed writes under the prefix are the acknowledged puts (each must be on every node at
// its version) plus the puts of unknown outcome found on a node at the end (at the version found);
// a put that failed definitely must be on none. Every write is of a fresh key, so a version names
// at most one committed write. For each watcher, across all its segments (streams resumed on
// other nodes from the last version received):
//   - every event is a committed write, identical (key, value) to it at that version;
//   - every event comes after everything received before it, across segments: no version twice
//     (a duplicate at a resume, or within a stream), none older than an earlier event or than
//     an earlier Progress version (a Progress promised every event up to it);
//   - every event of a segment is newer than the start_version it was opened with;
//   - no gap: every committed version between the watcher's first start_version and the last
//     version it received was delivered, except those an explicit reset skipped: a segment that
//     ended OUT_OF_RANGE naming compacted version C allows exactly (last received, C]; C must
//     be above what the watcher asked for and no higher than any compaction anyone requested
//     (unless the nodes compact on their own, --version-keep-num).

import type { CheckResult, FinalReads } from "./checks.ts";
import type { WrCompaction, WrSegment, WrWrite } from "./watch-resume.ts";

export interface WatchResumeHistory {
  prefix: string;
  writes: WrWrite[];
  segments: WrSegment[];
  watchers: { start: number; last: number }[];
  compactions: WrCompaction[];
  final: FinalReads;
  /**
   * The nodes compact on their own (--version-keep-num): a reset then need not match a
   * requested compaction.
   */
  implicitCompaction?: boolean;
}

interface Committed {
  key: string;
  value: string;
  how: "acknowledged" | "unknown outcome, found at the end";
}

export function checkWatchResume(h: WatchResumeHistory): CheckResult {
  const problems: string[] = [];
  const committed = new Map<number, Committed>();
  let unknownCommitted = 0;
  const commit = (version: number, c: Committed): void => {
    const prev = committed.get(version);
    if (prev && (prev.key !== c.key || prev.value !== c.value)) problems.push(`two writes committed at version ${version}: ${prev.key} and ${c.key}`);
    committed.set(version, c);
  };
  for (const w of h.writes) {
    const found = h.final.map((r) => r.get(w.key));
    if (w.status === "ok") {
      found.forEach((v, i) => {
        if (!v || v.value !== w.value || v.version !== w.version) problems.push(`acknowledged put ${w.key}=${w.value}@${w.version} reads ${v ? `${v.value}@${v.version}` : "absent"} on node${i + 1} at the end`);
      });
      commit(w.version, { key: w.key, value: w.value, how: "acknowledged" });
    } else {
      const v = found.find((x) => x && x.value === w.value);
      if (w.status === "fail" && v) problems.push(`put ${w.key} failed definitely (${w.code}) but is present at version ${v.version}`);
      if (w.status === "unknown" && v) {
        unknownCommitted++;
        commit(v.version, { key: w.key, value: w.value, how: "unknown outcome, found at the end" });
      }
    }
  }
  const versions = [...committed.keys()].sort((a, b) => a - b);
  const maxCompaction = h.compactions.reduce((m, c) => Math.max(m, c.version, c.compacted ?? 0), 0);

  let events = 0;
  let progress = 0;
  let resets = 0;
  let resetSkipped = 0;
  let gaps = 0;
  let dups = 0;
  const ends = new Map<string, number>();
  h.watchers.forEach((wt, w) => {
    const segs = h.segments.filter((s) => s.watcher === w).sort((a, b) => a.n - b.n);
    const delivered = new Map<number, WrSegment>();
    const allowed: [number, number][] = [];
    let floor = wt.start; // everything <= floor was received or promised
    const name = (s: WrSegment): string => `watcher ${w} segment ${s.n} (node${s.node + 1}, start_version ${s.startVersion}, ended ${s.end ?? "open"})`;
    for (const s of segs) {
      const kind = (s.end ?? "open").replace(/^error (\w+).*/, "$1");
      ends.set(kind, (ends.get(kind) ?? 0) + 1);
      let lastProgress = -1;
      for (const it of s.items) {
        if (it.kind === "progress") {
          progress++;
          if (it.version < lastProgress) problems.push(`${name(s)}: Progress ${it.version} after Progress ${lastProgress}`);
          lastProgress = Math.max(lastProgress, it.version);
          floor = Math.max(floor, it.version);
          continue;
        }
        events++;
        const c = committed.get(it.version);
        if (!it.key.startsWith(h.prefix)) problems.push(`${name(s)}: event ${it.key}@${it.version} outside the prefix ${h.prefix}`);
        else if (!c) problems.push(`${name(s)}: ${it.type} ${it.key}=${it.value}@${it.version}, but no committed write has that version${h.writes.some((x) => x.key === it.key) ? ` (${it.key} was written, but it is not at ${it.version} at the end)` : ""}`);
        else if (c.key !== it.key || c.value !== it.value || it.type !== "put") problems.push(`${name(s)}: ${it.type} ${it.key}=${it.value}@${it.version}, but version ${it.version} is put ${c.key}=${c.value}`);
        if (it.version <= s.startVersion) problems.push(`${name(s)}: delivered version ${it.version}, not after its start_version`);
        const first = delivered.get(it.version);
        if (first) {
          dups++;
          problems.push(`duplicate: ${name(s)} delivered version ${it.version} (${it.key}) again, first delivered by segment ${first.n} (node${first.node + 1})`);
        } else if (it.version <= floor) {
          problems.push(`${name(s)}: delivered version ${it.version} after version ${floor} had been received or promised by a Progress event`);
        }
        if (!first) delivered.set(it.version, s);
        floor = Math.max(floor, it.version);
      }
      if (s.reset !== undefined) {
        resets++;
        if (s.reset <= s.startVersion) problems.push(`${name(s)}: OUT_OF_RANGE names compacted version ${s.reset}, not above the start_version asked for`);
        if (!h.implicitCompaction && s.reset > maxCompaction) problems.push(`${name(s)}: OUT_OF_RANGE names compacted version ${s.reset}, but no compaction past ${maxCompaction} was requested`);
        if (s.reset > floor) {
          allowed.push([floor, s.reset]);
          floor = s.reset;
        }
      }
    }
    const last = Math.max(floor, wt.last);
    for (const v of versions) {
      if (v <= wt.start) continue;
      if (v > last) break;
      if (delivered.has(v)) continue;
      if (allowed.some(([a, b]) => v > a && v <= b)) {
        resetSkipped++;
        continue;
      }
      gaps++;
      if (gaps > 20) continue;
      // Where it should have come: inside a segment's span, or at the resume after it.
      const c = committed.get(v)!;
      const within = segs.find((s) => {
        const evs = s.items.filter((i) => i.kind === "event").map((i) => i.version);
        return evs.length > 0 && s.startVersion < v && v < Math.max(...evs);
      });
      const before = [...segs].reverse().find((s) => s.startVersion < v);
      const after = before ? segs.find((s) => s.n > before.n) : undefined;
      const where = within
        ? `skipped inside ${name(within)}`
        : before
          ? `lost at the resume after ${name(before)}${after ? `, next ${name(after)}` : ""}`
          : "before the first segment";
      problems.push(`gap: watcher ${w} never received committed version ${v} (${c.key}, ${c.how}), ${where}`);
    }
  });
  const segsTotal = h.segments.length;
  const summary =
    `${h.watchers.length} watchers, ${segsTotal} segments (${segsTotal - h.watchers.length} resumes; ends: ${[...ends].map(([k, c]) => `${k}=${c}`).join(" ")}), ` +
    `${events} events, ${progress} Progress, ${resets} resets skipping ${resetSkipped} versions; ${committed.size} committed writes (${unknownCommitted} of unknown outcome), ` +
    `${h.compactions.filter((c) => c.status === "ok").length}/${h.compactions.length} compactions acknowledged`;
  if (problems.length > 0) {
    return { name: "watch-resume", ok: false, detail: `${problems.length} problem(s) (${gaps} missing versions, ${dups} duplicates), e.g. ${problems.slice(0, 4).join("; ")} — ${summary}` };
  }
  return { name: "watch-resume", ok: true, detail: `${summary}; every committed write seen exactly once per watcher, in version order` };
}

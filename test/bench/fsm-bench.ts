// Micro-benchmark of the FSM hot paths (not part of `bun test`): apply throughput through
// KvStore.applyEntries in batches of 40 and point reads at the latest version.
//   bun test/bench/fsm-bench.ts [--no-sync] [--entries N] [--keys K] [--value-bytes B] [--proposals]
// Reports µs per entry (apply) and µs per get; the median of --rounds runs, each on a fresh store.
// --reopen also times closing and reopening the store (which checks the whole file).
// --proposals gives every entry a proposal id (as the node does), so the dedupe is measured too.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CommandKind, encodeCommand } from "../../src/storage/command.ts";
import { type FsmEntry, KvStore } from "../../src/storage/fsm.ts";

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}
const noSync = process.argv.includes("--no-sync");
const ENTRIES = arg("entries", 100_000);
const KEYS = arg("keys", 10_000); // fewer keys than entries: most puts overwrite (history moves)
const VALUE = arg("value-bytes", 256);
const BATCH = 40;
const ROUNDS = arg("rounds", 3);
const GETS = arg("gets", 200_000);

const te = new TextEncoder();
const keyOf = (i: number): Uint8Array => te.encode(`bench/key-${String(i % KEYS).padStart(7, "0")}`);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const reopen = process.argv.includes("--reopen");
const proposals = process.argv.includes("--proposals");
const ORIGIN = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);

async function round(): Promise<{ apply: number; get: number; open: string }> {
  const dir = mkdtempSync(join(tmpdir(), "rbkv-bench-"));
  let st = KvStore.open({ dir, versionKeepNum: 0, unsafeNoSync: noSync });
  try {
    const value = new Uint8Array(VALUE).fill(0x61);
    // Encoded up front: the benchmark measures the store, not the command codec.
    const batches: FsmEntry[][] = [];
    for (let i = 1; i <= ENTRIES; i += BATCH) {
      const b: FsmEntry[] = [];
      for (let j = i; j < i + BATCH && j <= ENTRIES; j++) b.push({
          index: j,
          data: encodeCommand({ kind: CommandKind.Put, key: keyOf(j), value, meta: 0, expireAt: 0 }),
          ...(proposals ? { proposal: { origin: ORIGIN, counter: j } } : {}),
        });
      batches.push(b);
    }
    const t0 = performance.now();
    for (const b of batches) st.applyEntries(b);
    const apply = ((performance.now() - t0) * 1000) / ENTRIES;
    const keys = Array.from({ length: Math.min(KEYS, ENTRIES) }, (_, i) => keyOf(i));
    let found = 0;
    const t1 = performance.now();
    for (let i = 0; i < GETS; i++) if (st.get(keys[i % keys.length]!, 0, 0)) found++;
    const get = ((performance.now() - t1) * 1000) / GETS;
    if (found !== GETS) throw new Error(`only ${found} of ${GETS} gets found their key`);
    let open = "";
    if (reopen) {
      await st.close();
      const t2 = performance.now();
      st = KvStore.open({ dir, versionKeepNum: 0, unsafeNoSync: noSync });
      const v = st.verified;
      open = `; reopen ${(performance.now() - t2).toFixed(0)} ms${v ? ` (${v.records} records, ${v.pages} pages checked)` : ""}`;
    }
    return { apply, get, open };
  } finally {
    await st.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const applies: number[] = [];
const gets: number[] = [];
let opens = "";
for (let r = 0; r < ROUNDS; r++) {
  const x = await round();
  applies.push(x.apply);
  gets.push(x.get);
  opens = x.open;
}
console.log(
  `fsm-bench: ${ENTRIES} puts over ${KEYS} keys, ${VALUE}-byte values, batches of ${BATCH}${noSync ? ", unsafeNoSync" : ""}${proposals ? ", with proposal ids" : ""}: ` +
    `apply ${median(applies).toFixed(2)} µs/entry (runs ${applies.map((x) => x.toFixed(2)).join(", ")}); ` +
    `get ${median(gets).toFixed(2)} µs (runs ${gets.map((x) => x.toFixed(2)).join(", ")})${opens}`,
);

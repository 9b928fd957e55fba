// Micro-benchmark of the command codec's hot path (not part of `bun test`): decodeCommand of a
// Put and of a Delete (the apply path), and decodeApplyResult of a write result.
//   bun test/bench/command-bench.ts [--iterations N] [--rounds R] [--value-bytes B]
// Reports ns per decode, the median of --rounds runs (after a warm-up run).

import { decodeApplyResult, encodeApplyResult } from "../../src/storage/apply-result.ts";
import { CommandKind, decodeCommand, encodeCommand } from "../../src/storage/command.ts";

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}
const N = arg("iterations", 1_000_000);
const ROUNDS = arg("rounds", 7);
const VALUE = arg("value-bytes", 256);

const key = new TextEncoder().encode("bench/key-0001234");
const put = encodeCommand({ kind: CommandKind.Put, key, value: new Uint8Array(VALUE).fill(0x61), meta: 7, expireAt: 1_700_000_000_000 });
const del = encodeCommand({ kind: CommandKind.Delete, key });
const write = encodeApplyResult({ kind: "write", version: 123_456 });

let sink = 0;
function time(decode: () => number): number {
  const t0 = Bun.nanoseconds();
  for (let i = 0; i < N; i++) sink += decode();
  return (Bun.nanoseconds() - t0) / N;
}
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const cases: [string, () => number][] = [
  ["decodeCommand(Put)", () => (decodeCommand(put) as { expireAt: number }).expireAt & 1],
  ["decodeCommand(Delete)", () => decodeCommand(del).kind],
  ["decodeApplyResult(write)", () => (decodeApplyResult(write) as { version: number }).version & 1],
];
for (const [name, fn] of cases) {
  time(fn); // warm-up: let the JIT reach its top tier
  const runs: number[] = [];
  for (let r = 0; r < ROUNDS; r++) runs.push(time(fn));
  console.log(`${name.padEnd(26)} ${median(runs).toFixed(1)} ns/op  (min ${Math.min(...runs).toFixed(1)}, ${N} iterations x ${ROUNDS})`);
}
if (sink === -1) console.log(sink);

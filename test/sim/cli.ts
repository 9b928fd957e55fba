// `bun run sim -- --seeds N [--nodes 3|5] [--seed S] [--first S] [--verbose]`
// Runs seeded simulations; any failure prints its seed, the error and the end of the trace,
// and the process exits non-zero. `--seed S` replays exactly one run.

import { runSimulation } from "./simulator.ts";

function parseArgs(argv: string[]): { seeds: number; nodes: number; seed: number | null; first: number; verbose: boolean; faultTime: number } {
  const out = { seeds: 100, nodes: 3, seed: null as number | null, first: 1, verbose: false, faultTime: 6000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0) throw new Error(`${a} needs a non-negative integer, got ${argv[i]}`);
      return v;
    };
    if (a === "--seeds") out.seeds = val();
    else if (a === "--nodes") out.nodes = val();
    else if (a === "--seed") out.seed = val();
    else if (a === "--first") out.first = val();
    else if (a === "--fault-time") out.faultTime = val();
    else if (a === "--verbose" || a === "-v") out.verbose = true;
    else if (a === "--") continue;
    else throw new Error(`unknown argument ${a}; usage: sim --seeds N [--nodes 3|5] [--seed S] [--first S] [--fault-time T] [--verbose]`);
  }
  if (out.nodes < 1 || out.nodes > 7) throw new Error(`--nodes must be 1..7, got ${out.nodes}`);
  return out;
}

let args;
try {
  args = parseArgs(process.argv.slice(2));
} catch (err) {
  console.error(`sim: ${(err as Error).message}`);
  process.exit(2);
}

const seeds = args.seed !== null ? [args.seed] : Array.from({ length: args.seeds }, (_, i) => args.first + i);
let failed = 0;
const started = Date.now();
/** Proposals committed at two or more log indexes over all runs (the duplicate-Prop fault). */
let duplicatedProposals = 0;
let runsWithDuplicates = 0;
for (const seed of seeds) {
  const r = runSimulation({ seed, nodes: args.nodes, faultTime: args.faultTime, onTrace: args.verbose ? (l) => console.log(l) : undefined });
  duplicatedProposals += r.stats.duplicatedProposals;
  if (r.stats.duplicatedProposals > 0) runsWithDuplicates++;
  if (!r.ok) {
    failed++;
    console.log(`FAIL seed=${seed} nodes=${args.nodes}: ${r.error}`);
    if (!args.verbose) {
      console.log("--- last trace lines ---");
      for (const l of r.trace.slice(-60)) console.log(l);
    }
    console.log(`replay: bun run sim -- --nodes ${args.nodes} --seed ${seed} --verbose`);
  } else if (args.verbose || seeds.length === 1) {
    console.log(`ok seed=${seed} ${JSON.stringify(r.stats)}`);
  }
}
if (seeds.length > 1) console.log(`${duplicatedProposals} proposals committed at two or more log indexes, in ${runsWithDuplicates} runs`);
console.log(`${seeds.length - failed} of ${seeds.length} seeds passed (${args.nodes} nodes, ${((Date.now() - started) / 1000).toFixed(1)}s)`);
process.exit(failed > 0 ? 1 : 0);

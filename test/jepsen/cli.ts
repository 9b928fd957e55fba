// bun run jepsen -- --nodes 3|5 --time SECONDS --nemesis LIST --workload LIST --seed S
//                   [--member-steps LIST] [--restore-check | --no-restore-check]
//                   [--durability-kills N] [--no-bad-input] [--results DIR] [--keep-data]
//                   [--election-timeout MS] [--heartbeat-interval MS] [--clients N]
//                   [--op-timeout MS] [--node-arg FLAG ...] [--quiet]
//
// Runs real ./rbkv processes under seeded faults, checks what users are promised, prints ONE
// verdict line on stdout (progress goes to stderr) and exits 0 only when every check passes.

import { DEFAULT_NEMESES, NEMESES, type NemesisKind } from "./nemesis.ts";
import { MEMBER_STEPS, type MemberStep } from "./member-nemesis.ts";
import { DEFAULT_NODE_ARGS, type JepsenOptions, WORKLOADS, type WorkloadKind, activeClusters, defaultOptions, runJepsen } from "./runner.ts";

const USAGE = `usage: bun run jepsen -- [options]
  --nodes N               cluster size, 3 or 5 (default 3)
  --time S                seconds of workload under faults (default 30; 0 = skip that phase)
  --nemesis LIST          ${NEMESES.join(",")} (comma list; "all" = ${DEFAULT_NEMESES.join(",")},
                          the default; "join" starts without the last node and adds it under
                          load; "none" = no faults)
  --member-steps LIST     the member nemesis's steps, ${MEMBER_STEPS.join(",")}
                          (comma list; default all, run in a seeded cycle)
  --workload LIST         ${WORKLOADS.join(",")} (comma list; default all; "none")
  --seed S                seed of every random choice (default: random, printed)
  --durability-kills N    SIGKILLs mid-burst in the durability phase (default 100; 0 = skip)
  --no-restore-check      skip the end of the durability phase: a Snapshot under writes,
                          restored into a new one-node cluster, every key compared with the
                          source at the snapshot's version
  --no-bad-input          skip the bad-input phase
  --damage                also damage a follower's data files (truncated, flipped byte,
                          zeroed page): it must refuse to start naming the file, or serve
                          exactly what the others serve
  --results DIR           parent of the results folder (default ./jepsen-results)
  --keep-data             keep the nodes' data directories
  --election-timeout MS   (default 500)    --heartbeat-interval MS (default 50)
  --clients N             concurrent clients per workload (default 5; 8 on 5 nodes)
  --op-timeout MS         client deadline per op (default 3000)
  --node-arg FLAG         a flag for every node, repeatable; replaces the defaults
                          (${DEFAULT_NODE_ARGS.join(" ")})
  --quiet                 no progress on stderr`;

function fail(msg: string): never {
  process.stderr.write(`jepsen: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

function list<T extends string>(v: string, all: readonly T[], what: string, dflt: readonly T[] = all): T[] {
  if (v === "none" || v === "") return [];
  const out: T[] = [];
  for (const x of v.split(",").map((s) => s.trim())) {
    if (x === "all") {
      out.push(...dflt);
      continue;
    }
    if (!(all as readonly string[]).includes(x)) fail(`unknown ${what} ${JSON.stringify(x)}`);
    out.push(x as T);
  }
  return [...new Set(out)];
}

function int(v: string | undefined, name: string, min: number, max: number): number {
  const n = Number(v);
  if (v === undefined || !Number.isInteger(n) || n < min || n > max) fail(`--${name} needs an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
  return n;
}

export function parseArgs(argv: string[]): JepsenOptions & { quiet: boolean } {
  const o = { ...defaultOptions(), quiet: false };
  const nodeArgs: string[] = [];
  const args = argv.filter((a) => a !== "--");
  for (let i = 0; i < args.length; i++) {
    let a = args[i]!;
    let v: string | undefined;
    const eq = a.indexOf("=");
    if (a.startsWith("--") && eq > 0) {
      v = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const val = (): string => {
      if (v !== undefined) return v;
      const next = args[++i];
      if (next === undefined) fail(`${a} needs a value`);
      return next;
    };
    switch (a) {
      case "--nodes":
        o.nodes = int(val(), "nodes", 3, 9);
        break;
      case "--time":
        o.timeSec = int(val(), "time", 0, 86_400);
        break;
      case "--nemesis":
        o.nemesis = list<NemesisKind>(val(), NEMESES, "nemesis", DEFAULT_NEMESES);
        break;
      case "--member-steps":
        o.memberSteps = list<MemberStep>(val(), MEMBER_STEPS, "member step");
        break;
      case "--workload":
      case "--workloads":
        o.workloads = list<WorkloadKind>(val(), WORKLOADS, "workload");
        break;
      case "--seed":
        o.seed = int(val(), "seed", 0, 2 ** 32 - 1);
        break;
      case "--durability-kills":
        o.durabilityKills = int(val(), "durability-kills", 0, 100_000);
        break;
      case "--no-restore-check":
        o.restoreCheck = false;
        break;
      case "--restore-check":
        o.restoreCheck = true;
        break;
      case "--no-bad-input":
        o.badInput = false;
        break;
      case "--bad-input":
        o.badInput = true;
        break;
      case "--damage":
        o.damage = true;
        break;
      case "--results":
        o.resultsRoot = val();
        break;
      case "--keep-data":
        o.keepData = true;
        break;
      case "--election-timeout":
        o.electionMs = int(val(), "election-timeout", 50, 60_000);
        break;
      case "--heartbeat-interval":
        o.heartbeatMs = int(val(), "heartbeat-interval", 10, 10_000);
        break;
      case "--clients":
        o.clients = int(val(), "clients", 1, 256);
        break;
      case "--op-timeout":
        o.opTimeoutMs = int(val(), "op-timeout", 100, 600_000);
        break;
      case "--node-arg":
        nodeArgs.push(val());
        break;
      case "--quiet":
        o.quiet = true;
        break;
      case "-h":
      case "--help":
        process.stdout.write(`${USAGE}\n`);
        process.exit(0);
        break;
      default:
        fail(`unknown option ${JSON.stringify(args[i])}`);
    }
  }
  if (nodeArgs.length > 0) o.nodeArgs = nodeArgs;
  return o;
}

function killEverything(): void {
  for (const c of activeClusters) {
    c.killAllSync();
    void c.proxy.stop();
  }
}

if (import.meta.main) {
  const o = parseArgs(process.argv.slice(2));
  const t0 = Date.now();
  if (!o.quiet) o.progress = (s) => process.stderr.write(`[jepsen +${((Date.now() - t0) / 1000).toFixed(1)}s] ${s}\n`);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(sig, () => {
      killEverything();
      process.stdout.write(`jepsen: FAIL interrupted by ${sig} seed=${o.seed}\n`);
      process.exit(130);
    });
  }
  process.on("exit", killEverything);
  // Every phase is bounded on its own; this is the last line of defence against a hang.
  const budgetMs = (o.timeSec + 600 + o.durabilityKills * 40) * 1000;
  const guard = setTimeout(() => {
    killEverything();
    process.stdout.write(`jepsen: FAIL the run exceeded its time budget of ${budgetMs / 1000}s seed=${o.seed}\n`);
    process.exit(3);
  }, budgetMs);
  try {
    const r = await runJepsen(o);
    clearTimeout(guard);
    process.stdout.write(`${r.line}\n`);
    process.exit(r.pass ? 0 : 1);
  } catch (err) {
    killEverything();
    process.stdout.write(`jepsen: FAIL harness error: ${(err as Error).stack ?? String(err)} seed=${o.seed}\n`);
    process.exit(1);
  }
}

// The seeded simulator as part of the suite: hundreds of randomized runs with crashes,
// partitions, message loss/duplication/reordering, membership changes, transfers and
// snapshots. A failure names its seed; `bun run sim -- --seed S --verbose` replays it.

import { describe, expect, test } from "bun:test";
import { runSimulation } from "./simulator.ts";

const TIMEOUT = 180_000;

/** Over every run of this file so far: some claims need more runs than one test can afford. */
const suite = { runs: 0, duplicatedProposals: 0 };

function runSeeds(nodes: number, first: number, count: number): string[] {
  const failures: string[] = [];
  for (let seed = first; seed < first + count; seed++) {
    const r = runSimulation({ seed, nodes });
    suite.runs++;
    suite.duplicatedProposals += r.stats.duplicatedProposals;
    if (!r.ok) failures.push(`seed ${seed} (${nodes} nodes): ${r.error}\n${r.trace.slice(-25).join("\n")}`);
  }
  return failures;
}

describe("simulated 3-node clusters", () => {
  for (let chunk = 0; chunk < 12; chunk++) {
    const first = 1 + chunk * 50;
    test(`seeds ${first}..${first + 49}`, () => {
      expect(runSeeds(3, first, 50)).toEqual([]);
    }, TIMEOUT);
  }
});

describe("simulated 5-node clusters", () => {
  for (let chunk = 0; chunk < 6; chunk++) {
    const first = 10_001 + chunk * 50;
    test(`seeds ${first}..${first + 49}`, () => {
      expect(runSeeds(5, first, 50)).toEqual([]);
    }, TIMEOUT);
  }
});

describe("simulated single-node clusters", () => {
  test("seeds 20001..20100", () => {
    expect(runSeeds(1, 20_001, 100)).toEqual([]);
  }, TIMEOUT);
});

describe("the simulator itself", () => {
  test("a seed replays exactly", () => {
    const a = runSimulation({ seed: 4242, nodes: 3 });
    const b = runSimulation({ seed: 4242, nodes: 3 });
    expect(a.ok).toBe(true);
    // Everything but the checker's wall-clock time must be identical.
    expect({ ...b.stats, checkMs: 0 }).toEqual({ ...a.stats, checkMs: 0 });
    expect(b.trace).toEqual(a.trace);
  });

  test("runs exercise the faults they claim to", () => {
    const totals = { crashes: 0, partitions: 0, confChanges: 0, transfers: 0, snapshotsSent: 0, dropped: 0, opsOk: 0, leadersElected: 0 };
    for (let seed = 1; seed <= 30; seed++) {
      const r = runSimulation({ seed, nodes: 3 });
      for (const k of Object.keys(totals) as (keyof typeof totals)[]) totals[k] += r.stats[k];
    }
    for (const [k, v] of Object.entries(totals)) expect({ [k]: v > 0 }).toEqual({ [k]: true });
    // Enough completed operations for the linearizability check to mean something.
    expect(totals.opsOk).toBeGreaterThan(30 * 100);
  }, TIMEOUT);

  test("duplicated Props reach the log: some proposal is committed at two indexes", () => {
    // About one run in seven has one (a forwarded Prop duplicated by the network): too rare for
    // 30 seeds, so this counts over the runs above (or runs its own when they were filtered out).
    if (suite.runs < 100) runSeeds(3, 1, 100);
    expect(suite.duplicatedProposals).toBeGreaterThan(0);
  }, TIMEOUT);
});

// At-most-once application of proposals, checked on what each node's state machine actually did
// (whether it applied the command, and the verdict of its dedupe window, see kv.ts), after every
// entry any node applies:
//  - no proposal (origin, counter) is applied at two different log indexes, on any node or
//    across nodes (the leader appends every copy of a forwarded proposal it receives: the
//    network duplicates messages);
//  - every node does the same at the same index (determinism: all replicas admit the
//    same set of proposals at the same indexes, whether they applied every entry or restored a
//    snapshot in between);
//  - a copy refused as a duplicate had really been admitted at an earlier index (else the
//    window dropped a write that was never applied).
// It also counts the proposals that were committed at two or more indexes, so that a run can
// show the duplicate-proposal situation really happened.

import type { KvApplied } from "./kv.ts";
import { SafetyViolation } from "./violation.ts";

export class AtMostOnceChecker {
  /** Proposal key ("origin:counter") -> the index where it was admitted. */
  private readonly admittedAt = new Map<string, number>();
  /** Index -> what the state machine did there (applied or not, and the window's verdict), and which node did it first. */
  private readonly outcomeAt = new Map<number, { outcome: string; node: string }>();
  /** Proposal key -> the first index it was committed at (any verdict), and whether seen twice. */
  private readonly firstCopy = new Map<string, { index: number; counted: boolean }>();
  /** Proposals committed at two or more indexes. */
  duplicatedProposals = 0;
  /** Copies refused because they were older than the window (never applied, outcome unknown). */
  refusedTooOld = 0;

  /** `label` names an origin for the messages (the node incarnation that proposed). */
  constructor(private readonly label: (origin: string) => string) {}

  /** Node `node` applied the entry at `index` with this outcome. */
  applied(node: string, index: number, a: KvApplied): void {
    // Judged by what the state machine did (a.applied), not by what its window said: a state
    // machine that computes the verdict and then applies the copy anyway must fail here.
    const outcome = `${a.applied ? "applied" : "not applied"} (${a.verdict ?? "no envelope"})`;
    const key = a.proposal ? `${a.proposal.origin}:${a.proposal.counter}` : null;
    const name = a.proposal ? `proposal ${a.proposal.counter} of ${this.label(a.proposal.origin)}` : "the entry";
    const seen = this.outcomeAt.get(index);
    if (seen && seen.outcome !== outcome) {
      throw new SafetyViolation(`at-most-once determinism: at index ${index} ${node} ${outcome} ${name} but ${seen.node} ${seen.outcome}`);
    }
    if (!seen) this.outcomeAt.set(index, { outcome, node });
    if (key === null) return;

    const first = this.firstCopy.get(key);
    if (!first) this.firstCopy.set(key, { index, counted: false });
    else if (first.index !== index && !first.counted) {
      first.counted = true;
      this.duplicatedProposals++;
    }

    const at = this.admittedAt.get(key);
    if (a.applied) {
      if (at !== undefined && at !== index) {
        throw new SafetyViolation(`at-most-once: ${name} applied at two log indexes, ${at} and ${index} (${node} applied the copy at ${index})`);
      }
      this.admittedAt.set(key, index);
    } else if (a.verdict === "duplicate") {
      if (at === undefined || at >= index) {
        throw new SafetyViolation(`at-most-once: ${node} refused ${name} at ${index} as a duplicate, but it was ${at === undefined ? "never applied" : `applied at ${at}, later`}`);
      }
    } else if (a.verdict === "too-old" && !seen) this.refusedTooOld++;
  }
}

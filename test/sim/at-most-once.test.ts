// At-most-once application of a forwarded proposal delivered twice, on real RaftCores, and the
// checker that guards it in every simulated run (at-most-once.ts).
//
// The scenario the simulator's network produces now and then, forced here step by step: a
// follower passes a put to the leader (Prop); the network delivers that message twice, the
// second copy late, after the key was deleted. The leader appends both copies, so the put is
// committed at two log indexes; without the state machine's window the late copy would bring
// the deleted value back.

import { describe, expect, test } from "bun:test";
import { ProposalIds, wrapProposal } from "../../src/node/proposal-id.ts";
import { RaftCore, RaftState, bootstrapEntries } from "../../src/raft/core.ts";
import { EntryType, type Message, MessageType } from "../../src/raft/messages.ts";
import { MemoryStorage } from "../../src/raft/storage.ts";
import { PRUNE_EVERY, PRUNE_IDLE_ENTRIES } from "../../src/storage/proposal-dedupe.ts";
import { AtMostOnceChecker } from "./at-most-once.ts";
import { type KvApplied, KvStateMachine, encodeCommand, originHex } from "./kv.ts";
import { SafetyViolation } from "./violation.ts";

interface Member {
  core: RaftCore;
  storage: MemoryStorage;
  fsm: KvStateMachine;
  ids: ProposalIds;
  /** Every entry this node applied and what its state machine did with it. */
  applied: { index: number; outcome: KvApplied }[];
}

class Cluster {
  readonly members = new Map<string, Member>();
  private readonly inFlight: Message[] = [];
  readonly checker = new AtMostOnceChecker((o) => [...this.members].find(([, m]) => originHex(m.ids.origin) === o)?.[0] ?? o);
  /** Prop messages taken off the wire instead of delivered (see holdProps). */
  readonly held: Message[] = [];
  holdProps = false;
  /** What the checker found (collected, so that the test's own assertions run as well). */
  readonly violations: string[] = [];

  constructor(ids: string[]) {
    for (const id of ids) {
      const storage = new MemoryStorage();
      const boot = bootstrapEntries(ids);
      storage.append(boot);
      storage.setHardState({ term: 1, vote: "", commit: boot.length });
      const core = new RaftCore({ id, storage, electionTick: 10, heartbeatTick: 2, random: () => 0 });
      this.members.set(id, { core, storage, fsm: new KvStateMachine(), ids: new ProposalIds(), applied: [] });
    }
  }

  member(id: string): Member {
    return this.members.get(id)!;
  }

  /** Runs every node's ready() and delivers every message until nothing is left to do. */
  settle(): void {
    for (let round = 0; round < 1000; round++) {
      let busy = false;
      for (const [id, m] of this.members) {
        while (m.core.hasReady()) {
          busy = true;
          const rd = m.core.ready();
          if (rd.entries.length > 0) m.storage.append(rd.entries);
          if (rd.hardState) m.storage.setHardState(rd.hardState);
          this.inFlight.push(...rd.messages, ...rd.messagesAfterPersist);
          for (const e of rd.committedEntries) {
            const outcome = m.fsm.apply(e.index, e.type === EntryType.Normal ? e.data : null);
            try {
              this.checker.applied(id, e.index, outcome);
            } catch (err) {
              if (!(err instanceof SafetyViolation)) throw err;
              this.violations.push(err.message);
            }
            m.applied.push({ index: e.index, outcome });
          }
          m.core.advance();
        }
      }
      const batch = this.inFlight.splice(0);
      for (const msg of batch) {
        busy = true;
        if (this.holdProps && msg.type === MessageType.Prop) this.held.push(msg);
        else this.member(msg.to).core.step(msg);
      }
      if (!busy) return;
    }
    throw new Error("cluster did not settle");
  }

  deliver(msg: Message): void {
    this.member(msg.to).core.step(msg);
    this.settle();
  }

  /** Where (index, outcome) each node applied the client op `opId`, whatever the verdict. */
  copiesOf(id: string, opId: number): { index: number; outcome: KvApplied }[] {
    return this.member(id).applied.filter((a) => a.outcome.cmd?.opId === opId);
  }
}

describe("a forwarded proposal delivered twice", () => {
  test("is committed at two indexes and applied at one, on every node", () => {
    const c = new Cluster(["n1", "n2", "n3"]);
    c.member("n1").core.campaignNow();
    c.settle();
    expect(c.member("n1").core.state).toBe(RaftState.Leader);

    // n2 follows n1 and passes the put on; the network will deliver that Prop twice.
    const n2 = c.member("n2");
    c.holdProps = true;
    n2.core.proposeOrForward(wrapProposal(n2.ids.origin, n2.ids.next(), encodeCommand({ kind: "put", opId: 1, key: "k", value: "v1" })));
    c.settle();
    c.holdProps = false;
    expect(c.held.length).toBe(1);
    const prop = c.held[0]!;
    c.deliver(prop);
    for (const m of c.members.values()) expect(m.fsm.data.get("k")).toBe("v1");

    // The key is deleted; then the second copy of the Prop arrives.
    const n1 = c.member("n1");
    n1.core.propose(wrapProposal(n1.ids.origin, n1.ids.next(), encodeCommand({ kind: "delete", opId: 2, key: "k" })));
    c.settle();
    c.deliver(prop);

    for (const [id, m] of c.members) {
      const copies = c.copiesOf(id, 1);
      // The situation really happened: the put sits at two indexes of the log.
      expect(copies.length).toBe(2);
      expect(copies[0]!.index).not.toBe(copies[1]!.index);
      // The late copy did not bring the deleted value back: it was not applied.
      expect({ id, value: m.fsm.data.get("k") }).toEqual({ id, value: undefined });
      expect(copies.map((a) => [a.outcome.verdict, a.outcome.applied])).toEqual([["admit", true], ["duplicate", false]]);
    }
    // Every node admitted it at the same index.
    const admitted = [...c.members.keys()].map((id) => c.copiesOf(id, 1)[0]!.index);
    expect(new Set(admitted).size).toBe(1);
    expect(c.checker.duplicatedProposals).toBe(1);
    expect(c.violations).toEqual([]);
  });

  test("a node restored from a snapshot taken between the copies refuses the late copy too", () => {
    const fsm = new KvStateMachine();
    const ids = new ProposalIds();
    const put = wrapProposal(ids.origin, ids.next(), encodeCommand({ kind: "put", opId: 1, key: "k", value: "v1" }));
    expect(fsm.apply(1, put).applied).toBe(true);
    expect(fsm.apply(2, wrapProposal(ids.origin, ids.next(), encodeCommand({ kind: "delete", opId: 2, key: "k" }))).applied).toBe(true);
    const restored = KvStateMachine.decode(fsm.encode());
    const late = restored.apply(3, put);
    expect([late.verdict, late.applied]).toEqual(["duplicate", false]);
    expect(restored.data.has("k")).toBe(false);
  });

  test("the window of an idle origin is forgotten at a PRUNE_EVERY index, not before", () => {
    const fsm = new KvStateMachine();
    const idle = new ProposalIds();
    const put = wrapProposal(idle.origin, idle.next(), encodeCommand({ kind: "put", opId: 1, key: "k", value: "v1" }));
    fsm.apply(1, put);
    // The first multiple of PRUNE_EVERY at which index 1 is more than PRUNE_IDLE_ENTRIES old.
    const pruneAt = Math.ceil((PRUNE_IDLE_ENTRIES + 2) / PRUNE_EVERY) * PRUNE_EVERY;
    fsm.apply(pruneAt - 1, null);
    expect(fsm.proposals.has(originHex(idle.origin))).toBe(true);
    fsm.apply(pruneAt, null);
    expect(fsm.proposals.has(originHex(idle.origin))).toBe(false);
  });
});

describe("the at-most-once checker", () => {
  const origin = "00112233445566aa";
  const put = (applied: boolean, verdict: KvApplied["verdict"]): KvApplied => ({
    cmd: { kind: "put", opId: 1, key: "k", value: "v" }, proposal: { origin, counter: 1 }, verdict, applied,
  });

  test("fails when a proposal is applied at two indexes", () => {
    const c = new AtMostOnceChecker(() => "n1#1");
    c.applied("n1", 5, put(true, "admit"));
    c.applied("n2", 5, put(true, "admit"));
    expect(() => c.applied("n1", 7, put(true, "admit"))).toThrow(new SafetyViolation("at-most-once: proposal 1 of n1#1 applied at two log indexes, 5 and 7 (n1 applied the copy at 7)"));
  });

  test("fails when a state machine applies a copy its window called a duplicate", () => {
    const c = new AtMostOnceChecker(() => "n1#1");
    c.applied("n1", 5, put(true, "admit"));
    expect(() => c.applied("n1", 7, put(true, "duplicate"))).toThrow(/applied at two log indexes, 5 and 7/);
  });

  test("fails when two nodes do different things at one index", () => {
    const c = new AtMostOnceChecker(() => "n1#1");
    c.applied("n1", 5, put(true, "admit"));
    c.applied("n1", 7, put(false, "duplicate"));
    expect(() => c.applied("n2", 7, put(true, "admit"))).toThrow(/at-most-once determinism: at index 7 n2 applied \(admit\) proposal 1 of n1#1 but n1 not applied \(duplicate\)/);
  });

  test("fails when a copy is refused as a duplicate of nothing", () => {
    const c = new AtMostOnceChecker(() => "n1#1");
    expect(() => c.applied("n1", 7, put(false, "duplicate"))).toThrow(/refused proposal 1 of n1#1 at 7 as a duplicate, but it was never applied/);
  });

  test("counts a proposal committed at two indexes once, and passes when it is applied once", () => {
    const c = new AtMostOnceChecker(() => "n1#1");
    for (const n of ["n1", "n2", "n3"]) {
      c.applied(n, 5, put(true, "admit"));
      c.applied(n, 7, put(false, "duplicate"));
      c.applied(n, 9, put(false, "duplicate"));
    }
    expect(c.duplicatedProposals).toBe(1);
  });
});

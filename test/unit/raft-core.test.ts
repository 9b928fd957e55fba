// Focused scenarios for RaftCore, driven by hand so each step is visible. The seeded
// simulator covers the random interleavings; these pin down specific rules.

import { describe, expect, test } from "bun:test";
import { ProposalDroppedError, RaftCore, RaftState, bootstrapEntries } from "../../src/raft/core.ts";
import { ConfChangeType, type Entry, EntryType, type Message, MessageType, type NodeId, encodeConfChange } from "../../src/raft/messages.ts";
import { MemoryStorage } from "../../src/raft/storage.ts";

const enc = new TextEncoder();

interface Member {
  core: RaftCore;
  storage: MemoryStorage;
  applied: Entry[];
  reads: { index: number; context: number }[];
}

/** A cluster whose messages are delivered only when asked, in order. */
class Cluster {
  readonly members = new Map<NodeId, Member>();
  inbox: Message[] = [];
  /** Links that drop messages: "a>b". */
  cut = new Set<string>();

  constructor(ids: NodeId[], opts: { preVote?: boolean; checkQuorum?: boolean } = {}) {
    for (const id of ids) {
      const storage = new MemoryStorage();
      const boot = bootstrapEntries(ids);
      storage.append(boot);
      storage.setHardState({ term: 1, vote: "", commit: boot.length });
      this.add(id, storage, opts);
    }
  }

  add(id: NodeId, storage: MemoryStorage, opts: { preVote?: boolean; checkQuorum?: boolean } = {}): Member {
    let seed = id.charCodeAt(id.length - 1);
    const core = new RaftCore({
      id,
      storage,
      electionTick: 10,
      heartbeatTick: 1,
      random: () => ((seed = (seed * 48271) % 2147483647) / 2147483647),
      preVote: opts.preVote,
      checkQuorum: opts.checkQuorum,
    });
    const m: Member = { core, storage, applied: [], reads: [] };
    this.members.set(id, m);
    return m;
  }

  get(id: NodeId): Member {
    return this.members.get(id)!;
  }

  /** Runs one ready/advance cycle on a member, persisting everything (a well-behaved node). */
  flush(id: NodeId): void {
    const m = this.get(id);
    while (m.core.hasReady()) {
      const rd = m.core.ready();
      this.inbox.push(...rd.messages);
      if (rd.snapshot) m.storage.applySnapshot(rd.snapshot);
      m.storage.append(rd.entries);
      if (rd.hardState) m.storage.setHardState(rd.hardState);
      this.inbox.push(...rd.messagesAfterPersist);
      m.applied.push(...rd.committedEntries);
      m.reads.push(...rd.readStates);
      m.core.advance();
    }
  }

  /** Delivers messages (and their consequences) until the network is quiet. */
  settle(limit = 10_000): void {
    for (const id of this.members.keys()) this.flush(id);
    for (let n = 0; this.inbox.length > 0; n++) {
      if (n > limit) throw new Error("cluster did not settle");
      const msg = this.inbox.shift()!;
      if (this.cut.has(`${msg.from}>${msg.to}`)) continue;
      const to = this.members.get(msg.to);
      if (!to) continue;
      to.core.step(msg);
      this.flush(msg.to);
    }
  }

  tick(id: NodeId, n = 1): void {
    for (let i = 0; i < n; i++) this.get(id).core.tick();
    this.flush(id);
  }

  elect(id: NodeId): void {
    this.tick(id, 40);
    this.settle();
    expect(this.get(id).core.state).toBe(RaftState.Leader);
  }

  isolate(id: NodeId): void {
    for (const other of this.members.keys()) {
      if (other !== id) {
        this.cut.add(`${id}>${other}`);
        this.cut.add(`${other}>${id}`);
      }
    }
  }

  heal(): void {
    this.cut.clear();
  }
}

function normalData(m: Member): string[] {
  return m.applied.filter((e) => e.type === EntryType.Normal && e.data.byteLength > 0).map((e) => new TextDecoder().decode(e.data));
}

describe("election", () => {
  test("a single voter elects itself and commits its proposals once persisted", () => {
    const c = new Cluster(["a"]);
    c.elect("a");
    const a = c.get("a");
    const { index } = a.core.propose(enc.encode("x"));
    // Nothing is committed before the leader's own append is persisted (advance).
    expect(a.core.log.committed).toBeLessThan(index);
    c.flush("a");
    expect(a.core.log.committed).toBe(index);
    expect(normalData(a)).toEqual(["x"]);
  });

  test("a candidate with a stale log gets no votes", () => {
    const c = new Cluster(["a", "b", "c"]);
    c.elect("a");
    c.isolate("c");
    c.get("a").core.propose(enc.encode("only on a and b"));
    c.settle();
    c.heal();
    // c campaigns with a shorter log; a and b refuse (and c's pre-vote does not bump terms).
    const before = c.get("a").core.term;
    c.tick("c", 40);
    c.settle();
    expect(c.get("c").core.state).not.toBe(RaftState.Leader);
    expect(c.get("a").core.term).toBe(before);
  });

  test("without pre-vote, a rejoining partitioned node disrupts; with it, it does not", () => {
    for (const preVote of [false, true]) {
      const c = new Cluster(["a", "b", "c"], { preVote, checkQuorum: false });
      c.elect("a");
      c.isolate("c");
      c.get("a").core.propose(enc.encode("c misses this"));
      c.settle();
      const term = c.get("a").core.term;
      c.tick("c", 100);
      c.settle();
      c.heal();
      c.tick("c", 40);
      c.settle();
      if (preVote) expect(c.get("a").core.term).toBe(term);
      else expect(c.get("a").core.term).toBeGreaterThan(term);
    }
  });

  test("vote responses and vote requests wait for the vote to be persisted", () => {
    const c = new Cluster(["a", "b", "c"], { preVote: false });
    const a = c.get("a").core;
    for (let i = 0; i < 40 && a.state !== RaftState.Candidate; i++) a.tick();
    const rd = a.ready();
    expect(rd.hardState?.vote).toBe("a");
    expect(rd.messages.filter((m) => m.type === MessageType.Vote)).toEqual([]);
    expect(rd.messagesAfterPersist.filter((m) => m.type === MessageType.Vote).length).toBe(2);
    a.advance();
  });

  test("a single voter sends nothing of its new term before that term is persisted", () => {
    // With a learner to replicate to, a one-voter leader elected within one tick must not let
    // AppendEntries of the new term out before the term is on disk: after a crash it would win
    // that term again and write different entries under the same (index, term).
    const storage = new MemoryStorage();
    storage.append([
      ...bootstrapEntries(["a"]),
      { term: 1, index: 2, type: EntryType.ConfChange, data: encodeConfChange({ type: ConfChangeType.AddLearner, nodeId: "l", context: new Uint8Array(0) }) },
    ]);
    storage.setHardState({ term: 1, vote: "", commit: 2 });
    const a = new RaftCore({ id: "a", storage, electionTick: 10, heartbeatTick: 1, random: () => 0 });
    for (let i = 0; i < 40 && a.state !== RaftState.Leader; i++) a.tick();
    expect(a.state).toBe(RaftState.Leader);
    a.propose(enc.encode("x"));
    const rd = a.ready();
    expect(rd.hardState?.term).toBe(a.term);
    expect(rd.messages).toEqual([]);
    expect(rd.messagesAfterPersist.some((m) => m.type === MessageType.App && m.to === "l")).toBe(true);
    a.advance();
  });

  test("a follower turns only its leader's ReadIndex answers into read states", () => {
    const c = new Cluster(["a", "b", "c"]);
    c.elect("a");
    c.settle();
    const b = c.get("b");
    b.core.step({ ...msg(MessageType.ReadIndexResp, "c", b.core.term), to: "b", index: 99, context: 5 });
    b.core.step({ ...msg(MessageType.ReadIndexResp, "a", b.core.term), to: "b", index: 3, context: 6 });
    c.flush("b");
    expect(b.reads).toEqual([{ index: 3, context: 6 }]);
  });

  test("checkQuorum: an isolated leader steps down", () => {
    const c = new Cluster(["a", "b", "c"]);
    c.elect("a");
    c.isolate("a");
    c.tick("a", 25);
    expect(c.get("a").core.state).toBe(RaftState.Follower);
  });
});

describe("replication and commit", () => {
  test("entries commit once a majority persisted them, and every member applies them in order", () => {
    const c = new Cluster(["a", "b", "c"]);
    c.elect("a");
    for (const v of ["1", "2", "3"]) c.get("a").core.propose(enc.encode(v));
    c.settle();
    c.tick("a", 2);
    c.settle();
    for (const id of ["a", "b", "c"]) expect(normalData(c.get(id))).toEqual(["1", "2", "3"]);
  });

  test("a leader never commits an entry of an earlier term by counting replicas (Figure 8)", () => {
    // a's log: the bootstrap entries (term 1, 1..5), then entries 6 and 7 of term 2 that may
    // never have reached a majority. a wins term 4 and learns that b and c hold up to 7.
    const storage = new MemoryStorage();
    const ids = ["a", "b", "c", "d", "e"];
    storage.append([
      ...bootstrapEntries(ids),
      { term: 2, index: 6, type: EntryType.Normal, data: enc.encode("x") },
      { term: 2, index: 7, type: EntryType.Normal, data: enc.encode("y") },
    ]);
    storage.setHardState({ term: 3, vote: "", commit: 5 });
    const a = new RaftCore({ id: "a", storage, electionTick: 10, heartbeatTick: 1, random: () => 0, preVote: false });
    for (let i = 0; i < 20 && a.state !== RaftState.Candidate; i++) a.tick();
    const persist = (): Message[] => {
      const rd = a.ready();
      storage.append(rd.entries);
      if (rd.hardState) storage.setHardState(rd.hardState);
      a.advance();
      return [...rd.messages, ...rd.messagesAfterPersist];
    };
    persist();
    for (const from of ["b", "c"]) {
      a.step({ ...msg(MessageType.VoteResp, from, 4) });
    }
    expect(a.state).toBe(RaftState.Leader);
    persist();
    expect(a.log.lastIndex()).toBe(8); // the no-op of term 4
    for (const from of ["b", "c"]) a.step({ ...msg(MessageType.AppResp, from, 4), index: 7 });
    persist();
    // Entry 7 is on a majority (a, b, c) but is of term 2: not committed by counting.
    expect(a.log.committed).toBe(5);
    for (const from of ["b", "c"]) a.step({ ...msg(MessageType.AppResp, from, 4), index: 8 });
    persist();
    // Once the term-4 no-op is on a majority, it and everything before it commit.
    expect(a.log.committed).toBe(8);
  });

  test("a follower that fell behind a compacted log catches up from a snapshot", () => {
    const c = new Cluster(["a", "b", "c"]);
    c.elect("a");
    c.isolate("c");
    for (let i = 0; i < 20; i++) c.get("a").core.propose(enc.encode(`v${i}`));
    c.settle();
    const a = c.get("a");
    const applied = a.core.log.applied;
    a.storage.createSnapshot(applied, a.core.confAt(applied), enc.encode("image"));
    a.storage.compact(applied);
    c.heal();
    c.tick("a", 3);
    c.settle();
    reportSnapshots(c);
    c.tick("a", 3);
    c.settle();
    const cc = c.get("c");
    expect(cc.storage.snapshot().meta.index).toBe(applied);
    expect(cc.core.log.committed).toBeGreaterThanOrEqual(applied);
  });
});

function msg(type: MessageType, from: NodeId, term: number): Message {
  return { type, from, to: "a", term, logTerm: 0, index: 0, entries: [], commit: 0, reject: false, rejectHint: 0, snapshot: null, context: 0 };
}

function reportSnapshots(c: Cluster): void {
  const a = c.get("a").core;
  for (const p of a.status().progress) if (p.id !== "a") a.reportSnapshot(p.id, true);
  c.flush("a");
}

describe("linearizable reads (ReadIndex)", () => {
  test("the leader answers a read only after a quorum acknowledged a heartbeat sent after it", () => {
    const c = new Cluster(["a", "b", "c"]);
    c.elect("a");
    c.settle();
    const a = c.get("a");
    a.core.readIndex(7);
    c.flush("a");
    expect(a.reads).toEqual([]);
    c.settle();
    expect(a.reads.map((r) => r.context)).toEqual([7]);
    expect(a.reads[0]!.index).toBe(a.core.log.committed);
  });

  test("an isolated leader never answers a read", () => {
    const c = new Cluster(["a", "b", "c"]);
    c.elect("a");
    c.isolate("a");
    c.get("a").core.readIndex(1);
    c.settle();
    c.tick("a", 5);
    c.settle();
    expect(c.get("a").reads).toEqual([]);
  });

  test("a follower gets a read index from the leader", () => {
    const c = new Cluster(["a", "b", "c"]);
    c.elect("a");
    c.settle();
    expect(c.get("b").core.readIndex(9)).toBe(true);
    c.settle();
    expect(c.get("b").reads.map((r) => r.context)).toEqual([9]);
  });

  test("a follower that knows no leader refuses at once", () => {
    const c = new Cluster(["a", "b", "c"]);
    expect(c.get("b").core.readIndex(1)).toBe(false);
  });
});

describe("membership", () => {
  test("a new learner catches up, is promoted, and a second change waits for the first", () => {
    const c = new Cluster(["a", "b", "c"]);
    c.elect("a");
    const a = c.get("a").core;
    c.add("d", new MemoryStorage());
    a.proposeConfChange({ type: ConfChangeType.AddLearner, nodeId: "d", context: new Uint8Array(0) });
    expect(() => a.proposeConfChange({ type: ConfChangeType.AddVoter, nodeId: "d", context: new Uint8Array(0) })).toThrow(ProposalDroppedError);
    c.settle();
    c.tick("a", 3);
    c.settle();
    expect(a.conf().learners).toEqual(["d"]);
    expect(c.get("d").core.log.lastIndex()).toBe(a.log.lastIndex());
    a.proposeConfChange({ type: ConfChangeType.AddVoter, nodeId: "d", context: new Uint8Array(0) });
    c.settle();
    expect(a.conf().voters).toEqual(["a", "b", "c", "d"]);
    expect(c.get("d").core.conf().voters).toEqual(["a", "b", "c", "d"]);
  });

  test("a removed leader steps down once its removal commits, and the rest elect a leader", () => {
    const c = new Cluster(["a", "b", "c"]);
    c.elect("a");
    const a = c.get("a").core;
    a.proposeConfChange({ type: ConfChangeType.RemoveNode, nodeId: "a", context: new Uint8Array(0) });
    c.settle();
    // It hands over with TimeoutNow to an up-to-date voter, so no election timeout is needed.
    expect(a.state).toBe(RaftState.Follower);
    const leaders = ["b", "c"].filter((id) => c.get(id).core.state === RaftState.Leader);
    expect(leaders.length).toBe(1);
    expect(c.get(leaders[0]!).core.conf().voters).toEqual(["b", "c"]);
  });

  test("the last voter cannot be removed", () => {
    const c = new Cluster(["a"]);
    c.elect("a");
    expect(() => c.get("a").core.proposeConfChange({ type: ConfChangeType.RemoveNode, nodeId: "a", context: new Uint8Array(0) })).toThrow(ProposalDroppedError);
  });
});

describe("leadership transfer", () => {
  test("the target becomes leader; proposals are refused meanwhile", () => {
    const c = new Cluster(["a", "b", "c"]);
    c.elect("a");
    const a = c.get("a").core;
    expect(a.transferLeadership("b")).toBe(true);
    c.settle();
    expect(c.get("b").core.state).toBe(RaftState.Leader);
    expect(a.state).toBe(RaftState.Follower);
    expect(() => a.propose(enc.encode("x"))).toThrow(ProposalDroppedError);
  });
});

describe("restart", () => {
  test("a restarted node hands out committed entries after its state machine's applied index (WAL replay)", () => {
    const c = new Cluster(["a"]);
    c.elect("a");
    for (const v of ["1", "2", "3"]) c.get("a").core.propose(enc.encode(v));
    c.flush("a");
    const storage = c.get("a").storage;
    const fsmApplied = 2; // the state machine had flushed through the bootstrap entry and the no-op
    const restarted = new RaftCore({ id: "a", storage, electionTick: 10, heartbeatTick: 1, random: () => 0.5, applied: fsmApplied });
    const rd = restarted.ready();
    expect(rd.committedEntries.map((e) => new TextDecoder().decode(e.data))).toEqual(["1", "2", "3"]);
    restarted.advance();
  });

  test("a state machine behind the log's snapshot is refused with a clear error", () => {
    const storage = new MemoryStorage();
    storage.append(bootstrapEntries(["a"]));
    storage.setHardState({ term: 1, vote: "", commit: 1 });
    storage.createSnapshot(1, { voters: ["a"], learners: [] }, new Uint8Array(0));
    storage.compact(1);
    expect(() => new RaftCore({ id: "a", storage, electionTick: 10, heartbeatTick: 1, random: () => 0.5, applied: 0 })).toThrow(/behind the log's snapshot/);
  });
});

describe("campaignNow", () => {
  test("a sole voter asked to campaign leads at once, without waiting for a timeout", () => {
    const c = new Cluster(["a"]);
    c.get("a").core.campaignNow();
    c.flush("a");
    expect(c.get("a").core.state).toBe(RaftState.Leader);
  });
});

// The in-memory storage contract (which the LMDB storage will also meet), the unstable log,
// quorum arithmetic, configuration changes and the entry codec.

import { describe, expect, test } from "bun:test";
import { RaftLog, RaftLogError } from "../../src/raft/log.ts";
import { ConfHistory, applyConfChange } from "../../src/raft/membership.ts";
import { ConfChangeDecodeError, ConfChangeType, type Entry, EntryType, decodeConfChange, encodeConfChange } from "../../src/raft/messages.ts";
import { VoteResult, majorityValue, tallyVotes } from "../../src/raft/quorum.ts";
import { MemoryStorage, StorageError } from "../../src/raft/storage.ts";

function ents(from: number, terms: number[]): Entry[] {
  return terms.map((term, i) => ({ term, index: from + i, type: EntryType.Normal, data: new Uint8Array([i]) }));
}

describe("MemoryStorage", () => {
  test("append truncates a conflicting suffix and refuses gaps", () => {
    const s = new MemoryStorage();
    s.append(ents(1, [1, 1, 1, 1]));
    s.append(ents(3, [2, 2]));
    expect([s.term(2), s.term(3), s.term(4), s.lastIndex()]).toEqual([1, 2, 2, 4]);
    expect(() => s.append(ents(7, [2]))).toThrow(StorageError);
  });

  test("compaction keeps the term of the last compacted entry and refuses compacted reads", () => {
    const s = new MemoryStorage();
    s.append(ents(1, [1, 1, 2, 2, 3]));
    s.createSnapshot(3, { voters: ["a"], learners: [] }, new Uint8Array([9]));
    s.compact(3);
    expect(s.firstIndex()).toBe(4);
    expect(s.term(3)).toBe(2);
    expect(s.term(2)).toBeUndefined();
    expect(() => s.entries(2, 5, Infinity)).toThrow(StorageError);
    expect(s.entries(4, 6, Infinity).map((e) => e.term)).toEqual([2, 3]);
    expect(s.snapshot().meta).toEqual({ index: 3, term: 2, conf: { voters: ["a"], learners: [] } });
  });

  test("entries stop at the byte budget but always return at least one", () => {
    const s = new MemoryStorage();
    s.append(ents(1, [1, 1, 1]));
    expect(s.entries(1, 4, 1).length).toBe(1);
    expect(s.entries(1, 4, 50).length).toBe(2);
  });

  test("applying a snapshot replaces the log", () => {
    const s = new MemoryStorage();
    s.append(ents(1, [1, 1]));
    s.applySnapshot({ meta: { index: 10, term: 4, conf: { voters: ["a", "b"], learners: [] } }, data: new Uint8Array() });
    expect([s.firstIndex(), s.lastIndex(), s.term(10)]).toEqual([11, 10, 4]);
    expect(s.initialState().conf.voters).toEqual(["a", "b"]);
  });
});

describe("RaftLog", () => {
  test("maybeAppend rejects a mismatch, skips what matches and truncates what conflicts", () => {
    const s = new MemoryStorage();
    s.append(ents(1, [1, 1, 1]));
    const log = new RaftLog(s);
    expect(log.maybeAppend(3, 2, 0, ents(4, [2]))).toBeNull();
    expect(log.maybeAppend(1, 1, 0, ents(2, [1, 1]))).toEqual({ lastNew: 3, appendedFrom: 0 });
    expect(log.maybeAppend(1, 1, 2, ents(2, [1, 3, 3]))).toEqual({ lastNew: 4, appendedFrom: 3 });
    expect([log.term(3), log.lastIndex(), log.committed]).toEqual([3, 4, 2]);
    // Entries up to the commit index can never be replaced.
    expect(() => log.maybeAppend(1, 1, 2, ents(2, [5]))).toThrow(RaftLogError);
  });

  test("findConflictByTerm skips a whole term", () => {
    const s = new MemoryStorage();
    s.append(ents(1, [1, 1, 2, 2, 2, 4, 4]));
    const log = new RaftLog(s);
    expect(log.findConflictByTerm(7, 3)).toEqual({ index: 5, term: 2 });
    expect(log.findConflictByTerm(7, 0)).toEqual({ index: 0, term: 0 });
  });

  test("unstable entries become stable only if their term still matches", () => {
    const log = new RaftLog(new MemoryStorage());
    log.append(ents(1, [1, 1]));
    log.append(ents(2, [2]));
    log.stableTo(2, 1);
    expect(log.unstableEntries().length).toBe(2);
    log.stableTo(2, 2);
    expect(log.unstableEntries().length).toBe(0);
  });

  test("the up-to-date rule compares last term, then length", () => {
    const s = new MemoryStorage();
    s.append(ents(1, [1, 2, 2]));
    const log = new RaftLog(s);
    expect(log.isUpToDate(3, 2)).toBe(true);
    expect(log.isUpToDate(2, 2)).toBe(false);
    expect(log.isUpToDate(1, 3)).toBe(true);
    expect(log.isUpToDate(9, 1)).toBe(false);
  });
});

describe("quorum", () => {
  test("majorityValue is the highest index held by a majority", () => {
    expect(majorityValue([5])).toBe(5);
    expect(majorityValue([5, 3, 9])).toBe(5);
    expect(majorityValue([1, 2, 3, 4])).toBe(2);
    expect(majorityValue([7, 7, 1, 1, 1])).toBe(1);
  });

  test("tallyVotes counts only voters and detects a lost election early", () => {
    const voters = ["a", "b", "c"];
    expect(tallyVotes(voters, new Map([["a", true], ["x", true]]))).toBe(VoteResult.Pending);
    expect(tallyVotes(voters, new Map([["a", true], ["b", true]]))).toBe(VoteResult.Won);
    expect(tallyVotes(voters, new Map([["a", true], ["b", false], ["c", false]]))).toBe(VoteResult.Lost);
  });
});

describe("membership", () => {
  const base = { voters: ["a", "b"], learners: [] as string[] };
  test("add learner, promote, remove", () => {
    const c1 = applyConfChange(base, { type: ConfChangeType.AddLearner, nodeId: "c", context: new Uint8Array() });
    expect(c1).toEqual({ voters: ["a", "b"], learners: ["c"] });
    const c2 = applyConfChange(c1, { type: ConfChangeType.AddVoter, nodeId: "c", context: new Uint8Array() });
    expect(c2).toEqual({ voters: ["a", "b", "c"], learners: [] });
    const c3 = applyConfChange(c2, { type: ConfChangeType.RemoveNode, nodeId: "a", context: new Uint8Array() });
    expect(c3).toEqual({ voters: ["b", "c"], learners: [] });
  });

  test("nonsense changes are refused", () => {
    expect(() => applyConfChange(base, { type: ConfChangeType.RemoveNode, nodeId: "z", context: new Uint8Array() })).toThrow(/not a member/);
    expect(() => applyConfChange({ voters: ["a"], learners: [] }, { type: ConfChangeType.RemoveNode, nodeId: "a", context: new Uint8Array() })).toThrow(/no voters/);
    expect(() => applyConfChange(base, { type: ConfChangeType.AddLearner, nodeId: "a", context: new Uint8Array() })).toThrow(/demoting/);
  });

  test("history reverts when the log is truncated", () => {
    const h = new ConfHistory(0, base);
    h.push(5, { voters: ["a", "b", "c"], learners: [] });
    h.push(9, { voters: ["a", "c"], learners: [] });
    expect(h.at(7).voters).toEqual(["a", "b", "c"]);
    h.truncateFrom(6);
    expect(h.current().voters).toEqual(["a", "b", "c"]);
    h.truncateFrom(5);
    expect(h.current().voters).toEqual(["a", "b"]);
  });

  test("the change codec round-trips and rejects garbage", () => {
    const cc = { type: ConfChangeType.AddVoter, nodeId: "127.0.0.1:9502", context: new Uint8Array([1, 2, 3]) };
    expect(decodeConfChange(encodeConfChange(cc))).toEqual(cc);
    expect(() => decodeConfChange(new Uint8Array([9, 0, 1, 65]))).toThrow(ConfChangeDecodeError);
    expect(() => decodeConfChange(new Uint8Array([1, 0, 200, 65]))).toThrow(ConfChangeDecodeError);
    expect(() => decodeConfChange(new Uint8Array([1]))).toThrow(ConfChangeDecodeError);
  });
});

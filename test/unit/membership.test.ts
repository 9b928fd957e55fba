// Membership decisions (src/node/membership.ts) over hand-made cluster views: which requests
// are refused and with which kind (the gRPC code the API answers), and which configuration
// changes the accepted ones propose — with the member's addresses and promotion flag in the
// context, as every member's peer book will read them.

import { describe, expect, test } from "bun:test";
import { NotLeaderError } from "../../src/node/errors.ts";
import { createLogger } from "../../src/node/logger.ts";
import {
  type ClusterView,
  IN_SYNC_MAX_LAG,
  Membership,
  MembershipError,
  type MembershipErrorKind,
  type MembershipHost,
  type MemberState,
  autoPromotionCandidate,
  checkAddress,
  checkRemoval,
  mostUpToDateVoter,
} from "../../src/node/membership.ts";
import { decodePeerContext } from "../../src/node/peer-context.ts";
import { type ConfChange, ConfChangeType } from "../../src/raft/messages.ts";
import { peerAddressOf } from "../../src/storage/raft-log-store.ts";

function member(id: string, over: Partial<MemberState> = {}, progress: Partial<NonNullable<MemberState["progress"]>> = {}): MemberState {
  return {
    id,
    raft: `${id}:7000`,
    grpc: `${id}:9000`,
    isLearner: false,
    isLeader: false,
    isLocal: false,
    promote: false,
    progress: { match: 100, active: true, replicating: true, ...progress },
    ...over,
  };
}

/** A leader "a" of voters a, b, c at commit 100, led long enough to know who answers. */
function view(members: MemberState[] = [member("a", { isLeader: true, isLocal: true }), member("b"), member("c")], over: Partial<ClusterView> = {}): ClusterView {
  return { self: "a", isLeader: true, leader: { id: "a", grpcAddr: "a:9000", term: 3 }, commit: 100, lastIndex: 100, confIndex: 10, activityKnown: true, members, ...over };
}

class FakeHost implements MembershipHost {
  readonly id = "a";
  proposed: ConfChange[] = [];
  transferredTo: string[] = [];
  constructor(public v: ClusterView) {}
  clusterView(): ClusterView {
    return this.v;
  }
  async proposeConfChange(cc: ConfChange): Promise<{ index: number }> {
    this.proposed.push(cc);
    return { index: 200 + this.proposed.length };
  }
  transferLeadership(to: string): boolean {
    this.transferredTo.push(to);
    // The target takes over at once.
    this.v = { ...this.v, isLeader: false, leader: { id: to, grpcAddr: `${to}:9000`, term: 4 } };
    return true;
  }
  electionTimeoutMs(): number {
    return 100;
  }
  notLeader(): Error {
    return new NotLeaderError("b", "b:9000", 3);
  }
}

const quiet = createLogger("test", "error");

async function refusedKind(p: Promise<unknown> | (() => unknown)): Promise<{ kind: MembershipErrorKind; message: string }> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (err) {
    if (err instanceof MembershipError) return { kind: err.kind, message: err.message };
    throw err;
  }
  throw new Error("expected a refusal");
}

describe("checks", () => {
  test("addresses: host:port, [IPv6]:port; anything else is a bad request", () => {
    for (const ok of ["127.0.0.1:9501", "node-1.example:1", "[::1]:39971", "[fe80::1%eth0]:65535"]) expect(() => checkAddress(ok, "x")).not.toThrow();
    for (const bad of ["", "host", ":9501", "host:", "host:0", "host:65536", "::1:9501", "host:95x", "a b:1"]) {
      expect(() => checkAddress(bad, "x")).toThrow(MembershipError);
    }
  });

  test("removal: the last voter is a rule; leaving no working majority is retry; a learner always goes", async () => {
    const solo = view([member("a", { isLeader: true, isLocal: true })]);
    expect((await refusedKind(() => checkRemoval(solo, "a"))).kind).toBe("rule");
    const bDown = view([member("a", { isLeader: true, isLocal: true }), member("b", {}, { active: false }), member("c")]);
    const r = await refusedKind(() => checkRemoval(bDown, "c"));
    expect(r.kind).toBe("retry");
    expect(r.message).toContain("would leave 2 voters of which only 1 answer the leader (not answering: b), fewer than the 2 needed");
    expect(checkRemoval(bDown, "b").id).toBe("b");
    expect((await refusedKind(() => checkRemoval(bDown, "zz"))).kind).toBe("not-member");
    expect((await refusedKind(() => checkRemoval({ ...bDown, activityKnown: false }, "b"))).kind).toBe("retry");
    const withLearner = view([member("a", { isLeader: true, isLocal: true }), member("l", { isLearner: true }, { active: false })]);
    expect(checkRemoval(withLearner, "l").id).toBe("l");
  });

  test("automatic promotion: only a flagged learner the leader replicates to, holding the committed log", () => {
    const base = [member("a", { isLeader: true, isLocal: true }), member("b")];
    expect(autoPromotionCandidate(view([...base, member("l", { isLearner: true, promote: false })]))).toBeNull();
    expect(autoPromotionCandidate(view([...base, member("l", { isLearner: true, promote: true }, { match: 99 })]))).toBeNull();
    expect(autoPromotionCandidate(view([...base, member("l", { isLearner: true, promote: true }, { replicating: false })]))).toBeNull();
    expect(autoPromotionCandidate(view([...base, member("l", { isLearner: true, promote: true })]))?.id).toBe("l");
    expect(autoPromotionCandidate(view([...base, member("l", { isLearner: true, promote: true })], { isLeader: false }))).toBeNull();
  });

  test("most up-to-date voter: not the leader, not a learner, answering first, then the longest log", () => {
    const v = view([
      member("a", { isLeader: true, isLocal: true }, { match: 500 }),
      member("b", {}, { match: 90 }),
      member("c", {}, { match: 95 }),
      member("d", {}, { match: 99, active: false }),
      member("l", { isLearner: true }, { match: 100 }),
    ]);
    expect(mostUpToDateVoter(v)?.id).toBe("c");
  });
});

describe("changes", () => {
  test("MemberAdd: a learner stays one (promote false), a voter is a learner flagged for promotion; taken ids and addresses are refused", async () => {
    const host = new FakeHost(view());
    const m = new Membership(host, quiet);
    await m.add({ id: "d:9000", raft: "d:7000", grpc: "", learner: true });
    await m.add({ id: "e:9000", raft: "e:7000", grpc: "e:9001", learner: false });
    expect(host.proposed.map((cc) => [cc.type, cc.nodeId, decodePeerContext(cc.context)])).toEqual([
      [ConfChangeType.AddLearner, "d:9000", { raft: "d:7000", grpc: "d:9000", promote: false }],
      [ConfChangeType.AddLearner, "e:9000", { raft: "e:7000", grpc: "e:9001", promote: true }],
    ]);
    expect((await refusedKind(m.add({ id: "b", raft: "x:1", grpc: "x:2", learner: true }))).kind).toBe("exists");
    expect((await refusedKind(m.add({ id: "f:1", raft: "b:7000", grpc: "", learner: true }))).kind).toBe("exists");
    expect((await refusedKind(m.add({ id: "node-f", raft: "f:7000", grpc: "", learner: true }))).kind).toBe("bad-request");
    expect((await refusedKind(m.add({ id: "", raft: "f:7000", grpc: "", learner: true }))).kind).toBe("bad-request");
    host.v = { ...host.v, confIndex: 101 };
    const pending = await refusedKind(m.add({ id: "g:1", raft: "g:7000", grpc: "", learner: true }));
    expect(pending.kind).toBe("retry");
    expect(pending.message).toContain("configuration entry 101) is not committed yet");
    expect(host.proposed).toHaveLength(2);
  });

  test("MemberPromote: a stranger, a voter, a learner that is down, behind or still probed are refused; a caught-up one becomes a voter without the flag", async () => {
    const learner = (p: Partial<NonNullable<MemberState["progress"]>>): MemberState => member("l", { isLearner: true, promote: false }, p);
    const base = [member("a", { isLeader: true, isLocal: true }), member("b")];
    const host = new FakeHost(view([...base, learner({ active: false })]));
    const m = new Membership(host, quiet);
    expect((await refusedKind(m.promote("zz"))).kind).toBe("not-member");
    expect((await refusedKind(m.promote("b"))).kind).toBe("rule");
    expect((await refusedKind(m.promote("l"))).message).toContain("does not answer the leader");
    host.v = view([...base, learner({ match: 100 - IN_SYNC_MAX_LAG - 1 })], { commit: 100 });
    expect((await refusedKind(m.promote("l"))).message).toContain("is behind");
    host.v = view([...base, learner({ replicating: false })]);
    expect((await refusedKind(m.promote("l"))).kind).toBe("retry");
    host.v = view([...base, learner({ match: 100 - IN_SYNC_MAX_LAG })]);
    await m.promote("l");
    expect(host.proposed.map((cc) => [cc.type, cc.nodeId, decodePeerContext(cc.context)])).toEqual([[ConfChangeType.AddVoter, "l", { raft: "l:7000", grpc: "l:9000" }]]);
  });

  test("MemberUpdate: same kind of entry with the new addresses, keeping the rest (a learner's flag); the same addresses again change nothing", async () => {
    const host = new FakeHost(view([member("a", { isLeader: true, isLocal: true }), member("b"), member("l", { isLearner: true, promote: false })]));
    const m = new Membership(host, quiet);
    expect(await m.update("b", "b2:7000", "")).toEqual({ changed: true });
    expect(await m.update("l", "", "l2:9000")).toEqual({ changed: true });
    expect(await m.update("l", "l:7000", "l:9000")).toEqual({ changed: false });
    expect(host.proposed.map((cc) => [cc.type, cc.nodeId, decodePeerContext(cc.context)])).toEqual([
      [ConfChangeType.AddVoter, "b", { raft: "b2:7000", grpc: "b:9000" }],
      [ConfChangeType.AddLearner, "l", { raft: "l:7000", grpc: "l2:9000", promote: false }],
    ]);
    expect((await refusedKind(m.update("zz", "z:1", ""))).kind).toBe("not-member");
    expect((await refusedKind(m.update("b", "a:7000", ""))).kind).toBe("exists");
    expect((await refusedKind(m.update("b", "", ""))).kind).toBe("bad-request");
  });

  test("Join: a live member with the same addresses is a no-op; one that lost its data is removed then added back as a flagged learner; a learner that never acknowledged anything asking again is a no-op too", async () => {
    const host = new FakeHost(view([member("a", { isLeader: true, isLocal: true }), member("b", {}, { active: false }), member("c"), member("l", { isLearner: true, promote: true }, { match: 0 })]));
    const m = new Membership(host, quiet);
    expect(await m.join({ id: "b", raft: "b:7000", grpc: "b:9000", emptyData: false })).toEqual({ joinedAt: 10 });
    expect(await m.join({ id: "l", raft: "l:7000", grpc: "l:9000", emptyData: true })).toEqual({ joinedAt: 10 });
    expect(host.proposed).toEqual([]);
    expect((await refusedKind(m.join({ id: "b", raft: "b:7001", grpc: "b:9000", emptyData: true }))).kind).toBe("exists");
    expect((await refusedKind(m.join({ id: "a", raft: "a:7000", grpc: "a:9000", emptyData: true }))).kind).toBe("rule");
    const joined = await m.join({ id: "b", raft: "b:7000", grpc: "b:9000", emptyData: true });
    expect(host.proposed.map((cc) => [cc.type, cc.nodeId, decodePeerContext(cc.context)])).toEqual([
      [ConfChangeType.RemoveNode, "b", null],
      [ConfChangeType.AddLearner, "b", { raft: "b:7000", grpc: "b:9000", promote: true }],
    ]);
    expect(joined.joinedAt).toBe(202);
    // A learner meant to stay one that lost its data comes back as one.
    host.proposed = [];
    host.v = view([member("a", { isLeader: true, isLocal: true }), member("b"), member("k", { isLearner: true, promote: false }, { match: 50 })]);
    await m.join({ id: "k", raft: "k:7000", grpc: "k:9000", emptyData: true });
    expect(host.proposed.map((cc) => decodePeerContext(cc.context))).toEqual([null, { raft: "k:7000", grpc: "k:9000", promote: false }]);
    host.v = view([member("a", { isLeader: true, isLocal: true }), member("b", {}, { active: false }), member("c")]);
    // Replacing c while b is down would leave {a, b} with only a answering.
    const r = await refusedKind(m.join({ id: "c", raft: "c:7000", grpc: "c:9000", emptyData: true }));
    expect(r.kind).toBe("retry");
    expect(r.message).toContain("not answering: b");
  });

  test("TransferLeadership: to itself OK; a stranger, a learner, a member that is down are refused; otherwise it waits for the target to lead", async () => {
    const host = new FakeHost(view([member("a", { isLeader: true, isLocal: true }), member("b", {}, { active: false }), member("c", {}, { match: 98 }), member("l", { isLearner: true })]));
    const m = new Membership(host, quiet);
    expect((await m.transfer("a")).id).toBe("a");
    expect((await refusedKind(m.transfer("zz"))).kind).toBe("not-member");
    expect((await refusedKind(m.transfer("l"))).kind).toBe("rule");
    expect((await refusedKind(m.transfer("b"))).kind).toBe("retry");
    expect(host.transferredTo).toEqual([]);
    expect((await m.transfer("")).id).toBe("c");
    expect(host.transferredTo).toEqual(["c"]);
  });

  test("a follower refuses to decide: the caller is sent to the leader", async () => {
    const m = new Membership(new FakeHost(view(undefined, { isLeader: false })), quiet);
    await expect(m.add({ id: "d:1", raft: "d:7000", grpc: "", learner: true })).rejects.toBeInstanceOf(NotLeaderError);
  });
});

describe("the promotion flag in JSON", () => {
  test("absent (data from before the flag) reads as no flag, which counts as promote; present is kept; junk is no address", () => {
    expect(peerAddressOf({ raft: "a:1", grpc: "a:2" })).toEqual({ raft: "a:1", grpc: "a:2" });
    expect(peerAddressOf({ raft: "a:1", grpc: "a:2", promote: false })).toEqual({ raft: "a:1", grpc: "a:2", promote: false });
    expect(peerAddressOf({ raft: "a:1", grpc: "a:2", promote: "yes" })).toEqual({ raft: "a:1", grpc: "a:2" });
    expect(peerAddressOf({ raft: "a:1" })).toBeNull();
    expect(peerAddressOf(null)).toBeNull();
  });
});

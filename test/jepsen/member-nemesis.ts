// The member nemesis: membership and leadership changes under load, through the cluster RPCs
// (SPEC §3b) and through --join-addr. Each step starts from a whole cluster (every node up, every
// node a voter) and takes at most one voter out, so a 3-node cluster keeps a majority of 2 up
// throughout; it ends with every node a voter again (or records why not). Steps:
//
//   remove-rejoin  RemoveMember of a random node or the leader (one time in three SIGKILLed first
//                  and removed while down; started again on its old data it must stop by itself
//                  with exit 0); then its data is emptied and it joins again with --join-addr
//   learner        RemoveMember, empty its data, MemberAdd(is_learner) through a random node, start
//                  it with --join-addr: it must catch up and STAY a learner; meanwhile unsafe
//                  requests (transfer to the learner, promote a voter, promote a non-member) must
//                  be refused; then MemberPromote (sometimes while the learner is cut off, sometimes
//                  twice at once through two nodes) until it is a voter
//   add-voter      RemoveMember, empty its data, MemberAdd as a voter, start it with --join-addr: it
//                  must become a voter by itself
//   transfer       TransferLeadership to a named voter, or to "" (the most up-to-date voter), through
//                  a random node; sometimes with the target (or one voter, for "") SIGSTOPped or cut
//                  off first: a transfer to it must be refused, "" must pick another voter
//   replace        a node loses its disk: SIGKILL, its data emptied, started with --join-addr under
//                  the same id; the cluster must replace it by itself (no RemoveMember) and it must
//                  be a voter again
//
// Every RPC answer is counted per action and code (table in report.txt). Refusals a client must
// expect — UNAVAILABLE ("try again"), a FAILED_PRECONDITION redirect to the leader (rbkv-leader-id
// metadata, shown as NOT_LEADER), and the refusal a probe asks for — are legitimate outcomes; any
// other code, an unsafe request accepted, or no answer within RPC_TIMEOUT_MS (a hang) is a problem
// and fails the run.

import { sleep } from "../e2e/harness.ts";
import type { Prng } from "../sim/prng.ts";
import type { Member, MemberListResponse } from "../../src/server/gen/rbkv.ts";
import type { RbdkvClient } from "../../src/server/grpc-service.ts";
import type { JepsenCluster } from "./cluster.ts";
import type { BlockMode } from "./proxy.ts";
import { type Answer, RPC_TIMEOUT_MS, answerOf } from "./answers.ts";

export const MEMBER_STEPS = ["remove-rejoin", "learner", "add-voter", "transfer", "replace"] as const;
export type MemberStep = (typeof MEMBER_STEPS)[number];

/** How long a node added back (or replaced) may take to be a voter again. */
const VOTER_AGAIN_MS = 45_000;
/** A node id that is nobody's (for the probes). */
const STRANGER_ID = "127.0.0.1:1";

export interface RpcResult<T> {
  answer: Answer;
  value: T | null;
  details: string;
}

/** Refusals every membership RPC may give under faults: try again, or ask the leader. */
const RETRY_LATER: readonly Answer[] = ["UNAVAILABLE", "NOT_LEADER"];

export class MemberNemesis {
  /** action -> answer -> count */
  readonly outcomes: Record<string, Record<Answer, number>> = {};
  /** Steps run (or skipped) per kind. */
  readonly steps: Record<string, number> = {};
  /** Everything that breaks a promise: each fails the run. */
  readonly problems: string[] = [];
  private order: MemberStep[] | null = null;
  private done = 0;

  constructor(
    private readonly cluster: JepsenCluster,
    private readonly kinds: readonly MemberStep[],
    private readonly opts: { electionMs: number; note: (detail: string, count: boolean) => void },
  ) {}

  private name(i: number): string {
    return `node${i + 1}`;
  }

  private get n(): number {
    return this.cluster.size;
  }

  private others(i: number): number[] {
    return [...Array(this.n).keys()].filter((j) => j !== i);
  }

  private problem(s: string): void {
    this.problems.push(s);
    this.opts.note(`PROBLEM: ${s}`, false);
  }

  /**
   * One RPC through node `via`, counted under `action`; `expect` lists the answers that are
   * legitimate here besides OK (when `okIsLegit`) — anything else is a problem.
   */
  private async rpc<T>(action: string, via: number, expect: readonly Answer[], f: (c: RbdkvClient, o: { deadline: number }) => Promise<T>, okIsLegit = true): Promise<RpcResult<T>> {
    let r: RpcResult<T>;
    const t0 = Date.now();
    try {
      r = { answer: "OK", value: await f(this.cluster.clients[via]!.client, { deadline: Date.now() + RPC_TIMEOUT_MS }), details: "" };
    } catch (err) {
      r = { value: null, ...answerOf(err) };
    }
    const byAnswer = (this.outcomes[action] ??= {});
    byAnswer[r.answer] = (byAnswer[r.answer] ?? 0) + 1;
    if (r.answer === "OK" && !okIsLegit) this.problem(`${action} through ${this.name(via)} was accepted; it must be refused (${expect.join(" or ")})`);
    else if (r.answer === "DEADLINE_EXCEEDED" && Date.now() - t0 >= RPC_TIMEOUT_MS - 100) this.problem(`${action} through ${this.name(via)}: no answer within ${RPC_TIMEOUT_MS} ms (a hang)`);
    else if (r.answer !== "OK" && !expect.includes(r.answer)) this.problem(`${action} through ${this.name(via)}: unexpected ${r.answer}: ${r.details}`);
    return r;
  }

  /**
   * Repeats rpc() on the refusals in RETRY_LATER (through random nodes) until another answer or
   * `timeoutMs`; the last result.
   */
  private async retry<T>(action: string, rng: Prng, expect: readonly Answer[], f: (c: RbdkvClient, o: { deadline: number }) => Promise<T>, timeoutMs = 20_000, vias?: number[]): Promise<RpcResult<T>> {
    const deadline = Date.now() + timeoutMs;
    const pool = vias ?? [...Array(this.n).keys()].filter((i) => this.cluster.isUp(i));
    for (;;) {
      const r = await this.rpc(action, rng.pick(pool), expect, f);
      if (!RETRY_LATER.includes(r.answer) || Date.now() > deadline) return r;
      await sleep(200 + rng.int(0, 300));
    }
  }

  private async leaderView(): Promise<{ leader: number; list: MemberListResponse } | null> {
    const l = await this.cluster.leader();
    if (l === null) return null;
    try {
      return { leader: l, list: await this.cluster.memberList(l) };
    } catch {
      return null;
    }
  }

  private memberOf(list: MemberListResponse, i: number): Member | undefined {
    return list.members.find((m) => m.id === this.cluster.ids[i]);
  }

  /** Runs the next step of the seeded cycle (only from a whole cluster). */
  async step(rng: Prng, holdSeed: number, deadline: number): Promise<void> {
    if (this.kinds.length === 0) return;
    this.order ??= shuffleOf(rng, [...this.kinds]);
    const kind = this.order[this.done % this.order.length]!;
    const sub = rng.fork();
    if (!(await this.cluster.isWhole())) {
      this.opts.note(`${kind}: skipped, the cluster is not whole (a node down, paused, or not a voter)`, false);
      return;
    }
    this.done++;
    this.steps[kind] = (this.steps[kind] ?? 0) + 1;
    switch (kind) {
      case "remove-rejoin":
        return this.removeRejoin(sub, holdSeed, deadline);
      case "learner":
        return this.learner(sub);
      case "add-voter":
        return this.addVoter(sub);
      case "transfer":
        return this.transfer(sub);
      case "replace":
        return this.replace(sub, holdSeed);
    }
  }

  /** The leader (40%) or a random node, as a node index and a label. */
  private async victim(rng: Prng): Promise<{ node: number; who: string }> {
    const preferLeader = rng.chance(0.4);
    const random = rng.int(0, this.n - 1);
    const l = await this.cluster.leader();
    const node = preferLeader && l !== null ? l : random;
    return { node, who: `${this.name(node)}${node === l ? " (the leader)" : ""}` };
  }

  /** Waits until node i is a voter again everywhere; a problem if not within VOTER_AGAIN_MS. */
  private async voterAgain(i: number, how: string): Promise<boolean> {
    try {
      await this.cluster.waitAllVoters(VOTER_AGAIN_MS);
      this.opts.note(`${this.name(i)} is a voter again`, false);
      return true;
    } catch (err) {
      this.problem(`${this.name(i)} ${how}: ${(err as Error).message}`);
      return false;
    }
  }

  /** RemoveMember of node i through a random up node; the process must stop by itself, exit 0. */
  private async removeLive(rng: Prng, i: number, who: string): Promise<boolean> {
    const viaPick = rng.int(0, this.n - 1);
    const via = viaPick !== i && this.cluster.isUp(viaPick) ? viaPick : this.others(i)[0]!;
    const r = await this.cluster.removeMember(i, via, 20_000, (code, details) => this.count("remove", code, details, via));
    if (!r.removed) {
      this.opts.note(`removing ${who} through ${this.name(via)} failed, nothing changed: ${r.detail}`, false);
      return false;
    }
    this.opts.note(`removed ${who} through ${this.name(via)}; it stopped with exit code ${r.exitCode}${r.detail ? ` (${r.detail})` : ""}`, false);
    if (r.exitCode !== 0) this.problem(`${this.name(i)} removed: ${r.detail || `exited ${r.exitCode}`}`);
    if (r.exitCode === null) await this.cluster.kill(i);
    return true;
  }

  /** Counts an answer the cluster helpers got (RemoveMember's attempts). */
  private count(action: string, answer: Answer, details: string, via: number): void {
    const byAnswer = (this.outcomes[action] ??= {});
    byAnswer[answer] = (byAnswer[answer] ?? 0) + 1;
    // NOT_FOUND: an earlier attempt whose answer was lost went through.
    if (answer !== "OK" && answer !== "NOT_FOUND" && !RETRY_LATER.includes(answer)) this.problem(`remove through ${this.name(via)}: unexpected ${answer}: ${details}`);
  }

  // ---- remove-rejoin (issue 4's step) --------------------------------------------------------

  private async removeRejoin(rng: Prng, holdSeed: number, deadline: number): Promise<void> {
    const n = this.n;
    const viaPick = rng.int(0, n - 1);
    const rejoinPick = rng.int(0, n - 2);
    const whileDown = rng.chance(1 / 3);
    const awayMs = 200 + (holdSeed % 2500);
    const t = await this.victim(rng);
    if (whileDown) {
      const via = viaPick !== t.node ? viaPick : (t.node + 1) % n;
      await this.cluster.kill(t.node);
      const err = await this.cluster.requestRemoval(t.node, via, 20_000, (code, details) => this.count("remove", code, details, via));
      if (err) {
        this.opts.note(`remove-rejoin: SIGKILLed ${t.who}, removing it through ${this.name(via)} failed: ${err}; restarted`, false);
        this.cluster.restart(t.node);
        return;
      }
      this.opts.note(`remove-rejoin: SIGKILLed ${t.who}, removed it through ${this.name(via)} while down`, true);
      await sleep(Math.max(0, Math.min(awayMs, deadline - Date.now())));
      const code = await this.cluster.startRemoved(t.node);
      this.opts.note(`${this.name(t.node)} started on its old data: stopped with exit code ${code}`, false);
      if (code !== 0) this.problem(`${this.name(t.node)} removed while down, started again: ${code === null ? "did not stop within 20 s" : `exited ${code}`}`);
    } else {
      if (!(await this.removeLive(rng, t.node, t.who))) return;
      this.opts.note(`remove-rejoin: ${t.who} removed`, true);
      await sleep(Math.max(0, Math.min(awayMs, deadline - Date.now())));
    }
    this.cluster.wipe(t.node);
    const others = this.others(t.node);
    const joinVia = others[rejoinPick % others.length]!;
    this.cluster.joinLater(t.node, joinVia);
    this.opts.note(`${this.name(t.node)} emptied and added back with --join-addr=${this.name(joinVia)}'s gRPC address`, false);
    await this.voterAgain(t.node, "added back");
  }

  // ---- learner: MemberAdd(is_learner), probes, MemberPromote ----------------------------------

  /** MemberAdd of node i (its own addresses) through random nodes until OK; false if never. */
  private async add(rng: Prng, i: number, isLearner: boolean): Promise<boolean> {
    const vias = this.others(i);
    const req = { id: this.cluster.ids[i]!, raftAddr: this.cluster.raftAddrs[i]!, grpcAddr: this.cluster.ids[i]!, isLearner };
    const action = isLearner ? "add-learner" : "add-voter";
    // After a refusal whose request may still have been applied (UNAVAILABLE: passed to the
    // leader but not applied in time), a retry may find it added: ALREADY_EXISTS, checked below.
    const first = await this.rpc(action, rng.pick(vias), RETRY_LATER, (c, o) => c.memberAddAsync(req, o));
    const r = first.answer === "OK" || !RETRY_LATER.includes(first.answer) ? first : await this.retry(`${action} (retry)`, rng, [...RETRY_LATER, "ALREADY_EXISTS"], (c, o) => c.memberAddAsync(req, o), 20_000, vias);
    if (r.answer !== "OK") {
      // An attempt whose answer was lost may have added it: the configuration says.
      const view = await this.leaderView();
      const m = view ? this.memberOf(view.list, i) : undefined;
      if (!m) {
        this.problem(`${action} ${this.name(i)}: never accepted within 20 s (last answer ${r.answer}: ${r.details})`);
        return false;
      }
    } else {
      const m = r.value!.member;
      if (!m || m.id !== req.id) this.problem(`${action} ${this.name(i)}: the answer names ${m ? m.id : "no member"}`);
      else if (isLearner && (!m.isLearner || m.promoteWhenCaughtUp)) this.problem(`add-learner ${this.name(i)}: answered as ${m.isLearner ? "a learner to be promoted by itself" : "a voter"}`);
      else if (!isLearner && m.isLearner && !m.promoteWhenCaughtUp) this.problem(`add-voter ${this.name(i)}: answered as a learner that waits for MemberPromote`);
    }
    return true;
  }

  /**
   * Waits until learner i holds what the leader had committed when the wait began: its Raft
   * commit index and its state machine's applied index both reach it (so its configuration
   * includes its own addition). Seen past its addition calling itself a voter is a problem.
   */
  private async caughtUp(i: number, timeoutMs: number): Promise<boolean> {
    const end = Date.now() + timeoutMs;
    let target = -1;
    let seen = "";
    let lagSeen = false;
    while (Date.now() < end) {
      try {
        const l = await this.cluster.leader();
        if (l !== null) {
          if (target < 0) target = (await this.cluster.raftState(l)).commit;
          const st = await this.cluster.raftState(i);
          seen = `applied ${st.applied}, commit ${st.commit}, learner ${st.isLearner}, target ${target}`;
          if (st.applied >= target && st.commit >= target) return true;
          // A snapshot's configuration is the image's (RaftNode.storageForCore): a node that
          // holds its own addition knows it is a learner. It once took an older snapshot's
          // configuration, where an earlier node of its id was a voter (seed 9001).
          if (st.applied >= target && !st.isLearner && !lagSeen) {
            lagSeen = true;
            this.problem(`learner ${this.name(i)} reports applied ${st.applied} (≥ ${target}, past its addition) with commit ${st.commit} and calls itself a voter`);
          }
        }
      } catch (err) {
        seen = (err as Error).message;
      }
      await sleep(200);
    }
    this.problem(`learner ${this.name(i)} did not catch up within ${timeoutMs} ms (${seen})`);
    return false;
  }

  /** The leader's view says node i is a learner it does not promote by itself; else a problem. */
  private async stillLearner(i: number, when: string): Promise<void> {
    const view = await this.leaderView();
    if (!view) return; // no leader at this instant: nothing to compare with
    const m = this.memberOf(view.list, i);
    if (!m) this.problem(`learner ${this.name(i)} ${when}: not a member in ${this.name(view.leader)}'s MemberList`);
    else if (!m.isLearner) this.problem(`learner ${this.name(i)} ${when}: it is a voter, and nobody asked MemberPromote`);
    else if (m.promoteWhenCaughtUp) this.problem(`learner ${this.name(i)} ${when}: marked promote_when_caught_up, but it was added with is_learner`);
    try {
      const st = await this.cluster.raftState(i);
      if (!st.isLearner) this.problem(`learner ${this.name(i)} ${when}: its own ClusterStats says it is not a learner`);
    } catch {
      // its own view is a bonus; the leader's is the configuration
    }
  }

  private async learner(rng: Prng): Promise<void> {
    const t = await this.victim(rng);
    const holdMs = rng.int(1000, 2500);
    const variant = rng.pick(["plain", "cut-off", "concurrent"] as const);
    const mode: BlockMode = rng.chance(0.5) ? "drop" : "blackhole";
    const via = rng.pick(this.others(t.node));
    if (!(await this.removeLive(rng, t.node, t.who))) return;
    this.cluster.wipe(t.node);
    if (!(await this.add(rng, t.node, true))) {
      this.cluster.joinLater(t.node, via); // a plain join, so the cluster is whole again
      await this.voterAgain(t.node, "joined after a failed MemberAdd");
      return;
    }
    this.cluster.joinLater(t.node, via);
    this.opts.note(`learner: ${t.who} removed, emptied, MemberAdd(is_learner) and started with --join-addr=${this.name(via)}'s gRPC address`, true);
    if (!(await this.caughtUp(t.node, 30_000))) return;
    await this.stillLearner(t.node, "once caught up");
    // Unsafe requests while it is a learner: each must be refused.
    const voters = this.others(t.node);
    const voter = rng.pick(voters);
    const id = this.cluster.ids[t.node]!;
    await this.rpc("probe: transfer to a learner", rng.pick(voters), ["FAILED_PRECONDITION", ...RETRY_LATER], (c, o) => c.transferLeadershipAsync({ to: id }, o), false);
    await this.rpc("probe: promote a voter", rng.pick(voters), ["FAILED_PRECONDITION", ...RETRY_LATER], (c, o) => c.memberPromoteAsync({ id: this.cluster.ids[voter]! }, o), false);
    await this.rpc("probe: promote a non-member", rng.pick(voters), ["NOT_FOUND", ...RETRY_LATER], (c, o) => c.memberPromoteAsync({ id: STRANGER_ID }, o), false);
    await this.rpc("probe: remove a non-member", rng.pick(voters), ["NOT_FOUND", ...RETRY_LATER], (c, o) => c.removeMemberAsync({ id: STRANGER_ID }, o), false);
    await sleep(holdMs);
    await this.stillLearner(t.node, `${holdMs} ms later`);
    if (variant === "cut-off") {
      // A learner the leader cannot reach: promoting it may be refused (behind / not answering);
      // accepted, it is a voter the majority does not need.
      this.cluster.proxy.cut([t.node], voters, mode);
      await sleep(this.opts.electionMs * 3);
      const r = await this.rpc("promote (learner cut off)", rng.pick(voters), ["FAILED_PRECONDITION", ...RETRY_LATER], (c, o) => c.memberPromoteAsync({ id }, o));
      this.opts.note(`learner: ${this.name(t.node)} cut off (${mode}); MemberPromote answered ${r.answer}${r.details ? `: ${r.details}` : ""}`, false);
      this.cluster.proxy.heal();
    } else if (variant === "concurrent") {
      const [a, b] = shuffleOf(rng, voters);
      const rs = await Promise.all([a!, b!].map((v) => this.rpc("promote (two at once)", v, ["FAILED_PRECONDITION", ...RETRY_LATER], (c, o) => c.memberPromoteAsync({ id }, o))));
      this.opts.note(`learner: MemberPromote of ${this.name(t.node)} through ${this.name(a!)} and ${this.name(b!)} at once: ${rs.map((r) => r.answer).join(", ")}`, false);
    }
    // Promote until it is a voter (a FAILED_PRECONDITION "already a voter" after an accepted
    // promotion is fine: the configuration is what counts).
    const end = Date.now() + 30_000;
    let last = "";
    while (Date.now() < end) {
      const view = await this.leaderView();
      const m = view ? this.memberOf(view.list, t.node) : undefined;
      if (m && !m.isLearner) break;
      const r = await this.rpc("promote", rng.pick(voters), ["FAILED_PRECONDITION", ...RETRY_LATER], (c, o) => c.memberPromoteAsync({ id }, o));
      if (r.answer !== "OK") last = `${r.answer}: ${r.details}`;
      if (r.answer === "OK") {
        const pm = r.value!.members.find((x) => x.id === id);
        if (!pm || pm.isLearner) this.problem(`promote ${this.name(t.node)}: OK, but the answer's members show it ${pm ? "a learner" : "absent"}`);
        break;
      }
      await sleep(300);
    }
    this.opts.note(`learner: promoted ${this.name(t.node)}${last ? ` (last refusal ${last})` : ""}`, false);
    await this.voterAgain(t.node, "promoted");
  }

  // ---- add-voter ---------------------------------------------------------------------------

  private async addVoter(rng: Prng): Promise<void> {
    const t = await this.victim(rng);
    const via = rng.pick(this.others(t.node));
    if (!(await this.removeLive(rng, t.node, t.who))) return;
    this.cluster.wipe(t.node);
    const added = await this.add(rng, t.node, false);
    this.cluster.joinLater(t.node, via);
    this.opts.note(`add-voter: ${t.who} removed, emptied, ${added ? "MemberAdd(voter)" : "MemberAdd failed: a plain join"} and started with --join-addr=${this.name(via)}'s gRPC address`, true);
    await this.voterAgain(t.node, "added as a voter");
  }

  // ---- transfer ----------------------------------------------------------------------------

  /** After an accepted transfer to `to`: it must be seen leading (at the answered term or later). */
  private async confirmLeader(to: number, term: number): Promise<string> {
    const end = Date.now() + 5000;
    while (Date.now() < end) {
      const l = await this.cluster.leader();
      if (l === to) return "confirmed";
      try {
        const info = await this.cluster.clients[to]!.client.leaderInfoAsync({}, { deadline: Date.now() + 1000 });
        if (info.term > term && info.leaderId !== this.cluster.ids[to]) return `superseded (term ${info.term}: ${info.leaderId || "no leader"})`;
      } catch {
        // try again
      }
      await sleep(100);
    }
    this.problem(`transfer answered OK naming ${this.name(to)} at term ${term}, but ${this.name(to)} was not seen leading within 5 s`);
    return "not seen";
  }

  private async transfer(rng: Prng): Promise<void> {
    const variant = rng.pick(["named", "most-up-to-date", "named-down", "any-one-down"] as const);
    const how = rng.chance(0.5) ? "pause" : "cut";
    const mode: BlockMode = rng.chance(0.5) ? "drop" : "blackhole";
    const targetPick = rng.int(0, this.n - 2);
    const viaPick = rng.int(0, this.n - 1);
    const l = await this.cluster.leader();
    if (l === null) {
      this.opts.note("transfer: skipped, no leader at this moment", false);
      return;
    }
    const voters = this.others(l);
    const target = voters[targetPick % voters.length]!;
    const downed = variant === "named-down" || variant === "any-one-down" ? target : -1;
    if (downed >= 0) {
      if (how === "pause") this.cluster.pause(downed);
      else this.cluster.proxy.cut([downed], this.others(downed), mode);
      // Long enough for the leader to see it silent.
      await sleep(this.opts.electionMs * 3);
    }
    const via = viaPick === downed ? l : viaPick;
    const to = variant === "named" || variant === "named-down" ? this.cluster.ids[target]! : "";
    const action = `transfer ${variant}`;
    const label = to ? this.name(target) : '"" (the most up-to-date voter)';
    const downLabel = downed >= 0 ? ` with ${this.name(downed)} ${how === "pause" ? "SIGSTOPped" : `cut off (${mode})`}` : "";
    // A transfer to a node that cannot answer must be refused; "" must pick one that can.
    const r = await this.rpc(action, via, ["FAILED_PRECONDITION", ...RETRY_LATER], (c, o) => c.transferLeadershipAsync({ to }, o), variant !== "named-down");
    let outcome = r.answer === "OK" ? "" : `: ${r.details}`;
    if (r.answer === "OK") {
      const info = r.value!.leaderInfo;
      const idx = this.cluster.ids.indexOf(info?.leaderId ?? "");
      if (idx < 0) this.problem(`${action} through ${this.name(via)}: OK but the answer names no member as leader (${JSON.stringify(info)})`);
      else if (idx === l) this.problem(`${action} through ${this.name(via)}: OK but the leader is still ${this.name(l)}`);
      else if (to && idx !== target) this.problem(`${action} through ${this.name(via)}: OK but ${this.name(idx)} leads, not ${this.name(target)}`);
      else if (idx === downed) this.problem(`${action} through ${this.name(via)}: OK naming ${this.name(idx)}, which is ${how === "pause" ? "SIGSTOPped" : "cut off"}`);
      else outcome = `, ${this.name(idx)} leads: ${await this.confirmLeader(idx, info!.term)}`;
    }
    this.opts.note(`transfer: ${this.name(l)} (the leader) -> ${label} through ${this.name(via)}${downLabel}: ${r.answer}${outcome}`, true);
    if (downed >= 0) {
      if (how === "pause") this.cluster.resume(downed);
      else this.cluster.proxy.heal();
    }
  }

  // ---- replace: a node that lost its disk rejoins under its id ------------------------------

  private async replace(rng: Prng, holdSeed: number): Promise<void> {
    const t = await this.victim(rng);
    const via = rng.pick(this.others(t.node));
    const downMs = 200 + (holdSeed % 1300);
    await this.cluster.kill(t.node);
    this.cluster.wipe(t.node);
    await sleep(downMs);
    this.cluster.joinLater(t.node, via);
    this.opts.note(`replace: ${t.who} SIGKILLed, its disk emptied, down ${downMs} ms, started with --join-addr=${this.name(via)}'s gRPC address under the same id`, true);
    // Whether its own view showed it a learner on the way (ClusterStats, polled).
    let sawLearner = false;
    const watching = (async (): Promise<void> => {
      const end = Date.now() + VOTER_AGAIN_MS;
      while (Date.now() < end) {
        try {
          const st = await this.cluster.raftState(t.node, 1000);
          if (st.isLearner) sawLearner = true;
          else if (st.applied > 0) return;
        } catch {
          // not up yet
        }
        await sleep(100);
      }
    })();
    const ok = await this.voterAgain(t.node, "replaced after losing its disk");
    await watching;
    if (ok) {
      const view = await this.leaderView();
      const m = view ? this.memberOf(view.list, t.node) : undefined;
      if (view && (!m || m.raftAddr !== this.cluster.raftAddrs[t.node])) this.problem(`replace ${this.name(t.node)}: the leader lists it as ${m ? `raft ${m.raftAddr}` : "absent"}`);
      this.opts.note(`replace: ${this.name(t.node)} ${sawLearner ? "was a learner, then a voter" : "was a voter again before a poll saw it a learner"}`, false);
      const byAnswer = (this.outcomes["replace: seen as a learner"] ??= {});
      byAnswer[sawLearner ? "yes" : "no"] = (byAnswer[sawLearner ? "yes" : "no"] ?? 0) + 1;
    }
  }
}

function shuffleOf<T>(rng: Prng, xs: T[]): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

/** The outcomes table of report.txt: one line per action, its answers and counts. */
export function outcomesTable(outcomes: Record<string, Record<Answer, number>>): string[] {
  const rows = Object.entries(outcomes).sort(([a], [b]) => a.localeCompare(b));
  const w = Math.max(10, ...rows.map(([a]) => a.length));
  return rows.map(([action, by]) => `  ${action.padEnd(w)}  ${Object.entries(by).map(([k, v]) => `${k}=${v}`).join(" ")}`);
}

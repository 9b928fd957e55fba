// Membership and leadership, decided in one place: who may join, be added, promoted, removed,
// replaced (a member that lost its disk) or given new addresses, and where leadership may go.
//
// The checks read a ClusterView (the configuration, each member's addresses and, on the leader,
// how much of the log each one holds and whether it answers) and use quorum.ts for majorities.
// Changes go one at a time through the host's proposeConfChange and are answered once applied
// on the leader. Catch-up before promotion (SPEC §4): a new voter always starts as a learner.
//
// Refusals are MembershipErrors whose kind says what the caller can do about them (errors.ts
// maps them to gRPC codes): a rule it broke, a state to wait out, a stranger, a bad request.

import { type ConfChange, ConfChangeType, type NodeId } from "../raft/messages.ts";
import { quorumSize } from "../raft/quorum.ts";
import { type PeerAddress } from "../storage/raft-log-store.ts";
import { type Logger } from "./logger.ts";
import { encodePeerContext } from "./peer-context.ts";

/**
 * rule: the request breaks a rule and will never succeed as is (FAILED_PRECONDITION).
 * retry: the cluster cannot do it right now (a change pending, a member behind or down, a
 *   leader elected moments ago); the same request may succeed later (UNAVAILABLE).
 * not-member: no member has that id (NOT_FOUND). exists: the id or address is taken
 * (ALREADY_EXISTS). bad-request: malformed (INVALID_ARGUMENT).
 */
export type MembershipErrorKind = "rule" | "retry" | "not-member" | "exists" | "bad-request";

export class MembershipError extends Error {
  constructor(
    readonly kind: MembershipErrorKind,
    message: string,
  ) {
    super(message);
    this.name = "MembershipError";
  }
}

/** The leader's knowledge of one member's log (absent on followers). */
export interface MemberProgress {
  /** Highest log index known to be on the member. */
  match: number;
  /** Heard from within the last election timeout or two. */
  active: boolean;
  /**
   * The leader knows where the member's log ends and streams entries to it (Raft's replicate
   * state). Not yet: it was just added or came back (probing), or it is being sent a snapshot.
   */
  replicating: boolean;
}

export interface MemberState {
  id: NodeId;
  raft: string;
  grpc: string;
  isLearner: boolean;
  isLeader: boolean;
  isLocal: boolean;
  /** A learner the leader promotes by itself once caught up (always false for a voter). */
  promote: boolean;
  progress: MemberProgress | null;
}

export interface ClusterView {
  self: NodeId;
  isLeader: boolean;
  leader: { id: NodeId; grpcAddr: string; term: number };
  commit: number;
  lastIndex: number;
  /** Index of the last configuration entry (committed or not). */
  confIndex: number;
  /** As leader: led for a whole election timeout, so `active` means something. */
  activityKnown: boolean;
  members: MemberState[];
}

/** What membership needs from the node it runs on (RaftNode implements it). */
export interface MembershipHost {
  readonly id: NodeId;
  clusterView(): ClusterView;
  /** Resolves once the change is applied here (on the leader: committed). */
  proposeConfChange(cc: ConfChange): Promise<{ index: number }>;
  /** Starts handing leadership to `to`; false when this node cannot (not leader, not a voter). */
  transferLeadership(to: NodeId): boolean;
  electionTimeoutMs(): number;
  /** The error for "ask the leader": where it is, as far as known. */
  notLeader(): Error;
}

/**
 * How far (in entries) a learner may be behind the commit index and still be promoted, and a
 * voter behind the leader's log and still be handed leadership: a member this close catches up
 * within a heartbeat or two. One further back (or being sent a snapshot) is "behind": wait.
 */
export const IN_SYNC_MAX_LAG = 1000;
/** How long TransferLeadership waits for the target to take over, in election timeouts. */
const TRANSFER_WAIT_ELECTIONS = 2;
const TRANSFER_POLL_MS = 10;

export interface NewMember {
  id: NodeId;
  raft: string;
  /** Empty: the id (the seed's convention: a node's id is its gRPC address). */
  grpc: string;
}

// ---- checks (pure, over a view) ------------------------------------------------------------

/**
 * A host:port as the members dial it: a non-empty host (a name, IPv4, or [IPv6]) and a port
 * in 1..65535. A request check only, local to this module (the program's address parser is
 * src/net/host-port.ts once it exists; this module should then use it).
 */
export function isHostPort(addr: string): boolean {
  const m = /^(\[[0-9A-Za-z:.%]+\]|[^\s:[\]]+):(\d{1,5})$/.exec(addr);
  const port = m ? Number(m[2]) : 0;
  return port >= 1 && port <= 65535;
}

export function checkAddress(addr: string, field: string): void {
  if (!isHostPort(addr)) throw new MembershipError("bad-request", `${field} must be host:port (an IPv6 host in brackets), got ${JSON.stringify(addr)}`);
}

function checkId(id: string, what: string): void {
  if (!id) throw new MembershipError("bad-request", `${what} needs the member's node id`);
}

function findMember(view: ClusterView, id: NodeId): MemberState | undefined {
  return view.members.find((m) => m.id === id);
}

function requireMember(view: ClusterView, id: NodeId): MemberState {
  const m = findMember(view, id);
  if (!m) throw new MembershipError("not-member", `node ${id} is not a member of this cluster (members: ${view.members.map((x) => x.id).join(", ")})`);
  return m;
}

function kindOf(m: MemberState): string {
  return m.isLearner ? "learner" : "voter";
}

/** One configuration change at a time: the previous one must be committed first. */
export function checkNoChangePending(view: ClusterView): void {
  if (view.confIndex > view.commit) {
    throw new MembershipError("retry", `a membership change (configuration entry ${view.confIndex}) is not committed yet (commit index ${view.commit}); retry once it is`);
  }
}

/** Activity is only meaningful after the leader has led for an election timeout. */
function checkActivityKnown(view: ClusterView): void {
  if (!view.activityKnown) throw new MembershipError("retry", `this node became leader moments ago and does not know yet which members answer; retry`);
}

/** No other member may already be reached at these addresses (messages for it would reach another node). */
function checkAddressesFree(view: ClusterView, id: NodeId, raft: string, grpc: string): void {
  for (const m of view.members) {
    if (m.id === id) continue;
    if (m.raft === raft) throw new MembershipError("exists", `raft address ${raft} is already the address of member ${m.id}`);
    if (m.grpc === grpc) throw new MembershipError("exists", `gRPC address ${grpc} is already the address of member ${m.id}`);
  }
}

/**
 * Removing `id` must leave a voter, and (as etcd's strict reconfiguration check) the voters
 * that remain must have a majority that answers the leader, or the cluster stops serving until
 * a member that is down comes back.
 */
export function checkRemoval(view: ClusterView, id: NodeId): MemberState {
  const member = requireMember(view, id);
  if (member.isLearner) return member;
  const voters = view.members.filter((m) => !m.isLearner);
  if (voters.length === 1) throw new MembershipError("rule", `node ${id} is the only voter; removing it would leave the cluster without one`);
  checkActivityKnown(view);
  const remaining = voters.filter((m) => m.id !== id);
  const up = remaining.filter((m) => m.progress?.active ?? false);
  const need = quorumSize(remaining.length);
  if (up.length < need) {
    const down = remaining.filter((m) => !up.includes(m)).map((m) => m.id);
    throw new MembershipError(
      "retry",
      `removing ${id} would leave ${remaining.length} voters of which only ${up.length} answer the leader (not answering: ${down.join(", ")}), fewer than the ${need} needed to commit; bring them back first`,
    );
  }
  return member;
}

/** A learner may become a voter when it answers and holds (nearly) the whole committed log. */
export function checkPromotion(view: ClusterView, id: NodeId): MemberState {
  const m = requireMember(view, id);
  if (!m.isLearner) throw new MembershipError("rule", `node ${id} is already a voter`);
  checkNoChangePending(view);
  checkActivityKnown(view);
  const p = m.progress;
  if (!p || !p.active) throw new MembershipError("retry", `learner ${id} does not answer the leader; start it (or wait until it is reachable), then promote it`);
  if (!p.replicating || view.commit - p.match > IN_SYNC_MAX_LAG) {
    throw new MembershipError(
      "retry",
      `learner ${id} is behind: it holds the log up to index ${p.match}${p.replicating ? "" : " (the leader is still finding where its log ends, or sending it a snapshot)"}, the cluster has committed ${view.commit} (at most ${IN_SYNC_MAX_LAG} behind may be promoted); retry once it has caught up`,
    );
  }
  return m;
}

/** The first learner flagged for automatic promotion that holds the whole committed log. */
export function autoPromotionCandidate(view: ClusterView): MemberState | null {
  if (!view.isLeader) return null;
  return view.members.find((m) => m.isLearner && m.promote && m.progress !== null && m.progress.replicating && m.progress.match >= view.commit) ?? null;
}

/** The voter (other than the leader) with the most of the log, preferring those that answer. */
export function mostUpToDateVoter(view: ClusterView): MemberState | null {
  const candidates = view.members.filter((m) => !m.isLearner && m.id !== view.self && m.progress !== null);
  candidates.sort((a, b) => Number(b.progress!.active) - Number(a.progress!.active) || b.progress!.match - a.progress!.match);
  return candidates[0] ?? null;
}

/** Where leadership may go: a voter other than the leader that answers and is nearly up to date. */
export function checkTransferTarget(view: ClusterView, to: NodeId): MemberState {
  let target: MemberState;
  if (!to) {
    const best = mostUpToDateVoter(view);
    if (!best) throw new MembershipError("rule", `there is no other voter to hand leadership to (voters: ${view.self})`);
    target = best;
  } else {
    target = requireMember(view, to);
    if (target.isLearner) throw new MembershipError("rule", `node ${to} is a learner; leadership can only go to a voter (promote it first)`);
  }
  checkActivityKnown(view);
  const p = target.progress;
  if (!p || !p.active) throw new MembershipError("retry", `voter ${target.id} does not answer the leader; leadership cannot move there now`);
  if (!p.replicating || view.lastIndex - p.match > IN_SYNC_MAX_LAG) {
    throw new MembershipError(
      "retry",
      `voter ${target.id} is behind: it holds the log up to index ${p.match}${p.replicating ? "" : " (the leader is still finding where its log ends, or sending it a snapshot)"}, the leader's log ends at ${view.lastIndex}; retry once it has caught up`,
    );
  }
  return target;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---- the changes ---------------------------------------------------------------------------

export class Membership {
  constructor(
    private readonly host: MembershipHost,
    private readonly log: Logger,
  ) {}

  /** The view of the leader, or the error that sends the caller to it. */
  private leaderView(): ClusterView {
    const view = this.host.clusterView();
    if (!view.isLeader) throw this.host.notLeader();
    return view;
  }

  private validateNew(req: NewMember, what: string): PeerAddress {
    checkId(req.id, what);
    checkAddress(req.raft, "the raft address");
    const grpc = req.grpc || req.id;
    if (req.grpc) checkAddress(req.grpc, "the gRPC address");
    else if (!isHostPort(req.id)) throw new MembershipError("bad-request", `no gRPC address given, and the id ${JSON.stringify(req.id)} is not one (host:port): give the node's gRPC address`);
    return { raft: req.raft, grpc };
  }

  /**
   * SPEC §2/§3 Join. A new id: added as a learner promoted once caught up. An existing member
   * with the same addresses: answered OK (idempotent for any caller) — unless the joiner says it
   * has no data (`emptyData`, an rbkv node starting on empty directories) while the member holds
   * data: then that member lost its disk, and with it its votes and the entries it
   * acknowledged; it cannot take its own place, so it is replaced: removed, then added back as
   * a learner (promoted once caught up, unless it was a learner meant to stay one). A learner
   * that never acknowledged anything asking again is the same node
   * retrying after a crash mid-join: a no-op. Returns the index of the entry that added it.
   */
  async join(req: NewMember & { emptyData: boolean }): Promise<{ joinedAt: number }> {
    const addr = this.validateNew(req, "join");
    const view = this.leaderView();
    const member = findMember(view, req.id);
    if (!member) {
      checkAddressesFree(view, req.id, addr.raft, addr.grpc);
      const added = await this.host.proposeConfChange({ type: ConfChangeType.AddLearner, nodeId: req.id, context: encodePeerContext({ ...addr, promote: true }) });
      this.log.info(`added ${req.id} (raft ${addr.raft}) as a learner at index ${added.index}; it becomes a voter once caught up`);
      return { joinedAt: added.index };
    }
    const raftDiffers = member.raft !== "" && member.raft !== addr.raft;
    const grpcDiffers = req.grpc !== "" && member.grpc !== "" && member.grpc !== addr.grpc;
    if (raftDiffers || grpcDiffers) {
      throw new MembershipError(
        "exists",
        `node ${req.id} is already a member (${kindOf(member)}) with raft address ${member.raft} and gRPC address ${member.grpc}, not ${addr.raft} / ${addr.grpc}: ` +
          `if it moved, give it its new addresses with MemberUpdate (or start it on its data with --node-id ${req.id}); if it is another node, give it another id or remove ${req.id} first (RemoveMember)`,
      );
    }
    const holdsData = !member.isLearner || (member.progress?.match ?? 0) > 0;
    if (!req.emptyData || !holdsData) return { joinedAt: this.committedConfIndex(view, req.id) };
    return this.replace(view, member, addr);
  }

  /**
   * The member's addition is at or below the current configuration entry (it is still a
   * member); an answer must not promise an addition a new leader could still overwrite.
   */
  private committedConfIndex(view: ClusterView, id: NodeId): number {
    if (view.commit < view.confIndex) throw new MembershipError("retry", `the latest membership change (entry ${view.confIndex}), which may be the addition of ${id}, is not committed yet; retry`);
    return view.confIndex;
  }

  /**
   * A member that lost its disk asks to join again under its id: remove it (the strict check:
   * the voters left must have a working majority), then add it back as a learner promoted once
   * caught up. Its new incarnation's joinedAt is that addition, above the removal, so no member
   * tells it "removed" and it ignores its own removal when it replays the log. If this stops
   * half-way (a leader change), the joiner's retry finds a stranger and adds it.
   */
  private async replace(view: ClusterView, member: MemberState, addr: PeerAddress): Promise<{ joinedAt: number }> {
    if (member.id === view.self) {
      throw new MembershipError("rule", `node ${member.id} is this cluster's leader, which holds its data: a node with empty directories cannot take its place; give it another id`);
    }
    checkNoChangePending(view);
    checkRemoval(view, member.id);
    const match = member.progress?.match ?? 0;
    this.log.info(`${member.id} (a ${kindOf(member)} holding the log up to index ${match}) asks to join with no data: it lost its disk; replacing it (remove, then add back as a learner)`);
    // A voter comes back as one once caught up; a learner added to stay one stays one.
    const promote = member.isLearner ? member.promote : true;
    const removed = await this.host.proposeConfChange({ type: ConfChangeType.RemoveNode, nodeId: member.id, context: new Uint8Array(0) });
    const added = await this.host.proposeConfChange({ type: ConfChangeType.AddLearner, nodeId: member.id, context: encodePeerContext({ ...addr, promote }) });
    this.log.info(`replaced ${member.id}: removed at index ${removed.index}, added back as a learner at index ${added.index}${promote ? "; it becomes a voter once caught up" : "; it stays a learner until promoted"}`);
    return { joinedAt: added.index };
  }

  /**
   * MemberAdd: a learner (`learner`: it stays one until MemberPromote) or a voter (added as a
   * learner the leader promotes once it holds the committed log). Answers once it is added.
   */
  async add(req: NewMember & { learner: boolean }): Promise<{ addedAt: number }> {
    const addr = this.validateNew(req, "MemberAdd");
    const view = this.leaderView();
    const member = findMember(view, req.id);
    if (member) throw new MembershipError("exists", `node ${req.id} is already a member (${kindOf(member)}, raft address ${member.raft}); to give it new addresses use MemberUpdate`);
    checkAddressesFree(view, req.id, addr.raft, addr.grpc);
    checkNoChangePending(view);
    const added = await this.host.proposeConfChange({ type: ConfChangeType.AddLearner, nodeId: req.id, context: encodePeerContext({ ...addr, promote: !req.learner }) });
    this.log.info(`added ${req.id} (raft ${addr.raft}) as a learner at index ${added.index}${req.learner ? "; it stays a learner until promoted" : "; it becomes a voter once caught up"}`);
    return { addedAt: added.index };
  }

  /** MemberPromote: a caught-up learner becomes a voter; answered once applied on the leader. */
  async promote(id: NodeId): Promise<void> {
    checkId(id, "MemberPromote");
    const m = checkPromotion(this.leaderView(), id);
    const at = await this.host.proposeConfChange(this.promotionChange(m));
    this.log.info(`promoted ${id} to voter at index ${at.index} (it held the log up to ${m.progress?.match ?? 0})`);
  }

  /** The leader's own promotion of a learner flagged for it (called every few ticks). */
  async promoteCaughtUp(): Promise<void> {
    const m = autoPromotionCandidate(this.host.clusterView());
    if (!m) return;
    const at = await this.host.proposeConfChange(this.promotionChange(m));
    this.log.info(`promoted ${m.id} to voter at index ${at.index} (caught up at ${m.progress?.match ?? 0})`);
  }

  /** AddVoter with the member's addresses and no promotion flag (a voter has none). */
  private promotionChange(m: MemberState): ConfChange {
    return { type: ConfChangeType.AddVoter, nodeId: m.id, context: encodePeerContext({ raft: m.raft, grpc: m.grpc }) };
  }

  /** RemoveMember: answered once the removal is applied on the leader. */
  async remove(id: NodeId): Promise<void> {
    checkId(id, "remove");
    const view = this.leaderView();
    checkRemoval(view, id);
    await this.host.proposeConfChange({ type: ConfChangeType.RemoveNode, nodeId: id, context: new Uint8Array(0) });
    this.log.info(`removed ${id} from the cluster`);
  }

  /**
   * MemberUpdate: new addresses for a member (an empty one is kept). A configuration entry of
   * the member's current kind for the same id, carrying the new addresses: the configuration
   * is unchanged, and every member's peer book and transport pick them up as they append it.
   * The same addresses again: nothing to do (a moved node may call this until it succeeds).
   */
  async update(id: NodeId, raft: string, grpc: string): Promise<{ changed: boolean }> {
    checkId(id, "MemberUpdate");
    if (!raft && !grpc) throw new MembershipError("bad-request", "MemberUpdate needs a new raft address, gRPC address, or both");
    if (raft) checkAddress(raft, "the raft address");
    if (grpc) checkAddress(grpc, "the gRPC address");
    const view = this.leaderView();
    const m = requireMember(view, id);
    const next: PeerAddress = { raft: raft || m.raft, grpc: grpc || m.grpc };
    if (m.isLearner) next.promote = m.promote;
    if (next.raft === m.raft && next.grpc === m.grpc) return { changed: false };
    checkAddressesFree(view, id, next.raft, next.grpc);
    checkNoChangePending(view);
    const type = m.isLearner ? ConfChangeType.AddLearner : ConfChangeType.AddVoter;
    const at = await this.host.proposeConfChange({ type, nodeId: id, context: encodePeerContext(next) });
    this.log.info(`${id} has new addresses at index ${at.index}: raft ${m.raft} -> ${next.raft}, gRPC ${m.grpc} -> ${next.grpc}`);
    return { changed: true };
  }

  /**
   * TransferLeadership to `to` (a voter), or to the most up-to-date voter when empty. Already
   * the leader: nothing to do (a retry of a transfer that went through answers OK). Resolves
   * once `to` leads; a transfer that does not happen within a couple of election timeouts is
   * UNAVAILABLE (the core gives it up after one, and this node leads on).
   */
  async transfer(to: NodeId): Promise<{ id: NodeId; grpcAddr: string; term: number }> {
    const view = this.leaderView();
    if (to === view.self) return view.leader;
    const target = checkTransferTarget(view, to);
    if (!this.host.transferLeadership(target.id)) throw new MembershipError("retry", `could not start handing leadership to ${target.id} (this node is no longer the leader?); retry`);
    this.log.info(`handing leadership to ${target.id} (it holds the log up to ${target.progress?.match ?? 0}, the leader's ends at ${view.lastIndex})`);
    const waitMs = TRANSFER_WAIT_ELECTIONS * this.host.electionTimeoutMs();
    const deadline = Date.now() + waitMs;
    for (;;) {
      const now = this.host.clusterView().leader;
      if (now.id === target.id) return now;
      if (Date.now() >= deadline) {
        const where = now.id === view.self ? `${view.self} still leads` : now.id ? `${now.id} leads instead` : "no leader is known yet";
        throw new MembershipError("retry", `leadership did not move to ${target.id} within ${waitMs}ms (${where}); retry`);
      }
      await sleep(TRANSFER_POLL_MS);
    }
  }
}

// RaftCore: the consensus algorithm as a deterministic state machine. No I/O, no timers, no
// randomness of its own. The node layer feeds it ticks, messages and proposals, and drains
// ready() batches: state to persist, messages to send, entries to apply; then calls advance().
//
// Contract for the node layer, for each Ready rd:
//   1. rd.messages may be sent at once (the leader's AppendEntries may overlap its own fsync).
//   2. Persist rd.snapshot, rd.entries and rd.hardState durably (one fsync for all of them).
//   3. Then send rd.messagesAfterPersist (votes and acknowledgements promise persisted state).
//   4. Apply rd.snapshot (if any), then rd.committedEntries, to the state machine.
//   5. Serve each of rd.readStates once the state machine has applied its index.
//   6. Call advance().

import { RaftLog } from "./log.ts";
import { ConfHistory, applyConfChange, isLearner, isMember, isVoter } from "./membership.ts";
import {
  type ConfChange,
  ConfChangeType,
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  type Message,
  MessageType,
  NONE,
  type NodeId,
  type Snapshot,
  decodeConfChange,
  encodeConfChange,
  isHardStateEqual,
  message,
} from "./messages.ts";
import { Progress, ProgressState } from "./progress.ts";
import { VoteResult, majorityValue, quorumSize, tallyVotes } from "./quorum.ts";
import { type ReadState, ReadOnlyQueue } from "./readonly.ts";
import { type Storage, cloneConf } from "./storage.ts";

export const enum RaftState {
  Follower = 0,
  PreCandidate = 1,
  Candidate = 2,
  Leader = 3,
}

export function raftStateName(s: RaftState): string {
  return ["follower", "pre-candidate", "candidate", "leader"][s]!;
}

export interface RaftConfig {
  id: NodeId;
  storage: Storage;
  /** Ticks without hearing from a leader before an election; randomized in [n, 2n). */
  electionTick: number;
  /** Ticks between a leader's heartbeats; must be well below electionTick. */
  heartbeatTick: number;
  /** Uniform in [0, 1); injected so that runs are reproducible. */
  random: () => number;
  /** Upper bound of entry bytes in one AppendEntries. */
  maxSizePerMsg?: number;
  /** AppendEntries in flight per follower in the replicate state. */
  maxInflightMsgs?: number;
  /** Upper bound of committed entry bytes handed out by one ready(). */
  maxCommittedSizePerReady?: number;
  preVote?: boolean;
  checkQuorum?: boolean;
  /** The state machine's applied index at start; entries after it are handed out again. */
  applied?: number;
  logger?: (line: string) => void;
}

export interface SoftState {
  lead: NodeId;
  state: RaftState;
  term: number;
}

export interface Ready {
  softState: SoftState;
  /** Null when unchanged since the last ready. */
  hardState: HardState | null;
  entries: Entry[];
  snapshot: Snapshot | null;
  committedEntries: Entry[];
  messages: Message[];
  messagesAfterPersist: Message[];
  readStates: ReadState[];
}

export class ProposalDroppedError extends Error {
  constructor(readonly reason: "not-leader" | "transferring" | "conf-change-pending" | "leader-not-ready" | "invalid-conf-change", detail: string) {
    super(`proposal dropped (${reason}): ${detail}`);
    this.name = "ProposalDroppedError";
  }
}

export class RaftCoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RaftCoreError";
  }
}

export interface PeerStatus {
  id: NodeId;
  match: number;
  next: number;
  state: ProgressState;
  isLearner: boolean;
  recentActive: boolean;
  /** Heard from within the last one or two election timeouts (a window that never looks empty). */
  active: boolean;
}

export interface Status {
  id: NodeId;
  term: number;
  vote: NodeId;
  commit: number;
  applied: number;
  lastIndex: number;
  lead: NodeId;
  state: RaftState;
  conf: ConfState;
  progress: PeerStatus[];
  /** As leader: true once it has led for a whole election timeout, so `active` means something. */
  activityKnown: boolean;
}

const TRANSFER_CONTEXT = 1;

export class RaftCore {
  readonly id: NodeId;
  term = 0;
  vote: NodeId = NONE;
  lead: NodeId = NONE;
  private ticksAsLeader = 0;
  state: RaftState = RaftState.Follower;
  readonly log: RaftLog;
  private readonly confs: ConfHistory;
  private prs = new Map<NodeId, Progress>();
  private votes = new Map<NodeId, boolean>();

  private readonly electionTick: number;
  private readonly heartbeatTick: number;
  private readonly random: () => number;
  private readonly maxSizePerMsg: number;
  private readonly maxInflight: number;
  private readonly maxCommittedSize: number;
  private readonly preVote: boolean;
  private readonly checkQuorum: boolean;
  private readonly logger: ((line: string) => void) | undefined;

  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  leadTransferee: NodeId = NONE;

  private readOnly = new ReadOnlyQueue();
  /** Reads that arrived before this leader committed an entry of its own term. */
  private readsAwaitingTermCommit: { context: number; from: NodeId }[] = [];
  private readStates: ReadState[] = [];

  private msgs: Message[] = [];
  /** Commands to pass to the leader at the next ready(). */
  private forwardQueue: Entry[] = [];
  private msgsAfterPersist: Message[] = [];
  /** Proposals were appended: send AppendEntries at the next ready(). */
  private appendPending = false;
  private prevHardState: HardState;
  private lastReady: Ready | null = null;

  constructor(cfg: RaftConfig) {
    if (cfg.id === NONE) throw new RaftCoreError("node id must not be empty");
    if ((cfg.maxInflightMsgs ?? 1) < 1) throw new RaftCoreError(`maxInflightMsgs must be at least 1, got ${cfg.maxInflightMsgs}`);
    if (cfg.heartbeatTick <= 0 || cfg.electionTick <= cfg.heartbeatTick) {
      throw new RaftCoreError(`electionTick (${cfg.electionTick}) must exceed heartbeatTick (${cfg.heartbeatTick}) > 0`);
    }
    this.id = cfg.id;
    this.electionTick = cfg.electionTick;
    this.heartbeatTick = cfg.heartbeatTick;
    this.random = cfg.random;
    this.maxSizePerMsg = cfg.maxSizePerMsg ?? 1 << 20;
    this.maxInflight = cfg.maxInflightMsgs ?? 256;
    this.maxCommittedSize = cfg.maxCommittedSizePerReady ?? 64 << 20;
    this.preVote = cfg.preVote ?? true;
    this.checkQuorum = cfg.checkQuorum ?? true;
    this.logger = cfg.logger;

    const storage = cfg.storage;
    const init = storage.initialState();
    this.log = new RaftLog(storage);
    const snapIndex = storage.firstIndex() - 1;
    this.confs = new ConfHistory(snapIndex, init.conf);
    // Configuration changes take effect when appended: replay those in the stored log.
    const last = storage.lastIndex();
    for (let lo = snapIndex + 1; lo <= last; ) {
      const batch = storage.entries(lo, last + 1, 64 << 20);
      for (const e of batch) if (e.type === EntryType.ConfChange) this.recordConfEntry(e);
      lo += batch.length;
    }
    const hs = init.hardState;
    if (hs.commit > last) throw new RaftCoreError(`stored commit index ${hs.commit} is beyond the stored log's last index ${last}`);
    this.term = hs.term;
    this.vote = hs.vote;
    // A snapshot's index is committed even if the stored hard state lags behind it.
    this.log.commitTo(Math.max(hs.commit, snapIndex));
    const applied = cfg.applied ?? snapIndex;
    if (applied < snapIndex) {
      throw new RaftCoreError(`state machine applied index ${applied} is behind the log's snapshot at ${snapIndex}; restore the snapshot first`);
    }
    if (applied > this.log.committed) {
      throw new RaftCoreError(`state machine applied index ${applied} is beyond the commit index ${this.log.committed}`);
    }
    this.log.appliedTo(applied);
    this.prevHardState = { term: this.term, vote: this.vote, commit: this.log.committed };
    this.becomeFollower(this.term, NONE);
  }

  // ---- inputs ------------------------------------------------------------------------------

  tick(): void {
    if (this.state === RaftState.Leader) this.tickLeader();
    else this.tickElection();
  }

  /**
   * Starts an election now instead of after a timeout (a sole voter at start-up need not
   * wait). Does nothing on a leader or a node that cannot be elected.
   */
  campaignNow(): void {
    this.hup(false);
  }

  /** Appends a command; returns where it will be committed if all goes well. */
  propose(data: Uint8Array): { index: number; term: number } {
    this.checkCanPropose();
    const index = this.appendEntry(EntryType.Normal, data);
    return { index, term: this.term };
  }

  /**
   * Proposes on the leader, or passes the command to the leader when this node follows one
   * (all commands forwarded in one turn travel in one message). Returns where the entry went
   * when appended here; null when forwarded (the caller recognises it when it is applied).
   * A forwarded command may be lost (leader change): the caller must time out.
   */
  proposeOrForward(data: Uint8Array): { index: number; term: number } | null {
    if (this.state === RaftState.Leader) return this.propose(data);
    if (this.lead === NONE) {
      throw new ProposalDroppedError("not-leader", `${this.id} is ${raftStateName(this.state)} and knows no leader`);
    }
    this.forwardQueue.push({ term: 0, index: 0, type: EntryType.Normal, data });
    return null;
  }

  proposeConfChange(cc: ConfChange): { index: number; term: number } {
    this.checkCanPropose();
    if (this.confs.lastIndex() > this.log.committed) {
      throw new ProposalDroppedError("conf-change-pending", `configuration entry ${this.confs.lastIndex()} is not committed yet`);
    }
    if (this.log.term(this.log.committed) !== this.term) {
      throw new ProposalDroppedError("leader-not-ready", `leader of term ${this.term} has not committed an entry of its term yet`);
    }
    try {
      applyConfChange(this.confs.current(), cc);
    } catch (err) {
      throw new ProposalDroppedError("invalid-conf-change", (err as Error).message);
    }
    const index = this.appendEntry(EntryType.ConfChange, encodeConfChange(cc));
    return { index, term: this.term };
  }

  /**
   * Asks for a linearizable read point. Returns false when there is nobody to ask (no known
   * leader); otherwise a ReadState with this context appears in a later ready().
   */
  readIndex(context: number): boolean {
    if (this.state === RaftState.Leader) {
      this.leaderReadIndex(context, this.id);
      return true;
    }
    if (this.lead === NONE) return false;
    const m = message(MessageType.ReadIndex, this.id, this.lead, this.term);
    m.context = context;
    this.send(m);
    return true;
  }

  /** Hands leadership to `to` once it has the whole log. Only on the leader. */
  transferLeadership(to: NodeId): boolean {
    if (this.state !== RaftState.Leader || to === this.id || !isVoter(this.confs.current(), to)) return false;
    if (this.leadTransferee === to) return true;
    this.leadTransferee = to;
    this.electionElapsed = 0;
    const pr = this.prs.get(to)!;
    if (pr.match === this.log.lastIndex()) this.sendTimeoutNow(to);
    else this.sendAppend(to, pr, true);
    return true;
  }

  /** The node layer tells the leader how a snapshot it sent ended. */
  reportSnapshot(to: NodeId, ok: boolean): void {
    const pr = this.prs.get(to);
    if (this.state !== RaftState.Leader || !pr || pr.state !== ProgressState.Snapshot) return;
    if (!ok) pr.pendingSnapshot = 0;
    pr.becomeProbe();
    // Wait for the follower's answer to the snapshot (or a heartbeat) before probing.
    pr.probeSent = ok;
  }

  /** The node layer could not deliver a message to `to` (connection down). */
  reportUnreachable(to: NodeId): void {
    const pr = this.prs.get(to);
    if (this.state === RaftState.Leader && pr && pr.state === ProgressState.Replicate) pr.becomeProbe();
  }

  step(m: Message): void {
    if (m.term > this.term) {
      if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
        const force = m.context === TRANSFER_CONTEXT;
        const inLease = this.checkQuorum && this.lead !== NONE && this.electionElapsed < this.electionTick;
        // A node that heard from a leader recently ignores elections (disruptive servers, §4.2.3).
        if (!force && inLease) return;
      }
      if (m.type === MessageType.PreVote) {
        // Answered below without changing our term.
      } else if (m.type === MessageType.PreVoteResp && !m.reject) {
        // A grant for the term we would campaign in: counted below.
      } else {
        const fromLeader = m.type === MessageType.App || m.type === MessageType.Heartbeat || m.type === MessageType.Snap;
        this.becomeFollower(m.term, fromLeader ? m.from : NONE);
      }
    } else if (m.term < this.term) {
      if ((this.checkQuorum || this.preVote) && (m.type === MessageType.App || m.type === MessageType.Heartbeat)) {
        // A stale leader (e.g. healed from a partition) learns our term and steps down.
        this.send(message(MessageType.AppResp, this.id, m.from, this.term));
      } else if (m.type === MessageType.PreVote) {
        const r = message(MessageType.PreVoteResp, this.id, m.from, this.term);
        r.reject = true;
        this.send(r);
      }
      return;
    }

    if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
      this.handleVoteRequest(m);
      return;
    }
    switch (this.state) {
      case RaftState.Leader:
        this.stepLeader(m);
        break;
      case RaftState.Candidate:
      case RaftState.PreCandidate:
        this.stepCandidate(m);
        break;
      case RaftState.Follower:
        this.stepFollower(m);
        break;
    }
  }

  // ---- outputs -----------------------------------------------------------------------------

  hasReady(): boolean {
    if (this.msgs.length > 0 || this.msgsAfterPersist.length > 0 || this.readStates.length > 0) return true;
    if (this.appendPending || this.readOnly.broadcastPending || this.forwardQueue.length > 0) return true;
    if (this.log.hasUnstable() || this.log.hasNextCommitted()) return true;
    return !isHardStateEqual(this.hardState(), this.prevHardState);
  }

  ready(): Ready {
    if (this.lastReady) throw new RaftCoreError("ready() called again before advance()");
    if (this.state === RaftState.Leader) {
      if (this.appendPending) this.bcastAppend();
      if (this.readOnly.broadcastPending) this.bcastHeartbeat();
    }
    this.appendPending = false;
    if (this.forwardQueue.length > 0) {
      if (this.lead !== NONE && this.state !== RaftState.Leader) {
        const m = message(MessageType.Prop, this.id, this.lead, this.term);
        m.entries = this.forwardQueue;
        this.send(m);
      }
      this.forwardQueue = [];
    }
    const hs = this.hardState();
    const committedEntries = this.log.nextCommitted(this.maxCommittedSize);
    const rd: Ready = {
      softState: { lead: this.lead, state: this.state, term: this.term },
      hardState: isHardStateEqual(hs, this.prevHardState) ? null : hs,
      entries: this.log.unstableEntries().slice(),
      snapshot: this.log.pendingSnapshot(),
      committedEntries,
      messages: this.msgs,
      messagesAfterPersist: this.msgsAfterPersist,
      readStates: this.readStates,
    };
    this.msgs = [];
    this.msgsAfterPersist = [];
    this.readStates = [];
    if (committedEntries.length > 0) this.log.acceptApplying(committedEntries[committedEntries.length - 1]!.index);
    this.lastReady = rd;
    return rd;
  }

  /** Everything in the last ready() is persisted, sent and applied. */
  advance(): void {
    const rd = this.lastReady;
    if (!rd) throw new RaftCoreError("advance() without a ready()");
    this.lastReady = null;
    if (rd.hardState) this.prevHardState = rd.hardState;
    if (rd.snapshot) {
      this.log.stableSnapTo(rd.snapshot.meta.index);
      this.log.appliedTo(rd.snapshot.meta.index);
    }
    if (rd.entries.length > 0) {
      const last = rd.entries[rd.entries.length - 1]!;
      this.log.stableTo(last.index, last.term);
    }
    if (rd.committedEntries.length > 0) this.log.appliedTo(rd.committedEntries[rd.committedEntries.length - 1]!.index);
    if (this.state === RaftState.Leader) {
      // The leader counts itself toward a quorum only for what it has persisted.
      const self = this.prs.get(this.id);
      if (self && self.maybeUpdate(this.log.stableLastIndex()) && this.maybeCommit()) this.afterCommit();
    }
  }

  hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  /** The configuration at index i (for snapshots taken at i). */
  confAt(i: number): ConfState {
    return cloneConf(this.confs.at(i));
  }

  conf(): ConfState {
    return cloneConf(this.confs.current());
  }

  /** Index of the entry that set the current configuration (0 = the initial one). */
  confIndex(): number {
    return this.confs.lastIndex();
  }

  status(): Status {
    const progress: PeerStatus[] = [];
    if (this.state === RaftState.Leader) {
      for (const [id, pr] of this.prs) {
        progress.push({ id, match: pr.match, next: pr.next, state: pr.state, isLearner: pr.isLearner, recentActive: pr.recentActive, active: id === this.id || pr.recentActive || pr.activeBefore });
      }
    }
    return {
      id: this.id,
      term: this.term,
      vote: this.vote,
      commit: this.log.committed,
      applied: this.log.applied,
      lastIndex: this.log.lastIndex(),
      lead: this.lead,
      state: this.state,
      conf: this.conf(),
      progress,
      activityKnown: this.state === RaftState.Leader && this.ticksAsLeader >= this.electionTick,
    };
  }

  // ---- state transitions -------------------------------------------------------------------

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = NONE;
      // Votes and acknowledgements of an older term still waiting for the disk would promise
      // state that the new term may already have replaced (a truncated suffix, a vote never
      // written): drop them; the sender treats them as lost.
      this.msgsAfterPersist = this.msgsAfterPersist.filter((m) => m.term >= term);
    }
    this.lead = NONE;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.randomizedElectionTimeout = this.electionTick + Math.floor(this.random() * this.electionTick);
    this.votes.clear();
    this.leadTransferee = NONE;
    this.readOnly.clear();
    this.readsAwaitingTermCommit = [];
    this.appendPending = false;
  }

  private becomeFollower(term: number, lead: NodeId): void {
    this.reset(term);
    this.lead = lead;
    this.state = RaftState.Follower;
  }

  private becomePreCandidate(): void {
    // Pre-vote changes neither term nor vote, so a failed pre-election disturbs nobody.
    this.votes.clear();
    this.lead = NONE;
    this.state = RaftState.PreCandidate;
    this.randomizedElectionTimeout = this.electionTick + Math.floor(this.random() * this.electionTick);
  }

  private becomeCandidate(): void {
    this.reset(this.term + 1);
    this.vote = this.id;
    this.state = RaftState.Candidate;
  }

  private becomeLeader(): void {
    this.ticksAsLeader = 0;
    this.reset(this.term);
    this.lead = this.id;
    this.state = RaftState.Leader;
    this.prs = new Map();
    const conf = this.confs.current();
    const next = this.log.lastIndex() + 1;
    for (const id of conf.voters) this.prs.set(id, new Progress(next, this.maxInflight, false));
    for (const id of conf.learners) this.prs.set(id, new Progress(next, this.maxInflight, true));
    const self = this.prs.get(this.id)!;
    self.becomeReplicate();
    self.match = this.log.stableLastIndex();
    self.next = this.log.lastIndex() + 1;
    self.recentActive = true;
    this.log$(`became leader at term ${this.term}`);
    // The no-op lets the leader commit entries of earlier terms (§5.4.2) and serve reads.
    this.appendEntry(EntryType.Normal, new Uint8Array(0));
  }

  private promotable(): boolean {
    return isVoter(this.confs.current(), this.id) && this.log.pendingSnapshot() === null;
  }

  private hup(transfer: boolean): void {
    if (this.state === RaftState.Leader || !this.promotable()) return;
    if (this.preVote && !transfer) this.campaign(true, false);
    else this.campaign(false, transfer);
  }

  private campaign(pre: boolean, transfer: boolean): void {
    let voteTerm: number;
    if (pre) {
      this.becomePreCandidate();
      voteTerm = this.term + 1;
    } else {
      this.becomeCandidate();
      voteTerm = this.term;
    }
    this.votes.set(this.id, true);
    if (this.pollVotes() !== VoteResult.Pending) return;
    const type = pre ? MessageType.PreVote : MessageType.Vote;
    const lastIndex = this.log.lastIndex();
    const lastTerm = this.log.lastTerm();
    for (const id of this.confs.current().voters) {
      if (id === this.id) continue;
      const m = message(type, this.id, id, voteTerm);
      m.index = lastIndex;
      m.logTerm = lastTerm;
      m.context = transfer ? TRANSFER_CONTEXT : 0;
      this.send(m);
    }
  }

  /** Acts on the votes so far; returns the tally. */
  private pollVotes(): VoteResult {
    const result = tallyVotes(this.confs.current().voters, this.votes);
    if (result === VoteResult.Won) {
      if (this.state === RaftState.PreCandidate) this.campaign(false, false);
      else this.becomeLeader();
    } else if (result === VoteResult.Lost) {
      this.becomeFollower(this.term, NONE);
    }
    return result;
  }

  // ---- ticking -----------------------------------------------------------------------------

  private tickElection(): void {
    this.electionElapsed++;
    // A node that cannot campaign keeps counting, so its leader lease runs out and it will
    // answer the votes of a configuration it has not heard of yet.
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.hup(false);
    }
  }

  private tickLeader(): void {
    this.ticksAsLeader++;
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.electionTick) {
      this.electionElapsed = 0;
      if (this.checkQuorum && !this.quorumActive()) {
        this.log$(`stepping down at term ${this.term}: no quorum heard from within an election timeout`);
        this.becomeFollower(this.term, NONE);
        return;
      }
      if (this.leadTransferee !== NONE) this.leadTransferee = NONE;
    }
    if (this.heartbeatElapsed >= this.heartbeatTick) {
      this.heartbeatElapsed = 0;
      this.bcastHeartbeat();
    }
  }

  private quorumActive(): boolean {
    const voters = this.confs.current().voters;
    let active = 0;
    for (const id of voters) {
      const pr = this.prs.get(id);
      if (id === this.id || pr?.recentActive) active++;
    }
    for (const [id, pr] of this.prs) {
      if (id === this.id) continue;
      pr.activeBefore = pr.recentActive;
      pr.recentActive = false;
    }
    return active >= quorumSize(voters.length);
  }

  // ---- message handling --------------------------------------------------------------------

  private handleVoteRequest(m: Message): void {
    const pre = m.type === MessageType.PreVote;
    const canVote = this.vote === m.from || (this.vote === NONE && this.lead === NONE) || (pre && m.term > this.term);
    const respType = pre ? MessageType.PreVoteResp : MessageType.VoteResp;
    if (canVote && this.log.isUpToDate(m.index, m.logTerm)) {
      // A granted pre-vote answers in the candidate's future term so that it counts there.
      this.send(message(respType, this.id, m.from, m.term));
      if (!pre) {
        this.electionElapsed = 0;
        this.vote = m.from;
      }
    } else {
      const r = message(respType, this.id, m.from, this.term);
      r.reject = true;
      this.send(r);
    }
  }

  private stepLeader(m: Message): void {
    const pr = this.prs.get(m.from);
    switch (m.type) {
      case MessageType.AppResp:
        if (pr) this.handleAppendResponse(m, pr);
        return;
      case MessageType.HeartbeatResp:
        if (pr) this.handleHeartbeatResponse(m, pr);
        return;
      case MessageType.ReadIndex:
        // Only members may ask: an unknown node's context would be answered to nobody.
        if (isMember(this.confs.current(), m.from)) this.leaderReadIndex(m.context, m.from);
        return;
      case MessageType.Prop:
        // Dropped while leadership is being handed over; the followers' callers time out.
        if (this.leadTransferee !== NONE || !isMember(this.confs.current(), m.from)) return;
        for (const e of m.entries) if (e.type === EntryType.Normal && e.data.byteLength > 0) this.appendEntry(EntryType.Normal, e.data);
        return;
      default:
        return;
    }
  }

  private handleAppendResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    if (m.reject) {
      let hint = m.rejectHint;
      if (m.logTerm > 0) hint = this.log.findConflictByTerm(m.rejectHint, m.logTerm).index;
      if (pr.maybeDecrTo(m.index, hint)) {
        if (pr.state === ProgressState.Replicate) pr.becomeProbe();
        this.sendAppend(m.from, pr, true);
      }
      return;
    }
    const wasPaused = pr.isPaused();
    if (!pr.maybeUpdate(m.index)) {
      // Old news; but a probe answered with what we already knew still unblocks probing.
      if (pr.state === ProgressState.Probe && m.index === pr.match) {
        pr.probeSent = false;
        this.sendAppend(m.from, pr, false);
      }
      return;
    }
    if (pr.state === ProgressState.Probe) pr.becomeReplicate();
    else if (pr.state === ProgressState.Snapshot && (pr.match >= pr.pendingSnapshot || pr.match + 1 >= this.log.firstIndex())) {
      pr.becomeProbe();
      pr.becomeReplicate();
    } else if (pr.state === ProgressState.Replicate) pr.inflights.freeLE(m.index);

    if (this.maybeCommit()) this.afterCommit();
    else if (wasPaused || pr.next <= this.log.lastIndex()) this.sendAppend(m.from, pr, false);
    // sendAppend after commit is covered by afterCommit's broadcast.
    if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) this.sendTimeoutNow(m.from);
  }

  private handleHeartbeatResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    pr.probeSent = false;
    if (pr.state === ProgressState.Replicate && pr.inflights.full()) {
      // The window is full and nothing came back: free one slot so replication keeps moving
      // (if the messages were lost, the follower's rejection of the next one sends us to probe).
      pr.inflights.freeFirstOne();
    }
    // An empty AppendEntries at the follower's next index finds entries that were lost.
    if (pr.match < this.log.lastIndex()) this.sendAppend(m.from, pr, true);
    if (m.context > pr.readAck && !pr.isLearner) {
      pr.readAck = m.context;
      this.releaseReads();
    }
  }

  private stepCandidate(m: Message): void {
    switch (m.type) {
      case MessageType.App:
        this.becomeFollower(m.term, m.from);
        this.handleAppend(m);
        return;
      case MessageType.Heartbeat:
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.becomeFollower(m.term, m.from);
        this.handleSnapshot(m);
        return;
      case MessageType.VoteResp:
      case MessageType.PreVoteResp: {
        const expected = this.state === RaftState.PreCandidate ? MessageType.PreVoteResp : MessageType.VoteResp;
        if (m.type !== expected) return;
        this.votes.set(m.from, !m.reject);
        this.pollVotes();
        return;
      }
      default:
        return;
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case MessageType.App:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleAppend(m);
        return;
      case MessageType.Heartbeat:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleSnapshot(m);
        return;
      case MessageType.TimeoutNow:
        this.log$(`leadership transfer from ${m.from}: campaigning at once`);
        this.hup(true);
        return;
      case MessageType.ReadIndexResp:
        // Only our leader's answers count; a stray one must not serve someone else's read.
        if (m.from === this.lead) this.readStates.push({ index: m.index, context: m.context });
        return;
      default:
        return;
    }
  }

  private handleAppend(m: Message): void {
    const resp = message(MessageType.AppResp, this.id, m.from, this.term);
    if (m.index < this.log.committed) {
      resp.index = this.log.committed;
      this.send(resp);
      return;
    }
    const result = this.log.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    if (result) {
      if (result.appendedFrom !== 0) {
        this.confs.truncateFrom(result.appendedFrom);
        for (const e of m.entries) {
          if (e.index >= result.appendedFrom && e.type === EntryType.ConfChange) this.recordConfEntry(e);
        }
      }
      resp.index = result.lastNew;
      this.send(resp);
      return;
    }
    const hint = this.log.findConflictByTerm(Math.min(m.index, this.log.lastIndex()), m.logTerm);
    resp.index = m.index;
    resp.reject = true;
    resp.rejectHint = hint.index;
    resp.logTerm = hint.term;
    this.send(resp);
  }

  private handleHeartbeat(m: Message): void {
    this.log.commitTo(Math.min(m.commit, this.log.lastIndex()));
    const resp = message(MessageType.HeartbeatResp, this.id, m.from, this.term);
    resp.context = m.context;
    this.send(resp);
  }

  private handleSnapshot(m: Message): void {
    const snap = m.snapshot;
    const resp = message(MessageType.AppResp, this.id, m.from, this.term);
    if (snap && this.restore(snap)) {
      this.log$(`installed snapshot at ${snap.meta.index} (term ${snap.meta.term}) from ${m.from}`);
      resp.index = this.log.lastIndex();
    } else {
      resp.index = this.log.committed;
    }
    this.send(resp);
  }

  /** Takes the snapshot unless we already have what it covers. */
  private restore(snap: Snapshot): boolean {
    if (snap.meta.index <= this.log.committed) return false;
    if (this.log.matchTerm(snap.meta.index, snap.meta.term)) {
      // Our log already holds the snapshot's last entry: just commit up to it.
      this.log.commitTo(snap.meta.index);
      return false;
    }
    this.log.restore(snap);
    this.confs.reset(snap.meta.index, snap.meta.conf);
    return true;
  }

  // ---- leader: replication -----------------------------------------------------------------

  private checkCanPropose(): void {
    if (this.state !== RaftState.Leader) {
      throw new ProposalDroppedError("not-leader", `${this.id} is ${raftStateName(this.state)} (leader: ${this.lead || "unknown"})`);
    }
    if (this.leadTransferee !== NONE) {
      throw new ProposalDroppedError("transferring", `leadership is being transferred to ${this.leadTransferee}`);
    }
  }

  private appendEntry(type: EntryType, data: Uint8Array): number {
    const index = this.log.lastIndex() + 1;
    const e: Entry = { term: this.term, index, type, data };
    this.log.append([e]);
    if (type === EntryType.ConfChange) this.recordConfEntry(e);
    this.appendPending = true;
    return index;
  }

  /** Applies a configuration entry as it enters the log (dissertation §4.1). */
  private recordConfEntry(e: Entry): void {
    let next: ConfState;
    try {
      next = applyConfChange(this.confs.current(), decodeConfChange(e.data));
    } catch (err) {
      // The leader validated it; a change that no longer applies leaves the configuration as is.
      this.log$(`ignoring configuration entry ${e.index}: ${(err as Error).message}`);
      next = cloneConf(this.confs.current());
    }
    this.confs.push(e.index, next);
    if (this.state === RaftState.Leader) this.syncProgress(next);
  }

  /** Adds and removes progress trackers to match the configuration. */
  private syncProgress(conf: ConfState): void {
    for (const id of [...this.prs.keys()]) {
      if (!isMember(conf, id) && id !== this.id) this.prs.delete(id);
    }
    for (const id of [...conf.voters, ...conf.learners]) {
      const learner = isLearner(conf, id);
      const pr = this.prs.get(id);
      if (pr) pr.isLearner = learner;
      else {
        const fresh = new Progress(this.log.lastIndex(), this.maxInflight, learner);
        fresh.recentActive = true;
        this.prs.set(id, fresh);
      }
    }
    if (this.leadTransferee !== NONE && !isVoter(conf, this.leadTransferee)) this.leadTransferee = NONE;
    // A smaller quorum may now be satisfied.
    if (this.maybeCommit()) this.afterCommit();
    this.releaseReads();
  }

  private bcastAppend(): void {
    for (const [id, pr] of this.prs) if (id !== this.id) this.sendAppend(id, pr, true);
  }

  /**
   * Sends what the follower lacks: in the replicate state, as many messages as the in-flight
   * window allows; in probe, one. Returns whether anything was sent.
   */
  private sendAppend(to: NodeId, pr: Progress, sendIfEmpty: boolean): boolean {
    let sent = false;
    for (;;) {
      if (pr.isPaused()) return sent;
      const prevIndex = pr.next - 1;
      const prevTerm = this.log.term(prevIndex);
      if (prevTerm === undefined || pr.next < this.log.firstIndex()) return this.sendSnapshot(to, pr) || sent;
      const last = this.log.lastIndex();
      const ents = pr.next <= last ? this.log.slice(pr.next, last + 1, this.maxSizePerMsg) : [];
      if (ents.length === 0 && (!sendIfEmpty || sent)) return sent;
      const m = message(MessageType.App, this.id, to, this.term);
      m.index = prevIndex;
      m.logTerm = prevTerm;
      m.entries = ents;
      m.commit = this.log.committed;
      this.send(m);
      pr.sentEntries(prevIndex + ents.length, ents.length);
      sent = true;
      if (pr.state !== ProgressState.Replicate || ents.length === 0) return sent;
    }
  }

  private sendSnapshot(to: NodeId, pr: Progress): boolean {
    if (!pr.recentActive) return false;
    const snap = this.log.storage.snapshot();
    if (!snap || snap.meta.index === 0) return false;
    const m = message(MessageType.Snap, this.id, to, this.term);
    m.snapshot = snap;
    this.send(m);
    pr.becomeSnapshot(snap.meta.index);
    this.log$(`sending snapshot at ${snap.meta.index} to ${to} (its match ${pr.match})`);
    return true;
  }

  private bcastHeartbeat(): void {
    this.readOnly.broadcastPending = false;
    const round = this.readOnly.round;
    for (const [id, pr] of this.prs) {
      if (id === this.id) continue;
      const m = message(MessageType.Heartbeat, this.id, id, this.term);
      // Never past what the follower is known to hold: its log may still diverge beyond it.
      m.commit = Math.min(pr.match, this.log.committed);
      m.context = round;
      this.send(m);
    }
  }

  private sendTimeoutNow(to: NodeId): void {
    this.send(message(MessageType.TimeoutNow, this.id, to, this.term));
  }

  private maybeCommit(): boolean {
    const voters = this.confs.current().voters;
    const matches: number[] = [];
    for (const id of voters) matches.push(this.prs.get(id)?.match ?? 0);
    if (matches.length === 0) return false;
    return this.log.maybeCommit(majorityValue(matches), this.term);
  }

  private afterCommit(): void {
    this.appendPending = true;
    if (this.readsAwaitingTermCommit.length > 0 && this.log.term(this.log.committed) === this.term) {
      const waiting = this.readsAwaitingTermCommit;
      this.readsAwaitingTermCommit = [];
      for (const r of waiting) this.leaderReadIndex(r.context, r.from);
    }
    if (!isVoter(this.confs.at(this.log.committed), this.id)) {
      // Our removal is committed: hand over to the most up-to-date voter and step down.
      let best: NodeId = NONE;
      let bestMatch = -1;
      for (const id of this.confs.current().voters) {
        const pr = this.prs.get(id);
        if (pr && pr.match > bestMatch) {
          best = id;
          bestMatch = pr.match;
        }
      }
      this.bcastAppend();
      if (best !== NONE && bestMatch === this.log.lastIndex()) this.sendTimeoutNow(best);
      this.log$(`removed from the configuration at ${this.log.committed}: stepping down`);
      this.becomeFollower(this.term, NONE);
    }
  }

  // ---- leader: reads -----------------------------------------------------------------------

  private leaderReadIndex(context: number, from: NodeId): void {
    if (this.log.term(this.log.committed) !== this.term) {
      this.readsAwaitingTermCommit.push({ context, from });
      return;
    }
    const voters = this.confs.current().voters;
    if (voters.length === 1 && voters[0] === this.id) {
      this.answerRead(this.log.committed, context, from);
      return;
    }
    this.readOnly.add(this.log.committed, context, from);
  }

  private releaseReads(): void {
    if (this.state !== RaftState.Leader || this.readOnly.size() === 0) return;
    const acks: number[] = [];
    for (const id of this.confs.current().voters) {
      acks.push(id === this.id ? this.readOnly.round : (this.prs.get(id)?.readAck ?? 0));
    }
    for (const r of this.readOnly.release(majorityValue(acks))) this.answerRead(r.index, r.context, r.from);
  }

  private answerRead(index: number, context: number, from: NodeId): void {
    if (from === this.id) {
      this.readStates.push({ index, context });
      return;
    }
    const m = message(MessageType.ReadIndexResp, this.id, from, this.term);
    m.index = index;
    m.context = context;
    this.send(m);
  }

  // ---- plumbing ----------------------------------------------------------------------------

  private send(m: Message): void {
    // A leader's replication traffic may overlap its own fsync (§10.2.1), but only once its
    // term is durable: a single voter elects itself within one tick, and a crash before that
    // term reached the disk would let it win the same term again with a different log.
    // A forwarded proposal promises nothing about our state: it may go at once.
    if (m.type === MessageType.Prop) {
      this.msgs.push(m);
      return;
    }
    const immediate =
      this.state === RaftState.Leader &&
      this.term === this.prevHardState.term &&
      (m.type === MessageType.App || m.type === MessageType.Heartbeat || m.type === MessageType.Snap || m.type === MessageType.TimeoutNow || m.type === MessageType.ReadIndexResp);
    if (immediate) this.msgs.push(m);
    else this.msgsAfterPersist.push(m);
  }

  private log$(line: string): void {
    this.logger?.(`[${this.id} t${this.term}] ${line}`);
  }
}

/** The entries that bootstrap a brand-new cluster: one AddVoter per initial member, committed. */
export function bootstrapEntries(voters: NodeId[]): Entry[] {
  return voters.map((id, i) => ({
    term: 1,
    index: i + 1,
    type: EntryType.ConfChange,
    data: encodeConfChange({ type: ConfChangeType.AddVoter, nodeId: id, context: new Uint8Array(0) }),
  }));
}

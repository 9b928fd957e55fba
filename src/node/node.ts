// RaftNode: runs the consensus core on real time, the LMDB log, the LMDB state machine and
// the TCP transport. The only module that knows all the others.
//
// The loop (drain): take one ready(); send what may go at once; persist entries + hard state in
// one fsync'd transaction (while it is in flight, new proposals pile up in the core: the next
// ready carries them all — group commit); send the messages that promise persisted state;
// apply committed entries in batches; resolve the waiting proposals and reads; advance().

import { ProposalDroppedError, RaftCore, RaftState, type Ready, type Status as RaftStatus, raftStateName } from "../raft/core.ts";
import {
  type ConfChange,
  ConfChangeType,
  type Entry,
  EntryType,
  type Message,
  NONE,
  type NodeId,
  decodeConfChange,
  encodeConfChange,
} from "../raft/messages.ts";
import { type Storage } from "../raft/storage.ts";
import { type ApplyOutcome, type FsmEntry, type KvEvent, type KvRecord, KvStore, type RangeQuery } from "../storage/fsm.ts";
import { type RangeResult } from "../storage/apply-result.ts";
import { socketAddress } from "../net/host-port.ts";
import { type PeerAddress, RaftLogStore, samePeerAddress } from "../storage/raft-log-store.ts";
import { ProgressState } from "../raft/progress.ts";
import { PeerTransport } from "../transport/transport.ts";
import { isMember, isVoter } from "../raft/membership.ts";
import { DeadlineError, NodeIdMismatchError, NodeRemovedError, NodeStoppedError, StorageMismatchError, NotLeaderError, ProposalLostError, UnavailableError } from "./errors.ts";
import { type Logger } from "./logger.ts";
import { type ClusterView, Membership, type MembershipHost, type MemberState, mostUpToDateVoter } from "./membership.ts";
import { decodePeerContext, encodePeerContext } from "./peer-context.ts";
import { ProposalIds, unwrapProposal, wrapProposal } from "./proposal-id.ts";
import { readRemovalMarker, removalMarkerPath, writeRemovalMarker } from "./removal-marker.ts";
import { readSnapshotEnvelope, writeSnapshotEnvelope } from "./snapshot-envelope.ts";
import { backupChunks } from "../storage/backup-file.ts";
import { statSync } from "node:fs";

export interface JoinResult {
  clusterId: string;
  peers: Map<NodeId, PeerAddress>;
  /** Index of the entry that added this node (0 if the member did not say). */
  joinedAt: number;
}

export interface NodeOptions {
  id: NodeId;
  grpcAddr: string;
  /** Where the transport listens. */
  raftAddr: string;
  /** What the other members dial to reach this node. */
  raftAdvertiseAddr: string;
  logDir: string;
  kvDir: string;
  /** Entries applied to the state machine per write transaction (0 = one by one). */
  batchSize: number;
  versionKeepNum: number;
  snapshotThreshold: number;
  snapshotIntervalMs: number;
  trailingLogs: number;
  noSync: boolean;
  tickMs: number;
  electionTicks: number;
  heartbeatTicks: number;
  logger: Logger;
}

interface ProposalWaiter {
  id: number;
  /** Where the entry went when appended here (as leader); 0 when passed to the leader. */
  index: number;
  term: number;
  /** A forwarded proposal may be lost with a leader change: then its outcome is unknown. */
  deadline: number;
  resolve: (o: ApplyOutcome) => void;
  reject: (e: Error) => void;
}

interface AppliedWaiter {
  version: number;
  resolve: () => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout> | null;
}

interface ReadWaiter {
  resolve: () => void;
  reject: (e: Error) => void;
}

export interface MemberInfo {
  id: NodeId;
  raftAddr: string;
  grpcAddr: string;
  isLearner: boolean;
  isLeader: boolean;
  isLocal: boolean;
}

/** A backup being streamed (openBackup): the backup file's bytes, one chunk at a time. */
export interface BackupStream {
  /** The store's version (applied index) the image is at. */
  version: number;
  next(): Promise<IteratorResult<Uint8Array>>;
  /** Ends the stream and releases its read transaction (idempotent; also after the last chunk). */
  close(): Promise<void>;
}

/** What this node reports about itself (the Status RPC). */
export interface NodeStatus {
  id: NodeId;
  clusterId: string;
  state: string;
  isLearner: boolean;
  term: number;
  commitIndex: number;
  /** Highest log index whose effects are in the state machine (= the store's version). */
  appliedIndex: number;
  logFirstIndex: number;
  logLastIndex: number;
  compactedVersion: number;
  /** Bytes of the Raft log's and the state machine's files on disk. */
  logDbBytes: number;
  kvDbBytes: number;
  /** Bytes of the state machine's pages in use. */
  kvDataBytes: number;
  /** Live keys (expired ones not yet removed by the reaper included). */
  keyCount: number;
  raftAddr: string;
  grpcAddr: string;
  leader: { id: NodeId; grpcAddr: string; term: number };
}

/** A new cluster's id: the founder's id and something unique to this founding. */
export function newClusterId(founder: NodeId): string {
  return `${founder}/${Date.now().toString(36)}${Math.floor(Math.random() * 1e9).toString(36)}`;
}

const MAX_APPLY_BYTES = 64 << 20;
const READ_TIMEOUT_FACTOR = 3;
const FORWARD_TIMEOUT_FACTOR = 5;

export { decodePeerContext, encodePeerContext } from "./peer-context.ts";

export class RaftNode implements MembershipHost {
  readonly id: NodeId;
  /** Join, add, promote, remove, replace, address updates and leadership transfer (membership.ts). */
  readonly membership: Membership;
  // The layers below are this class's own: callers use the methods of the queries section.
  private core!: RaftCore;
  private logStore!: RaftLogStore;
  private kv!: KvStore;
  private transport!: PeerTransport;
  private readonly opts: NodeOptions;
  private readonly log: Logger;

  private draining = false;
  private drainScheduled = false;
  private stopped = false;
  /** Storage is open and replayed: requests may be served. */
  started = false;
  private ticker: ReturnType<typeof setInterval> | null = null;
  private snapshotTimer: ReturnType<typeof setInterval> | null = null;
  private lastSnapshotAt = Date.now();
  private snapshotting = false;
  /** Serializes state-machine replacement (snapshot install) with applying entries. */
  private fsmLock: Promise<void> = Promise.resolve();

  /** Waiting proposals by proposal id, and (those appended here) by log index. */
  private readonly proposals = new Map<number, ProposalWaiter>();
  private readonly proposalsAt = new Map<number, ProposalWaiter>();
  private readonly proposalIds = new ProposalIds();
  private readBatch: ReadWaiter[] = [];
  /** Starts at a random point so a restarted node never reuses an id a leader may still answer. */
  private readCtx = Math.floor(Math.random() * 2 ** 52);
  private readonly readsByCtx = new Map<number, { waiters: ReadWaiter[]; deadline: number }>();
  private readonly readsByIndex: { index: number; waiters: ReadWaiter[] }[] = [];
  /** Reads waiting for a version to be applied here (min_version). */
  private appliedWaiters: AppliedWaiter[] = [];
  private peerBook = new Map<NodeId, PeerAddress>();
  private peerBookDirty = false;
  private lastLeader: NodeId = NONE;
  /** The leader forwarded proposals were last sent to (see shortenForwardedDeadlines). */
  private lastLeaderForForwards: NodeId = NONE;
  private lastState: RaftState = RaftState.Follower;
  private promoting = false;
  /** Committed entries waiting for the applier, and the applier's run (null when idle). */
  private readonly applyQueue: Entry[] = [];
  private applier: Promise<void> | null = null;
  /** Highest index whose effects are in the state machine (reads wait for it). */
  private fsmApplied = 0;
  /** The commit index on disk is behind the core's (see drainOnce). */
  private commitLagging = false;

  /**
   * Watchers of applied writes (the watch hub): the events of each applied batch, in log order,
   * and the applied index the batch brought the state machine to (called for every batch, with
   * or without events, so the hub knows how far its view of the history reaches).
   */
  onEvents: ((events: KvEvent[], appliedThrough: number) => void) | null = null;
  /**
   * The state machine was replaced by a leader's image: the writes between `from` and `to`
   * never passed through this node's apply, so its watchers cannot be told about them.
   */
  onStateReplaced: ((from: number, to: number) => void) | null = null;
  /** Leadership changes (for the TTL reaper, logs). */
  onLeaderChange: ((leader: NodeId, term: number) => void) | null = null;
  /**
   * This node learned that it is no longer a member (the marker is already on disk); the server
   * stops. Without a handler the node only stops its Raft loop.
   */
  onRemoved: ((reason: string) => void) | null = null;
  private removed = false;
  /** State-machine images installed from a leader (a backup stream open across one must end). */
  private stateReplacements = 0;

  constructor(opts: NodeOptions) {
    this.id = opts.id;
    this.opts = opts;
    this.log = opts.logger;
    this.membership = new Membership(this, opts.logger);
  }

  // ---- lifecycle ---------------------------------------------------------------------------

  /**
   * Opens storage, replays the log into the state machine (WAL replay) and starts the
   * transport. A brand-new node joins through `mode.join` (which returns the cluster id), or
   * without one founds a one-node cluster.
   */
  async start(mode: { join: (() => Promise<JoinResult>) | null }): Promise<void> {
    const marker = readRemovalMarker(this.opts.logDir);
    if (marker !== null) throw new NodeRemovedError(removalMarkerPath(this.opts.logDir), marker);
    this.logStore = RaftLogStore.open({ dir: this.opts.logDir, noSync: this.opts.noSync });
    // Before anything is written: the log holds the votes and entries of the node whose id it
    // stores, so it is refused under another one (unchanged).
    const storedId = this.logStore.nodeId();
    if (storedId !== null && storedId !== this.id) {
      await this.logStore.close();
      throw new NodeIdMismatchError(storedId, this.id, this.opts.logDir);
    }
    this.kv = KvStore.open({ dir: this.opts.kvDir, versionKeepNum: this.opts.versionKeepNum, unsafeNoSync: this.opts.noSync });
    this.logVerification();
    if (this.logStore.isEmpty() && this.logStore.clusterId() === null) {
      if (mode.join) {
        const joined = await mode.join();
        // The members' addresses, so this node can answer the leader before it has the log.
        await this.logStore.save(null, [], null, joined.peers);
        await this.logStore.setClusterId(joined.clusterId, joined.joinedAt);
      } else await this.bootstrap();
    }
    const clusterId = this.logStore.clusterId();
    if (clusterId === null) throw new UnavailableError("this node belongs to no cluster yet: start it with --join-addr, or on an empty directory without it to bootstrap");
    // A new node's id is recorded once it belongs to a cluster (a join that failed leaves the
    // directory free for another id); a directory written before ids were stored adopts this one.
    if (storedId === null) await this.logStore.setNodeId(this.id);
    this.peerBook = this.logStore.peers();

    const compactedTo = this.logStore.firstIndex() - 1;
    if (this.kv.appliedIndex < compactedTo) {
      throw new StorageMismatchError(
        `${this.kv.file}: the state machine is at applied index ${this.kv.appliedIndex}, but the Raft log ${this.logStore.file} starts after index ${compactedTo} (compacted): ` +
          `the entries in between exist nowhere on this node, so this state machine file is missing or older than the log; restore it from the same copy as the log, ` +
          `or remove this node from the cluster, empty its directories and join it again`,
      );
    }
    const hs = this.logStore.hardState();
    // The state machine may have been restored from a snapshot past the stored commit index:
    // entries up to its applied index are skipped when handed out again.
    const applied = Math.max(this.logStore.firstIndex() - 1, Math.min(this.kv.appliedIndex, hs.commit));
    this.fsmApplied = this.kv.appliedIndex;
    this.core = new RaftCore({
      id: this.id,
      storage: this.storageForCore(this.logStore),
      electionTick: this.opts.electionTicks,
      heartbeatTick: this.opts.heartbeatTicks,
      random: Math.random,
      maxSizePerMsg: 1 << 20,
      maxInflightMsgs: 256,
      applied,
      logger: (line) => this.log.debug(line),
    });
    this.log.info(`raft log: first ${this.logStore.firstIndex()} last ${this.logStore.lastIndex()} commit ${hs.commit} term ${hs.term}; state machine applied ${this.kv.appliedIndex}`);

    const listen = socketAddress(this.opts.raftAddr, "--raft-addr");
    this.transport = new PeerTransport({
      nodeId: this.id,
      clusterId,
      listenHost: listen.host,
      listenPort: listen.port,
      onMessages: (msgs) => this.onMessages(msgs),
      onSnapshot: (m, body) => this.onSnapshot(m, body),
      openSnapshot: () => this.openSnapshot(),
      onSnapshotStatus: (to, ok) => {
        this.core.reportSnapshot(to, ok);
        this.schedule();
      },
      onUnreachable: (to) => {
        this.core.reportUnreachable(to);
      },
      onRemoved: (by, removedAt, reason) => this.onRemovedByPeer(by, removedAt, reason),
      joinedAt: this.logStore.joinedAt(),
      logger: (level, line) => this.log[level](`transport: ${line}`),
    });
    await this.transport.start();
    for (const [id, addr] of this.peerBook) if (id !== this.id) this.transport.setPeer(id, addr.raft);
    for (const [id, at] of this.logStore.removedPeers()) this.transport.refuseRemoved(id, at);

    // WAL replay: committed entries after the state machine's applied index are applied
    // before the node serves anything.
    await this.replay();
    // The replay applied this node's own removal: it is shutting down, so start nothing.
    if (this.removed) return;
    let ticks = 0;
    this.ticker = setInterval(() => {
      this.core.tick();
      this.expireReads();
      this.expireProposals();
      if (++ticks % 5 === 0) this.promoteCaughtUpLearners();
      if (ticks % this.opts.electionTicks === 0) this.probeIfSilent();
      this.schedule();
    }, this.opts.tickMs);
    this.snapshotTimer = setInterval(() => void this.maybeSnapshot(true), Math.max(1000, Math.min(this.opts.snapshotIntervalMs, 60_000)));
    this.started = true;
    // A cluster of one has nobody to wait for: take leadership at once.
    const conf = this.core.conf();
    if (conf.voters.length === 1 && conf.voters[0] === this.id) this.core.campaignNow();
    this.schedule();
  }

  /**
   * The log store as the core reads it, except for the snapshot it sends a lagging follower.
   * What travels is the live state machine (openSnapshot), always at or past this node's applied
   * index, so the snapshot's metadata is claimed at that index — with its term and the
   * configuration in force there — rather than at the last recorded snapshot, which may be far
   * older. Otherwise a learner that catches up through a snapshot takes its configuration from
   * the old metadata, and until the entries in between arrive it believes it is whatever an
   * earlier node of its id was there (a voter; seen by the fault harness, seed 9001).
   */
  private storageForCore(store: RaftLogStore): Storage {
    return {
      initialState: () => store.initialState(),
      entries: (lo, hi, maxBytes) => store.entries(lo, hi, maxBytes),
      term: (i) => store.term(i),
      firstIndex: () => store.firstIndex(),
      lastIndex: () => store.lastIndex(),
      snapshot: () => {
        const recorded = store.snapshot();
        // Applied entries are committed; a state machine restored past the stored commit index
        // (see start) is not claimed beyond what this node knows to be committed.
        const at = Math.min(this.fsmApplied, this.core.log.committed);
        if (recorded && at <= recorded.meta.index) return recorded;
        const term = store.term(at);
        if (term === undefined || at === 0) return recorded;
        return { meta: { index: at, term, conf: this.core.confAt(at) }, data: new Uint8Array(0) };
      },
    };
  }

  /** Both files were checked whole when opened (every page and record checksum): say so, and how long it took. */
  private logVerification(): void {
    const lv = this.logStore.verified;
    const kv = this.kv.verified;
    this.log.info(
      `checked ${this.logStore.file}: ${lv ? `${lv.entries} entries, ${lv.records} records in ${lv.ms.toFixed(0)} ms` : "new file"}; ` +
        `${this.kv.file}: ${kv ? `${kv.records} records, ${kv.pages} pages in ${kv.ms.toFixed(0)} ms` : "new file"}`,
    );
  }

  private async bootstrap(): Promise<void> {
    const clusterId = newClusterId(this.id);
    const self: PeerAddress = { raft: this.opts.raftAdvertiseAddr, grpc: this.opts.grpcAddr };
    const entry: Entry = {
      term: 1,
      index: 1,
      type: EntryType.ConfChange,
      data: encodeConfChange({ type: ConfChangeType.AddVoter, nodeId: this.id, context: encodePeerContext(self) }),
    };
    await this.logStore.setClusterId(clusterId);
    await this.logStore.save({ term: 1, vote: NONE, commit: 1 }, [entry], null, new Map([[this.id, self]]));
    this.log.info(`bootstrapped a new cluster ${clusterId} with ${this.id} as its only voter`);
  }

  private async replay(): Promise<void> {
    const target = this.core.log.committed;
    const from = this.core.log.applied;
    if (target > from) this.log.info(`replaying log entries ${from + 1}..${target} into the state machine`);
    // Peers may already be talking to us: hold the loop so nothing else drains meanwhile.
    this.draining = true;
    try {
      while (this.core.hasReady() && this.core.log.applied < target) {
        await this.drainOnce();
      }
    } finally {
      this.draining = false;
    }
    await this.applier;
  }

  /** Stops accepting work, hands leadership over if leader, flushes and closes storage. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    if (this.core && this.core.state === RaftState.Leader) await this.handOverLeadership(2000);
    this.stopped = true;
    if (this.ticker) clearInterval(this.ticker);
    if (this.snapshotTimer) clearInterval(this.snapshotTimer);
    for (const w of this.proposals.values()) w.reject(new NodeStoppedError());
    for (const w of this.proposalsAt.values()) w.reject(new NodeStoppedError());
    this.proposals.clear();
    this.proposalsAt.clear();
    for (const r of this.readsByCtx.values()) for (const w of r.waiters) w.reject(new NodeStoppedError());
    for (const r of this.readsByIndex) for (const w of r.waiters) w.reject(new NodeStoppedError());
    this.readsByCtx.clear();
    this.readsByIndex.length = 0;
    for (const w of this.appliedWaiters) {
      if (w.timer) clearTimeout(w.timer);
      w.reject(new NodeStoppedError());
    }
    this.appliedWaiters = [];
    while (this.draining) await sleep(5);
    await this.applier;
    if (this.transport) await this.transport.stop();
    await this.fsmLock;
    if (this.kv) {
      await this.kv.flush();
      await this.kv.close();
    }
    if (this.logStore) await this.logStore.close();
  }

  private async handOverLeadership(timeoutMs: number): Promise<void> {
    const target = mostUpToDateVoter(this.clusterView());
    if (!target) return;
    this.log.info(`shutting down as leader: handing leadership to ${target.id}`);
    this.core.transferLeadership(target.id);
    this.schedule();
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline && this.core.state === RaftState.Leader) await sleep(10);
  }

  // ---- inputs ------------------------------------------------------------------------------

  private onMessages(msgs: Message[]): void {
    if (this.stopped) return;
    try {
      for (const m of msgs) this.core.step(m);
    } catch (err) {
      // The core reads the log while stepping (e.g. a term for a consistency check): a damaged
      // record there is as fatal as one met while persisting.
      this.fatal(err as Error);
      return;
    }
    this.schedule();
  }

  /**
   * Proposes a command through the leader (a follower passes it on over the peer transport);
   * resolves once this node has applied it.
   */
  propose(command: Uint8Array): Promise<ApplyOutcome> {
    if (this.stopped) return Promise.reject(new NodeStoppedError());
    const id = this.proposalIds.next();
    let at: { index: number; term: number } | null;
    try {
      at = this.core.proposeOrForward(wrapProposal(this.proposalIds.origin, id, command));
    } catch (err) {
      if (err instanceof ProposalDroppedError) {
        // A leader handing over refuses writes for up to an election timeout: "retry" (soon at
        // the new leader), not a redirect to itself.
        if (err.reason === "transferring") return Promise.reject(new UnavailableError(`${err.message}; retry`));
        return Promise.reject(this.notLeader());
      }
      throw err;
    }
    this.schedule();
    const timeout = this.opts.tickMs * this.opts.electionTicks * FORWARD_TIMEOUT_FACTOR;
    return new Promise((resolve, reject) => {
      const w: ProposalWaiter = { id, index: at?.index ?? 0, term: at?.term ?? 0, deadline: Date.now() + timeout, resolve, reject };
      this.proposals.set(id, w);
      if (at) this.proposalsAt.set(at.index, w);
    });
  }

  /** Forwarded proposals not applied in time: their fate is unknown to us; tell the caller. */
  private expireProposals(): void {
    if (this.proposals.size === 0) return;
    const now = Date.now();
    for (const [id, w] of this.proposals) {
      if (w.index === 0 && w.deadline <= now) {
        this.proposals.delete(id);
        w.reject(new UnavailableError("the write was passed to the leader but not applied in time (leader change?); it may or may not take effect"));
      }
    }
  }

  /** Proposes a membership change; resolves when it is applied. */
  proposeConfChange(cc: ConfChange): Promise<ApplyOutcome> {
    if (this.stopped) return Promise.reject(new NodeStoppedError());
    let at: { index: number; term: number };
    try {
      at = this.core.proposeConfChange(cc);
    } catch (err) {
      if (err instanceof ProposalDroppedError) {
        if (err.reason === "not-leader") return Promise.reject(this.notLeader());
        return Promise.reject(new UnavailableError(err.message));
      }
      throw err;
    }
    this.schedule();
    return new Promise((resolve, reject) => {
      const w: ProposalWaiter = { id: 0, index: at.index, term: at.term, deadline: Infinity, resolve, reject };
      this.proposalsAt.set(at.index, w);
    });
  }

  /**
   * Resolves once this node's state machine reflects every write committed before the call
   * (ReadIndex). All reads that arrive in one event-loop turn share one round.
   */
  linearizableBarrier(): Promise<void> {
    if (this.stopped) return Promise.reject(new NodeStoppedError());
    return new Promise((resolve, reject) => {
      this.readBatch.push({ resolve, reject });
      if (this.readBatch.length === 1) queueMicrotask(() => this.flushReadBatch());
    });
  }

  private flushReadBatch(): void {
    const waiters = this.readBatch;
    this.readBatch = [];
    if (waiters.length === 0) return;
    const ctx = ++this.readCtx;
    if (!this.core.readIndex(ctx)) {
      const err = new UnavailableError(`no leader is known to ${this.id} for a linearizable read (term ${this.core.term})`);
      for (const w of waiters) w.reject(err);
      return;
    }
    const timeout = this.opts.tickMs * this.opts.electionTicks * READ_TIMEOUT_FACTOR;
    this.readsByCtx.set(ctx, { waiters, deadline: Date.now() + timeout });
    this.schedule();
  }

  private expireReads(): void {
    if (this.readsByCtx.size === 0) return;
    const now = Date.now();
    for (const [ctx, r] of this.readsByCtx) {
      if (r.deadline <= now) {
        this.readsByCtx.delete(ctx);
        const err = new UnavailableError("linearizable read timed out waiting for the leader to confirm its leadership");
        for (const w of r.waiters) w.reject(err);
      }
    }
  }

  /**
   * Catch-up before promotion: a learner flagged for it (it joined, or was added as a voter)
   * becomes a voter only once it holds the whole committed log, so adding it never stalls the
   * quorum. A learner added as one waits for MemberPromote.
   */
  private promoteCaughtUpLearners(): void {
    if (this.core.state !== RaftState.Leader || this.promoting) return;
    this.promoting = true;
    this.membership
      .promoteCaughtUp()
      .catch((err: Error) => this.log.debug(`automatic promotion deferred: ${err.message}`))
      .finally(() => (this.promoting = false));
  }

  transferLeadership(to: NodeId): boolean {
    const ok = this.core.transferLeadership(to);
    this.schedule();
    return ok;
  }

  // ---- the loop ----------------------------------------------------------------------------

  private schedule(): void {
    if (this.drainScheduled || this.stopped) return;
    this.drainScheduled = true;
    // After the current turn: every proposal and message of this turn joins one ready().
    setImmediate(() => {
      this.drainScheduled = false;
      void this.drain();
    });
  }

  private async drain(): Promise<void> {
    if (this.draining || this.stopped) return;
    this.draining = true;
    try {
      while (!this.stopped && this.core.hasReady()) await this.drainOnce();
    } catch (err) {
      this.log.error(`fatal error in the raft loop: ${(err as Error).stack ?? err}`);
      this.fatal(err as Error);
    } finally {
      this.draining = false;
    }
    this.afterDrain();
  }

  private async drainOnce(): Promise<void> {
    const rd = this.core.ready();
    if (rd.messages.length > 0) this.transport.send(rd.messages);
    this.learnPeers(rd);
    const peers = this.peerBookDirty ? this.peerBook : undefined;
    this.peerBookDirty = false;
    // Raft needs term and vote on disk before answering; the commit index may lag (after a
    // restart the leader tells us again). A ready that only moves the commit index is not
    // worth an fsync: it rides along with the next write that is.
    const hs = rd.hardState;
    const durable = this.logStore.hardState();
    const onlyCommit = hs !== null && hs.term === durable.term && hs.vote === durable.vote;
    if (rd.entries.length > 0 || rd.snapshot || peers || (hs !== null && !onlyCommit)) {
      await this.logStore.save(hs ?? (this.commitLagging ? this.core.hardState() : null), rd.entries, rd.snapshot ? rd.snapshot.meta : null, peers);
      this.commitLagging = false;
    } else if (hs !== null) {
      this.commitLagging = true;
    }
    if (rd.messagesAfterPersist.length > 0) this.transport.send(rd.messagesAfterPersist);
    if (rd.committedEntries.length > 0) this.enqueueApply(rd.committedEntries);
    for (const rs of rd.readStates) {
      const r = this.readsByCtx.get(rs.context);
      if (!r) continue;
      this.readsByCtx.delete(rs.context);
      this.readsByIndex.push({ index: rs.index, waiters: r.waiters });
    }
    this.core.advance();
    this.releaseReads();
    this.noticeLeadership(rd);
  }

  private afterDrain(): void {
    if (this.stopped) return;
    void this.maybeSnapshot(false);
  }

  private fatal(err: Error): void {
    // The loop cannot continue safely (e.g. the disk failed): stop serving rather than lie.
    this.log.error(`stopping node ${this.id}: ${err.message}`);
    void this.stop().finally(() => process.exit(1));
  }

  /** Addresses of peers come with their configuration entries; persisted with the log. */
  private learnPeers(rd: Ready): void {
    for (const e of rd.entries) {
      if (e.type !== EntryType.ConfChange) continue;
      let cc: ConfChange;
      try {
        cc = decodeConfChange(e.data);
      } catch {
        continue;
      }
      const addr = decodePeerContext(cc.context);
      if (cc.type !== ConfChangeType.RemoveNode && addr) {
        // A voter has no promotion flag: its AddVoter entry clears the learner's.
        if (cc.type === ConfChangeType.AddVoter) delete addr.promote;
        const known = this.peerBook.get(cc.nodeId);
        if (!known || !samePeerAddress(known, addr) || (cc.type === ConfChangeType.AddVoter && known.promote !== undefined)) {
          this.peerBook.set(cc.nodeId, addr);
          this.peerBookDirty = true;
          if (cc.nodeId !== this.id) this.transport.setPeer(cc.nodeId, addr.raft);
        }
      }
    }
  }

  /**
   * Committed entries go to the applier, which runs beside the loop: while one state-machine
   * transaction commits, the loop persists the next batch of the log, and the entries that
   * arrive meanwhile make the next transaction larger (up to --batch-size).
   */
  private enqueueApply(entries: Entry[]): void {
    for (const e of entries) this.applyQueue.push(e);
    if (!this.applier) {
      this.applier = this.runApplier().finally(() => {
        this.applier = null;
      });
    }
  }

  private async runApplier(): Promise<void> {
    const batch = Math.max(1, this.opts.batchSize);
    try {
      while (this.applyQueue.length > 0) {
        const entries = this.applyQueue.splice(0, batch);
        await this.applyCommitted(entries);
        this.fsmApplied = Math.max(this.fsmApplied, entries[entries.length - 1]!.index);
        this.releaseReads();
      }
    } catch (err) {
      this.log.error(`applying committed entries failed: ${(err as Error).stack ?? err}`);
      this.fatal(err as Error);
    }
  }

  private async applyCommitted(entries: Entry[]): Promise<void> {
    const release = await this.lockFsm();
    try {
      await this.applyLocked(entries);
    } finally {
      release();
    }
  }

  private async applyLocked(entries: Entry[]): Promise<void> {
    const batch = Math.max(1, this.opts.batchSize);
    for (let i = 0; i < entries.length; i += batch) {
      const chunk = entries.slice(i, i + batch);
      const ids: number[] = [];
      const fsmEntries: FsmEntry[] = chunk.map((e) => {
        if (e.type !== EntryType.Normal || e.data.byteLength === 0) {
          ids.push(0);
          return { index: e.index, data: null };
        }
        const { origin, counter, command } = unwrapProposal(e.data);
        ids.push(this.proposalIds.isMine(origin) ? counter : 0);
        return { index: e.index, data: command, proposal: origin ? { origin, counter } : undefined };
      });
      const outcomes = await this.kv.applyEntriesAsync(fsmEntries);
      const byIndex = new Map<number, ApplyOutcome>();
      for (const o of outcomes) byIndex.set(o.index, o);
      const events: KvEvent[] = [];
      for (let k = 0; k < chunk.length; k++) {
        const e = chunk[k]!;
        if (e.type === EntryType.ConfChange) this.onConfApplied(e);
        const o = byIndex.get(e.index) ?? { index: e.index, version: e.index, events: [] };
        for (const ev of o.events) events.push(ev);
        // A proposal appended here at this index but overwritten by another leader's entry.
        const at = this.proposalsAt.get(e.index);
        if (at) {
          this.proposalsAt.delete(e.index);
          if (at.term !== e.term) {
            this.proposals.delete(at.id);
            at.reject(new ProposalLostError(e.index, at.term));
          } else if (at.id === 0) at.resolve(o);
        }
        const id = ids[k]!;
        const w = id !== 0 ? this.proposals.get(id) : undefined;
        if (w) {
          this.proposals.delete(id);
          // The first copy applied resolves the waiter; a copy refused while the waiter still
          // waits was one the dedupe window could not tell from an old one: its fate is unknown.
          if (o.duplicate) w.reject(new UnavailableError(`the write reached the log at index ${e.index} as a copy the state machine could not tell from an earlier one; it may or may not have taken effect`));
          else w.resolve(o);
        }
      }
      if (this.onEvents) this.onEvents(events, chunk[chunk.length - 1]!.index);
    }
    // Proposals appended here below the applied index that never passed through this apply: a
    // leader's snapshot covered their slots, so whether they were committed there or overwritten
    // cannot be told from here.
    const applied = entries[entries.length - 1]!.index;
    for (const [index, w] of this.proposalsAt) {
      if (index <= applied) {
        this.proposalsAt.delete(index);
        this.proposals.delete(w.id);
        w.reject(new UnavailableError(`the write appended at index ${index} (term ${w.term}) was covered by a snapshot from a new leader before this node applied it; it may or may not have taken effect`));
      }
    }
  }

  private onConfApplied(e: Entry): void {
    let cc: ConfChange;
    try {
      cc = decodeConfChange(e.data);
    } catch {
      return;
    }
    if (cc.type === ConfChangeType.RemoveNode) {
      // Configurations take effect when appended, so a later entry may have added the node back
      // already (then this old removal changes nothing here).
      const addedAgain = isMember(this.core.conf(), cc.nodeId);
      if (cc.nodeId === this.id) {
        // Mostly a leader that removed itself (the leader stops replicating to a removed follower
        // as soon as the entry is appended). A removal below joinedAt is the cluster's history of
        // an earlier node with this id, replayed while this one catches up.
        if (!addedAgain && e.index > this.logStore.joinedAt()) this.markRemoved(`this node (${this.id}) was removed from the cluster at log index ${e.index}`);
      } else if (!addedAgain) {
        this.transport.refuseRemoved(cc.nodeId, e.index);
        this.transport.removePeer(cc.nodeId);
        this.logStore.setRemoved(cc.nodeId, e.index).catch((err: Error) => this.log.warn(`could not record the removal of ${cc.nodeId}: ${err.message}`));
        this.peerBook.delete(cc.nodeId);
        this.peerBookDirty = true;
      }
    }
    const what = cc.type === ConfChangeType.RemoveNode ? "remove" : cc.type === ConfChangeType.AddVoter ? "add voter" : "add learner";
    const conf = this.core.conf();
    this.log.info(`membership change applied at ${e.index} (${what} ${cc.nodeId}); configuration as of the log's end: voters ${conf.voters.join(", ")}; learners ${conf.learners.join(", ") || "none"}`);
  }

  /**
   * A node that is not a voter in its own configuration and hears no leader never sends
   * anything, so it would never be told if it was removed (say a leader that removed itself and
   * restarted before applying that). Such a node dials its peers: a member that applied its
   * removal answers the handshake with Removed.
   */
  private probeIfSilent(): void {
    if (this.core.state !== RaftState.Follower || this.core.status().lead !== NONE || isVoter(this.core.conf(), this.id)) return;
    for (const id of this.peerBook.keys()) if (id !== this.id) this.transport.probe(id);
  }

  /** A member refused us because it applied our removal (see TransportOptions.onRemoved). */
  private onRemovedByPeer(by: NodeId, removedAt: number, reason: string): void {
    if (this.stopped || this.removed) return;
    // Peers compare the removal with the joinedAt of our Hello and never refuse a later node of
    // our id; this is a second line of defence against history about an earlier one.
    if (removedAt < this.logStore.joinedAt()) {
      this.log.debug(`${by} refused us as removed at index ${removedAt}, before this node joined (at ${this.logStore.joinedAt()})`);
      return;
    }
    this.markRemoved(`this node (${this.id}) was removed from the cluster at log index ${removedAt} (told by ${by}: ${reason})`);
  }

  /** Records the removal on disk (so a restart refuses), then stops serving. */
  private markRemoved(reason: string): void {
    if (this.removed) return;
    this.removed = true;
    try {
      writeRemovalMarker(this.opts.logDir, reason);
    } catch (err) {
      this.log.error(`could not write the removal marker ${removalMarkerPath(this.opts.logDir)}: ${(err as Error).message}`);
    }
    this.log.error(`${reason}: stopping; the data directories must be emptied before this node joins again`);
    if (this.onRemoved) this.onRemoved(reason);
    else void this.stop();
  }

  /**
   * Resolves once this node's state machine has applied `version` (read-your-writes on any
   * member: min_version). Rejects with DeadlineError at `deadline` (ms since the epoch).
   */
  waitApplied(version: number, deadline: number): Promise<void> {
    if (this.stopped) return Promise.reject(new NodeStoppedError());
    if (this.fsmApplied >= version) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w: AppliedWaiter = { version, resolve, reject, timer: null };
      w.timer = setTimeout(() => {
        const i = this.appliedWaiters.indexOf(w);
        if (i >= 0) this.appliedWaiters.splice(i, 1);
        reject(new DeadlineError(`this node (${this.id}) had applied ${this.fsmApplied}, not yet version ${version}, when the deadline passed`));
      }, Math.max(0, deadline - Date.now()));
      this.appliedWaiters.push(w);
    });
  }

  private releaseAppliedWaiters(): void {
    if (this.appliedWaiters.length === 0) return;
    const applied = this.fsmApplied;
    this.appliedWaiters = this.appliedWaiters.filter((w) => {
      if (w.version > applied) return true;
      if (w.timer) clearTimeout(w.timer);
      w.resolve();
      return false;
    });
  }

  private releaseReads(): void {
    this.releaseAppliedWaiters();
    if (this.readsByIndex.length === 0) return;
    const applied = this.fsmApplied;
    for (let i = 0; i < this.readsByIndex.length; ) {
      const r = this.readsByIndex[i]!;
      if (r.index <= applied) {
        this.readsByIndex.splice(i, 1);
        for (const w of r.waiters) w.resolve();
      } else i++;
    }
  }

  private noticeLeadership(rd: Ready): void {
    const { lead, state, term } = rd.softState;
    if (lead !== this.lastLeader || state !== this.lastState) {
      if (lead !== this.lastLeader) this.log.info(`leader is now ${lead || "unknown"} (term ${term}); this node is ${raftStateName(state)}`);
      this.lastLeader = lead;
      this.lastState = state;
      this.failPendingLeaderReads();
      if (lead !== this.lastLeaderForForwards) this.shortenForwardedDeadlines();
      this.onLeaderChange?.(lead, term);
    }
  }

  /**
   * Proposals passed to a leader that is no longer the leader were either appended there (then
   * they commit under the new leader, or are overwritten, within about an election timeout) or
   * dropped (a leader handing over drops what it is forwarded): waiting the full forwarding
   * timeout for them only delays the caller's retry. Leaves them two election timeouts more.
   */
  private shortenForwardedDeadlines(): void {
    this.lastLeaderForForwards = this.lastLeader;
    if (this.proposals.size === 0) return;
    const cap = Date.now() + 2 * this.electionTimeoutMs();
    for (const w of this.proposals.values()) if (w.index === 0 && w.deadline > cap) w.deadline = cap;
  }

  /**
   * A change of leader loses the read rounds in flight (the old leader's, or our requests to
   * it): fail them now so the callers retry, rather than wait for the timeout.
   */
  private failPendingLeaderReads(): void {
    if (this.readsByCtx.size === 0) return;
    const err = new UnavailableError("leadership changed while a linearizable read was waiting; retry");
    for (const r of this.readsByCtx.values()) for (const w of r.waiters) w.reject(err);
    this.readsByCtx.clear();
  }

  // ---- snapshots ---------------------------------------------------------------------------

  /**
   * The state machine is its own snapshot: once it is flushed at index i, the log up to
   * i - trailing can go. Taken after `snapshotThreshold` entries or every interval.
   */
  private async maybeSnapshot(byTimer: boolean): Promise<void> {
    if (this.snapshotting || this.stopped || !this.core) return;
    const applied = this.fsmApplied;
    const snap = this.logStore.snapshot();
    const since = applied - (snap ? snap.meta.index : 0);
    const due = since >= this.opts.snapshotThreshold || (byTimer && since > 0 && Date.now() - this.lastSnapshotAt >= this.opts.snapshotIntervalMs);
    if (!due) return;
    this.snapshotting = true;
    try {
      await this.kv.flush();
      // applied may have moved on during the flush; the flush covered at least `applied`.
      const term = this.logStore.term(applied);
      if (term === undefined || this.stopped) return;
      const compactTo = Math.max(0, applied - this.opts.trailingLogs);
      await this.logStore.recordSnapshot({ index: applied, term, conf: this.core.confAt(applied) }, Math.min(compactTo, applied));
      this.lastSnapshotAt = Date.now();
      this.log.debug(`snapshot at ${applied}; log compacted through ${compactTo}`);
    } catch (err) {
      this.log.warn(`snapshot at ${applied} failed: ${(err as Error).message}`);
    } finally {
      this.snapshotting = false;
    }
  }

  private async *openSnapshot(): AsyncIterable<Uint8Array> {
    yield writeSnapshotEnvelope(this.peerBook);
    const image = this.kv.snapshotChunks();
    yield* image.chunks;
  }

  private async onSnapshot(m: Message, body: AsyncIterable<Uint8Array>): Promise<void> {
    const meta = m.snapshot?.meta;
    if (!meta) throw new UnavailableError("snapshot message without metadata");
    const it = body[Symbol.asyncIterator]();
    const { peers, rest } = await readSnapshotEnvelope(it);
    if (meta.index <= this.core.log.committed || meta.index <= this.kv.appliedIndex) {
      // Already have it: let the core answer (it will report our position).
      for (let r = await rest.next(); !r.done; r = await rest.next()) { /* discard */ }
    } else {
      const release = await this.lockFsm();
      try {
        const before = this.fsmApplied;
        const restored = await this.kv.restoreFromChunks({ [Symbol.asyncIterator]: () => rest });
        this.fsmApplied = Math.max(this.fsmApplied, restored);
        this.releaseReads();
        this.log.info(`installed a state machine image at ${restored} from ${m.from} (snapshot ${meta.index}, term ${meta.term})`);
        this.stateReplacements++;
        this.onStateReplaced?.(before + 1, restored);
      } finally {
        release();
      }
      for (const [id, addr] of peers) {
        this.peerBook.set(id, addr);
        if (id !== this.id) this.transport.setPeer(id, addr.raft);
      }
      this.peerBookDirty = true;
    }
    this.core.step(m);
    this.schedule();
  }

  /** Waits for whoever holds the state machine (an apply or a snapshot install); returns the release. */
  private async lockFsm(): Promise<() => void> {
    let release!: () => void;
    const prev = this.fsmLock;
    this.fsmLock = new Promise<void>((r) => (release = r));
    await prev;
    return release;
  }

  // ---- queries -----------------------------------------------------------------------------

  /** Highest log index reflected in this node's state machine. */
  appliedIndex(): number {
    return this.fsmApplied;
  }

  isLeader(): boolean {
    return this.core.state === RaftState.Leader;
  }

  leader(): { id: NodeId; grpcAddr: string; raftAddr: string; term: number } {
    const id = this.core.lead;
    const addr = id ? this.peerBook.get(id) : undefined;
    return { id, grpcAddr: addr?.grpc ?? "", raftAddr: addr?.raft ?? "", term: this.core.term };
  }

  notLeader(): NotLeaderError {
    const l = this.leader();
    return new NotLeaderError(l.id, l.grpcAddr, l.term);
  }

  members(): MemberInfo[] {
    const conf = this.core.conf();
    const out: MemberInfo[] = [];
    const add = (id: NodeId, isLearner: boolean): void => {
      const a = this.peerBook.get(id);
      out.push({ id, raftAddr: a?.raft ?? "", grpcAddr: a?.grpc ?? "", isLearner, isLeader: id === this.core.lead, isLocal: id === this.id });
    };
    for (const v of conf.voters) add(v, false);
    for (const l of conf.learners) add(l, true);
    return out;
  }

  peerAddresses(): Map<NodeId, PeerAddress> {
    return new Map(this.peerBook);
  }

  /**
   * The configuration with each member's addresses and promotion flag and, on the leader, its
   * progress (how much of the log it holds, whether it answers): what membership decides on.
   */
  clusterView(): ClusterView {
    const st = this.core.status();
    const progress = new Map(st.progress.map((p) => [p.id, p]));
    const lead = this.leader();
    const members: MemberState[] = [];
    const add = (id: NodeId, isLearner: boolean): void => {
      const a = this.peerBook.get(id);
      const pr = progress.get(id);
      members.push({
        id,
        raft: a?.raft ?? "",
        grpc: a?.grpc ?? "",
        isLearner,
        isLeader: id === st.lead,
        isLocal: id === this.id,
        promote: isLearner && a?.promote !== false,
        progress: pr ? { match: pr.match, active: pr.active, replicating: pr.state === ProgressState.Replicate || pr.id === this.id } : null,
      });
    };
    for (const v of st.conf.voters) add(v, false);
    for (const l of st.conf.learners) add(l, true);
    return {
      self: this.id,
      isLeader: st.state === RaftState.Leader,
      leader: { id: lead.id, grpcAddr: lead.grpcAddr, term: lead.term },
      commit: st.commit,
      lastIndex: st.lastIndex,
      confIndex: this.core.confIndex(),
      activityKnown: st.activityKnown,
      members,
    };
  }

  electionTimeoutMs(): number {
    return this.opts.tickMs * this.opts.electionTicks;
  }

  /** The consensus core's view: term, role, indexes and (as leader) each follower's progress. */
  raftStatus(): RaftStatus {
    return this.core.status();
  }

  /** Index of the last configuration entry in the log (committed or not). */
  confIndex(): number {
    return this.core.confIndex();
  }

  firstLogIndex(): number {
    return this.logStore.firstIndex();
  }

  clusterId(): string {
    return this.logStore.clusterId() ?? "";
  }

  /** The newest value of `key` at or below `atVersion` (0 = latest) in this node's copy. */
  get(key: Uint8Array, atVersion: number, nowMs: number): KvRecord | null {
    return this.kv.get(key, atVersion, nowMs);
  }

  range(q: RangeQuery): RangeResult {
    return this.kv.range(q);
  }

  /** Events after version `after` through `through` under the prefixes (watch replay). */
  changes(after: number, through: number, prefixes: Uint8Array[], limit: number): KvEvent[] {
    return this.kv.changes(after, through, prefixes, limit);
  }

  compactedVersion(): number {
    return this.kv.compactedVersion;
  }

  expiredKeys(nowMs: number, limit: number): { key: Uint8Array; version: number }[] {
    return this.kv.expiredKeys(nowMs, limit);
  }

  kvStats(): { dataSize: number; keyCount: number } {
    return this.kv.stats();
  }

  /**
   * A consistent image of this member's state machine, as the bytes of a backup file
   * (backup-file.ts), read from one LMDB read transaction. Serializable: it is this member's
   * applied state, which lags the leader's by whatever it has not applied yet. The caller must
   * close() it whether or not it read it to the end; until then it pins the pages it reads.
   */
  openBackup(chunkBytes: number): BackupStream {
    const image = this.kv.snapshotChunks(chunkBytes);
    const chunks = backupChunks({ clusterId: this.clusterId(), nodeId: this.id, createdAtMs: Date.now() }, image);
    const replacementsAtOpen = this.stateReplacements;
    return {
      version: image.appliedIndex,
      next: async () => {
        try {
          return await chunks.next();
        } catch (err) {
          // Installing a leader's image closes the file this stream reads (LMDB then says
          // "transaction already done"): not damage, and the caller can simply ask again.
          if (this.stateReplacements !== replacementsAtOpen) {
            throw new UnavailableError(`this member's state machine was replaced by a snapshot from the leader while the backup streamed; ask again (or ask the leader)`);
          }
          throw err;
        }
      },
      close: async () => {
        try {
          await chunks.return(undefined);
        } finally {
          image.release();
        }
      },
    };
  }

  /** This node's own view (no round trip): cheap, O(1) in the data (LMDB keeps the counts). */
  status(): NodeStatus {
    const rs = this.core.status();
    const kv = this.kv.stats();
    const l = this.leader();
    return {
      id: this.id,
      clusterId: this.clusterId(),
      state: raftStateName(rs.state),
      isLearner: rs.conf.learners.includes(this.id),
      term: rs.term,
      commitIndex: rs.commit,
      appliedIndex: this.fsmApplied,
      logFirstIndex: this.logStore.firstIndex(),
      logLastIndex: rs.lastIndex,
      compactedVersion: this.kv.compactedVersion,
      logDbBytes: fileBytes(this.logStore.file),
      kvDbBytes: fileBytes(this.kv.file),
      kvDataBytes: kv.dataSize,
      keyCount: kv.keyCount,
      raftAddr: this.opts.raftAdvertiseAddr,
      grpcAddr: this.opts.grpcAddr,
      leader: { id: l.id, grpcAddr: l.grpcAddr, term: l.term },
    };
  }
}

function fileBytes(path: string): number {
  return statSync(path, { throwIfNoEntry: false })?.size ?? 0;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// A seeded, deterministic simulation of a Raft cluster: real RaftCores on MemoryStorage, a
// virtual clock, a network that drops, delays, duplicates, reorders and partitions, crashes
// that keep only what was persisted, membership changes, leadership transfers, snapshots.
// Raft's safety properties are checked after every event; the client history is checked for
// linearizability at the end, and the healed cluster must make progress.

import { ProposalDroppedError, RaftCore, RaftState, type Ready, bootstrapEntries, raftStateName } from "../../src/raft/core.ts";
import { applyConfChange } from "../../src/raft/membership.ts";
import { ConfChangeType, EntryType, type Message, MessageType, type NodeId, decodeConfChange } from "../../src/raft/messages.ts";
import { MemoryStorage } from "../../src/raft/storage.ts";
import { ORIGIN_BYTES, ProposalIds, wrapProposal } from "../../src/node/proposal-id.ts";
import { AtMostOnceChecker } from "./at-most-once.ts";
import { type HistoryOp, checkLinearizable } from "./linearizability.ts";
import { KvStateMachine, digest, encodeCommand, originHex } from "./kv.ts";
import { Prng } from "./prng.ts";
import { SafetyViolation } from "./violation.ts";

export { SafetyViolation };

export interface SimOptions {
  seed: number;
  nodes: number;
  /** Virtual time with faults; then the cluster heals and must recover. */
  faultTime?: number;
  clients?: number;
  keys?: number;
  /** Turns individual fault kinds off (for focused runs). */
  noMembership?: boolean;
  traceLimit?: number;
  /** Called with each trace line (verbose runs). */
  onTrace?: (line: string) => void;
}

export interface SimResult {
  seed: number;
  ok: boolean;
  error?: string;
  trace: string[];
  stats: SimStats;
}

export interface SimStats {
  time: number;
  opsOk: number;
  opsIndeterminate: number;
  opsFailed: number;
  leadersElected: number;
  crashes: number;
  partitions: number;
  confChanges: number;
  transfers: number;
  snapshotsSent: number;
  messages: number;
  dropped: number;
  maxCommit: number;
  /** Time the linearizability check took, and how many writes had an unknown outcome. */
  checkMs: number;
  indeterminateWrites: number;
  /** Proposals committed at two or more log indexes (a forwarded Prop delivered twice). */
  duplicatedProposals: number;
  /** Copies the dedupe window refused as older than it (never applied). */
  proposalsTooOld: number;
}

const CONF_CHANGE_NAMES: Record<ConfChangeType, string> = {
  [ConfChangeType.AddVoter]: "add-voter",
  [ConfChangeType.AddLearner]: "add-learner",
  [ConfChangeType.RemoveNode]: "remove",
};

const TICK = 10;
const ELECTION_TICK = 10;
const HEARTBEAT_TICK = 2;
const OP_TIMEOUT = 600;
const SNAPSHOT_THRESHOLD = 24;
const TRAILING_LOGS = 6;

interface PendingWrite {
  hop: HistoryOp;
  node: NodeId;
  deadline: number;
}

/**
 * The node layer's ProposalIds with an origin drawn from the run's seed instead of the OS, so
 * that a seed replays byte for byte (the real class draws 8 random bytes per process start).
 */
class SeededProposalIds extends ProposalIds {
  override origin: Uint8Array;

  constructor(origin: Uint8Array) {
    super();
    this.origin = origin;
  }
}

interface PendingRead {
  hop: HistoryOp;
  node: NodeId;
  context: number;
  /** Known once the node got its ReadState. */
  index: number | null;
  deadline: number;
}

class SimNode {
  core: RaftCore | null = null;
  /** The disk: survives crashes. */
  readonly storage = new MemoryStorage();
  fsm = new KvStateMachine();
  /** The FSM as last flushed (FSM writes are lazy; the log is the durability). */
  fsmDurable = new KvStateMachine();
  /** Last index this incarnation applied, to check applies come in order. */
  lastApplied = 0;
  /** The leader term and commit index last seen, for the commit-rule check. */
  leaderTerm = -1;
  leaderCommit = 0;
  /** Commit index last seen in this incarnation: it never goes back. */
  lastCommit = 0;
  processScheduled = false;
  /** Clocks drift: each node ticks at its own pace, so no lease-like timing can be relied on. */
  tickInterval = TICK;
  /** A ready is being written to disk; no other ready is taken until it is done. */
  persisting = false;
  /** This incarnation's proposal ids (a new origin at every start, as a real process). */
  ids: ProposalIds | null = null;
  /** This incarnation's origin in hex (the key of its pending writes). */
  origin = "";
  incarnation = 0;

  constructor(readonly id: NodeId) {}

  get alive(): boolean {
    return this.core !== null;
  }
}

interface QueuedEvent {
  time: number;
  seq: number;
  run: () => void;
}

/** A binary min-heap on (time, seq): equal times run in insertion order, deterministically. */
class EventQueue {
  private heap: QueuedEvent[] = [];
  private seq = 0;

  push(time: number, run: () => void): void {
    const ev = { time, seq: this.seq++, run };
    const h = this.heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (less(h[p]!, ev)) break;
      h[i] = h[p]!;
      i = p;
    }
    h[i] = ev;
  }

  pop(): QueuedEvent | undefined {
    const h = this.heap;
    if (h.length === 0) return undefined;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        let mv = last;
        if (l < h.length && less(h[l]!, mv)) {
          m = l;
          mv = h[l]!;
        }
        if (r < h.length && less(h[r]!, mv)) {
          m = r;
          mv = h[r]!;
        }
        if (m === i) break;
        h[i] = h[m]!;
        i = m;
      }
      h[i] = last;
    }
    return top;
  }

  get size(): number {
    return this.heap.length;
  }
}

function less(a: QueuedEvent, b: QueuedEvent): boolean {
  return a.time < b.time || (a.time === b.time && a.seq < b.seq);
}

export class Simulation {
  private readonly rng: Prng;
  private readonly nodes = new Map<NodeId, SimNode>();
  private readonly queue = new EventQueue();
  private now = 0;
  private readonly trace: string[] = [];
  private readonly traceLimit: number;
  private readonly stats: SimStats = {
    time: 0, opsOk: 0, opsIndeterminate: 0, opsFailed: 0, leadersElected: 0, crashes: 0, partitions: 0,
    confChanges: 0, transfers: 0, snapshotsSent: 0, messages: 0, dropped: 0, maxCommit: 0, checkMs: 0, indeterminateWrites: 0,
    duplicatedProposals: 0, proposalsTooOld: 0,
  };

  // Network model for this run.
  private readonly dropRate: number;
  private readonly dupRate: number;
  private readonly maxDelay: number;
  /** Small messages make AppendEntries stop short of the log's end (old-term entries alone). */
  private readonly maxSizePerMsg: number;
  private readonly clockDrift: boolean;
  /** Upper bound of the virtual time one ready's disk write takes (0: instantaneous). */
  private readonly diskDelay: number;
  private faultsOn = true;
  /** Links that are cut: "from>to". */
  private blocked = new Set<string>();

  // Checkers' global knowledge.
  private readonly leaderOfTerm = new Map<number, NodeId>();
  private readonly entryAt = new Map<string, { digest: number; prevTerm: number | undefined }>();
  private readonly appliedAt: ({ term: number; digest: number } | undefined)[] = [];
  private readonly atMostOnce: AtMostOnceChecker;
  /** Origin (hex) -> the node incarnation it belongs to ("n2#3"), for messages. */
  private readonly originLabel = new Map<string, string>();
  /** Origins come from their own stream, so that drawing them does not shift the schedule. */
  private readonly originRng: Prng;

  // Clients.
  private readonly history: HistoryOp[] = [];
  private nextOpId = 1;
  private nextReadContext = 1;
  /** By proposal ("origin:counter"): the proposing incarnation recognises its own entry. */
  private readonly pendingWrites = new Map<string, PendingWrite>();
  private readonly pendingReads: PendingRead[] = [];
  private readonly keys: string[];
  private readonly clientCount: number;
  private readonly lastLeaderOf = new Map<number, SimNode>();
  private nextSpareId = 0;

  constructor(private readonly opts: SimOptions) {
    this.rng = new Prng(opts.seed);
    this.originRng = new Prng((opts.seed ^ 0x6f726967) >>> 0);
    this.atMostOnce = new AtMostOnceChecker((o) => this.originLabel.get(o) ?? `unknown origin ${o}`);
    this.traceLimit = opts.traceLimit ?? 400;
    this.dropRate = this.rng.pick([0, 0.01, 0.05, 0.1]);
    this.dupRate = this.rng.pick([0, 0.02, 0.05]);
    this.maxDelay = this.rng.pick([2, 5, 10, 18]);
    this.diskDelay = this.rng.pick([0, 0, 3, 8]);
    this.maxSizePerMsg = this.rng.pick([1, 64, 4096]);
    this.clockDrift = this.rng.chance(0.5);
    this.keys = Array.from({ length: opts.keys ?? 3 }, (_, i) => `k${i}`);
    this.clientCount = opts.clients ?? 4;
    const ids = Array.from({ length: opts.nodes }, (_, i) => `n${i + 1}`);
    for (const id of ids) {
      const n = new SimNode(id);
      n.tickInterval = this.clockDrift ? this.rng.int(TICK - 4, TICK + 4) : TICK;
      const boot = bootstrapEntries(ids);
      n.storage.append(boot);
      n.storage.setHardState({ term: 1, vote: "", commit: boot.length });
      this.nodes.set(id, n);
      this.startNode(n);
    }
  }

  run(): SimResult {
    const faultTime = this.opts.faultTime ?? 6000;
    try {
      for (const n of this.nodes.values()) this.scheduleTick(n, this.rng.int(1, TICK));
      for (let c = 0; c < this.clientCount; c++) this.scheduleClient(c, this.rng.int(50, 300));
      this.scheduleFault(this.rng.int(100, 400), faultTime);
      this.runUntil(faultTime);
      this.heal();
      this.checkRecovery(faultTime);
      this.finishClients();
      const linStart = performance.now();
      const lin = checkLinearizable(this.history);
      this.stats.checkMs = Math.round(performance.now() - linStart);
      this.stats.indeterminateWrites = this.history.filter((h) => h.complete === null && h.op.kind !== "get").length;
      this.stats.duplicatedProposals = this.atMostOnce.duplicatedProposals;
      this.stats.proposalsTooOld = this.atMostOnce.refusedTooOld;
      if (!lin.ok) throw new SafetyViolation(`history is not linearizable on key ${lin.key}: ${lin.explanation}`);
      this.stats.time = this.now;
      return { seed: this.opts.seed, ok: true, trace: this.trace, stats: this.stats };
    } catch (err) {
      this.stats.time = this.now;
      const e = err as Error;
      return { seed: this.opts.seed, ok: false, error: `${e.name}: ${e.message}${e instanceof SafetyViolation ? "" : `\n${e.stack ?? ""}`}`, trace: this.trace, stats: this.stats };
    }
  }

  // ---- event loop --------------------------------------------------------------------------

  private runUntil(t: number, stop?: () => boolean): void {
    for (;;) {
      if (stop?.()) return;
      const ev = this.queue.pop();
      if (!ev) return;
      if (ev.time > t) {
        this.queue.push(ev.time, ev.run);
        this.now = t;
        return;
      }
      this.now = ev.time;
      ev.run();
    }
  }

  private at(delay: number, run: () => void): void {
    this.queue.push(this.now + delay, run);
  }

  private note(line: string): void {
    const l = `${String(this.now).padStart(6)} ${line}`;
    this.trace.push(l);
    if (this.trace.length > this.traceLimit) this.trace.shift();
    this.opts.onTrace?.(l);
  }

  // ---- nodes -------------------------------------------------------------------------------

  private startNode(n: SimNode): void {
    n.persisting = false;
    n.lastCommit = 0;
    n.leaderTerm = -1;
    n.fsm = n.fsmDurable.clone();
    n.lastApplied = n.fsm.applied;
    const origin = new Uint8Array(ORIGIN_BYTES);
    for (let i = 0; i < ORIGIN_BYTES; i++) origin[i] = this.originRng.int(0, 255);
    n.ids = new SeededProposalIds(origin);
    n.origin = originHex(origin);
    n.incarnation++;
    this.originLabel.set(n.origin, `${n.id}#${n.incarnation}`);
    n.core = new RaftCore({
      id: n.id,
      storage: n.storage,
      electionTick: ELECTION_TICK,
      heartbeatTick: HEARTBEAT_TICK,
      random: () => this.rng.float(),
      maxSizePerMsg: this.maxSizePerMsg,
      maxInflightMsgs: 8,
      applied: n.fsm.applied,
      logger: (line) => this.note(line),
    });
  }

  private scheduleTick(n: SimNode, delay: number): void {
    this.at(delay, () => {
      if (n.core) {
        n.core.tick();
        this.processSoon(n);
      }
      this.scheduleTick(n, n.tickInterval);
    });
  }

  private crash(n: SimNode, why: string): void {
    if (!n.core) return;
    this.note(`CRASH ${n.id} (${why}) term=${n.core.term} state=${raftStateName(n.core.state)}`);
    n.core = null;
    n.ids = null; // its writes in flight die with it: no later incarnation answers them
    this.stats.crashes++;
  }

  private restart(n: SimNode): void {
    if (n.core) return;
    this.startNode(n);
    this.note(`RESTART ${n.id} term=${n.core!.term} applied=${n.fsm.applied} commit=${n.core!.log.committed} last=${n.storage.lastIndex()}`);
    this.process(n);
  }

  /**
   * Like the real node's setImmediate batching: what happens to a node within a short while
   * (a tick, messages, client proposals) often lands in one ready().
   */
  private processSoon(n: SimNode): void {
    if (!this.rng.chance(0.5)) {
      this.process(n);
      return;
    }
    if (n.processScheduled) return;
    n.processScheduled = true;
    this.at(this.rng.int(0, 3), () => {
      n.processScheduled = false;
      this.process(n);
    });
  }

  /**
   * Drains the node's ready() batches, acting as the node layer does. With a disk delay, the
   * write of a ready takes virtual time: messages keep arriving and are stepped meanwhile, and
   * a crash before the write completes loses all of it.
   */
  private process(n: SimNode): void {
    this.checkNode(n);
    while (n.core && !n.persisting && n.core.hasReady()) {
      const core = n.core;
      const rd = core.ready();
      for (const m of rd.messages) this.send(m);
      if (this.diskDelay > 0) {
        n.persisting = true;
        this.at(this.rng.int(1, this.diskDelay), () => {
          if (n.core !== core) return; // crashed meanwhile: nothing of this ready reached the disk
          n.persisting = false;
          this.finishReady(n, core, rd);
          this.process(n);
        });
        return;
      }
      // A crash in the middle of a ready: messages sent before persisting, nothing persisted.
      if (this.faultsOn && this.rng.chance(0.01)) {
        this.crash(n, "before persisting a ready");
        return;
      }
      this.finishReady(n, core, rd);
    }
  }

  private finishReady(n: SimNode, core: RaftCore, rd: Ready): void {
    if (rd.snapshot) n.storage.applySnapshot(rd.snapshot);
    if (rd.entries.length > 0) {
      n.storage.append(rd.entries);
      this.recordPersistedEntries(n, rd.entries);
    }
    if (rd.hardState) {
      const prev = n.storage.hardState;
      if (rd.hardState.term < prev.term) throw new SafetyViolation(`${n.id} term went back from ${prev.term} to ${rd.hardState.term}`);
      if (rd.hardState.term === prev.term && prev.vote !== "" && rd.hardState.vote !== prev.vote) {
        throw new SafetyViolation(`${n.id} changed its vote in term ${prev.term} from ${prev.vote} to ${rd.hardState.vote}`);
      }
      n.storage.setHardState(rd.hardState);
    }
    for (const m of rd.messagesAfterPersist) this.send(m);
    if (rd.snapshot) {
      n.fsm = KvStateMachine.decode(rd.snapshot.data);
      if (n.fsm.applied !== rd.snapshot.meta.index) throw new SafetyViolation(`snapshot data at ${n.fsm.applied} but meta at ${rd.snapshot.meta.index}`);
      n.fsmDurable = n.fsm.clone();
      n.lastApplied = rd.snapshot.meta.index;
      this.note(`${n.id} restored snapshot at ${rd.snapshot.meta.index}`);
    }
    for (const e of rd.committedEntries) this.applyEntry(n, e.index, e.term, e.type, e.data);
    for (const rs of rd.readStates) {
      const r = this.pendingReads.find((p) => p.node === n.id && p.context === rs.context);
      if (r) r.index = rs.index;
    }
    core.advance();
    this.serveReads(n);
    this.maybeSnapshot(n);
    if (this.rng.chance(0.3)) n.fsmDurable = n.fsm.clone();
    this.checkNode(n);
  }

  private applyEntry(n: SimNode, index: number, term: number, type: EntryType, data: Uint8Array): void {
    if (index !== n.lastApplied + 1) throw new SafetyViolation(`${n.id} applied ${index} after ${n.lastApplied}`);
    n.lastApplied = index;
    const d = digest(type, data);
    const known = this.appliedAt[index];
    if (known && (known.term !== term || known.digest !== d)) {
      throw new SafetyViolation(`state machine safety: ${n.id} applied (index ${index}, term ${term}) but another node applied term ${known.term} there`);
    }
    if (!known) this.appliedAt[index] = { term, digest: d };
    this.stats.maxCommit = Math.max(this.stats.maxCommit, index);
    const a = n.fsm.apply(index, type === EntryType.Normal ? data : null);
    this.atMostOnce.applied(n.id, index, a);
    // The proposing incarnation answers its client when it applies the copy that was admitted.
    // A later copy changes nothing, so it answers nothing; nor does one its window refused. If
    // this node skipped the admitted copy (a snapshot covered it), the write stays unanswered
    // and the history treats it as of unknown outcome, which it is to this node.
    if (!a.applied || a.proposal === null || a.proposal.origin !== n.origin) return;
    const key = `${a.proposal.origin}:${a.proposal.counter}`;
    const w = this.pendingWrites.get(key);
    if (w) {
      this.pendingWrites.delete(key);
      w.hop.complete = this.now;
      w.hop.result = null;
      this.stats.opsOk++;
    }
  }

  private maybeSnapshot(n: SimNode): void {
    const core = n.core!;
    const applied = core.log.applied;
    if (applied - (n.storage.firstIndex() - 1) < SNAPSHOT_THRESHOLD) return;
    if (n.fsm.applied !== applied) throw new SafetyViolation(`${n.id} fsm applied ${n.fsm.applied} but core applied ${applied}`);
    n.storage.createSnapshot(applied, core.confAt(applied), n.fsm.encode());
    n.fsmDurable = n.fsm.clone();
    const compactTo = applied - TRAILING_LOGS;
    if (compactTo >= n.storage.firstIndex()) n.storage.compact(compactTo);
  }

  // ---- network -----------------------------------------------------------------------------

  private send(m: Message): void {
    this.stats.messages++;
    this.checkPersistedPromise(m);
    if (this.faultsOn && (this.blocked.has(`${m.from}>${m.to}`) || this.rng.chance(this.dropRate))) {
      this.stats.dropped++;
      this.onDropped(m);
      return;
    }
    const copies = this.faultsOn && this.rng.chance(this.dupRate) ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      // Now and then a message arrives very late: stale votes, appends and snapshots.
      const delay = this.faultsOn && this.rng.chance(0.01) ? this.rng.int(100, 1500) : this.rng.int(1, this.maxDelay);
      this.at(delay, () => this.deliver(m));
    }
  }

  private onDropped(m: Message): void {
    if (m.snapshot) {
      // The node layer learns a snapshot transfer failed and tells the core.
      const from = this.nodes.get(m.from);
      this.at(this.rng.int(20, 60), () => {
        if (from?.core) {
          from.core.reportSnapshot(m.to, false);
          this.process(from);
        }
      });
    }
  }

  private deliver(m: Message): void {
    const to = this.nodes.get(m.to);
    if (this.faultsOn && this.blocked.has(`${m.from}>${m.to}`)) {
      this.stats.dropped++;
      this.onDropped(m);
      return;
    }
    if (!to?.core) {
      this.onDropped(m);
      return;
    }
    if (m.snapshot) this.stats.snapshotsSent++;
    to.core.step(m);
    this.processSoon(to);
    if (m.snapshot) {
      const from = this.nodes.get(m.from);
      if (from?.core) {
        from.core.reportSnapshot(m.to, true);
        this.process(from);
      }
    }
  }

  // ---- checks ------------------------------------------------------------------------------

  private recordPersistedEntries(n: SimNode, entries: readonly { index: number; term: number; type: EntryType; data: Uint8Array }[]): void {
    for (const e of entries) {
      const key = `${e.index}:${e.term}`;
      const d = digest(e.type, e.data);
      const prevTerm = n.storage.term(e.index - 1);
      const known = this.entryAt.get(key);
      if (known) {
        if (known.digest !== d) throw new SafetyViolation(`log matching: two different entries at index ${e.index} term ${e.term} (${n.id})`);
        if (known.prevTerm !== undefined && prevTerm !== undefined && known.prevTerm !== prevTerm) {
          throw new SafetyViolation(`log matching: entry ${e.index}/${e.term} on ${n.id} follows term ${prevTerm}, elsewhere term ${known.prevTerm}`);
        }
        if (known.prevTerm === undefined && prevTerm !== undefined) known.prevTerm = prevTerm;
      } else {
        this.entryAt.set(key, { digest: d, prevTerm });
      }
    }
  }

  /** A vote or an acknowledgement promises state that must already be on the node's disk. */
  private checkPersistedPromise(m: Message): void {
    const src = this.nodes.get(m.from);
    if (!src?.core || m.reject) return;
    if (m.type === MessageType.VoteResp) {
      const hs = src.storage.hardState;
      if (hs.term !== m.term || hs.vote !== m.to) {
        throw new SafetyViolation(`persistence: ${m.from} granted its vote to ${m.to} in term ${m.term} but its disk holds term ${hs.term} vote ${hs.vote || "none"}`);
      }
    } else if (m.type === MessageType.AppResp && m.index > 0 && src.core.state !== RaftState.Leader && m.index >= src.storage.firstIndex()) {
      // The core may have moved on since it wrote the acknowledgement (a snapshot, a new
      // leader's entries); what matters is that the disk holds the acknowledged index.
      const onDisk = m.index <= src.storage.lastIndex() ? src.storage.term(m.index) : undefined;
      const inLog = src.core.log.term(m.index);
      if (onDisk === undefined) throw new SafetyViolation(`persistence: ${m.from} acknowledged entry ${m.index} before persisting it (disk: first ${src.storage.firstIndex()} last ${src.storage.lastIndex()} term ${onDisk}; log term ${src.core.log.term(m.index)}, log first ${src.core.log.firstIndex()} last ${src.core.log.lastIndex()}; to ${m.to} t${m.term})`);
    }
  }

  /**
   * What a leader commits must already be on the disks of a majority of its voters: of the
   * configuration in force at the entry, or of the one in use now (a change may have been
   * appended between the commit and this check).
   */
  private checkCommitDurable(n: SimNode): void {
    const core = n.core!;
    const c = core.log.committed;
    const term = core.log.term(c);
    const durableOn = (voters: string[]): number => {
      let durable = 0;
      for (const id of voters) {
        const st = this.nodes.get(id)?.storage;
        if (st && (st.firstIndex() - 1 >= c || (c <= st.lastIndex() && st.term(c) === term))) durable++;
      }
      return durable;
    };
    const majority = (voters: string[]): boolean => durableOn(voters) >= Math.floor(voters.length / 2) + 1;
    const now = core.conf().voters;
    if (majority(now) || majority(core.confAt(c).voters)) return;
    throw new SafetyViolation(`durability: leader ${n.id} committed ${c} (term ${term}) but only ${durableOn(now)} of its ${now.length} voters have it on disk`);
  }

  /** The configuration in use must be the one the node's own log (snapshot + entries) says. */
  private checkConfiguration(n: SimNode): void {
    const core = n.core!;
    if (core.log.hasUnstable()) return;
    let conf = n.storage.initialState().conf;
    const first = n.storage.firstIndex();
    const last = n.storage.lastIndex();
    if (last >= first) {
      for (const e of n.storage.entries(first, last + 1, Infinity)) {
        if (e.type !== EntryType.ConfChange) continue;
        try {
          conf = applyConfChange(conf, decodeConfChange(e.data));
        } catch {
          // The core ignores a change that no longer applies; so does this replay.
        }
      }
    }
    const want = JSON.stringify(conf);
    const have = JSON.stringify(core.conf());
    if (want !== have) throw new SafetyViolation(`configuration: ${n.id} uses ${have} but its log says ${want}`);
  }

  private checkNode(n: SimNode): void {
    const core = n.core;
    if (!core) return;
    if (core.log.committed < n.lastCommit) throw new SafetyViolation(`${n.id} commit index went back from ${n.lastCommit} to ${core.log.committed}`);
    n.lastCommit = core.log.committed;
    if (this.rng.chance(0.1)) this.checkConfiguration(n);
    if (core.state === RaftState.Leader) {
      // The commit rule (Figure 8): a leader only ever advances its commit index to an entry
      // of its own term.
      if (n.leaderTerm !== core.term) {
        n.leaderTerm = core.term;
        n.leaderCommit = core.log.committed;
      } else if (core.log.committed > n.leaderCommit) {
        n.leaderCommit = core.log.committed;
        const t = core.log.term(core.log.committed);
        if (t !== undefined && t !== core.term) {
          throw new SafetyViolation(`commit rule: leader ${n.id} of term ${core.term} advanced its commit index to ${core.log.committed}, an entry of term ${t}`);
        }
        this.checkCommitDurable(n);
      }
      const other = this.leaderOfTerm.get(core.term);
      if (other !== undefined && other !== n.id) {
        throw new SafetyViolation(`election safety: ${other} and ${n.id} are both leaders of term ${core.term}`);
      }
      if (other === undefined) {
        this.leaderOfTerm.set(core.term, n.id);
        this.stats.leadersElected++;
        this.note(`LEADER ${n.id} term=${core.term} last=${core.log.lastIndex()} commit=${core.log.committed}`);
        this.checkLeaderCompleteness(n);
      }
    }
  }

  /** Every entry anyone has applied must be in a new leader's log. */
  private checkLeaderCompleteness(n: SimNode): void {
    const log = n.core!.log;
    const first = log.firstIndex();
    for (let i = first; i < this.appliedAt.length; i++) {
      const a = this.appliedAt[i];
      if (!a) continue;
      const t = log.term(i);
      if (t !== a.term) {
        throw new SafetyViolation(`leader completeness: new leader ${n.id} of term ${n.core!.term} has term ${t} at ${i}, but term ${a.term} was committed there`);
      }
    }
  }

  // ---- clients -----------------------------------------------------------------------------

  private liveNodes(): SimNode[] {
    return [...this.nodes.values()].filter((n) => n.alive);
  }

  private leader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const n of this.nodes.values()) {
      if (n.core?.state === RaftState.Leader && (!best || n.core.term > best.core!.term)) best = n;
    }
    return best;
  }

  private scheduleClient(client: number, delay: number): void {
    this.at(delay, () => {
      if (!this.faultsOn && this.now > (this.opts.faultTime ?? 6000) + 3000) return;
      this.clientOp(client);
      this.scheduleClient(client, this.rng.int(5, 80));
    });
  }

  private clientOp(client: number): void {
    const key = this.rng.pick(this.keys);
    const r = this.rng.float();
    const nodes = [...this.nodes.values()];
    // Usually the client finds the leader; sometimes it asks whoever it picks.
    // Usually the client finds the current leader; sometimes it keeps using the one it knew
    // (perhaps deposed, perhaps partitioned); sometimes it asks whoever it picks.
    const r2 = this.rng.float();
    const known = this.lastLeaderOf.get(client);
    const target = r2 < 0.5 ? (this.leader() ?? this.rng.pick(nodes)) : r2 < 0.8 && known ? known : this.rng.pick(nodes);
    const l = this.leader();
    if (l) this.lastLeaderOf.set(client, l);
    if (r < 0.45) this.clientRead(client, key, target);
    else this.clientWrite(client, key, target, r < 0.9 ? "put" : "delete");
  }

  private clientWrite(client: number, key: string, target: SimNode, kind: "put" | "delete"): void {
    if (!target.core || !target.ids) return;
    const opId = this.nextOpId++;
    const value = `v${opId}`;
    const command = encodeCommand(kind === "put" ? { kind, opId, key, value } : { kind, opId, key });
    // As the node layer does: a new counter of this incarnation for every proposal.
    const counter = target.ids.next();
    const proposalKey = `${target.origin}:${counter}`;
    try {
      target.core.proposeOrForward(wrapProposal(target.ids.origin, counter, command));
    } catch (err) {
      if (err instanceof ProposalDroppedError) {
        this.stats.opsFailed++;
        return;
      }
      throw err;
    }
    const hop: HistoryOp = { id: opId, client, op: kind === "put" ? { kind, key, value } : { kind, key }, invoke: this.now, complete: null, result: null };
    this.history.push(hop);
    this.pendingWrites.set(proposalKey, { hop, node: target.id, deadline: this.now + OP_TIMEOUT });
    this.at(OP_TIMEOUT, () => {
      if (this.pendingWrites.delete(proposalKey)) this.stats.opsIndeterminate++;
    });
    this.processSoon(target);
  }

  private clientRead(client: number, key: string, target: SimNode): void {
    if (!target.core) return;
    const context = this.nextReadContext++;
    if (!target.core.readIndex(context)) {
      this.stats.opsFailed++;
      return;
    }
    const hop: HistoryOp = { id: this.nextOpId++, client, op: { kind: "get", key }, invoke: this.now, complete: null, result: null };
    this.history.push(hop);
    const r: PendingRead = { hop, node: target.id, context, index: null, deadline: this.now + OP_TIMEOUT };
    this.pendingReads.push(r);
    this.at(OP_TIMEOUT, () => {
      const i = this.pendingReads.indexOf(r);
      if (i >= 0) {
        this.pendingReads.splice(i, 1);
        this.stats.opsIndeterminate++;
      }
    });
    this.processSoon(target);
  }

  private serveReads(n: SimNode): void {
    for (let i = 0; i < this.pendingReads.length; ) {
      const r = this.pendingReads[i]!;
      if (r.node === n.id && r.index !== null && n.core && n.core.log.applied >= r.index) {
        if (r.hop.op.kind !== "get") throw new Error("read op is not a get");
        r.hop.result = n.fsm.data.get(r.hop.op.key) ?? null;
        r.hop.complete = this.now;
        this.stats.opsOk++;
        this.pendingReads.splice(i, 1);
      } else i++;
    }
  }

  private finishClients(): void {
    // Whatever is still pending is indeterminate (complete stays null).
    this.stats.opsIndeterminate += this.pendingWrites.size + this.pendingReads.length;
    this.pendingWrites.clear();
    this.pendingReads.length = 0;
  }

  // ---- faults ------------------------------------------------------------------------------

  private scheduleFault(delay: number, until: number): void {
    this.at(delay, () => {
      if (this.now >= until) return;
      this.injectFault();
      this.scheduleFault(this.rng.int(80, 500), until);
    });
  }

  private injectFault(): void {
    const all = [...this.nodes.values()];
    const kind = this.rng.int(0, this.opts.noMembership ? 6 : 8);
    switch (kind) {
      case 0:
      case 1: {
        // Crash a node (often the leader) and bring it back later.
        const victim = this.rng.chance(0.5) ? (this.leader() ?? this.rng.pick(all)) : this.rng.pick(all);
        this.crash(victim, "fault");
        this.at(this.rng.int(50, 1500), () => this.restart(victim));
        return;
      }
      case 2: {
        // Symmetric partition into two sides.
        const side = new Set(all.filter(() => this.rng.chance(0.5)).map((n) => n.id));
        this.partition((a, b) => side.has(a) !== side.has(b), "split " + [...side].join(","));
        return;
      }
      case 3: {
        // Isolate the leader.
        const l = this.leader();
        if (!l) return;
        this.partition((a, b) => a === l.id || b === l.id, `isolate leader ${l.id}`);
        return;
      }
      case 4: {
        // Asymmetric: a node can send but not receive (or the reverse).
        const v = this.rng.pick(all).id;
        const inbound = this.rng.chance(0.5);
        this.partition((a, b) => (inbound ? b === v : a === v), `${v} ${inbound ? "deaf" : "mute"}`);
        return;
      }
      case 5: {
        // A bridge: two groups that cannot talk except through one node.
        if (all.length < 3) return;
        const bridge = this.rng.pick(all).id;
        const side = new Set(all.filter((n) => n.id !== bridge && this.rng.chance(0.5)).map((n) => n.id));
        this.partition((a, b) => a !== bridge && b !== bridge && side.has(a) !== side.has(b), `bridge ${bridge}`);
        return;
      }
      case 6: {
        const l = this.leader();
        if (!l) return;
        const voters = l.core!.conf().voters.filter((v) => v !== l.id);
        if (voters.length === 0) return;
        const to = this.rng.pick(voters);
        this.note(`TRANSFER ${l.id} -> ${to}`);
        this.stats.transfers++;
        l.core!.transferLeadership(to);
        this.process(l);
        return;
      }
      default:
        // Changes come in bursts too, to exercise "one at a time" and "not before the leader
        // committed an entry of its term".
        this.changeMembership();
        if (this.rng.chance(0.5)) this.changeMembership();
        if (this.rng.chance(0.3)) this.at(this.rng.int(1, 30), () => this.changeMembership());
    }
  }

  private partition(cut: (a: NodeId, b: NodeId) => boolean, what: string): void {
    const ids = [...this.nodes.keys()];
    const links: string[] = [];
    for (const a of ids) for (const b of ids) if (a !== b && cut(a, b)) links.push(`${a}>${b}`);
    for (const l of links) this.blocked.add(l);
    this.stats.partitions++;
    this.note(`PARTITION ${what} (${links.length} links)`);
    this.at(this.rng.int(100, 1500), () => {
      for (const l of links) this.blocked.delete(l);
      this.note(`HEAL ${what}`);
    });
  }

  private changeMembership(): void {
    const l = this.leader();
    if (!l?.core) return;
    const conf = l.core.conf();
    const r = this.rng.float();
    let change: { type: ConfChangeType; nodeId: NodeId };
    if (conf.learners.length > 0 && r < 0.5) {
      change = { type: ConfChangeType.AddVoter, nodeId: this.rng.pick(conf.learners) };
    } else if (r < 0.75 && conf.voters.length + conf.learners.length < 7) {
      const id = `s${++this.nextSpareId}`;
      const n = new SimNode(id);
      n.tickInterval = this.clockDrift ? this.rng.int(TICK - 4, TICK + 4) : TICK;
      this.nodes.set(id, n);
      this.startNode(n);
      this.scheduleTick(n, this.rng.int(1, TICK));
      change = { type: this.rng.chance(0.7) ? ConfChangeType.AddLearner : ConfChangeType.AddVoter, nodeId: id };
    } else if (conf.voters.length > 2) {
      change = { type: ConfChangeType.RemoveNode, nodeId: this.rng.pick(conf.voters) };
    } else return;
    try {
      l.core.proposeConfChange({ ...change, context: new Uint8Array(0) });
      this.stats.confChanges++;
      this.note(`CONF ${l.id} proposes ${CONF_CHANGE_NAMES[change.type]} ${change.nodeId}`);
      this.process(l);
    } catch (err) {
      if (!(err instanceof ProposalDroppedError)) throw err;
    }
  }

  private heal(): void {
    this.faultsOn = false;
    this.blocked.clear();
    this.note("HEAL ALL: faults stop, every node restarts");
    for (const n of this.nodes.values()) if (!n.alive) this.restart(n);
  }

  /** Once faults stop, a leader must emerge, commit a new write, and every member catch up. */
  private checkRecovery(faultTime: number): void {
    const deadline = faultTime + 4000;
    let marker: { node: SimNode; index: number; term: number } | null = null;
    const done = (): boolean => {
      const l = this.leader();
      if (!l?.core) return false;
      if (!marker || marker.node !== l || marker.term !== l.core.term) {
        try {
          const p = l.core.propose(new Uint8Array(0));
          marker = { node: l, ...p };
        } catch (err) {
          if (err instanceof ProposalDroppedError) return false;
          throw err;
        }
        this.process(l);
      }
      if (l.core.log.applied < marker.index) return false;
      const conf = l.core.conf();
      for (const id of [...conf.voters, ...conf.learners]) {
        const n = this.nodes.get(id);
        if (!n?.core || n.core.log.applied < marker.index) return false;
      }
      return true;
    };
    this.runUntil(deadline, done);
    if (!done()) {
      const states = [...this.nodes.values()].map((n) => n.core ? `${n.id}:${raftStateName(n.core.state)} t${n.core.term} commit=${n.core.log.committed} applied=${n.core.log.applied} last=${n.core.log.lastIndex()} conf=${n.core.conf().voters.join("+")}/${n.core.conf().learners.join("+")}` : `${n.id}:down`);
      throw new SafetyViolation(`no progress ${deadline - faultTime} time units after faults stopped: ${states.join("; ")}`);
    }
    this.note(`RECOVERED: ${this.leader()!.id} leads, all members applied the marker`);
  }
}

export function runSimulation(opts: SimOptions): SimResult {
  return new Simulation(opts).run();
}

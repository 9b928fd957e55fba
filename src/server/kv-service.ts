// The seed's gRPC API (SPEC §3) over a RaftNode: validation, reads at either consistency,
// writes through the leader (a follower forwards them, one hop at most), watches, leader
// info and cluster stats; the membership RPCs (Join among them) are member-service.ts's.

import * as grpc from "@grpc/grpc-js";
import { NodeStoppedError, UnavailableError } from "../node/errors.ts";
import { type Logger } from "../node/logger.ts";
import { type BackupStream, type RaftNode } from "../node/node.ts";
import { type ApplyResult } from "../storage/apply-result.ts";
import { type Command as StorageCommand, CommandKind, encodeCommand } from "../storage/command.ts";
import { type ApplyOutcome, type KvEvent } from "../storage/fsm.ts";
import { type RbdkvClient, RbdkvService, createRbdkvClient } from "./grpc-service.ts";
import { type ServerOptions } from "./options.ts";
import { durationFromMs } from "./duration.ts";
import { RequestError, SnapshotStalledError, applyError, notLeaderStatus, toServiceError } from "./errors.ts";
import { VERSION } from "../version.ts";
import {
  type CloseSessionRequest,
  type CloseSessionResponse,
  type ClusterStatsRequest,
  type ClusterStatsResponse,
  type Command,
  type CommandResponse,
  type CompactRequest,
  type CompactResponse,
  Event_EventType,
  type LeaderInfoResponse,
  type LeaderRequest,
  type OpenSessionRequest,
  type OpenSessionResponse,
  OpType,
  type Peer,
  type RangeRequest,
  type RangeResponse,
  ReadConsistency,
  type SnapshotChunk,
  type SnapshotRequest,
  type StatusRequest,
  type StatusResponse,
  type TxnRequest,
  type TxnResponse,
  type WatchRequest,
  type WatchResponse,
} from "./gen/rbkv.ts";
import { type RequestLimits, checkKey, checkMeta, checkValue, rangeQueryOf, rangeResponseOf, ttlMsOf, txnCommandOf, txnResponseOf } from "./requests.ts";
import { type WatchMessage, type WatchOptions, WatcherExistsError, WatcherOverflowError, type WatchHub } from "./watch-hub.ts";
import { MemberService } from "./member-service.ts";

export { LEADER_INFO_TYPE_URL, RequestError } from "./errors.ts";
export { CLUSTER_ID_METADATA, PEERS_METADATA } from "./member-service.ts";

/** Set on a request a follower forwards, so the leader never forwards it again. */
const FORWARDED_METADATA = "rbkv-forwarded";
const EMPTY = new Uint8Array(0);
/** How long a forwarded request may take at the leader. */
const FORWARD_DEADLINE_MS = 30_000;
/** The longest a read waits for a version to be applied here (min_version) without a deadline. */
const MAX_VERSION_WAIT_MS = 30_000;
const DEFAULT_SESSION_TTL_MS = 5 * 60_000;
const MIN_SESSION_TTL_MS = 1000;
const MAX_SESSION_TTL_MS = 24 * 3_600_000;
const DEFAULT_PROGRESS_INTERVAL_MS = 1000;
const MIN_PROGRESS_INTERVAL_MS = 50;
const MAX_PROGRESS_INTERVAL_MS = 60_000;

/** A unary handler over a promise: its rejection becomes the call's status (errors.ts). */
function unary<Req, Res>(run: (call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
  return (call, cb) => {
    run(call).then(
      (r) => cb(null, r),
      (err) => cb(toServiceError(err)),
    );
  };
}

/** The call's deadline in ms since the epoch, capped (a wait never outlives MAX_VERSION_WAIT_MS). */
function deadlineOf(call: { getDeadline(): grpc.Deadline }): number {
  const d = call.getDeadline();
  const ms = d instanceof Date ? d.getTime() : d;
  const cap = Date.now() + MAX_VERSION_WAIT_MS;
  return Number.isFinite(ms) ? Math.min(ms, cap) : cap;
}
const DEFAULT_WATCH_CAPACITY = 1024;
/** Bytes of state machine image per SnapshotChunk (a chunk may exceed it by one record). */
const SNAPSHOT_CHUNK_BYTES = 1 << 20;
/**
 * How long a Snapshot stream may wait for its caller to take one chunk: a caller that stops
 * reading (without cancelling) would otherwise pin the read transaction, and the pages it sees,
 * for ever.
 */
const SNAPSHOT_STALL_MS = 60_000;
const MAX_WATCH_CAPACITY = 1 << 20;

export class KvService {
  private readonly forwardClients = new Map<string, RbdkvClient>();
  private closed = false;

  constructor(
    private readonly node: RaftNode,
    private readonly hub: WatchHub,
    private readonly opts: ServerOptions,
    private readonly log: Logger,
  ) {
    this.limits = {
      maxKeyBytes: opts.maxKeyBytes,
      maxValueBytes: opts.maxValueBytes,
      maxTxnOps: opts.maxTxnOps,
      maxRequestBytes: opts.maxRequestBytes,
      maxRangeLimit: opts.maxRangeLimit,
    };
    node.onStateReplaced = (from, to) => this.onStateReplaced(from, to);
    node.onLeaderChange = (leader) => {
      // leader_required watches end when this node stops leading.
      if (leader !== node.id) this.hub.closeAll(new RequestError(grpc.status.UNAVAILABLE, "this node is no longer the leader"), (id) => this.leaderOnly.has(id));
    };
  }

  private readonly leaderOnly = new Set<string>();
  private readonly limits: RequestLimits;

  /** Watchers would silently miss the writes a snapshot install skipped: end them instead. */
  private onStateReplaced(from: number, to: number): void {
    this.hub.closeAll(
      new RequestError(
        grpc.status.ABORTED,
        `this node caught up by installing a snapshot; the events of versions ${from}..${to} did not pass through it: watch again with start_version (or re-read)`,
      ),
    );
    this.hub.setPublishedThrough(to);
  }

  definition(): grpc.ServiceDefinition {
    return RbdkvService;
  }

  close(): void {
    this.closed = true;
    this.hub.closeAll(new RequestError(grpc.status.UNAVAILABLE, "the node is shutting down"));
    for (const c of this.forwardClients.values()) c.close();
    this.forwardClients.clear();
  }

  handlers(): grpc.UntypedServiceImplementation {
    return {
      Execute: unary<Command, CommandResponse>((call) => this.execute(call.request, call.metadata, deadlineOf(call))),
      Range: unary<RangeRequest, RangeResponse>((call) => this.range(call.request, deadlineOf(call))),
      Txn: unary<TxnRequest, TxnResponse>((call) => this.txn(call.request, call.metadata)),
      Compact: unary<CompactRequest, CompactResponse>((call) => this.compact(call.request, call.metadata)),
      OpenSession: unary<OpenSessionRequest, OpenSessionResponse>((call) => this.openSession(call.request, call.metadata)),
      CloseSession: unary<CloseSessionRequest, CloseSessionResponse>((call) => this.closeSession(call.request, call.metadata)),
      Watch: (call: grpc.ServerWritableStream<WatchRequest, WatchResponse>) => this.watch(call),
      LeaderInfo: (_call: grpc.ServerUnaryCall<LeaderRequest, LeaderInfoResponse>, cb: grpc.sendUnaryData<LeaderInfoResponse>) => {
        try {
          this.assertStarted();
          const info = this.leaderInfo();
          // SPEC §3 (the seed): LeaderInfo with no leader is a FAILED_PRECONDITION carrying
          // the term and the empty leader in its details.
          if (!info.leaderId) cb(notLeaderStatus(grpc.status.FAILED_PRECONDITION, `no leader is known (term ${info.term})`, info));
          else cb(null, info);
        } catch (err) {
          cb(toServiceError(err));
        }
      },
      ClusterStats: (call: grpc.ServerUnaryCall<ClusterStatsRequest, ClusterStatsResponse>, cb: grpc.sendUnaryData<ClusterStatsResponse>) => {
        try {
          this.assertStarted();
          cb(null, this.clusterStats(call.request));
        } catch (err) {
          cb(toServiceError(err));
        }
      },
      // Join, RemoveMember, MemberList, MemberAdd, MemberPromote, MemberUpdate, TransferLeadership.
      ...new MemberService(
        this.node,
        (md, call) => this.forwardToLeader(md, call),
        () => this.assertStarted(),
      ).handlers(),
      Snapshot: (call: grpc.ServerWritableStream<SnapshotRequest, SnapshotChunk>) => void this.snapshot(call),
      Status: unary<StatusRequest, StatusResponse>(async () => this.status()),
    };
  }

  private assertStarted(): void {
    if (this.closed) throw new NodeStoppedError();
    if (!this.node.started) throw new UnavailableError("the node is starting (replaying its log)");
  }

  // ---- Execute -----------------------------------------------------------------------------

  private async execute(cmd: Command, md: grpc.Metadata, deadline: number): Promise<CommandResponse> {
    this.assertStarted();
    const kv = cmd.kv;
    const key = kv?.key ?? EMPTY;
    switch (cmd.op) {
      case OpType.Get: {
        checkKey(key, this.limits);
        // A read at a version this node has not applied yet waits for it (else it would
        // answer an older value as the value at that version).
        await this.readBarrier(cmd.rc, Math.max(cmd.minVersion, kv?.version ?? 0), deadline);
        const rec = this.node.get(key, kv?.version ?? 0, Date.now());
        if (!rec) throw new RequestError(grpc.status.NOT_FOUND, `key not found${kv?.version ? ` at version ${kv.version}` : ""}`);
        return { key: rec.key, value: rec.value, meta: rec.meta, version: rec.version };
      }
      case OpType.Put:
      case OpType.Delete: {
        checkKey(key, this.limits);
        let write: StorageCommand;
        let ttlMs = 0;
        if (cmd.op === OpType.Put) {
          const value = kv?.value ?? EMPTY;
          checkValue(value, this.limits);
          const meta = kv?.meta ?? 0;
          checkMeta(meta);
          ttlMs = ttlMsOf(kv?.ttl);
          write = { kind: CommandKind.Put, key, value, meta, expireAt: ttlMs > 0 ? Date.now() + ttlMs : 0 };
        } else write = { kind: CommandKind.Delete, key };
        if (cmd.sessionId !== 0) {
          // Exactly-once: the leader stamps its clock (session expiry is decided by it) and the
          // state machine answers a retry with the stored result.
          if (!this.node.isLeader()) return this.forwardExecute(cmd, md);
          const out = await this.node.propose(encodeCommand(this.inSession(cmd.sessionId, cmd.seq, write)));
          const result = this.expectResult(out);
          if (result.kind !== "write") throw new RequestError(grpc.status.INTERNAL, `unexpected ${result.kind} result for a write`);
          return { key, value: EMPTY, meta: 0, version: result.version };
        }
        // The leader stamps a TTL's absolute expiry into the entry so every replica agrees (and
        // no follower's clock matters): a follower hands such a put to the leader's API.
        // Other writes go through the Raft transport (RaftNode.propose forwards them).
        if (ttlMs > 0 && !this.node.isLeader()) return this.forwardExecute(cmd, md);
        const out = await this.node.propose(encodeCommand(write));
        return { key, value: EMPTY, meta: 0, version: out.version };
      }
      default:
        throw new RequestError(grpc.status.INVALID_ARGUMENT, `unknown op ${cmd.op}; expected Get (1), Put (2) or Delete (3)`);
    }
  }

  /**
   * What a read must wait for before it reads this node's copy: a linearizable read the
   * leader's confirmation (ReadIndex), any read this node's applying `minVersion` (bounded by
   * the deadline).
   */
  private async readBarrier(rc: ReadConsistency, minVersion: number, deadline: number): Promise<void> {
    if (rc !== ReadConsistency.Serializable) await this.node.linearizableBarrier();
    if (minVersion > this.node.appliedIndex()) await this.node.waitApplied(minVersion, deadline);
  }

  /** Wraps a write in the client's session, stamped with this (the leader's) clock. */
  private inSession(sessionId: number, seq: number, inner: StorageCommand): StorageCommand {
    if (!Number.isSafeInteger(seq) || seq < 1) throw new RequestError(grpc.status.INVALID_ARGUMENT, `seq must be >= 1 with a session_id, got ${seq}`);
    return { kind: CommandKind.InSession, sessionId, seq, nowMs: Date.now(), inner };
  }

  /** The result of a command that has one; a refusal of the state machine becomes its status. */
  private expectResult(out: ApplyOutcome): ApplyResult {
    const r = out.result;
    if (!r) throw new RequestError(grpc.status.INTERNAL, `the command applied at ${out.index} produced no result`);
    if (r.kind === "error") throw applyError(r.code, r.message);
    return r;
  }

  private forwardExecute(cmd: Command, md: grpc.Metadata): Promise<CommandResponse> {
    return this.forwardToLeader<CommandResponse>(md, (client, out, cb) => client.execute(cmd, out, { deadline: Date.now() + FORWARD_DEADLINE_MS }, cb));
  }

  // ---- Range, Txn, Compact, sessions ---------------------------------------------------------

  private async range(req: RangeRequest, deadline: number): Promise<RangeResponse> {
    this.assertStarted();
    const q = rangeQueryOf(req, this.limits, Date.now()); // validates before any wait
    // A read at a version this node has not applied yet waits for it, as min_version does:
    // pages of one range may be served by different members.
    await this.readBarrier(req.rc, Math.max(req.minVersion, req.version), deadline);
    q.nowMs = Date.now(); // TTLs as of the read, not of the request's arrival
    return rangeResponseOf(this.node.range(q));
  }

  private async txn(req: TxnRequest, md: grpc.Metadata): Promise<TxnResponse> {
    this.assertStarted();
    // A txn's compares see TTLs at the leader's clock, and a session expires by it: the leader
    // stamps the time, so a follower hands the whole txn to the leader's API.
    if (!this.node.isLeader()) {
      return this.forwardToLeader<TxnResponse>(md, (client, out, cb) => client.txn(req, out, { deadline: Date.now() + FORWARD_DEADLINE_MS }, cb));
    }
    const txn = txnCommandOf(req, this.limits, Date.now());
    const cmd = req.sessionId !== 0 ? this.inSession(req.sessionId, req.seq, txn) : txn;
    const result = this.expectResult(await this.node.propose(encodeCommand(cmd)));
    if (result.kind !== "txn") throw new RequestError(grpc.status.INTERNAL, `unexpected ${result.kind} result for a txn`);
    return txnResponseOf(result);
  }

  private async compact(req: CompactRequest, md: grpc.Metadata): Promise<CompactResponse> {
    this.assertStarted();
    if (!this.node.isLeader()) {
      return this.forwardToLeader<CompactResponse>(md, (client, out, cb) => client.compact(req, out, { deadline: Date.now() + FORWARD_DEADLINE_MS }, cb));
    }
    if (req.version < 1) throw new RequestError(grpc.status.INVALID_ARGUMENT, "compact needs a version >= 1");
    const applied = this.node.appliedIndex();
    if (req.version > applied) throw new RequestError(grpc.status.OUT_OF_RANGE, `version ${req.version} is in the future: the store is at version ${applied}`);
    const compacted = this.node.compactedVersion();
    if (req.version <= compacted) throw new RequestError(grpc.status.OUT_OF_RANGE, `version ${req.version} is already compacted: the oldest version kept is ${compacted}`);
    const result = this.expectResult(await this.node.propose(encodeCommand({ kind: CommandKind.Compact, version: req.version })));
    if (result.kind !== "compacted") throw new RequestError(grpc.status.INTERNAL, `unexpected ${result.kind} result for a compaction`);
    this.log.info(`compacted the history below version ${result.compacted}`);
    return { compacted: result.compacted };
  }

  private async openSession(req: OpenSessionRequest, md: grpc.Metadata): Promise<OpenSessionResponse> {
    this.assertStarted();
    if (!this.node.isLeader()) {
      return this.forwardToLeader<OpenSessionResponse>(md, (client, out, cb) => client.openSession(req, out, { deadline: Date.now() + FORWARD_DEADLINE_MS }, cb));
    }
    const ttlMs = req.ttl ? ttlMsOf(req.ttl) : DEFAULT_SESSION_TTL_MS;
    if (ttlMs < MIN_SESSION_TTL_MS || ttlMs > MAX_SESSION_TTL_MS) {
      throw new RequestError(grpc.status.INVALID_ARGUMENT, `session ttl must be between ${MIN_SESSION_TTL_MS / 1000}s and ${MAX_SESSION_TTL_MS / 3_600_000}h, got ${ttlMs}ms`);
    }
    const result = this.expectResult(await this.node.propose(encodeCommand({ kind: CommandKind.SessionOpen, nowMs: Date.now(), ttlMs })));
    if (result.kind !== "session-opened") throw new RequestError(grpc.status.INTERNAL, `unexpected ${result.kind} result for a session`);
    return { sessionId: result.sessionId, ttl: durationFromMs(result.ttlMs) };
  }

  private async closeSession(req: CloseSessionRequest, md: grpc.Metadata): Promise<CloseSessionResponse> {
    this.assertStarted();
    if (!this.node.isLeader()) {
      return this.forwardToLeader<CloseSessionResponse>(md, (client, out, cb) => client.closeSession(req, out, { deadline: Date.now() + FORWARD_DEADLINE_MS }, cb));
    }
    if (req.sessionId < 1) throw new RequestError(grpc.status.INVALID_ARGUMENT, "close needs a session_id");
    this.expectResult(await this.node.propose(encodeCommand({ kind: CommandKind.SessionClose, nowMs: Date.now(), sessionId: req.sessionId })));
    return {};
  }

  private forwardClient(addr: string): RbdkvClient {
    let c = this.forwardClients.get(addr);
    if (!c) {
      c = createRbdkvClient(addr);
      this.forwardClients.set(addr, c);
    }
    return c;
  }

  // ---- Watch -------------------------------------------------------------------------------

  private watch(call: grpc.ServerWritableStream<WatchRequest, WatchResponse>): void {
    const req = call.request;
    let ended = false;
    const fail = (err: unknown): void => {
      if (ended) return;
      ended = true;
      // grpc-js turns an 'error' event on a server stream into the call's final status.
      const e = toServiceError(err);
      call.emit("error", Object.assign(new Error(e.details ?? "watch failed"), e));
    };
    try {
      this.assertStarted();
    } catch (err) {
      fail(err);
      return;
    }
    const id = req.watcherId || `watch-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    if (req.leaderRequired && !this.node.isLeader()) {
      fail(this.node.notLeader());
      return;
    }
    const capacity = Math.min(MAX_WATCH_CAPACITY, req.eventCapacity > 0 ? req.eventCapacity : DEFAULT_WATCH_CAPACITY);
    let handle;
    try {
      if (req.progressIntervalMs !== 0 && (req.progressIntervalMs < MIN_PROGRESS_INTERVAL_MS || req.progressIntervalMs > MAX_PROGRESS_INTERVAL_MS)) {
        throw new RequestError(grpc.status.INVALID_ARGUMENT, `progress_interval_ms must be between ${MIN_PROGRESS_INTERVAL_MS} and ${MAX_PROGRESS_INTERVAL_MS}, got ${req.progressIntervalMs}`);
      }
      // Everything applied here has been published to the hub (the applier publishes before it
      // advances the applied index), so this never claims events the hub has not seen.
      this.hub.setPublishedThrough(this.node.appliedIndex());
      const opts: WatchOptions = {
        startVersion: req.startVersion,
        progressIntervalMs: req.progressNotify ? req.progressIntervalMs || DEFAULT_PROGRESS_INTERVAL_MS : undefined,
      };
      handle = this.hub.register(
        id,
        req.prefixes,
        capacity,
        {
          write: (m: WatchMessage) => call.write({ watcherId: id, event: m.kind === "event" ? toPbEvent(m.event, id) : progressEvent(m.version, id) }),
          fail: (err: Error) => fail(err instanceof WatcherOverflowError ? new RequestError(grpc.status.RESOURCE_EXHAUSTED, err.message) : err),
        },
        opts,
      );
    } catch (err) {
      if (err instanceof WatcherExistsError) fail(new RequestError(grpc.status.ALREADY_EXISTS, err.message));
      else fail(err);
      return;
    }
    if (req.leaderRequired) this.leaderOnly.add(id);
    const h = handle;
    call.on("drain", () => h.drain());
    const cleanup = (): void => {
      this.leaderOnly.delete(id);
      h.close(null);
    };
    call.on("cancelled", cleanup);
    call.on("close", cleanup);
    call.on("error", cleanup);
  }

  // ---- Snapshot, Status ----------------------------------------------------------------------

  /**
   * Streams this member's backup (RaftNode.openBackup) with backpressure: the next chunk is read
   * from LMDB only once the previous one has been handed to the transport (its write callback) and
   * the stream is not over its high-water mark, so a slow caller holds at most about one chunk
   * here. A cancelled call, a deadline, or a caller that takes nothing for SNAPSHOT_STALL_MS ends
   * the stream and releases its read transaction.
   */
  private async snapshot(call: grpc.ServerWritableStream<SnapshotRequest, SnapshotChunk>): Promise<void> {
    let ended = false;
    /** The caller went away (cancel, deadline, closed connection) before the stream was done. */
    let callerGone = false;
    let wake: (() => void) | null = null;
    const onGone = (): void => {
      if (!ended) callerGone = true;
      ended = true;
      wake?.();
    };
    const fail = (err: unknown): void => {
      if (ended) return;
      ended = true;
      const e = toServiceError(err);
      call.emit("error", Object.assign(new Error(e.details ?? "snapshot failed"), e));
    };
    call.on("cancelled", onGone);
    call.on("close", onGone);
    let backup: BackupStream;
    try {
      this.assertStarted();
      if (this.node.appliedIndex() === 0) throw new UnavailableError("this node has applied nothing yet; ask another member or retry");
      backup = this.node.openBackup(SNAPSHOT_CHUNK_BYTES);
    } catch (err) {
      fail(err);
      return;
    }
    const started = Date.now();
    let bytes = 0;
    /** Writes one chunk; true once the transport took it and the stream is below its high-water mark. */
    const deliver = (chunk: SnapshotChunk): Promise<boolean> =>
      new Promise<boolean>((resolve) => {
        let settled = false;
        let written = false;
        let drained: boolean | undefined;
        const finish = (ok: boolean): void => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          call.removeListener("drain", onDrain);
          wake = null;
          resolve(ok);
        };
        const check = (): void => {
          if (written && drained) finish(true);
        };
        const onDrain = (): void => {
          drained = true;
          check();
        };
        // A cancelled call never calls the write back: the 'cancelled' listener wakes us instead.
        wake = () => finish(false);
        const timer = setTimeout(() => finish(false), SNAPSHOT_STALL_MS);
        drained = call.write(chunk, () => {
          written = true;
          check();
        });
        if (!drained) call.once("drain", onDrain);
        check();
      });
    try {
      for (;;) {
        const r = await backup.next();
        if (ended) break;
        if (r.done) {
          ended = true;
          call.end();
          this.log.info(`streamed a snapshot at version ${backup.version} (${bytes} bytes) to ${call.getPeer()} in ${Date.now() - started} ms`);
          break;
        }
        bytes += r.value.byteLength;
        const taken = await deliver({ data: r.value, version: backup.version });
        if (ended) break;
        if (!taken) throw new SnapshotStalledError(SNAPSHOT_STALL_MS, bytes);
      }
    } catch (err) {
      this.log.warn(`snapshot stream at version ${backup.version} to ${call.getPeer()} failed after ${bytes} bytes: ${(err as Error).message}`);
      fail(err);
    } finally {
      await backup.close().catch((err: Error) => this.log.warn(`closing a snapshot stream failed: ${err.message}`));
      call.removeListener("cancelled", onGone);
      call.removeListener("close", onGone);
      if (callerGone) this.log.info(`the caller ended the snapshot stream at version ${backup.version} after ${bytes} bytes; its read transaction is released`);
    }
  }

  /** This node's own view, served by the node asked (never forwarded). */
  private status(): StatusResponse {
    this.assertStarted();
    const st = this.node.status();
    return {
      id: st.id,
      serverVersion: VERSION,
      clusterId: st.clusterId,
      leaderInfo: { leaderAddr: st.leader.grpcAddr, leaderId: st.leader.id, term: st.leader.term },
      state: st.state,
      isLearner: st.isLearner,
      term: st.term,
      commitIndex: st.commitIndex,
      appliedIndex: st.appliedIndex,
      logFirstIndex: st.logFirstIndex,
      logLastIndex: st.logLastIndex,
      version: st.appliedIndex,
      compactedVersion: st.compactedVersion,
      logDbSize: st.logDbBytes,
      kvDbSize: st.kvDbBytes,
      kvDataSize: st.kvDataBytes,
      keyCount: st.keyCount,
      raftAddr: st.raftAddr,
      grpcAddr: st.grpcAddr,
    };
  }

  // ---- LeaderInfo, ClusterStats -------------------------------------------------------

  private leaderInfo(): LeaderInfoResponse {
    const l = this.node.leader();
    return { leaderAddr: l.grpcAddr, leaderId: l.id, term: l.term };
  }

  private clusterStats(req: ClusterStatsRequest): ClusterStatsResponse {
    const status = this.node.raftStatus();
    const progress = new Map(status.progress.map((p) => [p.id, p]));
    const peers: Peer[] = this.node.members().map((m) => {
      const meta = new Map<string, string>([
        ["raft_addr", m.raftAddr],
        ["grpc_addr", m.grpcAddr],
      ]);
      if (m.isLocal) {
        meta.set("term", String(status.term));
        meta.set("state", ["Follower", "PreCandidate", "Candidate", "Leader"][status.state]!);
        meta.set("commit_index", String(status.commit));
        meta.set("applied_index", String(this.node.appliedIndex()));
        meta.set("last_log_index", String(status.lastIndex));
        meta.set("first_log_index", String(this.node.firstLogIndex()));
        meta.set("leader", status.lead);
      }
      const pr = progress.get(m.id);
      if (pr) {
        meta.set("match_index", String(pr.match));
        meta.set("next_index", String(pr.next));
        meta.set("recent_active", String(pr.recentActive));
      }
      const peer: Peer = { id: m.id, isLearner: m.isLearner, isLeader: m.isLeader, isLocal: m.isLocal, raft: undefined, fsm: undefined };
      if (req.withRaft) peer.raft = { meta };
      if (req.withFsm && m.isLocal) {
        const st = this.node.kvStats();
        peer.fsm = { lsmSize: st.dataSize, vlogSize: 0, keysCount: req.withFsm.withKeyCount ? st.keyCount : 0 };
      }
      return peer;
    });
    return { peers };
  }

  /** Passes a request to the leader (one hop, as for writes). */
  private forwardToLeader<Res>(md: grpc.Metadata, call: (client: RbdkvClient, out: grpc.Metadata, cb: (err: grpc.ServiceError | null, res?: Res) => void) => void): Promise<Res> {
    if (md.get(FORWARDED_METADATA).length > 0) throw this.node.notLeader();
    const leader = this.node.leader();
    if (!leader.grpcAddr) throw this.node.notLeader();
    const out = new grpc.Metadata();
    out.set(FORWARDED_METADATA, this.node.id);
    return new Promise((resolve, reject) => call(this.forwardClient(leader.grpcAddr), out, (err, res) => (err ? reject(err) : resolve(res!))));
  }
}

function toPbEvent(ev: KvEvent, watcherId: string): WatchResponse["event"] {
  return {
    type: ev.type === "put" ? Event_EventType.Put : Event_EventType.Delete,
    key: ev.key,
    value: ev.value,
    meta: ev.meta,
    version: ev.version,
    expireAt: ev.expireAt,
    watcherId,
  };
}

/** A Progress event: every matching event up to `version` has been sent. */
function progressEvent(version: number, watcherId: string): WatchResponse["event"] {
  return { type: Event_EventType.Progress, key: EMPTY, value: EMPTY, meta: 0, version, expireAt: 0, watcherId };
}

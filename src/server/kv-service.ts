// The seed's gRPC API (SPEC §3) over a RaftNode: validation, reads at either consistency,
// writes through the leader (a follower forwards them, one hop at most), watches, leader
// info, cluster stats and joins.

import * as grpc from "@grpc/grpc-js";
import { NodeStoppedError, NotLeaderError, ProposalLostError, UnavailableError } from "../node/errors.ts";
import { type Logger } from "../node/logger.ts";
import { type RaftNode, encodePeerContext } from "../node/node.ts";
import { ConfChangeType } from "../raft/messages.ts";
import { CommandKind, encodeCommand } from "../storage/command.ts";
import { KvCorruptionError, type KvEvent } from "../storage/fsm.ts";
import { type RbdkvClient, RbdkvService, createRbdkvClient } from "./grpc-service.ts";
import { type ServerOptions } from "./options.ts";
import { durationToMs } from "./duration.ts";
import { Status } from "./gen/google/rpc/status.ts";
import {
  type ClusterStatsRequest,
  type ClusterStatsResponse,
  type Command,
  type CommandResponse,
  Event_EventType,
  type JoinRequest,
  type JoinResponse,
  LeaderInfoResponse,
  type LeaderRequest,
  OpType,
  type Peer,
  ReadConsistency,
  type RemoveMemberRequest,
  type RemoveMemberResponse,
  type WatchRequest,
  type WatchResponse,
} from "./gen/rbkv.ts";
import { type WatchMessage, WatcherExistsError, type WatchHub } from "./watch-hub.ts";

/** Set on a request a follower forwards, so the leader never forwards it again. */
const FORWARDED_METADATA = "rbkv-forwarded";
/** Trailing metadata of Join: the cluster the joiner becomes part of. */
export const CLUSTER_ID_METADATA = "rbkv-cluster-id";
/** Trailing metadata of Join: the members' addresses, as JSON {id: {raft, grpc}}. */
export const PEERS_METADATA = "rbkv-peers";
/** Trailing metadata on FAILED_PRECONDITION: where the leader is (seed convention). */
const LEADER_ADDR_METADATA = "rbkv-leader-addr";
const LEADER_ID_METADATA = "rbkv-leader-id";
const LEADER_TERM_METADATA = "rbkv-leader-term";
/** Trailing metadata of gRPC's rich error model: a serialized google.rpc.Status. */
const STATUS_DETAILS_METADATA = "grpc-status-details-bin";
/** The type URL of the seed's LeaderInfoResponse in a google.protobuf.Any (as Go's anypb). */
export const LEADER_INFO_TYPE_URL = "type.googleapis.com/rbdkv.LeaderInfoResponse";

const EMPTY = new Uint8Array(0);
const DEFAULT_WATCH_CAPACITY = 1024;
const MAX_WATCH_CAPACITY = 1 << 20;

export class RequestError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
    readonly metadata?: grpc.Metadata,
  ) {
    super(message);
    this.name = "RequestError";
  }
}

/**
 * A "not leader" status. The rbkv-leader-* metadata say where the leader is; a
 * FAILED_PRECONDITION also carries the seed's LeaderInfoResponse in the standard error details
 * (grpc-status-details-bin = google.rpc.Status { code, message, details: [Any] }), as the
 * seed's Go server does with status.WithDetails, so a seed client finds the leader there.
 */
function notLeaderStatus(code: grpc.status, message: string, info: LeaderInfoResponse): Partial<grpc.ServiceError> {
  const md = new grpc.Metadata();
  md.set(LEADER_ADDR_METADATA, info.leaderAddr);
  md.set(LEADER_ID_METADATA, info.leaderId);
  md.set(LEADER_TERM_METADATA, String(info.term));
  if (code === grpc.status.FAILED_PRECONDITION) {
    const details = [{ typeUrl: LEADER_INFO_TYPE_URL, value: LeaderInfoResponse.encode(info).finish() }];
    md.set(STATUS_DETAILS_METADATA, Buffer.from(Status.encode({ code, message, details }).finish()));
  }
  return { code, details: message, metadata: md };
}

function toServiceError(err: unknown): Partial<grpc.ServiceError> {
  if (err instanceof RequestError) return { code: err.code, details: err.message, metadata: err.metadata };
  if (err instanceof NotLeaderError) {
    // No leader known: UNAVAILABLE (retry later), not a redirect to nowhere.
    const code = err.leaderId ? grpc.status.FAILED_PRECONDITION : grpc.status.UNAVAILABLE;
    return notLeaderStatus(code, err.message, { leaderAddr: err.leaderGrpcAddr, leaderId: err.leaderId, term: err.term });
  }
  // ABORTED, unlike UNAVAILABLE, tells the client the write certainly did not happen.
  if (err instanceof ProposalLostError) return { code: grpc.status.ABORTED, details: err.message };
  if (err instanceof UnavailableError || err instanceof NodeStoppedError) {
    return { code: grpc.status.UNAVAILABLE, details: err.message };
  }
  // A stored record failed its checksum: this node's file is damaged (the message names it).
  if (err instanceof KvCorruptionError) return { code: grpc.status.DATA_LOSS, details: err.message };
  const e = err as Partial<grpc.ServiceError>;
  if (typeof e.code === "number" && typeof e.details === "string") return { code: e.code, details: e.details, metadata: e.metadata };
  return { code: grpc.status.INTERNAL, details: (err as Error)?.message ?? String(err) };
}

export class KvService {
  private clusterId = "";
  private readonly forwardClients = new Map<string, RbdkvClient>();
  private closed = false;

  constructor(
    private readonly node: RaftNode,
    private readonly hub: WatchHub,
    private readonly opts: ServerOptions,
    private readonly log: Logger,
  ) {
    node.onStateReplaced = (from, to) => this.onStateReplaced(from, to);
    node.onLeaderChange = (leader) => {
      // leader_required watches end when this node stops leading.
      if (leader !== node.id) this.hub.closeAll(new RequestError(grpc.status.UNAVAILABLE, "this node is no longer the leader"), (id) => this.leaderOnly.has(id));
    };
  }

  private readonly leaderOnly = new Set<string>();

  /** Watchers would silently miss the writes a snapshot install skipped: end them instead. */
  private onStateReplaced(from: number, to: number): void {
    this.hub.closeAll(
      new RequestError(grpc.status.ABORTED, `this node caught up by installing a snapshot; the events of versions ${from}..${to} cannot be delivered: re-read and watch again`),
    );
  }

  setClusterId(id: string): void {
    this.clusterId = id;
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
      Execute: (call: grpc.ServerUnaryCall<Command, CommandResponse>, cb: grpc.sendUnaryData<CommandResponse>) => {
        this.execute(call.request, call.metadata).then(
          (r) => cb(null, r),
          (err) => cb(toServiceError(err)),
        );
      },
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
      Join: (call: grpc.ServerUnaryCall<JoinRequest, JoinResponse>, cb: grpc.sendUnaryData<JoinResponse>) => {
        this.join(call.request, call.metadata).then(
          (r) => {
            const trailer = new grpc.Metadata();
            trailer.set(CLUSTER_ID_METADATA, this.clusterId);
            trailer.set(PEERS_METADATA, JSON.stringify(Object.fromEntries(this.node.peerAddresses())));
            cb(null, r, trailer);
          },
          (err) => cb(toServiceError(err)),
        );
      },
      RemoveMember: (call: grpc.ServerUnaryCall<RemoveMemberRequest, RemoveMemberResponse>, cb: grpc.sendUnaryData<RemoveMemberResponse>) => {
        this.removeMember(call.request, call.metadata).then(
          (r) => cb(null, r),
          (err) => cb(toServiceError(err)),
        );
      },
    };
  }

  private assertStarted(): void {
    if (this.closed) throw new NodeStoppedError();
    if (!this.node.started) throw new UnavailableError("the node is starting (replaying its log)");
  }

  // ---- Execute -----------------------------------------------------------------------------

  private validateKey(key: Uint8Array): void {
    if (key.byteLength === 0) throw new RequestError(grpc.status.INVALID_ARGUMENT, "key must not be empty");
    if (key.byteLength > this.opts.maxKeyBytes) {
      throw new RequestError(grpc.status.INVALID_ARGUMENT, `key is ${key.byteLength} bytes; the limit is ${this.opts.maxKeyBytes}`);
    }
  }

  private async execute(cmd: Command, md: grpc.Metadata): Promise<CommandResponse> {
    this.assertStarted();
    const kv = cmd.kv;
    const key = kv?.key ?? EMPTY;
    switch (cmd.op) {
      case OpType.Get: {
        this.validateKey(key);
        if (cmd.rc !== ReadConsistency.Serializable) await this.node.linearizableBarrier();
        const rec = this.node.kv.get(key, kv?.version ?? 0, Date.now());
        if (!rec) throw new RequestError(grpc.status.NOT_FOUND, `key not found${kv?.version ? ` at version ${kv.version}` : ""}`);
        return { key: rec.key, value: rec.value, meta: rec.meta, version: rec.version };
      }
      case OpType.Put: {
        this.validateKey(key);
        const value = kv?.value ?? EMPTY;
        if (value.byteLength > this.opts.maxValueBytes) {
          throw new RequestError(grpc.status.INVALID_ARGUMENT, `value is ${value.byteLength} bytes; the limit is ${this.opts.maxValueBytes}`);
        }
        const meta = kv?.meta ?? 0;
        if (!Number.isInteger(meta) || meta < 0 || meta > 0xffffffff) throw new RequestError(grpc.status.INVALID_ARGUMENT, `meta ${meta} is not a uint32`);
        let ttlMs = 0;
        if (kv?.ttl) {
          ttlMs = durationToMs(kv.ttl);
          if (!(ttlMs > 0) || !Number.isFinite(ttlMs)) throw new RequestError(grpc.status.INVALID_ARGUMENT, "ttl must be positive");
        }
        // The leader stamps a TTL's absolute expiry into the entry so every replica agrees (and
        // no follower's clock matters): a follower hands such a put to the leader's API.
        // Other writes go through the Raft transport (RaftNode.propose forwards them).
        if (ttlMs > 0 && !this.node.isLeader()) return this.forward(cmd, md);
        const data = encodeCommand({ kind: CommandKind.Put, key, value, meta, expireAt: ttlMs > 0 ? Date.now() + ttlMs : 0 });
        const out = await this.node.propose(data);
        return { key, value: EMPTY, meta: 0, version: out.version };
      }
      case OpType.Delete: {
        this.validateKey(key);
        const out = await this.node.propose(encodeCommand({ kind: CommandKind.Delete, key }));
        return { key, value: EMPTY, meta: 0, version: out.version };
      }
      default:
        throw new RequestError(grpc.status.INVALID_ARGUMENT, `unknown op ${cmd.op}; expected Get (1), Put (2) or Delete (3)`);
    }
  }

  /** A follower passes a write to the leader (once: a forwarded request is never forwarded again). */
  private forward(cmd: Command, md: grpc.Metadata): Promise<CommandResponse> {
    if (md.get(FORWARDED_METADATA).length > 0) return Promise.reject(this.node.notLeader());
    const leader = this.node.leader();
    if (!leader.id || !leader.grpcAddr || leader.id === this.node.id) return Promise.reject(this.node.notLeader());
    const client = this.forwardClient(leader.grpcAddr);
    const out = new grpc.Metadata();
    out.set(FORWARDED_METADATA, this.node.id);
    return new Promise((resolve, reject) => {
      client.execute(cmd, out, { deadline: Date.now() + 30_000 }, (err, resp) => {
        if (err) reject(err);
        else resolve(resp!);
      });
    });
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
      handle = this.hub.register(id, req.prefixes, capacity, {
        write: (m: WatchMessage) => call.write({ watcherId: id, event: m.kind === "event" ? toPbEvent(m.event, id) : progressEvent(m.version, id) }),
        fail: (err: Error) => fail(err instanceof RequestError ? err : new RequestError(grpc.status.RESOURCE_EXHAUSTED, err.message)),
      });
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

  // ---- LeaderInfo, ClusterStats, Join -------------------------------------------------------

  private leaderInfo(): LeaderInfoResponse {
    const l = this.node.leader();
    return { leaderAddr: l.grpcAddr, leaderId: l.id, term: l.term };
  }

  private clusterStats(req: ClusterStatsRequest): ClusterStatsResponse {
    const status = this.node.core.status();
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
        meta.set("first_log_index", String(this.node.logStore.firstIndex()));
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
        const st = this.node.kv.stats();
        peer.fsm = { lsmSize: st.dataSize, vlogSize: 0, keysCount: req.withFsm.withKeyCount ? st.keyCount : 0 };
      }
      return peer;
    });
    return { peers };
  }

  private async join(req: JoinRequest, md: grpc.Metadata): Promise<JoinResponse> {
    this.assertStarted();
    if (!req.id) throw new RequestError(grpc.status.INVALID_ARGUMENT, "join needs the node id");
    if (!req.addr || req.addr.lastIndexOf(":") <= 0) throw new RequestError(grpc.status.INVALID_ARGUMENT, `join needs the node's raft address as host:port, got ${JSON.stringify(req.addr)}`);
    if (!this.node.isLeader()) {
      return this.forwardToLeader<JoinResponse>(md, (client, out, cb) => client.join(req, out, { deadline: Date.now() + 30_000 }, cb));
    }
    const member = this.node.members().find((m) => m.id === req.id);
    if (member) {
      if (member.raftAddr && member.raftAddr !== req.addr) {
        throw new RequestError(grpc.status.ALREADY_EXISTS, `node ${req.id} is already a member with raft address ${member.raftAddr}, not ${req.addr}; remove it first`);
      }
      // Only a node with empty directories asks to join (one with data restarts on it). If this
      // member never acknowledged an entry, it is the same node asking again after a crash
      // mid-join: a no-op (the promoter finishes its catch-up). Otherwise it lost its data, and
      // with it its votes and the entries it acknowledged: it cannot take its own place.
      const match = this.node.core.status().progress.find((p) => p.id === req.id)?.match ?? 0;
      if (!member.isLearner || match > 0) {
        throw new RequestError(
          grpc.status.ALREADY_EXISTS,
          `node ${req.id} is already a ${member.isLearner ? "learner" : "voter"} holding the log up to index ${match}, and it now asks to join with no data: ` +
            `a member that lost its data cannot take its own place (its votes and acknowledged entries are gone); remove it first (RemoveMember), then join again`,
        );
      }
      // Its addition is at or below the current configuration entry (it is still a member), but
      // an answer must not promise an addition a new leader could still overwrite.
      const confIndex = this.node.core.confIndex();
      if (this.node.core.status().commit < confIndex) throw new UnavailableError(`the addition of ${req.id} is not committed yet; retry`);
      return { leaderInfo: this.leaderInfo(), joinedAt: confIndex };
    }
    const grpcAddr = req.grpcAddr || req.id;
    const added = await this.node.proposeConfChange({
      type: ConfChangeType.AddLearner,
      nodeId: req.id,
      context: encodePeerContext({ raft: req.addr, grpc: grpcAddr }),
    });
    this.log.info(`added ${req.id} (raft ${req.addr}) as a learner at index ${added.index}; it becomes a voter once caught up`);
    return { leaderInfo: this.leaderInfo(), joinedAt: added.index };
  }

  /** Passes a membership request to the leader (one hop, as for writes). */
  private forwardToLeader<Res>(md: grpc.Metadata, call: (client: RbdkvClient, out: grpc.Metadata, cb: (err: grpc.ServiceError | null, res?: Res) => void) => void): Promise<Res> {
    if (md.get(FORWARDED_METADATA).length > 0) throw this.node.notLeader();
    const leader = this.node.leader();
    if (!leader.grpcAddr) throw this.node.notLeader();
    const out = new grpc.Metadata();
    out.set(FORWARDED_METADATA, this.node.id);
    return new Promise((resolve, reject) => call(this.forwardClient(leader.grpcAddr), out, (err, res) => (err ? reject(err) : resolve(res!))));
  }

  private async removeMember(req: RemoveMemberRequest, md: grpc.Metadata): Promise<RemoveMemberResponse> {
    this.assertStarted();
    if (!req.id) throw new RequestError(grpc.status.INVALID_ARGUMENT, "remove needs the member's node id");
    if (!this.node.isLeader()) {
      return this.forwardToLeader<RemoveMemberResponse>(md, (client, out, cb) => client.removeMember(req, out, { deadline: Date.now() + 30_000 }, cb));
    }
    const member = this.node.members().find((m) => m.id === req.id);
    if (!member) throw new RequestError(grpc.status.NOT_FOUND, `node ${req.id} is not a member of this cluster`);
    if (!member.isLearner) {
      const voters = this.node.members().filter((m) => !m.isLearner);
      if (voters.length === 1) throw new RequestError(grpc.status.FAILED_PRECONDITION, `node ${req.id} is the only voter; removing it would leave the cluster without one`);
      // As etcd's strict reconfiguration check: the voters that remain must still have a
      // majority that is up, or the cluster stops serving until a down member comes back.
      // UNAVAILABLE (as etcd's ErrUnhealthy): FAILED_PRECONDITION means "not the leader" here.
      const status = this.node.core.status();
      if (!status.activityKnown) throw new UnavailableError("this node became leader moments ago and does not know yet which members answer; retry");
      const remaining = voters.filter((m) => m.id !== req.id);
      const up = remaining.filter((m) => status.progress.find((p) => p.id === m.id)?.active ?? false);
      const need = Math.floor(remaining.length / 2) + 1;
      if (up.length < need) {
        const down = remaining.filter((m) => !up.includes(m)).map((m) => m.id);
        throw new RequestError(
          grpc.status.UNAVAILABLE,
          `removing ${req.id} would leave ${remaining.length} voters of which only ${up.length} answer the leader (not answering: ${down.join(", ")}), fewer than the ${need} needed to commit; bring them back first`,
        );
      }
    }
    await this.node.proposeConfChange({ type: ConfChangeType.RemoveNode, nodeId: req.id, context: new Uint8Array(0) });
    this.log.info(`removed ${req.id} from the cluster`);
    return { leaderInfo: this.leaderInfo() };
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

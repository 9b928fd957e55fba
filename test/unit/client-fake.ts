// An in-process stand-in for an rbkv cluster, for the client library's unit tests: n grpc-js
// servers on 127.0.0.1 sharing one store. Only the member at `leader` applies writes; the others
// answer writes and linearizable reads with the server's own "not leader" status
// (src/server/errors.ts notLeaderStatus). Sessions deduplicate (session_id, seq) as the state
// machine does; faults are injected per call through the hooks.

import * as grpc from "@grpc/grpc-js";
import { notLeaderStatus } from "../../src/server/errors.ts";
import { type Command, type CommandResponse, type KeyValue, type MemberListResponse, OpType, type RangeRequest, type RangeResponse, ReadConsistency } from "../../src/server/gen/rbkv.ts";
import { RbdkvService } from "../../src/server/grpc-service.ts";

type Unary<Req, Res> = (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => void;

export interface FakeFault {
  /**
   * apply-then-fail: applies the write, then answers this status instead of the result (a lost
   * answer); apply-then-expire: the same, and the session is forgotten right after (it expired);
   * fail-before-apply: answers the status and applies nothing.
   */
  kind: "apply-then-fail" | "apply-then-expire" | "fail-before-apply";
  code: grpc.status;
  details?: string;
}

function compare(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

export class FakeCluster {
  readonly servers: grpc.Server[] = [];
  readonly addrs: string[] = [];
  leader = 0;
  version = 0;
  /** key (hex) → record */
  readonly store = new Map<string, KeyValue>();
  /** sessionId → seq → answered version */
  readonly sessions = new Map<number, Map<number, number>>();
  /** How many writes were applied (a deduplicated retry does not count). */
  applied = 0;
  /** Every Execute a member received: which member, op, session, seq. */
  readonly calls: { member: number; op: number; sessionId: number; seq: number }[] = [];
  readonly faults: FakeFault[] = [];
  /** Every Range request a member received. */
  readonly ranges: { member: number; req: RangeRequest }[] = [];
  /** Members that answer Range with UNAVAILABLE. */
  readonly rangeDown = new Set<number>();
  /** When set, the next session write answers "session unknown" (as if it expired). */
  forgetSessions = false;
  opened = 0;

  static async start(n: number): Promise<FakeCluster> {
    const c = new FakeCluster();
    for (let i = 0; i < n; i++) {
      const server = new grpc.Server();
      server.addService(RbdkvService, c.handlers(i));
      const port = await new Promise<number>((resolve, reject) =>
        server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
      );
      c.servers.push(server);
      c.addrs.push(`127.0.0.1:${port}`);
    }
    return c;
  }

  stop(): void {
    for (const s of this.servers) s.forceShutdown();
  }

  value(key: string): string | null {
    const r = this.store.get(Buffer.from(key).toString("hex"));
    return r ? Buffer.from(r.value).toString() : null;
  }

  private notLeader(): Partial<grpc.ServiceError> {
    const addr = this.addrs[this.leader]!;
    return notLeaderStatus(grpc.status.FAILED_PRECONDITION, "not the leader", { leaderAddr: addr, leaderId: `node${this.leader}`, term: 1 });
  }

  private handlers(member: number): grpc.UntypedServiceImplementation {
    const execute: Unary<Command, CommandResponse> = (call, cb) => {
      const cmd = call.request;
      this.calls.push({ member, op: cmd.op, sessionId: cmd.sessionId, seq: cmd.seq });
      const key = cmd.kv?.key ?? new Uint8Array(0);
      const hex = Buffer.from(key).toString("hex");
      if (cmd.op === OpType.Get) {
        if (cmd.rc !== ReadConsistency.Serializable && member !== this.leader) return cb(this.notLeader());
        const r = this.store.get(hex);
        if (!r) return cb({ code: grpc.status.NOT_FOUND, details: "key not found" });
        return cb(null, { key: r.key, value: r.value, meta: r.meta, version: r.version });
      }
      if (member !== this.leader) return cb(this.notLeader());
      if (cmd.sessionId === 0) return cb({ code: grpc.status.INVALID_ARGUMENT, details: "the fake wants sessions" });
      if (this.forgetSessions) {
        this.forgetSessions = false;
        this.sessions.delete(cmd.sessionId);
      }
      const seqs = this.sessions.get(cmd.sessionId);
      if (!seqs) return cb({ code: grpc.status.FAILED_PRECONDITION, details: `client session ${cmd.sessionId} does not exist: never opened, closed, or expired` });
      const fault = this.faults.shift();
      if (fault?.kind === "fail-before-apply") return cb({ code: fault.code, details: fault.details ?? "injected" });
      let version = seqs.get(cmd.seq);
      if (version === undefined) {
        version = ++this.version;
        this.applied++;
        seqs.set(cmd.seq, version);
        if (cmd.op === OpType.Put) this.store.set(hex, { key, value: cmd.kv!.value, meta: cmd.kv!.meta, version, createVersion: version, expireAt: 0 });
        else this.store.delete(hex);
      }
      if (fault?.kind === "apply-then-expire") this.sessions.delete(cmd.sessionId);
      if (fault?.kind === "apply-then-fail" || fault?.kind === "apply-then-expire") return cb({ code: fault.code, details: fault.details ?? "injected" });
      cb(null, { key, value: new Uint8Array(0), meta: 0, version });
    };
    const range: Unary<RangeRequest, RangeResponse> = (call, cb) => {
      const req = call.request;
      this.ranges.push({ member, req });
      if (this.rangeDown.has(member)) return cb({ code: grpc.status.UNAVAILABLE, details: "injected: member down" });
      if (req.rc !== ReadConsistency.Serializable && member !== this.leader) return cb(this.notLeader());
      const end = req.rangeEnd;
      const all = [...this.store.values()]
        .filter((kv) => compare(kv.key, req.key) >= 0 && (end.length === 0 ? compare(kv.key, req.key) === 0 : (end.length === 1 && end[0] === 0) || compare(kv.key, end) < 0))
        .filter((kv) => req.version === 0 || kv.version <= req.version)
        .sort((a, b) => compare(a.key, b.key));
      const limit = req.limit || 1000;
      cb(null, { kvs: all.slice(0, limit), more: all.length > limit, count: all.length, version: req.version || this.version });
    };
    const memberList: Unary<unknown, MemberListResponse> = (_call, cb) => {
      cb(null, {
        members: this.addrs.map((a, i) => ({ id: `node${i}`, raftAddr: "", grpcAddr: a, isLearner: false, isLeader: i === this.leader, promoteWhenCaughtUp: false, matchIndex: 0, active: true })),
        leaderInfo: undefined, // discovery must find the leader by itself
        clusterId: "fake",
        answeredBy: `node${member}`,
      });
    };
    return {
      execute,
      range,
      memberList,
      leaderInfo: ((_call, cb) => cb(null, { leaderAddr: this.addrs[this.leader]!, leaderId: `node${this.leader}`, term: 1 })) as Unary<unknown, unknown>,
      openSession: ((_call, cb) => {
        if (member !== this.leader) return cb(this.notLeader());
        const id = 1000 + ++this.opened;
        this.sessions.set(id, new Map());
        cb(null, { sessionId: id, ttl: { seconds: 300, nanos: 0 } });
      }) as Unary<unknown, unknown>,
      closeSession: ((_call, cb) => cb(null, {})) as Unary<unknown, unknown>,
    };
  }
}

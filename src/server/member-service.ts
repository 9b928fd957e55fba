// The membership and leadership RPCs (SPEC §2 Join, §3b MemberList / MemberAdd / MemberPromote /
// MemberUpdate / RemoveMember / TransferLeadership) over the node's Membership: requests in,
// answers out. The decisions are membership.ts's; a follower passes each change to the leader
// (one hop, as writes); MemberList is answered by any member from its own view.

import * as grpc from "@grpc/grpc-js";
import { type ClusterView, type MemberState } from "../node/membership.ts";
import { type RaftNode } from "../node/node.ts";
import { type RbdkvClient } from "./grpc-service.ts";
import { toServiceError } from "./errors.ts";
import {
  type JoinRequest,
  type JoinResponse,
  type LeaderInfoResponse,
  type Member,
  type MemberAddRequest,
  type MemberAddResponse,
  type MemberListRequest,
  type MemberListResponse,
  type MemberPromoteRequest,
  type MemberPromoteResponse,
  type MemberUpdateRequest,
  type MemberUpdateResponse,
  type RemoveMemberRequest,
  type RemoveMemberResponse,
  type TransferLeadershipRequest,
  type TransferLeadershipResponse,
} from "./gen/rbkv.ts";

/** Trailing metadata of Join: the cluster the joiner becomes part of. */
export const CLUSTER_ID_METADATA = "rbkv-cluster-id";
/** Trailing metadata of Join: the members' addresses, as JSON {id: {raft, grpc, promote?}}. */
export const PEERS_METADATA = "rbkv-peers";
/** How long a membership request passed to the leader may take there (a replacement is two changes). */
const FORWARD_DEADLINE_MS = 30_000;

type Callback<Res> = (err: grpc.ServiceError | null, res?: Res) => void;
/** Passes a request to the leader (KvService.forwardToLeader): one hop at most. */
export type ForwardToLeader = <Res>(md: grpc.Metadata, call: (client: RbdkvClient, out: grpc.Metadata, cb: Callback<Res>) => void) => Promise<Res>;

function toMember(m: MemberState): Member {
  return {
    id: m.id,
    raftAddr: m.raft,
    grpcAddr: m.grpc,
    isLearner: m.isLearner,
    isLeader: m.isLeader,
    promoteWhenCaughtUp: m.promote,
    matchIndex: m.progress?.match ?? 0,
    active: m.progress?.active ?? false,
  };
}

function leaderInfoOf(view: ClusterView): LeaderInfoResponse {
  return { leaderAddr: view.leader.grpcAddr, leaderId: view.leader.id, term: view.leader.term };
}

export class MemberService {
  constructor(
    private readonly node: RaftNode,
    private readonly forward: ForwardToLeader,
    private readonly assertStarted: () => void,
  ) {}

  handlers(): grpc.UntypedServiceImplementation {
    return {
      Join: (call: grpc.ServerUnaryCall<JoinRequest, JoinResponse>, cb: grpc.sendUnaryData<JoinResponse>) => {
        this.join(call.request, call.metadata).then(
          (r) => {
            const trailer = new grpc.Metadata();
            trailer.set(CLUSTER_ID_METADATA, this.node.clusterId());
            trailer.set(PEERS_METADATA, JSON.stringify(Object.fromEntries(this.node.peerAddresses())));
            cb(null, r, trailer);
          },
          (err) => cb(toServiceError(err)),
        );
      },
      RemoveMember: this.unary<RemoveMemberRequest, RemoveMemberResponse>((req, md) => this.removeMember(req, md)),
      MemberList: this.unary<MemberListRequest, MemberListResponse>(async () => this.memberList()),
      MemberAdd: this.unary<MemberAddRequest, MemberAddResponse>((req, md) => this.memberAdd(req, md)),
      MemberPromote: this.unary<MemberPromoteRequest, MemberPromoteResponse>((req, md) => this.memberPromote(req, md)),
      MemberUpdate: this.unary<MemberUpdateRequest, MemberUpdateResponse>((req, md) => this.memberUpdate(req, md)),
      TransferLeadership: this.unary<TransferLeadershipRequest, TransferLeadershipResponse>((req, md) => this.transferLeadership(req, md)),
    };
  }

  private unary<Req, Res>(run: (req: Req, md: grpc.Metadata) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
    return (call, cb) => {
      Promise.resolve()
        .then(() => {
          this.assertStarted();
          return run(call.request, call.metadata);
        })
        .then(
          (r) => cb(null, r),
          (err) => cb(toServiceError(err)),
        );
    };
  }

  private members(view: ClusterView): Member[] {
    return view.members.map(toMember);
  }

  private async join(req: JoinRequest, md: grpc.Metadata): Promise<JoinResponse> {
    this.assertStarted();
    if (!this.node.isLeader()) return this.forward<JoinResponse>(md, (client, out, cb) => client.join(req, out, { deadline: Date.now() + FORWARD_DEADLINE_MS }, cb));
    const { joinedAt } = await this.node.membership.join({ id: req.id, raft: req.addr, grpc: req.grpcAddr, emptyData: req.emptyData });
    return { leaderInfo: leaderInfoOf(this.node.clusterView()), joinedAt };
  }

  private async removeMember(req: RemoveMemberRequest, md: grpc.Metadata): Promise<RemoveMemberResponse> {
    if (!this.node.isLeader()) return this.forward<RemoveMemberResponse>(md, (client, out, cb) => client.removeMember(req, out, { deadline: Date.now() + FORWARD_DEADLINE_MS }, cb));
    await this.node.membership.remove(req.id);
    return { leaderInfo: leaderInfoOf(this.node.clusterView()) };
  }

  private memberList(): MemberListResponse {
    const view = this.node.clusterView();
    return { members: this.members(view), leaderInfo: leaderInfoOf(view), clusterId: this.node.clusterId(), answeredBy: view.self };
  }

  private async memberAdd(req: MemberAddRequest, md: grpc.Metadata): Promise<MemberAddResponse> {
    if (!this.node.isLeader()) return this.forward<MemberAddResponse>(md, (client, out, cb) => client.memberAdd(req, out, { deadline: Date.now() + FORWARD_DEADLINE_MS }, cb));
    const { addedAt } = await this.node.membership.add({ id: req.id, raft: req.raftAddr, grpc: req.grpcAddr, learner: req.isLearner });
    const members = this.members(this.node.clusterView());
    return { member: members.find((m) => m.id === req.id), members, addedAt };
  }

  private async memberPromote(req: MemberPromoteRequest, md: grpc.Metadata): Promise<MemberPromoteResponse> {
    if (!this.node.isLeader()) return this.forward<MemberPromoteResponse>(md, (client, out, cb) => client.memberPromote(req, out, { deadline: Date.now() + FORWARD_DEADLINE_MS }, cb));
    await this.node.membership.promote(req.id);
    return { members: this.members(this.node.clusterView()) };
  }

  private async memberUpdate(req: MemberUpdateRequest, md: grpc.Metadata): Promise<MemberUpdateResponse> {
    if (!this.node.isLeader()) return this.forward<MemberUpdateResponse>(md, (client, out, cb) => client.memberUpdate(req, out, { deadline: Date.now() + FORWARD_DEADLINE_MS }, cb));
    await this.node.membership.update(req.id, req.raftAddr, req.grpcAddr);
    return { members: this.members(this.node.clusterView()) };
  }

  private async transferLeadership(req: TransferLeadershipRequest, md: grpc.Metadata): Promise<TransferLeadershipResponse> {
    if (!this.node.isLeader()) {
      return this.forward<TransferLeadershipResponse>(md, (client, out, cb) => client.transferLeadership(req, out, { deadline: Date.now() + FORWARD_DEADLINE_MS }, cb));
    }
    const to = await this.node.membership.transfer(req.to);
    return { leaderInfo: { leaderAddr: to.grpcAddr, leaderId: to.id, term: to.term } };
  }
}

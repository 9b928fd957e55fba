// The gRPC surface of rbkv: the `rbdkv.Rbdkv` service definition for @grpc/grpc-js and a typed
// client, over the codec generated from proto/rbkv.proto (src/server/gen, `npm run gen`).
//
// Server:  server.addService(RbdkvService, handlers)   // handlers: RbdkvHandlers
// Client:  const c = createRbdkvClient("127.0.0.1:9501");
//          c.execute({ op: OpType.Get, kv: { key } }, (err, res) => ...);   // grpc-js style
//          const res = await c.executeAsync({ op: OpType.Get, kv: { key } }); // promise style
//          for await (const r of c.watch({ prefixes: [p] })) ...             // server stream
//
// This file, not the generated `RbdkvService` / `RbdkvClient`, is what the code uses: the same
// paths and messages, plus
// - `originalName` on each method, so handlers named after the proto methods (`Execute`) work;
// - requests and handler responses as partial messages (XInit = DeepPartial<X>: omitted fields
//   are defaults), normalized by the generated fromPartial before encoding;
// - strict decoding (codec.ts: invalid UTF-8, stray end-group tags are errors);
// - promise forms of the unary methods (executeAsync, ...).
// Handlers receive fully decoded requests (every field present). A request that does not
// decode never reaches a handler: grpc-js answers it with status INTERNAL ("Error
// deserializing request") and the server carries on; likewise a response that cannot be
// encoded (e.g. a negative uint64) is turned into INTERNAL ("Error serializing response").

import * as grpc from "@grpc/grpc-js";
import { grpcTarget } from "../net/host-port.ts";
import { decodeMessage, encodePartial } from "./codec.ts";
import {
  ClusterStatsRequest,
  ClusterStatsResponse,
  CloseSessionRequest,
  CloseSessionResponse,
  Command,
  CommandResponse,
  CompactRequest,
  CompactResponse,
  type DeepPartial,
  JoinRequest,
  JoinResponse,
  LeaderInfoResponse,
  LeaderRequest,
  type MessageFns,
  OpenSessionRequest,
  OpenSessionResponse,
  RangeRequest,
  RangeResponse,
  RbdkvService as GeneratedService,
  RemoveMemberRequest,
  RemoveMemberResponse,
  TxnRequest,
  TxnResponse,
  WatchRequest,
  WatchResponse,
  MemberListRequest,
  MemberListResponse,
  MemberAddRequest,
  MemberAddResponse,
  MemberPromoteRequest,
  MemberPromoteResponse,
  MemberUpdateRequest,
  MemberUpdateResponse,
  TransferLeadershipRequest,
  TransferLeadershipResponse,
  StatusRequest,
  StatusResponse,
  SnapshotRequest,
  SnapshotChunk,
} from "./gen/rbkv.ts";

export { toBuffer } from "./codec.ts";

/** Fully qualified service name (proto package `rbdkv`, service `Rbdkv`). */
export const RBDKV_SERVICE_NAME = "rbdkv.Rbdkv";

// What an encoder accepts: every field may be omitted (= its default).
export type CommandInit = DeepPartial<Command>;
export type CommandResponseInit = DeepPartial<CommandResponse>;
export type WatchRequestInit = DeepPartial<WatchRequest>;
export type WatchResponseInit = DeepPartial<WatchResponse>;
export type LeaderRequestInit = DeepPartial<LeaderRequest>;
export type LeaderInfoResponseInit = DeepPartial<LeaderInfoResponse>;
export type ClusterStatsRequestInit = DeepPartial<ClusterStatsRequest>;
export type ClusterStatsResponseInit = DeepPartial<ClusterStatsResponse>;
export type JoinRequestInit = DeepPartial<JoinRequest>;
export type JoinResponseInit = DeepPartial<JoinResponse>;
export type RemoveMemberRequestInit = DeepPartial<RemoveMemberRequest>;
export type RemoveMemberResponseInit = DeepPartial<RemoveMemberResponse>;
export type RangeRequestInit = DeepPartial<RangeRequest>;
export type RangeResponseInit = DeepPartial<RangeResponse>;
export type TxnRequestInit = DeepPartial<TxnRequest>;
export type TxnResponseInit = DeepPartial<TxnResponse>;
export type CompactRequestInit = DeepPartial<CompactRequest>;
export type CompactResponseInit = DeepPartial<CompactResponse>;
export type OpenSessionRequestInit = DeepPartial<OpenSessionRequest>;
export type OpenSessionResponseInit = DeepPartial<OpenSessionResponse>;
export type CloseSessionRequestInit = DeepPartial<CloseSessionRequest>;
export type CloseSessionResponseInit = DeepPartial<CloseSessionResponse>;
export type MemberListRequestInit = DeepPartial<MemberListRequest>;
export type MemberListResponseInit = DeepPartial<MemberListResponse>;
export type MemberAddRequestInit = DeepPartial<MemberAddRequest>;
export type MemberAddResponseInit = DeepPartial<MemberAddResponse>;
export type MemberPromoteRequestInit = DeepPartial<MemberPromoteRequest>;
export type MemberPromoteResponseInit = DeepPartial<MemberPromoteResponse>;
export type MemberUpdateRequestInit = DeepPartial<MemberUpdateRequest>;
export type MemberUpdateResponseInit = DeepPartial<MemberUpdateResponse>;
export type TransferLeadershipRequestInit = DeepPartial<TransferLeadershipRequest>;
export type TransferLeadershipResponseInit = DeepPartial<TransferLeadershipResponse>;
export type StatusRequestInit = DeepPartial<StatusRequest>;
export type StatusResponseInit = DeepPartial<StatusResponse>;
export type SnapshotRequestInit = DeepPartial<SnapshotRequest>;
export type SnapshotChunkInit = DeepPartial<SnapshotChunk>;

/**
 * One method: the generated definition's path and streaming flags with rbkv's serializers. The
 * request type is the decoded (total) message the server sees; the serializers accept the
 * Init (partial) forms, so the same definition serves both ends.
 */
function method<Req, Res>(
  generated: { readonly path: string; readonly responseStream: boolean },
  originalName: string,
  req: MessageFns<Req>,
  reqType: string,
  res: MessageFns<Res>,
  resType: string,
): grpc.MethodDefinition<Req, Res> {
  // The serializers take the Init forms. Every complete message is one too, but TypeScript
  // cannot see that Req is assignable to DeepPartial<Req> for a type parameter: hence the casts.
  const serializeReq = (m: DeepPartial<Req>): Buffer => encodePartial(req, reqType, m);
  const serializeRes = (m: DeepPartial<Res>): Buffer => encodePartial(res, resType, m);
  return {
    path: generated.path,
    originalName,
    requestStream: false,
    responseStream: generated.responseStream,
    requestSerialize: serializeReq as unknown as grpc.serialize<Req>,
    requestDeserialize: (b: Buffer) => decodeMessage(req, reqType, b),
    responseSerialize: serializeRes as unknown as grpc.serialize<Res>,
    responseDeserialize: (b: Buffer) => decodeMessage(res, resType, b),
  };
}

/**
 * The grpc-js service definition of `rbdkv.Rbdkv`. Keys are the lowerCamelCase method names
 * (the handler names); `originalName` carries the proto name, so handlers named `Execute`
 * etc. are found too.
 */
export const RbdkvService = {
  execute: method(GeneratedService.execute, "Execute", Command, "rbdkv.Command", CommandResponse, "rbdkv.CommandResponse"),
  watch: method(GeneratedService.watch, "Watch", WatchRequest, "rbdkv.WatchRequest", WatchResponse, "rbdkv.WatchResponse"),
  leaderInfo: method(GeneratedService.leaderInfo, "LeaderInfo", LeaderRequest, "rbdkv.LeaderRequest", LeaderInfoResponse, "rbdkv.LeaderInfoResponse"),
  clusterStats: method(GeneratedService.clusterStats, "ClusterStats", ClusterStatsRequest, "rbdkv.ClusterStatsRequest", ClusterStatsResponse, "rbdkv.ClusterStatsResponse"),
  join: method(GeneratedService.join, "Join", JoinRequest, "rbdkv.JoinRequest", JoinResponse, "rbdkv.JoinResponse"),
  removeMember: method(GeneratedService.removeMember, "RemoveMember", RemoveMemberRequest, "rbdkv.RemoveMemberRequest", RemoveMemberResponse, "rbdkv.RemoveMemberResponse"),
  range: method(GeneratedService.range, "Range", RangeRequest, "rbdkv.RangeRequest", RangeResponse, "rbdkv.RangeResponse"),
  txn: method(GeneratedService.txn, "Txn", TxnRequest, "rbdkv.TxnRequest", TxnResponse, "rbdkv.TxnResponse"),
  compact: method(GeneratedService.compact, "Compact", CompactRequest, "rbdkv.CompactRequest", CompactResponse, "rbdkv.CompactResponse"),
  openSession: method(GeneratedService.openSession, "OpenSession", OpenSessionRequest, "rbdkv.OpenSessionRequest", OpenSessionResponse, "rbdkv.OpenSessionResponse"),
  closeSession: method(GeneratedService.closeSession, "CloseSession", CloseSessionRequest, "rbdkv.CloseSessionRequest", CloseSessionResponse, "rbdkv.CloseSessionResponse"),
  memberList: method(GeneratedService.memberList, "MemberList", MemberListRequest, "rbdkv.MemberListRequest", MemberListResponse, "rbdkv.MemberListResponse"),
  memberAdd: method(GeneratedService.memberAdd, "MemberAdd", MemberAddRequest, "rbdkv.MemberAddRequest", MemberAddResponse, "rbdkv.MemberAddResponse"),
  memberPromote: method(GeneratedService.memberPromote, "MemberPromote", MemberPromoteRequest, "rbdkv.MemberPromoteRequest", MemberPromoteResponse, "rbdkv.MemberPromoteResponse"),
  memberUpdate: method(GeneratedService.memberUpdate, "MemberUpdate", MemberUpdateRequest, "rbdkv.MemberUpdateRequest", MemberUpdateResponse, "rbdkv.MemberUpdateResponse"),
  transferLeadership: method(GeneratedService.transferLeadership, "TransferLeadership", TransferLeadershipRequest, "rbdkv.TransferLeadershipRequest", TransferLeadershipResponse, "rbdkv.TransferLeadershipResponse"),
  status: method(GeneratedService.status, "Status", StatusRequest, "rbdkv.StatusRequest", StatusResponse, "rbdkv.StatusResponse"),
  snapshot: method(GeneratedService.snapshot, "Snapshot", SnapshotRequest, "rbdkv.SnapshotRequest", SnapshotChunk, "rbdkv.SnapshotChunk"),
} as const satisfies grpc.ServiceDefinition;

/** HTTP/2 paths of the seed's five RPCs and rbkv's extensions. */
export const RbdkvPaths = {
  execute: GeneratedService.execute.path,
  watch: GeneratedService.watch.path,
  leaderInfo: GeneratedService.leaderInfo.path,
  clusterStats: GeneratedService.clusterStats.path,
  join: GeneratedService.join.path,
  removeMember: GeneratedService.removeMember.path,
  range: GeneratedService.range.path,
  txn: GeneratedService.txn.path,
  compact: GeneratedService.compact.path,
  openSession: GeneratedService.openSession.path,
  closeSession: GeneratedService.closeSession.path,
  memberList: GeneratedService.memberList.path,
  memberAdd: GeneratedService.memberAdd.path,
  memberPromote: GeneratedService.memberPromote.path,
  memberUpdate: GeneratedService.memberUpdate.path,
  transferLeadership: GeneratedService.transferLeadership.path,
  status: GeneratedService.status.path,
  snapshot: GeneratedService.snapshot.path,
} as const;

/** What a server implements: `server.addService(RbdkvService, handlers)`. */
export interface RbdkvHandlers extends grpc.UntypedServiceImplementation {
  execute: grpc.handleUnaryCall<Command, CommandResponseInit>;
  watch: grpc.handleServerStreamingCall<WatchRequest, WatchResponseInit>;
  leaderInfo: grpc.handleUnaryCall<LeaderRequest, LeaderInfoResponseInit>;
  clusterStats: grpc.handleUnaryCall<ClusterStatsRequest, ClusterStatsResponseInit>;
  join: grpc.handleUnaryCall<JoinRequest, JoinResponseInit>;
  removeMember: grpc.handleUnaryCall<RemoveMemberRequest, RemoveMemberResponseInit>;
  range: grpc.handleUnaryCall<RangeRequest, RangeResponseInit>;
  txn: grpc.handleUnaryCall<TxnRequest, TxnResponseInit>;
  compact: grpc.handleUnaryCall<CompactRequest, CompactResponseInit>;
  openSession: grpc.handleUnaryCall<OpenSessionRequest, OpenSessionResponseInit>;
  closeSession: grpc.handleUnaryCall<CloseSessionRequest, CloseSessionResponseInit>;
  memberList: grpc.handleUnaryCall<MemberListRequest, MemberListResponseInit>;
  memberAdd: grpc.handleUnaryCall<MemberAddRequest, MemberAddResponseInit>;
  memberPromote: grpc.handleUnaryCall<MemberPromoteRequest, MemberPromoteResponseInit>;
  memberUpdate: grpc.handleUnaryCall<MemberUpdateRequest, MemberUpdateResponseInit>;
  transferLeadership: grpc.handleUnaryCall<TransferLeadershipRequest, TransferLeadershipResponseInit>;
  status: grpc.handleUnaryCall<StatusRequest, StatusResponseInit>;
  snapshot: grpc.handleServerStreamingCall<SnapshotRequest, SnapshotChunkInit>;
}

/** A unary method of the client, with grpc-js's usual optional metadata and options. */
export interface UnaryMethod<Req, Res> {
  (request: Req, callback: grpc.requestCallback<Res>): grpc.ClientUnaryCall;
  (request: Req, metadata: grpc.Metadata, callback: grpc.requestCallback<Res>): grpc.ClientUnaryCall;
  (request: Req, options: Partial<grpc.CallOptions>, callback: grpc.requestCallback<Res>): grpc.ClientUnaryCall;
  (request: Req, metadata: grpc.Metadata, options: Partial<grpc.CallOptions>, callback: grpc.requestCallback<Res>): grpc.ClientUnaryCall;
}

/** Options of the promise-returning methods: call options plus request metadata. */
export interface RbdkvCallOptions extends Partial<grpc.CallOptions> {
  metadata?: grpc.Metadata;
}

/** A typed client of `rbdkv.Rbdkv` (a grpc-js Client: close() it when done). */
export interface RbdkvClient extends grpc.Client {
  execute: UnaryMethod<CommandInit, CommandResponse>;
  watch(request: WatchRequestInit, options?: Partial<grpc.CallOptions>): grpc.ClientReadableStream<WatchResponse>;
  watch(request: WatchRequestInit, metadata?: grpc.Metadata, options?: Partial<grpc.CallOptions>): grpc.ClientReadableStream<WatchResponse>;
  leaderInfo: UnaryMethod<LeaderRequestInit, LeaderInfoResponse>;
  clusterStats: UnaryMethod<ClusterStatsRequestInit, ClusterStatsResponse>;
  join: UnaryMethod<JoinRequestInit, JoinResponse>;
  removeMember: UnaryMethod<RemoveMemberRequestInit, RemoveMemberResponse>;
  range: UnaryMethod<RangeRequestInit, RangeResponse>;
  txn: UnaryMethod<TxnRequestInit, TxnResponse>;
  compact: UnaryMethod<CompactRequestInit, CompactResponse>;
  openSession: UnaryMethod<OpenSessionRequestInit, OpenSessionResponse>;
  closeSession: UnaryMethod<CloseSessionRequestInit, CloseSessionResponse>;
  memberList: UnaryMethod<MemberListRequestInit, MemberListResponse>;
  memberAdd: UnaryMethod<MemberAddRequestInit, MemberAddResponse>;
  memberPromote: UnaryMethod<MemberPromoteRequestInit, MemberPromoteResponse>;
  memberUpdate: UnaryMethod<MemberUpdateRequestInit, MemberUpdateResponse>;
  transferLeadership: UnaryMethod<TransferLeadershipRequestInit, TransferLeadershipResponse>;
  status: UnaryMethod<StatusRequestInit, StatusResponse>;
  snapshot(request: SnapshotRequestInit, options?: Partial<grpc.CallOptions>): grpc.ClientReadableStream<SnapshotChunk>;
  snapshot(request: SnapshotRequestInit, metadata?: grpc.Metadata, options?: Partial<grpc.CallOptions>): grpc.ClientReadableStream<SnapshotChunk>;

  /** Promise forms of the unary methods; they reject with the grpc.ServiceError. */
  executeAsync(request: CommandInit, options?: RbdkvCallOptions): Promise<CommandResponse>;
  leaderInfoAsync(request?: LeaderRequestInit, options?: RbdkvCallOptions): Promise<LeaderInfoResponse>;
  clusterStatsAsync(request: ClusterStatsRequestInit, options?: RbdkvCallOptions): Promise<ClusterStatsResponse>;
  joinAsync(request: JoinRequestInit, options?: RbdkvCallOptions): Promise<JoinResponse>;
  removeMemberAsync(request: RemoveMemberRequestInit, options?: RbdkvCallOptions): Promise<RemoveMemberResponse>;
  rangeAsync(request: RangeRequestInit, options?: RbdkvCallOptions): Promise<RangeResponse>;
  txnAsync(request: TxnRequestInit, options?: RbdkvCallOptions): Promise<TxnResponse>;
  compactAsync(request: CompactRequestInit, options?: RbdkvCallOptions): Promise<CompactResponse>;
  openSessionAsync(request?: OpenSessionRequestInit, options?: RbdkvCallOptions): Promise<OpenSessionResponse>;
  closeSessionAsync(request: CloseSessionRequestInit, options?: RbdkvCallOptions): Promise<CloseSessionResponse>;
  memberListAsync(request?: MemberListRequestInit, options?: RbdkvCallOptions): Promise<MemberListResponse>;
  memberAddAsync(request: MemberAddRequestInit, options?: RbdkvCallOptions): Promise<MemberAddResponse>;
  memberPromoteAsync(request: MemberPromoteRequestInit, options?: RbdkvCallOptions): Promise<MemberPromoteResponse>;
  memberUpdateAsync(request: MemberUpdateRequestInit, options?: RbdkvCallOptions): Promise<MemberUpdateResponse>;
  transferLeadershipAsync(request?: TransferLeadershipRequestInit, options?: RbdkvCallOptions): Promise<TransferLeadershipResponse>;
  statusAsync(request?: StatusRequestInit, options?: RbdkvCallOptions): Promise<StatusResponse>;
}

export interface RbdkvClientOptions {
  /** Default: insecure (plaintext HTTP/2). */
  credentials?: grpc.ChannelCredentials;
  /** grpc-js channel options, e.g. { "grpc.max_receive_message_length": 64 << 20 }. */
  channelOptions?: Partial<grpc.ChannelOptions>;
}

type CallbackUnary = (
  request: unknown,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  callback: grpc.requestCallback<unknown>,
) => grpc.ClientUnaryCall;

const UNARY_METHODS = ["execute", "leaderInfo", "clusterStats", "join", "removeMember", "range", "txn", "compact", "openSession", "closeSession", "memberList", "memberAdd", "memberPromote", "memberUpdate", "transferLeadership", "status"] as const;

function promiseForm(name: (typeof UNARY_METHODS)[number]) {
  return function (this: Record<string, CallbackUnary>, request: unknown = {}, options: RbdkvCallOptions = {}): Promise<unknown> {
    const { metadata, ...callOptions } = options;
    return new Promise((resolve, reject) => {
      this[name]!(request, metadata ?? new grpc.Metadata(), callOptions, (err, value) => {
        if (err) reject(err);
        else resolve(value);
      });
    });
  };
}

const GenericClient = grpc.makeGenericClientConstructor(RbdkvService, RBDKV_SERVICE_NAME);

class RbdkvClientImpl extends GenericClient {}
for (const name of UNARY_METHODS) {
  Object.defineProperty(RbdkvClientImpl.prototype, `${name}Async`, {
    value: promiseForm(name),
    writable: true,
    configurable: true,
  });
}

/**
 * A client of the rbkv gRPC API at `address` ("host:port" or "[ipv6]:port"; throws AddressError
 * for anything else, rather than a channel that fails on every call).
 */
export function createRbdkvClient(address: string, options: RbdkvClientOptions = {}): RbdkvClient {
  const credentials = options.credentials ?? grpc.credentials.createInsecure();
  return new RbdkvClientImpl(grpcTarget(address), credentials, options.channelOptions) as unknown as RbdkvClient;
}

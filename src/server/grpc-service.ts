// The gRPC surface of rbkv: the `rbdkv.Rbdkv` service definition for @grpc/grpc-js, wired to
// the hand-written protobuf codec in pb.ts (no proto-loader, no protobufjs), and a typed client.
//
// Server:  server.addService(RbdkvService, handlers)   // handlers: RbdkvHandlers
// Client:  const c = createRbdkvClient("127.0.0.1:9501");
//          c.execute({ op: OpType.Get, kv: { key } }, (err, res) => ...);   // grpc-js style
//          const res = await c.executeAsync({ op: OpType.Get, kv: { key } }); // promise style
//          for await (const r of c.watch({ prefixes: [p] })) ...             // server stream
//
// Handlers receive fully decoded requests (every field present) and may answer with partial
// responses (omitted fields are defaults). A request that does not decode never reaches a
// handler: grpc-js answers it with status INTERNAL ("Error deserializing request") and the
// server carries on; likewise a response that cannot be encoded (e.g. a negative uint64) is
// turned into INTERNAL ("Error serializing response") for that call only.

import * as grpc from "@grpc/grpc-js";
import {
  type ClusterStatsRequest,
  type ClusterStatsRequestInit,
  type ClusterStatsResponse,
  type ClusterStatsResponseInit,
  type Command,
  type CommandInit,
  type CommandResponse,
  type CommandResponseInit,
  type JoinRequest,
  type JoinRequestInit,
  type JoinResponse,
  type JoinResponseInit,
  type RemoveMemberRequest,
  type RemoveMemberRequestInit,
  type RemoveMemberResponse,
  type RemoveMemberResponseInit,
  type LeaderInfoResponse,
  type LeaderInfoResponseInit,
  type LeaderRequest,
  type LeaderRequestInit,
  type WatchRequest,
  type WatchRequestInit,
  type WatchResponse,
  type WatchResponseInit,
  decodeClusterStatsRequest,
  decodeClusterStatsResponse,
  decodeCommand,
  decodeCommandResponse,
  decodeJoinRequest,
  decodeJoinResponse,
  decodeRemoveMemberRequest,
  decodeRemoveMemberResponse,
  decodeLeaderInfoResponse,
  decodeLeaderRequest,
  decodeWatchRequest,
  decodeWatchResponse,
  encodeClusterStatsRequest,
  encodeClusterStatsResponse,
  encodeCommand,
  encodeCommandResponse,
  encodeJoinRequest,
  encodeJoinResponse,
  encodeRemoveMemberRequest,
  encodeRemoveMemberResponse,
  encodeLeaderInfoResponse,
  encodeLeaderRequest,
  encodeWatchRequest,
  encodeWatchResponse,
} from "./pb.ts";

/** Fully qualified service name (proto package `rbdkv`, service `Rbdkv`). */
export const RBDKV_SERVICE_NAME = "rbdkv.Rbdkv";

/** HTTP/2 paths of the seed's five RPCs and rbkv's extensions. */
export const RbdkvPaths = {
  execute: "/rbdkv.Rbdkv/Execute",
  watch: "/rbdkv.Rbdkv/Watch",
  leaderInfo: "/rbdkv.Rbdkv/LeaderInfo",
  clusterStats: "/rbdkv.Rbdkv/ClusterStats",
  join: "/rbdkv.Rbdkv/Join",
  removeMember: "/rbdkv.Rbdkv/RemoveMember",
} as const;

/**
 * One method. The request type is the decoded (total) message the server sees; the response
 * type is the Init form a handler may return. The serializers accept the Init forms, so the
 * same definition serves both ends.
 */
function method<Req, ReqInit, Res, ResInit>(
  path: string,
  originalName: string,
  responseStream: boolean,
  encodeReq: (m: ReqInit) => Buffer,
  decodeReq: (b: Uint8Array) => Req,
  encodeRes: (m: ResInit) => Buffer,
  decodeRes: (b: Uint8Array) => Res,
): grpc.MethodDefinition<Req & ReqInit, Res & ResInit> {
  return {
    path,
    originalName,
    requestStream: false,
    responseStream,
    requestSerialize: encodeReq,
    requestDeserialize: decodeReq as (b: Buffer) => Req & ReqInit,
    responseSerialize: encodeRes,
    responseDeserialize: decodeRes as (b: Buffer) => Res & ResInit,
  };
}

/**
 * The grpc-js service definition of `rbdkv.Rbdkv`. Keys are the lowerCamelCase method names
 * (the handler names); `originalName` carries the proto name, so handlers named `Execute`
 * etc. are found too.
 */
export const RbdkvService = {
  execute: method(RbdkvPaths.execute, "Execute", false, encodeCommand, decodeCommand, encodeCommandResponse, decodeCommandResponse),
  watch: method(RbdkvPaths.watch, "Watch", true, encodeWatchRequest, decodeWatchRequest, encodeWatchResponse, decodeWatchResponse),
  leaderInfo: method(RbdkvPaths.leaderInfo, "LeaderInfo", false, encodeLeaderRequest, decodeLeaderRequest, encodeLeaderInfoResponse, decodeLeaderInfoResponse),
  clusterStats: method(
    RbdkvPaths.clusterStats,
    "ClusterStats",
    false,
    encodeClusterStatsRequest,
    decodeClusterStatsRequest,
    encodeClusterStatsResponse,
    decodeClusterStatsResponse,
  ),
  join: method(RbdkvPaths.join, "Join", false, encodeJoinRequest, decodeJoinRequest, encodeJoinResponse, decodeJoinResponse),
  removeMember: method(
    RbdkvPaths.removeMember,
    "RemoveMember",
    false,
    encodeRemoveMemberRequest,
    decodeRemoveMemberRequest,
    encodeRemoveMemberResponse,
    decodeRemoveMemberResponse,
  ),
} as const satisfies grpc.ServiceDefinition;

/** What a server implements: `server.addService(RbdkvService, handlers)`. */
export interface RbdkvHandlers extends grpc.UntypedServiceImplementation {
  execute: grpc.handleUnaryCall<Command, CommandResponseInit>;
  watch: grpc.handleServerStreamingCall<WatchRequest, WatchResponseInit>;
  leaderInfo: grpc.handleUnaryCall<LeaderRequest, LeaderInfoResponseInit>;
  clusterStats: grpc.handleUnaryCall<ClusterStatsRequest, ClusterStatsResponseInit>;
  join: grpc.handleUnaryCall<JoinRequest, JoinResponseInit>;
  removeMember: grpc.handleUnaryCall<RemoveMemberRequest, RemoveMemberResponseInit>;
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

  /** Promise forms of the unary methods; they reject with the grpc.ServiceError. */
  executeAsync(request: CommandInit, options?: RbdkvCallOptions): Promise<CommandResponse>;
  leaderInfoAsync(request?: LeaderRequestInit, options?: RbdkvCallOptions): Promise<LeaderInfoResponse>;
  clusterStatsAsync(request: ClusterStatsRequestInit, options?: RbdkvCallOptions): Promise<ClusterStatsResponse>;
  joinAsync(request: JoinRequestInit, options?: RbdkvCallOptions): Promise<JoinResponse>;
  removeMemberAsync(request: RemoveMemberRequestInit, options?: RbdkvCallOptions): Promise<RemoveMemberResponse>;
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

const UNARY_METHODS = ["execute", "leaderInfo", "clusterStats", "join", "removeMember"] as const;

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

/** A client of the rbkv gRPC API at `address` ("host:port"). */
export function createRbdkvClient(address: string, options: RbdkvClientOptions = {}): RbdkvClient {
  const credentials = options.credentials ?? grpc.credentials.createInsecure();
  return new RbdkvClientImpl(address, credentials, options.channelOptions) as unknown as RbdkvClient;
}

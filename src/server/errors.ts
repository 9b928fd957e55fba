// Every error the API answers with, mapped to its gRPC status in ONE place (toServiceError):
// request validation (RequestError), the node's errors (not leader, lost or unknown writes,
// deadlines, membership refusals), the state machine's (damage, compacted or future versions) and the deterministic
// refusals a command can meet when it is applied (ApplyResult errors: sessions, compaction).

import * as grpc from "@grpc/grpc-js";
import { DeadlineError, NodeStoppedError, NotLeaderError, ProposalLostError, UnavailableError } from "../node/errors.ts";
import { MembershipError, type MembershipErrorKind } from "../node/membership.ts";
import { type ApplyErrorCode } from "../storage/apply-result.ts";
import { KvCorruptionError, VersionCompactedError, VersionFutureError } from "../storage/fsm.ts";
import { Status } from "./gen/google/rpc/status.ts";
import { LeaderInfoResponse } from "./gen/rbkv.ts";

/** Trailing metadata on FAILED_PRECONDITION: where the leader is (seed convention). */
const LEADER_ADDR_METADATA = "rbkv-leader-addr";
const LEADER_ID_METADATA = "rbkv-leader-id";
const LEADER_TERM_METADATA = "rbkv-leader-term";
/** Trailing metadata of gRPC's rich error model: a serialized google.rpc.Status. */
const STATUS_DETAILS_METADATA = "grpc-status-details-bin";
/** The type URL of the seed's LeaderInfoResponse in a google.protobuf.Any (as Go's anypb). */
export const LEADER_INFO_TYPE_URL = "type.googleapis.com/rbdkv.LeaderInfoResponse";

/** A request the API refuses, with the status code to answer. */
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

/** A Snapshot stream whose caller took nothing for too long: ended so it does not pin the store. */
export class SnapshotStalledError extends Error {
  constructor(
    readonly stallMs: number,
    readonly bytesSent: number,
  ) {
    super(`the caller took no snapshot chunk for ${stallMs / 1000}s (after ${bytesSent} bytes); the stream is ended so that it does not pin the state machine's pages`);
    this.name = "SnapshotStalledError";
  }
}

/**
 * A "not leader" status. The rbkv-leader-* metadata say where the leader is; a
 * FAILED_PRECONDITION also carries the seed's LeaderInfoResponse in the standard error details
 * (grpc-status-details-bin = google.rpc.Status { code, message, details: [Any] }), as the
 * seed's Go server does with status.WithDetails, so a seed client finds the leader there.
 */
export function notLeaderStatus(code: grpc.status, message: string, info: LeaderInfoResponse): Partial<grpc.ServiceError> {
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

/** The status of a command the state machine refused when applying it (the same on every replica). */
const APPLY_ERROR_CODES: Record<ApplyErrorCode, grpc.status> = {
  // A rule the client broke, not "retry here": the session must be opened again.
  "session-unknown": grpc.status.FAILED_PRECONDITION,
  "session-seq-too-old": grpc.status.FAILED_PRECONDITION,
  "session-limit": grpc.status.RESOURCE_EXHAUSTED,
  "compact-future": grpc.status.OUT_OF_RANGE,
  "compact-old": grpc.status.OUT_OF_RANGE,
  "txn-conflict": grpc.status.INVALID_ARGUMENT,
};

/** Membership refusals (membership.ts): a rule, "try again", a stranger, a taken id, a bad request. */
const MEMBERSHIP_ERROR_CODES: Record<MembershipErrorKind, grpc.status> = {
  rule: grpc.status.FAILED_PRECONDITION,
  retry: grpc.status.UNAVAILABLE,
  "not-member": grpc.status.NOT_FOUND,
  exists: grpc.status.ALREADY_EXISTS,
  "bad-request": grpc.status.INVALID_ARGUMENT,
};

export function applyError(code: ApplyErrorCode, message: string): RequestError {
  return new RequestError(APPLY_ERROR_CODES[code], message);
}

export function toServiceError(err: unknown): Partial<grpc.ServiceError> {
  if (err instanceof RequestError) return { code: err.code, details: err.message, metadata: err.metadata };
  if (err instanceof MembershipError) return { code: MEMBERSHIP_ERROR_CODES[err.kind], details: err.message };
  if (err instanceof NotLeaderError) {
    // No leader known, or none we can point at (e.g. moments after the leader removed itself,
    // its address is gone from the book): UNAVAILABLE (retry later), not a redirect to nowhere.
    const code = err.leaderId && err.leaderGrpcAddr ? grpc.status.FAILED_PRECONDITION : grpc.status.UNAVAILABLE;
    return notLeaderStatus(code, err.message, { leaderAddr: err.leaderGrpcAddr, leaderId: err.leaderId, term: err.term });
  }
  // ABORTED, unlike UNAVAILABLE, tells the client the write certainly did not happen.
  if (err instanceof ProposalLostError) return { code: grpc.status.ABORTED, details: err.message };
  if (err instanceof UnavailableError || err instanceof NodeStoppedError) {
    return { code: grpc.status.UNAVAILABLE, details: err.message };
  }
  if (err instanceof DeadlineError) return { code: grpc.status.DEADLINE_EXCEEDED, details: err.message };
  // The caller, not the server, stopped: the stream cannot go on; a new one starts a new image.
  if (err instanceof SnapshotStalledError) return { code: grpc.status.ABORTED, details: err.message };
  // History below the compacted version is gone; a version above this node's is not here yet.
  if (err instanceof VersionCompactedError || err instanceof VersionFutureError) return { code: grpc.status.OUT_OF_RANGE, details: err.message };
  // A stored record failed its checksum: this node's file is damaged (the message names it).
  if (err instanceof KvCorruptionError) return { code: grpc.status.DATA_LOSS, details: err.message };
  const e = err as Partial<grpc.ServiceError>;
  if (typeof e.code === "number" && typeof e.details === "string") return { code: e.code, details: e.details, metadata: e.metadata };
  return { code: grpc.status.INTERNAL, details: (err as Error)?.message ?? String(err) };
}

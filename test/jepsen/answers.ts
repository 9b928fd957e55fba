// How the membership nemesis names an RPC's answer: OK, a gRPC code name, or NOT_LEADER for a
// FAILED_PRECONDITION that redirects to the leader (it carries the rbkv-leader-id metadata), so
// that a rule's FAILED_PRECONDITION ("promote a voter") is told apart from "ask the leader".

import * as grpc from "@grpc/grpc-js";

/** OK, a gRPC code name, or NOT_LEADER. */
export type Answer = string;

/** No membership RPC may take longer to answer: it is a hang. */
export const RPC_TIMEOUT_MS = 20_000;

export function answerOf(err: unknown): { answer: Answer; details: string } {
  const e = err as Partial<grpc.ServiceError>;
  const code = typeof e?.code === "number" ? e.code : grpc.status.UNKNOWN;
  const details = typeof e?.details === "string" ? e.details : String((err as Error)?.message ?? err);
  if (code === grpc.status.FAILED_PRECONDITION && (e.metadata?.get("rbkv-leader-id").length ?? 0) > 0) return { answer: "NOT_LEADER", details };
  return { answer: grpc.status[code] ?? String(code), details };
}

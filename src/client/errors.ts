// The errors the client library throws. Every failed call ends in a ClientError carrying the
// gRPC status code (and its name), the server's message, the method and the endpoint that
// answered last, so a caller can branch on `code` without parsing text. A missing key is not an
// error: get() answers null.

import { status as GrpcStatus } from "@grpc/grpc-js";

/** The name of a gRPC status code ("UNAVAILABLE"), for messages. */
export function statusName(code: number): string {
  return (GrpcStatus as unknown as Record<number, string>)[code] ?? `code ${code}`;
}

export class ClientError extends Error {
  /** The gRPC status code name, e.g. "FAILED_PRECONDITION". */
  readonly codeName: string;

  constructor(
    /** The gRPC status code (grpc.status). */
    readonly code: number,
    /** The server's message (or the client's own reason when no server answered). */
    readonly details: string,
    /** The API method, e.g. "Execute". */
    readonly method: string,
    /** The endpoint of the last attempt, "" when none was made. */
    readonly endpoint: string,
    /** How many attempts were made before giving up. */
    readonly attempts = 0,
  ) {
    super(`${method}${endpoint ? ` at ${endpoint}` : ""}: ${statusName(code)}: ${details}${attempts > 1 ? ` (after ${attempts} attempts)` : ""}`);
    this.name = "ClientError";
    this.codeName = statusName(code);
  }
}

/**
 * A write whose outcome cannot be known: an earlier attempt may have been applied, and the
 * session that would have deduplicated the retry is gone (expired, or its result window passed).
 * The client does not retry it, since a retry in a new session could apply it a second time.
 * Read the key to find out.
 */
export class WriteOutcomeUnknownError extends ClientError {
  constructor(code: number, details: string, method: string, endpoint: string, attempts: number) {
    super(code, `${details}; an earlier attempt may have been applied, so the write is not retried in a new session: read the key to learn whether it happened`, method, endpoint, attempts);
    this.name = "WriteOutcomeUnknownError";
  }
}

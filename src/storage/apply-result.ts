// What applying a command produced, beyond its events: the answer the proposer's client gets.
// Kept in the state machine for commands under a session, so that a retry of an applied
// (session, seq) gets the same answer without applying again (exactly-once, SPEC §3b); hence
// the binary codec (encodeApplyResult / decodeApplyResult), deterministic and checked like
// every stored record.

import { type KvRecord } from "./fsm.ts";

export interface RangeResult {
  kvs: KvRecord[];
  /** More keys follow in the range after the last one returned (limit or byte budget). */
  more: boolean;
  /** Keys in the whole range at `version`. */
  count: number;
  /** The version of the store the range was read at. */
  version: number;
}

export type TxnOpResult =
  | { type: "put"; version: number }
  | { type: "delete"; deleted: number }
  | ({ type: "range" } & RangeResult);

/** Why a command was applied as a no-op; deterministic, so every replica agrees. */
export type ApplyErrorCode =
  /** The session is not in the table: never opened, closed, or expired (idle past its ttl). */
  | "session-unknown"
  /** seq is more than SESSION_WINDOW below the session's highest seq: its result is gone. */
  | "session-seq-too-old"
  /** The session table is full (MAX_SESSIONS). */
  | "session-limit"
  /** Compact to a version above the one being applied. */
  | "compact-future"
  /** Compact to a version at or below the compacted version. */
  | "compact-old"
  /** A txn writes one key twice (or puts a key inside one of its delete ranges). */
  | "txn-conflict";

export type ApplyResult =
  /** A Put or Delete under a session. */
  | { kind: "write"; version: number }
  | { kind: "txn"; succeeded: boolean; version: number; results: TxnOpResult[] }
  | { kind: "session-opened"; sessionId: number; ttlMs: number }
  | { kind: "session-closed"; sessionId: number }
  | { kind: "compacted"; compacted: number }
  | { kind: "error"; code: ApplyErrorCode; message: string };

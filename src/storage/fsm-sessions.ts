// Client sessions: exactly-once writes (SPEC §3b, Raft dissertation §6.3). The rules are in the
// header of fsm.ts; the layouts of `sessions`, `session-results` and `session-expiry` in
// fsm-format.ts.
//
// Time is the clock: the highest nowMs the leader stamped into any applied entry (never the
// local wall clock, so every replica expires the same sessions at the same entry). A new leader
// whose clock is behind cannot move it back; sessions simply live a little longer.
//
// A session is expired once clock >= lastActive + ttl. Each entry carrying nowMs removes up to
// SWEEP_MAX expired sessions (oldest expiry first, via `session-expiry`); a session that is
// expired but not swept yet is treated exactly as a removed one (and removed) when it is used,
// so "expired" never depends on how far the sweep has got. An InSession stamps its own nowMs
// once; the Txn inside it is evaluated at the Txn's nowMs (the server stamps both alike) but does
// not stamp the clock again, so a session checked live cannot expire halfway through its entry.

import { type ApplyResult, decodeApplyResult, encodeApplyResult } from "./apply-result.ts";
import { type Command, CommandKind } from "./command.ts";
import { type Applier } from "./fsm-apply.ts";
import {
  type SessionState,
  checkSession,
  getU64BE,
  parseSession,
  putU64BE,
  sessionExpiresAt,
  sessionExpiryKey,
  sessionExpiryValue,
  sessionKey,
  sessionResultKey,
  sessionResultValue,
  sessionValue,
  u8view,
} from "./fsm-format.ts";
import { applyTxn } from "./fsm-txn.ts";
import { type ApplyOutcome, type KvEvent } from "./fsm.ts";
import { crcSeed, recordIntact } from "./record-checksum.ts";

/** Live sessions at most; SessionOpen beyond it answers "session-limit". */
export const MAX_SESSIONS = 100_000;
/** Results kept per session: seqs more than this below the highest are refused ("session-seq-too-old"). */
export const SESSION_WINDOW = 256;
/** Expired sessions removed per entry that carries a time. */
export const SWEEP_MAX = 64;

/** The clock moves to nowMs if later; then up to SWEEP_MAX expired sessions go. */
export function stampClock(a: Applier, nowMs: number): void {
  a.setClock(nowMs);
  const end = Buffer.allocUnsafe(8);
  // Keys are be64(expiresAt) ‖ be64(id): everything below be64(clock + 1) is due.
  putU64BE(end, 0, a.clock + 1);
  const due = [...a.env["session-expiry"].getKeys({ end, limit: SWEEP_MAX })] as Uint8Array[];
  for (const ek of due) removeSession(a, getU64BE(ek, 8));
}

/** The checked state of a session, or undefined if it is not in the table. */
function readSession(a: Applier, id: number): SessionState | undefined {
  const sk = sessionKey(id);
  const v = a.env.sessions.getBinary(sk);
  if (!v) return undefined;
  const problem = checkSession(sk, v, Number.MAX_SAFE_INTEGER);
  if (problem) throw a.corrupt("sessions", sk, problem);
  return parseSession(v);
}

/** A live session: in the table and not idle past its ttl (an expired one is removed here). */
function liveSession(a: Applier, id: number): SessionState | undefined {
  const s = readSession(a, id);
  if (s === undefined) return undefined;
  if (sessionExpiresAt(s) <= a.clock) {
    removeSession(a, id);
    return undefined;
  }
  return s;
}

function writeSession(a: Applier, id: number, s: SessionState, previous: SessionState | undefined): void {
  const sk = sessionKey(id);
  a.env.sessions.putSync(sk, sessionValue(sk, s));
  const exp = sessionExpiresAt(s);
  if (previous !== undefined) {
    const was = sessionExpiresAt(previous);
    if (was === exp) return;
    a.env["session-expiry"].removeSync(sessionExpiryKey(was, id));
  }
  const ek = sessionExpiryKey(exp, id);
  a.env["session-expiry"].putSync(ek, sessionExpiryValue(ek));
}

/** Removes a session, its stored results and its expiry entry. */
function removeSession(a: Applier, id: number): boolean {
  const s = readSession(a, id);
  if (s === undefined) return false;
  a.env.sessions.removeSync(sessionKey(id));
  a.env["session-expiry"].removeSync(sessionExpiryKey(sessionExpiresAt(s), id));
  dropResults(a, id, Number.MAX_SAFE_INTEGER);
  a.addSessions(-1);
  return true;
}

/** Removes the stored results of session `id` with seq <= `through`. */
function dropResults(a: Applier, id: number, through: number): void {
  const db = a.env["session-results"];
  const keys = [...db.getKeys({ start: sessionResultKey(id, 0), end: through >= Number.MAX_SAFE_INTEGER ? sessionResultKey(id + 1, 0) : sessionResultKey(id, through + 1) })] as Uint8Array[];
  for (const k of keys) db.removeSync(u8view(k));
}

export function applySessionOpen(a: Applier, index: number, ttlMs: number): ApplyResult {
  if (a.sessionCount >= MAX_SESSIONS) {
    return { kind: "error", code: "session-limit", message: `too many client sessions (${MAX_SESSIONS} open): close some or let them expire` };
  }
  writeSession(a, index, { ttlMs, lastActiveMs: a.clock, highSeq: 0 }, undefined);
  a.addSessions(1);
  return { kind: "session-opened", sessionId: index, ttlMs };
}

export function applySessionClose(a: Applier, id: number): ApplyResult {
  if (liveSession(a, id) === undefined) return unknown(id);
  removeSession(a, id);
  return { kind: "session-closed", sessionId: id };
}

function unknown(id: number): ApplyResult {
  return { kind: "error", code: "session-unknown", message: `client session ${id} does not exist: never opened, closed, or expired` };
}

function storedResult(a: Applier, id: number, seq: number): ApplyResult | undefined {
  const rk = sessionResultKey(id, seq);
  const v = a.env["session-results"].getBinary(rk);
  if (!v) return undefined;
  if (!recordIntact(v, crcSeed(rk))) throw a.corrupt("session-results", rk, "checksum mismatch");
  try {
    return decodeApplyResult(v.subarray(0, v.length - 4));
  } catch (e) {
    throw a.corrupt("session-results", rk, `undecodable result (${e instanceof Error ? e.message : String(e)})`);
  }
}

export function applyInSession(a: Applier, index: number, cmd: Extract<Command, { kind: CommandKind.InSession }>): ApplyOutcome {
  const { sessionId: id, seq } = cmd;
  const s = liveSession(a, id);
  if (s === undefined) return { index, version: index, events: [], result: unknown(id) };
  if (seq <= s.highSeq - SESSION_WINDOW) {
    return {
      index,
      version: index,
      events: [],
      result: { kind: "error", code: "session-seq-too-old", message: `seq ${seq} of client session ${id} is too old: its highest seq is ${s.highSeq} and only the last ${SESSION_WINDOW} results are kept` },
    };
  }
  const stored = storedResult(a, id, seq);
  if (stored !== undefined) return { index, version: 0, events: [], result: stored, replayed: true };
  const inner = cmd.inner;
  let events: KvEvent[] = [];
  let result: ApplyResult;
  switch (inner.kind) {
    case CommandKind.Put:
    case CommandKind.Delete: {
      const ev = a.applyWrite(index, inner, null);
      if (ev) events = [ev.event];
      result = { kind: "write", version: index };
      break;
    }
    case CommandKind.Txn: {
      const r = applyTxn(a, index, inner);
      events = r.events;
      result = r.result;
      break;
    }
    default:
      // The codec admits only Put, Delete and Txn inside a session.
      return { index, version: 0, events: [] };
  }
  // The answer is kept, errors of the inner command included, so a retry gets the same one.
  const rk = sessionResultKey(id, seq);
  a.env["session-results"].putSync(rk, sessionResultValue(rk, encodeApplyResult(result)));
  const high = Math.max(s.highSeq, seq);
  if (high - SESSION_WINDOW >= 0 && high > s.highSeq) dropResults(a, id, high - SESSION_WINDOW);
  writeSession(a, id, { ttlMs: s.ttlMs, lastActiveMs: a.clock, highSeq: high }, s);
  return { index, version: index, events, result };
}

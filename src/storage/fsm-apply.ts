// Applying log entries to the state machine: the write side of fsm.ts (whose header documents the
// layout and the rules). One Applier serves one open environment; every method runs inside the
// store's apply transaction.
//
// ── In-memory state and aborted transactions ─────────────────────────────────────────────────
// Four values are kept in memory as well as in LMDB, so that the hot path never reads them: the
// compacted version, the clock, the number of live sessions and the dedupe state of every
// proposal origin (a Map: one lookup instead of an LMDB read per entry). LMDB stays the truth;
// the memory copy is loaded from it when the environment is opened (open, restore) and changed
// only together with the LMDB write that it mirrors, inside the same transaction (write-through).
// Each change pushes its inverse onto an undo log. When the transaction commits, the log is
// dropped; when it aborts (an LMDB error: nothing of it is kept), the log is replayed backwards,
// so memory returns to exactly the committed state. An entry that meets a damaged record is
// undone the same way, from the mark taken before it, while the entries before it commit.
// Nothing else mutates this state, and nothing reads the proposal or session copies outside
// apply, so memory and file cannot diverge. The compacted version is also read by get(): it is
// raised before the commit, so a read racing the commit of a compaction is refused rather than
// answered from history that is about to be dropped (the safe direction).
//
// ── Atomicity of one entry ────────────────────────────────────────────────────────────────────
// A plain Put, Delete or ExpireKey checks the one record it reads before it writes anything, so an
// entry that meets damage has written nothing (the hot path stays free of nested transactions).
// Txn, Compact and the session commands read many records while they write, so each runs in an
// LMDB child transaction: damage met halfway aborts the child, and the entry leaves no trace.
// The dedupe state of a proposal changes after its command succeeded, for the same reason, and
// reaches LMDB once per origin at the end of the transaction (flushProposals).

import { type ApplyResult } from "./apply-result.ts";
import { type Command, CommandKind, decodeCommand } from "./command.ts";
import { type Env } from "./fsm-env.ts";
import {
  CHANGE_DELETE,
  CHANGE_PUT,
  KIND_PUT,
  KIND_TOMB,
  KvCorruptionError,
  META_CLOCK,
  META_COMPACTED,
  ORIGIN_LEN,
  changeKey,
  changeValue,
  describeRecord,
  encodeRecord,
  escapeKey,
  expiryKey,
  expiryValue,
  getU64BE,
  historyKey,
  meta64Record,
  parseMeta64,
  parseProposal,
  proposalValue,
  putU64BE,
  recCreate,
  recExpireAt,
  recValueOffset,
  recVersion,
  resealInto,
  storageKey,
  u8view,
} from "./fsm-format.ts";
import { type ReadSource } from "./fsm-range.ts";
import { applySessionClose, applySessionOpen, applyInSession, stampClock } from "./fsm-sessions.ts";
import { applyTxn } from "./fsm-txn.ts";
import { type ApplyOutcome, type FsmEntry, type KvEvent } from "./fsm.ts";
import { type DedupeState, PRUNE_EVERY, PRUNE_IDLE_ENTRIES, admitProposal } from "./proposal-dedupe.ts";
import { crcSeed, recordIntact } from "./record-checksum.ts";

const EMPTY = new Uint8Array(0);
/** Records up to this size are re-sealed into a reused buffer when they move to history. */
const SCRATCH_MAX = 1 << 20;
/** Keys handled per read while a compaction walks `history` / `changes`. */
const COMPACT_PAGE = 1024;
const APPEND = { append: true };

/** An event with the storage key it sorts by (events of one entry are emitted in storage-key order). */
export interface SortableEvent {
  skey: Uint8Array;
  event: KvEvent;
}

export class Applier {
  /** Reads at versions below this are refused; events after it are all kept (0: nothing compacted). */
  compacted: number;
  /** The highest nowMs stamped into any applied entry (ms): the clock sessions expire by. */
  clock: number;
  /** Live sessions (the `sessions` database's entry count). */
  sessionCount: number;
  /** Dedupe state per proposal origin (its 8 bytes as a latin1 string): a copy of `proposals`. */
  private readonly proposals = new Map<string, DedupeState>();
  private readonly undo: (() => void)[] = [];
  /** Reused to re-seal records moving to history (see resealInto): no allocation per write. */
  private scratch = Buffer.allocUnsafe(4096);

  constructor(
    readonly env: Env,
    readonly file: string,
    /** versionKeepNum: max versions per key, 0 = all. */
    readonly keep: number,
  ) {
    this.compacted = parseMeta64(file, META_COMPACTED, env.meta.getBinary(META_COMPACTED));
    this.clock = parseMeta64(file, META_CLOCK, env.meta.getBinary(META_CLOCK));
    this.sessionCount = (env.sessions.getStats() as { entryCount: number }).entryCount;
    for (const { key, value } of env.proposals.getRange({})) {
      if (!recordIntact(value, crcSeed(key)) || key.length !== ORIGIN_LEN) throw this.corrupt("proposals", key, "checksum mismatch");
      this.proposals.set(u8view(key).toString("latin1"), parseProposal(value));
    }
  }

  corrupt(db: string, lmdbKey: Uint8Array, detail: string): KvCorruptionError {
    return new KvCorruptionError(this.file, describeRecord(db, lmdbKey), detail);
  }

  /** Reads of the current write transaction (fsm-range.ts). */
  readSource(): ReadSource {
    return { latest: this.env.latest, history: this.env.history, changes: this.env.changes, txn: undefined, corrupt: (db, k, d) => this.corrupt(db, k, d) };
  }

  // ── undo log ──────────────────────────────────────────────────────────────────────────────
  mark(): number {
    return this.undo.length;
  }
  /** Undoes every in-memory change made after `mark` (their LMDB writes are being aborted). */
  rollback(mark: number): void {
    while (this.undo.length > mark) this.undo.pop()!();
    if (mark === 0) this.dirtyOrigins.clear(); // the whole transaction is gone
  }
  /** The transaction committed: its in-memory changes stay. */
  committed(): void {
    this.undo.length = 0;
  }

  setCompacted(v: number): void {
    const old = this.compacted;
    if (v <= old) return;
    this.undo.push(() => (this.compacted = old));
    this.compacted = v;
    this.env.meta.putSync(META_COMPACTED, meta64Record(META_COMPACTED, v));
    this.dropChangesThrough(v);
  }
  setClock(v: number): void {
    const old = this.clock;
    if (v <= old) return;
    this.undo.push(() => (this.clock = old));
    this.clock = v;
    this.env.meta.putSync(META_CLOCK, meta64Record(META_CLOCK, v));
  }
  addSessions(delta: number): void {
    this.sessionCount += delta;
    this.undo.push(() => (this.sessionCount -= delta));
  }
  /** Origins whose window changed in this transaction (their 8 bytes, copied): written by flushProposals. */
  private readonly dirtyOrigins = new Map<string, Buffer>();
  private setProposal(id: string, origin: Uint8Array, next: DedupeState | undefined): void {
    const old = this.proposals.get(id);
    this.undo.push(() => (old === undefined ? this.proposals.delete(id) : this.proposals.set(id, old)));
    if (next === undefined) this.proposals.delete(id);
    else this.proposals.set(id, next);
    if (!this.dirtyOrigins.has(id)) this.dirtyOrigins.set(id, Buffer.from(origin));
  }
  /**
   * Writes the windows changed by this transaction's entries, once per origin (a batch of 40
   * entries from one leader is one put, not 40). Called at the end of the transaction, after any
   * rollback of a damaged entry, so what is written is exactly the memory state of the entries
   * that commit; an aborted transaction takes these writes with it and rollback restores memory.
   */
  flushProposals(): void {
    for (const [id, origin] of this.dirtyOrigins) {
      const st = this.proposals.get(id);
      if (st === undefined) this.env.proposals.removeSync(origin);
      else this.env.proposals.putSync(origin, proposalValue(origin, st.high, st.mask, st.lastIndex));
    }
    this.dirtyOrigins.clear();
  }

  // ── entries ───────────────────────────────────────────────────────────────────────────────
  /**
   * Applies one entry: dedupe, then its command (`decoded`, or decoded from e.data). Throws
   * KvCorruptionError having changed nothing (the caller rolls memory back to its mark).
   */
  applyEntry(e: FsmEntry, decoded?: Command): ApplyOutcome {
    const index = e.index;
    let outcome: ApplyOutcome;
    const p = e.proposal;
    // An origin of another size is not one of ours (proposal-id.ts): applied without dedupe.
    const origin = p && p.origin.length === ORIGIN_LEN ? p.origin : null;
    // The Map key: the 8 bytes as a latin1 string, built without touching origin.buffer (in Bun
    // that materialises an ArrayBuffer for the entry's data: measurable on this path).
    const id = origin ? String.fromCharCode(origin[0], origin[1], origin[2], origin[3], origin[4], origin[5], origin[6], origin[7]) : "";
    const verdict = origin ? admitProposal(this.proposals.get(id), p!.counter, index) : null;
    if (verdict && verdict.verdict !== "admit") {
      // Only the origin's lastIndex moves (it is still active): nothing of the command applies.
      this.setProposal(id, origin!, verdict.next);
      outcome = { index, version: 0, events: [], duplicate: true };
    } else {
      if (decoded !== undefined) outcome = this.applyCommand(index, decoded);
      else outcome = e.data === null ? { index, version: 0, events: [] } : this.applyData(index, e.data);
      if (verdict) this.setProposal(id, origin!, verdict.next);
    }
    if (index % PRUNE_EVERY === 0) this.pruneOrigins(index);
    return outcome;
  }

  private applyData(index: number, data: Uint8Array): ApplyOutcome {
    let cmd: Command;
    try {
      cmd = decodeCommand(data);
    } catch {
      return { index, version: 0, events: [] }; // every replica decodes the same bytes the same way
    }
    return this.applyCommand(index, cmd);
  }

  /** Applies a decoded command at `index` (the entry point under applyEntry, without dedupe). */
  applyCommand(index: number, cmd: Command): ApplyOutcome {
    switch (cmd.kind) {
      case CommandKind.Put:
      case CommandKind.Delete:
      case CommandKind.ExpireKey: {
        const ev = this.applyWrite(index, cmd, null);
        return { index, version: index, events: ev ? [ev.event] : [] };
      }
      default:
        return this.inChild(() => this.applyComposite(index, cmd));
    }
  }

  private applyComposite(index: number, cmd: Command): ApplyOutcome {
    switch (cmd.kind) {
      case CommandKind.Txn: {
        stampClock(this, cmd.nowMs);
        const { events, result } = applyTxn(this, index, cmd);
        return { index, version: index, events, result };
      }
      case CommandKind.Compact:
        return { index, version: index, events: [], result: this.compact(index, cmd.version) };
      case CommandKind.SessionOpen:
        stampClock(this, cmd.nowMs);
        return { index, version: index, events: [], result: applySessionOpen(this, index, cmd.ttlMs) };
      case CommandKind.SessionClose:
        stampClock(this, cmd.nowMs);
        return { index, version: index, events: [], result: applySessionClose(this, cmd.sessionId) };
      case CommandKind.InSession:
        stampClock(this, cmd.nowMs);
        return applyInSession(this, index, cmd);
      default:
        return { index, version: 0, events: [] };
    }
  }

  /** Runs `f` in an LMDB child transaction (see the header); its in-memory changes are undone if it throws. */
  private inChild<T>(f: () => T): T {
    const mark = this.mark();
    let out: T | undefined;
    try {
      // Synchronous inside a write transaction (the callback returns no promise).
      void this.env.root.childTransaction(() => {
        out = f();
        return true;
      });
    } catch (e) {
      this.rollback(mark);
      throw e;
    }
    return out as T;
  }

  // ── single-key writes ────────────────────────────────────────────────────────────────────
  /** The checked latest record of `skey`, or undefined. A view valid until the next read. */
  readLatest(skey: Uint8Array): Uint8Array | undefined {
    // getBinaryFast returns lmdb-js's reusable read buffer with its `length` property set to the
    // record's size, which native code (the CRC) ignores: `old` is a view of just the record, used
    // (or copied by moveToHistory) before any other read overwrites it.
    const fast = this.env.latest.getBinaryFast(skey);
    const old = fast ? fast.subarray(0, fast.length) : undefined;
    if (old && (!recordIntact(old, crcSeed(skey)) || recValueOffset(old) < 0)) throw this.corrupt("latest", skey, "checksum mismatch");
    return old;
  }

  /**
   * A Put, Delete or ExpireKey of one key at version `index` (also the writes of a Txn, which
   * passes its nowMs: a key expired at nowMs then counts as missing for its create version).
   * Returns its event, or null when nothing changed.
   */
  applyWrite(index: number, cmd: Command & { key: Uint8Array }, nowMs: number | null): SortableEvent | null {
    const key = cmd.key;
    const skey = storageKey(key);
    const old = this.readLatest(skey); // every check comes before the first write
    if (cmd.kind === CommandKind.Put) return { skey, event: this.putKey(index, skey, key, cmd.value, cmd.meta, cmd.expireAt, old, nowMs) };
    if (!old) return null;
    if (cmd.kind === CommandKind.ExpireKey && (recVersion(old) !== cmd.version || recExpireAt(old) === 0)) return null;
    return { skey, event: this.deleteKey(index, skey, key, old, cmd.kind === CommandKind.ExpireKey) };
  }

  putKey(index: number, skey: Uint8Array, key: Uint8Array, value: Uint8Array, meta: number, expireAt: number, old: Uint8Array | undefined, nowMs: number | null): KvEvent {
    const env = this.env;
    const seed = crcSeed(skey);
    let create = index;
    if (old) {
      const oldExpire = recExpireAt(old);
      // create_version: kept from the live record, unless this entry's time says it had expired.
      if (nowMs === null || oldExpire === 0 || oldExpire > nowMs) create = recCreate(old);
      if (this.keep !== 1) this.moveToHistory(skey, old);
      if (oldExpire !== 0) env.expiry.removeSync(expiryKey(oldExpire, skey));
    }
    env.latest.putSync(skey, encodeRecord(seed, skey, key, value, meta, index, expireAt, create));
    if (expireAt !== 0) {
      const ek = expiryKey(expireAt, skey);
      env.expiry.putSync(ek, expiryValue(ek, index, skey, key));
    }
    this.change(index, skey, CHANGE_PUT);
    if (this.keep > 0) this.prune(index, skey, true, old !== undefined && this.keep === 1);
    return { type: "put", key, value, meta, version: index, expireAt };
  }

  /** Deletes the live `old` record of `skey` at `index`. expired: an ExpireKey (the event carries the expiry). */
  deleteKey(index: number, skey: Uint8Array, key: Uint8Array, old: Uint8Array, expired: boolean): KvEvent {
    const env = this.env;
    const oldExpire = recExpireAt(old);
    const eventExpire = expired ? oldExpire : 0;
    if (this.keep !== 1) this.moveToHistory(skey, old);
    // The tombstone is written even with keep = 1 (then pruned at once): it shadows any history
    // left over from a run with a larger versionKeepNum. Its expireAt is the event's.
    const tk = historyKey(skey, index, KIND_TOMB);
    env.history.putSync(tk, encodeRecord(crcSeed(tk), skey, key, EMPTY, 0, index, eventExpire, 0));
    if (oldExpire !== 0) env.expiry.removeSync(expiryKey(oldExpire, skey));
    env.latest.removeSync(skey);
    this.change(index, skey, CHANGE_DELETE);
    if (this.keep > 0) this.prune(index, skey, false, this.keep === 1);
    return { type: "delete", key, value: EMPTY, meta: 0, version: index, expireAt: eventExpire };
  }

  /**
   * Records an event in the changes index. Its keys only ever grow (version = the entry's index,
   * then skey), so they are appended (MDB_APPEND: no search, full pages); an entry with several
   * events (Txn) collects them and appends them sorted when it ends (flushChanges).
   */
  private change(index: number, skey: Uint8Array, kind: number): void {
    const ck = changeKey(index, skey);
    if (this.deferred) this.deferred.push({ ck, kind });
    else this.env.changes.putSync(ck, changeValue(ck, kind), APPEND);
  }
  private deferred: { ck: Buffer; kind: number }[] | null = null;
  /** Collects the events of a multi-write entry until flushChanges. */
  deferChanges(): void {
    this.deferred = [];
  }
  discardChanges(): void {
    this.deferred = null;
  }
  flushChanges(): void {
    const d = this.deferred;
    this.deferred = null;
    if (!d) return;
    d.sort((x, y) => Buffer.compare(x.ck, y.ck));
    for (const { ck, kind } of d) this.env.changes.putSync(ck, changeValue(ck, kind), APPEND);
  }

  /** Puts the (checked) latest record `old` of `skey` into history, sealed for its history key. */
  private moveToHistory(skey: Uint8Array, old: Uint8Array): void {
    const hk = historyKey(skey, recVersion(old), KIND_PUT);
    // The scratch copy is safe to reuse: inside a write transaction lmdb-js hands each put to
    // LMDB at once, which copies the bytes into its page.
    if (old.length > this.scratch.length && old.length <= SCRATCH_MAX) this.scratch = Buffer.allocUnsafe(Math.max(old.length, this.scratch.length * 2));
    const into = old.length <= this.scratch.length ? this.scratch : Buffer.allocUnsafe(old.length);
    this.env.history.putSync(hk, resealInto(old, into, crcSeed(hk)));
  }

  /**
   * versionKeepNum: keeps at most `keep` versions of the key (the live one included), dropping a
   * leading tombstone; `droppedOld`: the previous live version was not even moved to history
   * (keep = 1). Reads below the oldest version kept can no longer be exact, so the compacted
   * version rises to it (or to `index` when nothing of the key is left).
   */
  private prune(index: number, skey: Uint8Array, live: boolean, droppedOld: boolean): void {
    const prefix = escapeKey(skey, 0);
    const end = Buffer.concat([prefix, Buffer.from([0xff])]);
    const keys = [...this.env.history.getKeys({ start: prefix, end })] as Uint8Array[];
    let drop = Math.max(0, keys.length - (this.keep - (live ? 1 : 0)));
    while (drop < keys.length && keys[drop][keys[drop].length - 1] === KIND_TOMB) drop++;
    for (let i = 0; i < drop; i++) this.env.history.removeSync(u8view(keys[i]));
    if (drop === 0 && !droppedOld) return;
    const oldestKept = drop < keys.length ? getU64BE(keys[drop], keys[drop].length - 9) : index;
    this.setCompacted(oldestKept);
  }

  /** Removes the changes index below and at `version` (those events are no longer kept). */
  private dropChangesThrough(version: number): void {
    const end = Buffer.allocUnsafe(8);
    putU64BE(end, 0, version + 1);
    for (;;) {
      const keys = [...this.env.changes.getKeys({ end, limit: COMPACT_PAGE })] as Uint8Array[];
      for (const k of keys) this.env.changes.removeSync(u8view(k));
      if (keys.length < COMPACT_PAGE) return;
    }
  }

  // ── Compact ──────────────────────────────────────────────────────────────────────────────
  /**
   * Compact(C): per key, every version older than its newest version <= C goes (and that one too
   * if it is a tombstone); the changes index up to C goes. Reads at versions >= C are unchanged.
   */
  private compact(index: number, c: number): ApplyResult {
    if (c > index) return { kind: "error", code: "compact-future", message: `cannot compact to version ${c}: above the current version ${index}` };
    if (c <= this.compacted) {
      return { kind: "error", code: "compact-old", message: `cannot compact to version ${c}: already compacted to version ${this.compacted}` };
    }
    const env = this.env;
    // Walk history key by key, in pages (never the whole history in memory): a group is the
    // entries of one storage key, ascending by version.
    let after: Uint8Array | undefined;
    let group: Uint8Array[] = [];
    let groupSkey: Buffer | null = null;
    const finish = () => {
      if (groupSkey === null) return;
      // Entries <= C of this key: the newest of them is kept (if a put) unless the live record is
      // itself <= C (then it is the newest version <= C and every history entry is older).
      let n = 0;
      while (n < group.length && getU64BE(group[n], group[n].length - 9) <= c) n++;
      if (n > 0) {
        let dropTo = n - 1; // entries [0, dropTo) go
        const newest = group[n - 1];
        const newestIsTomb = newest[newest.length - 1] === KIND_TOMB;
        let liveAtOrBelow = false;
        if (n === group.length && !newestIsTomb) {
          const live = this.readLatest(groupSkey);
          liveAtOrBelow = live !== undefined && recVersion(live) <= c;
        }
        if (newestIsTomb || liveAtOrBelow) dropTo = n;
        for (let i = 0; i < dropTo; i++) env.history.removeSync(u8view(group[i]));
      }
      group = [];
      groupSkey = null;
    };
    for (;;) {
      const keys = [...env.history.getKeys({ ...(after ? { start: u8view(after), exclusiveStart: true } : {}), limit: COMPACT_PAGE })] as Uint8Array[];
      for (const hk of keys) {
        const skey = historySkeyOf(hk);
        if (groupSkey === null || !groupSkey.equals(skey)) {
          finish();
          groupSkey = skey;
        }
        group.push(hk);
      }
      if (keys.length < COMPACT_PAGE) break;
      after = keys[keys.length - 1];
      // Removing entries of finished groups is safe between pages: the next page starts after
      // `after`, which belongs to the (unfinished) current group and is not removed yet.
    }
    finish();
    this.setCompacted(c);
    return { kind: "compacted", compacted: c };
  }

  // ── proposal dedupe ──────────────────────────────────────────────────────────────────────
  /** Forgets origins idle for PRUNE_IDLE_ENTRIES (every replica at the same indexes). */
  private pruneOrigins(index: number): void {
    const idle: string[] = [];
    for (const [id, st] of this.proposals) if (st.lastIndex < index - PRUNE_IDLE_ENTRIES) idle.push(id);
    for (const id of idle) this.setProposal(id, Buffer.from(id, "latin1"), undefined);
  }

}

/** The storage key of a history key, as a Buffer (compaction's grouping). */
function historySkeyOf(hk: Uint8Array): Buffer {
  const out: number[] = [];
  for (let i = 0; ; i++) {
    if (hk[i] === 0) {
      if (hk[i + 1] === 0) break;
      out.push(0);
      i++;
    } else out.push(hk[i]);
  }
  return Buffer.from(out);
}

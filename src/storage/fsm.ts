// The state machine (FSM) storage: an MVCC key-value store on one lmdb-js environment.
//
// ── Files ────────────────────────────────────────────────────────────────────────────────────
// The environment is the single file `<kv-dir>/fsm.mdb` (+ LMDB's `fsm.mdb-lock`), not the usual
// `<dir>/data.mdb`: the seed's examples use the same directory for --log-dir and --kv-dir, so the
// FSM must not collide with the Raft log's environment, and a single file can be replaced
// atomically by rename(2) when a snapshot is restored (`fsm.restore-<random>.mdb` is the staging
// file; leftovers of a crashed restore are removed on open).
//
// ── Named databases (format 3; all binary keys and values, no msgpack/JSON) ───────────────────
//   latest           skey                              → record   the newest version of each LIVE key
//   history          esc(skey) ‖ be64(version) ‖ kind  → record   superseded versions and tombstones
//   expiry           be64(expireAt) ‖ skey             → le64(version) [‖ full key if skey is hashed] ‖ crc
//   changes          be64(version) ‖ skey              → [u8 kind 0 put / 1 delete] ‖ crc   one per event
//   sessions         be64(id)                          → [f64 ttlMs][f64 lastActiveMs][f64 highSeq] ‖ crc
//   session-results  be64(id) ‖ be64(seq)              → encodeApplyResult(result) ‖ crc
//   session-expiry   be64(lastActive + ttl) ‖ be64(id) → crc
//   proposals        origin (8 bytes)                  → [f64 high][u32 mask][f64 lastIndex] ‖ crc
//   meta     "format"    → "rbkv-fsm\0" ‖ u8 format version (3) ‖ crc
//            "applied"   → le64(applied index) ‖ crc
//            "compacted" → le64(compacted version) ‖ crc   (absent = 0)
//            "clock"     → le64(ms) ‖ crc                  (absent = 0)
// `skey` (storage key) is the user key itself when it is at most INLINE_KEY_MAX bytes; longer keys
// (up to any size; the API allows 4 KiB while LMDB's key limit is 1978 bytes) become
// key[0..INLINE_KEY_MAX) ‖ sha256(key), and the full key is kept in the record. This keeps the
// byte order of keys except among long keys that share their first INLINE_KEY_MAX bytes (range
// reads sort those by full key, fsm-range.ts; within one version, events are in skey order).
// `esc` escapes 0x00 as 00 FF and ends with 00 00: it preserves order and makes the encoding
// prefix-free, so (key, version) pairs of different keys never interleave in `history`, even when
// one key is a prefix of another. `kind` (0 = put, 1 = tombstone) is in the key so that pruning,
// compaction and reads at a version can recognise tombstones without reading values.
// Big-endian numbers in keys sort numerically; the f64 fields are the command codec's numbers
// (exact integers up to 2^53).
//
// Record (value in `latest` and `history`):
//   [u8 flags (bit0: full key follows)][u32 meta][u64 version][u64 expireAt][u64 createVersion]
//   [u32 keyLen][key]? [value...] [u32 crc]                      (u64 = two u32, little-endian)
// A tombstone is a record with an empty value, create version 0 and, for a key deleted by
// ExpireKey, the expired version's expireAt (so that the delete event can be rebuilt from it).
//
// ── Checksums ─────────────────────────────────────────────────────────────────────────────────
// LMDB keeps none, so every value in every database ends with crc = CRC-32 of (its LMDB key ‖ the
// value's bytes before the crc), little-endian (record-checksum.ts). A record moved from `latest`
// to `history` is re-sealed for its new key after its old checksum is checked. The checksums are
// checked: for the whole file when the store opens (fsm-verify.ts, which also walks every LMDB
// page itself first: a cursor that meets a damaged page aborts the process), and for every record
// read afterwards (get, range, changes, versions, expiredKeys, apply, snapshot streaming,
// restore). A mismatch throws KvCorruptionError naming the file, the database and the key: wrong
// bytes are never returned. A file of an older format version (1: no checksums; 2: no create
// versions, changes index, sessions or dedupe) is refused with a message naming both versions;
// there is no migration (pre-release).
//
// ── MVCC ───────────────────────────────────────────────────────────────────────────────────────
// A write at log index i is version i (a Txn's writes all share its index). A Put moves the
// previous latest record (if any) into history and writes the new one to `latest`. A Delete
// moves the previous record into history, adds a tombstone at version i and removes the key from
// `latest`, so `latest` holds exactly the live keys (its entry count is the key count) and a read
// at the latest version is one lookup. A read at version V: the latest record if its version <=
// V, else the newest history entry <= V (a tombstone → not found). Keys expired at the reader's
// nowMs read as not found. Apply never looks at the wall clock: TTL only hides records at read
// time; deletion of expired keys is a replicated ExpireKey command (issued by the leader's reaper
// from expiredKeys()).
//
// create_version: the version at which the key was created, i.e. its first put since it last
// did not exist. A put copies it from the live record it replaces, or takes its own version when
// there is none. Entries that carry the leader's time (Txn) also count a live record that is
// expired at that time as absent; a plain Put has no time, so for it "did not exist" only means
// "not in `latest`" (every replica must decide alike, and a plain Put cannot know the time).
//
// ── Compaction ───────────────────────────────────────────────────────────────────────────────
// compactedVersion C (meta "compacted"): reads at versions >= C are exact, reads below throw
// VersionCompactedError, and every event with version > C is kept. Compact(C) drops, per key,
// every version older than its newest version <= C (and that one too if it is a tombstone: it
// hides nothing any more), and the changes index up to C. versionKeepNum N > 0 keeps at most N
// versions per key (the live one included) and prunes on every write of that key; a tombstone
// left as the OLDEST retained version is dropped too, so with N = 1 a deleted key leaves nothing
// behind. Since that also drops history that reads at older versions would need, pruning raises C
// to the oldest version of the key still kept (to the write's own version when nothing is left).
//
// ── The changes index ────────────────────────────────────────────────────────────────────────
// One record per event (put, delete, expiry), keyed by (version, skey): changes(after, ...)
// replays events in (version, skey) order from one cursor, for watches that resume from a
// version. The event's data is not copied: it is the record of (skey, version) in `latest` or
// `history` (a put's value, meta and expireAt; a tombstone's expireAt), which compaction keeps for
// every version > C. Events of one entry are also returned by apply in skey order, so a replay
// and the live stream are identical. Cost on the hot path: one small put per event.
//
// ── Sessions (fsm-sessions.ts) ───────────────────────────────────────────────────────────────
// A client session (opened by SessionOpen at index i: id i) remembers, per seq, the result of
// the write applied under it (InSession), so a retry of an applied (session, seq) returns the
// stored result and applies nothing. Results more than SESSION_WINDOW below the session's highest
// seq are dropped and such seqs refused. Sessions expire when idle for their ttl, measured by the
// clock: the highest nowMs the leader stamped into any entry (meta "clock"; it never goes back).
//
// ── Proposal dedupe (proposal-dedupe.ts) ─────────────────────────────────────────────────────
// An entry that carries a proposal id (origin, counter) is applied only if the origin's window
// admits the counter; a later copy of the same proposal (the leader appends every copy of a
// forwarded proposal it receives) is a no-op outcome with duplicate = true. The window per origin
// lives in `proposals` and, for speed, in memory (fsm-apply.ts explains why the copy is safe).
//
// ── Durability and crash safety ────────────────────────────────────────────────────────────────
// The applied index is written in the same LMDB transaction as the data it covers. By default the
// environment uses lmdb-js's overlappingSync (its default on Linux): a commit writes its meta page
// marked "not yet flushed", and after an OS crash/power loss LMDB falls back to the previous,
// fully flushed snapshot, whose pages are never reused before the newer one is flushed. A crash at
// any moment therefore yields a consistent older state (whose applied index matches its data),
// and the Raft log is replayed from applied+1. CAVEAT (measured on lmdb-js 3.5.6): a
// *synchronous* transaction (transactionSync) in this mode also performs the flush (one
// fdatasync) inline before returning, on the JS thread; there is no way to defer it with the sync
// API. So callers should batch entries (one applyEntries call per batch, or applyEntriesAsync,
// whose commit runs on lmdb-js's writer thread); on the dev machine a 1-entry call took ~0.4 ms
// and a 100-entry call ~1.5 ms (vs ~0.02 / ~0.9 ms with unsafeNoSync).
// The opt-in `unsafeNoSync` opens the environment with MDB_NOSYNC instead: no fsync at all
// (flush() forces one), still safe against a process crash (SIGKILL: committed pages are in the
// OS page cache), but an OS crash or power loss may corrupt the file — meant to pair with the
// server's --unsafe-no-fsync.
// A restore writes the staging file without per-transaction syncs, fsyncs it once, renames it over
// fsm.mdb and fsyncs the directory: a crash leaves either the old or the new file, never a mix.
//
// lmdb-js 3.5.6 crashes the process (segfault) if mdb_env_open fails, e.g. on a file that is not
// an LMDB file; open() therefore validates the file header itself before handing it to LMDB
// (fsm-env.ts).

import { randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, renameSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { type ApplyResult, type RangeResult } from "./apply-result.ts";
import { type Command } from "./command.ts";
import { Applier } from "./fsm-apply.ts";
import { type Env, type LmdbTxn, TXN_FLAGS, closeEnv, dbStats, errMsg, fsyncDir, openEnv, syncEnv } from "./fsm-env.ts";
import {
  KIND_TOMB,
  KvCorruptionError,
  KvStoreError,
  META_APPLIED,
  META_COMPACTED,
  VersionCompactedError,
  VersionFutureError,
  checkExpiry,
  describeRecord,
  escapeKey,
  getU64BE,
  historyKey,
  parseApplied,
  parseExpiryValue,
  parseMeta64,
  putU64BE,
  appliedRecord,
  recValueOffset,
  recVersion,
  storageKey,
} from "./fsm-format.ts";
import { type RangeQuery, type ReadSource, readChanges, scanRange, toKvRecord } from "./fsm-range.ts";
import { type ImageSummary, type ImageTotals, imageChunks, writeImage } from "./fsm-snapshot.ts";
import { type Verification } from "./fsm-verify.ts";
import { crcSeed, recordIntact } from "./record-checksum.ts";

export { KvCorruptionError, KvStoreError, VersionCompactedError, VersionFutureError } from "./fsm-format.ts";
export type { RangeQuery } from "./fsm-range.ts";
export type { ImageSummary, ImageTotals } from "./fsm-snapshot.ts";
export type { Verification } from "./fsm-verify.ts";

export interface KvRecord {
  key: Uint8Array;
  value: Uint8Array;
  meta: number;
  version: number;
  /** Version at which the key was created (its first put since it last did not exist). */
  createVersion: number;
  expireAt: number;
}
/**
 * A change produced by applying an entry. "put": the new record. "delete": value is empty and meta
 * 0; version is the index of the deleting entry; expireAt is 0 for a Delete command and the
 * expired version's expireAt for an ExpireKey (so a watcher can tell expiry from deletion).
 * key/value alias the entry's data (zero-copy).
 */
export interface KvEvent {
  type: "put" | "delete";
  key: Uint8Array;
  value: Uint8Array;
  meta: number;
  version: number;
  expireAt: number;
}
export interface ApplyOutcome {
  index: number;
  /**
   * The entry's index for every command that was applied (also when its result is an error, or
   * it changed nothing); 0 when nothing was applied: a null or undecodable entry, a duplicate
   * proposal, a replayed session seq.
   */
  version: number;
  events: KvEvent[];
  /** The answer for the proposer, for commands that have one (Txn, sessions, Compact). */
  result?: ApplyResult;
  /** A later copy of an applied proposal (proposal-dedupe.ts): nothing was applied. */
  duplicate?: boolean;
  /** A retry of an applied (session, seq): `result` is the stored one, nothing was applied. */
  replayed?: boolean;
}
/** A consistent image of the store being streamed (see snapshotChunks). */
export interface SnapshotImage {
  /** The applied index (the store's version) the image is at. */
  appliedIndex: number;
  chunks: AsyncIterable<Uint8Array>;
  /** The image's record and byte counts, once its last chunk has been produced (else null). */
  totals: () => ImageTotals | null;
  /**
   * Ends the read transaction now (idempotent): for a stream abandoned before it was iterated, or
   * one whose consumer gave up; a stream iterated to its end or return()ed releases it by itself.
   */
  release: () => void;
}

export interface FsmEntry {
  index: number;
  data: Uint8Array | null; // null: a no-op or configuration entry (only advances the applied index)
  /** Who proposed it (src/node/proposal-id.ts): a later copy of the same proposal is not applied. */
  proposal?: { origin: Uint8Array; counter: number };
}

export interface KvStoreOptions {
  dir: string;
  /** Max versions kept per key (0 = keep all). */
  versionKeepNum: number;
  /** Open with MDB_NOSYNC (see the header comment: not power-loss safe). Default false. */
  unsafeNoSync?: boolean;
}

// ── constants ─────────────────────────────────────────────────────────────────────────────────
export const FSM_FILE = "fsm.mdb";
const RESTORE_PREFIX = "fsm.restore-";

const openDirs = new Set<string>();

export class KvStore {
  private env: Env | null;
  /** The write side of the open environment (rebuilt with it after a restore). */
  private applier: Applier | null;
  private applied: number;
  private restoring = false;
  /** An applyEntriesAsync transaction is in flight. */
  private applying = false;
  private closed = false;
  private readonly snapshotTxns = new Set<LmdbTxn>();
  readonly dir: string;
  readonly file: string;
  private readonly keep: number;
  private readonly noSync: boolean;
  /** What the check of the whole file at open covered (null: the file was new). */
  readonly verified: Verification | null;

  private constructor(dir: string, env: Env, keep: number, noSync: boolean, verified: Verification | null) {
    this.dir = dir;
    this.file = KvStore.fileIn(dir);
    this.env = env;
    this.keep = keep;
    this.noSync = noSync;
    this.verified = verified;
    this.applied = parseApplied(this.file, env.meta.getBinary(META_APPLIED));
    this.applier = new Applier(env, this.file, keep);
  }

  /** The path of the LMDB data file a store in `dir` uses. */
  static fileIn(dir: string): string {
    return join(resolve(dir), FSM_FILE);
  }

  /**
   * Opens (or creates) the store in `opts.dir`. An existing file is checked whole first (every
   * page and record checksum, see fsm-verify.ts): damage throws KvStoreError naming the file.
   */
  static open(opts: KvStoreOptions): KvStore {
    if (!Number.isSafeInteger(opts.versionKeepNum) || opts.versionKeepNum < 0) {
      throw new KvStoreError(`versionKeepNum must be a non-negative integer, got ${opts.versionKeepNum}`);
    }
    const dir = resolve(opts.dir);
    if (openDirs.has(dir)) throw new KvStoreError(`FSM store in ${dir} is already open in this process`);
    try {
      mkdirSync(dir, { recursive: true });
    } catch (e) {
      throw new KvStoreError(`cannot create FSM directory ${dir}: ${errMsg(e)}`, { cause: e });
    }
    try {
      for (const name of readdirSync(dir)) {
        if (name.startsWith(RESTORE_PREFIX)) rmSync(join(dir, name), { force: true });
      }
    } catch (e) {
      throw new KvStoreError(`cannot clean up stale restore files in ${dir}: ${errMsg(e)}`, { cause: e });
    }
    const noSync = opts.unsafeNoSync === true;
    const { env, verified } = openEnv(join(dir, FSM_FILE), noSync, true, true);
    let store: KvStore;
    try {
      store = new KvStore(dir, env, opts.versionKeepNum, noSync, verified);
    } catch (e) {
      void closeEnv(env);
      throw e;
    }
    openDirs.add(dir);
    return store;
  }

  get appliedIndex(): number {
    return this.applied;
  }

  /** Reads at versions >= this are exact; events with version > this are all kept. 0 = nothing compacted. */
  get compactedVersion(): number {
    return this.applier?.compacted ?? 0;
  }

  private live(): Env {
    if (this.closed) throw new KvStoreError(`FSM store ${this.file} is closed`);
    if (!this.env || !this.applier) throw new KvStoreError(`FSM store ${this.file} is swapping in a restored snapshot`);
    return this.env;
  }

  private liveApplier(): Applier {
    this.live();
    return this.applier!;
  }

  /**
   * Applies entries in index order in ONE synchronous LMDB write transaction that also stores the
   * applied index. Returns one outcome per entry applied by this call (entries with index <=
   * appliedIndex are skipped and get no outcome). Undecodable data and null entries only advance
   * the applied index (outcome version 0). Throws KvStoreError, applying nothing, if the indexes
   * are not contiguous from appliedIndex + 1, during a restore, or if LMDB fails (e.g. disk full):
   * the caller must not continue past such a failure. If an entry finds a damaged record, the
   * entries before it are committed with their applied index and KvCorruptionError is thrown.
   */
  applyEntries(entries: FsmEntry[]): ApplyOutcome[] {
    const toApply = this.pending(entries);
    if (toApply.length === 0) return [];
    const env = this.live();
    const a = this.applier!;
    const outcomes: ApplyOutcome[] = [];
    const last = toApply[toApply.length - 1].index;
    let done = this.applied;
    let corrupt: KvCorruptionError | null = null;
    try {
      env.root.transactionSync(() => {
        ({ done, corrupt } = this.applyAll(env, a, toApply, outcomes));
      }, TXN_FLAGS);
    } catch (e) {
      a.rollback(0);
      throw new KvStoreError(`applying entries ${toApply[0].index}..${last} to ${this.file} failed (nothing applied): ${errMsg(e)}`, { cause: e });
    }
    a.committed();
    this.applied = done;
    if (corrupt) throw corrupt;
    return outcomes;
  }

  /**
   * The body of an apply transaction: applies entries until one meets a damaged record (that
   * entry changes nothing, see fsm-apply.ts), then stores the applied index of what was applied.
   * Not throwing on damage keeps the transaction whole in both apply variants: lmdb-js's async
   * transaction commits whatever ran before a callback throws.
   */
  private applyAll(env: Env, a: Applier, toApply: FsmEntry[], outcomes: ApplyOutcome[], decoded?: Command[]): { done: number; corrupt: KvCorruptionError | null } {
    let done = this.applied;
    let corrupt: KvCorruptionError | null = null;
    for (let i = 0; i < toApply.length; i++) {
      const e = toApply[i];
      const mark = a.mark();
      try {
        outcomes.push(a.applyEntry(e, decoded?.[i]));
      } catch (err) {
        if (!(err instanceof KvCorruptionError)) throw err;
        a.rollback(mark);
        corrupt = err;
        break;
      }
      done = e.index;
    }
    a.flushProposals();
    if (done > this.applied) env.meta.putSync(META_APPLIED, appliedRecord(done));
    return { done, corrupt };
  }

  /**
   * applyEntries in lmdb-js's asynchronous write transaction: the commit (and, with
   * overlappingSync, its flush) runs on lmdb-js's writer thread, so the JS thread keeps
   * serving. Resolves once the writes are committed and visible. Calls must not overlap: the
   * caller awaits each one before the next (the Raft node applies in order).
   */
  async applyEntriesAsync(entries: FsmEntry[]): Promise<ApplyOutcome[]> {
    const toApply = this.pending(entries);
    if (toApply.length === 0) return [];
    if (this.applying) throw new KvStoreError(`overlapping applyEntriesAsync calls on ${this.file}`);
    const env = this.live();
    const a = this.applier!;
    const outcomes: ApplyOutcome[] = [];
    const last = toApply[toApply.length - 1].index;
    let done = this.applied;
    let corrupt: KvCorruptionError | null = null;
    this.applying = true;
    try {
      await env.root.transaction(() => {
        ({ done, corrupt } = this.applyAll(env, a, toApply, outcomes));
      });
    } catch (e) {
      a.rollback(0);
      throw new KvStoreError(`applying entries ${toApply[0].index}..${last} to ${this.file} failed (nothing applied): ${errMsg(e)}`, { cause: e });
    } finally {
      this.applying = false;
    }
    a.committed();
    this.applied = done;
    if (corrupt) throw corrupt;
    return outcomes;
  }

  /**
   * Applies decoded commands (the entry point under applyEntries' decoding, dedupe included; for
   * tests and tools that hold Command objects). Same transaction and failure rules as applyEntries.
   */
  applyCommands(entries: { index: number; cmd: Command; proposal?: FsmEntry["proposal"] }[]): ApplyOutcome[] {
    const toApply = this.pending(entries);
    if (toApply.length === 0) return [];
    const env = this.live();
    const a = this.applier!;
    const outcomes: ApplyOutcome[] = [];
    let done = this.applied;
    let corrupt: KvCorruptionError | null = null;
    try {
      env.root.transactionSync(() => {
        const asEntries = toApply.map((e) => ({ index: e.index, data: null, proposal: e.proposal }));
        ({ done, corrupt } = this.applyAll(env, a, asEntries, outcomes, toApply.map((e) => e.cmd)));
      }, TXN_FLAGS);
    } catch (e) {
      a.rollback(0);
      throw new KvStoreError(`applying commands ${toApply[0].index}..${toApply[toApply.length - 1].index} to ${this.file} failed (nothing applied): ${errMsg(e)}`, { cause: e });
    }
    a.committed();
    this.applied = done;
    if (corrupt) throw corrupt;
    return outcomes;
  }

  /** The entries not yet applied, checked to continue the applied index without a gap. */
  private pending<E extends { index: number }>(entries: E[]): E[] {
    this.live();
    if (this.restoring) throw new KvStoreError(`cannot apply entries to ${this.file} while a snapshot restore is in progress`);
    const toApply: E[] = [];
    let next = this.applied + 1;
    for (const e of entries) {
      if (!Number.isSafeInteger(e.index) || e.index < 1) throw new KvStoreError(`invalid entry index ${e.index}`);
      if (e.index < next && toApply.length === 0) continue; // already applied (replay)
      if (e.index !== next) {
        throw new KvStoreError(`entries must be contiguous: expected index ${next} but got ${e.index} (applied index ${this.applied}, ${this.file})`);
      }
      toApply.push(e);
      next++;
    }
    return toApply;
  }

  private corrupt(db: string, lmdbKey: Uint8Array, detail: string): KvCorruptionError {
    return new KvCorruptionError(this.file, describeRecord(db, lmdbKey), detail);
  }

  /**
   * Newest version <= atVersion (0 = latest). Expired or deleted → null. Throws
   * VersionCompactedError when 0 < atVersion < compactedVersion (that history is gone).
   */
  get(key: Uint8Array, atVersion: number, nowMs: number): KvRecord | null {
    const env = this.live();
    const compacted = this.applier!.compacted;
    if (atVersion !== 0 && atVersion < compacted) throw new VersionCompactedError(atVersion, compacted);
    if (key.length === 0) return null;
    const skey = storageKey(key);
    let rec: Buffer | undefined = env.latest.getBinary(skey);
    if (rec && !recordIntact(rec, crcSeed(skey))) throw this.corrupt("latest", skey, "checksum mismatch");
    let db = "latest";
    let lmdbKey: Uint8Array = skey;
    if (!rec || (atVersion !== 0 && recVersion(rec) > atVersion)) {
      if (atVersion === 0) return null;
      rec = undefined;
      const start = historyKey(skey, atVersion, 0xff);
      const end = escapeKey(skey, 0);
      for (const { key: hk, value } of env.history.getRange({ start, end, reverse: true, limit: 1 })) {
        if (!recordIntact(value, crcSeed(hk))) throw this.corrupt("history", hk, "checksum mismatch");
        if (hk[hk.length - 1] !== KIND_TOMB) rec = value;
        db = "history";
        lmdbKey = hk;
      }
      if (!rec) return null;
    }
    if (recValueOffset(rec) < 0) throw this.corrupt(db, lmdbKey, "malformed record");
    const kv = toKvRecord({ key, rec }, false);
    if (kv.expireAt !== 0 && kv.expireAt <= nowMs) return null;
    return kv;
  }

  /** A consistent read: `f` sees one snapshot, with that snapshot's applied index and compacted version. */
  private readAt<T>(f: (src: ReadSource, applied: number, compacted: number) => T): T {
    const env = this.live();
    const txn = env.root.useReadTransaction() as unknown as LmdbTxn;
    try {
      const opts = { transaction: txn as never };
      const applied = parseApplied(this.file, env.meta.get(META_APPLIED, opts));
      const compacted = parseMeta64(this.file, META_COMPACTED, env.meta.get(META_COMPACTED, opts));
      const src: ReadSource = { latest: env.latest, history: env.history, changes: env.changes, txn, corrupt: (db, k, d) => this.corrupt(db, k, d) };
      return f(src, applied, compacted);
    } finally {
      txn.done();
    }
  }

  /**
   * The keys in [q.key, q.end) visible at q.atVersion (0 = latest), in key order (reverse:
   * descending), at most q.limit, stopping early (more = true) once the kvs' key + value bytes
   * reach q.maxBytes (always at least one kv); count covers the whole range. Throws
   * VersionCompactedError below compactedVersion and VersionFutureError above the applied index.
   */
  range(q: RangeQuery): RangeResult {
    return this.readAt((src, applied, compacted) => {
      if (q.atVersion > applied) throw new VersionFutureError(q.atVersion, applied);
      if (q.atVersion !== 0 && q.atVersion < compacted) throw new VersionCompactedError(q.atVersion, compacted);
      const version = q.atVersion === 0 ? applied : q.atVersion;
      return scanRange(src, { ...q, version, merge: version < applied });
    });
  }

  /**
   * Events with after < version <= min(through, applied) whose key starts with one of `prefixes`
   * (none = all), in (version, key) order, at most `limit` (never cutting a version in two unless
   * a single version has more than `limit` events). Throws VersionCompactedError if after <
   * compactedVersion (events at or below it are gone).
   */
  changes(after: number, through: number, prefixes: Uint8Array[], limit: number): KvEvent[] {
    return this.readAt((src, applied, compacted) => {
      if (after < compacted) throw new VersionCompactedError(after, compacted);
      return readChanges(src, after, Math.min(through, applied), prefixes, limit);
    });
  }

  /**
   * The versions of `key` still stored, oldest first: history (puts and tombstones) then the live
   * record. Reads at versions older than the first one find nothing (pruned or never written).
   */
  versions(key: Uint8Array): { version: number; deleted: boolean }[] {
    const env = this.live();
    if (key.length === 0) return [];
    const skey = storageKey(key);
    const prefix = escapeKey(skey, 0);
    const out: { version: number; deleted: boolean }[] = [];
    for (const { key: hk, value } of env.history.getRange({ start: prefix, end: Buffer.concat([prefix, Buffer.from([0xff])]) })) {
      if (!recordIntact(value, crcSeed(hk))) throw this.corrupt("history", hk, "checksum mismatch");
      out.push({ version: getU64BE(hk, hk.length - 9), deleted: hk[hk.length - 1] === KIND_TOMB });
    }
    const rec = env.latest.getBinary(skey);
    if (rec && !recordIntact(rec, crcSeed(skey))) throw this.corrupt("latest", skey, "checksum mismatch");
    if (rec) out.push({ version: recVersion(rec), deleted: false });
    return out;
  }

  /** Up to `limit` keys whose latest version is expired at nowMs, oldest expiry first. */
  expiredKeys(nowMs: number, limit: number): { key: Uint8Array; version: number }[] {
    const env = this.live();
    if (limit <= 0 || nowMs < 1) return [];
    const end = Buffer.allocUnsafe(8);
    putU64BE(end, 0, Math.floor(nowMs) + 1);
    const out: { key: Uint8Array; version: number }[] = [];
    for (const { key: ek, value } of env.expiry.getRange({ start: Buffer.alloc(8), end, limit })) {
      const problem = checkExpiry(ek, value, Number.MAX_SAFE_INTEGER);
      if (problem) throw this.corrupt("expiry", ek, problem);
      out.push(parseExpiryValue(ek, value));
    }
    return out;
  }

  /** The leader-stamped clock (ms) as of the last applied entry that carried one. */
  get clockMs(): number {
    return this.liveApplier().clock;
  }

  stats(): { dataSize: number; keyCount: number } {
    const env = this.live();
    let pages = 0;
    let pageSize = 4096;
    for (const db of [env.root, env.latest, env.history, env.expiry, env.meta, env.changes, env.sessions, env["session-results"], env["session-expiry"], env.proposals]) {
      const s = dbStats(db);
      pageSize = s.pageSize;
      pages += s.treeBranchPageCount + s.treeLeafPageCount + s.overflowPages;
    }
    return { dataSize: pages * pageSize, keyCount: dbStats(env.latest).entryCount };
  }

  /**
   * Streams a consistent image of the store (one read transaction, held until the stream is
   * consumed to the end or abandoned with return()/break — a caller that never iterates it keeps
   * that transaction, and the old pages it pins, until close()). The format is in
   * fsm-snapshot.ts: every database but the rebuilt indexes, each record checked as it is read.
   */
  snapshotChunks(chunkBytes = 1 << 20): SnapshotImage {
    const env = this.live();
    const target = Math.max(1024, Math.floor(chunkBytes));
    const txn = env.root.useReadTransaction() as unknown as LmdbTxn;
    let applied: number;
    try {
      applied = parseApplied(this.file, env.meta.get(META_APPLIED, { transaction: txn as never }));
    } catch (e) {
      txn.done();
      if (e instanceof KvStoreError) throw e;
      throw new KvStoreError(`cannot start a snapshot of ${this.file}: ${errMsg(e)}`, { cause: e });
    }
    this.snapshotTxns.add(txn);
    const txns = this.snapshotTxns;
    const file = this.file;
    let started = false;
    let totals: ImageTotals | null = null;
    const release = () => {
      if (txns.delete(txn)) txn.done();
    };
    return {
      appliedIndex: applied,
      chunks: {
        [Symbol.asyncIterator]: () => {
          if (started) throw new KvStoreError("a snapshot stream can be iterated only once");
          started = true;
          return imageChunks(file, env, txn, applied, target, release, (t) => (totals = t));
        },
      },
      totals: () => totals,
      release,
    };
  }

  /** Replaces the store with the image in `chunks` (checked whole first); returns its applied index. */
  async restoreFromChunks(chunks: AsyncIterable<Uint8Array>): Promise<number> {
    return (await this.restoreImage(chunks)).applied;
  }

  /**
   * restoreFromChunks, saying what the image held. `imageOffset` is where the image starts in the
   * enclosing stream (a backup file), for byte positions in messages.
   */
  async restoreImage(chunks: AsyncIterable<Uint8Array>, imageOffset = 0): Promise<ImageSummary> {
    this.live();
    if (this.restoring) throw new KvStoreError(`a restore into ${this.file} is already in progress`);
    this.restoring = true;
    const tmp = join(this.dir, `${RESTORE_PREFIX}${randomBytes(6).toString("hex")}.mdb`);
    let tmpEnv: Env | null = null;
    let swapped = false;
    const it = chunks[Symbol.asyncIterator]();
    let finished = false;
    try {
      try {
        tmpEnv = openEnv(tmp, true, false, false).env;
      } catch (e) {
        throw new KvStoreError(`restore into ${this.file}: cannot create staging file ${tmp}: ${errMsg(e)}`, { cause: e });
      }
      const summary = await writeImage(it, tmpEnv, this.file, tmp, imageOffset);
      const applied = summary.applied;
      finished = true;
      await syncEnv(tmpEnv);
      await closeEnv(tmpEnv);
      tmpEnv = null;
      if (this.closed) throw new KvStoreError(`restore into ${this.file} aborted: the store was closed`);
      // Swap: close the current environment, rename the verified (already fsync'd) file over it
      // atomically, reopen, and fsync the directory so the rename itself is durable.
      const old = this.live();
      this.env = null;
      this.applier = null;
      try {
        for (const txn of this.snapshotTxns) txn.done();
        this.snapshotTxns.clear();
        await closeEnv(old);
        renameSync(tmp, this.file);
        swapped = true;
      } catch (e) {
        this.env = openEnv(this.file, this.noSync, true, false).env; // the old file is still in place: keep serving it
        this.applier = new Applier(this.env, this.file, this.keep);
        throw new KvStoreError(`restore into ${this.file}: swapping in the new file failed (old state kept): ${errMsg(e)}`, { cause: e });
      } finally {
        rmSync(`${tmp}-lock`, { force: true });
      }
      // Not checked whole again: every record was checked as it was written, by this process.
      this.env = openEnv(this.file, this.noSync, true, false).env;
      this.applied = parseApplied(this.file, this.env.meta.getBinary(META_APPLIED));
      // The in-memory copies (compacted, clock, sessions, dedupe windows) come from the new file.
      this.applier = new Applier(this.env, this.file, this.keep);
      if (this.applied !== applied) throw new KvStoreError(`restore into ${this.file}: applied index ${this.applied} after swap, expected ${applied}`);
      try {
        fsyncDir(this.dir);
      } catch (e) {
        throw new KvStoreError(`restore into ${this.file}: the new state is in place but fsync of ${this.dir} failed: ${errMsg(e)}`, { cause: e });
      }
      return summary;
    } catch (e) {
      if (e instanceof KvStoreError) throw e;
      throw new KvStoreError(`restore into ${this.file} failed: ${errMsg(e)}`, { cause: e });
    } finally {
      this.restoring = false;
      if (!finished) {
        try {
          await it.return?.();
        } catch {
          /* the producer's own cleanup failed; nothing more to do */
        }
      }
      if (tmpEnv) await closeEnv(tmpEnv).catch(() => undefined);
      if (!swapped) {
        rmSync(tmp, { force: true });
        rmSync(`${tmp}-lock`, { force: true });
      }
    }
  }

  /** Waits until everything applied is on disk. */
  async flush(): Promise<void> {
    const env = this.live();
    try {
      await syncEnv(env);
    } catch (e) {
      throw new KvStoreError(`flushing ${this.file} failed: ${errMsg(e)}`, { cause: e });
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    openDirs.delete(this.dir);
    for (const txn of this.snapshotTxns) txn.done();
    this.snapshotTxns.clear();
    const env = this.env;
    this.env = null;
    if (env) await closeEnv(env);
  }
}

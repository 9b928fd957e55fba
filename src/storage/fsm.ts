// The state machine (FSM) storage: an MVCC key-value store on one lmdb-js environment.
//
// ── Files ────────────────────────────────────────────────────────────────────────────────────
// The environment is the single file `<kv-dir>/fsm.mdb` (+ LMDB's `fsm.mdb-lock`), not the usual
// `<dir>/data.mdb`: the seed's examples use the same directory for --log-dir and --kv-dir, so the
// FSM must not collide with the Raft log's environment, and a single file can be replaced
// atomically by rename(2) when a snapshot is restored (`fsm.restore-<random>.mdb` is the staging
// file; leftovers of a crashed restore are removed on open).
//
// ── Named databases (all binary keys and values, no msgpack/JSON) ─────────────────────────────
//   latest   skey                              → record      the newest version of each LIVE key
//   history  esc(skey) ‖ be64(version) ‖ kind  → record      superseded versions and tombstones
//   expiry   be64(expireAt) ‖ skey             → le64(version) [‖ full key if skey is hashed] ‖ crc
//   meta     "format" → "rbkv-fsm\0" ‖ u8 format version (2) ‖ crc
//            "applied" → le64(applied index) ‖ crc
// `skey` (storage key) is the user key itself when it is at most INLINE_KEY_MAX bytes; longer keys
// (up to any size; the API allows 4 KiB while LMDB's key limit is 1978 bytes) become
// key[0..INLINE_KEY_MAX) ‖ sha256(key), and the full key is kept in the record. This keeps the
// byte order of keys except among long keys that share their first INLINE_KEY_MAX bytes.
// `esc` escapes 0x00 as 00 FF and ends with 00 00: it preserves order and makes the encoding
// prefix-free, so (key, version) pairs of different keys never interleave in `history`, even when
// one key is a prefix of another. `kind` (0 = put, 1 = tombstone) is in the key so that pruning
// and reads can recognise tombstones without reading values.
//
// Record (value in `latest` and `history`):
//   [u8 flags (bit0: full key follows)][u32 meta][u32 versionLo][u32 versionHi]
//   [u32 expireLo][u32 expireHi] [u32 keyLen][key]? [value...] [u32 crc]
//
// ── Checksums (format version 2) ───────────────────────────────────────────────────────────────
// LMDB keeps none, so every value in every database ends with crc = CRC-32 of (its LMDB key ‖ the
// value's bytes before the crc), little-endian (record-checksum.ts). A record moved from `latest`
// to `history` is re-sealed for its new key after its old checksum is checked. The checksums are
// checked: for the whole file when the store opens (fsm-verify.ts, which also walks every LMDB
// page itself first: a cursor that meets a damaged page aborts the process), and for every record
// read afterwards (get, versions, expiredKeys, apply, snapshot streaming, restore). A mismatch
// throws KvCorruptionError naming the file, the database and the key: wrong bytes are never
// returned. A file of format version 1 (no checksums) is refused with a message naming both
// versions; there is no migration (pre-release).
//
// ── MVCC ───────────────────────────────────────────────────────────────────────────────────────
// A write at log index i is version i. A Put moves the previous latest record (if any) into
// history and writes the new one to `latest`. A Delete moves the previous record into history,
// adds a tombstone at version i and removes the key from `latest`, so `latest` holds exactly the
// live keys (its entry count is the key count) and a read at the latest version is one lookup.
// A read at version V: the latest record if its version <= V, else the newest history entry <= V
// (a tombstone → not found). versionKeepNum N > 0 keeps at most N versions per key (the live one
// included) and prunes on every write of that key; a tombstone left as the OLDEST retained version
// is dropped too (it hides nothing), so with N = 1 a deleted key leaves nothing behind.
// Apply never looks at the clock: TTL only hides records at read time; deletion of expired keys
// is a replicated ExpireKey command (issued by the leader's reaper from expiredKeys()).
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
// API, and lmdb-js's async `transaction()` hangs under Bun 1.4.5. So callers should batch entries
// (one applyEntries call per batch); on the dev machine a 1-entry call took ~0.4 ms and a
// 100-entry call ~1.5 ms (vs ~0.02 / ~0.9 ms with unsafeNoSync).
// The opt-in `unsafeNoSync` opens the environment with MDB_NOSYNC instead: no fsync at all
// (flush() forces one), still safe against a process crash (SIGKILL: committed pages are in the
// OS page cache), but an OS crash or power loss may corrupt the file — meant to pair with the
// server's --unsafe-no-fsync.
// A restore writes the staging file without per-transaction syncs, fsyncs it once, renames it over
// fsm.mdb and fsyncs the directory: a crash leaves either the old or the new file, never a mix.
//
// lmdb-js 3.5.6 crashes the process (segfault) if mdb_env_open fails, e.g. on a file that is not
// an LMDB file; open() therefore validates the file header itself before handing it to LMDB.

import { createHash, randomBytes } from "node:crypto";
import { accessSync, closeSync, constants as fsConstants, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { type Database, type DatabaseOptions, type RootDatabase, type TransactionFlags, open as lmdbOpen } from "lmdb";
import { type ApplyResult } from "./apply-result.ts";
import { CommandKind, decodeCommand, type Command } from "./command.ts";
import {
  KIND_PUT,
  KIND_TOMB,
  KvCorruptionError,
  KvStoreError,
  META_APPLIED,
  META_FORMAT,
  appliedRecord,
  checkExpiry,
  checkFormatMarker,
  checkRecord,
  describeRecord,
  encodeRecord,
  escapeKey,
  expiryKey,
  expiryValue,
  formatRecord,
  getU64BE,
  getU64LE,
  historyKey,
  parseApplied,
  parseExpiryValue,
  putU64BE,
  putU64LE,
  recExpireAt,
  recFullKey,
  recMeta,
  recValue,
  recValueOffset,
  recVersion,
  resealInto,
  storageKey,
  u8view,
} from "./fsm-format.ts";
import { DB_NAMES, type Verification, verifyFsmFile } from "./fsm-verify.ts";
import { checkLmdbFile } from "./lmdb-file.ts";
import { crcSeed, recordIntact } from "./record-checksum.ts";

export { KvCorruptionError, KvStoreError } from "./fsm-format.ts";
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
  version: number;
  events: KvEvent[];
  /** The answer for the proposer, for commands that have one (Txn, sessions, Compact). */
  result?: ApplyResult;
  /** A later copy of an applied proposal (proposal-dedupe.ts): nothing was applied. */
  duplicate?: boolean;
  /** A retry of an applied (session, seq): `result` is the stored one, nothing was applied. */
  replayed?: boolean;
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
// ABORTABLE | SYNCHRONOUS_COMMIT | NO_SYNC_FLUSH — what lmdb-js itself uses for its internal
// synchronous commits; with overlappingSync the flush still happens inline (see header).
const TXN_FLAGS = 0x10003 as TransactionFlags;
const EMPTY = new Uint8Array(0);
/** Records up to this size are re-sealed into a reused buffer when they move to history. */
const SCRATCH_MAX = 1 << 20;

const SNAP_MAGIC = Buffer.from("RBKVSNAP");
const SNAP_VERSION = 2; // 2: record values carry their checksum (FSM format 2)
const SNAP_HEADER = 8 + 4 + 8;
const TAG_LATEST = 1;
const TAG_HISTORY = 2;
const TAG_END = 0xfe;
const SNAP_PAGE = 512; // entries read per range call while streaming
const RESTORE_BATCH_BYTES = 8 << 20;
const RESTORE_BATCH_RECORDS = 20_000;
const MAX_SNAPSHOT_RECORD = 64 << 20;

function errMsg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Checks that `file` is empty/absent or starts with two valid LMDB meta pages, so that LMDB is
 * never asked to open something else (lmdb-js segfaults when mdb_env_open fails). Returns its size.
 */
function validateLmdbFile(file: string): number {
  let size: number;
  try {
    size = statSync(file).size;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw new KvStoreError(`cannot stat FSM file ${file}: ${errMsg(e)}`, { cause: e });
  }
  if (!statSync(file).isFile()) throw new KvStoreError(`FSM file ${file} is not a regular file`);
  try {
    accessSync(file, fsConstants.R_OK | fsConstants.W_OK);
    const lock = `${file}-lock`;
    try {
      accessSync(lock, fsConstants.R_OK | fsConstants.W_OK);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
  } catch (e) {
    throw new KvStoreError(`FSM file ${file} (or its lock file) is not readable and writable: ${errMsg(e)}`, { cause: e });
  }
  if (size === 0) return 0; // LMDB initialises an empty file
  try {
    checkLmdbFile(file);
  } catch (e) {
    throw new KvStoreError(errMsg(e), { cause: e });
  }
  return size;
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

interface Env {
  root: RootDatabase<Buffer, Uint8Array>;
  latest: Database<Buffer, Uint8Array>;
  history: Database<Buffer, Uint8Array>;
  expiry: Database<Buffer, Uint8Array>;
  meta: Database<Buffer, Uint8Array>;
}

interface LmdbTxn {
  done(): void;
}
interface DbStats {
  pageSize: number;
  treeBranchPageCount: number;
  treeLeafPageCount: number;
  overflowPages: number;
  entryCount: number;
}

/**
 * Opens (creating if empty) an FSM environment at `file`. Throws KvStoreError if the file is not
 * ours or, with `verify`, if any page or record of an existing file is damaged (see fsm-verify.ts;
 * then `verified` says what was checked). `init` is false for a restore target (the marker is
 * written at the end of the restore).
 */
function openEnv(file: string, noSync: boolean, init: boolean, verify: boolean): { env: Env; verified: Verification | null } {
  const size = validateLmdbFile(file);
  let root: RootDatabase<Buffer, Uint8Array>;
  try {
    root = lmdbOpen<Buffer, Uint8Array>({
      path: file,
      noSubdir: true,
      maxDbs: 8,
      encoding: "binary",
      keyEncoding: "binary",
      ...(noSync ? { noSync: true, overlappingSync: false } : {}),
    });
  } catch (e) {
    throw new KvStoreError(`cannot open FSM environment ${file}: ${errMsg(e)}`, { cause: e });
  }
  try {
    let verified: Verification | null = null;
    // Before anything iterates the file: opening read only its meta pages, and LMDB reports which
    // snapshot (transaction) it chose, which is the one to check.
    if (verify && size > 0) verified = verifyFsmFile(file, (root.getStats() as { lastTxnId: number }).lastTxnId);
    const names = [...root.getKeys({})].map((k) => Buffer.from(k).toString("latin1"));
    const fresh = names.length === 0;
    if (!fresh) {
      const ours = new Set(DB_NAMES.map((n) => `${n}\x00`));
      const foreign = names.filter((n) => !ours.has(n));
      if (foreign.length > 0 || names.length !== DB_NAMES.length) {
        throw new KvStoreError(
          `${file} is an LMDB file but not an rbkv FSM store (databases: ${names.map((n) => JSON.stringify(n.replace(/\x00$/, ""))).join(", ")}); refusing to use it`,
        );
      }
    }
    const dbs = {} as Record<(typeof DB_NAMES)[number], Database<Buffer, Uint8Array>>;
    const openAll = () => {
      for (const name of DB_NAMES) {
        const db = root.openDB<Buffer, Uint8Array>(name, { encoding: "binary", keyEncoding: "binary", create: fresh } as DatabaseOptions);
        if (!db) throw new KvStoreError(`${file}: database ${name} is missing`);
        dbs[name] = db;
      }
      if (fresh && init) {
        dbs.meta.putSync(META_FORMAT, formatRecord());
        dbs.meta.putSync(META_APPLIED, appliedRecord(0));
      }
    };
    if (fresh) root.transactionSync(openAll, TXN_FLAGS);
    else openAll();
    if (!fresh || init) {
      checkFormatMarker(file, dbs.meta.getBinary(META_FORMAT));
      parseApplied(file, dbs.meta.getBinary(META_APPLIED));
    }
    return { env: { root, ...dbs }, verified };
  } catch (e) {
    void root.close();
    if (e instanceof KvStoreError) throw e;
    throw new KvStoreError(`cannot open FSM environment ${file}: ${errMsg(e)}`, { cause: e });
  }
}

function dbStats(db: Database<Buffer, Uint8Array>): DbStats {
  return db.getStats() as DbStats;
}

function closeEnv(env: Env): Promise<void> {
  return env.root.close();
}

/** Reads the stream as a byte source, hashing everything consumed through take(). */
class StreamReader {
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;
  private pending: Buffer[] = []; // chunks received but not yet joined into buf
  private pendingBytes = 0;
  consumed = 0;
  readonly hash = createHash("sha256");
  private ended = false;
  constructor(private readonly it: AsyncIterator<Uint8Array>) {}
  available(): number {
    return this.buf.length - this.pos;
  }
  /** Makes at least n bytes available; false if the stream ended first. */
  async fill(n: number): Promise<boolean> {
    while (this.available() + this.pendingBytes < n) {
      if (this.ended) return false;
      const r = await this.it.next();
      if (r.done) {
        this.ended = true;
        return false;
      }
      const chunk = r.value;
      if (!(chunk instanceof Uint8Array)) throw new KvStoreError("snapshot stream yielded a non-binary chunk");
      this.pending.push(u8view(chunk));
      this.pendingBytes += chunk.length;
    }
    if (this.available() < n) {
      // Join once per need, not once per chunk, so a large record split into many small chunks is linear.
      this.buf = Buffer.concat([this.buf.subarray(this.pos), ...this.pending]);
      this.pos = 0;
      this.pending = [];
      this.pendingBytes = 0;
    }
    return true;
  }
  /** Takes n available bytes (call fill first); hashed unless raw. */
  take(n: number, raw = false): Buffer {
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    this.consumed += n;
    if (!raw) this.hash.update(out);
    return out;
  }
  async atEnd(): Promise<boolean> {
    return !(await this.fill(1));
  }
}

const openDirs = new Set<string>();

export class KvStore {
  private env: Env | null;
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
  /** Reused to re-seal records moving to history (see resealInto): no allocation per write. */
  private scratch = Buffer.allocUnsafe(4096);

  private constructor(dir: string, env: Env, keep: number, noSync: boolean, verified: Verification | null) {
    this.dir = dir;
    this.file = KvStore.fileIn(dir);
    this.env = env;
    this.keep = keep;
    this.noSync = noSync;
    this.verified = verified;
    this.applied = parseApplied(this.file, env.meta.getBinary(META_APPLIED));
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
    openDirs.add(dir);
    return new KvStore(dir, env, opts.versionKeepNum, noSync, verified);
  }

  get appliedIndex(): number {
    return this.applied;
  }

  private live(): Env {
    if (this.closed) throw new KvStoreError(`FSM store ${this.file} is closed`);
    if (!this.env) throw new KvStoreError(`FSM store ${this.file} is swapping in a restored snapshot`);
    return this.env;
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
    const outcomes: ApplyOutcome[] = [];
    const last = toApply[toApply.length - 1].index;
    let done = this.applied;
    let corrupt: KvCorruptionError | null = null;
    try {
      env.root.transactionSync(() => {
        ({ done, corrupt } = this.applyAll(env, toApply, outcomes));
      }, TXN_FLAGS);
    } catch (e) {
      throw new KvStoreError(`applying entries ${toApply[0].index}..${last} to ${this.file} failed (nothing applied): ${errMsg(e)}`, { cause: e });
    }
    this.applied = done;
    if (corrupt) throw corrupt;
    return outcomes;
  }

  /**
   * The body of an apply transaction: applies entries until one meets a damaged record (applyOne
   * checks before it writes anything), then stores the applied index of what was applied. Not
   * throwing on damage keeps the transaction whole in both apply variants: lmdb-js's async
   * transaction commits whatever ran before a callback throws.
   */
  private applyAll(env: Env, toApply: FsmEntry[], outcomes: ApplyOutcome[]): { done: number; corrupt: KvCorruptionError | null } {
    let done = this.applied;
    let corrupt: KvCorruptionError | null = null;
    for (const e of toApply) {
      try {
        outcomes.push(this.applyOne(env, e));
      } catch (err) {
        if (!(err instanceof KvCorruptionError)) throw err;
        corrupt = err;
        break;
      }
      done = e.index;
    }
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
    const outcomes: ApplyOutcome[] = [];
    const last = toApply[toApply.length - 1].index;
    let done = this.applied;
    let corrupt: KvCorruptionError | null = null;
    this.applying = true;
    try {
      await env.root.transaction(() => {
        ({ done, corrupt } = this.applyAll(env, toApply, outcomes));
      });
    } catch (e) {
      throw new KvStoreError(`applying entries ${toApply[0].index}..${last} to ${this.file} failed (nothing applied): ${errMsg(e)}`, { cause: e });
    } finally {
      this.applying = false;
    }
    this.applied = done;
    if (corrupt) throw corrupt;
    return outcomes;
  }

  /** The entries not yet applied, checked to continue the applied index without a gap. */
  private pending(entries: FsmEntry[]): FsmEntry[] {
    this.live();
    if (this.restoring) throw new KvStoreError(`cannot apply entries to ${this.file} while a snapshot restore is in progress`);
    const toApply: FsmEntry[] = [];
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

  private applyOne(env: Env, e: FsmEntry): ApplyOutcome {
    const index = e.index;
    if (e.data === null) return { index, version: 0, events: [] };
    let cmd: Command;
    try {
      cmd = decodeCommand(e.data);
    } catch {
      return { index, version: 0, events: [] }; // every replica decodes the same bytes the same way
    }
    if (!("key" in cmd)) return { index, version: 0, events: [] };
    const key = cmd.key;
    const skey = storageKey(key);
    const seed = crcSeed(skey);
    // Every check comes before the first write (see applyAll). getBinaryFast returns lmdb-js's
    // reusable read buffer with its `length` property set to the record's size, which native code
    // (the CRC) ignores: `old` is a view of just the record, used (or copied by moveToHistory)
    // before any other read overwrites it.
    const fast = env.latest.getBinaryFast(skey);
    const old = fast ? fast.subarray(0, fast.length) : undefined;
    if (old && !recordIntact(old, seed)) throw this.corrupt("latest", skey, "checksum mismatch");
    if (cmd.kind === CommandKind.Put) {
      if (old) {
        const oldExpire = recExpireAt(old);
        if (this.keep !== 1) this.moveToHistory(env, skey, old);
        if (oldExpire !== 0) env.expiry.removeSync(expiryKey(oldExpire, skey));
      }
      env.latest.putSync(skey, encodeRecord(seed, skey, key, cmd.value, cmd.meta, index, cmd.expireAt));
      if (cmd.expireAt !== 0) {
        const ek = expiryKey(cmd.expireAt, skey);
        env.expiry.putSync(ek, expiryValue(ek, index, skey, key));
      }
      if (this.keep > 0) this.prune(env, skey, true);
      return { index, version: index, events: [{ type: "put", key, value: cmd.value, meta: cmd.meta, version: index, expireAt: cmd.expireAt }] };
    }
    // Delete / ExpireKey
    if (!old) return { index, version: index, events: [] };
    const oldVersion = recVersion(old);
    const oldExpire = recExpireAt(old);
    if (cmd.kind === CommandKind.ExpireKey && (oldVersion !== cmd.version || oldExpire === 0)) {
      return { index, version: index, events: [] };
    }
    if (this.keep !== 1) this.moveToHistory(env, skey, old);
    // The tombstone is written even with keep = 1 (then pruned at once): it shadows any history
    // left over from a run with a larger versionKeepNum.
    const tk = historyKey(skey, index, KIND_TOMB);
    env.history.putSync(tk, encodeRecord(crcSeed(tk), skey, key, EMPTY, 0, index, 0));
    if (oldExpire !== 0) env.expiry.removeSync(expiryKey(oldExpire, skey));
    env.latest.removeSync(skey);
    if (this.keep > 0) this.prune(env, skey, false);
    const expireAt = cmd.kind === CommandKind.ExpireKey ? oldExpire : 0;
    return { index, version: index, events: [{ type: "delete", key, value: EMPTY, meta: 0, version: index, expireAt }] };
  }

  /** Puts the (checked) latest record `old` of `skey` into history, sealed for its history key. */
  private moveToHistory(env: Env, skey: Uint8Array, old: Uint8Array): void {
    const hk = historyKey(skey, recVersion(old), KIND_PUT);
    // The scratch copy is safe to reuse: inside a write transaction lmdb-js hands each put to
    // LMDB at once, which copies the bytes into its page.
    if (old.length > this.scratch.length && old.length <= SCRATCH_MAX) this.scratch = Buffer.allocUnsafe(Math.max(old.length, this.scratch.length * 2));
    const into = old.length <= this.scratch.length ? this.scratch : Buffer.allocUnsafe(old.length);
    env.history.putSync(hk, resealInto(old, into, crcSeed(hk)));
  }

  private corrupt(db: string, lmdbKey: Uint8Array, detail: string): KvCorruptionError {
    return new KvCorruptionError(this.file, describeRecord(db, lmdbKey), detail);
  }

  /** Keeps at most `keep` versions of the key (the live one included), dropping a leading tombstone. */
  private prune(env: Env, skey: Uint8Array, live: boolean): void {
    const prefix = escapeKey(skey, 0);
    const end = Buffer.concat([prefix, Buffer.from([0xff])]);
    const keys = [...env.history.getKeys({ start: prefix, end })] as Uint8Array[];
    let drop = Math.max(0, keys.length - (this.keep - (live ? 1 : 0)));
    while (drop < keys.length && keys[drop][keys[drop].length - 1] === KIND_TOMB) drop++;
    for (let i = 0; i < drop; i++) env.history.removeSync(keys[i]);
  }

  /** Newest version <= atVersion (0 = latest). Expired or deleted → null. */
  get(key: Uint8Array, atVersion: number, nowMs: number): KvRecord | null {
    const env = this.live();
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
    const expireAt = recExpireAt(rec);
    if (expireAt !== 0 && expireAt <= nowMs) return null;
    const off = recValueOffset(rec);
    if (off < 0) throw this.corrupt(db, lmdbKey, "malformed record");
    return { key, value: recValue(rec, off), meta: recMeta(rec), version: recVersion(rec), createVersion: 0, expireAt };
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

  stats(): { dataSize: number; keyCount: number } {
    const env = this.live();
    let pages = 0;
    let pageSize = 4096;
    for (const db of [env.root, env.latest, env.history, env.expiry, env.meta] as Database<Buffer, Uint8Array>[]) {
      const s = dbStats(db);
      pageSize = s.pageSize;
      pages += s.treeBranchPageCount + s.treeLeafPageCount + s.overflowPages;
    }
    return { dataSize: pages * pageSize, keyCount: dbStats(env.latest).entryCount };
  }

  /**
   * Streams a consistent image of the store (one read transaction, held until the stream is
   * consumed to the end or abandoned with return()/break — a caller that never iterates it keeps
   * that transaction, and the old pages it pins, until close()).
   * Format: header [magic "RBKVSNAP"][u32 version][u64 applied], records
   * [u8 tag (1 latest, 2 history)][u32 keyLen][u32 valueLen][key][value] in key order per table,
   * trailer [u8 0xFE][u64 record count][sha256 of everything before the digest]. The expiry index
   * and meta are rebuilt on restore. Values are stored records, checksum included (version 2):
   * each is checked as it is read, so a damaged record ends the stream with KvCorruptionError
   * instead of spreading to a peer, and the restoring side checks them again.
   */
  snapshotChunks(chunkBytes = 1 << 20): { appliedIndex: number; chunks: AsyncIterable<Uint8Array> } {
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
    async function* chunks(): AsyncGenerator<Uint8Array> {
      if (started) throw new KvStoreError("a snapshot stream can be iterated only once");
      started = true;
      const hash = createHash("sha256");
      let parts: Buffer[] = [];
      let size = 0;
      const push = (b: Buffer) => {
        hash.update(b);
        parts.push(b);
        size += b.length;
      };
      const emit = (): Buffer => {
        const out = Buffer.concat(parts, size);
        parts = [];
        size = 0;
        return out;
      };
      try {
        const header = Buffer.alloc(SNAP_HEADER);
        SNAP_MAGIC.copy(header, 0);
        header.writeUInt32LE(SNAP_VERSION, 8);
        putU64LE(header, 12, applied);
        push(header);
        let count = 0;
        for (const [tag, name, db] of [
          [TAG_LATEST, "latest", env.latest],
          [TAG_HISTORY, "history", env.history],
        ] as const) {
          let after: Buffer | undefined;
          for (;;) {
            let n = 0;
            const range = db.getRange({ start: after, exclusiveStart: after !== undefined, limit: SNAP_PAGE, transaction: txn as never });
            for (const { key, value } of range) {
              if (!recordIntact(value, crcSeed(key))) throw new KvCorruptionError(file, describeRecord(name, key), "checksum mismatch");
              const h = Buffer.allocUnsafe(9);
              h[0] = tag;
              h.writeUInt32LE(key.length, 1);
              h.writeUInt32LE(value.length, 5);
              push(h);
              push(u8view(key));
              push(u8view(value));
              count++;
              n++;
              after = u8view(key);
              if (size >= target) break;
            }
            if (size >= target) yield emit();
            if (n === 0) break;
          }
        }
        const trailer = Buffer.allocUnsafe(9);
        trailer[0] = TAG_END;
        putU64LE(trailer, 1, count);
        push(trailer);
        const digest = hash.digest();
        parts.push(digest);
        size += digest.length;
        yield emit();
      } catch (e) {
        if (e instanceof KvStoreError) throw e;
        throw new KvStoreError(`snapshot of ${file} failed: ${errMsg(e)}`, { cause: e });
      } finally {
        if (txns.delete(txn)) txn.done();
      }
    }
    return { appliedIndex: applied, chunks: { [Symbol.asyncIterator]: chunks } };
  }

  /**
   * Replaces the whole store with a streamed image: written into a fresh environment next to the
   * current one, verified (structure, order, record count, sha256), synced, then swapped in by an
   * atomic rename. On any failure the current state is untouched and KvStoreError is thrown.
   * Entries must not be applied meanwhile (applyEntries throws); reads keep serving the old state.
   */
  async restoreFromChunks(chunks: AsyncIterable<Uint8Array>): Promise<number> {
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
      const applied = await this.writeImage(it, tmpEnv, tmp);
      finished = true;
      await new Promise<void>((res, rej) => (tmpEnv!.root as unknown as { sync(cb: (e?: unknown) => void): void }).sync((e) => (e ? rej(e) : res())));
      await closeEnv(tmpEnv);
      tmpEnv = null;
      if (this.closed) throw new KvStoreError(`restore into ${this.file} aborted: the store was closed`);
      // Swap: close the current environment, rename the verified (already fsync'd) file over it
      // atomically, reopen, and fsync the directory so the rename itself is durable.
      const old = this.live();
      this.env = null;
      try {
        for (const txn of this.snapshotTxns) txn.done();
        this.snapshotTxns.clear();
        await closeEnv(old);
        renameSync(tmp, this.file);
        swapped = true;
      } catch (e) {
        this.env = openEnv(this.file, this.noSync, true, false).env; // the old file is still in place: keep serving it
        throw new KvStoreError(`restore into ${this.file}: swapping in the new file failed (old state kept): ${errMsg(e)}`, { cause: e });
      } finally {
        rmSync(`${tmp}-lock`, { force: true });
      }
      // Not checked whole again: every record was checked as it was written, by this process.
      this.env = openEnv(this.file, this.noSync, true, false).env;
      this.applied = parseApplied(this.file, this.env.meta.getBinary(META_APPLIED));
      if (this.applied !== applied) throw new KvStoreError(`restore into ${this.file}: applied index ${this.applied} after swap, expected ${applied}`);
      try {
        fsyncDir(this.dir);
      } catch (e) {
        throw new KvStoreError(`restore into ${this.file}: the new state is in place but fsync of ${this.dir} failed: ${errMsg(e)}`, { cause: e });
      }
      return applied;
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

  /** Parses and verifies the stream while writing it into `env`; returns the image's applied index. */
  private async writeImage(it: AsyncIterator<Uint8Array>, env: Env, tmp: string): Promise<number> {
    const r = new StreamReader(it);
    const fail = (why: string) => new KvStoreError(`restore into ${this.file}: corrupt or truncated snapshot stream at byte ${r.consumed}: ${why}`);
    if (!(await r.fill(SNAP_HEADER))) throw fail("stream ended inside the header");
    const header = r.take(SNAP_HEADER);
    if (!header.subarray(0, 8).equals(SNAP_MAGIC)) throw fail("bad magic (not an rbkv FSM snapshot)");
    const version = header.readUInt32LE(8);
    if (version !== SNAP_VERSION) throw fail(`unsupported snapshot format version ${version}`);
    const applied = getU64LE(header, 12);
    if (!Number.isSafeInteger(applied)) throw fail(`bad applied index`);

    type Rec = { tag: number; key: Buffer; value: Buffer };
    let batch: Rec[] = [];
    let batchBytes = 0;
    let count = 0;
    let lastTag = TAG_LATEST;
    let prevKey: Buffer | null = null;
    const flush = () => {
      if (batch.length === 0) return;
      const recs = batch;
      batch = [];
      batchBytes = 0;
      env.root.transactionSync(() => {
        for (const rec of recs) {
          if (rec.tag === TAG_LATEST) {
            env.latest.putSync(rec.key, rec.value, { append: true });
            const exp = recExpireAt(rec.value);
            if (exp !== 0) {
              const ek = expiryKey(exp, rec.key);
              env.expiry.putSync(ek, expiryValue(ek, recVersion(rec.value), rec.key, recFullKey(rec.value) ?? rec.key));
            }
          } else {
            env.history.putSync(rec.key, rec.value, { append: true });
          }
        }
      }, TXN_FLAGS);
    };
    for (;;) {
      if (!(r.available() >= 1 || (await r.fill(1)))) throw fail("stream ended before the trailer");
      const tag = r.take(1)[0];
      if (tag === TAG_END) break;
      if (tag !== TAG_LATEST && tag !== TAG_HISTORY) throw fail(`unknown record tag ${tag}`);
      if (tag < lastTag) throw fail("tables out of order");
      if (tag !== lastTag) prevKey = null;
      lastTag = tag;
      if (!(r.available() >= 8 || (await r.fill(8)))) throw fail("stream ended inside a record header");
      const lens = r.take(8);
      const klen = lens.readUInt32LE(0);
      const vlen = lens.readUInt32LE(4);
      if (klen === 0 || klen > 4096 || vlen > MAX_SNAPSHOT_RECORD) throw fail(`implausible record sizes (key ${klen}, value ${vlen})`);
      if (!(r.available() >= klen + vlen || (await r.fill(klen + vlen)))) throw fail("stream ended inside a record");
      // Copy: the reader's buffer is reused/concatenated; batches outlive it.
      const key = Buffer.from(r.take(klen));
      const value = Buffer.from(r.take(vlen));
      if (prevKey && Buffer.compare(prevKey, key) >= 0) throw fail("keys out of order");
      prevKey = key;
      // Checksum and structure of each record before it is written: the sha256 over the stream
      // proves only that the sender's bytes arrived, not that they were intact on its disk.
      const db = tag === TAG_LATEST ? "latest" : "history";
      const problem = checkRecord(db, key, value, applied);
      if (problem) throw fail(`${problem} in ${describeRecord(db, key)}`);
      batch.push({ tag, key, value });
      batchBytes += klen + vlen;
      count++;
      if (batchBytes >= RESTORE_BATCH_BYTES || batch.length >= RESTORE_BATCH_RECORDS) flush();
    }
    if (!(await r.fill(8))) throw fail("stream ended inside the trailer");
    const declared = getU64LE(r.take(8), 0);
    const digest = r.hash.digest();
    if (!(await r.fill(32))) throw fail("stream ended inside the checksum");
    const sent = r.take(32, true);
    if (!digest.equals(sent)) throw fail("checksum mismatch");
    if (declared !== count) throw fail(`record count mismatch: trailer says ${declared}, stream had ${count}`);
    if (!(await r.atEnd())) throw fail("trailing data after the trailer");
    flush();
    env.root.transactionSync(() => {
      env.meta.putSync(META_FORMAT, formatRecord());
      env.meta.putSync(META_APPLIED, appliedRecord(applied));
    }, TXN_FLAGS);
    const stored = dbStats(env.latest).entryCount + dbStats(env.history).entryCount;
    if (stored !== count) throw new KvStoreError(`restore into ${this.file}: staging file ${tmp} holds ${stored} records, stream had ${count}`);
    return applied;
  }

  /** Waits until everything applied is on disk. */
  async flush(): Promise<void> {
    const env = this.live();
    try {
      await new Promise<void>((res, rej) => (env.root as unknown as { sync(cb: (e?: unknown) => void): void }).sync((e) => (e ? rej(e) : res())));
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

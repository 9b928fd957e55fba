// The Raft log and hard state on LMDB (the --log-dir). This is the durability of the whole
// system: save() resolves only once its transaction is on disk, and one save() carries all
// the entries and the hard state of one ready() (group commit: one fsync for many proposals).
//
// Layout (one environment `<log-dir>/raft-log.mdb`, named databases; format version 2):
//   entries:  index (ordered-binary number) -> [type u8][term f64 LE][data][crc]
//   meta:     "format"    -> "rbkv-log\0" ‖ u8 format version (2) ‖ crc
//             "hard"      -> [term f64][commit f64][vote utf-8][crc]
//             "snap"      -> JSON {index, term, conf} ‖ crc       (rare: on snapshot / compaction)
//             "compacted" -> [index f64][term f64][crc]           (the entry just before the first one kept)
//             "peers"     -> JSON {id: {raft, grpc, promote?}} ‖ crc  (the address book; rare)
//             "cluster"   -> utf-8 cluster id ‖ crc                (set once, at bootstrap or join)
//             "joined"    -> [index f64][crc]   (a joined node: the index of the entry that added it)
//             "removed"   -> JSON {id: index} ‖ crc  (members removed, and where; refused when they dial)
// crc: CRC-32 of the record's key ‖ the bytes before the crc, little-endian (record-checksum.ts);
// an entry's key is its index as a little-endian f64, a meta record's key its name. LMDB keeps no
// checksums of its own. Checked: the whole file once at open (raft-log-format.ts verifyLogFile,
// which also walks every LMDB page itself first: a cursor meeting a damaged page aborts the
// process; the log is bounded by compaction, so this is cheap), and every entry read afterwards
// (entries(), term(), hence replay). A mismatch throws LogStoreError naming the file and the
// record. A log without the "format" record that holds anything is format version 1 (before
// checksums) and is refused, naming both versions; there is no migration (pre-release).

import { mkdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { type Database, type RootDatabase, open } from "lmdb";
import { type Entry, type HardState, type Snapshot, type SnapshotMeta, emptyHardState } from "../raft/messages.ts";
import { type InitialState, type Storage, cloneConf, limitSize } from "../raft/storage.ts";
import { checkLmdbFile } from "./lmdb-file.ts";
import {
  LogStoreError,
  type LogVerification,
  type MetaKey,
  checkLogFormat,
  decodeEntry,
  encodeEntryValue,
  encodeHardState,
  entryTerm,
  formatRecord,
  openMeta,
  sealMeta,
  verifyLogFile,
} from "./raft-log-format.ts";

export { LogStoreError, encodeEntryValue, type LogVerification } from "./raft-log-format.ts";

export interface PeerAddress {
  raft: string;
  grpc: string;
  /**
   * Learners only: the leader promotes it by itself once it holds the committed log (added by
   * Join, or by MemberAdd as a voter). false: a learner that waits for MemberPromote. Absent
   * (also in data written before the flag existed, when every learner came from Join): promote.
   */
  promote?: boolean;
}

/** A PeerAddress read from JSON (peer book, snapshot envelope, entry context); null if it is not one. */
export function peerAddressOf(v: unknown): PeerAddress | null {
  if (typeof v !== "object" || v === null) return null;
  const o = v as Record<string, unknown>;
  if (typeof o.raft !== "string" || typeof o.grpc !== "string") return null;
  const addr: PeerAddress = { raft: o.raft, grpc: o.grpc };
  if (typeof o.promote === "boolean") addr.promote = o.promote;
  return addr;
}

/** Same addresses and promotion flag (an absent flag counts as true, as when read). */
export function samePeerAddress(a: PeerAddress, b: PeerAddress): boolean {
  return a.raft === b.raft && a.grpc === b.grpc && (a.promote ?? true) === (b.promote ?? true);
}

export interface LogStoreOptions {
  dir: string;
  /** Unsafe: do not fsync the log (acknowledged writes may be lost on a machine crash). */
  noSync?: boolean;
}

const ENV_FILE = "raft-log.mdb";
const enc = new TextEncoder();
const dec = new TextDecoder();

function decodeHardState(v: Uint8Array): HardState {
  if (v.byteLength < 16) throw new LogStoreError(`hard state record is ${v.byteLength} bytes, expected at least 16`);
  const dv = new DataView(v.buffer, v.byteOffset, v.byteLength);
  return { term: dv.getFloat64(0, true), commit: dv.getFloat64(8, true), vote: dec.decode(v.subarray(16)) };
}

export class RaftLogStore implements Storage {
  private readonly env: RootDatabase<Uint8Array, string>;
  private readonly entriesDb: Database<Uint8Array, number>;
  private readonly metaDb: Database<Uint8Array, string>;
  private hard: HardState = emptyHardState();
  private snap: SnapshotMeta = { index: 0, term: 0, conf: { voters: [], learners: [] } };
  private compacted = { index: 0, term: 0 };
  private last = 0;
  private peerBook = new Map<string, PeerAddress>();
  private cluster: string | null = null;
  private joined = 0;
  private removed = new Map<string, number>();
  private closed = false;
  /** The absolute path of the LMDB file, for errors. */
  readonly file: string;

  private constructor(
    readonly dir: string,
    env: RootDatabase<Uint8Array, string>,
    /** What the check of the whole file at open covered (null: the file was new). */
    readonly verified: LogVerification | null,
  ) {
    this.env = env;
    this.file = resolve(dir, ENV_FILE);
    this.entriesDb = env.openDB<Uint8Array, number>({ name: "entries", encoding: "binary" });
    this.metaDb = env.openDB<Uint8Array, string>({ name: "meta", encoding: "binary" });
    this.load();
  }

  static open(opts: LogStoreOptions): RaftLogStore {
    try {
      mkdirSync(opts.dir, { recursive: true });
    } catch (err) {
      throw new LogStoreError(`cannot create log directory ${opts.dir}: ${(err as Error).message}`);
    }
    const path = resolve(join(opts.dir, ENV_FILE));
    let size = 0;
    try {
      checkLmdbFile(path);
      size = statSync(path, { throwIfNoEntry: false })?.size ?? 0;
    } catch (err) {
      throw new LogStoreError((err as Error).message);
    }
    let env: RootDatabase<Uint8Array, string>;
    try {
      env = open<Uint8Array, string>({
        path,
        noSubdir: true,
        maxDbs: 4,
        encoding: "binary",
        // The log's promises must mean "on disk": commit waits for the flush.
        overlappingSync: false,
        noSync: opts.noSync ?? false,
      });
    } catch (err) {
      throw new LogStoreError(`cannot open Raft log ${path}: ${(err as Error).message}`);
    }
    try {
      // Before anything iterates the file: opening read only its meta pages, and LMDB reports
      // which snapshot (transaction) it chose, which is the one to check.
      const verified = size > 0 ? verifyLogFile(path, (env.getStats() as { lastTxnId: number }).lastTxnId) : null;
      return new RaftLogStore(opts.dir, env, verified);
    } catch (err) {
      void env.close();
      if (err instanceof LogStoreError) throw err.message.startsWith(path) ? err : new LogStoreError(`${path}: ${err.message}`);
      throw new LogStoreError(`cannot read Raft log ${path}: ${(err as Error).message}`);
    }
  }

  /** The checked body of meta record `key`, or undefined if absent. */
  private meta(key: MetaKey): Uint8Array | undefined {
    const v = this.metaDb.getBinary(key);
    return v ? openMeta(this.file, key, v) : undefined;
  }

  private load(): void {
    const format = this.metaDb.getBinary("format");
    let holdsRecords = false;
    for (const _ of this.metaDb.getKeys({ limit: 1 })) holdsRecords = true;
    for (const _ of this.entriesDb.getKeys({ limit: 1 })) holdsRecords = true;
    checkLogFormat(this.file, format, holdsRecords);
    // A new log gets its marker at once: a log holding records without one is of format 1.
    if (!format) this.env.transactionSync(() => this.metaDb.putSync("format", formatRecord()));
    const hard = this.meta("hard");
    if (hard) this.hard = decodeHardState(hard);
    const snap = this.meta("snap");
    if (snap) this.snap = parseSnapMeta(snap);
    const compacted = this.meta("compacted");
    if (compacted) {
      if (compacted.byteLength !== 16) throw new LogStoreError(`compaction record is ${compacted.byteLength} bytes, expected 16`);
      const dv = new DataView(compacted.buffer, compacted.byteOffset, 16);
      this.compacted = { index: dv.getFloat64(0, true), term: dv.getFloat64(8, true) };
    }
    const peers = this.meta("peers");
    if (peers) {
      const obj = JSON.parse(dec.decode(peers)) as Record<string, unknown>;
      this.peerBook = new Map();
      for (const [id, v] of Object.entries(obj)) {
        const addr = peerAddressOf(v);
        if (addr) this.peerBook.set(id, addr);
      }
    }
    const cluster = this.meta("cluster");
    if (cluster) this.cluster = dec.decode(cluster);
    const removed = this.meta("removed");
    if (removed) this.removed = new Map(Object.entries(JSON.parse(dec.decode(removed)) as Record<string, number>));
    const joined = this.meta("joined");
    if (joined) {
      if (joined.byteLength !== 8) throw new LogStoreError(`${this.file}: corrupted: the "joined" record is ${joined.byteLength} bytes, expected 8`);
      this.joined = new DataView(joined.buffer, joined.byteOffset, 8).getFloat64(0, true);
    }
    let last = this.compacted.index;
    for (const key of this.entriesDb.getKeys({ reverse: true, limit: 1 })) last = key;
    this.last = last;
    // Every index between the compaction point and the last entry must be present.
    let expect = this.compacted.index + 1;
    let count = 0;
    for (const key of this.entriesDb.getKeys({ start: expect })) {
      if (key !== expect) throw new LogStoreError(`log is missing entry ${expect} (next stored is ${key})`);
      expect++;
      count++;
      if (count > 1_000_000) break;
    }
    if (this.hard.commit > this.last) {
      throw new LogStoreError(`hard state commits ${this.hard.commit} but the log ends at ${this.last}`);
    }
  }

  // ---- Storage (synchronous reads for the core) ---------------------------------------------

  initialState(): InitialState {
    return { hardState: { ...this.hard }, conf: cloneConf(this.snap.conf) };
  }

  firstIndex(): number {
    return this.compacted.index + 1;
  }

  lastIndex(): number {
    return this.last;
  }

  term(i: number): number | undefined {
    if (i === this.compacted.index) return this.compacted.term;
    if (i < this.compacted.index || i > this.last) return undefined;
    const fast = this.entriesDb.getBinaryFast(i);
    if (!fast) return undefined;
    // getBinaryFast returns lmdb-js's reusable buffer with `length` set to the value's size, which
    // native code (the CRC) ignores: take a view of just the value.
    return entryTerm(this.file, i, fast.subarray(0, fast.length));
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    if (lo <= this.compacted.index) throw new LogStoreError(`entries from ${lo} are compacted (first index ${this.firstIndex()})`);
    if (hi > this.last + 1) throw new LogStoreError(`entries up to ${hi - 1} requested, log ends at ${this.last}`);
    const out: Entry[] = [];
    let size = 0;
    for (const { key, value } of this.entriesDb.getRange({ start: lo, end: hi })) {
      const e = decodeEntry(this.file, key, value);
      size += e.data.byteLength + 24;
      if (out.length > 0 && size > maxBytes) break;
      out.push(e);
    }
    if (out.length === 0 && hi > lo) throw new LogStoreError(`entries ${lo}..${hi - 1} are missing from the log`);
    return limitSize(out, maxBytes);
  }

  snapshot(): Snapshot | null {
    if (this.snap.index === 0) return null;
    return { meta: { ...this.snap, conf: cloneConf(this.snap.conf) }, data: new Uint8Array(0) };
  }

  // ---- writes -------------------------------------------------------------------------------

  hardState(): HardState {
    return { ...this.hard };
  }

  peers(): Map<string, PeerAddress> {
    return new Map(this.peerBook);
  }

  /** Members removed from the cluster, with the index of their removal. */
  removedPeers(): Map<string, number> {
    return new Map(this.removed);
  }

  /**
   * Records that `id` was removed at `index` (index 0: it was added again, forget it). Kept so
   * that a removed node that comes back after this one restarted is still told (rare writes).
   */
  async setRemoved(id: string, index: number): Promise<void> {
    this.assertOpen();
    if (index > 0) this.removed.set(id, index);
    else if (!this.removed.delete(id)) return;
    const body = enc.encode(JSON.stringify(Object.fromEntries(this.removed)));
    await this.env.transaction(() => this.metaDb.putSync("removed", sealMeta("removed", body)));
  }

  clusterId(): string | null {
    return this.cluster;
  }

  /**
   * For a node that joined: the index of the configuration entry that added it (0 for a founder,
   * or when unknown). Entries below it are the cluster's history from before this node existed.
   */
  joinedAt(): number {
    return this.joined;
  }

  /** Records which cluster this log belongs to (once: at bootstrap, or when joining). */
  async setClusterId(id: string, joinedAt = 0): Promise<void> {
    this.assertOpen();
    if (this.cluster !== null && this.cluster !== id) {
      throw new LogStoreError(`this log belongs to cluster ${this.cluster}, not ${id}`);
    }
    const joined = new Uint8Array(8);
    new DataView(joined.buffer).setFloat64(0, joinedAt, true);
    await this.env.transaction(() => {
      this.metaDb.putSync("cluster", sealMeta("cluster", enc.encode(id)));
      if (joinedAt > 0) this.metaDb.putSync("joined", sealMeta("joined", joined));
    });
    this.cluster = id;
    if (joinedAt > 0) this.joined = joinedAt;
  }

  /** True when nothing was ever stored: a brand-new node. */
  isEmpty(): boolean {
    return this.last === 0 && this.snap.index === 0 && this.hard.term === 0;
  }

  /**
   * Persists one ready() batch in one transaction; resolves once it is on disk. A snapshot
   * replaces the whole log; entries overwrite any stored suffix from their first index on.
   */
  async save(hard: HardState | null, entries: Entry[], snapshot: SnapshotMeta | null, peers?: Map<string, PeerAddress>): Promise<void> {
    this.assertOpen();
    let last = this.last;
    let compacted = this.compacted;
    const snapMeta = snapshot ? { index: snapshot.index, term: snapshot.term, conf: cloneConf(snapshot.conf) } : null;
    await this.env.transaction(() => {
      if (snapMeta) {
        for (const key of this.entriesDb.getKeys({ start: compacted.index + 1, end: last + 1 })) this.entriesDb.removeSync(key);
        compacted = { index: snapMeta.index, term: snapMeta.term };
        last = snapMeta.index;
        this.metaDb.putSync("snap", sealMeta("snap", enc.encode(JSON.stringify(snapMeta))));
        this.metaDb.putSync("compacted", encodeCompacted(compacted));
      }
      if (entries.length > 0) {
        const first = entries[0]!.index;
        if (first > last + 1) throw new LogStoreError(`append at ${first} leaves a gap after ${last}`);
        if (first <= compacted.index) throw new LogStoreError(`append at ${first} overwrites compacted entries (through ${compacted.index})`);
        for (let i = first; i <= last; i++) this.entriesDb.removeSync(i);
        for (const e of entries) this.entriesDb.putSync(e.index, encodeEntryValue(e));
        last = entries[entries.length - 1]!.index;
      }
      if (hard) this.metaDb.putSync("hard", encodeHardState(hard));
      if (peers) this.metaDb.putSync("peers", sealMeta("peers", enc.encode(JSON.stringify(Object.fromEntries(peers)))));
    });
    this.last = last;
    if (snapMeta) {
      this.compacted = compacted;
      this.snap = snapMeta;
    }
    if (hard) this.hard = { ...hard };
    if (peers) this.peerBook = new Map(peers);
  }

  /**
   * Records that the state machine is durable at `meta.index` (a snapshot: the FSM is its own
   * image) and drops entries up to `compactTo` (<= meta.index), keeping trailing entries for
   * followers that are only a little behind.
   */
  async recordSnapshot(meta: SnapshotMeta, compactTo: number): Promise<void> {
    this.assertOpen();
    if (meta.index > this.last) throw new LogStoreError(`snapshot at ${meta.index} is beyond the log's last index ${this.last}`);
    if (compactTo > meta.index) throw new LogStoreError(`cannot compact to ${compactTo}, past the snapshot at ${meta.index}`);
    const compactTerm = compactTo > this.compacted.index ? this.term(compactTo) : undefined;
    const snapMeta = { index: meta.index, term: meta.term, conf: cloneConf(meta.conf) };
    const from = this.compacted.index + 1;
    // Readers must stop asking for the dropped entries before they disappear, so the
    // in-memory view moves first; until the commit the entries merely linger on disk.
    this.snap = snapMeta;
    if (compactTerm !== undefined) this.compacted = { index: compactTo, term: compactTerm };
    await this.env.transaction(() => {
      this.metaDb.putSync("snap", sealMeta("snap", enc.encode(JSON.stringify(snapMeta))));
      if (compactTerm !== undefined) {
        for (let i = from; i <= compactTo; i++) this.entriesDb.removeSync(i);
        this.metaDb.putSync("compacted", encodeCompacted({ index: compactTo, term: compactTerm }));
      }
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.env.close();
  }

  private assertOpen(): void {
    if (this.closed) throw new LogStoreError(`Raft log in ${this.dir} is closed`);
  }
}

function encodeCompacted(c: { index: number; term: number }): Uint8Array {
  const out = new Uint8Array(16);
  const dv = new DataView(out.buffer);
  dv.setFloat64(0, c.index, true);
  dv.setFloat64(8, c.term, true);
  return sealMeta("compacted", out);
}

function parseSnapMeta(v: Uint8Array): SnapshotMeta {
  let obj: unknown;
  try {
    obj = JSON.parse(dec.decode(v));
  } catch {
    throw new LogStoreError("snapshot metadata is not valid JSON");
  }
  const m = obj as Partial<SnapshotMeta>;
  if (typeof m.index !== "number" || typeof m.term !== "number" || !m.conf || !Array.isArray(m.conf.voters) || !Array.isArray(m.conf.learners)) {
    throw new LogStoreError("snapshot metadata is malformed");
  }
  return { index: m.index, term: m.term, conf: cloneConf(m.conf) };
}

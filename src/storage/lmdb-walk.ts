// Reads an LMDB data file page by page, without LMDB, checking every tree the current meta page
// reaches, before LMDB is allowed to iterate the file.
//
// Why: LMDB trusts its pages. A point lookup that meets a zeroed page fails with MDB_CORRUPTED, but
// a cursor that steps onto one hits an mdb_assert and abort()s the whole process (measured with
// lmdb-js 3.5.6: "Assertion 'IS_LEAF(mp)' failed in mdb_cursor_next()", SIGABRT), so a damaged file
// would crash the node instead of being refused. The stores therefore walk their file with this
// reader right after LMDB opened it (LMDB reads only the meta pages when opening) and before any
// cursor runs: structure here, record checksums in the visitor. Every page is read with pread.
//
// What is checked, for the free-page tree, the main tree and every named database: each page's
// header names its own page number (a zeroed page says 0), was written by a transaction no later
// than the meta page's (else LMDB would take it for a page of the running write transaction and
// change it in place), and has the type its depth requires (branch above, leaf at the bottom: every
// leaf at the tree's recorded depth); node offsets, keys and inline data lie inside the page;
// overflow pages are in range, are overflow pages and are long enough; keys ascend (memcmp) across
// each tree and every key lies between the separator keys of the branch nodes above it (else a
// lookup would be routed to the wrong leaf and miss it); the page and entry counts recorded for
// each tree match what was found. The total number of
// pages visited is bounded by the file's page count, so a damaged file cannot make this loop.
//
// Page layout (the LMDB of lmdb-js 3.5.6, 64-bit little-endian; see its mdb.c):
//   header (24 bytes): pgno u64 @0, txnid u64 @8, pad u16 @16, flags u16 @18,
//                      lower u16 @20, upper u16 @22 (overflow pages: page count u32 @20)
//   branch/leaf pages: u16 node offsets from byte 24, lower/2 of them; offsets, lower and upper
//                      are relative to byte 24. Node: [u16 lo][u16 hi][u16 flags][u16 ksize][key][data]
//     leaf node:   data size lo | hi << 16; data inline, or with F_BIGDATA a 24-byte reference
//                  {pgno u64, txnid u64, pages u64} to overflow pages holding the data after their header
//     branch node: child page lo | hi << 16 | flags << 32; no data
//   a named database is a leaf of the main tree with F_SUBDATA whose data is an MDB_db (48 bytes):
//     [u32 pad][u16 flags][u16 depth][u64 branch pages][u64 leaf pages][u64 overflow pages]
//     [u64 entries][u64 root page (all ones: empty)]
//   meta pages 0 and 1: MDB_meta at byte 24: magic, version, address, map size, the free-page
//     MDB_db at 0x30, the main MDB_db at 0x60, last page u64 at 0x90, txnid u64 at 0x98.

import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { LmdbFileError } from "./lmdb-file.ts";

const HEADER = 24;
const P_BRANCH = 0x01;
const P_LEAF = 0x02;
const P_OVERFLOW = 0x04;
const P_META = 0x08;
const P_LEAF2 = 0x20;
const P_SUBP = 0x40;
const PAGE_KIND = P_BRANCH | P_LEAF | P_OVERFLOW | P_META | P_LEAF2 | P_SUBP;
const F_BIGDATA = 0x01;
const F_SUBDATA = 0x02;
const NODE_HEADER = 8;
const OVERFLOW_REF = 24;
const DB_RECORD = 48;
const MDB_REVERSEKEY = 0x02;
const MDB_DUPSORT = 0x04;
const MDB_INTEGERKEY = 0x08;
const MAGIC = 0xbeefc0de;
const DATA_VERSION = 2;
const MAX_DEPTH = 32;
const TWO32 = 0x1_0000_0000;

/** A tree as recorded in a meta page or in the main tree (MDB_db). */
export interface LmdbDb {
  flags: number;
  depth: number;
  branchPages: number;
  leafPages: number;
  overflowPages: number;
  entries: number;
  /** The root page, or -1 for an empty tree. */
  root: number;
}

/** Called for every record of a tree in key order; key and value are valid only during the call. */
export type RecordVisitor = (key: Uint8Array, value: Uint8Array) => void;

function u64(b: Buffer, off: number): number {
  return b.readUInt32LE(off) + b.readUInt32LE(off + 4) * TWO32;
}

function parseDb(b: Buffer, off: number): LmdbDb {
  const invalid = b.readUInt32LE(off + 40) === 0xffffffff && b.readUInt32LE(off + 44) === 0xffffffff;
  return {
    flags: b.readUInt16LE(off + 4),
    depth: b.readUInt16LE(off + 6),
    branchPages: u64(b, off + 8),
    leafPages: u64(b, off + 16),
    overflowPages: u64(b, off + 24),
    entries: u64(b, off + 32),
    root: invalid ? -1 : u64(b, off + 40),
  };
}

interface Meta {
  txnId: number;
  lastPage: number;
  free: LmdbDb;
  main: LmdbDb;
}

/** The MDB_meta at byte `at` of `b`, or null if there is none. */
function parseMeta(b: Buffer, at: number): Meta | null {
  if (b.byteLength < at + 0xa0) return null;
  if (b.readUInt32LE(at + 0x18) !== MAGIC || (b.readUInt32LE(at + 0x1c) & 0xffff) !== DATA_VERSION) return null;
  return { txnId: u64(b, at + 0x98), lastPage: u64(b, at + 0x90), free: parseDb(b, at + 0x30), main: parseDb(b, at + 0x60) };
}

interface Counts {
  branch: number;
  leaf: number;
  overflow: number;
  entries: number;
}

export class LmdbFileWalker {
  private readonly fd: number;
  readonly pageSize: number;
  readonly lastPage: number;
  readonly txnId: number;
  private readonly meta: Meta;
  /** One page buffer per tree level: a page stays readable while its children are walked. */
  private readonly levels: Buffer[] = [];
  private pagesRead = 0;
  private prevKey: Buffer | null = null;

  /**
   * Opens `path` read-only and picks the meta page LMDB uses: the one whose transaction id is
   * `txnId` (as LMDB reports it after opening, which accounts for its own choice of snapshot),
   * or without it the newer of the two. Throws LmdbFileError.
   */
  static open(path: string, txnId?: number): LmdbFileWalker {
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (e) {
      throw new LmdbFileError(path, `cannot read it (${(e as Error).message})`);
    }
    try {
      return new LmdbFileWalker(path, fd, txnId);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  private constructor(
    readonly path: string,
    fd: number,
    txnId: number | undefined,
  ) {
    this.fd = fd;
    const head = Buffer.alloc(0x100);
    readSync(fd, head, 0, head.byteLength, 0);
    const ps = head.readUInt32LE(0x30);
    if (ps < 512 || ps > 65536 || (ps & (ps - 1)) !== 0) this.fail(`implausible page size ${ps}`);
    this.pageSize = ps;
    const metas: Meta[] = [];
    // Pages 0 and 1 hold the two metas; with overlappingSync LMDB keeps the last flushed one in the
    // second half of page 0.
    for (const off of [0, ps, ps / 2]) {
      const b = Buffer.alloc(0x100);
      if (readSync(fd, b, 0, b.byteLength, off) !== b.byteLength) continue;
      if (off !== ps / 2 && (b.readUInt16LE(0x12) & P_META) === 0) continue;
      const m = parseMeta(b, 0);
      if (m) metas.push(m);
    }
    let meta: Meta | undefined;
    if (txnId === undefined) meta = metas.slice(0, 2).sort((a, b) => b.txnId - a.txnId)[0];
    else meta = metas.find((m) => m.txnId === txnId);
    if (!meta) this.fail(txnId === undefined ? "no valid meta page" : `no meta page for transaction ${txnId}, the one LMDB opened`);
    const pages = Math.floor(fstatSync(fd).size / ps);
    if (meta.lastPage + 1 > pages) this.fail(`the file has ${pages} pages but its data runs to page ${meta.lastPage} (truncated)`);
    this.meta = meta;
    this.lastPage = meta.lastPage;
    this.txnId = meta.txnId;
  }

  close(): void {
    closeSync(this.fd);
  }

  private fail(detail: string): never {
    throw new LmdbFileError(this.path, `damaged: ${detail}`);
  }

  /**
   * The named databases (by name) after checking the main tree. Records of the main tree that are
   * not databases are counted in `plain` (the stores keep none).
   */
  databases(): { dbs: Map<string, LmdbDb>; plain: number } {
    const dbs = new Map<string, LmdbDb>();
    let plain = 0;
    const dec = new TextDecoder("latin1");
    this.walkTree("the main database", this.meta.main, true, (key, value, flags) => {
      if ((flags & F_SUBDATA) === 0) {
        plain++;
        return;
      }
      const name = dec.decode(key).replace(/\x00$/, "");
      if (value.byteLength !== DB_RECORD) this.fail(`the main database: the record of database ${JSON.stringify(name)} is ${value.byteLength} bytes, not ${DB_RECORD}`);
      dbs.set(name, parseDb(Buffer.from(value.buffer, value.byteOffset, value.byteLength), 0));
    });
    return { dbs, plain };
  }

  /** Checks the tree of database `name` and calls `visit` for each of its records, in key order. */
  walk(name: string, db: LmdbDb, visit: RecordVisitor): void {
    if ((db.flags & MDB_DUPSORT) !== 0) this.fail(`database ${JSON.stringify(name)} has sorted duplicates, which this check does not read`);
    this.walkTree(`database ${JSON.stringify(name)}`, db, false, (key, value) => visit(key, value));
  }

  /**
   * Checks the free-page tree: LMDB walks it on every write transaction. Only its structure: the
   * records are page lists in a format private to lmdb-js's LMDB (ranges and reserved slots).
   */
  checkFreeList(): void {
    this.walkTree("the free-page list", this.meta.free, false, (key) => {
      if (key.byteLength !== 8) this.fail(`the free-page list: a key of ${key.byteLength} bytes, not 8`);
    });
  }

  private walkTree(what: string, db: LmdbDb, isMain: boolean, visit: (key: Uint8Array, value: Uint8Array, flags: number) => void): void {
    if (db.root === -1) {
      if (db.depth !== 0 || db.entries !== 0) this.fail(`${what}: no root page but depth ${db.depth} and ${db.entries} entries`);
      return;
    }
    if (db.depth < 1 || db.depth > MAX_DEPTH) this.fail(`${what}: implausible tree depth ${db.depth}`);
    const counts: Counts = { branch: 0, leaf: 0, overflow: 0, entries: 0 };
    // memcmp order, except for integer keys (native-endian numbers: the free-page list) and reversed ones.
    const ordered = (db.flags & (MDB_INTEGERKEY | MDB_REVERSEKEY)) === 0;
    this.prevKey = null;
    this.walkPage(what, db.root, 1, db.depth, isMain, ordered, counts, visit, null, null);
    if (counts.entries !== db.entries) this.fail(`${what}: ${counts.entries} records found, ${db.entries} recorded`);
    if (counts.branch !== db.branchPages || counts.leaf !== db.leafPages || counts.overflow !== db.overflowPages) {
      this.fail(
        `${what}: found ${counts.branch} branch, ${counts.leaf} leaf and ${counts.overflow} overflow pages; ` +
          `recorded ${db.branchPages}, ${db.leafPages} and ${db.overflowPages}`,
      );
    }
  }

  /** Reads page `pgno` into `buf`, checking that it exists, names itself and is not from the future. */
  private readPage(what: string, pgno: number, buf: Buffer, from: string): void {
    if (!Number.isSafeInteger(pgno) || pgno < 2 || pgno > this.lastPage) this.fail(`${what}: ${from} refers to page ${pgno}, outside 2..${this.lastPage}`);
    if (++this.pagesRead > this.lastPage + 1) this.fail(`${what}: pages are referenced more than once`);
    const n = readSync(this.fd, buf, 0, buf.byteLength, pgno * this.pageSize);
    if (n !== buf.byteLength) this.fail(`${what}: page ${pgno} lies beyond the end of the file`);
    this.checkHeader(what, pgno, buf);
  }

  private checkHeader(what: string, pgno: number, buf: Buffer): void {
    const self = u64(buf, 0);
    if (self !== pgno) this.fail(`${what}: page ${pgno} is not what its header says (page ${self}${self === 0 && buf.readUInt16LE(18) === 0 ? ", zeroed?" : ""})`);
    const txn = u64(buf, 8);
    if (txn > this.txnId) this.fail(`${what}: page ${pgno} claims transaction ${txn}, later than the file's last (${this.txnId})`);
  }

  private walkPage(
    what: string,
    pgno: number,
    level: number,
    depth: number,
    isMain: boolean,
    ordered: boolean,
    counts: Counts,
    visit: (key: Uint8Array, value: Uint8Array, flags: number) => void,
    /** Every key of this subtree must be >= lo and < hi (the separators above it; null: unbounded). */
    lo: Uint8Array | null,
    hi: Uint8Array | null,
  ): void {
    const ps = this.pageSize;
    const buf = (this.levels[level] ??= Buffer.allocUnsafe(ps));
    this.readPage(what, pgno, buf, level === 1 ? "the root" : `a level-${level - 1} branch`);
    const leaf = level === depth;
    const kind = buf.readUInt16LE(18) & PAGE_KIND;
    if (kind !== (leaf ? P_LEAF : P_BRANCH)) this.fail(`${what}: page ${pgno} has type ${kind.toString(16)}, expected a ${leaf ? "leaf" : "branch"} page at level ${level} of ${depth}`);
    if (leaf) counts.leaf++;
    else counts.branch++;
    const lower = buf.readUInt16LE(20);
    const upper = buf.readUInt16LE(22);
    if (lower % 2 !== 0 || lower > upper || upper > ps - HEADER || lower === 0) this.fail(`${what}: page ${pgno} has a bad free-space range ${lower}..${upper}`);
    const n = lower / 2;
    const inBounds = (key: Uint8Array): boolean => (lo === null || Buffer.compare(key, lo) >= 0) && (hi === null || Buffer.compare(key, hi) < 0);
    // Node i as [offset of its header, key end]; keys are views into `buf`, which stays put while
    // the children are walked (they use the next level's buffer).
    const node = (i: number): { at: number; keyEnd: number } => {
      const at = buf.readUInt16LE(HEADER + 2 * i) + HEADER;
      if (at < HEADER + upper || at + NODE_HEADER > ps) this.fail(`${what}: page ${pgno}: node ${i} at offset ${at} lies outside the node area`);
      const keyEnd = at + NODE_HEADER + buf.readUInt16LE(at + 6);
      if (keyEnd > ps) this.fail(`${what}: page ${pgno}: the key of node ${i} runs past the page`);
      return { at, keyEnd };
    };
    const keyOf = (i: number): Uint8Array => {
      const { at, keyEnd } = node(i);
      return buf.subarray(at + NODE_HEADER, keyEnd);
    };
    if (!leaf) {
      // Node 0's key is ignored by LMDB (it stands for "everything below node 1's key").
      for (let i = 1; ordered && i < n; i++) {
        const key = keyOf(i);
        if (!inBounds(key) || (i > 1 && Buffer.compare(keyOf(i - 1), key) >= 0)) this.fail(`${what}: page ${pgno}: separator key ${i} is out of order`);
      }
      for (let i = 0; i < n; i++) {
        const { at } = node(i);
        const child = buf.readUInt16LE(at) + buf.readUInt16LE(at + 2) * 0x10000 + buf.readUInt16LE(at + 4) * TWO32;
        const childLo = i === 0 || !ordered ? lo : keyOf(i);
        const childHi = i === n - 1 || !ordered ? hi : keyOf(i + 1);
        this.walkPage(what, child, level + 1, depth, isMain, ordered, counts, visit, childLo, childHi);
      }
      return;
    }
    for (let i = 0; i < n; i++) {
      const { at, keyEnd } = node(i);
      const flags = buf.readUInt16LE(at + 4);
      const key = buf.subarray(at + NODE_HEADER, keyEnd);
      if (ordered) {
        if (this.prevKey !== null && Buffer.compare(this.prevKey, key) >= 0) this.fail(`${what}: page ${pgno}: keys out of order at node ${i}`);
        if (!inBounds(key)) this.fail(`${what}: page ${pgno}: key ${i} lies outside the range its branch nodes route to this page`);
        this.prevKey = Buffer.from(key);
      }
      const size = buf.readUInt16LE(at) + buf.readUInt16LE(at + 2) * 0x10000;
      const allowed = isMain ? F_SUBDATA : F_BIGDATA;
      if ((flags & ~allowed) !== 0) this.fail(`${what}: page ${pgno}: node ${i} has unexpected flags ${flags.toString(16)}`);
      let value: Uint8Array;
      if ((flags & F_BIGDATA) !== 0) {
        if (keyEnd + OVERFLOW_REF > ps) this.fail(`${what}: page ${pgno}: the overflow reference of node ${i} runs past the page`);
        value = this.readOverflow(what, u64(buf, keyEnd), u64(buf, keyEnd + 16), size, pgno, counts);
      } else {
        if (keyEnd + size > ps) this.fail(`${what}: page ${pgno}: the data of node ${i} runs past the page`);
        value = buf.subarray(keyEnd, keyEnd + size);
      }
      counts.entries++;
      visit(key, value, flags);
    }
  }

  private readOverflow(what: string, pgno: number, pages: number, size: number, from: number, counts: Counts): Buffer {
    const ps = this.pageSize;
    const needed = Math.floor((HEADER - 1 + size) / ps) + 1;
    if (!Number.isSafeInteger(pages) || pages < needed || pgno + pages - 1 > this.lastPage) {
      this.fail(`${what}: page ${from}: a ${size}-byte value on ${pages} overflow pages from page ${pgno} (needs ${needed}, file ends at page ${this.lastPage})`);
    }
    const head = Buffer.allocUnsafe(HEADER);
    if (pgno < 2 || readSync(this.fd, head, 0, HEADER, pgno * ps) !== HEADER) this.fail(`${what}: page ${from}: overflow page ${pgno} is unreadable`);
    this.pagesRead += pages;
    if (this.pagesRead > this.lastPage + 1) this.fail(`${what}: pages are referenced more than once`);
    this.checkHeader(what, pgno, head);
    if ((head.readUInt16LE(18) & PAGE_KIND) !== P_OVERFLOW || head.readUInt32LE(20) !== pages) {
      this.fail(`${what}: page ${pgno} should start ${pages} overflow pages but its header says type ${head.readUInt16LE(18).toString(16)}, ${head.readUInt32LE(20)} pages`);
    }
    counts.overflow += pages;
    const value = Buffer.allocUnsafe(size);
    if (readSync(this.fd, value, 0, size, pgno * ps + HEADER) !== size) this.fail(`${what}: overflow pages from ${pgno} are cut short`);
    return value;
  }
}

// LMDB trusts its files: opening a file that is not an LMDB environment, or one cut short,
// can crash the process. Before opening, we check the two meta pages ourselves and refuse
// with an error that names the file.
//
// Meta page layout (lmdb-js's LMDB): a 24-byte page header (the P_META flag in the u16 at
// 0x12), then MDB_meta: magic u32 0xBEEFC0DE at 0x18, data version u32 (2) at 0x1c, address
// u64, mapsize u64, two MDB_db records of 48 bytes
// (the free-list one stores the page size in its first u32, at 0x30), last page u64 at 0x90,
// transaction id u64 at 0x98. The meta with the larger transaction id is the current one.

import { closeSync, existsSync, fstatSync, openSync, readSync } from "node:fs";

const MAGIC = 0xbeefc0de;
const DATA_VERSION = 2;
const P_META = 0x08;

export class LmdbFileError extends Error {
  constructor(readonly path: string, detail: string) {
    // No "remove it to resync": a state machine file removed alone cannot be rebuilt from a log
    // that has been compacted (the node stops: entries not contiguous), and a log removed alone
    // makes the node look new. Measured on this version: a member whose directories were
    // emptied rejoins with --join-addr but is not sent the data.
    super(`${path}: ${detail}; refusing to open it (restore the file from a good copy)`);
    this.name = "LmdbFileError";
  }
}

interface Meta {
  pageSize: number;
  lastPage: number;
  txnId: number;
}

function readMeta(buf: Buffer, at: number): Meta | null {
  if (buf.byteLength < at + 0xa0) return null;
  if ((buf.readUInt16LE(at + 0x12) & P_META) === 0) return null;
  if (buf.readUInt32LE(at + 0x18) !== MAGIC) return null;
  if ((buf.readUInt32LE(at + 0x1c) & 0xffff) !== DATA_VERSION) return null;
  return {
    pageSize: buf.readUInt32LE(at + 0x30),
    lastPage: Number(buf.readBigUInt64LE(at + 0x90)),
    txnId: Number(buf.readBigUInt64LE(at + 0x98)),
  };
}

/** Throws LmdbFileError unless `path` is absent or a plausible, complete LMDB data file. */
export function checkLmdbFile(path: string): void {
  if (!existsSync(path)) return;
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    if (size === 0) throw new LmdbFileError(path, "the file is empty (truncated)");
    const head = Buffer.alloc(Math.min(size, 0x100));
    readSync(fd, head, 0, head.byteLength, 0);
    const m0 = readMeta(head, 0);
    if (!m0) throw new LmdbFileError(path, "not an LMDB data file (bad magic in the first meta page)");
    const ps = m0.pageSize;
    if (ps < 512 || ps > 65536 || (ps & (ps - 1)) !== 0) throw new LmdbFileError(path, `implausible page size ${ps}`);
    if (size < 2 * ps) throw new LmdbFileError(path, `only ${size} bytes: shorter than its two meta pages`);
    const second = Buffer.alloc(0x100);
    readSync(fd, second, 0, second.byteLength, ps);
    const m1 = readMeta(second, 0);
    if (!m1) throw new LmdbFileError(path, "the second meta page is damaged");
    const current = m1.txnId > m0.txnId ? m1 : m0;
    const needed = (current.lastPage + 1) * ps;
    if (needed > size) throw new LmdbFileError(path, `the file is ${size} bytes but its data runs to ${needed} (truncated)`);
  } finally {
    closeSync(fd);
  }
}

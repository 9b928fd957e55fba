// Verification of a whole FSM file when the store opens it: every page LMDB could reach
// (lmdb-walk.ts: so that no cursor ever meets a damaged page, which would abort the process) and
// every record's checksum and structure (fsm-format.ts). Any damage throws KvStoreError naming the
// file, so the node refuses to start rather than serve wrong data.
//
// Cost: one pass over the file with pread; measured by the caller and logged at startup.

import { LmdbFileError } from "./lmdb-file.ts";
import { type LmdbDb, LmdbFileWalker } from "./lmdb-walk.ts";
import {
  KvCorruptionError,
  KvStoreError,
  META_APPLIED,
  META_FORMAT,
  checkExpiry,
  checkFormatMarker,
  checkRecord,
  describeRecord,
  parseApplied,
} from "./fsm-format.ts";

export const DB_NAMES = ["latest", "history", "expiry", "meta"] as const;

export interface Verification {
  /** Records checked in all databases. */
  records: number;
  /** Pages of the file. */
  pages: number;
  ms: number;
}

/**
 * Checks `file`, which LMDB has just opened at transaction `txnId` and nothing has iterated yet.
 * Returns null for a file without databases (created but never initialised: treated as new).
 */
export function verifyFsmFile(file: string, txnId: number): Verification | null {
  const t0 = performance.now();
  let walker: LmdbFileWalker;
  try {
    walker = LmdbFileWalker.open(file, txnId);
  } catch (e) {
    throw asStoreError(file, e);
  }
  try {
    walker.checkFreeList();
    const { dbs, plain } = walker.databases();
    if (dbs.size === 0 && plain === 0) return null;
    const names = [...dbs.keys()];
    if (plain > 0 || names.length !== DB_NAMES.length || !DB_NAMES.every((n) => dbs.has(n))) {
      throw new KvStoreError(
        `${file} is an LMDB file but not an rbkv FSM store (databases: ${names.map((n) => JSON.stringify(n)).join(", ")}${plain > 0 ? `, and ${plain} other records` : ""}); refusing to use it`,
      );
    }
    const db = (name: (typeof DB_NAMES)[number]): LmdbDb => dbs.get(name)!;
    // The format first: a file of an older format fails every checksum, and should say so instead.
    let format: Buffer | undefined;
    let appliedValue: Buffer | undefined;
    let records = 0;
    walker.walk("meta", db("meta"), (k, v) => {
      records++;
      const key = Buffer.from(k);
      if (key.equals(META_FORMAT)) format = Buffer.from(v);
      else if (key.equals(META_APPLIED)) appliedValue = Buffer.from(v);
      else throw new KvCorruptionError(file, describeRecord("meta", k), "unknown record");
    });
    checkFormatMarker(file, format);
    const applied = parseApplied(file, appliedValue);
    for (const name of ["latest", "history"] as const) {
      walker.walk(name, db(name), (k, v) => {
        records++;
        const problem = checkRecord(name, k, v, applied);
        if (problem) throw new KvCorruptionError(file, describeRecord(name, k), problem);
      });
    }
    walker.walk("expiry", db("expiry"), (k, v) => {
      records++;
      const problem = checkExpiry(k, v, applied);
      if (problem) throw new KvCorruptionError(file, describeRecord("expiry", k), problem);
    });
    return { records, pages: walker.lastPage + 1, ms: performance.now() - t0 };
  } catch (e) {
    throw asStoreError(file, e);
  } finally {
    walker.close();
  }
}

function asStoreError(file: string, e: unknown): KvStoreError {
  if (e instanceof KvStoreError) return e;
  if (e instanceof LmdbFileError) return new KvStoreError(e.message, { cause: e });
  return new KvStoreError(`${file}: verification failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
}

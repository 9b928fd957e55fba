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
  META_CLOCK,
  META_COMPACTED,
  META_FORMAT,
  checkChange,
  checkExpiry,
  checkFormatMarker,
  checkProposal,
  checkRecord,
  checkSession,
  checkSessionExpiry,
  checkSessionResult,
  describeRecord,
  parseApplied,
  parseMeta64,
} from "./fsm-format.ts";

export const DB_NAMES = ["latest", "history", "expiry", "meta", "changes", "sessions", "session-results", "session-expiry", "proposals"] as const;
export type DbName = (typeof DB_NAMES)[number];

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
    const notOurs = () =>
      new KvStoreError(
        `${file} is an LMDB file but not an rbkv FSM store (databases: ${names.map((n) => JSON.stringify(n)).join(", ")}${plain > 0 ? `, and ${plain} other records` : ""}); refusing to use it`,
      );
    const ours = new Set<string>(DB_NAMES);
    if (plain > 0 || !dbs.has("meta") || names.some((n) => !ours.has(n))) throw notOurs();
    // The format first: a file of an older format fails every checksum (and may have fewer
    // databases), and should say so instead.
    let format: Buffer | undefined;
    let appliedValue: Buffer | undefined;
    let compactedValue: Buffer | undefined;
    let records = 0;
    walker.walk("meta", dbs.get("meta")!, (k, v) => {
      records++;
      const key = Buffer.from(k);
      if (key.equals(META_FORMAT)) format = Buffer.from(v);
      else if (key.equals(META_APPLIED)) appliedValue = Buffer.from(v);
      else if (key.equals(META_COMPACTED)) compactedValue = Buffer.from(v);
      else if (key.equals(META_CLOCK)) parseMeta64(file, META_CLOCK, v);
      else throw new KvCorruptionError(file, describeRecord("meta", k), "unknown record");
    });
    checkFormatMarker(file, format);
    if (names.length !== DB_NAMES.length) throw notOurs();
    const db = (name: DbName): LmdbDb => dbs.get(name)!;
    const applied = parseApplied(file, appliedValue);
    const compacted = parseMeta64(file, META_COMPACTED, compactedValue);
    if (compacted > applied) throw new KvCorruptionError(file, describeRecord("meta", META_COMPACTED), `compacted version ${compacted} above the applied index ${applied}`);
    const check = (name: DbName, problemOf: (k: Uint8Array, v: Uint8Array) => string | null) =>
      walker.walk(name, db(name), (k, v) => {
        records++;
        const problem = problemOf(k, v);
        if (problem) throw new KvCorruptionError(file, describeRecord(name, k), problem);
      });
    check("latest", (k, v) => checkRecord("latest", k, v, applied));
    check("history", (k, v) => checkRecord("history", k, v, applied));
    check("expiry", (k, v) => checkExpiry(k, v, applied));
    check("changes", (k, v) => checkChange(k, v, applied, compacted));
    check("sessions", (k, v) => checkSession(k, v, applied));
    check("session-results", (k, v) => checkSessionResult(k, v, applied));
    check("session-expiry", (k, v) => checkSessionExpiry(k, v, applied));
    check("proposals", (k, v) => checkProposal(k, v, applied));
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

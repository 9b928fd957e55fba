// The LMDB environment of the state machine: opening it safely (fsm.ts's header explains why the
// file is checked before LMDB sees it), its named databases, and small LMDB helpers shared by the
// store's modules (fsm.ts, fsm-apply.ts, fsm-range.ts, fsm-snapshot.ts).

import { accessSync, closeSync, constants as fsConstants, fsyncSync, openSync, statSync } from "node:fs";
import { type Database, type DatabaseOptions, type RootDatabase, type TransactionFlags, open as lmdbOpen } from "lmdb";
import { KvStoreError, META_APPLIED, META_FORMAT, appliedRecord, checkFormatMarker, formatRecord, parseApplied } from "./fsm-format.ts";
import { DB_NAMES, type DbName, type Verification, verifyFsmFile } from "./fsm-verify.ts";

export type { DbName } from "./fsm-verify.ts";
import { checkLmdbFile } from "./lmdb-file.ts";

// ABORTABLE | SYNCHRONOUS_COMMIT | NO_SYNC_FLUSH — what lmdb-js itself uses for its internal
// synchronous commits; with overlappingSync the flush still happens inline (see fsm.ts).
export const TXN_FLAGS = 0x10003 as TransactionFlags;

export type Db = Database<Buffer, Uint8Array>;
export type Env = { root: RootDatabase<Buffer, Uint8Array> } & Record<DbName, Db>;

/** A read transaction of lmdb-js (useReadTransaction), passed to reads as `{ transaction }`. */
export interface LmdbTxn {
  done(): void;
}
interface DbStats {
  pageSize: number;
  treeBranchPageCount: number;
  treeLeafPageCount: number;
  overflowPages: number;
  entryCount: number;
}

export function errMsg(e: unknown): string {
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

export function fsyncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Opens (creating if empty) an FSM environment at `file`. Throws KvStoreError if the file is not
 * ours or, with `verify`, if any page or record of an existing file is damaged (see fsm-verify.ts;
 * then `verified` says what was checked). `init` is false for a restore target (the marker is
 * written at the end of the restore).
 */
export function openEnv(file: string, noSync: boolean, init: boolean, verify: boolean): { env: Env; verified: Verification | null } {
  const size = validateLmdbFile(file);
  let root: RootDatabase<Buffer, Uint8Array>;
  try {
    root = lmdbOpen<Buffer, Uint8Array>({
      path: file,
      noSubdir: true,
      maxDbs: 16,
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
      const notOurs = () =>
        new KvStoreError(
          `${file} is an LMDB file but not an rbkv FSM store (databases: ${names.map((n) => JSON.stringify(n.replace(/\x00$/, ""))).join(", ")}); refusing to use it`,
        );
      if (foreign.length > 0 || !names.includes("meta\x00")) throw notOurs();
      // An older format has fewer databases: its marker says so, more usefully than "not ours".
      if (names.length !== DB_NAMES.length) {
        const meta = root.openDB<Buffer, Uint8Array>("meta", { encoding: "binary", keyEncoding: "binary", create: false } as DatabaseOptions);
        checkFormatMarker(file, meta?.getBinary(META_FORMAT));
        throw notOurs();
      }
    }
    const dbs = {} as Record<DbName, Db>;
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

export function dbStats(db: Db): DbStats {
  return db.getStats() as DbStats;
}

export function closeEnv(env: Env): Promise<void> {
  return env.root.close();
}


/** Waits until everything committed in `env` is on disk. */
export function syncEnv(env: Env): Promise<void> {
  return new Promise<void>((res, rej) => (env.root as unknown as { sync(cb: (e?: unknown) => void): void }).sync((e) => (e ? rej(e) : res())));
}

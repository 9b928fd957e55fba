// One process per data directory. Two rbkv processes on one --log-dir would be two voters with
// one identity writing one log (etcd closes the same hole with a lock on its data files).
//
// Why flock(2) through bun:ffi: the kernel's advisory lock belongs to the open file, so the
// kernel drops it when the holder dies in any way (SIGKILL, a crash, the OOM killer): a stale
// lock can never block a restart, and there is no race between "is the holder alive?" and
// "take over its lock" as with a pid file (whose pid may even have been reused by then). Node's
// fs has no flock and no npm dependency is needed for one libc call; bun:ffi loads libc inside
// the `bun build --compile` executable too (the server runs only on Bun). LOCK_EX|LOCK_NB: a
// second process is refused at once, never made to wait. The holder writes its pid into the
// lock file, for the refusal's message only (the lock itself is the kernel's).
//
// The lock file is `<dir>/rbkv.lock`; it stays in the directory after the holder exits (a lock
// file that is deleted can be locked by two processes through two different inodes).

import { dlopen, FFIType, read } from "bun:ffi";
import { closeSync, ftruncateSync, openSync, readFileSync, realpathSync, writeSync } from "node:fs";
import { join } from "node:path";

export const LOCK_FILE = "rbkv.lock";

/** Another process holds the directory's lock. */
export class DataDirLockedError extends Error {
  constructor(
    readonly dir: string,
    readonly lockFile: string,
    readonly holderPid: number | null,
    what: string,
  ) {
    super(
      `${what} ${dir} is in use by another process (${holderPid !== null ? `pid ${holderPid}` : "pid unknown"}, holding ${lockFile}): ` +
        `two processes must not share a data directory; stop that one first`,
    );
    this.name = "DataDirLockedError";
  }
}

/** The lock could not be tried at all (no libc, the lock file cannot be opened). */
export class DataDirLockError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DataDirLockError";
  }
}

export interface DataDirLock {
  /** The directory as given. */
  readonly dir: string;
  readonly file: string;
  /** Gives the lock up (process exit does the same). */
  release(): void;
}

// <sys/file.h>: the same values on Linux and the BSDs (macOS).
const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;
/** EWOULDBLOCK (= EAGAIN): 11 on Linux, 35 on macOS. */
const EWOULDBLOCK = process.platform === "darwin" ? 35 : 11;
const EINTR = 4;

interface Libc {
  flock(fd: number, op: number): number;
  errno(): number;
}

let libc: Libc | null = null;

function loadLibc(): Libc {
  if (libc) return libc;
  const names =
    process.platform === "darwin"
      ? ["libc.dylib", "/usr/lib/libSystem.B.dylib"]
      : process.platform === "linux"
        ? ["libc.so.6", `libc.musl-${process.arch === "arm64" ? "aarch64" : "x86_64"}.so.1`, "libc.so"]
        : [];
  // Where the C library keeps errno for this thread: glibc and musl export __errno_location,
  // macOS __error.
  const errnoSymbol = process.platform === "darwin" ? "__error" : "__errno_location";
  const failures: string[] = [];
  for (const name of names) {
    try {
      const lib = dlopen(name, {
        flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
        [errnoSymbol]: { args: [], returns: FFIType.ptr },
      });
      const errnoAt = lib.symbols[errnoSymbol]!;
      const flock = lib.symbols.flock!;
      libc = {
        flock: (fd, op) => flock(fd, op) as number,
        errno: () => {
          const p = errnoAt();
          return p === null ? 0 : read.i32(p, 0);
        },
      };
      return libc;
    } catch (err) {
      failures.push(`${name}: ${(err as Error).message}`);
    }
  }
  throw new DataDirLockError(
    names.length === 0
      ? `cannot lock data directories on ${process.platform}: rbkv locks them with flock(2), found only on Linux and macOS`
      : `cannot load the C library to lock data directories with flock(2) (${failures.join("; ")})`,
  );
}

function holderPid(file: string): number | null {
  try {
    const text = readFileSync(file, "utf8").trim();
    return /^\d+$/.test(text) ? Number(text) : null;
  } catch {
    return null;
  }
}

/**
 * Takes the exclusive lock of `dir` (which must exist) or throws DataDirLockedError naming the
 * holder's pid, without changing anything in the directory. `what` names the directory in
 * messages (a flag such as "--log-dir").
 */
export function lockDataDir(dir: string, what = "data directory"): DataDirLock {
  const c = loadLibc();
  const file = join(dir, LOCK_FILE);
  let fd: number;
  try {
    // "a+": created if missing, never truncated by opening (a refused process must not wipe
    // the holder's pid). Node opens files close-on-exec, so no child inherits the lock.
    fd = openSync(file, "a+", 0o644);
  } catch (err) {
    throw new DataDirLockError(`${what} ${dir}: cannot open the lock file ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  for (;;) {
    if (c.flock(fd, LOCK_EX | LOCK_NB) === 0) break;
    const errno = c.errno();
    if (errno === EINTR) continue;
    closeSync(fd);
    if (errno === EWOULDBLOCK) throw new DataDirLockedError(dir, file, holderPid(file), what);
    throw new DataDirLockError(`${what} ${dir}: flock(${file}) failed with errno ${errno}`);
  }
  try {
    ftruncateSync(fd, 0);
    writeSync(fd, `${process.pid}\n`);
  } catch (err) {
    c.flock(fd, LOCK_UN);
    closeSync(fd);
    throw new DataDirLockError(`${what} ${dir}: cannot write the lock file ${file} (${(err as Error).message})`);
  }
  let held = true;
  return {
    dir,
    file,
    release: () => {
      if (!held) return;
      held = false;
      c.flock(fd, LOCK_UN);
      closeSync(fd);
    },
  };
}

/**
 * Locks every directory of `dirs` once (the same directory given twice, e.g. --log-dir and
 * --kv-dir both ./rbkv-data, is one lock: a second flock from this process would refuse us).
 * On a refusal the locks already taken are released.
 */
export function lockDataDirs(dirs: { dir: string; what: string }[]): DataDirLock[] {
  const taken: DataDirLock[] = [];
  const seen = new Set<string>();
  try {
    for (const { dir, what } of dirs) {
      const real = realpathSync(dir);
      if (seen.has(real)) continue;
      seen.add(real);
      taken.push(lockDataDir(dir, what));
    }
  } catch (err) {
    for (const l of taken) l.release();
    throw err;
  }
  return taken;
}

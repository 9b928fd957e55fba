import { afterAll, describe, expect, test } from "bun:test";
import { spawn } from "bun";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { DataDirLockedError, LOCK_FILE, lockDataDir, lockDataDirs } from "../../src/storage/dir-lock.ts";

const root = mkdtempSync(join(tmpdir(), "rbkv-dirlock-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function fresh(name: string): string {
  const d = join(root, name);
  mkdirSync(d, { recursive: true });
  return d;
}

/** A separate process that takes the lock of `dir`, says "locked", and waits to be killed. */
async function holder(dir: string): Promise<ReturnType<typeof spawn>> {
  const module = resolve(import.meta.dir, "../../src/storage/dir-lock.ts");
  const p = spawn([process.execPath, "-e", `const m = await import(${JSON.stringify(module)}); m.lockDataDir(${JSON.stringify(dir)}); console.log("locked"); setInterval(() => {}, 1000);`], {
    stdout: "pipe",
    stderr: "inherit",
  });
  const reader = (p.stdout as ReadableStream<Uint8Array>).getReader();
  const { value } = await reader.read();
  expect(new TextDecoder().decode(value)).toContain("locked");
  return p;
}

describe("lockDataDir", () => {
  test("a second lock of a held directory is refused naming the directory and the holder's pid", async () => {
    const dir = fresh("held");
    const p = await holder(dir);
    try {
      const before = readFileSync(join(dir, LOCK_FILE), "utf8");
      expect(before).toBe(`${p.pid}\n`);
      let err: unknown = null;
      try {
        lockDataDir(dir, "--log-dir");
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(DataDirLockedError);
      expect((err as DataDirLockedError).holderPid).toBe(p.pid);
      expect((err as Error).message).toBe(
        `--log-dir ${dir} is in use by another process (pid ${p.pid}, holding ${join(dir, LOCK_FILE)}): two processes must not share a data directory; stop that one first`,
      );
      // The refused attempt changed nothing.
      expect(readFileSync(join(dir, LOCK_FILE), "utf8")).toBe(before);
    } finally {
      p.kill(9);
      await p.exited;
    }
  });

  test("a holder killed with SIGKILL leaves no stale lock", async () => {
    const dir = fresh("killed");
    const p = await holder(dir);
    p.kill(9);
    await p.exited;
    const lock = lockDataDir(dir);
    expect(readFileSync(join(dir, LOCK_FILE), "utf8")).toBe(`${process.pid}\n`);
    lock.release();
  });

  test("release gives the lock up; two locks of one directory in one process conflict", () => {
    const dir = fresh("release");
    const a = lockDataDir(dir);
    expect(() => lockDataDir(dir)).toThrow(DataDirLockedError);
    a.release();
    a.release();
    const b = lockDataDir(dir);
    b.release();
  });

  test("lockDataDirs takes one lock for a directory named twice, and none on a refusal", async () => {
    const shared = fresh("shared");
    const locks = lockDataDirs([
      { dir: shared, what: "--log-dir" },
      { dir: `${shared}/.`, what: "--kv-dir" },
    ]);
    expect(locks.length).toBe(1);
    for (const l of locks) l.release();

    const free = fresh("free");
    const taken = fresh("taken");
    const p = await holder(taken);
    try {
      expect(() =>
        lockDataDirs([
          { dir: free, what: "--log-dir" },
          { dir: taken, what: "--kv-dir" },
        ]),
      ).toThrow(`--kv-dir ${taken} is in use by another process (pid ${p.pid}`);
      // The lock of `free` taken first was given back.
      lockDataDir(free).release();
    } finally {
      p.kill(9);
      await p.exited;
    }
  });
});

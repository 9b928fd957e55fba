// The compiled binary's flag handling: help works; bad flags exit non-zero with one clear line.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TestCluster, freePort, requireBinary, runBinary } from "./harness.ts";

let dir: string;
beforeAll(() => {
  requireBinary();
  dir = mkdtempSync(join(tmpdir(), "rbkv-flags-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("./rbkv flags", () => {
  test("--help lists the seed's flags and exits 0", async () => {
    const r = await runBinary(["--help"]);
    expect(r.code).toBe(0);
    for (const f of ["--grpc-addr", "--raft-addr", "--join-addr", "--log-dir", "--kv-dir", "--batch-size", "--version-keep-num", "--snapshot-threshold", "--snapshot-interval", "--trailing-logs", "--unsafe-no-fsync"]) {
      expect(r.stdout).toContain(f);
    }
    expect(r.stdout).toMatch(/unsafe-no-fsync.*UNSAFE/);
    expect(r.stdout).toMatch(/--backup-go-num <n>.*seed compatibility.*no effect.*\(default: 4\)/);
    expect(r.stdout).toMatch(/--restore-go-num <n>.*seed compatibility.*no effect.*\(default: 4\)/);
  });

  test("the seed's --backup-go-num and --restore-go-num are accepted: the node starts and serves", async () => {
    const c = await TestCluster.create(1, ["--backup-go-num=8", "--restore-go-num", "2"]);
    try {
      await c.startSeedStyle();
      expect((await c.kv(0).put("seed-flags", "ok")).version).toBeGreaterThan(0);
    } finally {
      await c.destroy();
    }
  }, 30_000);

  async function badFlag(args: string[], message: RegExp): Promise<void> {
    const r = await runBinary([`--log-dir=${dir}/d`, `--kv-dir=${dir}/d`, `--grpc-addr=127.0.0.1:${await freePort()}`, `--raft-addr=127.0.0.1:${await freePort()}`, ...args]);
    expect(r.code).not.toBe(0);
    const lines = r.stderr.trim().split("\n");
    expect(lines.length).toBe(1);
    expect(lines[0]).toMatch(message);
  }

  test("an unknown flag", () => badFlag(["--bogus=1"], /^rbkv: .*unknown option.*--bogus/i));
  // cac reports the camelCased key (--backupGoNums); the message names the flag as typed.
  test("an unknown kebab-case flag is named as typed", () => badFlag(["--backup-go-nums=2"], /^rbkv: unknown option --backup-go-nums$/));
  test("an unknown flag given without a value is named as typed", () => badFlag(["--no-such-flag"], /^rbkv: unknown option --no-such-flag$/));
  test("--backup-go-num must be a positive integer", () => badFlag(["--backup-go-num=0"], /^rbkv: --backup-go-num must be between 1 and 1024, got 0$/));
  test("--restore-go-num must be an integer", () => badFlag(["--restore-go-num=many"], /^rbkv: --restore-go-num must be an integer/));
  test("--batch-size out of range", () => badFlag(["--batch-size=5"], /^rbkv: --batch-size must be 0 \(off\) or between 10 and 500/));
  test("--batch-size not a number", () => badFlag(["--batch-size=lots"], /^rbkv: --batch-size must be an integer/));
  test("a flag without its value", () => badFlag(["--batch-size"], /^rbkv: .*batch-size.*value is missing/i));
  test("a bad address", () => badFlag(["--join-addr=nowhere"], /^rbkv: --join-addr must be host:port/));
  test("a flag given twice", () => badFlag(["--batch-size=20", "--batch-size=30"], /^rbkv: --batch-size was given more than once/));
  test("a bad duration", () => badFlag(["--snapshot-interval=soon"], /^rbkv: --snapshot-interval must be a duration/));

  test("a data directory that cannot be created", async () => {
    writeFileSync(join(dir, "a-file"), "x");
    const r = await runBinary([`--log-dir=${dir}/a-file/sub`, `--kv-dir=${dir}/kv`, `--grpc-addr=127.0.0.1:${await freePort()}`, `--raft-addr=127.0.0.1:${await freePort()}`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/^rbkv: --log-dir .*a-file\/sub: cannot create the directory/);
  });

  test("a gRPC port already in use", async () => {
    const port = await freePort();
    const blocker: Server = createServer();
    await new Promise<void>((r) => blocker.listen(port, "127.0.0.1", () => r()));
    try {
      const r = await runBinary([`--log-dir=${dir}/p`, `--kv-dir=${dir}/p`, `--grpc-addr=127.0.0.1:${port}`, `--raft-addr=127.0.0.1:${await freePort()}`]);
      expect(r.code).not.toBe(0);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).toMatch(/^rbkv: cannot listen on --grpc-addr 127\.0\.0\.1:\d+: address already in use/);
    } finally {
      blocker.close();
    }
  });

  test("a raft port already in use", async () => {
    const port = await freePort();
    const blocker: Server = createServer();
    await new Promise<void>((r) => blocker.listen(port, "127.0.0.1", () => r()));
    try {
      const r = await runBinary([`--log-dir=${dir}/q`, `--kv-dir=${dir}/q`, `--grpc-addr=127.0.0.1:${await freePort()}`, `--raft-addr=127.0.0.1:${port}`]);
      expect(r.code).not.toBe(0);
      expect(r.stderr.trim().split("\n").filter((l) => l.startsWith("rbkv:"))).toHaveLength(1);
      expect(r.stderr).toMatch(/rbkv: cannot listen on --raft-addr 127\.0\.0\.1:\d+/);
    } finally {
      blocker.close();
    }
  });
});

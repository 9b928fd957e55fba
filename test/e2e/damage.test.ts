// Damaged files and garbage on the ports: the node refuses to start on a damaged data file
// (naming it) rather than serve wrong data, and a live node shrugs off garbage.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { closeSync, copyFileSync, openSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { TestCluster, grpcCode, runBinary } from "./harness.ts";

describe("damage", () => {
  let c: TestCluster;

  beforeAll(async () => {
    c = await TestCluster.create(1);
    c.nodes[0]!.start();
    await c.waitServing(0);
  }, 30_000);

  afterAll(async () => {
    if (c) await c.destroy();
  });

  test("garbage on the gRPC and Raft ports closes those connections; the node keeps serving", async () => {
    await c.kv(0).put("before", "1");
    for (const addr of [c.nodes[0]!.spec.grpcAddr, c.nodes[0]!.spec.raftAddr]) {
      const [host, port] = addr.split(":");
      await new Promise<void>((resolve) => {
        const s = connect(Number(port), host!, () => {
          s.write(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
          s.write(Buffer.alloc(4096, 0xab));
        });
        s.on("error", () => resolve());
        s.on("close", () => resolve());
        setTimeout(() => {
          s.destroy();
          resolve();
        }, 1000);
      });
    }
    await c.kv(0).put("after", "2");
    expect(await c.kv(0).value("before")).toBe("1");
    expect(await c.kv(0).value("after")).toBe("2");
  }, 20_000);

  test("a truncated state machine file makes the node refuse to start, naming the file", async () => {
    for (let i = 0; i < 50; i++) await c.kv(0).put(`k${i}`, "v".repeat(2000));
    expect(await c.nodes[0]!.stop()).toBe(0);
    const file = join(c.nodes[0]!.spec.dir, "kv", "fsm.mdb");
    truncateSync(file, Math.floor(statSync(file).size / 2));
    const s = c.nodes[0]!.spec;
    const r = await runBinary([`--grpc-addr=${s.grpcAddr}`, `--raft-addr=${s.raftAddr}`, `--log-dir=${s.dir}`, `--kv-dir=${s.dir}`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("fsm.mdb");
    expect(r.stderr).toMatch(/^rbkv: .*fsm\.mdb/m);
  }, 30_000);

  test("a truncated Raft log makes the node refuse to start, naming the file", async () => {
    const s = c.nodes[0]!.spec;
    const file = join(s.dir, "raft-log.mdb");
    truncateSync(file, Math.floor(statSync(file).size / 2));
    const r = await runBinary([`--grpc-addr=${s.grpcAddr}`, `--raft-addr=${s.raftAddr}`, `--log-dir=${s.dir}`, `--kv-dir=${join(s.dir, "fresh-kv")}`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/^rbkv: .*raft-log\.mdb/m);
  }, 30_000);
});

/** Changes one byte of every copy of `needle` in `file`; returns how many copies there were. */
function flipValueByte(file: string, needle: string): number {
  const buf = readFileSync(file);
  let copies = 0;
  for (let at = buf.indexOf(needle); at >= 0; at = buf.indexOf(needle, at + 1)) {
    buf[at + 12] ^= 0x20;
    copies++;
  }
  writeFileSync(file, buf);
  return copies;
}

describe("damaged bytes (record checksums)", () => {
  let c: TestCluster;
  const value = (i: number) => `CHECKSUM-E2E-${String(i).padStart(3, "0")}-abcdefghijklmnop`;

  beforeAll(async () => {
    c = await TestCluster.create(1);
    c.nodes[0]!.start();
    await c.waitServing(0);
    for (let i = 0; i < 40; i++) await c.kv(0).put(`ck${i}`, value(i));
    expect(await c.nodes[0]!.stop()).toBe(0);
    const s = c.nodes[0]!.spec;
    for (const f of [join(s.dir, "kv", "fsm.mdb"), join(s.dir, "raft-log.mdb")]) copyFileSync(f, `${f}.good`);
  }, 30_000);

  afterAll(async () => {
    if (c) await c.destroy();
  });

  const args = () => {
    const s = c.nodes[0]!.spec;
    return [`--grpc-addr=${s.grpcAddr}`, `--raft-addr=${s.raftAddr}`, `--log-dir=${s.dir}`, `--kv-dir=${s.dir}`];
  };
  const restore = () => {
    const s = c.nodes[0]!.spec;
    for (const f of [join(s.dir, "kv", "fsm.mdb"), join(s.dir, "raft-log.mdb")]) copyFileSync(`${f}.good`, f);
  };

  test("a changed byte inside a stored value in kv/fsm.mdb: ./rbkv exits non-zero with one line naming the file and the key", async () => {
    restore();
    const file = join(c.nodes[0]!.spec.dir, "kv", "fsm.mdb");
    expect(flipValueByte(file, value(17))).toBeGreaterThan(0);
    const r = await runBinary(args());
    expect(r.code).toBe(1);
    const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
    expect(lines).toEqual([`rbkv: ${file}: corrupted: checksum mismatch in latest record for key "ck17"`]);
  }, 30_000);

  test("a changed byte inside a stored entry in raft-log.mdb: ./rbkv exits non-zero with one line naming the file and the entry", async () => {
    restore();
    const file = join(c.nodes[0]!.spec.dir, "raft-log.mdb");
    expect(flipValueByte(file, value(17))).toBeGreaterThan(0);
    const r = await runBinary(args());
    expect(r.code).toBe(1);
    const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
    expect(lines.length).toBe(1);
    expect(lines[0]).toStartWith(`rbkv: ${file}: corrupted: checksum mismatch in log entry `);
    expect(lines[0]).toMatch(/log entry \d+$/);
  }, 30_000);

  test("with the good files back, the node starts and serves every value", async () => {
    restore();
    c.nodes[0]!.start();
    await c.waitServing(0);
    for (let i = 0; i < 40; i++) expect(await c.kv(0).value(`ck${i}`)).toBe(value(i));
  }, 30_000);

  test("a value damaged under the running node is answered with DATA_LOSS naming the file, never the changed bytes", async () => {
    if (!c.nodes[0]!.running) {
      restore();
      c.nodes[0]!.start();
      await c.waitServing(0);
    }
    // Written through another descriptor: the node's LMDB map shares the page cache, so its next
    // read of that record sees the change.
    const file = join(c.nodes[0]!.spec.dir, "kv", "fsm.mdb");
    const buf = readFileSync(file);
    const fd = openSync(file, "r+");
    try {
      for (let at = buf.indexOf(value(23)); at >= 0; at = buf.indexOf(value(23), at + 1)) writeSync(fd, Buffer.from([buf[at + 12]! ^ 0x20]), 0, 1, at + 12);
    } finally {
      closeSync(fd);
    }
    for (const serializable of [false, true]) {
      const err = await c.kv(0).get("ck23", { serializable }).then(
        () => null,
        (e: unknown) => e as grpc.ServiceError,
      );
      expect(grpcCode(err)).toBe(grpc.status.DATA_LOSS);
      expect(err!.details).toBe(`${file}: corrupted: checksum mismatch in latest record for key "ck23"`);
    }
    expect(await c.kv(0).value("ck24")).toBe(value(24)); // the other records are still served
  }, 30_000);
});

describe("a state machine file that does not belong with the log", () => {
  test("kv/fsm.mdb deleted after the log was compacted: the node refuses to start, naming both files", async () => {
    const c = await TestCluster.create(1, ["--snapshot-threshold=20", "--trailing-logs=5", "--snapshot-interval=1s"]);
    try {
      c.nodes[0]!.start();
      await c.waitServing(0);
      for (let i = 0; i < 100; i++) await c.kv(0).put(`k${i}`, `v${i}`);
      // Let a snapshot compact the log, then stop cleanly.
      await Bun.sleep(2500);
      expect(await c.nodes[0]!.stop()).toBe(0);
      const s = c.nodes[0]!.spec;
      rmSync(join(s.dir, "kv"), { recursive: true, force: true });
      const r = await runBinary([`--grpc-addr=${s.grpcAddr}`, `--raft-addr=${s.raftAddr}`, `--log-dir=${s.dir}`, `--kv-dir=${s.dir}`]);
      expect(r.code).not.toBe(0);
      expect(r.stderr.split("\n").filter((l) => l.startsWith("rbkv: ")).length).toBe(1);
      expect(r.stderr).toMatch(/^rbkv: .*fsm\.mdb: the state machine is at applied index 0, but the Raft log .*raft-log\.mdb starts after index \d+ \(compacted\)/m);
    } finally {
      await c.destroy();
    }
  }, 40_000);
});

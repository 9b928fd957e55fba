// Damaged files and garbage on the ports: the node refuses to start on a damaged data file
// (naming it) rather than serve wrong data, and a live node shrugs off garbage.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { statSync, truncateSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { TestCluster, runBinary } from "./harness.ts";

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

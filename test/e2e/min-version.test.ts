// End-to-end: read-your-writes on a follower with min_version. A follower is paused with SIGSTOP
// while a write commits on the other two; the reads are sent while it is stopped, so they wait in
// its socket; then it is resumed. The Raft traffic to it goes through a proxy that holds it back
// a little longer, so that the follower answers while it has not yet applied the write: the read
// without min_version is stale (which shows the test can fail), the ones with min_version wait
// and answer the new value once the follower has it.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { OpType, ReadConsistency } from "../../src/server/gen/rbkv.ts";
import { NetProxy } from "../jepsen/proxy.ts";
import { Clients, code, deadline, message } from "./api-helpers.ts";
import { TestCluster, dec, enc, eventually, freePort, sleep } from "./harness.ts";

describe("min_version", () => {
  let c: TestCluster;
  let cl: Clients;
  let proxy: NetProxy;

  beforeAll(async () => {
    c = await TestCluster.create(3, ["--election-timeout=1000"]);
    // Every node advertises a proxy port: peers reach its Raft port only through the proxy.
    const ports: number[] = [];
    for (const n of c.nodes) {
      const port = await freePort();
      ports.push(port);
      n.spec.extra = [...n.spec.extra, `--raft-advertise-addr=127.0.0.1:${port}`];
    }
    proxy = new NetProxy(c.nodes.map((n, i) => ({ id: n.spec.grpcAddr, listenPort: ports[i]!, targetPort: Number(n.spec.raftAddr.split(":")[1]) })));
    await proxy.start();
    await c.startSeedStyle();
    cl = new Clients(c);
  }, 60_000);

  afterAll(async () => {
    cl?.close();
    if (c) await c.destroy();
    await proxy?.stop();
  });

  const get = (i: number, k: string, minVersion: number, ms = 10_000) =>
    cl.of(i).executeAsync({ op: OpType.Get, rc: ReadConsistency.Serializable, kv: { key: enc(k) }, minVersion }, deadline(ms));

  test("a SIGSTOPped follower, resumed with the reads in its socket: stale without min_version, the new value with it", async () => {
    const leader = await c.leader();
    const f = (leader + 1) % 3;
    const third = (leader + 2) % 3;
    const v1 = (await cl.of(leader).executeAsync({ op: OpType.Put, kv: { key: enc("mv"), value: enc("old") } }, deadline(5000))).version;
    await eventually("the follower has the old value", async () => dec((await get(f, "mv", 0, 2000)).value) === "old");

    proxy.block(leader, f, "blackhole");
    proxy.block(third, f, "blackhole");
    const pid = c.nodes[f]!.proc!.pid;
    process.kill(pid, "SIGSTOP");
    let resumed = false;
    try {
      const v2 = (await cl.of(leader).executeAsync({ op: OpType.Put, kv: { key: enc("mv"), value: enc("new") } }, deadline(5000))).version;
      expect(v2).toBeGreaterThan(v1);
      // Sent while the follower is stopped: they wait in its socket.
      const settled: string[] = [];
      const track = <T>(name: string, p: Promise<T>): Promise<T> => {
        p.then(
          () => settled.push(name),
          () => settled.push(name),
        );
        return p;
      };
      const fresh = track("get", get(f, "mv", v2));
      const freshRange = track("range", cl.of(f).rangeAsync({ key: enc("mv"), rc: ReadConsistency.Serializable, minVersion: v2 }, deadline(10_000)));
      const stale = get(f, "mv", 0, 5000);
      await sleep(300);
      expect(settled).toEqual([]);
      process.kill(pid, "SIGCONT");
      resumed = true;

      // Without min_version: the follower answers from what it has, the old value.
      const s = await stale;
      expect({ value: dec(s.value), version: s.version }).toEqual({ value: "old", version: v1 });
      // With it: still waiting, the follower has not applied v2.
      await sleep(300);
      expect(settled).toEqual([]);

      const healedAt = Date.now();
      proxy.heal();
      const r = await fresh;
      expect({ value: dec(r.value), version: r.version }).toEqual({ value: "new", version: v2 });
      const rr = await freshRange;
      expect(rr.kvs.map((kv) => [dec(kv.key), dec(kv.value), kv.version])).toEqual([["mv", "new", v2]]);
      expect(rr.version).toBeGreaterThanOrEqual(v2);
      console.log(`min_version: answered ${Date.now() - healedAt}ms after the follower's Raft link came back`);
    } finally {
      if (!resumed) process.kill(pid, "SIGCONT");
      proxy.heal();
    }
  }, 30_000);

  test("read-your-writes on any follower: every read with min_version = the write's version sees the write", async () => {
    const leader = await c.leader();
    const followers = [0, 1, 2].filter((i) => i !== leader);
    for (let n = 0; n < 40; n++) {
      const v = (await cl.of(leader).executeAsync({ op: OpType.Put, kv: { key: enc("ryw"), value: enc(`v${n}`) } }, deadline(5000))).version;
      const f = followers[n % 2]!;
      const r = n % 2 === 0 ? await get(f, "ryw", v) : await cl.of(f).rangeAsync({ key: enc("ryw"), rc: ReadConsistency.Serializable, minVersion: v }, deadline(10_000)).then((x) => x.kvs[0]!);
      expect({ n, value: dec(r.value), version: r.version }).toEqual({ n, value: `v${n}`, version: v });
    }
  });

  test("a min_version the node never reaches: the read fails at its deadline, never a stale answer", async () => {
    const leader = await c.leader();
    const f = (leader + 1) % 3;
    const t0 = Date.now();
    let err: unknown = null;
    try {
      const r = await get(f, "ryw", 1e12, 700);
      throw new Error(`answered ${dec(r.value)}@${r.version}`);
    } catch (e) {
      err = e;
    }
    expect(code(err)).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(Date.now() - t0).toBeLessThan(5000);
    // And the node still serves.
    expect(dec((await get(f, "ryw", 0, 2000)).value)).toMatch(/^v\d+$/);
    expect(message(err)).toBeDefined();
  });
});

// The Jepsen harness in CI: short runs of every nemesis against real ./rbkv processes, a short
// durability run, the bad-input attacks, and unit tests showing that the proxy really cuts links
// and that the checkers reject bad histories. Longer runs: `bun run jepsen -- --time 600 ...`.

import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { type Server, type Socket, createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writer } from "../../src/transport/codec.ts";
import { PROTOCOL_VERSION, encodeHello } from "../../src/transport/transport.ts";
import { freePort, sleep } from "../e2e/harness.ts";
import { checkAgreement, checkRegister, checkSet, checkWatch, type FinalReads, type FinalValue } from "./checks.ts";
import { JepsenCluster } from "./cluster.ts";
import { NetProxy, parseHello } from "./proxy.ts";
import { type JepsenOptions, activeClusters, defaultOptions, runJepsen } from "./runner.ts";
import type { RegisterOp, SetAttempt, WatchSegment, WatchWrite } from "./workloads.ts";
import { type BankFinal, type BankRead, type BankTransfer, acctKey, xferValue } from "./bank.ts";
import { type BankHistory, checkBank } from "./bank-check.ts";
import type { WrSegment, WrWrite } from "./watch-resume.ts";
import { compactedVersionOf } from "./watch-resume.ts";
import { type WatchResumeHistory, checkWatchResume } from "./watch-resume-check.ts";
import { type RangeEntry, type RestoreHistory, checkRestore } from "./restore-check.ts";
import { answerOf } from "./answers.ts";
import * as grpc from "@grpc/grpc-js";

const resultsRoot = mkdtempSync(join(tmpdir(), "rbkv-jepsen-ci-"));
let anyFailed = false;

afterAll(() => {
  // A run cut short by its test timeout still owns processes: never leave them behind.
  for (const c of activeClusters) c.killAllSync();
  if (!anyFailed) rmSync(resultsRoot, { recursive: true, force: true });
});

async function run(over: Partial<JepsenOptions>, keepResultsOnFailure = true): Promise<string> {
  const o: JepsenOptions = {
    ...defaultOptions(),
    timeSec: 12,
    workloads: ["register", "set"],
    durabilityKills: 0,
    badInput: false,
    resultsRoot,
    recoveryTimeoutMs: 45_000,
    ...over,
  };
  const r = await runJepsen(o);
  if (!r.pass && keepResultsOnFailure) anyFailed = true;
  if (!r.pass && !keepResultsOnFailure) rmSync(r.dir, { recursive: true, force: true });
  return r.line;
}

// ---------------------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------------------

function helloBytes(from: string, to: string): Uint8Array {
  const w = new Writer(128);
  encodeHello(w, 0, "cluster-x", from, to);
  return w.buf.slice(0, w.pos);
}

/** A fake node: records every byte it receives. */
async function sink(): Promise<{ server: Server; port: number; received: () => string; sockets: Socket[] }> {
  const chunks: Buffer[] = [];
  const sockets: Socket[] = [];
  const server = createServer((s) => {
    sockets.push(s);
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("error", () => {});
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", () => r()));
  return { server, port, received: () => Buffer.concat(chunks).toString("latin1"), sockets };
}

function dial(port: number): Promise<{ sock: Socket; closed: () => boolean }> {
  return new Promise((resolve, reject) => {
    let closed = false;
    const sock = createConnection({ host: "127.0.0.1", port }, () => resolve({ sock, closed: () => closed }));
    sock.on("error", (e) => {
      closed = true;
      reject(e);
    });
    sock.on("close", () => (closed = true));
  });
}

describe("the partition proxy", () => {
  test("parses the preamble and Hello frame of the real transport", () => {
    const b = helloBytes("a", "b");
    const h = parseHello(b);
    expect(h).not.toBeNull();
    expect(h).not.toBe("more");
    if (h && h !== "more") {
      expect(h.hello).toEqual({ version: PROTOCOL_VERSION, kind: 0, clusterId: "cluster-x", from: "a", to: "b" });
      expect(h.bytes).toBe(b.byteLength);
    }
    expect(parseHello(b.subarray(0, 10))).toBe("more");
    expect(parseHello(new TextEncoder().encode("GET / HTTP/1.1\r\n"))).toBeNull();
  });

  test("a blocked link really stops traffic (drop and blackhole), and healing restores it", async () => {
    const target = await sink();
    const listen = await freePort();
    const proxy = new NetProxy([
      { id: "a", listenPort: await freePort(), targetPort: 1 },
      { id: "b", listenPort: listen, targetPort: target.port },
    ]);
    await proxy.start();
    try {
      // Open link a -> b: bytes arrive.
      const c1 = await dial(listen);
      c1.sock.write(helloBytes("a", "b"));
      c1.sock.write("one;");
      await sleep(200);
      expect(target.received()).toContain("one;");
      expect(proxy.liveLinks()).toEqual(["0>1"]);

      // Drop: the live connection is destroyed, new ones closed at once, nothing gets through.
      proxy.block(0, 1, "drop");
      await sleep(200);
      expect(c1.closed()).toBe(true);
      const c2 = await dial(listen);
      c2.sock.write(helloBytes("a", "b"));
      c2.sock.write("two;");
      await sleep(300);
      expect(c2.closed()).toBe(true);
      expect(target.received()).not.toContain("two;");

      // The other direction is not blocked: b -> a would still be piped (checked by id only).
      expect(proxy.isBlocked(1, 0)).toBe(false);

      // Blackhole: the connection stays open but nothing arrives.
      proxy.heal();
      proxy.block(0, 1, "blackhole");
      const c3 = await dial(listen);
      c3.sock.write(helloBytes("a", "b"));
      c3.sock.write("three;");
      await sleep(300);
      expect(c3.closed()).toBe(false);
      expect(target.received()).not.toContain("three;");

      // Heal: the black-holed connection is reset (its stream has holes); new ones pass.
      proxy.heal();
      await sleep(200);
      expect(c3.closed()).toBe(true);
      const c4 = await dial(listen);
      c4.sock.write(helloBytes("a", "b"));
      c4.sock.write("four;");
      await sleep(300);
      expect(target.received()).toContain("four;");
      c4.sock.destroy();
    } finally {
      await proxy.stop();
      for (const s of target.sockets) s.destroy();
      target.server.close();
    }
  }, 20_000);

  test("an isolated node of a real cluster cannot commit, and catches up once healed", async () => {
    const root = mkdtempSync(join(tmpdir(), "rbkv-jepsen-proxy-"));
    const c = await JepsenCluster.create({ nodes: 3, root, electionMs: 500, heartbeatMs: 50 });
    try {
      await c.start();
      const l = (await c.leader())!;
      const others = [0, 1, 2].filter((i) => i !== l);
      c.proxy.cut([l], others, "drop");
      const stuck = await c.clients[l]!.put("iso/x", "1", 2000);
      expect(stuck.ok).toBe(false);
      // The majority elects a leader of its own and commits.
      let ok = false;
      for (let i = 0; i < 50 && !ok; i++) {
        ok = (await c.clients[others[0]!]!.put("iso/y", "2", 1000)).ok;
        if (!ok) await sleep(200);
      }
      expect(ok).toBe(true);
      c.proxy.heal();
      await c.waitRecovered(20_000);
      const y = await c.clients[l]!.get("iso/y", 3000, true);
      expect(y.ok && y.value.value).toBe("2");
    } finally {
      await c.destroy();
      rmSync(root, { recursive: true, force: true });
    }
  }, 60_000);
});

// ---------------------------------------------------------------------------------------------
// The checkers must be able to fail
// ---------------------------------------------------------------------------------------------

function attempt(key: string, status: SetAttempt["status"], version = 10): SetAttempt {
  return { key, value: `v-${key}`, client: 0, node: 0, invoke: 0, complete: status === "ok" ? 1 : null, status, version: status === "ok" ? version : 0 };
}

function reads(...nodes: Record<string, FinalValue | null>[]): FinalReads {
  return nodes.map((r) => new Map(Object.entries(r)));
}

describe("the checkers", () => {
  test("set: a missing acknowledged key is rejected", () => {
    const attempts = [attempt("s/0/0", "ok", 5), attempt("s/0/1", "ok", 6)];
    const good = { "s/0/0": { value: "v-s/0/0", version: 5 }, "s/0/1": { value: "v-s/0/1", version: 6 } };
    expect(checkSet(attempts, reads(good, good)).ok).toBe(true);
    const lost = { "s/0/0": { value: "v-s/0/0", version: 5 }, "s/0/1": null };
    const r = checkSet(attempts, reads(good, lost));
    expect(r.ok).toBe(false);
    expect(r.detail).toContain("s/0/1");
    expect(r.detail).toContain("node2");
  });

  test("set: a key whose write certainly failed must not exist; an unknown one may", () => {
    const attempts = [attempt("s/0/0", "fail"), attempt("s/0/1", "unknown")];
    const present = { "s/0/0": { value: "v-s/0/0", version: 3 }, "s/0/1": { value: "v-s/0/1", version: 4 } };
    expect(checkSet(attempts, reads(present)).ok).toBe(false);
    expect(checkSet(attempts, reads({ "s/0/0": null, "s/0/1": { value: "v-s/0/1", version: 4 } })).ok).toBe(true);
  });

  test("agreement: nodes that differ, or a key nobody wrote, are rejected", () => {
    const a = { k: { value: "1", version: 2 } };
    expect(checkAgreement(["k"], reads(a, a), [1, 1]).ok).toBe(true);
    expect(checkAgreement(["k"], reads(a, { k: { value: "1", version: 3 } }), [1, 1]).ok).toBe(false);
    expect(checkAgreement(["k"], reads(a, a), [1, 2]).ok).toBe(false);
  });

  test("register: a stale read is not linearizable", () => {
    const h: RegisterOp[] = [
      { id: 0, client: 0, node: 0, op: { kind: "put", key: "r", value: "a" }, invoke: 0, complete: 10, result: null },
      { id: 1, client: 1, node: 1, op: { kind: "put", key: "r", value: "b" }, invoke: 20, complete: 30, result: null },
      { id: 2, client: 2, node: 2, op: { kind: "get", key: "r" }, invoke: 40, complete: 50, result: "a" },
    ];
    expect(checkRegister(h).ok).toBe(false);
    h[2]!.result = "b";
    expect(checkRegister(h).ok).toBe(true);
  });

  test("watch: a silent gap, a duplicate or a reordering is rejected; an error-ended stream is not a gap", () => {
    const ev = (version: number, key = `w/${version}`) => ({ version, type: "put" as const, key, value: `v${version}` });
    const writes: WatchWrite[] = [5, 6, 7, 8].map((v) => ({ type: "put", key: `w/${v}`, value: `v${v}`, node: 0, invoke: 0, complete: 1, status: "ok", version: v }));
    const seg = (events: ReturnType<typeof ev>[], end: string | null = null): WatchSegment => ({ node: 0, watcherId: "x", opened: 0, closed: null, end, events });
    expect(checkWatch([seg([ev(5), ev(6), ev(7), ev(8)])], writes, "w/").ok).toBe(true);
    const gap = checkWatch([seg([ev(5), ev(6), ev(8)])], writes, "w/");
    expect(gap.ok).toBe(false);
    expect(gap.detail).toContain("silent gap");
    expect(checkWatch([seg([ev(5), ev(6), ev(6), ev(7), ev(8)])], writes, "w/").ok).toBe(false);
    expect(checkWatch([seg([ev(5), ev(7), ev(6), ev(8)])], writes, "w/").ok).toBe(false);
    // A stream that ended with an error after 6, and a new one from 8: fine.
    expect(checkWatch([seg([ev(5), ev(6)], "error UNAVAILABLE: x"), seg([ev(8)])], writes, "w/").ok).toBe(true);
    // A version seen as another key elsewhere: state machines diverged.
    expect(checkWatch([seg([ev(5), ev(6), ev(7, "w/other"), ev(8)])], writes, "w/").ok).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// The bank and watch-resume checkers must be able to fail
// ---------------------------------------------------------------------------------------------

/** Three accounts of 10 at version 5; transfer 0>1:3 acknowledged at 7, 1>2:2 of unknown outcome applied at 9. */
function bankHistory(): BankHistory {
  const xfer = (c: number, n: number, from: number, to: number, amount: number, status: BankTransfer["status"], version: number): BankTransfer => ({
    client: c, session: 100 + c, seq: n + 1, xfer: `bank/xfer/${c}/${n}`, from, to, amount, fromVersion: 5, toVersion: 5,
    invoke: 10 * version, complete: status === "unknown" ? null : 10 * version + 5, status, version: status === "unknown" ? 0 : version, retries: [], indeterminate: 0,
  });
  const read = (version: number, accts: [number, number][], kind: BankRead["kind"] = "serializable", invoke = 1000): BankRead => ({
    reader: "r", node: 0, kind, atVersion: 0, minVersion: 0, invoke, complete: invoke + 1, pageVersions: [version],
    kvs: accts.map(([b, v], i) => ({ key: acctKey(i), value: String(b), version: v })), count: accts.length,
  });
  const finalNode = (node: number): BankFinal => ({
    node, version: 9,
    kvs: [
      { key: acctKey(0), value: "7", version: 7, createVersion: 5 },
      { key: acctKey(1), value: "11", version: 9, createVersion: 5 },
      { key: acctKey(2), value: "12", version: 9, createVersion: 5 },
      { key: "bank/xfer/0/0", value: xferValue(0, 1, 3), version: 7, createVersion: 7 },
      { key: "bank/xfer/1/0", value: xferValue(1, 2, 2), version: 9, createVersion: 9 },
    ],
  });
  return {
    setup: { initial: [10, 10, 10], version: 5 },
    transfers: [xfer(0, 0, 0, 1, 3, "succeeded", 7), xfer(0, 1, 2, 0, 1, "compare-failed", 8), xfer(1, 0, 1, 2, 2, "unknown", 9)],
    reads: [read(5, [[10, 5], [10, 5], [10, 5]], "linearizable", 0), read(7, [[7, 7], [13, 7], [10, 5]]), read(8, [[7, 7], [13, 7], [10, 5]], "linearizable", 100), read(9, [[7, 7], [11, 9], [12, 9]])],
    final: [finalNode(0), finalNode(1)],
  };
}

function failed(results: { name: string; ok: boolean; detail: string }[]): string[] {
  return results.filter((r) => !r.ok).map((r) => `${r.name}: ${r.detail}`);
}

describe("the bank checker", () => {
  test("a consistent history passes", () => {
    expect(failed(checkBank(bankHistory()))).toEqual([]);
  });

  test("a read whose balances do not sum to the total, or paged at two versions, breaks the invariant", () => {
    const h = bankHistory();
    h.reads[1]!.kvs[1]!.value = "14";
    const f = failed(checkBank(h));
    expect(f.some((x) => x.startsWith("bank invariant") && x.includes("sum to 31"))).toBe(true);
    const h2 = bankHistory();
    h2.reads[1]!.pageVersions = [7, 8];
    h2.reads[1]!.kind = "paged";
    expect(failed(checkBank(h2)).some((x) => x.includes("different versions"))).toBe(true);
  });

  test("a read that is not the state at its version, or a stale linearizable read, is rejected", () => {
    const h = bankHistory();
    // Sums to 30, but version 9 is after the transfer 1>2:2.
    h.reads[3]!.kvs = [
      { key: acctKey(0), value: "7", version: 7 },
      { key: acctKey(1), value: "13", version: 7 },
      { key: acctKey(2), value: "10", version: 5 },
    ];
    expect(failed(checkBank(h)).some((x) => x.startsWith("bank reads") && x.includes("applied transfers give"))).toBe(true);
    const h2 = bankHistory();
    // A linearizable read that started after the ack at version 7 (complete 75) but read version 5.
    h2.reads[0]!.invoke = 80;
    expect(failed(checkBank(h2)).some((x) => x.includes("stale linearizable"))).toBe(true);
  });

  test("a read of the store before the accounts existed is empty; a linearizable one there is stale", () => {
    const h = bankHistory();
    // A member emptied and added back serves a serializable read before it caught up.
    h.reads.push({ ...h.reads[1]!, pageVersions: [0], kvs: [], count: 0 });
    expect(failed(checkBank(h))).toEqual([]);
    h.reads.push({ ...h.reads[1]!, pageVersions: [3], kvs: h.reads[1]!.kvs.slice(0, 1), count: 1 });
    expect(failed(checkBank(h)).some((x) => x.includes("before the accounts were written"))).toBe(true);
    const h2 = bankHistory();
    h2.reads.push({ ...h2.reads[1]!, kind: "linearizable", invoke: 500, pageVersions: [0], kvs: [], count: 0 });
    expect(failed(checkBank(h2)).some((x) => x.includes("stale linearizable"))).toBe(true);
  });

  test("an acknowledged transfer whose key is missing, or a compare-failed one that was applied, breaks exactly-once", () => {
    const h = bankHistory();
    for (const f of h.final) f.kvs = f.kvs.filter((k) => k.key !== "bank/xfer/0/0");
    const f1 = failed(checkBank(h));
    expect(f1.some((x) => x.startsWith("bank exactly-once") && x.includes("answered \"succeeded\"") && x.includes("missing"))).toBe(true);
    // What a client that retries with a fresh seq sees: the first attempt applied, the retry's
    // compare fails (the versions moved), so the transfer is answered "compare failed".
    const h2 = bankHistory();
    h2.transfers[0]!.status = "compare-failed";
    h2.transfers[0]!.retries = ["node1 UNAVAILABLE: x"];
    expect(failed(checkBank(h2)).some((x) => x.includes("but it was applied"))).toBe(true);
  });

  test("a transfer applied twice (its key rewritten, balances moved twice) is rejected", () => {
    const h = bankHistory();
    for (const f of h.final) {
      const k = f.kvs.find((x) => x.key === "bank/xfer/0/0")!;
      k.version = 10;
      f.kvs[0]!.value = "4";
      f.kvs[0]!.version = 10;
      f.kvs[1]!.value = "14";
      f.kvs[1]!.version = 10;
    }
    const f = failed(checkBank(h));
    expect(f.some((x) => x.includes("more than once"))).toBe(true);
  });

  test("a key no transfer sent, or two acknowledgements at one version, are rejected", () => {
    const h = bankHistory();
    for (const f of h.final) f.kvs.push({ key: "bank/xfer/9/9", value: xferValue(0, 2, 1), version: 11, createVersion: 11 });
    expect(failed(checkBank(h)).some((x) => x.includes("nobody sent"))).toBe(true);
    const h2 = bankHistory();
    h2.transfers[1]!.status = "succeeded";
    h2.transfers[1]!.version = 7;
    expect(failed(checkBank(h2)).some((x) => x.includes("both acknowledged at version 7"))).toBe(true);
  });
});

function wrHistory(): WatchResumeHistory {
  const w = (v: number, status: WrWrite["status"] = "ok"): WrWrite => ({ key: `wr/0/${v}`, value: `0.${v}`, writer: 0, node: 0, invoke: v, complete: status === "ok" ? v + 1 : null, status, version: status === "ok" ? v : 0 });
  const writes = [5, 6, 7, 8, 9, 10].map((v) => w(v));
  writes.push(w(11, "unknown"), { ...w(12, "unknown"), key: "wr/0/lost" });
  const final = new Map<string, { value: string; version: number } | null>();
  for (const x of writes) final.set(x.key, x.key === "wr/0/lost" ? null : { value: x.value, version: x.version || 11 });
  return {
    prefix: "wr/",
    writes,
    segments: [wrSeg(0, 0, 4, [5, 6, 7, "p7"], "error UNAVAILABLE: x"), wrSeg(1, 1, 7, [8, 9, 10, 11, "p11"], "stopped")],
    watchers: [{ start: 4, last: 11 }],
    compactions: [],
    final: [final, final],
  };
}

function wrSeg(n: number, node: number, startVersion: number, items: (number | string)[], end: string, reset?: number): WrSegment {
  return {
    watcher: 0, n, node, startVersion, opened: 0, closed: 1, end,
    items: items.map((i) => (typeof i === "string" ? { kind: "progress" as const, version: Number(i.slice(1)) } : { kind: "event" as const, version: i, type: "put" as const, key: `wr/0/${i}`, value: `0.${i}` })),
    ...(reset !== undefined ? { reset } : {}),
  };
}

describe("the watch-resume checker", () => {
  test("resumed segments that deliver every committed write once pass (an unknown write found at the end counts)", () => {
    const r = checkWatchResume(wrHistory());
    expect(r.detail).toContain("7 committed writes (1 of unknown outcome)");
    expect(r.ok).toBe(true);
  });

  test("a resume from last-1 (a duplicate) or last+1 (a gap) is rejected", () => {
    const dup = wrHistory();
    dup.segments[1] = wrSeg(1, 1, 6, [7, 8, 9, 10, 11], "stopped");
    const d = checkWatchResume(dup);
    expect(d.ok).toBe(false);
    expect(d.detail).toContain("duplicate");
    const gap = wrHistory();
    gap.segments[1] = wrSeg(1, 1, 8, [9, 10, 11], "stopped");
    const g = checkWatchResume(gap);
    expect(g.ok).toBe(false);
    expect(g.detail).toContain("gap: watcher 0 never received committed version 8");
    expect(g.detail).toContain("lost at the resume");
  });

  test("a Progress event that promised a version not yet sent is rejected", () => {
    const h = wrHistory();
    h.segments[0] = wrSeg(0, 0, 4, [5, 6, "p8", 7], "error UNAVAILABLE: x");
    expect(checkWatchResume(h).ok).toBe(false);
    // The same promise, resumed from it: version 8 was never delivered.
    const h2 = wrHistory();
    h2.segments[0] = wrSeg(0, 0, 4, [5, 6, 7, "p8"], "error UNAVAILABLE: x");
    h2.segments[1] = wrSeg(1, 1, 8, [9, 10, 11], "stopped");
    expect(checkWatchResume(h2).detail).toContain("never received committed version 8");
  });

  test("a reset by compaction allows exactly its gap, and only when someone compacted that far", () => {
    const h = wrHistory();
    h.segments = [wrSeg(0, 0, 4, [5, 6, 7], "error UNAVAILABLE: x"), wrSeg(1, 1, 7, [], "error OUT_OF_RANGE: compacted", 9), wrSeg(2, 2, 9, [10, 11], "stopped")];
    h.compactions = [{ version: 9, status: "ok", compacted: 9 }];
    expect(checkWatchResume(h).ok).toBe(true);
    h.compactions = [{ version: 8, status: "ok", compacted: 8 }];
    expect(checkWatchResume(h).detail).toContain("no compaction past 8");
    // A reset does not excuse a write after the compacted version.
    h.compactions = [{ version: 9, status: "ok", compacted: 9 }];
    h.segments[2] = wrSeg(2, 2, 9, [11], "stopped");
    expect(checkWatchResume(h).detail).toContain("never received committed version 10");
    expect(compactedVersionOf("start_version 7 is below the compacted version 9")).toBe(9);
    expect(compactedVersionOf("not leader")).toBe(null);
  });

  test("an event no committed write explains, an out-of-order event, or a lost acknowledged write is rejected", () => {
    const h = wrHistory();
    h.segments[1]!.items.push({ kind: "event", version: 12, type: "put", key: "wr/0/lost", value: "0.12" });
    expect(checkWatchResume(h).detail).toContain("no committed write has that version");
    const h2 = wrHistory();
    h2.segments[1] = wrSeg(1, 1, 7, [9, 8, 10, 11], "stopped");
    expect(checkWatchResume(h2).ok).toBe(false);
    const h3 = wrHistory();
    h3.final[1] = new Map([...h3.final[1]!].filter(([k]) => k !== "wr/0/6"));
    expect(checkWatchResume(h3).detail).toContain("acknowledged put wr/0/6");
  });
});

function entry(key: string, version: number, value = `v-${key}`): RangeEntry {
  return { key, value, meta: 0, version, createVersion: version, expireAt: 0 };
}

function restoreHistory(): RestoreHistory {
  const source = [entry("a", 3), entry("b", 5), entry("c", 9)];
  return {
    version: 10,
    source,
    restored: source.map((e) => ({ ...e })),
    attempts: [attempt("a", "ok", 3), attempt("b", "ok", 5), attempt("c", "unknown"), attempt("d", "fail"), { ...attempt("e", "ok", 12) }],
  };
}

describe("the restore checker", () => {
  const failedNames = (h: RestoreHistory): string[] => checkRestore(h).filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`);

  test("a restored copy of the source at the snapshot's version passes (a write after it absent)", () => {
    expect(failedNames(restoreHistory())).toEqual([]);
  });

  test("a changed value, version, create_version or meta, a missing key and an extra key are each rejected", () => {
    const changes: ((h: RestoreHistory) => void)[] = [
      (h) => (h.restored[1]!.value = "other"),
      (h) => (h.restored[1]!.version = 6),
      (h) => (h.restored[1]!.createVersion = 4),
      (h) => (h.restored[1]!.meta = 7),
      (h) => (h.restored[1]!.expireAt = 1),
      (h) => h.restored.splice(2, 1),
      (h) => h.restored.push(entry("z", 8)),
    ];
    for (const change of changes) {
      const h = restoreHistory();
      change(h);
      const f = failedNames(h);
      expect(f.length).toBeGreaterThan(0);
      expect(f[0]).toContain("at the snapshot's version");
    }
  });

  test("an acknowledged write at or below the version missing, one after it or a failed one present, are rejected", () => {
    const h = restoreHistory();
    h.source = h.source.filter((e) => e.key !== "a");
    h.restored = h.restored.filter((e) => e.key !== "a");
    expect(failedNames(h).some((x) => x.includes("acknowledged put a="))).toBe(true);
    const h2 = restoreHistory();
    h2.source.push(entry("e", 12));
    h2.restored.push(entry("e", 12));
    expect(failedNames(h2).some((x) => x.includes("after the snapshot's version 10") && x.includes("e@12"))).toBe(true);
    const h3 = restoreHistory();
    h3.source.push(entry("d", 8));
    h3.restored.push(entry("d", 8));
    expect(failedNames(h3).some((x) => x.includes("put d certainly failed"))).toBe(true);
  });
});

describe("the member nemesis's answers", () => {
  test("a FAILED_PRECONDITION that names the leader is a redirect, one that does not is a rule", () => {
    const md = new grpc.Metadata();
    md.set("rbkv-leader-id", "127.0.0.1:9501");
    expect(answerOf({ code: grpc.status.FAILED_PRECONDITION, details: "not leader", metadata: md }).answer).toBe("NOT_LEADER");
    expect(answerOf({ code: grpc.status.FAILED_PRECONDITION, details: "node x is already a voter", metadata: new grpc.Metadata() }).answer).toBe("FAILED_PRECONDITION");
    expect(answerOf({ code: grpc.status.UNAVAILABLE, details: "a change is pending" }).answer).toBe("UNAVAILABLE");
    expect(answerOf(new Error("boom")).answer).toBe("UNKNOWN");
  });
});

// ---------------------------------------------------------------------------------------------
// Short runs against real processes
// ---------------------------------------------------------------------------------------------

describe("jepsen runs (3 nodes, register + set)", () => {
  for (const [nemesis, seed] of [
    ["kill", 101],
    ["pause", 102],
    ["partition", 103],
    ["restart-all", 104],
    ["member", 107],
    ["join", 110],
  ] as const) {
    test(`nemesis ${nemesis}`, async () => {
      const line = await run({ nemesis: [nemesis], seed });
      expect(line).toStartWith("jepsen: PASS");
    }, 150_000);
  }

  // Issue 9: the member nemesis's steps through the cluster RPCs, between kills and partitions.
  // Seed 112: a one-way partition of the leader, a leader kill, TransferLeadership to "" (the
  // most up-to-date voter), a disk-lost replacement of the leader, a kill, MemberAdd as a voter.
  // (Seed 107 above: MemberAdd is_learner with its probes, a promotion refused while the learner
  // is cut off, then accepted; remove-rejoin.)
  test("member steps (learner, add-voter, transfer, replace) alongside kill and partition", async () => {
    const line = await run({ nemesis: ["member", "kill", "partition"], memberSteps: ["learner", "add-voter", "transfer", "replace"], seed: 112, timeSec: 20 });
    expect(line).toStartWith("jepsen: PASS");
  }, 150_000);

  test("durability: 10 SIGKILLs mid-burst, then a full restart; a Snapshot restored into a new cluster", async () => {
    const line = await run({ timeSec: 0, nemesis: [], durabilityKills: 10, seed: 105 });
    expect(line).toStartWith("jepsen: PASS");
  }, 150_000);

  test("bad input against live servers", async () => {
    const line = await run({ timeSec: 0, nemesis: [], badInput: true, seed: 106 });
    expect(line).toStartWith("jepsen: PASS");
  }, 120_000);
});

// Issue 8's workloads: each under the nemeses it is about, short (~30 s each with startup,
// recovery and the final reads).
describe("jepsen runs (3 nodes, bank and watch-resume)", () => {
  test("bank: transfers under exactly-once sessions, leader kills and partitions", async () => {
    const line = await run({ workloads: ["bank"], nemesis: ["kill", "partition"], seed: 301, timeSec: 15 });
    expect(line).toStartWith("jepsen: PASS");
  }, 90_000);

  test("watch-resume: watchers resume on other nodes across kills, partitions and pauses", async () => {
    const line = await run({ workloads: ["watch-resume"], nemesis: ["kill", "partition", "pause"], seed: 302, timeSec: 15 });
    expect(line).toStartWith("jepsen: PASS");
  }, 90_000);
});

// ---------------------------------------------------------------------------------------------
// Regressions for product bugs the harness found. Bug 1: a node that caught up by InstallSnapshot
// never published the writes the snapshot covered, so its open watch streams skipped them
// silently (fixed in 51be27b: such streams now end with ABORTED).
// ---------------------------------------------------------------------------------------------

describe("watches across InstallSnapshot (bug found by the harness)", () => {
  test("a watcher on a follower that catches up by snapshot must not skip writes silently", async () => {
    const root = mkdtempSync(join(tmpdir(), "rbkv-jepsen-watchgap-"));
    const c = await JepsenCluster.create({ nodes: 3, root, electionMs: 500, heartbeatMs: 50, extraArgs: ["--snapshot-threshold=50", "--trailing-logs=10"] });
    try {
      await c.start();
      const l = (await c.leader())!;
      const f = (l + 1) % 3;
      const versions: number[] = [];
      let ended: string | null = null;
      const w = c.clients[f]!.watch("g/", "gap-watcher");
      w.on("data", (r: { event?: { version: number } }) => r.event && versions.push(r.event.version));
      w.on("error", (e: Error) => (ended = e.message));
      const first = await c.clients[l]!.put("g/0", "x", 5000);
      expect(first.ok).toBe(true);
      for (let i = 0; i < 50 && versions.length === 0; i++) await sleep(50);
      expect(versions.length).toBe(1);
      // Cut the follower off; the others commit 200 writes and compact their logs past it.
      c.proxy.cut([f], [0, 1, 2].filter((i) => i !== f), "drop");
      const written: number[] = [];
      for (let i = 1; i <= 200; i++) {
        const r = await c.clients[l]!.put(`g/${i}`, "x", 5000);
        expect(r.ok).toBe(true);
        if (r.ok) written.push(r.value.version);
      }
      c.proxy.heal();
      await c.waitRecovered(30_000);
      const last = await c.clients[l]!.put("g/last", "x", 5000);
      expect(last.ok).toBe(true);
      for (let i = 0; i < 100 && ended === null && !versions.includes(last.ok ? last.value.version : -1); i++) await sleep(50);
      const endedWith: string | null = ended;
      w.cancel();
      expect((await c.logs(f)).includes("installed a state machine image")).toBe(true);
      // Either the stream ended with an error, or it delivered every write in between.
      if (endedWith === null) {
        const missing = written.filter((v) => !versions.includes(v));
        expect({ delivered: versions.length, missing: missing.length }).toEqual({ delivered: 202, missing: 0 });
      }
    } finally {
      await c.destroy();
      rmSync(root, { recursive: true, force: true });
    }
  }, 90_000);

  // Seed 201 isolates the leader for ~5.7 s at +1.6 s: its watcher misses the writes the
  // snapshot covers (a failure here names the watcher, the versions skipped and the results dir).
  test("jepsen run: watch workload under partition + pause, frequent snapshots", async () => {
    const line = await run({ nemesis: ["partition", "pause"], workloads: ["watch"], seed: 201, nodeArgs: ["--snapshot-threshold=100", "--trailing-logs=10"] });
    expect(line).toStartWith("jepsen: PASS");
  }, 150_000);
});

describe("a write whose log slot goes to another leader", () => {
  test("fails with ABORTED (certainly not applied) and is never applied", async () => {
    const root = mkdtempSync(join(tmpdir(), "rbkv-jepsen-aborted-"));
    const c = await JepsenCluster.create({ nodes: 3, root, electionMs: 500, heartbeatMs: 50 });
    try {
      await c.start();
      const l = (await c.leader())!;
      const rest = [0, 1, 2].filter((i) => i !== l);
      expect((await c.clients[l]!.put("before", "x", 5000)).ok).toBe(true);
      // The leader is cut off: the write is appended in its log only and cannot commit.
      c.proxy.cut([l], rest, "drop");
      const lost = c.clients[l]!.put("lost", "never", 30_000);
      // The majority elects a new leader and fills the same log slots with its own entries.
      let next = -1;
      for (let k = 0; k < 100 && next < 0; k++) {
        await sleep(100);
        for (const i of rest) {
          const info = await c.clients[i]!.client.leaderInfoAsync({}, { deadline: Date.now() + 500 }).catch(() => null);
          if (info && info.leaderId === c.ids[i]) next = i;
        }
      }
      expect(next).toBeGreaterThanOrEqual(0);
      for (let k = 0; k < 5; k++) expect((await c.clients[next]!.put(`after/${k}`, "y", 5000)).ok).toBe(true);
      c.proxy.heal();
      const r = await lost;
      expect(r.ok ? "ok" : `${r.code}:${r.definite}`).toBe("10:true"); // ABORTED, definite
      const got = await c.clients[next]!.get("lost", 5000);
      expect(got.ok && got.value.value).toBe(null);
    } finally {
      await c.destroy();
      rmSync(root, { recursive: true, force: true });
    }
  }, 90_000);
});

// Bug 2 (fixed): LMDB keeps no checksums, so a follower whose kv/fsm.mdb had a changed byte
// started and served the wrong value (even to linearizable reads through it), and one with a
// zeroed page started and answered INTERNAL (MDB_CORRUPTED) for the keys on that page (and an
// LMDB cursor meeting such a page aborts the process). Now every record carries a CRC-32 of its
// key and bytes (FSM and log format 2), and opening a file walks every LMDB page and checks every
// record before LMDB iterates it (src/storage/lmdb-walk.ts, fsm-verify.ts): the node refuses to
// start with one line naming the file, the database and the key.
describe("damaged data files on a follower of a live cluster", () => {
  test("truncated files are refused with an error naming the file; the node rejoins once restored", async () => {
    const line = await run({ timeSec: 0, nemesis: [], damage: true, damageKinds: ["truncate-fsm", "truncate-log"], seed: 108 });
    expect(line).toStartWith("jepsen: PASS");
  }, 120_000);

  test("[bug 2] a changed byte or a zeroed page in kv/fsm.mdb is refused, never served", async () => {
    const line = await run({ timeSec: 0, nemesis: [], damage: true, damageKinds: ["flip-value-byte", "zero-fsm-page"], seed: 109 });
    expect(line).toStartWith("jepsen: PASS");
  }, 120_000);
});

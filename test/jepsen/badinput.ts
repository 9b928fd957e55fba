// Bad input against live servers: malformed protobuf and oversized messages on the gRPC port,
// random bytes and wrong handshakes on the Raft port, huge and empty keys, unknown ops, bad joins,
// a duplicate watcher id. Each must get a clear error; every node must keep serving; nothing that
// was written before may be lost.

import { type Socket, createConnection } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { RbdkvPaths } from "../../src/server/grpc-service.ts";
import { OpType } from "../../src/server/gen/rbkv.ts";
import { Reader, Writer } from "../../src/transport/codec.ts";
import { PROTOCOL_VERSION, encodeHello } from "../../src/transport/transport.ts";
import { enc, sleep } from "../e2e/harness.ts";
import type { Prng } from "../sim/prng.ts";
import { CHANNEL_OPTIONS, codeName } from "./client.ts";
import type { CheckResult } from "./checks.ts";
import type { JepsenCluster } from "./cluster.ts";
import type { RunCtx } from "./workloads.ts";

const FRAME_REFUSE = 3;
const FRAME_MSG = 4;
const REFUSE_VERSION = 2;
const REFUSE_CLUSTER = 3;

interface CallResult {
  code: number;
  details: string;
}

/** Sends raw bytes as the request of `path` (no protobuf encoding at all). */
function rawUnary(addr: string, path: string, payload: Buffer, timeoutMs = 5000): Promise<CallResult> {
  const client = new grpc.Client(addr, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  return new Promise<CallResult>((resolve) => {
    client.makeUnaryRequest<Buffer, Buffer>(
      path,
      (b) => b,
      (b) => b,
      payload,
      new grpc.Metadata(),
      { deadline: Date.now() + timeoutMs },
      (err) => {
        resolve(err ? { code: err.code, details: err.details ?? "" } : { code: grpc.status.OK, details: "" });
      },
    );
  }).finally(() => client.close());
}

/** Connects to a raw TCP port, sends bytes, collects what comes back until close or timeout. */
function rawTcp(port: number, bytes: Uint8Array, waitMs: number): Promise<{ closed: boolean; received: Buffer; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let done = false;
    const sock: Socket = createConnection({ host: "127.0.0.1", port }, () => sock.write(bytes));
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ closed, received: Buffer.concat(chunks), ms: Date.now() - t0 });
    };
    const timer = setTimeout(() => finish(false), waitMs);
    sock.on("data", (d: Buffer) => chunks.push(d));
    sock.on("error", () => finish(true));
    sock.on("close", () => finish(true));
    sock.on("end", () => finish(true));
  });
}

/** The Refuse frame a peer answered with, if any. */
function parseRefuse(b: Buffer): { code: number; reason: string } | null {
  if (b.byteLength < 5) return null;
  const len = b.readUInt32BE(0);
  if (b[4] !== FRAME_REFUSE || b.byteLength < 5 + len) return null;
  try {
    const r = new Reader(b, 5, 5 + len);
    return { code: r.u8(), reason: r.str() };
  } catch {
    return null;
  }
}

function hello(clusterId: string, from: string, to: string, version = PROTOCOL_VERSION): Uint8Array {
  const w = new Writer(256);
  encodeHello(w, 0, clusterId, from, to, version);
  return w.buf.slice(0, w.pos);
}

function portOf(addr: string): number {
  return Number(addr.slice(addr.lastIndexOf(":") + 1));
}

export async function runBadInput(cluster: JepsenCluster, ctx: RunCtx, rng: Prng, progress?: (s: string) => void): Promise<CheckResult[]> {
  const checks: CheckResult[] = [];
  const n = cluster.size;
  const add = (name: string, ok: boolean, detail: string): void => {
    checks.push({ name: `bad input: ${name}`, ok, detail });
  };
  const expectCode = (name: string, r: CallResult, want: number[]): void => {
    const ok = want.includes(r.code) && r.details.length > 0;
    add(name, ok, `${codeName(r.code)}: ${r.details.slice(0, 160)}${ok ? "" : ` (wanted ${want.map(codeName).join(" or ")} with a message)`}`);
  };

  // Data written before the attacks, read back after them.
  const pre: { key: string; value: string; version: number }[] = [];
  for (let k = 0; k < 50; k++) {
    const key = `b/pre/${k}`;
    const value = `pre-${k}-${rng.int(0, 1e9)}`;
    ctx.attempted.add(key);
    const r = await cluster.clients[k % n]!.put(key, value, 10_000);
    if (!r.ok) {
      add("setup", false, `could not write ${key} before the attacks: ${codeName(r.code)} ${r.details}`);
      return checks;
    }
    pre.push({ key, value, version: r.value.version });
  }

  const serving = async (when: string): Promise<void> => {
    const bad: string[] = [];
    for (let i = 0; i < n; i++) {
      try {
        await cluster.clients[i]!.client.leaderInfoAsync({}, { deadline: Date.now() + 3000 });
        const g = await cluster.clients[i]!.get(pre[i % pre.length]!.key, 5000);
        if (!g.ok) bad.push(`node${i + 1}: ${codeName(g.code)} ${g.details}`);
      } catch (err) {
        bad.push(`node${i + 1}: ${(err as Error).message}`);
      }
    }
    add(`every node serves after ${when}`, bad.length === 0, bad.length === 0 ? "LeaderInfo and a linearizable read answered on every node" : bad.join("; "));
  };

  // --- gRPC: malformed protobuf ------------------------------------------------------------
  progress?.("bad input: malformed protobuf");
  const randomTail = Buffer.from(Array.from({ length: 64 }, () => rng.int(0, 255)));
  const malformed: [string, Buffer][] = [
    ["length-delimited kv with a 4 GiB length", Buffer.from([0x1a, 0xff, 0xff, 0xff, 0xff, 0x0f])],
    ["truncated varint", Buffer.from([0x08, 0xff])],
    ["nested key overruns its message", Buffer.from([0x08, 0x02, 0x1a, 0x03, 0x0a, 0x05, 0x61])],
    ["wire type 7", Buffer.from([0x0f, 0x01])],
    ["field number 0 then random bytes", Buffer.concat([Buffer.from([0x00]), randomTail])],
  ];
  for (const i of [0, n - 1]) {
    for (const [what, bytes] of malformed) {
      const r = await rawUnary(cluster.ids[i]!, RbdkvPaths.execute, bytes);
      expectCode(`malformed protobuf to Execute on node${i + 1} (${what})`, r, [grpc.status.INVALID_ARGUMENT, grpc.status.INTERNAL]);
    }
  }
  await serving("malformed protobuf");

  // --- gRPC: oversized messages and values ---------------------------------------------------
  progress?.("bad input: oversized messages, huge and empty keys");
  const big = await cluster.clients[0]!.put("b/oversized", "x".repeat(3 << 20), 10_000);
  ctx.attempted.add("b/oversized");
  expectCode("a 3 MiB Put (beyond the server's max receive size)", big.ok ? { code: 0, details: "accepted" } : big, [grpc.status.RESOURCE_EXHAUSTED, grpc.status.INVALID_ARGUMENT]);
  const tooBigValue = await cluster.clients[1 % n]!.put("b/too-big-value", "y".repeat((1 << 20) + 1), 10_000);
  ctx.attempted.add("b/too-big-value");
  expectCode("a value of 1 MiB + 1 byte", tooBigValue.ok ? { code: 0, details: "accepted" } : tooBigValue, [grpc.status.INVALID_ARGUMENT]);

  // --- keys ----------------------------------------------------------------------------------
  const hugeKey = "k".repeat(5000);
  for (const [what, call] of [
    ["put with a 5000-byte key", () => cluster.clients[0]!.put(hugeKey, "v", 5000)],
    ["get with a 5000-byte key", () => cluster.clients[0]!.get(hugeKey, 5000)],
    ["delete with a 5000-byte key", () => cluster.clients[0]!.del(hugeKey, 5000)],
    ["put with an empty key", () => cluster.clients[n - 1]!.put("", "v", 5000)],
    ["get with an empty key", () => cluster.clients[n - 1]!.get("", 5000)],
    ["delete with an empty key", () => cluster.clients[n - 1]!.del("", 5000)],
  ] as const) {
    const r = await call();
    expectCode(what, r.ok ? { code: 0, details: "accepted" } : r, [grpc.status.INVALID_ARGUMENT]);
  }
  const edgeKey = `b/${"e".repeat(4094)}`;
  ctx.attempted.add(edgeKey);
  const edge = await cluster.clients[0]!.put(edgeKey, "edge", 5000);
  const edgeRead = edge.ok ? await cluster.clients[n - 1]!.get(edgeKey, 5000) : null;
  add(
    "a key of exactly 4096 bytes works",
    edge.ok && edgeRead !== null && edgeRead.ok && edgeRead.value.value === "edge",
    edge.ok ? (edgeRead?.ok ? `read back ${JSON.stringify(edgeRead.value.value)}` : `read failed`) : `put failed: ${codeName(edge.code)} ${edge.details}`,
  );
  const unknownOp = await cluster.clients[0]!.client
    .executeAsync({ op: 9 as (typeof OpType)[keyof typeof OpType], kv: { key: enc("b/op") } }, { deadline: Date.now() + 5000 })
    .then(
      () => ({ code: 0, details: "accepted" }),
      (e: grpc.ServiceError) => ({ code: e.code, details: e.details }),
    );
  expectCode("unknown op 9", unknownOp, [grpc.status.INVALID_ARGUMENT]);
  const badJoin = await cluster.clients[0]!.client.joinAsync({ id: "", addr: "x" }, { deadline: Date.now() + 5000 }).then(
    () => ({ code: 0, details: "accepted" }),
    (e: grpc.ServiceError) => ({ code: e.code, details: e.details }),
  );
  expectCode("join without a node id", badJoin, [grpc.status.INVALID_ARGUMENT]);
  const badJoinAddr = await cluster.clients[0]!.client.joinAsync({ id: "intruder", addr: "no-port" }, { deadline: Date.now() + 5000 }).then(
    () => ({ code: 0, details: "accepted" }),
    (e: grpc.ServiceError) => ({ code: e.code, details: e.details }),
  );
  expectCode("join with a raft address that is not host:port", badJoinAddr, [grpc.status.INVALID_ARGUMENT]);

  // A duplicate watcher id on one node.
  const w1 = cluster.clients[0]!.watch("b/", "dup-watcher");
  w1.on("error", () => {});
  w1.on("data", () => {});
  await sleep(300);
  const dup = await new Promise<CallResult>((resolve) => {
    const w2 = cluster.clients[0]!.watch("b/", "dup-watcher");
    const t = setTimeout(() => {
      w2.cancel();
      resolve({ code: 0, details: "the second stream stayed open" });
    }, 3000);
    w2.on("data", () => {});
    w2.on("error", (e: grpc.ServiceError) => {
      clearTimeout(t);
      resolve({ code: e.code, details: e.details });
    });
  });
  w1.cancel();
  expectCode("a second watcher with the same id", dup, [grpc.status.ALREADY_EXISTS]);
  await serving("bad keys, oversized messages, bad joins");

  // --- the Raft port ---------------------------------------------------------------------------
  progress?.("bad input: raft port");
  const clusterId = cluster.proxy.clusterId ?? "";
  for (let i = 0; i < n; i++) {
    const port = portOf(cluster.nodes[i]!.spec.raftAddr);
    const junk = Uint8Array.from(Array.from({ length: 4096 }, () => rng.int(0, 255)));
    junk[0] = 0x47; // "G": never the magic
    const r1 = await rawTcp(port, junk, 8000);
    add(`random bytes on node${i + 1}'s raft port`, r1.closed, r1.closed ? `connection closed after ${r1.ms} ms (${r1.received.byteLength} bytes of answer)` : "connection still open after 8 s");

    const http = await rawTcp(port, enc("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 8000);
    const httpRefuse = parseRefuse(http.received);
    add(`an HTTP request on node${i + 1}'s raft port`, http.closed && httpRefuse !== null, httpRefuse ? `refused (code ${httpRefuse.code}): ${httpRefuse.reason.slice(0, 120)}` : `closed=${http.closed}, no refuse frame`);

    const v2 = await rawTcp(port, hello(clusterId, "intruder", cluster.ids[i]!, PROTOCOL_VERSION + 1), 8000);
    const v2r = parseRefuse(v2.received);
    add(
      `a peer speaking protocol version ${PROTOCOL_VERSION + 1} to node${i + 1}`,
      v2r !== null && v2r.code === REFUSE_VERSION && v2.closed,
      v2r ? `refused (code ${v2r.code}): ${v2r.reason.slice(0, 120)}` : `no refuse frame (closed=${v2.closed}, ${v2.received.byteLength} bytes)`,
    );

    const other = await rawTcp(port, hello("another-cluster", "intruder", cluster.ids[i]!), 8000);
    const otherR = parseRefuse(other.received);
    add(
      `a peer from another cluster id to node${i + 1}`,
      otherR !== null && otherR.code === REFUSE_CLUSTER && other.closed,
      otherR ? `refused (code ${otherR.code}): ${otherR.reason.slice(0, 120)}` : `no refuse frame (closed=${other.closed})`,
    );

    // Right cluster, a stranger's id, then a frame that is not a Raft message / a huge length.
    if (clusterId) {
      const garbage = new Uint8Array([0, 0, 0, 3, FRAME_MSG, 0xff, 0xff, 0xff]);
      const g = await rawTcp(port, Buffer.concat([hello(clusterId, "intruder", cluster.ids[i]!), garbage]), 8000);
      add(`a malformed Raft message after a valid handshake on node${i + 1}`, g.closed, g.closed ? `connection closed after ${g.ms} ms` : "connection still open after 8 s");
      const huge = new Uint8Array([0xff, 0xff, 0xff, 0xf0, FRAME_MSG]);
      const h = await rawTcp(port, Buffer.concat([hello(clusterId, "intruder", cluster.ids[i]!), huge]), 8000);
      add(`a 4 GiB frame header after a valid handshake on node${i + 1}`, h.closed, h.closed ? `connection closed after ${h.ms} ms` : "connection still open after 8 s");
    }
  }
  await serving("garbage on the raft ports");

  // --- nothing lost --------------------------------------------------------------------------
  const lost: string[] = [];
  for (let i = 0; i < n; i++) {
    for (const p of pre) {
      const g = await cluster.clients[i]!.get(p.key, 5000);
      if (!g.ok) lost.push(`node${i + 1} ${p.key}: ${codeName(g.code)}`);
      else if (g.value.value !== p.value || g.value.version !== p.version) lost.push(`node${i + 1} ${p.key}: ${JSON.stringify(g.value.value)}@${g.value.version}`);
    }
  }
  add("nothing lost", lost.length === 0, lost.length === 0 ? `all ${pre.length} keys written before the attacks read back on every node` : lost.slice(0, 5).join("; "));
  for (let i = 0; i < n; i++) {
    const key = `b/after/${i}`;
    ctx.attempted.add(key);
    const r = await cluster.clients[i]!.put(key, "after", 10_000);
    add(`node${i + 1} takes writes after the attacks`, r.ok, r.ok ? `version ${r.value.version}` : `${codeName(r.code)}: ${r.details}`);
  }
  return checks;
}

// The rbdkv.Rbdkv service definition and client over real grpc-js (HTTP/2 on 127.0.0.1, an
// ephemeral port) under Bun: every RPC with fake handlers, a server stream that ends with
// OK and one that ends with an error, error statuses, deadlines, and garbage requests that
// must produce an error status while the server keeps serving.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { type ClusterStatsResponseInit, type RbdkvClient, type RbdkvHandlers, RbdkvPaths, RbdkvService, createRbdkvClient } from "../../src/server/grpc-service.ts";
import { Command, type CommandResponse, Event_EventType as EventType, OpType, ReadConsistency, type SnapshotChunk, type WatchResponse } from "../../src/server/gen/rbkv.ts";

const decodeCommandResponse = RbdkvService.execute.responseDeserialize;
const decodeWatchResponse = RbdkvService.watch.responseDeserialize;
const encodeCommand = RbdkvService.execute.requestSerialize;

const te = new TextEncoder();
const td = new TextDecoder();
const s = (text: string): Uint8Array => te.encode(text);

/** Calls that reached a handler, by method. */
const reached = { execute: 0, watch: 0, leaderInfo: 0, clusterStats: 0, join: 0, removeMember: 0, range: 0, txn: 0, compact: 0, openSession: 0, closeSession: 0 };

const handlers: RbdkvHandlers = {
  execute(call, callback) {
    reached.execute++;
    const { op, rc, kv } = call.request;
    const key = kv ? td.decode(kv.key) : "";
    if (key === "") return callback({ code: grpc.status.INVALID_ARGUMENT, details: "empty key" });
    if (key === "missing") return callback({ code: grpc.status.NOT_FOUND, details: `key ${key} not found` });
    if (key === "slow") return; // never answers: the client's deadline must fire
    if (key === "bad-response") return callback(null, { version: -1 }); // cannot be encoded
    if (op === OpType.Put) return callback(null, { key: kv!.key, version: 42 });
    if (op === OpType.Get) {
      const hop = call.metadata.get("x-rbkv-hop")[0];
      return callback(null, { key: kv!.key, value: s(`value of ${key} rc=${rc} v=${kv!.version} hop=${String(hop ?? "")}`), meta: 7, version: 9_007_199_254_740_991 });
    }
    callback({ code: grpc.status.INVALID_ARGUMENT, details: `unknown op ${op}` });
  },

  watch(call) {
    reached.watch++;
    const { watcherId, prefixes, eventCapacity } = call.request;
    if (watcherId === "dup") {
      call.emit("error", { code: grpc.status.ALREADY_EXISTS, details: `watcher ${watcherId} exists` });
      return;
    }
    const prefix = prefixes.length > 0 ? td.decode(prefixes[0]) : "";
    const n = eventCapacity;
    for (let i = 1; i <= n; i++) {
      call.write({
        watcherId,
        event: {
          type: i % 3 === 0 ? EventType.Delete : EventType.Put,
          key: s(`${prefix}${i}`),
          value: i % 3 === 0 ? undefined : s(`v${i}`),
          version: 100 + i,
          expireAt: i === 2 ? 1_735_689_600_123 : 0,
          watcherId,
        },
      });
    }
    if (watcherId === "overflow") {
      call.emit("error", { code: grpc.status.RESOURCE_EXHAUSTED, details: `watcher ${watcherId} fell more than ${n} events behind` });
      return;
    }
    call.end();
  },

  leaderInfo(call, callback) {
    reached.leaderInfo++;
    callback(null, { leaderAddr: "127.0.0.1:9501", leaderId: "localhost:9501", term: 3 + Object.keys(call.request).length });
  },

  clusterStats(call, callback) {
    reached.clusterStats++;
    const { withRaft, withFsm } = call.request;
    const res: ClusterStatsResponseInit = {
      peers: [
        {
          id: "n1",
          isLeader: true,
          isLocal: true,
          raft: withRaft ? { meta: new Map([["state", "Leader"], ["term", "3"], ["ключ", "значение"]]) } : undefined,
          fsm: withFsm ? { lsmSize: 1 << 20, keysCount: withFsm.withKeyCount ? 1000 : 0 } : undefined,
        },
        { id: "n2" },
        { id: "n3", isLearner: true },
      ],
    };
    callback(null, res);
  },

  join(call, callback) {
    reached.join++;
    const { id, addr, grpcAddr } = call.request;
    if (id === "") return callback({ code: grpc.status.INVALID_ARGUMENT, details: "empty id" });
    callback(null, { leaderInfo: { leaderAddr: grpcAddr || id, leaderId: `${id}@${addr}`, term: 2 }, joinedAt: 17 });
  },

  removeMember(call, callback) {
    reached.removeMember++;
    const { id } = call.request;
    if (id === "") return callback({ code: grpc.status.INVALID_ARGUMENT, details: "empty id" });
    if (id === "stranger") return callback({ code: grpc.status.NOT_FOUND, details: `${id} is not a member` });
    callback(null, { leaderInfo: { leaderAddr: "127.0.0.1:9501", leaderId: `not ${id}`, term: 4 } });
  },

  // The rbkv extensions: fakes that echo their requests, to check the wiring of each method.
  range(call, callback) {
    reached.range++;
    const { key, limit, reverse, version } = call.request;
    callback(null, { kvs: [{ key, value: s(`reverse=${reverse}`), version: 3, createVersion: 2 }], more: limit === 1, count: 7, version: version || 99 });
  },

  txn(call, callback) {
    reached.txn++;
    const { compare, success, failure, sessionId, seq } = call.request;
    const ops = compare.length === 0 ? success : failure;
    callback(null, {
      succeeded: compare.length === 0,
      responses: ops.map((op) =>
        op.op?.$case === "put"
          ? { result: { $case: "put", value: { version: 10 + seq } } }
          : op.op?.$case === "delete"
            ? { result: { $case: "delete", value: { deleted: sessionId } } }
            : { result: { $case: "range", value: { count: 1, kvs: [{ key: op.op?.value.key }] } } },
      ),
      version: 10 + seq,
    });
  },

  compact(call, callback) {
    reached.compact++;
    if (call.request.version === 0) return callback({ code: grpc.status.OUT_OF_RANGE, details: "compact to version 0" });
    callback(null, { compacted: call.request.version });
  },

  openSession(call, callback) {
    reached.openSession++;
    callback(null, { sessionId: 41, ttl: call.request.ttl ?? { seconds: 300 } });
  },

  closeSession(call, callback) {
    reached.closeSession++;
    if (call.request.sessionId !== 41) return callback({ code: grpc.status.FAILED_PRECONDITION, details: `session ${call.request.sessionId} is unknown` });
    callback(null, {});
  },

  // The cluster RPCs are exercised end to end (test/e2e); here they only have to exist.
  memberList: (_call, callback) => callback(null, { members: [{ id: "n1", isLeader: true, matchIndex: 9_007_199_254_740_991 }] }),
  memberAdd: (_call, callback) => callback({ code: grpc.status.FAILED_PRECONDITION, details: "not in this test" }),
  memberPromote: (_call, callback) => callback({ code: grpc.status.FAILED_PRECONDITION, details: "not in this test" }),
  memberUpdate: (_call, callback) => callback({ code: grpc.status.FAILED_PRECONDITION, details: "not in this test" }),
  transferLeadership: (_call, callback) => callback({ code: grpc.status.FAILED_PRECONDITION, details: "not in this test" }),
  status: (_call, callback) => callback(null, { id: "n1", term: 2, logDbSize: 4096 }),
  snapshot(call) {
    call.write({ data: s("image-1"), version: 7 });
    call.write({ data: s("image-2"), version: 7 });
    call.end();
  },
};

let server: grpc.Server;
let address = "";
let client: RbdkvClient;

function listen(srv: grpc.Server): Promise<string> {
  return new Promise((resolve, reject) => {
    srv.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(`127.0.0.1:${port}`)));
  });
}

beforeAll(async () => {
  server = new grpc.Server();
  server.addService(RbdkvService, handlers);
  address = await listen(server);
  client = createRbdkvClient(address);
});

afterAll(() => {
  client?.close();
  server?.forceShutdown();
});

function expectStatus(err: unknown, code: grpc.status): grpc.ServiceError {
  const e = err as grpc.ServiceError;
  expect(e).toBeInstanceOf(Error);
  expect(grpc.status[e.code]).toBe(grpc.status[code]);
  return e;
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("expected the call to fail");
}

function collect(stream: grpc.ClientReadableStream<WatchResponse>): Promise<{ messages: WatchResponse[]; error: grpc.ServiceError | null; status: grpc.StatusObject }> {
  return new Promise((resolve) => {
    const messages: WatchResponse[] = [];
    let error: grpc.ServiceError | null = null;
    stream.on("data", (m: WatchResponse) => messages.push(m));
    stream.on("error", (e: grpc.ServiceError) => {
      error = e;
    });
    stream.on("status", (status: grpc.StatusObject) => {
      // "status" comes after the last "data"; "error" (if any) is emitted just before or after it.
      setTimeout(() => resolve({ messages, error, status }), 20);
    });
  });
}

describe("Execute", () => {
  test("Put and Get through the callback and promise forms", async () => {
    const put = await new Promise<CommandResponse>((resolve, reject) => {
      client.execute({ op: OpType.Put, kv: { key: s("a"), value: s("1"), ttl: { seconds: 5 } } }, (err, res) => (err ? reject(err) : resolve(res!)));
    });
    expect(td.decode(put.key)).toBe("a");
    expect(put.version).toBe(42);
    expect(put.value.length).toBe(0);

    const md = new grpc.Metadata();
    md.set("x-rbkv-hop", "1");
    const get = await client.executeAsync(
      { op: OpType.Get, rc: ReadConsistency.Serializable, kv: { key: s("a"), version: 17 } },
      { metadata: md, deadline: Date.now() + 5000 },
    );
    expect(td.decode(get.value)).toBe("value of a rc=1 v=17 hop=1");
    expect(get.meta).toBe(7);
    expect(get.version).toBe(Number.MAX_SAFE_INTEGER);
  });

  test("handler errors arrive as their gRPC status codes", async () => {
    const e = expectStatus(await rejection(client.executeAsync({ op: OpType.Get, kv: { key: s("missing") } })), grpc.status.NOT_FOUND);
    expect(e.details).toBe("key missing not found");
    expectStatus(await rejection(client.executeAsync({ op: OpType.Get })), grpc.status.INVALID_ARGUMENT);
    expectStatus(await rejection(client.executeAsync({ op: 9 as OpType, kv: { key: s("k") } })), grpc.status.INVALID_ARGUMENT);
  });

  test("a deadline expires as DEADLINE_EXCEEDED", async () => {
    const started = Date.now();
    expectStatus(await rejection(client.executeAsync({ op: OpType.Get, kv: { key: s("slow") } }, { deadline: Date.now() + 200 })), grpc.status.DEADLINE_EXCEEDED);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  test("a response that cannot be encoded becomes INTERNAL for that call only", async () => {
    const e = expectStatus(await rejection(client.executeAsync({ op: OpType.Get, kv: { key: s("bad-response") } })), grpc.status.INTERNAL);
    expect(e.details).toMatch(/serializ/i);
    expect((await client.executeAsync({ op: OpType.Put, kv: { key: s("b") } })).version).toBe(42);
  });

  test("a request the client cannot encode fails locally, nothing is sent", async () => {
    const before = reached.execute;
    const e = expectStatus(await rejection(client.executeAsync({ op: OpType.Put, kv: { key: s("k"), version: -1 } })), grpc.status.INTERNAL);
    expect(e.details).toMatch(/uint64/);
    expect(reached.execute).toBe(before);
  });

  test("a uint64 above 2^53-1 is sent (it is a valid uint64) but the server refuses to decode it", async () => {
    const before = reached.execute;
    const e = expectStatus(await rejection(client.executeAsync({ op: OpType.Put, kv: { key: s("k"), version: 2 ** 53 } })), grpc.status.INTERNAL);
    expect(e.details).toMatch(/deseriali/i);
    expect(reached.execute).toBe(before);
  });
});

describe("Watch (server streaming)", () => {
  test("several events in order, then OK", async () => {
    const { messages, error, status } = await collect(client.watch({ watcherId: "w1", prefixes: [s("users/")], eventCapacity: 5 }));
    expect(error).toBeNull();
    expect(status.code).toBe(grpc.status.OK);
    expect(messages.map((m) => [m.watcherId, m.event!.type, td.decode(m.event!.key), td.decode(m.event!.value), m.event!.version])).toEqual([
      ["w1", EventType.Put, "users/1", "v1", 101],
      ["w1", EventType.Put, "users/2", "v2", 102],
      ["w1", EventType.Delete, "users/3", "", 103],
      ["w1", EventType.Put, "users/4", "v4", 104],
      ["w1", EventType.Put, "users/5", "v5", 105],
    ]);
    expect(messages[1]!.event!.expireAt).toBe(1_735_689_600_123);
    expect(messages[0]!.event!.expireAt).toBe(0);
  });

  test("for await over the stream", async () => {
    const keys: string[] = [];
    for await (const m of client.watch({ watcherId: "w2", prefixes: [s("p/")], eventCapacity: 3 })) keys.push(td.decode((m as WatchResponse).event!.key));
    expect(keys).toEqual(["p/1", "p/2", "p/3"]);
  });

  test("events, then an error status (a slow consumer's overflow)", async () => {
    const { messages, error, status } = await collect(client.watch({ watcherId: "overflow", eventCapacity: 4 }));
    expect(messages.length).toBe(4);
    expectStatus(error, grpc.status.RESOURCE_EXHAUSTED);
    expect(status.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(status.details).toBe("watcher overflow fell more than 4 events behind");
  });

  test("an error before any event (duplicate watcher id)", async () => {
    const { messages, error } = await collect(client.watch({ watcherId: "dup" }));
    expect(messages.length).toBe(0);
    expectStatus(error, grpc.status.ALREADY_EXISTS);
  });

  test("a stream of many events", async () => {
    const { messages, error } = await collect(client.watch({ watcherId: "many", eventCapacity: 2000 }));
    expect(error).toBeNull();
    expect(messages.length).toBe(2000);
    expect(messages.every((m, i) => m.event!.version === 101 + i)).toBe(true);
  });
});

describe("LeaderInfo, ClusterStats, Join", () => {
  test("LeaderInfo", async () => {
    expect(await client.leaderInfoAsync()).toEqual({ leaderAddr: "127.0.0.1:9501", leaderId: "localhost:9501", term: 3 });
    const viaCallback = await new Promise((resolve, reject) => client.leaderInfo({}, (err, res) => (err ? reject(err) : resolve(res))));
    expect(viaCallback).toEqual({ leaderAddr: "127.0.0.1:9501", leaderId: "localhost:9501", term: 3 });
  });

  test("ClusterStats with and without details", async () => {
    const full = await client.clusterStatsAsync({ withRaft: true, withFsm: { exactSize: true, withKeyCount: true } });
    expect(full.peers.map((p) => [p.id, p.isLeader, p.isLearner, p.isLocal])).toEqual([
      ["n1", true, false, true],
      ["n2", false, false, false],
      ["n3", false, true, false],
    ]);
    expect(full.peers[0]!.raft!.meta).toBeInstanceOf(Map);
    expect([...full.peers[0]!.raft!.meta]).toEqual([["state", "Leader"], ["term", "3"], ["ключ", "значение"]]);
    expect(full.peers[0]!.fsm).toEqual({ lsmSize: 1 << 20, vlogSize: 0, keysCount: 1000 });
    expect(full.peers[1]!.raft).toBeUndefined();

    const bare = await client.clusterStatsAsync({});
    expect(bare.peers[0]!.raft).toBeUndefined();
    expect(bare.peers[0]!.fsm).toBeUndefined();
  });

  test("Join, including the grpc_addr extension, and its error status", async () => {
    expect(await client.joinAsync({ id: "localhost:9502", addr: "localhost:9602" })).toEqual({
      leaderInfo: { leaderAddr: "localhost:9502", leaderId: "localhost:9502@localhost:9602", term: 2 },
      joinedAt: 17,
    });
    const r = await client.joinAsync({ id: "n2", addr: "10.0.0.2:9602", grpcAddr: "10.0.0.2:9502" });
    expect(r.leaderInfo!.leaderAddr).toBe("10.0.0.2:9502");
    expectStatus(await rejection(client.joinAsync({ addr: "x" })), grpc.status.INVALID_ARGUMENT);
  });

  test("RemoveMember (rbkv extension) and its error statuses", async () => {
    const before = reached.removeMember;
    expect(await client.removeMemberAsync({ id: "n3" })).toEqual({ leaderInfo: { leaderAddr: "127.0.0.1:9501", leaderId: "not n3", term: 4 } });
    expectStatus(await rejection(client.removeMemberAsync({})), grpc.status.INVALID_ARGUMENT);
    expectStatus(await rejection(client.removeMemberAsync({ id: "stranger" })), grpc.status.NOT_FOUND);
    expect(reached.removeMember - before).toBe(3);
  });

  test("the grpc-js call object and status event of the callback form (as run.ts uses it)", async () => {
    const status = await new Promise<grpc.StatusObject>((resolve) => {
      const call = client.join({ id: "a", addr: "b" }, new grpc.Metadata(), { deadline: Date.now() + 5000 }, () => {});
      call.on("status", resolve);
    });
    expect(status.code).toBe(grpc.status.OK);
  });
});

describe("Range, Txn, Compact, OpenSession, CloseSession (rbkv extensions)", () => {
  test("Range: the request's fields reach the handler, the response's come back", async () => {
    const r = await client.rangeAsync({ key: s("a/"), prefix: true, limit: 1, reverse: true, version: 5 }, { deadline: Date.now() + 5000 });
    expect(r).toEqual({ kvs: [{ key: s("a/"), value: s("reverse=true"), meta: 0, version: 3, createVersion: 2, expireAt: 0 }], more: true, count: 7, version: 5 });
    const viaCallback = await new Promise<unknown>((resolve, reject) => client.range({ key: s("b") }, (err, res) => (err ? reject(err) : resolve(res))));
    expect(viaCallback).toMatchObject({ more: false, version: 99 });
  });

  test("Txn: compares and the oneof ops round trip, one result per op", async () => {
    const put = { op: { $case: "put" as const, value: { key: s("k"), value: s("v"), ttl: { seconds: 1 } } } };
    const del = { op: { $case: "delete" as const, value: { key: s("a"), rangeEnd: s("b") } } };
    const get = { op: { $case: "range" as const, value: { key: s("g") } } };
    const ok = await client.txnAsync({ success: [put, del, get], sessionId: 8, seq: 3 });
    expect(ok.succeeded).toBe(true);
    expect(ok.version).toBe(13);
    expect(ok.responses.map((r) => r.result?.$case)).toEqual(["put", "delete", "range"]);
    expect(ok.responses[0]!.result).toEqual({ $case: "put", value: { version: 13 } });
    expect(ok.responses[1]!.result).toEqual({ $case: "delete", value: { deleted: 8 } });
    expect(ok.responses[2]!.result).toMatchObject({ $case: "range", value: { count: 1, kvs: [{ key: s("g") }] } });
    const failed = await client.txnAsync({ compare: [{ key: s("k"), target: 0, result: 1, version: 4 }], success: [put], failure: [get] });
    expect(failed.succeeded).toBe(false);
    expect(failed.responses.map((r) => r.result?.$case)).toEqual(["range"]);
  });

  test("Compact, OpenSession, CloseSession and their error statuses", async () => {
    expect(await client.compactAsync({ version: 12 })).toEqual({ compacted: 12 });
    expectStatus(await rejection(client.compactAsync({})), grpc.status.OUT_OF_RANGE);
    expect(await client.openSessionAsync({ ttl: { seconds: 30 } })).toEqual({ sessionId: 41, ttl: { seconds: 30, nanos: 0 } });
    expect(await client.openSessionAsync()).toEqual({ sessionId: 41, ttl: { seconds: 300, nanos: 0 } });
    expect(await client.closeSessionAsync({ sessionId: 41 })).toEqual({});
    const e = expectStatus(await rejection(client.closeSessionAsync({ sessionId: 5 })), grpc.status.FAILED_PRECONDITION);
    expect(e.details).toBe("session 5 is unknown");
  });
});

describe("garbage requests", () => {
  // A plain grpc-js client whose serializer sends the given bytes as they are.
  const raw = (): grpc.Client => new grpc.Client(address, grpc.credentials.createInsecure());
  const passThrough = (b: Buffer): Buffer => b;

  const garbage = [
    "0affffffff0f", // a length far beyond the message
    "08", // a truncated varint
    "0e", // wire type 6
    "0c08", // end group without start group
    "0001", // field number 0
    "1a020a05616263", // kv's key overruns kv
    "08ffffffffffffffffffff01", // an 11-byte varint
    "0a03c328ff", // (for Watch: watcher_id is not UTF-8)
  ];

  test("unary: each garbage request gets an error status, no handler runs, the server keeps serving", async () => {
    const c = raw();
    try {
      const before = reached.execute;
      for (const h of garbage.slice(0, 7)) {
        const err = await new Promise<grpc.ServiceError | null>((resolve) => {
          c.makeUnaryRequest(RbdkvPaths.execute, passThrough, decodeCommandResponse, Buffer.from(h, "hex"), (e) => resolve(e));
        });
        expect(err).not.toBeNull();
        // grpc-js answers a request its deserializer rejects with INTERNAL ("Error deserializing request").
        expect([grpc.status.INTERNAL, grpc.status.INVALID_ARGUMENT]).toContain(err!.code);
        expect(err!.details).toMatch(/deseriali/i);
      }
      expect(reached.execute).toBe(before);

      // Random bytes: whatever happens, the answer is a status, not a crash.
      let seed = 12345;
      for (let i = 0; i < 50; i++) {
        const b = Buffer.alloc(1 + (i % 40));
        for (let j = 0; j < b.length; j++) b[j] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
        await new Promise<void>((resolve) => c.makeUnaryRequest(RbdkvPaths.execute, passThrough, decodeCommandResponse, b, () => resolve()));
      }

      // A well-formed request through the same raw channel still works, and so does the typed client.
      const ok = await new Promise<CommandResponse>((resolve, reject) => {
        c.makeUnaryRequest(RbdkvPaths.execute, passThrough, decodeCommandResponse, encodeCommand(Command.create({ op: OpType.Put, kv: { key: s("z") } })), (e, r) => (e ? reject(e) : resolve(r!)));
      });
      expect(ok.version).toBe(42);
      expect((await client.leaderInfoAsync()).term).toBe(3);
    } finally {
      c.close();
    }
  });

  test("server streaming: a garbage WatchRequest ends the stream with an error status", async () => {
    const c = raw();
    try {
      const before = reached.watch;
      for (const h of ["0a03c328ff", "0affffffff0f", "12"]) {
        const stream = c.makeServerStreamRequest(RbdkvPaths.watch, passThrough, decodeWatchResponse, Buffer.from(h, "hex"));
        const { messages, error } = await collect(stream);
        expect(messages.length).toBe(0);
        expect([grpc.status.INTERNAL, grpc.status.INVALID_ARGUMENT]).toContain(error!.code);
      }
      expect(reached.watch).toBe(before);
      const { messages } = await collect(client.watch({ watcherId: "after-garbage", eventCapacity: 2 }));
      expect(messages.length).toBe(2);
    } finally {
      c.close();
    }
  });

  test("a response the client cannot decode becomes INTERNAL on the client", async () => {
    // A server whose Execute answers with bytes that are not a CommandResponse.
    const bad = new grpc.Server();
    bad.addService(
      { execute: { ...RbdkvService.execute, responseSerialize: () => Buffer.from("0affffffff0f", "hex") } },
      { execute: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => cb(null, {}) },
    );
    const addr = await listen(bad);
    const c = createRbdkvClient(addr);
    try {
      const e = expectStatus(await rejection(c.executeAsync({ op: OpType.Get, kv: { key: s("k") } })), grpc.status.INTERNAL);
      expect(e.details).toMatch(/protobuf decode rbdkv.CommandResponse: premature EOF/);
    } finally {
      c.close();
      bad.forceShutdown();
    }
  });
});

describe("service definition", () => {
  test("paths, streaming flags and names", () => {
    expect(Object.values(RbdkvService).map((m) => [m.path, m.originalName, m.requestStream, m.responseStream])).toEqual([
      ["/rbdkv.Rbdkv/Execute", "Execute", false, false],
      ["/rbdkv.Rbdkv/Watch", "Watch", false, true],
      ["/rbdkv.Rbdkv/LeaderInfo", "LeaderInfo", false, false],
      ["/rbdkv.Rbdkv/ClusterStats", "ClusterStats", false, false],
      ["/rbdkv.Rbdkv/Join", "Join", false, false],
      ["/rbdkv.Rbdkv/RemoveMember", "RemoveMember", false, false],
      ["/rbdkv.Rbdkv/Range", "Range", false, false],
      ["/rbdkv.Rbdkv/Txn", "Txn", false, false],
      ["/rbdkv.Rbdkv/Compact", "Compact", false, false],
      ["/rbdkv.Rbdkv/OpenSession", "OpenSession", false, false],
      ["/rbdkv.Rbdkv/CloseSession", "CloseSession", false, false],
      ["/rbdkv.Rbdkv/MemberList", "MemberList", false, false],
      ["/rbdkv.Rbdkv/MemberAdd", "MemberAdd", false, false],
      ["/rbdkv.Rbdkv/MemberPromote", "MemberPromote", false, false],
      ["/rbdkv.Rbdkv/MemberUpdate", "MemberUpdate", false, false],
      ["/rbdkv.Rbdkv/TransferLeadership", "TransferLeadership", false, false],
      ["/rbdkv.Rbdkv/Status", "Status", false, false],
      ["/rbdkv.Rbdkv/Snapshot", "Snapshot", false, true],
    ]);
    expect(Object.values(RbdkvPaths) as string[]).toEqual(Object.values(RbdkvService).map((m) => m.path));
  });

  test("the cluster RPCs: unary promise forms and the Snapshot stream", async () => {
    const c = createRbdkvClient(address);
    try {
      const list = await c.memberListAsync();
      expect(list.members[0]!.matchIndex).toBe(9_007_199_254_740_991);
      expect((await c.statusAsync()).logDbSize).toBe(4096);
      expectStatus(await rejection(c.memberAddAsync({ id: "n2" })), grpc.status.FAILED_PRECONDITION);
      const chunks: string[] = [];
      for await (const chunk of c.snapshot({})) chunks.push(`${td.decode((chunk as SnapshotChunk).data)}@${(chunk as SnapshotChunk).version}`);
      expect(chunks).toEqual(["image-1@7", "image-2@7"]);
    } finally {
      c.close();
    }
  });

  test("handlers may also be named after the proto methods (Execute, ...)", async () => {
    const srv = new grpc.Server();
    srv.addService(RbdkvService, {
      LeaderInfo: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => cb(null, { leaderId: "pascal", term: 1 }),
    });
    const addr = await listen(srv);
    const c = createRbdkvClient(addr);
    try {
      expect(await c.leaderInfoAsync({})).toEqual({ leaderAddr: "", leaderId: "pascal", term: 1 });
      // Methods without a handler answer UNIMPLEMENTED.
      expectStatus(await rejection(c.joinAsync({ id: "x" })), grpc.status.UNIMPLEMENTED);
    } finally {
      c.close();
      srv.forceShutdown();
    }
  });
});

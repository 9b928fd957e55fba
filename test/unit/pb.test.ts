// The hand-written protobuf codec (src/server/pb.ts) against protoc's bytes (golden vectors in
// test/fixtures/pb, made by generate.sh), plus round trips, unknown fields, range checks and
// fuzzing: a decoder may only ever return a message or throw PbDecodeError.

import { describe, expect, test } from "bun:test";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import * as pb from "../../src/server/pb.ts";
import { EventType, OpType, PbDecodeError, PbEncodeError, ReadConsistency } from "../../src/server/pb.ts";
import { Prng } from "../sim/prng.ts";

const FIXTURES = join(import.meta.dir, "../fixtures/pb/cases");

// ---------------------------------------------------------------------------------------------
// Helpers

interface Codec {
  enc: (m: any) => Uint8Array;
  dec: (b: Uint8Array) => unknown;
}

const codecs: Record<string, Codec> = {
  "google.protobuf.Duration": { enc: pb.encodeDuration, dec: pb.decodeDuration },
  "rbdkv.KV": { enc: pb.encodeKV, dec: pb.decodeKV },
  "rbdkv.Command": { enc: pb.encodeCommand, dec: pb.decodeCommand },
  "rbdkv.CommandResponse": { enc: pb.encodeCommandResponse, dec: pb.decodeCommandResponse },
  "rbdkv.WatchRequest": { enc: pb.encodeWatchRequest, dec: pb.decodeWatchRequest },
  "rbdkv.Event": { enc: pb.encodePbEvent, dec: pb.decodePbEvent },
  "rbdkv.WatchResponse": { enc: pb.encodeWatchResponse, dec: pb.decodeWatchResponse },
  "rbdkv.LeaderRequest": { enc: pb.encodeLeaderRequest, dec: pb.decodeLeaderRequest },
  "rbdkv.LeaderInfoResponse": { enc: pb.encodeLeaderInfoResponse, dec: pb.decodeLeaderInfoResponse },
  "rbdkv.WithSize": { enc: pb.encodeWithSize, dec: pb.decodeWithSize },
  "rbdkv.ClusterStatsRequest": { enc: pb.encodeClusterStatsRequest, dec: pb.decodeClusterStatsRequest },
  "rbdkv.RaftMeta": { enc: pb.encodeRaftMeta, dec: pb.decodeRaftMeta },
  "rbdkv.StorageStats": { enc: pb.encodeStorageStats, dec: pb.decodeStorageStats },
  "rbdkv.Peer": { enc: pb.encodePeer, dec: pb.decodePeer },
  "rbdkv.ClusterStatsResponse": { enc: pb.encodeClusterStatsResponse, dec: pb.decodeClusterStatsResponse },
  "rbdkv.JoinRequest": { enc: pb.encodeJoinRequest, dec: pb.decodeJoinRequest },
  "rbdkv.JoinResponse": { enc: pb.encodeJoinResponse, dec: pb.decodeJoinResponse },
  "rbdkv.RemoveMemberRequest": { enc: pb.encodeRemoveMemberRequest, dec: pb.decodeRemoveMemberRequest },
  "rbdkv.RemoveMemberResponse": { enc: pb.encodeRemoveMemberResponse, dec: pb.decodeRemoveMemberResponse },
};
const allDecoders = Object.entries(codecs).map(([name, c]) => [name, c.dec] as const);

const te = new TextEncoder();
const s = (text: string): Uint8Array => te.encode(text);
const bytes = (...xs: number[]): Uint8Array => new Uint8Array(xs);
const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
const unhex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, "hex"));

function isDefault(v: unknown): boolean {
  return (
    v === undefined ||
    v === 0 ||
    v === "" ||
    v === false ||
    (v instanceof Uint8Array && v.length === 0) ||
    (Array.isArray(v) && v.length === 0) ||
    (v instanceof Map && v.size === 0)
  );
}

/**
 * `actual` (a decoded message) holds exactly what `expected` (an Init) says: every field given
 * there equals it, recursively; every other field is its default (a sub-message: absent).
 */
function expectMatches(actual: unknown, expected: unknown, path = "$"): void {
  const fail = (why: string): never => {
    throw new Error(`${path}: ${why}`);
  };
  if (expected instanceof Uint8Array) {
    if (!(actual instanceof Uint8Array)) fail(`expected bytes, got ${String(actual)}`);
    if (hex(actual as Uint8Array) !== hex(expected)) fail(`bytes ${hex(actual as Uint8Array)} != ${hex(expected)}`);
    return;
  }
  if (Array.isArray(expected)) {
    if (!Array.isArray(actual)) fail("expected an array");
    const a = actual as unknown[];
    if (a.length !== expected.length) fail(`length ${a.length} != ${expected.length}`);
    expected.forEach((e, i) => expectMatches(a[i], e, `${path}[${i}]`));
    return;
  }
  if (actual instanceof Map) {
    const want = expected instanceof Map ? [...expected] : Object.entries(expected as object);
    const got = [...actual];
    if (JSON.stringify(got) !== JSON.stringify(want)) fail(`map ${JSON.stringify(got)} != ${JSON.stringify(want)}`);
    return;
  }
  if (expected !== null && typeof expected === "object") {
    if (actual === null || typeof actual !== "object") fail(`expected a message, got ${String(actual)}`);
    const a = actual as Record<string, unknown>;
    const e = expected as Record<string, unknown>;
    for (const k of Object.keys(e)) if (!(k in a)) fail(`unexpected field ${k} in the expectation`);
    for (const k of Object.keys(a)) {
      if (e[k] !== undefined) expectMatches(a[k], e[k], `${path}.${k}`);
      else if (!isDefault(a[k])) fail(`.${k} should be default, is ${String(a[k])}`);
    }
    return;
  }
  if (!Object.is(actual, expected)) fail(`${String(actual)} != ${String(expected)}`);
}

/** Runs `f`, which must throw PbDecodeError (and nothing else). */
function expectDecodeError(f: () => unknown): PbDecodeError {
  try {
    f();
  } catch (err) {
    if (err instanceof PbDecodeError) return err;
    throw new Error(`expected PbDecodeError, got ${String(err)}`);
  }
  throw new Error("expected PbDecodeError, but decoding succeeded");
}

/** Decodes with every decoder: each returns or throws PbDecodeError. Returns how many threw. */
function decodeAllSafely(buf: Uint8Array): number {
  let errors = 0;
  for (const [name, dec] of allDecoders) {
    try {
      dec(buf);
    } catch (err) {
      if (!(err instanceof PbDecodeError)) throw new Error(`${name} threw ${String(err)} on ${hex(buf)}`);
      // The decoders' catch-all turns internal bugs into PbDecodeError "unexpected ...": none may occur.
      if (/unexpected/.test(err.message)) throw new Error(`${name}: internal error ${String(err.cause)} on ${hex(buf)}`);
      errors++;
    }
  }
  return errors;
}

/** Reference varint (BigInt) for cross-checks. */
function refVarint(v: bigint): string {
  let out = "";
  let x = BigInt.asUintN(64, v);
  do {
    let byte = Number(x & 0x7fn);
    x >>= 7n;
    if (x !== 0n) byte |= 0x80;
    out += byte.toString(16).padStart(2, "0");
  } while (x !== 0n);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Golden vectors: for each fixture, the Init our encoder must turn into protoc's exact bytes,
// and which our decoder must read back from them. `as` + `expect`: decode only (the bytes come
// from a richer schema in future.proto). `as` + `error`: decoding must fail.

type GoldenCase = { init: unknown } | { as: string; expect: unknown } | { as: string; error: RegExp };

const bin = bytes(0x00, 0xff, 0x62, 0x69, 0x6e, 0x01); // "\000\377bin\x01"

const golden: Record<string, GoldenCase> = {
  "Command.empty": { init: {} },
  "Command.get_serializable": { init: { op: OpType.Get, rc: ReadConsistency.Serializable, kv: { key: s("user/42") } } },
  "Command.get_at_version": { init: { op: OpType.Get, rc: ReadConsistency.Linearizable, kv: { key: s("k"), version: 1234567 } } },
  "Command.put_ttl": { init: { op: OpType.Put, kv: { key: bin, value: s("hello"), meta: 7, ttl: { seconds: 30, nanos: 500_000_000 } } } },
  "Command.put_empty_ttl": { init: { op: OpType.Put, kv: { key: s("a"), ttl: {} } } },
  "Command.delete": { init: { op: OpType.Delete, kv: { key: s("gone") } } },
  "Command.empty_kv": { init: { op: OpType.Get, kv: {} } },
  "Command.large_values": {
    init: {
      op: OpType.Put,
      rc: ReadConsistency.Linearizable,
      kv: { key: s("big"), version: Number.MAX_SAFE_INTEGER, value: s("0123456789".repeat(30)), meta: 0xffffffff, ttl: { seconds: -5, nanos: -1 } },
    },
  },
  "Command.unknown_enums": { init: { op: 7, rc: -1 } },

  "CommandResponse.empty": { init: {} },
  "CommandResponse.get": { init: { key: s("user/42"), value: s('{"name":"ann"}'), meta: 1, version: 42 } },
  "CommandResponse.put_version_only": { init: { version: 300 } },
  "CommandResponse.max_version": { init: { key: bytes(0), value: s("v".repeat(200)), meta: 128, version: Number.MAX_SAFE_INTEGER } },

  "KV.full": { init: { key: s("k1"), version: 16384, value: new Uint8Array(0), meta: 255, ttl: { seconds: 86400 } } },
  "Duration.ms": { init: { seconds: 1, nanos: 250_000_000 } },
  "Duration.negative": { init: { seconds: -Number.MAX_SAFE_INTEGER, nanos: -999_999_999 } },

  "WatchRequest.empty": { init: {} },
  "WatchRequest.full": {
    init: { watcherId: "w-1", prefixes: [s("users/"), new Uint8Array(0), bytes(0xff, 0x00)], eventCapacity: 1000, leaderRequired: true },
  },
  "WatchRequest.unicode_id": { init: { watcherId: "观察者-ü-😀", eventCapacity: 2 ** 31 } },

  "Event.empty": { init: {} },
  "Event.put": {
    init: { type: EventType.Put, key: s("users/1"), value: s("ann"), meta: 3, version: 77, expireAt: 1735689600123, watcherId: "w-1" },
  },
  "Event.delete": { init: { type: EventType.Delete, key: s("users/1"), version: 78, watcherId: "w-1" } },
  "Event.negative_expire": { init: { type: EventType.Put, expireAt: -1 } },

  "WatchResponse.empty": { init: {} },
  "WatchResponse.event": {
    init: { watcherId: "w-1", event: { type: EventType.Put, key: s("a/b"), value: s("1"), version: 5, watcherId: "w-1" } },
  },
  "WatchResponse.empty_event": { init: { event: {} } },

  "LeaderRequest.empty": { init: {} },
  "LeaderInfoResponse.empty": { init: {} },
  "LeaderInfoResponse.full": { init: { leaderAddr: "127.0.0.1:9501", leaderId: "localhost:9501", term: 3 } },
  "LeaderInfoResponse.big_term": { init: { leaderId: "n1", term: 2 ** 32 } },

  "ClusterStatsRequest.empty": { init: {} },
  "ClusterStatsRequest.full": { init: { withRaft: true, withFsm: { exactSize: true, withKeyCount: true } } },
  "ClusterStatsRequest.empty_with_fsm": { init: { withFsm: {} } },
  "WithSize.key_count": { init: { withKeyCount: true } },

  "ClusterStatsResponse.empty": { init: {} },
  "ClusterStatsResponse.three_peers": {
    init: {
      peers: [
        {
          id: "localhost:9501",
          isLeader: true,
          isLocal: true,
          raft: { meta: new Map([["state", "Leader"], ["term", "3"], ["commit_index", "1042"]]) },
          fsm: { lsmSize: 1048576, vlogSize: 0, keysCount: 1000 },
        },
        { id: "localhost:9502" },
        { id: "localhost:9503", isLearner: true, raft: {}, fsm: {} },
      ],
    },
  },
  // A plain object works as a map too (insertion order; "" and non-ASCII keys).
  "RaftMeta.map": { init: { meta: { zeta: "1", alpha: "", "": "empty key", ключ: "значение" } } },
  "StorageStats.values": { init: { lsmSize: Number.MAX_SAFE_INTEGER, vlogSize: -1, keysCount: 127 } },
  "Peer.full": { init: { id: "n2", isLearner: true, isLeader: false, isLocal: true, raft: { meta: new Map([["k", "v"]]) }, fsm: { keysCount: 5 } } },

  "JoinRequest.seed": { init: { id: "localhost:9502", addr: "localhost:9602" } },
  "JoinRequest.with_grpc_addr": { init: { id: "node-2", addr: "10.0.0.2:9602", grpcAddr: "10.0.0.2:9502" } },
  "JoinResponse.empty": { init: {} },
  "JoinResponse.leader": { init: { leaderInfo: { leaderAddr: "localhost:9501", leaderId: "localhost:9501", term: 2 } } },
  "JoinResponse.empty_leader": { init: { leaderInfo: {} } },
  "JoinResponse.joined_at": { init: { leaderInfo: { leaderAddr: "127.0.0.1:9501", leaderId: "127.0.0.1:9501", term: 3 }, joinedAt: 4_294_967_301 } },
  "RemoveMemberRequest.id": { init: { id: "127.0.0.1:9503" } },
  "RemoveMemberRequest.empty": { init: {} },
  "RemoveMemberResponse.leader": { init: { leaderInfo: { leaderAddr: "127.0.0.1:9501", leaderId: "127.0.0.1:9501", term: 7 } } },

  "future.Command.unknown_fields": {
    as: "rbdkv.Command",
    expect: { op: OpType.Put, rc: ReadConsistency.Serializable, kv: { key: s("k"), version: 9, value: s("v"), meta: 1, ttl: { seconds: 60 } } },
  },
  "future.CommandRepeated.merge": {
    as: "rbdkv.Command",
    expect: { op: 2, rc: 1, kv: { key: s("first"), version: 5, value: s("second"), ttl: { seconds: 10, nanos: 7 } } },
  },
  "future.CommandWrongTypes.skipped": { as: "rbdkv.Command", expect: {} },
  "future.ClusterStatsResponse.unknown_fields": {
    as: "rbdkv.ClusterStatsResponse",
    expect: { peers: [{ id: "a", isLeader: true, raft: { meta: new Map([["k", "later wins"]]) }, fsm: { lsmSize: -2 } }] },
  },
  "future.WatchResponse.unknown_fields": {
    as: "rbdkv.WatchResponse",
    expect: { watcherId: "w", event: { type: EventType.Delete, key: s("k"), version: 3 } },
  },
  "future.Overflow.uint64_max": { as: "rbdkv.KV", error: /uint64 value exceeds 2\^53-1/ },
  "future.Overflow.uint64_2p53": { as: "rbdkv.KV", error: /uint64 value exceeds 2\^53-1/ },
  "future.Overflow.int64_min": { as: "rbdkv.StorageStats", error: /int64 value below/ },
  "future.Overflow.int64_neg_2p53": { as: "rbdkv.StorageStats", error: /int64 value below/ },
};

interface Fixture {
  name: string;
  type: string;
  bytes: Uint8Array;
}

function loadFixtures(): Fixture[] {
  return readdirSync(FIXTURES)
    .filter((f) => f.endsWith(".txtpb"))
    .sort()
    .map((f) => {
      const name = f.slice(0, -".txtpb".length);
      const text = readFileSync(join(FIXTURES, f), "utf8");
      const type = /^# *(\S+)/.exec(text)![1]!;
      const bytes = unhex(readFileSync(join(FIXTURES, `${name}.hex`), "utf8").trim());
      return { name, type, bytes };
    });
}

const fixtures = loadFixtures();

describe("golden vectors from protoc", () => {
  test("every fixture has a case and every case a fixture", () => {
    expect(fixtures.map((f) => f.name).sort()).toEqual(Object.keys(golden).sort());
    expect(fixtures.length).toBeGreaterThanOrEqual(50);
    // Every message type is covered by at least one encode vector.
    const encoded = new Set(fixtures.filter((f) => "init" in golden[f.name]!).map((f) => f.type));
    expect([...encoded].sort()).toEqual(Object.keys(codecs).sort());
  });

  for (const f of fixtures) {
    const c = golden[f.name];
    if (c === undefined) continue;
    if ("init" in c) {
      test(`${f.name}: our encoding is protoc's, byte for byte; we decode protoc's bytes`, () => {
        const codec = codecs[f.type]!;
        expect(hex(codec.enc(c.init))).toBe(hex(f.bytes));
        const decoded = codec.dec(f.bytes);
        expectMatches(decoded, c.init);
        expect(hex(codec.enc(decoded))).toBe(hex(f.bytes));
      });
    } else if ("expect" in c) {
      test(`${f.name}: decoded as ${c.as}`, () => {
        const codec = codecs[c.as]!;
        expectMatches(codec.dec(f.bytes), c.expect);
      });
    } else {
      test(`${f.name}: decoding as ${c.as} fails`, () => {
        const err = expectDecodeError(() => codecs[c.as]!.dec(f.bytes));
        expect(err.message).toMatch(c.error);
      });
    }
  }

  test("every strict prefix of every vector decodes or throws PbDecodeError", () => {
    let failures = 0;
    for (const f of fixtures) {
      for (let n = 0; n < f.bytes.length; n++) failures += decodeAllSafely(f.bytes.subarray(0, n));
    }
    expect(failures).toBeGreaterThan(1000);
  });

  test("a Command cut inside its kv field is always an error", () => {
    const full = fixtures.find((f) => f.name === "Command.put_ttl")!.bytes; // 08 02 | 1a 1b ...
    expect(pb.decodeCommand(full.subarray(0, 0))).toEqual({ op: 0, rc: 0, kv: undefined });
    expect(pb.decodeCommand(full.subarray(0, 2))).toEqual({ op: 2, rc: 0, kv: undefined });
    expectDecodeError(() => pb.decodeCommand(full.subarray(0, 1)));
    for (let n = 3; n < full.length; n++) expectDecodeError(() => pb.decodeCommand(full.subarray(0, n)));
  });
});

// ---------------------------------------------------------------------------------------------

describe("round trips", () => {
  test("empty messages encode to zero bytes and decode to all defaults", () => {
    for (const [name, c] of Object.entries(codecs)) {
      const b = c.enc({});
      expect(b.length).toBe(0);
      const m = c.dec(new Uint8Array(0));
      expectMatches(m, {}, name);
      expect(c.enc(m).length).toBe(0);
    }
    expect(pb.decodeCommand(new Uint8Array(0))).toEqual({ op: 0, rc: 0, kv: undefined });
    expect(pb.decodeWatchRequest(new Uint8Array(0))).toEqual({ watcherId: "", prefixes: [], eventCapacity: 0, leaderRequired: false });
  });

  test("explicit default values are omitted, as protoc does", () => {
    const b = pb.encodeCommand({ op: 0, rc: 0, kv: { key: new Uint8Array(0), version: 0, value: new Uint8Array(0), meta: 0 } });
    expect(hex(b)).toBe("1a00"); // only the (present) kv sub-message
    expect(hex(pb.encodePeer({ id: "", isLearner: false, isLeader: false, isLocal: false }))).toBe("");
    expect(hex(pb.encodeStorageStats({ lsmSize: -0, vlogSize: 0 }))).toBe("");
  });

  test("decoded field shapes: total scalars, absent sub-messages undefined", () => {
    const m = pb.decodeCommand(pb.encodeCommand({ op: OpType.Put, kv: { key: s("k"), value: s("v") } }));
    expect(Object.keys(m)).toEqual(["op", "rc", "kv"]);
    expect(Object.keys(m.kv!)).toEqual(["key", "version", "value", "meta", "ttl"]);
    expect(m.kv!.ttl).toBeUndefined();
    const j = pb.decodeJoinResponse(new Uint8Array(0));
    expect(j).toEqual({ leaderInfo: undefined, joinedAt: 0 });
  });

  test("varint boundaries of uint64 / int64 / uint32 / enum fields match a BigInt reference", () => {
    const unsigned = [0, 1, 127, 128, 255, 300, 16383, 16384, 2 ** 21 - 1, 2 ** 21, 2 ** 28 - 1, 2 ** 28, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32];
    unsigned.push(2 ** 35 - 1, 2 ** 35, 2 ** 42 - 1, 2 ** 42, 2 ** 49 - 1, 2 ** 49, 2 ** 52, Number.MAX_SAFE_INTEGER);
    for (const v of unsigned) {
      const tail = v === 0 ? "" : refVarint(BigInt(v));
      // uint64 version = 4 (tag 0x20)
      const r = pb.encodeCommandResponse({ version: v });
      expect(hex(r)).toBe(v === 0 ? "" : `20${tail}`);
      expect(pb.decodeCommandResponse(r).version).toBe(v);
      // int64 lsm_size = 1 (tag 0x08), both signs
      for (const x of [v, -v]) {
        const b = pb.encodeStorageStats({ lsmSize: x });
        expect(hex(b)).toBe(x === 0 ? "" : `08${refVarint(BigInt(x))}`);
        expect(pb.decodeStorageStats(b).lsmSize).toBe(x === 0 ? 0 : x);
      }
      if (v <= 0xffffffff) {
        const m = pb.encodeCommandResponse({ meta: v });
        expect(hex(m)).toBe(v === 0 ? "" : `18${tail}`);
        expect(pb.decodeCommandResponse(m).meta).toBe(v);
      }
      if (v <= 0x7fffffff) {
        for (const x of [v, -v]) {
          const c = pb.encodeCommand({ op: x });
          expect(hex(c)).toBe(x === 0 ? "" : `08${refVarint(BigInt(x))}`);
          expect(pb.decodeCommand(c).op).toBe(x === 0 ? 0 : x);
        }
      }
    }
    expect(hex(pb.encodeCommand({ op: -(2 ** 31) }))).toBe(`08${refVarint(-(2n ** 31n))}`);
  });

  test("decoders accept the longest legal varint forms (non-minimal encodings)", () => {
    // version = 1 written in 10 bytes; meta (uint32) given 64 bits keeps the low 32.
    expect(pb.decodeCommandResponse(unhex("20818080808080808000")).version).toBe(1);
    expect(pb.decodeCommandResponse(unhex("18ffffffffffffffffff01")).meta).toBe(0xffffffff);
    expect(pb.decodeCommandResponse(unhex("188180808010")).meta).toBe(1); // 2^32 + 1 -> 1
    // an enum from a 5-byte varint of -1 as uint32 (as some encoders write int32) reads as -1
    expect(pb.decodeCommand(unhex("08ffffffff0f")).op).toBe(-1);
    expect(pb.decodeWithSize(unhex("088080808080808080800110ff01")).exactSize).toBe(true);
  });

  test("strings: multi-byte, surrogate pairs, BOM, long non-ASCII; lone surrogates become U+FFFD", () => {
    for (const id of ["", "a", "ü", "€", "😀", "\uFEFFbom", "mixed ascii and 中文 and 😀 ".repeat(20), "x".repeat(70) + "é"]) {
      const b = pb.encodeJoinRequest({ id });
      const utf8 = te.encode(id);
      expect(hex(b)).toBe(id === "" ? "" : `0a${refVarint(BigInt(utf8.length))}${hex(utf8)}`);
      expect(pb.decodeJoinRequest(b).id).toBe(id);
    }
    const lone = pb.encodeJoinRequest({ id: "a\uD800b\uDC00" });
    expect(hex(lone)).toBe(`0a08${hex(te.encode("a\uD800b\uDC00"))}`);
    expect(pb.decodeJoinRequest(lone).id).toBe("a\uFFFDb\uFFFD");
  });

  test("bytes fields are views into the input (no copy)", () => {
    const buf = pb.encodeCommand({ op: OpType.Put, kv: { key: s("key"), value: s("value") } });
    const m = pb.decodeCommand(buf);
    expect(m.kv!.key.buffer).toBe(buf.buffer);
    expect(new TextDecoder().decode(m.kv!.value)).toBe("value");
  });

  test("maps: Map and plain-object inputs, later duplicate keys win, __proto__ is an ordinary key", () => {
    const fromMap = pb.encodeRaftMeta({ meta: new Map([["a", "1"], ["__proto__", "x"]]) });
    const fromObj = pb.encodeRaftMeta({ meta: JSON.parse('{"a":"1","__proto__":"x"}') as Record<string, string> });
    expect(hex(fromObj)).toBe(hex(fromMap));
    const m = pb.decodeRaftMeta(fromMap).meta;
    expect([...m]).toEqual([["a", "1"], ["__proto__", "x"]]);
    // Two entries for "a": the later wins. An entry with neither key nor value: ("", "").
    const dup = new Uint8Array([...fromMap.subarray(0, 8), ...unhex("2a070a016112023939"), ...unhex("2a00")]);
    expect([...pb.decodeRaftMeta(dup).meta]).toEqual([["a", "99"], ["", ""]]);
  });

  test("a sub-message present twice is merged; a repeated field appends", () => {
    const a = pb.encodeCommand({ kv: { key: s("k"), version: 3 } });
    const b = pb.encodeCommand({ op: OpType.Get, kv: { value: s("v") } });
    const m = pb.decodeCommand(Buffer.concat([a, b]));
    expectMatches(m, { op: OpType.Get, kv: { key: s("k"), version: 3, value: s("v") } });
    const w = pb.decodeWatchRequest(Buffer.concat([pb.encodeWatchRequest({ prefixes: [s("a")] }), pb.encodeWatchRequest({ prefixes: [s("b")] })]));
    expectMatches(w, { prefixes: [s("a"), s("b")] });
  });

  test("seeded random messages of every type round trip", () => {
    const rng = new Prng(20240601);
    let n = 0;
    for (let i = 0; i < 400; i++) {
      for (const [type, gen] of Object.entries(generators)) {
        const init = gen(rng);
        const codec = codecs[type]!;
        const b = codec.enc(init);
        const decoded = codec.dec(b);
        try {
          expectMatches(decoded, init);
        } catch (err) {
          throw new Error(`${type} ${hex(b)}: ${(err as Error).message}`);
        }
        expect(hex(codec.enc(decoded))).toBe(hex(b));
        n++;
      }
    }
    expect(n).toBe(400 * Object.keys(generators).length);
  });

  test("durationFromMs / durationToMs", () => {
    expect(pb.durationFromMs(1500)).toEqual({ seconds: 1, nanos: 500_000_000 });
    expect(pb.durationFromMs(-1500)).toEqual({ seconds: -1, nanos: -500_000_000 });
    expect(pb.durationFromMs(999)).toEqual({ seconds: 0, nanos: 999_000_000 });
    expect(Object.is(pb.durationFromMs(-999).seconds, 0)).toBe(true);
    expect(pb.durationFromMs(0)).toEqual({ seconds: 0, nanos: 0 });
    for (const ms of [0, 1, 999, 1000, 86_400_000, -1, -1001, 2 ** 50]) expect(pb.durationToMs(pb.durationFromMs(ms))).toBe(ms);
    expect(pb.durationToMs({ seconds: 2, nanos: 1_999_999 })).toBe(2001);
    expect(() => pb.durationFromMs(1.5)).toThrow(PbEncodeError);
  });
});

// ---------------------------------------------------------------------------------------------

describe("unknown fields", () => {
  // One unknown field of every wire type, with field numbers from small to the largest.
  const unknowns = [
    "f8ffffff0f00", // field 536870911, varint 0
    "5001", // field 10, varint
    "59" + "0102030405060708", // field 11, fixed64
    "62" + "03616263", // field 12, length-delimited "abc"
    "6b" + "0801" + "73" + "7801" + "74" + "6c", // field 13 group holding a varint and a nested group 14
    "7d" + "01020304", // field 15, fixed32
    "a01f" + "ffffffffffffffffff01", // field 500, 10-byte varint
  ].join("");

  test("are skipped around, before and after known fields, at every nesting level", () => {
    const cmd = { op: OpType.Put, rc: ReadConsistency.Linearizable, kv: { key: s("k"), value: s("v"), ttl: { seconds: 5 } } };
    // Unknowns inside Duration, inside KV, and at the top, in several places.
    const ttl = `${unknowns}0805${unknowns}`;
    const len = (h: string) => refVarint(BigInt(h.length / 2));
    const kv = `${unknowns}0a016b${unknowns}1a0176` + `2a${len(ttl)}${ttl}`;
    const top = `${unknowns}0802${unknowns}1002` + `1a${len(kv)}${kv}${unknowns}`;
    expect(kv.length / 2).toBeGreaterThan(128); // a 2-byte length prefix
    const m = pb.decodeCommand(unhex(top));
    expectMatches(m, cmd);
    // Unknown fields are dropped (not preserved) on re-encoding.
    expect(hex(pb.encodeCommand(m))).toBe(hex(pb.encodeCommand(cmd)));
    for (const [, dec] of allDecoders) dec(unhex(unknowns));
  });

  test("a known field with an unexpected wire type is skipped", () => {
    // op (field 1) as a string, key (KV field 1) as a varint, version (field 2) as fixed64.
    const m = pb.decodeCommand(unhex("0a03616263" + "1a0b" + "0801" + "110100000000000000"));
    expectMatches(m, { kv: {} });
  });
});

// ---------------------------------------------------------------------------------------------

describe("malformed input", () => {
  const cases: [string, string, RegExp][] = [
    ["truncated varint", "08", /truncated/],
    ["truncated varint (continuation at end)", "0880", /truncated/],
    ["varint longer than 10 bytes", "08ffffffffffffffffffff01", /longer than 10 bytes/],
    ["huge length", "0affffffff0f", /overruns/],
    ["length beyond 2^32", "0a8080808080808080ff00", /overruns/],
    ["length past the end", "0a05616263", /overruns/],
    ["nested length past the parent's end", "1a020a05616263", /overruns|truncated/],
    ["field number 0", "0001", /field number 0/],
    ["wire type 6", "0e", /invalid wire type 6/],
    ["wire type 7", "0f", /invalid wire type 7/],
    ["end group without start", "0c", /end group without start group/],
    ["unterminated group", "0b0801", /unterminated group|truncated/],
    ["mismatched end group", "0b14", /mismatched end group/],
    ["truncated fixed64", "09010203", /truncated/],
    ["truncated fixed32", "0d0102", /truncated/],
    ["tag out of range", "8080808080808080800108", /tag out of range/],
  ];
  for (const [what, h, re] of cases) {
    test(`${what} -> PbDecodeError`, () => {
      for (const [, dec] of allDecoders) {
        const err = expectDecodeError(() => dec(unhex(h)));
        expect(err.message).toMatch(re);
        expect(err.name).toBe("PbDecodeError");
      }
    });
  }

  test("a sub-message cannot read past its own length, even if the buffer goes on", () => {
    // kv (2 bytes: "0a 05") claims a 5-byte key that lies outside kv.
    expect(expectDecodeError(() => pb.decodeCommand(unhex("1a020a05616263616263"))).message).toMatch(/overruns the 0 bytes left/);
  });

  test("invalid UTF-8 in a string field is an error (short and long strings)", () => {
    for (const bad of ["c328", "eda080", "ff", "c0af", `${"41".repeat(80)}c3`]) {
      const b = unhex(`0a${(bad.length / 2).toString(16).padStart(2, "0")}${bad}`);
      expect(expectDecodeError(() => pb.decodeWatchRequest(b)).message).toMatch(/UTF-8/);
    }
    // The same bytes in a bytes field are fine.
    expect(hex(pb.decodeCommandResponse(unhex("0a02c328")).key)).toBe("c328");
  });

  test("uint64 above 2^53-1 and int64 beyond ±(2^53-1) are refused with a clear error", () => {
    expect(expectDecodeError(() => pb.decodeCommandResponse(unhex(`20${refVarint(2n ** 53n)}`))).message).toMatch(/uint64 value exceeds 2\^53-1/);
    expect(expectDecodeError(() => pb.decodeStorageStats(unhex(`08${refVarint(2n ** 53n)}`))).message).toMatch(/int64 value exceeds/);
    expect(expectDecodeError(() => pb.decodeStorageStats(unhex(`08${refVarint(-(2n ** 53n))}`))).message).toMatch(/int64 value below/);
    expect(pb.decodeStorageStats(unhex(`08${refVarint(-(2n ** 53n) + 1n)}`)).lsmSize).toBe(-Number.MAX_SAFE_INTEGER);
  });

  test("groups nested deeper than 64 are refused; shallower ones are skipped", () => {
    const nest = (d: number) => unhex("2b".repeat(d) + "2c".repeat(d)); // field 5 groups
    expect(pb.decodeCommand(nest(60))).toEqual({ op: 0, rc: 0, kv: undefined });
    expect(expectDecodeError(() => pb.decodeCommand(nest(65))).message).toMatch(/nested too deep/);
    expectDecodeError(() => pb.decodeCommand(nest(100_000))); // no stack overflow
  });

  test("non-Uint8Array input is a PbDecodeError", () => {
    for (const [, dec] of allDecoders) {
      for (const bad of [undefined, null, "0a00", [10, 0], new ArrayBuffer(2), 5]) expectDecodeError(() => dec(bad as unknown as Uint8Array));
    }
  });

  test("fuzz: thousands of random buffers only ever decode or throw PbDecodeError", () => {
    const rng = new Prng(7);
    let errors = 0;
    let buffers = 0;
    for (let i = 0; i < 4000; i++) {
      const len = rng.chance(0.7) ? rng.int(0, 16) : rng.int(17, 300);
      const b = new Uint8Array(len);
      for (let j = 0; j < len; j++) b[j] = rng.chance(0.3) ? rng.pick([0x08, 0x0a, 0x10, 0x12, 0x1a, 0x2a, 0x80, 0xff, 0x00, 0x01, 0x0b, 0x0c]) : rng.int(0, 255);
      errors += decodeAllSafely(b);
      buffers++;
    }
    expect(buffers).toBe(4000);
    expect(errors).toBeGreaterThan(4000); // most random buffers are not valid messages
  });

  test("fuzz: mutated, truncated and extended valid encodings only decode or throw PbDecodeError", () => {
    const rng = new Prng(99);
    const seeds = fixtures.map((f) => f.bytes).filter((b) => b.length > 0);
    for (let i = 0; i < 3000; i++) {
      const base = rng.pick(seeds);
      let b = new Uint8Array(base);
      const op = rng.int(0, 3);
      if (op === 0) {
        for (let k = rng.int(1, 4); k > 0; k--) b[rng.int(0, b.length - 1)] = rng.int(0, 255);
      } else if (op === 1) {
        b = b.slice(rng.int(0, b.length - 1), rng.int(0, b.length));
      } else if (op === 2) {
        const at = rng.int(0, b.length);
        const extra = Array.from({ length: rng.int(1, 8) }, () => rng.int(0, 255));
        b = new Uint8Array([...b.subarray(0, at), ...extra, ...b.subarray(at)]);
      } else {
        b[rng.int(0, b.length - 1)] ^= 1 << rng.int(0, 7);
      }
      decodeAllSafely(b);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe("encode errors", () => {
  const bad: [string, () => unknown][] = [
    ["uint64 above 2^53-1", () => pb.encodeCommandResponse({ version: 2 ** 53 })],
    ["negative uint64", () => pb.encodeKV({ version: -1 })],
    ["fractional uint64", () => pb.encodeWatchRequest({ eventCapacity: 1.5 })],
    ["NaN uint64", () => pb.encodeLeaderInfoResponse({ term: Number.NaN })],
    ["bigint uint64", () => pb.encodeKV({ version: 5n as unknown as number })],
    ["uint32 above 2^32-1", () => pb.encodeKV({ meta: 2 ** 32 })],
    ["negative uint32", () => pb.encodePbEvent({ meta: -1 })],
    ["int64 beyond 2^53", () => pb.encodeStorageStats({ keysCount: -(2 ** 53) })],
    ["enum beyond int32", () => pb.encodeCommand({ op: 2 ** 31 })],
    ["Duration.nanos beyond int32", () => pb.encodeDuration({ nanos: 2 ** 31 })],
    ["bytes given a string", () => pb.encodeKV({ key: "k" as unknown as Uint8Array })],
    ["string given a number", () => pb.encodeJoinRequest({ id: 5 as unknown as string })],
    ["repeated bytes element not bytes", () => pb.encodeWatchRequest({ prefixes: ["a" as unknown as Uint8Array] })],
    ["map value not a string", () => pb.encodeRaftMeta({ meta: new Map([["a", 1 as unknown as string]]) })],
    ["not an object", () => pb.encodeCommand(null as unknown as pb.CommandInit)],
    ["nested bad value", () => pb.encodeClusterStatsResponse({ peers: [{ fsm: { lsmSize: 0.5 } }] })],
  ];
  for (const [what, f] of bad) {
    test(`${what} -> PbEncodeError`, () => {
      expect(f).toThrow(PbEncodeError);
    });
  }

  test("null/undefined fields are defaults", () => {
    const m = { op: undefined, rc: null, kv: { key: null, ttl: null } } as unknown as pb.CommandInit;
    expect(hex(pb.encodeCommand(m))).toBe("1a00");
  });
});

// ---------------------------------------------------------------------------------------------
// Random message generators (Init form) for the round-trip property test.

type Gen = (r: Prng) => unknown;

const U64_EDGES = [0, 1, 127, 128, 16384, 2 ** 31, 2 ** 32, 2 ** 35, 2 ** 49, Number.MAX_SAFE_INTEGER];
const CHARS = ["a", "Z", "0", "/", " ", "é", "ß", "中", "😀", "\u0000", "\uFEFF", "€"];

function maybe<T>(r: Prng, f: () => T): T | undefined {
  return r.chance(0.7) ? f() : undefined;
}
function u64(r: Prng): number {
  return r.chance(0.5) ? r.pick(U64_EDGES) : Math.floor(r.float() * Number.MAX_SAFE_INTEGER);
}
function i64(r: Prng): number {
  return r.chance(0.5) ? u64(r) : -u64(r) || 0;
}
function u32(r: Prng): number {
  return r.chance(0.3) ? r.pick([0, 1, 127, 128, 0x7fffffff, 0xffffffff]) : r.int(0, 0xffffffff);
}
function i32(r: Prng): number {
  return r.chance(0.5) ? r.int(0, 3) : r.pick([-1, 7, -(2 ** 31), 2 ** 31 - 1, r.int(-1000, 1000)]) || 0;
}
function str(r: Prng): string {
  let out = "";
  for (let n = r.chance(0.2) ? r.int(60, 140) : r.int(0, 12); n > 0; n--) out += r.chance(0.7) ? String.fromCharCode(r.int(0x20, 0x7e)) : r.pick(CHARS);
  return out;
}
function byt(r: Prng): Uint8Array {
  const b = new Uint8Array(r.chance(0.1) ? r.int(128, 400) : r.int(0, 10));
  for (let i = 0; i < b.length; i++) b[i] = r.int(0, 255);
  return b;
}
const genDuration: Gen = (r) => ({ seconds: maybe(r, () => i64(r)), nanos: maybe(r, () => i32(r)) });
const genKV: Gen = (r) => ({
  key: maybe(r, () => byt(r)),
  version: maybe(r, () => u64(r)),
  value: maybe(r, () => byt(r)),
  meta: maybe(r, () => u32(r)),
  ttl: r.chance(0.5) ? genDuration(r) : undefined,
});
const genPbEvent: Gen = (r) => ({
  type: maybe(r, () => i32(r)),
  key: maybe(r, () => byt(r)),
  value: maybe(r, () => byt(r)),
  meta: maybe(r, () => u32(r)),
  version: maybe(r, () => u64(r)),
  expireAt: maybe(r, () => i64(r)),
  watcherId: maybe(r, () => str(r)),
});
const genLeaderInfo: Gen = (r) => ({ leaderAddr: maybe(r, () => str(r)), leaderId: maybe(r, () => str(r)), term: maybe(r, () => u64(r)) });
const genWithSize: Gen = (r) => ({ exactSize: maybe(r, () => r.chance(0.5)), withKeyCount: maybe(r, () => r.chance(0.5)) });
const genRaftMeta: Gen = (r) => {
  const m = new Map<string, string>();
  for (let n = r.int(0, 5); n > 0; n--) m.set(str(r), str(r));
  return { meta: r.chance(0.5) ? m : Object.fromEntries(m) };
};
const genStorageStats: Gen = (r) => ({ lsmSize: maybe(r, () => i64(r)), vlogSize: maybe(r, () => i64(r)), keysCount: maybe(r, () => i64(r)) });
const genPeer: Gen = (r) => ({
  id: maybe(r, () => str(r)),
  isLearner: maybe(r, () => r.chance(0.5)),
  isLeader: maybe(r, () => r.chance(0.5)),
  isLocal: maybe(r, () => r.chance(0.5)),
  raft: r.chance(0.5) ? genRaftMeta(r) : undefined,
  fsm: r.chance(0.5) ? genStorageStats(r) : undefined,
});

const generators: Record<string, Gen> = {
  "google.protobuf.Duration": genDuration,
  "rbdkv.KV": genKV,
  "rbdkv.Command": (r) => ({ op: maybe(r, () => i32(r)), rc: maybe(r, () => i32(r)), kv: r.chance(0.8) ? genKV(r) : undefined }),
  "rbdkv.CommandResponse": (r) => ({ key: maybe(r, () => byt(r)), value: maybe(r, () => byt(r)), meta: maybe(r, () => u32(r)), version: maybe(r, () => u64(r)) }),
  "rbdkv.WatchRequest": (r) => ({
    watcherId: maybe(r, () => str(r)),
    prefixes: maybe(r, () => Array.from({ length: r.int(0, 4) }, () => byt(r))),
    eventCapacity: maybe(r, () => u64(r)),
    leaderRequired: maybe(r, () => r.chance(0.5)),
  }),
  "rbdkv.Event": genPbEvent,
  "rbdkv.WatchResponse": (r) => ({ watcherId: maybe(r, () => str(r)), event: r.chance(0.8) ? genPbEvent(r) : undefined }),
  "rbdkv.LeaderRequest": () => ({}),
  "rbdkv.LeaderInfoResponse": genLeaderInfo,
  "rbdkv.WithSize": genWithSize,
  "rbdkv.ClusterStatsRequest": (r) => ({ withRaft: maybe(r, () => r.chance(0.5)), withFsm: r.chance(0.5) ? genWithSize(r) : undefined }),
  "rbdkv.RaftMeta": genRaftMeta,
  "rbdkv.StorageStats": genStorageStats,
  "rbdkv.Peer": genPeer,
  "rbdkv.ClusterStatsResponse": (r) => ({ peers: maybe(r, () => Array.from({ length: r.int(0, 4) }, () => genPeer(r))) }),
  "rbdkv.JoinRequest": (r) => ({ id: maybe(r, () => str(r)), addr: maybe(r, () => str(r)), grpcAddr: maybe(r, () => str(r)) }),
  "rbdkv.JoinResponse": (r) => ({ leaderInfo: r.chance(0.6) ? genLeaderInfo(r) : undefined }),
};

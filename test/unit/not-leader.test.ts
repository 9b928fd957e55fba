// The seed's "not leader" errors (SPEC §3) as a seed client sees them: KvService behind a real
// grpc-js server on 127.0.0.1, over a stand-in for the Raft node that reports a chosen leader.
// A FAILED_PRECONDITION carries the seed's LeaderInfoResponse in the standard error details
// (trailing metadata grpc-status-details-bin = google.rpc.Status { code, message, details:
// [Any] }), byte for byte what protoc makes of the same Status (the golden vectors), and
// rbkv's own rbkv-leader-* metadata; no known leader on a redirect is UNAVAILABLE; LeaderInfo
// with no leader is FAILED_PRECONDITION with the term and the empty leader.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { NotLeaderError } from "../../src/node/errors.ts";
import { createLogger } from "../../src/node/logger.ts";
import type { RaftNode } from "../../src/node/node.ts";
import { Status } from "../../src/server/gen/google/rpc/status.ts";
import { LeaderInfoResponse, type WatchResponse } from "../../src/server/gen/rbkv.ts";
import { type RbdkvClient, createRbdkvClient } from "../../src/server/grpc-service.ts";
import { KvService, LEADER_INFO_TYPE_URL } from "../../src/server/kv-service.ts";
import { parseServerOptions } from "../../src/server/options.ts";
import { WatchHub } from "../../src/server/watch-hub.ts";

/** What KvService asks of a RaftNode on these paths: who leads, in which term. */
class FakeNode {
  readonly id = "127.0.0.1:9502";
  started = true;
  leaderId = "127.0.0.1:9501";
  leaderGrpc = "127.0.0.1:9501";
  term = 3;
  onStateReplaced: ((from: number, to: number) => void) | null = null;
  onLeaderChange: ((leader: string) => void) | null = null;
  isLeader(): boolean {
    return false;
  }
  leader(): { id: string; grpcAddr: string; raftAddr: string; term: number } {
    return { id: this.leaderId, grpcAddr: this.leaderGrpc, raftAddr: "", term: this.term };
  }
  notLeader(): NotLeaderError {
    return new NotLeaderError(this.leaderId, this.leaderGrpc, this.term);
  }
}

const node = new FakeNode();
let server: grpc.Server;
let service: KvService;
let client: RbdkvClient;

beforeAll(async () => {
  service = new KvService(node as unknown as RaftNode, new WatchHub(), parseServerOptions({}), createLogger("test", "error"));
  server = new grpc.Server();
  server.addService(service.definition(), service.handlers());
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  client = createRbdkvClient(`127.0.0.1:${port}`);
});

afterAll(() => {
  client?.close();
  service?.close();
  server?.forceShutdown();
});

function watchError(): Promise<grpc.ServiceError> {
  return new Promise((resolve, reject) => {
    const stream = client.watch({ watcherId: "seed-client", leaderRequired: true });
    stream.on("data", (m: WatchResponse) => reject(new Error(`unexpected event ${JSON.stringify(m)}`)));
    stream.on("error", resolve);
  });
}

async function leaderInfoError(): Promise<grpc.ServiceError> {
  try {
    await client.leaderInfoAsync({});
  } catch (err) {
    return err as grpc.ServiceError;
  }
  throw new Error("LeaderInfo answered OK");
}

/** What a seed (Go) client does: status.FromError(err).Details(), then the LeaderInfoResponse. */
function seedDetails(err: grpc.ServiceError): { raw: Buffer; status: Status; leader: LeaderInfoResponse } {
  const values = err.metadata.get("grpc-status-details-bin");
  expect(values.length).toBe(1);
  const raw = values[0] as Buffer;
  expect(Buffer.isBuffer(raw)).toBe(true);
  const status = Status.decode(raw);
  expect(status.details.length).toBe(1);
  expect(status.details[0]!.typeUrl).toBe(LEADER_INFO_TYPE_URL);
  return { raw, status, leader: LeaderInfoResponse.decode(status.details[0]!.value) };
}

const goldenHex = (name: string): string => readFileSync(join(import.meta.dir, "../fixtures/pb/cases", `${name}.hex`), "utf8").trim();

describe("not-leader errors carry the seed's LeaderInfoResponse in the gRPC error details", () => {
  test("Watch with leader_required on a follower: FAILED_PRECONDITION, details name the leader", async () => {
    node.leaderId = node.leaderGrpc = "127.0.0.1:9501";
    node.term = 3;
    const err = await watchError();
    expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
    const { raw, status, leader } = seedDetails(err);
    expect(status.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(status.message).toBe(err.details);
    expect(leader).toEqual({ leaderAddr: "127.0.0.1:9501", leaderId: "127.0.0.1:9501", term: 3 });
    // Byte for byte protoc's encoding of the same google.rpc.Status (test/fixtures/pb).
    expect(raw.toString("hex")).toBe(goldenHex("Status.not_leader"));
    // rbkv's own metadata stay as they were.
    expect(err.metadata.get("rbkv-leader-addr")).toEqual(["127.0.0.1:9501"]);
    expect(err.metadata.get("rbkv-leader-id")).toEqual(["127.0.0.1:9501"]);
    expect(err.metadata.get("rbkv-leader-term")).toEqual(["3"]);
  });

  test("LeaderInfo with no leader: FAILED_PRECONDITION with the term and the empty leader", async () => {
    node.leaderId = node.leaderGrpc = "";
    node.term = 5;
    try {
      const err = await leaderInfoError();
      expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
      expect(err.details).toBe("no leader is known (term 5)");
      const { raw, status, leader } = seedDetails(err);
      expect(status.code).toBe(grpc.status.FAILED_PRECONDITION);
      expect(leader).toEqual({ leaderAddr: "", leaderId: "", term: 5 });
      expect(raw.toString("hex")).toBe(goldenHex("Status.no_leader"));
      expect(err.metadata.get("rbkv-leader-term")).toEqual(["5"]);
    } finally {
      node.leaderId = node.leaderGrpc = "127.0.0.1:9501";
      node.term = 3;
    }
  });

  test("LeaderInfo with a leader answers OK", async () => {
    expect(await client.leaderInfoAsync({})).toEqual({ leaderAddr: "127.0.0.1:9501", leaderId: "127.0.0.1:9501", term: 3 });
  });

  test("a redirect with no leader known is UNAVAILABLE (retry), with the term but no details", async () => {
    node.leaderId = node.leaderGrpc = "";
    node.term = 6;
    try {
      const err = await watchError();
      expect(err.code).toBe(grpc.status.UNAVAILABLE);
      expect(err.metadata.get("grpc-status-details-bin")).toEqual([]);
      expect(err.metadata.get("rbkv-leader-term")).toEqual(["6"]);
    } finally {
      node.leaderId = node.leaderGrpc = "127.0.0.1:9501";
      node.term = 3;
    }
  });

  test("a leader whose address is unknown (it just removed itself) is UNAVAILABLE, not a redirect to nowhere", async () => {
    node.leaderGrpc = "";
    try {
      const err = await watchError();
      expect(err.code).toBe(grpc.status.UNAVAILABLE);
      expect(err.metadata.get("grpc-status-details-bin")).toEqual([]);
    } finally {
      node.leaderGrpc = "127.0.0.1:9501";
    }
  });
});

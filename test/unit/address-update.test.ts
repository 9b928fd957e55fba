// The client side of "a member moved to new addresses": whom it asks, how it follows the leader
// named in a refusal, when it stops.

import { describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { AddressUpdater, addressesMatch } from "../../src/server/address-update.ts";
import { type MemberUpdateRequest } from "../../src/server/gen/rbkv.ts";
import { type PeerAddress } from "../../src/storage/raft-log-store.ts";

const OLD: PeerAddress = { raft: "127.0.0.1:9601", grpc: "127.0.0.1:9501" };
const NEW: PeerAddress = { raft: "[::1]:9611", grpc: "[::1]:9511" };

function status(code: grpc.status, details: string, leaderAddr?: string): grpc.ServiceError {
  const metadata = new grpc.Metadata();
  if (leaderAddr !== undefined) metadata.set("rbkv-leader-addr", leaderAddr);
  return Object.assign(new Error(details), { code, details, metadata });
}

function harness(opts: { members: string[]; leader?: boolean; answer: (target: string, attempt: number) => Error | null; current?: () => PeerAddress | undefined }) {
  const calls: { target: string; req: MemberUpdateRequest }[] = [];
  const lines: string[] = [];
  let book: PeerAddress | undefined = OLD;
  const updater = new AddressUpdater({
    id: "n1",
    want: NEW,
    current: opts.current ?? (() => book),
    memberGrpcAddrs: () => opts.members,
    isLeader: () => opts.leader ?? false,
    call: async (target, req) => {
      calls.push({ target, req });
      const err = opts.answer(target, calls.length);
      if (err) throw err;
      book = NEW;
    },
    log: { debug: () => {}, info: (l) => lines.push(`info ${l}`), warn: (l) => lines.push(`warn ${l}`), error: (l) => lines.push(`error ${l}`) },
    initialBackoffMs: 5,
    maxBackoffMs: 20,
  });
  return { updater, calls, lines };
}

describe("AddressUpdater", () => {
  test("asks the other members first, follows the leader a follower names, and stops once done", async () => {
    const h = harness({
      members: ["127.0.0.1:9501", "10.0.0.2:9502", "10.0.0.3:9503"],
      answer: (t) => (t === "10.0.0.2:9502" ? status(grpc.status.FAILED_PRECONDITION, "not the leader", "10.0.0.3:9503") : null),
    });
    expect(await h.updater.done).toBe(true);
    // Not its own old address (nobody there), the follower, then the leader it named.
    expect(h.calls.map((c) => c.target)).toEqual(["10.0.0.2:9502", "10.0.0.3:9503"]);
    expect(h.calls[0]!.req).toEqual({ id: "n1", raftAddr: "[::1]:9611", grpcAddr: "[::1]:9511" });
    expect(h.lines.some((l) => l.startsWith("info MemberUpdate through 10.0.0.3:9503 done"))).toBe(true);
  });

  test("a one-node cluster's leader asks its own server first", async () => {
    const h = harness({ members: ["127.0.0.1:9501"], leader: true, answer: () => null });
    expect(await h.updater.done).toBe(true);
    expect(h.calls.map((c) => c.target)).toEqual(["[::1]:9511"]);
  });

  test("retries with backoff while nobody can do it, logging each round, until one succeeds", async () => {
    const h = harness({
      members: ["127.0.0.1:9501", "10.0.0.2:9502"],
      answer: (_t, n) => (n < 5 ? status(grpc.status.UNAVAILABLE, "no leader known") : null),
    });
    expect(await h.updater.done).toBe(true);
    // Each round: the other member, then this node's own server.
    expect(h.calls.map((c) => c.target)).toEqual(["10.0.0.2:9502", "[::1]:9511", "10.0.0.2:9502", "[::1]:9511", "10.0.0.2:9502"]);
    const warnings = h.lines.filter((l) => l.startsWith("warn "));
    expect(warnings.length).toBe(2);
    expect(warnings[0]).toContain("10.0.0.2:9502: UNAVAILABLE: no leader known");
  });

  test("an answer lost after the change was made: the peer book shows it, so no more calls", async () => {
    let book: PeerAddress | undefined = OLD;
    let n = 0;
    const h = harness({
      members: ["10.0.0.2:9502"],
      current: () => book,
      answer: () => {
        n++;
        book = NEW; // applied, but the answer never came back
        return status(grpc.status.DEADLINE_EXCEEDED, "deadline");
      },
    });
    expect(await h.updater.done).toBe(true);
    expect(n).toBe(1);
    expect(h.lines.at(-1)).toContain("the cluster has this node's new addresses");
  });

  test("stop ends the retries", async () => {
    const h = harness({ members: ["10.0.0.2:9502"], answer: () => status(grpc.status.UNAVAILABLE, "down") });
    await Bun.sleep(30);
    h.updater.stop();
    expect(await h.updater.done).toBe(false);
    const calls = h.calls.length;
    await Bun.sleep(50);
    expect(h.calls.length).toBe(calls);
  });

  test("addressesMatch compares as addresses, not strings", () => {
    expect(addressesMatch({ raft: "[0:0::1]:9611", grpc: "[::1]:9511" }, NEW)).toBe(true);
    expect(addressesMatch(OLD, NEW)).toBe(false);
    expect(addressesMatch(undefined, NEW)).toBe(false);
  });
});

// End-to-end: running a cluster's membership and leadership through the compiled ./rbkv over
// gRPC (SPEC §2 Join, §3b): MemberList, MemberAdd (a learner stays one; a voter is promoted by
// the leader once caught up), MemberPromote, MemberUpdate (new addresses), TransferLeadership,
// the refusal of each unsafe request with its code and reason, Join idempotent for a live
// member, and a node that lost its disk replaced by itself when it starts again with
// --join-addr.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import type { Member, MemberListResponse } from "../../src/server/gen/rbkv.ts";
import { type RbdkvClient } from "../../src/server/grpc-service.ts";
import { fastClient } from "./api-helpers.ts";
import { RbkvProcess, TestCluster, eventually, freePort, grpcCode } from "./harness.ts";

const ELECTION_MS = 600;

/** Empties a node's data directory but keeps its process log (the harness writes it there). */
function wipeData(dir: string): void {
  for (const f of readdirSync(dir)) if (!f.endsWith(".log")) rmSync(join(dir, f), { recursive: true, force: true });
}

/** The refusal of a call (its code and message); fails the test if the call succeeds. */
async function refusal(p: Promise<unknown>): Promise<{ code: grpc.status | undefined; details: string }> {
  try {
    await p;
  } catch (err) {
    return { code: grpcCode(err), details: (err as grpc.ServiceError).details ?? String(err) };
  }
  throw new Error("the call was expected to be refused, and succeeded");
}

/** Retries a call while it answers UNAVAILABLE ("try again": a change pending, a leader elected moments ago). */
async function retrying<T>(what: string, fn: () => Promise<T>, timeoutMs = 20_000): Promise<T> {
  return eventually(
    what,
    async () => {
      try {
        return await fn();
      } catch (err) {
        if (grpcCode(err) === grpc.status.UNAVAILABLE) return false;
        throw err;
      }
    },
    timeoutMs,
  );
}

const dl = (ms = 15_000): { deadline: number } => ({ deadline: Date.now() + ms });

describe("members", () => {
  let c: TestCluster;
  const clients = new Map<string, RbdkvClient>();
  const client = (i: number): RbdkvClient => {
    const addr = c.nodes[i]!.spec.grpcAddr;
    let cl = clients.get(addr);
    if (!cl) {
      cl = fastClient(addr);
      clients.set(addr, cl);
    }
    return cl;
  };
  const idOf = (i: number): string => c.nodes[i]!.spec.grpcAddr;
  const list = (i: number): Promise<MemberListResponse> => client(i).memberListAsync({}, dl(3000));
  const memberOf = async (via: number, id: string): Promise<Member | undefined> => (await list(via)).members.find((m) => m.id === id);

  /** A new node process (not started) with fresh ports, appended to the cluster's nodes. */
  const newProcess = async (name: string): Promise<number> => {
    const spec = { name, grpcAddr: `127.0.0.1:${await freePort()}`, raftAddr: `127.0.0.1:${await freePort()}`, dir: join(c.root, name), extra: c.nodes[0]!.spec.extra };
    c.nodes.push(new RbkvProcess(spec));
    return c.nodes.length - 1;
  };

  beforeAll(async () => {
    c = await TestCluster.create(3, [`--election-timeout=${ELECTION_MS}`, "--snapshot-threshold=200", "--trailing-logs=20"]);
    await c.startSeedStyle();
  }, 60_000);

  afterAll(async () => {
    for (const cl of clients.values()) cl.close();
    if (c) await c.destroy();
  });

  test("MemberUpdate gives a member new addresses; every member dials it there", async () => {
    const leader = await c.leader();
    const moved = [0, 1, 2].find((i) => i !== leader)!;
    const other = [0, 1, 2].find((i) => i !== leader && i !== moved)!;
    const id = idOf(moved);
    for (let i = 0; i < 20; i++) await c.kv(leader).put(`update/before/${i}`, "x");

    // Refusals: a stranger, a malformed address, an address another member has, nothing to change.
    let r = await refusal(client(other).memberUpdateAsync({ id: "127.0.0.1:1", raftAddr: "127.0.0.1:2" }, dl()));
    expect(r.code).toBe(grpc.status.NOT_FOUND);
    expect(r.details).toContain("not a member");
    r = await refusal(client(other).memberUpdateAsync({ id, raftAddr: "no-port" }, dl()));
    expect(r.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(r.details).toContain("host:port");
    r = await refusal(client(other).memberUpdateAsync({ id, raftAddr: c.nodes[other]!.spec.raftAddr }, dl()));
    expect(r.code).toBe(grpc.status.ALREADY_EXISTS);
    expect(r.details).toContain(`already the address of member ${idOf(other)}`);
    r = await refusal(client(other).memberUpdateAsync({ id }, dl()));
    expect(r.code).toBe(grpc.status.INVALID_ARGUMENT);
    // The same addresses again: nothing to do, OK.
    const same = await client(other).memberUpdateAsync({ id, raftAddr: c.nodes[moved]!.spec.raftAddr, grpcAddr: id }, dl());
    expect(same.members.find((m) => m.id === id)?.raftAddr).toBe(c.nodes[moved]!.spec.raftAddr);

    // The node stops and comes back on other ports under its id (--node-id).
    expect(await c.nodes[moved]!.stop()).toBe(0);
    const grpcAddr = `127.0.0.1:${await freePort()}`;
    const raftAddr = `127.0.0.1:${await freePort()}`;
    const old = c.nodes[moved]!.spec;
    c.nodes[moved] = new RbkvProcess({ ...old, grpcAddr, raftAddr, extra: [...old.extra, `--node-id=${id}`] });
    c.nodes[moved]!.start();
    // Through a follower (forwarded to the leader), as the moved node's own call would be.
    const res = await retrying("the address update", () => client(other).memberUpdateAsync({ id, raftAddr, grpcAddr }, dl()));
    const entry = res.members.find((m) => m.id === id)!;
    expect(entry.raftAddr).toBe(raftAddr);
    expect(entry.grpcAddr).toBe(grpcAddr);
    expect(entry.isLearner).toBe(false);
    // Every member, the moved one too, lists the new addresses.
    for (const i of [0, 1, 2]) {
      await eventually(`node${i + 1} to list the new addresses`, async () => {
        const m = await memberOf(i, id);
        return m?.raftAddr === raftAddr && m.grpcAddr === grpcAddr;
      });
    }
    // The leader replicates to it at its new address, and a write through it is forwarded.
    await c.kv(leader).put("update/after", "moved");
    await eventually("the moved node to hold the new write", async () => (await c.kv(moved).value("update/after", { serializable: true })) === "moved");
    await c.kv(moved).put("update/through-moved", "yes");
    expect(await c.kv(leader).value("update/through-moved")).toBe("yes");
    // Nobody took it for a removed member.
    expect(await c.nodes[moved]!.logs()).not.toContain("was removed");
    await c.waitVoters(3);
  }, 90_000);
});

// End-to-end: the bank. 20 accounts, 6 concurrent clients moving money between random accounts
// with Txn (compare-on-VERSION of both accounts, then put both and a record `xfer/<id>`), through
// random nodes, while the leader is SIGKILLed and restarted twice. What a user must see:
//   - the total, read with ONE Range at one version, is always the same (on any node, at any
//     version, during the run and after);
//   - every acknowledged transfer is applied exactly once, a transfer answered succeeded=false is
//     never applied, and the only other applied ones are those whose answer was lost;
//   - the balances are the initial ones plus the applied transfers, replayed in version order,
//     at the end and at every version a reader saw during the run (all writes of a txn share
//     its version, which is a log index of its own).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import type { KeyValue } from "../../src/server/gen/rbkv.ts";
import { Clients, ReadConsistency, code, deadline, hex, message, onAnyNode, prng, put, rangeAll, seedFromEnv, versionIs } from "./api-helpers.ts";
import { TestCluster, dec, enc, eventually, sleep } from "./harness.ts";

const ACCOUNTS = 20;
const INITIAL = 100;
const TOTAL = ACCOUNTS * INITIAL;
const CLIENTS = 6;
const acct = (i: number): string => `acct/${String(i).padStart(2, "0")}`;

interface Transfer {
  id: string;
  from: number;
  to: number;
  amount: number;
  /** The txn's version, when acknowledged. */
  version: number;
}

function balancesOf(kvs: KeyValue[]): number[] {
  const out = new Array<number>(ACCOUNTS).fill(Number.NaN);
  for (const kv of kvs) {
    const k = dec(kv.key);
    const i = Number(k.slice("acct/".length));
    out[i] = Number(dec(kv.value));
  }
  return out;
}

const sum = (a: number[]): number => a.reduce((s, x) => s + x, 0);

describe("Txn bank under leader SIGKILLs", () => {
  let c: TestCluster;
  let cl: Clients;

  beforeAll(async () => {
    c = await TestCluster.create(3, ["--election-timeout=600", "--snapshot-threshold=400", "--trailing-logs=50"]);
    await c.startSeedStyle();
    cl = new Clients(c);
  }, 60_000);

  afterAll(async () => {
    cl?.close();
    if (c) await c.destroy();
  });

  test("the total never changes and every acknowledged transfer is applied exactly once", async () => {
    const rnd = prng(seedFromEnv("BANK_SEED"));
    const leader0 = await c.leader();
    const init = await cl.of(leader0).txnAsync({ success: Array.from({ length: ACCOUNTS }, (_, i) => put(acct(i), String(INITIAL))) }, deadline(10_000));
    expect(init.succeeded).toBe(true);
    expect(init.responses.length).toBe(ACCOUNTS);
    for (const r of init.responses) expect(r.result).toEqual({ $case: "put", value: { version: init.version } });

    const acked = new Map<string, Transfer>();
    const unknown = new Map<string, Transfer>();
    const rejected = new Set<string>();
    const aborted = new Set<string>();
    const unexpected: string[] = [];
    // Every successful read of all accounts (one Range), by whom and at which version.
    const samples: { version: number; balances: number[]; node: number; rc: string }[] = [];
    let stop = false;

    const readAll = async (i: number, rc: ReadConsistency): Promise<{ version: number; kvs: KeyValue[] }> => {
      const r = await cl.of(i).rangeAsync({ key: enc("acct/"), prefix: true, rc }, deadline(2000));
      // One Range answers the whole bank: 20 kvs, no more pages, at one version.
      if (r.more || r.count !== ACCOUNTS || r.kvs.length !== ACCOUNTS) unexpected.push(`Range acct/ on node${i + 1}: more=${r.more} count=${r.count} kvs=${r.kvs.length}`);
      samples.push({ version: r.version, balances: balancesOf(r.kvs), node: i, rc: rc === ReadConsistency.Serializable ? "serializable" : "linearizable" });
      return { version: r.version, kvs: r.kvs };
    };

    const client = async (w: number): Promise<void> => {
      for (let n = 0; !stop; n++) {
        const nodes = cl.running();
        const i = rnd.pick(nodes);
        const rc = rnd.float() < 0.5 ? ReadConsistency.Serializable : ReadConsistency.Linearizable;
        let state: { version: number; kvs: KeyValue[] };
        try {
          state = await readAll(i, rc);
        } catch {
          await sleep(30);
          continue;
        }
        const from = rnd.int(0, ACCOUNTS - 1);
        let to = rnd.int(0, ACCOUNTS - 2);
        if (to >= from) to++;
        const kvFrom = state.kvs.find((kv) => dec(kv.key) === acct(from))!;
        const kvTo = state.kvs.find((kv) => dec(kv.key) === acct(to))!;
        const balFrom = Number(dec(kvFrom.value));
        const balTo = Number(dec(kvTo.value));
        if (balFrom === 0) continue;
        const amount = rnd.int(1, Math.min(balFrom, 25));
        const t: Transfer = { id: `${w}-${n}`, from, to, amount, version: 0 };
        // Through a (possibly different) random node.
        const j = rnd.pick(cl.running());
        try {
          const r = await cl.of(j).txnAsync(
            {
              compare: [versionIs(acct(from), kvFrom.version), versionIs(acct(to), kvTo.version)],
              success: [put(acct(from), String(balFrom - amount)), put(acct(to), String(balTo + amount)), put(`xfer/${t.id}`, `${from}>${to}:${amount}`)],
            },
            deadline(3000),
          );
          if (r.succeeded) {
            t.version = r.version;
            acked.set(t.id, t);
            if (r.responses.length !== 3 || r.responses.some((x) => x.result?.$case !== "put" || x.result.value.version !== r.version)) {
              unexpected.push(`txn ${t.id}: responses ${JSON.stringify(r.responses)} at version ${r.version}`);
            }
          } else {
            rejected.add(t.id);
            if (r.responses.length !== 0) unexpected.push(`txn ${t.id} failed with ${r.responses.length} responses (empty failure branch)`);
          }
        } catch (err) {
          // A lost answer: the transfer may or may not have been applied. Not retried (a retry
          // would compare against versions it may itself have changed).
          if (code(err) === grpc.status.INVALID_ARGUMENT || code(err) === grpc.status.OUT_OF_RANGE) unexpected.push(`txn ${t.id} on node${j + 1}: ${message(err)}`);
          // ABORTED promises "certainly not applied": checked below.
          if (code(err) === grpc.status.ABORTED) aborted.add(t.id);
          else unknown.set(t.id, t);
          await sleep(30);
        }
      }
    };

    // A reader that only checks the invariant, alternating consistency levels.
    const checker = async (): Promise<void> => {
      for (let n = 0; !stop; n++) {
        const i = rnd.pick(cl.running());
        try {
          await readAll(i, n % 2 === 0 ? ReadConsistency.Serializable : ReadConsistency.Linearizable);
        } catch {}
        await sleep(100);
      }
    };

    const workers = [...Array.from({ length: CLIENTS }, (_, w) => client(w)), checker()];
    const kills: { node: number; ackedBefore: number }[] = [];
    try {
      await sleep(2000);
      for (let k = 0; k < 2; k++) {
        const leader = await c.leader();
        kills.push({ node: leader, ackedBefore: acked.size });
        await c.nodes[leader]!.kill9();
        await sleep(1500);
        c.nodes[leader]!.start();
        await sleep(2500);
      }
    } finally {
      stop = true;
      await Promise.all(workers);
    }
    for (let i = 0; i < 3; i++) await c.waitServing(i);

    // Transfers went on around both kills.
    expect(kills.length).toBe(2);
    expect(acked.size).toBeGreaterThan(kills[1]!.ackedBefore);
    expect(kills[0]!.ackedBefore).toBeGreaterThan(0);
    expect(acked.size).toBeGreaterThanOrEqual(60);
    expect(unexpected).toEqual([]);

    // The sum, as every reader saw it during the run.
    expect(samples.length).toBeGreaterThan(100);
    const badSums = samples.filter((s) => sum(s.balances) !== TOTAL);
    expect(badSums.map((s) => `node${s.node + 1} ${s.rc} @${s.version}: sum ${sum(s.balances)}`)).toEqual([]);

    // The final state: accounts and transfer records read at ONE version.
    const leader = await c.leader();
    const bank = await onAnyNode(cl, "final accounts", (x) => rangeAll(x, "acct/", { rc: ReadConsistency.Linearizable }));
    const xfers = await onAnyNode(cl, "transfer records", (x) => rangeAll(x, "xfer/", { version: bank.version, pageLimit: 100 }));
    expect(bank.kvs.length).toBe(ACCOUNTS);
    const finalBalances = balancesOf(bank.kvs);
    expect(sum(finalBalances)).toBe(TOTAL);

    const applied = new Map<string, { version: number; from: number; to: number; amount: number }>();
    for (const kv of xfers.kvs) {
      const id = dec(kv.key).slice("xfer/".length);
      const m = /^(\d+)>(\d+):(\d+)$/.exec(dec(kv.value));
      expect(m).not.toBeNull();
      applied.set(id, { version: kv.version, from: Number(m![1]), to: Number(m![2]), amount: Number(m![3]) });
      // Written once: a second apply would have left a newer version than the create.
      expect({ id, version: kv.version }).toEqual({ id, version: kv.createVersion });
    }
    // Every acknowledged transfer is there, at the version its answer named.
    const missing = [...acked.values()].filter((t) => !applied.has(t.id));
    expect(missing.map((t) => t.id)).toEqual([]);
    const wrongVersion = [...acked.values()].filter((t) => applied.get(t.id)!.version !== t.version);
    expect(wrongVersion.map((t) => `${t.id}: acked @${t.version}, stored @${applied.get(t.id)!.version}`)).toEqual([]);
    // Nothing else, except transfers whose answer was lost; never one answered succeeded=false.
    const spurious = [...applied.keys()].filter((id) => !acked.has(id) && !unknown.has(id));
    expect(spurious).toEqual([]);
    expect([...applied.keys()].filter((id) => rejected.has(id))).toEqual([]);
    expect([...applied.keys()].filter((id) => aborted.has(id))).toEqual([]);

    // Replay the applied transfers in version order; every txn is its own log index.
    const ordered = [...applied.entries()].sort((a, b) => a[1].version - b[1].version);
    const versions = ordered.map(([, t]) => t.version);
    expect(new Set(versions).size).toBe(versions.length);
    expect(versions[0]!).toBeGreaterThan(init.version);
    const stateAt = (v: number): number[] => {
      const b = new Array<number>(ACCOUNTS).fill(INITIAL);
      for (const [, t] of ordered) {
        if (t.version > v) break;
        b[t.from]! -= t.amount;
        b[t.to]! += t.amount;
      }
      return b;
    };
    expect(finalBalances).toEqual(stateAt(bank.version));
    // Each account's version is that of the last transfer that touched it.
    for (const kv of bank.kvs) {
      const i = Number(dec(kv.key).slice("acct/".length));
      const last = ordered.filter(([, t]) => t.from === i || t.to === i).pop();
      expect({ key: dec(kv.key), version: kv.version }).toEqual({ key: dec(kv.key), version: last ? last[1].version : init.version });
    }
    // What every reader saw during the run is the replayed state at its version.
    const inconsistent = samples.filter((s) => JSON.stringify(s.balances) !== JSON.stringify(stateAt(s.version)));
    expect(inconsistent.slice(0, 5).map((s) => `node${s.node + 1} ${s.rc} @${s.version}: ${s.balances} != ${stateAt(s.version)}`)).toEqual([]);

    // MVCC: one Range at an old version on every node shows the replayed state there.
    const picks = [init.version, ...versions.filter((_, k) => k % Math.max(1, Math.floor(versions.length / 8)) === 0), bank.version];
    for (let i = 0; i < 3; i++) {
      // The node has applied the final version (a Serializable read at it would be in its future).
      await eventually(`node${i + 1} at version ${bank.version}`, async () => (await cl.of(i).rangeAsync({ key: enc("acct/"), prefix: true, countOnly: true, rc: ReadConsistency.Serializable }, deadline(2000))).version >= bank.version, 15_000);
      for (const v of picks) {
        const r = await cl.of(i).rangeAsync({ key: enc("acct/"), prefix: true, version: v, rc: ReadConsistency.Serializable }, deadline(5000));
        expect({ node: i + 1, v, version: r.version, balances: balancesOf(r.kvs) }).toEqual({ node: i + 1, v, version: v, balances: stateAt(v) });
      }
      const x = await rangeAll(cl.of(i), "xfer/", { version: bank.version, rc: ReadConsistency.Serializable, pageLimit: 100 });
      expect({ node: i + 1, keys: x.kvs.map((kv) => hex(kv.key)) }).toEqual({ node: i + 1, keys: xfers.kvs.map((kv) => hex(kv.key)) });
    }
    console.log(
      `bank: ${acked.size} acked, ${rejected.size} compare-failed, ${aborted.size} aborted, ${unknown.size} unknown (${[...unknown.keys()].filter((id) => applied.has(id)).length} of them applied), ` +
        `${samples.length} sum checks, kills of node${kills.map((k) => k.node + 1).join(", node")}; final version ${bank.version}; leader node${leader + 1}`,
    );
  }, 90_000);
});

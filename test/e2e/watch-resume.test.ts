// End-to-end: resumable watches. A watcher whose node is SIGKILLed mid-stream resumes on another
// node with start_version = what it has; over 10k writes (puts, txns of several puts, deletes)
// it sees every acknowledged write exactly once, in (version, key) order, and nothing that was
// not written. Then: Compact, and a watch (or read) below the compacted version answers
// OUT_OF_RANGE naming the oldest version kept; Progress events on an idle stream.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { OpType, type WatchResponse } from "../../src/server/gen/rbkv.ts";
import { Clients, EventType, ReadConsistency, ResumingWatcher, type SeenEvent, code, deadline, hex, onAnyNode, outcomeUnknown, prng, put, rangeAll, seedFromEnv, watchError } from "./api-helpers.ts";
import { TestCluster, enc, eventually, sleep } from "./harness.ts";

const WRITES = 10_000;

interface Op {
  type: number; // EventType.Put / Delete
  key: string; // hex
  value: string; // hex
  version: number; // 0 = answer lost
}

describe("Watch resume, compaction and progress", () => {
  let c: TestCluster;
  let cl: Clients;
  // Shared with the compaction test: the whole history of w/ as the watcher saw it.
  let history: SeenEvent[] = [];
  let compactedAt = 0;

  beforeAll(async () => {
    c = await TestCluster.create(3, ["--election-timeout=600", "--snapshot-threshold=1000", "--trailing-logs=100"]);
    await c.startSeedStyle();
    cl = new Clients(c);
  }, 60_000);

  afterAll(async () => {
    cl?.close();
    if (c) await c.destroy();
  });

  test(`a watcher whose node is SIGKILLed twice resumes elsewhere and sees each of ${WRITES} writes exactly once, in order`, async () => {
    const rnd = prng(seedFromEnv("WATCH_SEED"));
    let leader = await c.leader();
    // Something before the watch's start, so the replay has a real start_version to honour.
    const before = await cl.of(leader).executeAsync({ op: OpType.Put, kv: { key: enc("w/before"), value: enc("x") } }, deadline(5000));
    const start = before.version;

    const follower = (leader + 1) % 3;
    // It starts on a follower and resumes on the leader, so that the second kill is the leader's.
    const watcher = new ResumingWatcher(cl, { watcherId: "resumer", prefixes: [enc("w/")], startVersion: start, progressNotify: true }, follower, () => leader);

    const ops: Op[] = [];
    const aborted = new Set<string>();
    const acked = (): number => ops.reduce((n, o) => n + (o.version > 0 ? 1 : 0), 0);
    let stop = false;
    let writeErrors = 0;
    const written = new Map<number, string[]>(); // per worker: keys whose put was acked (for deletes)
    const worker = async (w: number): Promise<void> => {
      written.set(w, []);
      const mine = written.get(w)!;
      for (let n = 0; !stop && acked() < WRITES; n++) {
        const i = rnd.pick(cl.running());
        const roll = rnd.float();
        const batch: Op[] = [];
        try {
          if (roll < 0.6) {
            // A txn of 2..8 puts: several events at one version.
            const k = rnd.int(2, 8);
            for (let j = 0; j < k; j++) batch.push({ type: EventType.Put, key: hex(enc(`w/${w}/${n}/${j}`)), value: hex(enc(`t${w}.${n}.${j}`)), version: 0 });
            ops.push(...batch);
            const r = await cl.of(i).txnAsync({ success: batch.map((o) => put(Buffer.from(o.key, "hex"), Buffer.from(o.value, "hex"))) }, deadline(3000));
            for (const o of batch) o.version = r.version;
            for (const o of batch) mine.push(o.key);
          } else if (roll < 0.66 && mine.length > 0) {
            const key = mine.splice(rnd.int(0, mine.length - 1), 1)[0]!;
            const o: Op = { type: EventType.Delete, key, value: "", version: 0 };
            batch.push(o);
            ops.push(o);
            o.version = (await cl.of(i).executeAsync({ op: OpType.Delete, kv: { key: Buffer.from(key, "hex") } }, deadline(3000))).version;
          } else {
            const o: Op = { type: EventType.Put, key: hex(enc(`w/${w}/${n}`)), value: hex(enc(`p${w}.${n}`)), version: 0 };
            batch.push(o);
            ops.push(o);
            o.version = (await cl.of(i).executeAsync({ op: OpType.Put, kv: { key: Buffer.from(o.key, "hex"), value: Buffer.from(o.value, "hex") } }, deadline(3000))).version;
            mine.push(o.key);
          }
        } catch (err) {
          // Lost answers stay in `ops` with version 0: they may or may not show up (once).
          if (code(err) === grpc.status.ABORTED) {
            // "Certainly not applied": such a write must never show up.
            for (const o of batch) aborted.add(`${o.type}:${o.key}`);
          } else if (!outcomeUnknown(err) && code(err) !== grpc.status.FAILED_PRECONDITION) throw err;
          writeErrors++;
          await sleep(20);
        }
      }
    };

    const t0 = Date.now();
    const workers = Array.from({ length: 24 }, (_, w) => worker(w));
    const kills: string[] = [];
    try {
      // 1: the watcher's node is a follower.
      await eventually("a third of the writes", async () => acked() > WRITES / 3, 60_000, 20);
      await watcher.until("events streaming", () => watcher.events.length > 500, 20_000);
      let victim = watcher.node;
      const n0 = watcher.events.length;
      kills.push(`node${victim + 1} (watcher's, ${victim === leader ? "leader" : "follower"}) at ${n0} events`);
      await c.nodes[victim]!.kill9();
      await watcher.until("the watcher streaming from another node", () => watcher.node !== victim && watcher.events.length > n0, 10_000);
      await sleep(500);
      c.nodes[victim]!.start();
      // 2: the watcher's node again, whichever it is now (the leader, if it resumed there).
      await eventually("two thirds of the writes", async () => acked() > (2 * WRITES) / 3, 60_000, 20);
      await c.waitServing(victim);
      leader = await c.leader();
      victim = watcher.node;
      kills.push(`node${victim + 1} (watcher's, ${victim === leader ? "leader" : "follower"}) at ${watcher.events.length} events`);
      await c.nodes[victim]!.kill9();
      await sleep(800);
      c.nodes[victim]!.start();
      await Promise.all(workers);
    } finally {
      stop = true;
      await Promise.all(workers);
    }
    const writeMs = Date.now() - t0;
    const installs = (await Promise.all(c.nodes.map(async (n) => ((await n.logs()).match(/installed a state machine image/g) ?? []).length))).map((k, i) => `node${i + 1}:${k}`);
    for (let i = 0; i < 3; i++) await c.waitServing(i);

    // The watcher catches up with everything written (the last acked version, via Progress).
    const lastAcked = Math.max(...ops.map((o) => o.version));
    await watcher.until(`version ${lastAcked}`, () => watcher.lastVersion >= lastAcked, 30_000);
    await watcher.stop();
    expect(watcher.streams.length).toBeGreaterThanOrEqual(3);

    const seen = watcher.events;
    // Strictly increasing (version, key): in log order, no duplicate.
    const disorder: string[] = [];
    for (let k = 1; k < seen.length; k++) {
      const a = seen[k - 1]!;
      const e = seen[k]!;
      if (e.version < a.version || (e.version === a.version && e.key <= a.key)) disorder.push(`#${k}: ${a.key}@${a.version} (node${a.node + 1}) then ${e.key}@${e.version} (node${e.node + 1})`);
    }
    expect(disorder.slice(0, 5)).toEqual([]);
    expect(seen[0]!.version).toBeGreaterThan(start);
    expect(watcher.progressViolations).toEqual([]);

    // Every acknowledged write exactly once, as written; the others (answers lost) at most once.
    const byKey = new Map<string, SeenEvent[]>();
    for (const e of seen) {
      const id = `${e.type}:${e.key}`;
      if (!byKey.has(id)) byKey.set(id, []);
      byKey.get(id)!.push(e);
    }
    const problems: string[] = [];
    for (const o of ops) {
      const got = byKey.get(`${o.type}:${o.key}`) ?? [];
      if (got.length > 1) problems.push(`${o.type}:${Buffer.from(o.key, "hex")} seen ${got.length} times at ${got.map((g) => `${g.version}(node${g.node + 1})`)}`);
      if (aborted.has(`${o.type}:${o.key}`) && got.length > 0) problems.push(`${o.type}:${Buffer.from(o.key, "hex")} was answered ABORTED but applied at ${got[0]!.version}`);
      if (o.version > 0 && got.length === 0) problems.push(`acked ${o.type}:${Buffer.from(o.key, "hex")}@${o.version} never seen`);
      if (o.version > 0 && got.length === 1 && (got[0]!.version !== o.version || (o.type === EventType.Put && got[0]!.value !== o.value))) problems.push(`acked ${o.type}:${Buffer.from(o.key, "hex")}@${o.version} seen as @${got[0]!.version} ${Buffer.from(got[0]!.value, "hex")}`);
      byKey.delete(`${o.type}:${o.key}`);
    }
    for (const [id, evs] of byKey) problems.push(`seen but never written: ${id} @${evs.map((e) => e.version)}`);
    expect(problems.slice(0, 10)).toEqual([]);
    expect(acked()).toBeGreaterThanOrEqual(WRITES);

    // The store agrees with the stream: the keys that exist are those whose last event is a put.
    const state = new Map<string, string>([[hex(enc("w/before")), hex(enc("x"))]]);
    for (const e of seen) {
      if (e.type === EventType.Put) state.set(e.key, e.value);
      else state.delete(e.key);
    }
    const store = await onAnyNode(cl, "w/ at the end", (x) => rangeAll(x, "w/", { version: seen[seen.length - 1]!.version, pageLimit: 1000 }));
    expect(store.kvs.length).toBe(state.size);
    expect(store.kvs.every((kv) => state.get(hex(kv.key)) === hex(kv.value))).toBe(true);

    history = seen;
    console.log(`watch: ${acked()} writes acked in ${writeMs}ms (${writeErrors} lost answers), ${seen.length} events via ${watcher.streams.map((s) => `node${s.node + 1}@${s.startVersion}[${s.endedWith}]`).join(" -> ")}; kills: ${kills.join("; ")}; snapshot installs ${installs.join(" ")}`);
  }, 120_000);

  test("after Compact(C): a watch or read below C answers OUT_OF_RANGE naming C; from C on, the replay is exact", async () => {
    expect(history.length).toBeGreaterThan(1000);
    const leader = await c.leader();
    const versions = [...new Set(history.map((e) => e.version))];
    const cv = versions[Math.floor(versions.length / 2)]!;
    const r = await cl.of(leader).compactAsync({ version: cv }, deadline(10_000));
    expect(r.compacted).toBe(cv);
    compactedAt = cv;
    // A second compaction at or below it is refused (it cannot bring history back).
    const again = await cl.of(leader).compactAsync({ version: cv - 1 }, deadline(10_000)).then(
      () => "OK",
      (err) => code(err),
    );
    expect(again === grpc.status.OUT_OF_RANGE || again === grpc.status.INVALID_ARGUMENT || again === grpc.status.FAILED_PRECONDITION).toBe(true);

    for (let i = 0; i < 3; i++) {
      // Every node applies the compaction (it is a log entry).
      await eventually(`node${i + 1} compacted`, async () => {
        const err = await watchError(cl.of(i), { watcherId: `below-${i}`, prefixes: [enc("w/")], startVersion: cv - 1 }, 3000);
        return err !== "no error" && err.code === grpc.status.OUT_OF_RANGE ? err : false;
      }, 10_000).then((err) => expect(err.details).toContain(String(cv)));
      // Reads below C too, naming C; at C they are exact.
      const g = await cl.of(i).executeAsync({ op: OpType.Get, rc: ReadConsistency.Serializable, kv: { key: enc("w/before"), version: cv - 1 } }, deadline(5000)).then(
        () => null,
        (err) => err as grpc.ServiceError,
      );
      expect(g?.code).toBe(grpc.status.OUT_OF_RANGE);
      expect(g?.details).toContain(String(cv));
      const rg = await cl.of(i).rangeAsync({ key: enc("w/"), prefix: true, version: cv - 1, rc: ReadConsistency.Serializable }, deadline(5000)).then(
        () => null,
        (err) => err as grpc.ServiceError,
      );
      expect(rg?.code).toBe(grpc.status.OUT_OF_RANGE);
      expect(rg?.details).toContain(String(cv));
    }
    // The state at C, from the stream, is what a Range at C reads.
    const stateAtC = new Map<string, string>();
    for (const e of history) {
      if (e.version > cv) break;
      if (e.type === EventType.Put) stateAtC.set(e.key, e.value);
      else stateAtC.delete(e.key);
    }
    stateAtC.set(hex(enc("w/before")), hex(enc("x")));
    const atC = await rangeAll(cl.of((leader + 1) % 3), "w/", { version: cv, pageLimit: 1000 });
    expect(atC.kvs.map((kv) => `${hex(kv.key)}=${hex(kv.value)}`).sort()).toEqual([...stateAtC].map(([k, v]) => `${k}=${v}`).sort());

    // A watch from exactly C replays every later event, identical to what was seen live.
    const follower = (leader + 2) % 3;
    const replay = new ResumingWatcher(cl, { watcherId: "from-c", prefixes: [enc("w/")], startVersion: cv, progressNotify: true }, follower);
    const last = history[history.length - 1]!.version;
    await replay.until(`the replay to ${last}`, () => replay.progress.some((p) => p.version >= last), 30_000);
    await replay.stop();
    const want = history.filter((e) => e.version > cv).map((e) => `${e.type}:${e.key}=${e.value}@${e.version}`);
    expect(replay.events.filter((e) => e.version <= last).map((e) => `${e.type}:${e.key}=${e.value}@${e.version}`)).toEqual(want);
    expect(replay.streams.length).toBe(1);
  }, 60_000);

  test("a node that catches up through a snapshot replays the same history and keeps the compaction", async () => {
    expect(compactedAt).toBeGreaterThan(0);
    const leader = await c.leader();
    const f = (leader + 1) % 3;
    await c.nodes[f]!.kill9();
    // More entries than --snapshot-threshold + --trailing-logs while it is down.
    let n = 0;
    await Promise.all(
      Array.from({ length: 32 }, async (_, w) => {
        while (n < 1300) {
          n++;
          await cl.of(leader).executeAsync({ op: OpType.Put, kv: { key: enc(`snap/${w}`), value: enc(String(n)) } }, deadline(5000));
        }
      }),
    );
    c.nodes[f]!.start();
    await eventually("the snapshot install", async () => /installed a state machine image/.test(await c.nodes[f]!.logs()), 30_000, 200);
    const below = await eventually("OUT_OF_RANGE below the compaction on the restored node", async () => {
      const err = await watchError(cl.of(f), { watcherId: "snap-below", prefixes: [enc("w/")], startVersion: compactedAt - 1 }, 3000);
      return err !== "no error" && err.code === grpc.status.OUT_OF_RANGE ? err : false;
    }, 15_000);
    expect(below.details).toContain(String(compactedAt));
    const last = history[history.length - 1]!.version;
    const replay = new ResumingWatcher(cl, { watcherId: "snap-replay", prefixes: [enc("w/")], startVersion: compactedAt, progressNotify: true }, f);
    await replay.until(`the replay to ${last}`, () => replay.progress.some((p) => p.version >= last), 30_000);
    await replay.stop();
    expect(replay.streams.length).toBe(1);
    expect(replay.events.map((e) => `${e.type}:${e.key}=${e.value}@${e.version}`)).toEqual(history.filter((e) => e.version > compactedAt).map((e) => `${e.type}:${e.key}=${e.value}@${e.version}`));
  }, 60_000);

  test("Progress events: right after the replay, and at least every progress_interval_ms while idle", async () => {
    const leader = await c.leader();
    const node = (leader + 1) % 3;
    const v = (await cl.of(leader).executeAsync({ op: OpType.Put, kv: { key: enc("idle/k"), value: enc("1") } }, deadline(5000))).version;
    // The node has applied v, so the replay from v - 1 has exactly one event.
    await eventually("the follower applied v", async () => (await cl.of(node).rangeAsync({ key: enc("idle/k"), rc: ReadConsistency.Serializable }, deadline(2000))).kvs.length === 1);

    let wid = 0;
    const collect = (req: { startVersion: number; progressIntervalMs?: number }, ms: number): Promise<{ at: number; r: WatchResponse }[]> =>
      new Promise((resolve) => {
        const got: { at: number; r: WatchResponse }[] = [];
        const t0 = Date.now();
        const s = cl.of(node).watch({ watcherId: `idle-${++wid}`, prefixes: [enc("idle/")], progressNotify: true, ...req });
        s.on("data", (r: WatchResponse) => got.push({ at: Date.now() - t0, r }));
        s.on("error", () => {});
        setTimeout(() => {
          s.cancel();
          resolve(got);
        }, ms);
      });

    // Default interval (1000 ms): the replayed event, then a Progress at >= v, then more while idle.
    const got = await collect({ startVersion: v - 1 }, 3700);
    const trace = got.map((g) => `${g.at}ms ${g.r.event!.type}@${g.r.event!.version}`);
    // The replayed event comes first (a Progress before it would claim v was sent when it was not).
    expect({ first: got[0]?.r.event?.type, version: got[0]?.r.event?.version, trace }).toMatchObject({ first: EventType.Put, version: v });
    expect(got[0]!.r.event!.version).toBe(v);
    const prog = got.filter((g) => g.r.event!.type === EventType.Progress);
    expect(prog.length).toBeGreaterThanOrEqual(3);
    expect(prog[0]!.r.event!.version).toBeGreaterThanOrEqual(v);
    expect(prog[0]!.at).toBeLessThan(1500); // "after every replay", not only after an idle second
    const gaps = prog.slice(1).map((p, k) => p.at - prog[k]!.at);
    expect(Math.max(...gaps, 3700 - prog[prog.length - 1]!.at)).toBeLessThan(1500);
    for (let k = 1; k < prog.length; k++) expect(prog[k]!.r.event!.version).toBeGreaterThanOrEqual(prog[k - 1]!.r.event!.version);
    expect(got.every((g) => g.r.event!.type === EventType.Progress || g.r.event!.type === EventType.Put)).toBe(true);
    expect(prog.every((p) => p.r.event!.key.byteLength === 0)).toBe(true);

    // A shorter interval is honoured.
    const fast = await collect({ startVersion: 0, progressIntervalMs: 200 }, 1500);
    const fp = fast.filter((g) => g.r.event!.type === EventType.Progress);
    expect(fp.length).toBeGreaterThanOrEqual(4);
    expect(Math.max(...fp.slice(1).map((p, k) => p.at - fp[k]!.at))).toBeLessThan(500);

    // Writes elsewhere do not make the stream busy: Progress keeps coming, and moves on.
    let stopNoise = false;
    const noise = (async () => {
      for (let n = 0; !stopNoise; n++) await cl.of(leader).executeAsync({ op: OpType.Put, kv: { key: enc(`noise/${n % 10}`), value: enc(String(n)) } }, deadline(5000)).catch(() => sleep(20));
    })();
    const busy = await collect({ startVersion: 0 }, 2800);
    stopNoise = true;
    await noise;
    const bp = busy.filter((g) => g.r.event!.type === EventType.Progress);
    expect(busy.length).toBe(bp.length); // nothing under idle/ was written
    expect(bp.length).toBeGreaterThanOrEqual(3);
    expect(Math.max(bp[0]!.at, ...bp.slice(1).map((p, k) => p.at - bp[k]!.at))).toBeLessThan(1500);
    expect(bp[bp.length - 1]!.r.event!.version).toBeGreaterThan(bp[0]!.r.event!.version);

    // Without progress_notify (a seed client): never a Progress event.
    const plain = await new Promise<number[]>((resolve) => {
      const types: number[] = [];
      const s = cl.of(node).watch({ watcherId: "idle-plain", prefixes: [enc("idle/")], startVersion: v - 1 });
      s.on("data", (r: WatchResponse) => types.push(r.event!.type));
      s.on("error", () => {});
      setTimeout(() => {
        s.cancel();
        resolve(types);
      }, 1500);
    });
    expect(plain).toEqual([EventType.Put]);
  }, 30_000);
});

// Sessions (exactly-once), proposal dedupe, and the persistence of all new state: snapshot and
// restore, reopen, determinism, damage.

import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from "node:fs";
import { open as lmdbOpen } from "lmdb";
import { type Command, CommandKind } from "../../src/storage/command.ts";
import { type ApplyOutcome, type FsmEntry, KvCorruptionError, KvStore, KvStoreError } from "../../src/storage/fsm.ts";
import { MAX_SESSIONS, SESSION_WINDOW } from "../../src/storage/fsm-sessions.ts";
import { PRUNE_EVERY, PRUNE_IDLE_ENTRIES } from "../../src/storage/proposal-dedupe.ts";
import { crcSeed, sealRecord } from "../../src/storage/record-checksum.ts";
import { b, closeStore, del, entry, ev, one, openStore, put, rec, tempDir, txn } from "./fsm-helpers.ts";

const open_ = (nowMs: number, ttlMs: number): Command => ({ kind: CommandKind.SessionOpen, nowMs, ttlMs });
const close_ = (nowMs: number, sessionId: number): Command => ({ kind: CommandKind.SessionClose, nowMs, sessionId });
const inS = (sessionId: number, seq: number, nowMs: number, inner: Command): Command => ({ kind: CommandKind.InSession, sessionId, seq, nowMs, inner });
const val = (st: KvStore, k: string): string | undefined => {
  const r = st.get(b(k), 0, 0);
  return r ? Buffer.from(r.value).toString() : undefined;
};
const code = (o: ApplyOutcome): string | undefined => (o.result?.kind === "error" ? o.result.code : undefined);

async function image(st: KvStore): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of st.snapshotChunks(4096).chunks) parts.push(c);
  return Buffer.concat(parts);
}
async function* chunksOf(buf: Uint8Array, size = 777): AsyncGenerator<Uint8Array> {
  for (let p = 0; p < buf.length; p += size) yield buf.subarray(p, p + size);
}

/** A store whose every new database has something in it. */
function populated(st: KvStore = openStore()): { st: KvStore; entries: FsmEntry[] } {
  const o1 = new Uint8Array(8).fill(1);
  const o2 = new Uint8Array(8).fill(2);
  const entries: FsmEntry[] = [
    entry(1, put("a", "1"), { origin: o1, counter: 1 }),
    entry(2, open_(10_000, 5_000), { origin: o1, counter: 2 }),
    entry(3, inS(2, 1, 10_100, put("b", "2")), { origin: o2, counter: 1 }),
    entry(4, inS(2, 2, 10_200, txn(10_200, [{ type: "range", ...one(b("a")), limit: 10, reverse: false, keysOnly: false, countOnly: false }, { type: "put", key: b("c"), value: b("3"), meta: 1, expireAt: 99_000 }])), {
      origin: o2,
      counter: 2,
    }),
    entry(5, open_(10_300, 100)),
    entry(6, put("a", "2"), { origin: o1, counter: 3 }),
    entry(7, del("b")),
    entry(8, { kind: CommandKind.Compact, version: 6 }),
    entry(9, put("a", "3", 4, 88_000)),
    entry(10, inS(2, 3, 10_400, del("c"))),
  ];
  st.applyEntries(entries);
  return { st, entries };
}

describe("sessions", () => {
  test("open, write, retry returns the stored result and applies nothing", () => {
    const st = openStore();
    const [opened] = st.applyEntries([entry(1, open_(1000, 60_000))]);
    expect(opened.result).toEqual({ kind: "session-opened", sessionId: 1, ttlMs: 60_000 });
    const [w] = st.applyEntries([entry(2, inS(1, 1, 1100, put("k", "first")))]);
    expect(w.result).toEqual({ kind: "write", version: 2 });
    expect(w.events.map(ev)).toEqual([{ type: "put", key: Buffer.from("k").toString("hex"), value: Buffer.from("first").toString("hex"), meta: 0, version: 2, expireAt: 0 }]);
    st.applyEntries([entry(3, put("k", "other writer"))]);
    // The retry (even with different bytes) gets the stored answer; nothing is applied.
    const [retry] = st.applyEntries([entry(4, inS(1, 1, 1200, put("k", "retry")))]);
    expect(retry).toEqual({ index: 4, version: 0, events: [], result: { kind: "write", version: 2 }, replayed: true });
    expect(val(st, "k")).toBe("other writer");
    expect(st.changes(3, 4, [], 10)).toEqual([]);
    // A txn's result (with a range) is stored whole, errors of the inner command too.
    const t = txn(1300, [{ type: "put", key: b("t"), value: b("x"), meta: 0, expireAt: 0 }, { type: "range", key: b("k"), end: null, limit: 10, reverse: false, keysOnly: false, countOnly: false }]);
    const [first] = st.applyEntries([entry(5, inS(1, 2, 1300, t))]);
    const [again] = st.applyEntries([entry(6, inS(1, 2, 1400, t))]);
    expect(again.replayed).toBe(true);
    expect(again.result).toEqual(first.result!);
    const bad = txn(1500, [{ type: "put", key: b("z"), value: b("1"), meta: 0, expireAt: 0 }, { type: "put", key: b("z"), value: b("2"), meta: 0, expireAt: 0 }]);
    const [c1] = st.applyEntries([entry(7, inS(1, 3, 1500, bad))]);
    const [c2] = st.applyEntries([entry(8, inS(1, 3, 1600, bad))]);
    expect([code(c1), code(c2), c2.replayed]).toEqual(["txn-conflict", "txn-conflict", true]);
  });

  test("seq too old once more than SESSION_WINDOW above it; within the window out of order is fine", () => {
    const st = openStore();
    st.applyEntries([entry(1, open_(0, 1e9))]);
    const es: FsmEntry[] = [];
    for (let q = 1; q <= 300; q++) es.push(entry(1 + q, inS(1, q, 0, put(`k${q % 7}`, `v${q}`))));
    st.applyEntries(es);
    let i = 301;
    const tooOld = st.applyEntries([entry(++i, inS(1, 300 - SESSION_WINDOW, 0, put("x", "y")))])[0];
    expect(code(tooOld)).toBe("session-seq-too-old");
    const replay = st.applyEntries([entry(++i, inS(1, 300 - SESSION_WINDOW + 1, 0, put("x", "y")))])[0];
    expect([replay.replayed, replay.result]).toEqual([true, { kind: "write", version: 1 + 300 - SESSION_WINDOW + 1 }]);
    expect(val(st, "x")).toBeUndefined();
    // A new seq above, then a skipped one below (still in the window): applied once each.
    const hi = st.applyEntries([entry(++i, inS(1, 310, 0, put("h", "310")))])[0];
    const lo = st.applyEntries([entry(++i, inS(1, 305, 0, put("l", "305")))])[0];
    const lo2 = st.applyEntries([entry(++i, inS(1, 305, 0, put("l", "again")))])[0];
    expect([hi.result, lo.result, lo2.replayed, val(st, "l")]).toEqual([{ kind: "write", version: i - 2 }, { kind: "write", version: i - 1 }, true, "305"]);
  });

  test("expiry by the stamped clock (never the wall clock), a clock that goes backwards, close, unknown sessions", () => {
    const st = openStore();
    st.applyEntries([entry(1, open_(10_000, 1000)), entry(2, open_(10_000, 1e9))]);
    expect(st.applyEntries([entry(3, inS(1, 1, 10_500, put("a", "1")))])[0].result).toEqual({ kind: "write", version: 3 });
    // Idle since 10_500 with ttl 1000: alive at 11_499 by the clock of another entry...
    st.applyEntries([entry(4, txn(11_499, []))]);
    expect(st.clockMs).toBe(11_499);
    expect(st.applyEntries([entry(5, inS(1, 2, 11_000, put("a", "2")))])[0].result).toEqual({ kind: "write", version: 5 });
    // ...which the stale 11_000 above did not move back: lastActive is the clock, 11_499.
    expect(st.clockMs).toBe(11_499);
    // A leader whose clock is behind cannot bring it back; time passes only forwards.
    st.applyEntries([entry(6, txn(2_000, []))]);
    expect(st.clockMs).toBe(11_499);
    st.applyEntries([entry(7, txn(12_499, []))]); // 11_499 + 1000: expired, swept
    const [late] = st.applyEntries([entry(8, inS(1, 3, 12_500, put("a", "3")))]);
    expect(code(late)).toBe("session-unknown");
    // A retry of an applied seq after expiry is refused too: never a silent second apply.
    expect(code(st.applyEntries([entry(9, inS(1, 2, 12_600, put("a", "2")))])[0])).toBe("session-unknown");
    expect(val(st, "a")).toBe("2");
    // Close: then unknown; closing again is an error.
    expect(st.applyEntries([entry(10, close_(12_700, 2))])[0].result).toEqual({ kind: "session-closed", sessionId: 2 });
    expect(code(st.applyEntries([entry(11, close_(12_800, 2))])[0])).toBe("session-unknown");
    expect(code(st.applyEntries([entry(12, inS(2, 1, 12_900, put("b", "1")))])[0])).toBe("session-unknown");
    expect(code(st.applyEntries([entry(13, inS(77, 1, 12_900, put("b", "1")))])[0])).toBe("session-unknown");
    expect(val(st, "b")).toBeUndefined();
  });

  test("expired sessions are removed at most 64 per entry, and an expired one not yet swept is refused all the same", () => {
    const st = openStore();
    const es: FsmEntry[] = [];
    for (let i = 1; i <= 150; i++) es.push(entry(i, open_(1000, 10)));
    st.applyEntries(es);
    // One entry far in the future: sweeps 64; session 150 is still in the table but expired.
    st.applyEntries([entry(151, txn(5000, []))]);
    expect(code(st.applyEntries([entry(152, inS(150, 1, 5000, put("k", "v")))])[0])).toBe("session-unknown");
    expect(val(st, "k")).toBeUndefined();
  });

  test(`session table limit (${MAX_SESSIONS})`, () => {
    const st = openStore();
    let i = 0;
    for (let batch = 0; batch < MAX_SESSIONS / 5000; batch++) {
      const es: FsmEntry[] = [];
      for (let j = 0; j < 5000; j++) es.push(entry(++i, open_(0, 1e12)));
      st.applyEntries(es);
    }
    expect(code(st.applyEntries([entry(++i, open_(0, 1e12))])[0])).toBe("session-limit");
    st.applyEntries([entry(++i, close_(0, 7))]);
    expect(st.applyEntries([entry(++i, open_(0, 1e12))])[0].result).toMatchObject({ kind: "session-opened", sessionId: i });
  }, 60_000);
});

describe("proposal dedupe", () => {
  const o1 = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
  const o2 = new Uint8Array([8, 7, 6, 5, 4, 3, 2, 1]);

  test("the same proposal at two indexes applies once; origins are independent; the window admits reordering", () => {
    const st = openStore();
    const out = st.applyEntries([
      entry(1, put("k", "v1"), { origin: o1, counter: 1 }),
      entry(2, put("k", "v1"), { origin: o1, counter: 1 }), // the late copy
      entry(3, put("k", "v2"), { origin: o2, counter: 1 }),
      entry(4, del("k"), { origin: o1, counter: 3 }),
      entry(5, put("k", "v5"), { origin: o1, counter: 2 }), // reordered, not seen: admitted
      entry(6, del("k"), { origin: o1, counter: 3 }), // copy of 4: would delete v5
      entry(7, put("k", "old"), { origin: o1, counter: 1 }), // a third copy of 1
    ]);
    expect(out.map((o) => [o.index, o.version, o.duplicate ?? false, o.events.length])).toEqual([
      [1, 1, false, 1],
      [2, 0, true, 0],
      [3, 3, false, 1],
      [4, 4, false, 1],
      [5, 5, false, 1],
      [6, 0, true, 0],
      [7, 0, true, 0],
    ]);
    expect(val(st, "k")).toBe("v5");
    expect(st.appliedIndex).toBe(7);
    // Far below the window: refused as too old (reported as a duplicate: never applied twice).
    const es: FsmEntry[] = [];
    for (let c = 4; c <= 60; c++) es.push(entry(4 + c, put("n", String(c)), { origin: o2, counter: c }));
    st.applyEntries(es);
    expect(st.applyEntries([entry(65, put("n", "late"), { origin: o2, counter: 2 })])[0].duplicate).toBe(true);
    expect(val(st, "n")).toBe("60");
  });

  test("dedupe state survives reopen; an aborted batch or a damaged record leaves the in-memory window unchanged", async () => {
    const dir = tempDir();
    const st = openStore(dir);
    st.applyEntries([entry(1, put("a", "1"), { origin: o1, counter: 1 })]);
    // A batch that LMDB refuses (an empty key reaches LMDB only through applyCommands): nothing applied...
    expect(() =>
      st.applyCommands([
        { index: 2, cmd: put("b", "2"), proposal: { origin: o1, counter: 2 } },
        { index: 3, cmd: put(new Uint8Array(0), "x"), proposal: { origin: o2, counter: 1 } },
      ]),
    ).toThrow(KvStoreError);
    expect(st.appliedIndex).toBe(1);
    // ...and the proposals of that batch were not remembered as applied.
    expect(st.applyEntries([entry(2, put("b", "2"), { origin: o1, counter: 2 })])[0].duplicate).toBeUndefined();
    expect(val(st, "b")).toBe("2");
    // An entry that meets a damaged record commits nothing of itself, its dedupe window included.
    st.applyEntries([entry(3, put("dmg", "DAMAGED-VALUE-0001"))]);
    await st.flush();
    const file = KvStore.fileIn(dir);
    const bytes = readFileSync(file);
    const fd = openSync(file, "r+");
    for (let at = bytes.indexOf("DAMAGED-VALUE-0001"); at >= 0; at = bytes.indexOf("DAMAGED-VALUE-0001", at + 1)) writeSync(fd, Buffer.from([bytes[at + 3] ^ 0x20]), 0, 1, at + 3);
    closeSync(fd);
    expect(() => st.applyEntries([entry(4, put("dmg", "x"), { origin: o2, counter: 5 })])).toThrow(KvCorruptionError);
    expect(st.appliedIndex).toBe(3);
    expect(st.applyEntries([entry(4, put("ok", "y"), { origin: o2, counter: 5 })])[0].duplicate).toBeUndefined();
    expect(val(st, "ok")).toBe("y");
    await closeStore(st);
    writeFileSync(file, bytes); // undamaged again, for the reopen
    const again = openStore(dir);
    expect(again.applyEntries([entry(4, put("a", "dup"), { origin: o1, counter: 1 })])[0].duplicate).toBe(true);
    expect(val(again, "a")).toBe("1");
  });

  test(`origins idle for ${PRUNE_IDLE_ENTRIES} entries are forgotten at a multiple of ${PRUNE_EVERY}; active ones are kept`, async () => {
    const src = openStore();
    src.applyEntries([entry(1, put("a", "1"), { origin: o1, counter: 1 }), entry(2, put("b", "1"), { origin: o2, counter: 1 })]);
    // Jump the applied index past PRUNE_IDLE_ENTRIES: the same image with a later applied index.
    const img = await image(src);
    const body = Buffer.from(img.subarray(0, img.length - 32));
    const start = PRUNE_IDLE_ENTRIES + 2 * PRUNE_EVERY;
    body.writeUInt32LE(start, 12);
    const dst = openStore();
    await dst.restoreFromChunks(chunksOf(Buffer.concat([body, createHash("sha256").update(body).digest()])));
    expect(dst.appliedIndex).toBe(start);
    // o2 is seen again just before the pruning point; o1 is not.
    const pruneAt = Math.ceil((start + 2) / PRUNE_EVERY) * PRUNE_EVERY;
    const es: FsmEntry[] = [entry(start + 1, put("b", "dup"), { origin: o2, counter: 1 })];
    for (let i = start + 2; i <= pruneAt; i++) es.push({ index: i, data: null });
    const out = dst.applyEntries(es);
    expect(out[0].duplicate).toBe(true);
    const after = dst.applyEntries([entry(pruneAt + 1, put("a", "again"), { origin: o1, counter: 1 }), entry(pruneAt + 2, put("b", "dup"), { origin: o2, counter: 1 })]);
    expect([after[0].duplicate, after[1].duplicate]).toEqual([undefined, true]);
    expect([val(dst, "a"), val(dst, "b")]).toEqual(["again", "1"]);
  });
});

describe("persistence of the new state", () => {
  test("snapshot → restore round trip: byte-identical image, sessions, results, dedupe, compaction, clock, changes", async () => {
    const { st: src } = populated();
    const img = await image(src);
    const dst = openStore();
    dst.applyEntries([entry(1, put("junk", "x")), entry(2, open_(0, 1))]);
    expect(await dst.restoreFromChunks(chunksOf(img))).toBe(10);
    expect((await image(dst)).equals(img)).toBe(true);
    for (const st of [src, dst]) {
      expect([st.compactedVersion, st.clockMs, st.get(b("junk"), 0, 0)]).toEqual([6, 10_400, null]);
      expect(st.changes(6, 10, [], 100).map(ev)).toEqual(src.changes(6, 10, [], 100).map(ev));
      const out = st.applyEntries([
        entry(11, inS(2, 2, 10_500, put("zz", "no"))), // a stored result: replayed
        entry(12, put("a", "dup"), { origin: new Uint8Array(8).fill(1), counter: 3 }), // applied before: duplicate
        entry(13, inS(5, 1, 10_500, put("zz", "no"))), // session 5 (ttl 100) expired by the clock
        entry(14, inS(2, 4, 10_600, put("zz", "yes"))),
      ]);
      expect([out[0].replayed, out[1].duplicate, code(out[2]), out[3].result]).toEqual([true, true, "session-unknown", { kind: "write", version: 14 }]);
      expect(out[0].result?.kind).toBe("txn");
      expect([val(st, "a"), val(st, "zz"), rec(st.get(b("a"), 0, 0))?.create]).toEqual(["3", "yes", 1]);
    }
  });

  test("reopen keeps everything (the image is unchanged), and every new database is checked at open", async () => {
    const dir = tempDir();
    const { st } = populated(openStore(dir));
    const img = await image(st);
    await closeStore(st);
    const again = openStore(dir);
    expect(again.verified!.records).toBeGreaterThan(20);
    expect((await image(again)).equals(img)).toBe(true);
    expect(again.applyEntries([entry(11, inS(2, 3, 10_500, put("q", "no")))])[0].replayed).toBe(true);
    await closeStore(again);
    // A changed byte in a session record is refused at open, naming it.
    const file = KvStore.fileIn(dir);
    const buf = readFileSync(file);
    const sk = Buffer.alloc(8);
    sk.writeUInt32BE(2, 4);
    // A sessions leaf node: [u16 size lo][u16 hi][u16 flags][u16 key size = 8][key][28-byte value].
    let n = 0;
    for (let at = buf.indexOf(sk); at >= 0; at = buf.indexOf(sk, at + 1)) {
      if (buf.readUInt16LE(at - 2) === 8 && buf.readUInt16LE(at - 8) === 28) {
        buf[at + 8 + 3] ^= 0x10;
        n++;
      }
    }
    expect(n).toBeGreaterThan(0);
    writeFileSync(file, buf);
    let err: unknown;
    try {
      KvStore.open({ dir, versionKeepNum: 0 });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KvCorruptionError);
    expect((err as Error).message).toBe(`${file}: corrupted: checksum mismatch in sessions record for session 2`);
  });

  test("determinism: two stores fed the same entries end with byte-identical images", async () => {
    const a = populated().st;
    const { st: c, entries } = populated();
    expect(entries.length).toBe(10);
    expect((await image(a)).equals(await image(c))).toBe(true);
  });

  test("applyEntriesAsync (the node's path) and other batchings end in the same image", async () => {
    const { st: sync, entries } = populated();
    const asyncStore = openStore();
    await asyncStore.applyEntriesAsync(entries.slice(0, 4));
    await asyncStore.applyEntriesAsync(entries.slice(4));
    const single = openStore();
    for (const e of entries) single.applyEntries([e]);
    const img = await image(sync);
    expect((await image(asyncStore)).equals(img)).toBe(true);
    expect((await image(single)).equals(img)).toBe(true);
  });

  test("a restore refuses an image whose session result is damaged, even with a matching digest", async () => {
    const { st } = populated();
    const img = await image(st);
    // The stored result of (2, 1) is {kind "write", version 3}: flip a bit in its value.
    const rk = Buffer.alloc(16);
    rk.writeUInt32BE(2, 4);
    rk.writeUInt32BE(1, 12);
    const body = Buffer.from(img.subarray(0, img.length - 32));
    const at = body.indexOf(rk);
    expect(at).toBeGreaterThan(0);
    body[at + 16 + 1] ^= 0x01;
    const forged = Buffer.concat([body, createHash("sha256").update(body).digest()]);
    const dst = openStore();
    await expect(dst.restoreFromChunks(chunksOf(forged))).rejects.toThrow(/checksum mismatch in session-results record for session 2 seq 1/);
    expect(await dst.restoreFromChunks(chunksOf(img))).toBe(10);
  });

  test("a file of FSM format version 2 is refused, naming both versions", async () => {
    const dir = tempDir();
    const file = KvStore.fileIn(dir);
    const env = lmdbOpen<Uint8Array, Buffer>({ path: file, noSubdir: true, maxDbs: 8, encoding: "binary", keyEncoding: "binary" });
    const dbs = Object.fromEntries(["latest", "history", "expiry", "meta"].map((n) => [n, env.openDB<Uint8Array, Buffer>(n, { encoding: "binary", keyEncoding: "binary" })]));
    const marker = Buffer.concat([Buffer.from("rbkv-fsm\x00\x02"), Buffer.alloc(4)]);
    sealRecord(marker, crcSeed(Buffer.from("format")));
    const applied = Buffer.alloc(12);
    sealRecord(applied, crcSeed(Buffer.from("applied")));
    await env.transaction(() => {
      dbs.meta!.putSync(Buffer.from("format"), marker);
      dbs.meta!.putSync(Buffer.from("applied"), applied);
    });
    await env.close();
    let err: unknown;
    try {
      openStore(dir);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KvStoreError);
    expect((err as Error).message).toBe(
      `${file}: FSM format version 2 (written by an older rbkv, without create versions, the changes index, sessions and proposal dedupe); this rbkv reads format version 3 only, refusing to open it`,
    );
  });
});


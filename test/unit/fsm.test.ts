// The FSM on real LMDB (temp dirs) and the command codec.

import { afterEach, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { open as lmdbOpen } from "lmdb";
import { type Command, CommandDecodeError, CommandKind, decodeCommand, encodeCommand } from "../../src/storage/command.ts";
import { type FsmEntry, KvCorruptionError, KvStore, KvStoreError, VersionCompactedError } from "../../src/storage/fsm.ts";
import { KIND_PUT, checkExpiry, checkRecord, encodeRecord, expiryKey, expiryValue, historyKey } from "../../src/storage/fsm-format.ts";
import { crcSeed } from "../../src/storage/record-checksum.ts";
import { Prng } from "../sim/prng.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const b = (s: string): Uint8Array => te.encode(s);
const s = (u: Uint8Array | undefined): string | undefined => (u === undefined ? undefined : td.decode(u));

const dirs: string[] = [];
const stores: KvStore[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "rbkv-fsm-"));
  dirs.push(d);
  return d;
}
function openStore(dir: string, versionKeepNum = 0, unsafeNoSync = false): KvStore {
  const st = KvStore.open({ dir, versionKeepNum, unsafeNoSync });
  stores.push(st);
  return st;
}
afterEach(async () => {
  for (const st of stores.splice(0)) await st.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const putE = (index: number, key: string | Uint8Array, value: string | Uint8Array, meta = 0, expireAt = 0): FsmEntry => ({
  index,
  data: encodeCommand({
    kind: CommandKind.Put,
    key: typeof key === "string" ? b(key) : key,
    value: typeof value === "string" ? b(value) : value,
    meta,
    expireAt,
  }),
});
const delE = (index: number, key: string | Uint8Array): FsmEntry => ({
  index,
  data: encodeCommand({ kind: CommandKind.Delete, key: typeof key === "string" ? b(key) : key }),
});
const expE = (index: number, key: string | Uint8Array, version: number): FsmEntry => ({
  index,
  data: encodeCommand({ kind: CommandKind.ExpireKey, key: typeof key === "string" ? b(key) : key, version }),
});
/** The value read at a version, as a string (undefined = not found). */
const at = (st: KvStore, key: string | Uint8Array, version = 0, now = 0): string | undefined =>
  s(st.get(typeof key === "string" ? b(key) : key, version, now)?.value);
/** As `at`, but "compacted" for a read below the compacted version. */
function atOr(st: KvStore, key: string | Uint8Array, version = 0, now = 0): string | undefined {
  try {
    return at(st, key, version, now);
  } catch (e) {
    if (e instanceof VersionCompactedError) return "compacted";
    throw e;
  }
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const c of chunks) out.push(c);
  return out;
}
async function* fromChunks(chunks: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const c of chunks) yield c;
}
function concat(chunks: Uint8Array[]): Buffer {
  return Buffer.concat(chunks.map((c) => Buffer.from(c)));
}
/** Re-splits a byte string into chunks of random small sizes. */
function rechunk(bytes: Uint8Array, rng: Prng, max: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let p = 0; p < bytes.length; ) {
    const n = Math.min(bytes.length - p, rng.int(1, max));
    out.push(bytes.slice(p, p + n));
    p += n;
  }
  return out;
}

describe("command codec", () => {
  const samples: Command[] = [
    { kind: CommandKind.Put, key: b("k"), value: b("v"), meta: 0, expireAt: 0 },
    { kind: CommandKind.Put, key: new Uint8Array([0, 255, 0]), value: new Uint8Array(0), meta: 0xffffffff, expireAt: 2 ** 52 + 3 },
    { kind: CommandKind.Put, key: new Uint8Array(4096).fill(7), value: new Uint8Array(70_000).fill(9), meta: 42, expireAt: 1_700_000_000_123 },
    { kind: CommandKind.Delete, key: b("gone") },
    { kind: CommandKind.ExpireKey, key: b("ttl"), version: 2 ** 40 + 17 },
  ];

  test("round-trips every kind, including numbers above 2^32 and binary keys", () => {
    for (const c of samples) {
      const enc = encodeCommand(c);
      expect(enc[0]).toBe(1);
      expect(enc[1]).toBe(c.kind);
      expect(decodeCommand(enc)).toEqual(c);
    }
  });

  test("decodes from a view with a non-zero byteOffset", () => {
    const enc = encodeCommand(samples[1]);
    const big = new Uint8Array(enc.length + 13);
    big.set(enc, 13);
    expect(decodeCommand(big.subarray(13))).toEqual(samples[1]);
  });

  test("every truncation, trailing byte, bad format/kind and bad field is a CommandDecodeError", () => {
    for (const c of samples.slice(0, 2).concat(samples.slice(3))) {
      const enc = encodeCommand(c);
      for (let n = 0; n < enc.length; n++) expect(() => decodeCommand(enc.subarray(0, n))).toThrow(CommandDecodeError);
      const longer = new Uint8Array(enc.length + 1);
      longer.set(enc);
      expect(() => decodeCommand(longer)).toThrow(/trailing/);
    }
    const put = encodeCommand(samples[0]);
    const badFormat = put.slice();
    badFormat[0] = 2;
    expect(() => decodeCommand(badFormat)).toThrow(/format 2/);
    const badKind = put.slice();
    badKind[1] = 9;
    expect(() => decodeCommand(badKind)).toThrow(/kind 9/);
    const negExpire = put.slice();
    new DataView(negExpire.buffer).setFloat64(6, -1, true);
    expect(() => decodeCommand(negExpire)).toThrow(/expireAt/);
    const nanExpire = put.slice();
    new DataView(nanExpire.buffer).setFloat64(6, Number.NaN, true);
    expect(() => decodeCommand(nanExpire)).toThrow(CommandDecodeError);
    const emptyKey = new Uint8Array([1, CommandKind.Delete, 0, 0, 0, 0]);
    expect(() => decodeCommand(emptyKey)).toThrow(/empty key/);
    const v0 = encodeCommand({ kind: CommandKind.ExpireKey, key: b("k"), version: 1 });
    new DataView(v0.buffer).setFloat64(2, 0, true);
    expect(() => decodeCommand(v0)).toThrow(/version 0/);
  });

  test("encode rejects invalid commands", () => {
    expect(() => encodeCommand({ kind: CommandKind.Delete, key: new Uint8Array(0) })).toThrow(RangeError);
    expect(() => encodeCommand({ kind: CommandKind.Put, key: b("k"), value: b("v"), meta: 2 ** 32, expireAt: 0 })).toThrow(RangeError);
    expect(() => encodeCommand({ kind: CommandKind.Put, key: b("k"), value: b("v"), meta: 0, expireAt: -5 })).toThrow(RangeError);
    expect(() => encodeCommand({ kind: CommandKind.ExpireKey, key: b("k"), version: 0 })).toThrow(RangeError);
  });

  test("fuzz: random and mutated bytes never throw anything but CommandDecodeError", () => {
    const rng = new Prng(12345);
    let decoded = 0;
    let rejected = 0;
    const tryDecode = (data: Uint8Array) => {
      try {
        const c = decodeCommand(data);
        decoded++;
        // Whatever decodes must re-encode to the same bytes (the format is canonical).
        expect(Buffer.from(encodeCommand(c)).equals(Buffer.from(data))).toBe(true);
      } catch (e) {
        if (!(e instanceof CommandDecodeError)) throw e;
        expect(e.message.length).toBeGreaterThan(10);
        rejected++;
      }
    };
    for (let i = 0; i < 20_000; i++) {
      const data = new Uint8Array(rng.int(0, 40));
      for (let j = 0; j < data.length; j++) data[j] = rng.int(0, 255);
      if (data.length > 0 && rng.float() < 0.5) data[0] = 1; // reach past the format byte
      if (data.length > 1 && rng.float() < 0.5) data[1] = rng.int(1, 3);
      tryDecode(data);
    }
    for (let i = 0; i < 20_000; i++) {
      const data = encodeCommand(samples[rng.int(0, samples.length - 1)]).slice(0, rng.int(0, 60));
      for (let m = rng.int(1, 3); m > 0 && data.length > 0; m--) data[rng.int(0, data.length - 1)] = rng.int(0, 255);
      tryDecode(data);
    }
    expect(rejected).toBeGreaterThan(1000);
    expect(decoded + rejected).toBe(40_000);
  });
});

describe("KvStore", () => {
  test("put / get / delete with outcomes and events", () => {
    const st = openStore(tempDir());
    expect(st.appliedIndex).toBe(0);
    const out = st.applyEntries([
      putE(1, "a", "one", 7),
      putE(2, "b", "two"),
      { index: 3, data: null },
      { index: 4, data: new Uint8Array([1, 99, 0]) }, // undecodable: skipped by every replica
      delE(5, "a"),
      delE(6, "missing"),
      putE(7, "b", "two-bis", 3),
    ]);
    expect(st.appliedIndex).toBe(7);
    expect(out.map((o) => [o.index, o.version, o.events.length])).toEqual([
      [1, 1, 1],
      [2, 2, 1],
      [3, 0, 0],
      [4, 0, 0],
      [5, 5, 1],
      [6, 6, 0],
      [7, 7, 1],
    ]);
    const ev = out[0].events[0];
    expect([ev.type, s(ev.key), s(ev.value), ev.meta, ev.version, ev.expireAt]).toEqual(["put", "a", "one", 7, 1, 0]);
    const del = out[4].events[0];
    expect([del.type, s(del.key), del.value.length, del.meta, del.version, del.expireAt]).toEqual(["delete", "a", 0, 0, 5, 0]);
    expect(st.get(b("a"), 0, 0)).toBeNull();
    const rec = st.get(b("b"), 0, 0)!;
    expect([s(rec.key), s(rec.value), rec.meta, rec.version, rec.expireAt]).toEqual(["b", "two-bis", 3, 7, 0]);
    expect(st.get(b("never"), 0, 0)).toBeNull();
    expect(st.get(new Uint8Array(0), 0, 0)).toBeNull();
  });

  test("reads at versions: before the first put, between versions, at and after a delete, after a re-put", () => {
    const st = openStore(tempDir());
    st.applyEntries([putE(1, "x", "other"), putE(2, "k", "v2"), putE(3, "x", "o3"), putE(4, "k", "v4"), putE(5, "x", "o5"), delE(6, "k"), putE(7, "x", "o7")]);
    expect(at(st, "k", 1)).toBeUndefined();
    expect(at(st, "k", 2)).toBe("v2");
    expect(at(st, "k", 3)).toBe("v2");
    expect(at(st, "k", 4)).toBe("v4");
    expect(at(st, "k", 5)).toBe("v4");
    expect(at(st, "k", 6)).toBeUndefined();
    expect(at(st, "k", 100)).toBeUndefined();
    expect(at(st, "k", 0)).toBeUndefined();
    st.applyEntries([putE(8, "k", "v8")]);
    expect(at(st, "k", 7)).toBeUndefined();
    expect(at(st, "k", 8)).toBe("v8");
    expect(at(st, "k", 0)).toBe("v8");
    expect(at(st, "k", 5)).toBe("v4");
    expect(st.get(b("k"), 5, 0)!.version).toBe(4);
    expect(at(st, "x", 6)).toBe("o5");
    expect(at(st, "x", 2)).toBe("other");
  });

  test("history of keys that are prefixes of each other or contain zero bytes never mixes", () => {
    const st = openStore(tempDir());
    const k1 = new Uint8Array([0x61]);
    const k2 = new Uint8Array([0x61, 0x00]);
    const k3 = new Uint8Array([0x61, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    const k4 = new Uint8Array([0x61, 0xff]);
    st.applyEntries([putE(1, k1, "k1a"), putE(2, k2, "k2a"), putE(3, k3, "k3a"), putE(4, k4, "k4a"), delE(5, k1), putE(6, k2, "k2b"), putE(7, k3, "k3b")]);
    expect([at(st, k1, 4), at(st, k1, 5), at(st, k1, 9)]).toEqual(["k1a", undefined, undefined]);
    expect([at(st, k2, 1), at(st, k2, 5), at(st, k2, 6)]).toEqual([undefined, "k2a", "k2b"]);
    expect([at(st, k3, 2), at(st, k3, 6), at(st, k3, 7)]).toEqual([undefined, "k3a", "k3b"]);
    expect([at(st, k4, 3), at(st, k4, 7)]).toEqual([undefined, "k4a"]);
  });

  test("keys up to 4 KiB, including long keys sharing a long prefix, and ~1 MiB values with history", () => {
    const st = openStore(tempDir());
    const long1 = new Uint8Array(4096).fill(0x41);
    const long2 = long1.slice();
    long2[4000] = 0x42;
    const mid = new Uint8Array(481).fill(0x41);
    const bigA = new Uint8Array(1 << 20).fill(1);
    bigA[12345] = 77;
    const bigB = new Uint8Array((1 << 20) - 3).fill(2);
    st.applyEntries([putE(1, long1, bigA), putE(2, long2, "two"), putE(3, mid, "mid", 0, 50), putE(4, long1, bigB), delE(5, long2)]);
    expect(Buffer.from(st.get(long1, 0, 0)!.value).equals(Buffer.from(bigB))).toBe(true);
    expect(Buffer.from(st.get(long1, 3, 0)!.value).equals(Buffer.from(bigA))).toBe(true);
    expect(st.get(long1, 0, 0)!.key).toEqual(long1);
    expect([at(st, long2, 2), at(st, long2, 5)]).toEqual(["two", undefined]);
    expect(at(st, mid)).toBe("mid");
    expect(st.stats().keyCount).toBe(2);
    st.applyEntries([putE(6, long2, "exp", 0, 10)]);
    const exp = st.expiredKeys(100, 10);
    // long2 expires at 10, mid at 50: both are due; the hashed key comes back in full.
    expect(exp.map((e) => [Buffer.from(e.key).toString("hex"), e.version])).toEqual([
      [Buffer.from(long2).toString("hex"), 6],
      [Buffer.from(mid).toString("hex"), 3],
    ]);
  });

  test("versionKeepNum prunes old versions and keeps recent ones; reads below what it dropped are refused as compacted", () => {
    const vers = (st: KvStore, k: string) => st.versions(b(k)).map((v) => (v.deleted ? -v.version : v.version));
    const C = "compacted";
    const st = openStore(tempDir(), 2);
    st.applyEntries([1, 2, 3, 4, 5].map((i) => putE(i, "k", `v${i}`)));
    expect(vers(st, "k")).toEqual([4, 5]);
    expect(st.compactedVersion).toBe(4); // the oldest version of "k" still kept
    expect([1, 2, 3, 4, 5].map((v) => atOr(st, "k", v))).toEqual([C, C, C, "v4", "v5"]);
    // Delete: the last put and the tombstone are the two kept versions.
    st.applyEntries([delE(6, "k")]);
    expect(vers(st, "k")).toEqual([5, -6]);
    expect([atOr(st, "k", 4), atOr(st, "k", 5), atOr(st, "k", 6), atOr(st, "k", 0)]).toEqual([C, "v5", undefined, undefined]);
    // Re-put: the tombstone would be the oldest kept version; it hides nothing, so it goes too.
    st.applyEntries([putE(7, "k", "v7")]);
    expect(vers(st, "k")).toEqual([7]);
    expect([atOr(st, "k", 5), atOr(st, "k", 6), atOr(st, "k", 7)]).toEqual([C, C, "v7"]);
    expect(st.compactedVersion).toBe(7);

    const one = openStore(tempDir(), 1);
    one.applyEntries([putE(1, "k", "a"), putE(2, "k", "b")]);
    expect(vers(one, "k")).toEqual([2]);
    expect([atOr(one, "k", 1), atOr(one, "k", 2)]).toEqual([C, "b"]);
    one.applyEntries([delE(3, "k")]);
    expect(vers(one, "k")).toEqual([]); // a deleted key leaves nothing behind
    expect([atOr(one, "k", 2), atOr(one, "k", 3), atOr(one, "k", 9)]).toEqual([C, undefined, undefined]);

    const three = openStore(tempDir(), 3);
    three.applyEntries([putE(1, "k", "a"), putE(2, "k", "b"), delE(3, "k"), putE(4, "k", "d")]);
    expect(vers(three, "k")).toEqual([2, -3, 4]);
    expect([atOr(three, "k", 1), atOr(three, "k", 2), atOr(three, "k", 3), atOr(three, "k", 4)]).toEqual([C, "b", undefined, "d"]);

    const all = openStore(tempDir(), 0);
    all.applyEntries([putE(1, "k", "a"), putE(2, "k", "b"), delE(3, "k"), putE(4, "k", "d")]);
    expect(vers(all, "k")).toEqual([1, 2, -3, 4]);
    expect([at(all, "k", 1), at(all, "k", 2), at(all, "k", 3)]).toEqual(["a", "b", undefined]);
    expect(all.compactedVersion).toBe(0);
  });

  test("lowering versionKeepNum across a restart: old history never resurfaces after a delete", async () => {
    const dir = tempDir();
    const st = openStore(dir, 0);
    st.applyEntries([putE(1, "k", "a"), putE(2, "k", "b")]);
    await st.close();
    const st1 = openStore(dir, 1);
    st1.applyEntries([delE(3, "k")]);
    expect([atOr(st1, "k", 1), atOr(st1, "k", 2), atOr(st1, "k", 3), atOr(st1, "k", 10)]).toEqual(["compacted", "compacted", undefined, undefined]);
    expect(st1.versions(b("k"))).toEqual([]);
    st1.applyEntries([putE(4, "j", "a"), putE(5, "j", "b")]);
    expect([atOr(st1, "j", 4), atOr(st1, "j", 5)]).toEqual(["compacted", "b"]);
  });

  test("TTL: expired reads are null, expiredKeys lists them oldest first, ExpireKey deletes only on version match", () => {
    const st = openStore(tempDir());
    st.applyEntries([
      putE(1, "late", "L", 0, 3000),
      putE(2, "early", "E", 0, 1000),
      putE(3, "forever", "F"),
      putE(4, "mid", "M", 0, 2000),
      putE(5, "redo", "R1", 0, 500),
      putE(6, "redo", "R2", 0, 2500), // overwriting replaces the old expiry entry
      putE(7, "untimed", "U", 0, 1500),
      putE(8, "untimed", "U2"), // ...and a put without TTL removes it
    ]);
    expect(at(st, "early", 0, 999)).toBe("E");
    expect(at(st, "early", 0, 1000)).toBeUndefined();
    expect(at(st, "early", 2, 1000)).toBeUndefined();
    expect(st.get(b("early"), 0, 999)!.expireAt).toBe(1000);
    expect(st.expiredKeys(999, 10)).toEqual([]);
    const exp = st.expiredKeys(10_000, 10).map((e) => [s(e.key), e.version]);
    expect(exp).toEqual([
      ["early", 2],
      ["mid", 4],
      ["redo", 6],
      ["late", 1],
    ]);
    expect(st.expiredKeys(2000, 10).map((e) => s(e.key))).toEqual(["early", "mid"]);
    expect(st.expiredKeys(10_000, 1).map((e) => s(e.key))).toEqual(["early"]);
    expect(st.stats().keyCount).toBe(6); // expired but not yet reaped keys are still stored

    // Stale version: no-op, no event.
    const stale = st.applyEntries([expE(9, "redo", 5)]);
    expect(stale[0].events).toEqual([]);
    expect(at(st, "redo", 0, 0)).toBe("R2");
    // A key without TTL is never expired by ExpireKey.
    expect(st.applyEntries([expE(10, "forever", 3)])[0].events).toEqual([]);
    expect(at(st, "forever")).toBe("F");
    // Matching version: deleted, with a delete event carrying the expiry.
    const ok = st.applyEntries([expE(11, "redo", 6)]);
    expect(ok[0].events.map((e) => [e.type, s(e.key), e.version, e.expireAt])).toEqual([["delete", "redo", 11, 2500]]);
    expect(at(st, "redo", 0, 0)).toBeUndefined();
    expect(at(st, "redo", 10, 0)).toBe("R2");
    expect(st.expiredKeys(10_000, 10).map((e) => s(e.key))).toEqual(["early", "mid", "late"]);
    // A Delete also removes the expiry entry.
    st.applyEntries([delE(12, "mid")]);
    expect(st.expiredKeys(10_000, 10).map((e) => s(e.key))).toEqual(["early", "late"]);
    // ExpireKey on a missing key: no event.
    expect(st.applyEntries([expE(13, "nothing", 1)])[0].events).toEqual([]);
    expect(st.stats().keyCount).toBe(4);
  });

  test("replay is idempotent and gaps are refused without applying anything", () => {
    const st = openStore(tempDir());
    const entries = [putE(1, "a", "1"), putE(2, "b", "2"), delE(3, "a"), putE(4, "c", "4", 0, 100)];
    st.applyEntries(entries);
    expect(st.applyEntries(entries)).toEqual([]);
    expect(st.appliedIndex).toBe(4);
    expect([at(st, "a"), at(st, "b"), at(st, "c"), at(st, "a", 2)]).toEqual([undefined, "2", "4", "1"]);
    expect(st.stats().keyCount).toBe(2);
    expect(st.expiredKeys(1000, 10).map((e) => e.version)).toEqual([4]);
    // Overlapping batch: only the new tail is applied.
    const out = st.applyEntries([putE(3, "a", "X"), putE(4, "c", "Y"), putE(5, "d", "5")]);
    expect(out.map((o) => o.index)).toEqual([5]);
    expect([at(st, "a"), at(st, "c")]).toEqual([undefined, "4"]);
    expect(() => st.applyEntries([putE(7, "e", "7")])).toThrow(KvStoreError);
    expect(() => st.applyEntries([putE(6, "e", "6"), putE(8, "f", "8")])).toThrow(/contiguous/);
    expect(st.appliedIndex).toBe(5);
    expect(at(st, "e")).toBeUndefined();
  });

  test("data and the applied index persist across close and reopen", async () => {
    const dir = tempDir();
    const st = openStore(dir);
    st.applyEntries([putE(1, "a", "1"), putE(2, "a", "2", 5, 9000), { index: 3, data: null }]);
    await st.flush();
    await st.close();
    expect(() => st.get(b("a"), 0, 0)).toThrow(KvStoreError);
    const again = openStore(dir);
    expect(again.appliedIndex).toBe(3);
    const rec = again.get(b("a"), 0, 0)!;
    expect([s(rec.value), rec.meta, rec.version, rec.expireAt]).toEqual(["2", 5, 2, 9000]);
    expect(at(again, "a", 1)).toBe("1");
    expect(again.expiredKeys(9000, 5).map((e) => s(e.key))).toEqual(["a"]);
  });

  test("SIGKILL during a stream of applies leaves a consistent store: whole batches, data matching the applied index", async () => {
    const dir = tempDir();
    const root = join(import.meta.dir, "../..");
    // The child applies batches of 50 puts forever: entry i writes key k(i % 97) = i.
    const child = `
      import { KvStore } from ${JSON.stringify(join(root, "src/storage/fsm.ts"))};
      import { encodeCommand } from ${JSON.stringify(join(root, "src/storage/command.ts"))};
      const st = KvStore.open({ dir: process.env.FSM_DIR, versionKeepNum: 2 });
      let i = st.appliedIndex;
      const start = i;
      for (;;) {
        const es = [];
        for (let j = 0; j < 50; j++) {
          i++;
          es.push({ index: i, data: encodeCommand({ kind: 1, key: Buffer.from("k" + (i % 97)), value: Buffer.from(String(i)), meta: 0, expireAt: 0 }) });
        }
        st.applyEntries(es);
        if (i === start + 500) console.log("ready");
      }`;
    let last = 0;
    for (let round = 0; round < 3; round++) {
      const proc = Bun.spawn([process.execPath, "-e", child], { env: { ...process.env, FSM_DIR: dir }, stdout: "pipe", stderr: "pipe" });
      const reader = proc.stdout.getReader();
      const first = await reader.read();
      expect(new TextDecoder().decode(first.value)).toContain("ready");
      await Bun.sleep(20 + round * 30);
      proc.kill("SIGKILL");
      expect(await proc.exited).not.toBe(0);
      const st = openStore(dir);
      const applied = st.appliedIndex;
      expect(applied).toBeGreaterThan(last + 500);
      expect(applied % 50).toBe(0); // a batch is one transaction
      for (let k = 0; k < 97; k++) {
        let expected = applied;
        while (expected % 97 !== k) expected--;
        const rec = st.get(b(`k${k}`), 0, 0)!;
        expect([k, s(rec.value), rec.version]).toEqual([k, String(expected), expected]);
      }
      last = applied;
      await st.close();
      stores.splice(stores.indexOf(st), 1);
    }
  });

  test("the same directory cannot be opened twice in one process", () => {
    const dir = tempDir();
    openStore(dir);
    expect(() => KvStore.open({ dir, versionKeepNum: 0 })).toThrow(/already open/);
  });

  test("unsafeNoSync mode applies, flushes and reopens", async () => {
    const dir = tempDir();
    const st = openStore(dir, 0, true);
    st.applyEntries([putE(1, "a", "1")]);
    await st.flush();
    await st.close();
    const again = openStore(dir);
    expect([again.appliedIndex, at(again, "a")]).toEqual([1, "1"]);
  });

  function populate(st: KvStore): void {
    const long = new Uint8Array(3000).fill(5);
    st.applyEntries([
      putE(1, "a", "a1", 1),
      putE(2, "b", "b2", 2, 5000),
      putE(3, "a", "a3", 3),
      putE(4, long, new Uint8Array(40_000).fill(4)),
      delE(5, "b"),
      putE(6, "c", "c6", 6, 7000),
      putE(7, new Uint8Array([0, 1, 0]), "zero"),
      { index: 8, data: null },
    ]);
  }
  function fingerprint(st: KvStore): unknown {
    const keys = ["a", "b", "c", new Uint8Array(3000).fill(5), new Uint8Array([0, 1, 0]), "target-only"];
    const reads = keys.flatMap((k) =>
      [0, 1, 2, 3, 4, 5, 6, 7].map((v) => {
        const r = st.get(typeof k === "string" ? b(k) : k, v, 0);
        return r && [Buffer.from(r.value).toString("hex").slice(0, 40), r.value.length, r.meta, r.version, r.expireAt];
      }),
    );
    return { applied: st.appliedIndex, reads, keyCount: st.stats().keyCount, expired: st.expiredKeys(1e13, 10).map((e) => [s(e.key), e.version]) };
  }

  test("snapshot → restore into another store gives identical reads, applied index and expiry index", async () => {
    const src = openStore(tempDir());
    populate(src);
    const dstDir = tempDir();
    const dst = openStore(dstDir);
    dst.applyEntries([putE(1, "target-only", "x"), putE(2, "a", "old")]);

    const snap = src.snapshotChunks(1024);
    expect(snap.appliedIndex).toBe(8);
    // Writes after the snapshot started are not in the image (one read transaction).
    src.applyEntries([putE(9, "late", "not in image")]);
    const chunks = await collect(snap.chunks);
    expect(chunks.length).toBeGreaterThan(1);
    // Feed it back in odd-sized pieces so records and the header/trailer straddle chunk boundaries.
    const applied = await dst.restoreFromChunks(fromChunks(rechunk(concat(chunks), new Prng(7), 5000)));
    expect(applied).toBe(8);
    expect(dst.appliedIndex).toBe(8);
    expect(at(dst, "late")).toBeUndefined();
    expect(at(dst, "target-only")).toBeUndefined();
    // The source minus entry 9 (which the image does not hold).
    const ref = openStore(tempDir());
    populate(ref);
    expect(fingerprint(dst)).toEqual(fingerprint(ref));
    expect(readdirSync(dstDir).sort()).toEqual(["fsm.mdb", "fsm.mdb-lock"]);
    // The restored store keeps working and survives a reopen.
    dst.applyEntries([putE(9, "after", "restore")]);
    await dst.close();
    const re = openStore(dstDir);
    expect([re.appliedIndex, at(re, "after"), at(re, "a", 2)]).toEqual([9, "restore", "a1"]);
  });

  test("a truncated or corrupted snapshot stream throws KvStoreError and leaves the target unchanged", async () => {
    const src = openStore(tempDir());
    populate(src);
    const image = concat(await collect(src.snapshotChunks(4096).chunks));
    const dstDir = tempDir();
    const dst = openStore(dstDir);
    dst.applyEntries([putE(1, "mine", "kept"), putE(2, "mine", "kept2")]);
    const before = fingerprint(dst);

    const flip = (pos: number) => {
      const c = Buffer.from(image);
      c[pos] ^= 0x20;
      return c;
    };
    const cases: [string, Uint8Array][] = [
      ["empty", new Uint8Array(0)],
      ["header only", image.subarray(0, 20)],
      ["cut in the middle", image.subarray(0, Math.floor(image.length / 2))],
      ["cut before the checksum", image.subarray(0, image.length - 32)],
      ["one byte short", image.subarray(0, image.length - 1)],
      ["flipped bit in a value", flip(Math.floor(image.length / 2))],
      ["flipped bit in the checksum", flip(image.length - 3)],
      ["bad magic", flip(0)],
      ["trailing data", Buffer.concat([image, Buffer.from([0])])],
    ];
    for (const [name, bytes] of cases) {
      let err: unknown;
      try {
        await dst.restoreFromChunks(fromChunks(rechunk(bytes, new Prng(name.length), 3000)));
      } catch (e) {
        err = e;
      }
      expect([name, err instanceof KvStoreError]).toEqual([name, true]);
      expect(fingerprint(dst)).toEqual(before);
      expect(readdirSync(dstDir).sort()).toEqual(["fsm.mdb", "fsm.mdb-lock"]);
    }
    // A producer that fails mid-stream is also reported as KvStoreError.
    async function* broken(): AsyncGenerator<Uint8Array> {
      yield image.subarray(0, 100);
      throw new Error("network down");
    }
    await expect(dst.restoreFromChunks(broken())).rejects.toThrow(/network down/);
    expect(fingerprint(dst)).toEqual(before);
    dst.applyEntries([putE(3, "mine", "still works")]);
    expect(at(dst, "mine")).toBe("still works");
  });

  test("entries cannot be applied while a restore is in progress", async () => {
    const src = openStore(tempDir());
    populate(src);
    const image = await collect(src.snapshotChunks().chunks);
    const dst = openStore(tempDir());
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    async function* slow(): AsyncGenerator<Uint8Array> {
      yield image[0].subarray(0, 10);
      await gate;
      yield image[0].subarray(10);
      for (const c of image.slice(1)) yield c;
    }
    const p = dst.restoreFromChunks(slow());
    await Bun.sleep(5);
    expect(() => dst.applyEntries([putE(1, "x", "y")])).toThrow(/restore is in progress/);
    expect(dst.get(b("x"), 0, 0)).toBeNull(); // reads still served from the old state
    release();
    expect(await p).toBe(8);
  });

  test("a garbage fsm.mdb is refused with a KvStoreError naming the file (no crash)", () => {
    for (const size of [10, 8192, 100_000]) {
      const dir = tempDir();
      const file = KvStore.fileIn(dir);
      const junk = Buffer.alloc(size);
      for (let i = 0; i < size; i++) junk[i] = (i * 131 + 7) & 0xff;
      writeFileSync(file, junk);
      let err: unknown;
      try {
        openStore(dir);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(KvStoreError);
      expect((err as Error).message).toContain(file);
      expect(existsSync(file)).toBe(true); // never overwritten
    }
  });

  test("a valid LMDB file that is not ours is refused", async () => {
    const dir = tempDir();
    const file = KvStore.fileIn(dir);
    const foreign = lmdbOpen({ path: file, maxDbs: 4 });
    const other = foreign.openDB({ name: "other" });
    await other.put("x", { hello: 1 });
    await foreign.close();
    expect(() => openStore(dir)).toThrow(/not an rbkv FSM store/);
    // The directory can be opened again once the file is gone; a new store is created.
    rmSync(file);
    expect(openStore(dir).appliedIndex).toBe(0);
  });

  test("stats counts live keys and reports the data size", () => {
    const st = openStore(tempDir());
    const empty = st.stats();
    expect(empty.keyCount).toBe(0);
    st.applyEntries([putE(1, "a", "1"), putE(2, "b", "2"), putE(3, "c", "3"), delE(4, "b"), putE(5, "a", "1b")]);
    expect(st.stats().keyCount).toBe(2);
    st.applyEntries([putE(6, "big", new Uint8Array(200_000))]);
    const after = st.stats();
    expect(after.keyCount).toBe(3);
    expect(after.dataSize).toBeGreaterThan(200_000);
    expect(after.dataSize).toBeGreaterThan(empty.dataSize);
  });

  test("20k keys apply in batches", async () => {
    const dir = tempDir();
    const st = openStore(dir, 3);
    const value = new Uint8Array(100).fill(3);
    let index = 0;
    for (let batch = 0; batch < 40; batch++) {
      const entries: FsmEntry[] = [];
      for (let i = 0; i < 500; i++) entries.push(putE(++index, `key-${String(index).padStart(6, "0")}`, value));
      expect(st.applyEntries(entries).length).toBe(500);
    }
    expect(st.appliedIndex).toBe(20_000);
    expect(st.stats().keyCount).toBe(20_000);
    expect(st.get(b("key-012345"), 0, 0)!.version).toBe(12_345);
    await st.flush();
  });
});

// ── checksums and damaged files (FSM format 2) ────────────────────────────────────────────────

/** Changes one bit at `offset` of every copy of `needle` in the file (LMDB keeps stale copies in free pages). */
function flipInFile(file: string, needle: string, offset = 5): number {
  const buf = readFileSync(file);
  const n = Buffer.from(needle);
  let copies = 0;
  for (let at = buf.indexOf(n); at >= 0; at = buf.indexOf(n, at + 1)) {
    buf[at + offset] ^= 0x20;
    copies++;
  }
  writeFileSync(file, buf);
  return copies;
}

/** The same, through a second descriptor while the store has the file open (LMDB maps the same page cache). */
function flipUnderneath(file: string, needle: string, offset = 5): number {
  const buf = readFileSync(file);
  const n = Buffer.from(needle);
  const fd = openSync(file, "r+");
  let copies = 0;
  try {
    for (let at = buf.indexOf(n); at >= 0; at = buf.indexOf(n, at + 1)) {
      writeSync(fd, Buffer.from([buf[at + offset] ^ 0x20]), 0, 1, at + offset);
      copies++;
    }
  } finally {
    closeSync(fd);
  }
  return copies;
}

function openError(dir: string): Error {
  try {
    openStore(dir);
  } catch (e) {
    return e as Error;
  }
  throw new Error("the store opened");
}

describe("KvStore checksums and damaged files", () => {
  /** k1 and k2 live; k2's first version in history; a TTL'd key; a long (hashed) key. */
  async function written(): Promise<string> {
    const dir = tempDir();
    const st = openStore(dir);
    st.applyEntries([
      putE(1, "k1", "VALUE-OF-K1-live"),
      putE(2, "k2", "VALUE-OF-K2-old-version"),
      putE(3, "k2", "VALUE-OF-K2-new-version"),
      putE(4, "ttl", "VALUE-WITH-TTL", 0, 9e12),
      putE(5, new Uint8Array(600).fill(0x6c), "VALUE-OF-LONG-KEY"),
    ]);
    await st.close();
    stores.splice(stores.indexOf(st), 1);
    return dir;
  }

  test("a changed byte in a live value is refused at open, naming the file, the database and the key", async () => {
    const dir = await written();
    expect(flipInFile(KvStore.fileIn(dir), "VALUE-OF-K1-live")).toBeGreaterThan(0);
    const err = openError(dir);
    expect(err).toBeInstanceOf(KvCorruptionError);
    expect(err.message).toBe(`${KvStore.fileIn(dir)}: corrupted: checksum mismatch in latest record for key "k1"`);
  });

  test("a changed byte in a superseded version (history) is refused at open", async () => {
    const dir = await written();
    flipInFile(KvStore.fileIn(dir), "VALUE-OF-K2-old-version");
    expect(openError(dir).message).toBe(`${KvStore.fileIn(dir)}: corrupted: checksum mismatch in history record for key "k2" at version 2`);
  });

  test("a changed byte in a key (the record now sits under another key) is refused at open", async () => {
    const dir = await written();
    // The full key kept in the record of the long key; and the LMDB key "k1" of the live record.
    flipInFile(KvStore.fileIn(dir), "VALUE-OF-LONG-KEY", -3);
    expect(openError(dir).message).toMatch(/fsm\.mdb: corrupted: checksum mismatch in latest record for key "l{64}"… \(512 bytes\)$/);
    const dir2 = await written();
    const file = KvStore.fileIn(dir2);
    const buf = readFileSync(file);
    // A leaf node of `latest` is [u16 size lo][u16 hi][u16 flags][u16 key size = 2]["k1"][record].
    let changed = 0;
    for (let at = buf.indexOf("k1"); at >= 0; at = buf.indexOf("k1", at + 1)) {
      if (buf.readUInt16LE(at - 2) === 2 && buf.subarray(at + 2 + 29, at + 2 + 29 + 16).toString() === "VALUE-OF-K1-live") {
        buf[at + 1] = 0x30; // "k1" → "k0": still in order, the record is intact but under the wrong key
        changed++;
      }
    }
    expect(changed).toBeGreaterThan(0);
    writeFileSync(file, buf);
    expect(openError(dir2).message).toBe(`${file}: corrupted: checksum mismatch in latest record for key "k0"`);
  });

  test("a zeroed page is refused at open naming the file, without crashing the process", async () => {
    const dir = await written();
    const file = KvStore.fileIn(dir);
    const buf = readFileSync(file);
    const page = Math.floor(buf.lastIndexOf(Buffer.from("VALUE-OF-K1-live")) / 4096);
    buf.fill(0, page * 4096, (page + 1) * 4096);
    writeFileSync(file, buf);
    const err = openError(dir);
    expect(err).toBeInstanceOf(KvStoreError);
    expect(err.message).toStartWith(`${file}: damaged: `);
    expect(err.message).toContain(`page ${page} is not what its header says (page 0, zeroed?)`);
  });

  test("every page zeroed, or with one bit flipped: open refuses naming the file, or serves exactly what was written", async () => {
    const dir = tempDir();
    const st = openStore(dir);
    const N = 400; // enough for branch pages above the leaves
    const value = (i: number, round: number) => `R${round}-${i}-${"v".repeat(i % 9 === 0 ? 3000 : 12)}`;
    let index = 0;
    for (let round = 0; round < 2; round++) {
      const batch: FsmEntry[] = [];
      for (let i = 0; i < N; i++) batch.push(putE(++index, `key/${i}`, value(i, round), i, i % 4 === 0 ? 9e12 : 0));
      st.applyEntries(batch);
    }
    await st.close();
    stores.splice(stores.indexOf(st), 1);
    const original = readFileSync(KvStore.fileIn(dir));
    const rng = new Prng(7);
    const target = tempDir();
    const outcome = { refused: 0, served: 0 };
    for (let page = 2; page < original.length / 4096; page++) {
      for (const how of ["zero", "flip", "flip"]) {
        const buf = Buffer.from(original);
        if (how === "zero") buf.fill(0, page * 4096, (page + 1) * 4096);
        else buf[page * 4096 + rng.int(0, 4095)] ^= 1 << rng.int(0, 7);
        writeFileSync(KvStore.fileIn(target), buf);
        rmSync(`${KvStore.fileIn(target)}-lock`, { force: true });
        let damaged: KvStore;
        try {
          damaged = KvStore.open({ dir: target, versionKeepNum: 0 });
        } catch (e) {
          expect(e).toBeInstanceOf(KvStoreError);
          expect((e as Error).message).toStartWith(KvStore.fileIn(target));
          outcome.refused++;
          continue;
        }
        try {
          for (let i = 0; i < N; i++) {
            expect([page, how, at(damaged, `key/${i}`)]).toEqual([page, how, value(i, 1)]);
            expect([page, how, at(damaged, `key/${i}`, i + 1)]).toEqual([page, how, value(i, 0)]);
          }
          expect(damaged.expiredKeys(1e13, 1000).length).toBe(N / 4);
          damaged.applyEntries([putE(index + 1, "key/1", "after")]);
          outcome.served++;
        } finally {
          await damaged.close();
        }
      }
    }
    // Both outcomes happen: damage to free pages and unused space is harmless.
    expect(outcome.refused).toBeGreaterThan(20);
    expect(outcome.served).toBeGreaterThan(0);
  }, 60_000);

  test("damage appearing while the store is open: reads throw KvCorruptionError, never the changed bytes", async () => {
    const dir = tempDir();
    const st = openStore(dir);
    st.applyEntries([putE(1, "a", "ORIGINAL-A-VALUE-0001"), putE(2, "a", "ORIGINAL-A-VALUE-0002"), putE(3, "b", "ORIGINAL-B-VALUE"), putE(4, "c", "ORIGINAL-C-VALUE")]);
    await st.flush();
    const file = KvStore.fileIn(dir);
    expect(flipUnderneath(file, "ORIGINAL-A-VALUE-0001")).toBeGreaterThan(0);
    expect(flipUnderneath(file, "ORIGINAL-B-VALUE")).toBeGreaterThan(0);
    expect(() => st.get(b("b"), 0, 0)).toThrow(KvCorruptionError);
    expect(() => st.get(b("b"), 0, 0)).toThrow(`${file}: corrupted: checksum mismatch in latest record for key "b"`);
    expect(() => st.get(b("a"), 1, 0)).toThrow(`${file}: corrupted: checksum mismatch in history record for key "a" at version 1`);
    expect(() => st.versions(b("a"))).toThrow(KvCorruptionError);
    expect(at(st, "a")).toBe("ORIGINAL-A-VALUE-0002"); // intact records are still served
    // A snapshot stops rather than send the damaged record to a peer.
    await expect(collect(st.snapshotChunks().chunks)).rejects.toThrow(KvCorruptionError);
    // An apply that meets the damaged record applies the entries before it, then stops.
    expect(() => st.applyEntries([putE(5, "c", "c5"), putE(6, "b", "b6"), putE(7, "c", "c7")])).toThrow(`${file}: corrupted: checksum mismatch in latest record for key "b"`);
    expect([st.appliedIndex, at(st, "c")]).toEqual([5, "c5"]);
    await expect(st.applyEntriesAsync([putE(6, "b", "b6")])).rejects.toThrow(KvCorruptionError);
    expect(st.appliedIndex).toBe(5);
    await st.close();
    stores.splice(stores.indexOf(st), 1);
    expect(openError(dir)).toBeInstanceOf(KvCorruptionError);
  });

  test("record checks catch any changed byte, a record under another key, and bad expiry records", () => {
    const seed = crcSeed(b("key"));
    const rec = encodeRecord(seed, b("key"), b("key"), b("some value"), 7, 3, 0, 2);
    expect(checkRecord("latest", b("key"), rec, 3)).toBeNull();
    for (let i = 0; i < rec.length; i++) {
      const bad = Buffer.from(rec);
      bad[i] ^= 1;
      expect([i, checkRecord("latest", b("key"), bad, 3)]).toEqual([i, "checksum mismatch"]);
    }
    expect(checkRecord("latest", b("kez"), rec, 3)).toBe("checksum mismatch");
    expect(checkRecord("latest", b("key"), rec.subarray(0, rec.length - 1), 3)).toBe("checksum mismatch");
    expect(checkRecord("latest", b("key"), rec, 2)).toBe("record version 3 outside 1..2");
    // Moved to history unchanged: its checksum covers the old key.
    const hk = historyKey(b("key"), 3, KIND_PUT);
    expect(checkRecord("history", hk, rec, 3)).toBe("checksum mismatch");
    expect(checkRecord("history", hk, encodeRecord(crcSeed(hk), b("key"), b("key"), b("some value"), 7, 3, 0, 2), 3)).toBeNull();
    const ek = expiryKey(9e12, b("key"));
    const ev = expiryValue(ek, 3, b("key"), b("key"));
    expect(checkExpiry(ek, ev, 3)).toBeNull();
    const badEv = Buffer.from(ev);
    badEv[0] ^= 2;
    expect(checkExpiry(ek, badEv, 3)).toBe("checksum mismatch");
    expect(checkExpiry(expiryKey(9e12, b("kez")), ev, 3)).toBe("checksum mismatch");
  });

  test("a snapshot image whose record fails its checksum is refused, even with a matching stream digest", async () => {
    const src = openStore(tempDir());
    src.applyEntries([putE(1, "a", "IMAGE-VALUE-OF-A"), putE(2, "b", "IMAGE-VALUE-OF-B")]);
    const image = concat(await collect(src.snapshotChunks().chunks));
    const body = Buffer.from(image.subarray(0, image.length - 32));
    body[body.indexOf("IMAGE-VALUE-OF-B") + 3] ^= 0x20;
    const forged = Buffer.concat([body, createHash("sha256").update(body).digest()]);
    const dstDir = tempDir();
    const dst = openStore(dstDir);
    await expect(dst.restoreFromChunks(fromChunks([forged]))).rejects.toThrow(/corrupt or truncated snapshot stream at byte \d+: checksum mismatch in latest record for key "b"/);
    expect(readdirSync(dstDir).sort()).toEqual(["fsm.mdb", "fsm.mdb-lock"]);
    // The untouched image restores.
    expect(await dst.restoreFromChunks(fromChunks([image]))).toBe(2);
    expect(at(dst, "b")).toBe("IMAGE-VALUE-OF-B");
  });

  test("a file of FSM format version 1 (no checksums) is refused, naming both versions", async () => {
    const dir = tempDir();
    const file = KvStore.fileIn(dir);
    const env = lmdbOpen<Uint8Array, Buffer>({ path: file, noSubdir: true, maxDbs: 8, encoding: "binary", keyEncoding: "binary" });
    const dbs = Object.fromEntries(["latest", "history", "expiry", "meta"].map((n) => [n, env.openDB<Uint8Array, Buffer>(n, { encoding: "binary", keyEncoding: "binary" })]));
    const applied = Buffer.alloc(8);
    applied.writeUInt32LE(1, 0);
    const v1rec = Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Buffer.from("v")]);
    await env.transaction(() => {
      dbs.meta!.putSync(Buffer.from("format"), Buffer.from("rbkv-fsm\x00\x01"));
      dbs.meta!.putSync(Buffer.from("applied"), applied);
      dbs.latest!.putSync(Buffer.from("k"), v1rec);
    });
    await env.close();
    const err = openError(dir);
    expect(err).toBeInstanceOf(KvStoreError);
    expect(err.message).toBe(`${file}: FSM format version 1 (written by an older rbkv, without record checksums); this rbkv reads format version 3 only, refusing to open it`);
  });
});

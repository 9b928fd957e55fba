// The LMDB Raft log: the same contract as MemoryStorage, plus durability across reopen and
// refusal of damaged files.

import { afterEach, describe, expect, test } from "bun:test";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Entry, EntryType } from "../../src/raft/messages.ts";
import { open as lmdbOpen } from "lmdb";
import { LogStoreError, RaftLogStore } from "../../src/storage/raft-log-store.ts";
import { Prng } from "../sim/prng.ts";

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "rbkv-log-"));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function ents(from: number, terms: number[]): Entry[] {
  return terms.map((term, i) => ({ term, index: from + i, type: EntryType.Normal, data: new TextEncoder().encode(`e${from + i}t${term}`) }));
}

describe("RaftLogStore", () => {
  test("appends, truncates a conflicting suffix and keeps everything across reopen", async () => {
    const dir = tempDir();
    const s = RaftLogStore.open({ dir });
    expect(s.isEmpty()).toBe(true);
    await s.save({ term: 1, vote: "a", commit: 0 }, ents(1, [1, 1, 1, 1]), null);
    await s.save({ term: 2, vote: "b", commit: 2 }, ents(3, [2]), null);
    expect([s.lastIndex(), s.term(3), s.term(4)]).toEqual([3, 2, undefined]);
    await s.close();
    const r = RaftLogStore.open({ dir });
    expect(r.initialState().hardState).toEqual({ term: 2, vote: "b", commit: 2 });
    expect([r.firstIndex(), r.lastIndex()]).toEqual([1, 3]);
    expect(r.entries(1, 4, Infinity).map((e) => new TextDecoder().decode(e.data))).toEqual(["e1t1", "e2t1", "e3t2"]);
    await r.close();
  });

  test("entries respect the byte budget but return at least one", async () => {
    const s = RaftLogStore.open({ dir: tempDir() });
    await s.save(null, ents(1, [1, 1, 1]), null);
    expect(s.entries(1, 4, 1).length).toBe(1);
    expect(s.entries(1, 4, Infinity).length).toBe(3);
    expect(() => s.entries(1, 9, Infinity)).toThrow(LogStoreError);
    await s.close();
  });

  test("a recorded snapshot compacts the log but keeps trailing entries, across reopen", async () => {
    const dir = tempDir();
    const s = RaftLogStore.open({ dir });
    await s.save({ term: 3, vote: "", commit: 10 }, ents(1, [1, 1, 2, 2, 2, 3, 3, 3, 3, 3]), null);
    await s.recordSnapshot({ index: 8, term: 3, conf: { voters: ["a", "b"], learners: ["c"] } }, 5);
    expect([s.firstIndex(), s.term(5), s.term(4)]).toEqual([6, 2, undefined]);
    expect(() => s.entries(5, 7, Infinity)).toThrow(LogStoreError);
    await s.close();
    const r = RaftLogStore.open({ dir });
    expect([r.firstIndex(), r.lastIndex(), r.term(5)]).toEqual([6, 10, 2]);
    expect(r.snapshot()?.meta).toEqual({ index: 8, term: 3, conf: { voters: ["a", "b"], learners: ["c"] } });
    expect(r.initialState().conf).toEqual({ voters: ["a", "b"], learners: ["c"] });
    await r.close();
  });

  test("installing a leader's snapshot replaces the log", async () => {
    const s = RaftLogStore.open({ dir: tempDir() });
    await s.save(null, ents(1, [1, 1, 1]), null);
    await s.save({ term: 5, vote: "", commit: 20 }, [], { index: 20, term: 4, conf: { voters: ["x"], learners: [] } });
    expect([s.firstIndex(), s.lastIndex(), s.term(20), s.term(2)]).toEqual([21, 20, 4, undefined]);
    await s.save(null, ents(21, [5]), null);
    expect(s.lastIndex()).toBe(21);
    await s.close();
  });

  test("refuses gaps and writes over compacted entries", async () => {
    const s = RaftLogStore.open({ dir: tempDir() });
    await s.save(null, ents(1, [1, 1]), null);
    await expect(s.save(null, ents(5, [1]), null)).rejects.toThrow(LogStoreError);
    await s.recordSnapshot({ index: 2, term: 1, conf: { voters: ["a"], learners: [] } }, 2);
    await expect(s.save(null, ents(2, [1]), null)).rejects.toThrow(LogStoreError);
    await s.close();
  });

  test("the address book and cluster id survive reopen; a second cluster id is refused", async () => {
    const dir = tempDir();
    const s = RaftLogStore.open({ dir });
    await s.setClusterId("c1");
    await s.save(null, [], null, new Map([["a", { raft: "127.0.0.1:1", grpc: "127.0.0.1:2" }]]));
    await s.close();
    const r = RaftLogStore.open({ dir });
    expect(r.clusterId()).toBe("c1");
    expect(r.peers().get("a")).toEqual({ raft: "127.0.0.1:1", grpc: "127.0.0.1:2" });
    await expect(r.setClusterId("c2")).rejects.toThrow(/belongs to cluster c1/);
    expect(r.joinedAt()).toBe(0); // a founder
    await r.close();
  });

  test("removed members survive reopen; one added again is forgotten", async () => {
    const dir = tempDir();
    const s = RaftLogStore.open({ dir });
    await s.setRemoved("n2", 40);
    await s.setRemoved("n3", 41);
    await s.setRemoved("n2", 0);
    await s.close();
    const r = RaftLogStore.open({ dir });
    expect([...r.removedPeers()]).toEqual([["n3", 41]]);
    await r.close();
  });

  test("a joined node's join index survives reopen", async () => {
    const dir = tempDir();
    const s = RaftLogStore.open({ dir });
    await s.setClusterId("c1", 4_294_967_301);
    expect(s.joinedAt()).toBe(4_294_967_301);
    await s.close();
    const r = RaftLogStore.open({ dir });
    expect(r.joinedAt()).toBe(4_294_967_301);
    await r.close();
  });

  test("the node id is stored once, survives reopen, and another one is refused", async () => {
    const dir = tempDir();
    const s = RaftLogStore.open({ dir });
    expect(s.nodeId()).toBeNull();
    await s.setNodeId("127.0.0.1:9501");
    await s.setNodeId("127.0.0.1:9501");
    await expect(s.setNodeId("127.0.0.1:9511")).rejects.toThrow(`${join(dir, "raft-log.mdb")} belongs to node 127.0.0.1:9501, not 127.0.0.1:9511`);
    await expect(s.setNodeId("")).rejects.toThrow(LogStoreError);
    await s.close();
    const r = RaftLogStore.open({ dir });
    expect(r.nodeId()).toBe("127.0.0.1:9501");
    await r.close();
  });

  test("a garbage or empty log file is refused with an error naming it", () => {
    const dir = tempDir();
    writeFileSync(join(dir, "raft-log.mdb"), "");
    expect(() => RaftLogStore.open({ dir })).toThrow(/raft-log\.mdb/);
    const dir2 = tempDir();
    writeFileSync(join(dir2, "raft-log.mdb"), Buffer.alloc(64 * 1024, 7));
    expect(() => RaftLogStore.open({ dir: dir2 })).toThrow(/raft-log\.mdb/);
  });
});

describe("damaged log files", () => {
  async function filled(): Promise<string> {
    const dir = tempDir();
    const s = RaftLogStore.open({ dir });
    await s.save({ term: 1, vote: "", commit: 0 }, ents(1, Array.from({ length: 200 }, () => 1)), null);
    await s.close();
    return dir;
  }

  test("a truncated log file is refused, naming the file", async () => {
    const dir = await filled();
    const path = join(dir, "raft-log.mdb");
    const { truncateSync, statSync } = await import("node:fs");
    truncateSync(path, statSync(path).size - 4096);
    expect(() => RaftLogStore.open({ dir })).toThrow(/raft-log\.mdb.*truncated/);
  });

  test("a file whose meta pages are overwritten is refused", async () => {
    const dir = await filled();
    const path = join(dir, "raft-log.mdb");
    const { openSync, writeSync, closeSync } = await import("node:fs");
    const fd = openSync(path, "r+");
    writeSync(fd, Buffer.alloc(64, 0xff), 0, 64, 0);
    closeSync(fd);
    expect(() => RaftLogStore.open({ dir })).toThrow(/raft-log\.mdb.*not an LMDB/);
  });
});

// ── checksums (log format 2) ───────────────────────────────────────────────────────────────────

const data = (i: number): Uint8Array => new TextEncoder().encode(`ENTRY-DATA-${String(i).padStart(4, "0")}-payload`);
function dataEnts(from: number, n: number, term = 1): Entry[] {
  return Array.from({ length: n }, (_, k) => ({ term, index: from + k, type: EntryType.Normal, data: data(from + k) }));
}
/** Changes one bit in every copy of `needle` in the file; through `fd` if given (the store has it open). */
function flip(path: string, needle: string, offset = 4): number {
  const buf = readFileSync(path);
  const fd = openSync(path, "r+");
  let copies = 0;
  try {
    for (let at = buf.indexOf(needle); at >= 0; at = buf.indexOf(needle, at + 1)) {
      writeSync(fd, Buffer.from([buf[at + offset]! ^ 0x20]), 0, 1, at + offset);
      copies++;
    }
  } finally {
    closeSync(fd);
  }
  return copies;
}
function openError(dir: string): Error {
  try {
    void RaftLogStore.open({ dir }).close();
  } catch (e) {
    return e as Error;
  }
  throw new Error("the log opened");
}

describe("log checksums", () => {
  async function written(): Promise<string> {
    const dir = tempDir();
    const s = RaftLogStore.open({ dir });
    await s.setClusterId("cluster-for-checksums");
    await s.setNodeId("NODE-ID-for-checksums");
    await s.save({ term: 3, vote: "VOTE-FOR-node-xyz", commit: 40 }, dataEnts(1, 60), null, new Map([["n1", { raft: "127.0.0.1:1", grpc: "127.0.0.1:2" }]]));
    await s.close();
    return dir;
  }

  test("a changed byte in a stored entry is refused at open, naming the absolute path and the index", async () => {
    const dir = await written();
    const path = join(dir, "raft-log.mdb");
    expect(flip(path, "ENTRY-DATA-0042-payload")).toBeGreaterThan(0);
    const err = openError(dir);
    expect(err).toBeInstanceOf(LogStoreError);
    expect(err.message).toBe(`${path}: corrupted: checksum mismatch in log entry 42`);
  });

  test("a changed byte in the hard state or the cluster id is refused at open", async () => {
    const dir = await written();
    flip(join(dir, "raft-log.mdb"), "VOTE-FOR-node-xyz");
    expect(openError(dir).message).toBe(`${join(dir, "raft-log.mdb")}: corrupted: checksum mismatch in meta record "hard"`);
    const dir2 = await written();
    flip(join(dir2, "raft-log.mdb"), "cluster-for-checksums");
    expect(openError(dir2).message).toBe(`${join(dir2, "raft-log.mdb")}: corrupted: checksum mismatch in meta record "cluster"`);
    const dir3 = await written();
    flip(join(dir3, "raft-log.mdb"), "NODE-ID-for-checksums");
    expect(openError(dir3).message).toBe(`${join(dir3, "raft-log.mdb")}: corrupted: checksum mismatch in meta record "node-id"`);
  });

  test("a zeroed page is refused at open naming the file, without crashing the process", async () => {
    const dir = tempDir();
    const s = RaftLogStore.open({ dir });
    await s.save({ term: 1, vote: "", commit: 0 }, dataEnts(1, 600), null);
    await s.close();
    const path = join(dir, "raft-log.mdb");
    const buf = readFileSync(path);
    const page = Math.floor(buf.lastIndexOf("ENTRY-DATA-0300") / 4096);
    buf.fill(0, page * 4096, (page + 1) * 4096);
    writeFileSync(path, buf);
    const err = openError(dir);
    expect(err).toBeInstanceOf(LogStoreError);
    expect(err.message).toStartWith(`${path}: damaged: database "entries": page ${page} is not what its header says`);
  });

  test("every page zeroed, or with one bit flipped: open refuses naming the file, or reads back exactly what was saved", async () => {
    const dir = tempDir();
    const s = RaftLogStore.open({ dir });
    await s.save({ term: 2, vote: "v", commit: 300 }, dataEnts(1, 2000, 2), null); // enough for branch pages
    await s.recordSnapshot({ index: 100, term: 2, conf: { voters: ["a"], learners: [] } }, 50);
    await s.close();
    const path = join(dir, "raft-log.mdb");
    const original = readFileSync(path);
    const target = tempDir();
    const rng = new Prng(11);
    const outcome = { refused: 0, served: 0 };
    for (let page = 2; page < original.length / 4096; page++) {
      for (const how of ["zero", "flip", "flip"]) {
        const buf = Buffer.from(original);
        if (how === "zero") buf.fill(0, page * 4096, (page + 1) * 4096);
        else buf[page * 4096 + rng.int(0, 4095)]! ^= 1 << rng.int(0, 7);
        writeFileSync(join(target, "raft-log.mdb"), buf);
        rmSync(join(target, "raft-log.mdb-lock"), { force: true });
        let r: RaftLogStore;
        try {
          r = RaftLogStore.open({ dir: target });
        } catch (e) {
          expect(e).toBeInstanceOf(LogStoreError);
          expect((e as Error).message).toContain(join(target, "raft-log.mdb"));
          outcome.refused++;
          continue;
        }
        try {
          expect([page, how, r.firstIndex(), r.lastIndex(), r.hardState()]).toEqual([page, how, 51, 2000, { term: 2, vote: "v", commit: 300 }]);
          const got = r.entries(51, 2001, Infinity);
          expect([page, how, got.length]).toEqual([page, how, 1950]);
          for (const e of got) expect([page, how, e.index, e.term, new TextDecoder().decode(e.data)]).toEqual([page, how, e.index, 2, new TextDecoder().decode(data(e.index))]);
          await r.save(null, dataEnts(2001, 1, 2), null);
          outcome.served++;
        } finally {
          await r.close();
        }
      }
    }
    expect(outcome.refused).toBeGreaterThan(10);
    expect(outcome.served).toBeGreaterThan(0);
  }, 60_000);

  test("damage appearing while the log is open: entries() and term() throw LogStoreError naming the file and index", async () => {
    const dir = tempDir();
    const s = RaftLogStore.open({ dir });
    await s.save({ term: 1, vote: "", commit: 0 }, dataEnts(1, 20), null);
    const path = join(dir, "raft-log.mdb");
    expect(flip(path, "ENTRY-DATA-0007-payload")).toBeGreaterThan(0);
    expect(() => s.entries(5, 10, Infinity)).toThrow(`${path}: corrupted: checksum mismatch in log entry 7`);
    expect(() => s.term(7)).toThrow(`${path}: corrupted: checksum mismatch in log entry 7`);
    expect(s.term(8)).toBe(1);
    expect(s.entries(8, 10, Infinity).map((e) => e.index)).toEqual([8, 9]);
    await s.close();
    expect(openError(dir).message).toBe(`${path}: corrupted: checksum mismatch in log entry 7`);
  });

  test("a log of format version 1 (no checksums, no format record) is refused, naming both versions", async () => {
    const dir = tempDir();
    const path = join(dir, "raft-log.mdb");
    const env = lmdbOpen<Uint8Array, string>({ path, noSubdir: true, maxDbs: 4, encoding: "binary" });
    const entries = env.openDB<Uint8Array, number>({ name: "entries", encoding: "binary" });
    const meta = env.openDB<Uint8Array, string>({ name: "meta", encoding: "binary" });
    const v1entry = new Uint8Array(9 + 3);
    v1entry[0] = EntryType.Normal;
    new DataView(v1entry.buffer).setFloat64(1, 1, true);
    await env.transaction(() => {
      entries.putSync(1, v1entry);
      meta.putSync("cluster", new TextEncoder().encode("c1"));
    });
    await env.close();
    const err = openError(dir);
    expect(err).toBeInstanceOf(LogStoreError);
    expect(err.message).toBe(`${path}: Raft log format version 1 (written by an older rbkv, without record checksums); this rbkv reads format version 2 only, refusing to open it`);
  });

  test("a new log gets the format marker at once, so an empty log reopens as format 2", async () => {
    const dir = tempDir();
    await RaftLogStore.open({ dir }).close();
    const r = RaftLogStore.open({ dir });
    expect(r.verified).not.toBeNull();
    expect(r.isEmpty()).toBe(true);
    await r.close();
  });
});

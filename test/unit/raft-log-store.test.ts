// The LMDB Raft log: the same contract as MemoryStorage, plus durability across reopen and
// refusal of damaged files.

import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Entry, EntryType } from "../../src/raft/messages.ts";
import { LogStoreError, RaftLogStore } from "../../src/storage/raft-log-store.ts";

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

// The backup file (src/storage/backup-file.ts): what the Snapshot RPC streams and `rbkv snapshot`
// saves and restores. A whole file reads back with its header and counts, in any chunking; every
// truncation, every damaged byte and any foreign file is refused by the checking pass, which
// writes nothing.

import { describe, expect, test } from "bun:test";
import { BACKUP_TRAILER_BYTES, BackupFileError, backupChunks, readBackup, verifyBackup } from "../../src/storage/backup-file.ts";
import { KvStoreError } from "../../src/storage/fsm.ts";
import { b, entry, openStore, put, del, tempDir } from "./fsm-helpers.ts";

async function* chunksOf(bytes: Uint8Array, sizes: number[]): AsyncGenerator<Uint8Array> {
  let at = 0;
  for (let i = 0; at < bytes.length; i++) {
    const n = sizes[i % sizes.length]!;
    yield bytes.subarray(at, at + n);
    at += n;
  }
}

async function backupOf(entries: number): Promise<{ file: Buffer; version: number }> {
  const st = openStore(tempDir());
  const es = [];
  for (let i = 1; i <= entries; i++) es.push(entry(i, i % 5 === 0 ? del(`k${i - 1}`) : put(`k${i}`, `value ${i} `.repeat(20), i % 3)));
  st.applyEntries(es);
  const image = st.snapshotChunks(2048);
  const parts: Uint8Array[] = [];
  for await (const c of backupChunks({ clusterId: "c1/abc", nodeId: "n1", createdAtMs: 1_700_000_000_000 }, image)) parts.push(c);
  return { file: Buffer.concat(parts), version: image.appliedIndex };
}

describe("backup file", () => {
  test("a whole file reads back with its header and counts, in any chunking", async () => {
    const { file, version } = await backupOf(300);
    expect(version).toBe(300);
    for (const sizes of [[file.length], [1], [7, 1000, 3], [BACKUP_TRAILER_BYTES - 1], [65536]]) {
      const s = await verifyBackup(chunksOf(file, sizes), "f");
      expect(s.header).toEqual({ formatVersion: 1, imageFormat: 3, clusterId: "c1/abc", version: 300, createdAtMs: 1_700_000_000_000, nodeId: "n1" });
      expect(s.fileBytes).toBe(file.length);
      expect(s.image.applied).toBe(300);
      // 300 entries: every fifth deletes the key before it, so 240 puts of which 60 deleted.
      expect(s.image.perDb.get("latest")).toBe(180);
    }
  });

  test("every truncation is refused", async () => {
    const { file } = await backupOf(40);
    for (let len = 0; len < file.length; len += len < 200 ? 1 : 37) {
      await expect(verifyBackup(chunksOf(file.subarray(0, len), [333]), "f"), `length ${len}`).rejects.toThrow(/f: /);
    }
    await expect(verifyBackup(chunksOf(file.subarray(0, file.length - 1), [333]), "f")).rejects.toThrow();
  });

  test("a damaged byte anywhere is refused", async () => {
    const { file } = await backupOf(40);
    for (let at = 0; at < file.length; at += at < 100 || at > file.length - 100 ? 1 : 13) {
      const bad = Buffer.from(file);
      bad[at] = bad[at]! ^ 0x10;
      let err: unknown = null;
      try {
        await verifyBackup(chunksOf(bad, [500]), "f");
      } catch (e) {
        err = e;
      }
      expect(err instanceof BackupFileError || err instanceof KvStoreError, `flip at byte ${at}`).toBe(true);
    }
  });

  test("a foreign or extended file is refused, naming why", async () => {
    const { file } = await backupOf(10);
    await expect(verifyBackup(chunksOf(b("hello, world\n"), [5]), "f")).rejects.toThrow("f: not an rbkv backup file");
    await expect(verifyBackup(chunksOf(new Uint8Array(0), [5]), "f")).rejects.toThrow("f: empty file");
    await expect(verifyBackup(chunksOf(Buffer.concat([file, b("x")]), [100]), "f")).rejects.toThrow(/trailing data after the trailer|trailer/);
    const doubled = Buffer.concat([file, file]);
    await expect(verifyBackup(chunksOf(doubled, [100]), "f")).rejects.toThrow();
    const newer = Buffer.from(file);
    newer.writeUInt32LE(2, 8);
    await expect(verifyBackup(chunksOf(newer, [100]), "f")).rejects.toThrow("unsupported backup format version 2");
  });

  test("a consumer that fails ends the read (the source is closed)", async () => {
    const { file } = await backupOf(10);
    let closed = false;
    const source: AsyncIterable<Uint8Array> = {
      [Symbol.asyncIterator]: () => {
        const it = chunksOf(file, [64]);
        return { next: () => it.next(), return: async () => ((closed = true), { done: true, value: undefined }) };
      },
    };
    await expect(readBackup(source, "f", async () => Promise.reject(new Error("disk full")))).rejects.toThrow("disk full");
    expect(closed).toBe(true);
  });
});

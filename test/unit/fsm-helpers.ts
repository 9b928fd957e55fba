// Shared helpers of the FSM tests: temp stores, entries, and an MVCC model to compare against.

import { afterEach } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Command, CommandKind, type KeyRange, type TxnOp, encodeCommand } from "../../src/storage/command.ts";
import { type FsmEntry, type KvEvent, type KvRecord, KvStore } from "../../src/storage/fsm.ts";
import { storageKey } from "../../src/storage/fsm-format.ts";

const te = new TextEncoder();
export const b = (s: string): Uint8Array => te.encode(s);
export const hex = (u: Uint8Array): string => Buffer.from(u).toString("hex");
export const cmp = (x: Uint8Array, y: Uint8Array): number => Buffer.compare(Buffer.from(x), Buffer.from(y));

const dirs: string[] = [];
const stores: KvStore[] = [];
export function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "rbkv-fsm-"));
  dirs.push(d);
  return d;
}
export function openStore(dir: string = tempDir(), versionKeepNum = 0): KvStore {
  const st = KvStore.open({ dir, versionKeepNum, unsafeNoSync: true });
  stores.push(st);
  return st;
}
export async function closeStore(st: KvStore): Promise<void> {
  await st.close();
  const i = stores.indexOf(st);
  if (i >= 0) stores.splice(i, 1);
}
afterEach(async () => {
  for (const st of stores.splice(0)) await st.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

export const entry = (index: number, cmd: Command, proposal?: { origin: Uint8Array; counter: number }): FsmEntry => ({ index, data: encodeCommand(cmd), proposal });
export const put = (key: Uint8Array | string, value: Uint8Array | string, meta = 0, expireAt = 0): Command => ({
  kind: CommandKind.Put,
  key: typeof key === "string" ? b(key) : key,
  value: typeof value === "string" ? b(value) : value,
  meta,
  expireAt,
});
export const del = (key: Uint8Array | string): Command => ({ kind: CommandKind.Delete, key: typeof key === "string" ? b(key) : key });
export const one = (key: Uint8Array): KeyRange => ({ key, end: Buffer.concat([Buffer.from(key), Buffer.from([0])]) });
export const txn = (nowMs: number, success: TxnOp[], compares: Extract<Command, { kind: CommandKind.Txn }>["compares"] = [], failure: TxnOp[] = []): Command => ({
  kind: CommandKind.Txn,
  nowMs,
  compares,
  success,
  failure,
});

/** Comparable form of a record / event (hex bytes). */
export const rec = (r: KvRecord | null | undefined) => (r ? { key: hex(r.key), value: hex(r.value), meta: r.meta, version: r.version, create: r.createVersion, expireAt: r.expireAt } : null);
export const ev = (e: KvEvent) => ({ type: e.type, key: hex(e.key), value: hex(e.value), meta: e.meta, version: e.version, expireAt: e.expireAt });

interface MVersion {
  version: number;
  /** null: tombstone. */
  value: Uint8Array | null;
  meta: number;
  expireAt: number;
  create: number;
}

/** A straightforward MVCC model: every version of every key, nothing ever dropped. */
export class Model {
  readonly keys = new Map<string, { key: Uint8Array; versions: MVersion[] }>();
  readonly events: ReturnType<typeof ev>[] = [];

  private live(k: Uint8Array): MVersion | null {
    const e = this.keys.get(hex(k));
    const last = e?.versions[e.versions.length - 1];
    return last && last.value !== null ? last : null;
  }
  private add(k: Uint8Array, v: MVersion): void {
    const h = hex(k);
    if (!this.keys.has(h)) this.keys.set(h, { key: k, versions: [] });
    this.keys.get(h)!.versions.push(v);
  }
  /** nowMs null: a plain Put (no time: an expired live record still counts as existing). */
  put(index: number, k: Uint8Array, value: Uint8Array, meta: number, expireAt: number, nowMs: number | null, out: { skey: Uint8Array; e: ReturnType<typeof ev> }[]): void {
    const l = this.live(k);
    const alive = l && (nowMs === null || l.expireAt === 0 || l.expireAt > nowMs);
    this.add(k, { version: index, value, meta, expireAt, create: alive ? l.create : index });
    out.push({ skey: storageKey(k), e: { type: "put", key: hex(k), value: hex(value), meta, version: index, expireAt } });
  }
  delete(index: number, k: Uint8Array, nowMs: number | null, out: { skey: Uint8Array; e: ReturnType<typeof ev> }[]): boolean {
    const l = this.live(k);
    if (!l || (nowMs !== null && l.expireAt !== 0 && l.expireAt <= nowMs)) return false;
    this.add(k, { version: index, value: null, meta: 0, expireAt: 0, create: 0 });
    out.push({ skey: storageKey(k), e: { type: "delete", key: hex(k), value: "", meta: 0, version: index, expireAt: 0 } });
    return true;
  }
  /** Applies a plain Put/Delete or a Txn of puts/deletes (no compares), recording its events in storage-key order. */
  apply(index: number, c: Command): void {
    const out: { skey: Uint8Array; e: ReturnType<typeof ev> }[] = [];
    if (c.kind === CommandKind.Put) this.put(index, c.key, c.value, c.meta, c.expireAt, null, out);
    else if (c.kind === CommandKind.Delete) this.delete(index, c.key, null, out);
    else if (c.kind === CommandKind.Txn) {
      for (const op of c.success) {
        if (op.type === "put") this.put(index, op.key, op.value, op.meta, op.expireAt, c.nowMs, out);
        else if (op.type === "delete") for (const k of this.liveIn(op, c.nowMs)) this.delete(index, k, c.nowMs, out);
      }
    }
    out.sort((x, y) => cmp(x.skey, y.skey));
    for (const o of out) this.events.push(o.e);
  }
  private liveIn(r: KeyRange, nowMs: number): Uint8Array[] {
    return [...this.keys.values()].map((e) => e.key).filter((k) => inRange(k, r) && this.get(k, Number.MAX_SAFE_INTEGER, nowMs) !== null);
  }
  get(k: Uint8Array, atVersion: number, nowMs: number): { key: string; value: string; meta: number; version: number; create: number; expireAt: number } | null {
    const e = this.keys.get(hex(k));
    if (!e) return null;
    let best: MVersion | null = null;
    for (const v of e.versions) if (v.version <= atVersion) best = v;
    if (!best || best.value === null) return null;
    if (best.expireAt !== 0 && best.expireAt <= nowMs) return null;
    return { key: hex(k), value: hex(best.value), meta: best.meta, version: best.version, create: best.create, expireAt: best.expireAt };
  }
  range(q: KeyRange & { limit: number; reverse: boolean; keysOnly: boolean; countOnly: boolean; maxBytes: number; atVersion: number; nowMs: number }) {
    const all = [...this.keys.values()]
      .map((e) => e.key)
      .filter((k) => inRange(k, q))
      .sort(cmp);
    if (q.reverse) all.reverse();
    const visible = all.map((k) => this.get(k, q.atVersion, q.nowMs)).filter((r) => r !== null);
    const kvs: typeof visible = [];
    let bytes = 0;
    let more = false;
    if (!q.countOnly) {
      for (const r of visible) {
        if (kvs.length < q.limit && (kvs.length === 0 || bytes < q.maxBytes)) {
          const kv = q.keysOnly ? { ...r, value: "" } : r;
          kvs.push(kv);
          bytes += kv.key.length / 2 + kv.value.length / 2;
        } else more = true;
      }
    }
    return { kvs, more, count: visible.length };
  }
}

export function inRange(k: Uint8Array, r: KeyRange): boolean {
  return cmp(k, r.key) >= 0 && (r.end === null || cmp(k, r.end) < 0);
}

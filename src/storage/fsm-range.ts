// Reads over many keys: Range (at a version, in key order, forward or reverse) and the changes
// index (events after a version). Layouts and the MVCC rules are in the header of fsm.ts.
//
// A range at the latest version reads `latest` alone. A range at an older version V merges two
// scans of the same key interval, both in storage-key order: `latest` (a live record is visible
// if its version <= V) and `history` (per key, the newest entry <= V: a put is visible, a
// tombstone hides the key). History is read keys-only (its keys carry version and kind); only
// the one chosen record per key is fetched.
//
// Storage keys keep the order of user keys except among long keys (> INLINE_KEY_MAX bytes) that
// share their first INLINE_KEY_MAX bytes: those sit together, ordered by their hash. Such a group
// is buffered and sorted by the full key before it is emitted, and bounds longer than
// INLINE_KEY_MAX are applied to the full key, so results are exact and in user-key order.
//
// Both are used by the store's reads (in one read transaction, so applied index, compacted
// version and data agree) and by Txn range ops inside the apply transaction (txn undefined:
// lmdb-js then reads the write transaction, which sees the txn's earlier writes).

import { type RangeResult } from "./apply-result.ts";
import { type KeyRange } from "./command.ts";
import { type Db, type LmdbTxn } from "./fsm-env.ts";
import {
  CHANGE_PUT,
  INLINE_KEY_MAX,
  KIND_PUT,
  KIND_TOMB,
  type KvCorruptionError,
  escapeKey,
  getU64BE,
  historyKey,
  isHashed,
  putU64BE,
  recCreate,
  recExpireAt,
  recFullKey,
  recMeta,
  recValue,
  recValueOffset,
  recVersion,
  u8view,
} from "./fsm-format.ts";
import { type KvEvent, type KvRecord } from "./fsm.ts";
import { crcSeed, recordIntact } from "./record-checksum.ts";

const EMPTY = new Uint8Array(0);

/** What KvStore.range takes (see the contract in fsm.ts). */
export interface RangeQuery extends KeyRange {
  /** At most this many kvs (>= 1; anything below 1 means no limit). */
  limit: number;
  reverse: boolean;
  /** 0 = latest. */
  atVersion: number;
  keysOnly: boolean;
  countOnly: boolean;
  /** Keys whose record expires at or before this are invisible (as get). */
  nowMs: number;
  /** Stop (more = true) once the kvs' key + value bytes reach this; at least one kv is returned. */
  maxBytes: number;
}

export interface ReadSource {
  latest: Db;
  history: Db;
  changes: Db;
  /** A read transaction, or undefined to read the current (write) transaction. */
  txn: LmdbTxn | undefined;
  corrupt(db: string, lmdbKey: Uint8Array, detail: string): KvCorruptionError;
}

/** A visible key: its full key and its checked record (from `db` under `lmdbKey`). */
interface Visible {
  key: Uint8Array;
  skey: Uint8Array;
  rec: Uint8Array;
  db: "latest" | "history";
  lmdbKey: Uint8Array;
}

const cmp = (a: Uint8Array, b: Uint8Array): number => Buffer.compare(u8view(a), u8view(b));

/** The storage key of a history key (a view when it has no escaped zero byte). */
function historySkey(hk: Uint8Array): Uint8Array {
  let i = 0;
  let escaped = false;
  for (;;) {
    if (hk[i] === 0) {
      if (hk[i + 1] === 0) break;
      escaped = true;
      i += 2;
    } else i++;
  }
  if (!escaped) return hk.subarray(0, i);
  const out: number[] = [];
  for (let j = 0; j < i; j++) {
    out.push(hk[j]);
    if (hk[j] === 0) j++;
  }
  return Buffer.from(out);
}

interface Bounds {
  /** Storage-key interval to scan: [lo, hi); hi undefined = unbounded. */
  lo: Uint8Array;
  hi: Uint8Array | undefined;
  /** The user-key bounds, when they must be applied to the full key (a bound longer than INLINE_KEY_MAX). */
  fullLo: Uint8Array | null;
  fullHi: Uint8Array | null;
  empty: boolean;
}

function boundsOf(r: KeyRange): Bounds {
  const lo = r.key.length > INLINE_KEY_MAX ? r.key.subarray(0, INLINE_KEY_MAX) : r.key;
  let hi: Uint8Array | undefined;
  if (r.end !== null) {
    // Every storage key of a long key with prefix P is P ‖ 32 hash bytes < P ‖ 33 × 0xff.
    hi = r.end.length > INLINE_KEY_MAX ? Buffer.concat([u8view(r.end.subarray(0, INLINE_KEY_MAX)), Buffer.alloc(33, 0xff)]) : r.end;
  }
  const empty = r.end !== null && cmp(r.key, r.end) >= 0;
  return { lo, hi, fullLo: r.key.length > INLINE_KEY_MAX ? r.key : null, fullHi: r.end !== null && r.end.length > INLINE_KEY_MAX ? r.end : null, empty };
}

function checkedLatest(src: ReadSource, skey: Uint8Array, rec: Uint8Array): Uint8Array {
  if (!recordIntact(rec, crcSeed(skey))) throw src.corrupt("latest", skey, "checksum mismatch");
  if (recValueOffset(rec) < 0) throw src.corrupt("latest", skey, "malformed record");
  return rec;
}

function fetchHistory(src: ReadSource, hk: Uint8Array): Uint8Array {
  const rec = src.history.get(u8view(hk), src.txn ? { transaction: src.txn as never } : undefined) as Uint8Array | undefined;
  if (!rec) throw src.corrupt("history", hk, "record vanished during the read");
  if (!recordIntact(rec, crcSeed(hk))) throw src.corrupt("history", hk, "checksum mismatch");
  if (recValueOffset(rec) < 0) throw src.corrupt("history", hk, "malformed record");
  return rec;
}

/**
 * The lower bound of a reverse scan that must reach the smallest keys. Measured on lmdb-js 3.5.6:
 * a reverse getRange without `end` stops before the one-byte key 00 (its default lower bound is
 * that key, exclusive), so a reverse Range lost the key "\0"; an empty `end` reaches it.
 */
const BELOW_EVERY_KEY = Buffer.alloc(0);

/** Live records of `latest` in [b.lo, b.hi), in storage-key order (descending if reverse). */
function* latestScan(src: ReadSource, b: Bounds, reverse: boolean): Generator<{ skey: Uint8Array; rec: Uint8Array }> {
  const txn = src.txn ? { transaction: src.txn as never } : {};
  const range = reverse
    ? src.latest.getRange({ ...(b.hi ? { start: u8view(b.hi) } : {}), end: BELOW_EVERY_KEY, reverse: true, ...txn })
    : src.latest.getRange({ ...(b.lo.length > 0 ? { start: u8view(b.lo) } : {}), ...(b.hi ? { end: u8view(b.hi) } : {}), ...txn });
  for (const { key, value } of range) {
    if (reverse) {
      if (b.hi && cmp(key, b.hi) >= 0) continue; // a reverse start is inclusive
      if (cmp(key, b.lo) < 0) break;
    }
    yield { skey: key, rec: value };
  }
}

/**
 * Per storage key with history in [b.lo, b.hi): the history key of its newest entry <= version
 * (null if every entry is newer), in storage-key order.
 */
function* historyScan(src: ReadSource, b: Bounds, reverse: boolean, version: number): Generator<{ skey: Uint8Array; best: Uint8Array | null }> {
  const txn = src.txn ? { transaction: src.txn as never } : {};
  const lo = escapeKey(b.lo, 0);
  const hi = b.hi ? escapeKey(b.hi, 0) : undefined;
  const keys = reverse
    ? src.history.getKeys({ ...(hi ? { start: hi } : {}), end: BELOW_EVERY_KEY, reverse: true, ...txn })
    : src.history.getKeys({ start: lo, ...(hi ? { end: hi } : {}), ...txn });
  let cur: Uint8Array | null = null;
  let best: Uint8Array | null = null;
  let settled = false; // reverse: the group's newest entry <= version is found
  for (const k of keys) {
    const hk = k as Uint8Array;
    if (reverse && cmp(hk, lo) < 0) break;
    const skey = historySkey(hk);
    if (cur === null || cmp(skey, cur) !== 0) {
      if (cur !== null) yield { skey: cur, best };
      cur = skey;
      best = null;
      settled = false;
    }
    const v = getU64BE(hk, hk.length - 9);
    if (v > version) continue;
    if (reverse) {
      // Descending versions: the first entry <= version is the newest.
      if (!settled) {
        best = hk;
        settled = true;
      }
    } else best = hk; // ascending: the last entry <= version wins
  }
  if (cur !== null) yield { skey: cur, best };
}

/** Visible keys in storage-key order: at `version`, merging history when `merge`. */
function* visibleBySkey(src: ReadSource, b: Bounds, reverse: boolean, version: number, merge: boolean, nowMs: number): Generator<Visible> {
  const dir = reverse ? -1 : 1;
  const visible = (v: Visible): boolean => {
    const exp = recExpireAt(v.rec);
    if (exp !== 0 && exp <= nowMs) return false;
    if (b.fullLo === null && b.fullHi === null) return true;
    if (b.fullLo !== null && cmp(v.key, b.fullLo) < 0) return false;
    return !(b.fullHi !== null && cmp(v.key, b.fullHi) >= 0);
  };
  const fromLatest = (skey: Uint8Array, rec: Uint8Array): Visible => {
    checkedLatest(src, skey, rec);
    return { key: recFullKey(rec) ?? skey, skey, rec, db: "latest", lmdbKey: skey };
  };
  const fromHistory = (skey: Uint8Array, hk: Uint8Array | null): Visible | null => {
    if (hk === null || hk[hk.length - 1] !== KIND_PUT) return null;
    const rec = fetchHistory(src, hk);
    return { key: recFullKey(rec) ?? skey, skey, rec, db: "history", lmdbKey: hk };
  };
  if (!merge) {
    for (const { skey, rec } of latestScan(src, b, reverse)) {
      const v = fromLatest(skey, rec);
      if (visible(v)) yield v;
    }
    return;
  }
  const L = latestScan(src, b, reverse);
  const H = historyScan(src, b, reverse, version);
  let l = L.next();
  let h = H.next();
  while (!l.done || !h.done) {
    let c: number;
    if (l.done) c = 1;
    else if (h.done) c = -1;
    else c = cmp(l.value.skey, h.value.skey) * dir;
    let v: Visible | null = null;
    if (c <= 0) {
      const { skey, rec } = l.value!;
      checkedLatest(src, skey, rec);
      if (recVersion(rec) <= version) v = fromLatest(skey, rec);
      else if (c === 0) v = fromHistory(skey, h.value!.best);
      l = L.next();
      if (c === 0) h = H.next();
    } else {
      v = fromHistory(h.value!.skey, h.value!.best);
      h = H.next();
    }
    if (v && visible(v)) yield v;
  }
}

/** Visible keys in user-key order: groups of long keys sharing a prefix are sorted by full key. */
function* visibleInOrder(src: ReadSource, b: Bounds, reverse: boolean, version: number, merge: boolean, nowMs: number): Generator<Visible> {
  let group: Visible[] = [];
  const flush = function* (): Generator<Visible> {
    if (group.length > 1) group.sort((x, y) => cmp(x.key, y.key) * (reverse ? -1 : 1));
    yield* group;
    group = [];
  };
  for (const v of visibleBySkey(src, b, reverse, version, merge, nowMs)) {
    if (isHashed(v.skey)) {
      if (group.length > 0 && cmp(group[0].skey.subarray(0, INLINE_KEY_MAX), v.skey.subarray(0, INLINE_KEY_MAX)) !== 0) yield* flush();
      group.push(v);
      continue;
    }
    if (group.length > 0) yield* flush();
    yield v;
  }
  yield* flush();
}

export function toKvRecord(v: { key: Uint8Array; rec: Uint8Array }, keysOnly: boolean): KvRecord {
  const off = recValueOffset(v.rec);
  return {
    key: v.key,
    value: keysOnly ? EMPTY : recValue(v.rec, off),
    meta: recMeta(v.rec),
    version: recVersion(v.rec),
    createVersion: recCreate(v.rec),
    expireAt: recExpireAt(v.rec),
  };
}

export interface ScanSpec extends KeyRange {
  limit: number;
  reverse: boolean;
  keysOnly: boolean;
  countOnly: boolean;
  nowMs: number;
  maxBytes: number;
  /** The version read (already checked against compacted and applied). */
  version: number;
  /** False when `version` is the newest: `latest` alone answers. */
  merge: boolean;
}

/** A range read (see RangeQuery); `count` covers the whole range. */
export function scanRange(src: ReadSource, q: ScanSpec): RangeResult {
  const b = boundsOf(q);
  const kvs: KvRecord[] = [];
  if (b.empty) return { kvs, more: false, count: 0, version: q.version };
  const limit = q.limit >= 1 ? q.limit : Number.MAX_SAFE_INTEGER;
  let count = 0;
  let bytes = 0;
  let more = false;
  for (const v of visibleInOrder(src, b, q.reverse, q.version, q.merge, q.nowMs)) {
    count++;
    if (q.countOnly) continue;
    if (kvs.length < limit && (kvs.length === 0 || bytes < q.maxBytes)) {
      const kv = toKvRecord(v, q.keysOnly);
      kvs.push(kv);
      bytes += kv.key.length + kv.value.length;
    } else more = true;
  }
  return { kvs, more, count, version: q.version };
}

/** The keys visible at the newest version in [r.key, r.end) with their records, in storage-key order (txn delete range). */
export function liveKeys(src: ReadSource, r: KeyRange, nowMs: number): { key: Uint8Array; skey: Uint8Array; rec: Uint8Array }[] {
  const b = boundsOf(r);
  if (b.empty) return [];
  const out: { key: Uint8Array; skey: Uint8Array; rec: Uint8Array }[] = [];
  for (const v of visibleBySkey(src, b, false, Number.MAX_SAFE_INTEGER, false, nowMs)) out.push({ key: v.key, skey: v.skey, rec: v.rec });
  return out;
}

function matches(key: Uint8Array, prefixes: Uint8Array[]): boolean {
  if (prefixes.length === 0) return true;
  for (const p of prefixes) {
    if (p.length > key.length) continue;
    let ok = true;
    for (let i = 0; i < p.length; i++) {
      if (key[i] !== p[i]) {
        ok = false;
        break;
      }
    }
    if (ok) return true;
  }
  return false;
}

/**
 * Events with after < version <= through whose key starts with one of `prefixes` (none = all), in
 * (version, storage key) order, at most `limit`: a version is never cut in two unless it alone
 * has more than `limit` matching events (then its first `limit` are returned).
 */
export function readChanges(src: ReadSource, after: number, through: number, prefixes: Uint8Array[], limit: number): KvEvent[] {
  const out: KvEvent[] = [];
  if (through <= after) return out;
  const max = limit >= 1 ? limit : Number.MAX_SAFE_INTEGER;
  const start = Buffer.allocUnsafe(8);
  putU64BE(start, 0, after + 1);
  const end = Buffer.allocUnsafe(8);
  putU64BE(end, 0, through + 1);
  const txn = src.txn ? { transaction: src.txn as never } : {};
  let curVersion = 0;
  let curStart = 0; // index in `out` of the first event of curVersion
  for (const { key: ck, value } of src.changes.getRange({ start, end, ...txn })) {
    if (!recordIntact(value, crcSeed(ck)) || ck.length < 9 || value.length !== 5) throw src.corrupt("changes", ck, "checksum mismatch");
    const version = getU64BE(ck, 0);
    const skey = ck.subarray(8);
    // A short storage key is the user key: filter before fetching anything.
    if (!isHashed(skey) && !matches(skey, prefixes)) continue;
    let rec: Uint8Array | undefined;
    let lmdbKey: Uint8Array;
    const opts = src.txn ? { transaction: src.txn as never } : undefined;
    if (value[0] === CHANGE_PUT) {
      rec = src.latest.get(u8view(skey), opts) as Uint8Array | undefined;
      lmdbKey = skey;
      if (rec && !recordIntact(rec, crcSeed(skey))) throw src.corrupt("latest", skey, "checksum mismatch");
      if (!rec || recVersion(rec) !== version) {
        lmdbKey = historyKey(skey, version, KIND_PUT);
        rec = src.history.get(u8view(lmdbKey), opts) as Uint8Array | undefined;
        if (rec && !recordIntact(rec, crcSeed(lmdbKey))) throw src.corrupt("history", lmdbKey, "checksum mismatch");
      }
    } else {
      lmdbKey = historyKey(skey, version, KIND_TOMB);
      rec = src.history.get(u8view(lmdbKey), opts) as Uint8Array | undefined;
      if (rec && !recordIntact(rec, crcSeed(lmdbKey))) throw src.corrupt("history", lmdbKey, "checksum mismatch");
    }
    if (!rec) throw src.corrupt("changes", ck, "the record of this event is missing");
    const off = recValueOffset(rec);
    if (off < 0) throw src.corrupt(lmdbKey === skey ? "latest" : "history", lmdbKey, "malformed record");
    const key = recFullKey(rec) ?? Buffer.from(skey);
    if (!matches(key, prefixes)) continue;
    if (version !== curVersion) {
      if (out.length >= max) break;
      curVersion = version;
      curStart = out.length;
    } else if (out.length >= max) {
      // The limit falls inside this version: end before it, unless it fills the whole answer.
      if (curStart > 0) out.length = curStart;
      break;
    }
    const put = value[0] === CHANGE_PUT;
    out.push({
      type: put ? "put" : "delete",
      key,
      value: put ? recValue(rec, off) : EMPTY,
      meta: put ? recMeta(rec) : 0,
      version,
      expireAt: recExpireAt(rec),
    });
  }
  return out;
}


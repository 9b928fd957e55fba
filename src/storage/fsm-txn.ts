// Txn: compares against the state at the entry, then the chosen branch's ops in order, all in the
// apply transaction, every write at version = the entry's index (the rules are in fsm.ts).
//
// A key expired at the txn's nowMs (stamped by the leader) counts as missing: compares see
// version 0 / create 0 / no value, delete ranges leave it to the TTL reaper (whose ExpireKey then
// reports the expiry to watchers), and a put onto it starts a new create version.
//
// Before anything runs, the chosen branch is checked for writes that would give one key two
// values at the same version: a key put twice, or put inside one of the branch's delete ranges.
// Such a txn is refused whole with "txn-conflict" (nothing written), as etcd does.

import { type ApplyResult, type TxnOpResult } from "./apply-result.ts";
import { type Command, CommandKind, type KeyRange, type TxnCompare, type TxnOp } from "./command.ts";
import { type Applier, type SortableEvent } from "./fsm-apply.ts";
import { recCreate, recExpireAt, recValue, recValueOffset, recVersion, storageKey, u8view } from "./fsm-format.ts";
import { type ReadSource, liveKeys, scanRange } from "./fsm-range.ts";
import { type KvEvent } from "./fsm.ts";

/** Byte budget of one range op inside a txn (the server caps its limit). */
export const TXN_RANGE_MAX_BYTES = 4 << 20;

const cmp = (a: Uint8Array, b: Uint8Array): number => Buffer.compare(u8view(a), u8view(b));
const inRange = (key: Uint8Array, r: KeyRange): boolean => cmp(key, r.key) >= 0 && (r.end === null || cmp(key, r.end) < 0);

function holds(op: TxnCompare["op"], c: number): boolean {
  switch (op) {
    case "=":
      return c === 0;
    case "!=":
      return c !== 0;
    case "<":
      return c < 0;
    case ">":
      return c > 0;
  }
}

/** Whether compare `c` holds against the current state, keys expired at nowMs being missing. */
function compareHolds(a: Applier, c: TxnCompare, nowMs: number): boolean {
  let rec = a.readLatest(storageKey(c.key));
  if (rec) {
    const exp = recExpireAt(rec);
    if (exp !== 0 && exp <= nowMs) rec = undefined;
  }
  switch (c.target) {
    case "version":
      return holds(c.op, Math.sign((rec ? recVersion(rec) : 0) - c.version));
    case "create":
      return holds(c.op, Math.sign((rec ? recCreate(rec) : 0) - c.version));
    case "value":
      return rec !== undefined && holds(c.op, cmp(recValue(rec, recValueOffset(rec)), c.value));
    case "exists":
      if (c.op === "=") return (rec !== undefined) === c.exists;
      if (c.op === "!=") return (rec !== undefined) !== c.exists;
      return false;
  }
}

/** A description of the first conflict in `ops`, or null. */
function conflictIn(ops: TxnOp[]): string | null {
  const puts = ops.filter((o): o is Extract<TxnOp, { type: "put" }> => o.type === "put").map((o) => o.key);
  const sorted = [...puts].sort(cmp);
  for (let i = 1; i < sorted.length; i++) {
    if (cmp(sorted[i - 1], sorted[i]) === 0) return `key ${u8view(sorted[i]).toString("hex")} is put twice`;
  }
  for (const d of ops) {
    if (d.type !== "delete") continue;
    for (const k of puts) if (inRange(k, d)) return `key ${u8view(k).toString("hex")} is put inside a delete range of the same txn`;
  }
  return null;
}

export function applyTxn(a: Applier, index: number, cmd: Extract<Command, { kind: CommandKind.Txn }>): { events: KvEvent[]; result: ApplyResult } {
  const nowMs = cmd.nowMs;
  let succeeded = true;
  for (const c of cmd.compares) {
    if (!compareHolds(a, c, nowMs)) {
      succeeded = false;
      break;
    }
  }
  const ops = succeeded ? cmd.success : cmd.failure;
  const conflict = conflictIn(ops);
  if (conflict) return { events: [], result: { kind: "error", code: "txn-conflict", message: `txn refused: ${conflict}` } };
  const results: TxnOpResult[] = [];
  const events: SortableEvent[] = [];
  const src = a.readSource();
  a.deferChanges();
  try {
    runOps(a, index, ops, nowMs, src, results, events);
  } catch (e) {
    a.discardChanges(); // the entry's child transaction is aborted
    throw e;
  }
  a.flushChanges();
  // One key has at most one write (conflict check), so storage-key order is total.
  events.sort((x, y) => cmp(x.skey, y.skey));
  return { events: events.map((e) => e.event), result: { kind: "txn", succeeded, version: index, results } };
}

function runOps(a: Applier, index: number, ops: TxnOp[], nowMs: number, src: ReadSource, results: TxnOpResult[], events: SortableEvent[]): void {
  for (const op of ops) {
    switch (op.type) {
      case "put": {
        const ev = a.applyWrite(index, { kind: CommandKind.Put, key: op.key, value: op.value, meta: op.meta, expireAt: op.expireAt }, nowMs);
        if (ev) events.push(ev);
        results.push({ type: "put", version: index });
        break;
      }
      case "delete": {
        // Collected first: the scan's cursor must not see its own deletions.
        const victims = liveKeys(src, op, nowMs);
        for (const v of victims) events.push({ skey: v.skey, event: a.deleteKey(index, v.skey, v.key, v.rec, false) });
        results.push({ type: "delete", deleted: victims.length });
        break;
      }
      case "range": {
        const r = scanRange(src, {
          key: op.key,
          end: op.end,
          limit: op.limit,
          reverse: op.reverse,
          keysOnly: op.keysOnly,
          countOnly: op.countOnly,
          nowMs,
          maxBytes: TXN_RANGE_MAX_BYTES,
          version: index,
          merge: false,
        });
        results.push({ type: "range", ...r });
        break;
      }
    }
  }
}

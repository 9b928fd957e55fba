// Validation of the extension requests (Range, Txn, sessions, Compact) and their conversion
// between the wire messages (gen/rbkv.ts) and the state machine's commands and results
// (src/storage). Every limit is checked here, before anything is proposed, and a request over a
// limit is answered INVALID_ARGUMENT naming the limit and the flag that sets it.

import * as grpc from "@grpc/grpc-js";
import { type RangeResult, type TxnOpResult } from "../storage/apply-result.ts";
import { type Command, CommandKind, type KeyRange, type TxnCompare, type TxnOp } from "../storage/command.ts";
import { type KvRecord, type RangeQuery } from "../storage/fsm.ts";
import { durationToMs } from "./duration.ts";
import { RequestError } from "./errors.ts";
import {
  type Compare,
  Compare_Result,
  Compare_Target,
  type KeyValue,
  type RangeRequest,
  type RangeResponse,
  type RequestOp,
  type ResponseOp,
  type TxnRequest,
  type TxnResponse,
} from "./gen/rbkv.ts";

/** The request limits (server flags). */
export interface RequestLimits {
  maxKeyBytes: number;
  maxValueBytes: number;
  /** Operations per txn branch (compares and each branch counted separately, as etcd). */
  maxTxnOps: number;
  /** Bytes of keys and values in one request. */
  maxRequestBytes: number;
  /** kvs per Range page (limit 0 = this). */
  maxRangeLimit: number;
}

/** Bytes of kvs a Range answers at most (below grpc-js's default 4 MiB receive limit). */
export const RANGE_RESPONSE_BYTES = 3 << 20;

function invalid(message: string): RequestError {
  return new RequestError(grpc.status.INVALID_ARGUMENT, message);
}

export function checkKey(key: Uint8Array, limits: RequestLimits, what = "key"): void {
  if (key.byteLength === 0) throw invalid(`${what} must not be empty`);
  if (key.byteLength > limits.maxKeyBytes) throw invalid(`${what} is ${key.byteLength} bytes; the limit is ${limits.maxKeyBytes} (--max-key-size)`);
}

export function checkValue(value: Uint8Array, limits: RequestLimits): void {
  if (value.byteLength > limits.maxValueBytes) throw invalid(`value is ${value.byteLength} bytes; the limit is ${limits.maxValueBytes} (--max-value-size)`);
}

export function checkMeta(meta: number): void {
  if (!Number.isInteger(meta) || meta < 0 || meta > 0xffffffff) throw invalid(`meta ${meta} is not a uint32`);
}

/** A positive ttl in ms, or 0 when unset. */
export function ttlMsOf(ttl: { seconds: number; nanos: number } | undefined, what = "ttl"): number {
  if (!ttl) return 0;
  const ms = durationToMs(ttl);
  if (!(ms > 0) || !Number.isSafeInteger(ms)) throw invalid(`${what} must be positive`);
  return ms;
}

/**
 * The smallest key greater than every key that starts with `prefix`, or null when there is
 * none (an empty prefix, or one of only 0xFF bytes): then the range has no upper bound.
 */
export function prefixEnd(prefix: Uint8Array): Uint8Array | null {
  for (let i = prefix.byteLength - 1; i >= 0; i--) {
    if (prefix[i]! < 0xff) {
      // A copy (Buffer.prototype.slice would alias the request's key).
      const end = new Uint8Array(prefix.subarray(0, i + 1));
      end[i]! += 1;
      return end;
    }
  }
  return null;
}

/** The interval of a (key, range_end, prefix) triple, as RangeRequest and DeleteOp define it. */
export function keyRangeOf(key: Uint8Array, rangeEnd: Uint8Array, prefix: boolean, limits: RequestLimits): KeyRange {
  if (prefix) {
    if (rangeEnd.byteLength > 0) throw invalid("prefix and range_end exclude each other");
    if (key.byteLength > limits.maxKeyBytes) throw invalid(`key is ${key.byteLength} bytes; the limit is ${limits.maxKeyBytes} (--max-key-size)`);
    return { key, end: prefixEnd(key) };
  }
  if (rangeEnd.byteLength === 0) {
    checkKey(key, limits);
    const end = new Uint8Array(key.byteLength + 1);
    end.set(key);
    return { key, end }; // [key, key ‖ 0x00): exactly the key
  }
  if (key.byteLength > limits.maxKeyBytes) throw invalid(`key is ${key.byteLength} bytes; the limit is ${limits.maxKeyBytes} (--max-key-size)`);
  if (rangeEnd.byteLength > limits.maxKeyBytes + 1) throw invalid(`range_end is ${rangeEnd.byteLength} bytes; the limit is ${limits.maxKeyBytes} (--max-key-size)`);
  // etcd's convention: range_end "\0" = every key >= key.
  if (rangeEnd.byteLength === 1 && rangeEnd[0] === 0) return { key, end: null };
  if (compareBytes(rangeEnd, key) <= 0) throw invalid("range_end must be greater than key (or \"\\0\" for every key from key on)");
  return { key, end: rangeEnd };
}

function rangeLimit(limit: number, limits: RequestLimits): number {
  if (limit > limits.maxRangeLimit) throw invalid(`limit ${limit} is above the limit of ${limits.maxRangeLimit} keys per range (--max-range-limit); page with a smaller limit`);
  return limit === 0 ? limits.maxRangeLimit : limit;
}

/** The state machine's query for a Range request read at `nowMs`. */
export function rangeQueryOf(req: RangeRequest, limits: RequestLimits, nowMs: number): RangeQuery {
  const range = keyRangeOf(req.key, req.rangeEnd, req.prefix, limits);
  return {
    ...range,
    limit: rangeLimit(req.limit, limits),
    reverse: req.reverse,
    atVersion: req.version,
    keysOnly: req.keysOnly,
    countOnly: req.countOnly,
    nowMs,
    maxBytes: RANGE_RESPONSE_BYTES,
  };
}

export function keyValueOf(r: KvRecord): KeyValue {
  return { key: r.key, value: r.value, meta: r.meta, version: r.version, createVersion: r.createVersion, expireAt: r.expireAt };
}

export function rangeResponseOf(r: RangeResult): RangeResponse {
  return { kvs: r.kvs.map(keyValueOf), more: r.more, count: r.count, version: r.version };
}

const COMPARE_TARGET: Record<number, TxnCompare["target"]> = {
  [Compare_Target.VERSION]: "version",
  [Compare_Target.CREATE_VERSION]: "create",
  [Compare_Target.VALUE]: "value",
  [Compare_Target.EXISTS]: "exists",
};
const COMPARE_OP: Record<number, TxnCompare["op"]> = {
  [Compare_Result.EQUAL]: "=",
  [Compare_Result.NOT_EQUAL]: "!=",
  [Compare_Result.LESS]: "<",
  [Compare_Result.GREATER]: ">",
};

function compareOf(c: Compare, i: number, limits: RequestLimits): TxnCompare {
  checkKey(c.key, limits, `compare[${i}].key`);
  const target = COMPARE_TARGET[c.target];
  const op = COMPARE_OP[c.result];
  if (!target) throw invalid(`compare[${i}] has an unknown target ${c.target}`);
  if (!op) throw invalid(`compare[${i}] has an unknown result ${c.result}`);
  if (target === "exists" && op !== "=" && op !== "!=") throw invalid(`compare[${i}]: EXISTS compares only with EQUAL or NOT_EQUAL`);
  if (target === "value") checkValue(c.value, limits);
  return { target, op, key: c.key, version: c.version, value: c.value, exists: c.exists };
}

/** Bytes a request carries in keys and values (the --max-request-bytes budget). */
class ByteBudget {
  used = 0;
  constructor(private readonly limit: number) {}
  add(...parts: Uint8Array[]): void {
    for (const p of parts) this.used += p.byteLength;
    if (this.used > this.limit) throw invalid(`the request carries more than ${this.limit} bytes of keys and values (--max-request-bytes)`);
  }
}

function opOf(o: RequestOp, where: string, limits: RequestLimits, nowMs: number, budget: ByteBudget): TxnOp {
  const op = o.op;
  if (!op) throw invalid(`${where} has no operation`);
  switch (op.$case) {
    case "put": {
      const p = op.value;
      checkKey(p.key, limits, `${where}.put.key`);
      checkValue(p.value, limits);
      checkMeta(p.meta);
      budget.add(p.key, p.value);
      const ttlMs = ttlMsOf(p.ttl, `${where}.put.ttl`);
      return { type: "put", key: p.key, value: p.value, meta: p.meta, expireAt: ttlMs > 0 ? nowMs + ttlMs : 0 };
    }
    case "delete": {
      const d = op.value;
      budget.add(d.key, d.rangeEnd);
      return { type: "delete", ...keyRangeOf(d.key, d.rangeEnd, d.prefix, limits) };
    }
    case "range": {
      const r = op.value;
      budget.add(r.key, r.rangeEnd);
      if (r.version !== 0 || r.minVersion !== 0) throw invalid(`${where}.range: version and min_version do not apply inside a txn (it reads the state it runs on)`);
      return { type: "range", ...keyRangeOf(r.key, r.rangeEnd, r.prefix, limits), limit: rangeLimit(r.limit, limits), reverse: r.reverse, keysOnly: r.keysOnly, countOnly: r.countOnly };
    }
  }
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.byteLength, b.byteLength);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.byteLength - b.byteLength;
}

function inRange(key: Uint8Array, r: KeyRange): boolean {
  return compareBytes(key, r.key) >= 0 && (r.end === null || compareBytes(key, r.end) < 0);
}

/** A branch may write a key once: no key put twice, none put inside one of its delete ranges. */
function checkBranch(ops: TxnOp[], branch: string): void {
  const puts = new Map<string, number>();
  const deletes: KeyRange[] = [];
  ops.forEach((op, i) => {
    if (op.type === "put") {
      const k = Buffer.from(op.key).toString("latin1");
      if (puts.has(k)) throw invalid(`${branch}[${i}] puts a key that ${branch}[${puts.get(k)}] puts too: a txn writes each key at most once`);
      puts.set(k, i);
    } else if (op.type === "delete") deletes.push(op);
  });
  for (const op of ops) {
    if (op.type !== "put") continue;
    if (deletes.some((d) => inRange(op.key, d))) throw invalid(`${branch} puts a key inside one of its own delete ranges: a txn writes each key at most once`);
  }
}

/** The Txn command for a request, stamped with the leader's clock `nowMs`. */
export function txnCommandOf(req: TxnRequest, limits: RequestLimits, nowMs: number): Command {
  for (const [name, n] of [["compare", req.compare.length], ["success", req.success.length], ["failure", req.failure.length]] as const) {
    if (n > limits.maxTxnOps) throw invalid(`the txn has ${n} ${name} operations; the limit is ${limits.maxTxnOps} (--max-txn-ops)`);
  }
  const budget = new ByteBudget(limits.maxRequestBytes);
  const compares = req.compare.map((c, i) => {
    budget.add(c.key, c.value);
    return compareOf(c, i, limits);
  });
  const success = req.success.map((o, i) => opOf(o, `success[${i}]`, limits, nowMs, budget));
  const failure = req.failure.map((o, i) => opOf(o, `failure[${i}]`, limits, nowMs, budget));
  checkBranch(success, "success");
  checkBranch(failure, "failure");
  return { kind: CommandKind.Txn, nowMs, compares, success, failure };
}

function responseOpOf(r: TxnOpResult): ResponseOp {
  switch (r.type) {
    case "put":
      return { result: { $case: "put", value: { version: r.version } } };
    case "delete":
      return { result: { $case: "delete", value: { deleted: r.deleted } } };
    case "range":
      return { result: { $case: "range", value: rangeResponseOf(r) } };
  }
}

export function txnResponseOf(r: { succeeded: boolean; version: number; results: TxnOpResult[] }): TxnResponse {
  return { succeeded: r.succeeded, version: r.version, responses: r.results.map(responseOpOf) };
}

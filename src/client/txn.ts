// The Txn builder: compares and operations as small values, turned into a TxnRequest.
//
//   await client.txn()
//     .if(compare.version("k", "=", 0))          // all compares must hold ...
//     .then(op.put("k", "v"))                    // ... for these to run
//     .else(op.get("k"))                         // otherwise these
//     .commit();

import { type Bytes, toBytes } from "./bytes.ts";
import { type Compare, Compare_Result, Compare_Target, type RequestOp, type ResponseOp, type TxnResponse } from "../server/gen/rbkv.ts";
import { type KeyValueEntry, entryOf } from "./entries.ts";

export type CompareOp = "=" | "!=" | "<" | ">";

const RESULT: Record<CompareOp, Compare_Result> = {
  "=": Compare_Result.EQUAL,
  "!=": Compare_Result.NOT_EQUAL,
  "<": Compare_Result.LESS,
  ">": Compare_Result.GREATER,
};

function resultOf(op: CompareOp): Compare_Result {
  const r = RESULT[op];
  if (r === undefined) throw new TypeError(`a compare operator is one of = != < >, got ${JSON.stringify(op)}`);
  return r;
}

function base(key: Bytes): Compare {
  return { result: Compare_Result.EQUAL, target: Compare_Target.VERSION, key: toBytes(key), version: 0, value: new Uint8Array(0), exists: false };
}

/** Compares of a txn. A missing key has version and create version 0 and no value. */
export const compare = {
  /** The key's current version (0 if it does not exist). */
  version(key: Bytes, op: CompareOp, version: number): Compare {
    return { ...base(key), result: resultOf(op), target: Compare_Target.VERSION, version };
  },
  /** The version at which the key was created (0 if it does not exist). */
  createVersion(key: Bytes, op: CompareOp, version: number): Compare {
    return { ...base(key), result: resultOf(op), target: Compare_Target.CREATE_VERSION, version };
  },
  /** The key's value, compared as bytes (a missing key never compares true). */
  value(key: Bytes, op: CompareOp, value: Bytes): Compare {
    return { ...base(key), result: resultOf(op), target: Compare_Target.VALUE, value: toBytes(value) };
  },
  /** The key exists. */
  exists(key: Bytes): Compare {
    return { ...base(key), result: Compare_Result.EQUAL, target: Compare_Target.EXISTS, exists: true };
  },
  /** The key does not exist. */
  missing(key: Bytes): Compare {
    return { ...base(key), result: Compare_Result.EQUAL, target: Compare_Target.EXISTS, exists: false };
  },
};

export interface PutOptions {
  /** The key expires this long after the write (whole ms; 0 or unset = never). */
  ttlMs?: number;
  /** An opaque user byte stored with the value (0..255). */
  meta?: number;
}

export function durationOf(ms: number): { seconds: number; nanos: number } | undefined {
  if (!Number.isFinite(ms) || ms < 0) throw new TypeError(`ttlMs must be a finite number >= 0, got ${ms}`);
  if (ms === 0) return undefined;
  const whole = Math.round(ms);
  return { seconds: Math.floor(whole / 1000), nanos: (whole % 1000) * 1_000_000 };
}

/** Operations of a txn branch. */
export const op = {
  put(key: Bytes, value: Bytes, opts: PutOptions = {}): RequestOp {
    return { op: { $case: "put", value: { key: toBytes(key), value: toBytes(value), meta: opts.meta ?? 0, ttl: durationOf(opts.ttlMs ?? 0) } } };
  },
  delete(key: Bytes): RequestOp {
    return { op: { $case: "delete", value: { key: toBytes(key), rangeEnd: new Uint8Array(0), prefix: false } } };
  },
  /** Deletes every key that starts with `prefix`. */
  deletePrefix(prefix: Bytes): RequestOp {
    return { op: { $case: "delete", value: { key: toBytes(prefix), rangeEnd: new Uint8Array(0), prefix: true } } };
  },
  /** Reads one key inside the txn (at the txn's version). */
  get(key: Bytes): RequestOp {
    return {
      op: {
        $case: "range",
        value: { key: toBytes(key), rangeEnd: new Uint8Array(0), prefix: false, limit: 0, reverse: false, version: 0, keysOnly: false, countOnly: false, rc: 0, minVersion: 0 },
      },
    };
  },
};

/** One result per operation of the branch that ran, in order. */
export type TxnOpResult = { type: "put"; version: number } | { type: "delete"; deleted: number } | { type: "get"; kvs: KeyValueEntry[] };

export interface TxnResult {
  /** Whether every compare held (the `then` branch ran) or not (the `else` branch ran). */
  succeeded: boolean;
  /** The txn's log index: the version of all its writes. */
  version: number;
  results: TxnOpResult[];
}

function opResultOf(r: ResponseOp): TxnOpResult {
  const res = r.result;
  switch (res?.$case) {
    case "put":
      return { type: "put", version: res.value.version };
    case "delete":
      return { type: "delete", deleted: res.value.deleted };
    case "range":
      return { type: "get", kvs: res.value.kvs.map(entryOf) };
    default:
      throw new TypeError("the server answered a txn operation with no result");
  }
}

export function txnResultOf(r: TxnResponse): TxnResult {
  return { succeeded: r.succeeded, version: r.version, results: r.responses.map(opResultOf) };
}

export interface TxnParts {
  compare: Compare[];
  success: RequestOp[];
  failure: RequestOp[];
}

function checkOps(branch: string, ops: unknown[]): RequestOp[] {
  for (const o of ops) {
    if (typeof o !== "object" || o === null || !("op" in o)) {
      throw new TypeError(`txn().${branch}() takes operations made with op.put / delete / deletePrefix / get${typeof o === "function" ? " (was the builder awaited instead of its commit()?)" : ""}`);
    }
  }
  return ops as RequestOp[];
}

/** Collects compares and branches; commit() sends them as one atomic Txn (exactly once). */
export class TxnBuilder {
  private readonly parts: TxnParts = { compare: [], success: [], failure: [] };

  constructor(private readonly send: (parts: TxnParts) => Promise<TxnResult>) {}

  if(...compares: Compare[]): this {
    for (const c of compares) {
      if (typeof c !== "object" || c === null || !("target" in c) || !("key" in c)) throw new TypeError("txn().if() takes compares made with compare.version / createVersion / value / exists / missing");
    }
    this.parts.compare.push(...compares);
    return this;
  }

  /**
   * The operations run when every compare holds. (A builder is not a promise: `await`ing one
   * instead of its commit() calls this with functions, which is refused here, so the mistake is
   * an error rather than a hang.)
   */
  then(...ops: RequestOp[]): this {
    this.parts.success.push(...checkOps("then", ops));
    return this;
  }

  else(...ops: RequestOp[]): this {
    this.parts.failure.push(...checkOps("else", ops));
    return this;
  }

  commit(): Promise<TxnResult> {
    return this.send({ compare: [...this.parts.compare], success: [...this.parts.success], failure: [...this.parts.failure] });
  }
}

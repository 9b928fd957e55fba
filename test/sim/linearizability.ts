/**
 * Linearizability checker for key-value store histories.
 *
 * Implements the Wing & Gong backtracking search with Lowe's just-in-time
 * linearization cache (the approach used by Porcupine / Knossos' "linear"
 * checker):
 *
 *  - The history is partitioned by key (linearizability is P-compositional for
 *    independent registers) and each key's sub-history is checked on its own.
 *  - Each operation contributes a call event and a return event; the events
 *    are kept in a doubly linked list ordered by time (calls before returns at
 *    equal times, since equal times mean "concurrent").
 *  - The search walks the list. On a call it tries to linearize that operation
 *    now (apply it to the model); if the model accepts it and the pair
 *    (set of linearized ops, model state) has not been seen before, the op's
 *    call and return are lifted out of the list and the walk restarts from the
 *    head. Reaching a return event means that op was not linearized before it
 *    responded, so the search backtracks (undoing the most recent choice and
 *    trying the next candidate after it).
 *  - The cache of (bitset, state) pairs prunes states that were already
 *    explored and known to be dead ends.
 *
 * Timed-out operations (complete === null): puts/deletes are given a return
 * time of +Infinity, and the search succeeds as soon as every op with a known
 * completion is linearized — so a timed-out write may take effect at any point
 * after its invocation, or never. Timed-out gets are dropped entirely.
 */

export type KvOp =
  | { kind: "put"; key: string; value: string }
  | { kind: "delete"; key: string }
  | { kind: "get"; key: string };

// result: for get, the value read or null when missing; for put/delete, null.
export interface HistoryOp {
  id: number; // unique per op
  client: number; // client id (informational)
  op: KvOp;
  invoke: number; // virtual time the call started
  complete: number | null; // virtual time the response arrived; null = timed out / unknown outcome
  result: string | null; // only meaningful when complete !== null
}

export interface CheckResult {
  ok: boolean;
  // when !ok: the key whose sub-history is not linearizable, and a short human-readable explanation
  key?: string;
  explanation?: string;
  // true when the search gave up because of the budget (then ok is true but unproven)
  timedOut?: boolean;
}

const DEFAULT_MAX_STATES = 2_000_000;
const NIL = -1;
const KIND_PUT = 0;
const KIND_DELETE = 1;
const KIND_GET = 2;
/** Encoded value id for "absent". */
const ABSENT = 0;
/** How many of the last linearized ops to show in an explanation. */
const PREFIX_SHOWN = 5;

interface KeyCheckResult {
  ok: boolean;
  timedOut: boolean;
  explanation?: string;
}

export function checkLinearizable(
  history: HistoryOp[],
  opts?: { maxStates?: number },
): CheckResult {
  const maxStates = opts?.maxStates ?? DEFAULT_MAX_STATES;
  if (!(maxStates > 0)) {
    throw new Error(`checkLinearizable: maxStates must be positive, got ${maxStates}`);
  }

  const seenIds = new Set<number>();
  const byKey = new Map<string, HistoryOp[]>();
  for (const h of history) {
    validate(h);
    if (seenIds.has(h.id)) {
      throw new Error(`checkLinearizable: duplicate op id ${h.id}`);
    }
    seenIds.add(h.id);
    // A timed-out get has no effect and no known result: it constrains nothing.
    if (h.complete === null && h.op.kind === "get") continue;
    const list = byKey.get(h.op.key);
    if (list === undefined) byKey.set(h.op.key, [h]);
    else list.push(h);
  }

  const keys = [...byKey.keys()].sort();
  let timedOut = false;
  for (const key of keys) {
    const ops = byKey.get(key);
    if (ops === undefined) continue;
    const r = checkKey(key, ops, maxStates);
    if (!r.ok) {
      return { ok: false, key, explanation: r.explanation };
    }
    if (r.timedOut) timedOut = true;
  }
  return timedOut ? { ok: true, timedOut: true } : { ok: true };
}

function validate(h: HistoryOp): void {
  if (!Number.isFinite(h.invoke)) {
    throw new Error(`checkLinearizable: op #${h.id} has non-finite invoke time ${h.invoke}`);
  }
  if (h.complete !== null) {
    if (Number.isNaN(h.complete)) {
      throw new Error(`checkLinearizable: op #${h.id} has NaN complete time`);
    }
    if (h.complete < h.invoke) {
      throw new Error(
        `checkLinearizable: op #${h.id} completes (${h.complete}) before it is invoked (${h.invoke})`,
      );
    }
  }
}

/** Deterministic 32-bit PRNG (mulberry32) for Zobrist hashing of op sets. */
function makeRng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) | 0;
  };
}

function fmtValue(v: string | null): string {
  return v === null ? "<absent>" : JSON.stringify(v);
}

function describeOp(h: HistoryOp): string {
  let what: string;
  switch (h.op.kind) {
    case "put":
      what = `put(${JSON.stringify(h.op.key)}, ${JSON.stringify(h.op.value)})`;
      break;
    case "delete":
      what = `delete(${JSON.stringify(h.op.key)})`;
      break;
    case "get":
      what = `get(${JSON.stringify(h.op.key)})`;
      if (h.complete !== null) what += ` -> ${fmtValue(h.result)}`;
      break;
  }
  const done = h.complete === null ? "timed out" : String(h.complete);
  return `#${h.id} client ${h.client} ${what} [${h.invoke}, ${done}]`;
}

/** Set of (linearized-ops bitset, model state) pairs already explored. */
class StateCache {
  private readonly buckets = new Map<number, { bits: Uint32Array; state: number }[]>();

  /** Adds the pair; returns false when it was already present. */
  add(hash: number, bits: Uint32Array, state: number): boolean {
    const bucket = this.buckets.get(hash);
    if (bucket === undefined) {
      this.buckets.set(hash, [{ bits: bits.slice(), state }]);
      return true;
    }
    outer: for (const e of bucket) {
      if (e.state !== state) continue;
      const b = e.bits;
      for (let i = 0; i < b.length; i++) {
        if (b[i] !== bits[i]) continue outer;
      }
      return false;
    }
    bucket.push({ bits: bits.slice(), state });
    return true;
  }
}

function checkKey(key: string, ops: HistoryOp[], maxStates: number): KeyCheckResult {
  const n = ops.length;

  // Intern values: 0 = absent, 1.. = distinct written values.
  const valueIds = new Map<string, number>();
  const valueNames: (string | null)[] = [null];
  const kind = new Uint8Array(n);
  const arg = new Int32Array(n); // put: value id; get: expected value id
  const required = new Uint8Array(n);
  let remaining = 0;

  for (let i = 0; i < n; i++) {
    const o = ops[i].op;
    if (o.kind === "put") {
      let id = valueIds.get(o.value);
      if (id === undefined) {
        id = valueNames.length;
        valueIds.set(o.value, id);
        valueNames.push(o.value);
      }
      kind[i] = KIND_PUT;
      arg[i] = id;
    } else if (o.kind === "delete") {
      kind[i] = KIND_DELETE;
    } else {
      kind[i] = KIND_GET;
    }
    if (ops[i].complete !== null) {
      required[i] = 1;
      remaining++;
    }
  }
  for (let i = 0; i < n; i++) {
    if (kind[i] !== KIND_GET) continue;
    const r = ops[i].result;
    if (r === null) {
      arg[i] = ABSENT;
    } else {
      const id = valueIds.get(r);
      if (id === undefined) {
        return {
          ok: false,
          timedOut: false,
          explanation:
            `${describeOp(ops[i])} returned ${JSON.stringify(r)}, ` +
            `which no put on key ${JSON.stringify(key)} ever wrote`,
        };
      }
      arg[i] = id;
    }
  }

  if (remaining === 0) return { ok: true, timedOut: false };

  // Events: node 2i = call of op i, node 2i+1 = return of op i. HEAD is a sentinel.
  const HEAD = 2 * n;
  const nodeTime = (node: number): number => {
    const h = ops[node >> 1];
    if ((node & 1) === 0) return h.invoke;
    return h.complete === null ? Infinity : h.complete;
  };
  const order: number[] = [];
  for (let node = 0; node < 2 * n; node++) order.push(node);
  order.sort((a, b) => {
    const ta = nodeTime(a);
    const tb = nodeTime(b);
    if (ta !== tb) return ta < tb ? -1 : 1;
    // Equal times are concurrent: all calls before any return.
    const ra = a & 1;
    const rb = b & 1;
    if (ra !== rb) return ra - rb;
    return ops[a >> 1].id - ops[b >> 1].id;
  });

  const next = new Int32Array(2 * n + 1);
  const prev = new Int32Array(2 * n + 1);
  let last = HEAD;
  prev[HEAD] = NIL;
  for (const node of order) {
    next[last] = node;
    prev[node] = last;
    last = node;
  }
  next[last] = NIL;

  const unlinkNode = (x: number): void => {
    next[prev[x]] = next[x];
    if (next[x] !== NIL) prev[next[x]] = prev[x];
  };
  const relinkNode = (x: number): void => {
    next[prev[x]] = x;
    if (next[x] !== NIL) prev[next[x]] = x;
  };
  // lift/unlift must be used in LIFO order (dancing links).
  const lift = (op: number): void => {
    unlinkNode(2 * op);
    unlinkNode(2 * op + 1);
  };
  const unlift = (op: number): void => {
    relinkNode(2 * op + 1);
    relinkNode(2 * op);
  };

  const rng = makeRng(0x9e3779b9 ^ n);
  const zobrist = new Int32Array(n);
  for (let i = 0; i < n; i++) zobrist[i] = rng();
  const bits = new Uint32Array((n + 31) >>> 5);
  const cache = new StateCache();
  const cacheHash = (h: number, state: number): number =>
    (h ^ Math.imul(state + 1, 0x85ebca6b) ^ (state >>> 7)) | 0;

  const stackOp = new Int32Array(n);
  const stackPrevState = new Int32Array(n);
  let sp = 0;
  let state = ABSENT;
  let hash = 0;
  let explored = 0;

  // Diagnostics: the deepest partial linearization reached and the op whose
  // response blocked further progress there.
  let bestDepth = -1;
  let bestBlocked = -1;
  let bestState = ABSENT;
  let bestPrefix: Int32Array = new Int32Array(0);

  let node = next[HEAD];
  while (remaining > 0) {
    if (node === NIL) {
      // Cannot happen: an unlinearized required op always has a finite return
      // in the list, and all infinite returns sort after every finite event.
      throw new Error("checkLinearizable: internal error, ran off the event list");
    }
    const op = node >> 1;
    if ((node & 1) === 0) {
      // Call event: try to linearize op now.
      let accepted: boolean;
      let newState: number;
      switch (kind[op]) {
        case KIND_PUT:
          accepted = true;
          newState = arg[op];
          break;
        case KIND_DELETE:
          accepted = true;
          newState = ABSENT;
          break;
        default:
          accepted = state === arg[op];
          newState = state;
          break;
      }
      if (accepted) {
        const w = op >>> 5;
        const m = 1 << (op & 31);
        bits[w] |= m;
        const newHash = hash ^ zobrist[op];
        if (cache.add(cacheHash(newHash, newState), bits, newState)) {
          explored++;
          if (explored > maxStates) return { ok: true, timedOut: true };
          stackOp[sp] = op;
          stackPrevState[sp] = state;
          sp++;
          state = newState;
          hash = newHash;
          lift(op);
          if (required[op] === 1) remaining--;
          node = next[HEAD];
          continue;
        }
        bits[w] &= ~m;
      }
      node = next[node];
    } else {
      // Return event: op responded without having been linearized. Backtrack.
      if (sp > bestDepth) {
        bestDepth = sp;
        bestBlocked = op;
        bestState = state;
        bestPrefix = stackOp.slice(0, sp);
      }
      if (sp === 0) {
        return {
          ok: false,
          timedOut: false,
          explanation: explain(key, ops, bestBlocked, bestPrefix, valueNames[bestState] ?? null),
        };
      }
      sp--;
      const top = stackOp[sp];
      state = stackPrevState[sp];
      hash ^= zobrist[top];
      bits[top >>> 5] &= ~(1 << (top & 31));
      unlift(top);
      if (required[top] === 1) remaining++;
      node = next[2 * top];
    }
  }
  return { ok: true, timedOut: false };
}

function explain(
  key: string,
  ops: HistoryOp[],
  blocked: number,
  prefix: Int32Array,
  value: string | null,
): string {
  const parts: string[] = [];
  parts.push(
    `no linearization of the ${ops.length} ops on key ${JSON.stringify(key)}: ` +
      `${describeOp(ops[blocked])} cannot be linearized`,
  );
  if (prefix.length === 0) {
    parts.push(`even as the first operation (register initially ${fmtValue(null)})`);
  } else {
    const shown: string[] = [];
    const from = Math.max(0, prefix.length - PREFIX_SHOWN);
    for (let i = from; i < prefix.length; i++) shown.push(describeOp(ops[prefix[i]]));
    parts.push(
      `after the longest linearizable prefix (${prefix.length} ops` +
        (from > 0 ? `, last ${shown.length}` : "") +
        `: ${shown.join("; ")}), where the register holds ${fmtValue(value)}`,
    );
  }
  return parts.join(" ");
}

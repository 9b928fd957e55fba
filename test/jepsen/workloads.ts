// The workloads: concurrent clients over the gRPC API of every node, each op recorded with its
// invoke/complete times (process-monotonic ms) and outcome.
//
//   register  linearizable get / put (unique values) / delete on a few hot keys; each key is
//             retired after `opsPerKey` ops for a fresh one (Jepsen's "independent" keys) so that
//             every key's history stays small enough for the linearizability search
//   set       every client puts unique keys; after healing, every acknowledged key must be on
//             every node and every write that certainly failed must be on none
//   watch     writers put / overwrite / delete keys under "w/", and one watcher per node streams
//             the prefix; every stream is recorded as segments (one per unbroken stream)

import type * as grpc from "@grpc/grpc-js";
import { Event_EventType as EventType, type WatchResponse } from "../../src/server/gen/rbkv.ts";
import type { HistoryOp } from "../sim/linearizability.ts";
import type { Prng } from "../sim/prng.ts";
import { dec, sleep } from "../e2e/harness.ts";
import { type NodeClient, type Outcome, codeName, now } from "./client.ts";
import type { JepsenCluster } from "./cluster.ts";

export interface RunCtx {
  cluster: JepsenCluster;
  /** Date.now() after which no new op starts. */
  deadline: number;
  opTimeoutMs: number;
  /** Every key any op touched (for the final agreement and key-count checks). */
  attempted: Set<string>;
  /** Appends one line to history.jsonl. */
  record(line: object): void;
}

export interface RegisterOp extends HistoryOp {
  node: number;
  code?: string;
  /** When a failed op's error arrived (complete stays null: its outcome is unknown). */
  returned?: number;
}

export type WriteStatus = "ok" | "fail" | "unknown";

export interface SetAttempt {
  key: string;
  value: string;
  client: number;
  node: number;
  invoke: number;
  complete: number | null;
  status: WriteStatus;
  version: number;
  code?: string;
  /** When a failed put's error arrived. */
  returned?: number;
}

export interface WatchWrite {
  type: "put" | "delete";
  key: string;
  value: string;
  node: number;
  invoke: number;
  complete: number | null;
  status: WriteStatus;
  version: number;
}

export interface WatchEvent {
  version: number;
  type: "put" | "delete";
  key: string;
  value: string;
}

export interface WatchSegment {
  node: number;
  watcherId: string;
  opened: number;
  closed: number | null;
  /** How the stream ended: null while open; "error CODE: details", "end" or "cancelled". */
  end: string | null;
  events: WatchEvent[];
}

export interface Latencies {
  [op: string]: number[];
}

function pickNode(rng: Prng, n: number): number {
  return rng.int(0, n - 1);
}

function statusOf(o: Outcome<unknown>): WriteStatus {
  if (o.ok) return "ok";
  return o.definite ? "fail" : "unknown";
}

/** The error of a failed op, short. */
function why(o: Outcome<unknown>): string {
  return o.ok ? "" : `${codeName(o.code)}: ${o.details.slice(0, 100)}`;
}

export function recordLatency(lat: Latencies, op: string, ms: number): void {
  (lat[op] ??= []).push(ms);
}

// -------------------------------------------------------------------------------------------
// register
// -------------------------------------------------------------------------------------------

export class RegisterWorkload {
  readonly history: RegisterOp[] = [];
  readonly latencies: Latencies = {};
  private readonly slots: { gen: number; count: number }[] = [];
  private nextId = 0;

  constructor(
    private readonly ctx: RunCtx,
    private readonly rngs: Prng[],
    private readonly opts: { keys: number; opsPerKey: number },
  ) {
    for (let i = 0; i < opts.keys; i++) this.slots.push({ gen: 0, count: 0 });
  }

  run(): Promise<void> {
    return Promise.all(this.rngs.map((rng, c) => this.client(c, rng))).then(() => {});
  }

  private key(rng: Prng): string {
    const slot = rng.int(0, this.slots.length - 1);
    const s = this.slots[slot]!;
    const key = `r/${slot}/${s.gen}`;
    if (++s.count >= this.opts.opsPerKey) {
      s.gen++;
      s.count = 0;
    }
    this.ctx.attempted.add(key);
    return key;
  }

  private async client(c: number, rng: Prng): Promise<void> {
    const { cluster, opTimeoutMs } = this.ctx;
    let seq = 0;
    while (Date.now() < this.ctx.deadline) {
      const key = this.key(rng);
      const node = pickNode(rng, cluster.size);
      const kv = cluster.clients[node]!;
      const r = rng.float();
      const id = this.nextId++;
      const invoke = now();
      let op: RegisterOp;
      let failed = false;
      if (r < 0.5) {
        const out = await kv.get(key, opTimeoutMs);
        const complete = now();
        if (out.ok) {
          op = { id, client: c, node, op: { kind: "get", key }, invoke, complete, result: out.value.value };
          recordLatency(this.latencies, "get", complete - invoke);
        } else {
          failed = true;
          op = { id, client: c, node, op: { kind: "get", key }, invoke, complete: null, result: null, code: why(out), returned: complete };
        }
      } else {
        const isPut = r < 0.9;
        const value = `${c}.${seq++}`;
        const out = isPut ? await kv.put(key, value, opTimeoutMs) : await kv.del(key, opTimeoutMs);
        const complete = now();
        const kop = isPut ? ({ kind: "put", key, value } as const) : ({ kind: "delete", key } as const);
        if (out.ok) {
          op = { id, client: c, node, op: kop, invoke, complete, result: null };
          recordLatency(this.latencies, isPut ? "put" : "delete", complete - invoke);
        } else {
          failed = true;
          op = { id, client: c, node, op: kop, invoke, complete: null, result: null, code: why(out), returned: complete };
          // A write that certainly did not happen is left out of the history.
          if (out.definite) op.code = `${op.code} (definite)`;
        }
        if (!out.ok && out.definite) {
          this.ctx.record({ w: "register", ...op, status: "fail" });
          await sleep(rng.int(20, 150));
          continue;
        }
      }
      this.history.push(op);
      this.ctx.record({ w: "register", ...op, status: op.complete === null ? "unknown" : "ok" });
      if (failed) await sleep(rng.int(20, 150));
    }
  }
}

// -------------------------------------------------------------------------------------------
// set
// -------------------------------------------------------------------------------------------

export class SetWorkload {
  readonly attempts: SetAttempt[] = [];
  readonly latencies: Latencies = {};

  constructor(
    private readonly ctx: RunCtx,
    private readonly rngs: Prng[],
    private readonly prefix = "s",
  ) {}

  run(): Promise<void> {
    return Promise.all(this.rngs.map((rng, c) => this.client(c, rng))).then(() => {});
  }

  private async client(c: number, rng: Prng): Promise<void> {
    const { cluster, opTimeoutMs } = this.ctx;
    for (let seq = 0; Date.now() < this.ctx.deadline; seq++) {
      const key = `${this.prefix}/${c}/${seq}`;
      const value = `v${c}.${seq}`;
      const node = pickNode(rng, cluster.size);
      this.ctx.attempted.add(key);
      const invoke = now();
      const out = await cluster.clients[node]!.put(key, value, opTimeoutMs);
      const complete = now();
      const a: SetAttempt = {
        key,
        value,
        client: c,
        node,
        invoke,
        complete: out.ok ? complete : null,
        status: statusOf(out),
        version: out.ok ? out.value.version : 0,
      };
      if (!out.ok) {
        a.code = why(out);
        a.returned = complete;
      }
      else recordLatency(this.latencies, "set-put", complete - invoke);
      this.attempts.push(a);
      this.ctx.record({ w: this.prefix === "s" ? "set" : this.prefix, ...a });
      if (!out.ok) await sleep(rng.int(20, 150));
    }
  }
}

// -------------------------------------------------------------------------------------------
// watch
// -------------------------------------------------------------------------------------------

export const WATCH_PREFIX = "w/";

export class WatchWorkload {
  readonly writes: WatchWrite[] = [];
  readonly segments: WatchSegment[] = [];
  readonly latencies: Latencies = {};
  private readonly current: (WatchSegment | null)[] = [];
  private readonly calls = new Map<WatchSegment, grpc.ClientReadableStream<WatchResponse>>();
  private stopping = false;
  private watcherLoops: Promise<void>[] = [];
  private segNo = 0;

  constructor(
    private readonly ctx: RunCtx,
    private readonly rngs: Prng[],
  ) {}

  /** Opens the watchers (one per node, reopened after errors). */
  startWatchers(): void {
    for (let i = 0; i < this.ctx.cluster.size; i++) {
      this.current.push(null);
      this.watcherLoops.push(this.watcher(i));
    }
  }

  runWriters(): Promise<void> {
    return Promise.all(this.rngs.map((rng, c) => this.writer(c, rng))).then(() => {});
  }

  private async writer(c: number, rng: Prng): Promise<void> {
    const { cluster, opTimeoutMs } = this.ctx;
    const mine: string[] = [];
    for (let seq = 0; Date.now() < this.ctx.deadline; seq++) {
      const r = rng.float();
      let type: "put" | "delete" = "put";
      let key: string;
      if (mine.length > 0 && r < 0.3) {
        key = mine[rng.int(0, mine.length - 1)]!;
        if (r < 0.1) type = "delete";
      } else {
        key = `${WATCH_PREFIX}${c}/${seq}`;
        mine.push(key);
      }
      const value = type === "put" ? `${c}.${seq}` : "";
      const node = pickNode(rng, cluster.size);
      this.ctx.attempted.add(key);
      const invoke = now();
      const kv = cluster.clients[node]!;
      const out = type === "put" ? await kv.put(key, value, opTimeoutMs) : await kv.del(key, opTimeoutMs);
      const complete = now();
      const w: WatchWrite = { type, key, value, node, invoke, complete: out.ok ? complete : null, status: statusOf(out), version: out.ok ? out.value.version : 0 };
      this.writes.push(w);
      if (out.ok) recordLatency(this.latencies, `watch-${type}`, complete - invoke);
      this.ctx.record({ w: "watch-write", ...w, code: out.ok ? undefined : why(out), returned: out.ok ? undefined : complete });
      if (!out.ok) await sleep(rng.int(20, 150));
    }
  }

  private async watcher(node: number): Promise<void> {
    while (!this.stopping) {
      const seg: WatchSegment = { node, watcherId: `jw${node + 1}-${this.segNo++}`, opened: now(), closed: null, end: null, events: [] };
      this.segments.push(seg);
      this.current[node] = seg;
      const done = new Promise<void>((resolve) => {
        let call: grpc.ClientReadableStream<WatchResponse>;
        try {
          call = this.ctx.cluster.clients[node]!.watch(WATCH_PREFIX, seg.watcherId);
        } catch (err) {
          seg.end = `error: ${(err as Error).message}`;
          seg.closed = now();
          resolve();
          return;
        }
        this.calls.set(seg, call);
        const finish = (how: string): void => {
          if (seg.end !== null) return;
          seg.end = how;
          seg.closed = now();
          this.calls.delete(seg);
          resolve();
        };
        call.on("data", (r: WatchResponse) => {
          const ev = r.event;
          if (!ev) return;
          seg.events.push({ version: ev.version, type: ev.type === EventType.Delete ? "delete" : "put", key: dec(ev.key), value: dec(ev.value) });
        });
        call.on("error", (err: grpc.ServiceError) => finish(this.stopping ? "cancelled" : `error ${codeName(err.code)}: ${err.details}`));
        call.on("end", () => finish(this.stopping ? "cancelled" : "end"));
      });
      await done;
      this.ctx.record({ w: "watch-segment", node: seg.node, watcherId: seg.watcherId, opened: seg.opened, closed: seg.closed, end: seg.end, events: seg.events.length, first: seg.events[0]?.version, last: seg.events.at(-1)?.version });
      if (!this.stopping) await sleep(300);
    }
  }

  /** The stream now open on `node`, if any. */
  currentSegment(node: number): WatchSegment | null {
    const s = this.current[node];
    return s && s.end === null ? s : null;
  }

  async stopWatchers(): Promise<void> {
    this.stopping = true;
    for (const call of this.calls.values()) call.cancel();
    await Promise.race([Promise.all(this.watcherLoops), sleep(5000)]);
  }

  /**
   * After recovery: writes a marker under the prefix and waits until the stream open on every
   * node delivered it. A stream that ended with an error meanwhile is reopened and a new marker
   * written (bounded rounds). A stream that stays open and silent is a stalled watch.
   */
  async verifyLiveStreams(client: () => NodeClient, timeoutMs = 10_000): Promise<{ ok: boolean; detail: string }> {
    const n = this.ctx.cluster.size;
    for (let round = 0; round < 5; round++) {
      await sleep(round === 0 ? 500 : 1000);
      const key = `${WATCH_PREFIX}marker/${round}`;
      this.ctx.attempted.add(key);
      const out = await client().put(key, `m${round}`, 5000);
      if (!out.ok) continue;
      const version = out.value.version;
      this.writes.push({ type: "put", key, value: `m${round}`, node: -1, invoke: now(), complete: now(), status: "ok", version });
      const deadline = Date.now() + timeoutMs;
      let retry = false;
      for (;;) {
        let pending: number[] = [];
        for (let i = 0; i < n; i++) {
          const seg = this.currentSegment(i);
          if (seg === null) {
            retry = true;
            continue;
          }
          if (!seg.events.some((e) => e.version >= version)) pending.push(i);
        }
        if (pending.length === 0 && !retry) return { ok: true, detail: `every node's stream delivered the marker at version ${version}` };
        if (pending.length === 0) break;
        if (Date.now() > deadline) {
          pending = pending.filter((i) => this.currentSegment(i) !== null);
          if (pending.length === 0) break;
          return {
            ok: false,
            detail: `stalled watch: the open stream on ${pending.map((i) => `node${i + 1}`).join(", ")} did not deliver the marker write at version ${version} within ${timeoutMs} ms (and did not end with an error)`,
          };
        }
        await sleep(50);
      }
    }
    return { ok: false, detail: "could not get an open stream on every node to deliver a marker write in 5 rounds" };
  }
}

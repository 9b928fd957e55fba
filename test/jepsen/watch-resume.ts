// The watch-resume workload: watchers that survive the death of their stream or node by resuming
// on another node from the last version they received, as a cache invalidated by watches does.
//
//   writers    put unique keys "wr/<writer>/<n>" through random nodes (never overwritten)
//   watchers   each a logical subscriber of "wr/": a chain of streams (segments). The first one
//              starts at the store's version before any write; every later one is opened on
//              ANOTHER node with start_version = the last version received (an event's or a
//              Progress event's), with progress_notify on. A segment ends when its stream fails
//              (kill, restart, removal), when it is stale (its version did not advance for
//              STALE_MS while writes go on: a paused or partitioned node), or when the watcher
//              hops on its own (every 1-6 s, so that resumes happen without faults too). Every
//              second watcher stays away 0.3-4 s before it resumes (a cache process that
//              restarts): its resumes replay seconds of history, and a compaction meanwhile
//              resets it. The client dedupes nothing: the server promises no duplicate.
//              OUT_OF_RANGE naming the compacted version is an explicit reset: recorded, and the
//              watcher goes on from that version.
//   compactor  every 1.5-4 s compacts to a little below the newest acknowledged version, so that
//              a watcher that stays away long enough is reset
//
// Checked by watch-resume-check.ts with the final state.

import * as grpc from "@grpc/grpc-js";
import { Event_EventType as EventType, ReadConsistency, type WatchResponse } from "../../src/server/gen/rbkv.ts";
import type { Prng } from "../sim/prng.ts";
import { dec, enc, sleep } from "../e2e/harness.ts";
import { call, codeName, now } from "./client.ts";
import { type Latencies, type RunCtx, type WriteStatus, recordLatency } from "./workloads.ts";

export const WR_PREFIX = "wr/";
/** A stream whose version has not moved for this long while writers run is given up. */
export const STALE_MS = 2000;
/** With no writes going on: a stream silent (not even Progress) for this long. */
export const SILENT_MS = 3000;
export const PROGRESS_INTERVAL_MS = 250;

export interface WrWrite {
  key: string;
  value: string;
  writer: number;
  node: number;
  invoke: number;
  complete: number | null;
  status: WriteStatus;
  version: number;
  code?: string;
}

export type WrItem = { kind: "event"; version: number; type: "put" | "delete"; key: string; value: string } | { kind: "progress"; version: number };

export interface WrSegment {
  watcher: number;
  /** Position in the watcher's chain. */
  n: number;
  node: number;
  startVersion: number;
  opened: number;
  closed: number | null;
  /** null while open; "error CODE: details", "end", "stale", "silent", "hop", "stopped". */
  end: string | null;
  items: WrItem[];
  /** OUT_OF_RANGE because of compaction: the compacted version the server named. */
  reset?: number;
}

export interface WrCompaction {
  version: number;
  status: WriteStatus;
  /** CompactResponse.compacted when acknowledged. */
  compacted?: number;
  code?: string;
}

/** The version an OUT_OF_RANGE about compaction names (the oldest version still kept). */
export function compactedVersionOf(details: string): number | null {
  if (!/compact/i.test(details)) return null;
  const nums = [...details.matchAll(/\d+/g)].map((m) => Number(m[0]));
  // The server names the requested start and the compacted version; the compacted one is the
  // larger (a request below it is what OUT_OF_RANGE is about).
  return nums.length > 0 ? Math.max(...nums) : null;
}

export class WatchResumeWorkload {
  readonly writes: WrWrite[] = [];
  readonly segments: WrSegment[] = [];
  readonly compactions: WrCompaction[] = [];
  readonly latencies: Latencies = {};
  /** Per watcher: the version it started from and the last version it received. */
  readonly watchers: { start: number; last: number }[] = [];
  private readonly open = new Map<WrSegment, grpc.ClientReadableStream<WatchResponse>>();
  private loops: Promise<void>[] = [];
  private stopping = false;
  private writing = true;
  private maxAcked = 0;

  constructor(
    private readonly ctx: RunCtx,
    private readonly writerRngs: Prng[],
    private readonly watcherRngs: Prng[],
    private readonly compactorRng: Prng | null,
  ) {}

  /** Reads the store's version (before any write under the prefix) and opens the watchers. */
  async start(): Promise<number> {
    const { cluster } = this.ctx;
    let last = "";
    for (let attempt = 0; attempt < 30; attempt++) {
      const node = attempt % cluster.size;
      const out = await call(false, () =>
        cluster.clients[node]!.client.rangeAsync({ key: enc(WR_PREFIX), prefix: true, countOnly: true, rc: ReadConsistency.Linearizable }, { deadline: Date.now() + 3000 }),
      );
      if (out.ok) {
        const v0 = out.value.version;
        for (let w = 0; w < this.watcherRngs.length; w++) {
          this.watchers.push({ start: v0, last: v0 });
          this.loops.push(this.watcher(w, this.watcherRngs[w]!));
        }
        this.ctx.record({ w: "wr-start", version: v0, watchers: this.watcherRngs.length });
        return v0;
      }
      last = `${codeName(out.code)}: ${out.details}`;
      if (out.code === grpc.status.UNIMPLEMENTED) break;
      await sleep(200);
    }
    throw new Error(`watch-resume: cannot read the store's version: ${last}`);
  }

  run(): Promise<void> {
    const loops = this.writerRngs.map((rng, c) => this.writer(c, rng));
    if (this.compactorRng) loops.push(this.compactor(this.compactorRng));
    return Promise.all(loops).then(() => {
      this.writing = false;
    });
  }

  private async writer(c: number, rng: Prng): Promise<void> {
    const { cluster, opTimeoutMs } = this.ctx;
    for (let seq = 0; Date.now() < this.ctx.deadline; seq++) {
      const key = `${WR_PREFIX}${c}/${seq}`;
      const value = `${c}.${seq}`;
      const node = rng.int(0, cluster.size - 1);
      this.ctx.attempted.add(key);
      const invoke = now();
      const out = await cluster.clients[node]!.put(key, value, opTimeoutMs);
      const complete = now();
      const w: WrWrite = { key, value, writer: c, node, invoke, complete: out.ok ? complete : null, status: out.ok ? "ok" : out.definite ? "fail" : "unknown", version: out.ok ? out.value.version : 0 };
      if (!out.ok) w.code = `${codeName(out.code)}: ${out.details.slice(0, 100)}`;
      else {
        recordLatency(this.latencies, "wr-put", complete - invoke);
        this.maxAcked = Math.max(this.maxAcked, out.value.version);
      }
      this.writes.push(w);
      this.ctx.record({ w: "wr-write", ...w });
      if (!out.ok) await sleep(rng.int(20, 150));
    }
  }

  private async compactor(rng: Prng): Promise<void> {
    const { cluster, opTimeoutMs } = this.ctx;
    let done = 0;
    while (Date.now() < this.ctx.deadline) {
      await sleep(Math.max(0, Math.min(rng.int(1500, 4000), this.ctx.deadline - Date.now())));
      const version = this.maxAcked - rng.int(0, 40);
      if (version <= done || Date.now() >= this.ctx.deadline) continue;
      const node = rng.int(0, cluster.size - 1);
      const out = await call(true, () => cluster.clients[node]!.client.compactAsync({ version }, { deadline: Date.now() + opTimeoutMs }));
      const c: WrCompaction = { version, status: out.ok ? "ok" : out.definite ? "fail" : "unknown" };
      if (out.ok) {
        c.compacted = out.value.compacted;
        done = version;
      } else c.code = `${codeName(out.code)}: ${out.details.slice(0, 120)}`;
      this.compactions.push(c);
      this.ctx.record({ w: "wr-compact", node, ...c });
    }
  }

  private async watcher(w: number, rng: Prng): Promise<void> {
    const { cluster } = this.ctx;
    const me = this.watchers[w]!;
    let node = rng.int(0, cluster.size - 1);
    for (let n = 0; !this.stopping; n++) {
      const seg: WrSegment = { watcher: w, n, node, startVersion: me.last, opened: now(), closed: null, end: null, items: [] };
      this.segments.push(seg);
      const hopAfter = rng.int(1000, 6000);
      await new Promise<void>((resolve) => {
        let lastAdvance = now();
        let lastMessage = now();
        let timer: ReturnType<typeof setInterval> | null = null;
        const finish = (how: string): void => {
          if (seg.end !== null) return;
          seg.end = how;
          seg.closed = now();
          if (timer) clearInterval(timer);
          const c = this.open.get(seg);
          this.open.delete(seg);
          c?.cancel();
          resolve();
        };
        let stream: grpc.ClientReadableStream<WatchResponse>;
        try {
          stream = cluster.clients[node]!.client.watch({
            watcherId: `wr${w}-${n}`,
            prefixes: [enc(WR_PREFIX)],
            startVersion: seg.startVersion,
            progressNotify: true,
            progressIntervalMs: PROGRESS_INTERVAL_MS,
          });
        } catch (err) {
          finish(`error: ${(err as Error).message}`);
          return;
        }
        this.open.set(seg, stream);
        stream.on("data", (r: WatchResponse) => {
          const ev = r.event;
          // A message still buffered after the client gave the stream up is never looked at.
          if (!ev || seg.end !== null) return;
          lastMessage = now();
          if (ev.type === EventType.Progress) seg.items.push({ kind: "progress", version: ev.version });
          else seg.items.push({ kind: "event", version: ev.version, type: ev.type === EventType.Delete ? "delete" : "put", key: dec(ev.key), value: dec(ev.value) });
          if (ev.version > me.last) {
            me.last = ev.version;
            lastAdvance = now();
          }
        });
        stream.on("error", (err: grpc.ServiceError) => {
          if (seg.end !== null) return;
          if (err.code === grpc.status.OUT_OF_RANGE) {
            const c = compactedVersionOf(err.details);
            if (c !== null) seg.reset = c;
          }
          finish(this.stopping ? "stopped" : `error ${codeName(err.code)}: ${err.details}`);
        });
        stream.on("end", () => finish(this.stopping ? "stopped" : "end"));
        timer = setInterval(() => {
          const t = now();
          if (this.stopping) finish("stopped");
          else if (this.writing && t - lastAdvance > STALE_MS) finish("stale");
          else if (t - lastMessage > SILENT_MS) finish("silent");
          else if (this.writing && t - seg.opened > hopAfter) finish("hop");
        }, 50);
      });
      // An explicit reset: the history between the last version and the compacted one is gone.
      if (seg.reset !== undefined && seg.reset > me.last) me.last = seg.reset;
      this.ctx.record({
        w: "wr-segment",
        watcher: w,
        n,
        node,
        startVersion: seg.startVersion,
        end: seg.end,
        reset: seg.reset,
        events: seg.items.filter((i) => i.kind === "event").length,
        progress: seg.items.filter((i) => i.kind === "progress").length,
        last: me.last,
      });
      if (seg.end?.startsWith("error UNIMPLEMENTED")) {
        this.stopping = true;
        break;
      }
      if (!this.stopping && seg.end?.startsWith("error")) await sleep(seg.reset === undefined ? rng.int(20, 200) : 10);
      // Resume on another node (after a while, for the watchers that stay away).
      node = (node + 1 + rng.int(0, cluster.size - 2)) % cluster.size;
      const away = rng.int(300, 4000);
      if (w % 2 === 1 && this.writing && !this.stopping) await sleep(away);
    }
  }

  /**
   * After recovery: a marker write under the prefix must reach every watcher (through whatever
   * segment is open by then), followed by a Progress event at or past it (Progress must flow on
   * an idle stream).
   */
  async verifyLive(timeoutMs = 20_000): Promise<{ ok: boolean; detail: string }> {
    const { cluster } = this.ctx;
    this.writing = false;
    const key = `${WR_PREFIX}marker`;
    this.ctx.attempted.add(key);
    let version = 0;
    let last = "";
    for (let attempt = 0; attempt < 10 && version === 0; attempt++) {
      const out = await cluster.clients[attempt % cluster.size]!.put(key, "m", 5000);
      if (out.ok) version = out.value.version;
      else {
        last = `${codeName(out.code)}: ${out.details}`;
        await sleep(300);
      }
    }
    if (version === 0) return { ok: false, detail: `the marker write failed: ${last}` };
    this.writes.push({ key, value: "m", writer: -1, node: 0, invoke: now(), complete: now(), status: "ok", version });
    const deadline = Date.now() + timeoutMs;
    const pending = (): number[] =>
      this.watchers
        .map((_, w) => w)
        .filter((w) => {
          const segs = this.segments.filter((s) => s.watcher === w);
          const sawEvent = segs.some((s) => s.items.some((i) => i.kind === "event" && i.version === version));
          const sawProgress = segs.some((s) => s.items.some((i) => i.kind === "progress" && i.version >= version));
          return !(sawEvent && sawProgress);
        });
    while (pending().length > 0 && Date.now() < deadline) await sleep(50);
    const p = pending();
    if (p.length > 0) {
      return {
        ok: false,
        detail: `watcher(s) ${p.join(", ")} did not receive the marker at version ${version} and a Progress at or past it within ${timeoutMs} ms (last received: ${p.map((w) => this.watchers[w]!.last).join(", ")})`,
      };
    }
    return { ok: true, detail: `every watcher received the marker at version ${version} and a Progress event past it` };
  }

  async stop(): Promise<void> {
    this.stopping = true;
    for (const c of this.open.values()) c.cancel();
    await Promise.race([Promise.all(this.loops), sleep(5000)]);
  }
}

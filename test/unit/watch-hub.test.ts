// Watch fan-out: prefix matching, order, and the slow-consumer rule (end with an error, never
// skip an event silently).

import { describe, expect, test } from "bun:test";
import { type WatchHistory, type WatchMessage, WatchHub, WatcherExistsError, WatcherOverflowError, type WatchSink } from "../../src/server/watch-hub.ts";
import { type KvEvent } from "../../src/storage/fsm.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function ev(key: string, version: number): KvEvent {
  return { type: "put", key: enc.encode(key), value: enc.encode("v"), meta: 0, version, expireAt: 0 };
}

class FakeSink implements WatchSink {
  got: number[] = [];
  keys: string[] = [];
  /** Progress marks received, and where in the stream (index into got). */
  progress: { version: number; after: number }[] = [];
  error: Error | null = null;
  /** How many more writes the "transport" takes before reporting back-pressure. */
  room = Infinity;
  write(m: WatchMessage): boolean {
    if (m.kind === "progress") this.progress.push({ version: m.version, after: this.got.length });
    else {
      this.got.push(m.event.version);
      this.keys.push(dec.decode(m.event.key));
    }
    this.room--;
    return this.room > 0;
  }
  fail(err: Error): void {
    this.error = err;
  }
}

describe("WatchHub", () => {
  test("delivers matching events in order; no prefixes means everything", () => {
    const hub = new WatchHub();
    const a = new FakeSink();
    const all = new FakeSink();
    hub.register("a", [enc.encode("user/")], 10, a);
    hub.register("all", [], 10, all);
    hub.publish([ev("user/1", 5), ev("order/1", 6), ev("user/2", 7)]);
    expect(a.keys).toEqual(["user/1", "user/2"]);
    expect(a.got).toEqual([5, 7]);
    expect(all.got).toEqual([5, 6, 7]);
  });

  test("a duplicate id is refused while the first is registered, accepted after it closes", () => {
    const hub = new WatchHub();
    const h = hub.register("x", [], 10, new FakeSink());
    expect(() => hub.register("x", [], 10, new FakeSink())).toThrow(WatcherExistsError);
    h.close(null);
    expect(() => hub.register("x", [], 10, new FakeSink())).not.toThrow();
  });

  test("a blocked consumer queues up to its capacity and gets everything after a drain", () => {
    const hub = new WatchHub();
    const s = new FakeSink();
    s.room = 1;
    const h = hub.register("slow", [], 3, s);
    hub.publish([ev("k", 1), ev("k", 2), ev("k", 3), ev("k", 4)]);
    expect(s.got).toEqual([1]);
    s.room = Infinity;
    h.drain();
    expect(s.got).toEqual([1, 2, 3, 4]);
    expect(s.error).toBeNull();
  });

  test("a consumer further behind than its capacity is ended with an error, not skipped", () => {
    const hub = new WatchHub();
    const s = new FakeSink();
    s.room = 1;
    hub.register("slow", [], 2, s);
    hub.publish([ev("k", 1), ev("k", 2), ev("k", 3), ev("k", 4)]);
    expect(s.error).toBeInstanceOf(WatcherOverflowError);
    expect(hub.size()).toBe(0);
    // Nothing more arrives after the error.
    hub.publish([ev("k", 5)]);
    expect(s.got).toEqual([1]);
  });
});

/** A history of events (what KvStore.changes serves), with a compacted version. */
class FakeHistory implements WatchHistory {
  events: KvEvent[] = [];
  compacted = 0;
  calls = 0;
  changes(after: number, through: number, prefixes: Uint8Array[], limit: number): KvEvent[] {
    this.calls++;
    if (after < this.compacted) throw new RangeError(`compacted: oldest ${this.compacted}`);
    const out: KvEvent[] = [];
    for (const e of this.events) {
      if (e.version <= after || e.version > through) continue;
      if (prefixes.length > 0 && !prefixes.some((p) => dec.decode(e.key).startsWith(dec.decode(p)))) continue;
      if (out.length >= limit) break;
      out.push(e);
    }
    return out;
  }
}

/** A hub whose history holds events 1..n (key "k<i % 3>") and which has published through n. */
function hubWithHistory(n: number): { hub: WatchHub; history: FakeHistory } {
  const history = new FakeHistory();
  for (let i = 1; i <= n; i++) history.events.push(ev(`k${i % 3}`, i));
  const hub = new WatchHub(history);
  hub.setPublishedThrough(n);
  return { hub, history };
}

describe("WatchHub replay and progress", () => {
  test("replays after start_version, then goes live with no gap and no duplicate", () => {
    const { hub, history } = hubWithHistory(1000);
    const s = new FakeSink();
    hub.register("r", [], 10, s, { startVersion: 400 });
    expect(s.got.length).toBe(600);
    // Live events continue right after the history.
    history.events.push(ev("k1", 1001));
    hub.publish([ev("k1", 1001)], 1001);
    expect(s.got).toEqual(Array.from({ length: 601 }, (_, i) => 401 + i));
  });

  test("events published while the replay waits for the transport follow it in order", () => {
    const { hub, history } = hubWithHistory(2000);
    const s = new FakeSink();
    s.room = 100;
    const h = hub.register("r", [], 5000, s, { startVersion: 0 + 1, progressIntervalMs: 1000 });
    expect(s.got.length).toBeLessThan(2000);
    for (let v = 2001; v <= 2050; v++) {
      const e = ev(`k${v % 3}`, v);
      history.events.push(e);
      hub.publish([e], v);
    }
    while (s.got.length < 2049) {
      s.room = 100;
      h.drain();
    }
    expect(s.got).toEqual(Array.from({ length: 2049 }, (_, i) => 2 + i));
    // The mark after the replay covers what was published meanwhile, and comes after it.
    expect(s.progress.at(-1)).toEqual({ version: 2050, after: 2049 });
  });

  test("a prefix watch replays only its keys", () => {
    const { hub } = hubWithHistory(30);
    const s = new FakeSink();
    hub.register("p", [enc.encode("k1")], 10, s, { startVersion: 10 });
    expect(s.got).toEqual([13, 16, 19, 22, 25, 28]);
  });

  test("a txn's events (one version) are never split between replay pages", () => {
    const history = new FakeHistory();
    for (let i = 0; i < 600; i++) history.events.push(ev(`big${i}`, 5));
    history.events.push(ev("after", 6));
    const hub = new WatchHub(history);
    hub.setPublishedThrough(6);
    const s = new FakeSink();
    hub.register("t", [], 10, s, { startVersion: 4 });
    expect(s.got.length).toBe(601);
    expect(s.got.at(-1)).toBe(6);
  });

  test("a start below the compacted version is refused at registration; nothing is registered", () => {
    const { hub, history } = hubWithHistory(100);
    history.compacted = 50;
    const s = new FakeSink();
    expect(() => hub.register("c", [], 10, s, { startVersion: 20 })).toThrow(/compacted/);
    expect(hub.size()).toBe(0);
    expect(() => hub.register("c", [], 10, s, { startVersion: 50 })).not.toThrow();
    expect(s.got[0]).toBe(51);
  });

  test("a watcher resuming from a version this node has not reached skips what it has", () => {
    const { hub } = hubWithHistory(10);
    const s = new FakeSink();
    hub.register("ahead", [], 10, s, { startVersion: 12, progressIntervalMs: 100 });
    hub.publish([ev("k", 11), ev("k", 12), ev("k", 13)], 13);
    expect(s.got).toEqual([13]);
    // No progress below what it already had.
    expect(s.progress.every((p) => p.version >= 12)).toBe(true);
  });

  test("progress marks go out on a quiet stream, never behind an event and never lower than sent", () => {
    const { hub } = hubWithHistory(5);
    const s = new FakeSink();
    hub.register("q", [enc.encode("user/")], 10, s, { progressIntervalMs: 1000 });
    expect(s.progress).toEqual([{ version: 5, after: 0 }]);
    const t0 = Date.now();
    hub.publish([ev("other/x", 6)], 6);
    hub.tickProgress(t0 + 10);
    expect(s.progress.length).toBe(1); // not yet quiet long enough
    hub.tickProgress(t0 + 2000);
    expect(s.progress.at(-1)).toEqual({ version: 6, after: 0 });
    hub.publish([ev("user/1", 7)], 8);
    hub.tickProgress(Date.now() + 10);
    expect(s.got).toEqual([7]);
    expect(s.progress.length).toBe(2); // the event just went out: the stream is not quiet
    hub.tickProgress(Date.now() + 5000);
    expect(s.progress.at(-1)).toEqual({ version: 8, after: 1 });
  });
});

// Watch fan-out: prefix matching, order, and the slow-consumer rule (end with an error, never
// skip an event silently).

import { describe, expect, test } from "bun:test";
import { WatchHub, WatcherExistsError, WatcherOverflowError, type WatchSink } from "../../src/server/watch-hub.ts";
import { type KvEvent } from "../../src/storage/fsm.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function ev(key: string, version: number): KvEvent {
  return { type: "put", key: enc.encode(key), value: enc.encode("v"), meta: 0, version, expireAt: 0 };
}

class FakeSink implements WatchSink {
  got: number[] = [];
  keys: string[] = [];
  error: Error | null = null;
  /** How many more writes the "transport" takes before reporting back-pressure. */
  room = Infinity;
  write(e: KvEvent): boolean {
    this.got.push(e.version);
    this.keys.push(dec.decode(e.key));
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

// WatchCursor: where a resumed watch starts and what it skips, so that the events delivered
// across any number of broken streams are exactly the history, once each.

import { describe, expect, test } from "bun:test";
import { WatchCursor } from "../../src/client/watch-cursor.ts";
import { type Event, Event_EventType } from "../../src/server/gen/rbkv.ts";

function ev(version: number, key: string): Event {
  return { type: Event_EventType.Put, key: new TextEncoder().encode(key), value: new Uint8Array(0), meta: 0, version, expireAt: 0, watcherId: "" };
}

/** The history: versions 1..n, version 3k holding three keys (a txn), the others one. */
function history(n: number): Event[] {
  const out: Event[] = [];
  for (let v = 1; v <= n; v++) {
    if (v % 3 === 0) out.push(ev(v, "a"), ev(v, "b"), ev(v, "c"));
    else out.push(ev(v, "k"));
  }
  return out;
}

/** What a server sends to a stream that starts after `from`: every event with a greater version. */
function replay(all: Event[], from: number): Event[] {
  return all.filter((e) => e.version > from);
}

describe("WatchCursor", () => {
  test("a stream broken after every possible event resumes with no gap and no duplicate", () => {
    const all = history(12);
    for (let cut = 0; cut <= all.length; cut++) {
      for (let cut2 = cut; cut2 <= all.length; cut2 += 2) {
        const cursor = new WatchCursor(0);
        const delivered: Event[] = [];
        // First stream: `cut` events; second: from resumeFrom, `cut2 - cut` events; third: the rest.
        const s1 = replay(all, cursor.resumeFrom()).slice(0, cut);
        for (const e of s1) if (cursor.accept(e)) delivered.push(e);
        const s2 = replay(all, cursor.resumeFrom()).slice(0, cut2 - cut);
        for (const e of s2) if (cursor.accept(e)) delivered.push(e);
        for (const e of replay(all, cursor.resumeFrom())) if (cursor.accept(e)) delivered.push(e);
        expect(delivered).toEqual(all);
      }
    }
  });

  test("a progress event completes the open version and moves the resume point", () => {
    const c = new WatchCursor(5);
    expect(c.resumeFrom()).toBe(5);
    expect(c.accept(ev(5, "x"))).toBe(false);
    expect(c.accept(ev(9, "a"))).toBe(true);
    expect(c.resumeFrom()).toBe(8); // version 9 may have more keys
    c.progress(9);
    expect(c.resumeFrom()).toBe(9);
    c.progress(20);
    expect(c.resumeFrom()).toBe(20);
    expect(c.completeThrough).toBe(20);
    expect(c.accept(ev(15, "a"))).toBe(false);
    c.reset(40);
    expect(c.resumeFrom()).toBe(40);
  });
});

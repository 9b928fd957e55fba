import { describe, expect, test } from "bun:test";
import { ProposalIds, unwrapProposal, wrapProposal } from "../../src/node/proposal-id.ts";
import { DEDUPE_WINDOW, type DedupeState, admitProposal } from "../../src/storage/proposal-dedupe.ts";

describe("proposal ids", () => {
  test("are unique and survive the round trip through an entry's data", () => {
    const ids = new ProposalIds();
    const seen = new Set<number>();
    for (let i = 0; i < 10_000; i++) {
      const counter = ids.next();
      seen.add(counter);
      const cmd = new Uint8Array([i & 0xff, 7]);
      const back = unwrapProposal(wrapProposal(ids.origin, counter, cmd));
      expect(back.counter).toBe(counter);
      expect(ids.isMine(back.origin)).toBe(true);
      expect([...back.command]).toEqual([...cmd]);
    }
    expect(seen.size).toBe(10_000);
    expect(new ProposalIds().isMine(ids.origin)).toBe(false);
  });

  test("data without the envelope is passed through with no origin", () => {
    const raw = new Uint8Array([1, 2, 3]);
    expect(unwrapProposal(raw)).toEqual({ origin: null, counter: 0, command: raw });
  });
});

describe("proposal dedupe", () => {
  /** Feeds counters in order; returns the verdicts. */
  function run(counters: number[]): string[] {
    let st: DedupeState | undefined;
    return counters.map((c, i) => {
      const r = admitProposal(st, c, i + 1);
      st = r.next;
      return r.verdict;
    });
  }

  test("admits each counter once, in any order within the window", () => {
    expect(run([1, 2, 3, 2, 1, 3])).toEqual(["admit", "admit", "admit", "duplicate", "duplicate", "duplicate"]);
    expect(run([5, 3, 4, 1, 2, 3, 5])).toEqual(["admit", "admit", "admit", "admit", "admit", "duplicate", "duplicate"]);
  });

  test("a big jump forward keeps the counters still inside the window", () => {
    expect(run([1, 1 + DEDUPE_WINDOW, 1, 2])).toEqual(["admit", "admit", "duplicate", "admit"]);
    expect(run([1, 2 + DEDUPE_WINDOW, 1, 2])).toEqual(["admit", "admit", "too-old", "admit"]);
    expect(run([3, 1000, 3, 999])).toEqual(["admit", "admit", "too-old", "admit"]);
  });

  test("matches a model of every admitted counter over random orders", () => {
    let seed = 42;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let round = 0; round < 200; round++) {
      let st: DedupeState | undefined;
      const admitted = new Set<number>();
      let high = 0;
      for (let i = 0; i < 300; i++) {
        const c = 1 + rnd(120);
        const r = admitProposal(st, c, i + 1);
        st = r.next;
        if (admitted.has(c)) expect(r.verdict).not.toBe("admit");
        else if (c + DEDUPE_WINDOW < high) expect(r.verdict).toBe("too-old");
        else expect(r.verdict).toBe("admit");
        if (r.verdict === "admit") admitted.add(c);
        high = Math.max(high, c);
      }
    }
  });
});

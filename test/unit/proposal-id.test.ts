import { describe, expect, test } from "bun:test";
import { ProposalIds, unwrapProposal, wrapProposal } from "../../src/node/proposal-id.ts";

describe("proposal ids", () => {
  test("are unique and survive the round trip through an entry's data", () => {
    const ids = new ProposalIds();
    const seen = new Set<number>();
    for (let i = 0; i < 10_000; i++) {
      const id = ids.next();
      expect(Number.isSafeInteger(id)).toBe(true);
      seen.add(id);
      const cmd = new Uint8Array([i & 0xff, 7]);
      const back = unwrapProposal(wrapProposal(id, cmd));
      expect(back.id).toBe(id);
      expect([...back.command]).toEqual([...cmd]);
    }
    expect(seen.size).toBe(10_000);
  });

  test("data without the envelope is passed through with id 0", () => {
    const raw = new Uint8Array([1, 2, 3]);
    expect(unwrapProposal(raw)).toEqual({ id: 0, command: raw });
  });
});

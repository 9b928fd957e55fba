// The log-entry command codec (src/storage/command.ts): every byte of it is replicated and stored,
// so the encodings of the kinds that existed before issue 8 are pinned to fixed vectors (taken from
// the encoder before the new kinds were added), and decoding must be total.

import { describe, expect, test } from "bun:test";
import { type Command, CommandKind, decodeCommand, encodeCommand } from "../../src/storage/command.ts";

const s = (x: string): Uint8Array => new TextEncoder().encode(x);
const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const unhex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, "hex"));

// Written from the pre-issue-8 encoder (commit 060f8fb): these must never change, or entries
// already in a log would decode differently.
const PINNED: [string, Command, string][] = [
  ["put", { kind: CommandKind.Put, key: s("k"), value: s("v"), meta: 7, expireAt: 0 }, "0101070000000000000000000000010000006b0100000076"],
  [
    "put, empty value, u32-max meta, real expireAt",
    { kind: CommandKind.Put, key: s("key"), value: new Uint8Array(0), meta: 0xffffffff, expireAt: 1700000000123 },
    "0101ffffffff00b08756febc7842030000006b657900000000",
  ],
  [
    "put, max safe expireAt",
    { kind: CommandKind.Put, key: s("a/b"), value: s("hello"), meta: 0x01020304, expireAt: Number.MAX_SAFE_INTEGER },
    "010104030201ffffffffffff3f4303000000612f620500000068656c6c6f",
  ],
  ["delete", { kind: CommandKind.Delete, key: s("abc") }, "010203000000616263"],
  ["delete, binary key", { kind: CommandKind.Delete, key: new Uint8Array([0, 0xff, 0x80]) }, "01020300000000ff80"],
  ["expire", { kind: CommandKind.ExpireKey, key: s("ttl"), version: 1 }, "0103000000000000f03f0300000074746c"],
  ["expire, max safe version", { kind: CommandKind.ExpireKey, key: s("x"), version: Number.MAX_SAFE_INTEGER }, "0103ffffffffffff3f430100000078"],
  ["expire, version > 2^32", { kind: CommandKind.ExpireKey, key: s("x"), version: 2 ** 32 + 5 }, "0103000050000000f0410100000078"],
];

describe("pre-issue-8 kinds are byte-identical", () => {
  for (const [name, c, h] of PINNED) {
    test(name, () => {
      expect(hex(encodeCommand(c))).toBe(h);
      expect(decodeCommand(unhex(h))).toEqual(c);
    });
  }
});

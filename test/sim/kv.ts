// The simulator's state machine: a tiny key-value map. A client's command travels in the real
// proposal envelope (src/node/proposal-id.ts: the proposing incarnation's origin and a counter),
// and the state machine admits each proposal at most once with the real window
// (src/storage/proposal-dedupe.ts), as the LMDB state machine does: the leader appends every
// copy of a forwarded proposal it receives, and the simulated network duplicates messages.
// The command itself carries the client's op id (the value written is unique per op).

import { unwrapProposal } from "../../src/node/proposal-id.ts";
import { type DedupeState, type DedupeVerdict, PRUNE_EVERY, PRUNE_IDLE_ENTRIES, admitProposal } from "../../src/storage/proposal-dedupe.ts";

export type KvCommand =
  | { kind: "put"; opId: number; key: string; value: string }
  | { kind: "delete"; opId: number; key: string };

const enc = new TextEncoder();
const dec = new TextDecoder();

export function encodeCommand(c: KvCommand): Uint8Array {
  const value = c.kind === "put" ? c.value : "";
  return enc.encode(`${c.kind === "put" ? "P" : "D"}\u0000${c.opId}\u0000${c.key}\u0000${value}`);
}

export function decodeCommand(data: Uint8Array): KvCommand | null {
  if (data.byteLength === 0) return null;
  const [kind, opId, key, value] = dec.decode(data).split("\u0000");
  if (kind === "P") return { kind: "put", opId: Number(opId), key: key!, value: value! };
  if (kind === "D") return { kind: "delete", opId: Number(opId), key: key! };
  throw new Error(`unknown command kind ${kind}`);
}

/** An origin as a map key (and in messages): its 8 bytes in hex. */
export function originHex(origin: Uint8Array): string {
  let s = "";
  for (const b of origin) s += b.toString(16).padStart(2, "0");
  return s;
}

/** What applying one entry did. */
export interface KvApplied {
  /** The entry's command; null for an entry with none (empty, or not a Normal entry). */
  cmd: KvCommand | null;
  /** Who proposed it (origin in hex); null when the data carries no envelope. */
  proposal: { origin: string; counter: number } | null;
  /** The dedupe window's verdict (null without an envelope: always applied). */
  verdict: DedupeVerdict | null;
  /** Whether the command changed the map (false for a duplicate or too-old copy). */
  applied: boolean;
}

export class KvStateMachine {
  data = new Map<string, string>();
  applied = 0;
  /**
   * Per origin (hex), the at-most-once window. admitProposal never mutates a state (it returns
   * a new one), so a shallow copy of the map is a copy of the whole.
   */
  proposals = new Map<string, DedupeState>();

  /** Applies the entry at `index`; data null for an entry that is not a Normal one. */
  apply(index: number, data: Uint8Array | null): KvApplied {
    this.applied = index;
    let out: KvApplied = { cmd: null, proposal: null, verdict: null, applied: false };
    if (data !== null && data.byteLength > 0) {
      const { origin, counter, command } = unwrapProposal(data);
      const cmd = decodeCommand(command);
      let admit = true;
      let proposal: KvApplied["proposal"] = null;
      let verdict: DedupeVerdict | null = null;
      if (origin !== null) {
        proposal = { origin: originHex(origin), counter };
        const r = admitProposal(this.proposals.get(proposal.origin), counter, index);
        this.proposals.set(proposal.origin, r.next);
        verdict = r.verdict;
        admit = verdict === "admit";
      }
      if (cmd && admit) {
        if (cmd.kind === "put") this.data.set(cmd.key, cmd.value);
        else this.data.delete(cmd.key);
      }
      out = { cmd, proposal, verdict, applied: cmd !== null && admit };
    }
    // At the same indexes on every replica (whatever the entry), so all forget the same origins.
    if (index % PRUNE_EVERY === 0) {
      for (const [o, st] of this.proposals) if (st.lastIndex < index - PRUNE_IDLE_ENTRIES) this.proposals.delete(o);
    }
    return out;
  }

  clone(): KvStateMachine {
    const c = new KvStateMachine();
    c.data = new Map(this.data);
    c.applied = this.applied;
    c.proposals = new Map(this.proposals);
    return c;
  }

  /** The snapshot image: the map and the dedupe windows (a restored node must refuse copies too). */
  encode(): Uint8Array {
    const proposals = [...this.proposals].map(([o, s]) => [o, s.high, s.mask, s.lastIndex]);
    return enc.encode(JSON.stringify({ applied: this.applied, data: [...this.data], proposals }));
  }

  static decode(bytes: Uint8Array): KvStateMachine {
    const kv = new KvStateMachine();
    if (bytes.byteLength === 0) return kv;
    const obj = JSON.parse(dec.decode(bytes)) as { applied: number; data: [string, string][]; proposals: [string, number, number, number][] };
    kv.applied = obj.applied;
    kv.data = new Map(obj.data);
    kv.proposals = new Map(obj.proposals.map(([o, high, mask, lastIndex]) => [o, { high, mask, lastIndex }]));
    return kv;
  }
}

/** A cheap digest of entry contents for the safety checks (FNV-1a over type and bytes). */
export function digest(type: number, data: Uint8Array): number {
  let h = 0x811c9dc5 ^ type;
  for (let i = 0; i < data.byteLength; i++) {
    h ^= data[i]!;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

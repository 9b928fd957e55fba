// Every command a node proposes carries an id, so the node can recognise it when the entry is
// applied, whichever way it reached the log (appended here as leader, or passed to the leader
// by a follower), and so the state machine can apply it at most once (proposal-dedupe.ts): the
// transport or the network may deliver a forwarded proposal twice, and the leader appends
// every copy it receives.
//
// Layout of an entry's data: [0xB2][8 bytes origin][u32 LE counter][command].
// `origin` is drawn at random when the process starts (one per incarnation: 2^-64 odds that two
// incarnations ever share one, so a restarted node never collides with what its earlier self
// left in the dedupe table); `counter` counts this incarnation's proposals from 1.

import { randomBytes } from "node:crypto";

const MARKER = 0xb2;
export const ORIGIN_BYTES = 8;
const HEADER = 1 + ORIGIN_BYTES + 4;

export class ProposalIds {
  /** This incarnation's origin (random, see the header). */
  origin: Uint8Array = new Uint8Array(randomBytes(ORIGIN_BYTES));
  private counter = 0;

  /**
   * A new counter value, unique within this origin (>= 1). After 2^32 - 1 proposals the counter
   * would wrap and look old to the dedupe window: a fresh origin starts instead (a proposal of
   * the old one still in flight then resolves by its deadline, as a lost one does).
   */
  next(): number {
    if (this.counter === 0xffffffff) {
      this.origin = new Uint8Array(randomBytes(ORIGIN_BYTES));
      this.counter = 0;
    }
    return ++this.counter;
  }

  /** Whether an entry's origin is this incarnation's. */
  isMine(origin: Uint8Array | null): boolean {
    if (origin === null) return false;
    for (let i = 0; i < ORIGIN_BYTES; i++) if (origin[i] !== this.origin[i]) return false;
    return true;
  }
}

export function wrapProposal(origin: Uint8Array, counter: number, command: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER + command.byteLength);
  out[0] = MARKER;
  out.set(origin.subarray(0, ORIGIN_BYTES), 1);
  const p = 1 + ORIGIN_BYTES;
  out[p] = counter & 0xff;
  out[p + 1] = (counter >>> 8) & 0xff;
  out[p + 2] = (counter >>> 16) & 0xff;
  out[p + 3] = (counter >>> 24) & 0xff;
  out.set(command, HEADER);
  return out;
}

export interface UnwrappedProposal {
  /** The proposer's origin (a view of the data), or null when the data carries no envelope. */
  origin: Uint8Array | null;
  /** 0 when the data carries no envelope. */
  counter: number;
  command: Uint8Array;
}

/** The origin, counter and command of an entry's data (zero-copy views). */
export function unwrapProposal(data: Uint8Array): UnwrappedProposal {
  if (data.byteLength < HEADER || data[0] !== MARKER) return { origin: null, counter: 0, command: data };
  const p = 1 + ORIGIN_BYTES;
  const counter = (data[p]! | (data[p + 1]! << 8) | (data[p + 2]! << 16) | (data[p + 3]! << 24)) >>> 0;
  if (counter === 0) return { origin: null, counter: 0, command: data };
  return { origin: data.subarray(1, p), counter, command: data.subarray(HEADER) };
}

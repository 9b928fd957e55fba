// At-most-once application of proposals. A proposal carries (origin, counter) (see
// src/node/proposal-id.ts); the leader appends every copy of a forwarded proposal it receives,
// so the same proposal can sit at two log indexes. The state machine admits the first copy it
// applies and turns every later one into a no-op. Deterministic: every replica applies the same
// entries in the same order, so every replica admits the same copy.
//
// Per origin the state keeps the highest counter admitted and a bitmap of the WINDOW counters
// below it (bit d-1 set = counter high-d admitted). One origin's proposals normally arrive in
// order (one TCP connection); the window absorbs reordering. A counter more than WINDOW below
// the highest cannot be told apart and is refused: refusing is safe (the proposer is told the
// outcome is unknown), applying twice is not.

export const DEDUPE_WINDOW = 32;

export interface DedupeState {
  /** Highest counter admitted. */
  high: number;
  /** Bit d-1: counter high-d was admitted (d = 1..WINDOW). */
  mask: number;
  /** Log index of the last proposal of this origin seen (for pruning idle origins). */
  lastIndex: number;
}

export type DedupeVerdict = "admit" | "duplicate" | "too-old";

/**
 * Whether the proposal `counter` (>= 1) of an origin whose state is `state` (undefined: never
 * seen) is admitted, and the origin's state after it (unchanged unless admitted, but lastIndex).
 */
export function admitProposal(state: DedupeState | undefined, counter: number, index: number): { verdict: DedupeVerdict; next: DedupeState } {
  if (state === undefined) return { verdict: "admit", next: { high: counter, mask: 0, lastIndex: index } };
  if (counter > state.high) {
    const shift = counter - state.high;
    // The old high becomes bit shift-1; older bits move up by `shift`.
    const mask = shift >= DEDUPE_WINDOW ? (shift === DEDUPE_WINDOW ? 1 << (DEDUPE_WINDOW - 1) : 0) : ((state.mask << shift) | (1 << (shift - 1))) >>> 0;
    return { verdict: "admit", next: { high: counter, mask: mask >>> 0, lastIndex: index } };
  }
  const seen = { high: state.high, mask: state.mask, lastIndex: index };
  if (counter === state.high) return { verdict: "duplicate", next: seen };
  const d = state.high - counter;
  if (d > DEDUPE_WINDOW) return { verdict: "too-old", next: seen };
  const bit = (1 << (d - 1)) >>> 0;
  if ((state.mask & bit) !== 0) return { verdict: "duplicate", next: seen };
  return { verdict: "admit", next: { high: state.high, mask: (state.mask | bit) >>> 0, lastIndex: index } };
}

/**
 * Origins not seen for this many entries are forgotten (at indexes that are multiples of
 * PRUNE_EVERY, so every replica forgets at the same point). A copy of a proposal delayed by more
 * than this many entries would be applied again; the transport never holds one that long.
 */
export const PRUNE_IDLE_ENTRIES = 1_000_000;
export const PRUNE_EVERY = 4096;

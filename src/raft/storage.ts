// The stable storage the core reads from. The node layer writes to it (after a ready()), the
// core only reads. MemoryStorage is the simulator's implementation; the LMDB one follows the
// same contract.

import { type ConfState, type Entry, type HardState, type Snapshot, emptyHardState, emptySnapshot, entrySize } from "./messages.ts";

export interface InitialState {
  hardState: HardState;
  /** Configuration as of the storage's snapshot (later changes are replayed from the log). */
  conf: ConfState;
}

export interface Storage {
  initialState(): InitialState;
  /** Entries [lo, hi), at least one if any exist, stopping before maxBytes is exceeded. */
  entries(lo: number, hi: number, maxBytes: number): Entry[];
  /** Term of entry i; firstIndex()-1 gives the snapshot's term; undefined if compacted or absent. */
  term(i: number): number | undefined;
  firstIndex(): number;
  lastIndex(): number;
  /** The most recent snapshot; null when one is being made and not yet available. */
  snapshot(): Snapshot | null;
}

export class StorageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StorageError";
  }
}

/** Returns the longest prefix of `ents` whose size stays within maxBytes (never empty). */
export function limitSize(ents: Entry[], maxBytes: number): Entry[] {
  if (ents.length === 0) return ents;
  let size = entrySize(ents[0]!);
  let n = 1;
  for (; n < ents.length; n++) {
    size += entrySize(ents[n]!);
    if (size > maxBytes) break;
  }
  return n === ents.length ? ents : ents.slice(0, n);
}

/**
 * In-memory storage. ents[0] is a sentinel standing for the snapshot (its index and term);
 * real entries follow it.
 */
export class MemoryStorage implements Storage {
  hardState: HardState = emptyHardState();
  private snap: Snapshot = emptySnapshot();
  private ents: Entry[] = [{ term: 0, index: 0, type: 0, data: new Uint8Array(0) }];

  initialState(): InitialState {
    return { hardState: { ...this.hardState }, conf: cloneConf(this.snap.meta.conf) };
  }

  setHardState(hs: HardState): void {
    this.hardState = { ...hs };
  }

  firstIndex(): number {
    return this.ents[0]!.index + 1;
  }

  lastIndex(): number {
    return this.ents[0]!.index + this.ents.length - 1;
  }

  term(i: number): number | undefined {
    const offset = this.ents[0]!.index;
    if (i < offset || i - offset >= this.ents.length) return undefined;
    return this.ents[i - offset]!.term;
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    const offset = this.ents[0]!.index;
    if (lo <= offset) throw new StorageError(`entries(${lo}) compacted: first index is ${offset + 1}`);
    if (hi > this.lastIndex() + 1) throw new StorageError(`entries(${lo}, ${hi}) beyond last index ${this.lastIndex()}`);
    return limitSize(this.ents.slice(lo - offset, hi - offset), maxBytes);
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  /** Replaces everything with the snapshot (a follower installing the leader's state). */
  applySnapshot(snap: Snapshot): void {
    if (snap.meta.index < this.snap.meta.index) {
      throw new StorageError(`snapshot at ${snap.meta.index} is older than the stored one at ${this.snap.meta.index}`);
    }
    this.snap = snap;
    this.ents = [{ term: snap.meta.term, index: snap.meta.index, type: 0, data: new Uint8Array(0) }];
  }

  /** Records a snapshot of the state machine at index i (i must be within the log). */
  createSnapshot(i: number, conf: ConfState, data: Uint8Array): Snapshot {
    if (i <= this.snap.meta.index) return this.snap;
    const term = this.term(i);
    if (term === undefined) throw new StorageError(`createSnapshot(${i}) outside the log [${this.firstIndex()}, ${this.lastIndex()}]`);
    this.snap = { meta: { index: i, term, conf: cloneConf(conf) }, data };
    return this.snap;
  }

  /** Drops entries up to and including i; i must not exceed the snapshot index... or the log. */
  compact(i: number): void {
    const offset = this.ents[0]!.index;
    if (i <= offset) return;
    if (i > this.lastIndex()) throw new StorageError(`compact(${i}) beyond last index ${this.lastIndex()}`);
    const sentinel = this.ents[i - offset]!;
    this.ents = [{ term: sentinel.term, index: sentinel.index, type: 0, data: new Uint8Array(0) }, ...this.ents.slice(i - offset + 1)];
  }

  /** Appends entries, truncating any conflicting suffix first. */
  append(entries: Entry[]): void {
    if (entries.length === 0) return;
    const first = this.firstIndex();
    const last = entries[0]!.index + entries.length - 1;
    if (last < first) return;
    // Entries already folded into the snapshot are skipped.
    if (first > entries[0]!.index) entries = entries.slice(first - entries[0]!.index);
    const offset = entries[0]!.index - this.ents[0]!.index;
    if (offset > this.ents.length) {
      throw new StorageError(`append at ${entries[0]!.index} leaves a gap after last index ${this.lastIndex()}`);
    }
    this.ents = this.ents.slice(0, offset).concat(entries);
  }
}

export function cloneConf(c: ConfState): ConfState {
  return { voters: [...c.voters], learners: [...c.learners] };
}

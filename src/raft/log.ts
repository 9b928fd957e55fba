// The log as the core sees it: the stable part in Storage plus an unstable tail (entries and
// possibly a snapshot) that the node layer has not yet persisted.

import { type Entry, type Snapshot } from "./messages.ts";
import { type Storage, limitSize } from "./storage.ts";

export class RaftLogError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RaftLogError";
  }
}

export class RaftLog {
  /** Unstable entries start at this index. */
  private offset: number;
  private unstable: Entry[] = [];
  /** A snapshot received from the leader and not yet persisted. */
  unstableSnapshot: Snapshot | null = null;
  /** Highest index known to be committed. */
  committed: number;
  /** Highest index handed out for application (in a ready). */
  applying: number;
  /** Highest index the node layer has applied. */
  applied: number;

  constructor(readonly storage: Storage) {
    const first = storage.firstIndex();
    const last = storage.lastIndex();
    this.offset = last + 1;
    this.committed = first - 1;
    this.applying = first - 1;
    this.applied = first - 1;
  }

  firstIndex(): number {
    if (this.unstableSnapshot) return this.unstableSnapshot.meta.index + 1;
    return this.storage.firstIndex();
  }

  lastIndex(): number {
    if (this.unstable.length > 0) return this.offset + this.unstable.length - 1;
    if (this.unstableSnapshot) return this.unstableSnapshot.meta.index;
    return this.storage.lastIndex();
  }

  lastTerm(): number {
    const t = this.term(this.lastIndex());
    if (t === undefined) throw new RaftLogError(`term of last index ${this.lastIndex()} is unavailable`);
    return t;
  }

  /** Term of entry i, or undefined if compacted or beyond the end. */
  term(i: number): number | undefined {
    if (i >= this.offset && this.unstable.length > 0) {
      const e = this.unstable[i - this.offset];
      if (e) return e.term;
      return undefined;
    }
    if (this.unstableSnapshot) {
      if (i === this.unstableSnapshot.meta.index) return this.unstableSnapshot.meta.term;
      if (i < this.unstableSnapshot.meta.index) return undefined;
      // Above the snapshot but below offset: cannot happen (offset = snapshot index + 1).
      return undefined;
    }
    if (i > this.lastIndex()) return undefined;
    return this.storage.term(i);
  }

  matchTerm(i: number, term: number): boolean {
    return this.term(i) === term;
  }

  /** Is a log ending at (lastIndex, lastTerm) at least as up to date as ours? (§5.4.1) */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  /**
   * Appends entries following (index, logTerm) if the log matches there, truncating a
   * conflicting suffix. Returns null on mismatch; otherwise the last index the leader's
   * message covers and the first index actually written (0 if nothing was new).
   */
  maybeAppend(index: number, logTerm: number, committed: number, ents: Entry[]): { lastNew: number; appendedFrom: number } | null {
    if (!this.matchTerm(index, logTerm)) return null;
    const lastNew = index + ents.length;
    const conflict = this.findConflict(ents);
    if (conflict !== 0) {
      if (conflict <= this.committed) {
        throw new RaftLogError(`entry ${conflict} conflicts with committed entry (committed ${this.committed})`);
      }
      this.append(ents.slice(conflict - (index + 1)));
    }
    this.commitTo(Math.min(committed, lastNew));
    return { lastNew, appendedFrom: conflict };
  }

  /** First index among ents whose term differs from ours or that we lack; 0 if all match. */
  findConflict(ents: Entry[]): number {
    for (const e of ents) {
      if (!this.matchTerm(e.index, e.term)) return e.index;
    }
    return 0;
  }

  /**
   * The largest index <= index whose term is <= term (or the first index - 1 if none is
   * known): used to skip a whole conflicting term at once when logs diverge.
   */
  findConflictByTerm(index: number, term: number): { index: number; term: number } {
    let i = Math.min(index, this.lastIndex());
    for (; i >= this.firstIndex() - 1; i--) {
      const t = this.term(i);
      if (t === undefined) break;
      if (t <= term) return { index: i, term: t };
    }
    return { index: i, term: 0 };
  }

  /** Appends at ents[0].index, truncating any later entries. Returns the new last index. */
  append(ents: Entry[]): number {
    if (ents.length === 0) return this.lastIndex();
    const after = ents[0]!.index - 1;
    if (after < this.committed) {
      throw new RaftLogError(`append after ${after} is below committed ${this.committed}`);
    }
    if (after === this.offset + this.unstable.length - 1) {
      for (const e of ents) this.unstable.push(e);
    } else if (after < this.offset) {
      // Replaces part of the stable log: the unstable tail restarts here.
      this.offset = after + 1;
      this.unstable = ents.slice();
    } else {
      this.unstable = this.unstable.slice(0, after + 1 - this.offset).concat(ents);
    }
    return this.lastIndex();
  }

  /** Entries [lo, hi) limited to maxBytes (at least one). */
  slice(lo: number, hi: number, maxBytes: number): Entry[] {
    if (lo >= hi) return [];
    const first = this.firstIndex();
    if (lo < first) throw new RaftLogError(`slice(${lo}) is compacted, first index ${first}`);
    if (hi > this.lastIndex() + 1) throw new RaftLogError(`slice(${lo}, ${hi}) beyond last index ${this.lastIndex()}`);
    let out: Entry[] = [];
    if (lo < this.offset) {
      out = this.storage.entries(lo, Math.min(hi, this.offset), maxBytes);
      // Storage stopped early because of the size budget: do not add unstable entries.
      if (out.length < Math.min(hi, this.offset) - lo) return out;
    }
    if (hi > this.offset) {
      const from = Math.max(lo, this.offset) - this.offset;
      const tail = this.unstable.slice(from, hi - this.offset);
      out = out.length > 0 ? out.concat(tail) : tail;
    }
    return limitSize(out, maxBytes);
  }

  commitTo(i: number): void {
    if (i <= this.committed) return;
    if (i > this.lastIndex()) throw new RaftLogError(`commit ${i} beyond last index ${this.lastIndex()}`);
    this.committed = i;
  }

  /** Commits i if it is a current-term entry; the leader's commit rule (§5.4.2). */
  maybeCommit(i: number, term: number): boolean {
    if (i > this.committed && this.term(i) === term) {
      this.committed = i;
      return true;
    }
    return false;
  }

  hasNextCommitted(): boolean {
    return this.committed > this.applying && !this.unstableSnapshot;
  }

  /** Committed entries not yet handed out, up to maxBytes. */
  nextCommitted(maxBytes: number): Entry[] {
    if (!this.hasNextCommitted()) return [];
    const lo = this.applying + 1;
    if (lo < this.firstIndex()) {
      throw new RaftLogError(`entries from ${lo} were compacted before being applied (first index ${this.firstIndex()})`);
    }
    return this.slice(lo, this.committed + 1, maxBytes);
  }

  acceptApplying(i: number): void {
    this.applying = Math.max(this.applying, i);
  }

  appliedTo(i: number): void {
    if (i > this.committed) throw new RaftLogError(`applied ${i} beyond committed ${this.committed}`);
    this.applied = Math.max(this.applied, i);
    this.applying = Math.max(this.applying, i);
  }

  /** The last index that the node layer has persisted. */
  stableLastIndex(): number {
    if (this.unstableSnapshot) return this.storage.lastIndex();
    return this.offset - 1;
  }

  hasUnstable(): boolean {
    return this.unstable.length > 0 || this.unstableSnapshot !== null;
  }

  unstableEntries(): Entry[] {
    return this.unstable;
  }

  /** The node layer persisted entries up to (i, term). */
  stableTo(i: number, term: number): void {
    if (this.unstable.length === 0 || i < this.offset) return;
    const e = this.unstable[i - this.offset];
    // A later append may have replaced that entry with one of another term: keep it unstable.
    if (!e || e.term !== term) return;
    this.unstable = this.unstable.slice(i + 1 - this.offset);
    this.offset = i + 1;
  }

  stableSnapTo(i: number): void {
    if (this.unstableSnapshot && this.unstableSnapshot.meta.index === i) this.unstableSnapshot = null;
  }

  /** Replaces the whole log with a snapshot from the leader. */
  restore(snap: Snapshot): void {
    this.committed = snap.meta.index;
    this.offset = snap.meta.index + 1;
    this.unstable = [];
    this.unstableSnapshot = snap;
  }

  /** The snapshot the node layer should install, if any. */
  pendingSnapshot(): Snapshot | null {
    return this.unstableSnapshot;
  }
}

// Where a watch is in the event history, so that a resumed stream has no gap and no duplicate.
//
// Events arrive in log order; the events of one version (one txn) arrive together, in key
// order, and a version holds each key once. `through` is the highest version whose events have
// all been delivered (a later version, or a Progress event at or above it, proves it complete);
// `partial` is the version being delivered and the keys of it delivered so far. A new stream
// starts after `resumeFrom()` — the version before `partial` when one is open — and the keys
// of `partial` already delivered are skipped, as is everything at or below `through`.

import type { Event } from "../server/gen/rbkv.ts";

export class WatchCursor {
  private partial: { version: number; keys: Set<string> } | null = null;

  constructor(private through: number) {}

  /** The start_version of the next stream: every event after it is wanted. */
  resumeFrom(): number {
    return this.partial ? this.partial.version - 1 : this.through;
  }

  /** The highest version known to be delivered completely. */
  get completeThrough(): number {
    return this.through;
  }

  /** Whether `ev` (a put or delete) is new, recording it if so. */
  accept(ev: Event): boolean {
    const v = ev.version;
    if (v <= this.through) return false;
    const key = Buffer.from(ev.key).toString("hex");
    if (this.partial && v === this.partial.version) {
      if (this.partial.keys.has(key)) return false;
      this.partial.keys.add(key);
      return true;
    }
    if (this.partial && v < this.partial.version) return false; // older than what was delivered: a replayed duplicate
    if (this.partial) this.through = this.partial.version;
    this.partial = { version: v, keys: new Set([key]) };
    return true;
  }

  /** A Progress event: every event up to `version` has been sent. */
  progress(version: number): void {
    if (this.partial && version >= this.partial.version) this.partial = null;
    if (version > this.through) this.through = version;
  }

  /** Starts over at `version` (after a reset). */
  reset(version: number): void {
    this.partial = null;
    this.through = version;
  }
}

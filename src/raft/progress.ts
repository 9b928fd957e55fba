// The leader's view of one follower: how much of the log it holds and how to send it more.
//   Probe:     one AppendEntries at a time until the follower's position is known.
//   Replicate: pipelined AppendEntries, bounded by an in-flight window.
//   Snapshot:  a snapshot is on its way; nothing else is sent until it lands or fails.

export const enum ProgressState {
  Probe = 0,
  Replicate = 1,
  Snapshot = 2,
}

export function progressStateName(s: ProgressState): string {
  return s === ProgressState.Probe ? "probe" : s === ProgressState.Replicate ? "replicate" : "snapshot";
}

/** A ring of the last index of each AppendEntries in flight; frees on acknowledgement. */
export class Inflights {
  private buf: number[] = [];
  private start = 0;
  count = 0;

  constructor(readonly capacity: number) {}

  full(): boolean {
    return this.count >= this.capacity;
  }

  add(lastIndex: number): void {
    if (this.buf.length < this.capacity) this.buf.length = this.capacity;
    this.buf[(this.start + this.count) % this.capacity] = lastIndex;
    this.count++;
  }

  /** Frees every in-flight message whose last index is <= to. */
  freeLE(to: number): void {
    while (this.count > 0 && this.buf[this.start]! <= to) {
      this.start = (this.start + 1) % this.capacity;
      this.count--;
    }
  }

  freeFirstOne(): void {
    if (this.count === 0) return;
    this.start = (this.start + 1) % this.capacity;
    this.count--;
  }

  reset(): void {
    this.start = 0;
    this.count = 0;
  }
}

export class Progress {
  match = 0;
  next: number;
  state: ProgressState = ProgressState.Probe;
  /** Probe: an AppendEntries is outstanding; wait for its answer or a heartbeat response. */
  probeSent = false;
  /** Snapshot: the index of the snapshot being sent. */
  pendingSnapshot = 0;
  /** Heard from within the current election timeout (for CheckQuorum). */
  recentActive = false;
  /** recentActive as it was at the end of the previous election timeout. */
  activeBefore = false;
  /** Highest read round this peer acknowledged. */
  readAck = 0;
  readonly inflights: Inflights;

  constructor(next: number, maxInflight: number, public isLearner: boolean) {
    this.next = next;
    this.inflights = new Inflights(maxInflight);
  }

  becomeProbe(): void {
    if (this.state === ProgressState.Snapshot) {
      const pending = this.pendingSnapshot;
      this.resetState(ProgressState.Probe);
      this.next = Math.max(this.match + 1, pending + 1);
    } else {
      this.resetState(ProgressState.Probe);
      this.next = this.match + 1;
    }
  }

  becomeReplicate(): void {
    this.resetState(ProgressState.Replicate);
    this.next = this.match + 1;
  }

  becomeSnapshot(index: number): void {
    this.resetState(ProgressState.Snapshot);
    this.pendingSnapshot = index;
  }

  private resetState(state: ProgressState): void {
    this.state = state;
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.inflights.reset();
  }

  /** An AppendEntries acknowledged up to n. Returns false if that was old news. */
  maybeUpdate(n: number): boolean {
    let updated = false;
    if (this.match < n) {
      this.match = n;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, n + 1);
    return updated;
  }

  /** Records an AppendEntries sent with entries up to last. */
  sentEntries(last: number, count: number): void {
    if (this.state === ProgressState.Replicate) {
      if (count > 0) {
        this.next = last + 1;
        this.inflights.add(last);
      }
    } else if (this.state === ProgressState.Probe) {
      this.probeSent = true;
    }
  }

  /**
   * The follower rejected an AppendEntries at `rejected`; hint is the index where it guesses
   * the logs agree. Returns false if the rejection is stale.
   */
  maybeDecrTo(rejected: number, hint: number): boolean {
    if (this.state === ProgressState.Replicate) {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, hint + 1), this.match + 1, 1);
    this.probeSent = false;
    return true;
  }

  isPaused(): boolean {
    switch (this.state) {
      case ProgressState.Probe: return this.probeSent;
      case ProgressState.Replicate: return this.inflights.full();
      case ProgressState.Snapshot: return true;
    }
  }
}

// ReadIndex bookkeeping on the leader. Each batch of read requests gets a read round number;
// heartbeats carry the latest round and followers echo it back. Once a quorum of voters has
// echoed round r, the leader was still the leader after every request of round <= r arrived,
// so those requests may be served at the commit index recorded when they arrived.

import { type NodeId } from "./messages.ts";

export interface ReadState {
  /** Serve the read once the state machine has applied this index. */
  index: number;
  /** The request id given to readIndex(). */
  context: number;
}

export interface PendingRead {
  round: number;
  index: number;
  context: number;
  /** Who asked: the leader itself, or a follower to answer with ReadIndexResp. */
  from: NodeId;
}

export class ReadOnlyQueue {
  /** The latest round handed out. */
  round = 0;
  /** A round has been opened and its heartbeats are not yet sent. */
  broadcastPending = false;
  private pending: PendingRead[] = [];

  /** Queues a read at the given commit index and opens a round for it. */
  add(index: number, context: number, from: NodeId): void {
    if (!this.broadcastPending) {
      this.round++;
      this.broadcastPending = true;
    }
    this.pending.push({ round: this.round, index, context, from });
  }

  /** Removes and returns every request whose round <= confirmed. */
  release(confirmed: number): PendingRead[] {
    let n = 0;
    while (n < this.pending.length && this.pending[n]!.round <= confirmed) n++;
    if (n === 0) return [];
    return this.pending.splice(0, n);
  }

  size(): number {
    return this.pending.length;
  }

  /** Drops everything (leadership lost: the callers time out and retry elsewhere). */
  clear(): void {
    this.pending = [];
    this.broadcastPending = false;
  }
}

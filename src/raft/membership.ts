// Cluster configuration: voters and non-voting learners, changed one server at a time.
// A change takes effect as soon as its entry is in a server's log (Raft dissertation §4.1),
// so the configuration is "the last configuration entry in the log", and truncating the log
// can revert it. ConfHistory keeps just enough to do that.

import { type ConfChange, ConfChangeType, type ConfState, type NodeId } from "./messages.ts";
import { cloneConf } from "./storage.ts";

export class ConfChangeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfChangeError";
  }
}

export function isVoter(c: ConfState, id: NodeId): boolean {
  return c.voters.includes(id);
}

export function isLearner(c: ConfState, id: NodeId): boolean {
  return c.learners.includes(id);
}

export function isMember(c: ConfState, id: NodeId): boolean {
  return isVoter(c, id) || isLearner(c, id);
}

/** The configuration after applying one change; throws if the change makes no sense. */
export function applyConfChange(c: ConfState, cc: ConfChange): ConfState {
  const voters = c.voters.filter((v) => v !== cc.nodeId);
  const learners = c.learners.filter((l) => l !== cc.nodeId);
  switch (cc.type) {
    case ConfChangeType.AddVoter:
      voters.push(cc.nodeId);
      break;
    case ConfChangeType.AddLearner:
      if (isVoter(c, cc.nodeId)) throw new ConfChangeError(`${cc.nodeId} is a voter; demoting a voter to learner is not supported`);
      learners.push(cc.nodeId);
      break;
    case ConfChangeType.RemoveNode:
      if (!isMember(c, cc.nodeId)) throw new ConfChangeError(`${cc.nodeId} is not a member`);
      break;
  }
  if (voters.length === 0) throw new ConfChangeError(`removing ${cc.nodeId} would leave no voters`);
  return { voters: voters.sort(), learners: learners.sort() };
}

/** Configurations in force from each configuration entry on, above a base (snapshot) one. */
export class ConfHistory {
  private base: { index: number; conf: ConfState };
  private changes: { index: number; conf: ConfState }[] = [];

  constructor(baseIndex: number, baseConf: ConfState) {
    this.base = { index: baseIndex, conf: cloneConf(baseConf) };
  }

  current(): ConfState {
    return this.changes.length > 0 ? this.changes[this.changes.length - 1]!.conf : this.base.conf;
  }

  /** Index of the last configuration entry (0 when only the base is known). */
  lastIndex(): number {
    return this.changes.length > 0 ? this.changes[this.changes.length - 1]!.index : this.base.index;
  }

  push(index: number, conf: ConfState): void {
    this.truncateFrom(index);
    this.changes.push({ index, conf });
  }

  /** Forgets configuration entries at index >= from (the log was truncated there). */
  truncateFrom(from: number): void {
    while (this.changes.length > 0 && this.changes[this.changes.length - 1]!.index >= from) this.changes.pop();
  }

  /** The configuration in force at index i (i must be >= the base index). */
  at(i: number): ConfState {
    let conf = this.base.conf;
    for (const c of this.changes) {
      if (c.index > i) break;
      conf = c.conf;
    }
    return conf;
  }

  /** A snapshot at index i replaces everything up to it. */
  compactTo(i: number, conf: ConfState): void {
    this.base = { index: i, conf: cloneConf(conf) };
    this.changes = this.changes.filter((c) => c.index > i);
  }

  reset(i: number, conf: ConfState): void {
    this.base = { index: i, conf: cloneConf(conf) };
    this.changes = [];
  }
}

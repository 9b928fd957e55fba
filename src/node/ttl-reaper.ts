// On the leader, turns expired keys into replicated ExpireKey commands, so every replica
// removes them at the same log position and watchers see the delete. Reads already treat an
// expired key as missing; this only cleans up and notifies.

import { CommandKind, encodeCommand } from "../storage/command.ts";
import { type Logger } from "./logger.ts";
import { type RaftNode } from "./node.ts";

const INTERVAL_MS = 250;
const BATCH = 512;

export class TtlReaper {
  private timer: ReturnType<typeof setInterval> | null = null;
  /** Keys (hex) with an ExpireKey in flight, so one expiry is proposed once. */
  private readonly inFlight = new Set<string>();
  /** The last sweep failure reported, so a damaged expiry record is logged once, not every 250 ms. */
  private lastFailure = "";

  constructor(
    private readonly node: RaftNode,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.sweep(), INTERVAL_MS);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private sweep(): void {
    if (!this.node.started || !this.node.isLeader()) {
      this.inFlight.clear();
      return;
    }
    let expired: { key: Uint8Array; version: number }[];
    try {
      expired = this.node.expiredKeys(Date.now(), BATCH);
    } catch (err) {
      // E.g. a damaged expiry record (KvCorruptionError, naming the file): nothing to propose.
      const msg = (err as Error).message;
      if (msg !== this.lastFailure) this.log.error(`TTL sweep failed: ${msg}`);
      this.lastFailure = msg;
      return;
    }
    this.lastFailure = "";
    for (const { key, version } of expired) {
      const id = `${Buffer.from(key).toString("hex")}@${version}`;
      if (this.inFlight.has(id)) continue;
      this.inFlight.add(id);
      this.node
        .propose(encodeCommand({ kind: CommandKind.ExpireKey, key, version }))
        .catch((err: Error) => this.log.debug(`expiry of a key at version ${version} not applied: ${err.message}`))
        .finally(() => this.inFlight.delete(id));
    }
  }
}

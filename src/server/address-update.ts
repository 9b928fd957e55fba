// A member started on its own data (its stored node id) at new addresses tells the cluster, as
// `etcdctl member update` would: it calls MemberUpdate on the leader until the change is in.
//
// Why here and not inside the node: until the other members have the new Raft address, the
// leader dials the old one and nothing reaches this node over Raft, so it cannot learn who leads
// or propose anything itself. Only gRPC, dialled from here to the addresses in its stored peer
// book, reaches the cluster: a follower asked passes the request to its leader (or answers
// FAILED_PRECONDITION naming it, and we go there). A one-node cluster is its own leader: asking
// this node's own gRPC server takes the same path.

import * as grpc from "@grpc/grpc-js";
import { sameAddress } from "../net/host-port.ts";
import { type Logger } from "../node/logger.ts";
import { type PeerAddress } from "../storage/raft-log-store.ts";
import { LEADER_ADDR_METADATA } from "./errors.ts";
import { type MemberUpdateRequest } from "./gen/rbkv.ts";

export interface AddressUpdateOptions {
  id: string;
  /** The addresses this node now has: --raft-advertise-addr (or --raft-addr) and --grpc-addr. */
  want: PeerAddress;
  /** This node's entry in its peer book as it is now (what the other members dial). */
  current: () => PeerAddress | undefined;
  /** The members' gRPC addresses from the peer book (this node's included or not). */
  memberGrpcAddrs: () => string[];
  isLeader: () => boolean;
  /** One MemberUpdate RPC at `target`; rejects with the grpc.ServiceError. */
  call: (target: string, req: MemberUpdateRequest) => Promise<void>;
  log: Logger;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
}

/** True if `current` already holds the addresses in `want`. */
export function addressesMatch(current: PeerAddress | undefined, want: PeerAddress): boolean {
  return current !== undefined && sameAddress(current.raft, want.raft) && sameAddress(current.grpc, want.grpc);
}

function describe(a: PeerAddress): string {
  return `raft ${a.raft}, grpc ${a.grpc}`;
}

function failureText(err: unknown): string {
  const e = err as Partial<grpc.ServiceError>;
  if (typeof e.code === "number") return `${grpc.status[e.code] ?? e.code}: ${e.details ?? e.message ?? ""}`;
  return (err as Error)?.message ?? String(err);
}

/** The leader's gRPC address a not-leader answer names (errors.ts puts it in the trailers). */
function redirectOf(err: unknown): string | null {
  const e = err as Partial<grpc.ServiceError>;
  if (e.code !== grpc.status.FAILED_PRECONDITION || !e.metadata) return null;
  const v = e.metadata.get(LEADER_ADDR_METADATA)[0];
  return typeof v === "string" && v !== "" ? v : null;
}

export class AddressUpdater {
  private stopped = false;
  private wake: (() => void) | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** Resolves true once the cluster has the new addresses, false if stopped first. */
  readonly done: Promise<boolean>;

  constructor(private readonly o: AddressUpdateOptions) {
    this.done = this.run();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.wake?.();
  }

  private async run(): Promise<boolean> {
    const { id, want, log } = this.o;
    const from = this.o.current();
    log.info(`this node (${id}) was started at new addresses (${describe(want)}; the cluster has ${from ? describe(from) : "none"}): asking the leader to update them (MemberUpdate)`);
    let delay = this.o.initialBackoffMs ?? 200;
    const maxDelay = this.o.maxBackoffMs ?? 5000;
    const req: MemberUpdateRequest = { id, raftAddr: want.raft, grpcAddr: want.grpc };
    const applied = (): boolean => {
      // The change reached this node's log (an earlier answer may have been lost on the way).
      if (!addressesMatch(this.o.current(), want)) return false;
      log.info(`the cluster has this node's new addresses (${describe(want)})`);
      return true;
    };
    for (let attempt = 1; !this.stopped; attempt++) {
      if (applied()) return true;
      const failures: string[] = [];
      const tried: string[] = [];
      // This node first when it leads (a one-node cluster), else the others first: until they
      // have the new address this node hears no leader, and its own server would only say so.
      const others = this.o.memberGrpcAddrs().filter((a) => !sameAddress(a, want.grpc) && (from === undefined || !sameAddress(a, from.grpc)));
      const queue = this.o.isLeader() ? [want.grpc, ...others] : [...others, want.grpc];
      while (queue.length > 0 && !this.stopped) {
        const target = queue.shift()!;
        if (tried.some((t) => sameAddress(t, target))) continue;
        if (tried.length > 0 && applied()) return true;
        tried.push(target);
        try {
          await this.o.call(target, req);
          log.info(`MemberUpdate through ${target} done: the cluster now dials this node at ${describe(want)}`);
          return true;
        } catch (err) {
          failures.push(`${target}: ${failureText(err)}`);
          // A member that knows the leader names it: ask there next.
          const leader = redirectOf(err);
          if (leader !== null && !tried.some((t) => sameAddress(t, leader))) queue.unshift(leader);
        }
      }
      if (this.stopped) break;
      log.warn(`could not update this node's addresses (attempt ${attempt}): ${failures.join("; ") || "no member to ask"}; retrying in ${delay}ms`);
      await this.sleep(delay);
      delay = Math.min(delay * 2, maxDelay);
    }
    return false;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
      this.timer = setTimeout(resolve, ms);
    });
  }
}

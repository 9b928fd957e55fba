// The harness's gRPC client: one channel per node with fast reconnects (grpc-js's default backoff
// grows to two minutes, far longer than a kill), and outcomes classified the way a checker needs
// them: ok, definitely failed (the write certainly did not happen), or unknown.

import * as grpc from "@grpc/grpc-js";
import { type RbdkvClient, createRbdkvClient } from "../../src/server/grpc-service.ts";
import { type ClusterStatsResponse, type CommandResponse, OpType, ReadConsistency, type WatchResponse } from "../../src/server/gen/rbkv.ts";
import { dec, enc } from "../e2e/harness.ts";

export const CHANNEL_OPTIONS: Partial<grpc.ChannelOptions> = {
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.min_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 1000,
  "grpc.max_receive_message_length": 64 << 20,
  "grpc.max_send_message_length": 64 << 20,
};

/** A milliseconds clock that only moves forward (process-monotonic). */
export function now(): number {
  return performance.now();
}

export type Outcome<T> = { ok: true; value: T } | { ok: false; definite: boolean; code: number; details: string };

/**
 * Did a failed WRITE certainly not happen? INVALID_ARGUMENT and FAILED_PRECONDITION (not the
 * leader, refused before the proposal) are answers given before anything reached the log;
 * ABORTED says the write's log slot went to another leader's entry (never applied); an
 * UNAVAILABLE that grpc-js produced itself because it had no connection to the node ("No
 * connection established", the request never left this process) too. Anything else — UNAVAILABLE
 * from the server, DEADLINE_EXCEEDED, CANCELLED, INTERNAL, a broken connection — may or may not
 * have taken effect.
 */
export function writeFailureIsDefinite(code: number, details: string): boolean {
  if (code === grpc.status.INVALID_ARGUMENT || code === grpc.status.FAILED_PRECONDITION || code === grpc.status.ABORTED) return true;
  if (code === grpc.status.UNAVAILABLE && /^No connection established/.test(details)) return true;
  return false;
}

function failure<T>(err: unknown, isWrite: boolean): Outcome<T> {
  const e = err as grpc.ServiceError;
  const code = typeof e?.code === "number" ? e.code : grpc.status.UNKNOWN;
  const details = typeof e?.details === "string" ? e.details : String((err as Error)?.message ?? err);
  return { ok: false, definite: isWrite ? writeFailureIsDefinite(code, details) : true, code, details };
}

/**
 * Runs one RPC (any of the typed client's promise methods) and returns its outcome; a failure is
 * classified as a write's (writeFailureIsDefinite) when `isWrite`, else as definite.
 */
export async function call<T>(isWrite: boolean, rpc: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await rpc() };
  } catch (err) {
    return failure(err, isWrite);
  }
}

export function codeName(code: number): string {
  return grpc.status[code] ?? String(code);
}

export class NodeClient {
  readonly client: RbdkvClient;

  constructor(readonly addr: string) {
    this.client = createRbdkvClient(addr, { channelOptions: CHANNEL_OPTIONS });
  }

  async put(key: string, value: string, deadlineMs: number): Promise<Outcome<CommandResponse>> {
    try {
      return { ok: true, value: await this.client.executeAsync({ op: OpType.Put, kv: { key: enc(key), value: enc(value) } }, { deadline: Date.now() + deadlineMs }) };
    } catch (err) {
      return failure(err, true);
    }
  }

  async del(key: string, deadlineMs: number): Promise<Outcome<CommandResponse>> {
    try {
      return { ok: true, value: await this.client.executeAsync({ op: OpType.Delete, kv: { key: enc(key) } }, { deadline: Date.now() + deadlineMs }) };
    } catch (err) {
      return failure(err, true);
    }
  }

  /** value null = NOT_FOUND. */
  async get(key: string, deadlineMs: number, serializable = false): Promise<Outcome<{ value: string | null; version: number }>> {
    try {
      const r = await this.client.executeAsync(
        { op: OpType.Get, rc: serializable ? ReadConsistency.Serializable : ReadConsistency.Linearizable, kv: { key: enc(key) } },
        { deadline: Date.now() + deadlineMs },
      );
      return { ok: true, value: { value: dec(r.value), version: r.version } };
    } catch (err) {
      if ((err as grpc.ServiceError)?.code === grpc.status.NOT_FOUND) return { ok: true, value: { value: null, version: 0 } };
      return failure(err, false);
    }
  }

  async stats(deadlineMs = 1000): Promise<ClusterStatsResponse> {
    return this.client.clusterStatsAsync({ withRaft: true, withFsm: { exactSize: false, withKeyCount: true } }, { deadline: Date.now() + deadlineMs });
  }

  watch(prefix: string, watcherId: string): grpc.ClientReadableStream<WatchResponse> {
    return this.client.watch({ watcherId, prefixes: [enc(prefix)], eventCapacity: 0, leaderRequired: false });
  }

  close(): void {
    this.client.close();
  }
}

// Where the leader is, as a "not leader" error says it: rbkv's trailing metadata
// (rbkv-leader-addr / rbkv-leader-id) or, as the seed's Go server sends it, a google.rpc.Status
// in grpc-status-details-bin whose details hold an Any of rbdkv.LeaderInfoResponse. These names
// are the wire contract of src/server/errors.ts (notLeaderStatus); the client does not import
// the server's error module, which pulls in the node and the storage engine.

import type { Metadata } from "@grpc/grpc-js";
import { Status } from "../server/gen/google/rpc/status.ts";
import { LeaderInfoResponse } from "../server/gen/rbkv.ts";

const LEADER_ADDR_METADATA = "rbkv-leader-addr";
const LEADER_ID_METADATA = "rbkv-leader-id";
const STATUS_DETAILS_METADATA = "grpc-status-details-bin";
const LEADER_INFO_TYPE_URL = "type.googleapis.com/rbdkv.LeaderInfoResponse";

export interface LeaderHint {
  addr: string;
  id: string;
}

function firstString(md: Metadata, key: string): string {
  const v = md.get(key)[0];
  return typeof v === "string" ? v : v instanceof Uint8Array ? new TextDecoder().decode(v) : "";
}

/** The leader an error names, or null when it names none (no leader known, or no details). */
export function leaderHintOf(md: Metadata | undefined): LeaderHint | null {
  if (!md) return null;
  const addr = firstString(md, LEADER_ADDR_METADATA);
  if (addr) return { addr, id: firstString(md, LEADER_ID_METADATA) };
  const bin = md.get(STATUS_DETAILS_METADATA)[0];
  if (!(bin instanceof Uint8Array)) return null;
  try {
    const st = Status.decode(bin);
    for (const any of st.details) {
      if (any.typeUrl !== LEADER_INFO_TYPE_URL) continue;
      const info = LeaderInfoResponse.decode(any.value);
      if (info.leaderAddr) return { addr: info.leaderAddr, id: info.leaderId };
    }
  } catch {
    // Undecodable details say nothing about the leader; the caller retries elsewhere.
    return null;
  }
  return null;
}

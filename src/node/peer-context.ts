// A member's addresses travel in the context of the configuration entry that adds it (or gives
// it new addresses), as JSON: every member learns them from the log, a new member from the
// snapshot envelope, and each keeps them in its peer book (the log store's "peers" record).

import { type PeerAddress, peerAddressOf } from "../storage/raft-log-store.ts";

export function encodePeerContext(addr: PeerAddress): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(addr));
}

/** The addresses in a configuration entry's context; null when it holds none (or not ours). */
export function decodePeerContext(ctx: Uint8Array): PeerAddress | null {
  if (ctx.byteLength === 0) return null;
  try {
    return peerAddressOf(JSON.parse(new TextDecoder().decode(ctx)));
  } catch {
    return null;
  }
}

// A snapshot stream is the peer address book followed by the state machine's image, so a new
// node learns where every member is from the same transfer that gives it the data.
//   [magic "RBKVENV1"][u32 LE length][JSON {id: {raft, grpc, promote?}}] then the image's bytes.

import { type PeerAddress, peerAddressOf } from "../storage/raft-log-store.ts";

const MAGIC = new TextEncoder().encode("RBKVENV1");
const MAX_ENVELOPE = 16 << 20;

export class SnapshotEnvelopeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SnapshotEnvelopeError";
  }
}

export function writeSnapshotEnvelope(peers: Map<string, PeerAddress>): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(Object.fromEntries(peers)));
  const out = new Uint8Array(MAGIC.byteLength + 4 + json.byteLength);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(MAGIC.byteLength, json.byteLength, true);
  out.set(json, MAGIC.byteLength + 4);
  return out;
}

/** Reads the envelope off the front of a chunk stream; `rest` yields the remaining bytes. */
export async function readSnapshotEnvelope(it: AsyncIterator<Uint8Array>): Promise<{ peers: Map<string, PeerAddress>; rest: AsyncIterator<Uint8Array> }> {
  let buf: Uint8Array = new Uint8Array(0);
  const headerLen = MAGIC.byteLength + 4;
  let need = headerLen;
  while (buf.byteLength < need) {
    const r = await it.next();
    if (r.done) throw new SnapshotEnvelopeError(`snapshot stream ended after ${buf.byteLength} bytes, inside its envelope`);
    buf = concat(buf, r.value);
    if (need === headerLen && buf.byteLength >= headerLen) {
      for (let i = 0; i < MAGIC.byteLength; i++) {
        if (buf[i] !== MAGIC[i]) throw new SnapshotEnvelopeError("snapshot stream does not start with an rbkv envelope");
      }
      const len = new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getUint32(MAGIC.byteLength, true);
      if (len > MAX_ENVELOPE) throw new SnapshotEnvelopeError(`snapshot envelope claims ${len} bytes`);
      need = headerLen + len;
    }
  }
  let peers: Map<string, PeerAddress>;
  try {
    const obj = JSON.parse(new TextDecoder().decode(buf.subarray(headerLen, need))) as Record<string, unknown>;
    peers = new Map();
    for (const [id, v] of Object.entries(obj)) {
      const addr = peerAddressOf(v);
      if (addr) peers.set(id, addr);
    }
  } catch {
    throw new SnapshotEnvelopeError("snapshot envelope is not valid JSON");
  }
  let leftover: Uint8Array | null = buf.byteLength > need ? buf.subarray(need) : null;
  const rest: AsyncIterator<Uint8Array> = {
    next: async () => {
      if (leftover) {
        const v = leftover;
        leftover = null;
        return { done: false, value: v };
      }
      return it.next();
    },
  };
  return { peers, rest };
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.byteLength === 0) return b;
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a, 0);
  out.set(b, a.byteLength);
  return out;
}

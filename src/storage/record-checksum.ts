// Record checksums, shared by the state machine (fsm.ts) and the Raft log (raft-log-store.ts).
//
// LMDB keeps no checksums: a byte changed on disk inside a stored value is returned as is. So
// every record we store ends with a CRC-32 (IEEE, as zlib; Bun.hash.crc32 is native) of the
// record's LMDB key followed by the record's body (every byte before the checksum):
//
//     record = body ‖ le32(crc32(key ‖ body))
//
// Covering the key catches a record that is intact but sits under the wrong key (a damaged key
// byte), not only a damaged value. The CRC is computed as crc32(body, seed = crc32(key)), which
// equals crc32(key ‖ body) without concatenating anything.
//
// Verifying needs no slicing: the CRC-32 of a message followed by its own little-endian CRC is the
// constant residue 0x2144DF1C, so a record is intact iff crc32(record, crc32(key)) === RESIDUE.
// (This is equivalent to recomputing and comparing: appending 4 bytes to a CRC-32 state is a
// bijection, so exactly one trailer gives the residue.)

export const CRC_BYTES = 4;
const RESIDUE = 0x2144df1c;

/** The CRC state after the LMDB key: the seed for sealing and checking the record stored under it. */
export function crcSeed(key: Uint8Array): number {
  return Bun.hash.crc32(key);
}

/** Fills the last CRC_BYTES of `record` with the checksum of its body under the key whose seed is given. */
export function sealRecord(record: Uint8Array, seed: number): void {
  const end = record.length - CRC_BYTES;
  const crc = Bun.hash.crc32(record.subarray(0, end), seed);
  record[end] = crc & 0xff;
  record[end + 1] = (crc >>> 8) & 0xff;
  record[end + 2] = (crc >>> 16) & 0xff;
  record[end + 3] = (crc >>> 24) & 0xff;
}

/** True if `record` (body ‖ crc) is intact under the key whose seed is given. */
export function recordIntact(record: Uint8Array, seed: number): boolean {
  return record.length >= CRC_BYTES && Bun.hash.crc32(record, seed) === RESIDUE;
}

// Keys and values as the caller gives them (string, UTF-8 encoded, or bytes) and the key-range
// arithmetic of paging.

export type Bytes = string | Uint8Array;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function toBytes(b: Bytes): Uint8Array {
  return typeof b === "string" ? encoder.encode(b) : b;
}

/** UTF-8 text of stored bytes. */
export function text(b: Uint8Array): string {
  return decoder.decode(b);
}

/** etcd's range_end meaning "every key from key on". */
export const TO_THE_END = new Uint8Array([0]);

/**
 * The first key after every key starting with `prefix` (the prefix with its last byte below 0xff
 * incremented and the rest dropped), or TO_THE_END when there is none (empty, or all 0xff).
 */
export function prefixEnd(prefix: Uint8Array): Uint8Array {
  for (let i = prefix.length - 1; i >= 0; i--) {
    if (prefix[i]! < 0xff) {
      const end = prefix.slice(0, i + 1);
      end[i]! += 1;
      return end;
    }
  }
  return TO_THE_END;
}

/** The smallest key greater than `key`: key ‖ 0x00. */
export function keyAfter(key: Uint8Array): Uint8Array {
  const next = new Uint8Array(key.length + 1);
  next.set(key);
  return next;
}

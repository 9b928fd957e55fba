// What reads return: a stored key-value pair with its versions.

import type { KeyValue } from "../server/gen/rbkv.ts";
import { text } from "./bytes.ts";

export interface KeyValueEntry {
  key: Uint8Array;
  value: Uint8Array;
  /** The opaque user byte stored with the value. */
  meta: number;
  /** The version (log index) that wrote this value. */
  version: number;
  /** The version at which the key was created (since its last delete); 0 when not reported. */
  createVersion: number;
  /** Unix ms at which the key expires; 0 = never (or not reported). */
  expireAt: number;
  /** The key as UTF-8 text. */
  readonly keyText: string;
  /** The value as UTF-8 text. */
  readonly valueText: string;
}

export function makeEntry(key: Uint8Array, value: Uint8Array, meta: number, version: number, createVersion: number, expireAt: number): KeyValueEntry {
  return {
    key,
    value,
    meta,
    version,
    createVersion,
    expireAt,
    get keyText() {
      return text(key);
    },
    get valueText() {
      return text(value);
    },
  };
}

export function entryOf(kv: KeyValue): KeyValueEntry {
  return makeEntry(kv.key, kv.value, kv.meta, kv.version, kv.createVersion, kv.expireAt);
}

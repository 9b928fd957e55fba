// google.protobuf.Duration <-> milliseconds, for Command.kv.ttl, PutOp.ttl and the session ttls.

import type { Duration } from "./gen/google/protobuf/duration.ts";

/** A Duration of `ms` milliseconds (ms: a safe integer, may be negative). */
export function durationFromMs(ms: number): Duration {
  if (!Number.isSafeInteger(ms)) throw new RangeError(`duration ${ms} ms is not a safe integer`);
  const seconds = Math.trunc(ms / 1000);
  const nanos = (ms - seconds * 1000) * 1_000_000;
  return { seconds: seconds === 0 ? 0 : seconds, nanos: nanos === 0 ? 0 : nanos }; // no -0
}

/** Milliseconds in a Duration, truncated toward zero. */
export function durationToMs(d: Duration): number {
  return d.seconds * 1000 + Math.trunc(d.nanos / 1_000_000);
}

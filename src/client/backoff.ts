// Jittered exponential backoff ("full jitter"): attempt n waits a uniformly random time in
// [0, min(max, base · 2^n)), so clients that failed together do not retry together.

export interface BackoffOptions {
  /** The first retry's upper bound, ms. */
  baseMs: number;
  /** The cap of every wait, ms. */
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 25, maxMs: 1000 };

/** How long to wait before retry number `attempt` (0 = the first retry). `random` is in [0, 1). */
export function backoffDelay(attempt: number, opts: BackoffOptions, random: () => number = Math.random): number {
  const ceiling = Math.min(opts.maxMs, opts.baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

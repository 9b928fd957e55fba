// Majority arithmetic over the voters of one configuration.

/** The largest value that a majority of `values` are >= (the commit rule's "N"). */
export function majorityValue(values: number[]): number {
  if (values.length === 0) return 0;
  const sorted = values.slice().sort((a, b) => b - a);
  return sorted[Math.floor(sorted.length / 2)]!;
}

export function quorumSize(voters: number): number {
  return Math.floor(voters / 2) + 1;
}

export const enum VoteResult {
  Pending = 0,
  Won = 1,
  Lost = 2,
}

/** Tallies granted/rejected votes among `voters`; votes from non-voters are ignored. */
export function tallyVotes(voters: readonly string[], votes: ReadonlyMap<string, boolean>): VoteResult {
  let granted = 0;
  let rejected = 0;
  for (const id of voters) {
    const v = votes.get(id);
    if (v === true) granted++;
    else if (v === false) rejected++;
  }
  const q = quorumSize(voters.length);
  if (granted >= q) return VoteResult.Won;
  if (rejected >= q || voters.length - rejected < q) return VoteResult.Lost;
  return VoteResult.Pending;
}

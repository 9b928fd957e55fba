// Errors the node layer reports to the API layer, which maps them to gRPC status codes.

export class NotLeaderError extends Error {
  constructor(
    readonly leaderId: string,
    readonly leaderGrpcAddr: string,
    readonly term: number,
  ) {
    super(leaderId ? `not the leader; the leader is ${leaderId} at ${leaderGrpcAddr} (term ${term})` : `not the leader and no leader is known (term ${term})`);
    this.name = "NotLeaderError";
  }
}

/** The outcome is unknown or the cluster cannot serve right now; the caller may retry. */
export class UnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnavailableError";
  }
}

/**
 * The proposal was definitely not applied: its log slot holds another leader's entry (log
 * matching: an entry never moves to another index). Clients may retry it safely.
 */
export class ProposalLostError extends Error {
  constructor(index: number, term: number) {
    super(`write at index ${index} (term ${term}) was overwritten by a new leader; it was not applied`);
    this.name = "ProposalLostError";
  }
}

export class NodeStoppedError extends Error {
  constructor() {
    super("the node is shutting down");
    this.name = "NodeStoppedError";
  }
}

/**
 * The state machine and the Raft log on disk do not belong together (e.g. kv/fsm.mdb was deleted
 * or replaced by an older copy after the log was compacted): the entries in between are gone.
 */
export class StorageMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StorageMismatchError";
  }
}

/**
 * This node was removed from its cluster (the marker file says when). Its data directories
 * describe a membership that no longer exists, so it must not start on them again.
 */
export class NodeRemovedError extends Error {
  constructor(
    readonly markerFile: string,
    readonly detail: string,
  ) {
    super(`${markerFile}: ${detail}; to add this node back, empty its --log-dir and --kv-dir and start it with --join-addr`);
    this.name = "NodeRemovedError";
  }
}

/** A wait (min_version, a version to read at) outlived the request's deadline. */
export class DeadlineError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DeadlineError";
  }
}

/**
 * The data directory belongs to another node id (a node restarted with another --grpc-addr, so
 * another default id): under this id it would be a second member carrying the first one's votes
 * and log, a stranger to its own cluster. Nothing was changed.
 */
export class NodeIdMismatchError extends Error {
  constructor(
    readonly storedId: string,
    readonly givenId: string,
    readonly dir: string,
  ) {
    super(
      `--log-dir ${dir} holds the data of node ${storedId}, not of ${givenId} (the node id, which defaults to --grpc-addr): ` +
        `to start node ${storedId} on this data at new addresses, pass --node-id=${storedId}`,
    );
    this.name = "NodeIdMismatchError";
  }
}

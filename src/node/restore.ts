// Builds a node's storage from a backup file so that it starts as the only voter of a NEW cluster
// holding exactly the backup's data (`rbkv snapshot restore`).
//
// The state machine is the image itself (restored with the checks InstallSnapshot uses). The Raft
// log holds no entries: it starts as if this node had just taken a snapshot at the image's
// version V: snapshot meta {index V, term 1, conf: this node the one voter}, compaction point V,
// hard state {term 1, no vote, commit V}, a peer book with this node's addresses and a fresh
// cluster id. RaftNode.start then finds a state machine at V and a log that begins after V, has
// nothing to replay, campaigns as the sole voter (term 2), and its first entry is V + 1: every
// write gets a version above every restored one.

import { NONE, type SnapshotMeta } from "../raft/messages.ts";
import { type BackupSummary, readBackup } from "../storage/backup-file.ts";
import { KvStore } from "../storage/fsm.ts";
import { type PeerAddress, RaftLogStore } from "../storage/raft-log-store.ts";
import { newClusterId } from "./node.ts";

export interface RestoreTarget {
  /** The node's --log-dir and its state machine directory (run.ts: <kv-dir>/kv). */
  logDir: string;
  kvDir: string;
  nodeId: string;
  /** The addresses the node will be started with (the raft one as other members would dial it). */
  raftAddr: string;
  grpcAddr: string;
}

export interface RestoreResult {
  backup: BackupSummary;
  clusterId: string;
}

/**
 * Restores the backup read from `source` (named `name` in errors) into the EMPTY directories of
 * `target`. The caller has verified the file already; this pass checks it again as it writes (the
 * file could have changed in between) and throws on any difference, leaving the directories for
 * the caller to remove.
 */
export async function restoreNodeStorage(source: AsyncIterable<Uint8Array>, name: string, target: RestoreTarget): Promise<RestoreResult> {
  const kv = KvStore.open({ dir: target.kvDir, versionKeepNum: 0 });
  let backup: BackupSummary;
  try {
    backup = await readBackup(source, name, (image, offset) => kv.restoreImage(image, offset));
  } finally {
    await kv.close();
  }
  const version = backup.header.version;
  const clusterId = newClusterId(target.nodeId);
  const log = RaftLogStore.open({ dir: target.logDir });
  try {
    const self: PeerAddress = { raft: target.raftAddr, grpc: target.grpcAddr };
    const snapshot: SnapshotMeta = { index: version, term: 1, conf: { voters: [target.nodeId], learners: [] } };
    await log.save({ term: 1, vote: NONE, commit: version }, [], snapshot, new Map([[target.nodeId, self]]));
    // Last: a log without a cluster id is a brand-new node's, which RaftNode.start would bootstrap.
    await log.setClusterId(clusterId);
  } finally {
    await log.close();
  }
  return { backup, clusterId };
}

// Types that cross the boundary of the consensus core: entries, messages, hard state,
// snapshots and configuration. The core never does I/O; these are plain data so that the
// simulator, the LMDB storage and the TCP transport can all carry them.

export type NodeId = string;

/** The empty node id: "no leader", "voted for nobody". */
export const NONE: NodeId = "";

export const enum EntryType {
  Normal = 0,
  ConfChange = 1,
}

export interface Entry {
  term: number;
  index: number;
  type: EntryType;
  /** Opaque command bytes; an empty Normal entry is a leader's no-op. */
  data: Uint8Array;
}

export const enum MessageType {
  App = 1,
  AppResp = 2,
  Vote = 3,
  VoteResp = 4,
  PreVote = 5,
  PreVoteResp = 6,
  Heartbeat = 7,
  HeartbeatResp = 8,
  Snap = 9,
  ReadIndex = 10,
  ReadIndexResp = 11,
  TimeoutNow = 12,
  /** A follower passes client proposals to the leader (entries carry only data). */
  Prop = 13,
}

export interface Message {
  type: MessageType;
  from: NodeId;
  to: NodeId;
  term: number;
  /** App: term of the entry at `index`. Vote: term of the candidate's last entry. Reject: hint term. */
  logTerm: number;
  /** App: index preceding `entries`. AppResp: last matching index, or rejected index. Vote: last index. */
  index: number;
  entries: Entry[];
  commit: number;
  reject: boolean;
  /** AppResp with reject: the follower's best guess of where the logs diverge. */
  rejectHint: number;
  snapshot: Snapshot | null;
  /**
   * Heartbeat/HeartbeatResp: the leader's read round; ReadIndex/ReadIndexResp: the caller's
   * request id; Vote: 1 when the election comes from a leadership transfer.
   */
  context: number;
}

export interface HardState {
  term: number;
  vote: NodeId;
  commit: number;
}

export interface ConfState {
  voters: NodeId[];
  learners: NodeId[];
}

export interface SnapshotMeta {
  index: number;
  term: number;
  conf: ConfState;
}

export interface Snapshot {
  meta: SnapshotMeta;
  /** Opaque state-machine image (or, for a streamed store, a descriptor of one). */
  data: Uint8Array;
}

export const enum ConfChangeType {
  AddVoter = 1,
  AddLearner = 2,
  RemoveNode = 3,
}

export interface ConfChange {
  type: ConfChangeType;
  nodeId: NodeId;
  /** Opaque to the core; the node layer keeps the peer's address here. */
  context: Uint8Array;
}

export function emptyHardState(): HardState {
  return { term: 0, vote: NONE, commit: 0 };
}

export function isHardStateEqual(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

export function emptySnapshot(): Snapshot {
  return { meta: { index: 0, term: 0, conf: { voters: [], learners: [] } }, data: new Uint8Array(0) };
}

/** A message with every field at its zero value, so call sites name only what they set. */
export function message(type: MessageType, from: NodeId, to: NodeId, term: number): Message {
  return {
    type,
    from,
    to,
    term,
    logTerm: 0,
    index: 0,
    entries: [],
    commit: 0,
    reject: false,
    rejectHint: 0,
    snapshot: null,
    context: 0,
  };
}

export function messageTypeName(t: MessageType): string {
  switch (t) {
    case MessageType.App: return "App";
    case MessageType.AppResp: return "AppResp";
    case MessageType.Vote: return "Vote";
    case MessageType.VoteResp: return "VoteResp";
    case MessageType.PreVote: return "PreVote";
    case MessageType.PreVoteResp: return "PreVoteResp";
    case MessageType.Heartbeat: return "Heartbeat";
    case MessageType.HeartbeatResp: return "HeartbeatResp";
    case MessageType.Snap: return "Snap";
    case MessageType.ReadIndex: return "ReadIndex";
    case MessageType.ReadIndexResp: return "ReadIndexResp";
    case MessageType.TimeoutNow: return "TimeoutNow";
    case MessageType.Prop: return "Prop";
  }
}

/** Bytes an entry costs against a message's size budget. */
export function entrySize(e: Entry): number {
  return e.data.byteLength + 24;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Encodes a configuration change as entry data: [type u8][id length u16][id utf-8][context]. */
export function encodeConfChange(cc: ConfChange): Uint8Array {
  const id = encoder.encode(cc.nodeId);
  const out = new Uint8Array(3 + id.byteLength + cc.context.byteLength);
  out[0] = cc.type;
  out[1] = id.byteLength >>> 8;
  out[2] = id.byteLength & 0xff;
  out.set(id, 3);
  out.set(cc.context, 3 + id.byteLength);
  return out;
}

export class ConfChangeDecodeError extends Error {
  constructor(detail: string) {
    super(`malformed configuration change entry: ${detail}`);
    this.name = "ConfChangeDecodeError";
  }
}

export function decodeConfChange(data: Uint8Array): ConfChange {
  if (data.byteLength < 3) throw new ConfChangeDecodeError(`${data.byteLength} bytes, need at least 3`);
  const type = data[0] as ConfChangeType;
  if (type !== ConfChangeType.AddVoter && type !== ConfChangeType.AddLearner && type !== ConfChangeType.RemoveNode) {
    throw new ConfChangeDecodeError(`unknown change type ${data[0]}`);
  }
  const idLen = (data[1]! << 8) | data[2]!;
  if (3 + idLen > data.byteLength) throw new ConfChangeDecodeError(`node id length ${idLen} overruns ${data.byteLength} bytes`);
  const nodeId = decoder.decode(data.subarray(3, 3 + idLen));
  if (nodeId === NONE) throw new ConfChangeDecodeError("empty node id");
  return { type, nodeId, context: data.slice(3 + idLen) };
}

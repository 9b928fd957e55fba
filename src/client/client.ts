// The rbkv client: one object for a whole cluster (SPEC §6; the seed lists a client as its second to-do item).
//
// - Discovery: connect() asks any one of the given endpoints for the member list and from then
//   on talks to every member's gRPC address.
// - Routing: writes and linearizable reads go to the leader (found through LeaderInfo, and
//   learnt from the "not leader" FAILED_PRECONDITION of a member that is not); serializable
//   reads go round-robin over the members.
// - Deadlines and retries: each call has an overall deadline (timeoutMs) and each attempt its
//   own, shorter one (attemptTimeoutMs), so a member that hangs costs one attempt, not the call.
//   UNAVAILABLE, an attempt's DEADLINE_EXCEEDED, a dropped connection (CANCELLED) and ABORTED
//   (the server lost the proposal: not applied) are retried after a jittered exponential backoff,
//   on another member when the one asked looks dead. A redirect to the leader is retried at once.
// - Exactly-once writes: every put / delete / txn is sent in the client's session (OpenSession,
//   then session_id with a seq that increases by one per write). A retry sends the same seq, and
//   the state machine answers a seq it has applied with the stored result instead of applying it
//   again, so a write retried across a leader failover happens once. A session the cluster no
//   longer knows (expired while idle, or closed) is reopened, and the write is sent again under a
//   new seq, only if no earlier attempt of it can have been applied; otherwise the call fails
//   with WriteOutcomeUnknownError rather than risk a second apply.
// - Read-your-writes: the client remembers the highest version it wrote and passes it as
//   min_version on serializable reads, so a follower answers only once it has applied it.

import * as grpc from "@grpc/grpc-js";
import { type RbdkvClient, createRbdkvClient } from "../server/grpc-service.ts";
import { Event_EventType, type KeyValue, OpType, ReadConsistency, type RangeResponse, type Event as PbEvent } from "../server/gen/rbkv.ts";
import { AddressError, parseHostPort } from "../net/host-port.ts";
import { type BackoffOptions, DEFAULT_BACKOFF, backoffDelay, sleep } from "./backoff.ts";
import { type Bytes, keyAfter, prefixEnd, text, toBytes } from "./bytes.ts";
import { type KeyValueEntry, entryOf, makeEntry } from "./entries.ts";
import { ClientError, WriteOutcomeUnknownError, statusName } from "./errors.ts";
import { leaderHintOf } from "./leader-hint.ts";
import { WatchCursor } from "./watch-cursor.ts";
import { type PutOptions, type TxnParts, type TxnResult, TxnBuilder, durationOf, txnResultOf } from "./txn.ts";

export interface ClientOptions {
  /** gRPC addresses ("host:port" or "[ipv6]:port") of one or more members. */
  endpoints: string[];
  /** Overall deadline of one call, retries included (default 10 s). */
  timeoutMs?: number;
  /** Deadline of one attempt (default 3 s, never beyond the call's). */
  attemptTimeoutMs?: number;
  /** Retry waits: uniform in [0, min(maxMs, baseMs · 2^n)) (default 25 ms, 1 s). */
  backoff?: Partial<BackoffOptions>;
  /** Idle time after which the cluster forgets the client's session (default: the server's, 5 min). */
  sessionTtlMs?: number;
  /** Credentials for every channel (default: insecure). */
  credentials?: grpc.ChannelCredentials;
  /** Extra grpc-js channel options. */
  channelOptions?: Partial<grpc.ChannelOptions>;
}

export interface CallOptions {
  /** This call's overall deadline, instead of the client's timeoutMs. */
  timeoutMs?: number;
}

export interface GetOptions extends CallOptions {
  /** Read the local copy of whichever member is asked (spread over members), not through the leader. */
  serializable?: boolean;
  /** Read the newest value at or below this version (MVCC); 0 = the latest. */
  version?: number;
  /** The member must have applied at least this version before it answers. */
  minVersion?: number;
  /**
   * Serializable reads also wait for the highest version this client wrote (default true): a
   * client reads its own writes on any member.
   */
  readYourWrites?: boolean;
}

export interface RangeOptions extends CallOptions {
  /** Keys per page (default 500; at most the server's --max-range-limit). */
  pageSize?: number;
  /** The first page is read locally by any member instead of linearizably. */
  serializable?: boolean;
  /** Read every page at this version instead of the first page's. */
  version?: number;
  /** Only keys (values come back empty). */
  keysOnly?: boolean;
}

/** Which keys a range covers: a prefix, or [key, rangeEnd) (rangeEnd "\0" = every key from key on). */
export type RangeSelector = Bytes | { key: Bytes; rangeEnd?: Bytes };

export interface RangePage {
  kvs: KeyValueEntry[];
  /** The store version every page of this iteration is read at. */
  version: number;
  /** Keys in the whole range at `version` (as counted by the first page). */
  count: number;
  /** Whether more pages follow. */
  more: boolean;
}

export interface WriteResult {
  /** The write's version (its log index). */
  version: number;
}

export interface LeaderInfo {
  addr: string;
  id: string;
  term: number;
}

export interface WatchOptions {
  /** Deliver every event after this version (default: after the version a member has applied now). */
  startVersion?: number;
  /**
   * Called when the history the watch needs was compacted away (the events in between are lost:
   * re-read what you keep). The watch then goes on from the current version. Without it, the
   * iteration ends with the OUT_OF_RANGE ClientError.
   */
  onReset?: (reset: { from: number; to: number; error: ClientError }) => void | Promise<void>;
  /** A stream that brings nothing (no event, no progress) for this long is resumed on another member (default 5000 ms). */
  idleTimeoutMs?: number;
}

export interface WatchEvent {
  type: "put" | "delete";
  key: Uint8Array;
  value: Uint8Array;
  meta: number;
  version: number;
  /** Unix ms at which the key expires; 0 = never. */
  expireAt: number;
  readonly keyText: string;
  readonly valueText: string;
}

type Route = "leader" | "any";

/** What the attempts of one call have done: whether any of them may have been applied. */
interface CallState {
  ambiguous: boolean;
}

interface Session {
  id: number;
  nextSeq: number;
}

/** A grpc error as it arrives (code, details, trailing metadata). */
function serviceErrorOf(err: unknown): grpc.ServiceError | null {
  const e = err as Partial<grpc.ServiceError> | null;
  return e && typeof e.code === "number" && typeof e.details === "string" ? (e as grpc.ServiceError) : null;
}

// The state machine's session refusals (src/storage/fsm-sessions.ts), both FAILED_PRECONDITION.
const SESSION_UNKNOWN = /client session \d+ does not exist/;
const SESSION_SEQ_TOO_OLD = /seq \d+ of client session \d+ is too old/;

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_ATTEMPT_TIMEOUT_MS = 3_000;
const DEFAULT_PAGE_SIZE = 500;
/** How long a member that failed to answer is passed over when another can be asked. */
const SUSPECT_MS = 1_000;
/** The longest a LeaderInfo probe may take. */
const LEADER_PROBE_MS = 1_000;
/** A failed leader search is not repeated sooner than this (the call backs off and asks anyone). */
const LEADER_PROBE_INTERVAL_MS = 100;

function validEndpoint(addr: string, what: string): string {
  try {
    parseHostPort(addr, what);
    return addr;
  } catch (err) {
    if (err instanceof AddressError) throw new ClientError(grpc.status.INVALID_ARGUMENT, err.message, "connect", "");
    throw err;
  }
}

export class Client {
  private readonly timeoutMs: number;
  private readonly attemptTimeoutMs: number;
  private readonly backoff: BackoffOptions;
  private readonly channels = new Map<string, RbdkvClient>();
  private readonly suspectUntil = new Map<string, number>();
  private memberAddrs: string[];
  private leaderAddr: string | null = null;
  private nextMember = 0;
  private leaderProbe: Promise<string | null> | null = null;
  private lastFailedProbe = 0;
  private session: Promise<Session> | null = null;
  private highestWritten = 0;
  private closed = false;
  /** Open watch streams: a closed channel does not end its calls, so close() cancels these. */
  private readonly streams = new Set<grpc.ClientReadableStream<unknown>>();

  private constructor(private readonly opts: ClientOptions) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.attemptTimeoutMs = opts.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS;
    this.backoff = { ...DEFAULT_BACKOFF, ...opts.backoff };
    this.memberAddrs = [...opts.endpoints];
  }

  /**
   * Connects to the cluster of `endpoints` (any one member is enough): asks for the member list,
   * retrying until timeoutMs, and fails with a ClientError when no endpoint answers.
   */
  static async connect(opts: ClientOptions): Promise<Client> {
    if (!Array.isArray(opts.endpoints) || opts.endpoints.length === 0) {
      throw new ClientError(grpc.status.INVALID_ARGUMENT, "connect needs at least one endpoint (host:port)", "connect", "");
    }
    opts.endpoints.forEach((e, i) => validEndpoint(e, `endpoint ${i + 1}`));
    for (const [name, v] of [
      ["timeoutMs", opts.timeoutMs],
      ["attemptTimeoutMs", opts.attemptTimeoutMs],
    ] as const) {
      if (v !== undefined && !(Number.isFinite(v) && v > 0)) throw new ClientError(grpc.status.INVALID_ARGUMENT, `${name} must be a positive number of ms, got ${v}`, "connect", "");
    }
    const client = new Client(opts);
    try {
      await client.refreshMembers();
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  /** The gRPC addresses of the members this client talks to. */
  get members(): readonly string[] {
    return this.memberAddrs;
  }

  /** The leader's gRPC address as last learnt, or null while unknown. */
  get leader(): string | null {
    return this.leaderAddr;
  }

  /** The highest version this client has written (0 before its first write). */
  get lastWrittenVersion(): number {
    return this.highestWritten;
  }

  /** Asks a member for the member list again (connect() does this once). */
  async refreshMembers(opts: CallOptions = {}): Promise<readonly string[]> {
    const res = await this.invoke("MemberList", "any", this.deadline(opts), (c, deadline) => c.memberListAsync({}, { deadline }), { ambiguous: false });
    const addrs: string[] = [];
    for (const m of res.members) {
      if (!m.grpcAddr) continue;
      try {
        parseHostPort(m.grpcAddr);
      } catch (err) {
        if (err instanceof AddressError) continue; // a member whose stored address cannot be dialled
        throw err;
      }
      if (!addrs.includes(m.grpcAddr)) addrs.push(m.grpcAddr);
    }
    if (addrs.length > 0) this.memberAddrs = addrs;
    const leader = res.leaderInfo?.leaderAddr;
    if (leader) this.learnLeader(leader);
    return this.memberAddrs;
  }

  /** Who leads, asked of the cluster now. */
  async leaderInfo(opts: CallOptions = {}): Promise<LeaderInfo> {
    const res = await this.invoke("LeaderInfo", "any", this.deadline(opts), (c, deadline) => c.leaderInfoAsync({}, { deadline }), { ambiguous: false });
    if (res.leaderAddr) this.learnLeader(res.leaderAddr);
    return { addr: res.leaderAddr, id: res.leaderId, term: res.term };
  }

  // ---- reads -----------------------------------------------------------------------------

  /** The key's value, or null when it does not exist (or did not at `version`). */
  async get(key: Bytes, opts: GetOptions = {}): Promise<KeyValueEntry | null> {
    const k = toBytes(key);
    const serializable = opts.serializable === true;
    const minVersion = Math.max(opts.minVersion ?? 0, serializable && opts.readYourWrites !== false ? this.highestWritten : 0);
    try {
      const res = await this.invoke(
        "Execute",
        serializable ? "any" : "leader",
        this.deadline(opts),
        (c, deadline) =>
          c.executeAsync(
            { op: OpType.Get, rc: serializable ? ReadConsistency.Serializable : ReadConsistency.Linearizable, kv: { key: k, version: opts.version ?? 0 }, minVersion },
            { deadline },
          ),
        { ambiguous: false },
      );
      return makeEntry(res.key.length > 0 ? res.key : k, res.value, res.meta, res.version, 0, 0);
    } catch (err) {
      if (err instanceof ClientError && err.code === grpc.status.NOT_FOUND) return null;
      throw err;
    }
  }

  /**
   * The pages of a range, all read at one version: the first page's (or opts.version). The first
   * page is linearizable unless `serializable`; the rest are reads at that fixed version, which
   * any member can answer, so the iteration carries on on another member when one dies.
   */
  async *range(selector: RangeSelector, opts: RangeOptions = {}): AsyncGenerator<RangePage, void, undefined> {
    let key: Uint8Array;
    let end: Uint8Array;
    if (typeof selector === "string" || selector instanceof Uint8Array) {
      key = toBytes(selector);
      end = prefixEnd(key);
    } else {
      key = toBytes(selector.key);
      end = selector.rangeEnd === undefined ? new Uint8Array(0) : toBytes(selector.rangeEnd);
    }
    const pageSize = opts.pageSize ?? DEFAULT_PAGE_SIZE;
    if (!Number.isSafeInteger(pageSize) || pageSize < 1) throw new ClientError(grpc.status.INVALID_ARGUMENT, `pageSize must be a whole number >= 1, got ${pageSize}`, "Range", "");
    let version = opts.version ?? 0;
    let count = 0;
    let first = true;
    for (;;) {
      const linearizable = first && !opts.serializable && version === 0;
      const minVersion = first && !linearizable ? this.highestWritten : 0;
      const from = key;
      const res: RangeResponse = await this.invoke(
        "Range",
        linearizable ? "leader" : "any",
        this.deadline(opts),
        (c, deadline) =>
          c.rangeAsync(
            {
              key: from,
              rangeEnd: end,
              limit: pageSize,
              version,
              keysOnly: opts.keysOnly ?? false,
              rc: linearizable ? ReadConsistency.Linearizable : ReadConsistency.Serializable,
              minVersion,
            },
            { deadline },
          ),
        { ambiguous: false },
      );
      if (first) {
        version = res.version;
        count = res.count;
        first = false;
      }
      const kvs = res.kvs.map(entryOf);
      const last: KeyValue | undefined = res.kvs[res.kvs.length - 1];
      const more = res.more && last !== undefined && end.length > 0;
      yield { kvs, version, count, more };
      if (!more) return;
      key = keyAfter(last.key);
    }
  }

  /** Every key-value pair of a range, read page by page at one version. */
  async rangeAll(selector: RangeSelector, opts: RangeOptions = {}): Promise<{ kvs: KeyValueEntry[]; version: number }> {
    const kvs: KeyValueEntry[] = [];
    let version = 0;
    for await (const page of this.range(selector, opts)) {
      kvs.push(...page.kvs);
      version = page.version;
    }
    return { kvs, version };
  }

  // ---- writes (exactly once) ----------------------------------------------------------------

  async put(key: Bytes, value: Bytes, opts: PutOptions & CallOptions = {}): Promise<WriteResult> {
    const kv = { key: toBytes(key), value: toBytes(value), meta: opts.meta ?? 0, ttl: durationOf(opts.ttlMs ?? 0) };
    const res = await this.write("Execute", this.deadline(opts), (c, sessionId, seq, deadline) => c.executeAsync({ op: OpType.Put, kv, sessionId, seq }, { deadline }));
    this.wrote(res.version);
    return { version: res.version };
  }

  async delete(key: Bytes, opts: CallOptions = {}): Promise<WriteResult> {
    const k = toBytes(key);
    const res = await this.write("Execute", this.deadline(opts), (c, sessionId, seq, deadline) => c.executeAsync({ op: OpType.Delete, kv: { key: k }, sessionId, seq }, { deadline }));
    this.wrote(res.version);
    return { version: res.version };
  }

  /** A transaction: `.if(compares).then(ops).else(ops).commit()` (see txn.ts's compare and op). */
  txn(opts: CallOptions = {}): TxnBuilder {
    return new TxnBuilder((parts) => this.commitTxn(parts, opts));
  }

  private async commitTxn(parts: TxnParts, opts: CallOptions): Promise<TxnResult> {
    const res = await this.write("Txn", this.deadline(opts), (c, sessionId, seq, deadline) => c.txnAsync({ ...parts, sessionId, seq }, { deadline }));
    this.wrote(res.version);
    return txnResultOf(res);
  }

  /**
   * Every put and delete under `prefixes` (all keys when empty), in log order, as an async
   * iterator: a stream that breaks, or a member that dies or goes silent, is resumed on another
   * member from the last delivered version — never a gap, never a duplicate. It runs until the
   * loop breaks or the client is closed.
   */
  async *watch(prefixes: Bytes | Bytes[] = [], opts: WatchOptions = {}): AsyncGenerator<WatchEvent, void, undefined> {
    const list = (Array.isArray(prefixes) ? prefixes : [prefixes]).map(toBytes);
    const idleMs = opts.idleTimeoutMs ?? 5000;
    const start = opts.startVersion ?? (await this.appliedVersion());
    const cursor = new WatchCursor(start);
    let retries = 0;
    while (!this.closed) {
      const endpoint = this.anyMember();
      const stream = this.channel(endpoint).watch({ prefixes: list, startVersion: cursor.resumeFrom(), progressNotify: true, progressIntervalMs: Math.max(50, Math.min(1000, Math.floor(idleMs / 3))) });
      let idle = false;
      let timer: ReturnType<typeof setTimeout> | null = null;
      const arm = (): void => {
        if (timer) clearTimeout(timer);
        timer = setTimeout(() => {
          idle = true;
          stream.cancel();
        }, idleMs);
      };
      arm();
      this.streams.add(stream);
      let failure: grpc.ServiceError | null = null;
      try {
        for await (const res of stream as AsyncIterable<{ event: PbEvent | undefined }>) {
          arm();
          retries = 0;
          const ev = res.event;
          if (!ev) continue;
          if (ev.type === Event_EventType.Progress) {
            cursor.progress(ev.version);
            continue;
          }
          if (ev.type !== Event_EventType.Put && ev.type !== Event_EventType.Delete) continue;
          if (!cursor.accept(ev)) continue;
          yield watchEventOf(ev);
        }
      } catch (thrown) {
        const e = serviceErrorOf(thrown);
        if (!e) throw thrown;
        failure = e;
      } finally {
        if (timer) clearTimeout(timer);
        this.streams.delete(stream);
        stream.cancel();
      }
      if (this.closed) return;
      if (failure && !idle) {
        const code = failure.code;
        if (code === grpc.status.OUT_OF_RANGE) {
          const error = new ClientError(code, failure.details, "Watch", endpoint, 1);
          if (!opts.onReset) throw error;
          const to = await this.appliedVersion();
          const from = cursor.resumeFrom();
          cursor.reset(to);
          await opts.onReset({ from, to, error });
          continue;
        }
        const resumable = code === grpc.status.UNAVAILABLE || code === grpc.status.CANCELLED || code === grpc.status.ABORTED || code === grpc.status.DEADLINE_EXCEEDED || code === grpc.status.RESOURCE_EXHAUSTED;
        if (!resumable) throw new ClientError(code, failure.details, "Watch", endpoint, 1);
      }
      // Ended, broken or silent: ask another member, after a backoff.
      this.suspect(endpoint);
      await sleep(backoffDelay(retries++, this.backoff));
    }
  }

  /** The version some member has applied now (where a watch "from now" starts). */
  private async appliedVersion(): Promise<number> {
    const st = await this.invoke("Status", "any", this.deadline({}), (c, deadline) => c.statusAsync({}, { deadline }), { ambiguous: false });
    return st.appliedIndex;
  }

  /** Closes the session (best effort) and every connection; later calls fail with CANCELLED. */
  async close(): Promise<void> {
    if (this.closed) return;
    const session = this.session;
    this.session = null;
    if (session) {
      const s = await session.catch(() => null);
      const leader = this.leaderAddr;
      if (s && leader) {
        await this.channel(leader)
          .closeSessionAsync({ sessionId: s.id }, { deadline: Date.now() + 1000 })
          .catch(() => undefined); // it expires by itself
      }
    }
    this.closed = true;
    for (const s of this.streams) s.cancel();
    this.streams.clear();
    for (const c of this.channels.values()) c.close();
    this.channels.clear();
  }

  // ---- internals -------------------------------------------------------------------------

  private deadline(opts: CallOptions): number {
    const t = opts.timeoutMs ?? this.timeoutMs;
    if (!(Number.isFinite(t) && t > 0)) throw new ClientError(grpc.status.INVALID_ARGUMENT, `timeoutMs must be a positive number of ms, got ${t}`, "call", "");
    return Date.now() + t;
  }

  private wrote(version: number): void {
    if (version > this.highestWritten) this.highestWritten = version;
  }

  private learnLeader(addr: string): void {
    try {
      parseHostPort(addr);
    } catch (err) {
      if (err instanceof AddressError) return;
      throw err;
    }
    this.leaderAddr = addr;
    if (!this.memberAddrs.includes(addr)) this.memberAddrs = [...this.memberAddrs, addr];
  }

  private channel(addr: string): RbdkvClient {
    let c = this.channels.get(addr);
    if (!c) {
      c = createRbdkvClient(addr, { credentials: this.opts.credentials, channelOptions: this.opts.channelOptions });
      this.channels.set(addr, c);
    }
    return c;
  }

  private suspect(addr: string): void {
    this.suspectUntil.set(addr, Date.now() + SUSPECT_MS);
    if (this.leaderAddr === addr) this.leaderAddr = null;
  }

  /** The next member round-robin, passing over the suspected ones while another is left. */
  private anyMember(): string {
    const now = Date.now();
    const n = this.memberAddrs.length;
    for (let i = 0; i < n; i++) {
      const addr = this.memberAddrs[(this.nextMember + i) % n]!;
      if ((this.suspectUntil.get(addr) ?? 0) <= now) {
        this.nextMember = (this.nextMember + i + 1) % n;
        return addr;
      }
    }
    const addr = this.memberAddrs[this.nextMember % n]!;
    this.nextMember = (this.nextMember + 1) % n;
    return addr;
  }

  private async pick(route: Route, deadlineAt: number): Promise<string> {
    if (route === "any") return this.anyMember();
    if (this.leaderAddr) return this.leaderAddr;
    const found = await this.findLeader(deadlineAt);
    return found ?? this.anyMember();
  }

  /** Asks every member that is not suspected who leads; the first to name a leader wins. */
  private findLeader(deadlineAt: number): Promise<string | null> {
    if (this.leaderProbe) return this.leaderProbe;
    if (Date.now() - this.lastFailedProbe < LEADER_PROBE_INTERVAL_MS) return Promise.resolve(null);
    const deadline = Math.min(deadlineAt, Date.now() + LEADER_PROBE_MS);
    const now = Date.now();
    const candidates = this.memberAddrs.filter((a) => (this.suspectUntil.get(a) ?? 0) <= now);
    const probes = (candidates.length > 0 ? candidates : this.memberAddrs).map(async (addr) => {
      const info = await this.channel(addr).leaderInfoAsync({}, { deadline });
      if (!info.leaderAddr) throw new Error("no leader known");
      return info.leaderAddr;
    });
    const probe = Promise.any(probes).then(
      (addr) => {
        this.learnLeader(addr);
        return this.leaderAddr;
      },
      () => {
        this.lastFailedProbe = Date.now();
        return null;
      },
    );
    this.leaderProbe = probe.finally(() => {
      this.leaderProbe = null;
    });
    return this.leaderProbe;
  }

  /**
   * Runs one call with retries until it succeeds, fails for good, or deadlineAt passes.
   * `state.ambiguous` is set once an attempt failed in a way that leaves its effect unknown.
   */
  private async invoke<T>(method: string, route: Route, deadlineAt: number, run: (c: RbdkvClient, deadline: number) => Promise<T>, state: CallState): Promise<T> {
    let attempts = 0;
    let retries = 0;
    let redirected = false;
    let last: { err: grpc.ServiceError; endpoint: string } | null = null;
    for (;;) {
      if (this.closed) throw new ClientError(grpc.status.CANCELLED, "the client is closed", method, last?.endpoint ?? "", attempts);
      if (Date.now() >= deadlineAt) {
        const why = last ? `gave up at the deadline; the last attempt failed with ${statusName(last.err.code)}: ${last.err.details}` : "the deadline passed before any attempt";
        throw new ClientError(grpc.status.DEADLINE_EXCEEDED, why, method, last?.endpoint ?? "", attempts);
      }
      const endpoint = await this.pick(route, deadlineAt);
      const attemptDeadline = Math.min(deadlineAt, Date.now() + this.attemptTimeoutMs);
      attempts++;
      let err: grpc.ServiceError;
      try {
        return await run(this.channel(endpoint), attemptDeadline);
      } catch (thrown) {
        const e = serviceErrorOf(thrown);
        if (!e) throw thrown; // not from the server or the channel (e.g. a value that cannot be encoded)
        err = e;
      }
      last = { err, endpoint };
      const code = err.code;
      if (code === grpc.status.FAILED_PRECONDITION) {
        const hint = leaderHintOf(err.metadata);
        if (!hint) throw new ClientError(code, err.details, method, endpoint, attempts);
        // Not the leader (nothing was applied): go where it points, at once the first time.
        this.learnLeader(hint.addr);
        if (!redirected && hint.addr !== endpoint) {
          redirected = true;
          continue;
        }
      } else if (code === grpc.status.UNAVAILABLE || code === grpc.status.CANCELLED) {
        // A dead connection, a node shutting down, or no leader known: maybe applied.
        state.ambiguous = true;
        this.suspect(endpoint);
      } else if (code === grpc.status.DEADLINE_EXCEEDED) {
        if (attemptDeadline >= deadlineAt) throw new ClientError(code, err.details, method, endpoint, attempts);
        state.ambiguous = true;
        this.suspect(endpoint);
      } else if (code === grpc.status.ABORTED) {
        // The server knows the proposal was lost: not applied; ask again.
      } else {
        throw new ClientError(code, err.details, method, endpoint, attempts);
      }
      const wait = Math.min(backoffDelay(retries++, this.backoff), Math.max(0, deadlineAt - Date.now()));
      await sleep(wait);
    }
  }

  private openSession(deadlineAt: number): Promise<Session> {
    if (!this.session) {
      const ttl = this.opts.sessionTtlMs === undefined ? undefined : durationOf(this.opts.sessionTtlMs);
      // A retried OpenSession may open two sessions; the unused one expires after its ttl.
      const opening = this.invoke("OpenSession", "leader", deadlineAt, (c, deadline) => c.openSessionAsync({ ttl }, { deadline }), { ambiguous: false }).then((r) => ({
        id: r.sessionId,
        nextSeq: 1,
      }));
      this.session = opening;
      opening.catch(() => {
        if (this.session === opening) this.session = null;
      });
    }
    return this.session;
  }

  /** A write in the client's session, retried with the same seq until it is answered. */
  private async write<T>(method: string, deadlineAt: number, send: (c: RbdkvClient, sessionId: number, seq: number, deadline: number) => Promise<T>): Promise<T> {
    const state: CallState = { ambiguous: false };
    for (;;) {
      const session = await this.openSession(deadlineAt);
      const seq = session.nextSeq++;
      try {
        return await this.invoke(method, "leader", deadlineAt, (c, deadline) => send(c, session.id, seq, deadline), state);
      } catch (err) {
        if (!(err instanceof ClientError) || err.code !== grpc.status.FAILED_PRECONDITION) throw err;
        const unknown = SESSION_UNKNOWN.test(err.details);
        const tooOld = SESSION_SEQ_TOO_OLD.test(err.details);
        if (!unknown && !tooOld) throw err;
        if (state.ambiguous) throw new WriteOutcomeUnknownError(err.code, err.details, method, err.endpoint, err.attempts);
        // Nothing of this write can have been applied: send it again under a fresh seq (and a
        // fresh session when the cluster forgot this one).
        if (unknown && this.session) {
          const current = await this.session.catch(() => null);
          if (current?.id === session.id) this.session = null;
        }
      }
    }
  }
}

function watchEventOf(ev: PbEvent): WatchEvent {
  const { key, value } = ev;
  return {
    type: ev.type === Event_EventType.Put ? "put" : "delete",
    key,
    value,
    meta: ev.meta,
    version: ev.version,
    expireAt: ev.expireAt,
    get keyText() {
      return text(key);
    },
    get valueText() {
      return text(value);
    },
  };
}

// Helpers for the end-to-end tests of the API extensions (Range, Txn, Compact, sessions, Watch
// resume, min_version): typed request builders, retries across nodes, a watch collector that
// resumes on another node, a byte model of the key space, and a TCP proxy in front of one gRPC
// address that can swallow the answers.

import { type Server, type Socket, createConnection, createServer } from "node:net";
import * as grpc from "@grpc/grpc-js";
import {
  Compare_Result,
  Compare_Target,
  type Compare,
  Event_EventType as EventType,
  type KeyValue,
  ReadConsistency,
  type RangeRequest,
  type RangeResponse,
  type RequestOp,
  type WatchResponse,
} from "../../src/server/gen/rbkv.ts";
import { type RbdkvClient, type RangeRequestInit, type WatchRequestInit, createRbdkvClient } from "../../src/server/grpc-service.ts";
import { type TestCluster, enc, sleep } from "./harness.ts";

export { Compare_Result, Compare_Target, EventType, ReadConsistency };

// ---- clients --------------------------------------------------------------------------------

/**
 * A client that reconnects quickly after its node is killed and restarted (grpc-js backs off up
 * to 2 minutes by default, which would make a restarted node look dead to the test).
 */
export function fastClient(addr: string): RbdkvClient {
  return createRbdkvClient(addr, {
    channelOptions: {
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 500,
      "grpc.min_reconnect_backoff_ms": 100,
      "grpc.max_receive_message_length": 64 << 20,
      "grpc.max_send_message_length": 64 << 20,
    },
  });
}

/** One fast-reconnecting client per node of a cluster (by node index). */
export class Clients {
  private readonly map = new Map<string, RbdkvClient>();
  constructor(private readonly c: TestCluster) {}

  of(i: number): RbdkvClient {
    const addr = this.c.nodes[i]!.spec.grpcAddr;
    let cl = this.map.get(addr);
    if (!cl) {
      cl = fastClient(addr);
      this.map.set(addr, cl);
    }
    return cl;
  }

  /** Indexes of the nodes whose process is running. */
  running(): number[] {
    return this.c.nodes.map((n, i) => (n.running ? i : -1)).filter((i) => i >= 0);
  }

  close(): void {
    for (const cl of this.map.values()) cl.close();
    this.map.clear();
  }
}

export function deadline(ms: number): { deadline: number } {
  return { deadline: Date.now() + ms };
}

export function code(err: unknown): grpc.status | undefined {
  return (err as grpc.ServiceError)?.code;
}

export function message(err: unknown): string {
  return (err as grpc.ServiceError)?.details ?? (err as Error)?.message ?? String(err);
}

/** Codes after which a request may or may not have been applied (the node died, a deadline). */
export function outcomeUnknown(err: unknown): boolean {
  const c = code(err);
  return c === grpc.status.UNAVAILABLE || c === grpc.status.DEADLINE_EXCEEDED || c === grpc.status.CANCELLED || c === grpc.status.INTERNAL || c === grpc.status.UNKNOWN;
}

/** Retries `fn` on the running nodes in turn until it answers (for reads and idempotent calls). */
export async function onAnyNode<T>(cl: Clients, what: string, fn: (client: RbdkvClient, i: number) => Promise<T>, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown = null;
  for (let attempt = 0; ; attempt++) {
    const nodes = cl.running();
    const i = nodes[attempt % Math.max(1, nodes.length)];
    if (i !== undefined) {
      try {
        return await fn(cl.of(i), i);
      } catch (err) {
        last = err;
        if (!outcomeUnknown(err) && code(err) !== grpc.status.FAILED_PRECONDITION && code(err) !== grpc.status.ABORTED) throw err;
      }
    }
    if (Date.now() > end) throw new Error(`${what}: no node answered within ${timeoutMs}ms: ${message(last)}`);
    await sleep(50);
  }
}

// ---- request builders -----------------------------------------------------------------------

export const put = (key: Uint8Array | string, value: Uint8Array | string, meta = 0): RequestOp => ({
  op: { $case: "put", value: { key: bytes(key), value: bytes(value), meta, ttl: undefined } },
});

export const del = (key: Uint8Array | string, rangeEnd: Uint8Array | string = new Uint8Array(0), prefix = false): RequestOp => ({
  op: { $case: "delete", value: { key: bytes(key), rangeEnd: bytes(rangeEnd), prefix } },
});

export const get = (key: Uint8Array | string): RequestOp => ({
  op: { $case: "range", value: rangeReq({ key: bytes(key) }) },
});

export function versionIs(key: Uint8Array | string, version: number): Compare {
  return { result: Compare_Result.EQUAL, target: Compare_Target.VERSION, key: bytes(key), version, value: new Uint8Array(0), exists: false };
}

export function compare(key: Uint8Array | string, target: Compare_Target, result: Compare_Result, arg: { version?: number; value?: Uint8Array | string; exists?: boolean }): Compare {
  return { result, target, key: bytes(key), version: arg.version ?? 0, value: bytes(arg.value ?? ""), exists: arg.exists ?? false };
}

export function rangeReq(r: RangeRequestInit): RangeRequest {
  return {
    key: r.key ?? new Uint8Array(0),
    rangeEnd: r.rangeEnd ?? new Uint8Array(0),
    prefix: r.prefix ?? false,
    limit: r.limit ?? 0,
    reverse: r.reverse ?? false,
    version: r.version ?? 0,
    keysOnly: r.keysOnly ?? false,
    countOnly: r.countOnly ?? false,
    rc: r.rc ?? ReadConsistency.RCUnknown,
    minVersion: r.minVersion ?? 0,
  } as RangeRequest;
}

export function bytes(k: Uint8Array | string): Uint8Array {
  return typeof k === "string" ? enc(k) : k;
}

/**
 * Every kv under `prefix` at one version, paged with `pageLimit`: the first page fixes the
 * version (unless `version` is given), the next ones ask from just after the last key.
 */
export async function rangeAll(client: RbdkvClient, prefix: string, opts: { version?: number; pageLimit?: number; rc?: ReadConsistency; minVersion?: number } = {}): Promise<{ kvs: KeyValue[]; version: number }> {
  const end = prefixEnd(enc(prefix));
  const kvs: KeyValue[] = [];
  let from = enc(prefix);
  let version = opts.version ?? 0;
  for (;;) {
    const r: RangeResponse = await client.rangeAsync(
      { key: from, rangeEnd: end ?? new Uint8Array([0]), limit: opts.pageLimit ?? 500, version, rc: opts.rc ?? ReadConsistency.Linearizable, minVersion: opts.minVersion ?? 0 },
      deadline(10_000),
    );
    if (version === 0) version = r.version;
    else if (r.version !== version) throw new Error(`a page at version ${version} answered version ${r.version}`);
    kvs.push(...r.kvs);
    if (!r.more) return { kvs, version };
    if (r.kvs.length === 0) throw new Error("more=true with an empty page");
    from = after(r.kvs[r.kvs.length - 1]!.key);
  }
}

/** The smallest key greater than `k`: k ‖ 0x00. */
export function after(k: Uint8Array): Uint8Array {
  const out = new Uint8Array(k.byteLength + 1);
  out.set(k);
  return out;
}

/** The smallest key greater than every key that starts with `prefix`; null = no bound. */
export function prefixEnd(prefix: Uint8Array): Uint8Array | null {
  for (let i = prefix.byteLength - 1; i >= 0; i--) {
    if (prefix[i]! < 0xff) {
      const end = prefix.slice(0, i + 1);
      end[i]! += 1;
      return end;
    }
  }
  return null;
}

export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.byteLength, b.byteLength);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.byteLength - b.byteLength;
}

/** A printable, unambiguous form of a key (for messages and map keys). */
export function hex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex");
}

// ---- watch collector ------------------------------------------------------------------------

export interface SeenEvent {
  type: number;
  key: string; // hex
  value: string; // hex
  version: number;
  /** Node index the event came from. */
  node: number;
}

/**
 * A watcher that keeps every event it receives, and when its stream dies (its node was killed)
 * resumes on another running node from what it has: start_version = the last version it holds
 * completely. A version can carry several events (a txn); if the stream died inside one, it
 * resumes from the version before and skips, once each, the events of that version it already
 * has (a second copy would be counted, and caught by the checks).
 */
export class ResumingWatcher {
  readonly events: SeenEvent[] = [];
  readonly progress: { version: number; at: number; node: number }[] = [];
  readonly streams: { node: number; startVersion: number; endedWith: string }[] = [];
  /** Violations of "no event at or below a Progress version" (the meaning of Progress). */
  readonly progressViolations: string[] = [];
  node = -1;
  private stream: grpc.ClientReadableStream<WatchResponse> | null = null;
  private stopped = false;
  private lastProgress = 0;
  private skip = new Set<string>(); // key hex at `skipVersion` already held
  private skipVersion = -1;
  private readonly done: Promise<void>;
  private wake: (() => void) | null = null;

  constructor(
    private readonly cl: Clients,
    private readonly req: WatchRequestInit,
    firstNode: number,
    /** Which of the running nodes to resume on (default: a random one). */
    private readonly prefer: (candidates: number[]) => number | undefined = () => undefined,
  ) {
    this.done = this.run(firstNode);
  }

  get lastVersion(): number {
    const e = this.events[this.events.length - 1];
    return Math.max(e ? e.version : (this.req.startVersion ?? 0), this.lastProgress);
  }

  private async run(firstNode: number): Promise<void> {
    let node = firstNode;
    let start = this.req.startVersion ?? 0;
    while (!this.stopped) {
      const endedWith = await this.once(node, start);
      if (this.stopped) break;
      // Resume: the last version held completely.
      const last = this.events[this.events.length - 1];
      if (last && last.version > this.lastProgress) {
        start = last.version - 1;
        this.skipVersion = last.version;
        this.skip = new Set(this.events.filter((e) => e.version === last.version).map((e) => `${e.type}:${e.key}`));
      } else {
        start = Math.max(this.lastProgress, last?.version ?? start);
        this.skipVersion = -1;
        this.skip.clear();
      }
      this.streams[this.streams.length - 1]!.endedWith = endedWith;
      // Another running node than the one that failed, if there is one.
      await sleep(50);
      for (let t = 0; !this.stopped; t++) {
        const nodes = this.cl.running().filter((i) => i !== node);
        if (nodes.length > 0) {
          const p = this.prefer(nodes);
          node = p !== undefined && nodes.includes(p) ? p : nodes[Math.floor(Math.random() * nodes.length)]!;
          break;
        }
        await sleep(50);
      }
    }
  }

  private once(node: number, startVersion: number): Promise<string> {
    this.node = node;
    this.streams.push({ node, startVersion, endedWith: "" });
    return new Promise<string>((resolve) => {
      const s = this.cl.of(node).watch({ ...this.req, startVersion, eventCapacity: this.req.eventCapacity ?? 1_000_000 });
      this.stream = s;
      let ended = false;
      const end = (why: string): void => {
        if (ended) return;
        ended = true;
        resolve(why);
      };
      s.on("data", (r: WatchResponse) => {
        const ev = r.event;
        if (!ev) return;
        if (ev.type === EventType.Progress) {
          this.progress.push({ version: ev.version, at: Date.now(), node });
          this.lastProgress = Math.max(this.lastProgress, ev.version);
          this.wake?.();
          return;
        }
        if (ev.version <= this.lastProgress) {
          this.progressViolations.push(`event ${ev.type} ${hex(ev.key)}@${ev.version} after Progress ${this.lastProgress} (node ${node})`);
        }
        const k = hex(ev.key);
        if (ev.version === this.skipVersion && this.skip.delete(`${ev.type}:${k}`)) return;
        this.events.push({ type: ev.type, key: k, value: hex(ev.value), version: ev.version, node });
        this.wake?.();
      });
      s.on("error", (err: grpc.ServiceError) => end(`${grpc.status[err.code] ?? err.code}: ${err.details}`));
      s.on("end", () => end("end"));
      s.on("close", () => end("close"));
    });
  }

  /** Waits until `pred` holds (checked on every event). */
  async until(what: string, pred: () => boolean, timeoutMs: number): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!pred()) {
      if (Date.now() > end) throw new Error(`watcher: timed out after ${timeoutMs}ms waiting for ${what} (have ${this.events.length} events, last version ${this.lastVersion}, streams ${JSON.stringify(this.streams)})`);
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 100);
      });
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stream?.cancel();
    await this.done;
  }
}

/** The first error of a watch stream (for requests that must be refused). */
export function watchError(client: RbdkvClient, req: WatchRequestInit, timeoutMs = 10_000): Promise<grpc.ServiceError | "no error"> {
  return new Promise((resolve) => {
    const s = client.watch(req);
    const timer = setTimeout(() => {
      s.cancel();
      resolve("no error");
    }, timeoutMs);
    s.on("data", () => {});
    s.on("error", (err: grpc.ServiceError) => {
      clearTimeout(timer);
      resolve(err);
    });
  });
}

// ---- a proxy in front of one gRPC address ---------------------------------------------------

/**
 * Pipes TCP connections to `target`. With `swallowAnswers` set, bytes from the server to the
 * client are dropped: a request gets through, its answer never comes back (as when the
 * connection dies after the server acted on it).
 */
export class AnswerSwallowingProxy {
  swallowAnswers = false;
  private server: Server | null = null;
  private readonly socks = new Set<Socket>();
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  async start(): Promise<string> {
    const srv = createServer({ noDelay: true }, (client) => {
      const up = createConnection({ host: this.target.host, port: this.target.port, noDelay: true });
      this.socks.add(client);
      this.socks.add(up);
      client.on("error", () => {});
      up.on("error", () => {});
      client.on("data", (d) => up.write(d));
      up.on("data", (d) => {
        if (!this.swallowAnswers) client.write(d);
      });
      client.on("close", () => up.destroy());
      up.on("close", () => client.destroy());
    });
    await new Promise<void>((resolve, reject) => {
      srv.once("error", reject);
      srv.listen(0, "127.0.0.1", () => resolve());
    });
    this.server = srv;
    const a = srv.address();
    this.port = typeof a === "object" && a ? a.port : 0;
    return `127.0.0.1:${this.port}`;
  }

  async stop(): Promise<void> {
    for (const s of this.socks) s.destroy();
    this.socks.clear();
    const srv = this.server;
    this.server = null;
    if (srv) await new Promise<void>((r) => srv.close(() => r()));
  }
}

export function hostPort(addr: string): { host: string; port: number } {
  const i = addr.lastIndexOf(":");
  return { host: addr.slice(0, i), port: Number(addr.slice(i + 1)) };
}

// ---- misc -----------------------------------------------------------------------------------

/** A seeded PRNG (mulberry32): a failing run can be replayed with its seed. */
export function prng(seed: number): { float(): number; int(lo: number, hi: number): number; pick<T>(a: readonly T[]): T } {
  let s = seed >>> 0;
  const float = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    float,
    int: (lo, hi) => lo + Math.floor(float() * (hi - lo + 1)),
    pick: <T>(a: readonly T[]): T => a[Math.floor(float() * a.length)]!,
  };
}

export function seedFromEnv(name: string): number {
  const v = process.env[name];
  const seed = v ? Number(v) : Math.floor(Math.random() * 2 ** 31);
  console.log(`${name}=${seed}`);
  return seed;
}

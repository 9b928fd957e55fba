// The bank workload: N accounts under "bank/acct/", whose balances only ever move between
// accounts, so their sum never changes.
//
//   transfer clients  each opens ONE client session (OpenSession) and then, in a loop, reads all
//                     accounts (one Range at one version, through a random node, linearizable or
//                     serializable with min_version = its own last write), picks two accounts and
//                     an amount, and sends a Txn to a random node:
//                       compare  VERSION(from) = v_from, VERSION(to) = v_to
//                       success  put from = b_from - amount, put to = b_to + amount,
//                                put bank/xfer/<client>/<n> = "<from>><to>:<amount>"
//                     under (session, seq) with a fresh seq per transfer. An indeterminate failure
//                     (UNAVAILABLE, DEADLINE_EXCEEDED, a lost connection, no leader, ...) is
//                     retried with the SAME (session, seq) on another node until an answer comes
//                     back (the server returns the stored result of an applied seq): every
//                     transfer ends answered (succeeded or compare failed) or, only when retries
//                     run out or the session is lost, of unknown outcome.
//   readers           Range reads of all accounts through random nodes: linearizable, serializable,
//                     paged (limit 3) at the version of their first page, or at an older version
//                     (MVCC) — each a complete picture of the accounts at one version.
//
// Checked by bank-check.ts with the final state read by readFinal().

import * as grpc from "@grpc/grpc-js";
import { type KeyValue, type RangeResponse, ReadConsistency, type TxnRequest } from "../../src/server/gen/rbkv.ts";
import type { DeepPartial } from "../../src/server/gen/rbkv.ts";
import type { Prng } from "../sim/prng.ts";
import { dec, enc, sleep } from "../e2e/harness.ts";
import { type Outcome, call, codeName, now } from "./client.ts";
import { type Latencies, type RunCtx, recordLatency } from "./workloads.ts";

export const BANK_PREFIX = "bank/";
export const ACCT_PREFIX = "bank/acct/";
export const XFER_PREFIX = "bank/xfer/";

/** Account keys sort in account order (two digits). */
export function acctKey(i: number): string {
  return `${ACCT_PREFIX}${String(i).padStart(2, "0")}`;
}

export function xferValue(from: number, to: number, amount: number): string {
  return `${from}>${to}:${amount}`;
}

export function parseXferValue(v: string): { from: number; to: number; amount: number } | null {
  const m = /^(\d+)>(\d+):(\d+)$/.exec(v);
  return m ? { from: Number(m[1]), to: Number(m[2]), amount: Number(m[3]) } : null;
}

export type TransferStatus = "succeeded" | "compare-failed" | "failed" | "unknown";

export interface BankTransfer {
  client: number;
  session: number;
  seq: number;
  /** The unique key the transfer's txn puts (bank/xfer/<client>/<n>). */
  xfer: string;
  from: number;
  to: number;
  amount: number;
  /** The versions compared (what the client read). */
  fromVersion: number;
  toVersion: number;
  invoke: number;
  /** When the answer arrived (null: none did). */
  complete: number | null;
  status: TransferStatus;
  /** The txn's version (its log index) when answered. */
  version: number;
  /** Failed attempts before the answer: "nodeN CODE". */
  retries: string[];
  /** How many of them may have applied the txn (anything but a certain refusal). */
  indeterminate: number;
  detail?: string;
}

export interface BankRead {
  reader: string;
  node: number;
  kind: "linearizable" | "serializable" | "paged" | "at-version";
  /** Requested version (at-version and the later pages of a paged read); 0 = latest. */
  atVersion: number;
  minVersion: number;
  invoke: number;
  complete: number;
  /** The version every page was read at (response.version of each page, in order). */
  pageVersions: number[];
  /** Every key returned, in order, with its value and version. */
  kvs: { key: string; value: string; version: number }[];
  /** RangeResponse.count of the first page. */
  count: number;
}

/** One node's bank keys at the end. */
export interface BankFinal {
  node: number;
  version: number;
  kvs: { key: string; value: string; version: number; createVersion: number }[];
}

export interface BankSetup {
  initial: number[];
  version: number;
}

export interface BankOptions {
  accounts: number;
  initialBalance: number;
  readers: number;
  /** How long one transfer keeps retrying its (session, seq) before it is given up as unknown. */
  retryBudgetMs: number;
}

export const DEFAULT_BANK: BankOptions = { accounts: 10, initialBalance: 100, readers: 2, retryBudgetMs: 60_000 };

type Code = grpc.status;

function other(rng: Prng, n: number, not: number): number {
  if (n <= 1) return 0;
  return (not + 1 + rng.int(0, n - 2)) % n;
}

function kvsOf(r: RangeResponse): { key: string; value: string; version: number }[] {
  return r.kvs.map((kv: KeyValue) => ({ key: dec(kv.key), value: dec(kv.value), version: kv.version }));
}

/** A FAILED_PRECONDITION about the session itself (unknown / expired / seq too old). */
function isSessionError(code: Code, details: string): boolean {
  return code === grpc.status.FAILED_PRECONDITION && /session/i.test(details);
}

/** The request was certainly not applied by this attempt (it never reached a log). */
function neverSent(code: Code, details: string): boolean {
  if (code === grpc.status.ABORTED || code === grpc.status.FAILED_PRECONDITION) return true;
  // grpc-js had no connection; or the node refused before proposing ("not the leader and no
  // leader is known", src/node/errors.ts NotLeaderError).
  return code === grpc.status.UNAVAILABLE && /^(No connection established|not the leader)/.test(details);
}

export class BankWorkload {
  readonly transfers: BankTransfer[] = [];
  readonly reads: BankRead[] = [];
  readonly latencies: Latencies = {};
  /** Failed reads (dropped from the check): "kind CODE". */
  readonly failedReads: string[] = [];
  /** Sessions opened (one per client, plus any reopened after a lost session). */
  readonly sessions: { client: number; id: number }[] = [];
  setupResult: BankSetup | null = null;
  /** Highest version any answer carried (for the readers' at-version choice). */
  private maxVersion = 0;

  constructor(
    private readonly ctx: RunCtx,
    private readonly rngs: Prng[],
    private readonly readerRngs: Prng[],
    readonly opts: BankOptions = DEFAULT_BANK,
  ) {}

  get total(): number {
    return this.opts.accounts * this.opts.initialBalance;
  }

  private node(rng: Prng): number {
    return rng.int(0, this.ctx.cluster.size - 1);
  }

  /** Opens a session, retrying (a lost answer leaks a session: harmless). */
  private async openSession(rng: Prng, client: number, untilMs: number): Promise<number> {
    let last = "";
    while (Date.now() < untilMs) {
      const node = this.node(rng);
      const out = await call(true, () => this.ctx.cluster.clients[node]!.client.openSessionAsync({ ttl: { seconds: 300, nanos: 0 } }, { deadline: Date.now() + this.ctx.opTimeoutMs }));
      if (out.ok) {
        this.sessions.push({ client, id: out.value.sessionId });
        this.ctx.record({ w: "bank-session", client, node, session: out.value.sessionId });
        return out.value.sessionId;
      }
      last = `node${node + 1} ${codeName(out.code)}: ${out.details}`;
      if (out.code === grpc.status.UNIMPLEMENTED) throw new Error(`bank: OpenSession is not implemented by the server (${last})`);
      await sleep(rng.int(50, 300));
    }
    throw new Error(`bank: client ${client} could not open a session: ${last}`);
  }

  /**
   * Sends one txn under (session, seq) until it gets an answer, retrying the same (session,
   * seq) on another node after every indeterminate failure.
   */
  private async sendTxn(rng: Prng, req: DeepPartial<TxnRequest>, firstNode: number, t: BankTransfer, budgetUntil: number): Promise<void> {
    const { cluster, opTimeoutMs } = this.ctx;
    let node = firstNode;
    let mayHaveApplied = false;
    for (let attempt = 0; ; attempt++) {
      const out = await call(true, () => cluster.clients[node]!.client.txnAsync(req, { deadline: Date.now() + opTimeoutMs }));
      if (out.ok) {
        t.complete = now();
        t.status = out.value.succeeded ? "succeeded" : "compare-failed";
        t.version = out.value.version;
        this.maxVersion = Math.max(this.maxVersion, out.value.version);
        return;
      }
      const what = `node${node + 1} ${codeName(out.code)}: ${out.details.slice(0, 120)}`;
      t.retries.push(what);
      if (out.code === grpc.status.UNIMPLEMENTED) throw new Error(`bank: Txn is not implemented by the server (${what})`);
      if (out.code === grpc.status.INVALID_ARGUMENT || isSessionError(out.code, out.details)) {
        // An answer about the request itself. Definite only if no earlier attempt may have
        // applied it: a session lost after a lost answer leaves the outcome unknown.
        t.status = mayHaveApplied ? "unknown" : "failed";
        t.detail = what;
        return;
      }
      if (!neverSent(out.code, out.details)) {
        mayHaveApplied = true;
        t.indeterminate++;
      }
      if (Date.now() > budgetUntil) {
        t.status = mayHaveApplied ? "unknown" : "failed";
        t.detail = `gave up after ${attempt + 1} attempts: ${what}`;
        return;
      }
      await sleep(rng.int(30, 200));
      node = other(rng, cluster.size, node);
    }
  }

  /** Writes the accounts (one txn, its own session) on the healthy cluster, before any fault. */
  async setup(): Promise<BankSetup> {
    const rng = this.rngs[0]!.fork();
    const until = Date.now() + 30_000;
    const session = await this.openSession(rng, -1, until);
    const initial = Array.from({ length: this.opts.accounts }, () => this.opts.initialBalance);
    const req: DeepPartial<TxnRequest> = {
      compare: [],
      success: initial.map((b, i) => ({ op: { $case: "put" as const, value: { key: enc(acctKey(i)), value: enc(String(b)) } } })),
      failure: [],
      sessionId: session,
      seq: 1,
    };
    for (let i = 0; i < this.opts.accounts; i++) this.ctx.attempted.add(acctKey(i));
    const t: BankTransfer = { client: -1, session, seq: 1, xfer: "", from: -1, to: -1, amount: 0, fromVersion: 0, toVersion: 0, invoke: now(), complete: null, status: "unknown", version: 0, retries: [], indeterminate: 0 };
    await this.sendTxn(rng, req, this.node(rng), t, until);
    if (t.status !== "succeeded") throw new Error(`bank: setup txn ended ${t.status}: ${t.detail ?? t.retries.at(-1) ?? ""}`);
    this.setupResult = { initial, version: t.version };
    this.maxVersion = t.version;
    this.ctx.record({ w: "bank-setup", session, version: t.version, initial });
    return this.setupResult;
  }

  run(): Promise<void> {
    return Promise.all([...this.rngs.map((rng, c) => this.client(c, rng)), ...this.readerRngs.map((rng, r) => this.reader(r, rng))]).then(() => {});
  }

  /** One read of every account at one version, paged when limit > 0. */
  private async readAll(node: number, kind: BankRead["kind"], reader: string, minVersion: number, atVersion: number): Promise<Outcome<BankRead>> {
    const { cluster, opTimeoutMs } = this.ctx;
    const c = cluster.clients[node]!.client;
    const rc = kind === "linearizable" ? ReadConsistency.Linearizable : ReadConsistency.Serializable;
    const limit = kind === "paged" ? 3 : 0;
    const invoke = now();
    const first = await call(false, () =>
      c.rangeAsync({ key: enc(ACCT_PREFIX), prefix: true, rc, minVersion, version: atVersion, limit }, { deadline: Date.now() + opTimeoutMs }),
    );
    if (!first.ok) return first;
    const read: BankRead = { reader, node, kind, atVersion, minVersion, invoke, complete: 0, pageVersions: [first.value.version], kvs: kvsOf(first.value), count: first.value.count };
    let page = first.value;
    for (let pages = 1; page.more && pages < 100; pages++) {
      const lastKey = page.kvs.at(-1)!.key;
      // Just after the last key: the same bytes plus a zero byte.
      const from = new Uint8Array(lastKey.length + 1);
      from.set(lastKey);
      const end = enc(ACCT_PREFIX.slice(0, -1) + String.fromCharCode(ACCT_PREFIX.charCodeAt(ACCT_PREFIX.length - 1) + 1));
      const version = read.pageVersions[0]!;
      const next = await call(false, () => c.rangeAsync({ key: from, rangeEnd: end, rc: ReadConsistency.Serializable, version, limit }, { deadline: Date.now() + opTimeoutMs }));
      if (!next.ok) return next;
      page = next.value;
      read.pageVersions.push(page.version);
      read.kvs.push(...kvsOf(page));
    }
    read.complete = now();
    return { ok: true, value: read };
  }

  private noteRead(o: Outcome<BankRead>, kind: string, node: number): BankRead | null {
    if (!o.ok) {
      this.failedReads.push(`${kind} ${codeName(o.code)}`);
      if (o.code === grpc.status.UNIMPLEMENTED) throw new Error(`bank: Range is not implemented by the server (node${node + 1}: ${o.details})`);
      return null;
    }
    const r = o.value;
    this.reads.push(r);
    this.maxVersion = Math.max(this.maxVersion, r.pageVersions[0]!);
    recordLatency(this.latencies, "bank-read", r.complete - r.invoke);
    this.ctx.record({ w: "bank-read", ...r, kvs: r.kvs.map((k) => `${k.key.slice(ACCT_PREFIX.length)}=${k.value}@${k.version}`).join(" ") });
    return r;
  }

  private async client(c: number, rng: Prng): Promise<void> {
    const { cluster } = this.ctx;
    const n = this.opts.accounts;
    let session = await this.openSession(rng, c, Date.now() + 60_000);
    let seq = 0;
    let lastWrite = 0;
    let xferNo = 0;
    while (Date.now() < this.ctx.deadline) {
      // Read every account, at one version.
      const rnode = this.node(rng);
      const lin = rng.chance(0.5);
      const got = this.noteRead(await this.readAll(rnode, lin ? "linearizable" : "serializable", `client${c}`, lin ? 0 : lastWrite, 0), "transfer-read", rnode);
      if (!got) {
        await sleep(rng.int(20, 150));
        continue;
      }
      const from = rng.int(0, n - 1);
      const to = other(rng, n, from);
      const amountPick = rng.int(1, 5);
      const fa = got.kvs.find((k) => k.key === acctKey(from));
      const ta = got.kvs.find((k) => k.key === acctKey(to));
      if (!fa || !ta) {
        await sleep(rng.int(20, 150));
        continue; // the invariant check reports a read that misses an account
      }
      const fb = Number(fa.value);
      const tb = Number(ta.value);
      if (!(fb > 0)) continue;
      const amount = Math.min(amountPick, fb);
      seq++;
      const xfer = `${XFER_PREFIX}${c}/${xferNo++}`;
      this.ctx.attempted.add(xfer);
      const t: BankTransfer = { client: c, session, seq, xfer, from, to, amount, fromVersion: fa.version, toVersion: ta.version, invoke: now(), complete: null, status: "unknown", version: 0, retries: [], indeterminate: 0 };
      const put = (key: string, value: string) => ({ op: { $case: "put" as const, value: { key: enc(key), value: enc(value) } } });
      const req: DeepPartial<TxnRequest> = {
        compare: [
          { target: 0 /* VERSION */, result: 0 /* EQUAL */, key: enc(acctKey(from)), version: fa.version },
          { target: 0, result: 0, key: enc(acctKey(to)), version: ta.version },
        ],
        success: [put(acctKey(from), String(fb - amount)), put(acctKey(to), String(tb + amount)), put(xfer, xferValue(from, to, amount))],
        failure: [],
        sessionId: session,
        seq,
      };
      await this.sendTxn(rng, req, this.node(rng), t, Date.now() + this.opts.retryBudgetMs);
      this.transfers.push(t);
      this.ctx.record({ w: "bank-xfer", ...t });
      if (t.complete !== null) recordLatency(this.latencies, "bank-xfer", t.complete - t.invoke);
      if (t.status === "succeeded") lastWrite = Math.max(lastWrite, t.version);
      if (t.detail && /session/i.test(t.detail)) {
        session = await this.openSession(rng, c, Date.now() + 60_000);
        seq = 0;
      }
      if (t.status !== "succeeded") await sleep(rng.int(5, 60));
    }
    void cluster;
  }

  private async reader(r: number, rng: Prng): Promise<void> {
    const name = `reader${r}`;
    while (Date.now() < this.ctx.deadline) {
      await sleep(rng.int(20, 120));
      const node = this.node(rng);
      const x = rng.float();
      const kind: BankRead["kind"] = x < 0.35 ? "linearizable" : x < 0.65 ? "serializable" : x < 0.85 ? "paged" : "at-version";
      // An older version of the store: anything between the setup and the newest seen.
      const setupV = this.setupResult?.version ?? 0;
      const atVersion = kind === "at-version" && this.maxVersion > setupV ? rng.int(setupV, this.maxVersion) : 0;
      this.noteRead(await this.readAll(node, kind, name, 0, atVersion), kind, node);
    }
  }

  /** Every bank key on every node (serializable, paged at one version), after recovery. */
  async readFinal(): Promise<BankFinal[]> {
    const { cluster } = this.ctx;
    const out: BankFinal[] = [];
    const end = enc("bank0"); // "bank/" + 1: every key under bank/
    for (let i = 0; i < cluster.size; i++) {
      const c = cluster.clients[i]!.client;
      let last = "";
      for (let attempt = 0; ; attempt++) {
        try {
          const f: BankFinal = { node: i, version: 0, kvs: [] };
          let key = enc(BANK_PREFIX);
          for (;;) {
            const r = await c.rangeAsync({ key, rangeEnd: end, rc: ReadConsistency.Serializable, version: f.version, limit: 500 }, { deadline: Date.now() + 10_000 });
            if (f.version === 0) f.version = r.version;
            for (const kv of r.kvs) f.kvs.push({ key: dec(kv.key), value: dec(kv.value), version: kv.version, createVersion: kv.createVersion });
            if (!r.more || r.kvs.length === 0) break;
            const lk = r.kvs.at(-1)!.key;
            key = new Uint8Array(lk.length + 1);
            key.set(lk);
          }
          out.push(f);
          break;
        } catch (err) {
          last = (err as Error).message;
          if (attempt >= 5) throw new Error(`node${i + 1}: cannot read the bank after the run: ${last}`);
          await sleep(300);
        }
      }
    }
    return out;
  }
}

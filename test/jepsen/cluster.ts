// A cluster of real ./rbkv processes for the Jepsen harness: every node's Raft traffic goes
// through our TCP proxy (so links can be cut), and the cluster can SIGKILL, SIGSTOP/SIGCONT,
// restart, heal and wait for recovery. Built on the end-to-end harness's RbkvProcess.

import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { RbkvProcess, freePort, requireBinary, sleep } from "../e2e/harness.ts";
import type { MemberListResponse, StatusResponse } from "../../src/server/gen/rbkv.ts";
import { NodeClient } from "./client.ts";
import { RPC_TIMEOUT_MS, answerOf } from "./answers.ts";
import { NetProxy } from "./proxy.ts";

export interface ClusterOptions {
  nodes: number;
  /** Data directories go under root/nodeN. */
  root: string;
  electionMs: number;
  heartbeatMs: number;
  /** More flags for every node. */
  extraArgs?: string[];
  /** Called with every event worth a line in the faults log. */
  log?: (line: string) => void;
}

/** Hears an RPC's answer: "OK", a gRPC code name, or NOT_LEADER (a redirect). */
export type AnswerSink = (answer: string, details: string) => void;

export interface Crash {
  node: number;
  code: number | null;
  at: number;
}

export interface NodeRaftState {
  id: string;
  state: string;
  term: number;
  commit: number;
  applied: number;
  leader: string;
  voters: number;
  learners: number;
  /** This node's own view: it is a learner. */
  isLearner: boolean;
  keys: number;
}

export class JepsenCluster {
  readonly nodes: RbkvProcess[] = [];
  readonly ids: string[] = [];
  /** Each node's advertised Raft address: its listener on the proxy (what the members dial). */
  readonly raftAddrs: string[] = [];
  readonly clients: NodeClient[] = [];
  readonly proxy: NetProxy;
  readonly paused = new Set<number>();
  /** Processes beside the cluster (the restore check's new cluster): logs copied, killed at the end. */
  readonly extraProcesses: RbkvProcess[] = [];
  /** Processes that exited without us asking (a crash or a refused start). */
  readonly crashes: Crash[] = [];
  private readonly expectedExit = new WeakSet<object>();
  private readonly startedAt = Date.now();

  private constructor(
    readonly opts: ClusterOptions,
    grpcPorts: number[],
    raftPorts: number[],
    proxyPorts: number[],
  ) {
    for (let i = 0; i < opts.nodes; i++) {
      const grpcAddr = `127.0.0.1:${grpcPorts[i]}`;
      this.ids.push(grpcAddr);
      this.raftAddrs.push(`127.0.0.1:${proxyPorts[i]}`);
      this.nodes.push(
        new RbkvProcess({
          name: `node${i + 1}`,
          grpcAddr,
          raftAddr: `127.0.0.1:${raftPorts[i]}`,
          dir: join(opts.root, `node${i + 1}`),
          extra: [
            `--raft-advertise-addr=${this.raftAddrs[i]}`,
            `--election-timeout=${opts.electionMs}`,
            `--heartbeat-interval=${opts.heartbeatMs}`,
            ...(opts.extraArgs ?? []),
          ],
        }),
      );
      this.clients.push(new NodeClient(grpcAddr));
    }
    this.proxy = new NetProxy(this.ids.map((id, i) => ({ id, listenPort: proxyPorts[i]!, targetPort: raftPorts[i]! })));
  }

  static async create(opts: ClusterOptions): Promise<JepsenCluster> {
    requireBinary();
    mkdirSync(opts.root, { recursive: true });
    const used = new Set<number>();
    const port = async (): Promise<number> => {
      for (let i = 0; i < 50; i++) {
        const p = await freePort();
        if (!used.has(p)) {
          used.add(p);
          return p;
        }
      }
      throw new Error("no free port");
    };
    const g: number[] = [];
    const r: number[] = [];
    const p: number[] = [];
    for (let i = 0; i < opts.nodes; i++) {
      g.push(await port());
      r.push(await port());
      p.push(await port());
    }
    const c = new JepsenCluster(opts, g, r, p);
    await c.proxy.start();
    return c;
  }

  get size(): number {
    return this.nodes.length;
  }

  private log(line: string): void {
    this.opts.log?.(line);
  }

  /** ms since the cluster object was made. */
  elapsed(): number {
    return Date.now() - this.startedAt;
  }

  private launch(i: number, joinAddr?: string): void {
    const n = this.nodes[i]!;
    n.start(joinAddr ? { join: joinAddr } : {});
    const p = n.proc!;
    void p.exited.then((code) => {
      if (!this.expectedExit.has(p)) {
        this.crashes.push({ node: i, code, at: this.elapsed() });
        this.log(`node${i + 1} EXITED on its own with code ${code}`);
      }
    });
  }

  /**
   * The seed's recipe: node 1 bootstraps, the others join through it; waits until they are all
   * voters. `later` nodes are left out, to be added under load with joinLater().
   */
  async start(timeoutMs = 60_000, later: number[] = []): Promise<void> {
    for (const i of later) this.notJoined.add(i);
    this.launch(0);
    await this.waitServing(0, timeoutMs);
    const members = [...Array(this.size).keys()].filter((i) => !this.notJoined.has(i));
    for (const i of members) if (i !== 0) this.launch(i, this.ids[0]);
    await this.until(`${members.length} voters`, timeoutMs, async () => {
      for (const i of members) {
        const st = await this.raftState(i);
        if (st.voters !== members.length) return false;
      }
      return true;
    });
  }

  /** Nodes not yet added to the cluster (see start's `later`). */
  readonly notJoined = new Set<number>();
  /** Nodes added with --join-addr: they keep passing it (joining again is harmless). */
  private readonly joinVia = new Map<number, string>();

  /** Starts node i with --join-addr=<a member's gRPC address>: a node added under load. */
  joinLater(i: number, via: number): void {
    this.notJoined.delete(i);
    this.joinVia.set(i, this.ids[via]!);
    this.launch(i, this.ids[via]);
  }

  /**
   * Removes node i through node `via` (RemoveMember) and waits for its process to stop on its
   * own, as a removed member must. `removed` is false when the request failed and the node still
   * runs (e.g. no leader at that moment); an answer lost in flight may still remove it.
   */
  async removeMember(i: number, via: number, timeoutMs = 20_000, onAnswer?: AnswerSink): Promise<{ removed: boolean; exitCode: number | null; detail: string }> {
    const p = this.nodes[i]!.proc;
    if (!p) return { removed: false, exitCode: null, detail: `node${i + 1} is not running` };
    this.expectedExit.add(p);
    const detail = await this.requestRemoval(i, via, 10_000, onAnswer);
    const exited = await Promise.race([p.exited, sleep(detail ? 3000 : timeoutMs).then(() => "running" as const)]);
    if (exited === "running") {
      if (detail) {
        this.expectedExit.delete(p);
        return { removed: false, exitCode: null, detail };
      }
      return { removed: true, exitCode: null, detail: `node${i + 1} still runs ${timeoutMs} ms after its removal was acknowledged` };
    }
    this.nodes[i]!.proc = null;
    return { removed: true, exitCode: exited, detail: detail ? `the request failed (${detail}) but the node was removed` : "" };
  }

  /**
   * Sends RemoveMember for node i (which may be down) through node `via`, retrying while there
   * is no leader; returns the error text of the last attempt, or "" on success. `onAnswer` hears
   * every attempt's answer (OK, a code name, NOT_LEADER for a redirect).
   */
  async requestRemoval(i: number, via: number, timeoutMs = 20_000, onAnswer?: AnswerSink): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let last = "";
    while (Date.now() < deadline) {
      try {
        await this.clients[via]!.client.removeMemberAsync({ id: this.ids[i]! }, { deadline: Date.now() + RPC_TIMEOUT_MS });
        onAnswer?.("OK", "");
        return "";
      } catch (err) {
        last = (err as Error).message;
        const a = answerOf(err);
        onAnswer?.(a.answer, a.details);
        if (a.answer === "NOT_FOUND") return ""; // an earlier attempt went through
      }
      await sleep(300);
    }
    return last;
  }

  /**
   * Starts node i on its old data after its removal: the members must tell it, and it must stop
   * by itself. Returns its exit code, or null if it still runs after timeoutMs (then killed).
   */
  async startRemoved(i: number, timeoutMs = 20_000): Promise<number | null> {
    const n = this.nodes[i]!;
    n.start();
    const p = n.proc!;
    this.expectedExit.add(p);
    const r = await Promise.race([p.exited, sleep(timeoutMs).then(() => null)]);
    if (r === null) await this.kill(i);
    return r;
  }

  /** Empties node i's data directory (its process log stays): a removed node starts afresh. */
  wipe(i: number): void {
    const dir = this.nodes[i]!.spec.dir;
    for (const f of readdirSync(dir)) if (!f.endsWith(".log")) rmSync(join(dir, f), { recursive: true, force: true });
  }

  /** Waits until every node reports `size` voters and no learner. */
  async waitAllVoters(timeoutMs: number): Promise<void> {
    await this.until(`${this.size} voters`, timeoutMs, async () => {
      for (let i = 0; i < this.size; i++) {
        const st = await this.raftState(i);
        if (st.voters !== this.size || st.learners !== 0) return false;
      }
      return true;
    });
  }

  /**
   * Every node up (running, not paused) and, as the leader sees it, every node a voter and no
   * learner: the state a membership step starts from (it takes one voter out at most).
   */
  async isWhole(): Promise<boolean> {
    for (let i = 0; i < this.size; i++) if (!this.isUp(i)) return false;
    const l = await this.leader();
    if (l === null) return false;
    try {
      const st = await this.raftState(l);
      return st.voters === this.size && st.learners === 0;
    } catch {
      return false;
    }
  }

  /** The configuration as node `via` answers MemberList (a follower answers its own view). */
  async memberList(via: number, deadlineMs = 3000): Promise<MemberListResponse> {
    return this.clients[via]!.client.memberListAsync({}, { deadline: Date.now() + deadlineMs });
  }

  /** Node i's Status (its own view: id, state, indexes, learner or voter). */
  async status(i: number, deadlineMs = 3000): Promise<StatusResponse> {
    return this.clients[i]!.client.statusAsync({}, { deadline: Date.now() + deadlineMs });
  }

  isRunning(i: number): boolean {
    return this.nodes[i]!.running;
  }

  /** Running and not paused. */
  isUp(i: number): boolean {
    return this.nodes[i]!.running && !this.paused.has(i);
  }

  async kill(i: number): Promise<void> {
    const n = this.nodes[i]!;
    if (!n.proc) return;
    this.expectedExit.add(n.proc);
    this.paused.delete(i);
    await n.kill9();
  }

  /** SIGTERM: a clean shutdown; returns the exit code. */
  async terminate(i: number, timeoutMs = 15_000): Promise<number> {
    const n = this.nodes[i]!;
    if (!n.proc) return 0;
    this.expectedExit.add(n.proc);
    if (this.paused.has(i)) this.resume(i);
    return n.stop("SIGTERM", timeoutMs);
  }

  restart(i: number): void {
    if (this.nodes[i]!.running || this.notJoined.has(i)) return;
    this.launch(i, this.joinVia.get(i));
  }

  pause(i: number): void {
    const p = this.nodes[i]!.proc;
    if (!p || this.paused.has(i)) return;
    p.kill("SIGSTOP");
    this.paused.add(i);
  }

  resume(i: number): void {
    const p = this.nodes[i]!.proc;
    this.paused.delete(i);
    if (p) p.kill("SIGCONT");
  }

  /** Removes every fault: partitions healed, paused nodes resumed, dead nodes restarted. */
  healAll(): void {
    this.proxy.heal();
    for (const i of [...this.paused]) this.resume(i);
    for (let i = 0; i < this.size; i++) this.restart(i);
    for (const i of [...this.notJoined]) this.joinLater(i, [...Array(this.size).keys()].find((j) => !this.notJoined.has(j) && j !== i) ?? 0);
  }

  async raftState(i: number, deadlineMs = 1000): Promise<NodeRaftState> {
    const st = await this.clients[i]!.stats(deadlineMs);
    const local = st.peers.find((p) => p.isLocal);
    if (!local) throw new Error(`node${i + 1} reported no local peer`);
    const m = local.raft?.meta ?? new Map<string, string>();
    return {
      id: local.id,
      state: m.get("state") ?? "",
      term: Number(m.get("term") ?? 0),
      commit: Number(m.get("commit_index") ?? 0),
      applied: Number(m.get("applied_index") ?? 0),
      leader: m.get("leader") ?? "",
      voters: st.peers.filter((p) => !p.isLearner).length,
      learners: st.peers.filter((p) => p.isLearner).length,
      isLearner: local.isLearner,
      keys: local.fsm?.keysCount ?? -1,
    };
  }

  /** The node that says it leads, with the highest term among reachable nodes; null if none. */
  async leader(): Promise<number | null> {
    let best: number | null = null;
    let bestTerm = -1;
    await Promise.all(
      this.nodes.map(async (_, i) => {
        if (!this.isUp(i)) return;
        try {
          const info = await this.clients[i]!.client.leaderInfoAsync({}, { deadline: Date.now() + 500 });
          if (info.leaderId === this.ids[i] && info.term > bestTerm) {
            best = i;
            bestTerm = info.term;
          }
        } catch {
          // unreachable: not the leader we can use
        }
      }),
    );
    return best;
  }

  async waitServing(i: number, timeoutMs = 20_000): Promise<void> {
    await this.until(`node${i + 1} to serve`, timeoutMs, async () => {
      const info = await this.clients[i]!.client.leaderInfoAsync({}, { deadline: Date.now() + 1000 });
      return info.leaderId !== "";
    });
  }

  private async until(what: string, timeoutMs: number, fn: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let lastErr = "";
    for (;;) {
      try {
        if (await fn()) return;
      } catch (err) {
        lastErr = (err as Error).message ?? String(err);
      }
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? ` (last error: ${lastErr})` : ""}`);
      await sleep(100);
    }
  }

  /**
   * Waits until the cluster is whole again: every node up, all voters, one leader that every node
   * follows, and every node has applied the leader's commit index (stable over two polls).
   */
  async waitRecovered(timeoutMs = 60_000): Promise<{ leader: number; commit: number; states: NodeRaftState[] }> {
    let last = "";
    let result: { leader: number; commit: number; states: NodeRaftState[] } | null = null;
    let lastSeen = "";
    try {
      await this.until("the cluster to recover (one leader, every node caught up)", timeoutMs, async () => {
        const states: NodeRaftState[] = [];
        for (let i = 0; i < this.size; i++) states.push(await this.raftState(i));
        lastSeen = states.map((s, i) => `node${i + 1}:${s.state}/t${s.term}/c${s.commit}/a${s.applied}/v${s.voters}`).join(" ");
        const leaders = states.map((s, i) => (s.state === "Leader" ? i : -1)).filter((i) => i >= 0);
        if (leaders.length !== 1) return false;
        const l = leaders[0]!;
        const ls = states[l]!;
        for (const s of states) {
          if (s.leader !== ls.id || s.term !== ls.term || s.voters !== this.size || s.learners !== 0) return false;
          if (s.commit !== ls.commit || s.applied !== ls.commit) return false;
        }
        const sig = `${l}/${ls.term}/${ls.commit}`;
        const stable = sig === last;
        last = sig;
        if (stable) result = { leader: l, commit: ls.commit, states };
        return stable;
      });
    } catch (err) {
      throw new Error(`${(err as Error).message}; last seen: ${lastSeen}`);
    }
    return result!;
  }

  /** Clean shutdown of every node (SIGTERM); returns the exit codes. */
  async shutdown(): Promise<(number | null)[]> {
    return Promise.all(this.nodes.map((n, i) => (n.running ? this.terminate(i) : Promise.resolve(null))));
  }

  copyLogs(dest: string): void {
    mkdirSync(dest, { recursive: true });
    for (const n of [...this.nodes, ...this.extraProcesses]) if (existsSync(n.logPath)) copyFileSync(n.logPath, join(dest, `${n.spec.name}.log`));
  }

  async logs(i: number): Promise<string> {
    return this.nodes[i]!.logs();
  }

  /** Kills every process, stops the proxy, closes the clients. */
  async destroy(): Promise<void> {
    for (const i of [...this.paused]) this.resume(i);
    await Promise.all(this.nodes.map((_, i) => this.kill(i)));
    await Promise.all(this.extraProcesses.map((p) => p.kill9()));
    await this.proxy.stop();
    for (const c of this.clients) c.close();
  }

  /** Synchronous last resort (process exit): SIGKILL whatever still runs. */
  killAllSync(): void {
    for (const n of [...this.nodes, ...this.extraProcesses]) {
      const p = n.proc;
      if (!p) continue;
      this.expectedExit.add(p);
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  }
}

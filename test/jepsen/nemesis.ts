// The nemesis: faults injected on a seeded schedule, one at a time, each healed after it held.
//
//   kill         SIGKILL a random node or the leader (on 5 nodes sometimes two), restart later
//   pause        SIGSTOP a random node or the leader for 2-5 election timeouts, then SIGCONT
//   partition    through the proxy: isolate the leader, isolate a random node, majority/minority
//                split, a bridge (two sides that only a middle node sees), the leader's outgoing
//                or incoming links cut one way; links dropped (reset) or black-holed
//   restart-all  every node killed (SIGKILL or SIGTERM) in random order, then restarted in
//                random order
//   join         (opt-in) the cluster starts without its last node, which is added with
//                --join-addr under load at the first "join" fault; later picks do nothing
//   member       membership and leadership changes through the cluster RPCs, one step at a
//                time from a seeded cycle (member-nemesis.ts): remove-rejoin, learner (MemberAdd
//                is_learner, probes, MemberPromote), add-voter, transfer (TransferLeadership, to
//                a named voter or the most up-to-date one, sometimes to a stopped one), replace
//                (a node that lost its disk rejoins under its id)
//
// The seed fixes every choice (which fault, which node, how long); which node leads at that
// moment, and so the timing, still varies from run to run.

import { sleep } from "../e2e/harness.ts";
import type { Prng } from "../sim/prng.ts";
import type { JepsenCluster } from "./cluster.ts";
import { MEMBER_STEPS, MemberNemesis, type MemberStep } from "./member-nemesis.ts";
import type { BlockMode } from "./proxy.ts";

export const NEMESES = ["kill", "pause", "partition", "restart-all", "join", "member"] as const;
export type NemesisKind = (typeof NEMESES)[number];
/** What --nemesis all means: "join" changes how the cluster starts, so it is asked for by name. */
export const DEFAULT_NEMESES: NemesisKind[] = ["kill", "pause", "partition", "restart-all", "member"];

export interface FaultRecord {
  /** ms since the phase started */
  t: number;
  kind: string;
  detail: string;
}

export function shuffle<T>(rng: Prng, xs: T[]): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

export class Nemesis {
  readonly faults: FaultRecord[] = [];
  readonly counts: Record<string, number> = {};
  /**
   * Nodes that did not exit 0 on SIGTERM (the README promises a clean shutdown), or did not stop
   * cleanly after their removal, or did not become voters again after being added back.
   */
  readonly shutdownErrors: string[] = [];
  private readonly t0 = Date.now();

  /** The membership steps (kind "member"); its outcomes and problems go into the report. */
  readonly members: MemberNemesis;

  constructor(
    private readonly cluster: JepsenCluster,
    private readonly rng: Prng,
    private readonly kinds: NemesisKind[],
    private readonly opts: { electionMs: number; memberSteps?: readonly MemberStep[]; log?: (f: FaultRecord) => void },
  ) {
    this.members = new MemberNemesis(cluster, opts.memberSteps ?? MEMBER_STEPS, {
      electionMs: opts.electionMs,
      note: (detail, count) => this.note("member", detail, count),
    });
  }

  private note(kind: string, detail: string, count = true): void {
    const f = { t: Date.now() - this.t0, kind, detail };
    this.faults.push(f);
    if (count) this.counts[kind] = (this.counts[kind] ?? 0) + 1;
    this.opts.log?.(f);
  }

  get total(): number {
    return Object.values(this.counts).reduce((a, b) => a + b, 0);
  }

  private name(i: number): string {
    return `node${i + 1}`;
  }

  /** Sleeps ms, but never past the deadline. */
  private async hold(ms: number, deadline: number): Promise<void> {
    await sleep(Math.max(0, Math.min(ms, deadline - Date.now())));
  }

  /** Injects faults until `deadline` (Date.now() ms); heals the last one before returning. */
  async run(deadline: number): Promise<void> {
    if (this.kinds.length === 0) return;
    for (;;) {
      await this.hold(this.rng.int(700, 2000), deadline);
      if (Date.now() >= deadline - 300) break;
      const kind = this.rng.pick(this.kinds);
      const holdMs = this.rng.int(0, 1 << 30); // drawn now so the schedule does not depend on timing
      const sub = this.rng.fork();
      switch (kind) {
        case "kill":
          await this.kill(sub, holdMs, deadline);
          break;
        case "pause":
          await this.pause(sub, holdMs, deadline);
          break;
        case "partition":
          await this.partition(sub, holdMs, deadline);
          break;
        case "restart-all":
          await this.restartAll(sub, deadline);
          break;
        case "join":
          await this.join(sub);
          break;
        case "member":
          await this.member(sub, holdMs, deadline);
          break;
      }
    }
  }

  /** The leader (if one is known and chosen) or a random node. */
  private async target(rng: Prng, preferLeader: boolean): Promise<{ node: number; isLeader: boolean }> {
    const random = rng.int(0, this.cluster.size - 1);
    const l = await this.cluster.leader();
    if (preferLeader && l !== null) return { node: l, isLeader: true };
    return { node: random, isLeader: random === l };
  }

  private async kill(rng: Prng, holdSeed: number, deadline: number): Promise<void> {
    const n = this.cluster.size;
    const preferLeader = rng.chance(0.4);
    const two = n >= 5 && rng.chance(0.3);
    const extra = rng.int(0, n - 1);
    const downMs = 200 + (holdSeed % 2800);
    const first = await this.target(rng, preferLeader);
    const victims = [first.node];
    if (two && extra !== first.node) victims.push(extra);
    for (const v of victims) await this.cluster.kill(v);
    this.note("kill", `SIGKILL ${victims.map((v) => this.name(v)).join(" + ")}${first.isLeader ? ` (${victims.length > 1 ? "the first is " : ""}the leader)` : ""}; down for ${downMs} ms`);
    await this.hold(downMs, deadline);
    for (const v of victims) this.cluster.restart(v);
    this.note("kill", `restarted ${victims.map((v) => this.name(v)).join(" + ")}`, false);
  }

  private async pause(rng: Prng, holdSeed: number, deadline: number): Promise<void> {
    const preferLeader = rng.chance(0.5);
    const ms = this.opts.electionMs * 2 + (holdSeed % (this.opts.electionMs * 3));
    const t = await this.target(rng, preferLeader);
    if (!this.cluster.isRunning(t.node)) return;
    this.cluster.pause(t.node);
    this.note("pause", `SIGSTOP ${this.name(t.node)}${t.isLeader ? " (the leader)" : ""} for ${ms} ms`);
    await this.hold(ms, deadline);
    this.cluster.resume(t.node);
    this.note("pause", `SIGCONT ${this.name(t.node)}`, false);
  }

  private async partition(rng: Prng, holdSeed: number, deadline: number): Promise<void> {
    const n = this.cluster.size;
    const all = [...Array(n).keys()];
    const kinds = ["isolate-leader", "isolate-node", "split", "bridge", "leader-out", "leader-in"] as const;
    const kind = rng.pick(kinds);
    const mode: BlockMode = rng.chance(0.5) ? "drop" : "blackhole";
    const ms = 1500 + (holdSeed % 4500);
    const order = shuffle(rng, all);
    const p = this.cluster.proxy;
    let detail: string;
    const names = (xs: number[]): string => `{${xs.map((x) => this.name(x)).join(",")}}`;
    const leaderOr = async (): Promise<number> => (await this.cluster.leader()) ?? order[0]!;
    switch (kind) {
      case "isolate-leader":
      case "isolate-node": {
        const x = kind === "isolate-leader" ? await leaderOr() : order[0]!;
        const rest = all.filter((y) => y !== x);
        p.cut([x], rest, mode);
        detail = `${kind}: ${names([x])} | ${names(rest)}`;
        break;
      }
      case "split": {
        const minority = order.slice(0, Math.floor((n - 1) / 2));
        const majority = order.slice(minority.length);
        p.cut(minority, majority, mode);
        detail = `split: minority ${names(minority)} | majority ${names(majority)}`;
        break;
      }
      case "bridge": {
        const bridge = order[0]!;
        const rest = order.slice(1);
        const a = rest.slice(0, Math.floor(rest.length / 2));
        const b = rest.slice(a.length);
        p.cut(a, b, mode);
        detail = `bridge: ${names(a)} <- ${this.name(bridge)} -> ${names(b)} (only ${this.name(bridge)} sees both sides)`;
        break;
      }
      case "leader-out":
      case "leader-in": {
        const l = await leaderOr();
        for (const y of all) {
          if (y === l) continue;
          if (kind === "leader-out") p.block(l, y, mode);
          else p.block(y, l, mode);
        }
        detail = kind === "leader-out" ? `one way: ${this.name(l)} (leader) cannot send to the others, still hears them` : `one way: nobody reaches ${this.name(l)} (leader), it still sends`;
        break;
      }
    }
    this.note("partition", `${detail} (${mode}) for ${ms} ms`);
    await this.hold(ms, deadline);
    p.heal();
    this.note("partition", "healed", false);
  }

  private async join(rng: Prng): Promise<void> {
    const via = rng.int(0, this.cluster.size - 1);
    const i = [...this.cluster.notJoined][0];
    if (i === undefined) return;
    const member = this.cluster.notJoined.has(via) ? 0 : via;
    this.cluster.joinLater(i, member);
    this.note("join", `started ${this.name(i)} with --join-addr=${this.name(member)}'s gRPC address (added under load)`);
  }

  private async member(rng: Prng, holdSeed: number, deadline: number): Promise<void> {
    await this.members.step(rng, holdSeed, deadline);
  }

  private async restartAll(rng: Prng, deadline: number): Promise<void> {
    const n = this.cluster.size;
    const stopOrder = shuffle(rng, [...Array(n).keys()]);
    const startOrder = shuffle(rng, [...Array(n).keys()]);
    const how = stopOrder.map(() => (rng.chance(0.6) ? "SIGKILL" : "SIGTERM"));
    const gaps = stopOrder.map(() => rng.int(0, 300));
    const startGaps = startOrder.map(() => rng.int(0, 700));
    const downMs = rng.int(200, 1500);
    const codes: string[] = [];
    for (let k = 0; k < n; k++) {
      const i = stopOrder[k]!;
      if (how[k] === "SIGKILL") await this.cluster.kill(i);
      else {
        const code = await this.cluster.terminate(i);
        if (code !== 0) codes.push(`${this.name(i)} exited ${code} on SIGTERM`);
      }
      await sleep(gaps[k]!);
    }
    this.note("restart-all", `stopped ${stopOrder.map((i, k) => `${this.name(i)}(${how[k]})`).join(" ")}; restarting in order ${startOrder.map((i) => this.name(i)).join(" ")}${codes.length ? `; ${codes.join(", ")}` : ""}`);
    this.shutdownErrors.push(...codes);
    await sleep(downMs);
    for (let k = 0; k < n; k++) {
      this.cluster.restart(startOrder[k]!);
      await sleep(startGaps[k]!);
    }
    this.note("restart-all", "all restarted", false);
    void deadline;
  }
}

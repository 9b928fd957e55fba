// Runs real ./rbkv processes on loopback for end-to-end tests: start, join, kill -9,
// restart, and talk to them over gRPC.

import { type Subprocess, spawn } from "bun";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { type RbdkvClient, createRbdkvClient } from "../../src/server/grpc-service.ts";
import { type CommandResponse, OpType, ReadConsistency } from "../../src/server/gen/rbkv.ts";

export const BINARY = resolve(import.meta.dir, "../../rbkv");

export function requireBinary(): void {
  if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: run \`npm install\` (or \`bun build.ts\`) first`);
}

/** A free TCP port on 127.0.0.1 (bind to 0, read it back, release it). */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function eventually<T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = 15_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown = null;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== null && v !== false) return v as T;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${lastErr ? `: ${(lastErr as Error).message}` : ""}`);
    await sleep(everyMs);
  }
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the binary to completion (for flag errors and --help). */
export async function runBinary(args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  const p = spawn([BINARY, ...args], { cwd: opts.cwd, stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => p.kill(9), opts.timeoutMs ?? 15_000);
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

export interface NodeSpec {
  name: string;
  grpcAddr: string;
  raftAddr: string;
  dir: string;
  extra: string[];
}

export class RbkvProcess {
  proc: Subprocess | null = null;
  readonly logPath: string;
  exitCode: number | null = null;
  private logged: Promise<void> = Promise.resolve();

  constructor(readonly spec: NodeSpec) {
    this.logPath = join(spec.dir, `${spec.name}.log`);
  }

  start(opts: { join?: string } = {}): void {
    if (this.proc) throw new Error(`${this.spec.name} is already running`);
    const args = [
      `--grpc-addr=${this.spec.grpcAddr}`,
      `--raft-addr=${this.spec.raftAddr}`,
      `--log-dir=${this.spec.dir}`,
      `--kv-dir=${this.spec.dir}`,
      ...(opts.join ? [`--join-addr=${opts.join}`] : []),
      ...this.spec.extra,
    ];
    mkdirSync(this.spec.dir, { recursive: true });
    const log = createWriteStream(this.logPath, { flags: "a" });
    const p = spawn([BINARY, ...args], { stdout: "pipe", stderr: "pipe" });
    this.proc = p;
    this.exitCode = null;
    const pump = async (stream: ReadableStream<Uint8Array>): Promise<void> => {
      for await (const chunk of stream) log.write(chunk);
    };
    // Once both pipes are drained the file holds everything the process said (see logs()).
    this.logged = Promise.all([pump(p.stdout as ReadableStream<Uint8Array>), pump(p.stderr as ReadableStream<Uint8Array>)]).then(
      () => new Promise<void>((resolve) => log.end(() => resolve())),
    );
    void p.exited.then((code) => {
      this.exitCode = code;
      if (this.proc === p) this.proc = null;
    });
  }

  /** SIGKILL: no shutdown at all. */
  async kill9(): Promise<void> {
    const p = this.proc;
    if (!p) return;
    p.kill(9);
    await p.exited;
    this.proc = null;
  }

  /** SIGTERM and wait for a clean exit; returns the exit code. */
  async stop(signal: "SIGTERM" | "SIGINT" = "SIGTERM", timeoutMs = 15_000): Promise<number> {
    const p = this.proc;
    if (!p) return this.exitCode ?? 0;
    p.kill(signal);
    const timer = setTimeout(() => p.kill(9), timeoutMs);
    const code = await p.exited;
    clearTimeout(timer);
    this.proc = null;
    return code;
  }

  get running(): boolean {
    return this.proc !== null;
  }

  async logs(): Promise<string> {
    if (!this.running) await this.logged;
    return existsSync(this.logPath) ? Bun.file(this.logPath).text() : "";
  }
}

export class Kv {
  readonly client: RbdkvClient;

  constructor(readonly addr: string) {
    this.client = createRbdkvClient(addr);
  }

  put(key: string, value: string, opts: { ttlMs?: number; meta?: number; deadlineMs?: number } = {}): Promise<CommandResponse> {
    return this.client.executeAsync(
      {
        op: OpType.Put,
        kv: { key: enc(key), value: enc(value), meta: opts.meta ?? 0, ttl: opts.ttlMs ? { seconds: Math.floor(opts.ttlMs / 1000), nanos: (opts.ttlMs % 1000) * 1e6 } : undefined },
      },
      { deadline: Date.now() + (opts.deadlineMs ?? 10_000) },
    );
  }

  get(key: string, opts: { serializable?: boolean; version?: number; deadlineMs?: number } = {}): Promise<CommandResponse> {
    return this.client.executeAsync(
      { op: OpType.Get, rc: opts.serializable ? ReadConsistency.Serializable : ReadConsistency.Linearizable, kv: { key: enc(key), version: opts.version ?? 0 } },
      { deadline: Date.now() + (opts.deadlineMs ?? 10_000) },
    );
  }

  /** The value, or null on NOT_FOUND. */
  async value(key: string, opts: { serializable?: boolean; version?: number } = {}): Promise<string | null> {
    try {
      return dec((await this.get(key, opts)).value);
    } catch (err) {
      if ((err as grpc.ServiceError).code === grpc.status.NOT_FOUND) return null;
      throw err;
    }
  }

  del(key: string): Promise<CommandResponse> {
    return this.client.executeAsync({ op: OpType.Delete, kv: { key: enc(key) } }, { deadline: Date.now() + 10_000 });
  }

  close(): void {
    this.client.close();
  }
}

export function enc(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

export function dec(b: Uint8Array): string {
  return new TextDecoder().decode(b);
}

export function grpcCode(err: unknown): grpc.status | undefined {
  return (err as grpc.ServiceError)?.code;
}

/** A cluster of n processes on loopback with fresh directories. */
export class TestCluster {
  readonly nodes: RbkvProcess[] = [];
  readonly root: string;
  private clients = new Map<string, Kv>();

  private constructor(root: string) {
    this.root = root;
  }

  static async create(n: number, extra: string[] = [], host = "127.0.0.1"): Promise<TestCluster> {
    requireBinary();
    const c = new TestCluster(mkdtempSync(join(tmpdir(), "rbkv-e2e-")));
    for (let i = 0; i < n; i++) {
      const dir = join(c.root, `node${i + 1}`);
      c.nodes.push(new RbkvProcess({ name: `node${i + 1}`, grpcAddr: `${host}:${await freePort()}`, raftAddr: `${host}:${await freePort()}`, dir, extra }));
    }
    return c;
  }

  /** The seed's way: node 1 bootstraps, the others join through it. Waits for all voters. */
  async startSeedStyle(): Promise<void> {
    this.nodes[0]!.start();
    await this.waitServing(0);
    for (let i = 1; i < this.nodes.length; i++) {
      this.nodes[i]!.start({ join: this.nodes[0]!.spec.grpcAddr });
    }
    await this.waitVoters(this.nodes.length);
  }

  kv(i: number): Kv {
    const addr = this.nodes[i]!.spec.grpcAddr;
    let c = this.clients.get(addr);
    if (!c) {
      c = new Kv(addr);
      this.clients.set(addr, c);
    }
    return c;
  }

  async waitServing(i: number, timeoutMs = 15_000): Promise<void> {
    await eventually(`node${i + 1} to serve`, async () => (await this.kv(i).client.leaderInfoAsync({}, { deadline: Date.now() + 1000 })).leaderId !== "", timeoutMs);
  }

  async waitVoters(n: number, timeoutMs = 30_000): Promise<void> {
    await eventually(
      `${n} voters`,
      async () => {
        for (let i = 0; i < this.nodes.length; i++) {
          if (!this.nodes[i]!.running) continue;
          const st = await this.kv(i).client.clusterStatsAsync({ withRaft: true }, { deadline: Date.now() + 1000 });
          if (st.peers.filter((p) => !p.isLearner).length !== n) return false;
        }
        return true;
      },
      timeoutMs,
    );
  }

  /** Index of the node that is leader according to a majority of running nodes. */
  async leader(timeoutMs = 15_000): Promise<number> {
    return eventually(
      "a leader",
      async () => {
        for (let i = 0; i < this.nodes.length; i++) {
          if (!this.nodes[i]!.running) continue;
          const info = await this.kv(i).client.leaderInfoAsync({}, { deadline: Date.now() + 1000 });
          const idx = this.nodes.findIndex((n) => n.spec.grpcAddr === info.leaderAddr);
          if (idx >= 0 && this.nodes[idx]!.running) {
            const own = await this.kv(idx).client.leaderInfoAsync({}, { deadline: Date.now() + 1000 });
            if (own.leaderAddr === info.leaderAddr) return idx + 1;
          }
        }
        return false;
      },
      timeoutMs,
    ).then((v) => v - 1);
  }

  async stopAll(): Promise<void> {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
    await Promise.all(this.nodes.map((n) => n.kill9()));
  }

  async dumpLogs(): Promise<string> {
    const parts: string[] = [];
    for (const n of this.nodes) parts.push(`--- ${n.spec.name} ---\n${(await n.logs()).split("\n").slice(-40).join("\n")}`);
    return parts.join("\n");
  }

  async destroy(): Promise<void> {
    await this.stopAll();
    rmSync(this.root, { recursive: true, force: true });
  }
}

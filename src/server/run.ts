// Starts a node: storage, Raft, transport, the gRPC API; joins or bootstraps; shuts down
// cleanly on SIGINT/SIGTERM (hand leadership over, flush, close LMDB, exit 0).

import { accessSync, constants, mkdirSync, statSync } from "node:fs";
import { createServer } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { createLogger, type Logger } from "../node/logger.ts";
import { type JoinResult, RaftNode } from "../node/node.ts";
import { type PeerAddress } from "../storage/raft-log-store.ts";
import { TtlReaper } from "../node/ttl-reaper.ts";
import { createRbdkvClient } from "./grpc-service.ts";
import { CLUSTER_ID_METADATA, KvService, PEERS_METADATA } from "./kv-service.ts";
import { ConfigError, type ServerOptions, parseHostPort } from "./options.ts";
import { WatchHub } from "./watch-hub.ts";
import { join } from "node:path";

/** Where a node keeps its state machine: this subdirectory of --kv-dir (the Raft log is in --log-dir itself). */
export const KV_SUBDIR = "kv";

function ensureDir(dir: string, flag: string): void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new ConfigError(`--${flag} ${dir}: cannot create the directory (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (!statSync(dir).isDirectory()) throw new ConfigError(`--${flag} ${dir} is not a directory`);
  try {
    accessSync(dir, constants.W_OK);
  } catch {
    throw new ConfigError(`--${flag} ${dir} is not writable`);
  }
}

function bindGrpc(server: grpc.Server, addr: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(addr, grpc.ServerCredentials.createInsecure(), (err, port) => {
      if (err) reject(new ConfigError(`cannot listen on --grpc-addr ${addr}: ${/address in use|EADDRINUSE|No address added/i.test(err.message) ? "address already in use" : err.message}`));
      else resolve(port);
    });
  });
}

/** Fails fast, before any state is created, if the Raft port is taken. */
function assertCanListen(addr: string, flag: string): Promise<void> {
  const { host, port } = parseHostPort(addr, flag);
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", (err: NodeJS.ErrnoException) => {
      reject(new ConfigError(`cannot listen on --${flag} ${addr}: ${err.code === "EADDRINUSE" ? "address already in use" : err.message}`));
    });
    srv.listen(port, host, () => srv.close(() => resolve()));
  });
}

/** Asks a member to add us; retries until it answers. Returns the cluster and its members. */
async function joinCluster(o: ServerOptions, log: Logger): Promise<JoinResult> {
  const target = o.joinAddr!;
  let delay = 200;
  for (let attempt = 1; ; attempt++) {
    const client = createRbdkvClient(target);
    try {
      const joined = await new Promise<JoinResult>((resolve, reject) => {
        // grpc-js calls back with the response before it emits the status with the trailers.
        let joinedAt = 0;
        const call = client.join({ id: o.nodeId, addr: o.raftAdvertiseAddr, grpcAddr: o.grpcAddr, emptyData: true }, new grpc.Metadata(), { deadline: Date.now() + 30_000 }, (err, res) => {
          if (err) reject(err);
          else joinedAt = res?.joinedAt ?? 0;
        });
        call.on("status", (status: grpc.StatusObject) => {
          if (status.code !== grpc.status.OK) return;
          const clusterId = status.metadata.get(CLUSTER_ID_METADATA)[0];
          const peersJson = status.metadata.get(PEERS_METADATA)[0];
          if (typeof clusterId !== "string" || !clusterId) {
            reject(new Error(`${target} did not report a cluster id`));
            return;
          }
          const peers = new Map<string, PeerAddress>();
          if (typeof peersJson === "string") {
            try {
              for (const [id, a] of Object.entries(JSON.parse(peersJson) as Record<string, PeerAddress>)) {
                if (typeof a?.raft === "string" && typeof a?.grpc === "string") peers.set(id, { raft: a.raft, grpc: a.grpc });
              }
            } catch {
              // Without addresses the node still learns them from the log; only slower.
            }
          }
          resolve({ clusterId, peers, joinedAt });
        });
      });
      log.info(`joined cluster ${joined.clusterId} through ${target} at index ${joined.joinedAt} (${joined.peers.size} members known)`);
      return joined;
    } catch (err) {
      const e = err as grpc.ServiceError;
      if (e.code === grpc.status.INVALID_ARGUMENT || e.code === grpc.status.ALREADY_EXISTS) {
        throw new ConfigError(`joining through ${target} was refused: ${e.details ?? e.message}`);
      }
      log.warn(`join through ${target} failed (attempt ${attempt}): ${e.details ?? e.message}; retrying in ${delay}ms`);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
    } finally {
      client.close();
    }
  }
}

export async function runServer(o: ServerOptions): Promise<void> {
  const log = createLogger(o.nodeId, o.logLevel);
  // grpc-js logs to stderr on its own; its messages go through ours, at debug level.
  grpc.setLogger({ error: (...a: unknown[]) => log.debug(`grpc: ${a.join(" ")}`), info: (...a: unknown[]) => log.debug(`grpc: ${a.join(" ")}`), debug: () => {} });
  if (o.unsafeNoFsync) log.warn("--unsafe-no-fsync is set: the Raft log is not fsync'd; a machine crash can lose acknowledged writes");
  ensureDir(o.logDir, "log-dir");
  ensureDir(o.kvDir, "kv-dir");
  parseHostPort(o.grpcAddr, "grpc-addr");

  const server = new grpc.Server({
    // Twice the largest request we accept, so a request somewhat over a limit reaches the
    // handler and is refused naming the limit (INVALID_ARGUMENT) rather than by grpc-js.
    "grpc.max_receive_message_length": 2 * Math.max(o.maxKeyBytes + o.maxValueBytes, o.maxRequestBytes) + (64 << 10),
    "grpc.max_send_message_length": 64 << 20,
  });
  const grpcPort = await bindGrpc(server, o.grpcAddr);
  await assertCanListen(o.raftAddr, "raft-addr");

  const node = new RaftNode({
    id: o.nodeId,
    grpcAddr: o.grpcAddr,
    raftAddr: o.raftAddr,
    raftAdvertiseAddr: o.raftAdvertiseAddr,
    logDir: o.logDir,
    kvDir: join(o.kvDir, KV_SUBDIR),
    batchSize: o.batchSize,
    versionKeepNum: o.versionKeepNum,
    snapshotThreshold: o.snapshotThreshold,
    snapshotIntervalMs: o.snapshotIntervalMs,
    trailingLogs: o.trailingLogs,
    noSync: o.unsafeNoFsync,
    tickMs: o.heartbeatMs,
    electionTicks: Math.round(o.electionMs / o.heartbeatMs),
    heartbeatTicks: 1,
    logger: log,
  });
  // The hub replays resumed watches from the state machine's history (opened by node.start).
  const hub = new WatchHub({ changes: (after, through, prefixes, limit) => node.changes(after, through, prefixes, limit) });
  node.onEvents = (events, appliedThrough) => hub.publish(events, appliedThrough);
  const service = new KvService(node, hub, o, log);
  server.addService(service.definition(), service.handlers());

  let reaper: TtlReaper | null = null;
  let stopping = false;
  const shutdown = async (why: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info(`${why}: shutting down`);
    service.close();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, 2000);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    reaper?.stop();
    await node.stop();
    log.info("stopped");
    process.exit(0);
  };
  // A bug in a request handler must not take the node down with every client on it; the
  // Raft loop has its own fatal path (RaftNode.fatal) for errors it cannot survive.
  process.on("uncaughtException", (err) => log.error(`uncaught exception: ${err.stack ?? err.message}`));
  process.on("unhandledRejection", (err) => log.error(`unhandled rejection: ${(err as Error)?.stack ?? String(err)}`));
  process.on("SIGINT", () => void shutdown("SIGINT"));
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  // A removed member has nothing left to serve; the marker it wrote makes a restart refuse.
  node.onRemoved = () => void shutdown("removed from the cluster");

  await node.start({ join: o.joinAddr ? () => joinCluster(o, log) : null });
  if (stopping) return; // removed while replaying its log
  reaper = new TtlReaper(node, log);
  reaper.start();
  log.info(`serving gRPC on ${o.grpcAddr} (port ${grpcPort}), Raft on ${o.raftAddr}; node id ${o.nodeId}`);
}

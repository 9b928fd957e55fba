// Server flags (seed-compatible) and their validation. A bad flag is a ConfigError with one
// clear line; main prints it and exits non-zero.

import { AddressError, parseHostPort, sameAddress } from "../net/host-port.ts";
import { type LogLevel, isLogLevel } from "../node/logger.ts";

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

export interface ServerOptions {
  nodeId: string;
  grpcAddr: string;
  raftAddr: string;
  /** The Raft address other members dial (a proxy, a NAT); defaults to raftAddr. */
  raftAdvertiseAddr: string;
  joinAddr: string | null;
  logDir: string;
  kvDir: string;
  batchSize: number;
  versionKeepNum: number;
  snapshotThreshold: number;
  snapshotIntervalMs: number;
  trailingLogs: number;
  unsafeNoFsync: boolean;
  heartbeatMs: number;
  electionMs: number;
  maxKeyBytes: number;
  maxValueBytes: number;
  /** Operations per Txn (compares, and each branch). */
  maxTxnOps: number;
  /** Bytes of keys and values in one Txn. */
  maxRequestBytes: number;
  /** kvs per Range page. */
  maxRangeLimit: number;
  logLevel: LogLevel;
  /**
   * The seed's --backup-go-num / --restore-go-num (goroutines for snapshot streaming and
   * restore). Accepted for seed compatibility; rbkv streams a snapshot sequentially, so they
   * have no effect.
   */
  backupGoNum: number;
  restoreGoNum: number;
}

/** One row per flag: the CLI help and the parser both come from here. */
export const SERVER_FLAGS = [
  { flag: "--grpc-addr <host:port>", help: "client gRPC address", default: "127.0.0.1:9501" },
  { flag: "--raft-addr <host:port>", help: "peer (Raft) address", default: "127.0.0.1:9601" },
  { flag: "--raft-advertise-addr <host:port>", help: "Raft address the other members use to reach this node (default: --raft-addr)" },
  { flag: "--join-addr <host:port>", help: "gRPC address of any member to join (first start only)" },
  { flag: "--node-id <id>", help: "node id (default: the gRPC address)" },
  { flag: "--log-dir <dir>", help: "Raft log directory", default: "./rbkv-data" },
  { flag: "--kv-dir <dir>", help: "state machine directory", default: "./rbkv-data" },
  { flag: "--batch-size <n>", help: "log entries applied per state-machine transaction, 10..500 (0 = off)", default: 100 },
  { flag: "--version-keep-num <n>", help: "versions kept per key (0 = keep all)", default: 0 },
  { flag: "--snapshot-threshold <entries>", help: "applied entries between snapshots", default: 8192 },
  { flag: "--snapshot-interval <duration>", help: "snapshot at least this often when there are writes (e.g. 120s, 5m)", default: "120s" },
  { flag: "--trailing-logs <entries>", help: "log entries kept behind a snapshot for slow followers", default: 10240 },
  { flag: "--heartbeat-interval <ms>", help: "leader heartbeat interval in ms", default: 100 },
  { flag: "--election-timeout <ms>", help: "election timeout in ms (a multiple of the heartbeat)", default: 1000 },
  { flag: "--max-key-size <bytes>", help: "largest key accepted", default: 4096 },
  { flag: "--max-value-size <bytes>", help: "largest value accepted", default: 1 << 20 },
  { flag: "--max-txn-ops <n>", help: "most compares, and most operations per branch, in one Txn", default: 128 },
  { flag: "--max-request-bytes <bytes>", help: "most bytes of keys and values in one Txn", default: 2 << 20 },
  { flag: "--max-range-limit <n>", help: "most keys one Range page returns", default: 10000 },
  { flag: "--log-level <level>", help: "debug, info, warn or error", default: "info" },
  { flag: "--unsafe-no-fsync", help: "UNSAFE: do not fsync the Raft log; a machine crash can lose acknowledged writes" },
  { flag: "--backup-go-num <n>", help: "accepted for seed compatibility; snapshot streaming is sequential, so it has no effect", default: 4 },
  { flag: "--restore-go-num <n>", help: "accepted for seed compatibility; snapshot restore is sequential, so it has no effect", default: 4 },
] as const;

type Raw = Record<string, unknown>;

function str(raw: Raw, key: string, name: string, fallback?: string): string {
  const v = raw[key];
  if (v === undefined) {
    if (fallback === undefined) throw new ConfigError(`--${name} is required`);
    return fallback;
  }
  if (typeof v === "boolean") throw new ConfigError(`--${name} needs a value`);
  if (Array.isArray(v)) throw new ConfigError(`--${name} was given more than once`);
  const s = String(v).trim();
  if (s === "") throw new ConfigError(`--${name} must not be empty`);
  return s;
}

function int(raw: Raw, key: string, name: string, fallback: number, min: number, max: number): number {
  const v = raw[key];
  if (v === undefined) return fallback;
  if (typeof v === "boolean") throw new ConfigError(`--${name} needs a value`);
  if (Array.isArray(v)) throw new ConfigError(`--${name} was given more than once`);
  const n = typeof v === "number" ? v : Number(v);
  if (!Number.isInteger(n)) throw new ConfigError(`--${name} must be an integer, got ${JSON.stringify(String(v))}`);
  if (n < min || n > max) throw new ConfigError(`--${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

/** A flag holding host:port or [ipv6]:port (one parser for the program: src/net/host-port.ts). */
function checkAddressFlag(addr: string, name: string): void {
  try {
    parseHostPort(addr, `--${name}`);
  } catch (err) {
    if (err instanceof AddressError) throw new ConfigError(err.message);
    throw err;
  }
}

/** Parses "250ms", "30s", "5m", "1h" or a plain number of seconds. */
export function parseDuration(s: string, name: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(s.trim());
  if (!m) throw new ConfigError(`--${name} must be a duration like 30s or 5m, got ${JSON.stringify(s)}`);
  const n = Number(m[1]);
  const unit = m[2] ?? "s";
  const ms = unit === "ms" ? n : unit === "s" ? n * 1000 : unit === "m" ? n * 60_000 : n * 3_600_000;
  if (ms < 1000) throw new ConfigError(`--${name} must be at least 1s, got ${s}`);
  return Math.round(ms);
}

export function parseServerOptions(raw: Raw): ServerOptions {
  const grpcAddr = str(raw, "grpcAddr", "grpc-addr", "127.0.0.1:9501");
  const raftAddr = str(raw, "raftAddr", "raft-addr", "127.0.0.1:9601");
  checkAddressFlag(grpcAddr, "grpc-addr");
  checkAddressFlag(raftAddr, "raft-addr");
  const joinAddr = raw.joinAddr === undefined ? null : str(raw, "joinAddr", "join-addr");
  const raftAdvertiseAddr = raw.raftAdvertiseAddr === undefined ? undefined : str(raw, "raftAdvertiseAddr", "raft-advertise-addr");
  if (raftAdvertiseAddr !== undefined) checkAddressFlag(raftAdvertiseAddr, "raft-advertise-addr");
  if (joinAddr !== null) checkAddressFlag(joinAddr, "join-addr");
  if (sameAddress(grpcAddr, raftAddr)) throw new ConfigError("--grpc-addr and --raft-addr must differ");
  const batchSize = int(raw, "batchSize", "batch-size", 100, 0, 500);
  if (batchSize !== 0 && batchSize < 10) throw new ConfigError(`--batch-size must be 0 (off) or between 10 and 500, got ${batchSize}`);
  const heartbeatMs = int(raw, "heartbeatInterval", "heartbeat-interval", 100, 10, 10_000);
  const electionMs = int(raw, "electionTimeout", "election-timeout", 1000, 50, 60_000);
  if (electionMs < 3 * heartbeatMs) throw new ConfigError(`--election-timeout (${electionMs}ms) must be at least 3 x --heartbeat-interval (${heartbeatMs}ms)`);
  const logLevel = str(raw, "logLevel", "log-level", "info");
  if (!isLogLevel(logLevel)) throw new ConfigError(`--log-level must be debug, info, warn or error, got ${JSON.stringify(logLevel)}`);
  const unsafe = raw.unsafeNoFsync;
  if (unsafe !== undefined && typeof unsafe !== "boolean") throw new ConfigError("--unsafe-no-fsync takes no value");
  return {
    nodeId: raw.nodeId === undefined ? grpcAddr : str(raw, "nodeId", "node-id"),
    grpcAddr,
    raftAddr,
    raftAdvertiseAddr: raftAdvertiseAddr ?? raftAddr,
    joinAddr,
    logDir: str(raw, "logDir", "log-dir", "./rbkv-data"),
    kvDir: str(raw, "kvDir", "kv-dir", "./rbkv-data"),
    batchSize,
    versionKeepNum: int(raw, "versionKeepNum", "version-keep-num", 0, 0, 1_000_000),
    snapshotThreshold: int(raw, "snapshotThreshold", "snapshot-threshold", 8192, 16, 100_000_000),
    snapshotIntervalMs: parseDuration(str(raw, "snapshotInterval", "snapshot-interval", "120s"), "snapshot-interval"),
    trailingLogs: int(raw, "trailingLogs", "trailing-logs", 10240, 0, 100_000_000),
    unsafeNoFsync: unsafe === true,
    heartbeatMs,
    electionMs,
    maxKeyBytes: int(raw, "maxKeySize", "max-key-size", 4096, 1, 1 << 20),
    maxValueBytes: int(raw, "maxValueSize", "max-value-size", 1 << 20, 1, 64 << 20),
    maxTxnOps: int(raw, "maxTxnOps", "max-txn-ops", 128, 1, 10_000),
    maxRequestBytes: int(raw, "maxRequestBytes", "max-request-bytes", 2 << 20, 1024, 64 << 20),
    maxRangeLimit: int(raw, "maxRangeLimit", "max-range-limit", 10000, 1, 1_000_000),
    logLevel,
    backupGoNum: int(raw, "backupGoNum", "backup-go-num", 4, 1, 1024),
    restoreGoNum: int(raw, "restoreGoNum", "restore-go-num", 4, 1, 1024),
  };
}

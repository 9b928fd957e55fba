// `rbkv snapshot save FILE` and `rbkv snapshot restore FILE --data-dir D`: back up one member's
// state machine over the Snapshot RPC, and build a data directory that starts a new one-node
// cluster holding exactly that data.
//
// save writes FILE.part while it checks the stream as a restore would (backup-file.ts), fsyncs
// it, renames it to FILE and fsyncs the directory: FILE is never a partial or unchecked backup.
// restore checks the whole file before it creates anything, builds the directory under a private
// name beside D, and renames it to D only once it is complete and on disk: a failure or a crash
// leaves D as it was (absent or empty).

import { createReadStream, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { basename, dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { restoreNodeStorage } from "../node/restore.ts";
import { type BackupSummary, BackupFileError, verifyBackup } from "../storage/backup-file.ts";
import { fsyncDir } from "../storage/fsm-env.ts";
import { KvStoreError } from "../storage/fsm.ts";
import { LogStoreError } from "../storage/raft-log-store.ts";
import { createRbdkvClient } from "../server/grpc-service.ts";
import { parseHostPort } from "../server/options.ts";
import { KV_SUBDIR } from "../server/run.ts";
import { CommandError, UsageError } from "./cli-error.ts";

const DEFAULT_ENDPOINT = "127.0.0.1:9501";
const DEFAULT_GRPC_ADDR = "127.0.0.1:9501";
const DEFAULT_RAFT_ADDR = "127.0.0.1:9601";
/** A chunk is about 1 MiB, plus at most one record (a value may be up to 64 MiB). */
const MAX_CHUNK_MESSAGE = 80 << 20;

export const SNAPSHOT_USAGE = `Usage:
  rbkv snapshot save FILE [--endpoints host:port]
      Streams a consistent backup of one member's state machine (its applied state; ask the
      leader for the latest) into FILE (written as FILE.part, checked, fsync'd, renamed).
      --endpoints   the member's gRPC address (default ${DEFAULT_ENDPOINT})
  rbkv snapshot restore FILE --data-dir DIR [--node-id ID] [--grpc-addr host:port] [--raft-addr host:port] [--raft-advertise-addr host:port]
      Checks FILE whole, then builds DIR (absent or empty) as the data directory of a NEW one-node
      cluster holding exactly FILE's data; start it with
      rbkv --log-dir=DIR --kv-dir=DIR --node-id=ID --grpc-addr=... --raft-addr=...
      --grpc-addr   default ${DEFAULT_GRPC_ADDR}; --raft-addr default ${DEFAULT_RAFT_ADDR};
      --node-id     default: the gRPC address (as the server's default)
`;

type Flags = Record<string, { type: "string" | "boolean" }>;

function errMsg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** node:util parseArgs, with its messages in the style of the server's flags. */
function parse(action: string, args: string[], options: Flags): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  try {
    const r = parseArgs({ args, options: { ...options, help: { type: "boolean" } }, strict: true, allowPositionals: true });
    return { values: r.values as Record<string, string | boolean | undefined>, positionals: r.positionals };
  } catch (e) {
    const code = (e as { code?: string }).code;
    const m = /'(--?[^' <]+)/.exec(errMsg(e));
    const flag = m?.[1] ?? "";
    if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") throw new UsageError(`snapshot ${action}: unknown option ${flag}`);
    if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") throw new UsageError(`snapshot ${action}: ${/does not take/.test(errMsg(e)) ? `${flag} takes no value` : `${flag} needs a value`}`);
    throw new UsageError(`snapshot ${action}: ${errMsg(e)}`);
  }
}

function stringFlag(values: Record<string, string | boolean | undefined>, name: string, fallback?: string): string {
  const v = values[name];
  if (v === undefined) {
    if (fallback === undefined) throw new UsageError(`--${name} is required`);
    return fallback;
  }
  const s = String(v).trim();
  if (s === "") throw new UsageError(`--${name} must not be empty`);
  return s;
}

function onePositional(action: string, positionals: string[]): string {
  if (positionals.length === 0) throw new UsageError(`snapshot ${action} needs the backup FILE (see rbkv snapshot --help)`);
  if (positionals.length > 1) throw new UsageError(`snapshot ${action} takes one FILE, got ${positionals.length}: ${positionals.join(" ")}`);
  const file = positionals[0]!;
  if (file.trim() === "") throw new UsageError(`snapshot ${action}: FILE must not be empty`);
  return file;
}

/** `rbkv snapshot ...`: args are what follows the word "snapshot". */
export async function runSnapshotCommand(args: string[]): Promise<void> {
  const [action, ...rest] = args;
  if (action === undefined || action === "--help" || action === "-h" || action === "help") {
    if (action === undefined) throw new UsageError("snapshot needs an action: save or restore (see rbkv snapshot --help)");
    process.stdout.write(SNAPSHOT_USAGE);
    return;
  }
  if (action === "save") return save(rest);
  if (action === "restore") return restore(rest);
  throw new UsageError(`snapshot: unknown action ${JSON.stringify(action)}; expected save or restore`);
}

// ---- save ---------------------------------------------------------------------------------

async function save(args: string[]): Promise<void> {
  const { values, positionals } = parse("save", args, { endpoints: { type: "string" } });
  if (values.help) {
    process.stdout.write(SNAPSHOT_USAGE);
    return;
  }
  const file = onePositional("save", positionals);
  const endpoints = stringFlag(values, "endpoints", DEFAULT_ENDPOINT)
    .split(",")
    .map((e) => e.trim())
    .filter((e) => e !== "");
  // As etcdctl: a backup is one member's image; several endpoints would make it ambiguous.
  if (endpoints.length !== 1) throw new UsageError(`snapshot save takes exactly one endpoint, got ${endpoints.length}: ${endpoints.join(", ")}`);
  const endpoint = endpoints[0]!;
  parseHostPort(endpoint, "endpoints");
  const target = resolve(file);
  if (existsSync(target) && statSync(target).isDirectory()) throw new UsageError(`snapshot save: ${file} is a directory`);
  const part = `${target}.part`;

  let fh: FileHandle | null;
  try {
    fh = await open(part, "w");
  } catch (e) {
    throw new CommandError(`cannot create ${part}: ${(e as NodeJS.ErrnoException).code ?? errMsg(e)}`);
  }
  const client = createRbdkvClient(endpoint, { channelOptions: { "grpc.max_receive_message_length": MAX_CHUNK_MESSAGE } });
  const call = client.snapshot({});
  let interrupted = false;
  const onSignal = (): void => {
    interrupted = true;
    call.cancel();
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  let summary: BackupSummary;
  let chunkVersion: number | null = null;
  const handle = fh;
  // Each chunk is on its way to the file before the next is asked for: a slow disk slows the
  // stream (gRPC flow control) instead of filling memory.
  async function* received(): AsyncGenerator<Uint8Array> {
    for await (const chunk of call as AsyncIterable<{ data: Uint8Array; version: number }>) {
      if (chunkVersion === null) chunkVersion = chunk.version;
      else if (chunk.version !== chunkVersion) throw new BackupFileError(`the snapshot from ${endpoint}`, null, `chunks of two versions (${chunkVersion}, then ${chunk.version}) in one stream`);
      await handle.write(chunk.data);
      yield chunk.data;
    }
  }
  try {
    try {
      summary = await verifyBackup(received(), `the snapshot from ${endpoint}`);
      if (chunkVersion !== summary.header.version) throw new BackupFileError(`the snapshot from ${endpoint}`, null, `its chunks say version ${chunkVersion}, its header ${summary.header.version}`);
      await fh.sync();
      await fh.close();
      fh = null;
      renameSync(part, target);
      fsyncDir(dirname(target));
    } finally {
      process.removeListener("SIGINT", onSignal);
      process.removeListener("SIGTERM", onSignal);
      call.cancel();
      client.close();
    }
  } catch (e) {
    if (fh) await fh.close().catch(() => undefined);
    rmSync(part, { force: true });
    if (interrupted) throw new CommandError(`snapshot save interrupted; ${part} removed`);
    const se = e as Partial<grpc.ServiceError>;
    if (typeof se.code === "number" && typeof se.details === "string") {
      const why = se.code === grpc.status.UNAVAILABLE ? `cannot reach ${endpoint} or it cannot serve now: ${se.details}` : `${grpc.status[se.code] ?? se.code}: ${se.details}`;
      throw new CommandError(`snapshot from ${endpoint} failed (${why}); nothing saved`);
    }
    throw new CommandError(`${errMsg(e)}; nothing saved`, { cause: e });
  }
  const keys = summary.image.perDb.get("latest") ?? 0;
  process.stdout.write(
    `saved snapshot at version ${summary.header.version}: ${keys} keys, ${summary.fileBytes} bytes, from ${summary.header.nodeId} of cluster ${summary.header.clusterId}, to ${file}\n`,
  );
}

// ---- restore ------------------------------------------------------------------------------

/** Refuses a data directory that exists and holds anything (or is not a directory). */
function assertRestorableDir(dir: string): void {
  let entries: string[];
  try {
    const st = statSync(dir, { throwIfNoEntry: false });
    if (st === undefined) return;
    if (!st.isDirectory()) throw new UsageError(`--data-dir ${dir} exists and is not a directory`);
    entries = readdirSync(dir);
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new CommandError(`cannot read --data-dir ${dir}: ${(e as NodeJS.ErrnoException).code ?? errMsg(e)}`);
  }
  if (entries.length > 0) {
    throw new UsageError(`--data-dir ${dir} is not empty (${entries.length} entries, e.g. ${entries[0]}): a restore builds a new data directory; give one that is absent or empty`);
  }
}

/** The file's bytes, read sequentially (a new stream per pass). */
function fileSource(path: string): AsyncIterable<Uint8Array> {
  return createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Uint8Array>;
}

async function restore(args: string[]): Promise<void> {
  const { values, positionals } = parse("restore", args, {
    "data-dir": { type: "string" },
    "node-id": { type: "string" },
    "grpc-addr": { type: "string" },
    "raft-addr": { type: "string" },
    "raft-advertise-addr": { type: "string" },
  });
  if (values.help) {
    process.stdout.write(SNAPSHOT_USAGE);
    return;
  }
  const file = onePositional("restore", positionals);
  const dataDir = resolve(stringFlag(values, "data-dir"));
  const grpcAddr = stringFlag(values, "grpc-addr", DEFAULT_GRPC_ADDR);
  const raftAddr = stringFlag(values, "raft-addr", DEFAULT_RAFT_ADDR);
  const raftAdvertiseAddr = stringFlag(values, "raft-advertise-addr", raftAddr);
  parseHostPort(grpcAddr, "grpc-addr");
  parseHostPort(raftAddr, "raft-addr");
  parseHostPort(raftAdvertiseAddr, "raft-advertise-addr");
  if (grpcAddr === raftAddr) throw new UsageError("--grpc-addr and --raft-addr must differ");
  const nodeId = stringFlag(values, "node-id", grpcAddr);

  const st = statSync(file, { throwIfNoEntry: false });
  if (st === undefined) throw new CommandError(`${file}: no such file`);
  if (!st.isFile()) throw new CommandError(`${file} is not a regular file`);
  assertRestorableDir(dataDir);

  // Pass 1: the whole file, every record and checksum, before anything is created.
  let checked: BackupSummary;
  try {
    checked = await verifyBackup(fileSource(file), file);
  } catch (e) {
    throw refusal(file, e);
  }
  if (checked.header.version === 0) throw new CommandError(`${file}: the backup is at version 0 (an image of nothing)`);

  // Pass 2: build it beside the target, under a name no server would be started on.
  const staging = join(dirname(dataDir), `.${basename(dataDir)}.restore-${randomBytes(6).toString("hex")}`);
  try {
    mkdirSync(dirname(dataDir), { recursive: true });
    mkdirSync(staging);
  } catch (e) {
    throw new CommandError(`cannot create ${staging} to build --data-dir ${dataDir} in: ${(e as NodeJS.ErrnoException).code ?? errMsg(e)}`);
  }
  let clusterId: string;
  try {
    const kvDir = join(staging, KV_SUBDIR);
    let restored;
    try {
      restored = await restoreNodeStorage(fileSource(file), file, { logDir: staging, kvDir, nodeId, raftAddr: raftAdvertiseAddr, grpcAddr });
    } catch (e) {
      throw refusal(file, e);
    }
    if (restored.backup.header.version !== checked.header.version || restored.backup.image.records !== checked.image.records) {
      throw new CommandError(`${file} changed while it was being restored`);
    }
    clusterId = restored.clusterId;
    fsyncDir(kvDir);
    fsyncDir(staging);
    try {
      // rename(2) replaces an empty directory and refuses a non-empty one: the emptiness check
      // and the swap are one step, whatever happened to the directory meanwhile.
      renameSync(staging, dataDir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOTEMPTY" || code === "EEXIST") throw new UsageError(`--data-dir ${dataDir} is no longer empty; nothing restored`);
      throw new CommandError(`cannot move the restored directory into place at ${dataDir}: ${code ?? errMsg(e)}`);
    }
    fsyncDir(dirname(dataDir));
  } catch (e) {
    rmSync(staging, { recursive: true, force: true });
    throw e;
  }
  const keys = checked.image.perDb.get("latest") ?? 0;
  process.stdout.write(
    `restored snapshot at version ${checked.header.version} (${keys} keys, from cluster ${checked.header.clusterId}) into ${dataDir} as new cluster ${clusterId}; ` +
      `start it with: rbkv --log-dir=${dataDir} --kv-dir=${dataDir} --node-id=${nodeId} --grpc-addr=${grpcAddr} --raft-addr=${raftAddr}` +
      `${raftAdvertiseAddr !== raftAddr ? ` --raft-advertise-addr=${raftAdvertiseAddr}` : ""}\n`,
  );
}

/** A file the checks refused, as one line; anything else unchanged. */
function refusal(file: string, e: unknown): Error {
  if (e instanceof BackupFileError || e instanceof KvStoreError || e instanceof LogStoreError) {
    // Their messages start with the file (or the target) they are about.
    return new CommandError(`${e.message}; nothing restored`, { cause: e });
  }
  const code = (e as NodeJS.ErrnoException).code;
  if (typeof code === "string") return new CommandError(`cannot read ${file}: ${code}`, { cause: e });
  return e instanceof Error ? e : new Error(String(e));
}

// rbkv: one executable. With no subcommand it runs a node (a one-node cluster on the embedded
// defaults when given no flags); a first argument naming a subcommand (SUBCOMMANDS) runs that
// instead, with its own arguments.

import cac from "cac";
import { CommandError, UsageError } from "./cli/cli-error.ts";
import { runSnapshotCommand } from "./cli/snapshot.ts";
import { ConfigError, SERVER_FLAGS, parseServerOptions } from "./server/options.ts";
import { runServer } from "./server/run.ts";
import { VERSION } from "./version.ts";

/**
 * cac names an unknown option by its camelCased key ("Unknown option `--backupGoNum`"), a name
 * the user never typed: name it as given on the command line instead (--backup-go-num).
 */
function unknownOptionMessage(message: string, argv: readonly string[]): string {
  const m = /^Unknown option `--([^`]+)`$/.exec(message);
  if (!m) return message;
  const key = m[1]!;
  // cac's camelcase(): a dash between two lowercase letters goes, the second is upper-cased.
  const camel = (s: string): string => s.replace(/([a-z])-([a-z])/g, (_, a: string, b: string) => a + b.toUpperCase());
  for (const arg of argv) {
    if (!arg.startsWith("--")) continue;
    const name = arg.slice(2).split("=")[0]!;
    if (camel(name) === key || camel(name.replace(/^no-/, "")) === key) return `unknown option --${name}`;
  }
  return `unknown option --${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

function fail(message: string, code = 2): never {
  process.stderr.write(`rbkv: ${message}\n`);
  process.exit(code);
}

/** Subcommands by their first word; each gets the arguments after it. */
const SUBCOMMANDS: Readonly<Record<string, (args: string[]) => Promise<void>>> = {
  snapshot: runSnapshotCommand,
};

async function runSubcommand(run: (args: string[]) => Promise<void>, args: string[]): Promise<void> {
  try {
    await run(args);
  } catch (err) {
    if (err instanceof UsageError || err instanceof ConfigError) fail(err.message);
    if (err instanceof CommandError) fail(err.message, 1);
    fail((err as Error)?.message ?? String(err), 1);
  }
  // A subcommand is done when it returns: no client channel or file handle keeps it alive.
  process.exit(0);
}

async function main(argv: string[]): Promise<void> {
  const sub = argv[2];
  if (sub !== undefined && Object.hasOwn(SUBCOMMANDS, sub)) return runSubcommand(SUBCOMMANDS[sub]!, argv.slice(3));
  const cli = cac("rbkv");
  const serve = cli.command("", "Run an rbkv node (no flags: a one-node cluster on 127.0.0.1:9501, data in ./rbkv-data)");
  for (const f of SERVER_FLAGS) {
    const dflt = "default" in f ? ` (default: ${f.default})` : "";
    serve.option(f.flag, `${f.help}${dflt}`);
  }
  serve.example("rbkv --grpc-addr=localhost:9501 --raft-addr=localhost:9601 --log-dir=/tmp/node1 --kv-dir=/tmp/node1");
  serve.example("rbkv --grpc-addr=localhost:9502 --join-addr=localhost:9501 --raft-addr=localhost:9602 --log-dir=/tmp/node2 --kv-dir=/tmp/node2");
  serve.example("rbkv snapshot save backup.rbkv --endpoints localhost:9501     (back up a member; rbkv snapshot --help)");
  serve.example("rbkv snapshot restore backup.rbkv --data-dir /tmp/restored     (a new one-node cluster from a backup)");
  serve.action(async (raw: Record<string, unknown>) => {
    await runServer(parseServerOptions(raw));
  });
  cli.help();
  cli.version(VERSION);
  try {
    cli.parse(argv, { run: false });
    if (cli.options.help || cli.options.version) return;
    await cli.runMatchedCommand();
  } catch (err) {
    const e = err as Error;
    if (e.name === "CACError") fail(unknownOptionMessage(e.message, argv).replace(/`/g, ""));
    if (e instanceof ConfigError) fail(e.message.replace(/`/g, ""));
    fail(e.message, 1);
  }
}

await main(process.argv);

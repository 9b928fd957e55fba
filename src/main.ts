// rbkv: one executable. With no subcommand it runs a node (a one-node cluster on the embedded
// defaults when given no flags).

import cac from "cac";
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

async function main(argv: string[]): Promise<void> {
  const cli = cac("rbkv");
  const serve = cli.command("", "Run an rbkv node (no flags: a one-node cluster on 127.0.0.1:9501, data in ./rbkv-data)");
  for (const f of SERVER_FLAGS) {
    const dflt = "default" in f ? ` (default: ${f.default})` : "";
    serve.option(f.flag, `${f.help}${dflt}`);
  }
  serve.example("rbkv --grpc-addr=localhost:9501 --raft-addr=localhost:9601 --log-dir=/tmp/node1 --kv-dir=/tmp/node1");
  serve.example("rbkv --grpc-addr=localhost:9502 --join-addr=localhost:9501 --raft-addr=localhost:9602 --log-dir=/tmp/node2 --kv-dir=/tmp/node2");
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

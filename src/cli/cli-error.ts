// Errors of the subcommands (src/main.ts prints them as one `rbkv: ...` line).

/** The command line itself is wrong (exit status 2, as for a bad server flag). */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The command was understood but could not be done (exit status 1). */
export class CommandError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CommandError";
  }
}

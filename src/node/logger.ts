// Structured, levelled logs on stderr: one line per event, `time level node message`.

export type LogLevel = "debug" | "info" | "warn" | "error";

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

export interface Logger {
  debug(line: string): void;
  info(line: string): void;
  warn(line: string): void;
  error(line: string): void;
}

export function isLogLevel(s: string): s is LogLevel {
  return s in RANK;
}

export function createLogger(node: string, level: LogLevel, write: (line: string) => void = (l) => process.stderr.write(l + "\n")): Logger {
  const min = RANK[level];
  const emit = (lvl: LogLevel, line: string): void => {
    if (RANK[lvl] < min) return;
    write(`${new Date().toISOString()} ${lvl.toUpperCase().padEnd(5)} [${node}] ${line}`);
  };
  return {
    debug: (l) => emit("debug", l),
    info: (l) => emit("info", l),
    warn: (l) => emit("warn", l),
    error: (l) => emit("error", l),
  };
}

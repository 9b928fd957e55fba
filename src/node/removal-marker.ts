// The removal marker: a small text file in the --log-dir, written (and fsync'd) when this node
// learns that it was removed from the cluster. Its presence makes the node refuse to start on
// these directories again: a removed member that came back on its old log would not be part of
// any configuration, and an operator restarting it by mistake deserves a clear answer.

import { closeSync, existsSync, fsyncSync, openSync, readFileSync, writeSync } from "node:fs";
import { join, resolve } from "node:path";

const REMOVAL_MARKER_FILE = "REMOVED";

export function removalMarkerPath(logDir: string): string {
  return resolve(join(logDir, REMOVAL_MARKER_FILE));
}

/** The marker's text, or null when this node was never removed. */
export function readRemovalMarker(logDir: string): string | null {
  const file = removalMarkerPath(logDir);
  if (!existsSync(file)) return null;
  return readFileSync(file, "utf8").trim() || "this node was removed from the cluster";
}

export function writeRemovalMarker(logDir: string, text: string): void {
  const fd = openSync(removalMarkerPath(logDir), "w");
  try {
    writeSync(fd, `${text}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  const dirFd = openSync(resolve(logDir), "r");
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
}

// The committed generated codec (src/server/gen) is what `npm run gen` makes from proto/ with
// the pinned buf and ts-proto: regenerated into a temporary directory, every file must be
// identical and none missing or extra. Needs only node and the npm packages (buf's npm package
// carries its binary; it compiles the protos itself, no protoc).

import { expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

const ROOT = join(import.meta.dir, "../..");
const GEN = "src/server/gen";

function files(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

test("src/server/gen is exactly what `npm run gen` generates", () => {
  const out = mkdtempSync(join(tmpdir(), "rbkv-gen-"));
  try {
    const r = spawnSync(join(ROOT, "node_modules/.bin/buf"), ["generate", "--output", out], { cwd: ROOT, encoding: "utf8", timeout: 120_000 });
    if (r.status !== 0) throw new Error(`buf generate failed (${r.status ?? r.signal}): ${r.stderr}${r.error ? String(r.error) : ""}`);
    const fresh = join(out, GEN);
    const committed = join(ROOT, GEN);
    expect(files(fresh)).toEqual(files(committed));
    const stale = files(fresh).filter((f) => readFileSync(join(fresh, f), "utf8") !== readFileSync(join(committed, f), "utf8"));
    if (stale.length > 0) throw new Error(`${stale.join(", ")} differ from the generator's output: run \`npm run gen\` and commit the result`);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}, 120_000);

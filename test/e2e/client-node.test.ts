// The published shape of the client library: `rbkv/client` (package.json exports, built by
// build.ts into dist/) imported by plain Node.js 20 from a project that depends on rbkv, and its
// .d.ts files type-checked by a TypeScript consumer with Node's module resolution.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { spawn } from "bun";
import { TestCluster } from "./harness.ts";

const ROOT = resolve(import.meta.dir, "../..");
const FIXTURES = join(ROOT, "test/fixtures/client");

async function run(cmd: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = spawn(cmd, { cwd, stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => p.kill(9), 60_000);
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

describe("rbkv/client as a package", () => {
  let c: TestCluster;
  let app: string;

  beforeAll(async () => {
    if (!existsSync(join(ROOT, "dist/client/index.js"))) throw new Error("dist/client is missing: run `bun build.ts` (npm install does) first");
    // An application next to the repository: node_modules/rbkv is the package.
    app = mkdtempSync(join(tmpdir(), "rbkv-client-app-"));
    mkdirSync(join(app, "node_modules"));
    symlinkSync(ROOT, join(app, "node_modules/rbkv"), "dir");
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", type: "module", private: true }));
    copyFileSync(join(FIXTURES, "example.mjs"), join(app, "example.mjs"));
    copyFileSync(join(FIXTURES, "consumer.ts"), join(app, "consumer.ts"));
    c = await TestCluster.create(1);
    c.nodes[0]!.start();
    await c.waitServing(0);
  }, 60_000);

  afterAll(async () => {
    if (c) await c.destroy();
    if (app) rmSync(app, { recursive: true, force: true });
  });

  test("the README example runs under plain Node.js", async () => {
    const r = await run(["node", "example.mjs", c.nodes[0]!.spec.grpcAddr], app);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines[0]).toMatch(/^hello = world at version (\d+) \(written at \1\)$/);
    expect(lines[1]).toBe("txn succeeded: true");
    const pages = lines.slice(2, 5).map((l) => /^page at version (\d+): (.*)$/.exec(l));
    expect(pages.map((m) => m?.[2])).toEqual(["fruit/0 fruit/1", "fruit/2 fruit/3", "fruit/4"]);
    expect(new Set(pages.map((m) => m?.[1])).size).toBe(1);
    expect(lines[5]).toBe("missing = null");
    expect(lines.length).toBe(6);
  }, 60_000);

  test("the .d.ts files type-check a consumer with Node's module resolution", async () => {
    writeFileSync(
      join(app, "tsconfig.json"),
      JSON.stringify({ compilerOptions: { target: "ES2022", module: "nodenext", moduleResolution: "nodenext", strict: true, noEmit: true, skipLibCheck: false, types: [] }, files: ["consumer.ts"] }),
    );
    const ok = await run([join(ROOT, "node_modules/.bin/tsc"), "-p", "."], app);
    expect(ok.stdout + ok.stderr).toBe("");
    expect(ok.code).toBe(0);
    // And a misuse is caught, so the check above is a real one.
    writeFileSync(join(app, "bad.ts"), 'import { Client } from "rbkv/client";\nexport const n: number = Client.connect({ endpoints: ["x"] });\n');
    writeFileSync(join(app, "tsconfig.json"), JSON.stringify({ compilerOptions: { module: "nodenext", moduleResolution: "nodenext", strict: true, noEmit: true, types: [] }, files: ["bad.ts"] }));
    const bad = await run([join(ROOT, "node_modules/.bin/tsc"), "-p", "."], app);
    expect(bad.code).not.toBe(0);
    expect(bad.stdout).toContain("Promise<Client>");
  }, 60_000);
});

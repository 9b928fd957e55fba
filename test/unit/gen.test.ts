// The committed generated codec (src/server/gen) is what `npm run gen` makes from proto/ with
// the pinned buf and ts-proto: regenerated into a temporary directory by the same pipeline
// (proto/gen.ts: buf generate, then the rewrite that removes ts-proto's `any`s), every file
// must be identical and none missing or extra. Needs only node and the npm packages (buf's npm
// package carries its binary; it compiles the protos itself, no protoc).

import { expect, test } from "bun:test";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { GEN, generate, postprocess } from "../../proto/gen.ts";

const ROOT = join(import.meta.dir, "../..");

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
    generate(out);
    const fresh = join(out, GEN);
    const committed = join(ROOT, GEN);
    expect(files(fresh)).toEqual(files(committed));
    const stale = files(fresh).filter((f) => readFileSync(join(fresh, f), "utf8") !== readFileSync(join(committed, f), "utf8"));
    if (stale.length > 0) throw new Error(`${stale.join(", ")} differ from the generator's output: run \`npm run gen\` and commit the result`);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}, 120_000);

test("the post-processing rewrites the known `any` patterns and rejects any other", () => {
  const src = [
    'import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";',
    "",
    'export const protobufPackage = "p";',
    "const previousRecursionDepth = (reader as any).__tsProtoDecodeDepth ?? 0;",
    "          message.op = reader.int32() as any;",
    "      M_Entry.encode({ key: key as any, value }, writer.uint32(42).fork()).join();",
    "",
  ].join("\n");
  const out = postprocess("x.ts", src);
  expect(out).toContain("type DecodeDepthReader = BinaryReader & { __tsProtoDecodeDepth?: number };\n\nexport const protobufPackage");
  expect(out).toContain("(reader as DecodeDepthReader).__tsProtoDecodeDepth ?? 0;");
  expect(out).toContain("          message.op = reader.int32() as typeof message.op;");
  expect(out).toContain("M_Entry.encode({ key, value }, ");
  expect(out).not.toMatch(/:\s*any\b|as any\b|<any>/);
  expect(() => postprocess("y.ts", "const x = (y as any).z;\n")).toThrow("y.ts:1: const x = (y as any).z;");
  expect(() => postprocess("y.ts", "function f(a: any) {}\n")).toThrow("y.ts:1:");
  expect(() => postprocess("y.ts", "message.ops.push(reader.int32() as any);\n")).toThrow("add a rewrite");
});

// `npm run gen`: generates src/server/gen/ from proto/ — `buf generate` (proto/buf.gen.yaml: ts-proto
// with the options listed there), then a post-processing pass that removes every `any` ts-proto
// emits, so the committed codec meets the project rule of no `any` in src/.
// test/unit/gen.test.ts runs this same generate() into a temporary directory and compares.
//
// ts-proto 2.18 has no option for these (checked in its main.js): the decode recursion guard is
// emitted unconditionally, and the only alternative for enum reads is stringEnums, which changes
// every enum's TypeScript type. The post-processing changes types only, never runtime behaviour
// (the emitted JavaScript is the same, since casts are erased):
//
//   (reader as any).__tsProtoDecodeDepth     -> (reader as DecodeDepthReader).__tsProtoDecodeDepth
//       the depth counter ts-proto keeps on the BinaryReader; DecodeDepthReader is a local type
//       (BinaryReader & { __tsProtoDecodeDepth?: number }) added to each file that needs it
//   message.f = reader.int32() as any;       -> message.f = reader.int32() as typeof message.f;
//       an enum field read: cast to the field's own (enum) type
//   { key: key as any, value }               -> { key, value }
//       a map entry's key: the Map's key type already is the entry's key type (tsc checks it)
//
// Each rewrite is an exact textual pattern. Anything left afterwards that the pre-stop hook's
// `any` check (ANY below) would match fails generation with the file and line, so a new ts-proto
// version, option or .proto construct cannot silently bring an `any` back: extend the table.

import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

const ROOT = join(import.meta.dir, "..");
/** Where buf.gen.yaml puts the plugin's output, relative to buf's --output directory. */
export const GEN = "src/server/gen";

/** The pre-stop hook's check: `grep -rnE ':\s*any\b|as any\b|<any>' src --include='*.ts'`. */
const ANY = /:\s*any\b|as any\b|<any>/;

const DEPTH_TYPE = "DecodeDepthReader";
const DEPTH_DECL =
  `/** The decode recursion counter ts-proto keeps on the reader (declared by proto/gen.ts so the guard is typed). */\n` +
  `type ${DEPTH_TYPE} = BinaryReader & { __tsProtoDecodeDepth?: number };\n\n`;
/** The first line after a generated file's imports; the type declaration goes before it. */
const AFTER_IMPORTS = "export const protobufPackage = ";

interface Rewrite {
  readonly name: string;
  readonly pattern: RegExp;
  readonly replacement: string;
}

const REWRITES: readonly Rewrite[] = [
  { name: "decode depth guard", pattern: /\(reader as any\)\.__tsProtoDecodeDepth\b/g, replacement: `(reader as ${DEPTH_TYPE}).__tsProtoDecodeDepth` },
  { name: "enum field read", pattern: /^([ \t]*)message\.(\w+) = reader\.int32\(\) as any;$/gm, replacement: "$1message.$2 = reader.int32() as typeof message.$2;" },
  { name: "map entry key", pattern: /\{ key: key as any, value \}/g, replacement: "{ key, value }" },
];

/** Rewrites one generated file's text; throws if any `any` remains. */
export function postprocess(file: string, source: string): string {
  let out = source;
  for (const r of REWRITES) out = out.replace(r.pattern, r.replacement);
  if (out.includes(`(reader as ${DEPTH_TYPE})`)) {
    if (new RegExp(`\\b${DEPTH_TYPE}\\b`).test(source)) throw new Error(`${file}: already uses the name ${DEPTH_TYPE}; rename it in proto/gen.ts`);
    if (!/^import \{[^}]*\bBinaryReader\b[^}]*\} from "@bufbuild\/protobuf\/wire";$/m.test(out)) throw new Error(`${file}: uses the decode depth guard but does not import BinaryReader from @bufbuild/protobuf/wire`);
    const at = out.indexOf(`\n${AFTER_IMPORTS}`);
    if (at < 0) throw new Error(`${file}: no "${AFTER_IMPORTS}" line to put ${DEPTH_TYPE} before; update proto/gen.ts`);
    out = out.slice(0, at + 1) + DEPTH_DECL + out.slice(at + 1);
  }
  const left = out.split("\n").flatMap((line, i) => (ANY.test(line) ? [`${file}:${i + 1}: ${line.trim()}`] : []));
  if (left.length > 0) throw new Error(`generated code has an \`any\` that proto/gen.ts does not rewrite (add a rewrite for it):\n${left.join("\n")}`);
  return out;
}

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".ts"))
    .sort()
    .map((f) => join(dir, f));
}

/** Runs `buf generate --output outDir` (the codec lands in outDir/GEN), then post-processes it. */
export function generate(outDir: string): void {
  const r = spawnSync(join(ROOT, "node_modules/.bin/buf"), ["generate", "--template", "proto/buf.gen.yaml", "--output", outDir], { cwd: ROOT, encoding: "utf8", timeout: 120_000 });
  if (r.status !== 0) throw new Error(`buf generate failed (${r.status ?? r.signal}): ${r.stderr}${r.error ? String(r.error) : ""}`);
  const gen = join(outDir, GEN);
  const files = tsFiles(gen);
  if (files.length === 0) throw new Error(`buf generate wrote no .ts files under ${gen}`);
  // Check every file before writing any, so a failure leaves no half-processed tree.
  const done = files.map((f) => [f, postprocess(relative(outDir, f), readFileSync(f, "utf8"))] as const);
  for (const [f, text] of done) writeFileSync(f, text);
}

/** `npm run gen`: generates into a temporary directory, and only if that succeeds replaces ROOT/GEN. */
if (import.meta.main) {
  const tmp = mkdtempSync(join(tmpdir(), "rbkv-gen-"));
  try {
    generate(tmp);
    rmSync(join(ROOT, GEN), { recursive: true, force: true });
    cpSync(join(tmp, GEN), join(ROOT, GEN), { recursive: true });
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

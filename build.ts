// Compiles src/main.ts into the single executable ./rbkv with `bun build --compile`, then the
// client library (src/client) into dist/ for the package export "rbkv/client".
//
// lmdb-js finds its native addon at run time through node-gyp-build, which cannot look inside
// a compiled binary. This plugin rewrites that lookup into a static require() of the addon
// from @lmdb/lmdb-<platform>-<arch>, which Bun then embeds in the executable.

import type { BunPlugin } from "bun";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";

const platformPackage = `@lmdb/lmdb-${process.platform}-${process.arch}`;

function addonPath(): string {
  const pkgJson = Bun.resolveSync(`${platformPackage}/package.json`, import.meta.dir);
  const dir = dirname(pkgJson);
  // N-API build first (works on any Node ABI); glibc, then musl.
  for (const name of ["node.napi.glibc.node", "node.napi.node", "node.napi.musl.node"]) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  throw new Error(`no N-API lmdb addon found in ${dir}`);
}

const embedLmdbAddon: BunPlugin = {
  name: "embed-lmdb-addon",
  setup(build) {
    const addon = addonPath();
    build.onLoad({ filter: /[\\/]lmdb[\\/]native\.js$/ }, async (args) => {
      const source = await Bun.file(args.path).text();
      const patched = source.replace("loadNAPI(dirName)", `require(${JSON.stringify(addon)})`);
      if (patched === source) throw new Error(`${args.path}: the addon lookup "loadNAPI(dirName)" was not found; update build.ts for this lmdb version`);
      return { contents: patched, loader: "js" };
    });
  },
};

const outfile = process.argv[2] ?? join(import.meta.dir, "rbkv");
const result = await Bun.build({
  entrypoints: [join(import.meta.dir, "src/main.ts")],
  compile: { outfile },
  target: "bun",
  minify: { syntax: true, whitespace: true, identifiers: false },
  sourcemap: "linked",
  plugins: [embedLmdbAddon],
});
if (!result.success) {
  for (const log of result.logs) console.error(log);
  console.error("build failed");
  process.exit(1);
}
console.log(`built ${outfile}`);

// The client library (package export "./client"): plain JavaScript for Node.js 20 and Bun, its
// dependencies left to node_modules, and .d.ts files from tsconfig.client.json.
const clientOut = join(import.meta.dir, "dist/client");
const client = await Bun.build({
  entrypoints: [join(import.meta.dir, "src/client/index.ts")],
  outdir: clientOut,
  target: "node",
  format: "esm",
  packages: "external",
  sourcemap: "linked",
});
if (!client.success) {
  for (const log of client.logs) console.error(log);
  console.error("client library build failed");
  process.exit(1);
}
const tsc = Bun.spawnSync([join(import.meta.dir, "node_modules/.bin/tsc"), "-p", join(import.meta.dir, "tsconfig.client.json")], { stdout: "inherit", stderr: "inherit" });
if (tsc.exitCode !== 0) {
  console.error("client library declarations failed (tsc -p tsconfig.client.json)");
  process.exit(1);
}
console.log(`built ${clientOut} (client library, types in dist/client-types)`);

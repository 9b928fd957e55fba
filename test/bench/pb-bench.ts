// Micro-benchmark of the gRPC codec on the hot paths (not part of `bun test`): the generated
// codec (src/server/gen, ts-proto over @bufbuild/protobuf) against the hand-written pb.ts it
// replaced, taken from git history at OLD_CODEC_COMMIT.
//   bun test/bench/pb-bench.ts [--iterations N] [--rounds R] [--value-bytes B]
// Each row is what one request costs in grpc-js's (de)serializer callbacks: bytes -> Command for
// Execute's request, CommandResponse -> Buffer for its answer, WatchResponse -> Buffer per event.
// Reports ns/op, the median of --rounds runs of --iterations operations after a warm-up. Each
// (row, codec) runs in a process of its own, so that no call site the JIT sees mixes the two
// codecs or several rows (which made in-process numbers swing by 2-3x).

import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Command, CommandResponse, Event_EventType, OpType, ReadConsistency, WatchResponse } from "../../src/server/gen/rbkv.ts";
import { RbdkvService } from "../../src/server/grpc-service.ts";

/** The last commit with the hand-written src/server/pb.ts. */
const OLD_CODEC_COMMIT = "060f8fb53e12679980b47a2adbff85b5af189cc8";

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}
const ITERATIONS = arg("iterations", 500_000);
const ROUNDS = arg("rounds", 5);
const VALUE = arg("value-bytes", 256);

/** The old codec's public surface that the benchmark uses. */
interface OldCodec {
  decodeCommand(b: Uint8Array): unknown;
  encodeCommand(m: object): Buffer;
  encodeCommandResponse(m: object): Buffer;
  encodeWatchResponse(m: object): Buffer;
}

async function loadOldCodec(): Promise<{ codec: OldCodec; cleanup: () => void }> {
  const root = join(import.meta.dir, "../..");
  const source = execFileSync("git", ["show", `${OLD_CODEC_COMMIT}:src/server/pb.ts`], { cwd: root, encoding: "utf8" });
  const dir = mkdtempSync(join(tmpdir(), "rbkv-pb-bench-"));
  const file = join(dir, "pb-old.ts");
  writeFileSync(file, source);
  const codec = (await import(file)) as OldCodec;
  return { codec, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

// Results go through a sink so that the JIT cannot drop the work.
let sink = 0;

function nsPerOp(f: () => number): number {
  for (let i = 0; i < Math.min(ITERATIONS, 50_000); i++) sink += f();
  const times: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = Bun.nanoseconds();
    for (let i = 0; i < ITERATIONS; i++) sink += f();
    times.push((Bun.nanoseconds() - t0) / ITERATIONS);
  }
  return median(times);
}

const te = new TextEncoder();
const key = te.encode("bench/key-0001234");
const value = new Uint8Array(VALUE).fill(0x61);
const watcherId = "watch-lx3k9a-4f2c1d";

// Requests as a client sends them (protoc-equivalent bytes, from the generated encoder; both
// codecs produce the same bytes, which the golden vectors check).
const putBytes = Command.encode(
  Command.fromPartial({ op: OpType.Put, kv: { key, value, meta: 1, ttl: { seconds: 30 } } }),
).finish();
const getBytes = Command.encode(Command.fromPartial({ op: OpType.Get, rc: ReadConsistency.Serializable, kv: { key, version: 123_456_789 } })).finish();

// Responses as the server's handlers build them (full messages).
const putResponse: CommandResponse = { key, value: new Uint8Array(0), meta: 0, version: 123_456_789 };
const getResponse: CommandResponse = { key, value, meta: 1, version: 123_456_789 };
const watchResponse: WatchResponse = {
  watcherId,
  event: { type: Event_EventType.Put, key, value, meta: 1, version: 123_456_789, expireAt: 1_735_689_600_123, watcherId },
};

const { codec: old, cleanup } = await loadOldCodec();
try {
  for (const [what, a, b] of [
    ["put request", old.encodeCommand(old.decodeCommand(putBytes) as object), putBytes],
    ["get request", old.encodeCommand(old.decodeCommand(getBytes) as object), getBytes],
    ["put response", old.encodeCommandResponse(putResponse), CommandResponse.encode(putResponse).finish()],
    ["get response", old.encodeCommandResponse(getResponse), CommandResponse.encode(getResponse).finish()],
    ["watch response", old.encodeWatchResponse(watchResponse), WatchResponse.encode(watchResponse).finish()],
  ] as const) {
    if (Buffer.compare(Buffer.from(a), Buffer.from(b)) !== 0) throw new Error(`the two codecs disagree on the ${what}`);
  }

  // The generated side runs exactly what grpc-js calls: RbdkvService's (de)serializers.
  const decodeCommand = RbdkvService.execute.requestDeserialize;
  const encodeCommandResponse = RbdkvService.execute.responseSerialize;
  const encodeWatchResponse = RbdkvService.watch.responseSerialize;
  const putBuf = Buffer.from(putBytes);
  const getBuf = Buffer.from(getBytes);
  const rows: [string, () => number, () => number][] = [
    ["Command decode (Put, ttl)", () => (old.decodeCommand(putBuf) as Command).op, () => decodeCommand(putBuf).op],
    ["Command decode (Get, version)", () => (old.decodeCommand(getBuf) as Command).op, () => decodeCommand(getBuf).op],
    ["CommandResponse encode (Put)", () => old.encodeCommandResponse(putResponse).length, () => encodeCommandResponse(putResponse).length],
    ["CommandResponse encode (Get)", () => old.encodeCommandResponse(getResponse).length, () => encodeCommandResponse(getResponse).length],
    [
      "Execute Put: decode + encode",
      () => (old.decodeCommand(putBuf) as Command).op + old.encodeCommandResponse(putResponse).length,
      () => decodeCommand(putBuf).op + encodeCommandResponse(putResponse).length,
    ],
    ["WatchResponse encode", () => old.encodeWatchResponse(watchResponse).length, () => encodeWatchResponse(watchResponse).length],
  ];

  const row = process.argv.indexOf("--row");
  if (row >= 0) {
    // A child: one (row, codec), printed as a bare number.
    const [, fOld, fNew] = rows[Number(process.argv[row + 1])]!;
    console.log(nsPerOp(process.argv[row + 2] === "old" ? fOld : fNew).toFixed(1));
  } else {
    console.log(`${ITERATIONS} ops x ${ROUNDS} rounds (median), value ${VALUE} bytes, bun ${Bun.version}, one process per cell`);
    console.log(`| operation | hand-written pb.ts (ns/op) | generated (ns/op) |`);
    console.log(`| --- | ---: | ---: |`);
    const passOn = ["--iterations", String(ITERATIONS), "--rounds", String(ROUNDS), "--value-bytes", String(VALUE)];
    const cell = (i: number, which: string): string => {
      const r = spawnSync(process.execPath, [import.meta.path, ...passOn, "--row", String(i), which], { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`row ${i} ${which}: ${r.stderr}`);
      return Number(r.stdout.trim()).toFixed(0);
    };
    rows.forEach(([name], i) => console.log(`| ${name} | ${cell(i, "old")} | ${cell(i, "new")} |`));
  }
  if (sink === 0.5) console.log(sink); // never: keeps `sink` observable
} finally {
  cleanup();
}

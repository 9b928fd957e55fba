// The peer transport on real loopback sockets (127.0.0.1, ephemeral ports only): ordering,
// coalescing, reconnects, handshake refusals, stray clients, queue bounds, snapshot streaming
// with backpressure, and a clean stop.

import { afterEach, describe, expect, test } from "bun:test";
import { EntryType, type Message, MessageType, message } from "../../src/raft/messages.ts";
import { Writer, encodeMessage } from "../../src/transport/codec.ts";
import { FrameParser, beginFrame, endFrame } from "../../src/transport/frame.ts";
import { ConnKind, FrameType, PeerTransport, SNAPSHOT_HIGH_WATER, SnapshotBody, type TransportOptions, encodeHello } from "../../src/transport/transport.ts";

const HOST = "127.0.0.1";
const dec = new TextDecoder();

interface TestNode {
  id: string;
  t: PeerTransport;
  port: number;
  addr: string;
  got: Message[];
  batches: number[];
  logs: { level: string; line: string }[];
  unreachable: string[];
  snapStatus: { to: string; ok: boolean }[];
}

const live: PeerTransport[] = [];

afterEach(async () => {
  await Promise.all(live.splice(0).map((t) => t.stop()));
});

async function node(id: string, over: Partial<TransportOptions> = {}): Promise<TestNode> {
  const n: TestNode = {
    id,
    t: null as unknown as PeerTransport,
    port: 0,
    addr: "",
    got: [],
    batches: [],
    logs: [],
    unreachable: [],
    snapStatus: [],
  };
  n.t = new PeerTransport({
    nodeId: id,
    clusterId: "test-cluster",
    listenHost: HOST,
    listenPort: 0,
    onMessages(msgs) {
      n.batches.push(msgs.length);
      n.got.push(...msgs);
    },
    onSnapshot: async () => {
      throw new Error("no snapshot expected");
    },
    openSnapshot: async function* () {},
    onSnapshotStatus(to, ok) {
      n.snapStatus.push({ to, ok });
    },
    onUnreachable(to) {
      n.unreachable.push(to);
    },
    logger(level, line) {
      n.logs.push({ level, line });
    },
    ...over,
  });
  live.push(n.t);
  const { port } = await n.t.start();
  n.port = port;
  n.addr = `${HOST}:${port}`;
  return n;
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}

function app(from: string, to: string, seq: number, nEntries = 0, entryBytes = 0): Message {
  const m = message(MessageType.App, from, to, 3);
  m.index = seq;
  m.commit = seq;
  for (let i = 0; i < nEntries; i++) {
    const data = new Uint8Array(entryBytes).fill((seq + i) & 0xff);
    m.entries.push({ term: 3, index: seq * 100 + i, type: EntryType.Normal, data });
  }
  return m;
}

/** A port that nothing listens on (bound, read back, released). */
async function deadPort(): Promise<number> {
  const l = Bun.listen({ hostname: HOST, port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

/** A raw TCP client: what it receives, and whether the server closed it. */
async function rawClient(port: number): Promise<{ write(b: Uint8Array | string): void; received: () => Uint8Array; closed: () => boolean; end(): void }> {
  const chunks: Uint8Array[] = [];
  let closed = false;
  const s = await Bun.connect({
    hostname: HOST,
    port,
    socket: {
      binaryType: "uint8array",
      data(_s, d) {
        chunks.push(d);
      },
      close() {
        closed = true;
      },
      error() {
        closed = true;
      },
    },
  });
  return {
    write: (b) => void s.write(b),
    received: () => {
      const total = chunks.reduce((a, c) => a + c.length, 0);
      const out = new Uint8Array(total);
      let at = 0;
      for (const c of chunks) {
        out.set(c, at);
        at += c.length;
      }
      return out;
    },
    closed: () => closed,
    end: () => s.end(),
  };
}

function framesIn(bytes: Uint8Array): { type: number; payload: Uint8Array }[] {
  const out: { type: number; payload: Uint8Array }[] = [];
  new FrameParser(1 << 20).push(bytes, (type, payload) => void out.push({ type, payload: payload.slice() }));
  return out;
}

/** Deterministic pseudo-random snapshot body. */
function* snapshotChunks(totalBytes: number, chunkBytes: number, seed: number): Generator<Uint8Array> {
  let x = seed >>> 0 || 1;
  for (let at = 0; at < totalBytes; at += chunkBytes) {
    const c = new Uint8Array(Math.min(chunkBytes, totalBytes - at));
    for (let i = 0; i < c.length; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      c[i] = x;
      c[i + 1] = x >>> 8;
      c[i + 2] = x >>> 16;
      c[i + 3] = x >>> 24;
    }
    yield c;
  }
}

function snapMessage(from: string, to: string, index: number): Message {
  const m = message(MessageType.Snap, from, to, 5);
  m.snapshot = { meta: { index, term: 4, conf: { voters: [from, to, "ç"], learners: ["l1"] } }, data: new TextEncoder().encode(`snap-${index}`) };
  return m;
}

describe("PeerTransport: messages", () => {
  test("two transports exchange messages in order, with entries intact", async () => {
    const a = await node("a");
    const b = await node("b");
    a.t.setPeer("b", b.addr);
    b.t.setPeer("a", a.addr);
    const N = 2000;
    for (let i = 0; i < N; i += 10) {
      a.t.send(Array.from({ length: 10 }, (_, k) => app("a", "b", i + k, (i + k) % 4, 100)));
      b.t.send([app("b", "a", i / 10)]);
      if (i % 200 === 0) await Bun.sleep(1); // spread over many turns
    }
    await waitFor(() => b.got.length === N && a.got.length === N / 10, "all messages");
    expect(b.got.map((m) => m.index)).toEqual(Array.from({ length: N }, (_, i) => i));
    expect(a.got.map((m) => m.index)).toEqual(Array.from({ length: N / 10 }, (_, i) => i));
    for (const m of b.got) expect(m).toEqual(app("a", "b", m.index, m.index % 4, 100));
    expect(a.t.stats()[0]).toMatchObject({ id: "b", connected: true, sentMessages: N, droppedMessages: 0, queuedBytes: 0 });
  });

  test("three transports: each receives every other's messages in per-sender order", async () => {
    const ns = [await node("n1"), await node("n2"), await node("n3")];
    for (const x of ns) for (const y of ns) if (x !== y) x.t.setPeer(y.id, y.addr);
    const N = 300;
    for (let i = 0; i < N; i++) {
      for (const x of ns) x.t.send(ns.filter((y) => y !== x).map((y) => app(x.id, y.id, i, 1, 32)));
      if (i % 50 === 0) await Bun.sleep(1);
    }
    await waitFor(() => ns.every((x) => x.got.length === 2 * N), "all messages");
    for (const y of ns) {
      for (const x of ns) {
        if (x === y) continue;
        const seq = y.got.filter((m) => m.from === x.id).map((m) => m.index);
        expect(seq).toEqual(Array.from({ length: N }, (_, i) => i));
      }
    }
  });

  test("messages queued in one turn go out in one write and arrive as one batch", async () => {
    const a = await node("a");
    const b = await node("b");
    a.t.setPeer("b", b.addr);
    a.t.send([app("a", "b", 0)]);
    await waitFor(() => b.got.length === 1, "the first message");
    b.batches.length = 0;
    for (let i = 1; i <= 200; i++) a.t.send([app("a", "b", i, 1, 16)]); // 200 calls, one turn
    await waitFor(() => b.got.length === 201, "the burst");
    expect(b.batches).toEqual([200]);
  });

  test("a peer that starts later gets the queued messages after reconnecting", async () => {
    const port = await deadPort();
    const a = await node("a");
    a.t.setPeer("b", `${HOST}:${port}`);
    for (let i = 0; i < 50; i++) a.t.send([app("a", "b", i, 2, 64)]);
    await Bun.sleep(300); // a few failed attempts with backoff
    expect(a.unreachable).toContain("b");
    expect(a.t.stats()[0]).toMatchObject({ connected: false, queuedMessages: 50 });
    const b = await node("b", { listenPort: port });
    await waitFor(() => b.got.length === 50, "queued messages after b starts", 6000);
    expect(b.got.map((m) => m.index)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(a.logs.some((l) => l.level === "info" && l.line.includes("connected to b"))).toBe(true);
  });

  test("reconnects after the peer restarts, and follows an address change", async () => {
    const a = await node("a");
    let b = await node("b");
    a.t.setPeer("b", b.addr);
    a.t.send([app("a", "b", 1)]);
    await waitFor(() => b.got.length === 1, "first delivery");
    const oldPort = b.port;
    await b.t.stop();
    await Bun.sleep(50);
    a.t.send([app("a", "b", 2)]); // lost or queued: the connection is gone
    b = await node("b", { listenPort: oldPort });
    await Bun.sleep(20);
    a.t.send([app("a", "b", 3)]);
    await waitFor(() => b.got.some((m) => m.index === 3), "delivery after restart", 6000);
    expect(a.logs.some((l) => l.line.includes("lost connection to b"))).toBe(true);
    // b moves to a new port.
    const b2 = await node("b");
    a.t.setPeer("b", b2.addr);
    a.t.send([app("a", "b", 4)]);
    await waitFor(() => b2.got.some((m) => m.index === 4), "delivery at the new address");
  });

  test("a peer from another cluster is refused: nothing delivered, both sides log an error", async () => {
    const a = await node("a", { clusterId: "other-cluster" });
    const b = await node("b");
    a.t.setPeer("b", b.addr);
    for (let i = 0; i < 10; i++) a.t.send([app("a", "b", i)]);
    await waitFor(() => b.logs.some((l) => l.level === "error" && l.line.includes("other-cluster")), "b's refusal log");
    await waitFor(() => a.logs.some((l) => l.level === "error" && l.line.includes("refused by peer")), "a's refusal log");
    await Bun.sleep(100);
    expect(b.got).toEqual([]);
    expect(a.unreachable).toContain("b");
    // b still serves a peer from its own cluster.
    const c = await node("c");
    c.t.setPeer("b", b.addr);
    c.t.send([app("c", "b", 7)]);
    await waitFor(() => b.got.length === 1, "c's message");
    expect(b.got[0]!.from).toBe("c");
  });

  test("a removed member is cut off and refused with the index of its removal; accepted again once re-added", async () => {
    const told: { by: string; at: number; reason: string }[] = [];
    const a = await node("a", { onRemoved: (by, at, reason) => told.push({ by, at, reason }) });
    const b = await node("b");
    a.t.setPeer("b", b.addr);
    a.t.send([app("a", "b", 1)]);
    await waitFor(() => b.got.length === 1, "the first message");
    // b applies a's removal: the open connection from a is closed and a's next dial refused.
    b.t.refuseRemoved("a", 42);
    await Bun.sleep(50);
    a.t.send([app("a", "b", 2)]);
    await waitFor(() => told.length > 0, "a hears of its removal");
    expect(told[0]).toMatchObject({ by: "b", at: 42 });
    expect(told[0]!.reason).toContain("removed from the cluster at log index 42");
    expect(b.got.map((m) => m.index)).toEqual([1]);
    // Added again at index 50 (a fresh node with the same id says so in its Hello): accepted,
    // even though b still remembers the removal at 42.
    const again = await node("a", { joinedAt: 50 });
    again.t.setPeer("b", b.addr);
    again.t.send([app("a", "b", 3)]);
    await waitFor(() => b.got.length === 2, "the re-added node's message");
    expect(b.got[1]!.index).toBe(3);
  });

  test("a removed node with nothing to send still hears of it: it dials again after losing the connection, or when probed", async () => {
    const told: string[] = [];
    const a = await node("a", { onRemoved: (by) => told.push(by) });
    const b = await node("b");
    const c = await node("c");
    a.t.setPeer("b", b.addr);
    a.t.send([app("a", "b", 1)]);
    await waitFor(() => b.got.length === 1, "the first message");
    // b closes a's connection on applying the removal; a sends nothing more, yet redials once.
    b.t.refuseRemoved("a", 7);
    await waitFor(() => told.includes("b"), "a hears of its removal from b");
    // A peer a never talked to: probe() dials it with nothing to send.
    c.t.refuseRemoved("a", 7);
    a.t.setPeer("c", c.addr);
    a.t.probe("c");
    await waitFor(() => told.includes("c"), "a hears of its removal from c");
    expect(c.got).toEqual([]);
  });

  test("a peer that dials the wrong node id is refused", async () => {
    const a = await node("a");
    const b = await node("b");
    a.t.setPeer("zz", b.addr); // b's address, but a thinks it is "zz"
    a.t.send([app("a", "zz", 1)]);
    await waitFor(() => b.logs.some((l) => l.level === "error" && l.line.includes('wants "zz"')), "b's refusal");
    expect(b.got).toEqual([]);
  });

  test("random bytes and an HTTP request do not crash the server; it still serves a real peer", async () => {
    const b = await node("b");
    const http = await rawClient(b.port);
    http.write("GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    const junk = await rawClient(b.port);
    const bytes = new Uint8Array(4096);
    crypto.getRandomValues(bytes);
    bytes[0] = 0x00; // surely not "R"
    junk.write(bytes);
    await waitFor(() => http.closed() && junk.closed(), "the server to close both stray connections");
    expect(b.logs.filter((l) => l.level === "error" && l.line.includes("not an rbkv peer")).length).toBe(2);
    expect(b.logs.some((l) => l.line.includes('"GET /metrics'))).toBe(true);
    // The HTTP client got a refusal frame it cannot read: harmless.
    const refusal = framesIn(http.received());
    expect(refusal[0]?.type).toBe(FrameType.Refuse);

    const a = await node("a");
    a.t.setPeer("b", b.addr);
    a.t.send([app("a", "b", 1), app("a", "b", 2)]);
    await waitFor(() => b.got.length === 2, "the real peer's messages");
  });

  test("a wrong protocol version is refused with a reason", async () => {
    const b = await node("b");
    const c = await rawClient(b.port);
    const w = new Writer(64);
    encodeHello(w, ConnKind.Messages, "test-cluster", "a", "b", 99);
    c.write(w.view());
    await waitFor(() => c.closed(), "the refusal");
    const frames = framesIn(c.received());
    expect(frames.length).toBe(1);
    expect(frames[0]!.type).toBe(FrameType.Refuse);
    expect(dec.decode(frames[0]!.payload)).toContain("unsupported protocol version 99");
    expect(b.logs.some((l) => l.level === "error" && l.line.includes("version 99"))).toBe(true);
  });

  test("garbage after a valid handshake closes only that connection; earlier whole messages are delivered", async () => {
    const b = await node("b");
    const a = await node("a");
    a.t.setPeer("b", b.addr);
    a.t.send([app("a", "b", 1)]);
    await waitFor(() => b.got.length === 1, "a's message");

    const c = await rawClient(b.port);
    const w = new Writer(256);
    encodeHello(w, ConnKind.Messages, "test-cluster", "c", "b");
    const at = beginFrame(w, FrameType.Msg);
    encodeMessage(w, app("c", "b", 42));
    endFrame(w, at, 1 << 20);
    // A frame with a valid length but a garbage message body, then another good message.
    w.bytes(new Uint8Array([0, 0, 0, 3, FrameType.Msg, 0xff, 0xfe, 0xfd]));
    const at2 = beginFrame(w, FrameType.Msg);
    encodeMessage(w, app("c", "b", 43));
    endFrame(w, at2, 1 << 20);
    c.write(w.view());
    await waitFor(() => c.closed(), "the server to drop the garbage connection");
    expect(b.got.map((m) => m.index)).toEqual([1, 42]);
    expect(b.logs.some((l) => l.level === "error" && l.line.includes("closing connection from"))).toBe(true);

    // A message whose `from` does not match the handshake is a protocol error too.
    const d = await rawClient(b.port);
    const w2 = new Writer(256);
    encodeHello(w2, ConnKind.Messages, "test-cluster", "d", "b");
    const at3 = beginFrame(w2, FrameType.Msg);
    encodeMessage(w2, app("mallory", "b", 99));
    endFrame(w2, at3, 1 << 20);
    d.write(w2.view());
    await waitFor(() => d.closed(), "the spoofing connection to close");
    expect(b.got.some((m) => m.index === 99)).toBe(false);

    // The existing peer connection was untouched.
    a.t.send([app("a", "b", 2)]);
    await waitFor(() => b.got.some((m) => m.index === 2), "a's next message");
  });

  test("queue bound: a dead peer with a tiny maxQueueBytes drops, reports unreachable, stays bounded", async () => {
    const port = await deadPort();
    const max = 64 * 1024;
    const a = await node("a", { maxQueueBytes: max });
    a.t.setPeer("b", `${HOST}:${port}`);
    const entry = new Uint8Array(1024);
    for (let turn = 0; turn < 50; turn++) {
      const batch: Message[] = [];
      for (let i = 0; i < 100; i++) {
        const m = app("a", "b", turn * 100 + i);
        m.entries = [{ term: 1, index: 1, type: EntryType.Normal, data: entry }];
        batch.push(m);
      }
      a.t.send(batch);
      await Bun.sleep(0);
      const st = a.t.stats()[0]!;
      expect(st.queuedBytes + st.pendingBytes).toBeLessThanOrEqual(max);
    }
    const st = a.t.stats()[0]!;
    expect(st.droppedMessages).toBeGreaterThan(4500);
    expect(st.queuedMessages).toBeLessThan(64);
    expect(a.unreachable.filter((x) => x === "b").length).toBeGreaterThan(0);
    expect(a.logs.some((l) => l.level === "warn" && l.line.includes("queue to b is full"))).toBe(true);
  });

  test("reconnect attempts to a dead peer back off exponentially; removePeer stops them", async () => {
    const port = await deadPort();
    const a = await node("a");
    a.t.setPeer("b", `${HOST}:${port}`);
    a.t.send([app("a", "b", 1)]);
    await Bun.sleep(1200);
    // One unreachable report per failed attempt: 50 ms doubling (with jitter) gives about
    // 5-7 attempts in 1.2 s; a fixed 50 ms retry would give over 20.
    const attempts = a.unreachable.length;
    expect(attempts).toBeGreaterThanOrEqual(3);
    expect(attempts).toBeLessThanOrEqual(10);
    a.t.removePeer("b");
    expect(a.t.stats()).toEqual([]);
    const after = a.unreachable.length;
    await Bun.sleep(300);
    expect(a.unreachable.length).toBe(after);
  });

  test("messages to an unknown peer are dropped and reported unreachable", async () => {
    const a = await node("a");
    a.t.send([app("a", "ghost", 1)]);
    await waitFor(() => a.unreachable.includes("ghost"), "unreachable report");
  });
});

describe("PeerTransport: snapshots", () => {
  test("a 20 MiB snapshot streams intact (checksum) and reports success", async () => {
    const TOTAL = 20 << 20;
    let received: { m: Message; bytes: number; crc: number; chunks: number } | null = null;
    const b = await node("b", {
      async onSnapshot(m, body) {
        let bytes = 0;
        let crc = 0;
        let chunks = 0;
        for await (const c of body) {
          bytes += c.length;
          crc = Bun.hash.crc32(c, crc);
          chunks++;
        }
        received = { m, bytes, crc, chunks };
      },
    });
    let sentCrc = 0;
    let sentBytes = 0;
    const a = await node("a", {
      openSnapshot: async function* () {
        // Chunks of uneven sizes, some larger than the 1 MiB frame limit, some tiny.
        const sizes = [3 << 20, 1, 777_777, 1 << 20, 2_500_001];
        let i = 0;
        for (const c of snapshotChunks(TOTAL, 1 << 20, 99)) {
          // re-cut the stream into uneven pieces
          let at = 0;
          while (at < c.length) {
            const n = Math.min(c.length - at, sizes[i++ % sizes.length]!);
            const piece = c.subarray(at, at + n);
            sentCrc = Bun.hash.crc32(piece, sentCrc);
            sentBytes += piece.length;
            yield piece;
            at += n;
          }
        }
        yield* [new Uint8Array(3 << 20).fill(7)];
        sentCrc = Bun.hash.crc32(new Uint8Array(3 << 20).fill(7), sentCrc);
        sentBytes += 3 << 20;
      },
    });
    a.t.setPeer("b", b.addr);
    const sm = snapMessage("a", "b", 1234);
    a.t.send([sm]);
    await waitFor(() => a.snapStatus.length === 1, "snapshot status", 20_000);
    expect(a.snapStatus).toEqual([{ to: "b", ok: true }]);
    const r = received as unknown as { m: Message; bytes: number; crc: number; chunks: number };
    expect(sentBytes).toBe(TOTAL + (3 << 20));
    expect(r.bytes).toBe(sentBytes);
    expect(r.crc).toBe(sentCrc);
    expect(r.m).toEqual(sm);
    expect(r.chunks).toBeGreaterThan(20);
  });

  test("a slow consumer pauses reading (bounded buffering) and ordinary messages are not blocked", async () => {
    const TOTAL = 24 << 20;
    let body: SnapshotBody | null = null;
    let peak = 0;
    let consumed = 0;
    let messagesDuringSnapshot = 0;
    const b = await node("b", {
      async onSnapshot(_m, it) {
        body = it as SnapshotBody;
        for await (const c of it) {
          consumed += c.length;
          peak = Math.max(peak, (it as SnapshotBody).queuedBytes);
          await Bun.sleep(3);
        }
      },
    });
    const a = await node("a", { openSnapshot: () => snapshotChunks(TOTAL, 1 << 20, 5) as unknown as AsyncIterable<Uint8Array> });
    a.t.setPeer("b", b.addr);
    b.t.setPeer("a", a.addr);
    a.t.send([snapMessage("a", "b", 10)]);
    await waitFor(() => body !== null, "snapshot start");
    for (let i = 0; i < 20 && a.snapStatus.length === 0; i++) {
      a.t.send([app("a", "b", i)]);
      await Bun.sleep(10);
      if (consumed < TOTAL) messagesDuringSnapshot = b.got.length;
    }
    await waitFor(() => a.snapStatus.length === 1, "snapshot status", 30_000);
    expect(a.snapStatus).toEqual([{ to: "b", ok: true }]);
    expect(consumed).toBe(TOTAL);
    // Reading was paused: the waiting queue never held much more than the high-water mark.
    const p = Math.max(peak, (body as unknown as SnapshotBody).peakQueuedBytes);
    expect(p).toBeLessThanOrEqual(SNAPSHOT_HIGH_WATER + (4 << 20));
    expect(messagesDuringSnapshot).toBeGreaterThan(0);
  });

  test("a receiver whose onSnapshot rejects makes the sender report failure", async () => {
    const b = await node("b", {
      async onSnapshot(_m, body) {
        let n = 0;
        for await (const c of body) {
          n += c.length;
          if (n > 2 << 20) throw new Error("disk full");
        }
      },
    });
    const a = await node("a", { openSnapshot: () => snapshotChunks(8 << 20, 1 << 20, 1) as unknown as AsyncIterable<Uint8Array> });
    a.t.setPeer("b", b.addr);
    a.t.send([snapMessage("a", "b", 5)]);
    await waitFor(() => a.snapStatus.length === 1, "snapshot status");
    expect(a.snapStatus).toEqual([{ to: "b", ok: false }]);
    expect(a.logs.some((l) => l.line.includes("disk full"))).toBe(true);
  });

  test("a sender whose body fails makes the receiver's iterable throw and reports failure", async () => {
    let receiverError = "";
    const b = await node("b", {
      async onSnapshot(_m, body) {
        try {
          for await (const _c of body) {
            // consume
          }
        } catch (e) {
          receiverError = (e as Error).message;
          throw e;
        }
      },
    });
    const a = await node("a", {
      openSnapshot: async function* () {
        yield new Uint8Array(1 << 20);
        throw new Error("snapshot file vanished");
      },
    });
    a.t.setPeer("b", b.addr);
    a.t.send([snapMessage("a", "b", 6)]);
    await waitFor(() => a.snapStatus.length === 1 && receiverError !== "", "both sides to fail");
    expect(a.snapStatus).toEqual([{ to: "b", ok: false }]);
    expect(receiverError).toContain("snapshot file vanished");
  });

  test("a receiver that disconnects mid-stream: the sender reports failure, the iterable throws", async () => {
    let receiverError = "";
    let bStop: (() => Promise<void>) | null = null;
    const b = await node("b", {
      async onSnapshot(_m, body) {
        try {
          let n = 0;
          for await (const c of body) {
            n += c.length;
            if (n >= 1 << 20 && bStop) {
              const s = bStop;
              bStop = null;
              void s();
            }
          }
        } catch (e) {
          receiverError = (e as Error).message;
          throw e;
        }
      },
    });
    bStop = () => b.t.stop();
    const a = await node("a", { openSnapshot: () => snapshotChunks(16 << 20, 1 << 20, 2) as unknown as AsyncIterable<Uint8Array> });
    a.t.setPeer("b", b.addr);
    a.t.send([snapMessage("a", "b", 7)]);
    await waitFor(() => a.snapStatus.length === 1, "sender status");
    expect(a.snapStatus).toEqual([{ to: "b", ok: false }]);
    await waitFor(() => receiverError !== "", "receiver error");
  });

  test("a snapshot to a peer that is down fails", async () => {
    const port = await deadPort();
    const a = await node("a", { openSnapshot: () => snapshotChunks(1 << 20, 1 << 20, 3) as unknown as AsyncIterable<Uint8Array> });
    a.t.setPeer("b", `${HOST}:${port}`);
    a.t.send([snapMessage("a", "b", 8)]);
    await waitFor(() => a.snapStatus.length === 1, "snapshot status");
    expect(a.snapStatus).toEqual([{ to: "b", ok: false }]);
  });
});

describe("PeerTransport: stop", () => {
  test("stop() closes everything (live peers, stuck handshakes, retry timers) so the process can exit", async () => {
    // The child process runs node "a"; this process keeps its peers alive, so only a's own
    // stop() can release its sockets and timers.
    let snapBytes = 0;
    const b = await node("b", {
      async onSnapshot(_m, body) {
        for await (const c of body) snapBytes += c.length;
      },
    });
    const silent = Bun.listen({ hostname: HOST, port: 0, socket: { data() {} } }); // accepts, never answers
    const dead = await deadPort();
    const script = `
      import { PeerTransport } from ${JSON.stringify(new URL("../../src/transport/transport.ts", import.meta.url).pathname)};
      let got = 0, snap = null;
      const a = new PeerTransport({ nodeId: "a", clusterId: "test-cluster", listenHost: "127.0.0.1", listenPort: 0,
        onMessages(ms) { got += ms.length; }, onSnapshot: async () => {},
        openSnapshot: async function* () { for (let i = 0; i < 4; i++) yield new Uint8Array(1 << 20); },
        onSnapshotStatus(to, ok) { snap = ok; }, onUnreachable() {}, logger() {} });
      const { port } = await a.start();
      console.log("port " + port);
      const msg = (to) => ({ type: 7, from: "a", to, term: 1, logTerm: 0, index: 0, entries: [], commit: 0, reject: false, rejectHint: 0, snapshot: null, context: 0 });
      a.setPeer("b", "127.0.0.1:" + process.env.B_PORT);
      a.setPeer("silent", "127.0.0.1:" + process.env.SILENT_PORT);
      a.setPeer("dead", "127.0.0.1:" + process.env.DEAD_PORT);
      a.send([msg("b"), msg("silent"), msg("dead")]);
      a.send([{ ...msg("b"), type: 9, snapshot: { meta: { index: 1, term: 1, conf: { voters: ["a"], learners: [] } }, data: new Uint8Array(0) } }]);
      while (got < 1 || snap === null) await Bun.sleep(5);
      await a.stop();
      console.log("stopped " + got + " " + snap);
    `;
    const proc = Bun.spawn([process.execPath, "-e", script], {
      env: { ...process.env, B_PORT: String(b.port), SILENT_PORT: String(silent.port), DEAD_PORT: String(dead) },
      stdout: "pipe",
      stderr: "pipe",
    });
    const killer = setTimeout(() => proc.kill(), 8000);
    let out = "";
    let stoppedAt = 0;
    const reader = proc.stdout.getReader();
    const readAll = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        out += dec.decode(value);
        const m = /port (\d+)/.exec(out);
        if (m && b.t.stats().length === 0) {
          b.t.setPeer("a", `${HOST}:${m[1]}`);
          b.t.send([app("b", "a", 1)]);
        }
        if (out.includes("stopped") && stoppedAt === 0) stoppedAt = Date.now();
      }
    })();
    const code = await proc.exited;
    const exitedAt = Date.now();
    clearTimeout(killer);
    await readAll;
    silent.stop(true);
    const err = await new Response(proc.stderr).text();
    expect(err).toBe("");
    expect(out).toContain("stopped 1 true");
    expect(code).toBe(0);
    expect(snapBytes).toBe(4 << 20);
    // Exits promptly: nothing (a socket, a handshake or retry timer) held the event loop.
    expect(exitedAt - stoppedAt).toBeLessThan(1000);
  }, 20_000);

  test("after stop nothing is delivered and send is a no-op", async () => {
    const a = await node("a");
    const b = await node("b");
    a.t.setPeer("b", b.addr);
    a.t.send([app("a", "b", 1)]);
    await waitFor(() => b.got.length === 1, "delivery");
    await b.t.stop();
    await a.t.stop();
    a.t.send([app("a", "b", 2)]);
    await Bun.sleep(50);
    expect(b.got.length).toBe(1);
    // The port is free again.
    const again = await node("b", { listenPort: b.port });
    expect(again.port).toBe(b.port);
  });
});

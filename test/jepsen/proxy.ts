// A TCP proxy in front of every node's Raft port, so that the harness can cut links between
// real processes. Node i listens on R_i (--raft-addr) and advertises P_i (--raft-advertise-addr),
// a listener of this proxy: every peer connection to node i comes through here.
//
// The proxy reads the start of each connection (preamble "RBKV" u16 version u16 reserved, then
// the Hello frame: u8 kind, str clusterId, str from, str to) to learn who is dialling, then pipes
// bytes both ways. A connection dialled by node `from` to node `to` carries the Raft messages
// from -> to (the reverse direction carries only handshake and snapshot answers), so blocking the
// directed link (from, to) drops exactly the messages from `from` to `to`:
//   - "drop" mode: its connections are destroyed and new ones are closed at once;
//   - "blackhole" mode: its connections stay open but every byte is discarded (the sender sees
//     no error, like packets lost on the wire); new connections are accepted and ignored.
// Healing a link destroys its black-holed connections (their byte streams have holes) so the
// sender dials again. A connection whose first bytes are not an rbkv Hello is piped as is.

import { type Server, type Socket, createConnection, createServer } from "node:net";
import { Reader } from "../../src/transport/codec.ts";
import { MAGIC, PREAMBLE_BYTES } from "../../src/transport/transport.ts";

const FRAME_HELLO = 1;
const FRAME_HEADER = 5;
const HELLO_MAX = 4096;
/** A connection that has not sent a whole Hello within this time is piped as is. */
const SNIFF_TIMEOUT_MS = 2000;

export interface Hello {
  version: number;
  kind: number;
  clusterId: string;
  from: string;
  to: string;
}

/**
 * Parses the preamble and Hello frame at the start of `b`. Returns the hello and the number of
 * bytes it took, "more" when more bytes are needed, or null when this is not an rbkv hello.
 */
export function parseHello(b: Uint8Array): { hello: Hello; bytes: number } | "more" | null {
  for (let i = 0; i < Math.min(b.byteLength, MAGIC.byteLength); i++) if (b[i] !== MAGIC[i]) return null;
  if (b.byteLength < PREAMBLE_BYTES + FRAME_HEADER) return "more";
  const version = (b[4]! << 8) | b[5]!;
  const p = PREAMBLE_BYTES;
  const len = ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;
  if (b[p + 4] !== FRAME_HELLO || len > HELLO_MAX) return null;
  const end = p + FRAME_HEADER + len;
  if (b.byteLength < end) return "more";
  try {
    const r = new Reader(b, p + FRAME_HEADER, end);
    const kind = r.u8();
    const clusterId = r.str();
    const from = r.str();
    const to = r.str();
    return { hello: { version, kind, clusterId, from, to }, bytes: end };
  } catch {
    return null;
  }
}

export type BlockMode = "drop" | "blackhole";

export interface ProxyNode {
  /** The node's id (what it puts in Hello frames). */
  id: string;
  /** Where the proxy listens for this node (its advertised Raft port). */
  listenPort: number;
  /** The node's real Raft port. */
  targetPort: number;
}

interface Conn {
  client: Socket;
  upstream: Socket | null;
  from: number; // node index, -1 = unknown
  to: number;
  blackholed: boolean;
}

export interface ProxyStats {
  connections: number;
  refused: number;
  blackholed: number;
  destroyed: number;
  bytes: number;
}

export class NetProxy {
  private servers: Server[] = [];
  private readonly conns = new Set<Conn>();
  /** key `${from}>${to}` -> mode */
  private readonly blocked = new Map<string, BlockMode>();
  private readonly idIndex = new Map<string, number>();
  /** The cluster id seen in Hello frames (for the bad-input checks). */
  clusterId: string | null = null;
  readonly stats: ProxyStats = { connections: 0, refused: 0, blackholed: 0, destroyed: 0, bytes: 0 };

  constructor(
    readonly nodes: ProxyNode[],
    private readonly host = "127.0.0.1",
  ) {
    nodes.forEach((n, i) => this.idIndex.set(n.id, i));
  }

  async start(): Promise<void> {
    for (let i = 0; i < this.nodes.length; i++) {
      const to = i;
      const srv = createServer({ noDelay: true }, (sock) => this.onConnection(sock, to));
      await new Promise<void>((resolve, reject) => {
        srv.once("error", reject);
        srv.listen(this.nodes[i]!.listenPort, this.host, () => resolve());
      });
      srv.on("error", () => {});
      this.servers.push(srv);
    }
  }

  async stop(): Promise<void> {
    for (const c of this.conns) this.destroy(c);
    this.conns.clear();
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    this.servers = [];
  }

  /** Blocks the messages from node `from` to node `to`. */
  block(from: number, to: number, mode: BlockMode = "drop"): void {
    if (from === to) return;
    this.blocked.set(`${from}>${to}`, mode);
    for (const c of this.conns) {
      if (c.from !== from || c.to !== to) continue;
      if (mode === "drop") this.destroy(c);
      else {
        c.blackholed = true;
        c.client.resume();
        c.upstream?.resume();
      }
    }
  }

  unblock(from: number, to: number): void {
    this.blocked.delete(`${from}>${to}`);
    for (const c of this.conns) if (c.blackholed && c.from === from && c.to === to) this.destroy(c);
  }

  isBlocked(from: number, to: number): boolean {
    return this.blocked.has(`${from}>${to}`);
  }

  /** Cuts both directions between every node of `a` and every node of `b`. */
  cut(a: number[], b: number[], mode: BlockMode = "drop"): void {
    for (const x of a) {
      for (const y of b) {
        this.block(x, y, mode);
        this.block(y, x, mode);
      }
    }
  }

  /** Removes every block. */
  heal(): void {
    this.blocked.clear();
    for (const c of this.conns) if (c.blackholed) this.destroy(c);
  }

  blockedLinks(): string[] {
    return [...this.blocked.keys()];
  }

  /** Live piped connections per directed link (for tests). */
  liveLinks(): string[] {
    const out: string[] = [];
    for (const c of this.conns) if (c.upstream && !c.blackholed) out.push(`${c.from}>${c.to}`);
    return out;
  }

  private destroy(c: Conn): void {
    this.conns.delete(c);
    this.stats.destroyed++;
    c.client.destroy();
    c.upstream?.destroy();
  }

  private onConnection(client: Socket, to: number): void {
    this.stats.connections++;
    const c: Conn = { client, upstream: null, from: -1, to, blackholed: false };
    this.conns.add(c);
    let head: Buffer = Buffer.alloc(0);
    let sniffing = true;
    client.on("error", () => {});
    client.on("close", () => {
      this.conns.delete(c);
      c.upstream?.destroy();
    });
    const timer = setTimeout(() => {
      if (sniffing) {
        sniffing = false;
        this.connectUpstream(c, head);
      }
    }, SNIFF_TIMEOUT_MS);
    client.on("data", (d: Buffer) => {
      if (c.blackholed) return;
      if (!sniffing) {
        this.stats.bytes += d.byteLength;
        // Backpressure: a stalled (e.g. SIGSTOPped) receiver stalls the sender, as without us.
        if (c.upstream) {
          if (!c.upstream.write(d)) client.pause();
        } else head = Buffer.concat([head, d]);
        return;
      }
      head = Buffer.concat([head, d]);
      const parsed = parseHello(head);
      if (parsed === "more" && head.byteLength < PREAMBLE_BYTES + FRAME_HEADER + HELLO_MAX) return;
      sniffing = false;
      clearTimeout(timer);
      if (parsed !== null && parsed !== "more") {
        if (parsed.hello.clusterId !== "" && parsed.hello.version === 1) this.clusterId ??= parsed.hello.clusterId;
        c.from = this.idIndex.get(parsed.hello.from) ?? -1;
        const mode = c.from >= 0 ? this.blocked.get(`${c.from}>${to}`) : undefined;
        if (mode === "drop") {
          this.stats.refused++;
          this.destroy(c);
          return;
        }
        if (mode === "blackhole") {
          this.stats.blackholed++;
          c.blackholed = true;
          head = Buffer.alloc(0);
          return;
        }
      }
      this.connectUpstream(c, head);
    });
  }

  private connectUpstream(c: Conn, head: Buffer): void {
    if (!this.conns.has(c)) return;
    const up = createConnection({ host: this.host, port: this.nodes[c.to]!.targetPort, noDelay: true });
    c.upstream = up;
    up.on("error", () => {});
    up.on("close", () => {
      if (this.conns.has(c)) {
        this.conns.delete(c);
        c.client.destroy();
      }
    });
    up.on("data", (d: Buffer) => {
      if (c.blackholed) return;
      // Answers travel to -> from: drop them too when that direction is blocked.
      if (c.from >= 0 && this.blocked.get(`${c.to}>${c.from}`) !== undefined) return;
      if (!c.client.write(d)) up.pause();
    });
    up.on("drain", () => c.client.resume());
    c.client.on("drain", () => up.resume());
    if (head.byteLength > 0) {
      this.stats.bytes += head.byteLength;
      up.write(head);
    }
  }
}

// The simulator's state machine: a tiny key-value map whose commands carry the client op id,
// so a client can recognise its own write when the entry is applied.

export type KvCommand =
  | { kind: "put"; opId: number; key: string; value: string }
  | { kind: "delete"; opId: number; key: string };

const enc = new TextEncoder();
const dec = new TextDecoder();

export function encodeCommand(c: KvCommand): Uint8Array {
  const value = c.kind === "put" ? c.value : "";
  return enc.encode(`${c.kind === "put" ? "P" : "D"}\u0000${c.opId}\u0000${c.key}\u0000${value}`);
}

export function decodeCommand(data: Uint8Array): KvCommand | null {
  if (data.byteLength === 0) return null;
  const [kind, opId, key, value] = dec.decode(data).split("\u0000");
  if (kind === "P") return { kind: "put", opId: Number(opId), key: key!, value: value! };
  if (kind === "D") return { kind: "delete", opId: Number(opId), key: key! };
  throw new Error(`unknown command kind ${kind}`);
}

export class KvStateMachine {
  data = new Map<string, string>();
  applied = 0;

  apply(index: number, data: Uint8Array): KvCommand | null {
    this.applied = index;
    const cmd = decodeCommand(data);
    if (!cmd) return null;
    if (cmd.kind === "put") this.data.set(cmd.key, cmd.value);
    else this.data.delete(cmd.key);
    return cmd;
  }

  clone(): KvStateMachine {
    const c = new KvStateMachine();
    c.data = new Map(this.data);
    c.applied = this.applied;
    return c;
  }

  encode(): Uint8Array {
    return enc.encode(JSON.stringify({ applied: this.applied, data: [...this.data] }));
  }

  static decode(bytes: Uint8Array): KvStateMachine {
    const kv = new KvStateMachine();
    if (bytes.byteLength === 0) return kv;
    const obj = JSON.parse(dec.decode(bytes)) as { applied: number; data: [string, string][] };
    kv.applied = obj.applied;
    kv.data = new Map(obj.data);
    return kv;
  }
}

/** A cheap digest of entry contents for the safety checks (FNV-1a over type and bytes). */
export function digest(type: number, data: Uint8Array): number {
  let h = 0x811c9dc5 ^ type;
  for (let i = 0; i < data.byteLength; i++) {
    h ^= data[i]!;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

// Every command a node proposes carries an id, so the node can recognise it when the entry is
// applied, whichever way it reached the log (appended here as leader, or passed to the leader
// by a follower). Layout of an entry's data: [0xB1][u32 LE node tag][u32 LE counter][command].

const MARKER = 0xb1;
const HEADER = 9;

export class ProposalIds {
  /** 20 random bits above a 32-bit counter: ids stay exact JS numbers (< 2^53). */
  private readonly tag = 1 + Math.floor(Math.random() * 0xfffff);
  private counter = 0;

  /** A new id, unique to this process (a random tag, so a restart never reuses one). */
  next(): number {
    this.counter = (this.counter + 1) >>> 0;
    return this.tag * 0x100000000 + this.counter;
  }
}

export function wrapProposal(id: number, command: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER + command.byteLength);
  out[0] = MARKER;
  const dv = new DataView(out.buffer);
  dv.setUint32(1, Math.floor(id / 0x100000000), true);
  dv.setUint32(5, id >>> 0, true);
  out.set(command, HEADER);
  return out;
}

/** The id and the command of an entry's data; id 0 when the data carries no envelope. */
export function unwrapProposal(data: Uint8Array): { id: number; command: Uint8Array } {
  if (data.byteLength < HEADER || data[0] !== MARKER) return { id: 0, command: data };
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const id = dv.getUint32(1, true) * 0x100000000 + dv.getUint32(5, true);
  return { id, command: data.subarray(HEADER) };
}

// The byte-level pieces shared by the binary codecs of src/storage (command.ts, apply-result.ts):
// little-endian u32/f64 put/get helpers and ByteReader, a bounds-checked cursor over an input.
// Not part of the API.
//
// Byte arithmetic and a scratch f64 instead of DataView: in Bun, touching `.buffer` of a typed
// array materialises an ArrayBuffer, which is costly on the apply hot path (Put/Delete decode).

const f64 = new Float64Array(1);
const f64Bytes = new Uint8Array(f64.buffer);
const littleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

export function putU32(out: Uint8Array, p: number, v: number): void {
  out[p] = v & 0xff;
  out[p + 1] = (v >>> 8) & 0xff;
  out[p + 2] = (v >>> 16) & 0xff;
  out[p + 3] = (v >>> 24) & 0xff;
}
export function getU32(d: Uint8Array, p: number): number {
  return (d[p] | (d[p + 1] << 8) | (d[p + 2] << 16) | (d[p + 3] << 24)) >>> 0;
}
export function putF64(out: Uint8Array, p: number, v: number): void {
  f64[0] = v;
  for (let i = 0; i < 8; i++) out[p + i] = f64Bytes[littleEndian ? i : 7 - i];
}
export function getF64(d: Uint8Array, p: number): number {
  for (let i = 0; i < 8; i++) f64Bytes[littleEndian ? i : 7 - i] = d[p + i];
  return f64[0];
}

/**
 * Reads fields in order from `data`, starting at offset `p`; every read checks the bytes left.
 * `what` names the field in the error. A codec subclasses it to say how an error is reported:
 * the three hooks throw the codec's own error type (and only it) with its own message format, so
 * that its decoding stays total. The hooks run on failure only: a successful read allocates
 * nothing but what it returns.
 */
export abstract class ByteReader {
  constructor(
    protected readonly data: Uint8Array,
    /** The offset of the next field. */
    public p: number,
  ) {}

  /** Throws for an invalid field; `detail` names the field and its offset. */
  abstract fail(detail: string): never;
  /** Throws for an input that has fewer than `n` bytes left (at offset p) for `what`. */
  protected abstract truncated(n: number, what: string): never;
  /** Throws for bytes left (from offset p) after the last field. */
  protected abstract trailing(): never;

  private need(n: number, what: string): void {
    if (this.data.length - this.p < n) this.truncated(n, what);
  }
  u8(what: string): number {
    this.need(1, what);
    return this.data[this.p++];
  }
  /** A 0/1 byte. */
  bool(what: string): boolean {
    const at = this.p;
    const v = this.u8(what);
    if (v > 1) this.fail(`${what} at offset ${at} is ${v}, not 0 or 1`);
    return v === 1;
  }
  u32(what: string): number {
    this.need(4, what);
    const v = getU32(this.data, this.p);
    this.p += 4;
    return v;
  }
  /** An f64 that must be a non-negative safe integer. */
  safeInt(what: string): number {
    this.need(8, what);
    const v = getF64(this.data, this.p);
    if (!Number.isSafeInteger(v) || v < 0) this.fail(`${what} at offset ${this.p} is not a non-negative safe integer (${v})`);
    this.p += 8;
    return v;
  }
  /** A u32 element count, checked against the bytes left (each element is >= minSize bytes). */
  count(what: string, minSize: number): number {
    const at = this.p;
    const n = this.u32(what);
    const left = this.data.length - this.p;
    if (n * minSize > left) this.fail(`${what} ${n} at offset ${at} cannot fit in the ${left} byte(s) left`);
    return n;
  }
  /** [u32 length][bytes], as a zero-copy view (subarray) of the input. */
  bytes(what: string): Uint8Array {
    const n = this.u32(`${what} length`);
    this.need(n, what);
    const v = this.data.subarray(this.p, this.p + n);
    this.p += n;
    return v;
  }
  /** [u32 length][bytes], as a copy (slice) of the input. */
  bytesCopy(what: string): Uint8Array {
    const n = this.u32(`${what} length`);
    this.need(n, what);
    const v = this.data.slice(this.p, this.p + n);
    this.p += n;
    return v;
  }
  /** Checks that the input ends here. */
  end(): void {
    if (this.p !== this.data.length) this.trailing();
  }
}

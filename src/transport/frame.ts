// Length-prefixed framing over a byte stream.
//
//   frame := u32 payloadLength (big-endian) | u8 frameType | payload
//
// The parser is incremental: TCP may split or join frames arbitrarily, so it keeps the bytes
// of an unfinished frame and hands out only whole frames. A frame longer than the configured
// maximum is refused as soon as its header is seen, before anything is buffered for it.

import type { Writer } from "./codec.ts";

export const FRAME_HEADER_BYTES = 5;

export class FrameError extends Error {
  constructor(detail: string) {
    super(`bad frame: ${detail}`);
    this.name = "FrameError";
  }
}

/** Reserves a frame header in `w`; returns its offset for endFrame. */
export function beginFrame(w: Writer, type: number): number {
  w.ensure(FRAME_HEADER_BYTES);
  const at = w.pos;
  w.buf[at + 4] = type;
  w.pos = at + FRAME_HEADER_BYTES;
  return at;
}

/** Patches the length of the frame begun at `at`; throws FrameError (and rolls back) if it exceeds `max`. */
export function endFrame(w: Writer, at: number, max: number): void {
  const len = w.pos - at - FRAME_HEADER_BYTES;
  if (len > max) {
    w.pos = at;
    throw new FrameError(`frame of ${len} bytes exceeds the maximum of ${max}`);
  }
  const b = w.buf;
  b[at] = len >>> 24;
  b[at + 1] = len >>> 16;
  b[at + 2] = len >>> 8;
  b[at + 3] = len;
}

/** A whole frame in one call (cold paths). */
export function writeFrame(w: Writer, type: number, payload: Uint8Array, max: number): void {
  const at = beginFrame(w, type);
  w.bytes(payload);
  endFrame(w, at, max);
}

/** A standalone frame header (for large payloads written without copying them). */
export function frameHeader(type: number, len: number): Uint8Array {
  const h = new Uint8Array(FRAME_HEADER_BYTES);
  h[0] = len >>> 24;
  h[1] = len >>> 16;
  h[2] = len >>> 8;
  h[3] = len;
  h[4] = type;
  return h;
}

/**
 * Receives frames: `(type, payload)`. The payload view is valid only during the call (it may
 * point into the parser's own buffer). Returning `false` stops parsing: the rest of the input
 * is discarded and the parser ignores later input.
 */
export type FrameHandler = (type: number, payload: Uint8Array) => boolean | void;

const KEEP_BUFFER_BYTES = 1 << 20;

export class FrameParser {
  private buf: Uint8Array = new Uint8Array(0);
  private len = 0;
  private stopped = false;

  /** The largest payload accepted; may be raised later (e.g. after a handshake). */
  constructor(public maxFrameBytes: number) {}

  /** Bytes held for an unfinished frame. */
  get buffered(): number {
    return this.len;
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  /** Stops the parser: later input is ignored. */
  stop(): void {
    this.stopped = true;
    this.len = 0;
    this.buf = new Uint8Array(0);
  }

  /**
   * Feeds bytes; calls `onFrame` for every complete frame, in order. Throws FrameError on an
   * oversized frame (the parser is then stopped). If `onFrame` throws, the parser is stopped
   * and the exception propagates.
   */
  push(chunk: Uint8Array, onFrame: FrameHandler): void {
    if (this.stopped) return;
    let data: Uint8Array;
    let pos = 0;
    let end: number;
    if (this.len === 0) {
      data = chunk;
      end = chunk.byteLength;
    } else {
      this.append(chunk);
      data = this.buf;
      end = this.len;
    }
    try {
      while (end - pos >= FRAME_HEADER_BYTES) {
        const size = ((data[pos]! << 24) | (data[pos + 1]! << 16) | (data[pos + 2]! << 8) | data[pos + 3]!) >>> 0;
        if (size > this.maxFrameBytes) {
          throw new FrameError(`frame of ${size} bytes exceeds the maximum of ${this.maxFrameBytes}`);
        }
        const frameEnd = pos + FRAME_HEADER_BYTES + size;
        if (frameEnd > end) break;
        const type = data[pos + 4]!;
        const payload = data.subarray(pos + FRAME_HEADER_BYTES, frameEnd);
        pos = frameEnd;
        if (onFrame(type, payload) === false || this.stopped) {
          this.stop();
          return;
        }
      }
    } catch (e) {
      this.stop();
      throw e;
    }
    const rest = end - pos;
    if (data === this.buf) {
      if (rest === 0) {
        this.len = 0;
        if (this.buf.byteLength > KEEP_BUFFER_BYTES) this.buf = new Uint8Array(0);
      } else if (pos > 0) {
        this.buf.copyWithin(0, pos, end);
        this.len = rest;
      }
    } else if (rest > 0) {
      this.len = 0;
      this.append(chunk.subarray(pos, end));
    }
  }

  private append(bytes: Uint8Array): void {
    const need = this.len + bytes.byteLength;
    if (need > this.buf.byteLength) {
      let cap = Math.max(4096, this.buf.byteLength * 2);
      while (cap < need) cap *= 2;
      // Never reserve more than one maximal frame (plus a header and this chunk) needs.
      const next = new Uint8Array(Math.min(cap, Math.max(need, this.maxFrameBytes + FRAME_HEADER_BYTES)));
      next.set(this.buf.subarray(0, this.len));
      this.buf = next;
    }
    this.buf.set(bytes, this.len);
    this.len = need;
  }
}

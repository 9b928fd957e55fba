// Entry points to the generated protobuf codec (src/server/gen, `npm run gen`): the strict
// decoding and the encoding that the gRPC service definition (grpc-service.ts) and tests use.
//
// The generated `X.decode` / `X.encode` are ts-proto's over @bufbuild/protobuf's BinaryReader
// and BinaryWriter. Around them this module adds what a server facing untrusted bytes needs:
// - Strict UTF-8: a proto3 `string` that is not valid UTF-8 is an error (as protoc's C++
//   parser), not silently turned into U+FFFD. The reader's UTF-8 hook is the fatal decoder.
// - The whole input is consumed: ts-proto's decode loop stops early, without an error, at a
//   tag 0 or an end-group tag; such bytes are garbage, so they must not pass as a message.
// - One error type, PbDecodeError (message type and cause), whatever the reader threw.
// - Encoding accepts partial messages (DeepPartial: omitted fields are defaults), normalizes
//   them with the generated fromPartial, and returns the Buffer that grpc-js wants.
// bytes fields decode to views into the input (no copy): gRPC hands each message to the
// deserializer in a buffer of its own, so that is safe there.

import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import type { DeepPartial, MessageFns } from "./gen/rbkv.ts";

/** The bytes are not a valid encoding of the message. The only error `decodeMessage` throws. */
export class PbDecodeError extends Error {
  constructor(
    readonly typeName: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`protobuf decode ${typeName}: ${detail}`, options);
    this.name = "PbDecodeError";
  }
}

/** The message cannot be encoded (a value of the wrong type or out of its field's range). */
export class PbEncodeError extends Error {
  constructor(
    readonly typeName: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`protobuf encode ${typeName}: ${detail}`, options);
    this.name = "PbEncodeError";
  }
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const decodeUtf8 = (bytes: Uint8Array): string => strictUtf8.decode(bytes);

/** Decodes one whole message of type `fns` (named `typeName` in errors) from `bytes`. */
export function decodeMessage<T>(fns: MessageFns<T>, typeName: string, bytes: Uint8Array): T {
  if (!(bytes instanceof Uint8Array)) throw new PbDecodeError(typeName, "input is not a Uint8Array");
  let reader: BinaryReader;
  let message: T;
  try {
    reader = new BinaryReader(bytes, decodeUtf8);
    message = fns.decode(reader);
  } catch (err) {
    throw new PbDecodeError(typeName, err instanceof Error ? err.message : String(err), { cause: err });
  }
  if (reader.pos !== reader.len) throw new PbDecodeError(typeName, `stray tag at byte ${reader.pos - 1} (field number 0 or an unmatched end group)`);
  return message;
}

/**
 * The encoded bytes as the Buffer grpc-js wants. A copy, on purpose: a Buffer over the same
 * memory (`Buffer.from(b.buffer, b.byteOffset, b.byteLength)`) measured 3-4 times slower under
 * Bun for request-sized messages, because reading `.buffer` of a fresh typed array makes
 * JavaScriptCore materialize its ArrayBuffer (test/bench/pb-bench.ts).
 */
export function toBuffer(b: Uint8Array): Buffer {
  return Buffer.from(b);
}

// One writer for every message: encoding is synchronous and never re-entered, finish() hands
// out a copy of the bytes and resets it, and its buffer then serves the next message without
// growing again.
const writer = new BinaryWriter();

/** Encodes a complete message (as decoded or built with `fns.create`). */
export function encodeMessage<T>(fns: MessageFns<T>, typeName: string, message: T): Buffer {
  try {
    return toBuffer(fns.encode(message, writer).finish());
  } catch (err) {
    writer.finish(); // discard what was written and any open fork
    throw new PbEncodeError(typeName, err instanceof Error ? err.message : String(err), { cause: err });
  }
}

/** Encodes a partial message: omitted (or null) fields are their defaults. */
export function encodePartial<T>(fns: MessageFns<T>, typeName: string, message: DeepPartial<T>): Buffer {
  if (message === null || typeof message !== "object") throw new PbEncodeError(typeName, "message is not an object");
  let full: T;
  try {
    full = fns.fromPartial(message);
  } catch (err) {
    throw new PbEncodeError(typeName, err instanceof Error ? err.message : String(err), { cause: err });
  }
  return encodeMessage(fns, typeName, full);
}

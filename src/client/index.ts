// The public face of the rbkv client library (package export "./client").

export { Client, type CallOptions, type ClientOptions, type GetOptions, type LeaderInfo, type RangeOptions, type RangePage, type RangeSelector, type WatchEvent, type WatchOptions, type WriteResult } from "./client.ts";
export { ClientError, WriteOutcomeUnknownError } from "./errors.ts";
export { compare, op, TxnBuilder, type CompareOp, type PutOptions, type TxnOpResult, type TxnResult } from "./txn.ts";
export { type KeyValueEntry } from "./entries.ts";
export { type Bytes, prefixEnd, text, toBytes } from "./bytes.ts";
export { type BackoffOptions } from "./backoff.ts";

// Fans applied writes out to watchers. Each watcher has a bounded queue of `capacity` events:
// a consumer that falls further behind is ended with an error rather than silently skipped,
// so a watcher either sees every matching event in log order or learns that it did not.

import { type KvEvent } from "../storage/fsm.ts";

export class WatcherExistsError extends Error {
  constructor(id: string) {
    super(`a watcher with id ${JSON.stringify(id)} is already registered on this node`);
    this.name = "WatcherExistsError";
  }
}

export class WatcherOverflowError extends Error {
  constructor(id: string, capacity: number) {
    super(`watcher ${JSON.stringify(id)} fell more than ${capacity} events behind; the stream is ended so no event is silently lost (re-watch and re-read)`);
    this.name = "WatcherOverflowError";
  }
}

export interface WatchSink {
  /** Writes one event; returns false when the transport is full (wait for onDrain). */
  write(ev: KvEvent): boolean;
  /** Ends the stream with an error. */
  fail(err: Error): void;
}

class Watcher {
  private queue: KvEvent[] = [];
  private blocked = false;
  closed = false;

  constructor(
    readonly id: string,
    private readonly prefixes: Uint8Array[],
    private readonly capacity: number,
    private readonly sink: WatchSink,
    private readonly onClose: () => void,
  ) {}

  matches(key: Uint8Array): boolean {
    if (this.prefixes.length === 0) return true;
    for (const p of this.prefixes) if (hasPrefix(key, p)) return true;
    return false;
  }

  offer(ev: KvEvent): void {
    if (this.closed) return;
    if (!this.blocked && this.queue.length === 0) {
      this.blocked = !this.sink.write(ev);
      return;
    }
    if (this.queue.length >= this.capacity) {
      this.close(new WatcherOverflowError(this.id, this.capacity));
      return;
    }
    this.queue.push(ev);
  }

  /** The transport can take more: flush what is queued. */
  drain(): void {
    this.blocked = false;
    while (!this.closed && !this.blocked && this.queue.length > 0) {
      this.blocked = !this.sink.write(this.queue.shift()!);
    }
  }

  close(err: Error | null): void {
    if (this.closed) return;
    this.closed = true;
    this.queue = [];
    this.onClose();
    if (err) this.sink.fail(err);
  }
}

export interface WatchHandle {
  drain(): void;
  close(err: Error | null): void;
}

export class WatchHub {
  private readonly watchers = new Map<string, Watcher>();

  register(id: string, prefixes: Uint8Array[], capacity: number, sink: WatchSink): WatchHandle {
    if (this.watchers.has(id)) throw new WatcherExistsError(id);
    const w = new Watcher(id, prefixes, Math.max(1, capacity), sink, () => {
      if (this.watchers.get(id) === w) this.watchers.delete(id);
    });
    this.watchers.set(id, w);
    return w;
  }

  publish(events: readonly KvEvent[]): void {
    if (this.watchers.size === 0) return;
    for (const ev of events) {
      for (const w of this.watchers.values()) if (w.matches(ev.key)) w.offer(ev);
    }
  }

  /** Ends every watch with the given error (shutdown, or a lost leadership for leader_required). */
  closeAll(err: Error, filter: (id: string) => boolean = () => true): void {
    for (const w of [...this.watchers.values()]) if (filter(w.id)) w.close(err);
  }

  size(): number {
    return this.watchers.size;
  }
}

function hasPrefix(key: Uint8Array, prefix: Uint8Array): boolean {
  if (prefix.byteLength > key.byteLength) return false;
  for (let i = 0; i < prefix.byteLength; i++) if (key[i] !== prefix[i]) return false;
  return true;
}

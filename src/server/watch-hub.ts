// Fans applied writes out to watchers. Each watcher has a bounded queue of `capacity` messages:
// a consumer that falls further behind is ended with an error rather than silently skipped,
// so a watcher either sees every matching event in log order or learns that it did not.
//
// Resumable watches (start_version > 0): the watcher first replays, from the state machine's
// history, every matching event with a version in (start_version, T], where T is the version
// the hub had published through when the watcher registered; events published after that
// (version > T) are held in the watcher's queue meanwhile and follow the replay. The switch can
// neither skip nor repeat an event: the hub publishes every applied batch once, in log order,
// with the applied index it reached, so "published through T" splits the history exactly.
// Replay is paced by the transport (it reads the next page only when the stream drained).
//
// Progress (progress_notify): a Progress mark "every matching event up to version V has been
// sent" goes out after the replay and whenever the stream has been quiet for the watcher's
// interval. V is the version published through, which on a follower may lag the leader; a mark
// is never lower than what the watcher already has (a watcher that resumed from a version this
// node has not reached yet hears nothing until the node catches up).

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

/** What a watcher is sent: an event, or a progress mark. */
export type WatchMessage = { kind: "event"; event: KvEvent } | { kind: "progress"; version: number };

export interface WatchSink {
  /** Writes one message; returns false when the transport is full (wait for drain()). */
  write(msg: WatchMessage): boolean;
  /** Ends the stream with an error. */
  fail(err: Error): void;
}

/** The state machine's history, for replays (KvStore.changes). */
export interface WatchHistory {
  /**
   * Matching events with after < version <= through, in (version, key) order, at most `limit`
   * (a version is cut in two only when it alone has more than `limit` events). Throws when
   * `after` is below the compacted version.
   */
  changes(after: number, through: number, prefixes: Uint8Array[], limit: number): KvEvent[];
}

export interface WatchOptions {
  /** Replay events after this version first (0: only events from now on). */
  startVersion?: number;
  /** Send progress marks; the interval (ms) of quiet after which one is sent. */
  progressIntervalMs?: number;
}

const REPLAY_PAGE = 256;
/** Checked this often for quiet streams that are due a progress mark. */
const PROGRESS_TICK_MS = 50;

class Watcher {
  private queue: WatchMessage[] = [];
  private blocked = false;
  closed = false;
  /** Replaying history: events published meanwhile wait in the queue. */
  private replaying: boolean;
  /** Every matching event up to this version has been written or queued. */
  private cursor: number;
  /** Events up to the start version were delivered before (by another node, say): skip them. */
  private readonly skipThrough: number;
  /** Replay reads history up to this version; later events come live. */
  private readonly replayThrough: number;
  lastWriteAt = Date.now();

  constructor(
    readonly id: string,
    private readonly prefixes: Uint8Array[],
    private readonly capacity: number,
    private readonly sink: WatchSink,
    private readonly history: WatchHistory | null,
    startVersion: number,
    publishedThrough: number,
    readonly progressIntervalMs: number,
    private readonly onClose: () => void,
  ) {
    this.cursor = startVersion;
    this.skipThrough = startVersion;
    this.replayThrough = publishedThrough;
    this.replaying = startVersion > 0;
  }

  matches(key: Uint8Array): boolean {
    if (this.prefixes.length === 0) return true;
    for (const p of this.prefixes) if (hasPrefix(key, p)) return true;
    return false;
  }

  offer(ev: KvEvent): void {
    if (this.closed) return;
    // A watcher that resumed from a version beyond this node's has those events already.
    if (ev.version <= this.skipThrough) return;
    if (this.replaying && ev.version <= this.replayThrough) return; // the replay covers it
    this.enqueue({ kind: "event", event: ev });
    if (!this.replaying) this.cursor = Math.max(this.cursor, ev.version);
  }

  /** A progress mark at `version`, if it tells the watcher something and the stream is idle. */
  offerProgress(version: number, now: number): void {
    if (this.closed || this.replaying || this.blocked || this.queue.length > 0) return;
    // One tick early: the timer's granularity must not stretch the promised interval.
    if (version < this.cursor || now - this.lastWriteAt < this.progressIntervalMs - PROGRESS_TICK_MS) return;
    this.cursor = version;
    this.enqueue({ kind: "progress", version });
  }

  private enqueue(msg: WatchMessage): void {
    if (!this.replaying && !this.blocked && this.queue.length === 0) {
      this.send(msg);
      return;
    }
    if (this.queue.length >= this.capacity) {
      this.close(new WatcherOverflowError(this.id, this.capacity));
      return;
    }
    this.queue.push(msg);
  }

  private send(msg: WatchMessage): void {
    this.lastWriteAt = Date.now();
    this.blocked = !this.sink.write(msg);
  }

  /**
   * Replays history while the transport takes it, then switches to live (the queue holds what
   * was published meanwhile). Errors from the history (compacted) end the watch.
   */
  replay(publishedThrough: number, progress: boolean): void {
    if (!this.replaying || !this.history) return;
    try {
      while (!this.closed && !this.blocked) {
        let limit = REPLAY_PAGE;
        let page = this.history.changes(this.cursor, this.replayThrough, this.prefixes, limit);
        // A single version with more than `limit` events (a big txn or delete range): read it
        // whole, so the cursor only ever stands between versions.
        while (page.length >= limit && page[0]!.version === page[page.length - 1]!.version) {
          limit *= 8;
          page = this.history.changes(this.cursor, this.replayThrough, this.prefixes, limit);
        }
        if (page.length === 0) break;
        // Drop a trailing partial version (the next page starts with it again).
        let end = page.length;
        if (page.length >= limit) {
          const lastVersion = page[page.length - 1]!.version;
          while (end > 0 && page[end - 1]!.version === lastVersion) end--;
        }
        for (let i = 0; i < end; i++) this.send({ kind: "event", event: page[i]! });
        this.cursor = page[end - 1]!.version;
      }
    } catch (err) {
      this.close(err as Error);
      return;
    }
    if (this.closed || this.blocked) return;
    // Caught up with the history: what was published meanwhile follows, then a progress mark.
    this.replaying = false;
    this.cursor = Math.max(this.cursor, this.replayThrough);
    if (progress && publishedThrough >= this.cursor) this.queue.push({ kind: "progress", version: publishedThrough });
    for (const m of this.queue) if (m.kind === "event") this.cursor = Math.max(this.cursor, m.event.version);
    this.cursor = Math.max(this.cursor, progress ? publishedThrough : 0);
    this.flush();
  }

  /** The transport can take more: replay further, or flush what is queued. */
  drain(publishedThrough: number, progress: boolean): void {
    this.blocked = false;
    if (this.replaying) {
      this.replay(publishedThrough, progress);
      return;
    }
    this.flush();
  }

  private flush(): void {
    while (!this.closed && !this.blocked && this.queue.length > 0) this.send(this.queue.shift()!);
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
  private readonly progressWatchers = new Set<Watcher>();
  private progressTimer: ReturnType<typeof setInterval> | null = null;
  /** Every event of a version up to this has been published (the node's applied index). */
  private publishedThrough = 0;

  constructor(private readonly history: WatchHistory | null = null) {}

  /** The applied index the hub starts from (after the node's log replay). */
  setPublishedThrough(version: number): void {
    this.publishedThrough = Math.max(this.publishedThrough, version);
  }

  get published(): number {
    return this.publishedThrough;
  }

  /**
   * Registers a watcher. With startVersion > 0 it replays history first (see the header); a
   * start below the compacted version throws the history's error here, before anything is sent.
   */
  register(id: string, prefixes: Uint8Array[], capacity: number, sink: WatchSink, opts: WatchOptions = {}): WatchHandle {
    if (this.watchers.has(id)) throw new WatcherExistsError(id);
    const start = opts.startVersion ?? 0;
    const progress = opts.progressIntervalMs !== undefined && opts.progressIntervalMs > 0;
    if (start > 0) {
      if (!this.history) throw new Error("this hub has no history to replay from");
      // Fails fast (e.g. compacted) before the watcher exists.
      this.history.changes(start, start, prefixes, 1);
    }
    const w = new Watcher(id, prefixes, Math.max(1, capacity), sink, this.history, start, this.publishedThrough, progress ? opts.progressIntervalMs! : 0, () => {
      if (this.watchers.get(id) === w) this.watchers.delete(id);
      this.progressWatchers.delete(w);
      if (this.progressWatchers.size === 0) this.stopProgressTimer();
    });
    this.watchers.set(id, w);
    if (progress) {
      this.progressWatchers.add(w);
      this.startProgressTimer();
    }
    if (start > 0) w.replay(this.publishedThrough, progress);
    else if (progress) w.offerProgress(this.publishedThrough, Infinity);
    const hub = this;
    return {
      drain: () => w.drain(hub.publishedThrough, progress),
      close: (err) => w.close(err),
    };
  }

  /** Events of applied entries, in log order, and the applied index they bring the node to. */
  publish(events: readonly KvEvent[], appliedThrough?: number): void {
    if (this.watchers.size > 0) {
      for (const ev of events) {
        for (const w of this.watchers.values()) if (w.matches(ev.key)) w.offer(ev);
      }
    }
    let top = appliedThrough ?? 0;
    if (events.length > 0) top = Math.max(top, events[events.length - 1]!.version);
    this.publishedThrough = Math.max(this.publishedThrough, top);
  }

  /** Ends every watch with the given error (shutdown, or a lost leadership for leader_required). */
  closeAll(err: Error, filter: (id: string) => boolean = () => true): void {
    for (const w of [...this.watchers.values()]) if (filter(w.id)) w.close(err);
  }

  size(): number {
    return this.watchers.size;
  }

  /** Sends due progress marks now (the timer calls this; tests may too). */
  tickProgress(now = Date.now()): void {
    for (const w of this.progressWatchers) w.offerProgress(this.publishedThrough, now);
  }

  private startProgressTimer(): void {
    if (this.progressTimer) return;
    this.progressTimer = setInterval(() => this.tickProgress(), PROGRESS_TICK_MS);
    this.progressTimer.unref?.();
  }

  private stopProgressTimer(): void {
    if (this.progressTimer) clearInterval(this.progressTimer);
    this.progressTimer = null;
  }
}

function hasPrefix(key: Uint8Array, prefix: Uint8Array): boolean {
  if (prefix.byteLength > key.byteLength) return false;
  for (let i = 0; i < prefix.byteLength; i++) if (key[i] !== prefix[i]) return false;
  return true;
}

/**
 * Batches waiting for the gateway, persisted so they survive a reload. Bounded by bytes and by
 * count: when full the oldest batch is dropped and counted (never silently); the counter is
 * persisted too and shown in the HUD.
 */
import type { KeyValueStore } from "./ports.js";

export interface Route {
  sessionId: string;
  gateway: string;
  token: string;
}

export interface Batch extends Route {
  id: string;
  /** NDJSON, one envelope a line. */
  ndjson: string;
  count: number;
  attempts: number;
}

export interface OutboxBounds {
  maxBytes: number;
  maxBatches: number;
}

export class Outbox {
  batches: Batch[] = [];
  dropped = 0;
  private bytes = 0;

  constructor(private store: KeyValueStore | null, private readonly key: string, private readonly bounds: OutboxBounds, private readonly log: (m: string) => void) {
    if (!store) return;
    try {
      const raw = store.getItem(key);
      if (raw) this.batches = JSON.parse(raw) as Batch[];
      this.dropped = Number(store.getItem(`${key}.dropped`) ?? 0) || 0;
    } catch {
      this.log("outbox: stored batches unreadable, starting empty");
      this.batches = [];
    }
    this.bytes = this.batches.reduce((n, b) => n + b.ndjson.length, 0);
  }

  get size(): number {
    return this.batches.length;
  }

  get sizeBytes(): number {
    return this.bytes;
  }

  add(batch: Batch): void {
    this.batches.push(batch);
    this.bytes += batch.ndjson.length;
    while (this.batches.length > 1 && (this.bytes > this.bounds.maxBytes || this.batches.length > this.bounds.maxBatches)) this.dropOldest();
    this.save();
  }

  /** Replaces a batch by others in its place (a 413 split). */
  replace(id: string, parts: Batch[]): void {
    const i = this.batches.findIndex((b) => b.id === id);
    if (i < 0) return;
    this.bytes -= this.batches[i].ndjson.length;
    this.batches.splice(i, 1, ...parts);
    for (const p of parts) this.bytes += p.ndjson.length;
    this.save();
  }

  remove(id: string): void {
    this.replace(id, []);
  }

  /** Stops writing the store (another page owns it now); batches stay in memory only. */
  detach(): void {
    this.store = null;
  }

  save(): void {
    if (!this.store) return;
    for (;;) {
      try {
        this.store.setItem(this.key, JSON.stringify(this.batches));
        this.store.setItem(`${this.key}.dropped`, String(this.dropped));
        return;
      } catch {
        // Storage full: make room by dropping the oldest, counted, until it fits.
        if (this.batches.length === 0) return;
        this.dropOldest();
      }
    }
  }

  private dropOldest(): void {
    const b = this.batches.shift()!;
    this.bytes -= b.ndjson.length;
    this.dropped += 1;
    this.log(`outbox full: dropped batch ${b.id} (${b.count} events of ${b.sessionId}); ${this.dropped} dropped so far`);
  }
}

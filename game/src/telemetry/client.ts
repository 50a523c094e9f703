/**
 * The telemetry client: envelopes are batched (every second or 200 events), kept in a persisted
 * outbox, and sent one batch at a time, in order, to `{gateway}/v1/envelopes`.
 *
 * - 202: done (rejected envelopes are logged). 422: none accepted; logged, not resent.
 * - 401/403: the token or session is wrong; not resent, surfaced as `fatal` when the batch is of
 *   the session being driven (one left from an earlier page's session is only logged).
 * - 413: split in two and resent. 429/503/5xx/network error: the same batch again after an
 *   exponential backoff with jitter (capped at 10 s, or the server's Retry-After).
 * - pagehide: everything left goes by `sendBeacon` and also stays in the outbox; the engine
 *   drops the resent copies by event id.
 *
 * `onFlush` runs right after the buffer moved into the outbox, when nothing is in memory only:
 * the page saves its session snapshot there, so a reload resumes at exactly that seq.
 */
import type { Envelope } from "./envelope.js";
import { Outbox, type Batch, type Route } from "./outbox.js";
import type { Beacon, Clock, Compress, HttpFetch, KeyValueStore } from "./ports.js";

export interface ClientOptions {
  fetch: HttpFetch;
  clock: Clock;
  storage?: KeyValueStore | null;
  storageKey?: string;
  compress?: Compress | null;
  beacon?: Beacon | null;
  random?: () => number;
  maxEvents?: number;
  flushMs?: number;
  maxBytes?: number;
  maxBatches?: number;
  backoffCapMs?: number;
  onFlush?: () => void;
  log?: (message: string) => void;
}

export interface ClientStats {
  accepted: number;
  rejected: number;
  responses202: number;
  responses503: number;
  networkErrors: number;
  attempts: number;
  failures: number;
  lastRttMs: number;
  /** Ack times (ms) since the last `takeAckTimes`, for the bots' percentiles. */
  ackTimes: number[];
  fatal: string | null;
}

/** Beacons are limited to ~64 KiB in flight; stay under it per call. */
const BEACON_CHUNK = 60_000;

export class TelemetryClient {
  readonly outbox: Outbox;
  readonly stats: ClientStats = {
    accepted: 0, rejected: 0, responses202: 0, responses503: 0, networkErrors: 0,
    attempts: 0, failures: 0, lastRttMs: 0, ackTimes: [], fatal: null,
  };
  private route: Route | null = null;
  private buffer: string[] = [];
  private flushTimer: unknown = null;
  private retryTimer: unknown = null;
  private sending = false;
  private closed = false;
  private nextId = 0;
  private readonly o: Required<Omit<ClientOptions, "storage" | "compress" | "beacon" | "onFlush">> & ClientOptions;

  constructor(options: ClientOptions) {
    this.o = {
      storageKey: "pitgun.outbox", random: Math.random, maxEvents: 200, flushMs: 1000,
      maxBytes: 2 * 1024 * 1024, maxBatches: 500, backoffCapMs: 10_000, log: () => {},
      ...options,
    };
    this.outbox = new Outbox(options.storage ?? null, this.o.storageKey, { maxBytes: this.o.maxBytes, maxBatches: this.o.maxBatches }, this.o.log);
    this.nextId = this.outbox.size;
    // Batches left by a previous page go out first.
    if (this.outbox.size > 0) this.pump();
  }

  /** Where the following envelopes go. */
  bind(route: Route): void {
    if (this.buffer.length) this.flush();
    this.route = route;
  }

  push(envelope: Envelope): void {
    if (!this.route) throw new Error("telemetry client not bound to a session");
    this.buffer.push(JSON.stringify(envelope));
    if (this.buffer.length >= this.o.maxEvents) this.flush();
    else if (this.flushTimer === null) this.flushTimer = this.o.clock.setTimeout(() => this.flush(), this.o.flushMs);
  }

  get queuedEvents(): number {
    return this.buffer.length;
  }

  /** Moves buffered envelopes into a persisted batch and starts sending. */
  flush(): void {
    if (this.flushTimer !== null) {
      this.o.clock.clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    if (this.buffer.length && this.route) {
      const batch: Batch = { ...this.route, id: `${this.route.sessionId}#${Date.now().toString(36)}-${this.nextId++}`, ndjson: this.buffer.join("\n") + "\n", count: this.buffer.length, attempts: 0 };
      this.buffer = [];
      this.outbox.add(batch);
    }
    this.o.onFlush?.();
    this.pump();
  }

  /** The page is going away: persist and beacon everything left. */
  pagehide(): void {
    this.flush();
    const beacon = this.o.beacon;
    if (!beacon) return;
    for (const b of this.outbox.batches) {
      const url = `${b.gateway}/v1/envelopes?access_token=${encodeURIComponent(b.token)}`;
      for (const chunk of chunkLines(b.ndjson, BEACON_CHUNK)) {
        if (!beacon(url, new Blob([chunk], { type: "text/plain" }))) return;
      }
    }
  }

  /** Resolves true once every batch is acknowledged (or dropped), false at the deadline. */
  async drain(timeoutMs: number): Promise<boolean> {
    this.flush();
    const end = this.o.clock.now() + timeoutMs;
    while (this.outbox.size > 0 && this.o.clock.now() < end && !this.closed) {
      await new Promise<void>((r) => this.o.clock.setTimeout(r, 50));
    }
    return this.outbox.size === 0;
  }

  /** Stops sending, and stops writing the stored outbox: a send still in flight that ends
   * later changes memory only, so another page that took the outbox keeps what it stored. */
  close(): void {
    this.closed = true;
    this.outbox.detach();
    if (this.flushTimer !== null) this.o.clock.clearTimeout(this.flushTimer);
    if (this.retryTimer !== null) this.o.clock.clearTimeout(this.retryTimer);
  }

  takeAckTimes(): number[] {
    const t = this.stats.ackTimes;
    this.stats.ackTimes = [];
    return t;
  }

  private pump(): void {
    if (this.sending || this.retryTimer !== null || this.closed) return;
    const batch = this.outbox.batches[0];
    if (!batch) return;
    this.sending = true;
    void this.send(batch).finally(() => {
      this.sending = false;
      if (this.retryTimer === null) this.pump();
    });
  }

  private async send(batch: Batch): Promise<void> {
    const { clock } = this.o;
    const headers: Record<string, string> = { Authorization: `Bearer ${batch.token}`, "Content-Type": "application/x-ndjson" };
    let body: string | Uint8Array = batch.ndjson;
    if (this.o.compress) {
      body = await this.o.compress(batch.ndjson);
      headers["Content-Encoding"] = "gzip";
    }
    const started = clock.now();
    this.stats.attempts++;
    batch.attempts++;
    let status = 0;
    let retryAfter: string | null = null;
    let text = "";
    try {
      const res = await this.o.fetch(`${batch.gateway}/v1/envelopes`, { method: "POST", headers, body });
      status = res.status;
      retryAfter = res.headers.get("retry-after");
      text = await res.text().catch(() => "");
    } catch (e) {
      this.stats.networkErrors++;
      this.o.log(`send ${batch.id}: network error ${(e as Error).message ?? e}`);
    }
    const rtt = clock.now() - started;
    if (status >= 200 && status < 300) {
      this.stats.lastRttMs = rtt;
      this.stats.ackTimes.push(rtt);
      this.stats.responses202++;
      const ack = parseJson(text) as { accepted?: number; rejected?: number; errors?: unknown[] } | null;
      this.stats.accepted += ack?.accepted ?? batch.count;
      if (ack?.rejected) {
        this.stats.rejected += ack.rejected;
        this.o.log(`batch ${batch.id}: ${ack.rejected} rejected ${JSON.stringify(ack.errors ?? []).slice(0, 500)}`);
      }
      this.outbox.remove(batch.id);
      return;
    }
    if (status === 413) {
      const lines = batch.ndjson.trimEnd().split("\n");
      if (lines.length < 2) {
        this.o.log(`batch ${batch.id}: one envelope too large for the gateway; dropped`);
        this.outbox.remove(batch.id);
      } else {
        const half = Math.ceil(lines.length / 2);
        const part = (ls: string[], n: number): Batch => ({ ...batch, id: `${batch.id}.${n}`, ndjson: ls.join("\n") + "\n", count: ls.length, attempts: 0 });
        this.outbox.replace(batch.id, [part(lines.slice(0, half), 1), part(lines.slice(half), 2)]);
      }
      return;
    }
    if (status === 422 || status === 401 || status === 403 || (status >= 400 && status < 500 && status !== 408 && status !== 429)) {
      this.stats.failures++;
      if (status === 422) this.stats.rejected += batch.count;
      const message = `gateway ${status} for ${batch.count} events of ${batch.sessionId}: ${text.slice(0, 300)}`;
      // A batch left from an earlier session (its token expired since) says nothing of this one.
      if ((status === 401 || status === 403) && batch.sessionId === this.route?.sessionId) this.stats.fatal = message;
      this.o.log(message);
      this.outbox.remove(batch.id);
      return;
    }
    // 0 (network), 408, 429, 5xx: the same batch again, later.
    this.stats.failures++;
    if (status === 503) this.stats.responses503++;
    const exp = Math.min(this.o.backoffCapMs, 250 * 2 ** Math.min(batch.attempts - 1, 16));
    let delay = exp * (0.5 + 0.5 * this.o.random());
    const serverSays = retryAfter !== null ? Number(retryAfter) : NaN;
    if (Number.isFinite(serverSays)) delay = Math.max(delay, Math.min(serverSays * 1000, 30_000));
    this.outbox.save();
    this.retryTimer = clock.setTimeout(() => {
      this.retryTimer = null;
      this.pump();
    }, delay);
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** NDJSON cut at line ends into pieces of at most `max` characters (a longer line goes alone). */
export function chunkLines(ndjson: string, max: number): string[] {
  const out: string[] = [];
  let cur = "";
  for (const line of ndjson.split("\n")) {
    if (!line) continue;
    if (cur && cur.length + line.length + 1 > max) {
      out.push(cur);
      cur = "";
    }
    cur += line + "\n";
  }
  if (cur) out.push(cur);
  return out;
}

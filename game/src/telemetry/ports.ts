/**
 * What the telemetry client needs from its host, injected so the same core runs in the page, in
 * the bots (Node) and under test with a fake clock, fake storage and a scripted gateway.
 */

/** The subset of `fetch`'s response the client reads. */
export interface HttpResponse {
  status: number;
  headers: { get(name: string): string | null };
  text(): Promise<string>;
}

export type HttpFetch = (url: string, init: { method: string; headers: Record<string, string>; body?: string | Uint8Array }) => Promise<HttpResponse>;

/** localStorage's shape; `setItem` may throw when the quota is exceeded. */
export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface Clock {
  /** Milliseconds, monotonic enough for round trips and backoff. */
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export type Compress = (text: string) => Promise<Uint8Array>;

/** `navigator.sendBeacon`: no headers, so the token travels in the query. */
export type Beacon = (url: string, body: Blob) => boolean;

/** A store that forgets on reload: the bots' choice (thousands of sessions, no disk). */
export class MemoryStore implements KeyValueStore {
  readonly map = new Map<string, string>();
  constructor(private readonly quotaBytes = Infinity) {}
  getItem(key: string): string | null {
    return this.map.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    let used = value.length;
    for (const [k, v] of this.map) if (k !== key) used += v.length;
    if (used > this.quotaBytes) throw new Error("QuotaExceededError");
    this.map.set(key, value);
  }
  removeItem(key: string): void {
    this.map.delete(key);
  }
}

export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/** gzip with the platform's CompressionStream (browsers and Node ≥ 18). */
export async function gzip(text: string): Promise<Uint8Array> {
  const stream = new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Test doubles: a manual clock and a scripted gateway. */
import type { Clock, HttpFetch, HttpResponse } from "../src/telemetry/ports.js";

export class ManualClock implements Clock {
  t = 0;
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private ids = 0;
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.ids;
    this.timers.push({ at: this.t + ms, fn, id });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers = this.timers.filter((x) => x.id !== h);
  }
  /** Advances time, firing due timers in order and letting promises settle between them. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await settle();
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers[0];
      if (!next || next.at > end) break;
      this.timers.shift();
      this.t = Math.max(this.t, next.at);
      next.fn();
    }
    this.t = end;
    await settle();
  }
}

export async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

export interface Call {
  url: string;
  headers: Record<string, string>;
  body: string;
  at: number;
}

/** A gateway whose answer per call is scripted (status, or "network" to throw). */
export function scriptedGateway(clock: ManualClock, answers: (number | "network")[], fallback: number | "network" = 202) {
  const calls: Call[] = [];
  const fetch: HttpFetch = async (url, init) => {
    const body = typeof init.body === "string" ? init.body : new TextDecoder().decode(init.body);
    calls.push({ url, headers: init.headers, body, at: clock.now() });
    const a = answers.length ? answers.shift()! : fallback;
    if (a === "network") throw new Error("connection refused");
    const n = body.split("\n").filter(Boolean).length;
    const text = a === 202 ? JSON.stringify({ accepted: n, rejected: 0, errors: [] }) : JSON.stringify({ error: `status ${a}` });
    const res: HttpResponse = { status: a, headers: { get: (h) => (h.toLowerCase() === "retry-after" && a === 503 ? "1" : null) }, text: async () => text };
    return res;
  };
  return { fetch, calls };
}

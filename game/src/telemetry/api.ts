/** The Pitgun API the game talks to: sessions, runs and the leaderboard. */
import { SOURCE } from "./channels.js";
import type { HttpFetch } from "./ports.js";

export interface SessionGrant {
  session_id: string;
  token: string;
  expires_at: string;
  gateway: string;
  /** The server's clock when it issued the session (absent from older APIs). */
  issued_at?: string;
  /** The source the token sends for (kind and id); the version is the game's own. */
  source?: { kind: string; id: string };
}

/**
 * What to add to the browser's clock (ms) to read the server's, from a grant received at
 * `receivedMs` of the browser's clock: event times come from the browser, and one set minutes
 * fast would have every event refused as `future_time`. Off by at most the request's round trip;
 * 0 when the API does not say its time.
 */
export function clockOffsetMs(grant: SessionGrant, receivedMs: number): number {
  const server = grant.issued_at ? Date.parse(grant.issued_at) : NaN;
  return Number.isFinite(server) ? server - receivedMs : 0;
}

/** A session's wall-clock start (µs since the epoch) on the server's clock, at `nowMs` of the browser's. */
export function wallStartUs(grant: SessionGrant, nowMs = Date.now()): number {
  return Math.round(nowMs + clockOffsetMs(grant, nowMs)) * 1000;
}

/** The envelopes' source: the one the token was issued for, at this game's version. */
export function sourceOf(grant: SessionGrant): { kind: string; id: string; version: string } {
  return { kind: grant.source?.kind ?? SOURCE.kind, id: grant.source?.id ?? SOURCE.id, version: SOURCE.version };
}

export class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly retryAfterS: number | null = null) {
    super(message);
  }
}

export async function createSession(fetch: HttpFetch, api: string, body: { player: string; track: string; car: string }): Promise<SessionGrant> {
  const res = await fetch(`${api}/v1/sessions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const text = await res.text();
  if (res.status !== 201 && res.status !== 200) {
    const ra = res.headers.get("retry-after");
    throw new ApiError(res.status, `POST /v1/sessions: ${res.status} ${text.slice(0, 300)}`, ra !== null ? Number(ra) : null);
  }
  return JSON.parse(text) as SessionGrant;
}

/** `POST /v1/sessions`, waiting out 429s and 503s (Retry-After) until `deadlineMs` passes. */
export async function createSessionPatiently(fetch: HttpFetch, api: string, body: { player: string; track: string; car: string }, deadlineMs = 60_000): Promise<SessionGrant> {
  const end = Date.now() + deadlineMs;
  for (let attempt = 0; ; attempt++) {
    try {
      return await createSession(fetch, api, body);
    } catch (e) {
      const retriable = !(e instanceof ApiError) || e.status === 429 || e.status >= 500;
      if (!retriable || Date.now() > end) throw e;
      const wait = e instanceof ApiError && e.retryAfterS !== null ? e.retryAfterS * 1000 : Math.min(10_000, 250 * 2 ** attempt);
      await new Promise((r) => setTimeout(r, wait * (0.75 + 0.5 * Math.random())));
    }
  }
}

export interface LapRow {
  lap: number;
  lap_time: number | null;
  complete: boolean | null;
}

export interface Run {
  session_id: string;
  laps: number | null;
  best_lap_s: number | null;
  total_time_s?: number | null;
  lap_rows: LapRow[];
}

/** The run, or null while the sink has not written it (404). */
export async function getRun(fetch: HttpFetch, api: string, session: string): Promise<Run | null> {
  const res = await fetch(`${api}/v1/runs/${encodeURIComponent(session)}`, { method: "GET", headers: {} });
  if (res.status === 404) return null;
  const text = await res.text();
  if (res.status !== 200) throw new ApiError(res.status, `GET /v1/runs: ${res.status} ${text.slice(0, 300)}`);
  const run = JSON.parse(text) as Run & { laps: unknown };
  // The lap rows are `lap_rows` (api/src/store.rs); accept an array under `laps` too.
  if (!Array.isArray(run.lap_rows) && Array.isArray(run.laps)) {
    run.lap_rows = run.laps as LapRow[];
    run.laps = run.lap_rows.filter((r) => r.complete).length;
  }
  run.lap_rows ??= [];
  return run;
}

export interface LeaderboardEntry {
  rank?: number;
  player: string;
  best_lap_s: number;
  session_id: string;
  car: string;
}

export async function getLeaderboard(fetch: HttpFetch, api: string, track: string, car: string): Promise<LeaderboardEntry[]> {
  const res = await fetch(`${api}/v1/leaderboard?track=${encodeURIComponent(track)}&car=${encodeURIComponent(car)}`, { method: "GET", headers: {} });
  const text = await res.text();
  if (res.status !== 200) throw new ApiError(res.status, `GET /v1/leaderboard: ${res.status} ${text.slice(0, 300)}`);
  const body = JSON.parse(text) as { entries?: LeaderboardEntry[]; rows?: LeaderboardEntry[] } | LeaderboardEntry[];
  return Array.isArray(body) ? body : body.entries ?? body.rows ?? [];
}

/**
 * A session being driven and reported: the sim state, its identity at the API, the telemetry
 * client it reports through, and (when it drives) the autopilot. DOM-free: the page and the bots
 * both use it. `snapshot()` is what the page persists at every flush so a reload resumes here.
 */
import { autopilotDriver, type AutopilotState } from "../sim/autopilot.js";
import type { SimEvent } from "../sim/metrics.js";
import { advanceFrame, endSession, healthEvent, simUs, STEP_HZ, type Driver, type SessionState } from "../sim/session.js";
import type { TelemetryClient } from "../telemetry/client.js";
import { toEnvelope, type SessionIdentity } from "../telemetry/envelope.js";
import type { Route } from "../telemetry/outbox.js";

export interface Snapshot {
  version: 1;
  route: Route;
  identity: SessionIdentity;
  expiresAt: string;
  sim: SessionState;
  autopilot: AutopilotState | null;
  /** When it was saved (ms since the epoch); absent in snapshots of earlier pages. */
  savedAtMs?: number;
  /** What to add to the browser's clock to read the server's (`clockOffsetMs`); absent in
   * snapshots of earlier pages, whose races then go on in real time. */
  clockOffsetMs?: number | null;
}

/**
 * How far a fast-forwarded race (`?speed=K`) may run ahead of the server's clock. Event times
 * are the race's own, and the gateway refuses events more than its `--max-future-skew`
 * (default 5 min) ahead: a minute's margin under it, then the race goes on in real time.
 */
export const MAX_AHEAD_MS = 4 * 60_000;

/**
 * How long a saved race may wait for a reload to resume it: the processor closes a session
 * silent for its manifests' `idle_timeout` (10 min), and every event sent after that is late.
 */
export const RESUME_WITHIN_MS = 10 * 60 * 1000;

/** Why a saved race cannot be resumed at `nowMs` (ms since the epoch), or null if it can. */
export function notResumable(s: Snapshot, nowMs: number): string | null {
  if (s.version !== 1 || s.sim.phase !== "running") return "it is not a race in progress";
  const expires = Date.parse(s.expiresAt);
  // A minute's margin: the first batch must still be accepted when it arrives.
  if (Number.isFinite(expires) && expires <= nowMs + 60_000) return "its session token has expired";
  if (s.savedAtMs !== undefined && nowMs - s.savedAtMs > RESUME_WITHIN_MS) return "it was left for longer than a session's idle timeout (10 min)";
  return null;
}

export class LiveSession {
  constructor(
    readonly route: Route,
    readonly identity: SessionIdentity,
    readonly sim: SessionState,
    readonly client: TelemetryClient,
    readonly autopilot: AutopilotState | null,
    readonly expiresAt = "",
    /** What to add to the browser's clock to read the server's; null: not known (a snapshot of an earlier page). */
    readonly clockOffsetMs: number | null = 0,
  ) {
    client.bind(route);
  }

  static resume(s: Snapshot, client: TelemetryClient): LiveSession {
    return new LiveSession(s.route, s.identity, s.sim, client, s.autopilot, s.expiresAt, s.clockOffsetMs ?? null);
  }

  /**
   * Physics steps for a frame at `nowMs` (browser clock): the `realTime` steps that keep up with
   * the wall clock, or up to `fastForward` while the race stays within MAX_AHEAD_MS of the
   * server's clock.
   */
  stepsThisFrame(realTime: number, fastForward: number, nowMs: number): number {
    // Without the server's clock, how far ahead the race is cannot be told: real time only.
    if (this.clockOffsetMs === null) return realTime;
    const aheadUs = this.identity.wallStartUs + simUs(this.sim) - (nowMs + this.clockOffsetMs) * 1000;
    const room = Math.floor(((MAX_AHEAD_MS * 1000 - aheadUs) * STEP_HZ) / 1e6);
    return Math.max(realTime, Math.min(fastForward, room));
  }

  /** The autopilot when it drives, else the given driver. */
  driver(human: Driver): Driver {
    return this.autopilot ? autopilotDriver(this.autopilot) : human;
  }

  /** Sends events the caller produced outside `frame` (session_start). */
  report(events: SimEvent[]): void {
    for (const e of events) this.client.push(toEnvelope(this.identity, e));
  }

  /** One rendered frame: `steps` physics steps and one sample, all reported. */
  frame(steps: number, driver: Driver): SimEvent[] {
    const events = advanceFrame(this.sim, steps, driver);
    this.report(events);
    return events;
  }

  health(h: { fps: number; frameMs: number; dropped: number }): void {
    if (this.sim.phase !== "running") return;
    const s = this.client.stats;
    const loss = s.attempts ? s.failures / s.attempts : 0;
    this.report([healthEvent(this.sim, { ...h, rttMs: s.lastRttMs, loss })]);
  }

  end(): SimEvent[] {
    const events = endSession(this.sim);
    this.report(events);
    return events;
  }

  snapshot(nowMs = Date.now()): Snapshot {
    return { version: 1, route: this.route, identity: this.identity, expiresAt: this.expiresAt, sim: this.sim, autopilot: this.autopilot, savedAtMs: nowMs, clockOffsetMs: this.clockOffsetMs };
  }
}

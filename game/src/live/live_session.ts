/**
 * A session being driven and reported: the sim state, its identity at the API, the telemetry
 * client it reports through, and (when it drives) the autopilot. DOM-free: the page and the bots
 * both use it. `snapshot()` is what the page persists at every flush so a reload resumes here.
 */
import { autopilotDriver, type AutopilotState } from "../sim/autopilot.js";
import type { SimEvent } from "../sim/metrics.js";
import { advanceFrame, endSession, healthEvent, type Driver, type SessionState } from "../sim/session.js";
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
}

export class LiveSession {
  constructor(
    readonly route: Route,
    readonly identity: SessionIdentity,
    readonly sim: SessionState,
    readonly client: TelemetryClient,
    readonly autopilot: AutopilotState | null,
    readonly expiresAt = "",
  ) {
    client.bind(route);
  }

  static resume(s: Snapshot, client: TelemetryClient): LiveSession {
    return new LiveSession(s.route, s.identity, s.sim, client, s.autopilot, s.expiresAt);
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

  snapshot(): Snapshot {
    return { version: 1, route: this.route, identity: this.identity, expiresAt: this.expiresAt, sim: this.sim, autopilot: this.autopilot };
  }
}

/**
 * The autopilot: drives the car by the circuit's speed profile, scaled by a seeded pace, and
 * steers back to the centre line with a second-order law (wavelength ~20 m, damped). Seeded
 * mistakes make laps differ: braking late into a corner (it slides wide) and running onto the
 * grass for a moment. The same code drives the bots and the page's `?autopilot=SEED` mode; its
 * state is plain JSON so it resumes with the session.
 */
import { carSpec, G0, PIT_LANE } from "./data.js";
import { clamp, gripCurvature, PIT_LIMIT_MS, steerCurvature, type Inputs } from "./car.js";
import { chance, nextFloat, seedPrng, type Prng } from "./prng.js";
import type { Driver, SessionState } from "./session.js";
import { sampleAt, type Circuit } from "./track.js";

export interface Mistake {
  kind: "late_braking" | "off_track";
  fromS: number;
  toS: number;
  /** Lateral target during an off-track moment, m. */
  offset: number;
}

export interface AutopilotState {
  rng: Prng;
  /** 0..1: pace and how rarely mistakes happen. */
  skill: number;
  pace: number;
  lap: number;
  mistake: Mistake | null;
  /** Pit on this lap (tests force it); otherwise decided at the line. */
  pitOnLap: number;
  lastPitLap: number;
}

const ALIGN_PER_S = 2;
const LINE_WAVELENGTH_M = 20;
const DAMPING = 0.9;

export function newAutopilot(seed: number, opts: { skill?: number; pitOnLap?: number } = {}): AutopilotState {
  const rng = seedPrng(seed ^ 0x5bd1e995);
  const skill = opts.skill ?? nextFloat(rng);
  return { rng, skill, pace: 1, lap: 0, mistake: null, pitOnLap: opts.pitOnLap ?? 0, lastPitLap: 0 };
}

/** The autopilot as a session `Driver`. */
export function autopilotDriver(ap: AutopilotState): Driver {
  return { inputs: (session, c) => autopilotInputs(ap, session, c) };
}

export function autopilotInputs(ap: AutopilotState, session: SessionState, c: Circuit): Inputs {
  const car = session.carState;
  if (ap.lap !== session.lap) newLap(ap, session, c);
  const s = car.s;
  const v = car.v;
  const spec = carSpec(session.car);
  const m = ap.mistake && s >= ap.mistake.fromS && s < ap.mistake.toS ? ap.mistake : null;

  // Speed: the profile a little ahead (actuators lag), scaled by pace; braking late means
  // reading the profile as if the car could carry much more speed.
  const profile = c.vmax.get(session.car)!;
  const look = s + v * 0.1 + 2;
  const pace = m?.kind === "late_braking" ? ap.pace * 1.18 : ap.pace;
  let target = sampleAt(profile, look) * pace;
  if (car.offTrack) target *= 0.7;
  const pit = wantsPit(ap, session, c);
  if ((pit || car.pitRequested) && car.pit === "out") {
    // Arrive at the pit entry at the lane's limit.
    const toEntry = c.length - PIT_LANE.entry_before_line_m - look;
    if (toEntry > -50) target = Math.min(target, Math.sqrt(PIT_LIMIT_MS ** 2 + 2 * 0.8 * spec.brake_g * G0 * Math.max(0, toEntry)));
  }
  const err = target - v;
  let throttle = 0;
  let brake = 0;
  if (err > 0.2) throttle = clamp(0.35 + err * 0.6, 0, 1);
  else if (err < -0.2) brake = clamp(-err * 0.35, 0, 1);
  else throttle = 0.3;

  // Steering: track curvature ahead plus a pull back to the line (or out to the grass).
  const vv = Math.max(v, 5);
  const dTarget = m?.kind === "off_track" ? m.offset : 0;
  const kTrack = sampleAt(c.curvature, s + v * 0.08);
  let k = kTrack + (ALIGN_PER_S * car.psi) / vv - (car.d - dTarget) / LINE_WAVELENGTH_M ** 2 - (2 * DAMPING * car.psi) / LINE_WAVELENGTH_M;
  const kGrip = gripCurvature(car, spec, vv);
  k = clamp(k, -1.05 * kGrip, 1.05 * kGrip);
  const steer = clamp(k / steerCurvature(vv), -1, 1);

  return { throttle, brake, steer, pit };
}

function newLap(ap: AutopilotState, session: SessionState, c: Circuit): void {
  ap.lap = session.lap;
  const r = ap.rng;
  ap.pace = (0.94 + 0.05 * ap.skill) * (1 - 0.012 * nextFloat(r));
  ap.mistake = null;
  // Weaker drivers err more often; never in the pit-entry zone, so pit tests stay exact.
  if (chance(r, 0.1 + 0.5 * (1 - ap.skill))) {
    const from = 300 + nextFloat(r) * (c.length - PIT_LANE.entry_before_line_m - 700);
    const late = chance(r, 0.5);
    ap.mistake = {
      kind: late ? "late_braking" : "off_track",
      fromS: from,
      toS: from + (late ? 250 : 120),
      offset: (chance(r, 0.5) ? 1 : -1) * (8 + 3 * nextFloat(r)),
    };
  }
}

/** Pits when forced for this lap, or at the line's decision when tyres or fuel run low. */
function wantsPit(ap: AutopilotState, session: SessionState, c: Circuit): boolean {
  const car = session.carState;
  if (session.lap === ap.pitOnLap) return true;
  if (ap.pitOnLap > 0 || session.lap < 2 || session.lap < ap.lastPitLap + 3 || car.pit !== "out") return false;
  const worn = car.wheels.reduce((mx, w) => Math.max(mx, w.wear), 0);
  if (car.fuelKg < 4 || worn > 0.6) {
    ap.lastPitLap = session.lap;
    return true;
  }
  return car.s > c.length - PIT_LANE.entry_before_line_m - 50 && car.pitRequested;
}

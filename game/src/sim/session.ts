/**
 * One racing session as a pure state machine over a fixed 60 Hz step. Time is the step count:
 * step k starts at `stepUs(k)` whole microseconds. A boundary crossed inside a step (sector end,
 * the line, pit entry, box, exit) is placed by linear interpolation of distance over the step and
 * rounded to a microsecond; that integer is what the event carries and what the page's lap timer
 * shows, so the pipeline's lap time (difference of event times) equals the page's exactly.
 *
 * The whole state is plain JSON (`SessionState`) so a reloaded page resumes it bit for bit.
 */
import { carSpec, PIT_LANE } from "./data.js";
import {
  carSystems, inPitLane, moveCar, newCar, serviceCar, surfaceEffects, tyreKpa, type CarState, type Inputs,
} from "./car.js";
import type { EventKind, SimEvent, Values } from "./metrics.js";
import { nextFloat, seedPrng, type Prng } from "./prng.js";
import { circuit, type Circuit } from "./track.js";

export const STEP_HZ = 60;
export const STEP_S = 1 / STEP_HZ;

/** Start of step `k` in whole microseconds since the session start. */
export function stepUs(k: number): number {
  return Math.round((k * 1e6) / STEP_HZ);
}

/** A completed lap, times in sim microseconds. */
export interface LapRecord {
  lap: number;
  startUs: number;
  endUs: number;
  sectorsUs: number[];
}

export interface SessionState {
  track: string;
  car: string;
  player: string;
  /** Laps to drive; the session ends at the line after the last. */
  lapsTarget: number;
  step: number;
  lap: number;
  sector: number;
  lapStartUs: number;
  sectorStartUs: number;
  /** Sector times of the lap being driven. */
  sectorsUs: number[];
  /** Where the pit lane ends, in this lap's distance (beyond the length until the line). */
  pitExitAt: number;
  seq: number;
  samples: number;
  completed: LapRecord[];
  phase: "running" | "ended";
  carState: CarState;
  rng: Prng;
}

/** Anything that turns the session's state into inputs: keyboard, touch or the autopilot. */
export interface Driver {
  inputs(session: SessionState, c: Circuit): Inputs;
}

export interface SessionOptions {
  track: string;
  car: string;
  player: string;
  laps: number;
  seed: number;
}

/** A new session and its `session_start` event (lap 1, at sim time 0). */
export function startSession(o: SessionOptions): { state: SessionState; events: SimEvent[] } {
  const rng = seedPrng(o.seed);
  circuit(o.track);
  const state: SessionState = {
    track: o.track, car: o.car, player: o.player, lapsTarget: o.laps,
    step: 0, lap: 1, sector: 1, lapStartUs: 0, sectorStartUs: 0, sectorsUs: [], pitExitAt: 0,
    seq: 0, samples: 0, completed: [], phase: "running",
    carState: newCar(carSpec(o.car), rng), rng,
  };
  const c = state.carState;
  const start = emit(state, "session_start", 0, { lap: 1, lap_distance: 0, position: c.position, in_pit: 0 });
  return { state, events: [start] };
}

export function simUs(state: SessionState): number {
  return stepUs(state.step);
}

/** Current lap time shown by the page, µs. */
export function currentLapUs(state: SessionState): number {
  return simUs(state) - state.lapStartUs;
}

/**
 * Runs up to `steps` physics steps, then emits one sample at the frame's time: what the page
 * does per rendered frame. Crossings come first, at their exact times. After the last lap the
 * session ends at once with `session_end`.
 */
export function advanceFrame(state: SessionState, steps: number, driver: Driver): SimEvent[] {
  const out: SimEvent[] = [];
  if (state.phase === "ended" || steps <= 0) return out;
  const c = circuit(state.track);
  let finished = false;
  for (let i = 0; i < steps && !finished; i++) finished = stepOnce(state, c, driver, out);
  out.push(sample(state));
  if (finished) out.push(...endSession(state));
  return out;
}

/** Ends the session now (last lap done, player quit, bot's time up). */
export function endSession(state: SessionState): SimEvent[] {
  if (state.phase === "ended") return [];
  state.phase = "ended";
  const c = state.carState;
  return [emit(state, "session_end", simUs(state), { lap: state.lap, lap_distance: c.s, position: c.position })];
}

/** Client health at the current sim time, from measurements the caller took. */
export function healthEvent(state: SessionState, h: { fps: number; frameMs: number; rttMs: number; dropped: number; loss: number }): SimEvent {
  return emit(state, "health", simUs(state), {
    fps: h.fps, frame_ms: h.frameMs, rtt_ms: h.rttMs, dropped_frames: h.dropped, packet_loss: h.loss,
  });
}

function emit(state: SessionState, kind: EventKind, us: number, values: Values): SimEvent {
  state.seq += 1;
  return { kind, seq: state.seq, simUs: us, values };
}

type Boundary = "sector" | "line" | "pit_entry" | "pit_box" | "pit_exit";

/** One 60 Hz step; returns true when the last lap was completed in it. */
function stepOnce(state: SessionState, c: Circuit, driver: Driver, out: SimEvent[]): boolean {
  const car = state.carState;
  const spec = carSpec(state.car);
  const t0 = stepUs(state.step);
  const t1 = stepUs(state.step + 1);
  let finished = false;

  if (car.pit === "stopped" && t0 >= car.pitUntilUs) car.pit = "exiting";
  if (car.pit === "stopped") {
    car.v = 0;
    carSystems(car, spec, STEP_S, state.rng);
    state.step++;
    return false;
  }
  const inputs = driver.inputs(state, c);
  if (inputs.pit && car.pit === "out") car.pitRequested = true;
  const entry = c.length - PIT_LANE.entry_before_line_m;
  const box = c.length - PIT_LANE.box_before_line_m;
  // Asked for the pit after the entry line but well before the box: turn in now.
  if (car.pit === "out" && car.pitRequested && car.s > entry && car.s < box - 40) {
    enterPit(state, t0, car.s, out);
  }

  let s0 = car.s;
  const { ds } = moveCar(car, spec, c, inputs, STEP_S);
  let s1 = s0 + ds;
  let base = s0;
  for (;;) {
    const next = nextBoundary(state, c, base);
    if (!next || next.at > s1) break;
    const frac = s1 > s0 ? (next.at - s0) / (s1 - s0) : 1;
    const t = t0 + Math.round((t1 - t0) * frac);
    base = next.at;
    switch (next.kind) {
      case "sector": {
        const n = state.sector;
        out.push(emit(state, "sector", t, { lap: state.lap, [`sector_time_${n}`]: (t - state.sectorStartUs) / 1e6 }));
        state.sectorsUs.push(t - state.sectorStartUs);
        state.sector += 1;
        state.sectorStartUs = t;
        if (nextFloat(state.rng) < 0.15) nudgePosition(car, state.rng);
        break;
      }
      case "line": {
        out.push(emit(state, "sector", t, { lap: state.lap, sector_time_3: (t - state.sectorStartUs) / 1e6 }));
        state.sectorsUs.push(t - state.sectorStartUs);
        state.completed.push({ lap: state.lap, startUs: state.lapStartUs, endUs: t, sectorsUs: state.sectorsUs });
        out.push(emit(state, "lap", t, { lap: state.lap + 1, lap_time_last: (t - state.lapStartUs) / 1e6, position: car.position }));
        state.lap += 1;
        state.sector = 1;
        state.sectorsUs = [];
        state.lapStartUs = t;
        state.sectorStartUs = t;
        s0 -= c.length;
        s1 -= c.length;
        base -= c.length;
        if (car.pit === "exiting") state.pitExitAt -= c.length;
        if (state.lap > state.lapsTarget) finished = true;
        break;
      }
      case "pit_entry":
        enterPit(state, t, next.at, out);
        break;
      case "pit_box": {
        // Stop dead at the box: serviced while stationary.
        s1 = next.at;
        car.v = 0;
        car.pit = "stopped";
        car.pitUntilUs = t + Math.round(serviceCar(car, spec, state.rng) * 1e6);
        break;
      }
      case "pit_exit":
        car.pit = "out";
        car.d = 0;
        car.psi = 0;
        out.push(emit(state, "pit_out", t, { in_pit: 0, lap: state.lap, lap_distance: next.at }));
        break;
    }
    if (car.pit === "stopped") break;
  }
  car.s = Math.min(Math.max(s1, 0), c.length - 1e-9);
  surfaceEffects(car, STEP_S, state.rng);
  carSystems(car, spec, STEP_S, state.rng);
  state.step++;
  return finished;
}

function enterPit(state: SessionState, t: number, at: number, out: SimEvent[]): void {
  const car = state.carState;
  car.pit = "approach";
  car.pitRequested = false;
  state.pitExitAt = circuit(state.track).length + PIT_LANE.exit_after_line_m;
  out.push(emit(state, "pit_in", t, { in_pit: 1, lap: state.lap, lap_distance: at }));
}

/** The nearest boundary ahead of `base` in the car's current state. */
function nextBoundary(state: SessionState, c: Circuit, base: number): { at: number; kind: Boundary } | null {
  const ends = c.spec.sector_ends;
  const car = state.carState;
  const candidates: { at: number; kind: Boundary }[] = [
    state.sector === 1 ? { at: ends[0], kind: "sector" } : state.sector === 2 ? { at: ends[1], kind: "sector" } : { at: c.length, kind: "line" },
  ];
  if (car.pit === "out" && car.pitRequested) candidates.push({ at: c.length - PIT_LANE.entry_before_line_m, kind: "pit_entry" });
  if (car.pit === "approach") candidates.push({ at: c.length - PIT_LANE.box_before_line_m, kind: "pit_box" });
  if (car.pit === "exiting") candidates.push({ at: state.pitExitAt, kind: "pit_exit" });
  let best: { at: number; kind: Boundary } | null = null;
  for (const b of candidates) if (b.at > base && (!best || b.at < best.at)) best = b;
  return best;
}

function nudgePosition(car: CarState, rng: Prng): void {
  car.position = nextFloat(rng) < 0.5 ? Math.max(1, car.position - 1) : Math.min(20, car.position + 1);
}

/** Slow channels ride on every fourth sample, one of eight groups at a time, like the simulator. */
const SLOW_EVERY = 4;
const SLOW_GROUPS = 8;

function sample(state: SessionState): SimEvent {
  const car = state.carState;
  const spec = carSpec(state.car);
  const t = simUs(state);
  const v: Values = {
    speed: car.v, accel_long: car.longG, accel_lat: car.latG, yaw_rate: car.yawRate,
    throttle: car.throttle, brake: car.brake, steer: car.steer, gear: car.gear, rpm: car.rpm,
    lap: state.lap, lap_distance: car.s, lap_time_current: (t - state.lapStartUs) / 1e6,
  };
  const k = state.samples++;
  if (k % SLOW_EVERY === 2) {
    const w = car.wheels;
    switch (Math.floor(k / SLOW_EVERY) % SLOW_GROUPS) {
      case 0: Object.assign(v, { tyre_surface_fl: w[0].surfaceC, tyre_surface_fr: w[1].surfaceC, tyre_surface_rl: w[2].surfaceC, tyre_surface_rr: w[3].surfaceC }); break;
      case 1: Object.assign(v, { tyre_inner_fl: w[0].innerC, tyre_inner_fr: w[1].innerC, tyre_inner_rl: w[2].innerC, tyre_inner_rr: w[3].innerC }); break;
      case 2: Object.assign(v, { tyre_kpa_fl: tyreKpa(car, spec, 0), tyre_kpa_fr: tyreKpa(car, spec, 1), tyre_kpa_rl: tyreKpa(car, spec, 2), tyre_kpa_rr: tyreKpa(car, spec, 3) }); break;
      case 3: Object.assign(v, { brake_c_fl: w[0].brakeC, brake_c_fr: w[1].brakeC, brake_c_rl: w[2].brakeC, brake_c_rr: w[3].brakeC }); break;
      case 4: Object.assign(v, { tyre_wear_fl: w[0].wear, tyre_wear_fr: w[1].wear, tyre_wear_rl: w[2].wear, tyre_wear_rr: w[3].wear }); break;
      case 5: Object.assign(v, { water_c: car.waterC, oil_c: car.oilC, fuel_kg: car.fuelKg, clutch: car.clutch }); break;
      case 6: Object.assign(v, { sector: state.sector, position: car.position, in_pit: inPitLane(car) ? 1 : 0, ers_kj: car.ersKj, ers_kw: car.ersKw }); break;
      default: Object.assign(v, { track_c: car.trackC, air_c: car.airC, damage_front_wing: car.damage[0], damage_rear_wing: car.damage[1], damage_floor: car.damage[2] });
    }
  }
  return emit(state, "sample", t, v);
}

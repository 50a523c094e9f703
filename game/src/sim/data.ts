/**
 * The circuits, cars and pit lane of the Pitgun reference workload, read from the same file the
 * Rust simulator reads (`workload/circuits.json`), so the game and the simulator cannot drift.
 */
import circuits from "../../../workload/circuits.json";

/** `[length m, signed radius m]`: radius 0 is a straight, positive turns left. */
export type Segment = [number, number];

export interface TrackSpec {
  name: string;
  length_m: number;
  /** Lap distances where sectors 1 and 2 end (sector 3 ends at the line). */
  sector_ends: [number, number];
  segments: Segment[];
}

export interface CarSpec {
  name: string;
  /** Top speed, m/s. */
  v_top: number;
  grip_g: number;
  brake_g: number;
  /** Traction-limited acceleration at low speed, m/s². */
  accel0: number;
  rpm_max: number;
  rpm_idle: number;
  tank_kg: number;
  cold_kpa: number;
  wheelbase_m: number;
}

export interface PitLaneSpec {
  entry_before_line_m: number;
  box_before_line_m: number;
  exit_after_line_m: number;
  speed_limit_kmh: number;
}

export const TRACKS: readonly TrackSpec[] = circuits.tracks as TrackSpec[];
export const CARS: readonly CarSpec[] = circuits.cars as CarSpec[];
export const PIT_LANE: PitLaneSpec = circuits.pit_lane;

/** Standard gravity, m/s². */
export const G0 = 9.80665;

export function trackSpec(name: string): TrackSpec {
  const t = TRACKS.find((x) => x.name === name);
  if (!t) throw new Error(`unknown track ${name}`);
  return t;
}

export function carSpec(name: string): CarSpec {
  const c = CARS.find((x) => x.name === name);
  if (!c) throw new Error(`unknown car ${name}`);
  return c;
}

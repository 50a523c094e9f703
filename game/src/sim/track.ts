/**
 * A circuit rasterised at one metre, as the Rust simulator does it (workload/src/track.rs):
 * curvature smoothed over ±8 m so corners build load progressively, and per car the speed profile
 * `min(v_top, sqrt(grip·g/|κ|))` swept backwards twice round the loop so the car can always brake
 * down to the next corner. Physics uses this raw curvature; `layout.ts` bends it to close the
 * drawing.
 */
import { CARS, G0, type CarSpec, type TrackSpec, trackSpec } from "./data.js";

const SMOOTH_HALF_M = 8;

export interface Circuit {
  spec: TrackSpec;
  length: number;
  /** Signed curvature (1/m) per metre; positive turns left. */
  curvature: Float64Array;
  /** Highest speed per metre, by car name. */
  vmax: Map<string, Float64Array>;
}

const built = new Map<string, Circuit>();

/** The circuit of a track, built once per process. */
export function circuit(name: string): Circuit {
  let c = built.get(name);
  if (!c) {
    c = buildCircuit(trackSpec(name));
    built.set(name, c);
  }
  return c;
}

export function buildCircuit(spec: TrackSpec): Circuit {
  const n = spec.length_m;
  const raw = rasterise(spec);
  const curvature = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let sum = 0;
    for (let k = -SMOOTH_HALF_M; k <= SMOOTH_HALF_M; k++) sum += raw[(i + n + k) % n];
    curvature[i] = sum / (2 * SMOOTH_HALF_M + 1);
  }
  const vmax = new Map(CARS.map((car) => [car.name, speedProfile(curvature, car)]));
  return { spec, length: n, curvature, vmax };
}

function rasterise(spec: TrackSpec): Float64Array {
  const n = spec.length_m;
  const raw = new Float64Array(n);
  let start = 0;
  for (const [len, radius] of spec.segments) {
    const k = radius === 0 ? 0 : 1 / radius;
    const a = Math.floor(start);
    const b = Math.min(Math.floor(start + len), n);
    raw.fill(k, a, b);
    start += len;
  }
  return raw;
}

function speedProfile(curvature: Float64Array, car: CarSpec): Float64Array {
  const n = curvature.length;
  const v = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const k = Math.abs(curvature[i]);
    v[i] = k < 1e-6 ? car.v_top : Math.min(Math.sqrt((car.grip_g * G0) / k), car.v_top);
  }
  const decel = car.brake_g * G0;
  for (let j = 2 * n - 1; j >= 0; j--) {
    const i = j % n;
    const next = (j + 1) % n;
    const reachable = Math.sqrt(v[next] * v[next] + 2 * decel);
    if (reachable < v[i]) v[i] = reachable;
  }
  return v;
}

/** Linear interpolation of a per-metre table at lap distance `s` (wraps). */
export function sampleAt(table: Float64Array, s: number): number {
  const n = table.length;
  const x = ((s % n) + n) % n;
  const i = Math.min(Math.floor(x), n - 1);
  const f = x - i;
  return table[i] * (1 - f) + table[(i + 1) % n] * f;
}

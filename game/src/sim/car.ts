/**
 * The car: an arcade model along the track. Position is lap distance `s` plus a lateral offset
 * `d` and a heading error `psi` against the track tangent. Steering commands a path curvature
 * that grip caps at `grip·g/v²`: a car too fast for a corner cannot turn as tight as the track
 * and slides wide. Off the tarmac is grass: less grip, more drag, damage. The slow state
 * (tyres, brakes, engine, fuel, ERS) follows the Rust simulator's car (workload/src/car.rs).
 *
 * The state is plain data so a session snapshot is `JSON.stringify` of it.
 */
import { G0, PIT_LANE, type CarSpec } from "./data.js";
import { chance, nextFloat, type Prng } from "./prng.js";
import { sampleAt, type Circuit } from "./track.js";

/** What a driver (keyboard, touch or autopilot) asks of the car for one step. */
export interface Inputs {
  throttle: number;
  brake: number;
  /** −1 full right … +1 full left. */
  steer: number;
  /** Asks for the pit lane at the next entry. */
  pit: boolean;
}

export type PitPhase = "out" | "approach" | "stopped" | "exiting";

export interface Wheel {
  surfaceC: number;
  innerC: number;
  wear: number;
  brakeC: number;
}

export interface CarState {
  s: number;
  d: number;
  psi: number;
  v: number;
  throttle: number;
  brake: number;
  steer: number;
  clutch: number;
  gear: number;
  rpm: number;
  longG: number;
  latG: number;
  yawRate: number;
  /** How far past the grip limit steering asks, 0 when gripping. */
  slide: number;
  offTrack: boolean;
  wheels: Wheel[];
  waterC: number;
  oilC: number;
  fuelKg: number;
  ersKj: number;
  ersKw: number;
  damage: [number, number, number];
  position: number;
  airC: number;
  trackC: number;
  pit: PitPhase;
  pitRequested: boolean;
  /** Sim µs when the box stop ends (phase `stopped`). */
  pitUntilUs: number;
  pitStops: number;
}

/** Half the tarmac width, m; beyond it is grass, and a barrier beyond that. */
export const HALF_WIDTH_M = 7;
export const BARRIER_M = 20;
/** Path curvature of full lock at walking pace, 1/m (10 m radius). */
const STEER_MAX_CURVATURE = 0.1;
/** Heading error relaxes towards the track at this rate (1/s): the arcade steering assist. */
const ALIGN_PER_S = 2;
export const PIT_LIMIT_MS = PIT_LANE.speed_limit_kmh / 3.6;
const BLANKET_C = 65;
const ERS_CAPACITY_KJ = 4000;
const ERS_POWER_KW = 120;
const ERS_RESERVE_KJ = 1000;
const FIELD = 20;

export function newCar(spec: CarSpec, rng: Prng): CarState {
  const airC = 14 + 16 * nextFloat(rng);
  const wheel = (): Wheel => ({ surfaceC: BLANKET_C, innerC: BLANKET_C, wear: 0, brakeC: airC + 150 });
  return {
    s: 0, d: 0, psi: 0, v: 0,
    throttle: 0, brake: 0, steer: 0, clutch: 1, gear: 1, rpm: spec.rpm_idle,
    longG: 0, latG: 0, yawRate: 0, slide: 0, offTrack: false,
    wheels: [wheel(), wheel(), wheel(), wheel()],
    waterC: 62 + 10 * nextFloat(rng),
    oilC: 70 + 10 * nextFloat(rng),
    fuelKg: spec.tank_kg * (0.55 + 0.45 * nextFloat(rng)),
    ersKj: ERS_CAPACITY_KJ * (0.5 + 0.5 * nextFloat(rng)),
    ersKw: 0,
    damage: [0, 0, 0],
    position: 1 + Math.floor(nextFloat(rng) * FIELD),
    airC,
    trackC: airC + 6 + 14 * nextFloat(rng),
    pit: "out", pitRequested: false, pitUntilUs: 0, pitStops: 0,
  };
}

export function inPitLane(car: CarState): boolean {
  return car.pit !== "out";
}

/** Path curvature full lock asks for at speed `v`: less at speed, as a real rack feels. */
export function steerCurvature(v: number): number {
  return STEER_MAX_CURVATURE / (1 + (v / 25) ** 2);
}

/** Highest path curvature the tyres hold at speed `v`, 1/m. */
export function gripCurvature(car: CarState, spec: CarSpec, v: number): number {
  const wear = car.wheels.reduce((m, w) => Math.max(m, w.wear), 0);
  const surface = car.offTrack ? 0.55 : 1;
  return (spec.grip_g * G0 * surface * (1 - 0.15 * wear)) / Math.max(v * v, 1);
}

function traction(spec: CarSpec, v: number): number {
  return spec.accel0 * Math.max(0.04, 1 - (v / spec.v_top) ** 2);
}

/**
 * Speed and distance over one step of `dt` seconds; `s` is not wrapped here (the session finds
 * the line and other boundaries between the old and new distance). In the pit lane the car
 * drives itself at the limiter and stops at the box.
 */
export function moveCar(car: CarState, spec: CarSpec, c: Circuit, inp: Inputs, dt: number): { ds: number } {
  const v0 = car.v;
  let v1: number;
  if (inPitLane(car)) {
    v1 = pitLaneSpeed(car, c, spec, dt);
    car.throttle = relax(car.throttle, v1 > v0 ? 0.4 : 0, dt, 0.05);
    car.brake = relax(car.brake, v1 < v0 - 0.01 ? 0.5 : 0, dt, 0.05);
    car.steer = relax(car.steer, 0, dt, 0.1);
    car.slide = 0;
    car.psi = 0;
    car.d = relax(car.d, 0, dt, 1);
  } else {
    car.throttle = relax(car.throttle, clamp(inp.throttle, 0, 1), dt, 0.05);
    car.brake = relax(car.brake, clamp(inp.brake, 0, 1), dt, 0.04);
    car.steer = relax(car.steer, clamp(inp.steer, -1, 1), dt, 0.06);
    let a = car.throttle * traction(spec, v0) - car.brake * 1.3 * spec.brake_g * G0 - 0.1 - 0.00004 * v0 * v0;
    if (car.offTrack) a -= 2.5 + 0.04 * v0;
    v1 = clamp(v0 + a * dt, 0, spec.v_top);
    if (car.slide > 0) v1 = Math.max(0, v1 - Math.min(car.slide, 1) * 3 * dt);
  }
  const v = 0.5 * (v0 + v1);
  const kTrack = sampleAt(c.curvature, car.s);
  if (!inPitLane(car)) {
    const kAsked = car.steer * steerCurvature(v);
    const kGrip = gripCurvature(car, spec, v);
    const kCar = clamp(kAsked, -kGrip, kGrip);
    car.slide = Math.abs(kAsked) > kGrip ? (Math.abs(kAsked) - kGrip) / kGrip : 0;
    car.psi += (v * (kCar - kTrack) - ALIGN_PER_S * car.psi) * dt;
    car.psi = clamp(car.psi, -1.2, 1.2);
    car.d += v * Math.sin(car.psi) * dt;
    car.latG = relax(car.latG, (v * v * kCar) / G0, dt, 0.08);
    car.yawRate = relax(car.yawRate, v * kCar, dt, 0.08);
  } else {
    car.latG = relax(car.latG, 0, dt, 0.08);
    car.yawRate = relax(car.yawRate, 0, dt, 0.08);
  }
  car.longG = relax(car.longG, (v1 - v0) / dt / G0, dt, 0.06);
  car.v = v1;
  return { ds: v * Math.cos(car.psi) * dt };
}

function pitLaneSpeed(car: CarState, c: Circuit, spec: CarSpec, dt: number): number {
  if (car.pit === "stopped") return 0;
  let target = PIT_LIMIT_MS;
  if (car.pit === "approach") {
    const box = c.length - PIT_LANE.box_before_line_m;
    const toBox = Math.max(0, box - car.s);
    target = Math.min(target, Math.sqrt(2 * 5 * toBox) + 0.5);
  }
  const v0 = car.v;
  return v0 < target ? Math.min(target, v0 + traction(spec, v0) * dt) : Math.max(target, v0 - 1.3 * spec.brake_g * G0 * dt);
}

/** Grass, barrier and damage after a step's lateral move. */
export function surfaceEffects(car: CarState, dt: number, rng: Prng): void {
  car.offTrack = !inPitLane(car) && Math.abs(car.d) > HALF_WIDTH_M;
  if (car.offTrack) {
    const rate = 0.01 * (car.v / 30) * dt;
    car.damage[2] = Math.min(1, car.damage[2] + rate);
    if (chance(rng, 0.5 * dt)) car.damage[0] = Math.min(1, car.damage[0] + 0.02);
  }
  if (Math.abs(car.d) > BARRIER_M) {
    car.d = Math.sign(car.d) * BARRIER_M;
    car.psi = 0;
    car.damage[0] = Math.min(1, car.damage[0] + 0.05 + 0.002 * car.v);
    car.v *= 0.6;
  }
}

/** Gears, rpm, clutch, ERS, fuel and temperatures after a step. */
export function carSystems(car: CarState, spec: CarSpec, dt: number, rng: Prng): void {
  const v = car.v;
  const gearTop = (g: number) => spec.v_top * 1.03 * (g / 8) ** 0.75;
  if (car.pit === "stopped") {
    car.gear = 0;
    car.rpm = spec.rpm_idle;
    car.clutch = 1;
  } else {
    let gear = 1;
    while (gear < 8 && v > 0.97 * gearTop(gear)) gear++;
    car.gear = gear;
    const launch = spec.rpm_idle + 3500 * car.throttle;
    car.rpm = Math.min(spec.rpm_max, Math.max(launch, (spec.rpm_max * v) / gearTop(gear)));
    car.clutch = v < 6 && car.throttle > 0.05 ? clamp(1 - v / 6, 0, 1) : 0;
  }
  const harvest = Math.min(car.brake * 300, ERS_POWER_KW);
  const deploy = car.throttle > 0.9 && v > 25 && car.ersKj > ERS_RESERVE_KJ;
  car.ersKw = deploy ? ERS_POWER_KW * car.throttle : 0;
  car.ersKj = clamp(car.ersKj + (harvest - car.ersKw) * dt, 0, ERS_CAPACITY_KJ);
  const rpmFrac = car.rpm / spec.rpm_max;
  car.fuelKg = Math.max(0, car.fuelKg - (0.004 + 0.045 * car.throttle * rpmFrac) * dt);

  const cooling = 0.018 * (1 + v / 30);
  const lat = car.latG;
  const long = car.longG;
  car.wheels.forEach((w, i) => {
    const front = i < 2;
    const right = i % 2 === 1;
    const side = Math.max(0.1, right ? 1 + 0.45 * lat : 1 - 0.45 * lat);
    const axle = Math.max(0.1, front ? 1 - 0.5 * long : 1 + 0.5 * long);
    const work = v * (0.05 + 0.5 * Math.abs(lat) * side + 0.4 * Math.abs(long) * axle) * (1 + car.slide);
    w.surfaceC += dt * (0.085 * work - cooling * (w.surfaceC - car.trackC) - 0.05 * (w.surfaceC - w.innerC));
    w.innerC += dt * (0.04 * (w.surfaceC - w.innerC) - 0.004 * (w.innerC - car.airC));
    const overheat = 1 + Math.max(0, (w.surfaceC - 110) / 20);
    w.wear = Math.min(1, w.wear + dt * 3e-6 * work * overheat);
    const share = front ? 0.6 : 0.4;
    w.brakeC += dt * (6 * share * car.brake * v - (w.brakeC - car.airC) * (0.02 + 0.0015 * v));
  });
  const waterTarget = 80 + 14 * car.throttle * rpmFrac - 0.04 * v + 0.2 * car.airC;
  car.waterC += dt * 0.03 * (waterTarget - car.waterC);
  const oilTarget = 92 + 22 * car.throttle * rpmFrac - 0.03 * v + 0.2 * car.airC;
  car.oilC += dt * 0.02 * (oilTarget - car.oilC);
  car.trackC += dt * 0.002 * (nextFloat(rng) - 0.5);
}

/** Gauge tyre pressure from carcass temperature (ideal gas at constant volume). */
export function tyreKpa(car: CarState, spec: CarSpec, wheel: number): number {
  const atm = 101.325;
  return ((spec.cold_kpa + atm) * (car.wheels[wheel].innerC + 273.15)) / (20 + 273.15) - atm;
}

/** Box service: tyres, fuel (at 12 kg/s) and wings; returns the stop length in seconds. */
export function serviceCar(car: CarState, spec: CarSpec, rng: Prng): number {
  const refuelS = Math.max(0, spec.tank_kg - car.fuelKg) / 12;
  for (const w of car.wheels) {
    w.surfaceC = BLANKET_C;
    w.innerC = BLANKET_C;
    w.wear = 0;
  }
  car.fuelKg = spec.tank_kg;
  car.damage = [0, 0, car.damage[2]];
  car.position = Math.min(FIELD, car.position + 3);
  car.pitStops++;
  return 2.4 + 1.6 * nextFloat(rng) + refuelS;
}

export function relax(value: number, target: number, dt: number, tau: number): number {
  return value + (target - value) * (dt / (tau + dt));
}

export function clamp(x: number, lo: number, hi: number): number {
  return x < lo ? lo : x > hi ? hi : x;
}

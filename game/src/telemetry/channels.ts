/**
 * The channels pitgun-web 1.x sends: name, `sent = canonical·scale + offset`, decimals. This is
 * the producer side of the `pitgun-web ">=1.0.0, <2.0.0"` aliases in
 * manifests/dictionary/racing.yaml, the same table as the simulator's (workload/src/producer.rs).
 */
import type { Metric, SimEvent } from "../sim/metrics.js";

export const SOURCE = { kind: "game", id: "pitgun-web", version: "1.5.0" } as const;

const KMH = 3.6;
const DEGF = 1.8;
const F0 = 32;
const PCT = 100;
const PER_PSI = 1 / 6.894757293168361;
const PER_LB = 1 / 0.45359237;
const DEG = 180 / Math.PI;

type Channel = [name: string, scale: number, offset: number, decimals: number];

export const WEB_CHANNELS: Record<Metric, Channel | "bool"> = {
  speed: ["speed_kmh", KMH, 0, 1],
  accel_long: ["g_long", 1, 0, 2],
  accel_lat: ["g_lat", 1, 0, 2],
  yaw_rate: ["yaw_rate", DEG, 0, 1],
  damage_front_wing: ["dmg_fw", PCT, 0, 1],
  damage_rear_wing: ["dmg_rw", PCT, 0, 1],
  damage_floor: ["dmg_floor", PCT, 0, 1],
  throttle: ["throttle", PCT, 0, 1],
  brake: ["brake", PCT, 0, 1],
  clutch: ["clutch", PCT, 0, 1],
  steer: ["steer", PCT, 0, 1],
  gear: ["gear", 1, 0, 0],
  rpm: ["rpm", 1, 0, 0],
  water_c: ["water_temp", DEGF, F0, 1],
  oil_c: ["oil_temp", DEGF, F0, 1],
  tyre_surface_fl: ["tyre_fl_temp", DEGF, F0, 1],
  tyre_surface_fr: ["tyre_fr_temp", DEGF, F0, 1],
  tyre_surface_rl: ["tyre_rl_temp", DEGF, F0, 1],
  tyre_surface_rr: ["tyre_rr_temp", DEGF, F0, 1],
  tyre_inner_fl: ["tyre_fl_core", DEGF, F0, 1],
  tyre_inner_fr: ["tyre_fr_core", DEGF, F0, 1],
  tyre_inner_rl: ["tyre_rl_core", DEGF, F0, 1],
  tyre_inner_rr: ["tyre_rr_core", DEGF, F0, 1],
  tyre_kpa_fl: ["tyre_fl_psi", PER_PSI, 0, 2],
  tyre_kpa_fr: ["tyre_fr_psi", PER_PSI, 0, 2],
  tyre_kpa_rl: ["tyre_rl_psi", PER_PSI, 0, 2],
  tyre_kpa_rr: ["tyre_rr_psi", PER_PSI, 0, 2],
  tyre_wear_fl: ["tyre_fl_wear", PCT, 0, 2],
  tyre_wear_fr: ["tyre_fr_wear", PCT, 0, 2],
  tyre_wear_rl: ["tyre_rl_wear", PCT, 0, 2],
  tyre_wear_rr: ["tyre_rr_wear", PCT, 0, 2],
  brake_c_fl: ["brake_fl_temp", DEGF, F0, 0],
  brake_c_fr: ["brake_fr_temp", DEGF, F0, 0],
  brake_c_rl: ["brake_rl_temp", DEGF, F0, 0],
  brake_c_rr: ["brake_rr_temp", DEGF, F0, 0],
  lap: ["lap", 1, 0, 0],
  lap_distance: ["lap_dist", 1, 0, 1],
  sector: ["sector", 1, 0, 0],
  lap_time_current: ["cur_lap_ms", 1000, 0, 0],
  // Three decimals of a millisecond: the whole microsecond the lap time was measured in.
  lap_time_last: ["last_lap_ms", 1000, 0, 3],
  sector_time_1: ["s1_ms", 1000, 0, 3],
  sector_time_2: ["s2_ms", 1000, 0, 3],
  sector_time_3: ["s3_ms", 1000, 0, 3],
  position: ["pos", 1, 0, 0],
  in_pit: "bool",
  fuel_kg: ["fuel_lb", PER_LB, 0, 2],
  ers_kj: ["ers_kj", 1, 0, 0],
  ers_kw: ["ers_kw", 1, 0, 1],
  track_c: ["track_temp", DEGF, F0, 1],
  air_c: ["air_temp", DEGF, F0, 1],
  fps: ["fps", 1, 0, 1],
  frame_ms: ["frame_ms", 1, 0, 2],
  rtt_ms: ["ping_ms", 1, 0, 0],
  dropped_frames: ["dropped_frames", 1, 0, 0],
  packet_loss: ["loss_pct", PCT, 0, 2],
};

/** Rounds to `decimals` places, never to −0. */
export function roundTo(x: number, decimals: number): number {
  const p = 10 ** decimals;
  const r = Math.round(x * p) / p;
  return r === 0 ? 0 : r;
}

export function encodeChannels(values: SimEvent["values"]): Record<string, number | boolean> {
  const out: Record<string, number | boolean> = {};
  for (const [metric, value] of Object.entries(values) as [Metric, number][]) {
    if (!Number.isFinite(value)) continue;
    const ch = WEB_CHANNELS[metric];
    if (ch === "bool") out.in_pit = value >= 0.5;
    else out[ch[0]] = roundTo(value * ch[1] + ch[2], ch[3]);
  }
  return out;
}

/**
 * Canonical values a session reports, in SI-ish units (m/s, g, rad/s, ratio 0..1, °C, kPa, kg,
 * seconds). The producer's channel names and units live in `telemetry/channels.ts`; keeping the
 * sim canonical means one physics for any producer version.
 */
export type Metric =
  | "speed" | "accel_long" | "accel_lat" | "yaw_rate"
  | "throttle" | "brake" | "clutch" | "steer" | "gear" | "rpm"
  | "water_c" | "oil_c"
  | "tyre_surface_fl" | "tyre_surface_fr" | "tyre_surface_rl" | "tyre_surface_rr"
  | "tyre_inner_fl" | "tyre_inner_fr" | "tyre_inner_rl" | "tyre_inner_rr"
  | "tyre_kpa_fl" | "tyre_kpa_fr" | "tyre_kpa_rl" | "tyre_kpa_rr"
  | "tyre_wear_fl" | "tyre_wear_fr" | "tyre_wear_rl" | "tyre_wear_rr"
  | "brake_c_fl" | "brake_c_fr" | "brake_c_rl" | "brake_c_rr"
  | "damage_front_wing" | "damage_rear_wing" | "damage_floor"
  | "lap" | "lap_distance" | "sector" | "lap_time_current" | "lap_time_last"
  | "sector_time_1" | "sector_time_2" | "sector_time_3"
  | "position" | "in_pit" | "fuel_kg" | "ers_kj" | "ers_kw" | "track_c" | "air_c"
  | "fps" | "frame_ms" | "rtt_ms" | "dropped_frames" | "packet_loss";

export type EventKind = "session_start" | "sample" | "lap" | "sector" | "pit_in" | "pit_out" | "health" | "session_end";

export type Values = Partial<Record<Metric, number>>;

/** An event before encoding: sim time in whole microseconds since the session start. */
export interface SimEvent {
  kind: EventKind;
  seq: number;
  simUs: number;
  values: Values;
}

export const WHEELS = ["fl", "fr", "rl", "rr"] as const;

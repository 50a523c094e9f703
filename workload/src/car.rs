//! The car: point-mass dynamics along the track's racing line, plus the slow physical state that
//! telemetry reports (tyres, brakes, engine, fuel, hybrid energy, damage), advanced in steps of at
//! most [`MAX_STEP_US`].
//!
//! Speed follows the circuit's profile scaled by the lap's pace, limited by traction. Lap, sector
//! and pit boundaries are found inside a step by linear interpolation of distance over the step,
//! then rounded to whole microseconds: that integer is the crossing time the lap and sector events
//! carry and the ground truth records, so both always agree.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::track::{pit_lane, CarSpec, Circuit, G0};

/// Longest physics step: 20 ms keeps a 90 m/s car under 2 m per step (the profile has 1 m slots).
pub(crate) const MAX_STEP_US: i64 = 20_000;
/// Cars in the race; positions stay within 1..=FIELD.
const FIELD: u32 = 20;
/// Tyre temperature out of the blankets, °C.
const BLANKET_C: f64 = 65.0;
/// Hybrid store capacity, kJ, deployment power, kW, and the reserve deployment never touches.
const ERS_CAPACITY_KJ: f64 = 4000.0;
const ERS_POWER_KW: f64 = 120.0;
const ERS_RESERVE_KJ: f64 = 1000.0;

/// Something the car passed during a step, at an exact microsecond.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Crossing {
    /// Sector `completed` of lap `lap` ended.
    Sector { time_us: i64, lap: u32, completed: u8, sector_time_us: i64 },
    /// The line: lap `new_lap - 1` ran from `start_us` to `end_us`.
    Line { new_lap: u32, start_us: i64, end_us: i64 },
    /// Entered the pit lane.
    PitIn { time_us: i64, lap: u32, distance: f64 },
    /// Left the pit lane.
    PitOut { time_us: i64, lap: u32, distance: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pit {
    /// On track.
    Out,
    /// Will take the pit lane at the end of this lap.
    Planned,
    /// In the lane, slowing for the box.
    Approach,
    /// Stationary in the box until the given time.
    Stopped { until_us: i64 },
    /// Leaving at the lane's speed limit until the exit, after the line.
    Exiting { exit_at: f64 },
}

/// One wheel's tyre and brake.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wheel {
    pub surface_c: f64,
    pub inner_c: f64,
    pub wear: f64,
    pub brake_c: f64,
}

/// The state of one car; public fields are what telemetry reports.
pub(crate) struct Car {
    spec: &'static CarSpec,
    car: usize,
    circuit: &'static Circuit,
    t_us: i64,
    /// Lap distance, m, in `[0, length)`.
    pub s: f64,
    /// Speed, m/s.
    pub v: f64,
    pub lap: u32,
    pub sector: u8,
    pub lap_start_us: i64,
    sector_start_us: i64,
    skill: f64,
    pace: f64,
    pit: Pit,
    last_pit_lap: u32,
    pub long_g: f64,
    pub lat_g: f64,
    pub yaw_rate: f64,
    pub steer: f64,
    pub throttle: f64,
    pub brake: f64,
    pub clutch: f64,
    pub gear: i32,
    pub rpm: f64,
    pub wheels: [Wheel; 4],
    pub water_c: f64,
    pub oil_c: f64,
    pub fuel_kg: f64,
    pub ers_kj: f64,
    pub ers_kw: f64,
    pub damage: [f64; 3],
    pub position: u32,
    pub air_c: f64,
    pub track_c: f64,
}

impl Car {
    pub(crate) fn new(spec: &'static CarSpec, car: usize, circuit: &'static Circuit, start_us: i64, rng: &mut ChaCha8Rng) -> Car {
        let air_c = 14.0 + 16.0 * rng.random::<f64>();
        let track_c = air_c + 6.0 + 14.0 * rng.random::<f64>();
        let skill = 0.955 + 0.035 * rng.random::<f64>();
        let wheel = Wheel { surface_c: BLANKET_C, inner_c: BLANKET_C, wear: 0.0, brake_c: air_c + 150.0 };
        let mut car = Car {
            spec,
            car,
            circuit,
            t_us: start_us,
            s: 0.0,
            v: 0.0,
            lap: 1,
            sector: 1,
            lap_start_us: start_us,
            sector_start_us: start_us,
            skill,
            pace: skill,
            pit: Pit::Out,
            last_pit_lap: 0,
            long_g: 0.0,
            lat_g: 0.0,
            yaw_rate: 0.0,
            steer: 0.0,
            throttle: 0.0,
            brake: 0.0,
            clutch: 1.0,
            gear: 1,
            rpm: spec.rpm_idle,
            wheels: [wheel; 4],
            water_c: 62.0 + 10.0 * rng.random::<f64>(),
            oil_c: 70.0 + 10.0 * rng.random::<f64>(),
            fuel_kg: spec.tank_kg * (0.55 + 0.45 * rng.random::<f64>()),
            ers_kj: ERS_CAPACITY_KJ * (0.5 + 0.5 * rng.random::<f64>()),
            ers_kw: 0.0,
            damage: [0.0; 3],
            position: rng.random_range(1..=FIELD),
            air_c,
            track_c,
        };
        car.new_lap_pace(rng);
        car
    }

    pub(crate) fn in_pit_lane(&self) -> bool {
        matches!(self.pit, Pit::Approach | Pit::Stopped { .. } | Pit::Exiting { .. })
    }

    /// Gauge pressure of a tyre from its carcass temperature (ideal gas at constant volume).
    pub(crate) fn pressure_kpa(&self, wheel: usize) -> f64 {
        const ATM: f64 = 101.325;
        const COLD_C: f64 = 20.0;
        let t = self.wheels[wheel].inner_c;
        (self.spec.cold_kpa + ATM) * (t + 273.15) / (COLD_C + 273.15) - ATM
    }

    /// Advances the physics to `t_us`, appending what the car crossed in time order.
    pub(crate) fn advance_to(&mut self, t_us: i64, rng: &mut ChaCha8Rng, out: &mut Vec<Crossing>) {
        while self.t_us < t_us {
            let mut end = (self.t_us + MAX_STEP_US).min(t_us);
            if let Pit::Stopped { until_us } = self.pit {
                if self.t_us >= until_us {
                    self.pit = Pit::Exiting { exit_at: self.circuit.length + pit_lane().exit_after_line_m };
                } else {
                    end = end.min(until_us);
                    self.stand(end, rng);
                    continue;
                }
            }
            self.drive(end, rng, out);
        }
    }

    /// A stationary step in the pit box.
    fn stand(&mut self, end_us: i64, rng: &mut ChaCha8Rng) {
        let dt = (end_us - self.t_us) as f64 / 1e6;
        self.v = 0.0;
        self.gear = 0;
        self.clutch = 1.0;
        self.throttle = 0.0;
        self.brake = 1.0;
        self.long_g = relax(self.long_g, 0.0, dt, 0.1);
        self.lat_g = relax(self.lat_g, 0.0, dt, 0.1);
        self.yaw_rate = 0.0;
        self.steer = relax(self.steer, 0.0, dt, 0.3);
        self.rpm = self.spec.rpm_idle * (1.0 + 0.02 * (rng.random::<f64>() - 0.5));
        self.ers_kw = 0.0;
        self.heat(dt, 0.0, rng);
        self.t_us = end_us;
    }

    /// A moving step.
    fn drive(&mut self, end_us: i64, rng: &mut ChaCha8Rng, out: &mut Vec<Crossing>) {
        let t0 = self.t_us;
        let dt = (end_us - t0) as f64 / 1e6;
        let spec = self.spec;
        let v0 = self.v;
        let target = self.target_speed(self.s);
        let traction = spec.accel0 * (1.0 - (v0 / spec.v_top).powi(2)).max(0.04);
        let mut v1 = if target > v0 { (v0 + traction * dt).min(target) } else { target.max(v0 - 1.3 * spec.brake_g * G0 * dt) };
        let s0 = self.s;
        let mut s1 = s0 + 0.5 * (v0 + v1) * dt;
        let mut base = s0;

        // Boundaries inside the step, nearest first; each one changes state so it fires once.
        loop {
            let (at, boundary) = self.next_boundary();
            if at <= base || at > s1 {
                break;
            }
            let frac = if s1 > s0 { (at - s0) / (s1 - s0) } else { 1.0 };
            let t = t0 + ((end_us - t0) as f64 * frac).round() as i64;
            base = at;
            match boundary {
                Boundary::Sector => {
                    out.push(Crossing::Sector { time_us: t, lap: self.lap, completed: self.sector, sector_time_us: t - self.sector_start_us });
                    self.sector += 1;
                    self.sector_start_us = t;
                    if rng.random_bool(0.15) {
                        self.nudge_position(rng);
                    }
                }
                Boundary::Line => {
                    out.push(Crossing::Sector { time_us: t, lap: self.lap, completed: 3, sector_time_us: t - self.sector_start_us });
                    out.push(Crossing::Line { new_lap: self.lap + 1, start_us: self.lap_start_us, end_us: t });
                    self.lap += 1;
                    self.sector = 1;
                    self.lap_start_us = t;
                    self.sector_start_us = t;
                    let length = self.circuit.length;
                    s1 -= length;
                    base -= length;
                    if let Pit::Exiting { exit_at } = self.pit {
                        self.pit = Pit::Exiting { exit_at: exit_at - length };
                    }
                    self.new_lap_pace(rng);
                    self.plan_pit(rng);
                }
                Boundary::PitEntry => {
                    self.pit = Pit::Approach;
                    out.push(Crossing::PitIn { time_us: t, lap: self.lap, distance: at });
                }
                Boundary::PitBox => {
                    // Stop dead at the box: tyres, fuel and wings are serviced while stationary.
                    s1 = at;
                    v1 = 0.0;
                    let refuel_s = (spec.tank_kg - self.fuel_kg).max(0.0) / 4.0;
                    let stop_s = 2.4 + 1.6 * rng.random::<f64>() + refuel_s;
                    self.pit = Pit::Stopped { until_us: t + (stop_s * 1e6) as i64 };
                    self.service();
                    break;
                }
                Boundary::PitExit => {
                    self.pit = Pit::Out;
                    out.push(Crossing::PitOut { time_us: t, lap: self.lap, distance: at });
                }
            }
        }
        self.s = s1.clamp(0.0, self.circuit.length - 1e-9);
        self.v = v1;
        self.dynamics(v0, v1, dt, rng);
        self.heat(dt, v1, rng);
        self.t_us = end_us;
    }

    /// The nearest boundary ahead in the car's current state, in this lap's distance (the pit
    /// exit lies beyond `length` until the line is crossed).
    fn next_boundary(&self) -> (f64, Boundary) {
        let length = self.circuit.length;
        let sector = match self.sector {
            1 => (self.circuit.spec.sector_ends[0], Boundary::Sector),
            2 => (self.circuit.spec.sector_ends[1], Boundary::Sector),
            _ => (length, Boundary::Line),
        };
        let pit = match self.pit {
            Pit::Planned => Some((length - pit_lane().entry_before_line_m, Boundary::PitEntry)),
            Pit::Approach => Some((length - pit_lane().box_before_line_m, Boundary::PitBox)),
            Pit::Exiting { exit_at } => Some((exit_at, Boundary::PitExit)),
            Pit::Out | Pit::Stopped { .. } => None,
        };
        match pit {
            Some(p) if p.0 < sector.0 => p,
            _ => sector,
        }
    }

    fn target_speed(&self, s: f64) -> f64 {
        let length = self.circuit.length;
        let free = self.circuit.vmax_at(self.car, s) * self.pace;
        let brake = self.spec.brake_g * G0 * 0.8;
        let limit = pit_lane().speed_limit();
        match self.pit {
            Pit::Out => free,
            Pit::Planned => {
                let to_entry = (length - pit_lane().entry_before_line_m - s).max(0.0);
                free.min((limit * limit + 2.0 * brake * to_entry).sqrt())
            }
            Pit::Approach => {
                let to_box = (length - pit_lane().box_before_line_m - s).max(0.0);
                limit.min((2.0 * 5.0 * to_box).sqrt() + 0.5)
            }
            Pit::Exiting { .. } | Pit::Stopped { .. } => limit,
        }
    }

    /// Inputs and accelerations consistent with the speed change of a step.
    fn dynamics(&mut self, v0: f64, v1: f64, dt: f64, rng: &mut ChaCha8Rng) {
        let spec = self.spec;
        let v = 0.5 * (v0 + v1);
        let kappa = if self.in_pit_lane() { 0.0 } else { self.circuit.curvature_at(self.s) };
        let a = (v1 - v0) / dt;
        let lat = v * v * kappa / G0;
        let drag = 0.35 + 0.000_13 * v * v + 0.6 * lat.abs();
        let traction = spec.accel0 * (1.0 - (v / spec.v_top).powi(2)).max(0.04);
        let drive = a + drag;
        let (throttle, brake) =
            if drive >= 0.0 { ((drive / (traction + drag)).min(1.0), 0.0) } else { (0.0, (-drive / (spec.brake_g * G0)).min(1.0)) };
        let wobble = 0.01 * (rng.random::<f64>() - 0.5);
        self.throttle = relax(self.throttle, (throttle + wobble).clamp(0.0, 1.0), dt, 0.05);
        self.brake = relax(self.brake, brake, dt, 0.04);
        self.long_g = relax(self.long_g, a / G0, dt, 0.06);
        self.lat_g = relax(self.lat_g, lat, dt, 0.08);
        self.yaw_rate = relax(self.yaw_rate, v * kappa, dt, 0.08);
        let lock = (spec.wheelbase_m * kappa).atan() * 14.0 / 4.71;
        self.steer = relax(self.steer, (lock + wobble).clamp(-1.0, 1.0), dt, 0.06);

        // Shift just below the limiter: gear g tops out at v_top * (g/8)^0.75.
        let gear_top = |g: i32| spec.v_top * 1.03 * (f64::from(g) / 8.0).powf(0.75);
        let mut gear = 1;
        while gear < 8 && v > 0.97 * gear_top(gear) {
            gear += 1;
        }
        self.gear = gear;
        let launch = spec.rpm_idle + 3500.0 * self.throttle;
        self.rpm = (spec.rpm_max * v / gear_top(gear)).max(launch).min(spec.rpm_max);
        self.clutch = if v < 6.0 && self.throttle > 0.05 { (1.0 - v / 6.0).clamp(0.0, 1.0) } else { 0.0 };

        // Hybrid: harvest under braking, deploy at full throttle while energy lasts.
        let harvest = (self.brake * 300.0).min(ERS_POWER_KW);
        let deploy = self.throttle > 0.9 && v > 25.0 && self.ers_kj > ERS_RESERVE_KJ;
        self.ers_kw = if deploy { ERS_POWER_KW * self.throttle } else { 0.0 };
        self.ers_kj = (self.ers_kj + (harvest - self.ers_kw) * dt).clamp(0.0, ERS_CAPACITY_KJ);

        let rpm_frac = self.rpm / spec.rpm_max;
        self.fuel_kg = (self.fuel_kg - (0.004 + 0.045 * self.throttle * rpm_frac) * dt).max(0.0);
        if rng.random_bool((0.0008 * dt).min(1.0)) {
            let part = rng.random_range(0..3);
            self.damage[part] = (self.damage[part] + 0.05 + 0.3 * rng.random::<f64>()).min(1.0);
        }
    }

    /// Tyre, brake and engine temperatures, tyre wear.
    fn heat(&mut self, dt: f64, v: f64, rng: &mut ChaCha8Rng) {
        let (lat, long) = (self.lat_g, self.long_g);
        let cooling = 0.018 * (1.0 + v / 30.0);
        for (w, wheel) in self.wheels.iter_mut().enumerate() {
            let (front, right) = (w < 2, w % 2 == 1);
            // A left-hand corner (lat > 0) loads the right-hand tyres; braking loads the fronts.
            let side = if right { 1.0 + 0.45 * lat } else { 1.0 - 0.45 * lat }.max(0.1);
            let axle = if front { 1.0 - 0.5 * long } else { 1.0 + 0.5 * long }.max(0.1);
            let work = v * (0.05 + 0.5 * lat.abs() * side + 0.4 * long.abs() * axle);
            wheel.surface_c += dt * (0.085 * work - cooling * (wheel.surface_c - self.track_c) - 0.05 * (wheel.surface_c - wheel.inner_c));
            wheel.inner_c += dt * (0.04 * (wheel.surface_c - wheel.inner_c) - 0.004 * (wheel.inner_c - self.air_c));
            let overheat = 1.0 + ((wheel.surface_c - 110.0) / 20.0).max(0.0);
            wheel.wear = (wheel.wear + dt * 3.0e-6 * work * overheat).min(1.0);
            let share = if front { 0.6 } else { 0.4 };
            wheel.brake_c += dt * (6.0 * share * self.brake * v - (wheel.brake_c - self.air_c) * (0.02 + 0.0015 * v));
        }
        let rpm_frac = self.rpm / self.spec.rpm_max;
        let water_target = 80.0 + 14.0 * self.throttle * rpm_frac - 0.04 * v + 0.2 * self.air_c;
        self.water_c += dt * 0.03 * (water_target - self.water_c);
        let oil_target = 92.0 + 22.0 * self.throttle * rpm_frac - 0.03 * v + 0.2 * self.air_c;
        self.oil_c += dt * 0.02 * (oil_target - self.oil_c);
        // The track heats and cools a little over the session.
        self.track_c += dt * 0.002 * (rng.random::<f64>() - 0.5);
    }

    fn service(&mut self) {
        for wheel in &mut self.wheels {
            wheel.surface_c = BLANKET_C;
            wheel.inner_c = BLANKET_C;
            wheel.wear = 0.0;
        }
        self.fuel_kg = self.spec.tank_kg;
        self.damage[0] = 0.0;
        self.damage[1] = 0.0;
        self.position = (self.position + 3).min(FIELD);
        self.last_pit_lap = self.lap;
    }

    fn nudge_position(&mut self, rng: &mut ChaCha8Rng) {
        let up = rng.random_bool(0.5 + (self.skill - 0.97) * 5.0);
        self.position = if up { self.position.saturating_sub(1).max(1) } else { (self.position + 1).min(FIELD) };
    }

    fn new_lap_pace(&mut self, rng: &mut ChaCha8Rng) {
        let mistake = if rng.random_bool(0.04) { 0.96 } else { 1.0 };
        self.pace = self.skill * (1.0 - 0.012 * rng.random::<f64>()) * mistake;
    }

    /// At the line: pit in this lap when tyres are worn or fuel is short, sometimes on strategy.
    fn plan_pit(&mut self, rng: &mut ChaCha8Rng) {
        if self.pit != Pit::Out || self.lap < 2 || self.lap < self.last_pit_lap + 3 {
            return;
        }
        let worn = self.wheels.iter().map(|w| w.wear).fold(0.0, f64::max);
        let p = 0.06 + (worn - 0.35).max(0.0) + if self.fuel_kg < 6.0 { 1.0 } else { 0.0 };
        if rng.random_bool(p.min(1.0)) {
            self.pit = Pit::Planned;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Boundary {
    Sector,
    Line,
    PitEntry,
    PitBox,
    PitExit,
}

/// First-order lag of `value` towards `target` with time constant `tau` seconds.
fn relax(value: f64, target: f64, dt: f64, tau: f64) -> f64 {
    value + (target - value) * (dt / (tau + dt))
}

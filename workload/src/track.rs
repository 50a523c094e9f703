//! Tracks and cars: the fixed lists a session draws from, and the speed profile a car can drive
//! around a track.
//!
//! A track is a loop of straights and constant-radius arcs whose lengths add up to the stated lap
//! length exactly. It is rasterised at one metre; curvature is smoothed over a few metres so that
//! corner entries build lateral load gradually. The speed profile is the cornering limit
//! `sqrt(grip * g / |curvature|)`, capped at the car's top speed, then swept backwards (twice round
//! the loop, so the line wraps) so the car can always brake down to the next corner in time.

use std::sync::OnceLock;

use serde::Deserialize;

/// Standard gravity, m/s².
pub(crate) const G0: f64 = 9.806_65;

/// The circuits, cars and pit lane, shared with the browser game (`game/`) so both drive the
/// same geometry. Parsed once; the file is compiled in, so a bad edit fails the unit tests.
const CIRCUITS_JSON: &str = include_str!("../circuits.json");

#[derive(Deserialize)]
struct CircuitsFile {
    tracks: Vec<TrackSpec>,
    cars: Vec<CarSpec>,
    pit_lane: PitLane,
}

/// A circuit.
#[derive(Deserialize)]
pub(crate) struct TrackSpec {
    pub name: String,
    /// Lap length in metres.
    pub length_m: u32,
    /// `(length m, signed radius m)`: radius 0 is a straight, positive turns left. The final
    /// straight to the line is added so the segments sum to `length_m`.
    pub segments: Vec<(f64, f64)>,
    /// Lap distances where sectors 1 and 2 end (sector 3 ends at the line).
    pub sector_ends: [f64; 2],
}

/// A car model.
#[derive(Deserialize)]
pub(crate) struct CarSpec {
    pub name: String,
    /// Top speed, m/s.
    pub v_top: f64,
    /// Lateral grip, g.
    pub grip_g: f64,
    /// Braking, g.
    pub brake_g: f64,
    /// Traction-limited acceleration at low speed, m/s².
    pub accel0: f64,
    pub rpm_max: f64,
    pub rpm_idle: f64,
    /// Fuel capacity, kg.
    pub tank_kg: f64,
    /// Cold tyre pressure (gauge), kPa.
    pub cold_kpa: f64,
    pub wheelbase_m: f64,
}

/// Pit lane geometry, the same on every track: entry and box before the line, exit after it.
#[derive(Deserialize)]
pub(crate) struct PitLane {
    pub entry_before_line_m: f64,
    pub box_before_line_m: f64,
    pub exit_after_line_m: f64,
    pub speed_limit_kmh: f64,
}

impl PitLane {
    /// The pit lane speed limit, m/s.
    pub(crate) fn speed_limit(&self) -> f64 {
        self.speed_limit_kmh / 3.6
    }
}

fn circuits_file() -> &'static CircuitsFile {
    static FILE: OnceLock<CircuitsFile> = OnceLock::new();
    FILE.get_or_init(|| serde_json::from_str(CIRCUITS_JSON).expect("workload/circuits.json is valid (unit-tested)"))
}

/// The tracks a session draws from, in file order.
pub(crate) fn tracks() -> &'static [TrackSpec] {
    &circuits_file().tracks
}

/// The cars a session draws from, in file order.
pub(crate) fn cars() -> &'static [CarSpec] {
    &circuits_file().cars
}

/// The pit lane of every track.
pub(crate) fn pit_lane() -> &'static PitLane {
    &circuits_file().pit_lane
}

/// Players a session is driven by.
pub(crate) const PLAYERS: [&str; 10] = ["ayla", "bruno", "chen", "dara", "emil", "fatou", "goran", "hana", "ivo", "juno"];

/// A track rasterised at one metre per slot, plus one speed profile per car.
pub(crate) struct Circuit {
    pub spec: &'static TrackSpec,
    pub length: f64,
    /// Signed curvature (1/m) per metre; positive turns left.
    curvature: Vec<f32>,
    /// Highest speed per metre, per car in [`cars`] order.
    vmax: Vec<Vec<f32>>,
}

impl Circuit {
    pub(crate) fn build(spec: &'static TrackSpec) -> Circuit {
        let n = spec.length_m as usize;
        let raw = rasterise(spec);
        // Smooth over ±8 m (circularly) so corners are entered progressively.
        const HALF: usize = 8;
        let mut curvature = vec![0f32; n];
        for (i, c) in curvature.iter_mut().enumerate() {
            let mut sum = 0.0;
            for k in 0..=2 * HALF {
                sum += raw[(i + n + k - HALF) % n];
            }
            *c = (sum / (2 * HALF + 1) as f64) as f32;
        }
        let vmax = cars().iter().map(|car| speed_profile(&curvature, car)).collect();
        Circuit { spec, length: f64::from(spec.length_m), curvature, vmax }
    }

    fn index(&self, s: f64) -> (usize, usize, f64) {
        let n = self.curvature.len();
        let s = s.rem_euclid(self.length);
        let i = (s.floor() as usize).min(n - 1);
        (i, (i + 1) % n, s - i as f64)
    }

    pub(crate) fn curvature_at(&self, s: f64) -> f64 {
        let (i, j, f) = self.index(s);
        f64::from(self.curvature[i]) * (1.0 - f) + f64::from(self.curvature[j]) * f
    }

    pub(crate) fn vmax_at(&self, car: usize, s: f64) -> f64 {
        let (i, j, f) = self.index(s);
        let v = &self.vmax[car];
        f64::from(v[i]) * (1.0 - f) + f64::from(v[j]) * f
    }
}

fn rasterise(spec: &TrackSpec) -> Vec<f64> {
    let n = spec.length_m as usize;
    let listed: f64 = spec.segments.iter().map(|s| s.0).sum();
    assert!(listed + 50.0 <= f64::from(spec.length_m), "{}: segments longer than the lap", spec.name);
    let mut raw = vec![0.0; n];
    let mut start = 0.0;
    for &(len, radius) in &spec.segments {
        let k = if radius == 0.0 { 0.0 } else { 1.0 / radius };
        let (a, b) = (start as usize, ((start + len) as usize).min(n));
        raw[a..b].iter_mut().for_each(|c| *c = k);
        start += len;
    }
    raw
}

fn speed_profile(curvature: &[f32], car: &CarSpec) -> Vec<f32> {
    let n = curvature.len();
    let mut v: Vec<f64> = curvature
        .iter()
        .map(|&k| {
            let k = f64::from(k).abs();
            if k < 1e-6 {
                car.v_top
            } else {
                (car.grip_g * G0 / k).sqrt().min(car.v_top)
            }
        })
        .collect();
    let decel = car.brake_g * G0;
    for j in (0..2 * n).rev() {
        let (i, next) = (j % n, (j + 1) % n);
        let reachable = (v[next] * v[next] + 2.0 * decel).sqrt();
        if reachable < v[i] {
            v[i] = reachable;
        }
    }
    v.into_iter().map(|x| x as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_plausible() {
        for spec in tracks() {
            let c = Circuit::build(spec);
            assert!(spec.sector_ends[0] < spec.sector_ends[1]);
            assert!(spec.sector_ends[1] < c.length - pit_lane().entry_before_line_m);
            assert!(spec.sector_ends[0] > pit_lane().exit_after_line_m);
            for (car, spec_car) in cars().iter().enumerate() {
                let (mut lo, mut hi) = (f64::MAX, 0f64);
                for s in 0..spec.length_m {
                    let v = c.vmax_at(car, f64::from(s));
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
                assert!(lo > 10.0 && lo < 30.0, "{} {}: slowest corner {lo}", spec.name, car);
                assert!((hi - spec_car.v_top).abs() < 1e-3, "{} {}: {hi}", spec.name, car);
            }
        }
    }
}

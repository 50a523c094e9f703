//! Tracks and cars: the fixed lists a session draws from, and the speed profile a car can drive
//! around a track.
//!
//! A track is a loop of straights and constant-radius arcs whose lengths add up to the stated lap
//! length exactly. It is rasterised at one metre; curvature is smoothed over a few metres so that
//! corner entries build lateral load gradually. The speed profile is the cornering limit
//! `sqrt(grip * g / |curvature|)`, capped at the car's top speed, then swept backwards (twice round
//! the loop, so the line wraps) so the car can always brake down to the next corner in time.

/// Standard gravity, m/s².
pub(crate) const G0: f64 = 9.806_65;

/// A circuit.
pub(crate) struct TrackSpec {
    pub name: &'static str,
    /// Lap length in metres.
    pub length_m: u32,
    /// `(length m, signed radius m)`: radius 0 is a straight, positive turns left. The final
    /// straight to the line is added so the segments sum to `length_m`.
    pub segments: &'static [(f64, f64)],
    /// Lap distances where sectors 1 and 2 end (sector 3 ends at the line).
    pub sector_ends: [f64; 2],
}

/// A car model.
pub(crate) struct CarSpec {
    pub name: &'static str,
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

pub(crate) const TRACKS: [TrackSpec; 4] = [
    TrackSpec {
        name: "monza",
        length_m: 5793,
        segments: &[
            (620.0, 0.0),
            (45.0, -22.0),
            (45.0, 24.0),
            (280.0, 0.0),
            (520.0, -360.0),
            (380.0, 0.0),
            (40.0, 28.0),
            (40.0, -30.0),
            (260.0, 0.0),
            (150.0, -105.0),
            (160.0, 0.0),
            (110.0, -85.0),
            (720.0, 0.0),
            (70.0, 60.0),
            (90.0, -95.0),
            (140.0, -160.0),
            (880.0, 0.0),
            (360.0, -125.0),
        ],
        sector_ends: [1920.0, 3890.0],
    },
    TrackSpec {
        name: "spa",
        length_m: 7004,
        segments: &[
            (230.0, 0.0),
            (70.0, -17.0),
            (320.0, 0.0),
            (110.0, 130.0),
            (130.0, -160.0),
            (1050.0, 0.0),
            (80.0, -62.0),
            (60.0, 58.0),
            (330.0, 0.0),
            (110.0, -42.0),
            (280.0, 0.0),
            (90.0, 70.0),
            (260.0, 0.0),
            (300.0, 115.0),
            (270.0, 0.0),
            (80.0, -75.0),
            (80.0, 80.0),
            (320.0, 0.0),
            (160.0, -95.0),
            (650.0, 0.0),
            (420.0, 480.0),
            (620.0, 0.0),
            (40.0, -26.0),
            (45.0, 24.0),
        ],
        sector_ends: [2240.0, 5050.0],
    },
    TrackSpec {
        name: "suzuka",
        length_m: 5807,
        segments: &[
            (480.0, 0.0),
            (170.0, -120.0),
            (60.0, -55.0),
            (90.0, 75.0),
            (90.0, -70.0),
            (90.0, 72.0),
            (80.0, -68.0),
            (200.0, 0.0),
            (160.0, -48.0),
            (380.0, 0.0),
            (80.0, 42.0),
            (250.0, 0.0),
            (70.0, -30.0),
            (190.0, 0.0),
            (260.0, 140.0),
            (760.0, 0.0),
            (60.0, -42.0),
            (420.0, 0.0),
            (160.0, 260.0),
            (300.0, 0.0),
            (35.0, -20.0),
            (35.0, 22.0),
        ],
        sector_ends: [1540.0, 3780.0],
    },
    TrackSpec {
        name: "silverstone",
        length_m: 5891,
        segments: &[
            (330.0, 0.0),
            (120.0, -150.0),
            (60.0, -40.0),
            (280.0, 0.0),
            (55.0, 35.0),
            (420.0, 0.0),
            (110.0, -75.0),
            (720.0, 0.0),
            (90.0, 45.0),
            (60.0, -38.0),
            (440.0, 0.0),
            (120.0, -170.0),
            (90.0, 120.0),
            (80.0, -130.0),
            (100.0, 160.0),
            (190.0, 0.0),
            (110.0, -90.0),
            (760.0, 0.0),
            (130.0, -55.0),
            (180.0, 0.0),
            (110.0, 60.0),
            (240.0, 0.0),
            (80.0, -65.0),
        ],
        sector_ends: [1830.0, 4120.0],
    },
];

pub(crate) const CARS: [CarSpec; 3] = [
    CarSpec {
        name: "gt3",
        v_top: 79.0,
        grip_g: 1.65,
        brake_g: 1.55,
        accel0: 8.5,
        rpm_max: 9000.0,
        rpm_idle: 1200.0,
        tank_kg: 110.0,
        cold_kpa: 135.0,
        wheelbase_m: 2.6,
    },
    CarSpec {
        name: "lmp2",
        v_top: 91.0,
        grip_g: 2.15,
        brake_g: 2.2,
        accel0: 9.5,
        rpm_max: 8500.0,
        rpm_idle: 1500.0,
        tank_kg: 75.0,
        cold_kpa: 125.0,
        wheelbase_m: 3.0,
    },
    CarSpec {
        name: "f3",
        v_top: 77.0,
        grip_g: 2.35,
        brake_g: 2.5,
        accel0: 10.0,
        rpm_max: 7800.0,
        rpm_idle: 1800.0,
        tank_kg: 45.0,
        cold_kpa: 110.0,
        wheelbase_m: 2.8,
    },
];

/// Players a session is driven by.
pub(crate) const PLAYERS: [&str; 10] = ["ayla", "bruno", "chen", "dara", "emil", "fatou", "goran", "hana", "ivo", "juno"];

/// Pit lane geometry, the same on every track: entry and box before the line, exit after it.
pub(crate) const PIT_ENTRY_BEFORE_LINE_M: f64 = 380.0;
pub(crate) const PIT_BOX_BEFORE_LINE_M: f64 = 140.0;
pub(crate) const PIT_EXIT_AFTER_LINE_M: f64 = 260.0;
/// 80 km/h.
pub(crate) const PIT_SPEED_LIMIT: f64 = 80.0 / 3.6;

/// A track rasterised at one metre per slot, plus one speed profile per car.
pub(crate) struct Circuit {
    pub spec: &'static TrackSpec,
    pub length: f64,
    /// Signed curvature (1/m) per metre; positive turns left.
    curvature: Vec<f32>,
    /// Highest speed per metre, per car in [`CARS`] order.
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
        let vmax = CARS.iter().map(|car| speed_profile(&curvature, car)).collect();
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
    for &(len, radius) in spec.segments {
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
        for spec in &TRACKS {
            let c = Circuit::build(spec);
            assert!(spec.sector_ends[0] < spec.sector_ends[1]);
            assert!(spec.sector_ends[1] < c.length - PIT_ENTRY_BEFORE_LINE_M);
            assert!(spec.sector_ends[0] > PIT_EXIT_AFTER_LINE_M);
            for (car, spec_car) in CARS.iter().enumerate() {
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

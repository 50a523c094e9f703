//! Unit conversion through UCUM, resolved once at compile time into `y = factor·x + offset`.

use pitgun_contracts::dictionary::{resolution_steps, ResolutionSteps};
use pitgun_contracts::manifest::AggregateFn;

/// An affine conversion between two comparable UCUM units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conversion {
    /// Multiplier.
    pub factor: f64,
    /// Added after multiplying (non-zero for temperature scales such as `[degF]` → `Cel`).
    pub offset: f64,
}

impl Conversion {
    /// The identity.
    pub const IDENTITY: Conversion = Conversion { factor: 1.0, offset: 0.0 };

    /// Resolves the conversion from `from` to `to` with the `ucum-units` library.
    ///
    /// UCUM conversions between non-logarithmic units are affine, so two evaluations (at 0 and
    /// at 1) give factor and offset exactly as the library defines them.
    pub fn between(from: &str, to: &str) -> Result<Conversion, String> {
        if from == to {
            return Ok(Conversion::IDENTITY);
        }
        ucum::validate(from).map_err(|e| format!("unit {from:?} is not valid UCUM: {e}"))?;
        ucum::validate(to).map_err(|e| format!("unit {to:?} is not valid UCUM: {e}"))?;
        let comparable = ucum::is_comparable(from, to).map_err(|e| format!("cannot compare {from:?} with {to:?}: {e}"))?;
        if !comparable {
            return Err(format!("unit {from:?} cannot be converted to {to:?} (different dimensions)"));
        }
        let at = |x: f64| ucum::convert(x, from, to).map_err(|e| format!("cannot convert {from:?} to {to:?}: {e}"));
        let offset = at(0.0)?;
        let factor = at(1.0)? - offset;
        // Check the affine model on a third point, so a non-linear (logarithmic) unit is refused.
        let probe = at(100.0)?;
        let predicted = factor * 100.0 + offset;
        if (probe - predicted).abs() > 1e-9 * probe.abs().max(1.0) {
            return Err(format!("conversion {from:?} → {to:?} is not linear"));
        }
        Ok(Conversion { factor, offset: if offset.abs() < 1e-12 { 0.0 } else { offset } })
    }

    /// Applies the conversion.
    #[inline]
    pub fn apply(self, x: f64) -> f64 {
        // Most channels need no conversion; `mul_add` is a library call on baseline x86-64.
        // `x + 0.0` gives exactly what the fused form gives for the identity (-0.0 becomes 0.0).
        if self.factor == 1.0 && self.offset == 0.0 {
            return x + 0.0;
        }
        self.factor.mul_add(x, self.offset)
    }

    /// Applies the conversion for an output column: non-identity conversions are rounded to
    /// 12 significant digits, so binary noise of factors such as 3.6 (km/h per m/s, not exact in
    /// binary) does not turn 108 km/h into 107.99999999999999.
    #[inline]
    pub fn apply_for_output(self, x: f64) -> f64 {
        if self == Conversion::IDENTITY || !x.is_finite() {
            return x;
        }
        // 0 °C is 32 °F: only a result of 0 has no digits to round (and no logarithm).
        let y = self.apply(x);
        if y == 0.0 {
            return y;
        }
        let magnitude = y.abs().log10().floor() as i32;
        let digits = 11 - magnitude;
        if !(-300..=300).contains(&digits) {
            return y;
        }
        let scale = 10f64.powi(digits.abs());
        if digits >= 0 {
            (y * scale).round() / scale
        } else {
            (y / scale).round() * scale
        }
    }

    /// [`Conversion::apply_for_output`] for an aggregate of `values` values: a position (min,
    /// mean, a percentile…) converts as one value does, a spread (stddev) by the factor alone,
    /// and a sum takes the offset once per value summed.
    pub fn apply_for_aggregate(self, function: AggregateFn, x: f64, values: u64) -> f64 {
        let offset = match function {
            AggregateFn::Stddev => 0.0,
            AggregateFn::Sum => self.offset * values as f64,
            _ => self.offset,
        };
        Conversion { offset, ..self }.apply_for_output(x)
    }

    /// `self` followed by `next`.
    pub fn then(self, next: Conversion) -> Conversion {
        Conversion { factor: self.factor * next.factor, offset: next.factor * self.offset + next.offset }
    }
}

/// Snaps values to a resolution (a step such as 10⁻ᵈ or 0.25), so the same physical reading sent
/// in different units becomes the same canonical number. [`Snap::NONE`] leaves values as they are.
///
/// Not an `Option` in a [`crate::plan::ValueCheck`]: 8 bytes more per alias check cost replay
/// 1 % of its instructions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snap {
    /// 10ᵈ, d the step's decimals; 0 for no resolution.
    scale: f64,
    /// The step in units of 10⁻ᵈ: 1 for a power of ten, 25 for 0.25.
    step: f64,
}

impl Snap {
    /// No resolution: values are kept as converted.
    pub const NONE: Snap = Snap { scale: 0.0, step: 1.0 };

    /// From a dictionary resolution (`0.001`, `0.25`, `5`), by the dictionary's rule
    /// ([`resolution_steps`]); `None` for one the rule refuses (`validate` names it).
    pub fn from_resolution(resolution: f64) -> Option<Snap> {
        Some(match resolution_steps(resolution).ok()? {
            ResolutionSteps::PowerOfTen(exponent) => Snap { scale: 10f64.powi(-exponent), step: 1.0 },
            ResolutionSteps::Decimals(decimals) => {
                let scale = 10f64.powi(decimals);
                Snap { scale, step: round_half_away(resolution * scale) }
            }
        })
    }

    /// Rounds `x` to the resolution (half away from zero). For a power of ten the step is 1 and
    /// dividing and multiplying by it are exact.
    #[inline]
    pub fn apply(self, x: f64) -> f64 {
        if self.scale == 0.0 {
            return x;
        }
        round_half_away(x * self.scale / self.step) * self.step / self.scale
    }
}

/// 2⁵²: every float at least this large is an integer.
const TWO_POW_52: f64 = 4_503_599_627_370_496.0;

/// Exactly `f64::round` (half away from zero, sign kept), without the library call that
/// `round` compiles to on baseline x86-64 (no SSE4.1); it ran once per channel value.
#[inline]
pub fn round_half_away(x: f64) -> f64 {
    if x.is_nan() || x.abs() >= TWO_POW_52 {
        return x; // already an integer, or NaN/infinite
    }
    let t = x as i64 as f64; // truncation, exact below 2⁵²
    let r = if (x - t).abs() >= 0.5 { t + 1f64.copysign(x) } else { t };
    r.copysign(x)
}

/// Whether `x` is a finite integer (`x.fract() == 0.0`, without the library call).
#[inline]
pub fn is_integral(x: f64) -> bool {
    if x.abs() < TWO_POW_52 {
        x as i64 as f64 == x
    } else {
        x.is_finite()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_rounding_matches_std_bit_for_bit() {
        let mut xs = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            2.5,
            -2.5,
            0.49999999999999994,
            -0.49999999999999994,
            4503599627370495.5,
            4503599627370496.0,
            -4503599627370497.0,
            1e300,
            -1e-300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::MAX,
            f64::MIN_POSITIVE,
            123.456,
            -98765.4321,
        ];
        // A fixed-seed walk over magnitudes (xorshift; seed 20261126).
        let mut state: u64 = 20261126;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = f64::from_bits(state);
            xs.push(x);
            xs.push((state % 2_000_001) as f64 / 1000.0 - 1000.0);
        }
        for x in xs {
            if x.is_nan() {
                assert!(round_half_away(x).is_nan());
            } else {
                assert_eq!(round_half_away(x).to_bits(), x.round().to_bits(), "round({x:e})");
            }
            assert_eq!(is_integral(x), x.fract() == 0.0, "fract({x:e})");
        }
        let id = Conversion::IDENTITY;
        for x in [0.0, -0.0, 1.5, -3.25] {
            assert_eq!(id.apply(x).to_bits(), 1f64.mul_add(x, 0.0).to_bits());
        }
    }

    #[test]
    fn speed_temperature_and_ratio() {
        let kmh = Conversion::between("km/h", "m/s").unwrap();
        assert!((kmh.apply(36.0) - 10.0).abs() < 1e-12);
        let f = Conversion::between("[degF]", "Cel").unwrap();
        assert!((f.apply(212.0) - 100.0).abs() < 1e-9);
        assert!((f.apply(32.0)).abs() < 1e-9);
        let pct = Conversion::between("%", "1").unwrap();
        assert!((pct.apply(50.0) - 0.5).abs() < 1e-15);
        assert!(Conversion::between("km/h", "Cel").is_err());
        assert!(Conversion::between("furlong", "m").is_err());
    }

    #[test]
    fn output_conversion_hides_binary_noise() {
        let c = Conversion::between("m/s", "km/h").unwrap();
        assert_eq!(c.apply_for_output(30.0), 108.0);
        assert_eq!(c.apply_for_output(25.0), 90.0);
        assert_eq!(Conversion::IDENTITY.apply_for_output(0.1 + 0.2), 0.1 + 0.2);
    }

    #[test]
    fn snapping_makes_units_agree() {
        let snap = Snap::from_resolution(0.001).unwrap();
        let kmh = Conversion::between("km/h", "m/s").unwrap();
        let speed = 61.237_f64;
        assert_eq!(snap.apply(kmh.apply(speed * 3.6)), snap.apply(speed));
    }

    /// A resolution that is not a power of ten snaps too, as the dictionary promises: it was
    /// ignored (values kept every digit), and the result is written with the step's decimals.
    #[test]
    fn any_positive_resolution_snaps() {
        let snap = |r: f64, x: f64| Snap::from_resolution(r).expect("a positive resolution snaps").apply(x);
        assert_eq!(snap(0.25, 1.13), 1.25);
        assert_eq!(snap(0.25, -1.12), -1.0);
        assert_eq!(snap(0.2, 0.5), 0.6, "0.6, not 3 × 0.2 = 0.6000000000000001");
        assert_eq!(snap(0.5, 21.75), 22.0);
        assert_eq!(snap(5.0, 12.4), 10.0);
        assert_eq!(snap(2.5, 3.76), 5.0);
        assert_eq!(snap(0.05, 0.124), 0.1);
        for (r, x, y) in [(0.001, 61.2374, 61.237), (0.01, -0.015, -0.02), (10.0, 15.0, 20.0), (1.0, 2.5, 3.0)] {
            assert_eq!(snap(r, x), y, "{r}");
        }
        assert!(Snap::from_resolution(0.0).is_none() && Snap::from_resolution(-1.0).is_none() && Snap::from_resolution(f64::NAN).is_none());
        // Steps finer than 10⁻¹⁵ other than powers of ten are the dictionary's to refuse: 3e-17
        // was a step of 0, and every value NaN.
        assert!(Snap::from_resolution(3e-17).is_none() && Snap::from_resolution(1.5e-15).is_none());
        assert_eq!(snap(3e-15, 7e-15), 6e-15);
        assert_eq!(snap(1e-20, 0.5), 0.5);
    }
}

//! Unit conversion through UCUM, resolved once at compile time into `y = factor·x + offset`.

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
        let comparable = ucum::is_comparable(from, to)
            .map_err(|e| format!("cannot compare {from:?} with {to:?}: {e}"))?;
        if !comparable {
            return Err(format!("unit {from:?} cannot be converted to {to:?} (different dimensions)"));
        }
        let at = |x: f64| {
            ucum::convert(x, from, to).map_err(|e| format!("cannot convert {from:?} to {to:?}: {e}"))
        };
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
        self.factor.mul_add(x, self.offset)
    }

    /// `self` followed by `next`.
    pub fn then(self, next: Conversion) -> Conversion {
        Conversion { factor: self.factor * next.factor, offset: next.factor * self.offset + next.offset }
    }
}

/// Snaps values to a resolution of 10⁻ᵈ, so the same physical reading sent in different units
/// becomes the same canonical number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snap {
    scale: f64,
}

impl Snap {
    /// From a dictionary resolution (e.g. `0.001`); `None` when the resolution is not 10⁻ᵈ.
    pub fn from_resolution(resolution: f64) -> Option<Snap> {
        if !(resolution > 0.0) {
            return None;
        }
        let digits = -resolution.log10();
        let rounded = digits.round();
        ((digits - rounded).abs() < 1e-9).then(|| Snap { scale: 10f64.powi(rounded as i32) })
    }

    /// Rounds `x` to the resolution (half away from zero).
    #[inline]
    pub fn apply(self, x: f64) -> f64 {
        (x * self.scale).round() / self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn snapping_makes_units_agree() {
        let snap = Snap::from_resolution(0.001).unwrap();
        let kmh = Conversion::between("km/h", "m/s").unwrap();
        let speed = 61.237_f64;
        assert_eq!(snap.apply(kmh.apply(speed * 3.6)), snap.apply(speed));
        assert!(Snap::from_resolution(0.25).is_none());
    }
}

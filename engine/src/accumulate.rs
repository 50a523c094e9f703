//! Accumulators: one per aggregation per window, all independent of the order values arrive in.
//!
//! Sums are exact (Shewchuk's non-overlapping partials, rounded once at the end, as Python's
//! `math.fsum` does), so a late event or a different arrival order cannot change a single bit of
//! a sum, mean or standard deviation. First/last compare (event time, sequence); min/max use a
//! total order; percentiles use a DDSketch whose bucket counts do not depend on order.

use pitgun_contracts::manifest::AggregateFn;
use sketches_ddsketch::{Config as SketchConfig, DDSketch};

/// Relative accuracy of percentile sketches: the reported value is within 1 % of the value of
/// rank ⌊q·(n−1)⌋ among the window's values.
pub const SKETCH_RELATIVE_ERROR: f64 = 0.01;

/// An exact floating-point sum: the correctly rounded value of the true sum of all added values.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ExactSum {
    partials: Vec<f64>,
}

impl ExactSum {
    /// Adds a finite value exactly.
    pub fn add(&mut self, mut x: f64) {
        let mut kept = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        self.partials.truncate(kept);
        self.partials.push(x);
    }

    /// The sum, correctly rounded to the nearest f64 (ties to even).
    pub fn value(&self) -> f64 {
        let p = &self.partials;
        let Some(&top) = p.last() else { return 0.0 };
        let mut n = p.len() - 1;
        let mut hi = top;
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            let y = p[n - 1];
            n -= 1;
            hi = x + y;
            lo = y - (hi - x);
            if lo != 0.0 {
                break;
            }
        }
        // Round half to even across the remaining partials' sign (the fsum correction).
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
        hi
    }
}

/// The state of one aggregation in one window.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub enum Accumulator {
    /// Count of values (or events).
    Count(u64),
    /// Exact sum.
    Sum(ExactSum, u64),
    /// Minimum.
    Min(Option<f64>),
    /// Maximum.
    Max(Option<f64>),
    /// Value at the smallest (time, seq).
    First(Option<(i64, u64, f64)>),
    /// Value at the largest (time, seq).
    Last(Option<(i64, u64, f64)>),
    /// Exact Σx and count, for the mean.
    Mean(ExactSum, u64),
    /// Exact Σx and Σx², for the population standard deviation (a mean needs no Σx², and
    /// keeping it cost two more exact additions per value).
    Moments(ExactSum, ExactSum, u64),
    /// Percentile sketch.
    Sketch(Box<DDSketch>),
    /// Computed from the window's bounds or sequence range, nothing to accumulate.
    WindowDerived,
}

impl Accumulator {
    /// A fresh accumulator for `function`.
    pub fn new(function: AggregateFn) -> Accumulator {
        match function {
            AggregateFn::Count => Accumulator::Count(0),
            AggregateFn::Sum => Accumulator::Sum(ExactSum::default(), 0),
            AggregateFn::Min => Accumulator::Min(None),
            AggregateFn::Max => Accumulator::Max(None),
            AggregateFn::First => Accumulator::First(None),
            AggregateFn::Last => Accumulator::Last(None),
            AggregateFn::Mean => Accumulator::Mean(ExactSum::default(), 0),
            AggregateFn::Stddev => Accumulator::Moments(ExactSum::default(), ExactSum::default(), 0),
            AggregateFn::Percentile => Accumulator::Sketch(Box::new(DDSketch::new(SketchConfig::new(SKETCH_RELATIVE_ERROR, 4096, 1e-9)))),
            AggregateFn::Duration | AggregateFn::Missing => Accumulator::WindowDerived,
        }
    }

    /// Adds one value observed at (time, seq).
    #[inline]
    pub fn add(&mut self, value: f64, time: i64, seq: u64) {
        match self {
            Accumulator::Count(n) => *n += 1,
            Accumulator::Sum(s, n) | Accumulator::Mean(s, n) => {
                s.add(value);
                *n += 1;
            }
            Accumulator::Min(m) => {
                if m.is_none_or(|cur| value.total_cmp(&cur).is_lt()) {
                    *m = Some(value);
                }
            }
            Accumulator::Max(m) => {
                if m.is_none_or(|cur| value.total_cmp(&cur).is_gt()) {
                    *m = Some(value);
                }
            }
            Accumulator::First(f) => {
                if f.is_none_or(|(t, s, _)| (time, seq) < (t, s)) {
                    *f = Some((time, seq, value));
                }
            }
            Accumulator::Last(l) => {
                if l.is_none_or(|(t, s, _)| (time, seq) > (t, s)) {
                    *l = Some((time, seq, value));
                }
            }
            Accumulator::Moments(s1, s2, n) => {
                s1.add(value);
                // x² exactly, as the rounded square plus its rounding error (an FMA).
                let square = value * value;
                s2.add(square);
                s2.add(value.mul_add(value, -square));
                *n += 1;
            }
            Accumulator::Sketch(sketch) => sketch.add(value),
            Accumulator::WindowDerived => {}
        }
    }

    /// Folds another accumulator of the same function into this one (session-window merges).
    pub fn merge(&mut self, other: &Accumulator) {
        match (self, other) {
            (Accumulator::Count(a), Accumulator::Count(b)) => *a += b,
            (Accumulator::Sum(a, n), Accumulator::Sum(b, m)) | (Accumulator::Mean(a, n), Accumulator::Mean(b, m)) => {
                b.partials.iter().for_each(|p| a.add(*p));
                *n += m;
            }
            (Accumulator::Min(a), Accumulator::Min(Some(b))) if a.is_none_or(|x| b.total_cmp(&x).is_lt()) => *a = Some(*b),
            (Accumulator::Max(a), Accumulator::Max(Some(b))) if a.is_none_or(|x| b.total_cmp(&x).is_gt()) => *a = Some(*b),
            (Accumulator::First(a), Accumulator::First(Some(b))) if a.is_none_or(|x| (b.0, b.1) < (x.0, x.1)) => *a = Some(*b),
            (Accumulator::Last(a), Accumulator::Last(Some(b))) if a.is_none_or(|x| (b.0, b.1) > (x.0, x.1)) => *a = Some(*b),
            (Accumulator::Moments(a1, a2, n), Accumulator::Moments(b1, b2, m)) => {
                b1.partials.iter().for_each(|p| a1.add(*p));
                b2.partials.iter().for_each(|p| a2.add(*p));
                *n += m;
            }
            (Accumulator::Sketch(a), Accumulator::Sketch(b)) => {
                a.merge(b).expect("sketches of one plan share a configuration");
            }
            _ => {}
        }
    }

    /// How many values a sum took (0 for any other accumulator).
    pub fn summed(&self) -> u64 {
        match self {
            Accumulator::Sum(_, n) => *n,
            _ => 0,
        }
    }

    /// The aggregate's value; `None` when the window saw no value.
    pub fn finish(&self, function: AggregateFn, q: f64) -> Option<f64> {
        match (self, function) {
            (Accumulator::Count(n), _) => Some(*n as f64),
            (Accumulator::Sum(s, n), _) => (*n > 0).then(|| s.value()),
            (Accumulator::Min(m), _) | (Accumulator::Max(m), _) => *m,
            (Accumulator::First(v), _) | (Accumulator::Last(v), _) => v.map(|(_, _, x)| x),
            (Accumulator::Mean(s1, n), _) => (*n > 0).then(|| s1.value() / *n as f64),
            (Accumulator::Moments(s1, s2, n), _) => (*n > 0).then(|| {
                // Population variance = (n·Σx² − (Σx)²) / n². Both products are expanded exactly
                // (value plus FMA remainder) into one exact sum, so the difference is rounded
                // once: no cancellation even for a tiny spread around a large mean.
                let n = *n as f64;
                let mut d = ExactSum::default();
                for &p in &s2.partials {
                    let h = p * n;
                    d.add(h);
                    d.add(p.mul_add(n, -h));
                }
                for &a in &s1.partials {
                    for &b in &s1.partials {
                        let h = a * b;
                        d.add(-h);
                        d.add(-a.mul_add(b, -h));
                    }
                }
                (d.value() / (n * n)).max(0.0).sqrt()
            }),
            // A bucket's representative value may lie just outside what the window saw (a
            // one-value window's p50 was 59.745 for 59.9); the sketch's exact minimum and maximum
            // bound it, so a percentile never falls below the min column or above the max.
            (Accumulator::Sketch(sketch), _) => {
                let v = sketch.quantile(q).ok().flatten()?;
                Some(match (sketch.min(), sketch.max()) {
                    (Some(lo), Some(hi)) => v.clamp(lo, hi),
                    _ => v,
                })
            }
            (Accumulator::WindowDerived, _) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_sum_is_order_independent() {
        let values = [1e16, 1.0, -1e16, 0.1, 0.2, 0.3, 1e-8, 3.5e15, -7.25];
        let mut forward = ExactSum::default();
        values.iter().for_each(|v| forward.add(*v));
        let mut backward = ExactSum::default();
        values.iter().rev().for_each(|v| backward.add(*v));
        assert_eq!(forward.value().to_bits(), backward.value().to_bits());
        // 1 + 0.1 + 0.2 + 0.3 + 1e-8 + 3.5e15 − 7.25, correctly rounded.
        assert_eq!(forward.value(), 3_499_999_999_999_994.5);
    }

    #[test]
    fn exact_sum_of_tenths() {
        let mut s = ExactSum::default();
        for _ in 0..10 {
            s.add(0.1);
        }
        assert_eq!(s.value(), 1.0);
    }

    #[test]
    fn a_percentile_stays_within_the_values_the_window_saw() {
        let p = |values: &[f64], q: f64| {
            let mut acc = Accumulator::new(AggregateFn::Percentile);
            for (i, v) in values.iter().enumerate() {
                acc.add(*v, i as i64, i as u64);
            }
            acc.finish(AggregateFn::Percentile, q).unwrap()
        };
        assert_eq!(p(&[59.9], 0.5), 59.9, "one value is every percentile of it");
        assert_eq!(p(&[143.87], 0.05), 143.87);
        let fps = [57.8, 58.0, 58.3, 59.1, 59.9, 60.0, 60.0, 60.0];
        for q in [0.0, 0.05, 0.5, 0.95, 1.0] {
            let v = p(&fps, q);
            assert!((57.8..=60.0).contains(&v), "p{q} = {v}");
        }
        assert_eq!(p(&fps, 0.0), 57.8);
        assert_eq!(p(&fps, 1.0), 60.0);
    }

    #[test]
    fn stddev_is_population() {
        let mut acc = Accumulator::new(AggregateFn::Stddev);
        for (i, v) in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0].iter().enumerate() {
            acc.add(*v, i as i64, i as u64);
        }
        assert_eq!(acc.finish(AggregateFn::Stddev, 0.0), Some(2.0));
    }
}

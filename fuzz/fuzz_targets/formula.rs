//! The formula compiler and sandbox (`pitgun_engine::formula`): arbitrary text compiled with the
//! variables a manifest may give it (a slot, a previous value, `dt`), then evaluated on a few
//! value sets, including NaN (no value), zero, negatives and extremes. The first byte picks the
//! value sets; the rest is the formula.
//!
//! Held: no panic, no run past the operation budget (libFuzzer's timeout would report it), and
//! the same inputs give the same outcome bit for bit (the memo and the native path agree with
//! the interpreter they stand in for).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitgun_engine::formula::{Evaluated, FormulaRuntime, VarSource};

const VALUES: [f64; 8] = [f64::NAN, 0.0, 1.0, -1.5, 0.98, 1e308, -1e-308, 3.0e9];

fn bits(e: Evaluated) -> String {
    match e {
        Evaluated::Value(v) if v.is_nan() => "NaN".into(),
        Evaluated::Value(v) => format!("{:x}", v.to_bits()),
        other => format!("{other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, text)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let available = [
        ("speed".to_string(), VarSource::Slot(0)),
        ("throttle".to_string(), VarSource::Slot(1)),
        ("brake".to_string(), VarSource::Slot(2)),
        ("fuel".to_string(), VarSource::Slot(3)),
        ("prev_speed".to_string(), VarSource::Prev(0)),
        ("prev_fuel".to_string(), VarSource::Prev(3)),
        ("dt".to_string(), VarSource::Dt),
    ];
    let mut rt = FormulaRuntime::new();
    let Ok(formula) = rt.compile(text, &available) else { return };
    let mut fresh = FormulaRuntime::new();
    let again = fresh.compile(text, &available).expect("compiles twice");
    for i in 0..4u32 {
        let v = |k: u32| VALUES[((u32::from(pick) >> (k % 3)) + i * 3 + k) as usize % VALUES.len()];
        let slots = [v(0), v(1), v(2), v(3)];
        let prev = [v(4), v(5), v(6), v(7)];
        let dt = v(8).abs();
        let first = rt.eval(&formula, &slots, &prev, dt);
        let second = rt.eval(&formula, &slots, &prev, dt);
        let other = fresh.eval(&again, &slots, &prev, dt);
        assert_eq!(bits(first), bits(second), "{text:?} on {slots:?} {prev:?} {dt}");
        assert_eq!(bits(first), bits(other), "{text:?} on {slots:?} {prev:?} {dt}");
    }
});

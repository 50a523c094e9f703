//! Rhai formulas: compiled once, sandboxed, evaluated with a reused scope.
//!
//! The engine is built with `Engine::new_raw` plus only arithmetic, logic and math packages:
//! no I/O, no `eval`, no modules, no time. Every formula runs under an operation-count limit;
//! that count — not a wall clock — is what stops a runaway formula, so the same input is rejected
//! the same way on every run and every machine. Variables are checked at compile time (strict
//! variables), so a typo in a manifest fails validation, not the hundred-millionth event.
//!
//! Because a formula can only compute from its variables (no clock, no randomness, no I/O), its
//! outcome is a pure function of their values; each formula therefore memoises its last results
//! by the bit patterns of its inputs. Pedal and state channels repeat a lot (a throttle at 1.0),
//! so most evaluations are a table lookup, and the result is the same bit for bit.
//!
//! A formula that is only arithmetic and comparisons over its variables (`speed * dt`,
//! `if throttle >= 0.98 { 1.0 } else { 0.0 }`) is not interpreted at all: `native` evaluates it
//! from rhai's own AST with rhai's semantics, checked against rhai by a property test.

use rhai::packages::{ArithmeticPackage, BasicMathPackage, LogicPackage, Package};
use rhai::{Dynamic, Engine, EvalAltResult, OptimizationLevel, Scope, AST};

/// Operation budget per formula evaluation.
pub const MAX_OPERATIONS: u64 = 100_000;

// No wall-clock limit: a result must never depend on the machine's speed. Every operation the
// sandbox offers (arithmetic, logic, math on numbers; strings, arrays and maps bounded in size)
// costs bounded time, so the operation budget bounds the time too.

/// Where a formula variable's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarSource {
    /// The current event's value in a slot (input or derived).
    Slot(usize),
    /// The previous non-null value of a slot for the same key.
    Prev(usize),
    /// Seconds since this formula was last evaluated for the key (0 the first time).
    Dt,
}

impl VarSource {
    /// The variable's value for this evaluation (NaN = none).
    #[inline]
    fn read(self, slots: &[f64], prev: &[f64], dt: f64) -> f64 {
        match self {
            VarSource::Slot(i) => slots[i],
            VarSource::Prev(i) => prev[i],
            VarSource::Dt => dt,
        }
    }
}

/// A compiled formula and the variables it reads.
#[derive(Debug, Clone)]
pub struct Formula {
    ast: AST,
    vars: Vec<(String, VarSource)>,
    /// The direct form when the formula is plain arithmetic and comparisons (no memo needed).
    native: Option<crate::native::Native>,
    memo: std::cell::RefCell<Memo>,
}

impl Formula {
    /// Whether the current event holds every input the formula reads of it (`prev_*` and `dt`
    /// aside): if so, an evaluation short of a value lacked only a previous one.
    pub fn has_current_inputs(&self, slots: &[f64]) -> bool {
        self.vars.iter().all(|(_, source)| !matches!(source, VarSource::Slot(i) if slots[*i].is_nan()))
    }
}

/// Direct-mapped cache of outcomes by input bits, for formulas of at most [`MEMO_VARS`] variables.
#[derive(Debug, Clone, Default)]
struct Memo {
    entries: Vec<Option<([u64; MEMO_VARS], Evaluated)>>,
}

const MEMO_VARS: usize = 4;
const MEMO_SLOTS: usize = 1024;

/// Outcome of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Evaluated {
    /// A number (booleans read as 1/0).
    Value(f64),
    /// The formula returned `()`: no value for this event.
    Null,
    /// A variable the formula reads had no value, so it was not evaluated.
    MissingInput,
    /// The operation, depth or size limit stopped it.
    Limit,
    /// It failed at run time (type error, non-numeric result…).
    Error,
}

/// The sandboxed engine plus a scope reused across evaluations.
pub struct FormulaRuntime {
    engine: Engine,
    scope: Scope<'static>,
}

impl Default for FormulaRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl FormulaRuntime {
    /// A sandboxed engine.
    pub fn new() -> FormulaRuntime {
        let mut engine = Engine::new_raw();
        engine.register_global_module(ArithmeticPackage::new().as_shared_module());
        engine.register_global_module(LogicPackage::new().as_shared_module());
        engine.register_global_module(BasicMathPackage::new().as_shared_module());
        engine
            .set_max_operations(MAX_OPERATIONS)
            .set_max_expr_depths(64, 32)
            .set_max_call_levels(16)
            .set_max_string_size(1024)
            .set_max_array_size(1024)
            .set_max_map_size(64)
            .set_strict_variables(true)
            .set_optimization_level(OptimizationLevel::Simple);
        engine.disable_symbol("eval");
        FormulaRuntime { engine, scope: Scope::new() }
    }

    /// Compiles `text`, allowing exactly the variables in `available` (name → source).
    pub fn compile(&self, text: &str, available: &[(String, VarSource)]) -> Result<Formula, String> {
        let mut scope = Scope::new();
        for (name, _) in available {
            scope.push(name.as_str(), 0.0_f64);
        }
        let ast = self.engine.compile_with_scope(&scope, text).map_err(|e| e.to_string())?;
        let used = identifiers(text);
        let vars: Vec<(String, VarSource)> = available.iter().filter(|(name, _)| used.iter().any(|u| u == name)).cloned().collect();
        let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
        let native = crate::native::Native::compile(&ast, &names).filter(|_| names.len() <= NATIVE_VARS);
        let memoised = native.is_none() && vars.len() <= MEMO_VARS;
        let memo = Memo { entries: if memoised { vec![None; MEMO_SLOTS] } else { Vec::new() } };
        Ok(Formula { ast, vars, native, memo: std::cell::RefCell::new(memo) })
    }

    /// Evaluates a formula. `slots` holds the current values (NaN = no value), `prev` the previous
    /// non-null values of the key, `dt` the formula's time step in seconds.
    pub fn eval(&mut self, formula: &Formula, slots: &[f64], prev: &[f64], dt: f64) -> Evaluated {
        if let Some(native) = &formula.native {
            let mut values = [0.0; NATIVE_VARS];
            for (value, (_, source)) in values.iter_mut().zip(&formula.vars) {
                *value = source.read(slots, prev, dt);
                if value.is_nan() {
                    return Evaluated::MissingInput;
                }
            }
            return native_outcome(native.eval(&values));
        }
        let mut key = [0u64; MEMO_VARS];
        for (k, (_, source)) in formula.vars.iter().enumerate() {
            let value = source.read(slots, prev, dt);
            if value.is_nan() {
                return Evaluated::MissingInput;
            }
            if k < MEMO_VARS {
                key[k] = value.to_bits();
            }
        }
        let mut memo = formula.memo.borrow_mut();
        let slot = if memo.entries.is_empty() {
            None
        } else {
            let h = key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, k| (h ^ k).wrapping_mul(0x0100_0000_01b3));
            let slot = ((h ^ (h >> 29)) as usize) % MEMO_SLOTS;
            if let Some((k, outcome)) = memo.entries[slot] {
                if k == key {
                    return outcome;
                }
            }
            Some(slot)
        };
        let outcome = self.run(formula, slots, prev, dt);
        if let Some(slot) = slot {
            memo.entries[slot] = Some((key, outcome));
        }
        outcome
    }

    fn run(&mut self, formula: &Formula, slots: &[f64], prev: &[f64], dt: f64) -> Evaluated {
        self.scope.clear();
        for (name, source) in &formula.vars {
            self.scope.push(name.as_str(), source.read(slots, prev, dt));
        }
        match self.engine.eval_ast_with_scope::<Dynamic>(&mut self.scope, &formula.ast) {
            Ok(v) => to_number(v),
            Err(e) => match *e {
                EvalAltResult::ErrorTooManyOperations(_)
                | EvalAltResult::ErrorStackOverflow(_)
                | EvalAltResult::ErrorDataTooLarge(..)
                | EvalAltResult::ErrorTerminated(..) => Evaluated::Limit,
                _ => Evaluated::Error,
            },
        }
    }
}

/// Variables a formula may have to run natively (values live on the stack).
const NATIVE_VARS: usize = 16;

/// The same mapping as [`to_number`], for the native evaluator's values.
fn native_outcome(v: crate::native::Value) -> Evaluated {
    use crate::native::Value;
    match v {
        Value::Unit => Evaluated::Null,
        Value::Float(f) => {
            if f.is_finite() {
                Evaluated::Value(f)
            } else {
                Evaluated::Null
            }
        }
        Value::Int(i) => Evaluated::Value(i as f64),
        Value::Bool(b) => Evaluated::Value(if b { 1.0 } else { 0.0 }),
    }
}

fn to_number(v: Dynamic) -> Evaluated {
    if v.is_unit() {
        return Evaluated::Null;
    }
    if let Ok(f) = v.as_float() {
        return if f.is_finite() { Evaluated::Value(f) } else { Evaluated::Null };
    }
    if let Ok(i) = v.as_int() {
        return Evaluated::Value(i as f64);
    }
    if let Ok(b) = v.as_bool() {
        return Evaluated::Value(if b { 1.0 } else { 0.0 });
    }
    Evaluated::Error
}

/// Identifiers appearing in a formula (a superset of the variables it reads).
fn identifiers(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            current.push(c);
        } else if !current.is_empty() {
            if !current.starts_with(|c: char| c.is_ascii_digit()) && !out.contains(&current) {
                out.push(current.clone());
            }
            current.clear();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(String, VarSource)> {
        vec![("speed".into(), VarSource::Slot(0)), ("prev_speed".into(), VarSource::Prev(0)), ("dt".into(), VarSource::Dt)]
    }

    #[test]
    fn evaluates_with_inputs_prev_and_dt() {
        let mut rt = FormulaRuntime::new();
        let f = rt.compile("(speed + prev_speed) / 2.0 * dt", &vars()).unwrap();
        assert_eq!(rt.eval(&f, &[10.0], &[20.0], 0.5), Evaluated::Value(7.5));
        assert_eq!(rt.eval(&f, &[10.0], &[f64::NAN], 0.5), Evaluated::MissingInput);
        let g = rt.compile("if speed > 5 { true } else { () }", &vars()).unwrap();
        assert_eq!(rt.eval(&g, &[10.0], &[0.0], 0.0), Evaluated::Value(1.0));
        assert_eq!(rt.eval(&g, &[1.0], &[0.0], 0.0), Evaluated::Null);
    }

    /// Random formulas of the native subset, evaluated natively and by rhai on random values
    /// (near-equal pairs included, for the epsilon comparisons): the outcomes agree bit for bit.
    #[test]
    fn native_evaluation_agrees_with_rhai() {
        let seed: u64 = std::env::var("PITGUN_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261126);
        eprintln!("native formula property test: seed {seed}");
        let mut state = seed.max(1);
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        fn number(r: u64) -> String {
            match r % 5 {
                0 => format!("{}", (r >> 8) % 100),
                1 => format!("{:.3}", ((r >> 8) % 100_000) as f64 / 1000.0),
                2 => "0.98".into(),
                3 => "0.0".into(),
                _ => format!("{}.5", (r >> 8) % 10),
            }
        }
        fn numeric(next: &mut dyn FnMut() -> u64, depth: u32) -> String {
            let r = next();
            if depth == 0 || r.is_multiple_of(3) {
                return match r % 4 {
                    0 => number(r >> 3),
                    1 => "a".into(),
                    2 => "b".into(),
                    _ => "prev_a".into(),
                };
            }
            match r % 7 {
                0 => format!("-({})", numeric(next, depth - 1)),
                1 => format!("if {} {{ {} }} else {{ {} }}", boolean(next, depth - 1), numeric(next, depth - 1), numeric(next, depth - 1)),
                _ => {
                    let op = ["+", "-", "*", "/"][(r >> 5) as usize % 4];
                    format!("({} {op} {})", numeric(next, depth - 1), numeric(next, depth - 1))
                }
            }
        }
        fn boolean(next: &mut dyn FnMut() -> u64, depth: u32) -> String {
            let r = next();
            match r % 6 {
                0 if depth > 0 => format!("({} && {})", boolean(next, depth - 1), boolean(next, depth - 1)),
                1 if depth > 0 => format!("({} || {})", boolean(next, depth - 1), boolean(next, depth - 1)),
                2 if depth > 0 => format!("!({})", boolean(next, depth - 1)),
                _ => {
                    let op = ["==", "!=", ">", ">=", "<", "<="][(r >> 5) as usize % 6];
                    format!("({} {op} {})", numeric(next, depth.saturating_sub(1)), numeric(next, depth.saturating_sub(1)))
                }
            }
        }
        let vars = vec![("a".to_string(), VarSource::Slot(0)), ("b".to_string(), VarSource::Slot(1)), ("prev_a".to_string(), VarSource::Prev(0))];
        let mut rt = FormulaRuntime::new();
        let (mut native, mut checked) = (0, 0);
        for i in 0..3000 {
            let text = match i % 4 {
                0 => boolean(&mut next, 3),
                1 => format!("if {} {{ {} }}", boolean(&mut next, 2), numeric(&mut next, 2)),
                _ => numeric(&mut next, 3),
            };
            let f = rt.compile(&text, &vars).unwrap_or_else(|e| panic!("{text}: {e}"));
            if f.native.is_none() {
                continue;
            }
            native += 1;
            let mut slow = f.clone();
            slow.native = None;
            for _ in 0..20 {
                let r = next();
                let a = match r % 4 {
                    0 => 0.98,
                    1 => -(((r >> 8) % 1000) as f64) / 7.0,
                    2 => 0.98 * (1.0 + f64::EPSILON),
                    _ => ((r >> 8) % 100_000) as f64 / 1000.0,
                };
                let b = if r % 3 == 0 { a } else { ((r >> 20) % 1000) as f64 / 10.0 };
                let prev = if r % 5 == 0 { a * (1.0 - f64::EPSILON) } else { b + 0.5 };
                let slots = [a, b];
                let prevs = [prev, f64::NAN];
                let fast = rt.eval(&f, &slots, &prevs, 0.0);
                let reference = rt.run(&slow, &slots, &prevs, 0.0);
                let same = match (fast, reference) {
                    (Evaluated::Value(x), Evaluated::Value(y)) => x.to_bits() == y.to_bits(),
                    (x, y) => x == y,
                };
                assert!(same, "{text} with a={a:e} b={b:e} prev_a={prev:e}: native {fast:?}, rhai {reference:?}");
                checked += 1;
            }
        }
        assert!(native > 1500, "only {native} of 3000 formulas ran natively");
        eprintln!("{native} native formulas, {checked} evaluations agreed with rhai");
    }

    #[test]
    fn lap_performance_formulas_run_natively() {
        let rt = FormulaRuntime::new();
        let vars = vec![("speed".to_string(), VarSource::Slot(0)), ("dt".to_string(), VarSource::Dt), ("throttle".to_string(), VarSource::Slot(1))];
        for text in ["speed * dt", "if throttle >= 0.98 { 1.0 } else { 0.0 }", "if speed > 5 { true } else { () }"] {
            assert!(rt.compile(text, &vars).unwrap().native.is_some(), "{text}");
        }
        for text in ["speed.abs()", "let x = speed; x", "speed % 2.0", "speed ** 2.0"] {
            assert!(rt.compile(text, &vars).unwrap().native.is_none(), "{text}");
        }
    }

    #[test]
    fn unknown_variables_and_eval_do_not_compile() {
        let rt = FormulaRuntime::new();
        assert!(rt.compile("sped * 2.0", &vars()).is_err());
        assert!(rt.compile("eval(\"1\")", &vars()).is_err());
    }

    #[test]
    fn infinite_loop_is_stopped_by_the_operation_limit_every_time() {
        let mut rt = FormulaRuntime::new();
        let f = rt.compile("let x = 0; loop { x += 1; } x", &vars()).unwrap();
        for _ in 0..3 {
            assert_eq!(rt.eval(&f, &[1.0], &[1.0], 0.0), Evaluated::Limit);
        }
    }
}

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

use rhai::packages::{
    ArithmeticPackage, BasicMathPackage, LogicPackage, Package,
};
use rhai::{Dynamic, Engine, EvalAltResult, OptimizationLevel, Scope, AST};

/// Operation budget per formula evaluation.
pub const MAX_OPERATIONS: u64 = 100_000;

/// Wall-clock backstop per evaluation. The operation budget is what stops a runaway formula,
/// deterministically; this only catches an operation that is itself pathologically slow.
pub const MAX_WALL_TIME: std::time::Duration = std::time::Duration::from_millis(250);

/// How often (in operations) the backstop looks at the clock. Its clock starts at the first
/// look, so the common evaluation of a few dozen operations reads no clock at all.
const CLOCK_EVERY: u64 = 4096;

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

/// A compiled formula and the variables it reads.
#[derive(Debug, Clone)]
pub struct Formula {
    ast: AST,
    vars: Vec<(String, VarSource)>,
    memo: std::cell::RefCell<Memo>,
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
    /// When the current evaluation passed its first [`CLOCK_EVERY`] operations (backstop).
    /// Shared with the progress callback, which rhai's `sync` build requires to be `Send + Sync`
    /// (engines run on the processor's worker threads); touched once per evaluation that misses
    /// the memo, so the lock is never contended.
    started: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
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
        let started = std::sync::Arc::new(std::sync::Mutex::new(None));
        let clock = started.clone();
        engine.on_progress(move |ops| {
            if ops % CLOCK_EVERY != 0 {
                return None;
            }
            let mut clock = clock.lock().unwrap_or_else(|e| e.into_inner());
            match *clock {
                None => {
                    *clock = Some(std::time::Instant::now());
                    None
                }
                Some(t) => (t.elapsed() > MAX_WALL_TIME).then_some(Dynamic::UNIT),
            }
        });
        FormulaRuntime { engine, scope: Scope::new(), started }
    }

    /// Compiles `text`, allowing exactly the variables in `available` (name → source).
    pub fn compile(&self, text: &str, available: &[(String, VarSource)]) -> Result<Formula, String> {
        let mut scope = Scope::new();
        for (name, _) in available {
            scope.push(name.as_str(), 0.0_f64);
        }
        let ast = self.engine.compile_with_scope(&scope, text).map_err(|e| e.to_string())?;
        let used = identifiers(text);
        let vars: Vec<(String, VarSource)> = available
            .iter()
            .filter(|(name, _)| used.iter().any(|u| u == name))
            .cloned()
            .collect();
        let memo = Memo { entries: if vars.len() <= MEMO_VARS { vec![None; MEMO_SLOTS] } else { Vec::new() } };
        Ok(Formula { ast, vars, memo: std::cell::RefCell::new(memo) })
    }

    /// Evaluates a formula. `slots` holds the current values (NaN = no value), `prev` the previous
    /// non-null values of the key, `dt` the formula's time step in seconds.
    pub fn eval(&mut self, formula: &Formula, slots: &[f64], prev: &[f64], dt: f64) -> Evaluated {
        let mut key = [0u64; MEMO_VARS];
        for (k, (_, source)) in formula.vars.iter().enumerate() {
            let value = match *source {
                VarSource::Slot(i) => slots[i],
                VarSource::Prev(i) => prev[i],
                VarSource::Dt => dt,
            };
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
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.scope.clear();
        for (name, source) in &formula.vars {
            let value = match *source {
                VarSource::Slot(i) => slots[i],
                VarSource::Prev(i) => prev[i],
                VarSource::Dt => dt,
            };
            self.scope.push(name.as_str(), value);
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
        vec![
            ("speed".into(), VarSource::Slot(0)),
            ("prev_speed".into(), VarSource::Prev(0)),
            ("dt".into(), VarSource::Dt),
        ]
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

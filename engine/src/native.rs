//! Formulas that are plain arithmetic and comparisons, evaluated without the rhai interpreter.
//!
//! Most manifest formulas are one expression over the event's values (`speed * dt`,
//! `if throttle >= 0.98 { 1.0 } else { 0.0 }`). Running them through rhai costs a scope, a
//! runtime state and a function dispatch per operator — a fifth of the processor's time per
//! event. rhai still parses and optimises every formula; this module only walks the resulting
//! AST and, when every node is one it knows, keeps a small tree to evaluate directly. Anything
//! else (calls, loops, `let`, strings, integer-only arithmetic) stays with rhai.
//!
//! The tree applies rhai's own semantics for what it accepts, including its
//! epsilon-relative float comparisons and its int-to-float promotion in mixed operations. A
//! property test (`formula::tests`) evaluates random formulas of this subset both ways and
//! requires the same outcome bit for bit.

use rhai::{Expr, FnCallExpr, Stmt, AST};

/// Value of a node: what rhai's `Dynamic` would hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value {
    Float(f64),
    Int(i64),
    Bool(bool),
    Unit,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Type {
    Float,
    Int,
    Bool,
    /// A conditional whose branches differ in type: only allowed as the result.
    Mixed,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Compare {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A formula compiled for direct evaluation.
#[derive(Debug, Clone)]
pub(crate) enum Native {
    Const(Value),
    /// The formula's `k`-th variable.
    Var(usize),
    Neg(Box<Native>),
    Not(Box<Native>),
    Arith(Arith, Box<Native>, Box<Native>),
    Compare(Compare, Box<Native>, Box<Native>),
    And(Vec<Native>),
    Or(Vec<Native>),
    If(Box<Native>, Box<Native>, Box<Native>),
}

impl Native {
    /// The direct form of `ast`, whose variables are `vars` (all floats), or `None` when the
    /// formula uses anything outside the subset.
    pub(crate) fn compile(ast: &AST, vars: &[&str]) -> Option<Native> {
        match ast.statements() {
            [stmt] => lower_stmt(stmt, vars).map(|(n, _)| n),
            _ => None,
        }
    }

    /// Evaluates with `vars[k]` as the value of variable `k`.
    pub(crate) fn eval(&self, vars: &[f64]) -> Value {
        match self {
            Native::Const(v) => *v,
            Native::Var(k) => Value::Float(vars[*k]),
            Native::Neg(x) => Value::Float(-float(x.eval(vars))),
            Native::Not(x) => Value::Bool(!boolean(x.eval(vars))),
            Native::Arith(op, a, b) => {
                let (x, y) = (float(a.eval(vars)), float(b.eval(vars)));
                Value::Float(match op {
                    Arith::Add => x + y,
                    Arith::Sub => x - y,
                    Arith::Mul => x * y,
                    Arith::Div => x / y,
                })
            }
            Native::Compare(op, a, b) => Value::Bool(compare(*op, float(a.eval(vars)), float(b.eval(vars)))),
            Native::And(xs) => Value::Bool(xs.iter().all(|x| boolean(x.eval(vars)))),
            Native::Or(xs) => Value::Bool(xs.iter().any(|x| boolean(x.eval(vars)))),
            Native::If(c, then, otherwise) => {
                if boolean(c.eval(vars)) {
                    then.eval(vars)
                } else {
                    otherwise.eval(vars)
                }
            }
        }
    }
}

/// A numeric operand (types are checked at compile time; ints promote as in rhai).
#[inline]
fn float(v: Value) -> f64 {
    match v {
        Value::Float(f) => f,
        Value::Int(i) => i as f64,
        Value::Bool(_) | Value::Unit => f64::NAN,
    }
}

#[inline]
fn boolean(v: Value) -> bool {
    matches!(v, Value::Bool(true))
}

/// rhai's float comparisons (checked build): relative to the larger magnitude, within
/// `f64::EPSILON` counts as equal.
#[inline]
fn compare(op: Compare, x: f64, y: f64) -> bool {
    let max = if x * y == 0.0 { 1.0 } else { x.abs().max(y.abs()) };
    if max == 0.0 {
        return matches!(op, Compare::Eq | Compare::Ge | Compare::Le);
    }
    match op {
        Compare::Eq => (x - y).abs() / max <= f64::EPSILON,
        Compare::Ne => (x - y).abs() / max > f64::EPSILON,
        Compare::Gt => (x - y) / max > f64::EPSILON,
        Compare::Ge => (x - y) / max > -f64::EPSILON,
        Compare::Lt => (y - x) / max > f64::EPSILON,
        Compare::Le => (y - x) / max > -f64::EPSILON,
    }
}

fn numeric(t: Type) -> bool {
    matches!(t, Type::Float | Type::Int)
}

fn lower_stmt(stmt: &Stmt, vars: &[&str]) -> Option<(Native, Type)> {
    match stmt {
        Stmt::Expr(e) => lower(e, vars),
        // A formula that is one operator expression parses as a call statement.
        Stmt::FnCall(call, _) if call.op_token.is_some() => lower_operator(call, vars),
        Stmt::If(flow, _) => {
            let (cond, Type::Bool) = lower(&flow.expr, vars)? else {
                return None;
            };
            let then = lower_block(flow.body.statements(), vars)?;
            let otherwise = lower_block(flow.branch.statements(), vars)?;
            let t = if then.1 == otherwise.1 { then.1 } else { Type::Mixed };
            Some((Native::If(Box::new(cond), Box::new(then.0), Box::new(otherwise.0)), t))
        }
        _ => None,
    }
}

/// A branch: one statement, or none (rhai's `()`).
fn lower_block(stmts: &[Stmt], vars: &[&str]) -> Option<(Native, Type)> {
    match stmts {
        [] => Some((Native::Const(Value::Unit), Type::Mixed)),
        [stmt] => lower_stmt(stmt, vars),
        _ => None,
    }
}

fn lower(e: &Expr, vars: &[&str]) -> Option<(Native, Type)> {
    match e {
        Expr::FloatConstant(f, _) => Some((Native::Const(Value::Float(**f)), Type::Float)),
        Expr::IntegerConstant(i, _) => Some((Native::Const(Value::Int(*i)), Type::Int)),
        Expr::BoolConstant(b, _) => Some((Native::Const(Value::Bool(*b)), Type::Bool)),
        Expr::Unit(_) => Some((Native::Const(Value::Unit), Type::Mixed)),
        Expr::Variable(v, _, _) => {
            let k = vars.iter().position(|name| *name == v.1.as_str())?;
            Some((Native::Var(k), Type::Float))
        }
        Expr::Stmt(block) => lower_block(block.statements(), vars),
        Expr::And(xs, _) | Expr::Or(xs, _) => {
            let mut parts = Vec::with_capacity(xs.len());
            for x in xs.iter() {
                let (n, Type::Bool) = lower(x, vars)? else {
                    return None;
                };
                parts.push(n);
            }
            Some((if matches!(e, Expr::And(..)) { Native::And(parts) } else { Native::Or(parts) }, Type::Bool))
        }
        Expr::FnCall(call, _) if call.op_token.is_some() => lower_operator(call, vars),
        _ => None,
    }
}

fn lower_operator(call: &FnCallExpr, vars: &[&str]) -> Option<(Native, Type)> {
    match call.args.as_slice() {
        [x] => {
            let (n, t) = lower(x, vars)?;
            match (call.name.as_str(), t) {
                ("-", Type::Float) => Some((Native::Neg(Box::new(n)), Type::Float)),
                ("!", Type::Bool) => Some((Native::Not(Box::new(n)), Type::Bool)),
                _ => None,
            }
        }
        [a, b] => {
            let (a, ta) = lower(a, vars)?;
            let (b, tb) = lower(b, vars)?;
            // Int with int is integer arithmetic in rhai (overflow checks, truncating
            // division): left to rhai. Mixed int and float promote to float.
            if !numeric(ta) || !numeric(tb) || (ta == Type::Int && tb == Type::Int) {
                return None;
            }
            let (a, b) = (Box::new(a), Box::new(b));
            let name = call.name.as_str();
            match (arith_op(name), compare_op(name)) {
                (Some(op), _) => Some((Native::Arith(op, a, b), Type::Float)),
                (_, Some(op)) => Some((Native::Compare(op, a, b), Type::Bool)),
                _ => None,
            }
        }
        _ => None,
    }
}

fn arith_op(name: &str) -> Option<Arith> {
    Some(match name {
        "+" => Arith::Add,
        "-" => Arith::Sub,
        "*" => Arith::Mul,
        "/" => Arith::Div,
        _ => return None,
    })
}

fn compare_op(name: &str) -> Option<Compare> {
    Some(match name {
        "==" => Compare::Eq,
        "!=" => Compare::Ne,
        ">" => Compare::Gt,
        ">=" => Compare::Ge,
        "<" => Compare::Lt,
        "<=" => Compare::Le,
        _ => return None,
    })
}

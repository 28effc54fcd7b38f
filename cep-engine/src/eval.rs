//! Evaluation of compiled expressions. Fields are read by slot; operators are
//! already typed by the compiler. A missing value (absent optional field, absent
//! binding, division by zero) makes every comparison that touches it false.

use crate::value::{Event, Value};
use rule_lang::program::{
    AggFunc, ArithOp, BindingId, CmpOp, Expr, FieldRef, Func, Kind, Lit, Src,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Which event of a binding.
#[derive(Clone, Copy)]
pub enum Which {
    First,
    Last,
}

/// What an expression can see.
pub trait EvalCtx {
    /// The event being tested (step predicate, negation, aggregate trigger).
    fn current(&self) -> Option<&Event>;
    /// An event of a binding.
    fn binding(&self, b: BindingId, which: Which) -> Option<&Event>;
    /// An aggregate over a binding.
    fn agg(
        &self,
        func: AggFunc,
        b: BindingId,
        field: Option<FieldRef>,
        kind: Kind,
        env: &Env,
    ) -> Value;
}

/// One reference list's entries. Immutable once built: a change builds a new
/// set, so every engine that holds the old one keeps a consistent view.
pub type List = Arc<HashSet<Arc<str>>>;

/// Named reference lists (`in list "name"`), replaceable at run time. An
/// engine holds the table behind an `Arc`: a node builds it once and hands the
/// same table to every shard engine (`Engine::set_lists`), so a list's
/// contents exist once per node process, not once per shard.
pub type Lists = HashMap<String, List>;

/// Shared read-only inputs of evaluation.
pub struct Env<'a> {
    pub type_names: &'a [Arc<str>],
    pub lists: &'a Lists,
    pub regexes: &'a HashMap<String, regex::Regex>,
}

impl Env<'_> {
    pub fn read(&self, ev: &Event, f: FieldRef) -> Value {
        match f {
            FieldRef::Slot(s) => ev.slot(s).clone(),
            FieldRef::Ts => Value::Time(ev.ts),
            FieldRef::Id => Value::Str(ev.id.clone()),
            FieldRef::Type => Value::Str(
                self.type_names
                    .get(ev.ty as usize)
                    .cloned()
                    .unwrap_or_else(|| Arc::from("")),
            ),
        }
    }
}

/// True only for `Bool(true)`.
#[inline]
pub fn eval_bool(e: &Expr, cx: &impl EvalCtx, env: &Env) -> bool {
    matches!(eval(e, cx, env), Value::Bool(true))
}

fn lit(l: &Lit) -> Value {
    match l {
        Lit::Str(s) => Value::Str(Arc::from(s.as_str())),
        Lit::Int(i) => Value::Int(*i),
        Lit::Float(f) => Value::Float(*f),
        Lit::Bool(b) => Value::Bool(*b),
    }
}

/// Evaluates an expression.
pub fn eval(e: &Expr, cx: &impl EvalCtx, env: &Env) -> Value {
    match e {
        Expr::Lit(l) => lit(l),
        Expr::Field { src, field } => {
            let ev = match src {
                Src::Current => cx.current(),
                Src::Binding(b) | Src::First(b) => cx.binding(*b, Which::First),
                Src::Last(b) => cx.binding(*b, Which::Last),
            };
            ev.map_or(Value::Missing, |ev| env.read(ev, *field))
        }
        Expr::Agg {
            func,
            binding,
            field,
            kind,
        } => cx.agg(*func, *binding, *field, *kind, env),
        Expr::Not(a) => match eval(a, cx, env) {
            Value::Bool(b) => Value::Bool(!b),
            _ => Value::Missing,
        },
        Expr::Neg(_, a) => match eval(a, cx, env) {
            Value::Int(i) => Value::Int(i.wrapping_neg()),
            Value::Float(f) => Value::Float(-f),
            _ => Value::Missing,
        },
        Expr::And(a, b) => Value::Bool(eval_bool(a, cx, env) && eval_bool(b, cx, env)),
        Expr::Or(a, b) => Value::Bool(eval_bool(a, cx, env) || eval_bool(b, cx, env)),
        // String literals are compared in place, not copied per evaluation.
        Expr::Cmp(op, Kind::Str, a, b) => Value::Bool(match (&**a, &**b) {
            (x, Expr::Lit(Lit::Str(lit))) => eval(x, cx, env)
                .as_str()
                .is_some_and(|v| holds(*op, v.cmp(lit.as_str()))),
            (Expr::Lit(Lit::Str(lit)), y) => eval(y, cx, env)
                .as_str()
                .is_some_and(|v| holds(*op, lit.as_str().cmp(v))),
            _ => compare(*op, Kind::Str, &eval(a, cx, env), &eval(b, cx, env)),
        }),
        Expr::Cmp(op, kind, a, b) => {
            Value::Bool(compare(*op, *kind, &eval(a, cx, env), &eval(b, cx, env)))
        }
        Expr::Arith(op, kind, a, b) => arith(*op, *kind, eval(a, cx, env), eval(b, cx, env)),
        Expr::ToFloat(a) => match eval(a, cx, env) {
            Value::Int(i) => Value::Float(i as f64),
            other => other,
        },
        Expr::InSet(kind, a, set) => {
            let v = eval(a, cx, env);
            if v.is_missing() {
                return Value::Bool(false);
            }
            Value::Bool(set.iter().any(|l| lit_eq(*kind, &v, l)))
        }
        Expr::InList(a, name) => {
            let v = eval(a, cx, env);
            let found = match (&v, env.lists.get(name)) {
                (Value::Str(s), Some(list)) => list.contains(s),
                (Value::Int(i), Some(list)) => list.contains(i.to_string().as_str()),
                _ => false,
            };
            Value::Bool(found)
        }
        Expr::Regex(a, pat) => match (eval(a, cx, env), env.regexes.get(pat)) {
            (Value::Str(s), Some(re)) => Value::Bool(re.is_match(&s)),
            _ => Value::Bool(false),
        },
        Expr::Call(f, args) => call(*f, args, cx, env),
    }
}

/// Compares two values of the given kind; false when either is missing.
#[inline]
pub fn compare(op: CmpOp, kind: Kind, a: &Value, b: &Value) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match kind {
        Kind::Int => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => None,
        },
        Kind::Float => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            _ => None,
        },
        Kind::Str => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => Some(x.cmp(y)),
            _ => None,
        },
        Kind::Bool => match (a.as_bool(), b.as_bool()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => None,
        },
    };
    ord.is_some_and(|o| holds(op, o))
}

/// Does `op` hold for operands ordered `o`?
#[inline]
fn holds(op: CmpOp, o: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering;
    match op {
        CmpOp::Eq => o == Ordering::Equal,
        CmpOp::Ne => o != Ordering::Equal,
        CmpOp::Lt => o == Ordering::Less,
        CmpOp::Le => o != Ordering::Greater,
        CmpOp::Gt => o == Ordering::Greater,
        CmpOp::Ge => o != Ordering::Less,
    }
}

/// `v == l` for an `in [...]` item of the checked kind, without building a value.
fn lit_eq(kind: Kind, v: &Value, l: &Lit) -> bool {
    match (kind, l) {
        (Kind::Str, Lit::Str(s)) => v.as_str() == Some(s.as_str()),
        (Kind::Int, Lit::Int(i)) => v.as_i64() == Some(*i),
        (Kind::Float, Lit::Float(f)) => v.as_f64() == Some(*f),
        (Kind::Float, Lit::Int(i)) => v.as_f64() == Some(*i as f64),
        (Kind::Bool, Lit::Bool(b)) => v.as_bool() == Some(*b),
        _ => false,
    }
}

fn arith(op: ArithOp, kind: Kind, a: Value, b: Value) -> Value {
    match kind {
        Kind::Float => {
            let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
                return Value::Missing;
            };
            let r = match op {
                ArithOp::Add => x + y,
                ArithOp::Sub => x - y,
                ArithOp::Mul => x * y,
                ArithOp::Div if y == 0.0 => return Value::Missing,
                ArithOp::Div => x / y,
                ArithOp::Rem if y == 0.0 => return Value::Missing,
                ArithOp::Rem => x % y,
            };
            Value::Float(r)
        }
        _ => {
            let time = match (&a, &b, op) {
                (Value::Time(_), Value::Time(_), ArithOp::Sub) => false,
                (Value::Time(_), _, _) | (_, Value::Time(_), _) => true,
                _ => false,
            };
            let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) else {
                return Value::Missing;
            };
            let r = match op {
                ArithOp::Add => x.checked_add(y),
                ArithOp::Sub => x.checked_sub(y),
                ArithOp::Mul => x.checked_mul(y),
                ArithOp::Div => x.checked_div(y),
                ArithOp::Rem => x.checked_rem(y),
            };
            match r {
                Some(r) if time => Value::Time(r),
                Some(r) => Value::Int(r),
                None => Value::Missing,
            }
        }
    }
}

fn call(f: Func, args: &[Expr], cx: &impl EvalCtx, env: &Env) -> Value {
    let arg = |i: usize| args.get(i).map_or(Value::Missing, |a| eval(a, cx, env));
    match f {
        Func::Abs => match arg(0) {
            Value::Int(i) => Value::Int(i.wrapping_abs()),
            Value::Float(x) => Value::Float(x.abs()),
            _ => Value::Missing,
        },
        Func::Lower => match arg(0) {
            Value::Str(s) => Value::Str(Arc::from(s.to_lowercase())),
            _ => Value::Missing,
        },
        Func::Upper => match arg(0) {
            Value::Str(s) => Value::Str(Arc::from(s.to_uppercase())),
            _ => Value::Missing,
        },
        Func::Len => match arg(0) {
            Value::Str(s) => Value::Int(s.chars().count() as i64),
            _ => Value::Missing,
        },
        Func::Contains => match (arg(0), arg(1)) {
            (Value::Str(s), Value::Str(t)) => Value::Bool(s.contains(&*t)),
            _ => Value::Missing,
        },
        Func::StartsWith => match (arg(0), arg(1)) {
            (Value::Str(s), Value::Str(t)) => Value::Bool(s.starts_with(&*t)),
            _ => Value::Missing,
        },
        Func::Hour => match arg(0) {
            Value::Time(t) | Value::Int(t) => Value::Int(crate::time::hour_of(t)),
            _ => Value::Missing,
        },
        Func::GeoKm => {
            let v: Vec<Option<f64>> = (0..4).map(|i| arg(i).as_f64()).collect();
            match v[..] {
                [Some(a), Some(b), Some(c), Some(d)] => Value::Float(haversine_km(a, b, c, d)),
                _ => Value::Missing,
            }
        }
    }
}

/// Great-circle distance in km (haversine, mean Earth radius 6371.0088 km).
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0088 * a.sqrt().asin()
}

/// Aggregates over a list of events (pattern bindings are short lists).
pub fn aggregate<'e>(
    func: AggFunc,
    field: Option<FieldRef>,
    kind: Kind,
    events: impl Iterator<Item = &'e Event>,
    env: &Env,
) -> Value {
    match func {
        AggFunc::Count => Value::Int(events.count() as i64),
        AggFunc::Sum | AggFunc::Avg => {
            let Some(f) = field else {
                return Value::Missing;
            };
            let (mut n, mut si, mut sf) = (0i64, 0i64, 0f64);
            for e in events {
                match env.read(e, f) {
                    Value::Int(i) => {
                        si = si.wrapping_add(i);
                        sf += i as f64;
                        n += 1;
                    }
                    Value::Float(x) => {
                        sf += x;
                        n += 1;
                    }
                    _ => {}
                }
            }
            match func {
                AggFunc::Avg if n == 0 => Value::Missing,
                AggFunc::Avg => Value::Float(sf / n as f64),
                _ if kind == Kind::Int => Value::Int(si),
                _ => Value::Float(sf),
            }
        }
        AggFunc::Min | AggFunc::Max => {
            let Some(f) = field else {
                return Value::Missing;
            };
            let want = if func == AggFunc::Min {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            };
            let mut best = Value::Missing;
            for e in events {
                let v = env.read(e, f);
                if v.is_missing() {
                    continue;
                }
                if best.is_missing() || order(&v, &best) == Some(want) {
                    best = v;
                }
            }
            best
        }
        AggFunc::DistinctCount => {
            let Some(f) = field else {
                return Value::Missing;
            };
            let mut seen: Vec<Value> = vec![];
            for e in events {
                let v = env.read(e, f);
                if !v.is_missing() && !seen.contains(&v) {
                    seen.push(v);
                }
            }
            Value::Int(seen.len() as i64)
        }
    }
}

/// Order of two values for min/max: strings by bytes, numbers and times by value.
pub(crate) fn order(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

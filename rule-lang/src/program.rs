//! The compiled form of a rule set: plain, immutable, serialisable data that the
//! engine runs and the gateway ships to nodes. Names are resolved to indices
//! (type ids, field slots, binding ids) and operators carry their operand types, so
//! the engine never looks anything up by string while matching.
//!
//! A pattern compiles to an NFA over *points*. Point 0 is "nothing matched yet";
//! point `s + 1` is "just consumed an event into step `s`". From each point a
//! [`Choice`] tree lists where the next event may go, in priority order
//! (`First`) or all at once (`Fork`, for alternation branches). Each [`Edge`]
//! carries counter operations (quantifier bookkeeping), the negations that are
//! active while waiting on it, and whether it is strict (`->>`).

use crate::ast::AfterMatch;
use serde::{Deserialize, Serialize};
use std::fmt::{self, Write as _};

/// Index of an event type in [`RuleSet::schemas`].
pub type TypeId = u16;
/// Index of a binding in [`Pattern::bindings`].
pub type BindingId = u16;
/// Index of a step in [`Pattern::steps`].
pub type StepId = u16;
/// Index of a quantifier counter of a run.
pub type CounterId = u16;

/// A value type of the language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Type {
    String,
    Int,
    Float,
    Bool,
    Time,
    Duration,
}

impl Type {
    pub fn name(self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Int => "int",
            Type::Float => "float",
            Type::Bool => "bool",
            Type::Time => "time",
            Type::Duration => "duration",
        }
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, Type::Int | Type::Float)
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A declared event type. A field's slot is its index in `fields`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    pub name: String,
    pub fields: Vec<FieldDef>,
}

impl Schema {
    /// The slot of a declared field.
    pub fn slot(&self, name: &str) -> Option<u16> {
        self.fields
            .iter()
            .position(|f| f.name == name)
            .map(|i| i as u16)
    }
}

/// A declared field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldDef {
    pub name: String,
    pub ty: Type,
    pub optional: bool,
}

/// A whole compiled rule set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleSet {
    pub schemas: Vec<Schema>,
    pub rules: Vec<Rule>,
}

impl RuleSet {
    pub fn schema_id(&self, name: &str) -> Option<TypeId> {
        self.schemas
            .iter()
            .position(|s| s.name == name)
            .map(|i| i as TypeId)
    }

    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// Alert severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s {
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    pub description: String,
    pub severity: Severity,
    pub tags: Vec<String>,
    /// The partition key field name; `None` for a global rule.
    pub key: Option<String>,
    /// Per type used by the rule: the key's slot in that type (`None` entries for
    /// types the rule does not use). Indexed by [`TypeId`].
    pub key_slots: Vec<Option<u16>>,
    /// Event types this rule reads (steps, negations, aggregate).
    pub types: Vec<TypeId>,
    pub kind: RuleKind,
    pub emit: Vec<(String, Expr)>,
    /// Milliseconds; 0 = no suppression.
    pub suppress_ms: i64,
    /// Hash of the rule's source text, so a changed rule is recognised.
    pub source_hash: String,
}

/// Pattern or aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RuleKind {
    Pattern(Pattern),
    Aggregate(Aggregate),
}

/// A compiled pattern rule: an NFA over points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pattern {
    pub steps: Vec<Step>,
    pub bindings: Vec<Binding>,
    pub negations: Vec<Negation>,
    /// `points[0]` is the start; `points[s + 1]` follows step `s`.
    pub points: Vec<Point>,
    /// Number of counters a run holds.
    pub counters: u16,
    pub within_ms: i64,
    pub where_: Option<Expr>,
    pub after_match: AfterMatch,
    /// True when the pattern ends in a negation (an absence rule).
    pub absence: bool,
}

/// A consuming step: `name: Type[pred]{min,max}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub binding: Option<BindingId>,
    pub ty: TypeId,
    pub pred: Option<Expr>,
    pub min: u32,
    /// `u32::MAX` = unbounded.
    pub max: u32,
    pub counter: CounterId,
}

/// A named step's binding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    pub name: String,
    pub step: StepId,
    pub ty: TypeId,
    /// May hold several events (quantified step or step inside a repeated group).
    pub quantified: bool,
    /// May hold no event in a match (optional step, alternation branch).
    pub optional: bool,
}

/// `not Type[pred]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Negation {
    pub ty: TypeId,
    pub pred: Option<Expr>,
}

/// What may happen after a run reached this point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Where the next event may take the run.
    pub exits: Choice,
    /// The step that may take another repetition here (quantified steps).
    pub repeat: Option<StepId>,
}

/// A tree of alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Choice {
    Edge(Edge),
    /// The first child that accepts the event wins (reluctant quantifiers).
    First(Vec<Choice>),
    /// Every child that accepts the event forks the run (alternation).
    Fork(Vec<Choice>),
}

/// One way forward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    /// Counter operations, applied and checked in order; a failed check closes the edge.
    pub ops: Vec<CounterOp>,
    /// Negations in force while the run waits on this edge.
    pub negations: Vec<u16>,
    /// `->>`: a relevant event that takes no edge kills the run.
    pub strict: bool,
    pub target: Target,
}

/// Quantifier bookkeeping on an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterOp {
    /// Add one (a group iteration finished).
    Inc(CounterId),
    /// Set to zero (a group is entered).
    Reset(CounterId),
    /// Passes if the counter is at least n.
    AtLeast(CounterId, u32),
    /// Passes if the counter is below n.
    Below(CounterId, u32),
}

/// Where an edge leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// Consume the event as the first repetition of a step.
    Step(StepId),
    /// The match is complete (checked right after a consumption).
    Accept,
    /// The match completes when the window closes with no negated event.
    Absence,
}

/// A compiled aggregate rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    pub binding: String,
    pub ty: TypeId,
    pub pred: Option<Expr>,
    pub over_ms: i64,
    pub having: Expr,
    /// Fields whose aggregates the window must maintain, with what it needs.
    pub tracked: Vec<TrackedField>,
}

/// A field of the aggregate window that expressions aggregate over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackedField {
    pub field: FieldRef,
    pub ty: Type,
    pub sum: bool,
    pub min: bool,
    pub max: bool,
    pub distinct: bool,
}

/// A literal value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Lit {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// Which field of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FieldRef {
    /// A declared field.
    Slot(u16),
    /// The implicit `ts` (time).
    Ts,
    /// The implicit `id` (string).
    Id,
    /// The implicit `type` (string).
    Type,
}

/// Which event an expression reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Src {
    /// The event being tested (a step's own predicate; an aggregate's trigger).
    Current,
    /// The event of a single-event binding.
    Binding(BindingId),
    /// `first(x)`
    First(BindingId),
    /// `last(x)`
    Last(BindingId),
}

/// Aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggFunc {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    DistinctCount,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Operand kind of a typed operator: time and duration are integers of ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Int,
    Float,
    Str,
    Bool,
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// Built-in scalar functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Func {
    Abs,
    Lower,
    Upper,
    Len,
    Contains,
    StartsWith,
    Hour,
    GeoKm,
}

impl Func {
    /// The function's name as written in rules.
    pub fn name(self) -> &'static str {
        match self {
            Func::Abs => "abs",
            Func::Lower => "lower",
            Func::Upper => "upper",
            Func::Len => "len",
            Func::Contains => "contains",
            Func::StartsWith => "starts_with",
            Func::Hour => "hour",
            Func::GeoKm => "geo_km",
        }
    }
}

/// A typed, resolved expression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    Lit(Lit),
    Field {
        src: Src,
        field: FieldRef,
    },
    /// An aggregate over a quantified binding (pattern) or the window (aggregate rule).
    Agg {
        func: AggFunc,
        binding: BindingId,
        field: Option<FieldRef>,
        kind: Kind,
    },
    Not(Box<Expr>),
    Neg(Kind, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Kind, Box<Expr>, Box<Expr>),
    Arith(ArithOp, Kind, Box<Expr>, Box<Expr>),
    /// int → float widening.
    ToFloat(Box<Expr>),
    InSet(Kind, Box<Expr>, Vec<Lit>),
    InList(Box<Expr>, String),
    /// Unanchored regex search; the pattern was validated at compile time.
    Regex(Box<Expr>, String),
    Call(Func, Vec<Expr>),
}

// ---------------------------------------------------------------------------
// Outline: what an alert's explanation needs to know about its rule.

/// One binding of a rule, for explaining a match.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BindingOutline {
    pub name: String,
    /// Event type name.
    pub ty: String,
    /// The step's predicate in source-like syntax (`$` is the event tested).
    pub predicate: Option<String>,
    /// Fields of this binding's events that any expression of the rule reads
    /// (its predicate, later steps' predicates, `where`, `emit`, `having`).
    pub fields: Vec<String>,
}

/// What a rule checks, per binding, and over which time span.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleOutline {
    /// `within` of a pattern, `over` of an aggregate.
    pub within_ms: Option<i64>,
    pub bindings: Vec<BindingOutline>,
    pub where_: Option<String>,
    pub having: Option<String>,
    /// `emit` name → expression text.
    pub emit: Vec<(String, String)>,
}

impl RuleSet {
    /// The outline of one rule (the alert explanation's view of it).
    pub fn outline(&self, rule: &Rule) -> RuleOutline {
        let type_name = |ty: TypeId| {
            self.schemas
                .get(ty as usize)
                .map(|s| s.name.clone())
                .unwrap_or_default()
        };
        match &rule.kind {
            RuleKind::Pattern(p) => {
                let names = Names {
                    set: self,
                    pattern: Some(p),
                    agg: None,
                    cur: Default::default(),
                    plain: true,
                };
                let mut used: Vec<std::collections::BTreeSet<String>> =
                    vec![Default::default(); p.bindings.len()];
                let mut note = |owner: Option<BindingId>, e: &Expr| {
                    visit_fields(e, &mut |src, f| {
                        let b = match src {
                            Src::Current => owner,
                            Src::Binding(b) | Src::First(b) | Src::Last(b) => Some(b),
                        };
                        if let Some(b) = b
                            && let Some(set) = used.get_mut(b as usize)
                        {
                            set.insert(names.field(p.bindings[b as usize].ty, f));
                        }
                    });
                };
                for s in &p.steps {
                    if let Some(e) = &s.pred {
                        note(s.binding, e);
                    }
                }
                for e in p.where_.iter().chain(rule.emit.iter().map(|(_, e)| e)) {
                    note(None, e);
                }
                let bindings = p
                    .bindings
                    .iter()
                    .zip(used)
                    .map(|(b, fields)| {
                        let pred = p.steps.get(b.step as usize).and_then(|s| s.pred.as_ref());
                        names.cur.set(b.ty);
                        BindingOutline {
                            name: b.name.clone(),
                            ty: type_name(b.ty),
                            predicate: pred.map(|e| names.expr(e)),
                            fields: fields.into_iter().collect(),
                        }
                    })
                    .collect();
                RuleOutline {
                    within_ms: Some(p.within_ms),
                    bindings,
                    where_: p.where_.as_ref().map(|e| names.expr(e)),
                    having: None,
                    emit: rule
                        .emit
                        .iter()
                        .map(|(n, e)| (n.clone(), names.expr(e)))
                        .collect(),
                }
            }
            RuleKind::Aggregate(a) => {
                let names = Names {
                    set: self,
                    pattern: None,
                    agg: Some(a),
                    cur: std::cell::Cell::new(a.ty),
                    plain: true,
                };
                let mut fields = std::collections::BTreeSet::new();
                for e in a
                    .pred
                    .iter()
                    .chain(std::iter::once(&a.having))
                    .chain(rule.emit.iter().map(|(_, e)| e))
                {
                    visit_fields(e, &mut |_, f| {
                        fields.insert(names.field(a.ty, f));
                    });
                }
                RuleOutline {
                    within_ms: Some(a.over_ms),
                    bindings: vec![BindingOutline {
                        name: a.binding.clone(),
                        ty: type_name(a.ty),
                        predicate: a.pred.as_ref().map(|e| names.expr(e)),
                        fields: fields.into_iter().collect(),
                    }],
                    where_: None,
                    having: Some(names.expr(&a.having)),
                    emit: rule
                        .emit
                        .iter()
                        .map(|(n, e)| (n.clone(), names.expr(e)))
                        .collect(),
                }
            }
        }
    }
}

/// Calls `f` with every field an expression reads (aggregates over a
/// binding's field count as reading that binding's field).
fn visit_fields(e: &Expr, f: &mut impl FnMut(Src, FieldRef)) {
    match e {
        Expr::Lit(_) => {}
        Expr::Field { src, field } => f(*src, *field),
        Expr::Agg { binding, field, .. } => {
            if let Some(fr) = field {
                f(Src::Binding(*binding), *fr);
            }
        }
        Expr::Not(a) | Expr::Neg(_, a) | Expr::ToFloat(a) => visit_fields(a, f),
        Expr::InSet(_, a, _) | Expr::InList(a, _) | Expr::Regex(a, _) => visit_fields(a, f),
        Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, _, a, b) | Expr::Arith(_, _, a, b) => {
            visit_fields(a, f);
            visit_fields(b, f);
        }
        Expr::Call(_, args) => {
            for a in args {
                visit_fields(a, f);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Readable dump: one point per line, expressions in source-like syntax.

impl RuleSet {
    /// The text dump of one rule (used by `vigil-replay explain` and snapshot tests).
    pub fn dump_rule(&self, rule: &Rule) -> String {
        let mut out = String::new();
        let _ = self.write_rule(rule, &mut out);
        out
    }

    fn write_rule(&self, rule: &Rule, out: &mut String) -> fmt::Result {
        writeln!(
            out,
            "rule {} (severity {})",
            rule.name,
            rule.severity.as_str()
        )?;
        match &rule.key {
            Some(k) => writeln!(out, "  key {k}")?,
            None => writeln!(out, "  key (global)")?,
        }
        if rule.suppress_ms > 0 {
            writeln!(out, "  suppress {}", fmt_ms(rule.suppress_ms))?;
        }
        match &rule.kind {
            RuleKind::Pattern(p) => {
                let names = Names {
                    set: self,
                    pattern: Some(p),
                    agg: None,
                    cur: Default::default(),
                    plain: false,
                };
                writeln!(out, "  within {}", fmt_ms(p.within_ms))?;
                writeln!(out, "  after match {:?}", p.after_match)?;
                for (i, s) in p.steps.iter().enumerate() {
                    let b = s
                        .binding
                        .map(|b| format!("{}: ", p.bindings[b as usize].name))
                        .unwrap_or_default();
                    let max = if s.max == u32::MAX {
                        "inf".to_string()
                    } else {
                        s.max.to_string()
                    };
                    write!(
                        out,
                        "  step {i}: {b}{}{{{},{max}}} c{}",
                        self.schemas[s.ty as usize].name, s.min, s.counter
                    )?;
                    if let Some(e) = &s.pred {
                        names.cur.set(s.ty);
                        write!(out, " [{}]", names.expr(e))?;
                    }
                    writeln!(out)?;
                }
                for (i, n) in p.negations.iter().enumerate() {
                    write!(out, "  neg {i}: not {}", self.schemas[n.ty as usize].name)?;
                    if let Some(e) = &n.pred {
                        names.cur.set(n.ty);
                        write!(out, " [{}]", names.expr(e))?;
                    }
                    writeln!(out)?;
                }
                for (i, pt) in p.points.iter().enumerate() {
                    let label = if i == 0 {
                        "start".to_string()
                    } else {
                        format!("after {}", i - 1)
                    };
                    write!(out, "  @{label}: ")?;
                    write_choice(&pt.exits, out)?;
                    if let Some(r) = pt.repeat {
                        write!(out, " | else repeat {r}")?;
                    }
                    writeln!(out)?;
                }
                if let Some(w) = &p.where_ {
                    writeln!(out, "  where {}", names.expr(w))?;
                }
                if !rule.emit.is_empty() {
                    writeln!(out, "  emit")?;
                    for (n, e) in &rule.emit {
                        writeln!(out, "    {n} = {}", names.expr(e))?;
                    }
                }
            }
            RuleKind::Aggregate(a) => {
                let names = Names {
                    set: self,
                    pattern: None,
                    agg: Some(a),
                    cur: std::cell::Cell::new(a.ty),
                    plain: false,
                };
                write!(
                    out,
                    "  aggregate {}: {}",
                    a.binding, self.schemas[a.ty as usize].name
                )?;
                if let Some(e) = &a.pred {
                    write!(out, " [{}]", names.expr(e))?;
                }
                writeln!(out, " over {}", fmt_ms(a.over_ms))?;
                writeln!(out, "  having {}", names.expr(&a.having))?;
                for t in &a.tracked {
                    writeln!(
                        out,
                        "  track {} sum={} min={} max={} distinct={}",
                        names.field(a.ty, t.field),
                        t.sum,
                        t.min,
                        t.max,
                        t.distinct
                    )?;
                }
                if !rule.emit.is_empty() {
                    writeln!(out, "  emit")?;
                    for (n, e) in &rule.emit {
                        writeln!(out, "    {n} = {}", names.expr(e))?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// `600000` → `10m`.
pub fn fmt_ms(ms: i64) -> String {
    for (unit, n) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms % n == 0 {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

fn write_choice(c: &Choice, out: &mut String) -> fmt::Result {
    match c {
        Choice::Edge(e) => {
            for op in &e.ops {
                match op {
                    CounterOp::Inc(c) => write!(out, "c{c}+=1; ")?,
                    CounterOp::Reset(c) => write!(out, "c{c}=0; ")?,
                    CounterOp::AtLeast(c, n) => write!(out, "c{c}>={n}? ")?,
                    CounterOp::Below(c, n) => write!(out, "c{c}<{n}? ")?,
                }
            }
            for n in &e.negations {
                write!(out, "!neg{n} ")?;
            }
            if e.strict {
                write!(out, "strict ")?;
            }
            match e.target {
                Target::Step(s) => write!(out, "=> step {s}"),
                Target::Accept => write!(out, "=> accept"),
                Target::Absence => write!(out, "=> absence"),
            }
        }
        Choice::First(cs) | Choice::Fork(cs) => {
            let (open, sep) = if matches!(c, Choice::First(_)) {
                ("first(", " ; ")
            } else {
                ("fork(", " & ")
            };
            out.push_str(open);
            for (i, c) in cs.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                write_choice(c, out)?;
            }
            out.push(')');
            Ok(())
        }
    }
}

struct Names<'a> {
    set: &'a RuleSet,
    pattern: Option<&'a Pattern>,
    agg: Option<&'a Aggregate>,
    /// The type of `$` (the event being tested) in the expression being printed.
    cur: std::cell::Cell<TypeId>,
    /// Source-like text for people: no `:kind` marks on operators.
    plain: bool,
}

impl Names<'_> {
    fn binding(&self, b: BindingId) -> String {
        match (self.pattern, self.agg) {
            (Some(p), _) => p
                .bindings
                .get(b as usize)
                .map(|b| b.name.clone())
                .unwrap_or_default(),
            (None, Some(a)) => a.binding.clone(),
            _ => String::new(),
        }
    }

    fn binding_ty(&self, b: BindingId) -> TypeId {
        match (self.pattern, self.agg) {
            (Some(p), _) => p.bindings.get(b as usize).map_or(0, |b| b.ty),
            (None, Some(a)) => a.ty,
            _ => 0,
        }
    }

    fn field(&self, ty: TypeId, f: FieldRef) -> String {
        match f {
            FieldRef::Slot(s) => self
                .set
                .schemas
                .get(ty as usize)
                .and_then(|sc| sc.fields.get(s as usize))
                .map(|f| f.name.clone())
                .unwrap_or_else(|| format!("#{s}")),
            FieldRef::Ts => "ts".into(),
            FieldRef::Id => "id".into(),
            FieldRef::Type => "type".into(),
        }
    }

    fn expr(&self, e: &Expr) -> String {
        match e {
            Expr::Lit(l) => lit(l),
            Expr::Field { src, field } => match src {
                Src::Current => format!("$.{}", self.field_any(*field)),
                Src::Binding(b) => format!(
                    "{}.{}",
                    self.binding(*b),
                    self.field(self.binding_ty(*b), *field)
                ),
                Src::First(b) => format!(
                    "first({}).{}",
                    self.binding(*b),
                    self.field(self.binding_ty(*b), *field)
                ),
                Src::Last(b) => format!(
                    "last({}).{}",
                    self.binding(*b),
                    self.field(self.binding_ty(*b), *field)
                ),
            },
            Expr::Agg {
                func,
                binding,
                field,
                ..
            } => {
                let f = match func {
                    AggFunc::Count => "count",
                    AggFunc::Sum => "sum",
                    AggFunc::Avg => "avg",
                    AggFunc::Min => "min",
                    AggFunc::Max => "max",
                    AggFunc::DistinctCount => "distinct_count",
                };
                match field {
                    Some(fr) => format!(
                        "{f}({}.{})",
                        self.binding(*binding),
                        self.field(self.binding_ty(*binding), *fr)
                    ),
                    None => format!("{f}({})", self.binding(*binding)),
                }
            }
            Expr::Not(e) => format!("not ({})", self.expr(e)),
            Expr::Neg(_, e) => format!("-({})", self.expr(e)),
            Expr::And(a, b) => format!("({} and {})", self.expr(a), self.expr(b)),
            Expr::Or(a, b) => format!("({} or {})", self.expr(a), self.expr(b)),
            Expr::Cmp(op, k, a, b) => {
                let s = match op {
                    CmpOp::Eq => "==",
                    CmpOp::Ne => "!=",
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                    CmpOp::Gt => ">",
                    CmpOp::Ge => ">=",
                };
                if self.plain {
                    format!("{} {s} {}", self.expr(a), self.expr(b))
                } else {
                    format!("{} {s}:{} {}", self.expr(a), kind(*k), self.expr(b))
                }
            }
            Expr::Arith(op, k, a, b) => {
                let s = match op {
                    ArithOp::Add => "+",
                    ArithOp::Sub => "-",
                    ArithOp::Mul => "*",
                    ArithOp::Div => "/",
                    ArithOp::Rem => "%",
                };
                if self.plain {
                    format!("({} {s} {})", self.expr(a), self.expr(b))
                } else {
                    format!("({} {s}:{} {})", self.expr(a), kind(*k), self.expr(b))
                }
            }
            Expr::ToFloat(e) if self.plain => self.expr(e),
            Expr::ToFloat(e) => format!("float({})", self.expr(e)),
            Expr::InSet(_, e, set) => format!(
                "{} in [{}]",
                self.expr(e),
                set.iter().map(lit).collect::<Vec<_>>().join(", ")
            ),
            Expr::InList(e, l) => format!("{} in list {l:?}", self.expr(e)),
            Expr::Regex(e, r) => format!("{} =~ {r:?}", self.expr(e)),
            Expr::Call(f, args) => format!(
                "{}({})",
                f.name(),
                args.iter()
                    .map(|a| self.expr(a))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    fn field_any(&self, f: FieldRef) -> String {
        self.field(self.cur.get(), f)
    }
}

fn kind(k: Kind) -> &'static str {
    match k {
        Kind::Int => "i",
        Kind::Float => "f",
        Kind::Str => "s",
        Kind::Bool => "b",
    }
}

fn lit(l: &Lit) -> String {
    match l {
        Lit::Str(s) => format!("{s:?}"),
        Lit::Int(i) => i.to_string(),
        Lit::Float(f) => format!("{f:?}"),
        Lit::Bool(b) => b.to_string(),
    }
}

//! The spanned syntax tree produced by [`crate::parse`]. Nothing here is checked
//! yet: names may be unknown and types may not fit. [`crate::check`] does that.

use crate::diag::Span;
use serde::Serialize;

/// A name with the place it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// One parsed `.vgl` file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct File {
    pub events: Vec<EventDecl>,
    pub rules: Vec<RuleDecl>,
}

/// `event Name { field: type, ... }`
#[derive(Debug, Clone, Serialize)]
pub struct EventDecl {
    pub name: Ident,
    pub fields: Vec<FieldDecl>,
    pub span: Span,
}

/// `name: type` or `name: type?`.
#[derive(Debug, Clone, Serialize)]
pub struct FieldDecl {
    pub name: Ident,
    pub ty: Ident,
    pub optional: bool,
}

/// A rule and its clauses, each at most once.
#[derive(Debug, Clone, Serialize)]
pub struct RuleDecl {
    pub name: Ident,
    pub span: Span,
    pub clauses: Vec<Clause>,
}

/// A literal duration as written (`10m`), checked by the checker.
#[derive(Debug, Clone, Serialize)]
pub struct DurationLit {
    pub text: String,
    pub span: Span,
}

/// A rule clause.
#[derive(Debug, Clone, Serialize)]
pub enum Clause {
    Description(String, Span),
    Severity(Ident),
    Tags(Vec<String>, Span),
    Key(Ident),
    Pattern(Seq, Span),
    Within(DurationLit),
    Where(Expr),
    Aggregate {
        binding: Ident,
        ty: Ident,
        predicate: Option<Expr>,
        over: DurationLit,
        span: Span,
    },
    Having(Expr),
    Emit(Vec<(Ident, Expr)>, Span),
    Suppress(DurationLit),
    AfterMatch(AfterMatch, Span),
}

impl Clause {
    /// The clause keyword, for "duplicate clause" messages.
    pub fn keyword(&self) -> &'static str {
        match self {
            Clause::Description(..) => "description",
            Clause::Severity(..) => "severity",
            Clause::Tags(..) => "tags",
            Clause::Key(..) => "key",
            Clause::Pattern(..) => "pattern",
            Clause::Within(..) => "within",
            Clause::Where(..) => "where",
            Clause::Aggregate { .. } => "aggregate",
            Clause::Having(..) => "having",
            Clause::Emit(..) => "emit",
            Clause::Suppress(..) => "suppress",
            Clause::AfterMatch(..) => "after match",
        }
    }

    /// Where the clause was written.
    pub fn span(&self) -> Span {
        match self {
            Clause::Description(_, s)
            | Clause::Tags(_, s)
            | Clause::Pattern(_, s)
            | Clause::Emit(_, s)
            | Clause::AfterMatch(_, s)
            | Clause::Aggregate { span: s, .. } => *s,
            Clause::Severity(i) | Clause::Key(i) => i.span,
            Clause::Within(d) | Clause::Suppress(d) => d.span,
            Clause::Where(e) | Clause::Having(e) => e.span,
        }
    }
}

/// What happens to other runs when a match completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AfterMatch {
    /// Discard every run that started at or before the match's last event (default).
    #[default]
    SkipPastLast,
    /// Discard only runs that started at the match's first event.
    SkipToNext,
    /// Keep every other run.
    NoSkip,
}

/// `->` or `->>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Connector {
    Relaxed,
    Strict,
}

/// Steps joined by connectors: `steps[i]` is preceded by `connectors[i - 1]`.
#[derive(Debug, Clone, Serialize)]
pub struct Seq {
    pub steps: Vec<Step>,
    pub connectors: Vec<Connector>,
    pub span: Span,
}

/// A step of a sequence.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub negated: bool,
    pub atom: Atom,
    pub quant: Option<Quant>,
    pub span: Span,
}

/// An event step or a group.
#[derive(Debug, Clone, Serialize)]
pub enum Atom {
    Event {
        binding: Option<Ident>,
        ty: Ident,
        predicate: Option<Expr>,
    },
    /// `(a | b | ...)`: one branch is a plain group.
    Group(Vec<Seq>),
}

/// `{min, max}`; `max == None` is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quant {
    pub min: u32,
    pub max: Option<u32>,
    pub span: Span,
}

/// An expression.
#[derive(Debug, Clone, Serialize)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

/// Unary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UnOp {
    Not,
    Neg,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Match,
}

impl BinOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Match => "=~",
        }
    }
}

/// Expression forms.
#[derive(Debug, Clone, Serialize)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    /// Milliseconds.
    Duration(i64),
    /// A bare name: a field of the candidate event, or a binding.
    Name(Ident),
    /// `base.field`
    Field(Box<Expr>, Ident),
    Call(Ident, Vec<Expr>),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    InSet(Box<Expr>, Vec<Expr>),
    InList(Box<Expr>, String),
}

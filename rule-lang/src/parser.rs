//! Text → [`ast::File`]. pest does the grammar; this module builds the spanned tree,
//! turns pest errors into [`Diagnostic`]s that speak in words rather than rule
//! names, and recovers after a syntax error by parsing each top-level declaration
//! on its own, so one typo does not hide the mistakes in other rules.

use crate::ast::*;
use crate::diag::{Diagnostic, Span};
use pest::Parser as _;
use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};
use std::sync::LazyLock;

#[derive(pest_derive::Parser)]
#[grammar = "grammar.pest"]
struct VglParser;

static PRATT: LazyLock<PrattParser<Rule>> = LazyLock::new(|| {
    PrattParser::new()
        .op(Op::infix(Rule::or_op, Assoc::Left))
        .op(Op::infix(Rule::and_op, Assoc::Left))
        .op(Op::prefix(Rule::not_op))
        .op(Op::infix(Rule::eq_op, Assoc::Left)
            | Op::infix(Rule::ne_op, Assoc::Left)
            | Op::infix(Rule::lt_op, Assoc::Left)
            | Op::infix(Rule::le_op, Assoc::Left)
            | Op::infix(Rule::gt_op, Assoc::Left)
            | Op::infix(Rule::ge_op, Assoc::Left)
            | Op::infix(Rule::regex_op, Assoc::Left)
            | Op::postfix(Rule::in_list)
            | Op::postfix(Rule::in_set))
        .op(Op::infix(Rule::add_op, Assoc::Left) | Op::infix(Rule::sub_op, Assoc::Left))
        .op(Op::infix(Rule::mul_op, Assoc::Left)
            | Op::infix(Rule::div_op, Assoc::Left)
            | Op::infix(Rule::rem_op, Assoc::Left))
        .op(Op::prefix(Rule::neg_op))
        .op(Op::postfix(Rule::field_access))
});

/// Parses one file. `file` is the index of the file in its [`crate::Sources`]; it
/// is recorded in every span. On syntax errors, returns the declarations that did
/// parse together with one diagnostic per broken declaration.
pub fn parse(file: u32, text: &str) -> (File, Vec<Diagnostic>) {
    match VglParser::parse(Rule::file, text) {
        Ok(mut pairs) => {
            let mut b = Builder {
                file,
                diags: vec![],
            };
            let mut out = File::default();
            if let Some(top) = pairs.next() {
                b.file_items(top, &mut out);
            }
            (out, b.diags)
        }
        Err(_) => recover(file, text),
    }
}

/// Parses each top-level declaration separately.
fn recover(file: u32, text: &str) -> (File, Vec<Diagnostic>) {
    let mut out = File::default();
    let mut diags = vec![];
    let starts = decl_starts(text);
    if starts.is_empty() {
        if let Err(e) = VglParser::parse(Rule::file, text) {
            diags.push(syntax_error(file, 0, &e));
        }
        return (out, diags);
    }
    // Anything before the first declaration must be blank or comments.
    if let Err(e) = VglParser::parse(Rule::file, &text[..starts[0]]) {
        diags.push(syntax_error(file, 0, &e));
    }
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        let chunk = &text[start..end];
        match VglParser::parse(Rule::single_decl, chunk) {
            Ok(mut pairs) => {
                let mut b = Builder {
                    file,
                    diags: vec![],
                };
                if let Some(top) = pairs.next() {
                    let shifted = ShiftedPairs { offset: start };
                    b.file_items_shifted(top, &mut out, shifted);
                }
                diags.extend(b.diags);
            }
            Err(e) => diags.push(syntax_error(file, start, &e)),
        }
    }
    (out, diags)
}

/// Byte offsets of lines that begin (at column 1) with `event` or `rule`.
fn decl_starts(text: &str) -> Vec<usize> {
    let mut starts = vec![];
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        for kw in ["event", "rule"] {
            if let Some(rest) = line.strip_prefix(kw)
                && rest.starts_with([' ', '\t'])
            {
                starts.push(offset);
            }
        }
        offset += line.len();
    }
    starts
}

#[derive(Clone, Copy)]
struct ShiftedPairs {
    offset: usize,
}

fn syntax_error(file: u32, offset: usize, e: &pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let (start, end) = match e.location {
        InputLocation::Pos(p) => (p, p + 1),
        InputLocation::Span((s, e)) => (s, e.max(s + 1)),
    };
    let expected = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut words: Vec<&str> = positives.iter().filter_map(|r| rule_name(*r)).collect();
            words.sort();
            words.dedup();
            match words.len() {
                0 => "something else".to_string(),
                1 => words[0].to_string(),
                _ => {
                    let last = words.pop().unwrap_or_default();
                    format!("{} or {}", words.join(", "), last)
                }
            }
        }
        ErrorVariant::CustomError { message } => message.clone(),
    };
    Diagnostic::error(
        "syntax",
        Span::new(file, offset + start, offset + end),
        format!("syntax error: expected {expected}"),
    )
    .with_label(format!("expected {expected} here"))
}

/// Grammar rule names in words, for syntax errors.
pub fn rule_name(r: Rule) -> Option<&'static str> {
    Some(match r {
        Rule::EOI => "end of file",
        Rule::decl | Rule::event_decl | Rule::rule_decl => "`event` or `rule`",
        Rule::ident | Rule::any_ident | Rule::binding_name | Rule::name => "a name",
        Rule::field_decl => "a field (`name: type`)",
        Rule::type_name => "a type",
        Rule::optional_mark => "`?`",
        Rule::clause
        | Rule::description_clause
        | Rule::severity_clause
        | Rule::tags_clause
        | Rule::key_clause
        | Rule::pattern_clause
        | Rule::within_clause
        | Rule::where_clause
        | Rule::aggregate_clause
        | Rule::having_clause
        | Rule::emit_clause
        | Rule::suppress_clause
        | Rule::after_match_clause => "a clause (pattern, within, where, emit, ...)",
        Rule::after_match_kind | Rule::skip_past_last | Rule::skip_to_next | Rule::no_skip => {
            "`skip past last`, `skip to next` or `no skip`"
        }
        Rule::emit_field => "an emit field (`name: expr`)",
        Rule::seq | Rule::step | Rule::atom | Rule::event_step | Rule::group => "a pattern step",
        Rule::negation => "`not`",
        Rule::connector | Rule::strict_arrow | Rule::relaxed_arrow => "`->` or `->>`",
        Rule::predicate => "`[`",
        Rule::quant | Rule::quant_opt | Rule::quant_plus | Rule::quant_range => "a quantifier",
        Rule::range_comma => "`,`",
        Rule::expr | Rule::paren | Rule::call | Rule::boolean | Rule::primary | Rule::prefix => {
            "an expression"
        }
        Rule::infix => "an operator",
        Rule::postfix => "`.field` or `in`",
        Rule::or_op
        | Rule::and_op
        | Rule::regex_op
        | Rule::eq_op
        | Rule::ne_op
        | Rule::le_op
        | Rule::ge_op
        | Rule::lt_op
        | Rule::gt_op
        | Rule::add_op
        | Rule::sub_op
        | Rule::mul_op
        | Rule::div_op
        | Rule::rem_op => "an operator",
        Rule::not_op | Rule::neg_op => "an expression",
        Rule::field_access => "`.field`",
        Rule::in_list | Rule::in_set => "`in`",
        Rule::duration | Rule::duration_lit => "a duration (e.g. `10m`)",
        Rule::number | Rule::integer => "a number",
        Rule::string | Rule::string_inner => "a string",
        Rule::WHITESPACE | Rule::COMMENT | Rule::keyword | Rule::ident_char => return None,
        Rule::file | Rule::single_decl => return None,
    })
}

struct Builder {
    file: u32,
    diags: Vec<Diagnostic>,
}

impl Builder {
    fn file_items(&mut self, top: Pair<Rule>, out: &mut File) {
        self.file_items_shifted(top, out, ShiftedPairs { offset: 0 })
    }

    fn file_items_shifted(&mut self, top: Pair<Rule>, out: &mut File, shift: ShiftedPairs) {
        let mut b = ShiftBuilder {
            file: self.file,
            offset: shift.offset,
            diags: &mut self.diags,
        };
        for p in top.into_inner() {
            match p.as_rule() {
                Rule::event_decl => out.events.push(b.event_decl(p)),
                Rule::rule_decl => out.rules.push(b.rule_decl(p)),
                _ => {}
            }
        }
    }
}

struct ShiftBuilder<'d> {
    file: u32,
    offset: usize,
    diags: &'d mut Vec<Diagnostic>,
}

impl ShiftBuilder<'_> {
    fn span(&self, p: &Pair<Rule>) -> Span {
        let s = p.as_span();
        Span::new(self.file, self.offset + s.start(), self.offset + s.end())
    }

    fn ident(&self, p: Pair<Rule>) -> Ident {
        Ident {
            name: p.as_str().to_string(),
            span: self.span(&p),
        }
    }

    fn event_decl(&mut self, p: Pair<Rule>) -> EventDecl {
        let span = self.span(&p);
        let mut inner = p.into_inner();
        let name = inner
            .next()
            .map(|p| self.ident(p))
            .unwrap_or_else(|| Ident {
                name: String::new(),
                span,
            });
        let fields = inner
            .map(|f| {
                let mut it = f.into_inner();
                let name = self.ident(it.next().expect("grammar: field name"));
                let ty = self.ident(it.next().expect("grammar: field type"));
                FieldDecl {
                    name,
                    ty,
                    optional: it.next().is_some(),
                }
            })
            .collect();
        EventDecl { name, fields, span }
    }

    fn rule_decl(&mut self, p: Pair<Rule>) -> RuleDecl {
        let span = self.span(&p);
        let mut inner = p.into_inner();
        let name = self.ident(inner.next().expect("grammar: rule name"));
        let clauses = inner.map(|c| self.clause(c)).collect();
        RuleDecl {
            name,
            span,
            clauses,
        }
    }

    fn duration_lit(&self, p: Pair<Rule>) -> DurationLit {
        DurationLit {
            text: p.as_str().to_string(),
            span: self.span(&p),
        }
    }

    fn clause(&mut self, p: Pair<Rule>) -> Clause {
        let span = self.span(&p);
        let rule = p.as_rule();
        let mut inner = p.into_inner();
        match rule {
            Rule::description_clause => {
                Clause::Description(unescape(inner.next().expect("grammar: string")), span)
            }
            Rule::severity_clause => Clause::Severity(self.ident(inner.next().expect("grammar"))),
            Rule::tags_clause => Clause::Tags(inner.map(unescape).collect(), span),
            Rule::key_clause => Clause::Key(self.ident(inner.next().expect("grammar"))),
            Rule::pattern_clause => Clause::Pattern(self.seq(inner.next().expect("grammar")), span),
            Rule::within_clause => {
                Clause::Within(self.duration_lit(inner.next().expect("grammar")))
            }
            Rule::where_clause => Clause::Where(self.expr(inner.next().expect("grammar"))),
            Rule::having_clause => Clause::Having(self.expr(inner.next().expect("grammar"))),
            Rule::suppress_clause => {
                Clause::Suppress(self.duration_lit(inner.next().expect("grammar")))
            }
            Rule::aggregate_clause => {
                let binding = self.ident(inner.next().expect("grammar"));
                let ty = self.ident(inner.next().expect("grammar"));
                let mut predicate = None;
                let mut over = None;
                for q in inner {
                    match q.as_rule() {
                        Rule::predicate => {
                            predicate = q.into_inner().next().map(|e| self.expr(e));
                        }
                        _ => over = Some(self.duration_lit(q)),
                    }
                }
                Clause::Aggregate {
                    binding,
                    ty,
                    predicate,
                    over: over.expect("grammar: over"),
                    span,
                }
            }
            Rule::emit_clause => Clause::Emit(
                inner
                    .map(|f| {
                        let mut it = f.into_inner();
                        let name = self.ident(it.next().expect("grammar"));
                        let e = self.expr(it.next().expect("grammar"));
                        (name, e)
                    })
                    .collect(),
                span,
            ),
            Rule::after_match_clause => {
                let kind = inner
                    .next()
                    .and_then(|k| k.into_inner().next())
                    .map(|k| match k.as_rule() {
                        Rule::skip_to_next => AfterMatch::SkipToNext,
                        Rule::no_skip => AfterMatch::NoSkip,
                        _ => AfterMatch::SkipPastLast,
                    })
                    .unwrap_or_default();
                Clause::AfterMatch(kind, span)
            }
            _ => unreachable!("grammar: unexpected clause {rule:?}"),
        }
    }

    fn seq(&mut self, p: Pair<Rule>) -> Seq {
        let span = self.span(&p);
        let mut steps = vec![];
        let mut connectors = vec![];
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::step => steps.push(self.step(q)),
                Rule::connector => {
                    let strict = q
                        .into_inner()
                        .next()
                        .is_some_and(|a| a.as_rule() == Rule::strict_arrow);
                    connectors.push(if strict {
                        Connector::Strict
                    } else {
                        Connector::Relaxed
                    });
                }
                _ => {}
            }
        }
        Seq {
            steps,
            connectors,
            span,
        }
    }

    fn step(&mut self, p: Pair<Rule>) -> Step {
        let span = self.span(&p);
        let mut negated = false;
        let mut atom = None;
        let mut quant = None;
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::negation => {
                    negated = true;
                    atom = q.into_inner().next().map(|a| self.atom(a));
                }
                Rule::atom => atom = Some(self.atom(q)),
                Rule::quant => quant = Some(self.quant(q)),
                _ => {}
            }
        }
        Step {
            negated,
            atom: atom.expect("grammar: step has an atom"),
            quant,
            span,
        }
    }

    fn atom(&mut self, p: Pair<Rule>) -> Atom {
        let q = p.into_inner().next().expect("grammar: atom");
        match q.as_rule() {
            Rule::group => Atom::Group(q.into_inner().map(|s| self.seq(s)).collect()),
            _ => {
                let mut binding = None;
                let mut ty = None;
                let mut predicate = None;
                for r in q.into_inner() {
                    match r.as_rule() {
                        Rule::binding_name => {
                            binding = r.into_inner().next().map(|i| self.ident(i));
                        }
                        Rule::ident => ty = Some(self.ident(r)),
                        Rule::predicate => {
                            predicate = r.into_inner().next().map(|e| self.expr(e));
                        }
                        _ => {}
                    }
                }
                Atom::Event {
                    binding,
                    ty: ty.expect("grammar: step type"),
                    predicate,
                }
            }
        }
    }

    fn quant(&mut self, p: Pair<Rule>) -> Quant {
        let span = self.span(&p);
        let q = p.into_inner().next().expect("grammar: quant");
        match q.as_rule() {
            Rule::quant_opt => Quant {
                min: 0,
                max: Some(1),
                span,
            },
            Rule::quant_plus => Quant {
                min: 1,
                max: None,
                span,
            },
            _ => {
                let mut min = None;
                let mut comma = false;
                let mut max = None;
                for r in q.into_inner() {
                    match r.as_rule() {
                        Rule::integer => {
                            let n = self.small_int(&r);
                            if comma {
                                max = Some(n);
                            } else {
                                min = Some(n);
                            }
                        }
                        Rule::range_comma => comma = true,
                        _ => {}
                    }
                }
                let min = min.unwrap_or(0);
                Quant {
                    min,
                    max: if comma { max } else { Some(min) },
                    span,
                }
            }
        }
    }

    fn small_int(&mut self, p: &Pair<Rule>) -> u32 {
        match p.as_str().parse::<u32>() {
            Ok(n) if n <= 100_000 => n,
            _ => {
                self.diags.push(
                    Diagnostic::error(
                        "bad-quantifier",
                        self.span(p),
                        "quantifier bound is too large",
                    )
                    .with_label("at most 100000"),
                );
                0
            }
        }
    }

    fn expr(&mut self, p: Pair<Rule>) -> Expr {
        let pairs = p.into_inner();
        // The Pratt parser needs closures that borrow self mutably; collect errors
        // through a RefCell-free path by cloning what we need.
        let file = self.file;
        let offset = self.offset;
        let diags = std::cell::RefCell::new(std::mem::take(self.diags));
        let result = {
            let mk_span = |p: &Pair<Rule>| {
                let s = p.as_span();
                Span::new(file, offset + s.start(), offset + s.end())
            };
            pratt_expr(pairs, &mk_span, &diags)
        };
        *self.diags = diags.into_inner();
        result
    }
}

fn pratt_expr(
    pairs: pest::iterators::Pairs<Rule>,
    mk_span: &dyn Fn(&Pair<Rule>) -> Span,
    diags: &std::cell::RefCell<Vec<Diagnostic>>,
) -> Expr {
    PRATT
        .map_primary(|p| primary(p, mk_span, diags))
        .map_prefix(|op, rhs| {
            let span = mk_span(&op).to(rhs.span);
            let op = if op.as_rule() == Rule::not_op {
                UnOp::Not
            } else {
                UnOp::Neg
            };
            Expr {
                kind: ExprKind::Unary(op, Box::new(rhs)),
                span,
            }
        })
        .map_postfix(|lhs, op| {
            let span = lhs.span.to(mk_span(&op));
            let kind = match op.as_rule() {
                Rule::field_access => {
                    let name = op.into_inner().next().expect("grammar: field name");
                    ExprKind::Field(
                        Box::new(lhs),
                        Ident {
                            name: name.as_str().to_string(),
                            span: mk_span(&name),
                        },
                    )
                }
                Rule::in_list => {
                    let s = op.into_inner().next().expect("grammar: list name");
                    ExprKind::InList(Box::new(lhs), unescape(s))
                }
                _ => ExprKind::InSet(
                    Box::new(lhs),
                    op.into_inner()
                        .map(|e| pratt_expr(e.into_inner(), mk_span, diags))
                        .collect(),
                ),
            };
            Expr { kind, span }
        })
        .map_infix(|lhs, op, rhs| {
            let span = lhs.span.to(rhs.span);
            let op = match op.as_rule() {
                Rule::or_op => BinOp::Or,
                Rule::and_op => BinOp::And,
                Rule::regex_op => BinOp::Match,
                Rule::eq_op => BinOp::Eq,
                Rule::ne_op => BinOp::Ne,
                Rule::le_op => BinOp::Le,
                Rule::ge_op => BinOp::Ge,
                Rule::lt_op => BinOp::Lt,
                Rule::gt_op => BinOp::Gt,
                Rule::add_op => BinOp::Add,
                Rule::sub_op => BinOp::Sub,
                Rule::mul_op => BinOp::Mul,
                Rule::div_op => BinOp::Div,
                _ => BinOp::Rem,
            };
            Expr {
                kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                span,
            }
        })
        .parse(pairs)
}

fn primary(
    p: Pair<Rule>,
    mk_span: &dyn Fn(&Pair<Rule>) -> Span,
    diags: &std::cell::RefCell<Vec<Diagnostic>>,
) -> Expr {
    let span = mk_span(&p);
    let kind = match p.as_rule() {
        Rule::number => {
            let s = p.as_str();
            if s.contains('.') {
                ExprKind::Float(s.parse().unwrap_or(f64::NAN))
            } else {
                match s.parse::<i64>() {
                    Ok(n) => ExprKind::Int(n),
                    Err(_) => {
                        diags.borrow_mut().push(
                            Diagnostic::error("bad-number", span, "integer literal is too large")
                                .with_label("does not fit in 64 bits"),
                        );
                        ExprKind::Int(0)
                    }
                }
            }
        }
        Rule::duration => match parse_duration(p.as_str()) {
            Ok(ms) => ExprKind::Duration(ms),
            Err(msg) => {
                diags
                    .borrow_mut()
                    .push(Diagnostic::error("invalid-duration", span, msg));
                ExprKind::Duration(0)
            }
        },
        Rule::string => ExprKind::Str(unescape(p)),
        Rule::boolean => ExprKind::Bool(p.as_str() == "true"),
        Rule::name => ExprKind::Name(Ident {
            name: p.as_str().to_string(),
            span,
        }),
        Rule::call => {
            let mut inner = p.into_inner();
            let name = inner.next().expect("grammar: function name");
            let name = Ident {
                name: name.as_str().to_string(),
                span: mk_span(&name),
            };
            let args = inner
                .map(|e| pratt_expr(e.into_inner(), mk_span, diags))
                .collect();
            ExprKind::Call(name, args)
        }
        Rule::paren => {
            let e = p.into_inner().next().expect("grammar: paren");
            return Expr {
                span,
                ..pratt_expr(e.into_inner(), mk_span, diags)
            };
        }
        r => unreachable!("grammar: unexpected primary {r:?}"),
    };
    Expr { kind, span }
}

/// `10m` → 600000. Integers only; units `ms`, `s`, `m`, `h`, `d`.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(digits_end);
    if num.is_empty() {
        return Err(format!("`{text}` is not a duration"));
    }
    let mult: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err(format!("duration `{text}` has no unit")),
        u if u.starts_with('.') => {
            return Err(format!(
                "duration `{text}` has a fraction; use a smaller unit (e.g. `1500ms`)"
            ));
        }
        u => return Err(format!("unknown duration unit `{u}`")),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| format!("duration `{text}` is too large"))?;
    n.checked_mul(mult)
        .filter(|ms| *ms < 100 * 365 * 86_400_000)
        .ok_or_else(|| format!("duration `{text}` is too large"))
}

fn unescape(p: Pair<Rule>) -> String {
    let raw = p
        .into_inner()
        .next()
        .map(|i| i.as_str().to_string())
        .unwrap_or_default();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

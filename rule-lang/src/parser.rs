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
    if too_deep(text).is_some() {
        return recover(file, text);
    }
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
        if let Some(at) = too_deep(text) {
            diags.push(nesting_error(file, text, at));
        } else if let Err(e) = VglParser::parse(Rule::file, text) {
            diags.push(syntax_error(file, 0, text, &e));
        }
        return (out, diags);
    }
    // Anything before the first declaration must be blank or comments.
    if let Err(e) = VglParser::parse(Rule::file, &text[..starts[0]]) {
        diags.push(syntax_error(file, 0, &text[..starts[0]], &e));
    }
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        let chunk = &text[start..end];
        if let Some(at) = too_deep(chunk) {
            diags.push(nesting_error(file, text, start + at));
            continue;
        }
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
            Err(e) => diags.push(syntax_error(file, start, chunk, &e)),
        }
    }
    (out, diags)
}

/// How deeply brackets (`(`, `[`, `{`) may nest. Parsing, checking and
/// compiling recurse on nesting, so a bound keeps them within a small stack
/// whatever the input.
pub const MAX_NESTING: usize = 32;
/// How deeply an expression's syntax tree may nest (operators included).
pub const MAX_EXPR_DEPTH: usize = 64;
/// A cheap bound checked before building an expression's tree: operators in a
/// row plus those of nested sub-expressions.
const MAX_EXPR_OPS: usize = 256;

/// The byte offset of the first bracket that nests deeper than [`MAX_NESTING`]
/// (strings and comments skipped).
fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' | '\n' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '#' => {
                for (_, c) in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(i);
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

fn nesting_error(file: u32, text: &str, at: usize) -> Diagnostic {
    let len = text[at..].chars().next().map_or(1, char::len_utf8);
    Diagnostic::error(
        "too-complex",
        Span::new(file, at, at + len),
        format!("brackets are nested more than {MAX_NESTING} levels deep"),
    )
    .with_label("too deep")
    .with_hint(format!(
        "at most {MAX_NESTING} levels of `(`, `[` and `{{` (the rule's own braces included); split the expression or the pattern"
    ))
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

fn syntax_error(file: u32, offset: usize, text: &str, e: &pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let (start, end) = match e.location {
        InputLocation::Pos(p) => (p, p + 1),
        InputLocation::Span((s, e)) => (s, e.max(s + 1)),
    };
    let found = token_at(text, start);
    let (start, end) = if found.is_empty() {
        // At the end of the text: point at its last character rather than at
        // whatever follows (in recovery, the next declaration).
        let trimmed = text.trim_end();
        match trimmed.char_indices().next_back() {
            Some((i, c)) => (i, i + c.len_utf8()),
            None => (start, end),
        }
    } else {
        // Underline the whole offending token, not just its first byte.
        (start, end.max(start + found.len()))
    };
    let followed_by_colon = text
        .get(start + found.len()..)
        .is_some_and(|r| r.trim_start().starts_with(':'));
    let mut words: Vec<&str> = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            positives.iter().filter_map(|r| rule_name(*r)).collect()
        }
        ErrorVariant::CustomError { .. } => vec![],
    };
    words.sort();
    words.dedup();
    // "an expression" already covers its kinds of operand.
    if words.contains(&EXPRESSION) {
        words.retain(|w| !OPERAND_WORDS.contains(w));
    }
    if let ErrorVariant::CustomError { message } = &e.variant {
        // pest's own resource limits ("stack limit reached", "call limit reached").
        return Diagnostic::error(
            "too-complex",
            Span::new(file, offset + start, offset + end),
            format!("the parser gave up here: {message}"),
        )
        .with_label("too complex to parse")
        .with_hint("simplify this declaration");
    }
    let expected = match words.len() {
        0 => "something else".to_string(),
        1 => words[0].to_string(),
        _ => {
            let last = words.pop().unwrap_or_default();
            let s = format!("{} or {}", words.join(", "), last);
            words.push(last);
            s
        }
    };
    let label = if found.is_empty() {
        format!("expected {expected} after this, but the declaration ends")
    } else {
        format!("expected {expected}, found `{found}`")
    };
    Diagnostic::error(
        "syntax",
        Span::new(file, offset + start, offset + end),
        format!("syntax error: expected {expected}"),
    )
    .with_label(label)
    .with_hint_opt(syntax_hint(found, &words, followed_by_colon))
}

const EXPRESSION: &str = "an expression";
const OPERAND_WORDS: [&str; 4] = ["a duration (e.g. `10m`)", "a name", "a number", "a string"];
const CLAUSE_WORDS: [&str; 12] = [
    "description",
    "severity",
    "tags",
    "key",
    "pattern",
    "within",
    "where",
    "aggregate",
    "having",
    "emit",
    "suppress",
    "after",
];
const KEYWORDS: [&str; 22] = [
    "event",
    "rule",
    "pattern",
    "within",
    "where",
    "emit",
    "suppress",
    "aggregate",
    "over",
    "having",
    "key",
    "severity",
    "tags",
    "description",
    "after",
    "not",
    "and",
    "or",
    "in",
    "list",
    "true",
    "false",
];

/// The token starting at byte `pos`: a word, a run of operator characters, or
/// one other character; empty at the end of the text (or only blanks left).
fn token_at(text: &str, pos: usize) -> &str {
    let Some(rest) = text.get(pos..) else {
        return "";
    };
    if rest.trim().is_empty() {
        return "";
    }
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let is_op = |c: char| "=!<>&|-".contains(c);
    let first = rest.chars().next().unwrap_or(' ');
    let len = if is_word(first) {
        rest.find(|c: char| !is_word(c)).unwrap_or(rest.len())
    } else if is_op(first) {
        rest.find(|c: char| !is_op(c)).unwrap_or(rest.len())
    } else {
        first.len_utf8()
    };
    &rest[..len]
}

/// A suggestion for common syntax mistakes.
fn syntax_hint(found: &str, expected: &[&str], followed_by_colon: bool) -> Option<String> {
    let expects = |w: &str| expected.contains(&w);
    let clause = "a clause (pattern, within, where, emit, ...)";
    if found.is_empty() {
        return Some("is a closing `}`, `]` or `)` missing?".into());
    }
    match found {
        "=" => return Some("compare with `==` (`=` alone is not an operator)".into()),
        "&&" => return Some("write `and`".into()),
        "||" => return Some("write `or`".into()),
        "!" => return Some("write `not`".into()),
        "=>" => return Some("a pattern step is followed by `->` (or `->>`)".into()),
        "'" => return Some("strings are written in double quotes: \"text\"".into()),
        _ => {}
    }
    if KEYWORDS.contains(&found) && (expects("a name") || followed_by_colon) {
        return Some(format!(
            "`{found}` is a keyword and cannot be used as a name"
        ));
    }
    let is_word = found.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    if is_word && expects(clause) {
        return Some(
            crate::diag::did_you_mean(found, CLAUSE_WORDS).unwrap_or_else(|| {
                format!(
                    "a rule's clauses are: {}",
                    CLAUSE_WORDS.join(", ").replace("after", "after match")
                )
            }),
        );
    }
    if is_word && expects("`event` or `rule`") {
        return Some(
            crate::diag::did_you_mean(found, ["event", "rule"]).unwrap_or_else(|| {
                "a file holds `event` and `rule` declarations and `#` comments".into()
            }),
        );
    }
    if expects(EXPRESSION) && matches!(found, "]" | ")" | "," | "}") {
        return Some("a value is missing here".into());
    }
    if expects("a quantifier") && found.starts_with(|c: char| c.is_ascii_digit()) {
        return Some("a quantifier is written `?`, `+`, `{n}`, `{n,}` or `{n,m}`".into());
    }
    None
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
        Rule::negation | Rule::not_kw => "`not`",
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
        Rule::in_list | Rule::in_set | Rule::in_kw => "`in`",
        Rule::list_kw => "`list`",
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
                    atom = q
                        .into_inner()
                        .find(|a| a.as_rule() == Rule::atom)
                        .map(|a| self.atom(a));
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
                    .with_label("at most 100000")
                    .with_hint("collect fewer events, or use an aggregate rule to count them"),
                );
                100_000
            }
        }
    }

    fn expr(&mut self, p: Pair<Rule>) -> Expr {
        let span = self.span(&p);
        // A harmless stand-in for an expression that was rejected.
        let dummy = Expr {
            kind: ExprKind::Bool(true),
            span,
        };
        let ops = op_bound(&p);
        if ops > MAX_EXPR_OPS {
            self.diags.push(
                Diagnostic::error(
                    "too-complex",
                    span,
                    format!("expression is too long ({ops} operators; at most {MAX_EXPR_OPS})"),
                )
                .with_label("too many operators")
                .with_hint(
                    "split the condition across steps, `where` and `having`, or into several rules",
                ),
            );
            return dummy;
        }
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
        let depth = expr_depth(&result);
        if depth > MAX_EXPR_DEPTH {
            self.diags.push(
                Diagnostic::error(
                    "too-complex",
                    span,
                    format!(
                        "expression is nested too deeply ({depth} levels; at most {MAX_EXPR_DEPTH})"
                    ),
                )
                .with_label("too deeply nested")
                .with_hint(
                    "split the condition across steps, `where` and `having`, or into several rules",
                ),
            );
            return dummy;
        }
        result
    }
}

/// An upper bound of an expression tree's depth, from its pairs: the operators
/// at this level plus the deepest nested expression (parentheses, call
/// arguments, list items). Recurses only on nesting, which is bounded.
fn op_bound(p: &Pair<Rule>) -> usize {
    let mut here = 0;
    let mut nested = 0;
    for q in p.clone().into_inner() {
        match q.as_rule() {
            Rule::paren | Rule::call | Rule::in_set => {
                if q.as_rule() == Rule::in_set {
                    here += 1;
                }
                for r in q.clone().into_inner() {
                    if r.as_rule() == Rule::expr {
                        nested = nested.max(op_bound(&r));
                    }
                }
            }
            Rule::duration | Rule::number | Rule::string | Rule::boolean | Rule::name => {}
            _ => here += 1,
        }
    }
    here + nested + 1
}

/// The depth of an expression tree.
fn expr_depth(e: &Expr) -> usize {
    1 + match &e.kind {
        ExprKind::Int(_)
        | ExprKind::Float(_)
        | ExprKind::Str(_)
        | ExprKind::Bool(_)
        | ExprKind::Duration(_)
        | ExprKind::Name(_) => 0,
        ExprKind::Field(a, _) | ExprKind::Unary(_, a) | ExprKind::InList(a, _) => expr_depth(a),
        ExprKind::Binary(_, a, b) => expr_depth(a).max(expr_depth(b)),
        ExprKind::Call(_, args) => args.iter().map(expr_depth).max().unwrap_or(0),
        ExprKind::InSet(a, items) => items
            .iter()
            .map(expr_depth)
            .max()
            .unwrap_or(0)
            .max(expr_depth(a)),
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
                    let s = op
                        .into_inner()
                        .find(|p| p.as_rule() == Rule::string)
                        .expect("grammar: list name");
                    ExprKind::InList(Box::new(lhs), unescape(s))
                }
                _ => ExprKind::InSet(
                    Box::new(lhs),
                    op.into_inner()
                        .filter(|e| e.as_rule() == Rule::expr)
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
            if s.contains(['.', 'e', 'E']) {
                match s.parse::<f64>() {
                    Ok(x) if x.is_finite() => ExprKind::Float(x),
                    _ => {
                        diags.borrow_mut().push(
                            Diagnostic::error("bad-number", span, "float literal is out of range")
                                .with_label("not a finite 64-bit float")
                                .with_hint("floats go up to about 1.8e308"),
                        );
                        ExprKind::Float(0.0)
                    }
                }
            } else {
                match s.parse::<i64>() {
                    Ok(n) => ExprKind::Int(n),
                    Err(_) => {
                        diags.borrow_mut().push(
                            Diagnostic::error("bad-number", span, "integer literal is too large")
                                .with_label("does not fit in 64 bits")
                                .with_hint(
                                    "integers go up to 9223372036854775807; add `.0` for a float",
                                ),
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
            return Err(match fraction_in_smaller_unit(text) {
                Some(s) => format!("duration `{text}` has a fraction; write it as `{s}`"),
                None => format!("duration `{text}` has a fraction; use a smaller unit"),
            });
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

/// `1.5h` → `90m`: the exact value in the largest unit that makes it whole.
fn fraction_in_smaller_unit(text: &str) -> Option<String> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = text.split_at(split);
    let (whole, frac) = num.split_once('.')?;
    if frac.is_empty() || frac.contains('.') || frac.len() > 9 {
        return None;
    }
    let mult: u128 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    // value = (whole * 10^k + frac) / 10^k units, in ms exactly when divisible.
    let scale = 10u128.pow(frac.len() as u32);
    let n: u128 = format!("{whole}{frac}").parse().ok()?;
    let scaled = n.checked_mul(mult)?;
    if !scaled.is_multiple_of(scale) {
        return None;
    }
    let ms = scaled / scale;
    if ms == 0 {
        return None;
    }
    let (name, per) = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ]
    .into_iter()
    .find(|(_, per)| ms.is_multiple_of(*per))?;
    Some(format!("{}{name}", ms / per))
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

//! [`ast::File`]s → [`Checked`]: names resolved, types checked, every mistake
//! collected (not just the first), plus lint warnings.

use crate::ast::{self, AfterMatch, Atom, BinOp, Clause, Connector, ExprKind, UnOp};
use crate::diag::{Diagnostic, Span, did_you_mean};
use crate::parser::parse_duration;
use crate::program::*;
use std::collections::HashMap;

/// A checked rule set, ready for [`crate::compile`].
#[derive(Debug, Clone)]
pub struct Checked {
    pub schemas: Vec<Schema>,
    pub rules: Vec<CheckedRule>,
}

/// A checked rule; patterns are still a tree.
#[derive(Debug, Clone)]
pub struct CheckedRule {
    pub name: String,
    pub description: String,
    pub severity: Severity,
    pub tags: Vec<String>,
    pub key: Option<String>,
    pub key_slots: Vec<Option<u16>>,
    pub types: Vec<TypeId>,
    pub kind: CheckedKind,
    pub emit: Vec<(String, Expr)>,
    pub suppress_ms: i64,
    pub source_hash: String,
}

/// Pattern tree or aggregate.
#[derive(Debug, Clone)]
pub enum CheckedKind {
    Pattern(CheckedPattern),
    Aggregate(Aggregate),
}

/// A checked pattern, before NFA construction.
#[derive(Debug, Clone)]
pub struct CheckedPattern {
    pub steps: Vec<Step>,
    pub bindings: Vec<Binding>,
    pub negations: Vec<Negation>,
    pub tree: PNode,
    pub counters: u16,
    pub within_ms: i64,
    pub where_: Option<Expr>,
    pub after_match: AfterMatch,
    pub absence: bool,
}

/// The pattern as a tree of steps.
#[derive(Debug, Clone)]
pub enum PNode {
    Step(StepId),
    Not(u16),
    /// Items and the connector before each item but the first.
    Seq(Vec<PNode>, Vec<Connector>),
    Alt(Vec<PNode>),
    /// A quantified group.
    Group {
        body: Box<PNode>,
        min: u32,
        max: u32,
        counter: CounterId,
    },
}

/// Checks parsed files (with the source text of each, for rule hashes).
pub fn check(files: &[(ast::File, &str)]) -> (Checked, Vec<Diagnostic>) {
    let mut cx = Checker {
        texts: files.iter().map(|(_, t)| t.to_string()).collect(),
        ..Checker::default()
    };
    cx.schemas(files);
    let mut rules = vec![];
    let mut seen: HashMap<String, Span> = HashMap::new();
    for (file, text) in files {
        for r in &file.rules {
            if let Some(prev) = seen.get(&r.name.name) {
                let hint = format!(
                    "the first `{}` is {}; rule names are unique across all files of a rule set",
                    r.name.name,
                    cx.where_is(*prev, r.name.span)
                );
                cx.err(
                    Diagnostic::error(
                        "duplicate-rule",
                        r.name.span,
                        format!("duplicate rule name `{}`", r.name.name),
                    )
                    .with_label("this name is already used by another rule in the set")
                    .with_hint(hint),
                );
                continue;
            }
            seen.insert(r.name.name.clone(), r.name.span);
            let src = text
                .get(r.span.start as usize..r.span.end as usize)
                .unwrap_or("");
            if let Some(rule) = cx.rule(r, src) {
                rules.push(rule);
            }
        }
    }
    (
        Checked {
            schemas: cx.schemas.clone(),
            rules,
        },
        cx.diags,
    )
}

#[derive(Default)]
struct Checker {
    schemas: Vec<Schema>,
    type_spans: Vec<Span>,
    diags: Vec<Diagnostic>,
    /// The source text of each file, by file index (for "first defined on line N").
    texts: Vec<String>,
}

const RESERVED_FIELDS: [&str; 3] = ["type", "ts", "id"];

impl Checker {
    fn err(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// One-based line of a span's start.
    fn line_of(&self, span: Span) -> Option<usize> {
        let text = self.texts.get(span.file as usize)?;
        let before = text.get(..span.start as usize)?;
        Some(before.matches('\n').count() + 1)
    }

    /// Where an earlier definition is, said from the point of view of `here`.
    fn where_is(&self, first: Span, here: Span) -> String {
        match self.line_of(first) {
            Some(l) if first.file == here.file => format!("on line {l}"),
            Some(l) => format!("on line {l} of another file of the set"),
            None => "elsewhere in the set".to_string(),
        }
    }

    fn schemas(&mut self, files: &[(ast::File, &str)]) {
        for (file, _) in files {
            for ev in &file.events {
                if let Some(i) = self.schemas.iter().position(|s| s.name == ev.name.name) {
                    let hint = format!(
                        "the first `{}` is {}; event type names are unique across all files of a rule set",
                        ev.name.name,
                        self.where_is(self.type_spans[i], ev.name.span)
                    );
                    self.err(
                        Diagnostic::error(
                            "duplicate-type",
                            ev.name.span,
                            format!("duplicate event type `{}`", ev.name.name),
                        )
                        .with_label("this type is already declared in the rule set")
                        .with_hint(hint),
                    );
                    continue;
                }
                let mut fields: Vec<FieldDef> = vec![];
                for f in &ev.fields {
                    let ty = match f.ty.name.as_str() {
                        "string" => Type::String,
                        "int" => Type::Int,
                        "float" => Type::Float,
                        "bool" => Type::Bool,
                        "time" => Type::Time,
                        other => {
                            let hint =
                                did_you_mean(other, ["string", "int", "float", "bool", "time"]);
                            self.err(
                                Diagnostic::error(
                                    "unknown-field-type",
                                    f.ty.span,
                                    format!("unknown field type `{other}`"),
                                )
                                .with_label("expected string, int, float, bool or time")
                                .with_hint(hint.unwrap_or_else(|| {
                                    "mark an optional field with `?` after its type, e.g. `mcc: int?`".into()
                                })),
                            );
                            continue;
                        }
                    };
                    if RESERVED_FIELDS.contains(&f.name.name.as_str()) {
                        self.err(
                            Diagnostic::error(
                                "reserved-field",
                                f.name.span,
                                format!(
                                    "`{}` is implicit on every event and cannot be declared",
                                    f.name.name
                                ),
                            )
                            .with_label("reserved field name")
                            .with_hint("remove it: every event has `type` (string), `ts` (time) and `id` (string)"),
                        );
                        continue;
                    }
                    if let Some(first) = ev
                        .fields
                        .iter()
                        .find(|g| g.name.name == f.name.name)
                        .filter(|g| g.name.span != f.name.span)
                        .map(|g| g.name.span)
                    {
                        let hint = format!(
                            "the first `{}` is {}; rename or remove one of them",
                            f.name.name,
                            self.where_is(first, f.name.span)
                        );
                        self.err(
                            Diagnostic::error(
                                "duplicate-field",
                                f.name.span,
                                format!("duplicate field `{}`", f.name.name),
                            )
                            .with_label("already declared in this event type")
                            .with_hint(hint),
                        );
                        continue;
                    }
                    fields.push(FieldDef {
                        name: f.name.name.clone(),
                        ty,
                        optional: f.optional,
                    });
                }
                self.schemas.push(Schema {
                    name: ev.name.name.clone(),
                    fields,
                });
                self.type_spans.push(ev.name.span);
            }
        }
    }

    fn type_id(&mut self, name: &ast::Ident) -> Option<TypeId> {
        if let Some(i) = self.schemas.iter().position(|s| s.name == name.name) {
            return Some(i as TypeId);
        }
        let hint = did_you_mean(&name.name, self.schemas.iter().map(|s| s.name.as_str()));
        self.err(
            Diagnostic::error(
                "unknown-type",
                name.span,
                format!("unknown event type `{}`", name.name),
            )
            .with_label("no event type with this name is declared")
            .with_hint_opt(hint.or_else(|| {
                Some(format!(
                    "declared types: {}",
                    if self.schemas.is_empty() {
                        "(none)".to_string()
                    } else {
                        self.schemas
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ))
            })),
        );
        None
    }

    fn duration(&mut self, d: &ast::DurationLit) -> Option<i64> {
        match parse_duration(&d.text) {
            Ok(0) => {
                self.err(
                    Diagnostic::error(
                        "invalid-duration",
                        d.span,
                        "duration must be greater than zero",
                    )
                    .with_label("zero duration")
                    .with_hint("for example `250ms`, `30s`, `10m`, `2h`, `1d`"),
                );
                None
            }
            Ok(ms) => Some(ms),
            Err(msg) => {
                self.err(
                    Diagnostic::error("invalid-duration", d.span, msg)
                        .with_label("expected a whole number and a unit: ms, s, m, h or d")
                        .with_hint("for example `250ms`, `30s`, `10m`, `2h`, `1d`"),
                );
                None
            }
        }
    }

    fn rule(&mut self, r: &ast::RuleDecl, src: &str) -> Option<CheckedRule> {
        let errors_before = self.diags.iter().filter(|d| d.is_error()).count();
        // Clauses: each at most once.
        let mut by_kw: HashMap<&'static str, &Clause> = HashMap::new();
        for c in &r.clauses {
            if let Some(first) = by_kw.get(c.keyword()) {
                let hint = format!(
                    "the first `{}` is {}; keep one of them",
                    c.keyword(),
                    self.where_is(first.span(), c.span())
                );
                self.err(
                    Diagnostic::error(
                        "duplicate-clause",
                        c.span(),
                        format!("`{}` is given twice in rule `{}`", c.keyword(), r.name.name),
                    )
                    .with_label("each clause may appear at most once")
                    .with_hint(hint),
                );
                continue;
            }
            by_kw.insert(c.keyword(), c);
        }
        let mut description = String::new();
        let mut severity = Severity::Medium;
        let mut tags = vec![];
        let mut key: Option<&ast::Ident> = None;
        let mut pattern = None;
        let mut within = None;
        let mut where_ = None;
        let mut aggregate = None;
        let mut having = None;
        let mut emit: &[(ast::Ident, ast::Expr)] = &[];
        let mut suppress_ms = 0;
        let mut after_match = None;
        for c in by_kw.values() {
            match c {
                Clause::Description(d, _) => description = d.clone(),
                Clause::Severity(s) => match Severity::parse(&s.name) {
                    Some(sev) => severity = sev,
                    None => {
                        let hint = did_you_mean(&s.name, ["low", "medium", "high", "critical"]);
                        self.err(
                            Diagnostic::error(
                                "unknown-severity",
                                s.span,
                                format!("unknown severity `{}`", s.name),
                            )
                            .with_label("expected low, medium, high or critical")
                            .with_hint(hint.unwrap_or_else(|| {
                                "without a `severity` clause a rule is `medium`".into()
                            })),
                        );
                    }
                },
                Clause::Tags(t, _) => tags = t.clone(),
                Clause::Key(k) => key = Some(k),
                Clause::Pattern(seq, span) => pattern = Some((seq, *span)),
                Clause::Within(d) => within = Some(d),
                Clause::Where(e) => where_ = Some(e),
                Clause::Aggregate { .. } => aggregate = Some(*c),
                Clause::Having(e) => having = Some(e),
                Clause::Emit(fields, _) => emit = fields,
                Clause::Suppress(d) => suppress_ms = self.duration(d).unwrap_or(0),
                Clause::AfterMatch(a, span) => after_match = Some((*a, *span)),
            }
        }
        let within_ms = within.and_then(|d| self.duration(d));

        let (kind, types, emit_exprs) = match (pattern, aggregate) {
            (Some(_), Some(a)) => {
                self.err(
                    Diagnostic::error(
                        "pattern-and-aggregate",
                        a.span(),
                        "a rule has either `pattern` or `aggregate`, not both",
                    )
                    .with_label("second kind of rule body")
                    .with_hint("split it into two rules"),
                );
                return None;
            }
            (None, None) => {
                self.err(
                    Diagnostic::error("no-pattern", r.name.span, format!("rule `{}` has no `pattern` or `aggregate`", r.name.name))
                        .with_label("this rule matches nothing")
                        .with_hint("add `pattern ...` with `within D`, or `aggregate x: Type over D` with `having ...`"),
                );
                return None;
            }
            (Some((seq, pspan)), None) => {
                if let Some(h) = having {
                    self.err(
                        Diagnostic::error(
                            "misplaced-clause",
                            h.span,
                            "`having` belongs to aggregate rules",
                        )
                        .with_label("not allowed in a pattern rule")
                        .with_hint("use `where` to filter completed matches"),
                    );
                }
                if within.is_none() {
                    self.err(
                        Diagnostic::error("missing-within", pspan, "a pattern rule needs `within D`")
                            .with_label("this pattern has no time limit")
                            .with_hint("add e.g. `within 10m`: every event of a match must lie within D of the first"),
                    );
                }
                let (pat, types, emits) =
                    self.pattern(seq, where_, emit, within_ms.unwrap_or(0), within.is_some())?;
                let mut pat = pat;
                pat.after_match = after_match.map(|a| a.0).unwrap_or_default();
                (CheckedKind::Pattern(pat), types, emits)
            }
            (
                None,
                Some(Clause::Aggregate {
                    binding,
                    ty,
                    predicate,
                    over,
                    ..
                }),
            ) => {
                if let Some(w) = within {
                    self.err(
                        Diagnostic::error(
                            "misplaced-clause",
                            w.span,
                            "`within` belongs to pattern rules",
                        )
                        .with_label("not allowed in an aggregate rule")
                        .with_hint("the window of an aggregate rule is given by `over D`"),
                    );
                }
                if let Some(w) = where_ {
                    self.err(
                        Diagnostic::error(
                            "misplaced-clause",
                            w.span,
                            "`where` belongs to pattern rules",
                        )
                        .with_label("not allowed in an aggregate rule")
                        .with_hint("use `having` on an aggregate rule"),
                    );
                }
                if let Some((_, span)) = after_match {
                    self.err(
                        Diagnostic::error(
                            "misplaced-clause",
                            span,
                            "`after match` belongs to pattern rules",
                        )
                        .with_label("not allowed in an aggregate rule")
                        .with_hint("an aggregate rule evaluates `having` on every event; limit repeated alerts with `suppress D`"),
                    );
                }
                let over_ms = self.duration(over).unwrap_or(1);
                let tid = self.type_id(ty)?;
                let (agg, emits) = self.aggregate(
                    binding,
                    tid,
                    predicate.as_ref(),
                    over_ms,
                    having,
                    emit,
                    r.name.span,
                )?;
                (CheckedKind::Aggregate(agg), vec![tid], emits)
            }
            _ => return None,
        };

        // The key must exist, with one type, in every type the rule uses.
        let mut key_slots = vec![None; self.schemas.len()];
        if let Some(k) = key {
            let mut key_ty: Option<(Type, TypeId)> = None;
            for &t in &types {
                let schema = &self.schemas[t as usize];
                match schema.slot(&k.name) {
                    Some(slot) => {
                        let fty = schema.fields[slot as usize].ty;
                        if !matches!(fty, Type::String | Type::Int | Type::Bool) {
                            self.err(
                                Diagnostic::error(
                                    "bad-key-type",
                                    k.span,
                                    format!("key field `{}` is {fty} in `{}`", k.name, schema.name),
                                )
                                .with_label("a key must be a string, int or bool field")
                                .with_hint({
                                    let ok: Vec<String> = schema
                                        .fields
                                        .iter()
                                        .filter(|f| {
                                            matches!(f.ty, Type::String | Type::Int | Type::Bool)
                                        })
                                        .map(|f| format!("`{}`", f.name))
                                        .collect();
                                    if ok.is_empty() {
                                        "omit `key` for a global rule".to_string()
                                    } else {
                                        format!(
                                            "key by an identifier such as {}, or omit `key` for a global rule",
                                            ok.join(", ")
                                        )
                                    }
                                }),
                            );
                        } else if let Some((kt, first)) = key_ty.filter(|(kt, _)| *kt != fty) {
                            let first_name = self.schemas[first as usize].name.clone();
                            self.err(
                                Diagnostic::error(
                                    "key-type-mismatch",
                                    k.span,
                                    format!("key field `{}` has different types across the rule's event types", k.name),
                                )
                                .with_label(format!("it is {fty} in `{}`", schema.name))
                                .with_hint(format!(
                                    "it is {kt} in `{first_name}`; a key must have one type in every event type the rule uses"
                                )),
                            );
                        }
                        if key_ty.is_none() {
                            key_ty = Some((fty, t));
                        }
                        key_slots[t as usize] = Some(slot);
                    }
                    None => {
                        let hint =
                            did_you_mean(&k.name, schema.fields.iter().map(|f| f.name.as_str()));
                        self.err(
                            Diagnostic::error(
                                "key-missing",
                                k.span,
                                format!(
                                    "key field `{}` is missing from event type `{}`",
                                    k.name, schema.name
                                ),
                            )
                            .with_label(format!(
                                "`{}` is used by this rule but has no field `{}`",
                                schema.name, k.name
                            ))
                            .with_hint_opt(hint.or_else(|| {
                                let common = common_key_fields(&self.schemas, &types);
                                Some(if common.is_empty() {
                                    format!(
                                        "add `{}` to `event {}` or choose another key",
                                        k.name, schema.name
                                    )
                                } else {
                                    format!(
                                        "add `{}` to `event {}`, or key by {}, which every event type of this rule has",
                                        k.name,
                                        schema.name,
                                        common
                                            .iter()
                                            .map(|c| format!("`{c}`"))
                                            .collect::<Vec<_>>()
                                            .join(" or ")
                                    )
                                })
                            })),
                        );
                    }
                }
            }
        }
        let errors_after = self.diags.iter().filter(|d| d.is_error()).count();
        if errors_after > errors_before {
            return None;
        }
        Some(CheckedRule {
            name: r.name.name.clone(),
            description,
            severity,
            tags,
            key: key.map(|k| k.name.clone()),
            key_slots,
            types,
            kind,
            emit: emit_exprs,
            suppress_ms,
            source_hash: fnv_hex(src),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn aggregate(
        &mut self,
        binding: &ast::Ident,
        ty: TypeId,
        predicate: Option<&ast::Expr>,
        over_ms: i64,
        having: Option<&ast::Expr>,
        emit: &[(ast::Ident, ast::Expr)],
        rule_span: Span,
    ) -> Option<(Aggregate, Vec<(String, Expr)>)> {
        let bindings = vec![BindInfo {
            name: binding.name.clone(),
            ty,
            quantified: true,
            aggregable: true,
            id: 0,
        }];
        let visible = [0u16];
        let pred = predicate.and_then(|p| {
            let mut ecx = ExprCx::new(self, &bindings, &[], &[]);
            ecx.current = Some((ty, Some(0)));
            ecx.aggregate_rule = true;
            ecx.bool_expr(p, "a step predicate")
        });
        let mut ecx = ExprCx::new(self, &bindings, &visible, &[]);
        ecx.current = Some((ty, Some(0)));
        ecx.aggregate_rule = true;
        ecx.no_bare_fields = true;
        let having_expr = match having {
            Some(h) => ecx.bool_expr(h, "`having`"),
            None => {
                ecx.cx.err(
                    Diagnostic::error(
                        "missing-having",
                        rule_span,
                        "an aggregate rule needs `having`",
                    )
                    .with_label("no condition to alert on")
                    .with_hint("e.g. `having count(t) >= 5`"),
                );
                None
            }
        };
        let emits = ecx.emits(emit);
        let having = having_expr?;
        let mut tracked: Vec<TrackedField> = vec![];
        let mut track = |e: &Expr| {
            visit_aggs(e, &mut |func, field, _kind| {
                let Some(field) = field else { return };
                let fty = field_type(&self.schemas[ty as usize], field);
                let t = match tracked.iter_mut().find(|t| t.field == field) {
                    Some(t) => t,
                    None => {
                        tracked.push(TrackedField {
                            field,
                            ty: fty,
                            sum: false,
                            min: false,
                            max: false,
                            distinct: false,
                        });
                        tracked.last_mut().expect("just pushed")
                    }
                };
                match func {
                    AggFunc::Sum | AggFunc::Avg => t.sum = true,
                    AggFunc::Min => t.min = true,
                    AggFunc::Max => t.max = true,
                    AggFunc::DistinctCount => t.distinct = true,
                    AggFunc::Count => {}
                }
            })
        };
        track(&having);
        for (_, e) in &emits {
            track(e);
        }
        Some((
            Aggregate {
                binding: binding.name.clone(),
                ty,
                pred,
                over_ms,
                having,
                tracked,
            },
            emits,
        ))
    }

    fn pattern(
        &mut self,
        seq: &ast::Seq,
        where_: Option<&ast::Expr>,
        emit: &[(ast::Ident, ast::Expr)],
        within_ms: i64,
        has_within: bool,
    ) -> Option<CheckedBody<CheckedPattern>> {
        let n = count_steps(seq);
        if n > MAX_STEPS {
            self.err(
                Diagnostic::error(
                    "too-complex",
                    seq.span,
                    format!("this pattern has {n} steps; at most {MAX_STEPS}"),
                )
                .with_label("too many steps")
                .with_hint("use a quantifier (`{n}`, `{n,m}`) instead of repeating a step"),
            );
            return None;
        }
        let mut pb = PatternBuilder::default();
        // Pass 1: all binding names in order, so "used before matched" can be told
        // apart from "undefined".
        collect_binding_names(seq, &mut pb.all_names);
        let mut visible = vec![];
        let tree = self.seq(
            seq,
            &mut pb,
            &mut visible,
            Ctx {
                quantified: false,
                optional: false,
                written_quant: false,
            },
            true,
        );
        // Leading and trailing negation.
        let first_neg = seq.steps.first().filter(|s| s.negated);
        if let Some(s) = first_neg {
            self.err(
                Diagnostic::error("leading-not", s.span, "a pattern cannot start with `not`")
                    .with_label("nothing has matched yet, so there is nothing to be absent after")
                    .with_hint(
                        "start with the event that opens the window, e.g. `a: Login -> not Logout`",
                    ),
            );
        }
        let absence = seq.steps.last().is_some_and(|s| s.negated) && seq.steps.len() > 1;
        if absence
            && !has_within
            && let Some(s) = seq.steps.last()
        {
            {
                self.err(
                    Diagnostic::error("absence-without-within", s.span, "a trailing `not` needs `within D`")
                        .with_label("absence of what, for how long?")
                        .with_hint("add `within 30s`: the alert fires when 30s pass after the first event with no such event"),
                );
            }
        }
        let tree = tree?;
        if nullable(&tree, &pb) {
            self.err(
                Diagnostic::error(
                    "empty-pattern",
                    seq.span,
                    "this pattern can match without any event",
                )
                .with_label("every step here is optional")
                .with_hint("make at least one step required"),
            );
            return None;
        }
        let binds = pb.bind_infos();
        let all_visible: Vec<u16> = (0..binds.len() as u16).collect();
        let mut ecx = ExprCx::new(self, &binds, &all_visible, &[]);
        ecx.no_bare_fields = true;
        let where_expr = where_.and_then(|w| ecx.bool_expr(w, "`where`"));
        let emits = ecx.emits(emit);
        // Lint: an optional last item never takes an event, because a match
        // completes as soon as everything before it has matched.
        if let (PNode::Seq(items, _), Some(last)) = (&tree, seq.steps.last())
            && items.len() > 1
            && !last.negated
            && items.last().is_some_and(|n| nullable(n, &pb))
        {
            self.err(
                Diagnostic::warning(
                    "optional-last-step",
                    last.span,
                    "an optional last step never matches anything",
                )
                .with_label("the match completes before this step is tried")
                .with_hint(
                    "remove it, or make it required; to alert on its absence use `-> not ...` with `within`",
                ),
            );
        }
        // Lint: unbounded Kleene steps. Under a long window each run may hold
        // every matching event of its key, and runs overlap, so a key's state
        // grows with the square of its events (capped per run by the engine's
        // `max_run_events`).
        for (i, s) in pb.steps.iter().enumerate() {
            if s.max == u32::MAX && within_ms > LONG_WINDOW_MS {
                let span = pb.step_spans[i];
                self.err(
                    Diagnostic::warning(
                        "quadratic-state",
                        span,
                        format!(
                            "this repeated step has no upper bound under `within {}`",
                            fmt_ms(within_ms)
                        ),
                    )
                    .with_label(
                        "every run of a key may collect every matching event for the whole window: n such events on one key hold up to n²/2 events across its runs",
                    )
                    .with_hint(
                        "add an upper bound (`{1,50}`) or shorten `within`; the engine drops a run that reaches --max-run-events (default 1000) events",
                    ),
                );
            } else if s.max == u32::MAX && s.pred.is_none() {
                let span = pb.step_spans[i];
                self.err(
                    Diagnostic::warning(
                        "unbounded-state",
                        span,
                        "this repeated step accepts every event of its type",
                    )
                    .with_label(
                        "each run may hold every such event of its key until `within` expires",
                    )
                    .with_hint("add a predicate or an upper bound, e.g. `{3,20}`"),
                );
            }
        }
        let mut types: Vec<TypeId> = pb
            .steps
            .iter()
            .map(|s| s.ty)
            .chain(pb.negations.iter().map(|n| n.ty))
            .collect();
        types.sort_unstable();
        types.dedup();
        let pattern = CheckedPattern {
            steps: pb.steps,
            bindings: pb.bindings,
            negations: pb.negations,
            tree,
            counters: pb.counters,
            within_ms,
            where_: where_expr,
            after_match: AfterMatch::default(),
            absence,
        };
        if !crate::compile::pattern_fits(&pattern) {
            self.err(
                Diagnostic::error(
                    "too-complex",
                    seq.span,
                    "this pattern is too complex to compile",
                )
                .with_label("too many optional steps or nested groups in a row")
                .with_hint("make some steps required, flatten nested groups, or split the rule"),
            );
            return None;
        }
        Some((pattern, types, emits))
    }

    /// Checks a sequence; `visible` holds the bindings matched before it and gets
    /// the ones it adds.
    fn seq(
        &mut self,
        seq: &ast::Seq,
        pb: &mut PatternBuilder,
        visible: &mut Vec<BindingId>,
        ctx: Ctx,
        top: bool,
    ) -> Option<PNode> {
        let mut items = vec![];
        let mut ok = true;
        for (i, step) in seq.steps.iter().enumerate() {
            if step.negated {
                if !top && i == 0 {
                    self.err(
                        Diagnostic::error(
                            "leading-not",
                            step.span,
                            "a group cannot start with `not`",
                        )
                        .with_label("put the negation between two steps"),
                    );
                    ok = false;
                }
                if let Some(q) = step.quant {
                    self.err(
                        Diagnostic::error(
                            "quantified-not",
                            q.span,
                            "a negated step cannot have a quantifier",
                        )
                        .with_label("remove this quantifier")
                        .with_hint(
                            "one `not` already forbids every such event until the next step",
                        ),
                    );
                    ok = false;
                }
                match &step.atom {
                    Atom::Event {
                        binding,
                        ty,
                        predicate,
                    } => {
                        if let Some(b) = binding {
                            self.err(
                                Diagnostic::error(
                                    "named-not",
                                    b.span,
                                    "a negated step binds no event and cannot be named",
                                )
                                .with_label("remove this name")
                                .with_hint(
                                    "refer to its fields inside its own predicate without a prefix",
                                ),
                            );
                            ok = false;
                        }
                        let Some(tid) = self.type_id(ty) else {
                            ok = false;
                            continue;
                        };
                        let pred = predicate.as_ref().and_then(|p| {
                            let binds = pb.bind_infos();
                            let mut ecx = ExprCx::new(self, &binds, visible, &pb.all_names);
                            ecx.current = Some((tid, None));
                            ecx.bool_expr(p, "a step predicate")
                        });
                        if predicate.is_some() && pred.is_none() {
                            ok = false;
                        }
                        pb.negations.push(Negation { ty: tid, pred });
                        items.push(PNode::Not((pb.negations.len() - 1) as u16));
                    }
                    Atom::Group(_) => {
                        self.err(
                            Diagnostic::error(
                                "negated-group",
                                step.span,
                                "`not` applies to a single event step, not a group",
                            )
                            .with_label("a group cannot be negated")
                            .with_hint("write one `not Type[...]` per forbidden event, e.g. `a: Txn -> not Login -> not Logout -> b: Txn`"),
                        );
                        ok = false;
                    }
                }
                continue;
            }
            let (min, max) = match step.quant {
                Some(q) => {
                    let max = q.max.unwrap_or(u32::MAX);
                    if max < q.min || max == 0 {
                        self.err(
                            Diagnostic::error(
                                "bad-quantifier",
                                q.span,
                                format!(
                                    "quantifier {} matches nothing",
                                    if q.max == Some(q.min) {
                                        format!("{{{}}}", q.min)
                                    } else {
                                        format!("{{{},{max}}}", q.min)
                                    }
                                ),
                            )
                            .with_label(
                                "the upper bound must be at least 1 and not below the lower bound",
                            )
                            .with_hint(if max == 0 {
                                "for an optional step write `?` (that is `{0,1}`)".to_string()
                            } else {
                                format!("did you mean `{{{max},{}}}`?", q.min)
                            }),
                        );
                        ok = false;
                    }
                    (q.min, max)
                }
                None => (1, 1),
            };
            let inner_ctx = Ctx {
                quantified: ctx.quantified || max > 1,
                optional: ctx.optional || min == 0,
                written_quant: ctx.written_quant || step.quant.is_some(),
            };
            match &step.atom {
                Atom::Event {
                    binding,
                    ty,
                    predicate,
                } => {
                    let Some(tid) = self.type_id(ty) else {
                        ok = false;
                        continue;
                    };
                    let step_id = pb.steps.len() as StepId;
                    let bid = binding.as_ref().map(|b| {
                        if pb.bindings.iter().any(|x| x.name == b.name) {
                            self.err(
                                Diagnostic::error(
                                    "duplicate-binding",
                                    b.span,
                                    format!("binding `{}` is defined twice", b.name),
                                )
                                .with_label("each step needs its own name")
                                .with_hint(format!("rename this step, e.g. `{}2`", b.name)),
                            );
                        }
                        pb.bindings.push(Binding {
                            name: b.name.clone(),
                            step: step_id,
                            ty: tid,
                            quantified: inner_ctx.quantified,
                            optional: inner_ctx.optional,
                        });
                        pb.written_quant.push(inner_ctx.written_quant);
                        (pb.bindings.len() - 1) as BindingId
                    });
                    let pred = predicate.as_ref().and_then(|p| {
                        let binds = pb.bind_infos();
                        let mut ecx = ExprCx::new(self, &binds, visible, &pb.all_names);
                        ecx.current = Some((tid, bid));
                        ecx.bool_expr(p, "a step predicate")
                    });
                    if predicate.is_some() && pred.is_none() {
                        ok = false;
                    }
                    if let Some(b) = bid {
                        visible.push(b);
                    }
                    let counter = pb.counters;
                    pb.counters += 1;
                    pb.steps.push(Step {
                        binding: bid,
                        ty: tid,
                        pred,
                        min,
                        max,
                        counter,
                    });
                    pb.step_spans.push(step.span);
                    items.push(PNode::Step(step_id));
                }
                Atom::Group(branches) => {
                    let alt = branches.len() > 1;
                    let mut nodes = vec![];
                    let mut added = vec![];
                    for b in branches {
                        let mut vis = visible.clone();
                        let bctx = Ctx {
                            optional: inner_ctx.optional || alt,
                            ..inner_ctx
                        };
                        match self.seq(b, pb, &mut vis, bctx, false) {
                            Some(n) => nodes.push(n),
                            None => ok = false,
                        }
                        added.extend(vis.into_iter().filter(|v| !visible.contains(v)));
                    }
                    visible.extend(added);
                    let body = if alt {
                        PNode::Alt(nodes)
                    } else {
                        nodes.pop().unwrap_or(PNode::Seq(vec![], vec![]))
                    };
                    if step.quant.is_some() {
                        let counter = pb.counters;
                        pb.counters += 1;
                        if max > 1 && nullable(&body, pb) {
                            self.err(
                                Diagnostic::error(
                                    "empty-pattern",
                                    step.span,
                                    "a repeated group must contain a required step",
                                )
                                .with_label("this group can repeat without consuming an event")
                                .with_hint("make a step of the group required, or quantify the steps instead of the group"),
                            );
                            ok = false;
                        }
                        items.push(PNode::Group {
                            body: Box::new(body),
                            min,
                            max,
                            counter,
                        });
                    } else {
                        items.push(body);
                    }
                }
            }
        }
        ok.then(|| PNode::Seq(items, seq.connectors.clone()))
    }
}

/// A checked rule body with the event types it reads and its emit fields.
type CheckedBody<T> = (T, Vec<TypeId>, Vec<(String, Expr)>);

#[derive(Clone, Copy)]
struct Ctx {
    quantified: bool,
    optional: bool,
    /// Inside a step or group written with a quantifier (`{1}`, `?` included):
    /// the spec's grammar makes such a step quantified, so aggregates over it
    /// are allowed even when it holds at most one event.
    written_quant: bool,
}

#[derive(Default)]
struct PatternBuilder {
    steps: Vec<Step>,
    step_spans: Vec<Span>,
    bindings: Vec<Binding>,
    negations: Vec<Negation>,
    counters: u16,
    all_names: Vec<String>,
    /// Per binding: [`Ctx::written_quant`] where it was defined.
    written_quant: Vec<bool>,
}

impl PatternBuilder {
    fn bind_infos(&self) -> Vec<BindInfo> {
        self.bindings
            .iter()
            .enumerate()
            .map(|(i, b)| BindInfo {
                name: b.name.clone(),
                ty: b.ty,
                quantified: b.quantified,
                aggregable: b.quantified || self.written_quant.get(i).copied().unwrap_or(false),
                id: i as u16,
            })
            .collect()
    }
}

/// At most this many steps and negations in one pattern (ids are 16-bit).
const MAX_STEPS: usize = 1000;

/// A `within` longer than this makes an unbounded repeated step warn
/// (`quadratic-state`).
const LONG_WINDOW_MS: i64 = 86_400_000;

/// Steps and negations of a pattern, groups included.
fn count_steps(seq: &ast::Seq) -> usize {
    seq.steps
        .iter()
        .map(|s| match &s.atom {
            Atom::Event { .. } => 1,
            Atom::Group(bs) => 1 + bs.iter().map(count_steps).sum::<usize>(),
        })
        .sum()
}

fn collect_binding_names(seq: &ast::Seq, out: &mut Vec<String>) {
    for s in &seq.steps {
        match &s.atom {
            Atom::Event {
                binding: Some(b), ..
            } => out.push(b.name.clone()),
            Atom::Event { .. } => {}
            Atom::Group(bs) => bs.iter().for_each(|b| collect_binding_names(b, out)),
        }
    }
}

/// Can this node complete without consuming an event?
fn nullable(n: &PNode, pb: &PatternBuilder) -> bool {
    nullable_steps(n, &pb.steps)
}

pub(crate) fn nullable_steps(n: &PNode, steps: &[Step]) -> bool {
    match n {
        PNode::Step(s) => steps.get(*s as usize).is_none_or(|s| s.min == 0),
        PNode::Not(_) => true,
        PNode::Seq(items, _) => items.iter().all(|i| nullable_steps(i, steps)),
        PNode::Alt(bs) => bs.iter().any(|b| nullable_steps(b, steps)),
        PNode::Group { body, min, .. } => *min == 0 || nullable_steps(body, steps),
    }
}

fn field_type(schema: &Schema, f: FieldRef) -> Type {
    match f {
        FieldRef::Slot(s) => schema.fields.get(s as usize).map_or(Type::String, |f| f.ty),
        FieldRef::Ts => Type::Time,
        FieldRef::Id | FieldRef::Type => Type::String,
    }
}

/// Calls `f` for every aggregate in an expression.
pub fn visit_aggs(e: &Expr, f: &mut dyn FnMut(AggFunc, Option<FieldRef>, Kind)) {
    match e {
        Expr::Agg {
            func, field, kind, ..
        } => f(*func, *field, *kind),
        Expr::Lit(_) | Expr::Field { .. } => {}
        Expr::Not(a)
        | Expr::Neg(_, a)
        | Expr::ToFloat(a)
        | Expr::InSet(_, a, _)
        | Expr::InList(a, _)
        | Expr::Regex(a, _) => visit_aggs(a, f),
        Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, _, a, b) | Expr::Arith(_, _, a, b) => {
            visit_aggs(a, f);
            visit_aggs(b, f);
        }
        Expr::Call(_, args) => args.iter().for_each(|a| visit_aggs(a, f)),
    }
}

/// FNV-1a 64 of a rule's text, as hex: stable across processes and versions.
pub fn fnv_hex(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[derive(Clone)]
struct BindInfo {
    name: String,
    ty: TypeId,
    /// May hold several events (a field read needs `first`/`last`).
    quantified: bool,
    /// Written with a quantifier: aggregates over it are allowed.
    aggregable: bool,
    id: BindingId,
}

/// Expression checking context.
struct ExprCx<'c> {
    cx: &'c mut Checker,
    bindings: &'c [BindInfo],
    visible: &'c [BindingId],
    /// Every binding name of the pattern, for "used before it is matched".
    all_names: &'c [String],
    /// The event being tested and its own binding.
    current: Option<(TypeId, Option<BindingId>)>,
    /// In `having`/`emit` of an aggregate rule: `t.f` is the trigger event.
    aggregate_rule: bool,
    /// In `where`, `having` and `emit`: bare names are not fields.
    no_bare_fields: bool,
}

type Typed = (Expr, Type);

impl<'c> ExprCx<'c> {
    fn new(
        cx: &'c mut Checker,
        bindings: &'c [BindInfo],
        visible: &'c [BindingId],
        all_names: &'c [String],
    ) -> Self {
        ExprCx {
            cx,
            bindings,
            visible,
            all_names,
            current: None,
            aggregate_rule: false,
            no_bare_fields: false,
        }
    }

    fn bool_expr(&mut self, e: &ast::Expr, what: &str) -> Option<Expr> {
        let (ex, ty) = self.expr(e)?;
        if ty != Type::Bool {
            self.cx.err(
                Diagnostic::error(
                    "type-mismatch",
                    e.span,
                    format!("{what} must be a condition (bool), but this is {ty}"),
                )
                .with_label(format!("this is {ty}"))
                .with_hint("compare it with something, e.g. `amount > 100`"),
            );
            return None;
        }
        Some(ex)
    }

    fn emits(&mut self, emit: &[(ast::Ident, ast::Expr)]) -> Vec<(String, Expr)> {
        let mut out: Vec<(String, Expr)> = vec![];
        for (name, e) in emit {
            if out.iter().any(|(n, _)| *n == name.name) {
                self.cx.err(
                    Diagnostic::error(
                        "duplicate-emit",
                        name.span,
                        format!("emit field `{}` is given twice", name.name),
                    )
                    .with_label("already emitted")
                    .with_hint("rename one of them: each becomes a key of the alert's `fields`"),
                );
                continue;
            }
            if let Some((ex, _)) = self.expr(e) {
                out.push((name.name.clone(), ex));
            }
        }
        out
    }

    fn schema(&self, t: TypeId) -> &Schema {
        &self.cx.schemas[t as usize]
    }

    fn field_of(&mut self, ty: TypeId, name: &ast::Ident, owner: &str) -> Option<(FieldRef, Type)> {
        match name.name.as_str() {
            "ts" => return Some((FieldRef::Ts, Type::Time)),
            "id" => return Some((FieldRef::Id, Type::String)),
            "type" => return Some((FieldRef::Type, Type::String)),
            _ => {}
        }
        let schema = self.schema(ty);
        if let Some(slot) = schema.slot(&name.name) {
            return Some((FieldRef::Slot(slot), schema.fields[slot as usize].ty));
        }
        let hint = did_you_mean(&name.name, schema.fields.iter().map(|f| f.name.as_str()));
        let tname = schema.name.clone();
        let fields = schema
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        self.cx.err(
            Diagnostic::error(
                "unknown-field",
                name.span,
                format!("unknown field `{}` on {owner}`{tname}`", name.name),
            )
            .with_label(format!("`{tname}` has no field `{}`", name.name))
            .with_hint_opt(hint.or_else(|| Some(format!("`{tname}` has: {fields}, ts, id, type")))),
        );
        None
    }

    /// Resolves a binding name for use in an expression.
    fn binding(&mut self, name: &ast::Ident) -> Option<BindInfo> {
        if let Some(b) = self.bindings.iter().find(|b| b.name == name.name) {
            let own = self.current.and_then(|c| c.1) == Some(b.id);
            if own || self.visible.contains(&b.id) {
                return Some(b.clone());
            }
        }
        if self.all_names.contains(&name.name) {
            self.cx.err(
                Diagnostic::error("binding-not-yet-matched", name.span, format!("binding `{}` is used before it is matched", name.name))
                    .with_label("this step comes later in the pattern (or in another branch)")
                    .with_hint("a predicate may only refer to steps matched before it; move the condition to `where`"),
            );
            return None;
        }
        let hint = did_you_mean(&name.name, self.bindings.iter().map(|b| b.name.as_str()));
        self.cx.err(
            Diagnostic::error(
                "undefined-binding",
                name.span,
                format!("undefined binding `{}`", name.name),
            )
            .with_label("no step of this rule is named so")
            .with_hint_opt(hint.or_else(|| Some("name a step with `name: Type`".into()))),
        );
        None
    }

    fn expr(&mut self, e: &ast::Expr) -> Option<Typed> {
        match &e.kind {
            ExprKind::Int(i) => Some((Expr::Lit(Lit::Int(*i)), Type::Int)),
            ExprKind::Float(f) => Some((Expr::Lit(Lit::Float(*f)), Type::Float)),
            ExprKind::Str(s) => Some((Expr::Lit(Lit::Str(s.clone())), Type::String)),
            ExprKind::Bool(b) => Some((Expr::Lit(Lit::Bool(*b)), Type::Bool)),
            ExprKind::Duration(ms) => Some((Expr::Lit(Lit::Int(*ms)), Type::Duration)),
            ExprKind::Name(n) => self.name(n),
            ExprKind::Field(base, f) => self.field(base, f, e.span),
            ExprKind::Call(f, args) => self.call(f, args, e.span),
            ExprKind::Unary(UnOp::Not, a) => {
                let (x, t) = self.expr(a)?;
                if t != Type::Bool {
                    return self.mismatch(
                        a.span,
                        format!("`not` needs a bool, but this is {t}"),
                        t,
                    );
                }
                Some((Expr::Not(Box::new(x)), Type::Bool))
            }
            ExprKind::Unary(UnOp::Neg, a) => {
                let (x, t) = self.expr(a)?;
                let k = match t {
                    Type::Int | Type::Duration => Kind::Int,
                    Type::Float => Kind::Float,
                    _ => return self.mismatch(a.span, format!("cannot negate a {t}"), t),
                };
                Some((Expr::Neg(k, Box::new(x)), t))
            }
            ExprKind::Binary(op, a, b) => self.binary(*op, a, b, e.span),
            ExprKind::InSet(a, items) => {
                let (x, t) = self.expr(a)?;
                let kind = match t {
                    Type::String => Kind::Str,
                    Type::Int => Kind::Int,
                    Type::Float => Kind::Float,
                    Type::Bool => Kind::Bool,
                    _ => {
                        return self.mismatch(
                            a.span,
                            format!("`in [...]` does not work on {t}"),
                            t,
                        );
                    }
                };
                let mut lits = vec![];
                for it in items {
                    let lit = match (&it.kind, kind) {
                        (ExprKind::Str(s), Kind::Str) => Lit::Str(s.clone()),
                        (ExprKind::Int(i), Kind::Int) => Lit::Int(*i),
                        (ExprKind::Int(i), Kind::Float) => Lit::Float(*i as f64),
                        (ExprKind::Float(f), Kind::Float) => Lit::Float(*f),
                        (ExprKind::Bool(v), Kind::Bool) => Lit::Bool(*v),
                        _ => {
                            self.cx.err(
                                Diagnostic::error(
                                    "type-mismatch",
                                    it.span,
                                    format!("list item must be a {t} literal"),
                                )
                                .with_label(format!("expected a {t} literal")),
                            );
                            return None;
                        }
                    };
                    lits.push(lit);
                }
                // A float compared with int literals: widen the value instead.
                let (x, kind) = if t == Type::Int && lits.iter().any(|l| matches!(l, Lit::Float(_)))
                {
                    (Expr::ToFloat(Box::new(x)), Kind::Float)
                } else {
                    (x, kind)
                };
                Some((Expr::InSet(kind, Box::new(x), lits), Type::Bool))
            }
            ExprKind::InList(a, name) => {
                let (x, t) = self.expr(a)?;
                if !matches!(t, Type::String | Type::Int) {
                    return self.mismatch(
                        a.span,
                        format!("`in list` compares strings (or ints), but this is {t}"),
                        t,
                    );
                }
                Some((Expr::InList(Box::new(x), name.clone()), Type::Bool))
            }
        }
    }

    fn mismatch(&mut self, span: Span, msg: String, t: Type) -> Option<Typed> {
        self.cx
            .err(Diagnostic::error("type-mismatch", span, msg).with_label(format!("this is {t}")));
        None
    }

    fn name(&mut self, n: &ast::Ident) -> Option<Typed> {
        let is_binding =
            self.bindings.iter().any(|b| b.name == n.name) || self.all_names.contains(&n.name);
        if let Some((ty, _)) = self.current
            && !self.no_bare_fields
        {
            // A field of the event being tested wins over a binding of the same name.
            let schema = self.schema(ty);
            if schema.slot(&n.name).is_some()
                || RESERVED_FIELDS.contains(&n.name.as_str())
                || !is_binding
            {
                let (f, t) = self.field_of(ty, n, "event type ")?;
                return Some((
                    Expr::Field {
                        src: Src::Current,
                        field: f,
                    },
                    t,
                ));
            }
        }
        if is_binding {
            self.cx.err(
                Diagnostic::error(
                    "binding-as-value",
                    n.span,
                    format!("`{}` is a binding, not a value", n.name),
                )
                .with_label("a binding names matched events")
                .with_hint(format!(
                    "read one of its fields, e.g. `{}.amount`, or count it with `count({})`",
                    n.name, n.name
                )),
            );
            return None;
        }
        // Which bindings have a field of this name?
        let owners: Vec<String> = self
            .bindings
            .iter()
            .filter(|b| {
                RESERVED_FIELDS.contains(&n.name.as_str())
                    || self.schema(b.ty).slot(&n.name).is_some()
            })
            .map(|b| {
                if b.quantified && !self.aggregate_rule {
                    format!("`last({}).{}`", b.name, n.name)
                } else {
                    format!("`{}.{}`", b.name, n.name)
                }
            })
            .collect();
        let hint = if owners.is_empty() {
            did_you_mean(&n.name, self.bindings.iter().map(|b| b.name.as_str()))
                .unwrap_or_else(|| format!("write `binding.{}`", n.name))
        } else {
            format!("read it through a step's name: {}", owners.join(" or "))
        };
        self.cx.err(
            Diagnostic::error("unknown-name", n.span, format!("unknown name `{}`", n.name))
                .with_label("fields here must be read through a binding")
                .with_hint(hint),
        );
        None
    }

    fn field(&mut self, base: &ast::Expr, f: &ast::Ident, span: Span) -> Option<Typed> {
        match &base.kind {
            ExprKind::Name(b) => {
                let info = self.binding(b)?;
                let own = self.current.and_then(|c| c.1) == Some(info.id);
                let (fr, t) =
                    self.field_of(info.ty, f, &format!("binding `{}` of type ", info.name))?;
                if own || (self.aggregate_rule && info.id == 0) {
                    return Some((
                        Expr::Field {
                            src: Src::Current,
                            field: fr,
                        },
                        t,
                    ));
                }
                if info.quantified {
                    self.cx.err(
                        Diagnostic::error(
                            "quantified-field",
                            span,
                            format!("`{}` holds several events; `{}.{}` does not say which", info.name, info.name, f.name),
                        )
                        .with_label("ambiguous field of a repeated step")
                        .with_hint(format!(
                            "use `last({b}).{f}`, `first({b}).{f}`, or an aggregate such as `max({b}.{f})`",
                            b = info.name,
                            f = f.name
                        )),
                    );
                    return None;
                }
                Some((
                    Expr::Field {
                        src: Src::Binding(info.id),
                        field: fr,
                    },
                    t,
                ))
            }
            ExprKind::Call(func, args) if func.name == "first" || func.name == "last" => {
                let info = self.agg_binding(func, args, span)?;
                let (fr, t) =
                    self.field_of(info.ty, f, &format!("binding `{}` of type ", info.name))?;
                let src = if func.name == "first" {
                    Src::First(info.id)
                } else {
                    Src::Last(info.id)
                };
                Some((Expr::Field { src, field: fr }, t))
            }
            _ => {
                self.cx.err(
                    Diagnostic::error(
                        "bad-field-access",
                        span,
                        "`.field` can only follow a binding name or first(x)/last(x)",
                    )
                    .with_label("not a binding")
                    .with_hint("read a field through a step's name (`a.amount`) or through `first(xs)` / `last(xs)` (`last(xs).amount`)"),
                );
                None
            }
        }
    }

    /// The binding argument of count/first/last: a name of a quantified binding.
    fn agg_binding(
        &mut self,
        func: &ast::Ident,
        args: &[ast::Expr],
        span: Span,
    ) -> Option<BindInfo> {
        let [arg] = args else {
            self.cx.err(
                Diagnostic::error(
                    "bad-arguments",
                    span,
                    format!("`{}` takes one binding", func.name),
                )
                .with_label(format!("e.g. `{}(x)`", func.name))
                .with_hint(format!(
                    "`{}` takes the name of a repeated step, e.g. `{}(xs)`",
                    func.name, func.name
                )),
            );
            return None;
        };
        let ExprKind::Name(b) = &arg.kind else {
            self.cx.err(
                Diagnostic::error(
                    "bad-arguments",
                    arg.span,
                    format!("`{}` takes a binding name", func.name),
                )
                .with_label("expected the name of a repeated step")
                .with_hint(format!(
                    "`{}` takes the name of a repeated step, e.g. `{}(xs)`",
                    func.name, func.name
                )),
            );
            return None;
        };
        let info = self.binding(b)?;
        self.require_quantified(&info, func, arg.span)?;
        Some(info)
    }

    fn require_quantified(&mut self, info: &BindInfo, func: &ast::Ident, span: Span) -> Option<()> {
        if !info.aggregable {
            self.cx.err(
                Diagnostic::error(
                    "aggregate-non-quantified",
                    span,
                    format!(
                        "`{}` aggregates over a repeated step, but `{}` matches a single event",
                        func.name, info.name
                    ),
                )
                .with_label("not a quantified binding")
                .with_hint(format!(
                    "read the field directly (`{}.field`), or quantify the step (`{{2,}}`, `+`)",
                    info.name
                )),
            );
            return None;
        }
        Some(())
    }

    fn call(&mut self, f: &ast::Ident, args: &[ast::Expr], span: Span) -> Option<Typed> {
        let agg = match f.name.as_str() {
            "count" => Some(AggFunc::Count),
            "sum" => Some(AggFunc::Sum),
            "avg" => Some(AggFunc::Avg),
            "min" => Some(AggFunc::Min),
            "max" => Some(AggFunc::Max),
            "distinct_count" => Some(AggFunc::DistinctCount),
            _ => None,
        };
        if let Some(func) = agg {
            if func == AggFunc::Count {
                let info = self.agg_binding(f, args, span)?;
                return Some((
                    Expr::Agg {
                        func,
                        binding: info.id,
                        field: None,
                        kind: Kind::Int,
                    },
                    Type::Int,
                ));
            }
            let [arg] = args else {
                self.cx.err(
                    Diagnostic::error(
                        "bad-arguments",
                        span,
                        format!("`{}` takes one field of a binding", f.name),
                    )
                    .with_label(format!("e.g. `{}(x.amount)`", f.name))
                    .with_hint(format!(
                        "`{}` aggregates one field over a repeated step: `{}(xs.amount)`",
                        f.name, f.name
                    )),
                );
                return None;
            };
            let ExprKind::Field(base, field) = &arg.kind else {
                self.cx.err(
                    Diagnostic::error(
                        "bad-arguments",
                        arg.span,
                        format!("`{}` takes a field of a binding", f.name),
                    )
                    .with_label(format!("expected e.g. `{}(x.amount)`", f.name))
                    .with_hint(format!(
                        "`{}` aggregates one field over a repeated step: `{}(xs.amount)`",
                        f.name, f.name
                    )),
                );
                return None;
            };
            let ExprKind::Name(b) = &base.kind else {
                self.cx.err(
                    Diagnostic::error(
                        "bad-arguments",
                        arg.span,
                        format!("`{}` takes a field of a binding", f.name),
                    )
                    .with_label("expected `binding.field`")
                    .with_hint(format!(
                        "`{}` aggregates one field over a repeated step: `{}(xs.amount)`",
                        f.name, f.name
                    )),
                );
                return None;
            };
            let info = self.binding(b)?;
            self.require_quantified(&info, f, base.span)?;
            let (fr, t) =
                self.field_of(info.ty, field, &format!("binding `{}` of type ", info.name))?;
            let (kind, rty) = match (func, t) {
                (AggFunc::DistinctCount, Type::Float) => (Kind::Float, Type::Int),
                (AggFunc::DistinctCount, Type::String) => (Kind::Str, Type::Int),
                (AggFunc::DistinctCount, Type::Bool) => (Kind::Bool, Type::Int),
                (AggFunc::DistinctCount, _) => (Kind::Int, Type::Int),
                (AggFunc::Avg, Type::Int | Type::Float) => (
                    if t == Type::Int {
                        Kind::Int
                    } else {
                        Kind::Float
                    },
                    Type::Float,
                ),
                (AggFunc::Sum, Type::Int | Type::Float | Type::Duration) => (
                    if t == Type::Float {
                        Kind::Float
                    } else {
                        Kind::Int
                    },
                    t,
                ),
                (AggFunc::Min | AggFunc::Max, Type::Int | Type::Time) => (Kind::Int, t),
                (AggFunc::Min | AggFunc::Max, Type::Float) => (Kind::Float, t),
                (AggFunc::Min | AggFunc::Max, Type::String) => (Kind::Str, t),
                _ => {
                    return self.mismatch(
                        field.span,
                        format!("`{}` needs a number, but `{}` is {t}", f.name, field.name),
                        t,
                    );
                }
            };
            return Some((
                Expr::Agg {
                    func,
                    binding: info.id,
                    field: Some(fr),
                    kind,
                },
                rty,
            ));
        }
        if f.name == "first" || f.name == "last" {
            self.cx.err(
                Diagnostic::error(
                    "bad-field-access",
                    span,
                    format!("`{}(x)` must be followed by a field", f.name),
                )
                .with_label(format!("write `{}(x).field`", f.name))
                .with_hint(match args {
                    [
                        ast::Expr {
                            kind: ExprKind::Name(b),
                            ..
                        },
                    ] => format!(
                        "`{}({})` is an event; read one of its fields, e.g. `{}({}).ts`",
                        f.name, b.name, f.name, b.name
                    ),
                    _ => format!("e.g. `{}(xs).ts` for a repeated step `xs`", f.name),
                }),
            );
            return None;
        }
        let (func, sig): (Func, &[Type]) = match f.name.as_str() {
            "abs" => (Func::Abs, &[Type::Float]),
            "lower" => (Func::Lower, &[Type::String]),
            "upper" => (Func::Upper, &[Type::String]),
            "len" => (Func::Len, &[Type::String]),
            "contains" => (Func::Contains, &[Type::String, Type::String]),
            "starts_with" => (Func::StartsWith, &[Type::String, Type::String]),
            "hour" => (Func::Hour, &[Type::Time]),
            "geo_km" => (
                Func::GeoKm,
                &[Type::Float, Type::Float, Type::Float, Type::Float],
            ),
            other => {
                let hint = did_you_mean(
                    other,
                    [
                        "abs",
                        "lower",
                        "upper",
                        "len",
                        "contains",
                        "starts_with",
                        "hour",
                        "geo_km",
                        "count",
                        "sum",
                        "avg",
                        "min",
                        "max",
                        "distinct_count",
                        "first",
                        "last",
                    ],
                );
                self.cx.err(
                    Diagnostic::error(
                        "unknown-function",
                        f.span,
                        format!("unknown function `{other}`"),
                    )
                    .with_label("not a built-in function")
                    .with_hint(hint.unwrap_or_else(|| {
                        "built-in functions: abs, lower, upper, len, contains, starts_with, hour, geo_km; aggregates: count, sum, avg, min, max, distinct_count, first, last".into()
                    })),
                );
                return None;
            }
        };
        if args.len() != sig.len() {
            self.cx.err(
                Diagnostic::error(
                    "bad-arguments",
                    span,
                    format!(
                        "`{}` takes {} argument(s), got {}",
                        f.name,
                        sig.len(),
                        args.len()
                    ),
                )
                .with_label("wrong number of arguments")
                .with_hint(format!("the signature is `{}`", signature(func))),
            );
            return None;
        }
        let mut out = vec![];
        let mut ret = match func {
            Func::Lower | Func::Upper => Type::String,
            Func::Len | Func::Hour => Type::Int,
            Func::Contains | Func::StartsWith => Type::Bool,
            Func::GeoKm => Type::Float,
            Func::Abs => Type::Float,
        };
        for (a, want) in args.iter().zip(sig) {
            let (x, t) = self.expr(a)?;
            let x = match (want, t) {
                (Type::Float, Type::Int) if func == Func::Abs => {
                    ret = Type::Int;
                    x
                }
                (Type::Float, Type::Duration) if func == Func::Abs => {
                    ret = Type::Duration;
                    x
                }
                (Type::Float, Type::Int) => widen(x),
                (w, t) if *w == t => x,
                _ => {
                    return self.mismatch(
                        a.span,
                        format!("`{}` expects {want} here, but this is {t}", f.name),
                        t,
                    );
                }
            };
            out.push(x);
        }
        Some((Expr::Call(func, out), ret))
    }

    fn binary(&mut self, op: BinOp, a: &ast::Expr, b: &ast::Expr, span: Span) -> Option<Typed> {
        let la = self.expr(a);
        let lb = self.expr(b);
        let ((x, ta), (y, tb)) = (la?, lb?);
        let bx = Box::new;
        match op {
            BinOp::And | BinOp::Or => {
                for (t, s) in [(ta, a.span), (tb, b.span)] {
                    if t != Type::Bool {
                        return self.mismatch(
                            s,
                            format!("`{}` needs bool operands, but this is {t}", op.symbol()),
                            t,
                        );
                    }
                }
                Some((
                    if op == BinOp::And {
                        Expr::And(bx(x), bx(y))
                    } else {
                        Expr::Or(bx(x), bx(y))
                    },
                    Type::Bool,
                ))
            }
            BinOp::Match => {
                if ta != Type::String {
                    return self.mismatch(
                        a.span,
                        format!("`=~` matches strings, but this is {ta}"),
                        ta,
                    );
                }
                let Expr::Lit(Lit::Str(pat)) = y else {
                    self.cx.err(
                        Diagnostic::error(
                            "bad-regex",
                            b.span,
                            "the right side of `=~` must be a string literal",
                        )
                        .with_label("expected \"regex\"")
                        .with_hint("a regex is checked and compiled once, so it must be written in the rule; compare two fields with `==` or `contains(a, b)`"),
                    );
                    return None;
                };
                if let Err(e) = regex::Regex::new(&pat) {
                    let msg = e.to_string();
                    let last = msg
                        .lines()
                        .rfind(|l| !l.trim().is_empty())
                        .unwrap_or("")
                        .trim();
                    let last = last.strip_prefix("error: ").unwrap_or(last).to_string();
                    self.cx.err(
                        Diagnostic::error("invalid-regex", b.span, format!("invalid regular expression: {last}"))
                            .with_label("this regex does not compile")
                            .with_hint("the syntax is Rust's `regex` crate (like RE2/PCRE without look-around)"),
                    );
                    return None;
                }
                Some((Expr::Regex(bx(x), pat), Type::Bool))
            }
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let cop = match op {
                    BinOp::Eq => CmpOp::Eq,
                    BinOp::Ne => CmpOp::Ne,
                    BinOp::Lt => CmpOp::Lt,
                    BinOp::Le => CmpOp::Le,
                    BinOp::Gt => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                let ordering = !matches!(cop, CmpOp::Eq | CmpOp::Ne);
                let (kind, x, y) = match (ta, tb) {
                    (Type::Int, Type::Int)
                    | (Type::Time, Type::Time)
                    | (Type::Duration, Type::Duration) => (Kind::Int, x, y),
                    (Type::Float, Type::Float) => (Kind::Float, x, y),
                    (Type::Int, Type::Float) => (Kind::Float, widen(x), y),
                    (Type::Float, Type::Int) => (Kind::Float, x, widen(y)),
                    (Type::String, Type::String) => (Kind::Str, x, y),
                    (Type::Bool, Type::Bool) if !ordering => (Kind::Bool, x, y),
                    _ => {
                        self.cx.err(
                            Diagnostic::error(
                                "type-mismatch",
                                span,
                                format!(
                                    "type mismatch: cannot compare {ta} with {tb} using `{}`",
                                    op.symbol()
                                ),
                            )
                            .with_label(format!("{ta} {} {tb}", op.symbol()))
                            .with_hint_opt(type_hint(ta, tb, b)),
                        );
                        return None;
                    }
                };
                Some((Expr::Cmp(cop, kind, bx(x), bx(y)), Type::Bool))
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
                let aop = match op {
                    BinOp::Add => ArithOp::Add,
                    BinOp::Sub => ArithOp::Sub,
                    BinOp::Mul => ArithOp::Mul,
                    BinOp::Div => ArithOp::Div,
                    _ => ArithOp::Rem,
                };
                use Type::*;
                let r = match (aop, ta, tb) {
                    (ArithOp::Div, Int, Int) => Some((Kind::Float, widen(x), widen(y), Float)),
                    (_, Int, Int) => Some((Kind::Int, x, y, Int)),
                    (_, Float, Float) => Some((Kind::Float, x, y, Float)),
                    (_, Int, Float) => Some((Kind::Float, widen(x), y, Float)),
                    (_, Float, Int) => Some((Kind::Float, x, widen(y), Float)),
                    (ArithOp::Sub, Time, Time) => Some((Kind::Int, x, y, Duration)),
                    (ArithOp::Add | ArithOp::Sub, Time, Duration) => Some((Kind::Int, x, y, Time)),
                    (ArithOp::Add, Duration, Time) => Some((Kind::Int, x, y, Time)),
                    (ArithOp::Add | ArithOp::Sub | ArithOp::Rem, Duration, Duration) => {
                        Some((Kind::Int, x, y, Duration))
                    }
                    (ArithOp::Mul | ArithOp::Div, Duration, Int) => {
                        Some((Kind::Int, x, y, Duration))
                    }
                    (ArithOp::Mul, Int, Duration) => Some((Kind::Int, x, y, Duration)),
                    _ => None,
                };
                match r {
                    Some((k, x, y, t)) => Some((Expr::Arith(aop, k, bx(x), bx(y)), t)),
                    None => {
                        self.cx.err(
                            Diagnostic::error(
                                "type-mismatch",
                                span,
                                format!(
                                    "type mismatch: cannot apply `{}` to {ta} and {tb}",
                                    op.symbol()
                                ),
                            )
                            .with_label(format!("{ta} {} {tb}", op.symbol())),
                        );
                        None
                    }
                }
            }
        }
    }
}

/// Fields usable as a key that every one of `types` declares, with one type.
fn common_key_fields(schemas: &[Schema], types: &[TypeId]) -> Vec<String> {
    let Some(first) = types.first().and_then(|t| schemas.get(*t as usize)) else {
        return vec![];
    };
    first
        .fields
        .iter()
        .filter(|f| matches!(f.ty, Type::String | Type::Int | Type::Bool))
        .filter(|f| {
            types.iter().all(|t| {
                schemas[*t as usize]
                    .fields
                    .iter()
                    .any(|g| g.name == f.name && g.ty == f.ty)
            })
        })
        .map(|f| f.name.clone())
        .collect()
}

/// A built-in function's signature, as documented.
fn signature(f: Func) -> &'static str {
    match f {
        Func::Abs => "abs(x)",
        Func::Lower => "lower(s)",
        Func::Upper => "upper(s)",
        Func::Len => "len(s)",
        Func::Contains => "contains(s, sub)",
        Func::StartsWith => "starts_with(s, prefix)",
        Func::Hour => "hour(t)",
        Func::GeoKm => "geo_km(lat1, lon1, lat2, lon2)",
    }
}

fn type_hint(ta: Type, tb: Type, b: &ast::Expr) -> Option<String> {
    match (ta, tb, &b.kind) {
        (Type::Int | Type::Float, Type::String, ExprKind::Str(s)) if s.parse::<f64>().is_ok() => {
            Some(format!("remove the quotes: `{s}` is a number"))
        }
        (Type::Time, Type::Duration, _) | (Type::Duration, Type::Time, _) => {
            Some("subtract two times to get a duration, e.g. `b.ts - a.ts < 5m`".into())
        }
        _ => None,
    }
}

/// int → float, folded for literals.
fn widen(e: Expr) -> Expr {
    match e {
        Expr::Lit(Lit::Int(i)) => Expr::Lit(Lit::Float(i as f64)),
        other => Expr::ToFloat(Box::new(other)),
    }
}

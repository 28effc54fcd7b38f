//! [`Checked`] → [`RuleSet`]: builds each pattern's NFA points.
//!
//! The construction follows continuations: for a point, "what may the next event
//! be?" is answered by walking forward from the point through the rest of the
//! enclosing sequences and group ends until consuming steps (or the end) are
//! reached. Optional items put "skip it" before "enter it" (reluctant), group ends
//! put "leave" before "loop", alternation forks.

use crate::ast::Connector;
use crate::check::{Checked, CheckedKind, CheckedPattern, PNode};
use crate::program::*;

/// Compiles a checked rule set. Infallible: every error was reported by the checker.
pub fn compile(checked: Checked) -> RuleSet {
    let rules = checked
        .rules
        .into_iter()
        .map(|r| Rule {
            name: r.name,
            description: r.description,
            severity: r.severity,
            tags: r.tags,
            key: r.key,
            key_slots: r.key_slots,
            types: r.types,
            kind: match r.kind {
                CheckedKind::Pattern(p) => RuleKind::Pattern(compile_pattern(p)),
                CheckedKind::Aggregate(a) => RuleKind::Aggregate(a),
            },
            emit: r.emit,
            suppress_ms: r.suppress_ms,
            source_hash: r.source_hash,
        })
        .collect();
    RuleSet {
        schemas: checked.schemas,
        rules,
    }
}

#[derive(Clone)]
enum Frame<'a> {
    /// Continue a sequence at item `next`.
    Rest(&'a [PNode], &'a [Connector], usize),
    /// An iteration of a quantified group finished.
    GroupEnd(&'a PNode),
}

#[derive(Clone, Default)]
struct Pending {
    ops: Vec<CounterOp>,
    negs: Vec<u16>,
    strict: bool,
}

struct Builder<'a> {
    steps: &'a [Step],
    /// The pattern ends in `not` (an absence rule).
    absence: bool,
    /// Set when the construction hit [`MAX_DEPTH`] or [`MAX_WORK`] and dropped
    /// edges; the checker rejects such patterns, so compiled programs are whole.
    overflow: std::cell::Cell<bool>,
    /// Work left.
    budget: std::cell::Cell<usize>,
}

/// How far one point's continuation walk may recurse.
const MAX_DEPTH: usize = 128;
/// Units of construction work (continuation steps) per pattern, over all its points.
const MAX_WORK: usize = 20_000;

impl<'a> Builder<'a> {
    fn enter(
        &self,
        node: &'a PNode,
        p: Pending,
        cont: &[Frame<'a>],
        depth: usize,
    ) -> Option<Choice> {
        if depth > MAX_DEPTH || !self.spend() {
            self.overflow.set(true);
            return None;
        }
        match node {
            PNode::Step(s) => {
                let edge = Choice::Edge(Edge {
                    ops: p.ops.clone(),
                    negations: p.negs.clone(),
                    strict: p.strict,
                    target: Target::Step(*s),
                });
                if self.steps[*s as usize].min == 0 {
                    first(vec![self.next(p, cont, depth + 1), Some(edge)])
                } else {
                    Some(edge)
                }
            }
            PNode::Not(n) => {
                let mut p = p;
                p.negs.push(*n);
                self.next(p, cont, depth + 1)
            }
            PNode::Seq(items, conns) => self.seq_from(items, conns, 0, p, cont, depth + 1),
            PNode::Alt(branches) => {
                let kids: Vec<Choice> = branches
                    .iter()
                    .filter_map(|b| self.enter(b, p.clone(), cont, depth + 1))
                    .collect();
                match kids.len() {
                    0 => None,
                    1 => kids.into_iter().next(),
                    _ => Some(Choice::Fork(kids)),
                }
            }
            PNode::Group {
                body, min, counter, ..
            } => {
                let mut inner = p.clone();
                inner.ops.push(CounterOp::Reset(*counter));
                let mut c = cont.to_vec();
                c.push(Frame::GroupEnd(node));
                let into = self.enter(body, inner, &c, depth + 1);
                if *min == 0 {
                    first(vec![self.next(p, cont, depth + 1), into])
                } else {
                    into
                }
            }
        }
    }

    fn seq_from(
        &self,
        items: &'a [PNode],
        conns: &'a [Connector],
        i: usize,
        mut p: Pending,
        cont: &[Frame<'a>],
        depth: usize,
    ) -> Option<Choice> {
        if i >= items.len() {
            return self.next(p, cont, depth + 1);
        }
        if i > 0 && conns.get(i - 1) == Some(&Connector::Strict) {
            p.strict = true;
        }
        let mut c = cont.to_vec();
        c.push(Frame::Rest(items, conns, i + 1));
        self.enter(&items[i], p, &c, depth + 1)
    }

    /// Counts one unit of work; false once the budget is spent.
    fn spend(&self) -> bool {
        let left = self.budget.get();
        self.budget.set(left.saturating_sub(1));
        left > 0
    }

    fn next(&self, mut p: Pending, cont: &[Frame<'a>], depth: usize) -> Option<Choice> {
        if depth > MAX_DEPTH || !self.spend() {
            self.overflow.set(true);
            return None;
        }
        let Some((top, rest)) = cont.split_last() else {
            // Pending negations reach the end only in an absence rule (the
            // pattern ends in `not`) or by skipping optional items after a
            // `not` (`a -> not N -> x?`): there the match is complete as soon as
            // `a` is (spec 3.1 point 4), so nothing is left for `N` to forbid.
            let target = if p.negs.is_empty() || !self.absence {
                p.negs.clear();
                Target::Accept
            } else {
                Target::Absence
            };
            return Some(Choice::Edge(Edge {
                ops: p.ops,
                negations: p.negs,
                strict: p.strict,
                target,
            }));
        };
        match top {
            Frame::Rest(items, conns, i) => self.seq_from(items, conns, *i, p, rest, depth + 1),
            Frame::GroupEnd(g) => {
                let PNode::Group {
                    body,
                    min,
                    max,
                    counter,
                } = g
                else {
                    return None;
                };
                p.ops.push(CounterOp::Inc(*counter));
                let mut leave = p.clone();
                if *min > 1 {
                    leave.ops.push(CounterOp::AtLeast(*counter, *min));
                }
                let leave = self.next(leave, rest, depth + 1);
                let again = (*max > 1).then(|| {
                    let mut again = p.clone();
                    if *max != u32::MAX {
                        again.ops.push(CounterOp::Below(*counter, *max));
                    }
                    // Between iterations, events are skipped (relaxed).
                    again.strict = false;
                    let mut c = rest.to_vec();
                    c.push(Frame::GroupEnd(g));
                    self.enter(body, again, &c, depth + 1)
                });
                first(vec![leave, again.flatten()])
            }
        }
    }

    /// Records, for every step, the continuation that follows it.
    fn conts(&self, node: &'a PNode, cont: Vec<Frame<'a>>, out: &mut Vec<Option<Vec<Frame<'a>>>>) {
        match node {
            PNode::Step(s) => out[*s as usize] = Some(cont),
            PNode::Not(_) => {}
            PNode::Seq(items, conns) => {
                for (i, item) in items.iter().enumerate() {
                    let mut c = cont.clone();
                    c.push(Frame::Rest(items, conns, i + 1));
                    self.conts(item, c, out);
                }
            }
            PNode::Alt(bs) => bs.iter().for_each(|b| self.conts(b, cont.clone(), out)),
            PNode::Group { body, .. } => {
                let mut c = cont;
                c.push(Frame::GroupEnd(node));
                self.conts(body, c, out);
            }
        }
    }
}

fn first(kids: Vec<Option<Choice>>) -> Option<Choice> {
    let kids: Vec<Choice> = kids.into_iter().flatten().collect();
    match kids.len() {
        0 => None,
        1 => kids.into_iter().next(),
        _ => Some(Choice::First(kids)),
    }
}

fn prefix_ops(c: &mut Choice, ops: &[CounterOp]) {
    match c {
        Choice::Edge(e) => {
            let mut v = ops.to_vec();
            v.append(&mut e.ops);
            e.ops = v;
        }
        Choice::First(cs) | Choice::Fork(cs) => cs.iter_mut().for_each(|c| prefix_ops(c, ops)),
    }
}

/// Whether a checked pattern's NFA can be built whole (not too many optional
/// items in a row, not too many edges). The checker reports those that cannot.
pub(crate) fn pattern_fits(p: &CheckedPattern) -> bool {
    build_points(p).1
}

fn compile_pattern(p: CheckedPattern) -> Pattern {
    let (points, fits) = build_points(&p);
    debug_assert!(fits, "the checker rejects patterns that do not fit");
    Pattern {
        steps: p.steps,
        bindings: p.bindings,
        negations: p.negations,
        points,
        counters: p.counters,
        within_ms: p.within_ms,
        where_: p.where_,
        after_match: p.after_match,
        absence: p.absence,
    }
}

/// The points of a pattern, and whether they are complete.
fn build_points(p: &CheckedPattern) -> (Vec<Point>, bool) {
    let b = Builder {
        steps: &p.steps,
        absence: p.absence,
        overflow: std::cell::Cell::new(false),
        budget: std::cell::Cell::new(MAX_WORK),
    };
    let start = b
        .enter(&p.tree, Pending::default(), &[], 0)
        .unwrap_or(Choice::First(vec![]));
    let mut conts = vec![None; p.steps.len()];
    b.conts(&p.tree, vec![], &mut conts);
    let mut points = vec![Point {
        exits: start,
        repeat: None,
    }];
    for (i, s) in p.steps.iter().enumerate() {
        let cont = conts[i].clone().unwrap_or_default();
        let mut exits = b
            .next(Pending::default(), &cont, 0)
            .unwrap_or(Choice::First(vec![]));
        if s.min > 1 {
            prefix_ops(&mut exits, &[CounterOp::AtLeast(s.counter, s.min)]);
        }
        points.push(Point {
            exits,
            repeat: (s.max > 1).then_some(i as StepId),
        });
    }
    (points, !b.overflow.get())
}

//! One small rule per construct (`tests/data/constructs/<construct>.vgl`); the
//! readable NFA dump of each is a snapshot. The dumps were read and checked by
//! hand; a few structural facts are also asserted in plain code below.

use crate::common::{compile_data, vgl_files};
use rule_lang::program::{Choice, CounterOp, Pattern, RuleKind, RuleSet, Target};

fn compile(name: &str) -> RuleSet {
    let c = compile_data(&format!("constructs/{name}.vgl"));
    assert!(
        !c.diagnostics.has_errors(),
        "{name}:\n{}",
        c.diagnostics.render(false)
    );
    c.program.expect("no errors")
}

fn pattern(set: &RuleSet) -> &Pattern {
    match &set.rules[0].kind {
        RuleKind::Pattern(p) => p,
        RuleKind::Aggregate(_) => panic!("{} is not a pattern rule", set.rules[0].name),
    }
}

#[test]
fn construct_dumps() {
    for (name, _) in vgl_files("constructs") {
        let set = compile(&name);
        assert_eq!(set.rules.len(), 1, "{name}: one rule per file");
        assert_eq!(
            set.rules[0].name, name,
            "{name}: the rule is named after its file"
        );
        insta::assert_snapshot!(name.as_str(), set.dump_rule(&set.rules[0]));
    }
}

/// Flattens a choice into its edges' targets, in priority order.
fn targets(c: &Choice) -> Vec<Target> {
    match c {
        Choice::Edge(e) => vec![e.target],
        Choice::First(cs) | Choice::Fork(cs) => cs.iter().flat_map(targets).collect(),
    }
}

#[test]
fn optional_step_is_skipped_first() {
    let set = compile("optional");
    let p = pattern(&set);
    // After A (point 1): C (step 2) before B (step 1), in a First.
    assert!(matches!(p.points[1].exits, Choice::First(_)));
    assert_eq!(
        targets(&p.points[1].exits),
        [Target::Step(2), Target::Step(1)]
    );
}

#[test]
fn alternation_forks() {
    let set = compile("alternation");
    let p = pattern(&set);
    assert!(matches!(p.points[1].exits, Choice::Fork(ref k) if k.len() == 2));
}

#[test]
fn strict_edges_are_strict() {
    let set = compile("mixed_connectors");
    let p = pattern(&set);
    let strict = |i: usize| match &p.points[i].exits {
        Choice::Edge(e) => e.strict,
        other => panic!("unexpected {other:?}"),
    };
    assert!(strict(1), "a ->> b");
    assert!(!strict(2), "b -> c");
}

#[test]
fn quantified_group_has_counter_ops() {
    let set = compile("group_quantified");
    let p = pattern(&set);
    let mut ops = vec![];
    fn collect(c: &Choice, out: &mut Vec<CounterOp>) {
        match c {
            Choice::Edge(e) => out.extend(e.ops.iter().copied()),
            Choice::First(cs) | Choice::Fork(cs) => cs.iter().for_each(|c| collect(c, out)),
        }
    }
    for pt in &p.points {
        collect(&pt.exits, &mut ops);
    }
    assert!(ops.iter().any(|o| matches!(o, CounterOp::Reset(_))));
    assert!(ops.iter().any(|o| matches!(o, CounterOp::Inc(_))));
    assert!(ops.iter().any(|o| matches!(o, CounterOp::AtLeast(_, 2))));
    assert!(ops.iter().any(|o| matches!(o, CounterOp::Below(_, 3))));
}

#[test]
fn absence_ends_in_absence_target() {
    let set = compile("absence");
    let p = pattern(&set);
    assert!(p.absence);
    assert_eq!(targets(&p.points[1].exits), [Target::Absence]);
}

//! Every example of the language specification, and a rule per grammar form and
//! expression form, parses, checks without errors and compiles.

use crate::common::{compile_data, read_data};
use rule_lang::program::{Choice, RuleKind};

const FILE: &str = "spec_examples.vgl";

#[test]
fn spec_examples_parse_without_errors() {
    let text = read_data(FILE);
    let (ast, diags) = rule_lang::parse(0, &text);
    assert!(diags.is_empty(), "syntax errors: {diags:#?}");
    assert_eq!(ast.events.len(), 3);
    let decls = text.lines().filter(|l| l.starts_with("rule ")).count();
    assert_eq!(ast.rules.len(), decls, "every `rule` line parsed to a rule");
}

#[test]
fn spec_examples_check_without_errors_or_warnings() {
    let text = read_data(FILE);
    let (ast, parse_diags) = rule_lang::parse(0, &text);
    assert!(parse_diags.is_empty());
    let (checked, diags) = rule_lang::check(&[(ast.clone(), text.as_str())]);
    assert!(
        diags.is_empty(),
        "checker diagnostics: {:#?}",
        diags
            .iter()
            .map(|d| (d.code, &d.message))
            .collect::<Vec<_>>()
    );
    assert_eq!(checked.rules.len(), ast.rules.len());
}

#[test]
fn spec_examples_compile() {
    let compiled = compile_data(FILE);
    assert!(
        compiled.diagnostics.items.is_empty(),
        "{}",
        compiled.diagnostics.render(false)
    );
    let set = compiled.program.expect("compiles");
    let text = read_data(FILE);
    assert_eq!(
        set.rules.len(),
        text.lines().filter(|l| l.starts_with("rule ")).count()
    );
    // The same text through the one-call API.
    let again = rule_lang::compile_str(FILE, &text).expect("compile_str agrees");
    assert_eq!(again, set);

    // A few facts the examples promise.
    let card = set.rule("card_testing").expect("card_testing");
    assert_eq!(card.severity.as_str(), "high");
    assert_eq!(card.key.as_deref(), Some("card_id"));
    assert_eq!(card.suppress_ms, 3_600_000);
    assert_eq!(card.tags, ["card", "testing"]);
    let RuleKind::Pattern(p) = &card.kind else {
        panic!("card_testing is a pattern rule")
    };
    assert_eq!(p.within_ms, 600_000);
    assert_eq!((p.steps[0].min, p.steps[0].max), (3, u32::MAX));
    assert!(p.where_.is_some());
    assert_eq!(card.emit.len(), 3);

    let geo = set.rule("geo_velocity").expect("geo_velocity");
    let RuleKind::Aggregate(a) = &geo.kind else {
        panic!("geo_velocity is an aggregate rule")
    };
    assert_eq!(a.over_ms, 3_600_000);

    assert!(set.rule("followed_by").expect("rule").key.is_none());
    let trailing = set.rule("trailing_not").expect("rule");
    let RuleKind::Pattern(p) = &trailing.kind else {
        panic!()
    };
    assert!(p.absence);

    let strict = set.rule("strict_followed_by").expect("rule");
    let RuleKind::Pattern(p) = &strict.kind else {
        panic!()
    };
    assert!(matches!(&p.points[1].exits, Choice::Edge(e) if e.strict));

    for (name, am) in [
        ("where_default_skip", "SkipPastLast"),
        ("skip_to_next", "SkipToNext"),
        ("no_skip", "NoSkip"),
        ("followed_by", "SkipPastLast"),
    ] {
        let RuleKind::Pattern(p) = &set.rule(name).expect("rule").kind else {
            panic!()
        };
        assert_eq!(format!("{:?}", p.after_match), am, "{name}");
    }

    let desc = &set.rule("strings_with_escapes").expect("rule").description;
    assert_eq!(desc, "quotes \"inside\" and a backslash \\ and a tab\t");
}

/// The whole rule set survives a JSON round trip (the gateway ships it so).
#[test]
fn spec_examples_round_trip_through_json() {
    let set = compile_data(FILE).program.expect("compiles");
    let json = serde_json::to_string(&set).expect("serialise");
    let back: rule_lang::RuleSet = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(back, set);
}

//! Targeted parser checks: words that begin with a keyword, operator
//! precedence, durations, comments and trailing commas.

use rule_lang::program::RuleKind;

const SCHEMA: &str = "event E { k: string, order: int, android: bool, nothing: bool, \
    notes: string, index: int, listing: string, origin: string, n: int, x: float }\n";

/// The predicate of the first step of the only rule, as the dump prints it.
fn first_pred(pred: &str) -> String {
    let text = format!("{SCHEMA}rule r {{ key k pattern e: E[{pred}] within 1m }}");
    let set = rule_lang::compile_str("p.vgl", &text)
        .unwrap_or_else(|d| panic!("`{pred}` does not compile:\n{}", d.render(false)));
    let dump = set.dump_rule(&set.rules[0]);
    let line = dump
        .lines()
        .find(|l| l.trim_start().starts_with("step 0:"))
        .expect("a step line");
    let open = line.find('[').expect("a predicate");
    line[open + 1..line.len() - 1].to_string()
}

#[test]
fn names_that_begin_with_keywords() {
    assert_eq!(first_pred("order > 1"), "$.order >:i 1");
    assert_eq!(first_pred("android"), "$.android");
    assert_eq!(first_pred("not nothing"), "not ($.nothing)");
    assert_eq!(first_pred("notes == \"a\""), "$.notes ==:s \"a\"");
    assert_eq!(first_pred("index in [1, 2]"), "$.index in [1, 2]");
    assert_eq!(
        first_pred("listing in list \"l\""),
        "$.listing in list \"l\""
    );
    assert_eq!(
        first_pred("origin == \"x\" or android"),
        "($.origin ==:s \"x\" or $.android)"
    );
    assert_eq!(
        first_pred("android and nothing or order > 0"),
        "(($.android and $.nothing) or $.order >:i 0)"
    );
}

#[test]
fn a_binding_may_begin_with_not() {
    let text = format!(
        "{SCHEMA}rule r {{ key k pattern nothing_yet: E -> notable: E[n > nothing_yet.n] within 1m }}"
    );
    let set = rule_lang::compile_str("p.vgl", &text).unwrap_or_else(|d| panic!("{d}"));
    let RuleKind::Pattern(p) = &set.rules[0].kind else {
        panic!()
    };
    assert!(p.negations.is_empty());
    assert_eq!(p.bindings[0].name, "nothing_yet");
    assert_eq!(p.bindings[1].name, "notable");
}

#[test]
fn operator_precedence() {
    assert_eq!(
        first_pred("android or nothing and n > 1"),
        "($.android or ($.nothing and $.n >:i 1))"
    );
    assert_eq!(first_pred("not n == 1"), "not ($.n ==:i 1)");
    assert_eq!(first_pred("n + 2 * 3 > 1"), "($.n +:i (2 *:i 3)) >:i 1");
    assert_eq!(first_pred("n - 1 - 1 > 0"), "(($.n -:i 1) -:i 1) >:i 0");
    assert_eq!(first_pred("-n + 1 > 0"), "(-($.n) +:i 1) >:i 0");
    assert_eq!(first_pred("n / 2 > 1"), "(float($.n) /:f 2.0) >:f 1.0");
    assert_eq!(first_pred("n % 7 == 0"), "($.n %:i 7) ==:i 0");
    assert_eq!(first_pred("(n + 2) * 3 > 1"), "(($.n +:i 2) *:i 3) >:i 1");
    assert_eq!(
        first_pred("n in [1] and index in [2]"),
        "($.n in [1] and $.index in [2])"
    );
    assert_eq!(
        first_pred("notes =~ \"^a\" and x >= 1"),
        "($.notes =~ \"^a\" and $.x >=:f 1.0)"
    );
}

#[test]
fn durations() {
    use rule_lang::parse_duration;
    assert_eq!(parse_duration("250ms"), Ok(250));
    assert_eq!(parse_duration("30s"), Ok(30_000));
    assert_eq!(parse_duration("10m"), Ok(600_000));
    assert_eq!(parse_duration("2h"), Ok(7_200_000));
    assert_eq!(parse_duration("1d"), Ok(86_400_000));
    assert!(parse_duration("10").unwrap_err().contains("no unit"));
    assert!(
        parse_duration("10x")
            .unwrap_err()
            .contains("unknown duration unit")
    );
    assert!(parse_duration("1.5h").unwrap_err().contains("`90m`"));
    assert!(parse_duration("0.5s").unwrap_err().contains("`500ms`"));
    assert!(parse_duration("1.25m").unwrap_err().contains("`75s`"));
    assert!(parse_duration("99999999999999999999d").is_err());
    assert!(parse_duration("").is_err());
}

#[test]
fn comments_and_trailing_commas() {
    let text = "# leading comment\n\
        event E { # after a brace\n  k: string, # after a field\n  n: int, # trailing comma\n}\n\
        rule r { # comment\n  tags [\"a\", \"b\",]\n  key k\n  pattern e: E[n in [1, 2,]] # c\n  within 1m\n  emit { n: e.n, }\n}\n# end";
    let set = rule_lang::compile_str("c.vgl", text).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(set.rules[0].tags, ["a", "b"]);
    assert_eq!(set.rules[0].emit.len(), 1);
}

#[test]
fn a_hash_inside_a_string_is_not_a_comment() {
    let text = format!("{SCHEMA}rule r {{ key k pattern e: E[notes == \"#1\"] within 1m }}");
    assert!(rule_lang::compile_str("h.vgl", &text).is_ok());
}

#[test]
fn empty_and_comment_only_files_are_empty_rule_sets() {
    for text in ["", "\n\n", "# only a comment\n"] {
        let set = rule_lang::compile_str("e.vgl", text).unwrap_or_else(|d| panic!("{d}"));
        assert!(set.rules.is_empty() && set.schemas.is_empty());
    }
}

/// After a syntax error, the other declarations of the file are still checked.
#[test]
fn syntax_errors_do_not_hide_other_declarations() {
    let text = format!(
        "{SCHEMA}rule broken {{ key k pattern e: E[n > ] within 1m }}\n\
         rule fine {{ key k pattern e: E within 1m }}\n\
         rule also_broken {{ key k pattern e: Ee within 1m }}\n"
    );
    let (ast, diags) = rule_lang::parse(0, &text);
    assert_eq!(diags.len(), 1);
    assert_eq!(ast.events.len(), 1);
    assert_eq!(ast.rules.len(), 2, "fine and also_broken parse");
    let Err(d) = rule_lang::compile_str("s.vgl", &text) else {
        panic!("errors expected")
    };
    let codes: Vec<_> = d.items.iter().map(|d| d.code).collect();
    assert_eq!(codes, ["syntax", "unknown-type"]);
}

#[test]
fn numbers_with_an_exponent_are_floats() {
    assert_eq!(first_pred("x > 1e12"), "$.x >:f 1000000000000.0");
    assert_eq!(first_pred("x > 2.5E-3"), "$.x >:f 0.0025");
    assert_eq!(first_pred("x < 1e+2"), "$.x <:f 100.0");
    let text = format!("{SCHEMA}rule r {{ key k pattern e: E[x > 1e999] within 1m }}");
    let err = rule_lang::compile_str("p.vgl", &text).expect_err("out of range");
    assert!(
        err.render(false).contains("out of range"),
        "{}",
        err.render(false)
    );
}

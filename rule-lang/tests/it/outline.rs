//! The rule outline behind alert explanations: per binding the predicate and
//! the fields the rule reads of it, the time span, `where`/`having`, `emit`.

use rule_lang::compile_str;

const SCHEMA: &str = "event Txn { card_id: string, amount: float, country: string, status: string, merchant: string }\n";

fn outline(rule: &str) -> rule_lang::program::RuleOutline {
    let set = compile_str("t.vgl", &format!("{SCHEMA}{rule}")).expect("compiles");
    set.outline(&set.rules[0])
}

#[test]
fn a_pattern_names_each_bindings_predicate_and_the_fields_read_of_it() {
    let o = outline(
        "rule r {\n  severity low\n  key card_id\n  pattern a: Txn[status == \"declined\"] -> b: Txn[amount > a.amount * 5]\n  within 10m\n  where b.country != a.country\n  emit { m: b.merchant }\n}\n",
    );
    assert_eq!(o.within_ms, Some(600_000));
    let a = &o.bindings[0];
    assert_eq!((a.name.as_str(), a.ty.as_str()), ("a", "Txn"));
    assert_eq!(a.predicate.as_deref(), Some("$.status == \"declined\""));
    // Its own predicate, b's predicate and `where` read a's fields.
    assert_eq!(a.fields, ["amount", "country", "status"]);
    let b = &o.bindings[1];
    assert_eq!(b.predicate.as_deref(), Some("$.amount > (a.amount * 5.0)"));
    assert_eq!(b.fields, ["amount", "country", "merchant"]);
    assert_eq!(o.where_.as_deref(), Some("b.country != a.country"));
    assert_eq!(o.having, None);
    assert_eq!(o.emit, [("m".to_string(), "b.merchant".to_string())]);
}

#[test]
fn an_aggregate_has_one_binding_its_window_and_having() {
    let o = outline(
        "rule g {\n  severity high\n  key card_id\n  aggregate t: Txn[status == \"approved\"] over 1h\n  having distinct_count(t.country) >= 3 and sum(t.amount) > 1000\n  emit { n: count(t) }\n}\n",
    );
    assert_eq!(o.within_ms, Some(3_600_000));
    assert_eq!(o.bindings.len(), 1);
    let t = &o.bindings[0];
    assert_eq!(t.name, "t");
    assert_eq!(t.predicate.as_deref(), Some("$.status == \"approved\""));
    assert_eq!(t.fields, ["amount", "country", "status"]);
    let having = o.having.expect("having");
    assert!(
        having.contains("distinct_count(t.country) >= 3")
            && having.contains("sum(t.amount) > 1000"),
        "{having}"
    );
}

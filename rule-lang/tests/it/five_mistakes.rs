//! One file with five different mistakes in five rules: one compile run
//! reports all five (and only those).

use crate::common::compile_data;

#[test]
fn five_mistakes_five_errors() {
    let c = compile_data("five_mistakes.vgl");
    assert!(c.program.is_none());
    let d = &c.diagnostics;
    let json = d.to_json();
    let errors: Vec<(&str, usize)> = json
        .iter()
        .filter(|j| j.severity == rule_lang::DiagSeverity::Error)
        .map(|j| (j.code.as_str(), j.line))
        .collect();
    assert_eq!(
        errors,
        [
            ("syntax", 23),
            ("unknown-type", 31),
            ("type-mismatch", 46),
            ("binding-not-yet-matched", 53),
            ("key-missing", 59),
        ],
        "{}",
        d.render(false)
    );
    assert_eq!(d.items.len(), 5, "no warnings either:\n{}", d.render(false));
    insta::assert_snapshot!("five_mistakes", d.render(false));
}

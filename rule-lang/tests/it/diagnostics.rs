//! Diagnostics as data: `tests/data/diagnostics/<name>.vgl` is one bad rule
//! file per diagnostic code. Each is compiled; its rendered report is a
//! snapshot, and its diagnostic codes are asserted here in plain code, so a
//! wrong code fails even when snapshots are re-accepted.

use crate::common::{compile_data, vgl_files};
use rule_lang::DiagSeverity;

/// File name → the codes of every diagnostic it must produce, in report order.
const EXPECTED: &[(&str, &[&str])] = &[
    // Syntax.
    ("syntax", &["syntax"]),
    ("syntax_unknown_clause", &["syntax"]),
    ("syntax_single_equals", &["syntax"]),
    ("syntax_keyword_as_name", &["syntax"]),
    // A broken rule does not hide the mistakes of the next one.
    ("syntax_missing_brace", &["syntax", "unknown-type"]),
    ("bad_number", &["bad-number"]),
    // Schemas and names.
    ("unknown_type", &["unknown-type"]),
    ("unknown_type_no_suggestion", &["unknown-type"]),
    ("unknown_field", &["unknown-field"]),
    (
        "unknown_field_no_suggestion",
        &["unknown-field", "unknown-field"],
    ),
    ("unknown_field_type", &["unknown-field-type"]),
    ("reserved_field", &["reserved-field"]),
    ("duplicate_field", &["duplicate-field"]),
    ("duplicate_type", &["duplicate-type"]),
    ("duplicate_rule", &["duplicate-rule"]),
    // Rule structure.
    ("duplicate_clause", &["duplicate-clause"]),
    ("unknown_severity", &["unknown-severity"]),
    ("no_pattern", &["no-pattern"]),
    ("pattern_and_aggregate", &["pattern-and-aggregate"]),
    ("misplaced_clause", &["misplaced-clause"]),
    ("missing_having", &["missing-having"]),
    ("missing_within", &["missing-within"]),
    ("invalid_duration", &["invalid-duration"]),
    ("invalid_duration_fraction", &["invalid-duration"]),
    ("invalid_duration_zero", &["invalid-duration"]),
    // Keys.
    ("key_missing", &["key-missing"]),
    ("bad_key_type", &["bad-key-type"]),
    ("key_type_mismatch", &["key-type-mismatch"]),
    // Patterns.
    ("leading_not", &["leading-not"]),
    // A pattern rule without `within` also gets missing-within.
    (
        "absence_without_within",
        &["missing-within", "absence-without-within"],
    ),
    ("quantified_not", &["quantified-not"]),
    ("named_not", &["named-not"]),
    ("negated_group", &["negated-group"]),
    ("empty_pattern", &["empty-pattern"]),
    ("bad_quantifier", &["bad-quantifier"]),
    ("bad_quantifier_too_large", &["bad-quantifier"]),
    ("duplicate_binding", &["duplicate-binding"]),
    // Bindings and expressions.
    ("undefined_binding", &["undefined-binding"]),
    ("binding_not_yet_matched", &["binding-not-yet-matched"]),
    ("binding_as_value", &["binding-as-value"]),
    ("unknown_name", &["unknown-name"]),
    ("aggregate_non_quantified", &["aggregate-non-quantified"]),
    ("quantified_field", &["quantified-field"]),
    ("bad_field_access", &["bad-field-access"]),
    ("type_mismatch", &["type-mismatch"]),
    ("unknown_function", &["unknown-function"]),
    ("bad_arguments", &["bad-arguments"]),
    ("invalid_regex", &["invalid-regex"]),
    ("bad_regex", &["bad-regex"]),
    ("duplicate_emit", &["duplicate-emit"]),
    // Limits that keep parsing and compiling within a small stack.
    ("too_complex", &["too-complex"]),
    // Warnings.
    ("quadratic_state", &["quadratic-state", "quadratic-state"]),
    ("unbounded_state", &["unbounded-state"]),
    ("optional_last_step", &["optional-last-step"]),
];

/// Files whose only diagnostics are warnings: they still compile.
const WARNING_ONLY: &[&str] = &["unbounded_state", "optional_last_step", "quadratic_state"];

#[test]
fn every_file_has_an_expected_entry_and_vice_versa() {
    let files: Vec<String> = vgl_files("diagnostics").into_iter().map(|f| f.0).collect();
    for f in &files {
        assert!(
            EXPECTED.iter().any(|(n, _)| n == f),
            "tests/data/diagnostics/{f}.vgl has no entry in EXPECTED"
        );
    }
    for (n, _) in EXPECTED {
        assert!(
            files.iter().any(|f| f == n),
            "EXPECTED names {n}, but tests/data/diagnostics/{n}.vgl does not exist"
        );
    }
}

#[test]
fn diagnostic_codes() {
    let mut failures = vec![];
    for (name, codes) in EXPECTED {
        let c = compile_data(&format!("diagnostics/{name}.vgl"));
        let got: Vec<&str> = c.diagnostics.items.iter().map(|d| d.code).collect();
        if got != *codes {
            failures.push(format!("{name}: expected {codes:?}, got {got:?}"));
        }
        let warning_only = WARNING_ONLY.contains(name);
        if warning_only != c.program.is_some() {
            failures.push(format!(
                "{name}: program is {}",
                if c.program.is_some() {
                    "present despite errors"
                } else {
                    "missing although there are only warnings"
                }
            ));
        }
        let errors = c.diagnostics.errors().count();
        if warning_only {
            if errors != 0
                || c.diagnostics
                    .items
                    .iter()
                    .any(|d| d.severity != DiagSeverity::Warning)
            {
                failures.push(format!("{name}: expected only warnings"));
            }
        } else if errors == 0 {
            failures.push(format!("{name}: expected errors"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every diagnostic names a place inside its file, has a message, a label and
/// a hint, and the JSON form agrees with the caret text.
#[test]
fn diagnostics_are_located_labelled_and_hinted() {
    for (name, rel) in vgl_files("diagnostics") {
        let c = compile_data(&rel);
        let d = &c.diagnostics;
        let text = &d.sources.files[0].text;
        let json = d.to_json();
        assert_eq!(json.len(), d.items.len());
        for (item, j) in d.items.iter().zip(&json) {
            let what = format!("{name}: {}", item.code);
            assert!(item.span.start < item.span.end, "{what}: empty span");
            assert!(
                item.span.end as usize <= text.len(),
                "{what}: span past the end"
            );
            assert!(!item.message.is_empty(), "{what}: no message");
            assert!(!item.label.is_empty(), "{what}: no label");
            assert!(item.hint.is_some(), "{what}: no hint");
            assert_eq!(j.file, rel, "{what}");
            assert!(j.line >= 1 && j.column >= 1, "{what}");
            assert_eq!(j.code, item.code);
            // The caret text names the file, line and column.
            let loc = format!("{rel}:{}:{}", j.line, j.column);
            assert!(
                d.render(false).contains(&loc),
                "{what}: rendered text lacks {loc}"
            );
        }
    }
}

#[test]
fn rendered_diagnostics() {
    for (name, rel) in vgl_files("diagnostics") {
        let c = compile_data(&rel);
        let rendered = c.diagnostics.render(false);
        insta::assert_snapshot!(name.as_str(), rendered);
    }
}

/// Coloured output differs from plain output only by escape codes.
#[test]
fn colour_only_adds_escape_codes() {
    let c = compile_data("diagnostics/unknown_type.vgl");
    let plain = c.diagnostics.render(false);
    let colour = c.diagnostics.render(true);
    assert!(colour.contains('\u{1b}'));
    let mut stripped = String::new();
    let mut chars = colour.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            // Skip `ESC [ ... m`.
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            stripped.push(ch);
        }
    }
    assert_eq!(stripped, plain);
}

/// Diagnostics across several files name the right file.
#[test]
fn duplicates_across_files_name_both_places() {
    let mut sources = rule_lang::Sources::new();
    sources.add(
        "a.vgl",
        "event Txn { card_id: string, amount: float }\n\
         rule big { key card_id aggregate t: Txn over 1h having count(t) > 1 }\n",
    );
    sources.add(
        "b.vgl",
        "event Txn { card_id: string }\n\
         rule big { key card_id aggregate t: Txn over 1h having count(t) > 2 }\n",
    );
    let c = rule_lang::compile_sources(sources);
    let json = c.diagnostics.to_json();
    let codes: Vec<(&str, &str, usize)> = json
        .iter()
        .map(|j| (j.code.as_str(), j.file.as_str(), j.line))
        .collect();
    assert_eq!(
        codes,
        [
            ("duplicate-type", "b.vgl", 1),
            ("duplicate-rule", "b.vgl", 2)
        ]
    );
    assert_eq!(
        json[1].hint.as_deref(),
        Some(
            "the first `big` is on line 2 of another file of the set; rule names are unique across all files of a rule set"
        )
    );
}

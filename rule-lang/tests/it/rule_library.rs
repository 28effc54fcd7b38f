//! The project's rule library (`rules/` at the workspace root) must load as one
//! rule set without errors. Warnings are printed, not asserted: they are advice
//! to the rule authors.

use crate::common::workspace_root;

#[test]
fn rule_library_loads_without_errors() {
    let dir = workspace_root().join("rules");
    let compiled = rule_lang::load_paths(std::slice::from_ref(&dir))
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    let d = &compiled.diagnostics;
    let warnings = d.items.iter().filter(|x| !x.is_error()).count();
    if warnings > 0 {
        println!(
            "{warnings} warning(s) in {}:\n{}",
            dir.display(),
            d.render(false)
        );
    }
    assert!(!d.has_errors(), "rules/ has errors:\n{}", d.render(false));
    let program = compiled.program.expect("no errors, so a program");
    assert!(!program.rules.is_empty(), "rules/ holds no rules");
    assert!(
        program.schema_id("Txn").is_some(),
        "rules/events.vgl declares Txn"
    );
    // Every rule dumps (the dump walks every point and expression).
    for r in &program.rules {
        assert!(!program.dump_rule(r).is_empty());
    }
    println!(
        "rules/: {} event types, {} rules",
        program.schemas.len(),
        program.rules.len()
    );
}

/// Each golden case under `rules/tests/<case>/` (skipped by `load_paths` on
/// `rules/`, since every case declares its own schemas) compiles on its own.
#[test]
fn golden_case_rules_compile() {
    let dir = workspace_root().join("rules/tests");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!("no {}", dir.display());
        return;
    };
    let mut cases: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    let mut failures = vec![];
    for case in &cases {
        let has_rules = std::fs::read_dir(case)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .any(|e| e.path().extension().is_some_and(|x| x == "vgl"))
            })
            .unwrap_or(false);
        if !has_rules {
            continue;
        }
        match rule_lang::load_paths(std::slice::from_ref(case)) {
            Ok(c) if c.diagnostics.has_errors() => failures.push(c.diagnostics.render(false)),
            Ok(c) if !c.diagnostics.items.is_empty() => {
                println!("{}", c.diagnostics.render(false));
            }
            Ok(_) => {}
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

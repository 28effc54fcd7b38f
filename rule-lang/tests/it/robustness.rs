//! Robustness: whatever the text, compiling it returns a rule set or
//! diagnostics; it never panics. Random byte strings and random edits of the
//! (valid) spec examples are fed to `compile_str`, and the diagnostics are
//! rendered, since rendering walks every span.

use crate::common::read_data;
use proptest::prelude::*;
use proptest::sample::Index;

/// Compiles, renders, and checks the basic promises of the result.
fn compile_and_render(text: &str) {
    match rule_lang::compile_str("fuzz.vgl", text) {
        Ok(set) => {
            for r in &set.rules {
                let _ = set.dump_rule(r);
            }
        }
        Err(d) => {
            assert!(d.has_errors(), "Err without an error diagnostic");
            let _ = d.render(false);
            for j in d.to_json() {
                assert!(j.line >= 1 && j.column >= 1);
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Delete(Index),
    Insert(Index, char),
    Replace(Index, char),
}

/// Characters that matter to the grammar, plus any character at all.
fn interesting_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => prop::sample::select(vec![
            '{', '}', '[', ']', '(', ')', '-', '>', ':', ',', '|', '?', '+', '"', '#', '\n', ' ',
            '.', '=', '~', '!', '<', '*', '/', '%', '0', '9', 'a', 'z', '_', '\\', 'é', '€',
        ]),
        1 => any::<char>(),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<Index>().prop_map(Edit::Delete),
        (any::<Index>(), interesting_char()).prop_map(|(i, c)| Edit::Insert(i, c)),
        (any::<Index>(), interesting_char()).prop_map(|(i, c)| Edit::Replace(i, c)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        match e {
            Edit::Delete(i) if !chars.is_empty() => {
                chars.remove(i.index(chars.len()));
            }
            Edit::Insert(i, c) => {
                let at = i.index(chars.len() + 1);
                chars.insert(at, *c);
            }
            Edit::Replace(i, c) if !chars.is_empty() => {
                let at = i.index(chars.len());
                chars[at] = *c;
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

fn spec_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| read_data("spec_examples.vgl"))
}

/// The spec examples cut into the schemas (everything before the first rule)
/// and one chunk per rule.
fn spec_parts() -> &'static (String, Vec<String>) {
    static PARTS: std::sync::OnceLock<(String, Vec<String>)> = std::sync::OnceLock::new();
    PARTS.get_or_init(|| {
        let text = spec_text();
        let mut starts: Vec<usize> = text.match_indices("\nrule ").map(|(i, _)| i + 1).collect();
        let header = text[..starts[0]].to_string();
        starts.push(text.len());
        let rules = starts
            .windows(2)
            .map(|w| text[w[0]..w[1]].to_string())
            .collect();
        (header, rules)
    })
}

/// The schemas and a few consecutive rules of the spec examples: small enough
/// that many edited variants compile quickly.
fn spec_slice(first: Index, count: usize) -> String {
    let (header, rules) = spec_parts();
    let start = first.index(rules.len());
    let end = (start + count).min(rules.len());
    let mut text = header.clone();
    for r in &rules[start..end] {
        text.push_str(r);
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        compile_and_render(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_grammar_soup_never_panics(
        chars in prop::collection::vec(interesting_char(), 0..300),
    ) {
        let text: String = chars.into_iter().collect();
        compile_and_render(&text);
    }

    #[test]
    fn edited_spec_rules_never_panic(
        first in any::<Index>(),
        count in 1usize..4,
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        compile_and_render(&apply(&spec_slice(first, count), &edits));
    }
}

proptest! {
    // The whole file takes longer to compile (unoptimised): fewer cases.
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn edited_spec_examples_never_panic(edits in prop::collection::vec(edit(), 1..5)) {
        compile_and_render(&apply(spec_text(), &edits));
    }
}

/// The unedited texts compile, so the edits above start from valid programs.
#[test]
fn the_mutation_seeds_are_valid() {
    assert!(rule_lang::compile_str("spec_examples.vgl", spec_text()).is_ok());
    let rules = spec_parts().1.len();
    assert!(rules > 30);
    let (header, parts) = spec_parts();
    for (n, part) in parts.iter().enumerate() {
        let text = format!("{header}{part}");
        if let Err(d) = rule_lang::compile_str("slice.vgl", &text) {
            panic!("rule {n} alone does not compile:\n{}", d.render(false));
        }
    }
}

const SCHEMA: &str = "event T { k: string, n: int, ok: bool }\n";

/// Pathological nesting and long chains end in diagnostics (or a program),
/// not in a stack overflow.
#[test]
fn deep_nesting_and_long_chains() {
    let n = 20_000;
    let cases = [
        // Parentheses in an expression.
        format!(
            "{SCHEMA}rule r {{ key k pattern a: T[{}n > 1{}] within 1m }}",
            "(".repeat(n),
            ")".repeat(n)
        ),
        // Unclosed parentheses.
        format!("{SCHEMA}rule r {{ key k pattern a: T[{}", "(".repeat(n)),
        // Groups in a pattern.
        format!(
            "{SCHEMA}rule r {{ key k pattern {}a: T{} within 1m }}",
            "(".repeat(n),
            ")".repeat(n)
        ),
        // Prefix operators.
        format!(
            "{SCHEMA}rule r {{ key k pattern a: T[{}ok] within 1m }}",
            "not ".repeat(n)
        ),
        format!(
            "{SCHEMA}rule r {{ key k pattern a: T[{}n > 0] within 1m }}",
            "- ".repeat(n)
        ),
        // A long chain of binary operators.
        format!(
            "{SCHEMA}rule r {{ key k pattern a: T[n{} > 0] within 1m }}",
            " + 1".repeat(n)
        ),
        format!(
            "{SCHEMA}rule r {{ key k pattern a: T[{} ok] within 1m }}",
            "ok and ".repeat(n)
        ),
        // Long patterns.
        format!(
            "{SCHEMA}rule r {{ key k pattern a: T{} within 1m }}",
            " -> T".repeat(2_000)
        ),
        format!(
            "{SCHEMA}rule r {{ key k pattern a: T{} -> z: T within 1m }}",
            " -> T?".repeat(200)
        ),
        // Many field accesses.
        format!(
            "{SCHEMA}rule r {{ key k pattern a: T -> b: T[a{} > 1] within 1m }}",
            ".n".repeat(n)
        ),
    ];
    for text in &cases {
        let Err(d) = rule_lang::compile_str("deep.vgl", text) else {
            panic!("expected a too-complex error for {}…", &text[..120]);
        };
        assert!(
            d.items.iter().any(|d| d.code == "too-complex"),
            "{}",
            d.render(false)
        );
        compile_and_render(text);
    }
    // A long list is flat, not deep: it compiles.
    let list = format!(
        "{SCHEMA}rule r {{ key k pattern a: T[n in [{}1]] within 1m }}",
        "1, ".repeat(n)
    );
    assert!(rule_lang::compile_str("list.vgl", &list).is_ok());
    // Just inside the limits: 32 levels of brackets, a 60-deep expression.
    let nested = format!(
        "{SCHEMA}rule r {{ key k pattern a: T[{}n > 1{}] within 1m }}",
        "(".repeat(30),
        ")".repeat(30)
    );
    assert!(rule_lang::compile_str("nested.vgl", &nested).is_ok());
    let chain = format!(
        "{SCHEMA}rule r {{ key k pattern a: T[n{} > 0] within 1m }}",
        " + 1".repeat(60)
    );
    assert!(rule_lang::compile_str("chain.vgl", &chain).is_ok());
}

/// The fuzzer's seed corpus (`fuzz/seeds/parse_rules`) is valid rule text.
#[test]
fn fuzz_seeds_compile() {
    let dir = crate::common::workspace_root().join("fuzz/seeds/parse_rules");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz seed directory") {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).expect("seed text");
        if let Err(d) = rule_lang::compile_str(&path.display().to_string(), &text) {
            panic!("{}", d.render(false));
        }
        n += 1;
    }
    assert!(n >= 2, "at least two seeds");
}

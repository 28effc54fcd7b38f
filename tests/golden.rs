//! Golden cases: every folder under `rules/tests/` (and the shared reference
//! cases, `shared/cases/` beside the repository or above it, when present) holds
//! `rules.vgl`, `events.jsonl` and `expected.jsonl`; optional `options.json`
//! sets replay options (`{"lateness": "5s", "flush_all": true, "lists":
//! {"name": ["a"]}}`). The format is described in `rules/tests/README.md`.
//!
//! A case passes when replay reproduces the expected alerts exactly, as a
//! multiset (none missing, none extra), compared on rule, key, at (as an
//! instant), matched, `fields` and `id`. The project's own cases
//! (`rules/tests/`) must state `fields` and `id` on every expected alert; the
//! reference cases compute only rule, key, at and matched (their README: every
//! other field is the engine's own), so for them `fields` and `id` are compared
//! only when every expected alert of the case states them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shared reference cases: `shared/cases` beside the repository, or beside
/// one of its parent directories (a git worktree checked out further down).
fn shared_cases() -> Option<PathBuf> {
    let root = root().canonicalize().ok()?;
    root.ancestors()
        .skip(1)
        .map(|a| a.join("shared/cases"))
        .find(|p| p.is_dir())
}

/// Every case folder, with whether it is one of the project's own cases
/// (which must state `fields` and `id` on every expected alert).
fn cases() -> Vec<(PathBuf, bool)> {
    let mut out = vec![];
    let bases = [
        (Some(root().join("rules/tests")), true),
        (shared_cases(), false),
    ];
    for (base, own) in bases {
        let Some(Ok(rd)) = base.map(std::fs::read_dir) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("expected.jsonl").exists())
            .collect();
        dirs.sort();
        out.extend(dirs.into_iter().map(|d| (d, own)));
    }
    out
}

fn instant(at: &serde_json::Value) -> i64 {
    let s = at.as_str().unwrap_or_default();
    cep_engine::time::parse_rfc3339_ms(s).unwrap_or_else(|| panic!("bad `at`: {s}"))
}

/// Which optional members of an alert a case compares.
#[derive(Clone, Copy)]
struct Compare {
    fields: bool,
    id: bool,
}

/// Decides, from the expected alerts, whether `fields` and `id` are compared:
/// an own case must state both on every alert; a reference case states a
/// member on every alert or on none.
fn compare_for(expected: &[serde_json::Value], own: bool) -> Result<Compare, String> {
    let mut cmp = Compare {
        fields: true,
        id: true,
    };
    for (member, flag) in [("fields", &mut cmp.fields), ("id", &mut cmp.id)] {
        let stated = expected.iter().filter(|a| a.get(member).is_some()).count();
        if stated == expected.len() {
            continue;
        }
        if own {
            return Err(format!(
                "expected.jsonl: {} of {} alerts state no `{member}` (every alert of a case \
                 under rules/tests states `fields` and `id`; see rules/tests/README.md)",
                expected.len() - stated,
                expected.len()
            ));
        }
        if stated > 0 {
            return Err(format!(
                "expected.jsonl: `{member}` is stated on {stated} of {} alerts (state it on \
                 every alert or on none)",
                expected.len()
            ));
        }
        *flag = false;
    }
    Ok(cmp)
}

/// The comparable identity of an alert. Numbers in `fields` are compared as
/// the engine writes them: both sides are read from JSON text by the same
/// parser, so `950.0` and `950` differ and a float must be written exactly.
fn identity(a: &serde_json::Value, cmp: Compare) -> String {
    let matched: BTreeMap<String, serde_json::Value> = a["matched"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let mut id = serde_json::json!([a["rule"], a["key"], instant(&a["at"]), matched]);
    if let Some(parts) = id.as_array_mut() {
        if cmp.fields {
            parts.push(serde_json::json!({ "fields": a["fields"] }));
        }
        if cmp.id {
            parts.push(serde_json::json!({ "id": a["id"] }));
        }
    }
    id.to_string()
}

fn multiset(items: impl IntoIterator<Item = String>) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

fn run_case(dir: &Path, own: bool) -> Result<usize, String> {
    let compiled = rule_lang::load_paths(&[dir.join("rules.vgl")]).map_err(|e| e.to_string())?;
    let rules = compiled
        .program
        .ok_or_else(|| compiled.diagnostics.render(false))?;
    let mut opts =
        vigil_replay::ReplayOpts::for_events(dir.join("events.jsonl").display().to_string());
    let options_path = dir.join("options.json");
    let mut lists_file = None;
    if options_path.exists() {
        let o: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&options_path).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        if let Some(l) = o["lateness"].as_str() {
            opts.lateness = rule_lang::parse_duration(l)?;
        }
        opts.flush_all = o["flush_all"].as_bool().unwrap_or(false);
        if o.get("lists").is_some() {
            let p = std::env::temp_dir().join(format!(
                "vigil-lists-{}-{}.json",
                std::process::id(),
                dir.file_name().and_then(|n| n.to_str()).unwrap_or("x")
            ));
            std::fs::write(&p, o["lists"].to_string()).map_err(|e| e.to_string())?;
            lists_file = Some(p.clone());
            opts.lists = Some(p);
        }
    }
    let mut alerts = vec![];
    vigil_replay::replay(Arc::new(rules), &opts, |a| {
        alerts.push(a);
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    if let Some(p) = lists_file {
        let _ = std::fs::remove_file(p);
    }
    // Through JSON text, as the engine emits alerts.
    let got: Vec<serde_json::Value> = alerts
        .iter()
        .map(|a| serde_json::from_str(&a.to_json_string()).unwrap_or_default())
        .collect();
    if let Some(out) = std::env::var_os("VIGIL_GOLDEN_OUT") {
        // Writing a case: the alerts replay gives, to read and check by hand
        // (never copied into expected.jsonl unread).
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("case");
        let text: String = alerts.iter().map(|a| a.to_json_string() + "\n").collect();
        std::fs::write(Path::new(&out).join(format!("{name}.jsonl")), text)
            .map_err(|e| e.to_string())?;
    }
    let expected: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("expected.jsonl"))
        .map_err(|e| e.to_string())?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("expected.jsonl: {e}")))
        .collect::<Result<_, _>>()?;
    let cmp = compare_for(&expected, own).map_err(|e| format!("{}: {e}", dir.display()))?;
    let g = multiset(got.iter().map(|a| identity(a, cmp)));
    let e = multiset(expected.iter().map(|a| identity(a, cmp)));
    if g == e {
        return Ok(expected.len());
    }
    let mut msg = format!(
        "{}: expected {} alerts, got {}\n",
        dir.display(),
        expected.len(),
        got.len()
    );
    for (k, n) in &e {
        let have = g.get(k).copied().unwrap_or(0);
        if have < *n {
            msg.push_str(&format!("  missing: {k}\n"));
        }
    }
    for (k, n) in &g {
        let want = e.get(k).copied().unwrap_or(0);
        if want < *n {
            msg.push_str(&format!("  extra:   {k}\n"));
        }
    }
    Err(msg)
}

#[test]
fn golden_cases_reproduce_exactly() {
    let cases = cases();
    assert!(!cases.is_empty(), "no golden cases found under rules/tests");
    let mut failures = vec![];
    for (c, own) in &cases {
        match run_case(c, *own) {
            Ok(n) => eprintln!("ok   {} ({n} alerts)", c.display()),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

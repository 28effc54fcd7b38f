//! Golden cases: every folder under `rules/tests/` (and the shared reference
//! cases beside the repository, when present) holds `rules.vgl`, `events.jsonl`
//! and `expected.jsonl`; optional `options.json` sets replay options
//! (`{"lateness": "5s", "flush_all": true, "lists": {"name": ["a"]}}`).
//! A case passes when replay reproduces the expected alerts exactly, compared on
//! rule, key, at (as an instant) and matched, as a multiset: none missing, none
//! extra.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cases() -> Vec<PathBuf> {
    let mut out = vec![];
    for base in [root().join("rules/tests"), root().join("../shared/cases")] {
        let Ok(rd) = std::fs::read_dir(&base) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("expected.jsonl").exists())
            .collect();
        dirs.sort();
        out.extend(dirs);
    }
    out
}

fn instant(at: &serde_json::Value) -> i64 {
    let s = at.as_str().unwrap_or_default();
    cep_engine::time::parse_rfc3339_ms(s).unwrap_or_else(|| panic!("bad `at`: {s}"))
}

/// The comparable identity of an alert.
fn identity(a: &serde_json::Value) -> String {
    let matched: BTreeMap<String, serde_json::Value> = a["matched"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    serde_json::json!([a["rule"], a["key"], instant(&a["at"]), matched]).to_string()
}

fn multiset(items: impl IntoIterator<Item = String>) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

fn run_case(dir: &Path) -> Result<usize, String> {
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
    let got: Vec<serde_json::Value> = alerts
        .iter()
        .map(|a| serde_json::to_value(a).unwrap_or_default())
        .collect();
    let expected: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("expected.jsonl"))
        .map_err(|e| e.to_string())?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("expected.jsonl: {e}")))
        .collect::<Result<_, _>>()?;
    let g = multiset(got.iter().map(identity));
    let e = multiset(expected.iter().map(identity));
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
    for c in &cases {
        match run_case(c) {
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

//! The `vigil-replay` binary as a user runs it: exit codes, formats, files.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigil-replay"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn check_exits_zero_on_the_rule_library_and_one_on_errors() {
    let ok = bin()
        .arg("check")
        .arg(root().join("rules"))
        .output()
        .expect("runs");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = bin()
        .arg("check")
        .arg(root().join("rule-lang/tests/data/five_mistakes.vgl"))
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stderr);
    assert!(text.contains("5 error(s)"), "{text}");
}

#[test]
fn check_json_lists_every_diagnostic_with_position() {
    let out = bin()
        .args(["check", "--format", "json"])
        .arg(root().join("rule-lang/tests/data/five_mistakes.vgl"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let items = v.as_array().expect("array");
    assert_eq!(items.iter().filter(|d| d["severity"] == "error").count(), 5);
    for d in items {
        assert!(
            d["line"].as_u64().unwrap_or(0) > 0 && d["column"].as_u64().unwrap_or(0) > 0,
            "{d}"
        );
        assert!(
            d["file"]
                .as_str()
                .unwrap_or("")
                .ends_with("five_mistakes.vgl")
        );
    }
}

#[test]
fn explain_prints_the_nfa_and_rejects_unknown_rules() {
    let out = bin()
        .arg("explain")
        .arg(root().join("rules"))
        .arg("card_testing")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("@start:") && text.contains("=> accept"),
        "{text}"
    );
    let missing = bin()
        .arg("explain")
        .arg(root().join("rules"))
        .arg("no_such_rule")
        .output()
        .expect("runs");
    assert!(!missing.status.success());
}

#[test]
fn run_writes_alerts_and_reports_rejections_without_stopping() {
    let dir = std::env::temp_dir().join(format!("vigil-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let rules = dir.join("r.vgl");
    std::fs::write(
        &rules,
        "event T { k: string, v: int }\nrule big { key k pattern a: T[v > 10] within 1m }\n",
    )
    .expect("write");
    let events = dir.join("e.jsonl");
    std::fs::write(
        &events,
        concat!(
            "{\"type\":\"T\",\"ts\":1000,\"k\":\"a\",\"v\":50}\n",
            "not json\n",
            "{\"type\":\"T\",\"ts\":2000,\"k\":\"a\",\"v\":1.5}\n",
            "{\"type\":\"U\",\"ts\":3000}\n",
            "{\"type\":\"T\",\"ts\":4000,\"k\":\"b\",\"v\":99}\n",
        ),
    )
    .expect("write");
    let out_file = dir.join("alerts.jsonl");
    let rejects = dir.join("rejects.jsonl");
    let out = bin()
        .args(["run", "--rules"])
        .arg(&rules)
        .arg("--events")
        .arg(&events)
        .arg("--out")
        .arg(&out_file)
        .arg("--rejects")
        .arg(&rejects)
        .arg("--json-summary")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alerts: Vec<serde_json::Value> = std::fs::read_to_string(&out_file)
        .expect("alerts")
        .lines()
        .map(|l| serde_json::from_str(l).expect("alert json"))
        .collect();
    assert_eq!(alerts.len(), 2);
    assert_eq!(
        alerts[0]["matched"]["a"][0], "e:1",
        "default id is <source>:<line>"
    );
    assert_eq!(alerts[1]["key"], "b");
    let summary: serde_json::Value =
        serde_json::from_slice(out.stderr.trim_ascii()).expect("summary json");
    assert_eq!(summary["rejected"], 3);
    assert_eq!(summary["rejected_by_reason"]["malformed_json"], 1);
    assert_eq!(summary["rejected_by_reason"]["wrong_type"], 1);
    assert_eq!(summary["rejected_by_reason"]["unknown_type"], 1);
    let rej = std::fs::read_to_string(&rejects).expect("rejects");
    let lines: Vec<serde_json::Value> = rej
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(
        lines
            .iter()
            .map(|l| l["line"].as_u64().unwrap_or(0))
            .collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir
}

const RULES: &str = "event T { k: string, v: int, ok: bool }\nrule big { key k pattern a: T[v > 10 and ok] within 1m }\n";

fn alerts_of(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("alert json"))
        .collect()
}

#[test]
fn run_reads_csv_gzip_and_stdin_alike() {
    let dir = scratch("formats");
    let rules = dir.join("r.vgl");
    std::fs::write(&rules, RULES).expect("write");
    let csv = dir.join("e.csv");
    std::fs::write(&csv, "type,ts,id,k,v,ok\nT,1000,x1,a,50,true\nT,2000,x2,a,5,true\nT,3000,x3,b,99,false\nT,4000,x4,b,99,true\n").expect("write");
    let jsonl = "{\"type\":\"T\",\"ts\":1000,\"id\":\"x1\",\"k\":\"a\",\"v\":50,\"ok\":true}\n{\"type\":\"T\",\"ts\":4000,\"id\":\"x4\",\"k\":\"b\",\"v\":99,\"ok\":true}\n";
    let gz = dir.join("e.jsonl.gz");
    {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).expect("create"),
            flate2::Compression::default(),
        );
        enc.write_all(jsonl.as_bytes()).expect("gzip");
        enc.finish().expect("gzip");
    }
    let ids = |alerts: Vec<serde_json::Value>| -> Vec<String> {
        alerts
            .iter()
            .map(|a| a["matched"]["a"][0].as_str().unwrap_or("").to_string())
            .collect()
    };
    let from_csv = ids(alerts_of(
        &bin()
            .args(["run", "--rules"])
            .arg(&rules)
            .arg("--events")
            .arg(&csv)
            .output()
            .expect("runs"),
    ));
    let from_gz = ids(alerts_of(
        &bin()
            .args(["run", "--rules"])
            .arg(&rules)
            .arg("--events")
            .arg(&gz)
            .output()
            .expect("runs"),
    ));
    let mut child = bin()
        .args(["run", "--rules"])
        .arg(&rules)
        .args(["--events", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawns");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(jsonl.as_bytes())
            .expect("feed");
    }
    let from_stdin = ids(alerts_of(&child.wait_with_output().expect("waits")));
    assert_eq!(from_csv, vec!["x1", "x4"]);
    // A CSV row of the wrong type is rejected with its own line and byte offset.
    let bad = dir.join("bad.csv");
    let header = "type,ts,id,k,v,ok\n";
    let first = "T,1000,x1,a,50,true\n";
    std::fs::write(&bad, format!("{header}{first}T,2000,x2,a,lots,true\n")).expect("write");
    let rejects = dir.join("rejects.jsonl");
    let out = bin()
        .args(["run", "--rules"])
        .arg(&rules)
        .arg("--events")
        .arg(&bad)
        .arg("--rejects")
        .arg(&rejects)
        .output()
        .expect("runs");
    assert!(out.status.success());
    let rej: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&rejects).expect("rejects").trim())
            .expect("json");
    assert_eq!(rej["reason"], "wrong_type");
    assert_eq!(rej["line"], 3);
    assert_eq!(rej["offset"], (header.len() + first.len()) as u64);
    assert_eq!(from_gz, from_csv);
    assert_eq!(from_stdin, from_csv);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn score_and_diff_compare_rule_sets() {
    let dir = scratch("score");
    let a = dir.join("a.vgl");
    let b = dir.join("b.vgl");
    std::fs::write(&a, RULES).expect("write");
    std::fs::write(&b, RULES.replace("v > 10", "v > 60")).expect("write");
    let events = dir.join("e.jsonl");
    std::fs::write(
        &events,
        "{\"type\":\"T\",\"ts\":1000,\"id\":\"x1\",\"k\":\"a\",\"v\":50,\"ok\":true}\n{\"type\":\"T\",\"ts\":4000,\"id\":\"x4\",\"k\":\"b\",\"v\":99,\"ok\":true}\n",
    )
    .expect("write");
    let labels = dir.join("labels.jsonl");
    std::fs::write(
        &labels,
        "{\"event\": \"x4\", \"label\": true}\n{\"key\": \"zzz\", \"label\": true}\n",
    )
    .expect("write");
    let out = bin()
        .args(["score", "--rules"])
        .arg(&a)
        .arg("--events")
        .arg(&events)
        .arg("--labels")
        .arg(&labels)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // 2 alerts, 1 true positive; 2 positives, 1 found.
    assert!(
        text.lines()
            .any(|l| l == "big\t2\t1\t0.5000\t0.5000\t0.5000"),
        "{text}"
    );
    let out = bin()
        .args(["diff", "--rules"])
        .arg(&a)
        .arg("--against")
        .arg(&b)
        .arg("--events")
        .arg(&events)
        .output()
        .expect("runs");
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["side"], "only_rules");
    assert_eq!(lines[0]["alert"]["matched"]["a"][0], "x1");
    assert!(String::from_utf8_lossy(&out.stderr).contains("big\t1\t0\t1"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 15, item 1, replay side: no wall clock here, so old data is fine and
/// only absurd times are refused (`bad_ts`); a far jump of event time is
/// reported in the summary with its line, as text and as JSON.
#[test]
fn run_refuses_absurd_times_and_reports_clock_jumps() {
    let dir = scratch("jumps");
    let rules = dir.join("r.vgl");
    std::fs::write(
        &rules,
        "event T { k: string, v: int }\nrule pair { key k pattern a: T -> b: T[v > a.v] within 1m }\n",
    )
    .expect("write");
    let events = dir.join("e.jsonl");
    std::fs::write(
        &events,
        concat!(
            "{\"type\":\"T\",\"ts\":\"2001-01-01T00:00:00Z\",\"k\":\"a\",\"v\":1}\n",
            "{\"type\":\"T\",\"ts\":\"2001-01-01T00:00:01Z\",\"k\":\"a\",\"v\":2}\n",
            "{\"type\":\"T\",\"ts\":9223372036854775807,\"k\":\"a\",\"v\":3}\n",
            "{\"type\":\"T\",\"ts\":-9223372036854775808,\"k\":\"a\",\"v\":3}\n",
            "{\"type\":\"T\",\"ts\":253402300800000,\"k\":\"a\",\"v\":3}\n",
            "{\"type\":\"T\",\"ts\":\"1969-12-31T23:59:59Z\",\"k\":\"a\",\"v\":3}\n",
            "{\"type\":\"T\",\"ts\":\"2100-01-01T00:00:00Z\",\"k\":\"b\",\"v\":1}\n",
            "{\"type\":\"T\",\"ts\":\"2001-01-01T00:00:02Z\",\"k\":\"a\",\"v\":9}\n",
        ),
    )
    .expect("write");
    let run = |json: bool| {
        let mut c = bin();
        c.args(["run", "--rules"])
            .arg(&rules)
            .arg("--events")
            .arg(&events);
        if json {
            c.arg("--json-summary");
        }
        c.output().expect("runs")
    };
    let out = run(false);
    // Only the first pair matches: the 2100 event moved event time past it.
    assert_eq!(alerts_of(&out).len(), 1);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("rejected bad_ts: 4"), "{text}");
    assert!(text.contains("clock jumps over 1h: 1"), "{text}");
    assert!(
        text.contains("line 7: 2001-01-01T00:00:01.000Z -> 2100-01-01T00:00:00.000Z (+36158d 23h)"),
        "{text}"
    );
    let out = run(true);
    let summary: serde_json::Value =
        serde_json::from_slice(out.stderr.trim_ascii()).expect("summary json");
    assert_eq!(summary["rejected_by_reason"]["bad_ts"], 4);
    assert_eq!(summary["late"], 1);
    assert_eq!(summary["clock_jumps"]["count"], 1);
    assert_eq!(
        summary["clock_jumps"]["first"][0],
        serde_json::json!({"line": 7, "from": 978_307_201_000_i64, "to": 4_102_444_800_000_i64})
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--threads N` splits the keys over N workers: the output is the one of
/// `--threads 1`, line for line (the rule library over its own events: many
/// rules, key fields, absence and global rules).
#[test]
fn run_gives_the_same_output_with_any_number_of_threads() {
    let dir = scratch("threads");
    let events = dir.join("library.jsonl");
    let generated = bin()
        .args([
            "gen", "--flavor", "library", "--events", "40000", "--cards", "300", "--out",
        ])
        .arg(&events)
        .output()
        .expect("gen");
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let run = |threads: &str| {
        let out = bin()
            // Small rounds: many hand-overs between decoding and matching.
            .args([
                "run",
                "--flush-all",
                "--round-lines",
                "2500",
                "--threads",
                threads,
            ])
            .arg("--rules")
            .arg(root().join("rules"))
            .arg("--events")
            .arg(&events)
            .output()
            .expect("run");
        let mut alerts = alerts_of(&out);
        for a in &mut alerts {
            a.as_object_mut().map(|o| o.remove("detected_at"));
        }
        alerts
    };
    let one = run("1");
    assert!(one.len() > 100, "the library raises alerts: {}", one.len());
    let rules: std::collections::BTreeSet<&str> =
        one.iter().filter_map(|a| a["rule"].as_str()).collect();
    assert!(rules.len() >= 5, "several rules fire: {rules:?}");
    for threads in ["2", "3", "7"] {
        let many = run(threads);
        assert_eq!(many.len(), one.len(), "--threads {threads}");
        if let Some(i) = (0..one.len()).find(|&i| one[i] != many[i]) {
            panic!(
                "--threads {threads} differs at alert {i}:\n  1: {}\n  {threads}: {}",
                one[i], many[i]
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

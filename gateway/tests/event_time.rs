//! Event time against the wall clock, and idle checkpoints, through a real
//! `vigil-gateway` process (one in-process node, ZeroMQ ROUTER ingest with
//! its acknowledgements, `/metrics` on the key-less operations listener,
//! `--metrics-addr`, for the counters).

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RULES: &str = "event Txn { card_id: string, amount: float }\nrule spike {\n  severity high\n  key card_id\n  pattern a: Txn -> b: Txn[amount > a.amount * 5]\n  within 1m\n}\n";

fn temp(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vigil-evtime-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn get_from(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_string()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

struct Gateway {
    child: Child,
    http: String,
    /// The operations listener (`--metrics-addr`): `/metrics` without a key.
    ops: String,
    router: String,
}

impl Gateway {
    /// Starts a gateway on `data` (a restart passes the same one) and waits
    /// until it is ready.
    fn start(data: &std::path::Path, rules: &std::path::Path, extra: &[&str]) -> Gateway {
        let http = format!("127.0.0.1:{}", free_port());
        let ops = format!("127.0.0.1:{}", free_port());
        let router = format!("tcp://127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_vigil-gateway"))
            .arg("--rules")
            .arg(rules)
            .arg("--data-dir")
            .arg(data)
            .args(["--http", &http, "--zmq-router", &router, "--nodes", "1"])
            .args(["--metrics-addr", &ops])
            .args(["--zmq-pull", &format!("tcp://127.0.0.1:{}", free_port())])
            .args(["--zmq-pub", &format!("tcp://127.0.0.1:{}", free_port())])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn vigil-gateway");
        let g = Gateway {
            child,
            http,
            ops,
            router,
        };
        wait_for("/readyz 200", || {
            g.get("/readyz").is_some_and(|(s, _)| s == 200)
        });
        g
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        get_from(&self.http, path)
    }

    /// One sample of `/metrics` (0 when the series is absent).
    fn metric(&self, series: &str) -> u64 {
        let Some((_, text)) = get_from(&self.ops, "/metrics") else {
            return 0;
        };
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }

    /// Sends `events` as one ROUTER batch; returns the acknowledgement.
    fn send(&self, ctx: &zmq::Context, events: &[String]) -> serde_json::Value {
        let s = ctx.socket(zmq::DEALER).expect("socket");
        s.set_linger(0).expect("linger");
        s.set_rcvtimeo(10_000).expect("timeout");
        s.connect(&self.router).expect("connect");
        let frames: Vec<&[u8]> = events.iter().map(|e| e.as_bytes()).collect();
        s.send_multipart(frames, 0).expect("send");
        let reply = s.recv_bytes(0).expect("an acknowledgement");
        serde_json::from_slice(&reply).expect("ack JSON")
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` (every 20 ms, up to 30 s): waits on a condition, never a fixed time.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

fn txn(id: &str, ts: &str, card: &str, amount: f64) -> String {
    format!(r#"{{"id":"{id}","type":"Txn","ts":{ts},"card_id":"{card}","amount":{amount}}}"#)
}

fn reasons(ack: &serde_json::Value) -> Vec<String> {
    ack["rejected"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["reason"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Issue 15, item 1: one far-future event used to move the gateway clock to
/// its time for good (every later event late, the poisoned clock restored
/// by a restart). It is refused now, absurd times are `bad_ts`, both are
/// counted, and detection goes on, over old data too, across a restart.
#[test]
fn far_future_and_absurd_event_times_are_refused_and_detection_goes_on() {
    let dir = temp("future");
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(rules.join("r.vgl"), RULES).expect("write");
    let data = dir.join("data");
    let flags = ["--idle", "0s", "--checkpoint-every", "100ms"];
    let gw = Gateway::start(&data, &rules, &flags);
    let ctx = zmq::Context::new();

    // A day ahead of this machine's clock: beyond the default 5 minutes.
    let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
    let ahead = format!("\"{}\"", tomorrow.format("%Y-%m-%dT%H:%M:%S%.3fZ"));
    // The issue's own example: a valid year (the spec allows 1970..=9999),
    // but far ahead of the wall clock.
    let never = "\"9999-12-31T23:59:59.999Z\"";
    let ack = gw.send(
        &ctx,
        &[txn("f1", &ahead, "c1", 1.0), txn("f2", never, "c1", 1.0)],
    );
    assert_eq!(ack["accepted"], 0, "{ack}");
    assert_eq!(reasons(&ack), ["ts_in_future"; 2], "{ack}");
    let message = ack["rejected"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("--max-future"), "{message}");

    let absurd = [
        i64::MAX.to_string(),
        i64::MIN.to_string(),
        // 10000-01-01T00:00:00Z: the first instant after year 9999.
        "253402300800000".into(),
        "\"1969-12-31T23:59:59.999Z\"".into(),
    ];
    let batch: Vec<String> = absurd
        .iter()
        .enumerate()
        .map(|(i, ts)| txn(&format!("x{i}"), ts, "c1", 1.0))
        .collect();
    let ack = gw.send(&ctx, &batch);
    assert_eq!(ack["accepted"], 0, "{ack}");
    assert_eq!(reasons(&ack), ["bad_ts"; 4], "{ack}");
    assert_eq!(
        gw.metric("vigil_events_rejected_total{reason=\"ts_in_future\"}"),
        2
    );
    assert_eq!(
        gw.metric("vigil_events_rejected_total{reason=\"bad_ts\"}"),
        4
    );

    // Old data is fine: a spike in January still alerts.
    let pair = [
        txn("a1", "\"2026-01-05T10:00:00Z\"", "c1", 10.0),
        txn("a2", "\"2026-01-05T10:00:05Z\"", "c1", 99.0),
    ];
    let ack = gw.send(&ctx, &pair);
    assert_eq!(ack["accepted"], 2, "{ack}");
    wait_for("the spike alert", || {
        gw.metric("vigil_alerts_published_total") == 1
    });
    assert_eq!(gw.get("/readyz").map(|r| r.0), Some(200));

    // After a restart (from its checkpoint) detection goes on: the clock
    // it resumed is January's, not tomorrow's.
    // A skipped checkpoint means the durable one covers everything.
    let skipped = gw.metric("vigil_checkpoints_skipped_total");
    wait_for("a checkpoint covering the pair", || {
        gw.metric("vigil_checkpoints_skipped_total") > skipped
    });
    gw.stop();
    let gw = Gateway::start(&data, &rules, &flags);
    let pair = [
        txn("b1", "\"2026-01-05T10:01:00Z\"", "c2", 10.0),
        txn("b2", "\"2026-01-05T10:01:05Z\"", "c2", 99.0),
    ];
    let ack = gw.send(&ctx, &pair);
    assert_eq!(ack["accepted"], 2, "{ack}");
    wait_for("the spike alert after the restart", || {
        gw.metric("vigil_alerts_published_total") == 1
    });
    gw.stop();
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue 15, item 8: an idle gateway rewrote its whole checkpoint every
/// interval. Now a due checkpoint is skipped while nothing changed (the
/// live-mode clock moving alone is not a change), and one event makes the
/// next one happen.
#[test]
fn an_idle_gateway_takes_no_checkpoint_until_something_changes() {
    let dir = temp("idle");
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(rules.join("r.vgl"), RULES).expect("write");
    let gw = Gateway::start(
        &dir.join("data"),
        &rules,
        &["--idle", "200ms", "--checkpoint-every", "100ms"],
    );
    let ctx = zmq::Context::new();
    let ack = gw.send(&ctx, &[txn("a1", "\"2026-01-05T10:00:00Z\"", "c1", 10.0)]);
    assert_eq!(ack["accepted"], 1, "{ack}");

    // Settled: a due checkpoint skipped after the event was acknowledged
    // means the one covering it is durable.
    let before = gw.metric("vigil_checkpoints_skipped_total");
    wait_for("a skipped checkpoint", || {
        gw.metric("vigil_checkpoints_skipped_total") > before
    });
    let taken = gw.metric("vigil_checkpoints_total");
    let skipped = gw.metric("vigil_checkpoints_skipped_total");
    let last_id = gw.metric("vigil_checkpoint_last_id");
    assert!(taken >= 1 && last_id >= 1, "{taken} {last_id}");
    // Idle for ten more intervals, live-mode clock moving: none taken.
    wait_for("ten more skipped checkpoints", || {
        gw.metric("vigil_checkpoints_skipped_total") >= skipped + 10
    });
    assert_eq!(gw.metric("vigil_checkpoints_total"), taken);
    assert_eq!(gw.metric("vigil_checkpoint_last_id"), last_id);

    // One event: the next checkpoint is taken.
    let ack = gw.send(&ctx, &[txn("a2", "\"2026-01-05T10:00:01Z\"", "c1", 11.0)]);
    assert_eq!(ack["accepted"], 1, "{ack}");
    wait_for("a checkpoint after the event", || {
        gw.metric("vigil_checkpoints_total") > taken
    });
    assert!(gw.metric("vigil_checkpoint_last_id") > last_id);
    gw.stop();
    let _ = std::fs::remove_dir_all(dir);
}

/// The off switch: `--skip-unchanged-checkpoints false` rewrites the
/// checkpoint on schedule even when nothing changed.
#[test]
fn skipping_can_be_turned_off() {
    let dir = temp("noskip");
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(rules.join("r.vgl"), RULES).expect("write");
    let gw = Gateway::start(
        &dir.join("data"),
        &rules,
        &[
            "--idle",
            "0s",
            "--checkpoint-every",
            "100ms",
            "--skip-unchanged-checkpoints",
            "false",
        ],
    );
    let ctx = zmq::Context::new();
    let ack = gw.send(&ctx, &[txn("a1", "\"2026-01-05T10:00:00Z\"", "c1", 10.0)]);
    assert_eq!(ack["accepted"], 1, "{ack}");
    wait_for("a checkpoint", || gw.metric("vigil_checkpoints_total") >= 1);
    let taken = gw.metric("vigil_checkpoints_total");
    // Idle, yet the checkpoints go on and none is skipped.
    wait_for("five more checkpoints while idle", || {
        gw.metric("vigil_checkpoints_total") >= taken + 5
    });
    assert_eq!(gw.metric("vigil_checkpoints_skipped_total"), 0);
    gw.stop();
    let _ = std::fs::remove_dir_all(dir);
}

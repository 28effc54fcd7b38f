//! ZeroMQ ingest against hostile or careless producers, through a running
//! gateway: every refusal is answered or counted, and what the gateway holds
//! for them is bounded.

use std::time::Duration;
use vigil_tests::*;

/// A gateway with two in-process nodes and small limits: events of at most
/// 400 bytes, 10 frames per message, a 4 KiB recent-events sample.
fn small_gateway() -> (Proc, Endpoints) {
    let ep = Endpoints::fresh();
    let rules = root().join("rules/tests/lib_card_testing/rules.vgl");
    let mut cmd = std::process::Command::new(bin("vigil-gateway", "vigil-gateway"));
    cmd.arg("--rules")
        .arg(&rules)
        .arg("--data-dir")
        .arg(fresh_dir("ingest-limits"))
        .args(ep.args())
        .args(["--nodes", "2", "--idle", "0s"])
        .args(["--max-event-bytes", "400", "--max-frames", "10"])
        .args(["--sample-bytes", "4096"]);
    let gw = Proc::spawn("gateway", &mut cmd);
    wait_until("ready", Duration::from_secs(30), || {
        http_get(&ep.http, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    (gw, ep)
}

/// The value of one metric line (`name` with its labels, if any).
fn metric(ep: &Endpoints, name: &str) -> Option<u64> {
    let (_, text) = http_get(&ep.ops, "/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn good_events() -> Vec<String> {
    read_lines(&root().join("rules/tests/lib_card_testing/events.jsonl"))
}

fn dealer(ctx: &zmq::Context, ep: &Endpoints) -> zmq::Socket {
    let s = ctx.socket(zmq::DEALER).expect("DEALER");
    s.set_rcvtimeo(5_000).expect("timeout");
    s.set_linger(0).expect("linger");
    s.connect(&ep.router).expect("connect");
    s
}

fn ack(s: &zmq::Socket) -> serde_json::Value {
    serde_json::from_slice(&s.recv_bytes(0).expect("ack")).expect("ack JSON")
}

fn reasons(ack: &serde_json::Value) -> Vec<(u64, String)> {
    ack["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap_or(99),
                r["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_lone_empty_frame_from_a_dealer_is_rejected_by_index() {
    let (_gw, ep) = small_gateway();
    let ctx = zmq::Context::new();
    let d = dealer(&ctx, &ep);
    d.send("", 0).expect("send");
    let a = ack(&d);
    assert_eq!(a["accepted"], 0, "{a}");
    assert_eq!(reasons(&a), [(0, "empty".to_string())], "{a}");
    // An empty event among others is `empty` too, by its index.
    let good = good_events();
    d.send_multipart([good[0].as_bytes(), b"", good[1].as_bytes()], 0)
        .expect("send");
    let a = ack(&d);
    assert_eq!(a["accepted"], 2, "{a}");
    assert_eq!(reasons(&a), [(1, "empty".to_string())], "{a}");
    assert_eq!(
        metric(&ep, "vigil_events_rejected_total{reason=\"empty\"}"),
        Some(2)
    );
}

#[test]
fn a_message_over_the_frame_cap_is_refused_whole_and_counted() {
    let (_gw, ep) = small_gateway();
    let ctx = zmq::Context::new();
    let good = good_events();
    assert!(good.len() >= 11);
    let d = dealer(&ctx, &ep);
    d.send_multipart(good[..11].iter().map(String::as_bytes), 0)
        .expect("send");
    let a = ack(&d);
    assert_eq!(a["accepted"], 0, "{a}");
    assert_eq!(reasons(&a), [(0, "too_many_frames".to_string())], "{a}");
    assert!(
        a["rejected"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("11") && m.contains("10")),
        "{a}"
    );
    // At the cap it is taken.
    d.send_multipart(good[..10].iter().map(String::as_bytes), 0)
        .expect("send");
    assert_eq!(ack(&d)["accepted"], 10);
    // The same over PUSH: refused whole, counted.
    let push = ctx.socket(zmq::PUSH).expect("PUSH");
    push.connect(&ep.pull).expect("connect");
    push.send_multipart(good[..11].iter().map(String::as_bytes), 0)
        .expect("send");
    wait_until("the PUSH message counted", Duration::from_secs(10), || {
        metric(
            &ep,
            "vigil_events_rejected_total{reason=\"too_many_frames\"}",
        ) == Some(22)
    });
    assert_eq!(metric(&ep, "vigil_events_accepted_total"), Some(10));
}

#[test]
fn a_frame_far_over_the_limit_closes_the_producer_connection_and_is_counted() {
    let (_gw, ep) = small_gateway();
    let ctx = zmq::Context::new();
    let before = metric(&ep, "vigil_ingest_disconnects_total").expect("the metric");
    // 400-byte events: frames up to 64 KiB over that are read and refused
    // with a reason; this one is cut off by the transport.
    let huge = format!(
        r#"{{"type":"Txn","ts":"2026-01-05T10:00:00Z","pad":"{}"}}"#,
        "x".repeat(200_000)
    );
    let d = dealer(&ctx, &ep);
    d.set_rcvtimeo(1_500).expect("timeout");
    d.send(huge.as_bytes(), 0).expect("send");
    assert!(
        d.recv_bytes(0).is_err(),
        "no acknowledgement: the connection is closed"
    );
    wait_until("the disconnect counted", Duration::from_secs(10), || {
        metric(&ep, "vigil_ingest_disconnects_total").is_some_and(|n| n > before)
    });
    // Nothing was taken from it, and other producers go on.
    let d2 = dealer(&ctx, &ep);
    d2.send(good_events()[0].as_bytes(), 0).expect("send");
    assert_eq!(ack(&d2)["accepted"], 1);
    assert_eq!(metric(&ep, "vigil_events_accepted_total"), Some(1));
    // A frame a little over the limit still gets a reason.
    let over = format!(
        r#"{{"type":"Txn","ts":"2026-01-05T10:00:00Z","pad":"{}"}}"#,
        "x".repeat(1_000)
    );
    d2.send(over.as_bytes(), 0).expect("send");
    assert_eq!(reasons(&ack(&d2)), [(0, "oversize".to_string())]);
}

#[test]
fn the_recent_event_sample_is_bounded_by_bytes() {
    let (_gw, ep) = small_gateway();
    let ctx = zmq::Context::new();
    // 50 events of about 380 bytes: 19 KB, over the 4 KiB sample budget.
    let events: Vec<String> = (0..50)
        .map(|i| {
            format!(
                r#"{{"type":"Txn","ts":"2026-01-05T10:00:{:02}Z","card_id":"c{i}","account_id":"a","amount":1.0,"merchant":"m","country":"US","status":"approved","channel":"ecom","pad":"{}"}}"#,
                i % 60,
                "x".repeat(200)
            )
        })
        .collect();
    assert!(events.iter().all(|e| e.len() > 300 && e.len() <= 400));
    push_events(&ctx, &ep.pull, &events, 10);
    wait_until("every event accepted", Duration::from_secs(30), || {
        metric(&ep, "vigil_events_accepted_total") == Some(50)
    });
    let bytes = metric(&ep, "vigil_sample_bytes").expect("vigil_sample_bytes");
    let kept = metric(&ep, "vigil_sample_events").expect("vigil_sample_events");
    assert!(bytes > 0 && bytes <= 4096, "sample bytes {bytes}");
    assert!(
        (8..=12).contains(&kept),
        "about 4096 / 400 events kept, got {kept}"
    );
}

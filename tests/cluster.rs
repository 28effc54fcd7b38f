//! End-to-end: a gateway and `vigil-node` processes on loopback, events over
//! ZeroMQ, alerts from the PUB socket, compared with `vigil-replay run`.

use cep_engine::Key;
use cep_engine::shard::{SHARDS, shard_of};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use vigil_tests::*;

/// Streams `events` through a fresh gateway on `nodes`; returns the alerts.
fn stream_case(rules: &Path, events: &[String], nodes: &[String]) -> Vec<serde_json::Value> {
    let ep = Endpoints::fresh();
    let _gw = start_gateway(rules, nodes, &ep, &["--idle", "0s"]);
    let ctx = zmq::Context::new();
    let sink = AlertSink::subscribe(&ctx, &ep.publish, "alert.");
    push_events(&ctx, &ep.pull, events, 100);
    let n = events.len() as u64;
    wait_until(
        "every event accepted or rejected",
        Duration::from_secs(60),
        || {
            cluster(&ep.http).is_some_and(|c| {
                let rejected: u64 = c["events_rejected"]
                    .as_object()
                    .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
                c["events_accepted"].as_u64().unwrap_or(0) + rejected == n
            })
        },
    );
    let accepted = cluster(&ep.http)
        .and_then(|c| c["events_accepted"].as_u64())
        .unwrap_or(0);
    wait_processed(&ep.http, accepted);
    // Alerts travel node → gateway → PUB → us: wait for the published count.
    sink.all_published(&ep.http)
}

#[test]
fn cluster_of_three_nodes_gives_the_alerts_of_replay() {
    let (_nodes, eps) = start_nodes(3);
    let root = root();
    // Golden cases from the rule library (single-input, no lateness options)
    // plus a mixed workload keyed three ways with a global and an absence rule.
    let mut cases: Vec<(String, PathBuf, PathBuf)> = [
        "lib_card_testing",
        "lib_account_takeover",
        "ref_velocity",
        "lib_missing_heartbeat",
    ]
    .iter()
    .map(|c| {
        let d = root.join("rules/tests").join(c);
        (c.to_string(), d.join("rules.vgl"), d.join("events.jsonl"))
    })
    .filter(|(_, r, e)| r.exists() && e.exists())
    .collect();
    assert!(cases.len() >= 3, "golden cases missing: {cases:?}");
    let dir = workload_rules_dir("e2e");
    let events = workload(30_000, 900, 20);
    let ev_path = write_events("e2e", &events);
    cases.push(("workload".into(), dir.clone(), ev_path.clone()));

    for (name, rules, events_path) in &cases {
        let events = read_lines(events_path);
        let replayed = replay_alerts(rules, events_path, &[]);
        let expected = id_counts(replayed.iter());
        assert!(
            !expected.is_empty(),
            "{name}: replay gives no alert; the case tests nothing"
        );
        let got = stream_case(rules, &events, &eps);
        let got_ids = id_counts(got.iter());
        let extra: String = got
            .iter()
            .filter(|a| !expected.contains_key(a["id"].as_str().unwrap_or("")))
            .take(10)
            .map(|a| format!("{} {} {} {}\n", a["rule"], a["key"], a["at"], a["id"]))
            .collect();
        assert_same_alerts(
            &got_ids,
            &expected,
            &format!("{name}: cluster vs replay"),
            &format!(
                "\nmissing (rule key at id):\n{}extra:\n{extra}",
                describe_missing(&got_ids, &replayed, 10)
            ),
        );
        eprintln!("{name}: {} alerts, same ids as replay", got.len());
    }
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_file(ev_path);
}

#[test]
fn workload_spreads_over_every_node_and_key_field() {
    let (_nodes, eps) = start_nodes(3);
    let dir = workload_rules_dir("spread");
    let events = workload(6_000, 300, 20);
    let ep = Endpoints::fresh();
    let _gw = start_gateway(&dir, &eps, &ep, &["--idle", "0s"]);
    let ctx = zmq::Context::new();
    push_events(&ctx, &ep.pull, &events, 50);
    wait_processed(&ep.http, events.len() as u64);
    // Node figures arrive with the next ping (every 250 ms).
    wait_until("node stats", Duration::from_secs(10), || {
        cluster(&ep.http).is_some_and(|c| {
            c["nodes"]
                .as_array()
                .is_some_and(|ns| ns.iter().all(|n| n["events"].as_u64() > Some(0)))
        })
    });
    let c = cluster(&ep.http).expect("cluster view");
    let nodes = c["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        assert!(n["events"].as_u64() > Some(0), "{n}");
        assert_eq!(n["rules_version"], 1);
    }
    // Txn goes out once per key field (card, account) plus once for the
    // global rule; Heartbeat once.
    let (_, metrics) = http_get(&ep.ops, "/metrics").expect("metrics");
    let txns = events.iter().filter(|e| e.contains("\"Txn\"")).count() as u64;
    let beats = events.len() as u64 - txns;
    assert!(
        metrics.contains(&format!(
            "vigil_event_copies_routed_total {}",
            3 * txns + beats
        )),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn deploying_one_changed_rule_keeps_the_partial_matches_of_the_others() {
    let (_nodes, eps) = start_nodes(3);
    let s = Scenario::new("deploy", 20_000, 600);
    let (dir, events) = (&s.rules, &s.events);
    let expected = &s.replayed;
    let half = events.len() / 2;
    let idx = |id: &str| id.trim_start_matches('e').parse::<usize>().unwrap_or(0);
    // The test only means something if some alert of an unchanged rule
    // started before the deploy and completed after it.
    let spanning = expected
        .iter()
        .filter(|a| a["rule"] != "big_pair")
        .filter(|a| {
            let ids: Vec<usize> = a["matched"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
                .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                .filter_map(|v| v.as_str().map(idx))
                .collect();
            ids.iter().any(|&i| i < half) && ids.iter().any(|&i| i >= half)
        })
        .count();
    assert!(spanning > 0, "no alert spans the deploy point");

    let ep = Endpoints::fresh();
    let gw = start_gateway(dir, &eps, &ep, &["--idle", "0s"]);
    let ctx = zmq::Context::new();
    let sink = AlertSink::subscribe(&ctx, &ep.publish, "alert.");
    push_events(&ctx, &ep.pull, &events[..half], 100);
    wait_processed(&ep.http, half as u64);

    // Change one rule and tell the gateway (SIGHUP reloads the rules).
    std::fs::write(
        dir.join("big_pair.vgl"),
        WORKLOAD_RULES
            .iter()
            .find(|(n, _)| *n == "big_pair.vgl")
            .map(|(_, t)| t.replace("within 5s", "within 6s"))
            .expect("big_pair rule"),
    )
    .expect("rewrite rule");
    gw.signal("HUP");
    wait_until("every node on rule set v2", Duration::from_secs(20), || {
        cluster(&ep.http).is_some_and(|c| {
            c["rules_version"] == 2
                && c["nodes"].as_array().is_some_and(|ns| {
                    ns.iter()
                        .all(|n| n["rules_version"] == 2 && n["state"] == "up")
                })
        })
    });
    push_events(&ctx, &ep.pull, &events[half..], 100);
    wait_processed(&ep.http, events.len() as u64);
    let got = sink.all_published(&ep.http);

    let others = |v: &Vec<serde_json::Value>| -> BTreeMap<String, usize> {
        id_counts(v.iter().filter(|a| a["rule"] != "big_pair"))
    };
    assert_eq!(
        others(&got),
        others(expected),
        "unchanged rules must give exactly replay's alerts across the deploy"
    );
    let split_ts = cep_engine::time::format_ms(1_767_571_200_000 + half as i64 * 20);
    for a in got.iter().filter(|a| a["rule"] == "big_pair") {
        let at = a["at"].as_str().unwrap_or("");
        if at > split_ts.as_str() {
            assert_eq!(
                a["version"], 2,
                "after the deploy big_pair runs version 2: {a}"
            );
        }
    }
}

/// Node that owns `key` when 1024 shards are split over `n` nodes in ranges.
fn owner(key: &str, n: usize) -> usize {
    shard_of(&Key::Str(Arc::from(key))) as usize * n / SHARDS as usize
}

#[test]
fn a_killed_node_is_reported_and_the_other_shards_keep_flowing() {
    let (mut nodes, eps) = start_nodes(3);
    let s = Scenario::new("kill", 16_000, 600);
    let (dir, events) = (&s.rules, &s.events);
    let expected = &s.replayed;
    let ep = Endpoints::fresh();
    let gw = start_gateway(
        dir,
        &eps,
        &ep,
        &[
            "--idle",
            "0s",
            "--node-timeout",
            "1s",
            "--pending-cap",
            "2048",
            "--batch",
            "256",
            // Without checkpoints a dead node's shards have nowhere to go:
            // this is the bounded-shed behaviour. With them (the default),
            // see `a_killed_node_fails_over_and_every_alert_arrives_once`.
            "--checkpoint-every",
            "0s",
        ],
    );
    let ctx = zmq::Context::new();
    let sink = AlertSink::subscribe(&ctx, &ep.publish, "alert.");
    let first = 4_000;
    push_events(&ctx, &ep.pull, &events[..first], 100);
    wait_processed(&ep.http, first as u64);

    nodes[1].kill(); // SIGKILL: no goodbye
    wait_until("node-1 reported down", Duration::from_secs(10), || {
        cluster(&ep.http).is_some_and(|c| c["nodes"][1]["state"] == "down")
    });
    let (code, health) = http_get(&ep.http, "/healthz").expect("healthz");
    assert_eq!(code, 200);
    assert!(
        health.contains("\"degraded\"") && health.contains("node-1"),
        "{health}"
    );
    let (code, ready) = http_get(&ep.http, "/readyz").expect("readyz");
    assert_eq!(code, 503, "{ready}");
    let (_, metrics) = http_get(&ep.ops, "/metrics").expect("metrics");
    assert!(
        metrics.contains("vigil_node_up{node=\"node-1\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vigil_node_up{node=\"node-0\"} 1"),
        "{metrics}"
    );
    assert!(
        gw.output().contains("node unreachable"),
        "gateway log: {}",
        gw.output()
    );

    // The rest of the stream: nodes 0 and 2 keep up; node 1's copies queue
    // up to the cap, then are shed and counted.
    push_events(&ctx, &ep.pull, &events[first..], 100);
    wait_until("live nodes caught up", Duration::from_secs(60), || {
        cluster(&ep.http).is_some_and(|c| {
            c["events_accepted"].as_u64() == Some(events.len() as u64)
                && [0, 2].iter().all(|&i| {
                    c["nodes"][i]["lag_events"] == 0 && c["nodes"][i]["queued_copies"] == 0
                })
        })
    });
    let c = cluster(&ep.http).expect("cluster");
    assert!(c["copies_shed"].as_u64() > Some(0), "{c}");
    assert!(c["nodes"][1]["queued_copies"].as_u64() <= Some(2048), "{c}");
    let got = sink.all_published(&ep.http);

    // Keys owned by the live nodes lost nothing: exactly replay's alerts.
    let live = |a: &&serde_json::Value| match a["key"].as_str() {
        Some(k) => owner(k, 3) != 1,
        None => true, // global rules run on shard 0, node 0
    };
    let got_live = id_counts(got.iter().filter(live));
    let want_live = id_counts(expected.iter().filter(live));
    assert!(!want_live.is_empty());
    assert_eq!(got_live, want_live, "alerts of keys on live nodes");

    // The node comes back on the same endpoint: the gateway reconnects and
    // redeploys; the cluster is ready again.
    nodes[1] = restart_node(&eps[1]);
    wait_until("node-1 up again", Duration::from_secs(20), || {
        http_get(&ep.http, "/readyz").is_some_and(|(s, _)| s == 200)
    });
}

fn metric(http: &str, name: &str) -> u64 {
    http_get(&ops_addr(http), "/metrics")
        .and_then(|(_, m)| {
            m.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_string))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_killed_node_fails_over_and_every_alert_arrives_once() {
    let (mut nodes, eps) = start_nodes(3);
    let s = Scenario::new("failover", 30_000, 600);
    let (dir, events) = (&s.rules, &s.events);
    let expected = s.expected();
    let ep = Endpoints::fresh();
    let _gw = start_gateway(
        dir,
        &eps,
        &ep,
        &[
            "--idle",
            "0s",
            "--node-timeout",
            "2s",
            "--checkpoint-every",
            "300ms",
            "--batch",
            "256",
        ],
    );
    let ctx = zmq::Context::new();
    let sink = AlertSink::subscribe(&ctx, &ep.publish, "alert.");
    let first = 10_000;
    push_events(&ctx, &ep.pull, &events[..first], 100);
    wait_processed(&ep.http, first as u64);
    wait_until("a durable checkpoint", Duration::from_secs(20), || {
        cluster(&ep.http).is_some_and(|c| c["checkpoint"]["id"].as_u64() >= Some(1))
    });
    // The next third flows while node 1 dies: copies in flight to it, and
    // partial matches since the checkpoint, must come back from the replay.
    let (pull, evs) = (ep.pull.clone(), events[first..20_000].to_vec());
    let producer = std::thread::spawn(move || {
        // One socket: PULL fair-queues between PUSH peers, so a socket per
        // chunk could reorder the stream.
        let ctx = zmq::Context::new();
        let push = ctx.socket(zmq::PUSH).expect("PUSH");
        push.set_linger(5_000).expect("linger");
        push.connect(&pull).expect("connect PUSH");
        for chunk in evs.chunks(100) {
            push.send_multipart(chunk.iter().map(String::as_bytes), 0)
                .expect("send");
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    nodes[1].kill();
    wait_until(
        "node-1's shards on the live nodes",
        Duration::from_secs(20),
        || {
            cluster(&ep.http).is_some_and(|c| {
                c["nodes"][1]["state"] == "down"
                    && c["nodes"][1]["shards"] == 0
                    && c["nodes"][0]["shards"].as_u64().unwrap_or(0)
                        + c["nodes"][2]["shards"].as_u64().unwrap_or(0)
                        == 1024
            })
        },
    );
    producer.join().expect("producer");
    let c = cluster(&ep.http).expect("cluster");
    assert!(
        c["events_accepted"].as_u64() <= Some(20_000),
        "the kill happened mid-stream: {c}"
    );
    // The node returns; at the next checkpoint its shards move back.
    nodes[1] = restart_node(&eps[1]);
    wait_until("node-1's shards back home", Duration::from_secs(60), || {
        cluster(&ep.http).is_some_and(|c| {
            c["nodes"][1]["state"] == "up" && c["nodes"][1]["shards"].as_u64() == Some(341)
        })
    });
    // The producer's socket is gone only once its events are in: then the
    // rest, in order.
    wait_until("the second third accepted", Duration::from_secs(30), || {
        cluster(&ep.http).is_some_and(|c| c["events_accepted"] == 20_000)
    });
    push_events(&ctx, &ep.pull, &events[20_000..], 100);
    wait_processed(&ep.http, events.len() as u64);
    let got = id_counts(sink.all_published(&ep.http).iter());
    assert_same_alerts(
        &got,
        &expected,
        "after failover and move back",
        &format!("cluster {}", cluster(&ep.http).unwrap_or_default()),
    );
    assert_eq!(c["copies_shed"], 0, "nothing shed with checkpoints on");
    assert!(metric(&ep.http, "vigil_shards_moved_total") >= 2 * 341);
    assert!(metric(&ep.http, "vigil_shards_restored_total") >= 2 * 341);
    assert!(metric(&ep.http, "vigil_checkpoints_total") >= 2);
}

#[test]
fn every_node_silent_at_once_then_back_loses_and_repeats_nothing() {
    // Both nodes stop answering (SIGSTOP: alive, silent) while events keep
    // coming: the first one's shards fail over to the second, then there is
    // no live node at all, the gateway queues stay bounded (copies shed),
    // and when both return their shards are rebuilt from the checkpoint and
    // the replay log.
    let (nodes, eps) = start_nodes(2);
    let s = Scenario::new("silent", 24_000, 500);
    let (dir, events) = (&s.rules, &s.events);
    let expected = s.expected();
    let ep = Endpoints::fresh();
    let _gw = start_gateway(
        dir,
        &eps,
        &ep,
        &[
            "--idle",
            "0s",
            "--node-timeout",
            "1s",
            "--checkpoint-every",
            "300ms",
            "--pending-cap",
            "1024",
            "--batch",
            "128",
        ],
    );
    let ctx = zmq::Context::new();
    let sink = AlertSink::subscribe(&ctx, &ep.publish, "alert.");
    push_events(&ctx, &ep.pull, &events[..8_000], 100);
    wait_processed(&ep.http, 8_000);
    wait_until("a durable checkpoint", Duration::from_secs(20), || {
        cluster(&ep.http).is_some_and(|c| c["checkpoint"]["id"].as_u64() >= Some(1))
    });
    nodes[0].signal("STOP");
    wait_until("node-0's shards on node-1", Duration::from_secs(20), || {
        cluster(&ep.http).is_some_and(|c| c["nodes"][1]["shards"] == 1024)
    });
    nodes[1].signal("STOP");
    wait_until("both down", Duration::from_secs(20), || {
        cluster(&ep.http)
            .is_some_and(|c| c["nodes"][0]["state"] == "down" && c["nodes"][1]["state"] == "down")
    });
    // Ingest goes on with no live node: bounded queues, copies shed.
    push_events(&ctx, &ep.pull, &events[8_000..16_000], 100);
    wait_until("the middle accepted", Duration::from_secs(30), || {
        cluster(&ep.http).is_some_and(|c| c["events_accepted"] == 16_000)
    });
    let c = cluster(&ep.http).expect("cluster");
    assert!(
        c["copies_shed"].as_u64() > Some(0),
        "queues stayed bounded: {c}"
    );
    nodes[0].signal("CONT");
    nodes[1].signal("CONT");
    wait_until(
        "both back, every shard home",
        Duration::from_secs(60),
        || {
            cluster(&ep.http).is_some_and(|c| {
                c["nodes"][0]["state"] == "up"
                    && c["nodes"][1]["state"] == "up"
                    && c["nodes"][0]["shards"] == 512
                    && c["nodes"][1]["shards"] == 512
            })
        },
    );
    push_events(&ctx, &ep.pull, &events[16_000..], 100);
    wait_processed(&ep.http, events.len() as u64);
    let got = id_counts(sink.all_published(&ep.http).iter());
    assert_same_alerts(
        &got,
        &expected,
        "after both nodes went silent and came back",
        &format!("cluster {}", cluster(&ep.http).unwrap_or_default()),
    );
}

#[test]
fn embedded_gateway_acknowledges_router_batches_with_reasons() {
    let ep = Endpoints::fresh();
    let rules = root().join("rules/tests/lib_card_testing/rules.vgl");
    let gw = bin("vigil-gateway", "vigil-gateway");
    let mut cmd = std::process::Command::new(gw);
    cmd.arg("--rules")
        .arg(&rules)
        .arg("--data-dir")
        .arg(fresh_dir("data"))
        .args(ep.args())
        .args(["--nodes", "2", "--max-event-bytes", "400", "--idle", "0s"]);
    let _gw = Proc::spawn("gateway", &mut cmd);
    wait_until("ready", Duration::from_secs(30), || {
        http_get(&ep.http, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    let c = cluster(&ep.http).expect("cluster");
    assert_eq!(
        c["nodes"].as_array().map(Vec::len),
        Some(2),
        "two in-process nodes"
    );

    let ctx = zmq::Context::new();
    let good = read_lines(&root().join("rules/tests/lib_card_testing/events.jsonl"));
    let oversize = format!(
        r#"{{"type":"Txn","ts":"2026-01-05T10:00:00Z","pad":"{}"}}"#,
        "x".repeat(500)
    );
    let batch: Vec<&[u8]> = vec![
        good[0].as_bytes(),
        b"{not json",
        br#"{"type":"Nope","ts":"2026-01-05T10:00:00Z"}"#,
        oversize.as_bytes(),
        br#"[1,2]"#,
    ];
    // DEALER: no delimiter frame.
    let dealer = ctx.socket(zmq::DEALER).expect("DEALER");
    dealer.set_rcvtimeo(5_000).expect("timeout");
    dealer.connect(&ep.router).expect("connect");
    dealer.send_multipart(batch.clone(), 0).expect("send");
    let ack: serde_json::Value =
        serde_json::from_slice(&dealer.recv_bytes(0).expect("ack")).expect("ack JSON");
    assert_eq!(ack["accepted"], 1, "{ack}");
    let reasons: Vec<(u64, &str)> = ack["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap_or(99),
                r["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            (1, "malformed_json"),
            (2, "unknown_type"),
            (3, "oversize"),
            (4, "not_an_object")
        ]
    );
    assert!(
        ack["rejected"][2]["message"]
            .as_str()
            .is_some_and(|m| m.contains("400")),
        "{ack}"
    );

    // REQ: the empty delimiter frame is echoed, so a plain REQ client works.
    let req = ctx.socket(zmq::REQ).expect("REQ");
    req.set_rcvtimeo(5_000).expect("timeout");
    req.connect(&ep.router).expect("connect");
    req.send_multipart(good[1..].iter().map(String::as_bytes), 0)
        .expect("send");
    let ack: serde_json::Value =
        serde_json::from_slice(&req.recv_bytes(0).expect("ack")).expect("ack JSON");
    assert_eq!(
        ack["accepted"].as_u64(),
        Some(good.len() as u64 - 1),
        "{ack}"
    );

    let (_, metrics) = http_get(&ep.ops, "/metrics").expect("metrics");
    for reason in [
        "malformed_json",
        "unknown_type",
        "oversize",
        "not_an_object",
    ] {
        assert!(
            metrics.contains(&format!(
                "vigil_events_rejected_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason}: {metrics}"
        );
    }
}

#[test]
fn a_peer_speaking_another_protocol_version_gets_a_clear_error() {
    // This node listens on ipc:// and serves its own HTTP figures.
    let ipc = std::env::temp_dir().join(format!("vigil-node-{}.sock", std::process::id()));
    let endpoint = format!("ipc://{}", ipc.display());
    let http = format!("127.0.0.1:{}", free_port());
    let mut node = Proc::spawn(
        "node-ipc",
        std::process::Command::new(bin("cep-engine", "vigil-node"))
            .args(["--bind", &endpoint, "--http", &http, "--name", "ipc-node"]),
    );
    wait_until("node HTTP", Duration::from_secs(10), || {
        http_get(&http, "/metrics").is_some_and(|(s, m)| {
            s == 200 && m.contains("vigil_node_connected{node=\"ipc-node\"} 0")
        })
    });
    let ctx = zmq::Context::new();
    let dealer = ctx.socket(zmq::DEALER).expect("DEALER");
    dealer.set_rcvtimeo(5_000).expect("timeout");
    dealer.connect(&endpoint).expect("connect");
    let mut ping = cep_engine::wire::encode(&cep_engine::wire::Msg::Ping { nonce: 1 });
    ping[2] = 7; // a future protocol version
    dealer.send(ping, 0).expect("send");
    let reply = dealer.recv_bytes(0).expect("reply");
    match cep_engine::wire::decode(&reply) {
        Ok(cep_engine::wire::Msg::Error { text }) => assert_eq!(
            text,
            "peer speaks Vigil wire protocol version 7; this build speaks version 3"
        ),
        other => panic!("expected an error frame, got {other:?}"),
    }
    // Graceful stop: SIGTERM drains and exits cleanly.
    node.signal("TERM");
    wait_until("node exits", Duration::from_secs(10), || !node.alive());
    let status = node.child.try_wait().ok().flatten();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
    assert!(
        node.output().contains("drained and stopped"),
        "{}",
        node.output()
    );
}

#[test]
fn a_stalled_node_slows_ingest_and_loses_nothing() {
    // A small credit window, so the stalled node's credits run out quickly.
    let (nodes, eps) = start_nodes_with(2, &["--credit-window", "2048"]);
    let s = Scenario::new("stall", 12_000, 400);
    let (dir, events) = (&s.rules, &s.events);
    let expected = s.expected();
    let ep = Endpoints::fresh();
    // A long node timeout: the stalled node counts as slow, not dead.
    let _gw = start_gateway(
        dir,
        &eps,
        &ep,
        &[
            "--idle",
            "0s",
            "--node-timeout",
            "60s",
            "--pending-cap",
            "1024",
            "--batch",
            "128",
        ],
    );
    let ctx = zmq::Context::new();
    let sink = AlertSink::subscribe(&ctx, &ep.publish, "alert.");
    nodes[0].signal("STOP");
    // Send from a thread: the producer is expected to block.
    let (pull, evs) = (ep.pull.clone(), events.clone());
    let producer = std::thread::spawn(move || {
        let ctx = zmq::Context::new();
        push_events(&ctx, &pull, &evs, 50);
    });
    wait_until(
        "ingest paused for back-pressure",
        Duration::from_secs(30),
        || {
            http_get(&ep.ops, "/metrics").is_some_and(|(_, m)| {
                m.lines()
                    .any(|l| l.starts_with("vigil_ingest_pauses_total ") && !l.ends_with(" 0"))
            })
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let c = cluster(&ep.http).expect("cluster");
    assert!(
        c["events_accepted"].as_u64() < Some(events.len() as u64),
        "ingest must stall while a node cannot take more: {c}"
    );
    let queued = c["nodes"][0]["queued_copies"].as_u64().unwrap_or(u64::MAX);
    // The cap is checked between ingest messages: at most one message (50
    // events, 3 copies each at most) beyond it.
    assert!(
        queued <= 1024 + 150,
        "gateway queue bounded by --pending-cap: {c}"
    );
    assert_eq!(c["copies_shed"], 0, "a slow node loses nothing: {c}");

    nodes[0].signal("CONT");
    producer.join().expect("producer");
    wait_processed(&ep.http, events.len() as u64);
    let got = sink.all_published(&ep.http);
    assert_eq!(
        id_counts(got.iter()),
        expected,
        "after the stall: exactly replay's alerts"
    );
}

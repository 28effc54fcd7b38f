//! Kafka end to end: a real Kafka-compatible broker (tansu), events produced
//! to a topic, the gateway consuming it in a consumer group, alerts compared
//! with `vigil-replay run` and read back from the alerts topic.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::time::Duration;
use vigil_tests::*;

/// The broker binary: installed by `.ci/test.sh` (`cargo install tansu`).
fn tansu() -> std::path::PathBuf {
    let home = std::env::var("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    let p = home.join("bin").join("tansu");
    assert!(
        p.exists(),
        "the Kafka-compatible broker `tansu` is not installed at {}: run `bash .ci/test.sh`, which installs it",
        p.display()
    );
    p
}

fn start_broker() -> (Proc, String) {
    start_broker_on(free_port())
}

/// A broker on `port` (in memory: a restart there is a broker that lost
/// its data).
fn start_broker_on(port: u16) -> (Proc, String) {
    let url = format!("tcp://127.0.0.1:{port}");
    let p = Proc::spawn(
        "tansu",
        std::process::Command::new(tansu()).args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ]),
    );
    let addr = format!("127.0.0.1:{port}");
    wait_until("broker listening", Duration::from_secs(30), || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    (p, addr)
}

async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let r = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create topics");
    for x in r {
        // A consumer's metadata request may have created it first.
        if let Err((t, code)) = x {
            assert_eq!(
                code,
                rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "creating topic {t}"
            );
        }
    }
}

/// Produces `events` keyed like a real producer (card or device), enqueued in
/// order (send_result queues at once), so each partition holds its keys'
/// events in order; returns once every one is acknowledged.
async fn produce(brokers: &str, topic: &str, events: &[String]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let mut deliveries = vec![];
    for e in events {
        let v: serde_json::Value = serde_json::from_str(e).expect("event");
        let key = v["card_id"]
            .as_str()
            .or(v["device_id"].as_str())
            .unwrap_or("")
            .to_string();
        match producer.send_result(FutureRecord::to(topic).key(&key).payload(e)) {
            Ok(d) => deliveries.push(d),
            Err((e, _)) => panic!("produce: {e}"),
        }
    }
    for d in deliveries {
        d.await
            .expect("delivery")
            .map_err(|(e, _)| e)
            .expect("produce");
    }
}

/// End of the recorded stream: a marker at the last event time on every
/// partition moves every input's watermark there, as replay's end of input
/// does (the markers' type is read by no rule). Markers go where their key
/// hashes: sends until each of `partitions` has one; returns how many.
async fn produce_end_markers(
    brokers: &str,
    topic: &str,
    events: &[String],
    partitions: usize,
) -> u64 {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    let last_ts = events
        .iter()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .filter_map(|v| v["ts"].as_str().map(str::to_string))
        .max()
        .expect("events");
    let mut marked = std::collections::BTreeSet::new();
    let mut markers = 0u64;
    while marked.len() < partitions && markers < 1000 {
        let tick = format!(r#"{{"type":"Tick","ts":"{last_ts}","n":{markers}}}"#);
        let key = format!("tick-{markers}");
        markers += 1;
        let delivery = producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&tick),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce marker");
        marked.insert(delivery.partition);
    }
    markers
}

/// `--node-timeout` of the recovery tests: several seconds of silence, as a
/// real deployment would use, rather than the 2 s that a debug build on two
/// busy cores can exceed while it is working.
const NODE_TIMEOUT: &str = "5s";

/// What [`read_alert_topic`] read: alert id → copies, how many records,
/// and the partition's high watermark when it stopped.
struct AlertTopic {
    ids: BTreeMap<String, usize>,
    records: i64,
    high: i64,
}

impl AlertTopic {
    /// For a failure message: whether the broker holds what was not read.
    fn describe(&self) -> String {
        format!(
            "alerts topic: {} records read, high watermark {}",
            self.records, self.high
        )
    }
}

/// Reads the alert ids on (one-partition) `topic` until `total` have come
/// (then 2 s more for strays), or nothing new has come for 60 s.
///
/// The reader checks offsets itself: tansu 0.6 may answer a fetch from the
/// middle of a record batch with the next batch, so a consumer that
/// continues from there skips the rest of the batch. A gap in the offsets
/// is re-read from the partition's start (as the gateway's Kafka source does)
/// instead of being counted as alerts the gateway never sent; so is a reader
/// that gets nothing while the broker holds more.
async fn read_alert_topic(brokers: &str, topic: &str, total: usize) -> AlertTopic {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("alerts-reader-{}", free_port()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    let mut next = 0i64;
    let mut progress = std::time::Instant::now();
    let mut last_new = std::time::Instant::now();
    let mut quiet_until: Option<std::time::Instant> = None;
    let high = |c: &StreamConsumer| {
        c.fetch_watermarks(topic, 0, Duration::from_secs(2))
            .map_or(0, |(_, h)| h)
    };
    loop {
        let now = std::time::Instant::now();
        if last_new.elapsed() > Duration::from_secs(60) || quiet_until.is_some_and(|q| now > q) {
            break;
        }
        // Stuck inside a batch (the broker answers nothing) while it holds
        // more: re-read too.
        if progress.elapsed() >= Duration::from_secs(3) {
            progress = std::time::Instant::now();
            let high = high(&consumer);
            if high > next {
                eprintln!("alerts topic: stuck at {next} of {high}; re-reading from the start");
                consumer
                    .seek(topic, 0, rdkafka::Offset::Beginning, Duration::from_secs(5))
                    .expect("seek");
            }
        }
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
            progress = std::time::Instant::now();
            if m.offset() < next {
                continue; // read again after a rewind
            }
            if m.offset() > next {
                eprintln!(
                    "alerts topic: offset {} after {}; re-reading from the start",
                    m.offset(),
                    next - 1
                );
                consumer
                    .seek(topic, 0, rdkafka::Offset::Beginning, Duration::from_secs(5))
                    .expect("seek");
                continue;
            }
            next = m.offset() + 1;
            last_new = std::time::Instant::now();
            let v: serde_json::Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).expect("alert JSON");
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
            let want = match &v["key"] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            assert_eq!(key, want, "alerts are keyed by the alert key");
            *ids.entry(v["id"].as_str().unwrap_or("").to_string())
                .or_insert(0) += 1;
        }
        if quiet_until.is_none() && ids.values().sum::<usize>() >= total {
            quiet_until = Some(std::time::Instant::now() + Duration::from_secs(2));
        }
    }
    let high = high(&consumer);
    AlertTopic {
        ids,
        records: next,
        high,
    }
}

/// The recovery tests' common start: once the gateway at `http` has processed
/// the first half of `events` (already on the topic), produces the second half
/// and the end markers in the background and returns when it is flowing.
/// The task's result is the number of markers.
async fn then_the_second_half(
    brokers: &str,
    http: &str,
    events: &[String],
) -> tokio::task::JoinHandle<u64> {
    let half = events.len() / 2;
    let h = http.to_string();
    tokio::task::spawn_blocking(move || wait_processed(&h, half as u64))
        .await
        .expect("first half");
    let (b, rest, all) = (
        brokers.to_string(),
        events[half..].to_vec(),
        events.to_vec(),
    );
    let producer = tokio::spawn(async move {
        produce(&b, "events", &rest).await;
        produce_end_markers(&b, "events", &all, 4).await
    });
    let h = http.to_string();
    tokio::task::spawn_blocking(move || {
        wait_until("the second half flowing", Duration::from_secs(30), || {
            cluster(&h).is_some_and(|c| c["events_accepted"].as_u64() > Some(half as u64 + 5_000))
        })
    })
    .await
    .expect("flowing");
    producer
}

/// The stream of the recovery tests: over 100,000 events, 500 cards (and
/// their accounts and devices), so several hundred keys per rule.
const RECOVERY_EVENTS: usize = 120_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream_loses_and_repeats_no_alert() {
    let (_broker, brokers) = start_broker();
    create_topic(&brokers, "events", 4).await;
    let s = Scenario::new("kafka-kill", RECOVERY_EVENTS, 500);
    let (dir, events) = (&s.rules, &s.events);
    let (replayed, expected) = (&s.replayed, s.expected());
    let half = RECOVERY_EVENTS / 2;
    produce(&brokers, "events", &events[..half]).await;

    let (mut nodes, eps) = start_nodes(2);
    let ep = Endpoints::fresh();
    let gw = start_gateway(
        dir,
        &eps,
        &ep,
        &[
            "--idle",
            "0s",
            "--kafka",
            &brokers,
            "--topic",
            "events",
            "--group",
            "vigil-kill",
            "--checkpoint-every",
            "500ms",
            // Long enough that a node starved of CPU by the other tests is
            // not taken for dead; the killed one is found all the same.
            "--node-timeout",
            NODE_TIMEOUT,
        ],
    );
    let ctx = zmq::Context::new();
    let sink = AlertSink::subscribe(&ctx, &ep.publish, "alert.");
    // The second half is produced while node 1 is killed.
    let producer = then_the_second_half(&brokers, &ep.http, events).await;
    nodes[1].kill();
    let c = cluster(&ep.http).expect("cluster");
    assert!(
        c["events_accepted"].as_u64() < Some(RECOVERY_EVENTS as u64),
        "the kill must land mid-stream: {c}"
    );
    let http = ep.http.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("node-1's shards on node-0", Duration::from_secs(60), || {
            cluster(&http).is_some_and(|c| c["nodes"][0]["shards"] == 1024)
        })
    })
    .await
    .expect("failover");
    // It comes back, and gets its shards back at the next checkpoint.
    nodes[1] = restart_node(&eps[1]);
    let markers = producer.await.expect("producer");
    let http = ep.http.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("node-1's shards back", Duration::from_secs(60), || {
            cluster(&http)
                .is_some_and(|c| c["nodes"][1]["shards"] == 512 && c["nodes"][1]["state"] == "up")
        });
        wait_processed(&http, RECOVERY_EVENTS as u64 + markers);
    })
    .await
    .expect("all processed");
    let http = ep.http.clone();
    let got = tokio::task::spawn_blocking(move || sink.all_published(&http))
        .await
        .expect("published");
    let got = id_counts(got.iter());
    assert_same_alerts(
        &got,
        &expected,
        "Kafka cluster with a node killed vs replay",
        &format!(
            "\nmissing (rule key at id):\n{}\ngateway log:\n{}",
            describe_missing(&got, replayed, 20),
            gw.output()
        ),
    );
    let c = cluster(&ep.http).expect("cluster");
    assert!(c["checkpoint"]["id"].as_u64() >= Some(2), "{c}");
    assert!(c["checkpoint"]["bytes"].as_u64() > Some(0), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restarted_mid_stream_resumes_from_its_checkpoint() {
    let (_broker, brokers) = start_broker();
    create_topic(&brokers, "events", 4).await;
    create_topic(&brokers, "alerts", 1).await;
    let s = Scenario::new("kafka-restart", RECOVERY_EVENTS, 500);
    let (dir, events) = (&s.rules, &s.events);
    let (replayed, expected) = (&s.replayed, s.expected());
    let total: usize = expected.values().sum();
    let half = RECOVERY_EVENTS / 2;
    produce(&brokers, "events", &events[..half]).await;

    let (_nodes, eps) = start_nodes(2);
    let ep = Endpoints::fresh();
    let data = fresh_dir("restart-data");
    let args = [
        "--idle",
        "0s",
        "--kafka",
        &brokers,
        "--topic",
        "events",
        "--group",
        "vigil-restart",
        "--alerts-topic",
        "alerts",
        "--checkpoint-every",
        "500ms",
        "--node-timeout",
        NODE_TIMEOUT,
    ];
    let mut gw = start_gateway_in(&data, dir, &eps, &ep, &args);
    let producer = then_the_second_half(&brokers, &ep.http, events).await;
    // A restart (SIGTERM: drain, a last checkpoint, exit), mid-stream.
    let before = cluster(&ep.http).and_then(|c| c["events_accepted"].as_u64());
    gw.signal("TERM");
    let exited = tokio::task::spawn_blocking(move || {
        wait_until("the gateway exits", Duration::from_secs(30), || !gw.alive());
        gw
    })
    .await
    .expect("exit");
    assert!(
        exited.output().contains("router stopped"),
        "{}",
        exited.output()
    );
    assert!(
        before < Some(RECOVERY_EVENTS as u64),
        "the restart must land mid-stream: {before:?}"
    );
    let first_log = exited.output();
    drop(exited);
    let gw = start_gateway_in(&data, dir, &eps, &ep, &args);
    let markers = producer.await.expect("producer");
    assert!(
        gw.output().contains("resuming from checkpoint"),
        "{}",
        gw.output()
    );
    let got = read_alert_topic(&brokers, "alerts", total).await;
    assert_same_alerts(
        &got.ids,
        &expected,
        "alerts topic across a gateway restart vs replay",
        &format!(
            "\n{}\nmissing (rule key at id):\n{}\nfirst gateway's log:\n{first_log}\nsecond gateway's log:\n{}",
            got.describe(),
            describe_missing(&got.ids, replayed, 20),
            gw.output()
        ),
    );
    // The second gateway read only what the checkpoint did not cover.
    let c = cluster(&ep.http).expect("cluster");
    let resumed = c["events_accepted"].as_u64().unwrap_or(0);
    assert!(
        resumed < RECOVERY_EVENTS as u64 + markers,
        "resumed from the checkpoint's offsets, not the start: {c}"
    );
    let _ = std::fs::remove_dir_all(data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_kafka_give_the_alerts_of_replay_and_reach_the_alerts_topic() {
    let (_broker, brokers) = start_broker();
    // Four partitions, each its own input with its own watermark.
    create_topic(&brokers, "events", 4).await;
    create_topic(&brokers, "alerts", 1).await;
    let s = Scenario::new("kafka", 5_000, 200);
    let (dir, events) = (&s.rules, &s.events);
    let expected = s.expected();
    assert!(!expected.is_empty());

    produce(&brokers, "events", events).await;
    let markers = produce_end_markers(&brokers, "events", events, 4).await;

    let ep = Endpoints::fresh();
    let ctx = zmq::Context::new();
    let gw = start_gateway(
        dir,
        &[],
        &ep,
        &[
            "--idle",
            "0s",
            "--kafka",
            &brokers,
            "--topic",
            "events",
            "--group",
            "vigil-test",
            "--alerts-topic",
            "alerts",
        ],
    );
    let sink = AlertSink::subscribe(&ctx, &ep.publish, "alert.");
    let _ = &gw;
    wait_processed(&ep.http, events.len() as u64 + markers);
    let total: usize = expected.values().sum();
    let got = sink.all_published(&ep.http);
    let got = id_counts(got.iter());
    assert_same_alerts(
        &got,
        &expected,
        "Kafka-fed cluster vs replay",
        &format!(
            "\nmissing (rule key at id):\n{}",
            describe_missing(&got, &s.replayed, 10)
        ),
    );

    // The alerts topic has each alert once, keyed by the alert key.
    let from_topic = read_alert_topic(&brokers, "alerts", total).await;
    assert_same_alerts(
        &from_topic.ids,
        &expected,
        "alerts topic vs replay",
        &format!(
            "{}\nmissing (rule key at id):\n{}",
            from_topic.describe(),
            describe_missing(&from_topic.ids, &s.replayed, 10)
        ),
    );
    // Consumer lag is reported per partition.
    wait_until("lag metric", Duration::from_secs(15), || {
        http_get(&ep.ops, "/metrics").is_some_and(|(_, m)| {
            (0..4).all(|p| {
                m.contains(&format!(
                    "vigil_kafka_consumer_lag{{topic=\"events\",partition=\"{p}\"}} 0"
                ))
            })
        })
    });
}

/// Issue 16, item 2 (part of the fault suite, `tests/faults.rs`): the broker
/// restarts empty (its in-memory storage gone), the topic is recreated and
/// offsets start again from 0, below the offset the gateway's checkpoint
/// resumes from. The gateway must notice (counted, named in `/healthz`),
/// apply `--kafka-offset-reset` (default `earliest`: read the new topic
/// whole), and raise replay's alerts for everything produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_recreated_behind_the_checkpoint_is_detected_and_read_again() {
    let port = free_port();
    let (broker, brokers) = start_broker_on(port);
    create_topic(&brokers, "events", 1).await;
    let s = Scenario::new("kafka-backwards", 9_000, 300);
    let (first, second) = (&s.events[..6_000], &s.events[6_000..]);
    produce(&brokers, "events", first).await;
    let ep = Endpoints::fresh();
    let gw = start_gateway(
        &s.rules,
        &[],
        &ep,
        &[
            "--idle",
            "0s",
            "--kafka",
            &brokers,
            "--topic",
            "events",
            "--group",
            "vigil-backwards",
            "--checkpoint-every",
            "300ms",
        ],
    );
    let ctx = zmq::Context::new();
    let sink = AlertSink::subscribe(&ctx, &ep.publish, "alert.");
    let h = ep.http.clone();
    tokio::task::spawn_blocking(move || {
        wait_processed(&h, 6_000);
        wait_until(
            "a checkpoint at offset 6000",
            Duration::from_secs(30),
            || cluster(&h).is_some_and(|c| c["checkpoint"]["offsets"]["0"].as_i64() == Some(6_000)),
        );
    })
    .await
    .expect("first part");

    // The broker loses everything; the topic comes back with 3,000 new
    // events at offsets 0..3000, all below the checkpoint's 6,000.
    drop(broker);
    let (_broker, brokers) = start_broker_on(port);
    create_topic(&brokers, "events", 1).await;
    produce(&brokers, "events", second).await;

    let h = ep.http.clone();
    let health = tokio::task::spawn_blocking(move || {
        wait_processed(&h, 9_000);
        http_get(&h, "/healthz")
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .unwrap_or_default()
    })
    .await
    .expect("second part");
    assert_eq!(health["status"], "degraded", "{health}");
    let kafka = health["problems"]
        .as_array()
        .and_then(|p| p.iter().find(|x| x["component"] == "kafka").cloned())
        .unwrap_or_else(|| panic!("no kafka problem in {health}"));
    let msg = kafka["message"].as_str().unwrap_or_default();
    assert!(msg.contains("recreated"), "{msg}");
    let (_, metrics) = http_get(&ops_addr(&ep.http), "/metrics").expect("metrics");
    let resets: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("vigil_kafka_offset_resets_total ")?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(resets >= 1, "the reset is counted");
    let got = id_counts(sink.all_published(&ep.http).iter());
    assert_same_alerts(&got, &s.expected(), "after the topic was recreated", "");
    drop(gw);
}

/// `--kafka-offset-reset fail`: the same recreated topic stops the source,
/// loudly (health names `kafka` as stopped), instead of reading on; the rest
/// of the gateway keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_fail_policy_a_recreated_topic_stops_the_source_loudly() {
    let port = free_port();
    let (broker, brokers) = start_broker_on(port);
    create_topic(&brokers, "events", 1).await;
    let s = Scenario::new("kafka-fail", 3_000, 100);
    produce(&brokers, "events", &s.events[..2_000]).await;
    let ep = Endpoints::fresh();
    let _gw = start_gateway(
        &s.rules,
        &[],
        &ep,
        &[
            "--idle",
            "0s",
            "--kafka",
            &brokers,
            "--topic",
            "events",
            "--group",
            "vigil-fail",
            "--checkpoint-every",
            "300ms",
            "--kafka-offset-reset",
            "fail",
        ],
    );
    let h = ep.http.clone();
    tokio::task::spawn_blocking(move || {
        wait_processed(&h, 2_000);
        wait_until(
            "a checkpoint at offset 2000",
            Duration::from_secs(30),
            || cluster(&h).is_some_and(|c| c["checkpoint"]["offsets"]["0"].as_i64() == Some(2_000)),
        );
    })
    .await
    .expect("first part");
    drop(broker);
    let (_broker, brokers) = start_broker_on(port);
    create_topic(&brokers, "events", 1).await;
    produce(&brokers, "events", &s.events[2_000..]).await;
    let h = ep.http.clone();
    let health = tokio::task::spawn_blocking(move || {
        let mut health = serde_json::Value::Null;
        wait_until("the source stopped", Duration::from_secs(60), || {
            health = http_get(&h, "/healthz")
                .and_then(|(_, b)| serde_json::from_str(&b).ok())
                .unwrap_or_default();
            health["problems"].as_array().is_some_and(|p| {
                p.iter().any(|x| {
                    x["component"] == "kafka"
                        && x["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("stopped consuming"))
                })
            })
        });
        health
    })
    .await
    .expect("health");
    assert_eq!(health["status"], "degraded", "{health}");
    let c = cluster(&ep.http).expect("the gateway still serves");
    assert_eq!(
        c["events_accepted"], 2_000,
        "nothing read after the reset: {c}"
    );
}

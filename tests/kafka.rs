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
    let port = free_port();
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
        x.expect("topic created");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_kafka_give_the_alerts_of_replay_and_reach_the_alerts_topic() {
    let (_broker, brokers) = start_broker();
    // Four partitions, each its own input with its own watermark.
    create_topic(&brokers, "events", 4).await;
    create_topic(&brokers, "alerts", 1).await;
    let dir = workload_rules_dir("kafka");
    let events = workload(5_000, 200, 20);
    let ev_path = std::env::temp_dir().join(format!("vigil-kafka-{}.jsonl", std::process::id()));
    std::fs::write(&ev_path, events.join("\n") + "\n").expect("write");
    let expected = replay_ids(&dir, &ev_path, &[]);
    assert!(!expected.is_empty());

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("producer");
    // Keyed like a real producer (card or device), enqueued in file order
    // (send_result queues at once), so each partition holds its keys' events
    // in order.
    let mut deliveries = vec![];
    for e in &events {
        let v: serde_json::Value = serde_json::from_str(e).expect("event");
        let key = v["card_id"]
            .as_str()
            .or(v["device_id"].as_str())
            .unwrap_or("")
            .to_string();
        match producer.send_result(FutureRecord::to("events").key(&key).payload(e)) {
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
    // End of the recorded stream: a marker at the last event time on every
    // partition moves every input's watermark there, as replay's end of input
    // does (the markers' type is read by no rule). Markers go where their key
    // hashes: send until every partition has one.
    let last_ts = events
        .iter()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .filter_map(|v| v["ts"].as_str().map(str::to_string))
        .max()
        .expect("events");
    let mut marked = std::collections::BTreeSet::new();
    let mut markers = 0u64;
    while marked.len() < 4 && markers < 1000 {
        let tick = format!(r#"{{"type":"Tick","ts":"{last_ts}","n":{markers}}}"#);
        let key = format!("tick-{markers}");
        markers += 1;
        let delivery = producer
            .send(
                FutureRecord::to("events").key(&key).payload(&tick),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce marker");
        marked.insert(delivery.partition);
    }

    let ep = Endpoints::fresh();
    let ctx = zmq::Context::new();
    let gw = start_gateway(
        &dir,
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
    let start = std::time::Instant::now();
    while sink.len() < total && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let got: Vec<serde_json::Value> = sink.snapshot().into_iter().map(|(_, a)| a).collect();
    let got_ids = id_counts(got.iter());
    if got_ids != expected {
        let missing: Vec<&String> = expected
            .keys()
            .filter(|k| !got_ids.contains_key(*k))
            .collect();
        let extra: Vec<&String> = got_ids
            .keys()
            .filter(|k| !expected.contains_key(*k))
            .collect();
        let mut by_rule: BTreeMap<String, usize> = BTreeMap::new();
        for a in &got {
            if extra.iter().any(|i| a["id"].as_str() == Some(i.as_str())) {
                *by_rule
                    .entry(a["rule"].as_str().unwrap_or("").to_string())
                    .or_insert(0) += 1;
            }
        }
        panic!(
            "Kafka-fed cluster vs replay: got {} alerts, want {total}; missing {} extra {} (extra by rule {by_rule:?}); cluster {}",
            got_ids.values().sum::<usize>(),
            missing.len(),
            extra.len(),
            cluster(&ep.http).unwrap_or_default()
        );
    }

    // The alerts topic has each alert once, keyed by the alert key.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "alerts-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["alerts"]).expect("subscribe");
    let mut from_topic: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while from_topic.values().sum::<usize>() < total && std::time::Instant::now() < deadline {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            let v: serde_json::Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).expect("alert JSON");
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
            let want = match &v["key"] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            assert_eq!(key, want);
            *from_topic
                .entry(v["id"].as_str().unwrap_or("").to_string())
                .or_insert(0) += 1;
        }
    }
    assert_eq!(from_topic, expected, "alerts topic vs replay");
    // Consumer lag is reported per partition.
    wait_until("lag metric", Duration::from_secs(15), || {
        http_get(&ep.http, "/metrics").is_some_and(|(_, m)| {
            (0..4).all(|p| {
                m.contains(&format!(
                    "vigil_kafka_consumer_lag{{topic=\"events\",partition=\"{p}\"}} 0"
                ))
            })
        })
    });
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_file(ev_path);
}

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
    create_topic(&brokers, "events", 1).await;
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
    for e in &events {
        producer
            .send(
                FutureRecord::<(), _>::to("events").payload(e),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
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
    wait_processed(&ep.http, events.len() as u64);
    let total: usize = expected.values().sum();
    wait_until("alerts published", Duration::from_secs(60), || {
        sink.len() >= total
    });
    std::thread::sleep(Duration::from_millis(300));
    let got: Vec<serde_json::Value> = sink.snapshot().into_iter().map(|(_, a)| a).collect();
    assert_eq!(
        id_counts(got.iter()),
        expected,
        "Kafka-fed cluster vs replay"
    );

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
            m.contains("vigil_kafka_consumer_lag{topic=\"events\",partition=\"0\"} 0")
        })
    });
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_file(ev_path);
}

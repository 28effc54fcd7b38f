//! `vigil-replay produce`: writes events to a Kafka topic, one JSONL line per
//! message keyed like a real producer would key it (the `card_id`, else the
//! `device_id`, else no key), so each partition holds its keys' events in
//! order. Every message is queued at once (`send_result`) and the deliveries
//! are awaited together; the report is messages per second from the first
//! send to the last acknowledgement.

use anyhow::{Context, bail};
use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::collections::VecDeque;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["events", "generate"]))]
pub struct ProduceArgs {
    /// Kafka bootstrap servers (host:port, comma-separated).
    #[arg(long)]
    pub brokers: String,
    /// Topic to write to.
    #[arg(long)]
    pub topic: String,
    /// JSONL events to send, one message per non-blank line.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Send this many events of the `gen` workload instead (event time from
    /// the wall clock on, +1 ms per event).
    #[arg(long)]
    pub generate: Option<u64>,
    /// With --generate: distinct cards.
    #[arg(long, default_value_t = 100_000)]
    pub cards: u64,
    /// With --generate: generator seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// With --generate: start at event N of the workload (ids `e<N>`…, event
    /// time +N ms), to continue an earlier run without repeating its ids.
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Create the topic with this many partitions if it does not exist.
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What a produce run measured.
#[derive(Debug, serde::Serialize)]
pub struct ProduceReport {
    pub messages: u64,
    /// Lines that were not a JSON object (sent with no key).
    pub unkeyed: u64,
    pub secs: f64,
    pub rate: f64,
}

/// The message key of one event line: its `card_id`, else its `device_id`,
/// else empty. A string field is the key as is; a number or boolean is its
/// JSON text. `None` when the line is not a JSON object (sent with no key).
pub fn message_key(line: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Keys {
        card_id: Option<serde_json::Value>,
        device_id: Option<serde_json::Value>,
    }
    let text = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
            Some(v.to_string())
        }
        _ => None,
    };
    // A derived struct would also take a JSON array (fields by position).
    if !line.trim_start().starts_with('{') {
        return None;
    }
    let k = serde_json::from_str::<Keys>(line).ok()?;
    Some(
        text(k.card_id)
            .or_else(|| text(k.device_id))
            .unwrap_or_default(),
    )
}

pub fn produce(a: ProduceArgs) -> anyhow::Result<ExitCode> {
    let lines: Vec<String> = match (&a.events, a.generate) {
        (Some(p), _) => std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?,
        )
        .lines()
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", p.display()))?
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .collect(),
        (None, Some(n)) => crate::replay::generate_range(
            a.from,
            n,
            a.cards,
            a.seed,
            chrono::Utc::now().timestamp_millis(),
        ),
        (None, None) => bail!("give --events FILE or --generate N"),
    };
    if lines.is_empty() {
        bail!("no events to send");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        if let Some(p) = a.partitions {
            create_topic(&a.brokers, &a.topic, p).await?;
        }
        send_all(&a.brokers, &a.topic, &lines).await
    })?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "produced {} messages to {} in {:.2}s ({:.0} messages/s){}",
            report.messages,
            a.topic,
            report.secs,
            report.rate,
            if report.unkeyed > 0 {
                format!(", {} not JSON objects (no key)", report.unkeyed)
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates `topic` with `partitions` partitions; an existing topic is left as it is.
async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("Kafka admin client")?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .context("creating the topic")?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("creating topic {t}: {e}"),
        }
    }
    Ok(())
}

async fn settle(d: DeliveryFuture) -> anyhow::Result<()> {
    match d.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(anyhow::Error::new(e).context("message not delivered")),
        Err(_) => bail!("the producer dropped a delivery"),
    }
}

async fn send_all(brokers: &str, topic: &str, lines: &[String]) -> anyhow::Result<ProduceReport> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "120000")
        .create()
        .context("Kafka producer")?;
    let mut unkeyed = 0u64;
    let mut pending: VecDeque<DeliveryFuture> = VecDeque::with_capacity(lines.len());
    let start = Instant::now();
    for line in lines {
        let key = message_key(line).unwrap_or_else(|| {
            unkeyed += 1;
            String::new()
        });
        let mut record = FutureRecord::to(topic)
            .key(key.as_str())
            .payload(line.as_str());
        loop {
            match producer.send_result(record) {
                Ok(d) => {
                    pending.push_back(d);
                    break;
                }
                // The local queue is full: wait for the oldest message, retry.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    match pending.pop_front() {
                        Some(d) => settle(d).await?,
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err((e, _)) => return Err(anyhow::Error::new(e).context("queueing a message")),
            }
        }
    }
    for d in pending {
        settle(d).await?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(ProduceReport {
        messages: lines.len() as u64,
        unkeyed,
        secs,
        rate: lines.len() as f64 / secs.max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::message_key;

    #[test]
    fn keyed_by_card_then_device_then_nothing() {
        assert_eq!(
            message_key(r#"{"type":"Txn","card_id":"card-7","device_id":"dev-1"}"#).as_deref(),
            Some("card-7")
        );
        assert_eq!(
            message_key(r#"{"type":"Heartbeat","device_id":"dev-1"}"#).as_deref(),
            Some("dev-1")
        );
        assert_eq!(
            message_key(r#"{"type":"Heartbeat","card_id":null,"device_id":"dev-2"}"#).as_deref(),
            Some("dev-2")
        );
        assert_eq!(
            message_key(r#"  {"type":"Tick","n":1}"#).as_deref(),
            Some("")
        );
    }

    #[test]
    fn scalar_keys_are_their_json_text_and_others_are_skipped() {
        assert_eq!(
            message_key(r#"{"card_id":12345}"#).as_deref(),
            Some("12345")
        );
        assert_eq!(message_key(r#"{"card_id":true}"#).as_deref(), Some("true"));
        assert_eq!(
            message_key(r#"{"card_id":{"x":1},"device_id":"dev-3"}"#).as_deref(),
            Some("dev-3")
        );
        assert_eq!(message_key(r#"{"card_id":["a"]}"#).as_deref(), Some(""));
    }

    #[test]
    fn lines_that_are_not_objects_have_no_key() {
        assert_eq!(message_key("not json").as_deref(), None);
        assert_eq!(message_key("").as_deref(), None);
        // A derived struct would read an array positionally: not here.
        assert_eq!(message_key(r#"["card-1","dev-1"]"#).as_deref(), None);
        assert_eq!(message_key(r#"{"card_id":"unterminated"#).as_deref(), None);
        assert_eq!(message_key(r#""card_id""#).as_deref(), None);
    }

    #[test]
    fn generated_events_are_keyed_by_card() {
        for line in crate::replay::generate(50, 10, 42, 0) {
            let k = message_key(&line).unwrap_or_default();
            assert!(k.starts_with("card-"), "{line}");
        }
    }

    #[test]
    fn a_generated_range_continues_the_stream() {
        let all = crate::replay::generate(20, 7, 42, 1_000);
        let tail = crate::replay::generate_range(12, 8, 7, 42, 1_000);
        assert_eq!(tail, all[12..]);
        assert!(tail[0].contains(r#""id":"e12""#), "{}", tail[0]);
    }
}

//! Kafka at the edges: a source (a topic consumed in a consumer group, JSON
//! events one per message, validated and routed like every other ingest path)
//! and an optional alert sink (a topic, keyed by the alert's key, payload the
//! alert JSON).
//!
//! Offsets are committed once the router has accepted (validated and queued)
//! the events they cover. Checkpoints that tie committed offsets to durable
//! engine state are the next step (see `docs/operations.md`).

use crate::router::HttpIngest;
use crate::status::Status;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct KafkaSource {
    pub brokers: String,
    pub topic: String,
    pub group: String,
}

/// Events per batch handed to the router.
const BATCH: usize = 1024;

/// Consumes `src` until the channel to the router closes.
pub async fn consume(
    src: KafkaSource,
    ingest: tokio::sync::mpsc::Sender<HttpIngest>,
    status: Arc<Status>,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &src.brokers)
        .set("group.id", &src.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .create()?;
    consumer.subscribe(&[&src.topic])?;
    let consumer = Arc::new(consumer);
    // Every partition is an input of the event-time clock from the start: an
    // input not heard from yet holds the clock back (until the idle period).
    let partitions = {
        let (c, t) = (consumer.clone(), src.topic.clone());
        tokio::task::spawn_blocking(move || {
            c.fetch_metadata(Some(&t), Duration::from_secs(10))
                .map(|m| m.topics().first().map_or(0, |t| t.partitions().len()))
        })
        .await??
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let announce = HttpIngest {
        events: vec![],
        inputs: Some((0..partitions as u32).map(|p| 1 + p).collect()),
        reply: tx,
    };
    if ingest.send(announce).await.is_err() {
        return Ok(());
    }
    let _ = rx.await;
    info!(brokers = %src.brokers, topic = %src.topic, group = %src.group, partitions, "consuming Kafka");
    tokio::spawn(report_lag(
        consumer.clone(),
        src.topic.clone(),
        status.clone(),
    ));
    loop {
        // Gather a batch: wait for one message, then take what is ready.
        let first = consumer.recv().await?;
        let mut events = vec![first.payload().map(<[u8]>::to_vec).unwrap_or_default()];
        // Each partition is its own input (its own watermark).
        let mut inputs = vec![1 + first.partition().max(0) as u32];
        let mut last: BTreeMap<i32, i64> = BTreeMap::new();
        last.insert(first.partition(), first.offset());
        drop(first);
        while events.len() < BATCH {
            match tokio::time::timeout(Duration::from_millis(2), consumer.recv()).await {
                Ok(Ok(m)) => {
                    events.push(m.payload().map(<[u8]>::to_vec).unwrap_or_default());
                    inputs.push(1 + m.partition().max(0) as u32);
                    last.insert(m.partition(), m.offset());
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "Kafka receive error");
                    break;
                }
                Err(_) => break,
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let req = HttpIngest {
            events,
            inputs: Some(inputs),
            reply: tx,
        };
        if ingest.send(req).await.is_err() {
            return Ok(());
        }
        // Commit only what the router has taken.
        if rx.await.is_err() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &last {
            tpl.add_partition_offset(&src.topic, *p, Offset::Offset(o + 1))?;
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            warn!(error = %e, "Kafka offset commit failed");
        }
    }
}

/// Every 5 s: per-partition lag (high watermark − position) into the status.
async fn report_lag(consumer: Arc<StreamConsumer>, topic: String, status: Arc<Status>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let c = consumer.clone();
        let t = topic.clone();
        let lags = tokio::task::spawn_blocking(move || -> Vec<(i32, i64)> {
            let Ok(pos) = c.position() else { return vec![] };
            pos.elements()
                .iter()
                .filter(|e| e.topic() == t)
                .filter_map(|e| {
                    let (_, high) = c
                        .fetch_watermarks(&t, e.partition(), Duration::from_secs(2))
                        .ok()?;
                    let at = match e.offset() {
                        Offset::Offset(o) => o,
                        _ => 0,
                    };
                    Some((e.partition(), (high - at).max(0)))
                })
                .collect()
        })
        .await
        .unwrap_or_default();
        if let Ok(mut m) = status.kafka_lag.lock() {
            m.clear();
            for (p, lag) in lags {
                m.insert((topic.clone(), p), lag);
            }
        }
    }
}

/// Publishes alerts to a topic.
#[derive(Clone)]
pub struct AlertSink {
    producer: FutureProducer,
    topic: String,
}

impl AlertSink {
    pub fn new(brokers: &str, topic: &str) -> anyhow::Result<AlertSink> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(AlertSink {
            producer,
            topic: topic.to_string(),
        })
    }

    /// Sends one alert (key = the alert's key, payload = the alert JSON).
    pub async fn send(&self, key: &str, json: &str) -> anyhow::Result<()> {
        self.producer
            .send(
                FutureRecord::to(&self.topic).key(key).payload(json),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("Kafka alert sink: {e}"))?;
        Ok(())
    }
}

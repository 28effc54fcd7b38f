//! Kafka at the edges: a source (a topic consumed in a consumer group, JSON
//! events one per message, validated and routed like every other ingest path)
//! and an optional alert sink (a topic, keyed by the alert's key, payload the
//! alert JSON).
//!
//! Offsets belong to checkpoints, as in Flink's Kafka source: the gateway
//! assigns itself every partition of the topic and starts each at the offset
//! the last durable checkpoint recorded (or, with none, at the group's
//! committed offset, else the earliest). Offsets are committed to the group
//! only after a checkpoint covering them is durable, for monitoring tools and
//! for a gateway started on an empty store.

use crate::router::HttpIngest;
use crate::status::Status;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::{error, info, warn};

#[derive(Debug, Clone)]
pub struct KafkaSource {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    pub reset: OffsetReset,
}

/// What the source does when a partition's next offset is outside what the
/// broker holds: beyond its end (the topic was recreated, or the broker
/// lost its data, so offsets start again from 0) or before its start
/// (retention deleted events before they were read). Each case is logged,
/// counted (`vigil_kafka_offset_resets_total`) and shown in `/healthz` for
/// [`ALARM_HOLD`] whatever the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// Read on from the earliest offset the broker holds (a recreated
    /// topic is read whole).
    #[default]
    Earliest,
    /// Read on from the end: only messages produced from now on.
    Latest,
    /// Stop consuming (the gateway stays up, degraded, until restarted).
    Fail,
}

impl std::str::FromStr for OffsetReset {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<OffsetReset> {
        match s {
            "earliest" => Ok(OffsetReset::Earliest),
            "latest" => Ok(OffsetReset::Latest),
            "fail" => Ok(OffsetReset::Fail),
            other => {
                anyhow::bail!("unknown offset reset policy {other:?} (earliest, latest, fail)")
            }
        }
    }
}

/// How long `/healthz` names an offset reset after it happened.
pub const ALARM_HOLD: Duration = Duration::from_secs(15 * 60);

/// A partition whose next offset was outside the broker's range.
#[derive(Debug, Clone)]
struct OffsetJump {
    partition: i32,
    want: i64,
    low: i64,
    high: i64,
}

impl OffsetJump {
    fn describe(&self) -> String {
        if self.want > self.high {
            format!(
                "partition {} resumes at offset {} but the broker holds {}..{}: the topic was recreated or lost its data",
                self.partition, self.want, self.low, self.high
            )
        } else {
            format!(
                "partition {} resumes at offset {} but the broker holds {}..{}: events were deleted by retention before they were read",
                self.partition, self.want, self.low, self.high
            )
        }
    }
}

/// Events per batch handed to the router.
const BATCH: usize = 1024;

/// Consumes `src` until the channel to the router closes. `start`: the
/// offsets of the checkpoint the router resumes from; `committed`: the
/// offsets of each durable checkpoint, committed to the group as they come.
pub async fn consume(
    src: KafkaSource,
    ingest: tokio::sync::mpsc::Sender<HttpIngest>,
    status: Arc<Status>,
    start: BTreeMap<i32, i64>,
    committed: tokio::sync::watch::Receiver<BTreeMap<i32, i64>>,
) -> anyhow::Result<()> {
    let mut positions = Positions::new(&src.topic, &start);
    let mut announced = false;
    loop {
        let client = Client::connect(&src, &positions, status.clone(), committed.clone()).await?;
        if !announced {
            announced = true;
            // Every partition is an input of the event-time clock from the
            // start: an input not heard from yet holds the clock back (until
            // the idle period).
            let (tx, rx) = tokio::sync::oneshot::channel();
            let announce = HttpIngest {
                events: vec![],
                inputs: Some((0..client.partitions as u32).map(|p| 1 + p).collect()),
                offsets: None,
                reply: tx,
            };
            if ingest.send(announce).await.is_err() {
                return Ok(());
            }
            let _ = rx.await;
        }
        info!(brokers = %src.brokers, topic = %src.topic, group = %src.group, partitions = client.partitions, resumed = !positions.parts.is_empty(), "consuming Kafka");
        match run(&src, &client, positions, &ingest, &status).await? {
            Outcome::Closed => return Ok(()),
            Outcome::Wedged(p) => {
                positions = p;
                status
                    .counters
                    .kafka_client_restarts
                    .fetch_add(1, Ordering::Relaxed);
                warn!(
                    "a Kafka partition that holds more delivered nothing through {WEDGED} re-reads; replacing the consumer client (it resumes at the offsets due)"
                );
            }
        }
    }
}

/// A consumer client and the tasks that share it (stopped when it is
/// dropped).
struct Client {
    consumer: Arc<StreamConsumer>,
    partitions: usize,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Client {
    /// A client assigned every partition of the topic, each at the offset
    /// `positions` has due (or the group's committed one).
    async fn connect(
        src: &KafkaSource,
        positions: &Positions,
        status: Arc<Status>,
        committed: tokio::sync::watch::Receiver<BTreeMap<i32, i64>>,
    ) -> anyhow::Result<Client> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &src.brokers)
            .set("group.id", &src.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create()?;
        let consumer = Arc::new(consumer);
        let partitions = {
            let (c, t) = (consumer.clone(), src.topic.clone());
            tokio::task::spawn_blocking(move || {
                c.fetch_metadata(Some(&t), Duration::from_secs(10))
                    .map(|m| m.topics().first().map_or(0, |t| t.partitions().len()))
            })
            .await??
        };
        anyhow::ensure!(
            partitions > 0,
            "Kafka topic `{}` has no partitions (does it exist?)",
            src.topic
        );
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(&src.topic, p, positions.fetch_from(p))?;
        }
        consumer.assign(&tpl)?;
        let tasks = vec![
            tokio::spawn(report_lag(consumer.clone(), src.topic.clone(), status)),
            tokio::spawn(commit_checkpointed(
                consumer.clone(),
                src.topic.clone(),
                committed,
            )),
        ];
        Ok(Client {
            consumer,
            partitions,
            tasks,
        })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Why [`run`] returned.
enum Outcome {
    /// The router is gone: the gateway is shutting down.
    Closed,
    /// The client stopped delivering: replace it; the positions go on.
    Wedged(Positions),
}

/// Re-reads of one partition without a message, in a row, after which the
/// client is replaced (librdkafka can leave a partition's fetcher stuck
/// after a broker restart; seeks then change nothing).
const WEDGED: u32 = 3;

/// Reads batches from `client` into the router until the router goes away,
/// the client stops delivering, or the offset policy stops the source.
async fn run(
    src: &KafkaSource,
    client: &Client,
    mut positions: Positions,
    ingest: &tokio::sync::mpsc::Sender<HttpIngest>,
    status: &Arc<Status>,
) -> anyhow::Result<Outcome> {
    let consumer = &client.consumer;
    let mut last_check = std::time::Instant::now();
    loop {
        // Gather a batch: wait for a message, then take what is ready.
        let mut events = vec![];
        let mut inputs = vec![];
        let mut offsets = vec![];
        let mut wait = Duration::from_secs(1);
        while events.len() < BATCH {
            match tokio::time::timeout(wait, consumer.recv()).await {
                Ok(Ok(m)) => {
                    if !positions.take(consumer, m.partition(), m.offset()) {
                        continue;
                    }
                    events.push(m.payload().map(<[u8]>::to_vec).unwrap_or_default());
                    // Each partition is its own input (its own watermark).
                    inputs.push(1 + m.partition().max(0) as u32);
                    offsets.push(m.offset());
                    wait = Duration::from_millis(2);
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "Kafka receive error");
                    break;
                }
                Err(_) => break,
            }
        }
        if last_check.elapsed() >= Duration::from_secs(1) {
            last_check = std::time::Instant::now();
            let c = consumer.clone();
            let reset = src.reset;
            let (p, jumps) = tokio::task::spawn_blocking(move || {
                let jumps = positions.check_stalled(&c, reset);
                (positions, jumps)
            })
            .await?;
            positions = p;
            for j in &jumps {
                let what = j.describe();
                status
                    .counters
                    .kafka_offset_resets
                    .fetch_add(1, Ordering::Relaxed);
                status.alarm(
                    "kafka",
                    format!("{what} (policy: {:?})", src.reset),
                    ALARM_HOLD,
                );
                error!(partition = j.partition, want = j.want, low = j.low, high = j.high, policy = ?src.reset, "{what}");
            }
            if src.reset == OffsetReset::Fail && !jumps.is_empty() {
                anyhow::bail!(
                    "stopped consuming (--kafka-offset-reset fail): {}",
                    jumps
                        .iter()
                        .map(OffsetJump::describe)
                        .collect::<Vec<_>>()
                        .join("; ")
                );
            }
            status.expire_alarms();
            if positions.wedged() {
                positions.restarted();
                return Ok(Outcome::Wedged(positions));
            }
        }
        if events.is_empty() {
            continue;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let req = HttpIngest {
            events,
            inputs: Some(inputs),
            offsets: Some(offsets),
            reply: tx,
        };
        let asked = std::time::Instant::now();
        if ingest.send(req).await.is_err() {
            return Ok(Outcome::Closed);
        }
        // One batch at a time: the router has numbered these before the next.
        if rx.await.is_err() {
            return Ok(Outcome::Closed);
        }
        if asked.elapsed() >= Duration::from_millis(500) {
            positions.waited();
        }
    }
}

/// Keeps every partition's offsets contiguous, whatever the broker answers.
///
/// Kafka answers a fetch at offset `x` with the record batch that *contains*
/// `x` (the client skips what precedes it), but some compatible brokers
/// answer with the first batch that *starts* at or after `x` (observed with
/// tansu 0.6). A consumer whose fetch lands inside a batch — a resume at a
/// checkpoint's offset, or the next fetch after a response cut short — then
/// silently skips the rest of that batch, or gets nothing at all when it was
/// the last. So for each partition this tracks the next offset due:
/// - an earlier offset is dropped (covered by the checkpoint, or read again);
/// - a later one is a gap: the partition is re-read from its start;
/// - nothing for a while although the partition holds more: the same.
///
/// A resumed partition is first fetched from `x − REWIND`, so that the fetch
/// starts at (or before) a batch boundary rather than inside one.
struct Positions {
    topic: String,
    parts: BTreeMap<i32, Part>,
}

struct Part {
    /// The next offset to route; `None` until the first message of a
    /// partition that does not resume from a checkpoint.
    next: Option<i64>,
    /// Since a re-read started: later offsets are what was fetched before it.
    rewound: bool,
    /// When this partition last delivered its next offset (or was re-read).
    progress: std::time::Instant,
    /// The offset of the last message delivered (routed or not).
    last_seen: Option<i64>,
    /// The broker's end was below our next offset: its last message was
    /// asked for again, to tell a quirk from lost data (see `check_stalled`).
    probing: bool,
    /// Re-reads since the partition last delivered anything.
    stalls: u32,
}

impl Part {
    fn new(next: Option<i64>, now: std::time::Instant) -> Part {
        Part {
            next,
            rewound: false,
            progress: now,
            last_seen: None,
            probing: false,
            stalls: 0,
        }
    }
}

/// How far before a checkpoint's offset a resumed partition is fetched from.
const REWIND: i64 = 100_000;

/// How long a partition that holds more may deliver nothing before it is
/// re-read.
const STALL: Duration = Duration::from_secs(5);

impl Positions {
    fn new(topic: &str, start: &BTreeMap<i32, i64>) -> Positions {
        let now = std::time::Instant::now();
        Positions {
            topic: topic.to_string(),
            parts: start
                .iter()
                .map(|(p, o)| (*p, Part::new(Some(*o), now)))
                .collect(),
        }
    }

    /// Where a new client starts fetching `p`: a little before its next
    /// offset due, else at the group's committed offset.
    fn fetch_from(&self, p: i32) -> Offset {
        match self.parts.get(&p).and_then(|part| part.next) {
            Some(n) => Offset::Offset((n - REWIND).max(0)),
            None => Offset::Stored,
        }
    }

    /// Whether a partition went through [`WEDGED`] re-reads in a row
    /// without a single message.
    fn wedged(&self) -> bool {
        self.parts.values().any(|part| part.stalls >= WEDGED)
    }

    /// A new client starts: nothing it fetches predates a re-read.
    fn restarted(&mut self) {
        let now = std::time::Instant::now();
        for part in self.parts.values_mut() {
            part.stalls = 0;
            part.rewound = false;
            part.probing = false;
            part.progress = now;
        }
    }

    /// Whether the message at (`p`, `offset`) is the next one to route.
    fn take(&mut self, consumer: &StreamConsumer, p: i32, offset: i64) -> bool {
        let now = std::time::Instant::now();
        let part = self.parts.entry(p).or_insert_with(|| Part::new(None, now));
        part.last_seen = Some(offset);
        part.stalls = 0;
        match part.next {
            None => {
                part.next = Some(offset + 1);
                part.progress = now;
                true
            }
            Some(n) if offset < n => {
                part.rewound = false; // the re-read has started
                part.progress = now;
                false
            }
            Some(n) if offset == n => {
                part.next = Some(n + 1);
                part.rewound = false;
                part.progress = now;
                true
            }
            Some(_) if part.rewound => false, // fetched before the re-read
            Some(n) => {
                warn!(
                    partition = p,
                    want = n,
                    got = offset,
                    "the broker skipped offsets; re-reading the partition from its start"
                );
                part.rewound = true;
                part.progress = now;
                rewind(consumer, &self.topic, p);
                false
            }
        }
    }

    /// The source waited (on the router) rather than read: nobody stalled.
    fn waited(&mut self) {
        let now = std::time::Instant::now();
        for part in self.parts.values_mut() {
            part.progress = now;
        }
    }

    /// Re-reads each partition that has delivered nothing for [`STALL`]
    /// although the broker holds messages past its next offset. A partition
    /// whose next offset is outside what the broker holds is returned, and
    /// moved by `reset` (left alone for [`OffsetReset::Fail`]).
    fn check_stalled(&mut self, consumer: &StreamConsumer, reset: OffsetReset) -> Vec<OffsetJump> {
        let now = std::time::Instant::now();
        let mut jumps = vec![];
        for (p, part) in self.parts.iter_mut() {
            let Some(n) = part.next else { continue };
            if now.duration_since(part.progress) < STALL {
                continue;
            }
            let (low, high) = match consumer.fetch_watermarks(
                &self.topic,
                *p,
                Duration::from_secs(2),
            ) {
                Ok(w) => w,
                Err(e) => {
                    warn!(partition = *p, error = %e, "cannot read the partition's offsets from the broker");
                    continue;
                }
            };
            part.progress = now;
            // Beyond the end: the broker holds less than what was read? Its
            // high watermark alone does not say so (tansu 0.6 may report
            // the start of its last record batch, a few offsets below what
            // was read from that batch). So its last message is asked for
            // again: a broker that still holds what was read delivers up to
            // `n - 1` (the whole batch); one that lost it (the topic was
            // recreated) delivers only offsets well below, or nothing.
            let mut backwards = false;
            if high < n {
                if high <= low {
                    backwards = true; // it holds nothing at all
                } else if !part.probing {
                    part.probing = true;
                    part.last_seen = None;
                    seek(consumer, &self.topic, *p, Offset::Offset(high - 1));
                    continue;
                } else {
                    part.probing = false;
                    backwards = part.last_seen.is_none_or(|m| m + 1 < n);
                }
            } else {
                part.probing = false;
            }
            if high <= n && !backwards {
                continue; // nothing new: quiet, not stalled
            }
            if backwards || low > n {
                // Offsets went backwards (the topic was recreated) or the
                // events due were deleted: the policy decides.
                jumps.push(OffsetJump {
                    partition: *p,
                    want: n,
                    low,
                    high,
                });
                match reset {
                    OffsetReset::Fail => {}
                    OffsetReset::Earliest => {
                        // The next offset due is the broker's first: if
                        // the seek delivers nothing, the partition stalls
                        // and is re-read like any other.
                        part.next = Some(low);
                        part.rewound = true;
                        seek(consumer, &self.topic, *p, Offset::Beginning);
                    }
                    OffsetReset::Latest => {
                        part.next = Some(high);
                        part.rewound = true;
                        seek(consumer, &self.topic, *p, Offset::Offset(high));
                    }
                }
                continue;
            }
            warn!(
                partition = *p,
                want = n,
                high,
                "no message from a partition that holds more; re-reading it from its start"
            );
            part.stalls += 1;
            part.rewound = true;
            rewind(consumer, &self.topic, *p);
        }
        jumps
    }
}

/// Re-reads partition `p` from its start.
fn rewind(consumer: &StreamConsumer, topic: &str, p: i32) {
    seek(consumer, topic, p, Offset::Beginning);
}

fn seek(consumer: &StreamConsumer, topic: &str, p: i32, to: Offset) {
    if let Err(e) = consumer.seek(topic, p, to, Duration::from_secs(5)) {
        warn!(partition = p, error = %e, "seek failed");
    }
}

/// Commits the offsets of each durable checkpoint to the consumer group.
async fn commit_checkpointed(
    consumer: Arc<StreamConsumer>,
    topic: String,
    mut committed: tokio::sync::watch::Receiver<BTreeMap<i32, i64>>,
) {
    while committed.changed().await.is_ok() {
        let offsets = committed.borrow_and_update().clone();
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &offsets {
            if let Err(e) = tpl.add_partition_offset(&topic, *p, Offset::Offset(*o)) {
                warn!(error = %e, "bad offset to commit");
            }
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            warn!(error = %e, "Kafka offset commit failed (the checkpoint still holds them)");
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
            // One produce request in flight: a retried batch can neither
            // overtake the next one (alerts of a key stay in order) nor race
            // it inside the broker. Batches still carry many alerts.
            .set("max.in.flight.requests.per.connection", "1")
            .create()?;
        Ok(AlertSink {
            producer,
            topic: topic.to_string(),
        })
    }

    /// Sends alerts (key = the alert's key, payload = the alert JSON): all
    /// are queued in the producer at once, then every delivery is awaited, so
    /// a batch costs one round trip rather than one per alert.
    pub async fn send_all(&self, records: &[(String, String)]) -> anyhow::Result<()> {
        let mut deliveries = Vec::with_capacity(records.len());
        for (key, json) in records {
            let record = FutureRecord::to(&self.topic).key(key).payload(json);
            let d = match self.producer.send_result(record) {
                Ok(d) => d,
                // The local queue is full: wait for what is in flight, then
                // send this one the slow way.
                Err((e, record)) => {
                    warn!(error = %e, "Kafka alert sink queue full; waiting");
                    for d in deliveries.drain(..) {
                        delivered(d).await?;
                    }
                    self.producer
                        .send(record, Duration::from_secs(30))
                        .await
                        .map_err(|(e, _)| anyhow::anyhow!("Kafka alert sink: {e}"))?;
                    continue;
                }
            };
            deliveries.push(d);
        }
        for d in deliveries {
            delivered(d).await?;
        }
        Ok(())
    }
}

async fn delivered(d: rdkafka::producer::DeliveryFuture) -> anyhow::Result<()> {
    match d.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(anyhow::anyhow!("Kafka alert sink: {e}")),
        Err(_) => Err(anyhow::anyhow!("Kafka alert sink: delivery cancelled")),
    }
}

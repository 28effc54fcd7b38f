//! `vigil-replay load`: a load generator for a running gateway. Pushes a JSONL
//! file (or the `gen` workload) over ZeroMQ PUSH at a target rate, listens to
//! the alert PUB, and reports the achieved throughput and ingest→alert
//! latency: from the moment the event that completed a match was handed to
//! ZeroMQ to the moment its alert arrived.

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// JSONL events to send (default: generate the `gen` workload).
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// With no --events: number of generated events.
    #[arg(long, default_value_t = 1_000_000)]
    pub generate: u64,
    /// With no --events: distinct cards.
    #[arg(long, default_value_t = 100_000)]
    pub cards: u64,
    /// Target rate, events/s (0: as fast as the gateway takes them).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Events per multipart message.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Gateway PULL endpoint.
    #[arg(long, default_value = "tcp://127.0.0.1:7701")]
    pub push: String,
    /// Gateway alert PUB endpoint.
    #[arg(long, default_value = "tcp://127.0.0.1:7703")]
    pub sub: String,
    /// Gateway HTTP address (to learn when the cluster has processed
    /// everything): the gateway's `--metrics-addr`, or its API address with
    /// `--api-key` (`/v1/cluster` there needs a viewer key).
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub http: String,
    /// With no --events: event time of the first generated event, epoch ms
    /// (default: just after the gateway's clock, or now). `vigil-replay gen
    /// --base-ms` with the same value writes the same events.
    #[arg(long)]
    pub base_ms: Option<i64>,
    /// With no --events: which generated workload (`txn` or `library`).
    #[arg(long, value_enum, default_value_t)]
    pub flavor: crate::library::Flavor,
    /// Also write every alert received (JSON, one per line) to this file.
    #[arg(long)]
    pub alerts_out: Option<PathBuf>,
    /// Stop sending after this many seconds (0: send every event); the report
    /// counts the events sent, always a whole number of batches from the start.
    #[arg(long, default_value_t = 0)]
    pub max_secs: u64,
    /// API key for `/v1/cluster` on the API port.
    #[arg(long, env = "VIGIL_API_KEY")]
    pub api_key: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What a load run measured.
#[derive(Debug, serde::Serialize)]
pub struct LoadReport {
    pub events: u64,
    pub send_secs: f64,
    pub send_rate: f64,
    /// Events through the cluster (accepted and processed by every node) per second.
    pub cluster_rate: f64,
    pub alerts: u64,
    pub latency_us_p50: u64,
    pub latency_us_p90: u64,
    pub latency_us_p99: u64,
    pub latency_us_p999: u64,
    pub latency_us_max: u64,
}

/// The events a load run sends, in order.
enum Source {
    /// A JSONL file, in memory; ids map to positions for the latency.
    File {
        lines: Vec<String>,
        index: HashMap<String, usize>,
    },
    /// The `gen` workload, generated a batch at a time (a soak of tens of
    /// millions of events never holds them all); event `i` has id `e<i>`.
    Generated {
        flavor: crate::library::Flavor,
        events: u64,
        cards: u64,
        base_ms: i64,
    },
}

impl Source {
    fn len(&self) -> usize {
        match self {
            Source::File { lines, .. } => lines.len(),
            Source::Generated { events, .. } => *events as usize,
        }
    }

    /// Events `from .. from + n`.
    fn batch(&self, from: usize, n: usize) -> Vec<String> {
        match self {
            Source::File { lines, .. } => {
                lines[from.min(lines.len())..(from + n).min(lines.len())].to_vec()
            }
            Source::Generated {
                flavor,
                events,
                cards,
                base_ms,
            } => {
                let n = (n as u64).min(events.saturating_sub(from as u64));
                crate::library::range(*flavor, from as u64, n, *cards, 42, *base_ms)
            }
        }
    }

    /// The position of the event with this id.
    fn position(&self, id: &str) -> Option<usize> {
        match self {
            Source::File { index, .. } => index.get(id).copied(),
            Source::Generated { events, .. } => id
                .strip_prefix('e')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&i| i < *events as usize),
        }
    }
}

fn source(a: &LoadArgs) -> anyhow::Result<Source> {
    let Some(p) = &a.events else {
        return Ok(Source::Generated {
            flavor: a.flavor,
            events: a.generate,
            cards: a.cards,
            base_ms: a.base_ms.unwrap_or_else(|| {
                // After anything the gateway has seen, or every event is late.
                cluster(&a.http, a.api_key.as_deref())
                    .and_then(|c| c["clock_ms"].as_i64())
                    .map_or(0, |c| c + 1)
                    .max(chrono::Utc::now().timestamp_millis())
            }),
        });
    };
    let lines: Vec<String> = std::io::BufReader::new(
        std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?,
    )
    .lines()
    .collect::<Result<Vec<_>, _>>()?
    .into_iter()
    .filter(|l| !l.trim().is_empty())
    .collect();
    let index = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let id = match &v["id"] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some((id, i))
        })
        .collect();
    Ok(Source::File { lines, index })
}

pub fn load(a: LoadArgs) -> anyhow::Result<ExitCode> {
    let src = Arc::new(source(&a)?);
    let n = src.len();
    if n == 0 {
        bail!("no events to send");
    }
    let batch = a.batch.max(1);
    // When each batch was handed to ZeroMQ (ns since start; 0: not yet).
    let sent_at: Arc<Vec<AtomicU64>> =
        Arc::new((0..n.div_ceil(batch)).map(|_| AtomicU64::new(0)).collect());
    let start = Instant::now();
    let ctx = zmq::Context::new();

    // Alert listener.
    let sub = ctx.socket(zmq::SUB)?;
    sub.connect(&a.sub)?;
    sub.set_subscribe(b"alert.")?;
    sub.set_rcvtimeo(100)?;
    sub.set_rcvhwm(1_000_000)?;
    let mut alerts_out = match &a.alerts_out {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let alerts = Arc::new(AtomicU64::new(0));
    let listener = {
        let (stop, alerts, sent_at, src) =
            (stop.clone(), alerts.clone(), sent_at.clone(), src.clone());
        std::thread::spawn(move || -> anyhow::Result<Histogram<u64>> {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()));
            while !stop.load(Ordering::Relaxed) {
                let Ok(frames) = sub.recv_multipart(0) else {
                    continue;
                };
                let now = start.elapsed().as_nanos() as u64;
                let Some(body) = frames.get(1) else { continue };
                alerts.fetch_add(1, Ordering::Relaxed);
                if let Some(out) = alerts_out.as_mut() {
                    out.write_all(body)?;
                    out.write_all(b"\n")?;
                }
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
                    continue;
                };
                // The newest matched event completed the match.
                let newest = v["matched"]
                    .as_object()
                    .into_iter()
                    .flat_map(|m| m.values())
                    .flat_map(|ids| ids.as_array().cloned().unwrap_or_default())
                    .filter_map(|id| id.as_str().and_then(|s| src.position(s)))
                    .max();
                if let Some(i) = newest {
                    let t = sent_at[i / batch].load(Ordering::Relaxed);
                    if t > 0 && now > t {
                        let _ = h.record(((now - t) / 1_000).max(1));
                    }
                }
            }
            if let Some(out) = alerts_out.as_mut() {
                out.flush()?;
            }
            Ok(h)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let base = accepted(&a.http, a.api_key.as_deref()).unwrap_or(0);

    let push = ctx.socket(zmq::PUSH)?;
    push.set_sndhwm(10_000)?;
    push.set_linger(10_000)?;
    push.connect(&a.push)?;
    let t0 = Instant::now();
    let stop_at = (a.max_secs > 0).then(|| Duration::from_secs(a.max_secs));
    let mut n = n;
    for b in 0..n.div_ceil(batch) {
        if stop_at.is_some_and(|s| t0.elapsed() >= s) {
            // Out of time: what was sent so far is the run.
            n = b * batch;
            break;
        }
        let chunk = src.batch(b * batch, batch);
        if a.rate > 0 {
            let due = Duration::from_secs_f64((b * batch) as f64 / a.rate as f64);
            let el = t0.elapsed();
            if due > el {
                std::thread::sleep(due - el);
            }
        }
        sent_at[b].store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        push.send_multipart(chunk.iter().map(String::as_bytes), 0)?;
    }
    let send_secs = t0.elapsed().as_secs_f64();
    // Done when the gateway accepted everything and every node caught up.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut done = None;
    while Instant::now() < deadline {
        if let Some(c) = cluster(&a.http, a.api_key.as_deref()) {
            let acc = c["events_accepted"].as_u64().unwrap_or(0);
            let rej: u64 = c["events_rejected"]
                .as_object()
                .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
            let caught_up = c["nodes"].as_array().is_some_and(|ns| {
                ns.iter()
                    .filter(|n| n["state"] == "up")
                    .all(|n| n["lag_events"] == 0 && n["queued_copies"] == 0)
            });
            if acc + rej >= base + n as u64 && caught_up {
                done = Some(t0.elapsed().as_secs_f64());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let Some(total_secs) = done else {
        bail!(
            "the cluster did not process the events within 300 s (is the gateway at {}?)",
            a.http
        );
    };
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let h = listener
        .join()
        .map_err(|_| anyhow::anyhow!("alert listener panicked"))??;
    let r = LoadReport {
        events: n as u64,
        send_secs,
        send_rate: n as f64 / send_secs,
        cluster_rate: n as f64 / total_secs,
        alerts: alerts.load(Ordering::Relaxed),
        latency_us_p50: h.value_at_quantile(0.5),
        latency_us_p90: h.value_at_quantile(0.9),
        latency_us_p99: h.value_at_quantile(0.99),
        latency_us_p999: h.value_at_quantile(0.999),
        latency_us_max: h.max(),
    };
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "events {}  sent in {:.2}s ({:.0}/s)  cluster {:.0} events/s  alerts {}",
            r.events, r.send_secs, r.send_rate, r.cluster_rate, r.alerts
        );
        println!(
            "ingest->alert latency us: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            r.latency_us_p50,
            r.latency_us_p90,
            r.latency_us_p99,
            r.latency_us_p999,
            r.latency_us_max
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn cluster(http: &str, key: Option<&str>) -> Option<serde_json::Value> {
    let mut s = std::net::TcpStream::connect(http).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    write!(s, "GET /v1/cluster HTTP/1.0\r\nHost: {http}\r\n{auth}\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

fn accepted(http: &str, key: Option<&str>) -> Option<u64> {
    let c = cluster(http, key)?;
    let rej: u64 = c["events_rejected"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
    Some(c["events_accepted"].as_u64()? + rej)
}

//! The fault suite: the parts Vigil depends on fail for real while events
//! flow, and the alerts are compared with `vigil-replay run` by id.
//!
//! - a full disk under the embedded store (a small tmpfs; mounting needs
//!   root, which CI has: elsewhere the test says it skipped, unless
//!   `VIGIL_FAULTS_REQUIRE_TMPFS=1` makes a failed mount an error);
//! - a Redis stalled (SIGSTOP) for 60 s under the store;
//! - a Kafka topic whose offsets went backwards (the broker restarted
//!   empty): `tests/kafka.rs`, which has the broker's helpers,
//!   `a_topic_recreated_behind_the_checkpoint_is_detected_and_read_again`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use vigil_tests::*;

/// A tmpfs of `mb` MiB mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// `None` (with the reason printed) where it cannot be mounted.
    fn mount(mb: u32) -> Option<Tmpfs> {
        let dir = fresh_dir("tmpfs");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                let msg =
                    format!("cannot mount a {mb} MiB tmpfs ({why}): the disk-full test needs root");
                assert!(
                    std::env::var("VIGIL_FAULTS_REQUIRE_TMPFS").as_deref() != Ok("1"),
                    "{msg} (VIGIL_FAULTS_REQUIRE_TMPFS=1)"
                );
                eprintln!("SKIPPED: {msg}");
                None
            }
        }
    }

    /// Writes a file until the filesystem is full; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.flush();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The admin key a first start prints once.
fn admin_key(gw: &Proc) -> String {
    let mut key = None;
    wait_until("the admin key in the log", Duration::from_secs(10), || {
        key = gw
            .output()
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("vk_"))
            .map(str::to_string);
        key.is_some()
    });
    key.unwrap_or_default()
}

/// Ids of every stored alert (`GET /v1/alerts`, paged).
fn stored_ids(http: &str, key: &str) -> BTreeMap<String, usize> {
    let auth = format!("Bearer {key}");
    let mut out = vec![];
    let mut cursor = String::new();
    loop {
        let path = if cursor.is_empty() {
            "/v1/alerts?limit=1000".to_string()
        } else {
            format!("/v1/alerts?limit=1000&cursor={cursor}")
        };
        let (status, body) = http_request(http, "GET", &path, &[("Authorization", &auth)], "")
            .expect("GET /v1/alerts");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("alerts JSON");
        out.extend(v["alerts"].as_array().cloned().unwrap_or_default());
        match v["next"].as_str() {
            Some(c) if !c.is_empty() => cursor = c.to_string(),
            _ => break,
        }
    }
    id_counts(out.iter())
}

fn health(http: &str) -> serde_json::Value {
    http_get(http, "/healthz")
        .and_then(|(_, b)| serde_json::from_str(&b).ok())
        .unwrap_or_default()
}

/// One sample of a metric (first line starting with `series `).
fn metric(http: &str, series: &str) -> f64 {
    http_get(&ops_addr(http), "/metrics")
        .and_then(|(_, text)| {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        })
        .unwrap_or(-1.0)
}

fn store_problem(h: &serde_json::Value) -> bool {
    h["problems"]
        .as_array()
        .is_some_and(|p| p.iter().any(|x| x["component"] == "store"))
}

/// Stops the gateway with SIGTERM and returns how long it took to exit.
fn stop(gw: &mut Proc) -> Duration {
    let t = Instant::now();
    gw.signal("TERM");
    while gw.alive() && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(50));
    }
    t.elapsed()
}

/// Issue 16, item 1: the embedded store's disk fills up while events flow,
/// then space comes back. While full, the gateway says so (health degraded
/// naming the store, not ready, failures counted) and ingest pauses (the
/// pusher is held back, nothing is dropped); after, the store is reopened,
/// the backlog drains, and every alert is published and stored exactly
/// once, as replay raises it. Shutdown then completes in bounded time.
#[test]
fn a_full_disk_pauses_ingest_says_so_and_loses_nothing_once_freed() {
    let Some(fs) = Tmpfs::mount(24) else { return };
    let s = Scenario::new("diskfull", 12_000, 300);
    let expected = s.expected();
    let ep = Endpoints::fresh();
    let mut gw = start_gateway_in(
        &fs.dir.join("data"),
        &s.rules,
        &[],
        &ep,
        &["--idle", "0s", "--checkpoint-every", "300ms"],
    );
    let key = admin_key(&gw);
    let ctx = zmq::Context::new();
    let sink = AlertSink::subscribe(&ctx, &ep.publish, "alert.");
    push_events(&ctx, &ep.pull, &s.events[..4_000], 100);
    wait_processed(&ep.http, 4_000);
    assert_eq!(health(&ep.http)["status"], "ok");

    let filler = fs.fill();
    // The middle part is pushed while the disk is full: the push blocks
    // when ingest pauses (ZeroMQ's queues fill), nothing is dropped.
    let (pull, middle) = (ep.pull.clone(), s.events[4_000..8_000].to_vec());
    let pusher = std::thread::spawn(move || {
        push_events(&zmq::Context::new(), &pull, &middle, 100);
    });
    wait_until(
        "health degraded, naming the store",
        Duration::from_secs(60),
        || store_problem(&health(&ep.http)),
    );
    let h = health(&ep.http);
    assert_eq!(h["status"], "degraded", "{h}");
    let ready = http_get(&ep.http, "/readyz").expect("readyz");
    assert_eq!(ready.0, 503, "not ready while the store fails: {}", ready.1);
    assert!(ready.1.contains("store"), "{}", ready.1);
    assert!(
        metric(
            &ep.http,
            "vigil_dependency_failures_total{component=\"store\"}"
        ) > 0.0,
        "store failures counted"
    );
    assert_eq!(
        metric(&ep.http, "vigil_dependency_up{component=\"store\"}"),
        0.0
    );
    assert!(metric(&ep.http, "vigil_ingest_pauses_total") > 0.0);
    // What no durable checkpoint covers yet is held for replay, and shown.
    assert!(metric(&ep.http, "vigil_replay_log_events") > 0.0);
    assert!(metric(&ep.http, "vigil_replay_log_bytes") > 0.0);
    // Paused: the accepted count stops moving.
    let accepted = |http: &str| cluster(http).and_then(|c| c["events_accepted"].as_u64());
    let a1 = accepted(&ep.http);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        accepted(&ep.http),
        a1,
        "ingest paused while the disk is full"
    );

    std::fs::remove_file(&filler).expect("free the disk");
    wait_until("health ok again", Duration::from_secs(60), || {
        health(&ep.http)["status"] == "ok"
    });
    pusher.join().expect("pusher");
    // A PULL socket fair-queues between connections: the last part goes
    // on a new one only once the middle part is in, or the two would
    // interleave (events out of order, late with no lateness allowed).
    wait_processed(&ep.http, 8_000);
    push_events(&ctx, &ep.pull, &s.events[8_000..], 100);
    wait_processed(&ep.http, s.events.len() as u64);
    assert_eq!(
        metric(&ep.http, "vigil_dependency_up{component=\"store\"}"),
        1.0
    );

    let published = id_counts(sink.all_published(&ep.http).iter());
    let state = format!("cluster: {}", cluster(&ep.http).unwrap_or_default());
    assert_same_alerts(&published, &expected, "published after a full disk", &state);
    let mut stored = BTreeMap::new();
    wait_until("every alert stored", Duration::from_secs(30), || {
        stored = stored_ids(&ep.http, &key);
        stored.values().sum::<usize>() >= expected.values().sum::<usize>()
    });
    assert_same_alerts(&stored, &expected, "stored after a full disk", "");
    let took = stop(&mut gw);
    assert!(!gw.alive(), "the gateway stops");
    assert!(took < Duration::from_secs(30), "shutdown took {took:?}");
}

/// A `redis-server` on a free port, killed on drop.
struct Redis {
    proc: Proc,
    url: String,
}

fn start_redis() -> Redis {
    start_redis_on(free_port())
}

/// A new `redis-server` on `port`, without persistence: a restart there is
/// a Redis that lost its data.
fn start_redis_on(port: u16) -> Redis {
    let dir = fresh_dir("redis");
    let proc = Proc::spawn(
        "redis",
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir),
    );
    let addr = format!("127.0.0.1:{port}");
    wait_until("redis listening", Duration::from_secs(20), || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    Redis {
        proc,
        url: format!("redis://{addr}"),
    }
}

fn get_with(http: &str, path: &str, key: &str) -> u16 {
    let auth = format!("Bearer {key}");
    http_request(http, "GET", path, &[("Authorization", &auth)], "").map_or(0, |(s, _)| s)
}

/// Issue 16, item 4: while the store stalls, what the gateway reports is
/// true and live: `/v1/cluster` and `/healthz` answer at once (the router
/// never waits on the store), health names the store, ingest pauses are
/// counted, the replay log shows what no checkpoint covers yet, and the
/// checkpoints that could not be stored are counted; all clear after.
#[test]
fn health_and_metrics_tell_the_truth_while_the_store_stalls() {
    let redis = start_redis();
    let s = Scenario::new("redis-truth", 8_000, 200);
    let ep = Endpoints::fresh();
    let _gw = start_gateway_in(
        &fresh_dir("data"),
        &s.rules,
        &[],
        &ep,
        &[
            "--idle",
            "0s",
            "--redis",
            &redis.url,
            "--checkpoint-every",
            "300ms",
        ],
    );
    let ctx = zmq::Context::new();
    push_events(&ctx, &ep.pull, &s.events[..2_000], 100);
    wait_processed(&ep.http, 2_000);
    let failures_before = metric(&ep.http, "vigil_checkpoint_failures_total");

    redis.proc.signal("STOP");
    let (pull, rest) = (ep.pull.clone(), s.events[2_000..].to_vec());
    let pusher = std::thread::spawn(move || {
        push_events(&zmq::Context::new(), &pull, &rest, 20);
    });
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut named = false;
    // Past the 10 s store timeout and the 30 s after which a checkpoint not
    // stored counts as failed.
    while started.elapsed() < Duration::from_secs(35) {
        let t = Instant::now();
        let c = cluster(&ep.http).expect("/v1/cluster answers during the stall");
        let h = health(&ep.http);
        slowest = slowest.max(t.elapsed());
        assert!(c["nodes"].as_array().is_some_and(|n| !n.is_empty()), "{c}");
        named |= store_problem(&h);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        slowest < Duration::from_secs(2),
        "the cluster view and health answer at once: slowest {slowest:?}"
    );
    assert!(named, "health named the stalled store");
    let ready = http_get(&ep.http, "/readyz").expect("readyz");
    assert_eq!(ready.0, 503, "{}", ready.1);
    assert!(metric(&ep.http, "vigil_ingest_pauses_total") > 0.0);
    assert!(metric(&ep.http, "vigil_replay_log_events") > 0.0);
    assert!(
        metric(&ep.http, "vigil_checkpoint_failures_total") > failures_before,
        "checkpoints not stored are counted"
    );
    assert!(
        metric(
            &ep.http,
            "vigil_dependency_failures_total{component=\"store\"}"
        ) > 0.0
    );

    redis.proc.signal("CONT");
    pusher.join().expect("pusher");
    wait_processed(&ep.http, s.events.len() as u64);
    wait_until("health ok again", Duration::from_secs(60), || {
        health(&ep.http)["status"] == "ok"
    });
    assert_eq!(
        metric(&ep.http, "vigil_dependency_up{component=\"store\"}"),
        1.0
    );
    assert_eq!(http_get(&ep.http, "/readyz").map(|r| r.0), Some(200));
}

/// Issue 16, item 5: Redis restarts empty under a running gateway. The
/// gateway notices (the store's marker is gone), says so in the log and in
/// `/healthz`, and runs the first-start bootstrap again: the rule files are
/// imported and deployed, and a new admin key is printed once, so it serves
/// again instead of answering 401 to everyone.
#[test]
fn a_redis_restarted_empty_is_noticed_and_bootstrapped_again() {
    let port = free_port();
    let mut redis = start_redis_on(port);
    let s = Scenario::new("redis-empty", 2_000, 100);
    let ep = Endpoints::fresh();
    let gw = start_gateway_in(
        &fresh_dir("data"),
        &s.rules,
        &[],
        &ep,
        &["--idle", "0s", "--redis", &redis.url],
    );
    let old = admin_key(&gw);
    assert_eq!(get_with(&ep.http, "/v1/rules", &old), 200);

    redis.proc.kill();
    redis = start_redis_on(port);
    let mut new = String::new();
    wait_until(
        "a new admin key in the log",
        Duration::from_secs(30),
        || {
            new = gw
                .output()
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("vk_"))
                .nth(1)
                .unwrap_or_default()
                .to_string();
            !new.is_empty()
        },
    );
    assert!(
        gw.output().contains("lost its data"),
        "the log says what happened"
    );
    let h = health(&ep.http);
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(
        h["problems"]
            .as_array()
            .is_some_and(|p| p.iter().any(|x| x["component"] == "store_data")),
        "{h}"
    );
    assert_eq!(
        get_with(&ep.http, "/v1/rules", &old),
        401,
        "the old key went with the data"
    );
    assert_eq!(get_with(&ep.http, "/v1/rules", &new), 200);
    // The rule files are back in the store, and detection goes on.
    let auth = format!("Bearer {new}");
    let (_, body) = http_request(
        &ep.http,
        "GET",
        "/v1/rules",
        &[("Authorization", &auth)],
        "",
    )
    .expect("rules");
    let rules: serde_json::Value = serde_json::from_str(&body).expect("rules JSON");
    assert!(
        rules.as_array().is_some_and(|r| !r.is_empty())
            || rules["rules"].as_array().is_some_and(|r| !r.is_empty()),
        "rules re-imported: {body}"
    );
    let ctx = zmq::Context::new();
    let sink = AlertSink::subscribe(&ctx, &ep.publish, "alert.");
    push_events(&ctx, &ep.pull, &s.events, 100);
    wait_processed(&ep.http, s.events.len() as u64);
    assert_same_alerts(
        &id_counts(sink.all_published(&ep.http).iter()),
        &s.expected(),
        "after Redis came back empty",
        "",
    );
    drop(gw);
    drop(redis);
}

/// Issue 16, item 3: Redis stops answering (SIGSTOP) for 60 s while events
/// flow and the API is read. Store I/O must not stall node liveness: no
/// shard moves, and the alerts are exactly replay's.
#[test]
fn a_redis_stalled_for_a_minute_moves_no_shard_and_loses_nothing() {
    let redis = start_redis();
    let s = Scenario::new("redis-stall", 16_000, 400);
    let expected = s.expected();
    let ep = Endpoints::fresh();
    let gw = start_gateway_in(
        &fresh_dir("data"),
        &s.rules,
        &[],
        &ep,
        &["--idle", "0s", "--redis", &redis.url],
    );
    let key = admin_key(&gw);
    let ctx = zmq::Context::new();
    let sink = AlertSink::subscribe(&ctx, &ep.publish, "alert.");
    push_events(&ctx, &ep.pull, &s.events[..4_000], 100);
    wait_processed(&ep.http, 4_000);

    redis.proc.signal("STOP");
    let stalled = Instant::now();
    let (pull, middle) = (ep.pull.clone(), s.events[4_000..12_000].to_vec());
    let pusher = std::thread::spawn(move || {
        push_events(&zmq::Context::new(), &pull, &middle, 20);
    });
    // API calls meanwhile (they wait on the store or fail; they must not
    // disturb the nodes). Store calls time out after 10 s: from then on
    // health names the store.
    let mut said_so = false;
    while stalled.elapsed() < Duration::from_secs(60) {
        said_so |= store_problem(&health(&ep.http));
        let auth = format!("Bearer {key}");
        let _ = http_request(
            &ep.http,
            "GET",
            "/v1/alerts?limit=10",
            &[("Authorization", &auth)],
            "",
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    said_so |= store_problem(&health(&ep.http));
    assert!(said_so, "health named the stalled store");
    redis.proc.signal("CONT");
    wait_until("health ok again", Duration::from_secs(60), || {
        health(&ep.http)["status"] == "ok"
    });
    pusher.join().expect("pusher");
    // On a new connection only once the middle part is in (see the disk
    // test: a PULL socket interleaves connections).
    wait_processed(&ep.http, 12_000);
    push_events(&ctx, &ep.pull, &s.events[12_000..], 100);
    wait_processed(&ep.http, s.events.len() as u64);
    assert_eq!(
        metric(&ep.http, "vigil_shards_moved_total"),
        0.0,
        "no failover while every node was alive"
    );
    assert!(
        metric(&ep.http, "vigil_checkpoint_failures_total") > 0.0,
        "checkpoints that could not be stored are counted"
    );
    let published = id_counts(sink.all_published(&ep.http).iter());
    assert_same_alerts(&published, &expected, "after a 60 s Redis stall", "");
    let mut stored = BTreeMap::new();
    wait_until("every alert stored", Duration::from_secs(60), || {
        stored = stored_ids(&ep.http, &key);
        stored.values().sum::<usize>() >= expected.values().sum::<usize>()
    });
    assert_same_alerts(&stored, &expected, "stored after a 60 s Redis stall", "");
    // The per-rule counter agrees with the store after the stall.
    let counted: f64 = http_get(&ops_addr(&ep.http), "/metrics")
        .map(|(_, text)| {
            text.lines()
                .filter(|l| l.starts_with("vigil_rule_alerts_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0);
    assert_eq!(
        counted as usize,
        expected.values().sum::<usize>(),
        "vigil_rule_alerts_total counts every stored alert"
    );
    drop(gw);
}

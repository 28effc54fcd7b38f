//! Shared helpers for the end-to-end tests: locating (and if needed building)
//! the workspace binaries, free loopback ports, child processes that die with
//! the test, a minimal HTTP GET, and ZeroMQ producer/subscriber helpers.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static BUILD: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Path of a workspace binary, built first if it is missing (so the tests
/// also work with `cargo test -p vigil-tests` alone).
pub fn bin(package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("target dir");
    let path = dir.join(name);
    // Built once per test process, always: a binary left over from an older
    // build must never be what a test exercises (cargo returns at once when
    // it is up to date).
    let mut built = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(root())
            .args(["build", "-p", package, "--bin", name])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building {name} failed");
        built.push(name.to_string());
    }
    path
}

static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A loopback TCP port that was free a moment ago and that no other test of
/// this process was given (tests run in parallel).
pub fn free_port() -> u16 {
    let mut given = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let log = std::env::temp_dir().join(format!(
            "vigil-test-{}-{name}-{}.log",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let err = file.try_clone().expect("log file");
        let child = cmd
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Proc {
            child,
            name: name.into(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status();
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- {} output ----\n{}", self.name, self.output());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `GET http://addr/path` → (status, body). HTTP/1.0, no keep-alive.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Any request: `method path` with `headers` and `body` → (status, body).
/// HTTP/1.0, no keep-alive.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// `GET /v1/cluster` as JSON, from the operations listener of the gateway
/// whose API is at `http` (`/v1/cluster` on the API port needs a key).
pub fn cluster(http: &str) -> Option<serde_json::Value> {
    let (_, body) = http_get(&ops_addr(http), "/v1/cluster")?;
    serde_json::from_str(&body).ok()
}

/// (API address, operations address) of every [`Endpoints::fresh`].
static OPS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// The operations listener (`--metrics-addr`: `/metrics`, `/v1/cluster`
/// without a key) of the gateway whose API is at `http`; `http` itself for a
/// gateway started without one.
pub fn ops_addr(http: &str) -> String {
    OPS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(h, _)| h == http)
        .map_or_else(|| http.to_string(), |(_, o)| o.clone())
}

/// Polls until `f` holds (panics with `what` after `timeout`).
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Endpoints of one gateway under test.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub http: String,
    /// The operations listener: `/metrics` and `/v1/cluster` without a key.
    pub ops: String,
    pub pull: String,
    pub router: String,
    pub publish: String,
}

impl Endpoints {
    pub fn fresh() -> Endpoints {
        let ep = Endpoints {
            http: format!("127.0.0.1:{}", free_port()),
            ops: format!("127.0.0.1:{}", free_port()),
            pull: format!("tcp://127.0.0.1:{}", free_port()),
            router: format!("tcp://127.0.0.1:{}", free_port()),
            publish: format!("tcp://127.0.0.1:{}", free_port()),
        };
        OPS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((ep.http.clone(), ep.ops.clone()));
        ep
    }

    pub fn args(&self) -> Vec<String> {
        [
            ("--http", &self.http),
            ("--metrics-addr", &self.ops),
            ("--zmq-pull", &self.pull),
            ("--zmq-router", &self.router),
            ("--zmq-pub", &self.publish),
        ]
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .collect()
    }
}

/// A new empty directory under the temp dir.
pub fn fresh_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "vigil-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Starts `n` `vigil-node` processes on loopback; returns them and their endpoints.
pub fn start_nodes(n: usize) -> (Vec<Proc>, Vec<String>) {
    start_nodes_with(n, &[])
}

/// [`start_nodes`] with extra flags for every node.
pub fn start_nodes_with(n: usize, extra: &[&str]) -> (Vec<Proc>, Vec<String>) {
    let node = bin("cep-engine", "vigil-node");
    let mut procs = vec![];
    let mut eps = vec![];
    for i in 0..n {
        let ep = format!("tcp://127.0.0.1:{}", free_port());
        procs.push(Proc::spawn(
            &format!("node{i}"),
            Command::new(&node)
                .args([
                    "--bind",
                    &ep,
                    "--name",
                    &format!("test-node-{i}"),
                    "--http",
                    "off",
                ])
                .args(extra),
        ));
        eps.push(ep);
    }
    (procs, eps)
}

/// Starts a gateway routing to `nodes`, with `extra` flags; waits until ready.
pub fn start_gateway(rules: &Path, nodes: &[String], ep: &Endpoints, extra: &[&str]) -> Proc {
    start_gateway_in(&fresh_dir("data"), rules, nodes, ep, extra)
}

/// [`start_gateway`] on the store in `data` (a restart passes the same one).
pub fn start_gateway_in(
    data: &Path,
    rules: &Path,
    nodes: &[String],
    ep: &Endpoints,
    extra: &[&str],
) -> Proc {
    let gw = bin("vigil-gateway", "vigil-gateway");
    let mut cmd = Command::new(gw);
    cmd.arg("--rules")
        .arg(rules)
        .arg("--data-dir")
        .arg(data)
        .args(ep.args());
    for n in nodes {
        cmd.args(["--node", n]);
    }
    cmd.args(extra);
    let p = Proc::spawn("gateway", &mut cmd);
    wait_until("gateway /readyz", Duration::from_secs(30), || {
        http_get(&ep.http, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    p
}

/// Collects alerts from the gateway's PUB socket on a background thread.
pub struct AlertSink {
    alerts: std::sync::Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AlertSink {
    /// Subscribes to `prefix` (e.g. `alert.` or `` for everything).
    pub fn subscribe(ctx: &zmq::Context, endpoint: &str, prefix: &str) -> AlertSink {
        let sub = ctx.socket(zmq::SUB).expect("SUB");
        sub.connect(endpoint).expect("connect SUB");
        sub.set_subscribe(prefix.as_bytes()).expect("subscribe");
        sub.set_rcvtimeo(100).expect("rcvtimeo");
        let alerts = std::sync::Arc::new(Mutex::new(vec![]));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a, s) = (alerts.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(frames) = sub.recv_multipart(0) else {
                    continue;
                };
                if let [topic, body] = frames.as_slice() {
                    let topic = String::from_utf8_lossy(topic).to_string();
                    let json = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
                    a.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((topic, json));
                }
            }
        });
        // Let the subscription reach the publisher (ZeroMQ slow joiner).
        std::thread::sleep(Duration::from_millis(300));
        AlertSink {
            alerts,
            stop,
            thread: Some(thread),
        }
    }

    pub fn snapshot(&self) -> Vec<(String, serde_json::Value)> {
        self.alerts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn len(&self) -> usize {
        self.alerts.lock().map(|a| a.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until this sink has received as many alerts as the gateway at
    /// `http` says it published (plus a short grace for strays), then returns
    /// the alert bodies.
    pub fn all_published(&self, http: &str) -> Vec<serde_json::Value> {
        wait_until("alerts delivered", Duration::from_secs(30), || {
            cluster(http).is_some_and(|c| c["alerts_published"].as_u64() == Some(self.len() as u64))
        });
        std::thread::sleep(Duration::from_millis(300));
        self.snapshot().into_iter().map(|(_, a)| a).collect()
    }
}

impl Drop for AlertSink {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends events over PUSH in multipart batches of `batch` frames.
pub fn push_events(ctx: &zmq::Context, endpoint: &str, events: &[String], batch: usize) {
    let push = ctx.socket(zmq::PUSH).expect("PUSH");
    push.set_linger(5_000).expect("linger");
    push.connect(endpoint).expect("connect PUSH");
    for chunk in events.chunks(batch.max(1)) {
        push.send_multipart(chunk.iter().map(String::as_bytes), 0)
            .expect("send");
    }
}

/// Reads a JSONL file into lines (blank lines dropped).
pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Alert ids (with multiplicity) from `vigil-replay run` over the same input.
pub fn replay_ids(rules: &Path, events: &Path, extra: &[&str]) -> BTreeMap<String, usize> {
    id_counts(replay_alerts(rules, events, extra).iter())
}

/// The alerts of `vigil-replay run` over the same input, in its order.
pub fn replay_alerts(rules: &Path, events: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let replay = bin("vigil-replay", "vigil-replay");
    let out = Command::new(replay)
        .args(["run", "--rules"])
        .arg(rules)
        .arg("--events")
        .arg(events)
        .args(extra)
        .stderr(Stdio::null())
        .output()
        .expect("vigil-replay run");
    assert!(out.status.success(), "vigil-replay run failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("alert JSON");
            assert!(v["id"].is_string(), "alert without an id: {line}");
            v
        })
        .collect()
}

/// For a failed comparison: up to `n` of the `want` alerts missing from
/// `got`, as `rule key at`, one per line.
pub fn describe_missing(
    got: &BTreeMap<String, usize>,
    want: &[serde_json::Value],
    n: usize,
) -> String {
    want.iter()
        .filter(|a| !got.contains_key(a["id"].as_str().unwrap_or("")))
        .take(n)
        .map(|a| format!("{} {} {} {}\n", a["rule"], a["key"], a["at"], a["id"]))
        .collect()
}

/// Multiset of ids.
pub fn id_counts<'a>(
    alerts: impl IntoIterator<Item = &'a serde_json::Value>,
) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for a in alerts {
        *ids.entry(a["id"].as_str().unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    ids
}

/// Waits until the gateway accepted `accepted` events and every node is up and
/// has processed all it was sent (a node that is down or catching up, e.g.
/// after a false alarm on a loaded machine, means not done yet).
pub fn wait_processed(http: &str, accepted: u64) {
    // Processed: every copy acknowledged, and every node's shards advanced
    // to the gateway's clock (an idle node learns the last clock after the
    // last event; absence timers fire then).
    let done = |c: &serde_json::Value| {
        c["events_accepted"].as_u64() == Some(accepted)
            && c["nodes"].as_array().is_some_and(|ns| {
                ns.iter().all(|n| {
                    n["state"] == "up"
                        && n["lag_events"] == 0
                        && n["queued_copies"] == 0
                        && n["clock_ms"] == c["clock_ms"]
                })
            })
    };
    let start = Instant::now();
    let mut last = serde_json::Value::Null;
    while start.elapsed() < Duration::from_secs(120) {
        if let Some(c) = cluster(http) {
            if done(&c) {
                return;
            }
            last = c;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {accepted} events to be processed; cluster: {last}");
}

/// The start of a workload test: the workload rules in a fresh directory,
/// `n` workload events over `cards` cards (in memory and in a file), and the
/// alerts `vigil-replay run` raises over them, which the system under test
/// must reproduce. The files are removed on drop unless the test failed
/// (they are then left for a look).
pub struct Scenario {
    pub rules: PathBuf,
    pub events: Vec<String>,
    pub events_path: PathBuf,
    pub replayed: Vec<serde_json::Value>,
}

impl Scenario {
    pub fn new(tag: &str, n: usize, cards: u64) -> Scenario {
        let rules = workload_rules_dir(tag);
        let events = workload(n, cards, 20);
        let events_path = write_events(tag, &events);
        let replayed = replay_alerts(&rules, &events_path, &[]);
        Scenario {
            rules,
            events,
            events_path,
            replayed,
        }
    }

    /// Replay's alerts as id → copies.
    pub fn expected(&self) -> BTreeMap<String, usize> {
        id_counts(self.replayed.iter())
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.rules);
            let _ = std::fs::remove_file(&self.events_path);
        }
    }
}

/// A deterministic mixed workload: card payments (keyed by card and by
/// account), and device heartbeats, `n` events, event time +`step_ms` each.
pub fn workload(n: usize, cards: u64, step_ms: i64) -> Vec<String> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let t0: i64 = 1_767_571_200_000;
    let countries = ["US", "GB", "FR", "DE", "NL"];
    (0..n)
        .map(|i| {
            let ts = cep_engine::time::format_ms(t0 + i as i64 * step_ms);
            let r = next();
            if r % 10 == 0 {
                let dev = r / 10 % (cards / 4).max(1);
                format!(r#"{{"id":"e{i}","type":"Heartbeat","ts":"{ts}","device_id":"dev-{dev}"}}"#)
            } else {
                let card = r / 16 % cards;
                let amount = (next() % 10_000) as f64 / 100.0 + if r % 97 == 0 { 900.0 } else { 0.0 };
                let country = countries[(next() % 5) as usize];
                format!(
                    r#"{{"id":"e{i}","type":"Txn","ts":"{ts}","card_id":"card-{card}","account_id":"acct-{}","amount":{amount:.2},"country":"{country}"}}"#,
                    card % (cards / 3).max(1)
                )
            }
        })
        .collect()
}

/// Rules for [`workload`]: keyed by card, by account, global, and an absence rule.
pub const WORKLOAD_RULES: &[(&str, &str)] = &[
    (
        "events.vgl",
        "event Txn { card_id: string, account_id: string, amount: float, country: string }\nevent Heartbeat { device_id: string }\n# Read by no rule: end-of-stream markers in the Kafka test.\nevent Tick { n: int }\n",
    ),
    (
        "spike.vgl",
        "rule spike {\n  severity high\n  key card_id\n  pattern a: Txn -> b: Txn[amount > a.amount * 5]\n  within 60s\n  emit { first: a.amount, big: b.amount }\n}\n",
    ),
    (
        "countries.vgl",
        "rule countries {\n  severity medium\n  key card_id\n  pattern a: Txn -> b: Txn[country != a.country] -> c: Txn[country != a.country and country != b.country]\n  within 30s\n  suppress 1m\n}\n",
    ),
    (
        "account_burst.vgl",
        "rule account_burst {\n  severity low\n  key account_id\n  aggregate t: Txn over 20s\n  having count(t) >= 6\n  emit { n: count(t), total: sum(t.amount) }\n  suppress 30s\n}\n",
    ),
    (
        "big_pair.vgl",
        "rule big_pair {\n  severity critical\n  pattern a: Txn[amount > 900] -> b: Txn[amount > 900]\n  within 5s\n}\n",
    ),
    (
        "silent.vgl",
        "rule silent_device {\n  severity high\n  key device_id\n  pattern h: Heartbeat -> not Heartbeat\n  within 20s\n}\n",
    ),
];

/// Writes [`WORKLOAD_RULES`] into a fresh directory.
pub fn workload_rules_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "vigil-rules-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("rules dir");
    for (name, text) in WORKLOAD_RULES {
        std::fs::write(dir.join(name), text).expect("write rule");
    }
    dir
}

/// Writes `events` as a JSONL file in the temp dir; returns its path.
pub fn write_events(tag: &str, events: &[String]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("vigil-events-{tag}-{}.jsonl", std::process::id()));
    std::fs::write(&p, events.join("\n") + "\n").expect("write events");
    p
}

/// A new `vigil-node` process on `endpoint` (a node restarted where a dead
/// one was).
pub fn restart_node(endpoint: &str) -> Proc {
    Proc::spawn(
        "node-again",
        Command::new(bin("cep-engine", "vigil-node")).args(["--bind", endpoint, "--http", "off"]),
    )
}

/// Alert-id multisets equal, with a readable failure: how many are missing,
/// extra and duplicated (and a few missing ids), then `context`.
pub fn assert_same_alerts(
    got: &BTreeMap<String, usize>,
    want: &BTreeMap<String, usize>,
    what: &str,
    context: &str,
) {
    if got != want {
        let missing = want.keys().filter(|k| !got.contains_key(*k)).count();
        let extra = got.keys().filter(|k| !want.contains_key(*k)).count();
        let dups = got.values().filter(|&&n| n > 1).count();
        let sample: Vec<&String> = want
            .keys()
            .filter(|k| !got.contains_key(*k))
            .take(3)
            .collect();
        panic!(
            "{what}: got {} alerts, want {}; missing {missing} (e.g. {sample:?}), extra {extra}, duplicated {dups}; {context}",
            got.values().sum::<usize>(),
            want.values().sum::<usize>()
        );
    }
}

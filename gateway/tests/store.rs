//! The store's behaviour, one suite run against both backends: the embedded
//! redb file and Redis (a `redis-server` started per test on a free loopback
//! port, under a random namespace).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use vigil_gateway::store::{
    AlertFilter, AlertPage, ApiKey, AuditEntry, CHECKPOINT_CHUNK, CheckpointManifest,
    CheckpointShard, DELIVERY_LOG_MAX, DeadCursor, Delivery, DeliveryAttempt, Mode, Role,
    RuleState, Store, StoreError, StoredAlert, Webhook, WebhookSecret,
};

// ---------------------------------------------------------------- harness

/// A name unique to this process and call.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        TempDir(std::env::temp_dir().join(unique("vigil-store-test")))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `redis-server` of this test, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): the Redis store tests need it on PATH; \
                     run `bash .ci/test.sh`, which installs it"
                )
            });
        let mut server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.command("PING") != Some("+PONG".to_string()) {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("redis-server on port {port} exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} does not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Sends one inline command on a fresh connection; the first reply line.
    fn command(&self, command: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).ok()?;
        let reply = String::from_utf8_lossy(&buf[..n]);
        Some(reply.lines().next().unwrap_or("").to_string())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn open_redis(server: &RedisServer, namespace: &str) -> Store {
    Store::open_redis(&server.url(), namespace)
        .await
        .expect("open the redis store")
}

// ---------------------------------------------------------------- data

fn api_key(name: &str, role: Role, hash: &str) -> ApiKey {
    ApiKey {
        name: name.to_string(),
        role,
        hash: hash.to_string(),
        created_at: 1_700_000_000_000,
        revoked: false,
    }
}

fn rule_state(name: &str, deployed: Option<(u32, Mode)>, paused: bool) -> RuleState {
    RuleState {
        name: name.to_string(),
        deployed,
        paused,
        archived: false,
        owner: "alice".to_string(),
        updated_at: 1_700_000_000_123,
    }
}

fn audit_entry(action: &str, target: &str) -> AuditEntry {
    AuditEntry {
        seq: 99,
        at: 1_700_000_000_000,
        actor: "alice".to_string(),
        action: action.to_string(),
        target: target.to_string(),
        before: json!(null),
        after: json!({"target": target, "n": [1, 2, 3]}),
    }
}

fn alert(id: &str, at: i64, rule: &str, key: &str, severity: &str, mode: Mode) -> StoredAlert {
    StoredAlert {
        id: id.to_string(),
        rule: rule.to_string(),
        key: key.to_string(),
        severity: severity.to_string(),
        mode,
        at,
        alert: json!({"id": id, "rule": rule, "key": key, "at": at}),
        events: json!({"e": [{"id": format!("ev-{id}")}]}),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn webhook(id: &str) -> Webhook {
    Webhook {
        id: id.to_string(),
        url: format!("https://example.com/hooks/{id}"),
        description: format!("endpoint {id}"),
        rules: strings(&["card_testing"]),
        tags: vec![],
        min_severity: Some("high".to_string()),
        include_shadow: false,
        secrets: vec![WebhookSecret {
            secret: format!("whsec_{id}"),
            expires_at: None,
        }],
        disabled: None,
        created_at: 1_700_000_000_000,
        created_by: "alice".to_string(),
    }
}

fn delivery(
    webhook: &str,
    msg_id: &str,
    alert_id: &str,
    next_at: i64,
    created_at: i64,
) -> Delivery {
    Delivery {
        webhook: webhook.to_string(),
        msg_id: msg_id.to_string(),
        alert_id: alert_id.to_string(),
        body: format!(r#"{{"alert":{alert_id:?},"n":[1,2]}}"#),
        attempts: 0,
        next_at,
        created_at,
        last_status: None,
        last_error: None,
    }
}

fn attempt(webhook: &str, msg_id: &str, n: u32) -> DeliveryAttempt {
    DeliveryAttempt {
        webhook: webhook.to_string(),
        msg_id: msg_id.to_string(),
        attempt: n,
        at: 1_700_000_000_000 + i64::from(n),
        status: if n.is_multiple_of(2) { Some(503) } else { None },
        error: if n.is_multiple_of(2) {
            None
        } else {
            Some("connection refused".to_string())
        },
        latency_ms: u64::from(n) * 3,
        outcome: "retry".to_string(),
    }
}

/// The msg ids of deliveries, in order.
fn msg_ids(deliveries: &[Delivery]) -> Vec<&str> {
    deliveries.iter().map(|d| d.msg_id.as_str()).collect()
}

// ---------------------------------------------------------------- suite

/// Every operation, on `s`; `spare` is an empty store of the same backend
/// for the retention checks (which delete alerts).
async fn suite(s: Store, spare: Store) {
    keys(&s).await;
    versions(&s).await;
    rule_states(&s).await;
    schema(&s).await;
    marker(&s).await;
    audit(&s).await;
    alerts(&s).await;
    batch_alerts(&s).await;
    retention(spare).await;
    lists(&s).await;
    checkpoints(&s).await;
}

async fn keys(s: &Store) {
    assert!(s.keys().await.unwrap().is_empty());
    let zed = api_key("zed", Role::Viewer, "hash-zed");
    let alpha = api_key("alpha", Role::Admin, "hash-alpha");
    s.put_key(&zed).await.unwrap();
    s.put_key(&alpha).await.unwrap();

    // Same name, another secret: conflict, and the first key is unchanged.
    let err = s
        .put_key(&api_key("zed", Role::Admin, "hash-other"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains("zed"), "{err}");
    assert_eq!(s.key("zed").await.unwrap(), Some(zed.clone()));
    assert_eq!(s.key_by_hash("hash-other").await.unwrap(), None);
    // Another name, the same secret: conflict too.
    let err = s
        .put_key(&api_key("bob", Role::Viewer, "hash-zed"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(s.key("bob").await.unwrap(), None);

    assert_eq!(
        s.key_by_hash("hash-alpha").await.unwrap(),
        Some(alpha.clone())
    );
    assert_eq!(s.key_by_hash("nope").await.unwrap(), None);
    assert_eq!(s.key("nope").await.unwrap(), None);
    assert_eq!(s.keys().await.unwrap(), vec![alpha.clone(), zed.clone()]);

    assert!(s.revoke_key("zed").await.unwrap());
    assert!(s.revoke_key("zed").await.unwrap(), "revoking twice is fine");
    assert!(!s.revoke_key("nope").await.unwrap());
    let revoked = ApiKey {
        revoked: true,
        ..zed.clone()
    };
    assert_eq!(s.key("zed").await.unwrap(), Some(revoked.clone()));
    assert_eq!(
        s.key_by_hash("hash-zed").await.unwrap(),
        Some(revoked.clone())
    );
    assert_eq!(s.keys().await.unwrap(), vec![alpha, revoked]);
}

async fn versions(s: &Store) {
    for (i, text) in ["v1", "v2", "v3"].iter().enumerate() {
        let v = s
            .create_version(
                "card_testing",
                &format!("h{i}"),
                text,
                "alice",
                100 + i as i64,
            )
            .await
            .unwrap();
        assert_eq!(v.version, i as u32 + 1);
        assert_eq!(v.rule, "card_testing");
        assert_eq!(v.text, *text);
    }
    // Another rule counts on its own, also with a name that extends the
    // first one's.
    let other = s
        .create_version("card_testing:2", "hx", "x1", "bob", 200)
        .await
        .unwrap();
    assert_eq!(other.version, 1);
    let v4 = s
        .create_version("card_testing", "h3", "v4", "bob", 300)
        .await
        .unwrap();
    assert_eq!(v4.version, 4);

    let v2 = s.version("card_testing", 2).await.unwrap().unwrap();
    assert_eq!(
        (
            v2.rule.as_str(),
            v2.version,
            v2.hash.as_str(),
            v2.text.as_str(),
            v2.created_at,
            v2.created_by.as_str()
        ),
        ("card_testing", 2, "h1", "v2", 101, "alice")
    );
    assert_eq!(s.version("card_testing", 9).await.unwrap(), None);
    assert_eq!(s.version("card_testing", 0).await.unwrap(), None);
    assert_eq!(s.version("nope", 1).await.unwrap(), None);

    let all = s.versions("card_testing").await.unwrap();
    assert_eq!(
        all.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(all[3], v4);
    assert_eq!(s.versions("card_testing:2").await.unwrap(), vec![other]);
    assert!(s.versions("nope").await.unwrap().is_empty());

    // 20 concurrent creations: 20 distinct numbers, 1..=20, each stored
    // with the text of the call that got it.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.create_version("busy", &format!("h{i}"), &format!("text {i}"), "c", i)
                    .await
            })
        })
        .collect();
    let mut numbers = Vec::new();
    for task in tasks {
        let v = task.await.unwrap().unwrap();
        let stored = s.version("busy", v.version).await.unwrap().unwrap();
        assert_eq!(stored, v);
        numbers.push(v.version);
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=20).collect::<Vec<u32>>());
    assert_eq!(s.versions("busy").await.unwrap().len(), 20);
}

async fn rule_states(s: &Store) {
    assert!(s.rule_states().await.unwrap().is_empty());
    assert_eq!(s.rule_state("b").await.unwrap(), None);
    let b = rule_state("b", Some((2, Mode::Shadow)), false);
    let a = rule_state("a", None, false);
    s.put_rule_state(&b).await.unwrap();
    s.put_rule_state(&a).await.unwrap();
    assert_eq!(s.rule_state("b").await.unwrap(), Some(b.clone()));
    assert_eq!(s.rule_states().await.unwrap(), vec![a.clone(), b]);
    // Replacing.
    let b2 = rule_state("b", Some((3, Mode::Active)), true);
    s.put_rule_state(&b2).await.unwrap();
    assert_eq!(s.rule_state("b").await.unwrap(), Some(b2.clone()));
    assert_eq!(s.rule_states().await.unwrap(), vec![a, b2]);
}

async fn schema(s: &Store) {
    assert_eq!(s.schema().await.unwrap(), None);
    s.put_schema("event Tx { amount: float }").await.unwrap();
    assert_eq!(
        s.schema().await.unwrap().as_deref(),
        Some("event Tx { amount: float }")
    );
    s.put_schema("").await.unwrap();
    assert_eq!(s.schema().await.unwrap().as_deref(), Some(""));
    s.put_schema("event Login { user: string }\n")
        .await
        .unwrap();
    assert_eq!(
        s.schema().await.unwrap().as_deref(),
        Some("event Login { user: string }\n")
    );
}

/// The marker a first start writes: absent in a new (or emptied) store.
async fn marker(s: &Store) {
    assert_eq!(s.marker().await.unwrap(), None);
    s.put_marker("0123456789abcdef").await.unwrap();
    assert_eq!(
        s.marker().await.unwrap().as_deref(),
        Some("0123456789abcdef")
    );
}

async fn audit(s: &Store) {
    assert!(s.audit(0, 10).await.unwrap().is_empty());
    for i in 1..=5u64 {
        let seq = s
            .append_audit(audit_entry("rule.deploy", &format!("rule:r{i}")))
            .await
            .unwrap();
        assert_eq!(seq, i, "the store assigns seq, ignoring the one given");
    }
    let all = s.audit(0, 100).await.unwrap();
    assert_eq!(all.len(), 5);
    for (i, e) in all.iter().enumerate() {
        let expected = AuditEntry {
            seq: i as u64 + 1,
            ..audit_entry("rule.deploy", &format!("rule:r{}", i + 1))
        };
        assert_eq!(*e, expected);
    }
    let seqs = |v: Vec<AuditEntry>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(s.audit(2, 2).await.unwrap()), vec![3, 4]);
    assert_eq!(seqs(s.audit(4, 10).await.unwrap()), vec![5]);
    assert!(s.audit(5, 10).await.unwrap().is_empty());
    assert!(s.audit(500, 10).await.unwrap().is_empty());
    assert!(s.audit(0, 0).await.unwrap().is_empty());
    assert!(s.audit(u64::MAX, 10).await.unwrap().is_empty());

    // Concurrent appends get distinct, gapless numbers.
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.append_audit(audit_entry("list.add", &format!("t{i}")))
                    .await
            })
        })
        .collect();
    let mut got = Vec::new();
    for task in tasks {
        got.push(task.await.unwrap().unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, (6..=15).collect::<Vec<u64>>());
    // Paging through with after_seq.
    let mut after = 0;
    let mut paged = Vec::new();
    loop {
        let page = s.audit(after, 4).await.unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 4);
        after = last.seq;
        paged.extend(page);
    }
    assert_eq!(seqs(paged), (1..=15).collect::<Vec<u64>>());
}

/// The 300 test alerts: `at` ties in fours, a negative `at` or two, and a
/// rare rule to make the scans skip many.
fn test_alerts() -> Vec<StoredAlert> {
    let mut out = Vec::new();
    for i in 0..300i64 {
        let rule = if i % 97 == 5 {
            "rare"
        } else {
            ["r1", "r2", "r3"][(i % 3) as usize]
        };
        let key = ["k1", "k2", ""][(i % 2 + i % 5 / 4) as usize];
        let severity = if i % 5 == 0 { "high" } else { "low" };
        let mode = if i % 7 == 0 {
            Mode::Shadow
        } else {
            Mode::Active
        };
        // at: -20, -10, 0, 10… each four times.
        let at = (i / 4 - 2) * 10;
        out.push(alert(
            &format!("a{:03}", i * 7 % 300),
            at,
            rule,
            key,
            severity,
            mode,
        ));
    }
    out
}

/// What a query should return, in order.
fn expected(all: &[StoredAlert], f: &AlertFilter) -> Vec<StoredAlert> {
    let mut out: Vec<StoredAlert> = all
        .iter()
        .filter(|a| {
            f.rule.as_ref().is_none_or(|r| *r == a.rule)
                && f.key.as_ref().is_none_or(|k| *k == a.key)
                && f.severity.as_ref().is_none_or(|s| *s == a.severity)
                && f.mode.is_none_or(|m| m == a.mode)
                && f.from.is_none_or(|from| a.at >= from)
                && f.to.is_none_or(|to| a.at < to)
        })
        .cloned()
        .collect();
    out.sort_by(|a, b| (b.at, &b.id).cmp(&(a.at, &a.id)));
    out
}

/// Every page of a query, checking each page's size and cursor.
async fn all_pages(s: &Store, f: &AlertFilter, limit: usize) -> Vec<StoredAlert> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let AlertPage { alerts, next } = s.query_alerts(f, cursor.as_deref(), limit).await.unwrap();
        assert!(alerts.len() <= limit.max(1), "page over the limit");
        out.extend(alerts);
        match next {
            Some(n) => {
                assert_eq!(out.len() % limit.max(1), 0, "short page with a next cursor");
                cursor = Some(n);
            }
            None => return out,
        }
    }
    panic!("pagination does not end");
}

async fn alerts(s: &Store) {
    assert_eq!(s.alert_count().await.unwrap(), 0);
    let all = test_alerts();
    for a in &all {
        assert!(s.put_alert(a).await.unwrap(), "new alert {}", a.id);
    }
    assert_eq!(s.alert_count().await.unwrap(), 300);

    // Idempotent by id: a second put (even with other content) changes
    // nothing.
    let first = all[10].clone();
    let mut changed = first.clone();
    changed.severity = "critical".to_string();
    changed.at = 999_999;
    assert!(!s.put_alert(&changed).await.unwrap());
    assert!(!s.put_alert(&first).await.unwrap());
    assert_eq!(s.alert(&first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(s.alert_count().await.unwrap(), 300);
    assert_eq!(s.alert("nope").await.unwrap(), None);

    let filters = [
        AlertFilter::default(),
        AlertFilter {
            rule: Some("r2".into()),
            ..Default::default()
        },
        AlertFilter {
            rule: Some("rare".into()),
            ..Default::default()
        },
        AlertFilter {
            key: Some("k1".into()),
            ..Default::default()
        },
        AlertFilter {
            key: Some(String::new()),
            ..Default::default()
        },
        AlertFilter {
            severity: Some("high".into()),
            ..Default::default()
        },
        AlertFilter {
            mode: Some(Mode::Shadow),
            ..Default::default()
        },
        AlertFilter {
            mode: Some(Mode::Active),
            ..Default::default()
        },
        AlertFilter {
            from: Some(100),
            ..Default::default()
        },
        AlertFilter {
            to: Some(0),
            ..Default::default()
        },
        AlertFilter {
            from: Some(-10),
            to: Some(50),
            ..Default::default()
        },
        AlertFilter {
            rule: Some("r1".into()),
            key: Some("k2".into()),
            severity: Some("low".into()),
            mode: Some(Mode::Active),
            from: Some(20),
            to: Some(600),
        },
        // Matching nothing.
        AlertFilter {
            rule: Some("none".into()),
            ..Default::default()
        },
        AlertFilter {
            from: Some(50),
            to: Some(50),
            ..Default::default()
        },
        AlertFilter {
            from: Some(60),
            to: Some(10),
            ..Default::default()
        },
    ];
    for f in &filters {
        let want = expected(&all, f);
        for limit in [1, 7, 4, 1000] {
            let got = all_pages(s, f, limit).await;
            assert_eq!(
                got.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
                want.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
                "filter {f:?}, limit {limit}"
            );
            assert_eq!(got, want, "filter {f:?}, limit {limit}");
        }
    }
    // Sanity of the data: every filter field is exercised.
    assert!(expected(&all, &filters[2]).len() >= 3);
    assert!(expected(&all, &filters[11]).len() >= 3);

    // A single page holds the newest `limit`; ties on `at` by id desc.
    let p = s
        .query_alerts(&AlertFilter::default(), None, 6)
        .await
        .unwrap();
    let newest = expected(&all, &AlertFilter::default());
    assert_eq!(p.alerts, newest[..6]);
    assert_eq!(p.alerts[0].at, p.alerts[3].at);
    assert!(p.alerts[0].id > p.alerts[1].id);
    let cursor = p.next.clone().unwrap();
    // The same cursor gives the same page; limit 0 is taken as 1.
    let again = s
        .query_alerts(&AlertFilter::default(), Some(&cursor), 5)
        .await
        .unwrap();
    assert_eq!(
        s.query_alerts(&AlertFilter::default(), Some(&cursor), 5)
            .await
            .unwrap(),
        again
    );
    assert_eq!(again.alerts, newest[6..11]);
    let one = s
        .query_alerts(&AlertFilter::default(), None, 0)
        .await
        .unwrap();
    assert_eq!(one.alerts, newest[..1]);

    // Stable: an alert newer than the cursor, stored between pages, does
    // not shift the following pages.
    let mut cursor = Some(cursor);
    let mut seen: Vec<StoredAlert> = p.alerts;
    let newer = alert("zz-new", 10_000, "r1", "k1", "low", Mode::Active);
    assert!(s.put_alert(&newer).await.unwrap());
    while let Some(c) = cursor {
        let page = s
            .query_alerts(&AlertFilter::default(), Some(&c), 13)
            .await
            .unwrap();
        seen.extend(page.alerts);
        cursor = page.next;
    }
    assert_eq!(seen, newest, "no duplicates, no gaps");
    assert_eq!(s.alert_count().await.unwrap(), 301);
    assert_eq!(
        s.query_alerts(&AlertFilter::default(), None, 1)
            .await
            .unwrap()
            .alerts,
        vec![newer]
    );

    for bad in ["garbage", "", "x:a001", "12"] {
        let err = s
            .query_alerts(&AlertFilter::default(), Some(bad), 5)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{bad:?}: {err:?}");
    }
    // A cursor of an unknown alert is a position all the same.
    let p = s
        .query_alerts(&AlertFilter::default(), Some("15:zzz"), 3)
        .await
        .unwrap();
    assert_eq!(
        p.alerts,
        expected(
            &all,
            &AlertFilter {
                to: Some(16),
                ..Default::default()
            }
        )[..3]
    );
}

async fn batch_alerts(s: &Store) {
    let b1 = alert("batch-1", 1_000, "r", "kb", "low", Mode::Active);
    let b2 = alert("batch-2", 1_001, "r", "kb", "low", Mode::Shadow);
    // A repeat inside the batch is not new; neither is one stored before.
    let new = s
        .put_alerts(&[b1.clone(), b1.clone(), b2.clone()])
        .await
        .unwrap();
    assert_eq!(new, vec![true, false, true]);
    assert_eq!(s.alert("batch-2").await.unwrap(), Some(b2.clone()));
    assert_eq!(s.put_alerts(&[b2]).await.unwrap(), vec![false]);
    assert!(!s.put_alert(&b1).await.unwrap());
    assert_eq!(s.put_alerts(&[]).await.unwrap(), Vec::<bool>::new());
    // Which ids are stored, in order, without storing anything.
    let ids = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        s.alerts_known(&ids(&["batch-2", "nope", "batch-1", "batch-2"]))
            .await
            .unwrap(),
        vec![true, false, true, true]
    );
    assert_eq!(s.alerts_known(&[]).await.unwrap(), Vec::<bool>::new());
    assert_eq!(s.alert("nope").await.unwrap(), None);
}

async fn retention(s: Store) {
    let s = s.with_max_alerts(5);
    assert_eq!(s.max_alerts(), 5);
    // Ties on `at`: the oldest goes first by id.
    for (id, at) in [("c", 10), ("b", 10), ("a", 20), ("d", 5), ("e", 30)] {
        assert!(
            s.put_alert(&alert(id, at, "r", "k", "low", Mode::Active))
                .await
                .unwrap()
        );
    }
    assert_eq!(s.alert_count().await.unwrap(), 5);
    let ids = |p: AlertPage| p.alerts.into_iter().map(|a| a.id).collect::<Vec<_>>();
    let all = AlertFilter::default();
    assert!(
        s.put_alert(&alert("f", 40, "r", "k", "low", Mode::Active))
            .await
            .unwrap()
    );
    assert_eq!(s.alert_count().await.unwrap(), 5);
    assert_eq!(s.alert("d").await.unwrap(), None, "oldest trimmed");
    assert_eq!(
        ids(s.query_alerts(&all, None, 10).await.unwrap()),
        ["f", "e", "a", "c", "b"]
    );
    assert!(
        s.put_alert(&alert("g", 50, "r", "k", "low", Mode::Active))
            .await
            .unwrap()
    );
    assert_eq!(
        s.alert("b").await.unwrap(),
        None,
        "tie on at: lower id first"
    );
    assert!(s.alert("c").await.unwrap().is_some());
    // An alert older than all the kept ones is trimmed at once.
    assert!(
        s.put_alert(&alert("old", -5, "r", "k", "low", Mode::Active))
            .await
            .unwrap()
    );
    assert_eq!(s.alert("old").await.unwrap(), None);
    assert_eq!(
        ids(s.query_alerts(&all, None, 10).await.unwrap()),
        ["g", "f", "e", "a", "c"]
    );
    // A lower limit trims several at the next insert.
    let s = s.with_max_alerts(2);
    assert!(
        s.put_alert(&alert("h", 60, "r", "k", "low", Mode::Active))
            .await
            .unwrap()
    );
    assert_eq!(
        ids(s.query_alerts(&all, None, 10).await.unwrap()),
        ["h", "g"]
    );
    assert_eq!(s.alert_count().await.unwrap(), 2);
    assert_eq!(s.with_max_alerts(0).max_alerts(), 1, "at least one");
}

async fn lists(s: &Store) {
    assert!(s.list_names().await.unwrap().is_empty());
    assert_eq!(s.get_list("ips").await.unwrap(), None);
    let r0 = s.lists_revision().await.unwrap();

    s.put_list("ips", &strings(&["10.0.0.2", "10.0.0.1", "10.0.0.2"]))
        .await
        .unwrap();
    assert_eq!(s.lists_revision().await.unwrap(), r0 + 1);
    assert_eq!(
        s.get_list("ips").await.unwrap(),
        Some(strings(&["10.0.0.1", "10.0.0.2"]))
    );
    s.put_list("empty", &[]).await.unwrap();
    assert_eq!(s.get_list("empty").await.unwrap(), Some(vec![]));
    // A name that extends another's keeps its own entries.
    s.put_list("ips2", &strings(&["x"])).await.unwrap();
    assert_eq!(s.lists_revision().await.unwrap(), r0 + 3);
    assert_eq!(
        s.list_names().await.unwrap(),
        strings(&["empty", "ips", "ips2"])
    );

    assert_eq!(
        s.add_to_list("ips", &strings(&["10.0.0.3", "10.0.0.1", "10.0.0.3"]))
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.lists_revision().await.unwrap(), r0 + 4);
    assert_eq!(
        s.add_to_list("ips", &strings(&["10.0.0.1"])).await.unwrap(),
        0
    );
    assert_eq!(s.add_to_list("ips", &[]).await.unwrap(), 0);
    assert_eq!(
        s.lists_revision().await.unwrap(),
        r0 + 4,
        "no change, no new revision"
    );
    assert_eq!(
        s.remove_from_list("ips", &strings(&["10.0.0.1", "nope"]))
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.lists_revision().await.unwrap(), r0 + 5);
    assert_eq!(
        s.get_list("ips").await.unwrap(),
        Some(strings(&["10.0.0.2", "10.0.0.3"]))
    );
    assert_eq!(s.get_list("ips2").await.unwrap(), Some(strings(&["x"])));

    for err in [
        s.add_to_list("nope", &strings(&["a"])).await.unwrap_err(),
        s.remove_from_list("nope", &strings(&["a"]))
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
        assert!(err.to_string().contains("nope"), "{err}");
    }
    assert_eq!(s.get_list("nope").await.unwrap(), None);
    assert_eq!(s.lists_revision().await.unwrap(), r0 + 5);

    // Emptying a list keeps it.
    assert_eq!(
        s.remove_from_list("ips", &strings(&["10.0.0.2", "10.0.0.3"]))
            .await
            .unwrap(),
        2
    );
    assert_eq!(s.get_list("ips").await.unwrap(), Some(vec![]));
    assert_eq!(
        s.add_to_list("ips", &strings(&["b", "a"])).await.unwrap(),
        2
    );
    // Replacing.
    s.put_list("ips", &strings(&["z"])).await.unwrap();
    assert_eq!(s.get_list("ips").await.unwrap(), Some(strings(&["z"])));
    assert_eq!(s.lists_revision().await.unwrap(), r0 + 8);

    // A big list (past the scripts' chunk size).
    let big: Vec<String> = (0..2500).map(|i| format!("e{i:05}")).collect();
    s.put_list("big", &big).await.unwrap();
    assert_eq!(s.get_list("big").await.unwrap(), Some(big.clone()));
    let more: Vec<String> = (2000..3500).map(|i| format!("e{i:05}")).collect();
    assert_eq!(s.add_to_list("big", &more).await.unwrap(), 1000);
    assert_eq!(s.remove_from_list("big", &big).await.unwrap(), 2500);
    assert_eq!(
        s.get_list("big").await.unwrap().map(|l| l.len()),
        Some(1000)
    );
    assert_eq!(s.lists_revision().await.unwrap(), r0 + 11);

    assert!(s.delete_list("ips").await.unwrap());
    assert!(!s.delete_list("ips").await.unwrap());
    assert_eq!(s.get_list("ips").await.unwrap(), None);
    assert_eq!(s.lists_revision().await.unwrap(), r0 + 12);
    assert_eq!(
        s.list_names().await.unwrap(),
        strings(&["big", "empty", "ips2"])
    );
    // Re-created after a delete: empty, not the old entries.
    s.put_list("ips", &[]).await.unwrap();
    assert_eq!(s.get_list("ips").await.unwrap(), Some(vec![]));
}

// ---------------------------------------------------------------- webhooks

/// Every webhook operation, on an empty store.
async fn webhook_suite(s: &Store) {
    webhook_crud(s).await;
    enqueue_dedup(s).await;
    due_order_and_updates(s).await;
    dead_letters(s).await;
    delivery_log(s).await;
    delete_webhook_drops_its_data(s).await;
}

async fn webhook_crud(s: &Store) {
    assert!(s.webhooks().await.unwrap().is_empty());
    assert_eq!(s.webhook("wh_a").await.unwrap(), None);
    let b = webhook("wh_b");
    let a = Webhook {
        rules: vec![],
        tags: strings(&["pci", "eu"]),
        min_severity: None,
        include_shadow: true,
        ..webhook("wh_a")
    };
    s.put_webhook(&b).await.unwrap();
    s.put_webhook(&a).await.unwrap();
    assert_eq!(s.webhook("wh_a").await.unwrap(), Some(a.clone()));
    assert_eq!(s.webhooks().await.unwrap(), vec![a.clone(), b.clone()]);

    // Replacing: a rotated secret, disabled.
    let b2 = Webhook {
        secrets: vec![
            WebhookSecret {
                secret: "whsec_new".to_string(),
                expires_at: None,
            },
            WebhookSecret {
                secret: "whsec_wh_b".to_string(),
                expires_at: Some(1_700_000_086_400),
            },
        ],
        disabled: Some("410 Gone at 2024-01-01T00:00:00Z".to_string()),
        ..b
    };
    s.put_webhook(&b2).await.unwrap();
    assert_eq!(s.webhook("wh_b").await.unwrap(), Some(b2.clone()));
    assert_eq!(s.webhooks().await.unwrap(), vec![a, b2.clone()]);

    let err = s.put_webhook(&webhook("wh_\0x")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    assert!(s.delete_webhook("wh_a").await.unwrap());
    assert!(!s.delete_webhook("wh_a").await.unwrap());
    assert_eq!(s.webhook("wh_a").await.unwrap(), None);
    assert_eq!(s.webhooks().await.unwrap(), vec![b2]);
    assert!(s.delete_webhook("wh_b").await.unwrap());
    assert!(s.webhooks().await.unwrap().is_empty());
}

async fn enqueue_dedup(s: &Store) {
    let d1 = delivery("wh_d", "msg_1", "al_1", 1_000, 1_000);
    assert!(s.enqueue_delivery(&d1, 2_000).await.unwrap());
    // The same (webhook, alert) before the expiry: refused, nothing stored.
    let d2 = delivery("wh_d", "msg_2", "al_1", 1_500, 1_500);
    assert!(!s.enqueue_delivery(&d2, 9_000).await.unwrap());
    assert!(!s.enqueue_delivery(&d1, 2_000).await.unwrap());
    assert_eq!(s.pending_for("wh_d", 10).await.unwrap(), vec![d1.clone()]);
    // Another webhook, or another alert: independent.
    let e1 = delivery("wh_e", "msg_1", "al_1", 1_500, 1_500);
    assert!(s.enqueue_delivery(&e1, 2_000).await.unwrap());
    let d3 = delivery("wh_d", "msg_3", "al_3", 1_500, 1_500);
    assert!(s.enqueue_delivery(&d3, 2_000).await.unwrap());
    // At the expiry the record is over: queued again, recorded anew.
    let d4 = delivery("wh_d", "msg_4", "al_1", 2_000, 2_000);
    assert!(s.enqueue_delivery(&d4, 5_000).await.unwrap());
    let d5 = delivery("wh_d", "msg_5", "al_1", 4_999, 4_999);
    assert!(!s.enqueue_delivery(&d5, 9_000).await.unwrap());
    assert_eq!(
        s.pending_for("wh_d", 10).await.unwrap(),
        vec![d1.clone(), d3.clone(), d4.clone()]
    );
    assert_eq!(s.pending_stats().await.unwrap(), (4, Some(1_000)));

    for bad in [
        delivery("wh\0d", "msg_9", "al_9", 0, 0),
        delivery("wh_d", "msg\09", "al_9", 0, 0),
    ] {
        let err = s.enqueue_delivery(&bad, 9_000).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    }

    // 20 concurrent enqueues of one pair: exactly one is stored.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let d = delivery("wh_c", &format!("msg_{i:02}"), "al_c", 10_000, 10_000);
                let stored = s.enqueue_delivery(&d, 70_000).await;
                (d, stored)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (d, stored) = task.await.unwrap();
        if stored.unwrap() {
            winners.push(d);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one enqueue wins");
    assert_eq!(s.pending_for("wh_c", 100).await.unwrap(), winners);

    // Clean up (and completing works).
    for d in [&d1, &d3, &d4, &e1, &winners[0]] {
        assert!(s.complete_delivery(&d.webhook, &d.msg_id).await.unwrap());
    }
    assert_eq!(s.pending_stats().await.unwrap(), (0, None));
}

async fn due_order_and_updates(s: &Store) {
    assert_eq!(s.pending_stats().await.unwrap(), (0, None));
    assert!(s.due_deliveries(i64::MAX, 100).await.unwrap().is_empty());
    let a = delivery("wh_1", "m_a", "al_a", 100, 50);
    let b = delivery("wh_2", "m_b", "al_b", 100, 40);
    let c = delivery("wh_1", "m_c", "al_c", 100, 40);
    let d = delivery("wh_2", "m_d", "al_d", 300, 10);
    let e = delivery("wh_1", "m_e", "al_e", -5, 60);
    let f = delivery("wh_2", "m_f", "al_f", 1_000, 5);
    for x in [&a, &b, &c, &d, &e, &f] {
        assert!(s.enqueue_delivery(x, 100_000).await.unwrap());
    }
    // By (next_at, created_at, msg_id).
    let due = |now: i64, limit: usize| {
        let s = s.clone();
        async move { s.due_deliveries(now, limit).await.unwrap() }
    };
    assert_eq!(
        due(i64::MAX, 100).await,
        vec![
            e.clone(),
            b.clone(),
            c.clone(),
            a.clone(),
            d.clone(),
            f.clone()
        ]
    );
    assert_eq!(msg_ids(&due(99, 100).await), ["m_e"]);
    assert_eq!(msg_ids(&due(100, 100).await), ["m_e", "m_b", "m_c", "m_a"]);
    assert_eq!(msg_ids(&due(100, 2).await), ["m_e", "m_b"]);
    assert_eq!(
        msg_ids(&due(i64::MAX, 5).await),
        ["m_e", "m_b", "m_c", "m_a", "m_d"]
    );
    assert!(due(-6, 100).await.is_empty());
    assert!(due(i64::MIN, 100).await.is_empty());
    assert!(due(i64::MAX, 0).await.is_empty());

    // One webhook's, by (created_at, msg_id).
    assert_eq!(
        s.pending_for("wh_1", 100).await.unwrap(),
        vec![c.clone(), a.clone(), e.clone()]
    );
    assert_eq!(
        msg_ids(&s.pending_for("wh_2", 2).await.unwrap()),
        ["m_f", "m_d"]
    );
    assert!(s.pending_for("wh_2", 0).await.unwrap().is_empty());
    assert!(s.pending_for("wh_nope", 10).await.unwrap().is_empty());
    assert_eq!(s.pending_stats().await.unwrap(), (6, Some(5)));

    // Updates move next_at: d into the due set, a and f out of it.
    let d2 = Delivery {
        attempts: 1,
        next_at: 50,
        last_status: Some(503),
        last_error: Some("503 Service Unavailable".to_string()),
        ..d.clone()
    };
    let a2 = Delivery {
        attempts: 1,
        next_at: 2_000,
        last_error: Some("timed out".to_string()),
        ..a.clone()
    };
    let f2 = Delivery {
        attempts: 3,
        next_at: 5_000,
        ..f.clone()
    };
    for x in [&d2, &a2, &f2] {
        s.update_delivery(x).await.unwrap();
    }
    assert_eq!(
        due(100, 100).await,
        vec![e.clone(), d2.clone(), b.clone(), c.clone()]
    );
    assert_eq!(
        msg_ids(&due(1_000, 100).await),
        ["m_e", "m_d", "m_b", "m_c"]
    );
    assert_eq!(
        msg_ids(&due(i64::MAX, 100).await),
        ["m_e", "m_d", "m_b", "m_c", "m_a", "m_f"]
    );
    assert_eq!(
        s.pending_for("wh_1", 100).await.unwrap(),
        vec![c.clone(), a2.clone(), e.clone()]
    );
    // Back in.
    let a3 = Delivery {
        next_at: 0,
        attempts: 2,
        ..a2.clone()
    };
    s.update_delivery(&a3).await.unwrap();
    assert_eq!(
        msg_ids(&due(100, 100).await),
        ["m_e", "m_a", "m_d", "m_b", "m_c"]
    );
    assert_eq!(s.pending_stats().await.unwrap(), (6, Some(5)));

    // Updating what is not pending.
    for missing in [
        delivery("wh_1", "m_zz", "al_a", 0, 0),
        delivery("wh_2", "m_a", "al_a", 0, 0),
    ] {
        let err = s.update_delivery(&missing).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    }

    // Enqueueing a message id that is pending replaces it (no stray index).
    let c2 = Delivery {
        alert_id: "al_c2".to_string(),
        next_at: 200,
        ..c.clone()
    };
    assert!(s.enqueue_delivery(&c2, 100_000).await.unwrap());
    assert_eq!(msg_ids(&due(100, 100).await), ["m_e", "m_a", "m_d", "m_b"]);
    assert_eq!(s.pending_stats().await.unwrap(), (6, Some(5)));

    // Completing.
    assert!(s.complete_delivery("wh_2", "m_f").await.unwrap());
    assert!(!s.complete_delivery("wh_2", "m_f").await.unwrap());
    assert!(
        !s.complete_delivery("wh_2", "m_c").await.unwrap(),
        "other webhook"
    );
    assert_eq!(s.pending_stats().await.unwrap(), (5, Some(10)));
    let err = s.update_delivery(&f2).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(
        msg_ids(&due(i64::MAX, 100).await),
        ["m_e", "m_a", "m_d", "m_b", "m_c"]
    );
    for (webhook, msg) in [
        ("wh_1", "m_a"),
        ("wh_2", "m_b"),
        ("wh_1", "m_c"),
        ("wh_2", "m_d"),
        ("wh_1", "m_e"),
    ] {
        assert!(s.complete_delivery(webhook, msg).await.unwrap(), "{msg}");
    }
    assert_eq!(s.pending_stats().await.unwrap(), (0, None));
    assert!(due(i64::MAX, 100).await.is_empty());
    assert!(s.pending_for("wh_1", 100).await.unwrap().is_empty());
}

async fn dead_letters(s: &Store) {
    assert!(s.dead_letters(None, None, 10).await.unwrap().is_empty());
    let p1 = delivery("wh_1", "m_1", "al_1", 100, 30);
    let p2 = delivery("wh_2", "m_2", "al_2", 100, 20);
    let p3 = delivery("wh_1", "m_3", "al_3", 100, 10);
    for p in [&p1, &p2, &p3] {
        assert!(s.enqueue_delivery(p, 100_000).await.unwrap());
    }
    let dead = |d: &Delivery| Delivery {
        attempts: 8,
        last_status: Some(500),
        last_error: Some("500 Internal Server Error".to_string()),
        ..d.clone()
    };
    let (p1d, p3d) = (dead(&p1), dead(&p3));
    // Moved: no longer pending.
    s.dead_letter(&p1d).await.unwrap();
    assert_eq!(s.pending_for("wh_1", 10).await.unwrap(), vec![p3.clone()]);
    assert_eq!(s.pending_stats().await.unwrap(), (2, Some(10)));
    s.dead_letter(&p3d).await.unwrap();
    assert!(s.pending_for("wh_1", 10).await.unwrap().is_empty());
    assert_eq!(s.pending_stats().await.unwrap(), (1, Some(20)));
    assert_eq!(
        msg_ids(&s.due_deliveries(i64::MAX, 10).await.unwrap()),
        ["m_2"]
    );
    // One that was never pending.
    let x = dead(&delivery("wh_2", "m_9", "al_9", 0, 25));
    s.dead_letter(&x).await.unwrap();
    assert_eq!(s.pending_stats().await.unwrap(), (1, Some(20)));

    // Oldest first.
    assert_eq!(
        s.dead_letters(None, None, 10).await.unwrap(),
        vec![p3d.clone(), x.clone(), p1d.clone()]
    );
    assert_eq!(
        msg_ids(&s.dead_letters(None, None, 2).await.unwrap()),
        ["m_3", "m_9"]
    );
    assert_eq!(
        s.dead_letters(Some("wh_1"), None, 10).await.unwrap(),
        vec![p3d.clone(), p1d.clone()]
    );
    assert_eq!(
        msg_ids(&s.dead_letters(Some("wh_1"), None, 1).await.unwrap()),
        ["m_3"]
    );
    assert_eq!(
        s.dead_letters(Some("wh_2"), None, 10).await.unwrap(),
        vec![x.clone()]
    );
    assert!(
        s.dead_letters(Some("wh_nope"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.dead_letters(None, None, 0).await.unwrap().is_empty());
    // Pages: after the last one returned, in the same order, to the end.
    let c = DeadCursor::of(&p3d);
    assert_eq!(
        s.dead_letters(None, Some(&c), 10).await.unwrap(),
        vec![x.clone(), p1d.clone()]
    );
    let c = DeadCursor::parse(&DeadCursor::of(&x).text()).unwrap();
    assert_eq!(
        s.dead_letters(None, Some(&c), 10).await.unwrap(),
        vec![p1d.clone()]
    );
    assert!(
        s.dead_letters(None, Some(&DeadCursor::of(&p1d)), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.dead_letters(Some("wh_1"), Some(&DeadCursor::of(&p3d)), 10)
            .await
            .unwrap(),
        vec![p1d.clone()]
    );
    assert!(DeadCursor::parse("nope").is_err());

    // Dead-lettering the same message again replaces it.
    let x2 = Delivery {
        created_at: 5,
        attempts: 9,
        ..x.clone()
    };
    s.dead_letter(&x2).await.unwrap();
    assert_eq!(
        s.dead_letters(None, None, 10).await.unwrap(),
        vec![x2.clone(), p3d.clone(), p1d.clone()]
    );

    // Taking.
    assert_eq!(s.take_dead_letter("wh_1", "m_1").await.unwrap(), Some(p1d));
    assert_eq!(s.take_dead_letter("wh_1", "m_1").await.unwrap(), None);
    assert_eq!(s.take_dead_letter("wh_2", "m_3").await.unwrap(), None);
    assert_eq!(
        s.dead_letters(None, None, 10).await.unwrap(),
        vec![x2.clone(), p3d.clone()]
    );
    assert_eq!(s.take_dead_letter("wh_2", "m_9").await.unwrap(), Some(x2));
    assert_eq!(s.take_dead_letter("wh_1", "m_3").await.unwrap(), Some(p3d));
    assert!(s.dead_letters(None, None, 10).await.unwrap().is_empty());
    assert!(
        s.dead_letters(Some("wh_1"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Dead letters are not pending: the pending one is untouched.
    assert_eq!(s.pending_for("wh_2", 10).await.unwrap(), vec![p2.clone()]);
    assert!(s.complete_delivery("wh_2", "m_2").await.unwrap());
    assert_eq!(s.pending_stats().await.unwrap(), (0, None));
}

async fn delivery_log(s: &Store) {
    assert!(s.delivery_log("wh_l", 10).await.unwrap().is_empty());
    let total = DELIVERY_LOG_MAX as u32 + 5;
    for n in 1..=total {
        s.log_attempt(&attempt("wh_l", &format!("m_{n}"), n))
            .await
            .unwrap();
        if n.is_multiple_of(400) {
            s.log_attempt(&attempt("wh_m", "m", n / 400)).await.unwrap();
        }
    }
    let log = s.delivery_log("wh_l", 5_000).await.unwrap();
    assert_eq!(log.len(), DELIVERY_LOG_MAX, "the newest 1,000 kept");
    // Newest first.
    assert_eq!(log[0], attempt("wh_l", &format!("m_{total}"), total));
    assert_eq!(
        log.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        (6..=total).rev().collect::<Vec<_>>()
    );
    assert_eq!(
        s.delivery_log("wh_l", 3)
            .await
            .unwrap()
            .iter()
            .map(|a| a.attempt)
            .collect::<Vec<_>>(),
        [total, total - 1, total - 2]
    );
    assert!(s.delivery_log("wh_l", 0).await.unwrap().is_empty());
    // Another webhook's log is its own.
    assert_eq!(
        s.delivery_log("wh_m", 10).await.unwrap(),
        vec![attempt("wh_m", "m", 2), attempt("wh_m", "m", 1)]
    );
    assert!(s.delivery_log("wh_nope", 10).await.unwrap().is_empty());
}

async fn delete_webhook_drops_its_data(s: &Store) {
    s.put_webhook(&webhook("wh_x")).await.unwrap();
    s.put_webhook(&webhook("wh_y")).await.unwrap();
    let y = delivery("wh_y", "m_1", "al_1", 10, 10);
    assert!(s.enqueue_delivery(&y, 100_000).await.unwrap());
    for i in 0..3 {
        let x = delivery("wh_x", &format!("m_{i}"), &format!("al_{i}"), i, i);
        assert!(s.enqueue_delivery(&x, 100_000).await.unwrap());
    }
    s.dead_letter(&delivery("wh_x", "m_0", "al_0", 0, 0))
        .await
        .unwrap();
    s.dead_letter(&delivery("wh_y", "m_9", "al_9", 0, 9))
        .await
        .unwrap();
    s.log_attempt(&attempt("wh_x", "m_0", 1)).await.unwrap();
    s.log_attempt(&attempt("wh_y", "m_1", 1)).await.unwrap();
    assert_eq!(s.pending_stats().await.unwrap(), (3, Some(1)));

    assert!(s.delete_webhook("wh_x").await.unwrap());
    assert_eq!(s.webhook("wh_x").await.unwrap(), None);
    assert!(s.pending_for("wh_x", 10).await.unwrap().is_empty());
    assert_eq!(
        s.due_deliveries(i64::MAX, 10).await.unwrap(),
        vec![y.clone()]
    );
    assert_eq!(s.pending_stats().await.unwrap(), (1, Some(10)));
    assert!(
        s.dead_letters(Some("wh_x"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.delivery_log("wh_x", 10).await.unwrap().is_empty());
    // The other webhook keeps everything.
    assert_eq!(s.pending_for("wh_y", 10).await.unwrap(), vec![y]);
    assert_eq!(
        msg_ids(&s.dead_letters(None, None, 10).await.unwrap()),
        ["m_9"]
    );
    assert_eq!(s.delivery_log("wh_y", 10).await.unwrap().len(), 1);
    assert_eq!(s.webhooks().await.unwrap(), vec![webhook("wh_y")]);
    // Deleting again: nothing there.
    assert!(!s.delete_webhook("wh_x").await.unwrap());
    // The dedup records stay until they expire.
    let again = delivery("wh_x", "m_5", "al_1", 0, 50);
    assert!(!s.enqueue_delivery(&again, 100_000).await.unwrap());
}

// ---------------------------------------------------------------- checkpoints

/// A manifest as the gateway hands it to `put_checkpoint` (the store fills
/// in `created_ms`, `shards` and `bytes`).
fn manifest(id: u64) -> CheckpointManifest {
    CheckpointManifest {
        id,
        seq: id * 100,
        clock: 1_700_000_000_000,
        inputs: BTreeMap::from([(0, 1_700_000_000_000), (1, i64::MIN)]),
        offsets: BTreeMap::from([(0, 42), (3, -1)]),
        rules_version: 7,
        created_ms: 0,
        shards: Vec::new(),
        bytes: 0,
        idle_base: Some((1_700_000_000_000, 1_700_000_004_000)),
    }
}

/// `len` bytes that differ with `seed`: every byte value, NUL and non-UTF-8
/// included.
fn blob(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 251).unwrap().wrapping_mul(37) ^ seed)
        .collect()
}

/// Shards of a first checkpoint, unsorted; in 4-byte chunks: shard 3 in 3
/// chunks (the last short), 0 empty (no chunk), 7 in exactly 1, 1 in 3.
fn first_shards() -> Vec<(u16, Vec<u8>)> {
    vec![
        (3, blob(1, 10)),
        (0, Vec::new()),
        (7, blob(2, 4)),
        (1, blob(3, 9)),
    ]
}

/// Shards of a second checkpoint; in 4-byte chunks: 2 + 4 + 1 chunks.
fn second_shards() -> Vec<(u16, Vec<u8>)> {
    vec![(3, blob(4, 5)), (5, blob(5, 13)), (0, blob(6, 1))]
}

/// Every blob of `shards` reads back from checkpoint `id`; shard 2, in
/// neither, reads as `None`.
async fn check_shards(s: &Store, id: u64, shards: &[(u16, Vec<u8>)]) {
    for (shard, data) in shards {
        assert_eq!(
            s.checkpoint_shard(id, *shard).await.unwrap().as_ref(),
            Some(data),
            "checkpoint {id} shard {shard}"
        );
    }
    assert_eq!(s.checkpoint_shard(id, 2).await.unwrap(), None);
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(matches!(result, Err(StoreError::NotFound(_))), "{result:?}");
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
}

/// Checkpoints on a store without one: put, read, replace, a put that
/// stopped before the switch, refused puts, and the default chunk size.
async fn checkpoints(s: &Store) {
    assert_eq!(s.checkpoint_chunk(), CHECKPOINT_CHUNK);
    let small = s.clone().with_checkpoint_chunk(4);
    assert_eq!(small.checkpoint_chunk(), 4);
    assert_eq!(s.clone().with_checkpoint_chunk(0).checkpoint_chunk(), 1);
    let s = &small;
    assert_eq!(s.checkpoint().await.unwrap(), None);
    assert_not_found(s.checkpoint_shard(1, 0).await);

    let m1 = s.put_checkpoint(manifest(1), first_shards()).await.unwrap();
    let shard = |shard, bytes, chunks| CheckpointShard {
        shard,
        bytes,
        chunks,
    };
    assert_eq!(
        m1.shards,
        vec![
            shard(0, 0, 0),
            shard(1, 9, 3),
            shard(3, 10, 3),
            shard(7, 4, 1)
        ]
    );
    assert_eq!(m1.bytes, 23);
    assert!(m1.created_ms > 1_600_000_000_000, "{}", m1.created_ms);
    // The rest is as given.
    let given = CheckpointManifest {
        created_ms: 0,
        shards: Vec::new(),
        bytes: 0,
        ..m1.clone()
    };
    assert_eq!(given, manifest(1));
    assert_eq!(s.checkpoint().await.unwrap(), Some(m1.clone()));
    check_shards(s, 1, &first_shards()).await;
    assert_eq!(s.checkpoint_shard(1, 0).await.unwrap(), Some(Vec::new()));

    // Refused puts change nothing: an id not above the current one, a shard
    // twice, a shard out of range.
    assert_conflict(s.put_checkpoint(manifest(1), second_shards()).await);
    assert_conflict(s.put_checkpoint(manifest(0), second_shards()).await);
    assert_conflict(
        s.put_checkpoint(manifest(5), vec![(4, blob(1, 3)), (4, blob(2, 3))])
            .await,
    );
    assert_conflict(
        s.put_checkpoint(manifest(5), vec![(1024, blob(1, 3))])
            .await,
    );
    assert_conflict(s.stage_checkpoint(manifest(1), second_shards()).await);
    assert_eq!(s.checkpoint().await.unwrap(), Some(m1.clone()));
    check_shards(s, 1, &first_shards()).await;

    // A put that wrote its chunks and stopped before the switch (a crash):
    // the first checkpoint stays current and whole; the unfinished one
    // cannot be read.
    let staged = s
        .stage_checkpoint(manifest(2), second_shards())
        .await
        .unwrap();
    assert_eq!(staged.bytes, 19);
    assert_eq!(s.checkpoint().await.unwrap(), Some(m1.clone()));
    check_shards(s, 1, &first_shards()).await;
    assert_not_found(s.checkpoint_shard(2, 3).await);

    // The next put replaces it; the first checkpoint is gone.
    let m3 = s
        .put_checkpoint(manifest(3), second_shards())
        .await
        .unwrap();
    assert_eq!(
        m3.shards,
        vec![shard(0, 1, 1), shard(3, 5, 2), shard(5, 13, 4)]
    );
    assert_eq!(s.checkpoint().await.unwrap(), Some(m3.clone()));
    check_shards(s, 3, &second_shards()).await;
    for shard in [0, 1, 3, 7] {
        assert_not_found(s.checkpoint_shard(1, shard).await);
        assert_not_found(s.checkpoint_shard(2, shard).await);
    }
    assert!(m3.created_ms >= m1.created_ms);

    // An empty checkpoint, then the default chunk size with blobs of
    // several chunks.
    let m4 = s.put_checkpoint(manifest(4), Vec::new()).await.unwrap();
    assert_eq!((m4.shards.len(), m4.bytes), (0, 0));
    assert_eq!(s.checkpoint_shard(4, 0).await.unwrap(), None);
    let big = vec![
        (1023, blob(7, 2 * CHECKPOINT_CHUNK + 1000)),
        (9, blob(8, CHECKPOINT_CHUNK)),
    ];
    let default_chunk = s.clone().with_checkpoint_chunk(CHECKPOINT_CHUNK);
    let m5 = default_chunk
        .put_checkpoint(manifest(5), big.clone())
        .await
        .unwrap();
    assert_eq!(
        m5.shards,
        vec![shard(9, 1 << 20, 1), shard(1023, (2 << 20) + 1000, 3)]
    );
    check_shards(s, 5, &big).await;
}

// ---------------------------------------------------------------- persistence

/// Writes one of everything.
async fn fill(s: &Store) {
    s.put_key(&api_key("k", Role::Analyst, "hk")).await.unwrap();
    s.revoke_key("k").await.unwrap();
    s.create_version("r", "h1", "t1", "k", 1).await.unwrap();
    s.create_version("r", "h2", "t2", "k", 2).await.unwrap();
    s.put_rule_state(&rule_state("r", Some((2, Mode::Active)), false))
        .await
        .unwrap();
    s.put_schema("event E { x: int }").await.unwrap();
    s.append_audit(audit_entry("key.create", "key:k"))
        .await
        .unwrap();
    s.append_audit(audit_entry("rule.deploy", "rule:r"))
        .await
        .unwrap();
    s.put_alert(&alert("a1", 5, "r", "k1", "high", Mode::Shadow))
        .await
        .unwrap();
    s.put_alert(&alert("a2", 6, "r", "k1", "high", Mode::Active))
        .await
        .unwrap();
    s.put_list("l", &strings(&["b", "a"])).await.unwrap();
    s.add_to_list("l", &strings(&["c"])).await.unwrap();
    s.put_webhook(&webhook("wh_p")).await.unwrap();
    for (msg, next_at, created_at) in [("m_1", 30, 3), ("m_2", 20, 2), ("m_3", 10, 1)] {
        let d = delivery("wh_p", msg, &format!("al-{msg}"), next_at, created_at);
        assert!(s.enqueue_delivery(&d, 100_000).await.unwrap());
    }
    s.dead_letter(&delivery("wh_p", "m_3", "al-m_3", 10, 1))
        .await
        .unwrap();
    s.log_attempt(&attempt("wh_p", "m_3", 1)).await.unwrap();
    s.log_attempt(&attempt("wh_p", "m_3", 2)).await.unwrap();
    let small = s.clone().with_checkpoint_chunk(3);
    small
        .put_checkpoint(manifest(1), first_shards())
        .await
        .unwrap();
}

/// Checks that everything `fill` wrote is there, and that counters go on.
async fn check_filled(s: &Store) {
    let key = s.key_by_hash("hk").await.unwrap().unwrap();
    assert_eq!(
        (key.name.as_str(), key.role, key.revoked),
        ("k", Role::Analyst, true)
    );
    let versions = s.versions("r").await.unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.version, v.text.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "t1"), (2, "t2")]
    );
    assert_eq!(
        s.rule_state("r").await.unwrap(),
        Some(rule_state("r", Some((2, Mode::Active)), false))
    );
    assert_eq!(
        s.schema().await.unwrap().as_deref(),
        Some("event E { x: int }")
    );
    let audit = s.audit(0, 10).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .map(|e| (e.seq, e.action.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "key.create"), (2, "rule.deploy")]
    );
    assert_eq!(s.alert_count().await.unwrap(), 2);
    assert_eq!(
        s.alert("a1").await.unwrap(),
        Some(alert("a1", 5, "r", "k1", "high", Mode::Shadow))
    );
    let page = s
        .query_alerts(&AlertFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(
        page.alerts
            .iter()
            .map(|a| a.id.as_str())
            .collect::<Vec<_>>(),
        ["a2", "a1"]
    );
    assert!(
        !s.put_alert(&alert("a1", 5, "r", "k1", "high", Mode::Shadow))
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_list("l").await.unwrap(),
        Some(strings(&["a", "b", "c"]))
    );
    assert_eq!(s.lists_revision().await.unwrap(), 2);
    // Counters continue where they were.
    assert_eq!(
        s.create_version("r", "h3", "t3", "k", 3)
            .await
            .unwrap()
            .version,
        3
    );
    assert_eq!(s.append_audit(audit_entry("x", "y")).await.unwrap(), 3);
    let err = s
        .put_key(&api_key("k", Role::Admin, "other"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    // Webhooks: the endpoint, pending deliveries with their indexes, dead
    // letters, the log, the dedup records.
    assert_eq!(s.webhooks().await.unwrap(), vec![webhook("wh_p")]);
    let m1 = delivery("wh_p", "m_1", "al-m_1", 30, 3);
    let m2 = delivery("wh_p", "m_2", "al-m_2", 20, 2);
    assert_eq!(
        s.pending_for("wh_p", 10).await.unwrap(),
        vec![m2.clone(), m1.clone()]
    );
    assert_eq!(s.due_deliveries(25, 10).await.unwrap(), vec![m2.clone()]);
    assert_eq!(s.pending_stats().await.unwrap(), (2, Some(2)));
    assert_eq!(
        s.dead_letters(None, None, 10).await.unwrap(),
        vec![delivery("wh_p", "m_3", "al-m_3", 10, 1)]
    );
    assert_eq!(
        s.delivery_log("wh_p", 10).await.unwrap(),
        vec![attempt("wh_p", "m_3", 2), attempt("wh_p", "m_3", 1)]
    );
    assert!(
        !s.enqueue_delivery(&delivery("wh_p", "m_4", "al-m_1", 0, 4), 100_000)
            .await
            .unwrap()
    );
    let m1b = Delivery {
        next_at: 5,
        attempts: 1,
        ..m1
    };
    s.update_delivery(&m1b).await.unwrap();
    assert_eq!(s.due_deliveries(25, 10).await.unwrap(), vec![m1b, m2]);
    assert!(s.complete_delivery("wh_p", "m_2").await.unwrap());
    assert_eq!(s.pending_stats().await.unwrap(), (1, Some(3)));
    assert!(s.take_dead_letter("wh_p", "m_3").await.unwrap().is_some());

    // The checkpoint, written in 3-byte chunks, reads back with the default
    // chunk size set; ids go on from it.
    let m1 = s.checkpoint().await.unwrap().unwrap();
    assert_eq!((m1.id, m1.bytes, m1.shards.len()), (1, 23, 4));
    assert_eq!(m1.shards[2].chunks, 4);
    check_shards(s, 1, &first_shards()).await;
    assert_conflict(s.put_checkpoint(manifest(1), second_shards()).await);
    s.put_checkpoint(manifest(2), second_shards())
        .await
        .unwrap();
    check_shards(s, 2, &second_shards()).await;
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_suite() {
    let dir = TempDir::new();
    let spare = TempDir::new();
    let s = Store::open_embedded(&dir.path().join("nested"))
        .await
        .unwrap();
    assert_eq!(s.backend(), "embedded");
    assert_eq!(s.max_alerts(), 1_000_000);
    assert!(dir.path().join("nested/vigil.redb").is_file());
    let spare = Store::open_embedded(spare.path()).await.unwrap();
    suite(s, spare).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_suite() {
    let server = RedisServer::start();
    let s = open_redis(&server, &unique("suite")).await;
    assert_eq!(s.backend(), "redis");
    assert_eq!(s.max_alerts(), 1_000_000);
    let spare = open_redis(&server, &unique("spare")).await;
    suite(s, spare).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_webhooks() {
    let dir = TempDir::new();
    let s = Store::open_embedded(dir.path()).await.unwrap();
    webhook_suite(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_webhooks() {
    let server = RedisServer::start();
    let s = open_redis(&server, &unique("hooks")).await;
    webhook_suite(&s).await;
}

/// Expired dedup records are purged, a bounded number per enqueue: checked
/// in the redb file itself.
#[tokio::test]
async fn embedded_dedup_records_are_purged() {
    use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};
    const DEDUP: TableDefinition<(&str, &str), i64> = TableDefinition::new("webhook_dedup");
    const BY_EXPIRY: TableDefinition<(i64, &str, &str), ()> =
        TableDefinition::new("webhook_dedup_by_expiry");
    let dir = TempDir::new();
    let counts = |stage: &str| {
        let db = redb::Database::open(dir.path().join("vigil.redb")).unwrap();
        let txn = db.begin_read().unwrap();
        let dedup = txn.open_table(DEDUP).unwrap().len().unwrap();
        let by_expiry = txn.open_table(BY_EXPIRY).unwrap().len().unwrap();
        assert_eq!(dedup, by_expiry, "{stage}: both tables agree");
        dedup
    };
    let enqueue = |s: &Store, i: i64, created_at: i64, dedup_until: i64| {
        let s = s.clone();
        async move {
            let d = delivery("wh_p", &format!("m_{i}"), &format!("al_{i}"), 0, created_at);
            assert!(s.enqueue_delivery(&d, dedup_until).await.unwrap());
        }
    };
    {
        let s = Store::open_embedded(dir.path()).await.unwrap();
        for i in 0..100 {
            enqueue(&s, i, i, 1_000).await;
        }
    }
    assert_eq!(counts("all live"), 100);
    {
        // Each enqueue purges up to 64 expired records, in (expiry,
        // webhook, alert) order: al_0, al_1, al_10, al_11… Here al_99, an
        // expired pair past those 64, is queued again: its record replaced.
        let s = Store::open_embedded(dir.path()).await.unwrap();
        enqueue(&s, 99, 5_000, 10_000).await;
    }
    assert_eq!(counts("one purge"), 100 - 64);
    {
        let s = Store::open_embedded(dir.path()).await.unwrap();
        // Purges the 35 left; 2 live records.
        enqueue(&s, 101, 5_001, 10_000).await;
        enqueue(&s, 102, 5_002, 10_000).await;
        assert_eq!(s.pending_stats().await.unwrap().0, 102);
        // A duplicate changes nothing.
        let dup = delivery("wh_p", "m_x", "al_99", 0, 5_003);
        assert!(!s.enqueue_delivery(&dup, 10_000).await.unwrap());
        assert_eq!(s.pending_stats().await.unwrap().0, 102);
    }
    assert_eq!(counts("live ones"), 3);
    {
        // At 10,000 all three have expired.
        let s = Store::open_embedded(dir.path()).await.unwrap();
        enqueue(&s, 200, 10_000, 20_000).await;
    }
    assert_eq!(counts("all purged"), 1);
}

/// Redis expires dedup records by itself (the key's TTL).
#[tokio::test]
async fn redis_dedup_records_expire() {
    let server = RedisServer::start();
    let ns = unique("dedup");
    let s = open_redis(&server, &ns).await;
    let count = || {
        server.command(&format!(
            "EVAL \"return #redis.call('KEYS', ARGV[1])\" 0 {ns}:webhook_dedup:*"
        ))
    };
    let short = delivery("wh_p", "m_1", "al_1", 0, 1_000);
    assert!(s.enqueue_delivery(&short, 1_050).await.unwrap());
    let long = delivery("wh_p", "m_2", "al_2", 0, 1_000);
    assert!(s.enqueue_delivery(&long, 600_000).await.unwrap());
    assert_eq!(count().as_deref(), Some(":2"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while count().as_deref() != Some(":1") {
        assert!(Instant::now() < deadline, "the short record never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !s.enqueue_delivery(&delivery("wh_p", "m_3", "al_2", 0, 2_000), 600_000)
            .await
            .unwrap()
    );
}

/// Checkpoint chunks in the redb file: a put that stopped before the switch
/// leaves its chunks (and the previous checkpoint current) until the next
/// put, which deletes the chunks of every older id; a missing or short chunk
/// is an error, not truncated bytes.
#[tokio::test]
async fn embedded_checkpoint_chunks() {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    const CHUNKS: TableDefinition<(u64, u16, u32), &[u8]> =
        TableDefinition::new("checkpoint_chunks");
    let dir = TempDir::new();
    let path = dir.path().join("vigil.redb");
    // How many chunks are stored, by checkpoint id.
    let per_id = || {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let mut out = BTreeMap::new();
        for item in txn.open_table(CHUNKS).unwrap().iter().unwrap() {
            let (k, _) = item.unwrap();
            *out.entry(k.value().0).or_insert(0) += 1;
        }
        out
    };
    let open = || async {
        Store::open_embedded(dir.path())
            .await
            .unwrap()
            .with_checkpoint_chunk(4)
    };
    {
        let s = open().await;
        s.put_checkpoint(manifest(1), first_shards()).await.unwrap();
        s.stage_checkpoint(manifest(2), second_shards())
            .await
            .unwrap();
    }
    assert_eq!(per_id(), BTreeMap::from([(1, 7), (2, 7)]));
    {
        // Reopened after the "crash": the first checkpoint is current and
        // whole.
        let s = open().await;
        assert_eq!(s.checkpoint().await.unwrap().map(|m| m.id), Some(1));
        check_shards(&s, 1, &first_shards()).await;
        s.put_checkpoint(manifest(3), second_shards())
            .await
            .unwrap();
    }
    assert_eq!(per_id(), BTreeMap::from([(3, 7)]));
    {
        // Shard 5 loses its chunk 2; shard 3's chunk 0 is cut short.
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut chunks = txn.open_table(CHUNKS).unwrap();
            assert!(chunks.remove((3, 5, 2)).unwrap().is_some());
            chunks.insert((3, 3, 0), &b"ab"[..]).unwrap();
        }
        txn.commit().unwrap();
    }
    let s = open().await;
    for shard in [3, 5] {
        let result = s.checkpoint_shard(3, shard).await;
        assert!(matches!(result, Err(StoreError::Backend(_))), "{result:?}");
    }
    assert_eq!(s.checkpoint_shard(3, 0).await.unwrap(), Some(blob(6, 1)));
}

/// The same on Redis, checked in the server's keys.
#[tokio::test]
async fn redis_checkpoint_chunks() {
    let server = RedisServer::start();
    let ns = unique("ckpt");
    let id20 = |id: u64| format!("{id:020}");
    // How many keys match `ns:ckpt:PATTERN`, and how many chunks
    // `ns:ckpt:chunks` names.
    let count = |pattern: &str| {
        server.command(&format!(
            "EVAL \"return #redis.call('KEYS', ARGV[1])\" 0 {ns}:ckpt:{pattern}"
        ))
    };
    let named = || server.command(&format!("ZCARD {ns}:ckpt:chunks"));
    let open = || async { open_redis(&server, &ns).await.with_checkpoint_chunk(4) };
    {
        let s = open().await;
        s.put_checkpoint(manifest(1), first_shards()).await.unwrap();
        s.stage_checkpoint(manifest(2), second_shards())
            .await
            .unwrap();
    }
    assert_eq!(count(&format!("{}:*", id20(1))).as_deref(), Some(":7"));
    assert_eq!(count(&format!("{}:*", id20(2))).as_deref(), Some(":7"));
    assert_eq!(named().as_deref(), Some(":14"));
    {
        let s = open().await;
        assert_eq!(s.checkpoint().await.unwrap().map(|m| m.id), Some(1));
        check_shards(&s, 1, &first_shards()).await;
        s.put_checkpoint(manifest(3), second_shards())
            .await
            .unwrap();
    }
    assert_eq!(count("0*").as_deref(), Some(":7"));
    assert_eq!(count(&format!("{}:*", id20(3))).as_deref(), Some(":7"));
    assert_eq!(named().as_deref(), Some(":7"));
    // Shard 5 loses its chunk 2; shard 3's chunk 0 is cut short.
    let chunk = |shard: u16, i: u32| format!("{ns}:ckpt:{}:{shard}:{i}", id20(3));
    assert_eq!(
        server.command(&format!("DEL {}", chunk(5, 2))).as_deref(),
        Some(":1")
    );
    assert_eq!(
        server
            .command(&format!("SET {} ab", chunk(3, 0)))
            .as_deref(),
        Some("+OK")
    );
    let s = open().await;
    for shard in [3, 5] {
        let result = s.checkpoint_shard(3, shard).await;
        assert!(matches!(result, Err(StoreError::Backend(_))), "{result:?}");
    }
    assert_eq!(s.checkpoint_shard(3, 0).await.unwrap(), Some(blob(6, 1)));
}

#[tokio::test]
async fn embedded_store_persists() {
    let dir = TempDir::new();
    {
        let s = Store::open_embedded(dir.path()).await.unwrap();
        fill(&s).await;
    }
    let s = Store::open_embedded(dir.path()).await.unwrap();
    check_filled(&s).await;
}

#[tokio::test]
async fn redis_store_persists() {
    let server = RedisServer::start();
    let ns = unique("persist");
    {
        let s = open_redis(&server, &ns).await;
        fill(&s).await;
    }
    let s = open_redis(&server, &ns).await;
    check_filled(&s).await;
    // Another namespace on the same server sees none of it.
    let other = open_redis(&server, &unique("other")).await;
    assert_eq!(other.key_by_hash("hk").await.unwrap(), None);
    assert_eq!(other.alert_count().await.unwrap(), 0);
    assert!(other.list_names().await.unwrap().is_empty());
    assert_eq!(other.schema().await.unwrap(), None);
}

#[tokio::test]
async fn redis_store_retries_after_a_dropped_connection() {
    let server = RedisServer::start();
    let s = open_redis(&server, &unique("drop")).await;
    s.put_schema("before").await.unwrap();
    for round in 0..3 {
        // Drop every client connection but the one killing them.
        let reply = server.command("CLIENT KILL TYPE normal SKIPME yes");
        assert!(
            reply.as_deref().is_some_and(|r| r.starts_with(':')),
            "{reply:?}"
        );
        let text = format!("after {round}");
        s.put_schema(&text).await.unwrap();
        assert_eq!(s.schema().await.unwrap(), Some(text));
    }
}

#[tokio::test]
async fn redis_store_open_fails_without_a_server() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let started = Instant::now();
    let err = Store::open_redis(&format!("redis://127.0.0.1:{port}/"), "x")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = Store::open_redis("not a url", "x").await.unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
}

#[tokio::test]
async fn embedded_store_open_fails_on_a_bad_dir() {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path()).unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "not a dir").unwrap();
    let err = Store::open_embedded(&file).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
}

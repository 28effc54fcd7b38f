//! The store's behaviour, one suite run against both backends: the embedded
//! redb file and Redis (a `redis-server` started per test on a free loopback
//! port, under a random namespace).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use vigil_gateway::store::{
    AlertFilter, AlertPage, ApiKey, AuditEntry, Mode, Role, RuleState, Store, StoreError,
    StoredAlert,
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

// ---------------------------------------------------------------- suite

/// Every operation, on `s`; `spare` is an empty store of the same backend
/// for the retention checks (which delete alerts).
async fn suite(s: Store, spare: Store) {
    keys(&s).await;
    versions(&s).await;
    rule_states(&s).await;
    schema(&s).await;
    audit(&s).await;
    alerts(&s).await;
    retention(spare).await;
    lists(&s).await;
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

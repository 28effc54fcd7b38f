//! `vigil-gateway keys …` and the SSE stream over a real socket.

use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::time::{Duration, Instant};

fn temp(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vigil-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn gateway(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vigil-gateway"))
        .args(args)
        .output()
        .expect("run vigil-gateway")
}

#[test]
fn keys_create_prints_the_key_alone_then_list_and_revoke() {
    let dir = temp("keys");
    let d = dir.to_str().expect("utf-8 path");
    let out = gateway(&[
        "keys",
        "create",
        "--name",
        "ci-bot",
        "--role",
        "analyst",
        "--data-dir",
        d,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Exactly the key and a newline: scripts capture it with $(...).
    let key = stdout.strip_suffix('\n').expect("one line");
    assert!(!key.contains('\n'));
    assert!(
        key.starts_with("vk_")
            && key.len() == 67
            && key[3..].chars().all(|c| c.is_ascii_hexdigit()),
        "{stdout:?}"
    );

    let out = gateway(&["keys", "list", "--data-dir", d]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.starts_with("ci-bot\tanalyst\t") && list.trim_end().ends_with("\tactive"),
        "{list}"
    );
    assert!(!list.contains(key), "list never shows secrets");

    let out = gateway(&[
        "keys",
        "create",
        "--name",
        "ci-bot",
        "--role",
        "viewer",
        "--data-dir",
        d,
    ]);
    assert!(!out.status.success(), "a name is unique");
    let out = gateway(&[
        "keys",
        "create",
        "--name",
        "x",
        "--role",
        "root",
        "--data-dir",
        d,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("unknown role `root`: viewer, analyst or admin")
    );

    let out = gateway(&["keys", "revoke", "ci-bot", "--data-dir", d]);
    assert!(out.status.success());
    let out = gateway(&["keys", "list", "--data-dir", d]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .trim_end()
            .ends_with("\trevoked")
    );
    let out = gateway(&["keys", "revoke", "nobody", "--data-dir", d]);
    assert!(!out.status.success());
    let _ = std::fs::remove_dir_all(dir);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// A real gateway process: first start prints the admin key once; SSE
/// delivers alerts over a real socket; shadow alerts only with shadow=true.
#[test]
fn first_start_key_and_sse_over_a_socket() {
    let dir = temp("sse");
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(
        rules.join("r.vgl"),
        "event Txn { card_id: string, amount: float }\nrule pair {\n  severity low\n  key card_id\n  pattern a: Txn -> b: Txn\n  within 1m\n}\n",
    )
    .expect("write");
    let http = format!("127.0.0.1:{}", free_port());
    let zmq = |p: u16| format!("tcp://127.0.0.1:{p}");
    let args = |data: &str| -> Vec<String> {
        vec![
            "--rules".into(),
            rules.display().to_string(),
            "--data-dir".into(),
            data.into(),
            "--http".into(),
            http.clone(),
            "--zmq-pull".into(),
            zmq(free_port()),
            "--zmq-router".into(),
            zmq(free_port()),
            "--zmq-pub".into(),
            zmq(free_port()),
            "--idle".into(),
            "0s".into(),
        ]
    };
    let data = dir.join("data");
    let d = data.display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil-gateway"))
        .args(args(&d))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut key = None;
    let start = Instant::now();
    while key.is_none() && start.elapsed() < Duration::from_secs(30) {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if line.trim().starts_with("vk_") {
            key = Some(line.trim().to_string());
        }
    }
    let key = key.expect("the first start prints an admin key");

    // SSE: one client without shadow, one with.
    let open = |query: &str| {
        let mut s = std::net::TcpStream::connect(&http).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(s, "GET /v1/alerts/stream{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n").expect("write");
        BufReader::new(s)
    };
    let wait_ready = || {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(mut s) = std::net::TcpStream::connect(&http) {
                let _ = write!(s, "GET /readyz HTTP/1.0\r\n\r\n");
                let mut r = String::new();
                let _ = std::io::Read::read_to_string(&mut s, &mut r);
                if r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("not ready");
    };
    wait_ready();
    let mut plain = open("");
    let mut with_shadow = open("?shadow=true");
    std::thread::sleep(Duration::from_millis(200));
    let post = |path: &str, ct: &str, body: &str| -> String {
        let mut s = std::net::TcpStream::connect(&http).expect("connect");
        write!(s, "POST {path} HTTP/1.0\r\nAuthorization: Bearer {key}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).expect("write");
        let mut r = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut r);
        r
    };
    // A shadow rule and an active one; one pair of events matches both.
    let twin =
        "rule twin {\n  severity high\n  key card_id\n  pattern a: Txn -> b: Txn\n  within 1m\n}\n";
    assert!(post("/v1/rules", "text/plain", twin).contains("201"));
    let r = post(
        "/v1/rules/twin/deploy",
        "application/json",
        r#"{"version":1,"mode":"shadow"}"#,
    );
    assert!(
        r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200"),
        "{r}"
    );
    let events = "{\"id\":\"x1\",\"type\":\"Txn\",\"ts\":\"2026-01-05T10:00:00Z\",\"card_id\":\"k\",\"amount\":1}\n{\"id\":\"x2\",\"type\":\"Txn\",\"ts\":\"2026-01-05T10:00:01Z\",\"card_id\":\"k\",\"amount\":2}\n";
    let r = post("/v1/events", "application/x-ndjson", events);
    assert!(r.contains("\"accepted\":2"), "{r}");

    let read_alerts = |s: &mut BufReader<std::net::TcpStream>, n: usize| -> Vec<String> {
        let mut got = vec![];
        let mut line = String::new();
        while got.len() < n {
            line.clear();
            if s.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            if let Some(d) = line.strip_prefix("data: ") {
                got.push(d.trim().to_string());
            }
        }
        got
    };
    let shadow_side = read_alerts(&mut with_shadow, 2);
    assert_eq!(shadow_side.len(), 2, "{shadow_side:?}");
    assert!(
        shadow_side
            .iter()
            .any(|a| a.contains("\"rule\":\"twin\"") && a.contains("\"mode\":\"shadow\""))
    );
    let plain_side = read_alerts(&mut plain, 1);
    assert!(
        plain_side[0].contains("\"rule\":\"pair\""),
        "{plain_side:?}"
    );
    // Nothing else for the plain client: after a second pair of events (on
    // another card), the next thing it sees is that pair's active alert, not
    // the first pair's shadow alert (published before it, in the same order
    // to every subscriber). No read timeout to wait out.
    let events = "{\"id\":\"x3\",\"type\":\"Txn\",\"ts\":\"2026-01-05T10:00:02Z\",\"card_id\":\"k2\",\"amount\":1}\n{\"id\":\"x4\",\"type\":\"Txn\",\"ts\":\"2026-01-05T10:00:03Z\",\"card_id\":\"k2\",\"amount\":2}\n";
    let r = post("/v1/events", "application/x-ndjson", events);
    assert!(r.contains("\"accepted\":2"), "{r}");
    plain
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let more = read_alerts(&mut plain, 1);
    assert_eq!(more.len(), 1, "the second pair's alert");
    assert!(
        more[0].contains("\"rule\":\"pair\"") && more[0].contains("\"key\":\"k2\""),
        "{more:?}"
    );

    let _ = child.kill();
    let _ = child.wait();
    // A restart prints no new key.
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil-gateway"))
        .args(args(&d))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    wait_ready();
    let _ = child.kill();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut rest);
    let _ = child.wait();
    assert!(
        rest.contains("Vigil gateway:") && !rest.contains("vk_"),
        "{rest}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A running gateway process: `/metrics` and `/v1/cluster` answer without a
/// key only on `--metrics-addr`; a client that sends headers too slowly is
/// disconnected after `--header-read-timeout`; `keys create` on the store it
/// holds says so in one line; the store file is 0600.
#[test]
fn operations_listener_header_timeout_and_keys_create_while_running() {
    let dir = temp("ops");
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(
        rules.join("r.vgl"),
        "event Txn { card_id: string, amount: float }\nrule pair {\n  severity low\n  key card_id\n  pattern a: Txn -> b: Txn\n  within 1m\n}\n",
    )
    .expect("write");
    let http = format!("127.0.0.1:{}", free_port());
    let ops = format!("127.0.0.1:{}", free_port());
    let zmq = |p: u16| format!("tcp://127.0.0.1:{p}");
    let data = dir.join("data");
    let d = data.display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil-gateway"))
        .args(["--rules", &rules.display().to_string(), "--data-dir", &d])
        .args(["--http", &http, "--metrics-addr", &ops])
        .args(["--header-read-timeout", "500ms", "--idle", "0s"])
        .args(["--zmq-pull", &zmq(free_port())])
        .args(["--zmq-router", &zmq(free_port())])
        .args(["--zmq-pub", &zmq(free_port())])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let get = |addr: &str, path: &str| -> Option<(u16, String)> {
        let mut s = std::net::TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut r = String::new();
        std::io::Read::read_to_string(&mut s, &mut r).ok()?;
        let status = r.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, r))
    };
    let start = Instant::now();
    while get(&http, "/healthz").is_none_or(|(s, _)| s != 200) {
        assert!(start.elapsed() < Duration::from_secs(30), "gateway up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let result = std::panic::catch_unwind(|| {
        // Without a key: 401 on the API port, 200 on the operations listener.
        for path in ["/metrics", "/v1/cluster"] {
            assert_eq!(get(&http, path).map(|r| r.0), Some(401), "{path} on --http");
            let (s, body) = get(&ops, path).expect("ops answers");
            assert_eq!(s, 200, "{path} on --metrics-addr: {body}");
        }
        assert!(get(&ops, "/metrics").is_some_and(|(_, b)| b.contains("vigil_events_accepted")));
        assert_eq!(get(&ops, "/v1/rules").map(|r| r.0), Some(404));
        // Headers sent too slowly: the connection is closed after ~500 ms.
        let mut slow = std::net::TcpStream::connect(&http).expect("connect");
        slow.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(slow, "GET /healthz HTTP/1.1\r\nHost: x\r\n").expect("write");
        let t0 = Instant::now();
        let mut buf = [0u8; 512];
        let n = std::io::Read::read(&mut slow, &mut buf).unwrap_or(0);
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
            "closed after {waited:?}: {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        assert!(
            n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        // keys create while the gateway holds the store: one clear line.
        let out = gateway(&[
            "keys",
            "create",
            "--name",
            "late",
            "--role",
            "viewer",
            "--data-dir",
            &d,
        ]);
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("vigil-gateway keys: cannot open the store: ")
                && err.contains("is a gateway running on it?")
                && !err.contains("backtrace")
                && !err.contains("Caused by"),
            "{err}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(data.join("vigil.redb"))
                .expect("store file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

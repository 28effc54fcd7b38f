//! What docs/security.md promises, through `app()` on a real system: who may
//! read what, the webhook SSRF guard, rule-name and rule-text checks, the
//! answers of HTTP ingest to hostile bodies, and the store file's mode.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::path::PathBuf;
use std::time::Duration;
use tower::ServiceExt;
use vigil_gateway::api::ApiConfig;
use vigil_gateway::router::RouterConfig;
use vigil_gateway::system::{StoreConfig, System, SystemConfig};
use vigil_gateway::webhooks::WebhookConfig;

const RULES: &str = "event Txn { card_id: string, amount: float, mcc: int? }\nrule spike {\n  severity high\n  key card_id\n  pattern a: Txn -> b: Txn[amount > a.amount * 5]\n  within 60s\n}\n";

fn temp(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "vigil-sec-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

struct T {
    sys: System,
    app: axum::Router,
    admin: String,
    analyst: String,
    viewer: String,
}

struct Resp {
    status: StatusCode,
    json: serde_json::Value,
    text: String,
}

async fn send(app: &axum::Router, req: Request<Body>) -> Resp {
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Resp { status, json, text }
}

impl T {
    async fn start(data: PathBuf) -> T {
        let rules = temp("rules");
        std::fs::write(rules.join("r.vgl"), RULES).expect("write");
        let sys = System::start(SystemConfig {
            rules,
            store: StoreConfig::Embedded(data),
            nodes: vec![],
            embedded_nodes: 1,
            router: RouterConfig {
                idle_ms: 0,
                ..RouterConfig::default()
            },
            api: ApiConfig::default(),
            // Loopback allowed, as for local receivers in tests; nothing else.
            webhooks: WebhookConfig {
                allow_loopback: true,
                ..WebhookConfig::default()
            },
            kafka: None,
            alerts_topic: None,
        })
        .await
        .expect("system starts");
        let app = sys.app();
        let admin = sys.first_admin_key.clone().expect("admin key");
        let mut t = T {
            sys,
            app,
            admin,
            analyst: String::new(),
            viewer: String::new(),
        };
        t.analyst = t.key("ana", "analyst").await;
        t.viewer = t.key("vic", "viewer").await;
        t
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        ct: &str,
        body: Vec<u8>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        if !ct.is_empty() {
            b = b.header("content-type", ct);
        }
        send(&self.app, b.body(Body::from(body)).expect("request")).await
    }

    async fn as_key(&self, method: &str, path: &str, key: &str, ct: &str, body: &str) -> Resp {
        self.call(
            method,
            path,
            Some(&format!("Bearer {key}")),
            ct,
            body.as_bytes().to_vec(),
        )
        .await
    }

    async fn key(&self, name: &str, role: &str) -> String {
        let r = self
            .as_key(
                "POST",
                "/v1/keys",
                &self.admin,
                "application/json",
                &serde_json::json!({"name": name, "role": role}).to_string(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json["key"].as_str().expect("key").to_string()
    }
}

// ---------------------------------------------------------------------------
// Authentication and who reads what (items 7, 12, 13)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let t = T::start(temp("data")).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = t
            .call(
                "GET",
                "/v1/me",
                Some(&format!("{scheme} {}", t.viewer)),
                "",
                vec![],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{scheme}: {}", r.text);
        assert_eq!(r.json["name"], "vic");
    }
    for bad in [
        format!("Basic {}", t.viewer),
        "Bearer".into(),
        "Bearer   ".into(),
    ] {
        let r = t.call("GET", "/v1/me", Some(&bad), "", vec![]).await;
        assert_eq!(
            (r.status, r.json["error"]["message"].as_str()),
            (
                StatusCode::UNAUTHORIZED,
                Some("the Authorization header must be `Bearer <key>`")
            ),
            "{bad:?}"
        );
    }
    t.sys.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_and_metrics_need_a_viewer_key_except_on_the_operations_listener() {
    let t = T::start(temp("data")).await;
    for path in ["/v1/cluster", "/metrics"] {
        let r = t.call("GET", path, None, "", vec![]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}: {}", r.text);
        assert!(
            !r.text.contains("spike"),
            "{path} leaks rule names: {}",
            r.text
        );
        let r = t.as_key("GET", path, &t.viewer, "", "").await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
    }
    // Health stays open (load balancers, orchestrators).
    for path in ["/healthz", "/readyz", "/v1/openapi.json"] {
        let r = t.call("GET", path, None, "", vec![]).await;
        assert_ne!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // The operations listener (`--metrics-addr`): no key, and nothing else.
    let ops = vigil_gateway::api::ops_app(t.sys.state.clone());
    let get = |p: &str| Request::get(p).body(Body::empty()).expect("request");
    let m = send(&ops, get("/metrics")).await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(m.text.contains("vigil_"), "{}", m.text);
    let c = send(&ops, get("/v1/cluster")).await;
    assert_eq!(c.status, StatusCode::OK);
    assert!(c.json["nodes"].is_array(), "{}", c.text);
    assert_eq!(send(&ops, get("/healthz")).await.status, StatusCode::OK);
    assert_ne!(
        send(&ops, get("/readyz")).await.status,
        StatusCode::NOT_FOUND
    );
    for p in ["/v1/rules", "/v1/audit", "/v1/openapi.json", "/"] {
        assert_eq!(
            send(&ops, get(p)).await.status,
            StatusCode::NOT_FOUND,
            "{p}"
        );
    }
    t.sys.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_shows_webhook_urls_only_to_admins() {
    let t = T::start(temp("data")).await;
    let url = "http://user:pw@127.0.0.1:9/hook?token=s3cr3t";
    let r = t
        .as_key(
            "POST",
            "/v1/webhooks",
            &t.admin,
            "application/json",
            &serde_json::json!({"url": url}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().expect("id").to_string();
    let r = t
        .as_key(
            "PUT",
            &format!("/v1/webhooks/{id}"),
            &t.admin,
            "application/json",
            &serde_json::json!({"url": "http://127.0.0.1:9/other?token=n3w"}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Viewers and analysts: the origin only, in every webhook entry.
    for key in [&t.viewer, &t.analyst] {
        let r = t.as_key("GET", "/v1/audit?limit=1000", key, "", "").await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            !r.text.contains("s3cr3t") && !r.text.contains("n3w") && !r.text.contains("pw@"),
            "{}",
            r.text
        );
        let hooks: Vec<&serde_json::Value> = r
            .json
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| {
                e["action"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("webhook."))
            })
            .collect();
        assert_eq!(hooks.len(), 2, "{}", r.text);
        assert_eq!(hooks[0]["after"]["url"], "http://127.0.0.1:9/…");
        assert_eq!(hooks[1]["before"]["url"], "http://127.0.0.1:9/…");
    }
    // Admins, who can read the webhooks themselves: everything.
    let r = t
        .as_key("GET", "/v1/audit?limit=1000", &t.admin, "", "")
        .await;
    assert!(
        r.text.contains("s3cr3t") && r.text.contains("n3w"),
        "{}",
        r.text
    );
    // And the webhook list itself stays admin-only.
    let r = t.as_key("GET", "/v1/webhooks", &t.analyst, "", "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    t.sys.shutdown().await;
}

// ---------------------------------------------------------------------------
// The webhook SSRF guard (item 6)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_urls_in_every_non_global_form_are_refused() {
    let t = T::start(temp("data")).await;
    for url in [
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:100.64.0.1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://198.18.0.1/",
        "http://240.0.0.1/",
        "http://192.0.0.170/",
        "http://[::ffff:10.0.0.1]/",
        "http://[2002:a9fe:a9fe::1]/",
        "http://[::169.254.169.254]/",
        "http://[::ffff:0:169.254.169.254]/",
        "http://0.0.0.0:80/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
        "http://[100::1]/",
        "http://192.0.2.1/",
        "http://255.255.255.255/",
    ] {
        let r = t
            .as_key(
                "POST",
                "/v1/webhooks",
                &t.admin,
                "application/json",
                &serde_json::json!({"url": url}).to_string(),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{url}: {}",
            r.text
        );
        assert_eq!(r.json["error"]["code"], "endpoint_not_allowed", "{url}");
        // An update cannot smuggle one in either.
    }
    let r = t
        .as_key(
            "POST",
            "/v1/webhooks",
            &t.admin,
            "application/json",
            r#"{"url":"http://127.0.0.1:9/ok"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "loopback is allowed here");
    let id = r.json["id"].as_str().expect("id").to_string();
    let r = t
        .as_key(
            "PUT",
            &format!("/v1/webhooks/{id}"),
            &t.admin,
            "application/json",
            r#"{"url":"http://[::ffff:169.254.169.254]/latest/meta-data"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(
        r.json["error"]["message"],
        "`::ffff:a9fe:a9fe` resolves to ::ffff:169.254.169.254 (IPv4 169.254.169.254), a private or link-local address: webhook endpoints must be public"
    );
    t.sys.shutdown().await;
}

/// The delivery client resolves names through the guard: a name that
/// resolves to a refused address is never connected to, whatever was checked
/// before (DNS rebinding), and the same name is reached when allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_connects_only_to_addresses_the_guard_checked() {
    use vigil_gateway::ssrf::GuardedResolver;
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let h = h.clone();
            async move {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = |allow_loopback: bool| {
        reqwest::Client::builder()
            .dns_resolver(std::sync::Arc::new(GuardedResolver {
                allow_loopback,
                allow_private: false,
            }))
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client")
    };
    let url = format!("http://localhost:{port}/hook");
    let err = client(false)
        .post(&url)
        .body("{}")
        .send()
        .await
        .expect_err("refused at resolution");
    let chain = format!("{err:?}");
    assert!(chain.contains("loopback address"), "{chain}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    let ok = client(true)
        .post(&url)
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(ok.status(), 200);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------
// Rule names and rule texts (item 11)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_names_are_bounded_and_texts_get_their_real_diagnostics() {
    let t = T::start(temp("data")).await;
    let rule = |name: &str| {
        format!(
            "rule {name} {{\n  severity low\n  key card_id\n  pattern a: Txn\n  within 1m\n}}\n"
        )
    };
    // A name of a million characters: refused with a diagnostic, never stored.
    let long = format!("r{}", "x".repeat(999_999));
    let r = t
        .as_key("POST", "/v1/rules", &t.analyst, "text/plain", &rule(&long))
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        &r.text[..200.min(r.text.len())]
    );
    assert_eq!(r.json["error"]["code"], "invalid_rule");
    assert_eq!(r.json["diagnostics"][0]["code"], "rule-name-too-long");
    assert_eq!(
        r.json["diagnostics"][0]["message"],
        "a rule name is at most 64 characters; this one has 1000000"
    );
    let r = t.as_key("GET", "/v1/rules", &t.viewer, "", "").await;
    assert!(!r.text.contains("xxxxxxxx"), "not stored");
    // 64 characters: fine, and every route on it answers.
    let ok = format!("r{}", "x".repeat(63));
    let r = t
        .as_key("POST", "/v1/rules", &t.analyst, "text/plain", &rule(&ok))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = t
        .as_key("GET", &format!("/v1/rules/{ok}"), &t.viewer, "", "")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // A syntax error: the parser's diagnostics, not "exactly one rule".
    let broken =
        "rule broken {\n  severity low\n  key card_id\n  pattern a: Txn ->\n  within 1m\n}\n";
    let r = t
        .as_key("POST", "/v1/rules", &t.analyst, "text/plain", broken)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "invalid_rule");
    let diags = r.json["diagnostics"].as_array().expect("diagnostics");
    assert!(
        !diags.is_empty() && diags.iter().all(|d| d["code"] != "not-one-rule"),
        "{}",
        r.text
    );
    assert!(
        !r.json["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("exactly one rule"),
        "{}",
        r.text
    );
    // validate: an empty text and two rules each get a diagnostic.
    for (text, label) in [
        ("", "no rule here"),
        ("   \n# only a comment\n", "no rule here"),
        (
            &*format!("{}{}", rule("one"), rule("two")),
            "a second rule: submit each rule on its own",
        ),
    ] {
        let r = t
            .as_key("POST", "/v1/rules/validate", &t.analyst, "text/plain", text)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["ok"], false, "{text:?}");
        assert_eq!(
            r.json["diagnostics"][0]["code"], "not-one-rule",
            "{}",
            r.text
        );
        assert_eq!(r.json["diagnostics"][0]["severity"], "error");
        assert_eq!(r.json["diagnostics"][0]["label"], label);
    }
    // validate also flags the long name.
    let r = t
        .as_key(
            "POST",
            "/v1/rules/validate",
            &t.analyst,
            "text/plain",
            &rule(&"y".repeat(65)),
        )
        .await;
    assert_eq!(r.json["ok"], false);
    assert_eq!(r.json["diagnostics"][0]["code"], "rule-name-too-long");
    t.sys.shutdown().await;
}

// ---------------------------------------------------------------------------
// HTTP ingest (item 9)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_answers_400_when_nothing_was_accepted_and_reads_arrays() {
    let t = T::start(temp("data")).await;
    let good = |id: &str| {
        format!(
            r#"{{"id":"{id}","type":"Txn","ts":"2026-01-05T10:00:00Z","card_id":"c1","amount":1.0}}"#
        )
    };
    let key = format!("Bearer {}", t.analyst);
    let post = |ct: &'static str, body: Vec<u8>| t.call("POST", "/v1/events", Some(&key), ct, body);
    // One JSON event, rejected: 400 with the reasons body.
    let r = post("application/json", br#"{"type":"Nope","ts":1}"#.to_vec()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.json["accepted"], 0);
    assert_eq!(r.json["rejected"][0]["line"], 1);
    assert_eq!(r.json["rejected"][0]["reason"], "unknown_type");
    // Every NDJSON line rejected: 400, reasons by line.
    let mut body = b"{\"type\":\"Txn\",\"ts\":1,\"card_id\":\"c\",\"amount\":1e400}\n".to_vec();
    body.extend(b"{\"type\":\"Txn\",\"ts\":1,\"card_id\":\"c");
    body.extend([0xff, 0xfe]);
    body.extend(b"\",\"amount\":1}\n");
    body.extend(b"{\"type\":\"Txn\",\"ts\":1,\"card_id\":\"c\",\"amount\":1,\"ts\":2}\n");
    body.extend(
        b"{\"type\":\"Txn\",\"ts\":1,\"card_id\":\"c\",\"amount\":1,\"mcc\":9223372036854775808}\n",
    );
    let r = post("application/x-ndjson", body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let reasons: Vec<(u64, &str)> = r.json["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|x| {
            (
                x["line"].as_u64().unwrap_or(0),
                x["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (1, "out_of_range"),
            (2, "invalid_utf8"),
            (3, "duplicate_key"),
            (4, "out_of_range")
        ]
    );
    assert!(
        r.json["rejected"][3]["message"]
            .as_str()
            .unwrap_or("")
            .contains("out of range for int"),
        "{}",
        r.text
    );
    // One accepted among rejected: 200, same shape.
    let r = post(
        "application/x-ndjson",
        format!("{}\nnot json\n", good("e1")).into_bytes(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (
            r.json["accepted"].as_u64(),
            r.json["rejected"][0]["line"].as_u64()
        ),
        (Some(1), Some(2))
    );
    // A top-level JSON array is a batch; `line` is the element's index.
    let r = post(
        "application/json",
        format!(
            r#"[{}, {{"type":"Txn","ts":1}}, {}]"#,
            good("e2"),
            good("e3")
        )
        .into_bytes(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["accepted"], 2);
    assert_eq!(r.json["rejected"][0]["line"], 2);
    assert_eq!(r.json["rejected"][0]["reason"], "missing_field");
    // An array of which nothing is accepted: 400.
    let r = post("application/json", b"[1, \"x\"]".to_vec()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.json["rejected"].as_array().map(Vec::len), Some(2));
    assert_eq!(r.json["rejected"][1]["reason"], "not_an_object");
    t.sys.shutdown().await;
}

// ---------------------------------------------------------------------------
// At rest (item 12)

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let parent = temp("perm");
    let data = parent.join("data");
    let t = T::start(data.clone()).await;
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&data.join("vigil.redb")), 0o600);
    assert_eq!(mode(&data), 0o700, "a data directory the gateway creates");
    let T { sys, app, .. } = t;
    sys.shutdown().await;
    drop(app);
    // An existing file with a loose mode is tightened on open.
    std::fs::set_permissions(
        data.join("vigil.redb"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let store = StoreConfig::Embedded(data.clone())
        .open()
        .await
        .expect("reopen");
    assert_eq!(mode(&data.join("vigil.redb")), 0o600);
    drop(store);
}

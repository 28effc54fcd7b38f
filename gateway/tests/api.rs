//! The HTTP API through `app()` (in-process requests) on a real system: the
//! embedded store on disk, the router thread and two in-process engine nodes.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use tower::ServiceExt;
use vigil_gateway::api::ApiConfig;
use vigil_gateway::router::RouterConfig;
use vigil_gateway::system::{StoreConfig, System, SystemConfig};

const SCHEMA: &str = "event Txn { card_id: string, amount: float, merchant: string }\n";
const SPIKE: &str = "# a small charge, then one five times larger\nrule spike {\n  severity high\n  key card_id\n  pattern a: Txn -> b: Txn[amount > a.amount * 5]\n  within 60s\n  emit { big: b.amount }\n}\n";
const BLOCKED: &str = "rule blocked {\n  severity critical\n  key card_id\n  pattern t: Txn[merchant in list \"blocked\"]\n  within 1m\n}\n";

fn temp(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "vigil-api-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn rules_dir() -> PathBuf {
    let d = temp("rules");
    std::fs::write(d.join("events.vgl"), SCHEMA).expect("write");
    std::fs::write(d.join("spike.vgl"), SPIKE).expect("write");
    std::fs::write(d.join("blocked.vgl"), BLOCKED).expect("write");
    d
}

fn config(rules: PathBuf, store: StoreConfig, publish: Option<String>) -> SystemConfig {
    SystemConfig {
        rules,
        store,
        nodes: vec![],
        embedded_nodes: 2,
        router: RouterConfig {
            publish,
            idle_ms: 0,
            ..RouterConfig::default()
        },
        api: ApiConfig {
            max_body_bytes: 64 * 1024,
            samples_dir: Some(temp("samples")),
            lists: vigil_gateway::api::ListLimits {
                max_entries: 5,
                max_bytes: 40,
                max_entry_bytes: 16,
            },
        },
        webhooks: vigil_gateway::webhooks::WebhookConfig {
            allow_loopback: true,
            ..Default::default()
        },
        kafka: None,
        alerts_topic: None,
    }
}

struct T {
    sys: System,
    app: axum::Router,
    admin: String,
    analyst: String,
    viewer: String,
}

async fn setup_with(store: StoreConfig, publish: Option<String>) -> T {
    let sys = System::start(config(rules_dir(), store, publish))
        .await
        .expect("system starts");
    let app = sys.app();
    let admin = sys
        .first_admin_key
        .clone()
        .expect("first start creates an admin key");
    let mut t = T {
        sys,
        app,
        admin,
        analyst: String::new(),
        viewer: String::new(),
    };
    t.analyst = t.new_key("ana", "analyst").await;
    t.viewer = t.new_key("vic", "viewer").await;
    t
}

async fn setup() -> T {
    setup_with(StoreConfig::Embedded(temp("data")), None).await
}

struct Resp {
    status: StatusCode,
    json: serde_json::Value,
    text: String,
}

impl T {
    async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        ct: Option<&str>,
        body: &str,
    ) -> Resp {
        let mut b = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(path);
        if let Some(k) = key {
            b = b.header("authorization", format!("Bearer {k}"));
        }
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        let req = b.body(Body::from(body.to_string())).expect("request");
        let resp = self.app.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let is_stream = resp
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
        let text = if is_stream {
            String::new()
        } else {
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            String::from_utf8_lossy(&bytes).to_string()
        };
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        Resp { status, json, text }
    }

    async fn get(&self, path: &str, key: &str) -> Resp {
        self.call("GET", path, Some(key), None, "").await
    }

    async fn post_json(&self, path: &str, key: &str, body: serde_json::Value) -> Resp {
        self.call(
            "POST",
            path,
            Some(key),
            Some("application/json"),
            &body.to_string(),
        )
        .await
    }

    async fn new_key(&self, name: &str, role: &str) -> String {
        let r = self
            .post_json(
                "/v1/keys",
                &self.admin,
                serde_json::json!({"name": name, "role": role}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json["key"].as_str().expect("key").to_string()
    }

    async fn events(&self, lines: &[String]) -> Resp {
        self.call(
            "POST",
            "/v1/events",
            Some(&self.analyst),
            Some("application/x-ndjson"),
            &lines.join("\n"),
        )
        .await
    }

    /// Waits until the nodes have processed all `accepted` events the gateway
    /// took (every copy acknowledged) and every alert the gateway published
    /// is in the alert log: what `/v1/alerts` answers then is final, so the
    /// absence of an alert can be asserted without a fixed sleep.
    async fn wait_processed(&self, accepted: u64) {
        let mut last = serde_json::Value::Null;
        for _ in 0..400 {
            let c = self.get("/v1/cluster", &self.viewer).await.json;
            let processed = c["events_accepted"].as_u64() == Some(accepted)
                && c["nodes"].as_array().is_some_and(|ns| {
                    ns.iter().all(|n| {
                        n["state"] == "up" && n["lag_events"] == 0 && n["queued_copies"] == 0
                    })
                });
            if processed {
                let published = c["alerts_published"].as_u64().unwrap_or(u64::MAX);
                let r = self.get("/v1/alerts?limit=1000", &self.viewer).await;
                let stored = r.json["alerts"].as_array().map_or(0, |a| a.len() as u64);
                if stored >= published {
                    return;
                }
            }
            last = c;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out waiting for {accepted} events to be processed; cluster {last}");
    }

    /// Polls the alert log until `n` alerts match `query`.
    async fn wait_alerts(&self, query: &str, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..200 {
            let r = self.get(&format!("/v1/alerts?{query}"), &self.viewer).await;
            let a = r.json["alerts"].as_array().cloned().unwrap_or_default();
            if a.len() >= n {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let c = self.get("/v1/cluster", &self.viewer).await;
        let m = self.get("/metrics", &self.viewer).await;
        panic!(
            "timed out waiting for {n} alerts matching {query}; cluster {}\n{}",
            c.text, m.text
        );
    }
}

fn txn(id: &str, ts: &str, card: &str, amount: f64, merchant: &str) -> String {
    format!(
        r#"{{"id":"{id}","type":"Txn","ts":"{ts}","card_id":"{card}","amount":{amount},"merchant":"{merchant}"}}"#
    )
}

fn error_of(r: &Resp) -> (String, String) {
    (
        r.json["error"]["code"].as_str().unwrap_or("").to_string(),
        r.json["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_errors_are_exact() {
    let t = setup().await;
    let r = t.call("GET", "/v1/rules", None, None, "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json,
        serde_json::json!({"error": {"code": "unauthorized", "message": "this call needs an API key: send `Authorization: Bearer <key>`"}})
    );
    let r = t.get("/v1/rules", "vk_nope").await;
    assert_eq!(
        (r.status, error_of(&r)),
        (
            StatusCode::UNAUTHORIZED,
            ("unauthorized".into(), "unknown API key".into())
        )
    );
    let r = t.call("GET", "/v1/rules", None, None, "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Revoked keys are refused.
    let k = t.new_key("temp", "viewer").await;
    assert_eq!(t.get("/v1/rules", &k).await.status, StatusCode::OK);
    let r = t
        .call("DELETE", "/v1/keys/temp", Some(&t.admin), None, "")
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = t.get("/v1/rules", &k).await;
    assert_eq!(
        error_of(&r),
        ("unauthorized".into(), "this API key was revoked".into())
    );
    // Roles: the exact 403 body.
    let r = t
        .post_json(
            "/v1/keys",
            &t.analyst,
            serde_json::json!({"name": "x", "role": "admin"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        error_of(&r),
        (
            "forbidden".into(),
            "creating keys needs the `admin` role; key `ana` has `analyst`".into()
        )
    );
    t.sys.shutdown().await;
}

/// (method, path, content type, body, weakest role allowed, status for that role).
type Case = (
    &'static str,
    &'static str,
    Option<&'static str>,
    String,
    &'static str,
    u16,
);

fn matrix() -> Vec<Case> {
    let draft = "rule matrix_rule {\n  severity low\n  key card_id\n  pattern a: Txn -> b: Txn\n  within 1m\n}\n";
    let ev = txn("m1", "2026-01-05T10:00:00Z", "c9", 1.0, "shop");
    vec![
        ("GET", "/v1/rules", None, String::new(), "viewer", 200),
        ("GET", "/v1/cluster", None, String::new(), "viewer", 200),
        (
            "POST",
            "/v1/rules",
            Some("text/plain"),
            draft.into(),
            "analyst",
            201,
        ),
        (
            "POST",
            "/v1/rules/validate",
            Some("text/plain"),
            draft.into(),
            "analyst",
            200,
        ),
        ("GET", "/v1/rules/spike", None, String::new(), "viewer", 200),
        (
            "GET",
            "/v1/rules/spike/versions",
            None,
            String::new(),
            "viewer",
            200,
        ),
        (
            "GET",
            "/v1/rules/spike/versions/1",
            None,
            String::new(),
            "viewer",
            200,
        ),
        (
            "POST",
            "/v1/rules/spike/versions/1/test",
            Some("application/x-ndjson"),
            ev.clone(),
            "analyst",
            200,
        ),
        (
            "POST",
            "/v1/rules/matrix_rule/deploy",
            Some("application/json"),
            r#"{"version":1,"mode":"shadow"}"#.into(),
            "analyst",
            200,
        ),
        (
            "POST",
            "/v1/rules/matrix_rule/pause",
            None,
            String::new(),
            "admin",
            200,
        ),
        (
            "POST",
            "/v1/rules/matrix_rule/resume",
            None,
            String::new(),
            "admin",
            200,
        ),
        (
            "GET",
            "/v1/rules/spike/diff?from=1&to=1",
            None,
            String::new(),
            "viewer",
            200,
        ),
        (
            "POST",
            "/v1/rules/matrix_rule/archive",
            None,
            String::new(),
            "admin",
            200,
        ),
        ("GET", "/v1/schema", None, String::new(), "viewer", 200),
        (
            "PUT",
            "/v1/schema",
            Some("text/plain"),
            SCHEMA.into(),
            "admin",
            200,
        ),
        (
            "POST",
            "/v1/events",
            Some("application/x-ndjson"),
            ev,
            "analyst",
            200,
        ),
        ("GET", "/v1/alerts", None, String::new(), "viewer", 200),
        (
            "GET",
            "/v1/alerts/stream",
            None,
            String::new(),
            "viewer",
            200,
        ),
        ("GET", "/v1/alerts/0000", None, String::new(), "viewer", 404),
        ("GET", "/v1/lists", None, String::new(), "viewer", 200),
        (
            "POST",
            "/v1/lists",
            Some("application/json"),
            r#"{"name":"mx","entries":["a"]}"#.into(),
            "analyst",
            201,
        ),
        ("GET", "/v1/lists/mx", None, String::new(), "viewer", 200),
        (
            "PUT",
            "/v1/lists/mx",
            Some("text/csv"),
            "value\nb\nc\n".into(),
            "analyst",
            200,
        ),
        (
            "POST",
            "/v1/lists/mx/entries",
            Some("application/json"),
            r#"{"entries":["d"]}"#.into(),
            "analyst",
            200,
        ),
        (
            "DELETE",
            "/v1/lists/mx/entries",
            Some("application/json"),
            r#"{"entries":["b"]}"#.into(),
            "analyst",
            200,
        ),
        (
            "DELETE",
            "/v1/lists/mx",
            None,
            String::new(),
            "analyst",
            204,
        ),
        ("GET", "/v1/keys", None, String::new(), "admin", 200),
        (
            "POST",
            "/v1/keys",
            Some("application/json"),
            r#"{"name":"mk","role":"viewer"}"#.into(),
            "admin",
            201,
        ),
        ("DELETE", "/v1/keys/mk", None, String::new(), "admin", 204),
        ("GET", "/v1/audit", None, String::new(), "viewer", 200),
        ("GET", "/v1/me", None, String::new(), "viewer", 200),
        (
            "POST",
            "/v1/webhooks",
            Some("application/json"),
            r#"{"url":"http://127.0.0.1:9/hook"}"#.into(),
            "admin",
            201,
        ),
        ("GET", "/v1/webhooks", None, String::new(), "admin", 200),
        (
            "GET",
            "/v1/webhooks/wh_none",
            None,
            String::new(),
            "admin",
            404,
        ),
        (
            "PUT",
            "/v1/webhooks/wh_none",
            Some("application/json"),
            r#"{"description":"x"}"#.into(),
            "admin",
            404,
        ),
        (
            "DELETE",
            "/v1/webhooks/wh_none",
            None,
            String::new(),
            "admin",
            404,
        ),
        (
            "POST",
            "/v1/webhooks/wh_none/rotate",
            None,
            String::new(),
            "admin",
            404,
        ),
        (
            "GET",
            "/v1/webhooks/wh_none/deliveries",
            None,
            String::new(),
            "admin",
            404,
        ),
        ("GET", "/v1/dead-letters", None, String::new(), "admin", 200),
        (
            "GET",
            "/v1/rules/spike/versions/1/program",
            None,
            String::new(),
            "viewer",
            200,
        ),
        ("GET", "/v1/samples", None, String::new(), "viewer", 200),
        (
            "PUT",
            "/v1/samples/matrix",
            Some("application/x-ndjson"),
            txn("m2", "2026-01-05T10:00:00Z", "c9", 1.0, "shop"),
            "analyst",
            201,
        ),
        (
            "POST",
            "/v1/backtests",
            Some("application/json"),
            serde_json::json!({"rule": "spike", "version": 1, "events": txn("m3", "2026-01-05T10:00:00Z", "c9", 1.0, "shop")}).to_string(),
            "analyst",
            202,
        ),
        (
            "GET",
            "/v1/backtests/bt_none",
            None,
            String::new(),
            "viewer",
            404,
        ),
        (
            "DELETE",
            "/v1/backtests/bt_none",
            None,
            String::new(),
            "analyst",
            404,
        ),
        (
            "GET",
            "/v1/alerts/none/explain",
            None,
            String::new(),
            "viewer",
            404,
        ),
        (
            "POST",
            "/v1/dead-letters/wh_none/msg_none/resend",
            None,
            String::new(),
            "admin",
            404,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_at_every_role_boundary() {
    let t = setup().await;
    let keys = [
        ("viewer", t.viewer.clone()),
        ("analyst", t.analyst.clone()),
        ("admin", t.admin.clone()),
    ];
    let rank = |r: &str| keys.iter().position(|(n, _)| *n == r).expect("role");
    for (method, path, ct, body, min, want) in matrix() {
        // Without a key: 401, whatever the call.
        let r = t.call(method, path, None, ct, &body).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a key"
        );
        // The role just below the minimum: 403 with a reason.
        if rank(min) > 0 {
            let (below, key) = &keys[rank(min) - 1];
            let r = t.call(method, path, Some(key), ct, &body).await;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{method} {path} as {below}: {}",
                r.text
            );
            assert_eq!(r.json["error"]["code"], "forbidden");
            assert!(
                r.json["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&format!("`{min}` role")),
                "{}",
                r.text
            );
        }
        // The minimum role succeeds.
        let r = t
            .call(method, path, Some(&keys[rank(min)].1), ct, &body)
            .await;
        assert_eq!(
            r.status.as_u16(),
            want,
            "{method} {path} as {min}: {}",
            r.text
        );
    }
    // Deploying active needs admin even though deploy itself needs analyst.
    let r = t
        .post_json(
            "/v1/rules/spike/deploy",
            &t.analyst,
            serde_json::json!({"version": 1, "mode": "active"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        error_of(&r).1,
        "deploying a rule in active mode needs the `admin` role; key `ana` has `analyst`"
    );
    t.sys.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_routes() {
    let t = setup().await;
    let r = t.call("GET", "/v1/openapi.json", None, None, "").await;
    assert_eq!(r.status, StatusCode::OK);
    let mut documented = BTreeSet::new();
    for (path, item) in r.json["paths"].as_object().expect("paths") {
        for m in ["get", "post", "put", "delete", "patch"] {
            if item.get(m).is_some() {
                documented.insert(format!("{} {path}", m.to_uppercase()));
            }
        }
    }
    // The matrix exercises every route; its paths, as templates:
    let template = |p: &str| -> String {
        let p = p.split('?').next().unwrap_or(p);
        let parts: Vec<&str> = p.split('/').collect();
        match parts.as_slice() {
            ["", "v1", "rules", "validate"] => p.to_string(),
            ["", "v1", "rules", _] => "/v1/rules/{name}".into(),
            ["", "v1", "rules", _, "versions"] => "/v1/rules/{name}/versions".into(),
            ["", "v1", "rules", _, "versions", _] => "/v1/rules/{name}/versions/{version}".into(),
            ["", "v1", "rules", _, "versions", _, act] => {
                format!("/v1/rules/{{name}}/versions/{{version}}/{act}")
            }
            ["", "v1", "rules", _, act] => format!("/v1/rules/{{name}}/{act}"),
            ["", "v1", "alerts", "stream"] => p.to_string(),
            ["", "v1", "alerts", _] => "/v1/alerts/{id}".into(),
            ["", "v1", "alerts", _, "explain"] => "/v1/alerts/{id}/explain".into(),
            ["", "v1", "samples", _] => "/v1/samples/{name}".into(),
            ["", "v1", "backtests", _] => "/v1/backtests/{id}".into(),
            ["", "v1", "lists", _] => "/v1/lists/{name}".into(),
            ["", "v1", "lists", _, "entries"] => "/v1/lists/{name}/entries".into(),
            ["", "v1", "keys", _] => "/v1/keys/{name}".into(),
            ["", "v1", "webhooks", _] => "/v1/webhooks/{id}".into(),
            ["", "v1", "webhooks", _, act] => format!("/v1/webhooks/{{id}}/{act}"),
            ["", "v1", "dead-letters", _, _, "resend"] => {
                "/v1/dead-letters/{webhook}/{msg_id}/resend".into()
            }
            _ => p.to_string(),
        }
    };
    let exercised: BTreeSet<String> = matrix()
        .iter()
        .map(|(m, p, ..)| format!("{m} {}", template(p)))
        .collect();
    assert_eq!(
        documented, exercised,
        "OpenAPI paths vs the routes the tests call"
    );
    t.sys.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_exact_status_and_error() {
    let t = setup().await;
    // Malformed JSON.
    let r = t
        .call(
            "POST",
            "/v1/rules/spike/deploy",
            Some(&t.admin),
            Some("application/json"),
            "{\"version\": ",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json["error"]["code"], "bad_request");
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("the body is not valid JSON for this call: "),
        "{}",
        r.text
    );
    // Wrong content type.
    let r = t
        .call(
            "POST",
            "/v1/events",
            Some(&t.analyst),
            Some("text/plain"),
            "{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        r.json,
        serde_json::json!({"error": {"code": "unsupported_media_type", "message": "content type `text/plain` is not accepted here; send application/json (one event) or application/x-ndjson"}})
    );
    // Oversize (the test limit is 64 KiB).
    let big = "x".repeat(70_000);
    let r = t
        .call(
            "POST",
            "/v1/events",
            Some(&t.analyst),
            Some("application/x-ndjson"),
            &big,
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        r.json,
        serde_json::json!({"error": {"code": "payload_too_large", "message": "the body is over the limit of 65536 bytes"}})
    );
    // Unknown rule.
    let r = t.get("/v1/rules/nope", &t.viewer).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.json,
        serde_json::json!({"error": {"code": "not_found", "message": "no rule named `nope`"}})
    );
    let r = t
        .post_json(
            "/v1/rules/nope/deploy",
            &t.admin,
            serde_json::json!({"version": 1, "mode": "active"}),
        )
        .await;
    assert_eq!(
        (r.status, error_of(&r).1),
        (StatusCode::NOT_FOUND, "no rule named `nope`".into())
    );
    let r = t
        .post_json(
            "/v1/rules/spike/deploy",
            &t.admin,
            serde_json::json!({"version": 9, "mode": "active"}),
        )
        .await;
    assert_eq!(
        (r.status, error_of(&r).1),
        (
            StatusCode::NOT_FOUND,
            "rule `spike` has no version 9".into()
        )
    );
    // Invalid rule text: 422 with diagnostics carrying line and column.
    let bad = "rule broken {\n  key card_id\n  pattern a: Txm -> b: Txn\n  within 1m\n}\n";
    let r = t
        .call(
            "POST",
            "/v1/rules",
            Some(&t.analyst),
            Some("text/plain"),
            bad,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "invalid_rule");
    let d = &r.json["diagnostics"][0];
    assert_eq!(
        (
            d["code"].as_str(),
            d["file"].as_str(),
            d["line"].as_u64(),
            d["column"].as_u64()
        ),
        (Some("unknown-type"), Some("rule.vgl"), Some(3), Some(14)),
        "{}",
        r.text
    );
    assert_eq!(
        r.json["error"]["message"],
        format!(
            "the rule does not compile: rule.vgl:3:14: {}",
            d["message"].as_str().unwrap_or("")
        )
    );
    // Validate gives the same diagnostics with 200.
    let v = t
        .call(
            "POST",
            "/v1/rules/validate",
            Some(&t.analyst),
            Some("text/plain"),
            bad,
        )
        .await;
    assert_eq!(v.status, StatusCode::OK);
    assert_eq!(v.json["ok"], false);
    assert_eq!(v.json["diagnostics"], r.json["diagnostics"]);
    // Two rules in one text.
    let r = t
        .call(
            "POST",
            "/v1/rules",
            Some(&t.analyst),
            Some("text/plain"),
            &format!("{SPIKE}{BLOCKED}"),
        )
        .await;
    assert_eq!(
        (r.status, error_of(&r).1),
        (
            StatusCode::BAD_REQUEST,
            "the text must declare exactly one rule and no event types".into()
        )
    );
    // Unknown endpoint: JSON too.
    let r = t.get("/v1/nothing", &t.viewer).await;
    assert_eq!(
        r.json,
        serde_json::json!({"error": {"code": "not_found", "message": "no such endpoint"}})
    );
    t.sys.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_and_me_names_the_key() {
    let t = setup().await;
    // The page and its assets need no key (the page asks for one).
    let r = t.call("GET", "/", None, None, "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text.contains("<script src=\"/console/app.js\""),
        "{}",
        r.text
    );
    for (file, ct) in [("app.js", "text/javascript"), ("app.css", "text/css")] {
        let req = Request::builder()
            .uri(format!("/console/{file}"))
            .body(Body::empty())
            .expect("request");
        let resp = t.app.clone().oneshot(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK, "{file}");
        let h = resp.headers();
        assert!(
            h["content-type"].to_str().unwrap_or("").starts_with(ct),
            "{file}: {h:?}"
        );
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap_or("")
                .contains("default-src 'self'")
        );
    }
    // The key never goes in a URL: the script sends it as a bearer header.
    let js = t.call("GET", "/console/app.js", None, None, "").await.text;
    assert!(js.contains("sessionStorage") && js.contains("Authorization"));
    let r = t.call("GET", "/console/nothing.js", None, None, "").await;
    assert_eq!(
        (r.status, r.json.clone()),
        (
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": {"code": "not_found", "message": "no console file `nothing.js`"}})
        )
    );
    let r = t.get("/v1/me", &t.analyst).await;
    assert_eq!(
        r.json,
        serde_json::json!({"name": "ana", "role": "analyst"})
    );
    t.sys.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_in_alerts_out_with_explanation_and_pagination() {
    let t = setup().await;
    let mut lines = vec![];
    for c in 0..5 {
        lines.push(txn(
            &format!("s{c}"),
            &format!("2026-01-05T10:00:0{c}Z"),
            &format!("c{c}"),
            10.0,
            "shop",
        ));
    }
    for c in 0..5 {
        lines.push(txn(
            &format!("b{c}"),
            &format!("2026-01-05T10:00:1{c}Z"),
            &format!("c{c}"),
            100.0,
            "shop",
        ));
    }
    lines.insert(3, "{not json".into());
    lines.insert(
        5,
        r#"{"type":"Txn","ts":"2026-01-05T10:00:00Z","card_id":"c1"}"#.into(),
    );
    let r = t.events(&lines).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["accepted"], 10);
    let rej = r.json["rejected"].as_array().expect("rejected");
    assert_eq!(rej.len(), 2);
    assert_eq!(
        (rej[0]["line"].as_u64(), rej[0]["reason"].as_str()),
        (Some(4), Some("malformed_json"))
    );
    assert_eq!(
        (rej[1]["line"].as_u64(), rej[1]["reason"].as_str()),
        (Some(6), Some("missing_field"))
    );

    let all = t.wait_alerts("rule=spike", 5).await;
    assert_eq!(all.len(), 5);
    // Newest first; paging by 2 gives the same five, no duplicates.
    let mut paged = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/alerts?rule=spike&limit=2&cursor={c}"),
            None => "/v1/alerts?rule=spike&limit=2".into(),
        };
        let r = t.get(&q, &t.viewer).await;
        paged.extend(r.json["alerts"].as_array().cloned().unwrap_or_default());
        match r.json["next"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(paged, all);
    let ats: Vec<&str> = all.iter().filter_map(|a| a["at"].as_str()).collect();
    let mut sorted = ats.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ats, sorted, "newest first");
    // Filters.
    let r = t.get("/v1/alerts?key=c3", &t.viewer).await;
    assert_eq!(r.json["alerts"].as_array().map(Vec::len), Some(1));
    let r = t.get("/v1/alerts?severity=critical", &t.viewer).await;
    assert_eq!(r.json["alerts"].as_array().map(Vec::len), Some(0));
    let r = t
        .get(
            "/v1/alerts?from=2026-01-05T10:00:12Z&to=2026-01-05T10:00:14Z",
            &t.viewer,
        )
        .await;
    assert_eq!(
        r.json["alerts"].as_array().map(Vec::len),
        Some(2),
        "{}",
        r.text
    );
    let r = t.get("/v1/alerts?from=yesterday", &t.viewer).await;
    assert_eq!(
        error_of(&r),
        (
            "bad_request".into(),
            "`from` must be RFC 3339 or epoch milliseconds".into()
        )
    );
    // One alert with the matched events.
    let id = all[0]["id"].as_str().expect("id");
    let r = t.get(&format!("/v1/alerts/{id}"), &t.viewer).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["alert"]["id"], id);
    assert_eq!(r.json["events"]["a"][0]["amount"], 10.0);
    assert_eq!(r.json["events"]["b"][0]["amount"], 100.0);
    assert_eq!(r.json["events"]["b"][0]["merchant"], "shop");
    assert_eq!(r.json["events"]["b"][0]["type"], "Txn");
    // Its explanation: per binding the predicate and the fields it reads,
    // the time the match spans against `within`, the emitted fields.
    let r = t.get(&format!("/v1/alerts/{id}/explain"), &t.viewer).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let e = &r.json;
    assert_eq!(
        (e["rule"].as_str(), e["version"].as_u64()),
        (Some("spike"), Some(1))
    );
    assert_eq!(e["within_ms"], 60_000);
    assert_eq!(e["span_ms"], 10_000, "a at :0x, b at :1x");
    assert_eq!(e["bindings"][0]["name"], "a");
    assert_eq!(e["bindings"][0]["predicate"], serde_json::Value::Null);
    assert_eq!(e["bindings"][0]["fields"], serde_json::json!(["amount"]));
    assert_eq!(e["bindings"][1]["name"], "b");
    assert_eq!(e["bindings"][1]["predicate"], "$.amount > (a.amount * 5.0)");
    assert_eq!(e["bindings"][1]["fields"], serde_json::json!(["amount"]));
    assert_eq!(e["bindings"][1]["events"][0]["fields"]["amount"], 100.0);
    assert_eq!(e["bindings"][1]["events"][0]["type"], "Txn");
    assert_eq!(e["emitted"]["big"], 100.0);
    assert!(e["text"].as_str().unwrap_or("").contains("rule spike"));
    // Today's alerts count in the rules list's hourly chart; these are of
    // January 2026, outside the last 24 hours.
    let r = t.get("/v1/rules", &t.viewer).await;
    let spike = r
        .json
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == "spike"))
        .cloned();
    let hours = spike
        .map(|s| s["alerts_per_hour"].clone())
        .unwrap_or_default();
    assert_eq!(hours.as_array().map(Vec::len), Some(24), "{}", r.text);
    assert_eq!(
        hours
            .as_array()
            .map(|h| h.iter().filter_map(|x| x.as_u64()).sum::<u64>()),
        Some(0)
    );
    let now = chrono::Utc::now();
    let fresh: Vec<String> = [("n1", 1.0), ("n2", 50.0)]
        .iter()
        .enumerate()
        .map(|(i, (id, amount))| {
            let ts = (now + chrono::Duration::seconds(i as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            txn(id, &ts, "now-card", *amount, "shop")
        })
        .collect();
    t.events(&fresh).await;
    t.wait_alerts("rule=spike&key=now-card", 1).await;
    let r = t.get("/v1/rules", &t.viewer).await;
    let spike = r
        .json
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == "spike"))
        .cloned()
        .unwrap_or_default();
    let hours: Vec<u64> = spike["alerts_per_hour"]
        .as_array()
        .map(|h| h.iter().filter_map(|x| x.as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(hours.iter().sum::<u64>(), 1, "{hours:?}");
    assert!(
        hours[22] + hours[23] == 1,
        "in the current (or, at the turn of the hour, previous) hour: {hours:?}"
    );
    t.sys.shutdown().await;
}

/// Polls a backtest until it is no longer running.
async fn backtest_result(t: &T, id: &str) -> serde_json::Value {
    for _ in 0..400 {
        let r = t.get(&format!("/v1/backtests/{id}"), &t.viewer).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        if r.json["state"] != "running" {
            return r.json;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("backtest {id} still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtests_report_counts_chart_score_and_diff_and_can_be_cancelled() {
    let t = setup().await;
    // v2: a stricter spike (x20 instead of x5).
    let v2 = SPIKE.replace("amount * 5", "amount * 20");
    let r = t
        .call(
            "POST",
            "/v1/rules",
            Some(&t.analyst),
            Some("text/plain"),
            &v2,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Cards c0..c9: a charge of 1, then 10 (x10: only v1) or 50 (x50: both).
    let mut lines = vec![];
    for c in 0..10 {
        lines.push(txn(
            &format!("s{c}"),
            &format!("2026-01-05T10:0{c}:00Z"),
            &format!("c{c}"),
            1.0,
            "m",
        ));
        let big = if c % 2 == 0 { 50.0 } else { 10.0 };
        lines.push(txn(
            &format!("b{c}"),
            &format!("2026-01-05T10:0{c}:30Z"),
            &format!("c{c}"),
            big,
            "m",
        ));
    }
    lines.push("not json".into());
    let r = t
        .call(
            "PUT",
            "/v1/samples/ten-cards",
            Some(&t.analyst),
            Some("application/x-ndjson"),
            &lines.join("\n"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        (r.json["name"].as_str(), r.json["lines"].as_u64()),
        (Some("ten-cards"), Some(21))
    );
    let r = t.get("/v1/samples", &t.viewer).await;
    assert_eq!(r.json[0]["name"], "ten-cards", "{}", r.text);
    // One sample, with the count stored beside it (not listed itself).
    assert_eq!(r.json.as_array().map(Vec::len), Some(1), "{}", r.text);
    assert_eq!(r.json[0]["lines"], 21);
    // v2 against v1, with labels: b0, b2 are fraud, and card c1.
    let labels = "{\"event\":\"b0\"}\n{\"event\":\"b2\"}\n{\"key\":\"c1\"}\n";
    let r = t
        .post_json(
            "/v1/backtests",
            &t.analyst,
            serde_json::json!({"rule": "spike", "version": 2, "sample": "ten-cards", "against": 1, "labels": labels}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.json["id"].as_str().expect("id").to_string();
    let done = backtest_result(&t, &id).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(
        (done["events_done"].as_u64(), done["events_total"].as_u64()),
        (Some(21), Some(21))
    );
    let rep = &done["report"];
    assert_eq!(
        (
            rep["events"].as_u64(),
            rep["rejected"].as_u64(),
            rep["alerts"].as_u64()
        ),
        (Some(21), Some(1), Some(5))
    );
    assert_eq!(rep["per_rule"]["spike"], 5);
    // Alerts from 10:00:30 to 10:09:30: one-minute bars, ten of them.
    assert_eq!(rep["bucket_ms"], 60_000);
    let bars = rep["over_time"].as_array().expect("bars");
    assert_eq!(
        bars.iter().filter_map(|b| b["count"].as_u64()).sum::<u64>(),
        5
    );
    assert_eq!(bars[0]["at"], "2026-01-05T10:00:00.000Z");
    assert_eq!(rep["sample_alerts"].as_array().map(Vec::len), Some(5));
    // Five alerts, two on labelled events; c1 (labelled) is found by no
    // alert: precision 2/5, recall 2/3.
    assert_eq!(rep["score"]["true_positives"], 2);
    assert_eq!(rep["score"]["positives"], 3);
    assert!((rep["score"]["precision"].as_f64().unwrap_or(0.0) - 0.4).abs() < 1e-9);
    assert!((rep["score"]["recall"].as_f64().unwrap_or(0.0) - 2.0 / 3.0).abs() < 1e-9);
    // v1 also fires on the five odd cards (x10).
    let d = &rep["diff"];
    assert_eq!(
        (
            d["against"].as_u64(),
            d["only_new"].as_u64(),
            d["only_old"].as_u64(),
            d["both"].as_u64()
        ),
        (Some(1), Some(0), Some(5), Some(5))
    );
    assert_eq!(d["only_old_alerts"].as_array().map(Vec::len), Some(5));
    assert_eq!(d["only_old_alerts"][0]["key"], "c1");

    // Bad requests: both or neither input, unknown sample, bad labels, bad name.
    for (body, want) in [
        (
            serde_json::json!({"rule": "spike", "version": 1}),
            StatusCode::BAD_REQUEST,
        ),
        (
            serde_json::json!({"rule": "spike", "version": 1, "sample": "nope"}),
            StatusCode::NOT_FOUND,
        ),
        (
            serde_json::json!({"rule": "spike", "version": 9, "events": ""}),
            StatusCode::NOT_FOUND,
        ),
        (
            serde_json::json!({"rule": "spike", "version": 1, "events": "", "labels": "{}"}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let r = t.post_json("/v1/backtests", &t.analyst, body.clone()).await;
        assert_eq!(r.status, want, "{body}: {}", r.text);
    }
    let r = t
        .call(
            "PUT",
            "/v1/samples/..%2Fx",
            Some(&t.analyst),
            Some("application/x-ndjson"),
            "{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // A long one is cancelled: it stops early, in state `cancelled`.
    let mut big = String::new();
    for i in 0..400_000 {
        big.push_str(&txn(
            &format!("e{i}"),
            &format!("2026-01-05T10:00:00.{:03}Z", i % 1000),
            &format!("k{}", i % 5000),
            1.0,
            "m",
        ));
        big.push('\n');
    }
    // Over this test's body limit: placed in the samples directory directly.
    let dir = t.sys.state.config.samples_dir.clone().expect("samples dir");
    std::fs::write(dir.join("big.jsonl"), &big).expect("write sample");
    let r = t
        .post_json(
            "/v1/backtests",
            &t.analyst,
            serde_json::json!({"rule": "spike", "version": 1, "sample": "big"}),
        )
        .await;
    let id = r.json["id"].as_str().expect("id").to_string();
    let r = t
        .call(
            "DELETE",
            &format!("/v1/backtests/{id}"),
            Some(&t.analyst),
            None,
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let done = backtest_result(&t, &id).await;
    assert_eq!(done["state"], "cancelled", "{done}");
    assert!(done["events_done"].as_u64() < Some(400_000), "{done}");
    assert_eq!(done["report"], serde_json::Value::Null);
    t.sys.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_reach_the_nodes_and_in_list_uses_them() {
    let t = setup().await;
    let r = t
        .post_json(
            "/v1/lists",
            &t.analyst,
            serde_json::json!({"name": "blocked", "entries": ["evil"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = t
        .post_json(
            "/v1/lists",
            &t.analyst,
            serde_json::json!({"name": "blocked"}),
        )
        .await;
    assert_eq!(
        (r.status, error_of(&r).1),
        (StatusCode::CONFLICT, "list `blocked` exists".into())
    );
    t.events(&[txn("l1", "2026-01-05T11:00:00Z", "k1", 5.0, "evil")])
        .await;
    t.wait_alerts("rule=blocked", 1).await;
    // Add an entry: the next event at that merchant alerts.
    let r = t
        .post_json(
            "/v1/lists/blocked/entries",
            &t.analyst,
            serde_json::json!({"entries": ["bad", "evil"]}),
        )
        .await;
    assert_eq!(r.json, serde_json::json!({"added": 1, "entries": 2}));
    t.events(&[txn("l2", "2026-01-05T11:00:01Z", "k2", 5.0, "bad")])
        .await;
    t.wait_alerts("rule=blocked", 2).await;
    // Remove it: no alert any more (a later alert would show up below).
    let r = t
        .call(
            "DELETE",
            "/v1/lists/blocked/entries",
            Some(&t.analyst),
            Some("application/json"),
            r#"{"entries":["bad"]}"#,
        )
        .await;
    assert_eq!(r.json, serde_json::json!({"removed": 1, "entries": 1}));
    // Bulk load from CSV replaces the list.
    let r = t
        .call(
            "PUT",
            "/v1/lists/blocked",
            Some(&t.analyst),
            Some("text/csv"),
            "value\nworse\n\"quoted\",x\n",
        )
        .await;
    assert_eq!(r.json, serde_json::json!({"name": "blocked", "entries": 2}));
    let r = t.get("/v1/lists/blocked", &t.viewer).await;
    assert_eq!(r.json["entries"], serde_json::json!(["quoted", "worse"]));
    t.events(&[
        txn("l3", "2026-01-05T11:00:02Z", "k3", 5.0, "bad"),
        txn("l4", "2026-01-05T11:00:03Z", "k4", 5.0, "worse"),
    ])
    .await;
    let a = t.wait_alerts("rule=blocked", 3).await;
    assert_eq!(a[0]["key"], "k4", "the newest alert is the CSV entry's");
    // l1..l4 processed and their alerts stored: l3's would be there now.
    t.wait_processed(4).await;
    let r = t.get("/v1/alerts?rule=blocked", &t.viewer).await;
    assert_eq!(
        r.json["alerts"].as_array().map(Vec::len),
        Some(3),
        "no alert for a removed entry"
    );
    // NDJSON bulk load, and errors.
    let r = t
        .call(
            "PUT",
            "/v1/lists/other",
            Some(&t.analyst),
            Some("application/x-ndjson"),
            "\"a\"\n{\"value\":\"b\"}\n",
        )
        .await;
    assert_eq!(r.json, serde_json::json!({"name": "other", "entries": 2}));
    let r = t
        .call(
            "PUT",
            "/v1/lists/other",
            Some(&t.analyst),
            Some("application/x-ndjson"),
            "1\n",
        )
        .await;
    assert_eq!(
        error_of(&r),
        (
            "bad_request".into(),
            "line 1: expected a string or {\"value\": \"...\"}".into()
        )
    );
    let r = t
        .post_json(
            "/v1/lists/none/entries",
            &t.analyst,
            serde_json::json!({"entries": ["x"]}),
        )
        .await;
    assert_eq!(
        (r.status, error_of(&r).1),
        (StatusCode::NOT_FOUND, "no list named `none`".into())
    );
    t.sys.shutdown().await;
}

/// The list caps of `config()`: 5 entries, 40 bytes, 16 bytes an entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_beyond_their_caps_are_refused_with_a_reason_and_change_nothing() {
    let t = setup().await;
    let too_many = serde_json::json!({"name": "big", "entries": ["a", "b", "c", "d", "e", "f"]});
    let r = t.post_json("/v1/lists", &t.analyst, too_many).await;
    assert_eq!(
        (r.status, error_of(&r)),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            (
                "list_too_large".into(),
                "list `big` would hold 6 entries of 6 bytes; a list holds at most 5 entries and 40 bytes".into()
            )
        )
    );
    assert_eq!(
        t.get("/v1/lists/big", &t.viewer).await.status,
        StatusCode::NOT_FOUND,
        "nothing was created"
    );
    // Duplicates count once.
    let r = t
        .post_json(
            "/v1/lists",
            &t.analyst,
            serde_json::json!({"name": "big", "entries": ["a", "a", "b", "b", "c", "d"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // One entry too long.
    let r = t
        .post_json(
            "/v1/lists/big/entries",
            &t.analyst,
            serde_json::json!({"entries": ["e", "x".repeat(17)]}),
        )
        .await;
    assert_eq!(
        (r.status, error_of(&r)),
        (
            StatusCode::BAD_REQUEST,
            (
                "list_entry_too_long".into(),
                "entry 2 of list `big` is 17 bytes; an entry is at most 16 bytes".into()
            )
        )
    );
    // Adding past the count: refused; adding what is there already: fine.
    let r = t
        .post_json(
            "/v1/lists/big/entries",
            &t.analyst,
            serde_json::json!({"entries": ["e", "f"]}),
        )
        .await;
    assert_eq!(
        (r.status, error_of(&r).0),
        (StatusCode::PAYLOAD_TOO_LARGE, "list_too_large".into())
    );
    let r = t
        .post_json(
            "/v1/lists/big/entries",
            &t.analyst,
            serde_json::json!({"entries": ["a", "e"]}),
        )
        .await;
    assert_eq!(r.json, serde_json::json!({"added": 1, "entries": 5}));
    // Past the bytes: three entries of 16 bytes are 48.
    let r = t
        .call(
            "PUT",
            "/v1/lists/big",
            Some(&t.analyst),
            Some("text/csv"),
            &format!(
                "{}\n{}\n{}\n",
                "1".repeat(16),
                "2".repeat(16),
                "3".repeat(16)
            ),
        )
        .await;
    assert_eq!(
        (r.status, error_of(&r)),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            (
                "list_too_large".into(),
                "list `big` would hold 3 entries of 48 bytes; a list holds at most 5 entries and 40 bytes".into()
            )
        )
    );
    let r = t
        .call(
            "PUT",
            "/v1/lists/big",
            Some(&t.analyst),
            Some("application/json"),
            &serde_json::json!(["y".repeat(17)]).to_string(),
        )
        .await;
    assert_eq!(
        (r.status, error_of(&r).0),
        (StatusCode::BAD_REQUEST, "list_entry_too_long".into())
    );
    let r = t.get("/v1/lists/big", &t.viewer).await;
    assert_eq!(
        r.json["entries"],
        serde_json::json!(["a", "b", "c", "d", "e"]),
        "refused changes changed nothing"
    );
    t.sys.shutdown().await;
}

/// `/test` and backtests run a version as the nodes would: with the stored
/// lists, and alerts that say that version and carry its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_and_backtest_use_the_stored_lists_and_the_versions_own_number() {
    let t = setup().await;
    let r = t
        .post_json(
            "/v1/lists",
            &t.analyst,
            serde_json::json!({"name": "blocked", "entries": ["evil"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v2 = BLOCKED.replace("within 1m", "within 2m");
    let r = t
        .call(
            "POST",
            "/v1/rules",
            Some(&t.analyst),
            Some("text/plain"),
            &v2,
        )
        .await;
    assert_eq!(r.json["version"], 2, "{}", r.text);
    let events = [
        txn("e1", "2026-01-05T12:00:00Z", "k1", 5.0, "evil"),
        txn("e2", "2026-01-05T12:00:01Z", "k2", 5.0, "fine"),
    ]
    .join("\n");
    let expected_id = |version: u32| {
        cep_engine::Alert::compute_id(
            "blocked",
            version,
            &cep_engine::Key::Str("k1".into()),
            &[("t".to_string(), vec!["e1".into()])],
            None,
        )
    };
    let mut ids = vec![];
    for v in [1u32, 2] {
        let r = t
            .call(
                "POST",
                &format!("/v1/rules/blocked/versions/{v}/test"),
                Some(&t.analyst),
                Some("application/x-ndjson"),
                &events,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let alerts = r.json["alerts"].as_array().cloned().unwrap_or_default();
        assert_eq!(alerts.len(), 1, "the stored list is used: {}", r.text);
        assert_eq!(
            (&alerts[0]["key"], &alerts[0]["version"], &alerts[0]["id"]),
            (
                &serde_json::json!("k1"),
                &serde_json::json!(v),
                &serde_json::json!(expected_id(v))
            ),
            "{}",
            r.text
        );
        ids.push(alerts[0]["id"].clone());
    }
    assert_ne!(ids[0], ids[1]);
    // A backtest of version 2 against 1 over the same events.
    let r = t
        .post_json(
            "/v1/backtests",
            &t.analyst,
            serde_json::json!({"rule": "blocked", "version": 2, "against": 1, "events": events}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.json["id"].as_str().expect("id").to_string();
    let done = backtest_result(&t, &id).await;
    let rep = &done["report"];
    assert_eq!(rep["alerts"], 1, "{done}");
    assert_eq!(
        (
            &rep["sample_alerts"][0]["version"],
            &rep["sample_alerts"][0]["id"]
        ),
        (&serde_json::json!(2), &ids[1]),
        "{done}"
    );
    assert_eq!(rep["diff"]["both"], 1, "{done}");
    t.sys.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_and_diff_versions() {
    let t = setup().await;
    let v2 = SPIKE.replace("amount * 5", "amount * 20");
    let r = t
        .call(
            "POST",
            "/v1/rules",
            Some(&t.analyst),
            Some("text/plain"),
            &v2,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        (
            r.json["rule"].as_str(),
            r.json["version"].as_u64(),
            r.json["created"].as_bool()
        ),
        (Some("spike"), Some(2), Some(true))
    );
    // The same text again is not a new version.
    let r = t
        .post_json("/v1/rules", &t.analyst, serde_json::json!({"text": v2}))
        .await;
    assert_eq!(
        (
            r.status,
            r.json["version"].as_u64(),
            r.json["created"].as_bool()
        ),
        (StatusCode::OK, Some(2), Some(false))
    );
    let events = [
        txn("t1", "2026-01-05T12:00:00Z", "c1", 1.0, "m"),
        txn("t2", "2026-01-05T12:00:01Z", "c1", 10.0, "m"),
        "garbage".to_string(),
    ]
    .join("\n");
    let r = t
        .call(
            "POST",
            "/v1/rules/spike/versions/1/test",
            Some(&t.analyst),
            Some("application/x-ndjson"),
            &events,
        )
        .await;
    assert_eq!(
        r.json["alerts"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.text
    );
    assert_eq!(r.json["rejected"][0]["line"], 3);
    let r = t
        .call(
            "POST",
            "/v1/rules/spike/versions/2/test",
            Some(&t.analyst),
            Some("application/x-ndjson"),
            &events,
        )
        .await;
    assert_eq!(r.json["alerts"].as_array().map(Vec::len), Some(0));
    // Diff over the gateway's recent events.
    t.events(&[
        txn("d1", "2026-01-05T12:00:00Z", "c1", 1.0, "m"),
        txn("d2", "2026-01-05T12:00:01Z", "c1", 10.0, "m"),
        txn("d3", "2026-01-05T12:00:02Z", "c2", 1.0, "m"),
        txn("d4", "2026-01-05T12:00:03Z", "c2", 50.0, "m"),
    ])
    .await;
    let r = t.get("/v1/rules/spike/diff?from=1&to=2", &t.viewer).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.json["text"]
            .as_str()
            .unwrap_or("")
            .contains("-  pattern a: Txn -> b: Txn[amount > a.amount * 5]"),
        "{}",
        r.text
    );
    assert!(
        r.json["text"]
            .as_str()
            .unwrap_or("")
            .contains("+  pattern a: Txn -> b: Txn[amount > a.amount * 20]")
    );
    assert_eq!(r.json["sample_events"], 4);
    assert_eq!(
        r.json["alerts"]["only_from"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.text
    );
    assert_eq!(r.json["alerts"]["only_from"][0]["key"], "c1");
    assert_eq!(
        r.json["alerts"]["only_to"].as_array().map(Vec::len),
        Some(0)
    );
    assert_eq!(r.json["alerts"]["both"], 1);
    t.sys.shutdown().await;
}

/// Shadow alerts are stored and tagged, never published to normal subscribers
/// (ZeroMQ `alert.` prefix, SSE without `shadow=true`); promoting to active
/// publishes; the audit log shows every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_then_promote_with_audit_trail() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let publ = format!("tcp://127.0.0.1:{port}");
    let t = setup_with(StoreConfig::Embedded(temp("data")), Some(publ.clone())).await;
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB).expect("SUB");
    sub.connect(&publ).expect("connect");
    sub.set_subscribe(b"alert.").expect("subscribe");
    sub.set_rcvtimeo(100).expect("timeout");
    let shadow_sub = ctx.socket(zmq::SUB).expect("SUB");
    shadow_sub.connect(&publ).expect("connect");
    shadow_sub
        .set_subscribe(b"shadow.alert.")
        .expect("subscribe");
    shadow_sub.set_rcvtimeo(100).expect("timeout");
    let mut normal_sse = t.sys.state.alerts.subscribe();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let rule = "rule twins {\n  severity medium\n  key card_id\n  pattern a: Txn -> b: Txn[amount == a.amount]\n  within 1m\n}\n";
    let r = t
        .call(
            "POST",
            "/v1/rules",
            Some(&t.analyst),
            Some("text/plain"),
            rule,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = t
        .post_json(
            "/v1/rules/twins/deploy",
            &t.analyst,
            serde_json::json!({"version": 1, "mode": "shadow"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json["status"].as_str()),
        (StatusCode::OK, Some("shadow")),
        "{}",
        r.text
    );
    t.events(&[
        txn("w1", "2026-01-05T13:00:00Z", "tw", 7.0, "m"),
        txn("w2", "2026-01-05T13:00:01Z", "tw", 7.0, "m"),
    ])
    .await;
    let shadow = t.wait_alerts("rule=twins&mode=shadow", 1).await;
    assert_eq!(shadow[0]["mode"], "shadow");
    // Only the shadow subscriber got it on ZeroMQ.
    let got = tokio::task::spawn_blocking(move || {
        let normal = sub.recv_multipart(0).ok();
        let sh = shadow_sub.recv_multipart(0).ok();
        (sub, shadow_sub, normal, sh)
    })
    .await
    .expect("join");
    let (sub, _shadow_sub, normal, sh) = got;
    assert!(
        normal.is_none(),
        "a normal subscriber must not see shadow alerts"
    );
    let sh = sh.expect("the shadow subscriber gets the shadow alert");
    assert_eq!(String::from_utf8_lossy(&sh[0]), "shadow.alert.medium.twins");
    // The SSE fan-out marks it shadow; the stream endpoint drops it without shadow=true.
    let a = normal_sse.recv().await.expect("broadcast");
    assert_eq!(a.mode, vigil_gateway::store::Mode::Shadow);

    // Promote: analyst may not, admin may.
    let r = t
        .post_json(
            "/v1/rules/twins/deploy",
            &t.analyst,
            serde_json::json!({"version": 1, "mode": "active"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = t
        .post_json(
            "/v1/rules/twins/deploy",
            &t.admin,
            serde_json::json!({"version": 1, "mode": "active"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json["status"].as_str()),
        (StatusCode::OK, Some("active"))
    );
    t.events(&[
        txn("w3", "2026-01-05T13:00:02Z", "tv", 8.0, "m"),
        txn("w4", "2026-01-05T13:00:03Z", "tv", 8.0, "m"),
    ])
    .await;
    let active = t.wait_alerts("rule=twins&mode=active", 1).await;
    assert!(
        active[0].get("mode").is_none(),
        "active alerts carry no mode field: {}",
        active[0]
    );
    let normal = tokio::task::spawn_blocking(move || {
        for _ in 0..30 {
            if let Ok(m) = sub.recv_multipart(0) {
                return Some(m);
            }
        }
        None
    })
    .await
    .expect("join")
    .expect("the normal subscriber gets the active alert");
    assert_eq!(String::from_utf8_lossy(&normal[0]), "alert.medium.twins");

    // The audit trail: who, what, before/after.
    let r = t.get("/v1/audit?limit=1000", &t.viewer).await;
    let trail: Vec<(String, String, serde_json::Value)> = r
        .json
        .as_array()
        .expect("audit")
        .iter()
        .filter(|e| e["target"] == "rule:twins")
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or("").to_string(),
                e["action"].as_str().unwrap_or("").to_string(),
                e["after"]["deployed"].clone(),
            )
        })
        .collect();
    assert_eq!(
        trail,
        vec![
            (
                "ana".into(),
                "rule.create_version".into(),
                serde_json::Value::Null
            ),
            (
                "ana".into(),
                "rule.deploy".into(),
                serde_json::json!([1, "shadow"])
            ),
            (
                "admin".into(),
                "rule.deploy".into(),
                serde_json::json!([1, "active"])
            ),
        ]
    );
    let promote = r
        .json
        .as_array()
        .and_then(|a| {
            a.iter()
                .rev()
                .find(|e| e["target"] == "rule:twins")
                .cloned()
        })
        .expect("entry");
    assert_eq!(
        promote["before"]["deployed"],
        serde_json::json!([1, "shadow"])
    );
    t.sys.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loses_no_rule_version_list_key_or_alert() {
    let data = temp("data");
    let rules = rules_dir();
    let t = {
        let sys = System::start(config(
            rules.clone(),
            StoreConfig::Embedded(data.clone()),
            None,
        ))
        .await
        .expect("start");
        let app = sys.app();
        let admin = sys.first_admin_key.clone().expect("admin");
        T {
            sys,
            app,
            admin,
            analyst: String::new(),
            viewer: String::new(),
        }
    };
    let analyst = t.new_key("ana", "analyst").await;
    let t = T {
        analyst: analyst.clone(),
        viewer: analyst.clone(),
        ..t
    };
    let v2 = SPIKE.replace("amount * 5", "amount * 6");
    t.call(
        "POST",
        "/v1/rules",
        Some(&t.analyst),
        Some("text/plain"),
        &v2,
    )
    .await;
    t.post_json(
        "/v1/lists",
        &t.analyst,
        serde_json::json!({"name": "blocked", "entries": ["x"]}),
    )
    .await;
    t.events(&[
        txn("r1", "2026-01-05T14:00:00Z", "z", 1.0, "m"),
        txn("r2", "2026-01-05T14:00:01Z", "z", 9.0, "m"),
    ])
    .await;
    let before = t.wait_alerts("", 1).await;
    let audit_before = t.get("/v1/audit?limit=1000", &t.admin).await.json;
    let T {
        sys, app, admin, ..
    } = t;
    drop(app);
    sys.shutdown().await;
    let t = T {
        sys: System::start(config(
            rules.clone(),
            StoreConfig::Embedded(data.clone()),
            None,
        ))
        .await
        .expect("restart"),
        app: axum::Router::new(),
        admin,
        analyst: String::new(),
        viewer: String::new(),
    };
    let T { sys, admin, .. } = t;

    assert!(
        sys.first_admin_key.is_none(),
        "keys survive: no new admin key"
    );
    let t = T {
        app: sys.app(),
        sys,
        admin,
        analyst: analyst.clone(),
        viewer: analyst,
    };
    assert_eq!(
        t.get("/v1/rules/spike/versions", &t.analyst)
            .await
            .json
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(
        t.get("/v1/lists/blocked", &t.analyst).await.json["entries"],
        serde_json::json!(["x"])
    );
    assert_eq!(
        t.get("/v1/alerts", &t.analyst).await.json["alerts"],
        serde_json::Value::Array(before)
    );
    assert_eq!(
        t.get("/v1/audit?limit=1000", &t.admin).await.json,
        audit_before
    );
    assert_eq!(t.get("/v1/keys", &t.admin).await.status, StatusCode::OK);
    // The rules run again: the same rule set is deployed.
    let r = t.get("/v1/rules", &t.analyst).await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(2), "{}", r.text);
    t.sys.shutdown().await;
}

//! The analyst console in a real headless Chromium, driven over WebDriver
//! (chromedriver + fantoccini) against a real `vigil-gateway` on its
//! embedded default: log in, write a rule with a mistake and see the inline
//! diagnostic, fix it, backtest it, deploy it to shadow, watch shadow alerts
//! arrive on the live stream, promote it, open an alert's explanation.
//!
//! Screenshots of every view are written to `target/console-screenshots/`.
//! Needs the Debian packages `chromium` and `chromium-driver` (the test
//! command, `.ci/test.sh`, installs them).

use fantoccini::{Client, ClientBuilder, Locator};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vigil_tests::*;

const SCHEMA: &str = "event Txn { card_id: string, amount: float, merchant: string }\n";

/// The rule the analyst writes; the mistake is a misspelt field.
const RULE_WITH_MISTAKE: &str = "rule big_after_small {\n  severity high\n  key card_id\n  pattern a: Txn -> b: Txn[amount > a.amont * 5]\n  within 10m\n  emit { big: b.amount }\n}\n";
const RULE: &str = "rule big_after_small {\n  severity high\n  key card_id\n  pattern a: Txn -> b: Txn[amount > a.amount * 5]\n  within 10m\n  emit { big: b.amount }\n}\n";

fn which(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: run `bash .ci/test.sh`, which installs the Debian packages chromium and chromium-driver")
        })
}

/// Where the screenshots go: `target/console-screenshots`.
fn shots_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/<test> → target
    let target = exe
        .ancestors()
        .nth(3)
        .map(PathBuf::from)
        .expect("target dir");
    let d = target.join("console-screenshots");
    std::fs::create_dir_all(&d).expect("screenshot dir");
    d
}

/// Transactions: per card a small charge then a second one; `big` cards get
/// one over five times the first (an alert each), the others not.
fn txns(prefix: &str, cards: &[(&str, bool)], start: chrono::DateTime<chrono::Utc>) -> Vec<String> {
    let mut out = vec![];
    for (i, (card, big)) in cards.iter().enumerate() {
        let t0 = start + chrono::Duration::seconds(i as i64 * 10);
        let t1 = t0 + chrono::Duration::seconds(5);
        let ts = |t: chrono::DateTime<chrono::Utc>| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        out.push(format!(
            r#"{{"id":"{prefix}-{card}-1","type":"Txn","ts":"{}","card_id":"{card}","amount":10.0,"merchant":"shop"}}"#,
            ts(t0)
        ));
        let amount = if *big { 90.0 } else { 12.0 };
        out.push(format!(
            r#"{{"id":"{prefix}-{card}-2","type":"Txn","ts":"{}","card_id":"{card}","amount":{amount},"merchant":"shop"}}"#,
            ts(t1)
        ));
    }
    out
}

/// Whether the element was replaced by a re-render after it was found.
fn is_stale(err: &fantoccini::error::CmdError) -> bool {
    matches!(err, fantoccini::error::CmdError::Standard(e)
        if e.error == fantoccini::error::ErrorStatus::StaleElementReference)
}

struct Browser {
    c: Client,
    base: String,
    shots: PathBuf,
    n: std::sync::atomic::AtomicUsize,
}

impl Browser {
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.c
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
    }

    /// Clicks like a user who scrolled it into the middle of the window
    /// (the header sticks to the top and would take a click at the edge).
    async fn click(&self, css: &str) {
        let e = self.scroll_to(css).await;
        e.click()
            .await
            .unwrap_or_else(|e| panic!("clicking `{css}`: {e}"));
    }

    async fn text(&self, css: &str) -> String {
        match self.c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Polls until the text of `css` satisfies `ok`; returns it.
    async fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < Duration::from_secs(30) {
            last = self.text(css).await;
            if ok(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.shot("failure").await;
        panic!("waiting for {what}: `{css}` reads {last:?}");
    }

    async fn count(&self, css: &str) -> usize {
        self.c
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |v| v.len())
    }

    async fn go(&self, hash: &str) {
        self.c
            .goto(&format!("{}/{hash}", self.base))
            .await
            .expect("navigate");
    }

    /// Replaces the text of `css` like a user would. The console re-renders
    /// a view when the server answers (a promotion, a save), which can
    /// replace the element between finding and typing: a stale element is
    /// found again, and plain text is read back until the field holds it.
    async fn type_into(&self, css: &str, text: &str) {
        let plain = !text.chars().any(|c| ('\u{E000}'..='\u{F8FF}').contains(&c));
        let start = Instant::now();
        loop {
            let e = self.find(css).await;
            let typed = match e.clear().await {
                Ok(()) => e.send_keys(text).await,
                Err(err) => Err(err),
            };
            let settled = match typed {
                Ok(()) if !plain => return,
                Ok(()) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let value = self.find(css).await.prop("value").await;
                    matches!(value, Ok(Some(v)) if v == text)
                }
                Err(err) if is_stale(&err) => false,
                Err(err) => panic!("typing into `{css}`: {err}"),
            };
            if settled {
                return;
            }
            if start.elapsed() > Duration::from_secs(20) {
                self.shot("failure").await;
                panic!("typing into `{css}`: the field never held the text");
            }
        }
    }

    /// A screenshot with `css` scrolled into the middle of the window.
    async fn shot_at(&self, css: &str, name: &str) {
        self.scroll_to(css).await;
        self.shot(name).await;
    }

    /// Finds `css` and scrolls it into the middle of the window.
    async fn scroll_to(&self, css: &str) -> fantoccini::elements::Element {
        let e = self.find(css).await;
        let arg = serde_json::to_value(&e).expect("element reference");
        self.c
            .execute("arguments[0].scrollIntoView({block: 'center'});", vec![arg])
            .await
            .expect("scroll into view");
        e
    }

    /// The alerts view, watching shadow alerts.
    async fn watch_shadow_alerts(&self) {
        self.go("#/alerts").await;
        self.find("#f-mode")
            .await
            .select_by_value("shadow")
            .await
            .expect("select shadow");
        self.click("form[aria-label='Alert filters'] button[type=submit]")
            .await;
    }

    /// Polls until at least `n` elements match `css` or `timeout` passes;
    /// returns how many match then.
    async fn wait_count(&self, css: &str, n: usize, timeout: Duration) -> usize {
        let start = Instant::now();
        while self.count(css).await < n && start.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.count(css).await
    }

    /// A screenshot of the view; every view shot is also checked for form
    /// controls without a label (screen readers would announce nothing).
    async fn shot(&self, name: &str) {
        let n = self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let png = self.c.screenshot().await.expect("screenshot");
        let path = self.shots.join(format!("{n:02}-{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        if name != "failure" {
            let unlabelled = self
                .c
                .execute(
                    r#"return [...document.querySelectorAll("input, select, textarea, button")]
                        .filter((e) => e.type !== "hidden" && e.offsetParent !== null)
                        .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label")
                            && !e.getAttribute("aria-labelledby") && !e.textContent.trim())
                        .map((e) => e.outerHTML.slice(0, 120));"#,
                    vec![],
                )
                .await
                .expect("label check");
            assert_eq!(
                unlabelled,
                serde_json::json!([]),
                "unlabelled controls in {name}"
            );
        }
    }

    /// Errors the page reported (uncaught exceptions, console.error, CSP
    /// violations) since [`Browser::watch_errors`].
    async fn errors(&self) -> Vec<String> {
        let v = self
            .c
            .execute("return window.__vigilErrors || null;", vec![])
            .await
            .expect("read errors");
        serde_json::from_value::<Option<Vec<String>>>(v)
            .ok()
            .flatten()
            .unwrap_or_else(|| vec!["the error hook was lost (the page reloaded)".into()])
    }

    async fn watch_errors(&self) {
        self.c
            .execute(
                r#"window.__vigilErrors = [];
                window.addEventListener("error", (e) => window.__vigilErrors.push("error: " + e.message));
                window.addEventListener("unhandledrejection", (e) => window.__vigilErrors.push("rejection: " + e.reason));
                document.addEventListener("securitypolicyviolation", (e) => window.__vigilErrors.push("CSP: " + e.violatedDirective));
                const ce = console.error.bind(console);
                console.error = (...a) => { window.__vigilErrors.push("console.error: " + a.join(" ")); ce(...a); };"#,
                vec![],
            )
            .await
            .expect("install error hook");
    }

    /// Logs in with the keyboard: the key, then Enter.
    async fn login(&self, key: &str) {
        self.go("#/login").await;
        let enter = char::from(fantoccini::key::Key::Enter);
        self.type_into("#key", &format!("{key}{enter}")).await;
        self.find("#logout").await;
        self.wait_text("#who", "the logged-in name", |t| !t.is_empty())
            .await;
    }
}

/// `POST`/`PUT` with a key; (status, JSON body).
fn call(
    http: &str,
    method: &str,
    path: &str,
    key: &str,
    ct: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let (status, text) = http_request(
        http,
        method,
        path,
        &[
            ("Authorization", &format!("Bearer {key}")),
            ("Content-Type", ct),
        ],
        body,
    )
    .unwrap_or_else(|| panic!("{method} {path}: no answer"));
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

fn get(http: &str, path: &str, key: &str) -> serde_json::Value {
    let (s, v) = call(http, "GET", path, key, "application/json", "");
    assert_eq!(s, 200, "GET {path}: {v}");
    v
}

fn rule_status(http: &str, key: &str) -> String {
    get(http, "/v1/rules/big_after_small", key)["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_writes_backtests_shadows_and_an_admin_promotes_in_the_browser() {
    let chromium = which("chromium");
    let driver_bin = which("chromedriver");
    // The gateway on its embedded default (in-process nodes, embedded store).
    let rules = fresh_dir("console-rules");
    std::fs::write(rules.join("events.vgl"), SCHEMA).expect("schema");
    let ep = Endpoints::fresh();
    let data = fresh_dir("console-data");
    let gw = start_gateway_in(&data, &rules, &[], &ep, &[]);
    let admin = gw
        .output()
        .lines()
        .skip_while(|l| !l.contains("shown only this once"))
        .nth(1)
        .map(|l| l.trim().to_string())
        .expect("the first start prints the admin key");
    let (s, v) = call(
        &ep.http,
        "POST",
        "/v1/keys",
        &admin,
        "application/json",
        r#"{"name":"ana","role":"analyst"}"#,
    );
    assert_eq!(s, 201, "{v}");
    let analyst = v["key"].as_str().expect("key").to_string();

    let port = free_port();
    let _driver = Proc::spawn(
        "chromedriver",
        std::process::Command::new(driver_bin).arg(format!("--port={port}")),
    );
    wait_until("chromedriver", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1366,900"],
        }),
    );
    let c = ClientBuilder::native()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("WebDriver session");
    let b = Browser {
        c,
        base: format!("http://{}", ep.http),
        shots: shots_dir(),
        n: Default::default(),
    };

    // Log in as the analyst.
    b.go("").await;
    b.watch_errors().await;
    b.find("#key").await;
    b.shot("login").await;
    b.login(&analyst).await;
    b.wait_text("#who", "who is logged in", |t| {
        t.contains("ana") && t.contains("analyst")
    })
    .await;

    // A new rule, with a mistake: the inline diagnostic names it.
    b.go("#/editor").await;
    b.type_into("#text", RULE_WITH_MISTAKE).await;
    let diag = b
        .wait_text("#diags", "the inline diagnostic", |t| t.contains("amont"))
        .await;
    assert!(diag.contains("4:"), "the diagnostic gives the line: {diag}");
    assert!(b.count("#diags .diag.error").await >= 1, "{diag}");
    assert!(
        b.count(".hl .mark-error").await >= 1,
        "the line is marked in the editor"
    );
    b.shot("editor-diagnostic").await;
    // Fixed: it compiles; saved as version 1.
    b.type_into("#text", RULE).await;
    b.wait_text("#diags", "the rule compiling", |t| t.contains("compiles"))
        .await;
    assert_eq!(b.count("#diags .diag.error").await, 0);
    b.click("#save").await;
    wait_until("the rule saved", Duration::from_secs(20), || {
        call(
            &ep.http,
            "GET",
            "/v1/rules/big_after_small/versions",
            &analyst,
            "application/json",
            "",
        )
        .0 == 200
    });
    b.find("#deploy-shadow").await;
    // The compiled program on demand.
    b.click("#show-program").await;
    b.wait_text("#program", "the NFA dump", |t| {
        t.contains("rule big_after_small") && t.contains("within")
    })
    .await;
    b.shot("editor-program").await;
    // Promoting needs the admin role: disabled, with the reason shown.
    let promote = b.find("#promote").await;
    assert!(
        promote.attr("disabled").await.expect("attr").is_some(),
        "promote is disabled for an analyst"
    );
    let why = b.text("#promote-why").await;
    assert!(why.contains("admin"), "the reason is shown: {why:?}");

    // Backtest on a JSONL sample uploaded from a file: three of four cards
    // go big; cards c1 and c2 are labelled fraud.
    let sample = txns(
        "bt",
        &[("c1", true), ("c2", false), ("c3", true), ("c4", true)],
        chrono::Utc::now() - chrono::Duration::hours(2),
    );
    let sample_file = fresh_dir("console-sample").join("cards.jsonl");
    std::fs::write(&sample_file, sample.join("\n")).expect("sample file");
    b.find("#bt-file")
        .await
        .send_keys(&sample_file.display().to_string())
        .await
        .expect("choose the file");
    b.wait_text("#bt-sample-note", "the upload", |t| t.contains("Uploaded"))
        .await;
    let picked = b
        .find("#bt-sample")
        .await
        .prop("value")
        .await
        .expect("value");
    assert_eq!(
        picked.as_deref(),
        Some("cards"),
        "the uploaded sample is picked"
    );
    b.type_into("#bt-labels", "{\"key\": \"c1\"}\n{\"key\": \"c2\"}\n")
        .await;
    b.click("#run-backtest").await;
    let n = b
        .wait_text("#bt-alerts", "the backtest's alert count", |t| {
            !t.is_empty()
        })
        .await;
    assert_eq!(n.trim(), "3", "three alerts in the backtest");
    // One of the three is on a labelled card (precision 1/3); one of the
    // two labelled cards is found (recall 1/2).
    assert_eq!(b.text("#bt-precision").await, "33.3%");
    assert_eq!(b.text("#bt-recall").await, "50.0%");
    b.find("#bt-results svg").await;
    b.shot_at("#bt-results", "backtest").await;

    // Deploy to shadow, through the confirmation.
    b.click("#deploy-shadow").await;
    b.find("#deploy-dialog[open]").await;
    b.shot("deploy-confirm").await;
    b.click("#confirm").await;
    let http = ep.http.clone();
    let key = analyst.clone();
    wait_until("deployed in shadow", Duration::from_secs(20), || {
        rule_status(&http, &key) == "shadow"
    });

    // Watch the shadow stream, then send events: the alerts arrive live.
    b.watch_shadow_alerts().await;
    b.wait_text("#live", "the live stream", |t| t.contains("live"))
        .await;
    let live = txns(
        "live",
        &[("d1", true), ("d2", true), ("d3", false)],
        chrono::Utc::now() - chrono::Duration::minutes(5),
    );
    let (s, v) = call(
        &ep.http,
        "POST",
        "/v1/events",
        &analyst,
        "application/x-ndjson",
        &live.join("\n"),
    );
    assert_eq!((s, v["accepted"].as_u64()), (200, Some(6)), "{v}");
    assert_eq!(
        b.wait_count("#alerts-body a.mono", 2, Duration::from_secs(30))
            .await,
        2,
        "two shadow alerts in the stream"
    );
    let rows = b.text("#alerts-body").await;
    assert!(
        rows.contains("shadow") && rows.contains("d1") && rows.contains("d2"),
        "{rows}"
    );
    // The hourly chart follows the stream.
    b.find("section[aria-labelledby='aph-h'] svg[aria-label^='2 alerts']")
        .await;
    b.shot("alerts-shadow-stream").await;

    // The rules view lists it, in shadow, with today's alerts in its chart.
    b.go("#/rules").await;
    b.wait_text("main", "the rules table", |t| {
        t.contains("big_after_small") && t.contains("shadow")
    })
    .await;
    b.shot("rules").await;

    // The admin promotes it (the confirmation shows what goes live).
    b.click("#logout").await;
    b.login(&admin).await;
    b.go("#/editor/big_after_small").await;
    b.find("#promote:not([disabled])").await;
    b.click("#promote").await;
    b.find("#deploy-dialog[open]").await;
    b.click("#confirm").await;
    let http = ep.http.clone();
    let key = admin.clone();
    wait_until("promoted to active", Duration::from_secs(20), || {
        rule_status(&http, &key) == "active"
    });

    // A stricter v2, backtested against the deployed v1: the diff shows the
    // alerts only v1 raises.
    b.type_into("#text", &RULE.replace("a.amount * 5", "a.amount * 8"))
        .await;
    b.wait_text("#diags", "v2 compiling", |t| t.contains("compiles"))
        .await;
    b.click("#save").await;
    let http = ep.http.clone();
    let key = admin.clone();
    wait_until("v2 saved", Duration::from_secs(20), || {
        get(&http, "/v1/rules/big_after_small/versions", &key)
            .as_array()
            .is_some_and(|v| v.len() == 2)
    });
    b.wait_text("#bt-target", "the backtest target v2", |t| t.contains("v2"))
        .await;
    // Two cards at x6 (only v1 fires), one at x9 (both fire: v2 wants over x8).
    let diff_sample: Vec<String> = txns(
        "df",
        &[("e1", true), ("e2", true)],
        chrono::Utc::now() - chrono::Duration::hours(1),
    )
    .into_iter()
    .map(|l| l.replace("\"amount\":90", "\"amount\":60"))
    .chain(txns(
        "dg",
        &[("e3", true)],
        chrono::Utc::now() - chrono::Duration::minutes(50),
    ))
    .collect();
    b.find("#bt-sample")
        .await
        .select_by_value("")
        .await
        .expect("no sample");
    b.type_into("#bt-labels", "").await;
    b.type_into("#bt-events", &diff_sample.join("\n")).await;
    b.click("#run-backtest").await;
    b.wait_text("#bt-alerts", "the v2 backtest", |t| t.trim() == "1")
        .await;
    assert_eq!(
        b.text("#bt-only-old").await,
        "2",
        "x6 charges: only v1 fires"
    );
    assert_eq!(b.text("#bt-both").await, "1");
    assert_eq!(b.text("#bt-only-new").await, "0");
    b.shot_at("#bt-diff", "backtest-diff").await;

    // An alert's explanation: bindings with their events and the fields the
    // predicates read, the time span against `within`, the emitted fields.
    b.watch_shadow_alerts().await;
    b.wait_count("#alerts-body a.mono", 2, Duration::from_secs(20))
        .await;
    b.click("#alerts-body a.mono").await;
    let span = b
        .wait_text("#time-span", "the time span", |t| !t.is_empty())
        .await;
    assert!(
        span.contains("5s") && span.contains("10m"),
        "the 5 s span against the 10 m window: {span}"
    );
    let page = b.text("main").await;
    assert!(page.contains("a.amount"), "the predicate is shown: {page}");
    assert!(page.contains("90"), "the big charge is shown: {page}");
    let emitted = b.text("#emitted").await;
    assert!(
        emitted.contains("big") && emitted.contains("90"),
        "{emitted}"
    );
    b.shot("alert-explanation").await;

    // The audit log has every step.
    b.go("#/audit").await;
    b.wait_text("main", "the audit log", |t| t.contains("rule.deploy"))
        .await;
    b.shot("audit").await;

    let errors = b.errors().await;
    assert!(errors.is_empty(), "the page reported errors: {errors:?}");
    b.c.close().await.expect("close the browser");
    drop(gw);
    let _ = std::fs::remove_dir_all(rules);
    let _ = std::fs::remove_dir_all(data);
}

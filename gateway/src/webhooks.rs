//! Alert delivery to webhook endpoints, per the Standard Webhooks convention.
//!
//! * **Signing**: `webhook-id` (the message id, the same on every retry),
//!   `webhook-timestamp` (unix seconds of the attempt) and `webhook-signature:
//!   v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the key is
//!   the base64-decoded part of the `whsec_…` secret. During a rotation's grace
//!   period every valid secret signs, space-separated.
//! * **Delivery**: every new alert becomes one pending delivery per matching
//!   endpoint, kept in the store (so it survives restarts) and de-duplicated by
//!   (endpoint, alert id) for a bounded window. One worker per endpoint sends in
//!   creation order with a small in-flight window, so a slow endpoint delays
//!   only itself. A failure is retried on the schedule (exponential, with
//!   jitter; `Retry-After` honoured on 429/503); after the last retry the
//!   message is dead-lettered, listable and re-sendable. 410 disables the
//!   endpoint. Every attempt is logged per endpoint.
//! * **SSRF guard** ([`crate::ssrf`]): endpoints that resolve to any address
//!   that is not globally reachable are refused (loopback and private ones
//!   can be allowed explicitly), at registration and at every attempt; the
//!   delivery client resolves names through the guard, so it connects only to
//!   addresses that were checked.

use crate::store::{Delivery, DeliveryAttempt, Mode, Store, StoredAlert, Webhook};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tracing::{info, warn};

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Delay before each retry: `schedule[0]` after the first failure, …; after
    /// the last one the message is dead-lettered.
    pub schedule: Vec<Duration>,
    /// Time limit of one attempt.
    pub timeout: Duration,
    /// An alert id is delivered once per endpoint within this window.
    pub dedup_window: Duration,
    /// How long a rotated-out secret still signs.
    pub rotation_grace: Duration,
    /// Attempts in flight per endpoint.
    pub concurrency: usize,
    /// Allow endpoints on loopback addresses (tests, local receivers).
    pub allow_loopback: bool,
    /// Allow endpoints on private / link-local addresses.
    pub allow_private: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        // The Standard Webhooks schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
        // 10 h — the last retry about 27.6 h after the first attempt.
        let s = Duration::from_secs;
        WebhookConfig {
            schedule: vec![s(5), s(300), s(1800), s(7200), s(18000), s(36000), s(36000)],
            timeout: s(10),
            dedup_window: s(24 * 3600),
            rotation_grace: s(24 * 3600),
            concurrency: 4,
            allow_loopback: false,
            allow_private: false,
        }
    }
}

/// Parses a schedule like `5s,5m,30m`.
pub fn parse_schedule(s: &str) -> Result<Vec<Duration>, String> {
    s.split(',')
        .map(|p| {
            rule_lang::parse_duration(p.trim()).map(|ms| Duration::from_millis(ms.max(0) as u64))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Signing

/// A new secret: `whsec_` and 24 random bytes in base64.
pub fn new_secret() -> anyhow::Result<String> {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(format!("whsec_{}", B64.encode(b)))
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{ts}.{body}")>` for one secret.
pub fn sign(secret: &str, msg_id: &str, ts: i64, body: &str) -> anyhow::Result<String> {
    let key = B64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|e| anyhow::anyhow!("bad webhook secret: {e}"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)
        .map_err(|e| anyhow::anyhow!("bad webhook secret: {e}"))?;
    mac.update(format!("{msg_id}.{ts}.{body}").as_bytes());
    Ok(format!("v1,{}", B64.encode(mac.finalize().into_bytes())))
}

/// The `webhook-signature` header: one signature per secret valid at `now_ms`.
pub fn signature_header(
    w: &Webhook,
    msg_id: &str,
    ts: i64,
    body: &str,
    now_ms: i64,
) -> anyhow::Result<String> {
    let mut sigs = vec![];
    for s in &w.secrets {
        if s.expires_at.is_none_or(|e| e > now_ms) {
            sigs.push(sign(&s.secret, msg_id, ts, body)?);
        }
    }
    Ok(sigs.join(" "))
}

// ---------------------------------------------------------------------------
// SSRF guard

/// Checks a webhook URL: http(s), and every address its host resolves to is
/// allowed. The error says why, for the API to show.
pub async fn check_url(url: &str, cfg: &WebhookConfig) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "`{url}`: only http and https endpoints are allowed"
        ));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("`{url}` has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("`{host}` does not resolve: {e}"))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("`{host}` does not resolve"));
    }
    for ip in addrs {
        if let Some(r) = crate::ssrf::check_ip(ip, cfg.allow_loopback, cfg.allow_private) {
            let kind = r.describe();
            let carried = match ip {
                IpAddr::V6(v6) => crate::ssrf::embedded_ipv4(v6)
                    .map(|v4| format!(" (IPv4 {v4})"))
                    .unwrap_or_default(),
                IpAddr::V4(_) => String::new(),
            };
            return Err(format!(
                "`{host}` resolves to {ip}{carried}, a {kind} address: webhook endpoints must be public{}",
                if r == crate::ssrf::Refusal::Loopback {
                    " (start the gateway with --webhook-allow-loopback to allow loopback)"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Filters

fn severity_rank(s: &str) -> u8 {
    match s {
        "low" => 0,
        "medium" => 1,
        "high" => 2,
        "critical" => 3,
        _ => 0,
    }
}

/// Does an alert (with its rule's tags) go to this endpoint?
pub fn matches(w: &Webhook, a: &StoredAlert, rule_tags: &[String]) -> bool {
    w.disabled.is_none()
        && (a.mode == Mode::Active || w.include_shadow)
        && (w.rules.is_empty() || w.rules.contains(&a.rule))
        && (w.tags.is_empty() || w.tags.iter().any(|t| rule_tags.contains(t)))
        && w.min_severity
            .as_deref()
            .is_none_or(|m| severity_rank(&a.severity) >= severity_rank(m))
}

// ---------------------------------------------------------------------------
// The dispatcher

/// Delivery counters for `/metrics`.
#[derive(Debug, Default)]
pub struct DeliveryMetrics {
    pub outcomes: Mutex<BTreeMap<&'static str, u64>>,
    pub pending: AtomicU64,
    pub oldest_pending_age_ms: AtomicU64,
    /// Per endpoint: the age of its oldest pending delivery, ms (0: none).
    /// A hanging or failing endpoint shows here while the others stay 0.
    pub oldest_pending_by_webhook: Mutex<BTreeMap<String, u64>>,
}

impl DeliveryMetrics {
    fn count(&self, outcome: &'static str) {
        if let Ok(mut m) = self.outcomes.lock() {
            *m.entry(outcome).or_default() += 1;
        }
    }

    pub fn prometheus(&self) -> String {
        let mut o = String::from(
            "# HELP vigil_webhook_attempts_total webhook delivery attempts by outcome\n# TYPE vigil_webhook_attempts_total counter\n",
        );
        for (k, v) in self.outcomes.lock().map(|m| m.clone()).unwrap_or_default() {
            o.push_str(&format!(
                "vigil_webhook_attempts_total{{outcome=\"{k}\"}} {v}\n"
            ));
        }
        o.push_str(&format!(
            "# HELP vigil_webhook_pending deliveries waiting (first attempt or retry)\n# TYPE vigil_webhook_pending gauge\nvigil_webhook_pending {}\n",
            self.pending.load(Ordering::Relaxed)
        ));
        o.push_str(&format!(
            "# HELP vigil_webhook_oldest_pending_seconds age of the oldest pending delivery\n# TYPE vigil_webhook_oldest_pending_seconds gauge\nvigil_webhook_oldest_pending_seconds {}\n",
            self.oldest_pending_age_ms.load(Ordering::Relaxed) as f64 / 1000.0
        ));
        o.push_str("# HELP vigil_webhook_endpoint_oldest_pending_seconds age of the oldest pending delivery of each endpoint (0: none pending)\n# TYPE vigil_webhook_endpoint_oldest_pending_seconds gauge\n");
        for (w, ms) in self
            .oldest_pending_by_webhook
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
        {
            o.push_str(&format!(
                "vigil_webhook_endpoint_oldest_pending_seconds{{webhook=\"{w}\"}} {}\n",
                ms as f64 / 1000.0
            ));
        }
        o
    }
}

pub struct Dispatcher {
    store: Store,
    cfg: WebhookConfig,
    client: reqwest::Client,
    workers: Mutex<HashMap<String, Arc<Notify>>>,
    /// The registered endpoints, read once per second at most (every alert
    /// consults them); changes made through this gateway invalidate it.
    endpoints: Mutex<Option<(Instant, Arc<Vec<Webhook>>)>>,
    /// Background tasks (workers, the metrics refresher), aborted by [`Dispatcher::stop`].
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub metrics: Arc<DeliveryMetrics>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Dispatcher {
    pub fn new(store: Store, cfg: WebhookConfig) -> anyhow::Result<Arc<Dispatcher>> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // Names resolve through the SSRF guard: the addresses checked
            // are the ones connected to (no DNS rebinding between the two).
            .dns_resolver(Arc::new(crate::ssrf::GuardedResolver {
                allow_loopback: cfg.allow_loopback,
                allow_private: cfg.allow_private,
            }))
            // No proxy from the environment: it would connect on our behalf
            // to an address the guard never saw.
            .no_proxy()
            .user_agent(concat!("vigil-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Arc::new(Dispatcher {
            store,
            cfg,
            client,
            workers: Mutex::new(HashMap::new()),
            endpoints: Mutex::new(None),
            tasks: Mutex::new(vec![]),
            metrics: Arc::new(DeliveryMetrics::default()),
        }))
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.cfg
    }

    /// Starts a worker for every endpoint with pending work, and the metrics
    /// refresher. Call once at start (resumes deliveries after a restart).
    pub async fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        for w in self.store.webhooks().await? {
            self.wake(&w.id);
        }
        let me = self.clone();
        self.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Ok((n, oldest)) = me.store.pending_stats().await {
                    me.metrics.pending.store(n, Ordering::Relaxed);
                    let age = oldest.map_or(0, |t| (now_ms() - t).max(0) as u64);
                    me.metrics
                        .oldest_pending_age_ms
                        .store(age, Ordering::Relaxed);
                    // Per endpoint (its oldest first in its queue).
                    let mut by = BTreeMap::new();
                    if let Ok(hooks) = me.endpoints().await {
                        for w in hooks.iter() {
                            let age = if n == 0 {
                                0
                            } else {
                                me.store
                                    .pending_for(&w.id, 1)
                                    .await
                                    .ok()
                                    .and_then(|d| d.first().map(|d| d.created_at))
                                    .map_or(0, |t| (now_ms() - t).max(0) as u64)
                            };
                            by.insert(w.id.clone(), age);
                        }
                    }
                    if let Ok(mut m) = me.metrics.oldest_pending_by_webhook.lock() {
                        *m = by;
                    }
                }
            }
        });
        Ok(())
    }

    /// Forgets the cached endpoint list (after a change through the API).
    pub fn invalidate(&self) {
        if let Ok(mut c) = self.endpoints.lock() {
            *c = None;
        }
    }

    async fn endpoints(&self) -> anyhow::Result<Arc<Vec<Webhook>>> {
        if let Ok(c) = self.endpoints.lock()
            && let Some((at, list)) = c.as_ref()
            && at.elapsed() < Duration::from_secs(1)
        {
            return Ok(list.clone());
        }
        let list = Arc::new(self.store.webhooks().await?);
        if let Ok(mut c) = self.endpoints.lock() {
            *c = Some((Instant::now(), list.clone()));
        }
        Ok(list)
    }

    /// A new alert: one pending delivery per matching endpoint.
    pub async fn on_alert(
        self: &Arc<Self>,
        a: &StoredAlert,
        rule_tags: &[String],
    ) -> anyhow::Result<()> {
        let hooks = self.endpoints().await?;
        if hooks.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let body = serde_json::json!({
            "type": "alert.created",
            "timestamp": cep_engine::time::format_ms(now),
            "data": a.alert,
        })
        .to_string();
        for w in hooks.iter().filter(|w| matches(w, a, rule_tags)) {
            self.enqueue(w, &a.id, &body, now).await?;
        }
        Ok(())
    }

    async fn enqueue(
        self: &Arc<Self>,
        w: &Webhook,
        alert_id: &str,
        body: &str,
        now: i64,
    ) -> anyhow::Result<bool> {
        let d = Delivery {
            webhook: w.id.clone(),
            msg_id: format!("msg_{alert_id}"),
            alert_id: alert_id.to_string(),
            body: body.to_string(),
            attempts: 0,
            next_at: now,
            created_at: now,
            last_status: None,
            last_error: None,
        };
        let until = now + self.cfg.dedup_window.as_millis() as i64;
        let new = self.store.enqueue_delivery(&d, until).await?;
        if new {
            self.wake(&w.id);
        } else {
            self.metrics.count("duplicate");
        }
        Ok(new)
    }

    /// Re-sends a dead letter (same message id, attempts from zero).
    pub async fn resend(self: &Arc<Self>, webhook: &str, msg_id: &str) -> anyhow::Result<bool> {
        let Some(mut d) = self.store.take_dead_letter(webhook, msg_id).await? else {
            return Ok(false);
        };
        d.attempts = 0;
        d.next_at = now_ms();
        d.created_at = d.next_at;
        // An explicit re-send must not be swallowed by the dedup window: it is
        // recorded under its own dedup entry (the message id, and so the
        // `webhook-id` header, stays the same).
        d.alert_id = format!("{}#resend-{}", d.alert_id, d.created_at);
        self.store.enqueue_delivery(&d, d.created_at + 1).await?;
        self.wake(webhook);
        Ok(true)
    }

    /// Wakes (or starts) an endpoint's worker.
    pub fn wake(self: &Arc<Self>, webhook: &str) {
        let Ok(mut workers) = self.workers.lock() else {
            return;
        };
        if let Some(n) = workers.get(webhook) {
            n.notify_one();
            return;
        }
        let notify = Arc::new(Notify::new());
        workers.insert(webhook.to_string(), notify.clone());
        let me = self.clone();
        let id = webhook.to_string();
        drop(workers);
        self.spawn(async move { me.worker(id, notify).await });
    }

    fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        let h = tokio::spawn(f);
        if let Ok(mut t) = self.tasks.lock() {
            t.retain(|h| !h.is_finished());
            t.push(h);
        }
    }

    /// Stops every worker (pending deliveries stay in the store).
    pub async fn stop(&self) {
        let tasks = self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        if let Ok(mut w) = self.workers.lock() {
            w.clear();
        }
    }

    /// One endpoint: send due deliveries in creation order, at most
    /// `concurrency` at once; sleep until the next is due or new work arrives.
    async fn worker(self: Arc<Self>, id: String, notify: Arc<Notify>) {
        let mut in_flight: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
        let mut busy: std::collections::HashSet<String> = std::collections::HashSet::new();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        loop {
            let w = match self.store.webhook(&id).await {
                Ok(Some(w)) => w,
                Ok(None) => break, // deleted
                Err(e) => {
                    warn!(webhook = %id, error = %e, "store unavailable; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut next_due: Option<i64> = None;
            if w.disabled.is_none() {
                let pending = self.store.pending_for(&id, 1024).await.unwrap_or_default();
                let now = now_ms();
                for d in pending {
                    if busy.contains(&d.msg_id) {
                        continue;
                    }
                    if d.next_at > now {
                        next_due = Some(next_due.map_or(d.next_at, |n: i64| n.min(d.next_at)));
                        continue;
                    }
                    if busy.len() >= self.cfg.concurrency.max(1) {
                        break;
                    }
                    busy.insert(d.msg_id.clone());
                    let (me, w2, tx) = (self.clone(), w.clone(), done_tx.clone());
                    in_flight.spawn(async move {
                        let msg = d.msg_id.clone();
                        me.attempt(&w2, d).await;
                        let _ = tx.send(msg);
                    });
                }
            }
            let sleep = next_due.map_or(Duration::from_secs(3600), |t| {
                Duration::from_millis((t - now_ms()).clamp(0, 3_600_000) as u64)
            });
            tokio::select! {
                Some(msg) = done_rx.recv() => { busy.remove(&msg); }
                _ = notify.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
            while let Some(r) = in_flight.try_join_next() {
                let _ = r;
            }
        }
        if let Ok(mut workers) = self.workers.lock() {
            workers.remove(&id);
        }
    }

    /// One attempt of one delivery, and what follows from its outcome.
    async fn attempt(&self, w: &Webhook, mut d: Delivery) {
        let now = now_ms();
        let ts = now / 1000;
        d.attempts += 1;
        let started = Instant::now();
        let result = match signature_header(w, &d.msg_id, ts, &d.body, now) {
            Err(e) => Err(e.to_string()),
            Ok(sig) => {
                // Re-check the address at send time (DNS can change).
                match check_url(&w.url, &self.cfg).await {
                    Err(e) => Err(e),
                    Ok(()) => self
                        .client
                        .post(&w.url)
                        .header("content-type", "application/json")
                        .header("webhook-id", &d.msg_id)
                        .header("webhook-timestamp", ts.to_string())
                        .header("webhook-signature", sig)
                        .body(d.body.clone())
                        .send()
                        .await
                        .map_err(|e| e.to_string()),
                }
            }
        };
        let latency_ms = started.elapsed().as_millis() as u64;
        let (status, error, retry_after) = match &result {
            Ok(r) => {
                let ra = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                (Some(r.status().as_u16()), None, ra)
            }
            Err(e) => (None, Some(e.clone()), None),
        };
        d.last_status = status;
        d.last_error = error.clone();
        let outcome: &'static str = match status {
            Some(s) if (200..300).contains(&s) => {
                let _ = self.store.complete_delivery(&w.id, &d.msg_id).await;
                "delivered"
            }
            Some(410) => {
                let mut disabled = w.clone();
                disabled.disabled =
                    Some(format!("410 Gone at {}", cep_engine::time::format_ms(now)));
                let _ = self.store.put_webhook(&disabled).await;
                self.invalidate();
                let _ = self.store.dead_letter(&d).await;
                warn!(webhook = %w.id, url = %w.url, "endpoint answered 410 Gone: disabled");
                "disabled"
            }
            _ if d.attempts as usize > self.cfg.schedule.len() => {
                let _ = self.store.dead_letter(&d).await;
                warn!(webhook = %w.id, msg = %d.msg_id, attempts = d.attempts, "delivery dead-lettered");
                "dead"
            }
            _ => {
                let base =
                    self.cfg.schedule[(d.attempts as usize - 1).min(self.cfg.schedule.len() - 1)];
                let delay = match (status, retry_after) {
                    (Some(429) | Some(503), Some(ra)) => ra.max(base),
                    _ => jitter(base),
                };
                d.next_at = now + delay.as_millis() as i64;
                let _ = self.store.update_delivery(&d).await;
                "retry"
            }
        };
        self.metrics.count(outcome);
        let _ = self
            .store
            .log_attempt(&DeliveryAttempt {
                webhook: w.id.clone(),
                msg_id: d.msg_id.clone(),
                attempt: d.attempts,
                at: now,
                status,
                error,
                latency_ms,
                outcome: outcome.to_string(),
            })
            .await;
        if outcome == "delivered" && d.attempts > 1 {
            info!(webhook = %w.id, msg = %d.msg_id, attempts = d.attempts, "delivered after retries");
        }
    }
}

/// ±20 % around `d`.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = if getrandom::fill(&mut b).is_ok() {
        u16::from_le_bytes(b) as f64 / u16::MAX as f64
    } else {
        0.5
    };
    d.mul_f64(0.8 + 0.4 * r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_standard_webhooks_example() {
        // The example from the Standard Webhooks specification.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        )
        .expect("sign");
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn schedules_parse() {
        assert_eq!(
            parse_schedule("100ms, 1s,5m"),
            Ok(vec![
                Duration::from_millis(100),
                Duration::from_secs(1),
                Duration::from_secs(300)
            ])
        );
        assert!(parse_schedule("soon").is_err());
    }
}

//! What the store keeps. Plain serde data: both backends store these as JSON.

use serde::{Deserialize, Serialize};

/// API key roles, weakest first (`Ord` follows: `Admin > Analyst > Viewer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Analyst,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "analyst" => Some(Role::Analyst),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// An API key. Only the SHA-256 of the secret is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Unique, chosen by the creator; appears in the audit log.
    pub name: String,
    pub role: Role,
    /// Lowercase hex SHA-256 of the full secret (`vk_…`).
    pub hash: String,
    /// Epoch ms.
    pub created_at: i64,
    pub revoked: bool,
}

/// One immutable version of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleVersion {
    pub rule: String,
    /// 1, 2, 3… per rule.
    pub version: u32,
    /// Hash of `text` (content address).
    pub hash: String,
    /// `.vgl` text holding exactly this one rule.
    pub text: String,
    pub created_at: i64,
    /// API key name (or `import` for rules loaded from files).
    pub created_by: String,
}

/// How a deployed version runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Active,
    Shadow,
}

/// The lifecycle state of a rule (not of a version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleState {
    pub name: String,
    /// The deployed version and its mode; `None`: only drafts exist.
    pub deployed: Option<(u32, Mode)>,
    pub paused: bool,
    pub archived: bool,
    /// Key name that created the rule.
    pub owner: String,
    pub updated_at: i64,
}

/// One append-only audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Assigned by the store on append: 1, 2, 3…
    pub seq: u64,
    pub at: i64,
    /// API key name.
    pub actor: String,
    /// e.g. `rule.create_version`, `rule.deploy`, `list.add`, `key.create`.
    pub action: String,
    /// What it acted on, e.g. `rule:card_testing`.
    pub target: String,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAlert {
    pub id: String,
    pub rule: String,
    /// The key as text (`""` for global rules).
    pub key: String,
    pub severity: String,
    pub mode: Mode,
    /// Event time of the alert, epoch ms.
    pub at: i64,
    /// The alert JSON (spec §6), plus `"mode": "shadow"` for shadow alerts.
    pub alert: serde_json::Value,
    /// The matched events' JSON by binding (the explanation); may be empty.
    #[serde(default)]
    pub events: serde_json::Value,
}

/// Alert query: every set field must match; `from`/`to` bound `at` (ms,
/// inclusive / exclusive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    pub rule: Option<String>,
    pub key: Option<String>,
    pub severity: Option<String>,
    pub mode: Option<Mode>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// One page of alerts, newest first, and the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertPage {
    pub alerts: Vec<StoredAlert>,
    /// Opaque; pass back as `cursor` to get the next page. `None`: last page.
    pub next: Option<String>,
}

/// A registered webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// `wh_<hex>`, chosen by the caller. Must not contain NUL.
    pub id: String,
    pub url: String,
    pub description: String,
    /// Rules whose alerts go to this endpoint; empty: every rule.
    pub rules: Vec<String>,
    /// Tags an alert must carry; empty: any tags.
    pub tags: Vec<String>,
    /// The lowest severity sent; `None`: every severity.
    pub min_severity: Option<String>,
    /// Shadow alerts are sent only if true.
    pub include_shadow: bool,
    /// Signing secrets, newest first; older ones stay valid until their
    /// `expires_at`.
    pub secrets: Vec<WebhookSecret>,
    /// Why the endpoint was disabled (e.g. `410 Gone at …`); `None`: enabled.
    pub disabled: Option<String>,
    /// Epoch ms.
    pub created_at: i64,
    /// API key name.
    pub created_by: String,
}

/// One signing secret of a webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSecret {
    /// `whsec_…`.
    pub secret: String,
    /// Epoch ms after which it no longer signs; `None`: no end.
    pub expires_at: Option<i64>,
}

/// One message to one endpoint, pending or dead-lettered. Identified by
/// (`webhook`, `msg_id`); neither may contain NUL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The webhook id.
    pub webhook: String,
    /// The `webhook-id` header: the same on every retry.
    pub msg_id: String,
    pub alert_id: String,
    /// The exact JSON payload.
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Epoch ms of the next attempt.
    pub next_at: i64,
    /// Epoch ms.
    pub created_at: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// One delivery attempt, for the per-endpoint delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    pub webhook: String,
    pub msg_id: String,
    /// 1, 2, 3… for the message.
    pub attempt: u32,
    /// Epoch ms.
    pub at: i64,
    /// The HTTP status, if a response came.
    pub status: Option<u16>,
    /// What went wrong (connection, timeout, status), if anything.
    pub error: Option<String>,
    pub latency_ms: u64,
    /// `delivered`, `retry`, `dead` or `disabled`.
    pub outcome: String,
}

/// One engine checkpoint: what it covers, and which shard blobs it holds.
/// The blobs themselves are stored apart, in chunks (see
/// [`Store::put_checkpoint`](super::Store::put_checkpoint)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointManifest {
    /// Increasing id (the gateway assigns it).
    pub id: u64,
    /// Gateway sequence number the checkpoint covers (every event with seq
    /// <= this).
    pub seq: u64,
    /// The gateway's event-time clock at the barrier (`i64::MIN`: none yet).
    pub clock: i64,
    /// Per input (0: ZeroMQ/HTTP, 1+p: Kafka partition p): highest event
    /// time seen.
    pub inputs: std::collections::BTreeMap<u32, i64>,
    /// Per Kafka partition: the next offset to read after this checkpoint.
    pub offsets: std::collections::BTreeMap<i32, i64>,
    /// Rule-set version that ran when it was taken.
    pub rules_version: u64,
    /// Wall time it became durable, ms since the epoch (set by the store on
    /// put).
    pub created_ms: i64,
    /// Shards present, with their blob sizes, by shard id (filled in by the
    /// store on put).
    pub shards: Vec<CheckpointShard>,
    /// Total blob bytes (filled in by the store).
    pub bytes: u64,
    /// Live mode: the event clock at the last accepted event and the wall
    /// time then (epoch ms), so a restart's idle clock follows the wall
    /// clock from where it was (absent in older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_base: Option<(i64, i64)>,
}

/// One shard's blob in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointShard {
    pub shard: u16,
    /// Blob length.
    pub bytes: u64,
    /// How many chunks hold it (0 for an empty blob): chunks 0..chunks, each
    /// of the store's chunk size but the last.
    pub chunks: u32,
}

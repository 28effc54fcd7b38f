//! The gateway's store: API keys, rule versions and states, the schema, the
//! audit log, alerts, reference lists, webhooks with their delivery queue,
//! dead letters and delivery log, and engine checkpoints.
//!
//! Two backends with the same behaviour:
//! - [`Store::open_embedded`]: one redb file (`<dir>/vigil.redb`), for a
//!   single gateway;
//! - [`Store::open_redis`]: a Redis server, every key under `{namespace}:`, so
//!   several gateways (or test suites) share one server.
//!
//! [`Store`] is cheap to clone (an `Arc` or a connection manager inside) and
//! every operation is async. Records are stored as JSON.

pub mod embedded;
pub mod redis;
pub mod types;

use std::path::Path;

pub use types::*;

/// Alerts kept by default; beyond it the oldest are trimmed on insert.
pub const DEFAULT_MAX_ALERTS: usize = 1_000_000;

/// Delivery attempts kept per webhook; beyond it the oldest are dropped.
pub const DELIVERY_LOG_MAX: usize = 1_000;

/// Expired dedup records purged by one embedded `enqueue_delivery` (Redis
/// expires them itself).
pub(crate) const DEDUP_PURGE_BATCH: usize = 64;

/// Default largest chunk of a checkpoint blob, in bytes (see
/// [`Store::with_checkpoint_chunk`]).
pub const CHECKPOINT_CHUNK: usize = 1 << 20;

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing acted on does not exist (e.g. adding to an unknown list).
    #[error("not found: {0}")]
    NotFound(String),
    /// The operation contradicts what is stored (a duplicate key name), or
    /// its input cannot be used (an unparsable alert cursor).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend failed: a corrupt record, a refused command.
    #[error("store backend error: {0}")]
    Backend(String),
    /// The backend cannot be reached or written at all (a full disk, an I/O
    /// error, a lost connection): retried, reported in health, and ingest
    /// pauses while alerts cannot be stored.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// The store, on one of its backends.
#[derive(Clone)]
pub enum Store {
    Embedded(embedded::EmbeddedStore),
    Redis(redis::RedisStore),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .field("max_alerts", &self.max_alerts())
            .field("checkpoint_chunk", &self.checkpoint_chunk())
            .finish()
    }
}

/// Calls the same async method on whichever backend this is.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Embedded(s) => s.$method($($arg),*).await,
            Store::Redis(s) => s.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// Opens (creating it and `dir` if needed) `<dir>/vigil.redb`.
    pub async fn open_embedded(dir: &Path) -> StoreResult<Store> {
        Ok(Store::Embedded(embedded::EmbeddedStore::open(dir).await?))
    }

    /// Connects to Redis at `url` (`redis://host:port/db`); every key is
    /// `{namespace}:…`. Fails with [`StoreError::Backend`] if the server does
    /// not answer.
    pub async fn open_redis(url: &str, namespace: &str) -> StoreResult<Store> {
        Ok(Store::Redis(redis::RedisStore::open(url, namespace).await?))
    }

    /// Sets how many alerts are kept (at least 1); on insert beyond it the
    /// oldest (by `at`, then id) are deleted. Default [`DEFAULT_MAX_ALERTS`].
    pub fn with_max_alerts(self, n: usize) -> Store {
        let n = n.max(1);
        match self {
            Store::Embedded(s) => Store::Embedded(s.with_max_alerts(n)),
            Store::Redis(s) => Store::Redis(s.with_max_alerts(n)),
        }
    }

    pub fn max_alerts(&self) -> usize {
        match self {
            Store::Embedded(s) => s.max_alerts(),
            Store::Redis(s) => s.max_alerts(),
        }
    }

    /// Sets the largest chunk (at least 1 byte) checkpoint blobs are split
    /// into on [`Store::put_checkpoint`]. Default [`CHECKPOINT_CHUNK`].
    /// Reading does not depend on it: a stored checkpoint records its chunk
    /// counts.
    pub fn with_checkpoint_chunk(self, n: usize) -> Store {
        let n = n.max(1);
        match self {
            Store::Embedded(s) => Store::Embedded(s.with_checkpoint_chunk(n)),
            Store::Redis(s) => Store::Redis(s.with_checkpoint_chunk(n)),
        }
    }

    pub fn checkpoint_chunk(&self) -> usize {
        match self {
            Store::Embedded(s) => s.checkpoint_chunk(),
            Store::Redis(s) => s.checkpoint_chunk(),
        }
    }

    /// `"embedded"` or `"redis"`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Embedded(_) => "embedded",
            Store::Redis(_) => "redis",
        }
    }

    // --- API keys ---

    /// Stores a new key. [`StoreError::Conflict`] if a key with this name, or
    /// with this secret hash, already exists.
    pub async fn put_key(&self, key: &ApiKey) -> StoreResult<()> {
        dispatch!(self.put_key(key))
    }

    /// The key whose secret hashes to `hash` (revoked keys included).
    pub async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
        dispatch!(self.key_by_hash(hash))
    }

    pub async fn key(&self, name: &str) -> StoreResult<Option<ApiKey>> {
        dispatch!(self.key(name))
    }

    /// Every key, revoked ones included, sorted by name.
    pub async fn keys(&self) -> StoreResult<Vec<ApiKey>> {
        dispatch!(self.keys())
    }

    /// Marks the key revoked (the record stays). `false`: no such key.
    pub async fn revoke_key(&self, name: &str) -> StoreResult<bool> {
        dispatch!(self.revoke_key(name))
    }

    // --- rule versions ---

    /// Stores a new version of `rule`, numbered atomically 1, 2, 3… per rule.
    pub async fn create_version(
        &self,
        rule: &str,
        hash: &str,
        text: &str,
        created_by: &str,
        at: i64,
    ) -> StoreResult<RuleVersion> {
        dispatch!(self.create_version(rule, hash, text, created_by, at))
    }

    pub async fn version(&self, rule: &str, version: u32) -> StoreResult<Option<RuleVersion>> {
        dispatch!(self.version(rule, version))
    }

    /// Every version of `rule`, ascending.
    pub async fn versions(&self, rule: &str) -> StoreResult<Vec<RuleVersion>> {
        dispatch!(self.versions(rule))
    }

    // --- rule states ---

    /// Creates or replaces the state of `state.name`.
    pub async fn put_rule_state(&self, state: &RuleState) -> StoreResult<()> {
        dispatch!(self.put_rule_state(state))
    }

    pub async fn rule_state(&self, name: &str) -> StoreResult<Option<RuleState>> {
        dispatch!(self.rule_state(name))
    }

    /// Every rule state, sorted by name.
    pub async fn rule_states(&self) -> StoreResult<Vec<RuleState>> {
        dispatch!(self.rule_states())
    }

    // --- schema ---

    /// The shared event declarations text, if one was stored.
    pub async fn schema(&self) -> StoreResult<Option<String>> {
        dispatch!(self.schema())
    }

    pub async fn put_schema(&self, text: &str) -> StoreResult<()> {
        dispatch!(self.put_schema(text))
    }

    /// The store's identity, written at its first start: a store that
    /// answers without it has lost its data (a Redis restarted empty).
    pub async fn marker(&self) -> StoreResult<Option<String>> {
        dispatch!(self.marker())
    }

    pub async fn put_marker(&self, id: &str) -> StoreResult<()> {
        dispatch!(self.put_marker(id))
    }

    // --- audit ---

    /// Appends `entry` with the next sequence number (1, 2, 3…, assigned
    /// atomically; `entry.seq` is ignored) and returns that number.
    pub async fn append_audit(&self, entry: AuditEntry) -> StoreResult<u64> {
        dispatch!(self.append_audit(entry))
    }

    /// Up to `limit` entries with `seq > after_seq`, ascending.
    pub async fn audit(&self, after_seq: u64, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        dispatch!(self.audit(after_seq, limit))
    }

    // --- alerts ---

    /// Stores the alert unless its id is already stored (then `false`, and
    /// nothing changes). Trims the oldest alerts beyond the retention.
    pub async fn put_alert(&self, alert: &StoredAlert) -> StoreResult<bool> {
        dispatch!(self.put_alert(alert))
    }

    /// [`Store::put_alert`] for a batch, in order: for each, whether it was
    /// new. The embedded store writes the batch in one transaction (one sync
    /// to disk); Redis stores them one by one.
    pub async fn put_alerts(&self, batch: &[StoredAlert]) -> StoreResult<Vec<bool>> {
        match self {
            Store::Embedded(s) => s.put_alerts(batch).await,
            Store::Redis(_) => {
                let mut out = Vec::with_capacity(batch.len());
                for a in batch {
                    out.push(self.put_alert(a).await?);
                }
                Ok(out)
            }
        }
    }

    /// For each id, in order: whether an alert with that id is stored. Read
    /// only: the alert writer asks this first, fans the new alerts out, and
    /// stores them last, so a stored alert is one that was delivered.
    pub async fn alerts_known(&self, ids: &[String]) -> StoreResult<Vec<bool>> {
        dispatch!(self.alerts_known(ids))
    }

    pub async fn alert(&self, id: &str) -> StoreResult<Option<StoredAlert>> {
        dispatch!(self.alert(id))
    }

    /// One page of the alerts matching `filter`, newest first by (`at`, id)
    /// descending. `cursor`: the `next` of the previous page. `limit` 0 is
    /// taken as 1. An unparsable cursor is [`StoreError::Conflict`].
    pub async fn query_alerts(
        &self,
        filter: &AlertFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<AlertPage> {
        let after = cursor.map(Cursor::parse).transpose()?;
        let limit = limit.max(1);
        dispatch!(self.query_alerts(filter, after.as_ref(), limit))
    }

    /// How many alerts are stored.
    pub async fn alert_count(&self) -> StoreResult<u64> {
        dispatch!(self.alert_count())
    }

    // --- reference lists ---

    /// Names of every list, sorted.
    pub async fn list_names(&self) -> StoreResult<Vec<String>> {
        dispatch!(self.list_names())
    }

    /// The entries of the list, sorted; `None`: no such list.
    pub async fn get_list(&self, name: &str) -> StoreResult<Option<Vec<String>>> {
        dispatch!(self.get_list(name))
    }

    /// Creates or replaces the list (duplicates in `entries` collapse).
    pub async fn put_list(&self, name: &str, entries: &[String]) -> StoreResult<()> {
        dispatch!(self.put_list(name, entries))
    }

    /// Adds entries; returns how many were new. [`StoreError::NotFound`] if
    /// the list does not exist.
    pub async fn add_to_list(&self, name: &str, entries: &[String]) -> StoreResult<usize> {
        dispatch!(self.add_to_list(name, entries))
    }

    /// Removes entries; returns how many were there. [`StoreError::NotFound`]
    /// if the list does not exist.
    pub async fn remove_from_list(&self, name: &str, entries: &[String]) -> StoreResult<usize> {
        dispatch!(self.remove_from_list(name, entries))
    }

    /// Deletes the list; `false`: there was none.
    pub async fn delete_list(&self, name: &str) -> StoreResult<bool> {
        dispatch!(self.delete_list(name))
    }

    /// A counter bumped by every list change (`put_list`, `delete_list` of an
    /// existing list, an add or remove that changed something); poll it to
    /// notice changes made by other gateways.
    pub async fn lists_revision(&self) -> StoreResult<u64> {
        dispatch!(self.lists_revision())
    }

    // --- webhooks ---

    /// Creates or replaces the webhook `webhook.id`. [`StoreError::Conflict`]
    /// if the id contains NUL.
    pub async fn put_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        check_id("webhook id", &webhook.id)?;
        dispatch!(self.put_webhook(webhook))
    }

    pub async fn webhook(&self, id: &str) -> StoreResult<Option<Webhook>> {
        dispatch!(self.webhook(id))
    }

    /// Every webhook, sorted by id.
    pub async fn webhooks(&self) -> StoreResult<Vec<Webhook>> {
        dispatch!(self.webhooks())
    }

    /// Deletes the webhook with its pending deliveries, its dead letters and
    /// its delivery log (its dedup records stay until they expire). `false`:
    /// there was no such webhook (whatever it had is deleted all the same).
    pub async fn delete_webhook(&self, id: &str) -> StoreResult<bool> {
        dispatch!(self.delete_webhook(id))
    }

    // --- webhook deliveries ---

    /// Queues `delivery` once per (`webhook`, `alert_id`): if that pair has
    /// a dedup record expiring after `delivery.created_at`, stores nothing
    /// and returns `false`; otherwise records the pair until `dedup_until`
    /// (epoch ms), stores the delivery as pending (replacing a pending one
    /// with the same `msg_id`) and returns `true`. Atomic. Expired dedup
    /// records are purged as it goes. [`StoreError::Conflict`] if the
    /// webhook or message id contains NUL.
    pub async fn enqueue_delivery(
        &self,
        delivery: &Delivery,
        dedup_until: i64,
    ) -> StoreResult<bool> {
        check_id("webhook id", &delivery.webhook)?;
        check_id("message id", &delivery.msg_id)?;
        dispatch!(self.enqueue_delivery(delivery, dedup_until))
    }

    /// Up to `limit` pending deliveries with `next_at <= now`, by
    /// (`next_at`, `created_at`, `msg_id`).
    pub async fn due_deliveries(&self, now: i64, limit: usize) -> StoreResult<Vec<Delivery>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        dispatch!(self.due_deliveries(now, limit))
    }

    /// Up to `limit` pending deliveries of `webhook`, by (`created_at`,
    /// `msg_id`).
    pub async fn pending_for(&self, webhook: &str, limit: usize) -> StoreResult<Vec<Delivery>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        dispatch!(self.pending_for(webhook, limit))
    }

    /// Replaces the pending delivery (`webhook`, `msg_id`) (e.g. a new
    /// `next_at` and `attempts` after a failed attempt).
    /// [`StoreError::NotFound`] if it is not pending.
    pub async fn update_delivery(&self, delivery: &Delivery) -> StoreResult<()> {
        dispatch!(self.update_delivery(delivery))
    }

    /// Removes a pending delivery; `false`: it was not pending.
    pub async fn complete_delivery(&self, webhook: &str, msg_id: &str) -> StoreResult<bool> {
        dispatch!(self.complete_delivery(webhook, msg_id))
    }

    /// How many deliveries are pending (all webhooks), and the oldest
    /// `created_at` among them.
    pub async fn pending_stats(&self) -> StoreResult<(u64, Option<i64>)> {
        dispatch!(self.pending_stats())
    }

    // --- dead letters ---

    /// Stores `delivery` as a dead letter (replacing one with the same
    /// `webhook` and `msg_id`) and removes it from the pending deliveries if
    /// it is there. [`StoreError::Conflict`] if an id contains NUL.
    pub async fn dead_letter(&self, delivery: &Delivery) -> StoreResult<()> {
        check_id("webhook id", &delivery.webhook)?;
        check_id("message id", &delivery.msg_id)?;
        dispatch!(self.dead_letter(delivery))
    }

    /// Up to `limit` dead letters of `webhook` (`None`: of every webhook),
    /// oldest first: by (`created_at`, `msg_id`, then webhook); `after`: only
    /// those past that one (the last of the previous page).
    pub async fn dead_letters(
        &self,
        webhook: Option<&str>,
        after: Option<&DeadCursor>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        dispatch!(self.dead_letters(webhook, after, limit))
    }

    /// Removes the dead letter and returns it (e.g. to queue it again).
    pub async fn take_dead_letter(
        &self,
        webhook: &str,
        msg_id: &str,
    ) -> StoreResult<Option<Delivery>> {
        dispatch!(self.take_dead_letter(webhook, msg_id))
    }

    // --- delivery log ---

    /// Appends to the webhook's delivery log, which keeps the newest
    /// [`DELIVERY_LOG_MAX`] attempts.
    pub async fn log_attempt(&self, attempt: &DeliveryAttempt) -> StoreResult<()> {
        dispatch!(self.log_attempt(attempt))
    }

    /// Up to `limit` of the webhook's logged attempts, newest (last logged)
    /// first.
    pub async fn delivery_log(
        &self,
        webhook: &str,
        limit: usize,
    ) -> StoreResult<Vec<DeliveryAttempt>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        dispatch!(self.delivery_log(webhook, limit))
    }

    // --- checkpoints ---

    /// Writes a complete checkpoint (each shard's blob split into chunks of
    /// at most [`Store::checkpoint_chunk`] bytes), then makes it current,
    /// then removes the previous checkpoint's chunks. Returns the stored
    /// manifest (`shards` by shard id, `bytes`, `created_ms` filled in; what
    /// the caller put there is ignored).
    ///
    /// Never observed half-written: the chunks go under `manifest.id` first
    /// and the manifest is switched in one atomic step, so a crash before
    /// the switch leaves the previous checkpoint current and whole. After
    /// the switch the chunks of every checkpoint id below the new one are
    /// deleted: the previous checkpoint's, and those of any put that did not
    /// finish. (Chunks under a higher id are left alone: a newer put may be
    /// writing them; leftovers there go with the first put above them.) The
    /// embedded store does all of it in one write transaction; Redis in four
    /// round trips.
    ///
    /// [`StoreError::Conflict`] if `manifest.id` is not above the current
    /// checkpoint's id, or a shard id repeats or is not below
    /// [`SHARDS`](cep_engine::shard::SHARDS).
    pub async fn put_checkpoint(
        &self,
        manifest: CheckpointManifest,
        shards: Vec<(u16, Vec<u8>)>,
    ) -> StoreResult<CheckpointManifest> {
        let (manifest, shards) = prepare_checkpoint(manifest, shards, self.checkpoint_chunk())?;
        dispatch!(self.put_checkpoint(manifest, shards))
    }

    /// The first step of [`Store::put_checkpoint`] alone: writes the chunks
    /// under `manifest.id` without making it current, as a gateway that
    /// crashed before the switch leaves them. For tests.
    #[doc(hidden)]
    pub async fn stage_checkpoint(
        &self,
        manifest: CheckpointManifest,
        shards: Vec<(u16, Vec<u8>)>,
    ) -> StoreResult<CheckpointManifest> {
        let (manifest, shards) = prepare_checkpoint(manifest, shards, self.checkpoint_chunk())?;
        dispatch!(self.stage_checkpoint(manifest, shards))
    }

    /// The current (last complete) checkpoint's manifest.
    pub async fn checkpoint(&self) -> StoreResult<Option<CheckpointManifest>> {
        dispatch!(self.checkpoint())
    }

    /// One shard's blob of checkpoint `id` (reassembled from chunks); `None`
    /// if that shard is not in it. Only the current checkpoint can be read:
    /// [`StoreError::NotFound`] if `id` is not (any more) current.
    /// [`StoreError::Backend`] if a chunk is missing or the chunks do not add
    /// up to the blob's length: never truncated bytes.
    pub async fn checkpoint_shard(&self, id: u64, shard: u16) -> StoreResult<Option<Vec<u8>>> {
        dispatch!(self.checkpoint_shard(id, shard))
    }
}

/// Shard blobs of a checkpoint: (shard id, blob).
type ShardBlobs = Vec<(u16, Vec<u8>)>;

/// Checks the shard ids of a checkpoint put, sorts the shards by id and
/// fills in the manifest's `shards`, `bytes` and `created_ms`, counting
/// chunks of `chunk` bytes.
fn prepare_checkpoint(
    mut manifest: CheckpointManifest,
    mut shards: ShardBlobs,
    chunk: usize,
) -> StoreResult<(CheckpointManifest, ShardBlobs)> {
    shards.sort_by_key(|(shard, _)| *shard);
    let mut entries: Vec<CheckpointShard> = Vec::with_capacity(shards.len());
    let mut total: u64 = 0;
    for (shard, blob) in &shards {
        if *shard >= cep_engine::shard::SHARDS {
            return Err(StoreError::Conflict(format!(
                "checkpoint {}: no shard {shard} (shards are 0..{})",
                manifest.id,
                cep_engine::shard::SHARDS
            )));
        }
        if entries.last().is_some_and(|e| e.shard == *shard) {
            return Err(StoreError::Conflict(format!(
                "checkpoint {}: shard {shard} given twice",
                manifest.id
            )));
        }
        let too_big = || {
            StoreError::Conflict(format!(
                "checkpoint {}: shard {shard}: blob of {} bytes too large",
                manifest.id,
                blob.len()
            ))
        };
        let bytes = u64::try_from(blob.len()).map_err(|_| too_big())?;
        let chunks = u32::try_from(blob.len().div_ceil(chunk)).map_err(|_| too_big())?;
        total = total.checked_add(bytes).ok_or_else(too_big)?;
        entries.push(CheckpointShard {
            shard: *shard,
            bytes,
            chunks,
        });
    }
    manifest.shards = entries;
    manifest.bytes = total;
    manifest.created_ms = chrono::Utc::now().timestamp_millis();
    Ok((manifest, shards))
}

/// Reassembles `entry`'s blob of checkpoint `id`: `fetch(i, out)` appends
/// chunk `i` to `out`, or returns `false` if it is not stored.
/// [`StoreError::Backend`] if a chunk is missing or the length is wrong.
pub(crate) fn join_chunks(
    id: u64,
    entry: &CheckpointShard,
    mut fetch: impl FnMut(u32, &mut Vec<u8>) -> StoreResult<bool>,
) -> StoreResult<Vec<u8>> {
    let shard = entry.shard;
    // Reserve the recorded length, but not without bound: the record may be
    // corrupt.
    let reserve = usize::try_from(entry.bytes).map_or(0, |n| n.min(1 << 28));
    let mut blob = Vec::with_capacity(reserve);
    for i in 0..entry.chunks {
        if !fetch(i, &mut blob)? {
            return Err(StoreError::Backend(format!(
                "checkpoint {id}: shard {shard}: chunk {i} of {} is missing",
                entry.chunks
            )));
        }
    }
    if u64::try_from(blob.len()).ok() != Some(entry.bytes) {
        return Err(StoreError::Backend(format!(
            "checkpoint {id}: shard {shard}: chunks hold {} bytes, not {}",
            blob.len(),
            entry.bytes
        )));
    }
    Ok(blob)
}

/// Webhook and message ids are joined with NUL in the Redis layout, so they
/// may not contain it (on both backends, for the same behaviour).
fn check_id(what: &str, id: &str) -> StoreResult<()> {
    if id.contains('\0') {
        return Err(StoreError::Conflict(format!("{what} {id:?} contains NUL")));
    }
    Ok(())
}

/// A position in the alert order: the (`at`, id) of the last alert returned.
/// Its text form `"<at>:<id>"` is the page's `next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub at: i64,
    pub id: String,
}

impl Cursor {
    pub(crate) fn of(alert: &StoredAlert) -> Cursor {
        Cursor {
            at: alert.at,
            id: alert.id.clone(),
        }
    }

    pub(crate) fn parse(text: &str) -> StoreResult<Cursor> {
        let bad = || StoreError::Conflict(format!("bad cursor {text:?}"));
        let (at, id) = text.split_once(':').ok_or_else(bad)?;
        let at = at.parse::<i64>().map_err(|_| bad())?;
        Ok(Cursor {
            at,
            id: id.to_string(),
        })
    }

    pub(crate) fn text(&self) -> String {
        format!("{}:{}", self.at, self.id)
    }
}

/// A position in the dead-letter order: the (`created_at`, `msg_id`,
/// webhook) of the last dead letter returned. Its text form
/// `"<created_at>:<webhook>:<msg_id>"` is a page's `next` (webhook ids are
/// generated, `wh_` and hex: no colon).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadCursor {
    pub created_at: i64,
    pub webhook: String,
    pub msg_id: String,
}

impl DeadCursor {
    pub fn of(d: &Delivery) -> DeadCursor {
        DeadCursor {
            created_at: d.created_at,
            webhook: d.webhook.clone(),
            msg_id: d.msg_id.clone(),
        }
    }

    /// An unparsable cursor is [`StoreError::Conflict`].
    pub fn parse(text: &str) -> StoreResult<DeadCursor> {
        let bad = || StoreError::Conflict(format!("bad cursor {text:?}"));
        let (at, rest) = text.split_once(':').ok_or_else(bad)?;
        let (webhook, msg_id) = rest.split_once(':').ok_or_else(bad)?;
        Ok(DeadCursor {
            created_at: at.parse::<i64>().map_err(|_| bad())?,
            webhook: webhook.to_string(),
            msg_id: msg_id.to_string(),
        })
    }

    pub fn text(&self) -> String {
        format!("{}:{}:{}", self.created_at, self.webhook, self.msg_id)
    }
}

/// Whether `alert` passes every set field of `filter`.
pub(crate) fn filter_matches(filter: &AlertFilter, alert: &StoredAlert) -> bool {
    filter.rule.as_ref().is_none_or(|r| *r == alert.rule)
        && filter.key.as_ref().is_none_or(|k| *k == alert.key)
        && filter
            .severity
            .as_ref()
            .is_none_or(|s| *s == alert.severity)
        && filter.mode.is_none_or(|m| m == alert.mode)
        && filter.from.is_none_or(|from| alert.at >= from)
        && filter.to.is_none_or(|to| alert.at < to)
}

/// Turns the matches found (at most `limit + 1`, in order) into a page.
pub(crate) fn page(mut found: Vec<StoredAlert>, limit: usize) -> AlertPage {
    let next = if found.len() > limit {
        found.truncate(limit);
        found.last().map(|a| Cursor::of(a).text())
    } else {
        None
    };
    AlertPage {
        alerts: found,
        next,
    }
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("encoding record: {e}")))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Backend(format!("corrupt record: {e}")))
}

//! The embedded backend: one redb file, `<dir>/vigil.redb`, records as JSON.
//!
//! redb is synchronous: every operation is one transaction run on tokio's
//! blocking pool. Write transactions are serialized by redb, which makes the
//! read-then-write steps (next version number, next audit seq, "is this id
//! new") atomic.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};

use super::{
    AlertFilter, AlertPage, ApiKey, AuditEntry, CHECKPOINT_CHUNK, CheckpointManifest, Cursor,
    DEDUP_PURGE_BATCH, DEFAULT_MAX_ALERTS, DELIVERY_LOG_MAX, DeadCursor, Delivery, DeliveryAttempt,
    RuleState, RuleVersion, StoreError, StoreResult, StoredAlert, Webhook, filter_matches,
    from_json, join_chunks, page, to_json,
};

/// Key name → `ApiKey` JSON.
const KEYS: TableDefinition<&str, &str> = TableDefinition::new("keys");
/// Key secret hash → key name.
const KEY_HASHES: TableDefinition<&str, &str> = TableDefinition::new("key_hashes");
/// (rule, version) → `RuleVersion` JSON.
const VERSIONS: TableDefinition<(&str, u32), &str> = TableDefinition::new("versions");
/// Rule name → `RuleState` JSON.
const RULE_STATES: TableDefinition<&str, &str> = TableDefinition::new("rule_states");
/// Single text values (`schema`, `checkpoint`: the current
/// `CheckpointManifest` JSON).
const SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("settings");
/// Named counters (`lists_revision`).
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// seq → `AuditEntry` JSON.
const AUDIT: TableDefinition<u64, &str> = TableDefinition::new("audit");
/// Alert id → `StoredAlert` JSON.
const ALERTS: TableDefinition<&str, &str> = TableDefinition::new("alerts");
/// (at, id) of every stored alert: the query and retention order.
const ALERTS_BY_TIME: TableDefinition<(i64, &str), ()> = TableDefinition::new("alerts_by_time");
/// Names of the reference lists (a list may be empty).
const LISTS: TableDefinition<&str, ()> = TableDefinition::new("lists");
/// (list, entry) of every list entry.
const LIST_ENTRIES: TableDefinition<(&str, &str), ()> = TableDefinition::new("list_entries");
/// Webhook id → `Webhook` JSON.
const WEBHOOKS: TableDefinition<&str, &str> = TableDefinition::new("webhooks");
/// (webhook, alert id) → dedup expiry (epoch ms).
const DEDUP: TableDefinition<(&str, &str), i64> = TableDefinition::new("webhook_dedup");
/// (expiry, webhook, alert id) of every dedup record: the purge order.
const DEDUP_BY_EXPIRY: TableDefinition<(i64, &str, &str), ()> =
    TableDefinition::new("webhook_dedup_by_expiry");
/// (webhook, n) → `DeliveryAttempt` JSON; n counts 1, 2, 3… per webhook.
const DELIVERY_LOG: TableDefinition<(&str, u64), &str> = TableDefinition::new("delivery_log");
/// (checkpoint id, shard, chunk index) → that chunk of the shard's blob.
const CHECKPOINT_CHUNKS: TableDefinition<(u64, u16, u32), &[u8]> =
    TableDefinition::new("checkpoint_chunks");

/// The pending deliveries.
const PENDING: Queue = Queue {
    records: TableDefinition::new("deliveries"),
    by_age: TableDefinition::new("deliveries_by_age"),
    of: TableDefinition::new("deliveries_of"),
    due: Some(TableDefinition::new("deliveries_due")),
};
/// The dead letters.
const DEAD: Queue = Queue {
    records: TableDefinition::new("dead_letters"),
    by_age: TableDefinition::new("dead_letters_by_age"),
    of: TableDefinition::new("dead_letters_of"),
    due: None,
};

const SCHEMA: &str = "schema";
const MARKER: &str = "marker";
const CHECKPOINT: &str = "checkpoint";
const LISTS_REVISION: &str = "lists_revision";

/// The redb store. Clones share the database.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Handle>,
    max_alerts: usize,
    checkpoint_chunk: usize,
}

/// The open database, closed after an I/O error and opened again by the next
/// transaction. After one failed write (a full disk) redb refuses every
/// transaction ("Previous I/O error") until the file is closed and opened
/// again; opening it again runs redb's repair, which brings it back to its
/// last commit. Until then every call fails as `Unavailable` and is retried
/// by its caller.
struct Handle {
    path: PathBuf,
    db: std::sync::Mutex<Option<Arc<Database>>>,
}

impl Handle {
    fn get(&self) -> StoreResult<Arc<Database>> {
        let mut db = self
            .db
            .lock()
            .map_err(|_| StoreError::Backend("redb: handle lock poisoned".into()))?;
        if let Some(d) = db.as_ref() {
            return Ok(d.clone());
        }
        // Transactions still running on the old handle keep the file open:
        // then this fails (`DatabaseAlreadyOpen`) and the next call tries again.
        let d = Arc::new(open_db(&self.path)?);
        tracing::warn!(path = %self.path.display(), "embedded store reopened after an I/O error");
        *db = Some(d.clone());
        Ok(d)
    }

    /// `d` failed with an I/O error: close it (when the last transaction on
    /// it ends) so the next call reopens the file.
    fn failed(&self, d: &Arc<Database>) {
        if let Ok(mut db) = self.db.lock()
            && db.as_ref().is_some_and(|x| Arc::ptr_eq(x, d))
        {
            *db = None;
        }
    }
}

/// A redb error as a store error: I/O errors (a full disk) make the store
/// unavailable until it is reopened; the rest are backend errors.
fn be(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        e @ (redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseAlreadyOpen) => {
            StoreError::Unavailable(format!("redb: {e}"))
        }
        e => StoreError::Backend(format!("redb: {e}")),
    }
}

/// redb's page cache (its default is 1 GiB, which a gateway writing
/// checkpoints fills in minutes). Reads of cold pages go to the OS page
/// cache, which the kernel can reclaim; this one it cannot.
const CACHE_BYTES: usize = 64 << 20;

/// Opens (creating if needed) the database at `path`, with every table.
fn open_db(path: &Path) -> StoreResult<Database> {
    let db = redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| match be(e) {
            StoreError::Unavailable(m) => {
                StoreError::Unavailable(format!("opening {}: {m}", path.display()))
            }
            other => StoreError::Backend(format!("opening {}: {other}", path.display())),
        })?;
    // Create every table now, so read transactions always find them.
    let txn = db.begin_write().map_err(be)?;
    txn.open_table(KEYS).map_err(be)?;
    txn.open_table(KEY_HASHES).map_err(be)?;
    txn.open_table(VERSIONS).map_err(be)?;
    txn.open_table(RULE_STATES).map_err(be)?;
    txn.open_table(SETTINGS).map_err(be)?;
    txn.open_table(COUNTERS).map_err(be)?;
    txn.open_table(AUDIT).map_err(be)?;
    txn.open_table(ALERTS).map_err(be)?;
    txn.open_table(ALERTS_BY_TIME).map_err(be)?;
    txn.open_table(LISTS).map_err(be)?;
    txn.open_table(LIST_ENTRIES).map_err(be)?;
    txn.open_table(WEBHOOKS).map_err(be)?;
    txn.open_table(DEDUP).map_err(be)?;
    txn.open_table(DEDUP_BY_EXPIRY).map_err(be)?;
    txn.open_table(DELIVERY_LOG).map_err(be)?;
    txn.open_table(CHECKPOINT_CHUNKS).map_err(be)?;
    for queue in [PENDING, DEAD] {
        txn.open_table(queue.records).map_err(be)?;
        txn.open_table(queue.by_age).map_err(be)?;
        txn.open_table(queue.of).map_err(be)?;
        if let Some(due) = queue.due {
            txn.open_table(due).map_err(be)?;
        }
    }
    txn.commit().map_err(be)?;
    Ok(db)
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> StoreResult<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
}

/// The exclusive upper bound of every key whose first component is `first`
/// (e.g. the `(list, entry)` keys of a list): the smallest string greater
/// than `first` is `first` + NUL.
fn after_key(first: &str) -> String {
    format!("{first}\0")
}

/// The store file holds API key hashes, webhook secrets and alerts: it is
/// created readable by its owner only (0600), and an existing one is brought
/// to 0600; a data directory the gateway creates is 0700.
#[cfg(unix)]
fn owner_only(dir: &Path, file: &Path, dir_created: bool) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if dir_created {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    // Created empty with its final mode before redb opens it (no window in
    // which it exists with the umask's mode); never truncated.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn owner_only(_dir: &Path, _file: &Path, _dir_created: bool) -> std::io::Result<()> {
    Ok(())
}

impl EmbeddedStore {
    pub(crate) async fn open(dir: &Path) -> StoreResult<EmbeddedStore> {
        let dir_path = dir.to_path_buf();
        let dir = dir.to_path_buf();
        let db = blocking(move || {
            let created = !dir.exists();
            std::fs::create_dir_all(&dir)
                .map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))?;
            let path = dir.join("vigil.redb");
            owner_only(&dir, &path, created)
                .map_err(|e| StoreError::Backend(format!("securing {}: {e}", path.display())))?;
            open_db(&path)
        })
        .await?;
        Ok(EmbeddedStore {
            db: Arc::new(Handle {
                path: dir_path.join("vigil.redb"),
                db: std::sync::Mutex::new(Some(Arc::new(db))),
            }),
            max_alerts: DEFAULT_MAX_ALERTS,
            checkpoint_chunk: CHECKPOINT_CHUNK,
        })
    }

    pub(crate) fn with_max_alerts(mut self, n: usize) -> EmbeddedStore {
        self.max_alerts = n;
        self
    }

    pub(crate) fn max_alerts(&self) -> usize {
        self.max_alerts
    }

    pub(crate) fn with_checkpoint_chunk(mut self, n: usize) -> EmbeddedStore {
        self.checkpoint_chunk = n;
        self
    }

    pub(crate) fn checkpoint_chunk(&self) -> usize {
        self.checkpoint_chunk
    }

    /// Runs `f` in a read transaction (a consistent snapshot).
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> StoreResult<T> + Send + 'static,
    {
        let handle = Arc::clone(&self.db);
        blocking(move || {
            let db = handle.get()?;
            let out = db.begin_read().map_err(be).and_then(|txn| f(&txn));
            if let Err(StoreError::Unavailable(_)) = &out {
                handle.failed(&db);
            }
            out
        })
        .await
    }

    /// Runs `f` in a write transaction, committed if `f` succeeds and rolled
    /// back if it fails.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> StoreResult<T> + Send + 'static,
    {
        let handle = Arc::clone(&self.db);
        blocking(move || {
            let db = handle.get()?;
            let out = db.begin_write().map_err(be).and_then(|txn| {
                let out = f(&txn)?;
                txn.commit().map_err(be)?;
                Ok(out)
            });
            if let Err(StoreError::Unavailable(_)) = &out {
                handle.failed(&db);
            }
            out
        })
        .await
    }

    // --- API keys ---

    pub(crate) async fn put_key(&self, key: &ApiKey) -> StoreResult<()> {
        let name = key.name.clone();
        let hash = key.hash.clone();
        let json = to_json(key)?;
        self.write(move |txn| {
            let mut keys = txn.open_table(KEYS).map_err(be)?;
            let mut hashes = txn.open_table(KEY_HASHES).map_err(be)?;
            if keys.get(name.as_str()).map_err(be)?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "an API key named {name:?} exists"
                )));
            }
            if hashes.get(hash.as_str()).map_err(be)?.is_some() {
                return Err(StoreError::Conflict(
                    "an API key with the same secret exists".to_string(),
                ));
            }
            keys.insert(name.as_str(), json.as_str()).map_err(be)?;
            hashes.insert(hash.as_str(), name.as_str()).map_err(be)?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
        let hash = hash.to_string();
        self.read(move |txn| {
            let hashes = txn.open_table(KEY_HASHES).map_err(be)?;
            let Some(name) = hashes.get(hash.as_str()).map_err(be)? else {
                return Ok(None);
            };
            let keys = txn.open_table(KEYS).map_err(be)?;
            match keys.get(name.value()).map_err(be)? {
                Some(json) => Ok(Some(from_json(json.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    pub(crate) async fn key(&self, name: &str) -> StoreResult<Option<ApiKey>> {
        let name = name.to_string();
        self.read(move |txn| {
            let keys = txn.open_table(KEYS).map_err(be)?;
            match keys.get(name.as_str()).map_err(be)? {
                Some(json) => Ok(Some(from_json(json.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    pub(crate) async fn keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.read(|txn| {
            let keys = txn.open_table(KEYS).map_err(be)?;
            let mut out = Vec::new();
            for item in keys.iter().map_err(be)? {
                let (_, json) = item.map_err(be)?;
                out.push(from_json(json.value())?);
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn revoke_key(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_string();
        self.write(move |txn| {
            let mut keys = txn.open_table(KEYS).map_err(be)?;
            let current = keys
                .get(name.as_str())
                .map_err(be)?
                .map(|j| j.value().to_string());
            let Some(json) = current else {
                return Ok(false);
            };
            let mut key: ApiKey = from_json(&json)?;
            if !key.revoked {
                key.revoked = true;
                keys.insert(name.as_str(), to_json(&key)?.as_str())
                    .map_err(be)?;
            }
            Ok(true)
        })
        .await
    }

    // --- rule versions ---

    pub(crate) async fn create_version(
        &self,
        rule: &str,
        hash: &str,
        text: &str,
        created_by: &str,
        at: i64,
    ) -> StoreResult<RuleVersion> {
        let mut version = RuleVersion {
            rule: rule.to_string(),
            version: 0,
            hash: hash.to_string(),
            text: text.to_string(),
            created_at: at,
            created_by: created_by.to_string(),
        };
        self.write(move |txn| {
            let mut versions = txn.open_table(VERSIONS).map_err(be)?;
            let rule = version.rule.clone();
            let last = versions
                .range((rule.as_str(), 0u32)..=(rule.as_str(), u32::MAX))
                .map_err(be)?
                .next_back()
                .transpose()
                .map_err(be)?
                .map(|(k, _)| k.value().1)
                .unwrap_or(0);
            version.version = last
                .checked_add(1)
                .ok_or_else(|| StoreError::Backend(format!("rule {rule:?}: too many versions")))?;
            versions
                .insert(
                    (rule.as_str(), version.version),
                    to_json(&version)?.as_str(),
                )
                .map_err(be)?;
            Ok(version)
        })
        .await
    }

    pub(crate) async fn version(&self, rule: &str, v: u32) -> StoreResult<Option<RuleVersion>> {
        let rule = rule.to_string();
        self.read(move |txn| {
            let versions = txn.open_table(VERSIONS).map_err(be)?;
            match versions.get((rule.as_str(), v)).map_err(be)? {
                Some(json) => Ok(Some(from_json(json.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    pub(crate) async fn versions(&self, rule: &str) -> StoreResult<Vec<RuleVersion>> {
        let rule = rule.to_string();
        self.read(move |txn| {
            let versions = txn.open_table(VERSIONS).map_err(be)?;
            let mut out = Vec::new();
            for item in versions
                .range((rule.as_str(), 0u32)..=(rule.as_str(), u32::MAX))
                .map_err(be)?
            {
                let (_, json) = item.map_err(be)?;
                out.push(from_json(json.value())?);
            }
            Ok(out)
        })
        .await
    }

    // --- rule states ---

    pub(crate) async fn put_rule_state(&self, state: &RuleState) -> StoreResult<()> {
        let name = state.name.clone();
        let json = to_json(state)?;
        self.write(move |txn| {
            let mut states = txn.open_table(RULE_STATES).map_err(be)?;
            states.insert(name.as_str(), json.as_str()).map_err(be)?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn rule_state(&self, name: &str) -> StoreResult<Option<RuleState>> {
        let name = name.to_string();
        self.read(move |txn| {
            let states = txn.open_table(RULE_STATES).map_err(be)?;
            match states.get(name.as_str()).map_err(be)? {
                Some(json) => Ok(Some(from_json(json.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    pub(crate) async fn rule_states(&self) -> StoreResult<Vec<RuleState>> {
        self.read(|txn| {
            let states = txn.open_table(RULE_STATES).map_err(be)?;
            let mut out = Vec::new();
            for item in states.iter().map_err(be)? {
                let (_, json) = item.map_err(be)?;
                out.push(from_json(json.value())?);
            }
            Ok(out)
        })
        .await
    }

    // --- schema ---

    pub(crate) async fn schema(&self) -> StoreResult<Option<String>> {
        self.read(|txn| {
            let settings = txn.open_table(SETTINGS).map_err(be)?;
            Ok(settings
                .get(SCHEMA)
                .map_err(be)?
                .map(|text| text.value().to_string()))
        })
        .await
    }

    pub(crate) async fn put_schema(&self, text: &str) -> StoreResult<()> {
        let text = text.to_string();
        self.write(move |txn| {
            let mut settings = txn.open_table(SETTINGS).map_err(be)?;
            settings.insert(SCHEMA, text.as_str()).map_err(be)?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn marker(&self) -> StoreResult<Option<String>> {
        self.read(|txn| {
            let settings = txn.open_table(SETTINGS).map_err(be)?;
            Ok(settings
                .get(MARKER)
                .map_err(be)?
                .map(|text| text.value().to_string()))
        })
        .await
    }

    pub(crate) async fn put_marker(&self, id: &str) -> StoreResult<()> {
        let id = id.to_string();
        self.write(move |txn| {
            let mut settings = txn.open_table(SETTINGS).map_err(be)?;
            settings.insert(MARKER, id.as_str()).map_err(be)?;
            Ok(())
        })
        .await
    }

    // --- audit ---

    pub(crate) async fn append_audit(&self, mut entry: AuditEntry) -> StoreResult<u64> {
        self.write(move |txn| {
            let mut audit = txn.open_table(AUDIT).map_err(be)?;
            let last = audit
                .last()
                .map_err(be)?
                .map(|(k, _)| k.value())
                .unwrap_or(0);
            entry.seq = last + 1;
            audit
                .insert(entry.seq, to_json(&entry)?.as_str())
                .map_err(be)?;
            Ok(entry.seq)
        })
        .await
    }

    pub(crate) async fn audit(&self, after_seq: u64, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        self.read(move |txn| {
            let audit = txn.open_table(AUDIT).map_err(be)?;
            let mut out = Vec::new();
            let range = audit
                .range::<u64>((Bound::Excluded(after_seq), Bound::Unbounded))
                .map_err(be)?;
            for item in range.take(limit) {
                let (_, json) = item.map_err(be)?;
                out.push(from_json(json.value())?);
            }
            Ok(out)
        })
        .await
    }

    // --- alerts ---

    pub(crate) async fn put_alert(&self, alert: &StoredAlert) -> StoreResult<bool> {
        let id = alert.id.clone();
        let at = alert.at;
        let json = to_json(alert)?;
        let max = u64::try_from(self.max_alerts).unwrap_or(u64::MAX);
        // Duplicates are common (fan-out retries): spot them without a
        // write transaction, which costs a sync to disk.
        let known = alert.id.clone();
        let seen = self
            .read(move |txn| {
                let alerts = txn.open_table(ALERTS).map_err(be)?;
                Ok(alerts.get(known.as_str()).map_err(be)?.is_some())
            })
            .await?;
        if seen {
            return Ok(false);
        }
        // Stored since the check above: nothing written.
        self.write(move |txn| insert_alert(txn, &id, at, &json, max))
            .await
    }

    /// Several alerts in one write transaction (one sync to disk): for each,
    /// whether it was new.
    pub(crate) async fn put_alerts(&self, batch: &[StoredAlert]) -> StoreResult<Vec<bool>> {
        let rows = batch
            .iter()
            .map(|a| Ok((a.id.clone(), a.at, to_json(a)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        let max = u64::try_from(self.max_alerts).unwrap_or(u64::MAX);
        self.write(move |txn| {
            rows.iter()
                .map(|(id, at, json)| insert_alert(txn, id, *at, json, max))
                .collect()
        })
        .await
    }

    pub(crate) async fn alerts_known(&self, ids: &[String]) -> StoreResult<Vec<bool>> {
        let ids = ids.to_vec();
        self.read(move |txn| {
            let alerts = txn.open_table(ALERTS).map_err(be)?;
            ids.iter()
                .map(|id| Ok(alerts.get(id.as_str()).map_err(be)?.is_some()))
                .collect()
        })
        .await
    }

    pub(crate) async fn alert(&self, id: &str) -> StoreResult<Option<StoredAlert>> {
        let id = id.to_string();
        self.read(move |txn| {
            let alerts = txn.open_table(ALERTS).map_err(be)?;
            match alerts.get(id.as_str()).map_err(be)? {
                Some(json) => Ok(Some(from_json(json.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    pub(crate) async fn query_alerts(
        &self,
        filter: &AlertFilter,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<AlertPage> {
        let filter = filter.clone();
        let after = after.cloned();
        self.read(move |txn| {
            let alerts = txn.open_table(ALERTS).map_err(be)?;
            let by_time = txn.open_table(ALERTS_BY_TIME).map_err(be)?;
            // `from` is inclusive: (from, "") is the smallest key at `from`.
            let lower = filter.from.map(|from| (from, ""));
            // `to` is exclusive: every key at `to` is >= (to, ""). The
            // cursor is exclusive too; the lower of the two bounds wins.
            let mut upper = filter.to.map(|to| (to, ""));
            if let Some(c) = &after {
                let key = (c.at, c.id.as_str());
                if upper.is_none_or(|u| key < u) {
                    upper = Some(key);
                }
            }
            if let (Some(l), Some(u)) = (lower, upper)
                && l >= u
            {
                return Ok(page(Vec::new(), limit));
            }
            let bounds = (
                lower.map_or(Bound::Unbounded, Bound::Included),
                upper.map_or(Bound::Unbounded, Bound::Excluded),
            );
            let mut found = Vec::new();
            for item in by_time.range::<(i64, &str)>(bounds).map_err(be)?.rev() {
                let (k, _) = item.map_err(be)?;
                let Some(json) = alerts.get(k.value().1).map_err(be)? else {
                    continue;
                };
                let alert: StoredAlert = from_json(json.value())?;
                if filter_matches(&filter, &alert) {
                    found.push(alert);
                    if found.len() > limit {
                        break;
                    }
                }
            }
            Ok(page(found, limit))
        })
        .await
    }

    pub(crate) async fn alert_count(&self) -> StoreResult<u64> {
        self.read(|txn| txn.open_table(ALERTS).map_err(be)?.len().map_err(be))
            .await
    }

    // --- reference lists ---

    pub(crate) async fn list_names(&self) -> StoreResult<Vec<String>> {
        self.read(|txn| {
            let lists = txn.open_table(LISTS).map_err(be)?;
            let mut out = Vec::new();
            for item in lists.iter().map_err(be)? {
                let (name, _) = item.map_err(be)?;
                out.push(name.value().to_string());
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn get_list(&self, name: &str) -> StoreResult<Option<Vec<String>>> {
        let name = name.to_string();
        self.read(move |txn| {
            let lists = txn.open_table(LISTS).map_err(be)?;
            if lists.get(name.as_str()).map_err(be)?.is_none() {
                return Ok(None);
            }
            let entries = txn.open_table(LIST_ENTRIES).map_err(be)?;
            let end = after_key(&name);
            let mut out = Vec::new();
            for item in entries
                .range((name.as_str(), "")..(end.as_str(), ""))
                .map_err(be)?
            {
                let (k, _) = item.map_err(be)?;
                out.push(k.value().1.to_string());
            }
            Ok(Some(out))
        })
        .await
    }

    pub(crate) async fn put_list(&self, name: &str, entries: &[String]) -> StoreResult<()> {
        let name = name.to_string();
        let entries = entries.to_vec();
        self.write(move |txn| {
            let mut lists = txn.open_table(LISTS).map_err(be)?;
            lists.insert(name.as_str(), ()).map_err(be)?;
            let mut table = txn.open_table(LIST_ENTRIES).map_err(be)?;
            let end = after_key(&name);
            table
                .retain_in((name.as_str(), "")..(end.as_str(), ""), |_, _| false)
                .map_err(be)?;
            for entry in &entries {
                table
                    .insert((name.as_str(), entry.as_str()), ())
                    .map_err(be)?;
            }
            bump_lists_revision(txn)
        })
        .await
    }

    pub(crate) async fn add_to_list(&self, name: &str, entries: &[String]) -> StoreResult<usize> {
        let name = name.to_string();
        let entries = entries.to_vec();
        self.write(move |txn| {
            let lists = txn.open_table(LISTS).map_err(be)?;
            if lists.get(name.as_str()).map_err(be)?.is_none() {
                return Err(StoreError::NotFound(format!("list {name:?}")));
            }
            let mut table = txn.open_table(LIST_ENTRIES).map_err(be)?;
            let mut added = 0;
            for entry in &entries {
                if table
                    .insert((name.as_str(), entry.as_str()), ())
                    .map_err(be)?
                    .is_none()
                {
                    added += 1;
                }
            }
            if added > 0 {
                bump_lists_revision(txn)?;
            }
            Ok(added)
        })
        .await
    }

    pub(crate) async fn remove_from_list(
        &self,
        name: &str,
        entries: &[String],
    ) -> StoreResult<usize> {
        let name = name.to_string();
        let entries = entries.to_vec();
        self.write(move |txn| {
            let lists = txn.open_table(LISTS).map_err(be)?;
            if lists.get(name.as_str()).map_err(be)?.is_none() {
                return Err(StoreError::NotFound(format!("list {name:?}")));
            }
            let mut table = txn.open_table(LIST_ENTRIES).map_err(be)?;
            let mut removed = 0;
            for entry in &entries {
                if table
                    .remove((name.as_str(), entry.as_str()))
                    .map_err(be)?
                    .is_some()
                {
                    removed += 1;
                }
            }
            if removed > 0 {
                bump_lists_revision(txn)?;
            }
            Ok(removed)
        })
        .await
    }

    pub(crate) async fn delete_list(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_string();
        self.write(move |txn| {
            let mut lists = txn.open_table(LISTS).map_err(be)?;
            if lists.remove(name.as_str()).map_err(be)?.is_none() {
                return Ok(false);
            }
            let mut table = txn.open_table(LIST_ENTRIES).map_err(be)?;
            let end = after_key(&name);
            table
                .retain_in((name.as_str(), "")..(end.as_str(), ""), |_, _| false)
                .map_err(be)?;
            bump_lists_revision(txn)?;
            Ok(true)
        })
        .await
    }

    pub(crate) async fn lists_revision(&self) -> StoreResult<u64> {
        self.read(|txn| {
            let counters = txn.open_table(COUNTERS).map_err(be)?;
            Ok(counters
                .get(LISTS_REVISION)
                .map_err(be)?
                .map_or(0, |v| v.value()))
        })
        .await
    }

    // --- webhooks ---

    pub(crate) async fn put_webhook(&self, webhook: &Webhook) -> StoreResult<()> {
        let id = webhook.id.clone();
        let json = to_json(webhook)?;
        self.write(move |txn| {
            let mut webhooks = txn.open_table(WEBHOOKS).map_err(be)?;
            webhooks.insert(id.as_str(), json.as_str()).map_err(be)?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn webhook(&self, id: &str) -> StoreResult<Option<Webhook>> {
        let id = id.to_string();
        self.read(move |txn| {
            let webhooks = txn.open_table(WEBHOOKS).map_err(be)?;
            match webhooks.get(id.as_str()).map_err(be)? {
                Some(json) => Ok(Some(from_json(json.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    pub(crate) async fn webhooks(&self) -> StoreResult<Vec<Webhook>> {
        self.read(|txn| {
            let webhooks = txn.open_table(WEBHOOKS).map_err(be)?;
            let mut out = Vec::new();
            for item in webhooks.iter().map_err(be)? {
                let (_, json) = item.map_err(be)?;
                out.push(from_json(json.value())?);
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn delete_webhook(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_string();
        self.write(move |txn| {
            let existed = txn
                .open_table(WEBHOOKS)
                .map_err(be)?
                .remove(id.as_str())
                .map_err(be)?
                .is_some();
            PENDING.remove_all_of(txn, &id)?;
            DEAD.remove_all_of(txn, &id)?;
            let mut log = txn.open_table(DELIVERY_LOG).map_err(be)?;
            log.retain_in((id.as_str(), 0u64)..=(id.as_str(), u64::MAX), |_, _| false)
                .map_err(be)?;
            Ok(existed)
        })
        .await
    }

    // --- webhook deliveries ---

    pub(crate) async fn enqueue_delivery(
        &self,
        delivery: &Delivery,
        dedup_until: i64,
    ) -> StoreResult<bool> {
        // A duplicate needs no write transaction (which costs a sync to
        // disk): spot it in a read one first.
        let (webhook, alert_id) = (delivery.webhook.clone(), delivery.alert_id.clone());
        let created_at = delivery.created_at;
        let dedup_live = self
            .read(move |txn| {
                let dedup = txn.open_table(DEDUP).map_err(be)?;
                let expiry = dedup
                    .get((webhook.as_str(), alert_id.as_str()))
                    .map_err(be)?
                    .map(|e| e.value());
                Ok(expiry.is_some_and(|e| e > created_at))
            })
            .await?;
        if dedup_live {
            return Ok(false);
        }
        let delivery = delivery.clone();
        self.write(move |txn| {
            let (webhook, alert_id) = (delivery.webhook.as_str(), delivery.alert_id.as_str());
            {
                let mut dedup = txn.open_table(DEDUP).map_err(be)?;
                let mut by_expiry = txn.open_table(DEDUP_BY_EXPIRY).map_err(be)?;
                purge_expired_dedup(&mut dedup, &mut by_expiry, delivery.created_at)?;
                let expiry = dedup
                    .get((webhook, alert_id))
                    .map_err(be)?
                    .map(|e| e.value());
                if let Some(expiry) = expiry {
                    if expiry > delivery.created_at {
                        // Recorded since the check above.
                        return Ok(false);
                    }
                    by_expiry.remove((expiry, webhook, alert_id)).map_err(be)?;
                }
                dedup.insert((webhook, alert_id), dedup_until).map_err(be)?;
                by_expiry
                    .insert((dedup_until, webhook, alert_id), ())
                    .map_err(be)?;
            }
            PENDING.insert(txn, &delivery)?;
            Ok(true)
        })
        .await
    }

    pub(crate) async fn due_deliveries(
        &self,
        now: i64,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        self.read(move |txn| PENDING.due(txn, now, limit)).await
    }

    pub(crate) async fn pending_for(
        &self,
        webhook: &str,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let webhook = webhook.to_string();
        self.read(move |txn| PENDING.list(txn, Some(&webhook), None, limit))
            .await
    }

    pub(crate) async fn update_delivery(&self, delivery: &Delivery) -> StoreResult<()> {
        let delivery = delivery.clone();
        self.write(move |txn| {
            if PENDING
                .remove(txn, &delivery.webhook, &delivery.msg_id)?
                .is_none()
            {
                return Err(StoreError::NotFound(format!(
                    "pending delivery {:?} of webhook {:?}",
                    delivery.msg_id, delivery.webhook
                )));
            }
            PENDING.insert(txn, &delivery)
        })
        .await
    }

    pub(crate) async fn complete_delivery(&self, webhook: &str, msg_id: &str) -> StoreResult<bool> {
        let (webhook, msg_id) = (webhook.to_string(), msg_id.to_string());
        self.write(move |txn| Ok(PENDING.remove(txn, &webhook, &msg_id)?.is_some()))
            .await
    }

    pub(crate) async fn pending_stats(&self) -> StoreResult<(u64, Option<i64>)> {
        self.read(|txn| {
            let count = txn
                .open_table(PENDING.records)
                .map_err(be)?
                .len()
                .map_err(be)?;
            let oldest = txn
                .open_table(PENDING.by_age)
                .map_err(be)?
                .first()
                .map_err(be)?
                .map(|(k, _)| k.value().0);
            Ok((count, oldest))
        })
        .await
    }

    // --- dead letters ---

    pub(crate) async fn dead_letter(&self, delivery: &Delivery) -> StoreResult<()> {
        let delivery = delivery.clone();
        self.write(move |txn| {
            PENDING.remove(txn, &delivery.webhook, &delivery.msg_id)?;
            DEAD.insert(txn, &delivery)
        })
        .await
    }

    pub(crate) async fn dead_letters(
        &self,
        webhook: Option<&str>,
        after: Option<&DeadCursor>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let webhook = webhook.map(str::to_string);
        let after = after.cloned();
        self.read(move |txn| DEAD.list(txn, webhook.as_deref(), after.as_ref(), limit))
            .await
    }

    pub(crate) async fn take_dead_letter(
        &self,
        webhook: &str,
        msg_id: &str,
    ) -> StoreResult<Option<Delivery>> {
        let (webhook, msg_id) = (webhook.to_string(), msg_id.to_string());
        self.write(move |txn| DEAD.remove(txn, &webhook, &msg_id))
            .await
    }

    // --- delivery log ---

    pub(crate) async fn log_attempt(&self, attempt: &DeliveryAttempt) -> StoreResult<()> {
        let webhook = attempt.webhook.clone();
        let json = to_json(attempt)?;
        let max = u64::try_from(DELIVERY_LOG_MAX).unwrap_or(u64::MAX);
        self.write(move |txn| {
            let mut log = txn.open_table(DELIVERY_LOG).map_err(be)?;
            let all = (webhook.as_str(), 0u64)..=(webhook.as_str(), u64::MAX);
            let first = log
                .range(all.clone())
                .map_err(be)?
                .next()
                .transpose()
                .map_err(be)?
                .map(|(k, _)| k.value().1);
            let last = log
                .range(all)
                .map_err(be)?
                .next_back()
                .transpose()
                .map_err(be)?
                .map_or(0, |(k, _)| k.value().1);
            let n = last.checked_add(1).ok_or_else(|| {
                StoreError::Backend(format!("webhook {webhook:?}: delivery log numbering"))
            })?;
            log.insert((webhook.as_str(), n), json.as_str())
                .map_err(be)?;
            // Numbers are consecutive (only the oldest are ever removed):
            // keep n - max + 1 ..= n.
            let keep_from = n.saturating_sub(max - 1);
            if first.is_some_and(|f| f < keep_from) {
                log.retain_in(
                    (webhook.as_str(), 0u64)..(webhook.as_str(), keep_from),
                    |_, _| false,
                )
                .map_err(be)?;
            }
            Ok(())
        })
        .await
    }

    pub(crate) async fn delivery_log(
        &self,
        webhook: &str,
        limit: usize,
    ) -> StoreResult<Vec<DeliveryAttempt>> {
        let webhook = webhook.to_string();
        self.read(move |txn| {
            let log = txn.open_table(DELIVERY_LOG).map_err(be)?;
            let mut out = Vec::new();
            let range = log
                .range((webhook.as_str(), 0u64)..=(webhook.as_str(), u64::MAX))
                .map_err(be)?;
            for item in range.rev().take(limit) {
                let (_, json) = item.map_err(be)?;
                out.push(from_json(json.value())?);
            }
            Ok(out)
        })
        .await
    }

    // --- checkpoints ---

    /// All three steps of a put in one write transaction: the chunks, the
    /// manifest switch, the deletion of older chunks. The commit is the
    /// switch; before it, nothing of the put is visible.
    pub(crate) async fn put_checkpoint(
        &self,
        manifest: CheckpointManifest,
        shards: Vec<(u16, Vec<u8>)>,
    ) -> StoreResult<CheckpointManifest> {
        let chunk = self.checkpoint_chunk;
        let json = to_json(&manifest)?;
        self.write(move |txn| {
            stage_checkpoint(txn, &manifest, &shards, chunk)?;
            txn.open_table(SETTINGS)
                .map_err(be)?
                .insert(CHECKPOINT, json.as_str())
                .map_err(be)?;
            // Every id below the new one: the previous checkpoint and any
            // unfinished put's leftovers.
            txn.open_table(CHECKPOINT_CHUNKS)
                .map_err(be)?
                .retain_in(..(manifest.id, 0u16, 0u32), |_, _| false)
                .map_err(be)?;
            Ok(manifest)
        })
        .await
    }

    /// The chunks alone, committed without the switch.
    pub(crate) async fn stage_checkpoint(
        &self,
        manifest: CheckpointManifest,
        shards: Vec<(u16, Vec<u8>)>,
    ) -> StoreResult<CheckpointManifest> {
        let chunk = self.checkpoint_chunk;
        self.write(move |txn| {
            stage_checkpoint(txn, &manifest, &shards, chunk)?;
            Ok(manifest)
        })
        .await
    }

    pub(crate) async fn checkpoint(&self) -> StoreResult<Option<CheckpointManifest>> {
        self.read(|txn| {
            let settings = txn.open_table(SETTINGS).map_err(be)?;
            match settings.get(CHECKPOINT).map_err(be)? {
                Some(json) => Ok(Some(from_json(json.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    pub(crate) async fn checkpoint_shard(
        &self,
        id: u64,
        shard: u16,
    ) -> StoreResult<Option<Vec<u8>>> {
        // One read transaction: the manifest and the chunks of one moment.
        self.read(move |txn| {
            let settings = txn.open_table(SETTINGS).map_err(be)?;
            let current: Option<CheckpointManifest> = settings
                .get(CHECKPOINT)
                .map_err(be)?
                .map(|json| from_json(json.value()))
                .transpose()?;
            let manifest = current
                .filter(|m| m.id == id)
                .ok_or_else(|| StoreError::NotFound(format!("checkpoint {id}")))?;
            let Some(entry) = manifest.shards.iter().find(|e| e.shard == shard) else {
                return Ok(None);
            };
            let chunks = txn.open_table(CHECKPOINT_CHUNKS).map_err(be)?;
            let blob = join_chunks(id, entry, |i, out| {
                match chunks.get((id, shard, i)).map_err(be)? {
                    Some(part) => {
                        out.extend_from_slice(part.value());
                        Ok(true)
                    }
                    None => Ok(false),
                }
            })?;
            Ok(Some(blob))
        })
        .await
    }
}

/// Writes the chunks of `manifest`'s checkpoint (`shards` as
/// `prepare_checkpoint` left them), after removing whatever an unfinished
/// put left under the same id. [`StoreError::Conflict`] if the id is not
/// above the current checkpoint's.
fn stage_checkpoint(
    txn: &WriteTransaction,
    manifest: &CheckpointManifest,
    shards: &[(u16, Vec<u8>)],
    chunk: usize,
) -> StoreResult<()> {
    let id = manifest.id;
    let current = txn
        .open_table(SETTINGS)
        .map_err(be)?
        .get(CHECKPOINT)
        .map_err(be)?
        .map(|json| from_json::<CheckpointManifest>(json.value()))
        .transpose()?;
    if let Some(current) = current
        && current.id >= id
    {
        return Err(StoreError::Conflict(format!(
            "checkpoint {id} is not newer than the current checkpoint {}",
            current.id
        )));
    }
    let mut chunks = txn.open_table(CHECKPOINT_CHUNKS).map_err(be)?;
    chunks
        .retain_in((id, 0u16, 0u32)..=(id, u16::MAX, u32::MAX), |_, _| false)
        .map_err(be)?;
    for (shard, blob) in shards {
        for (i, part) in (0u32..).zip(blob.chunks(chunk)) {
            chunks.insert((id, *shard, i), part).map_err(be)?;
        }
    }
    Ok(())
}

fn bump_lists_revision(txn: &WriteTransaction) -> StoreResult<()> {
    let mut counters = txn.open_table(COUNTERS).map_err(be)?;
    let current = counters
        .get(LISTS_REVISION)
        .map_err(be)?
        .map_or(0, |v| v.value());
    counters.insert(LISTS_REVISION, current + 1).map_err(be)?;
    Ok(())
}

/// Removes up to [`DEDUP_PURGE_BATCH`] dedup records that expired by `now`.
fn purge_expired_dedup(
    dedup: &mut redb::Table<(&str, &str), i64>,
    by_expiry: &mut redb::Table<(i64, &str, &str), ()>,
    now: i64,
) -> StoreResult<()> {
    // Expired: expiry <= now, i.e. every key below (now + 1, "", "").
    let upper = match now.checked_add(1) {
        Some(n) => Bound::Excluded((n, "", "")),
        None => Bound::Unbounded,
    };
    let mut expired = Vec::new();
    for item in by_expiry
        .range::<(i64, &str, &str)>((Bound::Unbounded, upper))
        .map_err(be)?
        .take(DEDUP_PURGE_BATCH)
    {
        let (k, _) = item.map_err(be)?;
        let (expiry, webhook, alert_id) = k.value();
        expired.push((expiry, webhook.to_string(), alert_id.to_string()));
    }
    for (expiry, webhook, alert_id) in &expired {
        by_expiry
            .remove((*expiry, webhook.as_str(), alert_id.as_str()))
            .map_err(be)?;
        let current = dedup
            .get((webhook.as_str(), alert_id.as_str()))
            .map_err(be)?
            .map(|e| e.value());
        if current == Some(*expiry) {
            dedup
                .remove((webhook.as_str(), alert_id.as_str()))
                .map_err(be)?;
        }
    }
    Ok(())
}

/// Records keyed by (webhook, msg_id).
type RecordTable = TableDefinition<'static, (&'static str, &'static str), &'static str>;
/// (created_at, msg_id, webhook) index entries.
type AgeIndex = TableDefinition<'static, (i64, &'static str, &'static str), ()>;
/// (webhook, created_at, msg_id) index entries.
type WebhookIndex = TableDefinition<'static, (&'static str, i64, &'static str), ()>;
/// (next_at, created_at, msg_id, webhook) index entries.
type DueIndex = TableDefinition<'static, (i64, i64, &'static str, &'static str), ()>;

/// A set of deliveries (pending or dead) with its indexes. Records are keyed
/// by (webhook, msg_id); the index entries are derived from the stored
/// record, so they are removed with it.
#[derive(Clone, Copy)]
struct Queue {
    /// (webhook, msg_id) → `Delivery` JSON.
    records: RecordTable,
    /// (created_at, msg_id, webhook): the global oldest-first order.
    by_age: AgeIndex,
    /// (webhook, created_at, msg_id): one webhook's oldest-first order.
    of: WebhookIndex,
    /// (next_at, created_at, msg_id, webhook): the due order (pending only).
    due: Option<DueIndex>,
}

impl Queue {
    /// Removes the record and its index entries; returns it.
    fn remove(
        &self,
        txn: &WriteTransaction,
        webhook: &str,
        msg_id: &str,
    ) -> StoreResult<Option<Delivery>> {
        let json = txn
            .open_table(self.records)
            .map_err(be)?
            .remove((webhook, msg_id))
            .map_err(be)?
            .map(|j| j.value().to_string());
        let Some(json) = json else {
            return Ok(None);
        };
        let d: Delivery = from_json(&json)?;
        txn.open_table(self.by_age)
            .map_err(be)?
            .remove((d.created_at, msg_id, webhook))
            .map_err(be)?;
        txn.open_table(self.of)
            .map_err(be)?
            .remove((webhook, d.created_at, msg_id))
            .map_err(be)?;
        if let Some(due) = self.due {
            txn.open_table(due)
                .map_err(be)?
                .remove((d.next_at, d.created_at, msg_id, webhook))
                .map_err(be)?;
        }
        Ok(Some(d))
    }

    /// Stores the record (replacing one with the same key) and its index
    /// entries.
    fn insert(&self, txn: &WriteTransaction, d: &Delivery) -> StoreResult<()> {
        let (webhook, msg_id) = (d.webhook.as_str(), d.msg_id.as_str());
        self.remove(txn, webhook, msg_id)?;
        txn.open_table(self.records)
            .map_err(be)?
            .insert((webhook, msg_id), to_json(d)?.as_str())
            .map_err(be)?;
        txn.open_table(self.by_age)
            .map_err(be)?
            .insert((d.created_at, msg_id, webhook), ())
            .map_err(be)?;
        txn.open_table(self.of)
            .map_err(be)?
            .insert((webhook, d.created_at, msg_id), ())
            .map_err(be)?;
        if let Some(due) = self.due {
            txn.open_table(due)
                .map_err(be)?
                .insert((d.next_at, d.created_at, msg_id, webhook), ())
                .map_err(be)?;
        }
        Ok(())
    }

    /// Removes every record of `webhook`.
    fn remove_all_of(&self, txn: &WriteTransaction, webhook: &str) -> StoreResult<()> {
        let end = after_key(webhook);
        let mut msg_ids = Vec::new();
        {
            let of = txn.open_table(self.of).map_err(be)?;
            for item in of
                .range((webhook, i64::MIN, "")..(end.as_str(), i64::MIN, ""))
                .map_err(be)?
            {
                let (k, _) = item.map_err(be)?;
                msg_ids.push(k.value().2.to_string());
            }
        }
        for msg_id in &msg_ids {
            self.remove(txn, webhook, msg_id)?;
        }
        Ok(())
    }

    /// Up to `limit` records, oldest first: of `webhook`, or of all.
    fn list(
        &self,
        txn: &ReadTransaction,
        webhook: Option<&str>,
        after: Option<&DeadCursor>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let records = txn.open_table(self.records).map_err(be)?;
        let mut out = Vec::new();
        let mut push = |webhook: &str, msg_id: &str| -> StoreResult<()> {
            if let Some(json) = records.get((webhook, msg_id)).map_err(be)? {
                out.push(from_json(json.value())?);
            }
            Ok(())
        };
        match webhook {
            Some(webhook) => {
                let of = txn.open_table(self.of).map_err(be)?;
                let end = after_key(webhook);
                let start = match after {
                    Some(c) => Bound::Excluded((webhook, c.created_at, c.msg_id.as_str())),
                    None => Bound::Included((webhook, i64::MIN, "")),
                };
                for item in of
                    .range::<(&str, i64, &str)>((
                        start,
                        Bound::Excluded((end.as_str(), i64::MIN, "")),
                    ))
                    .map_err(be)?
                    .take(limit)
                {
                    let (k, _) = item.map_err(be)?;
                    push(webhook, k.value().2)?;
                }
            }
            None => {
                let by_age = txn.open_table(self.by_age).map_err(be)?;
                let start = match after {
                    Some(c) => {
                        Bound::Excluded((c.created_at, c.msg_id.as_str(), c.webhook.as_str()))
                    }
                    None => Bound::Unbounded,
                };
                for item in by_age
                    .range::<(i64, &str, &str)>((start, Bound::Unbounded))
                    .map_err(be)?
                    .take(limit)
                {
                    let (k, _) = item.map_err(be)?;
                    let (_, msg_id, webhook) = k.value();
                    push(webhook, msg_id)?;
                }
            }
        }
        Ok(out)
    }

    /// Up to `limit` records with `next_at <= now`, in due order.
    fn due(&self, txn: &ReadTransaction, now: i64, limit: usize) -> StoreResult<Vec<Delivery>> {
        let Some(due) = self.due else {
            return Ok(Vec::new());
        };
        let due = txn.open_table(due).map_err(be)?;
        let records = txn.open_table(self.records).map_err(be)?;
        // next_at <= now: every key below (now + 1, MIN, "", "").
        let upper = match now.checked_add(1) {
            Some(n) => Bound::Excluded((n, i64::MIN, "", "")),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in due
            .range::<(i64, i64, &str, &str)>((Bound::Unbounded, upper))
            .map_err(be)?
            .take(limit)
        {
            let (k, _) = item.map_err(be)?;
            let (_, _, msg_id, webhook) = k.value();
            if let Some(json) = records.get((webhook, msg_id)).map_err(be)? {
                out.push(from_json(json.value())?);
            }
        }
        Ok(out)
    }
}

/// Inserts one alert unless its id is stored (then `false`), trimming the
/// oldest beyond `max`.
fn insert_alert(
    txn: &WriteTransaction,
    id: &str,
    at: i64,
    json: &str,
    max: u64,
) -> StoreResult<bool> {
    let mut alerts = txn.open_table(ALERTS).map_err(be)?;
    if alerts.get(id).map_err(be)?.is_some() {
        return Ok(false);
    }
    alerts.insert(id, json).map_err(be)?;
    let mut by_time = txn.open_table(ALERTS_BY_TIME).map_err(be)?;
    by_time.insert((at, id), ()).map_err(be)?;
    while by_time.len().map_err(be)? > max {
        let oldest = match by_time.pop_first().map_err(be)? {
            Some((k, _)) => k.value().1.to_string(),
            None => break,
        };
        alerts.remove(oldest.as_str()).map_err(be)?;
    }
    Ok(true)
}

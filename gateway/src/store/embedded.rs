//! The embedded backend: one redb file, `<dir>/vigil.redb`, records as JSON.
//!
//! redb is synchronous: every operation is one transaction run on tokio's
//! blocking pool. Write transactions are serialized by redb, which makes the
//! read-then-write steps (next version number, next audit seq, "is this id
//! new") atomic.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};

use super::{
    AlertFilter, AlertPage, ApiKey, AuditEntry, Cursor, DEFAULT_MAX_ALERTS, RuleState, RuleVersion,
    StoreError, StoreResult, StoredAlert, filter_matches, from_json, page, to_json,
};

/// Key name → `ApiKey` JSON.
const KEYS: TableDefinition<&str, &str> = TableDefinition::new("keys");
/// Key secret hash → key name.
const KEY_HASHES: TableDefinition<&str, &str> = TableDefinition::new("key_hashes");
/// (rule, version) → `RuleVersion` JSON.
const VERSIONS: TableDefinition<(&str, u32), &str> = TableDefinition::new("versions");
/// Rule name → `RuleState` JSON.
const RULE_STATES: TableDefinition<&str, &str> = TableDefinition::new("rule_states");
/// Single text values (`schema`).
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

const SCHEMA: &str = "schema";
const LISTS_REVISION: &str = "lists_revision";

/// The redb store. Clones share the database.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    max_alerts: usize,
}

fn be(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("redb: {e}"))
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

/// The exclusive upper bound of every `(list, entry)` key of `list`: the
/// smallest first component greater than `list` is `list` + NUL.
fn after_list(list: &str) -> String {
    format!("{list}\0")
}

impl EmbeddedStore {
    pub(crate) async fn open(dir: &Path) -> StoreResult<EmbeddedStore> {
        let dir = dir.to_path_buf();
        let db = blocking(move || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))?;
            let path = dir.join("vigil.redb");
            let db = Database::create(&path)
                .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
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
            txn.commit().map_err(be)?;
            Ok(db)
        })
        .await?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            max_alerts: DEFAULT_MAX_ALERTS,
        })
    }

    pub(crate) fn with_max_alerts(mut self, n: usize) -> EmbeddedStore {
        self.max_alerts = n;
        self
    }

    pub(crate) fn max_alerts(&self) -> usize {
        self.max_alerts
    }

    /// Runs `f` in a read transaction (a consistent snapshot).
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> StoreResult<T> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        blocking(move || {
            let txn = db.begin_read().map_err(be)?;
            f(&txn)
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
        let db = Arc::clone(&self.db);
        blocking(move || {
            let txn = db.begin_write().map_err(be)?;
            let out = f(&txn)?;
            txn.commit().map_err(be)?;
            Ok(out)
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
        self.write(move |txn| {
            let mut alerts = txn.open_table(ALERTS).map_err(be)?;
            if alerts.get(id.as_str()).map_err(be)?.is_some() {
                // Stored since the check above: nothing to write.
                return Ok(false);
            }
            alerts.insert(id.as_str(), json.as_str()).map_err(be)?;
            let mut by_time = txn.open_table(ALERTS_BY_TIME).map_err(be)?;
            by_time.insert((at, id.as_str()), ()).map_err(be)?;
            while by_time.len().map_err(be)? > max {
                let oldest = match by_time.pop_first().map_err(be)? {
                    Some((k, _)) => k.value().1.to_string(),
                    None => break,
                };
                alerts.remove(oldest.as_str()).map_err(be)?;
            }
            Ok(true)
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
            let end = after_list(&name);
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
            let end = after_list(&name);
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
            let end = after_list(&name);
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

//! Reference lists (`in list "name"`): every change reaches the nodes through
//! the router, in the event stream.

use super::{ApiError, ApiResult, AppState, Body, Caller, reply, unsupported};
use crate::router::Command;
use crate::store::Role;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use std::collections::HashSet;

/// How large a list may be (`--max-list-entries`, `--max-list-bytes`,
/// `--max-list-entry-bytes`). Every node holds each list once in memory, so
/// these bound what one analyst can make every node hold.
#[derive(Debug, Clone, Copy)]
pub struct ListLimits {
    /// Distinct entries per list (413 `list_too_large` beyond).
    pub max_entries: usize,
    /// Bytes of all entries of a list together (413 `list_too_large` beyond).
    pub max_bytes: usize,
    /// Bytes of one entry (400 `list_entry_too_long` beyond). The default is
    /// the default largest event: a longer entry could never equal a field.
    pub max_entry_bytes: usize,
}

impl Default for ListLimits {
    fn default() -> Self {
        ListLimits {
            max_entries: 1_000_000,
            max_bytes: 64 << 20,
            max_entry_bytes: 1 << 20,
        }
    }
}

impl ListLimits {
    /// Checks a list-to-be: `kept` entries already in it (trusted distinct)
    /// plus `adding`. Entries over the length cap are refused first.
    fn check(&self, name: &str, kept: &[String], adding: &[String]) -> ApiResult<()> {
        if let Some((i, e)) = adding
            .iter()
            .enumerate()
            .find(|(_, e)| e.len() > self.max_entry_bytes)
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "list_entry_too_long",
                format!(
                    "entry {} of list `{name}` is {} bytes; an entry is at most {} bytes",
                    i + 1,
                    e.len(),
                    self.max_entry_bytes
                ),
            ));
        }
        let kept_set: HashSet<&str> = kept.iter().map(String::as_str).collect();
        let mut new: HashSet<&str> = HashSet::new();
        let mut bytes: usize = kept.iter().map(String::len).sum();
        for e in adding {
            if !kept_set.contains(e.as_str()) && new.insert(e.as_str()) {
                bytes = bytes.saturating_add(e.len());
            }
        }
        let count = kept.len() + new.len();
        if count > self.max_entries || bytes > self.max_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "list_too_large",
                format!(
                    "list `{name}` would hold {count} entries of {bytes} bytes; a list holds at most {} entries and {} bytes",
                    self.max_entries, self.max_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// Sends the stored list to every node. Reads and sends under one lock, so a
/// publisher that read an older list can never send it after a newer one.
pub async fn publish(st: &AppState, name: &str) -> ApiResult<Vec<String>> {
    let _order = st.list_lock.lock().await;
    send(st, name).await
}

/// [`publish`] for a caller that holds `list_lock`.
async fn send(st: &AppState, name: &str) -> ApiResult<Vec<String>> {
    let entries = st.store.get_list(name).await?.unwrap_or_default();
    st.command(Command::SetList {
        name: name.to_string(),
        entries: entries.clone(),
    });
    Ok(entries)
}

/// Every stored list, for the one-engine runs (tests, diffs, backtests) that
/// must see what the nodes see.
pub(super) async fn stored(st: &AppState) -> ApiResult<Vec<(String, Vec<String>)>> {
    let mut lists = vec![];
    for name in st.store.list_names().await? {
        if let Some(entries) = st.store.get_list(&name).await? {
            lists.push((name, entries));
        }
    }
    Ok(lists)
}

fn check_name(name: &str) -> ApiResult<()> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "a list name is 1 to 128 printable characters",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct NewList {
    name: String,
    #[serde(default)]
    entries: Vec<String>,
}

#[derive(Deserialize)]
struct Entries {
    entries: Vec<String>,
}

/// Every list name with its size.
#[utoipa::path(get, path = "/v1/lists", tag = "lists", security(("api_key" = [])),
    responses((status = 200, description = "`[{name, entries}]` (entries = count)")))]
pub async fn list_lists(State(st): State<AppState>, _c: Caller) -> ApiResult<Response> {
    let mut out = vec![];
    for n in st.store.list_names().await? {
        let len = st.store.get_list(&n).await?.map_or(0, |l| l.len());
        out.push(serde_json::json!({"name": n, "entries": len}));
    }
    Ok(reply(StatusCode::OK, out))
}

/// Create a list: `{"name": ..., "entries": [...]}` (409 if it exists).
#[utoipa::path(post, path = "/v1/lists", tag = "lists", security(("api_key" = [])),
    request_body(content = String, description = "{\"name\": ..., \"entries\": [...]}", content_type = "application/json"),
    responses((status = 201, description = "`{name, entries}`"), (status = 409, description = "Exists")))]
pub async fn create_list(State(st): State<AppState>, c: Caller, body: Body) -> ApiResult<Response> {
    c.require(Role::Analyst, "creating a list")?;
    let l: NewList = body.json()?;
    check_name(&l.name)?;
    // Checked, stored and sent under one lock: no change slips in between.
    let order = st.list_lock.lock().await;
    if st.store.get_list(&l.name).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("list `{}` exists", l.name),
        ));
    }
    st.config.lists.check(&l.name, &[], &l.entries)?;
    st.store.put_list(&l.name, &l.entries).await?;
    let entries = send(&st, &l.name).await?;
    drop(order);
    st.catalog
        .audit(
            &c.name,
            "list.create",
            &format!("list:{}", l.name),
            serde_json::Value::Null,
            serde_json::json!({"entries": entries.len()}),
        )
        .await?;
    Ok(reply(
        StatusCode::CREATED,
        serde_json::json!({"name": l.name, "entries": entries}),
    ))
}

async fn must_exist(st: &AppState, name: &str) -> ApiResult<Vec<String>> {
    st.store
        .get_list(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no list named `{name}`")))
}

/// A list and its entries.
#[utoipa::path(get, path = "/v1/lists/{name}", tag = "lists", security(("api_key" = [])),
    params(("name" = String, Path, description = "List name")),
    responses((status = 200, description = "`{name, entries}`"), (status = 404, description = "Unknown list")))]
pub async fn get_list(
    State(st): State<AppState>,
    _c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let entries = must_exist(&st, &name).await?;
    Ok(reply(
        StatusCode::OK,
        serde_json::json!({"name": name, "entries": entries}),
    ))
}

/// Bulk load: replace (or create) the list from CSV (first column; a header
/// row named `value` or `entry` is skipped), NDJSON (strings or `{"value": …}`)
/// or a JSON array.
#[utoipa::path(put, path = "/v1/lists/{name}", tag = "lists", security(("api_key" = [])),
    params(("name" = String, Path, description = "List name")),
    request_body(content = String, description = "text/csv, application/x-ndjson or application/json array", content_type = "text/csv"),
    responses((status = 200, description = "`{name, entries: count}`")))]
pub async fn replace_list(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    c.require(Role::Analyst, "loading a list")?;
    check_name(&name)?;
    let entries = parse_bulk(&body)?;
    st.config.lists.check(&name, &[], &entries)?;
    let order = st.list_lock.lock().await;
    let before = st.store.get_list(&name).await?.map(|l| l.len());
    st.store.put_list(&name, &entries).await?;
    let entries = send(&st, &name).await?;
    drop(order);
    st.catalog
        .audit(
            &c.name,
            "list.load",
            &format!("list:{name}"),
            serde_json::json!({"entries": before}),
            serde_json::json!({"entries": entries.len()}),
        )
        .await?;
    Ok(reply(
        StatusCode::OK,
        serde_json::json!({"name": name, "entries": entries.len()}),
    ))
}

fn parse_bulk(body: &Body) -> ApiResult<Vec<String>> {
    let text = body.text()?;
    match body.content_type().as_str() {
        "text/csv" => {
            let mut out = vec![];
            for (i, line) in text.lines().enumerate() {
                let first = line
                    .split(',')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .trim_matches('"');
                if first.is_empty() || (i == 0 && (first == "value" || first == "entry")) {
                    continue;
                }
                out.push(first.to_string());
            }
            Ok(out)
        }
        "application/x-ndjson" | "application/jsonl" => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(
                |(i, l)| match serde_json::from_str::<serde_json::Value>(l) {
                    Ok(serde_json::Value::String(s)) => Ok(s),
                    Ok(serde_json::Value::Object(o)) => match o.get("value") {
                        Some(serde_json::Value::String(s)) => Ok(s.clone()),
                        _ => Err(ApiError::bad_request(format!(
                            "line {}: expected a string or {{\"value\": \"...\"}}",
                            i + 1
                        ))),
                    },
                    _ => Err(ApiError::bad_request(format!(
                        "line {}: expected a string or {{\"value\": \"...\"}}",
                        i + 1
                    ))),
                },
            )
            .collect(),
        "application/json" => body.json::<Vec<String>>(),
        other => Err(unsupported(
            other,
            "text/csv, application/x-ndjson or a JSON array of strings",
        )),
    }
}

/// Delete a list.
#[utoipa::path(delete, path = "/v1/lists/{name}", tag = "lists", security(("api_key" = [])),
    params(("name" = String, Path, description = "List name")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "Unknown list")))]
pub async fn delete_list(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    c.require(Role::Analyst, "deleting a list")?;
    let before = must_exist(&st, &name).await?;
    st.store.delete_list(&name).await?;
    publish(&st, &name).await?;
    st.catalog
        .audit(
            &c.name,
            "list.delete",
            &format!("list:{name}"),
            serde_json::json!({"entries": before.len()}),
            serde_json::Value::Null,
        )
        .await?;
    Ok(reply(StatusCode::NO_CONTENT, ()))
}

/// Add entries: `{"entries": [...]}`.
#[utoipa::path(post, path = "/v1/lists/{name}/entries", tag = "lists", security(("api_key" = [])),
    params(("name" = String, Path, description = "List name")),
    request_body(content = String, description = "{\"entries\": [...]}", content_type = "application/json"),
    responses((status = 200, description = "`{added, entries: count}`"), (status = 404, description = "Unknown list")))]
pub async fn add_entries(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    change_entries(st, c, name, body, true).await
}

/// Remove entries: `{"entries": [...]}`.
#[utoipa::path(delete, path = "/v1/lists/{name}/entries", tag = "lists", security(("api_key" = [])),
    params(("name" = String, Path, description = "List name")),
    request_body(content = String, description = "{\"entries\": [...]}", content_type = "application/json"),
    responses((status = 200, description = "`{removed, entries: count}`"), (status = 404, description = "Unknown list")))]
pub async fn remove_entries(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    change_entries(st, c, name, body, false).await
}

/// Adds (`add`) or removes entries, publishes the list, audits the change.
async fn change_entries(
    st: AppState,
    c: Caller,
    name: String,
    body: Body,
    add: bool,
) -> ApiResult<Response> {
    c.require(Role::Analyst, "changing a list")?;
    let e: Entries = body.json()?;
    let order = st.list_lock.lock().await;
    let current = must_exist(&st, &name).await?;
    let (n, action, field) = if add {
        st.config.lists.check(&name, &current, &e.entries)?;
        (
            st.store.add_to_list(&name, &e.entries).await?,
            "list.add",
            "added",
        )
    } else {
        (
            st.store.remove_from_list(&name, &e.entries).await?,
            "list.remove",
            "removed",
        )
    };
    let entries = send(&st, &name).await?;
    drop(order);
    let change = serde_json::json!({ field: e.entries });
    let (before, after) = if add {
        (serde_json::Value::Null, change)
    } else {
        (change, serde_json::Value::Null)
    };
    st.catalog
        .audit(&c.name, action, &format!("list:{name}"), before, after)
        .await?;
    Ok(reply(
        StatusCode::OK,
        serde_json::json!({ field: n, "entries": entries.len() }),
    ))
}

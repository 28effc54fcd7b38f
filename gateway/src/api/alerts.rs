//! Events in, alerts out: `POST /v1/events`, the alert log and its SSE stream.

use super::rules::event_lines;
use super::{ApiError, ApiResult, AppState, Body, Caller, reply};
use crate::router::HttpIngest;
use crate::store::{AlertFilter, Mode, Role, StoredAlert};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

/// Ingest one JSON event or a JSON array of events (`application/json`), or
/// an NDJSON batch (`application/x-ndjson`); answers once every accepted
/// event is routed: 200 if any was accepted, 400 (same body) if none was.
#[utoipa::path(post, path = "/v1/events", tag = "events", security(("api_key" = [])),
    request_body(content = String, description = "One JSON event, or NDJSON (one event per line)", content_type = "application/x-ndjson"),
    responses(
        (status = 200, description = "`{accepted, rejected: [{line, reason, message}]}`; `line` is the NDJSON line or the array element (1-based)"),
        (status = 400, description = "Nothing was accepted: the same body, every event's reason"),
        (status = 413, description = "Body over the configured size"),
        (status = 415, description = "Another content type")))]
pub async fn post_events(State(st): State<AppState>, c: Caller, body: Body) -> ApiResult<Response> {
    c.require(Role::Analyst, "sending events")?;
    let numbered: Vec<(usize, Vec<u8>)> = match body.content_type().as_str() {
        "application/json" => match json_array_elements(&body.bytes) {
            // A top-level array is a batch; `line` is then the element's index.
            Some(elements) => elements
                .into_iter()
                .enumerate()
                .map(|(i, e)| (i + 1, e.to_vec()))
                .collect(),
            None => vec![(1, body.bytes.to_vec())],
        },
        "application/x-ndjson" | "application/jsonl" => event_lines(&body)?,
        other => {
            return Err(super::unsupported(
                other,
                "application/json (one event) or application/x-ndjson",
            ));
        }
    };
    let (lines, events): (Vec<usize>, Vec<Vec<u8>>) = numbered.into_iter().unzip();
    let (tx, rx) = tokio::sync::oneshot::channel();
    st.ingest
        .send(HttpIngest {
            events,
            inputs: None,
            offsets: None,
            reply: tx,
        })
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the router is not running",
            )
        })?;
    let results = rx.await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the router stopped",
        )
    })?;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let rejected: Vec<serde_json::Value> = results
        .iter()
        .zip(lines)
        .filter_map(|(r, line)| {
            r.as_ref()
                .err()
                .map(|e| serde_json::json!({"line": line, "reason": e.reason, "message": e.detail}))
        })
        .collect();
    // Nothing accepted (and something refused): 400, with the same body, so
    // a client that checks only the status learns that the events were lost.
    let status = if accepted == 0 && !rejected.is_empty() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(reply(
        status,
        serde_json::json!({"accepted": accepted, "rejected": rejected}),
    ))
}

/// The elements of a top-level JSON array, as byte slices (each decoded as an
/// event on its own, so each gets its own reason); `None` when the body is
/// not an array or its brackets do not balance (then it is decoded whole and
/// gets `malformed_json`). Strings and escapes are skipped; nesting is
/// counted, so commas inside an element do not split it.
fn json_array_elements(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    if bytes[start] != b'[' {
        return None;
    }
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    let mut elements = vec![];
    let mut from = start + 1;
    for (i, &b) in bytes.iter().enumerate().skip(start) {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    let last = &bytes[from..i];
                    let trailing_ok = bytes[i + 1..].iter().all(u8::is_ascii_whitespace);
                    if !trailing_ok {
                        return None;
                    }
                    if !last.iter().all(u8::is_ascii_whitespace) || !elements.is_empty() {
                        elements.push(last);
                    }
                    return Some(elements);
                }
            }
            b',' if depth == 1 => {
                elements.push(&bytes[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::json_array_elements;

    #[test]
    fn array_elements_split_at_top_level_commas_only() {
        let got =
            json_array_elements(br#" [ {"a":[1,2],"s":"x,]\"}"} , 7 ,"y"] "#).expect("an array");
        let got: Vec<&str> = got
            .iter()
            .map(|e| std::str::from_utf8(e).unwrap_or("").trim())
            .collect();
        assert_eq!(got, [r#"{"a":[1,2],"s":"x,]\"}"}"#, "7", r#""y""#]);
        assert_eq!(json_array_elements(b"[]"), Some(vec![]));
        assert_eq!(json_array_elements(br#"{"a":1}"#), None);
        assert_eq!(json_array_elements(b"[1,2"), None);
        assert_eq!(json_array_elements(b"[1]]"), None);
        assert_eq!(json_array_elements(b"[1] x"), None);
    }
}

#[derive(Deserialize, Default)]
pub struct AlertQuery {
    rule: Option<String>,
    key: Option<String>,
    severity: Option<String>,
    mode: Option<Mode>,
    /// RFC 3339 or epoch ms, inclusive.
    from: Option<String>,
    /// RFC 3339 or epoch ms, exclusive.
    to: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    /// SSE: also stream shadow alerts.
    shadow: Option<bool>,
}

fn time_param(name: &str, v: &Option<String>) -> ApiResult<Option<i64>> {
    let Some(s) = v else { return Ok(None) };
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(Some(ms));
    }
    cep_engine::time::parse_rfc3339_ms(s)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(format!("`{name}` must be RFC 3339 or epoch milliseconds"))
        })
}

impl AlertQuery {
    fn filter(&self) -> ApiResult<AlertFilter> {
        Ok(AlertFilter {
            rule: self.rule.clone(),
            key: self.key.clone(),
            severity: self.severity.clone(),
            mode: self.mode,
            from: time_param("from", &self.from)?,
            to: time_param("to", &self.to)?,
        })
    }
}

fn alert_view(a: &StoredAlert) -> serde_json::Value {
    a.alert.clone()
}

/// Query the alert log, newest first, with pagination.
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts", security(("api_key" = [])),
    params(("rule" = Option<String>, Query, description = "Rule name"), ("key" = Option<String>, Query, description = "Key"),
        ("severity" = Option<String>, Query, description = "Severity"), ("mode" = Option<String>, Query, description = "active or shadow"),
        ("from" = Option<String>, Query, description = "Alert time from (RFC 3339 or ms, inclusive)"),
        ("to" = Option<String>, Query, description = "Alert time to (exclusive)"),
        ("limit" = Option<usize>, Query, description = "Page size (default 100, at most 1000)"),
        ("cursor" = Option<String>, Query, description = "`next` of the previous page")),
    responses((status = 200, description = "`{alerts: [alert…], next}`")))]
pub async fn list_alerts(
    State(st): State<AppState>,
    _c: Caller,
    Query(q): Query<AlertQuery>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let page = st
        .store
        .query_alerts(&q.filter()?, q.cursor.as_deref(), limit)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(m) => ApiError::bad_request(m),
            other => other.into(),
        })?;
    let alerts: Vec<serde_json::Value> = page.alerts.iter().map(alert_view).collect();
    Ok(reply(
        StatusCode::OK,
        serde_json::json!({"alerts": alerts, "next": page.next}),
    ))
}

/// The stored alert `id`, or 404.
async fn stored(st: &AppState, id: &str) -> ApiResult<StoredAlert> {
    st.store
        .alert(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no alert with id `{id}`")))
}

/// One alert with the events it matched (the explanation).
#[utoipa::path(get, path = "/v1/alerts/{id}", tag = "alerts", security(("api_key" = [])),
    params(("id" = String, Path, description = "Alert id")),
    responses((status = 200, description = "`{alert, events: {binding: [event…]}}`"), (status = 404, description = "Unknown id")))]
pub async fn get_alert(
    State(st): State<AppState>,
    _c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let a = stored(&st, &id).await?;
    Ok(reply(
        StatusCode::OK,
        serde_json::json!({"alert": a.alert, "events": a.events}),
    ))
}

/// Why an alert fired: per binding the predicate, the fields it read and the
/// matched events; the time the match spans against the rule's `within`;
/// the emitted fields; the rule text of the alert's version.
#[utoipa::path(get, path = "/v1/alerts/{id}/explain", tag = "alerts", security(("api_key" = [])),
    params(("id" = String, Path, description = "Alert id")),
    responses((status = 200, description = "`{alert, rule, version, text, within_ms, span_ms, first_at, last_at, bindings: [{name, type, predicate, fields, events}], where, having, emitted}`"),
        (status = 404, description = "Unknown id")))]
pub async fn explain_alert(
    State(st): State<AppState>,
    _c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let a = stored(&st, &id).await?;
    let version = a.alert["version"].as_u64().unwrap_or(0) as u32;
    let text = st.store.version(&a.rule, version).await?.map(|v| v.text);
    let schema = st.catalog.schema().await?;
    // The rule as it was when it fired (None if that version is gone or no
    // longer compiles: the events are still shown).
    let outline = text.as_deref().and_then(|t| {
        let set = crate::catalog::compile(&schema, t).ok()?;
        let rule = set.rules.iter().find(|r| r.name == a.rule)?;
        Some(set.outline(rule))
    });
    let mut times = vec![];
    let mut bindings = vec![];
    let events = a.events.as_object().cloned().unwrap_or_default();
    let mut names: Vec<String> = outline
        .as_ref()
        .map(|o| o.bindings.iter().map(|b| b.name.clone()).collect())
        .unwrap_or_default();
    names.extend(
        events
            .keys()
            .filter(|k| !names.contains(k))
            .cloned()
            .collect::<Vec<_>>(),
    );
    for name in names {
        let list = events
            .get(&name)
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        let evs: Vec<serde_json::Value> = list
            .into_iter()
            .map(|e| {
                if let Some(ms) = e["ts"]
                    .as_str()
                    .and_then(cep_engine::time::parse_rfc3339_ms)
                {
                    times.push(ms);
                }
                let mut fields = e.as_object().cloned().unwrap_or_default();
                let (id, ty, ts) = (
                    fields.remove("id"),
                    fields.remove("type"),
                    fields.remove("ts"),
                );
                serde_json::json!({"id": id, "type": ty, "ts": ts, "fields": fields})
            })
            .collect();
        let b = outline
            .as_ref()
            .and_then(|o| o.bindings.iter().find(|b| b.name == name));
        bindings.push(serde_json::json!({
            "name": name,
            "type": b.map(|b| b.ty.clone()),
            "predicate": b.and_then(|b| b.predicate.clone()),
            "fields": b.map(|b| b.fields.clone()).unwrap_or_default(),
            "events": evs,
        }));
    }
    let (first, last) = (times.iter().min().copied(), times.iter().max().copied());
    let fmt = |t: Option<i64>| t.map(cep_engine::time::format_ms);
    Ok(reply(
        StatusCode::OK,
        serde_json::json!({
            "alert": a.alert,
            "rule": a.rule,
            "version": version,
            "text": text,
            "within_ms": outline.as_ref().and_then(|o| o.within_ms),
            "span_ms": first.zip(last).map(|(f, l)| l - f),
            "first_at": fmt(first),
            "last_at": fmt(last),
            "bindings": bindings,
            "where": outline.as_ref().and_then(|o| o.where_.clone()),
            "having": outline.as_ref().and_then(|o| o.having.clone()),
            "emitted": a.alert["fields"],
        }),
    ))
}

/// Live alerts as Server-Sent Events (`event: alert`, `id`, `data` = alert JSON).
/// Shadow alerts only with `shadow=true` (or `mode=shadow`).
#[utoipa::path(get, path = "/v1/alerts/stream", tag = "alerts", security(("api_key" = [])),
    params(("rule" = Option<String>, Query, description = "Rule name"), ("key" = Option<String>, Query, description = "Key"),
        ("severity" = Option<String>, Query, description = "Severity"), ("mode" = Option<String>, Query, description = "active or shadow"),
        ("shadow" = Option<bool>, Query, description = "Include shadow alerts")),
    responses((status = 200, description = "text/event-stream", content_type = "text/event-stream")))]
pub async fn stream_alerts(
    State(st): State<AppState>,
    _c: Caller,
    Query(q): Query<AlertQuery>,
) -> ApiResult<Response> {
    let f = q.filter()?;
    let shadow_ok = q.shadow.unwrap_or(false) || q.mode == Some(Mode::Shadow);
    let rx = st.alerts.subscribe();
    let stream = BroadcastStream::new(rx).filter_map(move |item| match item {
        Ok(a) => {
            let a: Arc<StoredAlert> = a;
            let wanted = (a.mode == Mode::Active || shadow_ok)
                && f.mode.is_none_or(|m| m == a.mode)
                && f.rule.as_ref().is_none_or(|r| *r == a.rule)
                && f.key.as_ref().is_none_or(|k| *k == a.key)
                && f.severity.as_ref().is_none_or(|s| *s == a.severity);
            wanted.then(|| {
                Ok::<_, std::convert::Infallible>(
                    SseEvent::default()
                        .event("alert")
                        .id(a.id.clone())
                        .data(a.alert.to_string()),
                )
            })
        }
        // A slow client missed alerts: say how many (it can page the log).
        Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
            Some(Ok(SseEvent::default()
                .event("lagged")
                .data(format!("{{\"missed\":{n}}}"))))
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

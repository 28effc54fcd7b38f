//! Webhook endpoints (admin), their delivery logs, and dead letters.

use super::{ApiError, ApiResult, AppState, Body, Caller, reply};
use crate::store::{DeadCursor, Role, Webhook, WebhookSecret};
use crate::webhooks::{check_url, new_secret};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

#[derive(Deserialize)]
struct NewWebhook {
    url: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    rules: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    min_severity: Option<String>,
    #[serde(default)]
    include_shadow: bool,
}

#[derive(Deserialize)]
struct UpdateWebhook {
    url: Option<String>,
    description: Option<String>,
    rules: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    min_severity: Option<Option<String>>,
    include_shadow: Option<bool>,
    /// `true` re-enables an endpoint disabled by a 410.
    enabled: Option<bool>,
}

fn view(w: &Webhook) -> serde_json::Value {
    serde_json::json!({
        "id": w.id, "url": w.url, "description": w.description, "rules": w.rules,
        "tags": w.tags, "min_severity": w.min_severity, "include_shadow": w.include_shadow,
        "enabled": w.disabled.is_none(), "disabled_reason": w.disabled,
        "secrets": w.secrets.len(),
        "created_at": cep_engine::time::format_ms(w.created_at), "created_by": w.created_by,
    })
}

fn check_severity(s: &Option<String>) -> ApiResult<()> {
    match s.as_deref() {
        None | Some("low" | "medium" | "high" | "critical") => Ok(()),
        Some(other) => Err(ApiError::bad_request(format!(
            "min_severity `{other}` is not one of low, medium, high, critical"
        ))),
    }
}

async fn checked_url(st: &AppState, url: &str) -> ApiResult<()> {
    check_url(url, st.dispatcher.config())
        .await
        .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "endpoint_not_allowed", m))
}

async fn must(st: &AppState, id: &str) -> ApiResult<Webhook> {
    st.store
        .webhook(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no webhook `{id}`")))
}

/// Register an endpoint; the answer holds its secret, shown once.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", security(("api_key" = [])),
    request_body(content = String, description = "{\"url\", \"description\"?, \"rules\"?, \"tags\"?, \"min_severity\"?, \"include_shadow\"?}", content_type = "application/json"),
    responses((status = 201, description = "`{id, secret: \"whsec_…\"}`"), (status = 422, description = "The URL is refused (SSRF guard)"), (status = 403, description = "Needs admin")))]
pub async fn create_webhook(
    State(st): State<AppState>,
    c: Caller,
    body: Body,
) -> ApiResult<Response> {
    c.require(Role::Admin, "registering webhooks")?;
    let n: NewWebhook = body.json()?;
    check_severity(&n.min_severity)?;
    checked_url(&st, &n.url).await?;
    let secret = new_secret().map_err(|e| ApiError::internal(e.to_string()))?;
    let id = format!(
        "wh_{}",
        &super::new_secret().map_err(|e| ApiError::internal(e.to_string()))?[3..19]
    );
    let w = Webhook {
        id: id.clone(),
        url: n.url,
        description: n.description,
        rules: n.rules,
        tags: n.tags,
        min_severity: n.min_severity,
        include_shadow: n.include_shadow,
        secrets: vec![WebhookSecret {
            secret: secret.clone(),
            expires_at: None,
        }],
        disabled: None,
        created_at: crate::catalog::now_ms(),
        created_by: c.name.clone(),
    };
    st.store.put_webhook(&w).await?;
    st.dispatcher.invalidate();
    st.catalog
        .audit(
            &c.name,
            "webhook.create",
            &format!("webhook:{id}"),
            serde_json::Value::Null,
            view(&w),
        )
        .await?;
    Ok(reply(
        StatusCode::CREATED,
        serde_json::json!({"id": id, "secret": secret}),
    ))
}

/// Every endpoint (never the secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", security(("api_key" = [])),
    responses((status = 200, description = "`[webhook…]`"), (status = 403, description = "Needs admin")))]
pub async fn list_webhooks(State(st): State<AppState>, c: Caller) -> ApiResult<Response> {
    c.require(Role::Admin, "listing webhooks")?;
    let all: Vec<_> = st.store.webhooks().await?.iter().map(view).collect();
    Ok(reply(StatusCode::OK, all))
}

/// One endpoint.
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", security(("api_key" = [])),
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 200, description = "The webhook"), (status = 404, description = "Unknown id")))]
pub async fn get_webhook(
    State(st): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    c.require(Role::Admin, "reading webhooks")?;
    Ok(reply(StatusCode::OK, view(&must(&st, &id).await?)))
}

/// Update filters, URL or description; `"enabled": true` re-enables.
#[utoipa::path(put, path = "/v1/webhooks/{id}", tag = "webhooks", security(("api_key" = [])),
    params(("id" = String, Path, description = "Webhook id")),
    request_body(content = String, description = "Any of url, description, rules, tags, min_severity, include_shadow, enabled", content_type = "application/json"),
    responses((status = 200, description = "The webhook"), (status = 404, description = "Unknown id")))]
pub async fn update_webhook(
    State(st): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    c.require(Role::Admin, "changing webhooks")?;
    let u: UpdateWebhook = body.json()?;
    let before = must(&st, &id).await?;
    let mut w = before.clone();
    if let Some(url) = u.url {
        checked_url(&st, &url).await?;
        w.url = url;
    }
    if let Some(d) = u.description {
        w.description = d;
    }
    if let Some(r) = u.rules {
        w.rules = r;
    }
    if let Some(t) = u.tags {
        w.tags = t;
    }
    if let Some(m) = u.min_severity {
        check_severity(&m)?;
        w.min_severity = m;
    }
    if let Some(s) = u.include_shadow {
        w.include_shadow = s;
    }
    if u.enabled == Some(true) {
        w.disabled = None;
    }
    st.store.put_webhook(&w).await?;
    st.dispatcher.invalidate();
    st.dispatcher.wake(&id);
    st.catalog
        .audit(
            &c.name,
            "webhook.update",
            &format!("webhook:{id}"),
            view(&before),
            view(&w),
        )
        .await?;
    Ok(reply(StatusCode::OK, view(&w)))
}

/// Remove an endpoint (its pending deliveries go too).
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", security(("api_key" = [])),
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "Unknown id")))]
pub async fn delete_webhook(
    State(st): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    c.require(Role::Admin, "deleting webhooks")?;
    let before = must(&st, &id).await?;
    st.store.delete_webhook(&id).await?;
    st.dispatcher.invalidate();
    st.dispatcher.wake(&id);
    st.catalog
        .audit(
            &c.name,
            "webhook.delete",
            &format!("webhook:{id}"),
            view(&before),
            serde_json::Value::Null,
        )
        .await?;
    Ok(reply(StatusCode::NO_CONTENT, ()))
}

/// New secret; the old one keeps signing for the grace period (both sent).
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate", tag = "webhooks", security(("api_key" = [])),
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 200, description = "`{id, secret, previous_valid_until}`"), (status = 404, description = "Unknown id")))]
pub async fn rotate_secret(
    State(st): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    c.require(Role::Admin, "rotating webhook secrets")?;
    let mut w = must(&st, &id).await?;
    let now = crate::catalog::now_ms();
    let until = now + st.dispatcher.config().rotation_grace.as_millis() as i64;
    w.secrets.retain(|s| s.expires_at.is_none_or(|e| e > now));
    for s in &mut w.secrets {
        if s.expires_at.is_none() {
            s.expires_at = Some(until);
        }
    }
    let secret = new_secret().map_err(|e| ApiError::internal(e.to_string()))?;
    w.secrets.insert(
        0,
        WebhookSecret {
            secret: secret.clone(),
            expires_at: None,
        },
    );
    st.store.put_webhook(&w).await?;
    st.dispatcher.invalidate();
    st.catalog
        .audit(
            &c.name,
            "webhook.rotate",
            &format!("webhook:{id}"),
            serde_json::Value::Null,
            serde_json::json!({"previous_valid_until": until}),
        )
        .await?;
    Ok(reply(
        StatusCode::OK,
        serde_json::json!({"id": id, "secret": secret, "previous_valid_until": cep_engine::time::format_ms(until)}),
    ))
}

#[derive(Deserialize)]
pub struct LimitQuery {
    limit: Option<usize>,
    webhook: Option<String>,
    cursor: Option<String>,
}

/// The endpoint's delivery log, newest first: attempt, status, latency, outcome.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", security(("api_key" = [])),
    params(("id" = String, Path, description = "Webhook id"), ("limit" = Option<usize>, Query, description = "At most (default 100)")),
    responses((status = 200, description = "`[{msg_id, attempt, at, status, error, latency_ms, outcome}]`")))]
pub async fn deliveries(
    State(st): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    Query(q): Query<LimitQuery>,
) -> ApiResult<Response> {
    c.require(Role::Admin, "reading delivery logs")?;
    must(&st, &id).await?;
    let log: Vec<_> = st
        .store
        .delivery_log(&id, q.limit.unwrap_or(100).clamp(1, 1000))
        .await?
        .into_iter()
        .map(|a| serde_json::json!({
            "msg_id": a.msg_id, "attempt": a.attempt, "at": cep_engine::time::format_ms(a.at),
            "status": a.status, "error": a.error, "latency_ms": a.latency_ms, "outcome": a.outcome,
        }))
        .collect();
    Ok(reply(StatusCode::OK, log))
}

/// Messages whose retries ran out, oldest first, a page at a time.
#[utoipa::path(get, path = "/v1/dead-letters", tag = "webhooks", security(("api_key" = [])),
    params(("webhook" = Option<String>, Query, description = "Only this endpoint"), ("limit" = Option<usize>, Query, description = "At most (default 100, at most 1000)"),
        ("cursor" = Option<String>, Query, description = "`next` of the previous page")),
    responses((status = 200, description = "`{dead_letters: [{webhook, msg_id, alert_id, attempts, last_status, last_error, created_at}], next}`; `next` is null on the last page"),
        (status = 400, description = "Bad cursor")))]
pub async fn dead_letters(
    State(st): State<AppState>,
    c: Caller,
    Query(q): Query<LimitQuery>,
) -> ApiResult<Response> {
    c.require(Role::Admin, "reading dead letters")?;
    let after = q
        .cursor
        .as_deref()
        .map(DeadCursor::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mut found = st
        .store
        .dead_letters(q.webhook.as_deref(), after.as_ref(), limit + 1)
        .await?;
    let next = if found.len() > limit {
        found.truncate(limit);
        found.last().map(|d| DeadCursor::of(d).text())
    } else {
        None
    };
    let list: Vec<_> = found
        .into_iter()
        .map(|d| serde_json::json!({
            "webhook": d.webhook, "msg_id": d.msg_id, "alert_id": d.alert_id, "attempts": d.attempts,
            "last_status": d.last_status, "last_error": d.last_error,
            "created_at": cep_engine::time::format_ms(d.created_at),
        }))
        .collect();
    Ok(reply(
        StatusCode::OK,
        serde_json::json!({"dead_letters": list, "next": next}),
    ))
}

/// Send a dead letter again (same `webhook-id`, a fresh retry schedule).
#[utoipa::path(post, path = "/v1/dead-letters/{webhook}/{msg_id}/resend", tag = "webhooks", security(("api_key" = [])),
    params(("webhook" = String, Path, description = "Webhook id"), ("msg_id" = String, Path, description = "Message id")),
    responses((status = 202, description = "Queued"), (status = 404, description = "No such dead letter")))]
pub async fn resend(
    State(st): State<AppState>,
    c: Caller,
    Path((webhook, msg_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    c.require(Role::Admin, "re-sending dead letters")?;
    let ok = st
        .dispatcher
        .resend(&webhook, &msg_id)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if !ok {
        return Err(ApiError::not_found(format!(
            "no dead letter `{msg_id}` for webhook `{webhook}`"
        )));
    }
    st.catalog
        .audit(
            &c.name,
            "webhook.resend",
            &format!("webhook:{webhook}"),
            serde_json::Value::Null,
            serde_json::json!({"msg_id": msg_id}),
        )
        .await?;
    Ok(reply(
        StatusCode::ACCEPTED,
        serde_json::json!({"queued": msg_id}),
    ))
}

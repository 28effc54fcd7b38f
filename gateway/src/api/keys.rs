//! API keys (admin) and the audit log.

use super::{ApiError, ApiResult, AppState, Body, Caller, create_key, reply};
use crate::store::Role;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Json, Response};
use serde::Deserialize;

/// Every key: name, role, created, revoked (never the secret).
#[utoipa::path(get, path = "/v1/keys", tag = "keys", security(("api_key" = [])),
    responses((status = 200, description = "`[{name, role, created_at, revoked}]`"), (status = 403, description = "Needs admin")))]
pub async fn list_keys(State(st): State<AppState>, c: Caller) -> ApiResult<Response> {
    c.require(Role::Admin, "listing keys")?;
    let keys: Vec<_> = st
        .store
        .keys()
        .await?
        .into_iter()
        .map(|k| {
            serde_json::json!({
                "name": k.name, "role": k.role,
                "created_at": cep_engine::time::format_ms(k.created_at), "revoked": k.revoked,
            })
        })
        .collect();
    Ok(reply(StatusCode::OK, keys))
}

#[derive(Deserialize)]
struct NewKey {
    name: String,
    role: Role,
}

/// Create a key: `{"name": ..., "role": "viewer"|"analyst"|"admin"}`. The
/// secret is in the answer, once.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", security(("api_key" = [])),
    request_body(content = String, description = "{\"name\": ..., \"role\": ...}", content_type = "application/json"),
    responses((status = 201, description = "`{name, role, key}`"), (status = 409, description = "Name taken"), (status = 403, description = "Needs admin")))]
pub async fn create_key_route(
    State(st): State<AppState>,
    c: Caller,
    body: Body,
) -> ApiResult<Response> {
    c.require(Role::Admin, "creating keys")?;
    let k: NewKey = body.json()?;
    let secret = create_key(&st.store, &k.name, k.role).await?;
    st.catalog
        .audit(
            &c.name,
            "key.create",
            &format!("key:{}", k.name),
            serde_json::Value::Null,
            serde_json::json!({"role": k.role}),
        )
        .await?;
    Ok(reply(
        StatusCode::CREATED,
        serde_json::json!({"name": k.name, "role": k.role, "key": secret}),
    ))
}

/// Revoke a key (it stays listed, refused from now on).
#[utoipa::path(delete, path = "/v1/keys/{name}", tag = "keys", security(("api_key" = [])),
    params(("name" = String, Path, description = "Key name")),
    responses((status = 204, description = "Revoked"), (status = 404, description = "Unknown key"), (status = 403, description = "Needs admin")))]
pub async fn revoke_key(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    c.require(Role::Admin, "revoking keys")?;
    if !st.store.revoke_key(&name).await? {
        return Err(ApiError::not_found(format!("no key named `{name}`")));
    }
    st.catalog
        .audit(
            &c.name,
            "key.revoke",
            &format!("key:{name}"),
            serde_json::json!({"revoked": false}),
            serde_json::json!({"revoked": true}),
        )
        .await?;
    Ok(reply(StatusCode::NO_CONTENT, ()))
}

#[derive(Deserialize)]
pub struct AuditQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

/// The append-only audit log, oldest first: who, when, what, before/after.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", security(("api_key" = [])),
    params(("after" = Option<u64>, Query, description = "Entries after this seq"), ("limit" = Option<usize>, Query, description = "At most (default 100, max 1000)")),
    responses((status = 200, description = "`[{seq, at, actor, action, target, before, after}]`")))]
pub async fn list_audit(
    State(st): State<AppState>,
    c: Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Response> {
    // Webhook URLs often carry a token (`…/hook?token=…`, `user:pass@`);
    // only admins read them through `GET /v1/webhooks`, so only admins read
    // them here. Others see the scheme, host and port.
    let redact = c.role < Role::Admin;
    let entries = st
        .store
        .audit(q.after.unwrap_or(0), q.limit.unwrap_or(100).clamp(1, 1000))
        .await?;
    let out: Vec<_> = entries
        .into_iter()
        .map(|mut e| {
            if redact && e.action.starts_with("webhook.") {
                redact_url(&mut e.before);
                redact_url(&mut e.after);
            }
            serde_json::json!({
                "seq": e.seq, "at": cep_engine::time::format_ms(e.at), "actor": e.actor,
                "action": e.action, "target": e.target, "before": e.before, "after": e.after,
            })
        })
        .collect();
    Ok(reply(StatusCode::OK, out))
}

/// Who the key is: its name and role (the console uses it to show what the
/// caller may do).
#[utoipa::path(get, path = "/v1/me", tag = "keys", security(("api_key" = [])),
    responses((status = 200, description = "`{name, role}`"), (status = 401, description = "No or unknown key")))]
pub async fn me(c: Caller) -> Json<serde_json::Value> {
    Json(serde_json::json!({"name": c.name, "role": c.role.as_str()}))
}

/// A webhook view's `url` cut to `scheme://host[:port]/…` (no credentials,
/// path or query); a URL that does not parse becomes `…`.
fn redact_url(v: &mut serde_json::Value) {
    if let Some(url) = v.get_mut("url")
        && let Some(text) = url.as_str()
    {
        let cut = reqwest::Url::parse(text)
            .ok()
            .and_then(|u| {
                let host = u.host_str()?.to_string();
                Some(match u.port() {
                    Some(p) => format!("{}://{host}:{p}/…", u.scheme()),
                    None => format!("{}://{host}/…", u.scheme()),
                })
            })
            .unwrap_or_else(|| "…".into());
        *url = serde_json::Value::String(cut);
    }
}

//! The HTTP API (`/v1`, spec §5): state, errors, authentication, body reading,
//! and the route table. Handlers live in the submodules; every route is
//! registered once, through `utoipa-axum`, so `/v1/openapi.json` is generated
//! from the same registrations that serve requests.
//!
//! Errors are always JSON: `{"error": {"code": "...", "message": "..."}}`
//! (plus `"diagnostics"` for rule text that does not compile).

mod alerts;
mod backtests;
mod console;
mod keys;
mod lists;
pub(crate) mod rules;
mod webhooks;

pub use lists::ListLimits;
pub use lists::publish as publish_list;

use crate::catalog::{Catalog, CatalogError};
use crate::router::{Command, HttpIngest};
use crate::status::Status;
use crate::store::{ApiKey, Role, Store, StoredAlert};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use tokio::sync::broadcast;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body, bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Where event samples for backtests are kept; `None`: no samples.
    pub samples_dir: Option<std::path::PathBuf>,
    /// Size limits of reference lists.
    pub lists: ListLimits,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 8 << 20,
            samples_dir: None,
            lists: ListLimits::default(),
        }
    }
}

/// Everything a handler can reach.
pub struct Inner {
    pub catalog: Arc<Catalog>,
    pub store: Store,
    pub status: Arc<Status>,
    pub ingest: tokio::sync::mpsc::Sender<HttpIngest>,
    pub router: std::sync::Mutex<Sender<Command>>,
    pub alerts: broadcast::Sender<Arc<StoredAlert>>,
    pub config: ApiConfig,
    /// Orders list publications (see [`lists::publish`]).
    pub list_lock: tokio::sync::Mutex<()>,
    pub dispatcher: Arc<crate::webhooks::Dispatcher>,
    pub backtests: crate::backtest::Backtests,
    /// `alerts_per_hour` of `GET /v1/rules`, per rule: (current hour, this
    /// gateway's stored-alert count for the rule, when read, the counts).
    pub hourly: std::sync::Mutex<std::collections::HashMap<String, rules::HourlyEntry>>,
}

pub type AppState = Arc<Inner>;

impl Inner {
    pub fn command(&self, c: Command) {
        if let Ok(tx) = self.router.lock() {
            let _ = tx.send(c);
        }
    }
}

// ---------------------------------------------------------------------------
// Errors

/// An API error: a status and a stable code.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub diagnostics: Option<Vec<rule_lang::diag::DiagnosticJson>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            diagnostics: None,
        }
    }
    pub fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m)
    }
    pub fn not_found(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    pub fn internal(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "error": {"code": self.code, "message": self.message}
        });
        if let Some(d) = self.diagnostics {
            body["diagnostics"] = serde_json::to_value(d).unwrap_or_default();
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as E;
        match e {
            E::NotFound(m) => ApiError::not_found(m),
            E::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            E::Backend(m) | E::Unavailable(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("the store failed: {m}"),
            ),
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Invalid(d) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_rule",
                message: format!(
                    "the rule does not compile: {}",
                    d.iter()
                        .find(|x| x.severity == rule_lang::DiagSeverity::Error)
                        .map_or_else(String::new, |x| format!(
                            "{}:{}:{}: {}",
                            x.file, x.line, x.column, x.message
                        ))
                ),
                diagnostics: Some(d),
            },
            CatalogError::BadRequest(m) => ApiError::bad_request(m),
            CatalogError::NotFound(m) => ApiError::not_found(m),
            CatalogError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            CatalogError::Store(e) => e.into(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

// ---------------------------------------------------------------------------
// Authentication

/// The caller, from `Authorization: Bearer <key>`.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role, what: &str) -> ApiResult<()> {
        if self.role >= role {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{what} needs the `{}` role; key `{}` has `{}`",
                role.as_str(),
                self.name,
                self.role.as_str()
            ),
        ))
    }
}

/// Lowercase hex SHA-256 of an API key secret (what the store keeps).
pub fn key_hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new API key secret: `vk_` and 32 random bytes in hex.
pub fn new_secret() -> anyhow::Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(format!(
        "vk_{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

/// Creates and stores a key; returns the secret (shown once).
pub async fn create_key(store: &Store, name: &str, role: Role) -> ApiResult<String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ApiError::bad_request(
            "a key name is 1 to 64 characters of letters, digits, `-`, `_` or `.`",
        ));
    }
    let secret = new_secret().map_err(|e| ApiError::internal(e.to_string()))?;
    store
        .put_key(&ApiKey {
            name: name.to_string(),
            role,
            hash: key_hash(&secret),
            created_at: crate::catalog::now_ms(),
            revoked: false,
        })
        .await?;
    Ok(secret)
}

fn unauthorized(m: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
}

/// The token of `Authorization: Bearer <token>`. The scheme is matched
/// without regard to case (RFC 7235 §2.1: `bearer`, `BEARER` are the same).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Caller> {
        let Some(h) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized(
                "this call needs an API key: send `Authorization: Bearer <key>`",
            ));
        };
        let secret = h
            .to_str()
            .ok()
            .and_then(bearer_token)
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <key>`"))?;
        match state.store.key_by_hash(&key_hash(secret)).await? {
            Some(k) if !k.revoked => Ok(Caller {
                name: k.name,
                role: k.role,
            }),
            Some(_) => Err(unauthorized("this API key was revoked")),
            None => Err(unauthorized("unknown API key")),
        }
    }
}

// ---------------------------------------------------------------------------
// Bodies

/// The raw request body, refused with 413 beyond `max_body_bytes`.
pub struct Body {
    pub headers: HeaderMap,
    pub bytes: axum::body::Bytes,
}

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> ApiResult<Body> {
        let limit = state.config.max_body_bytes;
        let (parts, body) = req.into_parts();
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is over the limit of {limit} bytes"),
            )
        };
        if let Some(len) = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            && len > limit
        {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| too_large())?;
        Ok(Body {
            headers: parts.headers,
            bytes,
        })
    }
}

impl Body {
    /// The media type without parameters, lowercase.
    pub fn content_type(&self) -> String {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default()
    }

    /// Parses a JSON body (415 for another content type, 400 for bad JSON).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> ApiResult<T> {
        let ct = self.content_type();
        if ct != "application/json" {
            return Err(unsupported(&ct, "application/json"));
        }
        serde_json::from_slice(&self.bytes).map_err(|e| {
            ApiError::bad_request(format!("the body is not valid JSON for this call: {e}"))
        })
    }

    pub fn text(&self) -> ApiResult<&str> {
        std::str::from_utf8(&self.bytes).map_err(|_| ApiError::bad_request("the body is not UTF-8"))
    }
}

pub fn unsupported(got: &str, want: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "content type `{}` is not accepted here; send {want}",
            if got.is_empty() { "(none)" } else { got }
        ),
    )
}

/// A serialisable value with a status.
pub fn reply<T: Serialize>(status: StatusCode, v: T) -> Response {
    if status == StatusCode::NO_CONTENT {
        return status.into_response();
    }
    (status, Json(v)).into_response()
}

// ---------------------------------------------------------------------------
// Routes

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Vigil API",
        description = "Rules, events, alerts, reference lists and keys. Every /v1 call except /v1/openapi.json needs `Authorization: Bearer <key>`; roles: viewer (read), analyst (author, validate, test, deploy shadow, events, lists), admin (deploy active, pause, archive, keys, webhooks)."
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API routes and the OpenAPI document built from them.
pub fn routes() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(rules::list_rules, rules::create_version))
        .routes(routes!(rules::validate))
        .routes(routes!(rules::get_rule))
        .routes(routes!(rules::list_versions))
        .routes(routes!(rules::get_version))
        .routes(routes!(rules::test_version))
        .routes(routes!(rules::get_program))
        .routes(routes!(backtests::list_samples))
        .routes(routes!(backtests::put_sample))
        .routes(routes!(backtests::start_backtest))
        .routes(routes!(backtests::get_backtest, backtests::cancel_backtest))
        .routes(routes!(rules::deploy))
        .routes(routes!(rules::pause))
        .routes(routes!(rules::resume))
        .routes(routes!(rules::archive))
        .routes(routes!(rules::diff))
        .routes(routes!(rules::get_schema, rules::put_schema))
        .routes(routes!(alerts::post_events))
        .routes(routes!(alerts::list_alerts))
        .routes(routes!(alerts::stream_alerts))
        .routes(routes!(alerts::get_alert))
        .routes(routes!(alerts::explain_alert))
        .routes(routes!(lists::list_lists, lists::create_list))
        .routes(routes!(
            lists::get_list,
            lists::replace_list,
            lists::delete_list
        ))
        .routes(routes!(lists::add_entries, lists::remove_entries))
        .routes(routes!(keys::list_keys, keys::create_key_route))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(keys::list_audit))
        .routes(routes!(keys::me))
        .routes(routes!(webhooks::list_webhooks, webhooks::create_webhook))
        .routes(routes!(
            webhooks::get_webhook,
            webhooks::update_webhook,
            webhooks::delete_webhook
        ))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::dead_letters))
        .routes(routes!(webhooks::resend))
        .routes(routes!(cluster))
        .split_for_parts()
}

/// The whole HTTP application: the API, the OpenAPI document, operations
/// endpoints, request tracing.
pub fn app(state: AppState) -> axum::Router {
    use axum::routing::get;
    let (api, doc) = routes();
    let doc = Arc::new(doc);
    api.route(
        "/v1/openapi.json",
        get(move || {
            let doc = doc.clone();
            async move { Json(doc.as_ref().clone()) }
        }),
    )
    .route("/healthz", get(healthz))
    .route("/readyz", get(readyz))
    .route("/metrics", get(metrics))
    .route("/", get(console::index))
    .route("/console/{file}", get(console::asset))
    .fallback(|| async { ApiError::not_found("no such endpoint") })
    .layer(tower_http::trace::TraceLayer::new_for_http())
    .with_state(state)
}

/// Liveness: 200 while the gateway runs; the body says which nodes are down
/// and which dependencies are failing (`problems`).
async fn healthz(State(st): State<AppState>) -> Response {
    let nodes = st.status.nodes();
    let down: Vec<&str> = nodes
        .iter()
        .filter(|n| n.state != "up")
        .map(|n| n.name.as_str())
        .collect();
    let problems = st.status.problems();
    let ok = down.is_empty() && problems.is_empty();
    Json(serde_json::json!({
        "status": if ok { "ok" } else { "degraded" },
        "nodes_up": nodes.len() - down.len(),
        "nodes_not_up": down,
        "store": st.store.backend(),
        "problems": problems,
    }))
    .into_response()
}

/// Readiness: 200 when every node is up on the current rule-set version.
async fn readyz(State(st): State<AppState>) -> Response {
    match st.status.ready() {
        Ok(()) => reply(StatusCode::OK, serde_json::json!({"ready": true})),
        Err(why) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"ready": false, "reason": why}),
        ),
    }
}

/// `/metrics` on the API port: rule names and counts, so a viewer key
/// (Prometheus sends it with `authorization: {credentials_file: …}`). The
/// operations listener (`--metrics-addr`) serves it without one.
async fn metrics(State(st): State<AppState>, c: Caller) -> ApiResult<Response> {
    c.require(Role::Viewer, "reading metrics")?;
    Ok(metrics_text(&st))
}

fn metrics_text(st: &AppState) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.status.prometheus() + &st.dispatcher.metrics.prometheus(),
    )
        .into_response()
}

/// The cluster view: nodes, shards, lag, checkpoint, counters.
#[utoipa::path(get, path = "/v1/cluster", tag = "operations", security(("api_key" = [])),
    responses((status = 200, description = "`{nodes, checkpoint, events_accepted, …}`"), (status = 401, description = "No or unknown key")))]
pub async fn cluster(State(st): State<AppState>, c: Caller) -> ApiResult<Response> {
    c.require(Role::Viewer, "reading the cluster view")?;
    Ok(Json(st.status.cluster()).into_response())
}

/// The operations listener (`--metrics-addr`): `/metrics`, `/v1/cluster`,
/// `/healthz` and `/readyz`, without keys, for a scraper on a private
/// interface. Nothing else is served there.
pub fn ops_app(state: AppState) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(|State(st): State<AppState>| async move { metrics_text(&st) }),
        )
        .route(
            "/v1/cluster",
            get(|State(st): State<AppState>| async move {
                Json(st.status.cluster()).into_response()
            }),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .with_state(state)
}

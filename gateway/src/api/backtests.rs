//! Event samples (stored JSONL files to backtest on) and backtests.

use super::{ApiError, ApiResult, AppState, Body, Caller, reply, unsupported};
use crate::backtest::{Events, Spec, StartError};
use crate::store::Role;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use rule_lang::RuleSet;
use serde::Deserialize;
use std::sync::Arc;

/// Samples kept, at most (each up to the body limit).
pub const MAX_SAMPLES: usize = 100;

fn samples_dir(st: &AppState) -> ApiResult<&std::path::Path> {
    st.config.samples_dir.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this gateway keeps no samples (no data directory)",
        )
    })
}

/// Sample names: 1–64 of `A-Z a-z 0-9 _ - .`, not starting with a dot.
fn check_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "bad sample name `{name}`: 1-64 of letters, digits, `_`, `-`, `.`, not starting with `.`"
        )))
    }
}

/// A sample's event count, kept beside it (`<name>.lines`) when it is
/// stored so that listing samples and sizing a backtest read no events.
fn lines_file(data: &std::path::Path) -> std::path::PathBuf {
    data.with_extension("lines")
}

fn stored_lines(data: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(lines_file(data))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `{name, bytes, lines}` of a sample file (counted when it was placed
/// without its count, e.g. copied in by hand).
fn sample_info(path: &std::path::Path) -> Option<serde_json::Value> {
    let name = path.file_name()?.to_str()?.strip_suffix(".jsonl")?;
    let bytes = std::fs::metadata(path).ok()?.len();
    let lines = match stored_lines(path) {
        Some(n) => n,
        None => crate::backtest::count_lines(&std::fs::read(path).ok()?),
    };
    Some(serde_json::json!({"name": name, "bytes": bytes, "lines": lines}))
}

/// Stored event samples.
#[utoipa::path(get, path = "/v1/samples", tag = "backtests", security(("api_key" = [])),
    responses((status = 200, description = "`[{name, bytes, lines}]`")))]
pub async fn list_samples(State(st): State<AppState>, _c: Caller) -> ApiResult<Response> {
    let dir = samples_dir(&st)?.to_path_buf();
    let list = tokio::task::spawn_blocking(move || {
        let mut out: Vec<serde_json::Value> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| sample_info(&e.path()))
            .collect();
        out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        out
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(reply(StatusCode::OK, list))
}

/// Store (or replace) an event sample: NDJSON, one event per line.
#[utoipa::path(put, path = "/v1/samples/{name}", tag = "backtests", security(("api_key" = [])),
    params(("name" = String, Path, description = "Sample name")),
    request_body(content = String, description = "Events, NDJSON", content_type = "application/x-ndjson"),
    responses((status = 201, description = "`{name, bytes, lines}`"), (status = 403, description = "Needs analyst"),
        (status = 409, description = "Too many samples"), (status = 413, description = "Over the body limit")))]
pub async fn put_sample(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    c.require(Role::Analyst, "storing a sample")?;
    check_name(&name)?;
    let ct = body.content_type();
    if !matches!(
        ct.as_str(),
        "application/x-ndjson" | "application/jsonl" | "text/plain"
    ) {
        return Err(unsupported(&ct, "application/x-ndjson"));
    }
    let dir = samples_dir(&st)?.to_path_buf();
    let bytes = body.bytes.clone();
    let info = tokio::task::spawn_blocking(move || -> ApiResult<serde_json::Value> {
        std::fs::create_dir_all(&dir).map_err(|e| ApiError::internal(e.to_string()))?;
        let path = dir.join(format!("{name}.jsonl"));
        let count = std::fs::read_dir(&dir).map_or(0, |d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
                .count()
        });
        if !path.exists() && count >= MAX_SAMPLES {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{MAX_SAMPLES} samples are stored already; replace one"),
            ));
        }
        // Written aside, then renamed: a reader never sees half a file.
        let lines = crate::backtest::count_lines(&bytes);
        let put = |to: &std::path::Path, what: &[u8]| {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, what)
                .and_then(|()| std::fs::rename(&tmp, to))
                .map_err(|e| ApiError::internal(e.to_string()))
        };
        put(&path, &bytes)?;
        put(&lines_file(&path), lines.to_string().as_bytes())?;
        Ok(serde_json::json!({"name": name, "bytes": bytes.len(), "lines": lines}))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(reply(StatusCode::CREATED, info))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BacktestBody {
    rule: String,
    version: u32,
    sample: Option<String>,
    events: Option<String>,
    labels: Option<String>,
    against: Option<u32>,
}

async fn compiled(st: &AppState, schema: &str, rule: &str, v: u32) -> ApiResult<Arc<RuleSet>> {
    let ver = super::rules::version_of(st, rule, v).await?;
    Ok(Arc::new(crate::catalog::compile(schema, &ver.text)?))
}

/// Start a backtest of a rule version over a sample or inline events
/// (optionally scored against labels and diffed against another version).
#[utoipa::path(post, path = "/v1/backtests", tag = "backtests", security(("api_key" = [])),
    request_body(content = String, description = "`{rule, version, sample?: name, events?: NDJSON text, labels?: NDJSON text, against?: version}`", content_type = "application/json"),
    responses((status = 202, description = "The job (see GET)"), (status = 403, description = "Needs analyst"),
        (status = 404, description = "Unknown rule, version or sample"), (status = 429, description = "Too many running")))]
pub async fn start_backtest(
    State(st): State<AppState>,
    c: Caller,
    body: Body,
) -> ApiResult<Response> {
    c.require(Role::Analyst, "running a backtest")?;
    let b: BacktestBody = body.json()?;
    let schema = st.catalog.schema().await?;
    let set = compiled(&st, &schema, &b.rule, b.version).await?;
    let against = match b.against {
        Some(v) if v != b.version => Some((v, compiled(&st, &schema, &b.rule, v).await?)),
        _ => None,
    };
    let events = match (b.sample, b.events) {
        (Some(name), None) => {
            check_name(&name)?;
            let path = samples_dir(&st)?.join(format!("{name}.jsonl"));
            if !path.exists() {
                return Err(ApiError::not_found(format!("no sample `{name}`")));
            }
            Events::File {
                lines: stored_lines(&path),
                path,
            }
        }
        (None, Some(text)) => Events::Inline(text.into_bytes()),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `sample` (a stored sample's name) and `events` (NDJSON text)",
            ));
        }
    };
    let labels = match b.labels.filter(|l| !l.trim().is_empty()) {
        Some(text) => Some(
            vigil_replay::replay::Labels::parse(&text)
                .map_err(|e| ApiError::bad_request(format!("labels: {e:#}")))?,
        ),
        None => None,
    };
    let lists = super::lists::stored(&st).await?;
    let spec = Spec {
        rule: b.rule,
        version: b.version,
        set,
        against,
        lists,
        events,
        labels,
    };
    let job = st.backtests.start(spec, &c.name).map_err(|e| match e {
        StartError::Busy => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "busy", e.to_string()),
    })?;
    Ok(reply(StatusCode::ACCEPTED, job.view()))
}

fn job(st: &AppState, id: &str) -> ApiResult<Arc<crate::backtest::Job>> {
    st.backtests
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("no backtest `{id}`")))
}

/// A backtest: state, progress, and its report once done.
#[utoipa::path(get, path = "/v1/backtests/{id}", tag = "backtests", security(("api_key" = [])),
    params(("id" = String, Path, description = "Backtest id")),
    responses((status = 200, description = "`{id, rule, version, against, state: running|done|cancelled|failed, error, events_done, events_total, report}`"),
        (status = 404, description = "Unknown (or forgotten) id")))]
pub async fn get_backtest(
    State(st): State<AppState>,
    _c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let job = job(&st, &id)?;
    Ok(reply(StatusCode::OK, job.view()))
}

/// Cancel a running backtest (it stops within about a thousand events).
#[utoipa::path(delete, path = "/v1/backtests/{id}", tag = "backtests", security(("api_key" = [])),
    params(("id" = String, Path, description = "Backtest id")),
    responses((status = 202, description = "Cancelling; GET shows `cancelled`"), (status = 404, description = "Unknown id")))]
pub async fn cancel_backtest(
    State(st): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    c.require(Role::Analyst, "cancelling a backtest")?;
    let job = job(&st, &id)?;
    job.cancel();
    Ok(reply(StatusCode::ACCEPTED, job.view()))
}

//! Rules: versions, validation, tests, deploys, lifecycle, diffs, the schema.

use super::{ApiError, ApiResult, AppState, Body, Caller, reply, unsupported};
use crate::catalog;
use crate::router::Command;
use crate::store::{Mode, Role, RuleState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use cep_engine::{Decoder, Deployment, Engine, EngineConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;

/// A rule as listed.
#[derive(Serialize)]
struct RuleSummary {
    name: String,
    /// `draft` (never deployed), `active`, `shadow`, `paused`, `archived`.
    status: &'static str,
    deployed_version: Option<u32>,
    mode: Option<Mode>,
    latest_version: u32,
    owner: String,
    updated_at: String,
    /// Alerts per hour of event time over the last 24 hours, oldest first;
    /// the last is the current hour. Counted from the store, at most
    /// [`HOURLY_CAP`] alerts a rule.
    alerts_per_hour: Vec<u64>,
}

/// Alerts read per rule for the hourly chart of the rules list.
pub const HOURLY_CAP: usize = 20_000;

/// A rule's hourly counts as last read from the store.
pub struct HourlyEntry {
    hour: i64,
    stored: u64,
    read_at: std::time::Instant,
    counts: Vec<u64>,
}

/// Reused while the hour is the same and nothing was stored for the rule
/// since, or for this long regardless (alerts stored by other gateways on a
/// shared store show up within it).
const HOURLY_FRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// Alerts of `rule` per hour over the last 24 hours (both modes): read from
/// the store, cached (the console asks often; see [`HourlyEntry`]).
async fn alerts_per_hour(st: &AppState, rule: &str) -> ApiResult<Vec<u64>> {
    const HOUR: i64 = 3_600_000;
    let current = catalog::now_ms().div_euclid(HOUR) * HOUR;
    let stored = st.status.rule_alert_count(rule);
    if let Ok(cache) = st.hourly.lock()
        && let Some(e) = cache.get(rule)
        && e.hour == current
        && e.stored == stored
        && e.read_at.elapsed() < HOURLY_FRESH
    {
        return Ok(e.counts.clone());
    }
    let from = current - 23 * HOUR;
    let filter = crate::store::AlertFilter {
        rule: Some(rule.to_string()),
        from: Some(from),
        ..Default::default()
    };
    let mut hours = vec![0u64; 24];
    let (mut cursor, mut seen) = (None::<String>, 0usize);
    loop {
        let page = st
            .store
            .query_alerts(&filter, cursor.as_deref(), 1000)
            .await?;
        for a in &page.alerts {
            if let Some(h) = hours.get_mut(((a.at - from) / HOUR) as usize) {
                *h += 1;
            }
        }
        seen += page.alerts.len();
        match page.next {
            Some(n) if seen < HOURLY_CAP => cursor = Some(n),
            _ => break,
        }
    }
    if let Ok(mut cache) = st.hourly.lock() {
        // Bounded by the number of rules; archived ones are few.
        cache.insert(
            rule.to_string(),
            HourlyEntry {
                hour: current,
                stored,
                read_at: std::time::Instant::now(),
                counts: hours.clone(),
            },
        );
    }
    Ok(hours)
}

fn status_of(s: &RuleState) -> &'static str {
    if s.archived {
        "archived"
    } else if s.paused {
        "paused"
    } else {
        match s.deployed {
            None => "draft",
            Some((_, Mode::Active)) => "active",
            Some((_, Mode::Shadow)) => "shadow",
        }
    }
}

async fn summary(st: &AppState, s: RuleState) -> ApiResult<RuleSummary> {
    let latest = st
        .store
        .versions(&s.name)
        .await?
        .last()
        .map_or(0, |v| v.version);
    Ok(RuleSummary {
        alerts_per_hour: alerts_per_hour(st, &s.name).await?,
        status: status_of(&s),
        deployed_version: s.deployed.map(|d| d.0),
        mode: s.deployed.map(|d| d.1),
        latest_version: latest,
        owner: s.owner,
        updated_at: cep_engine::time::format_ms(s.updated_at),
        name: s.name,
    })
}

/// List every rule with its deployed version and mode.
#[utoipa::path(get, path = "/v1/rules", tag = "rules", security(("api_key" = [])),
    responses((status = 200, description = "`[{name, status, deployed_version, mode, latest_version, owner, updated_at, alerts_per_hour: [24 counts, oldest first]}]`")))]
pub async fn list_rules(State(st): State<AppState>, _c: Caller) -> ApiResult<Response> {
    let mut out = vec![];
    for s in st.store.rule_states().await? {
        out.push(summary(&st, s).await?);
    }
    Ok(reply(StatusCode::OK, out))
}

#[derive(Deserialize)]
struct TextBody {
    text: String,
}

/// The `.vgl` text of a body: `text/plain` (or `text/x-vgl`) as is, or JSON `{"text": "..."}`.
fn rule_text(b: &Body) -> ApiResult<String> {
    match b.content_type().as_str() {
        "text/plain" | "text/x-vgl" => Ok(b.text()?.to_string()),
        "application/json" => Ok(b.json::<TextBody>()?.text),
        other => Err(unsupported(
            other,
            "text/plain (the .vgl text) or application/json {\"text\": ...}",
        )),
    }
}

/// Create a new version (a draft) of the rule the text declares.
#[utoipa::path(post, path = "/v1/rules", tag = "rules", security(("api_key" = [])),
    request_body(content = String, description = "One rule as .vgl text (text/plain), or JSON {\"text\": ...}", content_type = "text/plain"),
    responses(
        (status = 201, description = "`{rule, version, hash, created: true}`"),
        (status = 200, description = "Same text as the latest version: that version, `created: false`"),
        (status = 422, description = "Does not compile: `error` and `diagnostics`"),
        (status = 403, description = "Needs analyst")))]
pub async fn create_version(
    State(st): State<AppState>,
    c: Caller,
    body: Body,
) -> ApiResult<Response> {
    c.require(Role::Analyst, "creating a rule version")?;
    let text = rule_text(&body)?;
    let (v, created) = st.catalog.create_version(&text, &c.name).await?;
    Ok(reply(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        serde_json::json!({
            "rule": v.rule, "version": v.version, "hash": v.hash, "created": created,
        }),
    ))
}

/// Compile a rule text against the schema; diagnostics with line/column.
#[utoipa::path(post, path = "/v1/rules/validate", tag = "rules", security(("api_key" = [])),
    request_body(content = String, description = "One rule as .vgl text", content_type = "text/plain"),
    responses((status = 200, description = "`{ok, rule, diagnostics: [{severity, code, message, file, line, column, end_line, end_column, label, hint}]}`")))]
pub async fn validate(State(st): State<AppState>, c: Caller, body: Body) -> ApiResult<Response> {
    c.require(Role::Analyst, "validating a rule")?;
    let text = rule_text(&body)?;
    let (v, _) = st.catalog.validate(&text).await?;
    Ok(reply(StatusCode::OK, v))
}

async fn state_of(st: &AppState, name: &str) -> ApiResult<RuleState> {
    st.store
        .rule_state(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no rule named `{name}`")))
}

/// One rule: its state and its versions (without texts).
#[utoipa::path(get, path = "/v1/rules/{name}", tag = "rules", security(("api_key" = [])),
    params(("name" = String, Path, description = "Rule name")),
    responses((status = 200, description = "The rule"), (status = 404, description = "Unknown rule")))]
pub async fn get_rule(
    State(st): State<AppState>,
    _c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let s = state_of(&st, &name).await?;
    let versions: Vec<_> = st
        .store
        .versions(&name)
        .await?
        .into_iter()
        .map(|v| {
            serde_json::json!({
                "version": v.version, "hash": v.hash,
                "created_at": cep_engine::time::format_ms(v.created_at), "created_by": v.created_by,
            })
        })
        .collect();
    let mut out = serde_json::to_value(summary(&st, s).await?).unwrap_or_default();
    out["versions"] = versions.into();
    Ok(reply(StatusCode::OK, out))
}

/// Every version of a rule, with texts.
#[utoipa::path(get, path = "/v1/rules/{name}/versions", tag = "rules", security(("api_key" = [])),
    params(("name" = String, Path, description = "Rule name")),
    responses((status = 200, description = "`[{rule, version, hash, text, created_at, created_by}]`"), (status = 404, description = "Unknown rule")))]
pub async fn list_versions(
    State(st): State<AppState>,
    _c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    state_of(&st, &name).await?;
    Ok(reply(StatusCode::OK, st.store.versions(&name).await?))
}

pub(super) async fn version_of(
    st: &AppState,
    name: &str,
    v: u32,
) -> ApiResult<crate::store::RuleVersion> {
    state_of(st, name).await?;
    st.store
        .version(name, v)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("rule `{name}` has no version {v}")))
}

/// One version, with its text.
#[utoipa::path(get, path = "/v1/rules/{name}/versions/{version}", tag = "rules", security(("api_key" = [])),
    params(("name" = String, Path, description = "Rule name"), ("version" = u32, Path, description = "Version number")),
    responses((status = 200, description = "`{rule, version, hash, text, created_at, created_by}`"), (status = 404, description = "Unknown rule or version")))]
pub async fn get_version(
    State(st): State<AppState>,
    _c: Caller,
    Path((name, v)): Path<(String, u32)>,
) -> ApiResult<Response> {
    Ok(reply(StatusCode::OK, version_of(&st, &name, v).await?))
}

/// Events of a body with their line numbers: NDJSON (blank lines skipped,
/// numbered as in the body), or JSON `{"events": [...]}` / `[...]` (numbered
/// by position).
pub fn event_lines(b: &Body) -> ApiResult<Vec<(usize, Vec<u8>)>> {
    match b.content_type().as_str() {
        "application/x-ndjson" | "application/jsonl" => Ok(b
            .bytes
            .split(|&c| c == b'\n')
            .enumerate()
            .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
            .map(|(i, l)| (i + 1, l.to_vec()))
            .collect()),
        "application/json" => {
            let v: serde_json::Value = b.json()?;
            let list = match v {
                serde_json::Value::Array(a) => a,
                serde_json::Value::Object(mut o) => match o.remove("events") {
                    Some(serde_json::Value::Array(a)) => a,
                    _ => {
                        return Err(ApiError::bad_request(
                            "expected {\"events\": [...]} or a JSON array of events",
                        ));
                    }
                },
                _ => {
                    return Err(ApiError::bad_request(
                        "expected {\"events\": [...]} or a JSON array of events",
                    ));
                }
            };
            Ok(list
                .iter()
                .enumerate()
                .map(|(i, e)| (i + 1, e.to_string().into_bytes()))
                .collect())
        }
        other => Err(unsupported(
            other,
            "application/x-ndjson or application/json",
        )),
    }
}

/// Runs one rule text (with the schema) over events, as replay would.
/// Runs version `version` of a rule (its `text`) over `events` with the
/// stored `lists`, as a node would: alerts say that version and carry its ids.
fn run_text<E: AsRef<[u8]>>(
    schema: &str,
    text: &str,
    version: u32,
    lists: &[(String, Vec<String>)],
    events: &[(usize, E)],
) -> ApiResult<(Vec<serde_json::Value>, Vec<serde_json::Value>)> {
    let set = Arc::new(catalog::compile(schema, text)?);
    let decoder = Decoder::new(&set);
    let deployments = vec![
        Deployment {
            version,
            shadow: false
        };
        set.rules.len()
    ];
    let mut engine = Engine::with_deployments(set.clone(), EngineConfig::default(), &deployments);
    for (name, entries) in lists {
        engine.set_list(name, entries.iter().cloned());
    }
    engine.set_wall_clock(catalog::now_ms());
    let mut rejected = vec![];
    for (line, e) in events {
        match decoder.decode(e.as_ref(), || format!("test:{line}")) {
            Ok(ev) => engine.push(ev),
            Err(r) => rejected
                .push(serde_json::json!({"line": line, "reason": r.reason, "message": r.detail})),
        }
    }
    engine.finish(false);
    let alerts = engine
        .drain_alerts()
        .iter()
        .map(|a| serde_json::to_value(a).unwrap_or_default())
        .collect();
    Ok((alerts, rejected))
}

/// Run a version over inline events: the alerts it would produce.
#[utoipa::path(post, path = "/v1/rules/{name}/versions/{version}/test", tag = "rules", security(("api_key" = [])),
    params(("name" = String, Path, description = "Rule name"), ("version" = u32, Path, description = "Version number")),
    request_body(content = String, description = "Events: NDJSON, or JSON {\"events\": [...]}", content_type = "application/x-ndjson"),
    responses((status = 200, description = "`{events, alerts: [alert…], rejected: [{line, reason, message}]}`")))]
pub async fn test_version(
    State(st): State<AppState>,
    c: Caller,
    Path((name, v)): Path<(String, u32)>,
    body: Body,
) -> ApiResult<Response> {
    c.require(Role::Analyst, "testing a rule")?;
    let ver = version_of(&st, &name, v).await?;
    let events = event_lines(&body)?;
    let schema = st.catalog.schema().await?;
    let lists = super::lists::stored(&st).await?;
    let n = events.len();
    let (alerts, rejected) = tokio::task::spawn_blocking(move || {
        run_text(&schema, &ver.text, ver.version, &lists, &events)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(reply(
        StatusCode::OK,
        serde_json::json!({"events": n, "alerts": alerts, "rejected": rejected}),
    ))
}

#[derive(Deserialize)]
struct DeployBody {
    version: u32,
    mode: Mode,
}

/// Deploy a version in `shadow` (analyst) or `active` (admin) mode.
#[utoipa::path(post, path = "/v1/rules/{name}/deploy", tag = "rules", security(("api_key" = [])),
    params(("name" = String, Path, description = "Rule name")),
    request_body(content = String, description = "{\"version\": n, \"mode\": \"shadow\"|\"active\"}", content_type = "application/json"),
    responses((status = 200, description = "The rule after the deploy"), (status = 403, description = "active needs admin, shadow needs analyst"), (status = 404, description = "Unknown rule or version")))]
pub async fn deploy(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    c.require(Role::Analyst, "deploying a rule")?;
    let d: DeployBody = body.json()?;
    if d.mode == Mode::Active {
        c.require(Role::Admin, "deploying a rule in active mode")?;
    }
    let after = st
        .catalog
        .change_state(&name, &c.name, "rule.deploy", |s| {
            s.deployed = Some((d.version, d.mode));
            s.paused = false;
            s.archived = false;
            Ok(())
        })
        .await?;
    Ok(reply(StatusCode::OK, summary(&st, after).await?))
}

async fn lifecycle(
    st: AppState,
    c: Caller,
    name: String,
    action: &'static str,
    f: fn(&mut RuleState) -> Result<(), crate::catalog::CatalogError>,
) -> ApiResult<Response> {
    c.require(Role::Admin, action)?;
    let after = st.catalog.change_state(&name, &c.name, action, f).await?;
    Ok(reply(StatusCode::OK, summary(&st, after).await?))
}

/// Stop running the rule (its state is dropped); `resume` restarts it.
#[utoipa::path(post, path = "/v1/rules/{name}/pause", tag = "rules", security(("api_key" = [])),
    params(("name" = String, Path, description = "Rule name")),
    responses((status = 200, description = "The rule"), (status = 403, description = "Needs admin")))]
pub async fn pause(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    lifecycle(st, c, name, "rule.pause", |s| {
        s.paused = true;
        Ok(())
    })
    .await
}

/// Run a paused rule again.
#[utoipa::path(post, path = "/v1/rules/{name}/resume", tag = "rules", security(("api_key" = [])),
    params(("name" = String, Path, description = "Rule name")),
    responses((status = 200, description = "The rule"), (status = 403, description = "Needs admin")))]
pub async fn resume(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    lifecycle(st, c, name, "rule.resume", |s| {
        if s.archived {
            return Err(crate::catalog::CatalogError::Conflict(
                "an archived rule cannot be resumed; deploy a version instead".into(),
            ));
        }
        s.paused = false;
        Ok(())
    })
    .await
}

/// Retire a rule: it stops running; its versions and audit stay.
#[utoipa::path(post, path = "/v1/rules/{name}/archive", tag = "rules", security(("api_key" = [])),
    params(("name" = String, Path, description = "Rule name")),
    responses((status = 200, description = "The rule"), (status = 403, description = "Needs admin")))]
pub async fn archive(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    lifecycle(st, c, name, "rule.archive", |s| {
        s.archived = true;
        Ok(())
    })
    .await
}

#[derive(Deserialize)]
pub struct DiffQuery {
    from: u32,
    to: u32,
}

/// Text diff of two versions and the alert diff over the gateway's recent-event sample.
#[utoipa::path(get, path = "/v1/rules/{name}/diff", tag = "rules", security(("api_key" = [])),
    params(("name" = String, Path, description = "Rule name"),
        ("from" = u32, Query, description = "Old version"), ("to" = u32, Query, description = "New version")),
    responses((status = 200, description = "`{text: unified diff, sample_events, alerts: {only_from, only_to, both}}`")))]
pub async fn diff(
    State(st): State<AppState>,
    _c: Caller,
    Path(name): Path<String>,
    Query(q): Query<DiffQuery>,
) -> ApiResult<Response> {
    let a = version_of(&st, &name, q.from).await?;
    let b = version_of(&st, &name, q.to).await?;
    let text = similar::TextDiff::from_lines(&a.text, &b.text)
        .unified_diff()
        .header(&format!("{name}@v{}", q.from), &format!("{name}@v{}", q.to))
        .to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    st.command(Command::Sample(tx));
    let sample = tokio::time::timeout(std::time::Duration::from_secs(5), rx)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let schema = st.catalog.schema().await?;
    let lists = super::lists::stored(&st).await?;
    let n = sample.len();
    let sample: Vec<(usize, Arc<[u8]>)> = sample
        .into_iter()
        .enumerate()
        .map(|(i, e)| (i + 1, e))
        .collect();
    let (only_from, only_to, both) = tokio::task::spawn_blocking(move || -> ApiResult<_> {
        // Compare matches, not ids: the version number is part of an id.
        let sig = |alerts: Vec<serde_json::Value>| -> BTreeSet<String> {
            alerts
                .into_iter()
                .map(|a| serde_json::json!([a["key"], a["at"], a["matched"]]).to_string())
                .collect()
        };
        let old = sig(run_text(&schema, &a.text, a.version, &lists, &sample)?.0);
        let new = sig(run_text(&schema, &b.text, b.version, &lists, &sample)?.0);
        let only_from: Vec<String> = old.difference(&new).cloned().collect();
        let only_to: Vec<String> = new.difference(&old).cloned().collect();
        Ok((only_from, only_to, old.intersection(&new).count()))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let parse = |v: Vec<String>| -> Vec<serde_json::Value> {
        v.iter()
            .filter_map(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            .map(|t| serde_json::json!({"key": t[0], "at": t[1], "matched": t[2]}))
            .collect()
    };
    Ok(reply(
        StatusCode::OK,
        serde_json::json!({
            "text": text,
            "sample_events": n,
            "alerts": {"only_from": parse(only_from), "only_to": parse(only_to), "both": both},
        }),
    ))
}

/// The shared event declarations every rule compiles against.
#[utoipa::path(get, path = "/v1/schema", tag = "rules", security(("api_key" = [])),
    responses((status = 200, description = "The schema as .vgl text", content_type = "text/plain")))]
pub async fn get_schema(State(st): State<AppState>, _c: Caller) -> ApiResult<String> {
    Ok(st.catalog.schema().await?)
}

/// Replace the event declarations (admin); refused if a deployed rule stops compiling.
#[utoipa::path(put, path = "/v1/schema", tag = "rules", security(("api_key" = [])),
    request_body(content = String, description = "Event declarations as .vgl text", content_type = "text/plain"),
    responses((status = 200, description = "Deployed"), (status = 422, description = "Does not compile with the deployed rules")))]
pub async fn put_schema(State(st): State<AppState>, c: Caller, body: Body) -> ApiResult<Response> {
    c.require(Role::Admin, "changing the schema")?;
    let text = rule_text(&body)?;
    let (ast, _) = rule_lang::parse(0, &text);
    if !ast.rules.is_empty() {
        return Err(ApiError::bad_request(
            "the schema holds event declarations only",
        ));
    }
    let old = st.catalog.schema().await?;
    st.store.put_schema(&text).await?;
    if let Err(e) = st.catalog.deploy().await {
        st.store.put_schema(&old).await?;
        return Err(e.into());
    }
    st.catalog
        .audit(&c.name, "schema.update", "schema", old.into(), text.into())
        .await?;
    Ok(reply(StatusCode::OK, serde_json::json!({"ok": true})))
}

/// The compiled program of a version (the NFA, one point per line), as
/// `vigil-replay explain` prints it.
#[utoipa::path(get, path = "/v1/rules/{name}/versions/{version}/program", tag = "rules", security(("api_key" = [])),
    params(("name" = String, Path, description = "Rule name"), ("version" = u32, Path, description = "Version number")),
    responses((status = 200, description = "`{rule, version, dump}`"), (status = 404, description = "Unknown rule or version"),
        (status = 422, description = "The version no longer compiles against the schema")))]
pub async fn get_program(
    State(st): State<AppState>,
    _c: Caller,
    Path((name, v)): Path<(String, u32)>,
) -> ApiResult<Response> {
    let ver = version_of(&st, &name, v).await?;
    let schema = st.catalog.schema().await?;
    let set = catalog::compile(&schema, &ver.text)?;
    let dump: String = set.rules.iter().map(|r| set.dump_rule(r)).collect();
    Ok(reply(
        StatusCode::OK,
        serde_json::json!({"rule": name, "version": v, "dump": dump}),
    ))
}

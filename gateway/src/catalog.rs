//! The rule catalog: rule versions and their lifecycle in the [`Store`], turned
//! into the rule set the nodes run.
//!
//! The store holds one *schema* text (every `event` declaration) and, per rule,
//! immutable versions (each a `.vgl` text with exactly that rule) plus a state
//! (deployed version and mode, paused, archived). The running rule set is the
//! schema plus the deployed version of every rule that is neither paused nor
//! archived; any change recompiles it and deploys it to every node (a rule
//! whose compiled form and version did not change keeps its partial matches).

use crate::router::Command;
use crate::rules::Bundle;
use crate::store::{AuditEntry, Mode, RuleState, RuleVersion, Store, StoreError};
use rule_lang::program::RuleSet;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use tokio::sync::Mutex;
use tracing::info;

/// File name diagnostics use for the schema text.
pub const SCHEMA_FILE: &str = "events.vgl";
/// File name diagnostics use for a submitted rule text.
pub const RULE_FILE: &str = "rule.vgl";

/// Why a catalog operation failed (mapped to HTTP statuses by the API).
#[derive(Debug)]
pub enum CatalogError {
    /// The text does not compile: diagnostics as JSON (`vigil-replay check --format json`).
    Invalid(Vec<rule_lang::diag::DiagnosticJson>),
    /// The text is not exactly one rule, or names the wrong rule.
    BadRequest(String),
    NotFound(String),
    Conflict(String),
    Store(StoreError),
}

impl From<StoreError> for CatalogError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => CatalogError::NotFound(m),
            other => CatalogError::Store(other),
        }
    }
}

impl std::error::Error for CatalogError {}

impl std::fmt::Display for CatalogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CatalogError::Invalid(d) => {
                write!(f, "the rule does not compile ({} diagnostics)", d.len())
            }
            CatalogError::BadRequest(m) | CatalogError::NotFound(m) | CatalogError::Conflict(m) => {
                f.write_str(m)
            }
            CatalogError::Store(e) => write!(f, "store: {e}"),
        }
    }
}

/// What a compile check found.
#[derive(Debug, Serialize)]
pub struct Validation {
    pub ok: bool,
    /// The rule's name, when the text holds exactly one rule.
    pub rule: Option<String>,
    pub diagnostics: Vec<rule_lang::diag::DiagnosticJson>,
}

pub struct Catalog {
    store: Store,
    router: std::sync::Mutex<Sender<Command>>,
    /// Serialises changes; holds the rule-set version counter.
    deploy_lock: Mutex<u64>,
    current: std::sync::RwLock<Option<Bundle>>,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Content hash of a rule text.
pub fn text_hash(text: &str) -> String {
    rule_lang::check::fnv_hex(text)
}

impl Catalog {
    pub fn new(store: Store, router: Sender<Command>) -> Catalog {
        Catalog {
            store,
            router: std::sync::Mutex::new(router),
            deploy_lock: Mutex::new(0),
            current: std::sync::RwLock::new(None),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The rule set running now.
    pub fn current(&self) -> Option<Bundle> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// Tags of a running rule (webhook filters use them).
    pub fn rule_tags(&self, rule: &str) -> Vec<String> {
        self.current
            .read()
            .ok()
            .and_then(|c| {
                c.as_ref()
                    .and_then(|b| b.set.rules.iter().find(|r| r.name == rule))
                    .map(|r| r.tags.clone())
            })
            .unwrap_or_default()
    }

    pub async fn schema(&self) -> Result<String, CatalogError> {
        Ok(self.store.schema().await?.unwrap_or_default())
    }

    /// Compiles `text` (one rule) against the stored schema.
    pub async fn validate(
        &self,
        text: &str,
    ) -> Result<(Validation, Option<RuleSet>), CatalogError> {
        let schema = self.schema().await?;
        Ok(validate_against(&schema, text))
    }

    /// Records `text` as the next version of the rule it declares (a draft).
    /// The same text as the latest version is not a new version: that one is returned.
    pub async fn create_version(
        &self,
        text: &str,
        actor: &str,
    ) -> Result<(RuleVersion, bool), CatalogError> {
        let (v, _) = self.validate(text).await?;
        // A text that compiles but is not one rule: 400 with that message.
        // Any other error (a syntax error in a text that therefore has no
        // rule, a name too long, a type error): 422 with every diagnostic.
        let only_not_one_rule = v
            .diagnostics
            .iter()
            .filter(|d| d.severity == rule_lang::DiagSeverity::Error)
            .all(|d| d.code == NOT_ONE_RULE);
        if v.rule.is_none() && only_not_one_rule {
            return Err(CatalogError::BadRequest(NOT_ONE_RULE_MESSAGE.into()));
        }
        if !v.ok {
            return Err(CatalogError::Invalid(v.diagnostics));
        }
        let Some(rule) = v.rule.clone() else {
            return Err(CatalogError::BadRequest(NOT_ONE_RULE_MESSAGE.into()));
        };
        let hash = text_hash(text);
        let _guard = self.deploy_lock.lock().await;
        let versions = self.store.versions(&rule).await?;
        if let Some(last) = versions.last()
            && last.hash == hash
        {
            return Ok((last.clone(), false));
        }
        let created = self
            .store
            .create_version(&rule, &hash, text, actor, now_ms())
            .await?;
        if self.store.rule_state(&rule).await?.is_none() {
            self.store
                .put_rule_state(&RuleState {
                    name: rule.clone(),
                    deployed: None,
                    paused: false,
                    archived: false,
                    owner: actor.to_string(),
                    updated_at: now_ms(),
                })
                .await?;
        }
        self.audit(
            actor,
            "rule.create_version",
            &format!("rule:{rule}"),
            serde_json::Value::Null,
            serde_json::json!({"version": created.version, "hash": created.hash}),
        )
        .await?;
        Ok((created, true))
    }

    /// Applies a state change to one rule, redeploys, and audits it. If the new
    /// rule set does not compile the change is undone.
    pub async fn change_state(
        &self,
        name: &str,
        actor: &str,
        action: &str,
        f: impl FnOnce(&mut RuleState) -> Result<(), CatalogError>,
    ) -> Result<RuleState, CatalogError> {
        let mut counter = self.deploy_lock.lock().await;
        let Some(before) = self.store.rule_state(name).await? else {
            return Err(CatalogError::NotFound(format!("no rule named `{name}`")));
        };
        let mut after = before.clone();
        f(&mut after)?;
        after.updated_at = now_ms();
        if let Some((v, _)) = after.deployed
            && self.store.version(name, v).await?.is_none()
        {
            return Err(CatalogError::NotFound(format!(
                "rule `{name}` has no version {v}"
            )));
        }
        self.store.put_rule_state(&after).await?;
        if let Err(e) = self.deploy_locked(&mut counter).await {
            self.store.put_rule_state(&before).await?;
            return Err(e);
        }
        self.audit(
            actor,
            action,
            &format!("rule:{name}"),
            serde_json::to_value(&before).unwrap_or_default(),
            serde_json::to_value(&after).unwrap_or_default(),
        )
        .await?;
        Ok(after)
    }

    /// Recompiles the running set from the store and sends it to the nodes.
    pub async fn deploy(&self) -> Result<Bundle, CatalogError> {
        let mut counter = self.deploy_lock.lock().await;
        self.deploy_locked(&mut counter).await
    }

    async fn deploy_locked(&self, counter: &mut u64) -> Result<Bundle, CatalogError> {
        let (files, rules, set) = self.compose().await?;
        *counter += 1;
        let bundle = Bundle {
            version: *counter,
            files,
            rules,
            set: Arc::new(set),
        };
        info!(
            version = bundle.version,
            rules = bundle.rules.len(),
            "rule set composed"
        );
        if let Ok(tx) = self.router.lock() {
            let _ = tx.send(Command::Deploy(bundle.clone()));
        }
        if let Ok(mut c) = self.current.write() {
            *c = Some(bundle.clone());
        }
        Ok(bundle)
    }

    /// Deploys again if the store now composes a different set than `running`
    /// (another gateway sharing the store changed it).
    pub async fn redeploy_if_changed(&self, running: &Bundle) -> Result<(), CatalogError> {
        let mut counter = self.deploy_lock.lock().await;
        let (files, rules, _) = self.compose().await?;
        if files != running.files || rules != running.rules {
            self.deploy_locked(&mut counter).await?;
        }
        Ok(())
    }

    /// The running set as the store describes it: sources, rule versions, program.
    #[allow(clippy::type_complexity)]
    async fn compose(
        &self,
    ) -> Result<(Vec<(String, String)>, Vec<(String, u32, bool)>, RuleSet), CatalogError> {
        let schema = self.schema().await?;
        let mut files = vec![(SCHEMA_FILE.to_string(), schema)];
        let mut rules = vec![];
        for st in self.store.rule_states().await? {
            let Some((v, mode)) = st.deployed else {
                continue;
            };
            if st.paused || st.archived {
                continue;
            }
            let Some(ver) = self.store.version(&st.name, v).await? else {
                continue;
            };
            files.push((format!("{}@v{v}.vgl", st.name), ver.text));
            rules.push((st.name.clone(), v, mode == Mode::Shadow));
        }
        let mut sources = rule_lang::Sources::new();
        for (n, t) in &files {
            sources.add(n.clone(), t.clone());
        }
        let compiled = rule_lang::compile_sources(sources);
        let Some(set) = compiled.program else {
            return Err(CatalogError::Invalid(compiled.diagnostics.to_json()));
        };
        Ok((files, rules, set))
    }

    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        before: serde_json::Value,
        after: serde_json::Value,
    ) -> Result<u64, CatalogError> {
        Ok(self
            .store
            .append_audit(AuditEntry {
                seq: 0,
                at: now_ms(),
                actor: actor.to_string(),
                action: action.to_string(),
                target: target.to_string(),
                before,
                after,
            })
            .await?)
    }

    /// Loads `.vgl` files: the event declarations become the schema, each rule
    /// whose text differs from its latest version becomes a new version marked
    /// deployed `active`. Returns how many things changed; the caller deploys
    /// (once). Used at first start (empty store) and on SIGHUP.
    pub async fn import(&self, paths: &[PathBuf], actor: &str) -> anyhow::Result<usize> {
        let sources = rule_lang::read_sources(paths)?;
        let compiled = rule_lang::compile_sources(sources.clone());
        if compiled.program.is_none() {
            anyhow::bail!(
                "the rules do not compile; nothing imported:\n{}",
                compiled.diagnostics.render(false)
            );
        }
        let (schema, rules) = split_sources(&sources);
        let mut changed = 0;
        {
            let _guard = self.deploy_lock.lock().await;
            let old = self.store.schema().await?;
            if old.as_deref() != Some(schema.as_str()) {
                self.store.put_schema(&schema).await?;
                self.audit(
                    actor,
                    "schema.import",
                    "schema",
                    old.map_or(serde_json::Value::Null, serde_json::Value::String),
                    serde_json::Value::String(schema.clone()),
                )
                .await?;
                changed += 1;
            }
        }
        for (name, text) in rules {
            let (ver, _) = self
                .create_version(&text, actor)
                .await
                .map_err(|e| anyhow::anyhow!("importing rule {name}: {e}"))?;
            let _guard = self.deploy_lock.lock().await;
            let Some(before) = self.store.rule_state(&name).await? else {
                continue;
            };
            let want = Some((ver.version, Mode::Active));
            if before.deployed == want && !before.paused && !before.archived {
                continue;
            }
            let after = RuleState {
                deployed: want,
                paused: false,
                archived: false,
                updated_at: now_ms(),
                ..before.clone()
            };
            self.store.put_rule_state(&after).await?;
            self.audit(
                actor,
                "rule.deploy",
                &format!("rule:{name}"),
                serde_json::to_value(&before).unwrap_or_default(),
                serde_json::to_value(&after).unwrap_or_default(),
            )
            .await?;
            changed += 1;
        }
        Ok(changed)
    }
}

/// Compiles one rule text against a schema text.
pub fn validate_against(schema: &str, text: &str) -> (Validation, Option<RuleSet>) {
    let (ast, _) = rule_lang::parse(1, text);
    let rule =
        (ast.rules.len() == 1 && ast.events.is_empty()).then(|| ast.rules[0].name.name.clone());
    let mut sources = rule_lang::Sources::new();
    sources.add(SCHEMA_FILE, schema);
    sources.add(RULE_FILE, text);
    let mut compiled = rule_lang::compile_sources(sources);
    // What a stored rule text must be besides compiling: one rule, no event
    // types, a name that fits in a URL path. Diagnostics like the compiler's.
    let items = &mut compiled.diagnostics.items;
    if rule.is_none() && !items.iter().any(|d| d.is_error()) {
        let span = match (ast.rules.get(1), ast.events.first()) {
            (_, Some(e)) => e.span,
            (Some(r), None) => r.span,
            (None, None) => rule_lang::Span::new(1, 0, text.len()),
        };
        items.push(
            rule_lang::Diagnostic::error(NOT_ONE_RULE, span, NOT_ONE_RULE_MESSAGE).with_label(
                match ast.rules.len() {
                    0 => "no rule here",
                    1 => "an event type belongs in the schema (PUT /v1/schema)",
                    _ => "a second rule: submit each rule on its own",
                },
            ),
        );
    }
    for r in &ast.rules {
        if r.name.name.len() > MAX_RULE_NAME {
            items.push(
                rule_lang::Diagnostic::error(
                    "rule-name-too-long",
                    r.name.span,
                    format!(
                        "a rule name is at most {MAX_RULE_NAME} characters; this one has {}",
                        r.name.name.len()
                    ),
                )
                .with_label("too long"),
            );
        }
    }
    let ok = compiled.program.is_some() && rule.is_some() && !items.iter().any(|d| d.is_error());
    (
        Validation {
            ok,
            rule,
            diagnostics: compiled.diagnostics.to_json(),
        },
        compiled.program,
    )
}

/// Longest rule name, characters (names are ASCII identifiers: letters,
/// digits, `_`, not starting with a digit). Names appear in every rule URL,
/// metric label and alert.
pub const MAX_RULE_NAME: usize = 64;
/// Code of the diagnostic for a text that is not exactly one rule.
pub const NOT_ONE_RULE: &str = "not-one-rule";
const NOT_ONE_RULE_MESSAGE: &str = "the text must declare exactly one rule and no event types";

/// Compiles one rule text against a schema text, for running it: the
/// program, or the diagnostics as [`CatalogError::Invalid`].
pub fn compile(schema: &str, text: &str) -> Result<RuleSet, CatalogError> {
    let (check, set) = validate_against(schema, text);
    set.filter(|_| check.ok)
        .ok_or(CatalogError::Invalid(check.diagnostics))
}

/// Splits source files into the schema text (every event declaration, in
/// order) and one text per rule (its declaration with the comment lines just
/// above it).
pub fn split_sources(sources: &rule_lang::Sources) -> (String, Vec<(String, String)>) {
    let mut schema = String::new();
    let mut rules = vec![];
    for (i, f) in sources.files.iter().enumerate() {
        let (ast, _) = rule_lang::parse(i as u32, &f.text);
        for e in &ast.events {
            let start = with_comments(&f.text, e.span.start as usize);
            if let Some(t) = f.text.get(start..e.span.end as usize) {
                schema.push_str(t);
                schema.push_str("\n\n");
            }
        }
        for r in &ast.rules {
            let start = with_comments(&f.text, r.span.start as usize);
            if let Some(t) = f.text.get(start..r.span.end as usize) {
                rules.push((r.name.name.clone(), format!("{t}\n")));
            }
        }
    }
    (schema, rules)
}

/// Moves `start` back over the `#` comment lines directly above it.
fn with_comments(text: &str, start: usize) -> usize {
    let mut begin = text[..start].rfind('\n').map_or(0, |i| i + 1);
    loop {
        if begin == 0 {
            return begin;
        }
        let prev_start = text[..begin - 1].rfind('\n').map_or(0, |i| i + 1);
        let line = text[prev_start..begin - 1].trim_start();
        if line.starts_with('#') {
            begin = prev_start;
        } else {
            return begin;
        }
    }
}

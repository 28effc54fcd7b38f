//! The gateway's rule registry (file-based until the HTTP API owns it): loads
//! the `--rules` directory, numbers rule versions, and produces the bundle a
//! deploy sends to every node.

use anyhow::{Context, bail};
use rule_lang::program::RuleSet;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// What one deploy carries: the sources (nodes compile them), the versions,
/// and the compiled set (the router decodes and routes with it).
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Rule-set version: +1 on every deploy.
    pub version: u64,
    pub files: Vec<(String, String)>,
    /// Per rule: (name, rule version, shadow).
    pub rules: Vec<(String, u32, bool)>,
    pub set: Arc<RuleSet>,
}

/// Rule versions: a rule whose source text is unchanged keeps its version (and
/// so its partial matches); a changed rule gets the next one; a new rule gets 1.
#[derive(Debug, Default)]
pub struct Registry {
    paths: Vec<PathBuf>,
    version: u64,
    rules: HashMap<String, (String, u32)>,
    current: Option<Bundle>,
}

impl Registry {
    pub fn new(paths: Vec<PathBuf>) -> Registry {
        Registry {
            paths,
            ..Registry::default()
        }
    }

    /// Reads and compiles the rule paths. `Ok(None)`: nothing changed.
    /// On a compile error the running rules stay and the diagnostics are returned.
    pub fn reload(&mut self) -> anyhow::Result<Option<Bundle>> {
        let sources = rule_lang::read_sources(&self.paths)
            .with_context(|| format!("reading rules from {:?}", self.paths))?;
        let files: Vec<(String, String)> = sources
            .files
            .iter()
            .map(|f| (f.name.clone(), f.text.clone()))
            .collect();
        let compiled = rule_lang::compile_sources(sources);
        let Some(set) = compiled.program else {
            bail!(
                "the rules do not compile; the running rules stay:\n{}",
                compiled.diagnostics.render(false)
            );
        };
        let mut changed = self.current.is_none();
        let mut rules = vec![];
        let mut next: HashMap<String, (String, u32)> = HashMap::new();
        for r in &set.rules {
            let v = match self.rules.get(&r.name) {
                Some((hash, v)) if *hash == r.source_hash => *v,
                Some((_, v)) => {
                    changed = true;
                    v + 1
                }
                None => {
                    changed = true;
                    1
                }
            };
            next.insert(r.name.clone(), (r.source_hash.clone(), v));
            rules.push((r.name.clone(), v, false));
        }
        // A removed rule also changes the set (versions of removed rules are
        // remembered so a rule that comes back does not reuse its old number).
        if self.rules.keys().any(|k| !next.contains_key(k)) {
            changed = true;
        }
        let schemas_changed = self
            .current
            .as_ref()
            .is_some_and(|c| c.set.schemas != set.schemas);
        if !changed && !schemas_changed {
            return Ok(None);
        }
        for (k, (h, v)) in std::mem::take(&mut self.rules) {
            next.entry(k).or_insert((h, v));
        }
        self.rules = next;
        self.version += 1;
        let bundle = Bundle {
            version: self.version,
            files,
            rules,
            set: Arc::new(set),
        };
        self.current = Some(bundle.clone());
        Ok(Some(bundle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: &str = "event A { k: string, x: int }\n";
    const R1: &str = "rule r1 {\n  key k\n  pattern a: A -> b: A\n  within 1m\n}\n";
    const R2: &str = "rule r2 {\n  key k\n  pattern a: A[x > 1] -> b: A\n  within 1m\n}\n";

    #[test]
    fn versions_follow_changes() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("vigil-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("events.vgl"), EVENTS)?;
        std::fs::write(dir.join("r1.vgl"), R1)?;
        std::fs::write(dir.join("r2.vgl"), R2)?;
        let mut reg = Registry::new(vec![dir.clone()]);
        let b = reg.reload()?.expect("first load deploys");
        assert_eq!(b.version, 1);
        assert_eq!(
            b.rules,
            vec![("r1".into(), 1, false), ("r2".into(), 1, false)]
        );
        assert!(reg.reload()?.is_none(), "nothing changed");
        std::fs::write(dir.join("r2.vgl"), R2.replace("x > 1", "x > 2"))?;
        let b = reg.reload()?.expect("r2 changed");
        assert_eq!(b.version, 2);
        assert_eq!(
            b.rules,
            vec![("r1".into(), 1, false), ("r2".into(), 2, false)]
        );
        std::fs::write(dir.join("r2.vgl"), "rule r2 { oops")?;
        assert!(reg.reload().is_err());
        // The failed load changed nothing: back to the running text, no deploy.
        std::fs::write(dir.join("r2.vgl"), R2.replace("x > 1", "x > 2"))?;
        assert!(reg.reload()?.is_none());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}

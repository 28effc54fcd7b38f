//! The Vigil rule language.
//!
//! A rule set goes through three stages, each a public function usable alone:
//!
//! | stage | input → output |
//! |---|---|
//! | [`parse`] | `.vgl` text → [`ast::File`] (spanned syntax tree) |
//! | [`check`] | files → [`check::Checked`] (names resolved, types checked, warnings) |
//! | [`compile`] | checked → [`program::RuleSet`] (immutable, serialisable NFA program) |
//!
//! [`compile_sources`] chains them over a set of files and collects every
//! diagnostic; [`load_paths`] reads files and directories from disk first.
#![forbid(unsafe_code)]

pub mod ast;
pub mod check;
pub mod compile;
pub mod diag;
pub mod parser;
pub mod program;

pub use check::check;
pub use compile::compile;
pub use diag::{Diagnostic, Diagnostics, Severity as DiagSeverity, SourceFile, Sources, Span};
pub use parser::{parse, parse_duration};
pub use program::RuleSet;

use std::path::{Path, PathBuf};

/// The result of compiling a rule set: the program (when there were no errors)
/// and every diagnostic, warnings included.
#[derive(Debug)]
pub struct Compiled {
    pub program: Option<RuleSet>,
    pub diagnostics: Diagnostics,
}

/// Parses, checks and compiles every file of `sources` as one rule set.
pub fn compile_sources(sources: Sources) -> Compiled {
    let mut diags = vec![];
    let mut files = vec![];
    for (i, f) in sources.files.iter().enumerate() {
        let (ast, d) = parse(i as u32, &f.text);
        diags.extend(d);
        files.push((ast, f.text.as_str()));
    }
    let (checked, d) = check(&files);
    diags.extend(d);
    let has_errors = diags.iter().any(Diagnostic::is_error);
    let program = (!has_errors).then(|| compile(checked));
    let mut diagnostics = Diagnostics {
        sources,
        items: diags,
    };
    diagnostics.sort();
    Compiled {
        program,
        diagnostics,
    }
}

/// Compiles one text as a rule set (tests, the HTTP API).
pub fn compile_str(name: &str, text: &str) -> Result<RuleSet, Diagnostics> {
    let mut sources = Sources::new();
    sources.add(name, text);
    let c = compile_sources(sources);
    c.program.ok_or(c.diagnostics)
}

/// Errors reading rule files from disk.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no .vgl files found in {0}")]
    Empty(PathBuf),
}

/// Reads `.vgl` files: each path is a file or a directory searched recursively
/// (sorted, skipping directories named `tests`, which hold golden cases with
/// their own schemas, and hidden directories).
pub fn read_sources(paths: &[PathBuf]) -> Result<Sources, LoadError> {
    let mut files = vec![];
    for p in paths {
        if p.is_dir() {
            let before = files.len();
            collect_dir(p, &mut files)?;
            if files.len() == before {
                return Err(LoadError::Empty(p.clone()));
            }
        } else {
            files.push(p.clone());
        }
    }
    let mut sources = Sources::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|source| LoadError::Io {
            path: f.clone(),
            source,
        })?;
        sources.add(f.display().to_string(), text);
    }
    Ok(sources)
}

fn collect_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let rd = std::fs::read_dir(dir).map_err(|source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            if name != "tests" && !name.starts_with('.') {
                collect_dir(&p, out)?;
            }
        } else if name.ends_with(".vgl") {
            out.push(p);
        }
    }
    Ok(())
}

/// Reads and compiles files and directories as one rule set.
pub fn load_paths(paths: &[PathBuf]) -> Result<Compiled, LoadError> {
    Ok(compile_sources(read_sources(paths)?))
}

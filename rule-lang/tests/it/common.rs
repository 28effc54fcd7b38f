//! Helpers shared by the test modules.

use rule_lang::{Compiled, Sources, compile_sources};
use std::path::{Path, PathBuf};

/// `rule-lang/tests/data`.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The workspace root (the parent of the `rule-lang` crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("rule-lang has a parent directory")
        .to_path_buf()
}

/// Reads a data file (path relative to `tests/data`).
pub fn read_data(rel: &str) -> String {
    let p = data_dir().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// Compiles one data file, named in diagnostics by its path relative to
/// `tests/data` so that rendered output does not depend on the checkout location.
pub fn compile_data(rel: &str) -> Compiled {
    let mut sources = Sources::new();
    sources.add(rel, read_data(rel));
    compile_sources(sources)
}

/// `.vgl` files of a data directory, sorted, as (stem, path relative to `tests/data`).
pub fn vgl_files(dir: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(data_dir().join(dir))
        .unwrap_or_else(|e| panic!("cannot list tests/data/{dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "vgl"))
        .map(|p| {
            let stem = p
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("utf-8 file name")
                .to_string();
            let rel = format!("{dir}/{stem}.vgl");
            (stem, rel)
        })
        .collect();
    out.sort();
    out
}

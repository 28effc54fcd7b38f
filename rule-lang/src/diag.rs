//! Diagnostics are data: a code, a message, a span, a label and an optional hint.
//! Rendering to caret text (ariadne) or JSON happens at the edge, in
//! [`Diagnostics::render`] and [`Diagnostics::to_json`].

use serde::{Deserialize, Serialize};
use std::fmt;

/// A byte range in one source file of a [`Sources`] set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Span {
    pub file: u32,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: u32, start: usize, end: usize) -> Span {
        Span {
            file,
            start: start as u32,
            end: end as u32,
        }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// One source file of a rule set.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The name shown in diagnostics (usually the path).
    pub name: String,
    pub text: String,
}

/// The files of a rule set; a [`Span`] names one by index.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub files: Vec<SourceFile>,
}

impl Sources {
    pub fn new() -> Sources {
        Sources::default()
    }

    /// Adds a file and returns its index.
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> u32 {
        self.files.push(SourceFile {
            name: name.into(),
            text: text.into(),
        });
        (self.files.len() - 1) as u32
    }

    /// One-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, file: u32, offset: u32) -> (usize, usize) {
        let Some(f) = self.files.get(file as usize) else {
            return (0, 0);
        };
        let offset = (offset as usize).min(f.text.len());
        let before = &f.text[..floor_char_boundary(&f.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    /// The text a span covers.
    pub fn snippet(&self, span: Span) -> &str {
        self.files
            .get(span.file as usize)
            .and_then(|f| f.text.get(span.start as usize..span.end as usize))
            .unwrap_or("")
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Error or warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about the rule text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable machine-readable code, e.g. `unknown-type`.
    pub code: &'static str,
    /// The headline: what is wrong.
    pub message: String,
    pub span: Span,
    /// The text under the caret: what was expected there.
    pub label: String,
    /// A suggestion, e.g. "did you mean `Txn`?".
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span,
            label: String::new(),
            hint: None,
        }
    }

    pub fn warning(code: &'static str, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, span, message)
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = label.into();
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_hint_opt(mut self, hint: Option<String>) -> Diagnostic {
        self.hint = hint;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// The JSON form of a diagnostic (`vigil-replay check --format json`, the HTTP API).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DiagnosticJson {
    pub severity: Severity,
    pub code: String,
    pub message: String,
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Diagnostics together with the sources they point into.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub sources: Sources,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.is_error())
    }

    /// Sorts by file and position so output is stable.
    pub fn sort(&mut self) {
        self.items
            .sort_by_key(|d| (d.span.file, d.span.start, d.span.end, d.code));
    }

    /// JSON objects with file, line and column.
    pub fn to_json(&self) -> Vec<DiagnosticJson> {
        self.items
            .iter()
            .map(|d| {
                let (line, column) = self.sources.line_col(d.span.file, d.span.start);
                let (end_line, end_column) = self.sources.line_col(d.span.file, d.span.end);
                DiagnosticJson {
                    severity: d.severity,
                    code: d.code.to_string(),
                    message: d.message.clone(),
                    file: self
                        .sources
                        .files
                        .get(d.span.file as usize)
                        .map(|f| f.name.clone())
                        .unwrap_or_default(),
                    line,
                    column,
                    end_line,
                    end_column,
                    label: d.label.clone(),
                    hint: d.hint.clone(),
                }
            })
            .collect()
    }

    /// Caret text, one report per diagnostic (ariadne). `color` for terminals.
    pub fn render(&self, color: bool) -> String {
        let mut out = Vec::new();
        for d in &self.items {
            render_one(&self.sources, d, color, &mut out);
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

fn render_one(sources: &Sources, d: &Diagnostic, color: bool, out: &mut Vec<u8>) {
    use ariadne::{Config, IndexType, Label, Report, ReportKind};
    let name = sources
        .files
        .get(d.span.file as usize)
        .map(|f| f.name.clone())
        .unwrap_or_default();
    let range = d.span.start as usize..d.span.end.max(d.span.start) as usize;
    let kind = match d.severity {
        Severity::Error => ReportKind::Error,
        Severity::Warning => ReportKind::Warning,
    };
    let label_text = if d.label.is_empty() {
        d.message.clone()
    } else {
        d.label.clone()
    };
    let mut report = Report::build(kind, (name.clone(), range.clone()))
        .with_config(
            Config::default()
                .with_color(color)
                .with_index_type(IndexType::Byte),
        )
        .with_code(d.code)
        .with_message(&d.message)
        .with_label(Label::new((name.clone(), range)).with_message(label_text));
    if let Some(h) = &d.hint {
        report = report.with_help(h);
    }
    let cache = ariadne::sources(
        sources
            .files
            .iter()
            .map(|f| (f.name.clone(), f.text.clone())),
    );
    // Writing into a Vec cannot fail.
    let _ = report.finish().write(cache, &mut *out);
}

/// Edit distance, for "did you mean" hints.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Edit distance where swapping two adjacent characters counts as one edit
/// (optimal string alignment), so `hihg` is one edit from `high`.
pub fn typo_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// The closest candidate within a small edit distance, formatted as a hint.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let limit = (name.chars().count() / 3).max(1) + usize::from(name.len() > 6);
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (typo_distance(&name.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, c.to_string()))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_distance_counts_a_swap_as_one_edit() {
        assert_eq!(typo_distance("hihg", "high"), 1);
        assert_eq!(typo_distance("flaot", "float"), 1);
        assert_eq!(typo_distance("Txm", "Txn"), 1);
        assert_eq!(typo_distance("", "abc"), 3);
        assert_eq!(typo_distance("abc", "abc"), 0);
        assert_eq!(levenshtein("hihg", "high"), 2);
    }

    #[test]
    fn did_you_mean_picks_the_closest() {
        assert_eq!(
            did_you_mean("Txm", ["Txn", "Login"]).as_deref(),
            Some("did you mean `Txn`?")
        );
        assert_eq!(did_you_mean("Transfer", ["Txn", "Login"]), None);
        assert_eq!(
            did_you_mean("hihg", ["low", "medium", "high", "critical"]).as_deref(),
            Some("did you mean `high`?")
        );
    }
}

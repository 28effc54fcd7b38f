//! The analyst console: static assets compiled into the binary (no build step,
//! no network access), served on the API's port. The page talks to the same
//! HTTP API as any client, with the key the user typed (kept in session
//! storage, sent as a bearer header, never in a URL).

use super::ApiError;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../../console/index.html");
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../console/app.css"),
    ),
];

/// The page only loads its own scripts and styles and talks only to this
/// origin.
const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// For console development only: with `VIGIL_CONSOLE_DIR` set, files are read
/// from that directory on every request (edit, reload, no rebuild); unset, the
/// compiled-in copies are served.
fn from_dev_dir(file: &str) -> Option<String> {
    let dir = std::env::var_os("VIGIL_CONSOLE_DIR")?;
    std::fs::read_to_string(std::path::Path::new(&dir).join(file)).ok()
}

fn page(content_type: &'static str, file: &str, body: &'static str) -> Response {
    let mut r = match from_dev_dir(file) {
        Some(text) => text.into_response(),
        None => body.into_response(),
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// `GET /`: the console.
pub async fn index() -> Response {
    page("text/html; charset=utf-8", "index.html", INDEX)
}

/// `GET /console/{file}`: its script and style sheet.
pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((name, ct, body)) => page(ct, name, body),
        None => ApiError::not_found(format!("no console file `{file}`")).into_response(),
    }
}

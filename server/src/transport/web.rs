//! The chat page from `web/`, compiled into the binary so that one file
//! deploys. `--web-root DIR` serves a folder instead (for editing the page
//! without rebuilding).

use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// (path, content type, bytes) of every file in `web/`.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../../web/index.html"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../../web/style.css"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../web/app.js"),
    ),
    (
        "/stomp.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../web/stomp.js"),
    ),
    (
        "/view.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../web/view.js"),
    ),
    (
        "/favicon.svg",
        "image/svg+xml",
        include_bytes!("../../../web/favicon.svg"),
    ),
];

/// Serves an embedded file; `/` is the chat page.
pub async fn embedded(uri: Uri) -> Response {
    let path = match uri.path() {
        "/" => "/index.html",
        // Asked for by browsers and tools that do not read the page's <link rel="icon">.
        "/favicon.ico" => "/favicon.svg",
        other => other,
    };
    match FILES.iter().find(|(p, _, _)| *p == path) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                // Revalidate, so a new broker version's page is picked up at once.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

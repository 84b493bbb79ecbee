//! The admin page's files, compiled into the binary (no build step).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error;

/// The admin page's files, compiled in: (path, content type, bytes).
const ADMIN_FILES: &[(&str, &str, &[u8])] = &[
    (
        "/admin",
        "text/html; charset=utf-8",
        include_bytes!("../../../web/admin/index.html"),
    ),
    (
        "/admin/admin.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../web/admin/admin.js"),
    ),
    (
        "/admin/admin.css",
        "text/css; charset=utf-8",
        include_bytes!("../../../web/admin/admin.css"),
    ),
    (
        "/admin/favicon.svg",
        "image/svg+xml",
        include_bytes!("../../../web/admin/favicon.svg"),
    ),
];

/// Serves the admin page's files; they hold no data, so no credentials
/// are asked for them (the page asks for the API's).
pub(super) async fn admin_file(uri: axum::http::Uri) -> Response {
    let path = match uri.path() {
        "/" | "/admin/" | "/admin/index.html" => "/admin",
        other => other,
    };
    match ADMIN_FILES.iter().find(|(p, _, _)| *p == path) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *bytes,
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "no such page"),
    }
}

//! The dashboard every node serves at `GET /`: one page, its script and its style,
//! embedded in the binary (it works offline; no CDN, no charting library).
//!
//! The assets hold no data: the page reads the public HTTP API like any client, with the
//! password the user types when the node has `--requirepass`. So they are served without
//! authentication (like `/health`), and everything they then ask for is authenticated.
//! `speedlayer demo` serves the same routes from its own port (see [`routes`]).

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa_axum::{router::OpenApiRouter, routes};

/// The page.
const INDEX_HTML: &str = include_str!("../../assets/dashboard/index.html");
/// Its script: polls the API every 2 s and draws tables, the range chart and sparklines.
const APP_JS: &str = include_str!("../../assets/dashboard/app.js");
/// Its style.
const STYLE_CSS: &str = include_str!("../../assets/dashboard/style.css");

/// The dashboard's routes (`/`, `/dashboard/app.js`, `/dashboard/style.css`), for any
/// router state: a node and the demo serve the same assets.
pub fn routes<S: Clone + Send + Sync + 'static>() -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(app_js))
        .routes(routes!(style_css))
}

/// `GET /`: the dashboard's page.
#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 200, description = "The dashboard (HTML)", body = String, content_type = "text/html")))]
async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /dashboard/app.js`: the dashboard's script.
#[utoipa::path(get, path = "/dashboard/app.js", tag = "dashboard",
    responses((status = 200, description = "The dashboard's script", body = String, content_type = "text/javascript")))]
async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /dashboard/style.css`: the dashboard's style.
#[utoipa::path(get, path = "/dashboard/style.css", tag = "dashboard",
    responses((status = 200, description = "The dashboard's style", body = String, content_type = "text/css")))]
async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

/// An embedded asset. The page may only load its own script and style and talk to its
/// own origin (a content security policy), and is revalidated on every load so an
/// upgraded node serves its new page.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

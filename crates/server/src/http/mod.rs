//! The HTTP/JSON front end (`/v1/...`, `/health`, `/metrics`, and the dashboard at `/`), as the README's "HTTP walk-through" and
//! `docs/architecture.md` describe it.

pub mod batch;
pub mod dashboard;
mod data;
pub mod error;
pub mod events;
mod lines;
pub mod params;
pub mod update_body;
mod views;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use speedlayer_api::Coordinator;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::metrics::{NodeMetrics, RequestLabels, RouteLabels};
use error::{ApiError, ErrorBody};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The one door every data and admin request goes through.
    pub coordinator: Arc<dyn Coordinator>,
    /// Event ingest (`/v1/events`).
    pub ingest: speedlayer_ingest::Ingest,
    /// Bound on bodies read whole (set by [`router`]).
    pub max_body_bytes: usize,
    /// The node's metrics and registry.
    pub metrics: Arc<NodeMetrics>,
    /// Bearer token required on every route but `/health`, when set.
    pub requirepass: Option<Arc<str>>,
    /// Failed tokens per source address (shared with the Redis door).
    pub auth_throttle: Arc<crate::auth::AuthThrottle>,
}

/// Builds the router. `max_body_bytes` bounds every request body (413 past it).
///
/// Every route is registered through [`OpenApiRouter::routes`] with its handler's
/// `#[utoipa::path]` annotation, so the OpenAPI document served at `/v1/openapi.json`
/// lists exactly the routes there are: a route cannot be added without its description.
pub fn router(mut state: AppState, max_body_bytes: usize) -> Router {
    state.max_body_bytes = max_body_bytes;
    let (authenticated, mut document) = OpenApiRouter::new()
        .routes(routes!(events::post))
        .routes(routes!(views::list))
        .routes(routes!(views::declare, views::describe))
        .routes(routes!(views::epochs))
        .routes(routes!(views::drop_epoch))
        .routes(routes!(views::flush))
        .routes(routes!(data::update))
        .routes(routes!(data::get))
        .routes(routes!(data::delete))
        .routes(routes!(data::range))
        .routes(routes!(batch::import, batch::status))
        .routes(routes!(cluster))
        .routes(routes!(leave))
        .routes(routes!(remove_node))
        .routes(routes!(metrics))
        .split_for_parts();
    // Served without a password: they hold no data.
    let (public, public_document) = OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(openapi_json))
        .merge(dashboard::routes())
        .split_for_parts();
    document.merge(public_document);
    let document = OpenApiDocument::new(document);
    authenticated
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .merge(public)
        .layer(axum::Extension(document))
        .layer(middleware::from_fn(refuse_encoded))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_oversized,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// The OpenAPI document of this API, rendered once when the router is built.
#[derive(Clone)]
struct OpenApiDocument(Arc<str>);

impl OpenApiDocument {
    fn new(mut document: utoipa::openapi::OpenApi) -> Self {
        document.info.title = "speedlayer HTTP API".into();
        document.info.version = env!("CARGO_PKG_VERSION").into();
        document.info.description = Some(
            "Realtime views (counters, distinct counts, sets, max/min, registers per key and \
             time bucket) with the batch hand-over. Every route but /health, /v1/openapi.json \
             and the dashboard takes `Authorization: Bearer <password>` when the node runs \
             with --requirepass. See the README's HTTP walk-through."
                .into(),
        );
        let json = document
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"rendering the document: {e}\"}}"));
        OpenApiDocument(json.into())
    }
}

/// `GET /v1/openapi.json`: the OpenAPI 3.1 document of this API, generated from the
/// handlers' annotations and their parameter and body types.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "node",
    responses((status = 200, description = "This document", body = Object)))]
async fn openapi_json(axum::Extension(document): axum::Extension<OpenApiDocument>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.0.to_string(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/health", tag = "node",
    responses((status = 200, description = "Serving; the event queue's length and lag", body = Object), (status = 503, description = "A journal sync failed: writes refused", body = Object)))]
async fn health(State(state): State<AppState>) -> Response {
    let queue = state.coordinator.event_log();
    let lag = queue.lag_seconds(speedlayer_ingest::ingest::now_us());
    if state.coordinator.storage_failed() {
        let body = serde_json::json!({
            "status": "storage_failed",
            "node": state.coordinator.node_id(),
            "detail": "a journal sync failed (disk full or I/O error): writes are refused; the node restarts itself once its data directory accepts writes again",
            "event_queue": { "length": queue.len(), "lag_seconds": lag },
        });
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    let body = serde_json::json!({
        "status": "ok",
        "node": state.coordinator.node_id(),
        "event_queue": { "length": queue.len(), "lag_seconds": lag },
    });
    axum::Json(body).into_response()
}

/// `GET /v1/cluster`: members, their state as this node sees them, hints, and the ring.
#[utoipa::path(get, path = "/v1/cluster", tag = "cluster",
    responses((status = 200, description = "Members and their state, the ring and its version, hints, anti-entropy", body = Object), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Password required (--requirepass)", body = ErrorBody)))]
async fn cluster(State(state): State<AppState>) -> Response {
    axum::Json(state.coordinator.status()).into_response()
}

/// `POST /v1/cluster/leave`: this node hands its partitions over and leaves the ring
/// (202: the move has begun; `GET /v1/cluster` shows it).
#[utoipa::path(post, path = "/v1/cluster/leave", tag = "cluster",
    responses((status = 202, description = "This node hands its partitions over, then leaves", body = Object), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Password required (--requirepass)", body = ErrorBody)))]
async fn leave(State(state): State<AppState>) -> Response {
    match state.coordinator.leave().await {
        Ok(()) => (
            axum::http::StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({"leaving": true})),
        )
            .into_response(),
        Err(e) => error::ApiError::from(e).into_response(),
    }
}

/// `DELETE /v1/cluster/nodes/{addr}`: takes a dead node out of the ring.
#[utoipa::path(delete, path = "/v1/cluster/nodes/{addr}", tag = "cluster", params(("addr" = String, Path, description = "Cluster address of a dead member")),
    responses((status = 200, description = "Removed; its partitions are rebuilt from the other replicas", body = Object), (status = 404, description = "No such member", body = ErrorBody), (status = 409, description = "The member is alive", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Password required (--requirepass)", body = ErrorBody)))]
async fn remove_node(
    State(state): State<AppState>,
    axum::extract::Path(addr): axum::extract::Path<String>,
) -> Response {
    match state.coordinator.remove_node(&addr).await {
        Ok(()) => axum::Json(serde_json::json!({"removed": addr})).into_response(),
        Err(e) => error::ApiError::from(e).into_response(),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "node",
    responses((status = 200, description = "Prometheus / OpenMetrics text", body = String, content_type = "application/openmetrics-text"), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Password required (--requirepass)", body = ErrorBody)))]
async fn metrics(State(state): State<AppState>) -> Response {
    // Keys per epoch are counted in the epoch keyspaces: checkpoint so they are current.
    if let Err(e) = state.coordinator.checkpoint().await {
        tracing::warn!(error = %e, "checkpoint before a metrics scrape failed");
    }
    match state.metrics.render(&*state.coordinator) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics_error",
            "could not encode metrics",
        )
        .into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

/// Checks `Authorization: Bearer <requirepass>` when a password is configured.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(pass) = &state.requirepass {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok =
            given.is_some_and(|g| speedlayer_api::secret_matches(g.as_bytes(), pass.as_bytes()));
        if !ok {
            let from = request
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip());
            let wait = state.auth_throttle.failed("http", from);
            tokio::time::sleep(wait).await;
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this node requires 'Authorization: Bearer <password>'",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// Routes that stream their bodies (NDJSON events, batch rows) rather than read them
/// whole; every other body is bounded by `max_body_bytes`.
const STREAMED_ROUTES: [&str; 2] = ["/v1/events", "/v1/views/{view}/batch"];

/// Answers 413 at once when a request that is read whole declares (`Content-Length`) a
/// body over the limit, instead of reading it (or waiting for bytes that never come).
async fn refuse_oversized(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let streamed = request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|p| STREAMED_ROUTES.contains(&p.as_str()));
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if !streamed && len > state.max_body_bytes as u64 => error::ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the body declares {len} bytes; at most {} are accepted (--max-body-bytes)",
                state.max_body_bytes
            ),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

/// Refuses a body with a `Content-Encoding` (gzip, …) with 415: bodies are read as they
/// are, and a compressed body read as JSON would fail confusingly, or worse, parse.
async fn refuse_encoded(request: Request, next: Next) -> Response {
    let encoding = request
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    match encoding {
        Some(e) if !e.is_empty() && e != "identity" => error::ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding '{e}' is not supported: send the body uncompressed"),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

/// Counts and times every request by its route template.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = RequestLabels {
        route: route.clone(),
        method,
        status: response.status().as_u16(),
    };
    state.metrics.http_requests.get_or_create(&labels).inc();
    if response.status().is_client_error() || response.status().is_server_error() {
        state.metrics.http_errors.get_or_create(&labels).inc();
    }
    state
        .metrics
        .http_latency
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}

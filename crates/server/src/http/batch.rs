//! Batch views over HTTP: `POST /v1/views/{view}/batch?covers_until=T` imports one,
//! `GET /v1/views/{view}/batch` shows the view's boundaries.
//!
//! The import body is NDJSON, one row per line: `{"key": "...", "clustering": "...",
//! "value": ...}` (`clustering` optional; the value in the view's type, see
//! [`BatchValue::from_json`]). It is streamed in chunks of [`CHUNK_ROWS`] rows (at most
//! [`CHUNK_BYTES`]), so a body of any size takes bounded memory. The first malformed row fails the whole import (400
//! `invalid_batch_row`, naming the line): a batch view is exact or it is nothing. Any
//! failure, including the client going away mid-body, aborts the import on every node,
//! and readers keep the previous boundary.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use speedlayer_core::{BatchBoundary, BatchValue, Key};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::lines::{Line, LineReader, MAX_LINE_BYTES};
use super::params::query_error;
use super::AppState;

/// Rows staged per round trip to the owners...
pub const CHUNK_ROWS: usize = 8192;
/// ...or fewer, once their lines hold this many bytes: what bounds the memory an import
/// holds (lines may be up to 1 MiB: large sets).
pub const CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// Parameters of `POST /v1/views/{view}/batch`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ImportParams {
    /// The batch view holds every event before this time (Unix seconds).
    pub covers_until: Option<u64>,
}

/// One row as the body spells it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    key: String,
    #[serde(default)]
    clustering: String,
    value: serde_json::Value,
}

/// `POST /v1/views/{view}/batch?covers_until=T`: imports a batch view and publishes it.
#[utoipa::path(post, path = "/v1/views/{view}/batch", tag = "batch", params(("view" = String, Path, description = "View name"), ImportParams),
    request_body(content = String, content_type = "application/x-ndjson", description = "Rows `{\"key\":...,\"clustering\":...,\"value\":...}`, one per line"),
    responses((status = 200, description = "Staged on every owner and published: the new boundary", body = Object), (status = 409, description = "Boundary not after the current one", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Password required (--requirepass)", body = ErrorBody)))]
pub async fn import(
    State(state): State<AppState>,
    Path(view): Path<String>,
    params: Result<Query<ImportParams>, QueryRejection>,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    let Query(params) = params.map_err(query_error)?;
    let covers_until = params.covers_until.ok_or_else(|| {
        ApiError::bad_request(
            "missing_covers_until",
            "covers_until=T (Unix seconds, on an epoch boundary of the view) is required",
        )
    })?;
    // Checks the view and the boundary before any node is involved (a 4xx even when a
    // node is down).
    let mut import = state.coordinator.begin_import(&view, covers_until).await?;
    let (boundary, value_type) = (import.boundary(), import.value_type());
    let mut reader = LineReader::new(body);
    let mut chunk = Vec::with_capacity(CHUNK_ROWS);
    let mut chunk_bytes = 0usize;
    let mut line_no = 0usize;
    while let Some(line) = reader.next_line().await? {
        line_no += 1;
        let text = match line {
            Line::Text(start, end) => reader.bytes(start, end),
            Line::TooLong => {
                return Err(bad_row(
                    line_no,
                    &format!("longer than {MAX_LINE_BYTES} bytes"),
                ))
            }
        };
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        chunk_bytes += text.len();
        chunk.push(parse_row(text, value_type, boundary).map_err(|e| bad_row(line_no, &e))?);
        if chunk.len() >= CHUNK_ROWS || chunk_bytes >= CHUNK_BYTES {
            import.stage(std::mem::take(&mut chunk)).await?;
            chunk_bytes = 0;
        }
    }
    if !chunk.is_empty() {
        import.stage(chunk).await?;
    }
    let report = import.finish().await?;
    Ok(Json(serde_json::json!({
        "view": view,
        "boundary": report.boundary.secs(),
        "rows": report.rows,
        "published": true,
        "published_on": report.published_on,
        "nodes": report.nodes,
        "catching_up": report.catching_up,
    })))
}

/// `GET /v1/views/{view}/batch`: the view's current boundary on this node, older
/// boundaries still readable, and imports staged here.
#[utoipa::path(get, path = "/v1/views/{view}/batch", tag = "batch", params(("view" = String, Path, description = "View name")),
    responses((status = 200, description = "Current boundary, retiring and staged imports", body = Object), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Password required (--requirepass)", body = ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    Path(view): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let record = state.coordinator.batch_status(&view)?;
    Ok(Json(serde_json::json!({
        "view": view,
        "boundary": record.published.secs(),
        "import": record.published_import,
        "retiring": record.retiring,
        "staged": record.staged,
    })))
}

/// One NDJSON line of an import body as a row of a view of `value_type` whose batch
/// covers until `boundary`; a message saying what is wrong otherwise. Total on arbitrary
/// bytes (property-tested in `tests/batch_body_props.rs`).
pub fn parse_row(
    text: &[u8],
    value_type: speedlayer_core::ValueType,
    boundary: BatchBoundary,
) -> Result<(Key, BatchValue), String> {
    let row: Row = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    let key =
        Key::new(row.key.into_bytes(), row.clustering.into_bytes()).map_err(|e| e.to_string())?;
    let value =
        BatchValue::from_json(value_type, &row.value, boundary).map_err(|e| e.to_string())?;
    Ok((key, value))
}

fn bad_row(line: usize, reason: &str) -> ApiError {
    ApiError::bad_request(
        "invalid_batch_row",
        format!("line {line}: {reason}; nothing was imported"),
    )
}

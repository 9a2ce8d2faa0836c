//! Writes and reads of view data: update, get, range.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use speedlayer_api::{ApplyKind, RangeQuery, ViewType, WriteOptions};
use speedlayer_core::{Key, Outcome, Reading, RowParts};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::params::{
    query_error, Consistency, DeleteParams, GetParams, QuorumMode, RangeParams, WriteParams,
};
use super::update_body::{parse_updates, UpdateBody};
use super::views::body_error;
use super::AppState;
use speedlayer_ingest::Mode;

/// Rows a range read returns when the caller gives no `limit`.
pub const DEFAULT_RANGE_LIMIT: usize = 1000;
/// Most rows one range read may return.
pub const MAX_RANGE_LIMIT: usize = 100_000;

/// `POST /v1/views/{view}/update`: one update object or a JSON list of them.
///
/// 200 with per-outcome counts once every update is durable. A malformed or invalid
/// update anywhere in the body is a 4xx and nothing is applied. A 422 means the request
/// was valid but some updates were refused by their key's state (e.g. the writer limit);
/// the others are applied and durable, and retrying with the same ids is safe.
#[utoipa::path(post, path = "/v1/views/{view}/update", tag = "data", params(("view" = String, Path, description = "View name"), WriteParams),
    request_body(content = Vec<UpdateBody>, description = "One update object, or a JSON array of them"),
    responses((status = 200, description = "Applied, duplicate, stale and late counts", body = Object), (status = 422, description = "Some updates refused (the rest applied)", body = Object),
        (status = 503, description = "Too few replicas answered: it may have been applied; retry with the same id", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Password required (--requirepass)", body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Path(view): Path<String>,
    params: Result<Query<WriteParams>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let Query(params) = params.map_err(query_error)?;
    let body = body.map_err(body_error)?;
    let updates = parse_updates(&body)?;
    if params.mode == Some(Mode::Async) {
        if params.consistency.is_some() || params.quorum.is_some() {
            return Err(ApiError::bad_request(
                "invalid_parameters",
                "mode=async applies queued updates at the node's default consistency; drop consistency and quorum",
            ));
        }
        let queued = state.ingest.enqueue_updates(&view, updates).await?;
        return Ok((
            StatusCode::OK,
            Json(serde_json::json!({ "queued": queued })),
        ));
    }
    let options = write_options(&state, params.consistency, params.quorum)?;
    let results = state
        .coordinator
        .apply(&view, updates, options, ApplyKind::Plain)
        .await?;
    let (mut applied, mut duplicate, mut stale, mut late) = (0u64, 0u64, 0u64, 0u64);
    let mut failed = Vec::new();
    for (index, result) in results.iter().enumerate() {
        match result {
            Ok(a) => match a.outcome {
                Outcome::Applied => applied += 1,
                Outcome::Duplicate => duplicate += 1,
                Outcome::Stale => stale += 1,
                Outcome::Late => late += 1,
            },
            Err(e) => failed.push(serde_json::json!({ "index": index, "error": e.to_string() })),
        }
    }
    let mut body = serde_json::json!({
        "applied": applied,
        "duplicate": duplicate,
        "stale": stale,
        "late": late,
    });
    if failed.is_empty() {
        return Ok((StatusCode::OK, Json(body)));
    }
    body["error"] = "updates_refused".into();
    body["detail"] = format!("{} update(s) refused by their key's state", failed.len()).into();
    body["failed"] = failed.into();
    Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(body)))
}

/// The options of a write: the ones asked for, else the node's defaults; `local` is
/// refused (it is for reads).
fn write_options(
    state: &AppState,
    consistency: Option<Consistency>,
    quorum: Option<QuorumMode>,
) -> ApiResult<WriteOptions> {
    if consistency == Some(Consistency::Local) {
        return Err(ApiError::bad_request(
            "invalid_consistency",
            "consistency=local is for reads; writes take one, quorum or all",
        ));
    }
    let defaults = state.coordinator.defaults();
    Ok(WriteOptions {
        consistency: consistency.unwrap_or(defaults.consistency),
        quorum: quorum.unwrap_or(defaults.quorum),
    })
}

/// `DELETE /v1/views/{view}/keys?key=..&clustering=..`: delete one row, observed-remove
/// (what the applying owner holds goes, on every replica; updates it had not seen
/// survive). `{"deleted": true}` when it existed. Rows of max, min and hll views are
/// refused (400 `unsupported`): drop their epochs instead.
#[utoipa::path(delete, path = "/v1/views/{view}/keys", tag = "data", params(("view" = String, Path, description = "View name"), DeleteParams),
    responses((status = 200, description = "Deleted on the replicas (observed-remove)", body = Object), (status = 503, description = "Too few replicas answered", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Password required (--requirepass)", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(view): Path<String>,
    params: Result<Query<DeleteParams>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Query(params) = params.map_err(query_error)?;
    let key = Key::new(params.key.into_bytes(), params.clustering.into_bytes())
        .map_err(|e| ApiError::bad_request("invalid_key", e.to_string()))?;
    let options = write_options(&state, params.consistency, params.quorum)?;
    let existed = state.coordinator.delete(&view, vec![key], options).await?;
    Ok(Json(serde_json::json!({
        "view": view,
        "deleted": existed.first().copied().unwrap_or(false),
    })))
}

/// `GET /v1/views/{view}/get?key=..&clustering=..`: the value of one row, `batch ⊕
/// realtime` at one batch boundary, which the reply names (`boundary`, Unix seconds, 0
/// before the first import), with each part and whether it is approximate.
#[utoipa::path(get, path = "/v1/views/{view}/get", tag = "data", params(("view" = String, Path, description = "View name"), GetParams),
    responses((status = 200, description = "The row: batch(T) ⊕ realtime since T, with T and whether it is approximate", body = Object), (status = 503, description = "Too few replicas answered", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Password required (--requirepass)", body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(view): Path<String>,
    params: Result<Query<GetParams>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Query(params) = params.map_err(query_error)?;
    let key = Key::new(params.key.into_bytes(), params.clustering.into_bytes())
        .map_err(|e| ApiError::bad_request("invalid_key", e.to_string()))?;
    let view_type = state.coordinator.view(&view)?.spec.value_type;
    let consistency = state.coordinator.read_consistency(params.consistency);
    let answers = state
        .coordinator
        .read(&view, vec![key], consistency)
        .await?;
    let parts = answers.rows.first().cloned().unwrap_or_default();
    let corrupt = |e: speedlayer_core::TypeMismatch| ApiError::from(speedlayer_api::Error::from(e));
    let (batch, realtime) = parts.split(view_type.typed()).map_err(corrupt)?;
    let reading = RowParts::join_split(batch.clone(), realtime.clone()).map_err(corrupt)?;
    let part = |r: Option<Reading>| {
        r.map(|r| serde_json::json!({ "value": r.to_json(), "approximate": r.is_approximate() }))
    };
    Ok(Json(serde_json::json!({
        "value": render(view_type, reading.as_ref()),
        "approximate": reading.as_ref().is_some_and(Reading::is_approximate),
        "boundary": answers.boundary.secs(),
        "parts": { "batch": part(batch), "realtime": part(realtime) },
    })))
}

/// `GET /v1/views/{view}/range?key=..&from=..&to=..&limit=..`: rows of one partition in
/// clustering order, and their merge.
#[utoipa::path(get, path = "/v1/views/{view}/range", tag = "data", params(("view" = String, Path, description = "View name"), RangeParams),
    responses((status = 200, description = "Rows of a clustering range with their total, T and sources", body = Object), (status = 503, description = "Too few replicas answered", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Password required (--requirepass)", body = ErrorBody)))]
pub async fn range(
    State(state): State<AppState>,
    Path(view): Path<String>,
    params: Result<Query<RangeParams>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Query(params) = params.map_err(query_error)?;
    let limit = params.limit.unwrap_or(DEFAULT_RANGE_LIMIT);
    if limit == 0 || limit > MAX_RANGE_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {MAX_RANGE_LIMIT}"),
        ));
    }
    // Validates the partition key the same way a write would.
    Key::new(params.key.clone().into_bytes(), Vec::new())
        .map_err(|e| ApiError::bad_request("invalid_key", e.to_string()))?;
    let view_type = state.coordinator.view(&view)?.spec.value_type;
    let consistency = state.coordinator.read_consistency(params.consistency);
    let rows = state
        .coordinator
        .range(
            RangeQuery {
                view,
                partition: params.key.into_bytes(),
                from: params.from.map(String::into_bytes),
                to: params.to.map(String::into_bytes),
                limit,
            },
            consistency,
        )
        .await?;
    let out: Vec<_> = rows
        .rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "clustering": String::from_utf8_lossy(&row.clustering),
                "value": row.value.to_json(),
                "approximate": row.value.is_approximate(),
                "source": match (row.from_batch, row.from_realtime) {
                    (true, true) => "batch+realtime",
                    (true, false) => "batch",
                    _ => "realtime",
                },
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "rows": out,
        "total": render(view_type, rows.total.as_ref()),
        "approximate": rows.total.as_ref().is_some_and(Reading::is_approximate),
        "boundary": rows.boundary.secs(),
        "truncated": rows.truncated,
    })))
}

/// JSON of a reading; a key nobody wrote reads as its type's empty value (0, [], null) in
/// a typed view, and as `null` in an `any` view, where it has no type yet.
fn render(view_type: ViewType, reading: Option<&Reading>) -> serde_json::Value {
    match (reading, view_type) {
        (Some(reading), _) => reading.to_json(),
        (None, ViewType::Typed(t)) => Reading::empty(t).to_json(),
        (None, ViewType::Any) => serde_json::Value::Null,
    }
}

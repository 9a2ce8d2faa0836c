//! View declaration, listing and epoch administration.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use speedlayer_api::{Declared, View, ViewSpec, ViewType};
use speedlayer_core::Epoch;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::AppState;

fn view_json(view: &View) -> serde_json::Value {
    let mut out = serde_json::json!({
        "name": view.name,
        "type": view.spec.value_type,
        "epoch_secs": view.spec.epoch_secs,
    });
    if let Some(mapping) = &view.spec.mapping {
        out["mapping"] = serde_json::to_value(mapping).unwrap_or_default();
    }
    out
}

/// Turns a body-reading failure (too large, unreadable) into our JSON error.
pub fn body_error(e: BytesRejection) -> ApiError {
    let class = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        "body_too_large"
    } else {
        "unreadable_body"
    };
    ApiError::new(e.status(), class, e.body_text())
}

/// `PUT /v1/views/{view}`: declare (201 when new, 200 when identical, 409 when different).
#[utoipa::path(put, path = "/v1/views/{view}", tag = "views", params(("view" = String, Path, description = "View name")),
    request_body = ViewSpec,
    responses((status = 201, description = "Declared", body = Object), (status = 200, description = "Already declared alike", body = Object),
        (status = 409, description = "Declared otherwise", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Password required (--requirepass)", body = ErrorBody)))]
pub async fn declare(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body.map_err(body_error)?;
    let spec: ViewSpec = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_declaration", e.to_string()))?;
    if spec.value_type == ViewType::Any {
        return Err(ApiError::bad_request(
            "invalid_declaration",
            "type 'any' is reserved for the Redis default view; declare one of counter, \
             gcounter, max, min, register, set, hll",
        ));
    }
    let (view, declared) = state.coordinator.declare_view(&name, spec).await?;
    let status = match declared {
        Declared::Created => StatusCode::CREATED,
        Declared::Unchanged => StatusCode::OK,
    };
    Ok((status, Json(view_json(&view))).into_response())
}

/// `GET /v1/views`: every view with its type.
#[utoipa::path(get, path = "/v1/views", tag = "views",
    responses((status = 200, description = "Every view with its declaration: `{\"views\": [...]}`", body = Object), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Password required (--requirepass)", body = ErrorBody)))]
pub async fn list(State(state): State<AppState>) -> Json<serde_json::Value> {
    let views: Vec<_> = state
        .coordinator
        .views()
        .iter()
        .map(|v| view_json(v))
        .collect();
    Json(serde_json::json!({ "views": views }))
}

/// `GET /v1/views/{view}`: one view's declaration, and its batch boundary (`boundary`,
/// Unix seconds; 0 before the first import).
#[utoipa::path(get, path = "/v1/views/{view}", tag = "views", params(("view" = String, Path, description = "View name")),
    responses((status = 200, description = "The view's declaration", body = Object), (status = 404, description = "Unknown view", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Password required (--requirepass)", body = ErrorBody)))]
pub async fn describe(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let view = state.coordinator.view(&name)?;
    let mut json = view_json(&view);
    // Where its batch view ends: an import must cover until a later time.
    json["boundary"] = state.coordinator.boundary(&name)?.secs().into();
    Ok(Json(json))
}

/// `GET /v1/views/{view}/epochs`: live epochs with approximate key counts and sizes.
#[utoipa::path(get, path = "/v1/views/{view}/epochs", tag = "views", params(("view" = String, Path, description = "View name")),
    responses((status = 200, description = "Live epochs with their start, keys and bytes on this node", body = Object), (status = 404, description = "Unknown view", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Password required (--requirepass)", body = ErrorBody)))]
pub async fn epochs(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    state.coordinator.view(&name)?;
    // Key counts come from the epoch keyspaces, which see pending states at a checkpoint.
    state.coordinator.checkpoint().await?;
    let epochs = state.coordinator.epochs(&name)?;
    Ok(Json(serde_json::json!({ "view": name, "epochs": epochs })))
}

/// `POST /v1/views/{view}/flush`: empty an `any` view (`redis`, the keys Redis clients
/// write) cluster-wide in O(1), as Redis `FLUSHALL` does.
#[utoipa::path(post, path = "/v1/views/{view}/flush", tag = "views", params(("view" = String, Path, description = "View name")),
    responses((status = 200, description = "Every key of the view dropped on every node (O(1))", body = Object), (status = 503, description = "Not every owner reachable", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Password required (--requirepass)", body = ErrorBody)))]
pub async fn flush(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    state.coordinator.flush_view(&name).await?;
    Ok(Json(serde_json::json!({ "view": name, "flushed": true })))
}

/// `DELETE /v1/views/{view}/epochs/{epoch}`: drop one epoch cluster-wide, for good (O(1)
/// in its keys): every node deletes it and refuses anything that would bring it back.
#[utoipa::path(delete, path = "/v1/views/{view}/epochs/{epoch}", tag = "views", params(("view" = String, Path, description = "View name"), ("epoch" = u64, Path, description = "Epoch number")),
    responses((status = 200, description = "Dropped on every node, for good", body = Object), (status = 503, description = "Not every owner reachable", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Password required (--requirepass)", body = ErrorBody)))]
pub async fn drop_epoch(
    State(state): State<AppState>,
    Path((name, epoch)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    let epoch: u64 = epoch.parse().map_err(|_| {
        ApiError::bad_request("invalid_epoch", format!("'{epoch}' is not an epoch index"))
    })?;
    let existed = state.coordinator.drop_epoch(&name, Epoch(epoch)).await?;
    if !existed {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_epoch",
            format!("view '{name}' has no live epoch {epoch}"),
        ));
    }
    Ok(Json(serde_json::json!({ "view": name, "dropped": epoch })))
}

//! The HTTP error body: `{"error": "...", "detail": "..."}` with a status that says whose
//! fault it is (4xx the caller's, 5xx the node's).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use speedlayer_cluster::ClusterError;
use speedlayer_store::StoreError;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Short machine-readable class, e.g. `unknown_view`.
    pub error: &'static str,
    /// Human-readable explanation.
    pub detail: String,
}

impl ApiError {
    /// An error of `status`, class `error`, explained by `detail`.
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            detail: detail.into(),
        }
    }

    /// 400: the request is malformed or names something invalid.
    pub fn bad_request(error: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, detail)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, class) = match &e {
            StoreError::UnknownView(_) => (StatusCode::NOT_FOUND, "unknown_view"),
            StoreError::InvalidViewName { .. } => (StatusCode::BAD_REQUEST, "invalid_view_name"),
            StoreError::Conflict { .. } => (StatusCode::CONFLICT, "view_conflict"),
            StoreError::InvalidDeclaration(_) => (StatusCode::BAD_REQUEST, "invalid_declaration"),
            StoreError::WrongOp { .. } => (StatusCode::BAD_REQUEST, "wrong_op"),
            StoreError::Key(_) => (StatusCode::BAD_REQUEST, "invalid_key"),
            StoreError::Timestamp(_) | StoreError::Epoch(_) => {
                (StatusCode::BAD_REQUEST, "invalid_timestamp")
            }
            StoreError::Boundary(_) => (StatusCode::BAD_REQUEST, "invalid_boundary"),
            StoreError::BoundaryNotAfter { .. } => (StatusCode::CONFLICT, "boundary_not_after"),
            StoreError::UntypedBatch(_) => (StatusCode::BAD_REQUEST, "untyped_view"),
            StoreError::BatchRow(_) => (StatusCode::BAD_REQUEST, "invalid_batch_row"),
            StoreError::BoundaryUnavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "boundary_unavailable")
            }
            StoreError::NoSuchImport { .. } => (StatusCode::CONFLICT, "import_superseded"),
            StoreError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            StoreError::Failed => (StatusCode::SERVICE_UNAVAILABLE, "storage_failed"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed in storage");
        }
        ApiError::new(status, class, e.to_string())
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Store(e) => e.into(),
            e @ ClusterError::Import { .. } => {
                tracing::warn!(error = %e, "batch import failed; aborted on every node");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "import_failed",
                    e.to_string(),
                )
            }
            e @ ClusterError::Unavailable { .. } => {
                tracing::warn!(error = %e, "request refused: replicas unreachable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                )
            }
            e => {
                tracing::error!(error = %e, "request failed in the cluster layer");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cluster_error",
                    e.to_string(),
                )
            }
        }
    }
}

impl From<speedlayer_ingest::IngestError> for ApiError {
    fn from(e: speedlayer_ingest::IngestError) -> Self {
        use speedlayer_ingest::IngestError;
        match e {
            IngestError::Cluster(e) => e.into(),
            IngestError::Store(e) => e.into(),
            e @ IngestError::QueueFull { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.error, "detail": self.detail });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // Back-pressure: a well-behaved client waits before retrying.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

/// Result of an HTTP handler.
pub type ApiResult<T> = Result<T, ApiError>;

//! The HTTP error body: `{"error": "...", "detail": "..."}` with a status that says whose
//! fault it is (4xx the caller's, 5xx the node's).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use speedlayer_api::Error;

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

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, class) = match &e {
            Error::UnknownView(_) => (StatusCode::NOT_FOUND, "unknown_view"),
            Error::InvalidViewName { .. } => (StatusCode::BAD_REQUEST, "invalid_view_name"),
            Error::Conflict { .. } => (StatusCode::CONFLICT, "view_conflict"),
            Error::InvalidDeclaration(_) => (StatusCode::BAD_REQUEST, "invalid_declaration"),
            Error::WrongOp { .. } => (StatusCode::BAD_REQUEST, "wrong_op"),
            Error::Key(_) => (StatusCode::BAD_REQUEST, "invalid_key"),
            Error::Timestamp(_) | Error::Epoch(_) => (StatusCode::BAD_REQUEST, "invalid_timestamp"),
            Error::Boundary(_) => (StatusCode::BAD_REQUEST, "invalid_boundary"),
            Error::BoundaryNotAfter { .. } => (StatusCode::CONFLICT, "boundary_not_after"),
            Error::UntypedBatch(_) => (StatusCode::BAD_REQUEST, "untyped_view"),
            Error::BatchRow(_) => (StatusCode::BAD_REQUEST, "invalid_batch_row"),
            Error::Unsupported(_) => (StatusCode::BAD_REQUEST, "unsupported"),
            Error::ValueTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "value_too_large"),
            Error::UnknownMember(_) => (StatusCode::NOT_FOUND, "unknown_member"),
            Error::Membership(_) => (StatusCode::CONFLICT, "membership"),
            Error::BoundaryUnavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "boundary_unavailable")
            }
            Error::NoSuchImport { .. } => (StatusCode::CONFLICT, "import_superseded"),
            Error::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            Error::StorageFailed => (StatusCode::SERVICE_UNAVAILABLE, "storage_failed"),
            Error::ClockSkew { .. } => (StatusCode::SERVICE_UNAVAILABLE, "clock_skew"),
            Error::Unavailable { .. } => {
                tracing::warn!(error = %e, "request refused: replicas unreachable");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            Error::Import { .. } => {
                tracing::warn!(error = %e, "batch import failed; aborted on every node");
                (StatusCode::SERVICE_UNAVAILABLE, "import_failed")
            }
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
        };
        if status.is_server_error()
            && !matches!(
                e,
                Error::Unavailable { .. } | Error::Import { .. } | Error::ClockSkew { .. }
            )
        {
            tracing::error!(error = %e, "request failed in the node");
        }
        ApiError::new(status, class, e.to_string())
    }
}

impl From<speedlayer_ingest::IngestError> for ApiError {
    fn from(e: speedlayer_ingest::IngestError) -> Self {
        use speedlayer_ingest::IngestError;
        match e {
            IngestError::Request(e) => e.into(),
            e @ IngestError::QueueFull { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", e.to_string())
            }
        }
    }
}

/// The body of every error answer (4xx and 5xx).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Short machine-readable class, e.g. `unknown_view`.
    pub error: &'static str,
    /// Human-readable explanation.
    pub detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.error,
            detail: self.detail,
        };
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

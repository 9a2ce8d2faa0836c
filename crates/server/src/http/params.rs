//! Query parameters shared by the read and write endpoints, validated into domain values.

use serde::Deserialize;

pub use speedlayer_api::{Consistency, QuorumMode};

use super::error::ApiError;

/// Parameters of `POST /v1/views/{view}/update`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WriteParams {
    /// Requested W: `one`, `quorum` (default) or `all`.
    #[param(value_type = Option<String>)]
    pub consistency: Option<Consistency>,
    /// `sloppy` (default) or `strict` quorum.
    #[param(value_type = Option<String>)]
    pub quorum: Option<QuorumMode>,
    /// Sync (after the updates are durable at the requested consistency) or async
    /// (after they are durable in this node's queue).
    #[param(value_type = Option<String>)]
    pub mode: Option<speedlayer_ingest::Mode>,
}

/// Parameters of `GET /v1/views/{view}/get`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GetParams {
    /// Partition key.
    pub key: String,
    /// Clustering key (empty when absent).
    #[serde(default)]
    pub clustering: String,
    /// Requested R: `one`, `quorum` (default) or `all`.
    #[param(value_type = Option<String>)]
    pub consistency: Option<Consistency>,
}

/// Parameters of `DELETE /v1/views/{view}/keys`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    /// Partition key.
    pub key: String,
    /// Clustering key (empty when absent).
    #[serde(default)]
    pub clustering: String,
    /// Requested W: `one`, `quorum` (default) or `all`.
    #[param(value_type = Option<String>)]
    pub consistency: Option<Consistency>,
    /// `sloppy` (default) or `strict` quorum.
    #[param(value_type = Option<String>)]
    pub quorum: Option<QuorumMode>,
}

/// Parameters of `GET /v1/views/{view}/range`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RangeParams {
    /// Partition key.
    pub key: String,
    /// First clustering key (inclusive); open when absent.
    pub from: Option<String>,
    /// Last clustering key (inclusive); open when absent.
    pub to: Option<String>,
    /// Most rows returned.
    pub limit: Option<usize>,
    /// Requested R: `one`, `quorum` (default) or `all`.
    #[param(value_type = Option<String>)]
    pub consistency: Option<Consistency>,
}

/// Turns axum's query rejection into our JSON 400.
pub fn query_error(e: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::bad_request("invalid_query", e.body_text())
}

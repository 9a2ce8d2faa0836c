//! Why a cluster operation failed.

use speedlayer_store::StoreError;

/// Errors of the cluster layer. The front ends map them: [`ClusterError::Store`] as the
/// store error it wraps, [`ClusterError::Unavailable`] as HTTP 503 / RESP `-UNAVAILABLE`.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The local store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Fewer replicas than the consistency level needs could be reached.
    #[error("needed {needed} of {of} replicas, reached {reached}; unreachable: {}", unreachable.join(", "))]
    Unavailable {
        /// R or W.
        needed: usize,
        /// N.
        of: usize,
        /// Replicas that answered.
        reached: usize,
        /// Cluster addresses of the owners that did not.
        unreachable: Vec<String>,
    },
    /// A node failed a step of a batch import; the import is aborted everywhere.
    #[error("batch import failed on {node}: {reason}")]
    Import {
        /// The node's cluster address.
        node: String,
        /// What it answered.
        reason: String,
    },
    /// The cluster listener could not start.
    #[error("cluster listener on {addr}: {source}")]
    Bind {
        /// Address.
        addr: std::net::SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
}

impl ClusterError {
    /// True for the caller's mistakes (4xx), as opposed to the cluster's state (5xx).
    pub fn is_client_error(&self) -> bool {
        match self {
            ClusterError::Store(e) => e.is_client_error(),
            _ => false,
        }
    }
}

/// What the coordinator answers through the door: store errors as the store converts
/// them, the cluster's own as their [`speedlayer_api::Error`] twins.
impl From<ClusterError> for speedlayer_api::Error {
    fn from(e: ClusterError) -> Self {
        use speedlayer_api::Error as E;
        match e {
            ClusterError::Store(e) => e.into(),
            ClusterError::Unavailable {
                needed,
                of,
                reached,
                unreachable,
            } => E::Unavailable {
                needed,
                of,
                reached,
                unreachable,
            },
            ClusterError::Import { node, reason } => E::Import { node, reason },
            e @ ClusterError::Bind { .. } => E::Internal(e.to_string()),
        }
    }
}

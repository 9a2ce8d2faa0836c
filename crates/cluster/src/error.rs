//! Why a cluster operation failed.

use speedlayer_store::StoreError;

/// Errors of the cluster layer; the door converts them to [`speedlayer_api::Error`].
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The local store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// What the door answers as is: too few replicas reachable
    /// ([`speedlayer_api::Error::Unavailable`]), a failed import step
    /// ([`speedlayer_api::Error::Import`]).
    #[error(transparent)]
    Request(#[from] speedlayer_api::Error),
    /// A peer failed to answer, or answered what it should not have.
    #[error(transparent)]
    Peer(#[from] crate::peer::RpcError),
    /// A peer's message did not decode.
    #[error("malformed message from a peer: {0}")]
    Malformed(#[from] crate::wire::WireError),
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
            ClusterError::Request(e) => e.is_client_error(),
            ClusterError::Peer(_) | ClusterError::Malformed(_) | ClusterError::Bind { .. } => false,
        }
    }
}

/// What the coordinator answers through the door: store errors as the store converts
/// them, the door's own errors as they are.
impl From<ClusterError> for speedlayer_api::Error {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Store(e) => e.into(),
            ClusterError::Request(e) => e,
            e
            @ (ClusterError::Peer(_) | ClusterError::Malformed(_) | ClusterError::Bind { .. }) => {
                speedlayer_api::Error::Internal(e.to_string())
            }
        }
    }
}

//! Errors of the storage layer.

use speedlayer_core::{DecodeError, ValueType};

/// Why a storage call failed. Variants split into the caller's mistakes (the front ends map
/// them to 4xx / Redis `ERR`) and the node's own failures (5xx).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// What the caller got wrong, and states it may wait out (a boundary not readable
    /// here): the coordinator's own error type, so the front ends see it as is.
    #[error(transparent)]
    Request(#[from] speedlayer_api::Error),
    /// Stored bytes that do not decode: corruption, or a file from a newer version.
    #[error("corrupt stored value: {0}")]
    Corrupt(#[from] DecodeError),
    /// A stored state of another type than its view: corruption.
    #[error("stored value of type {found} in a view of type {expected}")]
    StoredTypeMismatch {
        /// The view's type.
        expected: ValueType,
        /// The type found on disk.
        found: ValueType,
    },
    /// The LSM engine failed.
    #[error("storage engine: {0}")]
    Engine(#[from] fjall::Error),
    /// A filesystem error outside the engine.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The journal could not be made durable earlier; the node refuses writes rather than
    /// acknowledge data it may not hold (fsync failures are not retried: see PostgreSQL's
    /// fsyncgate).
    #[error("{}", speedlayer_api::Error::StorageFailed)]
    Failed,
    /// The store is shutting down.
    #[error("storage is shutting down")]
    ShuttingDown,
}

impl StoreError {
    /// True when the caller sent something wrong (as opposed to the node failing).
    pub fn is_client_error(&self) -> bool {
        matches!(self, StoreError::Request(e) if e.is_client_error())
    }
}

/// The caller's mistakes the value layer finds (a key, an epoch, a boundary) are the
/// coordinator's errors as they are.
macro_rules! from_request {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Request(e.into())
            }
        }
    )*};
}
from_request!(
    speedlayer_core::KeyError,
    speedlayer_core::EpochError,
    speedlayer_core::BoundaryError
);

/// Parts of one key that disagree on its type can only come from corruption.
impl From<speedlayer_core::TypeMismatch> for StoreError {
    fn from(e: speedlayer_core::TypeMismatch) -> Self {
        StoreError::StoredTypeMismatch {
            expected: e.left,
            found: e.right,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The store's errors as the coordinator answers them: the caller's mistakes as they are,
/// the engine's failures as [`speedlayer_api::Error::Internal`] (their detail is logged
/// and shown, their type stays behind the door).
impl From<StoreError> for speedlayer_api::Error {
    fn from(e: StoreError) -> Self {
        use speedlayer_api::Error as E;
        match e {
            StoreError::Request(e) => e,
            StoreError::Failed => E::StorageFailed,
            StoreError::ShuttingDown => E::ShuttingDown,
            e @ (StoreError::Corrupt(_)
            | StoreError::StoredTypeMismatch { .. }
            | StoreError::Engine(_)
            | StoreError::Io(_)) => E::Internal(e.to_string()),
        }
    }
}

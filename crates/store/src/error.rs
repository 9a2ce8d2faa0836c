//! Errors of the storage layer.

use speedlayer_core::{BatchBoundary, BoundaryError, DecodeError, EpochError, KeyError, ValueType};

/// Why a storage call failed. Variants split into the caller's mistakes (the front ends map
/// them to 4xx / Redis `ERR`) and the node's own failures (5xx).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A request the shared checks refused (see [`speedlayer_api::validate`]).
    #[error(transparent)]
    Request(#[from] speedlayer_api::Error),
    /// No view of that name is declared.
    #[error("view '{0}' is not declared")]
    UnknownView(String),
    /// A view name outside the allowed alphabet or length.
    #[error("invalid view name '{name}': {reason}")]
    InvalidViewName {
        /// The refused name.
        name: String,
        /// What rule it breaks.
        reason: &'static str,
    },
    /// Re-declaring a view with another type or epoch length: the data already stored
    /// would not mean what the new declaration says.
    #[error("view '{name}' already exists as {existing}, cannot redeclare it as {requested}")]
    Conflict {
        /// The view.
        name: String,
        /// Its current declaration, rendered for the message.
        existing: String,
        /// The refused declaration, rendered for the message.
        requested: String,
    },
    /// A declaration value out of range (e.g. `epoch_secs` of 0).
    #[error("invalid view declaration: {0}")]
    InvalidDeclaration(String),
    /// The operation does not apply to the view's type.
    #[error("operation '{op}' does not apply to view '{view}' of type {value_type}")]
    WrongOp {
        /// The view.
        view: String,
        /// The refused operation.
        op: &'static str,
        /// The view's type.
        value_type: ValueType,
    },
    /// A key that cannot be stored.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A timestamp outside the accepted range.
    #[error("invalid timestamp: {0}")]
    Timestamp(String),
    /// An epoch computation failed (negative timestamp).
    #[error(transparent)]
    Epoch(#[from] EpochError),
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
    #[error("storage is failed after a journal sync error; restart the node")]
    Failed,
    /// The store is shutting down.
    #[error("storage is shutting down")]
    ShuttingDown,
    /// A batch boundary that is not on an epoch boundary of its view.
    #[error(transparent)]
    Boundary(#[from] BoundaryError),
    /// A batch import whose boundary does not move the view's boundary forward.
    #[error("view '{view}' already has a batch view covering until {current}; a new import must cover until a later time than that (asked {requested})")]
    BoundaryNotAfter {
        /// The view.
        view: String,
        /// The refused boundary.
        requested: BatchBoundary,
        /// The view's current boundary.
        current: BatchBoundary,
    },
    /// A batch import into a view whose keys have no fixed type.
    #[error("view '{0}' has no fixed type (an 'any' view); batch views need a typed view")]
    UntypedBatch(String),
    /// A batch row that does not fit its view.
    #[error("invalid batch row: {0}")]
    BatchRow(String),
    /// A read named a boundary this node cannot answer for (not staged here, or retired
    /// after its grace period): the caller should read at `current`.
    #[error(
        "view '{view}': batch boundary {asked} is not readable on this node (current: {current})"
    )]
    BoundaryUnavailable {
        /// The view.
        view: String,
        /// The boundary asked for.
        asked: BatchBoundary,
        /// This node's current boundary.
        current: BatchBoundary,
    },
    /// Rows or a publication for an import this node is not staging (it was replaced by
    /// another import of the view, aborted, or collected).
    #[error(
        "view '{view}': no import {import} is being staged for boundary {boundary} on this node"
    )]
    NoSuchImport {
        /// The view.
        view: String,
        /// The boundary.
        boundary: BatchBoundary,
        /// The import id.
        import: u64,
    },
}

impl StoreError {
    /// True when the caller sent something wrong (as opposed to the node failing).
    pub fn is_client_error(&self) -> bool {
        matches!(self, StoreError::Request(e) if e.is_client_error())
            || matches!(
                self,
                StoreError::UnknownView(_)
                    | StoreError::InvalidViewName { .. }
                    | StoreError::Conflict { .. }
                    | StoreError::InvalidDeclaration(_)
                    | StoreError::WrongOp { .. }
                    | StoreError::Key(_)
                    | StoreError::Timestamp(_)
                    | StoreError::Epoch(_)
                    | StoreError::Boundary(_)
                    | StoreError::BoundaryNotAfter { .. }
                    | StoreError::UntypedBatch(_)
                    | StoreError::BatchRow(_)
            )
    }
}

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

/// The store's errors as the coordinator answers them: the caller's mistakes one to one,
/// the engine's failures as [`speedlayer_api::Error::Internal`] (their detail is logged
/// and shown, their type stays behind the door).
impl From<StoreError> for speedlayer_api::Error {
    fn from(e: StoreError) -> Self {
        use speedlayer_api::Error as E;
        match e {
            StoreError::Request(e) => e,
            StoreError::UnknownView(view) => E::UnknownView(view),
            StoreError::InvalidViewName { name, reason } => E::InvalidViewName { name, reason },
            StoreError::Conflict {
                name,
                existing,
                requested,
            } => E::Conflict {
                name,
                existing,
                requested,
            },
            StoreError::InvalidDeclaration(reason) => E::InvalidDeclaration(reason),
            StoreError::WrongOp {
                view,
                op,
                value_type,
            } => E::WrongOp {
                view,
                op,
                value_type,
            },
            StoreError::Key(e) => E::Key(e),
            StoreError::Timestamp(reason) => E::Timestamp(reason),
            StoreError::Epoch(e) => E::Epoch(e),
            StoreError::Boundary(e) => E::Boundary(e),
            StoreError::BoundaryNotAfter {
                view,
                requested,
                current,
            } => E::BoundaryNotAfter {
                view,
                requested,
                current,
            },
            StoreError::UntypedBatch(view) => E::UntypedBatch(view),
            StoreError::BatchRow(reason) => E::BatchRow(reason),
            StoreError::BoundaryUnavailable {
                view,
                asked,
                current,
            } => E::BoundaryUnavailable {
                view,
                asked,
                current,
            },
            StoreError::NoSuchImport {
                view,
                boundary,
                import,
            } => E::NoSuchImport {
                view,
                boundary,
                import,
            },
            StoreError::Failed => E::StorageFailed,
            StoreError::ShuttingDown => E::ShuttingDown,
            e @ (StoreError::Corrupt(_)
            | StoreError::StoredTypeMismatch { .. }
            | StoreError::Engine(_)
            | StoreError::Io(_)) => E::Internal(e.to_string()),
        }
    }
}

//! What the coordinator answers when a request fails: the one error type every front end
//! renders (HTTP status and JSON body, Redis error reply).
//!
//! Variants split into the caller's mistakes ([`Error::is_client_error`]: 4xx, Redis
//! `ERR`), states of the cluster the caller may wait out (unavailable replicas, a
//! boundary not yet readable: 503), and the node's own failures (5xx). The layers below
//! keep richer errors of their own (the store's engine errors, the cluster's RPC errors)
//! and convert at the door, so a front end never needs to know what storage engine or
//! transport a node runs.

use speedlayer_core::{BatchBoundary, BoundaryError, EpochError, KeyError, ValueType};

/// Why a request through the coordinator failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    /// A declaration value out of range (e.g. `epoch_secs` of 0, a mapping that does not
    /// compile).
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
    /// Fewer replicas than the consistency level needs could be reached. Some may have
    /// applied the write: retry with the same ids to count each update exactly once.
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
    /// A register value or a set or HLL member longer than the node's
    /// `--max-value-bytes`: values are kept in memory by their owners, so one huge value
    /// would hold its size for as long as the key lives.
    #[error("a value is {len} bytes; the limit is {limit} bytes (--max-value-bytes)")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The request does not apply to what it names (e.g. flushing a view of time epochs).
    #[error("{0}")]
    Unsupported(String),
    /// The node's journal could not be made durable earlier; it refuses writes rather
    /// than acknowledge data it may not hold, until it restarts (`serve` restarts itself
    /// once its data directory accepts writes again).
    #[error("storage is failed after a journal sync error (disk full or I/O error); the node restarts itself once its data directory accepts writes again")]
    StorageFailed,
    /// This node's clock is off from most of its peers' by more than the cluster's bound:
    /// it refuses to coordinate writes (their stamps and epochs would come from a wrong
    /// clock) until its clock is back within the bound. Other nodes take the write.
    #[error("this node's clock is {offset_ms} ms off from its peers' (bound {bound_ms} ms); it coordinates no writes until its clock is fixed: write through another node")]
    ClockSkew {
        /// This node's clock minus its peers' (the median), in ms.
        offset_ms: i64,
        /// The bound, in ms.
        bound_ms: u64,
    },
    /// A membership change names a node this one has never heard of.
    #[error("no member {0} is known to this node")]
    UnknownMember(String),
    /// A membership change that does not apply now (e.g. leaving a node that is not
    /// up, removing one that is).
    #[error("{0}")]
    Membership(String),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The node failed (engine, disk, corrupt data): not the caller's fault.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// True when the caller sent something wrong (as opposed to the node or the cluster
    /// failing): retrying the same request cannot succeed.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Error::UnknownView(_)
                | Error::InvalidViewName { .. }
                | Error::Conflict { .. }
                | Error::InvalidDeclaration(_)
                | Error::WrongOp { .. }
                | Error::Key(_)
                | Error::Timestamp(_)
                | Error::Epoch(_)
                | Error::Boundary(_)
                | Error::BoundaryNotAfter { .. }
                | Error::UntypedBatch(_)
                | Error::BatchRow(_)
                | Error::Unsupported(_)
                | Error::ValueTooLarge { .. }
                | Error::UnknownMember(_)
                | Error::Membership(_)
        )
    }
}

/// Parts of one key that disagree on its type can only come from corruption.
impl From<speedlayer_core::TypeMismatch> for Error {
    fn from(e: speedlayer_core::TypeMismatch) -> Self {
        Error::Internal(format!(
            "stored value of type {} in a view of type {}",
            e.right, e.left
        ))
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

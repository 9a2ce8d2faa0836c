//! [`Coordinator`]: the one door every front end, source and admin tool goes through.
//!
//! A front end (HTTP, RESP, log sources, ingest) holds an `Arc<dyn Coordinator>` and
//! nothing else of the node: it cannot name the store, so it cannot write, read, delete or
//! drop anything without the coordinator choosing replicas, consistency and repair. The
//! composition root (`speedlayer-node`) is the only place that sees both sides.

use std::sync::Arc;

use async_trait::async_trait;
use speedlayer_core::{
    Applied, BatchBoundary, BatchValue, Epoch, Key, OpError, Reading, ValueType,
};

use crate::answer::{
    BatchStatus, ClusterStatus, EpochInfo, ImportReport, KeyAnswers, KeyListing, RangeRows,
    StorageStats,
};
use crate::consistency::{Consistency, WriteOptions};
use crate::error::Error;
use crate::queue::EventLog;
use crate::update::{ApplyKind, Update};
use crate::view::{Declared, View, ViewSpec};

/// One result per update, in order: what applying it did, or why its key's state
/// refused it (the request as a whole succeeded).
pub type UpdateResults = Vec<Result<Applied, OpError>>;

/// A range read: rows of one partition whose clustering key is in `from..=to` (either
/// bound open when `None`), at most `limit` of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeQuery {
    /// The view.
    pub view: String,
    /// The partition key.
    pub partition: Vec<u8>,
    /// Lowest clustering key, inclusive.
    pub from: Option<Vec<u8>>,
    /// Highest clustering key, inclusive.
    pub to: Option<Vec<u8>>,
    /// Most rows returned.
    pub limit: usize,
}

/// The node's coordinator: routes every request to the replicas of its keys at the
/// consistency asked for, and every admin operation to every node that must see it.
///
/// Invariant: whatever a caller does through this trait holds cluster-wide (or fails
/// with an [`Error`] saying why); there is no per-node shortcut.
#[async_trait]
pub trait Coordinator: Send + Sync {
    /// This node's id (its slot in anonymous counter updates; shown in status).
    fn node_id(&self) -> &str;

    /// Whether this node's storage has failed (a journal sync error, e.g. a full disk):
    /// it refuses writes until it restarts. `/health` reports it.
    fn storage_failed(&self) -> bool;

    /// Consistency and quorum mode of requests that do not choose.
    fn defaults(&self) -> WriteOptions;

    /// The consistency a read asked for, or the node's default.
    fn read_consistency(&self, asked: Option<Consistency>) -> Consistency {
        asked.unwrap_or(self.defaults().consistency)
    }

    /// Every declared view, sorted by name: a shared snapshot, replaced (a new `Arc`)
    /// whenever a view is declared, so a caller can cache what it derives from it.
    fn views(&self) -> Arc<Vec<Arc<View>>>;

    /// The view named `name`.
    fn view(&self, name: &str) -> Result<Arc<View>, Error>;

    /// Declares a view on every node (idempotent; a different spec for an existing view
    /// is [`Error::Conflict`]). Nodes that are down learn it when they are back.
    async fn declare_view(
        &self,
        name: &str,
        spec: ViewSpec,
    ) -> Result<(Arc<View>, Declared), Error>;

    /// The batch boundary reads of `view` coordinated here use.
    fn boundary(&self, view: &str) -> Result<BatchBoundary, Error>;

    /// What this node knows of `view`'s batch views.
    fn batch_status(&self, view: &str) -> Result<BatchStatus, Error>;

    /// The live epochs of `view` on this node, with key counts as of the last
    /// [`Coordinator::checkpoint`].
    fn epochs(&self, view: &str) -> Result<Vec<EpochInfo>, Error>;

    /// Writes this node's pending states to its epoch tables, so key counts and disk
    /// sizes are current (everything acknowledged is durable already, in the journal).
    async fn checkpoint(&self) -> Result<(), Error>;

    /// Counters of this node's storage (Redis `INFO stats`).
    fn storage_stats(&self) -> StorageStats;

    /// Drops epoch `epoch` of `view` cluster-wide: every replica deletes it and refuses
    /// anything that would bring it back. False when no node held the epoch.
    async fn drop_epoch(&self, view: &str, epoch: Epoch) -> Result<bool, Error>;

    /// Empties an `any` view (the Redis keyspace) cluster-wide in O(1): drops its current
    /// generation (see [`Coordinator::drop_epoch`]); later writes start the next one.
    /// Writes concurrent with the flush may be removed by it. A view of time epochs is
    /// refused ([`Error::Unsupported`]): drop its epochs instead.
    async fn flush_view(&self, view: &str) -> Result<(), Error>;

    /// Membership, health and ring as this node sees them.
    fn status(&self) -> ClusterStatus;

    /// Decommissions this node: it hands its partitions to their next owners, then
    /// leaves the ring. Returns once the move has begun ([`ClusterStatus`] shows it).
    async fn leave(&self) -> Result<(), Error>;

    /// Takes the dead node at cluster address `addr` out of the ring; its partitions are
    /// rebuilt from the surviving replicas. Refused for a node that is up.
    async fn remove_node(&self, addr: &str) -> Result<(), Error>;

    /// Applies `updates` to `view` at `options`. With [`ApplyKind::Report`] results carry
    /// Redis effects; with [`ApplyKind::Aggregate`] owners pre-aggregate per key. On
    /// [`Error::Unavailable`] some updates may have been applied on fewer than W nodes:
    /// retry with the same ids to count each exactly once.
    async fn apply(
        &self,
        view: &str,
        updates: Vec<Update>,
        options: WriteOptions,
        kind: ApplyKind,
    ) -> Result<UpdateResults, Error>;

    /// Deletes `keys` of `view` (Redis `DEL`), observed-remove: what the applying replica
    /// holds is gone on every replica and never comes back; updates it had not seen
    /// survive. Per key, whether it existed there. Keys of max, min and hll views are
    /// refused ([`Error::Unsupported`]).
    async fn delete(
        &self,
        view: &str,
        keys: Vec<Key>,
        options: WriteOptions,
    ) -> Result<Vec<bool>, Error>;

    /// The parts of `keys` in `view` at `consistency`, all at one batch boundary.
    async fn read(
        &self,
        view: &str,
        keys: Vec<Key>,
        consistency: Consistency,
    ) -> Result<KeyAnswers, Error>;

    /// [`Coordinator::read`] with set states restricted to `members` (other types whole):
    /// what `SISMEMBER` needs, at a cost that does not grow with the set. Replicas answer
    /// their restrictions and the coordinator joins them, which equals the restriction of
    /// the join (see `OrSet::restricted_to`).
    async fn read_members(
        &self,
        view: &str,
        keys: Vec<Key>,
        members: Vec<Vec<u8>>,
        consistency: Consistency,
    ) -> Result<KeyAnswers, Error>;

    /// The member count of each of `keys` in `view` at `consistency`, in order (0 for a
    /// key no replica holds): `SCARD`. Answered from the owners' set summaries (count and
    /// state digest, O(1) each) when they agree, from the joined members otherwise.
    async fn set_cardinality(
        &self,
        view: &str,
        keys: Vec<Key>,
        consistency: Consistency,
    ) -> Result<Vec<speedlayer_core::Cardinality>, Error>;

    /// The values of `keys` in `view` at `consistency`, in order (`None`: no replica holds
    /// the key), each `batch ⊕ realtime` at one batch boundary.
    async fn get_many(
        &self,
        view: &str,
        keys: Vec<Key>,
        consistency: Consistency,
    ) -> Result<Vec<Option<Reading>>, Error> {
        let value_type = self.view(view)?.spec.value_type.typed();
        readings(value_type, self.read(view, keys, consistency).await?)
    }

    /// [`Coordinator::get_many`] read through [`Coordinator::read_members`]: a set key's
    /// reading holds only `members` (what `SISMEMBER` answers from).
    async fn get_many_members(
        &self,
        view: &str,
        keys: Vec<Key>,
        members: Vec<Vec<u8>>,
        consistency: Consistency,
    ) -> Result<Vec<Option<Reading>>, Error> {
        let value_type = self.view(view)?.spec.value_type.typed();
        let answers = self.read_members(view, keys, members, consistency).await?;
        readings(value_type, answers)
    }

    /// Rows of one partition at `consistency`, combined, at one batch boundary.
    async fn range(&self, query: RangeQuery, consistency: Consistency) -> Result<RangeRows, Error>;

    /// The existing keys of `view` from `cursor` on (a placement hash; `0` starts a
    /// listing), about `count` of them (never splitting one partition key's rows), in
    /// placement order: `SCAN`. Every key that exists for the whole of a listing is in
    /// one of its pages (each partition read from one live owner); keys written or
    /// deleted meanwhile may or may not be.
    async fn scan_keys(&self, view: &str, cursor: u64, count: usize) -> Result<KeyListing, Error>;

    /// Starts importing a batch view of `view` covering every event before
    /// `covers_until` (Unix seconds) on every node that is up.
    async fn begin_import(
        &self,
        view: &str,
        covers_until: u64,
    ) -> Result<Box<dyn BatchImport>, Error>;

    /// The node's durable queue of async events.
    fn event_log(&self) -> Arc<dyn EventLog>;
}

/// A batch import in progress. Dropped without [`BatchImport::finish`], it is aborted on
/// every participant.
#[async_trait]
pub trait BatchImport: Send {
    /// The boundary this import publishes.
    fn boundary(&self) -> BatchBoundary;
    /// The view's value type (rows are parsed as it).
    fn value_type(&self) -> ValueType;
    /// Stages rows on every owner of their partitions.
    async fn stage(&mut self, rows: Vec<(Key, BatchValue)>) -> Result<(), Error>;
    /// Finishes staging everywhere and publishes the new boundary.
    async fn finish(self: Box<Self>) -> Result<ImportReport, Error>;
}

/// Each row's parts combined into its reading (`None`: no part holds the key).
fn readings(
    value_type: Option<speedlayer_core::ValueType>,
    answers: KeyAnswers,
) -> Result<Vec<Option<Reading>>, Error> {
    answers
        .rows
        .iter()
        .map(|parts| parts.reading(value_type).map_err(Error::from))
        .collect()
}

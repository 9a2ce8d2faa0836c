//! Batch imports across the cluster: stage on every node, then publish.
//!
//! The coordinator that receives an import drives it: **begin** on every node, **rows**
//! to each row's owners (its partition's preference list), **finish** on every node (all
//! rows fsynced), then **publish** on every node. Publication starts only once every node
//! has finished staging, so whichever node a later read names the new boundary to, the
//! owners it asks can read at it (a staged boundary is readable before its node hears of
//! the publication). A node that misses the publication learns it from catalog gossip.
//!
//! An import stages on the nodes that are up when it begins (its *participants*), and
//! needs a quorum of every partition's owners among them, so reads at the new boundary
//! can reach R = quorum owners that hold it. A node that was down learns the publication
//! from gossip when it is back and copies the rows of its partitions from the others
//! before it publishes too ([`crate::catch_up`]); until then it answers reads at the new
//! boundary with "not staged" and coordinators use the other owners. When a participant
//! fails a step, the import is aborted on every participant and nothing readers see
//! changes; retry it.

use speedlayer_api::ImportReport;
use speedlayer_core::{BatchBoundary, BatchValue, Key, ValueType};
use speedlayer_store::{Store, StoreError};

use crate::error::ClusterError;
use crate::node::Cluster;
use crate::wire::{self, ImportStep, Request, Response};

/// Most row bytes sent to a peer in one request: well under the internode frame limit
/// ([`crate::wire::MAX_FRAME`]), and small enough to be staged within the RPC timeout.
const ROWS_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// An import in progress, driven by this node. Dropped without [`Import::finish`], it is
/// aborted on every participant (in the background).
pub struct Import {
    cluster: Cluster,
    view: String,
    boundary: BatchBoundary,
    value_type: ValueType,
    id: u64,
    rows: u64,
    /// The nodes up when the import began: every step runs on them, rows go to the
    /// participating owners of their partition.
    participants: Vec<usize>,
    done: bool,
}

impl Cluster {
    /// Starts importing a batch view of `view` covering every event before
    /// `covers_until` (Unix seconds): checks the boundary (aligned to the view's epochs,
    /// later than its current one; [`StoreError`]s otherwise) and begins staging on every
    /// node that is up; [`ClusterError::Request(speedlayer_api::Error::Unavailable)`] when a partition has fewer than a
    /// quorum of its owners up.
    pub async fn begin_import(
        &self,
        view: &str,
        covers_until: u64,
    ) -> Result<Import, ClusterError> {
        let check = self.inner.store.check_import(view, covers_until)?;
        let id = import_id(&self.inner.store);
        let inner = &self.inner;
        let participants: Vec<usize> = inner
            .data_members()
            .into_iter()
            .filter(|&m| inner.members.is_up(m))
            .collect();
        // Every partition needs a quorum of its owners among the participants.
        let ring = inner.ring();
        let n = ring.replicas();
        let w = speedlayer_api::Consistency::Quorum.required(n);
        for partition in 0..ring.partitions() {
            let owners = ring.preference_list(partition);
            let staged: Vec<usize> = owners
                .iter()
                .copied()
                .filter(|m| participants.contains(m))
                .collect();
            if staged.len() < w {
                return Err(inner.unavailable(w, owners.len(), staged.len(), owners, &staged));
            }
        }
        let import = Import {
            cluster: self.clone(),
            view: check.view.name.clone(),
            boundary: check.boundary,
            value_type: check.value_type,
            id,
            rows: 0,
            participants,
            done: false,
        };
        import
            .step_on(&import.participants, ImportStep::Begin)
            .await?;
        tracing::info!(view = %import.view, boundary = import.boundary.0, import = id, "batch import started");
        Ok(import)
    }
}

impl Import {
    /// The boundary this import publishes.
    pub fn boundary(&self) -> BatchBoundary {
        self.boundary
    }

    /// The type of the view's values: what each row's value must be.
    pub fn value_type(&self) -> ValueType {
        self.value_type
    }

    /// Stages `rows` on their participating owners (each must take them).
    pub async fn stage(&mut self, rows: Vec<(Key, BatchValue)>) -> Result<(), ClusterError> {
        let count = rows.len() as u64;
        let inner = &self.cluster.inner;
        if self.cluster.is_single() {
            self.rows_on(inner.members.me(), Rows::Local(rows)).await?;
        } else {
            // Which rows each participating owner takes; each row encoded once for the
            // wire, whatever the number of remote owners.
            // Owners now and owners taking the partition over alike.
            let mut per_member: Vec<Vec<usize>> = vec![Vec::new(); inner.members.len()];
            let (ring, next) = (inner.ring(), inner.next_ring());
            for (index, (key, _)) in rows.iter().enumerate() {
                let partition = ring.partition_of(&key.partition);
                let owners = ring.preference_list(partition);
                let pending = next.preference_list(partition);
                for &owner in owners
                    .iter()
                    .chain(pending.iter().filter(|m| !owners.contains(m)))
                {
                    if self.participants.contains(&owner) && owner < per_member.len() {
                        per_member[owner].push(index);
                    }
                }
            }
            let encoded: Vec<(Vec<u8>, Vec<u8>)> = rows
                .iter()
                .map(|(key, value)| (key.encode(), value.encode()))
                .collect();
            let this: &Import = self;
            let sends = per_member
                .into_iter()
                .enumerate()
                .filter(|(_, indexes)| !indexes.is_empty())
                .map(|(member, indexes)| {
                    let share = if member == inner.members.me() {
                        Rows::Local(indexes.iter().map(|&i| rows[i].clone()).collect())
                    } else {
                        Rows::Wire(indexes.iter().map(|&i| encoded[i].clone()).collect())
                    };
                    this.rows_on(member, share)
                });
            for result in futures_util::future::join_all(sends).await {
                result?;
            }
        }
        self.rows += count;
        Ok(())
    }

    /// Makes every staged row durable everywhere, then publishes the new boundary on
    /// every node (this one first).
    pub async fn finish(mut self) -> Result<ImportReport, ClusterError> {
        let inner = self.cluster.inner.clone();
        let participants = self.participants.clone();
        self.step_on(&participants, ImportStep::Finish).await?;
        // From here on the import stands: every node can read at it.
        self.done = true;
        inner
            .store
            .publish(&self.view, self.boundary, self.id)
            .await?;
        let others: Vec<usize> = participants
            .iter()
            .copied()
            .filter(|&m| m != inner.members.me())
            .collect();
        let mut published_on = 1;
        let calls = others.iter().map(|&m| self.step(m, ImportStep::Publish));
        for result in futures_util::future::join_all(calls).await {
            match result {
                Ok(()) => published_on += 1,
                Err(e) => {
                    tracing::warn!(view = %self.view, error = %e, "a node missed the publication; it learns it from gossip")
                }
            }
        }
        tracing::info!(view = %self.view, boundary = self.boundary.0, rows = self.rows, "batch import published");
        let catching_up = inner.members.names(
            inner
                .data_members()
                .into_iter()
                .filter(|m| !participants.contains(m)),
        );
        Ok(ImportReport {
            boundary: self.boundary,
            rows: self.rows,
            published_on,
            nodes: inner.data_members().len(),
            catching_up,
        })
    }

    /// Stages rows on `member`: decoded here, in wire form on a peer.
    async fn rows_on(&self, member: usize, rows: Rows) -> Result<(), ClusterError> {
        match rows {
            Rows::Local(rows) => {
                let store = &self.cluster.inner.store;
                store
                    .stage_rows(&self.view, self.boundary, self.id, rows)
                    .await?;
                Ok(())
            }
            Rows::Wire(rows) => {
                // Each request must fit one internode frame, whatever the rows' sizes.
                let mut frame = Vec::new();
                let mut bytes = 0;
                for row in rows {
                    let size = row.0.len() + row.1.len();
                    if !frame.is_empty() && bytes + size > ROWS_FRAME_BYTES {
                        self.step(member, ImportStep::Rows(std::mem::take(&mut frame)))
                            .await?;
                        bytes = 0;
                    }
                    bytes += size;
                    frame.push(row);
                }
                self.step(member, ImportStep::Rows(frame)).await
            }
        }
    }

    /// Runs `step` on every member of `members`; the first failure is the answer.
    async fn step_on(&self, members: &[usize], step: ImportStep) -> Result<(), ClusterError> {
        let calls = members.iter().map(|&m| self.step(m, step.clone()));
        for result in futures_util::future::join_all(calls).await {
            result?;
        }
        Ok(())
    }

    async fn step(&self, member: usize, step: ImportStep) -> Result<(), ClusterError> {
        let inner = &self.cluster.inner;
        if member == inner.members.me() {
            return Ok(serve_step(&inner.store, &self.view, self.boundary, self.id, &step).await?);
        }
        let request = Request::Import {
            view: self.view.clone(),
            boundary: self.boundary.0,
            import: self.id,
            step,
        };
        match inner.members.call(member, &request).await {
            Ok(Response::Imported) => Ok(()),
            Ok(other) => Err(ClusterError::Request(speedlayer_api::Error::Import {
                node: inner.members.name(member).to_string(),
                reason: format!("unexpected answer {other:?}"),
            })),
            Err(e) => Err(ClusterError::Request(speedlayer_api::Error::Import {
                node: inner.members.name(member).to_string(),
                reason: e.to_string(),
            })),
        }
    }
}

/// One member's share of a chunk of rows.
enum Rows {
    /// For this node's own store.
    Local(Vec<(Key, BatchValue)>),
    /// For a peer: (key, value) in their encoded forms.
    Wire(Vec<(Vec<u8>, Vec<u8>)>),
}

impl Drop for Import {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // The abort runs after this drop: it takes the import's identity with it.
        let abort = Import {
            cluster: self.cluster.clone(),
            view: std::mem::take(&mut self.view),
            participants: std::mem::take(&mut self.participants),
            done: true,
            ..*self
        };
        runtime.spawn(async move {
            if let Err(e) = abort.step_on(&abort.participants, ImportStep::Abort).await {
                tracing::warn!(view = %abort.view, error = %e, "aborting an import failed on a node; its staged rows are collected later");
            }
            tracing::info!(view = %abort.view, import = abort.id, "batch import aborted");
        });
    }
}

/// Runs one import step on this node's store (for itself or for a peer's coordinator).
pub(crate) async fn serve_step(
    store: &Store,
    view: &str,
    boundary: BatchBoundary,
    import: u64,
    step: &ImportStep,
) -> Result<(), StoreError> {
    match step {
        ImportStep::Begin => store.stage_begin(view, boundary, import).await,
        ImportStep::Rows(rows) => {
            let rows = rows
                .iter()
                .map(|(k, v)| {
                    let key = wire::key(k).map_err(|e| {
                        StoreError::Request(speedlayer_api::Error::BatchRow(e.to_string()))
                    })?;
                    Ok((key, BatchValue::decode(v)?))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            store
                .stage_rows(view, boundary, import, rows)
                .await
                .map(drop)
        }
        ImportStep::Finish => store.stage_finish(view, boundary, import).await,
        ImportStep::Publish => store.publish(view, boundary, import).await.map(drop),
        ImportStep::Abort => store.abort_import(view, import).await,
    }
}

/// A fresh import id: the node id and the clock, hashed (never 0, which names no
/// import), and below 2^53 so that JSON clients that read numbers as doubles
/// (JavaScript) read it exactly.
fn import_id(store: &Store) -> u64 {
    let seed = format!(
        "{}:{}",
        store.node_id(),
        speedlayer_store::clock::wall_clock_us()
    );
    (xxhash_rust::xxh3::xxh3_64(seed.as_bytes()) & JSON_SAFE_INTEGER).max(1)
}

/// The largest integer a double holds exactly (2^53 - 1).
const JSON_SAFE_INTEGER: u64 = (1 << 53) - 1;

#[cfg(test)]
mod tests {
    #[test]
    fn import_ids_fit_a_javascript_number() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut registry = prometheus_client::registry::Registry::default();
        let store = speedlayer_store::Store::open(
            speedlayer_store::StoreConfig::new(dir.path()),
            &mut registry,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..1000 {
            let id = super::import_id(&store);
            assert!((1..=super::JSON_SAFE_INTEGER).contains(&id), "{id}");
        }
    }
}

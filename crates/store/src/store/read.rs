//! Point reads: a key's parts at one batch boundary (its batch row and its realtime
//! states per epoch from the boundary on), and readings combined from them.

use std::sync::Arc;

use speedlayer_core::{BatchBoundary, BatchValue, Epoch, Key, Reading, RowParts, RowSummary};

use super::Store;
use crate::catalog::View;
use crate::error::{Result, StoreError};
use crate::shard::ShardMsg;

/// Where a shard sends its per-key answers to a point read.
type ShardReply<T> = tokio::sync::oneshot::Sender<Result<Vec<(usize, T)>>>;

impl Store {
    /// The value of `key` in `view` at its current batch boundary: the batch row ⊕ the
    /// live epochs from the boundary on; `None` when no part holds the key. Parts hold
    /// disjoint updates, so counters add and the other types join (see [`Reading`]).
    /// Epochs are read by the key's owner shard, so it sees every update applied before.
    pub async fn get(&self, view: &str, key: &Key) -> Result<Option<Reading>> {
        let mut readings = self.get_many(view, vec![key.clone()]).await?;
        Ok(readings.pop().flatten())
    }

    /// [`Store::get`] of several keys of one view, in order.
    pub async fn get_many(&self, view: &str, keys: Vec<Key>) -> Result<Vec<Option<Reading>>> {
        let value_type = self.view(view)?.spec.value_type.typed();
        let (_, states) = self.states(view, keys, None).await?;
        let mut readings = Vec::with_capacity(states.len());
        for parts in states {
            readings.push(parts.reading(value_type)?);
        }
        Ok(readings)
    }

    /// The parts of several keys of one view at batch boundary `at` (the current one
    /// when `None`): each key's batch row and its states per live epoch at or after the
    /// boundary (oldest first). What a replica answers a coordinator, which joins
    /// replicas epoch by epoch before combining parts (counters add across parts, so
    /// combined readings of two replicas could not be merged). Returns the boundary used;
    /// [`StoreError::Request(speedlayer_api::Error::BoundaryUnavailable)`] when this node cannot answer at `at`.
    pub async fn states(
        &self,
        view: &str,
        keys: Vec<Key>,
        at: Option<BatchBoundary>,
    ) -> Result<(BatchBoundary, Vec<RowParts>)> {
        self.states_restricted(view, keys, None, at).await
    }

    /// [`Store::states`] with set states (and set batch rows) restricted to `members`
    /// when given ([`speedlayer_core::OrSet::restricted_to`]): what a membership test
    /// reads, in time and bytes independent of the set's size.
    pub async fn states_restricted(
        &self,
        view: &str,
        keys: Vec<Key>,
        members: Option<Arc<[Vec<u8>]>>,
        at: Option<BatchBoundary>,
    ) -> Result<(BatchBoundary, Vec<RowParts>)> {
        let (boundary, rows) = self
            .point_read(view, keys, at, |view_id, epochs, keys, reply| {
                ShardMsg::Read {
                    view_id,
                    epochs,
                    keys,
                    members: members.clone(),
                    reply,
                }
            })
            .await?;
        let mut parts = Vec::with_capacity(rows.len());
        for (epochs, batch) in rows {
            let batch = match batch {
                Some(bytes) => {
                    let batch = BatchValue::decode(&bytes)?;
                    Some(match &members {
                        Some(members) => batch.restricted_to(members),
                        None => batch,
                    })
                }
                None => None,
            };
            parts.push(RowParts { batch, epochs });
        }
        Ok((boundary, parts))
    }

    /// Each key's set summaries at batch boundary `at` (the current one when `None`): per
    /// live epoch at or after the boundary, the set's member count and digest (O(1) per
    /// state once kept), and whether a batch row adds to it. What a replica answers a
    /// cardinality read ([`speedlayer_core::RowSummary::agreed`]).
    pub async fn set_summaries(
        &self,
        view: &str,
        keys: Vec<Key>,
        at: Option<BatchBoundary>,
    ) -> Result<(BatchBoundary, Vec<RowSummary>)> {
        let (boundary, rows) = self
            .point_read(view, keys, at, |view_id, epochs, keys, reply| {
                ShardMsg::Summaries {
                    view_id,
                    epochs,
                    keys,
                    reply,
                }
            })
            .await?;
        let rows = rows
            .into_iter()
            .map(|(epochs, batch)| RowSummary {
                batch: batch.is_some(),
                epochs,
            })
            .collect();
        Ok((boundary, rows))
    }

    /// A point read of `keys` at batch boundary `at` (the current one when `None`): each
    /// key's shard answers `message` about its states in the live epochs from the boundary
    /// on, and each key's batch row bytes are read from the boundary's table. Returns the
    /// boundary used and, per key in order, (shard answer, batch row).
    async fn point_read<T: Default>(
        &self,
        view: &str,
        keys: Vec<Key>,
        at: Option<BatchBoundary>,
        message: impl Fn(u32, Vec<Epoch>, Vec<(usize, Key)>, ShardReply<T>) -> ShardMsg,
    ) -> Result<(BatchBoundary, Vec<(T, Option<fjall::Slice>)>)> {
        let view = self.view(view)?;
        let _reading = self.inner.retire_gate.read().await;
        let (boundary, table) = self.readable(&view, at)?;
        let epochs = self.live_epochs_from(&view, boundary);
        let encoded: Vec<Vec<u8>> = match &table {
            Some(_) => keys.iter().map(Key::encode).collect(),
            None => Vec::new(),
        };
        let answers = self
            .per_key(view.id, keys, |keys, reply| {
                message(view.id, epochs.clone(), keys, reply)
            })
            .await?;
        let mut rows = Vec::with_capacity(answers.len());
        for (index, answer) in answers.into_iter().enumerate() {
            let batch = match (&table, encoded.get(index)) {
                (Some(table), Some(key)) => table.get(key)?,
                _ => None,
            };
            rows.push((answer, batch));
        }
        Ok((boundary, rows))
    }

    /// The boundary a read at `at` uses (the current one when `None`) and its batch
    /// table, if this node can answer at it.
    pub(super) fn readable(
        &self,
        view: &View,
        at: Option<BatchBoundary>,
    ) -> Result<(BatchBoundary, Option<fjall::Keyspace>)> {
        self.inner
            .batches
            .read_at(view.id, at, crate::clock::wall_clock_us())
            .map_err(|current| {
                StoreError::Request(speedlayer_api::Error::BoundaryUnavailable {
                    view: view.name.clone(),
                    asked: at.unwrap_or(current),
                    current,
                })
            })
    }

    /// The live epochs of `view` a read at `boundary` combines (and a write may still
    /// land in): those from the boundary on, oldest first.
    pub(super) fn live_epochs_from(&self, view: &View, boundary: BatchBoundary) -> Vec<Epoch> {
        let first = boundary.first_realtime_epoch(view.spec.epoch_secs);
        self.inner
            .epochs
            .of_view(view.id)
            .into_iter()
            .map(|(epoch, _)| epoch)
            .filter(|epoch| *epoch >= first)
            .collect()
    }
}

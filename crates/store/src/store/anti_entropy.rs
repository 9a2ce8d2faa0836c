//! What anti-entropy asks of a replica's storage: digests of a placement-hash range over
//! the live epochs, the leaves and entries of a range that differs, the states of keys
//! in one epoch, and a merge that never brings back an epoch this node no longer keeps.
//!
//! "Live" is what a read at the published batch boundary combines: epochs from the
//! boundary on that were not dropped. Epochs before it belong to the batch view and are
//! being retired; anti-entropy neither compares nor re-creates them.

use speedlayer_core::{Epoch, Key, OpError, Value};

use super::Store;
use crate::catalog::View;
use crate::digest::{self, Hash16, RangeDigest};
use crate::error::{Result, StoreError};
use crate::shard::ShardMsg;

/// How old the newest update a digest may leave out is: digests describe checkpointed
/// states, so [`Store::range_digests`] checkpoints when the last checkpoint is older.
/// Updates newer than this reach a node taking a partition over by the coordinators'
/// writes to it, not by the comparison.
pub const DIGEST_STALENESS: std::time::Duration = std::time::Duration::from_secs(1);

/// One (view, epoch)'s digest of a placement-hash range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochDigest {
    /// The view's name.
    pub view: String,
    /// The epoch.
    pub epoch: Epoch,
    /// The digest of its keys in the range.
    pub digest: RangeDigest,
}

/// What [`Store::range_digests`] answers: the digests of every live (view, epoch) with
/// keys in the range, and every view's first live epoch here (a peer sends nothing
/// older, since this node would not keep it).
#[derive(Clone, Debug, Default)]
pub struct RangeDigests {
    /// Non-empty (view, epoch) digests.
    pub epochs: Vec<EpochDigest>,
    /// `(view, first live epoch)` of every view declared here.
    pub floors: Vec<(String, Epoch)>,
}

/// What [`Store::merge_live`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergedLive {
    /// States merged.
    pub merged: usize,
    /// States left out: their epoch is before this node's batch boundary or was dropped.
    pub skipped: usize,
}

impl Store {
    /// The first epoch of `view` a read at its published boundary combines.
    fn first_live_epoch(&self, view: &View) -> Epoch {
        self.inner
            .batches
            .published(view.id)
            .first_realtime_epoch(view.spec.epoch_secs)
    }

    /// Digests of placement hashes `first..=last` in every live epoch of every view (see
    /// the module docs), covering every update acknowledged more than
    /// [`DIGEST_STALENESS`] ago (it checkpoints first when needed). Cached per range until
    /// a checkpoint changes it, so comparing an unchanged range costs one map lookup per
    /// (view, epoch).
    pub async fn range_digests(&self, first: u64, last: u64) -> Result<RangeDigests> {
        self.checkpoint_within(DIGEST_STALENESS).await?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = RangeDigests::default();
            for view in store.views().iter() {
                let floor = store.first_live_epoch(view);
                out.floors.push((view.name.clone(), floor));
                for (epoch, keyspace) in store.inner.epochs.of_view(view.id) {
                    if epoch < floor {
                        continue;
                    }
                    let cache = &store.inner.digests;
                    let found = match cache.get(view.id, epoch, first, last) {
                        Some(found) => found,
                        None => {
                            let version = cache.version();
                            let computed = digest::digest(&keyspace, first, last)?;
                            cache.put(version, (view.id, epoch), (first, last), computed);
                            computed
                        }
                    };
                    if let Some(digest) = found {
                        out.epochs.push(EpochDigest {
                            view: view.name.clone(),
                            epoch,
                            digest,
                        });
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|_| StoreError::ShuttingDown)?
    }

    /// The [`digest::LEAVES`] leaf digests of `first..=last` in (view, epoch); all zero
    /// when this node holds nothing there.
    pub async fn range_leaves(
        &self,
        view: &str,
        epoch: Epoch,
        first: u64,
        last: u64,
    ) -> Result<Vec<Hash16>> {
        let view = self.view(view)?;
        let Some(keyspace) = self.inner.epochs.get(view.id, epoch) else {
            return Ok(vec![[0; 16]; digest::LEAVES]);
        };
        tokio::task::spawn_blocking(move || Ok(digest::leaves(&keyspace, first, last)?.0))
            .await
            .map_err(|_| StoreError::ShuttingDown)?
    }

    /// Every key with a state in `first..=last` of (view, epoch), with its state hash.
    pub async fn range_entries(
        &self,
        view: &str,
        epoch: Epoch,
        first: u64,
        last: u64,
    ) -> Result<Vec<(Key, Hash16)>> {
        let view = self.view(view)?;
        let Some(keyspace) = self.inner.epochs.get(view.id, epoch) else {
            return Ok(Vec::new());
        };
        tokio::task::spawn_blocking(move || digest::entries(&keyspace, first, last))
            .await
            .map_err(|_| StoreError::ShuttingDown)?
    }

    /// The current states of `keys` in one epoch of `view` (read by their owner shards,
    /// so newer than the checkpointed digests); keys without a state are left out.
    pub async fn epoch_states(
        &self,
        view: &str,
        epoch: Epoch,
        keys: Vec<Key>,
    ) -> Result<Vec<(Key, Value)>> {
        let view = self.view(view)?;
        if self.inner.epochs.get(view.id, epoch).is_none() {
            return Ok(Vec::new());
        }
        let per_key = self
            .per_key(view.id, keys.clone(), |keys, reply| ShardMsg::Read {
                view_id: view.id,
                epochs: vec![epoch],
                keys,
                members: None,
                reply,
            })
            .await?;
        Ok(keys
            .into_iter()
            .zip(per_key)
            .filter_map(|(key, mut states)| Some((key, states.pop()?.1)))
            .collect())
    }

    /// [`Store::merge`] of the states whose epoch is live here (see the module docs);
    /// the others are left out, so a peer that has not yet retired or dropped an epoch
    /// cannot bring it back here.
    pub async fn merge_live(
        &self,
        view: &str,
        states: Vec<(Epoch, Key, Value)>,
    ) -> Result<MergedLive> {
        let spec = self.view(view)?;
        let floor = self.first_live_epoch(&spec);
        let dropped = self.dropped(view);
        let total = states.len();
        let live: Vec<(Epoch, Key, Value)> = states
            .into_iter()
            .filter(|(epoch, _, _)| {
                *epoch >= floor && !dropped.as_ref().is_some_and(|d| d.contains(epoch))
            })
            .collect();
        let mut outcome = MergedLive {
            merged: 0,
            skipped: total - live.len(),
        };
        if live.is_empty() {
            return Ok(outcome);
        }
        for result in self.merge(view, live).await? {
            match result {
                Ok(_) => outcome.merged += 1,
                Err(OpError::EpochDropped { .. }) => outcome.skipped += 1,
                Err(e) => {
                    tracing::warn!(%view, error = %e, "a state from anti-entropy does not merge here");
                    outcome.skipped += 1;
                }
            }
        }
        Ok(outcome)
    }
}

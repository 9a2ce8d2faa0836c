//! Expiry: listing and dropping epochs, and retiring what no read can use any more,
//! whole keyspaces at a time.
//!
//! Run periodically by the node. After a batch boundary's grace period, its table and the
//! realtime epochs before the oldest boundary still readable are dropped (O(1) per epoch:
//! keyspace deletes, no per-key tombstones). Staged imports whose staging never finished
//! are collected after [`STAGED_TTL`]. With a retention limit, epochs older than it are
//! dropped even when no batch view covers them, with a warning and a metric: their data
//! leaves every answer until a batch import covers that time.

use std::time::Duration;

use speedlayer_core::Epoch;

use std::collections::BTreeSet;
use std::sync::Arc;

use fjall::PersistMode;

use super::import::take_staged;
use super::{EpochInfo, Store};
use speedlayer_api::Staged;

use crate::batch::BatchRecord;
use crate::catalog::View;
use crate::clock::wall_clock_us;
use crate::error::{Result, StoreError};
use crate::shard::ShardMsg;

/// A staged import whose rows are still not all durable after this long is abandoned (its
/// coordinator failed mid-import). A *finished* one is kept: its publication may still
/// arrive by gossip (a node cut off during it); it goes when a later import of its view
/// begins or publishes.
pub const STAGED_TTL: Duration = Duration::from_secs(3600);

/// What one retire pass dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retired {
    /// Realtime epochs dropped because a batch view covers them.
    pub epochs_covered: usize,
    /// Realtime epochs dropped by the retention limit, uncovered.
    pub epochs_expired: usize,
    /// Batch tables dropped (boundaries past their grace, abandoned imports).
    pub tables: usize,
}

impl Store {
    /// The live epochs of `view`, oldest first.
    pub fn epochs(&self, view: &str) -> Result<Vec<EpochInfo>> {
        let view = self.view(view)?;
        self.inner
            .epochs
            .of_view(view.id)
            .into_iter()
            .map(|(epoch, keyspace)| {
                Ok(EpochInfo {
                    epoch: epoch.0,
                    start_secs: epoch.start_secs(view.spec.epoch_secs),
                    approx_keys: crate::key_count::count(&keyspace)?,
                    disk_bytes: keyspace.disk_space(),
                })
            })
            .collect()
    }

    /// Drops `epochs` of `view` for good: records them as dropped (durably, before
    /// anything is deleted), then drops each one's keyspace, so its keys vanish from
    /// reads and its files are released, O(1) in the number of keys (no per-key
    /// tombstones). From then on this node refuses every update and replicated state for
    /// them ([`speedlayer_core::OpError::EpochDropped`]). Idempotent; returns whether any
    /// of them held data here. This is a replica's part of a cluster-wide drop: the
    /// coordinator tells every node, and gossip tells the ones that were away.
    pub async fn drop_epochs(&self, view: &str, epochs: &[Epoch]) -> Result<bool> {
        let view = self.view(view)?;
        let _dropping = self.inner.retire_gate.write().await;
        let (name, list) = (view.name.clone(), epochs.to_vec());
        let inner = self.inner.clone();
        let new = tokio::task::spawn_blocking(move || inner.catalog.record_dropped(&name, &list))
            .await
            .map_err(|_| StoreError::ShuttingDown)??;
        if !new.is_empty() {
            tracing::info!(view = %view.name, epochs = ?new, "epochs dropped cluster-wide");
        }
        let mut existed = false;
        for &epoch in epochs {
            existed |= self.drop_epoch_of(&view, epoch).await?;
        }
        Ok(existed)
    }

    /// The epochs of every view dropped cluster-wide, as far as this node knows, by view
    /// name (what gossip compares and sends).
    pub fn dropped_epochs(&self) -> Vec<(String, Vec<u64>)> {
        self.inner.catalog.all_dropped()
    }

    /// The generation of an `any` view: the epoch its writes land in now (one past the
    /// last dropped; see `Store::epoch_for`).
    pub fn generation(&self, view: &str) -> Result<Epoch> {
        self.view(view)?;
        Ok(super::write::generation(
            self.inner.catalog.dropped(view).as_deref(),
        ))
    }

    /// The epochs of `view` dropped cluster-wide, as far as this node knows (`None`: none).
    /// The catalog's shared set: reads check it on every answer, so it is not copied.
    pub fn dropped(&self, view: &str) -> Option<Arc<BTreeSet<Epoch>>> {
        self.inner.catalog.dropped(view)
    }

    /// [`Store::dropped`] as the wire carries it: epoch indexes, oldest first.
    pub fn dropped_indexes(&self, view: &str) -> Vec<u64> {
        self.dropped(view)
            .map(|d| d.iter().map(|e| e.0).collect())
            .unwrap_or_default()
    }

    /// Drops one epoch's keyspace, with the view looked up and the retire gate held.
    async fn drop_epoch_of(&self, view: &View, epoch: Epoch) -> Result<bool> {
        let Some(keyspace) = self.inner.epochs.unlist(view.id, epoch) else {
            return Ok(false);
        };
        self.inner.digests.forget(view.id, epoch);
        // Every owner shard must let go of the handle before the keyspace is deleted, so
        // no write lands in it afterwards.
        self.broadcast(|done| ShardMsg::ForgetEpoch {
            view_id: view.id,
            epoch,
            done,
        })
        .await?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            inner.epochs.delete(keyspace)?;
            inner.db.persist(PersistMode::SyncAll)?;
            Ok(())
        })
        .await
        .map_err(|_| StoreError::ShuttingDown)??;
        tracing::info!(view = %view.name, epoch = epoch.0, "epoch dropped");
        Ok(true)
    }

    /// Drops what no read can use any more (see the module docs). Holds the retire gate
    /// only while it drops, so no read in flight loses a part; a pass with nothing to
    /// drop (nearly every one: it runs every second) does not hold reads up at all.
    pub async fn retire(&self) -> Result<Retired> {
        let mut retired = Retired::default();
        let now_us = wall_clock_us();
        for view in self.views().iter() {
            if !self.has_retirable(view, now_us) {
                continue;
            }
            let _dropping = self.inner.retire_gate.write().await;
            let done = self.retire_view(view, now_us).await?;
            retired.epochs_covered += done.epochs_covered;
            retired.epochs_expired += done.epochs_expired;
            retired.tables += done.tables;
        }
        Ok(retired)
    }

    /// Whether [`Store::retire_view`] would drop anything of `view` at `now_us`.
    fn has_retirable(&self, view: &View, now_us: u64) -> bool {
        let record = self.inner.batches.record(view.id);
        if record_expired(&record, now_us) {
            return true;
        }
        let first = record
            .oldest_readable()
            .first_realtime_epoch(view.spec.epoch_secs);
        let expire_before = self.expire_before(view, now_us);
        self.inner
            .epochs
            .of_view(view.id)
            .iter()
            .any(|(epoch, _)| *epoch < first || expire_before.is_some_and(|before| *epoch < before))
    }

    /// The first epoch the retention limit keeps (epochs before it end at or before the
    /// cutoff), when there is a limit.
    fn expire_before(&self, view: &View, now_us: u64) -> Option<Epoch> {
        self.inner.retention.map(|keep| {
            let cutoff = (now_us / 1_000_000).saturating_sub(keep.as_secs());
            Epoch(cutoff / view.spec.epoch_secs.max(1))
        })
    }

    /// Drops `view`'s expired boundaries, abandoned imports, covered epochs and epochs
    /// past the retention limit. The caller holds the retire gate.
    async fn retire_view(&self, view: &View, now_us: u64) -> Result<Retired> {
        let mut retired = Retired::default();
        if record_expired(&self.inner.batches.record(view.id), now_us) {
            let view_id = view.id;
            retired.tables = self
                .blocking(move |store| {
                    store.inner.batches.update(view_id, None, |record| {
                        let mut dropped = take_staged(record, |s| abandoned(s, now_us));
                        record.retiring.retain(|r| {
                            let keep = r.until_us > now_us;
                            if !keep && r.import != 0 {
                                dropped.push((r.boundary, r.import));
                            }
                            keep
                        });
                        Ok((dropped.len(), dropped))
                    })
                })
                .await?;
        }
        let first = self
            .inner
            .batches
            .record(view.id)
            .oldest_readable()
            .first_realtime_epoch(view.spec.epoch_secs);
        let expire_before = self.expire_before(view, now_us);
        for (epoch, _) in self.inner.epochs.of_view(view.id) {
            let covered = epoch < first;
            let expired = !covered && expire_before.is_some_and(|before| epoch < before);
            if !(covered || expired) || !self.drop_epoch_of(view, epoch).await? {
                continue;
            }
            if covered {
                self.inner.metrics.epochs_retired.inc();
                retired.epochs_covered += 1;
            } else {
                self.inner.metrics.epochs_expired_uncovered.inc();
                retired.epochs_expired += 1;
                tracing::warn!(view = %view.name, epoch = epoch.0, start_secs = epoch.start_secs(view.spec.epoch_secs), "retention dropped a realtime epoch no batch view covers: its data left every answer until a batch import covers it");
            }
        }
        Ok(retired)
    }
}

/// A staged import whose staging never finished and is past [`STAGED_TTL`].
fn abandoned(staged: &Staged, now_us: u64) -> bool {
    !staged.finished
        && staged
            .started_us
            .saturating_add(STAGED_TTL.as_micros() as u64)
            <= now_us
}

/// Whether `record` holds a retiring boundary past its grace or an abandoned import.
fn record_expired(record: &BatchRecord, now_us: u64) -> bool {
    record.retiring.iter().any(|r| r.until_us <= now_us)
        || record.staged.iter().any(|s| abandoned(s, now_us))
}

//! Writes: updates validated against their view, late ones refused, the rest routed to
//! their owner shards and acknowledged once durable; merges of replicas' states.

use std::sync::atomic::Ordering;

use speedlayer_core::{Applied, Epoch, Key, Op, OpError, Outcome, Value};
use tokio::sync::oneshot;

use super::{shard_of, validate, ApplyKind, Store, Update, Written};
use crate::catalog::ViewType;
use crate::error::{Result, StoreError};
use crate::shard::{ShardMsg, ShardUpdate, UpdateResults};

impl Store {
    /// Applies `updates` to `view` and returns once they are durable, with one outcome per
    /// update in request order.
    ///
    /// Everything the caller can get wrong (unknown view, an op of another type, a
    /// negative gcounter increment, a bad timestamp) is checked for every update before
    /// any is applied, so such an error means nothing changed. Per-update results are
    /// what only the state can tell (a duplicate id, a writer limit).
    pub async fn apply(
        &self,
        view: &str,
        updates: Vec<Update>,
    ) -> Result<Vec<Result<Applied, OpError>>> {
        self.apply_kind(view, updates, ApplyKind::Plain).await
    }

    /// [`Store::apply`] with the given [`ApplyKind`].
    pub async fn apply_kind(
        &self,
        view: &str,
        updates: Vec<Update>,
        kind: ApplyKind,
    ) -> Result<Vec<Result<Applied, OpError>>> {
        let written = self.apply_inner(view, updates, kind, false).await?;
        Ok(written.into_iter().map(|w| w.result).collect())
    }

    /// [`Store::apply`], with each result's [`Applied::effect`] filled in as Redis
    /// reports it (a counter's total after the update over every live epoch, members
    /// added, ...). Costs a little more per update; an increment that would take a
    /// counter past the i64 range is refused with [`OpError::Overflow`].
    pub async fn apply_reporting(
        &self,
        view: &str,
        updates: Vec<Update>,
    ) -> Result<Vec<Result<Applied, OpError>>> {
        self.apply_kind(view, updates, ApplyKind::Report).await
    }

    /// [`Store::apply_kind`] on the replica that coordinates a replicated write: also
    /// returns each update's epoch and delta, which the other replicas merge with
    /// [`Store::merge`] (with [`ApplyKind::Aggregate`], one merged delta per key, on its
    /// last update). The epoch is fixed here (from the update's `ts`, or this node's
    /// clock), so every replica files the update alike.
    pub async fn apply_replicating(
        &self,
        view: &str,
        updates: Vec<Update>,
        kind: ApplyKind,
    ) -> Result<Vec<Written>> {
        self.apply_inner(view, updates, kind, true).await
    }

    /// Merges states into `view` (replication, hints, read repair): each `(epoch, key,
    /// state)` is joined into the key's state in that epoch, durably before this returns.
    /// Merges are idempotent and commute, so a re-delivery changes nothing.
    pub async fn merge(
        &self,
        view: &str,
        states: Vec<(Epoch, Key, Value)>,
    ) -> Result<Vec<Result<Applied, OpError>>> {
        let epoch_secs = self.view(view)?.spec.epoch_secs;
        let updates = states
            .into_iter()
            .map(|(epoch, key, state)| Update {
                key,
                op: Op::Merge(Box::new(state)),
                ts_us: Some(epoch.start_us(epoch_secs)),
                id: None,
            })
            .collect();
        self.apply(view, updates).await
    }

    async fn apply_inner(
        &self,
        view: &str,
        updates: Vec<Update>,
        kind: ApplyKind,
        delta: bool,
    ) -> Result<Vec<Written>> {
        let view = self.view(view)?;
        // Realtime data before the batch boundary is the batch view's: a new update there
        // is late (merges from replicas, hints and repair still land, for reads at an
        // older boundary during its grace period).
        let published = self.inner.batches.published(view.id);
        let first_live = published.first_realtime_epoch(view.spec.epoch_secs);
        let report = (kind == ApplyKind::Report).then(|| self.live_epochs_from(&view, published));
        let aggregate = kind == ApplyKind::Aggregate;
        let mut late = Vec::new();
        let mut epochs = Vec::with_capacity(updates.len());
        for update in &updates {
            validate(&view, update)?;
        }
        if self.inner.failed.load(Ordering::Acquire) {
            return Err(StoreError::Failed);
        }
        let shard_count = self.inner.shards.len();
        let mut per_shard: Vec<Vec<ShardUpdate>> = (0..shard_count).map(|_| Vec::new()).collect();
        for (index, update) in updates.into_iter().enumerate() {
            let unique = self.inner.clock.tick();
            let ts_us = update.ts_us.unwrap_or(unique as i64);
            let epoch = Epoch::containing(ts_us, view.spec.epoch_secs)?;
            epochs.push(epoch);
            if epoch < first_live && !matches!(update.op, Op::Merge(_)) {
                late.push(index);
                continue;
            }
            let shard = shard_of(view.id, &update.key, shard_count);
            per_shard[shard].push(ShardUpdate {
                index,
                view_id: view.id,
                value_type: view.spec.value_type.type_for(&update.op),
                dynamic: view.spec.value_type == ViewType::Any,
                epoch,
                key: update.key,
                op: update.op,
                ts_us,
                unique,
                id: update.id,
                delta,
            });
        }
        let mut waiting = Vec::new();
        for (shard, batch) in per_shard.into_iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            self.send(
                shard,
                ShardMsg::Apply {
                    updates: batch,
                    report: report.clone(),
                    aggregate,
                    reply,
                },
            )
            .await?;
            waiting.push(rx);
        }
        let mut results: Vec<Written> = epochs
            .into_iter()
            .map(|epoch| Written {
                result: Ok(Applied {
                    outcome: Outcome::Applied,
                    effect: 0,
                }),
                epoch,
                delta: None,
            })
            .collect();
        for index in late {
            self.inner.metrics.late_events.inc();
            results[index].result = Ok(Applied {
                outcome: Outcome::Late,
                effect: 0,
            });
        }
        for rx in waiting {
            let shard_results: UpdateResults = rx.await.map_err(|_| StoreError::ShuttingDown)??;
            for (index, result, delta) in shard_results {
                results[index].result = result;
                results[index].delta = delta;
            }
        }
        Ok(results)
    }
}

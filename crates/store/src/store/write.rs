//! Writes: updates validated against their view, late ones refused, the rest routed to
//! their owner shards and acknowledged once durable; merges of replicas' states.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use speedlayer_core::{Applied, Epoch, Key, Op, OpError, Outcome, Value};
use tokio::sync::oneshot;

use super::{shard_of, validate, ApplyKind, Store, Update, Written};

use crate::catalog::{View, ViewType};
use crate::error::{Result, StoreError};
use crate::shard::{ShardMsg, ShardUpdate, UpdateResults};

impl Store {
    /// Refuses updates out of this node's bounds: an event time more than
    /// [`StoreConfig::max_future_ts`] ahead of its clock, or a value longer than
    /// [`StoreConfig::max_value_bytes`] (merges of states are not updates and pass).
    /// What the coordinator checks before it sends updates to any replica.
    ///
    /// [`StoreConfig::max_future_ts`]: crate::StoreConfig::max_future_ts
    /// [`StoreConfig::max_value_bytes`]: crate::StoreConfig::max_value_bytes
    pub fn refuse_out_of_bounds(&self, updates: &[Update]) -> Result<()> {
        let limit = self.inner.max_value_bytes;
        for update in updates {
            let longest = match &update.op {
                Op::Set(value) => value.len(),
                Op::Add(members) | Op::Remove(members) | Op::PfAdd(members) => {
                    members.iter().map(Vec::len).max().unwrap_or(0)
                }
                _ => 0,
            };
            if longest > limit {
                return Err(StoreError::Request(speedlayer_api::Error::ValueTooLarge {
                    len: longest,
                    limit,
                }));
            }
        }
        let bound = self.inner.max_future_ts;
        let horizon =
            (crate::clock::wall_clock_us() as i64).saturating_add(bound.as_micros() as i64);
        let Some(ts) = updates
            .iter()
            .filter(|u| !matches!(u.op, Op::Merge(_)))
            .filter_map(|u| u.ts_us)
            .find(|ts| *ts > horizon)
        else {
            return Ok(());
        };
        let ahead = (ts - horizon) / 1_000_000 + bound.as_secs() as i64;
        Err(StoreError::Request(speedlayer_api::Error::Timestamp(format!(
            "ts is {ahead} s ahead of this node's clock; at most {} s ahead is accepted (--max-future-ts-secs)",
            bound.as_secs()
        ))))
    }

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
        let written = self.apply_inner(view, updates, None, kind, false).await?;
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
        self.apply_inner(view, updates, None, kind, true).await
    }

    /// Merges states into `view` (replication, hints, read repair): each `(epoch, key,
    /// state)` is joined into the key's state in that epoch, durably before this returns.
    /// Merges are idempotent and commute, so a re-delivery changes nothing.
    /// A state for an epoch dropped cluster-wide is refused
    /// ([`OpError::EpochDropped`]): nothing brings a dropped epoch back.
    pub async fn merge(
        &self,
        view: &str,
        states: Vec<(Epoch, Key, Value)>,
    ) -> Result<Vec<Result<Applied, OpError>>> {
        let (epochs, updates) = states
            .into_iter()
            .map(|(epoch, key, state)| {
                let update = Update {
                    key,
                    op: Op::Merge(Box::new(state)),
                    ts_us: None,
                    id: None,
                };
                (epoch, update)
            })
            .unzip();
        let written = self
            .apply_inner(view, updates, Some(epochs), ApplyKind::Plain, false)
            .await?;
        Ok(written.into_iter().map(|w| w.result).collect())
    }

    /// Applies `updates`, each in the epoch `placed` gives it (merges: the epoch the state
    /// came from) or else the one its view places it in ([`Store::epoch_for`]).
    async fn apply_inner(
        &self,
        view: &str,
        updates: Vec<Update>,
        placed: Option<Vec<Epoch>>,
        kind: ApplyKind,
        delta: bool,
    ) -> Result<Vec<Written>> {
        let view = self.view(view)?;
        let dropped = self.inner.catalog.dropped(&view.name);
        // Realtime data before the batch boundary is the batch view's: a new update there
        // is late (merges from replicas, hints and repair still land, for reads at an
        // older boundary during its grace period).
        let published = self.inner.batches.published(view.id);
        let first_live = published.first_realtime_epoch(view.spec.epoch_secs);
        let report = (kind == ApplyKind::Report).then(|| self.live_epochs_from(&view, published));
        let aggregate = kind == ApplyKind::Aggregate;
        let mut late = Vec::new();
        let mut refused = Vec::new();
        let mut epochs = Vec::with_capacity(updates.len());
        self.refuse_out_of_bounds(&updates)?;
        for update in &updates {
            validate(&view, update)?;
        }
        if self.inner.failed.load(Ordering::Acquire) {
            return Err(StoreError::Failed);
        }
        // Held from the dropped-epoch check until every shard has the updates, so an
        // epoch dropped meanwhile (which takes the gate exclusively) cannot take one.
        let _not_dropping = self.inner.retire_gate.read().await;
        let shard_count = self.inner.shards.len();
        let mut per_shard: Vec<Vec<ShardUpdate>> = (0..shard_count).map(|_| Vec::new()).collect();
        for (index, update) in updates.into_iter().enumerate() {
            let unique = self.inner.clock.tick();
            let arrival = update.ts_us.is_none();
            let ts_us = update.ts_us.unwrap_or(unique as i64);
            let epoch = match &placed {
                // `merge` places every state: one epoch per update.
                Some(epochs) => epochs.get(index).copied().unwrap_or(Epoch(0)),
                None => self.epoch_for(&view, dropped.as_deref(), ts_us)?,
            };
            epochs.push(epoch);
            if dropped.as_ref().is_some_and(|d| d.contains(&epoch)) {
                refused.push(index);
                continue;
            }
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
                arrival,
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
        drop(_not_dropping);
        for index in refused {
            self.inner.metrics.dropped_epoch_refusals.inc();
            let epoch = results[index].epoch.0;
            results[index].result = Err(OpError::EpochDropped { epoch });
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

impl Store {
    /// The epoch an update at event time `ts_us` lands in: the one containing it, for a
    /// view of time epochs; for an `any` view (the Redis keyspace, whose keys do not
    /// expire by time bucket), its *generation*: the epoch after the last one dropped, so
    /// `FLUSHALL` is one epoch drop and writes after it start the next generation.
    pub(crate) fn epoch_for(
        &self,
        view: &View,
        dropped: Option<&BTreeSet<Epoch>>,
        ts_us: i64,
    ) -> Result<Epoch> {
        if view.spec.value_type == ViewType::Any {
            return Ok(generation(dropped));
        }
        Ok(Epoch::containing(ts_us, view.spec.epoch_secs)?)
    }
}

/// The live generation of an `any` view: one past its last dropped epoch.
pub(crate) fn generation(dropped: Option<&BTreeSet<Epoch>>) -> Epoch {
    dropped
        .and_then(|d| d.last())
        .map_or(Epoch(0), |last| Epoch(last.0.saturating_add(1)))
}

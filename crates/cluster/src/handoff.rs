//! Hinted handoff: hand the states behind each hint to their owner once it is back.
//!
//! Every [`INTERVAL`], for each owner this node holds hints for and the failure detector
//! sees up, the hints are read in batches; for each the holder's *current* state of the
//! key in that epoch is sent (a state includes every write the hint stands for, and a
//! merge is idempotent); once the owner acknowledged the merge durably, the hints are
//! removed, unless re-recorded meanwhile (see [`speedlayer_store::Hints::delivered`]).
//! A hint whose epoch is gone here (dropped) has nothing left to hand over and is removed;
//! so are the hints for a node that left or was removed (it owns nothing any more: the
//! other replicas hold what the hints stand for, and anti-entropy spreads it).

use std::collections::BTreeMap;

use speedlayer_core::RowParts;
use std::sync::Arc;
use std::time::Duration;

use speedlayer_store::Hint;
use tokio::sync::watch;

use crate::metrics::ClusterMetrics;
use crate::node::{ClusterNode, Deltas};

/// How often pending hints are looked at.
const INTERVAL: Duration = Duration::from_millis(500);
/// Hints handed over per round trip.
const BATCH: usize = 1000;

/// Runs hinted handoff until `stop` turns true (when enabled in the configuration; the
/// pending-hints metric is kept up to date either way).
pub(crate) async fn run(inner: Arc<ClusterNode>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let records = inner.records();
        for member in 0..inner.members.len() {
            let name = inner.members.name(member).to_string();
            let pending = inner.store.hints().pending_for(&name);
            if pending > 0 && records.get(&name).is_some_and(|r| !r.state.is_member()) {
                discard(&inner, &name).await;
                continue;
            }
            inner
                .metrics
                .hints_pending
                .get_or_create(&ClusterMetrics::target(&name))
                .set(pending as i64);
            if pending == 0 || member == inner.members.me() || !inner.members.is_up(member) {
                continue;
            }
            if !inner.config.hinted_handoff {
                continue;
            }
            loop {
                match deliver_batch(&inner, member, &name).await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        tracing::debug!(peer = %name, error = %e, "hint delivery paused");
                        break;
                    }
                }
            }
            let left = inner.store.hints().pending_for(&name);
            inner
                .metrics
                .hints_pending
                .get_or_create(&ClusterMetrics::target(&name))
                .set(left as i64);
            if left == 0 {
                tracing::info!(peer = %name, "every hint delivered");
            }
        }
    }
}

/// Drops every hint held for `name`, a node that left or was removed.
async fn discard(inner: &ClusterNode, name: &str) {
    let store = inner.store.clone();
    let target = name.to_owned();
    let dropped = tokio::task::spawn_blocking(move || {
        let mut dropped = 0;
        loop {
            let hints = store.hints().batch(&target, BATCH)?;
            if hints.is_empty() {
                return Ok::<u64, speedlayer_store::StoreError>(dropped);
            }
            dropped += store.hints().delivered(&target, &hints)?;
        }
    })
    .await;
    match dropped {
        Ok(Ok(n)) => {
            tracing::info!(peer = %name, hints = n, "dropped the hints for a node that left or was removed")
        }
        Ok(Err(e)) => tracing::warn!(peer = %name, error = %e, "dropping hints failed; retried"),
        Err(_) => {}
    }
}

/// Hands one batch of hints to `member`. `Ok(true)`: a full batch went, there may be
/// more.
async fn deliver_batch(inner: &ClusterNode, member: usize, name: &str) -> Result<bool, String> {
    let store = inner.store.clone();
    let target = name.to_owned();
    let hints = tokio::task::spawn_blocking(move || store.hints().batch(&target, BATCH))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if hints.is_empty() {
        return Ok(false);
    }
    let full = hints.len() == BATCH;
    let mut by_view: BTreeMap<String, Vec<Hint>> = BTreeMap::new();
    for hint in hints {
        by_view.entry(hint.key.view.clone()).or_default().push(hint);
    }
    for (view, hints) in by_view {
        let keys = hints.iter().map(|h| h.key.key.clone()).collect();
        // At the current batch boundary: a hint for an epoch the batch view now covers
        // has nothing left to hand over.
        let states = match inner.store.states(&view, keys, None).await {
            Ok((_, states)) => states,
            Err(speedlayer_store::StoreError::Request(speedlayer_api::Error::UnknownView(_))) => {
                vec![RowParts::default(); hints.len()]
            }
            Err(e) => return Err(e.to_string()),
        };
        let mut deltas = Deltas::default();
        for (hint, parts) in hints.iter().zip(states) {
            if let Some((epoch, state)) =
                parts.epochs.into_iter().find(|(e, _)| *e == hint.key.epoch)
            {
                deltas.push(epoch, hint.key.key.clone(), state);
            }
        }
        if !deltas.is_empty() && !inner.merge_on(member, &view, &deltas, None).await {
            return Err("owner did not acknowledge".into());
        }
        let store = inner.store.clone();
        let target = name.to_owned();
        let removed = tokio::task::spawn_blocking(move || store.hints().delivered(&target, &hints))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        inner
            .metrics
            .hints_delivered
            .get_or_create(&ClusterMetrics::target(name))
            .inc_by(removed);
    }
    Ok(full)
}

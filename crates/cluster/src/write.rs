//! The write path: apply on one replica, replicate its deltas, count acknowledgements.
//!
//! For each group of updates that share a ring order, the coordinator:
//! 1. picks the **applying replica** (itself when it owns the keys, else the first live
//!    owner; a sloppy write falls back to itself when no owner is reachable) and has it
//!    apply the updates durably, returning each update's delta ([`Value::delta`]);
//! 2. sends the deltas to the other live owners, which merge them durably, and goes on
//!    as soon as W nodes hold the write: the owners still to answer finish in the
//!    background, and one that fails then gets a hint (so a hung peer costs a write
//!    nothing once W others answered);
//! 3. if fewer than W nodes acknowledged and the write is sloppy, sends the deltas to
//!    fallback nodes (next on the ring) that keep a hint for an owner they stand in for;
//! 4. records hints (here) for every owner still missing, so it catches up when back;
//! 5. succeeds when W distinct nodes hold the write durably.
//!
//! Shipping deltas instead of ops is what makes every path idempotent: a replica never
//! re-applies an anonymous increment into a slot it does not own, and a retried update
//! with an id lands in its writer slot once, whichever coordinator carried it.
//!
//! [`Value::delta`]: speedlayer_core::Value::delta

use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use speedlayer_core::{Applied, Epoch, OpError, Value};
use speedlayer_store::{validate, ApplyKind, StoreError, Update, Written};

use crate::error::ClusterError;
use crate::node::{Cluster, ClusterNode, Deltas};
use crate::wire::{self, Request, Response, WireUpdate};
use speedlayer_api::{QuorumMode, WriteOptions};

type Results = Vec<Result<Applied, OpError>>;

impl Cluster {
    /// Applies `updates` to `view` at the given consistency; one result per update, in
    /// order. With [`ApplyKind::Report`], results carry Redis effects as the applying
    /// replica saw them; with [`ApplyKind::Aggregate`], the applying replica logs and
    /// ships one merged delta per key. On [`ClusterError::Request(speedlayer_api::Error::Unavailable)`] some updates may have been applied on fewer
    /// than W nodes (and hinted): retry with the same ids to count each exactly once.
    pub async fn apply(
        &self,
        view: &str,
        updates: Vec<Update>,
        options: WriteOptions,
        kind: ApplyKind,
    ) -> Result<Results, ClusterError> {
        let inner = &self.inner;
        if self.is_single() {
            return Ok(inner.store.apply_kind(view, updates, kind).await?);
        }
        inner.refuse_if_clock_skewed()?;
        inner.store.refuse_out_of_bounds(&updates)?;
        let spec = inner.store.view(view)?;
        for update in &updates {
            validate(&spec, update).map_err(StoreError::from)?;
        }
        let count = updates.len();
        let groups = inner.ring().group(updates, |u| &u.key.partition);
        let writes = groups
            .into_iter()
            .map(|(partition, items)| inner.write_group(view, partition, items, options, kind));
        let mut results: Vec<Option<Result<Applied, OpError>>> = (0..count).map(|_| None).collect();
        let mut unavailable: Option<ClusterError> = None;
        for outcome in futures_util::future::join_all(writes).await {
            match outcome {
                Ok(done) => {
                    for (index, result) in done {
                        results[index] = Some(result);
                    }
                }
                Err(ClusterError::Request(speedlayer_api::Error::Unavailable {
                    needed,
                    of,
                    reached,
                    unreachable,
                })) => {
                    // Report the worst group, naming every unreachable owner seen.
                    let mut names = unreachable;
                    if let Some(ClusterError::Request(speedlayer_api::Error::Unavailable {
                        unreachable: seen,
                        ..
                    })) = &unavailable
                    {
                        names.extend(seen.iter().cloned());
                    }
                    names.sort();
                    names.dedup();
                    unavailable = Some(ClusterError::Request(speedlayer_api::Error::Unavailable {
                        needed,
                        of,
                        reached,
                        unreachable: names,
                    }));
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(e) = unavailable {
            return Err(e);
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(Err(OpError::Overflow)))
            .collect())
    }
}

impl Cluster {
    /// Deletes `keys` of `view` (Redis `DEL`), observed-remove: one [`Op::Delete`] per key
    /// and epoch the key can hold state in (as this node knows the view's live epochs),
    /// written like any update, so its delta reaches every owner, hints and read repair
    /// included, and nothing a replica held when it applied the delete comes back; updates
    /// it had not seen survive. Per key, whether it existed on the applying owner. Keys
    /// of max, min and hll views are refused ([`OpError::NotDeletable`]).
    ///
    /// [`Op::Delete`]: speedlayer_core::Op::Delete
    pub async fn delete(
        &self,
        view: &str,
        keys: Vec<speedlayer_core::Key>,
        options: WriteOptions,
    ) -> Result<Vec<bool>, ClusterError> {
        let epochs = self.inner.store.deletable_epochs(view)?;
        let mut owner_of = Vec::with_capacity(keys.len() * epochs.len());
        let mut updates = Vec::with_capacity(keys.len() * epochs.len());
        for (index, key) in keys.iter().enumerate() {
            for &start_us in &epochs {
                owner_of.push(index);
                updates.push(Update {
                    key: key.clone(),
                    op: speedlayer_core::Op::Delete,
                    ts_us: Some(start_us),
                    id: None,
                });
            }
        }
        let results = self
            .apply(view, updates, options, ApplyKind::Report)
            .await?;
        let mut existed = vec![false; keys.len()];
        for (index, result) in owner_of.into_iter().zip(results) {
            match result {
                Ok(applied) => existed[index] |= applied.effect > 0,
                Err(e) => {
                    return Err(StoreError::Request(speedlayer_api::Error::Unsupported(
                        e.to_string(),
                    ))
                    .into())
                }
            }
        }
        Ok(existed)
    }
}

impl ClusterNode {
    async fn write_group(
        self: &Arc<Self>,
        view: &str,
        partition: u32,
        items: Vec<(usize, Update)>,
        options: WriteOptions,
        kind: ApplyKind,
    ) -> Result<Vec<(usize, Result<Applied, OpError>)>, ClusterError> {
        let ring = self.ring();
        let owners = ring.preference_list(partition);
        let n = owners.len();
        let w = options.consistency.required(n);
        let sloppy = options.quorum == QuorumMode::Sloppy;
        let live: Vec<usize> = owners
            .iter()
            .copied()
            .filter(|&m| self.members.is_up(m))
            .collect();
        if !sloppy && live.len() < w {
            return Err(self.unavailable(w, n, live.len(), owners, &live));
        }
        let (indexes, updates): (Vec<usize>, Vec<Update>) = items.into_iter().unzip();

        // 1. The applying replica.
        let mut candidates = live.clone();
        if let Some(at) = candidates.iter().position(|&m| m == self.members.me()) {
            candidates.swap(0, at);
        } else if sloppy {
            candidates.push(self.members.me());
        }
        let mut applied = None;
        for &candidate in &candidates {
            match self.apply_on(candidate, view, &updates, kind).await {
                Ok(written) => {
                    applied = Some((candidate, written));
                    break;
                }
                Err(Some(e)) => return Err(e),
                Err(None) => continue,
            }
        }
        let Some((applier, written)) = applied else {
            return Err(self.unavailable(w, n, 0, owners, &[]));
        };
        let mut deltas = Deltas::default();
        let mut results = Vec::with_capacity(written.len());
        for ((index, update), (result, epoch, delta)) in
            indexes.into_iter().zip(updates).zip(written)
        {
            if let Some(delta) = delta {
                deltas.push(epoch, update.key, delta);
            }
            results.push((index, result));
        }
        if deltas.is_empty() {
            return Ok(results);
        }

        // 2. The other live owners, and the nodes taking the partition over (they do
        // not count towards W; one that misses the write gets a hint). Once W nodes hold
        // the write (and the partition is not moving), the rest finish in the background.
        let deltas = Arc::new(deltas);
        let mut acked = vec![applier];
        let others: Vec<usize> = live.iter().copied().filter(|&m| m != applier).collect();
        let pending: Vec<usize> = self
            .pending_owners(&ring, partition)
            .into_iter()
            .filter(|&m| m != applier)
            .collect();
        let mut in_flight: Vec<usize> = others.iter().chain(&pending).copied().collect();
        let mut merges: FuturesUnordered<_> = in_flight
            .iter()
            .map(|&m| {
                let (node, view, deltas) = (Arc::clone(self), view.to_owned(), Arc::clone(&deltas));
                async move { (m, node.merge_on(m, &view, &deltas, None).await) }
            })
            .collect();
        let mut pending_missed = Vec::new();
        // While the partition moves, every replication is waited for, as before answering
        // early existed: a join or leave copies from the owners it compares with and
        // assumes they hold every acknowledged write.
        let moving = !pending.is_empty();
        while acked.len() < w || moving {
            let Some((member, ok)) = merges.next().await else {
                break;
            };
            in_flight.retain(|&m| m != member);
            match (ok, pending.contains(&member)) {
                (true, false) => acked.push(member),
                (false, true) => pending_missed.push(member),
                _ => {}
            }
        }
        if !merges.is_empty() {
            let holds = acked.contains(&self.members.me());
            self.finish_in_background(view, &deltas, merges, holds);
        }
        // Owners that did not take the write (not those still answering).
        let missing: Vec<usize> = owners
            .iter()
            .copied()
            .filter(|m| !acked.contains(m) && !in_flight.contains(m))
            .collect();
        if !pending_missed.is_empty() {
            if !acked.contains(&self.members.me()) {
                self.merge_here(view, deltas.local.clone(), None).await?;
            }
            for &member in &pending_missed {
                self.record_hints(&self.members.name(member), deltas.hint_keys(view))
                    .await?;
            }
        }

        // 3. Sloppy quorum: fallbacks stand in for missing owners.
        let mut covered = Vec::new();
        if sloppy && acked.len() < w {
            let mut tried = Vec::new();
            let fallbacks: Vec<usize> = ring
                .fallbacks(partition)
                .iter()
                .copied()
                .chain(std::iter::once(self.members.me()))
                .collect();
            for &owner in &missing {
                if acked.len() >= w {
                    break;
                }
                for &fallback in &fallbacks {
                    if acked.contains(&fallback)
                        || tried.contains(&fallback)
                        || !self.members.is_up(fallback)
                    {
                        continue;
                    }
                    tried.push(fallback);
                    if self
                        .merge_on(fallback, view, &deltas, Some(&self.members.name(owner)))
                        .await
                    {
                        acked.push(fallback);
                        covered.push(owner);
                        break;
                    }
                }
            }
        }

        // 4. Hints, held here, for the owners nobody stands in for.
        let uncovered: Vec<usize> = missing
            .iter()
            .copied()
            .filter(|m| !covered.contains(m))
            .collect();
        if !uncovered.is_empty() {
            if !acked.contains(&self.members.me()) {
                // A hint holder must hold the state it will hand over.
                self.merge_here(view, deltas.local.clone(), None).await?;
            }
            for &owner in &uncovered {
                self.record_hints(&self.members.name(owner), deltas.hint_keys(view))
                    .await?;
            }
        }

        // 5. W distinct nodes?
        if acked.len() < w {
            let reached = acked.len();
            return Err(self.unavailable(w, n, reached, owners, &acked));
        }
        Ok(results)
    }

    /// Lets the replications of a write still in flight once it reached W finish on their
    /// own: an owner (or next-ring owner) that then fails gets a hint here,
    /// after this node merged the write itself if it does not hold it yet (a hint
    /// holder hands over its own state). `holds`: this node already holds the write.
    fn finish_in_background<F>(
        self: &Arc<Self>,
        view: &str,
        deltas: &Arc<Deltas>,
        mut merges: FuturesUnordered<F>,
        holds: bool,
    ) where
        F: std::future::Future<Output = (usize, bool)> + Send + 'static,
    {
        let (node, view, deltas) = (Arc::clone(self), view.to_owned(), Arc::clone(deltas));
        self.metrics.writes_answered_early.inc();
        tokio::spawn(async move {
            let mut missed = Vec::new();
            while let Some((member, ok)) = merges.next().await {
                if !ok {
                    missed.push(member);
                }
            }
            if missed.is_empty() {
                return;
            }
            if !holds {
                if let Err(e) = node.merge_here(&view, deltas.local.clone(), None).await {
                    tracing::warn!(error = %e, "holding a write for hints failed; anti-entropy will repair its replicas");
                    return;
                }
            }
            for member in missed {
                let owner = node.members.name(member);
                if let Err(e) = node.record_hints(&owner, deltas.hint_keys(&view)).await {
                    tracing::warn!(%owner, error = %e, "recording hints failed; anti-entropy will repair");
                }
            }
        });
    }

    /// Applies `updates` on `member` as the coordinating replica. `Err(None)`: the member
    /// could not be reached (try another); `Err(Some(_))`: a final error.
    async fn apply_on(
        &self,
        member: usize,
        view: &str,
        updates: &[Update],
        kind: ApplyKind,
    ) -> Result<Vec<(Result<Applied, OpError>, Epoch, Option<Value>)>, Option<ClusterError>> {
        if member == self.members.me() {
            let written: Vec<Written> = self
                .store
                .apply_replicating(view, updates.to_vec(), kind)
                .await
                .map_err(|e| Some(e.into()))?;
            return Ok(written
                .into_iter()
                .map(|w| (w.result, w.epoch, w.delta))
                .collect());
        }
        let request = Request::Apply {
            view: view.to_owned(),
            updates: updates.iter().map(WireUpdate::from_update).collect(),
            kind,
        };
        match self.members.call(member, &request).await {
            Ok(Response::Applied(written)) if written.len() == updates.len() => {
                let mut out = Vec::with_capacity(written.len());
                for w in written {
                    let delta = match w.delta.as_deref().map(Value::decode).transpose() {
                        Ok(delta) => delta,
                        Err(e) => {
                            tracing::warn!(peer = %self.members.name(member), error = %e, "undecodable delta");
                            return Err(None);
                        }
                    };
                    out.push((wire::decode_result(&w.result), Epoch(w.epoch), delta));
                }
                Ok(out)
            }
            Ok(other) => {
                tracing::warn!(peer = %self.members.name(member), ?other, "unexpected answer to apply");
                Err(None)
            }
            Err(e) => {
                tracing::debug!(peer = %self.members.name(member), error = %e, "applying on a peer failed");
                Err(None)
            }
        }
    }

    /// The error of a request that reached `reached` of the `needed` nodes.
    pub(crate) fn unavailable(
        &self,
        needed: usize,
        of: usize,
        reached: usize,
        owners: &[usize],
        answered: &[usize],
    ) -> ClusterError {
        ClusterError::Request(speedlayer_api::Error::Unavailable {
            needed,
            of,
            reached,
            unreachable: self
                .members
                .names(owners.iter().copied().filter(|m| !answered.contains(m))),
        })
    }
}
